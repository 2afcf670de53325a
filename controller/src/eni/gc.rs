//! Garbage collection of owned ENIs, at start and every
//! `eni.gcIntervalSeconds`: one listing of every ENI tagged as this
//! cluster's, then `ipam::eni::gc_plan` decides which orphans (no live pod,
//! old enough, seen in two passes) to detach and delete. The same listing
//! finds pods whose written allocation no longer holds (ENI deleted or
//! detached behind our back); they are marked and reconciled again, which
//! makes the allocation anew.

use super::allocate::{all_owned_filter, release_eni};
use super::annotation::{PodAllocation, ALLOCATION_ANNOTATION};
use super::Shared;
use ipam::eni::{allocation_intact, gc_plan, is_owned, pod_uid_of, OwnedEniView, PodEniView};
use ipam::ids::{EniId, InstanceId};
use ipam::provider_id::instance_from_provider_id;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::ResourceExt;
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// What one pass did, for logs and metrics.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GcSummary {
    pub owned: usize,
    pub orphans: usize,
    pub released: usize,
    pub failed: usize,
    pub vanished_allocations: usize,
}

pub(super) async fn run(
    ctx: Arc<Shared>,
    remake: mpsc::UnboundedSender<()>,
    shutdown: CancellationToken,
) {
    // Until the pod list is in, every ENI would look orphaned. (Polled: the
    // store's own readiness future was seen to miss its wake-up.)
    loop {
        if shutdown.is_cancelled() {
            return;
        }
        match tokio::time::timeout(Duration::from_millis(200), ctx.pod_store.wait_until_ready())
            .await
        {
            Ok(Ok(())) => break,
            Ok(Err(_)) => return,
            Err(_) => {}
        }
    }
    ctx.pods_listed
        .store(true, std::sync::atomic::Ordering::Release);
    tracing::debug!("pod store ready: ENI GC starts");
    let interval = Duration::from_secs(ctx.config.gc_interval_seconds.into());
    let mut seen: HashSet<EniId> = HashSet::new();
    loop {
        match pass(&ctx, &ctx.pod_store, &mut seen, &shutdown).await {
            Ok(summary) => {
                ctx.metrics.set_eni_gc(summary.owned, summary.orphans);
                tracing::debug!(?summary, "ENI GC pass");
                if summary.released > 0 || summary.failed > 0 || summary.vanished_allocations > 0 {
                    tracing::info!(?summary, "ENI garbage collection");
                }
                if summary.vanished_allocations > 0 {
                    let _ = remake.send(());
                }
            }
            Err(e) => tracing::warn!(error = %e, "ENI garbage collection could not list ENIs"),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(interval) => {}
        }
    }
}

async fn pass(
    ctx: &Shared,
    pods: &Store<Pod>,
    seen: &mut HashSet<EniId>,
    shutdown: &CancellationToken,
) -> Result<GcSummary, providers::CloudError> {
    let mut owned = ctx.cloud.describe_enis(&all_owned_filter(ctx)).await?;
    owned.retain(|e| is_owned(&e.tags, &ctx.cluster));
    let live_pods = pods.state();
    let live: HashSet<String> = live_pods.iter().filter_map(|p| p.uid()).collect();
    let now = chrono::Utc::now();
    let grace = Duration::from_secs(ctx.config.gc_grace_seconds.into());
    let views: Vec<OwnedEniView> = owned
        .iter()
        .map(|e| OwnedEniView {
            id: e.id.clone(),
            pod_uid: pod_uid_of(&e.tags).map(str::to_owned),
            attached: e.instance_id.is_some(),
            age: e.created_at.map(|t| (now - t).to_std().unwrap_or_default()),
        })
        .collect();
    let plan = gc_plan(&views, &live, grace, seen);
    let mut summary = GcSummary {
        owned: owned.len(),
        orphans: plan.mark.len(),
        ..GcSummary::default()
    };
    for id in &plan.release_now {
        if shutdown.is_cancelled() {
            // Not leading any more: the next leader's GC takes it from here.
            break;
        }
        let Some(eni) = owned.iter().find(|e| &e.id == id) else {
            continue;
        };
        let who = format!(
            "orphan of pod uid {}",
            pod_uid_of(&eni.tags).unwrap_or("(none)")
        );
        match release_eni(ctx, eni, &who, true).await {
            Ok(()) => summary.released += 1,
            Err(e) => {
                summary.failed += 1;
                tracing::warn!(eni = %id, error = %e, "could not release orphaned ENI");
            }
        }
    }
    *seen = plan.mark.into_iter().collect();

    // Allocations whose ENI is gone or not on the pod's node any more.
    for pod in live_pods.iter() {
        if pod.metadata.deletion_timestamp.is_some() || super::allocate::terminal(pod) {
            // Released (or being released): its annotation stays as a record.
            continue;
        }
        let Some(allocation) = pod
            .annotations()
            .get(ALLOCATION_ANNOTATION)
            .and_then(|v| PodAllocation::parse(v).ok())
        else {
            continue;
        };
        let Some(uid) = pod.uid() else { continue };
        let Some(instance) = node_instance(ctx, &allocation.first.node) else {
            continue;
        };
        let annotated = allocation.eni_ids();
        let views: Vec<PodEniView> = owned
            .iter()
            .filter(|e| pod_uid_of(&e.tags) == Some(uid.as_str()))
            .map(|e| PodEniView {
                id: e.id.clone(),
                attached_to: e.instance_id.clone(),
                annotated: annotated.contains(&e.id),
            })
            .collect();
        if !allocation_intact(&annotated, &instance, &views) {
            summary.vanished_allocations += 1;
            ctx.suspects.lock().insert(uid);
        }
    }
    Ok(summary)
}

fn node_instance(ctx: &Shared, node: &str) -> Option<InstanceId> {
    let node = ctx.node_store.get(&ObjectRef::<Node>::new(node))?;
    instance_from_provider_id(crate::kubeutil::provider_id(&node)?).ok()
}
