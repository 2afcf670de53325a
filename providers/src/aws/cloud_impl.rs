//! [`crate::Cloud`] for [`AwsCloud`]: the trait surface, delegating to the
//! per-resource modules.

use super::enis::MAX_IPS_PER_ASSIGN;
use super::AwsCloud;
use crate::call::ApiStats;
use crate::cloud::Cloud;
use crate::error::CloudResult;
use crate::model::*;
use async_trait::async_trait;
use ipam::ids::{EniId, IdempotencyToken, InstanceId, InstanceType, RouteTableId, SubnetId, VpcId};
use ipnet::Ipv4Net;
use std::net::Ipv4Addr;
use std::sync::Arc;

#[async_trait]
impl Cloud for AwsCloud {
    fn name(&self) -> &'static str {
        "aws"
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            // EC2 has no batch route call; tables take concurrent changes.
            route_batch_size: 1,
            serialize_route_changes: false,
            max_ips_per_assign: MAX_IPS_PER_ASSIGN,
        }
    }

    fn stats(&self) -> Arc<ApiStats> {
        self.caller.stats()
    }

    async fn describe_instance(&self, id: &InstanceId) -> CloudResult<Instance> {
        self.do_describe_instance(id).await
    }

    async fn instance_type_limits(
        &self,
        instance_type: &InstanceType,
    ) -> CloudResult<InstanceTypeLimits> {
        self.do_instance_type_limits(instance_type).await
    }

    async fn describe_subnets(&self, ids: &[SubnetId]) -> CloudResult<Vec<Subnet>> {
        self.do_describe_subnets(ids).await
    }

    async fn create_eni(&self, request: &CreateEniRequest) -> CloudResult<Eni> {
        self.do_create_eni(request).await
    }

    async fn attach_eni(&self, eni: &EniId, instance: &InstanceId) -> CloudResult<()> {
        self.do_attach_eni(eni, instance).await
    }

    async fn detach_eni(&self, eni: &EniId, instance: &InstanceId) -> CloudResult<()> {
        self.do_detach_eni(eni, instance).await
    }

    async fn delete_eni(&self, eni: &EniId) -> CloudResult<()> {
        self.do_delete_eni(eni).await
    }

    async fn describe_enis(&self, filter: &EniFilter) -> CloudResult<Vec<Eni>> {
        self.do_describe_enis(filter).await
    }

    async fn assign_private_ips(
        &self,
        eni: &EniId,
        count: u32,
        token: &IdempotencyToken,
    ) -> CloudResult<Vec<Ipv4Addr>> {
        self.do_assign_private_ips(eni, count, token).await
    }

    async fn unassign_private_ips(&self, eni: &EniId, ips: &[Ipv4Addr]) -> CloudResult<()> {
        self.do_unassign_private_ips(eni, ips).await
    }

    async fn describe_route_tables(&self, vpc: &VpcId) -> CloudResult<Vec<RouteTable>> {
        self.do_describe_route_tables(vpc).await
    }

    async fn list_route_entries(&self, table: &RouteTableId) -> CloudResult<Vec<RouteEntry>> {
        self.do_list_route_entries(table).await
    }

    async fn create_route_entries(
        &self,
        table: &RouteTableId,
        entries: &[NewRouteEntry],
    ) -> CloudResult<BatchOutcome> {
        self.do_create_route_entries(table, entries).await
    }

    async fn delete_route_entries(
        &self,
        table: &RouteTableId,
        entries: &[(Ipv4Net, InstanceId)],
    ) -> CloudResult<BatchOutcome> {
        self.do_delete_route_entries(table, entries).await
    }
}
