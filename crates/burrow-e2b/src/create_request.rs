//! Validation and defaults for `POST /sandboxes` (v1) and `POST /v2/sandboxes` (v2).

use std::collections::BTreeMap;
use std::time::Duration;

use axum::http::HeaderMap;

use crate::backend::{CreateSandbox, OnTimeout};
use crate::error::ApiError;
use crate::network_config;
use crate::wire::NewSandbox;

/// v1 creates without a timeout live 15 s (E2B's `NewSandbox` default).
pub const V1_DEFAULT_TIMEOUT_SECS: i64 = 15;
/// v2 default (`NewSandboxV2`).
pub const V2_DEFAULT_TIMEOUT_SECS: i64 = 300;
/// Upper bound checked here only to keep time arithmetic sane; the backend enforces the real
/// (operator-configured) maximum.
pub const MAX_TIMEOUT_SECS: i64 = i32::MAX as i64;

const IDEMPOTENCY_KEY_HEADER: &str = "idempotency-key";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CreateVersion {
    V1,
    V2,
}

/// Turns an E2B create request into a burrow [`CreateSandbox`], or a 400 naming the bad field, or
/// a 501 naming a field burrow does not implement yet.
pub fn to_create_sandbox(
    body: NewSandbox,
    headers: &HeaderMap,
    version: CreateVersion,
) -> Result<CreateSandbox, ApiError> {
    let template = validate_template(&body.template_id)?;
    let default_timeout = match version {
        CreateVersion::V1 => V1_DEFAULT_TIMEOUT_SECS,
        CreateVersion::V2 => V2_DEFAULT_TIMEOUT_SECS,
    };
    let timeout = body.timeout.unwrap_or(default_timeout);
    if !(1..=MAX_TIMEOUT_SECS).contains(&timeout) {
        return Err(ApiError::bad_request(format!(
            "invalid timeout {timeout}: expected a number of seconds from 1 to {MAX_TIMEOUT_SECS}"
        )));
    }
    let auto_pause = body.auto_pause.unwrap_or(false);
    let keep_memory = body.auto_pause_memory.unwrap_or(true);
    let auto_resume = body.auto_resume.is_some_and(|r| r.enabled);
    if auto_resume && !auto_pause {
        return Err(ApiError::bad_request(
            "autoResume requires autoPause: only a paused sandbox can be resumed",
        ));
    }
    if auto_resume && !keep_memory {
        return Err(ApiError::bad_request(
            "autoResume cannot be combined with autoPauseMemory=false (filesystem-only pause)",
        ));
    }
    let network = network_config::check(body.network.as_ref())?;
    let metadata = body.metadata.unwrap_or_default();
    validate_metadata(&metadata)?;
    let env_vars = body.env_vars.unwrap_or_default();
    validate_env_vars(&env_vars)?;
    // Valid input asking for what burrow does not do yet: 501, checked after every 400.
    if let Some(err) = network.unsupported {
        return Err(err);
    }
    reject_unsupported("mcp", body.mcp.as_ref())?;
    reject_unsupported("iam", body.iam.as_ref())?;
    if body.volume_mounts.as_ref().is_some_and(|v| !v.is_empty()) {
        return Err(ApiError::not_implemented(
            "volumeMounts are not supported by burrow yet (burrow has no E2B volumes)",
        ));
    }
    Ok(CreateSandbox {
        template,
        // Checked above: 1..=i32::MAX.
        timeout: Duration::from_secs(timeout.unsigned_abs()),
        on_timeout: if auto_pause {
            OnTimeout::Pause { keep_memory }
        } else {
            OnTimeout::Kill
        },
        auto_resume,
        metadata,
        env_vars,
        allow_internet_access: body.allow_internet_access,
        public_traffic: network.public_traffic,
        idempotency_key: idempotency_key(headers)?,
    })
}

fn validate_template(template: &str) -> Result<String, ApiError> {
    let ok = !template.is_empty()
        && template.len() <= 255
        && template.chars().all(|c| c.is_ascii_graphic());
    if ok {
        Ok(template.to_owned())
    } else {
        Err(ApiError::bad_request(format!(
            "invalid templateID {template:?}: expected 1 to 255 printable ASCII characters"
        )))
    }
}

fn reject_unsupported(field: &str, value: Option<&serde_json::Value>) -> Result<(), ApiError> {
    match value {
        None | Some(serde_json::Value::Null) => Ok(()),
        Some(serde_json::Value::Object(map)) if map.is_empty() => Ok(()),
        Some(_) => Err(ApiError::not_implemented(format!(
            "{field} is not supported by burrow yet"
        ))),
    }
}

fn validate_metadata(metadata: &BTreeMap<String, String>) -> Result<(), ApiError> {
    for (key, value) in metadata {
        if key.is_empty() || key.contains('\0') || value.contains('\0') {
            return Err(ApiError::bad_request(format!(
                "invalid metadata entry {key:?}: keys must be non-empty and no NUL characters are allowed"
            )));
        }
    }
    Ok(())
}

fn validate_env_vars(env_vars: &BTreeMap<String, String>) -> Result<(), ApiError> {
    for (name, value) in env_vars {
        if name.is_empty() || name.contains(['=', '\0']) || value.contains('\0') {
            return Err(ApiError::bad_request(format!(
                "invalid environment variable {name:?}: names must be non-empty without '=' or NUL, values without NUL"
            )));
        }
    }
    Ok(())
}

/// `Idempotency-Key`: 1 to 255 characters `[a-z0-9-]`, as the SDK documents.
fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(value) = headers.get(IDEMPOTENCY_KEY_HEADER) else {
        return Ok(None);
    };
    let key = value.to_str().unwrap_or("");
    let ok = !key.is_empty()
        && key.len() <= 255
        && key
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if ok {
        Ok(Some(key.to_owned()))
    } else {
        Err(ApiError::bad_request(
            "invalid Idempotency-Key header: expected 1 to 255 characters [a-z0-9-]",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> NewSandbox {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn defaults_differ_between_v1_and_v2() {
        let headers = HeaderMap::new();
        let v1 = to_create_sandbox(
            parse(r#"{"templateID":"base"}"#),
            &headers,
            CreateVersion::V1,
        )
        .unwrap();
        let v2 = to_create_sandbox(
            parse(r#"{"templateID":"base"}"#),
            &headers,
            CreateVersion::V2,
        )
        .unwrap();
        assert_eq!(v1.timeout, Duration::from_secs(15));
        assert_eq!(v2.timeout, Duration::from_secs(300));
        assert_eq!(v2.on_timeout, OnTimeout::Kill);
        assert!(!v2.auto_resume);
    }

    #[test]
    fn lifecycle_flags_map_to_on_timeout() {
        let c = to_create_sandbox(
            parse(r#"{"templateID":"base","autoPause":true,"autoResume":{"enabled":true}}"#),
            &HeaderMap::new(),
            CreateVersion::V2,
        )
        .unwrap();
        assert_eq!(c.on_timeout, OnTimeout::Pause { keep_memory: true });
        assert!(c.auto_resume);
    }

    #[test]
    fn contradictions_and_bad_fields_are_400() {
        for body in [
            r#"{"templateID":""}"#,
            r#"{"templateID":"a b"}"#,
            r#"{"templateID":"base","timeout":0}"#,
            r#"{"templateID":"base","timeout":-5}"#,
            r#"{"templateID":"base","autoResume":{"enabled":true}}"#,
            r#"{"templateID":"base","autoPause":true,"autoPauseMemory":false,"autoResume":{"enabled":true}}"#,
            r#"{"templateID":"base","network":{"denyOut":["example.com"]}}"#,
            r#"{"templateID":"base","envVars":{"A=B":"x"}}"#,
            r#"{"templateID":"base","metadata":{"":"x"}}"#,
        ] {
            let err =
                to_create_sandbox(parse(body), &HeaderMap::new(), CreateVersion::V2).unwrap_err();
            assert_eq!(err.status, 400, "{body}");
        }
    }

    #[test]
    fn idempotency_key_is_validated() {
        let mut headers = HeaderMap::new();
        headers.insert("idempotency-key", "retry-1".parse().unwrap());
        let c = to_create_sandbox(
            parse(r#"{"templateID":"base"}"#),
            &headers,
            CreateVersion::V2,
        )
        .unwrap();
        assert_eq!(c.idempotency_key.as_deref(), Some("retry-1"));
        headers.insert("idempotency-key", "Not Valid".parse().unwrap());
        assert!(
            to_create_sandbox(
                parse(r#"{"templateID":"base"}"#),
                &headers,
                CreateVersion::V2
            )
            .is_err()
        );
    }
}

#[cfg(test)]
#[path = "prop_tests.rs"]
mod prop_tests;
