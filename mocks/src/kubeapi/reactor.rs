//! The loop shared by the in-process controllers (scheduler, kubelet,
//! deployments): run a pass, then wait for a change to a watched object set
//! or for the resync period, coalescing bursts of changes into one pass.
//! A pass hears which changes it is for, so a controller can keep state
//! between passes and look only at what changed; `Changes::All` (the first
//! pass, or changes were missed) means it must look at everything.

use super::resources::StorageKey;
use super::store::{Broadcast, Change, Store};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::broadcast::error::{RecvError, TryRecvError};

/// What a pass is for.
#[derive(Debug)]
pub enum Changes {
    /// Anything may have changed: read everything.
    All,
    /// These changes to the watched object sets, oldest first (none on a
    /// resync tick).
    Some(Vec<Arc<Change>>),
}

/// Run `pass` forever: after every change to one of `watched`, and every `resync`.
pub async fn run_loop<F>(store: Arc<Store>, watched: Vec<StorageKey>, resync: Duration, mut pass: F)
where
    F: FnMut(&Store, Changes) + Send,
{
    let mut rx = store.subscribe();
    let mut changes = Changes::All;
    loop {
        pass(
            &store,
            std::mem::replace(&mut changes, Changes::Some(Vec::new())),
        );
        let note = |m: Broadcast, changes: &mut Changes| {
            if let (Broadcast::Change(c), Changes::Some(list)) = (m, &mut *changes) {
                if watched.contains(&c.storage) {
                    list.push(c);
                }
            }
        };
        // Wait for one relevant change (or the resync tick)...
        let deadline = tokio::time::sleep(resync);
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                _ = &mut deadline => break,
                m = rx.recv() => match m {
                    Ok(m) => {
                        note(m, &mut changes);
                        if matches!(&changes, Changes::Some(list) if !list.is_empty()) {
                            break;
                        }
                    }
                    // Missed changes: the next pass reads everything.
                    Err(RecvError::Lagged(_)) => {
                        changes = Changes::All;
                        break;
                    }
                    Err(RecvError::Closed) => return,
                }
            }
        }
        // ...then drain whatever else arrived meanwhile into the same pass.
        loop {
            match rx.try_recv() {
                Ok(m) => note(m, &mut changes),
                Err(TryRecvError::Lagged(_)) => changes = Changes::All,
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
