//! `expire` (change a sandbox's expiry policy), `retention report`, `usage`.

use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use clap::{Args, Subcommand};
use serde_json::{Value, json};

use crate::client::ApiClient;
use crate::output;

/// Expiry flags shared by `create` and `expire`.
#[derive(Args, Default)]
pub struct ExpiryFlags {
    /// Delete after this long without activity, time in standby included (`30m`, `1h`, `7d`).
    #[arg(long, value_parser = crate::args::duration)]
    pub ttl_idle: Option<Duration>,
    /// Delete this long after creation (`1h`, `7d`).
    #[arg(long, value_parser = crate::args::duration)]
    pub ttl_max_age: Option<Duration>,
    /// Delete at this wall-clock time (RFC 3339, e.g. 2030-01-31T12:00:00Z).
    #[arg(long, value_name = "RFC3339")]
    pub expires_at: Option<String>,
}

impl ExpiryFlags {
    /// The `expiration` object, or `None` when no flag was given.
    pub fn to_json(&self) -> anyhow::Result<Option<Value>> {
        let mut policy = serde_json::Map::new();
        for (name, value) in [
            ("ttl_idle", self.ttl_idle),
            ("ttl_max_age", self.ttl_max_age),
        ] {
            if let Some(d) = value {
                if d.subsec_nanos() != 0 || d.is_zero() {
                    anyhow::bail!(
                        "--{} must be a whole, positive number of seconds, got {d:?}",
                        name.replace('_', "-")
                    );
                }
                policy.insert(name.into(), json!(d.as_secs()));
            }
        }
        if let Some(at) = &self.expires_at {
            policy.insert("expires_at".into(), json!(at));
        }
        Ok((!policy.is_empty()).then_some(Value::Object(policy)))
    }
}

#[derive(Args)]
pub struct ExpireArgs {
    pub id: String,
    #[command(flatten)]
    pub flags: ExpiryFlags,
    /// Remove every expiry condition (the server's maximum age still applies).
    #[arg(long, conflicts_with_all = ["ttl_idle", "ttl_max_age", "expires_at"])]
    pub clear: bool,
}

/// Replaces a sandbox's expiry policy.
pub async fn expire(api: &ApiClient, args: ExpireArgs) -> anyhow::Result<ExitCode> {
    let policy = match (args.flags.to_json()?, args.clear) {
        (Some(policy), _) => policy,
        (None, true) => json!({}),
        (None, false) => anyhow::bail!(
            "give --ttl-idle, --ttl-max-age and/or --expires-at, or --clear to remove the policy"
        ),
    };
    let resp = api
        .send(
            api.request(
                reqwest::Method::PUT,
                &format!("/v1/sandboxes/{}/expiration", args.id),
            )
            .json(&policy),
        )
        .await?;
    let sandbox: Value = resp.json().await?;
    output::json(sandbox.get("expiration").unwrap_or(&json!({})));
    Ok(ExitCode::SUCCESS)
}

#[derive(Subcommand)]
pub enum RetentionCommand {
    /// Deleted sandboxes with their erasure record (who or which policy, when, what was erased);
    /// with `--window`, the evidence: was every sandbox older than the window deleted, what was
    /// erased, and which ones still exist and why.
    Report(ReportArgs),
}

#[derive(Args)]
pub struct ReportArgs {
    /// Only this workspace (operator key; other keys see their own).
    #[arg(long)]
    pub workspace: Option<String>,
    /// The retention window (`30d`, `7d`, `12h`): report on sandboxes older than it.
    #[arg(long)]
    pub window: Option<String>,
    /// Only deletions since this time: RFC 3339, or a duration back from now (`24h`, `7d`).
    #[arg(long)]
    pub since: Option<String>,
    #[arg(long)]
    pub json: bool,
}

/// `--since` as an RFC 3339 time.
pub fn since_time(text: &str) -> anyhow::Result<String> {
    if humantime::parse_rfc3339_weak(text).is_ok() || text.contains('T') {
        return Ok(text.to_string());
    }
    let back = crate::args::duration(text)?;
    let at = SystemTime::now()
        .checked_sub(back)
        .ok_or_else(|| anyhow::anyhow!("--since {text} reaches before 1970"))?;
    Ok(humantime::format_rfc3339_seconds(at).to_string())
}

pub async fn run(api: &ApiClient, command: RetentionCommand) -> anyhow::Result<ExitCode> {
    let RetentionCommand::Report(args) = command;
    if let Some(window) = &args.window {
        let mut query = vec![("window", window.clone())];
        if let Some(ws) = &args.workspace {
            query.push(("workspace", ws.clone()));
        }
        let report: Value = api
            .send(
                api.request(reqwest::Method::GET, "/v1/retention/report")
                    .query(&query),
            )
            .await?
            .json()
            .await?;
        if args.json {
            output::json(&report);
        } else {
            let deleted = report["deleted"].as_array().map_or(0, Vec::len);
            let exceptions = report["exceptions"].as_array().cloned().unwrap_or_default();
            println!(
                "sandboxes created before {} ({} window): {} deleted, {} still exist{}",
                output::cell(&report, "cutoff"),
                window,
                deleted,
                exceptions.len(),
                if exceptions.is_empty() {
                    " — every one was deleted"
                } else {
                    ":"
                }
            );
            if !exceptions.is_empty() {
                output::table(
                    &exceptions,
                    &[
                        ("ID", "id"),
                        ("CREATED", "created_at"),
                        ("STATE", "state"),
                        ("WHY", "why"),
                    ],
                );
            }
            println!("(--json for the erasure record of each deleted sandbox)");
        }
        return Ok(ExitCode::SUCCESS);
    }
    let mut request = api.request(reqwest::Method::GET, "/v1/tombstones");
    if let Some(ws) = &args.workspace {
        request = request.query(&[("workspace", ws)]);
    }
    if let Some(since) = &args.since {
        request = request.query(&[("since", since_time(since)?)]);
    }
    let list: Value = api.send(request).await?.json().await?;
    let rows = list["tombstones"].as_array().cloned().unwrap_or_default();
    if args.json {
        output::json(&Value::Array(rows));
        return Ok(ExitCode::SUCCESS);
    }
    let rows: Vec<Value> = rows
        .into_iter()
        .map(|t| {
            let e = &t["erased"];
            json!({
                "id": t["id"], "template": t["template"], "created_at": t["created_at"],
                "deleted_at": t["deleted_at"], "reason": t["reason"], "by": t["deleted_by"],
                "zdr": t["zdr"], "upper": e["upper_dir_bytes"], "log": e["agent_log_bytes"],
                "checkpoint": e["checkpoint_bytes"], "swapped": e["swapped_bytes"],
                "discarded": e["blocks_discarded"],
            })
        })
        .collect();
    output::table(
        &rows,
        &[
            ("ID", "id"),
            ("DELETED", "deleted_at"),
            ("REASON", "reason"),
            ("BY", "by"),
            ("ZDR", "zdr"),
            ("UPPER B", "upper"),
            ("LOG B", "log"),
            ("CHECKPOINT B", "checkpoint"),
            ("SWAPPED B", "swapped"),
            ("TRIMMED", "discarded"),
        ],
    );
    Ok(ExitCode::SUCCESS)
}

#[derive(Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct UsageArgs {
    #[command(subcommand)]
    pub command: Option<UsageCommand>,
    /// One sandbox (default: every live sandbox and the total, deleted ones included).
    pub id: Option<String>,
    /// Only this workspace (operator key; other keys see their own).
    #[arg(long)]
    pub workspace: Option<String>,
    /// Usage from this time (RFC 3339, or a duration back from now: `24h`, `30d`), per sandbox,
    /// deleted ones included, in whole hours.
    #[arg(long)]
    pub since: Option<String>,
    /// Usage before this time (RFC 3339, or a duration back from now).
    #[arg(long)]
    pub until: Option<String>,
    /// `table` (default), `json`, `jsonl` or `csv` (for billing exports).
    #[arg(long)]
    pub format: Option<String>,
    #[arg(long)]
    pub json: bool,
}

#[derive(Subcommand)]
pub enum UsageCommand {
    /// Project the monthly cost of N sandboxes at an activity ratio, from this server's measured
    /// figures and its price list, beside keeping them always on.
    Project(ProjectArgs),
}

#[derive(Args)]
pub struct ProjectArgs {
    /// How many sandboxes.
    #[arg(long, default_value_t = 1000)]
    pub sandboxes: u64,
    /// Share of the time each is awake, 0-1 (default: the measured share).
    #[arg(long)]
    pub active_ratio: Option<f64>,
    /// Measure this workspace's sandboxes (operator key; other keys use their own).
    #[arg(long)]
    pub workspace: Option<String>,
    #[arg(long)]
    pub json: bool,
}

async fn project(api: &ApiClient, args: ProjectArgs) -> anyhow::Result<ExitCode> {
    let mut query = vec![("sandboxes".to_string(), args.sandboxes.to_string())];
    if let Some(r) = args.active_ratio {
        query.push(("active_ratio".into(), r.to_string()));
    }
    if let Some(ws) = args.workspace {
        query.push(("workspace".into(), ws));
    }
    let answer: Value = api
        .send(
            api.request(reqwest::Method::GET, "/v1/usage/projection")
                .query(&query),
        )
        .await?
        .json()
        .await?;
    if args.json {
        output::json(&answer);
        return Ok(ExitCode::SUCCESS);
    }
    let p = &answer["projection"];
    let m = &answer["measured"];
    let f = |v: &Value| v.as_f64().unwrap_or(0.0);
    println!(
        "{} sandboxes, awake {:.1}% of the time, per month (30 days):",
        p["sandboxes"],
        f(&p["active_ratio"]) * 100.0
    );
    println!("  compute while awake   ${:>12.2}", f(&p["active_cost"]));
    println!("  storage while asleep  ${:>12.2}", f(&p["standby_cost"]));
    println!("  total                 ${:>12.2}", f(&p["total_cost"]));
    println!(
        "  always on             ${:>12.2}   (burrow: {:.1}% of it)",
        f(&p["always_on_cost"]),
        f(&p["ratio_to_always_on"]) * 100.0
    );
    let per = &p["per_sandbox"];
    println!(
        "inputs: per sandbox {:.2} vCPU, {:.3} GB memory awake, {:.4} GB stored asleep \
         (measured on this {}: {} live sandboxes, {:.0} s awake, {:.0} s asleep metered)",
        f(&per["vcpus"]),
        f(&per["memory_gb"]),
        f(&per["standby_storage_gb"]),
        m["scope"].as_str().unwrap_or("server"),
        m["live_sandboxes"],
        f(&m["usage"]["running_seconds"]),
        f(&m["usage"]["standby_seconds"]),
    );
    let prices = &p["prices"];
    println!(
        "prices: {} — ${:e}/vCPU-s, ${:e}/GB-s, ${}/GB-month (override: <data_dir>/prices.toml)",
        prices["provider"].as_str().unwrap_or("?"),
        f(&prices["vcpu_second"]),
        f(&prices["gb_second"]),
        f(&prices["storage_gb_month"]),
    );
    Ok(ExitCode::SUCCESS)
}

const USAGE_COLUMNS: &[(&str, &str)] = &[
    ("ID", "id"),
    ("ACTIVE GB·S", "active_gb_seconds"),
    ("CPU S", "cpu_seconds"),
    ("STANDBY GB·S", "standby_storage_gb_seconds"),
    ("RUNNING S", "running_seconds"),
    ("STANDBY S", "standby_seconds"),
];

fn usage_row(id: &Value, usage: &Value) -> Value {
    let mut row = json!({"id": id});
    for (_, field) in &USAGE_COLUMNS[1..] {
        let value = usage[field].as_f64().unwrap_or(0.0);
        row[*field] = json!(format!("{value:.2}"));
    }
    row
}

pub async fn usage(api: &ApiClient, args: UsageArgs) -> anyhow::Result<ExitCode> {
    if let Some(UsageCommand::Project(p)) = args.command {
        return project(api, p).await;
    }
    let ranged = args.since.is_some() || args.until.is_some() || args.format.is_some();
    if ranged || (args.workspace.is_some() && args.id.is_none()) {
        let format = args.format.clone().unwrap_or_else(|| "table".into());
        let mut query = vec![(
            "format".to_string(),
            if format == "table" {
                "json".into()
            } else {
                format.clone()
            },
        )];
        if let Some(ws) = &args.workspace {
            query.push(("workspace".into(), ws.clone()));
        }
        for (name, value) in [("since", &args.since), ("until", &args.until)] {
            if let Some(v) = value {
                query.push((name.into(), since_time(v)?));
            }
        }
        if !ranged {
            query.retain(|(k, _)| k != "format");
        }
        let resp = api
            .send(api.request(reqwest::Method::GET, "/v1/usage").query(&query))
            .await?;
        if format == "jsonl" || format == "csv" {
            print!("{}", resp.text().await?);
            return Ok(ExitCode::SUCCESS);
        }
        let report: Value = resp.json().await?;
        if args.json || format == "json" {
            output::json(&report);
            return Ok(ExitCode::SUCCESS);
        }
        let mut rows: Vec<Value> = match report.get("rows").and_then(Value::as_array) {
            Some(rows) => rows
                .iter()
                .map(|r| usage_row(&r["sandbox_id"], r))
                .collect(),
            None => report["sandboxes"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|s| usage_row(&s["id"], &s["usage"]))
                .collect(),
        };
        rows.push(usage_row(&json!("TOTAL"), &report["total"]));
        output::table(&rows, USAGE_COLUMNS);
        return Ok(ExitCode::SUCCESS);
    }
    let report: Value = match &args.id {
        Some(id) => api.get_json(&format!("/v1/sandboxes/{id}/usage")).await?,
        None => api.get_json("/v1/usage").await?,
    };
    if args.json {
        output::json(&report);
        return Ok(ExitCode::SUCCESS);
    }
    let rows = match &args.id {
        Some(_) => vec![usage_row(&report["id"], &report["usage"])],
        None => {
            let mut rows: Vec<Value> = report["sandboxes"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|s| usage_row(&s["id"], &s["usage"]))
                .collect();
            rows.push(usage_row(
                &json!("TOTAL (all, deleted too)"),
                &report["total"],
            ));
            rows
        }
    };
    output::table(&rows, USAGE_COLUMNS);
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiry_flags_become_a_policy() {
        let flags = ExpiryFlags {
            ttl_idle: Some(Duration::from_secs(3600)),
            ttl_max_age: Some(Duration::from_secs(7 * 86400)),
            expires_at: Some("2030-01-01T00:00:00Z".into()),
        };
        assert_eq!(
            flags.to_json().unwrap().unwrap(),
            json!({"ttl_idle": 3600, "ttl_max_age": 604800, "expires_at": "2030-01-01T00:00:00Z"})
        );
        assert_eq!(ExpiryFlags::default().to_json().unwrap(), None);
        let zero = ExpiryFlags {
            ttl_idle: Some(Duration::ZERO),
            ..ExpiryFlags::default()
        };
        assert!(zero.to_json().is_err());
    }

    #[test]
    fn since_accepts_times_and_durations() {
        assert_eq!(
            since_time("2026-01-01T00:00:00Z").unwrap(),
            "2026-01-01T00:00:00Z"
        );
        assert!(since_time("24h").unwrap().ends_with('Z'));
        assert!(since_time("soon").is_err());
    }
}
