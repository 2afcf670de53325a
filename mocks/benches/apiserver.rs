//! List and watch throughput of the fake kube-apiserver holding 5,000 nodes
//! and 100,000 pods, and the process RSS (server and client share it).
//!
//! Run: `cargo bench -p mocks --bench apiserver`
//! (smaller: `BENCH_NODES=500 BENCH_PODS=10000 cargo bench -p mocks --bench apiserver`).

use mocks::kubeapi::{FakeApiServer, NodeTemplate, Options};
use serde_json::json;
use std::time::{Duration, Instant};

fn env_usize(k: &str, d: usize) -> usize {
    std::env::var(k)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(d)
}

fn rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .map(|kb| kb / 1024.0)
        .unwrap_or(0.0)
}

fn pod(i: usize, node: &str) -> serde_json::Value {
    json!({
        "metadata": {
            "name": format!("pod-{i:06}"),
            "labels": {"app": format!("app-{}", i % 100), "pod-template-hash": "6d4cf56db6"},
            "annotations": {"vpc-eni.io/allocation": json!({"ip": format!("10.{}.{}.{}", i >> 16 & 255, i >> 8 & 255, i & 255), "eni": format!("eni-{i:08x}")}).to_string()},
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": format!("app-{}-6d4cf56db6", i % 100), "uid": "3f1c2a7e-0000-4000-8000-000000000000", "controller": true}]
        },
        "spec": {
            "nodeName": node,
            "containers": [{"name": "app", "image": "registry.example/app:1.2.3",
                "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"aliyun/eni": "1"}},
                "ports": [{"containerPort": 8080, "protocol": "TCP"}]}]
        },
        "status": {
            "phase": "Running",
            "podIP": format!("10.{}.{}.{}", i >> 16 & 255, i >> 8 & 255, i & 255),
            "hostIP": "192.168.0.1",
            "conditions": [
                {"type": "Initialized", "status": "True"}, {"type": "Ready", "status": "True"},
                {"type": "ContainersReady", "status": "True"}, {"type": "PodScheduled", "status": "True"}
            ]
        }
    })
}

async fn list_all(c: &reqwest::Client, url: &str, page: usize) -> (usize, usize, Duration) {
    let start = Instant::now();
    let mut cont = String::new();
    let (mut items, mut bytes) = (0, 0);
    loop {
        let body = c
            .get(format!("{url}?limit={page}&continue={cont}"))
            .send()
            .await
            .and_then(|r| r.error_for_status())
            .expect("list request")
            .bytes()
            .await
            .expect("list body");
        bytes += body.len();
        let v: serde_json::Value = serde_json::from_slice(&body).expect("list json");
        items += v["items"].as_array().map(Vec::len).unwrap_or(0);
        match v["metadata"]["continue"].as_str() {
            Some(c) => cont = c.to_string(),
            None => break,
        }
    }
    (items, bytes, start.elapsed())
}

/// Read a watch until `want` events arrived.
async fn read_watch(mut resp: reqwest::Response, want: usize) -> usize {
    let mut n = 0;
    while n < want {
        match resp.chunk().await {
            Ok(Some(chunk)) => n += chunk.iter().filter(|b| **b == b'\n').count(),
            _ => break,
        }
    }
    n
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let nodes = env_usize("BENCH_NODES", 5_000);
    let pods = env_usize("BENCH_PODS", 100_000);
    let writes = env_usize("BENCH_WATCH_WRITES", 20_000);
    let base_rss = rss_mib();
    let server = FakeApiServer::start(Options {
        history_size: writes + 10,
        watch_buffer: writes + 10,
        ..Options::without_controllers()
    })
    .await
    .expect("start");
    let store = server.store().clone();
    let nodes_r = store.resource("", "nodes").expect("nodes");
    let pods_r = store.resource("", "pods").expect("pods");

    let t = Instant::now();
    for i in 0..nodes {
        let mut n = NodeTemplate::new(&format!("node-{i:05}"), "ecs.g6.xlarge", "4", "16Gi");
        n.provider_id = Some(format!("cn-hangzhou.i-{i:08x}"));
        n.pod_cidr = Some(format!("10.{}.{}.0/24", 100 + i / 256, i % 256));
        n.extended = vec![("aliyun/eni".into(), "2".into())];
        store.create(&nodes_r, "", n.build()).expect("node");
    }
    for i in 0..pods {
        let node = format!("node-{:05}", i % nodes.max(1));
        store
            .create(&pods_r, "default", pod(i, &node))
            .expect("pod");
    }
    let fill = t.elapsed();
    println!(
        "fill: {} nodes + {} pods in {:.2?} ({:.0} creates/s)",
        nodes,
        pods,
        fill,
        (nodes + pods) as f64 / fill.as_secs_f64()
    );
    println!(
        "rss: {:.0} MiB before, {:.0} MiB holding the objects",
        base_rss,
        rss_mib()
    );

    let c = reqwest::Client::new();
    let url = server.url();
    for (what, path, page) in [
        ("nodes", "/api/v1/nodes", 500),
        ("pods", "/api/v1/pods", 500),
        ("pods", "/api/v1/pods", 5000),
    ] {
        let (items, bytes, took) = list_all(&c, &format!("{url}{path}"), page).await;
        println!(
            "list {what} (limit={page}): {items} objects, {:.1} MiB in {:.2?} = {:.0} objects/s, {:.0} MiB/s",
            bytes as f64 / 1048576.0,
            took,
            items as f64 / took.as_secs_f64(),
            bytes as f64 / 1048576.0 / took.as_secs_f64()
        );
    }
    let t = Instant::now();
    let body = c
        .get(format!(
            "{url}/api/v1/pods?fieldSelector=spec.nodeName%3Dnode-00017"
        ))
        .send()
        .await
        .expect("selector list")
        .bytes()
        .await
        .expect("body");
    let v: serde_json::Value = serde_json::from_slice(&body).expect("json");
    println!(
        "list pods by fieldSelector spec.nodeName (scans all {pods}): {} matched in {:.2?}",
        v["items"].as_array().map(Vec::len).unwrap_or(0),
        t.elapsed()
    );

    // A fresh watch replays every pod as ADDED.
    let t = Instant::now();
    let resp = c
        .get(format!("{url}/api/v1/pods?watch=true"))
        .send()
        .await
        .expect("watch");
    let got = read_watch(resp, pods).await;
    let took = t.elapsed();
    println!(
        "watch initial ADDED: {got} events in {took:.2?} = {:.0} events/s",
        got as f64 / took.as_secs_f64()
    );

    // Live changes: patches committed in-process, read by an HTTP watcher.
    let rv = store.current_rv();
    let resp = c
        .get(format!("{url}/api/v1/pods?watch=true&resourceVersion={rv}"))
        .send()
        .await
        .expect("watch");
    let reader = tokio::spawn(read_watch(resp, writes));
    let t = Instant::now();
    for i in 0..writes {
        let name = format!("pod-{:06}", i % pods.max(1));
        let p = json!({"metadata": {"labels": {"gen": i.to_string()}}}).to_string();
        store
            .patch(
                &pods_r,
                "default",
                &name,
                mocks::kubeapi::patch::PatchKind::Merge,
                p.as_bytes(),
                mocks::kubeapi::store::Sub::Main,
            )
            .expect("patch");
    }
    let wrote = t.elapsed();
    let got = reader.await.expect("reader");
    let took = t.elapsed();
    println!(
        "watch live: {writes} patches committed in {wrote:.2?} ({:.0} writes/s); {got} MODIFIED events delivered in {took:.2?} = {:.0} events/s",
        writes as f64 / wrote.as_secs_f64(),
        got as f64 / took.as_secs_f64()
    );
    println!("rss at end: {:.0} MiB", rss_mib());
    server.shutdown().await;
}
