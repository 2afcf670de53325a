//! Route mode end to end on AWS: the real controller against the fake
//! kube-apiserver and moto (a third-party EC2 emulator on 127.0.0.1). Routes
//! on EC2 carry no name, so the controller owns entries only in the table
//! tagged for its cluster, inside the cluster CIDR, with an instance target.

use aws_sdk_ec2::types::Tag;
use controller::config::Config;
use controller::harness::moto::{seed, Moto};
use controller::harness::Harness;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, DeleteParams, PostParams};
use mocks::kubeapi::nodes::NodeTemplate;
use mocks::kubeapi::Options;
use std::collections::BTreeSet;
use std::time::Duration;

const CLUSTER: &str = "awse2e";

/// (destination, instance) of every instance route in the table.
async fn instance_routes(ec2: &aws_sdk_ec2::Client, table: &str) -> BTreeSet<(String, String)> {
    let out = ec2
        .describe_route_tables()
        .route_table_ids(table)
        .send()
        .await
        .unwrap();
    out.route_tables()
        .iter()
        .flat_map(|t| t.routes())
        .filter_map(|r| {
            Some((
                r.destination_cidr_block()?.to_owned(),
                r.instance_id()?.to_owned(),
            ))
        })
        .collect()
}

async fn wait_routes(
    ec2: &aws_sdk_ec2::Client,
    table: &str,
    want: &BTreeSet<(String, String)>,
) -> BTreeSet<(String, String)> {
    let mut got = BTreeSet::new();
    for _ in 0..300 {
        got = instance_routes(ec2, table).await;
        if &got == want {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    got
}

/// The controller's config; `tables` is `routes.routeTableIds`.
fn config(moto: &Moto, tables: &[&str]) -> Config {
    Config::parse(&format!(
        r#"
clusterId: {CLUSTER}
provider: {{kind: aws, region: us-east-1, endpoint: "{}"}}
routes: {{enabled: true, clusterCidr: 10.244.0.0/16, aggregateWindowMs: 200, routeTableIds: [{}]}}
controller: {{listen: "127.0.0.1:0", leaderElection: {{enabled: false}}}}
"#,
        moto.endpoint,
        tables.join(", ")
    ))
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_get_routes_in_the_cluster_table_on_ec2_and_restart_writes_nothing() {
    let Some(mut harness) = Harness::start_moto(Options::default(), "aws-e2e")
        .await
        .unwrap()
    else {
        return;
    };
    let ec2 = harness.moto().sdk();
    let world = seed(&ec2).await;
    let table = world.route_table.to_string();
    ec2.create_tags()
        .resources(&table)
        .tags(
            Tag::builder()
                .key(format!("kubernetes.io/cluster/{CLUSTER}"))
                .value("owned")
                .build(),
        )
        .send()
        .await
        .unwrap();
    // Someone else's route outside the cluster CIDR, in the same table.
    let foreign_target = world.instances[0].to_string();
    ec2.create_route()
        .route_table_id(&table)
        .destination_cidr_block("172.16.0.0/16")
        .instance_id(&foreign_target)
        .send()
        .await
        .unwrap();

    let nodes: Api<Node> = Api::all(harness.client().clone());
    let mut want = BTreeSet::from([("172.16.0.0/16".to_owned(), foreign_target.clone())]);
    for (i, instance) in world.instances.iter().enumerate() {
        let mut t = NodeTemplate::new(&format!("ip-10-0-1-{i}"), "t3.medium", "2", "4Gi");
        t.provider_id = Some(format!("aws:///us-east-1a/{instance}"));
        t.pod_cidr = Some(format!("10.244.{i}.0/24"));
        t.zone = Some("us-east-1a".into());
        let node: Node = serde_json::from_value(t.build()).unwrap();
        nodes.create(&PostParams::default(), &node).await.unwrap();
        want.insert((format!("10.244.{i}.0/24"), instance.to_string()));
    }

    // The replica's client has static test credentials: the standard chain
    // could reach for IMDS.
    let first = harness
        .start_replica(config(harness.moto(), &[]))
        .await
        .unwrap();
    let got = wait_routes(&ec2, &table, &want).await;
    assert_eq!(got, want);
    // Routes need source/destination checking off on the target instance.
    for instance in &world.instances {
        let attr = ec2
            .describe_instance_attribute()
            .instance_id(instance.as_str())
            .attribute(aws_sdk_ec2::types::InstanceAttributeName::SourceDestCheck)
            .send()
            .await
            .unwrap();
        assert_eq!(
            attr.source_dest_check().and_then(|v| v.value()),
            Some(false),
            "{instance}"
        );
    }
    for i in 0..world.instances.len() {
        let mut cond = None;
        for _ in 0..100 {
            let node = nodes.get(&format!("ip-10-0-1-{i}")).await.unwrap();
            cond = controller::kubeutil::network_unavailable(&node);
            if cond.as_ref().is_some_and(|c| c.0 == "False") {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(cond, Some(("False".into(), "RouteCreated".into())));
    }

    // A node goes: its route goes, the foreign one stays.
    nodes
        .delete("ip-10-0-1-1", &DeleteParams::default())
        .await
        .unwrap();
    want.remove(&("10.244.1.0/24".to_owned(), world.instances[1].to_string()));
    assert_eq!(wait_routes(&ec2, &table, &want).await, want);

    // A restarted controller finds everything in place and writes nothing.
    first.stop();
    let second = harness
        .start_replica(config(harness.moto(), &[]))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let stats = second.cloud.stats();
    let mutating: u64 = ["CreateRoute", "DeleteRoute", "ModifyInstanceAttribute"]
        .iter()
        .map(|api| stats.get(api).calls)
        .sum();
    assert!(
        stats.get("DescribeRouteTables").calls > 0,
        "{:?}",
        stats.snapshot()
    );
    assert_eq!(mutating, 0, "{:?}", stats.snapshot());
    assert_eq!(instance_routes(&ec2, &table).await, want);
    harness.shutdown().await;
}

/// The documented setup: `routes.routeTableIds` names a table that carries
/// no cluster tag. EC2 routes have no name, so the configured table is what
/// makes the controller's own routes recognisable: after a restart they are
/// still ours (no conflict, nothing rewritten) and the route of a node deleted
/// while the controller was down is removed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_controller_owns_its_routes_in_a_configured_untagged_table() {
    let Some(mut harness) = Harness::start_moto(Options::default(), "aws-cfg")
        .await
        .unwrap()
    else {
        return;
    };
    let ec2 = harness.moto().sdk();
    let world = seed(&ec2).await;
    let table = world.route_table.to_string();
    let nodes: Api<Node> = Api::all(harness.client().clone());
    let mut want = BTreeSet::new();
    for (i, instance) in world.instances.iter().enumerate() {
        let mut t = NodeTemplate::new(&format!("ip-10-0-2-{i}"), "t3.medium", "2", "4Gi");
        t.provider_id = Some(format!("aws:///us-east-1a/{instance}"));
        t.pod_cidr = Some(format!("10.244.{i}.0/24"));
        t.zone = Some("us-east-1a".into());
        let node: Node = serde_json::from_value(t.build()).unwrap();
        nodes.create(&PostParams::default(), &node).await.unwrap();
        want.insert((format!("10.244.{i}.0/24"), instance.to_string()));
    }
    let first = harness
        .start_replica(config(harness.moto(), &[&table]))
        .await
        .unwrap();
    assert_eq!(wait_routes(&ec2, &table, &want).await, want);
    first.stop();

    // While no controller runs, a node goes away.
    nodes
        .delete("ip-10-0-2-1", &DeleteParams::default())
        .await
        .unwrap();
    want.remove(&("10.244.1.0/24".to_owned(), world.instances[1].to_string()));

    let second = harness
        .start_replica(config(harness.moto(), &[&table]))
        .await
        .unwrap();
    assert_eq!(wait_routes(&ec2, &table, &want).await, want);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let summary = second.running.route_pass.lock().clone();
    assert_eq!(summary.conflicts, 0, "{summary:?}");
    assert_eq!(summary.satisfied, want.len(), "{summary:?}");
    let stats = second.cloud.stats();
    assert_eq!(stats.get("CreateRoute").calls, 0, "{:?}", stats.snapshot());
    assert_eq!(stats.get("DeleteRoute").calls, 1, "{:?}", stats.snapshot());
    let node = nodes.get("ip-10-0-2-0").await.unwrap();
    assert_eq!(
        controller::kubeutil::network_unavailable(&node),
        Some(("False".into(), "RouteCreated".into()))
    );
    harness.shutdown().await;
}
