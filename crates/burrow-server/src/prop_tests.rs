//! Property tests of the daemon's untrusted-input parsers that are private to this crate: the
//! port proxy's host router (`proxy::route`) and the request validators (`validate`,
//! `retention::validate`) over arbitrary JSON bodies.
//!
//! Bounded: 256 cases per property (`PROPTEST_CASES` overrides, e.g. 10000 for a longer run).

use std::collections::BTreeMap;

use axum::http::{HeaderMap, HeaderName, HeaderValue, Uri};
use burrow_types::{CreateSandboxRequest, ExecRequest, TemplateBuildRequest, is_valid_sandbox_id};
use proptest::prelude::*;
use serde_json::Value;

use crate::proxy::{
    HEADER_SANDBOX_ID, HEADER_SANDBOX_PORT, ProxyTarget, request_host, route, signed_files_url,
};
use burrow_core::validate;

const DOMAIN: &str = "burrow.test";

fn headers(pairs: &[(&str, &[u8])]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in pairs {
        if let Ok(value) = HeaderValue::from_bytes(value) {
            map.insert(HeaderName::from_bytes(name.as_bytes()).unwrap(), value);
        }
    }
    map
}

/// Host header values: random bytes, random text, and near-misses of `{port}-{id}.{domain}`.
fn host_value() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..80),
        "[ -~]{0,80}".prop_map(String::into_bytes),
        (
            "[0-9+-]{0,7}",
            "[-a-zA-Z0-9_.]{0,25}",
            prop::sample::select(vec![
                ".burrow.test",
                ".BURROW.TEST.",
                ".burrow.test:443",
                ".x.burrow.test",
                "burrow.test",
                ".burrow.tes",
                ""
            ]),
        )
            .prop_map(|(port, id, suffix)| format!("{port}-{id}{suffix}").into_bytes()),
        "\\[[0-9a-f:]{0,12}\\]?(:[0-9]{0,6})?".prop_map(String::into_bytes),
    ]
}

fn arbitrary_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        ".{0,12}".prop_map(Value::from),
        "[A-Za-z_][A-Za-z0-9_]{0,6}".prop_map(Value::from),
    ];
    let value = leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
            prop::collection::btree_map(".{0,8}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    });
    // Objects keyed mostly by the request types' own field names, so deserialisation gets past
    // the first key and the validators see the values.
    let key = prop_oneof![
        4 => prop::sample::select(vec![
            "template", "cpus", "memory_mb", "disk_mb", "env", "labels", "idle_timeout",
            "expiration", "zdr", "ttl_idle", "ttl_max_age", "expires_at", "command", "args",
            "cwd", "user", "timeout", "name", "from", "type", "parent", "steps", "path",
        ])
        .prop_map(String::from),
        1 => ".{0,8}".prop_map(String::from),
    ];
    prop_oneof![
        3 => prop::collection::btree_map(key, value.clone(), 0..6)
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        1 => value,
    ]
}

fn string_map() -> impl Strategy<Value = BTreeMap<String, String>> {
    prop::collection::btree_map(
        prop_oneof![
            "[A-Za-z_][A-Za-z0-9_]{0,10}".prop_map(String::from),
            "[a-z0-9._/-]{0,70}".prop_map(String::from),
            ".{0,10}".prop_map(String::from)
        ],
        ".{0,20}",
        0..6,
    )
}

proptest! {
    #![proptest_config(ProptestConfig {
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    /// Any Host (or h2 authority): never a panic; anything routed to a sandbox has a port in
    /// 1..=65535, a valid sandbox id, and a host that is exactly `{port}-{id}.{domain}` (case,
    /// a trailing dot and a `:port` aside).
    #[test]
    fn routed_hosts_are_well_formed(host in host_value(), authority in "[ -~]{0,40}") {
        let uri = authority.parse::<Uri>().unwrap_or_else(|_| Uri::from_static("/"));
        let with_host = headers(&[("host", &host)]);
        for (headers, uri) in [(&with_host, &Uri::from_static("/")), (&HeaderMap::new(), &uri)] {
            let routed = route(headers, uri, DOMAIN);
            // Without E2B headers, host routing never errors: it routes or passes on.
            let Ok(routed) = routed else {
                return Err(TestCaseError::fail("host routing errored"));
            };
            if let Some(ProxyTarget { sandbox_id, port }) = routed {
                prop_assert!(port >= 1);
                prop_assert!(is_valid_sandbox_id(&sandbox_id), "{sandbox_id:?}");
                let host = request_host(headers, uri).unwrap();
                let label = host.strip_suffix(&format!(".{DOMAIN}")).expect("domain suffix");
                let (port_text, id) = label.split_once('-').unwrap();
                prop_assert_eq!(id, sandbox_id.as_str());
                prop_assert_eq!(port_text.trim().parse::<u16>().ok(), Some(port));
            }
        }
    }

    /// Signed `/files` URLs without a sandbox id (E2B URL mode): any query never panics; a URL
    /// built from arbitrary parts on a shared host is read back exactly, with the operation of
    /// its method; other methods, paths and hosts are not signed-file requests.
    #[test]
    fn signed_file_urls_parse_exactly_what_was_signed(
        path in "\\PC{0,30}",
        username in prop::option::of("[a-z_][a-z0-9_-]{0,12}"),
        signature in "[ -~]{1,60}",
        expiration in prop::option::of(any::<i64>()),
        junk in "[ -~]{0,60}",
        post in any::<bool>(),
    ) {
        let mut query = url::form_urlencoded::Serializer::new(String::new());
        query.append_pair("path", &path);
        if let Some(user) = &username {
            query.append_pair("username", user);
        }
        query.append_pair("signature", &signature);
        if let Some(exp) = expiration {
            query.append_pair("signature_expiration", &exp.to_string());
        }
        let query = query.finish();
        let request = |method: &str, host: &str, target: &str| {
            axum::http::Request::builder()
                .method(method)
                .uri(target)
                .header("host", host)
                .body(axum::body::Body::empty())
                .unwrap()
        };
        let method = if post { "POST" } else { "GET" };
        let parsed = signed_files_url(DOMAIN, &request(method, "127.0.0.1:7420", &format!("/files?{query}")))
            .expect("a signed files URL on a shared host");
        prop_assert_eq!(parsed.operation, if post { "write" } else { "read" });
        prop_assert_eq!(&parsed.path, &path);
        prop_assert_eq!(parsed.username, username.unwrap_or_default());
        prop_assert_eq!(&parsed.signature, &signature);
        prop_assert_eq!(parsed.expiration, expiration);
        for (method, host, target) in [
            ("PUT", "localhost", format!("/files?{query}")),
            ("GET", "8080-iabc.burrow.test", format!("/files?{query}")),
            ("GET", "localhost", format!("/filesx?{query}")),
            ("GET", "localhost", "/files?path=/a".to_string()),
        ] {
            prop_assert!(signed_files_url(DOMAIN, &request(method, host, &target)).is_none());
        }
        // Raw junk as the query: no panic, whatever it yields.
        if let Ok(uri) = format!("/files?{}", junk.replace(' ', "%20")).parse::<Uri>() {
            let _ = signed_files_url(DOMAIN, &request("GET", "localhost", &uri.to_string()));
        }
    }

    /// `{port}-{id}.{domain}` built from valid parts routes to exactly those parts, whatever the
    /// case, a trailing dot or a `:port` suffix.
    #[test]
    fn valid_hosts_round_trip(
        port in 1u16..,
        id in "[a-z0-9]{1,63}",
        upper in any::<bool>(),
        dot in any::<bool>(),
        listen_port in prop::option::of(any::<u16>()),
    ) {
        let mut host = format!("{port}-{id}.{DOMAIN}");
        if upper {
            host = host.to_ascii_uppercase();
        }
        if dot {
            host.push('.');
        }
        if let Some(p) = listen_port {
            host.push_str(&format!(":{p}"));
        }
        let routed = route(&headers(&[("host", host.as_bytes())]), &Uri::from_static("/"), DOMAIN);
        prop_assert_eq!(routed.ok().flatten(), Some(ProxyTarget { sandbox_id: id, port }));
    }

    /// E2B header routing on shared hosts: never a panic; both headers or neither, else a 400;
    /// a routed port is always in 1..=65535 and comes from the port header.
    #[test]
    fn e2b_headers_route_only_valid_ports(
        host in prop::sample::select(vec!["localhost", "127.0.0.1:7420", "[::1]", "sandbox.burrow.test"]),
        id in prop::option::of(prop::collection::vec(any::<u8>(), 0..30)),
        port in prop::option::of(prop_oneof![
            "[0-9]{1,6}".prop_map(String::into_bytes),
            prop::collection::vec(any::<u8>(), 0..10),
        ]),
    ) {
        let mut pairs: Vec<(&str, &[u8])> = vec![("host", host.as_bytes())];
        if let Some(id) = &id {
            pairs.push((HEADER_SANDBOX_ID, id));
        }
        if let Some(port) = &port {
            pairs.push((HEADER_SANDBOX_PORT, port));
        }
        let map = headers(&pairs);
        let id_text = map.get(HEADER_SANDBOX_ID).and_then(|v| v.to_str().ok());
        let port_text = map.get(HEADER_SANDBOX_PORT).and_then(|v| v.to_str().ok());
        match route(&map, &Uri::from_static("/"), DOMAIN) {
            Ok(None) => prop_assert!(id_text.is_none() && port_text.is_none()),
            Ok(Some(target)) => {
                prop_assert!(target.port >= 1);
                prop_assert_eq!(port_text.unwrap().trim().parse::<u16>().ok(), Some(target.port));
                prop_assert_eq!(Some(target.sandbox_id.as_str()), id_text.map(str::trim));
            }
            Err(e) => prop_assert_eq!(e.status.as_u16(), 400),
        }
    }

    /// Template names the validator accepts are one safe path component and a DNS-ish label.
    #[test]
    fn accepted_template_names_are_safe_path_components(name in prop_oneof![
        ".{0,70}".prop_map(String::from),
        "[a-z0-9_.-]{0,70}".prop_map(String::from),
    ]) {
        if validate::template_name(&name).is_ok() {
            prop_assert!(!name.is_empty() && name.len() <= 63);
            prop_assert!(name != "." && name != ".." && !name.starts_with('-'));
            prop_assert!(!name.contains(['/', '\0', '.']));
            prop_assert!(burrow_templates::validate_name(&name).is_ok(), "{name}");
        }
    }

    /// Accepted env maps are POSIX names with NUL-free values; accepted labels have printable
    /// values and keys from their small alphabet; accepted sandbox paths are bounded, NUL-free.
    #[test]
    fn accepted_env_labels_and_paths_hold_their_invariants(
        map in string_map(),
        path in prop_oneof![".{0,20}".prop_map(String::from), Just("a".repeat(5000))],
    ) {
        if validate::env(&map).is_ok() {
            for (key, value) in &map {
                let mut bytes = key.bytes();
                prop_assert!(bytes.next().is_some_and(|b| b.is_ascii_alphabetic() || b == b'_'));
                prop_assert!(bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_'));
                prop_assert!(!value.contains('\0'));
            }
        }
        if validate::labels(&map).is_ok() {
            prop_assert!(map.len() <= 64);
            for (key, value) in &map {
                prop_assert!(!key.is_empty() && key.len() <= 63);
                prop_assert!(key.bytes().all(|b| b.is_ascii_alphanumeric() || b"._/-".contains(&b)));
                prop_assert!(!value.chars().any(char::is_control));
            }
        }
        if validate::sandbox_path(&path).is_ok() {
            prop_assert!(!path.is_empty() && path.len() <= 4096 && !path.contains('\0'));
        }
    }

    /// Arbitrary JSON against the API's request types and the create validators: never a panic;
    /// a create request every validator accepts has finite, in-range limits; and whatever
    /// deserialises survives a serialise → deserialise round trip unchanged.
    #[test]
    fn json_bodies_never_panic_and_accepted_creates_hold_invariants(json in arbitrary_json()) {
        let text = json.to_string();
        if let Ok(req) = serde_json::from_str::<CreateSandboxRequest>(&text) {
            let again: CreateSandboxRequest =
                serde_json::from_value(serde_json::to_value(&req).unwrap()).unwrap();
            prop_assert_eq!(&again, &req);
            let accepted = validate::template_name(&req.template).is_ok()
                && validate::limits(&req, 2.0).is_ok()
                && validate::env(&req.env).is_ok()
                && validate::labels(&req.labels).is_ok()
                && req.expiration.as_ref().is_none_or(|e| burrow_core::retention::validate(e).is_ok());
            if accepted {
                use burrow_types::sandbox::{MAX_DISK_MB, MAX_MEMORY_MB, MIN_CPUS, MIN_DISK_MB, MIN_MEMORY_MB};
                prop_assert!(req.cpus.is_finite() && (MIN_CPUS..=2.0).contains(&req.cpus));
                prop_assert!((MIN_MEMORY_MB..=MAX_MEMORY_MB).contains(&req.memory_mb));
                prop_assert!((MIN_DISK_MB..=MAX_DISK_MB).contains(&req.disk_mb));
                if let Some(expiration) = &req.expiration {
                    for secs in [expiration.ttl_idle, expiration.ttl_max_age].into_iter().flatten() {
                        prop_assert!(secs >= 1);
                    }
                }
            }
        }
        if let Ok(req) = serde_json::from_str::<ExecRequest>(&text) {
            let _ = validate::env(&req.env);
            if let Some(cwd) = &req.cwd {
                let _ = validate::sandbox_path(cwd);
            }
        }
        if let Ok(req) = serde_json::from_str::<TemplateBuildRequest>(&text) {
            let _ = validate::template_name(&req.name);
            let again: TemplateBuildRequest =
                serde_json::from_value(serde_json::to_value(&req).unwrap()).unwrap();
            prop_assert_eq!(again, req);
        }
    }
}
