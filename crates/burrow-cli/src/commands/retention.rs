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
    /// Deleted sandboxes with their erasure record (who or which policy, when, what was erased).
    Report(ReportArgs),
}

#[derive(Args)]
pub struct ReportArgs {
    /// Only deletions since this time: RFC 3339, or a duration back from now (`24h`, `7d`).
    #[arg(long)]
    pub since: Option<String>,
    #[arg(long)]
    pub json: bool,
}

/// `--since` as an RFC 3339 time.
fn since_time(text: &str) -> anyhow::Result<String> {
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
    let mut request = api.request(reqwest::Method::GET, "/v1/tombstones");
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
pub struct UsageArgs {
    /// One sandbox (default: every live sandbox and the total, deleted ones included).
    pub id: Option<String>,
    #[arg(long)]
    pub json: bool,
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
