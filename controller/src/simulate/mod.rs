//! The `simulate` command: the fakes (kube-apiserver with scheduler and
//! kubelet stand-in, the in-memory cloud behind the Alibaba OpenAPI mock) run
//! in-process, the real controller with a real config runs against them over
//! HTTP, a scenario plays out, and the end shows what a user would look at.

pub mod report;
pub mod scenario;

use crate::config::{
    Config, ControllerSettings, EniConfig, ProviderConfig, ProviderKind, RoutesConfig,
};
use crate::metrics::Metrics;
use crate::run::{self, Deps, Running};
use crate::server::Health;
use anyhow::Context as _;
use indicatif::{ProgressBar, ProgressStyle};
use ipam::ids::{InstanceId, InstanceType, RouteTableId, SubnetId, ZoneId};
use ipnet::Ipv4Net;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kube::ResourceExt;
use mocks::alibaba::{FakeAlibaba, FakeAlibabaHandle};
use mocks::cloud::spec::{RouteTableSpec, SecurityGroupSpec, VSwitchSpec, VpcSpec};
use mocks::cloud::{AccessKey, InstanceSpec, World, WorldSpec};
use mocks::kubeapi::nodes::NodeTemplate;
use mocks::kubeapi::{FakeApiServer, Options};
use providers::alibaba::credentials::CredentialSource;
use providers::alibaba::{AlibabaCloud, AlibabaConfig};
use providers::model::NextHop;
use providers::Cloud;
use scenario::{NodeGroup, Scenario, Step, DEFAULT_SCENARIO};
use std::collections::{BTreeMap, HashMap};
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

pub const TABLE: &str = "vtb-sim";
const VPC: &str = "vpc-sim";
const KEY_ID: &str = "sim-key";
const KEY_SECRET: &str = "sim-secret-not-a-real-one";

#[derive(clap::Args, Debug)]
pub struct SimulateArgs {
    /// Scenario YAML; the built-in default (routes mode, six nodes, two zones)
    /// when absent. `--print-default` shows it.
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
}

/// What one phase took.
#[derive(Clone, Debug)]
pub struct Phase {
    pub name: String,
    pub converged: bool,
    pub took: Duration,
    pub mutating_calls: u64,
    pub calls: BTreeMap<String, u64>,
}

/// The running simulation.
pub struct Sim {
    pub scenario: Scenario,
    pub api: FakeApiServer,
    pub alibaba: FakeAlibabaHandle,
    pub client: kube::Client,
    /// Running replicas, oldest first.
    pub replicas: Vec<(CancellationToken, Running)>,
    pub cloud: Option<Arc<dyn Cloud>>,
    next_ip: HashMap<String, u32>,
    pub phases: Vec<Phase>,
    generation: u32,
}

impl Sim {
    pub async fn start(scenario: Scenario) -> anyhow::Result<Sim> {
        let world =
            World::from_spec(&world_spec(&scenario)?).map_err(|e| anyhow::anyhow!("{e}"))?;
        let api = FakeApiServer::start(Options::default())
            .await
            .map_err(|e| anyhow::anyhow!("fake apiserver: {e}"))?;
        let alibaba = FakeAlibaba::start(world, "127.0.0.1:0".parse()?)
            .await
            .context("fake alibaba")?;
        let client = kube::Client::try_from(api.client_config())?;
        Ok(Sim {
            scenario,
            api,
            alibaba,
            client,
            replicas: Vec::new(),
            cloud: None,
            next_ip: HashMap::new(),
            phases: Vec::new(),
            generation: 0,
        })
    }

    pub fn world(&self) -> &World {
        self.alibaba.world()
    }

    /// The controller's config for this scenario.
    pub fn config(&self) -> Config {
        Config {
            cluster_id: "sim".into(),
            provider: ProviderConfig {
                kind: ProviderKind::Alibaba,
                region: Some(self.scenario.region.clone()),
                endpoint: Some(self.alibaba.url().to_owned()),
                rate_limits: self.scenario.rate_limits.clone(),
                credentials: None,
            },
            routes: RoutesConfig {
                enabled: true,
                route_table_ids: vec![RouteTableId::new(TABLE)],
                cluster_cidr: Some(self.scenario.cluster_cidr),
                allocate_pod_cidrs: true,
                node_cidr_mask_size: self.scenario.node_cidr_mask_size,
                aggregate_window_ms: self.scenario.aggregate_window_ms,
                resync_seconds: 300,
                batch_pause_ms: self.scenario.faults.route_delay_ms,
            },
            eni: EniConfig::default(),
            controller: ControllerSettings {
                listen: "127.0.0.1:0".into(),
                ..ControllerSettings::default()
            },
        }
    }

    /// Start a controller replica (the real one, over HTTP to the fakes).
    pub async fn start_controller(&mut self) -> anyhow::Result<()> {
        let mut config = self.config();
        config.controller.leader_election.namespace = Some("kube-system".into());
        config.controller.leader_election.lease_duration_seconds = 4;
        config.controller.leader_election.renew_interval_seconds = 1;
        let mut ali = AlibabaConfig::new(self.scenario.region.clone());
        ali.endpoint = Some(self.alibaba.url().to_owned());
        ali.credentials = CredentialSource::explicit(KEY_ID, KEY_SECRET, None);
        for (api, rate) in &self.scenario.rate_limits {
            ali.call_policy
                .per_api_per_minute
                .insert(api.clone(), *rate);
        }
        let cloud: Arc<dyn Cloud> =
            Arc::new(AlibabaCloud::new(ali).map_err(|e| anyhow::anyhow!("{e}"))?);
        let metrics = Metrics::new();
        metrics.set_cloud(cloud.name(), cloud.stats());
        self.generation += 1;
        let deps = Deps {
            config,
            client: self.client.clone(),
            cloud: cloud.clone(),
            metrics,
            health: Health::default(),
            identity: format!("sim-controller-{}", self.generation),
            eni_hook: None,
        };
        let token = CancellationToken::new();
        let running = run::start(deps, token.clone()).await?;
        self.replicas.push((token, running));
        self.cloud = Some(cloud);
        Ok(())
    }

    /// Stop every replica and forget the lease, so the next replica leads at
    /// once (a restart of the whole Deployment).
    pub async fn kill_controller(&mut self) {
        for (token, _) in self.replicas.drain(..) {
            token.cancel();
        }
        // The lease has to expire before the next replica leads.
        let api: Api<k8s_openapi::api::coordination::v1::Lease> =
            Api::namespaced(self.client.clone(), "kube-system");
        let _ = api
            .delete("vpc-eni-controller", &DeleteParams::default())
            .await;
        tokio::time::sleep(Duration::from_millis(200)).await;
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
        let nodes: Api<Node> = Api::all(self.client.clone());
        let info = mocks::cloud::instance_types::lookup(&group.instance_type)
            .with_context(|| format!("unknown instance type {}", group.instance_type))?;
        for i in 1..=group.count {
            let name = format!("{}-{i}", group.prefix);
            let instance = instance_for(&name);
            let ip = self.next_private_ip(&group.zone)?;
            self.world()
                .add_instance(&InstanceSpec {
                    id: InstanceId::new(&instance),
                    instance_type: InstanceType::new(&group.instance_type),
                    zone: ZoneId::new(&group.zone),
                    vswitch: vswitch_id(&group.zone),
                    private_ip: ip,
                    security_groups: vec![],
                })
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            let mut t = NodeTemplate::new(
                &name,
                &group.instance_type,
                &info.vcpus.to_string(),
                &format!("{}Mi", info.memory_mib),
            );
            t.zone = Some(group.zone.clone());
            t.provider_id = Some(format!("{}.{instance}", self.scenario.region));
            t.internal_ip = Some(ip.to_string());
            t.pod_cidr = pod_cidr.map(|c| c.to_string());
            let node: Node = serde_json::from_value(t.build())?;
            nodes.create(&PostParams::default(), &node).await?;
        }
        Ok(())
    }

    pub async fn delete_node(&mut self, name: &str) -> anyhow::Result<()> {
        let nodes: Api<Node> = Api::all(self.client.clone());
        nodes.delete(name, &DeleteParams::default()).await?;
        let _ = self
            .world()
            .remove_instance(&InstanceId::new(instance_for(name)));
        Ok(())
    }

    pub async fn create_deployment(&self, name: &str, replicas: u32) -> anyhow::Result<()> {
        let api: Api<Deployment> = Api::namespaced(self.client.clone(), "default");
        let d: Deployment = serde_json::from_value(serde_json::json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {
                "replicas": replicas,
                "selector": {"matchLabels": {"app": name}},
                "template": {
                    "metadata": {"labels": {"app": name}},
                    "spec": {"containers": [{"name": name, "image": "registry.k8s.io/pause:3.9",
                        "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}}}]}
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
        let nodes: Api<Node> = Api::all(self.client.clone());
        let list = nodes.list(&ListParams::default()).await?;
        let entries = self.world().route_entries(&RouteTableId::new(TABLE));
        let marker = ipam::routes::ownership_marker(&ipam::ids::ClusterId::new("sim"));
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

    /// Wait for convergence with a progress bar; record the phase's figures.
    pub async fn phase(&mut self, name: &str, progress: bool) -> anyhow::Result<()> {
        let started = Instant::now();
        let before = self.world().calls();
        let before_mut = self.world().mutating_calls();
        let bar = if progress {
            let b = ProgressBar::new(0);
            b.set_style(
                ProgressStyle::with_template(
                    "{spinner} {msg:40} [{bar:30}] {pos}/{len} nodes routed  {elapsed}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            b.set_message(name.to_owned());
            b
        } else {
            ProgressBar::hidden()
        };
        let timeout = Duration::from_secs(self.scenario.timeout_seconds);
        // Let the controller notice the change before judging convergence.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let mut stable = 0;
        let converged = loop {
            let (done, total, ok) = self.convergence().await?;
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
        let calls = after
            .iter()
            .map(|(k, v)| (k.clone(), v - before.get(k).copied().unwrap_or(0)))
            .filter(|(_, v)| *v > 0)
            .collect();
        let took = started.elapsed();
        self.phases.push(Phase {
            name: name.to_owned(),
            converged,
            took,
            mutating_calls: self.world().mutating_calls() - before_mut,
            calls,
        });
        Ok(())
    }

    pub async fn apply_step(&mut self, step: &Step) -> anyhow::Result<String> {
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
                self.kill_controller().await;
                self.start_controller().await?;
                Ok("the controller is killed and a new replica starts".into())
            }
        }
    }

    pub async fn shutdown(mut self) {
        self.kill_controller().await;
        self.alibaba.shutdown().await;
        self.api.shutdown().await;
    }
}

/// The instance id behind a simulated node: real ids are `i-` + alphanumerics.
pub fn instance_for(node: &str) -> String {
    format!(
        "i-{}",
        node.replace(|c: char| !c.is_ascii_alphanumeric(), "")
    )
}

fn vswitch_id(zone: &str) -> SubnetId {
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
            id: "sg-sim".into(),
            vpc: VPC.into(),
        }],
        instances: vec![],
        faults: s.faults.clone(),
    })
}

pub async fn main(args: SimulateArgs) -> anyhow::Result<()> {
    if args.print_default {
        print!("{DEFAULT_SCENARIO}");
        return Ok(());
    }
    crate::logging::init_with_default(crate::config::LogFormat::Text, "warn");
    run::install_crypto_provider();
    let text = match &args.scenario {
        Some(path) => std::fs::read_to_string(path)
            .with_context(|| format!("cannot read scenario {}", path.display()))?,
        None => DEFAULT_SCENARIO.to_owned(),
    };
    let scenario = Scenario::parse(&text)?;
    println!("scenario: {}", scenario.name);
    let mut sim = Sim::start(scenario.clone()).await?;
    println!(
        "fake kube-apiserver {}  fake Alibaba OpenAPI {}",
        sim.api.url(),
        sim.alibaba.url()
    );
    sim.start_controller().await?;
    for group in &scenario.node_groups {
        sim.add_nodes(group, None).await?;
    }
    for d in &scenario.deployments {
        sim.create_deployment(&d.name, d.replicas).await?;
    }
    println!(
        "{} nodes join in {} zone(s); the controller writes their routes",
        scenario.total_nodes(),
        scenario.zones.len()
    );
    sim.phase("nodes join", true).await?;
    for step in &scenario.steps {
        let what = sim.apply_step(step).await?;
        println!("step: {what}");
        sim.phase(&what, true).await?;
    }
    report::print(&sim, args.quiet).await?;
    let all_converged = sim.phases.iter().all(|p| p.converged);
    if args.keep_running {
        let path =
            std::env::temp_dir().join(format!("vpc-eni-sim-{}.kubeconfig", std::process::id()));
        std::fs::write(&path, sim.api.kubeconfig_yaml())?;
        println!(
            "\nfake apiserver still up: kubectl --kubeconfig {} get nodes -o wide",
            path.display()
        );
        println!("Ctrl-C to stop.");
        let _ = tokio::signal::ctrl_c().await;
        let _ = std::fs::remove_file(&path);
    }
    sim.shutdown().await;
    if !all_converged {
        anyhow::bail!(
            "some phases did not converge within {} s",
            scenario.timeout_seconds
        );
    }
    Ok(())
}
