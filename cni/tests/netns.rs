//! The plugin binary against real network namespaces and the fake
//! apiserver, run as a container runtime runs it. Root only: each test
//! skips with a one-line reason elsewhere. Packets stay inside namespaces
//! the test made.

mod support;

use serde_json::{json, Value};
use support::{Lab, GATEWAY, SERVICE_IP};

const CID: &str = "0123456789abcdef0123456789abcdef";

fn host_veth(cid: &str) -> String {
    cni::names::host_veth(cid)
}

/// The pod's netns after ADD: the ENI as eth0 with the MAC, the IP and the
/// default route via the gateway.
fn assert_plumbed(lab: &Lab, pod_ns: &str) {
    let eth0 = Lab::link(pod_ns, "eth0").expect("eth0 in the pod");
    assert_eq!(eth0["address"], lab.eni_mac);
    assert_eq!(eth0["mtu"], 1500);
    assert!(
        eth0["flags"].as_array().unwrap().contains(&json!("UP")),
        "{eth0}"
    );
    assert_eq!(Lab::addrs(pod_ns, "eth0"), ["10.0.0.7/24"]);
    let routes = Lab::routes(pod_ns);
    let default = routes
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["dst"] == "default")
        .unwrap_or_else(|| panic!("no default route: {routes}"));
    assert_eq!(default["gateway"], GATEWAY);
    assert_eq!(default["dev"], "eth0");
    let svc = routes
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["dst"] == "10.96.0.0/12")
        .unwrap_or_else(|| panic!("no service route: {routes}"));
    assert_eq!(svc["dev"], "veth0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exclusive_eni_add_check_del() {
    skip_unless_lab!();
    let mut lab = Lab::new().await;
    let pod_ns = lab.pod_ns("pod");
    lab.create_node(None).await;
    let alloc = lab.allocation();
    let uid = lab.create_pod("web-0", true, Some(&alloc)).await;
    let conf = lab.config(5.0);

    // ADD
    let add = lab
        .cni("ADD", CID, Some(&pod_ns), "web-0", Some(&uid), &conf)
        .await;
    assert!(add.ok, "{add:?}");
    let result = add.json();
    assert_eq!(result["cniVersion"], "1.0.0");
    assert_eq!(
        result["interfaces"][0],
        json!({"name": "eth0", "mac": lab.eni_mac, "sandbox": Lab::netns_path(&pod_ns)})
    );
    assert_eq!(
        result["ips"],
        json!([{"address": "10.0.0.7/24", "gateway": GATEWAY, "interface": 0}])
    );
    assert_eq!(
        result["routes"][0],
        json!({"dst": "0.0.0.0/0", "gw": GATEWAY})
    );
    assert_eq!(
        result["routes"][1],
        json!({"dst": "10.96.0.0/12", "gw": "169.254.1.1"})
    );
    assert_eq!(result["dns"], json!({}));
    assert_plumbed(&lab, &pod_ns);
    // How DEL will find the ENI's old name: the alias set before the move.
    assert_eq!(
        Lab::link(&pod_ns, "eth0").unwrap()["ifalias"],
        format!("vpc-eni-cni:eni:{CID}:{}", lab.eni_link)
    );
    let node_routes = Lab::routes(&lab.node_ns);
    assert!(
        node_routes
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["dst"] == "10.0.0.7" && r["dev"] == host_veth(CID)),
        "{node_routes}"
    );
    assert!(
        Lab::link(&lab.node_ns, &lab.eni_link).is_none(),
        "the ENI left the node"
    );
    assert!(Lab::link(&lab.node_ns, &host_veth(CID)).is_some());

    // Packets: the pod reaches its gateway over the ENI, the node reaches
    // the pod and the pod a ClusterIP over the veth.
    if support::has_ping() {
        assert!(Lab::ping(&pod_ns, GATEWAY), "pod -> gateway");
        assert!(Lab::ping(&lab.node_ns, "10.0.0.7"), "node -> pod");
        assert!(
            Lab::ping(&pod_ns, SERVICE_IP),
            "pod -> service IP on the node"
        );
    } else {
        eprintln!("ping is not installed: packet checks skipped");
    }

    // CHECK passes; ADD again is fine and changes nothing.
    let check = lab
        .cni("CHECK", CID, Some(&pod_ns), "web-0", Some(&uid), &conf)
        .await;
    assert!(check.ok, "{check:?}");
    assert_eq!(check.stdout, "");
    let again = lab
        .cni("ADD", CID, Some(&pod_ns), "web-0", Some(&uid), &conf)
        .await;
    assert!(again.ok, "{again:?}");
    assert_eq!(again.json()["ips"], result["ips"]);
    assert_plumbed(&lab, &pod_ns);

    // CHECK fails once the address is gone.
    support::sh(&[
        "ip",
        "-n",
        &pod_ns,
        "addr",
        "del",
        "10.0.0.7/24",
        "dev",
        "eth0",
    ]);
    let broken = lab
        .cni("CHECK", CID, Some(&pod_ns), "web-0", Some(&uid), &conf)
        .await;
    assert!(!broken.ok);
    let e = broken.json();
    assert_eq!(e["code"], 103, "{e}");
    assert!(e["msg"].as_str().unwrap().contains("10.0.0.7/24"), "{e}");

    // DEL: the link back in the node under its old name, down, unmarked.
    let del = lab
        .cni("DEL", CID, Some(&pod_ns), "web-0", Some(&uid), &conf)
        .await;
    assert!(del.ok, "{del:?}");
    assert_eq!(del.stdout, "");
    let back = Lab::link(&lab.node_ns, &lab.eni_link).expect("ENI back in the node");
    assert_eq!(back["address"], lab.eni_mac);
    assert!(
        !back["flags"].as_array().unwrap().contains(&json!("UP")),
        "{back}"
    );
    assert!(back.get("ifalias").is_none(), "{back}");
    assert_eq!(Lab::link_names(&pod_ns), ["lo"]);
    assert!(Lab::link(&lab.node_ns, &host_veth(CID)).is_none());

    // DEL again is fine.
    let del2 = lab
        .cni("DEL", CID, Some(&pod_ns), "web-0", Some(&uid), &conf)
        .await;
    assert!(del2.ok, "{del2:?}");
    assert!(Lab::link(&lab.node_ns, &lab.eni_link).is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn del_after_the_eni_is_gone_and_without_a_netns() {
    skip_unless_lab!();
    let mut lab = Lab::new().await;
    let pod_ns = lab.pod_ns("pod");
    lab.create_node(None).await;
    let alloc = lab.allocation();
    lab.create_pod("web-1", true, Some(&alloc)).await;
    let conf = lab.config(5.0);
    let add = lab
        .cni("ADD", CID, Some(&pod_ns), "web-1", None, &conf)
        .await;
    assert!(add.ok, "{add:?}");

    // The ENI vanishes (detached under the pod's feet).
    support::sh(&["ip", "-n", &pod_ns, "link", "del", "eth0"]);
    let del = lab
        .cni("DEL", CID, Some(&pod_ns), "web-1", None, &conf)
        .await;
    assert!(del.ok, "{del:?}");
    assert!(Lab::link(&lab.node_ns, &host_veth(CID)).is_none());
    assert_eq!(Lab::link_names(&pod_ns), ["lo"]);

    // DEL with no netns at all (the runtime lost it) is fine too.
    let del = lab.cni("DEL", CID, None, "web-1", None, &conf).await;
    assert!(del.ok, "{del:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_allocation_in_time_is_try_again_later_and_leaves_nothing() {
    skip_unless_lab!();
    let mut lab = Lab::new().await;
    let pod_ns = lab.pod_ns("pod");
    lab.create_node(None).await;
    lab.create_pod("waiting-0", true, None).await;
    let before_node = Lab::link_names(&lab.node_ns);

    let started = std::time::Instant::now();
    let add = lab
        .cni(
            "ADD",
            CID,
            Some(&pod_ns),
            "waiting-0",
            None,
            &lab.config(1.0),
        )
        .await;
    assert!(!add.ok);
    let e = add.json();
    assert_eq!(e["cniVersion"], "1.0.0");
    assert_eq!(e["code"], 11, "{e}");
    assert!(
        e["msg"].as_str().unwrap().contains("default/waiting-0"),
        "{e}"
    );
    assert!(e["details"].is_string());
    assert!(started.elapsed() >= std::time::Duration::from_secs(1));
    assert_eq!(Lab::link_names(&lab.node_ns), before_node);
    assert_eq!(Lab::link_names(&pod_ns), ["lo"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_allocation_whose_link_is_missing_rolls_back() {
    skip_unless_lab!();
    let mut lab = Lab::new().await;
    let pod_ns = lab.pod_ns("pod");
    lab.create_node(None).await;
    let mut alloc = lab.allocation();
    alloc["mac"] = json!("02:00:5e:ff:ff:fe");
    lab.create_pod("nolink-0", true, Some(&alloc)).await;
    let before_node = Lab::link_names(&lab.node_ns);
    let add = lab
        .cni(
            "ADD",
            CID,
            Some(&pod_ns),
            "nolink-0",
            None,
            &lab.config(0.5),
        )
        .await;
    assert!(!add.ok);
    let e = add.json();
    assert_eq!(e["code"], 11, "{e}");
    assert!(
        e["msg"].as_str().unwrap().contains("02:00:5e:ff:ff:fe"),
        "{e}"
    );
    assert_eq!(Lab::link_names(&lab.node_ns), before_node);
    assert_eq!(Lab::link_names(&pod_ns), ["lo"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_pod_is_named() {
    skip_unless_lab!();
    let mut lab = Lab::new().await;
    let pod_ns = lab.pod_ns("pod");
    let add = lab
        .cni("ADD", CID, Some(&pod_ns), "ghost", None, &lab.config(1.0))
        .await;
    assert!(!add.ok);
    let e = add.json();
    assert_eq!(e["code"], 100, "{e}");
    assert_eq!(e["msg"], "pod default/ghost not found");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recreated_pod_with_another_uid_is_refused() {
    skip_unless_lab!();
    let mut lab = Lab::new().await;
    let pod_ns = lab.pod_ns("pod");
    lab.create_node(Some(support::POD_CIDR)).await;
    lab.create_pod("web-2", false, None).await;
    let add = lab
        .cni(
            "ADD",
            CID,
            Some(&pod_ns),
            "web-2",
            Some("not-the-uid"),
            &lab.config(1.0),
        )
        .await;
    assert!(!add.ok);
    assert_eq!(add.json()["code"], 101, "{add:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_pods_go_to_ptp_on_the_nodes_pod_cidr() {
    skip_unless_lab!();
    if !support::has_reference_plugins() {
        eprintln!("skipped: ptp/host-local not in {}", support::CNI_DIR);
        return;
    }
    let mut lab = Lab::new().await;
    let pod_ns = lab.pod_ns("pod");
    lab.create_node(Some(support::POD_CIDR)).await;
    let uid = lab.create_pod("plain-0", false, None).await;
    let conf = lab.config(1.0);

    let add = lab
        .cni("ADD", CID, Some(&pod_ns), "plain-0", Some(&uid), &conf)
        .await;
    assert!(add.ok, "{add:?}");
    let result = add.json();
    assert_eq!(result["cniVersion"], "1.0.0");
    let address = result["ips"][0]["address"].as_str().expect("an address");
    let net: ipnet::Ipv4Net = support::POD_CIDR.parse().unwrap();
    let ip: ipnet::Ipv4Net = address.parse().unwrap();
    assert!(net.contains(&ip.addr()), "{address} not in {net}");
    assert_eq!(Lab::addrs(&pod_ns, "eth0"), [address.to_owned()]);
    // ptp's host side lives in the node's namespace, not the test's.
    let gw = result["ips"][0]["gateway"].as_str().unwrap().to_owned();
    if support::has_ping() {
        assert!(Lab::ping(&pod_ns, &gw), "pod -> its ptp gateway {gw}");
    }
    let saved = lab.dir.join("state").join(format!("{CID}-eth0.json"));
    assert!(saved.exists());

    // CHECK with the ADD's result as prevResult, as a runtime sends it.
    let mut check_conf = conf.clone();
    check_conf["prevResult"] = result.clone();
    let check = lab
        .cni(
            "CHECK",
            CID,
            Some(&pod_ns),
            "plain-0",
            Some(&uid),
            &check_conf,
        )
        .await;
    assert!(check.ok, "{check:?}");

    let del = lab
        .cni("DEL", CID, Some(&pod_ns), "plain-0", Some(&uid), &conf)
        .await;
    assert!(del.ok, "{del:?}");
    assert_eq!(Lab::link_names(&pod_ns), ["lo"]);
    assert!(!saved.exists());
    let ipam_dir = lab.dir.join("ipam").join(&lab.prefix);
    let held: Vec<String> = std::fs::read_dir(&ipam_dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.parse::<std::net::Ipv4Addr>().is_ok())
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(
        held,
        Vec::<String>::new(),
        "host-local still holds an address"
    );

    let del2 = lab
        .cni("DEL", CID, Some(&pod_ns), "plain-0", Some(&uid), &conf)
        .await;
    assert!(del2.ok, "{del2:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn version_and_bad_config_through_the_binary() {
    // No namespaces needed: runs everywhere.
    let run = |env: Vec<(&'static str, &'static str)>, stdin: &'static str| {
        let mut cmd = std::process::Command::new(support::BIN);
        cmd.env_clear();
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null());
        let mut child = cmd.spawn().expect("spawn");
        use std::io::Write;
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(stdin.as_bytes())
            .expect("write");
        let out = child.wait_with_output().expect("wait");
        let v: Value = serde_json::from_slice(&out.stdout).expect("json");
        (out.status.success(), v)
    };
    let (ok, v) = run(
        vec![("CNI_COMMAND", "VERSION")],
        r#"{"cniVersion":"1.0.0"}"#,
    );
    assert!(ok);
    assert_eq!(
        v,
        json!({"cniVersion": "1.0.0", "supportedVersions": ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"]})
    );
    let (ok, v) = run(
        vec![
            ("CNI_COMMAND", "ADD"),
            ("CNI_CONTAINERID", "c1"),
            ("CNI_IFNAME", "eth0"),
            ("CNI_NETNS", "/run/netns/none"),
        ],
        r#"{"cniVersion":"1.0.0","name":"n","serviceCidr":"nope"}"#,
    );
    assert!(!ok);
    assert_eq!(v["code"], 7);
    assert!(v["msg"].as_str().unwrap().contains("serviceCidr"), "{v}");
    assert_eq!(
        v.as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect::<std::collections::BTreeSet<_>>(),
        ["cniVersion", "code", "details", "msg"]
            .into_iter()
            .collect()
    );
    let (ok, v) = run(
        vec![("CNI_COMMAND", "ADD")],
        r#"{"cniVersion":"1.0.0","name":"n"}"#,
    );
    assert!(!ok);
    assert_eq!(v["code"], 4);
    assert!(
        v["msg"].as_str().unwrap().contains("CNI_CONTAINERID"),
        "{v}"
    );
}

/// The reference `host-device` plugin with `static` IPAM reaches the end
/// state an exclusive-ENI ADD must reach; ours must match it on the ENI.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_eni_ends_up_as_host_device_leaves_it() {
    skip_unless_lab!();
    if !std::path::Path::new(support::CNI_DIR)
        .join("host-device")
        .exists()
    {
        eprintln!("skipped: host-device not in {}", support::CNI_DIR);
        return;
    }
    let mut lab = Lab::new().await;
    let pod_ns = lab.pod_ns("pod");
    let snapshot = |ns: &str| {
        let link = Lab::link(ns, "eth0").expect("eth0");
        let default: Vec<Value> = Lab::routes(ns)
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["dst"] == "default")
            .map(|r| json!({"gateway": r["gateway"], "dev": r["dev"]}))
            .collect();
        (link["address"].clone(), Lab::addrs(ns, "eth0"), default)
    };
    let reference = json!({
        "cniVersion": "1.0.0", "name": lab.prefix, "type": "host-device",
        "hwaddr": lab.eni_mac,
        "ipam": {"type": "static",
            "addresses": [{"address": "10.0.0.7/24", "gateway": GATEWAY}],
            "routes": [{"dst": "0.0.0.0/0", "gw": GATEWAY}]}
    });
    let run_ref = |command: &str| {
        let mut child = std::process::Command::new("ip")
            .args(["netns", "exec", &lab.node_ns, "/usr/lib/cni/host-device"])
            .env("CNI_COMMAND", command)
            .env("CNI_CONTAINERID", "reference")
            .env("CNI_NETNS", Lab::netns_path(&pod_ns))
            .env("CNI_IFNAME", "eth0")
            .env("CNI_PATH", support::CNI_DIR)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("host-device");
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(reference.to_string().as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stdout)
        );
    };
    run_ref("ADD");
    let want = snapshot(&pod_ns);
    run_ref("DEL");
    assert!(Lab::link(&lab.node_ns, &lab.eni_link).is_some());

    lab.create_node(None).await;
    let alloc = lab.allocation();
    lab.create_pod("web-3", true, Some(&alloc)).await;
    let add = lab
        .cni("ADD", CID, Some(&pod_ns), "web-3", None, &lab.config(5.0))
        .await;
    assert!(add.ok, "{add:?}");
    assert_eq!(snapshot(&pod_ns), want);
}

/// STATUS and GC (spec 1.1.0): STATUS says whether ADD can work; GC gives
/// back what attachments the runtime no longer lists held.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_and_gc() {
    skip_unless_lab!();
    let mut lab = Lab::new().await;
    let pod_ns = lab.pod_ns("pod");
    lab.create_node(None).await;
    let alloc = lab.allocation();
    lab.create_pod("web-4", true, Some(&alloc)).await;
    let mut conf = lab.config(5.0);
    conf["cniVersion"] = json!("1.1.0");

    let status = lab.cni("STATUS", CID, None, "web-4", None, &conf).await;
    assert!(status.ok, "{status:?}");
    let mut broken = conf.clone();
    broken["kubeconfig"] = json!(lab.dir.join("missing"));
    let status = lab.cni("STATUS", CID, None, "web-4", None, &broken).await;
    assert!(!status.ok);
    assert_eq!(status.json()["code"], 50, "{status:?}");

    let add = lab
        .cni("ADD", CID, Some(&pod_ns), "web-4", None, &conf)
        .await;
    assert!(add.ok, "{add:?}");
    assert_eq!(add.json()["cniVersion"], "1.1.0");

    // A GC that still lists the attachment keeps it.
    let mut gc = conf.clone();
    gc["cni.dev/valid-attachments"] = json!([{"containerID": CID, "ifname": "eth0"}]);
    let run = lab.cni("GC", CID, None, "web-4", None, &gc).await;
    assert!(run.ok, "{run:?}");
    assert!(Lab::link(&pod_ns, "eth0").is_some());

    // Once the runtime forgets it, the ENI goes back (its pod netns gone).
    support::sh(&[
        "ip",
        "-n",
        &pod_ns,
        "link",
        "set",
        "eth0",
        "netns",
        &lab.node_ns,
    ]);
    gc["cni.dev/valid-attachments"] = json!([]);
    let run = lab.cni("GC", CID, None, "web-4", None, &gc).await;
    assert!(run.ok, "{run:?}");
    let back = Lab::link(&lab.node_ns, &lab.eni_link).expect("ENI back under its name");
    assert!(back.get("ifalias").is_none(), "{back}");
    assert!(Lab::link(&lab.node_ns, &host_veth(CID)).is_none());
}

/// Addresses host-local holds for the lab's network.
fn held_addresses(lab: &Lab) -> Vec<String> {
    std::fs::read_dir(lab.dir.join("ipam").join(&lab.prefix))
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.parse::<std::net::Ipv4Addr>().is_ok())
                .collect()
        })
        .unwrap_or_default()
}

/// A force-deleted pod: DEL still releases its address from the config
/// saved at ADD; and GC releases what the runtime no longer lists.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delegate_del_without_the_pod_and_gc() {
    skip_unless_lab!();
    if !support::has_reference_plugins() {
        eprintln!("skipped: ptp/host-local not in {}", support::CNI_DIR);
        return;
    }
    let mut lab = Lab::new().await;
    let pod_a = lab.pod_ns("pa");
    let pod_b = lab.pod_ns("pb");
    lab.create_node(Some(support::POD_CIDR)).await;
    lab.create_pod("plain-a", false, None).await;
    lab.create_pod("plain-b", false, None).await;
    let mut conf = lab.config(1.0);
    conf["cniVersion"] = json!("1.1.0");
    // ptp 1.1.1 speaks up to 1.0.0: the delegate gets our version, so keep
    // ADD and DEL at 1.0.0 and use 1.1.0 only for GC.
    let mut v1 = conf.clone();
    v1["cniVersion"] = json!("1.0.0");
    for (cid, ns, pod) in [("cid-a", &pod_a, "plain-a"), ("cid-b", &pod_b, "plain-b")] {
        let add = lab.cni("ADD", cid, Some(ns), pod, None, &v1).await;
        assert!(add.ok, "{add:?}");
    }
    assert_eq!(held_addresses(&lab).len(), 2);

    kube::Api::<k8s_openapi::api::core::v1::Pod>::namespaced(lab.client.clone(), "default")
        .delete("plain-a", &Default::default())
        .await
        .expect("delete pod");
    let del = lab
        .cni("DEL", "cid-a", Some(&pod_a), "plain-a", None, &v1)
        .await;
    assert!(del.ok, "{del:?}");
    assert_eq!(held_addresses(&lab).len(), 1);

    let mut gc = conf.clone();
    gc["cni.dev/valid-attachments"] = json!([]);
    let run = lab.cni("GC", "gc", None, "", None, &gc).await;
    assert!(run.ok, "{run:?}");
    assert_eq!(held_addresses(&lab), Vec::<String>::new());
    assert!(!lab.dir.join("state").join("cid-b-eth0.json").exists());
}
