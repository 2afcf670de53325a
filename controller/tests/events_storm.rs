//! A storm of identical failures (every pod of many failing alike, again and
//! again, as when the cloud throttles) against the fake kube-apiserver over
//! HTTP: the controller's Events make a bounded number of writes, at most
//! the global rate after the burst, every pod still gets its Event, and the
//! series counts add up to every occurrence.

use controller::events::gate::Limits;
use controller::events::Events;
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, ObjectReference};
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, ListParams, PostParams};
use kube::runtime::watcher;
use mocks::kubeapi::{FakeApiServer, Options};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const PODS: usize = 120;
const ROUNDS: usize = 10;

fn pod_ref(i: usize) -> ObjectReference {
    ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("Pod".into()),
        namespace: Some("storm-ns".into()),
        name: Some(format!("storm-pod-{i}")),
        uid: Some(format!("storm-uid-{i}")),
        ..ObjectReference::default()
    }
}

#[tokio::test]
async fn a_storm_of_identical_failures_makes_bounded_event_writes_and_every_pod_gets_one() {
    let server = FakeApiServer::start(Options::without_controllers())
        .await
        .expect("fake apiserver");
    let client = kube::Client::try_from(server.client_config()).expect("client");
    let ns: Namespace =
        serde_json::from_value(serde_json::json!({"metadata": {"name": "storm-ns"}})).expect("ns");
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await
        .expect("create namespace");

    // Every write the apiserver takes, seen on a watch from before the storm.
    let writes = Arc::new(AtomicU64::new(0));
    let api: Api<Event> = Api::namespaced(client.clone(), "storm-ns");
    let watch = {
        let writes = writes.clone();
        let stream = watcher(api.clone(), watcher::Config::default());
        tokio::spawn(async move {
            futures::pin_mut!(stream);
            while let Some(e) = stream.next().await {
                if let Ok(watcher::Event::Apply(_)) = e {
                    writes.fetch_add(1, Ordering::Relaxed);
                }
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;

    let limits = Limits {
        global_burst: 40,
        global_per_second: 40.0,
        ..Limits::default()
    };
    let events = Events::with_limits(client.clone(), limits.clone());
    let started = Instant::now();
    for _ in 0..ROUNDS {
        futures::stream::iter(0..PODS)
            .for_each_concurrent(16, |i| {
                let events = events.clone();
                async move {
                    events
                        .publish(
                            &pod_ref(i),
                            true,
                            "AllocIPFailed",
                            "AllocateENI",
                            "cloud: Throttling.User: Request was denied due to user flow control."
                                .into(),
                        )
                        .await;
                }
            })
            .await;
    }
    // The background flush writes what was held; wait until nothing is.
    let deadline = Instant::now() + Duration::from_secs(30);
    while events.held() > 0 {
        assert!(Instant::now() < deadline, "{} still held", events.held());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let elapsed = started.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let written = writes.load(Ordering::Relaxed);
    watch.abort();

    let occurrences = (PODS * ROUNDS) as u64;
    eprintln!("{occurrences} occurrences: {written} Event writes in {elapsed:.1}s");
    // Without the gate every occurrence is a write.
    let bound = f64::from(limits.global_burst) + limits.global_per_second * (elapsed + 1.0);
    assert!(
        (written as f64) <= bound,
        "{written} writes in {elapsed:.1}s, over the global bound {bound:.0}"
    );
    assert!(
        written < occurrences / 3,
        "{written} writes for {occurrences} occurrences"
    );
    // Every pod has exactly one Event, and the counts add up.
    let list = api.list(&ListParams::default()).await.expect("list events");
    let mut per_pod: HashMap<String, Vec<i32>> = HashMap::new();
    for e in &list.items {
        let name = e
            .regarding
            .as_ref()
            .and_then(|r| r.name.clone())
            .unwrap_or_default();
        let count = e.series.as_ref().map_or(1, |s| s.count);
        per_pod.entry(name).or_default().push(count);
        assert_eq!(e.reason.as_deref(), Some("AllocIPFailed"));
        assert_eq!(e.type_.as_deref(), Some("Warning"));
    }
    for i in 0..PODS {
        let counts = per_pod.get(&format!("storm-pod-{i}")).unwrap_or_else(|| {
            panic!(
                "storm-pod-{i} got no Event ({} Events, {written} writes): {:?}",
                list.items.len(),
                list.items.first()
            )
        });
        assert_eq!(counts.len(), 1, "storm-pod-{i}: {counts:?}");
    }
    let total: i64 = per_pod.values().flatten().map(|c| i64::from(*c)).sum();
    assert_eq!(total, occurrences as i64, "every occurrence counted");
    server.shutdown().await;
}
