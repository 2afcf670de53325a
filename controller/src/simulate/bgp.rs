//! Acts with `routes.backend: bgp`: one in-process router per peer
//! (`mocks::bgp_router`, on 127.0.0.1), the controller's peers pointed at
//! them, convergence judged from what each router holds, and the per-peer
//! lines of the report (the controller's view of the session beside what
//! the router accepted).

use super::scenario::SimBgpSpec;
use super::Sim;
use crate::routes_bgp::config::BgpConfig;
use ipnet::Ipv4Net;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, ListParams};
use kube::ResourceExt;
use mocks::bgp_router::BgpRouter;
use serde::Serialize;
use std::collections::BTreeMap;
use std::net::Ipv4Addr;

/// The routers of an act, in the order of `routes.bgp.peers`.
pub struct Routers {
    pub routers: Vec<BgpRouter>,
    spec: SimBgpSpec,
}

impl Routers {
    /// One router per peer, each expecting the AS the controller speaks to
    /// it as.
    pub async fn start(spec: &SimBgpSpec) -> anyhow::Result<Routers> {
        let mut routers = Vec::new();
        for (i, p) in spec.peers.iter().enumerate() {
            let id = Ipv4Addr::new(192, 0, 2, u8::try_from(i + 1).unwrap_or(254));
            let expect = p.local_asn.unwrap_or(spec.local_asn);
            routers.push(BgpRouter::start(p.asn, id, expect).await?);
        }
        Ok(Routers {
            routers,
            spec: spec.clone(),
        })
    }

    /// The controller's `routes.bgp`, each peer at its router.
    pub fn controller_config(&self) -> BgpConfig {
        let ports: Vec<u16> = self.routers.iter().map(BgpRouter::port).collect();
        self.spec.controller_config(&ports)
    }
}

/// Per node: podCIDR and InternalIP, with its labels.
fn announced_nodes(nodes: &[Node]) -> Vec<(String, Ipv4Net, Ipv4Addr, BTreeMap<String, String>)> {
    nodes
        .iter()
        .filter_map(|n| {
            let cidr = crate::kubeutil::pod_cidr(n)?.parse::<Ipv4Net>().ok()?;
            let ip = n
                .status
                .as_ref()?
                .addresses
                .as_ref()?
                .iter()
                .find(|a| a.type_ == "InternalIP")?
                .address
                .parse::<Ipv4Addr>()
                .ok()?;
            Some((n.name_any(), cidr.trunc(), ip, n.labels().clone()))
        })
        .collect()
}

impl Sim {
    /// BGP acts: (nodes done, total, converged). A node is done when a
    /// router its peer's selector picks holds its podCIDR via its
    /// InternalIP and `NetworkUnavailable` is False (or, picked by no peer,
    /// True); converged when every router holds exactly its nodes' routes
    /// and the leader records each session Established with as many
    /// prefixes announced as the router accepted.
    pub async fn bgp_convergence(&self, routers: &Routers) -> anyhow::Result<(usize, usize, bool)> {
        let nodes: Api<Node> = Api::all(self.client().clone());
        let list = nodes.list(&ListParams::default()).await?.items;
        let selectors: Vec<_> = routers
            .spec
            .peers
            .iter()
            .map(|p| p.node_selector.selector_or_nothing())
            .collect();
        let views: Vec<_> = routers.routers.iter().map(BgpRouter::view).collect();
        let mut expected = vec![BTreeMap::new(); views.len()];
        let mut done = 0;
        for (name, cidr, ip, labels) in announced_nodes(&list) {
            let mut picked = false;
            let mut held = false;
            for (i, sel) in selectors.iter().enumerate() {
                if sel.matches(&labels) {
                    picked = true;
                    expected[i].insert(cidr, ip);
                    held |= views[i].table.get(&cidr) == Some(&ip);
                }
            }
            let condition = list
                .iter()
                .find(|n| n.name_any() == name)
                .and_then(crate::kubeutil::network_unavailable)
                .map(|(status, _)| status);
            let ok = match (picked, condition.as_deref()) {
                (true, Some("False")) => held,
                (false, Some("True")) => true,
                _ => false,
            };
            done += usize::from(ok);
        }
        let total = list.len();
        let tables_exact = views
            .iter()
            .zip(&expected)
            .all(|(v, want)| v.established && &v.table == want);
        // The leader has recorded it too (after a restart the routers may
        // hold the new leader's routes before its pass has seen them).
        let recorded = peer_lines(self)
            .iter()
            .all(|l| l.state == "Established" && l.announced == l.accepted as u64);
        Ok((done, total, done == total && tables_exact && recorded))
    }
}

/// One peer as the report shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PeerLine {
    /// `address:port` as the controller's config, metrics and Events name it.
    pub peer: String,
    pub asn: u32,
    /// The AS the controller speaks to it as.
    pub local_asn: u32,
    /// The session state the leading replica records (RFC 4271 state).
    pub state: String,
    /// Prefixes the leading replica has announced on the current session.
    pub announced: u64,
    /// Prefixes the router holds from the controller now.
    pub accepted: usize,
    /// Established sessions that went down, over every replica of the act.
    pub flaps: u64,
    /// UPDATE messages and bytes sent to it, over every replica.
    pub updates_sent: u64,
    pub update_bytes_sent: u64,
    /// Sessions the router saw established (a new leader adds one).
    pub router_sessions: u64,
}

/// The per-peer lines of a BGP act (empty for other acts).
pub fn peer_lines(sim: &Sim) -> Vec<PeerLine> {
    let Some(routers) = &sim.bgp else {
        return Vec::new();
    };
    let config = routers.controller_config();
    let leader = sim
        .harness
        .live_replicas()
        .filter(|r| r.leading())
        .last()
        .map(|r| r.metrics.clone());
    config
        .peers
        .iter()
        .zip(&routers.routers)
        .map(|(p, router)| {
            let name = p.name();
            let now = leader.as_ref().and_then(|m| m.bgp_peer(&name));
            let mut line = PeerLine {
                peer: name.clone(),
                asn: p.asn,
                local_asn: config.local_asn_for(p),
                state: now.as_ref().map_or("-", |s| s.state).to_owned(),
                announced: now.as_ref().map_or(0, |s| s.announced),
                accepted: 0,
                flaps: 0,
                updates_sent: 0,
                update_bytes_sent: 0,
                router_sessions: 0,
            };
            for r in &sim.harness.replicas {
                if let Some(s) = r.metrics.bgp_peer(&name) {
                    line.flaps += s.flaps;
                    line.updates_sent += s.updates_sent;
                    line.update_bytes_sent += s.update_bytes_sent;
                }
            }
            let view = router.view();
            line.accepted = view.table.len();
            line.router_sessions = view.sessions;
            line
        })
        .collect()
}

/// The report's table of peers.
pub fn peers_table(lines: &[PeerLine]) -> String {
    let rows: Vec<Vec<String>> = lines
        .iter()
        .map(|l| {
            vec![
                l.peer.clone(),
                l.asn.to_string(),
                l.local_asn.to_string(),
                l.state.clone(),
                l.announced.to_string(),
                l.accepted.to_string(),
                l.flaps.to_string(),
                format!("{} / {} B", l.updates_sent, l.update_bytes_sent),
            ]
        })
        .collect();
    super::report::table(
        &[
            "PEER",
            "ASN",
            "OUR ASN",
            "STATE",
            "ANNOUNCED",
            "ACCEPTED",
            "FLAPS",
            "UPDATES SENT",
        ],
        &rows,
    )
}
