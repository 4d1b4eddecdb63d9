//! The last minute of figures, one sample per second, for the rates and percentiles of
//! `/stats` and the charts of `/monitor`.
//!
//! A sampler task copies the cumulative [`Totals`] once a second into a ring of
//! [`WINDOW_SAMPLES`] entries; a rate over a window is the difference of two samples
//! divided by the time between them, and a window's latency distribution is the
//! difference of two histogram snapshots. Nothing on the request path touches it.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::{percentiles_ms, status_class, Totals};

/// Samples kept: one minute plus the sample the minute is measured from.
pub const WINDOW_SAMPLES: usize = 61;

/// How often the sampler runs.
pub const SAMPLE_EVERY: Duration = Duration::from_secs(1);

/// One sample.
#[derive(Debug, Clone)]
struct Sample {
    at: Instant,
    unix_ms: u64,
    totals: Totals,
}

/// The ring of recent samples.
#[derive(Debug, Default)]
pub struct Window {
    ring: Mutex<VecDeque<Sample>>,
}

use crate::clock::unix_ms;

/// Rates and latency of the interval between two samples.
fn interval(from: &Totals, to: &Totals, secs: f64) -> Value {
    let per_s = |a: u64, b: u64| {
        let v = b.saturating_sub(a) as f64 / secs.max(1e-3);
        (v * 100.0).round() / 100.0
    };
    let (c4, c5) = (status_class(400), status_class(500));
    let errors_4xx = per_s(from.by_status[c4], to.by_status[c4]);
    let errors_5xx = per_s(from.by_status[c5], to.by_status[c5]);
    let requests = to.requests.saturating_sub(from.requests);
    let errors = to.by_status[c4].saturating_sub(from.by_status[c4])
        + to.by_status[c5].saturating_sub(from.by_status[c5]);
    json!({
        "seconds": (secs * 1000.0).round() / 1000.0,
        "requests": requests,
        "requests_per_s": per_s(from.requests, to.requests),
        "errors_4xx_per_s": errors_4xx,
        "errors_5xx_per_s": errors_5xx,
        "error_ratio": if requests > 0 { (errors as f64 / requests as f64 * 1e4).round() / 1e4 } else { 0.0 },
        "bytes_per_s": per_s(from.bytes, to.bytes),
        "client_closed_per_s": per_s(from.client_closed, to.client_closed),
        "sessions_created_per_s": per_s(from.sessions_created, to.sessions_created),
        "sessions_reused_per_s": per_s(from.sessions_reused, to.sessions_reused),
        "store_errors_per_s": per_s(from.store_errors, to.store_errors),
        "time_to_first_byte_ms": percentiles_ms(&to.ttfb.since(&from.ttfb)),
        "time_to_last_byte_ms": percentiles_ms(&to.ttlb.since(&from.ttlb)),
        "store_latency_ms": percentiles_ms(&to.store.since(&from.store)),
    })
}

impl Window {
    /// Adds a sample taken now, dropping the oldest beyond [`WINDOW_SAMPLES`].
    pub fn push(&self, totals: Totals) {
        let s = Sample {
            at: Instant::now(),
            unix_ms: unix_ms(),
            totals,
        };
        if let Ok(mut ring) = self.ring.lock() {
            if ring.len() >= WINDOW_SAMPLES {
                ring.pop_front();
            }
            ring.push_back(s);
        }
    }

    /// `/stats`' time-based views, with `now` as the newest point:
    /// `last_minute` (from the oldest sample up to now), `last_5s`, and `series`
    /// (one point per sampled second: its rates, percentiles and gauges).
    pub fn views(&self, now: &Totals) -> Value {
        let ring: Vec<Sample> = match self.ring.lock() {
            Ok(r) => r.iter().cloned().collect(),
            Err(_) => Vec::new(),
        };
        let t_now = Instant::now();
        let since = |s: &Sample| t_now.duration_since(s.at).as_secs_f64();
        let last_minute = ring
            .iter()
            .find(|s| since(s) <= 61.0)
            .map(|s| interval(&s.totals, now, since(s)));
        let last_5s = ring
            .iter()
            .rev()
            .find(|s| since(s) >= 5.0)
            .or_else(|| ring.first())
            .map(|s| interval(&s.totals, now, since(s)));
        let series: Vec<Value> = ring
            .windows(2)
            .map(|w| {
                let secs = w[1].at.duration_since(w[0].at).as_secs_f64();
                let mut point = interval(&w[0].totals, &w[1].totals, secs);
                if let Value::Object(m) = &mut point {
                    m.insert("t".into(), w[1].unix_ms.into());
                    m.insert("connections".into(), w[1].totals.connections.into());
                    m.insert("transfers".into(), w[1].totals.transfers.into());
                }
                point
            })
            .collect();
        json!({
            "last_minute": last_minute,
            "last_5s": last_5s,
            "series": series,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_between_samples() {
        let w = Window::default();
        w.push(Totals::default());
        std::thread::sleep(Duration::from_millis(20));
        let now = Totals {
            requests: 10,
            bytes: 1000,
            ..Totals::default()
        };
        w.push(now.clone());
        let v = w.views(&now);
        assert_eq!(v["last_minute"]["requests"], 10);
        assert!(v["last_minute"]["requests_per_s"].as_f64().unwrap() > 0.0);
        assert_eq!(v["series"].as_array().unwrap().len(), 1);
        assert_eq!(v["series"][0]["requests"], 10);
    }

    #[test]
    fn ring_is_bounded() {
        let w = Window::default();
        for _ in 0..(WINDOW_SAMPLES + 10) {
            w.push(Totals::default());
        }
        assert_eq!(w.ring.lock().unwrap().len(), WINDOW_SAMPLES);
    }
}
