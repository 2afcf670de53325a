//! A shared-ENI pod: one secondary IP of an ENI that stays in the node's
//! namespace (several pods share it), given to the pod over a veth, with
//! policy routing so the pod's traffic leaves through that ENI:
//!
//! ```text
//!  pod netns                         host (node) netns
//!  eth0  10.0.0.21/32                vesXXXXXXXXXXXX 169.254.1.1/32  alias vpc-eni-cni:shared:<cid>:10.0.0.21
//!    169.254.1.1 dev eth0 scope link   10.0.0.21 dev ves.. scope link src 169.254.1.1      (main)
//!    default via 169.254.1.1 onlink    rule 512:  to   10.0.0.21 lookup main               (proto 237)
//!                                      rule 1536: from 10.0.0.21 lookup 1000+ifindex(eni) (proto 237)
//!                                      table 1000+ifindex: default via <gateway> dev <eni> onlink
//!                                      proxy ARP: 10.0.0.21 on <eni>; <eni> up, no address
//! ```
//!
//! Why this shape:
//! - **/32 on the pod, default via a link-local next hop** (as `ptp` and
//!   Calico do): the pod ARPs only for 169.254.1.1, which the host veth
//!   holds, so every packet goes through the node and its rules; with the
//!   subnet's prefix the pod would ARP for its neighbours straight on the
//!   veth and the node would have to answer for the whole subnet.
//! - **One table per ENI, numbered [`TABLE_BASE`] + the ENI link's ifindex**
//!   in the node: deterministic from what the kernel shows (no state file,
//!   no cloud device index the annotation does not carry), unique while the
//!   link exists, and self-cleaning: when the ENI is detached its link goes
//!   and the kernel drops the table's routes with it.
//! - **`to <pod> lookup main` before `from <pod> lookup <table>`**: traffic
//!   to a pod of this node (from another pod, the node, or the VPC coming in
//!   on the ENI) is delivered over its veth by the main table; traffic from
//!   the pod to anything else leaves through its ENI via the subnet's
//!   gateway (the VPC drops a secondary IP's packets on any other ENI). The
//!   node's own addresses stay local (the `local` table comes first). The
//!   `from` rule also makes the reverse-path check pass for replies that
//!   come in on the ENI, even with strict `rp_filter`.
//! - **Proxy ARP per pod IP** (`ip neigh add proxy <pod IP> dev <eni>`, with
//!   the ENI's `proxy_delay` 0): a host on the same vSwitch that resolves the
//!   pod's IP by ARP gets the ENI's MAC, and nothing else is answered for
//!   (the link-wide `proxy_arp` sysctl would answer for every address the
//!   node routes elsewhere). Clouds deliver secondary IPs to the ENI without
//!   asking the instance, so there it is harmless.
//! - The ENI link carries no address: its primary IP is not in the
//!   allocation, and a secondary IP on it would make the node, not the pod,
//!   the IP's owner. The node's ARP for the gateway on the ENI therefore
//!   names another of the node's addresses as sender; the VPC answers it
//!   all the same (the lab's router keeps the cloud's addresses in
//!   permanent entries, so such a request never re-points them).
//!
//! The rules carry protocol [`RULE_PROTOCOL`] so only ours are ever
//! touched. Every change on the node happens under one lock file in
//! `stateDir` (ADD, DEL and GC of different pods otherwise race on the
//! shared table). DEL reads the pod's IP off its host veth's alias; a rule of
//! ours whose IP no host veth claims any more (its netns went first and took
//! the veth with it) is removed by the next DEL or GC, with its proxy ARP
//! entry. A table is flushed when the last rule pointing at it goes.

use crate::eni::{Plumbing, Target};
use crate::error::PluginError;
use crate::names::{self, HOST_VETH_IP};
use crate::netlink::{Link, Netlink, RouteSpec, Rule4, MAIN_TABLE};
use crate::netns::NetNs;
use crate::spec::{Dns, Interface, IpConfig, Route, SuccessResult};
use rtnetlink::LinkUnspec;
use std::collections::{BTreeSet, HashSet};
use std::fs::File;
use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::time::{Duration, Instant};

/// A shared ENI's table is this plus its link's ifindex in the node.
pub const TABLE_BASE: u32 = 1000;
/// `to <pod IP> lookup main`: before every `from` rule.
pub const TO_POD_PRIORITY: u32 = 512;
/// `from <pod IP> lookup <ENI table>`.
pub const FROM_POD_PRIORITY: u32 = 1536;
/// `FRA_PROTOCOL` on our rules: unassigned in iproute2's `rt_protos`.
pub const RULE_PROTOCOL: u8 = 237;
/// The lock file (in `stateDir`) every shared-ENI change holds.
pub const LOCK_FILE: &str = "shared-eni.lock";

/// The routing table of the ENI whose link has `ifindex` in the node.
pub fn eni_table(ifindex: u32) -> Result<u32, PluginError> {
    TABLE_BASE
        .checked_add(ifindex)
        .filter(|t| *t != u32::MAX)
        .ok_or_else(|| PluginError::Io(format!("ENI link index {ifindex} leaves no table id")))
}

/// The rules a pod with `ip` gets, its ENI's table being `table`.
pub fn pod_rules(ip: Ipv4Addr, table: u32) -> [Rule4; 2] {
    [
        Rule4 {
            priority: TO_POD_PRIORITY,
            from: None,
            to: Some((ip, 32)),
            table: MAIN_TABLE,
            protocol: RULE_PROTOCOL,
        },
        Rule4 {
            priority: FROM_POD_PRIORITY,
            from: Some((ip, 32)),
            to: None,
            table,
            protocol: RULE_PROTOCOL,
        },
    ]
}

/// The pod IP a rule of ours is keyed on.
fn rule_ip(r: &Rule4) -> Option<Ipv4Addr> {
    if r.protocol != RULE_PROTOCOL {
        return None;
    }
    match (r.from, r.to) {
        (Some((ip, 32)), None) | (None, Some((ip, 32))) => Some(ip),
        _ => None,
    }
}

/// Held while the node's shared-ENI state changes; released on drop.
struct NodeLock(File);

impl NodeLock {
    fn take(state_dir: &Path) -> Result<NodeLock, PluginError> {
        std::fs::create_dir_all(state_dir).map_err(|e| {
            PluginError::invalid_config("stateDir", format!("{}: {e}", state_dir.display()))
        })?;
        let path = state_dir.join(LOCK_FILE);
        let f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| PluginError::io(format!("open {}", path.display()), e))?;
        f.lock()
            .map_err(|e| PluginError::io(format!("lock {}", path.display()), e))?;
        Ok(NodeLock(f))
    }
}

impl Drop for NodeLock {
    fn drop(&mut self) {
        let _ = self.0.unlock();
    }
}

/// The namespaces and the attachment a shared-ENI operation acts on: the
/// exclusive path's [`Plumbing`], and where the node's lock lives.
pub struct Shared<'a> {
    pub at: Plumbing<'a>,
    pub state_dir: &'a Path,
}

impl Shared<'_> {
    /// ADD: plumb the pod. On failure what this attachment holds is undone
    /// before the error is returned.
    pub async fn add(
        &self,
        t: &Target,
        link_deadline: Instant,
    ) -> Result<SuccessResult, PluginError> {
        let _lock = NodeLock::take(self.state_dir)?;
        match self.add_steps(t, link_deadline).await {
            Ok(r) => Ok(r),
            Err(e) => {
                if let Err(undo) = self.teardown_locked().await {
                    tracing::error!(error = %undo, "rolling back a failed shared-ENI ADD failed too");
                }
                Err(e)
            }
        }
    }

    async fn add_steps(
        &self,
        t: &Target,
        link_deadline: Instant,
    ) -> Result<SuccessResult, PluginError> {
        let (pod_ns, pod) = self.at.pod()?;
        let eni = self.wait_eni(t, link_deadline).await?;
        let table = eni_table(eni.index)?;
        if !eni.up {
            self.at
                .host
                .change(
                    "set the shared ENI up",
                    LinkUnspec::new_with_index(eni.index).up(),
                )
                .await?;
        }
        node_sysctls(self.at.host_ns, &eni.name)?;
        self.at
            .host
            .replace_route_in(
                table,
                &RouteSpec {
                    dst: Ipv4Addr::UNSPECIFIED,
                    prefix: 0,
                    gateway: Some(t.gateway),
                    oif: eni.index,
                    onlink: true,
                    src: None,
                },
            )
            .await?;

        let (host_veth, pod_if) = self.veth(t, pod_ns, pod).await?;
        self.at
            .host
            .replace_route(&RouteSpec {
                dst: t.ip,
                prefix: 32,
                gateway: None,
                oif: host_veth.index,
                onlink: false,
                src: Some(HOST_VETH_IP),
            })
            .await?;

        // Rules of ours for this IP that say something else (a table of an
        // ENI that has gone) make way first.
        let wanted = pod_rules(t.ip, table);
        for (r, msg) in self.at.host.rules_v4().await? {
            if rule_ip(&r) == Some(t.ip) && !wanted.contains(&r) {
                self.at.host.delete_rule(msg).await?;
            }
        }
        for r in &wanted {
            self.at.host.add_rule(r).await?;
        }
        for p in self.at.host.proxy_neighs().await? {
            if p.ip == t.ip && p.index != eni.index {
                self.at.host.delete_proxy_neigh(p.index, p.ip).await?;
            }
        }
        self.at.host.add_proxy_neigh(eni.index, t.ip).await?;

        let sandbox = Some(pod_ns.path().display().to_string());
        Ok(SuccessResult {
            cni_version: String::new(),
            interfaces: vec![
                Interface {
                    name: self.at.ifname.to_owned(),
                    mac: pod_if.mac.map(|m| m.to_string()),
                    sandbox,
                },
                Interface {
                    name: host_veth.name.clone(),
                    mac: host_veth.mac.map(|m| m.to_string()),
                    sandbox: None,
                },
            ],
            ips: vec![IpConfig {
                version: None,
                address: format!("{}/32", t.ip),
                gateway: Some(HOST_VETH_IP.to_string()),
                interface: Some(0),
            }],
            routes: vec![Route {
                dst: "0.0.0.0/0".into(),
                gw: Some(HOST_VETH_IP.to_string()),
            }],
            dns: Dns::default(),
        })
    }

    /// The shared ENI's link in the node, waiting a little for one just
    /// attached; not there by the deadline is code 11.
    async fn wait_eni(&self, t: &Target, deadline: Instant) -> Result<Link, PluginError> {
        loop {
            if let Some(l) = self.at.host.link_by_mac(t.mac).await? {
                return Ok(l);
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(PluginError::TryAgainLater {
                    what: format!(
                        "shared ENI {} (MAC {}) has no link in the node's netns",
                        t.eni_id, t.mac
                    ),
                });
            }
            tokio::time::sleep(Duration::from_millis(100).min(deadline - now)).await;
        }
    }

    /// The veth: host side `ves..` (marked with the pod's IP), pod side
    /// `CNI_IFNAME` with the IP as /32 and a default route via 169.254.1.1.
    async fn veth(
        &self,
        t: &Target,
        pod_ns: &NetNs,
        pod: &Netlink,
    ) -> Result<(Link, Link), PluginError> {
        let host_name = names::shared_host_veth(self.at.container_id);
        if self.at.host.link_by_name(&host_name).await?.is_none() {
            if let Some(stale) = pod.link_by_name(self.at.ifname).await? {
                if stale.kind.as_deref() != Some("veth") {
                    return Err(PluginError::InterfaceConflict(format!(
                        "the pod's netns already has {} ({})",
                        self.at.ifname,
                        stale.kind.as_deref().unwrap_or("unknown kind")
                    )));
                }
                // The pod half of an earlier ADD whose host half is gone.
                pod.delete_link(stale.index).await?;
            }
            self.at
                .host
                .add_veth_into(&host_name, self.at.ifname, pod_ns.raw_fd(), t.mtu)
                .await?;
        }
        let host_veth = self
            .at
            .host
            .link_by_name(&host_name)
            .await?
            .ok_or_else(|| PluginError::Io(format!("veth {host_name} vanished")))?;
        let pod_if = pod.link_by_name(self.at.ifname).await?.ok_or_else(|| {
            PluginError::InterfaceConflict(format!(
                "veth {host_name} exists but the pod has no {}",
                self.at.ifname
            ))
        })?;
        self.at
            .host
            .change(
                "set the host veth up",
                LinkUnspec::new_with_index(host_veth.index)
                    .alias(names::shared_alias(self.at.container_id, t.ip))
                    .mtu(t.mtu)
                    .up(),
            )
            .await?;
        self.at
            .host
            .ensure_address(host_veth.index, IpAddr::V4(HOST_VETH_IP), 32)
            .await?;
        pod.change(
            "set the pod's interface up",
            LinkUnspec::new_with_index(pod_if.index).mtu(t.mtu).up(),
        )
        .await?;
        pod.ensure_address(pod_if.index, IpAddr::V4(t.ip), 32)
            .await?;
        pod.replace_route(&RouteSpec {
            dst: HOST_VETH_IP,
            prefix: 32,
            gateway: None,
            oif: pod_if.index,
            onlink: false,
            src: Some(t.ip),
        })
        .await?;
        pod.replace_route(&RouteSpec {
            dst: Ipv4Addr::UNSPECIFIED,
            prefix: 0,
            gateway: Some(HOST_VETH_IP),
            oif: pod_if.index,
            onlink: true,
            src: None,
        })
        .await?;
        Ok((host_veth, pod_if))
    }

    /// DEL (and the rollback of a failed ADD): the veth deleted (its routes
    /// go with it), the pod's rules and proxy ARP entry removed, and any
    /// left by pods whose veth is already gone. Returns whether anything of
    /// this attachment was found.
    pub async fn teardown(&self) -> Result<bool, PluginError> {
        let _lock = NodeLock::take(self.state_dir)?;
        self.teardown_locked().await
    }

    async fn teardown_locked(&self) -> Result<bool, PluginError> {
        let host_name = names::shared_host_veth(self.at.container_id);
        let mut found = false;
        let mut mine = HashSet::new();
        if let Some(l) = self.at.host.link_by_name(&host_name).await? {
            found = true;
            if let Some((cid, ip)) = l.alias.as_deref().and_then(names::parse_shared_alias) {
                if cid == self.at.container_id {
                    mine.insert(ip);
                }
            }
            // The pod's end and the routes over the veth go with it.
            self.at.host.delete_link(l.index).await?;
        }
        found |= sweep(&self.at.host, &mine).await?;
        Ok(found)
    }

    /// CHECK: the pod's interface, address and default route, the host veth
    /// and route, the rules, the ENI's table and the proxy ARP entry are as
    /// ADD left them.
    pub async fn check(&self, t: &Target) -> Result<(), PluginError> {
        let (_, pod) = self.at.pod()?;
        let fail = |what: String| Err(PluginError::CheckFailed(what));
        let Some(pod_if) = pod.link_by_name(self.at.ifname).await? else {
            return fail(format!("the pod has no {}", self.at.ifname));
        };
        if !pod_if.up {
            return fail(format!("{} is down", self.at.ifname));
        }
        if !pod
            .addresses(pod_if.index)
            .await?
            .contains(&(IpAddr::V4(t.ip), 32))
        {
            return fail(format!("{} does not hold {}/32", self.at.ifname, t.ip));
        }
        if !pod.routes_v4().await?.iter().any(|r| {
            r.prefix == 0 && r.gateway == Some(HOST_VETH_IP) && r.oif == Some(pod_if.index)
        }) {
            return fail(format!(
                "no default route via {HOST_VETH_IP} on {}",
                self.at.ifname
            ));
        }
        let host_name = names::shared_host_veth(self.at.container_id);
        let Some(host_veth) = self.at.host.link_by_name(&host_name).await? else {
            return fail(format!("the node has no {host_name}"));
        };
        if !self
            .at
            .host
            .routes_v4()
            .await?
            .iter()
            .any(|r| r.dst == t.ip && r.prefix == 32 && r.oif == Some(host_veth.index))
        {
            return fail(format!(
                "the node has no route to {} over {host_name}",
                t.ip
            ));
        }
        let Some(eni) = self.at.host.link_by_mac(t.mac).await? else {
            return fail(format!("shared ENI {} has no link in the node", t.eni_id));
        };
        if !eni.up {
            return fail(format!("shared ENI link {} is down", eni.name));
        }
        let table = eni_table(eni.index)?;
        let rules: Vec<Rule4> = self
            .at
            .host
            .rules_v4()
            .await?
            .into_iter()
            .map(|(r, _)| r)
            .collect();
        for want in pod_rules(t.ip, table) {
            if !rules.contains(&want) {
                return fail(format!("the node lacks the rule {want:?}"));
            }
        }
        if !self
            .at
            .host
            .routes_in(table)
            .await?
            .iter()
            .any(|r| r.prefix == 0 && r.gateway == Some(t.gateway) && r.oif == Some(eni.index))
        {
            return fail(format!(
                "table {table} has no default route via {} on {}",
                t.gateway, eni.name
            ));
        }
        if !self
            .at
            .host
            .proxy_neighs()
            .await?
            .iter()
            .any(|p| p.ip == t.ip && p.index == eni.index)
        {
            return fail(format!("no proxy ARP entry for {} on {}", t.ip, eni.name));
        }
        Ok(())
    }
}

/// `ip_forward` on (the node forwards its pods' traffic, as `ptp` sets it)
/// and proxy ARP answers without the default random delay on the ENI.
fn node_sysctls(host_ns: &NetNs, eni: &str) -> Result<(), PluginError> {
    let writes = [
        ("/proc/sys/net/ipv4/ip_forward".to_owned(), "1"),
        (format!("/proc/sys/net/ipv4/neigh/{eni}/proxy_delay"), "0"),
    ];
    // /proc/sys/net shows the namespace of the thread that opens it.
    host_ns.run(|| {
        for (path, value) in &writes {
            if std::fs::read_to_string(path).is_ok_and(|v| v.trim() == *value) {
                continue;
            }
            std::fs::write(path, value).map_err(|e| PluginError::io(format!("write {path}"), e))?;
        }
        Ok(())
    })?
}

/// Remove every rule of ours whose pod IP no shared host veth claims, their
/// proxy ARP entries, and the tables no rule of ours points at any more.
/// (The route to a pod went with its veth.)
/// Returns whether an IP of `mine` was among them.
async fn sweep(host: &Netlink, mine: &HashSet<Ipv4Addr>) -> Result<bool, PluginError> {
    let live: HashSet<Ipv4Addr> = host
        .links()
        .await?
        .iter()
        .filter_map(|l| l.alias.as_deref().and_then(names::parse_shared_alias))
        .map(|(_, ip)| ip)
        .collect();
    let mut gone_ips: BTreeSet<Ipv4Addr> = mine
        .iter()
        .filter(|ip| !live.contains(ip))
        .copied()
        .collect();
    let mut tables: BTreeSet<u32> = BTreeSet::new();
    for (r, msg) in host.rules_v4().await? {
        let Some(ip) = rule_ip(&r) else { continue };
        if live.contains(&ip) {
            continue;
        }
        if r.table != MAIN_TABLE {
            tables.insert(r.table);
        }
        gone_ips.insert(ip);
        host.delete_rule(msg).await?;
    }
    for p in host.proxy_neighs().await? {
        if gone_ips.contains(&p.ip) {
            host.delete_proxy_neigh(p.index, p.ip).await?;
        }
    }
    let still: HashSet<u32> = host
        .rules_v4()
        .await?
        .iter()
        .filter(|(r, _)| r.protocol == RULE_PROTOCOL)
        .map(|(r, _)| r.table)
        .collect();
    for t in tables.into_iter().filter(|t| !still.contains(t)) {
        host.flush_table(t).await?;
    }
    Ok(mine.iter().any(|ip| gone_ips.contains(ip)))
}

/// GC: delete the shared veths of containers not in `valid` and sweep what
/// their pods (and any pod whose veth is gone) left.
pub async fn gc_host(
    host: &Netlink,
    state_dir: &Path,
    valid: &HashSet<String>,
) -> Result<Vec<String>, PluginError> {
    let _lock = NodeLock::take(state_dir)?;
    let mut cleaned = Vec::new();
    for l in host.links().await? {
        let Some((cid, _)) = l.alias.as_deref().and_then(names::parse_shared_alias) else {
            continue;
        };
        if !valid.contains(cid) {
            host.delete_link(l.index).await?;
            cleaned.push(l.name.clone());
        }
    }
    sweep(host, &HashSet::new()).await?;
    Ok(cleaned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_follow_the_link_index() {
        assert_eq!(eni_table(3).unwrap(), 1003);
        assert_eq!(eni_table(7).unwrap(), 1007);
        assert!(eni_table(u32::MAX - 500).is_err());
        assert!(eni_table(u32::MAX - TABLE_BASE).is_err());
    }

    #[test]
    fn a_pods_rules_deliver_to_it_by_main_and_send_from_it_by_its_enis_table() {
        let ip = Ipv4Addr::new(192, 168, 0, 21);
        let [to, from] = pod_rules(ip, 1004);
        assert_eq!(to.to, Some((ip, 32)));
        assert_eq!(to.table, MAIN_TABLE);
        assert_eq!(from.from, Some((ip, 32)));
        assert_eq!(from.table, 1004);
        assert!(to.priority < from.priority, "local delivery wins");
        assert!(from.priority < 32766, "before the main table's rule");
        assert_eq!(rule_ip(&to), Some(ip));
        assert_eq!(rule_ip(&from), Some(ip));
        let foreign = Rule4 {
            protocol: 0,
            ..from.clone()
        };
        assert_eq!(rule_ip(&foreign), None, "a rule not ours is never touched");
        let wide = Rule4 {
            from: Some((ip, 24)),
            ..from
        };
        assert_eq!(rule_ip(&wide), None);
    }
}
