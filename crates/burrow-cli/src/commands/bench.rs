//! `burrow bench create|exec|resume|density`: latency benchmarks over the real API, printing p50/p99.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use futures::StreamExt;
use serde_json::{Value, json};

use crate::client::{ApiClient, ndjson};
use crate::stats::Summary;

#[derive(Subcommand)]
pub enum BenchCommand {
    /// Create a sandbox until its agent answers (the API returns only then), then delete it.
    Create(CreateBench),
    /// Exec `true` in one sandbox through the API, round trip until the exit status arrives.
    Exec(ExecBench),
    /// Standby → request cycles on a sandbox running a small stateful HTTP server: time from
    /// sending the request to its answer (the wake included), and host RAM held in standby.
    Resume(super::bench_resume::ResumeBench),
    /// Put N sandboxes into warm standby together; report the host RAM and disk they hold and
    /// the resume latency of random ones among them (run it on the server's host).
    Density(super::bench_density::DensityBench),
}

#[derive(Args)]
pub struct CreateBench {
    /// Number of sandboxes to create (one after another).
    #[arg(long, short, default_value_t = 100)]
    pub n: usize,
    #[arg(long, default_value = "base")]
    pub template: String,
    /// Also report the host memory (RSS) of each idle sandbox's init + agent; needs a local server.
    #[arg(long)]
    pub memory: bool,
    /// Print the summary as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args)]
pub struct ExecBench {
    #[arg(long, short, default_value_t = 200)]
    pub n: usize,
    #[arg(long, default_value = "base")]
    pub template: String,
    #[arg(long)]
    pub json: bool,
}

pub async fn run(
    api: &ApiClient,
    cmd: BenchCommand,
    data_dir: &std::path::Path,
) -> anyhow::Result<ExitCode> {
    match cmd {
        BenchCommand::Create(args) => create(api, args).await,
        BenchCommand::Exec(args) => exec(api, args).await,
        BenchCommand::Resume(args) => super::bench_resume::run(api, args).await,
        BenchCommand::Density(args) => super::bench_density::run(api, args, data_dir).await,
    }
}

async fn create(api: &ApiClient, args: CreateBench) -> anyhow::Result<ExitCode> {
    let mut create_times = Vec::with_capacity(args.n);
    let mut delete_times = Vec::with_capacity(args.n);
    let mut rss_kib = Vec::new();
    let body = json!({"template": args.template});
    // One warm-up run so first-use costs (page cache, pool fill) don't count.
    let warm: Value = api.post_json("/v1/sandboxes", &body).await?;
    api.delete(&format!("/v1/sandboxes/{}", id_of(&warm)?))
        .await?;
    for i in 0..args.n {
        let start = Instant::now();
        let sandbox: Value = api.post_json("/v1/sandboxes", &body).await?;
        create_times.push(start.elapsed());
        let id = id_of(&sandbox)?;
        if args.memory {
            tokio::time::sleep(Duration::from_millis(200)).await;
            if let Some(kib) = sandbox_rss_kib(&id) {
                rss_kib.push(kib);
            }
        }
        let start = Instant::now();
        api.delete(&format!("/v1/sandboxes/{id}")).await?;
        delete_times.push(start.elapsed());
        if !args.json && (i + 1) % 10 == 0 {
            eprint!("\r{}/{}", i + 1, args.n);
        }
    }
    if !args.json {
        eprintln!();
    }
    let create = Summary::of(&create_times).context("no runs")?;
    let delete = Summary::of(&delete_times).context("no runs")?;
    let rss = (!rss_kib.is_empty()).then(|| {
        rss_kib.sort_unstable();
        (rss_kib[rss_kib.len() / 2], rss_kib[rss_kib.len() - 1])
    });
    if args.json {
        println!(
            "{}",
            json!({"create": create, "delete": delete,
                   "idle_rss_kib_p50": rss.map(|r| r.0), "idle_rss_kib_max": rss.map(|r| r.1)})
        );
    } else {
        println!("{}", create.line("create (until agent ready)"));
        println!("{}", delete.line("delete"));
        if let Some((p50, max)) = rss {
            println!(
                "idle sandbox RSS (init + agent): p50 {:.2} MiB, max {:.2} MiB",
                p50 as f64 / 1024.0,
                max as f64 / 1024.0
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn exec(api: &ApiClient, args: ExecBench) -> anyhow::Result<ExitCode> {
    let sandbox: Value = api
        .post_json("/v1/sandboxes", &json!({"template": args.template}))
        .await?;
    let id = id_of(&sandbox)?;
    let result = exec_loop(api, &id, args.n).await;
    api.delete(&format!("/v1/sandboxes/{id}")).await?;
    let summary = Summary::of(&result?).context("no runs")?;
    if args.json {
        println!("{}", json!({"exec_true": summary}));
    } else {
        println!("{}", summary.line("exec `true` round trip"));
    }
    Ok(ExitCode::SUCCESS)
}

pub(crate) async fn exec_true(api: &ApiClient, path: &str) -> anyhow::Result<()> {
    let resp = api
        .send(
            api.request(reqwest::Method::POST, path)
                .json(&json!({"cmd": ["true"]})),
        )
        .await?;
    let mut events = Box::pin(ndjson::<Value>(resp));
    while let Some(event) = events.next().await {
        let event = event?;
        if event.get("type").and_then(Value::as_str) == Some("exit") {
            let code = event.get("exit_code").and_then(Value::as_i64);
            if code != Some(0) {
                bail!("`true` did not exit 0 (got {code:?})");
            }
            return Ok(());
        }
    }
    bail!("the exec stream ended without an exit event")
}

async fn exec_loop(api: &ApiClient, id: &str, n: usize) -> anyhow::Result<Vec<Duration>> {
    let path = format!("/v1/sandboxes/{id}/exec");
    let body = json!({"cmd": ["true"]});
    let mut times = Vec::with_capacity(n);
    for i in 0..n + 5 {
        let start = Instant::now();
        let resp = api
            .send(api.request(reqwest::Method::POST, &path).json(&body))
            .await?;
        let mut events = Box::pin(ndjson::<Value>(resp));
        let mut code = None;
        while let Some(event) = events.next().await {
            let event = event?;
            if event.get("type").and_then(Value::as_str) == Some("exit") {
                code = event.get("exit_code").and_then(Value::as_i64);
                break;
            }
        }
        let elapsed = start.elapsed();
        if code != Some(0) {
            bail!("`true` did not exit 0 (got {code:?})");
        }
        // The first few runs warm connections and caches.
        if i >= 5 {
            times.push(elapsed);
        }
    }
    Ok(times)
}

pub(crate) fn id_of(sandbox: &Value) -> anyhow::Result<String> {
    sandbox
        .get("id")
        .and_then(Value::as_str)
        .map(str::to_string)
        .context("the server's answer has no sandbox id")
}

/// Sum of VmRSS over the processes in the sandbox's pids cgroup (local server only).
fn sandbox_rss_kib(id: &str) -> Option<u64> {
    let procs =
        std::fs::read_to_string(format!("/sys/fs/cgroup/pids/burrow/{id}/cgroup.procs")).ok()?;
    let mut total = 0;
    for pid in procs.split_whitespace() {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        let rss = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<u64>().ok())?;
        total += rss;
    }
    Some(total)
}
