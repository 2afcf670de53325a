//! Small kube-side helpers shared by the reconcilers: reading facts off a
//! Node and writing its `NetworkUnavailable` condition. No decisions here:
//! those live in `ipam`.

use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, Patch, PatchParams};
use kube::ResourceExt;
use serde_json::json;

/// Well-known node label holding the zone.
pub const ZONE_LABEL: &str = "topology.kubernetes.io/zone";
/// Well-known node label holding the instance type.
pub const INSTANCE_TYPE_LABEL: &str = "node.kubernetes.io/instance-type";

pub fn provider_id(node: &Node) -> Option<&str> {
    node.spec.as_ref()?.provider_id.as_deref()
}

/// The node's IPv4 podCIDR (`spec.podCIDRs` first IPv4 entry, else `spec.podCIDR`).
pub fn pod_cidr(node: &Node) -> Option<String> {
    let spec = node.spec.as_ref()?;
    spec.pod_cidrs
        .as_ref()
        .and_then(|cidrs| cidrs.iter().find(|c| !c.contains(':')).cloned())
        .or_else(|| spec.pod_cidr.clone().filter(|c| !c.contains(':')))
}

pub fn zone(node: &Node) -> Option<String> {
    node.labels().get(ZONE_LABEL).cloned()
}

/// The node condition routes mode writes.
pub const NETWORK_UNAVAILABLE: &str = "NetworkUnavailable";

/// Status of the node's `NetworkUnavailable` condition, if any.
pub fn network_unavailable(node: &Node) -> Option<(String, String)> {
    node.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == NETWORK_UNAVAILABLE)
        .map(|c| (c.status.clone(), c.reason.clone().unwrap_or_default()))
}

/// Set `NetworkUnavailable` (strategic merge on `nodes/status`: the kubelet
/// owns the other conditions, which this leaves alone).
pub async fn set_network_unavailable(
    nodes: &Api<Node>,
    name: &str,
    unavailable: bool,
    reason: &str,
    message: &str,
) -> Result<(), kube::Error> {
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let patch = json!({
        "status": {
            "conditions": [{
                "type": "NetworkUnavailable",
                "status": if unavailable { "True" } else { "False" },
                "reason": reason,
                "message": message,
                "lastTransitionTime": now,
                "lastHeartbeatTime": now,
            }]
        }
    });
    nodes
        .patch_status(name, &PatchParams::default(), &Patch::Strategic(&patch))
        .await
        .map(|_| ())
}
