//! Following the fake cloud: what the lab should look like, as a pure
//! function of a [`WorldSnapshot`] ([`desired`]), and the reconcile that
//! makes the kernel match it ([`Shared::reconcile`]), run by a tokio task
//! every poll interval and on demand by `Lab::sync`. Idempotent: a pass with
//! nothing changed in the world runs no command, and every so often a pass
//! re-reads the kernel anyway to catch what moved there (an ENI link a pod
//! namespace took down with it).
//!
//! ENI links are tracked by MAC across every lab namespace: an ENI the CNI
//! plugin moved into a pod is neither recreated in the node nor yanked from
//! the pod; a detached ENI's link is removed only while it sits in a node.
//!
//! Addresses are delivered as the VPC delivers them: every private IP the
//! cloud has assigned to an ENI that is in use on a node (its primary IP and
//! each secondary IP `AssignPrivateIpAddresses` gave it) becomes a permanent
//! neighbour entry on the router's leg of the ENI's vSwitch, IP -> the ENI's
//! MAC. Routed traffic to an address therefore reaches the ENI the cloud
//! says holds it, whatever any host answers to ARP (a permanent entry is
//! never overwritten by ARP), and stops being delivered there once the cloud
//! unassigns it. Hosts on the same vSwitch (the VM) still resolve each
//! other by ARP, so a node must answer for the secondary IPs it serves.

use super::netns::{self, Names, Netns};
use super::topology::{self, NodeLink, RouteTarget};
use super::LabError;
use crate::cloud::flavor::Flavor;
use crate::cloud::{World, WorldSnapshot};
use ipam::ids::{EniId, InstanceId, SubnetId, VpcId};
use ipnet::Ipv4Net;
use parking_lot::Mutex;
use providers::model::{EniStatus, NextHop, RouteEntryStatus};
use std::collections::{BTreeMap, HashMap};
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

/// A vSwitch as the lab builds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct VSwitchWant {
    pub cidr: Ipv4Net,
    pub gateway: Ipv4Addr,
}

/// A node (instance) as the lab builds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct NodeWant {
    pub subnet: SubnetId,
    pub ip: Ipv4Addr,
    /// The MAC of its primary ENI.
    pub mac: String,
}

/// An attached secondary ENI.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct EniWant {
    pub eni: EniId,
    pub instance: InstanceId,
    pub subnet: SubnetId,
}

/// What the world says the lab should hold.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Desired {
    pub vswitches: BTreeMap<SubnetId, VSwitchWant>,
    pub nodes: BTreeMap<InstanceId, NodeWant>,
    /// By MAC (lowercase).
    pub enis: BTreeMap<String, EniWant>,
    pub routes: BTreeMap<Ipv4Net, RouteTarget>,
    /// Every private IP assigned to an ENI in use on a node: where the VPC
    /// delivers it.
    pub addresses: BTreeMap<Ipv4Addr, AddressWant>,
}

/// Where the VPC delivers one private IP: the ENI (by MAC) on its vSwitch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct AddressWant {
    pub subnet: SubnetId,
    /// Lowercase.
    pub mac: String,
}

/// The lab's picture of one VPC of the world: its vSwitches; its instances
/// with their primary ENI's MAC; its secondary ENIs that are `InUse` on one
/// of those instances; the custom entries of its route tables that the cloud
/// has made `Available` (main table first, the first entry for a destination
/// wins), each to its instance's primary address, or a blackhole when the
/// entry is a blackhole or its instance is gone.
pub(crate) fn desired(snap: &WorldSnapshot, vpc: &VpcId) -> Desired {
    let mut d = Desired::default();
    for s in snap.subnets.iter().filter(|s| &s.vpc_id == vpc) {
        d.vswitches.insert(
            s.id.clone(),
            VSwitchWant {
                cidr: s.cidr,
                gateway: s.gateway,
            },
        );
    }
    for inst in snap.instances.iter().filter(|i| &i.vpc_id == vpc) {
        let primary = inst
            .enis
            .iter()
            .find(|a| a.primary)
            .and_then(|a| snap.enis.iter().find(|e| e.id == a.eni_id));
        let (Some(primary), true) = (primary, d.vswitches.contains_key(&inst.subnet_id)) else {
            continue;
        };
        d.nodes.insert(
            inst.id.clone(),
            NodeWant {
                subnet: inst.subnet_id.clone(),
                ip: inst.primary_ip,
                mac: primary.mac.to_ascii_lowercase(),
            },
        );
    }
    for eni in &snap.enis {
        let Some(instance) = &eni.instance_id else {
            continue;
        };
        let primary = snap
            .instances
            .iter()
            .filter(|i| &i.id == instance)
            .flat_map(|i| &i.enis)
            .any(|a| a.eni_id == eni.id && a.primary);
        if primary
            || eni.status != EniStatus::InUse
            || !d.nodes.contains_key(instance)
            || !d.vswitches.contains_key(&eni.subnet_id)
        {
            continue;
        }
        d.enis.insert(
            eni.mac.to_ascii_lowercase(),
            EniWant {
                eni: eni.id.clone(),
                instance: instance.clone(),
                subnet: eni.subnet_id.clone(),
            },
        );
    }
    for eni in &snap.enis {
        let on_node = eni
            .instance_id
            .as_ref()
            .is_some_and(|i| d.nodes.contains_key(i));
        let mac = eni.mac.to_ascii_lowercase();
        let in_use = d.enis.contains_key(&mac) || d.nodes.values().any(|n| n.mac == mac);
        if !on_node || !in_use || !d.vswitches.contains_key(&eni.subnet_id) {
            continue;
        }
        for ip in std::iter::once(&eni.primary_ip).chain(&eni.secondary_ips) {
            d.addresses.insert(
                *ip,
                AddressWant {
                    subnet: eni.subnet_id.clone(),
                    mac: mac.clone(),
                },
            );
        }
    }
    let mut tables: Vec<_> = snap
        .route_tables
        .iter()
        .filter(|t| &t.table.vpc_id == vpc)
        .collect();
    tables.sort_by_key(|t| !t.table.main);
    for t in tables {
        for e in t.entries.iter().filter(|e| !e.system) {
            let target = match (&e.status, &e.next_hop) {
                (RouteEntryStatus::Blackhole, _) => RouteTarget::Blackhole,
                (RouteEntryStatus::Available, NextHop::Instance(id)) => {
                    match snap.instances.iter().find(|i| &i.id == id) {
                        Some(i) if &i.vpc_id == vpc => RouteTarget::Via(i.primary_ip),
                        _ => RouteTarget::Blackhole,
                    }
                }
                // Pending, Deleting, Modifying: not (or no longer) in force;
                // next hops other than instances lead out of the lab.
                _ => continue,
            };
            d.routes.entry(e.destination).or_insert(target);
        }
    }
    d
}

/// A reserved address of the vSwitch that is neither its network, its
/// broadcast nor its gateway: the cloud never hands it to an ENI, so the VM
/// holding it never collides with one (Alibaba: x.x.x.254 of a /24; AWS:
/// x.x.x.3).
pub(crate) fn vm_address(flavor: Flavor, vsw: &VSwitchWant) -> Option<Ipv4Addr> {
    let (first, last) = (
        u32::from(vsw.cidr.network()),
        u32::from(vsw.cidr.broadcast()),
    );
    (first.saturating_add(1)..last)
        .rev()
        .map(Ipv4Addr::from)
        .find(|ip| *ip != vsw.gateway && flavor.is_reserved(&vsw.cidr, *ip))
}

/// A node the lab has built.
pub(crate) struct NodeBuilt {
    pub ns: Netns,
    pub ip: Ipv4Addr,
}

/// An ENI link the lab has made (it may be in a pod namespace by now).
pub(crate) struct EniBuilt {
    pub instance: InstanceId,
}

/// What the lab has built so far.
#[derive(Default)]
pub(crate) struct Built {
    pub torn_down: bool,
    pub vswitches: BTreeMap<SubnetId, (u32, VSwitchWant)>,
    pub vm: Option<(SubnetId, Ipv4Net)>,
    pub nodes: BTreeMap<InstanceId, NodeBuilt>,
    /// By MAC.
    pub enis: BTreeMap<String, EniBuilt>,
    next_node: u32,
    next_eni: u32,
    /// The router's permanent neighbour entries: IP -> (leg, MAC).
    neighbours: BTreeMap<Ipv4Addr, (String, String)>,
    /// The world's picture at the last pass that completed.
    last: Option<Desired>,
}

/// What the lab and its follower task share.
pub(crate) struct Shared {
    pub names: Names,
    pub world: World,
    pub vpc: VpcId,
    /// The vSwitch the VM sits on.
    pub vm_vswitch: SubnetId,
    pub built: Mutex<Built>,
}

impl Shared {
    /// One pass. `full` re-reads the kernel even when the world has not
    /// changed since the last pass.
    pub fn reconcile(&self, full: bool) -> Result<(), LabError> {
        let mut built = self.built.lock();
        if built.torn_down {
            return Ok(());
        }
        let want = desired(&self.world.snapshot(), &self.vpc);
        if !full && built.last.as_ref() == Some(&want) {
            return Ok(());
        }
        built.last = None;
        self.vswitches(&mut built, &want)?;
        self.vm(&mut built)?;
        self.nodes(&mut built, &want)?;
        self.enis(&mut built, &want)?;
        self.routes(&want)?;
        self.neighbours(&mut built, &want, full)?;
        built.last = Some(want);
        Ok(())
    }

    fn vswitches(&self, built: &mut Built, want: &Desired) -> Result<(), LabError> {
        for (id, w) in &want.vswitches {
            if built.vswitches.contains_key(id) {
                continue;
            }
            let idx = built.vswitches.len() as u32;
            topology::add_vswitch(&self.names, idx, w.cidr, w.gateway)?;
            tracing::debug!(lab = self.names.prefix(), vswitch = %id, cidr = %w.cidr, "lab vSwitch up");
            built.vswitches.insert(id.clone(), (idx, w.clone()));
        }
        Ok(())
    }

    fn vm(&self, built: &mut Built) -> Result<(), LabError> {
        if built.vm.is_some() {
            return Ok(());
        }
        let Some((idx, vsw)) = built.vswitches.get(&self.vm_vswitch).cloned() else {
            return Ok(());
        };
        let ip = vm_address(self.world.flavor(), &vsw).ok_or_else(|| {
            LabError::Invalid(format!(
                "vSwitch {} ({}) has no reserved address for the VM",
                self.vm_vswitch, vsw.cidr
            ))
        })?;
        let addr = Ipv4Net::new(ip, vsw.cidr.prefix_len())
            .map_err(|e| LabError::Invalid(format!("VM address {ip}: {e}")))?;
        topology::add_vm(&self.names, idx, addr, vsw.gateway)?;
        built.vm = Some((self.vm_vswitch.clone(), addr));
        Ok(())
    }

    fn nodes(&self, built: &mut Built, want: &Desired) -> Result<(), LabError> {
        let gone: Vec<InstanceId> = built
            .nodes
            .keys()
            .filter(|id| !want.nodes.contains_key(*id))
            .cloned()
            .collect();
        for id in gone {
            if let Some(node) = built.nodes.remove(&id) {
                netns::delete(&node.ns)?;
                tracing::debug!(lab = self.names.prefix(), instance = %id, "lab node removed");
            }
        }
        for (id, w) in &want.nodes {
            if built.nodes.contains_key(id) {
                continue;
            }
            let Some((bridge_idx, vsw)) = built.vswitches.get(&w.subnet) else {
                continue;
            };
            let k = built.next_node;
            built.next_node += 1;
            let ns = self.names.node_ns(k);
            let addr = Ipv4Net::new(w.ip, vsw.cidr.prefix_len())
                .map_err(|e| LabError::Invalid(format!("address {} of {id}: {e}", w.ip)))?;
            let node = NodeLink {
                ns: &ns,
                idx: k,
                bridge_idx: *bridge_idx,
                mac: &w.mac,
                addr,
                gateway: vsw.gateway,
            };
            // A half-built node is deleted so the next pass builds it afresh.
            if let Err(e) = topology::add_node(&self.names, &node) {
                let _ = netns::delete(&ns);
                return Err(e);
            }
            tracing::debug!(lab = self.names.prefix(), instance = %id, ns = ns.name(), "lab node up");
            built.nodes.insert(id.clone(), NodeBuilt { ns, ip: w.ip });
        }
        Ok(())
    }

    /// Where each MAC is among the lab's namespaces (the vSwitch and router
    /// namespaces hold only ports and legs, never an ENI).
    fn macs(&self) -> Result<HashMap<String, (Netns, String)>, LabError> {
        let mut out = HashMap::new();
        for ns in netns::list_owned(&self.names) {
            if ns == self.names.vswitch_ns() || ns == self.names.router_ns() {
                continue;
            }
            let links = match topology::links(&ns) {
                Ok(links) => links,
                // A pod namespace deleted between listing and reading.
                Err(_) if !ns.path().exists() => continue,
                Err(e) => return Err(e),
            };
            for l in links {
                out.insert(l.mac, (ns.clone(), l.name));
            }
        }
        Ok(out)
    }

    fn enis(&self, built: &mut Built, want: &Desired) -> Result<(), LabError> {
        let mut at = self.macs()?;
        let made: Vec<String> = built.enis.keys().cloned().collect();
        for mac in made {
            let Some(rec) = built.enis.get(&mac) else {
                continue;
            };
            let keep = want.enis.get(&mac).map(|w| &w.instance) == Some(&rec.instance);
            match at.get(&mac) {
                // Gone with the pod namespace that held it.
                None => {
                    built.enis.remove(&mac);
                }
                Some(_) if keep => {}
                Some((ns, link)) => {
                    let in_its_node = built.nodes.get(&rec.instance).is_some_and(|n| &n.ns == ns);
                    // Detached while in a pod: the pod keeps it until it
                    // gives it back.
                    if in_its_node {
                        topology::delete_link(ns, link)?;
                        tracing::debug!(lab = self.names.prefix(), mac, "lab ENI link removed");
                        at.remove(&mac);
                        built.enis.remove(&mac);
                    }
                }
            }
        }
        for (mac, w) in &want.enis {
            if at.contains_key(mac) {
                continue;
            }
            let (Some(node), Some((bridge_idx, _))) =
                (built.nodes.get(&w.instance), built.vswitches.get(&w.subnet))
            else {
                continue;
            };
            let n = built.next_eni;
            built.next_eni += 1;
            let link = topology::add_eni(&self.names, n, &node.ns, *bridge_idx, mac)?;
            tracing::debug!(lab = self.names.prefix(), eni = %w.eni, mac, link, ns = node.ns.name(), "lab ENI link up");
            built.enis.insert(
                mac.clone(),
                EniBuilt {
                    instance: w.instance.clone(),
                },
            );
        }
        Ok(())
    }

    fn routes(&self, want: &Desired) -> Result<(), LabError> {
        let have: BTreeMap<Ipv4Net, RouteTarget> =
            topology::router_routes(&self.names)?.into_iter().collect();
        for dst in have.keys().filter(|d| !want.routes.contains_key(*d)) {
            topology::delete_route(&self.names, *dst)?;
            tracing::debug!(lab = self.names.prefix(), %dst, "lab route removed");
        }
        for (dst, target) in &want.routes {
            if have.get(dst) != Some(target) {
                topology::set_route(&self.names, *dst, *target)?;
                tracing::debug!(lab = self.names.prefix(), %dst, ?target, "lab route set");
            }
        }
        Ok(())
    }
}

impl Shared {
    /// The router's permanent neighbour entries follow the assigned IPs.
    /// `full` re-writes them all (a `replace` of an entry already there is
    /// harmless), so one removed by hand comes back.
    fn neighbours(&self, built: &mut Built, want: &Desired, full: bool) -> Result<(), LabError> {
        let rtr = self.names.router_ns();
        let mut wanted: BTreeMap<Ipv4Addr, (String, String)> = BTreeMap::new();
        for (ip, w) in &want.addresses {
            let Some((idx, _)) = built.vswitches.get(&w.subnet) else {
                continue;
            };
            wanted.insert(*ip, (self.names.link("r", Some(*idx))?, w.mac.clone()));
        }
        let stale: Vec<(Ipv4Addr, String)> = built
            .neighbours
            .iter()
            .filter(|(ip, had)| wanted.get(*ip) != Some(*had))
            .map(|(ip, (leg, _))| (*ip, leg.clone()))
            .collect();
        for (ip, leg) in stale {
            // Gone already (the leg went with its vSwitch) is fine.
            let _ = topology::delete_neighbour(&rtr, ip, &leg);
            built.neighbours.remove(&ip);
            tracing::debug!(lab = self.names.prefix(), %ip, "lab address no longer delivered");
        }
        for (ip, (leg, mac)) in wanted {
            if !full && built.neighbours.get(&ip) == Some(&(leg.clone(), mac.clone())) {
                continue;
            }
            topology::set_neighbour(&rtr, ip, &leg, &mac)?;
            tracing::debug!(lab = self.names.prefix(), %ip, mac, "lab address delivered");
            built.neighbours.insert(ip, (leg, mac));
        }
        Ok(())
    }
}

/// Every this many passes the follower re-reads the kernel even if the world
/// did not change.
const FULL_EVERY: u32 = 20;

/// The follower: a pass every `interval` until aborted.
pub(crate) async fn follow(shared: Arc<Shared>, interval: Duration) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut n: u32 = 0;
    loop {
        tick.tick().await;
        n = n.wrapping_add(1);
        let full = n.is_multiple_of(FULL_EVERY);
        let s = shared.clone();
        match tokio::task::spawn_blocking(move || s.reconcile(full)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::warn!(lab = shared.names.prefix(), error = %e, "lab sync failed; retrying")
            }
            Err(e) => tracing::warn!(lab = shared.names.prefix(), error = %e, "lab sync panicked"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use providers::model::{CreateEniRequest, NewRouteEntry};
    use providers::Cloud;

    const YAML: &str = r#"
region: cn-hangzhou
vpcs: [{id: vpc-1, cidr: 192.168.0.0/16, routeTables: [{id: vtb-1}]}]
vswitches:
  - {id: vsw-a, vpc: vpc-1, zone: cn-hangzhou-h, cidr: 192.168.1.0/24}
  - {id: vsw-b, vpc: vpc-1, zone: cn-hangzhou-h, cidr: 192.168.2.0/24}
securityGroups: [{id: sg-1, vpc: vpc-1}]
instances:
  - {id: i-1, type: ecs.g6.xlarge, zone: cn-hangzhou-h, vswitch: vsw-a, privateIp: 192.168.1.10}
  - {id: i-2, type: ecs.g6.xlarge, zone: cn-hangzhou-h, vswitch: vsw-b, privateIp: 192.168.2.10}
faults: {attachDelayMs: 0, detachDelayMs: 0, routeDelayMs: 0}
"#;

    fn eni_request(token: &str) -> CreateEniRequest {
        CreateEniRequest {
            subnet_id: SubnetId::new("vsw-b"),
            security_groups: vec!["sg-1".into()],
            secondary_ip_count: 0,
            tags: Default::default(),
            description: String::new(),
            idempotency_token: token.into(),
        }
    }

    #[tokio::test]
    async fn the_picture_follows_vswitches_nodes_attached_enis_and_routes() {
        let world = World::from_yaml(YAML).unwrap();
        let vpc = VpcId::new("vpc-1");
        let d = desired(&world.snapshot(), &vpc);
        assert_eq!(d.vswitches.len(), 2);
        assert_eq!(
            d.vswitches[&SubnetId::new("vsw-a")].gateway,
            "192.168.1.253".parse::<Ipv4Addr>().unwrap()
        );
        assert_eq!(d.nodes.len(), 2);
        let n2 = &d.nodes[&InstanceId::new("i-2")];
        assert_eq!(n2.ip, "192.168.2.10".parse::<Ipv4Addr>().unwrap());
        assert!(n2.mac.starts_with("02:"));
        assert!(d.enis.is_empty(), "primary ENIs are the nodes' own links");

        let eni = world.create_eni(&eni_request("t1")).await.unwrap();
        assert!(desired(&world.snapshot(), &vpc).enis.is_empty());
        world
            .attach_eni(&eni.id, &InstanceId::new("i-2"))
            .await
            .unwrap();
        let d = desired(&world.snapshot(), &vpc);
        assert_eq!(d.enis[&eni.mac].instance, InstanceId::new("i-2"));
        assert_eq!(d.addresses[&eni.primary_ip].mac, eni.mac);
        assert_eq!(
            d.addresses[&"192.168.2.10".parse().unwrap()].subnet,
            SubnetId::new("vsw-b"),
            "a node's primary IP is delivered to its primary ENI"
        );

        // Secondary IPs are delivered to the ENI the cloud assigned them to,
        // and no longer once unassigned.
        let ips = world
            .assign_private_ips(&eni.id, 2, &"t2".into())
            .await
            .unwrap();
        assert_eq!(ips.len(), 2);
        let d = desired(&world.snapshot(), &vpc);
        for ip in &ips {
            assert_eq!(d.addresses[ip].mac, eni.mac);
            assert_eq!(d.addresses[ip].subnet, SubnetId::new("vsw-b"));
        }
        world
            .unassign_private_ips(&eni.id, &ips[..1])
            .await
            .unwrap();
        let d = desired(&world.snapshot(), &vpc);
        assert!(!d.addresses.contains_key(&ips[0]));
        assert!(d.addresses.contains_key(&ips[1]));

        let entry = NewRouteEntry {
            destination: "10.100.2.0/24".parse().unwrap(),
            instance_id: InstanceId::new("i-2"),
            name: "n".into(),
            description: "d".into(),
        };
        world
            .create_route_entries(&"vtb-1".into(), &[entry])
            .await
            .unwrap();
        let d = desired(&world.snapshot(), &vpc);
        assert_eq!(
            d.routes.get(&"10.100.2.0/24".parse().unwrap()),
            Some(&RouteTarget::Via("192.168.2.10".parse().unwrap()))
        );

        world
            .detach_eni(&eni.id, &InstanceId::new("i-2"))
            .await
            .unwrap();
        world.remove_instance(&InstanceId::new("i-2")).unwrap();
        let d = desired(&world.snapshot(), &vpc);
        assert!(d.enis.is_empty());
        assert!(
            !d.addresses.contains_key(&ips[1]),
            "a detached ENI's addresses are delivered nowhere"
        );
        assert_eq!(d.nodes.len(), 1);
        assert_eq!(
            d.routes.get(&"10.100.2.0/24".parse().unwrap()),
            Some(&RouteTarget::Blackhole),
            "a route to a released instance drops traffic"
        );
        assert!(desired(&world.snapshot(), &VpcId::new("vpc-other"))
            .nodes
            .is_empty());
    }

    #[test]
    fn the_vm_takes_an_address_the_cloud_never_hands_out() {
        let vsw = VSwitchWant {
            cidr: "192.168.1.0/24".parse().unwrap(),
            gateway: Flavor::Alibaba.gateway(&"192.168.1.0/24".parse().unwrap()),
        };
        assert_eq!(
            vm_address(Flavor::Alibaba, &vsw),
            Some("192.168.1.254".parse().unwrap())
        );
        let vsw = VSwitchWant {
            cidr: "10.0.1.0/24".parse().unwrap(),
            gateway: "10.0.1.1".parse().unwrap(),
        };
        assert_eq!(
            vm_address(Flavor::Aws, &vsw),
            Some("10.0.1.3".parse().unwrap())
        );
    }
}
