//! Serves the router on the plain and TLS listeners with bounds on slow clients (the limits are
//! [`HttpLimits`]; docs/api.md "Limits and timeouts" explains them to operators):
//!
//! - a connection cap per listener: a semaphore permit is taken before `accept`, so beyond the
//!   cap new connections wait in the kernel backlog; the permit lives inside the connection's IO,
//!   so an upgraded connection (WebSocket, tunnel) keeps holding it;
//! - HTTP/1.1: hyper's header-read timeout, which runs from the moment the server waits for a
//!   request head (a new connection, or the end of the previous response) to the head's end, so
//!   it bounds both half-sent heads and idle keep-alive connections;
//! - an idle bound for every connection: no request in flight for `idle_timeout` (an HTTP/2
//!   connection without streams) → graceful close; before the first request the header timeout
//!   is the bound (a client that connects and sends nothing, or half an HTTP/2 preface);
//! - a stall bound: a write to the client that makes no progress for `stall_timeout` fails,
//!   which ends the connection (or the upgraded stream), and so does a response whose client
//!   has not taken its last frame for as long (an HTTP/2 client keeping its window closed); on the API's own routes a request body
//!   the handler waits on that brings nothing for as long fails too ([`bound_request_body`]).
//!
//! There is deliberately no whole-request timeout: exec streams, PTYs, tunnels and proxied
//! long-polls legitimately last for hours.

use std::collections::HashMap;
use std::convert::Infallible;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use bytes::Bytes;
use hyper::body::{Frame, Incoming, SizeHint};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::time::{Instant, Sleep};
use tower::ServiceExt;

/// The bounds on clients of one listener.
#[derive(Debug, Clone, Copy)]
pub struct HttpLimits {
    /// Open connections at most; further ones wait in the kernel's accept backlog.
    pub max_connections: usize,
    /// HTTP/1.1: time for a complete request head, counted from when the server starts waiting
    /// for it (so it also closes idle keep-alive connections); also the TLS handshake's bound.
    pub header_timeout: Duration,
    /// A connection with no request in flight for this long is closed (HTTP/2: GOAWAY).
    pub idle_timeout: Duration,
    /// A write to the client that makes no progress for this long fails and ends the connection.
    pub stall_timeout: Duration,
}

/// Back-off after a failed `accept` (e.g. EMFILE) so the loop does not spin.
const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(50);
/// HTTP/2 streams one connection may have open at once.
const H2_MAX_CONCURRENT_STREAMS: u32 = 256;
/// HTTP/2 PINGs on a quiet connection to find peers that went away without a FIN.
const H2_KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(30);

/// Accepts on `listener` until `stop` turns true, serving each connection with `router`; then
/// asks every connection to finish (graceful shutdown) and returns once all have closed.
pub async fn serve_plain(
    listener: TcpListener,
    router: Router,
    limits: HttpLimits,
    stop: watch::Receiver<bool>,
) {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let accept = |slots: Arc<Semaphore>| {
        let listener = &listener;
        async move {
            loop {
                let Ok(permit) = slots.clone().acquire_owned().await else {
                    return None;
                };
                match listener.accept().await {
                    Ok((tcp, peer)) => {
                        // Small request/response exchanges must not wait for Nagle + delayed ACK.
                        let _ = tcp.set_nodelay(true);
                        return Some((tcp, peer, permit));
                    }
                    Err(err) => {
                        tracing::warn!(%err, "accepting a TCP connection failed");
                        drop(permit);
                        tokio::time::sleep(ACCEPT_ERROR_BACKOFF).await;
                    }
                }
            }
        }
    };
    let connections = Connections::new();
    let mut stopping = stop.clone();
    loop {
        let accepted = tokio::select! {
            accepted = accept(slots.clone()) => accepted,
            _ = stopping.wait_for(|stop| *stop) => break,
        };
        let Some((tcp, peer, permit)) = accepted else {
            break;
        };
        connections.spawn(
            tcp,
            peer,
            Some(permit),
            router.clone(),
            limits,
            stop.clone(),
        );
    }
    drop(listener);
    connections.wait().await;
}

/// Like [`serve_plain`] for the HTTPS listener, whose accept loop (TLS handshakes with a
/// deadline, in parallel) already took each connection's permit.
pub async fn serve_tls(
    mut listener: burrow_e2b::TlsListener,
    router: Router,
    limits: HttpLimits,
    stop: watch::Receiver<bool>,
) {
    // Its requests say they came over TLS: URLs the server hands out (E2B's template upload
    // URLs) must use https.
    let router = router.layer(axum::Extension(http::uri::Scheme::HTTPS));
    let connections = Connections::new();
    let mut stopping = stop.clone();
    loop {
        let accepted = tokio::select! {
            accepted = listener.next_connection() => accepted,
            _ = stopping.wait_for(|stop| *stop) => break,
        };
        connections.spawn(
            accepted.stream,
            accepted.peer,
            accepted.permit,
            router.clone(),
            limits,
            stop.clone(),
        );
    }
    drop(listener);
    connections.wait().await;
}

/// The open connections of one listener: each task holds a receiver of `closed`, so
/// `closed.closed()` resolves when the last one has ended.
struct Connections {
    closed: watch::Sender<()>,
}

impl Connections {
    fn new() -> Self {
        Self {
            closed: watch::channel(()).0,
        }
    }

    fn spawn<T>(
        &self,
        io: T,
        peer: std::net::SocketAddr,
        permit: Option<OwnedSemaphorePermit>,
        router: Router,
        limits: HttpLimits,
        stop: watch::Receiver<bool>,
    ) where
        T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let done = self.closed.subscribe();
        tokio::spawn(async move {
            serve_connection(io, PeerAddr(peer), permit, router, limits, stop).await;
            drop(done);
        });
    }

    async fn wait(self) {
        self.closed.closed().await;
    }
}

/// The client address of a request's connection (a request extension; the audit log records it).
#[derive(Debug, Clone, Copy)]
pub struct PeerAddr(pub std::net::SocketAddr);

async fn serve_connection<T>(
    io: T,
    peer: PeerAddr,
    permit: Option<OwnedSemaphorePermit>,
    router: Router,
    limits: HttpLimits,
    mut stop: watch::Receiver<bool>,
) where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let activity = Arc::new(ConnectionActivity::new());
    let io = TokioIo::new(GuardedIo::new(io, limits.stall_timeout, permit));
    let service = TrackedService {
        router,
        peer,
        activity: activity.clone(),
    };
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(H2_KEEP_ALIVE_INTERVAL)
        .keep_alive_timeout(limits.stall_timeout)
        .max_concurrent_streams(H2_MAX_CONCURRENT_STREAMS)
        // WebSockets over HTTP/2 (RFC 8441).
        .enable_connect_protocol();
    let conn = builder.serve_connection_with_upgrades(io, service);
    tokio::pin!(conn);
    let idle = idle_for(&activity, limits);
    tokio::pin!(idle);
    let stalled = response_stalled(&activity, limits.stall_timeout);
    tokio::pin!(stalled);
    let mut stopping = false;
    // Set once an idle connection was asked to close: a close that makes no progress for the
    // stall bound (an HTTP/2 stream stuck behind a closed flow-control window) is cut short.
    let mut idle_close: Option<Pin<Box<Sleep>>> = None;
    loop {
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(err) = result {
                    tracing::trace!("connection ended: {err}");
                }
                return;
            }
            // The server's own grace period (SHUTDOWN_GRACE) bounds this close.
            _ = stop.wait_for(|stop| *stop), if !stopping => {
                stopping = true;
                conn.as_mut().graceful_shutdown();
            }
            () = &mut idle, if idle_close.is_none() && !stopping => {
                tracing::trace!("closing a connection idle for {:?}", limits.idle_timeout);
                conn.as_mut().graceful_shutdown();
                idle_close = Some(Box::pin(tokio::time::sleep(limits.stall_timeout)));
            }
            () = async { idle_close.as_mut().expect("guarded by the condition").await },
                if idle_close.is_some() => return,
            // An HTTP/2 client can stop taking a response without stalling the socket: it keeps
            // the stream's window closed. Dropping the connection ends its requests.
            () = &mut stalled => {
                tracing::debug!("dropping a connection whose client stopped taking a response");
                return;
            }
        }
    }
}

/// Resolves once the connection has had no request in flight for `idle_timeout`, or, before
/// its first request, for the header timeout (so a client that connects and sends nothing, or
/// only part of the HTTP/2 preface, is bounded like a slow request head).
async fn idle_for(activity: &ConnectionActivity, limits: HttpLimits) {
    loop {
        let bound = if activity.served_any.load(Ordering::SeqCst) {
            limits.idle_timeout
        } else {
            limits.idle_timeout.min(limits.header_timeout)
        };
        match activity.idle_since() {
            Some(since) if since.elapsed() >= bound => return,
            Some(since) => tokio::time::sleep_until(since + bound).await,
            None => tokio::time::sleep(bound).await,
        }
    }
}

/// Resolves once a response has waited `stall_timeout` for the client to take its last frame
/// (noticed within 1.5 times the bound).
async fn response_stalled(activity: &ConnectionActivity, stall_timeout: Duration) {
    loop {
        let oldest = activity.unconsumed().values().min().copied();
        match oldest {
            Some(since) if since.elapsed() >= stall_timeout => return,
            Some(since) => tokio::time::sleep_until(since + stall_timeout).await,
            None => tokio::time::sleep(stall_timeout / 2).await,
        }
    }
}

/// What a connection is doing: requests in flight (a response counts until its body is sent
/// or dropped) and since when it has had none.
struct ConnectionActivity {
    served_any: AtomicBool,
    in_flight: AtomicUsize,
    idle_since: Mutex<Instant>,
    next_request: AtomicU64,
    /// Responses whose body handed hyper a data frame and has not been asked for the next one
    /// since (by request number): hyper asks once the client has taken (read, or opened its
    /// HTTP/2 window for) what it was given.
    unconsumed_since: Mutex<HashMap<u64, Instant>>,
}

impl ConnectionActivity {
    fn new() -> Self {
        Self {
            served_any: AtomicBool::new(false),
            in_flight: AtomicUsize::new(0),
            idle_since: Mutex::new(Instant::now()),
            next_request: AtomicU64::new(0),
            unconsumed_since: Mutex::new(HashMap::new()),
        }
    }

    fn unconsumed(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Instant>> {
        self.unconsumed_since
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// `None` while a request is in flight.
    fn idle_since(&self) -> Option<Instant> {
        let since = *self.idle_since.lock().unwrap_or_else(|e| e.into_inner());
        (self.in_flight.load(Ordering::SeqCst) == 0).then_some(since)
    }
}

/// One request in flight on a connection, from its head to the end (or drop) of its response.
struct InFlight(Arc<ConnectionActivity>, u64);

impl InFlight {
    fn start(activity: Arc<ConnectionActivity>) -> Self {
        activity.in_flight.fetch_add(1, Ordering::SeqCst);
        activity.served_any.store(true, Ordering::SeqCst);
        let request = activity.next_request.fetch_add(1, Ordering::SeqCst);
        Self(activity, request)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.unconsumed().remove(&self.1);
        // The timestamp first, so an idle check never sees zero with a stale time.
        *self.0.idle_since.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now();
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The router as a hyper service that counts requests in flight.
#[derive(Clone)]
struct TrackedService {
    router: Router,
    peer: PeerAddr,
    activity: Arc<ConnectionActivity>,
}

impl hyper::service::Service<http::Request<Incoming>> for TrackedService {
    type Response = http::Response<TrackedBody>;
    type Error = Infallible;
    type Future =
        Pin<Box<dyn std::future::Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn call(&self, request: http::Request<Incoming>) -> Self::Future {
        let in_flight = InFlight::start(self.activity.clone());
        let router = self.router.clone();
        let mut request = request.map(Body::new);
        request.extensions_mut().insert(self.peer);
        Box::pin(async move {
            let response = router.oneshot(request).await?;
            Ok(response.map(|body| TrackedBody { body, in_flight }))
        })
    }
}

/// A response body that keeps its request counted as in flight until it is done or dropped.
struct TrackedBody {
    body: Body,
    in_flight: InFlight,
}

impl hyper::body::Body for TrackedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let request = self.in_flight.1;
        self.in_flight.0.unconsumed().remove(&request);
        let poll = Pin::new(&mut self.body).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &poll
            && frame.is_data()
        {
            self.in_flight
                .0
                .unconsumed()
                .insert(request, Instant::now());
        }
        poll
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// A connection's IO with a bound on writes that make no progress (a client that stops reading:
/// its receive window and our send buffer fill up), holding the connection's slot under the cap.
/// Reads are not bounded here: idle keep-alive connections and WebSockets legitimately wait.
pub struct GuardedIo<T, P> {
    inner: T,
    stall_timeout: Duration,
    /// Armed while a write (or flush, or shutdown) is pending; disarmed by any progress.
    write_deadline: Option<Pin<Box<Sleep>>>,
    _permit: P,
}

impl<T, P> GuardedIo<T, P> {
    pub fn new(inner: T, stall_timeout: Duration, permit: P) -> Self {
        Self {
            inner,
            stall_timeout,
            write_deadline: None,
            _permit: permit,
        }
    }

    /// Turns a pending write into an error once it has been pending for the stall bound.
    fn guard<R>(&mut self, cx: &mut Context<'_>, poll: Poll<io::Result<R>>) -> Poll<io::Result<R>> {
        if poll.is_ready() {
            self.write_deadline = None;
            return poll;
        }
        let timeout = self.stall_timeout;
        let deadline = self
            .write_deadline
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        match deadline.as_mut().poll(cx) {
            Poll::Ready(()) => {
                self.write_deadline = None;
                Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("the client read nothing for {timeout:?}"),
                )))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<T: AsyncRead + Unpin, P: Unpin> AsyncRead for GuardedIo<T, P> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin, P: Unpin> AsyncWrite for GuardedIo<T, P> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.guard(cx, poll)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.guard(cx, poll)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let poll = Pin::new(&mut self.inner).poll_flush(cx);
        self.guard(cx, poll)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let poll = Pin::new(&mut self.inner).poll_shutdown(cx);
        self.guard(cx, poll)
    }
}

/// Middleware for routes whose request bodies burrow reads itself (the API and the E2B API, not
/// the port proxy, whose streams may legitimately pause): a body the handler waits on that
/// brings nothing new for the stall bound fails, so the handler answers and the connection ends.
pub async fn bound_request_body(
    axum::extract::State(stall_timeout): axum::extract::State<Duration>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let request = request.map(|body| {
        Body::new(StallBoundedBody {
            body,
            stall_timeout,
            deadline: None,
        })
    });
    next.run(request).await
}

/// A request body whose reads fail once one has waited `stall_timeout` for data.
struct StallBoundedBody {
    body: Body,
    stall_timeout: Duration,
    /// Armed while the reader waits; disarmed by any frame.
    deadline: Option<Pin<Box<Sleep>>>,
}

impl hyper::body::Body for StallBoundedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let this = &mut *self;
        if let Poll::Ready(frame) = Pin::new(&mut this.body).poll_frame(cx) {
            this.deadline = None;
            return Poll::Ready(frame);
        }
        let timeout = this.stall_timeout;
        let deadline = this
            .deadline
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        match deadline.as_mut().poll(cx) {
            Poll::Ready(()) => {
                this.deadline = None;
                Poll::Ready(Some(Err(axum::Error::new(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("the client sent no request body data for {timeout:?}"),
                )))))
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
