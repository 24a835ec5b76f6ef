//! The launcher's contract with the daemon: the [`LaunchSpec`] it reads on stdin and the
//! [`LaunchReport`] line it writes on stdout.

pub mod spec;

pub use spec::{LaunchReport, LaunchSpec};
