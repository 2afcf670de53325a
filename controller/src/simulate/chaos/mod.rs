//! Chaos, with no cooperation from the controller: the real
//! `vpc-eni-controller run` binary, as child processes (two replicas
//! electing a leader on a Lease), against the fake apiserver and the fake
//! Alibaba cloud served over HTTP on 127.0.0.1, for a bounded time, in routes
//! and ENI mode at once, while the cluster churns (ENI Deployments scale,
//! pods are deleted, nodes join and go) and, at random moments:
//!
//! - a controller process is killed with SIGKILL (most kills aimed at the
//!   Lease holder) and a new one started, as a Deployment would;
//! - a cloud API fails for a while (throttled, 5xx, conflict, or the answer
//!   lost after the change was made), or is slow;
//! - every watch of the apiserver ends with 410 Gone (history dropped).
//!
//! Invariants, checked every second (safety) and once everything is quiet
//! again at the end (liveness):
//!
//! - safety: no foreign route, ENI or IP is changed or deleted; no IP is on
//!   two pods, and no address on two ENIs; never two leaders writing (every
//!   mutating cloud request, logged with the access key of the process that
//!   sent it, arrives while that process holds the Lease, give or take the
//!   Lease observer's polling slack);
//! - liveness (after the chaos stops, within `settleSeconds`): no ENI of
//!   ours without a live pod (GC ran), every live node routed and no route
//!   of ours left for a node that is gone, every ENI pod Running on its ENI
//!   or Pending, unbound, with the scheduler's `FailedScheduling` reason.
//!
//! The checks are in [`invariants`]. The outcome is a [`ChaosReport`]: `{faultsInjected, controllerKills,
//! invariantViolations, violations: [...]}` and the counts behind them.

mod invariants;

use super::{instance_for, vswitch_id, Sim, CLUSTER_ID, SECURITY_GROUP, TABLE};
use crate::harness::crash::ControllerLease;
use anyhow::Context as _;
use invariants::{Foreign, LeaseHistory};
use ipam::ids::{ClusterId, IdempotencyToken, InstanceId, RouteTableId};
use ipnet::Ipv4Net;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use kube::ResourceExt;
use mocks::alibaba::auth::AccessKey;
use mocks::cloud::{ApiFault, FaultKind};
use providers::model::{CreateEniRequest, EniStatus, NewRouteEntry};
use providers::Cloud as _;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;
use tokio::process::{Child, Command};
use tokio::time::Instant;

/// The `chaos:` block of a scenario act: present means the act is a chaos
/// run instead of a sequence of steps.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ChaosSpec {
    /// How long faults, kills and churn go on.
    #[serde(default = "d_duration")]
    pub duration_seconds: u64,
    /// Seed of every random choice of the run (not of the processes).
    #[serde(default)]
    pub seed: u64,
    /// Controller processes running at once (one leads).
    #[serde(default = "d_replicas")]
    pub replicas: u32,
    /// Mean time between two SIGKILLs of a controller process.
    #[serde(default = "d_kill_every")]
    pub kill_every_seconds: f64,
    /// Share of the kills aimed at the process holding the Lease.
    #[serde(default = "d_leader_share")]
    pub kill_leader_share: f64,
    /// A killed process's replacement starts after up to this long.
    #[serde(default = "d_restart")]
    pub restart_within_ms: u64,
    /// Mean time between two expiries of every watch (410 Gone).
    #[serde(default = "d_watch_every")]
    pub watch_expire_every_seconds: f64,
    /// Mean time between two cloud fault windows.
    #[serde(default = "d_fault_every")]
    pub fault_every_seconds: f64,
    /// How long one fault window lasts.
    #[serde(default = "d_fault_window")]
    pub fault_window_seconds: f64,
    /// Share of the calls of the faulty API that fail in a window.
    #[serde(default = "d_fault_rate")]
    pub fault_rate: f64,
    /// Mean time between two changes of the cluster (the ENI or the plain
    /// Deployment scales, an ENI pod is deleted, a node joins or goes).
    #[serde(default = "d_churn_every")]
    pub churn_every_seconds: f64,
    /// The ENI Deployment scales between 0 and this many pods.
    #[serde(default = "d_max_eni_pods")]
    pub max_eni_pods: u32,
    /// After the chaos: how long everything may take to settle.
    #[serde(default = "d_settle")]
    pub settle_seconds: u64,
    /// The controllers' Lease duration (renewal every third of it).
    #[serde(default = "d_lease")]
    pub lease_duration_seconds: u32,
    /// Self-test of the checks only: every process runs without leader
    /// election, so all of them write at once and the one-leader check must
    /// report it. Never set for a real run.
    #[serde(default)]
    pub without_leader_election: bool,
    /// Nodes of the last node group run shared-ENI mode (labelled
    /// [`SHARED_LABEL`]`=shared`): their pods get secondary IPs from a warm
    /// pool of shared ENIs, beside exclusive ENIs and routes.
    #[serde(default)]
    pub shared_eni: bool,
}

/// The node label that puts a node in shared-ENI mode in a chaos run.
pub const SHARED_LABEL: &str = "vpc-eni.io/chaos-pool";

fn d_duration() -> u64 {
    600
}
fn d_replicas() -> u32 {
    2
}
fn d_kill_every() -> f64 {
    10.0
}
fn d_leader_share() -> f64 {
    0.7
}
fn d_restart() -> u64 {
    2000
}
fn d_watch_every() -> f64 {
    15.0
}
fn d_fault_every() -> f64 {
    4.0
}
fn d_fault_window() -> f64 {
    5.0
}
fn d_fault_rate() -> f64 {
    0.3
}
fn d_churn_every() -> f64 {
    3.0
}
fn d_max_eni_pods() -> u32 {
    6
}
fn d_settle() -> u64 {
    180
}
fn d_lease() -> u32 {
    6
}

/// One broken invariant.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Violation {
    /// Seconds since the chaos started.
    pub at_seconds: f64,
    pub invariant: String,
    pub detail: String,
}

/// What a chaos run did and found; the `chaos` block of the JSON report.
#[derive(Clone, Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ChaosReport {
    /// Cloud calls answered with an injected error (lost answers included).
    pub faults_injected: u64,
    /// Controller processes killed with SIGKILL.
    pub controller_kills: u32,
    /// Of those, killed while holding the Lease.
    pub leader_kills: u32,
    /// Times every watch was ended with 410 Gone.
    pub watch_expiries: u32,
    /// Fault windows opened (an API failing or slow for a while).
    pub fault_windows: u32,
    /// Changes of the cluster made (scale, pod deleted, node joined or gone).
    pub churn: u32,
    /// Distinct Lease holders seen.
    pub leaders: u32,
    /// Mutating cloud requests checked against the Lease.
    pub writes_checked: u64,
    /// Safety checks run during the chaos.
    pub checks: u64,
    /// At the end: ENI pods Running on their ENIs, ENI pods Pending with the
    /// scheduler's reason, and nodes routed.
    pub eni_pods_running: u32,
    pub eni_pods_pending: u32,
    /// At the end: pods Running on shared-ENI IPs (`sharedEni: true`).
    pub shared_pods_running: u32,
    pub nodes_routed: u32,
    /// Seconds of chaos, and of settling afterwards.
    pub chaos_seconds: f64,
    pub settle_seconds: f64,
    pub invariant_violations: usize,
    /// The first violations found (at most [`MAX_LISTED`]).
    pub violations: Vec<Violation>,
    /// Where the processes' logs were kept (a violation or an error), for
    /// the caller to show or remove.
    #[serde(skip)]
    pub logs_kept: Option<PathBuf>,
}

/// Violations listed in the report; all are counted.
pub const MAX_LISTED: usize = 50;

/// How often the Lease is read.
const LEASE_POLL: Duration = Duration::from_millis(50);

const ENI_DEPLOYMENT: &str = "chaos-eni";
const ROUTES_DEPLOYMENT: &str = "chaos-web";
/// APIs a fault window may hit.
const FAULTY_APIS: &[&str] = &[
    "CreateNetworkInterface",
    "AttachNetworkInterface",
    "DetachNetworkInterface",
    "DeleteNetworkInterface",
    "DescribeNetworkInterfaces",
    "DescribeInstances",
    "DescribeVSwitches",
    "DescribeRouteEntryList",
    "CreateRouteEntries",
    "DeleteRouteEntries",
];

/// One controller process and what identifies it to the fakes.
struct Process {
    identity: String,
    child: Child,
}

/// The chaos run of one act.
pub struct Chaos<'a> {
    sim: &'a mut Sim,
    spec: ChaosSpec,
    binary: PathBuf,
    dir: PathBuf,
    rng: StdRng,
    started: Instant,
    processes: Vec<Process>,
    incarnations: u32,
    lease: Arc<parking_lot::Mutex<LeaseHistory>>,
    writes_seen: usize,
    foreign: Option<Foreign>,
    extra_nodes: Vec<String>,
    next_node: u32,
    report: ChaosReport,
}

/// Run the act in `sim` as chaos with the controller binary at `binary`.
/// `say` hears what happens, a line at a time.
pub async fn run(
    sim: &mut Sim,
    spec: ChaosSpec,
    binary: &Path,
    say: &mut dyn FnMut(&str),
) -> anyhow::Result<ChaosReport> {
    let dir = std::env::temp_dir().join(format!("vpc-eni-chaos-{}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let mut chaos = Chaos {
        rng: StdRng::seed_from_u64(spec.seed),
        spec,
        binary: binary.to_owned(),
        dir: dir.clone(),
        sim,
        started: Instant::now(),
        processes: Vec::new(),
        incarnations: 0,
        lease: Default::default(),
        writes_seen: 0,
        foreign: None,
        extra_nodes: Vec::new(),
        next_node: 0,
        report: ChaosReport::default(),
    };
    let result = chaos.play(say).await;
    chaos.stop_all().await;
    if result.is_ok() && chaos.report.invariant_violations == 0 {
        let _ = std::fs::remove_dir_all(&dir);
    } else {
        say(&format!(
            "controller logs kept in {} (one file per process)",
            dir.display()
        ));
        chaos.report.logs_kept = Some(dir);
    }
    result.map(|()| chaos.report)
}

impl Chaos<'_> {
    fn elapsed(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }

    fn violation(&mut self, invariant: &str, detail: String) {
        tracing::warn!(invariant, %detail, "chaos: invariant broken");
        self.report.invariant_violations += 1;
        if self.report.violations.len() < MAX_LISTED {
            let at_seconds = (self.elapsed() * 10.0).round() / 10.0;
            self.report.violations.push(Violation {
                at_seconds,
                invariant: invariant.to_owned(),
                detail,
            });
        }
    }

    fn lease_of(&self) -> ControllerLease {
        ControllerLease::of(&self.config())
    }

    fn config(&self) -> crate::config::Config {
        let mut config = self.sim.config();
        let le = &mut config.controller.leader_election;
        le.enabled = !self.spec.without_leader_election;
        le.namespace = Some("kube-system".into());
        le.lease_duration_seconds = self.spec.lease_duration_seconds;
        le.renew_interval_seconds = (self.spec.lease_duration_seconds / 3).max(1);
        if self.spec.shared_eni {
            config.shared_eni = crate::config::SharedEniConfig {
                enabled: true,
                node_selector: [(SHARED_LABEL.to_owned(), "shared".to_owned())].into(),
                max_enis: 1,
                min_pool_size: 1,
                max_pool_size: 4,
                ip_cooldown_seconds: 2,
                excess_release_delay_seconds: 3,
                pool_sync_seconds: 2,
                ..Default::default()
            };
        }
        config
    }

    /// Whether a node is in shared-ENI mode in this run.
    pub(super) fn shared_node(&self, node: &k8s_openapi::api::core::v1::Node) -> bool {
        self.spec.shared_eni
            && node.labels().get(SHARED_LABEL).map(String::as_str) == Some("shared")
    }

    async fn play(&mut self, say: &mut dyn FnMut(&str)) -> anyhow::Result<()> {
        let config = self.config();
        let text = serde_yaml::to_string(&config)?;
        crate::config::Config::parse(&text)
            .map_err(|e| anyhow::anyhow!("the chaos config is refused: {e}"))?;
        std::fs::write(self.dir.join("config.yaml"), text)?;
        std::fs::write(
            self.dir.join("kubeconfig"),
            self.sim.harness.kube.api.kubeconfig_yaml(),
        )?;

        let groups = self.sim.scenario.node_groups.clone();
        for group in &groups {
            self.sim.add_nodes(group, None).await?;
        }
        if let (true, Some(last)) = (self.spec.shared_eni, groups.last()) {
            let nodes: Api<k8s_openapi::api::core::v1::Node> = Api::all(self.sim.client().clone());
            for i in 1..=last.count {
                nodes
                    .patch(
                        &format!("{}-{i}", last.prefix),
                        &PatchParams::default(),
                        &Patch::Merge(
                            serde_json::json!({"metadata": {"labels": {SHARED_LABEL: "shared"}}}),
                        ),
                    )
                    .await?;
            }
        }
        self.seed_foreign().await?;
        self.sim.create_deployment(ROUTES_DEPLOYMENT, 4).await?;
        self.sim.create_eni_deployment(ENI_DEPLOYMENT, 2, 1).await?;
        for _ in 0..self.spec.replicas {
            self.spawn()?;
        }
        let observer = self.observe_lease();
        say(&format!(
            "{} node(s), {} controller process(es) ({}), foreign route and ENIs seeded; chaos for {} s",
            self.sim.scenario.total_nodes(),
            self.spec.replicas,
            self.binary.display(),
            self.spec.duration_seconds
        ));

        self.started = Instant::now();
        let until = self.started + Duration::from_secs(self.spec.duration_seconds);
        let mut next_kill = self.after(self.spec.kill_every_seconds);
        let mut next_watch = self.after(self.spec.watch_expire_every_seconds);
        let mut next_fault = self.after(self.spec.fault_every_seconds);
        let mut next_churn = self.after(self.spec.churn_every_seconds);
        let mut next_check = Instant::now() + Duration::from_secs(1);
        let mut faults_end: Vec<(Instant, String)> = Vec::new();
        let mut restarts: Vec<Instant> = Vec::new();
        let mut last_say = Instant::now();
        while Instant::now() < until {
            let now = Instant::now();
            if now >= next_kill {
                self.kill_one().await;
                let delay = self.rng.random_range(0..=self.spec.restart_within_ms);
                restarts.push(now + Duration::from_millis(delay));
                next_kill = self.after(self.spec.kill_every_seconds);
            }
            restarts.retain(|at| *at > now || self.spawn().is_err());
            if now >= next_watch {
                self.sim.harness.kube.api.store().expire_watches();
                self.report.watch_expiries += 1;
                next_watch = self.after(self.spec.watch_expire_every_seconds);
            }
            if now >= next_fault {
                let api = self.open_fault_window();
                let window = Duration::from_secs_f64(self.spec.fault_window_seconds);
                faults_end.push((now + window, api));
                next_fault = self.after(self.spec.fault_every_seconds);
            }
            faults_end.retain(|(end, api)| {
                if *end <= now {
                    self.sim.world().set_fault(api, None);
                    false
                } else {
                    true
                }
            });
            if now >= next_churn {
                if let Err(e) = self.churn().await {
                    tracing::debug!(error = %e, "chaos: a change of the cluster failed; next one");
                }
                next_churn = self.after(self.spec.churn_every_seconds);
            }
            if now >= next_check {
                self.check_safety().await;
                next_check = now + Duration::from_secs(1);
            }
            if last_say.elapsed() >= Duration::from_secs(30) {
                last_say = Instant::now();
                say(&format!(
                    "{:>4.0} s: {} kills ({} of the leader), {} faults injected, {} watch expiries, {} violations",
                    self.elapsed(),
                    self.report.controller_kills,
                    self.report.leader_kills,
                    self.sim.world().faults_injected(),
                    self.report.watch_expiries,
                    self.report.invariant_violations
                ));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        self.report.chaos_seconds = self.elapsed();

        // Quiet: faults off, every replica back, the churn stops.
        for (_, api) in faults_end {
            self.sim.world().set_fault(&api, None);
        }
        while self.processes.len() < self.spec.replicas as usize {
            self.spawn()?;
        }
        self.report.faults_injected = self.sim.world().faults_injected();
        say(&format!(
            "chaos over after {:.0} s: {} kills ({} of the leader), {} faults injected, {} watch expiries; settling",
            self.report.chaos_seconds,
            self.report.controller_kills,
            self.report.leader_kills,
            self.report.faults_injected,
            self.report.watch_expiries
        ));
        let settle_started = Instant::now();
        let deadline = settle_started + Duration::from_secs(self.spec.settle_seconds);
        let mut good_in_a_row = 0;
        let mut last: Vec<(String, String)>;
        loop {
            self.check_safety().await;
            last = self.liveness().await?;
            good_in_a_row = if last.is_empty() {
                good_in_a_row + 1
            } else {
                0
            };
            if good_in_a_row >= 3 || Instant::now() >= deadline {
                break;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        self.report.settle_seconds = settle_started.elapsed().as_secs_f64();
        for (invariant, detail) in last {
            self.violation(&invariant, detail);
        }
        observer.abort();
        self.report.leaders = u32::try_from(self.lease.lock().holders()).unwrap_or(u32::MAX);
        Ok(())
    }

    /// An exponentially distributed delay of mean `mean` seconds from now.
    fn after(&mut self, mean: f64) -> Instant {
        let u: f64 = self.rng.random_range(0.0001..1.0);
        let secs = (-u.ln() * mean).min(mean * 5.0);
        Instant::now() + Duration::from_secs_f64(secs)
    }

    /// Start one controller process with its own identity and access key.
    fn spawn(&mut self) -> anyhow::Result<()> {
        self.incarnations += 1;
        let identity = format!("chaos-controller-{}", self.incarnations);
        let key = AccessKey::new(identity.clone(), format!("secret-of-{identity}"));
        self.sim.harness.cloud.front.keys().put(key.clone());
        let log = std::fs::File::create(self.dir.join(format!("{identity}.log")))?;
        let child = Command::new(&self.binary)
            .arg("run")
            .arg("--config")
            .arg(self.dir.join("config.yaml"))
            .arg("--kubeconfig")
            .arg(self.dir.join("kubeconfig"))
            .env("POD_NAME", &identity)
            .env("ALIBABA_CLOUD_ACCESS_KEY_ID", &key.id)
            .env("ALIBABA_CLOUD_ACCESS_KEY_SECRET", &key.secret)
            .env(
                "RUST_LOG",
                std::env::var("CHAOS_CONTROLLER_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("cannot start {}", self.binary.display()))?;
        self.processes.push(Process { identity, child });
        Ok(())
    }

    /// SIGKILL one process: the Lease holder with `killLeaderShare`, else
    /// any other.
    async fn kill_one(&mut self) {
        if self.processes.is_empty() {
            return;
        }
        let holder = self.lease.lock().holder();
        let leader = holder
            .as_ref()
            .and_then(|h| self.processes.iter().position(|p| &p.identity == h));
        let i = match leader {
            Some(i)
                if self
                    .rng
                    .random_bool(self.spec.kill_leader_share.clamp(0.0, 1.0)) =>
            {
                i
            }
            _ => self.rng.random_range(0..self.processes.len()),
        };
        let mut p = self.processes.remove(i);
        // Child::start_kill is SIGKILL on Unix: no handler runs, the Lease
        // is not handed back.
        let _ = p.child.start_kill();
        let _ = p.child.wait().await;
        self.report.controller_kills += 1;
        if holder.as_deref() == Some(p.identity.as_str()) {
            self.report.leader_kills += 1;
        }
        tracing::info!(identity = %p.identity, leader = holder.as_deref() == Some(p.identity.as_str()), "chaos: SIGKILL");
    }

    async fn stop_all(&mut self) {
        for p in &mut self.processes {
            let _ = p.child.start_kill();
            let _ = p.child.wait().await;
        }
        self.processes.clear();
    }

    /// Poll the Lease and record every change of holder.
    fn observe_lease(&self) -> tokio::task::JoinHandle<()> {
        let lease = self.lease_of();
        let api: Api<Lease> = Api::namespaced(self.sim.client().clone(), &lease.namespace);
        let history = self.lease.clone();
        tokio::spawn(async move {
            loop {
                let asked = invariants::nanos(std::time::SystemTime::now());
                match api.get_opt(&lease.name).await {
                    Ok(Some(l)) => {
                        let spec = l.spec.unwrap_or_default();
                        let acquired = spec.acquire_time.map(|t| t.0.as_nanosecond());
                        history
                            .lock()
                            .observe(spec.holder_identity, acquired, asked);
                    }
                    Ok(None) => history.lock().observe(None, None, asked),
                    Err(_) => {}
                }
                tokio::time::sleep(LEASE_POLL).await;
            }
        })
    }

    /// One API fails (or is slow) for a while; returns the API.
    fn open_fault_window(&mut self) -> String {
        let api = FAULTY_APIS[self.rng.random_range(0..FAULTY_APIS.len())].to_owned();
        let kinds = [
            FaultKind::Throttled,
            FaultKind::Transient,
            FaultKind::Conflict,
        ];
        let mutating = mocks::cloud::faults::is_mutating(&api);
        let fault = ApiFault {
            error_rate: self.spec.fault_rate,
            error_kind: kinds[self.rng.random_range(0..kinds.len())],
            latency_ms: if self.rng.random_bool(0.3) {
                self.rng.random_range(50..1500)
            } else {
                0
            },
            rate_per_second: None,
            // A change made and its answer lost: only mutating calls.
            after_effect: mutating && self.rng.random_bool(0.5),
        };
        tracing::info!(api = %api, ?fault, "chaos: fault window");
        self.sim.world().set_fault(&api, Some(fault));
        self.report.fault_windows += 1;
        api
    }

    /// Someone else's route, ENIs and secondary IPs, made before any
    /// controller runs.
    async fn seed_foreign(&mut self) -> anyhow::Result<()> {
        let world = self.sim.world().clone();
        let zone = self
            .sim
            .scenario
            .zones
            .first()
            .context("the chaos act needs a zone")?
            .zone
            .clone();
        let node = self
            .sim
            .scenario
            .node_groups
            .first()
            .map(|g| format!("{}-1", g.prefix))
            .context("the chaos act needs a node group")?;
        let instance = InstanceId::new(instance_for(&node));
        let table = RouteTableId::new(TABLE);
        let destination: Ipv4Net = "172.31.7.0/24".parse()?;
        let outcome = world
            .create_route_entries(
                &table,
                &[NewRouteEntry {
                    destination,
                    instance_id: instance.clone(),
                    name: "ops-team-static".into(),
                    description: "added by hand".into(),
                }],
            )
            .await?;
        if let Some((_, e)) = outcome.failed.first() {
            anyhow::bail!("foreign route: {e}");
        }
        let make = |token: &str, tags: &[(&str, &str)]| CreateEniRequest {
            subnet_id: vswitch_id(&zone),
            security_groups: vec![SECURITY_GROUP.into()],
            secondary_ip_count: 2,
            tags: tags
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            description: "not the controller's".into(),
            idempotency_token: IdempotencyToken::new(token),
        };
        // Attached to a node, untagged; loose with another team's tag; and
        // one of another cluster of this same controller.
        let attached = world.create_eni(&make("foreign-attached", &[])).await?;
        world.attach_eni(&attached.id, &instance).await?;
        world
            .create_eni(&make("foreign-loose", &[("team", "db")]))
            .await?;
        let other = ClusterId::new("another-cluster");
        let pod = ipam::eni::PodRef {
            namespace: "default".into(),
            name: "theirs".into(),
            uid: "uid-of-another-cluster".into(),
        };
        let tags: Vec<(String, String)> = ipam::eni::owned_eni_tags(&other, &pod, &node)
            .into_iter()
            .collect();
        let tags: Vec<(&str, &str)> = tags.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        world.create_eni(&make("foreign-cluster", &tags)).await?;
        // The attach settles asynchronously: wait for InUse.
        for _ in 0..100 {
            if world
                .enis()
                .iter()
                .any(|e| e.id == attached.id && e.status == EniStatus::InUse)
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let routes = world
            .route_entries(&table)
            .into_iter()
            .filter(|r| r.destination == destination)
            .collect();
        let cluster = ClusterId::new(CLUSTER_ID);
        let enis = world
            .enis()
            .into_iter()
            .filter(|e| e.device_index != Some(0) && !ipam::eni::is_owned(&e.tags, &cluster))
            .collect();
        self.foreign = Some(Foreign { routes, enis });
        Ok(())
    }

    /// One change of the cluster, chosen at random.
    async fn churn(&mut self) -> anyhow::Result<()> {
        self.report.churn += 1;
        let client = self.sim.client().clone();
        match self.rng.random_range(0..11) {
            10 => {
                // Plain pods (node podCIDR, or shared-ENI IPs on shared nodes).
                let replicas = self.rng.random_range(1..=8);
                let deployments: Api<Deployment> = Api::namespaced(client, "default");
                deployments
                    .patch(
                        ROUTES_DEPLOYMENT,
                        &PatchParams::default(),
                        &Patch::Merge(serde_json::json!({"spec": {"replicas": replicas}})),
                    )
                    .await?;
            }
            0..=3 => {
                let replicas = self.rng.random_range(0..=self.spec.max_eni_pods);
                let deployments: Api<Deployment> = Api::namespaced(client, "default");
                deployments
                    .patch(
                        ENI_DEPLOYMENT,
                        &PatchParams::default(),
                        &Patch::Merge(serde_json::json!({"spec": {"replicas": replicas}})),
                    )
                    .await?;
            }
            4..=6 => {
                let pods: Api<Pod> = Api::namespaced(client, "default");
                let list = pods
                    .list(&ListParams::default().labels(&format!("app={ENI_DEPLOYMENT}")))
                    .await?
                    .items;
                if !list.is_empty() {
                    let victim = list[self.rng.random_range(0..list.len())].name_any();
                    pods.delete(&victim, &DeleteParams::default()).await?;
                }
            }
            7 | 8 if self.extra_nodes.len() < 3 => {
                let group = self
                    .sim
                    .scenario
                    .node_groups
                    .first()
                    .cloned()
                    .context("no node group")?;
                self.next_node += 1;
                let prefix = format!("chaos-late{}", self.next_node);
                let g = super::scenario::NodeGroup {
                    prefix: prefix.clone(),
                    count: 1,
                    ..group
                };
                self.sim.add_nodes(&g, None).await?;
                self.extra_nodes.push(format!("{prefix}-1"));
            }
            _ => {
                if self.extra_nodes.is_empty() {
                    return Ok(());
                }
                let name = self
                    .extra_nodes
                    .remove(self.rng.random_range(0..self.extra_nodes.len()));
                self.delete_node(&name).await?;
            }
        }
        Ok(())
    }

    /// A node goes: its instance is released, the Node deleted, and its pods
    /// deleted as the pod garbage collector does.
    async fn delete_node(&mut self, name: &str) -> anyhow::Result<()> {
        self.sim.delete_node(name).await?;
        let pods: Api<Pod> = Api::all(self.sim.client().clone());
        for p in pods
            .list(&ListParams::default())
            .await?
            .items
            .into_iter()
            .filter(|p| p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(name))
        {
            let ns = p.namespace().unwrap_or_default();
            let _ = Api::<Pod>::namespaced(self.sim.client().clone(), &ns)
                .delete(&p.name_any(), &DeleteParams::default())
                .await;
        }
        Ok(())
    }
}

/// The controller binary to run: `VPC_ENI_CONTROLLER_BIN`, else this
/// executable (`simulate` is a command of it).
pub fn controller_binary() -> anyhow::Result<PathBuf> {
    match std::env::var_os("VPC_ENI_CONTROLLER_BIN") {
        Some(p) => Ok(PathBuf::from(p)),
        None => std::env::current_exe().context("cannot find this executable"),
    }
}

/// The report as the `chaos` block of the JSON report, printed on its own
/// as `{"chaos": {...}}`.
pub fn json_block(report: &ChaosReport) -> serde_json::Value {
    serde_json::json!({ "chaos": report })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_report_is_the_chaos_block_with_its_counts() {
        let report = ChaosReport {
            faults_injected: 3,
            controller_kills: 2,
            invariant_violations: 1,
            violations: vec![Violation {
                at_seconds: 1.5,
                invariant: "one-ip-one-owner".into(),
                detail: "x".into(),
            }],
            ..ChaosReport::default()
        };
        let v = json_block(&report);
        assert_eq!(v["chaos"]["faultsInjected"], 3);
        assert_eq!(v["chaos"]["controllerKills"], 2);
        assert_eq!(v["chaos"]["invariantViolations"], 1);
        assert_eq!(v["chaos"]["violations"][0]["invariant"], "one-ip-one-owner");
    }
}
