//! The simulation scenario file: a cluster (zones, node groups), cloud
//! latencies, rate limits and faults, and steps over time. With no file the
//! built-in default runs: routes mode on a few nodes in two zones.

use ipnet::Ipv4Net;
use mocks::cloud::faults::FaultsSpec;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

pub const DEFAULT_SCENARIO: &str = r#"
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
"#;

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Scenario {
    #[serde(default = "default_name")]
    pub name: String,
    pub region: String,
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
}

fn default_name() -> String {
    "unnamed scenario".into()
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
}

impl Scenario {
    pub fn parse(text: &str) -> anyhow::Result<Scenario> {
        let s: Scenario = serde_yaml::from_str(text)
            .map_err(|e| anyhow::anyhow!("scenario is not valid: {e}"))?;
        if s.zones.is_empty() {
            anyhow::bail!("scenario.zones: needs at least one zone with a vswitchCidr");
        }
        for (i, g) in s.node_groups.iter().enumerate() {
            if !s.zones.iter().any(|z| z.zone == g.zone) {
                anyhow::bail!(
                    "scenario.nodeGroups[{i}].zone: {} is not one of scenario.zones",
                    g.zone
                );
            }
            if mocks::cloud::instance_types::lookup(&g.instance_type).is_none() {
                anyhow::bail!(
                    "scenario.nodeGroups[{i}].type: unknown instance type {}",
                    g.instance_type
                );
            }
        }
        Ok(s)
    }

    pub fn total_nodes(&self) -> u32 {
        self.node_groups.iter().map(|g| g.count).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_scenario_parses() {
        let s = Scenario::parse(DEFAULT_SCENARIO).unwrap();
        assert_eq!(s.total_nodes(), 6);
        assert_eq!(s.steps.len(), 4);
    }

    #[test]
    fn bad_zone_is_named() {
        let text = DEFAULT_SCENARIO.replace("zone: cn-hangzhou-i}", "zone: cn-hangzhou-x}");
        let err = Scenario::parse(&text).unwrap_err().to_string();
        assert!(err.contains("nodeGroups[1].zone"), "{err}");
    }
}
