//! The loop shared by the in-process controllers (scheduler, kubelet,
//! deployments): run a pass, then wait for a change to a watched object set
//! or for the resync period, coalescing bursts of changes into one pass.

use super::resources::StorageKey;
use super::store::{Broadcast, Store};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::broadcast::error::{RecvError, TryRecvError};

/// Run `pass` forever: after every change to one of `watched`, and every `resync`.
pub async fn run_loop<F>(store: Arc<Store>, watched: Vec<StorageKey>, resync: Duration, mut pass: F)
where
    F: FnMut(&Store) + Send,
{
    let mut rx = store.subscribe();
    loop {
        pass(&store);
        let relevant = |m: &Broadcast| match m {
            Broadcast::Change(c) => watched.contains(&c.storage),
            Broadcast::Expire => false,
        };
        // Wait for one relevant change (or the resync tick)...
        let deadline = tokio::time::sleep(resync);
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                _ = &mut deadline => break,
                m = rx.recv() => match m {
                    Ok(m) if relevant(&m) => break,
                    Ok(_) => continue,
                    // Missed changes: a full pass reads everything anyway.
                    Err(RecvError::Lagged(_)) => break,
                    Err(RecvError::Closed) => return,
                }
            }
        }
        // ...then drain whatever else arrived meanwhile into the same pass.
        loop {
            match rx.try_recv() {
                Ok(_) | Err(TryRecvError::Lagged(_)) => continue,
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Closed) => return,
            }
        }
    }
}

/// Storage key of a built-in resource.
pub fn key(group: &str, plural: &str) -> StorageKey {
    StorageKey {
        group: group.into(),
        plural: plural.into(),
    }
}
