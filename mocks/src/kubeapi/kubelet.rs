//! A kubelet stand-in: a pod bound to a node becomes Running with a pod IP.
//! Pods requesting an "allocation" resource (e.g. `aliyun/eni`) wait in
//! ContainerCreating until the controller writes the allocation annotation
//! (`{"ip": ...}`), and so does every pod that is not `hostNetwork` on a node
//! carrying the shared-mode annotation (its IP comes from a shared ENI, as
//! the node half waits for it); others get the next free address of the
//! node's podCIDR.

use super::reactor::key;
use super::scheduler::pod_requests;
use super::store::{now_time, set_condition, Store, Sub};
use serde_json::{json, Value};
use std::collections::{HashMap, HashSet};
use std::net::IpAddr;

/// Kubelet behaviour knobs.
#[derive(Debug, Clone)]
pub struct KubeletConfig {
    /// Extended resources whose pods need an allocation annotation to start.
    pub allocation_resources: Vec<String>,
    /// The annotation carrying the allocation (a JSON object with `ip`).
    pub allocation_annotation: String,
    /// A node annotation (value `"true"`) under which every pod not on the
    /// host network waits for an allocation.
    pub shared_node_annotation: String,
}

impl Default for KubeletConfig {
    fn default() -> Self {
        KubeletConfig {
            allocation_resources: vec!["aliyun/eni".into()],
            allocation_annotation: "vpc-eni.io/allocation".into(),
            shared_node_annotation: "vpc-eni.io/shared-eni".into(),
        }
    }
}

fn internal_ip(node: &Value) -> Option<String> {
    node["status"]["addresses"]
        .as_array()?
        .iter()
        .find(|a| a["type"] == "InternalIP")
        .and_then(|a| a["address"].as_str())
        .map(str::to_string)
}

/// The next address of `cidr` not in `taken` (skipping network and gateway).
fn next_free(cidr: &str, taken: &HashSet<String>) -> Option<String> {
    let net: ipnet::IpNet = cidr.parse().ok()?;
    net.hosts()
        .skip(1)
        .map(|ip: IpAddr| ip.to_string())
        .find(|ip| !taken.contains(ip))
}

fn container_statuses(pod: &Value, running: bool, now: &str) -> Value {
    let uid = pod["metadata"]["uid"].as_str().unwrap_or_default();
    let list: Vec<Value> = pod["spec"]["containers"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| {
            let name = c["name"].as_str().unwrap_or_default();
            let image = c["image"].as_str().unwrap_or_default();
            let mut s = json!({"name": name, "image": image, "imageID": "", "ready": running, "restartCount": 0, "started": running});
            if running {
                s["state"] = json!({"running": {"startedAt": now}});
                s["containerID"] = json!(format!("containerd://{uid}-{name}"));
                s["imageID"] = json!(format!("{image}@sha256:fake"));
            } else {
                s["state"] = json!({"waiting": {"reason": "ContainerCreating"}});
            }
            s
        })
        .collect();
    json!(list)
}

/// One pass: start every bound pending pod that can start.
pub fn kubelet_pass(store: &Store, cfg: &KubeletConfig) {
    let mut snap = store.snapshot_many(&[key("", "nodes"), key("", "pods")]);
    let pods = snap.pop().unwrap_or_default();
    let nodes: HashMap<String, std::sync::Arc<Value>> = snap
        .pop()
        .unwrap_or_default()
        .into_iter()
        .filter_map(|n| Some((n["metadata"]["name"].as_str()?.to_string(), n.clone())))
        .collect();
    let mut taken: HashMap<String, HashSet<String>> = HashMap::new();
    for p in &pods {
        if let (Some(n), Some(ip)) = (
            p["spec"]["nodeName"].as_str(),
            p["status"]["podIP"].as_str(),
        ) {
            taken
                .entry(n.to_string())
                .or_default()
                .insert(ip.to_string());
        }
    }
    let Ok(r) = store.resource("", "pods") else {
        return;
    };
    for pod in pods {
        let Some(node_name) = pod["spec"]["nodeName"].as_str().filter(|n| !n.is_empty()) else {
            continue;
        };
        let Some(node) = nodes.get(node_name) else {
            continue;
        };
        if pod["metadata"].get("deletionTimestamp").is_some()
            || pod["status"]["phase"]
                .as_str()
                .is_some_and(|p| p != "Pending")
        {
            continue;
        }
        let shared_node = node["metadata"]["annotations"][&cfg.shared_node_annotation] == "true"
            && pod["spec"]["hostNetwork"] != true;
        let needs_alloc = shared_node
            || pod_requests(&pod)
                .iter()
                .any(|(k, v)| *v > 0 && cfg.allocation_resources.contains(k));
        let ip = if needs_alloc {
            pod["metadata"]["annotations"][&cfg.allocation_annotation]
                .as_str()
                .and_then(|a| serde_json::from_str::<Value>(a).ok())
                // An allocation made for another pod (copied with its YAML)
                // is not this pod's, as the node half checks too.
                .filter(|a| a["podUid"].is_null() || a["podUid"] == pod["metadata"]["uid"])
                .and_then(|a| a["ip"].as_str().map(str::to_string))
        } else {
            let t = taken.entry(node_name.to_string()).or_default();
            let ip = node["spec"]["podCIDR"]
                .as_str()
                .and_then(|c| next_free(c, t));
            if let Some(ip) = &ip {
                t.insert(ip.clone());
            }
            ip
        };
        let now = now_time();
        let mut updated = (*pod).clone();
        let ns = pod["metadata"]["namespace"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let name = pod["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let host_ip = internal_ip(node);
        let st = &mut updated["status"];
        if let Some(h) = &host_ip {
            st["hostIP"] = json!(h);
            st["hostIPs"] = json!([{"ip": h}]);
        }
        if st["startTime"].is_null() {
            st["startTime"] = json!(now);
        }
        match ip {
            Some(ip) => {
                st["phase"] = json!("Running");
                st["podIP"] = json!(ip);
                st["podIPs"] = json!([{"ip": ip}]);
                st["qosClass"] = json!("BestEffort");
                st["containerStatuses"] = container_statuses(&pod, true, &now);
                for c in ["Initialized", "Ready", "ContainersReady", "PodScheduled"] {
                    set_condition(&mut updated, c, "True", None, None);
                }
            }
            None => {
                // Waiting for the allocation: show it as upstream does while CNI setup is pending.
                if pod["status"]["containerStatuses"].is_array() {
                    continue;
                }
                st["phase"] = json!("Pending");
                st["containerStatuses"] = container_statuses(&pod, false, &now);
                set_condition(&mut updated, "Initialized", "True", None, None);
                for c in ["Ready", "ContainersReady"] {
                    set_condition(
                        &mut updated,
                        c,
                        "False",
                        Some("ContainersNotReady"),
                        Some("containers with unready status"),
                    );
                }
                set_condition(&mut updated, "PodScheduled", "True", None, None);
            }
        }
        if let Err(e) = store.update(&r, &ns, &name, updated, Sub::Status) {
            tracing::debug!(error = %e, pod = name, "kubelet status write lost a race; will retry");
        }
    }
}
