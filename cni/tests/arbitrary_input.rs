//! Whatever a container runtime (or a broken config file) hands the plugin,
//! its parsers answer or fail with a CNI error; they never panic. Property
//! tests with arbitrary bytes, as the fuzzing fallback that runs in CI.

use cni::config::NetConf;
use cni::spec::CniArgs;
use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn any_network_config_parses_or_is_refused(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = NetConf::version_hint(&bytes);
        if let Err(e) = NetConf::parse(&bytes) {
            let said = format!("{e:?}");
            prop_assert!(!said.is_empty());
        }
    }

    #[test]
    fn json_shaped_network_config_parses_or_is_refused(
        version in "\\PC{0,8}", mtu in any::<i64>(), timeout in any::<i64>(),
        cidr in "\\PC{0,20}", delegate in "\\PC{0,12}",
    ) {
        let text = format!(
            r#"{{"cniVersion":{version:?},"name":"vpc-eni","type":"vpc-eni-cni","mtu":{mtu},"allocationTimeoutSeconds":{timeout},"serviceCidr":{cidr:?},"delegate":{{"type":{delegate:?},"ipam":{{"type":"host-local","ranges":[[{{"subnet":"usePodCidr"}}]]}}}}}}"#
        );
        let _ = NetConf::parse(text.as_bytes());
    }

    #[test]
    fn any_cni_args_parse_or_are_refused(raw in "\\PC{0,200}") {
        if let Ok(args) = CniArgs::parse(&raw) {
            let _ = (args.pod_namespace(), args.pod_name(), args.pod_uid());
        }
    }
}
