//! The grace signal before an idle standby: a sandbox that has an executable
//! `/etc/burrow/pre-standby` gets it run (as root inside the sandbox, `BURROW_STANDBY_GRACE`
//! = the seconds it may take) when its idle timeout has passed, before it is frozen. The hook
//! can flush state, close connections that would break, or say "not now": exit code 75
//! (`EX_TEMPFAIL`) counts as activity, so the idle timer starts over; a lease it takes
//! (`touch /run/burrow/leases/x`) keeps the sandbox awake as usual. A hook still running after
//! `--standby-grace` is killed by the agent and the standby goes ahead.
//!
//! Only the idle timer runs the hook: an explicit standby, the deep-after timer (the sandbox is
//! frozen already), memory pressure and shutdown do not wait for it. Running the hook is not
//! activity.

use std::time::Duration;

use burrow_envd::EnvdClient;
use burrow_envd::proto::process::{ProcessConfig, ProcessEvent, StartRequest};
use futures::StreamExt;

use crate::Core;

/// Where the hook lives inside the sandbox.
pub const HOOK_PATH: &str = "/etc/burrow/pre-standby";
/// The hook's exit code that postpones the standby (sysexits' EX_TEMPFAIL).
pub const POSTPONE_EXIT_CODE: i32 = 75;
/// Shown in `commands.list()` while the hook runs.
const HOOK_TAG: &str = "pre-standby";
/// Slack beyond the grace for the agent to kill the hook and report it.
const KILL_SLACK: Duration = Duration::from_secs(2);

/// Runs the sandbox's pre-standby hook if it has one and waits for it (at most the server's
/// grace). True if the hook asked to postpone the standby. Failures are logged: a broken hook
/// never keeps a sandbox awake.
pub async fn run_hook(core: &Core, id: &str) -> bool {
    match run(core, id).await {
        Ok(outcome) => outcome == HookOutcome::Postpone,
        Err(e) => {
            tracing::warn!(sandbox = id, "pre-standby hook: {e}");
            false
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
enum HookOutcome {
    None,
    Done,
    Postpone,
}

async fn run(core: &Core, id: &str) -> Result<HookOutcome, String> {
    let grace = core.config.standby_grace;
    let (record, handle) = crate::sandboxes::running_record(core, id)
        .await
        .map_err(|e| e.to_string())?;
    let client = EnvdClient::new(handle.agent_addr(), record.access_token.clone())
        .map_err(|e| format!("agent client: {e}"))?;
    match client.stat(HOOK_PATH, Some("root")).await {
        Ok(entry) if entry.mode & 0o111 != 0 => {}
        // Missing (the usual case) or not executable: nothing to run.
        _ => return Ok(HookOutcome::None),
    }
    let started = std::time::Instant::now();
    let request = StartRequest {
        process: ProcessConfig {
            cmd: HOOK_PATH.to_string(),
            args: Vec::new(),
            envs: [(
                "BURROW_STANDBY_GRACE".to_string(),
                grace.as_secs().to_string(),
            )]
            .into(),
            cwd: Some("/".to_string()),
        },
        pty: None,
        tag: Some(HOOK_TAG.to_string()),
        stdin: Some(false),
    };
    let mut events = client
        .start(request, Some("root"), Some(grace))
        .await
        .map_err(|e| format!("cannot start {HOOK_PATH}: {e}"))?;
    let ended = tokio::time::timeout(grace + KILL_SLACK, async {
        while let Some(event) = events.next().await {
            match event {
                Ok(ProcessEvent::End(end)) => return Ok(end),
                Ok(_) => {}
                Err(e) => return Err(format!("lost the hook's event stream: {e}")),
            }
        }
        Err("the agent closed the hook's event stream".to_string())
    })
    .await
    .map_err(|_| format!("still running after {grace:?}"))??;
    let outcome = if ended.exited && ended.exit_code == POSTPONE_EXIT_CODE {
        HookOutcome::Postpone
    } else {
        HookOutcome::Done
    };
    tracing::info!(sandbox = id, status = %ended.status, ?outcome,
        ms = started.elapsed().as_secs_f64() * 1e3, "pre-standby hook ran");
    Ok(outcome)
}
