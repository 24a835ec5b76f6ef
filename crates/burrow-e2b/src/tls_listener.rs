//! An [`axum::serve::Listener`] that terminates TLS, so `axum::serve(TlsListener, app)` serves
//! HTTPS (h2 or http/1.1 by ALPN) with a config from [`crate::tls::server_config`].
//!
//! Handshakes run in their own tasks with a deadline and a concurrency cap: a client that opens a
//! TCP connection and never speaks TLS must not hold up anyone else. With
//! [`TlsListener::with_limits`] the listener also caps its open connections: a permit is taken
//! before each `accept` (beyond the cap, connections wait in the kernel backlog) and travels with
//! the connection ([`TlsConnection::permit`]) until the server drops it.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

/// A handshake that takes longer than this is dropped (the default of [`TlsLimits`]).
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// At most this many handshakes run at once; further connections wait in the kernel backlog.
pub const MAX_CONCURRENT_HANDSHAKES: usize = 256;
/// Back-off after a failed `accept` (e.g. EMFILE) so the loop does not spin.
const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(50);

/// Bounds of a [`TlsListener`].
#[derive(Debug, Clone, Copy)]
pub struct TlsLimits {
    /// A handshake that takes longer than this is dropped.
    pub handshake_timeout: Duration,
    /// Open connections at most (handshaking, queued, or being served until their
    /// [`TlsConnection::permit`] is dropped); `None` = no cap.
    pub max_connections: Option<usize>,
}

impl Default for TlsLimits {
    fn default() -> Self {
        Self {
            handshake_timeout: HANDSHAKE_TIMEOUT,
            max_connections: None,
        }
    }
}

/// A connection whose TLS handshake is done.
#[derive(Debug)]
pub struct TlsConnection {
    pub stream: TlsStream<TcpStream>,
    pub peer: SocketAddr,
    /// The connection's slot under [`TlsLimits::max_connections`]: keep it as long as the
    /// connection is open.
    pub permit: Option<OwnedSemaphorePermit>,
}

/// TLS connections ready for HTTP, produced by a background accept loop.
#[derive(Debug)]
pub struct TlsListener {
    local_addr: SocketAddr,
    ready: mpsc::Receiver<TlsConnection>,
    accept_loop: JoinHandle<()>,
}

impl TlsListener {
    /// Starts accepting on `tcp` with the default [`TlsLimits`] (no connection cap). Must be
    /// called inside a tokio runtime.
    pub fn new(tcp: TcpListener, config: Arc<rustls::ServerConfig>) -> io::Result<Self> {
        Self::with_limits(tcp, config, TlsLimits::default())
    }

    /// Starts accepting on `tcp`. Must be called inside a tokio runtime. With a connection cap,
    /// serve connections from [`TlsListener::next_connection`] and keep their permits (the
    /// [`axum::serve::Listener`] implementation drops them).
    pub fn with_limits(
        tcp: TcpListener,
        config: Arc<rustls::ServerConfig>,
        limits: TlsLimits,
    ) -> io::Result<Self> {
        let local_addr = tcp.local_addr()?;
        let (sender, ready) = mpsc::channel(MAX_CONCURRENT_HANDSHAKES);
        let acceptor = TlsAcceptor::from(config);
        let slots = Arc::new(Semaphore::new(MAX_CONCURRENT_HANDSHAKES));
        let connection_slots = limits
            .max_connections
            .map(|max| Arc::new(Semaphore::new(max)));
        let accept_loop = tokio::spawn(async move {
            loop {
                let permit = match &connection_slots {
                    Some(connection_slots) => {
                        match connection_slots.clone().acquire_owned().await {
                            Ok(permit) => Some(permit),
                            Err(_) => return,
                        }
                    }
                    None => None,
                };
                let Ok(slot) = slots.clone().acquire_owned().await else {
                    return;
                };
                let (stream, peer) = match tcp.accept().await {
                    Ok(accepted) => accepted,
                    Err(err) => {
                        tracing::warn!(%err, "accepting a TCP connection failed");
                        tokio::time::sleep(ACCEPT_ERROR_BACKOFF).await;
                        continue;
                    }
                };
                // Small request/response exchanges must not wait for Nagle + delayed ACK.
                let _ = stream.set_nodelay(true);
                let acceptor = acceptor.clone();
                let sender = sender.clone();
                tokio::spawn(async move {
                    let handshake =
                        tokio::time::timeout(limits.handshake_timeout, acceptor.accept(stream));
                    let result = handshake.await;
                    drop(slot);
                    match result {
                        Ok(Ok(stream)) => {
                            let connection = TlsConnection {
                                stream,
                                peer,
                                permit,
                            };
                            // The receiver only goes away with the listener; nothing to do then.
                            let _ = sender.send(connection).await;
                        }
                        Ok(Err(err)) => tracing::debug!(%peer, %err, "TLS handshake failed"),
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                    }
                });
            }
        });
        Ok(Self {
            local_addr,
            ready,
            accept_loop,
        })
    }
}

impl TlsListener {
    /// The next connection whose handshake succeeded.
    pub async fn next_connection(&mut self) -> TlsConnection {
        match self.ready.recv().await {
            Some(connection) => connection,
            // The accept loop only stops when the listener is dropped; never resolve then.
            None => std::future::pending().await,
        }
    }
}

impl Drop for TlsListener {
    fn drop(&mut self) {
        self.accept_loop.abort();
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        let connection = self.next_connection().await;
        (connection.stream, connection.peer)
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        Ok(self.local_addr)
    }
}
