//! Events: written as events.k8s.io/v1 objects, repeats folded into
//! series, and bounded by [`gate`] (per object and reason, and in total) so
//! a storm of failures never floods the apiserver; and [`Once`], which keeps
//! a reconciler that runs every few seconds from publishing the same Event
//! on every pass.

pub mod gate;

use crate::tasks::AbortOnDrop;
use gate::{Gate, Limits, Subject, Write};
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::{Event as K8sEvent, EventSeries};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::Resource;
use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

/// The name written as the Events' reporting controller.
pub const CONTROLLER_NAME: &str = "vpc-eni-controller";

/// How often held Events are looked at.
const FLUSH_EVERY: Duration = Duration::from_secs(1);

/// Writes in flight at once from one flush.
const FLUSH_CONCURRENCY: usize = 8;

/// Longest one Event write may take: a reconciler that publishes waits for
/// it, and an Event must never hold a pod or a node's pool up longer.
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);

/// What an Event series needs to be created: the object and the action.
type Payload = Arc<(ObjectReference, String)>;

/// Publishes Events (events.k8s.io/v1) through the [`gate`]: a write it
/// allows is made before `publish` returns; a held one is written by a
/// background flush once tokens are back. Failures to write are logged,
/// never fatal.
#[derive(Clone)]
pub struct Events {
    inner: Arc<Inner>,
}

struct Inner {
    client: kube::Client,
    instance: String,
    gate: parking_lot::Mutex<Gate<Payload>>,
    /// The background flush (a task holding only a weak reference).
    flusher: parking_lot::Mutex<Option<AbortOnDrop>>,
}

impl Events {
    pub fn new(client: kube::Client) -> Self {
        Self::with_limits(client, Limits::default())
    }

    pub fn with_limits(client: kube::Client, limits: Limits) -> Self {
        let seed = Timestamp::now().as_nanosecond() as u64;
        let inner = Arc::new(Inner {
            client,
            instance: std::env::var("POD_NAME").unwrap_or_else(|_| CONTROLLER_NAME.into()),
            gate: parking_lot::Mutex::new(Gate::new(limits, seed, Instant::now())),
            flusher: parking_lot::Mutex::new(None),
        });
        if tokio::runtime::Handle::try_current().is_ok() {
            let task = AbortOnDrop::spawn(flush_loop(Arc::downgrade(&inner)));
            *inner.flusher.lock() = Some(task);
        }
        Self { inner }
    }

    pub async fn publish(
        &self,
        regarding: &ObjectReference,
        warning: bool,
        reason: &str,
        action: &str,
        note: String,
    ) {
        let note = truncate(note, 1024);
        let subject = Subject {
            object: format!(
                "{}/{}/{}/{}",
                regarding.kind.as_deref().unwrap_or_default(),
                regarding.namespace.as_deref().unwrap_or_default(),
                regarding.name.as_deref().unwrap_or_default(),
                regarding.uid.as_deref().unwrap_or_default(),
            ),
            name: regarding
                .name
                .clone()
                .unwrap_or_else(|| CONTROLLER_NAME.into()),
            warning,
            reason: reason.into(),
        };
        let payload = Arc::new((regarding.clone(), action.to_owned()));
        let write = self
            .inner
            .gate
            .lock()
            .offer(Instant::now(), subject, &note, payload);
        if let Some(write) = write {
            self.inner.write(write).await;
        }
    }

    /// An Event about a node, by name (also for a node that is already gone).
    pub async fn node(&self, node: &str, warning: bool, reason: &str, action: &str, note: String) {
        let reference = node_ref(node);
        self.publish(&reference, warning, reason, action, note)
            .await;
    }

    /// Write every held Event whose tokens are back (the background flush
    /// does this every second).
    pub async fn flush(&self) {
        self.inner.flush().await;
    }

    /// Events held, waiting for tokens.
    pub fn held(&self) -> usize {
        self.inner.gate.lock().held()
    }
}

async fn flush_loop(inner: Weak<Inner>) {
    loop {
        tokio::time::sleep(FLUSH_EVERY).await;
        let Some(inner) = inner.upgrade() else {
            return;
        };
        inner.flush().await;
    }
}

impl Inner {
    async fn flush(&self) {
        use futures::StreamExt as _;
        let writes = self.gate.lock().flush(Instant::now());
        futures::stream::iter(writes)
            .for_each_concurrent(FLUSH_CONCURRENCY, |w| self.write(w))
            .await;
    }

    async fn write(&self, write: Write<Payload>) {
        let (regarding, action) = &*write.payload;
        let namespace = regarding.namespace.as_deref().unwrap_or("default");
        let result = tokio::time::timeout(
            WRITE_TIMEOUT,
            self.send(&write, regarding, action, namespace),
        )
        .await
        .unwrap_or_else(|_| {
            Err(kube::Error::Service(
                format!("no answer within {}s", WRITE_TIMEOUT.as_secs()).into(),
            ))
        });
        if let Err(e) = result {
            tracing::warn!(error = %e, reason = %write.key.0.reason, "could not publish event");
            self.gate.lock().failed(&write);
        }
    }

    async fn send(
        &self,
        write: &Write<Payload>,
        regarding: &ObjectReference,
        action: &str,
        namespace: &str,
    ) -> Result<(), kube::Error> {
        let events: Api<K8sEvent> = Api::namespaced(self.client.clone(), namespace);
        let now = MicroTime(Timestamp::now());
        let series = (write.count > 1).then(|| EventSeries {
            count: i32::try_from(write.count).unwrap_or(i32::MAX),
            last_observed_time: now.clone(),
        });
        if write.create {
            let event = K8sEvent {
                metadata: ObjectMeta {
                    name: Some(write.name.clone()),
                    namespace: Some(namespace.to_owned()),
                    ..ObjectMeta::default()
                },
                action: Some(action.to_owned()),
                reason: Some(write.key.0.reason.clone()),
                note: Some(write.note.clone()),
                type_: Some(
                    if write.key.0.warning {
                        "Warning"
                    } else {
                        "Normal"
                    }
                    .into(),
                ),
                event_time: Some(now),
                regarding: Some(regarding.clone()),
                reporting_controller: Some(CONTROLLER_NAME.into()),
                reporting_instance: Some(self.instance.clone()),
                series,
                ..K8sEvent::default()
            };
            events
                .create(&PostParams::default(), &event)
                .await
                .map(drop)
        } else {
            let patch = serde_json::json!({"series": series, "note": write.note});
            events
                .patch(&write.name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .map(drop)
        }
    }
}

pub fn node_ref(name: &str) -> ObjectReference {
    ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("Node".into()),
        name: Some(name.into()),
        ..ObjectReference::default()
    }
}

pub fn object_ref<K: Resource<DynamicType = ()>>(obj: &K) -> ObjectReference {
    obj.object_ref(&())
}

fn truncate(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut cut = max;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
    }
    s
}

/// Remembers, per key, the last Event text published, so a reconciler
/// publishes an Event when something changed and not on every pass.
pub struct Once<K: Eq + Hash> {
    events: Option<Events>,
    last: parking_lot::Mutex<HashMap<K, String>>,
}

impl<K: Eq + Hash> Once<K> {
    pub fn new(events: Events) -> Self {
        Self {
            events: Some(events),
            last: parking_lot::Mutex::new(HashMap::new()),
        }
    }

    /// Keeps count only, publishes nothing (for tests of the bookkeeping).
    #[cfg(test)]
    fn counting() -> Self {
        Self {
            events: None,
            last: parking_lot::Mutex::new(HashMap::new()),
        }
    }

    /// Whether `text` is new for `key` (and remember it as the last).
    pub fn is_new(&self, key: K, text: &str) -> bool {
        let mut last = self.last.lock();
        if last.get(&key).map(String::as_str) == Some(text) {
            return false;
        }
        last.insert(key, text.to_owned());
        true
    }

    /// Publish an Event about a node unless the same reason and note were
    /// the last published under `key`.
    pub async fn node(
        &self,
        key: K,
        node: &str,
        warning: bool,
        reason: &str,
        action: &str,
        note: String,
    ) {
        if self.is_new(key, &format!("{reason}:{note}")) {
            if let Some(events) = &self.events {
                events.node(node, warning, reason, action, note).await;
            }
        }
    }

    /// Forget a key: the next Event under it is published again.
    pub fn forget(&self, key: &K) {
        self.last.lock().remove(key);
    }

    /// Keep only the keys `keep` accepts (objects that still exist).
    pub fn retain(&self, mut keep: impl FnMut(&K) -> bool) {
        self.last.lock().retain(|k, _| keep(k));
    }

    pub fn len(&self) -> usize {
        self.last.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An apiserver that takes the connection and never answers: publish
    /// still returns (after [`WRITE_TIMEOUT`], on the paused clock), so the
    /// reconciler that published goes on.
    #[tokio::test(start_paused = true)]
    async fn a_write_with_no_answer_does_not_hold_the_publisher() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let _silent = tokio::spawn(async move {
            let mut open = Vec::new();
            while let Ok((conn, _)) = listener.accept().await {
                open.push(conn);
            }
        });
        let config = kube::Config::new(format!("http://{addr}").parse().unwrap());
        let client = kube::Client::try_from(config).unwrap();
        let events = Events::new(client);
        let started = tokio::time::Instant::now();
        events
            .node("n1", true, "Failed", "Test", "no answer".into())
            .await;
        let waited = started.elapsed();
        assert!(
            waited >= WRITE_TIMEOUT && waited < WRITE_TIMEOUT * 2,
            "{waited:?}"
        );
    }

    #[test]
    fn once_is_new_only_when_the_text_changes_and_again_after_forget() {
        let once: Once<(String, &str)> = Once::counting();
        let key = || ("node-a".to_owned(), "conflict");
        assert!(once.is_new(key(), "RouteConflict:x"));
        assert!(!once.is_new(key(), "RouteConflict:x"));
        assert!(once.is_new(("node-b".to_owned(), "conflict"), "RouteConflict:x"));
        assert!(once.is_new(key(), "RouteConflict:y"));
        once.forget(&key());
        assert!(once.is_new(key(), "RouteConflict:y"));
        once.retain(|(node, _)| node == "node-b");
        assert_eq!(once.len(), 1);
    }
}
