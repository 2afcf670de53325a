//! A kube-scheduler stand-in: binds pending pods to nodes whose allocatable
//! (cpu, memory, pods and every extended resource) fits, honouring
//! nodeSelector, unschedulable and NoSchedule/NoExecute taints; otherwise
//! writes `FailedScheduling` in upstream wording and `PodScheduled=False`.

use super::quantity::parse_milli;
use super::reactor::{key, Changes};
use super::store::{now_time, set_condition, Store, Sub};
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

/// The scheduler name pods must carry (or leave empty) to be ours.
pub const SCHEDULER_NAME: &str = "default-scheduler";

/// Resource name -> milli-units.
pub type Resources = BTreeMap<String, i128>;

/// A pod's effective requests: sum over containers, at least each init
/// container's (upstream's rule). Limits were copied into missing requests
/// at create time, so extended resources given only as limits count.
pub fn pod_requests(pod: &Value) -> Resources {
    let mut sum = Resources::new();
    for c in pod["spec"]["containers"].as_array().into_iter().flatten() {
        for (k, v) in container_requests(c) {
            *sum.entry(k).or_default() += v;
        }
    }
    for c in pod["spec"]["initContainers"]
        .as_array()
        .into_iter()
        .flatten()
    {
        for (k, v) in container_requests(c) {
            let e = sum.entry(k).or_default();
            *e = (*e).max(v);
        }
    }
    sum
}

fn container_requests(c: &Value) -> Resources {
    let mut out = Resources::new();
    let res = &c["resources"];
    for src in [&res["limits"], &res["requests"]] {
        for (k, v) in src.as_object().into_iter().flatten() {
            if let Some(q) = v
                .as_str()
                .and_then(parse_milli)
                .or_else(|| v.as_i64().map(|n| n as i128 * 1000))
            {
                out.insert(k.clone(), q);
            }
        }
    }
    out
}

fn is_terminated(pod: &Value) -> bool {
    matches!(
        pod["status"]["phase"].as_str(),
        Some("Succeeded") | Some("Failed")
    )
}

fn tolerates(tolerations: &[Value], taint: &Value) -> bool {
    tolerations.iter().any(|t| {
        let effect_ok = t["effect"]
            .as_str()
            .is_none_or(|e| e.is_empty() || Some(e) == taint["effect"].as_str());
        let key = t["key"].as_str().unwrap_or_default();
        let exists = t["operator"].as_str() == Some("Exists");
        if !effect_ok {
            return false;
        }
        if key.is_empty() {
            return exists;
        }
        key == taint["key"].as_str().unwrap_or_default()
            && (exists
                || t["value"].as_str().unwrap_or_default()
                    == taint["value"].as_str().unwrap_or_default())
    })
}

/// One `nodeSelectorRequirement` against a value (label or field).
fn requirement_ok(req: &Value, value: Option<&str>) -> bool {
    let values: Vec<&str> = req["values"]
        .as_array()
        .map(|v| v.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let num = |s: &str| s.parse::<i64>().ok();
    match req["operator"].as_str().unwrap_or_default() {
        "In" => value.is_some_and(|v| values.contains(&v)),
        "NotIn" => value.is_none_or(|v| !values.contains(&v)),
        "Exists" => value.is_some(),
        "DoesNotExist" => value.is_none(),
        "Gt" => {
            matches!((value.and_then(num), values.first().and_then(|v| num(v))), (Some(a), Some(b)) if a > b)
        }
        "Lt" => {
            matches!((value.and_then(num), values.first().and_then(|v| num(v))), (Some(a), Some(b)) if a < b)
        }
        _ => false,
    }
}

/// `requiredDuringSchedulingIgnoredDuringExecution`: any term matches, each
/// term's expressions and fields all hold; absent means no constraint.
fn required_affinity_ok(pod: &Value, node: &Value) -> bool {
    let req =
        &pod["spec"]["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"];
    let Some(terms) = req["nodeSelectorTerms"].as_array() else {
        return true;
    };
    let labels = &node["metadata"]["labels"];
    terms.iter().any(|t| {
        let exprs = t["matchExpressions"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let fields = t["matchFields"].as_array().cloned().unwrap_or_default();
        if exprs.is_empty() && fields.is_empty() {
            return false;
        }
        exprs.iter().all(|e| {
            requirement_ok(
                e,
                labels
                    .get(e["key"].as_str().unwrap_or_default())
                    .and_then(Value::as_str),
            )
        }) && fields.iter().all(|f| {
            let v = match f["key"].as_str() {
                Some("metadata.name") => node["metadata"]["name"].as_str(),
                _ => None,
            };
            requirement_ok(f, v)
        })
    })
}

/// Why one node cannot take the pod (empty = it fits). Filters run in
/// upstream's plugin order and stop at the first failing one.
pub fn node_reasons(pod: &Value, node: &Value, used: &Resources, used_pods: i128) -> Vec<String> {
    let tolerations = pod["spec"]["tolerations"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    node_reasons_for(pod, &pod_requests(pod), &tolerations, node, used, used_pods)
}

/// [`node_reasons`] with the pod's requests and tolerations read once.
fn node_reasons_for(
    pod: &Value,
    req: &Resources,
    tolerations: &[Value],
    node: &Value,
    used: &Resources,
    used_pods: i128,
) -> Vec<String> {
    // NodeUnschedulable
    if node["spec"]["unschedulable"].as_bool() == Some(true) {
        let t = json!({"key": "node.kubernetes.io/unschedulable", "effect": "NoSchedule"});
        if !tolerates(tolerations, &t) {
            return vec!["node(s) were unschedulable".into()];
        }
    }
    // TaintToleration (NoSchedule and NoExecute only)
    for taint in node["spec"]["taints"].as_array().into_iter().flatten() {
        let effect = taint["effect"].as_str().unwrap_or_default();
        if (effect == "NoSchedule" || effect == "NoExecute") && !tolerates(tolerations, taint) {
            return vec![format!(
                "node(s) had untolerated taint {{{}: {}}}",
                taint["key"].as_str().unwrap_or_default(),
                taint["value"].as_str().unwrap_or_default()
            )];
        }
    }
    // NodeAffinity (nodeSelector)
    let labels = &node["metadata"]["labels"];
    let selector_ok = pod["spec"]["nodeSelector"]
        .as_object()
        .into_iter()
        .flatten()
        .all(|(k, v)| labels.get(k) == Some(v));
    if !selector_ok || !required_affinity_ok(pod, node) {
        return vec!["node(s) didn't match Pod's node affinity/selector".into()];
    }
    // NodeResourcesFit: pods, cpu, memory, then the rest by name.
    let alloc = &node["status"]["allocatable"];
    let allocatable = |r: &str| {
        alloc
            .get(r)
            .and_then(Value::as_str)
            .and_then(parse_milli)
            .unwrap_or(0)
    };
    let mut reasons = Vec::new();
    if (used_pods + 1) * 1000 > allocatable("pods") {
        reasons.push("Too many pods".to_string());
    }
    let mut names: Vec<&String> = req.keys().collect();
    let rank = |n: &str| match n {
        "cpu" => 0,
        "memory" => 1,
        "ephemeral-storage" => 2,
        _ => 3,
    };
    names.sort_by(|a, b| rank(a).cmp(&rank(b)).then(a.cmp(b)));
    for name in names {
        let want = req[name];
        if want <= 0 || name == "pods" {
            continue;
        }
        let have = allocatable(name) - used.get(name).copied().unwrap_or(0);
        if want > have {
            reasons.push(format!("Insufficient {name}"));
        }
    }
    reasons
}

/// The FailedScheduling message for a per-node list of reasons, as
/// kube-scheduler formats it (counts, sorted as strings).
pub fn fit_error(num_nodes: usize, per_node: &[Vec<String>]) -> String {
    if num_nodes == 0 {
        return "no nodes available to schedule pods".into();
    }
    let mut hist: HashMap<&str, usize> = HashMap::new();
    for rs in per_node {
        for r in rs {
            *hist.entry(r.as_str()).or_default() += 1;
        }
    }
    let mut parts: Vec<String> = hist.iter().map(|(r, n)| format!("{n} {r}")).collect();
    parts.sort();
    format!("0/{num_nodes} nodes are available: {}.", parts.join(", "))
}

/// Create a core/v1 Event about a pod from `component`.
pub fn pod_event(
    store: &Store,
    pod: &Value,
    ty: &str,
    reason: &str,
    message: &str,
    component: &str,
) {
    let ns = pod["metadata"]["namespace"].as_str().unwrap_or("default");
    let name = pod["metadata"]["name"].as_str().unwrap_or_default();
    let nanos = chrono::Utc::now().timestamp_nanos_opt().unwrap_or_default();
    let now = now_time();
    let ev = json!({
        "metadata": {"name": format!("{name}.{nanos:x}"), "namespace": ns},
        "involvedObject": {
            "kind": "Pod", "namespace": ns, "name": name, "apiVersion": "v1",
            "uid": pod["metadata"]["uid"], "resourceVersion": pod["metadata"]["resourceVersion"],
        },
        "reason": reason,
        "message": message,
        "source": {"component": component},
        "firstTimestamp": now,
        "lastTimestamp": now,
        "count": 1,
        "type": ty,
        "reportingComponent": component,
        "reportingInstance": format!("{component}-fake"),
    });
    if let Ok(r) = store.resource("", "events") {
        if let Err(e) = store.create(&r, ns, ev) {
            tracing::warn!(error = %e, pod = name, "could not record event");
        }
    }
}

/// One scheduling pass over every pending pod, from scratch.
pub fn schedule_pass(store: &Store) {
    Scheduler::default().pass(store, Changes::All);
}

/// A pod's (namespace, name), as the in-process controllers key their state.
pub(super) type PodKey = (String, String);

pub(super) fn pod_key(p: &Value) -> PodKey {
    (
        p["metadata"]["namespace"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
        p["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
    )
}

/// The scheduler between passes: what every bound pod takes of its node,
/// and the pods waiting for a node, both kept up to date from the changes
/// each pass hears of (rebuilt from the store when it hears of all), so a
/// pass costs what changed plus the pending pods, not the whole store.
#[derive(Debug, Default)]
pub struct Scheduler {
    /// Bound, not terminated pods: their node and requests.
    placed: HashMap<PodKey, (String, Resources)>,
    /// Per node: the sum of its pods' requests, and their number.
    used: HashMap<String, (Resources, i128)>,
    /// Pods without a node that are ours to schedule, as last seen.
    pending: HashMap<PodKey, Arc<Value>>,
}

impl Scheduler {
    fn unplace(&mut self, key: &PodKey) {
        if let Some((node, req)) = self.placed.remove(key) {
            if let Some(e) = self.used.get_mut(&node) {
                for (k, v) in req {
                    *e.0.entry(k).or_default() -= v;
                }
                e.1 -= 1;
            }
        }
    }

    fn place(&mut self, key: PodKey, node: &str, req: Resources) {
        self.unplace(&key);
        let e = self.used.entry(node.to_string()).or_default();
        for (k, v) in &req {
            *e.0.entry(k.clone()).or_default() += *v;
        }
        e.1 += 1;
        self.placed.insert(key, (node.to_string(), req));
    }

    /// Take the latest state of one pod (`None`: it is gone).
    fn observe(&mut self, key: PodKey, pod: Option<&Arc<Value>>) {
        self.pending.remove(&key);
        let Some(p) = pod else {
            self.unplace(&key);
            return;
        };
        match p["spec"]["nodeName"].as_str().filter(|n| !n.is_empty()) {
            Some(n) if !is_terminated(p) => {
                if self.placed.get(&key).is_none_or(|(on, _)| on != n) {
                    self.place(key, n, pod_requests(p));
                }
            }
            Some(_) => self.unplace(&key),
            None => {
                self.unplace(&key);
                let ours = p["spec"]["schedulerName"]
                    .as_str()
                    .is_none_or(|s| s.is_empty() || s == SCHEDULER_NAME);
                if ours && p["metadata"].get("deletionTimestamp").is_none() {
                    self.pending.insert(key, p.clone());
                }
            }
        }
    }

    /// Bring the state up to `changes`, then try every pending pod.
    pub fn pass(&mut self, store: &Store, changes: Changes) {
        let pods_key = key("", "pods");
        let nodes = match changes {
            Changes::All => {
                // Nodes and pods from one instant.
                let mut snap = store.snapshot_many(&[key("", "nodes"), pods_key]);
                let pods = snap.pop().unwrap_or_default();
                *self = Scheduler::default();
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
                store.snapshot(&key("", "nodes"))
            }
        };
        if self.pending.is_empty() {
            return;
        }
        let mut pending: Vec<Arc<Value>> = self.pending.values().cloned().collect();
        // Oldest first, like the scheduling queue without priorities.
        pending.sort_by_cached_key(|p| {
            (
                p["metadata"]["creationTimestamp"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                p["metadata"]["resourceVersion"]
                    .as_str()
                    .and_then(|s| s.parse::<u64>().ok())
                    .unwrap_or(0),
            )
        });
        let Ok(pods_r) = store.resource("", "pods") else {
            return;
        };
        // Spread: the node with the fewest pods wins, then by name; so the
        // nodes are tried in that order and the first that fits takes it.
        let by_name: HashMap<&str, &Value> = nodes
            .iter()
            .map(|n| (n["metadata"]["name"].as_str().unwrap_or_default(), &**n))
            .collect();
        let count = |used: &HashMap<String, (Resources, i128)>, n: &str| {
            used.get(n).map(|u| u.1).unwrap_or(0)
        };
        let mut order: std::collections::BTreeSet<(i128, &str)> =
            by_name.keys().map(|n| (count(&self.used, n), *n)).collect();
        let empty = (Resources::new(), 0);
        for pod in pending {
            let req = pod_requests(&pod);
            let tolerations = pod["spec"]["tolerations"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            let mut per_node = Vec::new();
            let mut best: Option<(i128, &str)> = None;
            for &(c, name) in &order {
                let (u, n) = self.used.get(name).unwrap_or(&empty);
                let reasons = node_reasons_for(&pod, &req, &tolerations, by_name[name], u, *n);
                if reasons.is_empty() {
                    best = Some((c, name));
                    break;
                }
                per_node.push(reasons);
            }
            let (ns, pname) = pod_key(&pod);
            match best {
                Some((c, node)) => match store.bind(&ns, &pname, node) {
                    Ok(_) => {
                        self.pending.remove(&(ns.clone(), pname.clone()));
                        self.place((ns.clone(), pname.clone()), node, req);
                        order.remove(&(c, node));
                        order.insert((c + 1, node));
                        pod_event(
                            store,
                            &pod,
                            "Normal",
                            "Scheduled",
                            &format!("Successfully assigned {ns}/{pname} to {node}"),
                            SCHEDULER_NAME,
                        );
                        tracing::debug!(pod = pname, node, "scheduled");
                    }
                    Err(e) => tracing::debug!(error = %e, pod = pname, "bind failed; will retry"),
                },
                None => {
                    let msg = fit_error(nodes.len(), &per_node);
                    let current = pod["status"]["conditions"]
                        .as_array()
                        .and_then(|cs| cs.iter().find(|c| c["type"] == "PodScheduled"))
                        .and_then(|c| c["message"].as_str())
                        .map(str::to_string);
                    if current.as_deref() == Some(msg.as_str()) {
                        continue;
                    }
                    let mut updated = (*pod).clone();
                    set_condition(
                        &mut updated,
                        "PodScheduled",
                        "False",
                        Some("Unschedulable"),
                        Some(&msg),
                    );
                    match store.update(&pods_r, &ns, &pname, updated, Sub::Status) {
                        Ok(_) => pod_event(
                            store,
                            &pod,
                            "Warning",
                            "FailedScheduling",
                            &msg,
                            SCHEDULER_NAME,
                        ),
                        Err(e) => {
                            tracing::debug!(error = %e, pod = pname, "could not mark unschedulable")
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_sorted_as_strings_like_upstream() {
        let per_node = vec![
            vec!["Insufficient aliyun/eni".to_string()],
            vec!["node(s) didn't match Pod's node affinity/selector".to_string()],
            vec!["node(s) didn't match Pod's node affinity/selector".to_string()],
        ];
        assert_eq!(
            fit_error(3, &per_node),
            "0/3 nodes are available: 1 Insufficient aliyun/eni, 2 node(s) didn't match Pod's node affinity/selector."
        );
        assert_eq!(fit_error(0, &[]), "no nodes available to schedule pods");
    }
}
