//! Shared agent state handed to every request handler.

use std::sync::Arc;

use burrow_envd::ConnectError;

use crate::config::Config;
use crate::process::ProcessTable;
use crate::users::{User, lookup_user};
use crate::watch::WatcherTable;

pub struct AgentState {
    pub config: Config,
    pub processes: Arc<ProcessTable>,
    pub watchers: WatcherTable,
    pub cpu: crate::metrics::CpuSampler,
}

pub type SharedState = Arc<AgentState>;

impl AgentState {
    pub fn new(config: Config) -> SharedState {
        Arc::new(Self {
            config,
            processes: Arc::new(ProcessTable::default()),
            watchers: WatcherTable::default(),
            cpu: Default::default(),
        })
    }

    /// The named user, or the sandbox's default user when `name` is None/empty.
    pub fn user(&self, name: Option<&str>) -> Result<User, ConnectError> {
        match name.filter(|n| !n.is_empty()) {
            Some(name) => lookup_user(name),
            None => lookup_user(&self.config.default_user),
        }
    }
}
