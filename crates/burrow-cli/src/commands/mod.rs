//! One module per subcommand.

pub mod bench;
pub mod bench_density;
pub mod bench_resume;
pub mod build_upload;
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
pub mod workspace;

use std::process::ExitCode;

/// Runs `call` for every sandbox id, printing the line it returns or the error; exits 1 if any
/// failed (the others still run).
pub async fn for_each_id<F, Fut>(ids: &[String], call: F) -> anyhow::Result<ExitCode>
where
    F: Fn(String) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<String>>,
{
    let mut failed = false;
    for id in ids {
        match call(id.clone()).await {
            Ok(line) => println!("{line}"),
            Err(e) => {
                eprintln!("burrow: {id}: {e:#}");
                failed = true;
            }
        }
    }
    Ok(if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}
