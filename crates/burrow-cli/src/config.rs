//! Where the client finds the server and its API key.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

/// Default server address (`burrow serve` listens here unless told otherwise).
pub const DEFAULT_URL: &str = "http://127.0.0.1:7420";
/// Default data dir of a local server.
pub const DEFAULT_DATA_DIR: &str = "/var/lib/burrow";

/// The server URL: `--url`, else `BURROW_URL`, else the local default.
pub fn server_url(flag: Option<&str>) -> String {
    flag.map(str::to_string)
        .or_else(|| std::env::var("BURROW_URL").ok().filter(|u| !u.is_empty()))
        .unwrap_or_else(|| DEFAULT_URL.to_string())
        .trim_end_matches('/')
        .to_string()
}

/// The data dir: `--data-dir`, else `BURROW_DATA_DIR`, else `/var/lib/burrow`.
pub fn data_dir(flag: Option<&Path>) -> PathBuf {
    flag.map(Path::to_path_buf)
        .or_else(|| std::env::var_os("BURROW_DATA_DIR").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR))
}

/// The API key: `BURROW_API_KEY`, else `<data dir>/client.key` written by a local server.
pub fn api_key(data_dir: &Path) -> anyhow::Result<String> {
    if let Ok(key) = std::env::var("BURROW_API_KEY")
        && !key.trim().is_empty()
    {
        return Ok(key.trim().to_string());
    }
    let path = data_dir.join("client.key");
    match std::fs::read_to_string(&path) {
        Ok(key) if !key.trim().is_empty() => Ok(key.trim().to_string()),
        Ok(_) => bail!("{} is empty; set BURROW_API_KEY", path.display()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => bail!(
            "no API key: set BURROW_API_KEY, or run as a user who can read {} (written by `burrow serve` on first start)",
            path.display()
        ),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}
