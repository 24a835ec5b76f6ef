//! The real `base` template (debootstrap): built once per test data dir, then checked.

mod common;

use std::os::unix::fs::MetadataExt;
use std::process::Command;

#[tokio::test(flavor = "multi_thread")]
async fn base_has_user_sudo_python_and_git() {
    let store = common::store_with_base().await;
    let base = store.get("base").unwrap();
    assert_eq!(base.source, "debootstrap");
    assert_eq!(base.user, "user");
    assert_eq!(base.env["LANG"], "C.UTF-8");
    assert!(base.size_bytes > 100 << 20, "{}", base.size_bytes);
    let layer = &base.layers[0];

    let passwd = std::fs::read_to_string(layer.join("etc/passwd")).unwrap();
    assert!(
        passwd
            .lines()
            .any(|l| l == "user:x:1000:1000::/home/user:/bin/bash"),
        "{passwd}"
    );
    let group = std::fs::read_to_string(layer.join("etc/group")).unwrap();
    assert!(
        group
            .lines()
            .any(|l| l.starts_with("sudo:") && l.ends_with(":user")),
        "{group}"
    );
    let home = std::fs::metadata(layer.join("home/user")).unwrap();
    assert_eq!((home.uid(), home.gid()), (1000, 1000));
    let sudo = std::fs::metadata(layer.join("usr/bin/sudo")).unwrap();
    assert_eq!(
        (sudo.uid(), sudo.mode() & 0o4000),
        (0, 0o4000),
        "sudo must stay setuid root"
    );
    assert_eq!(
        std::fs::read_to_string(layer.join("etc/machine-id")).unwrap(),
        ""
    );
    let lists: Vec<_> = std::fs::read_dir(layer.join("var/lib/apt/lists"))
        .unwrap()
        .collect();
    assert_eq!(lists.len(), 1, "only lists/partial remains");
    assert!(
        std::fs::read_dir(layer.join("var/cache/apt/archives"))
            .unwrap()
            .all(|e| {
                let e = e.unwrap();
                e.file_type().unwrap().is_dir() || e.file_name() == "lock"
            })
    );

    let run_as = |userspec: Option<&str>, args: &[&str]| {
        let mut chroot = Command::new("chroot");
        if let Some(spec) = userspec {
            chroot.arg(format!("--userspec={spec}"));
        }
        let out = chroot
            .arg(layer)
            .args(args)
            .env_clear()
            .env("PATH", &base.env["PATH"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let run = |args: &[&str]| run_as(None, args);
    assert!(run(&["python3", "-c", "import venv, ssl; print('ok')"]).contains("ok"));
    // `python` and `pip` as on E2B's base image (python-is-python3, python3-pip).
    assert!(run(&["python", "-V"]).starts_with("Python 3."));
    assert!(run(&["pip", "--version"]).starts_with("pip "));
    assert!(run(&["git", "--version"]).starts_with("git version"));
    assert!(run(&["curl", "--version"]).starts_with("curl"));
    // Passwordless sudo for user, as the user.
    assert_eq!(
        run_as(Some("1000:1000"), &["sudo", "-n", "id", "-u"]).trim(),
        "0"
    );
    assert!(run(&["locale", "-a"]).to_lowercase().contains("c.utf8"));
}
