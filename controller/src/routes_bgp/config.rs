//! The `routes.bgp` block of the config file: local AS, router id, hold
//! time, graceful restart and the peers with their node selectors; its
//! validation (every problem names its field) and its `check-config` lines.

use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::time::Duration;

/// Which route backend the route reconciler writes to.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RouteBackend {
    /// The cloud's VPC route tables (needs `provider`).
    #[default]
    Cloud,
    /// BGP announcements to the network's routers (no cloud calls).
    Bgp,
}

/// `routes.bgp`.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BgpConfig {
    pub local_asn: u32,
    /// Default: env `POD_IP` (the controller's address), else the local
    /// address of each peer's connection.
    #[serde(default)]
    pub router_id: Option<Ipv4Addr>,
    #[serde(default = "default_hold")]
    pub hold_time_seconds: u16,
    #[serde(default)]
    pub graceful_restart: GracefulRestartConfig,
    #[serde(default)]
    pub peers: Vec<BgpPeerConfig>,
}

fn default_hold() -> u16 {
    90
}

#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GracefulRestartConfig {
    #[serde(default = "default_true")]
    pub enabled: bool,
    #[serde(default = "default_restart_time")]
    pub restart_time_seconds: u16,
}

fn default_true() -> bool {
    true
}
fn default_restart_time() -> u16 {
    120
}

impl Default for GracefulRestartConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            restart_time_seconds: default_restart_time(),
        }
    }
}

/// `routes.bgp.peers[i]`.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BgpPeerConfig {
    pub address: Ipv4Addr,
    #[serde(default = "default_port")]
    pub port: u16,
    pub asn: u32,
    /// Speak to this peer as this AS instead of `routes.bgp.localAsn`.
    #[serde(default)]
    pub local_asn: Option<u32>,
    /// Whose podCIDRs this peer learns; default: every node.
    #[serde(default)]
    pub node_selector: NodeSelector,
}

fn default_port() -> u16 {
    179
}

/// A Kubernetes LabelSelector over node labels.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NodeSelector {
    #[serde(default)]
    pub match_labels: BTreeMap<String, String>,
    #[serde(default)]
    pub match_expressions: Vec<SelectorRequirement>,
}

/// One `matchExpressions` entry, as written; read by [`NodeSelector::selector`].
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SelectorRequirement {
    pub key: String,
    /// `In`, `NotIn`, `Exists` or `DoesNotExist` (a string so a bad one is
    /// reported with its field).
    pub operator: String,
    #[serde(default)]
    pub values: Vec<String>,
}

impl NodeSelector {
    /// The selector as `ipam::bgp` decides with it, or the first bad
    /// expression as (field under `nodeSelector`, problem).
    pub fn selector(&self) -> Result<ipam::bgp::PeerSelector, (String, String)> {
        let mut match_expressions = Vec::new();
        for (j, e) in self.match_expressions.iter().enumerate() {
            let r = ipam::bgp::Requirement::parse(&e.key, &e.operator, &e.values)
                .map_err(|err| (format!("matchExpressions[{j}].{}", err.field), err.problem))?;
            match_expressions.push(r);
        }
        Ok(ipam::bgp::PeerSelector {
            match_labels: self.match_labels.clone(),
            match_expressions,
        })
    }

    /// The selector, or one that matches no node if it cannot be read
    /// (`problems` reports it; a config with problems does not run).
    pub fn selector_or_nothing(&self) -> ipam::bgp::PeerSelector {
        self.selector()
            .unwrap_or_else(|_| ipam::bgp::PeerSelector::nothing())
    }
}

impl BgpPeerConfig {
    /// How logs, Events and metrics name the peer.
    pub fn name(&self) -> String {
        format!("{}:{}", self.address, self.port)
    }
}

impl BgpConfig {
    pub fn local_asn_for(&self, peer: &BgpPeerConfig) -> u32 {
        peer.local_asn.unwrap_or(self.local_asn)
    }

    pub fn hold_time(&self) -> Duration {
        Duration::from_secs(u64::from(self.hold_time_seconds))
    }

    /// The node label keys the peers' selectors read (what the node cache
    /// keeps).
    pub fn label_keys(&self) -> Vec<String> {
        let mut keys: Vec<String> = self
            .peers
            .iter()
            .flat_map(|p| {
                let s = &p.node_selector;
                s.match_labels
                    .keys()
                    .chain(s.match_expressions.iter().map(|e| &e.key))
                    .cloned()
                    .collect::<Vec<_>>()
            })
            .collect();
        keys.sort();
        keys.dedup();
        keys
    }

    /// Every problem as (field path, what is wrong and what is allowed).
    pub fn problems(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        let mut bad = |path: &str, problem: String| out.push((path.to_owned(), problem));
        let asn_problem = |asn: u32| {
            match asn {
            0 => Some("0 is not an AS number: use 1-4294967295 (private: 64512-65534, 4200000000-4294967294)".to_owned()),
            23456 => Some("23456 is AS_TRANS, reserved for 4-octet AS negotiation (RFC 6793); use another AS".to_owned()),
            _ => None,
        }
        };
        if let Some(p) = asn_problem(self.local_asn) {
            bad("routes.bgp.localAsn", p);
        }
        if let Some(id) = self.router_id {
            if id.is_unspecified() || id.is_broadcast() {
                bad("routes.bgp.routerId", format!("{id} cannot be a BGP identifier: use an IPv4 address of the controller, e.g. 192.0.2.10"));
            }
        }
        if matches!(self.hold_time_seconds, 1 | 2) {
            bad(
                "routes.bgp.holdTimeSeconds",
                format!(
                    "{} is not allowed: use 0 (no keepalives) or at least 3 (RFC 4271), e.g. 90",
                    self.hold_time_seconds
                ),
            );
        }
        if self.graceful_restart.restart_time_seconds > 4095 {
            bad(
                "routes.bgp.gracefulRestart.restartTimeSeconds",
                format!(
                    "{} does not fit the capability's 12 bits: use at most 4095",
                    self.graceful_restart.restart_time_seconds
                ),
            );
        }
        if self.peers.is_empty() {
            bad(
                "routes.bgp.peers",
                "lists no peer: add at least one router, e.g. [{address: 192.0.2.1, asn: 64512}]"
                    .into(),
            );
        }
        let mut seen = BTreeSet::new();
        for (i, p) in self.peers.iter().enumerate() {
            let path = format!("routes.bgp.peers[{i}]");
            if !seen.insert((p.address, p.port)) {
                bad(
                    &format!("{path}.address"),
                    format!(
                        "{} is listed twice; one session per router address and port",
                        p.name()
                    ),
                );
            }
            if p.address.is_unspecified() || p.address.is_broadcast() || p.address.is_multicast() {
                bad(
                    &format!("{path}.address"),
                    format!("{} is not a router's unicast address", p.address),
                );
            }
            if p.port == 0 {
                bad(
                    &format!("{path}.port"),
                    "must be 1-65535 (BGP listens on 179)".into(),
                );
            }
            if let Some(e) = asn_problem(p.asn) {
                bad(&format!("{path}.asn"), e);
            }
            if let Some(e) = p.local_asn.and_then(asn_problem) {
                bad(&format!("{path}.localAsn"), e);
            }
            for (k, v) in &p.node_selector.match_labels {
                if k.is_empty() || k.len() > 317 || v.len() > 63 {
                    bad(&format!("{path}.nodeSelector.matchLabels.{k}"), "is not a label key/value (keys up to 317 characters with prefix, values up to 63)".into());
                }
            }
            for (j, e) in p.node_selector.match_expressions.iter().enumerate() {
                if e.key.is_empty() || e.key.len() > 317 {
                    bad(
                        &format!("{path}.nodeSelector.matchExpressions[{j}].key"),
                        "is not a label key (1 to 317 characters with prefix), e.g. rack".into(),
                    );
                }
            }
            if let Err((field, problem)) = p.node_selector.selector() {
                bad(&format!("{path}.nodeSelector.{field}"), problem);
            }
        }
        out
    }

    /// `check-config`'s plain-language lines for this block.
    pub fn explain(&self) -> Vec<String> {
        let mut out = vec![format!(
            "routes: backend bgp: no cloud calls; the leader announces each node's podCIDR with next hop = the node's InternalIP, as AS {} (router id {}), hold time {} s, graceful restart {}",
            self.local_asn,
            self.router_id.map(|i| i.to_string()).unwrap_or_else(|| "from POD_IP, else each connection's local address".into()),
            self.hold_time_seconds,
            if self.graceful_restart.enabled {
                format!("on (restart time {} s: routers keep our routes that long while a new leader takes over)", self.graceful_restart.restart_time_seconds)
            } else {
                "off (routers drop our routes as soon as the session ends)".into()
            }
        )];
        for p in &self.peers {
            let local = self.local_asn_for(p);
            let kind = if local == p.asn { "iBGP" } else { "eBGP" };
            let selector = p.node_selector.selector_or_nothing();
            let who = if selector.is_empty() {
                "every node".to_owned()
            } else {
                format!("nodes labelled {selector}")
            };
            out.push(format!(
                "routes: bgp peer {} AS {} ({kind} as AS {local}) learns {who}",
                p.name(),
                p.asn
            ));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> BgpConfig {
        serde_yaml::from_str(text).unwrap()
    }

    #[test]
    fn the_documented_block_parses_with_defaults() {
        let c = parse(
            "localAsn: 64512\nrouterId: 192.0.2.10\nholdTimeSeconds: 90\ngracefulRestart: {enabled: true, restartTimeSeconds: 120}\npeers:\n  - address: 192.0.2.1\n    port: 179\n    asn: 64512\n    localAsn: 65001\n    nodeSelector: {matchLabels: {rack: r1}}\n  - {address: 192.0.2.2, asn: 65002}\n",
        );
        assert!(c.problems().is_empty(), "{:?}", c.problems());
        assert_eq!(c.local_asn_for(&c.peers[0]), 65001);
        assert_eq!(c.local_asn_for(&c.peers[1]), 64512);
        assert_eq!(c.peers[1].port, 179);
        let text = c.explain().join("\n");
        assert!(
            text.contains(
                "192.0.2.1:179 AS 64512 (eBGP as AS 65001) learns nodes labelled rack=r1"
            ),
            "{text}"
        );
        assert!(
            text.contains("192.0.2.2:179 AS 65002 (eBGP as AS 64512) learns every node"),
            "{text}"
        );
    }

    #[test]
    fn match_expressions_select_and_explain_like_a_label_selector() {
        let c = parse("localAsn: 64512\npeers:\n  - address: 192.0.2.1\n    asn: 64512\n    nodeSelector:\n      matchLabels: {pool: edge}\n      matchExpressions:\n        - {key: rack, operator: In, values: [r1, r2]}\n        - {key: node-role.kubernetes.io/control-plane, operator: DoesNotExist}\n");
        assert!(c.problems().is_empty(), "{:?}", c.problems());
        let sel = c.peers[0].node_selector.selector().unwrap();
        let node = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect()
        };
        assert!(sel.matches(&node(&[("pool", "edge"), ("rack", "r2")])));
        assert!(!sel.matches(&node(&[("pool", "edge"), ("rack", "r3")])));
        assert!(!sel.matches(&node(&[
            ("pool", "edge"),
            ("rack", "r1"),
            ("node-role.kubernetes.io/control-plane", "")
        ])));
        let text = c.explain().join("\n");
        assert!(
            text.contains("learns nodes labelled pool=edge,rack in (r1,r2),!node-role.kubernetes.io/control-plane"),
            "{text}"
        );
        assert_eq!(
            c.label_keys(),
            ["node-role.kubernetes.io/control-plane", "pool", "rack"]
        );
    }

    #[test]
    fn bad_match_expressions_name_their_field() {
        let c = parse("localAsn: 64512\npeers:\n  - address: 192.0.2.1\n    asn: 64512\n    nodeSelector:\n      matchExpressions:\n        - {key: rack, operator: Equals, values: [r1]}\n  - address: 192.0.2.2\n    asn: 64512\n    nodeSelector:\n      matchExpressions:\n        - {key: rack, operator: In}\n  - address: 192.0.2.3\n    asn: 64512\n    nodeSelector:\n      matchExpressions:\n        - {key: rack, operator: Exists}\n        - {key: '', operator: Exists, values: [x]}\n");
        let problems = c.problems();
        let paths: Vec<&str> = problems.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(
            paths,
            [
                "routes.bgp.peers[0].nodeSelector.matchExpressions[0].operator",
                "routes.bgp.peers[1].nodeSelector.matchExpressions[0].values",
                "routes.bgp.peers[2].nodeSelector.matchExpressions[1].key",
                "routes.bgp.peers[2].nodeSelector.matchExpressions[1].values",
            ]
        );
        assert!(
            problems[0].1.contains(
                "\"Equals\" is not a LabelSelector operator: use In, NotIn, Exists or DoesNotExist"
            ),
            "{problems:?}"
        );
        assert!(problems[1].1.contains("at least one value"), "{problems:?}");
        // A selector that cannot be read selects nothing, never everything.
        let sel = c.peers[0].node_selector.selector_or_nothing();
        assert!(!sel.matches(&BTreeMap::new()));
    }

    #[test]
    fn problems_name_the_field() {
        let c = parse("localAsn: 23456\nholdTimeSeconds: 2\ngracefulRestart: {restartTimeSeconds: 5000}\npeers:\n  - {address: 192.0.2.1, asn: 0, port: 0}\n  - {address: 192.0.2.1, asn: 1, port: 0}\n");
        let paths: Vec<String> = c.problems().into_iter().map(|(p, _)| p).collect();
        assert_eq!(
            paths,
            [
                "routes.bgp.localAsn",
                "routes.bgp.holdTimeSeconds",
                "routes.bgp.gracefulRestart.restartTimeSeconds",
                "routes.bgp.peers[0].port",
                "routes.bgp.peers[0].asn",
                "routes.bgp.peers[1].address",
                "routes.bgp.peers[1].port",
            ]
        );
    }
}
