//! The exec'd half of [`Worker::spawn`](super::Worker::spawn): a small program that turns itself
//! into `criu swrk 3`.
//!
//! The daemon never forks (a fork of a multi-threaded process may run only async-signal-safe
//! code before exec, and copies the daemon's page tables). So it cannot place fds or enter a
//! mount namespace in a `pre_exec` hook; it spawns this helper through `Command`'s plain
//! `posix_spawn` path with the RPC socket as stdin and nothing else. The helper then
//! 1. with `--fds N`: receives the files the worker inherits, as one message on the socket
//!    carrying N fds (`SCM_RIGHTS`), sent by the daemon right after the spawn;
//! 2. puts the socket on fd 3 and those files on fds 4, 5, ...; stdin becomes `/dev/null`;
//! 3. with `--kdat DIR`: enters a private mount namespace and binds DIR over `/run`;
//! 4. execs `CRIU swrk 3`.
//!
//! `burrow-launch --criu-worker` is this helper in a burrow install; the crate's tests use the
//! `criu-worker-helper` binary. Both call [`helper_main`]. A helper that fails exits with 126
//! (set-up) or 2 (arguments) before criu starts: the daemon sees the worker die.

use std::ffi::OsString;
use std::io;
use std::io::IoSliceMut;
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;

/// Where the RPC socket sits in the worker; inherited files follow it.
pub(super) const WORKER_SOCKET_FD: RawFd = 3;
/// Received fds are moved at or above this number before the `dup2`s onto 3, 4, ...
const HIGH_FD_FLOOR: RawFd = 100;
/// At most this many inherited files (CRIU needs one per external resource; a few in practice).
pub(super) const MAX_INHERITED: usize = 16;

/// The helper's command line after its program (and the program's mode flag).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct HelperArgs {
    pub kdat: Option<PathBuf>,
    pub fds: usize,
    pub criu: PathBuf,
}

impl HelperArgs {
    pub fn to_args(&self) -> Vec<OsString> {
        let mut args = Vec::new();
        if let Some(kdat) = &self.kdat {
            args.extend([OsString::from("--kdat"), kdat.into()]);
        }
        if self.fds > 0 {
            args.extend([OsString::from("--fds"), self.fds.to_string().into()]);
        }
        args.extend([OsString::from("--"), self.criu.clone().into()]);
        args
    }

    pub fn parse(args: impl IntoIterator<Item = OsString>) -> Result<Self, String> {
        let mut args = args.into_iter();
        let mut kdat = None;
        let mut fds = 0;
        loop {
            let arg = args.next().ok_or("missing `-- CRIU_BINARY`")?;
            match arg.to_str() {
                Some("--kdat") => kdat = Some(PathBuf::from(args.next().ok_or("--kdat DIR")?)),
                Some("--fds") => {
                    fds = args
                        .next()
                        .and_then(|n| n.to_str()?.parse().ok())
                        .filter(|n| *n <= MAX_INHERITED)
                        .ok_or(format!("--fds takes a number up to {MAX_INHERITED}"))?;
                }
                Some("--") => break,
                _ => return Err(format!("unexpected argument {arg:?}")),
            }
        }
        let criu = PathBuf::from(args.next().ok_or("missing CRIU_BINARY after --")?);
        if args.next().is_some() {
            return Err("nothing may follow CRIU_BINARY".into());
        }
        Ok(Self { kdat, fds, criu })
    }
}

/// Parses `args` (what follows the mode flag), sets up and execs criu; never returns.
pub fn helper_main(args: impl IntoIterator<Item = OsString>) -> ! {
    let args = match HelperArgs::parse(args) {
        Ok(args) => args,
        Err(e) => {
            eprintln!("criu worker helper: {e}");
            std::process::exit(2);
        }
    };
    let error = exec_worker(&args);
    eprintln!("criu worker helper: {error}");
    std::process::exit(126);
}

/// Steps 1-4 of the module doc; returns only the error that stopped it.
fn exec_worker(args: &HelperArgs) -> io::Error {
    let stdin = std::io::stdin();
    let inherited = match receive_fds(stdin.as_fd(), args.fds).and_then(|fds| move_high(&fds)) {
        Ok(fds) => fds,
        Err(e) => return e,
    };
    if let Err(e) = place_fds(&inherited) {
        return e;
    }
    drop(inherited);
    // Restored tasks start as criu's children and keep its OOM score minimum (CRIU gives
    // back only non-zero scores): 0, whatever the daemon's is, so no restored sandbox process
    // can lower its score below 0 (the runtime shields init and the agent again afterwards).
    if let Err(e) = std::fs::write("/proc/self/oom_score_adj", "0") {
        return e;
    }
    if let Some(kdat) = &args.kdat
        && let Err(e) = private_run(kdat)
    {
        return e;
    }
    std::process::Command::new(&args.criu)
        .arg("swrk")
        .arg(WORKER_SOCKET_FD.to_string())
        .exec()
}

/// One message on `socket` carrying exactly `count` fds (none read if `count` is 0).
fn receive_fds(socket: BorrowedFd<'_>, count: usize) -> io::Result<Vec<OwnedFd>> {
    use rustix::net::{RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, ReturnFlags};
    if count == 0 {
        return Ok(Vec::new());
    }
    let mut byte = [0u8; 1];
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_INHERITED))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let msg = rustix::net::recvmsg(
        socket,
        &mut [IoSliceMut::new(&mut byte)],
        &mut control,
        RecvFlags::CMSG_CLOEXEC,
    )?;
    let mut fds = Vec::new();
    for message in control.drain() {
        if let RecvAncillaryMessage::ScmRights(received) = message {
            fds.extend(received);
        }
    }
    if msg.flags.contains(ReturnFlags::CTRUNC) || fds.len() != count {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("expected {count} inherited fds, received {}", fds.len()),
        ));
    }
    Ok(fds)
}

/// Copies of `fds` at or above [`HIGH_FD_FLOOR`], so the `dup2`s onto 3, 4, ... clobber none.
fn move_high(fds: &[OwnedFd]) -> io::Result<Vec<OwnedFd>> {
    fds.iter()
        .map(|fd| Ok(rustix::io::fcntl_dupfd_cloexec(fd, HIGH_FD_FLOOR)?))
        .collect()
}

/// The socket (stdin) onto fd 3, `inherited` onto 4, 5, ... (dup2 clears close-on-exec), and
/// `/dev/null` onto stdin.
fn place_fds(inherited: &[OwnedFd]) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let moves = std::iter::once(0).chain(inherited.iter().map(|fd| fd.as_raw_fd()));
    for (i, from) in moves.enumerate() {
        // SAFETY: dup2 between fds of this process; the targets are free or ours to replace.
        if unsafe { libc::dup2(from, WORKER_SOCKET_FD + i as RawFd) } < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    let null = std::fs::File::open("/dev/null")?;
    // SAFETY: as above, onto stdin.
    if unsafe { libc::dup2(std::os::fd::AsRawFd::as_raw_fd(&null), 0) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// A private mount namespace whose `/run` is `kdat` (criu keeps its kernel-feature cache
/// there).
fn private_run(kdat: &std::path::Path) -> io::Result<()> {
    use rustix::mount::{MountPropagationFlags, mount_bind, mount_change};
    use rustix::thread::UnshareFlags;
    // SAFETY: the helper is single-threaded, and NEWNS unshares no file table.
    unsafe { rustix::thread::unshare_unsafe(UnshareFlags::NEWNS) }?;
    mount_change(
        "/",
        MountPropagationFlags::REC | MountPropagationFlags::PRIVATE,
    )?;
    mount_bind(kdat, "/run")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<HelperArgs, String> {
        HelperArgs::parse(args.iter().map(OsString::from))
    }

    #[test]
    fn arguments_round_trip() {
        for args in [
            HelperArgs {
                kdat: None,
                fds: 0,
                criu: "/opt/criu".into(),
            },
            HelperArgs {
                kdat: Some("/run/k".into()),
                fds: 2,
                criu: "/opt/criu".into(),
            },
        ] {
            assert_eq!(HelperArgs::parse(args.to_args()), Ok(args));
        }
    }

    #[test]
    fn bad_arguments_are_refused() {
        assert!(parse(&[]).unwrap_err().contains("missing"));
        assert!(parse(&["--"]).unwrap_err().contains("CRIU_BINARY"));
        assert!(
            parse(&["--fds", "99", "--", "c"])
                .unwrap_err()
                .contains("up to")
        );
        assert!(parse(&["--fds", "x", "--", "c"]).is_err());
        assert!(
            parse(&["--bogus", "--", "c"])
                .unwrap_err()
                .contains("--bogus")
        );
        assert!(parse(&["--", "c", "extra"]).is_err());
    }
}
