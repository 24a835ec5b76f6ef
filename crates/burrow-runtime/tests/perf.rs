//! Create latency (until the agent accepts TCP) and idle init RSS. Ignored by default:
//! `cargo test --release -p burrow-runtime --test perf -- --ignored --nocapture`
//! (set RUST_LOG=burrow_runtime=debug for per-phase timings).

mod common;

use std::time::{Duration, Instant};

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark"]
async fn create_latency() {
    let Some(rootfs) = rootfs() else { return };
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .try_init();
    let n: usize = std::env::var("BURROW_PERF_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100);
    let live: usize = std::env::var("BURROW_PERF_LIVE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let (rt, data_dir) = runtime("perf").await;
    let mut times = Vec::with_capacity(n);
    let mut alive = std::collections::VecDeque::new();
    for i in 0..n {
        // Keep up to `live` sandboxes running so creates happen on a busy host; give the pool
        // filler a moment as a real server would between requests.
        tokio::time::sleep(Duration::from_millis(20)).await;
        let id = format!("perf{i}");
        let t = Instant::now();
        let h = rt.create(spec(&id, &rootfs)).await.expect("create");
        times.push(t.elapsed());
        alive.push_back(h);
        if alive.len() > live {
            let old = alive.pop_front().unwrap();
            rt.destroy(&old.id).await.expect("destroy");
        }
    }
    let h = alive.back().unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let status = std::fs::read_to_string(format!("/proc/{}/status", h.init_pid)).unwrap();
    let rss = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .unwrap_or("VmRSS: ?")
        .to_owned();
    let t = Instant::now();
    let count = alive.len();
    for h in alive {
        rt.destroy(&h.id).await.expect("destroy");
    }
    let destroy_each = t.elapsed() / count as u32;
    times.sort();
    let pct = |p: f64| times[((times.len() as f64 * p) as usize).min(times.len() - 1)];
    eprintln!(
        "create x{n} ({live} live): min {:?} p50 {:?} p90 {:?} p99 {:?} max {:?}; destroy avg {destroy_each:?}; init {rss}",
        times[0],
        pct(0.5),
        pct(0.9),
        pct(0.99),
        times[n - 1]
    );
    drop(rt);
    remove_data_dir(&data_dir);
}
