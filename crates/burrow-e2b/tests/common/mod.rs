//! Test fixtures: an in-memory [`E2bBackend`] and a real axum server on 127.0.0.1:0.
//!
//! `MemoryBackend` is a test double of the *server's* sandbox service (burrow-server implements
//! the real one over the runtime; it does not exist yet). Everything burrow-e2b ships (router,
//! extractors, validation, wire format) runs for real, over real HTTP. The double keeps the E2B
//! lifecycle semantics the router relies on: absolute end times, set_timeout may shorten and 0
//! fires the on-timeout action, connect only extends, 409 when already paused, per-principal
//! isolation, idempotency keys.

#![allow(dead_code)] // each test binary uses a different subset

pub mod sdk;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::body::{Body, to_bytes};
use axum::extract::Request;
use axum::middleware::{self, Next};
use burrow_e2b::{
    BackendError, ConnectOptions, ConnectOutcome, CreateSandbox, E2bBackend, ListFilter, OnTimeout,
    Order, Principal, SandboxInfo, SandboxMetric, SandboxPage, SandboxState, TemplateAlias,
};
use chrono::{DateTime, Utc};
use rand::Rng;

pub const DOMAIN: &str = "burrow.localhost";
/// Creating from this template makes the double report 503, to test 5xx handling.
pub const UNAVAILABLE_TEMPLATE: &str = "unavailable";

/// A random API key in E2B's format (`e2b_` + 40 hex).
pub fn new_api_key() -> String {
    let bytes: [u8; 20] = rand::rng().random();
    format!("e2b_{}", hex::encode(bytes))
}

#[derive(Default)]
struct State {
    sandboxes: BTreeMap<String, (String, SandboxInfo)>,
    idempotency: HashMap<(String, String), String>,
}

pub struct MemoryBackend {
    keys: HashMap<String, String>,
    templates: BTreeSet<String>,
    state: Mutex<State>,
}

impl MemoryBackend {
    /// `keys`: API key → principal id. Only template `base` exists.
    pub fn new(keys: &[(&str, &str)]) -> Self {
        Self {
            keys: keys
                .iter()
                .map(|(k, p)| (k.to_string(), p.to_string()))
                .collect(),
            templates: ["base".to_string()].into(),
            state: Mutex::new(State::default()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Test hook: the stored info of a sandbox, whoever owns it.
    pub fn peek(&self, id: &str) -> Option<SandboxInfo> {
        let mut state = self.lock();
        expire(&mut state, Utc::now());
        state.sandboxes.get(id).map(|(_, info)| info.clone())
    }

    fn with_sandbox<T>(
        &self,
        principal: &Principal,
        id: &str,
        f: impl FnOnce(&mut State, DateTime<Utc>) -> Result<T, BackendError>,
    ) -> Result<T, BackendError> {
        let now = Utc::now();
        let mut state = self.lock();
        expire(&mut state, now);
        match state.sandboxes.get(id) {
            Some((owner, _)) if *owner == principal.id => f(&mut state, now),
            _ => Err(BackendError::SandboxNotFound(id.to_string())),
        }
    }
}

/// Applies the on-timeout action of every sandbox whose end time has passed.
fn expire(state: &mut State, now: DateTime<Utc>) {
    let due: Vec<String> = state
        .sandboxes
        .iter()
        .filter(|(_, (_, i))| i.state == SandboxState::Running && i.end_at <= now)
        .map(|(id, _)| id.clone())
        .collect();
    for id in due {
        let on_timeout = state.sandboxes[&id].1.on_timeout;
        match on_timeout {
            OnTimeout::Kill => {
                state.sandboxes.remove(&id);
            }
            OnTimeout::Pause { .. } => {
                if let Some((_, info)) = state.sandboxes.get_mut(&id) {
                    info.state = SandboxState::Paused;
                }
            }
        }
    }
}

fn new_sandbox_id() -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::rng();
    let tail: String = (0..19)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect();
    format!("i{tail}")
}

fn after(now: DateTime<Utc>, d: Duration) -> DateTime<Utc> {
    now + chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX)
}

fn info_mut<'a>(state: &'a mut State, id: &str) -> &'a mut SandboxInfo {
    &mut state
        .sandboxes
        .get_mut(id)
        .expect("checked by with_sandbox")
        .1
}

impl E2bBackend for MemoryBackend {
    async fn authenticate(&self, api_key: &str) -> Result<Principal, BackendError> {
        self.keys
            .get(api_key)
            .map(|id| Principal {
                id: id.clone(),
                team_id: None,
                read_only: false,
            })
            .ok_or(BackendError::Unauthorized)
    }

    async fn create(
        &self,
        principal: &Principal,
        request: CreateSandbox,
    ) -> Result<SandboxInfo, BackendError> {
        if request.template == UNAVAILABLE_TEMPLATE {
            return Err(BackendError::Unavailable(
                "no capacity left (test double)".into(),
            ));
        }
        if !self.templates.contains(&request.template) {
            return Err(BackendError::TemplateNotFound(request.template));
        }
        let now = Utc::now();
        let mut state = self.lock();
        expire(&mut state, now);
        if let Some(key) = &request.idempotency_key
            && let Some(id) = state.idempotency.get(&(principal.id.clone(), key.clone()))
            && let Some((_, info)) = state.sandboxes.get(id)
        {
            return Ok(info.clone());
        }
        let token: [u8; 16] = rand::rng().random();
        let info = SandboxInfo {
            id: new_sandbox_id(),
            template: request.template,
            state: SandboxState::Running,
            started_at: now,
            end_at: after(now, request.timeout),
            cpu_count: 2,
            memory_mb: 512,
            disk_size_mb: 1024,
            metadata: request.metadata,
            envd_access_token: Some(hex::encode(token)),
            traffic_access_token: (!request.public_traffic).then(|| hex::encode(token).repeat(2)),
            on_timeout: request.on_timeout,
            auto_resume: request.auto_resume,
            allow_internet_access: request.allow_internet_access,
        };
        if let Some(key) = request.idempotency_key {
            state
                .idempotency
                .insert((principal.id.clone(), key), info.id.clone());
        }
        state
            .sandboxes
            .insert(info.id.clone(), (principal.id.clone(), info.clone()));
        Ok(info)
    }

    async fn get(&self, principal: &Principal, id: &str) -> Result<SandboxInfo, BackendError> {
        self.with_sandbox(principal, id, |state, _| Ok(info_mut(state, id).clone()))
    }

    async fn list(
        &self,
        principal: &Principal,
        filter: ListFilter,
    ) -> Result<SandboxPage, BackendError> {
        let mut state = self.lock();
        expire(&mut state, Utc::now());
        let mut matching: Vec<SandboxInfo> = state
            .sandboxes
            .values()
            .filter(|(owner, _)| *owner == principal.id)
            .map(|(_, info)| info)
            .filter(|i| filter.states.contains(&i.state))
            .filter(|i| {
                filter
                    .metadata
                    .iter()
                    .all(|(k, v)| i.metadata.get(k) == Some(v))
            })
            .filter(|i| filter.template.as_ref().is_none_or(|t| *t == i.template))
            .filter(|i| filter.started_after.is_none_or(|t| i.started_at > t))
            .cloned()
            .collect();
        matching.sort_by(|a, b| (a.started_at, &a.id).cmp(&(b.started_at, &b.id)));
        if filter.order == Order::Desc {
            matching.reverse();
        }
        let offset = match &filter.cursor {
            None => 0,
            Some(c) => c
                .parse::<usize>()
                .map_err(|_| BackendError::InvalidRequest(format!("invalid nextToken {c:?}")))?,
        };
        let limit = filter.limit as usize;
        let next = offset + limit;
        let next_cursor = (next < matching.len()).then(|| next.to_string());
        let sandboxes = matching.into_iter().skip(offset).take(limit).collect();
        Ok(SandboxPage {
            sandboxes,
            next_cursor,
        })
    }

    async fn kill(&self, principal: &Principal, id: &str) -> Result<(), BackendError> {
        self.with_sandbox(principal, id, |state, _| {
            state.sandboxes.remove(id);
            Ok(())
        })
    }

    async fn set_timeout(
        &self,
        principal: &Principal,
        id: &str,
        timeout: Duration,
    ) -> Result<(), BackendError> {
        self.with_sandbox(principal, id, |state, now| {
            let info = info_mut(state, id);
            if info.state != SandboxState::Running {
                return Err(BackendError::NotRunning(id.to_string()));
            }
            info.end_at = after(now, timeout);
            expire(state, now);
            Ok(())
        })
    }

    async fn refresh(
        &self,
        principal: &Principal,
        id: &str,
        duration: Duration,
    ) -> Result<(), BackendError> {
        self.with_sandbox(principal, id, |state, now| {
            let info = info_mut(state, id);
            if info.state != SandboxState::Running {
                return Err(BackendError::NotRunning(id.to_string()));
            }
            info.end_at = info.end_at.max(after(now, duration));
            Ok(())
        })
    }

    async fn pause(
        &self,
        principal: &Principal,
        id: &str,
        _keep_memory: bool,
    ) -> Result<(), BackendError> {
        self.with_sandbox(principal, id, |state, _| {
            let info = info_mut(state, id);
            if info.state == SandboxState::Paused {
                return Err(BackendError::AlreadyPaused(id.to_string()));
            }
            info.state = SandboxState::Paused;
            Ok(())
        })
    }

    async fn connect(
        &self,
        principal: &Principal,
        id: &str,
        options: ConnectOptions,
    ) -> Result<(SandboxInfo, ConnectOutcome), BackendError> {
        self.with_sandbox(principal, id, |state, now| {
            let info = info_mut(state, id);
            let wanted_end = after(now, options.timeout);
            let outcome = match info.state {
                SandboxState::Running => {
                    info.end_at = info.end_at.max(wanted_end);
                    ConnectOutcome::AlreadyRunning
                }
                SandboxState::Paused => {
                    info.state = SandboxState::Running;
                    info.end_at = wanted_end;
                    ConnectOutcome::Resumed
                }
            };
            Ok((info.clone(), outcome))
        })
    }

    async fn metrics(
        &self,
        principal: &Principal,
        id: &str,
        start: Option<DateTime<Utc>>,
        end: Option<DateTime<Utc>>,
    ) -> Result<Vec<SandboxMetric>, BackendError> {
        self.with_sandbox(principal, id, |state, now| {
            let info = info_mut(state, id);
            let sample = SandboxMetric {
                at: now,
                cpu_count: info.cpu_count,
                cpu_used_pct: 1.5,
                mem_used_bytes: 64 << 20,
                mem_total_bytes: info.memory_mb << 20,
                mem_cache_bytes: 8 << 20,
                disk_used_bytes: 100 << 20,
                disk_total_bytes: info.disk_size_mb << 20,
            };
            let in_window =
                start.is_none_or(|s| sample.at >= s) && end.is_none_or(|e| sample.at <= e);
            Ok(if in_window { vec![sample] } else { vec![] })
        })
    }

    async fn resolve_template(
        &self,
        _principal: &Principal,
        alias: &str,
    ) -> Result<TemplateAlias, BackendError> {
        if self.templates.contains(alias) {
            Ok(TemplateAlias {
                template_id: alias.to_string(),
                public: false,
            })
        } else {
            Err(BackendError::TemplateNotFound(alias.to_string()))
        }
    }

    fn sandbox_domain(&self) -> Option<String> {
        Some(DOMAIN.to_string())
    }
}

/// One request as it arrived at the server.
#[derive(Debug, Clone)]
pub struct WireRequest {
    pub method: String,
    /// Path plus `?query` if any, exactly as sent.
    pub target: String,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl WireRequest {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

pub type WireLog = Arc<Mutex<Vec<WireRequest>>>;

/// A running server: the router over `backend`, with every request recorded.
pub struct TestServer {
    pub addr: SocketAddr,
    pub backend: Arc<MemoryBackend>,
    pub wire: WireLog,
}

impl TestServer {
    pub async fn start(backend: MemoryBackend) -> Self {
        let backend = Arc::new(backend);
        let wire: WireLog = Arc::default();
        let log = wire.clone();
        let app = burrow_e2b::router(backend.clone()).layer(middleware::from_fn(
            move |req: Request, next: Next| {
                let log = log.clone();
                async move {
                    let (parts, body) = req.into_parts();
                    let bytes = to_bytes(body, 16 << 20).await.unwrap_or_default();
                    log.lock().unwrap().push(WireRequest {
                        method: parts.method.to_string(),
                        target: parts
                            .uri
                            .path_and_query()
                            .map(|p| p.to_string())
                            .unwrap_or_default(),
                        headers: parts
                            .headers
                            .iter()
                            .map(|(n, v)| {
                                (n.to_string(), String::from_utf8_lossy(v.as_bytes()).into())
                            })
                            .collect(),
                        body: String::from_utf8_lossy(&bytes).into_owned(),
                    });
                    next.run(Request::from_parts(parts, Body::from(bytes)))
                        .await
                }
            },
        ));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Self {
            addr,
            backend,
            wire,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub fn take_wire(&self) -> Vec<WireRequest> {
        std::mem::take(&mut *self.wire.lock().unwrap())
    }
}
