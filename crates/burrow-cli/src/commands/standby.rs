//! `standby` and `resume`: put a sandbox to sleep now, or wake it.

use std::process::ExitCode;

use clap::Args;
use serde_json::{Value, json};

use super::for_each_id;
use crate::client::ApiClient;
use crate::output;

#[derive(Args)]
pub struct StandbyArgs {
    /// Sandbox ids.
    #[arg(required = true)]
    pub ids: Vec<String>,
    /// Checkpoint to disk with CRIU (deep standby) instead of freezing in memory.
    #[arg(long)]
    pub deep: bool,
}

#[derive(Args)]
pub struct ResumeArgs {
    /// Sandbox ids.
    #[arg(required = true)]
    pub ids: Vec<String>,
}

pub async fn standby(api: &ApiClient, args: StandbyArgs) -> anyhow::Result<ExitCode> {
    let body = json!({"deep": args.deep});
    for_each_id(&args.ids, |id| {
        let body = body.clone();
        async move {
            let sandbox: Value = api
                .post_json(&format!("/v1/sandboxes/{id}/standby"), &body)
                .await?;
            Ok(format!("{id}  {}", output::cell(&sandbox, "state")))
        }
    })
    .await
}

pub async fn resume(api: &ApiClient, args: ResumeArgs) -> anyhow::Result<ExitCode> {
    for_each_id(&args.ids, |id| async move {
        let sandbox: Value = api
            .post_json(&format!("/v1/sandboxes/{id}/resume"), &json!({}))
            .await?;
        Ok(format!("{id}  {}", output::cell(&sandbox, "state")))
    })
    .await
}
