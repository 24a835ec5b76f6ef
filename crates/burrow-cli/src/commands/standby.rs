//! `standby`, `resume` and `restart`: put a sandbox to sleep now, wake it, or start one in
//! `error` again from its files.

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

#[derive(Args)]
pub struct RestartArgs {
    /// Sandbox ids (sandboxes in `error`).
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

/// Restart from files: same id, token and files, fresh processes.
pub async fn restart(api: &ApiClient, args: RestartArgs) -> anyhow::Result<ExitCode> {
    for_each_id(&args.ids, |id| async move {
        let sandbox: Value = api
            .post_json(&format!("/v1/sandboxes/{id}/restart"), &json!({}))
            .await?;
        Ok(format!("{id}  {}", output::cell(&sandbox, "state")))
    })
    .await
}
