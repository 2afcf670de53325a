//! Small kube-side helpers shared by the reconcilers: reading facts off a Node,
//! writing node conditions and extended-resource capacity, publishing Events.
//! No decisions here: those live in `ipam`.

use k8s_openapi::api::core::v1::{Node, ObjectReference};
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::{Resource, ResourceExt};
use serde_json::json;

/// The name written as the Events' reporting controller and field manager.
pub const CONTROLLER_NAME: &str = "vpc-eni-controller";

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

/// Status of the node's `NetworkUnavailable` condition, if any.
pub fn network_unavailable(node: &Node) -> Option<(String, String)> {
    node.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "NetworkUnavailable")
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

/// Publishes Events through kube-runtime's `Recorder` (events.k8s.io/v1,
/// deduplicated into series). Failures to publish are logged, never fatal.
#[derive(Clone)]
pub struct Events {
    recorder: Recorder,
}

impl Events {
    pub fn new(client: kube::Client) -> Self {
        let reporter = Reporter {
            controller: CONTROLLER_NAME.into(),
            instance: std::env::var("POD_NAME").ok(),
        };
        Self {
            recorder: Recorder::new(client, reporter),
        }
    }

    pub async fn publish(
        &self,
        regarding: &ObjectReference,
        warning: bool,
        reason: &str,
        action: &str,
        note: String,
    ) {
        let event = Event {
            type_: if warning {
                EventType::Warning
            } else {
                EventType::Normal
            },
            reason: reason.into(),
            note: Some(truncate(note, 1024)),
            action: action.into(),
            secondary: None,
        };
        if let Err(e) = self.recorder.publish(&event, regarding).await {
            tracing::warn!(error = %e, reason, "could not publish event");
        }
    }

    /// An Event about a node, by name (also for a node that is already gone).
    pub async fn node(&self, node: &str, warning: bool, reason: &str, action: &str, note: String) {
        let reference = node_ref(node);
        self.publish(&reference, warning, reason, action, note)
            .await;
    }
}

pub fn node_ref(name: &str) -> ObjectReference {
    ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("Node".into()),
        name: Some(name.into()),
        ..ObjectReference::default()
    }
}

pub fn object_ref<K: Resource<DynamicType = ()>>(obj: &K) -> ObjectReference {
    obj.object_ref(&())
}

fn truncate(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut cut = max;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
    }
    s
}
