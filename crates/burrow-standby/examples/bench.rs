//! Standby latency bench on real sandboxes (root needed):
//! `cargo run -p burrow-standby --example bench -- [cycles] [ballast MiB]`
//! `BURROW_CRIU_BINARY` selects the criu executable.

#[path = "../tests/common/mod.rs"]
mod common;

use std::fs::File;
use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use burrow_standby::criu::{self, DumpRequest, InheritFd, RestoreRequest, Worker};
use burrow_standby::freezer::Freezer;
use burrow_standby::pageout::pageout_cgroup;
use burrow_standby::zram::{self, ZramConfig};
use common::Sandbox;

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn summary(name: &str, samples: &mut [Duration]) {
    samples.sort();
    let pick = |q: f64| samples[((samples.len() as f64 - 1.0) * q).round() as usize];
    println!(
        "{name:<34} n={:<3} min {:>7.2}  p50 {:>7.2}  p99 {:>7.2}  max {:>7.2} ms",
        samples.len(),
        ms(samples[0]),
        ms(pick(0.5)),
        ms(pick(0.99)),
        ms(samples[samples.len() - 1])
    );
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let cycles: usize = args.first().and_then(|a| a.parse().ok()).unwrap_or(20);
    let mem: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(64);
    println!(
        "standby bench: {cycles} cycles, sandbox = init + server holding {mem} MiB (half random)"
    );
    freezer_bench(cycles, mem);
    pageout_bench(cycles, mem);
    criu_bench(cycles, mem);
}

fn freezer_bench(cycles: usize, mem: usize) {
    let sb = Sandbox::launch("bstb-bench-frz", mem);
    let freezer = Freezer::open(&sb.cgroups.freezer).unwrap();
    let (mut freeze, mut thaw) = (Vec::new(), Vec::new());
    for _ in 0..cycles {
        let t = Instant::now();
        freezer.freeze(Duration::from_secs(2)).unwrap();
        freeze.push(t.elapsed());
        let t = Instant::now();
        freezer.thaw().unwrap();
        sb.ping().unwrap();
        thaw.push(t.elapsed());
    }
    summary("freeze", &mut freeze);
    summary("thaw -> pong", &mut thaw);
}

fn pageout_bench(cycles: usize, mem: usize) {
    zram::ensure(&ZramConfig {
        disksize: 1 << 30,
        ..Default::default()
    })
    .unwrap();
    let sb = Sandbox::launch("bstb-bench-pgo", mem);
    let freezer = Freezer::open(&sb.cgroups.freezer).unwrap();
    let (mut pageout, mut first, mut touch_all) = (Vec::new(), Vec::new(), Vec::new());
    let mut last = None;
    for _ in 0..cycles {
        sb.request("touch", Duration::from_secs(10)).unwrap();
        freezer.freeze(Duration::from_secs(2)).unwrap();
        let z0 = zram::stats(0).unwrap();
        let report = pageout_cgroup(&sb.cgroups.freezer, Some(&sb.cgroups.memory)).unwrap();
        let z1 = zram::stats(0).unwrap();
        pageout.push(report.elapsed);
        let t = Instant::now();
        freezer.thaw().unwrap();
        sb.ping().unwrap();
        first.push(t.elapsed());
        let t = Instant::now();
        sb.request("touch", Duration::from_secs(10)).unwrap();
        touch_all.push(t.elapsed());
        last = Some((report, z0, z1));
    }
    summary("pageout (frozen)", &mut pageout);
    summary("thaw -> first pong (hot set)", &mut first);
    summary(&format!("then touch all {mem} MiB"), &mut touch_all);
    if let Some((r, z0, z1)) = last {
        let mib = |b: u64| b as f64 / 1048576.0;
        println!(
            "  memcg {:.1} -> {:.1} MiB, RSS {:.1} -> {:.1} MiB, swapped {:.1} MiB; zram +{:.1} MiB stored in +{:.1} MiB RAM",
            mib(r.memcg_before.unwrap()),
            mib(r.memcg_after.unwrap()),
            mib(r.before.rss),
            mib(r.after.rss),
            mib(r.after.swap),
            mib(z1.orig_data_size.saturating_sub(z0.orig_data_size)),
            mib(z1.mem_used_total.saturating_sub(z0.mem_used_total)),
        );
    }
}

fn criu_bench(cycles: usize, mem: usize) {
    let config = common::criu_config();
    let sb = Sandbox::launch("bstb-bench-criu", mem);
    let netns = File::open(&sb.netns.path).unwrap();
    let external_net = criu::external_netns(&sb.netns.path, "sbxnet").unwrap();
    let images_root = tempfile::Builder::new()
        .prefix("criu-bench-")
        .tempdir_in("/dev/shm")
        .unwrap();
    let (mut dump, mut restore, mut to_pong) = (Vec::new(), Vec::new(), Vec::new());
    let mut init_pid = sb.init_pid;
    let mut image_bytes = 0;
    for i in 0..cycles {
        let images = images_root.path().join(i.to_string());
        std::fs::create_dir(&images).unwrap();
        let dir = File::open(&images).unwrap();
        let mut req = DumpRequest::new(dir.as_fd(), init_pid);
        req.external.push(external_net.clone());
        req.freeze_cgroup = Some(sb.cgroups.freezer.clone());
        let dumper = Worker::spawn(&config, &[]).unwrap();
        std::thread::sleep(Duration::from_millis(50));
        dump.push(dumper.dump(&req).unwrap().elapsed);
        common::wait_gone(init_pid, Duration::from_secs(5));
        image_bytes = std::fs::read_dir(&images)
            .unwrap()
            .map(|e| e.unwrap().metadata().unwrap().len())
            .sum::<u64>();
        // Deep-standby prep: mount the root and pre-spawn the worker bound to the netns.
        sb.rootfs.mount_on_host();
        let worker = Worker::spawn(
            &config,
            &[InheritFd {
                key: "sbxnet".into(),
                fd: netns.as_fd(),
            }],
        )
        .unwrap();
        std::thread::sleep(Duration::from_millis(100));
        let mut rreq = RestoreRequest::new(dir.as_fd(), sb.rootfs.dir("rootfs"));
        rreq.join_cgroups = vec![sb.cgroups.freezer.clone(), sb.cgroups.memory.clone()];
        let t = Instant::now();
        let restored = worker.restore(&rreq).unwrap();
        restore.push(restored.elapsed);
        sb.time_to_pong(Duration::from_secs(5));
        to_pong.push(t.elapsed());
        sb.rootfs.unmount_on_host();
        init_pid = restored.pid;
        std::fs::remove_dir_all(&images).unwrap();
    }
    summary("criu dump (swrk, pre-spawned)", &mut dump);
    summary("criu restore (swrk, pre-spawned)", &mut restore);
    summary("restore request -> pong", &mut to_pong);
    println!(
        "  image size {:.1} MiB (in /dev/shm)",
        image_bytes as f64 / 1048576.0
    );
}
