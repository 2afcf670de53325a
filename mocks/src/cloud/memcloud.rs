//! `MemCloud`: a [`World`] behind the shared `providers::call::Caller`, so the
//! controller meets the model the way it meets a real backend: per-API rate
//! limits, retries of throttled/transient/conflict answers with the same
//! token, and per-API counters in `stats()`.

use super::world::World;
use async_trait::async_trait;
use ipam::ids::{EniId, IdempotencyToken, InstanceId, InstanceType, RouteTableId, SubnetId, VpcId};
use ipnet::Ipv4Net;
use providers::call::{ApiStats, CallPolicy, Caller};
use providers::error::CloudResult;
use providers::model::{
    BatchOutcome, Capabilities, CreateEniRequest, Eni, EniFilter, Instance, InstanceTypeLimits,
    NewRouteEntry, RouteEntry, RouteTable, Subnet,
};
use providers::Cloud;
use std::net::Ipv4Addr;
use std::sync::Arc;

/// The model as a backend. Cheap to clone.
#[derive(Clone)]
pub struct MemCloud {
    world: World,
    caller: Caller,
}

impl MemCloud {
    pub fn new(world: World, policy: CallPolicy) -> Self {
        Self {
            world,
            caller: Caller::new(policy),
        }
    }

    /// The world behind this client (for seeding and inspection).
    pub fn world(&self) -> &World {
        &self.world
    }
}

#[async_trait]
impl Cloud for MemCloud {
    fn name(&self) -> &'static str {
        "memory"
    }

    fn capabilities(&self) -> Capabilities {
        self.world.capabilities()
    }

    fn stats(&self) -> Arc<ApiStats> {
        self.caller.stats()
    }

    async fn describe_instance(&self, id: &InstanceId) -> CloudResult<Instance> {
        let w = &self.world;
        self.caller
            .call("DescribeInstances", None, |_| w.describe_instance(id))
            .await
    }

    async fn describe_instances(&self, ids: &[InstanceId]) -> CloudResult<Vec<Instance>> {
        let w = &self.world;
        self.caller
            .call("DescribeInstances", None, |_| w.describe_instances(ids))
            .await
    }

    async fn instance_type_limits(
        &self,
        instance_type: &InstanceType,
    ) -> CloudResult<InstanceTypeLimits> {
        let w = &self.world;
        self.caller
            .call("DescribeInstanceTypes", None, |_| {
                w.instance_type_limits(instance_type)
            })
            .await
    }

    async fn describe_subnets(&self, ids: &[SubnetId]) -> CloudResult<Vec<Subnet>> {
        let w = &self.world;
        self.caller
            .call("DescribeVSwitches", None, |_| w.describe_subnets(ids))
            .await
    }

    async fn create_eni(&self, request: &CreateEniRequest) -> CloudResult<Eni> {
        let w = &self.world;
        self.caller
            .call(
                "CreateNetworkInterface",
                Some(&request.idempotency_token),
                |_| w.create_eni(request),
            )
            .await
    }

    async fn attach_eni(&self, eni: &EniId, instance: &InstanceId) -> CloudResult<()> {
        let w = &self.world;
        self.caller
            .call("AttachNetworkInterface", None, |_| {
                w.attach_eni(eni, instance)
            })
            .await
    }

    async fn detach_eni(&self, eni: &EniId, instance: &InstanceId) -> CloudResult<()> {
        let w = &self.world;
        self.caller
            .call("DetachNetworkInterface", None, |_| {
                w.detach_eni(eni, instance)
            })
            .await
    }

    async fn delete_eni(&self, eni: &EniId) -> CloudResult<()> {
        let w = &self.world;
        self.caller
            .call("DeleteNetworkInterface", None, |_| w.delete_eni(eni))
            .await
    }

    async fn describe_enis(&self, filter: &EniFilter) -> CloudResult<Vec<Eni>> {
        let w = &self.world;
        self.caller
            .call("DescribeNetworkInterfaces", None, |_| {
                w.describe_enis(filter)
            })
            .await
    }

    async fn assign_private_ips(
        &self,
        eni: &EniId,
        count: u32,
        token: &IdempotencyToken,
    ) -> CloudResult<Vec<Ipv4Addr>> {
        let w = &self.world;
        self.caller
            .call(
                "AssignPrivateIpAddresses",
                Some(token),
                |attempt| async move { w.assign_private_ips(eni, count, &attempt.token).await },
            )
            .await
    }

    async fn unassign_private_ips(&self, eni: &EniId, ips: &[Ipv4Addr]) -> CloudResult<()> {
        let w = &self.world;
        self.caller
            .call("UnassignPrivateIpAddresses", None, |_| {
                w.unassign_private_ips(eni, ips)
            })
            .await
    }

    async fn describe_route_tables(&self, vpc: &VpcId) -> CloudResult<Vec<RouteTable>> {
        let w = &self.world;
        self.caller
            .call("DescribeRouteTableList", None, |_| {
                w.describe_route_tables(vpc)
            })
            .await
    }

    async fn list_route_entries(&self, table: &RouteTableId) -> CloudResult<Vec<RouteEntry>> {
        let w = &self.world;
        self.caller
            .call("DescribeRouteEntryList", None, |_| {
                w.list_route_entries(table)
            })
            .await
    }

    async fn create_route_entries(
        &self,
        table: &RouteTableId,
        entries: &[NewRouteEntry],
    ) -> CloudResult<BatchOutcome> {
        let w = &self.world;
        self.caller
            .call("CreateRouteEntries", None, |_| {
                w.create_route_entries(table, entries)
            })
            .await
    }

    async fn delete_route_entries(
        &self,
        table: &RouteTableId,
        entries: &[(Ipv4Net, InstanceId)],
    ) -> CloudResult<BatchOutcome> {
        let w = &self.world;
        self.caller
            .call("DeleteRouteEntries", None, |_| {
                w.delete_route_entries(table, entries)
            })
            .await
    }
}
