//! `standby` and `resume`: put a sandbox to sleep now, or wake it.

use std::process::ExitCode;

use clap::Args;
use serde_json::{Value, json};

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
    each(&args.ids, |id| {
        let body = body.clone();
        async move {
            api.post_json::<_, Value>(&format!("/v1/sandboxes/{id}/standby"), &body)
                .await
        }
    })
    .await
}

pub async fn resume(api: &ApiClient, args: ResumeArgs) -> anyhow::Result<ExitCode> {
    each(&args.ids, |id| async move {
        api.post_json::<_, Value>(&format!("/v1/sandboxes/{id}/resume"), &json!({}))
            .await
    })
    .await
}

/// Runs `call` for every id, printing `id  state` or the error; exits 1 if any failed.
async fn each<F, Fut>(ids: &[String], call: F) -> anyhow::Result<ExitCode>
where
    F: Fn(String) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<Value>>,
{
    let mut failed = false;
    for id in ids {
        match call(id.clone()).await {
            Ok(sandbox) => println!("{id}  {}", output::cell(&sandbox, "state")),
            Err(e) => {
                eprintln!("burrow: {id}: {e:#}");
                failed = true;
            }
        }
    }
    Ok(if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}
