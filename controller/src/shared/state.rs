//! The books of every node in shared mode: its instance and limits, the
//! `ipam::ledger::Ledger` of its pool, what an allocation record needs of
//! each shared ENI (MAC, subnet, gateway), the pods waiting for an IP, and
//! the pool's timers (release delay, warm-up). In memory only: the upkeep
//! rebuilds it from the cloud and the pods' annotations after a restart.

use ipam::allocation::{EniAllocation, PodAllocation};
use ipam::ids::{EniId, InstanceId, SubnetId, ZoneId};
use ipam::ledger::Ledger;
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::reflector::ObjectRef;
use parking_lot::Mutex;
use std::collections::{BTreeMap, HashMap};
use std::net::Ipv4Addr;
use tokio::time::Instant;

/// What the annotation needs of one shared ENI.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EniMeta {
    pub mac: String,
    pub subnet_id: SubnetId,
    pub subnet_cidr: String,
    pub gateway: String,
}

/// One node's pool.
#[derive(Debug)]
pub struct NodeState {
    pub instance: InstanceId,
    pub zone: ZoneId,
    /// ENIs the instance type allows, primary included.
    pub max_enis: u32,
    /// Secondary IPs one ENI holds (IPv4 per ENI less the primary).
    pub ips_per_eni: u32,
    /// ENIs attached to the instance that are not shared ENIs of ours
    /// (primary, exclusive, foreign), as last listed.
    pub other_enis: u32,
    pub ledger: Ledger,
    pub enis: BTreeMap<EniId, EniMeta>,
    /// The first listing of shared ENIs after this node appeared is in.
    pub synced: bool,
    /// The pods' annotations on this node were claimed into the ledger.
    pub claimed: bool,
    /// Pods bound here that wait for an IP: uid -> pod.
    pub waiting: HashMap<String, ObjectRef<Pod>>,
    /// Since when the plan has wanted to shrink without a break.
    pub shrink_since: Option<Instant>,
    /// The warm-up size was reached once.
    pub warmed: bool,
    /// Why the pool cannot grow (no ENI slot, subnet exhausted...), for
    /// the waiting pods' Events; `None` while it can.
    pub starved: Option<String>,
    /// A cloud action for this node is running.
    pub busy: bool,
    /// Shared ENIs of this node the last listing showed on their way in
    /// (created, attaching): they hold a slot though not in the books yet.
    pub pending: u32,
    /// ENIs in the books the last listing did not show (dropped when the
    /// next one does not show them either: listings lag behind changes).
    pub missing: std::collections::BTreeSet<EniId>,
}

impl NodeState {
    pub fn new(instance: InstanceId, zone: ZoneId, max_enis: u32, ipv4_per_eni: u32) -> Self {
        Self {
            instance,
            zone,
            max_enis,
            ips_per_eni: ipv4_per_eni.saturating_sub(1),
            other_enis: 1,
            ledger: Ledger::new(),
            enis: BTreeMap::new(),
            synced: false,
            claimed: false,
            waiting: HashMap::new(),
            shrink_since: None,
            warmed: false,
            starved: None,
            busy: false,
            missing: Default::default(),
            pending: 0,
        }
    }

    /// Shared ENIs the node may still attach: within `max_shared` and the
    /// instance's free slots.
    pub fn attachable(&self, max_shared: u32) -> u32 {
        let shared = u32::try_from(self.enis.len())
            .unwrap_or(u32::MAX)
            .saturating_add(self.pending);
        ipam::pool::attachable_enis(max_shared, shared, self.max_enis, self.other_enis)
    }

    /// The allocation record of `ip` on `eni` for the pod `uid` on `node`.
    pub fn allocation(
        &self,
        node: &str,
        uid: &str,
        eni: &EniId,
        ip: Ipv4Addr,
    ) -> Option<PodAllocation> {
        let meta = self.enis.get(eni)?;
        Some(PodAllocation::shared(
            EniAllocation {
                eni_id: eni.to_string(),
                mac: meta.mac.clone(),
                ip: ip.to_string(),
                subnet_id: meta.subnet_id.to_string(),
                subnet_cidr: meta.subnet_cidr.clone(),
                gateway: meta.gateway.clone(),
                node: node.to_owned(),
            },
            uid,
        ))
    }
}

/// Every node's pool, by node name.
#[derive(Default)]
pub struct Pools {
    pub nodes: Mutex<HashMap<String, NodeState>>,
    /// When a waiting pod was first seen bound (for the allocation time).
    pub first_seen: Mutex<HashMap<String, Instant>>,
}
