//! `burrow`: one binary that is both the server (`burrow serve`) and its client.

mod args;
mod client;
mod commands;
mod config;
mod output;
mod stats;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "burrow", version, about = "Perpetual sandboxes for AI agents")]
struct Cli {
    /// Server URL (default: $BURROW_URL, else http://127.0.0.1:7420).
    #[arg(long, global = true)]
    url: Option<String>,
    /// Data dir of a local server, where the CLI finds `client.key` (default: $BURROW_DATA_DIR, else /var/lib/burrow).
    #[arg(long, global = true)]
    data_dir: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the burrow daemon (API server, sandbox runtime, proxy).
    Serve(commands::serve::ServeArgs),
    /// Create a sandbox and print its id.
    Create(commands::sandbox::CreateArgs),
    /// List sandboxes.
    Ls(commands::sandbox::ListArgs),
    /// Show one sandbox.
    Info(commands::sandbox::InfoArgs),
    /// Run a command in a sandbox, stream its output, exit with its exit code.
    Exec(commands::exec::ExecArgs),
    /// Open an interactive shell (PTY) in a sandbox.
    Shell(commands::shell::ShellArgs),
    /// Copy files between the host and a sandbox (`ID:PATH` names a sandbox path).
    Cp(commands::cp::CpArgs),
    /// Put sandboxes to standby now (frozen, memory paged out); any request wakes them.
    Standby(commands::standby::StandbyArgs),
    /// Wake sleeping sandboxes.
    Resume(commands::standby::ResumeArgs),
    /// Start sandboxes in `error` again from their files (same id and files, fresh processes).
    Restart(commands::standby::RestartArgs),
    /// Delete sandboxes (and everything they hold).
    Rm(commands::sandbox::RmArgs),
    /// Change when a sandbox deletes itself (its expiry policy).
    Expire(commands::retention::ExpireArgs),
    /// Deletion records: `burrow retention report [--since T]`.
    #[command(subcommand)]
    Retention(commands::retention::RetentionCommand),
    /// Metered usage (GB-seconds awake, CPU seconds, standby storage) per sandbox and in total.
    Usage(commands::retention::UsageArgs),
    /// Forward a local TCP port to a port inside a sandbox.
    Forward(commands::forward::ForwardArgs),
    /// Workspaces: walls between customers or teams, each with its keys, tier and quotas.
    #[command(subcommand)]
    Workspace(commands::workspace::WorkspaceCommand),
    /// The audit log: every mutating call, with key, workspace, outcome and client address.
    Audit(commands::workspace::AuditArgs),
    /// Issue API keys (`--e2b` for E2B SDKs; `--workspace`, `--role`).
    #[command(subcommand)]
    Key(commands::key::KeyCommand),
    /// Build, list and remove templates.
    #[command(subcommand)]
    Template(commands::template::TemplateCommand),
    /// Benchmarks: print p50/p99 over many runs.
    #[command(subcommand)]
    Bench(commands::bench::BenchCommand),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if !matches!(cli.command, Command::Serve(_)) {
        // `burrow ls | head` must end quietly, like any Unix tool, not panic in println!
        // (Rust ignores SIGPIPE by default). Sockets are unaffected: std sends with
        // MSG_NOSIGNAL. The daemon keeps ignoring it.
        // SAFETY: signal() with a valid signal number and SIG_DFL, before any thread exists.
        unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("burrow: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let result = runtime.block_on(run(cli));
    // A blocking read of stdin (`shell`, `exec -i`) may still be parked in a runtime thread;
    // don't wait for it on the way out.
    runtime.shutdown_background();
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("burrow: {e:#}");
            ExitCode::from(1)
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let data_dir = config::data_dir(cli.data_dir.as_deref());
    let api = || -> anyhow::Result<client::ApiClient> {
        client::ApiClient::new(
            config::server_url(cli.url.as_deref()),
            config::api_key(&data_dir)?,
        )
    };
    match cli.command {
        Command::Serve(args) => commands::serve::run(args, data_dir).await,
        Command::Create(args) => commands::sandbox::create(&api()?, args).await,
        Command::Ls(args) => commands::sandbox::list(&api()?, args).await,
        Command::Info(args) => commands::sandbox::info(&api()?, args).await,
        Command::Rm(args) => commands::sandbox::remove(&api()?, args).await,
        Command::Standby(args) => commands::standby::standby(&api()?, args).await,
        Command::Resume(args) => commands::standby::resume(&api()?, args).await,
        Command::Restart(args) => commands::standby::restart(&api()?, args).await,
        Command::Exec(args) => commands::exec::run(&api()?, args).await,
        Command::Shell(args) => commands::shell::run(&api()?, args).await,
        Command::Cp(args) => commands::cp::run(&api()?, args).await,
        Command::Expire(args) => commands::retention::expire(&api()?, args).await,
        Command::Retention(cmd) => commands::retention::run(&api()?, cmd).await,
        Command::Usage(args) => commands::retention::usage(&api()?, args).await,
        Command::Forward(args) => commands::forward::run(&api()?, args).await,
        Command::Key(cmd) => commands::key::run(&api()?, cmd).await,
        Command::Workspace(cmd) => commands::workspace::run(&api()?, cmd).await,
        Command::Audit(args) => commands::workspace::audit(&api()?, args).await,
        Command::Template(cmd) => commands::template::run(cmd, &data_dir, api).await,
        Command::Bench(cmd) => commands::bench::run(&api()?, cmd, &data_dir).await,
    }
}
