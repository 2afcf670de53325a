//! VPC actions (Version 2016-04-28): vSwitches, route tables and route
//! entries (single and batch), answered in VPC's JSON shapes. Route entries
//! get stable ids derived from table and destination, since the model keys
//! entries by destination.

use super::actions::{page, parse_destination, route_entry_id, token_page, ActionResult};
use super::error::ApiError;
use super::params::Params;
use crate::cloud::World;
use ipam::ids::{InstanceId, RouteTableId, SubnetId, VpcId};
use ipnet::Ipv4Net;
use providers::model::{
    BatchOutcome, NewRouteEntry, NextHop, RouteEntry, RouteEntryStatus, RouteTable, Subnet,
};
use providers::{Cloud, ErrorKind};
use serde_json::{json, Value};
use std::collections::BTreeMap;

/// The main (system) table of each VPC, read without counting a call.
fn main_tables(world: &World) -> BTreeMap<VpcId, RouteTableId> {
    world
        .snapshot()
        .route_tables
        .into_iter()
        .filter(|t| t.table.main)
        .map(|t| (t.table.vpc_id, t.table.id))
        .collect()
}

pub async fn describe_vswitches(world: &World, p: &Params) -> ActionResult {
    let ids: Vec<SubnetId> = p
        .get("VSwitchId")
        .map(|v| {
            v.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(SubnetId::new)
                .collect()
        })
        .unwrap_or_default();
    let mut subnets = world.describe_subnets(&ids).await?;
    let vpc = p.get("VpcId");
    let zone = p.get("ZoneId");
    subnets.retain(|s| vpc.is_none_or(|v| s.vpc_id.as_str() == v));
    subnets.retain(|s| zone.is_none_or(|z| s.zone.as_str() == z));
    subnets.sort_by(|a, b| a.id.cmp(&b.id));
    let tables = main_tables(world);
    let (items, number, size, total) = page(subnets, p, 10, 50)?;
    let items: Vec<Value> = items
        .iter()
        .map(|s| vswitch_json(s, tables.get(&s.vpc_id)))
        .collect();
    Ok(json!({
        "VSwitches": {"VSwitch": items},
        "TotalCount": total,
        "PageNumber": number,
        "PageSize": size,
    }))
}

fn vswitch_json(s: &Subnet, table: Option<&RouteTableId>) -> Value {
    json!({
        "VSwitchId": s.id,
        "VpcId": s.vpc_id,
        "ZoneId": s.zone,
        "CidrBlock": s.cidr.to_string(),
        "AvailableIpAddressCount": s.free_ips,
        "Status": "Available",
        "VSwitchName": "",
        "Description": "",
        "IsDefault": false,
        "ResourceGroupId": "",
        "RouteTable": {
            "RouteTableId": table.map(|t| t.to_string()).unwrap_or_default(),
            "RouteTableType": "System",
        },
        "Tags": {"Tag": []},
    })
}

pub async fn describe_route_table_list(world: &World, p: &Params) -> ActionResult {
    let snap = world.snapshot();
    let vpcs: Vec<VpcId> = if let Some(v) = p.get("VpcId") {
        vec![VpcId::new(v)]
    } else if let Some(t) = p.get("RouteTableId") {
        snap.route_tables
            .iter()
            .filter(|s| s.table.id.as_str() == t)
            .map(|s| s.table.vpc_id.clone())
            .collect()
    } else {
        let mut all: Vec<VpcId> = snap
            .route_tables
            .iter()
            .map(|s| s.table.vpc_id.clone())
            .collect();
        all.dedup();
        all
    };
    let mut tables: Vec<RouteTable> = Vec::new();
    if vpcs.is_empty() {
        // An unknown table id still costs the caller one call.
        match world.describe_route_tables(&VpcId::new("")).await {
            Ok(_) => {}
            Err(err) if err.kind == ErrorKind::NotFound => {}
            Err(err) => return Err(err.into()),
        }
    }
    for vpc in &vpcs {
        tables.extend(world.describe_route_tables(vpc).await?);
    }
    let id = p.get("RouteTableId");
    let kind = p.get("RouteTableType");
    tables.retain(|t| id.is_none_or(|i| t.id.as_str() == i));
    tables.retain(|t| kind.is_none_or(|k| (k == "System") == t.main));
    tables.sort_by(|a, b| a.id.cmp(&b.id));
    let (items, number, size, total) = page(tables, p, 10, 50)?;
    let items: Vec<Value> = items
        .iter()
        .map(|t| {
            let vswitches: Vec<&SubnetId> = if t.main {
                snap.subnets
                    .iter()
                    .filter(|s| s.vpc_id == t.vpc_id)
                    .map(|s| &s.id)
                    .collect()
            } else {
                Vec::new()
            };
            let tags: Vec<Value> = t
                .tags
                .iter()
                .map(|(k, v)| json!({"Key": k, "Value": v}))
                .collect();
            json!({
                "RouteTableId": t.id,
                "VpcId": t.vpc_id,
                "RouteTableType": if t.main { "System" } else { "Custom" },
                "RouterType": "VRouter",
                "RouterId": format!("vrt-{}", t.vpc_id.as_str().trim_start_matches("vpc-")),
                "Status": "Available",
                "RouteTableName": "",
                "Description": "",
                "ResourceGroupId": "",
                "Tags": {"Tag": tags},
                "VSwitchIds": {"VSwitchId": vswitches},
            })
        })
        .collect();
    Ok(json!({
        "RouterTableList": {"RouterTableListType": items},
        "TotalCount": total,
        "PageNumber": number,
        "PageSize": size,
    }))
}

fn next_hop_parts(hop: &NextHop) -> (String, String) {
    match hop {
        NextHop::Instance(id) => ("Instance".into(), id.to_string()),
        NextHop::Local => ("local".into(), String::new()),
        NextHop::Other { kind, id } => (kind.clone(), id.clone()),
    }
}

fn entry_status(s: RouteEntryStatus) -> &'static str {
    match s {
        RouteEntryStatus::Pending => "Pending",
        // Blackhole is EC2's; an Alibaba entry keeps showing as Available.
        RouteEntryStatus::Available | RouteEntryStatus::Blackhole => "Available",
        RouteEntryStatus::Modifying => "Modifying",
        RouteEntryStatus::Deleting => "Deleting",
    }
}

fn route_entry_json(e: &RouteEntry, region: &str) -> Value {
    let (hop_type, hop_id) = next_hop_parts(&e.next_hop);
    json!({
        "RouteEntryId": route_entry_id(&e.route_table_id, &e.destination),
        "RouteTableId": e.route_table_id,
        "DestinationCidrBlock": e.destination.to_string(),
        "Type": if e.system { "System" } else { "Custom" },
        "Status": entry_status(e.status),
        "RouteEntryName": e.name.clone().unwrap_or_default(),
        "Description": e.description.clone().unwrap_or_default(),
        "IpVersion": "ipv4",
        "NextHops": {"NextHop": [{
            "NextHopType": hop_type,
            "NextHopId": hop_id,
            "Enabled": 1,
            "NextHopRegionId": region,
        }]},
    })
}

/// A sort key that orders destinations by address, then prefix length.
fn destination_key(net: &Ipv4Net) -> String {
    format!("{:08x}/{:02}", u32::from(net.network()), net.prefix_len())
}

pub async fn describe_route_entry_list(world: &World, p: &Params) -> ActionResult {
    let table = RouteTableId::new(p.required("RouteTableId")?);
    let entries = world.list_route_entries(&table).await?;
    let id = p.get("RouteEntryId");
    let dest = p
        .get("DestinationCidrBlock")
        .map(|d| parse_destination("DestinationCidrBlock", d))
        .transpose()?;
    let name = p.get("RouteEntryName");
    let kind = p.get("RouteEntryType");
    let hop_id = p.get("NextHopId");
    let hop_type = p.get("NextHopType");
    let ipv6_only = p
        .get("IpVersion")
        .is_some_and(|v| v.eq_ignore_ascii_case("ipv6"));
    let entries: Vec<RouteEntry> = entries
        .into_iter()
        .filter(|_| !ipv6_only)
        .filter(|e| id.is_none_or(|i| route_entry_id(&e.route_table_id, &e.destination) == i))
        .filter(|e| dest.is_none_or(|d| e.destination == d))
        .filter(|e| name.is_none_or(|n| e.name.as_deref() == Some(n)))
        .filter(|e| kind.is_none_or(|k| (k == "System") == e.system))
        .filter(|e| hop_id.is_none_or(|h| next_hop_parts(&e.next_hop).1 == h))
        .filter(|e| hop_type.is_none_or(|h| next_hop_parts(&e.next_hop).0 == h))
        .collect();
    let limit = p.u32("MaxResult")?.unwrap_or(50).clamp(1, 100) as usize;
    let (items, next) = token_page(
        entries,
        |e| destination_key(&e.destination),
        p.get("NextToken"),
        limit,
    );
    let region = world.region();
    let items: Vec<Value> = items
        .iter()
        .map(|e| route_entry_json(e, region.as_str()))
        .collect();
    Ok(json!({
        "RouteEntrys": {"RouteEntry": items},
        "NextToken": next,
    }))
}

fn instance_next_hop(name: &str, hop_type: Option<&str>) -> Result<(), ApiError> {
    match hop_type {
        None | Some("Instance") => Ok(()),
        Some(_) => Err(ApiError::invalid(
            name,
            "this fake routes to ECS instances only (Instance)",
        )),
    }
}

fn route_not_found(what: &str) -> ApiError {
    ApiError::new(
        404,
        "InvalidRouteEntry.NotFound",
        format!("The specified route entry does not exist: {what}."),
    )
}

fn first_failure(outcome: BatchOutcome) -> Result<(), ApiError> {
    match outcome.failed.into_iter().next() {
        Some((_, err)) => Err(err.into()),
        None => Ok(()),
    }
}

pub async fn create_route_entry(world: &World, p: &Params) -> ActionResult {
    let table = RouteTableId::new(p.required("RouteTableId")?);
    let destination =
        parse_destination("DestinationCidrBlock", p.required("DestinationCidrBlock")?)?;
    instance_next_hop("NextHopType", p.get("NextHopType"))?;
    let entry = NewRouteEntry {
        destination,
        instance_id: InstanceId::new(p.required("NextHopId")?),
        name: p.get("RouteEntryName").unwrap_or_default().to_owned(),
        description: p.get("Description").unwrap_or_default().to_owned(),
    };
    first_failure(world.create_route_entries(&table, &[entry]).await?)?;
    Ok(json!({ "RouteEntryId": route_entry_id(&table, &destination) }))
}

/// Find an entry by any of table, id and destination, without counting a call.
fn find_entry(
    world: &World,
    table: Option<&str>,
    id: Option<&str>,
    destination: Option<Ipv4Net>,
) -> Option<RouteEntry> {
    world
        .snapshot()
        .route_tables
        .into_iter()
        .filter(|t| table.is_none_or(|x| t.table.id.as_str() == x))
        .flat_map(|t| t.entries)
        .find(|e| {
            id.is_none_or(|i| route_entry_id(&e.route_table_id, &e.destination) == i)
                && destination.is_none_or(|d| e.destination == d)
        })
}

pub async fn delete_route_entry(world: &World, p: &Params) -> ActionResult {
    let id = p.get("RouteEntryId");
    let destination = p
        .get("DestinationCidrBlock")
        .map(|d| parse_destination("DestinationCidrBlock", d))
        .transpose()?;
    if id.is_none() && destination.is_none() {
        return Err(ApiError::missing("DestinationCidrBlock"));
    }
    let found = find_entry(world, p.get("RouteTableId"), id, destination);
    let table = match (p.get("RouteTableId"), &found) {
        (Some(t), _) => RouteTableId::new(t),
        (None, Some(e)) => e.route_table_id.clone(),
        (None, None) => return Err(route_not_found(id.unwrap_or_default())),
    };
    let Some(destination) = destination.or(found.as_ref().map(|e| e.destination)) else {
        return Err(route_not_found(id.unwrap_or_default()));
    };
    let hop = match (p.get("NextHopId"), found.as_ref().map(|e| &e.next_hop)) {
        (Some(h), _) => InstanceId::new(h),
        (None, Some(NextHop::Instance(i))) => i.clone(),
        (None, _) => InstanceId::new(""),
    };
    first_failure(
        world
            .delete_route_entries(&table, &[(destination, hop)])
            .await?,
    )?;
    // The model counts a missing entry as deleted; Alibaba names it.
    if found.is_none() {
        return Err(route_not_found(&destination.to_string()));
    }
    Ok(json!({}))
}

/// Entries of a batch grouped by table, in request order.
fn by_table<T>(items: Vec<(RouteTableId, T)>) -> Vec<(RouteTableId, Vec<T>)> {
    let mut groups: Vec<(RouteTableId, Vec<T>)> = Vec::new();
    for (table, item) in items {
        match groups.iter_mut().find(|(t, _)| *t == table) {
            Some((_, list)) => list.push(item),
            None => groups.push((table, vec![item])),
        }
    }
    groups
}

fn batch_size(groups: &[BTreeMap<String, String>]) -> Result<(), ApiError> {
    if groups.is_empty() {
        return Err(ApiError::missing("RouteEntries.1.RouteTableId"));
    }
    if groups.len() > 50 {
        return Err(ApiError::invalid(
            "RouteEntries",
            "at most 50 entries per call",
        ));
    }
    Ok(())
}

fn field<'a>(g: &'a BTreeMap<String, String>, n: usize, name: &str) -> Result<&'a str, ApiError> {
    g.get(name)
        .map(String::as_str)
        .filter(|v| !v.is_empty())
        .ok_or_else(|| ApiError::missing(&format!("RouteEntries.{n}.{name}")))
}

pub async fn create_route_entries(world: &World, p: &Params) -> ActionResult {
    let groups = p.groups("RouteEntries");
    batch_size(&groups)?;
    let mut items = Vec::new();
    for (i, g) in groups.iter().enumerate() {
        let n = i + 1;
        let table = RouteTableId::new(field(g, n, "RouteTableId")?);
        let destination = parse_destination(
            &format!("RouteEntries.{n}.DstCidrBlock"),
            field(g, n, "DstCidrBlock")?,
        )?;
        instance_next_hop(
            &format!("RouteEntries.{n}.NextHopType"),
            g.get("NextHopType")
                .map(String::as_str)
                .filter(|s| !s.is_empty()),
        )?;
        if let Some(v) = g.get("IpVersion").filter(|v| !v.is_empty()) {
            if v != "4" && !v.eq_ignore_ascii_case("ipv4") {
                return Err(ApiError::invalid(
                    &format!("RouteEntries.{n}.IpVersion"),
                    "this fake routes IPv4 only",
                ));
            }
        }
        // The SDKs have sent the description under a misspelt name too.
        let description = g
            .get("Description")
            .or_else(|| g.get("Describption"))
            .cloned()
            .unwrap_or_default();
        items.push((
            table,
            NewRouteEntry {
                destination,
                instance_id: InstanceId::new(field(g, n, "NextHop")?),
                name: g.get("Name").cloned().unwrap_or_default(),
                description,
            },
        ));
    }
    let mut ids = Vec::new();
    let mut failed = Vec::new();
    for (table, entries) in by_table(items) {
        let outcome = world.create_route_entries(&table, &entries).await?;
        for entry in &entries {
            match outcome.failed.iter().find(|(d, _)| *d == entry.destination) {
                Some((_, err)) => failed.push(json!({
                    "DstCidrBlock": entry.destination.to_string(),
                    "NextHop": entry.instance_id,
                    "FailedCode": err.code,
                    "FailedMessage": err.message,
                })),
                None => ids.push(route_entry_id(&table, &entry.destination)),
            }
        }
    }
    Ok(json!({
        "SuccessCount": ids.len(),
        "FailedCount": failed.len(),
        "RouteEntryIds": ids,
        "FailedRouteEntries": failed,
    }))
}

pub async fn delete_route_entries(world: &World, p: &Params) -> ActionResult {
    let groups = p.groups("RouteEntries");
    batch_size(&groups)?;
    let mut items = Vec::new();
    let mut failed = Vec::new();
    for (i, g) in groups.iter().enumerate() {
        let n = i + 1;
        let table = field(g, n, "RouteTableId")?;
        let id = g
            .get("RouteEntryId")
            .map(String::as_str)
            .filter(|s| !s.is_empty());
        let destination = g
            .get("DstCidrBlock")
            .filter(|s| !s.is_empty())
            .map(|d| parse_destination(&format!("RouteEntries.{n}.DstCidrBlock"), d))
            .transpose()?;
        let hop = g
            .get("NextHop")
            .filter(|s| !s.is_empty())
            .map(InstanceId::new);
        let (destination, hop) = match (destination, hop) {
            (Some(d), Some(h)) => (d, h),
            (destination, hop) => {
                if id.is_none() && destination.is_none() {
                    return Err(ApiError::missing(&format!("RouteEntries.{n}.DstCidrBlock")));
                }
                match find_entry(world, Some(table), id, destination) {
                    Some(e) => {
                        let hop = hop.or(match &e.next_hop {
                            NextHop::Instance(i) => Some(i.clone()),
                            _ => None,
                        });
                        (e.destination, hop.unwrap_or_else(|| InstanceId::new("")))
                    }
                    None => {
                        failed.push(json!({
                            "RouteEntryId": id.unwrap_or_default(),
                            "DstCidrBlock": destination.map(|d| d.to_string()).unwrap_or_default(),
                            "NextHop": g.get("NextHop").cloned().unwrap_or_default(),
                            "FailedCode": "InvalidRouteEntry.NotFound",
                            "FailedMessage": "The specified route entry does not exist.",
                        }));
                        continue;
                    }
                }
            }
        };
        items.push((RouteTableId::new(table), (destination, hop)));
    }
    let mut done = 0usize;
    for (table, pairs) in by_table(items) {
        let outcome = world.delete_route_entries(&table, &pairs).await?;
        for (destination, hop) in &pairs {
            match outcome.failed.iter().find(|(d, _)| d == destination) {
                Some((_, err)) => failed.push(json!({
                    "RouteEntryId": route_entry_id(&table, destination),
                    "DstCidrBlock": destination.to_string(),
                    "NextHop": hop,
                    "FailedCode": err.code,
                    "FailedMessage": err.message,
                })),
                None => done += 1,
            }
        }
    }
    Ok(json!({
        "SuccessCount": done,
        "FailedCount": failed.len(),
        "FailedRouteEntries": failed,
    }))
}
