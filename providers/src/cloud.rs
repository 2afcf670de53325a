//! The `Cloud` trait: the one contract between the controller and a cloud
//! backend. Cloud-neutral; no SDK or wire types cross it.

use crate::call::ApiStats;
use crate::error::CloudResult;
use crate::model::*;
use async_trait::async_trait;
use ipam::ids::{EniId, IdempotencyToken, InstanceId, InstanceType, RouteTableId, SubnetId, VpcId};
use ipnet::Ipv4Net;
use std::net::Ipv4Addr;
use std::sync::Arc;

/// A cloud backend. Every method is one logical operation; implementations
/// send their wire calls through the shared [`crate::call::Caller`] so that
/// rate limits, retries and counters are the same for every backend.
///
/// Mutating methods are idempotent where the cloud allows: `NotFound` on
/// detach, delete and unassign counts as done and returns `Ok`.
#[async_trait]
pub trait Cloud: Send + Sync {
    /// `alibaba`, `aws` or `memory`.
    fn name(&self) -> &'static str;

    fn capabilities(&self) -> Capabilities;

    /// Per-API call, error and throttle counters of this backend.
    fn stats(&self) -> Arc<ApiStats>;

    /// One instance with its attached ENIs. `NotFound` if it does not exist.
    async fn describe_instance(&self, id: &InstanceId) -> CloudResult<Instance>;

    /// Many instances in as few calls as the cloud allows (Alibaba: 100 ids
    /// per `DescribeInstances`; EC2: 1,000), for work that covers many nodes
    /// at once. Instances that do not exist are left out of the answer.
    /// Their `enis` carry each attached ENI's id and whether it is the
    /// primary; device indexes are exact only where the answer has them
    /// (EC2), so use [`Cloud::describe_instance`] before choosing one.
    ///
    /// The default asks one instance at a time.
    async fn describe_instances(&self, ids: &[InstanceId]) -> CloudResult<Vec<Instance>> {
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            match self.describe_instance(id).await {
                Ok(i) => out.push(i),
                Err(e) if e.kind == crate::error::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    /// Limits of an instance type (cached by the backend). `NotFound` for a
    /// type the cloud does not know.
    async fn instance_type_limits(
        &self,
        instance_type: &InstanceType,
    ) -> CloudResult<InstanceTypeLimits>;

    /// The given subnets with their current free-IP count. Unknown ids are
    /// left out of the answer.
    async fn describe_subnets(&self, ids: &[SubnetId]) -> CloudResult<Vec<Subnet>>;

    /// Create an ENI (state `Available` once this returns).
    async fn create_eni(&self, request: &CreateEniRequest) -> CloudResult<Eni>;

    /// Start attaching an available ENI to an instance. The ENI is `InUse`
    /// once the cloud finishes; see [`crate::wait`].
    async fn attach_eni(&self, eni: &EniId, instance: &InstanceId) -> CloudResult<()>;

    /// Start detaching an ENI from an instance. `NotFound` counts as done.
    async fn detach_eni(&self, eni: &EniId, instance: &InstanceId) -> CloudResult<()>;

    /// Delete an available ENI. `NotFound` counts as done.
    async fn delete_eni(&self, eni: &EniId) -> CloudResult<()>;

    /// ENIs matching the filter (all pages).
    async fn describe_enis(&self, filter: &EniFilter) -> CloudResult<Vec<Eni>>;

    /// Assign `count` new secondary private IPs to an ENI; returns only the new
    /// ones. At most `capabilities().max_ips_per_assign` per call.
    async fn assign_private_ips(
        &self,
        eni: &EniId,
        count: u32,
        token: &IdempotencyToken,
    ) -> CloudResult<Vec<Ipv4Addr>>;

    /// Unassign the given secondary IPs. IPs already gone count as done.
    async fn unassign_private_ips(&self, eni: &EniId, ips: &[Ipv4Addr]) -> CloudResult<()>;

    /// Route tables of a VPC.
    async fn describe_route_tables(&self, vpc: &VpcId) -> CloudResult<Vec<RouteTable>>;

    /// Every entry of one route table (all pages), system entries included.
    async fn list_route_entries(&self, table: &RouteTableId) -> CloudResult<Vec<RouteEntry>>;

    /// Create entries (at most `capabilities().route_batch_size` per call).
    /// Entries the cloud accepted but still has `Pending` count as created.
    async fn create_route_entries(
        &self,
        table: &RouteTableId,
        entries: &[NewRouteEntry],
    ) -> CloudResult<BatchOutcome>;

    /// Delete entries by destination (at most `route_batch_size` per call).
    /// Destinations already gone count as done.
    async fn delete_route_entries(
        &self,
        table: &RouteTableId,
        entries: &[(Ipv4Net, InstanceId)],
    ) -> CloudResult<BatchOutcome>;
}
