//! Process service against the real agent binary.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use burrow_envd::client::ProcessEventStream;
use burrow_envd::proto::process::{
    DataEvent, EndEvent, ProcessConfig, ProcessEvent, ProcessInput, ProcessSelector, Pty, PtySize,
    Signal, StartRequest,
};
use burrow_envd::{Code, EnvdError};
use bytes::Bytes;
use common::{Agent, AgentOptions};
use futures::StreamExt;

#[derive(Debug, Default)]
struct Collected {
    pid: u32,
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    pty: Vec<u8>,
    keepalives: usize,
    end: Option<EndEvent>,
    error: Option<EnvdError>,
}

async fn collect(mut stream: ProcessEventStream) -> Collected {
    let mut c = Collected::default();
    while let Some(item) = stream.next().await {
        match item {
            Ok(ProcessEvent::Start(s)) => c.pid = s.pid,
            Ok(ProcessEvent::Data(DataEvent::Stdout(b))) => c.stdout.extend_from_slice(&b),
            Ok(ProcessEvent::Data(DataEvent::Stderr(b))) => c.stderr.extend_from_slice(&b),
            Ok(ProcessEvent::Data(DataEvent::Pty(b))) => c.pty.extend_from_slice(&b),
            Ok(ProcessEvent::Keepalive(_)) => c.keepalives += 1,
            Ok(ProcessEvent::End(e)) => c.end = Some(e),
            Err(e) => c.error = Some(e),
        }
    }
    c
}

fn bash(script: &str) -> StartRequest {
    StartRequest {
        process: ProcessConfig {
            cmd: "/bin/bash".into(),
            args: vec!["-c".into(), script.into()],
            ..Default::default()
        },
        stdin: Some(false),
        ..Default::default()
    }
}

async fn first_event_pid(stream: &mut ProcessEventStream) -> u32 {
    match stream.next().await {
        Some(Ok(ProcessEvent::Start(s))) => s.pid,
        other => panic!("expected start event, got {other:?}"),
    }
}

#[tokio::test]
async fn output_exit_codes_user_env_and_cwd() {
    let agent = Agent::start(AgentOptions {
        env_json: Some(r#"{"GLOBAL_X":"g"}"#.into()),
        ..Default::default()
    });
    let mut req = bash(
        "echo out; echo err >&2; echo $(id -un):$PWD:$HOME:$GLOBAL_X:$E2B_SANDBOX:$E2B_SANDBOX_ID:$E2B_TEMPLATE_ID:$LOCAL; exit 3",
    );
    req.process.envs = BTreeMap::from([("LOCAL".into(), "l".into())]);
    let c = collect(agent.client.start(req, None, None).await.unwrap()).await;
    assert!(c.pid > 0);
    let home = &agent.user.home;
    assert_eq!(
        String::from_utf8(c.stdout).unwrap(),
        format!("out\nburrowtest:{home}:{home}:g:true:sbxtest:tpl:l\n")
    );
    assert_eq!(c.stderr, b"err\n");
    let end = c.end.unwrap();
    assert_eq!(
        (end.exit_code, end.exited, end.status.as_str()),
        (3, true, "exit status 3")
    );
    assert!(c.error.is_none());

    // Per-command env does not leak; explicit user and cwd work; `~` expands.
    let c = collect(
        agent
            .client
            .start(bash("echo x${LOCAL}x $(id -un) $PWD"), Some("root"), None)
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(String::from_utf8(c.stdout).unwrap(), "xx root /root\n");
    let mut req = bash("pwd");
    req.process.cwd = Some("/tmp".into());
    let c = collect(agent.client.start(req, None, None).await.unwrap()).await;
    assert_eq!(c.stdout, b"/tmp\n");

    // Supplementary groups come from /etc/group.
    let c = collect(agent.client.start(bash("id -G"), None, None).await.unwrap()).await;
    assert!(!c.stdout.is_empty());
}

#[tokio::test]
async fn invalid_starts_are_rejected_with_clear_errors() {
    let agent = Agent::start(AgentOptions::default());
    let mut req = bash("pwd");
    req.process.cwd = Some("/does/not/exist".into());
    let err = collect(agent.client.start(req, None, None).await.unwrap())
        .await
        .error
        .unwrap();
    assert_eq!(err.code(), Code::InvalidArgument, "{err}");
    assert!(err.to_string().contains("does not exist"));

    let err = collect(
        agent
            .client
            .start(bash("true"), Some("no-such-user"), None)
            .await
            .unwrap(),
    )
    .await
    .error
    .unwrap();
    assert_eq!(err.code(), Code::Unauthenticated);
    assert!(err.to_string().contains("invalid username: 'no-such-user'"));

    let mut req = bash("true");
    req.process.cmd = "/nonexistent/binary".into();
    let err = collect(agent.client.start(req, None, None).await.unwrap())
        .await
        .error
        .unwrap();
    assert_eq!(err.code(), Code::InvalidArgument);

    let mut req = bash("true");
    req.process.envs = BTreeMap::from([("BAD=NAME".into(), "v".into())]);
    let err = collect(agent.client.start(req, None, None).await.unwrap())
        .await
        .error
        .unwrap();
    assert_eq!(err.code(), Code::InvalidArgument);
}

#[tokio::test]
async fn stdin_input_and_close() {
    let agent = Agent::start(AgentOptions::default());
    let mut req = bash("cat; echo eof");
    req.stdin = None; // unset = stdin open, like E2B
    let mut stream = agent.client.start(req, None, None).await.unwrap();
    let pid = first_event_pid(&mut stream).await;
    let sel = ProcessSelector::Pid(pid);
    agent
        .client
        .send_input(
            sel.clone(),
            ProcessInput::Stdin(Bytes::from_static(b"abc\n")),
        )
        .await
        .unwrap();
    agent.client.close_stdin(sel.clone()).await.unwrap();
    let c = collect(stream).await;
    assert_eq!(c.stdout, b"abc\neof\n");
    assert_eq!(c.end.unwrap().exit_code, 0);

    // stdin disabled → sending input fails with failed_precondition.
    let mut stream = agent
        .client
        .start(bash("sleep 5"), None, None)
        .await
        .unwrap();
    let pid = first_event_pid(&mut stream).await;
    let err = agent
        .client
        .send_input(
            ProcessSelector::Pid(pid),
            ProcessInput::Stdin(Bytes::from_static(b"x")),
        )
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    agent
        .client
        .send_signal(ProcessSelector::Pid(pid), Signal::Sigkill)
        .await
        .unwrap();
}

#[tokio::test]
async fn signals_list_tags_and_late_connect() {
    let agent = Agent::start(AgentOptions::default());
    let mut req = bash("sleep 30");
    req.tag = Some("sleeper".into());
    let mut stream = agent.client.start(req, None, None).await.unwrap();
    let pid = first_event_pid(&mut stream).await;
    let listed = agent.client.list().await.unwrap();
    let info = listed.iter().find(|p| p.pid == pid).expect("listed");
    assert_eq!(info.tag.as_deref(), Some("sleeper"));
    assert_eq!(info.config.args[1], "sleep 30");

    // A second subscriber by tag sees the same end.
    let attached = agent
        .client
        .connect(ProcessSelector::Tag("sleeper".into()), None)
        .await
        .unwrap();
    agent
        .client
        .send_signal(ProcessSelector::Tag("sleeper".into()), Signal::Sigkill)
        .await
        .unwrap();
    let c = collect(stream).await;
    let end = c.end.unwrap();
    assert_eq!(
        (end.exit_code, end.exited, end.status.as_str()),
        (-1, false, "signal: killed")
    );
    let c2 = collect(attached).await;
    assert_eq!(c2.pid, pid);
    assert_eq!(c2.end.unwrap().status, "signal: killed");

    assert!(
        agent
            .client
            .list()
            .await
            .unwrap()
            .iter()
            .all(|p| p.pid != pid)
    );
    // Finished processes keep their end for a late Connect…
    let late = collect(
        agent
            .client
            .connect(ProcessSelector::Pid(pid), None)
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (late.pid, late.end.unwrap().status.as_str()),
        (pid, "signal: killed")
    );
    // …but can no longer be signalled.
    let err = agent
        .client
        .send_signal(ProcessSelector::Pid(pid), Signal::Sigterm)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    let err = collect(
        agent
            .client
            .connect(ProcessSelector::Pid(999_999_999), None)
            .await
            .unwrap(),
    )
    .await
    .error
    .unwrap();
    assert_eq!(err.code(), Code::NotFound);

    // SIGTERM reports "terminated".
    let mut stream = agent
        .client
        .start(bash("sleep 30"), None, None)
        .await
        .unwrap();
    let pid = first_event_pid(&mut stream).await;
    agent
        .client
        .send_signal(ProcessSelector::Pid(pid), Signal::Sigterm)
        .await
        .unwrap();
    assert_eq!(
        collect(stream).await.end.unwrap().status,
        "signal: terminated"
    );
}

#[tokio::test]
async fn large_output_arrives_complete_and_in_order() {
    let agent = Agent::start(AgentOptions::default());
    let c = collect(
        agent
            .client
            .start(bash("seq 1 300000"), None, None)
            .await
            .unwrap(),
    )
    .await;
    let expected: String = (1..=300000).map(|i| format!("{i}\n")).collect();
    assert_eq!(c.stdout.len(), expected.len());
    assert!(c.stdout == expected.as_bytes());
    assert_eq!(c.end.unwrap().exit_code, 0);
}

#[tokio::test]
async fn timeout_kills_the_process_and_ends_with_deadline_exceeded() {
    let agent = Agent::start(AgentOptions::default());
    let marker = format!("/tmp/burrow-timeout-{}", std::process::id());
    let started = Instant::now();
    let c = collect(
        agent
            .client
            .start(
                bash(&format!("sleep 3; touch {marker}")),
                None,
                Some(Duration::from_millis(500)),
            )
            .await
            .unwrap(),
    )
    .await;
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!(c.error.unwrap().code(), Code::DeadlineExceeded);
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        !std::path::Path::new(&marker).exists(),
        "process survived its deadline"
    );
    assert!(agent.client.list().await.unwrap().is_empty());
}

#[tokio::test]
async fn pty_input_output_and_resize() {
    let agent = Agent::start(AgentOptions::default());
    let req = StartRequest {
        process: ProcessConfig {
            cmd: "/bin/bash".into(),
            args: vec!["-i".into()],
            envs: BTreeMap::from([("TERM".into(), "xterm".into())]),
            cwd: None,
        },
        pty: Some(Pty {
            size: Some(PtySize { cols: 80, rows: 24 }),
        }),
        ..Default::default()
    };
    let mut stream = agent.client.start(req, None, None).await.unwrap();
    let pid = first_event_pid(&mut stream).await;
    let sel = ProcessSelector::Pid(pid);
    agent
        .client
        .send_input(
            sel.clone(),
            ProcessInput::Pty(Bytes::from_static(b"tty; stty size\n")),
        )
        .await
        .unwrap();
    // Wait until the first size is printed before resizing.
    let mut before = Vec::new();
    while !String::from_utf8_lossy(&before).contains("24 80") {
        match tokio::time::timeout(Duration::from_secs(10), stream.next()).await {
            Ok(Some(Ok(ProcessEvent::Data(DataEvent::Pty(b))))) => before.extend_from_slice(&b),
            Ok(Some(Ok(_))) => {}
            other => panic!(
                "PTY output ended early: {other:?} after {}",
                String::from_utf8_lossy(&before)
            ),
        }
    }
    assert!(String::from_utf8_lossy(&before).contains("/dev/pts/"));
    agent.client.resize_pty(sel.clone(), 123, 45).await.unwrap();
    agent
        .client
        .send_input(
            sel.clone(),
            ProcessInput::Pty(Bytes::from_static(b"stty size; exit 4\n")),
        )
        .await
        .unwrap();
    let c = collect(stream).await;
    let text = String::from_utf8_lossy(&c.pty);
    assert!(text.contains("45 123"), "{text}");
    assert_eq!(c.end.unwrap().exit_code, 4);
    assert!(c.stdout.is_empty());

    // Resizing a non-PTY process is a precondition error.
    let mut stream = agent
        .client
        .start(bash("sleep 5"), None, None)
        .await
        .unwrap();
    let pid = first_event_pid(&mut stream).await;
    let err = agent
        .client
        .resize_pty(ProcessSelector::Pid(pid), 10, 10)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    agent
        .client
        .send_signal(ProcessSelector::Pid(pid), Signal::Sigkill)
        .await
        .unwrap();
}

#[tokio::test]
async fn background_children_do_not_hold_the_stream_open_and_are_reaped() {
    let agent = Agent::start(AgentOptions::default());
    let started = Instant::now();
    let c = collect(
        agent
            .client
            .start(bash("sleep 30 & echo started"), None, None)
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(c.stdout, b"started\n");
    assert_eq!(c.end.unwrap().exit_code, 0);
    assert!(started.elapsed() < Duration::from_secs(5));
    // No zombies left among the agent's children.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let children = std::fs::read_to_string(format!(
        "/proc/{}/task/{}/children",
        agent.pid(),
        agent.pid()
    ))
    .unwrap_or_default();
    for child in children.split_whitespace() {
        let stat = std::fs::read_to_string(format!("/proc/{child}/stat")).unwrap_or_default();
        assert!(!stat.contains(") Z "), "zombie child {child}: {stat}");
    }
}
