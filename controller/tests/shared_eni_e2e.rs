//! Shared-ENI mode end to end on Alibaba: the real controller, over HTTP,
//! against the fake kube-apiserver (scheduler, kubelet that waits for the
//! allocation on shared nodes) and the in-memory cloud behind the Alibaba
//! OpenAPI mock. Each test asserts what a user sees: pod annotations, pod
//! IPs, Events, the exclusive resource beside the pool, and the ENIs and
//! secondary IPs in the VPC, also across a controller restart.

#[allow(dead_code)]
mod support;

use controller::config::SharedEniConfig;
use controller::eni::{CrashAt, Step};
use controller::harness::FakeCloud;
use ipam::allocation::{AllocationMode, ALLOCATION_ANNOTATION};
use ipam::eni::{shared_eni_tags, tag};
use ipam::ids::{ClusterId, IdempotencyToken, SecurityGroupId, SubnetId};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{DeleteParams, PostParams};
use kube::ResourceExt;
use mocks::cloud::{ApiFault, FaultKind};
use providers::model::{CreateEniRequest, Eni, EniStatus, Tags};
use providers::Cloud;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;
use support::{advertised, allocation, wait_for, Env, Tunables, CLUSTER, ZONE_H};
use tokio_util::sync::CancellationToken;

fn shared(cfg: SharedEniConfig) -> SharedEniConfig {
    SharedEniConfig {
        enabled: true,
        ..cfg
    }
}

/// Quick pool timers: the sync, cool-down and release delay of a test.
fn quick() -> SharedEniConfig {
    shared(SharedEniConfig {
        max_enis: 1,
        min_pool_size: 2,
        max_pool_size: 4,
        ip_cooldown_seconds: 2,
        excess_release_delay_seconds: 1,
        pool_sync_seconds: 1,
        ..SharedEniConfig::default()
    })
}

async fn env_with(cfg: SharedEniConfig, tunables: Tunables) -> Env {
    let mut env = Env::start(tunables).await;
    env.config.shared_eni = cfg;
    env
}

/// Shared ENIs of the cluster in the world, by id.
fn shared_enis(env: &Env) -> Vec<Eni> {
    env.cluster_enis()
        .into_iter()
        .filter(|e| e.tags.get(tag::MODE).map(String::as_str) == Some(tag::MODE_SHARED))
        .collect()
}

/// The pod's shared IP once recorded and the pod is Running with it.
async fn running_with_shared_ip(env: &Env, name: &str) -> (String, String) {
    wait_for(&format!("{name} running on a shared IP"), || async {
        let pod = env.pod(name).await.ok_or("pod gone")?;
        let a = allocation(&pod).ok_or_else(|| {
            format!(
                "no allocation; bound to {:?}, phase {:?}",
                pod.spec.as_ref().and_then(|s| s.node_name.clone()),
                pod.status.as_ref().and_then(|s| s.phase.clone())
            )
        })?;
        let ip = pod.status.as_ref().and_then(|s| s.pod_ip.clone());
        if a.mode != AllocationMode::Shared {
            return Err(format!("mode {:?}", a.mode));
        }
        if a.pod_uid != pod.uid() {
            return Err(format!("podUid {:?} vs {:?}", a.pod_uid, pod.uid()));
        }
        if ip.as_deref() != Some(a.first.ip.as_str()) {
            return Err(format!("podIP {ip:?}, allocation {}", a.first.ip));
        }
        Ok((a.first.eni_id.clone(), a.first.ip.clone()))
    })
    .await
}

/// Every live pod's recorded shared IP is on its ENI in the cloud, on its
/// node's instance, and no IP is recorded for two pods.
async fn shared_problems(env: &Env) -> Vec<String> {
    let pods = env
        .pods()
        .list(&Default::default())
        .await
        .expect("pods")
        .items;
    let enis: BTreeMap<String, Eni> = shared_enis(env)
        .into_iter()
        .map(|e| (e.id.to_string(), e))
        .collect();
    let mut problems = Vec::new();
    let mut seen: BTreeMap<String, String> = BTreeMap::new();
    for p in &pods {
        let Some(a) = allocation(p).filter(|a| a.is_shared()) else {
            continue;
        };
        if let Some(other) = seen.insert(a.first.ip.clone(), p.name_any()) {
            problems.push(format!(
                "{} recorded for {} and {}",
                a.first.ip,
                other,
                p.name_any()
            ));
        }
        match enis.get(&a.first.eni_id) {
            None => problems.push(format!(
                "{}: ENI {} not in the cloud",
                p.name_any(),
                a.first.eni_id
            )),
            Some(e) => {
                if !e
                    .secondary_ips
                    .iter()
                    .any(|ip| ip.to_string() == a.first.ip)
                {
                    problems.push(format!("{}: {} not on {}", p.name_any(), a.first.ip, e.id));
                }
                if e.status != EniStatus::InUse {
                    problems.push(format!("{}: ENI {} is {:?}", p.name_any(), e.id, e.status));
                }
            }
        }
    }
    problems
}

async fn delete_pod(env: &Env, name: &str) {
    env.pods()
        .delete(name, &DeleteParams::default())
        .await
        .expect("delete pod");
    wait_for(&format!("{name} gone"), || async {
        match env.pod(name).await {
            None => Ok(()),
            Some(_) => Err("still there".to_owned()),
        }
    })
    .await;
}

// ---- the pool and the pods ----------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_pods_get_ips_from_the_warm_pool_with_no_cloud_call_beside_exclusive_pods() {
    let mut env = env_with(quick(), Tunables::default()).await;
    env.add_node("c6-a", "ecs.c6.xlarge", ZONE_H).await;
    let _replica = env.start_replica().await;

    // The pool warms up to minPoolSize on one shared ENI; the exclusive
    // resource offers the other secondary slot only (3 ENIs - primary - 1).
    let eni = wait_for("a warm shared pool", || async {
        match shared_enis(&env).as_slice() {
            [e] if e.status == EniStatus::InUse && e.secondary_ips.len() >= 2 => Ok(e.clone()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    assert_eq!(eni.tags, {
        let mut t = shared_eni_tags(&ClusterId::new(CLUSTER), "c6-a");
        t.insert("team".into(), "net".into());
        t
    });
    wait_for("exclusive capacity leaves the pool's slot", || async {
        let node = env.node("c6-a").await;
        match advertised(&node) {
            (Some(c), _) if c == "1" => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    let node = env.node("c6-a").await;
    assert_eq!(
        node.annotations()
            .get("vpc-eni.io/shared-eni")
            .map(String::as_str),
        Some("true"),
        "the node half is told the node's pods wait for shared IPs"
    );

    // From here on the cloud refuses to assign or create: the warm pool's
    // IPs are all the two pods can get, so their path needs no cloud call.
    for api in ["AssignPrivateIpAddresses", "CreateNetworkInterface"] {
        env.world().set_fault(
            api,
            Some(ApiFault {
                error_rate: 1.0,
                error_kind: FaultKind::InvalidRequest,
                ..ApiFault::default()
            }),
        );
    }
    env.create_pod("web-1", 0, Some("c6-a")).await;
    env.create_pod("web-2", 0, Some("c6-a")).await;
    let (e1, ip1) = running_with_shared_ip(&env, "web-1").await;
    let (e2, ip2) = running_with_shared_ip(&env, "web-2").await;
    assert_eq!(
        (e1.as_str(), e2.as_str()),
        (eni.id.as_str(), eni.id.as_str())
    );
    assert_ne!(ip1, ip2);
    let events = env.events_about("web-1").await;
    assert!(
        events
            .iter()
            .any(|(t, r, m)| t == "Normal" && r == "AllocIPSucceed" && m.contains(&ip1)),
        "{events:?}"
    );
    for api in ["AssignPrivateIpAddresses", "CreateNetworkInterface"] {
        env.world().set_fault(api, None);
    }

    // An exclusive pod on the same node gets a whole ENI of its own.
    env.create_pod("db", 1, Some("c6-a")).await;
    env.wait_settled("exclusive pod beside shared pods").await;
    let db = env.pod("db").await.unwrap();
    let a = allocation(&db).unwrap();
    assert_eq!(a.mode, AllocationMode::Exclusive);
    assert_ne!(a.first.eni_id, eni.id.as_str());
    assert!(shared_problems(&env).await.is_empty());

    // `status` shows the node's shared IPs: the two pods', the rest pooled.
    let cloud = env.harness.cloud.client_for(&env.config).await.unwrap();
    let report =
        controller::status::collect(&env.config, env.client.clone(), cloud, Duration::ZERO)
            .await
            .unwrap();
    let row = report.nodes.iter().find(|n| n.name == "c6-a").unwrap();
    let on_eni = env.eni(eni.id.as_str()).unwrap().secondary_ips.len() as u32;
    assert_eq!(row.ips_used, Some(2));
    assert_eq!(row.ips_pooled, Some(on_eni - 2));

    // The metrics say the same per node and per subnet.
    let metrics = env.harness.replicas[0].metrics.clone();
    let text = wait_for("the pool's metrics", || async {
        let text = metrics.render();
        let want = "vpc_eni_shared_pool_ips{node=\"c6-a\",state=\"used\"} 2";
        if text.contains(want) {
            Ok(text)
        } else {
            Err(format!("no {want}"))
        }
    })
    .await;
    assert!(
        text.contains(&format!(
            "vpc_eni_shared_subnet_ips{{subnet=\"vsw-h1\",state=\"total\"}} {on_eni}"
        )),
        "{text}"
    );
    assert!(
        text.contains("vpc_eni_shared_ip_changes_total{op=\"assign\"}"),
        "{text}"
    );
    assert!(
        text.contains("vpc_eni_shared_allocation_seconds_count{node=\"c6-a\"} 2"),
        "{text}"
    );
    env.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_joining_together_are_described_in_one_call_not_one_each() {
    let mut env = env_with(quick(), Tunables::default()).await;
    const NODES: usize = 30;
    for i in 0..NODES {
        env.add_node(&format!("j-{i}"), "ecs.c6.xlarge", ZONE_H)
            .await;
    }
    let _replica = env.start_replica().await;
    // Every node's pool warms up: its books were opened from its instance.
    wait_for("a warm pool on every node", || async {
        let warm = shared_enis(&env)
            .iter()
            .filter(|e| e.status == EniStatus::InUse && e.secondary_ips.len() >= 2)
            .count();
        if warm == NODES {
            Ok(())
        } else {
            Err(format!("{warm} of {NODES} pools warm"))
        }
    })
    .await;
    // One DescribeInstances covers 100 instances; with the exclusive
    // capacity's recounts (also batched) a handful of calls, where one per
    // node would be 30 and more.
    let calls = env.world().calls();
    let described = calls.get("DescribeInstances").copied().unwrap_or(0);
    assert!(
        described <= 8,
        "{described} DescribeInstances calls for {NODES} nodes joining: {calls:?}"
    );
    env.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gone_pods_ip_cools_down_and_the_excess_then_the_unused_eni_are_released() {
    let cfg = shared(SharedEniConfig {
        max_enis: 1,
        min_pool_size: 0,
        max_pool_size: 2,
        ip_cooldown_seconds: 3,
        excess_release_delay_seconds: 1,
        pool_sync_seconds: 1,
        ..SharedEniConfig::default()
    });
    let mut env = env_with(cfg, Tunables::default()).await;
    env.add_node("c6-a", "ecs.c6.xlarge", ZONE_H).await;
    let _replica = env.start_replica().await;
    let mut ips = BTreeSet::new();
    for i in 0..4 {
        env.create_pod(&format!("job-{i}"), 0, Some("c6-a")).await;
    }
    for i in 0..4 {
        ips.insert(running_with_shared_ip(&env, &format!("job-{i}")).await.1);
    }
    assert_eq!(ips.len(), 4);
    for i in 0..4 {
        delete_pod(&env, &format!("job-{i}")).await;
    }
    // Within the cool-down, a new pod gets none of the four.
    env.create_pod("next", 0, Some("c6-a")).await;
    let (eni, ip) = running_with_shared_ip(&env, "next").await;
    assert!(
        !ips.contains(&ip),
        "{ip} handed out again within its cool-down"
    );

    // Above maxPoolSize the excess goes after the delay: one pod's IP plus
    // at most two free ones stay on the ENI.
    wait_for("excess IPs unassigned", || async {
        let e = env.eni(&eni).ok_or("ENI gone")?;
        if e.secondary_ips.len() <= 3 {
            Ok(())
        } else {
            Err(format!("{} IPs on {eni}", e.secondary_ips.len()))
        }
    })
    .await;
    // The last pod goes: the ENI no pod uses is detached and deleted.
    delete_pod(&env, "next").await;
    wait_for("unused shared ENI deleted", || async {
        match env.eni(&eni) {
            None => Ok(()),
            Some(e) => Err(format!("{:?} with {} IPs", e.status, e.secondary_ips.len())),
        }
    })
    .await;
    assert!(shared_enis(&env).is_empty());
    env.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_controller_rebuilds_the_pools_and_never_gives_one_ip_to_two_pods() {
    let mut env = env_with(quick(), Tunables::default()).await;
    env.add_node("c6-a", "ecs.c6.xlarge", ZONE_H).await;
    env.add_node("c6-b", "ecs.c6.xlarge", ZONE_H).await;
    let first = env.start_replica().await;
    let mut before = BTreeMap::new();
    for i in 0..6 {
        let node = if i % 2 == 0 { "c6-a" } else { "c6-b" };
        env.create_pod(&format!("app-{i}"), 0, Some(node)).await;
    }
    for i in 0..6 {
        let name = format!("app-{i}");
        before.insert(name.clone(), running_with_shared_ip(&env, &name).await);
    }
    first.cancel();
    // Pods come and go while no controller runs.
    delete_pod(&env, "app-0").await;
    for i in 6..10 {
        let node = if i % 2 == 0 { "c6-a" } else { "c6-b" };
        env.create_pod(&format!("app-{i}"), 0, Some(node)).await;
    }
    let enis_before: BTreeSet<String> =
        shared_enis(&env).iter().map(|e| e.id.to_string()).collect();
    let _second = env.start_replica().await;
    let mut ips = BTreeSet::new();
    for i in 1..10 {
        let name = format!("app-{i}");
        let got = running_with_shared_ip(&env, &name).await;
        if let Some(was) = before.get(&name) {
            assert_eq!(&got, was, "{name} kept its IP across the restart");
        }
        assert!(ips.insert(got.1.clone()), "{} given twice", got.1);
    }
    // app-0's IP is cooling or free, never handed to a new pod within the
    // cool-down the restart starts again.
    assert!(
        shared_problems(&env).await.is_empty(),
        "{:?}",
        shared_problems(&env).await
    );
    let enis_after: BTreeSet<String> = shared_enis(&env).iter().map(|e| e.id.to_string()).collect();
    assert_eq!(
        enis_before, enis_after,
        "the restart made or lost a shared ENI"
    );
    env.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_out_of_slots_says_why_its_pod_waits() {
    // ecs.g6.large: 2 ENIs (one secondary slot), 6 IPv4 each -> 5 pod IPs.
    let cfg = shared(SharedEniConfig {
        max_enis: 1,
        min_pool_size: 0,
        max_pool_size: 5,
        pool_sync_seconds: 1,
        ..SharedEniConfig::default()
    });
    let mut env = env_with(cfg, Tunables::default()).await;
    env.add_node("g6", "ecs.g6.large", ZONE_H).await;
    let _replica = env.start_replica().await;
    for i in 0..6 {
        env.create_pod(&format!("p-{i}"), 0, Some("g6")).await;
    }
    let served = wait_for("five pods served", || async {
        let mut n = 0;
        for i in 0..6 {
            if env
                .pod(&format!("p-{i}"))
                .await
                .and_then(|p| allocation(&p))
                .is_some()
            {
                n += 1;
            }
        }
        if n == 5 {
            Ok(n)
        } else {
            Err(format!("{n} served"))
        }
    })
    .await;
    assert_eq!(served, 5);
    let waiting = wait_for("the sixth pod's reason", || async {
        for i in 0..6 {
            let name = format!("p-{i}");
            let pod = env.pod(&name).await.unwrap();
            if allocation(&pod).is_some() {
                continue;
            }
            let events = env.events_about(&name).await;
            if let Some((_, _, m)) = events
                .iter()
                .find(|(t, r, _)| t == "Warning" && r == "AllocIPFailed")
            {
                return Ok(m.clone());
            }
            return Err(format!("{name}: {events:?}"));
        }
        Err("no pod waits".into())
    })
    .await;
    assert!(
        waiting.contains("no ENI slot") && waiting.contains("maxEnis"),
        "{waiting}"
    );
    // The kubelet would start more pods than the node has IPs for: said on
    // the node.
    let node_events = env.events_about("g6").await;
    assert!(
        node_events.iter().any(|(t, r, m)| t == "Warning"
            && r == "MaxPodsAboveIPs"
            && m.contains("1 ENIs x 5 IPs")
            && m.contains("--max-pods to 7")),
        "{node_events:?}"
    );
    assert!(shared_problems(&env).await.is_empty());
    env.shutdown().await;
}

/// A replica that starts while pods wait for their IPs may see those pods
/// before its node cache shows their node (its list of nodes is slower
/// than its list of pods). They get their IPs once the node is seen; a
/// waiting pod does not change by itself, so nothing else would send it
/// back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_seen_before_their_node_get_their_ips_once_the_node_is() {
    let mut env = env_with(quick(), Tunables::default()).await;
    env.add_node("c6-a", "ecs.c6.xlarge", ZONE_H).await;
    let first = env.start_replica().await;
    wait_for("the node's warm pool", || async {
        match shared_enis(&env).as_slice() {
            [e] if e.status == EniStatus::InUse => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    first.cancel();
    // Created while no replica runs: bound, and Pending for its IP.
    for i in 0..2 {
        env.create_pod(&format!("w-{i}"), 0, Some("c6-a")).await;
    }
    for i in 0..2 {
        wait_for("the pod waiting on its node", || async {
            let p = env.pod(&format!("w-{i}")).await.ok_or("gone")?;
            let status = p.status.unwrap_or_default();
            match (status.phase.as_deref(), status.container_statuses) {
                (Some("Pending"), Some(_)) => Ok(()),
                other => Err(format!("{other:?}")),
            }
        })
        .await;
    }
    env.harness
        .kube
        .api
        .hold_reads("nodes", Some(Duration::from_secs(3)));
    let _second = env.start_replica().await;
    let mut ips = BTreeSet::new();
    for i in 0..2 {
        ips.insert(running_with_shared_ip(&env, &format!("w-{i}")).await.1);
    }
    assert_eq!(ips.len(), 2);
    env.harness.kube.api.hold_reads("nodes", None);
    assert!(shared_problems(&env).await.is_empty());
    env.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copied_annotation_does_not_give_a_pod_another_pods_ip() {
    let mut env = env_with(quick(), Tunables::default()).await;
    env.add_node("c6-a", "ecs.c6.xlarge", ZONE_H).await;
    let _replica = env.start_replica().await;
    env.create_pod("orig", 0, Some("c6-a")).await;
    let (_, ip) = running_with_shared_ip(&env, "orig").await;
    let orig = env.pod("orig").await.unwrap();
    // A pod made from orig's YAML, annotation included.
    let copied: Pod = serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "copy", "namespace": "default",
            "annotations": {ALLOCATION_ANNOTATION: orig.annotations()[ALLOCATION_ANNOTATION].clone()}},
        "spec": {"nodeSelector": {"kubernetes.io/hostname": "c6-a"},
            "containers": [{"name": "app", "image": "registry.k8s.io/pause:3.9"}]},
    }))
    .unwrap();
    env.pods()
        .create(&PostParams::default(), &copied)
        .await
        .unwrap();
    let (_, copy_ip) = running_with_shared_ip(&env, "copy").await;
    assert_ne!(copy_ip, ip);
    assert!(shared_problems(&env).await.is_empty());
    env.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_enis_no_node_holds_are_collected_and_others_never_touched() {
    let mut env = env_with(quick(), Tunables::quick_gc()).await;
    env.add_node("c6-a", "ecs.c6.xlarge", ZONE_H).await;
    let world = env.world();
    let make = |token: &'static str, tags: Tags| async move {
        world
            .create_eni(&CreateEniRequest {
                subnet_id: SubnetId::new("vsw-h1"),
                security_groups: vec![SecurityGroupId::new("sg-e2e")],
                secondary_ip_count: 2,
                tags,
                description: "made by hand".into(),
                idempotency_token: IdempotencyToken::new(token),
            })
            .await
            .unwrap()
    };
    // Ours, for a node that no longer exists: an orphan.
    let orphan = make(
        "orphan",
        shared_eni_tags(&ClusterId::new(CLUSTER), "gone-node"),
    )
    .await;
    // Another cluster's shared ENI, and one with our mode tag only.
    let other = make(
        "other",
        shared_eni_tags(&ClusterId::new("other"), "gone-node"),
    )
    .await;
    let mut mode_only = Tags::new();
    mode_only.insert(tag::MODE.into(), tag::MODE_SHARED.into());
    let foreign = make("foreign", mode_only).await;
    let _replica = env.start_replica().await;
    wait_for("orphaned shared ENI released", || async {
        match env.eni(orphan.id.as_str()) {
            None => Ok(()),
            Some(e) => Err(format!("{:?}", e.status)),
        }
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        env.eni(other.id.as_str()).is_some(),
        "another cluster's ENI was touched"
    );
    assert!(
        env.eni(foreign.id.as_str()).is_some(),
        "an ENI without our marks was touched"
    );
    env.shutdown().await;
}

// ---- crash at every step ------------------------------------------------------

/// Kill the controller right after `step` (the first time any pool or pod
/// reaches it), start a new one, and check that every pod ends on its own
/// IP and nothing is left behind.
async fn crash_at(step: Step) {
    let releasing = matches!(
        step,
        Step::IpsUnassigned | Step::DetachRequested | Step::EniDetached | Step::EniDeleted
    );
    let cfg = if releasing {
        shared(SharedEniConfig {
            max_enis: 1,
            min_pool_size: 0,
            max_pool_size: 1,
            ip_cooldown_seconds: 1,
            excess_release_delay_seconds: 1,
            pool_sync_seconds: 1,
            ..SharedEniConfig::default()
        })
    } else {
        quick()
    };
    let mut env = env_with(cfg, Tunables::quick_gc()).await;
    env.add_node("c6-a", "ecs.c6.xlarge", ZONE_H).await;
    let token = CancellationToken::new();
    let crash = CrashAt::new(step, token.clone());
    env.start_replica_with(token, Some(crash.clone())).await;
    for i in 0..4 {
        env.create_pod(&format!("p-{i}"), 0, Some("c6-a")).await;
    }
    if releasing {
        for i in 0..4 {
            running_with_shared_ip(&env, &format!("p-{i}")).await;
        }
        // One pod stays for the unassign step: an ENI nobody uses would go
        // whole instead.
        let keep = usize::from(step == Step::IpsUnassigned);
        for i in 0..4 - keep {
            delete_pod(&env, &format!("p-{i}")).await;
        }
    }
    wait_for("the injected crash", || async {
        if crash.fired() {
            Ok(())
        } else {
            Err(format!("{step:?} not reached"))
        }
    })
    .await;
    let _second = env.start_replica().await;
    if releasing {
        if env.pod("p-3").await.is_some() {
            delete_pod(&env, "p-3").await;
        }
        wait_for("every shared ENI released", || async {
            match shared_enis(&env).as_slice() {
                [] => Ok(()),
                left => Err(format!("{left:?}")),
            }
        })
        .await;
    } else {
        let mut ips = BTreeSet::new();
        for i in 0..4 {
            assert!(ips.insert(running_with_shared_ip(&env, &format!("p-{i}")).await.1));
        }
        wait_for("one shared ENI, in use, nothing leaked", || async {
            let enis = shared_enis(&env);
            let problems = shared_problems(&env).await;
            match enis.as_slice() {
                [e] if e.status == EniStatus::InUse && problems.is_empty() => Ok(()),
                _ => Err(format!("{enis:?} {problems:?}")),
            }
        })
        .await;
    }
    env.shutdown().await;
}

macro_rules! crash_tests {
    ($($name:ident: $step:expr;)*) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            crash_at($step).await;
        }
    )*};
}

crash_tests! {
    crash_after_shared_eni_created_leaks_nothing: Step::EniCreated;
    crash_after_shared_attach_requested_leaks_nothing: Step::AttachRequested;
    crash_after_shared_eni_in_use_leaks_nothing: Step::EniInUse;
    crash_after_ips_assigned_leaks_nothing: Step::IpsAssigned;
    crash_after_shared_ip_annotated_gives_no_ip_twice: Step::Annotated;
    crash_after_ips_unassigned_leaks_nothing: Step::IpsUnassigned;
    crash_after_shared_detach_requested_leaks_nothing: Step::DetachRequested;
    crash_after_shared_eni_detached_leaks_nothing: Step::EniDetached;
    crash_after_shared_eni_deleted_leaks_nothing: Step::EniDeleted;
}

#[test]
fn every_shared_step_has_a_crash_test() {
    let text = include_str!("shared_eni_e2e.rs");
    for step in Step::SHARED {
        assert!(
            text.contains(&format!("Step::{step:?};")),
            "no crash test for {step:?}"
        );
    }
}
