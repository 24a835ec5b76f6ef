//! `burrow key create|ls|rm`: issue an API key (printed once; the server stores only its hash),
//! list keys (never the keys themselves), revoke one.

use std::process::ExitCode;

use clap::{Args, Subcommand};
use serde_json::{Value, json};

use crate::client::ApiClient;
use crate::output;

#[derive(Subcommand)]
pub enum KeyCommand {
    /// Create an API key and print it (it cannot be shown again).
    Create(CreateKeyArgs),
    /// List the API keys that are not revoked, with their last use.
    Ls(ListKeysArgs),
    /// Revoke an API key by its id (`key_…`, from `burrow key ls`); it is refused at once.
    /// The operator key (the first one) cannot be revoked.
    Rm(RemoveKeyArgs),
}

#[derive(Args)]
pub struct ListKeysArgs {
    /// Only this workspace's keys (operator key; a workspace admin sees its own).
    #[arg(long)]
    pub workspace: Option<String>,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args)]
pub struct RemoveKeyArgs {
    /// The key's id (`key_…`), not the key.
    pub id: String,
}

#[derive(Args)]
pub struct CreateKeyArgs {
    /// A name to recognise the key by.
    #[arg(long, default_value = "cli")]
    pub name: String,
    /// E2B's format (`e2b_` + 40 hex), for `E2B_API_KEY`; older E2B SDKs refuse other shapes.
    #[arg(long)]
    pub e2b: bool,
    /// The key's workspace (operator key: any; default `default`; a workspace admin: its own).
    #[arg(long)]
    pub workspace: Option<String>,
    /// `viewer` (reads), `member` (sandboxes and templates; the default) or `admin` (also keys
    /// and the audit log).
    #[arg(long)]
    pub role: Option<String>,
    /// Print the server's JSON answer instead of the bare key.
    #[arg(long)]
    pub json: bool,
}

pub async fn run(api: &ApiClient, command: KeyCommand) -> anyhow::Result<ExitCode> {
    match command {
        KeyCommand::Create(args) => {
            let format = if args.e2b { "e2b" } else { "burrow" };
            let created: Value = api
                .post_json(
                    "/v1/api-keys",
                    &json!({
                        "name": args.name,
                        "format": format,
                        "workspace": args.workspace,
                        "role": args.role,
                    }),
                )
                .await?;
            if args.json {
                println!("{created}");
            } else {
                let key = created["key"]
                    .as_str()
                    .ok_or_else(|| anyhow::anyhow!("the server's answer has no key: {created}"))?;
                println!("{key}");
            }
            Ok(ExitCode::SUCCESS)
        }
        KeyCommand::Ls(args) => {
            let mut request = api.request(reqwest::Method::GET, "/v1/api-keys");
            if let Some(ws) = &args.workspace {
                request = request.query(&[("workspace", ws)]);
            }
            let list: Value = api.send(request).await?.json().await?;
            let keys = list["keys"].as_array().cloned().unwrap_or_default();
            if args.json {
                output::json(&Value::Array(keys));
            } else {
                output::table(
                    &keys,
                    &[
                        ("ID", "id"),
                        ("NAME", "name"),
                        ("KIND", "kind"),
                        ("WORKSPACE", "workspace"),
                        ("ROLE", "role"),
                        ("CREATED", "created_at"),
                        ("LAST USED", "last_used_at"),
                        ("OPERATOR", "operator"),
                    ],
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        KeyCommand::Rm(args) => {
            // Ids are `key_` + hex: anything else (a key pasted by mistake included) never
            // reaches a URL.
            if !args.id.starts_with("key_")
                || !args
                    .id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_')
            {
                anyhow::bail!(
                    "'{}' is not a key id: pass the id shown by `burrow key ls` (key_…), not the key",
                    args.id.escape_debug()
                );
            }
            api.delete(&format!("/v1/api-keys/{}", args.id)).await?;
            Ok(ExitCode::SUCCESS)
        }
    }
}
