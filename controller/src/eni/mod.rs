//! ENI (exclusive) mode: each pod that requests the extended resource gets
//! whole secondary ENIs attached to its node's instance, and each node
//! advertises how many more ENIs it can take.
//!
//! Parts: [`capacity`] keeps node status right, [`allocate`] gives and
//! releases pods' ENIs, [`gc`] releases owned ENIs no pod holds and re-makes
//! allocations whose ENI vanished, [`waiter`] polls ENI states in batches.
//! Decisions live in `ipam::eni` and `ipam::subnet`.

pub mod allocate;
pub mod annotation;
pub mod capacity;
pub mod gc;
pub mod steps;
pub mod waiter;

pub use annotation::{EniAllocation, PodAllocation, ALLOCATION_ANNOTATION, RELEASE_FINALIZER};
pub use steps::{CrashAt, Step, StepHook, Steps};

use crate::config::EniConfig;
use crate::kubeutil::Events;
use crate::metrics::Metrics;
use futures::StreamExt;
use ipam::ids::{ClusterId, InstanceId, SubnetId};
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::Api;
use kube::runtime::reflector::Store;
use kube::runtime::{watcher, Controller};
use providers::model::Subnet;
use providers::Cloud;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// State shared by the ENI reconcilers of one leading replica. Nothing in
/// here is needed across a restart: the cloud (tags) and kube (annotations,
/// finalizers) hold the truth.
pub(crate) struct Shared {
    cloud: Arc<dyn Cloud>,
    client: kube::Client,
    nodes: Api<Node>,
    node_store: Store<Node>,
    pod_store: Store<Pod>,
    /// Set once the pod list is in (GC and capacity need every live pod).
    pods_listed: std::sync::atomic::AtomicBool,
    events: Events,
    metrics: Arc<Metrics>,
    steps: Steps,
    waiter: waiter::Waiter,
    cluster: ClusterId,
    config: EniConfig,
    resource: String,
    capacity_resync: Duration,
    /// node -> capacity last computed.
    computed: parking_lot::Mutex<HashMap<String, capacity::Computed>>,
    /// node -> the capacity warning last published.
    reported: parking_lot::Mutex<HashMap<String, String>>,
    instance_locks: parking_lot::Mutex<HashMap<InstanceId, Arc<tokio::sync::Mutex<()>>>>,
    subnets: parking_lot::Mutex<HashMap<SubnetId, (Subnet, Instant)>>,
    /// When each zone's configured subnets were last described.
    zone_fetched: parking_lot::Mutex<HashMap<ipam::ids::ZoneId, Instant>>,
    subnet_fetch: tokio::sync::Mutex<()>,
    /// Subnets that ran out of addresses, until when to skip them.
    cooling: parking_lot::Mutex<HashMap<SubnetId, Instant>>,
    /// node -> consecutive capacity failures (backoff).
    capacity_failures: parking_lot::Mutex<HashMap<String, u32>>,
    /// pod uid -> consecutive failures (backoff).
    failures: parking_lot::Mutex<HashMap<String, u32>>,
    /// Pod uids whose written allocation GC found broken.
    suspects: parking_lot::Mutex<HashSet<String>>,
    /// Pod uids whose annotation this replica wrote and the pod watch has
    /// not shown yet (so a stale copy does not start the allocation again).
    written: parking_lot::Mutex<HashSet<String>>,
}

/// Everything the ENI reconcilers need from the replica.
pub struct EniDeps {
    pub cloud: Arc<dyn Cloud>,
    pub client: kube::Client,
    pub metrics: Arc<Metrics>,
    pub cluster: ClusterId,
    pub config: EniConfig,
    pub resource: String,
    pub hook: Option<Arc<dyn StepHook>>,
}

/// Run node capacity, pod allocation and GC until `shutdown`.
pub async fn run(deps: EniDeps, shutdown: CancellationToken) {
    let nodes: Api<Node> = Api::all(deps.client.clone());
    let pods: Api<Pod> = Api::all(deps.client.clone());
    let node_controller = Controller::new(nodes.clone(), watcher::Config::default());
    let pod_controller = Controller::new(pods, watcher::Config::default());
    let waiter = waiter::Waiter::start(
        deps.cloud.clone(),
        Duration::from_millis(deps.config.poll_interval_ms.into()),
        Duration::from_secs(deps.config.attach_timeout_seconds.into()),
        shutdown.clone(),
    );
    let ctx = Arc::new(Shared {
        cloud: deps.cloud,
        client: deps.client.clone(),
        nodes,
        node_store: node_controller.store(),
        pod_store: pod_controller.store(),
        pods_listed: Default::default(),
        events: Events::new(deps.client),
        metrics: deps.metrics,
        steps: Steps::new(deps.hook),
        waiter,
        cluster: deps.cluster,
        capacity_resync: Duration::from_secs(deps.config.capacity_resync_seconds.into()),
        resource: deps.resource,
        config: deps.config,
        computed: Default::default(),
        reported: Default::default(),
        instance_locks: Default::default(),
        subnets: Default::default(),
        zone_fetched: Default::default(),
        subnet_fetch: Default::default(),
        cooling: Default::default(),
        failures: Default::default(),
        capacity_failures: Default::default(),
        suspects: Default::default(),
        written: Default::default(),
    });
    tracing::info!(resource = %ctx.resource, "ENI mode running");
    let (remake_tx, remake_rx) = tokio::sync::mpsc::unbounded_channel::<()>();
    let gc = AbortOnDrop(tokio::spawn(gc::run(
        ctx.clone(),
        remake_tx,
        shutdown.clone(),
    )));
    let capacity = node_controller
        .graceful_shutdown_on(shutdown.clone().cancelled_owned())
        .run(capacity::reconcile, capacity::error_policy, ctx.clone())
        .for_each(|_| async {});
    let allocation = pod_controller
        .reconcile_all_on(tokio_stream_of(remake_rx))
        .graceful_shutdown_on(shutdown.clone().cancelled_owned())
        .run(allocate::reconcile, allocate::error_policy, ctx.clone())
        .for_each(|_| async {});
    tokio::select! {
        _ = shutdown.cancelled() => {}
        _ = futures::future::join(capacity, allocation) => {}
    }
    drop(gc);
}

/// Aborts a task when dropped, also when the future holding it is aborted
/// (this replica stopped leading).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Shared {
    /// Uids of every pod in the cluster, once the pod list is in.
    fn live_pod_uids(&self) -> Option<HashSet<String>> {
        self.pods_listed
            .load(std::sync::atomic::Ordering::Acquire)
            .then(|| {
                self.pod_store
                    .state()
                    .iter()
                    .filter_map(|p| kube::ResourceExt::uid(p.as_ref()))
                    .collect()
            })
    }
}

fn tokio_stream_of(
    mut rx: tokio::sync::mpsc::UnboundedReceiver<()>,
) -> impl futures::Stream<Item = ()> + Send + 'static {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}
