//! The fake apiserver driven by the real kube-rs client: reflectors stay in
//! sync (including across a forced 410 Gone), a Controller reconciles, the
//! events Recorder's writes show up as core/v1 Events, CRDs work at run time.

use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Event as CoreEvent, Pod};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::{reflector, watcher, WatchStreamExt};
use kube::{Client, Resource, ResourceExt};
use mocks::kubeapi::{FakeApiServer, Options};
use serde_json::json;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

async fn start() -> (FakeApiServer, Client) {
    let s = FakeApiServer::start(Options::without_controllers())
        .await
        .unwrap();
    let c = Client::try_from(s.client_config()).unwrap();
    (s, c)
}

/// Poll until `f` holds; the deadline only guards against hangs.
async fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    for _ in 0..500 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("timed out waiting for {what}");
}

fn cm(name: &str, v: &str) -> ConfigMap {
    serde_json::from_value(json!({"metadata": {"name": name}, "data": {"v": v}})).unwrap()
}

fn state(reader: &reflector::Store<ConfigMap>) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = reader
        .state()
        .iter()
        .map(|c| {
            (
                c.name_any(),
                c.data
                    .as_ref()
                    .and_then(|d| d.get("v").cloned())
                    .unwrap_or_default(),
            )
        })
        .collect();
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reflector_stays_in_sync_across_creates_patches_deletes() {
    let (_s, client) = start().await;
    let api: Api<ConfigMap> = Api::namespaced(client, "default");
    api.create(&PostParams::default(), &cm("before", "0"))
        .await
        .unwrap();
    let (reader, writer) = reflector::store();
    let stream = reflector(writer, watcher(api.clone(), watcher::Config::default()));
    tokio::spawn(stream.applied_objects().for_each(|_| async {}));
    reader.wait_until_ready().await.unwrap();
    assert_eq!(state(&reader), [("before".to_string(), "0".to_string())]);

    api.create(&PostParams::default(), &cm("a", "1"))
        .await
        .unwrap();
    api.create(&PostParams::default(), &cm("b", "1"))
        .await
        .unwrap();
    api.patch(
        "a",
        &PatchParams::default(),
        &Patch::Merge(json!({"data": {"v": "2"}})),
    )
    .await
    .unwrap();
    api.patch(
        "before",
        &PatchParams::default(),
        &Patch::Strategic(json!({"data": {"v": "9"}})),
    )
    .await
    .unwrap();
    api.delete("b", &DeleteParams::default()).await.unwrap();
    let want = vec![
        ("a".to_string(), "2".to_string()),
        ("before".to_string(), "9".to_string()),
    ];
    wait_until("reflector converges", || state(&reader) == want).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watcher_relists_after_a_forced_410_and_catches_up() {
    let (s, client) = start().await;
    let api: Api<ConfigMap> = Api::namespaced(client, "default");
    let (reader, writer) = reflector::store();
    let inits = Arc::new(AtomicUsize::new(0));
    let counter = inits.clone();
    let stream = reflector(writer, watcher(api.clone(), watcher::Config::default()));
    tokio::spawn(stream.for_each(move |ev| {
        if matches!(ev, Ok(watcher::Event::Init)) {
            counter.fetch_add(1, Ordering::SeqCst);
        }
        async {}
    }));
    reader.wait_until_ready().await.unwrap();
    api.create(&PostParams::default(), &cm("one", "1"))
        .await
        .unwrap();
    wait_until("one seen", || state(&reader).len() == 1).await;
    assert_eq!(inits.load(Ordering::SeqCst), 1);

    // The server drops its watch history: open watches end with 410 Gone
    // and resuming from the old resourceVersion is refused.
    s.store().expire_watches();
    api.create(&PostParams::default(), &cm("two", "2"))
        .await
        .unwrap();
    api.delete("one", &DeleteParams::default()).await.unwrap();
    wait_until("re-listed after 410", || inits.load(Ordering::SeqCst) >= 2).await;
    let want = vec![("two".to_string(), "2".to_string())];
    wait_until("state after relist", || state(&reader) == want).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_controller_reconciles_through_the_fake() {
    let (_s, client) = start().await;
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    struct Ctx {
        api: Api<ConfigMap>,
    }
    async fn reconcile(obj: Arc<ConfigMap>, ctx: Arc<Ctx>) -> Result<Action, kube::Error> {
        if obj.annotations().get("reconciled").is_none() {
            let p = json!({"metadata": {"annotations": {"reconciled": obj.resource_version().unwrap_or_default()}}});
            ctx.api
                .patch(&obj.name_any(), &PatchParams::default(), &Patch::Merge(p))
                .await?;
        }
        Ok(Action::await_change())
    }
    fn error_policy(_: Arc<ConfigMap>, _: &kube::Error, _: Arc<Ctx>) -> Action {
        Action::requeue(Duration::from_millis(100))
    }
    let ctx = Arc::new(Ctx { api: api.clone() });
    tokio::spawn(
        Controller::new(api.clone(), watcher::Config::default())
            .run(reconcile, error_policy, ctx)
            .for_each(|_| async {}),
    );
    for n in ["x", "y"] {
        api.create(&PostParams::default(), &cm(n, "0"))
            .await
            .unwrap();
    }
    for _ in 0..500 {
        let l = api.list(&ListParams::default()).await.unwrap();
        if l.items.len() == 2
            && l.items
                .iter()
                .all(|c| c.annotations().contains_key("reconciled"))
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("controller did not reconcile both ConfigMaps");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recorder_events_read_back_as_core_events_by_involved_object() {
    let (_s, client) = start().await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let pod: Pod = serde_json::from_value(
        json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "i"}]}}),
    )
    .unwrap();
    let pod = pods.create(&PostParams::default(), &pod).await.unwrap();
    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: "vpc-eni-controller".into(),
            instance: Some("vpc-eni-controller-0".into()),
        },
    );
    let ev = Event {
        type_: EventType::Warning,
        reason: "AllocIPFailed".into(),
        note: Some("no ENI slot left".into()),
        action: "Allocate".into(),
        secondary: None,
    };
    let oref = pod.object_ref(&());
    recorder.publish(&ev, &oref).await.unwrap();
    // The second identical event becomes a series (a merge patch of the same Event).
    recorder.publish(&ev, &oref).await.unwrap();
    let core: Api<CoreEvent> = Api::namespaced(client, "default");
    let lp = ListParams::default().fields(&format!(
        "involvedObject.name=p,involvedObject.namespace=default,involvedObject.uid={}",
        pod.uid().unwrap()
    ));
    let l = core.list(&lp).await.unwrap();
    assert_eq!(l.items.len(), 1);
    let e = &l.items[0];
    assert_eq!(e.message.as_deref(), Some("no ENI slot left"));
    assert_eq!(e.reason.as_deref(), Some("AllocIPFailed"));
    assert_eq!(e.type_.as_deref(), Some("Warning"));
    assert_eq!(
        e.source.as_ref().and_then(|s| s.component.as_deref()),
        Some("vpc-eni-controller")
    );
    assert_eq!(e.count, Some(2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crd_applied_at_run_time_serves_dynamic_objects() {
    let (_s, client) = start().await;
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let crd: CustomResourceDefinition = serde_json::from_value(json!({
        "metadata": {"name": "eniconfigs.vpc-eni.io"},
        "spec": {"group": "vpc-eni.io", "scope": "Cluster",
            "names": {"plural": "eniconfigs", "singular": "eniconfig", "kind": "ENIConfig"},
            "versions": [{"name": "v1alpha1", "served": true, "storage": true,
                "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}}]}
    }))
    .unwrap();
    crds.create(&PostParams::default(), &crd).await.unwrap();
    let discovery = kube::Discovery::new(client.clone()).run().await.unwrap();
    let (ar, caps) = discovery
        .resolve_gvk(&kube::api::GroupVersionKind::gvk(
            "vpc-eni.io",
            "v1alpha1",
            "ENIConfig",
        ))
        .unwrap();
    assert_eq!(caps.scope, kube::discovery::Scope::Cluster);
    let api: Api<kube::api::DynamicObject> = Api::all_with(client, &ar);
    let obj: kube::api::DynamicObject = serde_json::from_value(json!({
        "apiVersion": "vpc-eni.io/v1alpha1", "kind": "ENIConfig",
        "metadata": {"name": "cn-hangzhou-h"}, "spec": {"vSwitch": "vsw-1"}
    }))
    .unwrap();
    api.create(&PostParams::default(), &obj).await.unwrap();
    let got = api.get("cn-hangzhou-h").await.unwrap();
    assert_eq!(got.data["spec"]["vSwitch"], "vsw-1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata_only_list_and_watch() {
    let (_s, client) = start().await;
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    api.create(&PostParams::default(), &cm("m1", "1"))
        .await
        .unwrap();
    let metas = api.list_metadata(&ListParams::default()).await.unwrap();
    assert_eq!(metas.items.len(), 1);
    assert_eq!(metas.items[0].name_any(), "m1");
    assert_eq!(
        metas.items[0].types.as_ref().map(|t| t.kind.as_str()),
        Some("PartialObjectMetadata")
    );

    let (reader, writer) = reflector::store();
    let stream = reflector(
        writer,
        watcher(
            Api::<kube::core::PartialObjectMeta<ConfigMap>>::namespaced(client.clone(), "default"),
            watcher::Config::default(),
        ),
    );
    tokio::spawn(stream.applied_objects().for_each(|_| async {}));
    reader.wait_until_ready().await.unwrap();
    api.create(&PostParams::default(), &cm("m2", "2"))
        .await
        .unwrap();
    api.patch(
        "m1",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {"seen": "yes"}}})),
    )
    .await
    .unwrap();
    wait_until("metadata reflector", || {
        let st = reader.state();
        st.len() == 2
            && st.iter().any(|m| {
                m.name_any() == "m1" && m.labels().get("seen").map(String::as_str) == Some("yes")
            })
    })
    .await;
}

/// A Node created without a status gets one, as the real apiserver defaults
/// it, so the documented JSON patch for an extended resource works; a Pod
/// gets the spec defaults a controller may read back.
#[tokio::test]
async fn created_objects_get_the_defaults_a_real_apiserver_gives() {
    use k8s_openapi::api::core::v1::Node;
    let (_s, c) = start().await;
    let nodes: Api<Node> = Api::all(c.clone());
    let node: Node = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Node", "metadata": {"name": "bare"}
    }))
    .unwrap();
    nodes.create(&PostParams::default(), &node).await.unwrap();
    let ops: json_patch::Patch = serde_json::from_value(json!([
        {"op": "add", "path": "/status/capacity", "value": {"example.com/dongle": "4"}},
    ]))
    .unwrap();
    let patched = nodes
        .patch_status("bare", &PatchParams::default(), &Patch::Json::<()>(ops))
        .await
        .unwrap();
    let capacity = patched.status.unwrap().capacity.unwrap();
    assert_eq!(capacity["example.com/dongle"].0, "4");

    let pods: Api<Pod> = Api::namespaced(c, "default");
    let pod: Pod = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
        "spec": {"containers": [{"name": "app", "image": "app"}]}
    }))
    .unwrap();
    let created = pods.create(&PostParams::default(), &pod).await.unwrap();
    let spec = created.spec.unwrap();
    assert_eq!(spec.restart_policy.as_deref(), Some("Always"));
    assert_eq!(spec.dns_policy.as_deref(), Some("ClusterFirst"));
    assert_eq!(spec.termination_grace_period_seconds, Some(30));
    assert_eq!(created.status.unwrap().phase.as_deref(), Some("Pending"));
}
