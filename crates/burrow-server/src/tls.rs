//! The HTTPS listener: burrow's local CA issues a wildcard certificate for the domain (or the
//! operator provides one), so E2B SDKs reach `https://api.{domain}` and `https://{port}-{id}.{domain}`.

use std::path::{Path, PathBuf};

use burrow_e2b::tls::{self, LocalCa};
use burrow_e2b::{TlsLimits, TlsListener};
use tokio::net::TcpListener;

use crate::error::ServeError;
use burrow_core::config::TlsConfig;

/// Directory of the local CA in the data dir.
pub const TLS_DIR: &str = "tls";

/// A bound HTTPS listener, and the CA certificate clients must trust when burrow issued the
/// certificate itself.
pub struct BoundTls {
    pub listener: TlsListener,
    pub ca_cert: Option<PathBuf>,
}

pub async fn bind(
    config: &TlsConfig,
    data_dir: &Path,
    domain: &str,
    limits: TlsLimits,
) -> Result<BoundTls, ServeError> {
    let tls_error = |e: tls::TlsError| ServeError::Config(format!("TLS: {e}"));
    let (identity, ca_cert) = match &config.cert_and_key {
        Some((cert, key)) => (tls::load_pem_identity(cert, key).map_err(tls_error)?, None),
        None => {
            tls::validate_domain(domain).map_err(tls_error)?;
            let ca = LocalCa::load_or_create(&data_dir.join(TLS_DIR)).map_err(tls_error)?;
            (
                ca.issue_wildcard(domain).map_err(tls_error)?,
                Some(ca.cert_path()),
            )
        }
    };
    let server_config = tls::server_config(identity).map_err(tls_error)?;
    let tcp = TcpListener::bind(config.listen)
        .await
        .map_err(ServeError::io(format!(
            "listening (TLS) on {}",
            config.listen
        )))?;
    let listener = TlsListener::with_limits(tcp, server_config, limits)
        .map_err(ServeError::io(format!("TLS listener on {}", config.listen)))?;
    Ok(BoundTls { listener, ca_cert })
}
