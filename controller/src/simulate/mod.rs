//! The `simulate` command: the fakes (kube-apiserver with scheduler and
//! kubelet stand-in, the in-memory cloud behind the Alibaba OpenAPI mock) run
//! in-process, the real controller with a real config runs against them over
//! HTTP, a scenario plays out act by act, and the end of each act shows what
//! a user would look at.

pub mod bgp;
pub mod bound;
pub mod chaos;
pub mod dataplane;
pub mod eni;
pub mod json;
pub mod report;
pub mod scenario;
pub mod shared;
pub mod timeline;

use crate::config::Config;
use crate::eni::{CrashAt, StepHook};
use crate::harness::world::NodeSpec;
use crate::harness::{AlibabaWorld, FakeKube, Harness};
use crate::run;
use anyhow::Context as _;
use indicatif::{ProgressBar, ProgressStyle};
use ipam::ids::{InstanceId, RouteTableId, SubnetId};
use ipnet::Ipv4Net;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kube::ResourceExt;
use mocks::cloud::spec::{RouteTableSpec, SecurityGroupSpec, VSwitchSpec, VpcSpec};
use mocks::cloud::{AccessKey, World, WorldSpec};
use providers::alibaba::AlibabaConfig;
use providers::call::CallPolicy;
use providers::model::NextHop;
use providers::Cloud as _;
use scenario::{NodeGroup, Scenario, Step, DEFAULT_SCENARIO};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

pub use crate::harness::world::instance_for;

pub const TABLE: &str = "vtb-sim";
/// The controller's `clusterId` in the simulation (ENI tags, route names).
pub const CLUSTER_ID: &str = "sim";
/// The VPC's security group, given to new ENIs.
pub const SECURITY_GROUP: &str = "sg-sim";
const VPC: &str = "vpc-sim";
const KEY_ID: &str = "sim-key";
const KEY_SECRET: &str = "sim-secret-not-a-real-one";

#[derive(clap::Args, Debug)]
pub struct SimulateArgs {
    /// Scenario YAML (one act, or several separated by `---`); the built-in
    /// default (routes mode on six nodes, then ENI mode on one node) when
    /// absent. `--print-default` shows it.
    #[arg(long)]
    pub scenario: Option<PathBuf>,
    /// Print the built-in scenario and exit.
    #[arg(long)]
    pub print_default: bool,
    /// Keep the fake apiserver up after the run and print its kubeconfig path
    /// so you can poke it with kubectl; Ctrl-C ends it.
    #[arg(long)]
    pub keep_running: bool,
    /// Fewer tables at the end (figures only).
    #[arg(long)]
    pub quiet: bool,
    /// Root only: build the lab (a VPC of network namespaces that follows
    /// the fake cloud) and check with packets at the end of each act that
    /// routed podCIDRs and ENI pods answer where the controller says they do.
    #[arg(long)]
    pub dataplane: bool,
    /// Print one JSON document with every act's figures on stdout and
    /// nothing else (what happens goes to stderr); see the README for its
    /// keys.
    #[arg(long)]
    pub json: bool,
}

/// What one phase took.
#[derive(Clone, Debug)]
pub struct Phase {
    pub name: String,
    pub converged: bool,
    pub took: Duration,
    pub mutating_calls: u64,
    pub calls: BTreeMap<String, u64>,
    /// ENI pods bound in this phase: time to their annotation, and the bound.
    pub allocations: Option<bound::AllocationFigures>,
    /// The least time the phase could have taken: its route changes and ENI
    /// allocations at the controller's rate limits and the cloud's pace
    /// (zero when it needed neither).
    pub lower_bound: Duration,
}

/// Where a phase started: time, cloud calls, mutating calls, and the
/// cluster's route entries then.
struct PhaseMark {
    at: Instant,
    calls: BTreeMap<String, u64>,
    mutating: u64,
    routes: BTreeSet<Ipv4Net>,
}

/// The running simulation.
pub struct Sim {
    pub scenario: Scenario,
    /// The fake Alibaba world, the fake apiserver and the controller
    /// replicas (oldest first; the last one's cloud client is in the report).
    pub harness: Harness<AlibabaWorld>,
    next_ip: HashMap<String, u32>,
    pub phases: Vec<Phase>,
    /// Deployments of ENI pods created by steps, in order.
    pub eni_deployments: Vec<eni::EniDeployment>,
    /// Deployments of shared-ENI pods created by steps: name -> replicas.
    pub shared_deployments: BTreeMap<String, u32>,
    /// Start of the current phase.
    phase_mark: Option<PhaseMark>,
    /// Bind and annotation times of every pod (ENI acts only).
    pub timeline: Option<timeline::Timeline>,
    /// `routes.backend: bgp`: the in-process routers the controller peers
    /// with.
    pub bgp: Option<bgp::Routers>,
}

impl Sim {
    pub async fn start(scenario: Scenario) -> anyhow::Result<Sim> {
        let world =
            World::from_spec(&world_spec(&scenario)?).map_err(|e| anyhow::anyhow!("{e}"))?;
        let alibaba = AlibabaWorld::start(world).await?;
        let kube = FakeKube::options_for(&scenario.eni_resource_name());
        let harness = Harness::start(alibaba, kube, "sim-controller")
            .await?
            .with_own_runtime()?;
        let bgp = match scenario.routes.bgp() {
            Some(spec) => Some(bgp::Routers::start(spec).await?),
            None => None,
        };
        let timeline = (scenario.eni_enabled() || scenario.shared_enabled()).then(|| {
            timeline::Timeline::start(
                harness.client().clone(),
                scenario.eni_resource_name(),
                scenario.shared_enabled(),
            )
        });
        Ok(Sim {
            scenario,
            harness,
            next_ip: HashMap::new(),
            phases: Vec::new(),
            eni_deployments: Vec::new(),
            shared_deployments: BTreeMap::new(),
            phase_mark: None,
            timeline,
            bgp,
        })
    }

    pub fn world(&self) -> &World {
        self.harness.cloud.world()
    }

    /// A client of the fake apiserver.
    pub fn client(&self) -> &kube::Client {
        self.harness.client()
    }

    /// The controller's config for this scenario.
    pub fn config(&self) -> Config {
        let mut config = self.scenario.controller_config(self.harness.cloud.url());
        if let Some(routers) = &self.bgp {
            config.routes.bgp = Some(routers.controller_config());
        }
        config
    }

    /// What each replica runs with: the scenario's config, with a short
    /// Lease in `kube-system` so a standby takes over within seconds.
    fn replica_config(&self) -> Config {
        let mut config = self.config();
        config.controller.leader_election.namespace = Some("kube-system".into());
        config.controller.leader_election.lease_duration_seconds = 4;
        config.controller.leader_election.renew_interval_seconds = 1;
        config
    }

    /// The controller's effective per-API limits: the provider's defaults
    /// with the scenario's `rateLimits` on top.
    pub fn call_policy(&self) -> CallPolicy {
        let mut policy = AlibabaConfig::default_call_policy();
        for (api, rate) in &self.scenario.rate_limits {
            policy.per_api_per_minute.insert(api.clone(), *rate);
        }
        policy
    }

    /// Start a controller replica (the real one, over HTTP to the fakes).
    pub async fn start_controller(&mut self) -> anyhow::Result<()> {
        self.start_controller_with(CancellationToken::new(), None)
            .await
    }

    /// Start a replica that stops for good right after `step` of an ENI
    /// allocation or release, as if killed there (see [`CrashAt`]). Start
    /// the next one with [`Sim::restart_controller`].
    pub async fn start_controller_crashing_at(
        &mut self,
        step: crate::eni::Step,
    ) -> anyhow::Result<Arc<CrashAt>> {
        let config = self.replica_config();
        let (_, crash) = self.harness.start_replica_crashing_at(config, step).await?;
        Ok(crash)
    }

    /// Start a replica stopped by `token`, with an optional ENI step hook.
    pub async fn start_controller_with(
        &mut self,
        token: CancellationToken,
        eni_hook: Option<Arc<dyn StepHook>>,
    ) -> anyhow::Result<()> {
        let config = self.replica_config();
        self.harness
            .start_replica_with(config, token, eni_hook)
            .await?;
        Ok(())
    }

    /// Kill every replica (lease forgotten) and start a fresh one without a
    /// hook: a restart of the whole Deployment.
    pub async fn restart_controller(&mut self) -> anyhow::Result<()> {
        self.kill_controller().await;
        self.start_controller().await
    }

    /// Stop every replica and forget the lease, so the next replica leads at
    /// once (a restart of the whole Deployment).
    pub async fn kill_controller(&mut self) {
        self.harness.kill_replicas(&self.replica_config()).await;
    }

    fn next_private_ip(&mut self, zone: &str) -> anyhow::Result<Ipv4Addr> {
        let cidr = self
            .scenario
            .zones
            .iter()
            .find(|z| z.zone == zone)
            .map(|z| z.vswitch_cidr)
            .with_context(|| format!("zone {zone} is not in scenario.zones"))?;
        let n = self.next_ip.entry(zone.to_owned()).or_insert(10);
        let ip = u32::from(cidr.network()) + *n;
        *n += 1;
        if !cidr.contains(&Ipv4Addr::from(ip)) {
            anyhow::bail!("vswitch {cidr} of zone {zone} is full: use a larger vswitchCidr");
        }
        Ok(Ipv4Addr::from(ip))
    }

    /// Instances appear in the cloud, then their Nodes register.
    pub async fn add_nodes(
        &mut self,
        group: &NodeGroup,
        pod_cidr: Option<Ipv4Net>,
    ) -> anyhow::Result<()> {
        for i in 1..=group.count {
            let name = format!("{}-{i}", group.prefix);
            let node = NodeSpec {
                name: &name,
                instance_type: &group.instance_type,
                zone: &group.zone,
                vswitch: vswitch_id(&group.zone),
                ip: self.next_private_ip(&group.zone)?,
                pod_cidr,
            };
            self.harness
                .cloud
                .add_node(&self.harness.kube, &node)
                .await?;
        }
        Ok(())
    }

    pub async fn delete_node(&mut self, name: &str) -> anyhow::Result<()> {
        let nodes: Api<Node> = Api::all(self.client().clone());
        nodes.delete(name, &DeleteParams::default()).await?;
        let _ = self
            .world()
            .remove_instance(&InstanceId::new(instance_for(name)));
        Ok(())
    }

    pub async fn create_deployment(&self, name: &str, replicas: u32) -> anyhow::Result<()> {
        self.post_deployment(
            name,
            replicas,
            serde_json::json!({"cpu": "100m", "memory": "64Mi"}),
            None,
        )
        .await
    }

    /// Create a Deployment of pause pods with these requests and, if given,
    /// limits.
    pub(crate) async fn post_deployment(
        &self,
        name: &str,
        replicas: u32,
        requests: serde_json::Value,
        limits: Option<serde_json::Value>,
    ) -> anyhow::Result<()> {
        let api: Api<Deployment> = Api::namespaced(self.client().clone(), "default");
        let mut resources = serde_json::json!({"requests": requests});
        if let Some(limits) = limits {
            resources["limits"] = limits;
        }
        let d: Deployment = serde_json::from_value(serde_json::json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {
                "replicas": replicas,
                "selector": {"matchLabels": {"app": name}},
                "template": {
                    "metadata": {"labels": {"app": name}},
                    "spec": {"containers": [{"name": name, "image": "registry.k8s.io/pause:3.9",
                        "resources": resources}]}
                }
            }
        }))?;
        api.create(&PostParams::default(), &d).await?;
        Ok(())
    }

    /// What the user would check: every node with a podCIDR has its route
    /// (or is reported as conflicting), no owned route is left for a node that
    /// is gone, and the node condition says so.
    pub async fn convergence(&self) -> anyhow::Result<(usize, usize, bool)> {
        let nodes: Api<Node> = Api::all(self.client().clone());
        let list = nodes.list(&ListParams::default()).await?;
        let entries = self.world().route_entries(&RouteTableId::new(TABLE));
        let marker = ipam::routes::ownership_marker(&ipam::ids::ClusterId::new(CLUSTER_ID));
        let mut done = 0;
        let total = list.items.len();
        let mut live: Vec<Ipv4Net> = Vec::new();
        for node in &list.items {
            let Some(cidr) =
                crate::kubeutil::pod_cidr(node).and_then(|c| c.parse::<Ipv4Net>().ok())
            else {
                continue;
            };
            live.push(cidr);
            let instance = instance_for(&node.name_any());
            let entry = entries.iter().find(|e| e.destination == cidr);
            let ours_ok = entry.is_some_and(|e| {
                e.next_hop == NextHop::Instance(InstanceId::new(&instance))
                    && e.status == providers::model::RouteEntryStatus::Available
            });
            let foreign = entry.is_some_and(|e| e.name.as_deref() != Some(marker.as_str()));
            let condition = crate::kubeutil::network_unavailable(node);
            let cond_ok = match condition {
                Some((status, _)) => {
                    (ours_ok && !foreign && status == "False") || (foreign && status == "True")
                }
                None => false,
            };
            if cond_ok {
                done += 1;
            }
        }
        let stale = entries
            .iter()
            .filter(|e| {
                e.name.as_deref() == Some(marker.as_str()) && !live.contains(&e.destination)
            })
            .count();
        Ok((done, total, done == total && stale == 0))
    }

    /// Routes and ENI side together: (done, total, unit, converged). The
    /// progress counts ENI pods in an ENI act, else routed nodes.
    pub async fn settled(&self) -> anyhow::Result<(usize, usize, &'static str, bool)> {
        let mut out = (0, 0, "nodes routed", true);
        if let Some(routers) = &self.bgp {
            let (done, total, ok) = self.bgp_convergence(routers).await?;
            out = (done, total, "nodes announced", ok);
        } else if self.scenario.routes.enabled {
            let (done, total, ok) = self.convergence().await?;
            out = (done, total, "nodes routed", ok);
        }
        if self.scenario.eni_enabled() {
            let p = self.eni_convergence().await?;
            out = (p.settled, p.total, "ENI pods settled", out.3 && p.converged);
        }
        if self.scenario.shared_enabled() && !self.shared_deployments.is_empty() {
            let (done, total, ok) = self.shared_convergence().await?;
            out = (done, total, "shared pods on their IPs", out.3 && ok);
        }
        Ok(out)
    }

    /// Start the clock of the next phase now (calls and bindings from here
    /// count), unless a step already did.
    pub fn mark_phase_start(&mut self) {
        if self.phase_mark.is_none() {
            self.phase_mark = Some(PhaseMark {
                at: Instant::now(),
                calls: self.world().calls(),
                mutating: self.world().mutating_calls(),
                routes: self.owned_routes(),
            });
        }
    }

    /// Destinations of the route entries the controller owns now.
    fn owned_routes(&self) -> BTreeSet<Ipv4Net> {
        let marker = ipam::routes::ownership_marker(&ipam::ids::ClusterId::new(CLUSTER_ID));
        self.world()
            .route_entries(&RouteTableId::new(TABLE))
            .into_iter()
            .filter(|e| e.name.as_deref() == Some(marker.as_str()))
            .map(|e| e.destination)
            .collect()
    }

    /// The least time the route changes between `before` and now take at
    /// the controller's limits and the cloud's pace.
    fn route_bound(&self, before: &BTreeSet<Ipv4Net>) -> Duration {
        let now = self.owned_routes();
        let work = bound::RouteWork {
            creates: now.difference(before).count(),
            deletes: before.difference(&now).count(),
        };
        let caps = self.world().flavor().capabilities();
        let cloud = bound::RouteCloud {
            batch: caps.route_batch_size,
            serialised: caps.serialize_route_changes,
            settle: Duration::from_millis(self.scenario.faults.route_delay_ms),
        };
        bound::route_bound(work, cloud, &self.call_policy())
    }

    /// Wait for convergence with a progress bar; record the phase's figures
    /// (from the first step since the last phase, else from now).
    pub async fn phase(&mut self, name: &str, progress: bool) -> anyhow::Result<()> {
        self.mark_phase_start();
        let Some(mark) = self.phase_mark.take() else {
            anyhow::bail!("phase mark missing");
        };
        let started = mark.at;
        let bar = if progress {
            let b = ProgressBar::new(0);
            b.set_style(
                ProgressStyle::with_template(
                    "{spinner} {msg:40} [{bar:30}] {pos}/{len} {prefix}  {elapsed}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            b.set_message(name.chars().take(40).collect::<String>());
            b
        } else {
            ProgressBar::hidden()
        };
        let timeout = Duration::from_secs(self.scenario.timeout_seconds);
        // Let the controller notice the change before judging convergence.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let mut stable = 0;
        let converged = loop {
            let (done, total, unit, ok) = self.settled().await?;
            bar.set_prefix(unit);
            bar.set_length(total as u64);
            bar.set_position(done as u64);
            bar.tick();
            stable = if ok { stable + 1 } else { 0 };
            // Twice in a row, so a pass in flight does not fool us.
            if stable >= 2 {
                break true;
            }
            if started.elapsed() > timeout {
                break false;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        };
        bar.finish_and_clear();
        let after = self.world().calls();
        let calls: BTreeMap<String, u64> = after
            .iter()
            .map(|(k, v)| (k.clone(), v - mark.calls.get(k).copied().unwrap_or(0)))
            .filter(|(_, v)| *v > 0)
            .collect();
        let took = started.elapsed();
        let allocations = self.allocation_figures(started, &calls);
        let eni_bound = allocations
            .as_ref()
            .map(|a| Duration::from_secs_f64(a.last_done_seconds))
            .unwrap_or_default();
        let pool_bound = if self.scenario.shared_enabled() {
            shared::pool_bound(
                &bound::api_bounds(&calls, &self.call_policy()),
                Duration::from_millis(self.scenario.faults.attach_delay_ms),
            )
        } else {
            Duration::ZERO
        };
        let lower_bound = self
            .route_bound(&mark.routes)
            .max(eni_bound)
            .max(pool_bound);
        self.phases.push(Phase {
            name: name.to_owned(),
            converged,
            took,
            mutating_calls: self.world().mutating_calls() - mark.mutating,
            calls,
            allocations,
            lower_bound,
        });
        Ok(())
    }

    /// Bind-to-annotation times of the ENI pods bound since `since`, beside
    /// the lower bound the rate limits allow for the same bindings.
    fn allocation_figures(
        &self,
        since: Instant,
        calls: &BTreeMap<String, u64>,
    ) -> Option<bound::AllocationFigures> {
        let pods: Vec<timeline::PodTimes> = self
            .timeline
            .as_ref()?
            .pods()
            .into_iter()
            .filter(|p| p.bound_at.is_some_and(|b| b >= since))
            .collect();
        if pods.is_empty() {
            return None;
        }
        let policy = self.call_policy();
        let attach = Duration::from_millis(self.scenario.faults.attach_delay_ms);
        let binds: Vec<bound::Binding> = pods
            .iter()
            .map(|p| bound::Binding {
                at: p.bound_at.map(|b| (b - since).as_secs_f64()).unwrap_or(0.0),
                enis: p.enis,
                node: p.node.clone().unwrap_or_default(),
            })
            .collect();
        // A shared-ENI pod (no ENI of its own) could have its IP at once
        // from a warm pool: its own bound is 0; the phase's pool bound
        // covers the pool's growth.
        let shared = |b: &bound::Binding| b.enis == 0;
        let zero_shared = |v: Vec<Duration>| -> Vec<Duration> {
            v.into_iter()
                .zip(&binds)
                .map(|(d, b)| if shared(b) { Duration::ZERO } else { d })
                .collect()
        };
        let per_node = self.scenario.attaches_in_flight_per_node();
        let bounds = zero_shared(bound::lower_bounds(&binds, &policy, attach, Some(per_node)));
        let serial = zero_shared(bound::lower_bounds(&binds, &policy, attach, Some(1)));
        let last_done_seconds = binds
            .iter()
            .zip(&bounds)
            .filter(|(b, _)| !shared(b))
            .map(|(b, d)| b.at + d.as_secs_f64())
            .fold(0.0, f64::max);
        let mut measured = Vec::new();
        let mut bound_of_annotated = Vec::new();
        let mut serial_of_annotated = Vec::new();
        for ((p, b), s) in pods.iter().zip(&bounds).zip(&serial) {
            if let (Some(bound_at), Some(annotated)) = (p.bound_at, p.annotated_at) {
                measured.push(annotated.saturating_duration_since(bound_at));
                bound_of_annotated.push(*b);
                serial_of_annotated.push(*s);
            }
        }
        Some(bound::AllocationFigures {
            pods: measured.len(),
            unannotated: pods.len() - measured.len(),
            measured: bound::Percentiles::of(&measured).unwrap_or_default(),
            bound: bound::Percentiles::of(&bound_of_annotated).unwrap_or_default(),
            per_node,
            bound_serial: bound::Percentiles::of(&serial_of_annotated).unwrap_or_default(),
            apis: bound::api_bounds(calls, &policy),
            last_done_seconds,
        })
    }

    /// Apply one step; returns what happened, in words. A `wait` step does
    /// nothing (the caller runs the phase).
    pub async fn apply_step(&mut self, step: &Step) -> anyhow::Result<String> {
        self.mark_phase_start();
        match step {
            Step::AddNodes {
                prefix,
                count,
                instance_type,
                zone,
                pod_cidr,
            } => {
                let group = NodeGroup {
                    prefix: prefix.clone(),
                    count: *count,
                    instance_type: instance_type.clone(),
                    zone: zone.clone(),
                };
                self.add_nodes(&group, *pod_cidr).await?;
                Ok(format!("{count} node(s) {prefix}-* join in {zone}"))
            }
            Step::DeleteNode { name } => {
                self.delete_node(name).await?;
                Ok(format!("node {name} and its instance are deleted"))
            }
            Step::ForeignRoute {
                destination,
                instance,
                name,
            } => {
                let entry = providers::model::NewRouteEntry {
                    destination: *destination,
                    instance_id: InstanceId::new(instance),
                    name: name.clone(),
                    description: "added by hand".into(),
                };
                let outcome = self
                    .world()
                    .create_route_entries(&RouteTableId::new(TABLE), &[entry])
                    .await?;
                if let Some((_, e)) = outcome.failed.first() {
                    anyhow::bail!("foreign route {destination}: {e}");
                }
                Ok(format!(
                    "someone adds a static route {destination} -> {instance} named {name:?}"
                ))
            }
            Step::RestartController => {
                self.restart_controller().await?;
                Ok("the controller is killed and a new replica starts".into())
            }
            Step::CreateEniDeployment {
                name,
                replicas,
                eni_per_pod,
                ..
            } => {
                self.create_eni_deployment(name, *replicas, *eni_per_pod)
                    .await?;
                Ok(format!(
                    "Deployment {name}: {replicas} pods with limits {{{}: {eni_per_pod}}}",
                    self.scenario.eni_resource_name()
                ))
            }
            Step::DeletePod { of, .. } => {
                let pod = self.delete_pod_of(of).await?;
                Ok(format!("kubectl delete pod {pod} (of {of})"))
            }
            Step::CreateSharedDeployment { name, replicas, .. } => {
                self.create_shared_deployment(name, *replicas).await?;
                Ok(format!(
                    "Deployment {name}: {replicas} pods on shared-ENI IPs"
                ))
            }
            Step::Churn {
                of,
                cycles,
                per_second,
            } => {
                self.churn(of, *cycles, *per_second).await?;
                Ok(format!(
                    "{cycles} pods of {of} deleted and replaced, {per_second}/s"
                ))
            }
            Step::Wait { phase } => Ok(phase.clone().unwrap_or_else(|| "wait".into())),
        }
    }

    pub async fn shutdown(mut self) {
        self.kill_controller().await;
        self.harness.shutdown().await;
    }
}

/// The vSwitch id of a scenario zone.
pub fn vswitch_id(zone: &str) -> SubnetId {
    SubnetId::new(format!("vsw-{zone}"))
}

fn world_spec(s: &Scenario) -> anyhow::Result<WorldSpec> {
    let vpc_cidr: Ipv4Net = "192.168.0.0/16".parse()?;
    for (i, z) in s.zones.iter().enumerate() {
        if !vpc_cidr.contains(&z.vswitch_cidr) {
            anyhow::bail!(
                "scenario.zones[{i}].vswitchCidr: {} must be inside the VPC {vpc_cidr}",
                z.vswitch_cidr
            );
        }
    }
    Ok(WorldSpec {
        region: s.region.clone().into(),
        flavor: Default::default(),
        access_keys: vec![AccessKey {
            id: KEY_ID.into(),
            secret: KEY_SECRET.into(),
        }],
        vpcs: vec![VpcSpec {
            id: VPC.into(),
            cidr: vpc_cidr,
            route_tables: vec![RouteTableSpec {
                id: TABLE.into(),
                quota: Some(s.route_table_quota),
                tags: Default::default(),
                main: true,
            }],
        }],
        vswitches: s
            .zones
            .iter()
            .map(|z| VSwitchSpec {
                id: vswitch_id(&z.zone),
                vpc: VPC.into(),
                zone: z.zone.clone().into(),
                cidr: z.vswitch_cidr,
            })
            .collect(),
        security_groups: vec![SecurityGroupSpec {
            id: SECURITY_GROUP.into(),
            vpc: VPC.into(),
        }],
        instances: vec![],
        faults: s.faults.clone(),
    })
}

impl Sim {
    /// Play the whole act: controller up, nodes join, plain Deployments,
    /// then every step, each followed by a convergence phase (steps with
    /// `wait: false` share the next one). `say` hears what happens.
    pub async fn play(&mut self, progress: bool, say: &mut dyn FnMut(&str)) -> anyhow::Result<()> {
        let scenario = self.scenario.clone();
        self.mark_phase_start();
        self.start_controller().await?;
        for group in &scenario.node_groups {
            self.add_nodes(group, None).await?;
        }
        for d in &scenario.deployments {
            self.create_deployment(&d.name, d.replicas).await?;
        }
        let mut writes = Vec::new();
        if scenario.routes.enabled {
            writes.push("their routes");
        }
        if scenario.eni_enabled() {
            writes.push("their ENI capacity");
        }
        say(&format!(
            "{} node(s) join in {} zone(s); the controller writes {}",
            scenario.total_nodes(),
            scenario.zones.len(),
            writes.join(" and ")
        ));
        self.phase("nodes join", progress).await?;
        let mut batched: Vec<String> = Vec::new();
        for step in &scenario.steps {
            let what = self.apply_step(step).await?;
            if let Step::Wait { phase } = step {
                let name = phase.clone().unwrap_or_else(|| batched.join(" + "));
                batched.clear();
                self.phase(&name, progress).await?;
                continue;
            }
            say(&format!("step: {what}"));
            batched.push(what);
            if step.waits() {
                let name = batched.join(" + ");
                batched.clear();
                self.phase(&name, progress).await?;
            }
        }
        if !batched.is_empty() {
            self.phase(&batched.join(" + "), progress).await?;
        }
        Ok(())
    }
}

pub async fn main(args: SimulateArgs) -> anyhow::Result<()> {
    if args.print_default {
        print!("{DEFAULT_SCENARIO}");
        return Ok(());
    }
    if args.dataplane {
        dataplane::available()?;
    }
    crate::logging::init_with_default(crate::config::LogFormat::Text, "warn");
    run::install_crypto_provider();
    let text = match &args.scenario {
        Some(path) => std::fs::read_to_string(path)
            .with_context(|| format!("cannot read scenario {}", path.display()))?,
        None => DEFAULT_SCENARIO.to_owned(),
    };
    let acts = Scenario::parse_acts(&text)?;
    // With --json stdout carries the document alone; the story goes to
    // stderr.
    let json = args.json;
    let say = |line: &str| {
        if json {
            eprintln!("{line}");
        } else {
            println!("{line}");
        }
    };
    let started = Instant::now();
    let mut failed = Vec::new();
    let mut dataplane_failed = Vec::new();
    let mut chaos_failed: Vec<String> = Vec::new();
    let mut document = json::SimReport::default();
    for (i, scenario) in acts.iter().enumerate() {
        if acts.len() > 1 {
            say(&format!(
                "\n=== act {} of {}: {} ===",
                i + 1,
                acts.len(),
                scenario.name
            ));
        } else {
            say(&format!("scenario: {}", scenario.name));
        }
        let mut sim = Sim::start(scenario.clone()).await?;
        say(&format!(
            "fake kube-apiserver {}  fake Alibaba OpenAPI {}",
            sim.harness.kube.api.url(),
            sim.harness.cloud.url()
        ));
        let lab = match args.dataplane {
            true => Some(dataplane::Dataplane::start(sim.world().clone()).await?),
            false => None,
        };
        if let Some(spec) = scenario.chaos.clone() {
            let binary = chaos::controller_binary()?;
            let report = chaos::run(&mut sim, spec, &binary, &mut |line| say(line)).await?;
            if report.invariant_violations > 0 {
                chaos_failed.push(format!(
                    "{}: {} violation(s)",
                    scenario.name, report.invariant_violations
                ));
            }
            if json {
                let mut act = json::act(&sim);
                act.chaos = Some(serde_json::to_value(&report)?);
                document.acts.push(act);
            } else {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&chaos::json_block(&report))?
                );
            }
            sim.shutdown().await;
            continue;
        }
        sim.play(true, &mut |line| say(line)).await?;
        if !json {
            report::print(&sim, args.quiet).await?;
        }
        if !sim.phases.iter().all(|p| p.converged) {
            failed.push(scenario.name.clone());
        }
        let mut act = json::act(&sim);
        if let Some(lab) = &lab {
            let checked = lab.check(&sim).await?;
            if json {
                act.dataplane = Some(json::DataplaneSummary::of(&checked));
            } else {
                checked.print();
            }
            if !checked.agrees() {
                dataplane_failed.push(scenario.name.clone());
            }
        }
        document.acts.push(act);
        if args.keep_running && i + 1 == acts.len() {
            let path =
                std::env::temp_dir().join(format!("vpc-eni-sim-{}.kubeconfig", std::process::id()));
            std::fs::write(&path, sim.harness.kube.api.kubeconfig_yaml())?;
            if json {
                println!("{}", serde_json::to_string(&document)?);
            }
            say(&format!(
                "\nfake apiserver still up: kubectl --kubeconfig {} get pods -o wide",
                path.display()
            ));
            say("Ctrl-C to stop.");
            let _ = tokio::signal::ctrl_c().await;
            let _ = std::fs::remove_file(&path);
        }
        if let Some(lab) = lab {
            lab.teardown().await?;
        }
        sim.shutdown().await;
    }
    if json && !args.keep_running {
        println!("{}", serde_json::to_string(&document)?);
    }
    say(&format!(
        "\n{} act(s) in {:.1}s",
        acts.len(),
        started.elapsed().as_secs_f64()
    ));
    if !failed.is_empty() {
        anyhow::bail!(
            "some phases did not converge within their timeoutSeconds in: {}",
            failed.join("; ")
        );
    }
    if !chaos_failed.is_empty() {
        anyhow::bail!("chaos broke invariants in: {}", chaos_failed.join("; "));
    }
    if !dataplane_failed.is_empty() {
        anyhow::bail!(
            "packets disagree with what the controller reports in: {}",
            dataplane_failed.join("; ")
        );
    }
    Ok(())
}
