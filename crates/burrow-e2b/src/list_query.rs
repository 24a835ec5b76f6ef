//! Query strings of `GET /sandboxes` and `GET /v2/sandboxes`.
//!
//! `metadata` is one parameter whose value is itself a URL-encoded `k=v&k2=v2` string; `state` is
//! comma-separated (`state=running,paused`) but repeated parameters are accepted too.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};

use crate::backend::{ListFilter, Order, SandboxState};
use crate::error::ApiError;

pub const DEFAULT_LIMIT: u32 = 100;
pub const MAX_LIMIT: u32 = 100;

/// Which list endpoint is being served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListVersion {
    /// `GET /sandboxes`: running sandboxes only, no pagination.
    V1,
    /// `GET /v2/sandboxes`: running and paused unless `state` says otherwise.
    V2,
}

/// Parses a raw query string into a [`ListFilter`].
pub fn parse_list_query(raw: Option<&str>, version: ListVersion) -> Result<ListFilter, ApiError> {
    let mut filter = ListFilter {
        states: Vec::new(),
        metadata: BTreeMap::new(),
        template: None,
        started_after: None,
        order: Order::Desc,
        limit: DEFAULT_LIMIT,
        cursor: None,
    };
    for (name, value) in url::form_urlencoded::parse(raw.unwrap_or("").as_bytes()) {
        match name.as_ref() {
            "metadata" => parse_metadata(&value, &mut filter.metadata)?,
            "state" if version == ListVersion::V2 => {
                for state in value.split(',').filter(|s| !s.is_empty()) {
                    let state = parse_state(state)?;
                    if !filter.states.contains(&state) {
                        filter.states.push(state);
                    }
                }
            }
            "limit" if version == ListVersion::V2 => {
                filter.limit = value
                    .parse::<u32>()
                    .ok()
                    .filter(|l| (1..=MAX_LIMIT).contains(l))
                    .ok_or_else(|| {
                        ApiError::bad_request(format!(
                            "invalid limit {value:?}: expected an integer from 1 to {MAX_LIMIT}"
                        ))
                    })?;
            }
            "nextToken" if version == ListVersion::V2 && !value.is_empty() => {
                filter.cursor = Some(value.into_owned());
            }
            "order" if version == ListVersion::V2 => {
                filter.order = match value.as_ref() {
                    "asc" => Order::Asc,
                    "desc" => Order::Desc,
                    other => {
                        return Err(ApiError::bad_request(format!(
                            "invalid order {other:?}: expected \"asc\" or \"desc\""
                        )));
                    }
                };
            }
            "startedAfter" if version == ListVersion::V2 => {
                let at = DateTime::parse_from_rfc3339(&value).map_err(|e| {
                    ApiError::bad_request(format!(
                        "invalid startedAfter {value:?}: expected an RFC 3339 time ({e})"
                    ))
                })?;
                filter.started_after = Some(at.with_timezone(&Utc));
            }
            "template" if version == ListVersion::V2 && !value.is_empty() => {
                filter.template = Some(value.into_owned());
            }
            // Unknown parameters are ignored, as E2B's server does, so newer SDKs keep working.
            _ => {}
        }
    }
    if version == ListVersion::V1 {
        filter.states = vec![SandboxState::Running];
        filter.limit = MAX_LIMIT;
    } else if filter.states.is_empty() {
        filter.states = vec![SandboxState::Running, SandboxState::Paused];
    }
    Ok(filter)
}

fn parse_state(state: &str) -> Result<SandboxState, ApiError> {
    match state {
        "running" => Ok(SandboxState::Running),
        "paused" => Ok(SandboxState::Paused),
        other => Err(ApiError::bad_request(format!(
            "invalid state {other:?}: expected \"running\" or \"paused\""
        ))),
    }
}

fn parse_metadata(encoded: &str, into: &mut BTreeMap<String, String>) -> Result<(), ApiError> {
    for (key, value) in url::form_urlencoded::parse(encoded.as_bytes()) {
        if key.is_empty() {
            return Err(ApiError::bad_request(format!(
                "invalid metadata filter {encoded:?}: expected k=v pairs joined by '&'"
            )));
        }
        into.insert(key.into_owned(), value.into_owned());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v2_defaults_to_running_and_paused() {
        let f = parse_list_query(None, ListVersion::V2).unwrap();
        assert_eq!(f.states, vec![SandboxState::Running, SandboxState::Paused]);
        assert_eq!(f.limit, DEFAULT_LIMIT);
        assert_eq!(f.order, Order::Desc);
    }

    #[test]
    fn v2_parses_what_the_python_sdk_sends() {
        let f = parse_list_query(
            Some("metadata=a%3Db%26c%3Dd%2520e&state=running%2Cpaused&limit=10&nextToken=abc"),
            ListVersion::V2,
        )
        .unwrap();
        assert_eq!(f.metadata.get("a").map(String::as_str), Some("b"));
        assert_eq!(f.metadata.get("c").map(String::as_str), Some("d e"));
        assert_eq!(f.states, vec![SandboxState::Running, SandboxState::Paused]);
        assert_eq!(f.limit, 10);
        assert_eq!(f.cursor.as_deref(), Some("abc"));
    }

    #[test]
    fn repeated_state_params_are_accepted() {
        let f = parse_list_query(Some("state=paused&state=paused"), ListVersion::V2).unwrap();
        assert_eq!(f.states, vec![SandboxState::Paused]);
    }

    #[test]
    fn bad_values_are_rejected_with_a_reason() {
        for q in [
            "state=sleeping",
            "limit=0",
            "limit=101",
            "limit=x",
            "order=up",
            "startedAfter=yesterday",
        ] {
            let err = parse_list_query(Some(q), ListVersion::V2).unwrap_err();
            assert_eq!(err.status, 400, "{q}");
        }
    }

    #[test]
    fn v1_lists_running_only_and_ignores_v2_params() {
        let f = parse_list_query(Some("state=paused&limit=abc"), ListVersion::V1).unwrap();
        assert_eq!(f.states, vec![SandboxState::Running]);
    }
}
