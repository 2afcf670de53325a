//! Which actions the fake serves, under which API version, and the helpers
//! every action shares: the region check, page and token paging, stable
//! route-entry ids, and Alibaba's time format.

use super::error::ApiError;
use super::params::Params;
use super::{ecs, vpc, ECS_VERSION, VPC_VERSION};
use crate::cloud::World;
use chrono::{DateTime, Utc};
use ipam::ids::RouteTableId;
use ipnet::Ipv4Net;
use serde_json::Value;
use std::net::Ipv4Addr;

pub type ActionResult = Result<Value, ApiError>;

/// The product version each action belongs to.
fn version_of(action: &str) -> Option<&'static str> {
    Some(match action {
        "DescribeInstances"
        | "DescribeInstanceTypes"
        | "CreateNetworkInterface"
        | "AttachNetworkInterface"
        | "DetachNetworkInterface"
        | "DeleteNetworkInterface"
        | "DescribeNetworkInterfaces"
        | "AssignPrivateIpAddresses"
        | "UnassignPrivateIpAddresses" => ECS_VERSION,
        "DescribeVSwitches"
        | "DescribeRouteTableList"
        | "DescribeRouteEntryList"
        | "CreateRouteEntry"
        | "DeleteRouteEntry"
        | "CreateRouteEntries"
        | "DeleteRouteEntries" => VPC_VERSION,
        _ => return None,
    })
}

/// Run one authenticated action.
pub async fn dispatch(world: &World, action: &str, p: &Params) -> ActionResult {
    let Some(version) = version_of(action) else {
        return Err(ApiError::new(
            404,
            "InvalidAction.NotFound",
            "Specified api is not found, please check your url and method.",
        ));
    };
    if p.get("Version") != Some(version) {
        return Err(ApiError::new(
            400,
            "InvalidVersion",
            format!("Specified parameter Version is not valid: {action} is served under Version={version}."),
        ));
    }
    check_region(world, p)?;
    match action {
        "DescribeInstances" => ecs::describe_instances(world, p).await,
        "DescribeInstanceTypes" => ecs::describe_instance_types(world, p).await,
        "CreateNetworkInterface" => ecs::create_network_interface(world, p).await,
        "AttachNetworkInterface" => ecs::attach_network_interface(world, p).await,
        "DetachNetworkInterface" => ecs::detach_network_interface(world, p).await,
        "DeleteNetworkInterface" => ecs::delete_network_interface(world, p).await,
        "DescribeNetworkInterfaces" => ecs::describe_network_interfaces(world, p).await,
        "AssignPrivateIpAddresses" => ecs::assign_private_ip_addresses(world, p).await,
        "UnassignPrivateIpAddresses" => ecs::unassign_private_ip_addresses(world, p).await,
        "DescribeVSwitches" => vpc::describe_vswitches(world, p).await,
        "DescribeRouteTableList" => vpc::describe_route_table_list(world, p).await,
        "DescribeRouteEntryList" => vpc::describe_route_entry_list(world, p).await,
        "CreateRouteEntry" => vpc::create_route_entry(world, p).await,
        "DeleteRouteEntry" => vpc::delete_route_entry(world, p).await,
        "CreateRouteEntries" => vpc::create_route_entries(world, p).await,
        "DeleteRouteEntries" => vpc::delete_route_entries(world, p).await,
        _ => Err(ApiError::new(
            404,
            "InvalidAction.NotFound",
            "Specified api is not found, please check your url and method.",
        )),
    }
}

/// Every action of the fake takes `RegionId`, and only the world's region.
fn check_region(world: &World, p: &Params) -> Result<(), ApiError> {
    let region = p.required("RegionId")?;
    if region != world.region().as_str() {
        return Err(ApiError::new(
            404,
            "InvalidRegionId.NotFound",
            format!("The specified RegionId {region} does not exist."),
        ));
    }
    Ok(())
}

/// Classic paging (`PageNumber` from 1, `PageSize` up to `max`): the slice
/// to answer with and the page fields of the answer.
pub fn page<T>(
    items: Vec<T>,
    p: &Params,
    default_size: u32,
    max: u32,
) -> Result<(Vec<T>, u32, u32, usize), ApiError> {
    let number = p.u32("PageNumber")?.unwrap_or(1);
    if number == 0 {
        return Err(ApiError::invalid("PageNumber", "starts at 1"));
    }
    let size = p.u32("PageSize")?.unwrap_or(default_size);
    if size == 0 || size > max {
        return Err(ApiError::invalid(
            "PageSize",
            &format!("must be 1 to {max}"),
        ));
    }
    let total = items.len();
    let skip = ((number - 1) as usize).saturating_mul(size as usize);
    let slice = items.into_iter().skip(skip).take(size as usize).collect();
    Ok((slice, number, size, total))
}

/// Token paging over items sorted by `key`: the items after `NextToken`, at
/// most `limit`, and the token of the next page (empty when none is left).
/// The token is the key of the last item answered, so entries created or
/// deleted between pages neither repeat nor shift the rest.
pub fn token_page<T>(
    mut items: Vec<T>,
    key: impl Fn(&T) -> String,
    token: Option<&str>,
    limit: usize,
) -> (Vec<T>, String) {
    items.sort_by_key(&key);
    let start = match token {
        Some(t) => items.partition_point(|i| key(i).as_str() <= t),
        None => 0,
    };
    let rest: Vec<T> = items.into_iter().skip(start).collect();
    let more = rest.len() > limit;
    let page: Vec<T> = rest.into_iter().take(limit).collect();
    let next = if more {
        page.last().map(&key).unwrap_or_default()
    } else {
        String::new()
    };
    (page, next)
}

/// A route entry id that stays the same for one destination in one table,
/// so that ids from one call can be used in the next (FNV-1a, stable across
/// builds unlike the std hasher).
pub fn route_entry_id(table: &RouteTableId, destination: &Ipv4Net) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in format!("{table}/{destination}").bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("rte-{hash:016x}")
}

/// A destination as Alibaba takes it: a CIDR, or an address meaning /32.
/// Host bits set is refused rather than silently truncated.
pub fn parse_destination(name: &str, raw: &str) -> Result<Ipv4Net, ApiError> {
    let net = match raw.parse::<Ipv4Net>() {
        Ok(net) => net,
        Err(_) => raw
            .parse::<Ipv4Addr>()
            .map(Ipv4Net::from)
            .map_err(|_| ApiError::invalid(name, "expected an IPv4 CIDR block"))?,
    };
    if net != net.trunc() {
        return Err(ApiError::invalid(name, "the CIDR block has host bits set"));
    }
    Ok(net)
}

/// Alibaba's UTC time format, e.g. `2024-05-01T08:00:00Z`.
pub fn alibaba_time(t: &DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_paging_walks_every_item_once() {
        let items: Vec<u32> = (0..25).collect();
        let key = |i: &u32| format!("{i:03}");
        let mut seen = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let (page, next) = token_page(items.clone(), key, token.as_deref(), 10);
            assert!(page.len() <= 10);
            seen.extend(page);
            if next.is_empty() {
                break;
            }
            token = Some(next);
        }
        assert_eq!(seen, items);
    }

    #[test]
    fn classic_paging_reports_totals() {
        let p = Params::parse(Some("PageNumber=3&PageSize=4"), None).unwrap();
        let (slice, number, size, total) = page((0..10).collect::<Vec<u32>>(), &p, 10, 50).unwrap();
        assert_eq!((slice, number, size, total), (vec![8, 9], 3, 4, 10));
        let bad = Params::parse(Some("PageSize=51"), None).unwrap();
        assert!(page(vec![1], &bad, 10, 50).is_err());
    }

    #[test]
    fn route_entry_ids_are_stable_and_distinct() {
        let t = RouteTableId::new("vtb-1");
        let a: Ipv4Net = "10.0.0.0/24".parse().unwrap();
        let b: Ipv4Net = "10.0.1.0/24".parse().unwrap();
        assert_eq!(route_entry_id(&t, &a), route_entry_id(&t, &a));
        assert_ne!(route_entry_id(&t, &a), route_entry_id(&t, &b));
        assert!(route_entry_id(&t, &a).starts_with("rte-"));
    }

    #[test]
    fn destinations_accept_cidrs_and_addresses_only() {
        assert_eq!(
            parse_destination("D", "10.0.0.5").unwrap(),
            "10.0.0.5/32".parse::<Ipv4Net>().unwrap()
        );
        assert!(parse_destination("D", "10.0.0.5/24").is_err());
        assert!(parse_destination("D", "nope").is_err());
    }
}
