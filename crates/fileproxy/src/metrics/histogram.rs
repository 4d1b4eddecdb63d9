//! A lock-free latency histogram with fixed buckets.
//!
//! One relaxed atomic add per bucket hit plus one for the sum, so recording on the hot
//! path never takes a lock. The same atomics are encoded as a Prometheus histogram on
//! `/metrics` and read back as [`HistSnapshot`]s for the percentiles of `/stats`
//! (differences of two snapshots give the distribution of a time window).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::{MetricType, TypedMetric};

/// Upper bounds of the buckets, in seconds (the last bucket, `+Inf`, is implicit).
///
/// Roughly 1-2.5-5-7.5 steps from 100 µs to 5 min: fine enough that interpolated
/// percentiles are within a bucket's width of the truth.
pub const BUCKETS: [f64; 26] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.0075, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25,
    0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 15.0, 30.0, 60.0, 120.0, 180.0, 300.0,
];

/// Number of counting slots: one per bound plus `+Inf`.
const SLOTS: usize = BUCKETS.len() + 1;

#[derive(Debug)]
struct Inner {
    /// Observations per bucket (not cumulative); the last slot is `+Inf`.
    counts: [AtomicU64; SLOTS],
    /// Sum of all observations in microseconds.
    sum_us: AtomicU64,
}

/// A shared, lock-free histogram of durations (clones share the same counts).
#[derive(Debug, Clone)]
pub struct LatencyHistogram(Arc<Inner>);

impl Default for LatencyHistogram {
    fn default() -> Self {
        LatencyHistogram(Arc::new(Inner {
            counts: std::array::from_fn(|_| AtomicU64::new(0)),
            sum_us: AtomicU64::new(0),
        }))
    }
}

/// Index of the bucket a value in seconds falls into.
fn slot_of(seconds: f64) -> usize {
    BUCKETS.partition_point(|b| *b < seconds)
}

impl LatencyHistogram {
    /// Records one duration.
    pub fn observe(&self, d: Duration) {
        let slot = slot_of(d.as_secs_f64());
        if let Some(c) = self.0.counts.get(slot) {
            c.fetch_add(1, Ordering::Relaxed);
        }
        let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        self.0.sum_us.fetch_add(us, Ordering::Relaxed);
    }

    /// The counts now.
    pub fn snapshot(&self) -> HistSnapshot {
        HistSnapshot {
            counts: std::array::from_fn(|i| self.0.counts[i].load(Ordering::Relaxed)),
            sum_us: self.0.sum_us.load(Ordering::Relaxed),
        }
    }
}

/// A copy of a histogram's counts at one moment (or the difference of two).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistSnapshot {
    /// Observations per bucket (not cumulative).
    pub counts: [u64; SLOTS],
    /// Sum in microseconds.
    pub sum_us: u64,
}

impl Default for HistSnapshot {
    fn default() -> Self {
        HistSnapshot {
            counts: [0; SLOTS],
            sum_us: 0,
        }
    }
}

impl HistSnapshot {
    /// Number of observations.
    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// Adds `other`'s counts to these (merging label sets).
    pub fn add(&mut self, other: &HistSnapshot) {
        for (a, b) in self.counts.iter_mut().zip(other.counts.iter()) {
            *a += b;
        }
        self.sum_us += other.sum_us;
    }

    /// The observations made between `earlier` and `self` (saturating).
    pub fn since(&self, earlier: &HistSnapshot) -> HistSnapshot {
        HistSnapshot {
            counts: std::array::from_fn(|i| self.counts[i].saturating_sub(earlier.counts[i])),
            sum_us: self.sum_us.saturating_sub(earlier.sum_us),
        }
    }

    /// Estimated `q`-quantile (0..=1) in seconds, interpolating linearly inside the
    /// bucket as Prometheus' `histogram_quantile` does; `None` without observations.
    /// Values in the `+Inf` bucket are reported as the largest finite bound.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        let total = self.count();
        if total == 0 {
            return None;
        }
        let rank = q.clamp(0.0, 1.0) * total as f64;
        let mut seen = 0u64;
        for (i, &c) in self.counts.iter().enumerate() {
            if c == 0 {
                continue;
            }
            if (seen + c) as f64 >= rank {
                let Some(&upper) = BUCKETS.get(i) else {
                    return BUCKETS.last().copied();
                };
                let lower = if i == 0 { 0.0 } else { BUCKETS[i - 1] };
                let within = ((rank - seen as f64) / c as f64).clamp(0.0, 1.0);
                return Some(lower + (upper - lower) * within);
            }
            seen += c;
        }
        BUCKETS.last().copied()
    }

    /// Mean in seconds; `None` without observations.
    pub fn mean(&self) -> Option<f64> {
        let n = self.count();
        (n > 0).then(|| self.sum_us as f64 / 1e6 / n as f64)
    }
}

impl TypedMetric for LatencyHistogram {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for LatencyHistogram {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let snap = self.snapshot();
        // The encoder takes per-bucket counts and writes them cumulatively.
        let buckets: Vec<(f64, u64)> = BUCKETS
            .iter()
            .copied()
            .chain(std::iter::once(f64::INFINITY))
            .zip(snap.counts.iter().copied())
            .collect();
        encoder.encode_histogram::<NoLabelSet>(
            snap.sum_us as f64 / 1e6,
            snap.count(),
            &buckets,
            None,
        )
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_sorted() {
        assert!(BUCKETS.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn observe_and_quantiles() {
        let h = LatencyHistogram::default();
        for _ in 0..90 {
            h.observe(Duration::from_millis(3)); // bucket (0.0025, 0.005]
        }
        for _ in 0..10 {
            h.observe(Duration::from_millis(800)); // bucket (0.75, 1.0]
        }
        let s = h.snapshot();
        assert_eq!(s.count(), 100);
        let p50 = s.quantile(0.5).unwrap();
        assert!((0.0025..=0.005).contains(&p50), "{p50}");
        let p99 = s.quantile(0.99).unwrap();
        assert!((0.75..=1.0).contains(&p99), "{p99}");
        assert!((s.mean().unwrap() - 0.0827).abs() < 0.001);
    }

    #[test]
    fn window_difference() {
        let h = LatencyHistogram::default();
        h.observe(Duration::from_secs(2));
        let a = h.snapshot();
        h.observe(Duration::from_micros(50));
        let d = h.snapshot().since(&a);
        assert_eq!(d.count(), 1);
        assert!(d.quantile(0.5).unwrap() <= 0.0001);
        assert_eq!(HistSnapshot::default().quantile(0.5), None);
    }

    #[test]
    fn overflow_goes_to_inf() {
        let h = LatencyHistogram::default();
        h.observe(Duration::from_secs(10_000));
        let s = h.snapshot();
        assert_eq!(s.counts[SLOTS - 1], 1);
        assert_eq!(s.quantile(0.5), Some(300.0));
    }
}
