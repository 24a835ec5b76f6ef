//! burrow-agent: the in-sandbox envd-compatible daemon (library part, used by the binary
//! and the integration tests).

pub mod auth;
pub mod config;
pub mod creds;
pub mod entry;
pub mod files_http;
pub mod fs_service;
pub mod metrics;
pub mod paths;
pub mod port_forward;
pub mod process;
pub mod process_service;
pub mod rpc;
pub mod server;
pub mod state;
pub mod users;
pub mod watch;

pub use config::Config;
pub use server::router;
pub use state::AgentState;
