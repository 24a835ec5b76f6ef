//! burrow's domain rules, independent of any transport: who a caller is and what it may see
//! ([`Principal`]), what a workspace may use ([`quota`]), and what keeping sandboxes would cost
//! ([`cost`]). The REST API, the E2B API and the CLI translate into these types and translate
//! [`CoreError`] back into their own status codes and bodies.

pub mod cost;
mod error;
mod principal;
pub mod quota;
pub mod workspace;

pub use error::CoreError;
pub use principal::{Principal, Role, Scope};
