//! Links, addresses and routes of one network namespace over rtnetlink: a
//! thin layer that turns netlink messages into the few facts the plugin
//! reads and the few changes it makes. A [`Netlink`] is bound to the
//! namespace it was opened in for its whole life.

use crate::error::PluginError;
use crate::netns::NetNs;
use futures::TryStreamExt;
use rtnetlink::packet_route::address::{AddressAttribute, AddressMessage, AddressScope};
use rtnetlink::packet_route::link::{
    InfoData, InfoKind, InfoVeth, LinkAttribute, LinkFlags, LinkInfo, LinkMessage,
};
use rtnetlink::packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage,
};
use rtnetlink::packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteScope,
};
use rtnetlink::packet_route::rule::{RuleAttribute, RuleMessage};
use rtnetlink::packet_route::AddressFamily;
use rtnetlink::{Handle, IpVersion, LinkMessageBuilder, LinkUnspec, LinkVeth, RouteMessageBuilder};
use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::RawFd;

/// What the plugin needs to know about a link.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Link {
    pub index: u32,
    pub name: String,
    pub mac: Option<Mac>,
    pub alias: Option<String>,
    pub up: bool,
    pub mtu: Option<u32>,
    pub kind: Option<String>,
}

/// An Ethernet address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Mac(pub [u8; 6]);

impl Mac {
    /// `00:16:3e:aa:bb:cc` (any case, `:` or `-` separated).
    pub fn parse(s: &str) -> Option<Self> {
        let parts: Vec<&str> = s.trim().split([':', '-']).collect();
        if parts.len() != 6 {
            return None;
        }
        let mut out = [0u8; 6];
        for (o, p) in out.iter_mut().zip(parts) {
            if p.len() != 2 {
                return None;
            }
            *o = u8::from_str_radix(p, 16).ok()?;
        }
        Some(Mac(out))
    }
}

impl std::fmt::Display for Mac {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x}")
    }
}

/// An IPv4 route of the main table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Route4 {
    pub dst: Ipv4Addr,
    pub prefix: u8,
    pub gateway: Option<Ipv4Addr>,
    pub oif: Option<u32>,
}

/// The positive errno of a netlink NACK, if that is what `e` is.
pub fn errno(e: &rtnetlink::Error) -> Option<i32> {
    match e {
        rtnetlink::Error::NetlinkError(m) => m.code.map(|c| -c.get()),
        _ => None,
    }
}

const ENODEV: i32 = 19;
const EEXIST: i32 = 17;
const ESRCH: i32 = 3;
const ENOENT: i32 = 2;
const EADDRNOTAVAIL: i32 = 99;

/// The main routing table's id.
pub const MAIN_TABLE: u32 = RouteHeader::RT_TABLE_MAIN as u32;
/// The local table (addresses of the namespace itself).
const LOCAL_TABLE: u32 = 255;

/// An IPv4 policy rule: which packets (`from`/`to` prefixes), which table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rule4 {
    pub priority: u32,
    pub from: Option<(Ipv4Addr, u8)>,
    pub to: Option<(Ipv4Addr, u8)>,
    pub table: u32,
    /// `FRA_PROTOCOL`: who installed it (0 when unset).
    pub protocol: u8,
}

/// A proxy ARP entry (`ip neigh add proxy IP dev LINK`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProxyNeigh {
    pub index: u32,
    pub ip: Ipv4Addr,
}

/// An rtnetlink connection bound to one namespace.
#[derive(Clone)]
pub struct Netlink {
    handle: Handle,
    /// Which namespace, for error messages.
    label: String,
}

impl Netlink {
    /// Open a connection inside `ns` (it stays bound there). Must be called
    /// inside a tokio runtime.
    pub fn open_in(ns: &NetNs, label: &str) -> Result<Self, PluginError> {
        let made = ns.run(rtnetlink::new_connection)?;
        let (conn, handle, _) =
            made.map_err(|e| PluginError::io(format!("netlink socket in {label} netns"), e))?;
        tokio::spawn(conn);
        Ok(Netlink {
            handle,
            label: label.to_owned(),
        })
    }

    fn fail(&self, what: impl std::fmt::Display, e: rtnetlink::Error) -> PluginError {
        PluginError::Io(format!("{what} in {} netns: {e}", self.label))
    }

    pub async fn links(&self) -> Result<Vec<Link>, PluginError> {
        let msgs: Vec<LinkMessage> = self
            .handle
            .link()
            .get()
            .execute()
            .try_collect()
            .await
            .map_err(|e| self.fail("list links", e))?;
        Ok(msgs.iter().map(to_link).collect())
    }

    pub async fn link_by_name(&self, name: &str) -> Result<Option<Link>, PluginError> {
        Ok(self.links().await?.into_iter().find(|l| l.name == name))
    }

    pub async fn link_by_index(&self, index: u32) -> Result<Option<Link>, PluginError> {
        Ok(self.links().await?.into_iter().find(|l| l.index == index))
    }

    /// The link with this MAC, skipping VLAN and macvlan children that
    /// share their parent's address.
    pub async fn link_by_mac(&self, mac: Mac) -> Result<Option<Link>, PluginError> {
        Ok(self.links().await?.into_iter().find(|l| {
            l.mac == Some(mac) && !matches!(l.kind.as_deref(), Some("vlan" | "macvlan" | "bond"))
        }))
    }

    /// Apply a change built on `LinkUnspec::new_with_index(index)`.
    pub async fn set(&self, msg: LinkMessageBuilder<LinkUnspec>) -> Result<(), rtnetlink::Error> {
        self.handle.link().set(msg.build()).execute().await
    }

    /// `set` with the error turned into a plugin error naming `what`.
    pub async fn change(
        &self,
        what: &str,
        msg: LinkMessageBuilder<LinkUnspec>,
    ) -> Result<(), PluginError> {
        self.set(msg).await.map_err(|e| self.fail(what, e))
    }

    /// Move link `index` into the namespace of `fd`, renaming it to `name`
    /// on the way (one request, so the name never clashes in between).
    pub async fn move_to(&self, index: u32, fd: RawFd, name: &str) -> Result<(), rtnetlink::Error> {
        self.handle
            .link()
            .set(
                LinkUnspec::new_with_index(index)
                    .setns_by_fd(fd)
                    .name(name.to_owned())
                    .build(),
            )
            .execute()
            .await
    }

    /// A veth whose peer is made directly in the namespace of `peer_ns`
    /// under its final name: one request instead of create-then-move (a move
    /// to another namespace costs the kernel about 20 ms on its own).
    pub async fn add_veth_into(
        &self,
        name: &str,
        peer: &str,
        peer_ns: RawFd,
        mtu: u32,
    ) -> Result<(), PluginError> {
        let peer_msg = LinkUnspec::new_with_name(peer)
            .setns_by_fd(peer_ns)
            .mtu(mtu)
            .build();
        let msg = LinkVeth::new(name, peer)
            .mtu(mtu)
            .set_info_data(InfoData::Veth(InfoVeth::Peer(peer_msg)))
            .build();
        self.handle
            .link()
            .add(msg)
            .execute()
            .await
            .map_err(|e| self.fail(format!("create veth {name} with {peer} in the pod"), e))
    }

    /// Delete a link; one already gone is fine.
    pub async fn delete_link(&self, index: u32) -> Result<(), PluginError> {
        match self.handle.link().del(index).execute().await {
            Ok(()) => Ok(()),
            Err(e) if errno(&e) == Some(ENODEV) => Ok(()),
            Err(e) => Err(self.fail(format!("delete link {index}"), e)),
        }
    }

    /// The address messages of one link, or of the whole namespace.
    async fn address_messages(
        &self,
        index: Option<u32>,
    ) -> Result<Vec<AddressMessage>, PluginError> {
        let mut get = self.handle.address().get();
        if let Some(index) = index {
            get = get.set_link_index_filter(index);
        }
        let msgs: Vec<AddressMessage> = get
            .execute()
            .try_collect()
            .await
            .map_err(|e| self.fail("list addresses", e))?;
        // The kernel may ignore the filter: check the index here too.
        Ok(msgs
            .into_iter()
            .filter(|m| index.is_none_or(|i| m.header.index == i))
            .collect())
    }

    /// The addresses of one link (IPv4 and IPv6) with their prefix lengths.
    pub async fn addresses(&self, index: u32) -> Result<Vec<(IpAddr, u8)>, PluginError> {
        Ok(self
            .address_messages(Some(index))
            .await?
            .iter()
            .filter_map(|m| Some((address_of(m)?, m.header.prefix_len)))
            .collect())
    }

    /// Every IPv4 address of universe scope in the namespace (not
    /// loopback, not link-local).
    pub async fn global_ipv4(&self) -> Result<Vec<Ipv4Addr>, PluginError> {
        let mut out: Vec<Ipv4Addr> = self
            .address_messages(None)
            .await?
            .iter()
            .filter(|m| m.header.scope == AddressScope::Universe)
            .filter_map(address_of)
            .filter_map(|a| match a {
                IpAddr::V4(v4) if !v4.is_loopback() && !v4.is_link_local() => Some(v4),
                _ => None,
            })
            .collect();
        out.sort();
        out.dedup();
        Ok(out)
    }

    /// Add an address; one already there is fine.
    pub async fn ensure_address(
        &self,
        index: u32,
        ip: IpAddr,
        prefix: u8,
    ) -> Result<(), PluginError> {
        self.handle
            .address()
            .add(index, ip, prefix)
            .replace()
            .execute()
            .await
            .map_err(|e| self.fail(format!("add address {ip}/{prefix}"), e))
    }

    /// Remove an address; one already gone is fine.
    pub async fn remove_address(
        &self,
        index: u32,
        ip: IpAddr,
        prefix: u8,
    ) -> Result<(), PluginError> {
        for m in self.address_messages(Some(index)).await? {
            if address_of(&m) == Some(ip) && m.header.prefix_len == prefix {
                match self.handle.address().del(m).execute().await {
                    Ok(()) => {}
                    Err(e) if errno(&e) == Some(EADDRNOTAVAIL) => {}
                    Err(e) => return Err(self.fail(format!("delete address {ip}/{prefix}"), e)),
                }
            }
        }
        Ok(())
    }

    /// The IPv4 routes of the main table.
    pub async fn routes_v4(&self) -> Result<Vec<Route4>, PluginError> {
        let msgs: Vec<RouteMessage> = self
            .handle
            .route()
            .get(RouteMessageBuilder::<Ipv4Addr>::new().build())
            .execute()
            .try_collect()
            .await
            .map_err(|e| self.fail("list routes", e))?;
        Ok(msgs.iter().filter(|m| in_main(m)).map(to_route4).collect())
    }

    /// Add or replace an IPv4 route in the main table. `gateway` with
    /// `onlink` needs no address of the gateway's subnet on the link;
    /// without a gateway the route is link-scoped.
    pub async fn replace_route(&self, r: &RouteSpec) -> Result<(), PluginError> {
        self.replace_route_in(MAIN_TABLE, r).await
    }

    /// [`Self::replace_route`] in routing table `table`.
    pub async fn replace_route_in(&self, table: u32, r: &RouteSpec) -> Result<(), PluginError> {
        let mut b = RouteMessageBuilder::<Ipv4Addr>::new()
            .table_id(table)
            .destination_prefix(r.dst, r.prefix)
            .output_interface(r.oif);
        match r.gateway {
            Some(gw) => {
                b = b.gateway(gw);
                if r.onlink {
                    b = b.onlink();
                }
            }
            None => b = b.scope(RouteScope::Link),
        }
        if let Some(src) = r.src {
            b = b.pref_source(src);
        }
        self.handle
            .route()
            .add(b.build())
            .replace()
            .execute()
            .await
            .map_err(|e| {
                self.fail(
                    format!("add route {}/{} in table {table}", r.dst, r.prefix),
                    e,
                )
            })
    }

    /// The IPv4 routes of routing table `table`.
    pub async fn routes_in(&self, table: u32) -> Result<Vec<Route4>, PluginError> {
        Ok(self
            .route_messages()
            .await?
            .iter()
            .filter(|m| table_of(m) == table)
            .map(to_route4)
            .collect())
    }

    async fn route_messages(&self) -> Result<Vec<RouteMessage>, PluginError> {
        self.handle
            .route()
            .get(RouteMessageBuilder::<Ipv4Addr>::new().build())
            .execute()
            .try_collect()
            .await
            .map_err(|e| self.fail("list routes", e))
    }

    /// Delete every IPv4 route of routing table `table` (never main or local).
    pub async fn flush_table(&self, table: u32) -> Result<(), PluginError> {
        if table == MAIN_TABLE || table == LOCAL_TABLE {
            return Err(PluginError::Io(format!(
                "refusing to flush table {table} in {} netns",
                self.label
            )));
        }
        for m in self.route_messages().await? {
            if table_of(&m) != table {
                continue;
            }
            match self.handle.route().del(m).execute().await {
                Ok(()) => {}
                Err(e) if errno(&e) == Some(ESRCH) => {}
                Err(e) => return Err(self.fail(format!("delete a route of table {table}"), e)),
            }
        }
        Ok(())
    }

    /// The IPv4 policy rules, with the messages to delete them by.
    pub async fn rules_v4(&self) -> Result<Vec<(Rule4, RuleMessage)>, PluginError> {
        let msgs: Vec<RuleMessage> = self
            .handle
            .rule()
            .get(IpVersion::V4)
            .execute()
            .try_collect()
            .await
            .map_err(|e| self.fail("list rules", e))?;
        Ok(msgs.into_iter().map(|m| (to_rule4(&m), m)).collect())
    }

    /// Add an IPv4 rule; the same rule already there is fine.
    pub async fn add_rule(&self, r: &Rule4) -> Result<(), PluginError> {
        let mut req = self
            .handle
            .rule()
            .add()
            .v4()
            .table_id(r.table)
            .priority(r.priority);
        if let Some((ip, len)) = r.from {
            req = req.source_prefix(ip, len);
        }
        if let Some((ip, len)) = r.to {
            req = req.destination_prefix(ip, len);
        }
        if r.protocol != 0 {
            req.message_mut()
                .attributes
                .push(RuleAttribute::Protocol(RouteProtocol::from(r.protocol)));
        }
        // FR_ACT_TO_TBL: the default action only when the header says so.
        req = req.action(rtnetlink::packet_route::rule::RuleAction::ToTable);
        match req.execute().await {
            Ok(()) => Ok(()),
            Err(e) if is_exists(&e) => Ok(()),
            Err(e) => Err(self.fail(format!("add rule {r:?}"), e)),
        }
    }

    /// Delete a rule as listed; one already gone is fine.
    pub async fn delete_rule(&self, m: RuleMessage) -> Result<(), PluginError> {
        match self.handle.rule().del(m).execute().await {
            Ok(()) => Ok(()),
            Err(e) if matches!(errno(&e), Some(ENOENT | ESRCH)) => Ok(()),
            Err(e) => Err(self.fail("delete a rule", e)),
        }
    }

    /// Answer ARP for `ip` on link `index` (a proxy neighbour entry).
    pub async fn add_proxy_neigh(&self, index: u32, ip: Ipv4Addr) -> Result<(), PluginError> {
        self.handle
            .neighbours()
            .add(index, IpAddr::V4(ip))
            .flags(NeighbourFlags::Proxy)
            .replace()
            .execute()
            .await
            .map_err(|e| self.fail(format!("add proxy ARP entry {ip} on link {index}"), e))
    }

    /// The IPv4 proxy ARP entries.
    pub async fn proxy_neighs(&self) -> Result<Vec<ProxyNeigh>, PluginError> {
        let msgs: Vec<NeighbourMessage> = self
            .handle
            .neighbours()
            .get()
            .proxies()
            .set_address_family(AddressFamily::Inet)
            .execute()
            .try_collect()
            .await
            .map_err(|e| self.fail("list proxy ARP entries", e))?;
        Ok(msgs
            .iter()
            .filter(|m| m.header.flags.contains(NeighbourFlags::Proxy))
            .filter_map(|m| {
                let ip = m.attributes.iter().find_map(|a| match a {
                    NeighbourAttribute::Destination(NeighbourAddress::Inet(ip)) => Some(*ip),
                    _ => None,
                })?;
                Some(ProxyNeigh {
                    index: m.header.ifindex,
                    ip,
                })
            })
            .collect())
    }

    /// Stop answering ARP for `ip` on link `index`; gone already is fine.
    pub async fn delete_proxy_neigh(&self, index: u32, ip: Ipv4Addr) -> Result<(), PluginError> {
        let mut m = NeighbourMessage::default();
        m.header.family = AddressFamily::Inet;
        m.header.ifindex = index;
        m.header.flags = NeighbourFlags::Proxy;
        m.attributes
            .push(NeighbourAttribute::Destination(NeighbourAddress::Inet(ip)));
        match self.handle.neighbours().del(m).execute().await {
            Ok(()) => Ok(()),
            Err(e) if matches!(errno(&e), Some(ENOENT | ESRCH | ENODEV)) => Ok(()),
            Err(e) => Err(self.fail(format!("delete proxy ARP entry {ip}"), e)),
        }
    }

    /// Delete an IPv4 route of the main table; one already gone is fine.
    pub async fn delete_route(&self, dst: Ipv4Addr, prefix: u8) -> Result<(), PluginError> {
        let msg = RouteMessageBuilder::<Ipv4Addr>::new()
            .destination_prefix(dst, prefix)
            .build();
        match self.handle.route().del(msg).execute().await {
            Ok(()) => Ok(()),
            Err(e) if errno(&e) == Some(ESRCH) => Ok(()),
            Err(e) => Err(self.fail(format!("delete route {dst}/{prefix}"), e)),
        }
    }
}

/// A route to add.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouteSpec {
    pub dst: Ipv4Addr,
    pub prefix: u8,
    pub gateway: Option<Ipv4Addr>,
    pub oif: u32,
    pub onlink: bool,
    pub src: Option<Ipv4Addr>,
}

/// Was the request refused because the name is taken?
pub fn is_exists(e: &rtnetlink::Error) -> bool {
    errno(e) == Some(EEXIST)
}

fn to_link(m: &LinkMessage) -> Link {
    let mut link = Link {
        index: m.header.index,
        name: String::new(),
        mac: None,
        alias: None,
        up: m.header.flags.contains(LinkFlags::Up),
        mtu: None,
        kind: None,
    };
    for a in &m.attributes {
        match a {
            LinkAttribute::IfName(n) => link.name = n.clone(),
            LinkAttribute::Address(b) => {
                link.mac = <[u8; 6]>::try_from(b.as_slice()).ok().map(Mac);
            }
            LinkAttribute::IfAlias(s) if !s.is_empty() => link.alias = Some(s.clone()),
            LinkAttribute::Mtu(v) => link.mtu = Some(*v),
            LinkAttribute::LinkInfo(infos) => {
                for i in infos {
                    if let LinkInfo::Kind(k) = i {
                        link.kind = Some(kind_name(k));
                    }
                }
            }
            _ => {}
        }
    }
    link
}

fn kind_name(k: &InfoKind) -> String {
    k.to_string()
}

fn address_of(m: &AddressMessage) -> Option<IpAddr> {
    // IFA_LOCAL is the interface's own address; IFA_ADDRESS is the peer's
    // on point-to-point links, the same otherwise.
    let mut addr = None;
    for a in &m.attributes {
        match a {
            AddressAttribute::Local(ip) => return Some(*ip),
            AddressAttribute::Address(ip) => addr = Some(*ip),
            _ => {}
        }
    }
    addr
}

fn table_of(m: &RouteMessage) -> u32 {
    m.attributes
        .iter()
        .find_map(|a| match a {
            RouteAttribute::Table(t) => Some(*t),
            _ => None,
        })
        .unwrap_or(u32::from(m.header.table))
}

fn in_main(m: &RouteMessage) -> bool {
    table_of(m) == MAIN_TABLE
}

fn to_rule4(m: &RuleMessage) -> Rule4 {
    let mut r = Rule4 {
        priority: 0,
        from: None,
        to: None,
        table: u32::from(m.header.table),
        protocol: 0,
    };
    for a in &m.attributes {
        match a {
            RuleAttribute::Priority(p) => r.priority = *p,
            RuleAttribute::Table(t) => r.table = *t,
            RuleAttribute::Source(IpAddr::V4(ip)) => r.from = Some((*ip, m.header.src_len)),
            RuleAttribute::Destination(IpAddr::V4(ip)) => r.to = Some((*ip, m.header.dst_len)),
            RuleAttribute::Protocol(p) => r.protocol = u8::from(*p),
            _ => {}
        }
    }
    r
}

fn to_route4(m: &RouteMessage) -> Route4 {
    let mut r = Route4 {
        dst: Ipv4Addr::UNSPECIFIED,
        prefix: m.header.destination_prefix_length,
        gateway: None,
        oif: None,
    };
    for a in &m.attributes {
        match a {
            RouteAttribute::Destination(RouteAddress::Inet(d)) => r.dst = *d,
            RouteAttribute::Gateway(RouteAddress::Inet(g)) => r.gateway = Some(*g),
            RouteAttribute::Oif(i) => r.oif = Some(*i),
            _ => {}
        }
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mac_parses_and_prints() {
        let m = Mac::parse("00:16:3E:0a:0B:ff").unwrap();
        assert_eq!(m.0, [0x00, 0x16, 0x3e, 0x0a, 0x0b, 0xff]);
        assert_eq!(m.to_string(), "00:16:3e:0a:0b:ff");
        assert_eq!(Mac::parse("00-16-3e-0a-0b-ff"), Some(m));
        for bad in [
            "",
            "00:16:3e:0a:0b",
            "00:16:3e:0a:0b:ff:00",
            "0:16:3e:0a:0b:ff",
            "zz:16:3e:0a:0b:ff",
        ] {
            assert_eq!(Mac::parse(bad), None, "{bad}");
        }
    }
}
