//! Validation of untrusted request fields.

use std::collections::BTreeMap;

use burrow_types::CreateSandboxRequest;
use burrow_types::sandbox::{MAX_DISK_MB, MAX_MEMORY_MB, MIN_CPUS, MIN_DISK_MB, MIN_MEMORY_MB};

use crate::CoreError;

const MAX_ENV_ENTRIES: usize = 1024;
const MAX_ENV_VALUE_BYTES: usize = 128 * 1024;
const MAX_LABELS: usize = 64;

/// Template names: 1-63 characters a-z, 0-9, '-', '_', starting with a letter or digit.
pub fn template_name(name: &str) -> Result<(), CoreError> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(CoreError::invalid(format!(
            "invalid template name '{}': use 1-63 characters a-z, 0-9, '-', '_', starting with a letter or digit",
            name.escape_debug()
        )))
    }
}

/// Environment variables: POSIX-ish names, no NUL anywhere.
pub fn env(env: &BTreeMap<String, String>) -> Result<(), CoreError> {
    if env.len() > MAX_ENV_ENTRIES {
        return Err(CoreError::invalid(format!(
            "too many environment variables ({}, at most {MAX_ENV_ENTRIES})",
            env.len()
        )));
    }
    for (key, value) in env {
        let key_ok = !key.is_empty()
            && key.len() <= 255
            && !key.as_bytes()[0].is_ascii_digit()
            && key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
        if !key_ok {
            return Err(CoreError::invalid(format!(
                "invalid environment variable name '{}': use letters, digits and '_', not starting with a digit",
                key.escape_debug()
            )));
        }
        if value.contains('\0') || value.len() > MAX_ENV_VALUE_BYTES {
            return Err(CoreError::invalid(format!(
                "invalid value for environment variable {key}: no NUL bytes, at most {MAX_ENV_VALUE_BYTES} bytes"
            )));
        }
    }
    Ok(())
}

/// Labels: keys 1-63 of `[A-Za-z0-9._/-]`, values up to 255 printable characters.
pub fn labels(labels: &BTreeMap<String, String>) -> Result<(), CoreError> {
    if labels.len() > MAX_LABELS {
        return Err(CoreError::invalid(format!(
            "too many labels ({}, at most {MAX_LABELS})",
            labels.len()
        )));
    }
    for (key, value) in labels {
        label_pair(key, value)?;
    }
    Ok(())
}

pub fn label_pair(key: &str, value: &str) -> Result<(), CoreError> {
    let key_ok = !key.is_empty()
        && key.len() <= 63
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._/-".contains(&b));
    if !key_ok {
        return Err(CoreError::invalid(format!(
            "invalid label key '{}': use 1-63 characters A-Z, a-z, 0-9, '.', '_', '/', '-'",
            key.escape_debug()
        )));
    }
    if value.len() > 255 || value.chars().any(char::is_control) {
        return Err(CoreError::invalid(format!(
            "invalid value for label {key}: at most 255 characters, no control characters"
        )));
    }
    Ok(())
}

/// Resource limits of a create request against this host.
pub fn limits(req: &CreateSandboxRequest, host_cpus: f64) -> Result<(), CoreError> {
    if !req.cpus.is_finite() || req.cpus < MIN_CPUS || req.cpus > host_cpus {
        return Err(CoreError::invalid(format!(
            "cpus must be between {MIN_CPUS} and {host_cpus} (this host's cores), got {}",
            req.cpus
        )));
    }
    if !(MIN_MEMORY_MB..=MAX_MEMORY_MB).contains(&req.memory_mb) {
        return Err(CoreError::invalid(format!(
            "memory_mb must be between {MIN_MEMORY_MB} and {MAX_MEMORY_MB}, got {}",
            req.memory_mb
        )));
    }
    if !(MIN_DISK_MB..=MAX_DISK_MB).contains(&req.disk_mb) {
        return Err(CoreError::invalid(format!(
            "disk_mb must be between {MIN_DISK_MB} and {MAX_DISK_MB}, got {}",
            req.disk_mb
        )));
    }
    Ok(())
}

/// A path inside a sandbox: absolute or relative to the user's home, no NUL, bounded length.
/// `..` is allowed: the agent resolves paths inside the sandbox's own root, which is the
/// isolation boundary.
pub fn sandbox_path(path: &str) -> Result<(), CoreError> {
    if path.is_empty() {
        return Err(CoreError::invalid_path("missing 'path' query parameter"));
    }
    if path.contains('\0') {
        return Err(CoreError::invalid_path("path must not contain NUL bytes"));
    }
    if path.len() > 4096 {
        return Err(CoreError::invalid_path("path is longer than 4096 bytes"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn template_names() {
        assert!(template_name("base").is_ok());
        assert!(template_name("py-3_12").is_ok());
        for bad in ["", "../x", "-a", "A", "a/b", &"a".repeat(64)] {
            assert!(template_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn env_names() {
        let ok: BTreeMap<_, _> = [("PATH_2".to_string(), "x".to_string())].into();
        assert!(env(&ok).is_ok());
        for bad in ["", "1A", "A=B", "A B"] {
            let m: BTreeMap<_, _> = [(bad.to_string(), "x".to_string())].into();
            assert!(env(&m).is_err(), "{bad}");
        }
        let nul: BTreeMap<_, _> = [("A".to_string(), "x\0".to_string())].into();
        assert!(env(&nul).is_err());
    }
}
