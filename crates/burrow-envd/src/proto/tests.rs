use super::filesystem::*;
use super::process::*;
use bytes::Bytes;
use serde_json::json;

#[test]
fn start_request_matches_sdk_wire_shape() {
    let wire = r#"{"process":{"cmd":"/bin/bash","args":["-l","-c","echo hello"],"envs":{"FOO":"bar"},"cwd":"/tmp"},"stdin":false}"#;
    let req: StartRequest = serde_json::from_str(wire).unwrap();
    assert_eq!(req.process.cmd, "/bin/bash");
    assert_eq!(req.process.envs["FOO"], "bar");
    assert_eq!(req.stdin, Some(false));
    assert_eq!(serde_json::to_string(&req).unwrap(), wire);
}

#[test]
fn events_use_oneof_objects_and_base64() {
    let data = ProcessEventResponse {
        event: ProcessEvent::Data(DataEvent::Stdout(Bytes::from_static(b"hello\n"))),
    };
    assert_eq!(
        serde_json::to_value(&data).unwrap(),
        json!({"event":{"data":{"stdout":"aGVsbG8K"}}})
    );
    let end: ProcessEventResponse =
        serde_json::from_str(r#"{"event":{"end":{"exited":true,"status":"exit status 0"}}}"#)
            .unwrap();
    assert_eq!(
        end.event,
        ProcessEvent::End(EndEvent {
            exit_code: 0,
            exited: true,
            status: "exit status 0".into(),
            error: None
        })
    );
    let snake: EndEvent = serde_json::from_str(r#"{"exit_code":"3"}"#).unwrap();
    assert_eq!(snake.exit_code, 3);
}

#[test]
fn selectors_signals_and_inputs() {
    let req: SendSignalRequest =
        serde_json::from_str(r#"{"process":{"pid":42},"signal":"SIGNAL_SIGKILL"}"#).unwrap();
    assert_eq!(req.process, Some(ProcessSelector::Pid(42)));
    assert_eq!(req.signal, Signal::Sigkill);
    let by_number: SendSignalRequest =
        serde_json::from_str(r#"{"process":{"tag":"t"},"signal":15}"#).unwrap();
    assert_eq!(by_number.signal, Signal::Sigterm);
    assert!(serde_json::from_str::<SendSignalRequest>(r#"{"signal":"SIGNAL_BOGUS"}"#).is_err());
    let input: SendInputRequest =
        serde_json::from_str(r#"{"process":{"pid":"7"},"input":{"stdin":"aGk="}}"#).unwrap();
    assert_eq!(
        input.input,
        Some(ProcessInput::Stdin(Bytes::from_static(b"hi")))
    );
    assert!(serde_json::from_str::<SendInputRequest>(r#"{"input":{"stdin":"***"}}"#).is_err());
}

#[test]
fn entry_info_int64_as_string() {
    let entry = EntryInfo {
        name: "a.txt".into(),
        file_type: FileType::File,
        path: "/home/user/a.txt".into(),
        size: 5,
        mode: 0o644,
        permissions: "-rw-r--r--".into(),
        owner: "user".into(),
        group: "user".into(),
        modified_time: Some("2026-01-01T00:00:00Z".into()),
        symlink_target: None,
        metadata: Default::default(),
        is_symlink: false,
    };
    let value = serde_json::to_value(&entry).unwrap();
    assert_eq!(value["size"], json!("5"));
    assert_eq!(value["type"], json!("FILE_TYPE_FILE"));
    assert_eq!(value["modifiedTime"], json!("2026-01-01T00:00:00Z"));
    let back: EntryInfo =
        serde_json::from_value(json!({"size": 5, "type": 1, "symlink_target": "x"})).unwrap();
    assert_eq!(back.size, 5);
    assert_eq!(back.file_type, FileType::File);
    assert_eq!(back.symlink_target.as_deref(), Some("x"));
}

#[test]
fn watcher_messages_accept_snake_case() {
    let req: CreateWatcherRequest =
        serde_json::from_str(r#"{"path":"/home/user","recursive":true,"include_entry":true}"#)
            .unwrap();
    assert!(req.recursive && req.include_entry);
    let id: GetWatcherEventsRequest = serde_json::from_str(r#"{"watcher_id":"w1"}"#).unwrap();
    assert_eq!(id.watcher_id, "w1");
    let resp = WatchDirResponse::Start(Empty {});
    assert_eq!(serde_json::to_string(&resp).unwrap(), r#"{"start":{}}"#);
    let input: StreamInputRequest =
        serde_json::from_str(r#"{"start":{"process":{"pid":3}}}"#).unwrap();
    assert_eq!(
        input,
        StreamInputRequest::Start(StreamInputStart {
            process: Some(ProcessSelector::Pid(3))
        })
    );
}
