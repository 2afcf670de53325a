//! Watches pods as a user's `kubectl get pods -w` would and notes, per pod
//! that requests the ENI resource, when its binding (`spec.nodeName`) and its allocation annotation were
//! first seen. The simulation measures ENI allocation latency from this, not
//! from the controller's own figures.

use crate::eni::ALLOCATION_ANNOTATION;
use crate::tasks::AbortOnDrop;
use futures::StreamExt as _;
use k8s_openapi::api::core::v1::Pod;
use kube::api::Api;
use kube::runtime::{watcher, WatchStreamExt};
use kube::ResourceExt;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

/// What was seen of one pod.
#[derive(Clone, Debug)]
pub struct PodTimes {
    pub namespace: String,
    pub name: String,
    /// ENIs the pod requests.
    pub enis: u32,
    /// The node it was bound to.
    pub node: Option<String>,
    pub bound_at: Option<Instant>,
    pub annotated_at: Option<Instant>,
}

/// A background pod watch; stops when dropped.
pub struct Timeline {
    seen: Arc<Mutex<HashMap<String, PodTimes>>>,
    _watch: AbortOnDrop,
}

impl Timeline {
    /// Watch pods requesting `resource`, or every pod when `all` (a
    /// shared-ENI act: plain pods get allocations too).
    pub fn start(client: kube::Client, resource: String, all: bool) -> Self {
        let seen: Arc<Mutex<HashMap<String, PodTimes>>> = Arc::default();
        let pods: Api<Pod> = Api::all(client);
        let seen2 = seen.clone();
        let watch = AbortOnDrop::spawn(async move {
            let stream = watcher(pods, watcher::Config::default())
                .default_backoff()
                .applied_objects();
            futures::pin_mut!(stream);
            while let Some(next) = stream.next().await {
                match next {
                    Ok(pod) => note(&seen2, &pod, &resource, all),
                    Err(e) => tracing::debug!(error = %e, "simulation pod watch"),
                }
            }
        });
        Self {
            seen,
            _watch: watch,
        }
    }

    /// Every pod seen so far.
    pub fn pods(&self) -> Vec<PodTimes> {
        self.seen.lock().values().cloned().collect()
    }
}

fn note(seen: &Mutex<HashMap<String, PodTimes>>, pod: &Pod, resource: &str, all: bool) {
    let enis = super::eni::requested_enis(pod, resource);
    let Some(uid) = pod.uid().filter(|_| all || enis > 0) else {
        return;
    };
    let now = Instant::now();
    let node = pod
        .spec
        .as_ref()
        .and_then(|s| s.node_name.clone())
        .filter(|n| !n.is_empty());
    let annotated = pod.annotations().contains_key(ALLOCATION_ANNOTATION);
    let mut seen = seen.lock();
    let entry = seen.entry(uid).or_insert_with(|| PodTimes {
        namespace: pod.namespace().unwrap_or_default(),
        name: pod.name_any(),
        enis,
        node: None,
        bound_at: None,
        annotated_at: None,
    });
    if node.is_some() && entry.bound_at.is_none() {
        entry.bound_at = Some(now);
        entry.node = node;
    }
    if annotated && entry.annotated_at.is_none() {
        entry.annotated_at = Some(now);
    }
}
