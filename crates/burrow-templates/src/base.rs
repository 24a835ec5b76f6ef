//! The default template `base`: Debian bookworm from debootstrap, plus the `user` account.
//!
//! The downloaded packages are cached as a debootstrap tarball under `<data_dir>/cache`, keyed by
//! suite, variant and package list, so rebuilding needs no network.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use tokio::process::Command;

use crate::command::run_streaming;
use crate::error::IoContext;
use crate::fsutil::{self, ScratchDir};
use crate::store::now_rfc3339;
use crate::{BASE_TEMPLATE, BuildProgress, Template, TemplateError, TemplateStore};

pub const BASE_SUITE: &str = "bookworm";
pub const BASE_VARIANT: &str = "minbase";
pub const BASE_MIRROR: &str = "http://deb.debian.org/debian";
/// Packages on top of `minbase`, sorted (the cache key depends on this list).
pub const BASE_PACKAGES: &[&str] = &[
    "bash",
    "ca-certificates",
    "coreutils",
    "curl",
    "git",
    "iproute2",
    "less",
    "nano",
    "procps",
    // `python` → python3, as on E2B's base image (agents and SDK examples call `python`).
    "python-is-python3",
    "python3",
    "python3-pip",
    "python3-venv",
    "sudo",
];
/// The sandbox user: uid/gid 1000, passwordless sudo.
pub const BASE_USER: &str = "user";
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Cache file name of the debootstrap tarball for this suite, variant and package list.
pub fn debootstrap_cache_name(suite: &str, variant: &str, packages: &[&str]) -> String {
    let mut sorted = packages.to_vec();
    sorted.sort_unstable();
    let key = Sha256::digest(format!("{suite}\n{variant}\n{}", sorted.join(",")).as_bytes());
    format!("debootstrap-{suite}-{}.tar", &hex::encode(key)[..16])
}

/// Maps debootstrap output lines to a progress phase and fraction. Downloading is 0–0.4 (by
/// package count against an estimate), installing 0.4–0.9 by debootstrap's stage lines;
/// configuring the user etc. takes the rest. Other lines keep the last phase and fraction.
#[derive(Debug)]
pub struct DebootstrapProgress {
    retrieved: u32,
    phase: String,
    fraction: Option<f32>,
}

impl Default for DebootstrapProgress {
    fn default() -> Self {
        Self {
            retrieved: 0,
            phase: "debootstrap".to_string(),
            fraction: None,
        }
    }
}

impl DebootstrapProgress {
    /// Packages minbase plus [`BASE_PACKAGES`] downloads (155 in bookworm); only scales the bar.
    const EXPECTED_DEBS: f32 = 160.0;

    pub fn line(&mut self, line: &str) -> (String, Option<f32>) {
        let message = line.strip_prefix("I: ").unwrap_or(line);
        let stage = if message.starts_with("Retrieving ") {
            self.retrieved += 1;
            let done = (self.retrieved as f32 / Self::EXPECTED_DEBS).min(1.0);
            Some(("download", 0.05 + 0.35 * done))
        } else if message.starts_with("Extracting ") {
            Some(("extract", 0.45))
        } else if message.starts_with("Installing core packages") {
            Some(("install", 0.5))
        } else if message.starts_with("Unpacking required packages") {
            Some(("install", 0.55))
        } else if message.starts_with("Configuring required packages") {
            Some(("install", 0.65))
        } else if message.starts_with("Unpacking the base system") {
            Some(("install", 0.72))
        } else if message.starts_with("Configuring the base system") {
            Some(("install", 0.8))
        } else if message.starts_with("Base system installed successfully")
            || message.starts_with("Download complete")
        {
            Some(("install", 0.9))
        } else {
            None
        };
        if let Some((phase, fraction)) = stage {
            self.phase = phase.to_string();
            self.fraction = Some(fraction);
        }
        (self.phase.clone(), self.fraction)
    }
}

impl TemplateStore {
    /// Builds the default template `base` (see the module docs). Fails with
    /// [`TemplateError::AlreadyExists`] if it exists; remove it first to rebuild.
    pub async fn build_base(
        &self,
        progress: impl Fn(BuildProgress) + Send + Sync,
    ) -> Result<Template, TemplateError> {
        let staging = self.staging(BASE_TEMPLATE)?;
        let tarball = self.debootstrap_tarball(&progress).await?;
        let rootfs = staging.path().join("layers").join("0");
        install_from_tarball(&tarball, &rootfs, &progress).await?;
        report(
            &progress,
            "configure",
            "adding user and cleaning up",
            Some(0.92),
        );
        configure_rootfs(&rootfs).await?;
        report(&progress, "configure", "measuring size", Some(0.97));
        let size_bytes = fsutil::disk_usage(&rootfs)?;
        let template = Template {
            name: BASE_TEMPLATE.to_string(),
            layers: vec![self.layer_path(BASE_TEMPLATE, 0)],
            env: BTreeMap::from([
                ("LANG".to_string(), "C.UTF-8".to_string()),
                ("PATH".to_string(), DEFAULT_PATH.to_string()),
            ]),
            workdir: Some(format!("/home/{BASE_USER}")),
            user: BASE_USER.to_string(),
            source: "debootstrap".to_string(),
            created_at: now_rfc3339(),
            size_bytes,
            start: None,
        };
        self.publish(staging, &template, &progress)
    }

    /// The cached debootstrap tarball, downloading it first if missing.
    async fn debootstrap_tarball(
        &self,
        progress: &(impl Fn(BuildProgress) + Send + Sync),
    ) -> Result<PathBuf, TemplateError> {
        let name = debootstrap_cache_name(BASE_SUITE, BASE_VARIANT, BASE_PACKAGES);
        let tarball = self.cache_dir().join(&name);
        if tarball.exists() {
            report(
                progress,
                "download",
                &format!("using cached {name}"),
                Some(0.4),
            );
            return Ok(tarball);
        }
        report(
            progress,
            "download",
            &format!("downloading packages from {BASE_MIRROR}"),
            Some(0.0),
        );
        let work = ScratchDir::create(self.cache_dir().join(fsutil::unique_name(".debootstrap")))?;
        let partial = work.path().join("packages.tar");
        let mut command = debootstrap_command();
        command
            .arg(format!("--make-tarball={}", partial.display()))
            .arg(BASE_SUITE)
            .arg(work.path().join("target"))
            .arg(BASE_MIRROR);
        run_debootstrap(command, progress).await?;
        std::fs::rename(&partial, &tarball).ctx(|| format!("caching {}", tarball.display()))?;
        Ok(tarball)
    }
}

fn debootstrap_command() -> Command {
    let mut command = Command::new("debootstrap");
    command
        .arg(format!("--variant={BASE_VARIANT}"))
        .arg(format!("--include={}", BASE_PACKAGES.join(",")));
    command
}

async fn run_debootstrap(
    command: Command,
    progress: &(impl Fn(BuildProgress) + Send + Sync),
) -> Result<(), TemplateError> {
    let state = std::sync::Mutex::new(DebootstrapProgress::default());
    let on_line = |line: &str| {
        let (phase, fraction) = match state.lock() {
            Ok(mut state) => state.line(line),
            Err(_) => ("debootstrap".to_string(), None),
        };
        report(progress, &phase, line, fraction);
    };
    run_streaming(command, "debootstrap", &on_line).await
}

async fn install_from_tarball(
    tarball: &Path,
    rootfs: &Path,
    progress: &(impl Fn(BuildProgress) + Send + Sync),
) -> Result<(), TemplateError> {
    let mut command = debootstrap_command();
    command
        .arg(format!("--unpack-tarball={}", tarball.display()))
        .arg(BASE_SUITE)
        .arg(rootfs)
        .arg(BASE_MIRROR);
    run_debootstrap(command, progress).await.map_err(|e| {
        TemplateError::BuildFailed(format!(
            "{e}\n(if the cached package tarball {} is corrupt, delete it to download again)",
            tarball.display()
        ))
    })
}

/// Runs a command inside the rootfs with `chroot`, with a clean environment.
async fn in_chroot(rootfs: &Path, args: &[&str]) -> Result<(), TemplateError> {
    let mut command = Command::new("chroot");
    command
        .env_clear()
        .env("PATH", DEFAULT_PATH)
        .env("LANG", "C.UTF-8")
        .env("DEBIAN_FRONTEND", "noninteractive")
        .arg(rootfs)
        .args(args);
    run_streaming(
        command,
        &format!("chroot {}", args.join(" ")),
        &|line: &str| {
            tracing::debug!(line, "chroot");
        },
    )
    .await
}

fn write_file(rootfs: &Path, path: &str, contents: &str, mode: u32) -> Result<(), TemplateError> {
    use std::os::unix::fs::PermissionsExt;
    let file = rootfs.join(path);
    std::fs::write(&file, contents).ctx(|| format!("writing {}", file.display()))?;
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(mode))
        .ctx(|| format!("setting mode of {}", file.display()))
}

/// Removes the entries inside `dir` (not `dir` itself), if it exists.
fn empty_dir(dir: &Path) -> Result<(), TemplateError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(TemplateError::io(format!("listing {}", dir.display()), e)),
    };
    for entry in entries {
        let path = entry.ctx(|| format!("listing {}", dir.display()))?.path();
        let removed = if path.is_dir() && !path.is_symlink() {
            std::fs::remove_dir_all(&path)
        } else {
            std::fs::remove_file(&path)
        };
        removed.ctx(|| format!("removing {}", path.display()))?;
    }
    Ok(())
}

/// Adds `user` with passwordless sudo, sets hostname/locale placeholders, strips caches and the
/// machine id so every sandbox starts clean.
async fn configure_rootfs(rootfs: &Path) -> Result<(), TemplateError> {
    in_chroot(
        rootfs,
        &[
            "useradd",
            "--create-home",
            "--uid",
            "1000",
            "--user-group",
            "--groups",
            "sudo",
            "--shell",
            "/bin/bash",
            BASE_USER,
        ],
    )
    .await?;
    write_file(
        rootfs,
        "etc/sudoers.d/90-burrow-user",
        &format!("{BASE_USER} ALL=(ALL:ALL) NOPASSWD: ALL\n"),
        0o440,
    )?;
    in_chroot(rootfs, &["visudo", "--check", "--quiet"]).await?;
    write_file(rootfs, "etc/hostname", "burrow\n", 0o644)?;
    write_file(
        rootfs,
        "etc/hosts",
        "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n",
        0o644,
    )?;
    // The runtime writes the sandbox's nameservers; don't leak the build host's.
    write_file(
        rootfs,
        "etc/resolv.conf",
        "# written by burrow at sandbox start\n",
        0o644,
    )?;
    write_file(rootfs, "etc/machine-id", "", 0o444)?;
    write_file(rootfs, "etc/default/locale", "LANG=C.UTF-8\n", 0o644)?;
    in_chroot(rootfs, &["apt-get", "clean"]).await?;
    empty_dir(&rootfs.join("var/lib/apt/lists"))?;
    std::fs::create_dir_all(rootfs.join("var/lib/apt/lists/partial"))
        .ctx(|| "recreating apt lists dir".to_string())?;
    for log in [
        "var/log/bootstrap.log",
        "var/log/dpkg.log",
        "var/log/alternatives.log",
    ] {
        match std::fs::remove_file(rootfs.join(log)) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(TemplateError::io(format!("removing {log}"), e)),
        }
    }
    empty_dir(&rootfs.join("var/log/apt"))?;
    empty_dir(&rootfs.join("var/cache/debconf/tmp"))?;
    Ok(())
}

pub(crate) fn report(
    progress: &(impl Fn(BuildProgress) + ?Sized),
    phase: &str,
    message: &str,
    fraction: Option<f32>,
) {
    progress(BuildProgress {
        phase: phase.to_string(),
        message: message.to_string(),
        fraction,
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_name_depends_on_package_set_not_order() {
        let a = debootstrap_cache_name("bookworm", "minbase", &["git", "curl"]);
        let b = debootstrap_cache_name("bookworm", "minbase", &["curl", "git"]);
        let c = debootstrap_cache_name("bookworm", "minbase", &["curl"]);
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert!(a.starts_with("debootstrap-bookworm-") && a.ends_with(".tar"));
    }

    #[test]
    fn maps_debootstrap_lines_to_progress() {
        let mut state = DebootstrapProgress::default();
        assert_eq!(state.line("I: Target architecture can be executed").1, None);
        let (phase, first) = state.line("I: Retrieving libc6 2.36-9");
        assert_eq!(phase, "download");
        let (_, second) = state.line("I: Retrieving bash 5.2");
        assert!(second.unwrap() > first.unwrap());
        assert_eq!(
            state.line("I: Validating bash 5.2"),
            ("download".to_string(), second)
        );
        assert_eq!(
            state.line("I: Extracting bash..."),
            ("extract".to_string(), Some(0.45))
        );
        let (phase, fraction) = state.line("I: Configuring the base system...");
        assert_eq!((phase.as_str(), fraction), ("install", Some(0.8)));
        assert_eq!(
            state.line("I: Configuring nano..."),
            ("install".to_string(), Some(0.8))
        );
        for _ in 0..1000 {
            state.line("I: Retrieving x");
        }
        assert!(state.line("I: Retrieving x").1.unwrap() <= 0.4);
    }
}
