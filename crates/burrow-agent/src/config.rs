//! Agent configuration, read from the environment set by the launcher.

use std::collections::BTreeMap;
use std::net::SocketAddr;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("BURROW_ENV_JSON must be a JSON object of string values: {0}")]
    EnvJson(serde_json::Error),
    #[error("BURROW_LISTEN {value:?} is not a socket address like 0.0.0.0:49983")]
    Listen { value: String },
    #[error("BURROW_READY_FD {value:?} is not a file descriptor number")]
    ReadyFd { value: String },
}

#[derive(Debug, Clone)]
pub struct Config {
    pub sandbox_id: String,
    pub template: String,
    pub access_token: Option<String>,
    /// Global environment for every process (already includes the E2B_* variables).
    pub global_env: BTreeMap<String, String>,
    pub default_user: String,
    pub default_workdir: Option<String>,
    pub listen: SocketAddr,
    pub ready_fd: Option<i32>,
    /// `BURROW_FORWARD_LOCALHOST=1` (set by the runtime): forward services listening only on
    /// loopback to eth0 (see [`crate::port_forward`]). Off by default: on a host it would expose
    /// the host's loopback services.
    pub forward_localhost: bool,
}

impl Config {
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let non_empty = |name: &str| get(name).filter(|v| !v.is_empty());
        let sandbox_id = non_empty("BURROW_SANDBOX_ID").unwrap_or_default();
        let template = non_empty("BURROW_TEMPLATE").unwrap_or_default();
        let mut global_env: BTreeMap<String, String> = match non_empty("BURROW_ENV_JSON") {
            Some(json) => serde_json::from_str(&json).map_err(ConfigError::EnvJson)?,
            None => BTreeMap::new(),
        };
        global_env.insert("E2B_SANDBOX".into(), "true".into());
        global_env.insert("E2B_SANDBOX_ID".into(), sandbox_id.clone());
        global_env.insert("E2B_TEMPLATE_ID".into(), template.clone());
        let listen_text = non_empty("BURROW_LISTEN").unwrap_or_else(|| "0.0.0.0:49983".into());
        let listen = listen_text
            .parse()
            .map_err(|_| ConfigError::Listen { value: listen_text })?;
        let ready_fd = match non_empty("BURROW_READY_FD") {
            Some(v) => Some(v.parse().map_err(|_| ConfigError::ReadyFd { value: v })?),
            None => None,
        };
        Ok(Self {
            sandbox_id,
            template,
            access_token: non_empty("BURROW_ACCESS_TOKEN"),
            global_env,
            default_user: non_empty("BURROW_DEFAULT_USER").unwrap_or_else(|| "user".into()),
            default_workdir: non_empty("BURROW_DEFAULT_WORKDIR"),
            listen,
            ready_fd,
            forward_localhost: non_empty("BURROW_FORWARD_LOCALHOST").as_deref() == Some("1"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_env_json() {
        let cfg = Config::from_lookup(|k| match k {
            "BURROW_ENV_JSON" => Some(r#"{"A":"1"}"#.into()),
            "BURROW_SANDBOX_ID" => Some("sbx".into()),
            _ => None,
        })
        .unwrap();
        assert_eq!(cfg.listen.port(), 49983);
        assert_eq!(cfg.default_user, "user");
        assert!(!cfg.forward_localhost, "off unless the runtime asks for it");
        assert_eq!(cfg.global_env["A"], "1");
        assert_eq!(cfg.global_env["E2B_SANDBOX_ID"], "sbx");
        assert_eq!(cfg.global_env["E2B_SANDBOX"], "true");
    }

    #[test]
    fn bad_values_are_reported() {
        let err = Config::from_lookup(|k| (k == "BURROW_ENV_JSON").then(|| "[1]".into()));
        assert!(err.unwrap_err().to_string().contains("BURROW_ENV_JSON"));
        let err = Config::from_lookup(|k| (k == "BURROW_LISTEN").then(|| "nope".into()));
        assert!(err.unwrap_err().to_string().contains("BURROW_LISTEN"));
    }
}
