//! The CNI specification's plumbing: the `CNI_*` environment a runtime sets,
//! `CNI_ARGS`, and the JSON shapes of results, errors and the VERSION answer
//! (spec 1.0.0, with STATUS and GC from 1.1.0). Nothing here touches the
//! network or kube.

use crate::error::PluginError;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;

/// The spec versions this plugin answers to, oldest first. Results of a
/// `0.x` version carry `"version": "4"` in each IP, as those versions ask.
pub const SUPPORTED_VERSIONS: &[&str] = &["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"];

/// The version used in an error when the config's own version is unknown.
pub const FALLBACK_VERSION: &str = "1.0.0";

/// The well-known error codes of the spec, and this plugin's own (100+).
pub mod code {
    pub const INCOMPATIBLE_VERSION: u32 = 1;
    pub const UNSUPPORTED_FIELD: u32 = 2;
    pub const INVALID_ENV: u32 = 4;
    pub const IO_FAILURE: u32 = 5;
    pub const DECODE_FAILURE: u32 = 6;
    pub const INVALID_CONFIG: u32 = 7;
    pub const TRY_AGAIN_LATER: u32 = 11;
    pub const NOT_AVAILABLE: u32 = 50;
    pub const POD_NOT_FOUND: u32 = 100;
    pub const POD_UID_MISMATCH: u32 = 101;
    pub const INTERFACE_CONFLICT: u32 = 102;
    pub const CHECK_FAILED: u32 = 103;
}

/// `CNI_COMMAND`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Command {
    Add,
    Del,
    Check,
    Version,
    Status,
    Gc,
}

impl Command {
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "ADD" => Command::Add,
            "DEL" => Command::Del,
            "CHECK" => Command::Check,
            "VERSION" => Command::Version,
            "STATUS" => Command::Status,
            "GC" => Command::Gc,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Command::Add => "ADD",
            Command::Del => "DEL",
            Command::Check => "CHECK",
            Command::Version => "VERSION",
            Command::Status => "STATUS",
            Command::Gc => "GC",
        }
    }
}

/// `CNI_ARGS`: `KEY=VALUE` pairs separated by `;`. Kubernetes runtimes pass
/// `K8S_POD_NAMESPACE`, `K8S_POD_NAME`, `K8S_POD_INFRA_CONTAINER_ID`,
/// `K8S_POD_UID` and `IgnoreUnknown=1`; keys this plugin does not know are
/// ignored.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CniArgs {
    pairs: BTreeMap<String, String>,
}

impl CniArgs {
    /// Parse; an item without `=` or with an empty key is an error naming it.
    pub fn parse(raw: &str) -> Result<Self, PluginError> {
        let mut pairs = BTreeMap::new();
        for item in raw.split(';').map(str::trim).filter(|s| !s.is_empty()) {
            match item.split_once('=') {
                Some((k, v)) if !k.trim().is_empty() => {
                    pairs.insert(k.trim().to_owned(), v.trim().to_owned());
                }
                _ => {
                    return Err(PluginError::InvalidEnv {
                        var: "CNI_ARGS",
                        reason: format!("{item:?} is not KEY=VALUE"),
                    })
                }
            }
        }
        Ok(CniArgs { pairs })
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.pairs
            .get(key)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }

    pub fn pod_namespace(&self) -> Option<&str> {
        self.get("K8S_POD_NAMESPACE")
    }

    pub fn pod_name(&self) -> Option<&str> {
        self.get("K8S_POD_NAME")
    }

    pub fn pod_uid(&self) -> Option<&str> {
        self.get("K8S_POD_UID")
    }
}

/// What the runtime said through the environment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Invocation {
    pub command: Command,
    /// `CNI_CONTAINERID` (ADD, DEL, CHECK).
    pub container_id: String,
    /// `CNI_NETNS` (ADD and CHECK; DEL may go without).
    pub netns: Option<PathBuf>,
    /// `CNI_IFNAME` (ADD, DEL, CHECK).
    pub ifname: String,
    /// `CNI_PATH`, split on `:`.
    pub path: Vec<PathBuf>,
    pub args: CniArgs,
}

impl Invocation {
    /// Read the `CNI_*` variables through `var` (the process environment in
    /// the binary, a map in tests). Each missing or malformed variable is an
    /// error (code 4) naming it.
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Result<Self, PluginError> {
        let raw = var("CNI_COMMAND").ok_or(PluginError::InvalidEnv {
            var: "CNI_COMMAND",
            reason: "not set".into(),
        })?;
        let command = Command::parse(&raw).ok_or_else(|| PluginError::InvalidEnv {
            var: "CNI_COMMAND",
            reason: format!("{raw:?} is not one of ADD, DEL, CHECK, VERSION, STATUS, GC"),
        })?;
        let path = var("CNI_PATH")
            .map(|p| {
                p.split(':')
                    .filter(|s| !s.is_empty())
                    .map(PathBuf::from)
                    .collect()
            })
            .unwrap_or_default();
        let args = CniArgs::parse(&var("CNI_ARGS").unwrap_or_default())?;
        let mut inv = Invocation {
            command,
            container_id: String::new(),
            netns: var("CNI_NETNS")
                .filter(|s| !s.is_empty())
                .map(PathBuf::from),
            ifname: String::new(),
            path,
            args,
        };
        if matches!(command, Command::Add | Command::Del | Command::Check) {
            let required = |name: &'static str| {
                var(name)
                    .filter(|s| !s.is_empty())
                    .ok_or(PluginError::InvalidEnv {
                        var: name,
                        reason: "not set".into(),
                    })
            };
            inv.container_id = required("CNI_CONTAINERID")?;
            check_container_id(&inv.container_id)?;
            inv.ifname = required("CNI_IFNAME")?;
            check_ifname(&inv.ifname)?;
            if command != Command::Del && inv.netns.is_none() {
                return Err(PluginError::InvalidEnv {
                    var: "CNI_NETNS",
                    reason: "not set".into(),
                });
            }
        }
        Ok(inv)
    }
}

/// The spec: a container id is non-empty, alphanumeric plus `_`, `.`, `-`.
fn check_container_id(id: &str) -> Result<(), PluginError> {
    let ok = id
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if ok {
        Ok(())
    } else {
        Err(PluginError::InvalidEnv {
            var: "CNI_CONTAINERID",
            reason: format!("{id:?} may hold only letters, digits, '_', '.' and '-'"),
        })
    }
}

/// The spec: at most 15 characters, not `.` or `..`, no `/`, `:` or space.
fn check_ifname(name: &str) -> Result<(), PluginError> {
    let bad = name.len() > 15
        || name == "."
        || name == ".."
        || name
            .chars()
            .any(|c| c == '/' || c == ':' || c.is_whitespace());
    if bad {
        Err(PluginError::InvalidEnv {
            var: "CNI_IFNAME",
            reason: format!("{name:?} is not a valid interface name"),
        })
    } else {
        Ok(())
    }
}

/// One interface of a result.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Interface {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
    /// The netns path for an interface inside the container; absent on the host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandbox: Option<String>,
}

/// One IP of a result.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpConfig {
    /// Only in results of versions before 1.0.0 (`"4"` or `"6"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// CIDR notation: the address with the subnet's prefix length.
    pub address: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<String>,
    /// Index into `interfaces`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<usize>,
}

/// One route of a result.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Route {
    pub dst: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gw: Option<String>,
}

/// DNS of a result; this plugin sets none, as the reference plugins do with
/// no DNS config, and prints `{}`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dns {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nameservers: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub search: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<String>,
}

/// ADD's success result.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SuccessResult {
    pub cni_version: String,
    pub interfaces: Vec<Interface>,
    pub ips: Vec<IpConfig>,
    pub routes: Vec<Route>,
    pub dns: Dns,
}

impl SuccessResult {
    /// Shape the result for the requested version: before 1.0.0 each IP
    /// carries its family as `version`.
    pub fn for_version(mut self, cni_version: &str) -> Self {
        let old = cni_version.starts_with("0.");
        for ip in &mut self.ips {
            ip.version = if old {
                Some(if ip.address.contains(':') { "6" } else { "4" }.to_owned())
            } else {
                None
            };
        }
        self.cni_version = cni_version.to_owned();
        self
    }
}

/// The error object printed on stdout with a non-zero exit.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ErrorResult {
    pub cni_version: String,
    pub code: u32,
    pub msg: String,
    pub details: String,
}

/// VERSION's answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VersionResult {
    pub cni_version: String,
    pub supported_versions: Vec<String>,
}

impl VersionResult {
    /// Echo the caller's version when this plugin speaks it, else name the
    /// newest this plugin speaks; list every supported version.
    pub fn answering(requested: Option<&str>) -> Self {
        let cni_version = match requested {
            Some(v) if SUPPORTED_VERSIONS.contains(&v) => v.to_owned(),
            _ => SUPPORTED_VERSIONS
                .last()
                .copied()
                .unwrap_or(FALLBACK_VERSION)
                .to_owned(),
        };
        VersionResult {
            cni_version,
            supported_versions: SUPPORTED_VERSIONS.iter().map(|s| (*s).to_owned()).collect(),
        }
    }
}

/// Does `version` know the command? CHECK came with 0.4.0, STATUS and GC
/// with 1.1.0.
pub fn version_knows(version: &str, command: Command) -> bool {
    let rank = |v: &str| SUPPORTED_VERSIONS.iter().position(|s| *s == v);
    let (Some(have), Some(need)) = (
        rank(version),
        rank(match command {
            Command::Check => "0.4.0",
            Command::Status | Command::Gc => "1.1.0",
            _ => "0.3.0",
        }),
    ) else {
        return false;
    };
    have >= need
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn vars(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: BTreeMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        move |k| map.get(k).cloned()
    }

    const K8S: &str = "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web-0;K8S_POD_INFRA_CONTAINER_ID=abc;K8S_POD_UID=1234-5678";

    #[test]
    fn cni_args_as_kubelet_passes_them() {
        let a = CniArgs::parse(K8S).unwrap();
        assert_eq!(a.pod_namespace(), Some("default"));
        assert_eq!(a.pod_name(), Some("web-0"));
        assert_eq!(a.pod_uid(), Some("1234-5678"));
        assert_eq!(a.get("IgnoreUnknown"), Some("1"));
        assert_eq!(a.get("NOPE"), None);
    }

    #[test]
    fn cni_args_edge_cases() {
        assert_eq!(CniArgs::parse("").unwrap(), CniArgs::default());
        // A trailing separator and an empty value are fine; an empty value
        // reads as absent.
        let a = CniArgs::parse("K8S_POD_NAME=a;K8S_POD_UID=;").unwrap();
        assert_eq!(a.pod_name(), Some("a"));
        assert_eq!(a.pod_uid(), None);
        // A value may itself hold '='.
        let a = CniArgs::parse("X=a=b").unwrap();
        assert_eq!(a.get("X"), Some("a=b"));
        for bad in ["K8S_POD_NAME", "=v", "A=1;junk"] {
            let e = CniArgs::parse(bad).unwrap_err();
            assert_eq!(e.code(), code::INVALID_ENV, "{bad}");
            assert!(e.to_string().contains("CNI_ARGS"), "{e}");
        }
    }

    #[test]
    fn invocation_reads_every_variable() {
        let inv = Invocation::from_vars(vars(&[
            ("CNI_COMMAND", "ADD"),
            ("CNI_CONTAINERID", "c0ffee_1.2-x"),
            ("CNI_NETNS", "/var/run/netns/p"),
            ("CNI_IFNAME", "eth0"),
            ("CNI_PATH", "/opt/cni/bin::/usr/lib/cni"),
            ("CNI_ARGS", K8S),
        ]))
        .unwrap();
        assert_eq!(inv.command, Command::Add);
        assert_eq!(inv.container_id, "c0ffee_1.2-x");
        assert_eq!(inv.netns, Some(PathBuf::from("/var/run/netns/p")));
        assert_eq!(inv.ifname, "eth0");
        assert_eq!(
            inv.path,
            [PathBuf::from("/opt/cni/bin"), PathBuf::from("/usr/lib/cni")]
        );
        assert_eq!(inv.args.pod_name(), Some("web-0"));
    }

    #[test]
    fn invocation_names_the_bad_variable() {
        let base = [
            ("CNI_COMMAND", "ADD"),
            ("CNI_CONTAINERID", "c1"),
            ("CNI_NETNS", "/n"),
            ("CNI_IFNAME", "eth0"),
        ];
        let with = |k: &str, v: Option<&str>| {
            let mut p: Vec<(&str, &str)> = base.iter().copied().filter(|(b, _)| *b != k).collect();
            if let Some(v) = v {
                p.push((k, v));
            }
            Invocation::from_vars(vars(&p))
        };
        for (var, value) in [
            ("CNI_COMMAND", None),
            ("CNI_COMMAND", Some("ATTACH")),
            ("CNI_CONTAINERID", None),
            ("CNI_CONTAINERID", Some("a/b")),
            ("CNI_IFNAME", None),
            ("CNI_IFNAME", Some("a-very-long-interface")),
            ("CNI_IFNAME", Some("eth:0")),
            ("CNI_NETNS", None),
        ] {
            let e = with(var, value).unwrap_err();
            assert_eq!(e.code(), code::INVALID_ENV, "{var}={value:?}");
            assert!(e.to_string().contains(var), "{var}: {e}");
        }
        // DEL may come without a netns; VERSION needs none of them.
        let del = Invocation::from_vars(vars(&[
            ("CNI_COMMAND", "DEL"),
            ("CNI_CONTAINERID", "c1"),
            ("CNI_IFNAME", "eth0"),
        ]))
        .unwrap();
        assert_eq!(del.netns, None);
        assert!(Invocation::from_vars(vars(&[("CNI_COMMAND", "VERSION")])).is_ok());
    }

    #[test]
    fn success_result_is_the_spec_shape() {
        let r = SuccessResult {
            cni_version: String::new(),
            interfaces: vec![Interface {
                name: "eth0".into(),
                mac: Some("00:16:3e:00:00:01".into()),
                sandbox: Some("/var/run/netns/p".into()),
            }],
            ips: vec![IpConfig {
                version: None,
                address: "10.0.0.7/24".into(),
                gateway: Some("10.0.0.253".into()),
                interface: Some(0),
            }],
            routes: vec![Route {
                dst: "0.0.0.0/0".into(),
                gw: Some("10.0.0.253".into()),
            }],
            dns: Dns::default(),
        };
        assert_eq!(
            serde_json::to_value(r.clone().for_version("1.0.0")).unwrap(),
            json!({
                "cniVersion": "1.0.0",
                "interfaces": [{"name": "eth0", "mac": "00:16:3e:00:00:01", "sandbox": "/var/run/netns/p"}],
                "ips": [{"address": "10.0.0.7/24", "gateway": "10.0.0.253", "interface": 0}],
                "routes": [{"dst": "0.0.0.0/0", "gw": "10.0.0.253"}],
                "dns": {}
            })
        );
        let old = serde_json::to_value(r.for_version("0.4.0")).unwrap();
        assert_eq!(old["cniVersion"], "0.4.0");
        assert_eq!(old["ips"][0]["version"], "4");
    }

    #[test]
    fn error_result_is_the_spec_shape() {
        let e = ErrorResult {
            cni_version: "1.0.0".into(),
            code: 11,
            msg: "try again later".into(),
            details: "why".into(),
        };
        assert_eq!(
            serde_json::to_value(e).unwrap(),
            json!({"cniVersion": "1.0.0", "code": 11, "msg": "try again later", "details": "why"})
        );
    }

    #[test]
    fn version_answer_lists_the_supported_versions() {
        let v = VersionResult::answering(Some("1.0.0"));
        assert_eq!(
            serde_json::to_value(v).unwrap(),
            json!({"cniVersion": "1.0.0", "supportedVersions": ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"]})
        );
        assert_eq!(VersionResult::answering(Some("9.9.9")).cni_version, "1.1.0");
        assert_eq!(VersionResult::answering(None).cni_version, "1.1.0");
    }

    #[test]
    fn commands_by_version() {
        assert!(version_knows("1.0.0", Command::Check));
        assert!(!version_knows("0.3.1", Command::Check));
        assert!(!version_knows("1.0.0", Command::Gc));
        assert!(version_knows("1.1.0", Command::Status));
        assert!(version_knows("0.3.0", Command::Add));
        assert!(!version_knows("2.0.0", Command::Add));
    }
}
