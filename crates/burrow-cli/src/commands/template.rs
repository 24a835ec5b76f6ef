//! `burrow template build|ls|rm`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use burrow_templates::{BASE_TEMPLATE, BuildProgress, BuildStep, TemplateError, TemplateStore};
use clap::{Args, Subcommand};
use futures::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{Value, json};

use super::build_upload;
use crate::client::{ApiClient, ndjson};
use crate::output;

#[derive(Subcommand)]
pub enum TemplateCommand {
    /// Build a template: `base` (debootstrap), from a rootfs dir/tarball, an OCI image layout, or
    /// an existing template plus build steps.
    Build(BuildArgs),
    /// List templates.
    Ls {
        #[arg(long)]
        json: bool,
    },
    /// Remove a template (refused while sandboxes or other templates use it).
    Rm { name: String },
}

#[derive(Args)]
pub struct BuildArgs {
    /// Name of the new template.
    pub name: String,
    /// Import a root filesystem from a directory or a .tar/.tar.gz file (uploaded to the server;
    /// a directory is packed as a tar first).
    #[arg(long, conflicts_with_all = ["from_oci", "from", "file"])]
    pub from_rootfs: Option<PathBuf>,
    /// Import an OCI image layout: a directory (packed as a tar and uploaded) or a tar of one.
    #[arg(long, conflicts_with_all = ["from", "file"])]
    pub from_oci: Option<PathBuf>,
    /// Image reference inside the OCI layout (its `org.opencontainers.image.ref.name`).
    #[arg(long, requires = "from_oci")]
    pub reference: Option<String>,
    /// Parent template for build steps.
    #[arg(long)]
    pub from: Option<String>,
    /// A build file: `FROM parent`, then `RUN`, `ENV K=V`, `WORKDIR`, `COPY src dest`, `USER`,
    /// `START cmd`, `READY PORT n` / `READY CMD cmd` lines. COPY sources are paths inside the
    /// build file's directory: they are packed into a tar and uploaded with the build.
    #[arg(long, short)]
    pub file: Option<PathBuf>,
    /// Build in this process instead of through the server (base, rootfs and OCI imports only),
    /// reading local paths directly: for the root operator on the server host.
    #[arg(long)]
    pub local: bool,
    /// Do nothing if a template with this name exists.
    #[arg(long)]
    pub if_missing: bool,
}

pub async fn run(
    cmd: TemplateCommand,
    data_dir: &Path,
    api: impl Fn() -> anyhow::Result<ApiClient>,
) -> anyhow::Result<ExitCode> {
    match cmd {
        TemplateCommand::Build(args) if args.local => build_local(args, data_dir).await,
        TemplateCommand::Build(args) => build_remote(&api()?, args).await,
        TemplateCommand::Ls { json } => {
            let rows = list_templates(&api()?).await?;
            if json {
                output::json(&Value::Array(rows));
            } else {
                output::table(
                    &rows,
                    &[
                        ("NAME", "name"),
                        ("SOURCE", "source"),
                        ("SIZE BYTES", "size_bytes"),
                        ("CREATED", "created_at"),
                    ],
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        TemplateCommand::Rm { name } => {
            api()?.delete(&format!("/v1/templates/{name}")).await?;
            println!("{name}");
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn progress_bar() -> ProgressBar {
    let bar = ProgressBar::new(1000);
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {bar:30} {prefix:>10} {wide_msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    bar.enable_steady_tick(std::time::Duration::from_millis(120));
    bar
}

fn show(bar: &ProgressBar, p: &BuildProgress) {
    bar.set_prefix(p.phase.clone());
    bar.set_message(p.message.clone());
    if let Some(f) = p.fraction {
        bar.set_position((f.clamp(0.0, 1.0) * 1000.0) as u64);
    }
}

async fn build_local(args: BuildArgs, data_dir: &Path) -> anyhow::Result<ExitCode> {
    let store = TemplateStore::open(data_dir).context("opening the template store")?;
    if args.if_missing {
        match store.get(&args.name) {
            Ok(_) => {
                println!("template '{}' exists", args.name);
                return Ok(ExitCode::SUCCESS);
            }
            Err(TemplateError::NotFound(_)) => {}
            Err(e) => return Err(e.into()),
        }
    }
    let bar = progress_bar();
    let progress = |p: BuildProgress| show(&bar, &p);
    // Imports are blocking file work; run them off the async runtime's workers.
    let template = if let Some(path) = args.from_rootfs.clone() {
        let (store, name, bar) = (store.clone(), args.name.clone(), bar.clone());
        tokio::task::spawn_blocking(move || store.import_rootfs(&name, &path, |p| show(&bar, &p)))
            .await??
    } else if let Some(path) = args.from_oci.clone() {
        let (store, name, bar, reference) = (
            store.clone(),
            args.name.clone(),
            bar.clone(),
            args.reference.clone(),
        );
        tokio::task::spawn_blocking(move || {
            store.import_oci(&name, &path, reference.as_deref(), |p| show(&bar, &p))
        })
        .await??
    } else if args.from.is_some() || args.file.is_some() {
        bail!("builds with steps run sandboxes, so they go through the server: drop --local");
    } else if args.name == BASE_TEMPLATE {
        store.build_base(progress).await?
    } else {
        bail!(
            "say what to build from: --from-rootfs, --from-oci, or --from/--file (only `base` builds with no source)"
        );
    };
    bar.finish_and_clear();
    println!(
        "built template '{}' ({} layers)",
        template.name,
        template.layers.len()
    );
    Ok(ExitCode::SUCCESS)
}

/// `GET /v1/templates` answers `{"templates": [...]}`.
async fn list_templates(api: &ApiClient) -> anyhow::Result<Vec<Value>> {
    let list: Value = api.get_json("/v1/templates").await?;
    match list.get("templates").and_then(Value::as_array) {
        Some(rows) => Ok(rows.clone()),
        None => anyhow::bail!("unexpected answer to GET /v1/templates: {list}"),
    }
}

async fn build_remote(api: &ApiClient, args: BuildArgs) -> anyhow::Result<ExitCode> {
    if args.if_missing {
        let exists = list_templates(api)
            .await?
            .iter()
            .any(|t| t.get("name").and_then(Value::as_str) == Some(&args.name));
        if exists {
            println!("template '{}' exists", args.name);
            return Ok(ExitCode::SUCCESS);
        }
    }
    // The server reads no file of its host for us: what the build needs is uploaded.
    let from = if let Some(path) = &args.from_rootfs {
        json!({"type": "rootfs", "upload": upload_file_or_dir(api, path).await?})
    } else if let Some(path) = &args.from_oci {
        json!({"type": "oci", "upload": upload_file_or_dir(api, path).await?, "reference": args.reference})
    } else if args.from.is_some() || args.file.is_some() {
        let (parent, steps) = build_file(args.from.as_deref(), args.file.as_deref())?;
        let sources: Vec<PathBuf> = steps
            .iter()
            .filter_map(|step| match step {
                BuildStep::Copy { src, .. } => Some(src.clone()),
                _ => None,
            })
            .collect();
        let context = if sources.is_empty() {
            None
        } else {
            let dir = context_dir(args.file.as_deref());
            Some(
                build_upload::pack_and_upload(api, move |out| {
                    build_upload::pack_copy_context(&dir, &sources, out)
                })
                .await
                .context("uploading the build context")?,
            )
        };
        json!({"type": "template", "parent": parent, "steps": steps, "context": context})
    } else {
        json!({"type": "debootstrap"})
    };
    let resp = api
        .send(
            api.request(reqwest::Method::POST, "/v1/templates")
                .json(&json!({"name": args.name, "from": from})),
        )
        .await?;
    let bar = progress_bar();
    let mut events = Box::pin(ndjson::<Value>(resp));
    while let Some(event) = events.next().await {
        let event = event?;
        match event.get("type").and_then(Value::as_str) {
            Some("done") => {
                bar.finish_and_clear();
                println!("built template '{}'", args.name);
                return Ok(ExitCode::SUCCESS);
            }
            Some("error") => {
                bar.finish_and_clear();
                bail!(
                    "build failed: {}",
                    event
                        .get("message")
                        .and_then(Value::as_str)
                        .unwrap_or("unknown error")
                );
            }
            _ => {
                if let Ok(p) = serde_json::from_value::<BuildProgress>(event.clone()) {
                    show(&bar, &p);
                }
            }
        }
    }
    bar.finish_and_clear();
    bail!("the server closed the build stream without a result")
}

/// Uploads a tarball as it is, or a directory packed as a tar; returns the upload's sha256.
async fn upload_file_or_dir(api: &ApiClient, path: &Path) -> anyhow::Result<String> {
    let meta = std::fs::metadata(path).with_context(|| format!("reading {}", path.display()))?;
    if meta.is_dir() {
        let dir = path.to_path_buf();
        build_upload::pack_and_upload(api, move |out| build_upload::pack_dir(&dir, out)).await
    } else {
        build_upload::upload(api, path).await
    }
}

/// COPY sources are relative to the build file's directory (the build context).
fn context_dir(file: Option<&Path>) -> PathBuf {
    match file.and_then(Path::parent) {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Reads a build file (and/or `--from`) into a parent template and steps.
fn build_file(from: Option<&str>, file: Option<&Path>) -> anyhow::Result<(String, Vec<BuildStep>)> {
    let text = match file {
        Some(path) => {
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?
        }
        None => String::new(),
    };
    let (file_parent, steps) = parse_build_file(&text)?;
    let parent = from
        .map(str::to_string)
        .or(file_parent)
        .context("no parent template: give --from or a FROM line")?;
    Ok((parent, steps))
}

/// Parses the Dockerfile-like build format. `COPY` sources stay relative: they are paths inside
/// the build context (the build file's directory), which is uploaded with the build.
pub fn parse_build_file(text: &str) -> anyhow::Result<(Option<String>, Vec<BuildStep>)> {
    let mut parent = None;
    let mut steps = Vec::new();
    for (n, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (word, rest) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
        let rest = rest.trim();
        let lineno = n + 1;
        let need = |what: &str| -> anyhow::Result<()> {
            if rest.is_empty() {
                bail!("line {lineno}: {word} needs {what}");
            }
            Ok(())
        };
        match word.to_ascii_uppercase().as_str() {
            "FROM" => {
                need("a template name")?;
                if parent.is_some() || !steps.is_empty() {
                    bail!("line {lineno}: FROM must come first, once");
                }
                parent = Some(rest.to_string());
            }
            "RUN" => {
                need("a command")?;
                steps.push(BuildStep::Run {
                    command: rest.to_string(),
                });
            }
            "ENV" => {
                need("KEY=VALUE")?;
                let (key, value) = rest
                    .split_once('=')
                    .or_else(|| rest.split_once(char::is_whitespace))
                    .with_context(|| format!("line {lineno}: ENV needs KEY=VALUE"))?;
                steps.push(BuildStep::Env {
                    key: key.trim().to_string(),
                    value: value.trim().to_string(),
                });
            }
            "WORKDIR" => {
                need("a path")?;
                steps.push(BuildStep::Workdir {
                    path: rest.to_string(),
                });
            }
            "USER" => {
                need("a user name")?;
                steps.push(BuildStep::User {
                    name: rest.to_string(),
                });
            }
            "START" => {
                need("a command")?;
                steps.push(BuildStep::Start {
                    command: rest.to_string(),
                });
            }
            "READY" => {
                let (kind, arg) = rest.split_once(char::is_whitespace).unwrap_or((rest, ""));
                let arg = arg.trim();
                match kind.to_ascii_uppercase().as_str() {
                    "PORT" => {
                        let port = arg.parse::<u16>().ok().filter(|p| *p != 0).with_context(|| {
                            format!("line {lineno}: READY PORT needs a port number (1-65535), got '{arg}'")
                        })?;
                        steps.push(BuildStep::ReadyPort { port });
                    }
                    "CMD" if !arg.is_empty() => steps.push(BuildStep::ReadyCommand {
                        command: arg.to_string(),
                    }),
                    _ => bail!("line {lineno}: READY needs PORT <number> or CMD <command>"),
                }
            }
            "COPY" => {
                let parts: Vec<&str> = rest.split_whitespace().collect();
                let [src, dest] = parts.as_slice() else {
                    bail!("line {lineno}: COPY needs exactly a source and a destination");
                };
                let src = Path::new(src);
                if src.has_root()
                    || src
                        .components()
                        .any(|c| c == std::path::Component::ParentDir)
                {
                    bail!(
                        "line {lineno}: COPY source '{}' must be inside the build file's directory (no '..', not absolute)",
                        src.display()
                    );
                }
                steps.push(BuildStep::Copy {
                    src: src.to_path_buf(),
                    dest: dest.to_string(),
                });
            }
            other => bail!(
                "line {lineno}: unknown instruction {other} (use FROM, RUN, ENV, WORKDIR, COPY, USER, START, READY)"
            ),
        }
    }
    Ok((parent, steps))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_build_files() {
        let text = "# comment\nFROM base\nRUN apt-get update && apt-get install -y jq\nENV A=1\nENV B two words\nWORKDIR /srv\nUSER user\nCOPY app.py /srv/app.py\n";
        let (parent, steps) = parse_build_file(text).unwrap();
        assert_eq!(parent.as_deref(), Some("base"));
        assert_eq!(steps.len(), 6);
        assert_eq!(
            steps[2],
            BuildStep::Env {
                key: "B".into(),
                value: "two words".into()
            }
        );
        assert_eq!(
            steps[5],
            BuildStep::Copy {
                src: "app.py".into(),
                dest: "/srv/app.py".into()
            }
        );
    }

    #[test]
    fn rejects_bad_build_files() {
        assert!(parse_build_file("RUN\n").is_err());
        assert!(parse_build_file("FETCH x\n").is_err());
        assert!(parse_build_file("RUN true\nFROM base\n").is_err());
        assert!(parse_build_file("COPY onlyone\n").is_err());
        assert!(parse_build_file("COPY /etc/passwd /x\n").is_err());
        assert!(parse_build_file("COPY ../secret /x\n").is_err());
        for bad in [
            "READY\n",
            "READY PORT\n",
            "READY PORT 0\n",
            "READY PORT http\n",
            "READY CMD\n",
            "READY URL x\n",
            "START\n",
        ] {
            assert!(parse_build_file(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn parses_start_and_ready() {
        let text = "FROM base\nSTART python3 -m http.server 8000\nREADY PORT 8000\nready cmd curl -sf localhost:8000/\n";
        let (_, steps) = parse_build_file(text).unwrap();
        assert_eq!(
            steps,
            vec![
                BuildStep::Start {
                    command: "python3 -m http.server 8000".into()
                },
                BuildStep::ReadyPort { port: 8000 },
                BuildStep::ReadyCommand {
                    command: "curl -sf localhost:8000/".into()
                },
            ]
        );
    }
}
