//! burrow's domain, independent of any transport: sandboxes and their power states
//! ([`sandboxes`], [`power`], [`standby`]), retention and erasure ([`retention`]), metering
//! ([`metering`]), workspaces and their quotas ([`workspaces`], [`quota`]), who a caller is and
//! what it may see ([`Principal`], [`owners`]), and what keeping sandboxes would cost ([`cost`]).
//!
//! Everything here works on one [`Core`] and answers [`CoreError`]. The REST API, the E2B API
//! and the CLI (in `burrow-server` and `burrow-cli`) parse requests into calls of this crate and
//! translate its errors into their own status codes and bodies; nothing here knows HTTP.

pub mod agent;
pub mod config;
pub mod cost;
mod error;
pub mod ids;
pub mod keys;
pub mod metering;
pub mod owners;
pub mod power;
pub mod pre_standby;
mod principal;
pub mod quota;
pub mod retention;
pub mod sandboxes;
pub mod shutdown;
pub mod standby;
mod state;
pub mod template_start;
pub mod templates;
pub mod traffic;
pub mod validate;
pub mod workspace;
pub mod workspaces;

pub use config::{DEFAULT_LISTEN, DeepOnShutdown, ServerConfig, TlsConfig};
pub use error::{AgentFailure, CoreError};
pub use principal::{Principal, Role, Scope};
pub use state::{Core, ForgetHook};
