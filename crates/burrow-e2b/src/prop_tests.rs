//! Property tests of the E2B API's untrusted-input parsers: the create body
//! (`create_request::to_create_sandbox`, arbitrary JSON and headers) and the list query string
//! (`list_query::parse_list_query`).
//!
//! Bounded: 256 cases per property (`PROPTEST_CASES` overrides, e.g. 10000 for a longer run).

use axum::http::{HeaderMap, HeaderValue};
use proptest::prelude::*;
use serde_json::Value;

use crate::backend::{OnTimeout, SandboxState};
use crate::create_request::{CreateVersion, MAX_TIMEOUT_SECS, to_create_sandbox};
use crate::list_query::{ListVersion, MAX_LIMIT, parse_list_query};
use crate::wire::NewSandbox;

fn arbitrary_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        (-5i64..400).prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        ".{0,10}".prop_map(Value::from),
        "[a-z0-9-]{1,10}".prop_map(Value::from),
    ];
    let value = leaf.prop_recursive(3, 20, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..3).prop_map(Value::from),
            prop::collection::btree_map(
                prop_oneof![
                    prop::sample::select(vec!["enabled", "A", "", "a=b", "x\u{0}"])
                        .prop_map(String::from),
                    ".{0,6}".prop_map(String::from),
                ],
                inner,
                0..4
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    });
    let key = prop_oneof![
        4 => prop::sample::select(vec![
            "templateID", "timeout", "autoPause", "autoPauseMemory", "autoResume",
            "allow_internet_access", "metadata", "envVars", "network", "mcp", "iam",
            "volumeMounts", "secure",
        ])
        .prop_map(String::from),
        1 => ".{0,8}".prop_map(String::from),
    ];
    prop::collection::btree_map(key, value, 0..8)
        .prop_map(|m| Value::Object(m.into_iter().collect()))
}

proptest! {
    #![proptest_config(ProptestConfig {
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    /// Arbitrary JSON bodies and Idempotency-Key headers: never a panic, a refusal is a 400 with
    /// a message, and an accepted create holds every invariant the backend relies on.
    #[test]
    fn create_bodies_never_panic_and_accepted_ones_hold_invariants(
        json in arbitrary_json(),
        key in prop::option::of(prop_oneof!["[a-z0-9-]{0,12}", "[ -~]{0,12}"]),
        v2 in any::<bool>(),
    ) {
        let Ok(body) = serde_json::from_value::<NewSandbox>(json) else {
            return Ok(());
        };
        let mut headers = HeaderMap::new();
        if let Some(key) = &key {
            headers.insert("idempotency-key", HeaderValue::from_str(key).unwrap());
        }
        let version = if v2 { CreateVersion::V2 } else { CreateVersion::V1 };
        // Valid E2B settings burrow does not implement yet are a 501, only in these fields.
        let present = |v: &Option<serde_json::Value>| v.as_ref().is_some_and(|v| !v.is_null());
        let asks_unimplemented = present(&body.network)
            || present(&body.mcp)
            || present(&body.iam)
            || body.volume_mounts.as_ref().is_some_and(|v| !v.is_empty());
        match to_create_sandbox(body, &headers, version) {
            Err(e) => {
                prop_assert!(
                    e.status == 400 || (e.status == 501 && asks_unimplemented),
                    "{} {}", e.status, e.message
                );
                prop_assert!(!e.message.is_empty());
            }
            Ok(create) => {
                prop_assert!(!create.template.is_empty() && create.template.len() <= 255);
                prop_assert!(create.template.bytes().all(|b| b.is_ascii_graphic()));
                let secs = create.timeout.as_secs();
                prop_assert!(secs >= 1 && secs <= MAX_TIMEOUT_SECS as u64);
                if create.auto_resume {
                    prop_assert_eq!(create.on_timeout, OnTimeout::Pause { keep_memory: true });
                }
                for (name, value) in &create.env_vars {
                    prop_assert!(!name.is_empty() && !name.contains(['=', '\0']));
                    prop_assert!(!value.contains('\0'));
                }
                for (k, v) in &create.metadata {
                    prop_assert!(!k.is_empty() && !k.contains('\0') && !v.contains('\0'));
                }
                if let Some(key) = &create.idempotency_key {
                    prop_assert!(!key.is_empty() && key.len() <= 255);
                    prop_assert!(key.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'));
                }
            }
        }
    }

    /// Arbitrary query strings: never a panic; an accepted filter always lists at least one
    /// state, no state twice, a limit in 1..=100, and v1 lists running sandboxes only.
    #[test]
    fn list_queries_never_panic_and_filters_are_sane(
        query in prop_oneof![
            "[ -~]{0,60}".prop_map(String::from),
            prop::collection::vec(
                (
                    prop::sample::select(vec!["state", "limit", "metadata", "order", "startedAfter", "nextToken", "template", "x"]),
                    prop_oneof!["[a-z0-9,=&%]{0,16}", "[ -~]{0,16}"],
                ),
                0..6,
            )
            .prop_map(|pairs| {
                url::form_urlencoded::Serializer::new(String::new()).extend_pairs(pairs).finish()
            }),
        ],
        v2 in any::<bool>(),
    ) {
        let version = if v2 { ListVersion::V2 } else { ListVersion::V1 };
        match parse_list_query(Some(&query), version) {
            Err(e) => prop_assert_eq!(e.status, 400),
            Ok(filter) => {
                prop_assert!(!filter.states.is_empty());
                let mut states = filter.states.clone();
                states.dedup();
                prop_assert_eq!(states.len(), filter.states.len());
                prop_assert!((1..=MAX_LIMIT).contains(&filter.limit));
                prop_assert!(filter.metadata.keys().all(|k| !k.is_empty()));
                if !v2 {
                    prop_assert_eq!(&filter.states, &vec![SandboxState::Running]);
                }
            }
        }
    }
}
