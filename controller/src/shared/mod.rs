//! Shared-ENI mode: on nodes the `sharedEni.nodeSelector` picks, every pod
//! that is not `hostNetwork` and does not ask for the exclusive resource
//! gets one secondary IP of a shared ENI, from a warm pool the controller
//! keeps per node.
//!
//! One room per job: [`state`] holds each node's books (an
//! `ipam::ledger::Ledger` plus what the annotation needs of each ENI),
//! [`assign`] is the pod reconciler (an IP from the books and the
//! annotation, no cloud call), [`upkeep`] keeps the pools (one listing of
//! every shared ENI for all nodes, the pools' plans from `ipam::pool`, the
//! release of IPs whose pods went), [`actions`] makes the cloud calls a plan
//! asks for, [`metrics`] exports the pools. The truth is the cloud (ENI tags
//! and assigned IPs) and the pods' annotations: a restarted controller
//! rebuilds the books from both before it hands out anything.

pub mod actions;
pub mod assign;
pub mod metrics;
pub mod state;
pub mod upkeep;

use crate::context::Context;
use crate::eni::lifecycle::Lifecycle;
use crate::eni::request::{bound_node, leaving, requested};
use crate::eni::subnets::SubnetCache;
use crate::eni::Steps;
use crate::tasks::AbortOnDrop;
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::Api;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::Controller;
use kube::ResourceExt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, Notify};
use tokio_util::sync::CancellationToken;

/// The annotation on a node whose pods get shared-ENI IPs: the node half
/// waits for a pod's allocation there instead of delegating.
pub const NODE_ANNOTATION: &str = "vpc-eni.io/shared-eni";

/// Shared mode while this replica leads.
pub(crate) struct SharedMode {
    ctx: Context,
    /// The exclusive resource: pods asking for it are not ours.
    exclusive_resource: String,
    nodes: Store<Node>,
    pods: Store<Pod>,
    pods_listed: AtomicBool,
    lifecycle: Lifecycle,
    subnets: SubnetCache,
    pools: state::Pools,
    /// Wakes the upkeep loop (a pod waits, a node joined, an action ended).
    wake: Notify,
    /// Pods to reconcile again (IPs arrived for them).
    retry: mpsc::UnboundedSender<ObjectRef<Pod>>,
    metrics: Arc<metrics::SharedMetrics>,
}

impl SharedMode {
    /// Whether the node is in shared mode.
    fn node_selected(&self, node: &Node) -> bool {
        self.ctx.config.shared_eni.selects(node.labels())
    }

    /// Whether the pod is one shared mode serves (bound, not hostNetwork,
    /// not asking for the exclusive resource, not leaving), and its node.
    fn pod_node(&self, pod: &Pod) -> PodNode {
        let Some(node) = bound_node(pod) else {
            return PodNode::NotOurs;
        };
        if leaving(pod) || host_network(pod) {
            return PodNode::NotOurs;
        }
        if requested(pod, &self.exclusive_resource).map_or(true, |n| n > 0) {
            // Asks for the exclusive resource, or asks for it wrongly:
            // exclusive mode answers it either way.
            return PodNode::NotOurs;
        }
        match self.nodes.get(&ObjectRef::new(node)) {
            Some(n) if self.node_selected(&n) => PodNode::Shared(node.to_owned()),
            Some(_) => PodNode::NotOurs,
            // The node cache has not shown the node yet (it lists nodes
            // while the pods arrive): asked again, never dropped.
            None => PodNode::Unseen,
        }
    }
}

/// Whether a pod is shared mode's to serve.
enum PodNode {
    /// Bound to this shared node and ours.
    Shared(String),
    /// Not bound, not a pod shared mode serves, or on a node not in shared
    /// mode (the node's books opening sends its pods back).
    NotOurs,
    /// Bound to a node the node cache does not hold (yet).
    Unseen,
}

pub(crate) fn host_network(pod: &Pod) -> bool {
    pod.spec
        .as_ref()
        .and_then(|s| s.host_network)
        .unwrap_or(false)
}

/// Run shared mode until `shutdown`, on the replica's node cache (`nodes`:
/// its store and a signal for every change). `hook` is reached at every
/// step of a pool change and after each annotation (tests inject crashes
/// there); `None` in production.
pub async fn run(
    ctx: Context,
    nodes: (Store<Node>, Arc<Notify>),
    hook: Option<Arc<dyn crate::eni::StepHook>>,
    shutdown: CancellationToken,
) {
    let (node_store, node_changed) = nodes;
    // Every pod: any pod on a shared node may be ours. Cut down to what
    // this mode reads.
    let mut pods = crate::cache::Shared::new(
        Api::<Pod>::all(ctx.client.clone()),
        Arc::new(crate::cache::strip_pod),
    );
    let pod_applied = pods.applied();
    let pod_cache = pods.start();
    let pod_controller = Controller::for_stream(pod_applied, pod_cache.store.clone());
    let waiter = crate::eni::waiter::Waiter::start(
        ctx.cloud.clone(),
        Duration::from_millis(ctx.config.eni.poll_interval_ms.into()),
        Duration::from_secs(ctx.config.eni.attach_timeout_seconds.into()),
        shutdown.clone(),
    );
    let (retry_tx, retry_rx) = mpsc::unbounded_channel();
    let mode = Arc::new(SharedMode {
        exclusive_resource: ctx.config.eni_resource_name(),
        nodes: node_store,
        pods: pod_controller.store(),
        pods_listed: AtomicBool::new(false),
        lifecycle: Lifecycle::new(
            ctx.cloud.clone(),
            ctx.cluster().clone(),
            waiter,
            Steps::new(hook),
        )
        .with_attach_concurrency(ctx.config.eni.attach_concurrency),
        subnets: SubnetCache::new(ctx.metrics.clone()),
        pools: state::Pools::default(),
        wake: Notify::new(),
        retry: retry_tx,
        metrics: ctx.metrics.shared.clone(),
        ctx,
    });
    tracing::info!("shared-ENI mode running");
    let _pod_cache = pod_cache;
    let _nodes = {
        let mode = mode.clone();
        AbortOnDrop::spawn(async move {
            loop {
                node_changed.notified().await;
                mode.wake.notify_one();
            }
        })
    };
    let _upkeep = AbortOnDrop::spawn(upkeep::run(mode.clone(), shutdown.clone()));
    let _listed = {
        let mode = mode.clone();
        AbortOnDrop::spawn(async move {
            // Polled: the store's readiness future was seen to miss its
            // wake-up.
            loop {
                let ready =
                    tokio::time::timeout(Duration::from_millis(200), mode.pods.wait_until_ready())
                        .await;
                match ready {
                    Ok(Ok(())) => break,
                    Ok(Err(_)) => return,
                    Err(_) => {}
                }
            }
            mode.pods_listed.store(true, Ordering::Release);
            mode.wake.notify_one();
        })
    };
    let pods = pod_controller
        .reconcile_on(futures::stream::unfold(retry_rx, |mut rx| async move {
            rx.recv().await.map(|r| (r, rx))
        }))
        .graceful_shutdown_on(shutdown.clone().cancelled_owned())
        .run(assign::reconcile, assign::error_policy, mode.clone())
        .for_each(|_| async {});
    tokio::select! {
        _ = shutdown.cancelled() => {}
        _ = pods => {}
    }
}
