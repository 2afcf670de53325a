//! `simulate --dataplane` on the default scenario: packets in the lab agree
//! with what the controller reports (routed podCIDRs answer, the node whose
//! podCIDR a foreign route holds does not, ENI pods answer on their ENI's
//! address), and the check fails when a route disappears behind the
//! controller's back. Root only (CI runs as root): elsewhere it prints why
//! and passes.

use controller::simulate::dataplane::{self, Dataplane};
use controller::simulate::scenario::{Scenario, DEFAULT_SCENARIO};
use controller::simulate::{Sim, TABLE};
use ipam::ids::{InstanceId, RouteTableId};
use providers::model::NextHop;
use providers::Cloud;

fn namespaces_of(prefix: &str) -> Vec<String> {
    std::fs::read_dir("/run/netns")
        .map(|dir| {
            dir.filter_map(|e| e.ok())
                .filter_map(|e| e.file_name().into_string().ok())
                .filter(|n| n.starts_with(&format!("{prefix}-")))
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn packets_agree_with_the_controller_in_both_default_acts() {
    if let Err(reason) = dataplane::available() {
        eprintln!("skipping: {reason}");
        return;
    }
    controller::run::install_crypto_provider();
    let acts = Scenario::parse_acts(DEFAULT_SCENARIO).unwrap();

    // Act 1, routes: six routed nodes answer, node-late (its podCIDR held by
    // a foreign route) is reported unrouted and does not.
    let mut sim = Sim::start(acts[0].clone()).await.unwrap();
    let lab = Dataplane::start(sim.world().clone()).await.unwrap();
    sim.play(false, &mut |_| {}).await.unwrap();
    let checked = lab.check(&sim).await.unwrap();
    assert!(checked.agrees());
    assert_eq!(checked.routes.len(), 6);
    let silent: Vec<&str> = checked
        .routes
        .iter()
        .filter(|c| !c.expected && !c.answered)
        .map(|c| c.what.as_str())
        .collect();
    assert_eq!(silent.len(), 1, "{silent:?}");
    assert!(silent[0].contains("node-late-1"), "{silent:?}");

    // The controller stops; a route goes behind its back: the node still
    // says routed, packets say otherwise.
    sim.kill_controller().await;
    let table = RouteTableId::new(TABLE);
    let entry = sim
        .world()
        .route_entries(&table)
        .into_iter()
        .find(|e| e.next_hop == NextHop::Instance(InstanceId::new("i-nodeh1")) && !e.system)
        .unwrap();
    sim.world()
        .delete_route_entries(&table, &[(entry.destination, InstanceId::new("i-nodeh1"))])
        .await
        .unwrap();
    let checked = lab.check(&sim).await.unwrap();
    assert!(!checked.agrees());
    let mismatched: Vec<&str> = checked
        .routes
        .iter()
        .filter(|c| c.expected != c.answered)
        .map(|c| c.what.as_str())
        .collect();
    assert_eq!(mismatched.len(), 1, "{mismatched:?}");
    assert!(mismatched[0].contains("node-h-1"), "{mismatched:?}");
    lab.teardown().await.unwrap();
    sim.shutdown().await;

    // Act 2, ENIs: both running ENI pods answer on their ENI's address.
    let mut sim = Sim::start(acts[1].clone()).await.unwrap();
    let lab = Dataplane::start(sim.world().clone()).await.unwrap();
    sim.play(false, &mut |_| {}).await.unwrap();
    let checked = lab.check(&sim).await.unwrap();
    assert!(
        checked.agrees(),
        "{:?}",
        checked.enis.iter().map(|c| &c.note).collect::<Vec<_>>()
    );
    assert_eq!(checked.enis.len(), 2);
    lab.teardown().await.unwrap();
    sim.shutdown().await;
    assert_eq!(namespaces_of("vsim"), Vec::<String>::new());
}
