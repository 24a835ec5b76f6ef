//! burrow's daemon: the native REST API (`/v1`), API key authentication, the OpenAPI document,
//! the sandbox service and the port proxy. `burrow serve` calls [`serve`].

mod activity;
mod api;
mod audit;
mod auth;
mod build;
mod e2b;
mod error;
mod extract;
mod http_server;
mod json_errors;
mod openapi;
#[cfg(test)]
mod prop_tests;
mod proxy;
mod state;
mod step_runner;
mod tls;
mod uploads;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use burrow_runtime::{Runtime, RuntimeConfig};
use burrow_store::Store;
use burrow_templates::TemplateStore;
use tokio::net::TcpListener;

pub use burrow_core::keys::CLIENT_KEY_FILE;
pub use burrow_core::standby::ZRAM_DEVICE;
use burrow_core::{Core, keys, metering, retention, sandboxes, shutdown, standby, workspaces};
pub use burrow_core::{DEFAULT_LISTEN, DeepOnShutdown, ServerConfig, TlsConfig};
pub use error::ServeError;
pub use openapi::document as openapi_document;

use crate::error::HttpError;
use crate::state::AppState;

/// A daemon whose listener is bound and whose state is loaded; [`Server::run`] serves it.
pub struct Server {
    listener: TcpListener,
    router: Router,
    state: AppState,
    /// The HTTPS listener (same routes), if configured.
    tls: Option<tls::BoundTls>,
    e2b: Arc<e2b::E2bService>,
}

impl Server {
    /// Opens the data dir, database and runtime, reconciles sandboxes, creates the first API key
    /// if there is none (printed once to stdout if `print_new_key`), and binds the listener.
    pub async fn bind(config: ServerConfig) -> Result<Self, ServeError> {
        if config.domain.is_empty() || config.domain.contains(['/', ':', ' ']) {
            return Err(ServeError::Config(format!(
                "domain '{}' is not a host name",
                config.domain
            )));
        }
        validate_http_limits(&config)?;
        std::fs::create_dir_all(&config.data_dir).map_err(ServeError::io(format!(
            "creating {}",
            config.data_dir.display()
        )))?;
        // Root-only before anything is written into it: the data dir holds the API key, the
        // database, template layers with setuid files, sandboxes' files and memory images.
        std::fs::set_permissions(
            &config.data_dir,
            std::os::unix::fs::PermissionsExt::from_mode(0o700),
        )
        .map_err(ServeError::io(format!(
            "making {} root-only",
            config.data_dir.display()
        )))?;
        let store = Store::open(&config.data_dir.join("burrow.db")).await?;
        if let Some(key) = keys::ensure_first_key(&store, &config.data_dir).await?
            && config.print_new_key
        {
            println!(
                "burrow: created API key (shown once; also in {}):",
                config.data_dir.join(CLIENT_KEY_FILE).display()
            );
            println!("{key}");
        }
        // The launcher accepts only clean absolute paths (no `..`, no symlinks to resolve).
        let mut config = config;
        for (what, path) in [
            ("launcher", &mut config.launcher_path),
            ("agent", &mut config.agent_path),
        ] {
            *path = std::fs::canonicalize(&*path)
                .map_err(ServeError::io(format!("{what} binary {}", path.display())))?;
        }
        let (tiers, prices) = workspaces::load_tiers_and_prices(&config.data_dir)?;
        let templates = TemplateStore::open(&config.data_dir)?;
        let uploads = uploads::UploadStore::open(&config.data_dir)?;
        let runtime = Runtime::new(RuntimeConfig {
            data_dir: config.data_dir.clone(),
            launcher_path: config.launcher_path.clone(),
            agent_path: config.agent_path.clone(),
            net_pool_size: config.net_pool_size,
        })
        .await?;
        let listener = TcpListener::bind(config.listen)
            .await
            .map_err(ServeError::io(format!("listening on {}", config.listen)))?;
        let zram_bytes = config.zram_bytes;
        let mut swap = tokio::task::spawn_blocking(move || standby::setup_swap(zram_bytes))
            .await
            .map_err(|e| ServeError::Config(format!("zram set-up task: {e}")))?;
        swap.drop_cache = config.standby_drop_cache;
        let e2b_lifecycles = Arc::new(
            e2b::lifecycle::Lifecycles::load(&config.data_dir)
                .map_err(|e| ServeError::Config(e.to_string()))?,
        );
        let e2b_metrics: Arc<e2b::metrics::MetricsRing> = Arc::default();
        let forget_hooks: Vec<burrow_core::ForgetHook> = vec![
            {
                let lifecycles = e2b_lifecycles.clone();
                Arc::new(move |id: &str| lifecycles.remove(id))
            },
            {
                let metrics = e2b_metrics.clone();
                Arc::new(move |id: &str| metrics.forget(id))
            },
        ];
        let core = Core {
            config: Arc::new(config),
            store,
            runtime: Arc::new(runtime),
            templates,
            power: Arc::default(),
            swap: Arc::new(swap),
            metrics: Arc::default(),
            sampler: Arc::default(),
            deletes: Arc::default(),
            sandbox_owners: Arc::default(),
            traffic_tokens: Arc::default(),
            tiers: Arc::new(tiers),
            prices: Arc::new(prices),
            quotas: Arc::default(),
            forget_hooks: Arc::new(forget_hooks),
        };
        let state = AppState {
            core,
            uploads,
            proxy_client: proxy::new_client(),
            e2b_lifecycles: e2b_lifecycles.clone(),
            e2b_metrics,
            key_uses: Arc::default(),
            audit: Arc::default(),
        };
        let tls = match &state.config.tls {
            Some(tls_config) => {
                let limits = burrow_e2b::TlsLimits {
                    handshake_timeout: state.config.http_header_timeout,
                    max_connections: Some(state.config.max_connections),
                };
                Some(
                    tls::bind(
                        tls_config,
                        &state.config.data_dir,
                        &state.config.domain,
                        limits,
                    )
                    .await?,
                )
            }
            None => None,
        };
        sandboxes::reconcile(&state).await?;
        e2b_lifecycles.retain_known(&state.store.sandbox_ids().await?);
        let e2b = Arc::new(e2b::E2bService::new(state.clone()));
        let e2b_router = e2b::E2bRouter::new(&state.config.domain, burrow_e2b::router(e2b.clone()));
        Ok(Self {
            listener,
            router: router(state.clone(), e2b_router),
            state,
            tls,
            e2b,
        })
    }

    /// The address the listener is bound to (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound TCP listener has an address")
    }

    /// The address of the HTTPS listener, if there is one.
    pub fn tls_addr(&self) -> Option<SocketAddr> {
        self.tls
            .as_ref()
            .and_then(|tls| axum::serve::Listener::local_addr(&tls.listener).ok())
    }

    /// The CA certificate clients must trust for the HTTPS listener (`<data_dir>/tls/ca.pem`), when
    /// burrow issued the certificate itself.
    pub fn ca_cert_path(&self) -> Option<&std::path::Path> {
        self.tls.as_ref().and_then(|tls| tls.ca_cert.as_deref())
    }

    /// Serves HTTP/1.1 and h2c until `shutdown` completes; then waits up to
    /// [`SHUTDOWN_GRACE`] for open requests (exec streams, shells, tunnels), then checkpoints
    /// sandboxes as `deep_on_shutdown` says before returning. Sandboxes left running keep
    /// running: the next start adopts them.
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), ServeError> {
        tracing::info!(addr = %self.local_addr(), "burrow API listening");
        // Aborted when `run` returns, so a stopped server leaves no timer behind.
        let idle_timer = AbortOnDrop(tokio::spawn(standby::idle_loop(self.state.core.clone())));
        let _expiry = AbortOnDrop(tokio::spawn(retention::expiry_loop(
            self.state.core.clone(),
        )));
        let _meter = AbortOnDrop(tokio::spawn(metering::meter_loop(self.state.core.clone())));
        let _key_uses = AbortOnDrop(tokio::spawn(auth::key_use_loop(self.state.clone())));
        let _audit = AbortOnDrop(tokio::spawn(audit::audit_loop(self.state.clone())));
        let resume_marked = AbortOnDrop(tokio::spawn(shutdown::resume_marked(
            self.state.core.clone(),
        )));
        let e2b_timeouts = AbortOnDrop(tokio::spawn(e2b::run_timeouts(
            self.e2b.clone(),
            self.state.e2b_lifecycles.clone(),
        )));
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            shutdown.await;
            let _ = stop_tx.send(true);
        });
        let limits = http_limits(&self.state.config);
        let https = self.tls.map(|tls| {
            let addr = axum::serve::Listener::local_addr(&tls.listener).ok();
            tracing::info!(?addr, "burrow HTTPS listening");
            http_server::serve_tls(tls.listener, self.router.clone(), limits, stop_rx.clone())
        });
        let http = http_server::serve_plain(self.listener, self.router, limits, stop_rx.clone());
        let serve = async move {
            match https {
                Some(https) => {
                    tokio::join!(http, https);
                }
                None => http.await,
            }
        };
        let mut deadline_rx = stop_rx;
        let deadline = async move {
            let _ = deadline_rx.wait_for(|stop| *stop).await;
            tokio::time::sleep(SHUTDOWN_GRACE).await;
        };
        tokio::select! {
            () = serve => {}
            () = deadline => {
                tracing::warn!("open connections did not finish within {SHUTDOWN_GRACE:?}; closing them");
            }
        }
        drop(idle_timer);
        drop(e2b_timeouts);
        if let Err(e) = self.state.key_uses.flush(&self.state.store).await {
            tracing::warn!("recording API key uses: {e}");
        }
        drop(resume_marked);
        shutdown::deep_on_shutdown(
            &self.state,
            self.state.config.deep_on_shutdown,
            DEEP_ON_SHUTDOWN_BUDGET,
        )
        .await;
        Ok(())
    }
}

/// Rejects client bounds that would make the server unusable (a zero cap or timeout).
fn validate_http_limits(config: &ServerConfig) -> Result<(), ServeError> {
    if config.max_connections == 0 || config.max_connections > tokio::sync::Semaphore::MAX_PERMITS {
        return Err(ServeError::Config(format!(
            "max connections {} is out of range: use 1 to {}",
            config.max_connections,
            tokio::sync::Semaphore::MAX_PERMITS
        )));
    }
    for (what, value) in [
        ("HTTP header timeout", config.http_header_timeout),
        ("HTTP idle timeout", config.http_idle_timeout),
        ("HTTP stall timeout", config.http_stall_timeout),
    ] {
        if value.is_zero() {
            return Err(ServeError::Config(format!("the {what} must be above zero")));
        }
    }
    Ok(())
}

/// Aborts a background task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// How long a shutdown waits for open requests.
pub const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

/// How long a shutdown may spend sending sandboxes to deep standby.
pub const DEEP_ON_SHUTDOWN_BUDGET: std::time::Duration = std::time::Duration::from_secs(60);

/// Runs the daemon until `shutdown` completes.
pub async fn serve(
    config: ServerConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    Server::bind(config).await?.run(shutdown).await
}

async fn openapi_json() -> impl IntoResponse {
    axum::Json(openapi::document())
}

fn router(state: AppState, e2b: e2b::E2bRouter) -> Router {
    let json_limit = state.config.max_json_bytes;
    let api = Router::new()
        .route("/healthz", get(api::health::healthz))
        .route("/openapi.json", get(openapi_json))
        .route(
            "/v1/sandboxes",
            post(api::sandboxes::create).get(api::sandboxes::list),
        )
        .route(
            "/v1/sandboxes/{id}",
            get(api::sandboxes::get).delete(api::sandboxes::delete),
        )
        .route("/v1/sandboxes/{id}/exec", post(api::exec::exec))
        .route("/v1/sandboxes/{id}/standby", post(api::standby::standby))
        .route("/v1/sandboxes/{id}/resume", post(api::standby::resume))
        .route("/v1/sandboxes/{id}/restart", post(api::standby::restart))
        .route(
            "/v1/sandboxes/{id}/leases",
            post(api::standby::create_lease),
        )
        .route(
            "/v1/sandboxes/{id}/leases/{lease}",
            axum::routing::delete(api::standby::delete_lease),
        )
        .route(
            "/v1/sandboxes/{id}/files",
            get(api::files::read)
                .put(api::files::write)
                .delete(api::files::remove),
        )
        .route("/v1/sandboxes/{id}/files/list", get(api::files::list))
        .route("/v1/sandboxes/{id}/files/mkdir", post(api::files::mkdir))
        .route("/v1/sandboxes/{id}/pty", get(api::pty::pty))
        .route(
            "/v1/sandboxes/{id}/ports/{port}/tunnel",
            get(api::tunnel::tunnel),
        )
        .route("/v1/api-keys", post(api::keys::create).get(api::keys::list))
        .route(
            "/v1/api-keys/{id}",
            axum::routing::delete(api::keys::revoke),
        )
        .route(
            "/v1/sandboxes/{id}/expiration",
            axum::routing::put(api::retention::set_expiration),
        )
        .route(
            "/v1/sandboxes/{id}/usage",
            get(api::retention::sandbox_usage),
        )
        .route("/v1/usage", get(api::retention::usage_report))
        .route("/v1/usage/projection", get(api::retention::projection))
        .route(
            "/v1/retention/report",
            get(api::retention::retention_report),
        )
        .route("/v1/audit", get(api::retention::audit))
        .route(
            "/v1/workspaces",
            post(api::workspaces::create).get(api::workspaces::list),
        )
        .route(
            "/v1/workspaces/{name}",
            get(api::workspaces::get)
                .patch(api::workspaces::update)
                .delete(api::workspaces::remove),
        )
        .route("/v1/tombstones", get(api::retention::tombstones))
        .route("/metrics", get(api::retention::metrics))
        .route(
            "/v1/templates",
            get(api::templates::list).post(api::templates::create),
        )
        .route(
            "/v1/templates/{name}",
            axum::routing::delete(api::templates::delete),
        )
        .route(
            "/v1/templates/uploads/{sha256}",
            get(api::templates::upload_status)
                .head(api::templates::upload_head)
                .put(api::templates::upload_put),
        )
        .fallback(api::route_not_found)
        .method_not_allowed_fallback(api::method_not_allowed)
        // Uploads stream with their own limit; this one bounds buffered (JSON) bodies.
        .layer(DefaultBodyLimit::max(json_limit))
        .layer(axum::middleware::from_fn(json_errors::ensure_json_errors))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::require_api_key,
        ));
    // Outermost first: the port proxy, then the E2B API (by host or path), then the native API.
    // Request bodies of the API and the E2B API are bounded by the stall timeout; proxied ones
    // are not (a stream into a sandbox may pause for as long as the sandbox's protocol allows).
    api.layer(axum::middleware::from_fn_with_state(
        e2b,
        e2b::route_e2b_api,
    ))
    .layer(axum::middleware::from_fn_with_state(
        state.clone(),
        audit::record_calls,
    ))
    .layer(axum::middleware::from_fn_with_state(
        state.config.http_stall_timeout,
        http_server::bound_request_body,
    ))
    .layer(axum::middleware::from_fn_with_state(
        state.clone(),
        proxy::proxy_or_api,
    ))
    .layer(tower_http::catch_panic::CatchPanicLayer::custom(
        panic_response,
    ))
    .with_state(state)
}

fn panic_response(panic: Box<dyn std::any::Any + Send + 'static>) -> axum::response::Response {
    let detail = panic
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| panic.downcast_ref::<&str>().copied())
        .unwrap_or("unknown panic");
    tracing::error!("request handler panicked: {detail}");
    HttpError::internal("internal error (a bug in burrow); the server log has details")
        .into_response()
}

/// The bounds on clients of each listener.
fn http_limits(config: &ServerConfig) -> http_server::HttpLimits {
    http_server::HttpLimits {
        max_connections: config.max_connections,
        header_timeout: config.http_header_timeout,
        idle_timeout: config.http_idle_timeout,
        stall_timeout: config.http_stall_timeout,
    }
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::http::{Request, StatusCode};
    use tower::ServiceExt;

    #[tokio::test]
    async fn panics_become_500_json() {
        let app = axum::Router::new()
            .route(
                "/boom",
                axum::routing::get(|| async {
                    panic!("handler bug");
                    #[allow(unreachable_code)]
                    ""
                }),
            )
            .layer(tower_http::catch_panic::CatchPanicLayer::custom(
                super::panic_response,
            ));
        let resp = app
            .oneshot(Request::get("/boom").body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let body = axum::body::to_bytes(resp.into_body(), 4096).await.unwrap();
        let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(json["code"], "internal");
    }
}
