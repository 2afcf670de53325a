//! Fencing: a replica writes to the cloud only while its leadership is
//! current. The elector extends the [`Fence`] each time a renewal of the
//! Lease succeeds, to the instant (on this process's monotonic clock,
//! counted from when that renewal was sent) before which no standby can have
//! taken over; [`FencedCloud`] checks it before every mutating call. A
//! replica whose apiserver connection hangs therefore stops writing on its
//! own, whatever its reconcilers are doing.

use async_trait::async_trait;
use ipam::ids::{EniId, IdempotencyToken, InstanceId, InstanceType, RouteTableId, SubnetId, VpcId};
use ipnet::Ipv4Net;
use providers::call::ApiStats;
use providers::model::{
    BatchOutcome, Capabilities, CreateEniRequest, Eni, EniFilter, Instance, InstanceTypeLimits,
    NewRouteEntry, RouteEntry, RouteTable, Subnet,
};
use providers::{Cloud, CloudError, CloudResult, ErrorKind};
use std::net::Ipv4Addr;
use std::sync::Arc;
use tokio::time::Instant;

/// Until when this replica may write. Cheap to clone; every clone sees the
/// same instant.
#[derive(Clone, Debug)]
pub struct Fence {
    until: Arc<parking_lot::Mutex<Option<Instant>>>,
}

impl Fence {
    /// A fence that is closed until the elector opens it.
    pub fn closed() -> Self {
        Self {
            until: Arc::new(parking_lot::Mutex::new(None)),
        }
    }

    /// Without leader election: always open.
    pub fn open_forever() -> Self {
        let fence = Self::closed();
        *fence.until.lock() =
            Some(Instant::now() + std::time::Duration::from_secs(100 * 365 * 86_400));
        fence
    }

    /// Writes are allowed until `until`.
    pub fn extend_to(&self, until: Instant) {
        *self.until.lock() = Some(until);
    }

    /// No more writes (lost or gave up the Lease).
    pub fn close(&self) {
        *self.until.lock() = None;
    }

    /// Whether a write may be sent now.
    pub fn is_open(&self) -> bool {
        self.until.lock().is_some_and(|u| Instant::now() < u)
    }

    /// When the fence closes by itself, if it is open.
    pub fn closes_at(&self) -> Option<Instant> {
        *self.until.lock()
    }

    fn check(&self, api: &str) -> CloudResult<()> {
        if self.is_open() {
            return Ok(());
        }
        Err(CloudError::new(
            ErrorKind::Fenced,
            api,
            "NotLeader",
            "not sent: this replica's leadership is not current (the Lease was not renewed in time)",
        ))
    }
}

/// The cloud, with every mutating call checked against the fence first.
/// Reads pass through: they cannot hurt.
pub struct FencedCloud {
    inner: Arc<dyn Cloud>,
    fence: Fence,
}

impl FencedCloud {
    pub fn new(inner: Arc<dyn Cloud>, fence: Fence) -> Self {
        Self { inner, fence }
    }
}

#[async_trait]
impl Cloud for FencedCloud {
    fn name(&self) -> &'static str {
        self.inner.name()
    }

    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }

    fn stats(&self) -> Arc<ApiStats> {
        self.inner.stats()
    }

    async fn describe_instance(&self, id: &InstanceId) -> CloudResult<Instance> {
        self.inner.describe_instance(id).await
    }

    async fn describe_instances(&self, ids: &[InstanceId]) -> CloudResult<Vec<Instance>> {
        self.inner.describe_instances(ids).await
    }

    async fn instance_type_limits(
        &self,
        instance_type: &InstanceType,
    ) -> CloudResult<InstanceTypeLimits> {
        self.inner.instance_type_limits(instance_type).await
    }

    async fn describe_subnets(&self, ids: &[SubnetId]) -> CloudResult<Vec<Subnet>> {
        self.inner.describe_subnets(ids).await
    }

    async fn create_eni(&self, request: &CreateEniRequest) -> CloudResult<Eni> {
        self.fence.check("CreateNetworkInterface")?;
        self.inner.create_eni(request).await
    }

    async fn attach_eni(&self, eni: &EniId, instance: &InstanceId) -> CloudResult<()> {
        self.fence.check("AttachNetworkInterface")?;
        self.inner.attach_eni(eni, instance).await
    }

    async fn detach_eni(&self, eni: &EniId, instance: &InstanceId) -> CloudResult<()> {
        self.fence.check("DetachNetworkInterface")?;
        self.inner.detach_eni(eni, instance).await
    }

    async fn delete_eni(&self, eni: &EniId) -> CloudResult<()> {
        self.fence.check("DeleteNetworkInterface")?;
        self.inner.delete_eni(eni).await
    }

    async fn describe_enis(&self, filter: &EniFilter) -> CloudResult<Vec<Eni>> {
        self.inner.describe_enis(filter).await
    }

    async fn assign_private_ips(
        &self,
        eni: &EniId,
        count: u32,
        token: &IdempotencyToken,
    ) -> CloudResult<Vec<Ipv4Addr>> {
        self.fence.check("AssignPrivateIpAddresses")?;
        self.inner.assign_private_ips(eni, count, token).await
    }

    async fn unassign_private_ips(&self, eni: &EniId, ips: &[Ipv4Addr]) -> CloudResult<()> {
        self.fence.check("UnassignPrivateIpAddresses")?;
        self.inner.unassign_private_ips(eni, ips).await
    }

    async fn describe_route_tables(&self, vpc: &VpcId) -> CloudResult<Vec<RouteTable>> {
        self.inner.describe_route_tables(vpc).await
    }

    async fn list_route_entries(&self, table: &RouteTableId) -> CloudResult<Vec<RouteEntry>> {
        self.inner.list_route_entries(table).await
    }

    async fn create_route_entries(
        &self,
        table: &RouteTableId,
        entries: &[NewRouteEntry],
    ) -> CloudResult<BatchOutcome> {
        self.fence.check("CreateRouteEntries")?;
        self.inner.create_route_entries(table, entries).await
    }

    async fn delete_route_entries(
        &self,
        table: &RouteTableId,
        entries: &[(Ipv4Net, InstanceId)],
    ) -> CloudResult<BatchOutcome> {
        self.fence.check("DeleteRouteEntries")?;
        self.inner.delete_route_entries(table, entries).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn the_fence_closes_by_itself_when_not_extended() {
        let fence = Fence::closed();
        assert!(!fence.is_open());
        fence.extend_to(Instant::now() + Duration::from_secs(10));
        assert!(fence.is_open());
        tokio::time::advance(Duration::from_secs(9)).await;
        assert!(fence.is_open());
        tokio::time::advance(Duration::from_secs(2)).await;
        assert!(!fence.is_open());
        let err = fence.check("DeleteRouteEntries").unwrap_err();
        assert_eq!(err.kind, ErrorKind::Fenced);
        assert!(Fence::open_forever().is_open());
        fence.extend_to(Instant::now() + Duration::from_secs(10));
        fence.close();
        assert!(!fence.is_open());
    }
}
