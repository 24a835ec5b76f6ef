//! Small parsers for command-line values.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context, bail};

/// Parses repeated `K=V` flags into a map; a key given twice keeps the last value.
pub fn key_values(pairs: &[String], what: &str) -> anyhow::Result<BTreeMap<String, String>> {
    let mut map = BTreeMap::new();
    for pair in pairs {
        let Some((k, v)) = pair.split_once('=') else {
            bail!("{what} '{pair}' must look like KEY=VALUE");
        };
        if k.is_empty() {
            bail!("{what} '{pair}' has an empty key");
        }
        map.insert(k.to_string(), v.to_string());
    }
    Ok(map)
}

/// Parses a duration given as plain seconds (`15`) or with units (`15s`, `2m`, `1h30m`).
pub fn duration(text: &str) -> anyhow::Result<Duration> {
    let text = text.trim();
    if let Ok(secs) = text.parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    humantime::parse_duration(text).with_context(|| {
        format!("'{text}' is not a duration (use seconds like 15, or 15s, 2m, 1h)")
    })
}

/// Splits `ID:PATH` (a sandbox path) from a plain host path.
pub fn remote_path(arg: &str) -> Option<(&str, &str)> {
    let (id, path) = arg.split_once(':')?;
    let is_id = !id.is_empty()
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    (is_id && !path.is_empty()).then_some((id, path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_values_parse_and_reject() {
        let m = key_values(&["A=1".into(), "B=x=y".into(), "A=2".into()], "--env").unwrap();
        assert_eq!(m["A"], "2");
        assert_eq!(m["B"], "x=y");
        assert!(key_values(&["NOVALUE".into()], "--env").is_err());
        assert!(key_values(&["=v".into()], "--env").is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(duration("15").unwrap(), Duration::from_secs(15));
        assert_eq!(duration("2m").unwrap(), Duration::from_secs(120));
        assert!(duration("soon").is_err());
    }

    #[test]
    fn remote_paths() {
        assert_eq!(remote_path("abc123:/tmp/x"), Some(("abc123", "/tmp/x")));
        assert_eq!(remote_path("./local/file"), None);
        assert_eq!(remote_path("/abs/path"), None);
        assert_eq!(remote_path("Upper:/x"), None);
        assert_eq!(remote_path("abc:"), None);
    }
}
