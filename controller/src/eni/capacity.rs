//! Node capacity: each managed node advertises, as the extended resource
//! pods request, how many more secondary ENIs its instance can take
//! (`ipam::eni::advertised_capacity`), no more than its zone's configured
//! subnets have addresses for (`ipam::eni::capacity_within_addresses`). Written with a JSON patch on
//! `nodes/status` (the kubelet owns the rest of the status), kept right on a
//! resync so ENIs someone else attaches are noticed, and removed from nodes
//! that have no usable `spec.providerID`.

use super::EniMode;
use crate::kubeutil;
use crate::tasks::Failures;
use ipam::backoff::Backoff;
use ipam::eni::{
    advertised_capacity, capacity_within_addresses, is_owned, is_shared, pod_uid_of,
    shared_slots_taken, slots_held_outside_pods, AttachedEniView,
};
use ipam::ids::{EniId, InstanceId};
use ipam::provider_id::instance_from_provider_id;
use ipam::subnet::zone_configured;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::ResourceExt;
use providers::{CloudError, ErrorKind};
use serde_json::{json, Value};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// Recounts that failed back off from 5 s to 5 min: under throttling they
/// must not crowd out allocations on the same API budget.
const RETRY: Backoff = Backoff::new(Duration::from_secs(5), Duration::from_secs(300));

/// Why a node's capacity could not be computed.
#[derive(Debug, thiserror::Error)]
pub enum CapacityError {
    #[error("cloud: {0}")]
    Cloud(#[from] CloudError),
    #[error("kube: {0}")]
    Kube(#[from] kube::Error),
}

/// The last value computed for a node, to skip cloud calls when the node
/// object changes for unrelated reasons (the kubelet's status updates).
#[derive(Clone, Debug)]
struct Computed {
    provider_id: String,
    value: u32,
    at: Instant,
}

/// What the capacity reconciler keeps between passes of one leading term.
pub(super) struct State {
    /// node -> capacity last computed.
    computed: parking_lot::Mutex<HashMap<String, Computed>>,
    /// node -> the "capacity unknown" warning last published.
    unknown: crate::events::Once<String>,
    /// node -> consecutive failures (backoff).
    failures: Failures<String>,
    /// Start of the first recount round: recounts happen in rounds every
    /// `capacityResyncSeconds` from here, so the nodes' recounts fall
    /// together and go to the cloud in batches (`census`).
    epoch: parking_lot::Mutex<Option<Instant>>,
}

impl State {
    pub(super) fn new(events: crate::events::Events) -> Self {
        Self {
            computed: Default::default(),
            unknown: crate::events::Once::new(events),
            failures: Failures::new(),
            epoch: Default::default(),
        }
    }

    /// The recount round `at` falls in, and how long until the next one
    /// starts (seen from `now`).
    fn round(&self, at: Instant, now: Instant, resync: Duration) -> (u128, Duration) {
        let epoch = *self.epoch.lock().get_or_insert(now);
        let period = resync.as_millis().max(1);
        let of = |t: Instant| t.saturating_duration_since(epoch).as_millis() / period;
        let next = epoch
            + Duration::from_millis(u64::try_from((of(now) + 1) * period).unwrap_or(u64::MAX));
        (of(at), next.saturating_duration_since(now))
    }

    /// Forget a node's computed value so the next reconcile asks the cloud
    /// (e.g. after an attach failed on the instance's ENI limit).
    pub(super) fn invalidate(&self, node: &str) {
        self.computed.lock().remove(node);
    }

    /// Forget nodes that no longer exist.
    pub(super) fn retain_nodes(&self, live: &HashSet<String>) {
        self.computed.lock().retain(|n, _| live.contains(n));
        self.unknown.retain(|n| live.contains(n));
    }
}

/// What the cloud says a node can take, or why it cannot say.
enum Verdict {
    Known(u32),
    /// The instance or its type is unknown: advertise 0 and warn.
    Unknown(String),
}

pub(super) async fn reconcile(
    node: Arc<Node>,
    mode: Arc<EniMode>,
) -> Result<Action, CapacityError> {
    let started = mode.ctx.clock.now();
    let result = reconcile_node(&node, &mode).await;
    if result.is_ok() {
        mode.capacity.failures.forget(&node.name_any());
    }
    mode.ctx
        .metrics
        .reconciled("eni_capacity", result.is_ok(), started.elapsed());
    result
}

pub(super) fn error_policy(node: Arc<Node>, error: &CapacityError, mode: Arc<EniMode>) -> Action {
    tracing::warn!(node = %node.name_any(), %error, "node ENI capacity not updated; retrying");
    Action::requeue(mode.capacity.failures.failed(node.name_any(), RETRY))
}

async fn reconcile_node(node: &Node, mode: &EniMode) -> Result<Action, CapacityError> {
    let name = node.name_any();
    let resync = Duration::from_secs(mode.ctx.config.eni.capacity_resync_seconds.into());
    let managed = kubeutil::provider_id(node)
        .and_then(|p| instance_from_provider_id(p).ok().map(|i| (p.to_owned(), i)));
    let Some((provider_id, instance)) = managed else {
        mode.capacity.invalidate(&name);
        if let Some(patch) = removal_patch(node, &mode.resource) {
            patch_status(mode, &name, patch).await?;
            tracing::info!(node = %name, resource = %mode.resource, "node has no usable providerID: resource removed");
        }
        return Ok(Action::await_change());
    };
    let now = mode.ctx.clock.now();
    let (this_round, until_next) = mode.capacity.round(now, now, resync);
    let cached = mode
        .capacity
        .computed
        .lock()
        .get(&name)
        .filter(|c| {
            c.provider_id == provider_id && mode.capacity.round(c.at, now, resync).0 == this_round
        })
        .cloned();
    let value = match cached {
        Some(c) => c.value,
        None => {
            let value = match verdict(mode, &name, &instance).await? {
                Verdict::Known(v) => {
                    mode.capacity.unknown.forget(&name);
                    v
                }
                Verdict::Unknown(why) => {
                    mode.capacity
                        .unknown
                        .node(
                            name.clone(),
                            &name,
                            true,
                            "EniCapacityUnknown",
                            "AdvertiseEniCapacity",
                            format!("{why}; advertising {} = 0 until it is known", mode.resource),
                        )
                        .await;
                    0
                }
            };
            mode.capacity.computed.lock().insert(
                name.clone(),
                Computed {
                    provider_id,
                    value,
                    at: now,
                },
            );
            value
        }
    };
    if let Some(patch) = set_patch(node, &mode.resource, value) {
        patch_status(mode, &name, patch).await?;
        tracing::info!(node = %name, resource = %mode.resource, value, "advertised ENI capacity");
    }
    Ok(Action::requeue(until_next.max(Duration::from_millis(100))))
}

async fn verdict(
    mode: &EniMode,
    node: &str,
    instance: &InstanceId,
) -> Result<Verdict, CapacityError> {
    let cloud = mode.ctx.cloud.as_ref();
    // ENIs a live pod's annotation names are that pod's: no need to ask
    // the cloud whose they are.
    let placed = mode.pods.annotated_enis().unwrap_or_default();
    let described = mode
        .census
        .describe(instance, placed.keys().cloned().collect())
        .await?;
    let Some(found) = described.instance else {
        return Ok(Verdict::Unknown(format!(
            "instance {instance} was not found in the cloud"
        )));
    };
    let limits = match cloud.instance_type_limits(&found.instance_type).await {
        Ok(l) => l,
        Err(e) if e.kind == ErrorKind::NotFound => {
            return Ok(Verdict::Unknown(format!(
                "instance type {} of instance {instance} is unknown to the cloud ({})",
                found.instance_type, e.message
            )))
        }
        Err(e) => return Err(e.into()),
    };
    if !zone_configured(&found.zone, &mode.ctx.config.eni.subnets) {
        return Ok(Verdict::Unknown(format!(
            "zone {} of instance {instance} has no subnet in eni.subnets, so no ENI can be made here; add the zone's vSwitch ids to eni.subnets",
            found.zone
        )));
    }
    let secondary: Vec<&EniId> = found
        .enis
        .iter()
        .filter(|e| !e.primary)
        .map(|e| &e.eni_id)
        .collect();
    let mut shared_attached = 0u32;
    let views: Vec<AttachedEniView> = secondary
        .iter()
        .filter_map(|id| {
            if let Some(uid) = placed.get(*id) {
                return Some(AttachedEniView {
                    owned: true,
                    pod_uid: Some(uid.clone()),
                });
            }
            match described.enis.iter().find(|e| &e.id == *id) {
                // Shared-mode ENIs hold the slots reserved for them below.
                Some(e) if is_owned(&e.tags, mode.ctx.cluster()) && is_shared(&e.tags) => {
                    shared_attached += 1;
                    None
                }
                Some(e) if is_owned(&e.tags, mode.ctx.cluster()) => Some(AttachedEniView {
                    owned: true,
                    pod_uid: pod_uid_of(&e.tags).map(str::to_owned),
                }),
                _ => Some(AttachedEniView {
                    owned: false,
                    pod_uid: None,
                }),
            }
        })
        .collect();
    mode.ctx.metrics.set_node_enis(
        node,
        u32::try_from(secondary.len()).unwrap_or(u32::MAX),
        ipam::eni::secondary_eni_slots(limits.max_enis),
    );
    let live = mode.pods.uids();
    // On a node in shared mode the pool's slots are not offered to pods
    // asking for whole ENIs: the two modes never fight over a slot.
    let reserved = mode
        .node_store
        .get(&kube::runtime::reflector::ObjectRef::new(node))
        .map_or(0, |n| mode.ctx.config.shared_reserved_slots(n.labels()));
    let outside = slots_held_outside_pods(&views, live.as_ref());
    let by_pods = u32::try_from(views.len())
        .unwrap_or(u32::MAX)
        .saturating_sub(outside);
    // Every new ENI needs an address of the zone's configured subnets.
    let free = mode
        .subnets
        .zone_free(cloud, &found.zone, &mode.ctx.config.eni.subnets)
        .await?;
    let value = capacity_within_addresses(
        advertised_capacity(
            limits.max_enis,
            outside.saturating_add(shared_slots_taken(reserved, shared_attached)),
        ),
        by_pods,
        free,
    );
    tracing::debug!(node, zone = %found.zone, free_addresses = free, value, "ENI capacity counted");
    Ok(Verdict::Known(value))
}

fn pointer_key(resource: &str) -> String {
    resource.replace('~', "~0").replace('/', "~1")
}

/// Ops that set `capacity[resource]` and `allocatable[resource]` to
/// `value`, or `None` when both already say so. Where a whole map (or the
/// status) has to be created, which would replace one the kubelet wrote
/// since our copy was read, the ops first test the node's resourceVersion.
fn set_patch(node: &Node, resource: &str, value: u32) -> Option<Value> {
    let status = node.status.as_ref();
    let want = value.to_string();
    let mut ops = Vec::new();
    if status.is_none() {
        ops.push(json!({"op": "add", "path": "/status", "value": {}}));
    }
    for field in ["capacity", "allocatable"] {
        let map = status.and_then(|s| match field {
            "capacity" => s.capacity.as_ref(),
            _ => s.allocatable.as_ref(),
        });
        match map {
            None => ops.push(
                json!({"op": "add", "path": format!("/status/{field}"), "value": {resource: want}}),
            ),
            Some(m) if m.get(resource).map(|q| q.0.as_str()) == Some(want.as_str()) => {}
            Some(_) => ops.push(json!({
                "op": "add",
                "path": format!("/status/{field}/{}", pointer_key(resource)),
                "value": want,
            })),
        }
    }
    if ops.is_empty() {
        return None;
    }
    let creates_a_map = ops.iter().any(|op| {
        op["path"]
            .as_str()
            .is_some_and(|p| p.matches('/').count() <= 2)
    });
    if let Some(rv) = node
        .metadata
        .resource_version
        .as_ref()
        .filter(|_| creates_a_map)
    {
        ops.insert(
            0,
            json!({"op": "test", "path": "/metadata/resourceVersion", "value": rv}),
        );
    }
    Some(Value::Array(ops))
}

/// Ops that remove the resource from a node that has it (also what
/// `cleanup-eni` sends once ENI mode is off).
pub(crate) fn removal_patch(node: &Node, resource: &str) -> Option<Value> {
    let status = node.status.as_ref()?;
    let mut ops = Vec::new();
    for (field, map) in [
        ("capacity", status.capacity.as_ref()),
        ("allocatable", status.allocatable.as_ref()),
    ] {
        if map.is_some_and(|m| m.contains_key(resource)) {
            ops.push(json!({"op": "remove", "path": format!("/status/{field}/{}", pointer_key(resource))}));
        }
    }
    (!ops.is_empty()).then_some(Value::Array(ops))
}

async fn patch_status(mode: &EniMode, name: &str, ops: Value) -> Result<(), CapacityError> {
    let patch: json_patch::Patch = serde_json::from_value(ops).map_err(|e| {
        // The ops are built above from fixed shapes; this cannot fail.
        CapacityError::Kube(kube::Error::SerdeError(e))
    })?;
    mode.nodes
        .patch_status(name, &PatchParams::default(), &Patch::Json::<()>(patch))
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::NodeStatus;
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
    use std::collections::BTreeMap;

    fn node(capacity: Option<&[(&str, &str)]>) -> Node {
        let map = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), Quantity(v.to_string())))
                .collect::<BTreeMap<_, _>>()
        };
        Node {
            status: capacity.map(|c| NodeStatus {
                capacity: Some(map(c)),
                allocatable: Some(map(c)),
                ..NodeStatus::default()
            }),
            ..Node::default()
        }
    }

    #[test]
    fn set_patch_escapes_the_slash_and_skips_when_unchanged() {
        let n = node(Some(&[("cpu", "4")]));
        let ops = set_patch(&n, "aliyun/eni", 2).unwrap();
        assert_eq!(ops[0]["path"], "/status/capacity/aliyun~1eni");
        assert_eq!(ops[0]["value"], "2");
        assert_eq!(ops[1]["path"], "/status/allocatable/aliyun~1eni");
        let n = node(Some(&[("cpu", "4"), ("aliyun/eni", "2")]));
        assert!(set_patch(&n, "aliyun/eni", 2).is_none());
        assert!(set_patch(&n, "aliyun/eni", 1).is_some());
        let bare = node(None);
        let ops = set_patch(&bare, "aliyun/eni", 0).unwrap();
        assert_eq!(ops[0]["path"], "/status");
        assert_eq!(ops[1]["value"]["aliyun/eni"], "0");
    }

    #[test]
    fn creating_a_map_tests_the_resource_version_and_setting_a_key_does_not() {
        let mut bare = node(Some(&[]));
        bare.status.as_mut().unwrap().capacity = None;
        bare.metadata.resource_version = Some("42".into());
        let ops = set_patch(&bare, "aliyun/eni", 2).unwrap();
        assert_eq!(ops[0]["op"], "test");
        assert_eq!(ops[0]["path"], "/metadata/resourceVersion");
        assert_eq!(ops[0]["value"], "42");
        assert_eq!(ops[1]["path"], "/status/capacity");
        let mut full = node(Some(&[("cpu", "4")]));
        full.metadata.resource_version = Some("42".into());
        let ops = set_patch(&full, "aliyun/eni", 2).unwrap();
        assert!(ops.as_array().unwrap().iter().all(|op| op["op"] == "add"));
    }

    #[test]
    fn removal_only_when_present() {
        assert!(removal_patch(&node(Some(&[("cpu", "4")])), "aliyun/eni").is_none());
        let ops = removal_patch(&node(Some(&[("aliyun/eni", "2")])), "aliyun/eni").unwrap();
        assert_eq!(ops[0]["op"], "remove");
        assert_eq!(ops[1]["path"], "/status/allocatable/aliyun~1eni");
    }
}
