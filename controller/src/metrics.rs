//! Prometheus text exposition of what an operator watches: cloud calls,
//! errors and throttles per API with latency histograms (from the providers'
//! `ApiStats`), reconcile counts and durations, routes owned, nodes without a
//! route, ENIs managed.

use parking_lot::Mutex;
use providers::call::{ApiStats, LATENCY_BUCKETS};
use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Arc;
use std::time::Duration;

const RECONCILE_BUCKETS: [f64; 10] = [0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];

#[derive(Default, Clone, Debug)]
struct Histogram {
    buckets: [u64; RECONCILE_BUCKETS.len() + 1],
    sum: f64,
}

impl Histogram {
    fn observe(&mut self, seconds: f64) {
        self.sum += seconds;
        let slot = RECONCILE_BUCKETS
            .iter()
            .position(|b| seconds <= *b)
            .unwrap_or(RECONCILE_BUCKETS.len());
        self.buckets[slot] += 1;
    }
}

/// The controller's own metrics; cloud metrics are read from `ApiStats` at
/// scrape time.
#[derive(Default)]
pub struct Metrics {
    /// (reconciler, result) -> count
    reconciles: Mutex<BTreeMap<(String, String), u64>>,
    durations: Mutex<BTreeMap<String, Histogram>>,
    gauges: Mutex<BTreeMap<String, (String, f64)>>,
    cloud: Mutex<Option<(String, Arc<ApiStats>)>>,
}

impl Metrics {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    pub fn set_cloud(&self, provider: &str, stats: Arc<ApiStats>) {
        *self.cloud.lock() = Some((provider.to_owned(), stats));
    }

    pub fn reconciled(&self, reconciler: &str, ok: bool, took: Duration) {
        let result = if ok { "success" } else { "error" };
        *self
            .reconciles
            .lock()
            .entry((reconciler.to_owned(), result.to_owned()))
            .or_default() += 1;
        self.durations
            .lock()
            .entry(reconciler.to_owned())
            .or_default()
            .observe(took.as_secs_f64());
    }

    /// Set a gauge (`vpc_eni_<name>`), e.g. `routes_owned`.
    pub fn set_gauge(&self, name: &str, help: &str, value: f64) {
        self.gauges
            .lock()
            .insert(name.to_owned(), (help.to_owned(), value));
    }

    pub fn gauge(&self, name: &str) -> Option<f64> {
        self.gauges.lock().get(name).map(|(_, v)| *v)
    }

    /// The Prometheus text format (version 0.0.4).
    pub fn render(&self) -> String {
        let mut out = String::new();
        if let Some((provider, stats)) = self.cloud.lock().clone() {
            render_cloud(&mut out, &provider, &stats);
        }
        let reconciles = self.reconciles.lock().clone();
        out.push_str("# HELP vpc_eni_reconcile_total Reconcile passes by reconciler and result.\n# TYPE vpc_eni_reconcile_total counter\n");
        for ((reconciler, result), n) in &reconciles {
            let _ = writeln!(
                out,
                "vpc_eni_reconcile_total{{reconciler=\"{reconciler}\",result=\"{result}\"}} {n}"
            );
        }
        out.push_str("# HELP vpc_eni_reconcile_duration_seconds Duration of reconcile passes.\n# TYPE vpc_eni_reconcile_duration_seconds histogram\n");
        for (reconciler, h) in self.durations.lock().iter() {
            write_histogram(
                &mut out,
                "vpc_eni_reconcile_duration_seconds",
                &format!("reconciler=\"{reconciler}\""),
                &RECONCILE_BUCKETS,
                &h.buckets,
                h.sum,
            );
        }
        for (name, (help, value)) in self.gauges.lock().iter() {
            let _ = writeln!(
                out,
                "# HELP vpc_eni_{name} {help}\n# TYPE vpc_eni_{name} gauge\nvpc_eni_{name} {value}"
            );
        }
        out
    }
}

fn write_histogram(
    out: &mut String,
    name: &str,
    labels: &str,
    bounds: &[f64],
    counts: &[u64],
    sum: f64,
) {
    let mut cumulative = 0;
    for (bound, count) in bounds.iter().zip(counts) {
        cumulative += count;
        let _ = writeln!(out, "{name}_bucket{{{labels},le=\"{bound}\"}} {cumulative}");
    }
    cumulative += counts.last().copied().unwrap_or(0);
    let _ = writeln!(out, "{name}_bucket{{{labels},le=\"+Inf\"}} {cumulative}");
    let _ = writeln!(out, "{name}_sum{{{labels}}} {sum}");
    let _ = writeln!(out, "{name}_count{{{labels}}} {cumulative}");
}

fn render_cloud(out: &mut String, provider: &str, stats: &ApiStats) {
    let snapshot = stats.snapshot();
    type Get = fn(&providers::call::ApiCounters) -> u64;
    let series: [(&str, &str, Get); 4] = [
        (
            "vpc_eni_cloud_api_calls_total",
            "Cloud API attempts sent.",
            |c| c.calls,
        ),
        (
            "vpc_eni_cloud_api_throttles_total",
            "Cloud API attempts answered with throttling.",
            |c| c.throttles,
        ),
        (
            "vpc_eni_cloud_api_retries_total",
            "Cloud API retries after retryable errors.",
            |c| c.retries,
        ),
        (
            "vpc_eni_cloud_api_rate_limited_total",
            "Calls held back by our own per-API rate limit.",
            |c| c.rate_limited,
        ),
    ];
    for (name, help, get) in series {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
        for (api, c) in &snapshot {
            let _ = writeln!(
                out,
                "{name}{{provider=\"{provider}\",api=\"{api}\"}} {}",
                get(c)
            );
        }
    }
    let _ = writeln!(out, "# HELP vpc_eni_cloud_api_errors_total Failed cloud API attempts by error kind.\n# TYPE vpc_eni_cloud_api_errors_total counter");
    for (api, c) in &snapshot {
        for (kind, n) in &c.errors_by_kind {
            let _ = writeln!(
                out,
                "vpc_eni_cloud_api_errors_total{{provider=\"{provider}\",api=\"{api}\",kind=\"{kind}\"}} {n}"
            );
        }
    }
    let _ = writeln!(out, "# HELP vpc_eni_cloud_api_latency_seconds Cloud API attempt latency.\n# TYPE vpc_eni_cloud_api_latency_seconds histogram");
    for (api, c) in &snapshot {
        write_histogram(
            out,
            "vpc_eni_cloud_api_latency_seconds",
            &format!("provider=\"{provider}\",api=\"{api}\""),
            &LATENCY_BUCKETS,
            &c.latency_buckets,
            c.latency_sum_seconds,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reconcile_histogram_is_cumulative_and_counts_match() {
        let m = Metrics::new();
        m.reconciled("routes", true, Duration::from_millis(20));
        m.reconciled("routes", false, Duration::from_secs(60));
        m.set_gauge("routes_owned", "Route entries owned.", 3.0);
        let text = m.render();
        assert!(
            text.contains("vpc_eni_reconcile_total{reconciler=\"routes\",result=\"success\"} 1")
        );
        assert!(text.contains("vpc_eni_reconcile_total{reconciler=\"routes\",result=\"error\"} 1"));
        assert!(text.contains(
            "vpc_eni_reconcile_duration_seconds_bucket{reconciler=\"routes\",le=\"0.05\"} 1"
        ));
        assert!(text.contains(
            "vpc_eni_reconcile_duration_seconds_bucket{reconciler=\"routes\",le=\"+Inf\"} 2"
        ));
        assert!(text.contains("vpc_eni_reconcile_duration_seconds_count{reconciler=\"routes\"} 2"));
        assert!(text.contains("vpc_eni_routes_owned 3"));
    }
}
