//! [`StepRunner`] for template builds: each RUN step runs in a real temporary sandbox of the
//! layers built so far (network on, as root). When the command exits, the sandbox's init is
//! killed (which ends every process in its pid namespace and releases its overlay mount) and its
//! upper dir is handed to the builder. The sandboxes are destroyed by [`BuildSandboxes::destroy_all`]
//! once the builder has taken what it needs.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use burrow_envd::proto::process::{DataEvent, ProcessConfig, ProcessEvent, StartRequest};
use burrow_runtime::{SandboxHandle, SandboxSpec};
use burrow_templates::{StepOutcome, StepRunner, TemplateError};
use futures::StreamExt;

use crate::state::AppState;
use burrow_core::{ids, keys};

/// Resources of a RUN step's sandbox.
const BUILD_MEMORY_MB: u64 = 4096;
const BUILD_DISK_MB: u64 = 32 * 1024;
const BUILD_PIDS_MAX: u64 = 8192;

pub struct BuildSandboxes {
    state: AppState,
    created: Mutex<Vec<String>>,
}

impl BuildSandboxes {
    pub fn new(state: AppState) -> Self {
        Self {
            state,
            created: Mutex::new(Vec::new()),
        }
    }

    /// Destroys every sandbox the build created. Call after the build finished (either way).
    pub async fn destroy_all(&self) {
        let ids = std::mem::take(&mut *self.created.lock().unwrap_or_else(|p| p.into_inner()));
        for id in ids {
            if let Err(e) = self.state.runtime.destroy(&id).await {
                tracing::error!(sandbox = id, "destroying a build sandbox: {e}");
            }
        }
    }

    /// Kills the sandbox's init (and so its whole pid namespace) and waits until it is gone.
    async fn stop(&self, handle: &SandboxHandle) -> Result<(), TemplateError> {
        if self.state.runtime.is_alive(handle)
            && let Some(pid) = rustix::process::Pid::from_raw(handle.init_pid)
        {
            // ESRCH just means it already exited.
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.state.runtime.is_alive(handle) {
            if Instant::now() > deadline {
                return Err(TemplateError::BuildFailed(format!(
                    "build sandbox {} did not stop within 30 s",
                    handle.id
                )));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(())
    }
}

fn failed(what: &str, e: impl std::fmt::Display) -> TemplateError {
    TemplateError::BuildFailed(format!("{what}: {e}"))
}

impl StepRunner for BuildSandboxes {
    async fn run(
        &self,
        layers: &[PathBuf],
        env: &BTreeMap<String, String>,
        workdir: Option<&str>,
        command: &str,
        output: &(dyn Fn(&str) + Send + Sync),
    ) -> Result<StepOutcome, TemplateError> {
        let id = ids::new_sandbox_id();
        let token = keys::generate_access_token();
        let spec = SandboxSpec {
            id: id.clone(),
            template: "build".into(),
            layers: layers.to_vec(),
            cpus: std::thread::available_parallelism().map_or(1, |n| n.get()) as f64,
            memory_mb: BUILD_MEMORY_MB,
            disk_mb: BUILD_DISK_MB,
            pids_max: BUILD_PIDS_MAX,
            env: env.clone(),
            access_token: Some(token.clone()),
            default_user: "root".into(),
            default_workdir: workdir.map(str::to_string),
            zdr: false,
        };
        self.created
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(id.clone());
        let handle = self
            .state
            .runtime
            .create(spec)
            .await
            .map_err(|e| failed("starting a build sandbox", e))?;

        let client = burrow_envd::EnvdClient::new(handle.agent_addr(), Some(token))
            .map_err(|e| failed("agent client", e))?;
        let start = StartRequest {
            process: ProcessConfig {
                cmd: "/bin/sh".into(),
                args: vec!["-c".into(), command.into()],
                envs: BTreeMap::new(),
                cwd: workdir.map(str::to_string),
            },
            pty: None,
            tag: None,
            stdin: Some(false),
        };
        let mut events = client
            .start(start, Some("root"), None)
            .await
            .map_err(|e| failed("starting the RUN command", e))?;
        let mut exit_code = None;
        while let Some(event) = events.next().await {
            match event.map_err(|e| failed("RUN output stream", e))? {
                ProcessEvent::Data(
                    DataEvent::Stdout(d) | DataEvent::Stderr(d) | DataEvent::Pty(d),
                ) => {
                    for line in String::from_utf8_lossy(&d).lines() {
                        output(line);
                    }
                }
                ProcessEvent::End(end) => {
                    exit_code = Some(end.exit_code);
                    break;
                }
                ProcessEvent::Start(_) | ProcessEvent::Keepalive(_) => {}
            }
        }
        let exit_code = exit_code.ok_or_else(|| {
            failed(
                "RUN command",
                "the agent ended the stream without an exit status",
            )
        })?;
        self.stop(&handle).await?;
        Ok(StepOutcome {
            exit_code,
            upper_dir: self
                .state
                .config
                .data_dir
                .join("sandboxes")
                .join(&id)
                .join("upper"),
            uid_base: handle.uid_base,
        })
    }
}
