//! The cloud of a controller configured without `provider` (routes over
//! BGP, ENI mode off): nothing may call a cloud, so every call is refused
//! without a request, as `InvalidRequest` naming the missing block.

use async_trait::async_trait;
use ipam::ids::{EniId, IdempotencyToken, InstanceId, InstanceType, RouteTableId, SubnetId, VpcId};
use ipnet::Ipv4Net;
use providers::call::ApiStats;
use providers::error::{CloudResult, ErrorKind};
use providers::model::*;
use providers::{Cloud, CloudError};
use std::net::Ipv4Addr;
use std::sync::Arc;

/// Refuses every call; `name()` is `none`.
#[derive(Default)]
pub struct NoCloud {
    stats: Arc<ApiStats>,
}

fn refused<T>(api: &str) -> CloudResult<T> {
    Err(CloudError::new(
        ErrorKind::InvalidRequest,
        api,
        "NoProvider",
        "no provider is configured (routes.backend: bgp); this controller makes no cloud calls",
    ))
}

#[async_trait]
impl Cloud for NoCloud {
    fn name(&self) -> &'static str {
        "none"
    }
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            route_batch_size: 1,
            serialize_route_changes: false,
            max_ips_per_assign: 1,
        }
    }
    fn stats(&self) -> Arc<ApiStats> {
        self.stats.clone()
    }
    async fn describe_instance(&self, _: &InstanceId) -> CloudResult<Instance> {
        refused("DescribeInstance")
    }
    async fn instance_type_limits(&self, _: &InstanceType) -> CloudResult<InstanceTypeLimits> {
        refused("InstanceTypeLimits")
    }
    async fn describe_subnets(&self, _: &[SubnetId]) -> CloudResult<Vec<Subnet>> {
        refused("DescribeSubnets")
    }
    async fn create_eni(&self, _: &CreateEniRequest) -> CloudResult<Eni> {
        refused("CreateEni")
    }
    async fn attach_eni(&self, _: &EniId, _: &InstanceId) -> CloudResult<()> {
        refused("AttachEni")
    }
    async fn detach_eni(&self, _: &EniId, _: &InstanceId) -> CloudResult<()> {
        refused("DetachEni")
    }
    async fn delete_eni(&self, _: &EniId) -> CloudResult<()> {
        refused("DeleteEni")
    }
    async fn describe_enis(&self, _: &EniFilter) -> CloudResult<Vec<Eni>> {
        refused("DescribeEnis")
    }
    async fn assign_private_ips(
        &self,
        _: &EniId,
        _: u32,
        _: &IdempotencyToken,
    ) -> CloudResult<Vec<Ipv4Addr>> {
        refused("AssignPrivateIps")
    }
    async fn unassign_private_ips(&self, _: &EniId, _: &[Ipv4Addr]) -> CloudResult<()> {
        refused("UnassignPrivateIps")
    }
    async fn describe_route_tables(&self, _: &VpcId) -> CloudResult<Vec<RouteTable>> {
        refused("DescribeRouteTables")
    }
    async fn list_route_entries(&self, _: &RouteTableId) -> CloudResult<Vec<RouteEntry>> {
        refused("ListRouteEntries")
    }
    async fn create_route_entries(
        &self,
        _: &RouteTableId,
        _: &[NewRouteEntry],
    ) -> CloudResult<BatchOutcome> {
        refused("CreateRouteEntries")
    }
    async fn delete_route_entries(
        &self,
        _: &RouteTableId,
        _: &[(Ipv4Net, InstanceId)],
    ) -> CloudResult<BatchOutcome> {
        refused("DeleteRouteEntries")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn every_call_is_refused_naming_the_missing_provider() {
        let cloud = NoCloud::default();
        let e = cloud
            .list_route_entries(&RouteTableId::new("vtb-1"))
            .await
            .unwrap_err();
        assert_eq!(e.kind, ErrorKind::InvalidRequest);
        assert!(e.message.contains("no provider is configured"), "{e:?}");
        assert!(cloud.stats().snapshot().is_empty(), "nothing was sent");
    }
}
