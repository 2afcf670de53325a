//! Shared mode's metrics, registered once on the controller's registry: per
//! node and per subnet the pool's IPs by state (free, used, cooling) and
//! shared ENIs, IPs assigned and unassigned, and the time from a pod first
//! seen bound to its IP recorded.

use parking_lot::Mutex;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

const ALLOCATION_BUCKETS: [f64; 12] = [
    0.001, 0.005, 0.01, 0.02, 0.05, 0.1, 0.5, 1.0, 5.0, 15.0, 30.0, 60.0,
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NodeState {
    node: String,
    state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SubnetState {
    subnet: String,
    state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Node {
    node: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Op {
    op: &'static str,
}

/// IP counts of one pool (a node's, or a subnet's over all nodes).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IpCounts {
    pub free: u32,
    pub used: u32,
    pub cooling: u32,
}

impl IpCounts {
    pub fn total(&self) -> u32 {
        self.free + self.used + self.cooling
    }

    fn each(&self) -> [(&'static str, u32); 4] {
        [
            ("free", self.free),
            ("used", self.used),
            ("cooling", self.cooling),
            ("total", self.total()),
        ]
    }
}

pub struct SharedMetrics {
    node_ips: Family<NodeState, Gauge>,
    subnet_ips: Family<SubnetState, Gauge>,
    node_enis: Family<Node, Gauge>,
    ip_changes: Family<Op, Counter>,
    allocation: Family<Node, Histogram, fn() -> Histogram>,
    exported: Mutex<(BTreeSet<String>, BTreeSet<String>)>,
}

impl SharedMetrics {
    pub fn register(registry: &mut Registry) -> Arc<Self> {
        let m = Self {
            node_ips: Family::default(),
            subnet_ips: Family::default(),
            node_enis: Family::default(),
            ip_changes: Family::default(),
            allocation: Family::new_with_constructor(|| Histogram::new(ALLOCATION_BUCKETS)),
            exported: Mutex::default(),
        };
        registry.register(
            "vpc_eni_shared_pool_ips",
            "Secondary IPs of a node's shared-ENI pool by state (free, used, cooling, total)",
            m.node_ips.clone(),
        );
        registry.register(
            "vpc_eni_shared_subnet_ips",
            "Secondary IPs of shared ENIs in a subnet, over all nodes, by state",
            m.subnet_ips.clone(),
        );
        registry.register(
            "vpc_eni_shared_enis",
            "Shared ENIs attached to a node",
            m.node_enis.clone(),
        );
        registry.register(
            "vpc_eni_shared_ip_changes",
            "Secondary IPs assigned to or unassigned from shared ENIs",
            m.ip_changes.clone(),
        );
        registry.register_with_unit(
            "vpc_eni_shared_allocation",
            "Time from a pod first seen bound to its shared IP recorded",
            Unit::Seconds,
            m.allocation.clone(),
        );
        Arc::new(m)
    }

    pub fn allocated(&self, node: &str, took: Duration) {
        self.allocation
            .get_or_create(&Node { node: node.into() })
            .observe(took.as_secs_f64());
    }

    pub fn assigned(&self, ips: usize) {
        self.ip_changes
            .get_or_create(&Op { op: "assign" })
            .inc_by(ips as u64);
    }

    pub fn unassigned(&self, ips: usize) {
        self.ip_changes
            .get_or_create(&Op { op: "unassign" })
            .inc_by(ips as u64);
    }

    /// Set every node's and subnet's figures; series of nodes and subnets
    /// not given any more are removed.
    pub fn set_pools(
        &self,
        nodes: &BTreeMap<String, (IpCounts, u32)>,
        subnets: &BTreeMap<String, IpCounts>,
    ) {
        for (node, (c, enis)) in nodes {
            for (state, v) in c.each() {
                self.node_ips
                    .get_or_create(&NodeState {
                        node: node.clone(),
                        state,
                    })
                    .set(v.into());
            }
            self.node_enis
                .get_or_create(&Node { node: node.clone() })
                .set((*enis).into());
        }
        for (subnet, c) in subnets {
            for (state, v) in c.each() {
                self.subnet_ips
                    .get_or_create(&SubnetState {
                        subnet: subnet.clone(),
                        state,
                    })
                    .set(v.into());
            }
        }
        let mut exported = self.exported.lock();
        for gone in exported.0.iter().filter(|n| !nodes.contains_key(*n)) {
            for (state, _) in IpCounts::default().each() {
                self.node_ips.remove(&NodeState {
                    node: gone.clone(),
                    state,
                });
            }
            self.node_enis.remove(&Node { node: gone.clone() });
            self.allocation.remove(&Node { node: gone.clone() });
        }
        for gone in exported.1.iter().filter(|s| !subnets.contains_key(*s)) {
            for (state, _) in IpCounts::default().each() {
                self.subnet_ips.remove(&SubnetState {
                    subnet: gone.clone(),
                    state,
                });
            }
        }
        *exported = (
            nodes.keys().cloned().collect(),
            subnets.keys().cloned().collect(),
        );
    }
}
