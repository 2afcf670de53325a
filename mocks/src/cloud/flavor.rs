//! What differs between the Alibaba-like and the AWS-like world: the error
//! codes the cloud answers with, the addresses it reserves in a subnet, its
//! capabilities (route batching, serialised route changes, IPs per assign).

use ipnet::Ipv4Net;
use providers::error::{ErrorKind, LimitKind};
use providers::model::Capabilities;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::net::Ipv4Addr;

/// Which cloud the world behaves like.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Flavor {
    #[default]
    Alibaba,
    Aws,
}

impl fmt::Display for Flavor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Flavor::Alibaba => "alibaba",
            Flavor::Aws => "aws",
        })
    }
}

impl Flavor {
    /// Alibaba: CreateRouteEntries/DeleteRouteEntries take 50 entries and a
    /// table takes one change at a time; 10 IPs per AssignPrivateIpAddresses.
    /// AWS: one route per CreateRoute, no per-table serialisation; 50 IPs per
    /// assign is the most the EC2 backend sends.
    pub fn capabilities(self) -> Capabilities {
        match self {
            Flavor::Alibaba => Capabilities {
                route_batch_size: 50,
                serialize_route_changes: true,
                max_ips_per_assign: 10,
            },
            Flavor::Aws => Capabilities {
                route_batch_size: 1,
                serialize_route_changes: false,
                max_ips_per_assign: 50,
            },
        }
    }

    /// Whether the cloud reserves `ip` in `cidr`.
    ///
    /// Alibaba reserves the first and the last three addresses of a vSwitch;
    /// AWS reserves the first four and the last one of a subnet.
    pub fn is_reserved(self, cidr: &Ipv4Net, ip: Ipv4Addr) -> bool {
        let offset = u32::from(ip).wrapping_sub(u32::from(cidr.network()));
        let size = cidr_size(cidr);
        let (head, tail) = self.reserved_head_tail();
        offset < head || offset >= size.saturating_sub(tail)
    }

    /// Addresses a subnet of this CIDR can ever hand out.
    pub fn usable(self, cidr: &Ipv4Net) -> u32 {
        let (head, tail) = self.reserved_head_tail();
        cidr_size(cidr).saturating_sub(head + tail)
    }

    fn reserved_head_tail(self) -> (u32, u32) {
        match self {
            Flavor::Alibaba => (1, 3),
            Flavor::Aws => (4, 1),
        }
    }

    /// The default gateway of a subnet. AWS: network + 1 (the VPC router).
    /// Alibaba: the first of the three reserved tail addresses (x.x.x.253 in a
    /// /24), the rule this model picks for the vSwitch gateway.
    pub fn gateway(self, cidr: &Ipv4Net) -> Ipv4Addr {
        let base = u32::from(cidr.network());
        match self {
            Flavor::Aws => Ipv4Addr::from(base.wrapping_add(1)),
            Flavor::Alibaba => Ipv4Addr::from(base.wrapping_add(cidr_size(cidr).saturating_sub(3))),
        }
    }
}

/// Number of addresses in a CIDR (capped at u32::MAX for a /0).
pub fn cidr_size(cidr: &Ipv4Net) -> u32 {
    1u64.checked_shl(32 - u32::from(cidr.prefix_len()))
        .map(|n| n.min(u64::from(u32::MAX)) as u32)
        .unwrap_or(u32::MAX)
}

/// Every failure the model can answer with; `parts` gives the kind and the
/// flavor's real error code.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fail {
    Throttled,
    Transient,
    /// Injected generic conflict.
    Conflict,
    Auth,
    InvalidRequest,
    EniNotFound,
    InstanceNotFound,
    SubnetNotFound,
    SecurityGroupNotFound,
    VpcNotFound,
    RouteTableNotFound,
    InstanceTypeNotFound,
    /// Attach or delete of an ENI that is not `Available`.
    EniNotAvailable,
    /// Detach of an ENI that is not `InUse`, or IP changes mid-transition.
    EniBusy,
    /// Detach from an instance the ENI is not attached to.
    EniNotAttachedHere,
    /// The instance has as many ENI attaches and detaches in flight as it
    /// takes (`faults.eniOpsPerInstance`).
    InstanceBusy,
    PrimaryEni,
    EnisPerInstance,
    IpsPerEni,
    IpsPerCall,
    SubnetExhausted,
    IdempotentMismatch,
    /// Parameters that do not fit together (zone, VPC).
    Mismatch,
    MissingSecurityGroup,
    RouteTableBusy,
    RouteDuplicate,
    RouteQuota,
    RouteBatchTooLarge,
    SystemRoute,
    PrimaryIp,
}

impl Fail {
    /// The kind and the error code the flavor's cloud answers with.
    pub fn parts(&self, flavor: Flavor) -> (ErrorKind, &'static str) {
        use ErrorKind as K;
        let ali = flavor == Flavor::Alibaba;
        let pick = |a: &'static str, w: &'static str| if ali { a } else { w };
        let limit = |what| K::LimitExceeded { what };
        match self {
            Fail::Throttled => (
                K::Throttled,
                pick("Throttling.User", "RequestLimitExceeded"),
            ),
            Fail::Transient => (K::Transient, pick("ServiceUnavailable", "InternalError")),
            Fail::Conflict => (K::Conflict, pick("Operation.Conflict", "IncorrectState")),
            Fail::Auth => (K::Auth, pick("InvalidAccessKeyId.NotFound", "AuthFailure")),
            Fail::InvalidRequest => (
                K::InvalidRequest,
                pick("InvalidParameter", "InvalidParameterValue"),
            ),
            Fail::EniNotFound => (
                K::NotFound,
                pick(
                    "InvalidEniId.NotFound",
                    "InvalidNetworkInterfaceID.NotFound",
                ),
            ),
            Fail::InstanceNotFound => (
                K::NotFound,
                pick("InvalidInstanceId.NotFound", "InvalidInstanceID.NotFound"),
            ),
            Fail::SubnetNotFound => (
                K::NotFound,
                pick("InvalidVSwitchId.NotFound", "InvalidSubnetID.NotFound"),
            ),
            Fail::SecurityGroupNotFound => (
                K::NotFound,
                pick("InvalidSecurityGroupId.NotFound", "InvalidGroup.NotFound"),
            ),
            Fail::VpcNotFound => (
                K::NotFound,
                pick("InvalidVpcId.NotFound", "InvalidVpcID.NotFound"),
            ),
            Fail::RouteTableNotFound => (
                K::NotFound,
                pick(
                    "InvalidRouteTableId.NotFound",
                    "InvalidRouteTableID.NotFound",
                ),
            ),
            Fail::InstanceTypeNotFound => (
                K::NotFound,
                pick("InvalidInstanceType.NotFound", "InvalidInstanceType"),
            ),
            Fail::EniNotAvailable => (
                K::Conflict,
                pick(
                    "InvalidOperation.InvalidEniState",
                    "InvalidNetworkInterface.InUse",
                ),
            ),
            Fail::EniBusy => (
                K::Conflict,
                pick("InvalidOperation.InvalidEniState", "IncorrectState"),
            ),
            Fail::EniNotAttachedHere => (
                K::InvalidRequest,
                pick(
                    "InvalidOperation.InvalidEniState",
                    "InvalidAttachmentID.NotFound",
                ),
            ),
            // ECS AttachNetworkInterface / DetachNetworkInterface document
            // `InvalidOperation.InvalidEcsState` (HTTP 400) for an instance
            // whose state does not allow the operation; EC2 lists
            // `IncorrectInstanceState` (HTTP 400) among its common client
            // errors. Both pass once the operations in flight settle.
            Fail::InstanceBusy => (
                K::Conflict,
                pick("InvalidOperation.InvalidEcsState", "IncorrectInstanceState"),
            ),
            Fail::PrimaryEni => (
                K::InvalidRequest,
                pick(
                    "InvalidOperation.DetachPrimaryEniNotAllowed",
                    "OperationNotPermitted",
                ),
            ),
            Fail::EnisPerInstance => (
                limit(LimitKind::EnisPerInstance),
                pick("EniPerInstanceLimitExceeded", "AttachmentLimitExceeded"),
            ),
            Fail::IpsPerEni => (
                limit(LimitKind::IpsPerEni),
                pick(
                    "QuotaExceeded.PrivateIpAddress",
                    "PrivateIpAddressLimitExceeded",
                ),
            ),
            Fail::IpsPerCall => (
                limit(LimitKind::IpsPerCall),
                pick(
                    "InvalidParam.SecondaryPrivateIpAddressCount",
                    "InvalidParameterValue",
                ),
            ),
            Fail::SubnetExhausted => (
                K::SubnetExhausted,
                pick(
                    "InvalidVSwitchId.IpNotEnough",
                    "InsufficientFreeAddressesInSubnet",
                ),
            ),
            Fail::IdempotentMismatch => (K::InvalidRequest, "IdempotentParameterMismatch"),
            Fail::Mismatch => (
                K::InvalidRequest,
                pick("InvalidParameter", "InvalidParameterCombination"),
            ),
            Fail::MissingSecurityGroup => (K::InvalidRequest, "MissingParameter"),
            Fail::RouteTableBusy => (
                K::Conflict,
                pick("IncorrectRouteEntryStatus", "IncorrectState"),
            ),
            Fail::RouteDuplicate => (
                K::AlreadyExists,
                pick("InvalidCIDRBlock.Duplicate", "RouteAlreadyExists"),
            ),
            Fail::RouteQuota => (
                limit(LimitKind::RouteEntriesPerTable),
                pick("QuotaExceeded.RouteEntry", "RouteLimitExceeded"),
            ),
            Fail::RouteBatchTooLarge => (
                K::InvalidRequest,
                pick("InvalidParameter", "InvalidParameterValue"),
            ),
            Fail::SystemRoute => (
                K::InvalidRequest,
                pick("OperationDenied.SystemRouteEntry", "InvalidParameterValue"),
            ),
            Fail::PrimaryIp => (
                K::InvalidRequest,
                pick("InvalidIp.Primary", "InvalidParameterValue"),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> Ipv4Net {
        s.parse().unwrap()
    }

    #[test]
    fn alibaba_reserves_first_and_last_three() {
        let cidr = net("192.168.1.0/28");
        let f = Flavor::Alibaba;
        assert!(f.is_reserved(&cidr, "192.168.1.0".parse().unwrap()));
        assert!(!f.is_reserved(&cidr, "192.168.1.1".parse().unwrap()));
        assert!(!f.is_reserved(&cidr, "192.168.1.12".parse().unwrap()));
        assert!(f.is_reserved(&cidr, "192.168.1.13".parse().unwrap()));
        assert_eq!(f.usable(&cidr), 12);
        assert_eq!(
            f.gateway(&net("192.168.1.0/24")),
            "192.168.1.253".parse::<Ipv4Addr>().unwrap()
        );
    }

    #[test]
    fn aws_reserves_first_four_and_last_one() {
        let cidr = net("10.0.0.0/28");
        let f = Flavor::Aws;
        assert!(f.is_reserved(&cidr, "10.0.0.3".parse().unwrap()));
        assert!(!f.is_reserved(&cidr, "10.0.0.4".parse().unwrap()));
        assert!(!f.is_reserved(&cidr, "10.0.0.14".parse().unwrap()));
        assert!(f.is_reserved(&cidr, "10.0.0.15".parse().unwrap()));
        assert_eq!(f.usable(&cidr), 11);
        assert_eq!(f.gateway(&cidr), "10.0.0.1".parse::<Ipv4Addr>().unwrap());
    }
}
