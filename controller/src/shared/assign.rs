//! The pod reconciler of shared mode: gives a pod bound to a shared node a
//! free IP from the node's books and records it in the pod's annotation.
//! No cloud call is made here: an empty pool puts the pod on the node's
//! waiting list and wakes the upkeep, which assigns IPs and sends the pod
//! back. A recorded allocation is taken as the pod's own only when it names
//! this pod's uid, its node, and an IP the books have on that node's ENI;
//! anything else (a copy from another pod's YAML, a hand-written one, an IP
//! that went away) gets a new IP.

use super::{PodNode, SharedMode};
use crate::eni::error::PodError;
use crate::eni::record;
use crate::eni::request::pod_key;
use ipam::allocation::PodAllocation;
use ipam::ids::EniId;
use ipam::ledger::ClaimError;
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;
use kube::ResourceExt;
use std::net::Ipv4Addr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

/// How soon a pod bound to a node the node cache does not show yet is
/// looked at again.
const NODE_UNSEEN_RETRY: Duration = Duration::from_secs(1);

/// What one pass decided, made under the books' lock.
enum Next {
    /// The recorded allocation is the pod's and in the books.
    Done,
    /// The books are not rebuilt yet for this node.
    NotReady,
    /// Record this allocation.
    Write(PodAllocation),
    /// Nothing free: the pod waits; with the reason when the pool cannot grow.
    Wait(Option<String>),
}

pub(super) async fn reconcile(pod: Arc<Pod>, mode: Arc<SharedMode>) -> Result<Action, PodError> {
    let node = match mode.pod_node(&pod) {
        PodNode::Shared(node) => node,
        PodNode::NotOurs => return Ok(Action::await_change()),
        PodNode::Unseen => return Ok(Action::requeue(NODE_UNSEEN_RETRY)),
    };
    let Some(uid) = pod.uid() else {
        return Ok(Action::await_change());
    };
    if !mode.pods_listed.load(Ordering::Acquire) {
        return Ok(Action::requeue(Duration::from_millis(500)));
    }
    let started = mode.ctx.clock.now();
    let next = decide(&mode, &pod, &node, &uid);
    tracing::debug!(pod = %pod_key(&pod), node, next = next.name(), "shared pod reconciled");
    match next {
        Next::Done => Ok(Action::await_change()),
        Next::NotReady => {
            mode.wake.notify_one();
            Ok(Action::requeue(Duration::from_millis(500)))
        }
        Next::Write(allocation) => {
            // On failure the IP stays the pod's in the books (the write may
            // have landed); the retry writes the same IP again, and if the
            // pod is gone the upkeep takes it back with its cool-down.
            record::write_allocation(&mode.ctx.client, &pod, &allocation).await?;
            tracing::debug!(pod = %pod_key(&pod), "shared allocation recorded");
            mode.lifecycle
                .steps()
                .reached(crate::eni::Step::Annotated, &pod_key(&pod))
                .await;
            let waited = mode.pools.first_seen.lock().remove(&uid);
            let took = waited.map_or(started.elapsed(), |t| t.elapsed());
            mode.metrics.allocated(&node, took);
            tracing::info!(pod = %pod_key(&pod), ip = %allocation.first.ip, eni = %allocation.first.eni_id, took_ms = took.as_millis() as u64, "shared IP assigned");
            mode.ctx
                .events
                .publish(
                    &crate::events::object_ref(pod.as_ref()),
                    false,
                    "AllocIPSucceed",
                    "AllocateIP",
                    format!(
                        "IP {} of shared ENI {} (subnet {}) on node {node}",
                        allocation.first.ip, allocation.first.eni_id, allocation.first.subnet_id
                    ),
                )
                .await;
            Ok(Action::await_change())
        }
        Next::Wait(starved) => {
            mode.pools.first_seen.lock().entry(uid).or_insert(started);
            mode.wake.notify_one();
            match starved {
                Some(why) => {
                    mode.ctx
                        .events
                        .publish(
                            &crate::events::object_ref(pod.as_ref()),
                            true,
                            "AllocIPFailed",
                            "AllocateIP",
                            format!("no free shared-ENI IP on node {node}: {why}"),
                        )
                        .await;
                    Ok(Action::requeue(Duration::from_secs(30)))
                }
                // The upkeep sends the pod back once IPs arrive; this is
                // only the fallback.
                None => Ok(Action::requeue(Duration::from_secs(10))),
            }
        }
    }
}

impl Next {
    fn name(&self) -> &'static str {
        match self {
            Next::Done => "done",
            Next::NotReady => "books not ready",
            Next::Write(_) => "record",
            Next::Wait(None) => "wait for the pool",
            Next::Wait(Some(_)) => "wait, pool starved",
        }
    }
}

fn decide(mode: &SharedMode, pod: &Pod, node: &str, uid: &str) -> Next {
    let recorded = PodAllocation::from_annotations(pod.annotations())
        .filter(|a| a.is_shared() && a.pod_uid.as_deref() == Some(uid) && a.first.node == node);
    let mut nodes = mode.pools.nodes.lock();
    let Some(st) = nodes.get_mut(node) else {
        return Next::NotReady;
    };
    if !st.synced || !st.claimed {
        return Next::NotReady;
    }
    if let Some(rec) = recorded {
        let eni = EniId::new(rec.first.eni_id.clone());
        match rec.first.ip.parse::<Ipv4Addr>() {
            Ok(ip) => match st.ledger.claim(uid, &eni, ip) {
                Ok(()) => {
                    st.waiting.remove(uid);
                    return Next::Done;
                }
                Err(ClaimError::HoldsAnother { .. }) => {
                    // The books gave this pod another IP (its record is
                    // older): the books win, the record is rewritten.
                }
                Err(e) => {
                    tracing::warn!(pod = %pod_key(pod), error = %e, "recorded shared IP not usable; assigning another");
                }
            },
            Err(_) => {
                tracing::warn!(pod = %pod_key(pod), ip = %rec.first.ip, "recorded shared IP does not parse; assigning another");
            }
        }
    }
    match st.ledger.take(uid) {
        Some((eni, ip)) => match st.allocation(node, uid, &eni, ip) {
            Some(a) => {
                st.waiting.remove(uid);
                Next::Write(a)
            }
            // Not reachable: every ENI in the books has its record.
            None => Next::NotReady,
        },
        None => {
            st.waiting.insert(uid.to_owned(), ObjectRef::from_obj(pod));
            Next::Wait(st.starved.clone())
        }
    }
}

pub(super) fn error_policy(pod: Arc<Pod>, error: &PodError, mode: Arc<SharedMode>) -> Action {
    tracing::warn!(pod = %pod_key(&pod), error = %error, "shared IP not recorded; retrying");
    let _ = mode;
    Action::requeue(Duration::from_secs(2))
}
