//! What the simulation shows at the end of an act: `kubectl get nodes -o
//! wide`-like and `get pods -o wide`-like tables, the VPC route table or the
//! ENIs in the cloud and the nodes' ENI capacity, Events, a line per BGP
//! peer (`routes.backend: bgp`), and figures
//! (per phase; for ENI pods the time from binding to allocation beside the
//! lower bound the rate limits allow).

use super::bound::{AllocationFigures, Percentiles};
use super::{Sim, CLUSTER_ID, TABLE};
use ipam::ids::RouteTableId;
use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
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
    events_with(client, &[], limit).await
}

/// `kubectl get nodes` with the ENI resource's capacity and allocatable.
pub async fn eni_capacity_table(client: &kube::Client, resource: &str) -> anyhow::Result<String> {
    let nodes: Api<Node> = Api::all(client.clone());
    let mut rows = Vec::new();
    for n in nodes.list(&ListParams::default()).await?.items {
        let status = n.status.clone().unwrap_or_default();
        let get = |m: Option<&std::collections::BTreeMap<String, Quantity>>| {
            m.and_then(|m| m.get(resource))
                .map(|q| q.0.clone())
                .unwrap_or_else(|| "<none>".into())
        };
        rows.push(vec![
            n.name_any(),
            n.labels()
                .get(crate::kubeutil::INSTANCE_TYPE_LABEL)
                .cloned()
                .unwrap_or_default(),
            crate::kubeutil::zone(&n).unwrap_or_default(),
            get(status.capacity.as_ref()),
            get(status.allocatable.as_ref()),
        ]);
    }
    Ok(table(
        &[
            "NAME",
            "TYPE",
            "ZONE",
            &format!("CAPACITY({resource})"),
            &format!("ALLOCATABLE({resource})"),
        ],
        &rows,
    ))
}

/// `kubectl get pods -o wide` of the ENI pods, with the ENI(s) from the
/// allocation annotation.
pub async fn eni_pods_table(client: &kube::Client, resource: &str) -> anyhow::Result<String> {
    let pods: Api<Pod> = Api::all(client.clone());
    let mut rows = Vec::new();
    for p in pods.list(&ListParams::default()).await?.items {
        if super::eni::requested_enis(&p, resource) == 0 {
            continue;
        }
        let status = p.status.clone().unwrap_or_default();
        let waiting = status
            .container_statuses
            .as_ref()
            .and_then(|cs| cs.first())
            .and_then(|c| c.state.as_ref())
            .and_then(|s| s.waiting.as_ref())
            .and_then(|w| w.reason.clone());
        let shown = if p.metadata.deletion_timestamp.is_some() {
            "Terminating".to_owned()
        } else {
            waiting.unwrap_or_else(|| status.phase.clone().unwrap_or_default())
        };
        let enis = super::eni::allocation(&p)
            .map(|a| {
                a.all()
                    .iter()
                    .map(|e| e.eni_id.clone())
                    .collect::<Vec<_>>()
                    .join(",")
            })
            .unwrap_or_else(|| "<none>".into());
        rows.push(vec![
            p.name_any(),
            shown,
            status.pod_ip.clone().unwrap_or_else(|| "<none>".into()),
            p.spec
                .as_ref()
                .and_then(|s| s.node_name.clone())
                .unwrap_or_else(|| "<none>".into()),
            enis,
        ]);
    }
    Ok(table(&["NAME", "STATUS", "IP", "NODE", "ENI"], &rows))
}

/// Every ENI in the cloud, as the console lists them.
pub fn enis_table(sim: &Sim) -> String {
    let cluster = ipam::ids::ClusterId::new(CLUSTER_ID);
    let mut enis = sim.world().enis();
    enis.sort_by(|a, b| {
        (
            a.instance_id.as_ref().map(|i| i.to_string()),
            a.device_index,
        )
            .cmp(&(
                b.instance_id.as_ref().map(|i| i.to_string()),
                b.device_index,
            ))
    });
    let rows: Vec<Vec<String>> = enis
        .iter()
        .map(|e| {
            let kind = if e.device_index == Some(0) {
                "Primary".to_owned()
            } else {
                "Secondary".to_owned()
            };
            let owner = if ipam::eni::is_owned(&e.tags, &cluster) {
                format!(
                    "pod {}/{}",
                    e.tags
                        .get(ipam::eni::tag::POD_NAMESPACE)
                        .map(String::as_str)
                        .unwrap_or("?"),
                    e.tags
                        .get(ipam::eni::tag::POD_NAME)
                        .map(String::as_str)
                        .unwrap_or("?")
                )
            } else {
                "-".to_owned()
            };
            vec![
                e.id.to_string(),
                e.primary_ip.to_string(),
                e.instance_id
                    .as_ref()
                    .map(|i| i.to_string())
                    .unwrap_or_else(|| "-".into()),
                format!("{:?}", e.status),
                e.subnet_id.to_string(),
                kind,
                owner,
            ]
        })
        .collect();
    table(
        &[
            "ENI",
            "IP",
            "INSTANCE",
            "STATUS",
            "VSWITCH",
            "TYPE",
            "TAGGED FOR",
        ],
        &rows,
    )
}

/// Events with one of `reasons` (all when empty), the last `limit` of them.
pub async fn events_with(
    client: &kube::Client,
    reasons: &[&str],
    limit: usize,
) -> anyhow::Result<String> {
    let events: Api<Event> = Api::all(client.clone());
    let mut items: Vec<Event> = events
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .filter(|e| reasons.is_empty() || reasons.contains(&e.reason.as_deref().unwrap_or("")))
        .collect();
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

fn secs(d: std::time::Duration) -> String {
    format!("{:.1}s", d.as_secs_f64())
}

fn triple(p: &Percentiles) -> String {
    format!("{} / {} / {}", secs(p.p50), secs(p.p99), secs(p.max))
}

/// The ENI allocation figures of every phase that bound ENI pods, and the
/// cost per pod of the largest one.
pub fn allocation_summary(sim: &Sim) -> Option<String> {
    let phases: Vec<(&str, &AllocationFigures, u64)> = sim
        .phases
        .iter()
        .filter_map(|p| {
            let a = p.allocations.as_ref()?;
            Some((p.name.as_str(), a, p.calls.values().sum::<u64>()))
        })
        .collect();
    if phases.is_empty() {
        return None;
    }
    let rows: Vec<Vec<String>> = phases
        .iter()
        .map(|(name, a, calls)| {
            let per_pod = if a.pods > 0 {
                format!("{:.2}", *calls as f64 / a.pods as f64)
            } else {
                "-".into()
            };
            vec![
                name.to_string(),
                a.pods.to_string(),
                a.unannotated.to_string(),
                triple(&a.measured),
                triple(&a.bound),
                triple(&a.bound_serial),
                per_pod,
            ]
        })
        .collect();
    let mut out = format!(
        "ENI pods, time from binding (spec.nodeName first seen) to the {} annotation first seen:\n{}",
        crate::eni::ALLOCATION_ANNOTATION,
        table(
            &[
                "PHASE",
                "PODS",
                "NOT YET",
                "MEASURED p50 / p99 / max",
                "LIMITS BOUND p50 / p99 / max",
                "+ONE ATTACH PER NODE AT A TIME",
                "CLOUD CALLS/POD",
            ],
            &rows,
        )
    );
    out.push_str(&format!(
        "LIMITS BOUND: the same bindings replayed through the controller's Create/AttachNetworkInterface limits, plus {:.1}s attach latency, at most {} attaches in flight per node (eni.attachConcurrency, and what the cloud takes); +ONE ATTACH PER NODE AT A TIME: the same if a node took one attach at a time.\n",
        sim.scenario.faults.attach_delay_ms as f64 / 1000.0,
        sim.scenario.attaches_in_flight_per_node()
    ));
    let (name, biggest) = sim
        .phases
        .iter()
        .filter_map(|p| Some((p.name.as_str(), p.allocations.as_ref()?, &p.calls)))
        .max_by_key(|(_, a, _)| a.pods)
        .map(|(n, a, c)| (n, (a, c)))?;
    let (a, calls) = biggest;
    if a.pods == 0 {
        return Some(out);
    }
    let per_api: Vec<String> = calls
        .iter()
        .map(|(api, n)| format!("{api}={:.2}", *n as f64 / a.pods as f64))
        .collect();
    out.push_str(&format!(
        "cloud calls per pod in {name:?} ({} pods): {}\n",
        a.pods,
        per_api.join(" ")
    ));
    let attach = std::time::Duration::from_millis(sim.scenario.faults.attach_delay_ms);
    let mut worst = 0.0f64;
    for b in &a.apis {
        worst = worst.max(b.seconds_at_limit);
        out.push_str(&format!(
            "  {:<26} {:>5} calls at the controller's limit of {}/min = {:.1}s\n",
            b.api, b.calls, b.per_minute, b.seconds_at_limit
        ));
    }
    out.push_str(&format!(
        "  limit bound for the last pod: {:.1}s (slowest API) + {:.1}s attach latency = {:.1}s; measured max {}\n",
        worst,
        attach.as_secs_f64(),
        worst + attach.as_secs_f64(),
        secs(a.measured.max)
    ));
    Some(out)
}

pub async fn print(sim: &Sim, quiet: bool) -> anyhow::Result<()> {
    let eni = sim.scenario.eni_enabled();
    let resource = sim.scenario.eni_resource_name();
    if !quiet && sim.scenario.routes.enabled {
        println!(
            "\n$ kubectl get nodes -o wide\n{}",
            nodes_table(sim.client()).await?
        );
        println!(
            "$ kubectl get pods -A -o wide\n{}",
            pods_table(sim.client()).await?
        );
        if sim.bgp.is_none() {
            println!("VPC route table {TABLE}:\n{}", route_table(sim));
        }
        println!(
            "$ kubectl get events (last 25)\n{}",
            events_table(sim.client(), 25).await?
        );
    }
    if !quiet && eni {
        println!(
            "\n$ kubectl get nodes  (ENI resource {resource})\n{}",
            eni_capacity_table(sim.client(), &resource).await?
        );
        println!(
            "$ kubectl get pods -o wide  (ENI column: the {} annotation)\n{}",
            crate::eni::ALLOCATION_ANNOTATION,
            eni_pods_table(sim.client(), &resource).await?
        );
        println!(
            "ENIs in the cloud (DescribeNetworkInterfaces):\n{}",
            enis_table(sim)
        );
        println!(
            "$ kubectl get events  (FailedScheduling, AllocIPSucceed, AllocIPFailed, EniCapacityUnknown; last 25)\n{}",
            events_with(
                sim.client(),
                &["FailedScheduling", "AllocIPSucceed", "AllocIPFailed", "EniCapacityUnknown"],
                25
            )
            .await?
        );
    }
    if sim.bgp.is_some() {
        println!(
            "BGP peers (STATE, ANNOUNCED: the controller's session; ACCEPTED: what the router holds):\n{}",
            super::bgp::peers_table(&super::bgp::peer_lines(sim))
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
                if p.lower_bound.is_zero() {
                    "-".into()
                } else {
                    format!(
                        "{:.1}s ({:.2}x)",
                        p.lower_bound.as_secs_f64(),
                        p.took.as_secs_f64() / p.lower_bound.as_secs_f64()
                    )
                },
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
                "LOWER BOUND (TIME/BOUND)",
                "MUTATING-CALLS",
                "CLOUD CALLS BY ACTION"
            ],
            &rows
        )
    );
    println!(
        "LOWER BOUND: the phase's route changes (batches at the controller's limits, one at a time per table, each settling in {:.1}s) and ENI allocations (below) at the least.",
        sim.scenario.faults.route_delay_ms as f64 / 1000.0
    );
    if let Some(summary) = allocation_summary(sim) {
        println!("{summary}");
    }
    let c = super::json::controller_figures(sim);
    println!(
        "controller ({} replica(s)): {} throttled answers, {} retries, {} calls held back by its own rate limits",
        c.replicas, c.throttled, c.retries, c.held_back
    );
    Ok(())
}
