//! The cloud calls a pool plan asks for, one node at a time: assign IPs to
//! attached shared ENIs (at most the cloud's per-call limit each), create
//! and attach new shared ENIs (in the zone's subnet with most free IPs,
//! tagged as ours with the mode tag, their first IPs assigned at create),
//! unassign free IPs, detach and delete ENIs no pod uses; plus the
//! listing's finds: attach an ENI whose create was not followed by its
//! attach, release an orphan. Every result goes into the node's books as
//! soon as the cloud answers; a failure that means the pool cannot grow is
//! kept as the node's `starved` reason for the waiting pods' Events.

use super::state::EniMeta;
use super::SharedMode;
use crate::eni::Step;
use ipam::eni::{eni_client_token, shared_eni_tags};
use ipam::ids::{EniId, IdempotencyToken};
use providers::model::{CreateEniRequest, Eni};
use providers::{CloudError, ErrorKind};
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tokio::sync::Semaphore;

/// Distinguishes the client tokens of one process's creates and assigns.
static SEQ: AtomicU64 = AtomicU64::new(0);

fn token(kind: &str, node: &str) -> IdempotencyToken {
    let n = SEQ.fetch_add(1, Ordering::Relaxed);
    let started = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros())
        .unwrap_or_default();
    // Unique per logical call; the call wrapper reuses it on retries.
    eni_client_token(&format!("{kind}{node}"), (started as u64) ^ (n << 48))
}

pub(super) fn spawn_grow(
    mode: &Arc<SharedMode>,
    slots: Arc<Semaphore>,
    node: String,
    assign: Vec<(EniId, u32)>,
    new_enis: Vec<u32>,
) {
    let mode = mode.clone();
    tokio::spawn(async move {
        let _slot = slots.acquire_owned().await;
        let starved = bounded(&mode, &node, grow(&mode, &node, assign, new_enis))
            .await
            .flatten();
        tracing::debug!(node, ?starved, "pool grown");
        finish(&mode, &node, starved);
    });
}

pub(super) fn spawn_shrink(
    mode: &Arc<SharedMode>,
    slots: Arc<Semaphore>,
    node: String,
    release: Vec<(EniId, Vec<Ipv4Addr>)>,
    delete_enis: Vec<EniId>,
) {
    let mode = mode.clone();
    tokio::spawn(async move {
        let _slot = slots.acquire_owned().await;
        bounded(&mode, &node, shrink(&mode, &node, release, delete_enis)).await;
        finish(&mode, &node, None);
    });
}

/// An action that has not ended well past every wait it makes (attach and
/// detach timeouts, the call wrapper's retries) is given up, so one stuck
/// call cannot keep a node's pool from changing for good; what it did is
/// found by the next listing.
async fn bounded<T>(
    mode: &SharedMode,
    node: &str,
    action: impl std::future::Future<Output = T>,
) -> Option<T> {
    let limit = std::time::Duration::from_secs(
        u64::from(mode.ctx.config.eni.attach_timeout_seconds) * 3 + 60,
    );
    match tokio::time::timeout(limit, action).await {
        Ok(v) => Some(v),
        Err(_) => {
            tracing::warn!(
                node,
                seconds = limit.as_secs(),
                "a shared pool change did not end in time; the next listing picks up what it did"
            );
            None
        }
    }
}

/// The action ended: the node may be planned again, waiting pods retried.
fn finish(mode: &SharedMode, node: &str, starved: Option<String>) {
    let mut nodes = mode.pools.nodes.lock();
    if let Some(st) = nodes.get_mut(node) {
        st.busy = false;
        st.starved = starved;
        if st.ledger.counts().0 > 0 {
            for (_, pod) in st.waiting.drain() {
                let _ = mode.retry.send(pod);
            }
        }
    }
    drop(nodes);
    mode.wake.notify_one();
}

/// Why the pool cannot grow, from the cloud's answer, when that is the
/// meaning of the error.
fn starved_by(e: &CloudError, what: &str) -> Option<String> {
    match e.kind {
        ErrorKind::SubnetExhausted => Some(format!("{what}: the subnet has no free IP left ({e})")),
        ErrorKind::LimitExceeded { .. } | ErrorKind::QuotaExceeded => {
            Some(format!("{what}: a cloud limit is reached ({e})"))
        }
        _ => None,
    }
}

async fn grow(
    mode: &SharedMode,
    node: &str,
    assign: Vec<(EniId, u32)>,
    new_enis: Vec<u32>,
) -> Option<String> {
    let cloud = &mode.ctx.cloud;
    for (eni, count) in assign {
        match cloud
            .assign_private_ips(&eni, count, &token("a", node))
            .await
        {
            Ok(ips) => {
                mode.lifecycle
                    .steps()
                    .reached(Step::IpsAssigned, node)
                    .await;
                mode.metrics.assigned(ips.len());
                if let Some(st) = mode.pools.nodes.lock().get_mut(node) {
                    st.ledger.add_ips(&eni, &ips);
                }
            }
            Err(e) => {
                tracing::warn!(node, eni = %eni, error = %e, "assigning shared IPs failed");
                return starved_by(&e, &format!("assigning IPs to {eni}"));
            }
        }
    }
    // New ENIs of one plan are made side by side: each waits for its own
    // attach, and the plan never asks for more than the node has slots for.
    let made =
        futures::future::join_all(new_enis.into_iter().map(|count| new_eni(mode, node, count)))
            .await;
    made.into_iter().find_map(|r| r.err()).flatten()
}

/// Create, attach and book one shared ENI with `count` IPs.
async fn new_eni(mode: &SharedMode, node: &str, count: u32) -> Result<(), Option<String>> {
    let cloud = &mode.ctx.cloud;
    let config = &mode.ctx.config;
    let zone = {
        let nodes = mode.pools.nodes.lock();
        nodes.get(node).ok_or(None)?.zone.clone()
    };
    let subnet = mode
        .subnets
        .choose(cloud.as_ref(), &zone, config.shared_subnets())
        .await
        .map_err(|e| Some(format!("no subnet for a shared ENI: {e}")))?;
    let mut tags = config.eni.tags.clone();
    tags.extend(shared_eni_tags(mode.ctx.cluster(), node));
    let request = CreateEniRequest {
        subnet_id: subnet.clone(),
        security_groups: config.shared_security_groups().to_vec(),
        secondary_ip_count: count,
        tags,
        description: format!("vpc-eni-controller shared ENI of node {node}"),
        idempotency_token: token("c", node),
    };
    let created = match cloud.create_eni(&request).await {
        Ok(e) => e,
        Err(e) => {
            mode.subnets.create_failed(&subnet, &zone, &e);
            tracing::warn!(node, subnet = %subnet, error = %e, "creating a shared ENI failed");
            return Err(starved_by(
                &e,
                &format!("creating a shared ENI in {subnet}"),
            ));
        }
    };
    mode.lifecycle.created(node).await;
    mode.subnets.took_one(&subnet);
    mode.metrics.assigned(created.secondary_ips.len());
    tracing::info!(node, eni = %created.id, ips = created.secondary_ips.len(), "shared ENI created");
    attach_and_book(mode, node, created).await
}

/// Attach a created shared ENI to the node's instance and put it in the
/// books. An ENI that cannot be attached is deleted again, so nothing leaks.
async fn attach_and_book(mode: &SharedMode, node: &str, eni: Eni) -> Result<(), Option<String>> {
    let instance = {
        let nodes = mode.pools.nodes.lock();
        nodes.get(node).ok_or(None)?.instance.clone()
    };
    tracing::debug!(node, eni = %eni.id, "attaching a shared ENI");
    let attached = match mode.lifecycle.attach(eni.clone(), &instance, node).await {
        Ok(a) => a,
        Err(e) => {
            tracing::warn!(node, eni = %eni.id, error = %e, "attaching a shared ENI failed; deleting it");
            if matches!(e.kind, ErrorKind::LimitExceeded { .. }) {
                // Slots were taken meanwhile (exclusive ENIs, someone
                // else's): count them again before the next plan.
                recount_slots(mode, node, &instance).await;
            }
            if let Err(r) = mode.lifecycle.release(&eni, node, false).await {
                tracing::warn!(eni = %eni.id, error = %r, "deleting the unattached shared ENI failed; GC retries");
            }
            return Err(starved_by(&e, &format!("attaching shared ENI {}", eni.id)));
        }
    };
    tracing::debug!(node, eni = %attached.id, "shared ENI in use");
    let subnet = mode
        .subnets
        .get(mode.ctx.cloud.as_ref(), &attached.subnet_id)
        .await
        .map_err(|e| {
            tracing::warn!(eni = %attached.id, error = %e, "subnet of the new shared ENI unknown; the next listing books it");
            None
        })?;
    tracing::debug!(node, eni = %attached.id, "booking the shared ENI");
    let mut nodes = mode.pools.nodes.lock();
    let st = nodes.get_mut(node).ok_or(None)?;
    st.enis.insert(
        attached.id.clone(),
        EniMeta {
            mac: attached.mac.clone(),
            subnet_id: subnet.id.clone(),
            subnet_cidr: subnet.cidr.to_string(),
            gateway: subnet.gateway.to_string(),
        },
    );
    // IPs assigned at create: free at once. Any the cloud shows beyond them
    // come in through the next listing, cooling.
    st.ledger
        .add_eni(attached.id.clone(), st.ips_per_eni, &attached.secondary_ips);
    Ok(())
}

/// ENIs on the instance that are not the node's shared ENIs, as the cloud
/// lists them now.
async fn recount_slots(mode: &SharedMode, node: &str, instance: &ipam::ids::InstanceId) {
    match mode.ctx.cloud.describe_instance(instance).await {
        Ok(i) => {
            if let Some(st) = mode.pools.nodes.lock().get_mut(node) {
                let ours = i
                    .enis
                    .iter()
                    .filter(|a| st.enis.contains_key(&a.eni_id))
                    .count();
                st.other_enis = u32::try_from(i.enis.len() - ours).unwrap_or(u32::MAX);
            }
        }
        Err(e) => tracing::warn!(node, error = %e, "describing the instance failed"),
    }
}

async fn shrink(
    mode: &SharedMode,
    node: &str,
    release: Vec<(EniId, Vec<Ipv4Addr>)>,
    delete_enis: Vec<EniId>,
) {
    let cloud = &mode.ctx.cloud;
    for id in delete_enis {
        let drained = {
            let mut nodes = mode.pools.nodes.lock();
            match nodes.get_mut(node) {
                Some(st) => {
                    let gone = st.ledger.drain(&id);
                    if gone {
                        st.enis.remove(&id);
                    }
                    gone
                }
                None => false,
            }
        };
        if !drained {
            continue;
        }
        match mode.lifecycle.by_ids(vec![id.clone()]).await {
            Ok(found) => {
                for eni in found {
                    let ips = eni.secondary_ips.len();
                    match mode.lifecycle.release(&eni, node, false).await {
                        Ok(()) => {
                            mode.metrics.unassigned(ips);
                            tracing::info!(node, eni = %eni.id, "shared ENI no pod uses released");
                        }
                        Err(e) => {
                            tracing::warn!(node, eni = %eni.id, error = %e, "releasing a shared ENI failed; the listing finds it again")
                        }
                    }
                }
            }
            Err(e) => {
                tracing::warn!(node, eni = %id, error = %e, "describing a shared ENI to release failed")
            }
        }
    }
    for (eni, ips) in release {
        let removed = {
            let mut nodes = mode.pools.nodes.lock();
            match nodes.get_mut(node) {
                Some(st) => st.ledger.remove_free(&eni, &ips),
                None => Vec::new(),
            }
        };
        if removed.is_empty() {
            continue;
        }
        match cloud.unassign_private_ips(&eni, &removed).await {
            Ok(()) => {
                mode.lifecycle
                    .steps()
                    .reached(Step::IpsUnassigned, node)
                    .await;
                mode.metrics.unassigned(removed.len());
            }
            // Out of the books either way: if they are still on the ENI the
            // next listing brings them back, cooling.
            Err(e) => tracing::warn!(node, eni = %eni, error = %e, "unassigning shared IPs failed"),
        }
    }
}

/// An ENI created for a node and never attached (the controller stopped in
/// between): attach it now.
pub(super) fn spawn_adopt(mode: &Arc<SharedMode>, node: String, eni: Eni) {
    {
        let mut nodes = mode.pools.nodes.lock();
        match nodes.get_mut(&node) {
            Some(st) if !st.busy => st.busy = true,
            _ => return,
        }
    }
    let mode = mode.clone();
    tokio::spawn(async move {
        tracing::info!(node = %node, eni = %eni.id, "attaching a shared ENI whose create was not followed by an attach");
        let starved = bounded(&mode, &node, attach_and_book(&mode, &node, eni))
            .await
            .and_then(|r| r.err().flatten());
        finish(&mode, &node, starved);
    });
}

/// A shared ENI of ours that no node holds and no pod names.
pub(super) fn spawn_release_orphan(mode: &Arc<SharedMode>, eni: Eni) {
    let mode = mode.clone();
    tokio::spawn(async move {
        match mode.lifecycle.release(&eni, "gc", true).await {
            Ok(()) => {
                tracing::info!(eni = %eni.id, "orphaned shared ENI released");
                mode.metrics.unassigned(eni.secondary_ips.len());
            }
            Err(e) => {
                tracing::warn!(eni = %eni.id, error = %e, "releasing an orphaned shared ENI failed; next pass retries")
            }
        }
    });
}
