//! The BGP route backend: the same job as the cloud route reconciler
//! (`routes`), done by announcing every node's podCIDR (next hop = the
//! node's InternalIP) to the configured routers over BGP. The leader holds
//! one session per peer (`bgp` crate); a standby holds none. What each
//! peer is told is planned by `ipam::bgp`; the result is recorded as the
//! cloud backend records it: the node condition `NetworkUnavailable`,
//! `RouteCreated`/`RouteDeleted` Events, plus an Event on the controller
//! when a peer's session goes down, and per-peer metrics.
//!
//! `config` owns the `routes.bgp` block; `reconciler` the node watch and
//! passes; `nocloud` the cloud that is never called (no `provider` block).

pub mod config;
pub mod nocloud;
mod reconciler;

pub use reconciler::{run, BgpRouteReconciler};

use crate::config::{Config, RoutesConfig};
use config::RouteBackend;

/// Problems with a missing `provider` block: only the BGP backend with the
/// ENI modes off runs without a cloud.
pub(crate) fn provider_problems(config: &Config, bad: &mut dyn FnMut(&str, String)) {
    let cloud_routes = config.routes.enabled && config.routes.backend == RouteBackend::Cloud;
    if cloud_routes || config.eni.enabled || config.shared_eni.enabled {
        bad(
            "provider",
            "is required for routes.backend cloud, eni and sharedEni, e.g. {kind: alibaba, region: cn-hangzhou}; only routes.backend: bgp runs without a cloud".into(),
        );
    }
}

/// Problems of `routes.backend` and `routes.bgp` (routes enabled).
pub(crate) fn routes_problems(routes: &RoutesConfig, bad: &mut dyn FnMut(&str, String)) {
    match (routes.backend, &routes.bgp) {
        (RouteBackend::Bgp, None) => bad(
            "routes.bgp",
            "is required with routes.backend: bgp: at least localAsn and peers, e.g. {localAsn: 64512, peers: [{address: 192.0.2.1, asn: 64512}]}".into(),
        ),
        (RouteBackend::Bgp, Some(bgp)) => {
            for (path, problem) in bgp.problems() {
                bad(&path, problem);
            }
            if !routes.route_table_ids.is_empty() {
                bad(
                    "routes.routeTableIds",
                    "is for routes.backend: cloud; the BGP backend announces to routes.bgp.peers (remove routeTableIds)".into(),
                );
            }
        }
        (RouteBackend::Cloud, Some(_)) => bad(
            "routes.bgp",
            "is only read with routes.backend: bgp; set routes.backend: bgp or remove the block".into(),
        ),
        (RouteBackend::Cloud, None) => {}
    }
}

#[cfg(test)]
mod tests {
    use crate::config::Config;

    const BGP: &str = r#"
clusterId: demo
routes:
  enabled: true
  backend: bgp
  clusterCidr: 10.244.0.0/16
  bgp:
    localAsn: 64512
    routerId: 192.0.2.10
    holdTimeSeconds: 90
    gracefulRestart: {enabled: true, restartTimeSeconds: 120}
    peers:
      - address: 192.0.2.1
        port: 179
        asn: 64512
        localAsn: 65001
        nodeSelector: {matchLabels: {rack: r1}}
"#;

    fn problems(text: &str) -> String {
        match Config::parse(text) {
            Ok(_) => String::new(),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn the_issue_example_needs_no_provider() {
        let c = Config::parse(BGP).unwrap();
        assert!(c.provider.absent);
        let text = crate::explain::explain(&c);
        assert!(text.contains("no cloud calls"), "{text}");
        assert!(
            text.contains(
                "bgp peer 192.0.2.1:179 AS 64512 (eBGP as AS 65001) learns nodes labelled rack=r1"
            ),
            "{text}"
        );
        assert!(!text.contains("route table"), "{text}");
    }

    #[test]
    fn cloud_backend_and_eni_still_need_a_provider() {
        let msg = problems(&BGP.replace("backend: bgp", "backend: cloud"));
        assert!(msg.contains("provider: is required"), "{msg}");
        assert!(
            msg.contains("routes.bgp: is only read with routes.backend: bgp"),
            "{msg}"
        );
        let msg = problems(&format!(
            "{BGP}eni:\n  enabled: true\n  subnets: {{z: [vsw-1]}}\n  securityGroups: [sg-1]\n"
        ));
        assert!(msg.contains("provider: is required"), "{msg}");
        let msg = problems(&format!("{BGP}sharedEni:\n  enabled: true\n"));
        assert!(msg.contains("provider: is required"), "{msg}");
    }

    #[test]
    fn bgp_problems_name_their_fields() {
        let msg = problems(&BGP.replace("  bgp:\n    localAsn: 64512", "  bgp:\n    localAsn: 0"));
        assert!(
            msg.contains("routes.bgp.localAsn: 0 is not an AS number"),
            "{msg}"
        );
        let cut = BGP.find("  bgp:").unwrap();
        let msg = problems(&BGP[..cut]);
        assert!(
            msg.contains("routes.bgp: is required with routes.backend: bgp"),
            "{msg}"
        );
        let msg = problems(&BGP.replace("nodeSelector", "nodeSelectr"));
        assert!(msg.contains("unknown field `nodeSelectr`"), "{msg}");
        let msg = problems(&BGP.replace("address: 192.0.2.1", "address: router-1"));
        assert!(
            msg.contains("routes.bgp.peers[0].address") || msg.contains("routes.bgp.peers[0]"),
            "{msg}"
        );
    }
}
