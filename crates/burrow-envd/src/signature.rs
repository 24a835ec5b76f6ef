//! Signed `/files` URLs (E2B's `download_url` / `upload_url`): the agent checks them, the server
//! uses them to find which sandbox an unrouted signed URL is for.

use base64::Engine;
use base64::engine::general_purpose::STANDARD_NO_PAD;
use sha2::{Digest, Sha256};

/// `v1_` + base64(sha256("{path}:{op}:{user}:{token}[:{expiration}]")), padding stripped.
pub fn file_signature(
    path: &str,
    operation: &str,
    username: &str,
    token: &str,
    expiration: Option<i64>,
) -> String {
    let raw = match expiration {
        Some(exp) => format!("{path}:{operation}:{username}:{token}:{exp}"),
        None => format!("{path}:{operation}:{username}:{token}"),
    };
    format!(
        "v1_{}",
        STANDARD_NO_PAD.encode(Sha256::digest(raw.as_bytes()))
    )
}

/// Compares without an early exit so timing does not reveal the matching prefix.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_cover_every_part() {
        let base = file_signature("/a", "read", "", "tok", None);
        assert!(base.starts_with("v1_") && !base.ends_with('='));
        for other in [
            file_signature("/b", "read", "", "tok", None),
            file_signature("/a", "write", "", "tok", None),
            file_signature("/a", "read", "root", "tok", None),
            file_signature("/a", "read", "", "tok2", None),
            file_signature("/a", "read", "", "tok", Some(1)),
        ] {
            assert_ne!(base, other);
        }
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }
}
