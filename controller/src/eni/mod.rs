//! ENI (exclusive) mode: each pod that requests the extended resource gets
//! whole secondary ENIs attached to its node's instance, and each node
//! advertises how many more ENIs it can take.
//!
//! One room per job: [`request`] reads what a pod asks for, [`allocate`] is
//! the pod reconciler (observe, plan, apply, record), [`lifecycle`] runs an
//! ENI's life in the cloud under per-instance locks, [`subnets`] caches the
//! vSwitches new ENIs come from, [`record`] writes the finalizer and the
//! allocation annotation, [`capacity`] keeps node status right, [`gc`]
//! releases owned ENIs no pod holds and re-makes allocations whose ENI
//! vanished, [`waiter`] polls ENI states in batches, [`error`] says why a
//! pod's work did not finish, [`cleanup`] takes away what the mode leaves
//! behind once it is switched off. Decisions live in `ipam::eni` and
//! `ipam::subnet`; the annotation type in `ipam::allocation`.

pub mod allocate;
pub mod capacity;
pub mod census;
pub mod cleanup;
pub mod error;
pub mod gc;
pub mod lifecycle;
pub mod record;
pub mod request;
pub mod steps;
pub mod subnets;
pub mod waiter;

pub use ipam::allocation::{
    EniAllocation, PodAllocation, ALLOCATION_ANNOTATION, RELEASE_FINALIZER,
};
pub use steps::{CrashAt, Step, StepHook, Steps};

use crate::cache::{self, Shared};
use crate::context::Context;
use crate::tasks::AbortOnDrop;
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::Api;
use kube::runtime::reflector::Store;
use kube::runtime::{watcher, Controller};
use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How long node capacity reconciles gather their instances into one
/// describe call.
const CENSUS_WINDOW: Duration = Duration::from_millis(250);

/// ENI mode while this replica leads: the context, the watched stores and
/// each reconciler's own state. Nothing in here is needed across a restart:
/// the cloud (tags) and kube (annotations, finalizers) hold the truth.
pub(crate) struct EniMode {
    ctx: Context,
    /// The extended resource pods request.
    resource: String,
    nodes: Api<Node>,
    node_store: Store<Node>,
    pods: LivePods,
    lifecycle: lifecycle::Lifecycle,
    /// Instances described in batches for the capacity reconciler.
    census: census::Census,
    subnets: subnets::SubnetCache,
    capacity: capacity::State,
    allocation: allocate::State,
}

/// The pod cache (the pods this mode has to do with: `cache::eni_pod`),
/// and whether its first list is in (GC and capacity need every live ENI
/// pod before they may call an ENI an orphan).
struct LivePods {
    store: Store<Pod>,
    listed: AtomicBool,
}

impl LivePods {
    fn mark_listed(&self) {
        self.listed.store(true, Ordering::Release);
    }

    /// The ENIs named by the allocation annotation of a live pod that is
    /// not leaving, with that pod's uid; once the pod list is in.
    fn annotated_enis(&self) -> Option<std::collections::HashMap<ipam::ids::EniId, String>> {
        self.listed.load(Ordering::Acquire).then(|| {
            self.store
                .state()
                .iter()
                .filter(|p| !request::leaving(p))
                .filter_map(|p| {
                    let uid = kube::ResourceExt::uid(p.as_ref())?;
                    let a = PodAllocation::from_annotations(kube::ResourceExt::annotations(
                        p.as_ref(),
                    ))?;
                    Some(a.eni_ids().into_iter().map(move |id| (id, uid.clone())))
                })
                .flatten()
                .collect()
        })
    }

    /// Uids of every live ENI pod, once the pod list is in. An ENI tagged
    /// for a pod is only ever made for an ENI pod, and a pod's requests do
    /// not change, so a uid missing here is a pod that is gone.
    fn uids(&self) -> Option<HashSet<String>> {
        self.listed.load(Ordering::Acquire).then(|| {
            self.store
                .state()
                .iter()
                .filter_map(|p| kube::ResourceExt::uid(p.as_ref()))
                .collect()
        })
    }
}

/// Run node capacity, pod allocation and GC until `shutdown`, on the
/// replica's node cache (`nodes`: its store and every node applied to it).
/// `hook` is reached at every step of an allocation or release (tests
/// inject crashes there); `None` in production.
pub async fn run(
    ctx: Context,
    nodes: (
        Store<Node>,
        impl futures::Stream<Item = Result<Node, watcher::Error>> + Send + 'static,
    ),
    hook: Option<Arc<dyn StepHook>>,
    shutdown: CancellationToken,
) {
    let resource = ctx.config.eni_resource_name();
    let pod_cache = {
        let keep = resource.clone();
        let mut shared = Shared::new(
            Api::<Pod>::all(ctx.client.clone()),
            Arc::new(cache::strip_pod),
        )
        .keep(Arc::new(move |p: &Pod| cache::eni_pod(&keep, p)));
        let applied = shared.applied();
        (shared.start(), applied)
    };
    let (pod_cache, pod_applied) = pod_cache;
    let (node_store, node_applied) = nodes;
    // As many node recounts at once as one census batch holds: all 5,000
    // nodes of a round at once would be 5,000 status patches in flight.
    let node_controller = Controller::for_stream(node_applied, node_store).with_config(
        kube::runtime::controller::Config::default().concurrency(census::BATCH as u16),
    );
    let pod_controller = Controller::for_stream(pod_applied, pod_cache.store.clone());
    let nodes: Api<Node> = Api::all(ctx.client.clone());
    let config = &ctx.config.eni;
    let waiter = waiter::Waiter::start(
        ctx.cloud.clone(),
        Duration::from_millis(config.poll_interval_ms.into()),
        Duration::from_secs(config.attach_timeout_seconds.into()),
        shutdown.clone(),
    );
    let mode = Arc::new(EniMode {
        resource,
        lifecycle: lifecycle::Lifecycle::new(
            ctx.cloud.clone(),
            ctx.cluster().clone(),
            waiter,
            Steps::new(hook),
        )
        .with_attach_concurrency(config.attach_concurrency),
        census: census::Census::start(ctx.cloud.clone(), CENSUS_WINDOW),
        nodes,
        node_store: node_controller.store(),
        pods: LivePods {
            store: pod_controller.store(),
            listed: AtomicBool::new(false),
        },
        subnets: subnets::SubnetCache::new(ctx.metrics.clone()),
        capacity: capacity::State::new(ctx.events.clone()),
        allocation: Default::default(),
        ctx,
    });
    tracing::info!(resource = %mode.resource, "ENI mode running");
    let _pod_cache = pod_cache;
    let (remake_tx, remake_rx) = tokio::sync::mpsc::unbounded_channel::<()>();
    let _gc = AbortOnDrop::spawn(gc::run(mode.clone(), remake_tx, shutdown.clone()));
    let capacity = node_controller
        .graceful_shutdown_on(shutdown.clone().cancelled_owned())
        .run(capacity::reconcile, capacity::error_policy, mode.clone())
        .for_each(|_| async {});
    let allocation = pod_controller
        .reconcile_all_on(stream_of(remake_rx))
        .graceful_shutdown_on(shutdown.clone().cancelled_owned())
        .run(allocate::reconcile, allocate::error_policy, mode.clone())
        .for_each(|_| async {});
    tokio::select! {
        _ = shutdown.cancelled() => {}
        _ = futures::future::join(capacity, allocation) => {}
    }
}

fn stream_of(
    mut rx: tokio::sync::mpsc::UnboundedReceiver<()>,
) -> impl futures::Stream<Item = ()> + Send + 'static {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}
