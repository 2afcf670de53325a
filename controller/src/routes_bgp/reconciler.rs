//! The BGP route reconciler: reads the replica's node cache (`cache`: one
//! stripped reflector shared with the other reconcilers, keeping the labels
//! the peers' selectors read), and on each pass observes the nodes
//! and the peers' sessions, plans the announcements (`ipam::bgp`), hands
//! each session the routes its peer should hold, and records per node
//! (`NetworkUnavailable`, Events) and per peer (Events, metrics). Sessions
//! live as long as this reconciler, which runs only while the replica
//! leads.

use super::config::BgpConfig;
use crate::context::Context;
use crate::events::Once;
use crate::kubeutil;
use crate::routes::{PassSummary, RouteReconciler};
use crate::tasks::AbortOnDrop;
use bgp::rib::Routes;
use bgp::{PeerConfig, PeerState, PeerStatus, Session};
use ipam::bgp::{accepted, plan_announcements, BgpNode, PeerSelector};
use ipnet::Ipv4Net;
use k8s_openapi::api::core::v1::{Node, ObjectReference};
use kube::api::Api;
use kube::runtime::reflector::Store;
use kube::ResourceExt;
use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{watch, Notify};
use tokio_util::sync::CancellationToken;

/// Pauses between connection attempts to a peer: 1 s, doubling to 60 s.
const MIN_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(60);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Run the BGP backend until `shutdown` (the replica stops leading), on
/// the replica's node cache and its change notifications.
pub async fn run(
    ctx: Context,
    last_pass: Arc<parking_lot::Mutex<PassSummary>>,
    (store, changed): (Store<Node>, Arc<Notify>),
    shutdown: CancellationToken,
) {
    let Some(bgp) = ctx.config.routes.bgp.clone() else {
        tracing::error!("routes.backend is bgp but routes.bgp is missing");
        return;
    };
    let mut r = BgpRouteReconciler::new(ctx, &bgp);
    r.last_pass = last_pass;
    r.run(store, changed, shutdown).await;
}

/// One configured peer and its session.
struct Peer {
    name: String,
    asn: u32,
    selector: PeerSelector,
    desired: watch::Sender<Routes>,
    status: watch::Receiver<PeerStatus>,
    /// The last status this reconciler recorded.
    seen: PeerStatus,
    /// Whether this peer's session came up at least once.
    ever_up: bool,
    session: tokio::task::JoinHandle<()>,
    _forward: AbortOnDrop,
}

impl Drop for Peer {
    /// Close the connection at once and without a NOTIFICATION (as a crash
    /// would): a router with graceful restart keeps our routes for the next
    /// leader.
    fn drop(&mut self) {
        self.session.abort();
    }
}

pub struct BgpRouteReconciler {
    ctx: Context,
    nodes: Api<Node>,
    bgp: BgpConfig,
    /// Per configured peer, whose nodes it learns.
    selectors: Vec<PeerSelector>,
    /// The sessions, started by the first pass with its whole plan, so the
    /// first UPDATEs and End-of-RIB carry every route (a peer that kept our
    /// routes through a graceful restart drops what End-of-RIB did not
    /// refresh).
    peers: Vec<Peer>,
    changed: Arc<Notify>,
    restart_time: Option<u16>,
    /// (node, slot) -> last Event published there.
    reported: Once<(String, &'static str)>,
    /// Nodes whose route a peer has taken (RouteCreated published), with it.
    announced: BTreeMap<String, (Ipv4Net, Ipv4Addr)>,
    /// Gives podCIDRs when `routes.allocatePodCidrs` is set (the cloud
    /// backend's allocation, no route tables).
    allocator: RouteReconciler,
    pub last_pass: Arc<parking_lot::Mutex<PassSummary>>,
}

/// The router id: configured, else env `POD_IP` (the controller's address
/// in the cluster), else each connection's local address.
fn router_id(bgp: &BgpConfig) -> Option<Ipv4Addr> {
    bgp.router_id.or_else(|| {
        std::env::var("POD_IP")
            .ok()
            .and_then(|ip| ip.parse::<Ipv4Addr>().ok())
            .filter(|ip| !ip.is_loopback())
    })
}

impl BgpRouteReconciler {
    pub fn new(ctx: Context, bgp: &BgpConfig) -> Self {
        let restart_time = bgp
            .graceful_restart
            .enabled
            .then_some(bgp.graceful_restart.restart_time_seconds);
        Self {
            nodes: Api::all(ctx.client.clone()),
            reported: Once::new(ctx.events.clone()),
            allocator: RouteReconciler::new(ctx.clone(), Vec::new()),
            ctx,
            selectors: bgp
                .peers
                .iter()
                .map(|p| p.node_selector.selector_or_nothing())
                .collect(),
            bgp: bgp.clone(),
            peers: Vec::new(),
            changed: Arc::new(Notify::new()),
            restart_time,
            announced: BTreeMap::new(),
            last_pass: Arc::default(),
        }
    }

    /// One session per peer, each starting with what `plan` gives it.
    fn start_sessions(&mut self, plan: &[Routes]) {
        let bgp = &self.bgp;
        self.peers = bgp
            .peers
            .iter()
            .zip(plan.iter())
            .zip(self.selectors.iter())
            .map(|((p, routes), selector)| {
                let (desired, rx) = watch::channel(routes.clone());
                let config = PeerConfig {
                    address: (p.address, p.port).into(),
                    local_as: bgp.local_asn_for(p),
                    peer_as: p.asn,
                    router_id: router_id(bgp),
                    hold_time: bgp.hold_time_seconds,
                    graceful_restart: self.restart_time,
                    connect_timeout: CONNECT_TIMEOUT,
                    min_backoff: MIN_BACKOFF,
                    max_backoff: MAX_BACKOFF,
                };
                tracing::info!(peer = %p.name(), local_as = config.local_as, peer_as = p.asn, prefixes = routes.len(), "starting BGP session");
                let (handle, status) = Session::spawn(config, rx);
                let forward = {
                    let mut status = status.clone();
                    let changed = self.changed.clone();
                    AbortOnDrop::spawn(async move {
                        while status.changed().await.is_ok() {
                            changed.notify_one();
                        }
                    })
                };
                Peer {
                    name: p.name(),
                    asn: p.asn,
                    selector: selector.clone(),
                    desired,
                    status,
                    seen: PeerStatus::default(),
                    ever_up: false,
                    session: handle,
                    _forward: forward,
                }
            })
            .collect();
    }

    /// Reconcile on `store` (woken by `nodes_changed`) until `shutdown`;
    /// the sessions end with it.
    pub async fn run(
        mut self,
        store: Store<Node>,
        nodes_changed: Arc<Notify>,
        shutdown: CancellationToken,
    ) {
        // Node changes and session changes wake the same loop.
        let _forward = {
            let changed = self.changed.clone();
            AbortOnDrop::spawn(async move {
                loop {
                    nodes_changed.notified().await;
                    changed.notify_one();
                }
            })
        };
        tokio::select! {
            _ = shutdown.cancelled() => return,
            r = store.wait_until_ready() => if r.is_err() { return; }
        }
        let config = &self.ctx.config.routes;
        let (window, resync) = (config.aggregate_window(), config.resync_interval());
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(window) => {}
            }
            let started = self.ctx.clock.now();
            let summary = self.pass(&store).await;
            self.ctx
                .metrics
                .reconciled("routes", summary.failed == 0, started.elapsed());
            tracing::debug!(?summary, "bgp route pass done");
            *self.last_pass.lock() = summary;
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = self.changed.notified() => {}
                _ = tokio::time::sleep(resync) => {}
            }
        }
    }

    /// One pass: observe nodes and sessions, plan, hand the plan to the
    /// sessions, record.
    pub async fn pass(&mut self, store: &Store<Node>) -> PassSummary {
        let nodes = store.state();
        let Some(cluster_cidr) = self.ctx.config.routes.cluster_cidr else {
            tracing::error!("routes.clusterCidr is not set; nothing can be announced");
            return PassSummary::default();
        };
        if self.ctx.config.routes.allocate_pod_cidrs {
            self.allocator.allocate_pod_cidrs(&nodes).await;
        }
        let live: BTreeSet<String> = nodes.iter().map(|n| n.name_any()).collect();
        self.reported.retain(|(node, _)| live.contains(node));
        let (observed, problems) = observe_nodes(&nodes);
        let plan = plan_announcements(&observed, cluster_cidr, &self.selectors);
        if self.peers.is_empty() {
            self.start_sessions(&plan.per_peer);
        }
        for (peer, routes) in self.peers.iter().zip(plan.per_peer.iter()) {
            peer.desired.send_if_modified(|current| {
                let changed = current != routes;
                if changed {
                    *current = routes.clone();
                }
                changed
            });
        }
        self.record_peers().await;
        let mut summary = PassSummary {
            desired: observed.len() + problems.len(),
            ..PassSummary::default()
        };
        for (node, reason, message) in problems
            .into_iter()
            .chain(plan.refused.iter().map(|r| (r.node.clone(), r.reason, r.message.clone())))
            .chain(plan.unmatched.iter().map(|n| {
                (
                    n.clone(),
                    "NoBGPPeer",
                    format!("no routes.bgp peer's nodeSelector matches node {n}; its podCIDR is announced to no router"),
                )
            }))
        {
            summary.failed += 1;
            self.report(&node, "problem", true, reason, message.clone()).await;
            self.set_condition(&nodes, &node, true, "NoRouteCreated", &message).await;
        }
        let held: Vec<Arc<Routes>> = self
            .peers
            .iter()
            .map(|p| p.status.borrow().advertised.clone())
            .collect();
        for node in &observed {
            let Some(owner) = plan.owners.get(&node.pod_cidr.trunc()) else {
                continue;
            };
            if owner != &node.name {
                continue;
            }
            let prefix = node.pod_cidr.trunc();
            let takers: Vec<&str> = self
                .peers
                .iter()
                .zip(held.iter())
                .filter(|(_, h)| accepted(prefix, node.address, [h.as_ref()]))
                .map(|(p, _)| p.name.as_str())
                .collect();
            if takers.is_empty() {
                summary.failed += 1;
                let why = self.why_not_taken(&node.labels);
                let message = format!(
                    "no BGP peer has podCIDR {prefix} of node {} yet: {why}",
                    node.name
                );
                self.set_condition(&nodes, &node.name, true, "NoRouteCreated", &message)
                    .await;
                continue;
            }
            summary.satisfied += 1;
            self.set_condition(
                &nodes,
                &node.name,
                false,
                "RouteCreated",
                "RouteController created a route",
            )
            .await;
            if self.announced.get(&node.name) != Some(&(prefix, node.address)) {
                summary.created += 1;
                self.announced
                    .insert(node.name.clone(), (prefix, node.address));
                self.reported.forget(&(node.name.clone(), "problem"));
                self.ctx
                    .events
                    .node(
                        &node.name,
                        false,
                        "RouteCreated",
                        "AnnounceRoute",
                        format!(
                            "Announced podCIDR {prefix} of node {} with next hop {} to BGP peers {}",
                            node.name,
                            node.address,
                            takers.join(", ")
                        ),
                    )
                    .await;
            }
        }
        // Routes of nodes that went away or changed their podCIDR, once no
        // peer holds them any more.
        let gone: Vec<(String, Ipv4Net)> = self
            .announced
            .iter()
            .filter(|(node, (prefix, _))| plan.owners.get(prefix) != Some(*node))
            .filter(|(_, (prefix, _))| !held.iter().any(|h| h.contains_key(prefix)))
            .map(|(node, (prefix, _))| (node.clone(), *prefix))
            .collect();
        for (node, prefix) in gone {
            self.announced.remove(&node);
            summary.deleted += 1;
            self.ctx
                .events
                .node(
                    &node,
                    false,
                    "RouteDeleted",
                    "WithdrawRoute",
                    format!("Withdrew podCIDR {prefix} of node {node} from every BGP peer"),
                )
                .await;
        }
        self.ctx.metrics.set_routes_owned(summary.satisfied);
        self.ctx.metrics.set_nodes_without_route(summary.failed);
        summary
    }

    /// Why the peers that should have a node's route do not.
    fn why_not_taken(&self, labels: &BTreeMap<String, String>) -> String {
        self.peers
            .iter()
            .filter(|p| p.selector.matches(labels))
            .map(|p| {
                let s = p.status.borrow();
                match (&s.state, &s.last_error) {
                    (PeerState::Established, _) => {
                        format!("peer {}: Established, announcing", p.name)
                    }
                    (state, Some(e)) => format!("peer {}: {state} ({e})", p.name),
                    (state, None) => format!("peer {}: {state}", p.name),
                }
            })
            .collect::<Vec<_>>()
            .join("; ")
    }

    /// Per peer: metrics, and Events when its session comes up or goes down.
    async fn record_peers(&mut self) {
        let regarding = controller_ref(&self.ctx);
        for peer in &mut self.peers {
            let now = peer.status.borrow().clone();
            let was = std::mem::replace(&mut peer.seen, now.clone());
            let metrics = &self.ctx.metrics;
            metrics.set_bgp_peer(&peer.name, now.state.as_str(), now.advertised.len());
            metrics.add_bgp_peer_counts(
                &peer.name,
                now.flaps.saturating_sub(was.flaps),
                now.updates_sent.saturating_sub(was.updates_sent),
                now.update_bytes_sent.saturating_sub(was.update_bytes_sent),
            );
            // Events about one object with the same reason and action form a
            // series that keeps its first note: the peer in the action keeps
            // each peer's Events apart.
            let action = format!("ConnectPeer {}", peer.name);
            let went_down = now.flaps > was.flaps;
            let up = now.state == PeerState::Established;
            if went_down {
                let why = now.last_error.clone().unwrap_or_else(|| "unknown".into());
                let kept = match self.restart_time {
                    Some(t) => format!("the router keeps our routes for up to {t} s (graceful restart) while the session reconnects"),
                    None => "the router drops our routes; the session reconnects".into(),
                };
                self.ctx
                    .events
                    .publish(
                        &regarding,
                        true,
                        "BGPSessionDown",
                        &action,
                        format!(
                            "BGP session to peer {} (AS {}) went down: {why}; {kept}",
                            peer.name, peer.asn
                        ),
                    )
                    .await;
            }
            if up && (was.state != PeerState::Established || went_down) {
                peer.ever_up = true;
                self.ctx
                    .events
                    .publish(
                        &regarding,
                        false,
                        "BGPSessionEstablished",
                        &action,
                        format!(
                            "BGP session to peer {} (AS {}) is established",
                            peer.name, peer.asn
                        ),
                    )
                    .await;
            } else if !peer.ever_up && now.last_error.is_some() && now.last_error != was.last_error
            {
                // A peer that never came up: say why, once per reason.
                let why = now.last_error.clone().unwrap_or_default();
                let key = (format!("peer/{}", peer.name), "session");
                if self.reported.is_new(key, &why) {
                    self.ctx
                        .events
                        .publish(
                            &regarding,
                            true,
                            "BGPSessionFailed",
                            &action,
                            format!(
                                "BGP session to peer {} (AS {}) cannot be established: {why}",
                                peer.name, peer.asn
                            ),
                        )
                        .await;
                }
            }
        }
    }

    async fn report(
        &self,
        node: &str,
        slot: &'static str,
        warning: bool,
        reason: &str,
        message: String,
    ) {
        self.reported
            .node(
                (node.to_owned(), slot),
                node,
                warning,
                reason,
                "AnnounceRoute",
                message,
            )
            .await;
    }

    /// Patch `NetworkUnavailable` when it differs from what the node says.
    async fn set_condition(
        &self,
        nodes: &[Arc<Node>],
        node: &str,
        unavailable: bool,
        reason: &str,
        message: &str,
    ) {
        let want = (if unavailable { "True" } else { "False" }).to_owned();
        let current = nodes
            .iter()
            .find(|n| n.name_any() == node)
            .and_then(|n| kubeutil::network_unavailable(n));
        if current.as_ref() == Some(&(want, reason.to_owned())) {
            return;
        }
        if let Err(e) =
            kubeutil::set_network_unavailable(&self.nodes, node, unavailable, reason, message).await
        {
            tracing::warn!(node, error = %e, "cannot set NetworkUnavailable");
        }
    }
}

/// Nodes with a podCIDR as the plan reads them, and (node, reason, message)
/// for those that cannot be announced.
fn observe_nodes(nodes: &[Arc<Node>]) -> (Vec<BgpNode>, Vec<(String, &'static str, String)>) {
    let mut out = Vec::new();
    let mut problems = Vec::new();
    for node in nodes {
        let name = node.name_any();
        let Some(cidr) = kubeutil::pod_cidr(node) else {
            continue;
        };
        let Ok(pod_cidr) = cidr.parse::<Ipv4Net>() else {
            problems.push((
                name,
                "InvalidPodCIDR",
                format!("spec.podCIDR {cidr:?} is not an IPv4 CIDR"),
            ));
            continue;
        };
        let address = node
            .status
            .as_ref()
            .and_then(|s| s.addresses.as_ref())
            .and_then(|a| {
                a.iter()
                    .filter(|a| a.type_ == "InternalIP")
                    .find_map(|a| a.address.parse::<Ipv4Addr>().ok())
            });
        let Some(address) = address else {
            problems.push((
                name,
                "NoInternalIP",
                "status.addresses has no IPv4 InternalIP, the next hop of the node's podCIDR; the kubelet sets it (--node-ip)".into(),
            ));
            continue;
        };
        out.push(BgpNode {
            name,
            labels: node.labels().clone().into_iter().collect(),
            pod_cidr,
            address,
        });
    }
    (out, problems)
}

/// What peer Events are about: the controller's Pod when it knows it
/// (`POD_NAME`, `POD_NAMESPACE`), else its leader election Lease.
fn controller_ref(ctx: &Context) -> ObjectReference {
    let namespace = std::env::var("POD_NAMESPACE").ok();
    match (std::env::var("POD_NAME").ok(), &namespace) {
        (Some(name), Some(ns)) => ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Pod".into()),
            name: Some(name),
            namespace: Some(ns.clone()),
            ..ObjectReference::default()
        },
        _ => {
            let le = &ctx.config.controller.leader_election;
            ObjectReference {
                api_version: Some("coordination.k8s.io/v1".into()),
                kind: Some("Lease".into()),
                name: Some(le.lease_name.clone()),
                namespace: Some(
                    le.namespace
                        .clone()
                        .or(namespace)
                        .unwrap_or_else(|| "kube-system".into()),
                ),
                ..ObjectReference::default()
            }
        }
    }
}
