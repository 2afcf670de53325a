//! ENI (exclusive) mode end to end on Alibaba: the real controller, over
//! HTTP, against the fake kube-apiserver (scheduler, kubelet) and the
//! in-memory cloud behind the Alibaba OpenAPI mock. Each test asserts what a
//! user would see: node capacity, pod annotations and IPs, Events, and the
//! ENIs in the VPC, including after the controller is killed at every step of
//! an allocation and of a release.

mod support;

use controller::eni::{CrashAt, Step};
use ipam::eni::{owned_eni_tags, tag, PodRef};
use ipam::ids::{ClusterId, EniId, IdempotencyToken, InstanceId, SecurityGroupId, SubnetId};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{DeleteParams, Patch, PatchParams};
use kube::ResourceExt;
use mocks::cloud::{ApiFault, FaultKind};
use providers::model::{CreateEniRequest, Eni, EniStatus, Tags};
use providers::Cloud;
use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::time::Duration;
use support::{
    advertised, allocation, instance_for, node_template, requested_enis, wait_for, Env, Tunables,
    CLUSTER, REGION, RESOURCE, ZONE_H, ZONE_I, ZONE_J, ZONE_K,
};
use tokio_util::sync::CancellationToken;

/// An ENI made by hand in the world (as an operator or another cluster
/// would), optionally attached to `attach_to`, waited until it settles.
async fn eni_by_hand(env: &Env, token: &str, tags: Tags, attach_to: Option<&InstanceId>) -> Eni {
    eni_by_hand_in(env, "vsw-h1", token, tags, attach_to).await
}

async fn eni_by_hand_in(
    env: &Env,
    subnet: &str,
    token: &str,
    tags: Tags,
    attach_to: Option<&InstanceId>,
) -> Eni {
    let world = env.world();
    let eni = world
        .create_eni(&CreateEniRequest {
            subnet_id: SubnetId::new(subnet),
            security_groups: vec![SecurityGroupId::new("sg-e2e")],
            secondary_ip_count: 0,
            tags,
            description: "made by hand".into(),
            idempotency_token: IdempotencyToken::new(token),
        })
        .await
        .unwrap();
    if let Some(instance) = attach_to {
        world.attach_eni(&eni.id, instance).await.unwrap();
        let id = eni.id.to_string();
        wait_for("hand-made ENI in use", || async {
            match env.eni(&id) {
                Some(e) if e.status == EniStatus::InUse => Ok(()),
                other => Err(format!("{other:?}")),
            }
        })
        .await;
    }
    env.eni(eni.id.as_str()).unwrap()
}

fn pod_ref(name: &str, uid: &str) -> PodRef {
    PodRef {
        namespace: "default".into(),
        name: name.into(),
        uid: uid.into(),
    }
}

fn node_of(pod: &Pod) -> String {
    pod.spec
        .as_ref()
        .and_then(|s| s.node_name.clone())
        .unwrap_or_default()
}

/// ENI ids a pod's annotation names.
fn annotated_ids(pod: &Pod) -> Vec<String> {
    allocation(pod)
        .map(|a| a.all().iter().map(|e| e.eni_id.clone()).collect())
        .unwrap_or_default()
}

async fn wait_capacity(env: &Env, want: &[(&str, &str)]) {
    wait_for("advertised ENI capacity", || async {
        let mut seen = Vec::new();
        for (name, value) in want {
            let got = advertised(&env.node(name).await);
            let want = (Some(value.to_string()), Some(value.to_string()));
            if got != want {
                seen.push(format!("{name}: {got:?}, want {want:?}"));
            }
        }
        if seen.is_empty() {
            Ok(())
        } else {
            Err(seen.join("; "))
        }
    })
    .await;
}

// ---- 1. capacity -----------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_advertise_their_free_eni_slots_and_an_unknown_instance_gets_zero_and_a_warning() {
    let mut env = Env::start(Tunables::default()).await;
    env.add_node("c6-h", "ecs.c6.xlarge", ZONE_H).await;
    env.add_node("c6-i", "ecs.c6.xlarge", ZONE_I).await;
    env.add_node("g6-small", "ecs.g6.large", ZONE_H).await;
    let busy = env.add_node("c6-busy", "ecs.c6.xlarge", ZONE_H).await;
    let foreign = eni_by_hand(&env, "ops-1", Tags::new(), Some(&busy)).await;
    // Its providerID names an instance the cloud does not have.
    let mut ghost = node_template("ghost", "ecs.c6.xlarge", ZONE_H);
    ghost.provider_id = Some(format!("{REGION}.i-ghost"));
    env.register(&ghost).await;
    // No providerID, yet it claims the resource (left over from elsewhere).
    let mut bare = node_template("bare", "ecs.c6.xlarge", ZONE_H);
    bare.extended = vec![(RESOURCE.into(), "5".into())];
    env.register(&bare).await;
    env.start_replica().await;

    wait_capacity(
        &env,
        &[
            ("c6-h", "2"),
            ("c6-i", "2"),
            ("g6-small", "1"),
            ("c6-busy", "1"),
            ("ghost", "0"),
        ],
    )
    .await;
    wait_for(
        "the resource removed from the node without providerID",
        || async {
            match advertised(&env.node("bare").await) {
                (None, None) => Ok(()),
                other => Err(format!("{other:?}")),
            }
        },
    )
    .await;
    let warnings = wait_for("EniCapacityUnknown on ghost", || async {
        let events = env.events_about("ghost").await;
        if events
            .iter()
            .any(|(t, r, _)| t == "Warning" && r == "EniCapacityUnknown")
        {
            Ok(events)
        } else {
            Err(format!("{events:?}"))
        }
    })
    .await;
    assert!(
        warnings.iter().any(|(_, _, m)| m.contains("i-ghost")),
        "the warning should name the missing instance: {warnings:?}"
    );
    for good in ["c6-h", "c6-i", "g6-small", "c6-busy"] {
        let events = env.events_about(good).await;
        assert!(
            !events.iter().any(|(_, r, _)| r == "EniCapacityUnknown"),
            "{good}: {events:?}"
        );
    }

    // Another ENI attached by someone else later is noticed.
    let second = eni_by_hand(&env, "ops-2", Tags::new(), Some(&busy)).await;
    wait_capacity(&env, &[("c6-busy", "0"), ("c6-h", "2")]).await;
    // Neither foreign ENI was touched.
    for e in [&foreign, &second] {
        let now = env.eni(e.id.as_str()).expect("foreign ENI still exists");
        assert_eq!(now.status, EniStatus::InUse);
        assert_eq!(now.instance_id.as_ref(), Some(&busy));
        assert!(now.tags.is_empty(), "{:?}", now.tags);
    }
    env.shutdown().await;
}

// ---- 2. allocation ---------------------------------------------------------

/// Everything a user can check about one allocated pod. `event`: whether
/// the `AllocIPSucceed` Event must be there (a kill right after the
/// annotation is written may lose it: Events are best effort).
async fn check_allocation(env: &Env, name: &str, event: bool) {
    let pod = env.pod(name).await.expect("pod exists");
    let want = requested_enis(&pod) as usize;
    let alloc = allocation(&pod).expect("allocation annotation");
    let all = alloc.all();
    assert_eq!(all.len(), want, "{name}: {alloc:?}");
    if want > 1 {
        assert_eq!(alloc.enis.len(), want, "{name}: `enis` lists every ENI");
        assert_eq!(
            alloc.enis[0], alloc.first,
            "{name}: first ENI at the top level"
        );
    }
    let node = node_of(&pod);
    let zone = env
        .node(&node)
        .await
        .labels()
        .get("topology.kubernetes.io/zone")
        .cloned()
        .unwrap();
    let configured: &[&str] = match zone.as_str() {
        ZONE_H => &["vsw-h1", "vsw-h2"],
        ZONE_I => &["vsw-i1"],
        ZONE_J => &["vsw-j1"],
        other => panic!("{name} landed in {other}"),
    };
    let subnets = env.subnets();
    let uid = pod.uid().unwrap();
    for a in &all {
        let eni = env.eni(&a.eni_id).expect("annotated ENI exists");
        assert_eq!(eni.status, EniStatus::InUse, "{name}: {eni:?}");
        assert_eq!(
            eni.instance_id.as_ref().map(ToString::to_string),
            Some(instance_for(&node)),
            "{name}: attached to its own node's instance"
        );
        assert_eq!(eni.primary_ip.to_string(), a.ip);
        assert_eq!(eni.mac, a.mac);
        assert_eq!(eni.subnet_id.as_str(), a.subnet_id);
        assert!(
            configured.contains(&a.subnet_id.as_str()),
            "{name}: {} is not a configured vSwitch of {zone}",
            a.subnet_id
        );
        let subnet = subnets.iter().find(|s| s.id == eni.subnet_id).unwrap();
        assert_eq!(subnet.zone.as_str(), zone);
        let ip: Ipv4Addr = a.ip.parse().unwrap();
        assert!(subnet.cidr.contains(&ip), "{ip} outside {}", subnet.cidr);
        assert_eq!(a.subnet_cidr, subnet.cidr.to_string());
        assert_eq!(a.gateway, subnet.gateway.to_string());
        assert_eq!(a.node, node);
        for (k, v) in [
            (tag::CLUSTER, CLUSTER),
            (tag::POD_NAMESPACE, "default"),
            (tag::POD_NAME, name),
            (tag::POD_UID, uid.as_str()),
            (tag::NODE, node.as_str()),
            (tag::CREATOR, tag::CREATOR_VALUE),
            ("team", "net"),
        ] {
            assert_eq!(
                eni.tags.get(k).map(String::as_str),
                Some(v),
                "{name}: tag {k} on {}: {:?}",
                eni.id,
                eni.tags
            );
        }
    }
    let ids: BTreeSet<&str> = all.iter().map(|a| a.eni_id.as_str()).collect();
    assert_eq!(ids.len(), want, "{name}: ENIs are distinct");
    let status = pod.status.clone().unwrap();
    assert_eq!(status.phase.as_deref(), Some("Running"));
    assert_eq!(status.pod_ip.as_deref(), Some(alloc.first.ip.as_str()));
    if event {
        // The Event follows the annotation; give it the usual deadline.
        wait_for(&format!("AllocIPSucceed on {name}"), || async {
            let events = env.events_about(name).await;
            if events.iter().any(|(t, r, m)| {
                t == "Normal"
                    && r == "AllocIPSucceed"
                    && m.contains(&alloc.first.eni_id)
                    && m.contains(&alloc.first.ip)
            }) {
                Ok(())
            } else {
                Err(format!("{events:?}"))
            }
        })
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eni_pods_get_their_own_enis_on_their_node_with_an_ip_of_the_nodes_zone() {
    let mut env = Env::start(Tunables::default()).await;
    env.add_node("h-1", "ecs.c6.xlarge", ZONE_H).await;
    env.add_node("i-1", "ecs.c6.xlarge", ZONE_I).await;
    env.start_replica().await;
    env.create_pod("solo", 1, Some("h-1")).await;
    env.create_pod("pair", 2, Some("i-1")).await;
    env.create_pod("other", 1, None).await;
    env.wait_settled("three ENI pods").await;
    for name in ["solo", "pair", "other"] {
        check_allocation(&env, name, true).await;
    }
    // Four ENIs in all, every pod IP distinct.
    let ips: BTreeSet<Ipv4Addr> = env.cluster_enis().iter().map(|e| e.primary_ip).collect();
    assert_eq!(ips.len(), 4, "{ips:?}");
    env.shutdown().await;
}

// ---- 3. pending with the scheduler's words ---------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_third_eni_pod_on_a_full_node_stays_pending_and_starts_once_another_is_deleted() {
    let mut env = Env::start(Tunables::default()).await;
    env.add_node("only", "ecs.c6.xlarge", ZONE_H).await;
    env.start_replica().await;
    wait_capacity(&env, &[("only", "2")]).await;
    for name in ["web-1", "web-2", "web-3"] {
        env.create_pod(name, 1, None).await;
    }
    let words = "0/1 nodes are available: 1 Insufficient aliyun/eni.";
    let pending = wait_for("two running, one pending", || async {
        let pods = env.pods().list(&Default::default()).await.unwrap().items;
        let running: Vec<String> = pods
            .iter()
            .filter(|p| {
                p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
                    && allocation(p).is_some()
            })
            .map(|p| p.name_any())
            .collect();
        let unbound: Vec<String> = pods
            .iter()
            .filter(|p| node_of(p).is_empty())
            .map(|p| p.name_any())
            .collect();
        if running.len() != 2 || unbound.len() != 1 {
            return Err(format!("running {running:?}, unbound {unbound:?}"));
        }
        let events = env.events_about(&unbound[0]).await;
        if events
            .iter()
            .any(|(t, r, m)| t == "Warning" && r == "FailedScheduling" && m == words)
        {
            Ok(unbound[0].clone())
        } else {
            Err(format!("{} events: {events:?}", unbound[0]))
        }
    })
    .await;
    let p = env.pod(&pending).await.unwrap();
    assert_eq!(
        p.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Pending")
    );
    assert!(allocation(&p).is_none());
    // Our own ENIs never shrink what the node advertises (the scheduler
    // already counts the pods holding them): look after a fresh recount.
    let seen = env.world().calls().get("DescribeInstances").copied();
    wait_for("a capacity recount", || async {
        let now = env.world().calls().get("DescribeInstances").copied();
        if now >= seen.map(|n| n + 2) {
            Ok(())
        } else {
            Err(format!("{now:?} DescribeInstances calls, was {seen:?}"))
        }
    })
    .await;
    assert_eq!(
        advertised(&env.node("only").await),
        (Some("2".into()), Some("2".into()))
    );

    // Deleting a running pod frees its ENI slot: the pending pod starts.
    let victim = ["web-1", "web-2", "web-3"]
        .into_iter()
        .find(|n| *n != pending)
        .unwrap();
    env.pods()
        .delete(victim, &DeleteParams::default())
        .await
        .unwrap();
    env.wait_settled("the pending pod takes the freed slot")
        .await;
    assert!(env.pod(victim).await.is_none());
    check_allocation(&env, &pending, true).await;
    env.shutdown().await;
}

// ---- 4. release -------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_pod_detaches_and_deletes_its_eni_before_the_pod_disappears() {
    let mut env = Env::start(Tunables::default()).await;
    let instance = env.add_node("n", "ecs.c6.xlarge", ZONE_H).await;
    env.start_replica().await;
    env.create_pod("doomed", 1, None).await;
    env.create_pod("keeper", 1, None).await;
    env.wait_settled("two ENI pods").await;
    let doomed = annotated_ids(&env.pod("doomed").await.unwrap());
    let keeper = annotated_ids(&env.pod("keeper").await.unwrap());

    env.pods()
        .delete("doomed", &DeleteParams::default())
        .await
        .unwrap();
    wait_for("the deleted pod to disappear", || async {
        match env.pod("doomed").await {
            Some(p) => Err(format!(
                "still there, finalizers {:?}, ENI {:?}",
                p.finalizers(),
                doomed.iter().map(|id| env.eni(id)).collect::<Vec<_>>()
            )),
            None => Ok(()),
        }
    })
    .await;
    // The finalizer is dropped only after the ENI is gone from the cloud.
    for id in &doomed {
        assert!(env.eni(id).is_none(), "ENI {id} outlived its pod");
    }
    let on_node: Vec<String> = env
        .cluster_enis()
        .into_iter()
        .filter(|e| e.instance_id.as_ref() == Some(&instance))
        .map(|e| e.id.to_string())
        .collect();
    assert_eq!(on_node, keeper);
    env.wait_settled("after the release").await;
    assert_eq!(annotated_ids(&env.pod("keeper").await.unwrap()), keeper);
    env.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_finished_pod_gives_its_eni_back_and_its_slot_to_a_waiting_pod() {
    let mut env = Env::start(Tunables::default()).await;
    env.add_node("only", "ecs.c6.xlarge", ZONE_H).await;
    env.start_replica().await;
    wait_capacity(&env, &[("only", "2")]).await;
    env.create_pod("job", 2, None).await;
    env.wait_settled("a pod holding both slots").await;
    let held = annotated_ids(&env.pod("job").await.unwrap());
    assert_eq!(held.len(), 2);
    env.create_pod("next", 1, None).await;

    // The job's containers exit 0 (what the kubelet would report).
    env.pods()
        .patch_status(
            "job",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"status": {"phase": "Succeeded"}})),
        )
        .await
        .unwrap();
    env.wait_settled("the finished pod released, the waiting one running")
        .await;
    for id in &held {
        assert!(env.eni(id).is_none(), "ENI {id} of a finished pod kept");
    }
    let job = env
        .pod("job")
        .await
        .expect("a finished pod stays until deleted");
    assert!(job.finalizers().is_empty(), "{:?}", job.finalizers());
    check_allocation(&env, "next", true).await;
    env.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flaky_cloud_that_loses_answers_and_throttles_leaks_nothing() {
    let mut env = Env::start(Tunables::default()).await;
    env.add_node("a", "ecs.g6.2xlarge", ZONE_H).await;
    env.add_node("b", "ecs.g6.2xlarge", ZONE_I).await;
    // Three slots each: room for the two-ENI pods however the rest land.
    env.add_node("c", "ecs.g6.2xlarge", ZONE_H).await;
    let world = env.world().clone();
    // Most creates take effect but their answer is lost: only a retry with
    // the same client token avoids a second ENI.
    world.set_fault(
        "CreateNetworkInterface",
        Some(ApiFault {
            error_rate: 0.75,
            error_kind: FaultKind::Transient,
            after_effect: true,
            ..ApiFault::default()
        }),
    );
    for api in [
        "AttachNetworkInterface",
        "DetachNetworkInterface",
        "DeleteNetworkInterface",
        "DescribeNetworkInterfaces",
    ] {
        world.set_fault(
            api,
            Some(ApiFault {
                error_rate: 0.3,
                error_kind: FaultKind::Throttled,
                ..ApiFault::default()
            }),
        );
    }
    env.start_replica().await;
    for (name, enis) in [("p1", 1), ("p2", 2), ("p3", 1), ("p4", 2)] {
        env.create_pod(name, enis, None).await;
    }
    env.wait_settled("six ENIs through a flaky cloud").await;
    assert_eq!(env.cluster_enis().len(), 6);
    let lost = world.calls().get("CreateNetworkInterface").copied();
    assert!(lost > Some(6), "no create answer was lost: {lost:?}");
    env.pods()
        .delete("p2", &DeleteParams::default())
        .await
        .unwrap();
    wait_for("p2 to disappear", || async {
        match env.pod("p2").await {
            Some(p) => Err(format!("finalizers {:?}", p.finalizers())),
            None => Ok(()),
        }
    })
    .await;
    env.wait_settled("after a release through a flaky cloud")
        .await;
    assert_eq!(env.cluster_enis().len(), 4);
    env.shutdown().await;
}

// ---- 5. crash at every step --------------------------------------------------

/// Kill the controller right after `step` of an allocation (two pods in
/// flight, one asking for two ENIs), start a fresh replica, and check that
/// every pod ends Running with exactly its ENIs and nothing leaked.
async fn crash_during_allocation(step: Step) {
    let mut env = Env::start(Tunables::default()).await;
    env.add_node("a", "ecs.c6.xlarge", ZONE_H).await;
    env.add_node("b", "ecs.c6.xlarge", ZONE_H).await;
    let token = CancellationToken::new();
    let crash = CrashAt::new(step, token.clone());
    env.start_replica_with(token, Some(crash.clone())).await;
    env.create_pod("solo", 1, None).await;
    env.create_pod("pair", 2, None).await;
    wait_for("the injected crash", || async {
        if crash.fired() {
            Ok(())
        } else {
            Err(format!(
                "not reached {step:?} yet; ENIs {:?}",
                env.cluster_enis()
            ))
        }
    })
    .await;
    env.start_replica().await;
    env.wait_settled(&format!("after a crash at {step:?}"))
        .await;
    for name in ["solo", "pair"] {
        check_allocation(&env, name, step != Step::Annotated).await;
    }
    assert_eq!(env.cluster_enis().len(), 3);
    env.shutdown().await;
}

/// Kill the controller right after `step` of a release, start a fresh
/// replica, and check that the deleted pod and its ENI are gone while the
/// other pod keeps its ENI.
async fn crash_during_release(step: Step) {
    let mut env = Env::start(Tunables::default()).await;
    env.add_node("a", "ecs.c6.xlarge", ZONE_H).await;
    let token = CancellationToken::new();
    let crash = CrashAt::new(step, token.clone());
    env.start_replica_with(token, Some(crash.clone())).await;
    env.create_pod("doomed", 1, None).await;
    env.create_pod("keeper", 1, None).await;
    env.wait_settled("two ENI pods before the release").await;
    let doomed = annotated_ids(&env.pod("doomed").await.unwrap());
    let keeper = annotated_ids(&env.pod("keeper").await.unwrap());
    env.pods()
        .delete("doomed", &DeleteParams::default())
        .await
        .unwrap();
    wait_for("the injected crash", || async {
        if crash.fired() {
            Ok(())
        } else {
            Err(format!(
                "not reached {step:?} yet; ENIs {:?}",
                env.cluster_enis()
            ))
        }
    })
    .await;
    env.start_replica().await;
    wait_for("the deleted pod to disappear", || async {
        match env.pod("doomed").await {
            Some(p) => Err(format!("finalizers {:?}", p.finalizers())),
            None => Ok(()),
        }
    })
    .await;
    for id in &doomed {
        assert!(
            env.eni(id).is_none(),
            "ENI {id} leaked after a crash at {step:?}"
        );
    }
    env.wait_settled(&format!("after a crash at {step:?}"))
        .await;
    assert_eq!(annotated_ids(&env.pod("keeper").await.unwrap()), keeper);
    assert_eq!(env.cluster_enis().len(), 1);
    env.shutdown().await;
}

macro_rules! crash_tests {
    ($($name:ident: $run:ident($step:expr);)*) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            $run($step).await;
        }
    )*};
}

crash_tests! {
    crash_after_finalizer_added_leaks_nothing: crash_during_allocation(Step::FinalizerAdded);
    crash_after_eni_created_leaks_nothing: crash_during_allocation(Step::EniCreated);
    crash_after_attach_requested_leaks_nothing: crash_during_allocation(Step::AttachRequested);
    crash_after_eni_in_use_leaks_nothing: crash_during_allocation(Step::EniInUse);
    crash_after_annotated_leaks_nothing: crash_during_allocation(Step::Annotated);
    crash_after_detach_requested_still_releases: crash_during_release(Step::DetachRequested);
    crash_after_eni_detached_still_releases: crash_during_release(Step::EniDetached);
    crash_after_eni_deleted_still_releases: crash_during_release(Step::EniDeleted);
}

/// A controller killed again and again, each replica one step further than
/// the one before (through every allocation step, then every release step),
/// still ends with exactly the pods' ENIs and nothing leaked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_controller_killed_at_every_step_in_turn_still_converges() {
    let mut env = Env::start(Tunables::default()).await;
    env.add_node("a", "ecs.c6.xlarge", ZONE_H).await;
    env.add_node("b", "ecs.c6.xlarge", ZONE_H).await;
    let mut pods_created = false;
    let mut fired = Vec::new();
    for step in Step::ALLOCATION {
        let token = CancellationToken::new();
        let crash = CrashAt::new(step, token.clone());
        env.start_replica_with(token.clone(), Some(crash.clone()))
            .await;
        if !pods_created {
            env.create_pod("solo", 1, None).await;
            env.create_pod("pair", 2, None).await;
            pods_created = true;
        }
        // A replica may find a step already done by the cloud (an attach
        // that completed meanwhile) and finish the work without it.
        wait_for(&format!("a crash at {step:?} or the work done"), || async {
            if crash.fired() {
                return Ok(());
            }
            match env.eni_problems(true).await {
                p if p.is_empty() => Ok(()),
                p => Err(format!("{p:?}")),
            }
        })
        .await;
        token.cancel();
        if crash.fired() {
            fired.push(step);
        }
    }
    assert_eq!(fired.first(), Some(&Step::FinalizerAdded), "{fired:?}");
    let survivor = env.start_replica().await;
    env.wait_settled("after five crashed replicas").await;
    for name in ["solo", "pair"] {
        check_allocation(&env, name, false).await;
    }
    let pair = annotated_ids(&env.pod("pair").await.unwrap());
    survivor.cancel();

    env.pods()
        .delete("solo", &DeleteParams::default())
        .await
        .unwrap();
    let mut fired = Vec::new();
    for step in Step::RELEASE {
        let token = CancellationToken::new();
        let crash = CrashAt::new(step, token.clone());
        env.start_replica_with(token.clone(), Some(crash.clone()))
            .await;
        // A later step may never come: the cloud finishes a detach on its
        // own, so a replica that starts after the detach went through
        // deletes the ENI at once. Then the release is simply done.
        wait_for(
            &format!("a crash at {step:?} or the release done"),
            || async {
                if crash.fired() || env.pod("solo").await.is_none() {
                    Ok(())
                } else {
                    Err(format!("ENIs {:?}", env.cluster_enis()))
                }
            },
        )
        .await;
        token.cancel();
        if crash.fired() {
            fired.push(step);
        }
    }
    assert_eq!(fired.first(), Some(&Step::DetachRequested), "{fired:?}");
    env.start_replica().await;
    wait_for("the deleted pod to disappear", || async {
        match env.pod("solo").await {
            Some(p) => Err(format!("finalizers {:?}", p.finalizers())),
            None => Ok(()),
        }
    })
    .await;
    env.wait_settled("after three more crashed replicas").await;
    assert_eq!(annotated_ids(&env.pod("pair").await.unwrap()), pair);
    assert_eq!(env.cluster_enis().len(), 2);
    env.shutdown().await;
}

/// With leader election on, as deployed: the leader dies in the middle of an
/// allocation, the standby takes the lease and finishes the work without a
/// second ENI.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_standby_takes_over_an_allocation_its_leader_died_in() {
    let mut env = Env::start(Tunables::default()).await;
    let le = &mut env.config.controller.leader_election;
    le.enabled = true;
    le.namespace = Some("kube-system".into());
    le.lease_duration_seconds = 3;
    le.renew_interval_seconds = 1;
    env.add_node("a", "ecs.c6.xlarge", ZONE_H).await;
    env.add_node("b", "ecs.c6.xlarge", ZONE_H).await;
    let token = CancellationToken::new();
    let crash = CrashAt::new(Step::AttachRequested, token.clone());
    let leader = env.start_replica_with(token, Some(crash.clone())).await;
    wait_for("the first replica to lead", || async {
        if *leader.leading.borrow() {
            Ok(())
        } else {
            Err("not leading yet".to_string())
        }
    })
    .await;
    let standby = env.start_replica_with(CancellationToken::new(), None).await;
    env.create_pod("solo", 1, None).await;
    env.create_pod("pair", 2, None).await;
    wait_for("the leader to die after an attach request", || async {
        if crash.fired() {
            Ok(())
        } else {
            Err(format!("ENIs {:?}", env.cluster_enis()))
        }
    })
    .await;
    env.wait_settled("after the standby took over").await;
    assert!(*standby.leading.borrow());
    for name in ["solo", "pair"] {
        check_allocation(&env, name, true).await;
    }
    assert_eq!(env.cluster_enis().len(), 3);
    env.shutdown().await;
}

// ---- 6. garbage collection ---------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gc_releases_an_orphaned_owned_eni_and_never_touches_foreign_ones() {
    let mut env = Env::start(Tunables::quick_gc()).await;
    let instance = env.add_node("a", "ecs.g6.2xlarge", ZONE_H).await;
    let ours = ClusterId::new(CLUSTER);
    let orphan = eni_by_hand(
        &env,
        "orphan",
        owned_eni_tags(&ours, &pod_ref("vanished", "uid-of-a-gone-pod"), "a"),
        Some(&instance),
    )
    .await;
    let untagged = eni_by_hand(&env, "untagged", Tags::new(), Some(&instance)).await;
    let other_cluster = eni_by_hand(
        &env,
        "other-cluster",
        owned_eni_tags(
            &ClusterId::new("another"),
            &pod_ref("vanished", "uid-of-a-gone-pod"),
            "a",
        ),
        None,
    )
    .await;
    env.start_replica().await;
    env.create_pod("alive", 1, None).await;
    let alive = wait_for("the live pod's allocation", || async {
        let pod = env.pod("alive").await.unwrap();
        match annotated_ids(&pod) {
            ids if ids.is_empty() => Err(format!("{:?}", pod.metadata.annotations)),
            ids => Ok(ids),
        }
    })
    .await;

    wait_for("the orphan to be released", || async {
        match env.eni(orphan.id.as_str()) {
            None => Ok(()),
            Some(e) => Err(format!(
                "{:?} on {:?}; cloud calls so far {:?}; GC saw {:?} owned, {:?} orphans",
                e.status,
                e.instance_id,
                env.world().calls(),
                env.harness.replicas[0].metrics.eni_owned(),
                env.harness.replicas[0].metrics.eni_orphans(),
            )),
        }
    })
    .await;
    // The GC passes that released the orphan saw these too, as old.
    let u = env.eni(untagged.id.as_str()).expect("untagged ENI kept");
    assert_eq!(
        (u.status, u.instance_id.as_ref()),
        (EniStatus::InUse, Some(&instance))
    );
    let o = env
        .eni(other_cluster.id.as_str())
        .expect("another cluster's ENI kept");
    assert_eq!(o.status, EniStatus::Available);
    assert_eq!(o.tags, other_cluster.tags);
    env.wait_settled("the live pod after GC").await;
    assert_eq!(annotated_ids(&env.pod("alive").await.unwrap()), alive);
    env.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_whose_eni_was_deleted_behind_our_back_gets_a_new_one() {
    let mut env = Env::start(Tunables::quick_gc()).await;
    let instance = env.add_node("a", "ecs.c6.xlarge", ZONE_H).await;
    env.start_replica().await;
    env.create_pod("victim", 1, None).await;
    env.wait_settled("an ENI pod").await;
    let old = annotated_ids(&env.pod("victim").await.unwrap()).remove(0);
    let world = env.world();
    world
        .detach_eni(&EniId::new(&old), &instance)
        .await
        .unwrap();
    wait_for("the hand-detached ENI", || async {
        match env.eni(&old) {
            Some(e) if e.status == EniStatus::Available => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    world.delete_eni(&EniId::new(&old)).await.unwrap();

    let new = wait_for("a new ENI in the annotation", || async {
        let pod = env.pod("victim").await.unwrap();
        let ids = annotated_ids(&pod);
        let problems = env.eni_problems(false).await;
        if ids.len() == 1 && ids[0] != old && problems.is_empty() {
            Ok(ids[0].clone())
        } else {
            Err(format!("annotation {ids:?}, problems {problems:?}"))
        }
    })
    .await;
    let eni = env.eni(&new).unwrap();
    assert_eq!(eni.instance_id.as_ref(), Some(&instance));
    assert_eq!(
        eni.tags.get(tag::POD_NAME).map(String::as_str),
        Some("victim")
    );
    env.shutdown().await;
}

// ---- 7. one bad pod does not block the others -------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_in_a_zone_without_subnets_offers_no_eni_and_says_why_while_others_serve() {
    let mut env = Env::start(Tunables::default()).await;
    env.add_node("h-node", "ecs.c6.xlarge", ZONE_H).await;
    env.add_node("k-node", "ecs.c6.xlarge", ZONE_K).await;
    env.start_replica().await;
    env.create_pod("stranded", 1, Some("k-node")).await;
    env.create_pod("fine", 1, Some("h-node")).await;
    let warned = wait_for(
        "EniCapacityUnknown on the node of the unserved zone",
        || async {
            let events = env.events_about("k-node").await;
            match events
                .iter()
                .find(|(t, r, _)| t == "Warning" && r == "EniCapacityUnknown")
            {
                Some((_, _, m)) => Ok(m.clone()),
                None => Err(format!("{events:?}")),
            }
        },
    )
    .await;
    assert!(
        warned.contains("eni.subnets") && warned.contains(ZONE_K),
        "{warned}"
    );
    assert_eq!(
        advertised(&env.node("k-node").await),
        (Some("0".to_owned()), Some("0".to_owned()))
    );
    // The scheduler, not a failing allocation, keeps the pod off that node.
    let why = wait_for("FailedScheduling on the stranded pod", || async {
        let events = env.events_about("stranded").await;
        match events
            .iter()
            .find(|(t, r, _)| t == "Warning" && r == "FailedScheduling")
        {
            Some((_, _, m)) => Ok(m.clone()),
            None => Err(format!("{events:?}")),
        }
    })
    .await;
    assert!(why.contains("1 Insufficient aliyun/eni"), "{why}");
    wait_for("the good pod running with its ENI", || async {
        let pod = env.pod("fine").await.unwrap();
        let running = pod.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running");
        if running && allocation(&pod).is_some() {
            Ok(())
        } else {
            Err(format!("{:?}", pod.status))
        }
    })
    .await;
    check_allocation(&env, "fine", true).await;
    let stranded = env.pod("stranded").await.unwrap();
    assert!(allocation(&stranded).is_none());
    assert_eq!(
        stranded.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Pending")
    );
    let uid = stranded.uid().unwrap();
    assert!(
        !env.cluster_enis()
            .iter()
            .any(|e| e.tags.get(tag::POD_UID) == Some(&uid)),
        "no ENI may be made for a pod that cannot get one"
    );
    env.shutdown().await;
}

/// A node whose zone's vSwitches have no address left advertises no ENI
/// (capacity counts the subnets' free addresses), so its ENI pod stays
/// Pending with the scheduler's reason instead of being bound and failing;
/// a node of another zone serves at once; once an address is freed the
/// recount lets the pod in and it gets its ENI there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_of_an_exhausted_vswitch_offers_no_eni_until_an_address_is_freed() {
    let mut env = Env::start(Tunables::default()).await;
    env.add_node("j-node", "ecs.c6.xlarge", ZONE_J).await;
    env.add_node("h-node", "ecs.c6.xlarge", ZONE_H).await;
    // Someone else's ENIs take every address of vsw-j1.
    let mut squatters = Vec::new();
    for n in 0.. {
        let free = env
            .subnets()
            .into_iter()
            .find(|s| s.id.as_str() == "vsw-j1")
            .unwrap()
            .free_ips;
        if free == 0 {
            break;
        }
        assert!(n < 8, "vsw-j1 does not fill up");
        let e = eni_by_hand_in(&env, "vsw-j1", &format!("squat-{n}"), Tags::new(), None).await;
        squatters.push(e);
    }
    env.start_replica().await;
    // ecs.c6.xlarge: 2 secondary ENIs; no address in zone j.
    wait_capacity(&env, &[("j-node", "0"), ("h-node", "2")]).await;
    env.create_pod("starved", 1, Some("j-node")).await;
    env.create_pod("fed", 1, Some("h-node")).await;
    let why = wait_for("FailedScheduling on the starved pod", || async {
        let events = env.events_about("starved").await;
        events
            .iter()
            .find(|(t, r, _)| t == "Warning" && r == "FailedScheduling")
            .map(|(_, _, m)| m.clone())
            .ok_or(format!("{events:?}"))
    })
    .await;
    assert!(why.contains("Insufficient aliyun/eni"), "{why}");
    wait_for("the other pod's ENI", || async {
        match allocation(&env.pod("fed").await.unwrap()) {
            Some(_) => Ok(()),
            None => Err("no allocation yet".to_string()),
        }
    })
    .await;
    check_allocation(&env, "fed", true).await;
    let starved = env.pod("starved").await.unwrap();
    assert_eq!(
        starved.spec.as_ref().and_then(|s| s.node_name.clone()),
        None,
        "bound to a node that cannot serve it"
    );
    assert!(
        !env.events_about("starved")
            .await
            .iter()
            .any(|(_, r, _)| r == "AllocIPFailed"),
        "the controller tried to serve a pod the scheduler should have kept off"
    );

    // An address comes back: the next recount (capacity resync, 60 s; the
    // subnet listing is cached up to 30 s) lets the pod in.
    let freed = squatters.pop().unwrap();
    env.world().delete_eni(&freed.id).await.unwrap();
    env.wait_settled_within(
        "the starved pod after an address was freed",
        Duration::from_secs(180),
    )
    .await;
    check_allocation(&env, "starved", true).await;
    let eni = env.cluster_enis();
    assert!(
        eni.iter().any(|e| e.subnet_id.as_str() == "vsw-j1"),
        "{eni:?}"
    );
    // One free address: j-node now holds one ENI pod and offers no more.
    assert_eq!(
        advertised(&env.node("j-node").await).0.as_deref(),
        Some("1")
    );
    env.shutdown().await;
}

// ---- review fixes: requests and annotations the controller must not trust --

/// A pod bound without the scheduler (`spec.nodeName` preset) that asks for
/// far more ENIs than its node offers is refused before anything is made,
/// with an AllocIPFailed that says so; the vSwitch and the quota are spared.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_preset_node_asked_for_more_enis_than_it_offers_makes_none() {
    let mut env = Env::start(Tunables::default()).await;
    env.add_node("a", "ecs.c6.xlarge", ZONE_H).await;
    env.start_replica().await;
    wait_capacity(&env, &[("a", "2")]).await;
    let free_before: Vec<_> = env.subnets().iter().map(|s| s.free_ips).collect();
    let pod: Pod = serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "greedy", "namespace": "default"},
        "spec": {"nodeName": "a", "containers": [{"name": "app", "image": "registry.k8s.io/pause:3.9",
            "resources": {"limits": {RESOURCE: "500"}}}]},
    }))
    .unwrap();
    env.pods()
        .create(&kube::api::PostParams::default(), &pod)
        .await
        .unwrap();
    let message = wait_for("an AllocIPFailed Event about the request", || async {
        let events = env.events_about("greedy").await;
        events
            .iter()
            .find(|(_, reason, _)| reason == "AllocIPFailed")
            .map(|(_, _, m)| m.clone())
            .ok_or(format!("{events:?}"))
    })
    .await;
    assert!(message.contains("asks for 500"), "{message}");
    assert!(message.contains("offers 2"), "{message}");
    assert!(env.cluster_enis().is_empty(), "{:?}", env.cluster_enis());
    let free_after: Vec<_> = env.subnets().iter().map(|s| s.free_ips).collect();
    assert_eq!(free_before, free_after);
    let greedy = env.pod("greedy").await.unwrap();
    assert!(greedy.finalizers().is_empty(), "{:?}", greedy.finalizers());
    env.shutdown().await;
}

/// A pod created from another pod's YAML carries that pod's allocation
/// annotation (but not our finalizer): it gets an ENI of its own, tagged
/// with its own uid, and the other pod keeps its ENI.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_carrying_a_copied_allocation_gets_its_own_eni() {
    let mut env = Env::start(Tunables::default()).await;
    env.add_node("a", "ecs.c6.xlarge", ZONE_H).await;
    env.start_replica().await;
    env.create_pod("original", 1, None).await;
    env.wait_settled("the first ENI pod").await;
    let original = env.pod("original").await.unwrap();
    let copied = original.annotations()[controller::eni::ALLOCATION_ANNOTATION].clone();
    let original_eni = annotated_ids(&original).remove(0);

    let copy: Pod = serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "copy", "namespace": "default",
            "annotations": {controller::eni::ALLOCATION_ANNOTATION: copied}},
        "spec": {"containers": [{"name": "app", "image": "registry.k8s.io/pause:3.9",
            "resources": {"limits": {RESOURCE: "1"}}}]},
    }))
    .unwrap();
    let created = env
        .pods()
        .create(&kube::api::PostParams::default(), &copy)
        .await
        .unwrap();
    let uid = created.uid().unwrap();
    let own = wait_for("the copy's own ENI in its annotation", || async {
        let pod = env.pod("copy").await.unwrap();
        let ids = annotated_ids(&pod);
        match ids.first() {
            Some(id) if id != &original_eni => Ok(id.clone()),
            _ => Err(format!("annotation {ids:?}")),
        }
    })
    .await;
    let eni = env.eni(&own).unwrap();
    assert_eq!(eni.tags.get(tag::POD_UID), Some(&uid));
    assert_eq!(eni.status, EniStatus::InUse);
    let still = env.pod("original").await.unwrap();
    assert_eq!(annotated_ids(&still), std::slice::from_ref(&original_eni));
    assert_eq!(env.eni(&original_eni).unwrap().status, EniStatus::InUse);
    env.shutdown().await;
}

/// EC2's listings by tag lag behind creates. GC runs every second while the
/// pod's new ENI is still missing from them: it must look the annotated ENI
/// up by id instead of calling the allocation vanished and making a second.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listing_that_lags_behind_creates_never_makes_a_second_eni() {
    let mut env = Env::start(Tunables {
        tag_listing_lag_ms: 15_000,
        ..Tunables::quick_gc()
    })
    .await;
    env.add_node("a", "ecs.c6.xlarge", ZONE_H).await;
    env.start_replica().await;
    env.create_pod("fresh", 1, None).await;
    let first = wait_for("the pod's allocation", || async {
        let pod = env.pod("fresh").await.unwrap();
        annotated_ids(&pod)
            .first()
            .cloned()
            .ok_or_else(|| "no annotation yet".to_owned())
    })
    .await;
    // Several GC passes while the listing by tag still hides the ENI.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let enis = env.cluster_enis();
    assert_eq!(enis.len(), 1, "{enis:?}");
    assert_eq!(enis[0].id.as_str(), first);
    let pod = env.pod("fresh").await.unwrap();
    assert_eq!(annotated_ids(&pod), [first]);
    env.shutdown().await;
}

/// A Deployment's pod bound to a node whose vSwitch ran out of addresses
/// after the node was counted:
/// once its node has failed it for `evictAfterSeconds` without a break it is
/// evicted (given up on plainly, in an Event) so the Deployment makes a new
/// pod; a bare pod in the same spot is told why and left alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_its_node_can_never_serve_is_evicted_when_a_controller_owns_it() {
    let mut env = Env::start(Tunables {
        evict_after_seconds: 3,
        ..Tunables::default()
    })
    .await;
    env.add_node("j-node", "ecs.c6.xlarge", ZONE_J).await;
    // The node is counted while vsw-j1 has addresses; then someone else
    // takes them all. Until a create finds the vSwitch empty (or the
    // subnet listing, cached 30 s, is read again) the count stands, so the
    // scheduler places both pods there and the controller cannot serve
    // them; after that the node offers none.
    env.start_replica().await;
    wait_capacity(&env, &[("j-node", "2")]).await;
    while env
        .subnets()
        .iter()
        .any(|s| s.id.as_str() == "vsw-j1" && s.free_ips > 0)
    {
        let n = env.cluster_enis().len() + env.world().enis().len();
        eni_by_hand_in(&env, "vsw-j1", &format!("fill-{n}"), Tags::new(), None).await;
    }
    let deployments: kube::Api<k8s_openapi::api::apps::v1::Deployment> =
        kube::Api::namespaced(env.client.clone(), "default");
    let deployment = serde_json::from_value(serde_json::json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}},
                "spec": {"nodeSelector": {"kubernetes.io/hostname": "j-node"},
                    "containers": [{"name": "app", "image": "registry.k8s.io/pause:3.9",
                        "resources": {"limits": {RESOURCE: "1"}}}]}}}
    }))
    .unwrap();
    // A bare pod beside the Deployment's: told why, left alone.
    env.create_pod("bare", 1, Some("j-node")).await;
    deployments
        .create(&kube::api::PostParams::default(), &deployment)
        .await
        .unwrap();
    let told = wait_for("the bare pod told why", || async {
        let events = env.events_about("bare").await;
        events
            .iter()
            .find(|(_, _, n)| n.contains("has no controller to make it again"))
            .map(|(_, _, n)| n.clone())
            .ok_or(format!("{events:?}"))
    })
    .await;
    assert!(
        told.contains("free an ENI slot or subnet address on node j-node"),
        "{told}"
    );
    assert!(env.pod("bare").await.is_some());

    let (evicted, note) = wait_for("a pod of web evicted with a plain Event", || async {
        let events = kube::Api::<k8s_openapi::api::core::v1::Event>::all(env.client.clone())
            .list(&Default::default())
            .await
            .unwrap();
        events
            .items
            .iter()
            .find(|e| {
                e.message
                    .as_deref()
                    .is_some_and(|m| m.contains("evicted it so its controller makes a new one"))
            })
            .map(|e| {
                (
                    e.involved_object.name.clone().unwrap_or_default(),
                    e.message.clone().unwrap_or_default(),
                )
            })
            .ok_or_else(|| format!("{} events", events.items.len()))
    })
    .await;
    assert!(evicted.starts_with("web-"), "{evicted}");
    assert!(note.contains("has failed this pod for"), "{note}");
    // Why: the last failure, either the empty vSwitch or, once the node was
    // counted again without addresses, its capacity of 0.
    assert!(
        note.contains("vsw-j1") || note.contains("node j-node offers 0"),
        "{note}"
    );
    wait_for("the evicted pod gone and a new one made", || async {
        let names: Vec<String> = env
            .pods()
            .list(&Default::default())
            .await
            .unwrap()
            .items
            .iter()
            .map(|p| p.name_any())
            .collect();
        let replaced = names.iter().any(|n| n.starts_with("web-") && *n != evicted);
        if !names.contains(&evicted) && replaced {
            Ok(())
        } else {
            Err(format!("{names:?}"))
        }
    })
    .await;
    // The node is counted again: no address, no ENI offered, so the new pod
    // waits for the scheduler rather than for the controller.
    wait_capacity(&env, &[("j-node", "0")]).await;
    assert!(env.cluster_enis().is_empty());
    env.shutdown().await;
}

// ---- attach concurrency ----------------------------------------------------

/// A burst of exclusive-ENI pods on one node, each ENI taking 2 s to attach.
async fn burst_on_one_node(tunables: Tunables, pods: usize) -> (Env, InstanceId) {
    let mut env = Env::start(Tunables {
        attach_delay_ms: 2000,
        ..tunables
    })
    .await;
    // 6 ENIs incl. the primary: 5 pods' worth.
    let instance = env.add_node("big", "ecs.g6.3xlarge", ZONE_H).await;
    env.start_replica().await;
    wait_capacity(&env, &[("big", "5")]).await;
    for n in 0..pods {
        env.create_pod(&format!("burst-{n}"), 1, None).await;
    }
    env.wait_settled("the burst").await;
    for n in 0..pods {
        check_allocation(&env, &format!("burst-{n}"), true).await;
    }
    (env, instance)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_eni_pods_on_one_node_is_attached_concurrently_within_the_bound() {
    let (env, instance) = burst_on_one_node(
        Tunables {
            attach_concurrency: 3,
            ..Tunables::default()
        },
        5,
    )
    .await;
    let most = env.world().max_eni_ops_in_flight(&instance);
    assert!(
        (2..=3).contains(&most),
        "attaches in flight on the node at once: {most}, want more than one and at most eni.attachConcurrency (3)"
    );
    assert_eq!(env.world().eni_ops_refused_busy(), 0);
    env.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attaches_a_busy_instance_refuses_are_retried_and_every_pod_gets_its_eni() {
    let (env, instance) = burst_on_one_node(
        Tunables {
            eni_ops_per_instance: 2,
            attach_concurrency: 5,
            ..Tunables::default()
        },
        5,
    )
    .await;
    let world = env.world();
    assert!(
        world.eni_ops_refused_busy() > 0,
        "the cloud took 2 in flight, the controller sent up to 5: some attach must have been refused"
    );
    assert!(world.max_eni_ops_in_flight(&instance) <= 2);
    // Five ENIs for five pods, all on the node, none left over.
    let enis = env.cluster_enis();
    assert_eq!(enis.len(), 5, "{enis:?}");
    assert!(enis
        .iter()
        .all(|e| e.instance_id.as_ref() == Some(&instance) && e.status == EniStatus::InUse));
    // The refusals were waited out, not reported as failures.
    for n in 0..5 {
        let name = format!("burst-{n}");
        let warnings: Vec<_> = env
            .events_about(&name)
            .await
            .into_iter()
            .filter(|(t, _, _)| t == "Warning")
            .collect();
        assert!(warnings.is_empty(), "{name}: {warnings:?}");
    }
    env.shutdown().await;
}
