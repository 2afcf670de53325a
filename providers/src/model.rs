//! Cloud-neutral shapes of what the controller observes and asks for. Every
//! backend translates its wire types into these; nothing here is Alibaba- or
//! AWS-specific.

use chrono::{DateTime, Utc};
use ipam::ids::{
    EniId, IdempotencyToken, InstanceId, InstanceType, RouteTableId, SecurityGroupId, SubnetId,
    VpcId, ZoneId,
};
use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::Ipv4Addr;

/// Cloud tags (Alibaba tags, EC2 tags): key -> value.
pub type Tags = BTreeMap<String, String>;

/// One ENI as attached to an instance.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttachedEni {
    pub eni_id: EniId,
    /// 0 is the primary ENI.
    pub device_index: u32,
    pub primary: bool,
}

/// A compute instance (ECS instance / EC2 instance).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Instance {
    pub id: InstanceId,
    pub instance_type: InstanceType,
    pub zone: ZoneId,
    pub vpc_id: VpcId,
    /// The subnet of the primary ENI.
    pub subnet_id: SubnetId,
    pub primary_ip: Ipv4Addr,
    /// Every ENI attached (or attaching) to the instance, primary included.
    pub enis: Vec<AttachedEni>,
}

/// What an instance type allows, from the cloud's instance-type catalogue.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceTypeLimits {
    pub instance_type: InstanceType,
    /// ENIs the instance may have attached, primary included (Alibaba
    /// `EniQuantity`, EC2 `MaximumNetworkInterfaces`).
    pub max_enis: u32,
    /// Private IPv4 addresses per ENI, primary address included (Alibaba
    /// `EniPrivateIpAddressQuantity`, EC2 `Ipv4AddressesPerInterface`).
    pub ipv4_per_eni: u32,
}

/// A subnet (Alibaba vSwitch).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Subnet {
    pub id: SubnetId,
    pub vpc_id: VpcId,
    pub zone: ZoneId,
    pub cidr: Ipv4Net,
    /// Addresses still free for new ENIs and secondary IPs.
    pub free_ips: u32,
    /// The default gateway a pod on this subnet uses.
    pub gateway: Ipv4Addr,
}

/// ENI lifecycle states, as both clouds report them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum EniStatus {
    Creating,
    Available,
    Attaching,
    InUse,
    Detaching,
    Deleting,
}

/// An elastic network interface.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Eni {
    pub id: EniId,
    pub mac: String,
    pub status: EniStatus,
    pub subnet_id: SubnetId,
    pub vpc_id: VpcId,
    pub zone: ZoneId,
    pub primary_ip: Ipv4Addr,
    /// Secondary private IPs, primary excluded.
    pub secondary_ips: Vec<Ipv4Addr>,
    pub instance_id: Option<InstanceId>,
    pub device_index: Option<u32>,
    pub security_groups: Vec<SecurityGroupId>,
    pub tags: Tags,
    pub description: String,
    pub created_at: Option<DateTime<Utc>>,
}

/// Everything needed to create one ENI.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreateEniRequest {
    pub subnet_id: SubnetId,
    pub security_groups: Vec<SecurityGroupId>,
    /// Secondary private IPs to assign at creation (0 for an exclusive ENI).
    pub secondary_ip_count: u32,
    pub tags: Tags,
    pub description: String,
    /// The same token on every retry makes the create idempotent.
    pub idempotency_token: IdempotencyToken,
}

/// Which ENIs to list. Empty fields do not filter.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EniFilter {
    pub eni_ids: Vec<EniId>,
    /// Every tag here must match exactly.
    pub tags: Tags,
    pub instance_id: Option<InstanceId>,
    pub status: Option<EniStatus>,
    pub vpc_id: Option<VpcId>,
}

/// A VPC route table.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteTable {
    pub id: RouteTableId,
    pub vpc_id: VpcId,
    /// The VPC's main/system table.
    pub main: bool,
    pub tags: Tags,
}

/// Where a route entry sends traffic.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum NextHop {
    Instance(InstanceId),
    /// The VPC's own local route.
    Local,
    /// Anything else (NAT gateway, VPN, peering...): kind and id as the cloud says.
    Other {
        kind: String,
        id: String,
    },
}

/// Route entry states (Alibaba entries are asynchronous; EC2's are immediate).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum RouteEntryStatus {
    Pending,
    Available,
    Modifying,
    Deleting,
    /// EC2 `blackhole`: the target is gone.
    Blackhole,
}

/// One entry of a route table, as observed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteEntry {
    pub route_table_id: RouteTableId,
    pub destination: Ipv4Net,
    pub next_hop: NextHop,
    pub status: RouteEntryStatus,
    /// Alibaba `RouteEntryName`; `None` where the cloud has no such field.
    pub name: Option<String>,
    /// Alibaba `Description`; `None` where the cloud has no such field (EC2).
    pub description: Option<String>,
    /// A system entry (the VPC's local route, a vSwitch's own CIDR) that no one
    /// may change.
    pub system: bool,
}

/// One entry to create: destination -> instance, with our ownership marker.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct NewRouteEntry {
    pub destination: Ipv4Net,
    pub instance_id: InstanceId,
    /// Written where the cloud has a name field (Alibaba `RouteEntryName`).
    pub name: String,
    /// Written where the cloud has a description field.
    pub description: String,
}

/// Per-entry outcome of a batch route change: the whole call may succeed while
/// single entries fail.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BatchOutcome {
    pub failed: Vec<(Ipv4Net, crate::error::CloudError)>,
}

impl BatchOutcome {
    pub fn is_complete(&self) -> bool {
        self.failed.is_empty()
    }
}

/// What a backend can do, so generic code batches and serialises correctly.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Capabilities {
    /// Most route entries one create/delete call can carry (1 = no batch call).
    pub route_batch_size: usize,
    /// Whether the cloud refuses concurrent changes to one route table.
    pub serialize_route_changes: bool,
    /// Most secondary IPs one assign call can carry.
    pub max_ips_per_assign: u32,
}
