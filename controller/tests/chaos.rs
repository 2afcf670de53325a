//! A short chaos run (the long one is `scenarios/chaos.yaml` under
//! `simulate`): the real `vpc-eni-controller run` binary, two processes
//! electing a leader, SIGKILLed at random moments (mostly the Lease
//! holder), under cloud fault windows, watch expiries (410 Gone) and churn,
//! in routes, exclusive-ENI and shared-ENI mode at once. No invariant may break: foreign objects
//! untouched, one IP one owner, one leader writing, and once quiet no ENI
//! without its pod, every node routed, every ENI pod served or Pending with
//! the scheduler's reason.

use controller::simulate::chaos;
use controller::simulate::scenario::Scenario;
use controller::simulate::Sim;
use std::path::Path;

const ACT: &str = r#"
name: chaos in the test suite
region: cn-hangzhou
zones:
  - {zone: cn-hangzhou-h, vswitchCidr: 192.168.0.0/24}
  - {zone: cn-hangzhou-i, vswitchCidr: 192.168.16.0/24}
nodeGroups:
  - {prefix: h, count: 2, type: ecs.c6.xlarge, zone: cn-hangzhou-h}
  - {prefix: i, count: 2, type: ecs.c6.xlarge, zone: cn-hangzhou-i}
eni: {resourceName: aliyun/eni, gcIntervalSeconds: 3, gcGraceSeconds: 3, capacityResyncSeconds: 3, pollIntervalMs: 200}
faults: {seed: 5, attachDelayMs: 300, detachDelayMs: 200, routeDelayMs: 200}
aggregateWindowMs: 200
chaos:
  durationSeconds: 45
  seed: 5
  killEverySeconds: 5
  killLeaderShare: 0.8
  restartWithinMs: 1000
  watchExpireEverySeconds: 6
  faultEverySeconds: 2
  faultWindowSeconds: 3
  churnEverySeconds: 2
  maxEniPods: 6
  settleSeconds: 150
  leaseDurationSeconds: 3
  sharedEni: true
"#;

/// The two runs take two controller processes each: one at a time.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn run(edit: impl FnOnce(&mut chaos::ChaosSpec)) -> (chaos::ChaosReport, String) {
    controller::run::install_crypto_provider();
    let acts = Scenario::parse_acts(ACT).unwrap();
    let scenario = acts.into_iter().next().unwrap();
    let mut spec = scenario.chaos.clone().unwrap();
    edit(&mut spec);
    // The self-test breaks invariants on purpose: its logs are not kept.
    let edit_expects_violations = spec.without_leader_election;
    let mut sim = Sim::start(scenario).await.unwrap();
    let binary = Path::new(env!("CARGO_BIN_EXE_vpc-eni-controller"));
    let mut lines = Vec::new();
    let report = chaos::run(&mut sim, spec, binary, &mut |l| lines.push(l.to_owned()))
        .await
        .unwrap();
    sim.shutdown().await;
    if let Some(dir) = &report.logs_kept {
        if report.invariant_violations == 0 || edit_expects_violations {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
    let json = serde_json::to_string_pretty(&chaos::json_block(&report)).unwrap();
    (report, format!("{json}\n{}", lines.join("\n")))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkills_faults_and_watch_expiries_break_no_invariant() {
    let _one = ONE_AT_A_TIME.lock().await;
    let (report, json) = run(|_| {}).await;
    assert_eq!(report.invariant_violations, 0, "{json}");
    // The chaos really happened: processes killed, the leader among them,
    // leadership changed hands, calls failed, watches ended.
    assert!(report.controller_kills >= 3, "{json}");
    assert!(report.leader_kills >= 1, "{json}");
    assert!(report.leaders >= 2, "{json}");
    assert!(report.faults_injected > 0, "{json}");
    assert!(report.watch_expiries >= 1, "{json}");
    assert!(report.writes_checked > 0, "{json}");
}

/// The checks can fail: with leader election off, both processes act as
/// leaders, and the log of mutating cloud requests shows it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_writing_without_a_lease_are_caught() {
    let _one = ONE_AT_A_TIME.lock().await;
    let (report, json) = run(|spec| {
        spec.without_leader_election = true;
        spec.duration_seconds = 15;
        spec.kill_every_seconds = 1000.0;
        spec.settle_seconds = 5;
    })
    .await;
    assert!(
        report
            .violations
            .iter()
            .any(|v| v.invariant == "one-leader-writes"),
        "{json}"
    );
}
