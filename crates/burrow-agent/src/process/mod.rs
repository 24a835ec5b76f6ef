//! The process table: spawning user processes, fanning their output out to streams,
//! stdin/PTY input, signals, deadlines, and remembering recent exits for late `Connect`.

mod pty;
mod spawn;
pub mod status;

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use burrow_envd::proto::process::{
    EndEvent, ProcessConfig, ProcessEvent, ProcessInfo, ProcessInput, ProcessSelector, Signal,
};
use burrow_envd::{Code, ConnectError};
use tokio::io::AsyncWriteExt;
use tokio::process::ChildStdin;
use tokio::sync::mpsc;

pub use spawn::{SpawnSpec, process_env, raise_nofile_soft_limit, spawn, validate_env};

use pty::PtyMaster;

/// How many finished processes are remembered for a late `Connect`.
const FINISHED_RETAINED: usize = 256;
/// Buffered events per subscriber before output producers wait (backpressure).
const SUBSCRIBER_BUFFER: usize = 64;

/// What a new subscriber gets: live events, or the end of a process that already finished.
pub enum Subscription {
    Live(mpsc::Receiver<ProcessEvent>),
    Ended(EndEvent),
}

#[derive(Default)]
struct Fanout {
    senders: Vec<mpsc::Sender<ProcessEvent>>,
    ended: Option<EndEvent>,
}

pub struct ProcessHandle {
    pub pid: u32,
    pub tag: Option<String>,
    pub config: ProcessConfig,
    fanout: Mutex<Fanout>,
    stdin: tokio::sync::Mutex<Option<ChildStdin>>,
    pty: Option<PtyMaster>,
}

impl ProcessHandle {
    fn lock_fanout(&self) -> std::sync::MutexGuard<'_, Fanout> {
        self.fanout.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn subscribe(&self) -> Subscription {
        let mut fanout = self.lock_fanout();
        if let Some(end) = &fanout.ended {
            return Subscription::Ended(end.clone());
        }
        let (tx, rx) = mpsc::channel(SUBSCRIBER_BUFFER);
        fanout.senders.push(tx);
        Subscription::Live(rx)
    }

    /// Delivers an output event to every subscriber, waiting for slow ones.
    async fn publish(&self, event: ProcessEvent) {
        let senders = self.lock_fanout().senders.clone();
        let mut dead = false;
        for tx in &senders {
            dead |= tx.send(event.clone()).await.is_err();
        }
        if dead {
            self.lock_fanout().senders.retain(|tx| !tx.is_closed());
        }
    }

    /// Records the end and delivers it as the last event of every live subscription.
    async fn finish(&self, end: EndEvent) {
        let senders = {
            let mut fanout = self.lock_fanout();
            fanout.ended = Some(end.clone());
            std::mem::take(&mut fanout.senders)
        };
        for tx in senders {
            let _ = tx.send(ProcessEvent::End(end.clone())).await;
        }
    }

    pub fn is_finished(&self) -> bool {
        self.lock_fanout().ended.is_some()
    }

    pub async fn send_input(&self, input: ProcessInput) -> Result<(), ConnectError> {
        let data = match input {
            ProcessInput::Stdin(d) | ProcessInput::Pty(d) => d,
        };
        if let Some(pty) = &self.pty {
            return pty
                .write_all(&data)
                .await
                .map_err(|e| ConnectError::internal(format!("writing to the PTY failed: {e}")));
        }
        let mut stdin = self.stdin.lock().await;
        let Some(pipe) = stdin.as_mut() else {
            return Err(ConnectError::new(
                Code::FailedPrecondition,
                format!(
                    "stdin of process {} is not open (start it with stdin enabled, and do not close it)",
                    self.pid
                ),
            ));
        };
        let result = async {
            pipe.write_all(&data).await?;
            pipe.flush().await
        }
        .await;
        result.map_err(|e| ConnectError::internal(format!("writing to stdin failed: {e}")))
    }

    pub async fn close_stdin(&self) -> Result<(), ConnectError> {
        if self.pty.is_some() {
            return Err(ConnectError::new(
                Code::FailedPrecondition,
                "cannot close stdin of a PTY process; send Ctrl-D (0x04) instead",
            ));
        }
        self.stdin.lock().await.take();
        Ok(())
    }

    pub fn resize(&self, cols: u32, rows: u32) -> Result<(), ConnectError> {
        let Some(pty) = &self.pty else {
            return Err(ConnectError::new(
                Code::FailedPrecondition,
                format!("process {} has no PTY to resize", self.pid),
            ));
        };
        let clamp = |v: u32| u16::try_from(v).unwrap_or(u16::MAX);
        pty.resize(clamp(cols), clamp(rows))
            .map_err(|e| ConnectError::internal(format!("resizing the PTY failed: {e}")))
    }

    /// Signals the process group (every process has its own), falling back to the pid.
    pub fn signal(&self, signal: i32) -> Result<(), ConnectError> {
        let Some(pid) = rustix::process::Pid::from_raw(self.pid as i32) else {
            return Err(ConnectError::internal("invalid pid"));
        };
        let sig = rustix::process::Signal::from_named_raw(signal).ok_or_else(|| {
            ConnectError::invalid_argument(format!("unsupported signal {signal}"))
        })?;
        if rustix::process::kill_process_group(pid, sig).is_ok() {
            return Ok(());
        }
        rustix::process::kill_process(pid, sig).map_err(|e| {
            ConnectError::not_found(format!("process {} cannot be signalled: {e}", self.pid))
        })
    }

    pub fn info(&self) -> ProcessInfo {
        ProcessInfo {
            config: self.config.clone(),
            pid: self.pid,
            tag: self.tag.clone(),
        }
    }
}

#[derive(Default)]
struct Table {
    running: HashMap<u32, Arc<ProcessHandle>>,
    finished: VecDeque<Arc<ProcessHandle>>,
}

#[derive(Default)]
pub struct ProcessTable {
    table: Mutex<Table>,
}

impl ProcessTable {
    fn lock(&self) -> std::sync::MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn insert(&self, handle: Arc<ProcessHandle>) {
        self.lock().running.insert(handle.pid, handle);
    }

    fn mark_finished(&self, pid: u32) {
        let mut table = self.lock();
        if let Some(handle) = table.running.remove(&pid) {
            table.finished.push_back(handle);
            while table.finished.len() > FINISHED_RETAINED {
                table.finished.pop_front();
            }
        }
    }

    pub fn list(&self) -> Vec<ProcessInfo> {
        let mut list: Vec<_> = self.lock().running.values().map(|h| h.info()).collect();
        list.sort_by_key(|p| p.pid);
        list
    }

    /// Finds a running process, or a recently finished one when `include_finished`.
    pub fn find(
        &self,
        selector: Option<&ProcessSelector>,
        include_finished: bool,
    ) -> Result<Arc<ProcessHandle>, ConnectError> {
        let selector = selector.ok_or_else(|| {
            ConnectError::invalid_argument("process selector (pid or tag) is required")
        })?;
        let table = self.lock();
        let matches = |h: &Arc<ProcessHandle>| match selector {
            ProcessSelector::Pid(pid) => h.pid == *pid,
            ProcessSelector::Tag(tag) => h.tag.as_deref() == Some(tag.as_str()),
        };
        let running = table.running.values().find(|h| matches(h));
        let found = match running {
            Some(h) => Some(h.clone()),
            None if include_finished => table.finished.iter().rev().find(|h| matches(h)).cloned(),
            None => None,
        };
        found.ok_or_else(|| ConnectError::not_found(format!("process with {selector} not found")))
    }
}

pub fn signal_number(signal: Signal) -> Result<i32, ConnectError> {
    match signal {
        Signal::Sigkill => Ok(libc::SIGKILL),
        Signal::Sigterm => Ok(libc::SIGTERM),
        Signal::Unspecified => Err(ConnectError::invalid_argument(
            "signal must be SIGNAL_SIGTERM or SIGNAL_SIGKILL",
        )),
    }
}

/// Grace period for output pipes after the main process exited (background children
/// may keep them open forever).
pub const OUTPUT_DRAIN_GRACE: Duration = Duration::from_millis(500);
