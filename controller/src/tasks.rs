//! Task plumbing shared by the replica and the reconcilers: a spawned task
//! that is aborted when its handle is dropped, and a keyed count of
//! consecutive failures that turns into a backoff (`ipam::backoff`).

use ipam::backoff::Backoff;
use std::collections::HashMap;
use std::hash::Hash;
use std::time::Duration;

/// Aborts the task when dropped, also when the future holding it is itself
/// aborted (the replica stopped leading).
pub struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl AbortOnDrop {
    pub fn spawn(task: impl std::future::Future<Output = ()> + Send + 'static) -> Self {
        Self(tokio::spawn(task))
    }
}

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Consecutive failures per key (a node, a pod uid); a success or the
/// object's deletion forgets the key.
#[derive(Debug, Default)]
pub struct Failures<K: Eq + Hash> {
    counts: parking_lot::Mutex<HashMap<K, u32>>,
}

impl<K: Eq + Hash> Failures<K> {
    pub fn new() -> Self {
        Self {
            counts: parking_lot::Mutex::new(HashMap::new()),
        }
    }

    /// Count one more failure of `key` and return how long to wait.
    pub fn failed(&self, key: K, backoff: Backoff) -> Duration {
        let mut counts = self.counts.lock();
        let n = counts.entry(key).or_insert(0);
        *n = n.saturating_add(1);
        backoff.after(*n)
    }

    /// Keep only the keys `keep` accepts (objects that still exist).
    pub fn retain(&self, mut keep: impl FnMut(&K) -> bool) {
        self.counts.lock().retain(|k, _| keep(k));
    }

    pub fn forget(&self, key: &K) {
        self.counts.lock().remove(key);
    }

    /// Keys currently failing.
    pub fn len(&self) -> usize {
        self.counts.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_back_off_per_key_and_reset_on_forget() {
        let f = Failures::new();
        let b = Backoff::new(Duration::from_secs(1), Duration::from_secs(4));
        assert_eq!(f.failed("a", b), Duration::from_secs(1));
        assert_eq!(f.failed("a", b), Duration::from_secs(2));
        assert_eq!(f.failed("b", b), Duration::from_secs(1));
        assert_eq!(f.failed("a", b), Duration::from_secs(4));
        assert_eq!(f.failed("a", b), Duration::from_secs(4));
        f.forget(&"a");
        assert_eq!(f.failed("a", b), Duration::from_secs(1));
        assert_eq!(f.len(), 2);
    }
}
