//! Test payload for burrow-standby's tests and bench: builds a tiny sandbox (pid, mount, uts, ipc
//! namespaces, a pre-created network namespace, an overlayfs root) and serves a memory counter
//! over TCP from inside it.
//!
//! `standby-testee launch --netns P --lower D --upper D --work D --rootfs D [--mem MIB] [--port N]
//!  [--cgroup DIR]...` prints the host pid of the sandbox's init and exits. The lower dir must hold
//! this binary as `/standby-testee`, the libraries it links and a `/dev/null` node (the tests
//! prepare that).
//! `standby-testee serve --mem MIB --port N` runs as pid 1 inside the sandbox.
//! Protocol: one line per connection; `ping` -> `pong <counter> <pid> <ppid>`, `touch` -> touches
//! every page of the ballast and answers `sum <n>`.

use std::ffi::CString;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::os::fd::AsRawFd;
use std::process::exit;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("launch") => launch(&args[1..]),
        Some("serve") => serve(&args[1..]),
        _ => Err("usage: standby-testee launch|serve ...".to_string()),
    };
    if let Err(e) = result {
        eprintln!("standby-testee: {e}");
        exit(1);
    }
}

fn flag(args: &[String], name: &str) -> Option<String> {
    args.windows(2).find(|w| w[0] == name).map(|w| w[1].clone())
}

fn flags(args: &[String], name: &str) -> Vec<String> {
    args.windows(2)
        .filter(|w| w[0] == name)
        .map(|w| w[1].clone())
        .collect()
}

fn required(args: &[String], name: &str) -> Result<String, String> {
    flag(args, name).ok_or_else(|| format!("missing {name}"))
}

fn cstr(s: &str) -> CString {
    CString::new(s).expect("no NUL in arguments")
}

fn check(ret: libc::c_int, what: &str) -> Result<(), String> {
    if ret < 0 {
        Err(format!("{what}: {}", std::io::Error::last_os_error()))
    } else {
        Ok(())
    }
}

fn launch(args: &[String]) -> Result<(), String> {
    let netns = required(args, "--netns")?;
    let (lower, upper, work, rootfs) = (
        required(args, "--lower")?,
        required(args, "--upper")?,
        required(args, "--work")?,
        required(args, "--rootfs")?,
    );
    for p in [&lower, &upper, &work] {
        if p.contains([',', ':']) {
            return Err(format!("overlay path {p} must not contain ',' or ':'"));
        }
    }
    let mem = flag(args, "--mem").unwrap_or_else(|| "0".into());
    let port = flag(args, "--port").unwrap_or_else(|| "7000".into());
    for dir in flags(args, "--cgroup") {
        std::fs::write(
            format!("{dir}/cgroup.procs"),
            std::process::id().to_string(),
        )
        .map_err(|e| format!("{dir}: {e}"))?;
    }
    // `--netns new`: a netns created inside the sandbox's user namespace (owned by it).
    if netns != "new" {
        let ns = std::fs::File::open(&netns).map_err(|e| format!("{netns}: {e}"))?;
        // SAFETY: setns on an fd we hold open; affects only this single-threaded process.
        let ret = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
        check(ret, "setns(net)")?;
    }
    let userns = flag(args, "--userns");
    if let Some(base) = &userns {
        enter_userns(base.parse().map_err(|_| "bad --userns")?)?;
    }
    if netns == "new" {
        // SAFETY: unshare on this single-threaded process.
        let ret = unsafe { libc::unshare(libc::CLONE_NEWNET) };
        check(ret, "unshare(net)")?;
        loopback_up()?;
    }
    let devnull_src = cstr("/dev/null");
    let devnull_dst = cstr(&format!("{rootfs}/dev/null"));
    let bind_devnull = userns.is_some();
    let flags = libc::CLONE_NEWNS | libc::CLONE_NEWUTS | libc::CLONE_NEWIPC | libc::CLONE_NEWPID;
    // SAFETY: unshare on this single-threaded process; the next fork becomes pid 1.
    let ret = unsafe { libc::unshare(flags) };
    check(ret, "unshare")?;
    let overlay = cstr(&format!("lowerdir={lower},upperdir={upper},workdir={work}"));
    let (c_root, c_proc, c_old) = (
        cstr(&rootfs),
        cstr(&format!("{rootfs}/proc")),
        cstr(&format!("{rootfs}/.oldroot")),
    );
    let exe = cstr("/standby-testee");
    let argv_strings = [
        cstr("standby-testee"),
        cstr("serve"),
        cstr("--mem"),
        cstr(&mem),
        cstr("--port"),
        cstr(&port),
    ];
    let mut argv: Vec<*const libc::c_char> = argv_strings.iter().map(|s| s.as_ptr()).collect();
    argv.push(std::ptr::null());
    // SAFETY: single-threaded process; the child only makes raw syscalls and execs or _exits.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(format!("fork: {}", std::io::Error::last_os_error()));
    }
    if pid == 0 {
        // SAFETY: plain syscalls on NUL-terminated strings that outlive them; on any failure
        // the child exits without returning into Rust code.
        unsafe {
            let none = std::ptr::null::<libc::c_char>();
            let ok = libc::mount(
                none,
                c"/".as_ptr(),
                none,
                libc::MS_REC | libc::MS_PRIVATE,
                std::ptr::null(),
            ) == 0
                && libc::mount(
                    c"overlay".as_ptr(),
                    c_root.as_ptr(),
                    c"overlay".as_ptr(),
                    0,
                    overlay.as_ptr().cast(),
                ) == 0
                && (!bind_devnull
                    || libc::mount(
                        devnull_src.as_ptr(),
                        devnull_dst.as_ptr(),
                        none,
                        libc::MS_BIND,
                        std::ptr::null(),
                    ) == 0)
                && libc::mount(
                    c"proc".as_ptr(),
                    c_proc.as_ptr(),
                    c"proc".as_ptr(),
                    0,
                    std::ptr::null(),
                ) == 0
                && libc::syscall(libc::SYS_pivot_root, c_root.as_ptr(), c_old.as_ptr()) == 0
                && libc::chdir(c"/".as_ptr()) == 0
                && libc::umount2(c"/.oldroot".as_ptr(), libc::MNT_DETACH) == 0
                && libc::sethostname(c"sandbox".as_ptr(), 7) == 0
                && libc::setsid() >= 0;
            if !ok {
                libc::_exit(100);
            }
            // Every fd must point inside the sandbox for CRIU: stdio becomes the sandbox's
            // /dev/null (Rust aborts at start-up without fds 0-2) and nothing else is kept.
            let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR);
            if null < 0
                || libc::dup2(null, 0) < 0
                || libc::dup2(null, 1) < 0
                || libc::dup2(null, 2) < 0
            {
                libc::_exit(101);
            }
            libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32);
            libc::execv(exe.as_ptr(), argv.as_ptr());
            libc::_exit(127);
        }
    }
    println!("{pid}");
    Ok(())
}

fn serve(args: &[String]) -> Result<(), String> {
    let mem_mib: usize = required(args, "--mem")?.parse().map_err(|_| "bad --mem")?;
    let port: u16 = required(args, "--port")?
        .parse()
        .map_err(|_| "bad --port")?;
    // SAFETY: we are pid 1 of a fresh namespace with a single thread; the child continues below.
    let child = unsafe { libc::fork() };
    if child > 0 {
        // Init: reap children; leave when the server is gone.
        loop {
            let mut status = 0;
            // SAFETY: waitpid writes the status into our local.
            let pid = unsafe { libc::waitpid(-1, &mut status, 0) };
            if pid == child || pid < 0 {
                exit(0);
            }
        }
    }
    let ballast = make_ballast(mem_mib << 20);
    let listener = TcpListener::bind(("0.0.0.0", port)).map_err(|e| format!("bind: {e}"))?;
    let mut counter: u64 = 0;
    for stream in listener.incoming() {
        let Ok(mut stream) = stream else { continue };
        let mut line = String::new();
        if BufReader::new(&stream).read_line(&mut line).is_err() {
            continue;
        }
        let answer = match line.trim() {
            "ping" => {
                counter += 1;
                format!(
                    "pong {counter} {} {}\n",
                    std::process::id(),
                    std::os::unix::process::parent_id()
                )
            }
            "touch" => {
                let sum: u64 = ballast.iter().step_by(4096).map(|b| *b as u64).sum();
                format!("sum {sum}\n")
            }
            other => format!("error unknown command {other:?}\n"),
        };
        let _ = stream.write_all(answer.as_bytes());
    }
    Ok(())
}

/// Half pseudo-random (incompressible), half text (compressible), like real heaps.
fn make_ballast(len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len];
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for (i, chunk) in v.chunks_mut(8).enumerate() {
        if i * 8 < len / 2 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
        } else {
            chunk.copy_from_slice(&b"burrow! "[..chunk.len()]);
        }
    }
    v
}

/// Moves this process into a new user namespace mapping 0..65536 to host `base..base+65536`. The
/// map must be written from outside the namespace, so a forked helper does it.
fn enter_userns(base: u32) -> Result<(), String> {
    let mut fds = [0; 2];
    // SAFETY: pipe writes two fds into our array.
    check(unsafe { libc::pipe(fds.as_mut_ptr()) }, "pipe")?;
    let parent = std::process::id();
    // SAFETY: single-threaded process; the helper only does file I/O and _exits.
    let helper = unsafe { libc::fork() };
    if helper == 0 {
        let mut byte = 0u8;
        // SAFETY: read one byte into a local; then plain file writes; never returns.
        unsafe {
            libc::read(fds[0], (&mut byte as *mut u8).cast(), 1);
            let map = format!("0 {base} 65536\n");
            let ok = std::fs::write(format!("/proc/{parent}/uid_map"), &map).is_ok()
                && std::fs::write(format!("/proc/{parent}/gid_map"), &map).is_ok();
            libc::_exit(if ok { 0 } else { 1 });
        }
    }
    check(helper, "fork")?;
    // SAFETY: unshare on this single-threaded process.
    let ret = unsafe { libc::unshare(libc::CLONE_NEWUSER) };
    check(ret, "unshare(user)")?;
    // SAFETY: write one byte from a static buffer to our pipe.
    unsafe { libc::write(fds[1], b"x".as_ptr().cast(), 1) };
    let mut status = 0;
    // SAFETY: waitpid writes into our local.
    unsafe { libc::waitpid(helper, &mut status, 0) };
    if status != 0 {
        return Err("writing uid_map/gid_map failed".into());
    }
    // SAFETY: become root (= host `base`) inside the new namespace.
    let ok = unsafe { libc::setresgid(0, 0, 0) == 0 && libc::setresuid(0, 0, 0) == 0 };
    if !ok {
        return Err(format!("setresuid: {}", std::io::Error::last_os_error()));
    }
    Ok(())
}

/// `ip link set lo up` without netlink: SIOCGIFFLAGS / SIOCSIFFLAGS on a datagram socket.
fn loopback_up() -> Result<(), String> {
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").map_err(|e| format!("socket: {e}"))?;
    // SAFETY: ifreq is plain data; zero is a valid bit pattern.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(b"lo\0") {
        *dst = *src as libc::c_char;
    }
    // SAFETY: the ioctls read and write the ifreq we own.
    unsafe {
        check(
            libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req),
            "SIOCGIFFLAGS",
        )?;
        req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
        check(
            libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &req),
            "SIOCSIFFLAGS",
        )?;
    }
    Ok(())
}
