//! Garbage collection of owned ENIs, at start and every
//! `eni.gcIntervalSeconds`: one listing of every ENI tagged as this
//! cluster's, then `ipam::eni::gc_plan` decides which orphans (no live pod,
//! old enough, seen in two passes) to detach and delete. The same listing
//! finds pods whose written allocation no longer holds (ENI deleted or
//! detached behind our back); they are marked and reconciled again, which
//! makes the allocation anew.

use super::request::leaving;
use super::EniMode;
use ipam::allocation::PodAllocation;
use ipam::eni::{allocation_intact, gc_plan, pod_uid_of, OwnedEniView, PodEniView};
use ipam::ids::{EniId, InstanceId};
use ipam::provider_id::instance_from_provider_id;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::runtime::reflector::ObjectRef;
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
    mode: Arc<EniMode>,
    remake: mpsc::UnboundedSender<()>,
    shutdown: CancellationToken,
) {
    // Until the pod list is in, every ENI would look orphaned. (Polled: the
    // store's own readiness future was seen to miss its wake-up.)
    loop {
        if shutdown.is_cancelled() {
            return;
        }
        match tokio::time::timeout(
            Duration::from_millis(200),
            mode.pods.store.wait_until_ready(),
        )
        .await
        {
            Ok(Ok(())) => break,
            Ok(Err(_)) => return,
            Err(_) => {}
        }
    }
    mode.pods.mark_listed();
    tracing::debug!("pod store ready: ENI GC starts");
    let interval = Duration::from_secs(mode.ctx.config.eni.gc_interval_seconds.into());
    let mut seen: HashSet<EniId> = HashSet::new();
    loop {
        match pass(&mode, &mut seen, &shutdown).await {
            Ok(summary) => {
                mode.ctx.metrics.set_eni_gc(summary.owned, summary.orphans);
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
    mode: &EniMode,
    seen: &mut HashSet<EniId>,
    shutdown: &CancellationToken,
) -> Result<GcSummary, providers::CloudError> {
    // Pods first: an ENI listed after the snapshot whose pod came in
    // between is young and only marked, never released, in this pass.
    let live_pods: Vec<Arc<Pod>> = mode.pods.store.state();
    let mut owned = mode.lifecycle.owned().await?;
    let live: HashSet<String> = live_pods.iter().filter_map(|p| p.uid()).collect();
    mode.allocation.retain_pods(&live);
    let live_nodes: HashSet<String> = mode
        .node_store
        .state()
        .iter()
        .map(|n| n.name_any())
        .collect();
    mode.capacity.retain_nodes(&live_nodes);
    mode.ctx.metrics.retain_nodes(&live_nodes);
    mode.ctx.metrics.set_subnets_held(&held_per_subnet(
        mode.ctx.config.eni.subnets.values().flatten(),
        &owned,
    ));
    let now = mode.ctx.clock.wall();
    let grace = Duration::from_secs(mode.ctx.config.eni.gc_grace_seconds.into());
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
        match mode.lifecycle.release(eni, &who, true).await {
            Ok(()) => summary.released += 1,
            Err(e) => {
                summary.failed += 1;
                tracing::warn!(eni = %id, error = %e, "could not release orphaned ENI");
            }
        }
    }
    *seen = plan.mark.into_iter().collect();

    // Allocations whose ENI is gone or not on the pod's node any more. An
    // annotated ENI the listing by tag missed is looked up by id first: the
    // listing can lag behind a create.
    let unlisted: Vec<EniId> = live_pods
        .iter()
        .filter(|p| !leaving(p))
        .filter_map(|p| PodAllocation::from_annotations(p.annotations()))
        // Shared ENIs are shared mode's to check, not a pod's own.
        .filter(|a| !a.is_shared())
        .flat_map(|a| a.eni_ids())
        .filter(|id| !owned.iter().any(|e| &e.id == id))
        .collect();
    if !unlisted.is_empty() {
        owned.extend(mode.lifecycle.by_ids(unlisted).await?);
    }
    for pod in live_pods.iter() {
        if leaving(pod) {
            // Released (or being released): its annotation stays as a record.
            continue;
        }
        let Some(allocation) =
            PodAllocation::from_annotations(pod.annotations()).filter(|a| !a.is_shared())
        else {
            continue;
        };
        let Some(uid) = pod.uid() else { continue };
        let Some(instance) = node_instance(mode, &allocation.first.node) else {
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
            mode.allocation.suspect(uid);
        }
    }
    Ok(summary)
}

fn node_instance(mode: &EniMode, node: &str) -> Option<InstanceId> {
    let node = mode.node_store.get(&ObjectRef::<Node>::new(node))?;
    instance_from_provider_id(crate::kubeutil::provider_id(&node)?).ok()
}

/// Addresses (primary and secondary) on the cluster's ENIs per subnet: every
/// configured subnet, 0 included, and any other an owned ENI is in.
fn held_per_subnet<'a>(
    configured: impl Iterator<Item = &'a ipam::ids::SubnetId>,
    owned: &[providers::model::Eni],
) -> std::collections::BTreeMap<String, u64> {
    let mut held: std::collections::BTreeMap<String, u64> =
        configured.map(|s| (s.to_string(), 0)).collect();
    for e in owned {
        *held.entry(e.subnet_id.to_string()).or_default() += 1 + e.secondary_ips.len() as u64;
    }
    held
}
