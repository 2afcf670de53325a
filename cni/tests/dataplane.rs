//! The node data path end to end, with the real controller writing the
//! cloud state: a harness world (the in-memory Alibaba cloud behind its
//! OpenAPI front, the fake apiserver with scheduler and kubelet stand-in, a
//! controller replica), the lab following that cloud (`mocks::lab`: vSwitch
//! bridges, a router whose routes are the VPC route table, node namespaces
//! whose ENIs are links with the cloud's MACs, a VM), and the built
//! `vpc-eni-cni` run through the lab the way a runtime runs it, for the pods
//! the scheduler bound. Packets decide.
//!
//! Root only (the lab is network namespaces): elsewhere each test prints why
//! and passes. The lab removes everything it made when dropped, also when a
//! test fails; packets start only inside its namespaces.

use controller::config::Config;
use controller::harness::world::NodeSpec;
use controller::harness::{AlibabaWorld, Harness};
use ipam::allocation::PodAllocation;
use ipam::ids::{EniId, InstanceId, SubnetId};
use ipnet::Ipv4Net;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, DeleteParams, PostParams};
use mocks::kubeapi::Options;
use mocks::lab::{CniCall, CniCommand, CniOutcome, Lab, LabConfig, Netns, PodRef, RouteTarget};
use serde_json::{json, Value};
use std::future::Future;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_vpc-eni-cni");
const REFERENCE_PLUGINS: &str = "/usr/lib/cni";

const CLUSTER: &str = "dp";
const ZONE: &str = "cn-hangzhou-h";
/// 3 ENIs with the primary: 2 for pods.
const NODE_TYPE: &str = "ecs.c6.xlarge";
const RESOURCE: &str = "aliyun/eni";
const CLUSTER_CIDR: &str = "10.244.0.0/16";
const SERVICE_CIDR: &str = "10.96.0.0/12";
/// A ClusterIP the node answers for (what kube-proxy's rules would do).
const SERVICE_IP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 10);
/// The vSwitch gateway: the router's leg.
const GATEWAY: Ipv4Addr = Ipv4Addr::new(192, 168, 0, 253);

/// How long a change may take to show (a controller pass, a lab pass, ARP).
const SETTLE: Duration = Duration::from_secs(60);
/// How long a ping may take to start or stop answering.
const ANSWER: Duration = Duration::from_secs(10);

/// One vSwitch for nodes, ENIs and the VM. A detach takes 3 s before the
/// cloud acts on it (as Alibaba's does, seconds), so a DEL run right after
/// the pod's deletion finds its ENI still attached.
const WORLD: &str = r#"
region: cn-hangzhou
accessKeys: [{id: dp-key, secret: dp-secret-not-a-real-one}]
vpcs: [{id: vpc-dp, cidr: 192.168.0.0/16, routeTables: [{id: vtb-dp, main: true}]}]
vswitches:
  - {id: vsw-dp, vpc: vpc-dp, zone: cn-hangzhou-h, cidr: 192.168.0.0/24}
securityGroups: [{id: sg-dp, vpc: vpc-dp}]
faults:
  attachDelayMs: 200
  detachDelayMs: 200
  routeDelayMs: 200
  DetachNetworkInterface: {latencyMs: 3000}
"#;

/// Why these tests cannot run here, if they cannot.
fn skip_reason() -> Option<String> {
    if let Err(why) = Lab::available() {
        return Some(why);
    }
    ["ptp", "host-local"]
        .iter()
        .find(|p| !Path::new(REFERENCE_PLUGINS).join(p).exists())
        .map(|p| {
            format!(
                "{p} is not in {REFERENCE_PLUGINS} (apt-get install containernetworking-plugins)"
            )
        })
}

macro_rules! skip_unless_lab {
    () => {
        if let Some(why) = skip_reason() {
            eprintln!("skipped: {why}");
            return;
        }
    };
}

/// Poll `probe` every 100 ms until it gives `Some`, failing after `within`
/// with `what` and the last state it described.
async fn until<T, F, Fut>(what: &str, within: Duration, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let started = Instant::now();
    loop {
        match probe().await {
            Ok(v) => return v,
            Err(state) => assert!(
                started.elapsed() < within,
                "timed out waiting for {what}; last state: {state}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A scratch directory (kubeconfig, the plugin's state, host-local's
/// leases), removed on drop.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Which modes the controller runs.
#[derive(Clone, Copy)]
struct Modes {
    routes: bool,
    eni: bool,
    /// Shared-ENI mode on every node (the node half learns it from the
    /// node's annotation: the network config does not say it).
    shared: bool,
}

/// One test's world: the harness, the lab following its cloud, and what
/// the plugin needs to reach the fake apiserver.
struct Dp {
    harness: Harness<AlibabaWorld>,
    lab: Lab,
    dir: Scratch,
    kubeconfig: PathBuf,
    next_host: u8,
}

impl Dp {
    async fn start(prefix: &str) -> Dp {
        let ali = AlibabaWorld::from_yaml(WORLD).await.expect("fake alibaba");
        let harness = Harness::start(ali, Options::default(), &format!("{prefix}-replica"))
            .await
            .expect("harness");
        let lab = Lab::start(harness.cloud.world().clone(), LabConfig::new(prefix))
            .await
            .expect("lab");
        let dir = std::env::temp_dir().join(format!("vpc-eni-dp-{prefix}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("scratch dir");
        // The plugin runs in the host namespace, where the fake apiserver
        // listens on 127.0.0.1.
        let kubeconfig = dir.join("kubeconfig");
        std::fs::write(&kubeconfig, harness.kube.api.kubeconfig_yaml()).expect("kubeconfig");
        Dp {
            harness,
            lab,
            dir: Scratch(dir),
            kubeconfig,
            next_host: 10,
        }
    }

    fn client(&self) -> kube::Client {
        self.harness.client().clone()
    }

    fn pods(&self) -> Api<Pod> {
        Api::namespaced(self.client(), "default")
    }

    async fn start_controller(&mut self, modes: Modes) {
        let url = self.harness.cloud.url().to_owned();
        let config = Config::parse(&format!(
            r#"
clusterId: {CLUSTER}
provider: {{kind: alibaba, region: cn-hangzhou, endpoint: "{url}"}}
routes:
  enabled: {routes}
  clusterCidr: {CLUSTER_CIDR}
  aggregateWindowMs: 100
  batchPauseMs: 100
eni:
  enabled: {eni}
  subnets: {{{ZONE}: [vsw-dp]}}
  securityGroups: [sg-dp]
  pollIntervalMs: 100
  capacityResyncSeconds: 1
sharedEni:
  enabled: {shared}
  maxEnis: 1
  minPoolSize: 2
  poolSyncSeconds: 1
controller: {{listen: "127.0.0.1:0", leaderElection: {{enabled: false}}}}
"#,
            routes = modes.routes,
            eni = modes.eni,
            shared = modes.shared,
        ))
        .expect("controller config");
        self.harness
            .start_replica(config)
            .await
            .expect("start replica");
    }

    /// An instance and its Node (podCIDR given, as the cluster's own IPAM
    /// would give it); waits until the lab has built the node.
    async fn add_node(&mut self, name: &str, pod_cidr: Option<&str>) -> InstanceId {
        let ip = Ipv4Addr::new(192, 168, 0, self.next_host);
        self.next_host += 1;
        let spec = NodeSpec {
            name,
            instance_type: NODE_TYPE,
            zone: ZONE,
            vswitch: SubnetId::new("vsw-dp"),
            ip,
            pod_cidr: pod_cidr.map(|c| c.parse().expect("podCIDR")),
        };
        let id = self
            .harness
            .cloud
            .add_node(&self.harness.kube, &spec)
            .await
            .expect("add node");
        let (lab, want) = (&self.lab, &id);
        until(&format!("the lab to build {name}"), SETTLE, || async move {
            lab.node_netns(want)
                .map(|_| ())
                .ok_or_else(|| "not built".to_owned())
        })
        .await;
        id
    }

    fn node_ns(&self, id: &InstanceId) -> Netns {
        self.lab.node_netns(id).expect("node in the lab")
    }

    /// Wait until the router holds `cidr` via the node's address (the
    /// controller wrote the route, the cloud made it Available, the lab
    /// followed).
    async fn wait_routed(&self, cidr: &str, node: &InstanceId) {
        let cidr: Ipv4Net = cidr.parse().expect("cidr");
        let via = RouteTarget::Via(self.lab.node_ip(node).expect("node ip"));
        let lab = &self.lab;
        until(
            &format!("the router to route {cidr}"),
            SETTLE,
            || async move {
                let routes = lab.router_routes().await.map_err(|e| e.to_string())?;
                if routes.contains(&(cidr, via)) {
                    Ok(())
                } else {
                    Err(format!("{routes:?}"))
                }
            },
        )
        .await;
    }

    /// A pod, asking for one ENI when `eni`. `pin`: placed by the scheduler
    /// with a nodeSelector on the node's hostname, or `spec.nodeName` set
    /// directly (no scheduler).
    async fn create_pod(&self, name: &str, node: &str, eni: bool, pin: Pin) -> Pod {
        let mut container = json!({"name": "app", "image": "registry.k8s.io/pause:3.9"});
        if eni {
            container["resources"] = json!({"limits": {RESOURCE: "1"}});
        }
        let mut spec = json!({"containers": [container]});
        match pin {
            Pin::Scheduler => spec["nodeSelector"] = json!({"kubernetes.io/hostname": node}),
            Pin::NodeName => spec["nodeName"] = json!(node),
        }
        let pod: Pod = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": "default"},
            "spec": spec,
        }))
        .expect("pod json");
        self.pods()
            .create(&PostParams::default(), &pod)
            .await
            .expect("create pod")
    }

    /// Wait until the scheduler bound the pod to `node`, as the kubelet
    /// waits before it sets the sandbox up.
    async fn wait_bound(&self, name: &str, node: &str) -> Pod {
        let pods = &self.pods();
        until(&format!("pod {name} to be bound"), SETTLE, || async move {
            let pod = pods
                .get_opt(name)
                .await
                .map_err(|e| e.to_string())?
                .ok_or("no pod")?;
            match pod.spec.as_ref().and_then(|s| s.node_name.as_deref()) {
                Some(n) if n == node => Ok(pod),
                other => Err(format!("nodeName {other:?}")),
            }
        })
        .await
    }

    /// The network config a node would have (the DaemonSet's conflist's
    /// plugin), with this test's kubeconfig, state and lease directories.
    fn net_config(&self, allocation_timeout_s: f64) -> Value {
        json!({
            "cniVersion": "1.0.0",
            "name": "vpc-eni",
            "type": "vpc-eni-cni",
            "kubeconfig": self.kubeconfig,
            "allocationTimeoutSeconds": allocation_timeout_s,
            "mtu": 1500,
            "serviceCidr": SERVICE_CIDR,
            "stateDir": self.dir.0.join("state"),
            "delegate": {"type": "ptp", "ipam": {
                "type": "host-local",
                "dataDir": self.dir.0.join("ipam"),
                "ranges": [[{"subnet": "usePodCidr"}]],
                "routes": [{"dst": "0.0.0.0/0"}],
            }},
        })
    }

    fn call(
        &self,
        command: CniCommand,
        pod: &PodRef,
        netns: &Netns,
        node: &InstanceId,
        allocation_timeout_s: f64,
    ) -> CniCall {
        let mut call = CniCall::new(
            BIN,
            command,
            netns,
            node,
            pod.clone(),
            self.net_config(allocation_timeout_s),
        );
        call.env.push(("VPC_ENI_CNI_LOG".into(), "info".into()));
        call
    }

    async fn cni(
        &self,
        command: CniCommand,
        pod: &PodRef,
        netns: &Netns,
        node: &InstanceId,
        allocation_timeout_s: f64,
    ) -> CniOutcome {
        let call = self.call(command, pod, netns, node, allocation_timeout_s);
        self.lab.run_cni(&call).await.expect("run the plugin")
    }

    /// ADD for a bound pod in a new pod namespace; must succeed. Returns the
    /// namespace and the address of the result.
    async fn add(
        &self,
        pod: &Pod,
        node: &InstanceId,
        allocation_timeout_s: f64,
    ) -> (Netns, PodRef, Ipv4Net) {
        let r = pod_ref(pod);
        let ns = self.lab.pod_netns(&r.name).await.expect("pod netns");
        let out = self
            .cni(CniCommand::Add, &r, &ns, node, allocation_timeout_s)
            .await;
        assert!(
            out.success(),
            "ADD {}: {}\n{}",
            r.name,
            out.stdout,
            out.stderr
        );
        let result = out.json().expect("ADD result");
        assert_eq!(result["cniVersion"], "1.0.0", "{result}");
        let addr: Ipv4Net = result["ips"][0]["address"]
            .as_str()
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("no address in {result}"));
        (ns, r, addr)
    }

    /// `ip -j <args>` in one of the lab's namespaces.
    async fn ip_json(&self, ns: &Netns, args: &[&str]) -> Value {
        let mut argv = vec!["ip", "-j"];
        argv.extend_from_slice(args);
        let out = self.lab.exec(ns, &argv).await.expect("ip");
        assert!(out.success(), "{args:?} in {ns}: {}", out.stderr);
        serde_json::from_str(out.stdout.trim()).unwrap_or(Value::Array(vec![]))
    }

    /// (dev, gateway) the namespace's kernel picks for `dst`.
    async fn route_get(&self, ns: &Netns, dst: Ipv4Addr) -> (String, Option<String>) {
        let r = self
            .ip_json(ns, &["-4", "route", "get", &dst.to_string()])
            .await;
        let r = &r[0];
        (
            r["dev"].as_str().unwrap_or_default().to_owned(),
            r["gateway"].as_str().map(str::to_owned),
        )
    }

    async fn link_names(&self, ns: &Netns) -> Vec<String> {
        let mut names: Vec<String> = self
            .lab
            .links(ns)
            .await
            .expect("links")
            .into_iter()
            .map(|l| l.name)
            .collect();
        names.sort();
        names
    }

    /// `addr/prefix` of the IPv4 addresses on `dev`.
    async fn addrs(&self, ns: &Netns, dev: &str) -> Vec<String> {
        let v = self.ip_json(ns, &["-4", "addr", "show", "dev", dev]).await;
        v.as_array()
            .into_iter()
            .flatten()
            .flat_map(|l| l["addr_info"].as_array().cloned().unwrap_or_default())
            .filter_map(|a| Some(format!("{}/{}", a["local"].as_str()?, a["prefixlen"])))
            .collect()
    }

    /// Give the node an address of the Service CIDR, as kube-proxy's rules
    /// would answer a ClusterIP in the node's namespace.
    async fn hold_service_ip(&self, node: &InstanceId) {
        let ns = self.node_ns(node);
        let ip = format!("{SERVICE_IP}/32");
        let out = self
            .lab
            .exec(&ns, &["ip", "addr", "add", &ip, "dev", "lo"])
            .await
            .expect("ip addr add");
        assert!(out.success(), "{}", out.stderr);
    }

    async fn ping(&self, from: &Netns, ip: Ipv4Addr) -> bool {
        self.lab.ping_until(from, ip, true, ANSWER).await
    }

    async fn silent(&self, from: &Netns, ip: Ipv4Addr) -> bool {
        self.lab.ping_until(from, ip, false, ANSWER).await
    }

    /// Tear the lab down (every namespace of the prefix gone) and stop the
    /// fakes.
    async fn shutdown(self) {
        let prefix = self.lab.prefix().to_owned();
        self.lab.teardown().await.expect("lab teardown");
        assert_eq!(namespaces_of(&prefix), Vec::<String>::new());
        self.harness.shutdown().await;
    }
}

#[derive(Clone, Copy)]
enum Pin {
    Scheduler,
    NodeName,
}

fn pod_ref(pod: &Pod) -> PodRef {
    PodRef {
        namespace: pod.metadata.namespace.clone().unwrap_or_default(),
        name: pod.metadata.name.clone().unwrap_or_default(),
        uid: pod.metadata.uid.clone().unwrap_or_default(),
    }
}

/// `ip netns list` of one prefix.
fn namespaces_of(prefix: &str) -> Vec<String> {
    std::fs::read_dir("/run/netns")
        .map(|dir| {
            dir.filter_map(|e| e.ok())
                .filter_map(|e| e.file_name().into_string().ok())
                .filter(|n| n.starts_with(&format!("{prefix}-")))
                .collect()
        })
        .unwrap_or_default()
}

fn allocation(pod: &Pod) -> Option<PodAllocation> {
    PodAllocation::from_annotations(pod.metadata.annotations.as_ref()?)
}

/// Routes mode: pods on two nodes (delegated to ptp + host-local on each
/// node's podCIDR) reach each other and the VM reaches both, through the
/// router's copy of the VPC route table only; once node B is deleted the
/// controller deletes its route and B's pod falls silent for the VM.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_mode_pods_on_two_nodes_reach_each_other_through_the_vpc_routes() {
    skip_unless_lab!();
    let mut dp = Dp::start("dpr").await;
    dp.start_controller(Modes {
        routes: true,
        eni: false,
        shared: false,
    })
    .await;
    let a = dp.add_node("node-a", Some("10.244.1.0/24")).await;
    let b = dp.add_node("node-b", Some("10.244.2.0/24")).await;
    dp.wait_routed("10.244.1.0/24", &a).await;
    dp.wait_routed("10.244.2.0/24", &b).await;

    dp.create_pod("web-a", "node-a", false, Pin::Scheduler)
        .await;
    dp.create_pod("web-b", "node-b", false, Pin::Scheduler)
        .await;
    let pod_a = dp.wait_bound("web-a", "node-a").await;
    let pod_b = dp.wait_bound("web-b", "node-b").await;
    let (ns_a, ref_a, addr_a) = dp.add(&pod_a, &a, 5.0).await;
    let (ns_b, ref_b, addr_b) = dp.add(&pod_b, &b, 5.0).await;
    let (ip_a, ip_b) = (addr_a.addr(), addr_b.addr());
    assert!(
        "10.244.1.0/24".parse::<Ipv4Net>().unwrap().contains(&ip_a),
        "{addr_a} is not from node-a's podCIDR"
    );
    assert!(
        "10.244.2.0/24".parse::<Ipv4Net>().unwrap().contains(&ip_b),
        "{addr_b} is not from node-b's podCIDR"
    );
    assert_eq!(dp.addrs(&ns_a, "eth0").await, [addr_a.to_string()]);

    // Neither node knows the other's podCIDR: the way out is the vSwitch
    // gateway, i.e. the router and its VPC routes.
    assert_eq!(
        dp.route_get(&dp.node_ns(&a), ip_b).await.1,
        Some(GATEWAY.to_string())
    );
    assert_eq!(
        dp.route_get(&dp.node_ns(&b), ip_a).await.1,
        Some(GATEWAY.to_string())
    );
    assert!(dp.ping(&ns_a, ip_b).await, "pod on A -> pod on B");
    assert!(dp.ping(&ns_b, ip_a).await, "pod on B -> pod on A");
    let vm = dp.lab.vm_netns();
    assert!(dp.ping(&vm, ip_a).await, "VM -> pod on A");
    assert!(dp.ping(&vm, ip_b).await, "VM -> pod on B");

    // Node B leaves the cluster: the controller deletes its route, the
    // router follows, B's pod is unreachable; A's still answers.
    Api::<Node>::all(dp.client())
        .delete("node-b", &DeleteParams::default())
        .await
        .expect("delete node-b");
    let cidr_b: Ipv4Net = "10.244.2.0/24".parse().unwrap();
    let lab = &dp.lab;
    until("the router to drop node-b's route", SETTLE, || async move {
        let routes = lab.router_routes().await.map_err(|e| e.to_string())?;
        if routes.iter().any(|(d, _)| *d == cidr_b) {
            Err(format!("{routes:?}"))
        } else {
            Ok(())
        }
    })
    .await;
    assert!(dp.silent(&vm, ip_b).await, "VM still reaches B's pod");
    assert!(dp.ping(&vm, ip_a).await, "VM -> pod on A after B left");

    // The runtime tears both sandboxes down; node-b is gone from the API,
    // the config saved at ADD is enough.
    for (r, ns, node) in [(&ref_a, &ns_a, &a), (&ref_b, &ns_b, &b)] {
        let del = dp.cni(CniCommand::Del, r, ns, node, 5.0).await;
        assert!(
            del.success(),
            "DEL {}: {}\n{}",
            r.name,
            del.stdout,
            del.stderr
        );
        assert_eq!(dp.link_names(ns).await, ["lo"]);
    }
    dp.shutdown().await;
}

/// Exclusive ENI: ADD waits for the controller's allocation, then the pod
/// holds the ENI (its MAC and IP), the VM reaches it straight over the
/// vSwitch, the node reaches the pod and the pod a ClusterIP over the veth.
/// After the pod's deletion DEL gives the link back to the node, the
/// controller detaches and deletes the ENI, and the link goes with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exclusive_eni_pod_is_reached_on_its_eni_and_gives_it_back() {
    skip_unless_lab!();
    let mut dp = Dp::start("dpe").await;
    dp.start_controller(Modes {
        routes: false,
        eni: true,
        shared: false,
    })
    .await;
    let node = dp.add_node("node-e", None).await;
    let node_ns = dp.node_ns(&node);
    dp.hold_service_ip(&node).await;
    dp.create_pod("eni-0", "node-e", true, Pin::Scheduler).await;
    // The kubelet runs ADD as soon as the pod is bound; the plugin waits for
    // the allocation itself.
    let bound = dp.wait_bound("eni-0", "node-e").await;
    let (pod_ns, r, addr) = dp.add(&bound, &node, 30.0).await;
    let pod = dp.pods().get("eni-0").await.expect("pod");
    let alloc = allocation(&pod).expect("the controller's allocation").first;
    assert_eq!(alloc.node, "node-e");

    let eth0 = dp
        .lab
        .links(&pod_ns)
        .await
        .expect("links")
        .into_iter()
        .find(|l| l.name == "eth0")
        .expect("eth0 in the pod");
    assert_eq!(eth0.mac, alloc.mac.to_ascii_lowercase());
    assert!(eth0.up);
    let subnet: Ipv4Net = alloc.subnet_cidr.parse().expect("subnet");
    let want = format!("{}/{}", alloc.ip, subnet.prefix_len());
    assert_eq!(addr.to_string(), want);
    assert_eq!(dp.addrs(&pod_ns, "eth0").await, [want]);
    let ip: Ipv4Addr = alloc.ip.parse().expect("ip");

    // The VM reaches the pod directly on the vSwitch (no gateway between).
    let vm = dp.lab.vm_netns();
    assert_eq!(dp.route_get(&vm, ip).await.1, None);
    assert!(dp.ping(&vm, ip).await, "VM -> ENI pod");
    // Node <-> pod and pod -> ClusterIP take the veth.
    let container_id = dp
        .call(CniCommand::Del, &r, &pod_ns, &node, 1.0)
        .container_id;
    let veth = cni::names::host_veth(&container_id);
    assert_eq!(dp.route_get(&node_ns, ip).await.0, veth);
    assert!(dp.ping(&node_ns, ip).await, "node -> ENI pod");
    assert_eq!(dp.route_get(&pod_ns, SERVICE_IP).await.0, "veth0");
    assert!(dp.ping(&pod_ns, SERVICE_IP).await, "ENI pod -> ClusterIP");

    // The pod is deleted; the runtime stops the sandbox (DEL) while the
    // controller starts its release.
    dp.pods()
        .delete("eni-0", &DeleteParams::default())
        .await
        .expect("delete pod");
    let del = dp.cni(CniCommand::Del, &r, &pod_ns, &node, 30.0).await;
    assert!(del.success(), "DEL: {}\n{}", del.stdout, del.stderr);
    assert_eq!(dp.link_names(&pod_ns).await, ["lo"]);
    let (at, link) = dp
        .lab
        .find_mac(&alloc.mac)
        .await
        .expect("find the ENI")
        .expect("the ENI's link is somewhere");
    assert_eq!(at, node_ns, "DEL gives the link back to the node");
    assert!(!link.up, "the returned link is down");
    assert!(
        !dp.link_names(&node_ns).await.contains(&veth),
        "the veth is gone"
    );

    let eni_id = &EniId::new(alloc.eni_id.clone());
    let (d, mac) = (&dp, &alloc.mac);
    until("the ENI to be released", SETTLE, || async move {
        let in_cloud = d
            .harness
            .cloud
            .world()
            .enis()
            .into_iter()
            .find(|e| &e.id == eni_id)
            .map(|e| format!("{:?}", e.status));
        let pod = d.pods().get_opt("eni-0").await.map_err(|e| e.to_string())?;
        let link = d.lab.find_mac(mac).await.map_err(|e| e.to_string())?;
        match (&in_cloud, &pod, &link) {
            (None, None, None) => Ok(()),
            _ => Err(format!(
                "ENI {in_cloud:?}, pod present {}, link {link:?}",
                pod.is_some()
            )),
        }
    })
    .await;
    assert!(!dp
        .link_names(&node_ns)
        .await
        .iter()
        .any(|n| n.starts_with("vec")));
    dp.shutdown().await;
}

/// Both modes on one node at once: an ENI pod on its ENI and a pod on the
/// node's podCIDR (ptp), both reachable from the VM.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_eni_pod_and_a_routes_pod_share_a_node() {
    skip_unless_lab!();
    let mut dp = Dp::start("dpb").await;
    dp.start_controller(Modes {
        routes: true,
        eni: true,
        shared: false,
    })
    .await;
    let node = dp.add_node("node-m", Some("10.244.3.0/24")).await;
    dp.wait_routed("10.244.3.0/24", &node).await;
    dp.create_pod("mix-eni", "node-m", true, Pin::Scheduler)
        .await;
    dp.create_pod("mix-plain", "node-m", false, Pin::Scheduler)
        .await;
    let eni_pod = dp.wait_bound("mix-eni", "node-m").await;
    let plain_pod = dp.wait_bound("mix-plain", "node-m").await;
    let (eni_ns, _, eni_addr) = dp.add(&eni_pod, &node, 30.0).await;
    let (plain_ns, _, plain_addr) = dp.add(&plain_pod, &node, 5.0).await;

    let alloc = allocation(&dp.pods().get("mix-eni").await.expect("pod"))
        .expect("allocation")
        .first;
    assert_eq!(eni_addr.addr().to_string(), alloc.ip);
    let eth0 = dp
        .lab
        .links(&eni_ns)
        .await
        .expect("links")
        .into_iter()
        .find(|l| l.name == "eth0")
        .expect("eth0");
    assert_eq!(eth0.mac, alloc.mac.to_ascii_lowercase());
    assert!(
        "10.244.3.0/24"
            .parse::<Ipv4Net>()
            .unwrap()
            .contains(&plain_addr.addr()),
        "{plain_addr}"
    );
    assert_eq!(dp.addrs(&plain_ns, "eth0").await, [plain_addr.to_string()]);

    let vm = dp.lab.vm_netns();
    assert!(dp.ping(&vm, eni_addr.addr()).await, "VM -> ENI pod");
    assert!(
        dp.ping(&vm, plain_addr.addr()).await,
        "VM -> routes-mode pod"
    );
    dp.shutdown().await;
}

/// ADD that cannot be served leaves nothing behind: a pod asking for an ENI
/// while ENI mode is off gets no allocation within allocationTimeoutSeconds
/// (code 11, "try again later", naming the pod); a pod that does not exist
/// is named as such. Links of the node and pod namespaces are as before,
/// and the DEL a runtime sends after a failed ADD succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_add_that_cannot_be_served_fails_clearly_and_leaves_nothing() {
    skip_unless_lab!();
    let mut dp = Dp::start("dpf").await;
    dp.start_controller(Modes {
        routes: true,
        eni: false,
        shared: false,
    })
    .await;
    let node = dp.add_node("node-f", Some("10.244.4.0/24")).await;
    let node_ns = dp.node_ns(&node);
    // No node advertises the resource, so no scheduler would place it; a
    // user can still bind it by spec.nodeName.
    let pod = dp
        .create_pod("wants-eni", "node-f", true, Pin::NodeName)
        .await;
    let node_links = dp.link_names(&node_ns).await;

    let r = pod_ref(&pod);
    let ns = dp.lab.pod_netns(&r.name).await.expect("pod netns");
    let started = Instant::now();
    let add = dp.cni(CniCommand::Add, &r, &ns, &node, 1.0).await;
    assert!(!add.success(), "{}", add.stdout);
    let e = add.json().expect("error JSON");
    assert_eq!(e["code"], 11, "{e}");
    let msg = e["msg"].as_str().unwrap_or_default();
    assert!(msg.contains("default/wants-eni"), "{e}");
    assert!(started.elapsed() >= Duration::from_secs(1));
    assert_eq!(dp.link_names(&node_ns).await, node_links);
    assert_eq!(dp.link_names(&ns).await, ["lo"]);
    let del = dp.cni(CniCommand::Del, &r, &ns, &node, 1.0).await;
    assert!(del.success(), "DEL after a failed ADD: {}", del.stdout);

    let ghost = PodRef {
        namespace: "default".into(),
        name: "ghost".into(),
        uid: "6b1f4d1e-0000-4000-8000-000000000001".into(),
    };
    let ghost_ns = dp.lab.pod_netns("ghost").await.expect("pod netns");
    let add = dp.cni(CniCommand::Add, &ghost, &ghost_ns, &node, 1.0).await;
    assert!(!add.success(), "{}", add.stdout);
    let e = add.json().expect("error JSON");
    assert_eq!(e["msg"], "pod default/ghost not found", "{e}");
    assert_ne!(e["code"], 11, "a missing pod is not a retry: {e}");
    assert_eq!(dp.link_names(&node_ns).await, node_links);
    assert_eq!(dp.link_names(&ghost_ns).await, ["lo"]);
    let del = dp.cni(CniCommand::Del, &ghost, &ghost_ns, &node, 1.0).await;
    assert!(del.success(), "DEL of a missing pod: {}", del.stdout);
    assert_eq!(dp.link_names(&node_ns).await, node_links);
    dp.shutdown().await;
}

/// Shared-ENI mode with the real controller: pods on two nodes get
/// secondary IPs of their node's shared ENI (the plugin learns the node is
/// in shared mode from the controller's annotation on it), the VM reaches a
/// shared pod, a shared pod reaches a shared pod and an exclusive-ENI pod
/// on the other node, and DEL leaves nothing of the pod on its node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_eni_pods_from_the_controller_reach_the_vm_and_each_other_across_nodes() {
    skip_unless_lab!();
    let mut dp = Dp::start("dps").await;
    dp.start_controller(Modes {
        routes: false,
        eni: true,
        shared: true,
    })
    .await;
    let node_a = dp.add_node("node-a", None).await;
    let node_b = dp.add_node("node-b", None).await;
    dp.create_pod("shared-a", "node-a", false, Pin::Scheduler)
        .await;
    dp.create_pod("shared-b", "node-b", false, Pin::Scheduler)
        .await;
    dp.create_pod("excl-b", "node-b", true, Pin::Scheduler)
        .await;
    let bound = dp.wait_bound("shared-a", "node-a").await;
    let (ns_a, r_a, addr_a) = dp.add(&bound, &node_a, 30.0).await;
    let bound = dp.wait_bound("shared-b", "node-b").await;
    let (ns_b, _, addr_b) = dp.add(&bound, &node_b, 30.0).await;
    let bound = dp.wait_bound("excl-b", "node-b").await;
    let (_, _, addr_e) = dp.add(&bound, &node_b, 30.0).await;

    let pod = dp.pods().get("shared-a").await.expect("pod");
    let alloc = allocation(&pod).expect("the controller's allocation");
    assert!(alloc.is_shared());
    assert_eq!(alloc.pod_uid, pod.metadata.uid);
    assert_eq!(addr_a.to_string(), format!("{}/32", alloc.first.ip));
    let shared_eni = dp
        .harness
        .cloud
        .world()
        .enis()
        .into_iter()
        .find(|e| e.id.as_str() == alloc.first.eni_id)
        .expect("the shared ENI");
    assert!(shared_eni.secondary_ips.contains(&addr_a.addr()));
    assert_eq!(shared_eni.instance_id.as_ref(), Some(&node_a));

    let vm = dp.lab.vm_netns();
    assert!(dp.ping(&vm, addr_a.addr()).await, "VM -> shared pod");
    assert!(
        dp.ping(&ns_a, addr_b.addr()).await,
        "shared pod A -> shared pod B"
    );
    assert!(
        dp.ping(&ns_a, addr_e.addr()).await,
        "shared pod A -> exclusive pod B"
    );
    assert!(
        dp.ping(&ns_b, addr_a.addr()).await,
        "shared pod B -> shared pod A"
    );

    // DEL: nothing of the pod stays on its node.
    let node_ns = dp.node_ns(&node_a);
    let before = dp.link_names(&node_ns).await;
    let del = dp.cni(CniCommand::Del, &r_a, &ns_a, &node_a, 30.0).await;
    assert!(del.success(), "DEL: {}\n{}", del.stdout, del.stderr);
    assert_eq!(dp.link_names(&ns_a).await, ["lo"]);
    let after = dp.link_names(&node_ns).await;
    assert_eq!(after.len() + 1, before.len(), "{before:?} -> {after:?}");
    let rules = dp.ip_json(&node_ns, &["rule", "show"]).await;
    assert!(
        !rules.to_string().contains(&alloc.first.ip),
        "a rule of the pod stays: {rules}"
    );
    let neigh = dp.ip_json(&node_ns, &["neigh", "show", "proxy"]).await;
    assert!(
        !neigh.to_string().contains(&alloc.first.ip),
        "a proxy ARP entry of the pod stays: {neigh}"
    );
    dp.shutdown().await;
}
