//! Cost projection: what N sandboxes would cost per month at an activity ratio, with burrow's
//! standby (pay for compute only while awake, for storage while asleep), beside keeping them
//! always on. Pure arithmetic over figures the server measured and a price list, so the result
//! can be checked by hand: every input is returned with it.

use serde::{Deserialize, Serialize};

use crate::CoreError;

/// Seconds in the projected month (30 days).
pub const MONTH_SECONDS: f64 = 30.0 * 86400.0;

/// Unit prices in US dollars. GB = 10^9 bytes, as burrow meters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Prices {
    /// Whose list prices these are.
    pub provider: String,
    pub vcpu_second: f64,
    pub gb_second: f64,
    pub storage_gb_month: f64,
}

impl Default for Prices {
    /// AWS list prices, us-east-1, Linux/x86: Fargate $0.04048 per vCPU-hour and $0.004445 per
    /// GB-hour; EBS gp3 $0.08 per GB-month. Override with `<data_dir>/prices.toml`.
    fn default() -> Self {
        Prices {
            provider: "aws us-east-1 (Fargate compute, EBS gp3 storage; list prices)".into(),
            vcpu_second: 0.04048 / 3600.0,
            gb_second: 0.004445 / 3600.0,
            storage_gb_month: 0.08,
        }
    }
}

impl Prices {
    pub fn from_toml(text: &str) -> Result<Prices, CoreError> {
        let prices: Prices =
            toml::from_str(text).map_err(|e| CoreError::Invalid(format!("prices file: {e}")))?;
        for (name, v) in [
            ("vcpu_second", prices.vcpu_second),
            ("gb_second", prices.gb_second),
            ("storage_gb_month", prices.storage_gb_month),
        ] {
            if !(v.is_finite() && v >= 0.0) {
                return Err(CoreError::Invalid(format!(
                    "prices file: {name} must be a number >= 0 (got {v})"
                )));
            }
        }
        Ok(prices)
    }
}

/// Per-sandbox figures the projection scales up.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PerSandbox {
    /// vCPUs billed while awake (the sandboxes' allocation).
    pub vcpus: f64,
    /// Memory billed while awake, GB (the sandboxes' allocation).
    pub memory_gb: f64,
    /// Stored while asleep, GB (upper dir + checkpoint image or swapped memory), measured.
    pub standby_storage_gb: f64,
}

/// The projection and everything it was computed from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Projection {
    pub sandboxes: u64,
    /// Share of the month a sandbox is awake (0–1).
    pub active_ratio: f64,
    pub per_sandbox: PerSandbox,
    pub prices: Prices,
    pub month_seconds: f64,
    /// Compute while awake: sandboxes × ratio × month × (vCPU × price + GB × price).
    pub active_cost: f64,
    /// Storage while asleep: sandboxes × (1 − ratio) × GB × price per GB-month.
    pub standby_cost: f64,
    pub total_cost: f64,
    /// The same sandboxes awake all month: sandboxes × month × (vCPU × price + GB × price).
    pub always_on_cost: f64,
    /// `total_cost / always_on_cost` (0 when always-on costs nothing).
    pub ratio_to_always_on: f64,
}

/// Projects the monthly cost of `sandboxes` sandboxes awake `active_ratio` of the time.
pub fn project(
    sandboxes: u64,
    active_ratio: f64,
    per_sandbox: PerSandbox,
    prices: Prices,
) -> Result<Projection, CoreError> {
    if !(0.0..=1.0).contains(&active_ratio) {
        return Err(CoreError::Invalid(format!(
            "active ratio {active_ratio} must be between 0 and 1 (e.g. 0.05 = awake 5% of the time)"
        )));
    }
    let n = sandboxes as f64;
    let compute_per_second =
        per_sandbox.vcpus * prices.vcpu_second + per_sandbox.memory_gb * prices.gb_second;
    let active_cost = n * active_ratio * MONTH_SECONDS * compute_per_second;
    let standby_cost =
        n * (1.0 - active_ratio) * per_sandbox.standby_storage_gb * prices.storage_gb_month;
    let always_on_cost = n * MONTH_SECONDS * compute_per_second;
    let total_cost = active_cost + standby_cost;
    Ok(Projection {
        sandboxes,
        active_ratio,
        per_sandbox,
        prices,
        month_seconds: MONTH_SECONDS,
        active_cost,
        standby_cost,
        total_cost,
        always_on_cost,
        ratio_to_always_on: if always_on_cost > 0.0 {
            total_cost / always_on_cost
        } else {
            0.0
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_a_hand_computation() {
        let prices = Prices {
            provider: "test".into(),
            vcpu_second: 0.00001,
            gb_second: 0.000001,
            storage_gb_month: 0.1,
        };
        let per = PerSandbox {
            vcpus: 1.0,
            memory_gb: 0.5,
            standby_storage_gb: 0.02,
        };
        let p = project(1000, 0.05, per, prices).unwrap();
        // compute per second: 1 × 0.00001 + 0.5 × 0.000001 = 0.0000105 $
        // active: 1000 × 0.05 × 2,592,000 × 0.0000105 = 1360.8 $
        // standby: 1000 × 0.95 × 0.02 × 0.1 = 1.9 $
        // always on: 1000 × 2,592,000 × 0.0000105 = 27,216 $
        assert!((p.active_cost - 1360.8).abs() < 1e-6, "{}", p.active_cost);
        assert!((p.standby_cost - 1.9).abs() < 1e-9);
        assert!((p.always_on_cost - 27216.0).abs() < 1e-6);
        assert!((p.total_cost - 1362.7).abs() < 1e-6);
        assert!(project(1, 1.5, p.per_sandbox.clone(), p.prices.clone()).is_err());
    }

    #[test]
    fn price_files_are_checked() {
        let p = Prices::from_toml(
            "provider = \"x\"\nvcpu_second = 1e-5\ngb_second = 1e-6\nstorage_gb_month = 0.1\n",
        )
        .unwrap();
        assert_eq!(p.provider, "x");
        assert!(
            Prices::from_toml(
                "provider = \"x\"\nvcpu_second = -1\ngb_second = 0\nstorage_gb_month = 0\n"
            )
            .is_err()
        );
        assert!(Prices::from_toml("provider = \"x\"\n").is_err());
    }
}
