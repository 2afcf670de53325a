//! What ENI mode writes on a pod: the release finalizer (added before the
//! first cloud change, removed after the last ENI is deleted) and the
//! allocation annotation. JSON patches carry `test` ops wherever a stale
//! copy of the pod could overwrite someone else's write.

use super::error::{Phase, PodError};
use ipam::allocation::{PodAllocation, ALLOCATION_ANNOTATION, RELEASE_FINALIZER};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, Patch, PatchParams};
use kube::ResourceExt;
use serde_json::json;

fn pods(client: &kube::Client, pod: &Pod) -> Api<Pod> {
    Api::namespaced(client.clone(), &pod.namespace().unwrap_or_default())
}

/// Put our finalizer on the pod, re-reading it when a write raced.
pub async fn add_finalizer(client: &kube::Client, pod: &Pod) -> Result<(), PodError> {
    let mut current = pod.clone();
    for _ in 0..3 {
        if current.finalizers().iter().any(|f| f == RELEASE_FINALIZER) {
            return Ok(());
        }
        let ops = match (
            &current.metadata.finalizers,
            &current.metadata.resource_version,
        ) {
            (Some(_), _) => {
                json!([{"op": "add", "path": "/metadata/finalizers/-", "value": RELEASE_FINALIZER}])
            }
            // Creating the list replaces whatever is there: only if nobody
            // changed the pod since we read it.
            (None, Some(rv)) => json!([
                {"op": "test", "path": "/metadata/resourceVersion", "value": rv},
                {"op": "add", "path": "/metadata/finalizers", "value": [RELEASE_FINALIZER]},
            ]),
            (None, None) => {
                json!([{"op": "add", "path": "/metadata/finalizers", "value": [RELEASE_FINALIZER]}])
            }
        };
        match json_patch(client, pod, ops, Phase::Allocate).await {
            Err(PodError::Stale { .. }) => {
                current = pods(client, pod)
                    .get(&pod.name_any())
                    .await
                    .map_err(PodError::kube(Phase::Allocate))?;
            }
            other => return other,
        }
    }
    Err(PodError::blocked(
        Phase::Allocate,
        "could not add the finalizer: the pod kept changing under us",
    ))
}

/// Take our finalizer off (the pod's ENIs are all released).
pub async fn remove_finalizer(client: &kube::Client, pod: &Pod) -> Result<(), PodError> {
    let Some(i) = pod.finalizers().iter().position(|f| f == RELEASE_FINALIZER) else {
        return Ok(());
    };
    let path = format!("/metadata/finalizers/{i}");
    let ops = json!([
        {"op": "test", "path": path, "value": RELEASE_FINALIZER},
        {"op": "remove", "path": path},
    ]);
    json_patch(client, pod, ops, Phase::Release).await
}

/// Write the allocation annotation the node half reads.
pub async fn write_allocation(
    client: &kube::Client,
    pod: &Pod,
    allocation: &PodAllocation,
) -> Result<(), PodError> {
    let patch = json!({"metadata": {"annotations": {ALLOCATION_ANNOTATION: allocation.to_json()}}});
    pods(client, pod)
        .patch(
            &pod.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
        .map(|_| ())
        .map_err(PodError::kube(Phase::Allocate))
}

async fn json_patch(
    client: &kube::Client,
    pod: &Pod,
    ops: serde_json::Value,
    phase: Phase,
) -> Result<(), PodError> {
    // The ops above are fixed shapes: this only fails on a programming error.
    let patch: json_patch::Patch = serde_json::from_value(ops)
        .map_err(|e| PodError::kube(phase)(kube::Error::SerdeError(e)))?;
    match pods(client, pod)
        .patch(
            &pod.name_any(),
            &PatchParams::default(),
            &Patch::Json::<()>(patch),
        )
        .await
    {
        Ok(_) => Ok(()),
        // Gone already: nothing holds it any more.
        Err(kube::Error::Api(s)) if s.code == 404 && phase == Phase::Release => Ok(()),
        // A `test` op saw a newer pod than ours.
        Err(kube::Error::Api(s)) if s.code == 422 || s.code == 409 => Err(PodError::Stale {
            phase,
            error: kube::Error::Api(s),
        }),
        Err(e) => Err(PodError::kube(phase)(e)),
    }
}
