//! The invariants of a chaos run and how they are checked: someone else's
//! objects as seeded ([`Foreign`]), the Lease's holdings as observed
//! ([`LeaseHistory`]), the safety checks run every second and the liveness
//! checks run once it is quiet.

use super::{instance_for, Chaos, CLUSTER_ID, TABLE};
use ipam::allocation::{PodAllocation, RELEASE_FINALIZER};
use ipam::ids::{ClusterId, EniId, InstanceId, RouteTableId};
use k8s_openapi::api::core::v1::{Event, Node, Pod};
use kube::api::{Api, ListParams};
use kube::ResourceExt;
use providers::model::{Eni, EniStatus, RouteEntry};
use std::collections::{BTreeSet, HashMap, HashSet};
use std::net::Ipv4Addr;
use std::time::SystemTime;

/// How far (ns) a write's arrival may lie outside its sender's holding of
/// the Lease: the holding starts at the `acquireTime` the process wrote
/// itself and ends at the next holder's, both read off the same host clock
/// as the arrival; this only absorbs clock reading order.
const CLOCK_SLACK_NS: i128 = 50_000_000;

/// Nanoseconds since the epoch.
pub(super) fn nanos(t: SystemTime) -> i128 {
    match t.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(d) => i128::try_from(d.as_nanos()).unwrap_or(i128::MAX),
        Err(e) => -i128::try_from(e.duration().as_nanos()).unwrap_or(i128::MAX),
    }
}

/// Someone else's objects, as seeded: they must stay exactly so.
pub(super) struct Foreign {
    pub(super) routes: Vec<RouteEntry>,
    pub(super) enis: Vec<Eni>,
}

/// The Lease's holdings as observed: each holder from the `acquireTime` it
/// wrote when it took the Lease, to the next holder's. A holder is seen for
/// at least a lease duration (no one may take the Lease sooner), so polling
/// every 50 ms misses none.
#[derive(Default)]
pub(super) struct LeaseHistory {
    /// (acquireTime in ns, holder), in order, each once.
    holdings: BTreeSet<(i128, String)>,
    /// The holder last seen (None: nobody, or no Lease yet).
    current: Option<String>,
    /// When (ns) the latest answered read of the Lease was asked: every
    /// holding that began before then is known.
    known_up_to: i128,
}

impl LeaseHistory {
    /// One read of the Lease, asked at `asked_ns`.
    pub(super) fn observe(
        &mut self,
        holder: Option<String>,
        acquired_ns: Option<i128>,
        asked_ns: i128,
    ) {
        if let (Some(h), Some(at)) = (&holder, acquired_ns) {
            self.holdings.insert((at, h.clone()));
        }
        self.current = holder;
        self.known_up_to = self.known_up_to.max(asked_ns);
    }

    /// Whether every holding that began before `at` (ns) is known.
    pub(super) fn knows(&self, at: i128) -> bool {
        at < self.known_up_to
    }

    pub(super) fn holder(&self) -> Option<String> {
        self.current.clone()
    }

    /// Distinct holders seen.
    pub(super) fn holders(&self) -> usize {
        self.holdings
            .iter()
            .map(|(_, h)| h.as_str())
            .collect::<HashSet<_>>()
            .len()
    }

    /// Who held the Lease at `at` (ns).
    pub(super) fn holder_at(&self, at: i128) -> Option<&str> {
        self.holdings
            .iter()
            .rev()
            .find(|(t, _)| *t <= at)
            .map(|(_, h)| h.as_str())
    }

    /// Whether `who` held the Lease at `at` (ns): inside one of its holdings.
    pub(super) fn held(&self, who: &str, at: i128) -> bool {
        let list: Vec<&(i128, String)> = self.holdings.iter().collect();
        list.iter().enumerate().any(|(i, (start, h))| {
            let end = list.get(i + 1).map_or(i128::MAX, |(t, _)| *t);
            h == who && *start - CLOCK_SLACK_NS <= at && at <= end.saturating_add(CLOCK_SLACK_NS)
        })
    }
}

impl Chaos<'_> {
    /// The invariants that must hold at every moment.
    pub(super) async fn check_safety(&mut self) {
        self.report.checks += 1;
        self.check_foreign();
        self.check_writers();
        if let Err(e) = self.check_addresses().await {
            tracing::debug!(error = %e, "chaos: address check skipped this round");
        }
    }

    fn check_foreign(&mut self) {
        let Some(foreign) = &self.foreign else {
            return;
        };
        let world = self.sim.world().clone();
        let mut broken = Vec::new();
        let entries = world.route_entries(&RouteTableId::new(TABLE));
        for r in &foreign.routes {
            match entries.iter().find(|e| e.destination == r.destination) {
                Some(e) if e.next_hop == r.next_hop && e.name == r.name => {}
                other => broken.push((
                    "foreign-untouched",
                    format!("foreign route {} is now {other:?}", r.destination),
                )),
            }
        }
        let enis = world.enis();
        for f in &foreign.enis {
            match enis.iter().find(|e| e.id == f.id) {
                Some(e)
                    if e.instance_id == f.instance_id
                        && e.status == f.status
                        && e.tags == f.tags
                        && e.primary_ip == f.primary_ip
                        && e.secondary_ips == f.secondary_ips => {}
                Some(e) => broken.push((
                    "foreign-untouched",
                    format!(
                        "foreign ENI {} changed: was {:?} on {:?} with {:?}, now {:?} on {:?} with {:?}",
                        f.id, f.status, f.instance_id, f.secondary_ips, e.status, e.instance_id, e.secondary_ips
                    ),
                )),
                None => broken.push((
                    "foreign-untouched",
                    format!("foreign ENI {} was deleted", f.id),
                )),
            }
        }
        for (invariant, detail) in broken {
            self.violation(invariant, detail);
        }
    }

    /// Every mutating request since the last check came from the process
    /// holding the Lease at the time.
    fn check_writers(&mut self) {
        let writes = self
            .sim
            .harness
            .cloud
            .front
            .writes()
            .since(self.writes_seen);
        let mut broken = Vec::new();
        {
            let lease = self.lease.lock();
            for w in &writes {
                let at = nanos(w.wall);
                // Judged once a read of the Lease asked after it came back:
                // the holding of a leader that just took over is known then.
                if !lease.knows(at) {
                    break;
                }
                self.writes_seen += 1;
                self.report.writes_checked += 1;
                if !w.access_key_id.starts_with("chaos-controller-") {
                    continue;
                }
                if !lease.held(&w.access_key_id, at) {
                    broken.push(format!(
                        "{} called {} while {:?} held the Lease",
                        w.access_key_id,
                        w.action,
                        lease.holder_at(at)
                    ));
                }
            }
        }
        for detail in broken {
            self.violation("one-leader-writes", detail);
        }
    }

    /// No IP on two pods, no address on two ENIs.
    async fn check_addresses(&mut self) -> anyhow::Result<()> {
        let pods: Api<Pod> = Api::all(self.sim.client().clone());
        let list = pods.list(&ListParams::default()).await?.items;
        let enis = self.sim.world().enis();
        let mut by_ip: HashMap<String, String> = HashMap::new();
        let mut broken = Vec::new();
        for p in &list {
            let Some(alloc) = PodAllocation::from_annotations(p.annotations()) else {
                continue;
            };
            let terminating = p.metadata.deletion_timestamp.is_some();
            for e in alloc.all() {
                // A terminating pod whose ENI was released holds no
                // address any more; its annotation stays until it is gone.
                if terminating && !enis.iter().any(|x| x.id.as_str() == e.eni_id) {
                    continue;
                }
                if let Some(other) = by_ip.insert(e.ip.clone(), p.name_any()) {
                    broken.push(format!("{} is on pods {other} and {}", e.ip, p.name_any()));
                }
            }
        }
        let mut seen: HashMap<Ipv4Addr, EniId> = HashMap::new();
        for e in &enis {
            for ip in std::iter::once(e.primary_ip).chain(e.secondary_ips.iter().copied()) {
                if let Some(other) = seen.insert(ip, e.id.clone()) {
                    broken.push(format!("{ip} is on ENIs {other} and {}", e.id));
                }
            }
        }
        for detail in broken {
            self.violation("one-ip-one-owner", detail);
        }
        Ok(())
    }

    /// What must hold once things are quiet: (invariant, detail) of each
    /// failure, empty when all hold.
    pub(super) async fn liveness(&mut self) -> anyhow::Result<Vec<(String, String)>> {
        let mut out = Vec::new();
        let (mut running, mut pending, mut shared) = (0u32, 0u32, 0u32);
        let client = self.sim.client().clone();
        let world = self.sim.world();
        let cluster = ClusterId::new(CLUSTER_ID);
        let pods = Api::<Pod>::all(client.clone())
            .list(&ListParams::default())
            .await?
            .items;
        let live: HashSet<String> = pods.iter().filter_map(|p| p.uid()).collect();
        let enis = world.enis();
        let nodes = Api::<Node>::all(client.clone())
            .list(&ListParams::default())
            .await?
            .items;
        let node_names: HashSet<String> = nodes.iter().map(|n| n.name_any()).collect();
        for e in enis
            .iter()
            .filter(|e| ipam::eni::is_owned(&e.tags, &cluster))
        {
            if ipam::eni::is_shared(&e.tags) {
                // A shared ENI is the pool's while its node lives.
                let node = ipam::eni::node_of(&e.tags);
                if !node.is_some_and(|n| node_names.contains(n)) {
                    out.push((
                        "no-eni-without-pod".into(),
                        format!(
                            "shared ENI {} ({:?}) of node {node:?}, which is gone",
                            e.id, e.status
                        ),
                    ));
                }
                continue;
            }
            let uid = ipam::eni::pod_uid_of(&e.tags);
            if !uid.is_some_and(|u| live.contains(u)) {
                out.push((
                    "no-eni-without-pod".into(),
                    format!(
                        "ENI {} ({:?}) of pod uid {uid:?} has no live pod",
                        e.id, e.status
                    ),
                ));
            }
        }
        let (routed, total, ok) = self.sim.convergence().await?;
        self.report.nodes_routed = u32::try_from(routed).unwrap_or(u32::MAX);
        if !ok {
            out.push((
                "every-node-routed".into(),
                format!("{routed} of {total} nodes routed with their condition right, or a route of ours is left for a node that is gone"),
            ));
        }
        let events = Api::<Event>::all(client.clone())
            .list(&ListParams::default())
            .await?
            .items;
        let resource = self.sim.scenario.eni_resource_name();
        for p in &pods {
            let asks = p.spec.as_ref().is_some_and(|s| {
                s.containers.iter().any(|c| {
                    c.resources
                        .as_ref()
                        .and_then(|r| r.limits.as_ref())
                        .is_some_and(|l| l.contains_key(&resource))
                })
            });
            if !asks {
                match self.shared_pod(p, &nodes, &enis) {
                    Some(Ok(())) => shared += 1,
                    Some(Err(problem)) => out.push(("shared-pod-served".into(), problem)),
                    None => {}
                }
                continue;
            }
            let name = p.name_any();
            if p.metadata.deletion_timestamp.is_some() {
                out.push((
                    "eni-pod-served".into(),
                    format!("pod {name} is still terminating (finalizer {RELEASE_FINALIZER} not removed)"),
                ));
                continue;
            }
            let node = p.spec.as_ref().and_then(|s| s.node_name.clone());
            let phase = p.status.as_ref().and_then(|s| s.phase.clone());
            match node {
                None => {
                    let told = events.iter().any(|e| {
                        e.involved_object.name.as_deref() == Some(name.as_str())
                            && e.reason.as_deref() == Some("FailedScheduling")
                    });
                    if told {
                        pending += 1;
                    } else {
                        out.push((
                            "eni-pod-served".into(),
                            format!("pod {name} is unbound without a FailedScheduling Event"),
                        ));
                    }
                }
                Some(node) => {
                    let alloc = PodAllocation::from_annotations(p.annotations());
                    let instance = InstanceId::new(instance_for(&node));
                    let on_eni = alloc.as_ref().is_some_and(|a| {
                        a.all().iter().all(|x| {
                            enis.iter().any(|e| {
                                e.id.as_str() == x.eni_id
                                    && e.status == EniStatus::InUse
                                    && e.instance_id.as_ref() == Some(&instance)
                                    && e.primary_ip.to_string() == x.ip
                                    && ipam::eni::pod_uid_of(&e.tags) == p.uid().as_deref()
                            })
                        })
                    });
                    if phase.as_deref() == Some("Running") && on_eni {
                        running += 1;
                    } else {
                        out.push((
                            "eni-pod-served".into(),
                            format!(
                                "pod {name} on {node} is {phase:?}, allocation {:?}",
                                alloc.map(|a| a.eni_ids())
                            ),
                        ));
                    }
                }
            }
        }
        if nodes.is_empty() {
            out.push(("every-node-routed".into(), "no node left".into()));
        }
        self.report.eni_pods_running = running;
        self.report.eni_pods_pending = pending;
        self.report.shared_pods_running = shared;
        Ok(out)
    }

    /// A pod on a shared-mode node, once quiet (`None` for any other pod):
    /// it must run with a shared allocation made for it, on an ENI of its
    /// node's instance that holds the IP; `Err` says what is wrong.
    fn shared_pod(&self, p: &Pod, nodes: &[Node], enis: &[Eni]) -> Option<Result<(), String>> {
        let node_name = p.spec.as_ref()?.node_name.clone()?;
        let node = nodes.iter().find(|n| n.name_any() == node_name)?;
        if !self.shared_node(node)
            || p.metadata.deletion_timestamp.is_some()
            || p.spec.as_ref().and_then(|s| s.host_network) == Some(true)
        {
            return None;
        }
        let name = p.name_any();
        let Some(a) = PodAllocation::from_annotations(p.annotations()).filter(|a| a.is_shared())
        else {
            return Some(Err(format!(
                "pod {name} on shared node {node_name} has no shared allocation"
            )));
        };
        let instance = InstanceId::new(instance_for(&node_name));
        let ip: Option<Ipv4Addr> = a.first.ip.parse().ok();
        let on_eni = enis.iter().any(|e| {
            e.id.as_str() == a.first.eni_id
                && e.status == EniStatus::InUse
                && e.instance_id.as_ref() == Some(&instance)
                && ip.is_some_and(|ip| e.secondary_ips.contains(&ip))
        });
        let pod_ip = p.status.as_ref().and_then(|s| s.pod_ip.clone());
        let phase = p.status.as_ref().and_then(|s| s.phase.clone());
        let ok = a.pod_uid == p.uid()
            && on_eni
            && pod_ip.as_deref() == Some(a.first.ip.as_str())
            && phase.as_deref() == Some("Running");
        if ok {
            return Some(Ok(()));
        }
        Some(Err(format!(
            "pod {name} on {node_name}: {phase:?}, podIP {pod_ip:?}, allocation {} on {} for uid {:?}, on its ENI: {on_eni}",
            a.first.ip, a.first.eni_id, a.pod_uid
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_write_is_the_leaders_only_inside_its_holding_of_the_lease() {
        let s = |n: i128| n * 1_000_000_000;
        let mut lease = LeaseHistory::default();
        assert!(!lease.held("a", s(5)), "no Lease: nobody may write");
        assert!(!lease.knows(s(5)));
        lease.observe(Some("a".into()), Some(s(10)), s(11));
        lease.observe(Some("a".into()), Some(s(10)), s(12));
        lease.observe(Some("b".into()), Some(s(20)), s(21));
        lease.observe(None, None, s(31));
        lease.observe(Some("a".into()), Some(s(40)), s(60));
        // A write after the latest read is judged only after the next one.
        assert!(lease.knows(s(59)) && !lease.knows(s(61)));
        assert!(lease.held("a", s(15)));
        assert!(!lease.held("b", s(15)));
        assert!(!lease.held("a", s(5)));
        // The old holder may not write once the next one has taken it.
        assert!(!lease.held("a", s(21)));
        assert!(lease.held("b", s(21)));
        assert!(
            lease.held("b", s(35)),
            "released, not taken: still b's term"
        );
        assert!(!lease.held("b", s(41)));
        assert!(lease.held("a", s(50)));
        // Within the clock slack of a boundary.
        assert!(lease.held("a", s(20) + 10_000_000));
        assert!(!lease.held("a", s(20) + 100_000_000));
        assert_eq!(lease.holder_at(s(25)), Some("b"));
        assert_eq!(lease.holders(), 2);
        assert_eq!(lease.holder(), Some("a".into()));
    }
}
