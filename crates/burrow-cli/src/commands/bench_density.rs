//! `burrow bench density`: put N sandboxes into warm standby at once, then report the host RAM and
//! disk they hold and the resume latency of random ones among them. Needs a server on this host
//! (it reads `/proc/meminfo`, zram's `mm_stat` and the data dir's file system).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Args, ValueEnum};
use futures::{StreamExt, TryStreamExt};
use serde_json::{Value, json};

use burrow_server::ZRAM_DEVICE;

use super::bench::{exec_true, id_of};
use super::bench_resume::{PORT as COUNTER_PORT, start_counter};
use crate::client::ApiClient;
use crate::stats::Summary;

/// Label on every sandbox the benchmark creates (find leftovers with `burrow ls`).
const LABEL: (&str, &str) = ("burrow-bench", "density");

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Payload {
    /// The bare sandbox (init + agent); resume is probed with exec `true`.
    None,
    /// A small Python HTTP server with an in-memory counter; resume is probed with a proxied GET.
    Python,
}

#[derive(Args)]
pub struct DensityBench {
    /// Sandboxes to put into standby together.
    #[arg(long, short, default_value_t = 1000)]
    pub n: usize,
    #[arg(long, default_value = "base")]
    pub template: String,
    #[arg(long, value_enum, default_value = "none")]
    pub payload: Payload,
    /// Creates (and deletes) in flight at once.
    #[arg(long, default_value_t = 4)]
    pub concurrency: usize,
    /// Random sleeping sandboxes to wake (each is put back to standby afterwards).
    #[arg(long, default_value_t = 100)]
    pub resumes: usize,
    #[arg(long)]
    pub json: bool,
}

pub async fn run(api: &ApiClient, args: DensityBench, data_dir: &Path) -> anyhow::Result<ExitCode> {
    if args.n == 0 || args.concurrency == 0 {
        bail!("-n and --concurrency must be at least 1");
    }
    if args.resumes > args.n {
        bail!("--resumes ({}) cannot exceed -n ({})", args.resumes, args.n);
    }
    let sandboxes_dir = data_dir.join("sandboxes");
    if !sandboxes_dir.is_dir() {
        bail!(
            "{} does not exist: run the benchmark on the server's host and pass its --data-dir",
            sandboxes_dir.display()
        );
    }
    let created = Arc::new(Mutex::new(Vec::new()));
    let outcome = tokio::select! {
        r = bench(api, &args, data_dir, &created) => r.map(Some),
        _ = tokio::signal::ctrl_c() => {
            eprintln!("\ninterrupted: deleting the sandboxes created so far");
            Ok(None)
        }
    };
    let ids = std::mem::take(&mut *created.lock().unwrap_or_else(|e| e.into_inner()));
    let cleanup = delete_all(api, &ids, args.concurrency, args.json).await;
    let after_cleanup = HostSample::take(data_dir);
    match outcome? {
        Some(report) => {
            let (deleted_in, failures) = cleanup;
            report.print(&args, deleted_in, failures, after_cleanup.as_ref());
            Ok(if failures == 0 {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
        None => Ok(ExitCode::from(130)),
    }
}

struct Report {
    n: usize,
    created_in: Duration,
    create: Summary,
    standby: Summary,
    before: Option<HostSample>,
    asleep: Option<HostSample>,
    /// Summed over the sleeping sandboxes: memory cgroup charge, bytes in swap (uncompressed).
    memcg_total: u64,
    swap_total: u64,
    /// `None` with `--resumes 0`.
    resume: Option<Summary>,
    restandby: Option<Summary>,
}

async fn bench(
    api: &ApiClient,
    args: &DensityBench,
    data_dir: &Path,
    created: &Arc<Mutex<Vec<String>>>,
) -> anyhow::Result<Report> {
    let http = reqwest::Client::builder()
        .tcp_nodelay(true)
        .build()
        .context("building the HTTP client")?;
    let before = HostSample::take(data_dir);
    let start = Instant::now();
    let done = std::sync::atomic::AtomicUsize::new(0);
    let timings: Vec<(Duration, Duration)> = futures::stream::iter(0..args.n)
        .map(|_| async {
            let t = create_asleep(api, &http, args, created).await?;
            let d = done.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
            if !args.json && d.is_multiple_of(10) {
                eprint!("\rin standby: {d}/{}", args.n);
            }
            anyhow::Ok(t)
        })
        .buffer_unordered(args.concurrency)
        .try_collect()
        .await?;
    let created_in = start.elapsed();
    if !args.json {
        eprintln!();
    }
    // Let the kernel finish freeing what the creates used (per-CPU caches, RCU-freed objects).
    tokio::time::sleep(Duration::from_secs(3)).await;
    let asleep = HostSample::take(data_dir);
    let ids = created.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let (memcg_total, swap_total) = memory_of(api, &ids).await?;

    let picks = pick_distinct(ids.len(), args.resumes);
    let (mut resume, mut restandby) = (Vec::new(), Vec::new());
    for (i, &k) in picks.iter().enumerate() {
        let id = &ids[k];
        let start = Instant::now();
        probe(api, &http, id, args.payload).await?;
        resume.push(start.elapsed());
        let start = Instant::now();
        standby(api, id).await?;
        restandby.push(start.elapsed());
        if !args.json && (i + 1).is_multiple_of(10) {
            eprint!("\rresumed: {}/{}", i + 1, picks.len());
        }
    }
    if !args.json && !picks.is_empty() {
        eprintln!();
    }
    Ok(Report {
        n: ids.len(),
        created_in,
        create: Summary::of(&timings.iter().map(|t| t.0).collect::<Vec<_>>()).context("no runs")?,
        standby: Summary::of(&timings.iter().map(|t| t.1).collect::<Vec<_>>())
            .context("no runs")?,
        before,
        asleep,
        memcg_total,
        swap_total,
        resume: Summary::of(&resume),
        restandby: Summary::of(&restandby),
    })
}

/// Creates one sandbox (and its payload) and puts it into standby: (create time, standby time).
async fn create_asleep(
    api: &ApiClient,
    http: &reqwest::Client,
    args: &DensityBench,
    created: &Mutex<Vec<String>>,
) -> anyhow::Result<(Duration, Duration)> {
    let start = Instant::now();
    let sandbox: Value = api
        .post_json(
            "/v1/sandboxes",
            &json!({"template": args.template, "idle_timeout": 0, "labels": {LABEL.0: LABEL.1}}),
        )
        .await
        .with_context(|| {
            let n = created.lock().map(|c| c.len()).unwrap_or(0);
            format!("creating sandbox number {}", n + 1)
        })?;
    let id = id_of(&sandbox)?;
    created
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(id.clone());
    let create_time = start.elapsed();
    if args.payload == Payload::Python {
        start_counter(api, &id).await?;
        let deadline = Instant::now() + Duration::from_secs(30);
        while probe(api, http, &id, Payload::Python).await.is_err() {
            if Instant::now() > deadline {
                bail!("the counter server in sandbox {id} never answered on port {COUNTER_PORT}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let start = Instant::now();
    standby(api, &id).await?;
    Ok((create_time, start.elapsed()))
}

async fn standby(api: &ApiClient, id: &str) -> anyhow::Result<()> {
    let slept: Value = api
        .post_json(&format!("/v1/sandboxes/{id}/standby"), &json!({}))
        .await?;
    if slept.get("state").and_then(Value::as_str) != Some("standby") {
        bail!("sandbox {id} did not go to standby: {slept}");
    }
    Ok(())
}

/// One request that needs the sandbox awake.
async fn probe(
    api: &ApiClient,
    http: &reqwest::Client,
    id: &str,
    payload: Payload,
) -> anyhow::Result<()> {
    match payload {
        Payload::None => exec_true(api, &format!("/v1/sandboxes/{id}/exec")).await,
        Payload::Python => {
            let resp = http
                .get(format!("{}/", api.base()))
                .header("E2b-Sandbox-Id", id)
                .header("E2b-Sandbox-Port", COUNTER_PORT.to_string())
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

/// Sums the sleeping sandboxes' `power.memory_bytes` and `power.swap_bytes`.
async fn memory_of(api: &ApiClient, ids: &[String]) -> anyhow::Result<(u64, u64)> {
    let mut memcg = 0;
    let mut swap = 0;
    for id in ids {
        let sandbox: Value = api.get_json(&format!("/v1/sandboxes/{id}")).await?;
        let power = sandbox.get("power").cloned().unwrap_or_default();
        if sandbox.get("state").and_then(Value::as_str) != Some("standby") {
            bail!("sandbox {id} woke up before it was measured: {sandbox}");
        }
        memcg += power
            .get("memory_bytes")
            .and_then(Value::as_u64)
            .unwrap_or(0);
        swap += power.get("swap_bytes").and_then(Value::as_u64).unwrap_or(0);
    }
    Ok((memcg, swap))
}

/// Deletes every sandbox; (time taken, failures). Failures are printed, not fatal.
async fn delete_all(
    api: &ApiClient,
    ids: &[String],
    concurrency: usize,
    quiet: bool,
) -> (Duration, usize) {
    let start = Instant::now();
    let failures: Vec<String> = futures::stream::iter(ids)
        .map(|id| async move {
            api.delete(&format!("/v1/sandboxes/{id}"))
                .await
                .err()
                .map(|e| format!("{id}: {e:#}"))
        })
        .buffer_unordered(concurrency)
        .filter_map(|r| async move { r })
        .collect()
        .await;
    for f in &failures {
        eprintln!("delete failed: {f}");
    }
    if !quiet && !ids.is_empty() {
        eprintln!("deleted {} sandboxes", ids.len() - failures.len());
    }
    (start.elapsed(), failures.len())
}

/// `count` distinct indexes below `len`, in random order (xorshift seeded from the clock: the
/// benchmark needs spread, not cryptographic randomness).
fn pick_distinct(len: usize, count: usize) -> Vec<usize> {
    let mut all: Vec<usize> = (0..len).collect();
    let mut state = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0x9e37_79b9_7f4a_7c15, |d| d.as_nanos() as u64)
        | 1;
    let count = count.min(len);
    for i in 0..count {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let j = i + (state % (len - i) as u64) as usize;
        all.swap(i, j);
    }
    all.truncate(count);
    all
}

/// Host-wide figures at one moment (local host only; `None` where a file is unreadable).
#[derive(Debug, Clone, Copy)]
struct HostSample {
    /// MemTotal − MemAvailable.
    ram_used: u64,
    /// Kernel memory no cgroup of ours may be charged with (unreclaimable slab, kernel stacks,
    /// page tables, per-CPU data): namespaces, veths, cgroups, mounts show up here.
    kernel: u64,
    /// zram's `mem_used_total` (its whole host RAM, allocator overhead included) and
    /// `orig_data_size`.
    zram_used: u64,
    zram_orig: u64,
    /// zram's `compr_data_size`: the compressed bytes alone (`zram_used` adds the allocator's
    /// overhead and fragmentation).
    zram_compressed: u64,
    /// Used bytes of the file system holding the sandboxes (statvfs) and the blocks allocated to
    /// the sparse image behind it, if there is one.
    disk_used: u64,
    image_allocated: u64,
}

impl HostSample {
    fn take(data_dir: &Path) -> Option<Self> {
        // Flush delayed allocations so the file system's usage is current.
        rustix::fs::sync();
        let meminfo = burrow_standby::meminfo::Meminfo::read().ok()?;
        let ram_used = meminfo.bytes("MemTotal")? - meminfo.bytes("MemAvailable")?;
        let kernel = ["SUnreclaim", "KernelStack", "PageTables", "Percpu"]
            .iter()
            .map(|k| meminfo.bytes(k).unwrap_or(0))
            .sum::<u64>();
        let zram = burrow_standby::zram::stats(ZRAM_DEVICE).unwrap_or_default();
        let (zram_used, zram_orig, zram_compressed) = (
            zram.mem_used_total,
            zram.orig_data_size,
            zram.compr_data_size,
        );
        let fs = rustix::fs::statvfs(data_dir.join("sandboxes")).ok()?;
        let disk_used = (fs.f_blocks - fs.f_bfree) * fs.f_frsize;
        let image: PathBuf = data_dir.join("sandboxes.img");
        let image_allocated = std::fs::metadata(image).map_or(0, |m| {
            use std::os::unix::fs::MetadataExt;
            m.blocks() * 512
        });
        Some(Self {
            ram_used,
            kernel,
            zram_used,
            zram_orig,
            zram_compressed,
            disk_used,
            image_allocated,
        })
    }
}

fn mib(bytes: f64) -> String {
    format!("{:.2} MiB", bytes / 1048576.0)
}

fn delta(after: u64, before: u64) -> f64 {
    after as f64 - before as f64
}

impl Report {
    fn print(
        &self,
        args: &DensityBench,
        deleted_in: Duration,
        delete_failures: usize,
        after_cleanup: Option<&HostSample>,
    ) {
        let n = self.n as f64;
        let host = self.before.zip(self.asleep);
        let ram = host.map(|(b, a)| delta(a.ram_used, b.ram_used));
        let zram = host.map(|(b, a)| delta(a.zram_used, b.zram_used));
        let zram_compressed = host.map(|(b, a)| delta(a.zram_compressed, b.zram_compressed));
        let kernel = host.map(|(b, a)| delta(a.kernel, b.kernel));
        let zram_ratio = self
            .asleep
            .filter(|a| a.zram_orig > 0)
            .map(|a| a.zram_used as f64 / a.zram_orig as f64);
        // Per sandbox, counted like `power`: its memcg charge + its swap at zram's ratio.
        let footprint =
            self.memcg_total as f64 + self.swap_total as f64 * zram_ratio.unwrap_or(0.0);
        let disk = host.map(|(b, a)| delta(a.disk_used, b.disk_used));
        let image = host.map(|(b, a)| delta(a.image_allocated, b.image_allocated));
        let leftover = self
            .before
            .zip(after_cleanup.copied())
            .map(|(b, a)| delta(a.ram_used, b.ram_used));
        if args.json {
            println!(
                "{}",
                json!({
                    "sandboxes": self.n,
                    "template": args.template,
                    "payload": match args.payload { Payload::None => "none", Payload::Python => "python" },
                    "created_in_s": self.created_in.as_secs_f64(),
                    "create": self.create,
                    "standby": self.standby,
                    "host_ram_used_delta_bytes": ram,
                    "kernel_delta_bytes": kernel,
                    "memcg_bytes_total": self.memcg_total,
                    "swap_bytes_total": self.swap_total,
                    "zram_used_delta_bytes": zram,
                    "zram_compressed_delta_bytes": zram_compressed,
                    "zram_ratio": zram_ratio,
                    "footprint_bytes_per_sandbox": footprint / n,
                    "disk_used_delta_bytes": disk,
                    "image_allocated_delta_bytes": image,
                    "resume": self.resume,
                    "restandby": self.restandby,
                    "deleted_in_s": deleted_in.as_secs_f64(),
                    "delete_failures": delete_failures,
                    "host_ram_after_cleanup_delta_bytes": leftover,
                })
            );
            return;
        }
        let per = |v: f64| mib(v / n);
        let probe = match args.payload {
            Payload::None => "exec `true`",
            Payload::Python => "proxied GET",
        };
        println!(
            "{} sandboxes in warm standby (template {}, payload {}), all created and asleep in {:.1} s",
            self.n,
            args.template,
            match args.payload {
                Payload::None => "none",
                Payload::Python => "python",
            },
            self.created_in.as_secs_f64()
        );
        println!("{}", self.create.line("create"));
        println!("{}", self.standby.line("standby call"));
        if let Some(ram) = ram {
            println!(
                "host RAM used (MemTotal-MemAvailable delta): {} total, {} per sandbox",
                mib(ram),
                per(ram)
            );
        }
        if let Some(kernel) = kernel {
            println!(
                "  kernel (unreclaimable slab, stacks, page tables, per-CPU): +{} ({} per sandbox)",
                mib(kernel),
                per(kernel)
            );
        }
        println!(
            "  memory cgroups: {} charged ({} per sandbox); {} swapped ({} per sandbox, uncompressed)",
            mib(self.memcg_total as f64),
            per(self.memcg_total as f64),
            mib(self.swap_total as f64),
            per(self.swap_total as f64)
        );
        if let (Some(zram), Some(compressed), Some(ratio)) = (zram, zram_compressed, zram_ratio) {
            println!(
                "  zram: +{} of host RAM, of which {} compressed data (ratio {:.3} host bytes per swapped byte)",
                mib(zram),
                mib(compressed),
                ratio
            );
        }
        println!(
            "  per sandbox, memcg + swap x zram ratio: {}",
            per(footprint)
        );
        if let (Some(disk), Some(image)) = (disk, image) {
            println!(
                "disk: sandboxes file system +{} ({} per sandbox); sparse image allocation +{}",
                mib(disk),
                per(disk),
                mib(image)
            );
        }
        if let (Some(resume), Some(restandby)) = (&self.resume, &self.restandby) {
            println!(
                "{}",
                resume.line(&format!("resume ({probe}) of random sleepers"))
            );
            println!("{}", restandby.line("back to standby"));
        }
        println!(
            "deleted in {:.1} s ({delete_failures} failures){}",
            deleted_in.as_secs_f64(),
            leftover
                .map(|l| format!("; host RAM after cleanup vs before: {}", mib(l)))
                .unwrap_or_default()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_are_distinct_and_in_range() {
        let p = pick_distinct(1000, 100);
        assert_eq!(p.len(), 100);
        let mut s = p.clone();
        s.sort_unstable();
        s.dedup();
        assert_eq!(s.len(), 100);
        assert!(p.iter().all(|&i| i < 1000));
        assert_eq!(pick_distinct(3, 10).len(), 3);
        assert!(pick_distinct(0, 5).is_empty());
    }
}
