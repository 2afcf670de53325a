//! The route reconciler (VPC route mode): keeps one route entry per node
//! podCIDR -> node instance in each route table, deletes owned entries whose
//! node is gone, and never touches an entry that is not ours.
//!
//! It reads Nodes from the replica's node cache (`cache`), gathers changes for a short window,
//! then runs one pass: observe (the store and the cloud's listing of each
//! table), plan (`ipam::routes::plan_routes`), apply (batched, serialised per
//! table where the cloud demands it), record (node condition, Events,
//! metrics). The cloud's listing is the truth: a restart re-lists and diffs,
//! so nothing is lost or leaked.

use crate::config::RoutesConfig;
use crate::context::Context;
use crate::events::Once;
use crate::kubeutil;
use futures::StreamExt as _;
use ipam::backoff::Backoff;
use ipam::cidr::PodCidrAllocator;
use ipam::ids::{ClusterId, InstanceId, RouteTableId, VpcId};
use ipam::route_tables::{choose_route_tables, table_owned_by_cluster, TableView};
use ipam::routes::{plan_routes, DesiredRoute, ObservedRoute, Ownership, RoutePlan};
use ipnet::Ipv4Net;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::reflector::Store;
use kube::ResourceExt;
use providers::model::{NewRouteEntry, NextHop, RouteEntry, RouteEntryStatus};
use providers::{Cloud, CloudError};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// Where the reconciler writes: resolved once at start from config and cloud.
#[derive(Clone, Debug)]
pub struct TableTarget {
    pub id: RouteTableId,
    /// The cluster's table (configured, or tagged as owned): unnamed instance
    /// routes inside the cluster CIDR are ours (clouds whose routes carry no
    /// name: EC2).
    pub owned: bool,
}

/// Resolve the tables to write into for the VPC the nodes live in.
pub async fn resolve_tables(
    cloud: &dyn Cloud,
    vpc: &VpcId,
    configured: &[RouteTableId],
    cluster: &ClusterId,
) -> anyhow::Result<Vec<TableTarget>> {
    let tables = cloud.describe_route_tables(vpc).await?;
    let views: Vec<TableView> = tables
        .iter()
        .map(|t| TableView {
            id: t.id.clone(),
            main: t.main,
            tags: t.tags.clone(),
        })
        .collect();
    let chosen = choose_route_tables(configured, &views, cluster).map_err(anyhow::Error::msg)?;
    Ok(chosen
        .into_iter()
        .map(|id| {
            let owned = views
                .iter()
                .find(|v| v.id == id)
                .map(|v| table_owned_by_cluster(&v.tags, cluster, configured.contains(&id)))
                .unwrap_or(false);
            TableTarget { id, owned }
        })
        .collect())
}

/// Custom route entries a route table takes by default on Alibaba Cloud:
/// the VPC quota "custom route entries per route table", 200 (raised in the
/// Quota Center).
pub const ALIBABA_ROUTE_TABLE_QUOTA: u32 = 200;
/// Routes a route table takes by default on AWS: the Amazon VPC quota
/// "routes per route table (non-propagated routes)", 50 (adjustable to 1000).
pub const AWS_ROUTE_TABLE_QUOTA: u32 = 50;

/// The default route table quota of the cloud `provider` (`Cloud::name`);
/// the in-memory fake models Alibaba's.
pub fn route_table_quota(provider: &str) -> u32 {
    match provider {
        "aws" => AWS_ROUTE_TABLE_QUOTA,
        _ => ALIBABA_ROUTE_TABLE_QUOTA,
    }
}

/// Summary of one pass, for logs, tests and the simulation.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PassSummary {
    pub desired: usize,
    pub satisfied: usize,
    pub created: usize,
    pub deleted: usize,
    pub failed: usize,
    pub conflicts: usize,
    pub mutating_calls: usize,
}

/// Retry a failed pass after 4 s, doubling up to a minute.
const RETRY: Backoff = Backoff::new(Duration::from_secs(4), Duration::from_secs(60));

/// Kube writes (podCIDR and condition patches, Events) a pass keeps in
/// flight at once: a thousand nodes joining are a thousand of each, which
/// one at a time would outlast the route writes themselves.
const KUBE_CONCURRENCY: usize = 16;

pub struct RouteReconciler {
    ctx: Context,
    nodes: Api<Node>,
    tables: Vec<TableTarget>,
    observed: HashMap<RouteTableId, Vec<RouteEntry>>,
    /// destination -> node, of routes we wanted, to name the node in
    /// RouteDeleted events after it is gone.
    last_owner: HashMap<Ipv4Net, String>,
    /// (node, slot) -> the last Event published there, so passes do not repeat it.
    reported: Once<(String, &'static str)>,
    /// podCIDRs this replica gave that the node watch has not shown yet: held
    /// so a lagging watch never makes the next pass give the same block again.
    assigned: HashMap<String, Ipv4Net>,
    /// Published after each pass, for the simulation and tests.
    pub last_pass: Arc<parking_lot::Mutex<PassSummary>>,
}

/// What one pass found per node, gathered over every table.
struct Outcome {
    summary: PassSummary,
    /// node -> is its route in every table?
    ready: BTreeMap<String, bool>,
    /// node -> why its route is not in place.
    failures: BTreeMap<String, String>,
    /// Route entries owned, over every table.
    owned: usize,
}

impl Outcome {
    fn new(desired: &[DesiredRoute]) -> Self {
        Self {
            summary: PassSummary {
                desired: desired.len(),
                ..PassSummary::default()
            },
            ready: desired.iter().map(|d| (d.node.clone(), true)).collect(),
            failures: BTreeMap::new(),
            owned: 0,
        }
    }

    fn node_failed(&mut self, node: &str, why: String) {
        self.ready.insert(node.to_owned(), false);
        self.failures.insert(node.to_owned(), why);
    }

    /// What a table's plan says about nodes before anything is applied.
    fn planned(&mut self, plan: &RoutePlan) {
        self.summary.satisfied += plan.satisfied.len();
        self.summary.conflicts += plan.conflicts.len();
        for c in plan.conflicts.iter().filter(|c| !c.route_works()) {
            self.node_failed(&c.node, c.to_string());
        }
        for inv in &plan.invalid {
            self.node_failed(&inv.route.node, inv.reason.clone());
        }
    }

    fn applied(&mut self, applied: &Applied) {
        self.summary.created += applied.created.len();
        self.summary.deleted += applied.deleted.len();
        self.summary.mutating_calls += applied.calls;
        self.summary.failed += applied.failed.len();
        for (node, why) in &applied.failed {
            self.node_failed(node, why.clone());
        }
    }
}

impl RouteReconciler {
    pub fn new(ctx: Context, tables: Vec<TableTarget>) -> Self {
        Self {
            nodes: Api::all(ctx.client.clone()),
            reported: Once::new(ctx.events.clone()),
            tables,
            observed: HashMap::new(),
            last_owner: HashMap::new(),
            assigned: HashMap::new(),
            ctx,
            last_pass: Arc::default(),
        }
    }

    fn config(&self) -> &RoutesConfig {
        &self.ctx.config.routes
    }

    /// Reconcile until `shutdown`, on the replica's node cache: `store`,
    /// and `changed` notified after every change to it.
    pub async fn run(
        mut self,
        store: Store<Node>,
        changed: Arc<Notify>,
        shutdown: CancellationToken,
    ) {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            r = store.wait_until_ready() => if r.is_err() { return; }
        }
        let clock = self.ctx.clock;
        let mut next_resync = clock.now() + self.config().resync_interval();
        let mut failures = 0u32;
        loop {
            // Gather changes for a window, so a burst of joins is one pass.
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(self.config().aggregate_window()) => {}
            }
            if clock.now() >= next_resync {
                self.observed.clear();
                next_resync = clock.now() + self.config().resync_interval();
            }
            let started = clock.now();
            let summary = self.pass(&store).await;
            let ok = summary.failed == 0;
            self.ctx.metrics.reconciled("routes", ok, started.elapsed());
            *self.last_pass.lock() = summary.clone();
            tracing::info!(?summary, "route pass done");
            failures = if ok { 0 } else { failures.saturating_add(1) };
            let retry = tokio::time::sleep(match failures {
                0 => next_resync.saturating_duration_since(clock.now()),
                n => RETRY.after(n),
            });
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = changed.notified() => {}
                _ = tokio::time::sleep_until(next_resync) => {}
                _ = retry => {}
            }
        }
    }

    /// One full pass over every table: observe the nodes, then per table
    /// observe the cloud, plan, apply; then record per node.
    pub async fn pass(&mut self, store: &Store<Node>) -> PassSummary {
        let nodes = store.state();
        let Some(cluster_cidr) = self.config().cluster_cidr else {
            tracing::error!("routes.clusterCidr is not set; nothing can be ours");
            return PassSummary::default();
        };
        if self.config().allocate_pod_cidrs {
            self.allocate_pod_cidrs(&nodes).await;
        }
        let live: BTreeSet<String> = nodes.iter().map(|n| n.name_any()).collect();
        self.reported.retain(|(node, _)| live.contains(node));
        let (desired, node_problems) = self.desired_routes(&nodes);
        for (node, reason, message) in node_problems {
            self.report(&node, "problem", true, reason, "Route", message)
                .await;
            let current = nodes.iter().find(|n| n.name_any() == node);
            self.set_condition(current, &node, true, "NoRouteCreated", reason)
                .await;
        }
        for d in &desired {
            self.last_owner.insert(d.destination, d.node.clone());
        }
        let mut outcome = Outcome::new(&desired);
        for table in self.tables.clone() {
            self.table_pass(&table, cluster_cidr, &desired, &mut outcome)
                .await;
        }
        self.record(&nodes, &desired, &outcome).await;
        outcome.summary
    }

    /// Observe, plan and apply one table.
    async fn table_pass(
        &mut self,
        table: &TableTarget,
        cluster_cidr: Ipv4Net,
        desired: &[DesiredRoute],
        outcome: &mut Outcome,
    ) {
        let entries = match self.observe(&table.id).await {
            Ok(entries) => entries,
            Err(e) => {
                outcome.summary.failed += 1;
                tracing::warn!(table = %table.id, error = %e, "cannot list route entries");
                for d in desired {
                    outcome.node_failed(
                        &d.node,
                        format!("cannot list route table {}: {e}", table.id),
                    );
                }
                return;
            }
        };
        let ownership = Ownership::new(self.ctx.cluster(), cluster_cidr, table.owned);
        let observed: Vec<ObservedRoute> = entries.iter().map(observed_route).collect();
        let plan = plan_routes(desired, &observed, &ownership, None);
        self.report_conflicts(&plan).await;
        outcome.planned(&plan);
        let applied = self.apply(&table.id, &plan).await;
        outcome.applied(&applied);
        self.record_changes(&table.id, &applied).await;
        outcome.owned += self
            .observed
            .get(&table.id)
            .map(|entries| {
                entries
                    .iter()
                    .filter(|e| ownership.owns(&observed_route(e)))
                    .count()
            })
            .unwrap_or(0);
        // Custom entries against the quota, as listed after the changes
        // (the listing before them when it is stale now).
        let custom = self
            .observed
            .get(&table.id)
            .unwrap_or(&entries)
            .iter()
            .filter(|e| !e.system)
            .count();
        self.ctx.metrics.set_route_table(
            table.id.as_str(),
            custom,
            route_table_quota(self.ctx.cloud.name()),
        );
    }

    /// Events for the routes a table gained and lost, a few at a time.
    async fn record_changes(&self, table: &RouteTableId, applied: &Applied) {
        let events = &self.ctx.events;
        let created = applied.created.iter().map(|node| {
            (
                node.clone(),
                "RouteCreated",
                "CreateRoute",
                format!("Created route for node {node} in route table {table}"),
            )
        });
        let deleted = applied.deleted.iter().filter_map(|dest| {
            let node = self.last_owner.get(dest).cloned();
            tracing::info!(%table, destination = %dest, node = ?node, "deleted route");
            let node = node?;
            let note = format!("Deleted route {dest} of node {node} from route table {table}");
            Some((node, "RouteDeleted", "DeleteRoute", note))
        });
        let all: Vec<_> = created.chain(deleted).collect();
        futures::stream::iter(all)
            .for_each_concurrent(
                KUBE_CONCURRENCY,
                |(node, reason, action, note)| async move {
                    events.node(&node, false, reason, action, note).await;
                },
            )
            .await;
    }

    /// Per node: the `NetworkUnavailable` condition and, for a route that is
    /// not in place, why; then the gauges.
    async fn record(&mut self, nodes: &[Arc<Node>], desired: &[DesiredRoute], outcome: &Outcome) {
        let by_name: HashMap<String, &Arc<Node>> =
            nodes.iter().map(|n| (n.name_any(), n)).collect();
        let without = outcome.ready.values().filter(|ok| !**ok).count();
        let this = &*self;
        futures::stream::iter(&outcome.ready)
            .for_each_concurrent(KUBE_CONCURRENCY, |(node, ok)| {
                let current = by_name.get(node).copied();
                async move {
                    if *ok {
                        this.set_condition(
                            current,
                            node,
                            false,
                            "RouteCreated",
                            "RouteController created a route",
                        )
                        .await;
                        return;
                    }
                    let why = outcome.failures.get(node).cloned().unwrap_or_default();
                    this.set_condition(current, node, true, "NoRouteCreated", &why)
                        .await;
                    if !why.is_empty() {
                        this.report(
                            node,
                            "create",
                            true,
                            "CreateRouteFailed",
                            "CreateRoute",
                            why,
                        )
                        .await;
                    }
                }
            })
            .await;
        let desired_dests: BTreeSet<Ipv4Net> = desired.iter().map(|d| d.destination).collect();
        self.last_owner
            .retain(|dest, _| desired_dests.contains(dest));
        self.ctx.metrics.set_routes_owned(outcome.owned);
        self.ctx.metrics.set_nodes_without_route(without);
    }

    /// Desired routes from nodes, plus (node, reason, message) for nodes that
    /// cannot have one.
    fn desired_routes(
        &self,
        nodes: &[Arc<Node>],
    ) -> (Vec<DesiredRoute>, Vec<(String, &'static str, String)>) {
        let mut desired = Vec::new();
        let mut problems = Vec::new();
        for node in nodes {
            let name = node.name_any();
            // A block written this pass counts before the watch shows it.
            let Some(cidr) = kubeutil::pod_cidr(node)
                .or_else(|| self.assigned.get(&name).map(|b| b.to_string()))
            else {
                continue;
            };
            let destination: Ipv4Net = match cidr.parse::<Ipv4Net>() {
                Ok(n) => n.trunc(),
                Err(_) => {
                    problems.push((
                        name,
                        "InvalidPodCIDR",
                        format!("spec.podCIDR {cidr:?} is not an IPv4 CIDR"),
                    ));
                    continue;
                }
            };
            let instance: InstanceId = match kubeutil::provider_id(node)
                .map(ipam::provider_id::instance_from_provider_id)
            {
                Some(Ok(id)) => id,
                Some(Err(e)) => {
                    problems.push((name, "InvalidProviderID", e.to_string()));
                    continue;
                }
                None => {
                    problems.push((
                        name,
                        "InvalidProviderID",
                        "spec.providerID is empty; the cloud controller manager or kubelet --provider-id must set it".into(),
                    ));
                    continue;
                }
            };
            desired.push(DesiredRoute {
                node: name,
                destination,
                instance,
            });
        }
        (desired, problems)
    }

    /// Give nodes without a podCIDR a block (only when configured).
    pub(crate) async fn allocate_pod_cidrs(&mut self, nodes: &[Arc<Node>]) {
        let Some(cluster_cidr) = self.config().cluster_cidr else {
            return;
        };
        // A given block stays held until the watch shows the node with it
        // (or the node is gone).
        let waiting: BTreeSet<String> = nodes
            .iter()
            .filter(|n| kubeutil::pod_cidr(n).is_none())
            .map(|n| n.name_any())
            .collect();
        self.assigned.retain(|node, _| waiting.contains(node));
        let existing: Vec<Ipv4Net> = nodes
            .iter()
            .filter_map(|n| kubeutil::pod_cidr(n)?.parse::<Ipv4Net>().ok())
            .chain(self.assigned.values().copied())
            .collect();
        let (mut allocator, rejected) = match PodCidrAllocator::rebuild(
            cluster_cidr,
            self.config().node_cidr_mask_size,
            existing,
        ) {
            Ok(pair) => pair,
            Err(e) => {
                tracing::error!(error = %e, "cannot build the podCIDR allocator");
                return;
            }
        };
        for r in rejected {
            tracing::debug!(block = %r.block, reason = %r.reason, "existing podCIDR of another size or place: its addresses are never handed out");
        }
        // Decide every block first (pure), then write them concurrently.
        let mut writes: Vec<(String, String, Ipv4Net)> = Vec::new();
        for node in nodes.iter().filter(|n| kubeutil::pod_cidr(n).is_none()) {
            let name = node.name_any();
            if self.assigned.contains_key(&name) {
                continue;
            }
            match allocator.allocate() {
                Ok(block) => {
                    let rv = node.metadata.resource_version.clone().unwrap_or_default();
                    writes.push((name, rv, block));
                }
                Err(e) => {
                    self.report(
                        &name,
                        "cidr",
                        true,
                        "CIDRNotAvailable",
                        "AllocatePodCIDR",
                        format!("No podCIDR left for node {name}: {e}"),
                    )
                    .await;
                }
            }
        }
        let this = &*self;
        let written: Vec<(String, Ipv4Net)> = futures::stream::iter(writes)
            .map(|(name, rv, block)| async move {
                this.write_pod_cidr(&name, &rv, block)
                    .await
                    .then_some((name, block))
            })
            .buffer_unordered(KUBE_CONCURRENCY)
            .filter_map(std::future::ready)
            .collect()
            .await;
        self.assigned.extend(written);
    }

    /// Set a node's podCIDR, only onto the node as we read it (`rv`): if it
    /// changed since (another writer gave it a podCIDR), the next pass looks
    /// again. `true` when written.
    async fn write_pod_cidr(&self, name: &str, rv: &str, block: Ipv4Net) -> bool {
        let ops = serde_json::json!([
            {"op": "test", "path": "/metadata/resourceVersion", "value": rv},
            {"op": "add", "path": "/spec/podCIDR", "value": block.to_string()},
            {"op": "add", "path": "/spec/podCIDRs", "value": [block.to_string()]},
        ]);
        let patch: json_patch::Patch = match serde_json::from_value(ops) {
            Ok(p) => p,
            Err(e) => {
                tracing::error!(error = %e, "internal: bad podCIDR patch");
                return false;
            }
        };
        match self
            .nodes
            .patch(name, &PatchParams::default(), &Patch::Json::<()>(patch))
            .await
        {
            Ok(_) => {
                self.ctx
                    .events
                    .node(
                        name,
                        false,
                        "CIDRAssignmentSucceeded",
                        "AllocatePodCIDR",
                        format!("Node {name} got podCIDR {block}"),
                    )
                    .await;
                true
            }
            Err(kube::Error::Api(s)) if s.code == 403 => {
                tracing::error!(
                    node = %name,
                    "not allowed to patch nodes: routes.allocatePodCidrs needs the ClusterRole of manifests/patch-nodes (add ../patch-nodes to the overlay's resources)"
                );
                false
            }
            Err(kube::Error::Api(s)) if s.code == 422 || s.code == 409 => {
                tracing::debug!(node = %name, "node changed since it was read; podCIDR next pass");
                false
            }
            Err(e) => {
                tracing::warn!(node = %name, error = %e, "cannot set podCIDR");
                false
            }
        }
    }

    /// The cloud's listing of a table, from cache unless it is stale.
    async fn observe(&mut self, table: &RouteTableId) -> Result<Vec<RouteEntry>, CloudError> {
        if let Some(entries) = self.observed.get(table) {
            return Ok(entries.clone());
        }
        let entries = self.ctx.cloud.list_route_entries(table).await?;
        self.observed.insert(table.clone(), entries.clone());
        Ok(entries)
    }

    /// Apply one table's plan: deletes (and replaced entries) first, then
    /// creates, in batches. Returns what happened per node.
    async fn apply(&mut self, table: &RouteTableId, plan: &RoutePlan) -> Applied {
        let mut applied = Applied::default();
        let stale = self.apply_deletes(table, plan, &mut applied).await
            | self.apply_creates(table, plan, &mut applied).await;
        if stale {
            self.observed.remove(table);
        }
        applied
    }

    /// Deletes (and the old halves of replaced entries), in batches; `true`
    /// when the cached listing can no longer be trusted.
    async fn apply_deletes(
        &mut self,
        table: &RouteTableId,
        plan: &RoutePlan,
        applied: &mut Applied,
    ) -> bool {
        let caps = self.ctx.cloud.capabilities();
        let batch = caps.route_batch_size.max(1);
        let mut to_delete: Vec<(Ipv4Net, InstanceId)> = Vec::new();
        for entry in plan
            .delete
            .iter()
            .chain(plan.replace.iter().map(|r| &r.old))
        {
            match &entry.target {
                Some(instance) => to_delete.push((entry.destination, instance.clone())),
                None => {
                    tracing::warn!(%table, destination = %entry.destination, "owned entry has no instance next hop; left for an operator")
                }
            }
        }
        let mut stale = false;
        for chunk in to_delete.chunks(batch) {
            applied.calls += 1;
            match self.ctx.cloud.delete_route_entries(table, chunk).await {
                Ok(outcome) => {
                    let failed: BTreeSet<Ipv4Net> =
                        outcome.failed.iter().map(|(d, _)| *d).collect();
                    for (dest, err) in &outcome.failed {
                        tracing::warn!(%table, destination = %dest, error = %err, "route delete failed");
                    }
                    stale |= !failed.is_empty();
                    for (dest, _) in chunk {
                        if !failed.contains(dest) {
                            applied.deleted.push(*dest);
                            self.forget_entry(table, dest);
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!(%table, error = %e, "route delete call failed");
                    stale = true;
                }
            }
            if caps.serialize_route_changes {
                self.pause_between_changes().await;
            }
        }
        stale
    }

    /// Creates (and the new halves of replaced entries), in batches; `true`
    /// when the cached listing can no longer be trusted.
    async fn apply_creates(
        &mut self,
        table: &RouteTableId,
        plan: &RoutePlan,
        applied: &mut Applied,
    ) -> bool {
        let caps = self.ctx.cloud.capabilities();
        let batch = caps.route_batch_size.max(1);
        let mut stale = false;
        let creates: Vec<&DesiredRoute> = plan
            .create
            .iter()
            .chain(plan.replace.iter().map(|r| &r.new))
            .collect();
        let name = ipam::routes::ownership_marker(self.ctx.cluster());
        for chunk in creates.chunks(batch) {
            let entries: Vec<NewRouteEntry> = chunk
                .iter()
                .map(|d| NewRouteEntry {
                    destination: d.destination,
                    instance_id: d.instance.clone(),
                    name: name.clone(),
                    description: name.clone(),
                })
                .collect();
            applied.calls += 1;
            match self.ctx.cloud.create_route_entries(table, &entries).await {
                Ok(outcome) => {
                    let failed: BTreeMap<Ipv4Net, CloudError> =
                        outcome.failed.into_iter().collect();
                    for d in chunk {
                        match failed.get(&d.destination) {
                            None => {
                                applied.created.push(d.node.clone());
                                self.remember_entry(table, d, &name);
                            }
                            Some(err) => {
                                stale = true;
                                applied.failed.push((
                                    d.node.clone(),
                                    format!("route {} -> {}: {err}", d.destination, d.instance),
                                ));
                            }
                        }
                    }
                }
                Err(err) => {
                    stale = true;
                    for d in chunk {
                        applied.failed.push((
                            d.node.clone(),
                            format!("route {} -> {}: {err}", d.destination, d.instance),
                        ));
                    }
                }
            }
            if caps.serialize_route_changes {
                self.pause_between_changes().await;
            }
        }
        stale
    }

    /// After a change to a table that accepts one change at a time, give the
    /// cloud a moment before the next one. Re-listing the table to watch the
    /// entry turn Available would cost a page per 50-100 entries per poll;
    /// instead a change that still meets a busy table gets `Conflict`, which
    /// the call wrapper retries with backoff.
    async fn pause_between_changes(&self) {
        tokio::time::sleep(self.config().batch_pause()).await;
    }

    fn forget_entry(&mut self, table: &RouteTableId, dest: &Ipv4Net) {
        if let Some(entries) = self.observed.get_mut(table) {
            entries.retain(|e| e.destination != *dest || e.system);
        }
    }

    fn remember_entry(&mut self, table: &RouteTableId, d: &DesiredRoute, marker: &str) {
        if let Some(entries) = self.observed.get_mut(table) {
            entries.retain(|e| e.destination != d.destination);
            entries.push(RouteEntry {
                route_table_id: table.clone(),
                destination: d.destination,
                next_hop: NextHop::Instance(d.instance.clone()),
                status: RouteEntryStatus::Available,
                name: Some(marker.to_owned()),
                description: Some(marker.to_owned()),
                system: false,
            });
        }
    }

    async fn report_conflicts(&mut self, plan: &RoutePlan) {
        for c in &plan.conflicts {
            self.report(
                &c.node,
                "conflict",
                true,
                "RouteConflict",
                "CreateRoute",
                c.to_string(),
            )
            .await;
        }
        for inv in &plan.invalid {
            self.report(
                &inv.route.node,
                "invalid",
                true,
                "InvalidPodCIDR",
                "CreateRoute",
                inv.reason.clone(),
            )
            .await;
        }
    }

    /// Publish an Event unless the same one was the last of its slot for this
    /// node (passes repeat; Events should not).
    async fn report(
        &self,
        node: &str,
        slot: &'static str,
        warning: bool,
        reason: &str,
        action: &str,
        message: String,
    ) {
        self.reported
            .node(
                (node.to_owned(), slot),
                node,
                warning,
                reason,
                action,
                message,
            )
            .await;
    }

    /// Patch `NetworkUnavailable` when it differs from what the node
    /// (`current`, as last seen) says.
    async fn set_condition(
        &self,
        current: Option<&Arc<Node>>,
        node: &str,
        unavailable: bool,
        reason: &str,
        message: &str,
    ) {
        let want = (if unavailable { "True" } else { "False" }).to_owned();
        let current = current.and_then(|n| kubeutil::network_unavailable(n));
        if current.as_ref() == Some(&(want.clone(), reason.to_owned())) {
            return;
        }
        if let Err(e) =
            kubeutil::set_network_unavailable(&self.nodes, node, unavailable, reason, message).await
        {
            tracing::warn!(node, error = %e, "cannot set NetworkUnavailable");
        }
        if !unavailable {
            self.reported.forget(&(node.to_owned(), "create"));
        }
    }
}

#[derive(Default)]
struct Applied {
    created: Vec<String>,
    deleted: Vec<Ipv4Net>,
    failed: Vec<(String, String)>,
    calls: usize,
}

/// A listed entry as `ipam::routes` reads it.
pub fn observed_route(e: &RouteEntry) -> ObservedRoute {
    ObservedRoute {
        destination: e.destination,
        target: match &e.next_hop {
            NextHop::Instance(i) => Some(i.clone()),
            _ => None,
        },
        name: e.name.clone(),
        description: e.description.clone(),
        system: e.system,
    }
}
