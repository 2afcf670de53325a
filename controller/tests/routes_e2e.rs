//! Route mode end to end: the real controller, over HTTP, against the fake
//! kube-apiserver (scheduler, kubelet) and the in-memory cloud behind the
//! Alibaba OpenAPI mock. Each test asserts what a user would see in the VPC
//! route table and on the nodes.

use controller::harness::Replica;
use controller::simulate::scenario::{NodeGroup, Scenario, Step};
use controller::simulate::{instance_for, Sim, TABLE};
use ipam::ids::{InstanceId, RouteTableId};
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, ListParams};
use kube::ResourceExt;
use providers::model::NextHop;
use std::time::Duration;

fn scenario(nodes_per_zone: u32) -> Scenario {
    let text = format!(
        r#"
name: e2e
region: cn-hangzhou
clusterCidr: 10.244.0.0/16
routeTableQuota: 200
aggregateWindowMs: 200
zones:
  - {{zone: cn-hangzhou-h, vswitchCidr: 192.168.0.0/20}}
  - {{zone: cn-hangzhou-i, vswitchCidr: 192.168.16.0/20}}
nodeGroups:
  - {{prefix: h, count: {nodes_per_zone}, type: ecs.g6.xlarge, zone: cn-hangzhou-h}}
  - {{prefix: i, count: {nodes_per_zone}, type: ecs.g6.large, zone: cn-hangzhou-i}}
faults: {{routeDelayMs: 100}}
timeoutSeconds: 60
"#
    );
    Scenario::parse(&text).unwrap()
}

async fn start(nodes_per_zone: u32) -> Sim {
    controller::run::install_crypto_provider();
    let s = scenario(nodes_per_zone);
    let mut sim = Sim::start(s.clone()).await.unwrap();
    sim.start_controller().await.unwrap();
    for g in &s.node_groups {
        sim.add_nodes(g, None).await.unwrap();
    }
    sim
}

fn owned_routes(sim: &Sim) -> Vec<(String, String)> {
    sim.world()
        .route_entries(&RouteTableId::new(TABLE))
        .into_iter()
        .filter(|e| e.name.as_deref() == Some("vpc-eni-controller/sim"))
        .map(|e| {
            let hop = match e.next_hop {
                NextHop::Instance(i) => i.to_string(),
                other => format!("{other:?}"),
            };
            (e.destination.to_string(), hop)
        })
        .collect()
}

/// Events on a node, waiting (up to 10 s) until one satisfies `want`.
async fn wait_event(
    sim: &Sim,
    node: &str,
    want: impl Fn(&str, &str) -> bool,
) -> Vec<(String, String)> {
    let mut seen = Vec::new();
    for _ in 0..100 {
        seen = reasons_on(sim, node).await;
        if seen.iter().any(|(r, m)| want(r, m)) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    seen
}

async fn reasons_on(sim: &Sim, node: &str) -> Vec<(String, String)> {
    let events: Api<Event> = Api::all(sim.client().clone());
    events
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(node))
        .map(|e| (e.reason.unwrap_or_default(), e.note.unwrap_or_default()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_nodes_get_fifty_routes_then_a_deleted_node_loses_its_route() {
    let mut sim = start(25).await;
    sim.phase("join", false).await.unwrap();
    assert!(sim.phases[0].converged, "50 nodes did not converge");

    let nodes: Api<Node> = Api::all(sim.client().clone());
    let list = nodes.list(&ListParams::default()).await.unwrap().items;
    assert_eq!(list.len(), 50);
    let routes = owned_routes(&sim);
    assert_eq!(routes.len(), 50, "{routes:?}");
    for node in &list {
        let cidr = controller::kubeutil::pod_cidr(node).expect("podCIDR allocated");
        let want = (cidr, instance_for(&node.name_any()));
        assert!(routes.contains(&want), "missing {want:?}");
        assert_eq!(
            controller::kubeutil::network_unavailable(node),
            Some(("False".into(), "RouteCreated".into())),
            "{}",
            node.name_any()
        );
    }
    // 50 routes in one batch call: the aggregation window gathered the joins.
    let creates = sim.phases[0]
        .calls
        .get("CreateRouteEntries")
        .copied()
        .unwrap_or(0);
    assert!(creates <= 3, "expected batched creates, got {creates}");

    let gone = "h-7";
    let gone_cidr =
        controller::kubeutil::pod_cidr(list.iter().find(|n| n.name_any() == gone).unwrap())
            .unwrap();
    sim.apply_step(&Step::DeleteNode { name: gone.into() })
        .await
        .unwrap();
    sim.phase("delete", false).await.unwrap();
    assert!(sim.phases[1].converged);
    let routes = owned_routes(&sim);
    assert_eq!(routes.len(), 49);
    assert!(!routes.iter().any(|(d, _)| *d == gone_cidr));
    let reasons = wait_event(&sim, gone, |r, m| {
        r == "RouteDeleted" && m.contains(&gone_cidr)
    })
    .await;
    assert!(
        reasons
            .iter()
            .any(|(r, m)| r == "RouteDeleted" && m.contains(&gone_cidr)),
        "{reasons:?}"
    );
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarted_controller_makes_no_mutating_call_and_deletes_routes_of_nodes_gone_while_down() {
    let mut sim = start(3).await;
    sim.phase("join", false).await.unwrap();
    assert!(sim.phases[0].converged);

    // A plain restart: the cloud's listing already matches, nothing to write.
    sim.kill_controller().await;
    sim.world().reset_calls();
    sim.start_controller().await.unwrap();
    sim.phase("restart", false).await.unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(sim.world().mutating_calls(), 0, "{:?}", sim.world().calls());

    // A node deleted while no controller runs: found from the cloud's listing.
    sim.kill_controller().await;
    let nodes: Api<Node> = Api::all(sim.client().clone());
    let node = nodes.get("i-2").await.unwrap();
    let cidr = controller::kubeutil::pod_cidr(&node).unwrap();
    sim.delete_node("i-2").await.unwrap();
    assert!(owned_routes(&sim).iter().any(|(d, _)| *d == cidr));
    sim.start_controller().await.unwrap();
    sim.phase("restart after delete", false).await.unwrap();
    assert!(sim.phases.last().unwrap().converged);
    assert!(!owned_routes(&sim).iter().any(|(d, _)| *d == cidr));
    assert_eq!(owned_routes(&sim).len(), 5);
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreign_entry_on_a_node_cidr_is_left_alone_and_reported() {
    let mut sim = start(1).await;
    sim.phase("join", false).await.unwrap();
    let foreign: ipnet::Ipv4Net = "10.244.100.0/24".parse().unwrap();
    sim.apply_step(&Step::ForeignRoute {
        destination: foreign,
        instance: instance_for("h-1"),
        name: "ops-static".into(),
    })
    .await
    .unwrap();
    sim.apply_step(&Step::AddNodes {
        prefix: "late".into(),
        count: 1,
        instance_type: "ecs.g6.xlarge".into(),
        zone: "cn-hangzhou-h".into(),
        pod_cidr: Some(foreign),
    })
    .await
    .unwrap();
    sim.phase("conflict", false).await.unwrap();
    assert!(sim.phases.last().unwrap().converged);
    // The foreign entry still points where its owner put it.
    let entry = sim
        .world()
        .route_entries(&RouteTableId::new(TABLE))
        .into_iter()
        .find(|e| e.destination == foreign)
        .unwrap();
    assert_eq!(
        entry.next_hop,
        NextHop::Instance(InstanceId::new(instance_for("h-1")))
    );
    assert_eq!(entry.name.as_deref(), Some("ops-static"));
    let nodes: Api<Node> = Api::all(sim.client().clone());
    let late = nodes.get("late-1").await.unwrap();
    assert_eq!(
        controller::kubeutil::network_unavailable(&late).map(|c| c.0),
        Some("True".into())
    );
    let reasons = wait_event(&sim, "late-1", |r, _| r == "RouteConflict").await;
    assert!(
        reasons.iter().any(|(r, m)| r == "RouteConflict"
            && m.contains("ops-static")
            && m.contains("left untouched")),
        "{reasons:?}"
    );
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_and_standby_never_both_lead_and_the_standby_takes_over() {
    let mut sim = start(2).await;
    sim.start_controller().await.unwrap(); // a second replica
    let sample =
        |sim: &Sim| -> Vec<bool> { sim.harness.live_replicas().map(|r| r.leading()).collect() };
    let mut seen_leader = false;
    for _ in 0..40 {
        let leading = sample(&sim);
        assert!(leading.iter().filter(|l| **l).count() <= 1, "{leading:?}");
        seen_leader |= leading.iter().any(|l| *l);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(seen_leader);
    sim.phase("join", false).await.unwrap();
    assert!(sim.phases[0].converged);

    // Stop whichever replica leads; the other must lead within the lease
    // duration and keep serving new nodes.
    let live: Vec<Replica> = sim.harness.live_replicas().cloned().collect();
    assert_eq!(live.len(), 2);
    let leader = sample(&sim).iter().position(|l| *l).unwrap();
    live[leader].stop();
    let standby = &live[1 - leader];
    let mut took_over = false;
    for _ in 0..100 {
        if standby.leading() {
            took_over = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(took_over, "standby did not take over within 10 s");
    sim.add_nodes(
        &NodeGroup {
            prefix: "after".into(),
            count: 2,
            instance_type: "ecs.g6.xlarge".into(),
            zone: "cn-hangzhou-h".into(),
        },
        None,
    )
    .await
    .unwrap();
    sim.phase("after failover", false).await.unwrap();
    assert!(sim.phases.last().unwrap().converged);
    assert_eq!(owned_routes(&sim).len(), 6);
    sim.shutdown().await;
}
