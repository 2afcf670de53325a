//! Waits for ENIs to reach a state (InUse after attach, Available after
//! detach) with one batched describe call per poll for every ENI anyone is
//! waiting on, instead of one poll loop per ENI: a burst of 300 attaches
//! costs a few describe calls per interval, not 300.

use ipam::ids::EniId;
use providers::model::{Eni, EniFilter, EniStatus};
use providers::{Cloud, CloudError, CloudResult, ErrorKind};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

const API: &str = "DescribeNetworkInterfaces";

struct Wait {
    eni: EniId,
    want: EniStatus,
    deadline: Instant,
    reply: oneshot::Sender<CloudResult<Eni>>,
}

/// Handle to the shared poller.
#[derive(Clone)]
pub struct Waiter {
    tx: mpsc::UnboundedSender<Wait>,
    timeout: Duration,
}

impl Waiter {
    /// Start the poller; it stops with `shutdown`.
    pub fn start(
        cloud: Arc<dyn Cloud>,
        interval: Duration,
        timeout: Duration,
        shutdown: CancellationToken,
    ) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(poll_loop(cloud, interval, rx, shutdown));
        Self { tx, timeout }
    }

    /// How long one wait lasts at most.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Wait until `eni` reports `want`. `NotFound` if it disappears,
    /// `Transient` when the timeout runs out.
    pub async fn wait(&self, eni: &EniId, want: EniStatus) -> CloudResult<Eni> {
        let (reply, rx) = oneshot::channel();
        let wait = Wait {
            eni: eni.clone(),
            want,
            deadline: Instant::now() + self.timeout,
            reply,
        };
        let stopped = || {
            CloudError::new(
                ErrorKind::Transient,
                API,
                "Shutdown",
                format!("stopped waiting for {eni}: the controller is shutting down"),
            )
        };
        self.tx.send(wait).map_err(|_| stopped())?;
        rx.await.unwrap_or_else(|_| Err(stopped()))
    }
}

async fn poll_loop(
    cloud: Arc<dyn Cloud>,
    interval: Duration,
    mut rx: mpsc::UnboundedReceiver<Wait>,
    shutdown: CancellationToken,
) {
    let mut pending: Vec<Wait> = Vec::new();
    loop {
        if pending.is_empty() {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                next = rx.recv() => match next {
                    Some(w) => pending.push(w),
                    None => return,
                },
            }
        }
        // Give the cloud one interval before the first look: nothing attaches
        // instantly, and waits that arrive meanwhile join this poll.
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(interval) => {}
        }
        while let Ok(w) = rx.try_recv() {
            pending.push(w);
        }
        pending.retain(|w| !w.reply.is_closed());
        if pending.is_empty() {
            continue;
        }
        let mut ids: Vec<EniId> = pending.iter().map(|w| w.eni.clone()).collect();
        ids.sort();
        ids.dedup();
        let filter = EniFilter {
            eni_ids: ids,
            ..EniFilter::default()
        };
        let answer = match cloud.describe_enis(&filter).await {
            Ok(enis) => enis,
            Err(e) => {
                // The call wrapper already retried. An error that cannot pass
                // goes to every waiter; otherwise keep waiting, but not past
                // anyone's deadline (they may hold an instance's lock).
                let now = Instant::now();
                let (done, still): (Vec<Wait>, Vec<Wait>) = pending
                    .drain(..)
                    .partition(|w| !e.kind.is_retryable() || now >= w.deadline);
                for w in done {
                    let _ = w.reply.send(Err(e.clone()));
                }
                pending = still;
                continue;
            }
        };
        let by_id: HashMap<&EniId, &Eni> = answer.iter().map(|e| (&e.id, e)).collect();
        let now = Instant::now();
        let mut still = Vec::with_capacity(pending.len());
        for w in pending.drain(..) {
            match by_id.get(&w.eni) {
                None => {
                    let _ = w.reply.send(Err(CloudError::new(
                        ErrorKind::NotFound,
                        API,
                        "InvalidEniId.NotFound",
                        format!("ENI {} disappeared while waiting for {:?}", w.eni, w.want),
                    )));
                }
                Some(e) if e.status == w.want => {
                    let _ = w.reply.send(Ok((*e).clone()));
                }
                Some(e) if now >= w.deadline => {
                    let _ = w.reply.send(Err(CloudError::new(
                        ErrorKind::Transient,
                        API,
                        "WaitTimeout",
                        format!(
                            "ENI {} still {:?}, expected {:?}: gave up waiting",
                            w.eni, e.status, w.want
                        ),
                    )));
                }
                Some(_) => still.push(w),
            }
        }
        pending = still;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ipam::ids::{IdempotencyToken, InstanceId, SecurityGroupId, SubnetId};
    use mocks::cloud::faults::{ApiFault, FaultKind};
    use mocks::cloud::{MemCloud, World, EXAMPLE_YAML};
    use providers::call::CallPolicy;
    use providers::model::CreateEniRequest;

    const API_NAME: &str = "DescribeNetworkInterfaces";

    async fn eni(cloud: &MemCloud, token: &str) -> EniId {
        let request = CreateEniRequest {
            subnet_id: SubnetId::new("vsw-h"),
            security_groups: vec![SecurityGroupId::new("sg-1")],
            secondary_ip_count: 0,
            tags: Default::default(),
            description: "waiter test".into(),
            idempotency_token: IdempotencyToken::new(token),
        };
        cloud.create_eni(&request).await.unwrap().id
    }

    #[tokio::test]
    async fn concurrent_waits_share_one_describe_per_poll() {
        let world =
            World::from_yaml(&EXAMPLE_YAML.replace("faults: {}", "faults: {attachDelayMs: 300}"))
                .unwrap();
        let cloud = Arc::new(MemCloud::new(world.clone(), CallPolicy::default()));
        let a = eni(&cloud, "tok-a").await;
        let b = eni(&cloud, "tok-b").await;
        let instance = InstanceId::new("i-1");
        cloud.attach_eni(&a, &instance).await.unwrap();
        cloud.attach_eni(&b, &instance).await.unwrap();
        let before = world.calls().get(API_NAME).copied().unwrap_or(0);
        let token = CancellationToken::new();
        let waiter = Waiter::start(
            cloud.clone(),
            Duration::from_millis(100),
            Duration::from_secs(30),
            token.clone(),
        );
        let (ra, rb) = tokio::join!(
            waiter.wait(&a, EniStatus::InUse),
            waiter.wait(&b, EniStatus::InUse)
        );
        assert_eq!(ra.unwrap().status, EniStatus::InUse);
        assert_eq!(rb.unwrap().status, EniStatus::InUse);
        let polls = world.calls().get(API_NAME).copied().unwrap_or(0) - before;
        // Two ENIs, a 300 ms attach, 100 ms polls: one call per poll for
        // both, so a handful, never one loop per ENI (which doubles it).
        assert!((1..=6).contains(&polls), "{polls} describe calls");
        // A deleted ENI is reported as gone, not waited on forever.
        let c = eni(&cloud, "tok-c").await;
        cloud.delete_eni(&c).await.unwrap();
        let gone = waiter.wait(&c, EniStatus::InUse).await.unwrap_err();
        assert_eq!(gone.kind, ErrorKind::NotFound);
        token.cancel();
    }

    #[tokio::test(start_paused = true)]
    async fn a_wait_ends_at_its_deadline_even_while_every_describe_fails() {
        let world = World::from_yaml(EXAMPLE_YAML).unwrap();
        let cloud = Arc::new(MemCloud::new(
            world.clone(),
            CallPolicy {
                max_tries: 2,
                ..CallPolicy::default()
            },
        ));
        let a = eni(&cloud, "tok-a").await;
        world.set_fault(
            API_NAME,
            Some(ApiFault {
                error_rate: 1.0,
                error_kind: FaultKind::Throttled,
                ..ApiFault::default()
            }),
        );
        let token = CancellationToken::new();
        let waiter = Waiter::start(
            cloud,
            Duration::from_millis(500),
            Duration::from_secs(5),
            token.clone(),
        );
        let started = Instant::now();
        let err = tokio::time::timeout(Duration::from_secs(60), waiter.wait(&a, EniStatus::InUse))
            .await
            .expect("the wait never ended")
            .unwrap_err();
        assert_eq!(err.kind, ErrorKind::Throttled);
        // It gave up at the deadline (paused clock: exact), not never.
        assert!(started.elapsed() >= Duration::from_secs(5));
        assert!(started.elapsed() < Duration::from_secs(30));
        token.cancel();
    }
}
