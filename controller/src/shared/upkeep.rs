//! The pools' upkeep, one loop for every node, off the pods' path. Each
//! round (every second, or sooner when woken): new shared nodes get their
//! instance described and their books opened; every `poolSyncSeconds` one
//! listing of all shared ENIs of the cluster brings every node's books in
//! line with the cloud (and finds ENIs to adopt or collect); once the pod
//! list is in, the pods' annotations are claimed into fresh books, IPs of
//! pods that went start cooling down; then each idle node's pool is
//! planned with `ipam::pool::plan_pool` and the plan handed to [`actions`]
//! (one action per node at a time, a few nodes at once).

use super::actions;
use super::metrics::IpCounts;
use super::state::{EniMeta, NodeState};
use super::{SharedMode, NODE_ANNOTATION};
use crate::eni::request::{bound_node, terminal};
use ipam::allocation::PodAllocation;
use ipam::eni::{gc_plan, is_owned, is_shared, node_of, tag, OwnedEniView};
use ipam::ids::{EniId, InstanceId};
use ipam::pool::{plan_pool, watermarks, PoolAction};
use ipam::provider_id::instance_from_provider_id;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::reflector::ObjectRef;
use kube::ResourceExt;
use providers::model::{Eni, EniFilter, EniStatus, Instance};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::net::Ipv4Addr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Nodes whose pools change at once (each one action at a time).
const CONCURRENT_NODES: usize = 64;

/// What the loop keeps between rounds.
#[derive(Default)]
struct Round {
    next_sync: Option<Instant>,
    /// Nodes whose describe failed: not before this instant again.
    describe_backoff: HashMap<String, (Instant, u32)>,
    /// Shared ENIs of ours no node holds, seen in the previous listing.
    orphans_seen: HashSet<EniId>,
    /// Nodes whose annotation for the node half is written.
    annotated: HashSet<String>,
}

pub(super) async fn run(mode: Arc<SharedMode>, shutdown: CancellationToken) {
    let slots = Arc::new(Semaphore::new(CONCURRENT_NODES));
    let mut round = Round::default();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = mode.wake.notified() => {}
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
        let now = mode.ctx.clock.now();
        tracing::trace!("shared pool round");
        open_nodes(&mode, &mut round, now).await;
        let unsynced = mode.pools.nodes.lock().values().any(|s| !s.synced);
        if unsynced || round.next_sync.is_none_or(|t| now >= t) {
            match sync(&mode, &mut round).await {
                Ok(()) => {
                    let every =
                        Duration::from_secs(mode.ctx.config.shared_eni.pool_sync_seconds.into());
                    round.next_sync = Some(now + every);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "listing shared ENIs failed; retrying");
                    round.next_sync = Some(now + Duration::from_secs(5));
                }
            }
        }
        if mode.pods_listed.load(Ordering::Acquire) {
            sweep(&mode, now);
            plan(&mode, &slots, now);
        }
        export(&mode);
        tracing::trace!(
            took_ms = now.elapsed().as_millis() as u64,
            "shared pool round done"
        );
    }
}

/// Books for every node in shared mode that has none; the books of nodes
/// that left (deleted, or no longer selected) are closed.
async fn open_nodes(mode: &Arc<SharedMode>, round: &mut Round, now: Instant) {
    let selected: Vec<Arc<Node>> = mode
        .nodes
        .state()
        .into_iter()
        .filter(|n| mode.node_selected(n))
        .collect();
    let names: HashSet<String> = selected.iter().map(|n| n.name_any()).collect();
    {
        let mut nodes = mode.pools.nodes.lock();
        nodes.retain(|name, st| names.contains(name) || st.busy);
    }
    round.annotated.retain(|n| names.contains(n));
    round.describe_backoff.retain(|n, _| names.contains(n));
    let new: Vec<Arc<Node>> = {
        let nodes = mode.pools.nodes.lock();
        selected
            .iter()
            .filter(|n| !nodes.contains_key(&n.name_any()))
            .filter(|n| {
                round
                    .describe_backoff
                    .get(&n.name_any())
                    .is_none_or(|(t, _)| now >= *t)
            })
            .cloned()
            .collect()
    };
    let opened = open_batch(mode, &new).await;
    let mut joined: HashSet<String> = HashSet::new();
    for (node, result) in new.iter().zip(opened) {
        let name = node.name_any();
        match result {
            Ok(st) => {
                round.describe_backoff.remove(&name);
                warn_max_pods(mode, node, &st).await;
                mode.pools.nodes.lock().insert(name.clone(), st);
                joined.insert(name);
            }
            Err(why) => {
                let tries = round.describe_backoff.get(&name).map_or(0, |b| b.1) + 1;
                let wait = Duration::from_secs(2u64.saturating_pow(tries.min(8)));
                round
                    .describe_backoff
                    .insert(name.clone(), (now + wait, tries));
                tracing::warn!(node = %name, error = %why, "cannot open the node's shared pool yet");
                mode.ctx
                    .events
                    .node(
                        &name,
                        true,
                        "SharedPoolUnavailable",
                        "DescribeInstance",
                        why,
                    )
                    .await;
            }
        }
    }
    send_back_pods_of(mode, &joined);
    for node in &selected {
        let name = node.name_any();
        if round.annotated.contains(&name) {
            continue;
        }
        if node.annotations().get(NODE_ANNOTATION).map(String::as_str) == Some("true")
            || annotate(mode, &name).await
        {
            round.annotated.insert(name);
        }
    }
}

/// The pods not yet running on nodes whose books just opened go through
/// the pod reconciler again: one looked at before its node was in shared
/// mode (a label added after it was bound) would otherwise wait for a
/// change of its own. Running pods have their network already.
fn send_back_pods_of(mode: &SharedMode, joined: &HashSet<String>) {
    if joined.is_empty() {
        return;
    }
    for pod in mode.pods.state() {
        let running = pod.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running");
        if bound_node(&pod).is_some_and(|n| joined.contains(n)) && !running && !terminal(&pod) {
            let _ = mode.retry.send(ObjectRef::from_obj(pod.as_ref()));
        }
    }
}

/// Books for `nodes`, in order: their instances described in as few
/// calls as the cloud allows (one `DescribeInstances` covers 100 instances
/// on Alibaba, 1,000 on EC2), so a hundred nodes joining cost one call, not
/// a hundred; the instance types' limits come from the backend's cache.
async fn open_batch(mode: &SharedMode, nodes: &[Arc<Node>]) -> Vec<Result<NodeState, String>> {
    let instances: Vec<Result<InstanceId, String>> = nodes.iter().map(|n| instance_of(n)).collect();
    let ids: Vec<InstanceId> = instances
        .iter()
        .filter_map(|i| i.as_ref().ok().cloned())
        .collect();
    let described: Result<HashMap<InstanceId, Instance>, String> = if ids.is_empty() {
        Ok(HashMap::new())
    } else {
        mode.ctx
            .cloud
            .describe_instances(&ids)
            .await
            .map(|found| found.into_iter().map(|i| (i.id.clone(), i)).collect())
            .map_err(|e| format!("describing the nodes' instances: {e}"))
    };
    let mut out = Vec::with_capacity(nodes.len());
    for instance in instances {
        let opened = match (instance, &described) {
            (Err(why), _) => Err(why),
            (Ok(_), Err(why)) => Err(why.clone()),
            (Ok(id), Ok(found)) => match found.get(&id) {
                Some(i) => open_node(mode, i).await,
                None => Err(format!("instance {id} is not in the cloud's answer (deleted, or in another region or account)")),
            },
        };
        out.push(opened);
    }
    out
}

/// The instance behind a node, from its `spec.providerID`.
fn instance_of(node: &Node) -> Result<InstanceId, String> {
    let provider_id = crate::kubeutil::provider_id(node)
        .ok_or_else(|| "spec.providerID is not set yet".to_owned())?;
    instance_from_provider_id(provider_id)
        .map_err(|e| format!("spec.providerID {provider_id:?}: {e}"))
}

/// A node's books, opened from its described instance.
async fn open_node(mode: &SharedMode, described: &Instance) -> Result<NodeState, String> {
    let limits = mode
        .ctx
        .cloud
        .instance_type_limits(&described.instance_type)
        .await
        .map_err(|e| format!("limits of instance type {}: {e}", described.instance_type))?;
    let mut st = NodeState::new(
        described.id.clone(),
        described.zone.clone(),
        limits.max_enis,
        limits.ipv4_per_eni,
    );
    st.other_enis = u32::try_from(described.enis.len()).unwrap_or(u32::MAX);
    Ok(st)
}

/// The node half reads this annotation to know the node's pods wait for a
/// shared allocation.
async fn annotate(mode: &SharedMode, node: &str) -> bool {
    let nodes: Api<Node> = Api::all(mode.ctx.client.clone());
    let patch = serde_json::json!({"metadata": {"annotations": {NODE_ANNOTATION: "true"}}});
    match nodes
        .patch(node, &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        Ok(_) => true,
        Err(e) => {
            tracing::warn!(node, error = %e, "cannot annotate the node for shared mode");
            false
        }
    }
}

/// A Warning when the kubelet may start more pods than the node has IPs for.
async fn warn_max_pods(mode: &SharedMode, node: &Node, st: &NodeState) {
    let cfg = &mode.ctx.config.shared_eni;
    let max = ipam::eni::max_pods(st.max_enis, st.ips_per_eni + 1, cfg.max_enis, 2);
    let capacity = node
        .status
        .as_ref()
        .and_then(|s| s.capacity.as_ref())
        .and_then(|c| c.get("pods"))
        .and_then(|q| q.0.parse::<u32>().ok());
    if let Some(pods) = capacity.filter(|p| *p > max) {
        mode.ctx
            .events
            .node(
                &node.name_any(),
                true,
                "MaxPodsAboveIPs",
                "CheckMaxPods",
                format!(
                    "status.capacity.pods is {pods} but shared ENIs give this node {} pod IPs ({} ENIs x {} IPs) + 2 host-network pods = {max}: set the kubelet's --max-pods to {max} (vpc-eni-controller max-pods prints it), or pods beyond it wait for an IP",
                    max.saturating_sub(2),
                    cfg.max_enis.min(st.max_enis.saturating_sub(1)),
                    st.ips_per_eni
                ),
            )
            .await;
    }
}

/// Every shared ENI of the cluster, in one listing, into every node's books.
async fn sync(mode: &Arc<SharedMode>, round: &mut Round) -> Result<(), providers::CloudError> {
    let cluster = mode.ctx.cluster();
    let filter = EniFilter {
        tags: BTreeMap::from([
            (tag::CREATOR.to_owned(), tag::CREATOR_VALUE.to_owned()),
            (tag::CLUSTER.to_owned(), cluster.as_str().to_owned()),
            (tag::MODE.to_owned(), tag::MODE_SHARED.to_owned()),
        ]),
        ..EniFilter::default()
    };
    let mut listed = mode.ctx.cloud.describe_enis(&filter).await?;
    // A backend that ignored the filter must not make us touch others' ENIs.
    listed.retain(|e| is_owned(&e.tags, cluster) && is_shared(&e.tags));
    let now = mode.ctx.clock.now();
    let cooldown = mode.ctx.config.shared_eni.ip_cooldown();
    let mut by_instance: HashMap<InstanceId, Vec<&Eni>> = HashMap::new();
    for e in &listed {
        if let (Some(i), EniStatus::InUse) = (&e.instance_id, e.status) {
            by_instance.entry(i.clone()).or_default().push(e);
        }
    }
    let mut metas: Vec<(String, Eni)> = Vec::new();
    let mut adopt: Vec<(String, Eni)> = Vec::new();
    let mut held: HashSet<EniId> = HashSet::new();
    let mut lost_pods: HashSet<String> = HashSet::new();
    {
        let mut nodes = mode.pools.nodes.lock();
        for (name, st) in nodes.iter_mut() {
            if st.busy {
                // An action is changing this node: its own results are in
                // the books; the next listing looks again.
                held.extend(st.enis.keys().cloned());
                held.extend(
                    listed
                        .iter()
                        .filter(|e| node_of(&e.tags) == Some(name.as_str()))
                        .map(|e| e.id.clone()),
                );
                continue;
            }
            let mine = by_instance.get(&st.instance).cloned().unwrap_or_default();
            let ids: BTreeSet<EniId> = mine.iter().map(|e| e.id.clone()).collect();
            for e in &mine {
                held.insert(e.id.clone());
                st.missing.remove(&e.id);
                if !st.enis.contains_key(&e.id) {
                    metas.push((name.clone(), (*e).clone()));
                    continue;
                }
                lost_pods.extend(st.ledger.sync_eni(
                    &e.id,
                    st.ips_per_eni,
                    &e.secondary_ips,
                    now.into_std(),
                    cooldown,
                ));
            }
            // An ENI in the books that two listings in a row lack is gone.
            let absent: Vec<EniId> = st
                .enis
                .keys()
                .filter(|id| !ids.contains(*id))
                .cloned()
                .collect();
            for id in absent {
                if st.missing.insert(id.clone()) {
                    held.insert(id);
                    continue;
                }
                st.missing.remove(&id);
                st.enis.remove(&id);
            }
            let keep: BTreeSet<EniId> = st.enis.keys().cloned().collect();
            lost_pods.extend(st.ledger.retain_enis(&keep));
            // Created for this node and not attached (a create whose attach
            // never came): attach it now.
            for e in listed.iter().filter(|e| {
                node_of(&e.tags) == Some(name.as_str())
                    && e.instance_id.is_none()
                    && e.status == EniStatus::Available
            }) {
                held.insert(e.id.clone());
                adopt.push((name.clone(), e.clone()));
            }
        }
    }
    {
        // Whatever is on its way to or from a node we keep (attaching,
        // detaching, just created) is that node's, not an orphan.
        let mut nodes = mode.pools.nodes.lock();
        let mut pending: HashMap<String, u32> = HashMap::new();
        for e in &listed {
            let Some(name) = node_of(&e.tags) else {
                continue;
            };
            let Some(st) = nodes.get(name) else {
                continue;
            };
            if e.instance_id.as_ref().is_none_or(|i| *i == st.instance) {
                held.insert(e.id.clone());
                if !st.enis.contains_key(&e.id) {
                    *pending.entry(name.to_owned()).or_default() += 1;
                }
            }
        }
        for (name, st) in nodes.iter_mut() {
            if !st.busy {
                st.pending = pending.get(name).copied().unwrap_or(0);
            }
        }
    }
    let mut incomplete: HashSet<String> = HashSet::new();
    // The annotation needs each ENI's subnet: from the subnet cache.
    for (node, eni) in metas {
        let meta = match mode
            .subnets
            .get(mode.ctx.cloud.as_ref(), &eni.subnet_id)
            .await
        {
            Ok(s) => EniMeta {
                mac: eni.mac.clone(),
                subnet_id: s.id.clone(),
                subnet_cidr: s.cidr.to_string(),
                gateway: s.gateway.to_string(),
            },
            Err(e) => {
                // Not in the books yet: the node hands out nothing until it
                // is, so a pod's recorded IP on this ENI is never lost.
                tracing::warn!(eni = %eni.id, error = %e, "subnet of a shared ENI unknown; its node waits");
                incomplete.insert(node);
                continue;
            }
        };
        let mut nodes = mode.pools.nodes.lock();
        if let Some(st) = nodes.get_mut(&node) {
            st.enis.insert(eni.id.clone(), meta);
            lost_pods.extend(st.ledger.sync_eni(
                &eni.id,
                st.ips_per_eni,
                &eni.secondary_ips,
                now.into_std(),
                cooldown,
            ));
        }
    }
    for (node, eni) in adopt {
        actions::spawn_adopt(mode, node, eni);
    }
    {
        let mut nodes = mode.pools.nodes.lock();
        for (name, st) in nodes.iter_mut() {
            if !st.busy && !incomplete.contains(name) {
                st.synced = true;
            }
        }
    }
    retry_lost(mode, &lost_pods);
    collect_orphans(mode, round, &listed, &held).await;
    Ok(())
}

/// Pods whose IP went away get a new one.
fn retry_lost(mode: &SharedMode, lost: &HashSet<String>) {
    if lost.is_empty() {
        return;
    }
    for pod in mode.pods.state() {
        if pod.uid().is_some_and(|u| lost.contains(&u)) {
            tracing::warn!(pod = %crate::eni::request::pod_key(&pod), "shared IP of the pod vanished from its ENI; assigning another");
            let _ = mode.retry.send(ObjectRef::from_obj(pod.as_ref()));
        }
    }
}

/// Shared ENIs of ours no node's books hold (node gone or left shared
/// mode, attached to another instance): released when no live pod's
/// allocation names them, seen in two listings, and older than the GC
/// grace.
async fn collect_orphans(
    mode: &Arc<SharedMode>,
    round: &mut Round,
    listed: &[Eni],
    held: &HashSet<EniId>,
) {
    if !mode.pods_listed.load(Ordering::Acquire) {
        return;
    }
    // The same two-pass, grace-aged rule as exclusive GC, with a shared
    // ENI's own id as its owner key: it lives while a node's books hold it
    // or a live pod's allocation names it.
    let mut kept: HashSet<String> = mode
        .pods
        .state()
        .iter()
        .filter(|p| !terminal(p))
        .filter_map(|p| PodAllocation::from_annotations(p.annotations()))
        .filter(|a| a.is_shared())
        .map(|a| a.first.eni_id)
        .collect();
    kept.extend(held.iter().map(ToString::to_string));
    let views: Vec<OwnedEniView> = listed
        .iter()
        .map(|e| OwnedEniView {
            id: e.id.clone(),
            pod_uid: Some(e.id.to_string()),
            attached: e.instance_id.is_some(),
            age: e
                .created_at
                .map(|t| (chrono::Utc::now() - t).to_std().unwrap_or_default()),
        })
        .collect();
    let grace = Duration::from_secs(mode.ctx.config.eni.gc_grace_seconds.into());
    let plan = gc_plan(&views, &kept, grace, &round.orphans_seen);
    for e in listed.iter().filter(|e| plan.release_now.contains(&e.id)) {
        actions::spawn_release_orphan(mode, e.clone());
    }
    round.orphans_seen = plan.mark.into_iter().collect();
}

/// Claim the pods' annotations into fresh books; IPs of pods that went
/// start cooling; cooled IPs become free.
fn sweep(mode: &SharedMode, now: Instant) {
    let cooldown = mode.ctx.config.shared_eni.ip_cooldown();
    let mut live: HashMap<String, BTreeSet<String>> = HashMap::new();
    let mut records: HashMap<String, Vec<(String, PodAllocation)>> = HashMap::new();
    for pod in mode.pods.state() {
        let (Some(node), Some(uid)) = (bound_node(&pod), pod.uid()) else {
            continue;
        };
        if terminal(&pod) {
            continue;
        }
        live.entry(node.to_owned()).or_default().insert(uid.clone());
        if let Some(a) = PodAllocation::from_annotations(pod.annotations()) {
            if a.is_shared() && a.pod_uid.as_deref() == Some(uid.as_str()) && a.first.node == node {
                records.entry(node.to_owned()).or_default().push((uid, a));
            }
        }
    }
    let empty = BTreeSet::new();
    let mut nodes = mode.pools.nodes.lock();
    for (name, st) in nodes.iter_mut() {
        if !st.synced {
            continue;
        }
        if !st.claimed {
            for (uid, a) in records.get(name).into_iter().flatten() {
                let Ok(ip) = a.first.ip.parse::<Ipv4Addr>() else {
                    continue;
                };
                if let Err(e) = st
                    .ledger
                    .claim(uid, &EniId::new(a.first.eni_id.clone()), ip)
                {
                    tracing::warn!(node = %name, pod_uid = %uid, error = %e, "recorded shared IP not taken into the books");
                }
            }
            st.claimed = true;
        }
        let on_node = live.get(name).unwrap_or(&empty);
        st.ledger.release_all_but(on_node, now.into_std(), cooldown);
        st.ledger.tick(now.into_std());
        st.waiting.retain(|uid, _| on_node.contains(uid));
    }
    let all: HashSet<&String> = live.values().flatten().collect();
    mode.pools
        .first_seen
        .lock()
        .retain(|uid, _| all.contains(uid));
}

/// Plan every idle node's pool and start the actions.
fn plan(mode: &Arc<SharedMode>, slots: &Arc<Semaphore>, now: Instant) {
    let cfg = &mode.ctx.config.shared_eni;
    let per_call = mode.ctx.cloud.capabilities().max_ips_per_assign.max(1);
    let delay = cfg.excess_release_delay();
    let mut nodes = mode.pools.nodes.lock();
    for (name, st) in nodes.iter_mut() {
        if st.busy || !st.synced || !st.claimed {
            continue;
        }
        let (free, used, cooling) = st.ledger.counts();
        let (pool_cfg, warmed) = watermarks(
            cfg.min_pool_size,
            cfg.max_pool_size,
            cfg.warm_up_size,
            st.warmed,
            free + used + cooling,
            used,
            per_call,
        );
        st.warmed = warmed;
        let attachable = st.attachable(cfg.max_enis);
        let waiting = u32::try_from(st.waiting.len()).unwrap_or(u32::MAX);
        let view = st.ledger.view(attachable, st.ips_per_eni, waiting);
        let plan = match plan_pool(&pool_cfg, &view, true) {
            Ok(p) => {
                tracing::trace!(node = %name, free, used, cooling, waiting, attachable, action = ?p.action, "pool planned");
                p
            }
            Err(e) => {
                tracing::warn!(node = %name, error = %e, "pool plan refused");
                continue;
            }
        };
        if plan.short_by > 0 && waiting > 0 && attachable == 0 {
            st.starved = Some(format!(
                "its {} shared ENIs hold all the IPs they can ({} each) and no ENI slot is left for another (sharedEni.maxEnis {}, instance type allows {} ENIs)",
                st.enis.len(),
                st.ips_per_eni,
                cfg.max_enis,
                st.max_enis
            ));
        }
        if free > 0 && !st.waiting.is_empty() {
            for (_, pod) in st.waiting.drain() {
                let _ = mode.retry.send(pod);
            }
        }
        match plan.action {
            PoolAction::Steady => st.shrink_since = None,
            PoolAction::Grow { assign, new_enis } => {
                st.shrink_since = None;
                st.busy = true;
                actions::spawn_grow(mode, slots.clone(), name.clone(), assign, new_enis);
            }
            PoolAction::Shrink {
                release,
                delete_enis,
            } => {
                let since = *st.shrink_since.get_or_insert(now);
                if now.duration_since(since) >= delay {
                    st.shrink_since = None;
                    st.busy = true;
                    actions::spawn_shrink(mode, slots.clone(), name.clone(), release, delete_enis);
                }
            }
        }
    }
}

/// Pool figures per node and per subnet.
fn export(mode: &SharedMode) {
    let nodes = mode.pools.nodes.lock();
    let mut by_node = BTreeMap::new();
    let mut by_subnet: BTreeMap<String, IpCounts> = BTreeMap::new();
    for (name, st) in nodes.iter() {
        let (free, used, cooling) = st.ledger.counts();
        by_node.insert(
            name.clone(),
            (
                IpCounts {
                    free,
                    used,
                    cooling,
                },
                u32::try_from(st.enis.len()).unwrap_or(u32::MAX),
            ),
        );
        for (id, meta) in &st.enis {
            let Some(e) = st.ledger.eni(id) else { continue };
            let c = by_subnet.entry(meta.subnet_id.to_string()).or_default();
            for s in e.ips.values() {
                match s {
                    ipam::ledger::IpState::Free => c.free += 1,
                    ipam::ledger::IpState::Used(_) => c.used += 1,
                    ipam::ledger::IpState::Cooling(_) => c.cooling += 1,
                }
            }
        }
    }
    mode.metrics.set_pools(&by_node, &by_subnet);
}
