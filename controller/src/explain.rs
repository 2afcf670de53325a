//! `check-config`'s plain-language summary of what a valid config will do.

use crate::config::Config;
use std::fmt::Write;

pub fn explain(c: &Config) -> String {
    let mut out = String::new();
    if c.provider.absent {
        let _ = writeln!(
            out,
            "cluster {:?} with no cloud provider: no cloud calls",
            c.cluster_id
        );
    } else {
        let _ = writeln!(
            out,
            "cluster {:?} on {} (region {}){}",
            c.cluster_id,
            c.provider.kind,
            c.provider
                .region
                .as_deref()
                .unwrap_or("from the environment"),
            c.provider
                .endpoint
                .as_deref()
                .map(|e| format!(", endpoint {e}"))
                .unwrap_or_default()
        );
    }
    if let (true, Some(bgp)) = (c.routes.enabled, &c.routes.bgp) {
        for line in bgp.explain() {
            let _ = writeln!(out, "{line}");
        }
    }
    if c.routes.enabled && c.routes.backend == crate::routes_bgp::config::RouteBackend::Cloud {
        let tables = if c.routes.route_table_ids.is_empty() {
            "the VPC's route table (alibaba: the single/main table; aws: the one tagged for the cluster)".to_owned()
        } else {
            c.routes
                .route_table_ids
                .iter()
                .map(|t| t.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        };
        let _ = writeln!(
            out,
            "routes: one entry per node podCIDR -> node instance in {tables}; only entries inside {} marked as ours are ever changed",
            c.routes
                .cluster_cidr
                .map(|n| n.to_string())
                .unwrap_or_default()
        );
        if c.routes.allocate_pod_cidrs {
            let _ = writeln!(
                out,
                "routes: nodes without spec.podCIDR get a /{} block (this needs `patch` on nodes: apply manifests/patch-nodes)",
                c.routes.node_cidr_mask_size
            );
        }
    }
    if c.eni.enabled {
        let zones = c
            .eni
            .subnets
            .iter()
            .map(|(z, s)| {
                format!(
                    "{z}: {}",
                    s.iter()
                        .map(|x| x.to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            })
            .collect::<Vec<_>>()
            .join("; ");
        let _ = writeln!(
            out,
            "eni: pods requesting {} get an exclusive ENI from subnets {zones}",
            c.eni_resource_name()
        );
        let _ = writeln!(
            out,
            "eni: up to {} ENI attaches at once per node (eni.attachConcurrency); an attach the cloud refuses because the instance is busy is retried with backoff",
            c.eni.attach_concurrency
        );
    }
    if c.shared_eni.enabled {
        let s = &c.shared_eni;
        let nodes = if s.node_selector.is_empty() {
            "every node".to_owned()
        } else {
            format!(
                "nodes labelled {}",
                s.node_selector
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join(",")
            )
        };
        let subnets = c
            .shared_subnets()
            .iter()
            .map(|(z, ids)| {
                format!(
                    "{z}: {}",
                    ids.iter()
                        .map(|x| x.to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            })
            .collect::<Vec<_>>()
            .join("; ");
        let _ = writeln!(
            out,
            "sharedEni: on {nodes}, every pod that is not hostNetwork and does not request {} gets a secondary IP of a shared ENI (subnets {subnets})",
            c.eni_resource_name()
        );
        let _ = writeln!(
            out,
            "sharedEni: per node up to {} shared ENIs (the exclusive resource offers only the other slots); {}..{} free IPs kept ready (maxPoolSize {}), {} assigned when a node joins",
            s.max_enis, s.min_pool_size, s.max_pool_size, s.max_pool_size, s.warm_up_size
        );
        let _ = writeln!(
            out,
            "sharedEni: a pod's IP is handed out again {}s after the pod goes; free IPs above maxPoolSize and ENIs no pod uses are released after {}s",
            s.ip_cooldown_seconds, s.excess_release_delay_seconds
        );
    }
    for (api, rate) in &c.provider.rate_limits {
        let _ = writeln!(out, "rate limit: {api} {rate} calls/minute");
    }
    for w in c.warnings() {
        let _ = writeln!(out, "warning: {w}");
    }
    out
}
