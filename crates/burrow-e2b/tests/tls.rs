//! The TLS module end to end: real handshakes against a tokio-rustls server built from
//! `server_config`, verified by a rustls client and by Python's OpenSSL (what the e2b SDK uses).

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;

use burrow_e2b::tls::{self, LocalCa, TlsError};
use rustls::RootCertStore;
use rustls::pki_types::{CertificateDer, ServerName, pem::PemObject};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const DOMAIN: &str = "burrow.localhost";

/// Serves TLS on 127.0.0.1:0, answering every connection with "ok" + the negotiated ALPN.
async fn serve(config: Arc<rustls::ServerConfig>) -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    tokio::spawn(async move {
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                if let Ok(mut tls) = acceptor.accept(tcp).await {
                    let alpn = tls.get_ref().1.alpn_protocol().unwrap_or(b"none").to_vec();
                    let _ = tls.write_all(b"ok ").await;
                    let _ = tls.write_all(&alpn).await;
                    let _ = tls.shutdown().await;
                }
            });
        }
    });
    addr
}

/// Connects with only `ca_pem` trusted; returns what the server sent, or the handshake error.
async fn fetch(addr: std::net::SocketAddr, host: &str, ca_pem: &str) -> Result<String, String> {
    let mut roots = RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(ca_pem.as_bytes()).unwrap())
        .unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = TcpStream::connect(addr).await.unwrap();
    let name = ServerName::try_from(host.to_string()).unwrap();
    let mut tls = connector
        .connect(name, tcp)
        .await
        .map_err(|e| e.to_string())?;
    let mut out = String::new();
    tls.read_to_string(&mut out)
        .await
        .map_err(|e| e.to_string())?;
    Ok(out)
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[tokio::test]
async fn local_ca_is_created_once_and_its_wildcard_cert_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let tls_dir = dir.path().join("tls");
    let ca = LocalCa::load_or_create(&tls_dir).unwrap();
    assert_eq!(mode(&tls_dir), 0o700);
    assert_eq!(mode(&tls_dir.join(tls::CA_KEY_FILE)), 0o600);
    assert_eq!(ca.cert_path(), tls_dir.join(tls::CA_CERT_FILE));
    assert_eq!(
        std::fs::read_to_string(ca.cert_path()).unwrap(),
        ca.cert_pem()
    );

    // Reloading reuses the same CA, and certificates it issues chain to the original cert.
    let reloaded = LocalCa::load_or_create(&tls_dir).unwrap();
    assert_eq!(reloaded.cert_pem(), ca.cert_pem());
    let identity = reloaded.issue_wildcard(DOMAIN).unwrap();
    assert_eq!(identity.cert_chain.len(), 2, "leaf + CA");
    let addr = serve(tls::server_config(identity).unwrap()).await;

    for host in [
        "49983-iabc123.burrow.localhost",
        "api.burrow.localhost",
        "burrow.localhost",
    ] {
        let reply = fetch(addr, host, ca.cert_pem()).await.unwrap();
        assert_eq!(reply, "ok h2", "{host}");
    }
    let err = fetch(addr, "api.example.com", ca.cert_pem())
        .await
        .unwrap_err();
    assert!(
        err.contains("NotValidForName") || err.contains("not valid"),
        "{err}"
    );

    // A different CA must not be trusted for this server.
    let stranger = LocalCa::load_or_create(&dir.path().join("other")).unwrap();
    assert!(
        fetch(addr, "api.burrow.localhost", stranger.cert_pem())
            .await
            .is_err()
    );
}

#[tokio::test]
async fn python_openssl_accepts_the_wildcard_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let ca = LocalCa::load_or_create(dir.path()).unwrap();
    let addr = serve(tls::server_config(ca.issue_wildcard(DOMAIN).unwrap()).unwrap()).await;
    let script = r#"
import socket, ssl, sys
ctx = ssl.create_default_context(cafile=sys.argv[1])
ctx.set_alpn_protocols(["h2", "http/1.1"])
with socket.create_connection(("127.0.0.1", int(sys.argv[2]))) as raw:
    with ctx.wrap_socket(raw, server_hostname=sys.argv[3]) as s:
        data = b""
        while chunk := s.recv(100):
            data += chunk
        print(data.decode(), s.selected_alpn_protocol())
"#;
    let out = tokio::process::Command::new("python3")
        .args(["-c", script])
        .arg(ca.cert_path())
        .arg(addr.port().to_string())
        .arg("49983-iabc123.burrow.localhost")
        .output()
        .await
        .expect("python3 must be installed for this test");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(stdout.trim(), "ok h2 h2");
}

#[test]
fn half_written_ca_dir_is_reported_not_overwritten() {
    let dir = tempfile::tempdir().unwrap();
    LocalCa::load_or_create(dir.path()).unwrap();
    std::fs::remove_file(dir.path().join(tls::CA_KEY_FILE)).unwrap();
    let before = std::fs::read(dir.path().join(tls::CA_CERT_FILE)).unwrap();
    let err = LocalCa::load_or_create(dir.path()).unwrap_err();
    assert!(matches!(err, TlsError::HalfCa { .. }), "{err}");
    assert!(err.to_string().contains("ca.key"), "{err}");
    assert_eq!(
        std::fs::read(dir.path().join(tls::CA_CERT_FILE)).unwrap(),
        before
    );

    let corrupt = tempfile::tempdir().unwrap();
    std::fs::write(corrupt.path().join(tls::CA_CERT_FILE), "garbage").unwrap();
    std::fs::write(corrupt.path().join(tls::CA_KEY_FILE), "garbage").unwrap();
    let err = LocalCa::load_or_create(corrupt.path()).unwrap_err();
    assert!(matches!(err, TlsError::BadPem { .. }), "{err}");
}

#[test]
fn domains_are_validated() {
    for bad in [
        "",
        "localhost",
        "Burrow.localhost",
        "a..b",
        "-a.b",
        "a_b.c",
        "*.a.b",
        "a.b/c",
    ] {
        assert!(
            matches!(
                tls::validate_domain(bad),
                Err(TlsError::InvalidDomain { .. })
            ),
            "{bad:?}"
        );
    }
    assert_eq!(
        tls::wildcard_names("sbx.example.com").unwrap(),
        [
            "sbx.example.com",
            "*.sbx.example.com",
            "api.sbx.example.com"
        ]
    );
}

#[tokio::test]
async fn operator_pem_files_are_loaded_and_checked() {
    let dir = tempfile::tempdir().unwrap();
    let cert = rcgen::generate_simple_self_signed(vec!["*.sbx.example.com".to_string()]).unwrap();
    let cert_path = dir.path().join("cert.pem");
    let key_path = dir.path().join("key.pem");
    std::fs::write(&cert_path, cert.cert.pem()).unwrap();
    std::fs::write(&key_path, cert.signing_key.serialize_pem()).unwrap();

    let identity = tls::load_pem_identity(&cert_path, &key_path).unwrap();
    let addr = serve(tls::server_config(identity).unwrap()).await;
    let reply = fetch(addr, "49983-iabc.sbx.example.com", &cert.cert.pem())
        .await
        .unwrap();
    assert_eq!(reply, "ok h2");

    // A key that does not belong to the certificate is refused up front.
    let other = rcgen::generate_simple_self_signed(vec!["x.example.com".to_string()]).unwrap();
    std::fs::write(&key_path, other.signing_key.serialize_pem()).unwrap();
    let identity = tls::load_pem_identity(&cert_path, &key_path).unwrap();
    assert!(matches!(
        tls::server_config(identity),
        Err(TlsError::Rustls(_))
    ));

    std::fs::write(&cert_path, "not a pem").unwrap();
    assert!(matches!(
        tls::load_pem_identity(&cert_path, &key_path),
        Err(TlsError::BadPem { .. })
    ));
    assert!(matches!(
        tls::load_pem_identity(&dir.path().join("missing.pem"), &key_path),
        Err(TlsError::Io { .. })
    ));
}

#[tokio::test]
async fn tls_listener_serves_axum_while_a_client_stalls_its_handshake() {
    let dir = tempfile::tempdir().unwrap();
    let ca = LocalCa::load_or_create(dir.path()).unwrap();
    let config = tls::server_config(ca.issue_wildcard(DOMAIN).unwrap()).unwrap();
    let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = tcp.local_addr().unwrap();
    let listener = burrow_e2b::TlsListener::new(tcp, config).unwrap();
    let app = axum::Router::new().route("/", axum::routing::get(|| async { "hello over tls" }));
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    // Connects but never sends a ClientHello.
    let _stalled = TcpStream::connect(addr).await.unwrap();

    let mut roots = RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(ca.cert_pem().as_bytes()).unwrap())
        .unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let name = ServerName::try_from("api.burrow.localhost").unwrap();
    let request = async {
        let tcp = TcpStream::connect(addr).await.unwrap();
        let mut tls = connector.connect(name, tcp).await.unwrap();
        tls.write_all(b"GET / HTTP/1.1\r\nHost: api.burrow.localhost\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut response = String::new();
        tls.read_to_string(&mut response).await.unwrap();
        response
    };
    let response = tokio::time::timeout(std::time::Duration::from_secs(5), request)
        .await
        .expect("a stalled handshake must not block other clients");
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.ends_with("hello over tls"), "{response}");
}
