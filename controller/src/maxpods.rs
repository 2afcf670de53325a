//! `max-pods`: how many pods a node of an instance type can run in
//! shared-ENI mode (each shared ENI holds its IPs less its primary; plus
//! two host-network pods, as the AWS max-pods calculator counts), from the
//! bundled catalogue (`ipam::instance_types`) or limits given by hand.

use crate::config::ProviderKind;
use ipam::instance_types::{lookup, TypeCloud};

/// What `max-pods` was asked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ask {
    pub provider: ProviderKind,
    pub instance_type: String,
    /// Shared ENIs per node (`sharedEni.maxEnis`); all secondary slots when
    /// absent.
    pub shared_enis: Option<u32>,
    /// Limits by hand (for a type the catalogue does not have).
    pub max_enis: Option<u32>,
    pub ipv4_per_eni: Option<u32>,
}

/// The answer and how it was reached.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Answer {
    pub max_pods: u32,
    pub explanation: String,
}

/// Host-network pods a node runs beside its IP pods (kube-proxy and the
/// node half's DaemonSet), as the AWS calculator counts them.
pub const HOST_NETWORK_PODS: u32 = 2;

pub fn max_pods(ask: &Ask) -> Result<Answer, String> {
    let want = match ask.provider {
        ProviderKind::Alibaba => TypeCloud::Alibaba,
        ProviderKind::Aws => TypeCloud::Aws,
    };
    let known = lookup(&ask.instance_type).filter(|t| t.cloud == want);
    let (max_enis, ipv4, source) = match (ask.max_enis, ask.ipv4_per_eni, known) {
        (Some(e), Some(i), _) => (e, i, "given"),
        (e, i, Some(t)) => (
            e.unwrap_or(t.max_enis),
            i.unwrap_or(t.ipv4_per_eni),
            "bundled table",
        ),
        _ => {
            return Err(format!(
                "--instance-type {:?} is not in the bundled {} table: pass --max-enis and --ipv4-per-eni (DescribeInstanceTypes: {})",
                ask.instance_type,
                ask.provider,
                match ask.provider {
                    ProviderKind::Alibaba => "EniQuantity, EniPrivateIpAddressQuantity",
                    ProviderKind::Aws => "NetworkInfo.MaximumNetworkInterfaces, Ipv4AddressesPerInterface",
                }
            ))
        }
    };
    if max_enis < 2 {
        return Err(format!(
            "{} allows {max_enis} ENI(s): no secondary ENI, so shared mode gives it no pod IP",
            ask.instance_type
        ));
    }
    let secondary = max_enis - 1;
    let shared = ask.shared_enis.unwrap_or(secondary);
    if shared == 0 {
        return Err("--shared-enis must be at least 1".into());
    }
    let used = shared.min(secondary);
    let max = ipam::eni::max_pods(max_enis, ipv4, shared, HOST_NETWORK_PODS);
    Ok(Answer {
        max_pods: max,
        explanation: format!(
            "{}: {max_enis} ENIs x {ipv4} IPv4 each ({source}); {used} shared ENI(s) x ({ipv4} - 1 primary) = {} pod IPs + {HOST_NETWORK_PODS} host-network pods = {max}{}",
            ask.instance_type,
            max - HOST_NETWORK_PODS,
            if shared > secondary {
                format!(" (--shared-enis {shared} capped at the {secondary} secondary slots)")
            } else {
                String::new()
            }
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ask(provider: ProviderKind, t: &str, shared: Option<u32>) -> Ask {
        Ask {
            provider,
            instance_type: t.into(),
            shared_enis: shared,
            max_enis: None,
            ipv4_per_eni: None,
        }
    }

    #[test]
    fn aws_types_match_the_max_pods_formula() {
        // m5.large: 3 ENIs x 10 IPv4; all secondary ENIs shared: 2 x 9 + 2.
        let a = max_pods(&ask(ProviderKind::Aws, "m5.large", None)).unwrap();
        assert_eq!(a.max_pods, 20);
        assert!(
            a.explanation
                .contains("2 shared ENI(s) x (10 - 1 primary) = 18 pod IPs"),
            "{}",
            a.explanation
        );
        // t3.medium: 3 x 6 -> 2 x 5 + 2.
        assert_eq!(
            max_pods(&ask(ProviderKind::Aws, "t3.medium", None))
                .unwrap()
                .max_pods,
            12
        );
    }

    #[test]
    fn shared_enis_limit_the_count_and_are_capped_by_the_type() {
        // ecs.c6.xlarge: 3 ENIs x 10; one shared ENI: 9 + 2.
        assert_eq!(
            max_pods(&ask(ProviderKind::Alibaba, "ecs.c6.xlarge", Some(1)))
                .unwrap()
                .max_pods,
            11
        );
        let capped = max_pods(&ask(ProviderKind::Alibaba, "ecs.c6.xlarge", Some(5))).unwrap();
        assert_eq!(capped.max_pods, 20);
        assert!(capped
            .explanation
            .contains("capped at the 2 secondary slots"));
    }

    #[test]
    fn unknown_or_wrong_cloud_types_name_the_flags_to_use() {
        let e = max_pods(&ask(ProviderKind::Aws, "ecs.c6.xlarge", None)).unwrap_err();
        assert!(
            e.contains("--max-enis") && e.contains("MaximumNetworkInterfaces"),
            "{e}"
        );
        let by_hand = Ask {
            max_enis: Some(8),
            ipv4_per_eni: Some(30),
            ..ask(ProviderKind::Aws, "m6i.8xlarge", None)
        };
        assert_eq!(max_pods(&by_hand).unwrap().max_pods, 7 * 29 + 2);
        let one = Ask {
            max_enis: Some(1),
            ipv4_per_eni: Some(30),
            ..ask(ProviderKind::Aws, "x", None)
        };
        assert!(max_pods(&one).unwrap_err().contains("no secondary ENI"));
    }
}
