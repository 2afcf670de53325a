//! ENI mode end to end on AWS: the real controller against the fake
//! kube-apiserver (scheduler, kubelet) and moto, a third-party EC2 emulator
//! on 127.0.0.1. Each test asserts what a user sees: node capacity for
//! `vpc.amazonaws.com/eni`, pods running with the IP of an ENI attached to
//! their own node, the scheduler's words for a pod that does not fit, ENIs
//! gone when pods go, nothing leaked or doubled after a crash at any step, and
//! ENIs that are not ours left alone.
//!
//! moto ignores `ClientToken`, so a second ENI for a pod can only be avoided
//! by the controller finding the first one by its tags; the crash tests count
//! the creates each replica makes to prove it.

use aws_sdk_ec2::types::{
    Filter, InstanceType as Ec2InstanceType, NetworkInterface, NetworkInterfaceStatus,
    ResourceType, Tag, TagSpecification,
};
use controller::config::Config;
use controller::eni::{
    CrashAt, PodAllocation, Step, StepHook, ALLOCATION_ANNOTATION, RELEASE_FINALIZER,
};
use controller::harness::crash::ControllerLease;
use controller::harness::moto::Moto;
use controller::harness::{FakeKube, Harness};
use ipam::eni::tag;
use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kube::ResourceExt;
use mocks::kubeapi::nodes::NodeTemplate;
use providers::Cloud;
use serde_json::json;
use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

const CLUSTER: &str = "enie2e";
const RESOURCE: &str = "vpc.amazonaws.com/eni";
const NS: &str = "default";
const ZONE_A: &str = "us-east-1a";
const ZONE_B: &str = "us-east-1b";

/// Poll `probe` until it answers `Ok`; on the (generous) deadline, fail with
/// what `probe` last saw. Never asserts on how long it took.
async fn eventually<T, F, Fut>(what: &str, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        match probe().await {
            Ok(v) => return v,
            Err(state) => {
                if tokio::time::Instant::now() > deadline {
                    panic!("gave up waiting for {what}; last state: {state}");
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The VPC the tests run in: node subnets apart from the ENI subnets so the
/// chosen ENI subnet is visible.
struct Net {
    security_group: String,
    image: String,
    /// Where instances live, per zone.
    node_subnet_a: String,
    node_subnet_b: String,
    /// ENI subnets configured for zone a: a /24 and a smaller /27.
    eni_a_big: String,
    eni_a_small: String,
    /// The ENI subnet configured for zone b.
    eni_b: String,
}

async fn seed(ec2: &aws_sdk_ec2::Client) -> Net {
    let vpc = mocks::moto::vpc(ec2).await;
    let subnet =
        |cidr: &'static str, zone: &'static str| mocks::moto::subnet(ec2, &vpc, cidr, zone);
    let node_subnet_a = subnet("10.0.0.0/24", ZONE_A).await;
    let node_subnet_b = subnet("10.0.100.0/24", ZONE_B).await;
    let eni_a_big = subnet("10.0.1.0/24", ZONE_A).await;
    let eni_a_small = subnet("10.0.2.0/27", ZONE_A).await;
    let eni_b = subnet("10.0.3.0/24", ZONE_B).await;
    let security_group = mocks::moto::pods_security_group(ec2, &vpc).await;
    let image = mocks::moto::any_image(ec2).await;
    Net {
        security_group,
        image,
        node_subnet_a,
        node_subnet_b,
        eni_a_big,
        eni_a_small,
        eni_b,
    }
}

/// moto, the fake apiserver and the seeded VPC of one test.
struct Env {
    /// moto, the fake apiserver and the replicas started on them.
    harness: Harness<Moto>,
    ec2: aws_sdk_ec2::Client,
    client: kube::Client,
    net: Net,
    gc_seconds: u32,
    capacity_resync_seconds: u32,
    /// Replicas elect a leader through a Lease (short, so a killed leader's
    /// lease runs out soon); off by default.
    leader_election: bool,
}

impl Env {
    /// `None` when moto is missing and `SKIP_MOTO_TESTS=1`.
    async fn start() -> Option<Env> {
        let mut kube = FakeKube::options_for(RESOURCE);
        kube.resync = Duration::from_millis(500);
        // Each replica is its own process with its own Lease identity.
        let harness = Harness::start_moto(kube, "eni-aws-e2e").await.unwrap()?;
        let ec2 = harness.moto().sdk();
        let net = seed(&ec2).await;
        let client = harness.client().clone();
        Some(Env {
            harness,
            ec2,
            client,
            net,
            // Long by default: a leaked or doubled ENI must stay visible
            // instead of being cleaned up behind the test's back.
            gc_seconds: 600,
            capacity_resync_seconds: 60,
            leader_election: false,
        })
    }

    fn config(&self) -> Config {
        let n = &self.net;
        Config::parse(&format!(
            r#"
clusterId: {CLUSTER}
provider: {{kind: aws, region: us-east-1, endpoint: "{endpoint}"}}
eni:
  enabled: true
  subnets: {{{ZONE_A}: [{a_big}, {a_small}], {ZONE_B}: [{b}]}}
  securityGroups: [{sg}]
  tags: {{team: net}}
  gcIntervalSeconds: {gc}
  gcGraceSeconds: {gc}
  capacityResyncSeconds: {resync}
  pollIntervalMs: 100
  attachTimeoutSeconds: 30
controller:
  listen: "127.0.0.1:0"
  leaderElection: {{enabled: {le}, namespace: kube-system, leaseDurationSeconds: 3, renewIntervalSeconds: 1}}
"#,
            le = self.leader_election,
            endpoint = self.harness.moto().endpoint,
            a_big = n.eni_a_big,
            a_small = n.eni_a_small,
            b = n.eni_b,
            sg = n.security_group,
            gc = self.gc_seconds,
            resync = self.capacity_resync_seconds,
        ))
        .unwrap()
    }

    /// Start a controller replica (its own cloud client with static test
    /// credentials, like a new process) that stops when `token` is
    /// cancelled; returns its cloud client.
    async fn start_replica(
        &mut self,
        token: CancellationToken,
        hook: Option<Arc<dyn StepHook>>,
    ) -> Arc<dyn Cloud> {
        let config = self.config();
        self.harness
            .start_replica_with(config, token, hook)
            .await
            .unwrap()
            .cloud
    }

    /// Launch one instance of `instance_type` in `zone`'s node subnet.
    async fn launch(&self, instance_type: Ec2InstanceType, zone: &str) -> String {
        let subnet = if zone == ZONE_A {
            &self.net.node_subnet_a
        } else {
            &self.net.node_subnet_b
        };
        let out = self
            .ec2
            .run_instances()
            .image_id(&self.net.image)
            .instance_type(instance_type)
            .subnet_id(subnet)
            .min_count(1)
            .max_count(1)
            .send()
            .await
            .unwrap();
        out.instances()[0].instance_id().unwrap().to_owned()
    }

    /// Register a node the way the kubelet and cloud provider would;
    /// `instance: None` leaves `spec.providerID` unset.
    async fn add_node(&self, name: &str, instance_type: &str, zone: &str, instance: Option<&str>) {
        let mut t = NodeTemplate::new(name, instance_type, "4", "16Gi");
        t.provider_id = instance.map(|i| format!("aws:///{zone}/{i}"));
        t.zone = Some(zone.into());
        let node: Node = serde_json::from_value(t.build()).unwrap();
        self.nodes()
            .create(&PostParams::default(), &node)
            .await
            .unwrap();
    }

    fn nodes(&self) -> Api<Node> {
        Api::all(self.client.clone())
    }

    fn pods(&self) -> Api<Pod> {
        Api::namespaced(self.client.clone(), NS)
    }

    /// A pod asking for `enis` ENIs, scheduled by the scheduler (optionally
    /// onto the node named by `on`). Returns its uid.
    async fn create_pod(&self, name: &str, enis: u32, on: Option<&str>) -> String {
        let mut spec = json!({
            "containers": [{
                "name": "app",
                "image": "nginx",
                "resources": {
                    "requests": {RESOURCE: enis.to_string()},
                    "limits": {RESOURCE: enis.to_string()},
                },
            }],
        });
        if let Some(node) = on {
            spec["nodeSelector"] = json!({"kubernetes.io/hostname": node});
        }
        let pod: Pod = serde_json::from_value(json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, "namespace": NS},
            "spec": spec,
        }))
        .unwrap();
        let created = self
            .pods()
            .create(&PostParams::default(), &pod)
            .await
            .unwrap();
        created.uid().unwrap()
    }

    async fn delete_pod(&self, name: &str) {
        self.pods()
            .delete(name, &DeleteParams::default())
            .await
            .unwrap();
    }

    /// The value the controller advertises for the node, if any.
    async fn capacity(&self, node: &str) -> (Option<String>, Option<String>) {
        let n = self.nodes().get(node).await.unwrap();
        let status = n.status.unwrap_or_default();
        let get = |m: Option<
            BTreeMap<String, k8s_openapi::apimachinery::pkg::api::resource::Quantity>,
        >| { m.and_then(|m| m.get(RESOURCE).map(|q| q.0.clone())) };
        (get(status.capacity), get(status.allocatable))
    }

    async fn wait_capacity(&self, node: &str, want: &str) {
        eventually(
            &format!("{node} to advertise {RESOURCE}={want}"),
            || async {
                let got = self.capacity(node).await;
                if got == (Some(want.to_owned()), Some(want.to_owned())) {
                    Ok(())
                } else {
                    Err(format!("(capacity, allocatable) = {got:?}"))
                }
            },
        )
        .await
    }

    /// Wait until the pod runs with its allocation; returns the allocation.
    async fn wait_running(&self, name: &str) -> (Pod, PodAllocation) {
        eventually(&format!("pod {name} to run with an ENI"), || async {
            let Some(pod) = self.pods().get_opt(name).await.unwrap() else {
                return Err("pod does not exist".into());
            };
            let annotation = pod.annotations().get(ALLOCATION_ANNOTATION).cloned();
            let status = pod.status.clone().unwrap_or_default();
            let phase = status.phase.clone().unwrap_or_default();
            match annotation {
                Some(a) if phase == "Running" => {
                    let alloc = PodAllocation::parse(&a)
                        .map_err(|e| format!("annotation {a:?} does not parse: {e}"))?;
                    Ok((pod, alloc))
                }
                _ => Err(format!(
                    "phase {phase:?}, node {:?}, annotation {annotation:?}, finalizers {:?}, conditions {:?}",
                    pod.spec.as_ref().and_then(|s| s.node_name.clone()),
                    pod.finalizers(),
                    status
                        .conditions
                        .unwrap_or_default()
                        .iter()
                        .map(|c| (c.type_.clone(), c.status.clone(), c.message.clone()))
                        .collect::<Vec<_>>()
                )),
            }
        })
        .await
    }

    async fn wait_pod_gone(&self, name: &str) {
        eventually(&format!("pod {name} to disappear"), || async {
            match self.pods().get_opt(name).await.unwrap() {
                None => Ok(()),
                Some(p) => Err(format!(
                    "still there: deletionTimestamp {:?}, finalizers {:?}",
                    p.metadata.deletion_timestamp,
                    p.finalizers()
                )),
            }
        })
        .await
    }

    /// Every ENI in moto.
    async fn all_enis(&self) -> Vec<NetworkInterface> {
        self.ec2
            .describe_network_interfaces()
            .send()
            .await
            .unwrap()
            .network_interfaces()
            .to_vec()
    }

    /// ENIs the controller made for this cluster (by our cluster tag).
    async fn owned_enis(&self) -> Vec<NetworkInterface> {
        self.all_enis()
            .await
            .into_iter()
            .filter(|n| tag_of(n, tag::CLUSTER) == Some(CLUSTER))
            .collect()
    }

    async fn enis_of_pod(&self, uid: &str) -> Vec<NetworkInterface> {
        self.all_enis()
            .await
            .into_iter()
            .filter(|n| tag_of(n, tag::POD_UID) == Some(uid))
            .collect()
    }

    async fn eni(&self, id: &str) -> Option<NetworkInterface> {
        self.ec2
            .describe_network_interfaces()
            .filters(
                Filter::builder()
                    .name("network-interface-id")
                    .values(id)
                    .build(),
            )
            .send()
            .await
            .unwrap()
            .network_interfaces()
            .iter()
            .find(|n| n.network_interface_id() == Some(id))
            .cloned()
    }

    /// (zone, CIDR) of a subnet.
    async fn subnet(&self, id: &str) -> (String, ipnet::Ipv4Net) {
        let out = self
            .ec2
            .describe_subnets()
            .subnet_ids(id)
            .send()
            .await
            .unwrap();
        let s = &out.subnets()[0];
        (
            s.availability_zone().unwrap().to_owned(),
            s.cidr_block().unwrap().parse().unwrap(),
        )
    }

    /// ENI ids attached to an instance, primary included.
    async fn instance_enis(&self, instance: &str) -> BTreeSet<String> {
        let out = self
            .ec2
            .describe_instances()
            .instance_ids(instance)
            .send()
            .await
            .unwrap();
        out.reservations()
            .iter()
            .flat_map(|r| r.instances())
            .flat_map(|i| i.network_interfaces())
            .filter_map(|n| n.network_interface_id().map(str::to_owned))
            .collect()
    }

    /// An ENI made behind the controller's back, with the given tags.
    async fn foreign_eni(&self, subnet: &str, tags: &[(&str, &str)]) -> String {
        let mut call = self
            .ec2
            .create_network_interface()
            .subnet_id(subnet)
            .groups(&self.net.security_group);
        if !tags.is_empty() {
            call = call.tag_specifications(
                TagSpecification::builder()
                    .resource_type(ResourceType::NetworkInterface)
                    .set_tags(Some(
                        tags.iter()
                            .map(|(k, v)| Tag::builder().key(*k).value(*v).build())
                            .collect(),
                    ))
                    .build(),
            );
        }
        call.send()
            .await
            .unwrap()
            .network_interface()
            .and_then(|n| n.network_interface_id())
            .unwrap()
            .to_owned()
    }

    async fn attach(&self, eni: &str, instance: &str, index: i32) -> String {
        self.ec2
            .attach_network_interface()
            .network_interface_id(eni)
            .instance_id(instance)
            .device_index(index)
            .send()
            .await
            .unwrap()
            .attachment_id()
            .unwrap()
            .to_owned()
    }

    /// Who holds the controller's Lease.
    async fn lease_holder(&self) -> Option<String> {
        ControllerLease::of(&self.config())
            .holder(&self.client)
            .await
            .unwrap()
    }

    /// The crash hook stops a replica through its shutdown token, and a
    /// replica shutting down hands its Lease back; a killed process would
    /// not. Put the Lease back as the kill would have left it: held by
    /// `holder`, just renewed.
    async fn leave_lease_as_a_kill_would(&self, holder: &str) {
        ControllerLease::of(&self.config())
            .leave_as_a_kill_would(&self.client, holder, Duration::from_secs(120))
            .await
            .unwrap();
    }

    /// (reason, note, type) of the Events about one object.
    async fn events_about(&self, name: &str) -> Vec<(String, String, String)> {
        let events: Api<Event> = Api::all(self.client.clone());
        events
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .into_iter()
            .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name))
            .map(|e| {
                (
                    e.reason.unwrap_or_default(),
                    e.note.unwrap_or_default(),
                    e.type_.unwrap_or_default(),
                )
            })
            .collect()
    }
}

fn tag_of<'a>(ni: &'a NetworkInterface, key: &str) -> Option<&'a str> {
    ni.tag_set()
        .iter()
        .find(|t| t.key() == Some(key))
        .and_then(|t| t.value())
}

fn ids(enis: &[NetworkInterface]) -> BTreeSet<String> {
    enis.iter()
        .filter_map(|n| n.network_interface_id().map(str::to_owned))
        .collect()
}

fn describe(enis: &[NetworkInterface]) -> String {
    enis.iter()
        .map(|n| {
            format!(
                "{} {:?} on {:?} pod-uid {:?}",
                n.network_interface_id().unwrap_or_default(),
                n.status(),
                n.attachment().and_then(|a| a.instance_id()),
                tag_of(n, tag::POD_UID)
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// Creates the cloud accepted through one replica's client.
fn creates(cloud: &Arc<dyn Cloud>) -> u64 {
    let c = cloud.stats().get("CreateNetworkInterface");
    c.calls - c.errors
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn capacity_is_the_instance_types_eni_limit_minus_the_primary() {
    let Some(mut env) = Env::start().await else {
        return;
    };
    env.capacity_resync_seconds = 1;
    let medium = env.launch(Ec2InstanceType::T3Medium, ZONE_A).await;
    let xlarge = env.launch(Ec2InstanceType::T3Xlarge, ZONE_A).await;
    let m5 = env.launch(Ec2InstanceType::M5Xlarge, ZONE_B).await;
    env.add_node("medium", "t3.medium", ZONE_A, Some(&medium))
        .await;
    env.add_node("xlarge", "t3.xlarge", ZONE_A, Some(&xlarge))
        .await;
    env.add_node("m5", "m5.xlarge", ZONE_B, Some(&m5)).await;
    // An instance that does not exist, and a node the cloud provider has not
    // initialised yet (one that had a value from earlier must lose it).
    env.add_node("ghost", "t3.medium", ZONE_A, Some("i-0123456789abcdef0"))
        .await;
    let mut stale = NodeTemplate::new("uninitialised", "t3.medium", "4", "16Gi");
    stale.extended = vec![(RESOURCE.into(), "2".into())];
    let stale: Node = serde_json::from_value(stale.build()).unwrap();
    env.nodes()
        .create(&PostParams::default(), &stale)
        .await
        .unwrap();

    let token = CancellationToken::new();
    env.start_replica(token.clone(), None).await;

    // t3.medium: 3 ENIs; t3.xlarge and m5.xlarge: 4 ENIs.
    env.wait_capacity("medium", "2").await;
    env.wait_capacity("xlarge", "3").await;
    env.wait_capacity("m5", "3").await;
    env.wait_capacity("ghost", "0").await;
    let events = eventually(
        "a warning about the node whose instance is missing",
        || async {
            let ev = env.events_about("ghost").await;
            if ev
                .iter()
                .any(|(r, _, t)| r == "EniCapacityUnknown" && t == "Warning")
            {
                Ok(ev)
            } else {
                Err(format!("{ev:?}"))
            }
        },
    )
    .await;
    assert!(
        events
            .iter()
            .any(|(r, note, _)| r == "EniCapacityUnknown" && !note.is_empty()),
        "the warning says why: {events:?}"
    );
    eventually("the key to go from the node without providerID", || async {
        match env.capacity("uninitialised").await {
            (None, None) => Ok(()),
            got => Err(format!("{got:?}")),
        }
    })
    .await;

    // Someone else attaches an ENI to the xlarge: one slot fewer for pods;
    // it goes again: the slot comes back.
    let foreign = env.foreign_eni(&env.net.node_subnet_a, &[]).await;
    let attachment = env.attach(&foreign, &xlarge, 1).await;
    env.wait_capacity("xlarge", "2").await;
    env.ec2
        .detach_network_interface()
        .attachment_id(attachment)
        .send()
        .await
        .unwrap();
    env.wait_capacity("xlarge", "3").await;
    // The others never changed.
    assert_eq!(
        env.capacity("medium").await,
        (Some("2".into()), Some("2".into()))
    );

    // The medium node is replaced by a bigger instance under the same name.
    env.nodes()
        .delete("medium", &DeleteParams::default())
        .await
        .unwrap();
    let bigger = env.launch(Ec2InstanceType::T3Xlarge, ZONE_A).await;
    eventually("the old medium node to be gone", || async {
        match env.nodes().get_opt("medium").await.unwrap() {
            None => Ok(()),
            Some(_) => Err("still there".into()),
        }
    })
    .await;
    env.add_node("medium", "t3.xlarge", ZONE_A, Some(&bigger))
        .await;
    env.wait_capacity("medium", "3").await;
    token.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_get_enis_on_their_own_node_in_a_subnet_of_its_zone_and_lose_them_on_delete() {
    let Some(mut env) = Env::start().await else {
        return;
    };
    let inst_a = env.launch(Ec2InstanceType::T3Xlarge, ZONE_A).await;
    let inst_b = env.launch(Ec2InstanceType::T3Medium, ZONE_B).await;
    env.add_node("node-a", "t3.xlarge", ZONE_A, Some(&inst_a))
        .await;
    env.add_node("node-b", "t3.medium", ZONE_B, Some(&inst_b))
        .await;
    let token = CancellationToken::new();
    env.start_replica(token.clone(), None).await;
    env.wait_capacity("node-a", "3").await;
    env.wait_capacity("node-b", "2").await;

    let uid_a = env.create_pod("web-a", 1, Some("node-a")).await;
    let uid_b = env.create_pod("web-b", 1, Some("node-b")).await;
    let uid_two = env.create_pod("two", 2, Some("node-a")).await;

    for (pod, uid, node, instance, zone, want_subnet) in [
        (
            "web-a",
            &uid_a,
            "node-a",
            &inst_a,
            ZONE_A,
            &env.net.eni_a_big,
        ),
        ("web-b", &uid_b, "node-b", &inst_b, ZONE_B, &env.net.eni_b),
    ] {
        let (running, alloc) = env.wait_running(pod).await;
        assert!(running.finalizers().iter().any(|f| f == RELEASE_FINALIZER));
        assert!(alloc.enis.is_empty(), "one ENI, flat annotation: {alloc:?}");
        let a = &alloc.first;
        assert_eq!(a.node, node);
        let ni = env.eni(&a.eni_id).await.expect("the annotated ENI exists");
        // Attached to its own node's instance, in use.
        assert_eq!(
            ni.attachment().and_then(|x| x.instance_id()),
            Some(instance.as_str()),
            "{pod}"
        );
        assert_eq!(ni.status(), Some(&NetworkInterfaceStatus::InUse), "{pod}");
        // Ours, for this pod.
        let (ck, cv) = providers::aws::cluster_tag(&CLUSTER.into());
        assert_eq!(tag_of(&ni, &ck), Some(cv.as_str()), "{pod}");
        assert_eq!(tag_of(&ni, tag::CLUSTER), Some(CLUSTER));
        assert_eq!(tag_of(&ni, tag::POD_UID), Some(uid.as_str()));
        assert_eq!(tag_of(&ni, tag::POD_NAMESPACE), Some(NS));
        assert_eq!(tag_of(&ni, tag::POD_NAME), Some(pod));
        assert_eq!(tag_of(&ni, tag::NODE), Some(node));
        assert_eq!(tag_of(&ni, tag::CREATOR), Some(tag::CREATOR_VALUE));
        assert_eq!(tag_of(&ni, "team"), Some("net"), "configured extra tag");
        assert_eq!(
            ni.groups()
                .iter()
                .filter_map(|g| g.group_id())
                .collect::<Vec<_>>(),
            vec![env.net.security_group.as_str()]
        );
        // A subnet of the node's zone: the configured one with most free IPs.
        let subnet = ni.subnet_id().unwrap().to_owned();
        assert_eq!(&subnet, want_subnet, "{pod}");
        let (subnet_zone, cidr) = env.subnet(&subnet).await;
        assert_eq!(subnet_zone, zone);
        assert_eq!(a.subnet_id, subnet);
        assert_eq!(a.subnet_cidr, cidr.to_string());
        // EC2 reserves the subnet's first host address for the router.
        let gateway = cidr.hosts().next().unwrap().to_string();
        assert_eq!(a.gateway, gateway);
        // The pod's IP is the ENI's.
        assert_eq!(Some(a.ip.as_str()), ni.private_ip_address());
        assert!(cidr.contains(&a.ip.parse::<std::net::Ipv4Addr>().unwrap()));
        assert_eq!(Some(a.mac.as_str()), ni.mac_address());
        let status = running.status.unwrap();
        assert_eq!(status.pod_ip.as_deref(), Some(a.ip.as_str()), "{pod}");
        // And only this ENI carries the pod's uid.
        assert_eq!(
            ids(&env.enis_of_pod(uid).await),
            BTreeSet::from([a.eni_id.clone()])
        );
        let events = env.events_about(pod).await;
        assert!(
            events.iter().any(|(r, note, t)| r == "AllocIPSucceed"
                && t == "Normal"
                && note.contains(&a.eni_id)
                && note.contains(&a.ip)),
            "{events:?}"
        );
    }

    // Two ENIs: both listed, both attached to node-a, distinct.
    let (two, alloc) = env.wait_running("two").await;
    let listed: Vec<&str> = alloc.all().iter().map(|e| e.eni_id.as_str()).collect();
    assert_eq!(listed.len(), 2, "{alloc:?}");
    assert_eq!(alloc.first, alloc.enis[0]);
    assert_eq!(
        ids(&env.enis_of_pod(&uid_two).await),
        listed.iter().map(|s| s.to_string()).collect()
    );
    for e in alloc.all() {
        let ni = env.eni(&e.eni_id).await.unwrap();
        assert_eq!(
            ni.attachment().and_then(|x| x.instance_id()),
            Some(inst_a.as_str())
        );
        assert_eq!(ni.subnet_id(), Some(env.net.eni_a_big.as_str()));
    }
    assert_eq!(
        two.status.unwrap().pod_ip.as_deref(),
        Some(alloc.first.ip.as_str())
    );
    // node-a holds its primary, web-a's and two's: 4 of 4.
    assert_eq!(env.instance_enis(&inst_a).await.len(), 4);

    // Deleting pods detaches and deletes their ENIs, then the pods go.
    let before = env.owned_enis().await;
    assert_eq!(before.len(), 4, "{}", describe(&before));
    for pod in ["web-a", "web-b", "two"] {
        env.delete_pod(pod).await;
    }
    for pod in ["web-a", "web-b", "two"] {
        env.wait_pod_gone(pod).await;
    }
    for ni in &before {
        let id = ni.network_interface_id().unwrap();
        assert!(env.eni(id).await.is_none(), "{id} still exists");
    }
    assert_eq!(env.instance_enis(&inst_a).await.len(), 1, "primary only");
    assert_eq!(env.instance_enis(&inst_b).await.len(), 1, "primary only");
    let left = env.owned_enis().await;
    assert!(left.is_empty(), "leaked: {}", describe(&left));
    token.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn third_pod_on_a_t3_medium_stays_pending_in_the_schedulers_words_until_one_goes() {
    let Some(mut env) = Env::start().await else {
        return;
    };
    let instance = env.launch(Ec2InstanceType::T3Medium, ZONE_A).await;
    env.add_node("node", "t3.medium", ZONE_A, Some(&instance))
        .await;
    let token = CancellationToken::new();
    env.start_replica(token.clone(), None).await;
    env.wait_capacity("node", "2").await;

    env.create_pod("p1", 1, None).await;
    env.create_pod("p2", 1, None).await;
    let (_, a1) = env.wait_running("p1").await;
    let (_, a2) = env.wait_running("p2").await;
    assert_ne!(a1.first.eni_id, a2.first.eni_id);

    env.create_pod("p3", 1, None).await;
    let want = format!("0/1 nodes are available: 1 Insufficient {RESOURCE}.");
    let p3 = eventually("p3 to be unschedulable", || async {
        let pod = env.pods().get("p3").await.unwrap();
        let cond = pod
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .and_then(|cs| cs.iter().find(|c| c.type_ == "PodScheduled"))
            .map(|c| (c.status.clone(), c.message.clone()));
        if cond.as_ref().is_some_and(|c| c.0 == "False") {
            Ok(pod)
        } else {
            Err(format!("PodScheduled {cond:?}"))
        }
    })
    .await;
    let status = p3.status.unwrap();
    assert_eq!(status.phase.as_deref(), Some("Pending"));
    let cond = status
        .conditions
        .unwrap()
        .into_iter()
        .find(|c| c.type_ == "PodScheduled")
        .unwrap();
    assert_eq!(cond.message.as_deref(), Some(want.as_str()));
    assert!(p3.spec.unwrap().node_name.is_none());
    let events = env.events_about("p3").await;
    assert!(
        events
            .iter()
            .any(|(r, note, t)| r == "FailedScheduling" && t == "Warning" && *note == want),
        "{events:?}"
    );
    // No ENI for a pod that has no node.
    assert_eq!(env.owned_enis().await.len(), 2);

    // One running pod goes: its ENI goes, and the pending pod gets one.
    env.delete_pod("p1").await;
    env.wait_pod_gone("p1").await;
    assert!(env.eni(&a1.first.eni_id).await.is_none());
    let (p3, a3) = env.wait_running("p3").await;
    assert_eq!(p3.spec.unwrap().node_name.as_deref(), Some("node"));
    let ni = env.eni(&a3.first.eni_id).await.unwrap();
    assert_eq!(
        ni.attachment().and_then(|x| x.instance_id()),
        Some(instance.as_str())
    );
    assert_eq!(env.instance_enis(&instance).await.len(), 3);
    token.cancel();
}

/// Kill a replica right after `step` of a pod asking for `enis` ENIs, start
/// a new replica, and check the end state: the pod runs with exactly the
/// ENIs it asked for (none created twice) or, for a release step, the pod
/// and all its ENIs are gone; no owned ENI is left over.
async fn crash_then_recover(step: Step, enis: u32) {
    let Some(env) = Env::start().await else {
        return;
    };
    crash_then_recover_in(env, step, enis).await;
}

async fn crash_then_recover_in(mut env: Env, step: Step, enis: u32) {
    let instance = env.launch(Ec2InstanceType::T3Xlarge, ZONE_A).await;
    env.add_node("node", "t3.xlarge", ZONE_A, Some(&instance))
        .await;
    let releasing = Step::RELEASE.contains(&step);

    let first = CancellationToken::new();
    let crash = CrashAt::new(step, first.clone());
    let cloud_a = env.start_replica(first.clone(), Some(crash.clone())).await;
    env.wait_capacity("node", "3").await;
    let killed_leader = if env.leader_election {
        Some(env.lease_holder().await.expect("the first replica leads"))
    } else {
        None
    };
    let uid = env.create_pod("web", enis, None).await;
    if releasing {
        let (_, alloc) = env.wait_running("web").await;
        assert_eq!(alloc.all().len() as u32, enis);
        env.delete_pod("web").await;
    }
    eventually(&format!("the crash at {step:?}"), || async {
        if crash.fired() {
            Ok(())
        } else {
            let pod = env.pods().get_opt("web").await.unwrap();
            Err(format!(
                "not yet; pod {:?}; ENIs {}",
                pod.map(|p| (p.finalizers().to_vec(), p.annotations().clone())),
                describe(&env.enis_of_pod(&uid).await)
            ))
        }
    })
    .await;
    assert!(first.is_cancelled());
    if enis == 1 {
        check_state_left_by_crash(&env, step, &uid, &instance).await;
    }
    let made_by_first = creates(&cloud_a);
    if let Some(killed) = &killed_leader {
        env.leave_lease_as_a_kill_would(killed).await;
    }

    let second = CancellationToken::new();
    let cloud_b = env.start_replica(second.clone(), None).await;
    if releasing {
        env.wait_pod_gone("web").await;
        eventually("the pod's ENIs to be deleted", || async {
            let left = env.enis_of_pod(&uid).await;
            if left.is_empty() {
                Ok(())
            } else {
                Err(describe(&left))
            }
        })
        .await;
        assert_eq!(creates(&cloud_b), 0, "a release creates nothing");
    } else {
        let (_, alloc) = env.wait_running("web").await;
        let annotated: BTreeSet<String> = alloc.all().iter().map(|e| e.eni_id.clone()).collect();
        assert_eq!(annotated.len() as u32, enis, "{alloc:?}");
        let tagged = env.enis_of_pod(&uid).await;
        assert_eq!(ids(&tagged), annotated, "{}", describe(&tagged));
        for ni in &tagged {
            assert_eq!(
                ni.attachment().and_then(|a| a.instance_id()),
                Some(instance.as_str())
            );
        }
        // moto ignores ClientToken: only the tag lookup kept the second
        // replica from making what the first one already had.
        assert_eq!(
            made_by_first + creates(&cloud_b),
            u64::from(enis),
            "creates: first replica {made_by_first}, second {}",
            creates(&cloud_b)
        );
        // And the pod's ENIs are released normally afterwards.
        env.delete_pod("web").await;
        env.wait_pod_gone("web").await;
    }
    let left = env.owned_enis().await;
    assert!(left.is_empty(), "leaked: {}", describe(&left));
    assert_eq!(env.instance_enis(&instance).await.len(), 1, "primary only");
    if let Some(killed) = killed_leader {
        let now = env.lease_holder().await;
        assert!(
            now.is_some() && now.as_ref() != Some(&killed),
            "the second replica leads: holder {now:?}, killed {killed}"
        );
    }
    second.cancel();
}

/// What a kill right after `step` leaves behind for a one-ENI pod: proof
/// that the crash came where the step says, so the second replica really
/// starts from that state.
async fn check_state_left_by_crash(env: &Env, step: Step, uid: &str, instance: &str) {
    let pod = env.pods().get_opt("web").await.unwrap();
    let tagged = env.enis_of_pod(uid).await;
    let state = format!(
        "pod {:?}; ENIs {}",
        pod.as_ref()
            .map(|p| (p.finalizers().to_vec(), p.annotations().clone())),
        describe(&tagged)
    );
    let pod = pod.unwrap_or_else(|| panic!("the pod is gone after a crash at {step:?}: {state}"));
    assert!(
        pod.finalizers().iter().any(|f| f == RELEASE_FINALIZER),
        "{step:?}: {state}"
    );
    let annotated = pod.annotations().contains_key(ALLOCATION_ANNOTATION);
    let attached_here =
        |n: &NetworkInterface| n.attachment().and_then(|a| a.instance_id()) == Some(instance);
    let ok = match step {
        Step::FinalizerAdded => tagged.is_empty() && !annotated,
        Step::EniCreated => tagged.len() == 1 && tagged[0].attachment().is_none() && !annotated,
        Step::AttachRequested => tagged.len() == 1 && attached_here(&tagged[0]) && !annotated,
        Step::EniInUse => {
            tagged.len() == 1
                && attached_here(&tagged[0])
                && tagged[0].status() == Some(&NetworkInterfaceStatus::InUse)
                && !annotated
        }
        Step::Annotated => tagged.len() == 1 && annotated,
        Step::DetachRequested | Step::EniDetached => {
            tagged.len() == 1 && (step == Step::DetachRequested || tagged[0].attachment().is_none())
        }
        Step::EniDeleted => tagged.is_empty(),
        // Shared-mode steps: exclusive pods never reach them.
        Step::IpsAssigned | Step::IpsUnassigned => false,
    };
    assert!(ok, "unexpected state after a crash at {step:?}: {state}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_after_finalizer_added() {
    crash_then_recover(Step::FinalizerAdded, 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_after_eni_created() {
    crash_then_recover(Step::EniCreated, 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_after_attach_requested() {
    crash_then_recover(Step::AttachRequested, 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_after_eni_in_use() {
    crash_then_recover(Step::EniInUse, 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_after_annotated() {
    crash_then_recover(Step::Annotated, 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_after_detach_requested() {
    crash_then_recover(Step::DetachRequested, 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_after_eni_detached() {
    crash_then_recover(Step::EniDetached, 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_after_eni_deleted() {
    crash_then_recover(Step::EniDeleted, 1).await;
}

/// A killed leader leaves its Lease behind: the next replica waits for it to
/// run out, takes over, and finishes the interrupted allocation and release.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_of_the_leader_then_the_next_leader_finishes_the_work() {
    for step in [Step::AttachRequested, Step::DetachRequested] {
        let Some(mut env) = Env::start().await else {
            return;
        };
        env.leader_election = true;
        crash_then_recover_in(env, step, 1).await;
    }
}

/// A pod asking for two ENIs, killed after the first is created or
/// attached: the second replica makes only the one still missing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_midway_through_a_two_eni_pod() {
    crash_then_recover(Step::EniCreated, 2).await;
    crash_then_recover(Step::AttachRequested, 2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gc_releases_our_orphans_and_never_touches_what_is_not_ours() {
    let Some(mut env) = Env::start().await else {
        return;
    };
    env.gc_seconds = 1;
    let instance = env.launch(Ec2InstanceType::T3Xlarge, ZONE_A).await;
    env.add_node("node", "t3.xlarge", ZONE_A, Some(&instance))
        .await;
    let subnet = env.net.eni_a_big.clone();
    let (ck, cv) = providers::aws::cluster_tag(&CLUSTER.into());
    let other_cluster_key = "kubernetes.io/cluster/other".to_owned();

    // Not ours: no tags at all; another cluster's ENI made by this very
    // controller; one carrying only the cloud provider's tag for our cluster
    // (another tool of the same cluster). The untagged one is attached.
    let untagged = env.foreign_eni(&subnet, &[]).await;
    env.attach(&untagged, &instance, 1).await;
    let other_cluster = env
        .foreign_eni(
            &subnet,
            &[
                (tag::CREATOR, tag::CREATOR_VALUE),
                (tag::CLUSTER, "other"),
                (tag::POD_UID, "0000-gone"),
                (other_cluster_key.as_str(), "owned"),
            ],
        )
        .await;
    let same_cluster_other_tool = env
        .foreign_eni(&subnet, &[(ck.as_str(), cv.as_str())])
        .await;
    let not_ours = [
        untagged.clone(),
        other_cluster.clone(),
        same_cluster_other_tool.clone(),
    ];

    // Ours, for a pod that no longer exists: one attached, one not.
    let orphan_cloud = env.harness.moto().cloud(CLUSTER).await;
    let mut orphans = Vec::new();
    for (i, attach) in [(0u32, true), (1, false)] {
        let pod = ipam::eni::PodRef {
            namespace: NS.into(),
            name: format!("gone-{i}"),
            uid: format!("00000000-0000-0000-0000-00000000000{i}"),
        };
        let request = providers::model::CreateEniRequest {
            subnet_id: subnet.as_str().into(),
            security_groups: vec![env.net.security_group.as_str().into()],
            secondary_ip_count: 0,
            tags: ipam::eni::owned_eni_tags(&CLUSTER.into(), &pod, "node"),
            description: "made by an earlier controller".into(),
            idempotency_token: ipam::eni::eni_client_token(&pod.uid, 0),
        };
        let eni = orphan_cloud.create_eni(&request).await.unwrap();
        if attach {
            orphan_cloud
                .attach_eni(&eni.id, &instance.as_str().into())
                .await
                .unwrap();
        }
        orphans.push(eni.id.to_string());
    }

    let token = CancellationToken::new();
    let cloud = env.start_replica(token.clone(), None).await;
    // A live pod's ENI must survive GC too.
    env.create_pod("live", 1, None).await;
    let (_, live) = env.wait_running("live").await;

    eventually("GC to release our orphans", || async {
        let mut left = Vec::new();
        for id in &orphans {
            if let Some(ni) = env.eni(id).await {
                left.push(ni);
            }
        }
        if left.is_empty() {
            Ok(())
        } else {
            Err(describe(&left))
        }
    })
    .await;
    // Several more passes: note the describe count, wait until it has grown
    // well past one GC pass, then look again.
    let listed = cloud.stats().get("DescribeNetworkInterfaces").calls;
    eventually("more GC passes", || async {
        let now = cloud.stats().get("DescribeNetworkInterfaces").calls;
        if now >= listed + 3 {
            Ok(())
        } else {
            Err(format!("DescribeNetworkInterfaces calls {listed} -> {now}"))
        }
    })
    .await;
    for id in &not_ours {
        let ni = env.eni(id).await;
        assert!(ni.is_some(), "{id} is not ours and was deleted");
    }
    let untagged_now = env.eni(&untagged).await.unwrap();
    assert_eq!(
        untagged_now.attachment().and_then(|a| a.instance_id()),
        Some(instance.as_str()),
        "the untagged ENI was detached"
    );
    let live_eni = env.eni(&live.first.eni_id).await.expect("live pod's ENI");
    assert_eq!(
        live_eni.attachment().and_then(|a| a.instance_id()),
        Some(instance.as_str())
    );
    let (_, still) = env.wait_running("live").await;
    assert_eq!(still.first.eni_id, live.first.eni_id);
    token.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_allocation_whose_eni_vanished_is_made_again() {
    let Some(mut env) = Env::start().await else {
        return;
    };
    env.gc_seconds = 1;
    let instance = env.launch(Ec2InstanceType::T3Medium, ZONE_A).await;
    env.add_node("node", "t3.medium", ZONE_A, Some(&instance))
        .await;
    let token = CancellationToken::new();
    env.start_replica(token.clone(), None).await;
    let uid = env.create_pod("web", 1, None).await;
    let (_, before) = env.wait_running("web").await;

    // Someone detaches and deletes the pod's ENI behind our back.
    let ni = env.eni(&before.first.eni_id).await.unwrap();
    let attachment = ni.attachment().and_then(|a| a.attachment_id()).unwrap();
    env.ec2
        .detach_network_interface()
        .attachment_id(attachment)
        .send()
        .await
        .unwrap();
    env.ec2
        .delete_network_interface()
        .network_interface_id(&before.first.eni_id)
        .send()
        .await
        .unwrap();

    let after = eventually("the allocation to be made again", || async {
        let pod = env.pods().get("web").await.unwrap();
        let a = pod
            .annotations()
            .get(ALLOCATION_ANNOTATION)
            .and_then(|a| PodAllocation::parse(a).ok());
        match a {
            Some(a) if a.first.eni_id != before.first.eni_id => Ok(a),
            other => Err(format!("annotation {other:?}")),
        }
    })
    .await;
    let ni = env.eni(&after.first.eni_id).await.expect("the new ENI");
    assert_eq!(
        ni.attachment().and_then(|a| a.instance_id()),
        Some(instance.as_str())
    );
    assert_eq!(
        ids(&env.enis_of_pod(&uid).await),
        BTreeSet::from([after.first.eni_id.clone()])
    );
    token.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_subnet_or_a_zone_without_subnets_offers_no_eni_and_other_pods_go_on() {
    let Some(mut env) = Env::start().await else {
        return;
    };
    let vpc = env
        .ec2
        .describe_subnets()
        .subnet_ids(&env.net.eni_b)
        .send()
        .await
        .unwrap()
        .subnets()[0]
        .vpc_id()
        .unwrap()
        .to_owned();
    let subnet = |cidr: &'static str, zone: &'static str| {
        let ec2 = env.ec2.clone();
        let vpc = vpc.clone();
        async move {
            ec2.create_subnet()
                .vpc_id(vpc)
                .cidr_block(cidr)
                .availability_zone(zone)
                .send()
                .await
                .unwrap()
                .subnet
                .unwrap()
                .subnet_id
                .unwrap()
        }
    };
    // Zone b's only ENI subnet is a /28 (11 usable addresses), filled by
    // someone else; zone c has no ENI subnet configured at all.
    let tiny_b = subnet("10.0.4.0/28", ZONE_B).await;
    let node_subnet_c = subnet("10.0.200.0/24", "us-east-1c").await;
    env.net.eni_b = tiny_b.clone();
    let mut fillers = Vec::new();
    for _ in 0..11 {
        fillers.push(env.foreign_eni(&tiny_b, &[]).await);
    }
    let inst_a = env.launch(Ec2InstanceType::T3Medium, ZONE_A).await;
    let inst_b = env.launch(Ec2InstanceType::T3Medium, ZONE_B).await;
    let inst_c = env
        .ec2
        .run_instances()
        .image_id(&env.net.image)
        .instance_type(Ec2InstanceType::T3Medium)
        .subnet_id(&node_subnet_c)
        .min_count(1)
        .max_count(1)
        .send()
        .await
        .unwrap()
        .instances()[0]
        .instance_id()
        .unwrap()
        .to_owned();
    env.add_node("node-a", "t3.medium", ZONE_A, Some(&inst_a))
        .await;
    env.add_node("node-b", "t3.medium", ZONE_B, Some(&inst_b))
        .await;
    env.add_node("node-c", "t3.medium", "us-east-1c", Some(&inst_c))
        .await;
    let token = CancellationToken::new();
    env.start_replica(token.clone(), None).await;
    env.wait_capacity("node-a", "2").await;
    // Zone b's subnets have no free address: its node offers none, as it
    // could not make one.
    env.wait_capacity("node-b", "0").await;
    // No subnet for zone c: that node offers no ENI and says why.
    env.wait_capacity("node-c", "0").await;
    let warning = eventually("EniCapacityUnknown on node-c", || async {
        let ev = env.events_about("node-c").await;
        match ev
            .iter()
            .find(|(r, _, t)| r == "EniCapacityUnknown" && t == "Warning")
        {
            Some((_, note, _)) => Ok(note.clone()),
            None => Err(format!("{ev:?}")),
        }
    })
    .await;
    assert!(
        warning.contains("us-east-1c") && warning.contains("eni.subnets"),
        "{warning}"
    );

    env.create_pod("full", 1, Some("node-b")).await;
    env.create_pod("nowhere", 1, Some("node-c")).await;
    env.create_pod("fine", 1, Some("node-a")).await;

    // The scheduler keeps both pods off the nodes that cannot serve them
    // (zone c: no subnet; zone b: no free address), in its own words.
    for pod in ["nowhere", "full"] {
        let why = eventually(&format!("FailedScheduling on {pod}"), || async {
            let ev = env.events_about(pod).await;
            match ev
                .iter()
                .find(|(r, _, t)| r == "FailedScheduling" && t == "Warning")
            {
                Some((_, note, _)) => Ok(note.clone()),
                None => Err(format!("{ev:?}")),
            }
        })
        .await;
        assert!(
            why.contains("1 Insufficient vpc.amazonaws.com/eni"),
            "{pod}: {why}"
        );
    }
    // The other pod is not held up by the two that fail.
    let (_, fine) = env.wait_running("fine").await;
    assert_eq!(
        env.eni(&fine.first.eni_id)
            .await
            .unwrap()
            .attachment()
            .and_then(|a| a.instance_id()),
        Some(inst_a.as_str())
    );
    // Nothing was created in the full subnet (moto would have allowed it)
    // and nothing at all for the pod without a subnet.
    let owned = env.owned_enis().await;
    assert_eq!(ids(&owned), BTreeSet::from([fine.first.eni_id.clone()]));
    for pod in ["full", "nowhere"] {
        let p = env.pods().get(pod).await.unwrap();
        assert!(p.annotations().get(ALLOCATION_ANNOTATION).is_none());
        assert_ne!(
            p.status.and_then(|s| s.phase).as_deref(),
            Some("Running"),
            "{pod}"
        );
    }

    // An address comes free: the node's next recount offers it, and the
    // pod is scheduled and gets its ENI there.
    env.ec2
        .delete_network_interface()
        .network_interface_id(&fillers[0])
        .send()
        .await
        .unwrap();
    let (_, full) = env.wait_running("full").await;
    assert_eq!(full.first.subnet_id, tiny_b);
    token.cancel();
}

/// moto accepts two attachments at one device index; real EC2 refuses the
/// second. A burst of pods on one node, attached concurrently, must still
/// end with one ENI per device index: each attach in flight picks its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_on_one_node_attaches_at_distinct_device_indexes() {
    let Some(mut env) = Env::start().await else {
        return;
    };
    let instance = env.launch(Ec2InstanceType::T3Xlarge, ZONE_A).await;
    env.add_node("node", "t3.xlarge", ZONE_A, Some(&instance))
        .await;
    let token = CancellationToken::new();
    env.start_replica(token.clone(), None).await;
    env.wait_capacity("node", "3").await;
    for i in 0..3 {
        env.create_pod(&format!("burst-{i}"), 1, None).await;
    }
    let mut annotated = BTreeSet::new();
    for i in 0..3 {
        let (_, a) = env.wait_running(&format!("burst-{i}")).await;
        annotated.insert(a.first.eni_id);
    }
    assert_eq!(annotated.len(), 3);
    let mut indexes: Vec<i32> = env
        .all_enis()
        .await
        .iter()
        .filter(|n| n.attachment().and_then(|a| a.instance_id()) == Some(instance.as_str()))
        .filter_map(|n| n.attachment().and_then(|a| a.device_index()))
        .collect();
    indexes.sort();
    assert_eq!(indexes, vec![0, 1, 2, 3], "device indexes on {instance}");
    token.cancel();
}

/// A pod that ran to completion keeps existing, but its ENI goes back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_completed_pod_gives_its_eni_back() {
    let Some(mut env) = Env::start().await else {
        return;
    };
    let instance = env.launch(Ec2InstanceType::T3Medium, ZONE_A).await;
    env.add_node("node", "t3.medium", ZONE_A, Some(&instance))
        .await;
    let token = CancellationToken::new();
    env.start_replica(token.clone(), None).await;
    env.wait_capacity("node", "2").await;
    env.create_pod("job", 1, None).await;
    let (_, alloc) = env.wait_running("job").await;
    env.pods()
        .patch_status(
            "job",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(json!({"status": {"phase": "Succeeded"}})),
        )
        .await
        .unwrap();
    eventually("the completed pod's ENI to be deleted", || async {
        match env.eni(&alloc.first.eni_id).await {
            None => Ok(()),
            Some(n) => Err(describe(&[n])),
        }
    })
    .await;
    eventually("the finalizer to go from the completed pod", || async {
        let p = env.pods().get("job").await.unwrap();
        if p.finalizers().iter().any(|f| f == RELEASE_FINALIZER) {
            Err(format!("finalizers {:?}", p.finalizers()))
        } else {
            Ok(())
        }
    })
    .await;
    let p = env.pods().get("job").await.unwrap();
    assert_eq!(p.status.and_then(|s| s.phase).as_deref(), Some("Succeeded"));
    assert_eq!(env.instance_enis(&instance).await.len(), 1, "primary only");
    assert!(env.owned_enis().await.is_empty());
    token.cancel();
}
