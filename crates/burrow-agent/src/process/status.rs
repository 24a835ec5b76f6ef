//! Renders exit statuses the way E2B's envd (Go's ProcessState) does.

use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;

use burrow_envd::proto::process::EndEvent;

fn signal_name(signal: i32) -> String {
    let name = match signal {
        libc::SIGHUP => "hangup",
        libc::SIGINT => "interrupt",
        libc::SIGQUIT => "quit",
        libc::SIGILL => "illegal instruction",
        libc::SIGTRAP => "trace/breakpoint trap",
        libc::SIGABRT => "aborted",
        libc::SIGBUS => "bus error",
        libc::SIGFPE => "floating point exception",
        libc::SIGKILL => "killed",
        libc::SIGUSR1 => "user defined signal 1",
        libc::SIGSEGV => "segmentation fault",
        libc::SIGUSR2 => "user defined signal 2",
        libc::SIGPIPE => "broken pipe",
        libc::SIGALRM => "alarm clock",
        libc::SIGTERM => "terminated",
        other => return format!("signal {other}"),
    };
    name.to_string()
}

/// `exit status N` (exited) or `signal: killed` (exitCode -1, exited false), like Go.
pub fn end_event(status: ExitStatus) -> EndEvent {
    match (status.code(), status.signal()) {
        (Some(code), _) => EndEvent {
            exit_code: code,
            exited: true,
            status: format!("exit status {code}"),
            // envd reports Go's Wait() error, which is set for every non-zero exit.
            error: (code != 0).then(|| format!("exit status {code}")),
        },
        (None, Some(sig)) => {
            let core = if status.core_dumped() {
                " (core dumped)"
            } else {
                ""
            };
            let status = format!("signal: {}{core}", signal_name(sig));
            EndEvent {
                exit_code: -1,
                exited: false,
                error: Some(status.clone()),
                status,
            }
        }
        (None, None) => EndEvent {
            exit_code: -1,
            exited: false,
            status: "unknown".into(),
            error: None,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_like_go() {
        let exited = end_event(ExitStatus::from_raw(3 << 8));
        assert_eq!((exited.exit_code, exited.exited), (3, true));
        assert_eq!(exited.status, "exit status 3");
        let killed = end_event(ExitStatus::from_raw(libc::SIGKILL));
        assert_eq!((killed.exit_code, killed.exited), (-1, false));
        assert_eq!(killed.status, "signal: killed");
    }
}
