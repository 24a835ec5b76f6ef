//! Builds on the real `base` template: metadata steps, COPY layers, RUN through a real kernel
//! overlay (a minimal runner: overlay mount + chroot as host root, so `uid_base` is 0), and
//! ownership normalisation of upper dirs with a shifted uid range.

mod common;

use std::collections::BTreeMap;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use burrow_templates::{BuildStep, StepOutcome, StepRunner, TemplateError, TemplateStore};

/// Refuses RUN: for builds that must not need a sandbox.
struct NoRun;

impl StepRunner for NoRun {
    async fn run(
        &self,
        _: &[PathBuf],
        _: &BTreeMap<String, String>,
        _: Option<&str>,
        command: &str,
        _: &(dyn Fn(&str) + Send + Sync),
    ) -> Result<StepOutcome, TemplateError> {
        Err(TemplateError::BuildFailed(format!(
            "unexpected RUN {command}"
        )))
    }
}

/// Runs the command as host root in an overlay of the layers (private mount namespace, chroot).
struct OverlayRunner {
    scratch: PathBuf,
}

impl StepRunner for OverlayRunner {
    async fn run(
        &self,
        layers: &[PathBuf],
        env: &BTreeMap<String, String>,
        workdir: Option<&str>,
        command: &str,
        output: &(dyn Fn(&str) + Send + Sync),
    ) -> Result<StepOutcome, TemplateError> {
        let dir = self.scratch.join(format!(
            "run-{}",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        ));
        let (upper, work, merged) = (dir.join("upper"), dir.join("work"), dir.join("merged"));
        for d in [&upper, &work, &merged] {
            std::fs::create_dir_all(d).unwrap();
        }
        let lower: Vec<String> = layers.iter().map(|l| l.display().to_string()).collect();
        let mut cmd = tokio::process::Command::new("unshare");
        cmd.args(["--mount", "--propagation", "private", "sh", "-c"])
            .arg(r#"mount -t overlay overlay -o "lowerdir=$1,upperdir=$2,workdir=$3" "$4" && shift 3 && exec chroot "$@""#)
            .arg("sh")
            .arg(lower.join(":"))
            .arg(&upper)
            .arg(&work)
            .arg(&merged)
            .args(["/usr/bin/env", "-i"])
            .args(env.iter().map(|(k, v)| format!("{k}={v}")))
            .args(["/bin/sh", "-c"])
            .arg(format!("cd '{}' && {command}", workdir.unwrap_or("/")));
        let out = cmd
            .output()
            .await
            .map_err(|e| TemplateError::BuildFailed(e.to_string()))?;
        for line in String::from_utf8_lossy(&out.stdout)
            .lines()
            .chain(String::from_utf8_lossy(&out.stderr).lines())
        {
            output(line);
        }
        std::fs::remove_dir_all(&work).unwrap();
        Ok(StepOutcome {
            exit_code: out.status.code().unwrap_or(-1),
            upper_dir: upper,
            uid_base: 0,
        })
    }
}

fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", std::process::id())
}

#[tokio::test(flavor = "multi_thread")]
async fn copy_and_metadata_steps() {
    let store = common::store_with_base().await;
    let base = store.get("base").unwrap();
    let host = tempfile::tempdir().unwrap();
    std::fs::write(host.path().join("hello.txt"), "hello").unwrap();
    std::fs::create_dir_all(host.path().join("tool/bin")).unwrap();
    std::fs::write(host.path().join("tool/bin/run"), "#!/bin/sh\n").unwrap();
    std::fs::set_permissions(
        host.path().join("tool/bin/run"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    std::os::unix::fs::chown(host.path().join("tool/bin/run"), Some(4242), Some(4242)).unwrap();

    let name = unique("t-copy");
    let steps = vec![
        BuildStep::Env {
            key: "APP".into(),
            value: "1".into(),
        },
        BuildStep::Workdir {
            path: "/opt/tool".into(),
        },
        BuildStep::Copy {
            src: host.path().join("hello.txt"),
            dest: "/home/user/notes/".into(),
        },
        BuildStep::Copy {
            src: host.path().join("tool"),
            dest: "/opt/tool".into(),
        },
        BuildStep::Copy {
            src: host.path().join("tool"),
            dest: "/home/user".into(),
        },
        BuildStep::User {
            name: "root".into(),
        },
    ];
    let template = store
        .build(&name, "base", steps, &NoRun, common::no_progress)
        .await
        .unwrap();
    assert_eq!(template.source, "build:base");
    assert_eq!(template.env["APP"], "1");
    assert_eq!(template.env["LANG"], "C.UTF-8", "inherited from the parent");
    assert_eq!(template.workdir.as_deref(), Some("/opt/tool"));
    assert_eq!(template.user, "root");
    assert_eq!(template.layers.len(), 4, "three COPY layers on base's one");
    assert_eq!(template.layers[3], base.layers[0]);
    assert!(template.layers[0].ends_with(format!("{name}/layers/2")));
    let merged_home = std::fs::metadata(template.layers[0].join("home/user")).unwrap();
    assert_eq!(
        (merged_home.uid(), merged_home.mode()),
        (
            1000,
            std::fs::metadata(base.layers[0].join("home/user"))
                .unwrap()
                .mode()
        ),
        "COPY onto an existing dir keeps its owner and mode"
    );
    assert!(template.layers[0].join("home/user/bin/run").exists());

    let notes_layer = &template.layers[2];
    let home = std::fs::metadata(notes_layer.join("home/user")).unwrap();
    let base_home = std::fs::metadata(base.layers[0].join("home/user")).unwrap();
    assert_eq!(
        (home.uid(), home.mode()),
        (base_home.uid(), base_home.mode()),
        "parent dirs keep the lower metadata"
    );
    let hello = std::fs::metadata(notes_layer.join("home/user/notes/hello.txt")).unwrap();
    assert_eq!((hello.uid(), hello.gid()), (0, 0));
    let run = std::fs::metadata(template.layers[1].join("opt/tool/bin/run")).unwrap();
    assert_eq!(
        (run.uid(), run.mode() & 0o777),
        (0, 0o755),
        "COPY makes files root-owned, keeps modes"
    );

    let err = store.remove("base", false).unwrap_err();
    assert!(matches!(err, TemplateError::HasDependents { .. }), "{err}");
    assert!(err.to_string().contains(&name), "{err}");
    store.remove(&name, false).unwrap();
    assert!(store.get("base").is_ok());
}

#[tokio::test(flavor = "multi_thread")]
async fn copy_through_a_symlinked_dir_is_refused() {
    let store = common::store_with_base().await;
    let host = tempfile::tempdir().unwrap();
    std::fs::write(host.path().join("x"), "x").unwrap();
    let name = unique("t-symcopy");
    let steps = vec![BuildStep::Copy {
        src: host.path().join("x"),
        dest: "/bin/x".into(),
    }];
    let err = store
        .build(&name, "base", steps, &NoRun, common::no_progress)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("/bin is a symlink"), "{err}");
    assert!(matches!(store.get(&name), Err(TemplateError::NotFound(_))));
    let err = store
        .build(&name, "missing-parent", vec![], &NoRun, common::no_progress)
        .await
        .unwrap_err();
    assert!(matches!(err, TemplateError::NotFound(_)), "{err}");
}

/// Mounts the template's layers read-only and runs a shell test in them.
fn check_in_overlay(store: &TemplateStore, name: &str, script: &str) -> bool {
    let template = store.get(name).unwrap();
    let merged = tempfile::tempdir().unwrap();
    let lower: Vec<String> = template
        .layers
        .iter()
        .map(|l| l.display().to_string())
        .collect();
    let status = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c"])
        .arg(r#"mount -t overlay overlay -o "lowerdir=$1" "$2" && chroot "$2" /bin/sh -c "$3""#)
        .args([
            "sh",
            &lower.join(":"),
            merged.path().to_str().unwrap(),
            script,
        ])
        .status()
        .unwrap();
    status.success()
}

#[tokio::test(flavor = "multi_thread")]
async fn run_steps_become_layers_with_whiteouts_and_opaque_dirs() {
    let store = common::store_with_base().await;
    let scratch = store.root().parent().unwrap().join("test-scratch");
    std::fs::create_dir_all(&scratch).unwrap();
    let runner = OverlayRunner {
        scratch: scratch.clone(),
    };
    let name = unique("t-run");
    let steps = vec![
        BuildStep::Run {
            command: "echo built > /etc/built && rm -rf /etc/apt && rm -rf /usr/share/doc && mkdir /usr/share/doc && echo only > /usr/share/doc/only && chown user:user /etc/built".into(),
        },
        BuildStep::Env { key: "X".into(), value: "y".into() },
        BuildStep::Run { command: "test \"$X\" = y && test -f /etc/built".into() },
    ];
    let lines = std::sync::Mutex::new(Vec::new());
    let template = store
        .build(&name, "base", steps, &runner, |p| {
            lines.lock().unwrap().push(p.message)
        })
        .await
        .unwrap();
    assert_eq!(
        template.layers.len(),
        2,
        "the second RUN changed nothing and adds no layer"
    );
    let layer = &template.layers[0];
    let apt = std::fs::symlink_metadata(layer.join("etc/apt")).unwrap();
    assert!(
        apt.file_type().is_char_device() && apt.rdev() == 0,
        "whiteout kept"
    );
    let mut value = [0u8; 4];
    let n = rustix::fs::lgetxattr(
        layer.join("usr/share/doc"),
        "trusted.overlay.opaque",
        &mut value[..],
    )
    .unwrap();
    assert_eq!(&value[..n], b"y");
    assert_eq!(
        std::fs::metadata(layer.join("etc/built")).unwrap().uid(),
        1000
    );
    assert!(check_in_overlay(
        &store,
        &name,
        "test -f /etc/built && ! test -e /etc/apt && test \"$(ls /usr/share/doc)\" = only && test -x /usr/bin/python3"
    ));

    let failing = unique("t-fail");
    let err = store
        .build(
            &failing,
            &name,
            vec![BuildStep::Run {
                command: "exit 3".into(),
            }],
            &runner,
            common::no_progress,
        )
        .await
        .unwrap_err();
    assert!(err.to_string().contains("exited with code 3"), "{err}");
    assert!(matches!(
        store.get(&failing),
        Err(TemplateError::NotFound(_))
    ));
    assert!(common::leftovers(store.root()).is_empty());
    store.remove(&name, false).unwrap();
    let _ = std::fs::remove_dir_all(scratch);
}

#[test]
fn normalises_shifted_ownership_and_overlay_xattrs() {
    const BASE: u32 = 0x1000_0000;
    let upper = tempfile::tempdir().unwrap();
    let root = upper.path();
    std::fs::create_dir_all(root.join("home/user")).unwrap();
    std::fs::write(root.join("home/user/file"), "x").unwrap();
    std::fs::write(root.join("usr-bin-tool"), "x").unwrap();
    std::os::unix::fs::symlink("/nonexistent/target", root.join("link")).unwrap();
    std::fs::hard_link(root.join("home/user/file"), root.join("hardlink")).unwrap();
    rustix::fs::mknodat(
        rustix::fs::CWD,
        root.join("gone"),
        rustix::fs::FileType::CharacterDevice,
        rustix::fs::Mode::empty(),
        0,
    )
    .unwrap();
    std::fs::create_dir(root.join("opaque")).unwrap();
    rustix::fs::lsetxattr(
        root.join("opaque"),
        "trusted.overlay.opaque",
        b"y",
        rustix::fs::XattrFlags::empty(),
    )
    .unwrap();
    rustix::fs::lsetxattr(
        root.join("opaque"),
        "trusted.overlay.origin",
        b"junk",
        rustix::fs::XattrFlags::empty(),
    )
    .unwrap();
    // A crafted xattr a sandbox user could set on its own file.
    rustix::fs::lsetxattr(
        root.join("home/user/file"),
        "user.overlay.whiteout",
        b"",
        rustix::fs::XattrFlags::empty(),
    )
    .unwrap();
    let chown = |p: &str, id: u32| {
        rustix::fs::chownat(
            rustix::fs::CWD,
            root.join(p),
            Some(rustix::fs::Uid::from_raw(id)),
            Some(rustix::fs::Gid::from_raw(id)),
            rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
        )
        .unwrap()
    };
    for p in ["", "home", "usr-bin-tool", "link", "opaque"] {
        chown(p, BASE);
    }
    for p in ["home/user", "home/user/file"] {
        chown(p, BASE + 1000);
    }
    std::fs::set_permissions(
        root.join("usr-bin-tool"),
        std::fs::Permissions::from_mode(0o4755),
    )
    .unwrap();
    // "gone" (a whiteout) stays 0:0 as overlay created it.

    burrow_templates::normalize_upper(root, BASE).unwrap();
    let meta = |p: &str| std::fs::symlink_metadata(root.join(p)).unwrap();
    assert_eq!(meta("").uid(), 0);
    assert_eq!(
        (meta("home/user").uid(), meta("home/user/file").gid()),
        (1000, 1000)
    );
    assert_eq!(meta("hardlink").uid(), 1000);
    assert_eq!((meta("link").uid(), meta("gone").uid()), (0, 0));
    assert_eq!(
        meta("usr-bin-tool").mode() & 0o7777,
        0o4755,
        "setuid survives the chown"
    );
    let mut value = [0u8; 8];
    assert!(
        rustix::fs::lgetxattr(
            root.join("opaque"),
            "trusted.overlay.origin",
            &mut value[..]
        )
        .is_err()
    );
    let n =
        rustix::fs::lgetxattr(root.join("opaque"), "user.overlay.opaque", &mut value[..]).unwrap();
    assert_eq!(&value[..n], b"y");
    assert!(
        rustix::fs::lgetxattr(
            root.join("home/user/file"),
            "user.overlay.whiteout",
            &mut value[..]
        )
        .is_err(),
        "crafted overlay xattrs are stripped from files"
    );
    assert_eq!(
        std::fs::read_link(root.join("link")).unwrap(),
        Path::new("/nonexistent/target")
    );

    // A file owned by a host uid outside the sandbox's range is an error, not silently kept.
    let other = tempfile::tempdir().unwrap();
    std::os::unix::fs::chown(other.path(), Some(BASE), Some(BASE)).unwrap();
    std::fs::write(other.path().join("foreign"), "x").unwrap();
    std::os::unix::fs::chown(other.path().join("foreign"), Some(4242), Some(BASE)).unwrap();
    let err = burrow_templates::normalize_upper(other.path(), BASE).unwrap_err();
    assert!(
        err.to_string()
            .contains("/foreign is owned by host uid 4242"),
        "{err}"
    );
}
