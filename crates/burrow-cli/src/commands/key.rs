//! `burrow key create`: issues an API key (printed once; the server stores only its hash).

use std::process::ExitCode;

use clap::{Args, Subcommand};
use serde_json::{Value, json};

use crate::client::ApiClient;

#[derive(Subcommand)]
pub enum KeyCommand {
    /// Create an API key and print it (it cannot be shown again).
    Create(CreateKeyArgs),
}

#[derive(Args)]
pub struct CreateKeyArgs {
    /// A name to recognise the key by.
    #[arg(long, default_value = "cli")]
    pub name: String,
    /// E2B's format (`e2b_` + 40 hex), for `E2B_API_KEY`; older E2B SDKs refuse other shapes.
    #[arg(long)]
    pub e2b: bool,
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
                    &json!({"name": args.name, "format": format}),
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
    }
}
