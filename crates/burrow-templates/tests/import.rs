//! Importing rootfs tarballs and directories, including hostile archives.

mod common;

use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;
use std::sync::Mutex;

use burrow_templates::{BuildProgress, TemplateError, TemplateStore};
use common::{Entry, Kind, gzip, leftovers, no_progress, raw_tar};

struct Fixture {
    _dir: tempfile::TempDir,
    store: TemplateStore,
    outside: tempfile::TempDir,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let store = TemplateStore::open(dir.path()).unwrap();
    Fixture {
        _dir: dir,
        store,
        outside: tempfile::tempdir().unwrap(),
    }
}

fn import_bytes(
    store: &TemplateStore,
    name: &str,
    archive: &[u8],
) -> Result<burrow_templates::Template, TemplateError> {
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), archive).unwrap();
    store.import_rootfs(name, file.path(), no_progress)
}

/// A hostile import fails as an unsafe entry, leaves no template and no staging dir behind.
fn assert_refused(fx: &Fixture, archive: &[u8], expected: &str) {
    let err = import_bytes(&fx.store, "evil", archive).unwrap_err();
    assert!(matches!(err, TemplateError::UnsafeEntry { .. }), "{err}");
    assert!(err.to_string().contains(expected), "{err}");
    assert!(matches!(
        fx.store.get("evil"),
        Err(TemplateError::NotFound(_))
    ));
    assert!(
        leftovers(fx.store.root()).is_empty(),
        "{:?}",
        leftovers(fx.store.root())
    );
}

#[test]
fn refuses_path_traversal() {
    let fx = fixture();
    let archive = raw_tar(&[Entry::new(
        "../../etc/passwd",
        Kind::File(b"root::0:0::/:/bin/sh\n"),
    )]);
    assert_refused(&fx, &archive, "path traversal");
}

#[test]
fn refuses_writing_through_a_symlink() {
    let fx = fixture();
    let outside = fx.outside.path().to_str().unwrap().to_string();
    let archive = raw_tar(&[
        Entry::new("escape", Kind::Symlink(&outside)),
        Entry::new("escape/pwned", Kind::File(b"owned")),
    ]);
    assert_refused(&fx, &archive, "symlink");
    assert!(!fx.outside.path().join("pwned").exists());
    // Same with a relative symlink climbing out.
    let archive = raw_tar(&[
        Entry::new("up", Kind::Symlink("../../../../../../../..")),
        Entry::new("up/tmp/pwned", Kind::File(b"owned")),
    ]);
    assert_refused(&fx, &archive, "symlink");
}

#[test]
fn refuses_hard_links_out_of_the_archive() {
    let fx = fixture();
    let archive = raw_tar(&[Entry::new(
        "shadow",
        Kind::Hardlink("../../../../etc/shadow"),
    )]);
    assert_refused(&fx, &archive, "path traversal");
    // An absolute target means "inside the archive"; /etc/passwd was never an entry.
    let archive = raw_tar(&[Entry::new("passwd", Kind::Hardlink("/etc/passwd"))]);
    assert_refused(&fx, &archive, "not an earlier entry");
    // Hard link through a symlinked directory.
    let archive = raw_tar(&[
        Entry::new("etc", Kind::Symlink("/etc")),
        Entry::new("passwd", Kind::Hardlink("etc/passwd")),
    ]);
    assert_refused(&fx, &archive, "symlink");
}

#[test]
fn imports_a_rootfs_tarball_safely() {
    let fx = fixture();
    let long_name = format!("usr/share/{}/file", "d".repeat(120));
    let mut builder = tar::Builder::new(Vec::new());
    // A PAX/GNU long path via the tar crate's own builder.
    let mut header = tar::Header::new_gnu();
    header.set_size(4);
    header.set_mode(0o644);
    header.set_uid(0);
    header.set_gid(0);
    builder
        .append_data(&mut header, &long_name, &b"long"[..])
        .unwrap();
    let mut archive = builder.into_inner().unwrap();
    archive.truncate(archive.len() - 1024); // drop the end-of-archive blocks, more entries follow
    archive.extend(raw_tar(&[
        Entry::new("./", Kind::Dir),
        Entry::new("/abs/path", Kind::File(b"abs")),
        Entry::new("usr/bin/sudo", Kind::File(b"#!sudo")).mode(0o4755),
        Entry::new("home/user", Kind::Dir)
            .owned(1000, 1000)
            .mode(0o750),
        Entry::new("home/user/.bashrc", Kind::File(b"# rc")).owned(1000, 1000),
        Entry::new("bin", Kind::Symlink("usr/bin")),
        Entry::new("etc/alt", Kind::Symlink("/usr/bin/sudo")),
        Entry::new("usr/bin/sudoedit", Kind::Hardlink("usr/bin/sudo")),
        Entry::new("dev/null", Kind::CharDevice),
        Entry::new("run/pipe", Kind::Fifo),
        Entry::new(".wh.literal", Kind::File(b"plain file in a rootfs")),
    ]));
    let messages = Mutex::new(Vec::new());
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), gzip(&archive)).unwrap();
    let template = fx
        .store
        .import_rootfs("imported", file.path(), |p: BuildProgress| {
            messages.lock().unwrap().push(p.message)
        })
        .unwrap();
    let layer = &template.layers[0];
    assert_eq!(layer, &fx.store.root().join("imported/layers/0"));
    assert_eq!(template.source, "rootfs");
    assert!(template.size_bytes > 0);

    assert_eq!(
        std::fs::read_to_string(layer.join(&long_name)).unwrap(),
        "long"
    );
    assert_eq!(
        std::fs::read_to_string(layer.join("abs/path")).unwrap(),
        "abs"
    );
    let sudo = std::fs::metadata(layer.join("usr/bin/sudo")).unwrap();
    assert_eq!(sudo.mode() & 0o7777, 0o4755);
    let home = std::fs::metadata(layer.join("home/user")).unwrap();
    assert_eq!(
        (home.uid(), home.gid(), home.mode() & 0o7777),
        (1000, 1000, 0o750)
    );
    assert_eq!(
        std::fs::metadata(layer.join("home/user/.bashrc"))
            .unwrap()
            .uid(),
        1000
    );
    assert_eq!(
        std::fs::read_link(layer.join("bin")).unwrap(),
        Path::new("usr/bin")
    );
    assert_eq!(
        std::fs::read_link(layer.join("etc/alt")).unwrap(),
        Path::new("/usr/bin/sudo")
    );
    assert_eq!(
        std::fs::metadata(layer.join("usr/bin/sudoedit"))
            .unwrap()
            .ino(),
        sudo.ino()
    );
    assert!(!layer.join("dev/null").exists(), "device nodes are dropped");
    assert!(
        std::fs::symlink_metadata(layer.join("run/pipe"))
            .unwrap()
            .file_type()
            .is_fifo()
    );
    assert!(layer.join(".wh.literal").exists());
    let messages = messages.into_inner().unwrap();
    assert!(
        messages
            .iter()
            .any(|m| m.contains("skipped device node /dev/null")),
        "{messages:?}"
    );
    assert!(leftovers(fx.store.root()).is_empty());
}

#[test]
fn refuses_archives_that_are_not_tar() {
    let fx = fixture();
    let err = import_bytes(&fx.store, "junk", b"definitely not a tarball").unwrap_err();
    assert!(err.to_string().contains("not a tar archive"), "{err}");
    let truncated = &raw_tar(&[Entry::new("big", Kind::File(&[7u8; 4096]))])[..1024];
    assert!(import_bytes(&fx.store, "junk", truncated).is_err());
    assert!(matches!(
        fx.store.get("junk"),
        Err(TemplateError::NotFound(_))
    ));
    assert!(leftovers(fx.store.root()).is_empty());
}

#[test]
fn imports_a_directory_keeping_links_and_owners() {
    let fx = fixture();
    let src = tempfile::tempdir().unwrap();
    let root = src.path();
    std::fs::create_dir_all(root.join("etc")).unwrap();
    std::fs::write(
        root.join("etc/passwd"),
        "root:x:0:0::/root:/bin/sh\nuser:x:1000:1000::/home/user:/bin/sh\n",
    )
    .unwrap();
    std::fs::create_dir_all(root.join("home/user")).unwrap();
    std::os::unix::fs::chown(root.join("home/user"), Some(1000), Some(1000)).unwrap();
    std::os::unix::fs::symlink(fx.outside.path(), root.join("escape")).unwrap();
    std::fs::hard_link(root.join("etc/passwd"), root.join("etc/passwd-")).unwrap();

    let template = fx
        .store
        .import_rootfs("fromdir", root, no_progress)
        .unwrap();
    let layer = &template.layers[0];
    assert_eq!(
        template.user, "user",
        "rootfs with a `user` account defaults to it"
    );
    assert_eq!(
        std::fs::metadata(layer.join("home/user")).unwrap().uid(),
        1000
    );
    assert_eq!(
        std::fs::read_link(layer.join("escape")).unwrap(),
        fx.outside.path()
    );
    assert_eq!(
        std::fs::metadata(layer.join("etc/passwd")).unwrap().ino(),
        std::fs::metadata(layer.join("etc/passwd-")).unwrap().ino()
    );
}

#[test]
fn store_lists_sorted_validates_names_and_refuses_duplicates() {
    let fx = fixture();
    let archive = raw_tar(&[Entry::new("etc/hostname", Kind::File(b"x\n"))]);
    for name in ["zeta", "alpha", "mid-1"] {
        import_bytes(&fx.store, name, &archive).unwrap();
    }
    let names: Vec<String> = fx
        .store
        .list()
        .unwrap()
        .into_iter()
        .map(|t| t.name)
        .collect();
    assert_eq!(names, ["alpha", "mid-1", "zeta"]);
    assert!(matches!(
        import_bytes(&fx.store, "alpha", &archive),
        Err(TemplateError::AlreadyExists(_))
    ));
    for bad in ["Bad", "../x", "", "-x"] {
        assert!(
            matches!(
                import_bytes(&fx.store, bad, &archive),
                Err(TemplateError::InvalidName(_))
            ),
            "{bad}"
        );
        assert!(matches!(
            fx.store.get(bad),
            Err(TemplateError::InvalidName(_))
        ));
    }
    assert!(matches!(
        fx.store.remove("alpha", true),
        Err(TemplateError::InUse(_))
    ));
    fx.store.remove("alpha", false).unwrap();
    assert!(matches!(
        fx.store.get("alpha"),
        Err(TemplateError::NotFound(_))
    ));
    assert!(matches!(
        fx.store.remove("alpha", false),
        Err(TemplateError::NotFound(_))
    ));
    assert!(!fx.store.root().join("alpha").exists());
    assert!(leftovers(fx.store.root()).is_empty());
}

#[test]
fn size_limits_are_enforced() {
    let fx = fixture();
    let archive = raw_tar(&[Entry::new("big", Kind::File(&[1u8; 10_000]))]);
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), archive).unwrap();
    let limits = burrow_templates::ImportLimits {
        max_total_bytes: 5_000,
        max_entries: 100,
    };
    let err = fx
        .store
        .import_rootfs_with_limits("big", file.path(), limits, no_progress)
        .unwrap_err();
    assert!(err.to_string().contains("exceed the limit"), "{err}");
    assert!(leftovers(fx.store.root()).is_empty());
}
