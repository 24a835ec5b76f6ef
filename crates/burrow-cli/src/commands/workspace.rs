//! `burrow workspace create|ls|info|set|rm` (the operator key), and `burrow audit`.

use std::process::ExitCode;

use clap::{Args, Subcommand};
use serde_json::{Value, json};

use crate::client::ApiClient;
use crate::output;

#[derive(Subcommand)]
pub enum WorkspaceCommand {
    /// Create a workspace (operator key). Its keys: `burrow key create --workspace NAME`.
    Create(CreateWorkspaceArgs),
    /// List workspaces (a workspace key sees its own), and the tiers there are.
    Ls(JsonFlag),
    /// Show a workspace: tier, quotas in force, what it owns.
    Info(NamedArgs),
    /// Change a workspace's tier or quota overrides (operator key). Applies to new work and to
    /// the standby-age cap; awake sandboxes are never stopped by it.
    Set(SetWorkspaceArgs),
    /// Remove a workspace (operator key): refused while it owns sandboxes or templates, unless
    /// `--force`, which deletes them first (with erasure records). Its keys are revoked.
    Rm(RemoveWorkspaceArgs),
}

#[derive(Args)]
pub struct JsonFlag {
    #[arg(long)]
    pub json: bool,
}

#[derive(Args)]
pub struct NamedArgs {
    pub name: String,
    #[arg(long)]
    pub json: bool,
}

#[derive(Args)]
pub struct CreateWorkspaceArgs {
    /// 1-63 characters of a-z, 0-9 and '-'.
    pub name: String,
    /// `free` (default), `team`, `unlimited`, or one of `<data_dir>/tiers.toml`.
    #[arg(long)]
    pub tier: Option<String>,
    /// Quota override (repeatable), e.g. `--quota max_awake_sandboxes=3`.
    #[arg(long = "quota", value_name = "NAME=VALUE")]
    pub quotas: Vec<String>,
    #[arg(long)]
    pub json: bool,
}

#[derive(Args)]
pub struct SetWorkspaceArgs {
    pub name: String,
    #[arg(long)]
    pub tier: Option<String>,
    /// Quota override (repeatable; replaces all overrides), e.g. `--quota max_sandboxes=10`.
    #[arg(long = "quota", value_name = "NAME=VALUE")]
    pub quotas: Vec<String>,
    /// Remove every override (the tier's quotas apply).
    #[arg(long, conflicts_with = "quotas")]
    pub clear_quotas: bool,
    #[arg(long)]
    pub json: bool,
}

#[derive(Args)]
pub struct RemoveWorkspaceArgs {
    pub name: String,
    /// Delete its sandboxes (with erasure records) and templates first.
    #[arg(long)]
    pub force: bool,
}

/// `NAME=VALUE` overrides as a quotas object: numbers stay numbers, the rest are strings
/// (`max_standby_age=7d`).
fn quotas(pairs: &[String]) -> anyhow::Result<Value> {
    let mut out = serde_json::Map::new();
    for pair in pairs {
        let (name, value) = pair
            .split_once('=')
            .ok_or_else(|| anyhow::anyhow!("--quota '{pair}' must be NAME=VALUE"))?;
        let value = match value.parse::<u64>() {
            Ok(n) => json!(n),
            Err(_) => match value.parse::<f64>() {
                Ok(f) => json!(f),
                Err(_) => json!(value),
            },
        };
        out.insert(name.to_string(), value);
    }
    Ok(Value::Object(out))
}

fn print_one(ws: &Value, as_json: bool) {
    if as_json {
        output::json(ws);
    } else {
        output::details(ws);
    }
}

pub async fn run(api: &ApiClient, command: WorkspaceCommand) -> anyhow::Result<ExitCode> {
    match command {
        WorkspaceCommand::Create(args) => {
            let mut body = json!({ "name": args.name });
            if let Some(tier) = args.tier {
                body["tier"] = json!(tier);
            }
            if !args.quotas.is_empty() {
                body["quotas"] = quotas(&args.quotas)?;
            }
            let ws: Value = api.post_json("/v1/workspaces", &body).await?;
            if args.json {
                output::json(&ws);
            } else {
                println!("{}", output::cell(&ws, "name"));
            }
        }
        WorkspaceCommand::Ls(args) => {
            let list: Value = api.get_json("/v1/workspaces").await?;
            if args.json {
                output::json(&list);
            } else {
                let rows = list["workspaces"].as_array().cloned().unwrap_or_default();
                output::table(
                    &rows,
                    &[
                        ("NAME", "name"),
                        ("ID", "id"),
                        ("TIER", "tier"),
                        ("SANDBOXES", "sandboxes"),
                        ("TEMPLATES", "templates"),
                        ("KEYS", "keys"),
                        ("CREATED", "created_at"),
                    ],
                );
            }
        }
        WorkspaceCommand::Info(args) => {
            let ws: Value = api
                .get_json(&format!("/v1/workspaces/{}", encode(&args.name)))
                .await?;
            print_one(&ws, args.json);
        }
        WorkspaceCommand::Set(args) => {
            let mut body = json!({});
            if let Some(tier) = args.tier {
                body["tier"] = json!(tier);
            }
            if args.clear_quotas {
                body["quotas"] = json!({});
            } else if !args.quotas.is_empty() {
                body["quotas"] = quotas(&args.quotas)?;
            }
            let resp = api
                .send(
                    api.request(
                        reqwest::Method::PATCH,
                        &format!("/v1/workspaces/{}", encode(&args.name)),
                    )
                    .json(&body),
                )
                .await?;
            let ws: Value = resp.json().await?;
            print_one(&ws, args.json);
        }
        WorkspaceCommand::Rm(args) => {
            let mut request = api.request(
                reqwest::Method::DELETE,
                &format!("/v1/workspaces/{}", encode(&args.name)),
            );
            if args.force {
                request = request.query(&[("force", "true")]);
            }
            api.send(request).await?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn encode(segment: &str) -> String {
    percent_encoding::utf8_percent_encode(segment, percent_encoding::NON_ALPHANUMERIC).to_string()
}

#[derive(Args)]
pub struct AuditArgs {
    /// Only this workspace (operator key; a workspace admin sees its own).
    #[arg(long)]
    pub workspace: Option<String>,
    /// Only calls since this time: RFC 3339, or a duration back from now (`24h`, `7d`).
    #[arg(long)]
    pub since: Option<String>,
    /// At most this many entries, most recent first.
    #[arg(long, default_value_t = 100)]
    pub limit: u32,
    #[arg(long)]
    pub json: bool,
}

/// `burrow audit`: the mutating calls recorded by the server.
pub async fn audit(api: &ApiClient, args: AuditArgs) -> anyhow::Result<ExitCode> {
    let mut query = vec![("limit".to_string(), args.limit.to_string())];
    if let Some(ws) = args.workspace {
        query.push(("workspace".into(), ws));
    }
    if let Some(since) = &args.since {
        query.push((
            "since".into(),
            crate::commands::retention::since_time(since)?,
        ));
    }
    let list: Value = api
        .send(api.request(reqwest::Method::GET, "/v1/audit").query(&query))
        .await?
        .json()
        .await?;
    let rows = list["entries"].as_array().cloned().unwrap_or_default();
    if args.json {
        output::json(&Value::Array(rows));
    } else {
        output::table(
            &rows,
            &[
                ("AT", "at"),
                ("KEY", "key_id"),
                ("WORKSPACE", "workspace_id"),
                ("ACTION", "action"),
                ("OBJECT", "object"),
                ("STATUS", "status"),
                ("SOURCE", "source"),
            ],
        );
    }
    Ok(ExitCode::SUCCESS)
}
