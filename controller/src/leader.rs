//! Leader election on a `coordination.k8s.io/v1` Lease: only the holder of the
//! lease runs the reconcilers, a standby takes over once the holder stops
//! renewing for a lease duration, and a leader that cannot renew in time steps
//! down before anyone else may take over, so two replicas never write at once.
//!
//! Every duration is measured on this process's monotonic clock, never by
//! comparing the holder's `renewTime` with local wall time (clocks of two
//! machines disagree): a standby calls the Lease expired once it has seen the
//! same holder and `renewTime` for a whole lease duration; a leader's
//! [`Fence`] stays open for 2/3 of the duration counted from when its last
//! successful renewal was *sent*, and a renewal that hangs (a half-open
//! connection) is abandoned when the fence closes.

use crate::fence::Fence;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, PostParams};
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

#[derive(Clone, Debug)]
pub struct LeaseSettings {
    pub name: String,
    pub namespace: String,
    pub identity: String,
    pub lease_duration: Duration,
    pub renew_interval: Duration,
}

/// What one election round concluded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Round {
    Leading,
    /// Someone else holds a live lease.
    Following {
        holder: String,
    },
}

/// Another holder's record in the Lease: (holder, renewTime).
type HolderRecord = (String, Option<String>);

pub struct LeaderElector {
    api: Api<Lease>,
    settings: LeaseSettings,
    /// Another holder's record (holder, renewTime) as last seen, and when it
    /// was first seen unchanged, on the monotonic clock.
    observed: parking_lot::Mutex<Option<(HolderRecord, Instant)>>,
}

impl LeaderElector {
    pub fn new(client: kube::Client, settings: LeaseSettings) -> Self {
        let api = Api::namespaced(client, &settings.namespace);
        Self {
            api,
            settings,
            observed: parking_lot::Mutex::new(None),
        }
    }

    /// Whether the other holder's record has not changed for `duration`,
    /// as this process has watched it.
    fn unchanged_for(&self, record: HolderRecord, duration: Duration) -> bool {
        let now = Instant::now();
        let mut observed = self.observed.lock();
        match observed.as_ref() {
            Some((seen, since)) if *seen == record => now.duration_since(*since) >= duration,
            _ => {
                *observed = Some((record, now));
                false
            }
        }
    }

    /// One round: create the lease, renew ours, or take over an expired one.
    /// A 409 from a racing replica means we lost this round.
    pub async fn round(&self) -> Result<Round, kube::Error> {
        let s = &self.settings;
        let now = MicroTime(Timestamp::now());
        let secs = i32::try_from(s.lease_duration.as_secs()).unwrap_or(i32::MAX);
        match self.api.get_opt(&s.name).await? {
            None => {
                let lease = Lease {
                    metadata: ObjectMeta {
                        name: Some(s.name.clone()),
                        namespace: Some(s.namespace.clone()),
                        ..ObjectMeta::default()
                    },
                    spec: Some(LeaseSpec {
                        holder_identity: Some(s.identity.clone()),
                        lease_duration_seconds: Some(secs),
                        acquire_time: Some(now.clone()),
                        renew_time: Some(now),
                        lease_transitions: Some(0),
                        ..LeaseSpec::default()
                    }),
                };
                match self.api.create(&PostParams::default(), &lease).await {
                    Ok(_) => Ok(Round::Leading),
                    Err(kube::Error::Api(e)) if e.code == 409 => Ok(Round::Following {
                        holder: "(racing replica)".into(),
                    }),
                    Err(e) => Err(e),
                }
            }
            Some(mut lease) => {
                let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
                let holder = spec.holder_identity.clone().unwrap_or_default();
                let duration = Duration::from_secs(
                    u64::try_from(spec.lease_duration_seconds.unwrap_or(secs)).unwrap_or(0),
                );
                if holder != s.identity && !holder.is_empty() {
                    let record = (
                        holder.clone(),
                        spec.renew_time.as_ref().map(|t| t.0.to_string()),
                    );
                    if !self.unchanged_for(record, duration) {
                        return Ok(Round::Following { holder });
                    }
                }
                if holder != s.identity {
                    spec.holder_identity = Some(s.identity.clone());
                    spec.acquire_time = Some(now.clone());
                    spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
                    tracing::info!(previous = %holder, "taking over expired lease");
                }
                spec.lease_duration_seconds = Some(secs);
                spec.renew_time = Some(now);
                match self
                    .api
                    .replace(&s.name, &PostParams::default(), &lease)
                    .await
                {
                    Ok(_) => Ok(Round::Leading),
                    Err(kube::Error::Api(e)) if e.code == 409 => Ok(Round::Following {
                        holder: "(racing replica)".into(),
                    }),
                    Err(e) => Err(e),
                }
            }
        }
    }

    /// Run election rounds until `shutdown`. `leading` turns true when we hold
    /// the lease and false as soon as we might not: a leader that has not
    /// renewed for 2/3 of the lease duration steps down, well before a standby
    /// may take over (after the full duration).
    pub async fn run(
        self,
        leading: watch::Sender<bool>,
        health: crate::server::Health,
        fence: Fence,
        shutdown: CancellationToken,
    ) {
        let step_down_after = self.settings.lease_duration * 2 / 3;
        loop {
            health.election_alive();
            let sent = Instant::now();
            // A round never outlives this replica's right to write: a hung
            // renewal is abandoned when the fence closes.
            let deadline = fence
                .closes_at()
                .filter(|_| *leading.borrow())
                .unwrap_or(sent + step_down_after);
            let round = tokio::select! {
                _ = shutdown.cancelled() => break,
                r = tokio::time::timeout_at(deadline, self.round()) => match r {
                    Ok(r) => r.map_err(|e| e.to_string()),
                    Err(_) => Err("no answer from the apiserver in time".to_owned()),
                },
            };
            health.set_kube_ok(round.is_ok());
            match round {
                Ok(Round::Leading) => {
                    if !*leading.borrow() {
                        tracing::info!(identity = %self.settings.identity, "became leader");
                    }
                    fence.extend_to(sent + step_down_after);
                    leading.send_replace(true);
                }
                Ok(Round::Following { holder }) => {
                    if *leading.borrow() {
                        tracing::warn!(%holder, "lost the lease");
                    }
                    fence.close();
                    leading.send_replace(false);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "lease round failed");
                    if !fence.is_open() && *leading.borrow() {
                        tracing::warn!("cannot renew the lease in time: stepping down");
                        leading.send_replace(false);
                    }
                }
            }
            let next = Instant::now() + self.settings.renew_interval;
            let wake = match fence.closes_at().filter(|_| *leading.borrow()) {
                // Wake when the fence closes too, to step down on time.
                Some(closes) => next.min(closes),
                None => next,
            };
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep_until(wake) => {}
            }
            if *leading.borrow() && !fence.is_open() {
                tracing::warn!("the lease was not renewed in time: stepping down");
                leading.send_replace(false);
            }
        }
        fence.close();
        if *leading.borrow() {
            // Give the lease up so a standby takes over at once.
            leading.send_replace(false);
            if let Ok(Some(mut lease)) = self.api.get_opt(&self.settings.name).await {
                if let Some(spec) = lease.spec.as_mut() {
                    if spec.holder_identity.as_deref() == Some(&self.settings.identity) {
                        spec.holder_identity = None;
                        spec.renew_time = None;
                        let _ = self
                            .api
                            .replace(&self.settings.name, &PostParams::default(), &lease)
                            .await;
                    }
                }
            }
        }
    }
}
