//! The fake's scheduler, kubelet and deployment controller, driven through
//! the store the way the controller's kube writes would reach them.

use mocks::kubeapi::{FakeApiServer, NodeTemplate, Options, Store};
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;

async fn start() -> FakeApiServer {
    FakeApiServer::start(Options {
        resync: Duration::from_millis(200),
        ..Options::default()
    })
    .await
    .unwrap()
}

/// Poll until `f` yields a value; the deadline only guards against hangs.
async fn wait_for<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    for _ in 0..500 {
        if let Some(v) = f() {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("timed out waiting for {what}");
}

fn add_node(store: &Arc<Store>, t: NodeTemplate) {
    let r = store.resource("", "nodes").unwrap();
    store.create(&r, "", t.build()).unwrap();
}

fn node(name: &str, eni: &str, zone: &str) -> NodeTemplate {
    let mut t = NodeTemplate::new(name, "ecs.g6.xlarge", "4", "16Gi");
    t.zone = Some(zone.into());
    t.extended = vec![("aliyun/eni".into(), eni.into())];
    t.pod_cidr = Some(format!("10.244.{}.0/24", name.trim_start_matches('n')));
    t.internal_ip = Some(format!("192.168.0.{}", name.trim_start_matches('n')));
    t
}

fn eni_pod(name: &str, extra: Value) -> Value {
    let mut p = json!({
        "metadata": {"name": name},
        "spec": {"containers": [{"name": "app", "image": "nginx", "resources": {"limits": {"aliyun/eni": "1"}}}]}
    });
    json_patch::merge(&mut p, &extra);
    p
}

fn create_pod(store: &Arc<Store>, pod: Value) {
    let r = store.resource("", "pods").unwrap();
    store.create(&r, "default", pod).unwrap();
}

fn get_pod(store: &Arc<Store>, name: &str) -> Value {
    let r = store.resource("", "pods").unwrap();
    store.get(&r, "default", name).unwrap()
}

fn failed_scheduling(store: &Arc<Store>, pod: &str) -> Vec<String> {
    let r = store.resource("", "events").unwrap();
    let opts = mocks::kubeapi::store::ListOptions {
        fields: mocks::kubeapi::selectors::FieldSelector::parse(&format!(
            "involvedObject.name={pod},reason=FailedScheduling"
        ))
        .unwrap(),
        ..Default::default()
    };
    store
        .list(&r, Some("default"), &opts)
        .unwrap()
        .items
        .iter()
        .map(|e| e["message"].as_str().unwrap_or_default().to_string())
        .collect()
}

fn condition(pod: &Value, ty: &str) -> Option<Value> {
    pod["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == ty)
        .cloned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_scheduling_message_counts_and_sorts_reasons_like_kube_scheduler() {
    let s = start().await;
    let st = s.store();
    add_node(st, node("n1", "0", "a"));
    add_node(st, node("n2", "4", "b"));
    add_node(st, node("n3", "4", "b"));
    create_pod(
        st,
        eni_pod(
            "p",
            json!({"spec": {"nodeSelector": {"topology.kubernetes.io/zone": "a"}}}),
        ),
    );
    let msgs = wait_for("FailedScheduling", || {
        Some(failed_scheduling(st, "p")).filter(|m| !m.is_empty())
    })
    .await;
    assert_eq!(
        msgs,
        ["0/3 nodes are available: 1 Insufficient aliyun/eni, 2 node(s) didn't match Pod's node affinity/selector."]
    );
    let pod = get_pod(st, "p");
    let cond = condition(&pod, "PodScheduled").unwrap();
    assert_eq!(
        (cond["status"].as_str(), cond["reason"].as_str()),
        (Some("False"), Some("Unschedulable"))
    );
    assert_eq!(cond["message"], msgs[0]);
    assert!(pod["spec"]["nodeName"].is_null());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_filter_reports_its_upstream_reason() {
    let s = start().await;
    let st = s.store();
    let mut cordoned = node("n1", "4", "a");
    cordoned.name = "n1".into();
    add_node(st, cordoned);
    let r = st.resource("", "nodes").unwrap();
    st.patch(
        &r,
        "",
        "n1",
        mocks::kubeapi::patch::PatchKind::Merge,
        br#"{"spec":{"unschedulable":true}}"#,
        mocks::kubeapi::store::Sub::Main,
    )
    .unwrap();
    add_node(st, node("n2", "4", "a"));
    st.patch(
        &r,
        "",
        "n2",
        mocks::kubeapi::patch::PatchKind::Merge,
        br#"{"spec":{"taints":[{"key":"dedicated","value":"gpu","effect":"NoSchedule"}]}}"#,
        mocks::kubeapi::store::Sub::Main,
    )
    .unwrap();
    let mut small = node("n3", "0", "a");
    small.cpu = "1".into();
    add_node(st, small);
    add_node(st, node("n4", "4", "b"));
    create_pod(
        st,
        eni_pod(
            "big",
            json!({"spec": {
                "nodeSelector": {"topology.kubernetes.io/zone": "a"},
                "containers": [{"name": "app", "image": "nginx", "resources": {"requests": {"cpu": "2"}, "limits": {"aliyun/eni": "1"}}}]
            }}),
        ),
    );
    let msgs = wait_for("FailedScheduling", || {
        Some(failed_scheduling(st, "big")).filter(|m| !m.is_empty())
    })
    .await;
    assert_eq!(
        msgs[0],
        "0/4 nodes are available: 1 Insufficient aliyun/eni, 1 Insufficient cpu, 1 node(s) didn't match Pod's node affinity/selector, 1 node(s) had untolerated taint {dedicated: gpu}, 1 node(s) were unschedulable."
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pending_eni_pod_starts_once_capacity_and_allocation_appear() {
    let s = start().await;
    let st = s.store();
    add_node(st, node("n1", "1", "a"));
    create_pod(st, eni_pod("first", json!({})));
    create_pod(st, eni_pod("second", json!({})));
    // One ENI slot: the older pod is bound, the other is refused.
    wait_for("first bound", || {
        get_pod(st, "first")["spec"]["nodeName"]
            .as_str()
            .map(str::to_string)
    })
    .await;
    let msgs = wait_for("FailedScheduling", || {
        Some(failed_scheduling(st, "second")).filter(|m| !m.is_empty())
    })
    .await;
    assert_eq!(
        msgs,
        ["0/1 nodes are available: 1 Insufficient aliyun/eni."]
    );

    // Bound but without an allocation: the kubelet keeps it in ContainerCreating.
    let first = wait_for("ContainerCreating", || {
        let p = get_pod(st, "first");
        (p["status"]["containerStatuses"][0]["state"]["waiting"]["reason"] == "ContainerCreating")
            .then_some(p)
    })
    .await;
    assert_eq!(first["status"]["phase"], "Pending");
    assert!(first["status"]["podIP"].is_null());

    // The controller writes the allocation: the pod runs with that IP.
    let pods = st.resource("", "pods").unwrap();
    let ann = json!({"metadata": {"annotations": {"vpc-eni.io/allocation": json!({"ip": "172.16.0.7", "eni": "eni-1"}).to_string()}}});
    st.patch(
        &pods,
        "default",
        "first",
        mocks::kubeapi::patch::PatchKind::Merge,
        ann.to_string().as_bytes(),
        mocks::kubeapi::store::Sub::Main,
    )
    .unwrap();
    let first = wait_for("Running", || {
        Some(get_pod(st, "first")).filter(|p| p["status"]["phase"] == "Running")
    })
    .await;
    assert_eq!(first["status"]["podIP"], "172.16.0.7");
    assert_eq!(first["status"]["hostIP"], "192.168.0.1");
    assert_eq!(condition(&first, "Ready").unwrap()["status"], "True");

    // Capacity appears (the controller advertises another ENI): the second pod is placed.
    let nodes = st.resource("", "nodes").unwrap();
    let p = json!([
        {"op": "replace", "path": "/status/capacity/aliyun~1eni", "value": "2"},
        {"op": "replace", "path": "/status/allocatable/aliyun~1eni", "value": "2"}
    ]);
    st.patch(
        &nodes,
        "",
        "n1",
        mocks::kubeapi::patch::PatchKind::Json,
        p.to_string().as_bytes(),
        mocks::kubeapi::store::Sub::Status,
    )
    .unwrap();
    let second = wait_for("second bound", || {
        Some(get_pod(st, "second")).filter(|p| p["spec"]["nodeName"] == "n1")
    })
    .await;
    assert_eq!(
        condition(&second, "PodScheduled").unwrap()["status"],
        "True"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_pods_get_addresses_from_the_node_pod_cidr() {
    let s = start().await;
    let st = s.store();
    add_node(st, node("n3", "0", "a"));
    for name in ["a", "b"] {
        create_pod(
            st,
            json!({"metadata": {"name": name}, "spec": {"containers": [{"name": "c", "image": "busybox"}]}}),
        );
    }
    let mut ips: Vec<String> = Vec::new();
    for name in ["a", "b"] {
        let p = wait_for("Running", || {
            Some(get_pod(st, name)).filter(|p| p["status"]["phase"] == "Running")
        })
        .await;
        assert_eq!(p["spec"]["nodeName"], "n3");
        assert_eq!(p["status"]["containerStatuses"][0]["ready"], true);
        ips.push(p["status"]["podIP"].as_str().unwrap().to_string());
    }
    ips.sort();
    assert_eq!(ips, ["10.244.3.2", "10.244.3.3"]);
    // Deleting a pod without finalizers removes it at once.
    let r = st.resource("", "pods").unwrap();
    st.delete(&r, "default", "a", &Value::Null).unwrap();
    assert_eq!(st.get(&r, "default", "a").unwrap_err().code, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deployment_of_two_pods_runs_scales_and_is_cleaned_up() {
    let s = start().await;
    let st = s.store();
    add_node(st, node("n1", "0", "a"));
    let deps = st.resource("apps", "deployments").unwrap();
    let d = json!({
        "metadata": {"name": "web"},
        "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "c", "image": "nginx"}]}}}
    });
    st.create(&deps, "default", d).unwrap();
    let pods = st.resource("", "pods").unwrap();
    let running = |n: usize| {
        let pods = pods.clone();
        move || {
            let l = st
                .list(&pods, Some("default"), &Default::default())
                .unwrap();
            let names: Vec<String> = l
                .items
                .iter()
                .filter(|p| {
                    p["status"]["phase"] == "Running" && p["metadata"]["labels"]["app"] == "web"
                })
                .map(|p| p["metadata"]["name"].as_str().unwrap().to_string())
                .collect();
            (names.len() == n && l.items.len() == n).then_some(names)
        }
    };
    let names = wait_for("2 running pods", running(2)).await;
    assert!(names.iter().all(|n| n.starts_with("web-")));
    wait_for("deployment ready", || {
        let d = st.get(&deps, "default", "web").unwrap();
        (d["status"]["readyReplicas"] == 2).then_some(())
    })
    .await;
    st.patch(
        &deps,
        "default",
        "web",
        mocks::kubeapi::patch::PatchKind::Merge,
        br#"{"spec":{"replicas":1}}"#,
        mocks::kubeapi::store::Sub::Main,
    )
    .unwrap();
    wait_for("1 running pod", running(1)).await;
    st.delete(&deps, "default", "web", &Value::Null).unwrap();
    wait_for("pods gone", running(0)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn required_node_affinity_places_the_pod_in_the_named_zone() {
    let s = start().await;
    let st = s.store();
    add_node(st, node("n1", "2", "a"));
    add_node(st, node("n2", "2", "b"));
    let affinity = |zones: &[&str]| {
        json!({"spec": {"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
            "nodeSelectorTerms": [{"matchExpressions": [{"key": "topology.kubernetes.io/zone", "operator": "In", "values": zones}]}]
        }}}}})
    };
    create_pod(st, eni_pod("in-b", affinity(&["b"])));
    create_pod(st, eni_pod("in-c", affinity(&["c"])));
    let p = wait_for("in-b bound", || {
        Some(get_pod(st, "in-b")).filter(|p| p["spec"]["nodeName"].is_string())
    })
    .await;
    assert_eq!(p["spec"]["nodeName"], "n2");
    let msgs = wait_for("FailedScheduling", || {
        Some(failed_scheduling(st, "in-c")).filter(|m| !m.is_empty())
    })
    .await;
    assert_eq!(
        msgs,
        ["0/2 nodes are available: 2 node(s) didn't match Pod's node affinity/selector."]
    );
}
