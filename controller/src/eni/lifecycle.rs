//! The life of one ENI in the cloud: listed by our tags, created, attached
//! and waited InUse, detached, waited Available and deleted. Attaches and
//! detaches on one instance run concurrently up to a per-instance bound
//! (`eni.attachConcurrency`, a semaphore per instance held from the call
//! until the ENI settles): the clouds take only so many ENI operations in
//! flight on one instance and refuse more as a busy instance, a refusal
//! this module waits out with backoff. Each durable effect is reported to
//! the step hook so tests can stop the controller right after it.

use super::error::{Phase, PodError};
use super::steps::{Step, Steps};
use super::waiter::Waiter;
use ipam::backoff::Backoff;
use ipam::eni::{is_owned, is_shared, pod_uid_of, tag};
use ipam::ids::{ClusterId, EniId, InstanceId};
use providers::model::{CreateEniRequest, Eni, EniFilter, EniStatus};
use providers::{Cloud, CloudError, CloudResult, ErrorKind};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

/// Pace of new attach requests after the cloud refused one as a conflict
/// (a busy instance) beyond the call wrapper's own retries.
const REFUSED: Backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(10));

pub struct Lifecycle {
    cloud: Arc<dyn Cloud>,
    cluster: ClusterId,
    waiter: Waiter,
    steps: Steps,
    /// ENI operations one instance may have in flight from us at once.
    per_instance: usize,
    /// How long a refused attach is tried again before the error goes up.
    refused_patience: Duration,
    instance_slots: parking_lot::Mutex<HashMap<InstanceId, Arc<Semaphore>>>,
}

/// The filter for every ENI `cluster` owns, or only one pod's (the cloud's
/// filter: check the tags again with `ipam::eni::is_owned`).
pub fn owned_filter(cluster: &ClusterId, pod_uid: Option<&str>) -> EniFilter {
    let mut tags = BTreeMap::from([
        (tag::CREATOR.to_owned(), tag::CREATOR_VALUE.to_owned()),
        (tag::CLUSTER.to_owned(), cluster.as_str().to_owned()),
    ]);
    if let Some(uid) = pod_uid {
        tags.insert(tag::POD_UID.to_owned(), uid.to_owned());
    }
    EniFilter {
        tags,
        ..EniFilter::default()
    }
}

impl Lifecycle {
    /// A lifecycle with the default per-instance bound
    /// ([`crate::config::DEFAULT_ATTACH_CONCURRENCY`]).
    pub fn new(cloud: Arc<dyn Cloud>, cluster: ClusterId, waiter: Waiter, steps: Steps) -> Self {
        let refused_patience = waiter.timeout();
        Self {
            cloud,
            cluster,
            waiter,
            steps,
            per_instance: crate::config::DEFAULT_ATTACH_CONCURRENCY as usize,
            refused_patience,
            instance_slots: Default::default(),
        }
    }

    /// At most `n` (at least 1) ENI operations in flight per instance.
    pub fn with_attach_concurrency(mut self, n: u32) -> Self {
        self.per_instance = (n as usize).max(1);
        self
    }

    pub fn steps(&self) -> &Steps {
        &self.steps
    }

    /// The filter for every ENI this cluster owns, or only one pod's.
    pub fn owned_filter(&self, pod_uid: Option<&str>) -> EniFilter {
        owned_filter(&self.cluster, pod_uid)
    }

    /// Every exclusive ENI tagged as this cluster's (the cloud's filter,
    /// checked again here: a backend that ignored a filter must not make us
    /// touch others'). Shared-mode ENIs are left out: their mode keeps them.
    pub async fn owned(&self) -> CloudResult<Vec<Eni>> {
        let mut enis = self.cloud.describe_enis(&self.owned_filter(None)).await?;
        enis.retain(|e| is_owned(&e.tags, &self.cluster) && !is_shared(&e.tags));
        Ok(enis)
    }

    /// The ENIs with these ids that are ours.
    pub async fn by_ids(&self, ids: Vec<EniId>) -> CloudResult<Vec<Eni>> {
        let mut enis = self
            .cloud
            .describe_enis(&EniFilter {
                eni_ids: ids,
                ..EniFilter::default()
            })
            .await?;
        enis.retain(|e| is_owned(&e.tags, &self.cluster));
        Ok(enis)
    }

    /// Every ENI tagged for the pod `uid` (and truly ours); with `also_ids`,
    /// those ids are looked up by id too, because a listing by tag can lag
    /// behind a create (EC2).
    pub async fn of_pod(&self, uid: &str, also_ids: &[EniId]) -> CloudResult<Vec<Eni>> {
        let mine = |e: &Eni| is_owned(&e.tags, &self.cluster) && pod_uid_of(&e.tags) == Some(uid);
        let mut enis = self
            .cloud
            .describe_enis(&self.owned_filter(Some(uid)))
            .await?;
        enis.retain(mine);
        let unlisted: Vec<EniId> = also_ids
            .iter()
            .filter(|id| !enis.iter().any(|e| &e.id == *id))
            .cloned()
            .collect();
        if !unlisted.is_empty() {
            let found = self
                .cloud
                .describe_enis(&EniFilter {
                    eni_ids: unlisted,
                    ..EniFilter::default()
                })
                .await?;
            enis.extend(found.into_iter().filter(|e| mine(e)));
        }
        Ok(enis)
    }

    /// Create an ENI (not attached). The request carries our tags and a
    /// client token, so a retried or repeated create returns the same ENI.
    pub async fn create(&self, request: &CreateEniRequest, key: &str) -> CloudResult<Eni> {
        let eni = self.cloud.create_eni(request).await?;
        tracing::info!(eni = %eni.id, subnet = %request.subnet_id, pod = key, "ENI created");
        Ok(eni)
    }

    /// The step hook saw a created ENI the pod did not hold before.
    pub async fn created(&self, key: &str) {
        self.steps.reached(Step::EniCreated, key).await;
    }

    /// Attach `eni` to `instance` (if not yet) and wait until it is in use,
    /// holding one of the instance's slots from the call until then.
    pub async fn attach(&self, eni: Eni, instance: &InstanceId, key: &str) -> CloudResult<Eni> {
        if eni.instance_id.as_ref() == Some(instance) && eni.status == EniStatus::InUse {
            return Ok(eni);
        }
        let _slot = self.instance_slot(instance).await;
        if eni.instance_id.is_none() {
            self.request_attach(&eni.id, instance, key).await?;
            self.steps.reached(Step::AttachRequested, key).await;
        }
        let attached = self.waiter.wait(&eni.id, EniStatus::InUse).await?;
        self.steps.reached(Step::EniInUse, key).await;
        Ok(attached)
    }

    /// Ask the cloud to attach. A conflict the call wrapper's retries did not
    /// get past (the instance busy with more ENI operations than it takes,
    /// others' included) is waited out with backoff, up to the attach
    /// timeout; between tries the ENI is looked at once, so an attach whose
    /// answer was lost is seen taking effect rather than asked again.
    async fn request_attach(
        &self,
        id: &EniId,
        instance: &InstanceId,
        key: &str,
    ) -> CloudResult<()> {
        let deadline = Instant::now() + self.refused_patience;
        let mut refusals = 0u32;
        loop {
            let err = match self.cloud.attach_eni(id, instance).await {
                Ok(()) => return Ok(()),
                Err(e) if e.kind == ErrorKind::Conflict && Instant::now() < deadline => e,
                Err(e) => return Err(e),
            };
            refusals = refusals.saturating_add(1);
            let pause = REFUSED.after(refusals);
            tracing::debug!(eni = %id, %instance, pod = key, refusals, error = %err, ?pause, "attach refused as a conflict; trying again");
            tokio::time::sleep(pause).await;
            let now = self
                .cloud
                .describe_enis(&EniFilter {
                    eni_ids: vec![id.clone()],
                    ..EniFilter::default()
                })
                .await?;
            match now.first() {
                // Our attach took effect after all (its answer was lost).
                Some(e)
                    if e.instance_id.as_ref() == Some(instance)
                        && matches!(e.status, EniStatus::Attaching | EniStatus::InUse) =>
                {
                    return Ok(())
                }
                // Free, or on its way to free: ask again.
                Some(e) if e.instance_id.is_none() || e.status == EniStatus::Detaching => {}
                _ => return Err(err),
            }
        }
    }

    /// Detach (if attached), wait until available, delete. Refuses an ENI
    /// whose tags do not say it is ours.
    pub async fn release(&self, eni: &Eni, key: &str, gc: bool) -> Result<(), PodError> {
        if !is_owned(&eni.tags, &self.cluster) {
            return Err(PodError::NotOurs {
                eni: eni.id.clone(),
            });
        }
        let failed = PodError::cloud(Phase::Release);
        if let Some(instance) = &eni.instance_id {
            let _slot = self.instance_slot(instance).await;
            if eni.status != EniStatus::Detaching {
                self.cloud
                    .detach_eni(&eni.id, instance)
                    .await
                    .map_err(&failed)?;
                self.steps.reached(Step::DetachRequested, key).await;
            }
            if self.wait_available(&eni.id).await.map_err(&failed)? {
                return Ok(());
            }
            self.steps.reached(Step::EniDetached, key).await;
        } else if eni.status == EniStatus::Detaching
            && self.wait_available(&eni.id).await.map_err(&failed)?
        {
            return Ok(());
        }
        self.cloud.delete_eni(&eni.id).await.map_err(&failed)?;
        self.steps.reached(Step::EniDeleted, key).await;
        tracing::info!(eni = %eni.id, pod = key, gc, "ENI released");
        Ok(())
    }

    /// Wait until the ENI is available; `true` when it is gone already.
    async fn wait_available(&self, id: &EniId) -> Result<bool, CloudError> {
        match self.waiter.wait(id, EniStatus::Available).await {
            Ok(_) => Ok(false),
            Err(e) if e.kind == ErrorKind::NotFound => Ok(true),
            Err(e) => Err(e),
        }
    }

    /// One of the instance's slots for an ENI operation, waited for while
    /// all are taken. Semaphores nobody holds or waits for are dropped here,
    /// so the map does not grow with every node ever seen
    /// (`None` only if the semaphore were closed, which nothing does.)
    async fn instance_slot(&self, instance: &InstanceId) -> Option<OwnedSemaphorePermit> {
        let slots = {
            let mut slots = self.instance_slots.lock();
            slots.retain(|_, s| Arc::strong_count(s) > 1);
            slots
                .entry(instance.clone())
                .or_insert_with(|| Arc::new(Semaphore::new(self.per_instance)))
                .clone()
        };
        slots.acquire_owned().await.ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mocks::cloud::{World, EXAMPLE_YAML};
    use providers::ids::{IdempotencyToken, SecurityGroupId, SubnetId};
    use std::time::Duration;
    use tokio_util::sync::CancellationToken;

    async fn eni(cloud: &World, token: &str) -> Eni {
        let request = CreateEniRequest {
            subnet_id: SubnetId::new("vsw-h"),
            security_groups: vec![SecurityGroupId::new("sg-1")],
            secondary_ip_count: 0,
            tags: Default::default(),
            description: "lifecycle test".into(),
            idempotency_token: IdempotencyToken::new(token),
        };
        cloud.create_eni(&request).await.unwrap()
    }

    /// A world whose instance takes one ENI operation in flight, and two
    /// attaches to it at once through a lifecycle bound to `bound`; both
    /// must end in use.
    async fn two_attaches_on_a_busy_instance(bound: u32) -> (World, InstanceId) {
        let world = World::from_yaml(&EXAMPLE_YAML.replace(
            "faults: {}",
            "faults: {attachDelayMs: 2000, eniOpsPerInstance: 1}",
        ))
        .unwrap();
        let token = CancellationToken::new();
        let waiter = Waiter::start(
            Arc::new(world.clone()),
            Duration::from_millis(100),
            Duration::from_secs(30),
            token.clone(),
        );
        let lifecycle = Lifecycle::new(
            Arc::new(world.clone()),
            ClusterId::from("c1"),
            waiter,
            Steps::new(None),
        )
        .with_attach_concurrency(bound);
        let instance = InstanceId::new("i-1");
        let (a, b) = (eni(&world, "a").await, eni(&world, "b").await);
        let (ra, rb) = tokio::join!(
            lifecycle.attach(a, &instance, "pod-a"),
            lifecycle.attach(b, &instance, "pod-b")
        );
        assert_eq!(ra.unwrap().status, EniStatus::InUse);
        assert_eq!(rb.unwrap().status, EniStatus::InUse);
        token.cancel();
        (world, instance)
    }

    /// The raw world (no call wrapper retries) takes one ENI operation in
    /// flight on the instance: the second attach is refused as busy until
    /// the first is in use, and the lifecycle waits that out instead of
    /// failing.
    #[tokio::test(start_paused = true)]
    async fn an_attach_refused_by_a_busy_instance_is_asked_again_until_it_goes_through() {
        let (world, instance) = two_attaches_on_a_busy_instance(2).await;
        assert!(world.eni_ops_refused_busy() >= 1);
        assert_eq!(world.max_eni_ops_in_flight(&instance), 1);
    }

    /// With a bound of 1, the lifecycle itself keeps the second attach back
    /// until the first is in use: the cloud never has to refuse one.
    #[tokio::test(start_paused = true)]
    async fn the_bound_holds_attaches_back_before_the_cloud_refuses_them() {
        let (world, _) = two_attaches_on_a_busy_instance(1).await;
        assert_eq!(world.eni_ops_refused_busy(), 0);
    }
}
