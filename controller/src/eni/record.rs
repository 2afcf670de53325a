//! What ENI mode writes on a pod: the release finalizer (added before the
//! first cloud change, removed after the last ENI is deleted) and the
//! allocation annotation. Every write is a JSON patch that tests the pod's
//! uid first, so a pod deleted and re-created under the same name (a
//! StatefulSet pod) never receives what was meant for its predecessor; and
//! `test` ops guard wherever a stale copy could overwrite someone else's
//! write.

use super::error::{Phase, PodError};
use ipam::allocation::{PodAllocation, ALLOCATION_ANNOTATION, RELEASE_FINALIZER};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, Patch, PatchParams};
use kube::ResourceExt;
use serde_json::json;

fn pods(client: &kube::Client, pod: &Pod) -> Api<Pod> {
    Api::namespaced(client.clone(), &pod.namespace().unwrap_or_default())
}

/// The op that makes a patch fail unless it lands on this very pod.
fn same_pod(pod: &Pod) -> serde_json::Value {
    json!({"op": "test", "path": "/metadata/uid", "value": pod.uid().unwrap_or_default()})
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
            (Some(_), _) => json!([
                same_pod(pod),
                {"op": "add", "path": "/metadata/finalizers/-", "value": RELEASE_FINALIZER},
            ]),
            // Creating the list replaces whatever is there: only if nobody
            // changed the pod since we read it.
            (None, Some(rv)) => json!([
                same_pod(pod),
                {"op": "test", "path": "/metadata/resourceVersion", "value": rv},
                {"op": "add", "path": "/metadata/finalizers", "value": [RELEASE_FINALIZER]},
            ]),
            (None, None) => json!([
                same_pod(pod),
                {"op": "add", "path": "/metadata/finalizers", "value": [RELEASE_FINALIZER]},
            ]),
        };
        match json_patch(client, pod, ops, Phase::Allocate).await {
            Err(stale @ PodError::Stale { .. }) => {
                current = pods(client, pod)
                    .get(&pod.name_any())
                    .await
                    .map_err(PodError::kube(Phase::Allocate))?;
                if current.uid() != pod.uid() {
                    // Another pod under the same name: not ours to write.
                    return Err(stale);
                }
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
        same_pod(pod),
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
    // A merge patch keeps annotations others wrote since we read the pod;
    // the uid in it is a precondition: the apiserver refuses the patch with
    // 409 when the pod under this name is another one.
    let patch = json!({"metadata": {
        "uid": pod.uid().unwrap_or_default(),
        "annotations": {ALLOCATION_ANNOTATION: allocation.to_json()},
    }});
    match pods(client, pod)
        .patch(
            &pod.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 409 => Err(PodError::Stale {
            phase: Phase::Allocate,
            error: kube::Error::Api(s),
        }),
        Err(e) => Err(PodError::kube(Phase::Allocate)(e)),
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use ipam::allocation::EniAllocation;
    use kube::api::{DeleteParams, PostParams};
    use mocks::kubeapi::{FakeApiServer, Options};

    fn pod(name: &str) -> Pod {
        serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"containers": [{"name": "app", "image": "app"}]},
        }))
        .unwrap()
    }

    fn allocation() -> PodAllocation {
        PodAllocation::new(
            vec![EniAllocation {
                eni_id: "eni-1".into(),
                mac: "00:16:3e:00:00:01".into(),
                ip: "10.0.0.7".into(),
                subnet_id: "vsw-1".into(),
                subnet_cidr: "10.0.0.0/24".into(),
                gateway: "10.0.0.253".into(),
                node: "node-a".into(),
            }],
            0,
        )
        .unwrap()
    }

    /// A pod read, then deleted and created again under its name (as a
    /// StatefulSet does): returns the stale copy and the API.
    async fn replaced_pod(api: &Api<Pod>, with_finalizer: bool) -> Pod {
        let old = api
            .create(&PostParams::default(), &pod("web-0"))
            .await
            .unwrap();
        api.delete("web-0", &DeleteParams::default()).await.unwrap();
        let mut again = pod("web-0");
        if with_finalizer {
            again.metadata.finalizers = Some(vec![RELEASE_FINALIZER.into()]);
        }
        let new = api.create(&PostParams::default(), &again).await.unwrap();
        assert_ne!(old.uid(), new.uid());
        old
    }

    #[tokio::test]
    async fn writes_meant_for_a_deleted_pod_never_land_on_its_namesake() {
        let server = FakeApiServer::start(Options::default()).await.unwrap();
        let client = kube::Client::try_from(server.client_config()).unwrap();
        let api: Api<Pod> = Api::namespaced(client.clone(), "default");

        let old = replaced_pod(&api, false).await;
        let err = add_finalizer(&client, &old).await.unwrap_err();
        assert!(matches!(err, PodError::Stale { .. }), "{err}");
        let err = write_allocation(&client, &old, &allocation())
            .await
            .unwrap_err();
        assert!(matches!(err, PodError::Stale { .. }), "{err}");
        let now = api.get("web-0").await.unwrap();
        assert!(now.finalizers().is_empty());
        assert!(PodAllocation::from_annotations(now.annotations()).is_none());

        // The namesake holds our finalizer for its own ENIs: a release of
        // the old pod must not take it off.
        api.delete("web-0", &DeleteParams::default()).await.unwrap();
        let _gone = api.get_opt("web-0").await.unwrap();
        let mut old = replaced_pod_named(&api).await;
        old.metadata.finalizers = Some(vec![RELEASE_FINALIZER.into()]);
        assert!(remove_finalizer(&client, &old).await.is_err());
        let now = api.get("web-1").await.unwrap();
        assert_eq!(now.finalizers(), [RELEASE_FINALIZER.to_owned()]);
    }

    /// Like [`replaced_pod`] under another name, the new pod holding our
    /// finalizer.
    async fn replaced_pod_named(api: &Api<Pod>) -> Pod {
        let old = api
            .create(&PostParams::default(), &pod("web-1"))
            .await
            .unwrap();
        api.delete("web-1", &DeleteParams::default()).await.unwrap();
        let mut again = pod("web-1");
        again.metadata.finalizers = Some(vec![RELEASE_FINALIZER.into()]);
        api.create(&PostParams::default(), &again).await.unwrap();
        old
    }

    #[tokio::test]
    async fn the_same_pod_gets_its_finalizer_and_allocation_and_keeps_others_annotations() {
        let server = FakeApiServer::start(Options::default()).await.unwrap();
        let client = kube::Client::try_from(server.client_config()).unwrap();
        let api: Api<Pod> = Api::namespaced(client.clone(), "default");
        let created = api
            .create(&PostParams::default(), &pod("web-2"))
            .await
            .unwrap();
        add_finalizer(&client, &created).await.unwrap();
        // Someone annotates the pod after our read: kept.
        let patch = json!({"metadata": {"annotations": {"team": "a"}}});
        api.patch("web-2", &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .unwrap();
        write_allocation(&client, &created, &allocation())
            .await
            .unwrap();
        let now = api.get("web-2").await.unwrap();
        assert_eq!(now.finalizers(), [RELEASE_FINALIZER.to_owned()]);
        assert_eq!(now.annotations()["team"], "a");
        assert_eq!(
            PodAllocation::from_annotations(now.annotations()),
            Some(allocation())
        );
        remove_finalizer(&client, &now).await.unwrap();
        assert!(api.get("web-2").await.unwrap().finalizers().is_empty());
    }
}
