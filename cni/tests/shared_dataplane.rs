//! Shared-ENI pods in the lab: the node half (`vpc-eni-cni` run as a
//! runtime runs it) against the lab following the in-memory cloud, where
//! the VPC delivers each secondary IP to the ENI the cloud assigned it to.
//! Packets decide: the VM reaches a shared pod, a shared pod reaches one on
//! another node and an exclusive-ENI pod, and after DEL nothing of the pod
//! stays on its node (links, rules, routes, proxy ARP entries, addresses).
//!
//! The controller's half is played by [`World::allocate_shared`]: it puts a
//! shared ENI on the node, assigns a secondary IP through the cloud API and
//! writes the allocation annotation on the pod, as the controller would. To
//! run these end to end with the real controller, replace that function by
//! waiting for the controller's annotation (see `tests/dataplane.rs`).
//!
//! Root only (the lab is network namespaces): elsewhere each test prints why
//! and passes. Every namespace carries the test's prefix and the lab
//! removes all of it when dropped, also when a test fails; pings are one
//! echo with a deadline.

use ipam::allocation::{EniAllocation, PodAllocation, ALLOCATION_ANNOTATION};
use ipam::ids::{EniId, IdempotencyToken, InstanceId, SubnetId};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, PostParams};
use mocks::cloud::World;
use mocks::kubeapi::{FakeApiServer, Options};
use mocks::lab::{CniCall, CniCommand, CniOutcome, Lab, LabConfig, Netns, PodRef};
use providers::model::CreateEniRequest;
use providers::Cloud;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_vpc-eni-cni");

const SUBNET: &str = "vsw-sh";
const SUBNET_CIDR: &str = "192.168.0.0/24";
/// The vSwitch gateway (Alibaba's: .253 of a /24): the router's leg.
const GATEWAY: Ipv4Addr = Ipv4Addr::new(192, 168, 0, 253);
/// Where "the rest of the VPC" is, for `ip route get`.
const ELSEWHERE: Ipv4Addr = Ipv4Addr::new(192, 168, 0, 200);
const SERVICE_CIDR: &str = "10.96.0.0/12";

/// How long a change may take to show (a lab pass, ARP).
const SETTLE: Duration = Duration::from_secs(30);
/// How long a ping may take to start or stop answering.
const ANSWER: Duration = Duration::from_secs(10);

/// Two nodes on one vSwitch (3 ENIs each, 10 IPs per ENI), no delays.
const WORLD: &str = r#"
region: cn-hangzhou
vpcs: [{id: vpc-sh, cidr: 192.168.0.0/16, routeTables: [{id: vtb-sh, main: true}]}]
vswitches:
  - {id: vsw-sh, vpc: vpc-sh, zone: cn-hangzhou-h, cidr: 192.168.0.0/24}
securityGroups: [{id: sg-sh, vpc: vpc-sh}]
instances:
  - {id: i-sha, type: ecs.g6.xlarge, zone: cn-hangzhou-h, vswitch: vsw-sh, privateIp: 192.168.0.10}
  - {id: i-shb, type: ecs.g6.xlarge, zone: cn-hangzhou-h, vswitch: vsw-sh, privateIp: 192.168.0.11}
faults: {attachDelayMs: 0, detachDelayMs: 0, routeDelayMs: 0}
"#;

macro_rules! skip_unless_lab {
    () => {
        if let Err(why) = Lab::available() {
            eprintln!("skipped: {why}");
            return;
        }
    };
}

/// A scratch directory (kubeconfig, the plugin's state), removed on drop.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A pod the plugin plumbed.
struct Plumbed {
    name: String,
    node: InstanceId,
    ns: Netns,
    pod: PodRef,
    ip: Ipv4Addr,
    container_id: String,
}

impl Plumbed {
    fn host_veth(&self) -> String {
        cni::names::shared_host_veth(&self.container_id)
    }
}

/// One test's world: the in-memory cloud, the lab following it, the fake
/// apiserver the plugin reads pods from, and the node names of instances.
struct SharedLab {
    cloud: World,
    lab: Lab,
    api: FakeApiServer,
    dir: Scratch,
    kubeconfig: PathBuf,
    nodes: BTreeMap<InstanceId, String>,
    /// Each node's shared ENI, once made.
    shared_enis: BTreeMap<InstanceId, (EniId, String)>,
    tokens: u32,
}

impl SharedLab {
    async fn start(prefix: &str) -> SharedLab {
        let cloud = World::from_yaml(WORLD).expect("world");
        let lab = Lab::start(cloud.clone(), LabConfig::new(prefix))
            .await
            .expect("lab");
        let api = FakeApiServer::start(Options::without_controllers())
            .await
            .expect("fake apiserver");
        let dir = std::env::temp_dir().join(format!("vpc-eni-sh-{prefix}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("scratch dir");
        let kubeconfig = dir.join("kubeconfig");
        std::fs::write(&kubeconfig, api.kubeconfig_yaml()).expect("kubeconfig");
        let nodes = [("i-sha", "node-a"), ("i-shb", "node-b")]
            .into_iter()
            .map(|(i, n)| (InstanceId::new(i), n.to_owned()))
            .collect();
        SharedLab {
            cloud,
            lab,
            api,
            dir: Scratch(dir),
            kubeconfig,
            nodes,
            shared_enis: BTreeMap::new(),
            tokens: 0,
        }
    }

    fn pods(&self) -> Api<Pod> {
        let client = kube::Client::try_from(self.api.client_config()).expect("client");
        Api::namespaced(client, "default")
    }

    fn token(&mut self) -> IdempotencyToken {
        self.tokens += 1;
        IdempotencyToken::new(format!("sh-{}", self.tokens))
    }

    fn node_ns(&self, id: &InstanceId) -> Netns {
        self.lab.node_netns(id).expect("node in the lab")
    }

    /// A new ENI of the vSwitch attached to `node`: (id, MAC, primary IP).
    async fn attached_eni(&mut self, node: &InstanceId) -> (EniId, String, Ipv4Addr) {
        let req = CreateEniRequest {
            subnet_id: SubnetId::new(SUBNET),
            security_groups: vec!["sg-sh".into()],
            secondary_ip_count: 0,
            tags: Default::default(),
            description: String::new(),
            idempotency_token: self.token(),
        };
        let eni = self.cloud.create_eni(&req).await.expect("create ENI");
        self.cloud
            .attach_eni(&eni.id, node)
            .await
            .expect("attach ENI");
        (eni.id, eni.mac.to_ascii_lowercase(), eni.primary_ip)
    }

    fn allocation(&self, eni: &EniId, mac: &str, ip: Ipv4Addr, node: &InstanceId) -> EniAllocation {
        EniAllocation {
            eni_id: eni.to_string(),
            mac: mac.to_owned(),
            ip: ip.to_string(),
            subnet_id: SUBNET.into(),
            subnet_cidr: SUBNET_CIDR.into(),
            gateway: GATEWAY.to_string(),
            node: self.nodes[node].clone(),
        }
    }

    /// The controller's half, played by the test: the node's shared ENI
    /// (made and attached the first time), one more secondary IP assigned to
    /// it through the cloud API, and the allocation for it.
    async fn allocate_shared(&mut self, node: &InstanceId) -> PodAllocation {
        if !self.shared_enis.contains_key(node) {
            let (id, mac, _) = self.attached_eni(node).await;
            self.shared_enis.insert(node.clone(), (id, mac));
        }
        let (eni, mac) = self.shared_enis[node].clone();
        let token = self.token();
        let ips = self
            .cloud
            .assign_private_ips(&eni, 1, &token)
            .await
            .expect("assign a secondary IP");
        let ip = *ips.last().expect("one IP assigned");
        // The pod is made after its allocation here, so its uid is not
        // known yet: an allocation naming no pod is taken by any pod.
        let mut a = PodAllocation::shared(self.allocation(&eni, &mac, ip, node), "");
        a.pod_uid = None;
        a
    }

    /// An exclusive ENI for a pod on `node`, as the controller would give it.
    async fn allocate_exclusive(&mut self, node: &InstanceId) -> PodAllocation {
        let (id, mac, ip) = self.attached_eni(node).await;
        PodAllocation::new(vec![self.allocation(&id, &mac, ip, node)], 0).expect("one ENI")
    }

    /// A pod bound to `node` carrying `alloc`; its namespace made as a
    /// runtime makes it; ADD run and required to succeed once the lab
    /// delivers the pod's IP to its ENI.
    async fn add_pod(&self, name: &str, node: &InstanceId, alloc: &PodAllocation) -> Plumbed {
        let ip: Ipv4Addr = alloc.first.ip.parse().expect("ip");
        self.wait_delivered(ip, Some(&alloc.first.mac)).await;
        let (p, out) = self.try_add_pod(name, node, alloc).await;
        assert!(out.success(), "ADD {name}: {}\n{}", out.stdout, out.stderr);
        let result = out.json().expect("ADD result");
        assert_eq!(result["cniVersion"], "1.0.0", "{result}");
        if alloc.is_shared() {
            assert_eq!(
                result["ips"],
                json!([{"address": format!("{ip}/32"), "gateway": "169.254.1.1", "interface": 0}])
            );
        }
        p
    }

    /// The pod and its namespace made, ADD run, whatever its outcome.
    async fn try_add_pod(
        &self,
        name: &str,
        node: &InstanceId,
        alloc: &PodAllocation,
    ) -> (Plumbed, CniOutcome) {
        let pod: Pod = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": "default",
                "annotations": {ALLOCATION_ANNOTATION: alloc.to_json()}},
            "spec": {"nodeName": self.nodes[node], "containers": [{"name": "app", "image": "app:1"}]},
        }))
        .expect("pod json");
        let made = self
            .pods()
            .create(&PostParams::default(), &pod)
            .await
            .expect("create pod");
        let ip: Ipv4Addr = alloc.first.ip.parse().expect("ip");
        let r = PodRef {
            namespace: "default".into(),
            name: name.into(),
            uid: made.metadata.uid.clone().unwrap_or_default(),
        };
        let ns = self.lab.pod_netns(name).await.expect("pod netns");
        let call = self.call(CniCommand::Add, &r, &ns, node);
        let container_id = call.container_id.clone();
        let out = self.lab.run_cni(&call).await.expect("run the plugin");
        let p = Plumbed {
            name: name.into(),
            node: node.clone(),
            ns,
            pod: r,
            ip,
            container_id,
        };
        (p, out)
    }

    /// Wait until the VPC delivers `ip` to `mac` (`None`: to nothing).
    async fn wait_delivered(&self, ip: Ipv4Addr, mac: Option<&str>) {
        let want = mac.map(str::to_ascii_lowercase);
        let started = Instant::now();
        loop {
            self.lab.sync().await.expect("lab sync");
            let now = self.lab.delivers(ip).await.expect("router neighbours");
            if now == want {
                return;
            }
            assert!(
                started.elapsed() < SETTLE,
                "the lab delivers {ip} to {now:?}, not {want:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The network config of a node in shared-ENI mode.
    fn net_config(&self) -> Value {
        json!({
            "cniVersion": "1.0.0",
            "name": "vpc-eni",
            "type": "vpc-eni-cni",
            "kubeconfig": self.kubeconfig,
            "allocationTimeoutSeconds": 5,
            "mtu": 1500,
            "serviceCidr": SERVICE_CIDR,
            "stateDir": self.dir.0.join("state"),
            "sharedEni": true,
        })
    }

    fn call(&self, command: CniCommand, pod: &PodRef, netns: &Netns, node: &InstanceId) -> CniCall {
        let mut call = CniCall::new(BIN, command, netns, node, pod.clone(), self.net_config());
        call.env.push(("VPC_ENI_CNI_LOG".into(), "info".into()));
        call
    }

    async fn cni(&self, command: CniCommand, p: &Plumbed) -> CniOutcome {
        let call = self.call(command, &p.pod, &p.ns, &p.node);
        self.lab.run_cni(&call).await.expect("run the plugin")
    }

    async fn del(&self, p: &Plumbed) {
        let out = self.cni(CniCommand::Del, p).await;
        assert!(
            out.success(),
            "DEL {}: {}\n{}",
            p.name,
            out.stdout,
            out.stderr
        );
        assert_eq!(out.stdout, "");
    }

    /// `ip -j <args>` in one of the lab's namespaces.
    async fn ip_json(&self, ns: &Netns, args: &[&str]) -> Value {
        let mut argv = vec!["ip", "-j"];
        argv.extend_from_slice(args);
        let out = self.lab.exec(ns, &argv).await.expect("ip");
        assert!(out.success(), "{args:?} in {ns}: {}", out.stderr);
        serde_json::from_str(out.stdout.trim()).unwrap_or(Value::Array(vec![]))
    }

    /// The device the node's kernel sends a packet from `src` (arriving on
    /// `iif`) to `dst` out of.
    async fn out_dev(&self, ns: &Netns, dst: Ipv4Addr, src: Ipv4Addr, iif: &str) -> String {
        let v = self
            .ip_json(
                ns,
                &[
                    "-4",
                    "route",
                    "get",
                    &dst.to_string(),
                    "from",
                    &src.to_string(),
                    "iif",
                    iif,
                ],
            )
            .await;
        v[0]["dev"].as_str().unwrap_or_default().to_owned()
    }

    /// The name of the link with `mac` in `ns`, and whether it is up.
    async fn link_with_mac(&self, ns: &Netns, mac: &str) -> Option<(String, bool)> {
        self.lab
            .links(ns)
            .await
            .expect("links")
            .into_iter()
            .find(|l| l.mac == mac)
            .map(|l| (l.name, l.up))
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

    /// What the node holds that names `ip`: rules, routes of any table,
    /// proxy ARP entries, addresses; and the pod's veth by name.
    async fn traces(&self, node: &InstanceId, ip: Ipv4Addr, veth: &str) -> Vec<String> {
        let ns = self.node_ns(node);
        let ip_s = ip.to_string();
        let mut out = Vec::new();
        for r in arr(&self.ip_json(&ns, &["-4", "rule", "show"]).await) {
            if r["src"] == ip_s || r["dst"] == ip_s {
                out.push(format!("rule {r}"));
            }
        }
        for r in arr(&self
            .ip_json(&ns, &["-4", "route", "show", "table", "all"])
            .await)
        {
            if r["dst"] == ip_s || r["dst"] == format!("{ip_s}/32") {
                out.push(format!("route {r}"));
            }
        }
        for n in arr(&self.ip_json(&ns, &["-4", "neigh", "show", "proxy"]).await) {
            if n["dst"] == ip_s {
                out.push(format!("proxy ARP {n}"));
            }
        }
        for l in arr(&self.ip_json(&ns, &["-4", "addr", "show"]).await) {
            for a in arr(&l["addr_info"]) {
                if a["local"] == ip_s {
                    out.push(format!("address on {}", l["ifname"]));
                }
            }
        }
        if self.link_names(&ns).await.iter().any(|n| n == veth) {
            out.push(format!("link {veth}"));
        }
        out
    }

    /// The routes of one table of a node.
    async fn table(&self, node: &InstanceId, table: u32) -> Vec<Value> {
        let ns = self.node_ns(node);
        arr(&self
            .ip_json(&ns, &["-4", "route", "show", "table", &table.to_string()])
            .await)
    }

    /// The node's rules installed by the plugin.
    async fn our_rules(&self, node: &InstanceId) -> Vec<Value> {
        let ns = self.node_ns(node);
        arr(&self.ip_json(&ns, &["-4", "rule", "show"]).await)
            .into_iter()
            .filter(|r| {
                r["protocol"].as_str().and_then(|p| p.parse::<u8>().ok())
                    == Some(cni::shared::RULE_PROTOCOL)
            })
            .collect()
    }

    async fn ping(&self, from: &Netns, ip: Ipv4Addr) -> bool {
        self.lab.ping_until(from, ip, true, ANSWER).await
    }

    async fn silent(&self, from: &Netns, ip: Ipv4Addr) -> bool {
        self.lab.ping_until(from, ip, false, ANSWER).await
    }

    /// Tear the lab down (every namespace of the prefix gone).
    async fn shutdown(self) {
        let prefix = self.lab.prefix().to_owned();
        self.lab.teardown().await.expect("lab teardown");
        assert!(Path::new("/run/netns")
            .read_dir()
            .is_ok_and(|d| !d.filter_map(|e| e.ok()).any(|e| e
                .file_name()
                .to_string_lossy()
                .starts_with(&format!("{prefix}-")))));
    }
}

fn arr(v: &Value) -> Vec<Value> {
    v.as_array().cloned().unwrap_or_default()
}

/// One node, two shared pods on its one shared ENI: the pods hold their
/// secondary IPs as /32 behind veths, their traffic is routed out of the
/// ENI (which the plugin brought up), the VM on the vSwitch reaches both
/// (the node answers ARP for them on the ENI), the node and the other pod
/// reach them. DEL of the first leaves nothing of it while the second still
/// answers; the second's netns is removed before its DEL (the runtime lost
/// it) and DEL still sweeps its rules; then the ENI's table is empty. Once
/// the cloud unassigns an IP the VPC no longer delivers it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_vm_reaches_shared_pods_and_del_leaves_nothing_on_the_node() {
    skip_unless_lab!();
    let mut w = SharedLab::start("shv").await;
    let a = InstanceId::new("i-sha");
    let node_ns = w.node_ns(&a);
    let alloc1 = w.allocate_shared(&a).await;
    let alloc2 = w.allocate_shared(&a).await;
    assert_eq!(alloc1.first.eni_id, alloc2.first.eni_id, "one shared ENI");
    let p1 = w.add_pod("sh-1", &a, &alloc1).await;
    let p2 = w.add_pod("sh-2", &a, &alloc2).await;

    // The pod: its IP as /32, the default route via the link-local next hop.
    let addrs = w
        .ip_json(&p1.ns, &["-4", "addr", "show", "dev", "eth0"])
        .await;
    assert_eq!(addrs[0]["addr_info"][0]["local"], p1.ip.to_string());
    assert_eq!(addrs[0]["addr_info"][0]["prefixlen"], 32);
    let r = w
        .ip_json(&p1.ns, &["-4", "route", "get", &ELSEWHERE.to_string()])
        .await;
    assert_eq!(r[0]["gateway"], "169.254.1.1", "{r}");

    // The node: the shared ENI up and still there, the pods' traffic routed
    // out of it, traffic to a pod over its veth.
    let mac = alloc1.first.mac.to_ascii_lowercase();
    let (eni_link, up) = w
        .link_with_mac(&node_ns, &mac)
        .await
        .expect("ENI link in the node");
    assert!(up, "the plugin brings the shared ENI up");
    for p in [&p1, &p2] {
        assert_eq!(
            w.out_dev(&node_ns, ELSEWHERE, p.ip, &p.host_veth()).await,
            eni_link
        );
        assert_eq!(
            w.out_dev(&node_ns, GATEWAY, p.ip, &p.host_veth()).await,
            eni_link
        );
    }
    assert_eq!(
        w.out_dev(&node_ns, p2.ip, p1.ip, &p1.host_veth()).await,
        p2.host_veth(),
        "pod to pod on one node stays on the node"
    );
    let rules = w.our_rules(&a).await;
    assert_eq!(rules.len(), 4, "two rules per pod: {rules:?}");
    let table = rules
        .iter()
        .find(|r| r["src"] == p1.ip.to_string())
        .and_then(|r| r["table"].as_str().map(str::to_owned))
        .expect("a from-rule for pod 1");
    let table: u32 = table.parse().expect("numbered table");
    assert!(table > cni::shared::TABLE_BASE, "table {table}");
    let routes = w.table(&a, table).await;
    assert_eq!(routes.len(), 1, "{routes:?}");
    assert_eq!(routes[0]["dst"], "default");
    assert_eq!(routes[0]["gateway"], GATEWAY.to_string());
    assert_eq!(routes[0]["dev"], eni_link);

    // Packets.
    let vm = w.lab.vm_netns();
    assert!(w.ping(&vm, p1.ip).await, "VM -> shared pod 1");
    assert!(w.ping(&vm, p2.ip).await, "VM -> shared pod 2");
    assert!(w.ping(&p1.ns, GATEWAY).await, "shared pod -> gateway");
    assert!(
        w.ping(&p1.ns, p2.ip).await,
        "shared pod -> shared pod, one node"
    );
    assert!(w.ping(&node_ns, p1.ip).await, "node -> shared pod");

    // CHECK passes; a repeated ADD is fine and changes nothing.
    let check = w.cni(CniCommand::Check, &p1).await;
    assert!(check.success(), "CHECK: {}\n{}", check.stdout, check.stderr);
    let again = w.cni(CniCommand::Add, &p1).await;
    assert!(
        again.success(),
        "ADD again: {}\n{}",
        again.stdout,
        again.stderr
    );
    assert_eq!(w.our_rules(&a).await.len(), 4);

    // DEL of pod 1: nothing of it left; pod 2 untouched.
    w.del(&p1).await;
    assert_eq!(
        w.traces(&a, p1.ip, &p1.host_veth()).await,
        Vec::<String>::new()
    );
    assert_eq!(w.link_names(&p1.ns).await, ["lo"]);
    assert!(
        w.ping(&vm, p2.ip).await,
        "VM -> shared pod 2 after pod 1 left"
    );
    assert_eq!(
        w.table(&a, table).await.len(),
        1,
        "pod 2 still uses the table"
    );
    // DEL again is fine.
    w.del(&p1).await;

    // Pod 2's netns goes first (its veth with it); DEL still cleans up.
    w.lab.delete_pod_netns(&p2.ns).await.expect("delete netns");
    // The kernel dismantles a namespace in the background.
    let started = Instant::now();
    while w.link_names(&node_ns).await.contains(&p2.host_veth()) {
        assert!(started.elapsed() < SETTLE, "the veth outlives the netns");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        w.our_rules(&a).await.len(),
        2,
        "the rules outlive the netns"
    );
    w.del(&p2).await;
    assert_eq!(
        w.traces(&a, p2.ip, &p2.host_veth()).await,
        Vec::<String>::new()
    );
    assert_eq!(w.our_rules(&a).await, Vec::<Value>::new());
    assert_eq!(
        w.table(&a, table).await,
        Vec::<Value>::new(),
        "the last pod takes the table"
    );
    assert!(
        w.silent(&vm, p1.ip).await,
        "VM still reaches pod 1 after DEL"
    );

    // The cloud unassigns pod 1's IP: the VPC stops delivering it.
    let (eni, _) = w.shared_enis[&a].clone();
    w.cloud
        .unassign_private_ips(&eni, &[p1.ip])
        .await
        .expect("unassign");
    w.wait_delivered(p1.ip, None).await;
    assert_eq!(w.lab.delivers(p2.ip).await.expect("neigh"), Some(mac));
    w.shutdown().await;
}

/// Two nodes: a shared pod on A reaches a shared pod on B (out of A's ENI,
/// through the VPC, into B's ENI) and an exclusive-ENI pod on B, and the
/// replies come back; the VM reaches B's shared pod. DEL of every pod
/// leaves nothing of them on either node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shared_pod_reaches_shared_and_exclusive_pods_on_another_node() {
    skip_unless_lab!();
    let mut w = SharedLab::start("shx").await;
    let (a, b) = (InstanceId::new("i-sha"), InstanceId::new("i-shb"));
    let alloc_a = w.allocate_shared(&a).await;
    let alloc_b = w.allocate_shared(&b).await;
    let alloc_x = w.allocate_exclusive(&b).await;
    let pa = w.add_pod("sh-a", &a, &alloc_a).await;
    let pb = w.add_pod("sh-b", &b, &alloc_b).await;
    let px = w.add_pod("ex-b", &b, &alloc_x).await;
    assert_ne!(alloc_a.first.mac, alloc_b.first.mac);

    // The exclusive pod holds its ENI; the shared pods' ENIs stay in the nodes.
    let x_mac = alloc_x.first.mac.to_ascii_lowercase();
    assert!(
        w.link_with_mac(&px.ns, &x_mac).await.is_some(),
        "the ENI is in the pod"
    );
    for (node, alloc) in [(&a, &alloc_a), (&b, &alloc_b)] {
        let mac = alloc.first.mac.to_ascii_lowercase();
        assert!(w.link_with_mac(&w.node_ns(node), &mac).await.is_some());
    }

    assert!(
        w.ping(&pa.ns, pb.ip).await,
        "shared pod on A -> shared pod on B"
    );
    assert!(
        w.ping(&pb.ns, pa.ip).await,
        "shared pod on B -> shared pod on A"
    );
    assert!(
        w.ping(&pa.ns, px.ip).await,
        "shared pod on A -> exclusive-ENI pod on B"
    );
    assert!(
        w.ping(&px.ns, pa.ip).await,
        "exclusive-ENI pod on B -> shared pod on A"
    );
    assert!(
        w.ping(&pb.ns, px.ip).await,
        "shared pod on B -> exclusive-ENI pod on B"
    );
    assert!(
        w.ping(&w.lab.vm_netns(), pb.ip).await,
        "VM -> shared pod on B"
    );

    for p in [&pa, &pb, &px] {
        w.del(p).await;
        assert_eq!(w.link_names(&p.ns).await, ["lo"], "{}", p.name);
    }
    assert_eq!(
        w.traces(&a, pa.ip, &pa.host_veth()).await,
        Vec::<String>::new()
    );
    assert_eq!(
        w.traces(&b, pb.ip, &pb.host_veth()).await,
        Vec::<String>::new()
    );
    for node in [&a, &b] {
        assert_eq!(w.our_rules(node).await, Vec::<Value>::new());
    }
    let x_back = w.link_with_mac(&w.node_ns(&b), &x_mac).await;
    assert!(
        matches!(x_back, Some((_, false))),
        "the exclusive ENI is back in B, down: {x_back:?}"
    );
    w.shutdown().await;
}

/// An allocation naming an ENI whose link the node does not have: ADD
/// waits its bounded while, fails with code 11 ("try again later") naming
/// the ENI, and leaves nothing in the pod or on the node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shared_eni_without_a_link_is_try_again_later_and_leaves_nothing() {
    skip_unless_lab!();
    let mut w = SharedLab::start("shm").await;
    let a = InstanceId::new("i-sha");
    let mut alloc = w.allocate_shared(&a).await;
    alloc.first.mac = "02:00:00:ee:ee:01".into();
    let (p, out) = w.try_add_pod("sh-m", &a, &alloc).await;
    assert!(!out.success(), "{}", out.stdout);
    let e = out.json().expect("error object");
    assert_eq!(e["code"], 11, "{e}");
    assert!(
        e["msg"]
            .as_str()
            .unwrap_or_default()
            .contains(&alloc.first.eni_id),
        "{e}"
    );
    assert_eq!(w.link_names(&p.ns).await, ["lo"]);
    assert_eq!(
        w.traces(&a, p.ip, &p.host_veth()).await,
        Vec::<String>::new()
    );
    assert_eq!(w.our_rules(&a).await, Vec::<Value>::new());
    w.shutdown().await;
}

/// GC (spec 1.1.0) with only the second pod among the live attachments:
/// the first pod's veth, rules and proxy ARP entry go, the second still
/// answers the VM and keeps its ENI's table.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gc_removes_shared_pods_the_runtime_no_longer_lists() {
    skip_unless_lab!();
    let mut w = SharedLab::start("shg").await;
    let a = InstanceId::new("i-sha");
    let alloc1 = w.allocate_shared(&a).await;
    let alloc2 = w.allocate_shared(&a).await;
    let p1 = w.add_pod("sh-g1", &a, &alloc1).await;
    let p2 = w.add_pod("sh-g2", &a, &alloc2).await;
    let mut config = w.net_config();
    config["cniVersion"] = json!("1.1.0");
    config["cni.dev/valid-attachments"] =
        json!([{"containerID": p2.container_id, "ifname": "eth0"}]);
    let mut call = CniCall::new(BIN, CniCommand::Gc, &p2.ns, &a, p2.pod.clone(), config);
    call.env.push(("VPC_ENI_CNI_LOG".into(), "info".into()));
    let out = w.lab.run_cni(&call).await.expect("run the plugin");
    assert!(out.success(), "GC: {}\n{}", out.stdout, out.stderr);
    assert_eq!(
        w.traces(&a, p1.ip, &p1.host_veth()).await,
        Vec::<String>::new()
    );
    assert_eq!(w.our_rules(&a).await.len(), 2, "pod 2's rules stay");
    assert!(
        w.ping(&w.lab.vm_netns(), p2.ip).await,
        "VM -> pod 2 after GC"
    );
    w.del(&p2).await;
    assert_eq!(
        w.traces(&a, p2.ip, &p2.host_veth()).await,
        Vec::<String>::new()
    );
    w.shutdown().await;
}
