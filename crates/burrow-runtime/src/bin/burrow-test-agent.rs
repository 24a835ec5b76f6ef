//! A stand-in for `burrow-agent` used by burrow-runtime's integration tests: listens on
//! 0.0.0.0:49983, signals readiness on fd 3 like the real agent, and runs one shell command per
//! connection (`<command>\n` in; `<exit code>\n<stdout+stderr>` out). It runs as the sandbox's
//! root through the real launch path, so tests observe exactly what sandboxed code can do.
//! A request starting with `GET ` gets a minimal HTTP 200 (for /health probes).

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::FromRawFd;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};

fn main() {
    let listener = match TcpListener::bind("0.0.0.0:49983") {
        Ok(l) => l,
        Err(e) => {
            eprintln!("bind :49983: {e}");
            std::process::exit(1);
        }
    };
    // SAFETY: fd 3 is the readiness pipe the launcher passes; we own it from here on.
    let mut ready = unsafe { std::fs::File::from_raw_fd(3) };
    let _ = ready.write_all(b"r");
    drop(ready);
    for stream in listener.incoming().flatten() {
        std::thread::spawn(move || serve(stream));
    }
}

fn serve(stream: TcpStream) {
    let mut reader = BufReader::new(match stream.try_clone() {
        Ok(s) => s,
        Err(_) => return,
    });
    let mut line = String::new();
    if reader.read_line(&mut line).is_err() {
        return;
    }
    let mut out = stream;
    if line.starts_with("GET ") {
        let _ = out.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
        return;
    }
    let mut command = Command::new("/bin/sh");
    command.arg("-c").arg(line.trim_end()).stdin(Stdio::null());
    // Like the real agent (process/spawn.rs, COMMAND_OOM_SCORE_ADJ): commands go before init
    // and the agent in the sandbox's OOM (score 500).
    // SAFETY: the closure only opens, writes and closes a file (async-signal-safe calls).
    unsafe {
        command.pre_exec(|| {
            let fd = libc::open(
                c"/proc/self/oom_score_adj".as_ptr(),
                libc::O_WRONLY | libc::O_CLOEXEC,
            );
            if fd < 0 {
                return Err(std::io::Error::last_os_error());
            }
            let written = libc::write(fd, b"500".as_ptr().cast(), 3);
            let error = std::io::Error::last_os_error();
            libc::close(fd);
            if written != 3 {
                return Err(error);
            }
            Ok(())
        });
    }
    let result = command.output();
    let reply = match result {
        Ok(o) => {
            let code = o.status.code().unwrap_or(
                128 + std::os::unix::process::ExitStatusExt::signal(&o.status).unwrap_or(0),
            );
            let mut text = format!("{code}\n").into_bytes();
            text.extend_from_slice(&o.stdout);
            text.extend_from_slice(&o.stderr);
            text
        }
        Err(e) => format!("127\nspawn /bin/sh: {e}\n").into_bytes(),
    };
    let _ = out.write_all(&reply);
}
