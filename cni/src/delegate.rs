//! Pods without an ENI go to the delegate plugin (`ptp`, `bridge`, ... with
//! `host-local` IPAM) as the spec's delegation has it: the binary named by
//! the delegate's `type`, found in `CNI_PATH`, run with the same `CNI_*`
//! environment and a network config on stdin, its result or error passed on.
//!
//! The delegate's config is the `delegate` object with every string
//! `"usePodCidr"` replaced by the node's podCIDR, plus `cniVersion` and
//! `name` (and `runtimeConfig`, `args`, `prevResult`) from the plugin's own.
//! The config given to ADD is kept in `stateDir/<container>-<ifname>.json`
//! so DEL releases the same address even when the pod or the API is gone.

use crate::error::PluginError;
use crate::netns::NetNs;
use crate::spec::Command;
use serde_json::{Map, Value};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Stdio;

/// The placeholder in the delegate's config.
pub const USE_POD_CIDR: &str = "usePodCidr";

/// Replace every string equal to `usePodCidr` (at any depth: `ranges`
/// nest two levels of arrays) by `pod_cidr`; returns how many were replaced.
pub fn replace_pod_cidr(v: &mut Value, pod_cidr: &str) -> usize {
    match v {
        Value::String(s) if s == USE_POD_CIDR => {
            *s = pod_cidr.to_owned();
            1
        }
        Value::Array(items) => items
            .iter_mut()
            .map(|i| replace_pod_cidr(i, pod_cidr))
            .sum(),
        Value::Object(map) => map
            .values_mut()
            .map(|i| replace_pod_cidr(i, pod_cidr))
            .sum(),
        _ => 0,
    }
}

/// Does the delegate's config use the placeholder at all?
pub fn uses_pod_cidr(delegate: &Map<String, Value>) -> bool {
    let mut probe = Value::Object(delegate.clone());
    replace_pod_cidr(&mut probe, "") > 0
}

/// The delegate's stdin: its own object, the placeholder replaced, with the
/// keys the spec says a plugin receives taken from ours where it lacks them.
pub fn delegate_config(
    delegate: &Map<String, Value>,
    ours: &Map<String, Value>,
    pod_cidr: Option<&str>,
    mtu: Option<u32>,
) -> Value {
    let mut out = delegate.clone();
    for key in ["cniVersion", "name", "runtimeConfig", "args", "prevResult"] {
        if let Some(v) = ours.get(key) {
            // The delegate speaks our version and is our network: those two
            // always follow ours.
            if matches!(key, "cniVersion" | "name") || !out.contains_key(key) {
                out.insert(key.to_owned(), v.clone());
            }
        }
    }
    if let Some(m) = mtu {
        out.entry("mtu").or_insert(Value::from(m));
    }
    let mut v = Value::Object(out);
    if let Some(c) = pod_cidr {
        replace_pod_cidr(&mut v, c);
    }
    v
}

/// The delegate's binary: the first executable file named `plugin` in `CNI_PATH`.
pub fn find_plugin(plugin: &str, path: &[PathBuf]) -> Result<PathBuf, PluginError> {
    use std::os::unix::fs::PermissionsExt;
    path.iter()
        .map(|dir| dir.join(plugin))
        .find(|p| {
            std::fs::metadata(p)
                .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
                .unwrap_or(false)
        })
        .ok_or_else(|| {
            PluginError::io(
                format!("delegate plugin {plugin}"),
                format!(
                    "not found in CNI_PATH ({})",
                    path.iter()
                        .map(|p| p.display().to_string())
                        .collect::<Vec<_>>()
                        .join(":")
                ),
            )
        })
}

/// Run the delegate for `command` with `config` on stdin, from inside
/// `host` (the child inherits the namespace of the thread that spawns it).
/// The environment is ours, with `CNI_COMMAND` set to `command`. A success
/// gives its stdout (ADD's result, or nothing); a failure its error object.
pub fn run(
    plugin: &str,
    binary: &Path,
    command: Command,
    config: &Value,
    host: &NetNs,
) -> Result<Option<Value>, PluginError> {
    run_with_env(plugin, binary, command, config, host, &[])
}

/// [`run`] with some variables overridden (GC names the attachment itself).
pub fn run_with_env(
    plugin: &str,
    binary: &Path,
    command: Command,
    config: &Value,
    host: &NetNs,
    env: &[(&str, &str)],
) -> Result<Option<Value>, PluginError> {
    let stdin =
        serde_json::to_vec(config).map_err(|e| PluginError::io("encode delegate config", e))?;
    let spawned = host.run(|| {
        std::process::Command::new(binary)
            .env("CNI_COMMAND", command.as_str())
            .envs(env.iter().copied())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
    })?;
    let mut child =
        spawned.map_err(|e| PluginError::io(format!("run delegate {}", binary.display()), e))?;
    if let Some(mut pipe) = child.stdin.take() {
        pipe.write_all(&stdin)
            .map_err(|e| PluginError::io(format!("write to delegate {plugin}"), e))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| PluginError::io(format!("wait for delegate {plugin}"), e))?;
    let parsed: Option<Value> = serde_json::from_slice(&out.stdout).ok();
    if out.status.success() {
        return Ok(parsed.filter(|v| !v.is_null()));
    }
    let stderr = String::from_utf8_lossy(&out.stderr).trim().to_owned();
    match parsed {
        Some(e) if e.get("code").and_then(Value::as_u64).is_some() => Err(PluginError::Delegate {
            plugin: plugin.to_owned(),
            code: e["code"]
                .as_u64()
                .and_then(|c| u32::try_from(c).ok())
                .unwrap_or(crate::spec::code::IO_FAILURE),
            msg: e
                .get("msg")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_owned(),
            details: e
                .get("details")
                .and_then(Value::as_str)
                .unwrap_or(&stderr)
                .to_owned(),
        }),
        _ => Err(PluginError::Delegate {
            plugin: plugin.to_owned(),
            code: crate::spec::code::IO_FAILURE,
            msg: format!("delegate plugin {plugin} failed ({})", out.status),
            details: format!(
                "stdout: {} stderr: {stderr}",
                String::from_utf8_lossy(&out.stdout).trim()
            ),
        }),
    }
}

/// Where the delegate config of one attachment is kept.
pub fn cache_path(state_dir: &Path, container_id: &str, ifname: &str) -> PathBuf {
    state_dir.join(format!("{container_id}-{ifname}.json"))
}

pub fn write_cache(path: &Path, config: &Value) -> Result<(), PluginError> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|e| PluginError::io(format!("create {}", dir.display()), e))?;
    }
    let tmp = path.with_extension("tmp");
    let bytes = serde_json::to_vec(config).map_err(|e| PluginError::io("encode cache", e))?;
    std::fs::write(&tmp, bytes)
        .and_then(|()| std::fs::rename(&tmp, path))
        .map_err(|e| PluginError::io(format!("write {}", path.display()), e))
}

pub fn read_cache(path: &Path) -> Option<Value> {
    serde_json::from_slice(&std::fs::read(path).ok()?).ok()
}

pub fn remove_cache(path: &Path) {
    if let Err(e) = std::fs::remove_file(path) {
        if e.kind() != std::io::ErrorKind::NotFound {
            tracing::warn!(path = %path.display(), error = %e, "cannot remove the delegate cache");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => unreachable!(),
        }
    }

    #[test]
    fn use_pod_cidr_is_replaced_in_nested_ranges() {
        let delegate = obj(json!({
            "type": "ptp",
            "ipam": {"type": "host-local", "ranges": [
                [{"subnet": "usePodCidr"}],
                [{"subnet": "fd00::/64"}, {"subnet": "usePodCidr", "gateway": "x"}]
            ], "routes": [{"dst": "0.0.0.0/0"}]}
        }));
        assert!(uses_pod_cidr(&delegate));
        let ours = obj(
            json!({"cniVersion": "1.0.0", "name": "vpc-eni", "type": "vpc-eni-cni",
            "runtimeConfig": {"portMappings": []}, "kubeconfig": "/k"}),
        );
        let c = delegate_config(&delegate, &ours, Some("10.244.1.0/24"), None);
        assert_eq!(
            c,
            json!({
                "cniVersion": "1.0.0", "name": "vpc-eni", "type": "ptp",
                "runtimeConfig": {"portMappings": []},
                "ipam": {"type": "host-local", "ranges": [
                    [{"subnet": "10.244.1.0/24"}],
                    [{"subnet": "fd00::/64"}, {"subnet": "10.244.1.0/24", "gateway": "x"}]
                ], "routes": [{"dst": "0.0.0.0/0"}]}
            })
        );
    }

    #[test]
    fn old_style_subnet_and_mtu() {
        let delegate = obj(json!({"type": "bridge", "mtu": 9000,
            "ipam": {"type": "host-local", "subnet": "usePodCidr"}}));
        let ours = obj(json!({"cniVersion": "0.4.0", "name": "n", "prevResult": {"ips": []}}));
        let c = delegate_config(&delegate, &ours, Some("10.244.9.0/24"), Some(1400));
        assert_eq!(c["ipam"]["subnet"], "10.244.9.0/24");
        // The delegate's own mtu wins over ours.
        assert_eq!(c["mtu"], 9000);
        assert_eq!(c["prevResult"], json!({"ips": []}));
        assert_eq!(c["cniVersion"], "0.4.0");
        let no_mtu = obj(json!({"type": "ptp"}));
        assert_eq!(
            delegate_config(&no_mtu, &ours, None, Some(1400))["mtu"],
            1400
        );
        assert!(!uses_pod_cidr(&no_mtu));
    }

    #[test]
    fn only_the_exact_placeholder_is_replaced() {
        let mut v = json!({"a": "usePodCidrX", "b": ["usePodCidr"], "usePodCidr": 1});
        assert_eq!(replace_pod_cidr(&mut v, "c"), 1);
        assert_eq!(v, json!({"a": "usePodCidrX", "b": ["c"], "usePodCidr": 1}));
    }

    #[test]
    fn cache_round_trip() {
        let dir = std::env::temp_dir().join(format!("vpc-eni-cni-unit-{}", std::process::id()));
        let p = cache_path(&dir, "c1", "eth0");
        assert!(p.ends_with("c1-eth0.json"));
        write_cache(&p, &json!({"x": 1})).unwrap();
        assert_eq!(read_cache(&p), Some(json!({"x": 1})));
        remove_cache(&p);
        remove_cache(&p);
        assert_eq!(read_cache(&p), None);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
