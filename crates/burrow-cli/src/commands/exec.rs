//! `burrow exec ID -- CMD ARGS...`: streams output, exits with the command's exit code.

use std::io::{Read, Write};
use std::process::ExitCode;

use anyhow::{Context, bail};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use clap::Args;
use futures::StreamExt;
use serde_json::{Value, json};

use crate::args::{duration, key_values};
use crate::client::{ApiClient, ndjson};

#[derive(Args)]
pub struct ExecArgs {
    pub id: String,
    /// Environment variable for this command only (repeatable).
    #[arg(long = "env", short = 'e', value_name = "K=V")]
    pub env: Vec<String>,
    /// Working directory (default: the user's home or the template's WORKDIR).
    #[arg(long)]
    pub cwd: Option<String>,
    /// User to run as (default: the template's user, `user` in base).
    #[arg(long, short)]
    pub user: Option<String>,
    /// Kill the command after this long (seconds, or 30s, 5m...). Default: no limit.
    #[arg(long)]
    pub timeout: Option<String>,
    /// Send this process's stdin to the command.
    #[arg(long, short = 'i')]
    pub stdin: bool,
    /// The command and its arguments (after `--`).
    #[arg(last = true, required = true)]
    pub command: Vec<String>,
}

pub async fn run(api: &ApiClient, args: ExecArgs) -> anyhow::Result<ExitCode> {
    let mut body = json!({
        "cmd": args.command,
        "env": key_values(&args.env, "--env")?,
    });
    if let Some(cwd) = args.cwd {
        body["cwd"] = json!(cwd);
    }
    if let Some(user) = args.user {
        body["user"] = json!(user);
    }
    if let Some(timeout) = args.timeout {
        body["timeout_ms"] = json!(duration(&timeout)?.as_millis() as u64);
    }
    if args.stdin {
        let mut input = Vec::new();
        std::io::stdin()
            .read_to_end(&mut input)
            .context("reading stdin")?;
        body["stdin_base64"] = json!(B64.encode(input));
    }
    let resp = api
        .send(
            api.request(
                reqwest::Method::POST,
                &format!("/v1/sandboxes/{}/exec", args.id),
            )
            .json(&body),
        )
        .await?;
    let mut events = Box::pin(ndjson::<Value>(resp));
    let mut stdout = std::io::stdout().lock();
    let mut stderr = std::io::stderr();
    while let Some(event) = events.next().await {
        let event = event?;
        match event.get("type").and_then(Value::as_str) {
            Some("stdout") => {
                stdout.write_all(&decode(&event)?)?;
                stdout.flush()?;
            }
            Some("stderr") => {
                stderr.write_all(&decode(&event)?)?;
                stderr.flush()?;
            }
            Some("exit") => {
                let code = event.get("exit_code").and_then(Value::as_i64).unwrap_or(-1);
                if let Some(signal) = event.get("signal").and_then(Value::as_str) {
                    eprintln!("burrow: command ended by signal {signal}");
                }
                return Ok(ExitCode::from(exit_status_byte(code)));
            }
            Some("error") => {
                let message = event
                    .get("message")
                    .and_then(Value::as_str)
                    .unwrap_or("unknown error");
                bail!("exec failed: {message}");
            }
            _ => {}
        }
    }
    bail!("the server closed the stream before the command's exit status arrived")
}

fn decode(event: &Value) -> anyhow::Result<Vec<u8>> {
    let data = event
        .get("data")
        .and_then(Value::as_str)
        .unwrap_or_default();
    B64.decode(data).context("decoding output chunk")
}

/// Maps an exit code onto a process exit status byte (negative or >255 become 255).
fn exit_status_byte(code: i64) -> u8 {
    u8::try_from(code).unwrap_or(255)
}
