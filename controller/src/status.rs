//! `status`: what the cluster holds of the cloud's networking, read-only
//! (kube lists and cloud describe/list calls, nothing else). Per node, the
//! secondary ENIs attached against those its instance type allows; per
//! configured subnet (vSwitch), the free addresses, those the cluster holds
//! (ENIs tagged as this cluster's) and, with `--watch-seconds`, when it runs
//! out at the pace seen between two describes (`ipam::forecast`); per route
//! table the controller writes, entries ours and foreign against the
//! table's quota. kubectl-like tables, or one JSON document.
//!
//! The hour-long forecast is the controller's own: it keeps a rolling hour
//! of samples from its subnet describes and exports
//! `vpc_eni_subnet_exhaustion_seconds`. Per node in shared-ENI mode, the
//! secondary IPs of its shared ENIs that pods' allocations name (used) and
//! the rest (pooled: free or cooling down); `-` (`null` in JSON) on nodes
//! without shared ENIs.

use crate::config::Config;
use crate::kubeutil;
use crate::routes::{observed_route, resolve_tables, route_table_quota};
use anyhow::Context as _;
use ipam::eni::{is_owned, secondary_eni_slots};
use ipam::forecast::{forecast, human, Sample};
use ipam::ids::{InstanceId, SubnetId, VpcId};
use ipam::provider_id::instance_from_provider_id;
use ipam::routes::Ownership;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, ListParams};
use kube::ResourceExt;
use providers::model::Subnet;
use providers::Cloud;
use serde::Serialize;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How the report is printed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    /// Aligned tables.
    #[default]
    Table,
    /// The tables with more columns.
    Wide,
    /// One JSON document.
    Json,
}

/// Everything `status` shows.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Report {
    pub cluster: String,
    pub provider: String,
    pub nodes: Vec<NodeStatus>,
    pub subnets: Vec<SubnetStatus>,
    pub route_tables: Vec<TableStatus>,
    /// Seconds between the two subnet describes; 0 = no forecast.
    pub watch_seconds: u64,
    /// What could not be shown, and why.
    pub notes: Vec<String>,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct NodeStatus {
    pub name: String,
    pub instance: Option<String>,
    pub instance_type: Option<String>,
    pub zone: Option<String>,
    /// Secondary ENIs attached (ours and others').
    pub enis: Option<u32>,
    /// Of those, tagged as this cluster's.
    pub enis_ours: Option<u32>,
    /// Secondary ENIs the instance type allows.
    pub enis_allowed: Option<u32>,
    /// Shared-ENI mode: secondary IPs of the node's shared ENIs that pods'
    /// allocations name / the rest; `null` without shared ENIs.
    pub ips_used: Option<u32>,
    pub ips_pooled: Option<u32>,
    /// Why the numbers are missing.
    pub problem: Option<String>,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct SubnetStatus {
    pub id: String,
    pub zone: String,
    pub cidr: Option<String>,
    /// Free addresses at the (last) describe; `None` when the cloud did
    /// not return the subnet.
    pub free_ips: Option<u32>,
    /// Addresses on ENIs tagged as this cluster's (primary + secondary).
    pub held_ips: u32,
    /// Addresses consumed per hour between the two describes.
    pub consumed_per_hour: Option<f64>,
    /// Seconds until no address is left at that rate; `None` when not
    /// falling or not watched.
    pub exhausted_in_seconds: Option<u64>,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct TableStatus {
    pub id: String,
    /// Entries this controller owns (`ipam::routes::Ownership`).
    pub ours: u32,
    /// Custom entries that are not ours.
    pub foreign: u32,
    /// The cloud's own entries (not counted against the quota).
    pub system: u32,
    pub quota: u32,
    pub quota_left: u32,
}

/// The `status` command: kube client and cloud built as `run` builds them.
pub async fn command(
    config: &Config,
    kubeconfig: Option<PathBuf>,
    output: Output,
    watch: Duration,
) -> anyhow::Result<()> {
    crate::run::install_crypto_provider();
    let client = crate::run::kube_client(kubeconfig).await?;
    let cloud = crate::run::build_cloud(config).await?;
    let report = collect(config, client, cloud, watch).await?;
    print!("{}", render(&report, output)?);
    Ok(())
}

/// Gather the report. Read-only: kube lists, cloud describes and lists.
pub async fn collect(
    config: &Config,
    client: kube::Client,
    cloud: Arc<dyn Cloud>,
    watch: Duration,
) -> anyhow::Result<Report> {
    let cluster = config.cluster();
    let mut report = Report {
        cluster: cluster.as_str().to_owned(),
        provider: cloud.name().to_owned(),
        watch_seconds: watch.as_secs(),
        ..Report::default()
    };
    let nodes: Api<Node> = Api::all(client.clone());
    let mut nodes = nodes
        .list(&ListParams::default())
        .await
        .context("cannot list nodes")?
        .items;
    nodes.sort_by_key(|n| n.name_any());

    // Owned ENIs, once: per node "ours" and per subnet "held".
    let owned = {
        let mut enis = cloud
            .describe_enis(&crate::eni::lifecycle::owned_filter(&cluster, None))
            .await
            .context("cannot list the cluster's ENIs")?;
        enis.retain(|e| is_owned(&e.tags, &cluster));
        enis
    };

    // Shared-mode IPs the pods' allocations name, per node.
    let pods: Api<k8s_openapi::api::core::v1::Pod> = Api::all(client);
    let mut recorded: std::collections::BTreeMap<String, std::collections::BTreeSet<String>> =
        Default::default();
    for pod in pods
        .list(&ListParams::default())
        .await
        .context("cannot list pods")?
        .items
    {
        if let Some(a) = pod
            .metadata
            .annotations
            .as_ref()
            .and_then(ipam::allocation::PodAllocation::from_annotations)
            .filter(|a| a.is_shared())
        {
            recorded
                .entry(a.first.node.clone())
                .or_default()
                .insert(a.first.ip);
        }
    }

    let mut vpc: Option<VpcId> = None;
    for node in &nodes {
        let (mut row, node_vpc) = node_status(cloud.as_ref(), node, &owned).await;
        if let Some(instance) = &row.instance {
            let shared: Vec<&providers::model::Eni> = owned
                .iter()
                .filter(|e| ipam::eni::is_shared(&e.tags))
                .filter(|e| e.instance_id.as_ref().map(|i| i.as_str()) == Some(instance.as_str()))
                .collect();
            if !shared.is_empty() {
                let on: Vec<String> = shared
                    .iter()
                    .flat_map(|e| e.secondary_ips.iter().map(ToString::to_string))
                    .collect();
                let names = recorded.get(&row.name);
                let used = on
                    .iter()
                    .filter(|ip| names.is_some_and(|n| n.contains(*ip)))
                    .count();
                row.ips_used = Some(u32::try_from(used).unwrap_or(u32::MAX));
                row.ips_pooled = Some(u32::try_from(on.len() - used).unwrap_or(u32::MAX));
            }
        }
        vpc = vpc.or(node_vpc);
        report.nodes.push(row);
    }

    let ids: Vec<SubnetId> = config.eni.subnets.values().flatten().cloned().collect();
    if ids.is_empty() {
        report
            .notes
            .push("no subnet in eni.subnets: no subnet to show".into());
    } else {
        let started = Instant::now();
        let first = cloud
            .describe_subnets(&ids)
            .await
            .context("cannot describe the subnets")?;
        let second = if watch.is_zero() {
            report.notes.push("no forecast without --watch-seconds N (two describes N seconds apart); the controller exports the last hour's as vpc_eni_subnet_exhaustion_seconds".into());
            None
        } else {
            tokio::time::sleep(watch).await;
            let again = cloud
                .describe_subnets(&ids)
                .await
                .context("cannot describe the subnets")?;
            Some((started.elapsed(), again))
        };
        for (zone, zone_ids) in &config.eni.subnets {
            for id in zone_ids {
                report.subnets.push(subnet_status(
                    id,
                    zone.as_str(),
                    &first,
                    second.as_ref(),
                    &owned,
                ));
            }
        }
    }

    match vpc {
        Some(vpc) => {
            report.route_tables = route_status(config, cloud.as_ref(), &vpc).await?;
        }
        None => report
            .notes
            .push("no node names an instance the cloud knows: the VPC, and so its route tables, is unknown".into()),
    }
    Ok(report)
}

async fn node_status(
    cloud: &dyn Cloud,
    node: &Node,
    owned: &[providers::model::Eni],
) -> (NodeStatus, Option<VpcId>) {
    let mut row = NodeStatus {
        name: node.name_any(),
        zone: kubeutil::zone(node),
        ..NodeStatus::default()
    };
    let instance: InstanceId = match kubeutil::provider_id(node).map(instance_from_provider_id) {
        Some(Ok(i)) => i,
        Some(Err(e)) => {
            row.problem = Some(e.to_string());
            return (row, None);
        }
        None => {
            row.problem = Some("spec.providerID is empty".into());
            return (row, None);
        }
    };
    row.instance = Some(instance.to_string());
    let found = match cloud.describe_instance(&instance).await {
        Ok(i) => i,
        Err(e) => {
            row.problem = Some(format!("instance {instance}: {e}"));
            return (row, None);
        }
    };
    row.instance_type = Some(found.instance_type.to_string());
    row.zone = Some(found.zone.to_string());
    let secondary: Vec<_> = found.enis.iter().filter(|e| !e.primary).collect();
    row.enis = Some(u32::try_from(secondary.len()).unwrap_or(u32::MAX));
    let ours = secondary
        .iter()
        .filter(|a| owned.iter().any(|e| e.id == a.eni_id))
        .count();
    row.enis_ours = Some(u32::try_from(ours).unwrap_or(u32::MAX));
    match cloud.instance_type_limits(&found.instance_type).await {
        Ok(l) => row.enis_allowed = Some(secondary_eni_slots(l.max_enis)),
        Err(e) => {
            row.problem = Some(format!("instance type {}: {e}", found.instance_type));
        }
    }
    (row, Some(found.vpc_id))
}

fn subnet_status(
    id: &SubnetId,
    zone: &str,
    first: &[Subnet],
    second: Option<&(Duration, Vec<Subnet>)>,
    owned: &[providers::model::Eni],
) -> SubnetStatus {
    let held: usize = owned
        .iter()
        .filter(|e| &e.subnet_id == id)
        .map(|e| 1 + e.secondary_ips.len())
        .sum();
    let before = first.iter().find(|s| &s.id == id);
    let after = second.and_then(|(span, subnets)| {
        subnets
            .iter()
            .find(|s| &s.id == id)
            .map(|s| (*span, s.free_ips))
    });
    let last = before.map(|s| s.free_ips);
    let mut row = SubnetStatus {
        id: id.to_string(),
        zone: before.map_or_else(|| zone.to_owned(), |s| s.zone.to_string()),
        cidr: before.map(|s| s.cidr.to_string()),
        free_ips: after.map(|(_, f)| f).or(last),
        held_ips: u32::try_from(held).unwrap_or(u32::MAX),
        ..SubnetStatus::default()
    };
    if let (Some(b), Some((span, free))) = (before, after) {
        let samples = [
            Sample {
                at: Duration::ZERO,
                free: b.free_ips,
            },
            Sample { at: span, free },
        ];
        if let Some(f) = forecast(&samples) {
            row.consumed_per_hour = Some(f.consumed_per_hour);
            row.exhausted_in_seconds = f.exhausted_in.map(|d| d.as_secs());
        }
    }
    row
}

async fn route_status(
    config: &Config,
    cloud: &dyn Cloud,
    vpc: &VpcId,
) -> anyhow::Result<Vec<TableStatus>> {
    let cluster = config.cluster();
    let tables = resolve_tables(cloud, vpc, &config.routes.route_table_ids, &cluster).await?;
    let quota = route_table_quota(cloud.name());
    let mut out = Vec::new();
    for table in tables {
        let entries = cloud
            .list_route_entries(&table.id)
            .await
            .with_context(|| format!("cannot list route table {}", table.id))?;
        let ownership = config
            .routes
            .cluster_cidr
            .map(|cidr| Ownership::new(&cluster, cidr, table.owned));
        let (mut ours, mut foreign, mut system) = (0u32, 0u32, 0u32);
        for e in &entries {
            let observed = observed_route(e);
            if observed.system {
                system += 1;
            } else if ownership.as_ref().is_some_and(|o| o.owns(&observed)) {
                ours += 1;
            } else {
                foreign += 1;
            }
        }
        out.push(TableStatus {
            id: table.id.to_string(),
            ours,
            foreign,
            system,
            quota,
            quota_left: quota.saturating_sub(ours + foreign),
        });
    }
    Ok(out)
}

fn opt<T: ToString>(v: Option<T>) -> String {
    v.map_or_else(|| "-".to_owned(), |v| v.to_string())
}

/// Columns padded to their widest cell, three spaces apart, as kubectl prints.
fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.len());
        }
    }
    let mut out = String::new();
    let line = |cells: Vec<&str>, out: &mut String| {
        let last = cells.len().saturating_sub(1);
        for (i, (cell, w)) in cells.iter().zip(&widths).enumerate() {
            if i == last {
                out.push_str(cell);
            } else {
                out.push_str(&format!("{cell:<w$}   "));
            }
        }
        out.push('\n');
    };
    line(header.to_vec(), &mut out);
    for row in rows {
        line(row.iter().map(String::as_str).collect(), &mut out);
    }
    out
}

fn forecast_cell(s: &SubnetStatus, watched: bool) -> String {
    if !watched {
        return "-".into();
    }
    match (s.consumed_per_hour, s.exhausted_in_seconds) {
        (_, Some(secs)) => human(Duration::from_secs(secs)),
        (Some(_), None) => "not falling".into(),
        (None, _) => "-".into(),
    }
}

/// The report as tables (`Table`, `Wide`) or JSON.
pub fn render(report: &Report, output: Output) -> anyhow::Result<String> {
    if output == Output::Json {
        return Ok(serde_json::to_string_pretty(report)? + "\n");
    }
    let wide = output == Output::Wide;
    let mut out = String::new();

    let mut header = vec!["NODE", "INSTANCE", "TYPE", "ENIS", "ALLOWED"];
    if wide {
        header.extend(["ZONE", "OURS", "FREE", "IPS", "POOLED", "PROBLEM"]);
    }
    let rows: Vec<Vec<String>> = report
        .nodes
        .iter()
        .map(|n| {
            let mut row = vec![
                n.name.clone(),
                opt(n.instance.as_ref()),
                opt(n.instance_type.as_ref()),
                opt(n.enis),
                opt(n.enis_allowed),
            ];
            if wide {
                let free = n.enis_allowed.zip(n.enis).map(|(a, e)| a.saturating_sub(e));
                row.extend([
                    opt(n.zone.as_ref()),
                    opt(n.enis_ours),
                    opt(free),
                    opt(n.ips_used),
                    opt(n.ips_pooled),
                    opt(n.problem.as_ref()),
                ]);
            }
            row
        })
        .collect();
    out.push_str(&table(&header, &rows));

    if !report.subnets.is_empty() {
        out.push('\n');
        let mut header = vec!["SUBNET", "ZONE", "CIDR", "FREE", "HELD", "FORECAST"];
        if wide {
            header.push("RATE/H");
        }
        let watched = report.watch_seconds > 0;
        let rows: Vec<Vec<String>> = report
            .subnets
            .iter()
            .map(|s| {
                let mut row = vec![
                    s.id.clone(),
                    s.zone.clone(),
                    opt(s.cidr.as_ref()),
                    opt(s.free_ips),
                    s.held_ips.to_string(),
                    forecast_cell(s, watched),
                ];
                if wide {
                    row.push(opt(s.consumed_per_hour.map(|r| format!("{r:.1}"))));
                }
                row
            })
            .collect();
        out.push_str(&table(&header, &rows));
    }

    if !report.route_tables.is_empty() {
        out.push('\n');
        let mut header = vec!["TABLE", "OURS", "FOREIGN", "QUOTA-LEFT"];
        if wide {
            header.extend(["SYSTEM", "QUOTA"]);
        }
        let rows: Vec<Vec<String>> = report
            .route_tables
            .iter()
            .map(|t| {
                let mut row = vec![
                    t.id.clone(),
                    t.ours.to_string(),
                    t.foreign.to_string(),
                    t.quota_left.to_string(),
                ];
                if wide {
                    row.extend([t.system.to_string(), t.quota.to_string()]);
                }
                row
            })
            .collect();
        out.push_str(&table(&header, &rows));
    }

    for note in &report.notes {
        out.push_str(&format!("\nnote: {note}"));
    }
    if !report.notes.is_empty() {
        out.push('\n');
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_like_kubectl() {
        let t = table(
            &["NODE", "ENIS"],
            &[
                vec!["a-long-name".into(), "1".into()],
                vec!["b".into(), "12".into()],
            ],
        );
        assert_eq!(t, "NODE          ENIS\na-long-name   1\nb             12\n");
    }

    #[test]
    fn a_forecast_cell_says_why_there_is_none() {
        let mut s = SubnetStatus::default();
        assert_eq!(forecast_cell(&s, false), "-");
        s.consumed_per_hour = Some(0.0);
        assert_eq!(forecast_cell(&s, true), "not falling");
        s.consumed_per_hour = Some(60.0);
        s.exhausted_in_seconds = Some(7200);
        assert_eq!(forecast_cell(&s, true), "2h00m");
    }
}
