//! Helpers shared by the SDK-driving tests: parse driver output, compare wire requests.

use std::collections::BTreeMap;

use serde_json::Value;

use super::WireRequest;

/// Parses the drivers' JSON lines into step name → line.
pub fn parse_steps(stdout: &str) -> BTreeMap<String, Value> {
    stdout
        .lines()
        .map(|line| {
            let v: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
            (v["step"].as_str().unwrap().to_string(), v)
        })
        .collect()
}

/// The sandbox id the driver created.
pub fn steps_id(steps: &BTreeMap<String, Value>) -> String {
    steps["ids"]["value"]["sandbox_id"]
        .as_str()
        .expect("create must succeed")
        .to_string()
}

pub fn ok(steps: &BTreeMap<String, Value>, step: &str) -> Value {
    let s = steps
        .get(step)
        .unwrap_or_else(|| panic!("step {step} missing"));
    assert_eq!(s["ok"], true, "step {step} failed: {s}");
    s["value"].clone()
}

pub fn failed(steps: &BTreeMap<String, Value>, step: &str) -> Value {
    let s = steps
        .get(step)
        .unwrap_or_else(|| panic!("step {step} missing"));
    assert_eq!(s["ok"], false, "step {step} should fail: {s}");
    s.clone()
}

/// The requests as `"METHOD /path?query body"` with the sandbox id replaced by `{id}`.
pub fn normalized(wire: &[WireRequest], id: &str) -> Vec<String> {
    wire.iter()
        .map(|r| {
            let line = format!("{} {} {}", r.method, r.target, r.body);
            line.replace(id, "{id}").trim_end().to_string()
        })
        .collect()
}

pub fn assert_contains_in_order(actual: &[String], expected: &[&str]) {
    let mut rest = actual.iter();
    for want in expected {
        assert!(
            rest.any(|line| line == want || line.starts_with(&format!("{want} "))),
            "expected request {want:?} (in this order) among:\n{}",
            actual.join("\n")
        );
    }
}

pub fn assert_every_request_authenticated(wire: &[WireRequest], key_prefix: &str) {
    for r in wire {
        let key = r.header("x-api-key").unwrap_or("");
        assert!(
            key.starts_with(key_prefix),
            "{} {} without API key",
            r.method,
            r.target
        );
    }
}

pub fn create_body(wire: &[WireRequest], path: &str) -> Value {
    let create = wire
        .iter()
        .find(|r| r.method == "POST" && r.target == path)
        .unwrap_or_else(|| panic!("no POST {path}"));
    serde_json::from_str(&create.body).unwrap()
}
