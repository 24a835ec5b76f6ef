//! `create`, `ls`, `info`, `rm`.

use std::process::ExitCode;

use clap::Args;
use serde_json::{Value, json};

use super::for_each_id;
use crate::args::key_values;
use crate::client::ApiClient;
use crate::output;

#[derive(Args)]
pub struct CreateArgs {
    /// The workspace to create it in (operator key only; default `default`).
    #[arg(long)]
    pub workspace: Option<String>,
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
    /// Idle time before the sandbox goes to standby by itself (`15s`, `2m`, plain seconds;
    /// 0 = never). Default: the server's (15 s).
    #[arg(long, value_parser = crate::args::duration)]
    pub idle_timeout: Option<std::time::Duration>,
    #[command(flatten)]
    pub expiry: crate::commands::retention::ExpiryFlags,
    /// Zero data retention: never paged out or checkpointed; standby is refused and the idle
    /// timeout deletes it.
    #[arg(long)]
    pub zdr: bool,
    /// Private ports: the proxy serves `{port}-{id}.{domain}` only to requests carrying the
    /// sandbox's traffic access token (`e2b-traffic-access-token` header; `burrow info` shows it).
    #[arg(long)]
    pub private: bool,
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
    if let Some(idle) = args.idle_timeout {
        if idle.subsec_nanos() != 0 {
            anyhow::bail!("--idle-timeout is counted in whole seconds, got {idle:?}");
        }
        body["idle_timeout"] = json!(idle.as_secs());
    }
    if let Some(expiration) = args.expiry.to_json()? {
        body["expiration"] = expiration;
    }
    if args.zdr {
        body["zdr"] = json!(true);
    }
    if args.private {
        body["public_traffic"] = json!(false);
    }
    let mut request = api.request(reqwest::Method::POST, "/v1/sandboxes");
    if let Some(ws) = &args.workspace {
        request = request.query(&[("workspace", ws)]);
    }
    let sandbox: Value = api.send(request.json(&body)).await?.json().await?;
    if args.json {
        output::json(&sandbox);
    } else {
        println!("{}", output::cell(&sandbox, "id"));
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(Args)]
pub struct ListArgs {
    /// Only this workspace's sandboxes (operator key; other keys see their own).
    #[arg(long)]
    pub workspace: Option<String>,
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
    if let Some(ws) = args.workspace {
        query.push(("workspace".into(), ws));
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
                ("WORKSPACE", "workspace_id"),
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
        let mut fields = sandbox.clone();
        let power = fields.as_object_mut().and_then(|m| m.remove("power"));
        output::details(&fields);
        if let Some(power) = power {
            for line in power_lines(&power) {
                println!("{line}");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Why the sandbox is awake, or since when it sleeps, for people.
fn power_lines(power: &Value) -> Vec<String> {
    let text = |k: &str| output::cell(power, k);
    let mut lines = Vec::new();
    if power.get("awake").and_then(Value::as_bool) == Some(false) {
        lines.push(format!(
            "standby  {} since {}",
            text("tier"),
            text("asleep_since")
        ));
        if let Some(image) = power.get("image_bytes").and_then(Value::as_u64) {
            lines.push(format!(
                "image    {:.1} MiB on disk (CRIU checkpoint; no process runs)",
                image as f64 / 1048576.0
            ));
        }
        if let (Some(mem), Some(swap)) = (
            power.get("memory_bytes").and_then(Value::as_u64),
            power.get("swap_bytes").and_then(Value::as_u64),
        ) {
            lines.push(format!(
                "memory   {:.1} MiB resident, {:.1} MiB paged out to zram",
                mem as f64 / 1048576.0,
                swap as f64 / 1048576.0
            ));
        }
    } else {
        let mut why = Vec::new();
        let streams = power
            .get("open_streams")
            .and_then(Value::as_u64)
            .unwrap_or(0);
        if streams > 0 {
            why.push(format!("{streams} open stream(s)"));
        }
        for lease in power
            .get("leases")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let until = lease
                .get("expires_at")
                .and_then(Value::as_str)
                .map(|t| format!(" until {t}"))
                .unwrap_or_default();
            why.push(format!(
                "lease {} '{}'{until}",
                output::cell(lease, "id"),
                output::cell(lease, "reason")
            ));
        }
        let in_sandbox = power
            .get("sandbox_leases")
            .and_then(Value::as_u64)
            .unwrap_or(0);
        if in_sandbox > 0 {
            why.push(format!("{in_sandbox} file(s) in /run/burrow/leases"));
        }
        if power.get("pre_standby_hook").and_then(Value::as_bool) == Some(true) {
            why.push("its pre-standby hook is running".to_string());
        }
        if why.is_empty() {
            why.push(match power.get("standby_in").and_then(Value::as_f64) {
                Some(secs) => format!("recent activity; standby in {secs:.1} s if idle"),
                None => "idle timeout 0 (never sleeps by itself)".to_string(),
            });
        }
        lines.push(format!("awake    {}", why.join(", ")));
    }
    lines.push(format!(
        "activity last {} at {} (idle timeout {} s)",
        text("last_activity_source"),
        text("last_activity_at"),
        text("idle_timeout")
    ));
    lines
}

#[derive(Args)]
pub struct RmArgs {
    /// Sandbox ids.
    #[arg(required = true)]
    pub ids: Vec<String>,
}

pub async fn remove(api: &ApiClient, args: RmArgs) -> anyhow::Result<ExitCode> {
    for_each_id(&args.ids, |id| async move {
        api.delete(&format!("/v1/sandboxes/{id}")).await?;
        Ok(id)
    })
    .await
}
