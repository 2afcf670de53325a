//! The ENI-mode e2e world on Alibaba, on `controller::harness`: the
//! in-memory cloud behind the Alibaba OpenAPI mock, the fake kube-apiserver
//! (scheduler, kubelet), and the real controller with ENI mode on and routes
//! off. Plus what the tests look at: pods, their allocation annotation,
//! Events, and the ENIs in the world.

use controller::config::Config;
use controller::eni::{PodAllocation, StepHook, ALLOCATION_ANNOTATION, RELEASE_FINALIZER};
use controller::harness::world::NodeSpec;
use controller::harness::{AlibabaWorld, Harness};
use controller::run;
use ipam::eni::tag;
use ipam::ids::{InstanceId, SubnetId};
use k8s_openapi::api::core::v1::{Event, Node, Pod};
use kube::api::{Api, ListParams, PostParams};
use kube::ResourceExt;
use mocks::cloud::World;
use mocks::kubeapi::nodes::NodeTemplate;
use mocks::kubeapi::Options;
use providers::model::{Eni, EniStatus, Subnet};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::future::Future;
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

pub const CLUSTER: &str = "e2e";
pub const REGION: &str = "cn-hangzhou";
/// Two configured vSwitches of different size.
pub const ZONE_H: &str = "cn-hangzhou-h";
/// One configured vSwitch.
pub const ZONE_I: &str = "cn-hangzhou-i";
/// Has a vSwitch in the VPC but none in `eni.subnets`.
pub const ZONE_K: &str = "cn-hangzhou-k";
/// Nodes sit in one vSwitch; ENIs come from a tiny one (`vsw-j1`, a /29:
/// four usable addresses).
pub const ZONE_J: &str = "cn-hangzhou-j";
pub const RESOURCE: &str = "aliyun/eni";

/// How long any wait may take before the test fails with the state it saw.
pub const DEADLINE: Duration = Duration::from_secs(60);

/// Low attach/detach delays keep the crash loop quick while every ENI still
/// passes through Attaching and Detaching.
const WORLD: &str = r#"
region: cn-hangzhou
accessKeys: [{id: e2e-key, secret: e2e-secret-not-a-real-one}]
vpcs: [{id: vpc-e2e, cidr: 192.168.0.0/16, routeTables: [{id: vtb-e2e, main: true}]}]
vswitches:
  - {id: vsw-h1, vpc: vpc-e2e, zone: cn-hangzhou-h, cidr: 192.168.0.0/24}
  - {id: vsw-h2, vpc: vpc-e2e, zone: cn-hangzhou-h, cidr: 192.168.1.0/26}
  - {id: vsw-i1, vpc: vpc-e2e, zone: cn-hangzhou-i, cidr: 192.168.16.0/24}
  - {id: vsw-k1, vpc: vpc-e2e, zone: cn-hangzhou-k, cidr: 192.168.32.0/24}
  - {id: vsw-j0, vpc: vpc-e2e, zone: cn-hangzhou-j, cidr: 192.168.48.0/24}
  - {id: vsw-j1, vpc: vpc-e2e, zone: cn-hangzhou-j, cidr: 192.168.49.0/29}
securityGroups: [{id: sg-e2e, vpc: vpc-e2e}]
faults: {attachDelayMs: 200, detachDelayMs: 100}
"#;

/// The vSwitch node instances get their primary ENI from.
fn node_vswitch(zone: &str) -> (&'static str, [u8; 3]) {
    match zone {
        ZONE_H => ("vsw-h1", [192, 168, 0]),
        ZONE_I => ("vsw-i1", [192, 168, 16]),
        ZONE_J => ("vsw-j0", [192, 168, 48]),
        _ => ("vsw-k1", [192, 168, 32]),
    }
}

/// ENI tunables a test may shorten.
#[derive(Clone, Copy, Debug)]
pub struct Tunables {
    pub gc_interval_seconds: u32,
    pub gc_grace_seconds: u32,
    /// The fake cloud's listings by tag leave out ENIs younger than this
    /// (EC2's eventual consistency); 0 = none.
    pub tag_listing_lag_ms: u64,
    /// `eni.evictAfterSeconds`.
    pub evict_after_seconds: u32,
    /// The fake cloud's Attaching -> InUse delay.
    pub attach_delay_ms: u64,
    /// ENI attaches/detaches the fake cloud takes in flight per instance
    /// (`faults.eniOpsPerInstance`).
    pub eni_ops_per_instance: u32,
    /// `eni.attachConcurrency`.
    pub attach_concurrency: u32,
}

impl Default for Tunables {
    /// The documented defaults: GC never releases anything within a test.
    fn default() -> Self {
        Self {
            gc_interval_seconds: 600,
            gc_grace_seconds: 600,
            tag_listing_lag_ms: 0,
            evict_after_seconds: 300,
            attach_delay_ms: 200,
            eni_ops_per_instance: 5,
            attach_concurrency: 5,
        }
    }
}

impl Tunables {
    /// GC every second, orphans older than a second (two passes still needed).
    pub fn quick_gc() -> Self {
        Self {
            gc_interval_seconds: 1,
            gc_grace_seconds: 1,
            ..Self::default()
        }
    }
}

pub use controller::harness::world::instance_for;

pub struct Env {
    /// The world, the fake apiserver and the replicas (oldest first, with
    /// their metrics).
    pub harness: Harness<AlibabaWorld>,
    pub client: kube::Client,
    pub config: Config,
    next_host: HashMap<String, u8>,
}

impl Env {
    pub async fn start(tunables: Tunables) -> Env {
        let world = WORLD.replace(
            "faults: {attachDelayMs: 200, detachDelayMs: 100}",
            &format!(
                "faults: {{attachDelayMs: {}, detachDelayMs: 100, tagListingLagMs: {}, eniOpsPerInstance: {}}}",
                tunables.attach_delay_ms,
                tunables.tag_listing_lag_ms,
                tunables.eni_ops_per_instance
            ),
        );
        let ali = AlibabaWorld::from_yaml(&world).await.expect("fake alibaba");
        let harness = Harness::start(ali, Options::default(), "e2e-replica")
            .await
            .expect("harness");
        let client = harness.client().clone();
        let config = Config::parse(&format!(
            r#"
clusterId: {CLUSTER}
provider: {{kind: alibaba, region: {REGION}, endpoint: "{url}"}}
routes: {{enabled: false}}
eni:
  enabled: true
  subnets: {{{ZONE_H}: [vsw-h1, vsw-h2], {ZONE_I}: [vsw-i1], {ZONE_J}: [vsw-j1]}}
  securityGroups: [sg-e2e]
  tags: {{team: net}}
  pollIntervalMs: 100
  capacityResyncSeconds: 1
  attachTimeoutSeconds: 30
  gcIntervalSeconds: {gc_interval}
  gcGraceSeconds: {gc_grace}
  evictAfterSeconds: {evict_after}
  attachConcurrency: {attach_concurrency}
controller: {{listen: "127.0.0.1:0", leaderElection: {{enabled: false}}}}
"#,
            url = harness.cloud.url(),
            gc_interval = tunables.gc_interval_seconds,
            gc_grace = tunables.gc_grace_seconds,
            evict_after = tunables.evict_after_seconds,
            attach_concurrency = tunables.attach_concurrency,
        ))
        .expect("controller config");
        Env {
            harness,
            client,
            config,
            next_host: HashMap::new(),
        }
    }

    pub fn world(&self) -> &World {
        self.harness.cloud.world()
    }

    /// Start a replica without a step hook; returns its shutdown token.
    pub async fn start_replica(&mut self) -> CancellationToken {
        let token = CancellationToken::new();
        let _ = self.start_replica_with(token.clone(), None).await;
        token
    }

    /// Start a replica that stops when `token` is cancelled (a crash hook
    /// cancels it itself). Leader election is off unless the test turns it
    /// on in `config`, so a new replica leads at once after a crash.
    pub async fn start_replica_with(
        &mut self,
        token: CancellationToken,
        hook: Option<Arc<dyn StepHook>>,
    ) -> run::Running {
        self.harness
            .start_replica_with(self.config.clone(), token, hook)
            .await
            .expect("start replica")
            .running
    }

    /// An instance of `instance_type` in `zone` and its registered Node.
    pub async fn add_node(&mut self, name: &str, instance_type: &str, zone: &str) -> InstanceId {
        let (vswitch, net) = node_vswitch(zone);
        let host = self.next_host.entry(zone.to_owned()).or_insert(200);
        let ip = Ipv4Addr::new(net[0], net[1], net[2], *host);
        *host += 1;
        let node = NodeSpec {
            name,
            instance_type,
            zone,
            vswitch: SubnetId::new(vswitch),
            ip,
            pod_cidr: None,
        };
        self.harness
            .cloud
            .add_node(&self.harness.kube, &node)
            .await
            .expect("add node")
    }

    /// Register a Node as built by the caller (no instance is added).
    pub async fn register(&self, t: &NodeTemplate) {
        self.harness.kube.create_node(t).await.expect("create node");
    }

    /// A pod asking for `enis` exclusive ENIs (as a limit, the way users
    /// write it), pinned to `node` by nodeSelector when given.
    pub async fn create_pod(&self, name: &str, enis: u32, node: Option<&str>) -> Pod {
        let mut spec = serde_json::json!({
            "containers": [{"name": "app", "image": "registry.k8s.io/pause:3.9",
                "resources": {"limits": {RESOURCE: enis.to_string()}}}]
        });
        if let Some(n) = node {
            spec["nodeSelector"] = serde_json::json!({"kubernetes.io/hostname": n});
        }
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": "default", "labels": {"app": name}},
            "spec": spec,
        }))
        .expect("pod json");
        self.pods()
            .create(&PostParams::default(), &pod)
            .await
            .expect("create pod")
    }

    pub fn pods(&self) -> Api<Pod> {
        Api::namespaced(self.client.clone(), "default")
    }

    pub async fn pod(&self, name: &str) -> Option<Pod> {
        self.pods().get_opt(name).await.expect("get pod")
    }

    pub async fn node(&self, name: &str) -> Node {
        Api::<Node>::all(self.client.clone())
            .get(name)
            .await
            .expect("get node")
    }

    /// (type, reason, message) of every Event about the object named `name`.
    pub async fn events_about(&self, name: &str) -> Vec<(String, String, String)> {
        Api::<Event>::all(self.client.clone())
            .list(&ListParams::default())
            .await
            .expect("list events")
            .items
            .into_iter()
            .filter(|e| e.involved_object.name.as_deref() == Some(name))
            .map(|e| {
                (
                    e.type_.unwrap_or_default(),
                    e.reason.unwrap_or_default(),
                    e.message.unwrap_or_default(),
                )
            })
            .collect()
    }

    /// Every ENI in the world tagged for this cluster.
    pub fn cluster_enis(&self) -> Vec<Eni> {
        self.world()
            .enis()
            .into_iter()
            .filter(|e| e.tags.get(tag::CLUSTER).map(String::as_str) == Some(CLUSTER))
            .collect()
    }

    pub fn eni(&self, id: &str) -> Option<Eni> {
        self.world()
            .enis()
            .into_iter()
            .find(|e| e.id.as_str() == id)
    }

    pub fn subnets(&self) -> Vec<Subnet> {
        self.world().snapshot().subnets
    }

    /// What is wrong with the ENI state right now, as a user would judge it;
    /// empty when every live pod holds exactly its ENIs (in use on its own
    /// node's instance, named by its annotation, its IP the pod's IP) and no
    /// ENI of the cluster belongs to a pod that is gone.
    ///
    /// `pod_ip_must_match`: the fake kubelet sets a pod's IP once, when it
    /// starts it; after an ENI is re-made the annotation moves on alone.
    pub async fn eni_problems(&self, pod_ip_must_match: bool) -> Vec<String> {
        let pods = self
            .pods()
            .list(&ListParams::default())
            .await
            .expect("list pods")
            .items;
        // Shared-mode ENIs belong to nodes, not pods: their own tests judge them.
        let enis: Vec<Eni> = self
            .cluster_enis()
            .into_iter()
            .filter(|e| !ipam::eni::is_shared(&e.tags))
            .collect();
        let mut problems = Vec::new();
        let uids: BTreeSet<String> = pods.iter().filter_map(|p| p.uid()).collect();
        for e in &enis {
            match e.tags.get(tag::POD_UID) {
                Some(uid) if uids.contains(uid) => {}
                other => problems.push(format!(
                    "leaked ENI {} ({:?}, pod uid {other:?}, tags {:?})",
                    e.id, e.status, e.tags
                )),
            }
        }
        for pod in &pods {
            let name = pod.name_any();
            let want = requested_enis(pod);
            let uid = pod.uid().unwrap_or_default();
            let held: BTreeSet<String> = enis
                .iter()
                .filter(|e| e.tags.get(tag::POD_UID) == Some(&uid))
                .map(|e| e.id.to_string())
                .collect();
            if pod.metadata.deletion_timestamp.is_some() {
                problems.push(format!(
                    "pod {name} is still being deleted, holding {held:?}"
                ));
                continue;
            }
            let phase = pod.status.as_ref().and_then(|s| s.phase.clone());
            if matches!(phase.as_deref(), Some("Succeeded" | "Failed")) {
                // A finished pod gives its ENIs back and is let go.
                if !held.is_empty() || pod.finalizers().iter().any(|f| f == RELEASE_FINALIZER) {
                    problems.push(format!(
                        "finished pod {name} still holds {held:?}, finalizers {:?}",
                        pod.finalizers()
                    ));
                }
                continue;
            }
            if want == 0 {
                continue;
            }
            if held.len() != want as usize {
                problems.push(format!(
                    "pod {name} wants {want} ENI(s) and holds {}: {held:?}",
                    held.len()
                ));
            }
            let Some(alloc) = allocation(pod) else {
                problems.push(format!("pod {name} has no allocation annotation"));
                continue;
            };
            let named: BTreeSet<String> = alloc.all().iter().map(|a| a.eni_id.clone()).collect();
            if named != held {
                problems.push(format!(
                    "pod {name}: annotation names {named:?}, cloud has {held:?}"
                ));
            }
            let node = pod
                .spec
                .as_ref()
                .and_then(|s| s.node_name.clone())
                .unwrap_or_default();
            for id in &held {
                let Some(e) = enis.iter().find(|e| e.id.as_str() == id) else {
                    continue;
                };
                let on = e.instance_id.as_ref().map(ToString::to_string);
                if e.status != EniStatus::InUse || on.as_deref() != Some(&instance_for(&node)) {
                    problems.push(format!(
                        "pod {name}: ENI {id} is {:?} on {on:?}, want InUse on {}",
                        e.status,
                        instance_for(&node)
                    ));
                }
            }
            let pod_ip = pod.status.as_ref().and_then(|s| s.pod_ip.clone());
            let ip_ok = !pod_ip_must_match || pod_ip.as_deref() == Some(&alloc.first.ip);
            if phase.as_deref() != Some("Running") || !ip_ok {
                problems.push(format!(
                    "pod {name} is {phase:?} with IP {pod_ip:?}, annotation says {}",
                    alloc.first.ip
                ));
            }
            if !pod.finalizers().iter().any(|f| f == RELEASE_FINALIZER) {
                problems.push(format!("pod {name} lacks the release finalizer"));
            }
        }
        problems
    }

    /// Wait until [`Env::eni_problems`] is empty on two looks in a row (so a
    /// change in flight does not pass for the end state).
    pub async fn wait_settled(&self, what: &str) {
        self.wait_settled_within(what, DEADLINE).await
    }

    /// [`Env::wait_settled`] with its own deadline, for waits that include
    /// the controller's retry backoff.
    pub async fn wait_settled_within(&self, what: &str, deadline: Duration) {
        let mut clean = 0;
        let started = Instant::now();
        loop {
            let problems = self.eni_problems(true).await;
            clean = if problems.is_empty() { clean + 1 } else { 0 };
            if clean >= 2 {
                return;
            }
            assert!(
                started.elapsed() < deadline,
                "{what}: ENI state did not settle: {problems:#?}"
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    pub async fn shutdown(self) {
        self.harness.shutdown().await;
    }
}

pub fn node_template(name: &str, instance_type: &str, zone: &str) -> NodeTemplate {
    controller::harness::world::node_template(name, instance_type, zone)
        .expect("known instance type")
}

/// The ENI count a pod asks for (limits, else requests).
pub fn requested_enis(pod: &Pod) -> u32 {
    let Some(spec) = &pod.spec else { return 0 };
    spec.containers
        .iter()
        .filter_map(|c| c.resources.as_ref())
        .filter_map(|r| {
            r.limits
                .as_ref()
                .and_then(|l| l.get(RESOURCE))
                .or_else(|| r.requests.as_ref().and_then(|l| l.get(RESOURCE)))
        })
        .filter_map(|q| q.0.parse::<u32>().ok())
        .sum()
}

pub fn allocation(pod: &Pod) -> Option<PodAllocation> {
    pod.annotations()
        .get(ALLOCATION_ANNOTATION)
        .and_then(|a| PodAllocation::parse(a).ok())
}

/// The node's `aliyun/eni` (capacity, allocatable).
pub fn advertised(node: &Node) -> (Option<String>, Option<String>) {
    let get = |m: Option<
        &BTreeMap<String, k8s_openapi::apimachinery::pkg::api::resource::Quantity>,
    >| { m.and_then(|m| m.get(RESOURCE)).map(|q| q.0.clone()) };
    let status = node.status.as_ref();
    (
        get(status.and_then(|s| s.capacity.as_ref())),
        get(status.and_then(|s| s.allocatable.as_ref())),
    )
}

/// Poll `probe` until it gives `Ok`, failing after [`DEADLINE`] with the last
/// state it described.
pub async fn wait_for<T, F, Fut>(what: &str, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let started = Instant::now();
    loop {
        match probe().await {
            Ok(v) => return v,
            Err(state) => {
                assert!(
                    started.elapsed() < DEADLINE,
                    "timed out waiting for {what}; last state: {state}"
                );
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
