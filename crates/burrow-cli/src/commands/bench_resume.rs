//! `burrow bench resume`: latency of the first request to a sleeping sandbox, and the host RAM a
//! sandbox holds while it sleeps.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Args, ValueEnum};
use serde_json::{Value, json};

use super::bench::{exec_true, id_of};
use crate::client::ApiClient;
use crate::stats::Summary;

/// The stateful payload: a counter in memory, served over HTTP on port 8080.
const COUNTER_PY: &str = r#"import http.server, os, threading, time
n = 0
def tick():
    global n
    while True:
        n += 1
        time.sleep(0.05)
threading.Thread(target=tick, daemon=True).start()
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # One write per response and no Nagle: otherwise delayed ACKs add 40 ms to every answer.
    disable_nagle_algorithm = True
    wbufsize = 65536
    def do_GET(self):
        body = f"{os.getpid()} {n}".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
http.server.ThreadingHTTPServer(("0.0.0.0", 8080), H).serve_forever()
"#;
pub(crate) const PORT: u16 = 8080;
const WARMUP: usize = 3;

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Probe {
    /// A proxied HTTP GET to the server inside (`E2b-Sandbox-Id`/`-Port` headers).
    Http,
    /// Exec `true` through the API.
    Exec,
}

#[derive(Args)]
pub struct ResumeBench {
    /// Standby → request cycles.
    #[arg(long, short, default_value_t = 100)]
    pub n: usize,
    /// Deep standby (CRIU checkpoint) instead of warm.
    #[arg(long)]
    pub deep: bool,
    /// The request that wakes the sandbox.
    #[arg(long, value_enum, default_value = "http")]
    pub via: Probe,
    /// How long the sandbox sleeps before each request, in ms (0: the request follows the
    /// standby call at once, while the server may still be finishing the standby's background
    /// work).
    #[arg(long, default_value_t = 0)]
    pub asleep_ms: u64,
    #[arg(long, default_value = "base")]
    pub template: String,
    #[arg(long)]
    pub json: bool,
}

pub async fn run(api: &ApiClient, args: ResumeBench) -> anyhow::Result<ExitCode> {
    if args.n == 0 {
        bail!("-n must be at least 1");
    }
    let sandbox: Value = api
        .post_json(
            "/v1/sandboxes",
            &json!({"template": args.template, "idle_timeout": 0}),
        )
        .await?;
    let id = id_of(&sandbox)?;
    let result = bench(api, &id, &args).await;
    let deleted = api.delete(&format!("/v1/sandboxes/{id}")).await;
    let report = result?;
    deleted?;
    report.print(&args);
    Ok(ExitCode::SUCCESS)
}

struct Report {
    awake: Summary,
    resume: Summary,
    standby: Summary,
    /// Per cycle, in standby: memcg bytes, bytes in swap.
    memory: Vec<(u64, u64)>,
    zram: Option<ZramShare>,
}

/// zram's compression over everything it holds, applied to the sandbox's swapped bytes.
struct ZramShare {
    ratio: f64,
}

async fn bench(api: &ApiClient, id: &str, args: &ResumeBench) -> anyhow::Result<Report> {
    let http = reqwest::Client::builder()
        .tcp_nodelay(true)
        .build()
        .context("building the HTTP client")?;
    start_counter(api, id).await?;
    let probe = Prober {
        api,
        http: &http,
        id,
        via: args.via,
    };
    let deadline = Instant::now() + Duration::from_secs(15);
    while probe.once().await.is_err() {
        if Instant::now() > deadline {
            bail!("the counter server in sandbox {id} never answered on port {PORT}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let mut awake = Vec::new();
    for _ in 0..20 {
        let start = Instant::now();
        probe.once().await?;
        awake.push(start.elapsed());
    }
    let standby_path = format!("/v1/sandboxes/{id}/standby");
    let body = json!({"deep": args.deep});
    let (mut resume, mut standby, mut memory) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..args.n + WARMUP {
        let start = Instant::now();
        let slept: Value = api.post_json(&standby_path, &body).await?;
        let standby_time = start.elapsed();
        if slept.get("state").and_then(Value::as_str) != Some("standby") {
            bail!("sandbox {id} did not go to standby: {slept}");
        }
        let power = slept.get("power").cloned().unwrap_or_default();
        tokio::time::sleep(Duration::from_millis(args.asleep_ms)).await;
        let start = Instant::now();
        probe.once().await?;
        let elapsed = start.elapsed();
        if i >= WARMUP {
            resume.push(elapsed);
            standby.push(standby_time);
            if let (Some(mem), Some(swap)) = (
                power.get("memory_bytes").and_then(Value::as_u64),
                power.get("swap_bytes").and_then(Value::as_u64),
            ) {
                memory.push((mem, swap));
            }
        }
        if !args.json && (i + 1) % 10 == 0 {
            eprint!("\r{}/{}", i + 1, args.n + WARMUP);
        }
    }
    if !args.json {
        eprintln!();
    }
    Ok(Report {
        awake: Summary::of(&awake).context("no runs")?,
        resume: Summary::of(&resume).context("no runs")?,
        standby: Summary::of(&standby).context("no runs")?,
        memory,
        zram: zram_share(),
    })
}

/// Uploads and starts the counter server (in its own session, so it outlives the exec).
pub(crate) async fn start_counter(api: &ApiClient, id: &str) -> anyhow::Result<()> {
    api.send(
        api.request(reqwest::Method::PUT, &format!("/v1/sandboxes/{id}/files"))
            .query(&[("path", "/tmp/burrow-bench-counter.py")])
            .body(COUNTER_PY),
    )
    .await?;
    let resp = api
        .send(
            api.request(reqwest::Method::POST, &format!("/v1/sandboxes/{id}/exec"))
                .json(&json!({"command": "setsid nohup python3 /tmp/burrow-bench-counter.py >/dev/null 2>&1 < /dev/null &"})),
        )
        .await?;
    resp.text().await?;
    Ok(())
}

struct Prober<'a> {
    api: &'a ApiClient,
    http: &'a reqwest::Client,
    id: &'a str,
    via: Probe,
}

impl Prober<'_> {
    async fn once(&self) -> anyhow::Result<()> {
        match self.via {
            Probe::Exec => exec_true(self.api, &format!("/v1/sandboxes/{}/exec", self.id)).await,
            Probe::Http => {
                let resp = self
                    .http
                    .get(format!("{}/", self.api.base()))
                    .header("E2b-Sandbox-Id", self.id)
                    .header("E2b-Sandbox-Port", PORT.to_string())
                    .send()
                    .await?;
                if !resp.status().is_success() {
                    bail!("proxied GET answered {}", resp.status());
                }
                resp.bytes().await?;
                Ok(())
            }
        }
    }
}

/// zram's overall compression ratio, if this host's `/dev/zram0` is readable (local server).
fn zram_share() -> Option<ZramShare> {
    let stat = std::fs::read_to_string("/sys/block/zram0/mm_stat").ok()?;
    let fields: Vec<u64> = stat
        .split_whitespace()
        .filter_map(|f| f.parse().ok())
        .collect();
    let (orig, used) = (*fields.first()?, *fields.get(2)?);
    (orig > 0).then(|| ZramShare {
        ratio: used as f64 / orig as f64,
    })
}

fn median(mut values: Vec<u64>) -> Option<u64> {
    values.sort_unstable();
    values.get(values.len() / 2).copied()
}

impl Report {
    fn print(&self, args: &ResumeBench) {
        let mem = median(self.memory.iter().map(|m| m.0).collect());
        let swap = median(self.memory.iter().map(|m| m.1).collect());
        let zram_held = swap
            .zip(self.zram.as_ref())
            .map(|(s, z)| s as f64 * z.ratio);
        let tier = if args.deep { "deep" } else { "warm" };
        let via = match args.via {
            Probe::Http => "proxied GET",
            Probe::Exec => "exec `true`",
        };
        if args.json {
            println!(
                "{}",
                json!({
                    "tier": tier,
                    "via": via,
                    "awake": self.awake,
                    "resume": self.resume,
                    "standby": self.standby,
                    "standby_memcg_bytes_p50": mem,
                    "standby_swap_bytes_p50": swap,
                    "standby_zram_bytes_est": zram_held.map(|b| b as u64),
                })
            );
            return;
        }
        println!("{}", self.awake.line(&format!("{via}, awake")));
        println!(
            "{}",
            self.resume.line(&format!("{via}, from {tier} standby"))
        );
        println!("{}", self.standby.line("standby call"));
        let mib = |b: u64| b as f64 / 1048576.0;
        if let (Some(mem), Some(swap)) = (mem, swap) {
            println!(
                "in standby (p50): {:.2} MiB resident in the sandbox's memory cgroup, {:.2} MiB of its memory in zram{}",
                mib(mem),
                mib(swap),
                zram_held
                    .map(|b| format!(
                        " (~{:.2} MiB of host RAM at zram's current ratio)",
                        b / 1048576.0
                    ))
                    .unwrap_or_default()
            );
        }
    }
}
