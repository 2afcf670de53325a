//! The pod reconciler of ENI mode: gives a bound pod that asks for the
//! extended resource its ENIs, and takes them back when the pod leaves.
//! Observe the ENIs tagged with the pod's uid, plan with
//! `ipam::eni::plan_pod_enis`, apply through [`Lifecycle`](super::lifecycle),
//! record (finalizer, annotation, Events). Because every pass starts from
//! what the cloud holds for the pod, a crash at any step is resumed, never
//! doubled. kube's `Controller` runs different pods in parallel and one pod
//! at a time.

use super::error::{Phase, PodError};
use super::request::{bound_node, leaving, pod_key, requested};
use super::steps::Step;
use super::{record, EniMode};
use ipam::allocation::{EniAllocation, PodAllocation, RELEASE_FINALIZER};
use ipam::eni::{
    allocation_intact, create_token_index, eni_client_token, owned_eni_tags, plan_pod_enis,
    PodEniView, PodRef,
};
use ipam::ids::{InstanceId, ZoneId};
use ipam::provider_id::instance_from_provider_id;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, EvictParams};
use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;
use kube::ResourceExt;
use providers::model::{CreateEniRequest, Eni};
use providers::{ErrorKind, LimitKind};
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

/// What the pod reconciler keeps between passes of one leading term.
#[derive(Default)]
pub(super) struct State {
    /// pod uid -> consecutive failures (backoff).
    failures: crate::tasks::Failures<String>,
    /// pod uid -> since when its node has failed it without a break.
    unservable: parking_lot::Mutex<std::collections::HashMap<String, tokio::time::Instant>>,
    /// Pod uids whose written allocation GC found broken.
    suspects: parking_lot::Mutex<HashSet<String>>,
    /// Pod uids whose annotation this replica wrote and the pod watch has
    /// not shown yet (so a stale copy does not start the allocation again).
    written: parking_lot::Mutex<HashSet<String>>,
}

impl State {
    /// GC found the pod's allocation broken: make it again.
    pub(super) fn suspect(&self, uid: String) {
        self.suspects.lock().insert(uid);
    }

    /// Forget pods that no longer exist.
    pub(super) fn retain_pods(&self, live: &HashSet<String>) {
        self.suspects.lock().retain(|u| live.contains(u));
        self.written.lock().retain(|u| live.contains(u));
        self.failures.retain(|u| live.contains(u));
        self.unservable.lock().retain(|u, _| live.contains(u));
    }

    fn forget(&self, uid: &str) {
        self.suspects.lock().remove(uid);
        self.written.lock().remove(uid);
        self.failures.forget(&uid.to_owned());
        self.unservable.lock().remove(uid);
    }
}

pub(super) async fn reconcile(pod: Arc<Pod>, mode: Arc<EniMode>) -> Result<Action, PodError> {
    let started = mode.ctx.clock.now();
    let result = reconcile_pod(&pod, &mode).await;
    mode.ctx
        .metrics
        .reconciled("eni_pod", result.is_ok(), started.elapsed());
    let uid = pod.uid().unwrap_or_default();
    match &result {
        Ok(_) => {
            mode.allocation.failures.forget(&uid);
            mode.allocation.unservable.lock().remove(&uid);
        }
        Err(e) => {
            let (reason, kind) = (e.event_reason(), e.metric_label());
            mode.ctx.metrics.eni_pod_error(reason, kind);
            tracing::warn!(pod = %pod_key(&pod), error = %e, reason, kind, "ENI work failed");
            mode.ctx
                .events
                .publish(
                    &crate::events::object_ref(pod.as_ref()),
                    true,
                    reason,
                    e.event_action(),
                    e.to_string(),
                )
                .await;
            if !e.node_cannot_serve() {
                mode.allocation.unservable.lock().remove(&uid);
            } else {
                let now = mode.ctx.clock.now();
                let since = *mode
                    .allocation
                    .unservable
                    .lock()
                    .entry(uid.clone())
                    .or_insert(now);
                let limit = Duration::from_secs(mode.ctx.config.eni.evict_after_seconds.into());
                let failing = now.duration_since(since);
                if ipam::eni::give_up_on_node(failing, limit) {
                    give_up(&pod, &mode, e, failing).await;
                    mode.allocation.unservable.lock().remove(&uid);
                }
            }
        }
    }
    result
}

/// The pod's node has failed it for `failing` without a break, for reasons
/// only a change on the node or its subnets can mend: a pod owned by a
/// controller is evicted, so a new one is made and scheduled where ENIs are
/// to be had; a bare pod is told so plainly and left for its owner to move.
async fn give_up(pod: &Pod, mode: &EniMode, last: &PodError, failing: Duration) {
    let failing = failing.as_secs();
    let node = bound_node(pod).unwrap_or("?");
    let key = pod_key(pod);
    let owned = pod
        .owner_references()
        .iter()
        .any(|o| o.controller == Some(true));
    let regarding = crate::events::object_ref(pod);
    if !owned {
        let note = format!(
            "node {node} has failed this pod for {failing}s ({last}); it has no controller to make it again elsewhere: delete it, or free an ENI slot or subnet address on node {node}"
        );
        mode.ctx
            .events
            // An action of its own, so this note is not read as one more of
            // the node's AllocIPFailed notes on the pod.
            .publish(&regarding, true, "AllocIPFailed", "GiveUpOnNode", note)
            .await;
        return;
    }
    let pods: Api<Pod> = Api::namespaced(
        mode.ctx.client.clone(),
        &pod.namespace().unwrap_or_default(),
    );
    match pods.evict(&pod.name_any(), &EvictParams::default()).await {
        Ok(_) => {
            tracing::warn!(pod = %key, node, failing, "evicted: its node cannot give it an ENI");
            mode.ctx
                .events
                .publish(
                    &regarding,
                    true,
                    "AllocIPFailed",
                    "EvictPod",
                    format!(
                        "node {node} has failed this pod for {failing}s ({last}); evicted it so its controller makes a new one the scheduler can place elsewhere"
                    ),
                )
                .await;
        }
        Err(e) => {
            tracing::warn!(pod = %key, error = %e, "could not evict a pod its node cannot serve")
        }
    }
}

pub(super) fn error_policy(pod: Arc<Pod>, error: &PodError, mode: Arc<EniMode>) -> Action {
    match error.retry() {
        None => Action::await_change(),
        Some(backoff) => Action::requeue(
            mode.allocation
                .failures
                .failed(pod.uid().unwrap_or_default(), backoff),
        ),
    }
}

async fn reconcile_pod(pod: &Pod, mode: &EniMode) -> Result<Action, PodError> {
    let uid = pod.uid().unwrap_or_default();
    if leaving(pod) {
        if pod.finalizers().iter().any(|f| f == RELEASE_FINALIZER) {
            release_pod(pod, mode).await?;
        }
        mode.allocation.forget(&uid);
        return Ok(Action::await_change());
    }
    let need = requested(pod, &mode.resource).map_err(PodError::BadRequest)?;
    let Some(node) = bound_node(pod).filter(|_| need > 0) else {
        return Ok(Action::await_change());
    };
    let annotation = PodAllocation::from_annotations(pod.annotations());
    let has_finalizer = pod.finalizers().iter().any(|f| f == RELEASE_FINALIZER);
    let vouched = annotation
        .as_ref()
        .is_some_and(|a| a.vouched_for(has_finalizer, node));
    if !mode.allocation.suspects.lock().contains(&uid) {
        if vouched {
            mode.allocation.written.lock().remove(&uid);
            return Ok(Action::await_change());
        }
        if mode.allocation.written.lock().contains(&uid) {
            // Our annotation is written but the watch has not shown it yet.
            return Ok(Action::await_change());
        }
    }
    allocate(pod, mode, need, node, annotation).await?;
    mode.allocation.suspects.lock().remove(&uid);
    mode.allocation.written.lock().insert(uid);
    Ok(Action::await_change())
}

/// Where a pod's ENIs go: the node's instance and zone, and how many of the
/// resource the node offers in all.
struct Target {
    node: String,
    instance: InstanceId,
    zone: ZoneId,
    allocatable: u32,
}

async fn target(mode: &EniMode, node_name: &str) -> Result<Target, PodError> {
    let blocked = |m: String| PodError::blocked(Phase::Allocate, m);
    let node = match mode.node_store.get(&ObjectRef::<Node>::new(node_name)) {
        Some(n) => n,
        None => Arc::new(
            mode.nodes
                .get_opt(node_name)
                .await
                .map_err(PodError::kube(Phase::Allocate))?
                .ok_or_else(|| blocked(format!("node {node_name} does not exist")))?,
        ),
    };
    let provider_id = crate::kubeutil::provider_id(&node).unwrap_or_default();
    let instance = instance_from_provider_id(provider_id).map_err(|e| {
        blocked(format!(
            "node {node_name} has no usable spec.providerID ({e}): cannot tell which instance to attach to"
        ))
    })?;
    let zone = match crate::kubeutil::zone(&node) {
        Some(z) => ZoneId::new(z),
        None => {
            mode.ctx
                .cloud
                .describe_instance(&instance)
                .await
                .map_err(PodError::cloud(Phase::Allocate))?
                .zone
        }
    };
    let allocatable = allocatable(&node, &mode.resource);
    Ok(Target {
        node: node_name.to_owned(),
        instance,
        zone,
        allocatable,
    })
}

/// How many of `resource` the node offers in all.
fn allocatable(node: &Node, resource: &str) -> u32 {
    node.status
        .as_ref()
        .and_then(|s| s.allocatable.as_ref())
        .and_then(|a| a.get(resource))
        .and_then(|q| q.0.parse::<u32>().ok())
        .unwrap_or(0)
}

/// Whether the node offers `need` in all, asking the apiserver when the
/// cached node says no (the cache can lag behind the capacity the scheduler
/// already saw).
async fn node_offers(mode: &EniMode, target: &Target, need: u32) -> Result<u32, PodError> {
    if need <= target.allocatable {
        return Ok(target.allocatable);
    }
    let fresh = mode
        .nodes
        .get(&target.node)
        .await
        .map_err(PodError::kube(Phase::Allocate))?;
    Ok(allocatable(&fresh, &mode.resource))
}

async fn allocate(
    pod: &Pod,
    mode: &EniMode,
    need: u32,
    node_name: &str,
    annotation: Option<PodAllocation>,
) -> Result<(), PodError> {
    let key = pod_key(pod);
    let uid = pod.uid().unwrap_or_default();
    let target = target(mode, node_name).await?;
    let offered = node_offers(mode, &target, need).await?;
    if need > offered {
        // Only a pod bound without the scheduler (spec.nodeName preset) gets
        // here: refuse before anything is made, or it drains the subnet and
        // the account's ENI quota for ENIs that can never attach.
        return Err(PodError::unservable(format!(
            "the pod asks for {need} {} but node {} offers {} in all (status.allocatable); no ENI is made for it",
            mode.resource, target.node, offered
        )));
    }
    record::add_finalizer(&mode.ctx.client, pod).await?;
    mode.lifecycle
        .steps()
        .reached(Step::FinalizerAdded, &key)
        .await;

    // Observe.
    let annotated = annotation
        .as_ref()
        .map(PodAllocation::eni_ids)
        .unwrap_or_default();
    // The annotated ENIs are looked up by id too: a listing by tag can lag
    // behind a create, and a missed ENI would be made a second time.
    let existing = mode
        .lifecycle
        .of_pod(&uid, &annotated)
        .await
        .map_err(PodError::cloud(Phase::Allocate))?;
    let views: Vec<PodEniView> = existing
        .iter()
        .map(|e| PodEniView {
            id: e.id.clone(),
            attached_to: e.instance_id.clone(),
            annotated: annotated.contains(&e.id),
        })
        .collect();
    let mut generation = annotation.as_ref().map(|a| a.generation).unwrap_or(0);
    if annotation.is_some() {
        if allocation_intact(&annotated, &target.instance, &views) {
            return Ok(());
        }
        generation = generation.saturating_add(1);
        tracing::warn!(pod = %key, "allocated ENI vanished or moved; making the allocation again");
    }

    // Plan and apply.
    let plan = plan_pod_enis(need, &target.instance, &views);
    for id in &plan.release {
        if let Some(eni) = existing.iter().find(|e| &e.id == id) {
            mode.lifecycle.release(eni, &key, false).await?;
        }
    }
    let mut done = Vec::with_capacity(need as usize);
    for id in &plan.keep {
        if let Some(eni) = existing.iter().find(|e| &e.id == id) {
            done.push(attach(mode, eni.clone(), &target, &key).await?);
        }
    }
    create_missing(pod, mode, &target, need, generation, &mut done).await?;

    record_allocation(pod, mode, &target, &done, generation).await
}

/// Write the allocation the node half reads, and tell the pod.
async fn record_allocation(
    pod: &Pod,
    mode: &EniMode,
    target: &Target,
    done: &[Eni],
    generation: u32,
) -> Result<(), PodError> {
    let key = pod_key(pod);
    let mut entries = Vec::with_capacity(done.len());
    for eni in done {
        let subnet = mode
            .subnets
            .get(mode.ctx.cloud.as_ref(), &eni.subnet_id)
            .await?;
        entries.push(EniAllocation {
            eni_id: eni.id.to_string(),
            mac: eni.mac.clone(),
            ip: eni.primary_ip.to_string(),
            subnet_id: eni.subnet_id.to_string(),
            subnet_cidr: subnet.cidr.to_string(),
            gateway: subnet.gateway.to_string(),
            node: target.node.clone(),
        });
    }
    let allocation = PodAllocation::new(entries, generation)
        .ok_or_else(|| PodError::BadRequest("no ENI to record (the pod asked for 0)".into()))?;
    record::write_allocation(&mode.ctx.client, pod, &allocation).await?;
    mode.lifecycle.steps().reached(Step::Annotated, &key).await;
    let ids: Vec<String> = allocation
        .all()
        .iter()
        .map(|e| format!("{} (IP {}, vSwitch {})", e.eni_id, e.ip, e.subnet_id))
        .collect();
    mode.ctx
        .events
        .publish(
            &crate::events::object_ref(pod),
            false,
            "AllocIPSucceed",
            "AllocateENI",
            format!("Allocated ENI {} on node {}", ids.join(", "), target.node),
        )
        .await;
    tracing::info!(pod = %key, enis = ?ids, node = %target.node, "ENI allocated");
    Ok(())
}

/// Create and attach ENIs, one at a time, until the pod holds `need`
/// attached: a create that cannot attach stops the allocation before the
/// next is made. A token can hand back an ENI we already hold (its create
/// answered before, the listing missed it): then the next slot is tried.
async fn create_missing(
    pod: &Pod,
    mode: &EniMode,
    target: &Target,
    need: u32,
    generation: u32,
    mine: &mut Vec<Eni>,
) -> Result<(), PodError> {
    let key = pod_key(pod);
    let mut slot = u32::try_from(mine.len()).unwrap_or(u32::MAX);
    let mut tries = 0u64;
    while (mine.len() as u64) < u64::from(need) {
        tries += 1;
        if tries > 2 * u64::from(need.max(1)) {
            return Err(PodError::blocked(
                Phase::Allocate,
                "could not create the ENIs: every create token answered with an ENI the pod already holds",
            ));
        }
        let eni = create_eni(mode, pod, target, generation, slot).await?;
        slot = slot.saturating_add(1);
        if mine.iter().any(|e| e.id == eni.id) {
            continue;
        }
        mode.lifecycle.created(&key).await;
        mine.push(attach(mode, eni, target, &key).await?);
    }
    Ok(())
}

async fn create_eni(
    mode: &EniMode,
    pod: &Pod,
    target: &Target,
    generation: u32,
    slot: u32,
) -> Result<Eni, PodError> {
    let config = &mode.ctx.config.eni;
    let subnet = mode
        .subnets
        .choose(mode.ctx.cloud.as_ref(), &target.zone, &config.subnets)
        .await?;
    let pod_ref = PodRef {
        namespace: pod.namespace().unwrap_or_default(),
        name: pod.name_any(),
        uid: pod.uid().unwrap_or_default(),
    };
    let mut tags = config.tags.clone();
    tags.extend(owned_eni_tags(mode.ctx.cluster(), &pod_ref, &target.node));
    let request = CreateEniRequest {
        subnet_id: subnet.clone(),
        security_groups: config.security_groups.clone(),
        secondary_ip_count: 0,
        tags,
        description: format!(
            "vpc-eni-controller: exclusive ENI of pod {}/{}",
            pod_ref.namespace, pod_ref.name
        ),
        idempotency_token: eni_client_token(&pod_ref.uid, create_token_index(generation, slot)),
    };
    match mode.lifecycle.create(&request, &pod_ref.name).await {
        Ok(eni) => {
            mode.subnets.took_one(&subnet);
            Ok(eni)
        }
        Err(e) => {
            mode.subnets.create_failed(&subnet, &target.zone, &e);
            Err(PodError::cloud(Phase::Allocate)(e))
        }
    }
}

async fn attach(mode: &EniMode, eni: Eni, target: &Target, key: &str) -> Result<Eni, PodError> {
    mode.lifecycle
        .attach(eni, &target.instance, key)
        .await
        .map_err(|e| {
            if e.kind
                == (ErrorKind::LimitExceeded {
                    what: LimitKind::EnisPerInstance,
                })
            {
                // The node took more ENIs than it advertised (someone else
                // attached one): recount its capacity.
                mode.capacity.invalidate(&target.node);
            }
            PodError::cloud(Phase::Allocate)(e)
        })
}

async fn release_pod(pod: &Pod, mode: &EniMode) -> Result<(), PodError> {
    let key = pod_key(pod);
    let annotated = PodAllocation::from_annotations(pod.annotations())
        .map(|a| a.eni_ids())
        .unwrap_or_default();
    let enis = mode
        .lifecycle
        .of_pod(&pod.uid().unwrap_or_default(), &annotated)
        .await
        .map_err(PodError::cloud(Phase::Release))?;
    for eni in enis {
        mode.lifecycle.release(&eni, &key, false).await?;
    }
    record::remove_finalizer(&mode.ctx.client, pod).await
}
