//! Sandbox ids: `i` + 19 characters `[a-z0-9]`, so `{port}-{id}.{domain}` is a valid host name.

/// First character of every sandbox id.
pub const SANDBOX_ID_PREFIX: char = 'i';
/// Total length of a sandbox id, prefix included.
pub const SANDBOX_ID_LEN: usize = 20;

/// True if `id` has the shape of a sandbox id (lowercase alphanumeric, 1..=63 characters).
///
/// Deliberately looser than what the server generates, so ids stay valid if the format grows;
/// it is what matters for host-name routing and file system paths.
pub fn is_valid_sandbox_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 63
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_lowercase_alphanumeric_only() {
        assert!(is_valid_sandbox_id("iabc123"));
        assert!(!is_valid_sandbox_id(""));
        assert!(!is_valid_sandbox_id("iABC"));
        assert!(!is_valid_sandbox_id("i-abc"));
        assert!(!is_valid_sandbox_id("../etc"));
        assert!(!is_valid_sandbox_id(&"a".repeat(64)));
    }
}
