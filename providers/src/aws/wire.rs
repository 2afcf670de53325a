//! EC2 shapes -> cloud-neutral model types, and model -> EC2 filter values.

use super::errors::malformed;
use super::CREATED_AT_TAG;
use crate::error::CloudResult;
use crate::model::{
    AttachedEni, Eni, EniStatus, Instance, NextHop, RouteEntry, RouteEntryStatus, RouteTable,
    Subnet, Tags,
};
use aws_sdk_ec2::types::{
    AttachmentStatus, NetworkInterface, NetworkInterfaceStatus, RouteOrigin, RouteState, Tag,
};
use chrono::{DateTime, Utc};
use ipam::ids::{
    EniId, InstanceId, InstanceType, RouteTableId, SecurityGroupId, SubnetId, VpcId, ZoneId,
};
use ipnet::Ipv4Net;
use std::net::Ipv4Addr;

fn required<'a>(api: &str, what: &str, value: Option<&'a str>) -> CloudResult<&'a str> {
    value
        .filter(|v| !v.is_empty())
        .ok_or_else(|| malformed(api, format!("answer lacks {what}")))
}

fn ip(api: &str, what: &str, value: Option<&str>) -> CloudResult<Ipv4Addr> {
    let raw = required(api, what, value)?;
    raw.parse()
        .map_err(|_| malformed(api, format!("{what} {raw:?} is not an IPv4 address")))
}

fn device_index(api: &str, index: Option<i32>) -> CloudResult<Option<u32>> {
    index
        .map(|i| u32::try_from(i).map_err(|_| malformed(api, format!("device index {i}"))))
        .transpose()
}

pub(crate) fn tags(tags: &[Tag]) -> Tags {
    tags.iter()
        .filter_map(|t| {
            Some((
                t.key()?.to_owned(),
                t.value().unwrap_or_default().to_owned(),
            ))
        })
        .collect()
}

/// EC2 `DescribeInstances` entry -> [`Instance`].
pub(crate) fn instance(api: &str, i: &aws_sdk_ec2::types::Instance) -> CloudResult<Instance> {
    let id = required(api, "InstanceId", i.instance_id())?;
    let mut enis = Vec::new();
    for ni in i.network_interfaces() {
        let eni_id = required(api, "NetworkInterfaceId", ni.network_interface_id())?;
        let index = device_index(api, ni.attachment().and_then(|a| a.device_index()))?
            .ok_or_else(|| malformed(api, format!("{eni_id} on {id} has no device index")))?;
        enis.push(AttachedEni {
            eni_id: EniId::from(eni_id),
            device_index: index,
            primary: index == 0,
        });
    }
    enis.sort_by_key(|e| e.device_index);
    Ok(Instance {
        id: InstanceId::from(id),
        instance_type: InstanceType::from(required(
            api,
            "InstanceType",
            i.instance_type().map(|t| t.as_str()),
        )?),
        zone: ZoneId::from(required(
            api,
            "Placement.AvailabilityZone",
            i.placement().and_then(|p| p.availability_zone()),
        )?),
        vpc_id: VpcId::from(required(api, "VpcId", i.vpc_id())?),
        subnet_id: SubnetId::from(required(api, "SubnetId", i.subnet_id())?),
        primary_ip: ip(api, "PrivateIpAddress", i.private_ip_address())?,
        enis,
    })
}

/// EC2 `DescribeSubnets` entry -> [`Subnet`]. The VPC router answers on the
/// first address of every subnet (network + 1).
pub(crate) fn subnet(api: &str, s: &aws_sdk_ec2::types::Subnet) -> CloudResult<Subnet> {
    let raw_cidr = required(api, "CidrBlock", s.cidr_block())?;
    let cidr: Ipv4Net = raw_cidr
        .parse()
        .map_err(|_| malformed(api, format!("CidrBlock {raw_cidr:?}")))?;
    let gateway = Ipv4Addr::from(u32::from(cidr.network()).wrapping_add(1));
    Ok(Subnet {
        id: SubnetId::from(required(api, "SubnetId", s.subnet_id())?),
        vpc_id: VpcId::from(required(api, "VpcId", s.vpc_id())?),
        zone: ZoneId::from(required(api, "AvailabilityZone", s.availability_zone())?),
        cidr,
        free_ips: s
            .available_ip_address_count()
            .map(|n| u32::try_from(n).unwrap_or(0))
            .unwrap_or(0),
        gateway,
    })
}

fn eni_status(ni: &NetworkInterface) -> EniStatus {
    let attachment = ni.attachment().and_then(|a| a.status());
    match ni.status() {
        Some(NetworkInterfaceStatus::Available) => EniStatus::Available,
        Some(NetworkInterfaceStatus::Attaching) => EniStatus::Attaching,
        Some(NetworkInterfaceStatus::Detaching) => EniStatus::Detaching,
        // EC2 flips the ENI to in-use at once; the attachment says whether
        // the instance has it yet.
        Some(NetworkInterfaceStatus::InUse | NetworkInterfaceStatus::Associated) => {
            match attachment {
                Some(AttachmentStatus::Attaching) => EniStatus::Attaching,
                Some(AttachmentStatus::Detaching) => EniStatus::Detaching,
                _ => EniStatus::InUse,
            }
        }
        other => {
            // `pending` right after creation, or a status newer than this SDK:
            // a transitional state, so callers wait instead of acting.
            tracing::debug!(status = ?other, "unrecognised ENI status, treating as creating");
            EniStatus::Creating
        }
    }
}

/// The EC2 `status` filter value of a model status (`None`: EC2 has no such
/// state, the filter matches nothing).
pub(crate) fn eni_status_filter(status: EniStatus) -> Option<&'static str> {
    match status {
        EniStatus::Available => Some("available"),
        EniStatus::Attaching => Some("attaching"),
        EniStatus::InUse => Some("in-use"),
        EniStatus::Detaching => Some("detaching"),
        EniStatus::Creating | EniStatus::Deleting => None,
    }
}

/// EC2 network interface -> [`Eni`].
pub(crate) fn eni(api: &str, ni: &NetworkInterface) -> CloudResult<Eni> {
    let id = required(api, "NetworkInterfaceId", ni.network_interface_id())?;
    let primary_ip = ip(api, "PrivateIpAddress", ni.private_ip_address())?;
    let mut secondary_ips = Vec::new();
    for addr in ni.private_ip_addresses() {
        let a = ip(
            api,
            "PrivateIpAddresses.PrivateIpAddress",
            addr.private_ip_address(),
        )?;
        if addr.primary() != Some(true) && a != primary_ip {
            secondary_ips.push(a);
        }
    }
    let tags = tags(ni.tag_set());
    let created_at = tags
        .get(CREATED_AT_TAG)
        .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
        .map(|t| t.with_timezone(&Utc));
    let attachment = ni.attachment();
    Ok(Eni {
        id: EniId::from(id),
        mac: ni.mac_address().unwrap_or_default().to_owned(),
        status: eni_status(ni),
        subnet_id: SubnetId::from(required(api, "SubnetId", ni.subnet_id())?),
        vpc_id: VpcId::from(required(api, "VpcId", ni.vpc_id())?),
        zone: ZoneId::from(ni.availability_zone().unwrap_or_default()),
        primary_ip,
        secondary_ips,
        instance_id: attachment
            .and_then(|a| a.instance_id())
            .filter(|i| !i.is_empty())
            .map(InstanceId::from),
        device_index: device_index(api, attachment.and_then(|a| a.device_index()))?,
        security_groups: ni
            .groups()
            .iter()
            .filter_map(|g| g.group_id())
            .map(SecurityGroupId::from)
            .collect(),
        tags,
        description: ni.description().unwrap_or_default().to_owned(),
        created_at,
    })
}

/// EC2 route table -> [`RouteTable`].
pub(crate) fn route_table(
    api: &str,
    t: &aws_sdk_ec2::types::RouteTable,
) -> CloudResult<RouteTable> {
    Ok(RouteTable {
        id: RouteTableId::from(required(api, "RouteTableId", t.route_table_id())?),
        vpc_id: VpcId::from(required(api, "VpcId", t.vpc_id())?),
        main: t.associations().iter().any(|a| a.main() == Some(true)),
        tags: tags(t.tags()),
    })
}

/// EC2 routes of one table -> [`RouteEntry`]s. IPv6 and prefix-list routes
/// are left out: the controller only writes IPv4 CIDR routes.
pub(crate) fn route_entries(
    table: &RouteTableId,
    t: &aws_sdk_ec2::types::RouteTable,
) -> Vec<RouteEntry> {
    let mut out = Vec::new();
    for r in t.routes() {
        let Some(destination) = r
            .destination_cidr_block()
            .and_then(|d| d.parse::<Ipv4Net>().ok())
        else {
            continue;
        };
        let local = r.gateway_id() == Some("local");
        let next_hop = if local {
            NextHop::Local
        } else if let Some(instance) = r.instance_id().filter(|i| !i.is_empty()) {
            NextHop::Instance(InstanceId::from(instance))
        } else {
            other_hop(r)
        };
        // Entries the table was created with, and routes propagated from a
        // virtual private gateway, cannot be changed with CreateRoute/DeleteRoute.
        let system = local
            || matches!(
                r.origin(),
                Some(RouteOrigin::CreateRouteTable | RouteOrigin::EnableVgwRoutePropagation)
            );
        out.push(RouteEntry {
            route_table_id: table.clone(),
            destination,
            next_hop,
            status: match r.state() {
                Some(RouteState::Blackhole) => RouteEntryStatus::Blackhole,
                _ => RouteEntryStatus::Available,
            },
            name: None,
            description: None,
            system,
        });
    }
    out
}

fn other_hop(r: &aws_sdk_ec2::types::Route) -> NextHop {
    let candidates = [
        ("gateway", r.gateway_id()),
        ("nat-gateway", r.nat_gateway_id()),
        ("transit-gateway", r.transit_gateway_id()),
        ("vpc-peering-connection", r.vpc_peering_connection_id()),
        ("network-interface", r.network_interface_id()),
        (
            "egress-only-internet-gateway",
            r.egress_only_internet_gateway_id(),
        ),
        ("local-gateway", r.local_gateway_id()),
        ("carrier-gateway", r.carrier_gateway_id()),
        ("core-network", r.core_network_arn()),
    ];
    candidates
        .into_iter()
        .find_map(|(kind, id)| {
            id.filter(|i| !i.is_empty()).map(|id| NextHop::Other {
                kind: kind.to_owned(),
                id: id.to_owned(),
            })
        })
        .unwrap_or(NextHop::Other {
            kind: "unknown".to_owned(),
            id: String::new(),
        })
}
