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

#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NodeSelector {
    #[serde(default)]
    pub match_labels: BTreeMap<String, String>,
}

impl NodeSelector {
    /// The selector as `ipam::bgp` decides with it.
    pub fn selector(&self) -> ipam::bgp::PeerSelector {
        ipam::bgp::PeerSelector {
            match_labels: self.match_labels.clone(),
        }
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
            let who = if p.node_selector.match_labels.is_empty() {
                "every node".to_owned()
            } else {
                format!(
                    "nodes labelled {}",
                    p.node_selector
                        .match_labels
                        .iter()
                        .map(|(k, v)| format!("{k}={v}"))
                        .collect::<Vec<_>>()
                        .join(",")
                )
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
