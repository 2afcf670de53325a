//! The default scenario's ENI act, end to end through `Sim`: the real
//! controller over HTTP against the fake apiserver (scheduler, kubelet) and
//! the Alibaba OpenAPI mock. Asserts what the documented case shows a user:
//! one ecs.c6.xlarge advertises 2 ENIs, two pods run with VPC IPs of the
//! vSwitch, two more stay Pending with the scheduler's exact message, and
//! deleting a running pod lets one pending pod start.

use controller::eni::{PodAllocation, ALLOCATION_ANNOTATION, RELEASE_FINALIZER};
use controller::simulate::scenario::{Scenario, DEFAULT_SCENARIO};
use controller::simulate::{instance_for, Sim};
use ipnet::Ipv4Net;
use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, ListParams};
use kube::ResourceExt;
use providers::model::EniStatus;
use std::net::Ipv4Addr;

const PENDING_TEXT: &str = "0/1 nodes are available: 1 Insufficient aliyun/eni.";

async fn pods_of(sim: &Sim, app: &str) -> Vec<Pod> {
    let pods: Api<Pod> = Api::namespaced(sim.client().clone(), "default");
    pods.list(&ListParams::default().labels(&format!("app={app}")))
        .await
        .unwrap()
        .items
}

fn phase(p: &Pod) -> String {
    p.status
        .as_ref()
        .and_then(|s| s.phase.clone())
        .unwrap_or_default()
}

/// FailedScheduling notes about a pod.
async fn failed_scheduling(sim: &Sim, pod: &Pod) -> Vec<String> {
    let events: Api<Event> = Api::all(sim.client().clone());
    events
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|e| {
            e.reason.as_deref() == Some("FailedScheduling")
                && e.regarding.as_ref().and_then(|r| r.uid.clone()) == pod.uid()
        })
        .map(|e| e.note.unwrap_or_default())
        .collect()
}

/// A Running ENI pod: its IP is its ENI's, from the vSwitch, and the ENI is
/// in use on the pod's node's instance.
fn assert_runs_on_its_eni(sim: &Sim, pod: &Pod, vswitch: Ipv4Net) {
    assert_eq!(phase(pod), "Running", "{}", pod.name_any());
    let alloc = PodAllocation::parse(&pod.annotations()[ALLOCATION_ANNOTATION]).unwrap();
    let ip: Ipv4Addr = pod
        .status
        .as_ref()
        .and_then(|s| s.pod_ip.clone())
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(ip.to_string(), alloc.first.ip);
    assert!(vswitch.contains(&ip), "{ip} not in {vswitch}");
    let node = pod.spec.as_ref().unwrap().node_name.clone().unwrap();
    let eni = sim
        .world()
        .enis()
        .into_iter()
        .find(|e| e.id.as_str() == alloc.first.eni_id)
        .expect("the annotated ENI exists");
    assert_eq!(eni.status, EniStatus::InUse);
    assert_eq!(
        eni.instance_id.map(|i| i.to_string()),
        Some(instance_for(&node))
    );
    assert_eq!(eni.primary_ip, ip);
    assert!(pod.finalizers().iter().any(|f| f == RELEASE_FINALIZER));
}

fn secondary_enis(sim: &Sim) -> Vec<providers::model::Eni> {
    sim.world()
        .enis()
        .into_iter()
        .filter(|e| e.device_index != Some(0))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_eni_act_runs_two_pods_keeps_two_pending_and_starts_one_after_a_delete() {
    controller::run::install_crypto_provider();
    let acts = Scenario::parse_acts(DEFAULT_SCENARIO).unwrap();
    let act = acts
        .into_iter()
        .find(|a| a.eni_enabled())
        .expect("the default scenario has an ENI act");
    let vswitch = act.zones[0].vswitch_cidr;
    let steps = act.steps.clone();
    let mut sim = Sim::start(act.clone()).await.unwrap();
    sim.mark_phase_start();
    sim.start_controller().await.unwrap();
    for g in &act.node_groups {
        sim.add_nodes(g, None).await.unwrap();
    }
    sim.phase("join", false).await.unwrap();
    assert!(sim.phases[0].converged, "capacity never advertised");
    let nodes: Api<Node> = Api::all(sim.client().clone());
    let node = nodes.get("node-eni-1").await.unwrap();
    let status = node.status.unwrap();
    assert_eq!(status.capacity.unwrap()["aliyun/eni"].0, "2");
    assert_eq!(status.allocatable.unwrap()["aliyun/eni"].0, "2");

    // eni-a: both pods run, each on its own ENI with a vSwitch IP.
    sim.apply_step(&steps[0]).await.unwrap();
    sim.phase("eni-a", false).await.unwrap();
    assert!(sim.phases[1].converged);
    let a = pods_of(&sim, "eni-a").await;
    assert_eq!(a.len(), 2);
    for p in &a {
        assert_runs_on_its_eni(&sim, p, vswitch);
    }
    assert_ne!(
        a[0].annotations()[ALLOCATION_ANNOTATION],
        a[1].annotations()[ALLOCATION_ANNOTATION]
    );
    assert_eq!(secondary_enis(&sim).len(), 2);

    // eni-b: no ENI left, both Pending with the scheduler's exact words.
    sim.apply_step(&steps[1]).await.unwrap();
    sim.phase("eni-b", false).await.unwrap();
    assert!(sim.phases[2].converged);
    let b = pods_of(&sim, "eni-b").await;
    assert_eq!(b.len(), 2);
    for p in &b {
        assert_eq!(phase(p), "Pending");
        assert!(p.spec.as_ref().unwrap().node_name.is_none());
        assert_eq!(failed_scheduling(&sim, p).await, [PENDING_TEXT]);
    }
    assert_eq!(secondary_enis(&sim).len(), 2, "no ENI for unscheduled pods");

    // Delete one running pod: its ENI goes, and the oldest pending pod (of
    // eni-b) starts on a new ENI; eni-a's replacement waits in turn.
    let deleted_eni = {
        let mut a = pods_of(&sim, "eni-a").await;
        a.sort_by_key(|p| p.name_any());
        PodAllocation::parse(&a[0].annotations()[ALLOCATION_ANNOTATION])
            .unwrap()
            .first
            .eni_id
    };
    sim.apply_step(&steps[2]).await.unwrap();
    sim.phase("delete", false).await.unwrap();
    assert!(sim.phases[3].converged);
    assert!(
        !sim.world()
            .enis()
            .iter()
            .any(|e| e.id.as_str() == deleted_eni),
        "the deleted pod's ENI is deleted in the cloud"
    );
    let b = pods_of(&sim, "eni-b").await;
    let running: Vec<&Pod> = b.iter().filter(|p| phase(p) == "Running").collect();
    assert_eq!(running.len(), 1, "exactly one pending pod starts");
    assert_runs_on_its_eni(&sim, running[0], vswitch);
    let a = pods_of(&sim, "eni-a").await;
    assert_eq!(a.len(), 2, "the Deployment replaced the deleted pod");
    assert_eq!(a.iter().filter(|p| phase(p) == "Running").count(), 1);
    let waiting: Vec<&Pod> = a
        .iter()
        .chain(b.iter())
        .filter(|p| phase(p) == "Pending")
        .collect();
    assert_eq!(waiting.len(), 2);
    for p in waiting {
        assert!(failed_scheduling(&sim, p)
            .await
            .contains(&PENDING_TEXT.to_owned()));
    }
    assert_eq!(secondary_enis(&sim).len(), 2);
    // The act's figures saw both allocations of eni-a and the one after
    // the delete.
    assert_eq!(sim.phases[1].allocations.as_ref().unwrap().pods, 2);
    assert_eq!(sim.phases[3].allocations.as_ref().unwrap().pods, 1);
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_killed_after_creating_an_eni_leaves_no_leak_once_a_new_one_runs() {
    controller::run::install_crypto_provider();
    let act = Scenario::parse_acts(DEFAULT_SCENARIO)
        .unwrap()
        .into_iter()
        .find(|a| a.eni_enabled())
        .unwrap();
    let mut sim = Sim::start(act.clone()).await.unwrap();
    let crash = sim
        .start_controller_crashing_at(controller::eni::Step::EniCreated)
        .await
        .unwrap();
    for g in &act.node_groups {
        sim.add_nodes(g, None).await.unwrap();
    }
    sim.apply_step(&act.steps[0]).await.unwrap();
    for _ in 0..200 {
        if crash.fired() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(crash.fired(), "the replica never reached EniCreated");
    let created = secondary_enis(&sim);
    assert!(!created.is_empty(), "the crash came after a create");

    // A new replica finishes the work: both pods run, one ENI each, and no
    // ENI tagged for the cluster is left without a pod (the phase checks it).
    sim.restart_controller().await.unwrap();
    sim.phase("after restart", false).await.unwrap();
    assert!(sim.phases[0].converged);
    let a = pods_of(&sim, "eni-a").await;
    assert_eq!(a.len(), 2);
    for p in &a {
        assert_runs_on_its_eni(&sim, p, act.zones[0].vswitch_cidr);
    }
    let enis = secondary_enis(&sim);
    assert_eq!(enis.len(), 2, "{enis:?}");
    for e in &created {
        assert!(
            enis.iter().any(|x| x.id == e.id),
            "the ENI created before the crash was reused, not leaked: {}",
            e.id
        );
    }
    sim.shutdown().await;
}
