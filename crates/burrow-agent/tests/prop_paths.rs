//! Property tests of the agent's path resolution (`paths::resolve`), which every file operation
//! and process cwd from a client goes through.
//!
//! 256 cases per property (`PROPTEST_CASES` overrides, e.g. 10000 for a longer local run).

use std::path::{Component, Path};

use burrow_agent::paths::resolve;
use burrow_agent::users::User;
use proptest::prelude::*;

fn user() -> User {
    User {
        name: "user".into(),
        uid: 1000,
        gid: 1000,
        home: "/home/user".into(),
        groups: vec![1000],
    }
}

fn client_path() -> impl Strategy<Value = String> {
    prop_oneof![
        ".{0,40}".prop_map(String::from),
        (
            prop::sample::select(vec!["", "/", "~", "~/", "./", "//"]),
            prop::collection::vec(
                prop_oneof![
                    4 => "[a-zA-Z0-9 ._~-]{1,8}".prop_map(String::from),
                    2 => Just("..".to_string()),
                    1 => Just(".".to_string()),
                    1 => Just(String::new()),
                ],
                0..8,
            ),
        )
            .prop_map(|(start, parts)| format!("{start}{}", parts.join("/"))),
    ]
}

fn is_clean_absolute(path: &Path) -> bool {
    path.is_absolute()
        && path
            .components()
            .all(|c| matches!(c, Component::RootDir | Component::Normal(_)))
}

/// The case the property found: `~//a` resolved to `/a`, leaving the home.
#[test]
fn home_with_doubled_slash_stays_home() {
    let user = user();
    for (path, expected) in [("~//a", "/home/user/a"), ("~///etc/x", "/home/user/etc/x")] {
        assert_eq!(resolve(path, &user, None).unwrap(), Path::new(expected));
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    /// Whatever a client sends: empty or NUL is refused; anything else resolves to a clean
    /// absolute path (no `.`/`..` left, so no later join can climb), idempotently; and without a
    /// `..`, a relative or `~` path stays under the home (or the given base).
    #[test]
    fn resolved_paths_are_clean_and_anchored(path in client_path(), use_base in any::<bool>()) {
        let user = user();
        let base = use_base.then_some("/work/dir");
        match resolve(&path, &user, base) {
            Err(_) => prop_assert!(path.is_empty() || path.contains('\0')),
            Ok(resolved) => {
                prop_assert!(!path.is_empty() && !path.contains('\0'));
                prop_assert!(is_clean_absolute(&resolved), "{}", resolved.display());
                let again = resolve(resolved.to_str().unwrap(), &user, base).unwrap();
                prop_assert_eq!(&again, &resolved);
                let climbs = path.split('/').any(|c| c == "..");
                if !climbs {
                    if path == "~" || path.starts_with("~/") {
                        prop_assert!(resolved.starts_with(&user.home));
                    } else if !path.starts_with('/') {
                        prop_assert!(resolved.starts_with(base.unwrap_or(&user.home)));
                    }
                }
            }
        }
    }
}
