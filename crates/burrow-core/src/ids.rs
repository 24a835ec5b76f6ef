//! Sandbox id generation.

use burrow_types::{SANDBOX_ID_LEN, SANDBOX_ID_PREFIX};
use rand::Rng;

const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";

/// A new random sandbox id: `i` + 19 characters `[a-z0-9]` (~98 bits).
pub fn new_sandbox_id() -> String {
    let mut rng = rand::rng();
    let mut id = String::with_capacity(SANDBOX_ID_LEN);
    id.push(SANDBOX_ID_PREFIX);
    for _ in 1..SANDBOX_ID_LEN {
        id.push(ALPHABET[rng.random_range(0..ALPHABET.len())] as char);
    }
    id
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_valid_and_distinct() {
        let a = new_sandbox_id();
        assert_eq!(a.len(), SANDBOX_ID_LEN);
        assert!(burrow_types::is_valid_sandbox_id(&a));
        assert_ne!(a, new_sandbox_id());
    }
}
