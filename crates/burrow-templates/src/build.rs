//! Building a template from a parent template plus steps (RUN, ENV, WORKDIR, COPY, USER).
//!
//! ENV/WORKDIR/USER only change the record. COPY writes a new layer; RUN runs the command in a
//! sandbox of the layers so far (through the [`StepRunner`]) and takes its upper dir, normalised,
//! as a new layer. Layers are numbered in creation order under `layers/`; the record lists them
//! top-most first, followed by the parent's layers.

use std::path::{Path, PathBuf};

use tokio::process::Command;

use crate::base::report;
use crate::command::run_streaming;
use crate::error::IoContext;
use crate::fsutil;
use crate::layer_writer::{EntryMeta, ImportLimits, LayerWriter, RelPath};
use crate::merged_view::directory_chain;
use crate::name::{validate_env_key, validate_name, validate_user};
use crate::normalize::normalize_upper;
use crate::store::now_rfc3339;
use crate::tree_copy::{Ownership, copy_tree};
use crate::{
    BuildProgress, BuildStep, ReadyCheck, StartCommand, StepRunner, Template, TemplateError,
    TemplateStore,
};

/// Checks every step before any work starts, so a typo in step 9 fails in milliseconds.
pub fn validate_steps(steps: &[BuildStep]) -> Result<(), TemplateError> {
    for (i, step) in steps.iter().enumerate() {
        let n = i + 1;
        let invalid = |what: String| TemplateError::Invalid(format!("step {n}: {what}"));
        match step {
            BuildStep::Run { command } => {
                if command.trim().is_empty() || command.contains('\0') {
                    return Err(invalid(
                        "RUN needs a command (without NUL bytes)".to_string(),
                    ));
                }
            }
            BuildStep::Env { key, value } => {
                validate_env_key(key).map_err(|e| invalid(e.to_string()))?;
                if value.contains('\0') {
                    return Err(invalid(format!("ENV {key}: value contains a NUL byte")));
                }
            }
            BuildStep::Workdir { path } => {
                check_absolute(path).map_err(|e| invalid(format!("WORKDIR: {e}")))?
            }
            BuildStep::User { name } => validate_user(name).map_err(|e| invalid(e.to_string()))?,
            BuildStep::Start { command } | BuildStep::ReadyCommand { command } => {
                if command.trim().is_empty() || command.contains('\0') {
                    return Err(invalid(
                        "START and READY CMD need a command (without NUL bytes)".to_string(),
                    ));
                }
            }
            BuildStep::ReadyPort { port } => {
                if *port == 0 {
                    return Err(invalid("READY PORT needs a port in 1..=65535".to_string()));
                }
            }
            BuildStep::Copy { src, dest } => {
                check_absolute(dest).map_err(|e| invalid(format!("COPY: {e}")))?;
                std::fs::symlink_metadata(src)
                    .map_err(|e| invalid(format!("COPY source {}: {e}", src.display())))?;
            }
        }
    }
    Ok(())
}

/// A READY step needs a start command to apply to: an earlier START, or the parent's.
fn check_ready_after_start(
    parent_has_start: bool,
    steps: &[BuildStep],
) -> Result<(), TemplateError> {
    let mut has_start = parent_has_start;
    for (i, step) in steps.iter().enumerate() {
        match step {
            BuildStep::Start { .. } => has_start = true,
            BuildStep::ReadyPort { .. } | BuildStep::ReadyCommand { .. } if !has_start => {
                return Err(TemplateError::Invalid(format!(
                    "step {}: READY needs a START before it (in this build or the parent template)",
                    i + 1
                )));
            }
            _ => {}
        }
    }
    Ok(())
}

fn set_ready(start: &mut Option<StartCommand>, ready: ReadyCheck) -> Result<(), TemplateError> {
    // check_ready_after_start ran before any work, so this only guards against a logic slip.
    let start = start
        .as_mut()
        .ok_or_else(|| TemplateError::Invalid("READY needs a START before it".to_string()))?;
    start.ready = Some(ready);
    Ok(())
}

fn check_absolute(path: &str) -> Result<(), String> {
    if !path.starts_with('/') || path.contains('\0') {
        return Err(format!("'{path}' must be an absolute path"));
    }
    if Path::new(path)
        .components()
        .any(|c| c == std::path::Component::ParentDir)
    {
        return Err(format!("'{path}' must not contain '..'"));
    }
    Ok(())
}

/// Where COPY puts `src`: `dest/<name of src>` when `dest` ends with `/` and `src` is not a
/// directory, else `dest` itself.
pub fn copy_destination(
    src: &Path,
    dest: &str,
    src_is_dir: bool,
) -> Result<RelPath, TemplateError> {
    let target = match (dest.ends_with('/'), src_is_dir, src.file_name()) {
        (true, false, Some(name)) => Path::new(dest).join(name),
        _ => PathBuf::from(dest),
    };
    RelPath::parse(&target)
}

/// Writes a COPY layer: the destination's parent dirs with the metadata they have in the layers
/// below (so COPY to /home/user/x does not turn /home/user root-owned), then the copy, root-owned.
fn write_copy_layer(
    layer: &Path,
    lower: &[PathBuf],
    src: &Path,
    dest: &str,
) -> Result<(), TemplateError> {
    let src_is_dir = std::fs::metadata(src).map(|m| m.is_dir()).unwrap_or(false)
        && !std::fs::symlink_metadata(src)
            .map(|m| m.is_symlink())
            .unwrap_or(true);
    let target = copy_destination(src, dest, src_is_dir)?;
    if target.is_root() && !src_is_dir {
        return Err(TemplateError::Invalid(
            "COPY of a file needs a destination other than /".to_string(),
        ));
    }
    let mut writer = LayerWriter::open(layer, ImportLimits::default())?;
    if let Some(parent) = target.as_path().parent() {
        for (dir, meta) in directory_chain(lower, parent)? {
            writer.dir(
                &RelPath::parse(&dir)?,
                meta.unwrap_or(EntryMeta::root(0o755)),
            )?;
        }
    }
    copy_tree(
        src,
        &target,
        &mut writer,
        Ownership::Force { uid: 0, gid: 0 },
        &|message: &str| {
            tracing::warn!(message, "COPY");
        },
    )?;
    // Copying a directory onto an existing one merges into it: keep the existing owner and mode
    // (COPY dir /home/user must not hand /home/user to root).
    if src_is_dir
        && !target.is_root()
        && let Some((_, Some(existing))) = directory_chain(lower, target.as_path())?.pop()
    {
        writer.dir(&target, existing)?;
    }
    Ok(())
}

/// Moves a (normalised) upper dir to `layer`; across filesystems, copies it with `cp -a`, which
/// keeps whiteout devices and xattrs.
async fn move_dir(from: &Path, to: &Path) -> Result<(), TemplateError> {
    match std::fs::rename(from, to) {
        Ok(()) => return Ok(()),
        Err(e) if e.raw_os_error() == Some(rustix::io::Errno::XDEV.raw_os_error()) => {}
        Err(e) => {
            return Err(TemplateError::io(
                format!("moving {} to {}", from.display(), to.display()),
                e,
            ));
        }
    }
    let mut command = Command::new("cp");
    command
        .arg("-a")
        .arg("--no-target-directory")
        .arg(from)
        .arg(to);
    run_streaming(command, "cp -a", &|_: &str| {}).await
}

/// Files the launcher writes into every sandbox's upper dir (see `burrow-launch`'s `seed_upper`):
/// rewritten at each sandbox start, so a RUN layer must not keep the build sandbox's copies.
pub const RUNTIME_OWNED_PATHS: [&str; 4] =
    [".burrow", "etc/resolv.conf", "etc/hostname", "etc/hosts"];

/// Drops [`RUNTIME_OWNED_PATHS`] from an upper dir, and `/etc` if that leaves it empty.
pub fn strip_runtime_files(upper: &Path) -> Result<(), TemplateError> {
    for rel in RUNTIME_OWNED_PATHS {
        let path = upper.join(rel);
        let removed = match std::fs::symlink_metadata(&path) {
            Ok(meta) if meta.is_dir() => std::fs::remove_dir_all(&path),
            Ok(_) => std::fs::remove_file(&path),
            Err(_) => continue,
        };
        removed.ctx(|| format!("removing /{rel} from the RUN layer"))?;
    }
    let etc = upper.join("etc");
    if std::fs::symlink_metadata(&etc).is_ok_and(|m| m.is_dir()) && is_empty_dir(&etc)? {
        std::fs::remove_dir(&etc).ctx(|| "removing empty /etc from the RUN layer".to_string())?;
    }
    Ok(())
}

fn is_empty_dir(dir: &Path) -> Result<bool, TemplateError> {
    Ok(std::fs::read_dir(dir)
        .ctx(|| format!("listing {}", dir.display()))?
        .next()
        .is_none())
}

impl TemplateStore {
    /// Builds template `name` from `parent` plus `steps`. RUN steps go through `runner`; the
    /// builder takes over (moves) the upper dir the runner returns. Nothing is visible under
    /// `name` until every step succeeded.
    pub async fn build<R: StepRunner>(
        &self,
        name: &str,
        parent: &str,
        steps: Vec<BuildStep>,
        runner: &R,
        progress: impl Fn(BuildProgress) + Send + Sync,
    ) -> Result<Template, TemplateError> {
        validate_name(name)?;
        let parent_template = self.get(parent)?;
        validate_steps(&steps)?;
        check_ready_after_start(parent_template.start.is_some(), &steps)?;
        let staging = self.staging(name)?;
        let layers_dir = staging.path().join("layers");
        std::fs::create_dir_all(&layers_dir)
            .ctx(|| format!("creating {}", layers_dir.display()))?;
        let mut layers = parent_template.layers.clone();
        let mut own_layers = 0usize;
        let mut env = parent_template.env.clone();
        let mut workdir = parent_template.workdir.clone();
        let mut user = parent_template.user.clone();
        let mut start = parent_template.start.clone();
        let total = steps.len();
        for (i, step) in steps.into_iter().enumerate() {
            let phase = format!("step {}/{total}", i + 1);
            let fraction = Some(i as f32 / total.max(1) as f32);
            match step {
                BuildStep::Env { key, value } => {
                    report(&progress, &phase, &format!("ENV {key}={value}"), fraction);
                    env.insert(key, value);
                }
                BuildStep::Workdir { path } => {
                    report(&progress, &phase, &format!("WORKDIR {path}"), fraction);
                    workdir = Some(path);
                }
                BuildStep::User { name } => {
                    report(&progress, &phase, &format!("USER {name}"), fraction);
                    user = name;
                }
                BuildStep::Start { command } => {
                    report(&progress, &phase, &format!("START {command}"), fraction);
                    start = Some(StartCommand {
                        command,
                        user: user.clone(),
                        workdir: workdir.clone(),
                        ready: None,
                    });
                }
                BuildStep::ReadyPort { port } => {
                    report(&progress, &phase, &format!("READY PORT {port}"), fraction);
                    set_ready(&mut start, ReadyCheck::Port { port })?;
                }
                BuildStep::ReadyCommand { command } => {
                    report(&progress, &phase, &format!("READY CMD {command}"), fraction);
                    set_ready(&mut start, ReadyCheck::Command { command })?;
                }
                BuildStep::Copy { src, dest } => {
                    report(
                        &progress,
                        &phase,
                        &format!("COPY {} {dest}", src.display()),
                        fraction,
                    );
                    let layer = layers_dir.join(own_layers.to_string());
                    let lower = layers.clone();
                    let copy_layer = layer.clone();
                    tokio::task::spawn_blocking(move || {
                        write_copy_layer(&copy_layer, &lower, &src, &dest)
                    })
                    .await
                    .map_err(|e| TemplateError::BuildFailed(format!("COPY task failed: {e}")))?
                    .map_err(|e| TemplateError::BuildFailed(format!("{phase}: {e}")))?;
                    layers.insert(0, layer);
                    own_layers += 1;
                }
                BuildStep::Run { command } => {
                    report(&progress, &phase, &format!("RUN {command}"), fraction);
                    let output = |line: &str| report(&progress, &phase, line, None);
                    let outcome = runner
                        .run(&layers, &env, workdir.as_deref(), &command, &output)
                        .await?;
                    if outcome.exit_code != 0 {
                        return Err(TemplateError::BuildFailed(format!(
                            "{phase}: RUN `{command}` exited with code {}",
                            outcome.exit_code
                        )));
                    }
                    let upper = outcome.upper_dir.clone();
                    let uid_base = outcome.uid_base;
                    let empty = tokio::task::spawn_blocking(move || {
                        strip_runtime_files(&upper)?;
                        normalize_upper(&upper, uid_base)?;
                        is_empty_dir(&upper)
                    })
                    .await
                    .map_err(|e| {
                        TemplateError::BuildFailed(format!("normalising task failed: {e}"))
                    })??;
                    if empty {
                        report(&progress, &phase, "no filesystem changes", None);
                        continue;
                    }
                    let layer = layers_dir.join(own_layers.to_string());
                    move_dir(&outcome.upper_dir, &layer).await?;
                    layers.insert(0, layer);
                    own_layers += 1;
                }
            }
        }
        let size_bytes = fsutil::disk_usage(&layers_dir)?;
        // Own layers are listed under their final (published) paths.
        let mut final_layers: Vec<PathBuf> = (0..own_layers)
            .rev()
            .map(|k| self.layer_path(name, k))
            .collect();
        final_layers.extend(parent_template.layers.iter().cloned());
        let template = Template {
            name: name.to_string(),
            layers: final_layers,
            env,
            workdir,
            user,
            source: format!("build:{parent}"),
            created_at: now_rfc3339(),
            size_bytes,
            start,
        };
        // The parent may have been removed meanwhile; never publish a template with dangling layers.
        self.get(parent)?;
        self.publish(staging, &template, &progress)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validates_steps() {
        let ok = vec![
            BuildStep::Env {
                key: "A".into(),
                value: "1".into(),
            },
            BuildStep::Workdir {
                path: "/app".into(),
            },
            BuildStep::User {
                name: "user".into(),
            },
            BuildStep::Run {
                command: "true".into(),
            },
        ];
        assert!(validate_steps(&ok).is_ok());
        for bad in [
            BuildStep::Env {
                key: "1A".into(),
                value: "1".into(),
            },
            BuildStep::Workdir { path: "app".into() },
            BuildStep::Workdir {
                path: "/a/../b".into(),
            },
            BuildStep::User { name: "a b".into() },
            BuildStep::Run {
                command: "  ".into(),
            },
            BuildStep::Copy {
                src: "/nonexistent/x".into(),
                dest: "/x".into(),
            },
            BuildStep::Copy {
                src: "/etc/hostname".into(),
                dest: "rel".into(),
            },
            BuildStep::Start {
                command: " ".into(),
            },
            BuildStep::ReadyPort { port: 0 },
            BuildStep::ReadyCommand {
                command: "a\0b".into(),
            },
        ] {
            let err = validate_steps(std::slice::from_ref(&bad))
                .unwrap_err()
                .to_string();
            assert!(err.contains("step 1"), "{err}");
        }
    }

    #[test]
    fn ready_needs_a_start() {
        let start = BuildStep::Start {
            command: "server".into(),
        };
        let ready = BuildStep::ReadyPort { port: 49999 };
        assert!(check_ready_after_start(false, &[start.clone(), ready.clone()]).is_ok());
        assert!(check_ready_after_start(true, std::slice::from_ref(&ready)).is_ok());
        let err = check_ready_after_start(false, &[ready.clone(), start])
            .unwrap_err()
            .to_string();
        assert!(err.contains("step 1") && err.contains("START"), "{err}");
    }

    #[test]
    fn start_steps_round_trip_as_json() {
        let steps = vec![
            BuildStep::Start {
                command: "server".into(),
            },
            BuildStep::ReadyPort { port: 49999 },
            BuildStep::ReadyCommand {
                command: "curl -sf localhost:1/".into(),
            },
        ];
        let json = serde_json::to_value(&steps).unwrap();
        assert_eq!(json[0]["type"], "start");
        assert_eq!(json[1]["type"], "ready_port");
        assert_eq!(json[2]["type"], "ready_command");
        let back: Vec<BuildStep> = serde_json::from_value(json).unwrap();
        assert_eq!(back, steps);
    }

    #[test]
    fn strips_launcher_files_from_run_layers() {
        let upper = tempfile::tempdir().unwrap();
        let root = upper.path();
        std::fs::create_dir_all(root.join(".burrow")).unwrap();
        std::fs::write(root.join(".burrow/agent"), "").unwrap();
        std::fs::create_dir_all(root.join("etc")).unwrap();
        for f in ["resolv.conf", "hostname", "hosts"] {
            std::fs::write(root.join("etc").join(f), "x").unwrap();
        }
        strip_runtime_files(root).unwrap();
        assert!(is_empty_dir(root).unwrap());
        std::fs::create_dir_all(root.join("etc")).unwrap();
        std::fs::write(root.join("etc/hostname"), "x").unwrap();
        std::fs::write(root.join("etc/motd"), "kept").unwrap();
        strip_runtime_files(root).unwrap();
        assert!(!root.join("etc/hostname").exists());
        assert!(root.join("etc/motd").exists());
    }

    #[test]
    fn copy_destinations() {
        let d =
            |src: &str, dest: &str, dir: bool| copy_destination(Path::new(src), dest, dir).unwrap();
        assert_eq!(
            d("/h/a.txt", "/opt/", false).as_path(),
            Path::new("opt/a.txt")
        );
        assert_eq!(
            d("/h/a.txt", "/opt/b.txt", false).as_path(),
            Path::new("opt/b.txt")
        );
        assert_eq!(d("/h/dir", "/opt/", true).as_path(), Path::new("opt"));
    }
}
