//! The BGP route backend against real routers: FRR's bgpd (Debian `frr`)
//! started per test on its own 127.0.0.x address, port, config and vty
//! socket, read back with `vtysh ... show bgp ipv4 unicast json`; the
//! controller is the real binary (a separate process, so it can be killed)
//! against the fake apiserver. Skipped with the reason when FRR or root is
//! missing. Every bgpd and controller is killed when its test ends, also
//! on failure.

use k8s_openapi::api::core::v1::Node;
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use mocks::frr::{self, Frr};
use mocks::kubeapi::{FakeApiServer, Options};
use mocks::lab::{Lab, LabConfig};
use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const DEADLINE: Duration = Duration::from_secs(30);
/// The controller connects from here (the kernel's source for 127.0.0.x).
const CONTROLLER: Ipv4Addr = Ipv4Addr::LOCALHOST;

fn skip() -> bool {
    if let Some(why) = frr::unavailable() {
        eprintln!("skipped: {why}");
        return true;
    }
    false
}

/// The fake apiserver, a kubeconfig for it, and the test's directory.
struct World {
    api: FakeApiServer,
    client: kube::Client,
    dir: PathBuf,
}

impl World {
    async fn start(name: &str) -> World {
        let api = FakeApiServer::start(Options::without_controllers())
            .await
            .unwrap();
        let dir = std::env::temp_dir().join(format!("bgp-world-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("kubeconfig"), api.kubeconfig_yaml()).unwrap();
        let client = kube::Client::try_from(api.client_config()).unwrap();
        World { api, client, dir }
    }

    async fn add_node(&self, name: &str, rack: &str, pod_cidr: &str, ip: Ipv4Addr) {
        let nodes: Api<Node> = Api::all(self.client.clone());
        let node: Node = serde_json::from_value(serde_json::json!({
            "apiVersion": "v1", "kind": "Node",
            "metadata": {"name": name, "labels": {"rack": rack}},
            "spec": {"podCIDR": pod_cidr, "podCIDRs": [pod_cidr]},
        }))
        .unwrap();
        nodes.create(&PostParams::default(), &node).await.unwrap();
        let status = serde_json::json!({"status": {"addresses": [{"type": "InternalIP", "address": ip.to_string()}]}});
        nodes
            .patch_status(name, &PatchParams::default(), &Patch::Merge(&status))
            .await
            .unwrap();
    }

    async fn set_pod_cidr(&self, name: &str, pod_cidr: &str) {
        let nodes: Api<Node> = Api::all(self.client.clone());
        let patch = serde_json::json!({"spec": {"podCIDR": pod_cidr, "podCIDRs": [pod_cidr]}});
        nodes
            .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .unwrap();
    }

    async fn delete_node(&self, name: &str) {
        let nodes: Api<Node> = Api::all(self.client.clone());
        nodes.delete(name, &DeleteParams::default()).await.unwrap();
    }

    /// (status, reason, message) of a node's NetworkUnavailable condition.
    async fn network_unavailable(&self, name: &str) -> Option<(String, String, String)> {
        let nodes: Api<Node> = Api::all(self.client.clone());
        let node = nodes.get(name).await.ok()?;
        node.status?
            .conditions?
            .into_iter()
            .find(|c| c.type_ == "NetworkUnavailable")
            .map(|c| {
                (
                    c.status,
                    c.reason.unwrap_or_default(),
                    c.message.unwrap_or_default(),
                )
            })
    }

    /// (reason, note) of every Event.
    async fn events(&self) -> Vec<(String, String)> {
        Api::<Event>::all(self.client.clone())
            .list(&ListParams::default())
            .await
            .map(|l| {
                l.items
                    .into_iter()
                    .map(|e| (e.reason.unwrap_or_default(), e.note.unwrap_or_default()))
                    .collect()
            })
            .unwrap_or_default()
    }

    async fn wait_event(&self, reason: &str, note_has: &str) -> String {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let events = self.events().await;
            if let Some((_, note)) = events
                .iter()
                .find(|(r, n)| r == reason && n.contains(note_has))
            {
                return note.clone();
            }
            assert!(
                Instant::now() < deadline,
                "no {reason} Event with {note_has:?}; Events: {events:#?}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Start the controller binary with `routes` as the `routes:` block.
    fn controller(&self, name: &str, routes: &str) -> Controller {
        let metrics = frr::free_port(Ipv4Addr::LOCALHOST);
        let config = format!(
            "clusterId: {name}\nroutes:\n{routes}\ncontroller:\n  listen: 127.0.0.1:{metrics}\n  leaderElection:\n    enabled: true\n    namespace: default\n    leaseName: {name}\n    leaseDurationSeconds: 4\n    renewIntervalSeconds: 1\n"
        );
        std::fs::write(self.dir.join(format!("{name}.yaml")), config).unwrap();
        let mut c = self.restart(name);
        c.metrics = metrics;
        c
    }

    /// Start the controller binary with the config already written for `name`.
    fn restart(&self, name: &str) -> Controller {
        self.restart_with(name, env!("CARGO_BIN_EXE_vpc-eni-controller"))
    }

    /// Like `restart`, with another build of the controller binary.
    fn restart_with(&self, name: &str, bin: &str) -> Controller {
        let path = self.dir.join(format!("{name}.yaml"));
        let text = std::fs::read_to_string(&path).unwrap();
        let metrics = text
            .split("listen: 127.0.0.1:")
            .nth(1)
            .and_then(|r| r.lines().next())
            .and_then(|p| p.trim().parse().ok())
            .unwrap_or(0);
        let log = std::fs::File::create(self.dir.join(format!("{name}.log"))).unwrap();
        let child = Command::new(bin)
            .args(["run", "--config"])
            .arg(&path)
            .arg("--kubeconfig")
            .arg(self.dir.join("kubeconfig"))
            .env("RUST_LOG", "info,controller=debug,bgp=debug")
            .env_remove("POD_NAME")
            .env_remove("POD_NAMESPACE")
            .env_remove("POD_IP")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        Controller {
            child,
            metrics,
            log: self.dir.join(format!("{name}.log")),
        }
    }
}

impl Drop for World {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
        let _ = self.api.addr();
    }
}

/// The controller process; killed on drop.
struct Controller {
    child: Child,
    metrics: u16,
    log: PathBuf,
}

impl Controller {
    fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([sig, &self.child.id().to_string()])
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        assert!(ok, "kill {sig} failed");
    }

    fn sigkill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    async fn metrics(&self) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let Ok(mut s) = tokio::net::TcpStream::connect(("127.0.0.1", self.metrics)).await else {
            return String::new();
        };
        let _ = s
            .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await;
        let mut out = String::new();
        let _ = s.read_to_string(&mut out).await;
        out
    }
}

impl Drop for Controller {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-CONT", &self.child.id().to_string()])
            .stderr(Stdio::null())
            .status();
        self.sigkill();
    }
}

/// Wait until every (metric, label text, value suffix) has a line.
async fn wait_metrics(c: &Controller, lines: &[(&str, &str, &str)]) {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let metrics = c.metrics().await;
        let found = |(name, label, value): &(&str, &str, &str)| {
            metrics
                .lines()
                .any(|l| l.starts_with(name) && l.contains(label) && l.ends_with(value))
        };
        if lines.iter().all(found) {
            return;
        }
        assert!(Instant::now() < deadline, "want {lines:?} in\n{metrics}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn ip(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}

/// Best next hop per prefix in a router's table.
fn table(r: &Frr) -> BTreeMap<String, Ipv4Addr> {
    tokio::task::block_in_place(|| r.best_next_hops())
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
}

fn want(items: &[(&str, &str)]) -> BTreeMap<String, Ipv4Addr> {
    items.iter().map(|(p, h)| (p.to_string(), ip(h))).collect()
}

async fn wait_table(r: &Frr, c: &mut Controller, expected: &BTreeMap<String, Ipv4Addr>) {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let got = table(r);
        if &got == expected {
            return;
        }
        if Instant::now() > deadline {
            panic!(
                "{}: table {got:?}, want {expected:?}\nrouter log:\n{}\ncontroller alive: {}\nneighbor: {:?}\ncontroller log:\n{}",
                r.name,
                r.log(),
                c.alive(),
                tokio::task::block_in_place(|| r.neighbor(CONTROLLER)),
                c.log()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A router in `asn` on `addr` that takes the controller as a passive
/// neighbor (the controller connects; the router never dials it) in
/// `controller_as`, plus `more` neighbors.
fn router(
    name: &str,
    addr: &str,
    asn: u32,
    controller_as: u32,
    extra: &[&str],
    more: &[(Ipv4Addr, u32, Vec<String>)],
) -> Frr {
    let addr = ip(addr);
    let port = frr::free_port(addr);
    let mut neighbors = vec![(
        CONTROLLER,
        controller_as,
        ["passive".to_owned(), "timers 3 9".to_owned()]
            .into_iter()
            .chain(extra.iter().map(|s| s.to_string()))
            .collect::<Vec<_>>(),
    )];
    neighbors.extend(more.iter().cloned());
    Frr::start(name, addr, port, &frr::config(asn, addr, &neighbors)).unwrap()
}

fn peer(r: &Frr, asn: u32, more: &str) -> String {
    format!(
        "      - {{address: {}, port: {}, asn: {asn}{more}}}\n",
        r.address, r.port
    )
}

fn bgp_routes(local_as: u32, hold: u16, gr: bool, peers: &str) -> String {
    format!(
        "  enabled: true\n  backend: bgp\n  clusterCidr: 10.244.0.0/16\n  aggregateWindowMs: 200\n  bgp:\n    localAsn: {local_as}\n    holdTimeSeconds: {hold}\n    gracefulRestart: {{enabled: {gr}, restartTimeSeconds: 120}}\n    peers:\n{peers}"
    )
}

/// Case 1: iBGP to one router: N nodes give N prefixes with the nodes as
/// next hops; a deleted node's prefix is withdrawn; a changed podCIDR is
/// replaced. Nodes are marked available once the router has them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ibgp_router_learns_every_node_and_forgets_deleted_and_changed() {
    if skip() {
        return;
    }
    let world = World::start("ibgp").await;
    let r = router("bgp-frr-ibgp", "127.0.0.11", 64512, 64512, &[], &[]);
    for i in 1..=5u8 {
        world
            .add_node(
                &format!("node-{i}"),
                "r1",
                &format!("10.244.{i}.0/24"),
                Ipv4Addr::new(10, 0, 0, i),
            )
            .await;
    }
    let mut c = world.controller("ibgp", &bgp_routes(64512, 9, true, &peer(&r, 64512, "")));
    let expected: BTreeMap<String, Ipv4Addr> = (1..=5u8)
        .map(|i| (format!("10.244.{i}.0/24"), Ipv4Addr::new(10, 0, 0, i)))
        .collect();
    wait_table(&r, &mut c, &expected).await;
    // One valid path each, chosen as best (FRR selects in the background).
    let deadline = Instant::now() + DEADLINE;
    loop {
        let routes = tokio::task::block_in_place(|| r.routes()).unwrap();
        assert!(
            routes
                .values()
                .all(|p| p.len() == 1 && p[0].as_path.is_empty()),
            "one iBGP path (no AS) per prefix: {routes:?}"
        );
        if routes.values().all(|p| p[0].valid && p[0].best) {
            break;
        }
        assert!(Instant::now() < deadline, "not valid and best: {routes:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let note = world.wait_event("RouteCreated", "node-3").await;
    assert!(
        note.contains("10.244.3.0/24") && note.contains("10.0.0.3"),
        "{note}"
    );
    world
        .wait_event("BGPSessionEstablished", &r.port.to_string())
        .await;
    let deadline = Instant::now() + DEADLINE;
    while world.network_unavailable("node-1").await.map(|c| c.0) != Some("False".into()) {
        assert!(
            Instant::now() < deadline,
            "{:?}",
            world.network_unavailable("node-1").await
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let peer_label = format!("peer=\"{}:{}\"", r.address, r.port);
    wait_metrics(
        &c,
        &[
            ("vpc_eni_bgp_peer_prefixes_announced", &peer_label, " 5"),
            (
                "vpc_eni_bgp_peer_state",
                &format!("{peer_label},state=\"Established\""),
                " 1",
            ),
        ],
    )
    .await;

    world.delete_node("node-2").await;
    world.set_pod_cidr("node-4", "10.244.40.0/24").await;
    let mut expected = expected;
    expected.remove("10.244.2.0/24");
    expected.remove("10.244.4.0/24");
    expected.insert("10.244.40.0/24".into(), ip("10.0.0.4"));
    wait_table(&r, &mut c, &expected).await;
    let note = world.wait_event("RouteDeleted", "node-2").await;
    assert!(note.contains("10.244.2.0/24"), "{note}");
    assert!(c.alive());
}

/// Case 2: AS per rack. Two routers, AS 65001 and 65002, peer with each
/// other over eBGP; the controller speaks to each as a member of its AS
/// (`localAsn`) and tells it its rack's nodes only (`nodeSelector`); each
/// learns the other rack through its eBGP neighbour.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn as_per_rack_routers_learn_their_rack_and_the_other_through_ebgp() {
    if skip() {
        return;
    }
    let world = World::start("rack").await;
    let (a_addr, b_addr) = (ip("127.0.0.21"), ip("127.0.0.22"));
    let (a_port, b_port) = (frr::free_port(a_addr), frr::free_port(b_addr));
    // Between the routers, each sets itself as next hop under a stand-in
    // fabric address (192.0.2.x): FRR refuses 127/8 next hops as martian.
    let ebgp = |port: u16, source: Ipv4Addr| {
        vec![
            format!("port {port}"),
            format!("update-source {source}"),
            "disable-connected-check".to_owned(),
            "timers 3 9".to_owned(),
            "route-map FABRIC out".to_owned(),
        ]
    };
    let fabric = |hop: &str| format!("route-map FABRIC permit 10\n set ip next-hop {hop}\n!\n");
    let neighbors_a = vec![
        (CONTROLLER, 65001, vec!["passive".to_owned()]),
        (b_addr, 65002, ebgp(b_port, a_addr)),
    ];
    let neighbors_b = vec![
        (CONTROLLER, 65002, vec!["passive".to_owned()]),
        (a_addr, 65001, ebgp(a_port, b_addr)),
    ];
    let config_a = frr::config(65001, a_addr, &neighbors_a) + &fabric("192.0.2.21");
    let config_b = frr::config(65002, b_addr, &neighbors_b) + &fabric("192.0.2.22");
    let a = Frr::start("bgp-frr-rack-a", a_addr, a_port, &config_a).unwrap();
    let b = Frr::start("bgp-frr-rack-b", b_addr, b_port, &config_b).unwrap();
    world
        .add_node("r1-n1", "r1", "10.244.1.0/24", ip("10.1.0.1"))
        .await;
    world
        .add_node("r1-n2", "r1", "10.244.2.0/24", ip("10.1.0.2"))
        .await;
    world
        .add_node("r2-n1", "r2", "10.244.3.0/24", ip("10.2.0.1"))
        .await;
    let peers = format!(
        "{}{}",
        peer(
            &a,
            65001,
            ", localAsn: 65001, nodeSelector: {matchLabels: {rack: r1}}"
        ),
        peer(
            &b,
            65002,
            ", localAsn: 65002, nodeSelector: {matchLabels: {rack: r2}}"
        )
    );
    let mut c = world.controller("rack", &bgp_routes(64512, 9, true, &peers));
    // A: its rack from the controller (next hop = node), rack 2 from B
    // (eBGP rewrites the next hop to B).
    let want_a = want(&[
        ("10.244.1.0/24", "10.1.0.1"),
        ("10.244.2.0/24", "10.1.0.2"),
        ("10.244.3.0/24", "192.0.2.22"),
    ]);
    let want_b = want(&[
        ("10.244.1.0/24", "192.0.2.21"),
        ("10.244.2.0/24", "192.0.2.21"),
        ("10.244.3.0/24", "10.2.0.1"),
    ]);
    wait_table(&a, &mut c, &want_a).await;
    wait_table(&b, &mut c, &want_b).await;
    let routes_a = tokio::task::block_in_place(|| a.routes()).unwrap();
    let from_b = &routes_a[&"10.244.3.0/24".parse().unwrap()];
    assert!(
        from_b
            .iter()
            .all(|p| p.as_path == "65002" && p.peer == "127.0.0.22"),
        "{from_b:?}"
    );
    let own = &routes_a[&"10.244.1.0/24".parse().unwrap()];
    assert!(
        own.iter()
            .any(|p| p.peer == "127.0.0.1" && p.as_path.is_empty()),
        "{own:?}"
    );

    // A node moving racks moves routers.
    let nodes: Api<Node> = Api::all(world.client.clone());
    let patch = serde_json::json!({"metadata": {"labels": {"rack": "r2"}}});
    nodes
        .patch("r1-n2", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    let want_b = want(&[
        ("10.244.1.0/24", "192.0.2.21"),
        ("10.244.2.0/24", "10.1.0.2"),
        ("10.244.3.0/24", "10.2.0.1"),
    ]);
    wait_table(&b, &mut c, &want_b).await;
}

/// Case 3, graceful restart on: the controller is SIGKILLed; the router
/// keeps its routes (stale) and the next controller's announcement and
/// End-of-RIB refresh them: the prefixes are never withdrawn.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_controller_with_graceful_restart_keeps_routes_until_the_next_announces() {
    if skip() {
        return;
    }
    let world = World::start("gr").await;
    let r = router("bgp-frr-gr", "127.0.0.31", 64512, 64512, &[], &[]);
    for i in 1..=3u8 {
        world
            .add_node(
                &format!("n{i}"),
                "r1",
                &format!("10.244.{i}.0/24"),
                Ipv4Addr::new(10, 0, 0, i),
            )
            .await;
    }
    let routes = bgp_routes(64512, 9, true, &peer(&r, 64512, ""));
    let mut first = world.controller("gr", &routes);
    let expected: BTreeMap<String, Ipv4Addr> = (1..=3u8)
        .map(|i| (format!("10.244.{i}.0/24"), Ipv4Addr::new(10, 0, 0, i)))
        .collect();
    wait_table(&r, &mut first, &expected).await;
    let gr = tokio::task::block_in_place(|| r.neighbor(CONTROLLER)).unwrap();
    assert_eq!(
        gr.pointer("/gracefulRestartInfo/remoteGrMode")
            .and_then(|v| v.as_str()),
        Some("Restart"),
        "{gr:#}"
    );
    first.sigkill();

    // Held as stale while no controller is there.
    let deadline = Instant::now() + DEADLINE;
    loop {
        let paths = tokio::task::block_in_place(|| r.routes()).unwrap();
        assert_eq!(
            paths.len(),
            3,
            "a route was withdrawn after the kill: {paths:?}"
        );
        if paths.values().all(|p| p.iter().all(|p| p.stale)) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "routes never marked stale: {paths:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The next controller (it waits out the dead one's Lease) re-announces.
    let mut second = world.controller("gr", &routes);
    let deadline = Instant::now() + DEADLINE;
    loop {
        let paths = tokio::task::block_in_place(|| r.routes()).unwrap();
        assert_eq!(
            table(&r),
            expected,
            "a route was lost while the controller restarted: {paths:?}"
        );
        if paths.values().all(|p| p.iter().all(|p| !p.stale)) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "routes still stale: {paths:?}\n{}",
            second.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let n = tokio::task::block_in_place(|| r.neighbor(CONTROLLER)).unwrap();
    assert_eq!(
        n.get("bgpState").and_then(|v| v.as_str()),
        Some("Established")
    );
    assert!(second.alive());
}

/// Case 3, graceful restart off: a controller that stops answering (frozen
/// with SIGSTOP, its connection left open) loses its routes when the
/// router's hold timer expires, and gets them back once it runs again.
/// A SIGKILLed one loses them at once (the connection closes).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_graceful_restart_routes_go_at_hold_expiry() {
    if skip() {
        return;
    }
    let world = World::start("nogr").await;
    let r = router("bgp-frr-nogr", "127.0.0.41", 64512, 64512, &[], &[]);
    world
        .add_node("n1", "r1", "10.244.1.0/24", ip("10.0.0.1"))
        .await;
    let routes = bgp_routes(64512, 6, false, &peer(&r, 64512, ""));
    let mut c = world.controller("nogr", &routes);
    let expected = want(&[("10.244.1.0/24", "10.0.0.1")]);
    wait_table(&r, &mut c, &expected).await;
    c.signal("-STOP");
    let stopped = Instant::now();
    // The hold time is min(6, 9) = 6 s: still there well inside it...
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(table(&r), expected, "withdrawn before the hold time");
    // ...gone after it.
    while !table(&r).is_empty() {
        assert!(
            stopped.elapsed() < Duration::from_secs(20),
            "never withdrawn"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        stopped.elapsed() >= Duration::from_secs(5),
        "withdrawn after {:?}, before the hold time",
        stopped.elapsed()
    );
    c.signal("-CONT");
    wait_table(&r, &mut c, &expected).await;
    c.sigkill();
    let killed = Instant::now();
    while !table(&r).is_empty() {
        assert!(
            killed.elapsed() < Duration::from_secs(6),
            "not withdrawn within the hold time of a kill"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Case 5: a router that refuses us with a NOTIFICATION, one in another AS
/// than configured, one that dies: each is reported (Event, node
/// condition), retried, and nothing panics; the session comes back when
/// the router does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_peers_are_reported_and_retried_without_a_panic() {
    if skip() {
        return;
    }
    let world = World::start("bad").await;
    // Expects the controller in AS 64999: answers our OPEN with Bad Peer AS.
    let refuses = router("bgp-frr-bad-refuses", "127.0.0.51", 64512, 64999, &[], &[]);
    // Is in AS 64512, configured below as 65099: we refuse its OPEN.
    let wrong_as = router("bgp-frr-bad-wrongas", "127.0.0.52", 64512, 64512, &[], &[]);
    // Fine, until it is killed.
    let mut good = router("bgp-frr-bad-good", "127.0.0.53", 64512, 64512, &[], &[]);
    world
        .add_node("n1", "r1", "10.244.1.0/24", ip("10.0.0.1"))
        .await;
    world
        .add_node("n2", "r2", "10.244.2.0/24", ip("10.0.0.2"))
        .await;
    let peers = format!(
        "{}{}{}",
        peer(&refuses, 64512, ", nodeSelector: {matchLabels: {rack: r2}}"),
        peer(
            &wrong_as,
            65099,
            ", nodeSelector: {matchLabels: {rack: r2}}"
        ),
        peer(&good, 64512, ", nodeSelector: {matchLabels: {rack: r1}}"),
    );
    let mut c = world.controller("bad", &bgp_routes(64512, 9, true, &peers));
    wait_table(&good, &mut c, &want(&[("10.244.1.0/24", "10.0.0.1")])).await;
    let note = world
        .wait_event("BGPSessionFailed", &format!("127.0.0.51:{}", refuses.port))
        .await;
    assert!(note.contains("Bad Peer AS"), "{note}");
    let note = world
        .wait_event("BGPSessionFailed", &format!("127.0.0.52:{}", wrong_as.port))
        .await;
    assert!(
        note.contains("AS 64512") && note.contains("AS 65099"),
        "{note}"
    );
    // n2's only peers refuse it: it stays unavailable, saying why.
    let deadline = Instant::now() + DEADLINE;
    loop {
        let cond = world.network_unavailable("n2").await;
        if let Some((status, reason, message)) = &cond {
            if status == "True" && message.contains("127.0.0.51") && message.contains("127.0.0.52")
            {
                assert_eq!(reason, "NoRouteCreated");
                break;
            }
        }
        assert!(Instant::now() < deadline, "{cond:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(table(&refuses).is_empty() && table(&wrong_as).is_empty());

    // The good router dies: reported; it comes back on the same port and
    // the controller reconnects by itself.
    let (addr, port) = (good.address, good.port);
    good.kill();
    let note = world
        .wait_event("BGPSessionDown", &format!("127.0.0.53:{port}"))
        .await;
    assert!(note.contains("graceful restart"), "{note}");
    drop(good);
    let good = Frr::start(
        "bgp-frr-bad-good",
        addr,
        port,
        &frr::config(
            64512,
            addr,
            &[(
                CONTROLLER,
                64512,
                vec!["passive".to_owned(), "timers 3 9".to_owned()],
            )],
        ),
    )
    .unwrap();
    wait_table(&good, &mut c, &want(&[("10.244.1.0/24", "10.0.0.1")])).await;
    let label = format!("peer=\"127.0.0.53:{port}\"");
    wait_metrics(&c, &[("vpc_eni_bgp_peer_flaps_total", &label, " 1")]).await;
    assert!(c.alive(), "the controller died:\n{}", c.log());
    assert!(!c.log().contains("panicked"), "{}", c.log());
}

/// Leader election: of two replicas only the leader holds a session (the
/// standby exports no peer state); when the leader is killed the standby
/// takes over and, with graceful restart, the router never loses a route.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_leader_holds_sessions_and_a_standby_takes_over_without_a_withdraw() {
    if skip() {
        return;
    }
    let world = World::start("handover").await;
    let r = router("bgp-frr-handover", "127.0.0.61", 64512, 64512, &[], &[]);
    world
        .add_node("n1", "r1", "10.244.1.0/24", ip("10.0.0.1"))
        .await;
    world
        .add_node("n2", "r1", "10.244.2.0/24", ip("10.0.0.2"))
        .await;
    let routes = bgp_routes(64512, 9, true, &peer(&r, 64512, ""));
    let mut one = world.controller("handover-1", &routes);
    // Same Lease for both replicas.
    let config_one = std::fs::read_to_string(world.dir.join("handover-1.yaml")).unwrap();
    let port = frr::free_port(Ipv4Addr::LOCALHOST);
    let text = config_one.replace(
        &format!("127.0.0.1:{}", one.metrics),
        &format!("127.0.0.1:{port}"),
    );
    std::fs::write(world.dir.join("handover-2.yaml"), text).unwrap();
    let mut two = world.restart("handover-2");
    let expected = want(&[("10.244.1.0/24", "10.0.0.1"), ("10.244.2.0/24", "10.0.0.2")]);
    wait_table(&r, &mut one, &expected).await;
    let label = format!("peer=\"{}:{}\"", r.address, r.port);
    let (leader_first, standby_first) = {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let (m1, m2) = (one.metrics().await, two.metrics().await);
            let leads = |m: &str| m.lines().any(|l| l == "vpc_eni_leader 1");
            if leads(&m1) != leads(&m2) {
                break if leads(&m1) { (m1, m2) } else { (m2, m1) };
            }
            assert!(Instant::now() < deadline, "no single leader:\n{m1}\n{m2}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    assert!(leader_first.contains(&label), "{leader_first}");
    assert!(
        !standby_first.contains("vpc_eni_bgp_peer_state{"),
        "the standby has a session:\n{standby_first}"
    );
    let one_leads = one.metrics().await.lines().any(|l| l == "vpc_eni_leader 1");
    let (leader, standby) = if one_leads {
        (&mut one, &mut two)
    } else {
        (&mut two, &mut one)
    };
    leader.sigkill();
    // The standby waits out the Lease (4 s), then announces; the routes are
    // there (stale, then fresh) all along.
    let deadline = Instant::now() + DEADLINE;
    loop {
        assert_eq!(table(&r), expected, "a route was lost during the hand-over");
        let m = standby.metrics().await;
        if m.lines().any(|l| l == "vpc_eni_leader 1")
            && m.lines().any(|l| {
                l.starts_with("vpc_eni_bgp_peer_prefixes_announced")
                    && l.contains(&label)
                    && l.ends_with(" 2")
            })
        {
            let paths = tokio::task::block_in_place(|| r.routes()).unwrap();
            if paths.values().all(|p| p.iter().all(|p| !p.stale)) {
                break;
            }
        }
        assert!(
            Instant::now() < deadline,
            "the standby did not take over:\n{}",
            standby.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Figures for the README (ignored: run by hand, see README "The BGP route
/// backend"): 1,000 nodes join one after another; for each, the time from
/// its node object being complete (podCIDR and InternalIP) to FRR's table
/// showing its podCIDR, read by polling `vtysh` (so within one poll); and
/// the UPDATE messages and bytes the controller sent. The controller binary
/// is `VPC_ENI_CONTROLLER_BIN` when set (a release build), else this
/// test build's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn thousand_nodes_join_figures() {
    if skip() {
        return;
    }
    const NODES: u32 = 1000;
    let world = World::start("thousand").await;
    let r = router("bgp-frr-thousand", "127.0.0.71", 64512, 64512, &[], &[]);
    let routes = bgp_routes(64512, 90, true, &peer(&r, 64512, ""))
        .replace("aggregateWindowMs: 200", "aggregateWindowMs: 1000");
    let mut c = world.controller("thousand", &routes);
    if let Ok(bin) = std::env::var("VPC_ENI_CONTROLLER_BIN") {
        c.sigkill();
        c = world.restart_with("thousand", &bin);
    }
    let label = format!("peer=\"{}:{}\"", r.address, r.port);
    wait_metrics(
        &c,
        &[(
            "vpc_eni_bgp_peer_state",
            &format!("{label},state=\"Established\""),
            " 1",
        )],
    )
    .await;
    let prefix = |i: u32| Ipv4Addr::from(0x0af4_0000u32 + i * 64).to_string() + "/26";
    // Poll FRR's table in its own thread, noting when each prefix first shows.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let poller = {
        let stop = stop.clone();
        let (name, addr, port) = (r.name.clone(), r.address, r.port);
        let dir = std::env::temp_dir().join(format!("{name}-{}", std::process::id()));
        std::thread::spawn(move || {
            let mut seen: BTreeMap<String, Instant> = BTreeMap::new();
            let mut polls = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) && seen.len() < NODES as usize {
                let started = Instant::now();
                let out = Command::new("vtysh")
                    .arg("--vty_socket")
                    .arg(&dir)
                    .args(["-c", "show bgp ipv4 unicast json"])
                    .output();
                let now = Instant::now();
                polls.push(now - started);
                let Ok(out) = out else { continue };
                let Ok(v) = serde_json::from_slice::<serde_json::Value>(&out.stdout) else {
                    continue;
                };
                if let Some(routes) = v.get("routes").and_then(|r| r.as_object()) {
                    for k in routes.keys() {
                        seen.entry(k.clone()).or_insert(now);
                    }
                }
            }
            let _ = (addr, port);
            (seen, polls)
        })
    };
    let mut created: BTreeMap<String, Instant> = BTreeMap::new();
    let start = Instant::now();
    for i in 0..NODES {
        world
            .add_node(
                &format!("node-{i:04}"),
                "r1",
                &prefix(i),
                Ipv4Addr::from(0x0a01_0000u32 + i),
            )
            .await;
        created.insert(prefix(i), Instant::now());
    }
    let join = start.elapsed();
    let deadline = Instant::now() + Duration::from_secs(120);
    while !poller.is_finished() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (seen, polls) = poller.join().unwrap();
    assert_eq!(
        seen.len(),
        NODES as usize,
        "FRR shows {} of {NODES} prefixes",
        seen.len()
    );
    let mut lat: Vec<Duration> = created
        .iter()
        .map(|(p, t)| seen[p].saturating_duration_since(*t))
        .collect();
    lat.sort();
    let pct = |q: f64| lat[((lat.len() as f64 - 1.0) * q).round() as usize];
    let mut polls = polls;
    polls.sort();
    let all = NODES.to_string();
    wait_metrics(
        &c,
        &[(
            "vpc_eni_bgp_peer_prefixes_announced",
            &label,
            &format!(" {all}"),
        )],
    )
    .await;
    let metrics = c.metrics().await;
    let value = |name: &str| {
        metrics
            .lines()
            .find(|l| l.starts_with(name) && l.contains(&label))
            .and_then(|l| l.rsplit(' ').next())
            .unwrap_or("?")
            .to_owned()
    };
    println!(
        "{NODES} nodes joined in {join:?}; podCIDR -> FRR table: p50 {:?}, p99 {:?}, max {:?} (FRR polled every {:?} median); UPDATEs sent {} ({} bytes, End-of-RIB included)",
        pct(0.5),
        pct(0.99),
        lat[lat.len() - 1],
        polls[polls.len() / 2],
        value("vpc_eni_bgp_peer_updates_sent_total"),
        value("vpc_eni_bgp_peer_update_sent_bytes_total"),
    );
}

const LAB_WORLD: &str = r#"
region: cn-hangzhou
vpcs: [{id: vpc-1, cidr: 192.168.0.0/16, routeTables: [{id: vtb-1}]}]
vswitches:
  - {id: vsw-nodes, vpc: vpc-1, zone: cn-hangzhou-h, cidr: 192.168.1.0/24}
  - {id: vsw-hosts, vpc: vpc-1, zone: cn-hangzhou-h, cidr: 192.168.2.0/24}
securityGroups: [{id: sg-1, vpc: vpc-1}]
instances:
  - {id: i-n1, type: ecs.g6.xlarge, zone: cn-hangzhou-h, vswitch: vsw-nodes, privateIp: 192.168.1.10}
  - {id: i-n2, type: ecs.g6.xlarge, zone: cn-hangzhou-h, vswitch: vsw-nodes, privateIp: 192.168.1.11}
faults: {attachDelayMs: 0, detachDelayMs: 0, routeDelayMs: 0}
"#;

/// Run a command in one of the lab's namespaces; it must succeed.
async fn lab_sh(lab: &Lab, ns: &mocks::lab::Netns, argv: &[&str]) -> String {
    let out = lab.exec(ns, argv).await.unwrap();
    assert!(out.success(), "{argv:?} in {ns}: {}", out.stderr);
    out.stdout
}

/// The router's routes zebra installed, as "DEST via HOP dev LINK".
async fn zebra_routes(lab: &Lab) -> Vec<String> {
    let text = lab_sh(
        lab,
        &lab.router_netns(),
        &["ip", "route", "show", "proto", "bgp"],
    )
    .await;
    let mut routes: Vec<String> = text
        .lines()
        .map(|l| {
            // "DEST [nhid N] via HOP dev LINK proto bgp ...": the route's parts.
            let words: Vec<&str> = l.split_whitespace().collect();
            let after = |key: &str| {
                words
                    .iter()
                    .position(|w| *w == key)
                    .and_then(|i| words.get(i + 1))
                    .copied()
                    .unwrap_or("?")
            };
            format!("{} via {} dev {}", words[0], after("via"), after("dev"))
        })
        .collect();
    routes.sort();
    routes
}

/// Case 4, in the network-namespace lab (`mocks::lab`): the VPC's router
/// namespace runs zebra, so the routes FRR learns from the controller land
/// in its kernel table; nodes sit on one vSwitch, the VM (a host outside
/// the cluster) on another leg of the router. A pod namespace on node n1,
/// wired as the ptp plugin wires one (veth, the pod's /32, a host route on
/// the node), is reached from the VM only once n1's podCIDR is announced,
/// and no longer once n1 is deleted. Pings go from the VM, bounded by count
/// and deadline; the lab (prefix `bgpl`) and FRR are removed at the end,
/// also on failure.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zebra_installs_the_announced_routes_and_a_host_behind_the_router_reaches_a_pod() {
    if skip() {
        return;
    }
    if let Err(why) = Lab::available() {
        eprintln!("skipped: {why}");
        return;
    }
    let cloud = mocks::cloud::World::from_yaml(LAB_WORLD).unwrap();
    let lab = Lab::start(
        cloud,
        LabConfig {
            poll: None,
            vm_vswitch: Some("vsw-hosts".into()),
            ..LabConfig::new("bgpl")
        },
    )
    .await
    .unwrap();
    let vm = lab.vm_netns();
    let rtr = lab.router_netns();
    let n1 = lab.node_netns(&"i-n1".into()).unwrap();
    // The VPC works: the VM reaches a node through the router.
    assert!(
        lab.ping_until(&vm, ip("192.168.1.10"), true, DEADLINE)
            .await
    );

    // A pod on n1, as ptp makes one: a veth, the pod's /32, the node's
    // address of the pod's gateway, a host route on the node.
    let pod = lab.pod_netns("p1").await.unwrap();
    let veth = format!("{}v1", lab.prefix());
    lab_sh(
        &lab,
        &n1,
        &[
            "ip",
            "link",
            "add",
            &veth,
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            pod.name(),
        ],
    )
    .await;
    lab_sh(
        &lab,
        &n1,
        &["ip", "addr", "add", "169.254.1.1/32", "dev", &veth],
    )
    .await;
    lab_sh(&lab, &n1, &["ip", "link", "set", &veth, "up"]).await;
    lab_sh(
        &lab,
        &n1,
        &["ip", "route", "add", "10.244.1.5/32", "dev", &veth],
    )
    .await;
    lab_sh(
        &lab,
        &pod,
        &["ip", "addr", "add", "10.244.1.5/32", "dev", "eth0"],
    )
    .await;
    lab_sh(&lab, &pod, &["ip", "link", "set", "eth0", "up"]).await;
    lab_sh(
        &lab,
        &pod,
        &[
            "ip",
            "route",
            "add",
            "default",
            "via",
            "169.254.1.1",
            "dev",
            "eth0",
            "onlink",
        ],
    )
    .await;
    // The node reaches its pod; the VM does not: no route to the podCIDR.
    assert!(lab.ping_until(&n1, ip("10.244.1.5"), true, DEADLINE).await);
    assert!(
        !lab.ping(&vm, ip("10.244.1.5")).await,
        "the pod is reachable before any route exists"
    );

    // bgpd listens on 127.0.0.81 here; zebra runs in the lab's router. zebra
    // knows only the router's links, never a 127/8 address: the session to
    // the controller is counted on the router's leg to the nodes.
    let leg = lab_sh(
        &lab,
        &rtr,
        &["ip", "-o", "-4", "addr", "show", "to", "192.168.1.0/24"],
    )
    .await
    .split_whitespace()
    .nth(1)
    .unwrap_or_default()
    .to_owned();
    assert!(leg.starts_with(lab.prefix()), "router leg {leg:?}");
    let addr = ip("127.0.0.81");
    let port = frr::free_port(addr);
    let neighbors = [(
        CONTROLLER,
        64512,
        vec![
            "passive".to_owned(),
            "timers 3 9".to_owned(),
            format!("update-source {leg}"),
        ],
    )];
    let r = Frr::start_with_zebra(
        "bgp-frr-lab",
        addr,
        port,
        &frr::config(64512, addr, &neighbors),
        rtr.name(),
    )
    .unwrap();
    let world = World::start("lab").await;
    world
        .add_node("n1", "r1", "10.244.1.0/24", ip("192.168.1.10"))
        .await;
    world
        .add_node("n2", "r1", "10.244.2.0/24", ip("192.168.1.11"))
        .await;
    let mut c = world.controller("lab", &bgp_routes(64512, 9, true, &peer(&r, 64512, "")));
    wait_table(
        &r,
        &mut c,
        &want(&[
            ("10.244.1.0/24", "192.168.1.10"),
            ("10.244.2.0/24", "192.168.1.11"),
        ]),
    )
    .await;
    let wait_kernel = async |want: &[String]| {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let got = zebra_routes(&lab).await;
            if got == want {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "router kernel table {got:?}, want {want:?}\n{}",
                r.log()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    let route = |cidr: &str, hop: &str| format!("{cidr} via {hop} dev {leg}");
    wait_kernel(&[
        route("10.244.1.0/24", "192.168.1.10"),
        route("10.244.2.0/24", "192.168.1.11"),
    ])
    .await;
    assert!(
        lab.ping_until(&vm, ip("10.244.1.5"), true, DEADLINE).await,
        "the VM does not reach the pod through the announced route"
    );

    world.delete_node("n1").await;
    wait_kernel(&[route("10.244.2.0/24", "192.168.1.11")]).await;
    assert!(
        lab.ping_until(&vm, ip("10.244.1.5"), false, DEADLINE).await,
        "the pod is still reachable after its node was deleted"
    );
    assert!(c.alive());
    drop(c);
    drop(r);
    lab.teardown().await.unwrap();
}
