//! A kubelet stand-in: a pod bound to a node becomes Running with a pod IP.
//! Pods requesting an "allocation" resource (e.g. `aliyun/eni`) wait in
//! ContainerCreating until the controller writes the allocation annotation
//! (`{"ip": ...}`), and so does every pod that is not `hostNetwork` on a node
//! carrying the shared-mode annotation (its IP comes from a shared ENI, as
//! the node half waits for it); others get the next free address of the
//! node's podCIDR.

use super::reactor::{key, Changes};
use super::scheduler::{pod_key, pod_requests, PodKey};
use super::store::{now_time, set_condition, Store, Sub};
use serde_json::{json, Value};
use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::Arc;

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

/// One pass, from scratch: start every bound pending pod that can start.
pub fn kubelet_pass(store: &Store, cfg: &KubeletConfig) {
    Kubelet::new(cfg.clone()).pass(store, Changes::All);
}

/// The kubelets between passes: the pod IPs in use per node, and the bound
/// pods not yet started, both kept up to date from the changes each pass
/// hears of (rebuilt from the store when it hears of all), so a pass costs
/// what changed plus the pods still waiting, not the whole store.
#[derive(Debug)]
pub struct Kubelet {
    cfg: KubeletConfig,
    /// Pod IP and node of every pod that has one.
    ips: HashMap<PodKey, (String, String)>,
    /// Per node: the pod IPs in use.
    taken: HashMap<String, HashSet<String>>,
    /// Bound pods still Pending, as last seen.
    waiting: HashMap<PodKey, Arc<Value>>,
}

impl Kubelet {
    pub fn new(cfg: KubeletConfig) -> Self {
        Self {
            cfg,
            ips: HashMap::new(),
            taken: HashMap::new(),
            waiting: HashMap::new(),
        }
    }

    fn forget_ip(&mut self, key: &PodKey) {
        if let Some((node, ip)) = self.ips.remove(key) {
            if let Some(t) = self.taken.get_mut(&node) {
                t.remove(&ip);
            }
        }
    }

    /// Take the latest state of one pod (`None`: it is gone).
    fn observe(&mut self, key: PodKey, pod: Option<&Arc<Value>>) {
        self.waiting.remove(&key);
        self.forget_ip(&key);
        let Some(p) = pod else { return };
        let node = p["spec"]["nodeName"].as_str().filter(|n| !n.is_empty());
        if let (Some(n), Some(ip)) = (node, p["status"]["podIP"].as_str()) {
            self.taken
                .entry(n.to_string())
                .or_default()
                .insert(ip.to_string());
            self.ips
                .insert(key.clone(), (n.to_string(), ip.to_string()));
        }
        let pending = p["status"]["phase"]
            .as_str()
            .is_none_or(|phase| phase == "Pending");
        if node.is_some() && pending && p["metadata"].get("deletionTimestamp").is_none() {
            self.waiting.insert(key, p.clone());
        }
    }

    /// Bring the state up to `changes`, then start every waiting pod that can.
    pub fn pass(&mut self, store: &Store, changes: Changes) {
        let pods_key = key("", "pods");
        let nodes = match changes {
            Changes::All => {
                let mut snap = store.snapshot_many(&[key("", "nodes"), pods_key]);
                let pods = snap.pop().unwrap_or_default();
                self.ips.clear();
                self.taken.clear();
                self.waiting.clear();
                for p in &pods {
                    self.observe(pod_key(p), Some(p));
                }
                snap.pop().unwrap_or_default()
            }
            Changes::Some(list) => {
                for c in list.iter().filter(|c| c.storage == pods_key) {
                    let gone = c.kind == super::store::ChangeType::Deleted;
                    self.observe(pod_key(&c.obj), (!gone).then_some(&c.obj));
                }
                if self.waiting.is_empty() {
                    return;
                }
                store.snapshot(&key("", "nodes"))
            }
        };
        let nodes: HashMap<&str, &Arc<Value>> = nodes
            .iter()
            .filter_map(|n| Some((n["metadata"]["name"].as_str()?, n)))
            .collect();
        let Ok(r) = store.resource("", "pods") else {
            return;
        };
        let mut waiting: Vec<Arc<Value>> = self.waiting.values().cloned().collect();
        waiting.sort_by_cached_key(|p| pod_key(p));
        for pod in waiting {
            self.start(store, &r, &nodes, &pod);
        }
    }

    fn start(
        &mut self,
        store: &Store,
        r: &super::resources::ResourceDesc,
        nodes: &HashMap<&str, &Arc<Value>>,
        pod: &Arc<Value>,
    ) {
        let cfg = &self.cfg;
        let Some(node_name) = pod["spec"]["nodeName"].as_str().filter(|n| !n.is_empty()) else {
            return;
        };
        let Some(node) = nodes.get(node_name) else {
            return;
        };
        let shared_node = node["metadata"]["annotations"][&cfg.shared_node_annotation] == "true"
            && pod["spec"]["hostNetwork"] != true;
        let needs_alloc = shared_node
            || pod_requests(pod)
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
            let t = self.taken.entry(node_name.to_string()).or_default();
            let ip = node["spec"]["podCIDR"]
                .as_str()
                .and_then(|c| next_free(c, t));
            if let Some(ip) = &ip {
                t.insert(ip.clone());
                // Held from now on, also if the write below loses a race.
                self.ips
                    .insert(pod_key(pod), (node_name.to_string(), ip.clone()));
            }
            ip
        };
        let now = now_time();
        let mut updated = (**pod).clone();
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
                st["containerStatuses"] = container_statuses(pod, true, &now);
                for c in ["Initialized", "Ready", "ContainersReady", "PodScheduled"] {
                    set_condition(&mut updated, c, "True", None, None);
                }
            }
            None => {
                // Waiting for the allocation: show it as upstream does while CNI setup is pending.
                if pod["status"]["containerStatuses"].is_array() {
                    return;
                }
                st["phase"] = json!("Pending");
                st["containerStatuses"] = container_statuses(pod, false, &now);
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
        if let Err(e) = store.update(r, &ns, &name, updated, Sub::Status) {
            tracing::debug!(error = %e, pod = name, "kubelet status write lost a race; will retry");
        }
    }
}
