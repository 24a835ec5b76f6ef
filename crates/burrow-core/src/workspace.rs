//! Workspace names and ids.

use crate::CoreError;

/// The workspace an existing single-tenant data dir becomes on upgrade, and where the operator's
/// sandboxes go unless it names another.
pub const DEFAULT_WORKSPACE_ID: &str = "ws_default";
pub const DEFAULT_WORKSPACE_NAME: &str = "default";

/// Names: 1–63 of `a-z 0-9 -`, starting with a letter or digit (DNS-label-like, so a name can
/// later appear in hostnames and metric labels unescaped).
pub fn validate_name(name: &str) -> Result<(), CoreError> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-');
    if ok {
        Ok(())
    } else {
        Err(CoreError::Invalid(format!(
            "workspace name '{}' is invalid: use 1-63 characters of a-z, 0-9 and '-', \
             not starting with '-'",
            name.escape_debug()
        )))
    }
}

/// Whether `id` has the shape of a workspace id (`ws_` + 1-32 of `a-z 0-9`).
pub fn is_valid_id(id: &str) -> bool {
    id.strip_prefix("ws_").is_some_and(|rest| {
        !rest.is_empty()
            && rest.len() <= 32
            && rest
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_rule() {
        for good in ["a", "acme", "team-7", "0x"] {
            assert!(validate_name(good).is_ok(), "{good}");
        }
        for bad in ["", "-a", "Acme", "a b", "a_b", "ä", &"x".repeat(64)] {
            assert!(validate_name(bad).is_err(), "{bad}");
        }
        assert!(is_valid_id(DEFAULT_WORKSPACE_ID));
        assert!(!is_valid_id("ws_"));
        assert!(!is_valid_id("key_abc"));
    }
}
