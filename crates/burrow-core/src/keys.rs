//! API key creation: `bw_` + 40 hex characters from the OS RNG.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use burrow_store::Store;
use rand::RngCore;

use crate::CoreError;

/// File in the data dir holding the first key, for the local CLI.
pub const CLIENT_KEY_FILE: &str = "client.key";

/// A new random API key.
pub fn generate_api_key() -> String {
    let mut bytes = [0u8; 20];
    rand::rng().fill_bytes(&mut bytes);
    format!("bw_{}", hex::encode(bytes))
}

/// A new random API key in E2B's format (`e2b_` + 40 hex), for SDKs that check the shape.
pub fn generate_e2b_api_key() -> String {
    let mut bytes = [0u8; 20];
    rand::rng().fill_bytes(&mut bytes);
    format!("e2b_{}", hex::encode(bytes))
}

/// A new random envd access token for one sandbox.
pub fn generate_access_token() -> String {
    let mut bytes = [0u8; 24];
    rand::rng().fill_bytes(&mut bytes);
    hex::encode(bytes)
}

/// On the first start (no key in the store): creates a key, stores its hash, writes it to
/// `<data_dir>/client.key` (0600) and returns it so the caller can print it once.
pub async fn ensure_first_key(store: &Store, data_dir: &Path) -> Result<Option<String>, CoreError> {
    if store.api_key_count().await? > 0 {
        return Ok(None);
    }
    let key = generate_api_key();
    let path = data_dir.join(CLIENT_KEY_FILE);
    // Write the file first: a key that is stored but lost would lock the local CLI out.
    let tmp = data_dir.join(format!("{CLIENT_KEY_FILE}.tmp"));
    let write = || -> std::io::Result<()> {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        // mode() only applies on creation; enforce it for a leftover tmp file too.
        file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
        writeln!(file, "{key}")?;
        file.sync_all()?;
        std::fs::rename(&tmp, &path)
    };
    write().map_err(|e| CoreError::internal(format!("writing {}: {e}", path.display())))?;
    store
        .insert_api_key("operator", "burrow", &key, None, "admin")
        .await?;
    Ok(Some(key))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_have_the_documented_shape_and_differ() {
        let a = generate_api_key();
        let b = generate_api_key();
        assert_ne!(a, b);
        assert_eq!(a.len(), 43);
        assert!(a.starts_with("bw_"));
        let e = generate_e2b_api_key();
        assert_eq!(e.len(), 44);
        assert!(e.starts_with("e2b_"));
        assert!(
            e[4..]
                .bytes()
                .all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f'))
        );
        assert!(
            a[3..]
                .bytes()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
        );
    }
}
