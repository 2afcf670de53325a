//! `status` end to end on Alibaba: ENI pods run on nodes of the fake
//! cluster, someone else's route and one of ours sit in the VPC's table,
//! and `status` (`controller::status::collect` and `render`, what the
//! command runs) shows per node the ENIs attached and allowed, per subnet
//! the free and cluster-held addresses, per table ours / foreign / quota
//! left, as tables and as JSON. It makes only describe and list calls.

#[allow(dead_code)]
mod support;

use controller::harness::FakeCloud;
use controller::status::{self, Output};
use ipam::ids::{ClusterId, InstanceId, RouteTableId};
use ipam::routes::ownership_marker;
use providers::model::NewRouteEntry;
use providers::Cloud;
use std::time::Duration;
use support::{Env, Tunables, CLUSTER, ZONE_H, ZONE_I};

/// The cells of the table row that starts with `first`.
fn row<'a>(text: &'a str, first: &str) -> Vec<&'a str> {
    text.lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|cells| cells.first() == Some(&first))
        .unwrap_or_else(|| panic!("no row {first} in:\n{text}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_shows_nodes_subnets_and_routes_with_read_calls_only() {
    let mut env = Env::start(Tunables::default()).await;
    let i1 = env.add_node("n1", "ecs.c6.xlarge", ZONE_H).await;
    let i2 = env.add_node("n2", "ecs.c6.xlarge", ZONE_I).await;
    env.start_replica().await;
    env.create_pod("a", 1, Some("n1")).await;
    env.wait_settled("one ENI pod").await;
    env.harness.stop_replicas();

    // Someone else's route, and one of ours, in the VPC's table.
    let world = env.world();
    let table = RouteTableId::new("vtb-e2e");
    let entry = |dest: &str, instance: &InstanceId, name: String| NewRouteEntry {
        destination: dest.parse().unwrap(),
        instance_id: instance.clone(),
        name: name.clone(),
        description: name,
    };
    let marker = ownership_marker(&ClusterId::new(CLUSTER));
    let outcome = world
        .create_route_entries(
            &table,
            &[
                entry("10.0.0.0/24", &i1, "ops".into()),
                entry("10.244.1.0/24", &i2, marker),
            ],
        )
        .await
        .unwrap();
    assert!(outcome.is_complete());

    let mut config = env.config.clone();
    config.routes.cluster_cidr = Some("10.244.0.0/16".parse().unwrap());
    let cloud = env.harness.cloud.client_for(&config).await.unwrap();
    let mutating_before = world.mutating_calls();

    let report = status::collect(&config, env.client.clone(), cloud.clone(), Duration::ZERO)
        .await
        .unwrap();

    // Tables.
    let text = status::render(&report, Output::Table).unwrap();
    let n1 = row(&text, "n1");
    assert_eq!(n1[1..], [i1.as_str(), "ecs.c6.xlarge", "1", "2"], "{text}");
    let n2 = row(&text, "n2");
    assert_eq!(n2[3..], ["0", "2"], "{text}");
    assert!(text.contains("SUBNET"), "{text}");
    let held: u32 = ["vsw-h1", "vsw-h2", "vsw-i1", "vsw-j1"]
        .iter()
        .map(|s| row(&text, s)[4].parse::<u32>().unwrap())
        .sum();
    assert_eq!(held, 1, "pod a's ENI holds one address:\n{text}");
    for s in env.subnets() {
        if let Some(r) = report.subnets.iter().find(|r| r.id == s.id.as_str()) {
            assert_eq!(r.free_ips, Some(s.free_ips), "{}", s.id);
            assert_eq!(row(&text, s.id.as_str())[5], "-", "no forecast unwatched");
        }
    }
    assert_eq!(row(&text, "vtb-e2e")[1..], ["1", "1", "198"], "{text}");
    assert!(
        text.contains("no forecast without --watch-seconds"),
        "{text}"
    );

    // Wide: zone, ours, free slots, and "-" for shared mode's IPs.
    let wide = status::render(&report, Output::Wide).unwrap();
    let n1 = row(&wide, "n1");
    assert_eq!(n1[5..10], [ZONE_H, "1", "1", "-", "-"], "{wide}");

    // JSON, for scripts.
    let json: serde_json::Value =
        serde_json::from_str(&status::render(&report, Output::Json).unwrap()).unwrap();
    let node = &json["nodes"][0];
    assert_eq!(node["name"], "n1");
    assert_eq!(node["enis"], 1);
    assert_eq!(node["enis_allowed"], 2);
    assert!(node["ips_pooled"].is_null());
    let t = &json["route_tables"][0];
    assert_eq!(
        (
            &t["id"],
            &t["ours"],
            &t["foreign"],
            &t["quota"],
            &t["quota_left"]
        ),
        (
            &"vtb-e2e".into(),
            &1.into(),
            &1.into(),
            &200.into(),
            &198.into()
        )
    );

    // Watched: two describes a second apart, nothing changes: not falling.
    let watched = status::collect(
        &config,
        env.client.clone(),
        cloud.clone(),
        Duration::from_secs(1),
    )
    .await
    .unwrap();
    let text = status::render(&watched, Output::Table).unwrap();
    assert_eq!(row(&text, "vsw-h1")[5..], ["not", "falling"], "{text}");

    // Read-only.
    assert_eq!(world.mutating_calls(), mutating_before);
    let apis: Vec<String> = cloud.stats().snapshot().into_keys().collect();
    assert!(!apis.is_empty());
    for api in &apis {
        assert!(
            api.starts_with("Describe") || api.starts_with("List"),
            "status called {api}: {apis:?}"
        );
    }
    env.shutdown().await;
}
