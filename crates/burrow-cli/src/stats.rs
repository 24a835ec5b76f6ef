//! Percentiles for benchmark output.

use std::time::Duration;

/// Summary of a set of latency samples.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Summary {
    pub runs: usize,
    pub min_ms: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    pub mean_ms: f64,
}

impl Summary {
    /// Summarises `samples`; `None` when there are none.
    pub fn of(samples: &[Duration]) -> Option<Self> {
        if samples.is_empty() {
            return None;
        }
        let mut ms: Vec<f64> = samples.iter().map(|d| d.as_secs_f64() * 1000.0).collect();
        ms.sort_by(f64::total_cmp);
        let pick = |q: f64| {
            // Nearest-rank percentile: the smallest sample with at least q of the samples at or below it.
            let rank = (q * ms.len() as f64).ceil().max(1.0) as usize;
            ms[rank.min(ms.len()) - 1]
        };
        Some(Self {
            runs: ms.len(),
            min_ms: ms[0],
            p50_ms: pick(0.50),
            p90_ms: pick(0.90),
            p99_ms: pick(0.99),
            max_ms: ms[ms.len() - 1],
            mean_ms: ms.iter().sum::<f64>() / ms.len() as f64,
        })
    }

    pub fn line(&self, what: &str) -> String {
        format!(
            "{what:<28} n={:<5} min {:>8.2} ms  p50 {:>8.2} ms  p90 {:>8.2} ms  p99 {:>8.2} ms  max {:>8.2} ms",
            self.runs, self.min_ms, self.p50_ms, self.p90_ms, self.p99_ms, self.max_ms
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let samples: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        let s = Summary::of(&samples).unwrap();
        assert_eq!(s.p50_ms, 50.0);
        assert_eq!(s.p99_ms, 99.0);
        assert_eq!(s.max_ms, 100.0);
        assert_eq!(s.min_ms, 1.0);
        assert!(Summary::of(&[]).is_none());
    }

    #[test]
    fn single_sample_is_every_percentile() {
        let s = Summary::of(&[Duration::from_millis(7)]).unwrap();
        assert_eq!((s.p50_ms, s.p99_ms), (7.0, 7.0));
    }
}
