//! The kube objects the reconcilers read, cached once per kind for the
//! whole replica and cut down to the fields they read: one watch and one
//! reflector store per kind, shared by every reconciler that reads it, its
//! changes fanned out to each of them. At 5,000 nodes and 100,000 pods a
//! full `Pod` is kilobytes in memory (its spec alone is 1.5 KB of struct
//! before any string); what a reconciler never reads is dropped as the
//! object arrives ([`strip_node`], [`strip_pod`]), and pods no reconciler
//! cares about are not kept at all (the `keep` filter of [`Shared`]).
//!
//! A field a reconciler starts to read must be kept here too; the tests
//! below list what survives.

use crate::tasks::AbortOnDrop;
use futures::{Stream, StreamExt};
use ipam::allocation::{ALLOCATION_ANNOTATION, RELEASE_FINALIZER};
use k8s_openapi::api::core::v1::{
    Container, Node, NodeSpec, NodeStatus, Pod, PodSpec, PodStatus, ResourceRequirements,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::Api;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::ResourceExt as _;
use std::collections::BTreeMap;
use std::fmt::Debug;
use std::sync::Arc;
use tokio::sync::{mpsc, Notify};

/// Labels of a node the reconcilers read.
const NODE_LABELS: [&str; 2] = [
    crate::kubeutil::ZONE_LABEL,
    crate::kubeutil::INSTANCE_TYPE_LABEL,
];

/// How each object is cut down as it arrives.
pub type Strip<K> = Arc<dyn Fn(&mut K) + Send + Sync>;

/// Which objects of a kind are kept in the cache (all when `None`).
pub type Keep<K> = Arc<dyn Fn(&K) -> bool + Send + Sync>;

/// One kind's watch before it starts: who wants to hear of changes.
pub struct Shared<K>
where
    K: kube::Resource<DynamicType = ()> + Clone + 'static,
{
    api: Api<K>,
    strip: Strip<K>,
    keep: Option<Keep<K>>,
    notify: Vec<Arc<Notify>>,
    applied: Vec<mpsc::UnboundedSender<K>>,
}

/// A started watch: the store every subscriber reads, and the task that
/// keeps it (stopped when this is dropped).
pub struct Cache<K>
where
    K: kube::Resource<DynamicType = ()> + Clone + 'static,
{
    pub store: Store<K>,
    _watch: AbortOnDrop,
}

impl<K> Shared<K>
where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + Debug
        + serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static,
{
    /// Watch every object of `api`, each cut down by `strip` as it comes.
    pub fn new(api: Api<K>, strip: Strip<K>) -> Self {
        Self {
            api,
            strip,
            keep: None,
            notify: Vec::new(),
            applied: Vec::new(),
        }
    }

    /// Keep only the objects (already stripped) for which `keep` holds; an
    /// object that stops qualifying leaves the cache.
    pub fn keep(mut self, keep: Keep<K>) -> Self {
        self.keep = Some(keep);
        self
    }

    /// Notified after every change to the cache (objects applied, deleted,
    /// a re-list).
    pub fn changes(&mut self) -> Arc<Notify> {
        let n = Arc::new(Notify::new());
        self.notify.push(n.clone());
        n
    }

    /// Every object applied to the cache, for a kube-runtime `Controller`
    /// (`Controller::for_stream(trigger, store)`).
    pub fn applied(&mut self) -> impl Stream<Item = Result<K, watcher::Error>> + Send + 'static {
        let (tx, mut rx) = mpsc::unbounded_channel();
        self.applied.push(tx);
        futures::stream::poll_fn(move |cx| rx.poll_recv(cx)).map(Ok)
    }

    /// Start the watch; the store fills as the first list comes in.
    pub fn start(self) -> Cache<K> {
        let (store, writer) = reflector::store::<K>();
        let reader = writer.as_reader();
        let Shared {
            api,
            strip,
            keep,
            notify,
            applied,
        } = self;
        let kind = <K as kube::Resource>::kind(&()).into_owned();
        let stream = watcher(api, watcher::Config::default())
            .default_backoff()
            .modify(move |obj| strip(obj))
            .filter_map(move |event| {
                let event = match (&keep, event) {
                    (Some(keep), Ok(e)) => filtered(e, keep.as_ref(), &reader),
                    (_, other) => Some(other),
                };
                std::future::ready(event)
            })
            .reflect(writer);
        let watch = async move {
            futures::pin_mut!(stream);
            while let Some(event) = stream.next().await {
                match event {
                    Ok(event) => {
                        if !applied.is_empty() {
                            if let watcher::Event::Apply(obj) | watcher::Event::InitApply(obj) =
                                &event
                            {
                                for tx in &applied {
                                    let _ = tx.send(obj.clone());
                                }
                            }
                        }
                        for n in &notify {
                            n.notify_one();
                        }
                    }
                    Err(e) => tracing::warn!(kind = %kind, error = %e, "watch failed; retrying"),
                }
            }
        };
        Cache {
            store,
            _watch: AbortOnDrop::spawn(watch),
        }
    }
}

/// An event as the cache should see it: objects that do not qualify are
/// left out, or deleted when the cache holds an older copy.
fn filtered<K>(
    event: watcher::Event<K>,
    keep: &(dyn Fn(&K) -> bool + Send + Sync),
    reader: &Store<K>,
) -> Option<Result<watcher::Event<K>, watcher::Error>>
where
    K: kube::Resource<DynamicType = ()> + Clone + 'static,
{
    use watcher::Event;
    let event = match event {
        Event::Apply(obj) if !keep(&obj) => {
            let held = reader.get(&ObjectRef::from_obj(&obj)).is_some();
            held.then_some(Event::Delete(obj))?
        }
        Event::InitApply(obj) if !keep(&obj) => return None,
        other => other,
    };
    Some(Ok(event))
}

/// [`strip_node`] that also keeps the labels named in `keys` (those a
/// `nodeSelector` of the config reads: `sharedEni`'s, the BGP peers').
pub fn node_stripper(keys: Vec<String>) -> Strip<Node> {
    Arc::new(move |node: &mut Node| {
        let kept: BTreeMap<String, String> = node
            .labels()
            .iter()
            .filter(|(k, _)| keys.contains(k))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        strip_node(node);
        node.labels_mut().extend(kept);
    })
}

/// What the reconcilers read of a node: name, uid, resourceVersion and
/// deletion time; the zone and instance-type labels; the shared-mode mark;
/// `spec.podCIDR(s)` and `spec.providerID`; the `NetworkUnavailable`
/// condition; the `InternalIP` addresses (the BGP backend's next hop);
/// extended resources (names with a `/`) in capacity and allocatable, and
/// `pods` in capacity.
pub fn strip_node(node: &mut Node) {
    let meta = std::mem::take(&mut node.metadata);
    node.metadata = ObjectMeta {
        name: meta.name,
        uid: meta.uid,
        resource_version: meta.resource_version,
        deletion_timestamp: meta.deletion_timestamp,
        labels: meta.labels.map(|l| {
            l.into_iter()
                .filter(|(k, _)| NODE_LABELS.contains(&k.as_str()))
                .collect()
        }),
        annotations: meta.annotations.and_then(|a| {
            let ours: BTreeMap<String, String> = a
                .into_iter()
                .filter(|(k, _)| k == crate::shared::NODE_ANNOTATION)
                .collect();
            (!ours.is_empty()).then_some(ours)
        }),
        ..ObjectMeta::default()
    };
    node.spec = node.spec.take().map(|s| NodeSpec {
        pod_cidr: s.pod_cidr,
        pod_cidrs: s.pod_cidrs,
        provider_id: s.provider_id,
        ..NodeSpec::default()
    });
    node.status = node.status.take().map(|s| NodeStatus {
        // `pods` too: shared mode warns when it is above the node's IPs.
        capacity: s.capacity.map(|c| {
            c.into_iter()
                .filter(|(k, _)| k.contains('/') || k == "pods")
                .collect()
        }),
        allocatable: s.allocatable.map(extended_only),
        conditions: s.conditions.map(|c| {
            c.into_iter()
                .filter(|c| c.type_ == crate::kubeutil::NETWORK_UNAVAILABLE)
                .collect()
        }),
        addresses: s
            .addresses
            .map(|a| {
                a.into_iter()
                    .filter(|a| a.type_ == "InternalIP")
                    .collect::<Vec<_>>()
            })
            .filter(|a| !a.is_empty()),
        ..NodeStatus::default()
    });
}

/// Extended resources only (their names carry a domain: `aliyun/eni`).
fn extended_only<V>(m: BTreeMap<String, V>) -> BTreeMap<String, V> {
    m.into_iter().filter(|(k, _)| k.contains('/')).collect()
}

/// What the reconcilers read of a pod: name, namespace, uid,
/// resourceVersion, deletion time, owner references and finalizers; our
/// own annotation; `spec.nodeName`; the containers (and init containers)
/// that ask for an extended resource, with their name and only those
/// resources; `spec.hostNetwork`; `status.phase`.
pub fn strip_pod(pod: &mut Pod) {
    let meta = std::mem::take(&mut pod.metadata);
    pod.metadata = ObjectMeta {
        name: meta.name,
        namespace: meta.namespace,
        uid: meta.uid,
        resource_version: meta.resource_version,
        deletion_timestamp: meta.deletion_timestamp,
        owner_references: meta.owner_references,
        finalizers: meta.finalizers,
        annotations: meta.annotations.and_then(|a| {
            let ours: BTreeMap<String, String> = a
                .into_iter()
                .filter(|(k, _)| k == ALLOCATION_ANNOTATION)
                .collect();
            (!ours.is_empty()).then_some(ours)
        }),
        ..ObjectMeta::default()
    };
    pod.spec = pod.spec.take().map(|s| PodSpec {
        node_name: s.node_name,
        host_network: s.host_network,
        containers: asking(s.containers),
        init_containers: s.init_containers.map(asking).filter(|c| !c.is_empty()),
        ..PodSpec::default()
    });
    pod.status = pod.status.take().map(|s| PodStatus {
        phase: s.phase,
        ..PodStatus::default()
    });
}

/// The containers that ask for an extended resource, cut down to their
/// name and those asks. Leaving out the others changes no ENI count: a
/// container without an ask adds nothing.
fn asking(containers: Vec<Container>) -> Vec<Container> {
    containers
        .into_iter()
        .filter_map(|c| {
            let r = c.resources?;
            let resources = ResourceRequirements {
                limits: r.limits.map(extended_only).filter(|m| !m.is_empty()),
                requests: r.requests.map(extended_only).filter(|m| !m.is_empty()),
                ..ResourceRequirements::default()
            };
            (resources.limits.is_some() || resources.requests.is_some()).then(|| Container {
                name: c.name,
                resources: Some(resources),
                ..Container::default()
            })
        })
        .collect()
}

/// A pod exclusive-ENI mode has to do with: it asks for `resource` (or
/// asks for it badly: the pod gets an Event), or carries our annotation or
/// finalizer. Requests cannot change on a live pod, so a pod that does not
/// qualify never will, except by losing our marks.
pub fn eni_pod(resource: &str, pod: &Pod) -> bool {
    crate::eni::request::requested(pod, resource) != Ok(0)
        || pod.annotations().contains_key(ALLOCATION_ANNOTATION)
        || pod.finalizers().iter().any(|f| f == RELEASE_FINALIZER)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn realistic_pod() -> Pod {
        serde_json::from_value(json!({
            "metadata": {
                "name": "web-1", "namespace": "default", "uid": "u1", "resourceVersion": "7",
                "generateName": "web-", "labels": {"app": "web", "tier": "front"},
                "annotations": {"kubectl.kubernetes.io/restartedAt": "now",
                                ALLOCATION_ANNOTATION: "{}"},
                "finalizers": ["other.io/x", RELEASE_FINALIZER],
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web",
                                     "uid": "rs", "controller": true}],
                "managedFields": [{"manager": "kubectl", "operation": "Update"}]
            },
            "spec": {
                "nodeName": "n1",
                "initContainers": [{"name": "init", "image": "busybox"}],
                "containers": [
                    {"name": "app", "image": "nginx", "env": [{"name": "A", "value": "b"}],
                     "resources": {"limits": {"aliyun/eni": "1", "cpu": "1"},
                                   "requests": {"memory": "64Mi"}}},
                    {"name": "sidecar", "image": "envoy", "resources": {"limits": {"cpu": "1"}}}
                ],
                "volumes": [{"name": "v", "emptyDir": {}}]
            },
            "status": {"phase": "Running", "podIP": "10.0.0.1", "hostIP": "192.168.0.1"}
        }))
        .unwrap()
    }

    #[test]
    fn a_stripped_pod_keeps_what_eni_mode_reads() {
        let mut pod = realistic_pod();
        let before = crate::eni::request::requested(&pod, "aliyun/eni");
        strip_pod(&mut pod);
        assert_eq!(crate::eni::request::requested(&pod, "aliyun/eni"), before);
        assert_eq!(before, Ok(1));
        assert_eq!(pod.name_any(), "web-1");
        assert_eq!(pod.namespace().as_deref(), Some("default"));
        assert_eq!(pod.uid().as_deref(), Some("u1"));
        assert_eq!(pod.resource_version().as_deref(), Some("7"));
        assert_eq!(pod.finalizers(), ["other.io/x", RELEASE_FINALIZER]);
        assert!(pod.owner_references()[0].controller == Some(true));
        assert_eq!(crate::eni::request::bound_node(&pod), Some("n1"));
        assert_eq!(
            pod.annotations().keys().collect::<Vec<_>>(),
            [ALLOCATION_ANNOTATION]
        );
        assert!(pod.labels().is_empty() && pod.managed_fields().is_empty());
        let spec = pod.spec.as_ref().unwrap();
        assert_eq!(spec.containers.len(), 1, "only the container that asks");
        assert_eq!(spec.containers[0].name, "app");
        assert!(spec.containers[0].image.is_none() && spec.containers[0].env.is_none());
        let r = spec.containers[0].resources.as_ref().unwrap();
        assert_eq!(r.limits.as_ref().unwrap().len(), 1);
        assert!(r.requests.is_none());
        assert!(spec.init_containers.is_none() && spec.volumes.is_none());
        let status = pod.status.as_ref().unwrap();
        assert_eq!(status.phase.as_deref(), Some("Running"));
        assert!(status.pod_ip.is_none());
    }

    #[test]
    fn a_bad_quantity_still_reaches_the_reconciler() {
        let mut pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": "p"},
            "spec": {"containers": [{"name": "a", "resources": {"limits": {"aliyun/eni": "lots"}}}]}
        }))
        .unwrap();
        strip_pod(&mut pod);
        assert!(crate::eni::request::requested(&pod, "aliyun/eni").is_err());
        assert!(eni_pod("aliyun/eni", &pod));
    }

    #[test]
    fn only_pods_with_an_ask_or_our_marks_are_eni_pods() {
        let plain: Pod = serde_json::from_value(json!({
            "metadata": {"name": "p"},
            "spec": {"containers": [{"name": "a", "resources": {"limits": {"cpu": "1"}}}]}
        }))
        .unwrap();
        assert!(!eni_pod("aliyun/eni", &plain));
        let mut marked = plain.clone();
        marked.metadata.finalizers = Some(vec![RELEASE_FINALIZER.into()]);
        assert!(eni_pod("aliyun/eni", &marked));
        assert!(eni_pod("aliyun/eni", &realistic_pod()));
        assert!(!eni_pod("example.com/eni", &{
            let mut p = realistic_pod();
            p.metadata.annotations = None;
            p.metadata.finalizers = None;
            p
        }));
    }

    #[test]
    fn shared_mode_keeps_its_selector_labels_mark_max_pods_and_host_network() {
        let mut node: Node = serde_json::from_value(json!({
            "metadata": {"name": "n1", "labels": {"pool": "shared", "team": "x"},
                "annotations": {crate::shared::NODE_ANNOTATION: "true", "other": "y"}},
            "status": {"capacity": {"cpu": "4", "pods": "110"}}
        }))
        .unwrap();
        node_stripper(vec!["pool".into()])(&mut node);
        assert_eq!(node.labels().len(), 1);
        assert_eq!(
            node.labels().get("pool").map(String::as_str),
            Some("shared")
        );
        assert_eq!(node.annotations().len(), 1);
        let capacity = node.status.unwrap().capacity.unwrap();
        assert_eq!(capacity.keys().collect::<Vec<_>>(), ["pods"]);
        let mut pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": "p"},
            "spec": {"hostNetwork": true, "containers": [{"name": "a"}]}
        }))
        .unwrap();
        strip_pod(&mut pod);
        assert!(crate::shared::host_network(&pod));
    }

    #[test]
    fn a_stripped_node_keeps_what_routes_and_capacity_read() {
        let mut node: Node = serde_json::from_value(json!({
            "metadata": {"name": "n1", "uid": "u", "resourceVersion": "3",
                "labels": {crate::kubeutil::ZONE_LABEL: "z1", crate::kubeutil::INSTANCE_TYPE_LABEL: "ecs.g6.large",
                           "kubernetes.io/hostname": "n1", "kubernetes.io/os": "linux"},
                "annotations": {"node.alpha.kubernetes.io/ttl": "0"},
                "managedFields": [{"manager": "kubelet"}]},
            "spec": {"podCIDR": "10.0.1.0/24", "podCIDRs": ["10.0.1.0/24"],
                     "providerID": "cn-hangzhou.i-1", "taints": [{"key": "k", "effect": "NoSchedule"}]},
            "status": {
                "capacity": {"cpu": "4", "aliyun/eni": "2"},
                "allocatable": {"cpu": "4", "pods": "110"},
                "conditions": [{"type": "Ready", "status": "True"},
                               {"type": "NetworkUnavailable", "status": "False", "reason": "RouteCreated"}],
                "addresses": [{"type": "InternalIP", "address": "192.168.0.10"},
                              {"type": "Hostname", "address": "n1"},
                              {"type": "ExternalIP", "address": "203.0.113.7"}],
                "images": [{"names": ["nginx"], "sizeBytes": 1}],
                "nodeInfo": {"architecture": "amd64", "bootID": "", "containerRuntimeVersion": "",
                    "kernelVersion": "", "kubeProxyVersion": "", "kubeletVersion": "", "machineID": "",
                    "operatingSystem": "linux", "osImage": "", "systemUUID": ""}
            }
        }))
        .unwrap();
        strip_node(&mut node);
        assert_eq!(node.name_any(), "n1");
        assert_eq!(node.resource_version().as_deref(), Some("3"));
        assert_eq!(crate::kubeutil::zone(&node).as_deref(), Some("z1"));
        assert_eq!(
            node.labels().get(crate::kubeutil::INSTANCE_TYPE_LABEL),
            Some(&"ecs.g6.large".to_owned())
        );
        assert_eq!(node.labels().len(), 2);
        assert!(node.annotations().is_empty() && node.managed_fields().is_empty());
        assert_eq!(
            crate::kubeutil::pod_cidr(&node).as_deref(),
            Some("10.0.1.0/24")
        );
        assert_eq!(crate::kubeutil::provider_id(&node), Some("cn-hangzhou.i-1"));
        assert!(node.spec.as_ref().unwrap().taints.is_none());
        assert_eq!(
            crate::kubeutil::network_unavailable(&node),
            Some(("False".into(), "RouteCreated".into()))
        );
        let status = node.status.as_ref().unwrap();
        assert_eq!(
            status.capacity.as_ref().unwrap().keys().collect::<Vec<_>>(),
            ["aliyun/eni"]
        );
        // The map stays (empty): patches add a key to it, not a new map.
        assert!(status.allocatable.as_ref().unwrap().is_empty());
        assert_eq!(status.conditions.as_ref().unwrap().len(), 1);
        // The BGP backend's next hop.
        let addresses = status.addresses.as_ref().unwrap();
        assert_eq!(addresses.len(), 1);
        assert_eq!(
            (addresses[0].type_.as_str(), addresses[0].address.as_str()),
            ("InternalIP", "192.168.0.10")
        );
        assert!(status.images.is_none());
        assert!(status.node_info.is_none());
    }

    #[test]
    fn objects_that_stop_qualifying_leave_the_cache() {
        let (reader, mut writer) = reflector::store::<Pod>();
        let keep = |p: &Pod| p.labels().contains_key("keep");
        let mut kept = realistic_pod();
        kept.labels_mut().insert("keep".into(), "1".into());
        let mut other = realistic_pod();
        other.metadata.name = Some("other".into());
        // Not held and not qualifying: left out.
        assert!(filtered(watcher::Event::Apply(other.clone()), &keep, &reader).is_none());
        assert!(filtered(watcher::Event::InitApply(other), &keep, &reader).is_none());
        // Qualifying: through as it is.
        let e = filtered(watcher::Event::Apply(kept.clone()), &keep, &reader);
        let Some(Ok(watcher::Event::Apply(_))) = e else {
            panic!("{e:?}")
        };
        writer.apply_watcher_event(&watcher::Event::Apply(kept.clone()));
        // Held, and no longer qualifying: deleted from the cache.
        let mut dropped = kept.clone();
        dropped.labels_mut().remove("keep");
        let e = filtered(watcher::Event::Apply(dropped), &keep, &reader);
        let Some(Ok(watcher::Event::Delete(_))) = e else {
            panic!("{e:?}")
        };
    }
}
