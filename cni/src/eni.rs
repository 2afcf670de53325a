//! An exclusive ENI in a pod: the ENI's link, found by MAC in the host
//! namespace, moved into the pod as `CNI_IFNAME` with the allocation's IP,
//! MTU and default route; and the pod<->node veth that keeps Service and
//! node traffic off the ENI (as Terway does):
//!
//! ```text
//!  pod netns                                   host netns
//!  eth0 (the ENI)  10.0.0.7/24                 vecXXXXXXXXXXXX 169.254.1.1/32
//!    default via <gateway>                       10.0.0.7/32 dev vec.. src 169.254.1.1
//!  veth0 ------------------------------------- (its peer)
//!    169.254.1.1 dev veth0 scope link
//!    <serviceCidr> via 169.254.1.1 onlink src 10.0.0.7
//!    <each host IPv4>/32 via 169.254.1.1 onlink src 10.0.0.7
//! ```
//!
//! The node reaches the pod from 169.254.1.1 and the pod answers over the
//! veth; the pod reaches the Service CIDR (kube-proxy's rules live in the
//! host namespace) and the node's own addresses over the veth; everything
//! else leaves through the ENI.
//!
//! How DEL finds the ENI's old name: before the link leaves the host, its
//! alias (`IFLA_IFALIAS`, kept by the kernel across namespaces) is set to
//! `vpc-eni-cni:eni:<container id>:<host name>` ([`crate::names`]). DEL reads
//! it off `CNI_IFNAME` in the pod (or off any host link, should the pod's
//! namespace be gone), moves the link back under that name, down, and clears
//! the alias. No file on the node is needed, and a DEL from a newer binary
//! after an upgrade still finds it.

use crate::error::PluginError;
use crate::names::{self, HOST_VETH_IP};
use crate::netlink::{is_exists, Link, Mac, Netlink, RouteSpec};
use crate::netns::NetNs;
use crate::spec::{Dns, Interface, IpConfig, Route, SuccessResult};
use ipam::allocation::EniAllocation;
use ipnet::Ipv4Net;
use rtnetlink::LinkUnspec;
use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

/// The kernel picks the first free `eniN` when the old name is taken.
const FALLBACK_NAME: &str = "eni%d";

/// What the pod's network must look like, from the allocation and config.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    pub eni_id: String,
    pub mac: Mac,
    pub ip: Ipv4Addr,
    pub prefix: u8,
    pub gateway: Ipv4Addr,
    pub mtu: u32,
    pub service_cidr: Ipv4Net,
}

impl Target {
    /// Read the allocation; a value that does not parse is an error naming
    /// the field (the controller wrote something this plugin cannot use).
    pub fn new(a: &EniAllocation, mtu: u32, service_cidr: Ipv4Net) -> Result<Self, PluginError> {
        let bad = |field: &str, value: &str| {
            PluginError::Kube(format!(
                "allocation of ENI {}: {field} {value:?} is not usable",
                a.eni_id
            ))
        };
        let mac = Mac::parse(&a.mac).ok_or_else(|| bad("mac", &a.mac))?;
        let ip: Ipv4Addr = a.ip.parse().map_err(|_| bad("ip", &a.ip))?;
        let subnet: Ipv4Net = a
            .subnet_cidr
            .parse()
            .map_err(|_| bad("subnetCidr", &a.subnet_cidr))?;
        if !subnet.contains(&ip) {
            return Err(bad("ip (outside subnetCidr)", &a.ip));
        }
        let gateway: Ipv4Addr = a.gateway.parse().map_err(|_| bad("gateway", &a.gateway))?;
        Ok(Target {
            eni_id: a.eni_id.clone(),
            mac,
            ip,
            prefix: subnet.prefix_len(),
            gateway,
            mtu,
            service_cidr,
        })
    }
}

/// The two namespaces and the attachment an operation acts on.
pub struct Plumbing<'a> {
    pub host_ns: &'a NetNs,
    pub host: Netlink,
    /// The pod's namespace, when there is one (DEL may come without).
    pub pod: Option<(&'a NetNs, Netlink)>,
    pub container_id: &'a str,
    pub ifname: &'a str,
}

impl Plumbing<'_> {
    pub(crate) fn pod(&self) -> Result<(&NetNs, &Netlink), PluginError> {
        self.pod
            .as_ref()
            .map(|(ns, nl)| (*ns, nl))
            .ok_or_else(|| PluginError::InvalidEnv {
                var: "CNI_NETNS",
                reason: "not set".into(),
            })
    }

    /// ADD: plumb the pod. On failure everything this attachment holds is
    /// undone (the veth deleted, the ENI back in the host) before the error
    /// is returned.
    pub async fn add(
        &self,
        t: &Target,
        link_deadline: Instant,
    ) -> Result<SuccessResult, PluginError> {
        match self.add_steps(t, link_deadline).await {
            Ok(r) => Ok(r),
            Err(e) => {
                if let Err(undo) = self.teardown().await {
                    tracing::error!(error = %undo, "rolling back a failed ADD failed too");
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
        let (pod_ns, pod) = self.pod()?;
        let eni = self.eni_into_pod(t, pod_ns, pod, link_deadline).await?;
        pod.change(
            "set the ENI up",
            LinkUnspec::new_with_index(eni.index).mtu(t.mtu).up(),
        )
        .await?;
        pod.ensure_address(eni.index, IpAddr::V4(t.ip), t.prefix)
            .await?;
        pod.replace_route(&RouteSpec {
            dst: Ipv4Addr::UNSPECIFIED,
            prefix: 0,
            gateway: Some(t.gateway),
            oif: eni.index,
            onlink: false,
            src: None,
        })
        .await?;

        let (host_veth, pod_veth) = self.veth(t, pod_ns, pod).await?;
        let mut interfaces = vec![Interface {
            name: self.ifname.to_owned(),
            mac: Some(t.mac.to_string()),
            sandbox: Some(pod_ns.path().display().to_string()),
        }];
        interfaces.push(Interface {
            name: host_veth.name.clone(),
            mac: host_veth.mac.map(|m| m.to_string()),
            sandbox: None,
        });
        interfaces.push(Interface {
            name: pod_veth.name.clone(),
            mac: pod_veth.mac.map(|m| m.to_string()),
            sandbox: Some(pod_ns.path().display().to_string()),
        });
        Ok(SuccessResult {
            cni_version: String::new(),
            interfaces,
            ips: vec![IpConfig {
                version: None,
                address: format!("{}/{}", t.ip, t.prefix),
                gateway: Some(t.gateway.to_string()),
                interface: Some(0),
            }],
            routes: vec![
                Route {
                    dst: "0.0.0.0/0".into(),
                    gw: Some(t.gateway.to_string()),
                },
                Route {
                    dst: t.service_cidr.to_string(),
                    gw: Some(HOST_VETH_IP.to_string()),
                },
            ],
            dns: Dns::default(),
        })
    }

    /// The ENI's link as `CNI_IFNAME` in the pod: already there (a repeated
    /// ADD), or found by MAC in the host, marked with its host name and moved.
    async fn eni_into_pod(
        &self,
        t: &Target,
        pod_ns: &NetNs,
        pod: &Netlink,
        link_deadline: Instant,
    ) -> Result<Link, PluginError> {
        if let Some(l) = pod.link_by_name(self.ifname).await? {
            if l.mac == Some(t.mac) {
                return Ok(l);
            }
            return Err(PluginError::InterfaceConflict(format!(
                "the pod's netns already has {} with MAC {}, not ENI {}'s {}",
                self.ifname,
                l.mac.map(|m| m.to_string()).unwrap_or_default(),
                t.eni_id,
                t.mac
            )));
        }
        let l = self.wait_host_link(t, link_deadline).await?;
        let host_name = match l.alias.as_deref().and_then(names::parse_eni_alias) {
            // Marked by an earlier ADD that did not finish: its name is the real one.
            Some((cid, name)) => {
                if cid != self.container_id {
                    tracing::warn!(link = %l.name, holder = cid, "taking over an ENI link left marked by another container");
                }
                name.to_owned()
            }
            None => l.name.clone(),
        };
        self.host
            .change(
                "mark the ENI link",
                LinkUnspec::new_with_index(l.index)
                    .alias(names::eni_alias(self.container_id, &host_name))
                    .down(),
            )
            .await?;
        self.host
            .move_to(l.index, pod_ns.raw_fd(), self.ifname)
            .await
            .map_err(|e| {
                PluginError::Io(format!(
                    "move ENI link {} into the pod as {}: {e}",
                    l.name, self.ifname
                ))
            })?;
        match pod.link_by_mac(t.mac).await? {
            Some(moved) if moved.name == self.ifname => Ok(moved),
            _ => Err(PluginError::Io(format!(
                "ENI link {} did not arrive in the pod as {}",
                l.name, self.ifname
            ))),
        }
    }

    /// The ENI's link in the host, waiting a little for a link that was just
    /// attached and is not yet visible; not there by the deadline is code 11.
    async fn wait_host_link(&self, t: &Target, deadline: Instant) -> Result<Link, PluginError> {
        loop {
            if let Some(l) = self.host.link_by_mac(t.mac).await? {
                return Ok(l);
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(PluginError::TryAgainLater {
                    what: format!(
                        "ENI {} (MAC {}) has no link in the host netns",
                        t.eni_id, t.mac
                    ),
                });
            }
            tokio::time::sleep(Duration::from_millis(100).min(deadline - now)).await;
        }
    }

    /// The pod<->node veth with its addresses and routes on both sides.
    async fn veth(
        &self,
        t: &Target,
        pod_ns: &NetNs,
        pod: &Netlink,
    ) -> Result<(Link, Link), PluginError> {
        let host_name = names::host_veth(self.container_id);
        let pod_name = names::pod_veth(self.ifname);
        if self.host.link_by_name(&host_name).await?.is_none() {
            let temp = names::peer_temp(self.container_id);
            if let Some(stale) = self.host.link_by_name(&temp).await? {
                self.host.delete_link(stale.index).await?;
            }
            if let Some(stale) = pod.link_by_name(pod_name).await? {
                // The pod half of an earlier ADD whose host half is gone.
                pod.delete_link(stale.index).await?;
            }
            self.host
                .add_veth_into(&host_name, pod_name, pod_ns.raw_fd(), t.mtu)
                .await?;
        }
        let host_veth = self
            .host
            .link_by_name(&host_name)
            .await?
            .ok_or_else(|| PluginError::Io(format!("veth {host_name} vanished")))?;
        let pod_veth = pod.link_by_name(pod_name).await?.ok_or_else(|| {
            PluginError::InterfaceConflict(format!(
                "veth {host_name} exists but the pod has no {pod_name}"
            ))
        })?;
        self.host
            .change(
                "set the host veth up",
                LinkUnspec::new_with_index(host_veth.index)
                    .alias(names::veth_alias(self.container_id))
                    .mtu(t.mtu)
                    .up(),
            )
            .await?;
        self.host
            .ensure_address(host_veth.index, IpAddr::V4(HOST_VETH_IP), 32)
            .await?;
        pod.change(
            "set the pod veth up",
            LinkUnspec::new_with_index(pod_veth.index).mtu(t.mtu).up(),
        )
        .await?;
        let via_veth = |dst: Ipv4Addr, prefix: u8| RouteSpec {
            dst,
            prefix,
            gateway: Some(HOST_VETH_IP),
            oif: pod_veth.index,
            onlink: true,
            src: Some(t.ip),
        };
        pod.replace_route(&RouteSpec {
            dst: HOST_VETH_IP,
            prefix: 32,
            gateway: None,
            oif: pod_veth.index,
            onlink: false,
            src: Some(t.ip),
        })
        .await?;
        pod.replace_route(&via_veth(
            t.service_cidr.network(),
            t.service_cidr.prefix_len(),
        ))
        .await?;
        // Replies to the node's own addresses (kubelet, host-network pods)
        // go back the way they came, not out of the ENI.
        for ip in self.host.global_ipv4().await? {
            if ip != t.ip && !t.service_cidr.contains(&ip) {
                pod.replace_route(&via_veth(ip, 32)).await?;
            }
        }
        self.host
            .replace_route(&RouteSpec {
                dst: t.ip,
                prefix: 32,
                gateway: None,
                oif: host_veth.index,
                onlink: false,
                src: Some(HOST_VETH_IP),
            })
            .await?;
        Ok((host_veth, pod_veth))
    }

    /// DEL (and the rollback of a failed ADD): the ENI back in the host
    /// under its old name, down; the veth deleted. Whatever is already gone
    /// is skipped. Returns whether anything of an exclusive-ENI attachment
    /// was found.
    pub async fn teardown(&self) -> Result<bool, PluginError> {
        let mut found = false;
        if let Some((_, pod)) = &self.pod {
            if let Some(l) = pod.link_by_name(self.ifname).await? {
                if let Some((_, host_name)) = l.alias.as_deref().and_then(names::parse_eni_alias) {
                    found = true;
                    self.eni_to_host(pod, &l, host_name).await?;
                }
            }
        }
        // Marked links already in the host: the pod's netns went away (a
        // real NIC falls back to the host), or an ADD stopped half-way.
        for l in self.host.links().await? {
            if let Some((cid, host_name)) = l.alias.as_deref().and_then(names::parse_eni_alias) {
                if cid == self.container_id {
                    found = true;
                    restore_in_host(&self.host, &l, host_name).await?;
                }
            }
        }
        for name in [
            names::host_veth(self.container_id),
            names::peer_temp(self.container_id),
        ] {
            if let Some(l) = self.host.link_by_name(&name).await? {
                found = true;
                self.host.delete_link(l.index).await?;
            }
        }
        Ok(found)
    }

    async fn eni_to_host(
        &self,
        pod: &Netlink,
        l: &Link,
        host_name: &str,
    ) -> Result<(), PluginError> {
        pod.change(
            "set the ENI down",
            LinkUnspec::new_with_index(l.index).down(),
        )
        .await?;
        // The kernel moves the link under its pod name when that is free in
        // the host and renames it after; if the old name is taken the rename
        // fails after the move, so look where it landed before going on.
        if let Err(e) = pod.move_to(l.index, self.host_ns.raw_fd(), host_name).await {
            if !is_exists(&e) {
                return Err(PluginError::Io(format!(
                    "move ENI link {} back to the host as {host_name}: {e}",
                    l.name
                )));
            }
            if pod.link_by_index(l.index).await?.is_some() {
                pod.move_to(l.index, self.host_ns.raw_fd(), FALLBACK_NAME)
                    .await
                    .map_err(|e| {
                        PluginError::Io(format!("move ENI link {} back to the host: {e}", l.name))
                    })?;
            }
        }
        let Some(mac) = l.mac else { return Ok(()) };
        if let Some(back) = self.host.link_by_mac(mac).await? {
            restore_in_host(&self.host, &back, host_name).await?;
        }
        Ok(())
    }

    /// CHECK: the ENI, its address and default route, and the veth with its
    /// routes are as ADD left them.
    pub async fn check(&self, t: &Target) -> Result<(), PluginError> {
        let (_, pod) = self.pod()?;
        let fail = |what: String| Err(PluginError::CheckFailed(what));
        let Some(eni) = pod.link_by_name(self.ifname).await? else {
            return fail(format!("the pod has no {}", self.ifname));
        };
        if eni.mac != Some(t.mac) {
            return fail(format!(
                "{} does not have ENI {}'s MAC {}",
                self.ifname, t.eni_id, t.mac
            ));
        }
        if !eni.up {
            return fail(format!("{} is down", self.ifname));
        }
        let addrs = pod.addresses(eni.index).await?;
        if !addrs.contains(&(IpAddr::V4(t.ip), t.prefix)) {
            return fail(format!(
                "{} does not hold {}/{}",
                self.ifname, t.ip, t.prefix
            ));
        }
        let routes = pod.routes_v4().await?;
        let has = |dst: Ipv4Addr, prefix: u8, gw: Option<Ipv4Addr>, oif: u32| {
            routes.iter().any(|r| {
                r.dst == dst && r.prefix == prefix && r.gateway == gw && r.oif == Some(oif)
            })
        };
        if !has(Ipv4Addr::UNSPECIFIED, 0, Some(t.gateway), eni.index) {
            return fail(format!(
                "no default route via {} on {}",
                t.gateway, self.ifname
            ));
        }
        let pod_veth_name = names::pod_veth(self.ifname);
        let Some(pod_veth) = pod.link_by_name(pod_veth_name).await? else {
            return fail(format!("the pod has no {pod_veth_name}"));
        };
        if !has(
            t.service_cidr.network(),
            t.service_cidr.prefix_len(),
            Some(HOST_VETH_IP),
            pod_veth.index,
        ) {
            return fail(format!(
                "no route to {} over {pod_veth_name}",
                t.service_cidr
            ));
        }
        let host_veth_name = names::host_veth(self.container_id);
        let Some(host_veth) = self.host.link_by_name(&host_veth_name).await? else {
            return fail(format!("the host has no {host_veth_name}"));
        };
        let host_routes = self.host.routes_v4().await?;
        if !host_routes
            .iter()
            .any(|r| r.dst == t.ip && r.prefix == 32 && r.oif == Some(host_veth.index))
        {
            return fail(format!(
                "the host has no route to {} over {host_veth_name}",
                t.ip
            ));
        }
        Ok(())
    }
}

/// Down, old name (or `eniN` if taken), no alias.
async fn restore_in_host(host: &Netlink, l: &Link, host_name: &str) -> Result<(), PluginError> {
    host.change(
        "set the ENI down",
        LinkUnspec::new_with_index(l.index).down(),
    )
    .await?;
    if l.name != host_name {
        let renamed = host
            .set(LinkUnspec::new_with_index(l.index).name(host_name.to_owned()))
            .await;
        if let Err(e) = renamed {
            if !is_exists(&e) {
                return Err(PluginError::Io(format!(
                    "rename ENI link {} back to {host_name}: {e}",
                    l.name
                )));
            }
            tracing::warn!(link = %l.name, wanted = host_name, "old ENI name taken; the kernel picks eniN");
            host.change(
                "rename the ENI link",
                LinkUnspec::new_with_index(l.index).name(FALLBACK_NAME.to_owned()),
            )
            .await?;
        }
    }
    host.change(
        "clear the ENI link's alias",
        LinkUnspec::new_with_index(l.index).alias(String::new()),
    )
    .await
}

/// GC: in the host namespace, give back ENI links and delete veths marked
/// for containers not in `valid` (the runtime's list of live attachments).
/// Returns what was cleaned, for the log.
pub async fn gc_host(
    host: &Netlink,
    valid: &std::collections::HashSet<String>,
) -> Result<Vec<String>, PluginError> {
    let mut cleaned = Vec::new();
    for l in host.links().await? {
        let Some(alias) = l.alias.as_deref() else {
            continue;
        };
        if let Some((cid, host_name)) = names::parse_eni_alias(alias) {
            if !valid.contains(cid) {
                restore_in_host(host, &l, host_name).await?;
                cleaned.push(l.name.clone());
            }
        } else if let Some(cid) = names::parse_veth_alias(alias) {
            if !valid.contains(cid) {
                host.delete_link(l.index).await?;
                cleaned.push(l.name.clone());
            }
        }
    }
    Ok(cleaned)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alloc() -> EniAllocation {
        EniAllocation {
            eni_id: "eni-1".into(),
            mac: "00:16:3e:00:00:01".into(),
            ip: "10.0.0.7".into(),
            subnet_id: "vsw-1".into(),
            subnet_cidr: "10.0.0.0/24".into(),
            gateway: "10.0.0.253".into(),
            node: "node-a".into(),
        }
    }

    #[test]
    fn target_from_allocation() {
        let svc: Ipv4Net = "10.96.0.0/12".parse().unwrap();
        let t = Target::new(&alloc(), 1500, svc).unwrap();
        assert_eq!(t.ip, Ipv4Addr::new(10, 0, 0, 7));
        assert_eq!(t.prefix, 24);
        assert_eq!(t.gateway, Ipv4Addr::new(10, 0, 0, 253));
        assert_eq!(t.mac.to_string(), "00:16:3e:00:00:01");
        for (field, f) in [
            (
                "mac",
                (|a: &mut EniAllocation| a.mac = "x".into()) as fn(&mut EniAllocation),
            ),
            ("ip", |a| a.ip = "10.0.1.7".into()),
            ("subnetCidr", |a| a.subnet_cidr = "10.0.0.0".into()),
            ("gateway", |a| a.gateway = "".into()),
        ] {
            let mut a = alloc();
            f(&mut a);
            let e = Target::new(&a, 1500, svc).unwrap_err();
            assert!(e.to_string().contains(field), "{field}: {e}");
        }
    }
}
