//! The BGP route backend's decisions: which podCIDR each peer is told about
//! (with the node's address as next hop), which nodes cannot be announced
//! and why, and whether a node's route is in place (some peer has it).
//! Pure functions of the nodes and the peers' selectors (Kubernetes
//! LabelSelectors: `matchLabels` and `matchExpressions`).

use ipnet::Ipv4Net;
use std::collections::{BTreeMap, BTreeSet};
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

/// Which nodes a peer learns, as a Kubernetes LabelSelector decides: every
/// `match_labels` pair and every expression must hold; empty matches all.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PeerSelector {
    pub match_labels: BTreeMap<String, String>,
    pub match_expressions: Vec<Requirement>,
}

/// One `matchExpressions` entry: a label key and what its value must be.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Requirement {
    pub key: String,
    pub operator: Operator,
}

/// A LabelSelector operator with its values.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Operator {
    /// The label is present with one of the values.
    In(BTreeSet<String>),
    /// The label is absent, or present with none of the values.
    NotIn(BTreeSet<String>),
    Exists,
    DoesNotExist,
}

/// Why a `matchExpressions` entry is not a requirement, and which of its
/// fields is wrong.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequirementError {
    /// `operator` or `values`.
    pub field: &'static str,
    pub problem: String,
}

impl Requirement {
    /// Build a requirement from a LabelSelector's `{key, operator, values}`,
    /// with the API server's rules: `In` and `NotIn` need at least one
    /// value, `Exists` and `DoesNotExist` take none.
    pub fn parse(key: &str, operator: &str, values: &[String]) -> Result<Self, RequirementError> {
        let set: BTreeSet<String> = values.iter().cloned().collect();
        let need_values = |op: &str| RequirementError {
            field: "values",
            problem: format!("must list at least one value with operator {op}"),
        };
        let no_values = |op: &str| RequirementError {
            field: "values",
            problem: format!("must be empty with operator {op} (it looks at the key only)"),
        };
        let operator = match operator {
            "In" if set.is_empty() => return Err(need_values("In")),
            "NotIn" if set.is_empty() => return Err(need_values("NotIn")),
            "In" => Operator::In(set),
            "NotIn" => Operator::NotIn(set),
            "Exists" if !set.is_empty() => return Err(no_values("Exists")),
            "DoesNotExist" if !set.is_empty() => return Err(no_values("DoesNotExist")),
            "Exists" => Operator::Exists,
            "DoesNotExist" => Operator::DoesNotExist,
            other => {
                return Err(RequirementError {
                    field: "operator",
                    problem: format!(
                        "{other:?} is not a LabelSelector operator: use In, NotIn, Exists or DoesNotExist"
                    ),
                })
            }
        };
        Ok(Requirement {
            key: key.to_owned(),
            operator,
        })
    }

    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        let value = labels.get(&self.key);
        match &self.operator {
            Operator::In(values) => value.is_some_and(|v| values.contains(v)),
            Operator::NotIn(values) => value.is_none_or(|v| !values.contains(v)),
            Operator::Exists => value.is_some(),
            Operator::DoesNotExist => value.is_none(),
        }
    }
}

impl std::fmt::Display for Requirement {
    /// As `kubectl` writes a selector: `rack in (r1,r2)`, `rack notin (r3)`,
    /// `gpu`, `!gpu`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let list = |v: &BTreeSet<String>| v.iter().cloned().collect::<Vec<_>>().join(",");
        match &self.operator {
            Operator::In(v) => write!(f, "{} in ({})", self.key, list(v)),
            Operator::NotIn(v) => write!(f, "{} notin ({})", self.key, list(v)),
            Operator::Exists => write!(f, "{}", self.key),
            Operator::DoesNotExist => write!(f, "!{}", self.key),
        }
    }
}

impl PeerSelector {
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.match_labels
            .iter()
            .all(|(k, v)| labels.get(k) == Some(v))
            && self.match_expressions.iter().all(|r| r.matches(labels))
    }

    /// A selector no node matches (for a selector that could not be read).
    pub fn nothing() -> Self {
        PeerSelector {
            match_labels: BTreeMap::new(),
            match_expressions: vec![Requirement {
                key: String::new(),
                operator: Operator::In(BTreeSet::new()),
            }],
        }
    }

    /// Whether it selects every node.
    pub fn is_empty(&self) -> bool {
        self.match_labels.is_empty() && self.match_expressions.is_empty()
    }

    /// The label keys it reads (what a node cache must keep for it).
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.match_labels
            .keys()
            .map(String::as_str)
            .chain(self.match_expressions.iter().map(|r| r.key.as_str()))
    }
}

impl std::fmt::Display for PeerSelector {
    /// `rack=r1,zone in (a,b),!gpu`, as `kubectl get -l` takes it.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let parts: Vec<String> = self
            .match_labels
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .chain(self.match_expressions.iter().map(|r| r.to_string()))
            .collect();
        f.write_str(&parts.join(","))
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
            ..PeerSelector::default()
        }
    }

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn req(key: &str, op: &str, values: &[&str]) -> Requirement {
        let values: Vec<String> = values.iter().map(|v| (*v).to_owned()).collect();
        Requirement::parse(key, op, &values).unwrap()
    }

    #[test]
    fn expressions_match_as_a_label_selector_does() {
        let r1 = labels(&[("rack", "r1"), ("gpu", "yes")]);
        let r3 = labels(&[("rack", "r3")]);
        let none = labels(&[]);
        let cases = [
            (req("rack", "In", &["r1", "r2"]), [true, false, false]),
            // NotIn also holds where the label is absent.
            (req("rack", "NotIn", &["r1", "r2"]), [false, true, true]),
            (req("gpu", "Exists", &[]), [true, false, false]),
            (req("gpu", "DoesNotExist", &[]), [false, true, true]),
        ];
        for (r, want) in cases {
            let got = [&r1, &r3, &none].map(|l| r.matches(l));
            assert_eq!(got, want, "{r}");
        }
        // Labels and every expression must hold together.
        let sel = PeerSelector {
            match_labels: labels(&[("rack", "r1")]),
            match_expressions: vec![req("gpu", "DoesNotExist", &[])],
        };
        assert!(!sel.matches(&r1));
        assert!(sel.matches(&labels(&[("rack", "r1")])));
        assert_eq!(sel.to_string(), "rack=r1,!gpu");
        assert_eq!(
            sel.keys().collect::<Vec<_>>(),
            ["rack", "gpu"],
            "what the node cache keeps"
        );
        assert!(PeerSelector::default().matches(&none) && PeerSelector::default().is_empty());
    }

    #[test]
    fn bad_expressions_name_the_field() {
        let bad = |op: &str, values: &[&str]| {
            let values: Vec<String> = values.iter().map(|v| (*v).to_owned()).collect();
            Requirement::parse("rack", op, &values).unwrap_err()
        };
        let e = bad("in", &["r1"]);
        assert_eq!(e.field, "operator");
        assert!(
            e.problem.contains("In, NotIn, Exists or DoesNotExist"),
            "{e:?}"
        );
        assert_eq!(bad("In", &[]).field, "values");
        assert_eq!(bad("NotIn", &[]).field, "values");
        let e = bad("Exists", &["x"]);
        assert!(e.field == "values" && e.problem.contains("empty"), "{e:?}");
        assert_eq!(bad("DoesNotExist", &["x"]).field, "values");
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
        /// NotIn is the complement of In, DoesNotExist of Exists, whatever
        /// the node's labels.
        #[test]
        fn operators_pair_up_as_complements(
            value in proptest::option::of("[ab]"),
            values in proptest::collection::btree_set("[abc]", 1..3),
        ) {
            let l: BTreeMap<String, String> = value.into_iter().map(|v| ("k".to_owned(), v)).collect();
            let values: Vec<String> = values.into_iter().collect();
            let m = |op: &str, v: &[String]| Requirement::parse("k", op, v).unwrap().matches(&l);
            prop_assert_ne!(m("In", &values), m("NotIn", &values));
            prop_assert_ne!(m("Exists", &[]), m("DoesNotExist", &[]));
            prop_assert!(!PeerSelector::nothing().matches(&l));
        }


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
