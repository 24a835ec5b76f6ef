//! `burrow shell ID`: an interactive PTY over the server's WebSocket endpoint.

use std::os::fd::AsFd;
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::Args;
use futures::{SinkExt, StreamExt};
use rustix::termios::{self, OptionalActions, Termios};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use crate::client::ApiClient;

#[derive(Args)]
pub struct ShellArgs {
    pub id: String,
    /// User to log in as (default: the template's user).
    #[arg(long, short)]
    pub user: Option<String>,
}

pub async fn run(api: &ApiClient, args: ShellArgs) -> anyhow::Result<ExitCode> {
    let (cols, rows) = window_size();
    let mut url = format!(
        "{}/v1/sandboxes/{}/pty?cols={cols}&rows={rows}",
        api.base().replacen("http", "ws", 1),
        args.id
    );
    if let Some(user) = &args.user {
        url.push_str(&format!("&user={user}"));
    }
    let mut request = url
        .into_client_request()
        .context("building the shell request")?;
    request.headers_mut().insert(
        "authorization",
        format!("Bearer {}", api.key())
            .parse()
            .context("API key is not a valid header")?,
    );
    let (ws, _) = match tokio_tungstenite::connect_async(request).await {
        Ok(ok) => ok,
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
            let body = resp
                .body()
                .as_deref()
                .map(String::from_utf8_lossy)
                .unwrap_or_default();
            bail!("server answered {}: {}", resp.status(), body.trim());
        }
        Err(e) => bail!("cannot open a shell: {e}"),
    };
    let (mut sink, mut source) = ws.split();
    let _raw = RawMode::enter();
    let mut stdin = tokio::io::stdin();
    let mut stdout = tokio::io::stdout();
    let mut winch = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::window_change())
        .context("watching window size changes")?;
    let mut buf = vec![0u8; 8192];
    let mut exit_code = 0u8;
    loop {
        tokio::select! {
            n = stdin.read(&mut buf) => {
                let n = n.context("reading the terminal")?;
                if n == 0 { break; }
                sink.send(Message::binary(buf[..n].to_vec())).await.context("sending input")?;
            }
            msg = source.next() => match msg {
                Some(Ok(Message::Binary(data))) => {
                    stdout.write_all(&data).await?;
                    stdout.flush().await?;
                }
                Some(Ok(Message::Text(text))) => {
                    // `{"exit":{"exit_code":N}}`, sent by the server just before it closes.
                    if let Ok(v) = serde_json::from_str::<Value>(&text)
                        && let Some(code) = v.pointer("/exit/exit_code").and_then(Value::as_i64)
                    {
                        exit_code = u8::try_from(code).unwrap_or(255);
                    }
                }
                Some(Ok(Message::Close(_))) | None => break,
                Some(Ok(_)) => {}
                Some(Err(e)) => bail!("shell connection broke: {e}"),
            },
            _ = winch.recv() => {
                let (cols, rows) = window_size();
                let resize = json!({"resize": {"cols": cols, "rows": rows}}).to_string();
                sink.send(Message::text(resize)).await.ok();
            }
        }
    }
    Ok(ExitCode::from(exit_code))
}

fn window_size() -> (u16, u16) {
    termios::tcgetwinsize(std::io::stdout().as_fd())
        .map(|ws| (ws.ws_col.max(1), ws.ws_row.max(1)))
        .unwrap_or((80, 24))
}

/// Puts the terminal in raw mode while alive; restores it on drop.
struct RawMode {
    saved: Option<Termios>,
}

impl RawMode {
    fn enter() -> Self {
        let stdin = std::io::stdin();
        let Ok(saved) = termios::tcgetattr(stdin.as_fd()) else {
            return Self { saved: None };
        };
        let mut raw = saved.clone();
        raw.make_raw();
        if termios::tcsetattr(stdin.as_fd(), OptionalActions::Now, &raw).is_err() {
            return Self { saved: None };
        }
        Self { saved: Some(saved) }
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        if let Some(saved) = &self.saved {
            let _ = termios::tcsetattr(std::io::stdin().as_fd(), OptionalActions::Now, saved);
        }
    }
}
