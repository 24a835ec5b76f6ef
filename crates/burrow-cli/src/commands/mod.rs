//! One module per subcommand.

pub mod bench;
pub mod bench_resume;
pub mod cp;
pub mod exec;
pub mod forward;
pub mod key;
pub mod retention;
pub mod sandbox;
pub mod serve;
pub mod shell;
pub mod standby;
pub mod template;
