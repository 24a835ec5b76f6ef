//! TLS for `api.{domain}` and the sandbox hosts `{port}-{id}.{domain}`.
//!
//! E2B SDKs always reach a self-hosted sandbox at `https://{port}-{id}.{domain}`, so the server needs
//! a certificate for `*.{domain}`. Two sources are supported:
//! - a burrow-generated local CA ([`LocalCa`]), created once in a directory the server chooses
//!   (e.g. `<data_dir>/tls/`) and reused; clients trust it through `SSL_CERT_FILE`,
//!   `REQUESTS_CA_BUNDLE` or `NODE_EXTRA_CA_CERTS` pointing at [`LocalCa::cert_path`];
//! - operator-provided PEM files ([`load_pem_identity`]).
//!
//! [`server_config`] turns either into a `rustls::ServerConfig` (ring provider, ALPN h2 + http/1.1)
//! ready for `tokio_rustls::TlsAcceptor`.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use chrono::{Datelike, Days, NaiveDate, Utc};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// File name of the local CA certificate (PEM) inside the TLS directory.
pub const CA_CERT_FILE: &str = "ca.pem";
/// File name of the local CA private key (PEM, mode 0600) inside the TLS directory.
pub const CA_KEY_FILE: &str = "ca.key";

const CA_COMMON_NAME: &str = "burrow local CA";
const CA_VALIDITY_DAYS: u64 = 20 * 365;
/// Leaf certificates are re-issued on every start, so a modest lifetime is enough.
const LEAF_VALIDITY_DAYS: u64 = 2 * 365;

/// What can go wrong while preparing TLS material.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("invalid domain {domain:?}: {reason}")]
    InvalidDomain {
        domain: String,
        reason: &'static str,
    },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{present} exists but {missing} does not; remove {present} to generate a new CA, or restore {missing}"
    )]
    HalfCa { present: PathBuf, missing: PathBuf },
    #[error("{path}: not a usable PEM file: {reason}")]
    BadPem { path: PathBuf, reason: String },
    #[error("certificate generation failed: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("TLS configuration rejected: {0}")]
    Rustls(#[from] rustls::Error),
}

/// A certificate chain (leaf first) and its private key.
#[derive(Debug)]
pub struct TlsIdentity {
    pub cert_chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
}

/// A burrow-generated certificate authority stored in a directory.
pub struct LocalCa {
    dir: PathBuf,
    cert_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl std::fmt::Debug for LocalCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalCa")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

impl LocalCa {
    /// Loads the CA from `dir`, or creates it (directory mode 0700, key mode 0600) if neither file
    /// exists yet. A directory holding only one of the two files is an error, never overwritten.
    pub fn load_or_create(dir: &Path) -> Result<Self, TlsError> {
        let cert_path = dir.join(CA_CERT_FILE);
        let key_path = dir.join(CA_KEY_FILE);
        match (cert_path.exists(), key_path.exists()) {
            (true, true) => Self::load(dir, &cert_path, &key_path),
            (false, false) => Self::create(dir, &cert_path, &key_path),
            (true, false) => Err(TlsError::HalfCa {
                present: cert_path,
                missing: key_path,
            }),
            (false, true) => Err(TlsError::HalfCa {
                present: key_path,
                missing: cert_path,
            }),
        }
    }

    fn load(dir: &Path, cert_path: &Path, key_path: &Path) -> Result<Self, TlsError> {
        let cert_pem = read_to_string(cert_path)?;
        let key_pem = read_to_string(key_path)?;
        let key = KeyPair::from_pem(&key_pem).map_err(|e| TlsError::BadPem {
            path: key_path.to_owned(),
            reason: e.to_string(),
        })?;
        let issuer = Issuer::from_ca_cert_pem(&cert_pem, key).map_err(|e| TlsError::BadPem {
            path: cert_path.to_owned(),
            reason: e.to_string(),
        })?;
        Ok(Self {
            dir: dir.to_owned(),
            cert_pem,
            issuer,
        })
    }

    fn create(dir: &Path, cert_path: &Path, key_path: &Path) -> Result<Self, TlsError> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|source| TlsError::Io {
                path: dir.to_owned(),
                source,
            })?;
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, CA_COMMON_NAME);
        params
            .distinguished_name
            .push(DnType::OrganizationName, "burrow");
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        set_validity(&mut params, CA_VALIDITY_DAYS);
        let cert = params.self_signed(&key)?;
        let cert_pem = cert.pem();
        // Key first: a crash between the two writes leaves a "half CA" that load_or_create reports.
        write_new_file(key_path, key.serialize_pem().as_bytes(), 0o600)?;
        write_new_file(cert_path, cert_pem.as_bytes(), 0o644)?;
        let issuer = Issuer::new(params, key);
        Ok(Self {
            dir: dir.to_owned(),
            cert_pem,
            issuer,
        })
    }

    /// The CA certificate in PEM form (what clients must trust).
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// Path of the CA certificate file, for `SSL_CERT_FILE` / `NODE_EXTRA_CA_CERTS` /
    /// `REQUESTS_CA_BUNDLE`.
    pub fn cert_path(&self) -> PathBuf {
        self.dir.join(CA_CERT_FILE)
    }

    /// Issues a fresh server certificate for `{domain}`, `*.{domain}` and `api.{domain}`, signed by
    /// this CA. The chain returned is leaf + CA.
    pub fn issue_wildcard(&self, domain: &str) -> Result<TlsIdentity, TlsError> {
        let names = wildcard_names(domain)?;
        let mut params = CertificateParams::new(names)?;
        params.distinguished_name = DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, format!("*.{domain}"));
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        set_validity(&mut params, LEAF_VALIDITY_DAYS);
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.issuer)?;
        let ca_der = CertificateDer::from_pem_slice(self.cert_pem.as_bytes()).map_err(|e| {
            TlsError::BadPem {
                path: self.cert_path(),
                reason: e.to_string(),
            }
        })?;
        Ok(TlsIdentity {
            cert_chain: vec![cert.der().clone(), ca_der],
            key: PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        })
    }
}

/// The DNS names a burrow server certificate must cover for `domain`.
pub fn wildcard_names(domain: &str) -> Result<Vec<String>, TlsError> {
    validate_domain(domain)?;
    Ok(vec![
        domain.to_owned(),
        format!("*.{domain}"),
        format!("api.{domain}"),
    ])
}

/// Checks that `domain` is a lowercase DNS name usable under a wildcard.
///
/// OpenSSL (Python's `ssl`) only matches `*.x.y` wildcards with at least two labels after the `*`,
/// so a single-label domain such as `localhost` is refused with a hint instead of producing a
/// certificate that Python clients would reject.
pub fn validate_domain(domain: &str) -> Result<(), TlsError> {
    let invalid = |reason| TlsError::InvalidDomain {
        domain: domain.to_owned(),
        reason,
    };
    if domain.is_empty() || domain.len() > 253 {
        return Err(invalid("must be 1 to 253 characters"));
    }
    for label in domain.split('.') {
        if label.is_empty() || label.len() > 63 {
            return Err(invalid(
                "every dot-separated label must be 1 to 63 characters",
            ));
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        {
            return Err(invalid(
                "only lowercase letters, digits, '-' and '.' are allowed",
            ));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(invalid("a label may not start or end with '-'"));
        }
    }
    if !domain.contains('.') {
        return Err(invalid(
            "needs at least two labels for a wildcard certificate clients accept (e.g. burrow.localhost)",
        ));
    }
    Ok(())
}

/// Loads an operator-provided certificate chain and private key (PEM; PKCS#8, PKCS#1 or SEC1).
pub fn load_pem_identity(cert_path: &Path, key_path: &Path) -> Result<TlsIdentity, TlsError> {
    let cert_pem = fs::read(cert_path).map_err(|source| TlsError::Io {
        path: cert_path.to_owned(),
        source,
    })?;
    let cert_chain = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::BadPem {
            path: cert_path.to_owned(),
            reason: e.to_string(),
        })?;
    if cert_chain.is_empty() {
        return Err(TlsError::BadPem {
            path: cert_path.to_owned(),
            reason: "no CERTIFICATE block found".into(),
        });
    }
    let key_pem = fs::read(key_path).map_err(|source| TlsError::Io {
        path: key_path.to_owned(),
        source,
    })?;
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| TlsError::BadPem {
        path: key_path.to_owned(),
        reason: e.to_string(),
    })?;
    Ok(TlsIdentity { cert_chain, key })
}

/// Builds a rustls server configuration (ring provider, TLS 1.2 + 1.3, ALPN `h2` then
/// `http/1.1`). Fails if the key does not match the certificate.
pub fn server_config(identity: TlsIdentity) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(identity.cert_chain, identity.key)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

fn set_validity(params: &mut CertificateParams, days: u64) {
    // Backdate a day so clients with a slightly slow clock accept a certificate made just now.
    let today = Utc::now().date_naive();
    let start = today.checked_sub_days(Days::new(1)).unwrap_or(today);
    let end = today.checked_add_days(Days::new(days)).unwrap_or(today);
    // Month (1..=12) and day (1..=31) always fit in u8.
    let ymd = |d: NaiveDate| rcgen::date_time_ymd(d.year(), d.month() as u8, d.day() as u8);
    params.not_before = ymd(start);
    params.not_after = ymd(end);
}

fn read_to_string(path: &Path) -> Result<String, TlsError> {
    fs::read_to_string(path).map_err(|source| TlsError::Io {
        path: path.to_owned(),
        source,
    })
}

/// Writes a file that must not exist yet, with `mode`, and flushes it to disk.
fn write_new_file(path: &Path, contents: &[u8], mode: u32) -> Result<(), TlsError> {
    let io_err = |source| TlsError::Io {
        path: path.to_owned(),
        source,
    };
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(io_err)?;
    file.write_all(contents).map_err(io_err)?;
    file.sync_all().map_err(io_err)?;
    // The umask may have narrowed the mode; make it exact.
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).map_err(io_err)?;
    Ok(())
}
