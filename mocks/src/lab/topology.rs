//! The pieces of the VPC in the kernel, each made in one go: the vSwitch
//! namespace with one bridge per vSwitch, the router with a leg holding the
//! gateway on every bridge, a node namespace with its primary interface, the
//! VM, an ENI's veth; and reading links and the router's routes back.
//!
//! Every link is one end of a veth pair whose other end is a port of a bridge
//! in the vSwitch namespace, so deleting that namespace removes every link
//! the lab made, wherever the other end has been moved since.

use super::netns::{self, ip_in, sysctl_in, Names, Netns};
use super::LabError;
use ipnet::Ipv4Net;
use serde::Deserialize;
use std::net::Ipv4Addr;

/// One link as `ip -j link show` reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Link {
    pub name: String,
    /// Lowercase, colon-separated.
    pub mac: String,
    /// Administratively up.
    pub up: bool,
    /// The bridge it is a port of.
    pub master: Option<String>,
}

#[derive(Deserialize)]
struct RawLink {
    ifname: String,
    #[serde(default)]
    address: String,
    #[serde(default)]
    flags: Vec<String>,
    #[serde(default)]
    master: Option<String>,
}

pub(crate) fn parse_links(json: &str) -> Result<Vec<Link>, LabError> {
    if json.trim().is_empty() {
        return Ok(Vec::new());
    }
    let raw: Vec<RawLink> =
        serde_json::from_str(json).map_err(|e| LabError::Parse(format!("ip -j link show: {e}")))?;
    Ok(raw
        .into_iter()
        .map(|l| Link {
            up: l.flags.iter().any(|f| f == "UP"),
            mac: l.address.to_ascii_lowercase(),
            name: l.ifname,
            master: l.master,
        })
        .collect())
}

/// The links of a namespace.
pub(crate) fn links(ns: &Netns) -> Result<Vec<Link>, LabError> {
    parse_links(&ip_in(ns, &["-j", "link", "show"])?)
}

/// Where a route of the router sends traffic.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum RouteTarget {
    /// To this next hop (a node's primary address).
    Via(Ipv4Addr),
    /// Dropped: the cloud's entry points at nothing that exists.
    Blackhole,
}

#[derive(Deserialize)]
struct RawRoute {
    dst: String,
    #[serde(default)]
    gateway: Option<Ipv4Addr>,
    #[serde(default, rename = "type")]
    kind: Option<String>,
}

/// The routes the lab's sync installs (`proto static`), parsed.
pub(crate) fn parse_routes(json: &str) -> Result<Vec<(Ipv4Net, RouteTarget)>, LabError> {
    if json.trim().is_empty() {
        return Ok(Vec::new());
    }
    let raw: Vec<RawRoute> = serde_json::from_str(json)
        .map_err(|e| LabError::Parse(format!("ip -j route show: {e}")))?;
    let mut out = Vec::new();
    for r in raw {
        // `ip` prints a host route without its /32.
        let dst = if r.dst.contains('/') {
            r.dst.parse::<Ipv4Net>()
        } else {
            format!("{}/32", r.dst).parse::<Ipv4Net>()
        }
        .map_err(|e| LabError::Parse(format!("route destination {:?}: {e}", r.dst)))?;
        let target = match (r.kind.as_deref(), r.gateway) {
            (Some("blackhole"), _) => RouteTarget::Blackhole,
            (_, Some(gw)) => RouteTarget::Via(gw),
            _ => continue,
        };
        out.push((dst, target));
    }
    Ok(out)
}

/// The routes of the router that mirror the VPC route table.
pub(crate) fn router_routes(names: &Names) -> Result<Vec<(Ipv4Net, RouteTarget)>, LabError> {
    parse_routes(&ip_in(
        &names.router_ns(),
        &["-j", "route", "show", "proto", "static"],
    )?)
}

/// Install or change one route of the router.
pub(crate) fn set_route(names: &Names, dst: Ipv4Net, target: RouteTarget) -> Result<(), LabError> {
    let dst = dst.to_string();
    let rtr = names.router_ns();
    match target {
        RouteTarget::Via(gw) => {
            let gw = gw.to_string();
            ip_in(
                &rtr,
                &["route", "replace", &dst, "via", &gw, "proto", "static"],
            )?;
        }
        RouteTarget::Blackhole => {
            ip_in(
                &rtr,
                &["route", "replace", "blackhole", &dst, "proto", "static"],
            )?;
        }
    }
    Ok(())
}

pub(crate) fn delete_route(names: &Names, dst: Ipv4Net) -> Result<(), LabError> {
    ip_in(
        &names.router_ns(),
        &["route", "del", &dst.to_string(), "proto", "static"],
    )
    .map(|_| ())
}

/// The namespaces every lab has from the start: the vSwitch namespace, the
/// router (forwarding on) and the VM (its link comes with its vSwitch).
pub(crate) fn create_base(names: &Names) -> Result<(), LabError> {
    netns::create(&names.vswitch_ns())?;
    let rtr = names.router_ns();
    netns::create(&rtr)?;
    sysctl_in(&rtr, "net.ipv4.ip_forward", "1")?;
    netns::create(&names.vm_ns())
}

/// A veth pair: `port` on `bridge` in the vSwitch namespace (up), `inner`
/// in `ns` with `mac` if given (left down).
fn veth_to_bridge(
    names: &Names,
    port: &str,
    bridge: &str,
    inner: &str,
    ns: &Netns,
    mac: Option<&str>,
) -> Result<(), LabError> {
    let vsw = names.vswitch_ns();
    let mut args = vec![
        "link",
        "add",
        port,
        "type",
        "veth",
        "peer",
        "name",
        inner,
        "netns",
        ns.name(),
    ];
    if let Some(mac) = mac {
        args.extend_from_slice(&["address", mac]);
    }
    ip_in(&vsw, &args)?;
    ip_in(&vsw, &["link", "set", port, "master", bridge, "up"])?;
    Ok(())
}

/// Address, up, default route: what cloud-init gives a VM's primary NIC.
fn configure(ns: &Netns, link: &str, addr: Ipv4Net, gateway: Ipv4Addr) -> Result<(), LabError> {
    ip_in(ns, &["addr", "add", &addr.to_string(), "dev", link])?;
    ip_in(ns, &["link", "set", link, "up"])?;
    ip_in(
        ns,
        &["route", "add", "default", "via", &gateway.to_string()],
    )?;
    Ok(())
}

/// One vSwitch: its bridge, and the router's leg on it holding the gateway.
pub(crate) fn add_vswitch(
    names: &Names,
    idx: u32,
    cidr: Ipv4Net,
    gateway: Ipv4Addr,
) -> Result<(), LabError> {
    let vsw = names.vswitch_ns();
    let bridge = names.link("b", Some(idx))?;
    ip_in(
        &vsw,
        &[
            "link",
            "add",
            &bridge,
            "type",
            "bridge",
            "forward_delay",
            "0",
        ],
    )?;
    ip_in(&vsw, &["link", "set", &bridge, "up"])?;
    let rtr = names.router_ns();
    let leg = names.link("r", Some(idx))?;
    veth_to_bridge(
        names,
        &names.link("rb", Some(idx))?,
        &bridge,
        &leg,
        &rtr,
        None,
    )?;
    let addr = Ipv4Net::new(gateway, cidr.prefix_len())
        .map_err(|e| LabError::Invalid(format!("gateway {gateway} of {cidr}: {e}")))?;
    ip_in(&rtr, &["addr", "add", &addr.to_string(), "dev", &leg])?;
    ip_in(&rtr, &["link", "set", &leg, "up"])?;
    Ok(())
}

/// What a node (an instance) looks like from the inside.
pub(crate) struct NodeLink<'a> {
    pub ns: &'a Netns,
    pub idx: u32,
    pub bridge_idx: u32,
    pub mac: &'a str,
    pub addr: Ipv4Net,
    pub gateway: Ipv4Addr,
}

/// A node: its namespace, its primary interface with the instance's MAC and
/// address, a default route via its vSwitch gateway, forwarding on (a
/// routes-mode node forwards its pods' traffic).
pub(crate) fn add_node(names: &Names, node: &NodeLink<'_>) -> Result<(), LabError> {
    netns::create(node.ns)?;
    let inner = names.link("n", Some(node.idx))?;
    veth_to_bridge(
        names,
        &names.link("nb", Some(node.idx))?,
        &names.link("b", Some(node.bridge_idx))?,
        &inner,
        node.ns,
        Some(node.mac),
    )?;
    configure(node.ns, &inner, node.addr, node.gateway)?;
    sysctl_in(node.ns, "net.ipv4.ip_forward", "1")
}

/// The VM: one interface on a vSwitch, default route via its gateway.
pub(crate) fn add_vm(
    names: &Names,
    bridge_idx: u32,
    addr: Ipv4Net,
    gateway: Ipv4Addr,
) -> Result<(), LabError> {
    let vm = names.vm_ns();
    let inner = names.link("vm", None)?;
    veth_to_bridge(
        names,
        &names.link("vmb", None)?,
        &names.link("b", Some(bridge_idx))?,
        &inner,
        &vm,
        None,
    )?;
    configure(&vm, &inner, addr, gateway)
}

/// An ENI as the node sees it after attach: a link with the ENI's MAC, down
/// and without address, whose other end is on the ENI's vSwitch.
pub(crate) fn add_eni(
    names: &Names,
    n: u32,
    node_ns: &Netns,
    bridge_idx: u32,
    mac: &str,
) -> Result<String, LabError> {
    let inner = names.link("e", Some(n))?;
    veth_to_bridge(
        names,
        &names.link("eb", Some(n))?,
        &names.link("b", Some(bridge_idx))?,
        &inner,
        node_ns,
        Some(mac),
    )?;
    Ok(inner)
}

/// Deliver `ip` to `mac` on the router's `leg`: a permanent neighbour
/// entry, which ARP never overwrites.
pub(crate) fn set_neighbour(
    rtr: &Netns,
    ip: Ipv4Addr,
    leg: &str,
    mac: &str,
) -> Result<(), LabError> {
    let ip = ip.to_string();
    ip_in(
        rtr,
        &[
            "neigh",
            "replace",
            &ip,
            "lladdr",
            mac,
            "dev",
            leg,
            "nud",
            "permanent",
        ],
    )
    .map(|_| ())
}

/// The MAC of the router's permanent entry for `ip`, if there is one.
pub(crate) fn delivered_to(rtr: &Netns, ip: Ipv4Addr) -> Result<Option<String>, LabError> {
    #[derive(Deserialize)]
    struct RawNeigh {
        #[serde(default)]
        lladdr: Option<String>,
        #[serde(default)]
        state: Vec<String>,
    }
    let out = ip_in(rtr, &["-j", "neigh", "show", &ip.to_string()])?;
    if out.trim().is_empty() {
        return Ok(None);
    }
    let raw: Vec<RawNeigh> =
        serde_json::from_str(&out).map_err(|e| LabError::Parse(format!("ip -j neigh: {e}")))?;
    Ok(raw
        .into_iter()
        .find(|n| n.state.iter().any(|s| s == "PERMANENT"))
        .and_then(|n| n.lladdr)
        .map(|m| m.to_ascii_lowercase()))
}

/// Stop delivering `ip` on the router's `leg`.
pub(crate) fn delete_neighbour(rtr: &Netns, ip: Ipv4Addr, leg: &str) -> Result<(), LabError> {
    ip_in(rtr, &["neigh", "del", &ip.to_string(), "dev", leg]).map(|_| ())
}

/// Delete a link (its veth peer goes with it).
pub(crate) fn delete_link(ns: &Netns, name: &str) -> Result<(), LabError> {
    ip_in(ns, &["link", "del", name]).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_parse_from_ip_json() {
        let json = r#"[{"ifindex":1,"ifname":"lo","flags":["LOOPBACK","UP"],"address":"00:00:00:00:00:00"},
            {"ifindex":2,"ifname":"le1","flags":["BROADCAST","MULTICAST"],"address":"02:00:00:00:00:0A","link_netnsid":0},
            {"ifindex":3,"ifname":"leb1","flags":["UP"],"master":"lb0","address":"e2:18:d9:72:9a:19"}]"#;
        let links = parse_links(json).unwrap();
        assert_eq!(links.len(), 3);
        assert!(links[0].up);
        assert_eq!(links[1].mac, "02:00:00:00:00:0a");
        assert!(!links[1].up);
        assert_eq!(links[2].master.as_deref(), Some("lb0"));
        assert!(parse_links("").unwrap().is_empty());
    }

    #[test]
    fn routes_parse_with_gateways_and_blackholes() {
        let json = r#"[{"dst":"10.100.1.0/24","gateway":"192.168.2.10","dev":"lr1","protocol":"static","flags":[]},
            {"type":"blackhole","dst":"10.100.2.0/24","protocol":"static","flags":[]},
            {"dst":"10.9.9.9","gateway":"192.168.1.10","flags":[]}]"#;
        let routes = parse_routes(json).unwrap();
        assert_eq!(
            routes,
            vec![
                (
                    "10.100.1.0/24".parse().unwrap(),
                    RouteTarget::Via("192.168.2.10".parse().unwrap())
                ),
                ("10.100.2.0/24".parse().unwrap(), RouteTarget::Blackhole),
                (
                    "10.9.9.9/32".parse().unwrap(),
                    RouteTarget::Via("192.168.1.10".parse().unwrap())
                ),
            ]
        );
    }
}
