//! One `criu swrk` process: spawned ahead of time, serves one request, then exits.

use std::ffi::OsString;
use std::io;
use std::mem::MaybeUninit;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use prost::Message;

use super::CriuError;
use super::helper::{HelperArgs, MAX_INHERITED, WORKER_SOCKET_FD};
use super::rpc::{CriuReq, CriuResp, ReqType};

/// Responses are small protobufs; a truncated one is reported as a protocol error.
const RECV_BUFFER: usize = 64 * 1024;

/// How to run CRIU.
#[derive(Debug, Clone)]
pub struct CriuConfig {
    /// The criu executable (default: the wrapper installed by scripts/install-criu.sh).
    pub binary: PathBuf,
    /// The program (and its leading arguments) that becomes the worker: it takes the arguments
    /// of [`super::helper`] and execs `binary`, e.g. `burrow-launch --criu-worker`. Default:
    /// empty, so spawning fails until it is set.
    pub helper: Vec<OsString>,
    /// How long one request may take before the worker is killed.
    pub request_timeout: Duration,
    /// Where `criu check` leaves its log when the pool starts.
    pub work_dir: PathBuf,
    /// A tmpfs directory bind-mounted over `/run` in a private mount namespace of each worker, so
    /// criu can keep its kernel-feature cache (`/run/criu.kdat`, ~30 ms per request otherwise)
    /// on hosts whose `/run` is not tmpfs. Such a worker sees only mounts that existed when it
    /// was spawned: mount the sandbox root *before* spawning its restore worker.
    /// None: run in the host mount namespace (right when the host's `/run` is tmpfs).
    pub kdat_tmpfs: Option<PathBuf>,
}

impl Default for CriuConfig {
    fn default() -> Self {
        Self {
            binary: PathBuf::from("/opt/burrow/criu/criu"),
            helper: Vec::new(),
            request_timeout: Duration::from_secs(120),
            work_dir: std::env::temp_dir(),
            kdat_tmpfs: None,
        }
    }
}

/// A file handed to a worker at spawn time, named for CRIU's `inherit_fd` (e.g. the sandbox's
/// network namespace as key `sbxnet`).
#[derive(Debug)]
pub struct InheritFd<'a> {
    pub key: String,
    pub fd: BorrowedFd<'a>,
}

/// A running `criu swrk`, waiting for its one request.
#[derive(Debug)]
pub struct Worker {
    /// Always Some until the worker is consumed by a request.
    child: Option<Child>,
    pid: u32,
    socket: OwnedFd,
    /// `(key, fd number inside the worker)` for each inherited file.
    inherited: Vec<(String, RawFd)>,
    timeout: Duration,
}

impl Worker {
    /// Spawns `criu swrk 3` through [`CriuConfig::helper`] (see [`super::helper`]): the RPC
    /// socket goes on fd 3 and `inherit` on fds 4, 5, ... of the worker.
    pub fn spawn(config: &CriuConfig, inherit: &[InheritFd<'_>]) -> Result<Self, CriuError> {
        let Some((program, leading)) = config.helper.split_first() else {
            return Err(CriuError::Invalid(
                "CriuConfig.helper is empty: name the program that execs criu (e.g. \
                 `burrow-launch --criu-worker`)"
                    .into(),
            ));
        };
        if inherit.len() > MAX_INHERITED {
            return Err(CriuError::Invalid(format!(
                "{} inherited files; at most {MAX_INHERITED}",
                inherit.len()
            )));
        }
        for item in inherit {
            if item.key.is_empty() || item.key.contains(['[', ']', ':']) {
                return Err(CriuError::Invalid(format!(
                    "inherit_fd key {:?} must be non-empty, without []:",
                    item.key
                )));
            }
        }
        // The helper would only exit 126: say what is missing here.
        if let Err(source) = executable(&config.binary) {
            return Err(CriuError::Spawn {
                binary: config.binary.clone(),
                source,
            });
        }
        let (ours, theirs) = seqpacket_pair().map_err(|source| CriuError::Io {
            path: "socketpair".into(),
            source,
        })?;
        let args = HelperArgs {
            kdat: config.kdat_tmpfs.clone(),
            fds: inherit.len(),
            criu: config.binary.clone(),
        };
        // No pre_exec: Command spawns with posix_spawn, and the helper places the fds itself.
        let child = Command::new(program)
            .args(leading)
            .args(args.to_args())
            .stdin(Stdio::from(theirs))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|source| CriuError::Helper {
                program: PathBuf::from(program),
                source,
            })?;
        let pid = child.id();
        let worker = Self {
            pid,
            child: Some(child),
            socket: ours,
            inherited: inherit
                .iter()
                .enumerate()
                .map(|(i, item)| (item.key.clone(), WORKER_SOCKET_FD + 1 + i as RawFd))
                .collect(),
            timeout: config.request_timeout,
        };
        if !inherit.is_empty() {
            let fds: Vec<BorrowedFd<'_>> = inherit.iter().map(|item| item.fd).collect();
            // On failure the worker is dropped, which kills the helper.
            send_fds(&worker.socket, &fds).map_err(|source| CriuError::Socket { pid, source })?;
        }
        Ok(worker)
    }

    /// The worker's host pid (e.g. to move it into the sandbox's cgroups before a restore, so the
    /// restored tasks start there).
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Keys of the files this worker inherited.
    pub fn inherited_keys(&self) -> impl Iterator<Item = &str> {
        self.inherited.iter().map(|(k, _)| k.as_str())
    }

    pub(crate) fn inherited(&self) -> &[(String, RawFd)] {
        &self.inherited
    }

    /// False if the process already exited (killed, or criu failed at start-up).
    pub fn is_alive(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Sends one request and returns the final response, answering NOTIFY callbacks with
    /// "continue". Consumes the worker: swrk exits after one request.
    pub(crate) fn call(self, req: &CriuReq) -> Result<CriuResp, CriuError> {
        self.call_notified(req, &mut |_, _| true)
    }

    /// [`Worker::call`], telling `on_notify(script, pid)` about each NOTIFY before answering it.
    pub(crate) fn call_notified(
        mut self,
        req: &CriuReq,
        on_notify: &mut dyn FnMut(&str, Option<i32>) -> bool,
    ) -> Result<CriuResp, CriuError> {
        let result = self.exchange(req, on_notify);
        let Some(mut child) = self.child.take() else {
            return Err(CriuError::Protocol("worker already used".into()));
        };
        let result = match result {
            Err(CriuError::WorkerDied { pid, .. }) => {
                let status = match child.wait() {
                    Ok(status) => status.to_string(),
                    Err(e) => e.to_string(),
                };
                return Err(CriuError::WorkerDied { pid, status });
            }
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(e);
            }
            Ok(resp) => resp,
        };
        // criu exits right after answering; reap it off the latency path.
        std::thread::spawn(move || {
            let _ = child.wait();
        });
        Ok(result)
    }

    fn exchange(
        &mut self,
        req: &CriuReq,
        on_notify: &mut dyn FnMut(&str, Option<i32>) -> bool,
    ) -> Result<CriuResp, CriuError> {
        let pid = self.pid();
        set_recv_timeout(&self.socket, self.timeout)
            .map_err(|source| CriuError::Socket { pid, source })?;
        send_msg(&self.socket, &req.encode_to_vec()).map_err(|source| socket_error(pid, source))?;
        loop {
            let bytes = recv_msg(&self.socket).map_err(|source| socket_error(pid, source))?;
            let Some(bytes) = bytes else {
                return Err(CriuError::WorkerDied {
                    pid,
                    status: String::new(),
                });
            };
            let resp = CriuResp::decode(bytes.as_slice())
                .map_err(|e| CriuError::Protocol(e.to_string()))?;
            if resp.r#type == ReqType::Notify as i32 {
                let script = resp
                    .notify
                    .as_ref()
                    .and_then(|n| n.script.clone())
                    .unwrap_or_default();
                tracing::debug!(worker = pid, %script, "criu notify");
                let go_on = on_notify(&script, resp.notify.as_ref().and_then(|n| n.pid));
                let ack = CriuReq {
                    r#type: ReqType::Notify as i32,
                    // false makes criu abort ("RPC client reported script error").
                    notify_success: Some(go_on),
                    ..Default::default()
                };
                send_msg(&self.socket, &ack.encode_to_vec())
                    .map_err(|source| socket_error(pid, source))?;
                continue;
            }
            return Ok(resp);
        }
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        // An unused worker: closing our end makes swrk exit; kill in case it is mid-request.
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn socket_error(pid: u32, source: io::Error) -> CriuError {
    match source.raw_os_error() {
        Some(libc::EPIPE) | Some(libc::ECONNRESET) => CriuError::WorkerDied {
            pid,
            status: String::new(),
        },
        _ => CriuError::Socket { pid, source },
    }
}

/// Ok if `path` is a file someone may execute.
fn executable(path: &std::path::Path) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(path)?;
    if meta.is_file() && meta.permissions().mode() & 0o111 != 0 {
        Ok(())
    } else {
        Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            "not an executable file",
        ))
    }
}

fn seqpacket_pair() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: socketpair writes two fds into the array we own.
    let ret = unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC,
            0,
            fds.as_mut_ptr(),
        )
    };
    if ret != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: both fds are fresh and owned by nothing else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

fn set_recv_timeout(socket: &OwnedFd, timeout: Duration) -> io::Result<()> {
    let tv = libc::timeval {
        tv_sec: timeout.as_secs() as libc::time_t,
        tv_usec: timeout.subsec_micros() as libc::suseconds_t,
    };
    // SAFETY: setsockopt reads a timeval of the given size from our stack.
    let ret = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&tv as *const libc::timeval).cast(),
            std::mem::size_of::<libc::timeval>() as libc::socklen_t,
        )
    };
    if ret != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn send_msg(socket: &OwnedFd, bytes: &[u8]) -> io::Result<()> {
    // SAFETY: send reads `bytes.len()` bytes from a live slice.
    let n = unsafe {
        libc::send(
            socket.as_raw_fd(),
            bytes.as_ptr().cast(),
            bytes.len(),
            libc::MSG_NOSIGNAL,
        )
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    if n as usize != bytes.len() {
        return Err(io::Error::new(
            io::ErrorKind::WriteZero,
            "short send on a seqpacket socket",
        ));
    }
    Ok(())
}

/// One message of one byte carrying `fds` (`SCM_RIGHTS`), for the helper's `--fds`.
fn send_fds(socket: &OwnedFd, fds: &[BorrowedFd<'_>]) -> io::Result<()> {
    use rustix::net::{SendAncillaryBuffer, SendAncillaryMessage, SendFlags};
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_INHERITED))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    if !control.push(SendAncillaryMessage::ScmRights(fds)) {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "too many fds"));
    }
    rustix::net::sendmsg(
        socket,
        &[io::IoSlice::new(&[0])],
        &mut control,
        SendFlags::NOSIGNAL,
    )?;
    Ok(())
}

/// One whole message, or None when the peer closed the socket.
fn recv_msg(socket: &OwnedFd) -> io::Result<Option<Vec<u8>>> {
    let mut buf = vec![0u8; RECV_BUFFER];
    loop {
        // SAFETY: recv writes at most `buf.len()` bytes into our buffer.
        let n = unsafe {
            libc::recv(
                socket.as_raw_fd(),
                buf.as_mut_ptr().cast(),
                buf.len(),
                libc::MSG_TRUNC,
            )
        };
        if n < 0 {
            let err = io::Error::last_os_error();
            if err.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            if err.kind() == io::ErrorKind::WouldBlock {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "criu did not answer in time",
                ));
            }
            return Err(err);
        }
        let n = n as usize;
        if n == 0 {
            return Ok(None);
        }
        if n > buf.len() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("criu response of {n} bytes is too large"),
            ));
        }
        buf.truncate(n);
        return Ok(Some(buf));
    }
}

/// Makes `dir` a small tmpfs (idempotent) for [`CriuConfig::kdat_tmpfs`].
pub fn ensure_kdat_tmpfs(dir: &std::path::Path) -> Result<(), CriuError> {
    let io_err = |source| CriuError::Io {
        path: dir.to_path_buf(),
        source,
    };
    std::fs::create_dir_all(dir).map_err(io_err)?;
    let c_dir = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes())
        .map_err(|_| CriuError::Invalid(format!("{} contains NUL", dir.display())))?;
    // SAFETY: statfs writes into a zeroed struct we own; the path is NUL-terminated.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    if unsafe { libc::statfs(c_dir.as_ptr(), &mut st) } != 0 {
        return Err(io_err(io::Error::last_os_error()));
    }
    if st.f_type == libc::TMPFS_MAGIC {
        return Ok(());
    }
    // SAFETY: mount reads NUL-terminated strings that outlive the call.
    let ret = unsafe {
        libc::mount(
            c"tmpfs".as_ptr(),
            c_dir.as_ptr(),
            c"tmpfs".as_ptr(),
            libc::MS_NOSUID | libc::MS_NODEV,
            c"size=4m,mode=0700".as_ptr().cast(),
        )
    };
    if ret != 0 {
        return Err(io_err(io::Error::last_os_error()));
    }
    Ok(())
}
