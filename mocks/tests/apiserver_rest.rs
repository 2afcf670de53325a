//! The fake apiserver's REST semantics as a raw HTTP client sees them:
//! Status errors, optimistic concurrency, finalizers, patches, paging,
//! selectors, watch history and 410, the two Event views, discovery, CRDs.

use mocks::kubeapi::{FakeApiServer, Options};
use serde_json::{json, Value};
use std::time::Duration;

struct Http {
    base: String,
    c: reqwest::Client,
}

impl Http {
    fn new(s: &FakeApiServer) -> Self {
        Http {
            base: s.url(),
            c: reqwest::Client::new(),
        }
    }
    async fn send(
        &self,
        m: reqwest::Method,
        path: &str,
        ct: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut rq = self.c.request(m, format!("{}{}", self.base, path));
        if let Some(b) = body {
            rq = rq.header("content-type", ct).body(b.to_string());
        }
        let resp = rq.send().await.unwrap();
        let code = resp.status().as_u16();
        let v = resp.json::<Value>().await.unwrap_or(Value::Null);
        (code, v)
    }
    async fn get(&self, path: &str) -> (u16, Value) {
        self.send(reqwest::Method::GET, path, "", None).await
    }
    async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        self.send(reqwest::Method::POST, path, "application/json", Some(body))
            .await
    }
    async fn put(&self, path: &str, body: Value) -> (u16, Value) {
        self.send(reqwest::Method::PUT, path, "application/json", Some(body))
            .await
    }
    async fn patch(&self, path: &str, ct: &str, body: Value) -> (u16, Value) {
        self.send(reqwest::Method::PATCH, path, ct, Some(body))
            .await
    }
    async fn delete(&self, path: &str) -> (u16, Value) {
        self.send(reqwest::Method::DELETE, path, "", None).await
    }
    /// Read a watch stream until `n` lines arrived (or the stream ends).
    async fn watch_lines(&self, path: &str, n: usize) -> Vec<Value> {
        let mut resp = self
            .c
            .get(format!("{}{}", self.base, path))
            .send()
            .await
            .unwrap();
        let mut buf = Vec::new();
        let mut out = Vec::new();
        while out.len() < n {
            let chunk = tokio::time::timeout(Duration::from_secs(10), resp.chunk()).await;
            let Ok(Ok(Some(chunk))) = chunk else { break };
            buf.extend_from_slice(&chunk);
            while let Some(pos) = buf.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = buf.drain(..=pos).collect();
                out.push(serde_json::from_slice(&line).unwrap());
            }
        }
        out
    }
}

const CMS: &str = "/api/v1/namespaces/default/configmaps";

#[tokio::test]
async fn errors_are_status_objects_with_upstream_reasons() {
    let s = FakeApiServer::start(Options::without_controllers())
        .await
        .unwrap();
    let h = Http::new(&s);
    let (code, created) = h
        .post(CMS, json!({"metadata": {"name": "a"}, "data": {"k": "1"}}))
        .await;
    assert_eq!(code, 201);
    let (code, st) = h.post(CMS, json!({"metadata": {"name": "a"}})).await;
    assert_eq!(
        (code, st["kind"].as_str(), st["reason"].as_str()),
        (409, Some("Status"), Some("AlreadyExists"))
    );
    assert_eq!(st["message"], "configmaps \"a\" already exists");

    // Someone else updates; our stale resourceVersion must be refused.
    let stale = created.clone();
    let mut fresh = created.clone();
    fresh["data"]["k"] = json!("2");
    assert_eq!(h.put(&format!("{CMS}/a"), fresh).await.0, 200);
    let mut mine = stale;
    mine["data"]["k"] = json!("3");
    let (code, st) = h.put(&format!("{CMS}/a"), mine).await;
    assert_eq!((code, st["reason"].as_str()), (409, Some("Conflict")));
    assert_eq!(st["message"], "Operation cannot be fulfilled on configmaps \"a\": the object has been modified; please apply your changes to the latest version and try again");
    assert_eq!(h.get(&format!("{CMS}/a")).await.1["data"]["k"], "2");

    let (code, st) = h.get(&format!("{CMS}/missing")).await;
    assert_eq!(
        (code, st["reason"].as_str(), st["details"]["name"].as_str()),
        (404, Some("NotFound"), Some("missing"))
    );
    let (code, st) = h
        .post(
            "/api/v1/namespaces/nope/configmaps",
            json!({"metadata": {"name": "x"}}),
        )
        .await;
    assert_eq!(
        (code, st["message"].as_str()),
        (404, Some("namespaces \"nope\" not found"))
    );
    let (code, _) = h.get("/apis/nothing.example/v1/widgets").await;
    assert_eq!(code, 404);
}

#[tokio::test]
async fn metadata_is_filled_and_generation_tracks_spec() {
    let s = FakeApiServer::start(Options::without_controllers())
        .await
        .unwrap();
    let h = Http::new(&s);
    let (code, d) = h
        .post(
            "/apis/apps/v1/namespaces/default/deployments",
            json!({"metadata": {"generateName": "web-"}, "spec": {"replicas": 1, "selector": {}, "template": {"spec": {"containers": []}}}}),
        )
        .await;
    assert_eq!(code, 201);
    let name = d["metadata"]["name"].as_str().unwrap().to_string();
    assert!(name.starts_with("web-") && name.len() == 9, "{name}");
    assert!(d["metadata"]["uid"].as_str().is_some_and(|u| u.len() == 36));
    assert!(d["metadata"]["creationTimestamp"].as_str().is_some());
    assert_eq!(d["metadata"]["generation"], 1);
    let path = format!("/apis/apps/v1/namespaces/default/deployments/{name}");
    let (_, d2) = h
        .patch(
            &path,
            "application/merge-patch+json",
            json!({"metadata": {"labels": {"a": "b"}}}),
        )
        .await;
    assert_eq!(
        d2["metadata"]["generation"], 1,
        "metadata change keeps generation"
    );
    let (_, d3) = h
        .patch(
            &path,
            "application/merge-patch+json",
            json!({"spec": {"replicas": 3}}),
        )
        .await;
    assert_eq!(d3["metadata"]["generation"], 2);
    let rv2: u64 = d2["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let rv3: u64 = d3["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(rv3 > rv2);
    // Status is only written through /status.
    let (_, d4) = h
        .patch(
            &path,
            "application/merge-patch+json",
            json!({"status": {"replicas": 9}}),
        )
        .await;
    assert!(d4["status"]["replicas"].is_null());
    let (_, d5) = h
        .patch(
            &format!("{path}/status"),
            "application/merge-patch+json",
            json!({"status": {"replicas": 9}}),
        )
        .await;
    assert_eq!(d5["status"]["replicas"], 9);
}

#[tokio::test]
async fn finalizers_hold_an_object_until_removed() {
    let s = FakeApiServer::start(Options::without_controllers())
        .await
        .unwrap();
    let h = Http::new(&s);
    h.post(
        CMS,
        json!({"metadata": {"name": "f", "finalizers": ["vpc-eni.io/release"]}}),
    )
    .await;
    let (code, o) = h.delete(&format!("{CMS}/f")).await;
    assert_eq!(code, 200);
    assert!(o["metadata"]["deletionTimestamp"].is_string());
    let (code, o) = h.get(&format!("{CMS}/f")).await;
    assert_eq!(code, 200, "still there while a finalizer remains");
    assert!(o["metadata"]["deletionTimestamp"].is_string());
    let (code, st) = h
        .patch(
            &format!("{CMS}/f"),
            "application/merge-patch+json",
            json!({"metadata": {"finalizers": ["vpc-eni.io/release", "other"]}}),
        )
        .await;
    assert_eq!((code, st["reason"].as_str()), (422, Some("Invalid")));
    let (code, _) = h
        .patch(
            &format!("{CMS}/f"),
            "application/json-patch+json",
            json!([{"op": "remove", "path": "/metadata/finalizers"}]),
        )
        .await;
    assert_eq!(code, 200);
    assert_eq!(h.get(&format!("{CMS}/f")).await.0, 404);
}

#[tokio::test]
async fn patch_flavours_merge_lists_the_way_clients_expect() {
    let s = FakeApiServer::start(Options::without_controllers())
        .await
        .unwrap();
    let h = Http::new(&s);
    let node = mocks::kubeapi::node_object(
        "n1",
        "ecs.g6.xlarge",
        "4",
        "16Gi",
        "cn-hangzhou.i-1",
        None,
        "cn-hangzhou-h",
    );
    assert_eq!(h.post("/api/v1/nodes", node).await.0, 201);
    // The controller's way of advertising ENIs.
    let (code, n) = h
        .patch(
            "/api/v1/nodes/n1/status",
            "application/json-patch+json",
            json!([{"op": "add", "path": "/status/capacity/aliyun~1eni", "value": "2"}]),
        )
        .await;
    assert_eq!(code, 200);
    assert_eq!(n["status"]["capacity"]["aliyun/eni"], "2");
    assert_eq!(n["status"]["capacity"]["cpu"], "4");
    // A strategic patch of one condition keeps the others.
    let (code, n) = h
        .patch(
            "/api/v1/nodes/n1/status",
            "application/strategic-merge-patch+json",
            json!({"status": {"conditions": [{"type": "NetworkUnavailable", "status": "False", "reason": "RouteCreated"}]}}),
        )
        .await;
    assert_eq!(code, 200);
    let types: Vec<&str> = n["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["type"].as_str().unwrap())
        .collect();
    assert_eq!(types, ["Ready", "NetworkUnavailable"]);
    let (code, st) = h.patch("/api/v1/nodes/n1", "text/plain", json!({})).await;
    assert_eq!(
        (code, st["reason"].as_str()),
        (415, Some("UnsupportedMediaType"))
    );
}

#[tokio::test]
async fn list_pages_and_selectors() {
    let s = FakeApiServer::start(Options::without_controllers())
        .await
        .unwrap();
    let h = Http::new(&s);
    for i in 0..5 {
        let tier = if i % 2 == 0 { "fe" } else { "be" };
        let mut pod = json!({"metadata": {"name": format!("p{i}"), "labels": {"tier": tier}}, "spec": {"containers": [{"name": "c", "image": "i"}]}});
        if i == 4 {
            pod["spec"]["nodeName"] = json!("n1");
            pod["metadata"]["labels"]["canary"] = json!("yes");
        }
        assert_eq!(h.post("/api/v1/namespaces/default/pods", pod).await.0, 201);
    }
    let mut names = Vec::new();
    let mut cont = String::new();
    let mut pages = 0;
    loop {
        let (_, l) = h
            .get(&format!(
                "/api/v1/namespaces/default/pods?limit=2&continue={cont}"
            ))
            .await;
        pages += 1;
        for it in l["items"].as_array().unwrap() {
            names.push(it["metadata"]["name"].as_str().unwrap().to_string());
        }
        match l["metadata"]["continue"].as_str() {
            Some(c) => cont = c.to_string(),
            None => break,
        }
    }
    assert_eq!(pages, 3);
    assert_eq!(names, ["p0", "p1", "p2", "p3", "p4"]);
    let sel = |q: &'static str| {
        let h = &h;
        async move {
            let (_, l) = h.get(&format!("/api/v1/pods?{q}")).await;
            l["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|i| i["metadata"]["name"].as_str().unwrap().to_string())
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(sel("labelSelector=tier%3Dfe").await, ["p0", "p2", "p4"]);
    assert_eq!(
        sel("labelSelector=tier%20in%20(be),!canary").await,
        ["p1", "p3"]
    );
    assert_eq!(
        sel("labelSelector=tier%20notin%20(be),canary").await,
        ["p4"]
    );
    assert_eq!(sel("fieldSelector=spec.nodeName%3Dn1").await, ["p4"]);
    assert_eq!(
        sel("fieldSelector=spec.nodeName%3D,status.phase%3DPending")
            .await
            .len(),
        4
    );
    assert_eq!(
        h.get("/api/v1/pods?labelSelector=tier%20in%20fe").await.0,
        400
    );
}

#[tokio::test]
async fn watch_replays_history_and_answers_410_when_it_is_gone() {
    let s = FakeApiServer::start(Options {
        history_size: 3,
        bookmark_interval: Duration::from_millis(50),
        ..Options::without_controllers()
    })
    .await
    .unwrap();
    let h = Http::new(&s);
    let (_, first) = h.post(CMS, json!({"metadata": {"name": "w0"}})).await;
    let rv0 = first["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_string();
    for i in 1..6 {
        h.post(CMS, json!({"metadata": {"name": format!("w{i}")}}))
            .await;
    }
    let lines = h
        .watch_lines(&format!("{CMS}?watch=true&resourceVersion={rv0}"), 1)
        .await;
    assert_eq!(lines[0]["type"], "ERROR");
    assert_eq!(lines[0]["object"]["code"], 410);
    assert_eq!(lines[0]["object"]["reason"], "Expired");

    // From a recent resourceVersion: the retained changes replay, then live ones follow.
    let (_, list) = h.get(CMS).await;
    let list_rv = list["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_string();
    let h2 = Http::new(&s);
    let path = format!("{CMS}?watch=true&resourceVersion={list_rv}&allowWatchBookmarks=true");
    let watcher = tokio::spawn(async move { h2.watch_lines(&path, 4).await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    h.patch(
        &format!("{CMS}/w5"),
        "application/merge-patch+json",
        json!({"data": {"x": "y"}}),
    )
    .await;
    h.delete(&format!("{CMS}/w5")).await;
    let lines = watcher.await.unwrap();
    let types: Vec<&str> = lines
        .iter()
        .map(|l| l["type"].as_str().unwrap())
        .filter(|t| *t != "BOOKMARK")
        .collect();
    assert_eq!(types[..2], ["MODIFIED", "DELETED"]);
    assert!(lines
        .iter()
        .any(|l| l["type"] == "BOOKMARK" && l["object"]["kind"] == "ConfigMap"));

    // A fresh watch (no resourceVersion) starts with ADDED for what exists.
    let lines = h
        .watch_lines(
            &format!("{CMS}?watch=1&fieldSelector=metadata.name%3Dw1"),
            1,
        )
        .await;
    assert_eq!(
        (
            lines[0]["type"].as_str(),
            lines[0]["object"]["metadata"]["name"].as_str()
        ),
        (Some("ADDED"), Some("w1"))
    );
}

#[tokio::test]
async fn watch_with_label_selector_sees_objects_leave_and_enter() {
    let s = FakeApiServer::start(Options::without_controllers())
        .await
        .unwrap();
    let h = Http::new(&s);
    let (_, o) = h
        .post(
            CMS,
            json!({"metadata": {"name": "m", "labels": {"app": "x"}}}),
        )
        .await;
    let rv = o["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_string();
    let h2 = Http::new(&s);
    let path = format!("{CMS}?watch=true&resourceVersion={rv}&labelSelector=app%3Dx");
    let w = tokio::spawn(async move { h2.watch_lines(&path, 2).await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    h.patch(
        &format!("{CMS}/m"),
        "application/merge-patch+json",
        json!({"metadata": {"labels": {"app": "y"}}}),
    )
    .await;
    h.patch(
        &format!("{CMS}/m"),
        "application/merge-patch+json",
        json!({"metadata": {"labels": {"app": "x"}}}),
    )
    .await;
    let lines = w.await.unwrap();
    let types: Vec<&str> = lines.iter().map(|l| l["type"].as_str().unwrap()).collect();
    assert_eq!(types, ["DELETED", "ADDED"]);
}

#[tokio::test]
async fn events_are_one_store_seen_through_two_apis() {
    let s = FakeApiServer::start(Options::without_controllers())
        .await
        .unwrap();
    let h = Http::new(&s);
    let (code, _) = h
        .post(
            "/apis/events.k8s.io/v1/namespaces/default/events",
            json!({
                "metadata": {"name": "p.1"},
                "regarding": {"kind": "Pod", "name": "p", "namespace": "default", "uid": "u1"},
                "note": "Attached ENI eni-1", "reason": "AttachENISucceed", "type": "Normal",
                "action": "Attach", "reportingController": "vpc-eni-controller", "reportingInstance": "c-0",
                "eventTime": "2026-01-01T00:00:00.000000Z"
            }),
        )
        .await;
    assert_eq!(code, 201);
    h.post(
        "/api/v1/namespaces/default/events",
        json!({"metadata": {"name": "q.1"}, "involvedObject": {"kind": "Pod", "name": "q", "namespace": "default"}, "message": "old style", "reason": "R", "type": "Warning", "source": {"component": "kubelet"}}),
    )
    .await;
    let (_, l) = h
        .get("/api/v1/namespaces/default/events?fieldSelector=involvedObject.name%3Dp,involvedObject.kind%3DPod")
        .await;
    let items = l["items"].as_array().unwrap();
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["message"], "Attached ENI eni-1");
    assert_eq!(items[0]["source"]["component"], "vpc-eni-controller");
    assert_eq!(items[0]["apiVersion"], "v1");
    let (_, e) = h
        .get("/apis/events.k8s.io/v1/namespaces/default/events/q.1")
        .await;
    assert_eq!(e["apiVersion"], "events.k8s.io/v1");
    assert_eq!(e["regarding"]["name"], "q");
    assert_eq!(e["note"], "old style");
    assert_eq!(e["reportingController"], "kubelet");
    let (_, l) = h
        .get("/apis/events.k8s.io/v1/events?fieldSelector=regarding.name%3Dp")
        .await;
    assert_eq!(l["items"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn discovery_and_crds_applied_at_run_time() {
    let s = FakeApiServer::start(Options::without_controllers())
        .await
        .unwrap();
    let h = Http::new(&s);
    let (_, api) = h.get("/api").await;
    assert_eq!(api["versions"], json!(["v1"]));
    let (_, v1) = h.get("/api/v1").await;
    let names: Vec<&str> = v1["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    for n in [
        "pods",
        "pods/status",
        "pods/binding",
        "nodes",
        "nodes/status",
        "events",
        "namespaces",
        "configmaps",
        "secrets",
    ] {
        assert!(names.contains(&n), "{n} missing from /api/v1");
    }
    let (_, apis) = h.get("/apis").await;
    let groups: Vec<&str> = apis["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["name"].as_str().unwrap())
        .collect();
    for g in [
        "events.k8s.io",
        "coordination.k8s.io",
        "apps",
        "apiextensions.k8s.io",
    ] {
        assert!(groups.contains(&g), "{g} missing from /apis");
    }
    assert_eq!(h.get("/version").await.1["major"], "1");
    assert_eq!(h.get("/apis/example.com/v1").await.0, 404);

    let crd = json!({
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": "enipools.example.com"},
        "spec": {"group": "example.com", "scope": "Namespaced",
            "names": {"plural": "enipools", "singular": "enipool", "kind": "EniPool"},
            "versions": [{"name": "v1", "served": true, "storage": true, "subresources": {"status": {}},
                "schema": {"openAPIV3Schema": {"type": "object"}}}]}
    });
    let (code, c) = h
        .post(
            "/apis/apiextensions.k8s.io/v1/customresourcedefinitions",
            crd,
        )
        .await;
    assert_eq!(code, 201);
    let established = c["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .any(|c| c["type"] == "Established" && c["status"] == "True");
    assert!(established);
    let (_, rl) = h.get("/apis/example.com/v1").await;
    assert_eq!(rl["resources"][0]["name"], "enipools");
    let (code, o) = h
        .post("/apis/example.com/v1/namespaces/default/enipools", json!({"apiVersion": "example.com/v1", "kind": "EniPool", "metadata": {"name": "p"}, "spec": {"size": 3}}))
        .await;
    assert_eq!(code, 201);
    assert_eq!(o["kind"], "EniPool");
    let (_, l) = h.get("/apis/example.com/v1/enipools").await;
    assert_eq!(l["kind"], "EniPoolList");
    assert_eq!(l["items"][0]["spec"]["size"], 3);
    // Deleting the CRD removes the resource and its objects.
    assert_eq!(
        h.delete("/apis/apiextensions.k8s.io/v1/customresourcedefinitions/enipools.example.com")
            .await
            .0,
        200
    );
    assert_eq!(h.get("/apis/example.com/v1/enipools").await.0, 404);
}

#[tokio::test]
async fn server_side_apply_creates_then_merges() {
    let s = FakeApiServer::start(Options::without_controllers())
        .await
        .unwrap();
    let h = Http::new(&s);
    let path = "/apis/coordination.k8s.io/v1/namespaces/kube-system/leases/vpc-eni-controller?fieldManager=c-0";
    let lease = json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "spec": {"holderIdentity": "c-0", "leaseDurationSeconds": 15}});
    let (code, l) = h.patch(path, "application/apply-patch+yaml", lease).await;
    assert_eq!(
        (code, l["metadata"]["name"].as_str()),
        (201, Some("vpc-eni-controller"))
    );
    let (code, l) = h
        .patch(path, "application/apply-patch+yaml", json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "spec": {"renewTime": "2026-01-01T00:00:00.000000Z"}}))
        .await;
    assert_eq!(code, 200);
    assert_eq!(l["spec"]["holderIdentity"], "c-0");
    assert_eq!(l["spec"]["renewTime"], "2026-01-01T00:00:00.000000Z");
}
