//! The simulation scenario file: a cluster (zones, node groups), the
//! controller's modes (routes, exclusive ENIs), cloud latencies, rate limits
//! and faults, and steps over time. A file may hold several acts (YAML
//! documents separated by `---`); each act runs on its own fresh fakes. With
//! no file the built-in default runs: routes mode on six nodes, then ENI mode
//! on one node.

use crate::config::{Config, EniConfig, ProviderConfig, ProviderKind};
use crate::routes_bgp::config::{
    BgpConfig, BgpPeerConfig, GracefulRestartConfig, NodeSelector, RouteBackend,
};
use ipnet::Ipv4Net;
use mocks::cloud::faults::FaultsSpec;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

pub const DEFAULT_SCENARIO: &str = r#"
# Act 1: routes mode. Every node's podCIDR becomes a VPC route.
name: routes mode on six nodes in two zones
region: cn-hangzhou
clusterCidr: 10.244.0.0/16
nodeCidrMaskSize: 24
routeTableQuota: 200
zones:
  - {zone: cn-hangzhou-h, vswitchCidr: 192.168.0.0/20}
  - {zone: cn-hangzhou-i, vswitchCidr: 192.168.16.0/20}
nodeGroups:
  - {prefix: node-h, count: 3, type: ecs.g6.xlarge, zone: cn-hangzhou-h}
  - {prefix: node-i, count: 3, type: ecs.g6.large, zone: cn-hangzhou-i}
deployments:
  - {name: web, replicas: 6}
faults:
  routeDelayMs: 1000
steps:
  - {action: foreignRoute, destination: 10.244.200.0/24, instance: i-nodeh1, name: ops-team-static}
  - {action: addNodes, prefix: node-late, count: 1, type: ecs.g6.xlarge, zone: cn-hangzhou-h, podCidr: 10.244.200.0/24}
  - {action: deleteNode, name: node-i-2}
  - {action: restartController}
---
# Act 2: exclusive ENIs, on fresh fakes with ONE node, so the scheduler's
# message is exactly the one users know from Terway clusters.
name: exclusive ENIs on one ecs.c6.xlarge (4 vCPU / 8 GiB, 2 secondary ENIs)
region: cn-hangzhou
zones:
  - {zone: cn-hangzhou-h, vswitchCidr: 192.168.0.0/20}
nodeGroups:
  - {prefix: node-eni, count: 1, type: ecs.c6.xlarge, zone: cn-hangzhou-h}
routes: {enabled: false}
eni: {resourceName: aliyun/eni}
steps:
  - {action: createEniDeployment, name: eni-a, replicas: 2}
  - {action: createEniDeployment, name: eni-b, replicas: 2}
  - {action: deletePod, of: eni-a}
timeoutSeconds: 120
"#;

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Scenario {
    #[serde(default = "default_name")]
    pub name: String,
    pub region: String,
    /// What the controller carves podCIDRs from (routes mode).
    #[serde(default = "default_cluster_cidr")]
    pub cluster_cidr: Ipv4Net,
    #[serde(default = "default_mask")]
    pub node_cidr_mask_size: u8,
    /// Entry quota of the VPC route table.
    #[serde(default = "default_quota")]
    pub route_table_quota: u32,
    pub zones: Vec<ZoneSpec>,
    pub node_groups: Vec<NodeGroup>,
    /// Deployments of plain pods (routes mode: IPs from the node's podCIDR).
    #[serde(default)]
    pub deployments: Vec<DeploymentSpec>,
    /// Routes mode of the controller (on unless `routes: {enabled: false}`).
    #[serde(default)]
    pub routes: RoutesSpec,
    /// Exclusive-ENI mode of the controller (off when absent).
    #[serde(default)]
    pub eni: Option<EniSpec>,
    /// Shared-ENI mode of the controller on every node (off when absent).
    #[serde(default)]
    pub shared_eni: Option<SharedEniSpec>,
    /// Controller-side rate limits, calls per minute per API.
    #[serde(default)]
    pub rate_limits: BTreeMap<String, u32>,
    /// Cloud-side faults, latencies, delays (the in-memory world's format).
    #[serde(default)]
    pub faults: FaultsSpec,
    /// Route aggregation window of the controller.
    #[serde(default = "default_window")]
    pub aggregate_window_ms: u64,
    #[serde(default)]
    pub steps: Vec<Step>,
    /// Give up waiting for convergence after this long (per phase).
    #[serde(default = "default_timeout")]
    pub timeout_seconds: u64,
    /// Present: the act is a chaos run (`simulate::chaos`) of the real
    /// controller binary instead of the steps.
    #[serde(default)]
    pub chaos: Option<super::chaos::ChaosSpec>,
}

fn default_name() -> String {
    "unnamed scenario".into()
}
fn default_cluster_cidr() -> Ipv4Net {
    Ipv4Net::new(std::net::Ipv4Addr::new(10, 244, 0, 0), 16).unwrap_or_default()
}
fn default_mask() -> u8 {
    24
}
fn default_quota() -> u32 {
    200
}
fn default_window() -> u64 {
    1000
}
fn default_timeout() -> u64 {
    600
}
fn yes() -> bool {
    true
}
fn one() -> u32 {
    1
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RoutesSpec {
    #[serde(default = "yes")]
    pub enabled: bool,
    /// `cloud` (the VPC route table) or `bgp` (in-process routers, one per
    /// peer of `bgp.peers`).
    #[serde(default)]
    pub backend: RouteBackend,
    #[serde(default)]
    pub bgp: Option<SimBgpSpec>,
}

impl Default for RoutesSpec {
    fn default() -> Self {
        Self {
            enabled: true,
            backend: RouteBackend::Cloud,
            bgp: None,
        }
    }
}

impl RoutesSpec {
    /// The act announces podCIDRs over BGP.
    pub fn bgp(&self) -> Option<&SimBgpSpec> {
        match self.backend {
            RouteBackend::Bgp if self.enabled => self.bgp.as_ref(),
            _ => None,
        }
    }
}

/// The scenario's `routes.bgp`: the controller's `routes.bgp` block, with
/// each peer an in-process router on 127.0.0.1 (`mocks::bgp_router`), so
/// its address and port are the simulation's.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SimBgpSpec {
    pub local_asn: u32,
    #[serde(default)]
    pub hold_time_seconds: Option<u16>,
    #[serde(default)]
    pub graceful_restart: Option<GracefulRestartConfig>,
    pub peers: Vec<SimPeerSpec>,
}

/// One router: its AS, the AS the controller speaks to it as, whose nodes
/// it learns.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SimPeerSpec {
    pub asn: u32,
    #[serde(default)]
    pub local_asn: Option<u32>,
    #[serde(default)]
    pub node_selector: NodeSelector,
}

impl SimBgpSpec {
    /// The controller's block, peer `i` at 127.0.0.1:`ports[i]` (ports
    /// 1, 2, ... when the routers are not up yet, for validation).
    pub fn controller_config(&self, ports: &[u16]) -> BgpConfig {
        BgpConfig {
            local_asn: self.local_asn,
            router_id: None,
            hold_time_seconds: self.hold_time_seconds.unwrap_or(90),
            graceful_restart: self.graceful_restart.clone().unwrap_or_default(),
            peers: self
                .peers
                .iter()
                .enumerate()
                .map(|(i, p)| BgpPeerConfig {
                    address: std::net::Ipv4Addr::LOCALHOST,
                    port: ports
                        .get(i)
                        .copied()
                        .unwrap_or_else(|| u16::try_from(i + 1).unwrap_or(u16::MAX)),
                    asn: p.asn,
                    local_asn: p.local_asn,
                    node_selector: p.node_selector.clone(),
                })
                .collect(),
        }
    }
}

/// The scenario's `eni:` section: turns on the controller's ENI mode with
/// every zone's vSwitch as `eni.subnets` and the VPC's security group. Unset
/// tunables take the controller's defaults.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EniSpec {
    /// Present means on, unless `enabled: false`.
    #[serde(default)]
    pub enabled: Option<bool>,
    /// The extended resource pods request (default `aliyun/eni`).
    #[serde(default)]
    pub resource_name: Option<String>,
    #[serde(default)]
    pub gc_interval_seconds: Option<u32>,
    #[serde(default)]
    pub gc_grace_seconds: Option<u32>,
    #[serde(default)]
    pub capacity_resync_seconds: Option<u32>,
    #[serde(default)]
    pub poll_interval_ms: Option<u32>,
    #[serde(default)]
    pub attach_timeout_seconds: Option<u32>,
    /// `eni.attachConcurrency` (default 5).
    #[serde(default)]
    pub attach_concurrency: Option<u32>,
}

/// The scenario's `sharedEni:` section: shared-ENI mode on every node, its
/// ENIs in every zone's vSwitch with the VPC's security group. Unset
/// tunables take the controller's defaults.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SharedEniSpec {
    #[serde(default)]
    pub max_enis: Option<u32>,
    #[serde(default)]
    pub min_pool_size: Option<u32>,
    #[serde(default)]
    pub max_pool_size: Option<u32>,
    #[serde(default)]
    pub warm_up_size: Option<u32>,
    #[serde(default)]
    pub ip_cooldown_seconds: Option<u32>,
    #[serde(default)]
    pub excess_release_delay_seconds: Option<u32>,
}

impl EniSpec {
    pub fn is_enabled(&self) -> bool {
        self.enabled.unwrap_or(true)
    }
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ZoneSpec {
    pub zone: String,
    pub vswitch_cidr: Ipv4Net,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NodeGroup {
    pub prefix: String,
    pub count: u32,
    #[serde(rename = "type")]
    pub instance_type: String,
    pub zone: String,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DeploymentSpec {
    pub name: String,
    pub replicas: u32,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(tag = "action", rename_all = "camelCase", deny_unknown_fields)]
pub enum Step {
    /// Nodes join (with their instances).
    #[serde(rename_all = "camelCase")]
    AddNodes {
        prefix: String,
        count: u32,
        #[serde(rename = "type")]
        instance_type: String,
        zone: String,
        /// Force this podCIDR on the (single) node, e.g. to collide with a
        /// foreign route.
        #[serde(default)]
        pod_cidr: Option<Ipv4Net>,
    },
    /// A node and its instance go away.
    DeleteNode { name: String },
    /// Someone else writes a static route into the table.
    ForeignRoute {
        destination: Ipv4Net,
        instance: String,
        name: String,
    },
    /// Kill the controller and start a fresh one.
    RestartController,
    /// A Deployment whose pods request `resources.limits: {<resourceName>: eniPerPod}`.
    #[serde(rename_all = "camelCase")]
    CreateEniDeployment {
        name: String,
        replicas: u32,
        #[serde(default = "one")]
        eni_per_pod: u32,
        /// `false`: go straight on to the next step (several steps at once,
        /// then one `wait`).
        #[serde(default = "yes")]
        wait: bool,
    },
    /// A Deployment of plain pods on shared-ENI nodes: each gets a
    /// secondary IP of a shared ENI.
    #[serde(rename_all = "camelCase")]
    CreateSharedDeployment {
        name: String,
        replicas: u32,
        #[serde(default = "yes")]
        wait: bool,
    },
    /// Steady churn: `cycles` times, delete one Running pod of the
    /// Deployment (which makes a replacement), `perSecond` deletions a
    /// second; then wait for convergence.
    #[serde(rename_all = "camelCase")]
    Churn {
        of: String,
        cycles: u32,
        per_second: f64,
    },
    /// `kubectl delete pod` of one Running pod of a Deployment (its
    /// Deployment then makes a replacement).
    DeletePod {
        of: String,
        #[serde(default = "yes")]
        wait: bool,
    },
    /// Wait for convergence (after steps with `wait: false`).
    Wait {
        #[serde(default)]
        phase: Option<String>,
    },
}

impl Step {
    /// Whether a convergence phase follows this step at once.
    pub fn waits(&self) -> bool {
        match self {
            Step::CreateEniDeployment { wait, .. }
            | Step::CreateSharedDeployment { wait, .. }
            | Step::DeletePod { wait, .. } => *wait,
            _ => true,
        }
    }
}

/// A Kubernetes object name usable as a Deployment name (DNS-1123 label).
fn dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 50
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

impl Scenario {
    /// One act (a single YAML document).
    pub fn parse(text: &str) -> anyhow::Result<Scenario> {
        let s: Scenario = serde_yaml::from_str(text)
            .map_err(|e| anyhow::anyhow!("scenario is not valid: {e}"))?;
        s.validate("scenario")?;
        Ok(s)
    }

    /// Every act of a file: YAML documents separated by `---`, each a
    /// scenario run on fresh fakes. Errors name the act (`acts[1].eni...`)
    /// when there is more than one.
    pub fn parse_acts(text: &str) -> anyhow::Result<Vec<Scenario>> {
        let docs: Vec<_> = serde_yaml::Deserializer::from_str(text).collect();
        let many = docs.len() > 1;
        let mut out = Vec::new();
        for (i, doc) in docs.into_iter().enumerate() {
            let path = if many {
                format!("scenario.acts[{i}]")
            } else {
                "scenario".to_owned()
            };
            let s = Scenario::deserialize(doc)
                .map_err(|e| anyhow::anyhow!("{path} is not valid: {e}"))?;
            s.validate(&path)?;
            out.push(s);
        }
        if out.is_empty() {
            anyhow::bail!("scenario is empty: it needs at least region, zones and nodeGroups");
        }
        Ok(out)
    }

    fn validate(&self, path: &str) -> anyhow::Result<()> {
        let s = self;
        if s.zones.is_empty() {
            anyhow::bail!("{path}.zones: needs at least one zone with a vswitchCidr");
        }
        for (i, g) in s.node_groups.iter().enumerate() {
            if !s.zones.iter().any(|z| z.zone == g.zone) {
                anyhow::bail!(
                    "{path}.nodeGroups[{i}].zone: {} is not one of the zones",
                    g.zone
                );
            }
            if mocks::cloud::instance_types::lookup(&g.instance_type).is_none() {
                anyhow::bail!(
                    "{path}.nodeGroups[{i}].type: unknown instance type {}",
                    g.instance_type
                );
            }
        }
        if !s.routes.enabled && !s.deployments.is_empty() {
            anyhow::bail!(
                "{path}.deployments: plain pods take IPs from podCIDRs that only routes mode allocates; enable routes or use createEniDeployment steps"
            );
        }
        // The controller's own validation, with the scenario's names.
        let problems = s.controller_config("http://127.0.0.1:1").problems();
        if let Some(p) = problems.first() {
            // Config paths -> scenario keys where they differ.
            let field = match p.path.as_str() {
                "routes.enabled" => "routes.enabled".to_owned(),
                "routes.batchPauseMs" => "faults.routeDelayMs".to_owned(),
                other if other.starts_with("routes.bgp") => other.to_owned(),
                other => other
                    .strip_prefix("provider.")
                    .or_else(|| other.strip_prefix("routes."))
                    .unwrap_or(other)
                    .to_owned(),
            };
            anyhow::bail!("{path}.{field}: {}", p.problem);
        }
        let mut deployments: BTreeSet<&str> =
            s.deployments.iter().map(|d| d.name.as_str()).collect();
        for (i, step) in s.steps.iter().enumerate() {
            let at = format!("{path}.steps[{i}]");
            match step {
                Step::AddNodes {
                    zone,
                    instance_type,
                    ..
                } => {
                    if !s.zones.iter().any(|z| &z.zone == zone) {
                        anyhow::bail!("{at}.zone: {zone} is not one of the zones");
                    }
                    if mocks::cloud::instance_types::lookup(instance_type).is_none() {
                        anyhow::bail!("{at}.type: unknown instance type {instance_type}");
                    }
                }
                Step::CreateEniDeployment {
                    name, eni_per_pod, ..
                } => {
                    if !s.eni_enabled() {
                        anyhow::bail!("{at}: createEniDeployment needs ENI mode: add `eni: {{}}` to the scenario");
                    }
                    if !dns_label(name) {
                        anyhow::bail!("{at}.name: {name:?} is not a Deployment name (lowercase letters, digits, '-', at most 50)");
                    }
                    if !deployments.insert(name.as_str()) {
                        anyhow::bail!("{at}.name: a Deployment {name} already exists in this act");
                    }
                    if *eni_per_pod == 0 {
                        anyhow::bail!("{at}.eniPerPod: must be at least 1");
                    }
                }
                Step::CreateSharedDeployment { name, .. } => {
                    if s.shared_eni.is_none() {
                        anyhow::bail!("{at}: createSharedDeployment needs shared-ENI mode: add `sharedEni: {{}}` to the scenario");
                    }
                    if !dns_label(name) {
                        anyhow::bail!("{at}.name: {name:?} is not a Deployment name (lowercase letters, digits, '-', at most 50)");
                    }
                    if !deployments.insert(name.as_str()) {
                        anyhow::bail!("{at}.name: a Deployment {name} already exists in this act");
                    }
                }
                Step::Churn { of, per_second, .. } => {
                    if !deployments.contains(of.as_str()) {
                        anyhow::bail!("{at}.of: no Deployment {of} is created before this step");
                    }
                    if !(*per_second > 0.0 && *per_second <= 1000.0) {
                        anyhow::bail!(
                            "{at}.perSecond: {per_second} is not between 0 (excluded) and 1000"
                        );
                    }
                }
                Step::DeletePod { of, .. } if !deployments.contains(of.as_str()) => {
                    anyhow::bail!("{at}.of: no Deployment {of} is created before this step");
                }
                _ => {}
            }
        }
        for (i, d) in s.deployments.iter().enumerate() {
            if !dns_label(&d.name) {
                anyhow::bail!(
                    "{path}.deployments[{i}].name: {:?} is not a Deployment name",
                    d.name
                );
            }
        }
        Ok(())
    }

    pub fn total_nodes(&self) -> u32 {
        self.node_groups.iter().map(|g| g.count).sum()
    }

    pub fn eni_enabled(&self) -> bool {
        self.eni.as_ref().is_some_and(EniSpec::is_enabled)
    }

    /// The extended resource ENI pods request in this act.
    pub fn eni_resource_name(&self) -> String {
        self.controller_config("http://127.0.0.1:1")
            .eni_resource_name()
    }

    /// ENI attaches one node can have in flight: the least of the
    /// controller's `eni.attachConcurrency` and what the fake cloud takes
    /// (`faults.eniOpsPerInstance`, 0 = no limit).
    pub fn attaches_in_flight_per_node(&self) -> usize {
        let ours = self
            .controller_config("http://127.0.0.1:1")
            .eni
            .attach_concurrency;
        let cloud = self.faults.eni_ops_per_instance;
        let n = if cloud == 0 { ours } else { ours.min(cloud) };
        n.max(1) as usize
    }

    pub fn shared_enabled(&self) -> bool {
        self.shared_eni.is_some()
    }

    fn shared_eni_config(&self) -> crate::config::SharedEniConfig {
        let d = crate::config::SharedEniConfig::default();
        let Some(spec) = &self.shared_eni else {
            return d;
        };
        crate::config::SharedEniConfig {
            enabled: true,
            subnets: self
                .zones
                .iter()
                .map(|z| (z.zone.clone().into(), vec![super::vswitch_id(&z.zone)]))
                .collect(),
            security_groups: vec![super::SECURITY_GROUP.into()],
            max_enis: spec.max_enis.unwrap_or(d.max_enis),
            min_pool_size: spec.min_pool_size.unwrap_or(d.min_pool_size),
            max_pool_size: spec.max_pool_size.unwrap_or(d.max_pool_size),
            warm_up_size: spec.warm_up_size.unwrap_or(d.warm_up_size),
            ip_cooldown_seconds: spec.ip_cooldown_seconds.unwrap_or(d.ip_cooldown_seconds),
            excess_release_delay_seconds: spec
                .excess_release_delay_seconds
                .unwrap_or(d.excess_release_delay_seconds),
            ..d
        }
    }

    /// The controller's config for this act, against a cloud at `endpoint`.
    pub fn controller_config(&self, endpoint: &str) -> Config {
        let eni = match &self.eni {
            Some(spec) if spec.is_enabled() => {
                let d = EniConfig::default();
                EniConfig {
                    enabled: true,
                    resource_name: spec.resource_name.clone(),
                    subnets: self
                        .zones
                        .iter()
                        .map(|z| (z.zone.clone().into(), vec![super::vswitch_id(&z.zone)]))
                        .collect(),
                    security_groups: vec![super::SECURITY_GROUP.into()],
                    tags: BTreeMap::new(),
                    gc_interval_seconds: spec.gc_interval_seconds.unwrap_or(d.gc_interval_seconds),
                    gc_grace_seconds: spec.gc_grace_seconds.unwrap_or(d.gc_grace_seconds),
                    capacity_resync_seconds: spec
                        .capacity_resync_seconds
                        .unwrap_or(d.capacity_resync_seconds),
                    poll_interval_ms: spec.poll_interval_ms.unwrap_or(d.poll_interval_ms),
                    attach_timeout_seconds: spec
                        .attach_timeout_seconds
                        .unwrap_or(d.attach_timeout_seconds),
                    attach_concurrency: spec.attach_concurrency.unwrap_or(d.attach_concurrency),
                    ..d
                }
            }
            _ => EniConfig::default(),
        };
        Config {
            cluster_id: super::CLUSTER_ID.into(),
            provider: ProviderConfig {
                kind: ProviderKind::Alibaba,
                region: Some(self.region.clone()),
                endpoint: Some(endpoint.to_owned()),
                rate_limits: self.rate_limits.clone(),
                credentials: None,
                absent: false,
            },
            routes: crate::config::RoutesConfig {
                enabled: self.routes.enabled,
                backend: self.routes.backend,
                bgp: self.routes.bgp.as_ref().map(|b| b.controller_config(&[])),
                route_table_ids: match self.routes.backend {
                    RouteBackend::Cloud => vec![ipam::ids::RouteTableId::new(super::TABLE)],
                    RouteBackend::Bgp => Vec::new(),
                },
                cluster_cidr: Some(self.cluster_cidr),
                allocate_pod_cidrs: true,
                node_cidr_mask_size: self.node_cidr_mask_size,
                aggregate_window_ms: self.aggregate_window_ms,
                resync_seconds: 300,
                batch_pause_ms: self.faults.route_delay_ms,
            },
            eni,
            shared_eni: self.shared_eni_config(),
            controller: crate::config::ControllerSettings {
                listen: "127.0.0.1:0".into(),
                ..Default::default()
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ENI_ACT: &str = r#"
region: cn-hangzhou
zones: [{zone: cn-hangzhou-h, vswitchCidr: 192.168.0.0/20}]
nodeGroups: [{prefix: n, count: 1, type: ecs.c6.xlarge, zone: cn-hangzhou-h}]
routes: {enabled: false}
eni: {resourceName: example.com/eni, gcGraceSeconds: 5}
steps:
  - {action: createEniDeployment, name: a, replicas: 3, eniPerPod: 2, wait: false}
  - {action: deletePod, of: a}
  - {action: wait, phase: settle}
"#;

    fn err(text: &str) -> String {
        Scenario::parse_acts(text).unwrap_err().to_string()
    }

    #[test]
    fn default_scenario_has_a_routes_act_then_an_eni_act_on_one_node() {
        let acts = Scenario::parse_acts(DEFAULT_SCENARIO).unwrap();
        assert_eq!(acts.len(), 2);
        assert_eq!(acts[0].total_nodes(), 6);
        assert_eq!(acts[0].steps.len(), 4);
        assert!(acts[0].routes.enabled && !acts[0].eni_enabled());
        let eni = &acts[1];
        assert!(eni.eni_enabled() && !eni.routes.enabled);
        assert_eq!(eni.total_nodes(), 1, "the scheduler must see one node");
        assert_eq!(eni.node_groups[0].instance_type, "ecs.c6.xlarge");
        assert_eq!(eni.eni_resource_name(), "aliyun/eni");
    }

    #[test]
    fn eni_section_becomes_the_controller_eni_config() {
        let s = Scenario::parse(ENI_ACT).unwrap();
        let c = s.controller_config("http://127.0.0.1:1");
        assert!(c.eni.enabled && !c.routes.enabled);
        assert_eq!(c.eni_resource_name(), "example.com/eni");
        assert_eq!(c.eni.gc_grace_seconds, 5);
        assert_eq!(
            c.eni.gc_interval_seconds,
            EniConfig::default().gc_interval_seconds
        );
        let subnets: Vec<String> = c.eni.subnets[&"cn-hangzhou-h".into()]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(subnets, ["vsw-cn-hangzhou-h"]);
        assert_eq!(c.eni.security_groups.len(), 1);
        assert!(c.problems().is_empty(), "{:?}", c.problems());
        match &s.steps[0] {
            Step::CreateEniDeployment {
                replicas,
                eni_per_pod,
                wait,
                ..
            } => assert_eq!((*replicas, *eni_per_pod, *wait), (3, 2, false)),
            other => panic!("{other:?}"),
        }
        assert!(!s.steps[0].waits() && s.steps[1].waits() && s.steps[2].waits());
    }

    #[test]
    fn routes_only_scenario_keeps_eni_off() {
        let acts = Scenario::parse_acts(DEFAULT_SCENARIO).unwrap();
        let c = acts[0].controller_config("http://127.0.0.1:1");
        assert!(c.routes.enabled && !c.eni.enabled);
    }

    #[test]
    fn bad_zone_is_named() {
        let text = DEFAULT_SCENARIO.replace("zone: cn-hangzhou-i}", "zone: cn-hangzhou-x}");
        let e = err(&text);
        assert!(e.contains("acts[0].nodeGroups[1].zone"), "{e}");
    }

    #[test]
    fn bad_eni_values_name_the_field() {
        let e = err(&ENI_ACT.replace("example.com/eni", "eni"));
        assert!(e.contains("scenario.eni.resourceName"), "{e}");
        let e = err(&ENI_ACT.replace("gcGraceSeconds: 5", "gcIntervalSeconds: 0"));
        assert!(e.contains("scenario.eni.gcIntervalSeconds"), "{e}");
        let e = err(&ENI_ACT.replace("eniPerPod: 2", "eniPerPod: 0"));
        assert!(e.contains("scenario.steps[0].eniPerPod"), "{e}");
        let e = err(&ENI_ACT.replace("of: a", "of: b"));
        assert!(e.contains("scenario.steps[1].of"), "{e}");
        let e = err(&ENI_ACT.replace("gcGraceSeconds: 5", "gcGraceSecs: 5"));
        assert!(e.contains("gcGraceSecs"), "{e}");
        let e = err(&ENI_ACT.replace("name: a,", "name: A_b,"));
        assert!(e.contains("scenario.steps[0].name"), "{e}");
        let e = err(&ENI_ACT.replace("gcGraceSeconds: 5", "gcGraceSeconds: soon"));
        assert!(
            e.contains("scenario is not valid: eni.gcGraceSeconds"),
            "{e}"
        );
        // Inside a step the YAML library knows the list and the line only.
        let e = err(&ENI_ACT.replace("replicas: 3,", "replicas: many,"));
        assert!(e.contains("steps") && e.contains("line 8"), "{e}");
    }

    #[test]
    fn eni_steps_need_eni_mode_and_some_mode_is_on() {
        let no_eni = ENI_ACT.replace(
            "eni: {resourceName: example.com/eni, gcGraceSeconds: 5}",
            "",
        );
        let e = err(&no_eni);
        assert!(e.contains("scenario.routes.enabled"), "{e}");
        let routes_only = no_eni.replace("routes: {enabled: false}", "");
        let e = err(&routes_only);
        assert!(
            e.contains("scenario.steps[0]: createEniDeployment needs ENI mode"),
            "{e}"
        );
        let off = ENI_ACT.replace("gcGraceSeconds: 5}", "enabled: false}");
        assert!(err(&off).contains("scenario.routes.enabled"));
    }

    #[test]
    fn bad_rate_limit_names_the_api() {
        let text = format!("{ENI_ACT}rateLimits: {{CreateNetworkInterfaces: 5}}\n");
        let e = err(&text);
        assert!(
            e.contains("scenario.rateLimits.CreateNetworkInterfaces"),
            "{e}"
        );
    }

    #[test]
    fn shipped_scenario_files_parse() {
        let burst =
            Scenario::parse_acts(include_str!("../../../scenarios/eni-burst.yaml")).unwrap();
        assert_eq!(burst.len(), 1);
        let b = &burst[0];
        assert_eq!(b.total_nodes(), 100);
        let pods: u32 = b
            .steps
            .iter()
            .map(|s| match s {
                Step::CreateEniDeployment { replicas, .. } => *replicas,
                _ => 0,
            })
            .sum();
        assert_eq!(pods, 300);
        // Every node type leaves at least 3 secondary ENIs: 300 pods fit.
        for g in &b.node_groups {
            let t = mocks::cloud::instance_types::lookup(&g.instance_type).unwrap();
            assert!(t.secondary_enis() >= 3, "{}", g.instance_type);
        }
        for (api, rate) in [
            ("CreateNetworkInterface", 500),
            ("AttachNetworkInterface", 500),
            ("DeleteNetworkInterface", 500),
            ("DetachNetworkInterface", 400),
            ("DescribeNetworkInterfaces", 800),
            ("DescribeVSwitches", 300),
        ] {
            assert_eq!(b.rate_limits.get(api), Some(&rate), "{api}");
        }
        assert_eq!(b.faults.attach_delay_ms, 2000);
        let routes =
            Scenario::parse_acts(include_str!("../../../scenarios/routes-1000.yaml")).unwrap();
        assert_eq!(routes[0].total_nodes(), 1000);
        assert!(routes[0].routes.enabled && !routes[0].eni_enabled());
        for (text, nodes, pods) in [
            (
                include_str!("../../../scenarios/shared-eni-burst.yaml"),
                50,
                1000,
            ),
            (
                include_str!("../../../scenarios/shared-eni-churn.yaml"),
                50,
                500,
            ),
        ] {
            let acts = Scenario::parse_acts(text).unwrap();
            let s = &acts[0];
            assert_eq!(s.total_nodes(), nodes);
            assert!(s.shared_enabled() && !s.routes.enabled);
            let created: u32 = s
                .steps
                .iter()
                .map(|st| match st {
                    Step::CreateSharedDeployment { replicas, .. } => *replicas,
                    _ => 0,
                })
                .sum();
            assert_eq!(created, pods);
            let c = s.controller_config("http://127.0.0.1:1");
            assert!(
                c.shared_eni.enabled && c.problems().is_empty(),
                "{:?}",
                c.problems()
            );
            assert_eq!(c.shared_eni.max_enis, 2);
        }
    }

    #[test]
    fn bgp_scenario_becomes_the_controller_bgp_backend() {
        let acts = Scenario::parse_acts(include_str!("../../../scenarios/bgp-racks.yaml")).unwrap();
        let s = &acts[0];
        let spec = s.routes.bgp().unwrap();
        let c = s.controller_config("http://127.0.0.1:1");
        assert!(c.problems().is_empty(), "{:?}", c.problems());
        assert_eq!(c.routes.backend, RouteBackend::Bgp);
        assert!(c.routes.route_table_ids.is_empty());
        let bgp = spec.controller_config(&[1790, 1791]);
        assert_eq!(
            bgp.peers.iter().map(|p| p.port).collect::<Vec<_>>(),
            [1790, 1791]
        );
        assert_eq!(bgp.local_asn_for(&bgp.peers[1]), 65001);
        assert_eq!(bgp.hold_time_seconds, 9);
        // The controller's own checks, named by the scenario's keys.
        let e = err(&include_str!("../../../scenarios/bgp-racks.yaml")
            .replace("localAsn: 65001", "localAsn: 0"));
        assert!(e.contains("scenario.routes.bgp.peers[1].localAsn"), "{e}");
        let e = err(&include_str!("../../../scenarios/bgp-racks.yaml")
            .replace("localAsn: 64512", "locallAsn: 64512"));
        assert!(e.contains("locallAsn"), "{e}");
    }

    #[test]
    fn shared_steps_need_shared_mode_and_churn_a_created_deployment() {
        let act = "region: cn-hangzhou\nzones: [{zone: cn-hangzhou-h, vswitchCidr: 192.168.0.0/20}]\nnodeGroups: [{prefix: h, count: 1, type: ecs.g7.xlarge, zone: cn-hangzhou-h}]\nroutes: {enabled: false}\n";
        let no_shared = format!("{act}eni: {{}}\nsteps:\n  - {{action: createSharedDeployment, name: a, replicas: 1}}\n");
        assert!(
            err(&no_shared).contains("needs shared-ENI mode"),
            "{}",
            err(&no_shared)
        );
        let churn = format!(
            "{act}sharedEni: {{}}\nsteps:\n  - {{action: churn, of: a, cycles: 1, perSecond: 1}}\n"
        );
        assert!(err(&churn).contains("steps[0].of"), "{}", err(&churn));
        let rate = format!("{act}sharedEni: {{}}\nsteps:\n  - {{action: createSharedDeployment, name: a, replicas: 1}}\n  - {{action: churn, of: a, cycles: 1, perSecond: 0}}\n");
        assert!(err(&rate).contains("perSecond"), "{}", err(&rate));
    }

    #[test]
    fn plain_deployments_need_routes() {
        let text = format!("{ENI_ACT}deployments: [{{name: web, replicas: 1}}]\n");
        assert!(err(&text).contains("scenario.deployments"));
    }
}
