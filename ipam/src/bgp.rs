//! The BGP route backend's decisions: which podCIDR each peer is told about
//! (with the node's address as next hop), which nodes cannot be announced
//! and why, and whether a node's route is in place (some peer has it).
//! Pure functions of the nodes and the peers' selectors.

use ipnet::Ipv4Net;
use std::collections::BTreeMap;
use std::net::Ipv4Addr;

/// A node as the plan reads it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BgpNode {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub pod_cidr: Ipv4Net,
    /// The node's InternalIP: the next hop of its podCIDR.
    pub address: Ipv4Addr,
}

/// Which nodes a peer learns: all labels must match; empty matches all.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PeerSelector {
    pub match_labels: BTreeMap<String, String>,
}

impl PeerSelector {
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.match_labels
            .iter()
            .all(|(k, v)| labels.get(k) == Some(v))
    }
}

/// A node whose podCIDR is announced to no peer, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refused {
    pub node: String,
    /// The Event reason.
    pub reason: &'static str,
    pub message: String,
}

/// What each peer should hold, by peer index: prefix -> next hop.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BgpPlan {
    pub per_peer: Vec<BTreeMap<Ipv4Net, Ipv4Addr>>,
    /// Announced prefix -> its node.
    pub owners: BTreeMap<Ipv4Net, String>,
    pub refused: Vec<Refused>,
    /// Nodes no peer's selector matches.
    pub unmatched: Vec<String>,
}

/// Plan the announcements: every node whose podCIDR lies inside
/// `cluster_cidr` goes to each peer whose selector matches it. A podCIDR
/// outside the cluster CIDR, or one that overlaps another node's (the node
/// first by name keeps it), is refused.
pub fn plan_announcements(
    nodes: &[BgpNode],
    cluster_cidr: Ipv4Net,
    peers: &[PeerSelector],
) -> BgpPlan {
    let mut sorted: Vec<&BgpNode> = nodes.iter().collect();
    sorted.sort_by(|a, b| a.name.cmp(&b.name));
    let mut plan = BgpPlan {
        per_peer: vec![BTreeMap::new(); peers.len()],
        ..BgpPlan::default()
    };
    for node in sorted {
        let cidr = node.pod_cidr.trunc();
        if !cluster_cidr.contains(&cidr) {
            plan.refused.push(Refused {
                node: node.name.clone(),
                reason: "InvalidPodCIDR",
                message: format!(
                    "podCIDR {cidr} of node {} is outside routes.clusterCidr {cluster_cidr}; it is not announced",
                    node.name
                ),
            });
            continue;
        }
        if let Some((other, owner)) = plan
            .owners
            .iter()
            .find(|(p, _)| p.contains(&cidr) || cidr.contains(*p))
        {
            plan.refused.push(Refused {
                node: node.name.clone(),
                reason: "RouteConflict",
                message: format!(
                    "podCIDR {cidr} of node {} overlaps {other} of node {owner}; only {owner}'s is announced",
                    node.name
                ),
            });
            continue;
        }
        let mut matched = false;
        for (i, sel) in peers.iter().enumerate() {
            if sel.matches(&node.labels) {
                plan.per_peer[i].insert(cidr, node.address);
                matched = true;
            }
        }
        if matched {
            plan.owners.insert(cidr, node.name.clone());
        } else {
            plan.unmatched.push(node.name.clone());
        }
    }
    plan
}

/// A node's route is in place when at least one peer holds its podCIDR
/// with its address as next hop.
pub fn accepted<'a>(
    prefix: Ipv4Net,
    next_hop: Ipv4Addr,
    held: impl IntoIterator<Item = &'a BTreeMap<Ipv4Net, Ipv4Addr>>,
) -> bool {
    held.into_iter().any(|h| h.get(&prefix) == Some(&next_hop))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn node(name: &str, rack: &str, cidr: &str, ip: [u8; 4]) -> BgpNode {
        BgpNode {
            name: name.into(),
            labels: [("rack".to_owned(), rack.to_owned())].into(),
            pod_cidr: cidr.parse().unwrap(),
            address: Ipv4Addr::from(ip),
        }
    }

    fn rack(r: &str) -> PeerSelector {
        PeerSelector {
            match_labels: [("rack".to_owned(), r.to_owned())].into(),
        }
    }

    const CLUSTER: &str = "10.244.0.0/16";

    #[test]
    fn each_peer_learns_its_selectors_nodes() {
        let nodes = [
            node("a", "r1", "10.244.1.0/24", [10, 0, 1, 1]),
            node("b", "r2", "10.244.2.0/24", [10, 0, 2, 1]),
        ];
        let plan = plan_announcements(
            &nodes,
            CLUSTER.parse().unwrap(),
            &[rack("r1"), rack("r2"), PeerSelector::default()],
        );
        assert_eq!(plan.per_peer[0].len(), 1);
        assert_eq!(
            plan.per_peer[0][&"10.244.1.0/24".parse::<Ipv4Net>().unwrap()],
            Ipv4Addr::new(10, 0, 1, 1)
        );
        assert_eq!(plan.per_peer[1].len(), 1);
        assert_eq!(plan.per_peer[2].len(), 2);
        assert!(plan.refused.is_empty() && plan.unmatched.is_empty());
    }

    #[test]
    fn outside_cluster_and_overlaps_are_refused_with_reasons() {
        let nodes = [
            node("b", "r1", "10.244.1.0/25", [10, 0, 0, 2]),
            node("a", "r1", "10.244.1.0/24", [10, 0, 0, 1]),
            node("c", "r1", "192.168.0.0/24", [10, 0, 0, 3]),
            node("d", "r9", "10.244.9.0/24", [10, 0, 0, 4]),
        ];
        let plan = plan_announcements(&nodes, CLUSTER.parse().unwrap(), &[rack("r1")]);
        assert_eq!(plan.owners.values().collect::<Vec<_>>(), ["a"]);
        let reasons: Vec<_> = plan
            .refused
            .iter()
            .map(|r| (r.node.as_str(), r.reason))
            .collect();
        assert_eq!(reasons, [("b", "RouteConflict"), ("c", "InvalidPodCIDR")]);
        assert_eq!(plan.unmatched, ["d"]);
    }

    #[test]
    fn accepted_needs_the_same_next_hop() {
        let held: BTreeMap<Ipv4Net, Ipv4Addr> =
            [("10.244.1.0/24".parse().unwrap(), Ipv4Addr::new(10, 0, 0, 1))].into();
        assert!(accepted(
            "10.244.1.0/24".parse().unwrap(),
            Ipv4Addr::new(10, 0, 0, 1),
            [&held]
        ));
        assert!(!accepted(
            "10.244.1.0/24".parse().unwrap(),
            Ipv4Addr::new(10, 0, 0, 9),
            [&held]
        ));
        assert!(!accepted(
            "10.244.1.0/24".parse().unwrap(),
            Ipv4Addr::new(10, 0, 0, 1),
            []
        ));
    }

    proptest! {
        /// No two announced prefixes overlap, each lies in the cluster CIDR,
        /// and every node is announced, refused or unmatched exactly once.
        #[test]
        fn every_node_has_one_fate(specs in proptest::collection::vec((0u32..64, 20u8..28, 0u8..3), 0..40)) {
            let nodes: Vec<BgpNode> = specs.iter().enumerate().map(|(i, (block, len, r))| BgpNode {
                name: format!("n{i}"),
                labels: [("rack".to_owned(), format!("r{r}"))].into(),
                pod_cidr: Ipv4Net::new(Ipv4Addr::from(0x0af4_0000u32 + (block << 10)), *len).unwrap().trunc(),
                address: Ipv4Addr::from(0x0a00_0000u32 + i as u32),
            }).collect();
            let plan = plan_announcements(&nodes, "10.244.0.0/17".parse().unwrap(), &[rack("r0"), rack("r1")]);
            let owners: Vec<&Ipv4Net> = plan.owners.keys().collect();
            for (i, a) in owners.iter().enumerate() {
                for b in &owners[i + 1..] {
                    prop_assert!(!a.contains(*b) && !b.contains(*a));
                }
            }
            prop_assert_eq!(plan.owners.len() + plan.refused.len() + plan.unmatched.len(), nodes.len());
        }
    }
}
