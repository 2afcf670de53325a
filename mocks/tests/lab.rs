//! The lab as a test of the data path uses it: the fake cloud attaches an
//! ENI and the node sees a link with its MAC; an address configured on it in
//! a pod answers the VM; a route entry makes a podCIDR reachable and its
//! deletion makes it unreachable; a secondary IP reaches its ENI while the
//! cloud assigns it; a detached ENI's link goes; a CNI plugin
//! runs as a runtime runs it; nothing is left behind, not even by a panic.
//!
//! Root only (CI runs as root): elsewhere each test prints why and passes.
//! Each test has its own prefix, so they run in parallel.

use mocks::cloud::{InstanceSpec, World};
use mocks::lab::{CniCall, CniCommand, Lab, LabConfig, Netns, PodRef, RouteTarget};
use providers::ids::{InstanceId, RouteTableId, SecurityGroupId, SubnetId};
use providers::model::{CreateEniRequest, Eni, NewRouteEntry};
use providers::Cloud;
use serde_json::json;
use std::net::Ipv4Addr;
use std::path::Path;
use std::time::{Duration, Instant};

const WORLD: &str = r#"
region: cn-hangzhou
flavor: alibaba
vpcs: [{id: vpc-1, cidr: 192.168.0.0/16, routeTables: [{id: vtb-1}]}]
vswitches:
  - {id: vsw-a, vpc: vpc-1, zone: cn-hangzhou-h, cidr: 192.168.1.0/24}
  - {id: vsw-b, vpc: vpc-1, zone: cn-hangzhou-h, cidr: 192.168.2.0/24}
securityGroups: [{id: sg-1, vpc: vpc-1}]
instances:
  - {id: i-1, type: ecs.g6.xlarge, zone: cn-hangzhou-h, vswitch: vsw-a, privateIp: 192.168.1.10}
  - {id: i-2, type: ecs.g6.xlarge, zone: cn-hangzhou-h, vswitch: vsw-b, privateIp: 192.168.2.10}
faults: {attachDelayMs: 0, detachDelayMs: 0, routeDelayMs: 0}
"#;

const SOON: Duration = Duration::from_secs(10);

fn available() -> bool {
    match Lab::available() {
        Ok(()) => true,
        Err(reason) => {
            eprintln!("skipping lab test: {reason}");
            false
        }
    }
}

fn i(id: &str) -> InstanceId {
    InstanceId::new(id)
}

fn ip(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}

/// A lab that syncs only when asked, so each step sees exactly its change.
async fn manual_lab(world: &World, prefix: &str) -> Lab {
    let config = LabConfig {
        poll: None,
        ..LabConfig::new(prefix)
    };
    Lab::start(world.clone(), config).await.unwrap()
}

/// Names of the machine's namespaces that start with `prefix-`.
fn namespaces_of(prefix: &str) -> Vec<String> {
    let Ok(dir) = std::fs::read_dir("/run/netns") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| n.starts_with(&format!("{prefix}-")))
        .collect()
}

/// Whether the host namespace has a link with this MAC (reading the host's
/// link list sends nothing).
fn host_has_mac(mac: &str) -> bool {
    let out = std::process::Command::new("ip")
        .args(["-j", "link", "show"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).contains(&mac.to_ascii_lowercase())
}

async fn new_eni(world: &World, vswitch: &str, token: &str) -> Eni {
    world
        .create_eni(&CreateEniRequest {
            subnet_id: SubnetId::new(vswitch),
            security_groups: vec![SecurityGroupId::new("sg-1")],
            secondary_ip_count: 0,
            tags: Default::default(),
            description: "lab test".into(),
            idempotency_token: token.into(),
        })
        .await
        .unwrap()
}

async fn sh(lab: &Lab, ns: &Netns, argv: &[&str]) {
    let out = lab.exec(ns, argv).await.unwrap();
    assert!(out.success(), "{argv:?} in {ns}: {}", out.stderr);
}

async fn until(what: &str, mut check: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + SOON;
    while !check().await {
        assert!(Instant::now() < deadline, "not within {SOON:?}: {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn an_eni_and_a_route_carry_packets_while_the_cloud_says_so() {
    if !available() {
        return;
    }
    let world = World::from_yaml(WORLD).unwrap();
    let lab = manual_lab(&world, "vlt1").await;
    let vm = lab.vm_netns();
    let node1 = lab.node_netns(&i("i-1")).unwrap();
    let node2 = lab.node_netns(&i("i-2")).unwrap();
    assert_eq!(
        lab.vm_addr().unwrap(),
        "192.168.1.254/24".parse().unwrap(),
        "the VM holds an address the cloud never hands out"
    );
    // The VPC works: the VM reaches a node on its vSwitch and, through the
    // router, one on the other.
    assert!(lab.ping_until(&vm, ip("192.168.1.10"), true, SOON).await);
    assert!(lab.ping_until(&vm, ip("192.168.2.10"), true, SOON).await);
    let primary = lab.links(&node1).await.unwrap();
    let primary_mac = world
        .enis()
        .into_iter()
        .find(|e| e.primary_ip == ip("192.168.1.10"))
        .unwrap()
        .mac;
    assert!(primary.iter().any(|l| l.mac == primary_mac && l.up));

    // The cloud attaches an ENI of vSwitch b to node 1: a link with its MAC
    // appears there, down and without address.
    let eni = new_eni(&world, "vsw-b", "t-eni-1").await;
    world.attach_eni(&eni.id, &i("i-1")).await.unwrap();
    lab.sync().await.unwrap();
    let link = lab
        .links(&node1)
        .await
        .unwrap()
        .into_iter()
        .find(|l| l.mac == eni.mac)
        .expect("the ENI's link in its node");
    assert!(!link.up);
    assert!(link.name.starts_with("vlt1e"), "{}", link.name);
    let addrs = lab
        .exec(
            &node1,
            &["ip", "-4", "-o", "addr", "show", "dev", &link.name],
        )
        .await
        .unwrap();
    assert!(addrs.stdout.trim().is_empty(), "{}", addrs.stdout);
    assert!(lab
        .links(&node2)
        .await
        .unwrap()
        .iter()
        .all(|l| l.mac != eni.mac));

    // What the plugin does: the link into the pod as eth0, the ENI's
    // address, a default route via the vSwitch gateway.
    let pod = lab.pod_netns("eni").await.unwrap();
    sh(
        &lab,
        &node1,
        &["ip", "link", "set", &link.name, "netns", pod.name()],
    )
    .await;
    sh(
        &lab,
        &pod,
        &["ip", "link", "set", &link.name, "name", "eth0"],
    )
    .await;
    let addr = format!("{}/24", eni.primary_ip);
    sh(&lab, &pod, &["ip", "addr", "add", &addr, "dev", "eth0"]).await;
    sh(&lab, &pod, &["ip", "link", "set", "eth0", "up"]).await;
    sh(
        &lab,
        &pod,
        &["ip", "route", "add", "default", "via", "192.168.2.253"],
    )
    .await;
    assert!(lab.ping_until(&vm, eni.primary_ip, true, SOON).await);

    // Syncing again neither takes the link back nor makes a second one.
    lab.sync().await.unwrap();
    lab.sync().await.unwrap();
    let (ns, l) = lab.find_mac(&eni.mac).await.unwrap().unwrap();
    assert_eq!((ns.name(), l.name.as_str()), (pod.name(), "eth0"));
    assert!(lab
        .links(&node1)
        .await
        .unwrap()
        .iter()
        .all(|l| l.mac != eni.mac));
    assert!(lab.ping(&vm, eni.primary_ip).await);

    // A route entry podCIDR -> node 2: the router learns it and the VM
    // reaches an address of that podCIDR on node 2.
    let table = RouteTableId::new("vtb-1");
    let pod_cidr = "10.100.2.0/24".parse().unwrap();
    let entry = NewRouteEntry {
        destination: pod_cidr,
        instance_id: i("i-2"),
        name: "lab".into(),
        description: "lab test".into(),
    };
    world.create_route_entries(&table, &[entry]).await.unwrap();
    sh(
        &lab,
        &node2,
        &["ip", "addr", "add", "10.100.2.1/32", "dev", "lo"],
    )
    .await;
    assert!(!lab.ping(&vm, ip("10.100.2.1")).await, "no route yet");
    lab.sync().await.unwrap();
    assert_eq!(
        lab.router_routes().await.unwrap(),
        vec![(pod_cidr, RouteTarget::Via(ip("192.168.2.10")))]
    );
    assert!(lab.ping_until(&vm, ip("10.100.2.1"), true, SOON).await);

    // The entry goes: so do the router's route and the packets.
    world
        .delete_route_entries(&table, &[(pod_cidr, i("i-2"))])
        .await
        .unwrap();
    lab.sync().await.unwrap();
    assert!(lab.router_routes().await.unwrap().is_empty());
    assert!(!lab.ping(&vm, ip("10.100.2.1")).await);

    // The plugin's DEL gives the link back to the node; the cloud detaches
    // the ENI; the link goes.
    sh(
        &lab,
        &pod,
        &["ip", "link", "set", "eth0", "netns", node1.name()],
    )
    .await;
    lab.sync().await.unwrap();
    let (ns, _) = lab.find_mac(&eni.mac).await.unwrap().unwrap();
    assert_eq!(ns, node1, "still attached: it stays in its node");
    world.detach_eni(&eni.id, &i("i-1")).await.unwrap();
    lab.sync().await.unwrap();
    assert!(lab.find_mac(&eni.mac).await.unwrap().is_none());
    assert!(!lab.ping(&vm, eni.primary_ip).await);

    lab.teardown().await.unwrap();
    assert_eq!(namespaces_of("vlt1"), Vec::<String>::new());
    assert!(!host_has_mac(&eni.mac));
    assert!(!host_has_mac(&primary_mac));
}

#[tokio::test]
async fn the_lab_follows_the_world_on_its_own() {
    if !available() {
        return;
    }
    // What a killed run of this prefix left behind is swept first.
    let stale = std::process::Command::new("ip")
        .args(["netns", "add", "vlt2-pod-stale"])
        .status()
        .unwrap();
    assert!(stale.success());
    let yaml = WORLD.replace(
        "faults: {attachDelayMs: 0, detachDelayMs: 0, routeDelayMs: 0}",
        "faults: {attachDelayMs: 300, detachDelayMs: 300, routeDelayMs: 300}",
    );
    let world = World::from_yaml(&yaml).unwrap();
    let lab = Lab::start(world.clone(), LabConfig::new("vlt2"))
        .await
        .unwrap();
    assert!(!namespaces_of("vlt2").contains(&"vlt2-pod-stale".to_owned()));

    // A new instance becomes a node.
    world
        .add_instance(&InstanceSpec {
            id: i("i-3"),
            instance_type: "ecs.g6.xlarge".into(),
            zone: "cn-hangzhou-h".into(),
            vswitch: SubnetId::new("vsw-b"),
            private_ip: ip("192.168.2.30"),
            security_groups: vec![],
        })
        .unwrap();
    until("node i-3 built", async || {
        lab.node_netns(&i("i-3")).is_some()
    })
    .await;
    let node3 = lab.node_netns(&i("i-3")).unwrap();
    assert!(
        lab.ping_until(&lab.vm_netns(), ip("192.168.2.30"), true, SOON)
            .await
    );

    // An ENI attaching (300 ms) shows up once the cloud says InUse.
    let eni = new_eni(&world, "vsw-b", "t-eni-2").await;
    world.attach_eni(&eni.id, &i("i-3")).await.unwrap();
    until(
        "ENI link in node i-3",
        async || matches!(lab.find_mac(&eni.mac).await, Ok(Some((ns, _))) if ns == node3),
    )
    .await;

    // A pod takes it; its namespace is deleted without a DEL: the link
    // comes back in the node, as a NIC returns to its host.
    let pod = lab.pod_netns("gone").await.unwrap();
    let (_, link) = lab.find_mac(&eni.mac).await.unwrap().unwrap();
    sh(
        &lab,
        &node3,
        &["ip", "link", "set", &link.name, "netns", pod.name()],
    )
    .await;
    lab.delete_pod_netns(&pod).await.unwrap();
    until(
        "ENI link back in node i-3",
        async || matches!(lab.find_mac(&eni.mac).await, Ok(Some((ns, _))) if ns == node3),
    )
    .await;

    // A route (Pending for 300 ms) reaches the router once Available; the
    // instance goes and the route turns into a blackhole, the node with it.
    let entry = NewRouteEntry {
        destination: "10.100.3.0/24".parse().unwrap(),
        instance_id: i("i-3"),
        name: "lab".into(),
        description: "lab test".into(),
    };
    world
        .create_route_entries(&RouteTableId::new("vtb-1"), &[entry])
        .await
        .unwrap();
    let via = RouteTarget::Via(ip("192.168.2.30"));
    until("route via i-3", async || {
        lab.router_routes()
            .await
            .unwrap()
            .iter()
            .any(|r| r.1 == via)
    })
    .await;
    world.remove_instance(&i("i-3")).unwrap();
    until("node i-3 gone, its route a blackhole", async || {
        lab.node_netns(&i("i-3")).is_none()
            && lab
                .router_routes()
                .await
                .unwrap()
                .iter()
                .any(|r| r.1 == RouteTarget::Blackhole)
    })
    .await;
    assert!(!namespaces_of("vlt2").contains(&node3.name().to_owned()));

    drop(lab);
    assert_eq!(namespaces_of("vlt2"), Vec::<String>::new());
}

#[tokio::test]
async fn a_cni_plugin_runs_as_a_runtime_runs_it() {
    if !available() {
        return;
    }
    let world = World::from_yaml(WORLD).unwrap();
    let lab = manual_lab(&world, "vlt3").await;
    let pod = lab.pod_netns("cni").await.unwrap();
    let node = lab.node_netns(&i("i-1")).unwrap();
    let pod_ref = PodRef {
        namespace: "default".into(),
        name: "web-0".into(),
        uid: "0f6c3a5e-7b1d-4c1e-9d1a-3f0e2b9a8c7d".into(),
    };

    // A stand-in plugin that records what it was given.
    let dir = std::env::temp_dir().join(format!("vpc-eni-lab-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let plugin = dir.join("recorder");
    std::fs::write(
        &plugin,
        "#!/bin/sh\nd=$(dirname \"$0\")\nenv > \"$d/env\"\ncat > \"$d/stdin\"\nprintf '{\"cniVersion\":\"1.0.0\"}'\n",
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&plugin, std::fs::Permissions::from_mode(0o755)).unwrap();
    let config = json!({"cniVersion": "1.0.0", "name": "vpc-eni", "type": "recorder"});
    let call = CniCall::new(
        &plugin,
        CniCommand::Add,
        &pod,
        &i("i-1"),
        pod_ref.clone(),
        config.clone(),
    );
    let out = lab.run_cni(&call).await.unwrap();
    assert!(out.success(), "{}", out.stderr);
    assert_eq!(out.json().unwrap()["cniVersion"], "1.0.0");
    let env = std::fs::read_to_string(dir.join("env")).unwrap();
    let stdin = std::fs::read_to_string(dir.join("stdin")).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    let has = |line: &str| env.lines().any(|l| l == line);
    assert!(has("CNI_COMMAND=ADD"), "{env}");
    assert!(
        has(&format!("CNI_NETNS=/var/run/netns/{}", pod.name())),
        "{env}"
    );
    assert!(has("CNI_IFNAME=eth0"), "{env}");
    assert!(
        has(&format!("CNI_CONTAINERID={}", call.container_id)),
        "{env}"
    );
    assert!(has(&format!("CNI_ARGS={}", call.cni_args())), "{env}");
    assert!(call
        .cni_args()
        .contains("K8S_POD_NAMESPACE=default;K8S_POD_NAME=web-0;"));
    assert!(
        has(&format!("CNI_PATH={}:/usr/lib/cni", dir.display())),
        "{env}"
    );
    assert!(
        has(&format!("VPC_ENI_CNI_HOST_NETNS={}", node.path().display())),
        "{env}"
    );
    assert!(
        env.lines().any(|l| l.starts_with("PATH=")),
        "the runtime's own environment too"
    );
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&stdin).unwrap(),
        config
    );

    // A reference plugin: loopback brings the pod's lo up.
    let loopback = Path::new("/usr/lib/cni/loopback");
    if loopback.exists() {
        sh(&lab, &pod, &["ip", "link", "set", "lo", "down"]).await;
        let config = json!({"cniVersion": "1.0.0", "name": "lo", "type": "loopback"});
        let add = CniCall::new(
            loopback,
            CniCommand::Add,
            &pod,
            &i("i-1"),
            pod_ref.clone(),
            config.clone(),
        );
        let out = lab.run_cni(&add).await.unwrap();
        assert!(out.success(), "{} {}", out.stdout, out.stderr);
        assert_eq!(out.json().unwrap()["interfaces"][0]["name"], "lo");
        let lo = lab.links(&pod).await.unwrap();
        assert!(lo.iter().any(|l| l.name == "lo" && l.up));

        let version = CniCall::new(
            loopback,
            CniCommand::Version,
            &pod,
            &i("i-1"),
            pod_ref.clone(),
            json!({"cniVersion": "1.0.0"}),
        );
        let out = lab.run_cni(&version).await.unwrap();
        assert!(out.success());
        assert!(out.json().unwrap()["supportedVersions"]
            .as_array()
            .is_some());

        // An error is JSON on stdout with a non-zero exit.
        lab.delete_pod_netns(&pod).await.unwrap();
        let out = lab.run_cni(&add).await.unwrap();
        assert!(!out.success());
        assert!(
            out.json().unwrap()["code"].as_u64().is_some(),
            "{}",
            out.stdout
        );
    } else {
        eprintln!("loopback part skipped: apt-get install containernetworking-plugins");
    }

    // A node the lab does not have is refused before anything runs.
    let mut stray = call.clone();
    stray.node = i("i-404");
    assert!(lab.run_cni(&stray).await.is_err());
    lab.teardown().await.unwrap();
    assert_eq!(namespaces_of("vlt3"), Vec::<String>::new());
}

#[tokio::test]
async fn a_panicking_test_leaves_nothing_behind() {
    if !available() {
        return;
    }
    let world = World::from_yaml(WORLD).unwrap();
    let task = tokio::spawn(async move {
        let lab = manual_lab(&world, "vlt4").await;
        lab.pod_netns("doomed").await.unwrap();
        assert!(namespaces_of("vlt4").len() >= 5);
        panic!("a test fails inside the lab");
    });
    let err = task.await.unwrap_err();
    assert!(err.is_panic());
    assert_eq!(namespaces_of("vlt4"), Vec::<String>::new());
}

#[tokio::test]
async fn the_lab_refuses_bad_prefixes_and_foreign_namespaces() {
    if !available() {
        return;
    }
    let world = World::from_yaml(WORLD).unwrap();
    for bad in ["", "has-dash", "toolongprefix", "Upper"] {
        assert!(
            Lab::start(world.clone(), LabConfig::new(bad))
                .await
                .is_err(),
            "{bad:?}"
        );
    }
    let lab = manual_lab(&world, "vlt5").await;
    let other = manual_lab(&world, "vlt6").await;
    // A namespace of another lab is not this lab's to run commands in.
    assert!(lab.exec(&other.vm_netns(), &["true"]).await.is_err());
    assert!(!lab.ping(&other.vm_netns(), ip("192.168.1.10")).await);
    // The two labs are apart: the same addresses, no path between them.
    assert!(
        other
            .ping_until(&other.vm_netns(), ip("192.168.1.10"), true, SOON)
            .await
    );
    drop(other);
    assert!(
        !lab.ping(&lab.vm_netns(), ip("192.168.9.9")).await,
        "no route out of the VPC"
    );
    drop(lab);
    assert_eq!(namespaces_of("vlt5"), Vec::<String>::new());
    assert_eq!(namespaces_of("vlt6"), Vec::<String>::new());
}

/// A secondary IP the cloud assigns to an ENI is delivered to that ENI by
/// the VPC (the router), whether or not the host answers ARP for it, and no
/// longer once the cloud unassigns it.
#[tokio::test]
async fn a_secondary_ip_reaches_its_eni_while_the_cloud_assigns_it() {
    if !available() {
        return;
    }
    let world = World::from_yaml(WORLD).unwrap();
    let lab = manual_lab(&world, "vlt6").await;
    let vm = lab.vm_netns();
    let node1 = lab.node_netns(&i("i-1")).unwrap();
    // An ENI of vSwitch b on node 1: the VM (on vSwitch a) reaches its
    // addresses only through the router.
    let eni = new_eni(&world, "vsw-b", "t-eni-6").await;
    world.attach_eni(&eni.id, &i("i-1")).await.unwrap();
    let ips = world
        .assign_private_ips(&eni.id, 1, &"t-ip-6".into())
        .await
        .unwrap();
    let secondary = ips[0];
    lab.sync().await.unwrap();
    assert_eq!(
        lab.delivers(secondary).await.unwrap(),
        Some(eni.mac.to_ascii_lowercase())
    );
    assert_eq!(
        lab.delivers(eni.primary_ip).await.unwrap(),
        Some(eni.mac.to_ascii_lowercase())
    );
    // The node holds the address on the ENI but never answers ARP there:
    // only the VPC's own delivery brings packets in.
    let link = lab
        .links(&node1)
        .await
        .unwrap()
        .into_iter()
        .find(|l| l.mac == eni.mac)
        .expect("the ENI's link in its node");
    let addr = format!("{secondary}/32");
    sh(
        &lab,
        &node1,
        &["ip", "addr", "add", &addr, "dev", &link.name],
    )
    .await;
    sh(&lab, &node1, &["ip", "link", "set", &link.name, "up"]).await;
    let ignore = format!("echo 8 > /proc/sys/net/ipv4/conf/{}/arp_ignore", link.name);
    sh(&lab, &node1, &["sh", "-c", &ignore]).await;
    assert!(lab.ping_until(&vm, secondary, true, SOON).await);

    // Unassigned: the VPC no longer delivers it.
    world
        .unassign_private_ips(&eni.id, &[secondary])
        .await
        .unwrap();
    lab.sync().await.unwrap();
    assert_eq!(lab.delivers(secondary).await.unwrap(), None);
    assert!(lab.ping_until(&vm, secondary, false, SOON).await);
    lab.teardown().await.unwrap();
}
