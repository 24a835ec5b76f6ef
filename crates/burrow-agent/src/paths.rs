//! Resolution of client-supplied paths against the user's home.

use std::path::PathBuf;

use burrow_envd::ConnectError;

use crate::users::User;

/// Validates and resolves a path: `~` expands to the user's home, relative paths are
/// relative to `base` (the home, or the default workdir for process cwds).
pub fn resolve(path: &str, user: &User, base: Option<&str>) -> Result<PathBuf, ConnectError> {
    if path.is_empty() {
        return Err(ConnectError::invalid_argument("path must not be empty"));
    }
    if path.contains('\0') {
        return Err(ConnectError::invalid_argument(
            "path must not contain NUL bytes",
        ));
    }
    let base = base.unwrap_or(&user.home);
    let expanded = if path == "~" {
        PathBuf::from(&user.home)
    } else if let Some(rest) = path.strip_prefix("~/") {
        // `~//x` is `~/x` (as in a shell); joining `/x` would replace the home instead.
        PathBuf::from(&user.home).join(rest.trim_start_matches('/'))
    } else if path.starts_with('/') {
        PathBuf::from(path)
    } else {
        PathBuf::from(base).join(path)
    };
    Ok(normalize(&expanded))
}

/// Lexical normalization (`.`/`..`/duplicate slashes), like Go's filepath.Clean.
pub fn normalize(path: &std::path::Path) -> PathBuf {
    use std::path::Component;
    let mut out = PathBuf::from("/");
    for part in path.components() {
        match part {
            Component::ParentDir => {
                out.pop();
            }
            Component::Normal(p) => out.push(p),
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user() -> User {
        User {
            name: "user".into(),
            uid: 1000,
            gid: 1000,
            home: "/home/user".into(),
            groups: vec![1000],
        }
    }

    #[test]
    fn resolves_relative_home_and_absolute() {
        let u = user();
        assert_eq!(
            resolve("a.txt", &u, None).unwrap(),
            PathBuf::from("/home/user/a.txt")
        );
        assert_eq!(
            resolve("~/x/../y", &u, None).unwrap(),
            PathBuf::from("/home/user/y")
        );
        assert_eq!(resolve("~", &u, None).unwrap(), PathBuf::from("/home/user"));
        assert_eq!(
            resolve("/etc//passwd", &u, None).unwrap(),
            PathBuf::from("/etc/passwd")
        );
        assert_eq!(
            resolve("w", &u, Some("/work")).unwrap(),
            PathBuf::from("/work/w")
        );
        assert_eq!(resolve("/../..", &u, None).unwrap(), PathBuf::from("/"));
    }

    #[test]
    fn rejects_empty_and_nul() {
        let u = user();
        assert!(resolve("", &u, None).unwrap_err().message.contains("empty"));
        assert!(
            resolve("a\0b", &u, None)
                .unwrap_err()
                .message
                .contains("NUL")
        );
    }
}
