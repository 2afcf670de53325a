//! Server-side printing: the `meta.k8s.io/v1` Table kubectl asks for, with
//! the columns `kubectl get` shows for pods, nodes, namespaces, deployments
//! and events, and NAME/AGE for everything else.

use super::resources::ResourceDesc;
use serde_json::{json, Value};
use std::sync::Arc;

/// How rows carry their object (`includeObject`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IncludeObject {
    /// No object.
    None,
    /// PartialObjectMetadata (the default).
    Metadata,
    /// The full object.
    Object,
}

impl IncludeObject {
    /// From the query parameter.
    pub fn parse(s: Option<&str>) -> Self {
        match s {
            Some("None") => IncludeObject::None,
            Some("Object") => IncludeObject::Object,
            _ => IncludeObject::Metadata,
        }
    }
}

/// Kubernetes' short human duration (`45s`, `3m12s`, `5h`, `2d3h`...).
pub fn human_age(created: &str) -> String {
    let Ok(t) = chrono::DateTime::parse_from_rfc3339(created) else {
        return "<unknown>".into();
    };
    let secs = (chrono::Utc::now() - t.with_timezone(&chrono::Utc)).num_seconds();
    human_duration(secs)
}

/// The duration formatting `kubectl` shows.
pub fn human_duration(secs: i64) -> String {
    if secs < -1 {
        return "<invalid>".into();
    }
    let s = secs.max(0);
    let m = s / 60;
    let h = s / 3600;
    let d = h / 24;
    if s < 120 {
        format!("{s}s")
    } else if m < 10 {
        if s % 60 == 0 {
            format!("{m}m")
        } else {
            format!("{m}m{}s", s % 60)
        }
    } else if m < 180 {
        format!("{m}m")
    } else if h < 8 {
        if m % 60 == 0 {
            format!("{h}h")
        } else {
            format!("{h}h{}m", m % 60)
        }
    } else if h < 48 {
        format!("{h}h")
    } else if h < 192 {
        if h % 24 == 0 {
            format!("{d}d")
        } else {
            format!("{d}d{}h", h % 24)
        }
    } else if d < 365 * 2 {
        format!("{d}d")
    } else {
        format!("{}y", d / 365)
    }
}

fn col(name: &str, ty: &str, priority: u8, description: &str) -> Value {
    json!({"name": name, "type": ty, "format": if name == "Name" { "name" } else { "" }, "description": description, "priority": priority})
}

fn s(v: &Value) -> String {
    v.as_str().unwrap_or_default().to_string()
}

fn none_if_empty(v: String) -> String {
    if v.is_empty() {
        "<none>".into()
    } else {
        v
    }
}

fn columns(r: &ResourceDesc) -> Vec<Value> {
    match (r.group.as_str(), r.plural.as_str()) {
        ("", "pods") => vec![
            col("Name", "string", 0, "Name must be unique within a namespace."),
            col("Ready", "string", 0, "The aggregate readiness state of this pod for accepting traffic."),
            col("Status", "string", 0, "The aggregate status of the containers in this pod."),
            col("Restarts", "integer", 0, "The number of times the containers in this pod have been restarted."),
            col("Age", "string", 0, "CreationTimestamp"),
            col("IP", "string", 1, "IP address allocated to the pod."),
            col("Node", "string", 1, "Name of the Node this pod is assigned to."),
            col("Nominated Node", "string", 1, "Name of the node nominated for preemption."),
            col("Readiness Gates", "string", 1, "Pod readiness gates."),
        ],
        ("", "nodes") => vec![
            col("Name", "string", 0, "Name of the node."),
            col("Status", "string", 0, "The status of the node"),
            col("Roles", "string", 0, "The roles of the node"),
            col("Age", "string", 0, "CreationTimestamp"),
            col("Version", "string", 0, "Kubelet Version reported by the node."),
            col("Internal-IP", "string", 1, "List of internal IPs."),
            col("External-IP", "string", 1, "List of external IPs."),
            col("OS-Image", "string", 1, "OS Image reported by the node."),
            col("Kernel-Version", "string", 1, "Kernel Version reported by the node."),
            col("Container-Runtime", "string", 1, "Container Runtime Version reported by the node."),
        ],
        ("", "namespaces") => vec![
            col("Name", "string", 0, "Name of the namespace."),
            col("Status", "string", 0, "The status of the namespace"),
            col("Age", "string", 0, "CreationTimestamp"),
        ],
        ("apps", "deployments") => vec![
            col("Name", "string", 0, "Name of the deployment."),
            col("Ready", "string", 0, "Number of the pod with ready state"),
            col("Up-to-date", "string", 0, "Total number of non-terminated pods targeted by this deployment that have the desired template spec."),
            col("Available", "string", 0, "Total number of available pods (ready for at least minReadySeconds) targeted by this deployment."),
            col("Age", "string", 0, "CreationTimestamp"),
        ],
        ("", "events") => vec![
            col("Last Seen", "string", 0, "Time of the last occurrence."),
            col("Type", "string", 0, "Type of this event (Normal, Warning)."),
            col("Reason", "string", 0, "Why the action was taken."),
            col("Object", "string", 0, "The object this Event is about."),
            col("Message", "string", 0, "A human-readable description of the status of this operation."),
        ],
        _ => vec![
            col("Name", "string", 0, "Name of the object."),
            col("Age", "string", 0, "CreationTimestamp"),
        ],
    }
}

fn pod_cells(o: &Value) -> Vec<Value> {
    let containers = o["spec"]["containers"]
        .as_array()
        .map(|a| a.len())
        .unwrap_or(0);
    let statuses = o["status"]["containerStatuses"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let ready = statuses
        .iter()
        .filter(|c| c["ready"].as_bool() == Some(true))
        .count();
    let restarts: i64 = statuses
        .iter()
        .filter_map(|c| c["restartCount"].as_i64())
        .sum();
    let mut reason = s(&o["status"]["reason"]);
    if reason.is_empty() {
        reason = s(&o["status"]["phase"]);
    }
    for c in &statuses {
        if let Some(w) = c["state"]["waiting"]["reason"].as_str() {
            reason = w.to_string();
        }
    }
    if o["metadata"].get("deletionTimestamp").is_some() {
        reason = "Terminating".into();
    }
    let gates = o["spec"]["readinessGates"]
        .as_array()
        .map(|a| a.len())
        .unwrap_or(0);
    vec![
        json!(s(&o["metadata"]["name"])),
        json!(format!("{ready}/{containers}")),
        json!(reason),
        json!(restarts),
        json!(human_age(&s(&o["metadata"]["creationTimestamp"]))),
        json!(none_if_empty(s(&o["status"]["podIP"]))),
        json!(none_if_empty(s(&o["spec"]["nodeName"]))),
        json!(none_if_empty(s(&o["status"]["nominatedNodeName"]))),
        json!(if gates == 0 {
            "<none>".to_string()
        } else {
            format!("0/{gates}")
        }),
    ]
}

fn node_cells(o: &Value) -> Vec<Value> {
    let ready = o["status"]["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == "Ready"))
        .map(|c| c["status"] == "True");
    let mut status = match ready {
        Some(true) => "Ready".to_string(),
        Some(false) => "NotReady".to_string(),
        None => "Unknown".to_string(),
    };
    if o["spec"]["unschedulable"].as_bool() == Some(true) {
        status.push_str(",SchedulingDisabled");
    }
    let mut roles: Vec<String> = o["metadata"]["labels"]
        .as_object()
        .map(|l| {
            l.keys()
                .filter_map(|k| k.strip_prefix("node-role.kubernetes.io/"))
                .filter(|r| !r.is_empty())
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default();
    roles.sort();
    let addr = |ty: &str| {
        o["status"]["addresses"]
            .as_array()
            .and_then(|a| a.iter().find(|x| x["type"] == ty))
            .map(|x| s(&x["address"]))
            .unwrap_or_default()
    };
    let info = &o["status"]["nodeInfo"];
    vec![
        json!(s(&o["metadata"]["name"])),
        json!(status),
        json!(none_if_empty(roles.join(","))),
        json!(human_age(&s(&o["metadata"]["creationTimestamp"]))),
        json!(s(&info["kubeletVersion"])),
        json!(none_if_empty(addr("InternalIP"))),
        json!(none_if_empty(addr("ExternalIP"))),
        json!(none_if_empty(s(&info["osImage"]))),
        json!(none_if_empty(s(&info["kernelVersion"]))),
        json!(none_if_empty(s(&info["containerRuntimeVersion"]))),
    ]
}

fn cells(r: &ResourceDesc, o: &Value) -> Vec<Value> {
    let name = json!(s(&o["metadata"]["name"]));
    let age = json!(human_age(&s(&o["metadata"]["creationTimestamp"])));
    match (r.group.as_str(), r.plural.as_str()) {
        ("", "pods") => pod_cells(o),
        ("", "nodes") => node_cells(o),
        ("", "namespaces") => vec![name, json!(s(&o["status"]["phase"])), age],
        ("apps", "deployments") => {
            let st = &o["status"];
            let n = |v: &Value| v.as_i64().unwrap_or(0);
            vec![
                name,
                json!(format!(
                    "{}/{}",
                    n(&st["readyReplicas"]),
                    n(&o["spec"]["replicas"])
                )),
                json!(n(&st["updatedReplicas"])),
                json!(n(&st["availableReplicas"])),
                age,
            ]
        }
        ("", "events") => {
            let last = [
                &o["lastTimestamp"],
                &o["eventTime"],
                &o["metadata"]["creationTimestamp"],
            ]
            .into_iter()
            .find_map(|v| v.as_str())
            .map(human_age)
            .unwrap_or_default();
            let io = &o["involvedObject"];
            vec![
                json!(last),
                json!(s(&o["type"])),
                json!(s(&o["reason"])),
                json!(format!(
                    "{}/{}",
                    s(&io["kind"]).to_lowercase(),
                    s(&io["name"])
                )),
                json!(s(&o["message"])),
            ]
        }
        _ => vec![name, age],
    }
}

/// Render objects as a Table.
pub fn render(
    r: &ResourceDesc,
    items: &[Arc<Value>],
    rv: u64,
    continue_token: Option<&str>,
    include: IncludeObject,
) -> Value {
    let rows: Vec<Value> = items
        .iter()
        .map(|o| {
            let mut row = json!({"cells": cells(r, o)});
            match include {
                IncludeObject::None => {}
                IncludeObject::Metadata => {
                    row["object"] = json!({
                        "kind": "PartialObjectMetadata",
                        "apiVersion": "meta.k8s.io/v1",
                        "metadata": o["metadata"],
                    })
                }
                IncludeObject::Object => row["object"] = (**o).clone(),
            }
            row
        })
        .collect();
    let mut meta = json!({"resourceVersion": rv.to_string()});
    if let Some(c) = continue_token {
        meta["continue"] = json!(c);
    }
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": meta,
        "columnDefinitions": columns(r),
        "rows": rows,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_like_kubectl() {
        assert_eq!(human_duration(5), "5s");
        assert_eq!(human_duration(185), "3m5s");
        assert_eq!(human_duration(3600), "60m");
        assert_eq!(human_duration(5 * 3600 + 60), "5h1m");
        assert_eq!(human_duration(3 * 86400 + 7200), "3d2h");
    }
}
