//! The route plan for one VPC route table: which podCIDR routes to create,
//! which of OUR entries to delete or repoint, and what to report instead of
//! touching (entries someone else owns, nodes that claim the same CIDR,
//! routes outside the cluster CIDR, creates beyond the table's quota).
//!
//! Ownership is decided here and only here: an entry is ours when it is not
//! a system entry, lies inside the cluster CIDR, and either carries our
//! marker as name/description, or (clouds without such fields, e.g. AWS)
//! the table is tagged for the cluster and the entry is an unnamed route to
//! an instance.

use crate::cidr::{contains_net, is_canonical};
use crate::ids::{ClusterId, InstanceId};
use ipnet::Ipv4Net;
use std::collections::BTreeMap;
use std::fmt;

/// Prefix of the ownership marker written as route entry name/description.
pub const MARKER_PREFIX: &str = "vpc-eni-controller/";

/// Alibaba's `RouteEntryName` holds 1 to 128 characters.
pub const MAX_MARKER_CHARS: usize = 128;

/// The marker written on (and recognised in) entries this cluster owns.
pub fn ownership_marker(cluster: &ClusterId) -> String {
    format!("{MARKER_PREFIX}{cluster}")
        .chars()
        .take(MAX_MARKER_CHARS)
        .collect()
}

/// A route the cluster wants: a node's podCIDR via that node's instance.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DesiredRoute {
    pub node: String,
    pub destination: Ipv4Net,
    pub instance: InstanceId,
}

/// One entry of the table, as the cloud reports it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObservedRoute {
    pub destination: Ipv4Net,
    /// `None` when the next hop is not an instance (a gateway, an ENI...).
    pub target: Option<InstanceId>,
    pub name: Option<String>,
    pub description: Option<String>,
    /// The VPC's own entries (local route, vSwitch CIDRs): never ours.
    pub system: bool,
}

/// What in this table belongs to the cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ownership {
    pub cluster_cidr: Ipv4Net,
    /// From `ownership_marker`.
    pub marker: String,
    /// The table is the cluster's (`route_tables::table_owned_by_cluster`):
    /// how ownership works where routes carry no name (EC2).
    pub table_owned: bool,
}

impl Ownership {
    pub fn new(cluster: &ClusterId, cluster_cidr: Ipv4Net, table_owned: bool) -> Self {
        Self {
            cluster_cidr,
            marker: ownership_marker(cluster),
            table_owned,
        }
    }

    /// Whether the controller may modify or delete `entry`.
    pub fn owns(&self, entry: &ObservedRoute) -> bool {
        if entry.system || !contains_net(&self.cluster_cidr, &entry.destination) {
            return false;
        }
        let marked = entry.name.as_deref() == Some(self.marker.as_str())
            || entry.description.as_deref() == Some(self.marker.as_str());
        // In the cluster's table an unnamed instance route is ours, but one
        // that someone named (differently) is not: their name says whose it is.
        let unnamed = entry.name.is_none() && entry.description.is_none();
        marked || (self.table_owned && unnamed && entry.target.is_some())
    }
}

/// An owned entry that points at the wrong instance: delete `old`, then
/// create `new` (route tables cannot repoint an entry in place everywhere).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Replacement {
    pub old: ObservedRoute,
    pub new: DesiredRoute,
}

/// Why a desired route is not applied.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConflictKind {
    /// The destination is held by an entry that is not ours.
    Foreign {
        target: Option<InstanceId>,
        name: Option<String>,
    },
    /// The destination is a system entry of the VPC.
    System,
    /// Another node with a lower name claims the same destination.
    SameDestination { kept_node: String },
    /// Another node with a lower name claims a destination that overlaps
    /// this one (one contains the other): two routes would split the range.
    Overlaps {
        kept_node: String,
        kept_destination: Ipv4Net,
    },
}

/// A desired route that is left alone, with the node it belongs to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouteConflict {
    pub node: String,
    pub destination: Ipv4Net,
    pub instance: InstanceId,
    pub kind: ConflictKind,
}

impl RouteConflict {
    /// Whether traffic for the node's podCIDR still reaches the node: a
    /// foreign entry that already points at the node's own instance works,
    /// though the controller does not manage it.
    pub fn route_works(&self) -> bool {
        matches!(&self.kind, ConflictKind::Foreign { target: Some(t), .. } if *t == self.instance)
    }
}

impl fmt::Display for RouteConflict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (node, dest) = (&self.node, &self.destination);
        match &self.kind {
            ConflictKind::Foreign { target, name } => {
                let name = name.as_deref().unwrap_or("<unnamed>");
                match target {
                    Some(t) if *t == self.instance => write!(
                        f,
                        "route {dest} for node {node} already exists (entry {name:?}, next hop {t}) but is not marked as ours; it works but will not be managed"
                    ),
                    Some(t) => write!(
                        f,
                        "route {dest} for node {node} is held by a foreign entry {name:?} to {t}; left untouched"
                    ),
                    None => write!(
                        f,
                        "route {dest} for node {node} is held by a foreign entry {name:?} to a non-instance next hop; left untouched"
                    ),
                }
            }
            ConflictKind::System => write!(
                f,
                "route {dest} for node {node} collides with a system entry of the VPC"
            ),
            ConflictKind::SameDestination { kept_node } => write!(
                f,
                "node {node} claims {dest}, which node {kept_node} also claims; the route goes to {kept_node}"
            ),
            ConflictKind::Overlaps {
                kept_node,
                kept_destination,
            } => write!(
                f,
                "podCIDR {dest} of node {node} overlaps podCIDR {kept_destination} of node {kept_node}; only {kept_node} gets a route: give node {node} a podCIDR of its own"
            ),
        }
    }
}

/// A desired route that can never be applied as given.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InvalidRoute {
    pub route: DesiredRoute,
    pub reason: String,
}

/// Everything to do (and not do) to one table. Apply `delete` and the old
/// side of `replace` before creating, so a destination is free when its
/// new entry arrives.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RoutePlan {
    pub create: Vec<DesiredRoute>,
    /// Owned entries whose destination no one wants any more.
    pub delete: Vec<ObservedRoute>,
    pub replace: Vec<Replacement>,
    pub conflicts: Vec<RouteConflict>,
    /// Desired routes already present and correct.
    pub satisfied: Vec<DesiredRoute>,
    pub invalid: Vec<InvalidRoute>,
    /// Creates the table has no room for now.
    pub over_quota: Vec<DesiredRoute>,
}

impl RoutePlan {
    /// Whether applying this plan changes nothing in the cloud.
    pub fn is_noop(&self) -> bool {
        self.create.is_empty() && self.delete.is_empty() && self.replace.is_empty()
    }

    /// How many cloud mutations the plan holds (a replace counts as two).
    pub fn mutation_count(&self) -> usize {
        self.create.len() + self.delete.len() + 2 * self.replace.len()
    }
}

/// Plans one table. `quota_left` is how many more entries the table accepts
/// right now (`None`: unknown or unlimited); creates beyond it, in node name
/// order, land in `over_quota`. Entries freed by this plan's deletes are not
/// counted as room: the next pass, after the deletes, uses them.
/// A kept route whose destination contains `dest` or lies inside it.
fn overlapping<'a>(
    winners: &BTreeMap<Ipv4Net, &'a DesiredRoute>,
    dest: Ipv4Net,
) -> Option<&'a DesiredRoute> {
    let wider = (0..dest.prefix_len()).find_map(|len| {
        let supernet = Ipv4Net::new(dest.addr(), len).ok()?.trunc();
        winners.get(&supernet).copied()
    });
    let low = Ipv4Net::new(dest.network(), 0).ok()?;
    let high = Ipv4Net::new(dest.broadcast(), 32).ok()?;
    wider.or_else(|| {
        winners
            .range(low..=high)
            .map(|(_, r)| *r)
            .find(|r| contains_net(&dest, &r.destination))
    })
}

pub fn plan_routes(
    desired: &[DesiredRoute],
    observed: &[ObservedRoute],
    ownership: &Ownership,
    quota_left: Option<usize>,
) -> RoutePlan {
    let mut plan = RoutePlan::default();

    // Valid desired routes, one winner per destination (lowest node name).
    let mut sorted: Vec<&DesiredRoute> = desired.iter().collect();
    sorted.sort();
    sorted.dedup();
    let mut winners: BTreeMap<Ipv4Net, &DesiredRoute> = BTreeMap::new();
    for route in sorted {
        if !is_canonical(&route.destination) {
            plan.invalid.push(InvalidRoute {
                route: route.clone(),
                reason: format!(
                    "destination {} has host bits set (expected {})",
                    route.destination,
                    route.destination.trunc()
                ),
            });
            continue;
        }
        if !contains_net(&ownership.cluster_cidr, &route.destination) {
            plan.invalid.push(InvalidRoute {
                route: route.clone(),
                reason: format!(
                    "destination {} is outside the cluster CIDR {}",
                    route.destination, ownership.cluster_cidr
                ),
            });
            continue;
        }
        if let Some(kept) = winners.get(&route.destination) {
            plan.conflicts.push(RouteConflict {
                node: route.node.clone(),
                destination: route.destination,
                instance: route.instance.clone(),
                kind: ConflictKind::SameDestination {
                    kept_node: kept.node.clone(),
                },
            });
        } else if let Some(kept) = overlapping(&winners, route.destination) {
            plan.conflicts.push(RouteConflict {
                node: route.node.clone(),
                destination: route.destination,
                instance: route.instance.clone(),
                kind: ConflictKind::Overlaps {
                    kept_node: kept.node.clone(),
                    kept_destination: kept.destination,
                },
            });
        } else {
            winners.insert(route.destination, route);
        }
    }

    let mut at: BTreeMap<Ipv4Net, Vec<&ObservedRoute>> = BTreeMap::new();
    for entry in observed {
        at.entry(entry.destination).or_default().push(entry);
    }

    let mut creates: Vec<DesiredRoute> = Vec::new();
    for (dest, route) in &winners {
        let entries = at.get(dest).map(Vec::as_slice).unwrap_or_default();
        let (owned, foreign): (Vec<&ObservedRoute>, Vec<&ObservedRoute>) =
            entries.iter().copied().partition(|e| ownership.owns(e));
        if let Some(blocker) = foreign.first() {
            // Someone else's entry: report, and leave everything at this
            // destination as it is.
            plan.conflicts.push(RouteConflict {
                node: route.node.clone(),
                destination: *dest,
                instance: route.instance.clone(),
                kind: if blocker.system {
                    ConflictKind::System
                } else {
                    ConflictKind::Foreign {
                        target: blocker.target.clone(),
                        name: blocker.name.clone().or_else(|| blocker.description.clone()),
                    }
                },
            });
            continue;
        }
        let correct = owned
            .iter()
            .position(|e| e.target.as_ref() == Some(&route.instance));
        match correct {
            Some(i) => {
                plan.satisfied.push((*route).clone());
                plan.delete.extend(
                    owned
                        .iter()
                        .enumerate()
                        .filter(|(j, _)| *j != i)
                        .map(|(_, e)| (*e).clone()),
                );
            }
            None => match owned.split_first() {
                Some((first, rest)) => {
                    plan.replace.push(Replacement {
                        old: (*first).clone(),
                        new: (*route).clone(),
                    });
                    plan.delete.extend(rest.iter().map(|e| (*e).clone()));
                }
                None => creates.push((*route).clone()),
            },
        }
    }

    // Owned entries nobody wants any more.
    for entry in observed {
        if !winners.contains_key(&entry.destination) && ownership.owns(entry) {
            plan.delete.push(entry.clone());
        }
    }

    creates.sort_by(|a, b| (&a.node, a.destination).cmp(&(&b.node, b.destination)));
    if let Some(room) = quota_left {
        if creates.len() > room {
            plan.over_quota = creates.split_off(room);
        }
    }
    plan.create = creates;
    plan.conflicts
        .sort_by(|a, b| (&a.node, a.destination).cmp(&(&b.node, b.destination)));
    plan.delete.sort();
    plan.delete.dedup();
    plan
}

/// Splits work into batches of at most `size` items (a batch call's limit);
/// a `size` of 0 is treated as 1.
pub fn batches<T>(items: &[T], size: usize) -> std::slice::Chunks<'_, T> {
    items.chunks(size.max(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_foreign_entry_to_the_nodes_own_instance_works() {
        let conflict = |kind| RouteConflict {
            node: "n1".into(),
            destination: "10.244.1.0/24".parse().unwrap(),
            instance: InstanceId::new("i-a"),
            kind,
        };
        let foreign = |t: Option<&str>| ConflictKind::Foreign {
            target: t.map(InstanceId::new),
            name: Some("ops".into()),
        };
        assert!(conflict(foreign(Some("i-a"))).route_works());
        assert!(!conflict(foreign(Some("i-b"))).route_works());
        assert!(!conflict(foreign(None)).route_works());
        assert!(!conflict(ConflictKind::System).route_works());
        let overlap = RouteConflict {
            node: "b".into(),
            destination: net("10.244.1.0/24"),
            instance: InstanceId::new("i-b"),
            kind: ConflictKind::Overlaps {
                kept_node: "a".into(),
                kept_destination: net("10.244.0.0/23"),
            },
        };
        assert!(!overlap.route_works());
        assert!(overlap
            .to_string()
            .contains("overlaps podCIDR 10.244.0.0/23 of node a"));
        assert!(!conflict(ConflictKind::SameDestination {
            kept_node: "n0".into()
        })
        .route_works());
    }
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    fn net(s: &str) -> Ipv4Net {
        s.parse().unwrap()
    }

    fn own() -> Ownership {
        Ownership::new(&ClusterId::new("c1"), net("10.0.0.0/16"), false)
    }

    fn want(node: &str, dest: &str, inst: &str) -> DesiredRoute {
        DesiredRoute {
            node: node.into(),
            destination: net(dest),
            instance: InstanceId::new(inst),
        }
    }

    fn ours(dest: &str, inst: &str) -> ObservedRoute {
        ObservedRoute {
            destination: net(dest),
            target: Some(InstanceId::new(inst)),
            name: Some("vpc-eni-controller/c1".into()),
            description: None,
            system: false,
        }
    }

    fn foreign(dest: &str, inst: Option<&str>) -> ObservedRoute {
        ObservedRoute {
            destination: net(dest),
            target: inst.map(InstanceId::new),
            name: Some("ops-vpn".into()),
            description: None,
            system: false,
        }
    }

    #[test]
    fn marker_is_stable_and_bounded() {
        assert_eq!(
            ownership_marker(&ClusterId::new("c1")),
            "vpc-eni-controller/c1"
        );
        let long = ownership_marker(&ClusterId::new("x".repeat(300)));
        assert_eq!(long.chars().count(), MAX_MARKER_CHARS);
    }

    #[test]
    fn overlapping_pod_cidrs_are_conflicts_and_only_the_lowest_node_is_routed() {
        let desired = [
            want("a", "10.0.0.0/23", "i-a"),
            want("b", "10.0.1.0/24", "i-b"),
            want("c", "10.0.2.0/24", "i-c"),
            want("d", "10.0.0.0/22", "i-d"),
        ];
        let plan = plan_routes(&desired, &[], &own(), None);
        let created: Vec<&str> = plan.create.iter().map(|d| d.node.as_str()).collect();
        assert_eq!(created, ["a", "c"]);
        let conflicts: Vec<(&str, String)> = plan
            .conflicts
            .iter()
            .map(|c| (c.node.as_str(), c.to_string()))
            .collect();
        assert_eq!(conflicts.len(), 2, "{conflicts:?}");
        assert_eq!(conflicts[0].0, "b");
        assert!(conflicts[0]
            .1
            .contains("overlaps podCIDR 10.0.0.0/23 of node a"));
        assert_eq!(conflicts[1].0, "d");
    }

    #[test]
    fn creates_missing_and_keeps_correct_routes() {
        let desired = [
            want("a", "10.0.1.0/24", "i-a"),
            want("b", "10.0.2.0/24", "i-b"),
        ];
        let observed = [ours("10.0.1.0/24", "i-a")];
        let plan = plan_routes(&desired, &observed, &own(), None);
        assert_eq!(plan.create, vec![want("b", "10.0.2.0/24", "i-b")]);
        assert_eq!(plan.satisfied, vec![want("a", "10.0.1.0/24", "i-a")]);
        assert!(plan.delete.is_empty() && plan.replace.is_empty());
    }

    #[test]
    fn deletes_routes_of_deleted_nodes_and_repoints_moved_ones() {
        let desired = [want("a", "10.0.1.0/24", "i-new")];
        let observed = [ours("10.0.1.0/24", "i-old"), ours("10.0.9.0/24", "i-gone")];
        let plan = plan_routes(&desired, &observed, &own(), None);
        assert_eq!(plan.delete, vec![ours("10.0.9.0/24", "i-gone")]);
        assert_eq!(
            plan.replace,
            vec![Replacement {
                old: ours("10.0.1.0/24", "i-old"),
                new: want("a", "10.0.1.0/24", "i-new"),
            }]
        );
        assert!(plan.create.is_empty());
        assert_eq!(plan.mutation_count(), 3);
    }

    #[test]
    fn foreign_and_system_entries_are_reported_never_touched() {
        let desired = [
            want("a", "10.0.1.0/24", "i-a"),
            want("b", "10.0.2.0/24", "i-b"),
            want("c", "10.0.3.0/24", "i-c"),
        ];
        let mut sys = foreign("10.0.3.0/24", None);
        sys.system = true;
        let observed = [
            foreign("10.0.1.0/24", Some("i-x")),
            foreign("10.0.2.0/24", Some("i-b")),
            sys,
            foreign("10.0.7.0/24", Some("i-y")),
        ];
        let plan = plan_routes(&desired, &observed, &own(), None);
        assert!(plan.is_noop(), "{plan:?}");
        assert_eq!(plan.conflicts.len(), 3);
        let msgs: Vec<String> = plan.conflicts.iter().map(|c| c.to_string()).collect();
        assert!(
            msgs[0].contains("node a") && msgs[0].contains("foreign entry \"ops-vpn\" to i-x"),
            "{}",
            msgs[0]
        );
        assert!(msgs[1].contains("not marked as ours"), "{}", msgs[1]);
        assert!(matches!(plan.conflicts[2].kind, ConflictKind::System));
    }

    #[test]
    fn lowest_node_name_wins_a_shared_cidr() {
        let desired = [
            want("zeta", "10.0.5.0/24", "i-z"),
            want("alpha", "10.0.5.0/24", "i-a"),
        ];
        let plan = plan_routes(&desired, &[], &own(), None);
        assert_eq!(plan.create, vec![want("alpha", "10.0.5.0/24", "i-a")]);
        assert_eq!(plan.conflicts.len(), 1);
        assert_eq!(plan.conflicts[0].node, "zeta");
        assert!(plan.conflicts[0]
            .to_string()
            .contains("node alpha also claims"));
    }

    #[test]
    fn routes_outside_the_cluster_cidr_are_invalid() {
        let desired = [
            want("a", "192.168.0.0/24", "i-a"),
            want("b", "10.0.1.9/24", "i-b"),
        ];
        let plan = plan_routes(&desired, &[], &own(), None);
        assert!(plan.create.is_empty());
        assert_eq!(plan.invalid.len(), 2);
        assert!(plan
            .invalid
            .iter()
            .any(|i| i.reason.contains("outside the cluster CIDR 10.0.0.0/16")));
        assert!(plan.invalid.iter().any(|i| i.reason.contains("host bits")));
    }

    #[test]
    fn quota_limits_creates_in_node_order() {
        let desired = [
            want("c", "10.0.3.0/24", "i-c"),
            want("a", "10.0.1.0/24", "i-a"),
            want("b", "10.0.2.0/24", "i-b"),
        ];
        let plan = plan_routes(&desired, &[], &own(), Some(2));
        let created: Vec<&str> = plan.create.iter().map(|r| r.node.as_str()).collect();
        assert_eq!(created, ["a", "b"]);
        assert_eq!(plan.over_quota, vec![want("c", "10.0.3.0/24", "i-c")]);
    }

    #[test]
    fn tagged_table_owns_unnamed_instance_entries_inside_cluster_cidr_only() {
        let aws = Ownership::new(&ClusterId::new("c1"), net("10.0.0.0/16"), true);
        let unnamed = |d: &str, t: Option<&str>| ObservedRoute {
            destination: net(d),
            target: t.map(InstanceId::new),
            name: None,
            description: None,
            system: false,
        };
        let observed = [
            unnamed("10.0.8.0/24", Some("i-gone")),
            unnamed("10.0.9.0/24", None),
            unnamed("172.16.0.0/24", Some("i-vpn")),
        ];
        let plan = plan_routes(&[], &observed, &aws, None);
        assert_eq!(plan.delete, vec![unnamed("10.0.8.0/24", Some("i-gone"))]);
        // Same table untagged: nothing is ours.
        assert!(plan_routes(&[], &observed, &own(), None).is_noop());
    }

    #[test]
    fn batches_split_by_size() {
        let items: Vec<u32> = (0..7).collect();
        let sizes: Vec<usize> = batches(&items, 3).map(<[u32]>::len).collect();
        assert_eq!(sizes, [3, 3, 1]);
        assert_eq!(batches(&items, 0).count(), 7);
        assert_eq!(batches::<u32>(&[], 50).count(), 0);
    }

    // ---- properties ----

    #[derive(Clone, Copy, Debug)]
    enum Label {
        Named,
        Described,
        ForeignNamed,
        Unnamed,
        System,
    }

    /// Destinations: 8 inside the cluster CIDR, one outside, the cluster
    /// CIDR itself, one with host bits set.
    fn dest(i: u8) -> Ipv4Net {
        match i {
            0..=7 => Ipv4Net::new(std::net::Ipv4Addr::new(10, 0, i, 0), 24).unwrap(),
            8 => net("10.1.0.0/24"),
            9 => net("10.0.0.0/16"),
            _ => net("10.0.3.7/24"),
        }
    }

    fn arb_desired() -> impl Strategy<Value = Vec<DesiredRoute>> {
        proptest::collection::vec((0u8..6, 0u8..11, 0u8..6), 0..12).prop_map(|v| {
            v.into_iter()
                .map(|(n, d, i)| DesiredRoute {
                    node: format!("n{n}"),
                    destination: dest(d),
                    instance: InstanceId::new(format!("i-{i}")),
                })
                .collect()
        })
    }

    fn arb_observed() -> impl Strategy<Value = Vec<(ObservedRoute, Label)>> {
        let label = prop_oneof![
            Just(Label::Named),
            Just(Label::Described),
            Just(Label::ForeignNamed),
            Just(Label::Unnamed),
            Just(Label::System),
        ];
        // One entry per destination at most, as in a real table.
        proptest::collection::btree_map(0u8..10, (label, proptest::option::of(0u8..6)), 0..10)
            .prop_map(|m| {
                m.into_iter()
                    .map(|(d, (label, t))| {
                        let marker = Some("vpc-eni-controller/c1".to_owned());
                        let (name, description, system) = match label {
                            Label::Named => (marker, None, false),
                            Label::Described => (None, marker, false),
                            Label::ForeignNamed => (Some("someone-else".into()), None, false),
                            Label::Unnamed => (None, None, false),
                            Label::System => (None, None, true),
                        };
                        let entry = ObservedRoute {
                            destination: dest(d),
                            target: t.map(|t| InstanceId::new(format!("i-{t}"))),
                            name,
                            description,
                            system,
                        };
                        (entry, label)
                    })
                    .collect()
            })
    }

    /// Ours by construction of the generator, stated independently of `owns`.
    fn ours_by_label(e: &ObservedRoute, label: Label, tagged: bool) -> bool {
        let inside =
            e.destination.prefix_len() >= 16 && u32::from(e.destination.network()) >> 16 == 0x0a00;
        match label {
            Label::Named | Label::Described => inside,
            Label::Unnamed => inside && tagged && e.target.is_some(),
            Label::ForeignNamed | Label::System => false,
        }
    }

    fn apply(observed: &[ObservedRoute], plan: &RoutePlan, marker: &str) -> Vec<ObservedRoute> {
        let removed: BTreeSet<&ObservedRoute> = plan
            .delete
            .iter()
            .chain(plan.replace.iter().map(|r| &r.old))
            .collect();
        let mut table: Vec<ObservedRoute> = observed
            .iter()
            .filter(|e| !removed.contains(e))
            .cloned()
            .collect();
        for new in plan
            .create
            .iter()
            .chain(plan.replace.iter().map(|r| &r.new))
        {
            table.push(ObservedRoute {
                destination: new.destination,
                target: Some(new.instance.clone()),
                name: Some(marker.to_owned()),
                description: None,
                system: false,
            });
        }
        table
    }

    proptest! {
        #[test]
        fn never_touches_foreign_or_system_entries(
            desired in arb_desired(),
            observed in arb_observed(),
            tagged in any::<bool>(),
            quota in proptest::option::of(0usize..5),
        ) {
            let o = Ownership::new(&ClusterId::new("c1"), net("10.0.0.0/16"), tagged);
            let entries: Vec<ObservedRoute> = observed.iter().map(|(e, _)| e.clone()).collect();
            let plan = plan_routes(&desired, &entries, &o, quota);
            for touched in plan.delete.iter().chain(plan.replace.iter().map(|r| &r.old)) {
                let (_, label) = observed.iter().find(|(e, _)| e == touched).unwrap();
                prop_assert!(ours_by_label(touched, *label, tagged), "touched {touched:?} ({label:?})");
                prop_assert!(!touched.system);
            }
            if let Some(q) = quota {
                prop_assert!(plan.create.len() <= q);
            }
        }

        #[test]
        fn applying_the_plan_converges(
            desired in arb_desired(),
            observed in arb_observed(),
            tagged in any::<bool>(),
        ) {
            let o = Ownership::new(&ClusterId::new("c1"), net("10.0.0.0/16"), tagged);
            let entries: Vec<ObservedRoute> = observed.iter().map(|(e, _)| e.clone()).collect();
            let plan = plan_routes(&desired, &entries, &o, None);
            let after = apply(&entries, &plan, &o.marker);

            // Independently: valid desired, lowest node per destination,
            // minus destinations held by an entry that is not ours.
            let mut expected: BTreeMap<Ipv4Net, DesiredRoute> = BTreeMap::new();
            let mut sorted = desired.clone();
            sorted.sort();
            // The lowest node keeps a destination, and a destination that
            // contains or lies in a kept one is nobody's; then entries that
            // are not ours block theirs.
            let mut kept: BTreeMap<Ipv4Net, DesiredRoute> = BTreeMap::new();
            for d in sorted {
                let valid = d.destination.addr() == d.destination.network()
                    && d.destination.prefix_len() >= 16
                    && u32::from(d.destination.network()) >> 16 == 0x0a00;
                let overlaps = kept.keys().any(|k| {
                    *k != d.destination
                        && (k.contains(&d.destination.network()) || d.destination.contains(&k.network()))
                });
                if valid && !overlaps {
                    kept.entry(d.destination).or_insert(d);
                }
            }
            for (dest, d) in kept {
                let blocked = observed.iter().any(|(e, l)| e.destination == dest && !ours_by_label(e, *l, tagged));
                if !blocked {
                    expected.insert(dest, d);
                }
            }
            for (dest, d) in &expected {
                let here: Vec<&ObservedRoute> = after.iter().filter(|e| e.destination == *dest).collect();
                prop_assert_eq!(here.len(), 1, "destination {}: {:?}", dest, here);
                prop_assert_eq!(here[0].target.as_ref(), Some(&d.instance));
            }
            // No owned leftovers, and every foreign entry is still there.
            for e in &after {
                if o.owns(e) {
                    prop_assert!(expected.contains_key(&e.destination), "stale owned {e:?}");
                }
            }
            for (e, l) in &observed {
                if !ours_by_label(e, *l, tagged) {
                    prop_assert!(after.contains(e), "foreign {e:?} vanished");
                }
            }
            let again = plan_routes(&desired, &after, &o, None);
            prop_assert!(again.is_noop(), "second plan not empty: {again:?}");
            prop_assert_eq!(again.satisfied.len(), expected.len());
        }
    }
}
