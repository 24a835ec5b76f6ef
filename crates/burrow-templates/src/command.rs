//! Runs build-time host commands (debootstrap, chroot) as exec'd processes, streaming their output
//! lines to a callback.

use std::collections::VecDeque;
use std::process::Stdio;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

use crate::TemplateError;

/// How many trailing output lines a failure message quotes.
const TAIL_LINES: usize = 15;

/// Runs `command` to completion, calling `on_line` for every stdout/stderr line. A non-zero exit
/// becomes [`TemplateError::BuildFailed`] quoting the last lines of output.
pub async fn run_streaming(
    mut command: Command,
    what: &str,
    on_line: &(dyn Fn(&str) + Send + Sync),
) -> Result<(), TemplateError> {
    command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = command
        .spawn()
        .map_err(|e| TemplateError::io(format!("starting {what}"), e))?;
    let mut stdout = child.stdout.take().map(|s| BufReader::new(s).lines());
    let mut stderr = child.stderr.take().map(|s| BufReader::new(s).lines());
    let mut tail = VecDeque::with_capacity(TAIL_LINES);
    while stdout.is_some() || stderr.is_some() {
        let line = tokio::select! {
            line = next_line(&mut stdout), if stdout.is_some() => line,
            line = next_line(&mut stderr), if stderr.is_some() => line,
        };
        if let Some(line) = line {
            on_line(&line);
            if tail.len() == TAIL_LINES {
                tail.pop_front();
            }
            tail.push_back(line);
        }
    }
    let status = child
        .wait()
        .await
        .map_err(|e| TemplateError::io(format!("waiting for {what}"), e))?;
    if status.success() {
        Ok(())
    } else {
        let tail: Vec<String> = tail.into();
        Err(TemplateError::BuildFailed(format!(
            "{what} failed ({status}); last output:\n{}",
            tail.join("\n")
        )))
    }
}

/// Next line of a stream; `None` (and the stream closed) at EOF or on a read error.
async fn next_line<R: tokio::io::AsyncBufRead + Unpin>(
    lines: &mut Option<tokio::io::Lines<R>>,
) -> Option<String> {
    let reader = lines.as_mut()?;
    match reader.next_line().await {
        Ok(Some(line)) => Some(line),
        Ok(None) | Err(_) => {
            *lines = None;
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[tokio::test]
    async fn streams_both_outputs_and_reports_failure() {
        let seen = Mutex::new(Vec::new());
        let mut command = Command::new("sh");
        command.args(["-c", "echo out; echo err >&2; exit 3"]);
        let result = run_streaming(command, "test script", &|line: &str| {
            seen.lock().unwrap().push(line.to_string())
        })
        .await;
        let mut seen = seen.into_inner().unwrap();
        seen.sort();
        assert_eq!(seen, ["err", "out"]);
        let message = result.unwrap_err().to_string();
        assert!(message.contains("test script failed"), "{message}");
        assert!(message.contains("out"), "{message}");
    }

    #[tokio::test]
    async fn missing_binary_is_a_clear_error() {
        let result =
            run_streaming(Command::new("/nonexistent/bin"), "nothing", &|_: &str| {}).await;
        assert!(result.unwrap_err().to_string().contains("starting nothing"));
    }
}
