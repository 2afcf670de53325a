//! What an operator watches, on one prometheus-client `Registry` served as
//! OpenMetrics text: cloud calls, errors and throttles per API with latency
//! histograms (read from the providers' `ApiStats` at scrape time), reconcile
//! counts and durations, leadership, routes owned, nodes without a route,
//! ENIs owned and orphaned, and capacity: per subnet free and cluster-held
//! addresses and when it runs out, per node ENIs attached and allowed, per
//! route table entries and quota.

use parking_lot::Mutex;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, LabelSetEncoder, NoLabelSet};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Registry, Unit};
use providers::call::{ApiCounters, ApiStats, LATENCY_BUCKETS};
use std::sync::Arc;
use std::time::Duration;

/// Content-Type of what `Metrics::render` returns.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

const RECONCILE_BUCKETS: [f64; 10] = [0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReconcileLabels {
    reconciler: String,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PodErrorLabels {
    reason: &'static str,
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReconcilerLabel {
    reconciler: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SubnetZoneLabels {
    subnet: String,
    zone: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SubnetLabel {
    subnet: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NodeLabel {
    node: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TableLabel {
    table: String,
}

fn gauge_value(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// The one series of a gauge without labels that is absent until its first
/// value: a reconciler's gauge says nothing before its first pass (and
/// nothing at all in a mode that does not run it), where a registered plain
/// gauge would read 0.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
struct Unlabelled;

impl EncodeLabelSet for Unlabelled {
    fn encode(&self, _: &mut LabelSetEncoder<'_>) -> Result<(), std::fmt::Error> {
        Ok(())
    }
}

type LateGauge = Family<Unlabelled, Gauge>;

fn set_late(gauge: &LateGauge, value: usize) {
    gauge
        .get_or_create(&Unlabelled)
        .set(i64::try_from(value).unwrap_or(i64::MAX));
}

fn get_late(gauge: &LateGauge) -> Option<i64> {
    gauge.get(&Unlabelled).map(|g| g.get())
}

/// The controller's metrics. Everything is registered once, in `new`; cloud
/// metrics are read from the provider's `ApiStats` at scrape time.
pub struct Metrics {
    registry: Registry,
    /// Shared-ENI mode's pools (its own module).
    pub shared: Arc<crate::shared::metrics::SharedMetrics>,
    reconciles: Family<ReconcileLabels, Counter>,
    reconcile_durations: Family<ReconcilerLabel, Histogram, fn() -> Histogram>,
    eni_pod_errors: Family<PodErrorLabels, Counter>,
    leader: Gauge,
    routes_owned: LateGauge,
    nodes_without_route: LateGauge,
    eni_owned: LateGauge,
    eni_orphans: LateGauge,
    subnet_free_ips: Family<SubnetZoneLabels, Gauge>,
    subnet_held_ips: Family<SubnetLabel, Gauge>,
    subnet_exhaustion: Family<SubnetLabel, Gauge>,
    node_enis: Family<NodeLabel, Gauge>,
    node_enis_allowed: Family<NodeLabel, Gauge>,
    route_table_entries: Family<TableLabel, Gauge>,
    route_table_quota: Family<TableLabel, Gauge>,
    /// Nodes with series in `node_enis` (a family cannot list its labels).
    nodes_exported: Mutex<std::collections::BTreeSet<String>>,
    cloud: Arc<Mutex<Option<CloudSource>>>,
    bgp: BgpPeerMetrics,
}

impl Metrics {
    pub fn new() -> Arc<Self> {
        let mut registry = Registry::default();
        let cloud = Arc::new(Mutex::new(None));
        registry.register_collector(Box::new(CloudCollector {
            source: cloud.clone(),
        }));

        let reconciles = Family::<ReconcileLabels, Counter>::default();
        registry.register(
            "vpc_eni_reconcile",
            "Reconcile passes by reconciler and result",
            reconciles.clone(),
        );
        let reconcile_durations: Family<ReconcilerLabel, Histogram, fn() -> Histogram> =
            Family::new_with_constructor(|| Histogram::new(RECONCILE_BUCKETS));
        registry.register_with_unit(
            "vpc_eni_reconcile_duration",
            "Duration of reconcile passes",
            Unit::Seconds,
            reconcile_durations.clone(),
        );
        let eni_pod_errors = Family::<PodErrorLabels, Counter>::default();
        registry.register(
            "vpc_eni_eni_pod_errors",
            "ENI allocations and releases that did not finish, by Event reason and error kind",
            eni_pod_errors.clone(),
        );
        let leader = Gauge::default();
        registry.register(
            "vpc_eni_leader",
            "1 while this replica holds the lease",
            leader.clone(),
        );
        let late = |registry: &mut Registry, name: &str, help: &str| {
            let gauge = LateGauge::default();
            registry.register(name, help, gauge.clone());
            gauge
        };
        let routes_owned = late(
            &mut registry,
            "vpc_eni_routes_owned",
            "Route entries owned by this controller",
        );
        let nodes_without_route = late(
            &mut registry,
            "vpc_eni_nodes_without_route",
            "Nodes with a podCIDR whose route is not in place",
        );
        let eni_owned = late(
            &mut registry,
            "vpc_eni_eni_owned",
            "ENIs tagged as this cluster's at the last GC pass",
        );
        let eni_orphans = late(
            &mut registry,
            "vpc_eni_eni_orphans",
            "Owned ENIs with no live pod at the last GC pass",
        );
        fn family<S>(registry: &mut Registry, name: &str, help: &str) -> Family<S, Gauge>
        where
            S: Clone
                + std::hash::Hash
                + Eq
                + EncodeLabelSet
                + std::fmt::Debug
                + Send
                + Sync
                + 'static,
        {
            let family = Family::<S, Gauge>::default();
            registry.register(name, help, family.clone());
            family
        }
        let subnet_free_ips = family(
            &mut registry,
            "vpc_eni_subnet_free_ips",
            "Free addresses of a configured subnet at the controller's last describe",
        );
        let subnet_held_ips = family(
            &mut registry,
            "vpc_eni_subnet_held_ips",
            "Addresses of a subnet on ENIs tagged as this cluster's, at the last ENI GC pass",
        );
        let subnet_exhaustion = family(
            &mut registry,
            "vpc_eni_subnet_exhaustion_seconds",
            "Seconds until a subnet has no free address at the rate of the last hour of describes; absent when not falling",
        );
        let node_enis = family(
            &mut registry,
            "vpc_eni_node_enis",
            "Secondary ENIs attached to a node's instance",
        );
        let node_enis_allowed = family(
            &mut registry,
            "vpc_eni_node_enis_allowed",
            "Secondary ENIs a node's instance type allows",
        );
        let route_table_entries = family(
            &mut registry,
            "vpc_eni_route_table_entries",
            "Custom entries (ours and others') of a route table the controller writes, at the last routes pass",
        );
        let route_table_quota = family(
            &mut registry,
            "vpc_eni_route_table_quota",
            "Custom entries a route table takes (the cloud's default quota)",
        );
        let bgp = BgpPeerMetrics::register(&mut registry);
        let shared = crate::shared::metrics::SharedMetrics::register(&mut registry);
        Arc::new(Self {
            bgp,
            registry,
            shared,
            subnet_free_ips,
            subnet_held_ips,
            subnet_exhaustion,
            node_enis,
            node_enis_allowed,
            route_table_entries,
            route_table_quota,
            nodes_exported: Mutex::default(),
            reconciles,
            reconcile_durations,
            eni_pod_errors,
            leader,
            routes_owned,
            nodes_without_route,
            eni_owned,
            eni_orphans,
            cloud,
        })
    }

    /// Export the cloud client's per-API counters under `provider`.
    pub fn set_cloud(&self, provider: &str, stats: Arc<ApiStats>) {
        *self.cloud.lock() = Some(CloudSource {
            provider: provider.to_owned(),
            stats,
        });
    }

    pub fn reconciled(&self, reconciler: &str, ok: bool, took: Duration) {
        let result = if ok { "success" } else { "error" };
        self.reconciles
            .get_or_create(&ReconcileLabels {
                reconciler: reconciler.to_owned(),
                result,
            })
            .inc();
        self.reconcile_durations
            .get_or_create(&ReconcilerLabel {
                reconciler: reconciler.to_owned(),
            })
            .observe(took.as_secs_f64());
    }

    /// A pod's ENI work failed: `reason` is its Event reason, `kind` what
    /// went wrong (`eni::error::PodError::metric_label`).
    pub fn eni_pod_error(&self, reason: &'static str, kind: &'static str) {
        self.eni_pod_errors
            .get_or_create(&PodErrorLabels { reason, kind })
            .inc();
    }

    /// How many pod ENI failures of this reason and kind were counted.
    pub fn eni_pod_errors(&self, reason: &'static str, kind: &'static str) -> u64 {
        self.eni_pod_errors
            .get(&PodErrorLabels { reason, kind })
            .map_or(0, |c| c.get())
    }

    /// A BGP peer's session state (one series per state, 1 for the
    /// current one) and the prefixes it holds from us.
    pub fn set_bgp_peer(&self, peer: &str, state: &str, prefixes: usize) {
        self.bgp.set(peer, state, prefixes);
    }

    /// Flaps, UPDATE messages and UPDATE bytes a BGP peer's session added.
    pub fn add_bgp_peer_counts(&self, peer: &str, flaps: u64, updates: u64, bytes: u64) {
        self.bgp.add(peer, flaps, updates, bytes);
    }

    /// A BGP peer's series (`simulate`'s per-peer lines); `None` before
    /// this replica recorded the peer.
    pub fn bgp_peer(&self, peer: &str) -> Option<BgpPeerSnapshot> {
        self.bgp.snapshot(peer)
    }

    /// A BGP peer's state gauge (tests): 1 for `state` when it is current.
    pub fn bgp_peer_state(&self, peer: &str, state: &str) -> Option<i64> {
        self.bgp
            .state
            .get(&BgpStateLabels {
                peer: peer.to_owned(),
                state: state.to_owned(),
            })
            .map(|g| g.get())
    }

    pub fn set_leader(&self, leading: bool) {
        self.leader.set(i64::from(leading));
    }

    /// Results of a routes pass.
    pub fn set_routes_owned(&self, owned: usize) {
        set_late(&self.routes_owned, owned);
    }

    pub fn set_nodes_without_route(&self, nodes: usize) {
        set_late(&self.nodes_without_route, nodes);
    }

    /// Results of an ENI GC pass.
    pub fn set_eni_gc(&self, owned: usize, orphans: usize) {
        set_late(&self.eni_owned, owned);
        set_late(&self.eni_orphans, orphans);
    }

    /// A subnet as the controller last described it, with the forecast of
    /// its last hour of describes (`None`: not falling, or too few samples).
    pub fn set_subnet(&self, subnet: &str, zone: &str, free: u32, exhausted_in: Option<Duration>) {
        self.subnet_free_ips
            .get_or_create(&SubnetZoneLabels {
                subnet: subnet.to_owned(),
                zone: zone.to_owned(),
            })
            .set(i64::from(free));
        let label = SubnetLabel {
            subnet: subnet.to_owned(),
        };
        match exhausted_in {
            Some(d) => {
                self.subnet_exhaustion
                    .get_or_create(&label)
                    .set(gauge_value(d.as_secs()));
            }
            None => {
                self.subnet_exhaustion.remove(&label);
            }
        }
    }

    /// Addresses held on the cluster's ENIs, per subnet (every subnet
    /// given, 0 included; others' series go).
    pub fn set_subnets_held(&self, held: &std::collections::BTreeMap<String, u64>) {
        self.subnet_held_ips.clear();
        for (subnet, n) in held {
            self.subnet_held_ips
                .get_or_create(&SubnetLabel {
                    subnet: subnet.clone(),
                })
                .set(gauge_value(*n));
        }
    }

    /// A node's secondary ENIs attached and allowed, at its capacity count.
    pub fn set_node_enis(&self, node: &str, attached: u32, allowed: u32) {
        let label = NodeLabel {
            node: node.to_owned(),
        };
        self.nodes_exported.lock().insert(node.to_owned());
        self.node_enis
            .get_or_create(&label)
            .set(i64::from(attached));
        self.node_enis_allowed
            .get_or_create(&label)
            .set(i64::from(allowed));
    }

    /// Drop the series of nodes that are gone.
    pub fn retain_nodes(&self, live: &std::collections::HashSet<String>) {
        let mut nodes = self.nodes_exported.lock();
        for node in nodes.iter().filter(|n| !live.contains(*n)) {
            let label = NodeLabel { node: node.clone() };
            self.node_enis.remove(&label);
            self.node_enis_allowed.remove(&label);
        }
        nodes.retain(|n| live.contains(n));
    }

    /// A route table's custom entries and quota, at a routes pass.
    pub fn set_route_table(&self, table: &str, entries: usize, quota: u32) {
        let label = TableLabel {
            table: table.to_owned(),
        };
        self.route_table_entries
            .get_or_create(&label)
            .set(gauge_value(entries as u64));
        self.route_table_quota
            .get_or_create(&label)
            .set(i64::from(quota));
    }

    pub fn is_leader(&self) -> bool {
        self.leader.get() == 1
    }

    /// `None` until the first routes pass.
    pub fn routes_owned(&self) -> Option<i64> {
        get_late(&self.routes_owned)
    }

    /// `None` until the first routes pass.
    pub fn nodes_without_route(&self) -> Option<i64> {
        get_late(&self.nodes_without_route)
    }

    /// `None` until the first ENI GC pass.
    pub fn eni_owned(&self) -> Option<i64> {
        get_late(&self.eni_owned)
    }

    /// `None` until the first ENI GC pass.
    pub fn eni_orphans(&self) -> Option<i64> {
        get_late(&self.eni_orphans)
    }

    /// Reconcile passes of `reconciler` that succeeded (`ok`) or failed.
    pub fn reconciles(&self, reconciler: &str, ok: bool) -> u64 {
        let labels = ReconcileLabels {
            reconciler: reconciler.to_owned(),
            result: if ok { "success" } else { "error" },
        };
        self.reconciles.get(&labels).map_or(0, |c| c.get())
    }

    /// The OpenMetrics text exposition (`CONTENT_TYPE`), `# EOF` included.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if let Err(error) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            // Only an encoder can fail here (writing to a String does not); a
            // scrape of the cut-short text then fails visibly for want of `# EOF`.
            tracing::error!(%error, "encoding metrics failed");
        }
        out
    }
}

#[derive(Debug)]
struct CloudSource {
    provider: String,
    stats: Arc<ApiStats>,
}

#[derive(Clone, Debug, EncodeLabelSet)]
struct ApiLabels {
    provider: String,
    api: String,
}

#[derive(Clone, Debug, EncodeLabelSet)]
struct ApiErrorLabels {
    #[prometheus(flatten)]
    api: ApiLabels,
    kind: &'static str,
}

/// Encodes the cloud client's `ApiStats` at scrape time, so the providers
/// keep counting where the calls are made and nothing is copied in between.
#[derive(Debug)]
struct CloudCollector {
    source: Arc<Mutex<Option<CloudSource>>>,
}

type CounterOf = fn(&ApiCounters) -> u64;

const CLOUD_COUNTERS: [(&str, &str, CounterOf); 4] = [
    ("vpc_eni_cloud_api_calls", "Cloud API attempts sent.", |c| {
        c.calls
    }),
    (
        "vpc_eni_cloud_api_throttles",
        "Cloud API attempts answered with throttling.",
        |c| c.throttles,
    ),
    (
        "vpc_eni_cloud_api_retries",
        "Cloud API retries after retryable errors.",
        |c| c.retries,
    ),
    (
        "vpc_eni_cloud_api_rate_limited",
        "Calls held back by our own per-API rate limit.",
        |c| c.rate_limited,
    ),
];

impl Collector for CloudCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let (provider, stats) = match &*self.source.lock() {
            Some(source) => (source.provider.clone(), source.stats.clone()),
            None => return Ok(()),
        };
        let apis: Vec<(ApiLabels, ApiCounters)> = stats
            .snapshot()
            .into_iter()
            .map(|(api, counters)| {
                let labels = ApiLabels {
                    provider: provider.clone(),
                    api,
                };
                (labels, counters)
            })
            .collect();
        if apis.is_empty() {
            return Ok(());
        }
        for (name, help, value) in CLOUD_COUNTERS {
            let mut family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
            for (labels, counters) in &apis {
                family
                    .encode_family(labels)?
                    .encode_counter::<NoLabelSet, _, u64>(&value(counters), None)?;
            }
        }

        let errors: Vec<(ApiErrorLabels, u64)> = apis
            .iter()
            .flat_map(|(labels, counters)| {
                counters.errors_by_kind.iter().map(|(kind, n)| {
                    let labels = ApiErrorLabels {
                        api: labels.clone(),
                        kind,
                    };
                    (labels, *n)
                })
            })
            .collect();
        if !errors.is_empty() {
            let mut family = encoder.encode_descriptor(
                "vpc_eni_cloud_api_errors",
                "Failed cloud API attempts by error kind.",
                None,
                MetricType::Counter,
            )?;
            for (labels, n) in &errors {
                family
                    .encode_family(labels)?
                    .encode_counter::<NoLabelSet, _, u64>(n, None)?;
            }
        }

        let mut family = encoder.encode_descriptor(
            "vpc_eni_cloud_api_latency",
            "Cloud API attempt latency.",
            Some(&Unit::Seconds),
            MetricType::Histogram,
        )?;
        for (labels, counters) in &apis {
            // `ApiCounters` holds one count per bucket (the +Inf one last);
            // the encoder makes them cumulative.
            let buckets: Vec<(f64, u64)> = LATENCY_BUCKETS
                .iter()
                .copied()
                .chain([f64::INFINITY])
                .zip(counters.latency_buckets.iter().copied())
                .collect();
            let count = counters.latency_buckets.iter().sum();
            family
                .encode_family(labels)?
                .encode_histogram::<NoLabelSet>(
                    counters.latency_sum_seconds,
                    count,
                    &buckets,
                    None,
                )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use providers::call::{CallPolicy, Caller};
    use providers::{CloudError, ErrorKind};
    use std::collections::{BTreeMap, BTreeSet};

    fn has_line(text: &str, line: &str) -> bool {
        text.lines().any(|l| l == line)
    }

    #[track_caller]
    fn assert_lines(text: &str, lines: &[&str]) {
        for line in lines {
            assert!(has_line(text, line), "no line {line:?} in\n{text}");
        }
    }

    #[test]
    fn capacity_gauges_per_subnet_node_and_table() {
        let m = Metrics::new();
        m.set_subnet(
            "vsw-1",
            "cn-hangzhou-h",
            120,
            Some(Duration::from_secs(7200)),
        );
        m.set_subnet("vsw-2", "cn-hangzhou-i", 60, None);
        m.set_subnets_held(&BTreeMap::from([("vsw-1".into(), 4), ("vsw-2".into(), 0)]));
        m.set_node_enis("n1", 1, 2);
        m.set_node_enis("n2", 0, 7);
        m.set_route_table("vtb-1", 12, 200);
        let text = m.render();
        assert_lines(
            &text,
            &[
                "# TYPE vpc_eni_subnet_free_ips gauge",
                r#"vpc_eni_subnet_free_ips{subnet="vsw-1",zone="cn-hangzhou-h"} 120"#,
                r#"vpc_eni_subnet_free_ips{subnet="vsw-2",zone="cn-hangzhou-i"} 60"#,
                r#"vpc_eni_subnet_held_ips{subnet="vsw-1"} 4"#,
                r#"vpc_eni_subnet_held_ips{subnet="vsw-2"} 0"#,
                r#"vpc_eni_subnet_exhaustion_seconds{subnet="vsw-1"} 7200"#,
                r#"vpc_eni_node_enis{node="n1"} 1"#,
                r#"vpc_eni_node_enis_allowed{node="n1"} 2"#,
                r#"vpc_eni_node_enis_allowed{node="n2"} 7"#,
                r#"vpc_eni_route_table_entries{table="vtb-1"} 12"#,
                r#"vpc_eni_route_table_quota{table="vtb-1"} 200"#,
            ],
        );
        assert!(!text.contains(r#"vpc_eni_subnet_exhaustion_seconds{subnet="vsw-2"}"#));

        // A subnet that stops falling loses its forecast; a gone node its series.
        m.set_subnet("vsw-1", "cn-hangzhou-h", 120, None);
        m.retain_nodes(&["n2".to_owned()].into());
        m.set_subnets_held(&BTreeMap::from([("vsw-2".into(), 1)]));
        let text = m.render();
        assert!(
            !text.contains("vpc_eni_subnet_exhaustion_seconds{"),
            "{text}"
        );
        assert!(!text.contains(r#"node="n1""#), "{text}");
        assert!(
            !text.contains(r#"vpc_eni_subnet_held_ips{subnet="vsw-1"}"#),
            "{text}"
        );
        assert_lines(&text, &[r#"vpc_eni_node_enis{node="n2"} 0"#]);
    }

    #[test]
    fn reconcile_counts_cumulative_buckets_and_gauges() {
        let m = Metrics::new();
        m.reconciled("routes", true, Duration::from_millis(20));
        m.reconciled("routes", false, Duration::from_secs(60));
        m.set_leader(true);
        m.set_routes_owned(3);
        m.set_nodes_without_route(1);
        m.set_eni_gc(5, 2);
        let text = m.render();
        assert_lines(
            &text,
            &[
                "# TYPE vpc_eni_reconcile counter",
                "vpc_eni_reconcile_total{reconciler=\"routes\",result=\"success\"} 1",
                "vpc_eni_reconcile_total{reconciler=\"routes\",result=\"error\"} 1",
                "# TYPE vpc_eni_reconcile_duration_seconds histogram",
                "# UNIT vpc_eni_reconcile_duration_seconds seconds",
                "vpc_eni_reconcile_duration_seconds_bucket{le=\"0.01\",reconciler=\"routes\"} 0",
                "vpc_eni_reconcile_duration_seconds_bucket{le=\"0.05\",reconciler=\"routes\"} 1",
                "vpc_eni_reconcile_duration_seconds_bucket{le=\"30.0\",reconciler=\"routes\"} 1",
                "vpc_eni_reconcile_duration_seconds_bucket{le=\"+Inf\",reconciler=\"routes\"} 2",
                "vpc_eni_reconcile_duration_seconds_count{reconciler=\"routes\"} 2",
                "vpc_eni_reconcile_duration_seconds_sum{reconciler=\"routes\"} 60.02",
                "vpc_eni_leader 1",
                "vpc_eni_routes_owned 3",
                "vpc_eni_nodes_without_route 1",
                "vpc_eni_eni_owned 5",
                "vpc_eni_eni_orphans 2",
            ],
        );
        assert_eq!(text.lines().last(), Some("# EOF"));
        assert_eq!(
            (m.reconciles("routes", true), m.reconciles("routes", false)),
            (1, 1)
        );
        assert_eq!(m.reconciles("eni_pod", true), 0);
        assert!(m.is_leader());
        assert_eq!(m.routes_owned(), Some(3));
        assert_eq!(m.nodes_without_route(), Some(1));
        assert_eq!((m.eni_owned(), m.eni_orphans()), (Some(5), Some(2)));

        m.set_leader(false);
        m.set_eni_gc(4, 0);
        let text = m.render();
        assert_lines(
            &text,
            &[
                "vpc_eni_leader 0",
                "vpc_eni_eni_owned 4",
                "vpc_eni_eni_orphans 0",
            ],
        );
        assert!(!m.is_leader());
    }

    #[test]
    fn a_fresh_controller_exports_leader_0_and_no_pass_results() {
        let m = Metrics::new();
        let text = m.render();
        assert_eq!(text, "# HELP vpc_eni_leader 1 while this replica holds the lease.\n# TYPE vpc_eni_leader gauge\nvpc_eni_leader 0\n# EOF\n");
        assert_eq!(m.routes_owned(), None);
        assert_eq!((m.eni_owned(), m.eni_orphans()), (None, None));
    }

    #[test]
    fn pod_errors_are_counted_by_reason_and_kind() {
        let m = Metrics::new();
        m.eni_pod_error("AllocIPFailed", "cloud_subnet_exhausted");
        m.eni_pod_error("AllocIPFailed", "cloud_subnet_exhausted");
        m.eni_pod_error("ReleaseENIFailed", "not_ours");
        assert_eq!(
            m.eni_pod_errors("AllocIPFailed", "cloud_subnet_exhausted"),
            2
        );
        assert_eq!(m.eni_pod_errors("AllocIPFailed", "cloud_throttled"), 0);
        let text = m.render();
        assert!(text.contains(
            "vpc_eni_eni_pod_errors_total{reason=\"AllocIPFailed\",kind=\"cloud_subnet_exhausted\"} 2"
        ));
        assert!(text.contains(
            "vpc_eni_eni_pod_errors_total{reason=\"ReleaseENIFailed\",kind=\"not_ours\"} 1"
        ));
    }

    /// An `ApiStats` with known counts, made the way the providers' own tests
    /// make theirs: through `Caller::call` on paused time.
    async fn known_stats() -> Arc<ApiStats> {
        let caller = Caller::new(CallPolicy::default());
        // Throttled twice, then answered: 3 attempts of 30 ms each.
        let created = caller
            .call("CreateNetworkInterface", None, |a| async move {
                tokio::time::sleep(Duration::from_millis(30)).await;
                if a.number < 3 {
                    Err(CloudError::new(
                        ErrorKind::Throttled,
                        "CreateNetworkInterface",
                        "Throttling",
                        "slow down",
                    ))
                } else {
                    Ok(())
                }
            })
            .await;
        assert_eq!(created, Ok(()));
        // Not found, not retried: 1 attempt of 2 s.
        let described = caller
            .call("DescribeNetworkInterfaces", None, |_| async {
                tokio::time::sleep(Duration::from_secs(2)).await;
                Err::<(), _>(CloudError::new(
                    ErrorKind::NotFound,
                    "DescribeNetworkInterfaces",
                    "InvalidEniId.NotFound",
                    "gone",
                ))
            })
            .await;
        assert_eq!(described.map_err(|e| e.kind), Err(ErrorKind::NotFound));
        caller.stats()
    }

    #[tokio::test(start_paused = true)]
    async fn cloud_collector_exposes_calls_errors_and_latency_from_api_stats() {
        let m = Metrics::new();
        m.set_cloud("alibaba", known_stats().await);
        let text = m.render();
        let create = "provider=\"alibaba\",api=\"CreateNetworkInterface\"";
        let describe = "provider=\"alibaba\",api=\"DescribeNetworkInterfaces\"";
        assert_lines(
            &text,
            &[
                "# TYPE vpc_eni_cloud_api_calls counter",
                &format!("vpc_eni_cloud_api_calls_total{{{create}}} 3"),
                &format!("vpc_eni_cloud_api_calls_total{{{describe}}} 1"),
                &format!("vpc_eni_cloud_api_throttles_total{{{create}}} 2"),
                &format!("vpc_eni_cloud_api_throttles_total{{{describe}}} 0"),
                &format!("vpc_eni_cloud_api_retries_total{{{create}}} 2"),
                &format!("vpc_eni_cloud_api_retries_total{{{describe}}} 0"),
                &format!("vpc_eni_cloud_api_rate_limited_total{{{create}}} 0"),
                "# TYPE vpc_eni_cloud_api_errors counter",
                &format!("vpc_eni_cloud_api_errors_total{{{create},kind=\"throttled\"}} 2"),
                &format!("vpc_eni_cloud_api_errors_total{{{describe},kind=\"not_found\"}} 1"),
                "# TYPE vpc_eni_cloud_api_latency_seconds histogram",
                &format!("vpc_eni_cloud_api_latency_seconds_bucket{{le=\"0.025\",{create}}} 0"),
                &format!("vpc_eni_cloud_api_latency_seconds_bucket{{le=\"0.05\",{create}}} 3"),
                &format!("vpc_eni_cloud_api_latency_seconds_bucket{{le=\"30.0\",{create}}} 3"),
                &format!("vpc_eni_cloud_api_latency_seconds_bucket{{le=\"+Inf\",{create}}} 3"),
                &format!("vpc_eni_cloud_api_latency_seconds_count{{{create}}} 3"),
                &format!("vpc_eni_cloud_api_latency_seconds_sum{{{create}}} 0.09"),
                &format!("vpc_eni_cloud_api_latency_seconds_bucket{{le=\"1.0\",{describe}}} 0"),
                &format!("vpc_eni_cloud_api_latency_seconds_bucket{{le=\"2.5\",{describe}}} 1"),
                &format!("vpc_eni_cloud_api_latency_seconds_bucket{{le=\"+Inf\",{describe}}} 1"),
                &format!("vpc_eni_cloud_api_latency_seconds_count{{{describe}}} 1"),
                &format!("vpc_eni_cloud_api_latency_seconds_sum{{{describe}}} 2.0"),
            ],
        );
        // No kind that did not happen gets a series.
        assert!(!text.contains("kind=\"conflict\""), "{text}");
    }

    #[tokio::test(start_paused = true)]
    async fn cloud_families_are_absent_until_a_call_is_made() {
        let m = Metrics::new();
        m.set_cloud("aws", Arc::new(ApiStats::default()));
        assert!(!m.render().contains("cloud_api"));
    }

    /// One parsed sample: its name and label keys (`le` left out).
    fn sample(line: &str) -> (String, BTreeSet<String>) {
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("no value: {line:?}"));
        assert!(
            value.parse::<f64>().is_ok() || value == "+Inf",
            "bad value in {line:?}"
        );
        let Some((name, labels)) = series.split_once('{') else {
            return (series.to_owned(), BTreeSet::new());
        };
        let labels = labels
            .strip_suffix('}')
            .unwrap_or_else(|| panic!("unclosed labels: {line:?}"));
        let mut keys = BTreeSet::new();
        let mut rest = labels;
        while !rest.is_empty() {
            let (key, after) = rest
                .split_once("=\"")
                .unwrap_or_else(|| panic!("bad label in {line:?}"));
            let end = after
                .find('"')
                .unwrap_or_else(|| panic!("unquoted label value in {line:?}"));
            assert!(
                keys.insert(key.to_owned()) || key == "le",
                "label {key} twice in {line:?}"
            );
            rest = after[end + 1..]
                .strip_prefix(',')
                .unwrap_or(&after[end + 1..]);
        }
        keys.remove("le");
        (name.to_owned(), keys)
    }

    #[tokio::test(start_paused = true)]
    async fn every_family_is_declared_once_with_its_samples_and_the_documented_labels() {
        let m = Metrics::new();
        m.set_cloud("aws", known_stats().await);
        m.reconciled("routes", true, Duration::from_millis(20));
        m.reconciled("eni_pod", false, Duration::from_secs(2));
        m.set_leader(true);
        m.set_routes_owned(3);
        m.set_nodes_without_route(0);
        m.set_eni_gc(5, 1);
        m.set_bgp_peer("192.0.2.1:179", "Established", 3);
        m.add_bgp_peer_counts("192.0.2.1:179", 1, 4, 120);
        let text = m.render();
        assert_eq!(m.bgp_peer_state("192.0.2.1:179", "Established"), Some(1));
        assert_eq!(m.bgp_peer_state("192.0.2.1:179", "Active"), Some(0));
        let snap = m.bgp_peer("192.0.2.1:179").unwrap();
        assert_eq!(
            (snap.state, snap.announced, snap.flaps, snap.updates_sent),
            ("Established", 3, 1, 4)
        );
        assert!(m.bgp_peer("192.0.2.9:179").is_none());

        let api = ["provider", "api"].as_slice();
        // family, type, label keys: the table in README.md's "Metrics".
        let expected: BTreeMap<&str, (&str, &[&str])> = [
            ("vpc_eni_cloud_api_calls", ("counter", api)),
            ("vpc_eni_cloud_api_throttles", ("counter", api)),
            ("vpc_eni_cloud_api_retries", ("counter", api)),
            ("vpc_eni_cloud_api_rate_limited", ("counter", api)),
            (
                "vpc_eni_cloud_api_errors",
                ("counter", &["provider", "api", "kind"]),
            ),
            ("vpc_eni_cloud_api_latency_seconds", ("histogram", api)),
            ("vpc_eni_reconcile", ("counter", &["reconciler", "result"])),
            (
                "vpc_eni_reconcile_duration_seconds",
                ("histogram", &["reconciler"]),
            ),
            ("vpc_eni_leader", ("gauge", &[])),
            ("vpc_eni_routes_owned", ("gauge", &[])),
            ("vpc_eni_nodes_without_route", ("gauge", &[])),
            ("vpc_eni_eni_owned", ("gauge", &[])),
            ("vpc_eni_eni_orphans", ("gauge", &[])),
            ("vpc_eni_bgp_peer_state", ("gauge", &["peer", "state"])),
            ("vpc_eni_bgp_peer_prefixes_announced", ("gauge", &["peer"])),
            ("vpc_eni_bgp_peer_flaps", ("counter", &["peer"])),
            ("vpc_eni_bgp_peer_updates_sent", ("counter", &["peer"])),
            ("vpc_eni_bgp_peer_update_sent_bytes", ("counter", &["peer"])),
        ]
        .into_iter()
        .collect();

        let mut lines = text.lines().peekable();
        let mut declared: BTreeMap<String, String> = BTreeMap::new();
        let mut current: Option<(String, String)> = None;
        let mut samples: BTreeMap<String, usize> = BTreeMap::new();
        while let Some(line) = lines.next() {
            if line == "# EOF" {
                assert!(lines.peek().is_none(), "text after # EOF");
                break;
            }
            if let Some(help) = line.strip_prefix("# HELP ") {
                let name = help.split(' ').next().unwrap_or_default();
                let ty = lines
                    .next()
                    .and_then(|l| l.strip_prefix(&format!("# TYPE {name} ")));
                let ty = ty.unwrap_or_else(|| panic!("# HELP {name} without its # TYPE next"));
                assert!(
                    declared.insert(name.to_owned(), ty.to_owned()).is_none(),
                    "family {name} declared twice in\n{text}"
                );
                current = Some((name.to_owned(), ty.to_owned()));
                continue;
            }
            if let Some(unit) = line.strip_prefix("# UNIT ") {
                let family = current.as_ref().map(|(name, _)| name.as_str());
                assert_eq!(unit.split(' ').next(), family, "{line} out of place");
                continue;
            }
            assert!(!line.starts_with('#'), "{line:?} out of place");
            let (name, keys) = sample(line);
            let (family, ty) = current
                .as_ref()
                .unwrap_or_else(|| panic!("sample before any family: {line}"));
            let suffixes: &[&str] = match ty.as_str() {
                "counter" => &["_total"],
                "histogram" => &["_bucket", "_sum", "_count"],
                _ => &[""],
            };
            assert!(
                suffixes.iter().any(|s| name == format!("{family}{s}")),
                "sample {name} is not of the family {family} ({ty}) it follows"
            );
            let want = expected
                .get(family.as_str())
                .map(|(_, keys)| *keys)
                .unwrap_or_default();
            let want: BTreeSet<String> = want.iter().map(|k| k.to_string()).collect();
            assert_eq!(keys, want, "labels of {line}");
            *samples.entry(family.clone()).or_default() += 1;
        }
        assert_eq!(text.lines().last(), Some("# EOF"));
        let declared: BTreeMap<&str, &str> = declared
            .iter()
            .map(|(n, t)| (n.as_str(), t.as_str()))
            .collect();
        let expected_types: BTreeMap<&str, &str> =
            expected.iter().map(|(n, (t, _))| (*n, *t)).collect();
        assert_eq!(declared, expected_types);
        for family in expected.keys() {
            assert!(
                samples.get(*family).copied().unwrap_or(0) > 0,
                "{family} has no samples"
            );
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BgpPeerLabel {
    peer: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BgpStateLabels {
    peer: String,
    state: String,
}

/// Per BGP peer (`routes.backend: bgp`): session state, prefixes held,
/// flaps, UPDATE messages and bytes sent.
struct BgpPeerMetrics {
    state: Family<BgpStateLabels, Gauge>,
    prefixes: Family<BgpPeerLabel, Gauge>,
    flaps: Family<BgpPeerLabel, Counter>,
    updates: Family<BgpPeerLabel, Counter>,
    update_bytes: Family<BgpPeerLabel, Counter>,
}

/// The RFC 4271 states a peer's session can be in.
const BGP_STATES: [&str; 6] = [
    "Idle",
    "Connect",
    "Active",
    "OpenSent",
    "OpenConfirm",
    "Established",
];

impl BgpPeerMetrics {
    fn register(registry: &mut Registry) -> Self {
        let m = Self {
            state: Family::default(),
            prefixes: Family::default(),
            flaps: Family::default(),
            updates: Family::default(),
            update_bytes: Family::default(),
        };
        registry.register(
            "vpc_eni_bgp_peer_state",
            "1 for the BGP session state a peer is in (RFC 4271 states), 0 for the others",
            m.state.clone(),
        );
        registry.register(
            "vpc_eni_bgp_peer_prefixes_announced",
            "podCIDRs a BGP peer holds from this controller on its current session",
            m.prefixes.clone(),
        );
        registry.register(
            "vpc_eni_bgp_peer_flaps",
            "Established BGP sessions to a peer that went down",
            m.flaps.clone(),
        );
        registry.register(
            "vpc_eni_bgp_peer_updates_sent",
            "BGP UPDATE messages sent to a peer",
            m.updates.clone(),
        );
        registry.register_with_unit(
            "vpc_eni_bgp_peer_update_sent",
            "Bytes of BGP UPDATE messages sent to a peer",
            Unit::Bytes,
            m.update_bytes.clone(),
        );
        m
    }

    fn set(&self, peer: &str, state: &str, prefixes: usize) {
        for s in BGP_STATES {
            self.state
                .get_or_create(&BgpStateLabels {
                    peer: peer.to_owned(),
                    state: s.to_owned(),
                })
                .set(i64::from(s == state));
        }
        self.prefixes
            .get_or_create(&BgpPeerLabel {
                peer: peer.to_owned(),
            })
            .set(i64::try_from(prefixes).unwrap_or(i64::MAX));
    }

    fn add(&self, peer: &str, flaps: u64, updates: u64, bytes: u64) {
        let label = BgpPeerLabel {
            peer: peer.to_owned(),
        };
        self.flaps.get_or_create(&label).inc_by(flaps);
        self.updates.get_or_create(&label).inc_by(updates);
        self.update_bytes.get_or_create(&label).inc_by(bytes);
    }

    fn snapshot(&self, peer: &str) -> Option<BgpPeerSnapshot> {
        let label = BgpPeerLabel {
            peer: peer.to_owned(),
        };
        let state = BGP_STATES.into_iter().find(|s| {
            self.state
                .get(&BgpStateLabels {
                    peer: peer.to_owned(),
                    state: (*s).to_owned(),
                })
                .is_some_and(|g| g.get() == 1)
        })?;
        let count = |f: &Family<BgpPeerLabel, Counter>| f.get(&label).map_or(0, |c| c.get());
        Some(BgpPeerSnapshot {
            state,
            announced: self
                .prefixes
                .get(&label)
                .map_or(0, |g| u64::try_from(g.get()).unwrap_or(0)),
            flaps: count(&self.flaps),
            updates_sent: count(&self.updates),
            update_bytes_sent: count(&self.update_bytes),
        })
    }
}

/// One BGP peer's series as this replica last set them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BgpPeerSnapshot {
    pub state: &'static str,
    pub announced: u64,
    pub flaps: u64,
    pub updates_sent: u64,
    pub update_bytes_sent: u64,
}
