//! One module per subcommand.

pub mod bench;
pub mod cp;
pub mod exec;
pub mod forward;
pub mod sandbox;
pub mod serve;
pub mod shell;
pub mod template;
