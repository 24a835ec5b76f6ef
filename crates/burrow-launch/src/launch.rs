//! The launch sequence. The launcher (host root) prepares cgroups, netns and the overlay root,
//! a forked helper becomes the sandbox's user namespace, and its child is the sandbox's init.
//!
//! ```text
//! launcher: join cgroups, unshare(NEWNS)+rprivate, setns(net), seed upper, fork A
//!   A: unshare(NEWUSER) ─────────────▶ launcher: write uid/gid maps, idmap layers, overlay, agent bind
//!   A: ◀── go ── setuid 0, unshare(NEWNS|UTS|IPC|PID), sethostname, fork init, report its pid, exit
//!   init (pid 1): setsid, /proc /dev /sys, pivot_root, caps, seccomp, fork agent (fd 3 = ready pipe), reap
//! launcher: wait for the agent's readiness byte, print the report, exit
//! ```

use std::ffi::CString;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::Path;
use std::time::{Duration, Instant};

use crate::spec::{LaunchReport, LaunchSpec};
use crate::sys::{self, LaunchError, Result, check};
use crate::{caps, overlay, own_netns, process_limits, sandbox_fs, seccomp};

/// Records how long each phase took.
struct Phases {
    last: Instant,
    done: Vec<(String, u64)>,
}

impl Phases {
    fn new() -> Self {
        Self {
            last: Instant::now(),
            done: Vec::new(),
        }
    }
    fn mark(&mut self, name: &str) {
        let now = Instant::now();
        self.done
            .push((name.to_owned(), (now - self.last).as_micros() as u64));
        self.last = now;
    }
}

/// Builds the sandbox described by `spec` and returns the report to print.
pub fn launch(spec: &LaunchSpec) -> LaunchReport {
    let mut phases = Phases::new();
    let mut init_pid = None;
    match run(spec, &mut phases, &mut init_pid) {
        Ok(pid) => LaunchReport {
            ok: true,
            init_pid: Some(pid),
            error: None,
            phases_us: phases.done,
            tree_fd: None,
        },
        Err(e) => {
            // Killing pid 1 of the sandbox's pid namespace kills every process in it.
            if let Some(pid) = init_pid {
                sys::kill(pid, libc::SIGKILL);
            }
            // init_pid (already killed) lets the caller reap it: it was reparented to them.
            LaunchReport {
                ok: false,
                init_pid,
                error: Some(e.0),
                phases_us: phases.done,
                tree_fd: None,
            }
        }
    }
}

/// Pipes between the launcher, helper A, init and the agent.
struct Pipes {
    /// A → launcher: "user namespace created" byte, then init's host pid (4 bytes LE).
    from_a: (OwnedFd, OwnedFd),
    /// launcher → A: "maps written, root mounted" byte.
    to_a: (OwnedFd, OwnedFd),
    /// A, init, agent child → launcher: error text; EOF once init's setup is done.
    errors: (OwnedFd, OwnedFd),
    /// agent (fd 3) → launcher: the readiness byte.
    ready: (OwnedFd, OwnedFd),
}

fn run(spec: &LaunchSpec, phases: &mut Phases, init_pid_out: &mut Option<i32>) -> Result<i32> {
    spec.validate().map_err(LaunchError)?;
    let deadline = Instant::now() + Duration::from_millis(spec.ready_timeout_ms.unwrap_or(10_000));

    // Before anything else: memcg charges stay where a page was first charged.
    let pid = std::process::id().to_string();
    for procs in &spec.cgroup_procs {
        std::fs::write(procs, &pid)
            .map_err(|e| LaunchError(format!("join cgroup {procs:?}: {e}")))?;
    }
    phases.mark("cgroups");
    // Inherited by every sandbox process (see process_limits).
    process_limits::set_sandbox_rlimits()?;
    // Not fatal: the sandbox works without it, only less robustly under its own memory
    // pressure; the runtime checks init's score and logs it.
    let _ = process_limits::shield_from_oom("self");

    sys::private_mount_ns()?;
    if spec.own_netns.is_some() {
        own_netns::remember_host_netns()?;
    }
    let netns = sys::open_path(&spec.netns_path, libc::O_RDONLY)?;
    // SAFETY: `netns` is an open namespace file descriptor.
    let r = unsafe { libc::setns(netns.as_raw_fd(), libc::CLONE_NEWNET) };
    check(r as _, || {
        format!("setns into network namespace {:?}", spec.netns_path)
    })?;
    drop(netns);
    phases.mark("mntns+netns");

    overlay::seed_upper(spec)?;
    let stage = overlay::mount_stage(spec)?;
    let log = match &spec.agent_log {
        Some(path) => sys::open_path(path, libc::O_WRONLY | libc::O_CREAT | libc::O_APPEND)?,
        None => sys::open_path(Path::new("/dev/null"), libc::O_WRONLY)?,
    };
    let agent_env = agent_environment(spec)?;
    let pipes = Pipes {
        from_a: sys::pipe()?,
        to_a: sys::pipe()?,
        errors: sys::pipe()?,
        ready: sys::pipe()?,
    };
    phases.mark("seed");

    // SAFETY: the launcher is single-threaded, so the child may keep running Rust code.
    let a_pid = unsafe { libc::fork() };
    check(a_pid as _, || "fork".into())?;
    if a_pid == 0 {
        helper_a(spec, &pipes, &log, &stage, &agent_env);
    }
    // Keep only our ends: the write ends must close here or EOF would never arrive.
    let Pipes {
        from_a: (from_a, a_write),
        to_a: (a_read, to_a),
        errors: (errors, errors_write),
        ready: (ready, ready_write),
    } = pipes;
    drop((a_write, a_read, errors_write, ready_write, log, stage));
    let result = parent_side(
        spec,
        a_pid,
        &from_a,
        &to_a,
        &errors,
        &ready,
        deadline,
        phases,
        init_pid_out,
    );
    if result.is_err() {
        sys::kill(a_pid, libc::SIGKILL);
    }
    sys::wait_pid(a_pid);
    result
}

#[allow(clippy::too_many_arguments)]
fn parent_side(
    spec: &LaunchSpec,
    a_pid: libc::pid_t,
    from_a: &OwnedFd,
    to_a: &OwnedFd,
    errors: &OwnedFd,
    ready: &OwnedFd,
    deadline: Instant,
    phases: &mut Phases,
    init_pid_out: &mut Option<i32>,
) -> Result<i32> {
    let failed = |what: &str| -> LaunchError {
        let detail = sys::read_text(
            errors,
            Instant::now() + Duration::from_millis(500),
            "error text",
        )
        .unwrap_or_default();
        if detail.is_empty() {
            LaunchError(what.to_owned())
        } else {
            LaunchError(detail)
        }
    };
    let mut byte = [0u8; 1];
    if sys::read_until(from_a, &mut byte, deadline, "the user namespace")? != 1 {
        return Err(failed("helper exited before creating the user namespace"));
    }
    let map = format!("0 {} 65536\n", spec.uid_base);
    for file in ["uid_map", "gid_map"] {
        let path = format!("/proc/{a_pid}/{file}");
        std::fs::write(&path, &map).map_err(|e| LaunchError(format!("write {path}: {e}")))?;
    }
    let userns = sys::open_path(Path::new(&format!("/proc/{a_pid}/ns/user")), libc::O_RDONLY)?;
    phases.mark("userns");
    if let Some(net) = &spec.own_netns {
        own_netns::move_eth0_into(a_pid, net)?;
        phases.mark("own-netns");
    }
    overlay::mount_root(spec, &userns)?;
    drop(userns);
    phases.mark("rootfs");
    sys::write_all(to_a, b"g")?;

    let mut pid_bytes = [0u8; 4];
    if sys::read_until(from_a, &mut pid_bytes, deadline, "init's pid")? != 4 {
        return Err(failed("helper exited before starting init"));
    }
    let init_pid = i32::from_le_bytes(pid_bytes);
    *init_pid_out = Some(init_pid);
    phases.mark("init");

    let setup_errors = sys::read_text(errors, deadline, "init's setup")?;
    if !setup_errors.is_empty() {
        return Err(LaunchError(setup_errors));
    }
    phases.mark("sandbox-fs");
    if sys::read_until(ready, &mut byte, deadline, "the agent's readiness byte")? != 1 {
        return Err(LaunchError(
            "agent exited (or closed fd 3) before signalling readiness; see the agent log".into(),
        ));
    }
    phases.mark("agent-ready");
    Ok(init_pid)
}

fn agent_environment(spec: &LaunchSpec) -> Result<Vec<CString>> {
    let mut env = vec![
        "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".to_owned(),
        "HOME=/root".to_owned(),
    ];
    env.extend(spec.agent_env.iter().map(|(k, v)| format!("{k}={v}")));
    env.into_iter()
        .map(|e| CString::new(e).map_err(|_| LaunchError("agent_env contains a NUL byte".into())))
        .collect()
}

/// Helper A: becomes the sandbox's user namespace and the parent of init. Never returns.
fn helper_a(
    spec: &LaunchSpec,
    pipes: &Pipes,
    log: &OwnedFd,
    stage: &OwnedFd,
    env: &[CString],
) -> ! {
    let errors = &pipes.errors.1;
    let fail = |e: LaunchError| -> ! { sys::die(Some(errors), &e.0) };
    // A netns made here is owned by the sandbox's user namespace (checkpointable by CRIU).
    // The cgroup namespace is rooted at the sandbox's cgroups (joined by the launcher before
    // the fork), so `/proc/self/cgroup` inside shows `/`, not the host's hierarchy.
    let flags = if spec.own_netns.is_some() {
        libc::CLONE_NEWUSER | libc::CLONE_NEWCGROUP | libc::CLONE_NEWNET
    } else {
        libc::CLONE_NEWUSER | libc::CLONE_NEWCGROUP
    };
    // SAFETY: unshare with flag constants.
    if unsafe { libc::unshare(flags) } != 0 {
        fail(LaunchError::os("unshare(CLONE_NEWUSER|CLONE_NEWCGROUP)"));
    }
    if sys::write_all(&pipes.from_a.1, b"u").is_err() {
        sys::die(None, "");
    }
    let mut go = [0u8; 1];
    let far = Instant::now() + Duration::from_secs(3600);
    if !matches!(sys::read_until(&pipes.to_a.0, &mut go, far, "go"), Ok(1)) {
        sys::die(None, ""); // the launcher gave up and reports why
    }
    // Enter the staging dir by fd *before* unshare(NEWNS): unshare moves the cwd into the new
    // namespace's copy of the mount, and init resolves its root relative to it.
    // SAFETY: fchdir on an fd we own.
    if unsafe { libc::fchdir(stage.as_raw_fd()) } != 0 {
        fail(LaunchError::os("fchdir to the staging dir"));
    }
    if let Err(e) = become_root_and_unshare(&spec.id) {
        fail(e);
    }
    // SAFETY: single-threaded; the child only runs init code and never returns.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        fail(LaunchError::os("fork init"));
    }
    if pid == 0 {
        init(spec, pipes, log, env);
    }
    let _ = sys::write_all(&pipes.from_a.1, &pid.to_le_bytes());
    // SAFETY: _exit skips destructors of the launcher state we copied; intended.
    unsafe { libc::_exit(0) }
}

fn become_root_and_unshare(hostname: &str) -> Result<()> {
    // SAFETY: plain id-setting syscalls; the maps are written, so 0 is valid in our namespace.
    unsafe {
        check(libc::setresgid(0, 0, 0) as _, || "setresgid(0)".into())?;
        check(libc::setgroups(0, std::ptr::null()) as _, || {
            "setgroups".into()
        })?;
        check(libc::setresuid(0, 0, 0) as _, || "setresuid(0)".into())?;
    }
    let flags = libc::CLONE_NEWNS | libc::CLONE_NEWUTS | libc::CLONE_NEWIPC | libc::CLONE_NEWPID;
    // SAFETY: unshare with flag constants.
    check(unsafe { libc::unshare(flags) } as _, || {
        "unshare(NEWNS|NEWUTS|NEWIPC|NEWPID)".into()
    })?;
    // SAFETY: pointer and length describe `hostname`'s bytes.
    let r = unsafe { libc::sethostname(hostname.as_ptr().cast(), hostname.len()) };
    check(r as _, || "sethostname".into())?;
    Ok(())
}

/// The sandbox's pid 1. Never returns.
fn init(spec: &LaunchSpec, pipes: &Pipes, log: &OwnedFd, env: &[CString]) -> ! {
    let errors = &pipes.errors.1;
    // Relative to the cwd helper A set: the staging dir (see overlay::mount_stage).
    let root = Path::new("root");
    let setup = || -> Result<()> {
        // SAFETY: setsid has no preconditions; init must lead its own session.
        check(unsafe { libc::setsid() } as _, || "setsid".into())?;
        // Our fds must not be reachable via /proc/1/fd by the sandbox's root, nor init
        // ptraced (a sandbox has no CAP_SYS_PTRACE over a non-dumpable process). The re-exec'd
        // init (sandbox_init) is dumpable again and relies on caps::INIT_ONLY instead.
        // SAFETY: prctl with integer arguments.
        unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) };
        caps::restrict_bounding_set()?;
        sandbox_fs::setup_and_pivot(root)?;
        seccomp::install()?;
        Ok(())
    };
    if let Err(e) = setup() {
        sys::die(Some(errors), &format!("sandbox init: {}", e.0));
    }
    let null = match sys::open_path(Path::new("/dev/null"), libc::O_RDWR) {
        Ok(fd) => fd,
        Err(e) => sys::die(Some(errors), &e.0),
    };
    // A checkpointable sandbox may hold no host file open: its agent logs inside the sandbox
    // (host side: <sandbox_dir>/upper/.burrow/agent.log).
    let sandbox_log;
    let log = if spec.own_netns.is_some() {
        let flags = libc::O_WRONLY | libc::O_CREAT | libc::O_APPEND | libc::O_NOFOLLOW;
        sandbox_log = match sys::open_path(Path::new(SANDBOX_AGENT_LOG), flags) {
            Ok(fd) => fd,
            Err(e) => sys::die(Some(errors), &e.0),
        };
        &sandbox_log
    } else {
        log
    };
    // SAFETY: dup2 on descriptors we own; init's stdio must not hold the daemon's pipes.
    unsafe {
        for target in 0..3 {
            libc::dup2(null.as_raw_fd(), target);
        }
    }
    let keep = [
        errors.as_raw_fd(),
        pipes.ready.1.as_raw_fd(),
        log.as_raw_fd(),
        null.as_raw_fd(),
    ];
    close_all_except(&keep);

    let agent = c"/.burrow/agent";
    let argv = [agent.as_ptr(), std::ptr::null()];
    let envp: Vec<*const libc::c_char> = env
        .iter()
        .map(|e| e.as_ptr())
        .chain([std::ptr::null()])
        .collect();
    let spawn = |ready_fd: libc::c_int| -> libc::pid_t {
        // SAFETY: init is single-threaded; the child only dup2s and execs.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            caps::drop_init_only();
            // SAFETY: dup2/execve on valid fds and NUL-terminated arrays prepared before fork.
            unsafe {
                libc::setsid();
                libc::dup2(null.as_raw_fd(), 0);
                libc::dup2(log.as_raw_fd(), 1);
                libc::dup2(log.as_raw_fd(), 2);
                libc::dup2(ready_fd, 3);
                libc::chdir(c"/".as_ptr());
                libc::execve(agent.as_ptr(), argv.as_ptr(), envp.as_ptr());
            }
            sys::die(
                Some(errors),
                &format!("exec /.burrow/agent: {}", std::io::Error::last_os_error()),
            );
        }
        pid
    };
    let mut agent_pid = spawn(pipes.ready.1.as_raw_fd());
    if agent_pid < 0 {
        sys::die(Some(errors), &LaunchError::os("fork agent").0);
    }
    // Setup done: closing our ends lets the launcher see EOF (errors) and only the agent's fd 3.
    // SAFETY: closing descriptors we own and never use again.
    unsafe {
        libc::close(errors.as_raw_fd());
        libc::close(pipes.ready.1.as_raw_fd());
    }
    if spec.own_netns.is_some() {
        // CRIU can only checkpoint a tree whose code lives inside the sandbox's mounts: init
        // re-execs itself from the bind-mounted copy at /.burrow/init (keeping its pid) and
        // supervises the agent from there. /dev/null stays fd 0, the agent log becomes fd 3.
        // SAFETY: dup2/execve on valid fds and NUL-terminated arrays.
        unsafe {
            libc::dup2(log.as_raw_fd(), INIT_LOG_FD);
            let pid = CString::new(agent_pid.to_string()).unwrap_or_default();
            let argv = [
                c"burrow-init".as_ptr(),
                INIT_FLAG.as_ptr(),
                pid.as_ptr(),
                std::ptr::null(),
            ];
            libc::execve(INIT_IN_SANDBOX.as_ptr(), argv.as_ptr(), envp.as_ptr());
        }
        // The exec failed: keep supervising from here rather than leave the agent orphaned.
    }
    reap_forever(&mut agent_pid, || spawn(null.as_raw_fd()))
}

/// Where init's re-exec'd copy lives inside a sandbox with its own netns.
pub const INIT_IN_SANDBOX: &std::ffi::CStr = c"/.burrow/init";
/// The agent's log inside a sandbox with its own netns.
pub const SANDBOX_AGENT_LOG: &str = "/.burrow/agent.log";
/// argv[1] of the re-exec'd init.
pub const INIT_FLAG: &std::ffi::CStr = c"--sandbox-init";
/// fd of the agent log in the re-exec'd init (0-2 are /dev/null).
const INIT_LOG_FD: libc::c_int = 3;

/// The re-exec'd init (`/.burrow/init --sandbox-init <agent pid>`, pid 1 of a sandbox with its
/// own netns): supervises the agent like the original init. Never returns.
pub fn sandbox_init(agent_pid: libc::pid_t) -> ! {
    // The exec made us dumpable again, and we stay so: CRIU 4.2 cannot dump a tree whose init
    // is not (its user-namespace check opens init's /proc/<pid>/ns/* without privileges over
    // it). The sandbox's root still cannot ptrace init: init holds a capability no other
    // sandbox process has (caps::INIT_ONLY), and ptrace needs a superset of the target's.
    let env: Vec<CString> = std::env::vars_os()
        .filter_map(|(k, v)| {
            let mut kv = k.into_encoded_bytes();
            kv.push(b'=');
            kv.extend(v.into_encoded_bytes());
            CString::new(kv).ok()
        })
        .collect();
    let envp: Vec<*const libc::c_char> = env
        .iter()
        .map(|e| e.as_ptr())
        .chain([std::ptr::null()])
        .collect();
    let agent = c"/.burrow/agent";
    let argv = [agent.as_ptr(), std::ptr::null()];
    let respawn = || -> libc::pid_t {
        // SAFETY: single-threaded; the child only dup2s and execs.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            caps::drop_init_only();
            // SAFETY: dup2/execve on valid fds and NUL-terminated arrays prepared before fork.
            unsafe {
                libc::setsid();
                libc::dup2(INIT_LOG_FD, 1);
                libc::dup2(INIT_LOG_FD, 2);
                libc::dup2(0, INIT_LOG_FD); // the agent's readiness fd: nobody listens now
                libc::chdir(c"/".as_ptr());
                libc::execve(agent.as_ptr(), argv.as_ptr(), envp.as_ptr());
                libc::_exit(127);
            }
        }
        pid
    };
    let mut agent_pid = agent_pid;
    reap_forever(&mut agent_pid, respawn)
}

/// Agent restart policy: restart it when it dies, unless it died quickly this many times in a row;
/// then init stays up without it (files stay reachable, the sandbox can be destroyed normally).
const MAX_QUICK_RESTARTS: u32 = 5;
const QUICK_DEATH: Duration = Duration::from_secs(10);

fn reap_forever(agent_pid: &mut libc::pid_t, respawn: impl Fn() -> libc::pid_t) -> ! {
    let mut started = Instant::now();
    let mut quick_deaths = 0;
    loop {
        let mut status = 0;
        // SAFETY: `status` is a valid out-pointer.
        let pid = unsafe { libc::waitpid(-1, &mut status, 0) };
        if pid < 0 {
            if std::io::Error::last_os_error().raw_os_error() == Some(libc::ECHILD) {
                // No children at all (agent given up): check again later for adopted orphans.
                std::thread::sleep(Duration::from_secs(1));
            }
            continue;
        }
        if pid != *agent_pid {
            continue;
        }
        quick_deaths = if started.elapsed() < QUICK_DEATH {
            quick_deaths + 1
        } else {
            0
        };
        if quick_deaths >= MAX_QUICK_RESTARTS {
            *agent_pid = -1;
            continue;
        }
        started = Instant::now();
        *agent_pid = respawn();
    }
}

fn close_all_except(keep: &[libc::c_int]) {
    let max = keep.iter().copied().max().unwrap_or(2);
    for fd in 3..=max {
        if !keep.contains(&fd) {
            // SAFETY: closing an fd number we do not use (may not even be open).
            unsafe { libc::close(fd) };
        }
    }
    // SAFETY: close_range on the range above every fd we keep.
    unsafe { libc::syscall(libc::SYS_close_range, max + 1, u32::MAX, 0) };
}

/// Joins the mount namespace at `path` (a criu worker's), where `mount_root_for_restore` then
/// mounts.
pub fn enter_mount_ns(path: &Path) -> Result<()> {
    sys::enter_mount_ns(path)
}

/// For a CRIU restore: mounts the sandbox's root (staging tmpfs, idmapped layers, overlay,
/// agent bind) at `<rootfs_dir>/root` in the launcher's *current* mount namespace (the host's,
/// so the restoring CRIU sees it), through a short-lived user namespace with the sandbox's
/// mapping. The caller unmounts `rootfs_dir` (lazily, recursively) once the restore is done.
pub fn mount_root_for_restore(spec: &LaunchSpec) -> Result<()> {
    spec.validate().map_err(LaunchError)?;
    let stage = overlay::mount_stage(spec)?;
    drop(stage);
    // Nothing under the staging tmpfs may propagate to other mount namespaces.
    sys::mount(None, &spec.rootfs_dir, None, libc::MS_PRIVATE, None)?;
    let result = mount_root_via_helper(spec);
    if result.is_err() {
        let _ = sys::detach(&spec.rootfs_dir);
    }
    result
}

/// For a later CRIU restore: mounts the sandbox's root as [`mount_root_for_restore`] does, but
/// in a private mount namespace of the launcher's own, and returns the staging tree (tmpfs,
/// idmapped layers, overlay root, binds) as a *detached* mount tree (`open_tree` clone). The
/// tree lives as long as its fd: the runtime takes it over (`pidfd_getfd`) and later attaches
/// it in a criu worker's mount namespace, which costs ~0.1 ms instead of a launcher run.
pub fn mount_root_detached(spec: &LaunchSpec) -> Result<OwnedFd> {
    // Nothing mounted here may propagate back to the host's namespace.
    sys::private_mount_ns()?;
    mount_root_for_restore(spec)?;
    // CRIU restores the sandbox's own binds of the agent and the launcher; unmounted here, not
    // by the restore (an unmount waits for an RCU grace period).
    let root = spec.rootfs_dir.join("root");
    for bind in [".burrow/agent", ".burrow/init"] {
        let target = root.join(bind);
        let c = sys::cstr(&target)?;
        // SAFETY: a valid C string. EINVAL: not a mount point (`init` exists only for sandboxes
        // with their own netns).
        if unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) } != 0
            && std::io::Error::last_os_error().raw_os_error() != Some(libc::EINVAL)
        {
            return Err(LaunchError::os(format!("detach {target:?}")));
        }
    }
    overlay::clone_tree(&spec.rootfs_dir)
}

fn mount_root_via_helper(spec: &LaunchSpec) -> Result<()> {
    let (from_helper, helper_write) = sys::pipe()?;
    let (helper_read, to_helper) = sys::pipe()?;
    // SAFETY: the launcher is single-threaded; the child only unshares, writes and reads.
    let pid = unsafe { libc::fork() };
    check(pid as _, || "fork".into())?;
    if pid == 0 {
        // SAFETY: unshare with a flag constant.
        let ok = unsafe { libc::unshare(libc::CLONE_NEWUSER) } == 0;
        let _ = sys::write_all(&helper_write, if ok { b"u" } else { b"x" });
        let mut byte = [0u8; 1];
        let far = Instant::now() + Duration::from_secs(60);
        let _ = sys::read_until(&helper_read, &mut byte, far, "done");
        // SAFETY: _exit skips destructors of the copied launcher state; intended.
        unsafe { libc::_exit(0) }
    }
    drop((helper_write, helper_read));
    let result = (|| -> Result<()> {
        let mut byte = [0u8; 1];
        let deadline = Instant::now() + Duration::from_secs(5);
        sys::read_until(&from_helper, &mut byte, deadline, "the user namespace")?;
        if byte != *b"u" {
            return Err(LaunchError(
                "helper could not create a user namespace".into(),
            ));
        }
        let map = format!("0 {} 65536\n", spec.uid_base);
        for file in ["uid_map", "gid_map"] {
            let path = format!("/proc/{pid}/{file}");
            std::fs::write(&path, &map).map_err(|e| LaunchError(format!("write {path}: {e}")))?;
        }
        let userns = sys::open_path(Path::new(&format!("/proc/{pid}/ns/user")), libc::O_RDONLY)?;
        overlay::mount_root(spec, &userns)?;
        Ok(())
    })();
    let _ = sys::write_all(&to_helper, b"d");
    sys::wait_pid(pid);
    result
}
