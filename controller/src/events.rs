//! Events: publishing through kube-runtime's `Recorder` (events.k8s.io/v1,
//! deduplicated into series), and [`Once`], which keeps a reconciler that
//! runs every few seconds from publishing the same Event on every pass.

use k8s_openapi::api::core::v1::ObjectReference;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::Resource;
use std::collections::HashMap;
use std::hash::Hash;

/// The name written as the Events' reporting controller.
pub const CONTROLLER_NAME: &str = "vpc-eni-controller";

/// Publishes Events through kube-runtime's `Recorder` (events.k8s.io/v1,
/// deduplicated into series). Failures to publish are logged, never fatal.
#[derive(Clone)]
pub struct Events {
    recorder: Recorder,
}

impl Events {
    pub fn new(client: kube::Client) -> Self {
        let reporter = Reporter {
            controller: CONTROLLER_NAME.into(),
            instance: std::env::var("POD_NAME").ok(),
        };
        Self {
            recorder: Recorder::new(client, reporter),
        }
    }

    pub async fn publish(
        &self,
        regarding: &ObjectReference,
        warning: bool,
        reason: &str,
        action: &str,
        note: String,
    ) {
        let event = Event {
            type_: if warning {
                EventType::Warning
            } else {
                EventType::Normal
            },
            reason: reason.into(),
            note: Some(truncate(note, 1024)),
            action: action.into(),
            secondary: None,
        };
        if let Err(e) = self.recorder.publish(&event, regarding).await {
            tracing::warn!(error = %e, reason, "could not publish event");
        }
    }

    /// An Event about a node, by name (also for a node that is already gone).
    pub async fn node(&self, node: &str, warning: bool, reason: &str, action: &str, note: String) {
        let reference = node_ref(node);
        self.publish(&reference, warning, reason, action, note)
            .await;
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
