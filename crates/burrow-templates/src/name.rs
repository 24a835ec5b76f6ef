//! Validation of template names and other small user-supplied strings.

use crate::TemplateError;

/// Checks a template name against `^[a-z0-9][a-z0-9_-]{0,62}$`.
pub fn validate_name(name: &str) -> Result<(), TemplateError> {
    let bytes = name.as_bytes();
    let valid = matches!(bytes.first(), Some(b'a'..=b'z' | b'0'..=b'9'))
        && bytes.len() <= 63
        && bytes
            .iter()
            .all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'_' | b'-'));
    if valid {
        Ok(())
    } else {
        Err(TemplateError::InvalidName(name.to_string()))
    }
}

/// Checks an ENV key: a non-empty shell-style identifier.
pub fn validate_env_key(key: &str) -> Result<(), TemplateError> {
    let bytes = key.as_bytes();
    let valid = matches!(bytes.first(), Some(b'A'..=b'Z' | b'a'..=b'z' | b'_'))
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || *b == b'_');
    if valid {
        Ok(())
    } else {
        Err(TemplateError::Invalid(format!(
            "invalid environment variable name '{key}': use letters, digits and '_', not starting with a digit"
        )))
    }
}

/// Checks a user name or `uid[:gid]` for USER steps and image configs.
pub fn validate_user(user: &str) -> Result<(), TemplateError> {
    let valid = !user.is_empty()
        && user.len() <= 64
        && user
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b':'));
    if valid {
        Ok(())
    } else {
        Err(TemplateError::Invalid(format!(
            "invalid user '{user}': use a user name or uid[:gid]"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_valid_names() {
        for name in ["base", "a", "0", "py-3_12", &"x".repeat(63)] {
            assert!(validate_name(name).is_ok(), "{name}");
        }
    }

    #[test]
    fn rejects_invalid_names() {
        for name in [
            "",
            "-a",
            "_a",
            "A",
            "a/b",
            "..",
            ".a",
            "a b",
            "é",
            &"x".repeat(64),
        ] {
            assert!(
                matches!(validate_name(name), Err(TemplateError::InvalidName(_))),
                "{name}"
            );
        }
    }

    #[test]
    fn env_keys() {
        assert!(validate_env_key("PATH").is_ok());
        assert!(validate_env_key("_x1").is_ok());
        for key in ["", "1A", "A=B", "A B", "A\0"] {
            assert!(validate_env_key(key).is_err(), "{key:?}");
        }
    }

    #[test]
    fn users() {
        assert!(validate_user("user").is_ok());
        assert!(validate_user("1000:1000").is_ok());
        assert!(validate_user("").is_err());
        assert!(validate_user("a b").is_err());
        assert!(validate_user("a\nb").is_err());
    }
}
