//! Tiers and quotas: named sets of limits (built in, or from `<data_dir>/tiers.toml`), chosen per
//! workspace and overridden field by field; and the check a create goes through.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::CoreError;

/// A workspace's limits. `None` = no limit.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Quotas {
    /// Sandboxes awake at once (created or woken; sleeping ones do not count).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_awake_sandboxes: Option<u64>,
    /// Sandboxes in total, asleep included.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_sandboxes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_vcpus_per_sandbox: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_memory_mb_per_sandbox: Option<u64>,
    /// Sum of `cpus` of the awake sandboxes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_awake_vcpus: Option<f64>,
    /// Sum of `memory_mb` of the awake sandboxes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_awake_memory_mb: Option<u64>,
    /// Sum of `disk_mb` (each sandbox's disk quota) over all sandboxes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_disk_mb: Option<u64>,
    /// Sandboxes older than this (`7d`, `30d`, …; or `indefinite`) are deleted, with an erasure
    /// record, once they are asleep. Awake work is never cut.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_standby_age: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub creates_per_minute: Option<u32>,
}

/// The word for "no standby-age cap".
pub const INDEFINITE: &str = "indefinite";

impl Quotas {
    /// `self` with every field `overrides` sets replaced.
    pub fn with(&self, overrides: &Quotas) -> Quotas {
        Quotas {
            max_awake_sandboxes: overrides.max_awake_sandboxes.or(self.max_awake_sandboxes),
            max_sandboxes: overrides.max_sandboxes.or(self.max_sandboxes),
            max_vcpus_per_sandbox: overrides
                .max_vcpus_per_sandbox
                .or(self.max_vcpus_per_sandbox),
            max_memory_mb_per_sandbox: overrides
                .max_memory_mb_per_sandbox
                .or(self.max_memory_mb_per_sandbox),
            max_awake_vcpus: overrides.max_awake_vcpus.or(self.max_awake_vcpus),
            max_awake_memory_mb: overrides.max_awake_memory_mb.or(self.max_awake_memory_mb),
            max_disk_mb: overrides.max_disk_mb.or(self.max_disk_mb),
            max_standby_age: overrides
                .max_standby_age
                .clone()
                .or_else(|| self.max_standby_age.clone()),
            creates_per_minute: overrides.creates_per_minute.or(self.creates_per_minute),
        }
    }

    /// The standby-age cap; `None` = indefinite.
    pub fn standby_age(&self) -> Result<Option<Duration>, CoreError> {
        match self.max_standby_age.as_deref() {
            None | Some(INDEFINITE) => Ok(None),
            Some(text) => humantime::parse_duration(text).map(Some).map_err(|e| {
                CoreError::Invalid(format!(
                    "max_standby_age '{text}' is not a duration like 7d or 30d, nor \
                     '{INDEFINITE}': {e}"
                ))
            }),
        }
    }

    /// Checks every field's range, so a bad tiers file or override fails when it is loaded.
    pub fn validate(&self) -> Result<(), CoreError> {
        self.standby_age()?;
        for (name, value) in [
            ("max_vcpus_per_sandbox", self.max_vcpus_per_sandbox),
            ("max_awake_vcpus", self.max_awake_vcpus),
        ] {
            if let Some(v) = value
                && !(v.is_finite() && v >= 0.0)
            {
                return Err(CoreError::Invalid(format!(
                    "{name} must be a number >= 0 (got {v})"
                )));
            }
        }
        Ok(())
    }
}

/// The named tiers a workspace may be on.
#[derive(Debug, Clone, PartialEq)]
pub struct Tiers {
    tiers: BTreeMap<String, Quotas>,
}

/// The tier a workspace gets unless it names one.
pub const DEFAULT_TIER: &str = "free";
/// The tier of the `default` workspace an upgraded single-tenant server gets: nothing changes
/// for it.
pub const UNLIMITED_TIER: &str = "unlimited";

impl Default for Tiers {
    /// Built in: `free` (Blaxel's starter shape: 10 awake, deleted after 7 days), `team` (50
    /// awake, 30 days), `unlimited` (no limits, standby kept forever).
    fn default() -> Self {
        let free = Quotas {
            max_awake_sandboxes: Some(10),
            max_sandboxes: Some(100),
            max_vcpus_per_sandbox: Some(2.0),
            max_memory_mb_per_sandbox: Some(4096),
            max_awake_vcpus: Some(10.0),
            max_awake_memory_mb: Some(16384),
            max_disk_mb: Some(100 * 1024),
            max_standby_age: Some("7d".into()),
            creates_per_minute: Some(60),
        };
        let team = Quotas {
            max_awake_sandboxes: Some(50),
            max_sandboxes: Some(1000),
            max_vcpus_per_sandbox: Some(4.0),
            max_memory_mb_per_sandbox: Some(8192),
            max_awake_vcpus: Some(100.0),
            max_awake_memory_mb: Some(128 * 1024),
            max_disk_mb: Some(1024 * 1024),
            max_standby_age: Some("30d".into()),
            creates_per_minute: Some(300),
        };
        let unlimited = Quotas {
            max_standby_age: Some(INDEFINITE.into()),
            ..Quotas::default()
        };
        Tiers {
            tiers: BTreeMap::from([
                ("free".to_string(), free),
                ("team".to_string(), team),
                (UNLIMITED_TIER.to_string(), unlimited),
            ]),
        }
    }
}

impl Tiers {
    /// The built-in tiers with those of a tiers file (TOML: one table per tier) added; a tier of
    /// the file replaces a built-in one of the same name.
    pub fn with_file(text: &str) -> Result<Tiers, CoreError> {
        let file: BTreeMap<String, Quotas> =
            toml::from_str(text).map_err(|e| CoreError::Invalid(format!("tiers file: {e}")))?;
        let mut tiers = Tiers::default();
        for (name, quotas) in file {
            crate::workspace::validate_name(&name)
                .map_err(|e| CoreError::Invalid(format!("tiers file: tier {e}")))?;
            quotas
                .validate()
                .map_err(|e| CoreError::Invalid(format!("tiers file, tier '{name}': {e}")))?;
            tiers.tiers.insert(name, quotas);
        }
        Ok(tiers)
    }

    pub fn get(&self, name: &str) -> Option<&Quotas> {
        self.tiers.get(name)
    }

    /// The tier's quotas, or an `Invalid` error listing the tiers there are.
    pub fn require(&self, name: &str) -> Result<&Quotas, CoreError> {
        self.get(name).ok_or_else(|| {
            CoreError::Invalid(format!(
                "tier '{name}' does not exist; tiers: {}",
                self.names().join(", ")
            ))
        })
    }

    pub fn names(&self) -> Vec<String> {
        self.tiers.keys().cloned().collect()
    }

    pub fn all(&self) -> &BTreeMap<String, Quotas> {
        &self.tiers
    }
}

/// What a workspace holds right now.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Load {
    pub sandboxes: u64,
    pub awake: u64,
    pub awake_vcpus: f64,
    pub awake_memory_mb: u64,
    pub disk_mb: u64,
    /// Creates in the last minute.
    pub creates_last_minute: u32,
}

/// The size of a sandbox being created.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Ask {
    pub cpus: f64,
    pub memory_mb: u64,
    pub disk_mb: u64,
}

/// Whether a new sandbox of size `ask` fits in workspace `workspace`'s quotas given its `load`;
/// the error names the limit, its value and the current use.
pub fn check_create(
    workspace: &str,
    quotas: &Quotas,
    load: &Load,
    ask: &Ask,
) -> Result<(), CoreError> {
    let over = |limit: &'static str, what: String| CoreError::Quota {
        limit,
        message: format!("workspace '{workspace}' quota {limit} exceeded: {what}"),
    };
    if let Some(max) = quotas.max_vcpus_per_sandbox
        && ask.cpus > max
    {
        return Err(over(
            "max_vcpus_per_sandbox",
            format!("{} vCPUs asked, {max} allowed per sandbox", ask.cpus),
        ));
    }
    if let Some(max) = quotas.max_memory_mb_per_sandbox
        && ask.memory_mb > max
    {
        return Err(over(
            "max_memory_mb_per_sandbox",
            format!("{} MiB asked, {max} allowed per sandbox", ask.memory_mb),
        ));
    }
    if let Some(max) = quotas.creates_per_minute
        && load.creates_last_minute >= max
    {
        return Err(over(
            "creates_per_minute",
            format!(
                "{} creates in the last minute, {max} allowed; retry in a minute",
                load.creates_last_minute
            ),
        ));
    }
    if let Some(max) = quotas.max_sandboxes
        && load.sandboxes + 1 > max
    {
        return Err(over(
            "max_sandboxes",
            format!(
                "{} sandboxes exist, {max} allowed; delete one first",
                load.sandboxes
            ),
        ));
    }
    if let Some(max) = quotas.max_awake_sandboxes
        && load.awake + 1 > max
    {
        return Err(over(
            "max_awake_sandboxes",
            format!(
                "{} sandboxes are awake, {max} allowed; put one to standby or delete one",
                load.awake
            ),
        ));
    }
    if let Some(max) = quotas.max_awake_vcpus
        && load.awake_vcpus + ask.cpus > max + 1e-9
    {
        return Err(over(
            "max_awake_vcpus",
            format!(
                "{} vCPUs awake + {} asked, {max} allowed",
                load.awake_vcpus, ask.cpus
            ),
        ));
    }
    if let Some(max) = quotas.max_awake_memory_mb
        && load.awake_memory_mb + ask.memory_mb > max
    {
        return Err(over(
            "max_awake_memory_mb",
            format!(
                "{} MiB awake + {} asked, {max} allowed",
                load.awake_memory_mb, ask.memory_mb
            ),
        ));
    }
    if let Some(max) = quotas.max_disk_mb
        && load.disk_mb + ask.disk_mb > max
    {
        return Err(over(
            "max_disk_mb",
            format!(
                "{} MiB of disk held + {} asked, {max} allowed",
                load.disk_mb, ask.disk_mb
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ask() -> Ask {
        Ask {
            cpus: 1.0,
            memory_mb: 512,
            disk_mb: 1024,
        }
    }

    #[test]
    fn each_limit_refuses_with_its_name_and_the_use() {
        let q = Tiers::default().get("free").unwrap().clone();
        assert!(check_create("a", &q, &Load::default(), &ask()).is_ok());
        let full = Load {
            awake: 10,
            sandboxes: 10,
            ..Load::default()
        };
        match check_create("a", &q, &full, &ask()) {
            Err(CoreError::Quota { limit, message }) => {
                assert_eq!(limit, "max_awake_sandboxes");
                assert!(
                    message.contains("10 sandboxes are awake, 10 allowed"),
                    "{message}"
                );
            }
            other => panic!("{other:?}"),
        }
        let big = Ask { cpus: 3.0, ..ask() };
        assert!(matches!(
            check_create("a", &q, &Load::default(), &big),
            Err(CoreError::Quota {
                limit: "max_vcpus_per_sandbox",
                ..
            })
        ));
        let rate = Load {
            creates_last_minute: 60,
            ..Load::default()
        };
        assert!(matches!(
            check_create("a", &q, &rate, &ask()),
            Err(CoreError::Quota {
                limit: "creates_per_minute",
                ..
            })
        ));
        let unlimited = Tiers::default().get(UNLIMITED_TIER).unwrap().clone();
        let huge = Load {
            sandboxes: 1_000_000,
            awake: 1_000_000,
            ..Load::default()
        };
        assert!(check_create("a", &unlimited, &huge, &ask()).is_ok());
        assert_eq!(unlimited.standby_age().unwrap(), None);
        assert_eq!(
            q.standby_age().unwrap(),
            Some(Duration::from_secs(7 * 86400))
        );
    }

    #[test]
    fn overrides_replace_single_fields_and_files_add_tiers() {
        let free = Tiers::default().get("free").unwrap().clone();
        let o = Quotas {
            max_awake_sandboxes: Some(2),
            ..Quotas::default()
        };
        let q = free.with(&o);
        assert_eq!(q.max_awake_sandboxes, Some(2));
        assert_eq!(q.max_sandboxes, free.max_sandboxes);
        let tiers = Tiers::with_file("[tiny]\nmax_awake_sandboxes = 1\nmax_standby_age = \"1h\"\n")
            .unwrap();
        assert_eq!(tiers.get("tiny").unwrap().max_awake_sandboxes, Some(1));
        assert!(tiers.get("free").is_some());
        assert!(Tiers::with_file("[x]\nmax_awake = 1\n").is_err());
        assert!(Tiers::with_file("[x]\nmax_standby_age = \"soon\"\n").is_err());
        assert!(Tiers::default().require("gold").is_err());
    }
}
