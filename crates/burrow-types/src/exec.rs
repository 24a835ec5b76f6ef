//! Running commands: the request and the NDJSON event stream of `POST /v1/sandboxes/{id}/exec`,
//! and the control messages of the PTY WebSocket.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// `POST /v1/sandboxes/{id}/exec` body. Exactly one of `cmd` and `command` is required.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ExecRequest {
    /// argv, run directly (`cmd[0]` is looked up in `PATH`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cmd: Option<Vec<String>>,
    /// A shell command line, run with `/bin/bash -lc`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<String>,
    /// Extra environment for this process.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// Working directory (default: the template's, else the user's home).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cwd: Option<String>,
    /// User to run as (default: the template's user, `user` in `base`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Text written to the process's stdin, which is then closed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stdin: Option<String>,
    /// Bytes (standard base64) written to stdin, which is then closed. Excludes `stdin`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stdin_base64: Option<String>,
    /// Kill the process after this many milliseconds (default: no limit).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    /// Hold a lease (shown in the sandbox's `power.leases`) while the command runs. The open
    /// stream already keeps the sandbox awake; the lease makes the reason visible.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub keep_alive: bool,
}

/// One line of the exec response (NDJSON, `application/x-ndjson`).
///
/// The stream is `start`, then any number of `stdout`/`stderr`, then exactly one `exit` or `error`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ExecEvent {
    /// The process started.
    Start { pid: u32 },
    /// A chunk of stdout, base64.
    Stdout {
        #[serde(with = "crate::bytes_b64")]
        #[schema(value_type = String, format = Byte)]
        data: Vec<u8>,
    },
    /// A chunk of stderr, base64.
    Stderr {
        #[serde(with = "crate::bytes_b64")]
        #[schema(value_type = String, format = Byte)]
        data: Vec<u8>,
    },
    /// The process ended: `exit_code` is -1 if it was killed by a signal.
    Exit {
        exit_code: i32,
        /// Signal name (`SIGKILL`) if a signal ended it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        signal: Option<String>,
    },
    /// The command could not be run or the stream broke; no `exit` follows.
    Error { code: String, message: String },
}

/// Terminal size of a PTY.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct PtySize {
    pub cols: u16,
    pub rows: u16,
}

/// A text frame on the PTY WebSocket (binary frames carry raw terminal bytes both ways).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum PtyControl {
    /// Client → server: the terminal was resized.
    Resize(PtySize),
    /// Server → client: the shell exited; the server closes the socket next.
    Exit { exit_code: i32 },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_have_the_documented_shape() {
        let out = ExecEvent::Stdout {
            data: b"hi\n".to_vec(),
        };
        assert_eq!(
            serde_json::to_string(&out).unwrap(),
            r#"{"type":"stdout","data":"aGkK"}"#
        );
        let exit = ExecEvent::Exit {
            exit_code: 3,
            signal: None,
        };
        assert_eq!(
            serde_json::to_string(&exit).unwrap(),
            r#"{"type":"exit","exit_code":3}"#
        );
        let back: ExecEvent = serde_json::from_str(r#"{"type":"stdout","data":"aGkK"}"#).unwrap();
        assert_eq!(back, out);
        assert!(serde_json::from_str::<ExecEvent>(r#"{"type":"stdout","data":"!!"}"#).is_err());
    }

    #[test]
    fn resize_frame_shape() {
        let c: PtyControl = serde_json::from_str(r#"{"resize":{"cols":80,"rows":24}}"#).unwrap();
        assert_eq!(c, PtyControl::Resize(PtySize { cols: 80, rows: 24 }));
    }
}
