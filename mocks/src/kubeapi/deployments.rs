//! A tiny deployment controller: keeps `spec.replicas` pods from the
//! template (generateName, owned by the Deployment), scales up and down,
//! reports status, and removes pods whose Deployment is gone. No rollouts.

use super::reactor::key;
use super::store::{Store, Sub};
use serde_json::{json, Value};
use std::collections::hash_map::DefaultHasher;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

fn template_hash(template: &Value) -> String {
    let mut h = DefaultHasher::new();
    template.to_string().hash(&mut h);
    format!("{:x}", h.finish() & 0xff_ffff_ffff)
}

fn controller_uid(pod: &Value) -> Option<&str> {
    pod["metadata"]["ownerReferences"]
        .as_array()?
        .iter()
        .find(|o| o["controller"].as_bool() == Some(true) && o["kind"] == "Deployment")
        .and_then(|o| o["uid"].as_str())
}

fn is_ready(pod: &Value) -> bool {
    pod["status"]["conditions"].as_array().is_some_and(|cs| {
        cs.iter()
            .any(|c| c["type"] == "Ready" && c["status"] == "True")
    })
}

/// Deletion preference when scaling down: unbound, then pending, then not ready, then newest.
fn deletion_rank(pod: &Value) -> (u8, std::cmp::Reverse<String>) {
    let rank = if pod["spec"]["nodeName"].as_str().is_none_or(str::is_empty) {
        0
    } else if pod["status"]["phase"] == "Pending" {
        1
    } else if !is_ready(pod) {
        2
    } else {
        3
    };
    let created = pod["metadata"]["creationTimestamp"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    (rank, std::cmp::Reverse(created))
}

/// One reconcile pass over every Deployment.
pub fn deployment_pass(store: &Store) {
    let (Ok(pods_r), Ok(deps_r)) = (
        store.resource("", "pods"),
        store.resource("apps", "deployments"),
    ) else {
        return;
    };
    let deployments = store.snapshot(&key("apps", "deployments"));
    let mut owned: HashMap<String, Vec<Arc<Value>>> = HashMap::new();
    for p in store.snapshot(&key("", "pods")) {
        if let Some(uid) = controller_uid(&p) {
            owned.entry(uid.to_string()).or_default().push(p.clone());
        }
    }
    for d in &deployments {
        let uid = d["metadata"]["uid"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let ns = d["metadata"]["namespace"].as_str().unwrap_or_default();
        let name = d["metadata"]["name"].as_str().unwrap_or_default();
        let live: Vec<Arc<Value>> = owned
            .remove(&uid)
            .unwrap_or_default()
            .into_iter()
            .filter(|p| p["metadata"].get("deletionTimestamp").is_none())
            .collect();
        if d["metadata"].get("deletionTimestamp").is_some() {
            continue;
        }
        let want = d["spec"]["replicas"].as_i64().unwrap_or(1).max(0) as usize;
        let template = &d["spec"]["template"];
        let hash = template_hash(template);
        if live.len() < want {
            for _ in live.len()..want {
                let mut meta = template["metadata"].clone();
                if !meta.is_object() {
                    meta = json!({});
                }
                meta["generateName"] = json!(format!("{name}-{hash}-"));
                meta["namespace"] = json!(ns);
                meta["labels"]["pod-template-hash"] = json!(hash);
                meta["ownerReferences"] = json!([{
                    "apiVersion": "apps/v1", "kind": "Deployment", "name": name, "uid": uid,
                    "controller": true, "blockOwnerDeletion": true,
                }]);
                let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": template["spec"]});
                if let Err(e) = store.create(&pods_r, ns, pod) {
                    tracing::warn!(error = %e, deployment = name, "could not create pod");
                }
            }
        } else if live.len() > want {
            let mut victims = live.clone();
            victims.sort_by_key(|p| deletion_rank(p));
            for p in victims.iter().take(live.len() - want) {
                let pn = p["metadata"]["name"].as_str().unwrap_or_default();
                let _ = store.delete(&pods_r, ns, pn, &Value::Null);
            }
        }
        let count = live.len().min(want) as i64;
        let ready = live.iter().filter(|p| is_ready(p)).count().min(want) as i64;
        let mut status = json!({
            "observedGeneration": d["metadata"]["generation"],
            "replicas": count,
            "updatedReplicas": count,
            "readyReplicas": ready,
            "availableReplicas": ready,
            "unavailableReplicas": (want as i64 - ready).max(0),
        });
        let available = ready as usize >= want;
        let old_cond = d["status"]["conditions"]
            .as_array()
            .and_then(|c| c.first())
            .cloned();
        let same_state = old_cond
            .as_ref()
            .is_some_and(|c| c["status"] == if available { "True" } else { "False" });
        status["conditions"] = if same_state {
            json!([old_cond])
        } else {
            let now = super::store::now_time();
            json!([{
                "type": "Available",
                "status": if available { "True" } else { "False" },
                "reason": if available { "MinimumReplicasAvailable" } else { "MinimumReplicasUnavailable" },
                "message": if available { "Deployment has minimum availability." } else { "Deployment does not have minimum availability." },
                "lastUpdateTime": now, "lastTransitionTime": now,
            }])
        };
        if d["status"] != status {
            let mut updated = (**d).clone();
            updated["status"] = status;
            let _ = store.update(&deps_r, ns, name, updated, Sub::Status);
        }
    }
    // Garbage collection of pods whose owning Deployment no longer exists.
    for pods in owned.values() {
        for p in pods {
            let ns = p["metadata"]["namespace"].as_str().unwrap_or_default();
            let pn = p["metadata"]["name"].as_str().unwrap_or_default();
            let _ = store.delete(&pods_r, ns, pn, &Value::Null);
        }
    }
}
