//! `create`, `ls`, `info`, `rm`.

use std::process::ExitCode;

use clap::Args;
use serde_json::{Value, json};

use crate::args::key_values;
use crate::client::ApiClient;
use crate::output;

#[derive(Args)]
pub struct CreateArgs {
    /// Template to create the sandbox from.
    #[arg(long, short, default_value = "base")]
    pub template: String,
    /// CPU limit in cores (fractions allowed).
    #[arg(long)]
    pub cpus: Option<f64>,
    /// Memory limit in MiB.
    #[arg(long)]
    pub memory: Option<u64>,
    /// Disk limit of the sandbox's writable layer, in MiB.
    #[arg(long)]
    pub disk: Option<u64>,
    /// Environment variable for every process in the sandbox (repeatable).
    #[arg(long = "env", short = 'e', value_name = "K=V")]
    pub env: Vec<String>,
    /// Label (repeatable); `burrow ls --label` filters on them.
    #[arg(long = "label", short = 'l', value_name = "K=V")]
    pub labels: Vec<String>,
    /// Print the whole sandbox as JSON instead of its id.
    #[arg(long)]
    pub json: bool,
}

pub async fn create(api: &ApiClient, args: CreateArgs) -> anyhow::Result<ExitCode> {
    let mut body = json!({
        "template": args.template,
        "env": key_values(&args.env, "--env")?,
        "labels": key_values(&args.labels, "--label")?,
    });
    if let Some(cpus) = args.cpus {
        body["cpus"] = json!(cpus);
    }
    if let Some(memory) = args.memory {
        body["memory_mb"] = json!(memory);
    }
    if let Some(disk) = args.disk {
        body["disk_mb"] = json!(disk);
    }
    let sandbox: Value = api.post_json("/v1/sandboxes", &body).await?;
    if args.json {
        output::json(&sandbox);
    } else {
        println!("{}", output::cell(&sandbox, "id"));
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(Args)]
pub struct ListArgs {
    /// Only sandboxes with this label (repeatable; all must match).
    #[arg(long = "label", short = 'l', value_name = "K=V")]
    pub labels: Vec<String>,
    /// Only sandboxes in this state.
    #[arg(long)]
    pub state: Option<String>,
    #[arg(long)]
    pub json: bool,
}

pub async fn list(api: &ApiClient, args: ListArgs) -> anyhow::Result<ExitCode> {
    let mut query: Vec<(String, String)> = key_values(&args.labels, "--label")?
        .into_iter()
        .map(|(k, v)| ("label".to_string(), format!("{k}={v}")))
        .collect();
    if let Some(state) = args.state {
        query.push(("state".into(), state));
    }
    let resp = api
        .send(
            api.request(reqwest::Method::GET, "/v1/sandboxes")
                .query(&query),
        )
        .await?;
    let list: Value = resp.json().await?;
    let rows = list
        .as_array()
        .cloned()
        .or_else(|| list.get("sandboxes").and_then(Value::as_array).cloned())
        .unwrap_or_default();
    if args.json {
        output::json(&Value::Array(rows));
    } else {
        output::table(
            &rows,
            &[
                ("ID", "id"),
                ("TEMPLATE", "template"),
                ("STATE", "state"),
                ("CPUS", "cpus"),
                ("MEMORY MB", "memory_mb"),
                ("CREATED", "created_at"),
                ("LABELS", "labels"),
            ],
        );
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(Args)]
pub struct InfoArgs {
    pub id: String,
    #[arg(long)]
    pub json: bool,
}

pub async fn info(api: &ApiClient, args: InfoArgs) -> anyhow::Result<ExitCode> {
    let sandbox: Value = api.get_json(&format!("/v1/sandboxes/{}", args.id)).await?;
    if args.json {
        output::json(&sandbox);
    } else {
        output::details(&sandbox);
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(Args)]
pub struct RmArgs {
    /// Sandbox ids.
    #[arg(required = true)]
    pub ids: Vec<String>,
}

pub async fn remove(api: &ApiClient, args: RmArgs) -> anyhow::Result<ExitCode> {
    let mut failed = false;
    for id in &args.ids {
        match api.delete(&format!("/v1/sandboxes/{id}")).await {
            Ok(()) => println!("{id}"),
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
