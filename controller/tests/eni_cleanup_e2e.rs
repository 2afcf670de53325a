//! Switching ENI mode off, end to end on Alibaba: ENI pods run, the
//! controller stops (its ENI mode is off from now on), and `cleanup-eni`
//! (`controller::eni::cleanup::run`, what the command runs) takes away what
//! the mode left: it leaves running ENI pods and the nodes' resource alone,
//! releases a deleted pod's ENI and lets the pod go, and once no pod needs
//! ENIs removes the resource from every node. ENIs that are not the
//! cluster's, or whose pod is gone, are never touched.

#[allow(dead_code)]
mod support;

use controller::config::Config;
use controller::eni::cleanup::{self, Summary};
use controller::harness::FakeCloud;
use ipam::eni::{owned_eni_tags, PodRef};
use ipam::ids::{ClusterId, IdempotencyToken, SecurityGroupId, SubnetId};
use kube::api::DeleteParams;
use providers::model::{CreateEniRequest, EniStatus, Tags};
use providers::Cloud;
use support::{advertised, allocation, wait_for, Env, Tunables, CLUSTER, ZONE_H};

/// The controller's config with ENI mode switched off.
fn eni_off(env: &Env) -> Config {
    let mut config = env.config.clone();
    config.eni.enabled = false;
    config
}

/// One cleanup pass as `cleanup-eni [--dry-run]` runs it; its summary and
/// what it printed.
async fn cleanup_pass(env: &Env, dry_run: bool) -> (Summary, String) {
    let config = eni_off(env);
    let cloud = env.harness.cloud.client_for(&config).await.unwrap();
    let mut out = Vec::new();
    let summary = cleanup::run(&config, env.client.clone(), cloud, dry_run, &mut out)
        .await
        .unwrap();
    (summary, String::from_utf8(out).unwrap())
}

async fn eni_of(env: &Env, pod: &str) -> String {
    let p = env.pod(pod).await.expect("pod exists");
    allocation(&p).expect("allocation").first.eni_id
}

async fn delete_pod(env: &Env, name: &str) {
    env.pods()
        .delete(name, &DeleteParams::default())
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cleanup_eni_releases_deleted_pods_and_clears_nodes_once_no_pod_needs_enis() {
    let mut env = Env::start(Tunables::default()).await;
    env.add_node("n1", "ecs.c6.xlarge", ZONE_H).await;
    let instance = env.add_node("n2", "ecs.c6.xlarge", ZONE_H).await;
    env.start_replica().await;
    env.create_pod("a", 1, Some("n1")).await;
    env.create_pod("b", 1, Some("n1")).await;
    env.wait_settled("two ENI pods").await;
    let (eni_a, eni_b) = (eni_of(&env, "a").await, eni_of(&env, "b").await);
    // The controller stops: ENI mode is switched off from here on.
    env.harness.stop_replicas();
    let n1 = || async { advertised(&env.node("n1").await) };
    let n2 = || async { advertised(&env.node("n2").await) };
    assert_eq!(n1().await, (Some("2".into()), Some("2".into())));
    assert_eq!(n2().await, (Some("2".into()), Some("2".into())));

    // Someone else's ENI on n2, and one tagged for this cluster whose
    // pod is long gone: neither is cleanup-eni's to touch.
    let world = env.world();
    let request = |token: &str, tags: Tags| CreateEniRequest {
        subnet_id: SubnetId::new("vsw-h1"),
        security_groups: vec![SecurityGroupId::new("sg-e2e")],
        secondary_ip_count: 0,
        tags,
        description: "made by hand".into(),
        idempotency_token: IdempotencyToken::new(token),
    };
    let foreign = world
        .create_eni(&request("ops", Tags::new()))
        .await
        .unwrap();
    world.attach_eni(&foreign.id, &instance).await.unwrap();
    let gone = PodRef {
        namespace: "default".into(),
        name: "gone".into(),
        uid: "uid-of-a-pod-long-gone".into(),
    };
    let orphan = world
        .create_eni(&request(
            "orphan",
            owned_eni_tags(&ClusterId::new(CLUSTER), &gone, "n1"),
        ))
        .await
        .unwrap();

    // Both pods still run on their ENIs: nothing is changed.
    let (summary, out) = cleanup_pass(&env, false).await;
    assert_eq!(summary.pods_holding, 2, "{out}");
    assert!(!summary.done());
    assert!(
        out.contains(&format!(
            "pod default/a on node n1: holds {eni_a}; not touched"
        )),
        "{out}"
    );
    assert!(
        out.contains("nodes keep aliyun/eni while 2 pod(s)"),
        "{out}"
    );
    assert_eq!(n1().await, (Some("2".into()), Some("2".into())));

    // `a` is deleted: with no controller in ENI mode it stays Terminating.
    delete_pod(&env, "a").await;
    let a = env.pod("a").await.expect("held by the finalizer");
    assert!(a.metadata.deletion_timestamp.is_some());

    // A dry run says what it would do and does nothing.
    let (summary, out) = cleanup_pass(&env, true).await;
    assert!(
        out.contains(&format!("pod default/a: would release ENI {eni_a}")),
        "{out}"
    );
    assert!(
        out.contains("pod default/a: would remove finalizer vpc-eni.io/eni-release"),
        "{out}"
    );
    assert!(out.contains("dry run: nothing changed"), "{out}");
    assert_eq!((summary.enis_released, summary.finalizers_removed), (0, 0));
    assert!(env.eni(&eni_a).is_some());
    assert!(env.pod("a").await.is_some());

    // For real: `a`'s ENI is released, then `a` goes; `b` still holds.
    let (summary, out) = cleanup_pass(&env, false).await;
    assert_eq!(summary.enis_released, 1, "{out}");
    assert_eq!(summary.finalizers_removed, 1, "{out}");
    assert_eq!(summary.pods_holding, 1, "{out}");
    assert!(
        out.contains(&format!("pod default/a: released ENI {eni_a}")),
        "{out}"
    );
    assert!(env.eni(&eni_a).is_none(), "{out}");
    wait_for("pod a to disappear", || async {
        match env.pod("a").await {
            None => Ok(()),
            Some(p) => Err(format!("finalizers {:?}", p.metadata.finalizers)),
        }
    })
    .await;
    assert_eq!(n1().await, (Some("2".into()), Some("2".into())));

    // `b` is deleted too: the last pass releases it and clears the node.
    delete_pod(&env, "b").await;
    let (summary, out) = cleanup_pass(&env, false).await;
    assert!(summary.done(), "{out}");
    assert_eq!(
        (
            summary.enis_released,
            summary.finalizers_removed,
            summary.nodes_cleaned
        ),
        (1, 1, 2),
        "{out}"
    );
    assert!(
        out.contains("node n1: remove aliyun/eni from status.capacity and status.allocatable"),
        "{out}"
    );
    assert!(env.eni(&eni_b).is_none());
    assert_eq!(n1().await, (None, None));
    assert_eq!(n2().await, (None, None));

    // The foreign ENI and the orphan were named or skipped, never changed.
    assert_eq!(summary.orphans, 1, "{out}");
    assert!(
        out.contains(&format!(
            "ENI {} (Available, tagged for pod uid uid-of-a-pod-long-gone) belongs to no pod: not touched",
            orphan.id
        )),
        "{out}"
    );
    assert!(!out.contains(foreign.id.as_str()), "{out}");
    let foreign_now = env.eni(foreign.id.as_str()).expect("foreign ENI kept");
    assert_eq!(foreign_now.instance_id.as_ref(), Some(&instance));
    assert_ne!(foreign_now.status, EniStatus::Deleting);
    assert!(env.eni(orphan.id.as_str()).is_some());

    // Nothing left: another pass changes nothing.
    let (summary, out) = cleanup_pass(&env, false).await;
    assert!(summary.done(), "{out}");
    assert_eq!(
        (
            summary.enis_released,
            summary.finalizers_removed,
            summary.nodes_cleaned
        ),
        (0, 0, 0),
        "{out}"
    );
    env.shutdown().await;
}
