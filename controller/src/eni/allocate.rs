//! Gives pods their ENIs and takes them back. One reconcile per pod (kube's
//! `Controller` runs different pods in parallel and one pod at a time):
//! observe the ENIs tagged with the pod's uid, plan with
//! `ipam::eni::plan_pod_enis`, apply (create, attach, wait, or detach,
//! wait, delete), record (annotation, finalizer, Events). Because every
//! pass starts from what the cloud holds for the pod, a crash at any step
//! is resumed, never doubled.

use super::annotation::{EniAllocation, PodAllocation, ALLOCATION_ANNOTATION, RELEASE_FINALIZER};
use super::capacity;
use super::steps::Step;
use super::Shared;
use ipam::eni::{
    allocation_intact, create_token_index, eni_client_token, is_owned, owned_eni_tags,
    plan_pod_enis, pod_eni_request, tag, ContainerAsk, PodEniView, PodRef,
};
use ipam::ids::{EniId, InstanceId, SubnetId, ZoneId};
use ipam::provider_id::instance_from_provider_id;
use ipam::subnet::{choose_subnet, SubnetView};
use k8s_openapi::api::core::v1::{Container, Node, Pod};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;
use kube::ResourceExt;
use providers::model::{CreateEniRequest, Eni, EniFilter, EniStatus, Subnet};
use providers::{CloudError, ErrorKind, LimitKind};
use serde_json::json;
use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

const SUBNET_CACHE_TTL: Duration = Duration::from_secs(30);
const MIN_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(120);

/// A pod's allocation or release that did not finish; the message is what
/// the pod's Warning Event says.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct PodError {
    pub releasing: bool,
    pub message: String,
    /// Whether retrying can help (a bad request count cannot).
    pub retry: bool,
    /// A kube write was refused because our copy of the pod was stale.
    pub stale: bool,
}

impl PodError {
    fn alloc(message: impl Into<String>) -> Self {
        Self {
            releasing: false,
            message: message.into(),
            retry: true,
            stale: false,
        }
    }
}

fn cloud_err(releasing: bool) -> impl Fn(CloudError) -> PodError {
    move |e| PodError {
        releasing,
        message: e.to_string(),
        retry: true,
        stale: false,
    }
}

fn kube_err(releasing: bool) -> impl Fn(kube::Error) -> PodError {
    move |e| PodError {
        releasing,
        message: format!("kube API: {e}"),
        retry: true,
        stale: false,
    }
}

/// How many of the resource the pod asks for (`ipam::eni::pod_eni_request`
/// decides), or an error naming the container with a bad quantity.
pub fn requested(pod: &Pod, resource: &str) -> Result<u32, String> {
    let Some(spec) = pod.spec.as_ref() else {
        return Ok(0);
    };
    let init = spec.init_containers.as_deref().unwrap_or_default();
    let apps: Vec<ContainerAsk<'_>> = spec
        .containers
        .iter()
        .map(|c| container_ask(c, resource))
        .collect();
    let inits: Vec<ContainerAsk<'_>> = init.iter().map(|c| container_ask(c, resource)).collect();
    pod_eni_request(&apps, &inits).map_err(|e| {
        let list = if e.init { init } else { &spec.containers };
        let name = list
            .get(e.container)
            .map(|c| c.name.as_str())
            .unwrap_or("?");
        format!("container {name}: resources.limits[{resource}] = {e}")
    })
}

fn container_ask<'a>(c: &'a Container, resource: &str) -> ContainerAsk<'a> {
    let get = |m: Option<&'a BTreeMap<String, Quantity>>| {
        m.and_then(|m| m.get(resource)).map(|q| q.0.as_str())
    };
    let r = c.resources.as_ref();
    ContainerAsk {
        limit: get(r.and_then(|r| r.limits.as_ref())),
        request: get(r.and_then(|r| r.requests.as_ref())),
    }
}

fn pod_key(pod: &Pod) -> String {
    format!("{}/{}", pod.namespace().unwrap_or_default(), pod.name_any())
}

/// A pod that finished (Succeeded or Failed): its ENIs go back.
pub(super) fn terminal(pod: &Pod) -> bool {
    matches!(
        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded" | "Failed")
    )
}

pub(super) async fn reconcile(pod: Arc<Pod>, ctx: Arc<Shared>) -> Result<Action, PodError> {
    let started = Instant::now();
    let uid = pod.uid().unwrap_or_default();
    let result = reconcile_inner(&pod, &ctx).await;
    ctx.metrics
        .reconciled("eni_pod", result.is_ok(), started.elapsed());
    match &result {
        Ok(_) => {
            ctx.failures.lock().remove(&uid);
        }
        Err(e) => {
            let (reason, action) = if e.releasing {
                ("ReleaseENIFailed", "ReleaseENI")
            } else {
                ("AllocIPFailed", "AllocateENI")
            };
            tracing::warn!(pod = %pod_key(&pod), error = %e.message, reason, "ENI work failed");
            ctx.events
                .publish(
                    &crate::kubeutil::object_ref(pod.as_ref()),
                    true,
                    reason,
                    action,
                    e.message.clone(),
                )
                .await;
        }
    }
    result
}

pub(super) fn error_policy(pod: Arc<Pod>, error: &PodError, ctx: Arc<Shared>) -> Action {
    if !error.retry {
        return Action::await_change();
    }
    let uid = pod.uid().unwrap_or_default();
    let mut failures = ctx.failures.lock();
    let n = failures.entry(uid).or_insert(0);
    *n = n.saturating_add(1);
    let backoff = MIN_BACKOFF
        .saturating_mul(1u32 << (*n - 1).min(8))
        .min(MAX_BACKOFF);
    Action::requeue(backoff)
}

async fn reconcile_inner(pod: &Pod, ctx: &Shared) -> Result<Action, PodError> {
    let uid = pod.uid().unwrap_or_default();
    let has_finalizer = pod.finalizers().iter().any(|f| f == RELEASE_FINALIZER);
    if pod.metadata.deletion_timestamp.is_some() || terminal(pod) {
        if has_finalizer {
            release_pod(pod, ctx).await?;
        }
        ctx.suspects.lock().remove(&uid);
        ctx.written.lock().remove(&uid);
        return Ok(Action::await_change());
    }
    let need = match requested(pod, &ctx.resource) {
        Ok(n) => n,
        Err(message) => {
            return Err(PodError {
                releasing: false,
                message,
                retry: false,
                stale: false,
            })
        }
    };
    if need == 0 {
        return Ok(Action::await_change());
    }
    let Some(node_name) = pod.spec.as_ref().and_then(|s| s.node_name.clone()) else {
        return Ok(Action::await_change());
    };
    let annotation = pod
        .annotations()
        .get(ALLOCATION_ANNOTATION)
        .and_then(|v| PodAllocation::parse(v).ok());
    let suspect = ctx.suspects.lock().contains(&uid);
    if !suspect {
        if annotation.is_some() {
            ctx.written.lock().remove(&uid);
            return Ok(Action::await_change());
        }
        if ctx.written.lock().contains(&uid) {
            // Our annotation is written but the watch has not shown it yet.
            return Ok(Action::await_change());
        }
    }
    allocate(pod, ctx, need, &node_name, annotation).await?;
    ctx.suspects.lock().remove(&uid);
    ctx.written.lock().insert(uid);
    Ok(Action::await_change())
}

/// Where a pod's ENIs go: the node's instance and zone.
struct Target {
    node: String,
    instance: InstanceId,
    zone: ZoneId,
}

async fn target(ctx: &Shared, node_name: &str) -> Result<Target, PodError> {
    let node = match ctx.node_store.get(&ObjectRef::<Node>::new(node_name)) {
        Some(n) => n,
        None => Arc::new(
            ctx.nodes
                .get_opt(node_name)
                .await
                .map_err(kube_err(false))?
                .ok_or_else(|| PodError::alloc(format!("node {node_name} does not exist")))?,
        ),
    };
    let provider_id = crate::kubeutil::provider_id(&node).unwrap_or_default();
    let instance = instance_from_provider_id(provider_id).map_err(|e| {
        PodError::alloc(format!(
            "node {node_name} has no usable spec.providerID ({e}): cannot tell which instance to attach to"
        ))
    })?;
    let zone = match crate::kubeutil::zone(&node) {
        Some(z) => ZoneId::new(z),
        None => {
            ctx.cloud
                .describe_instance(&instance)
                .await
                .map_err(cloud_err(false))?
                .zone
        }
    };
    Ok(Target {
        node: node_name.to_owned(),
        instance,
        zone,
    })
}

fn owned_filter(ctx: &Shared, uid: Option<&str>) -> EniFilter {
    let mut tags = BTreeMap::from([
        (tag::CREATOR.to_owned(), tag::CREATOR_VALUE.to_owned()),
        (tag::CLUSTER.to_owned(), ctx.cluster.as_str().to_owned()),
    ]);
    if let Some(uid) = uid {
        tags.insert(tag::POD_UID.to_owned(), uid.to_owned());
    }
    EniFilter {
        tags,
        ..EniFilter::default()
    }
}

/// Every ENI the cloud holds tagged for this pod (and truly ours).
async fn pod_enis(ctx: &Shared, uid: &str, releasing: bool) -> Result<Vec<Eni>, PodError> {
    let mut enis = ctx
        .cloud
        .describe_enis(&owned_filter(ctx, Some(uid)))
        .await
        .map_err(cloud_err(releasing))?;
    enis.retain(|e| is_owned(&e.tags, &ctx.cluster) && ipam::eni::pod_uid_of(&e.tags) == Some(uid));
    Ok(enis)
}

async fn allocate(
    pod: &Pod,
    ctx: &Shared,
    need: u32,
    node_name: &str,
    annotation: Option<PodAllocation>,
) -> Result<(), PodError> {
    let key = pod_key(pod);
    let uid = pod.uid().unwrap_or_default();
    let target = target(ctx, node_name).await?;
    add_finalizer(pod, ctx).await?;
    ctx.steps.reached(Step::FinalizerAdded, &key).await;

    let annotated: Vec<EniId> = annotation
        .as_ref()
        .map(PodAllocation::eni_ids)
        .unwrap_or_default();
    let existing = pod_enis(ctx, &uid, false).await?;
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
    let plan = plan_pod_enis(need, &target.instance, &views);
    for id in &plan.release {
        if let Some(eni) = existing.iter().find(|e| &e.id == id) {
            release_eni(ctx, eni, &key, false).await?;
        }
    }
    let mut mine: Vec<Eni> = plan
        .keep
        .iter()
        .filter_map(|id| existing.iter().find(|e| &e.id == id).cloned())
        .collect();
    // A token can hand back an ENI we already hold (its create answered
    // before, the listing missed it): then the next slot is tried.
    let mut slot = u32::try_from(mine.len()).unwrap_or(u32::MAX);
    let mut tries = 0;
    while (mine.len() as u64) < u64::from(need) {
        tries += 1;
        if tries > 2 * need.max(1) {
            return Err(PodError::alloc(
                "could not create the ENIs: every create token answered with an ENI the pod already holds",
            ));
        }
        let eni = create_eni(ctx, pod, &target, generation, slot).await?;
        slot = slot.saturating_add(1);
        if mine.iter().any(|e| e.id == eni.id) {
            continue;
        }
        ctx.steps.reached(Step::EniCreated, &key).await;
        mine.push(eni);
    }
    let mut done = Vec::with_capacity(mine.len());
    for eni in mine {
        done.push(attach(ctx, eni, &target, &key).await?);
    }
    let mut entries = Vec::with_capacity(done.len());
    for eni in &done {
        let subnet = subnet_of(ctx, &eni.subnet_id).await?;
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
        .ok_or_else(|| PodError::alloc("no ENI to record (the pod asked for 0)"))?;
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &pod.namespace().unwrap_or_default());
    let patch = json!({"metadata": {"annotations": {ALLOCATION_ANNOTATION: allocation.to_json()}}});
    pods.patch(
        &pod.name_any(),
        &PatchParams::default(),
        &Patch::Merge(&patch),
    )
    .await
    .map_err(kube_err(false))?;
    ctx.steps.reached(Step::Annotated, &key).await;
    let ids: Vec<String> = allocation
        .all()
        .iter()
        .map(|e| format!("{} (IP {}, vSwitch {})", e.eni_id, e.ip, e.subnet_id))
        .collect();
    ctx.events
        .publish(
            &crate::kubeutil::object_ref(pod),
            false,
            "AllocIPSucceed",
            "AllocateENI",
            format!("Allocated ENI {} on node {}", ids.join(", "), target.node),
        )
        .await;
    tracing::info!(pod = %key, enis = ?ids, node = %target.node, "ENI allocated");
    Ok(())
}

async fn create_eni(
    ctx: &Shared,
    pod: &Pod,
    target: &Target,
    generation: u32,
    slot: u32,
) -> Result<Eni, PodError> {
    let uid = pod.uid().unwrap_or_default();
    let subnets = zone_subnets(ctx, &target.zone).await?;
    let views: Vec<SubnetView> = subnets
        .iter()
        .map(|s| SubnetView {
            id: s.id.clone(),
            zone: s.zone.clone(),
            cidr: s.cidr,
            free_ips: s.free_ips,
        })
        .collect();
    let cooling: HashSet<SubnetId> = {
        let mut c = ctx.cooling.lock();
        c.retain(|_, until| *until > Instant::now());
        c.keys().cloned().collect()
    };
    let subnet = choose_subnet(&target.zone, &ctx.config.subnets, &views, 1, &cooling)
        .map_err(|e| PodError::alloc(e.to_string()))?;
    let pod_ref = PodRef {
        namespace: pod.namespace().unwrap_or_default(),
        name: pod.name_any(),
        uid: uid.clone(),
    };
    let mut tags = ctx.config.tags.clone();
    tags.extend(owned_eni_tags(&ctx.cluster, &pod_ref, &target.node));
    let request = CreateEniRequest {
        subnet_id: subnet.clone(),
        security_groups: ctx.config.security_groups.clone(),
        secondary_ip_count: 0,
        tags,
        description: format!(
            "vpc-eni-controller: exclusive ENI of pod {}/{}",
            pod_ref.namespace, pod_ref.name
        ),
        idempotency_token: eni_client_token(&uid, create_token_index(generation, slot)),
    };
    match ctx.cloud.create_eni(&request).await {
        Ok(eni) => {
            if let Some(s) = ctx.subnets.lock().get_mut(&subnet) {
                s.0.free_ips = s.0.free_ips.saturating_sub(1);
            }
            tracing::info!(eni = %eni.id, %subnet, pod = %pod_ref.name, "ENI created");
            Ok(eni)
        }
        Err(e) => {
            if let Some(cool) = e
                .kind
                .cool_down()
                .filter(|_| e.kind == ErrorKind::SubnetExhausted)
            {
                ctx.cooling
                    .lock()
                    .insert(subnet.clone(), Instant::now() + cool);
                ctx.zone_fetched.lock().remove(&target.zone);
            }
            Err(cloud_err(false)(e))
        }
    }
}

fn instance_lock(ctx: &Shared, instance: &InstanceId) -> Arc<tokio::sync::Mutex<()>> {
    ctx.instance_locks
        .lock()
        .entry(instance.clone())
        .or_default()
        .clone()
}

/// Attach (if not yet) and wait until in use. Attaches to one instance are
/// serialised: the cloud refuses concurrent changes to one instance's ENIs.
async fn attach(ctx: &Shared, eni: Eni, target: &Target, key: &str) -> Result<Eni, PodError> {
    if eni.instance_id.as_ref() == Some(&target.instance) && eni.status == EniStatus::InUse {
        return Ok(eni);
    }
    let lock = instance_lock(ctx, &target.instance);
    let _held = lock.lock().await;
    if eni.instance_id.is_none() {
        if let Err(e) = ctx.cloud.attach_eni(&eni.id, &target.instance).await {
            if matches!(
                e.kind,
                ErrorKind::LimitExceeded {
                    what: LimitKind::EnisPerInstance
                }
            ) {
                // The node took more ENIs than it advertised (someone else
                // attached one): recompute its capacity.
                capacity::invalidate(ctx, &target.node);
            }
            return Err(cloud_err(false)(e));
        }
        ctx.steps.reached(Step::AttachRequested, key).await;
    }
    let attached = ctx
        .waiter
        .wait(&eni.id, EniStatus::InUse)
        .await
        .map_err(cloud_err(false))?;
    ctx.steps.reached(Step::EniInUse, key).await;
    Ok(attached)
}

/// Detach (if attached), wait until available, delete. Only ever called with
/// an ENI whose tags say it is ours.
pub(super) async fn release_eni(
    ctx: &Shared,
    eni: &Eni,
    key: &str,
    gc: bool,
) -> Result<(), PodError> {
    let releasing = true;
    if !is_owned(&eni.tags, &ctx.cluster) {
        return Err(PodError {
            releasing,
            message: format!(
                "refusing to release {}: it is not tagged as this cluster's",
                eni.id
            ),
            retry: false,
            stale: false,
        });
    }
    if let Some(instance) = &eni.instance_id {
        let lock = instance_lock(ctx, instance);
        let _held = lock.lock().await;
        if eni.status != EniStatus::Detaching {
            ctx.cloud
                .detach_eni(&eni.id, instance)
                .await
                .map_err(cloud_err(releasing))?;
            ctx.steps.reached(Step::DetachRequested, key).await;
        }
        match ctx.waiter.wait(&eni.id, EniStatus::Available).await {
            Ok(_) => {}
            Err(e) if e.kind == ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(cloud_err(releasing)(e)),
        }
        ctx.steps.reached(Step::EniDetached, key).await;
    } else if eni.status == EniStatus::Detaching {
        match ctx.waiter.wait(&eni.id, EniStatus::Available).await {
            Ok(_) => {}
            Err(e) if e.kind == ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(cloud_err(releasing)(e)),
        }
    }
    ctx.cloud
        .delete_eni(&eni.id)
        .await
        .map_err(cloud_err(releasing))?;
    ctx.steps.reached(Step::EniDeleted, key).await;
    tracing::info!(eni = %eni.id, pod = key, gc, "ENI released");
    Ok(())
}

async fn release_pod(pod: &Pod, ctx: &Shared) -> Result<(), PodError> {
    let key = pod_key(pod);
    let uid = pod.uid().unwrap_or_default();
    let mut enis = pod_enis(ctx, &uid, true).await?;
    // Also look the annotated ENIs up by id: a listing by tag can lag
    // behind a create (EC2), and a missed ENI would wait for GC.
    let annotated: Vec<EniId> = pod
        .annotations()
        .get(ALLOCATION_ANNOTATION)
        .and_then(|v| PodAllocation::parse(v).ok())
        .map(|a| a.eni_ids())
        .unwrap_or_default();
    let unlisted: Vec<EniId> = annotated
        .into_iter()
        .filter(|id| !enis.iter().any(|e| &e.id == id))
        .collect();
    if !unlisted.is_empty() {
        let found = ctx
            .cloud
            .describe_enis(&EniFilter {
                eni_ids: unlisted,
                ..EniFilter::default()
            })
            .await
            .map_err(cloud_err(true))?;
        enis.extend(found.into_iter().filter(|e| {
            is_owned(&e.tags, &ctx.cluster) && ipam::eni::pod_uid_of(&e.tags) == Some(uid.as_str())
        }));
    }
    for eni in enis {
        release_eni(ctx, &eni, &key, false).await?;
    }
    remove_finalizer(pod, ctx).await
}

async fn add_finalizer(pod: &Pod, ctx: &Shared) -> Result<(), PodError> {
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &pod.namespace().unwrap_or_default());
    let mut current = pod.clone();
    for _ in 0..3 {
        if current.finalizers().iter().any(|f| f == RELEASE_FINALIZER) {
            return Ok(());
        }
        let ops = match (
            &current.metadata.finalizers,
            &current.metadata.resource_version,
        ) {
            (Some(_), _) => {
                json!([{"op": "add", "path": "/metadata/finalizers/-", "value": RELEASE_FINALIZER}])
            }
            // Creating the list replaces whatever is there: only if nobody
            // changed the pod since we read it.
            (None, Some(rv)) => json!([
                {"op": "test", "path": "/metadata/resourceVersion", "value": rv},
                {"op": "add", "path": "/metadata/finalizers", "value": [RELEASE_FINALIZER]},
            ]),
            (None, None) => {
                json!([{"op": "add", "path": "/metadata/finalizers", "value": [RELEASE_FINALIZER]}])
            }
        };
        match json_patch_pod(pod, ctx, ops, false).await {
            Err(e) if e.stale => {
                current = pods.get(&pod.name_any()).await.map_err(kube_err(false))?;
            }
            other => return other,
        }
    }
    Err(PodError::alloc(
        "could not add the finalizer: the pod kept changing under us",
    ))
}

async fn remove_finalizer(pod: &Pod, ctx: &Shared) -> Result<(), PodError> {
    let Some(i) = pod.finalizers().iter().position(|f| f == RELEASE_FINALIZER) else {
        return Ok(());
    };
    let path = format!("/metadata/finalizers/{i}");
    let ops = json!([
        {"op": "test", "path": path, "value": RELEASE_FINALIZER},
        {"op": "remove", "path": path},
    ]);
    json_patch_pod(pod, ctx, ops, true).await
}

async fn json_patch_pod(
    pod: &Pod,
    ctx: &Shared,
    ops: serde_json::Value,
    releasing: bool,
) -> Result<(), PodError> {
    let patch: json_patch::Patch = serde_json::from_value(ops).map_err(|e| PodError {
        releasing,
        message: format!("internal: bad JSON patch: {e}"),
        retry: false,
        stale: false,
    })?;
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &pod.namespace().unwrap_or_default());
    match pods
        .patch(
            &pod.name_any(),
            &PatchParams::default(),
            &Patch::Json::<()>(patch),
        )
        .await
    {
        Ok(_) => Ok(()),
        // Gone already: nothing holds it any more.
        Err(kube::Error::Api(s)) if s.code == 404 && releasing => Ok(()),
        // A `test` op saw a newer pod than ours.
        Err(kube::Error::Api(s)) if s.code == 422 || s.code == 409 => Err(PodError {
            stale: true,
            ..kube_err(releasing)(kube::Error::Api(s))
        }),
        Err(e) => Err(kube_err(releasing)(e)),
    }
}

/// The configured subnets of a zone as the cloud reports them, cached for a
/// short while (one DescribeVSwitches per zone, not one per pod).
async fn zone_subnets(ctx: &Shared, zone: &ZoneId) -> Result<Vec<Subnet>, PodError> {
    let ids = ctx.config.subnets.get(zone).cloned().unwrap_or_default();
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    // Fresh when the zone was described recently; ids the cloud did not
    // return then (deleted vSwitches) are simply absent.
    let fresh = |ctx: &Shared| -> Option<Vec<Subnet>> {
        let at = *ctx.zone_fetched.lock().get(zone)?;
        if at.elapsed() >= SUBNET_CACHE_TTL {
            return None;
        }
        let cache = ctx.subnets.lock();
        Some(
            ids.iter()
                .filter_map(|id| cache.get(id).map(|(s, _)| s.clone()))
                .collect(),
        )
    };
    if let Some(hit) = fresh(ctx) {
        return Ok(hit);
    }
    let _one_fetch = ctx.subnet_fetch.lock().await;
    if let Some(hit) = fresh(ctx) {
        return Ok(hit);
    }
    let found = ctx
        .cloud
        .describe_subnets(&ids)
        .await
        .map_err(cloud_err(false))?;
    let now = Instant::now();
    {
        let mut cache = ctx.subnets.lock();
        for id in &ids {
            cache.remove(id);
        }
        for s in &found {
            cache.insert(s.id.clone(), (s.clone(), now));
        }
    }
    ctx.zone_fetched.lock().insert(zone.clone(), now);
    Ok(found)
}

async fn subnet_of(ctx: &Shared, id: &SubnetId) -> Result<Subnet, PodError> {
    if let Some((s, _)) = ctx.subnets.lock().get(id) {
        return Ok(s.clone());
    }
    let found = ctx
        .cloud
        .describe_subnets(std::slice::from_ref(id))
        .await
        .map_err(cloud_err(false))?;
    let s = found
        .into_iter()
        .find(|s| &s.id == id)
        .ok_or_else(|| PodError::alloc(format!("subnet {id} of the ENI was not found")))?;
    ctx.subnets
        .lock()
        .insert(id.clone(), (s.clone(), Instant::now()));
    Ok(s)
}

/// The filter listing every ENI this cluster owns (for GC).
pub(super) fn all_owned_filter(ctx: &Shared) -> EniFilter {
    owned_filter(ctx, None)
}
