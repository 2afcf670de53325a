//! What the simulation shows at the end: `kubectl get nodes -o wide`-like and
//! `get pods -o wide`-like tables, the VPC route table, Events, and figures.

use super::{Sim, TABLE};
use ipam::ids::RouteTableId;
use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, ListParams};
use kube::ResourceExt;
use providers::model::NextHop;

/// Left-aligned columns, like kubectl.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if i < widths.len() {
                widths[i] = widths[i].max(cell.chars().count());
            }
        }
    }
    let mut out = String::new();
    let line = |cells: Vec<String>, out: &mut String| {
        let mut l = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                l.push_str(c);
            } else {
                l.push_str(&format!("{c:<w$}   ", w = widths[i]));
            }
        }
        out.push_str(l.trim_end());
        out.push('\n');
    };
    line(headers.iter().map(|s| s.to_string()).collect(), &mut out);
    for row in rows {
        line(row.clone(), &mut out);
    }
    out
}

pub async fn nodes_table(client: &kube::Client) -> anyhow::Result<String> {
    let nodes: Api<Node> = Api::all(client.clone());
    let mut rows = Vec::new();
    for n in nodes.list(&ListParams::default()).await?.items {
        let network = crate::kubeutil::network_unavailable(&n)
            .map(|(status, reason)| {
                if status == "False" {
                    format!("Ready ({reason})")
                } else {
                    format!("Unavailable ({reason})")
                }
            })
            .unwrap_or_else(|| "-".into());
        let ip = n
            .status
            .as_ref()
            .and_then(|s| s.addresses.as_ref())
            .and_then(|a| a.iter().find(|a| a.type_ == "InternalIP"))
            .map(|a| a.address.clone())
            .unwrap_or_default();
        rows.push(vec![
            n.name_any(),
            network,
            ip,
            crate::kubeutil::provider_id(&n).unwrap_or("-").to_owned(),
            n.labels()
                .get(crate::kubeutil::INSTANCE_TYPE_LABEL)
                .cloned()
                .unwrap_or_default(),
            crate::kubeutil::zone(&n).unwrap_or_default(),
            crate::kubeutil::pod_cidr(&n).unwrap_or_else(|| "<none>".into()),
        ]);
    }
    Ok(table(
        &[
            "NAME",
            "NETWORK",
            "INTERNAL-IP",
            "PROVIDER-ID",
            "TYPE",
            "ZONE",
            "POD-CIDR",
        ],
        &rows,
    ))
}

pub async fn pods_table(client: &kube::Client) -> anyhow::Result<String> {
    let pods: Api<Pod> = Api::all(client.clone());
    let mut rows = Vec::new();
    for p in pods.list(&ListParams::default()).await?.items {
        let status = p.status.clone().unwrap_or_default();
        rows.push(vec![
            p.namespace().unwrap_or_default(),
            p.name_any(),
            status.phase.clone().unwrap_or_default(),
            status.pod_ip.clone().unwrap_or_else(|| "<none>".into()),
            p.spec
                .as_ref()
                .and_then(|s| s.node_name.clone())
                .unwrap_or_else(|| "<none>".into()),
        ]);
    }
    Ok(table(&["NAMESPACE", "NAME", "STATUS", "IP", "NODE"], &rows))
}

pub fn route_table(sim: &Sim) -> String {
    let rows: Vec<Vec<String>> = sim
        .world()
        .route_entries(&RouteTableId::new(TABLE))
        .iter()
        .map(|e| {
            vec![
                e.destination.to_string(),
                match &e.next_hop {
                    NextHop::Instance(i) => i.to_string(),
                    NextHop::Local => "local".into(),
                    NextHop::Other { kind, id } => format!("{kind}:{id}"),
                },
                format!("{:?}", e.status),
                if e.system {
                    "System".into()
                } else {
                    "Custom".into()
                },
                e.name.clone().unwrap_or_default(),
            ]
        })
        .collect();
    table(
        &["DESTINATION", "NEXT-HOP", "STATUS", "TYPE", "NAME"],
        &rows,
    )
}

pub async fn events_table(client: &kube::Client, limit: usize) -> anyhow::Result<String> {
    let events: Api<Event> = Api::all(client.clone());
    let mut items = events.list(&ListParams::default()).await?.items;
    items.sort_by_key(|e| {
        e.metadata
            .resource_version
            .as_deref()
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    });
    let skip = items.len().saturating_sub(limit);
    let rows: Vec<Vec<String>> = items
        .iter()
        .skip(skip)
        .map(|e| {
            let regarding = e
                .regarding
                .as_ref()
                .map(|r| {
                    format!(
                        "{}/{}",
                        r.kind.clone().unwrap_or_default().to_lowercase(),
                        r.name.clone().unwrap_or_default()
                    )
                })
                .unwrap_or_default();
            vec![
                e.type_.clone().unwrap_or_default(),
                e.reason.clone().unwrap_or_default(),
                regarding,
                e.note.clone().unwrap_or_default(),
            ]
        })
        .collect();
    Ok(table(&["TYPE", "REASON", "OBJECT", "MESSAGE"], &rows))
}

pub async fn print(sim: &Sim, quiet: bool) -> anyhow::Result<()> {
    if !quiet {
        println!(
            "\n$ kubectl get nodes -o wide\n{}",
            nodes_table(&sim.client).await?
        );
        println!(
            "$ kubectl get pods -A -o wide\n{}",
            pods_table(&sim.client).await?
        );
        println!("VPC route table {TABLE}:\n{}", route_table(sim));
        println!(
            "$ kubectl get events (last 25)\n{}",
            events_table(&sim.client, 25).await?
        );
    }
    println!("Figures:");
    let rows: Vec<Vec<String>> = sim
        .phases
        .iter()
        .map(|p| {
            vec![
                p.name.clone(),
                if p.converged {
                    "yes".into()
                } else {
                    "NO".into()
                },
                format!("{:.1}s", p.took.as_secs_f64()),
                p.mutating_calls.to_string(),
                p.calls
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join(" "),
            ]
        })
        .collect();
    println!(
        "{}",
        table(
            &[
                "PHASE",
                "CONVERGED",
                "TIME",
                "MUTATING-CALLS",
                "CLOUD CALLS BY ACTION"
            ],
            &rows
        )
    );
    if let Some(cloud) = &sim.cloud {
        let stats = cloud.stats().snapshot();
        let throttles: u64 = stats.values().map(|c| c.throttles).sum();
        let retries: u64 = stats.values().map(|c| c.retries).sum();
        let held: u64 = stats.values().map(|c| c.rate_limited).sum();
        println!(
            "last controller replica: {throttles} throttled answers, {retries} retries, {held} calls held back by its own rate limits"
        );
    }
    Ok(())
}
