//! Alibaba's JSON answers (private serde shapes, field names as Alibaba
//! spells them) and their translation into the cloud-neutral model.
//!
//! Alibaba wraps every list in an object named after the element
//! (`NetworkInterfaceSets.NetworkInterfaceSet[]`), omits empty fields, and
//! mixes tag spellings (`TagKey`/`TagValue` in ECS, `Key`/`Value` in VPC);
//! every field defaults so a missing one is an empty value, and the
//! conversions below decide which empties are errors.

use crate::error::{CloudError, CloudResult, ErrorKind};
use crate::model::{
    Eni, EniStatus, NextHop, RouteEntry, RouteEntryStatus, RouteTable, Subnet, Tags,
};
use chrono::{DateTime, Utc};
use ipam::ids::{EniId, InstanceId, RouteTableId, SecurityGroupId, SubnetId, VpcId, ZoneId};
use ipnet::Ipv4Net;
use serde::{Deserialize, Deserializer};
use std::net::Ipv4Addr;

/// Numbers sometimes come as strings in Alibaba answers; accept both.
fn de_u32<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Num {
        N(u64),
        S(String),
    }
    Ok(match Option::<Num>::deserialize(d)? {
        None => None,
        Some(Num::N(n)) => u32::try_from(n).ok(),
        Some(Num::S(s)) => s.trim().parse().ok(),
    })
}

#[derive(Deserialize, Default, Debug)]
#[serde(rename_all = "PascalCase", default)]
pub(super) struct Tag {
    #[serde(alias = "Key")]
    pub tag_key: String,
    #[serde(alias = "Value")]
    pub tag_value: String,
}

#[derive(Deserialize, Default, Debug)]
#[serde(rename_all = "PascalCase", default)]
pub(super) struct TagList {
    pub tag: Vec<Tag>,
}

impl TagList {
    fn to_tags(&self) -> Tags {
        self.tag
            .iter()
            .map(|t| (t.tag_key.clone(), t.tag_value.clone()))
            .collect()
    }
}

// ---------- ECS: network interfaces ----------

#[derive(Deserialize, Default, Debug)]
#[serde(rename_all = "PascalCase", default)]
pub(super) struct PrivateIpSet {
    pub private_ip_address: String,
    pub primary: bool,
}

#[derive(Deserialize, Default, Debug)]
#[serde(rename_all = "PascalCase", default)]
pub(super) struct PrivateIpSets {
    pub private_ip_set: Vec<PrivateIpSet>,
}

#[derive(Deserialize, Default, Debug)]
#[serde(rename_all = "PascalCase", default)]
pub(super) struct SecurityGroupIds {
    pub security_group_id: Vec<String>,
}

#[derive(Deserialize, Default, Debug)]
#[serde(rename_all = "PascalCase", default)]
pub(super) struct Attachment {
    pub instance_id: String,
    #[serde(deserialize_with = "de_u32")]
    pub device_index: Option<u32>,
}

/// One ENI as `DescribeNetworkInterfaces` and `CreateNetworkInterface`
/// describe it.
#[derive(Deserialize, Default, Debug)]
#[serde(rename_all = "PascalCase", default)]
pub(super) struct NetworkInterfaceSet {
    pub network_interface_id: String,
    pub status: String,
    /// `Primary` or `Secondary`.
    #[serde(rename = "Type")]
    pub kind: String,
    pub vpc_id: String,
    pub v_switch_id: String,
    pub zone_id: String,
    pub private_ip_address: String,
    pub mac_address: String,
    pub description: String,
    pub instance_id: String,
    pub creation_time: String,
    pub security_group_ids: SecurityGroupIds,
    pub private_ip_sets: PrivateIpSets,
    pub tags: TagList,
    pub attachment: Option<Attachment>,
}

#[derive(Deserialize, Default, Debug)]
#[serde(rename_all = "PascalCase", default)]
pub(super) struct NetworkInterfaceSets {
    pub network_interface_set: Vec<NetworkInterfaceSet>,
}

#[derive(Deserialize, Default, Debug)]
#[serde(rename_all = "PascalCase", default)]
pub(super) struct DescribeNetworkInterfacesResponse {
    pub network_interface_sets: NetworkInterfaceSets,
    pub next_token: String,
    #[serde(deserialize_with = "de_u32")]
    pub total_count: Option<u32>,
}

/// `CreateNetworkInterface` answers with (most of) the ENI's fields.
pub(super) type CreateNetworkInterfaceResponse = NetworkInterfaceSet;

#[derive(Deserialize, Default, Debug)]
#[serde(rename_all = "PascalCase", default)]
pub(super) struct AssignedPrivateIpSet {
    pub private_ip_address: Vec<String>,
}

#[derive(Deserialize, Default, Debug)]
#[serde(rename_all = "PascalCase", default)]
pub(super) struct AssignedPrivateIpAddressesSet {
    pub network_interface_id: String,
    pub private_ip_set: AssignedPrivateIpSet,
}

#[derive(Deserialize, Default, Debug)]
#[serde(rename_all = "PascalCase", default)]
pub(super) struct AssignPrivateIpAddressesResponse {
    pub assigned_private_ip_addresses_set: AssignedPrivateIpAddressesSet,
}

/// Answers that carry nothing but a request id.
#[derive(Deserialize, Default, Debug)]
#[serde(rename_all = "PascalCase", default)]
pub(super) struct Empty {
    pub request_id: String,
}

// ---------- ECS: instances and instance types ----------

#[derive(Deserialize, Default, Debug)]
#[serde(rename_all = "PascalCase", default)]
pub(super) struct IpAddressList {
    pub ip_address: Vec<String>,
}

#[derive(Deserialize, Default, Debug)]
#[serde(rename_all = "PascalCase", default)]
pub(super) struct VpcAttributes {
    pub vpc_id: String,
    pub v_switch_id: String,
    pub private_ip_address: IpAddressList,
}

#[derive(Deserialize, Default, Debug)]
#[serde(rename_all = "PascalCase", default)]
pub(super) struct InstanceNetworkInterface {
    pub network_interface_id: String,
    #[serde(rename = "Type")]
    pub kind: String,
    pub primary_ip_address: String,
}

#[derive(Deserialize, Default, Debug)]
#[serde(rename_all = "PascalCase", default)]
pub(super) struct InstanceNetworkInterfaces {
    pub network_interface: Vec<InstanceNetworkInterface>,
}

#[derive(Deserialize, Default, Debug)]
#[serde(rename_all = "PascalCase", default)]
pub(super) struct EcsInstance {
    pub instance_id: String,
    pub instance_type: String,
    pub zone_id: String,
    pub vpc_attributes: VpcAttributes,
    pub network_interfaces: InstanceNetworkInterfaces,
}

#[derive(Deserialize, Default, Debug)]
#[serde(rename_all = "PascalCase", default)]
pub(super) struct EcsInstances {
    pub instance: Vec<EcsInstance>,
}

#[derive(Deserialize, Default, Debug)]
#[serde(rename_all = "PascalCase", default)]
pub(super) struct DescribeInstancesResponse {
    pub instances: EcsInstances,
}

#[derive(Deserialize, Default, Debug)]
#[serde(rename_all = "PascalCase", default)]
pub(super) struct InstanceTypeEntry {
    pub instance_type_id: String,
    #[serde(deserialize_with = "de_u32")]
    pub eni_quantity: Option<u32>,
    #[serde(deserialize_with = "de_u32")]
    pub eni_private_ip_address_quantity: Option<u32>,
}

#[derive(Deserialize, Default, Debug)]
#[serde(rename_all = "PascalCase", default)]
pub(super) struct InstanceTypeList {
    pub instance_type: Vec<InstanceTypeEntry>,
}

#[derive(Deserialize, Default, Debug)]
#[serde(rename_all = "PascalCase", default)]
pub(super) struct DescribeInstanceTypesResponse {
    pub instance_types: InstanceTypeList,
    pub next_token: String,
}

// ---------- VPC: vSwitches, route tables, route entries ----------

#[derive(Deserialize, Default, Debug)]
#[serde(rename_all = "PascalCase", default)]
pub(super) struct VSwitch {
    pub v_switch_id: String,
    pub vpc_id: String,
    pub zone_id: String,
    pub cidr_block: String,
    #[serde(deserialize_with = "de_u32")]
    pub available_ip_address_count: Option<u32>,
}

#[derive(Deserialize, Default, Debug)]
#[serde(rename_all = "PascalCase", default)]
pub(super) struct VSwitchList {
    pub v_switch: Vec<VSwitch>,
}

#[derive(Deserialize, Default, Debug)]
#[serde(rename_all = "PascalCase", default)]
pub(super) struct DescribeVSwitchesResponse {
    pub v_switches: VSwitchList,
}

#[derive(Deserialize, Default, Debug)]
#[serde(rename_all = "PascalCase", default)]
pub(super) struct RouterTableListType {
    pub route_table_id: String,
    pub vpc_id: String,
    /// `System` for the VPC's main table, `Custom` otherwise.
    pub route_table_type: String,
    pub tags: TagList,
}

#[derive(Deserialize, Default, Debug)]
#[serde(rename_all = "PascalCase", default)]
pub(super) struct RouterTableList {
    pub router_table_list_type: Vec<RouterTableListType>,
}

#[derive(Deserialize, Default, Debug)]
#[serde(rename_all = "PascalCase", default)]
pub(super) struct DescribeRouteTableListResponse {
    pub router_table_list: RouterTableList,
    #[serde(deserialize_with = "de_u32")]
    pub total_count: Option<u32>,
    #[serde(deserialize_with = "de_u32")]
    pub page_number: Option<u32>,
    #[serde(deserialize_with = "de_u32")]
    pub page_size: Option<u32>,
}

#[derive(Deserialize, Default, Debug)]
#[serde(rename_all = "PascalCase", default)]
pub(super) struct RouteNextHop {
    pub next_hop_type: String,
    pub next_hop_id: String,
}

#[derive(Deserialize, Default, Debug)]
#[serde(rename_all = "PascalCase", default)]
pub(super) struct RouteNextHops {
    pub next_hop: Vec<RouteNextHop>,
}

#[derive(Deserialize, Default, Debug)]
#[serde(rename_all = "PascalCase", default)]
pub(super) struct WireRouteEntry {
    pub route_table_id: String,
    pub destination_cidr_block: String,
    /// `System`, `Custom`, `BGP`...
    #[serde(rename = "Type")]
    pub kind: String,
    pub status: String,
    pub route_entry_name: String,
    pub description: String,
    pub instance_id: String,
    pub next_hop_type: String,
    pub next_hops: RouteNextHops,
}

#[derive(Deserialize, Default, Debug)]
#[serde(rename_all = "PascalCase", default)]
pub(super) struct RouteEntrys {
    pub route_entry: Vec<WireRouteEntry>,
}

#[derive(Deserialize, Default, Debug)]
#[serde(rename_all = "PascalCase", default)]
pub(super) struct DescribeRouteEntryListResponse {
    pub route_entrys: RouteEntrys,
    pub next_token: String,
}

#[derive(Deserialize, Default, Debug)]
#[serde(rename_all = "PascalCase", default)]
pub(super) struct FailedRouteEntry {
    pub dst_cidr_block: String,
    pub next_hop: String,
    pub failed_code: String,
    pub failed_message: String,
}

/// What `CreateRouteEntries` and `DeleteRouteEntries` answer.
#[derive(Deserialize, Default, Debug)]
#[serde(rename_all = "PascalCase", default)]
pub(super) struct RouteEntriesBatchResponse {
    pub request_id: String,
    #[serde(deserialize_with = "de_u32")]
    pub success_count: Option<u32>,
    #[serde(deserialize_with = "de_u32")]
    pub failed_count: Option<u32>,
    pub failed_route_entries: Vec<FailedRouteEntry>,
}

// ---------- translations ----------

fn malformed(api: &str, what: impl Into<String>) -> CloudError {
    CloudError::new(
        ErrorKind::InvalidRequest,
        api,
        "UnparsableResponse",
        what.into(),
    )
}

fn non_empty(s: &str) -> Option<&str> {
    let s = s.trim();
    (!s.is_empty()).then_some(s)
}

pub(super) fn parse_ip(api: &str, field: &str, value: &str) -> CloudResult<Ipv4Addr> {
    value
        .trim()
        .parse()
        .map_err(|_| malformed(api, format!("{field} is not an IPv4 address: {value:?}")))
}

pub(super) fn eni_status(api: &str, status: &str) -> CloudResult<EniStatus> {
    Ok(match status {
        "Creating" => EniStatus::Creating,
        "Available" => EniStatus::Available,
        "Attaching" => EniStatus::Attaching,
        "InUse" => EniStatus::InUse,
        "Detaching" => EniStatus::Detaching,
        "Deleting" => EniStatus::Deleting,
        other => return Err(malformed(api, format!("unknown ENI status {other:?}"))),
    })
}

/// The wire status an [`EniStatus`] filter is sent as.
pub(super) fn eni_status_name(status: EniStatus) -> &'static str {
    match status {
        EniStatus::Creating => "Creating",
        EniStatus::Available => "Available",
        EniStatus::Attaching => "Attaching",
        EniStatus::InUse => "InUse",
        EniStatus::Detaching => "Detaching",
        EniStatus::Deleting => "Deleting",
    }
}

/// The ENIs of one DescribeNetworkInterfaces page. One ENI the answer
/// describes in a way we cannot read (a status added after this was written)
/// is left out and reported, so it does not fail the whole page (and with it
/// every node's capacity and every allocation listed on it).
pub(super) fn page_enis(sets: &[NetworkInterfaceSet], api: &str) -> Vec<Eni> {
    let mut out = Vec::with_capacity(sets.len());
    for set in sets {
        match set.to_eni(api) {
            Ok(eni) => out.push(eni),
            Err(e) => tracing::warn!(
                api,
                eni = %set.network_interface_id,
                status = %set.status,
                error = %e,
                "left an ENI out of the listing: its description cannot be read"
            ),
        }
    }
    out
}

impl NetworkInterfaceSet {
    pub(super) fn is_primary(&self) -> bool {
        self.kind.eq_ignore_ascii_case("Primary")
    }

    /// The instance the ENI is attached to (or attaching to), if any.
    pub(super) fn attached_instance(&self) -> Option<&str> {
        non_empty(&self.instance_id).or_else(|| {
            self.attachment
                .as_ref()
                .and_then(|a| non_empty(&a.instance_id))
        })
    }

    pub(super) fn to_eni(&self, api: &str) -> CloudResult<Eni> {
        let id = non_empty(&self.network_interface_id)
            .ok_or_else(|| malformed(api, "an ENI without NetworkInterfaceId"))?;
        let status = eni_status(api, &self.status)?;
        // The primary address is in PrivateIpAddress and again, flagged
        // Primary, in PrivateIpSets; the secondaries only in the latter.
        let primary_ip = match non_empty(&self.private_ip_address) {
            Some(ip) => parse_ip(api, "PrivateIpAddress", ip)?,
            None => {
                let flagged = self
                    .private_ip_sets
                    .private_ip_set
                    .iter()
                    .find(|s| s.primary)
                    .ok_or_else(|| malformed(api, format!("ENI {id} has no primary address")))?;
                parse_ip(api, "PrivateIpSet", &flagged.private_ip_address)?
            }
        };
        let mut secondary_ips = Vec::new();
        for set in &self.private_ip_sets.private_ip_set {
            let ip = parse_ip(api, "PrivateIpSet", &set.private_ip_address)?;
            if !set.primary && ip != primary_ip {
                secondary_ips.push(ip);
            }
        }
        let device_index = self
            .attachment
            .as_ref()
            .and_then(|a| a.device_index)
            .or_else(|| self.is_primary().then_some(0));
        Ok(Eni {
            id: EniId::new(id),
            mac: self.mac_address.clone(),
            status,
            subnet_id: SubnetId::new(self.v_switch_id.clone()),
            vpc_id: VpcId::new(self.vpc_id.clone()),
            zone: ZoneId::new(self.zone_id.clone()),
            primary_ip,
            secondary_ips,
            instance_id: self.attached_instance().map(InstanceId::new),
            device_index,
            security_groups: self
                .security_group_ids
                .security_group_id
                .iter()
                .map(|s| SecurityGroupId::new(s.clone()))
                .collect(),
            tags: self.tags.to_tags(),
            description: self.description.clone(),
            created_at: non_empty(&self.creation_time)
                .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
                .map(|t| t.with_timezone(&Utc)),
        })
    }
}

/// The default gateway of a vSwitch. Alibaba reserves the first and the last
/// three addresses of every vSwitch CIDR and uses the third-from-last
/// (`x.x.x.253` in a /24) as the gateway, which is what the ECS metadata
/// service reports as an ENI's gateway.
pub fn vswitch_gateway(cidr: Ipv4Net) -> Ipv4Addr {
    let last = u32::from(cidr.broadcast());
    let first = u32::from(cidr.network());
    Ipv4Addr::from(last.saturating_sub(2).max(first))
}

impl VSwitch {
    pub(super) fn to_subnet(&self, api: &str) -> CloudResult<Subnet> {
        let cidr: Ipv4Net = self.cidr_block.trim().parse().map_err(|_| {
            malformed(
                api,
                format!("CidrBlock of {} is not an IPv4 CIDR", self.v_switch_id),
            )
        })?;
        Ok(Subnet {
            id: SubnetId::new(self.v_switch_id.clone()),
            vpc_id: VpcId::new(self.vpc_id.clone()),
            zone: ZoneId::new(self.zone_id.clone()),
            cidr,
            free_ips: self.available_ip_address_count.unwrap_or(0),
            gateway: vswitch_gateway(cidr),
        })
    }
}

impl RouterTableListType {
    pub(super) fn to_route_table(&self) -> RouteTable {
        RouteTable {
            id: RouteTableId::new(self.route_table_id.clone()),
            vpc_id: VpcId::new(self.vpc_id.clone()),
            main: self.route_table_type.eq_ignore_ascii_case("System"),
            tags: self.tags.to_tags(),
        }
    }
}

fn route_status(status: &str) -> RouteEntryStatus {
    match status {
        "Available" | "Created" => RouteEntryStatus::Available,
        "Modifying" => RouteEntryStatus::Modifying,
        "Deleting" | "Deleted" => RouteEntryStatus::Deleting,
        // `Pending`, `Creating`, and anything new: not settled yet.
        _ => RouteEntryStatus::Pending,
    }
}

impl WireRouteEntry {
    /// `None` for entries the contract cannot express (IPv6, prefix lists).
    pub(super) fn to_route_entry(&self, table: &RouteTableId) -> Option<RouteEntry> {
        let destination: Ipv4Net = self.destination_cidr_block.trim().parse().ok()?;
        let system = self.kind.eq_ignore_ascii_case("System");
        let (hop_type, hop_id) = match self.next_hops.next_hop.first() {
            Some(h) if non_empty(&h.next_hop_type).is_some() => {
                (h.next_hop_type.as_str(), h.next_hop_id.as_str())
            }
            _ => (self.next_hop_type.as_str(), self.instance_id.as_str()),
        };
        let next_hop = match (hop_type, non_empty(hop_id)) {
            ("Instance", Some(id)) => NextHop::Instance(InstanceId::new(id)),
            (t, _) if t.eq_ignore_ascii_case("local") => NextHop::Local,
            ("", None) if system => NextHop::Local,
            (t, id) => NextHop::Other {
                kind: t.to_owned(),
                id: id.unwrap_or_default().to_owned(),
            },
        };
        Some(RouteEntry {
            route_table_id: non_empty(&self.route_table_id)
                .map(RouteTableId::new)
                .unwrap_or_else(|| table.clone()),
            destination,
            next_hop,
            status: route_status(&self.status),
            name: Some(self.route_entry_name.clone()),
            description: Some(self.description.clone()),
            system,
        })
    }
}

/// Every response parser and conversion of this file on one answer body, as
/// the `fuzz/` targets drive them (feature `fuzzing`): whatever the bytes,
/// this returns; it never panics.
#[cfg(feature = "fuzzing")]
pub fn read_any_answer(bytes: &[u8]) {
    const API: &str = "Fuzz";
    if let Ok(r) = serde_json::from_slice::<DescribeNetworkInterfacesResponse>(bytes) {
        let _ = page_enis(&r.network_interface_sets.network_interface_set, API);
    }
    if let Ok(r) = serde_json::from_slice::<CreateNetworkInterfaceResponse>(bytes) {
        let _ = r.to_eni(API);
    }
    let _ = serde_json::from_slice::<AssignPrivateIpAddressesResponse>(bytes);
    let _ = serde_json::from_slice::<DescribeInstancesResponse>(bytes);
    let _ = serde_json::from_slice::<DescribeInstanceTypesResponse>(bytes);
    if let Ok(r) = serde_json::from_slice::<DescribeVSwitchesResponse>(bytes) {
        for v in &r.v_switches.v_switch {
            let _ = v.to_subnet(API);
        }
    }
    if let Ok(r) = serde_json::from_slice::<DescribeRouteTableListResponse>(bytes) {
        for t in &r.router_table_list.router_table_list_type {
            let _ = t.to_route_table();
        }
    }
    if let Ok(r) = serde_json::from_slice::<DescribeRouteEntryListResponse>(bytes) {
        let table = RouteTableId::new("vtb-fuzz");
        for e in &r.route_entrys.route_entry {
            let _ = e.to_route_entry(&table);
        }
    }
    let _ = serde_json::from_slice::<RouteEntriesBatchResponse>(bytes);
}

#[cfg(test)]
mod tests {
    use super::*;

    const API: &str = "DescribeNetworkInterfaces";

    #[test]
    fn describe_network_interfaces_answer_parses() {
        let json = r#"{
          "RequestId": "4D9D7A3D-7F1B-4B1E-9F7A-2E9C2E1B7C11",
          "TotalCount": 2, "PageNumber": 1, "PageSize": 10, "NextToken": "tok-2",
          "NetworkInterfaceSets": {"NetworkInterfaceSet": [
            {"NetworkInterfaceId": "eni-bp1primary", "Status": "InUse", "Type": "Primary",
             "VpcId": "vpc-1", "VSwitchId": "vsw-1", "ZoneId": "cn-hangzhou-h",
             "PrivateIpAddress": "192.168.0.10", "MacAddress": "00:16:3e:00:00:01",
             "InstanceId": "i-node1", "CreationTime": "2026-11-20T10:00:00Z",
             "SecurityGroupIds": {"SecurityGroupId": ["sg-1"]},
             "PrivateIpSets": {"PrivateIpSet": [{"PrivateIpAddress": "192.168.0.10", "Primary": true}]},
             "Tags": {"Tag": []}},
            {"NetworkInterfaceId": "eni-bp1pods", "Status": "InUse", "Type": "Secondary",
             "VpcId": "vpc-1", "VSwitchId": "vsw-2", "ZoneId": "cn-hangzhou-h",
             "PrivateIpAddress": "192.168.1.20", "MacAddress": "00:16:3e:00:00:02",
             "InstanceId": "i-node1", "Description": "pods of node1",
             "Attachment": {"InstanceId": "i-node1", "DeviceIndex": 2},
             "SecurityGroupIds": {"SecurityGroupId": ["sg-1", "sg-2"]},
             "PrivateIpSets": {"PrivateIpSet": [
               {"PrivateIpAddress": "192.168.1.20", "Primary": true},
               {"PrivateIpAddress": "192.168.1.21", "Primary": false},
               {"PrivateIpAddress": "192.168.1.22", "Primary": false}]},
             "Tags": {"Tag": [{"TagKey": "vpc-eni-controller/cluster", "TagValue": "c1"}]}}
          ]}}"#;
        let parsed: DescribeNetworkInterfacesResponse = serde_json::from_str(json).unwrap();
        assert_eq!(parsed.next_token, "tok-2");
        let enis: Vec<Eni> = parsed
            .network_interface_sets
            .network_interface_set
            .iter()
            .map(|e| e.to_eni(API).unwrap())
            .collect();
        assert_eq!(enis[0].device_index, Some(0));
        assert!(enis[0].secondary_ips.is_empty());
        assert_eq!(
            enis[0].created_at.map(|t| t.to_rfc3339()),
            Some("2026-11-20T10:00:00+00:00".into())
        );
        let pods = &enis[1];
        assert_eq!(pods.id.as_str(), "eni-bp1pods");
        assert_eq!(pods.status, EniStatus::InUse);
        assert_eq!(pods.primary_ip, "192.168.1.20".parse::<Ipv4Addr>().unwrap());
        assert_eq!(
            pods.secondary_ips,
            vec![
                "192.168.1.21".parse::<Ipv4Addr>().unwrap(),
                "192.168.1.22".parse().unwrap()
            ]
        );
        assert_eq!(pods.device_index, Some(2));
        assert_eq!(
            pods.instance_id.as_ref().map(|i| i.as_str()),
            Some("i-node1")
        );
        assert_eq!(pods.security_groups.len(), 2);
        assert_eq!(
            pods.tags
                .get("vpc-eni-controller/cluster")
                .map(String::as_str),
            Some("c1")
        );
        assert_eq!(pods.subnet_id.as_str(), "vsw-2");
        assert_eq!(pods.mac, "00:16:3e:00:00:02");
    }

    #[test]
    fn unknown_eni_status_is_an_error_not_a_guess() {
        let e = NetworkInterfaceSet {
            network_interface_id: "eni-1".into(),
            status: "Exploded".into(),
            private_ip_address: "10.0.0.1".into(),
            ..Default::default()
        };
        let err = e.to_eni(API).unwrap_err();
        assert_eq!(err.code, "UnparsableResponse");
    }

    #[test]
    fn one_unreadable_eni_is_left_out_of_its_page_and_the_rest_listed() {
        let set = |id: &str, status: &str| NetworkInterfaceSet {
            network_interface_id: id.into(),
            status: status.into(),
            private_ip_address: "10.0.0.1".into(),
            ..Default::default()
        };
        let page = [
            set("eni-odd", "Hibernating"),
            set("eni-a", "InUse"),
            set("eni-b", "Available"),
        ];
        let enis = page_enis(&page, API);
        let ids: Vec<&str> = enis.iter().map(|e| e.id.as_str()).collect();
        assert_eq!(ids, ["eni-a", "eni-b"]);
    }

    #[test]
    fn assign_answer_parses() {
        let json = r#"{"RequestId":"R","AssignedPrivateIpAddressesSet":{"NetworkInterfaceId":"eni-1",
            "PrivateIpSet":{"PrivateIpAddress":["10.0.0.5","10.0.0.6"]}}}"#;
        let parsed: AssignPrivateIpAddressesResponse = serde_json::from_str(json).unwrap();
        assert_eq!(
            parsed
                .assigned_private_ip_addresses_set
                .private_ip_set
                .private_ip_address,
            vec!["10.0.0.5", "10.0.0.6"]
        );
    }

    #[test]
    fn describe_instances_and_types_parse() {
        let json = r#"{"RequestId":"R","TotalCount":1,"Instances":{"Instance":[{
            "InstanceId":"i-node1","InstanceType":"ecs.g6.xlarge","ZoneId":"cn-hangzhou-h",
            "VpcAttributes":{"VpcId":"vpc-1","VSwitchId":"vsw-1",
              "PrivateIpAddress":{"IpAddress":["192.168.0.10"]}},
            "NetworkInterfaces":{"NetworkInterface":[
              {"NetworkInterfaceId":"eni-p","Type":"Primary","PrimaryIpAddress":"192.168.0.10"}]}}]}}"#;
        let parsed: DescribeInstancesResponse = serde_json::from_str(json).unwrap();
        let i = &parsed.instances.instance[0];
        assert_eq!(i.instance_type, "ecs.g6.xlarge");
        assert_eq!(
            i.vpc_attributes.private_ip_address.ip_address,
            vec!["192.168.0.10"]
        );
        assert_eq!(i.network_interfaces.network_interface[0].kind, "Primary");

        let json = r#"{"RequestId":"R","InstanceTypes":{"InstanceType":[
            {"InstanceTypeId":"ecs.g6.large","EniQuantity":2,"EniPrivateIpAddressQuantity":6,"EniTotalQuantity":2},
            {"InstanceTypeId":"ecs.g6.xlarge","EniQuantity":"3","EniPrivateIpAddressQuantity":"10"}]}}"#;
        let parsed: DescribeInstanceTypesResponse = serde_json::from_str(json).unwrap();
        let t = &parsed.instance_types.instance_type;
        assert_eq!(
            (t[0].eni_quantity, t[0].eni_private_ip_address_quantity),
            (Some(2), Some(6))
        );
        assert_eq!(
            (t[1].eni_quantity, t[1].eni_private_ip_address_quantity),
            (Some(3), Some(10))
        );
    }

    #[test]
    fn vswitch_answer_parses_with_gateway() {
        let json = r#"{"RequestId":"R","TotalCount":1,"PageNumber":1,"PageSize":10,
            "VSwitches":{"VSwitch":[{"VSwitchId":"vsw-1","VpcId":"vpc-1","ZoneId":"cn-hangzhou-h",
            "CidrBlock":"192.168.0.0/24","AvailableIpAddressCount":250,"Status":"Available"}]}}"#;
        let parsed: DescribeVSwitchesResponse = serde_json::from_str(json).unwrap();
        let s = parsed.v_switches.v_switch[0]
            .to_subnet("DescribeVSwitches")
            .unwrap();
        assert_eq!(s.free_ips, 250);
        assert_eq!(s.cidr, "192.168.0.0/24".parse::<Ipv4Net>().unwrap());
        assert_eq!(s.gateway, "192.168.0.253".parse::<Ipv4Addr>().unwrap());
        assert_eq!(
            vswitch_gateway("172.16.0.0/20".parse().unwrap()),
            "172.16.15.253".parse::<Ipv4Addr>().unwrap()
        );
    }

    #[test]
    fn route_tables_and_entries_parse() {
        let json = r#"{"RequestId":"R","Success":true,"TotalCount":2,"PageNumber":1,"PageSize":50,
            "RouterTableList":{"RouterTableListType":[
              {"RouteTableId":"vtb-main","VpcId":"vpc-1","RouteTableType":"System","Tags":{"Tag":[]}},
              {"RouteTableId":"vtb-c","VpcId":"vpc-1","RouteTableType":"Custom",
               "Tags":{"Tag":[{"Key":"k","Value":"v"}]}}]}}"#;
        let parsed: DescribeRouteTableListResponse = serde_json::from_str(json).unwrap();
        let tables: Vec<RouteTable> = parsed
            .router_table_list
            .router_table_list_type
            .iter()
            .map(RouterTableListType::to_route_table)
            .collect();
        assert!(tables[0].main && !tables[1].main);
        assert_eq!(tables[1].tags.get("k").map(String::as_str), Some("v"));

        let json = r#"{"RequestId":"R","NextToken":"",
            "RouteEntrys":{"RouteEntry":[
              {"RouteTableId":"vtb-main","DestinationCidrBlock":"192.168.0.0/24","Type":"System",
               "Status":"Available","NextHopType":"local","NextHops":{"NextHop":[]}},
              {"RouteTableId":"vtb-main","DestinationCidrBlock":"10.244.1.0/24","Type":"Custom",
               "Status":"Pending","RouteEntryName":"vpc-eni-controller","Description":"node-a",
               "NextHops":{"NextHop":[{"NextHopType":"Instance","NextHopId":"i-a"}]}},
              {"RouteTableId":"vtb-main","DestinationCidrBlock":"0.0.0.0/0","Type":"Custom",
               "Status":"Available","NextHops":{"NextHop":[{"NextHopType":"NatGateway","NextHopId":"ngw-1"}]}},
              {"RouteTableId":"vtb-main","DestinationCidrBlock":"2408:4000::/56","Type":"System","Status":"Available"}
            ]}}"#;
        let parsed: DescribeRouteEntryListResponse = serde_json::from_str(json).unwrap();
        let table = RouteTableId::new("vtb-main");
        let entries: Vec<RouteEntry> = parsed
            .route_entrys
            .route_entry
            .iter()
            .filter_map(|e| e.to_route_entry(&table))
            .collect();
        assert_eq!(entries.len(), 3, "the IPv6 entry is left out");
        assert!(entries[0].system);
        assert_eq!(entries[0].next_hop, NextHop::Local);
        assert_eq!(
            entries[1].next_hop,
            NextHop::Instance(InstanceId::new("i-a"))
        );
        assert_eq!(entries[1].status, RouteEntryStatus::Pending);
        assert_eq!(entries[1].name.as_deref(), Some("vpc-eni-controller"));
        assert_eq!(entries[1].description.as_deref(), Some("node-a"));
        assert_eq!(
            entries[2].next_hop,
            NextHop::Other {
                kind: "NatGateway".into(),
                id: "ngw-1".into()
            }
        );
    }

    #[test]
    fn batch_answer_parses() {
        let json = r#"{"RequestId":"R","SuccessCount":1,"FailedCount":1,"RouteEntryIds":["rte-1"],
            "FailedRouteEntries":[{"DstCidrBlock":"10.244.2.0/24","NextHop":"i-b",
            "FailedCode":"VPC_ROUTE_ENTRY_CIDR_BLOCK_DUPLICATE","FailedMessage":"Specified CIDR block is already exists"}]}"#;
        let parsed: RouteEntriesBatchResponse = serde_json::from_str(json).unwrap();
        assert_eq!(parsed.failed_count, Some(1));
        assert_eq!(
            parsed.failed_route_entries[0].dst_cidr_block,
            "10.244.2.0/24"
        );
        assert_eq!(
            parsed.failed_route_entries[0].failed_code,
            "VPC_ROUTE_ENTRY_CIDR_BLOCK_DUPLICATE"
        );
    }

    mod arbitrary_input {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(1000))]

            /// Whatever the cloud (or something in between) answers, the
            /// response parsers never panic: they read it or fail with an
            /// error the caller handles.
            #[test]
            fn any_answer_parses_or_fails_cleanly(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
                if let Ok(r) = serde_json::from_slice::<DescribeNetworkInterfacesResponse>(&bytes) {
                    let _ = page_enis(&r.network_interface_sets.network_interface_set, API);
                }
                let _ = serde_json::from_slice::<AssignPrivateIpAddressesResponse>(&bytes);
            }

            #[test]
            fn any_eni_fields_convert_or_fail_cleanly(
                id in "\\PC{0,12}", status in "\\PC{0,12}", ip in "\\PC{0,20}",
                sec in proptest::collection::vec("\\PC{0,20}", 0..4), index in any::<Option<u32>>(),
            ) {
                let json = serde_json::json!({
                    "NetworkInterfaceSets": {"NetworkInterfaceSet": [{
                        "NetworkInterfaceId": id, "Status": status, "PrivateIpAddress": ip,
                        "CreationTime": ip,
                        "Attachment": {"DeviceIndex": index},
                        "PrivateIpSets": {"PrivateIpSet": sec.iter().map(|a| serde_json::json!({"PrivateIpAddress": a, "Primary": false})).collect::<Vec<_>>()},
                    }]}
                });
                if let Ok(r) = serde_json::from_value::<DescribeNetworkInterfacesResponse>(json) {
                    let _ = page_enis(&r.network_interface_sets.network_interface_set, API);
                }
            }
        }
    }
}
