//! What the plugin reads from the kube API, through the kubeconfig named in
//! the network config: the pod (checked against `K8S_POD_UID`), its
//! allocation annotation (waited for, bounded), and its node's podCIDR.
//! Read-only: the DaemonSet grants `get` on pods and nodes.

use crate::error::PluginError;
use ipam::allocation::PodAllocation;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client};
use std::path::Path;
use std::time::{Duration, Instant};

/// How long one API request may take; the whole wait is bounded separately.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// The pod the runtime names in `CNI_ARGS`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodRef {
    pub namespace: String,
    pub name: String,
    pub uid: Option<String>,
}

impl std::fmt::Display for PodRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

pub struct Kube {
    client: Client,
}

impl Kube {
    /// A client from the kubeconfig file; a missing or unreadable file is
    /// a config error naming the `kubeconfig` key.
    pub async fn connect(path: &Path) -> Result<Self, PluginError> {
        let kc = Kubeconfig::read_from(path).map_err(|e| {
            PluginError::invalid_config("kubeconfig", format!("{}: {e}", path.display()))
        })?;
        let mut cfg = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
            .await
            .map_err(|e| {
                PluginError::invalid_config("kubeconfig", format!("{}: {e}", path.display()))
            })?;
        cfg.connect_timeout = Some(REQUEST_TIMEOUT);
        cfg.read_timeout = Some(REQUEST_TIMEOUT);
        cfg.write_timeout = Some(REQUEST_TIMEOUT);
        let client = Client::try_from(cfg).map_err(|e| PluginError::Kube(e.to_string()))?;
        Ok(Kube { client })
    }

    /// The pod; not found, or found with another uid than the runtime's,
    /// is an error naming it.
    pub async fn pod(&self, pod: &PodRef) -> Result<Pod, PluginError> {
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &pod.namespace);
        let found = api
            .get_opt(&pod.name)
            .await
            .map_err(|e| PluginError::Kube(format!("get pod {pod}: {e}")))?
            .ok_or_else(|| PluginError::PodNotFound {
                namespace: pod.namespace.clone(),
                name: pod.name.clone(),
            })?;
        if let (Some(wanted), Some(uid)) = (pod.uid.as_deref(), found.metadata.uid.as_deref()) {
            if wanted != uid {
                return Err(PluginError::PodUidMismatch {
                    namespace: pod.namespace.clone(),
                    name: pod.name.clone(),
                    found: uid.to_owned(),
                    wanted: wanted.to_owned(),
                });
            }
        }
        Ok(found)
    }

    /// Wait until the pod carries an allocation for its own node, reading
    /// it again with a growing pause, until `deadline`. Then code 11 naming
    /// the pod.
    pub async fn wait_allocation(
        &self,
        pod_ref: &PodRef,
        first: Pod,
        deadline: Instant,
        timeout: Duration,
    ) -> Result<(Pod, PodAllocation), PluginError> {
        let mut pod = first;
        let mut pause = Duration::from_millis(50);
        loop {
            if let Some(a) = allocation_for_node(&pod) {
                return Ok((pod, a));
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(PluginError::TryAgainLater {
                    what: format!(
                        "pod {pod_ref} has no ENI allocation (annotation {}) after {:.1}s",
                        ipam::allocation::ALLOCATION_ANNOTATION,
                        timeout.as_secs_f64()
                    ),
                });
            }
            tokio::time::sleep(pause.min(deadline - now)).await;
            pause = (pause * 2).min(Duration::from_millis(500));
            pod = self.pod(pod_ref).await?;
        }
    }

    /// Whether the controller serves the node in shared-ENI mode (it marks
    /// such nodes with the annotation `vpc-eni.io/shared-eni: "true"`).
    pub async fn node_in_shared_mode(&self, node: &str) -> Result<bool, PluginError> {
        let api: Api<Node> = Api::all(self.client.clone());
        let n = api
            .get_opt(node)
            .await
            .map_err(|e| PluginError::Kube(format!("get node {node}: {e}")))?;
        Ok(n.is_some_and(|n| {
            n.metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(SHARED_NODE_ANNOTATION))
                .map(String::as_str)
                == Some("true")
        }))
    }

    /// The node's `spec.podCIDR`; a node without one yet is code 11.
    pub async fn node_pod_cidr(&self, node: &str) -> Result<String, PluginError> {
        let api: Api<Node> = Api::all(self.client.clone());
        let n = api
            .get_opt(node)
            .await
            .map_err(|e| PluginError::Kube(format!("get node {node}: {e}")))?
            .ok_or_else(|| PluginError::Kube(format!("node {node} not found")))?;
        n.spec
            .and_then(|s| s.pod_cidr)
            .filter(|c| !c.is_empty())
            .ok_or_else(|| PluginError::TryAgainLater {
                what: format!("node {node} has no spec.podCIDR yet"),
            })
    }
}

/// The annotation the controller puts on nodes in shared-ENI mode.
pub const SHARED_NODE_ANNOTATION: &str = "vpc-eni.io/shared-eni";

/// The pod's allocation, if it is for the node the pod is bound to (a stale
/// one left from another node does not count).
pub fn allocation_for_node(pod: &Pod) -> Option<PodAllocation> {
    let a = PodAllocation::from_annotations(pod.metadata.annotations.as_ref()?)?;
    // A shared allocation names the pod it was made for: one copied with
    // another pod's YAML is not this pod's (the controller replaces it).
    if a.pod_uid.is_some() && a.pod_uid != pod.metadata.uid {
        return None;
    }
    match pod.spec.as_ref().and_then(|s| s.node_name.as_deref()) {
        Some(node) if !a.first.node.is_empty() && a.first.node != node => None,
        _ => Some(a),
    }
}

/// Does the pod ask for an exclusive ENI (any of `resources`, in any
/// container's limits or requests), or already hold one?
pub fn wants_eni(pod: &Pod, resources: &[String]) -> bool {
    if pod
        .metadata
        .annotations
        .as_ref()
        .is_some_and(|a| a.contains_key(ipam::allocation::ALLOCATION_ANNOTATION))
    {
        return true;
    }
    let Some(spec) = pod.spec.as_ref() else {
        return false;
    };
    let containers = spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten());
    containers
        .filter_map(|c| c.resources.as_ref())
        .flat_map(|r| r.limits.iter().chain(r.requests.iter()))
        .flat_map(|m| m.iter())
        .any(|(k, q)| resources.contains(k) && q.0.trim() != "0")
}

/// The node the pod is bound to.
pub fn node_of(pod: &Pod) -> Option<&str> {
    pod.spec.as_ref()?.node_name.as_deref()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(v: serde_json::Value) -> Pod {
        serde_json::from_value(v).unwrap()
    }

    const ALLOC: &str = r#"{"eniId":"eni-1","mac":"00:16:3e:00:00:01","ip":"10.0.0.7","subnetId":"vsw-1","subnetCidr":"10.0.0.0/24","gateway":"10.0.0.253","node":"node-a"}"#;

    #[test]
    fn an_allocation_counts_only_on_its_node() {
        let on = |node: &str| {
            pod(json!({
                "metadata": {"name": "p", "annotations": {"vpc-eni.io/allocation": ALLOC}},
                "spec": {"nodeName": node, "containers": []}
            }))
        };
        assert_eq!(
            allocation_for_node(&on("node-a")).unwrap().first.ip,
            "10.0.0.7"
        );
        assert_eq!(allocation_for_node(&on("node-b")), None);
        let bare = pod(json!({"metadata": {"name": "p"}, "spec": {"containers": []}}));
        assert_eq!(allocation_for_node(&bare), None);
    }

    #[test]
    fn a_shared_allocation_counts_only_for_the_pod_it_names() {
        let shared = ALLOC.replace(
            r#""node":"node-a"}"#,
            r#""node":"node-a","mode":"shared","podUid":"uid-1"}"#,
        );
        let with_uid = |uid: &str| {
            pod(json!({
                "metadata": {"name": "p", "uid": uid, "annotations": {"vpc-eni.io/allocation": shared}},
                "spec": {"nodeName": "node-a", "containers": []}
            }))
        };
        assert!(allocation_for_node(&with_uid("uid-1")).unwrap().is_shared());
        assert_eq!(
            allocation_for_node(&with_uid("uid-2")),
            None,
            "copied from another pod"
        );
    }

    #[test]
    fn who_wants_an_eni() {
        let res = vec!["aliyun/eni".to_owned()];
        let asks = |limits: serde_json::Value| {
            pod(json!({"metadata": {"name": "p"}, "spec": {"containers": [
                {"name": "a", "image": "i", "resources": {"limits": limits}}
            ]}}))
        };
        assert!(wants_eni(&asks(json!({"aliyun/eni": "1"})), &res));
        assert!(!wants_eni(&asks(json!({"aliyun/eni": "0"})), &res));
        assert!(!wants_eni(&asks(json!({"cpu": "1"})), &res));
        let annotated = pod(json!({
            "metadata": {"name": "p", "annotations": {"vpc-eni.io/allocation": ALLOC}},
            "spec": {"containers": []}
        }));
        assert!(wants_eni(&annotated, &res));
    }
}
