//! The network config on stdin: the keys this plugin reads, their defaults,
//! and an error naming the key for each bad value. Unknown keys are ignored,
//! as the spec asks; the whole object is kept for delegation
//! (`runtimeConfig`, `args`, `prevResult` travel on to the delegate).

use crate::error::PluginError;
use crate::spec::SUPPORTED_VERSIONS;
use ipnet::Ipv4Net;
use serde_json::{Map, Value};
use std::path::PathBuf;
use std::time::Duration;

pub const DEFAULT_KUBECONFIG: &str = "/etc/cni/net.d/vpc-eni.kubeconfig";
pub const DEFAULT_ALLOCATION_TIMEOUT: Duration = Duration::from_secs(60);
pub const DEFAULT_MTU: u32 = 1500;
pub const DEFAULT_SERVICE_CIDR: &str = "10.96.0.0/12";
pub const DEFAULT_STATE_DIR: &str = "/var/lib/cni/vpc-eni";
/// The extended resources a pod asks for to get an exclusive ENI: the
/// controller's defaults on Alibaba Cloud and on AWS.
pub const DEFAULT_ENI_RESOURCES: &[&str] = &["aliyun/eni", "vpc.amazonaws.com/eni"];

/// The parsed network config.
#[derive(Clone, Debug, PartialEq)]
pub struct NetConf {
    pub cni_version: String,
    pub name: String,
    pub kubeconfig: PathBuf,
    pub allocation_timeout: Duration,
    /// MTU of the ENI link and the pod<->node veth.
    pub mtu: u32,
    /// Whether `mtu` was given (only then is it passed on to the delegate).
    pub mtu_given: bool,
    pub service_cidr: Ipv4Net,
    /// The delegate plugin's config (`type` checked), for pods without an ENI.
    pub delegate: Option<Map<String, Value>>,
    pub eni_resources: Vec<String>,
    /// Where the delegate config of each attachment is kept between ADD and
    /// DEL, and the lock shared-ENI changes hold.
    pub state_dir: PathBuf,
    /// The node is in shared-ENI mode: a pod that asks for no exclusive ENI
    /// waits for its allocation (a secondary IP) instead of going to the
    /// delegate.
    pub shared_eni: bool,
    /// The whole object as received.
    pub raw: Map<String, Value>,
}

impl NetConf {
    /// Parse stdin. Not JSON: code 6; a bad key: code 7 naming it; a
    /// version this plugin does not speak: code 1.
    pub fn parse(stdin: &[u8]) -> Result<Self, PluginError> {
        let value: Value =
            serde_json::from_slice(stdin).map_err(|e| PluginError::Decode(e.to_string()))?;
        let Value::Object(raw) = value else {
            return Err(PluginError::Decode("not a JSON object".into()));
        };
        let cni_version = string(&raw, "cniVersion")?
            .ok_or_else(|| PluginError::invalid_config("cniVersion", "missing"))?;
        if !SUPPORTED_VERSIONS.contains(&cni_version.as_str()) {
            return Err(PluginError::IncompatibleVersion(cni_version));
        }
        let name = string(&raw, "name")?
            .filter(|n| !n.is_empty())
            .ok_or_else(|| PluginError::invalid_config("name", "missing"))?;
        let kubeconfig = PathBuf::from(
            string(&raw, "kubeconfig")?.unwrap_or_else(|| DEFAULT_KUBECONFIG.to_owned()),
        );
        let allocation_timeout = match raw.get("allocationTimeoutSeconds") {
            None | Some(Value::Null) => DEFAULT_ALLOCATION_TIMEOUT,
            Some(v) => v
                .as_f64()
                .filter(|s| s.is_finite() && *s >= 0.0 && *s <= 3600.0)
                .map(Duration::from_secs_f64)
                .ok_or_else(|| {
                    PluginError::invalid_config(
                        "allocationTimeoutSeconds",
                        format!("must be a number of seconds from 0 to 3600, got {v}"),
                    )
                })?,
        };
        let (mtu, mtu_given) = match raw.get("mtu") {
            None | Some(Value::Null) => (DEFAULT_MTU, false),
            Some(v) => (
                v.as_u64()
                    .filter(|m| (68..=65535).contains(m))
                    .and_then(|m| u32::try_from(m).ok())
                    .ok_or_else(|| {
                        PluginError::invalid_config(
                            "mtu",
                            format!("must be an integer from 68 to 65535, got {v}"),
                        )
                    })?,
                true,
            ),
        };
        let service_cidr = match string(&raw, "serviceCidr")? {
            None => DEFAULT_SERVICE_CIDR.parse::<Ipv4Net>().ok(),
            Some(s) => s.parse::<Ipv4Net>().ok(),
        }
        .map(|n| n.trunc())
        .ok_or_else(|| {
            PluginError::invalid_config(
                "serviceCidr",
                format!(
                    "must be an IPv4 CIDR such as {DEFAULT_SERVICE_CIDR}, got {}",
                    raw.get("serviceCidr").unwrap_or(&Value::Null)
                ),
            )
        })?;
        let delegate = match raw.get("delegate") {
            None | Some(Value::Null) => None,
            Some(Value::Object(d)) => {
                match d.get("type") {
                    Some(Value::String(t)) if valid_plugin_name(t) => {}
                    other => {
                        return Err(PluginError::invalid_config(
                            "delegate.type",
                            format!(
                                "must name a plugin binary in CNI_PATH, got {}",
                                other.unwrap_or(&Value::Null)
                            ),
                        ))
                    }
                }
                Some(d.clone())
            }
            Some(v) => {
                return Err(PluginError::invalid_config(
                    "delegate",
                    format!("must be an object (a plugin config), got {v}"),
                ))
            }
        };
        let eni_resources = match raw.get("eniResourceNames") {
            None | Some(Value::Null) => DEFAULT_ENI_RESOURCES
                .iter()
                .map(|s| (*s).to_owned())
                .collect(),
            Some(Value::Array(items)) => items
                .iter()
                .map(|i| i.as_str().map(str::to_owned))
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| {
                    PluginError::invalid_config(
                        "eniResourceNames",
                        "must be a list of extended resource names",
                    )
                })?,
            Some(v) => {
                return Err(PluginError::invalid_config(
                    "eniResourceNames",
                    format!("must be a list of extended resource names, got {v}"),
                ))
            }
        };
        let state_dir = PathBuf::from(
            string(&raw, "stateDir")?.unwrap_or_else(|| DEFAULT_STATE_DIR.to_owned()),
        );
        let shared_eni = match raw.get("sharedEni") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => *b,
            Some(v) => {
                return Err(PluginError::invalid_config(
                    "sharedEni",
                    format!("must be true (the node is in shared-ENI mode) or false, got {v}"),
                ))
            }
        };
        Ok(NetConf {
            cni_version,
            name,
            kubeconfig,
            allocation_timeout,
            mtu,
            mtu_given,
            service_cidr,
            delegate,
            eni_resources,
            state_dir,
            shared_eni,
            raw,
        })
    }

    /// The version to print errors with, read leniently from stdin when the
    /// config itself did not parse.
    pub fn version_hint(stdin: &[u8]) -> Option<String> {
        let v: Value = serde_json::from_slice(stdin).ok()?;
        v.get("cniVersion")?.as_str().map(str::to_owned)
    }
}

fn string(raw: &Map<String, Value>, key: &str) -> Result<Option<String>, PluginError> {
    match raw.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(v) => Err(PluginError::invalid_config(
            key,
            format!("must be a string, got {v}"),
        )),
    }
}

/// A plugin `type` is a file name in `CNI_PATH`, never a path.
fn valid_plugin_name(t: &str) -> bool {
    !t.is_empty() && t != "." && t != ".." && !t.contains('/')
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const EXAMPLE: &str = r#"{"cniVersion":"1.0.0","name":"vpc-eni","type":"vpc-eni-cni","kubeconfig":"/etc/cni/net.d/vpc-eni.kubeconfig","allocationTimeoutSeconds":60, "mtu":1500, "serviceCidr":"10.96.0.0/12","delegate":{"type":"ptp","ipam":{"type":"host-local","ranges":[[{"subnet":"usePodCidr"}]]}}}"#;

    fn parse(v: Value) -> Result<NetConf, PluginError> {
        NetConf::parse(v.to_string().as_bytes())
    }

    #[test]
    fn the_documented_example_parses() {
        let c = NetConf::parse(EXAMPLE.as_bytes()).unwrap();
        assert_eq!(c.cni_version, "1.0.0");
        assert_eq!(c.name, "vpc-eni");
        assert_eq!(c.kubeconfig, PathBuf::from(DEFAULT_KUBECONFIG));
        assert_eq!(c.allocation_timeout, Duration::from_secs(60));
        assert_eq!((c.mtu, c.mtu_given), (1500, true));
        assert_eq!(c.service_cidr, "10.96.0.0/12".parse::<Ipv4Net>().unwrap());
        assert_eq!(c.delegate.unwrap()["type"], "ptp");
    }

    #[test]
    fn defaults_and_unknown_keys() {
        let c = parse(json!({
            "cniVersion": "1.0.0", "name": "n", "type": "vpc-eni-cni",
            "somethingElse": {"deep": [1, 2]}, "runtimeConfig": {"x": 1}
        }))
        .unwrap();
        assert_eq!(c.kubeconfig, PathBuf::from(DEFAULT_KUBECONFIG));
        assert_eq!(c.allocation_timeout, DEFAULT_ALLOCATION_TIMEOUT);
        assert_eq!((c.mtu, c.mtu_given), (DEFAULT_MTU, false));
        assert_eq!(c.service_cidr.to_string(), DEFAULT_SERVICE_CIDR);
        assert_eq!(c.delegate, None);
        assert_eq!(c.eni_resources, ["aliyun/eni", "vpc.amazonaws.com/eni"]);
        assert_eq!(c.state_dir, PathBuf::from(DEFAULT_STATE_DIR));
        assert!(!c.shared_eni);
        assert_eq!(c.raw["runtimeConfig"], json!({"x": 1}));
        let shared = parse(json!({"cniVersion": "1.0.0", "name": "n", "sharedEni": true})).unwrap();
        assert!(shared.shared_eni);
    }

    #[test]
    fn fractional_timeout_and_host_bits() {
        let c = parse(json!({
            "cniVersion": "1.0.0", "name": "n",
            "allocationTimeoutSeconds": 0.5, "serviceCidr": "10.96.3.4/12"
        }))
        .unwrap();
        assert_eq!(c.allocation_timeout, Duration::from_millis(500));
        assert_eq!(c.service_cidr.to_string(), "10.96.0.0/12");
    }

    #[test]
    fn each_bad_key_is_named() {
        let base = json!({"cniVersion": "1.0.0", "name": "n"});
        for (key, value, named) in [
            ("name", json!(""), "name"),
            ("name", json!(3), "name"),
            ("cniVersion", json!(1), "cniVersion"),
            ("kubeconfig", json!(["a"]), "kubeconfig"),
            (
                "allocationTimeoutSeconds",
                json!(-1),
                "allocationTimeoutSeconds",
            ),
            (
                "allocationTimeoutSeconds",
                json!("60"),
                "allocationTimeoutSeconds",
            ),
            ("mtu", json!(0), "mtu"),
            ("mtu", json!(70000), "mtu"),
            ("mtu", json!(1500.5), "mtu"),
            ("serviceCidr", json!("10.96.0.0"), "serviceCidr"),
            ("serviceCidr", json!("fd00::/108"), "serviceCidr"),
            ("delegate", json!("ptp"), "delegate"),
            ("delegate", json!({"ipam": {}}), "delegate.type"),
            ("delegate", json!({"type": "../bin/sh"}), "delegate.type"),
            ("eniResourceNames", json!("aliyun/eni"), "eniResourceNames"),
            ("eniResourceNames", json!([1]), "eniResourceNames"),
            ("stateDir", json!(false), "stateDir"),
            ("sharedEni", json!("yes"), "sharedEni"),
        ] {
            let mut v = base.clone();
            v[key] = value.clone();
            let e = parse(v).unwrap_err();
            assert_eq!(e.code(), 7, "{key}={value}: {e}");
            assert!(
                e.to_string().contains(&format!("{named:?}")),
                "{key}={value}: {e}"
            );
        }
        let mut v = base.clone();
        v.as_object_mut().unwrap().remove("name");
        assert!(parse(v).unwrap_err().to_string().contains("\"name\""));
    }

    #[test]
    fn versions_and_garbage() {
        let e = parse(json!({"cniVersion": "2.0.0", "name": "n"})).unwrap_err();
        assert_eq!(e.code(), 1);
        assert_eq!(NetConf::parse(b"not json").unwrap_err().code(), 6);
        assert_eq!(NetConf::parse(b"[1]").unwrap_err().code(), 6);
        assert_eq!(
            NetConf::version_hint(br#"{"cniVersion":"0.4.0"}"#).as_deref(),
            Some("0.4.0")
        );
    }
}
