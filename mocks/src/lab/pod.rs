//! Pods as a container runtime sees them: a pod sandbox's network namespace
//! (pinned under `/var/run/netns`, loopback up), and a CNI plugin run the way
//! containerd runs one: `CNI_*` variables on top of the runtime's own
//! environment, `K8S_POD_*` in `CNI_ARGS`, the network configuration on
//! stdin, the result or error JSON on stdout.
//!
//! The plugin runs in the host namespace (so it reaches a fake apiserver on
//! 127.0.0.1) and learns from `VPC_ENI_CNI_HOST_NETNS` which namespace plays
//! the node; everything it does to links must happen in that namespace and
//! the pod's.

use super::netns::Netns;
use super::LabError;
use ipam::ids::InstanceId;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;
use tokio::io::AsyncWriteExt;

/// The variable telling `vpc-eni-cni` which namespace is the node's.
pub const HOST_NETNS_ENV: &str = "VPC_ENI_CNI_HOST_NETNS";
/// Where Debian's `containernetworking-plugins` puts the reference plugins.
pub const REFERENCE_PLUGINS: &str = "/usr/lib/cni";

/// A CNI operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CniCommand {
    Add,
    Del,
    Check,
    Version,
    /// Spec 1.1.0: the network config lists the live attachments
    /// (`cni.dev/valid-attachments`); no container is named.
    Gc,
}

impl CniCommand {
    pub fn as_str(self) -> &'static str {
        match self {
            CniCommand::Add => "ADD",
            CniCommand::Del => "DEL",
            CniCommand::Check => "CHECK",
            CniCommand::Version => "VERSION",
            CniCommand::Gc => "GC",
        }
    }
}

/// The pod a call is for, as the kubelet names it in `CNI_ARGS`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodRef {
    pub namespace: String,
    pub name: String,
    pub uid: String,
}

/// One call of a CNI plugin. [`CniCall::new`] fills in what a runtime would.
#[derive(Clone, Debug)]
pub struct CniCall {
    /// The plugin binary.
    pub binary: PathBuf,
    pub command: CniCommand,
    /// `CNI_CONTAINERID`: the sandbox id (64 hex digits from containerd).
    pub container_id: String,
    /// `CNI_NETNS`: the pod's namespace.
    pub netns: Netns,
    /// `CNI_IFNAME`.
    pub ifname: String,
    pub pod: PodRef,
    /// The instance whose node namespace is the plugin's host
    /// (`VPC_ENI_CNI_HOST_NETNS`).
    pub node: InstanceId,
    /// The plugin's network configuration, as written to stdin (see
    /// [`plugin_config`] for one plugin out of a conflist).
    pub config: Value,
    /// More environment (e.g. `RUST_LOG`), set last.
    pub env: Vec<(String, String)>,
    /// More directories for `CNI_PATH`, after the binary's own directory and
    /// before [`REFERENCE_PLUGINS`].
    pub cni_path: Vec<PathBuf>,
    /// The plugin is killed after this long.
    pub timeout: Duration,
}

impl CniCall {
    /// A call as containerd makes it for `pod` in `netns`: interface `eth0`,
    /// a container id derived from the pod uid, a 60 s limit.
    pub fn new(
        binary: impl Into<PathBuf>,
        command: CniCommand,
        netns: &Netns,
        node: &InstanceId,
        pod: PodRef,
        config: Value,
    ) -> CniCall {
        let hex: String = pod
            .uid
            .chars()
            .filter(char::is_ascii_hexdigit)
            .collect::<String>()
            .to_ascii_lowercase();
        let container_id = format!("{hex:0<64}").chars().take(64).collect();
        CniCall {
            binary: binary.into(),
            command,
            container_id,
            netns: netns.clone(),
            ifname: "eth0".into(),
            pod,
            node: node.clone(),
            config,
            env: Vec::new(),
            cni_path: Vec::new(),
            timeout: Duration::from_secs(60),
        }
    }

    /// `CNI_ARGS` as containerd writes it for a Kubernetes pod.
    pub fn cni_args(&self) -> String {
        format!(
            "IgnoreUnknown=1;K8S_POD_NAMESPACE={};K8S_POD_NAME={};K8S_POD_INFRA_CONTAINER_ID={};K8S_POD_UID={}",
            self.pod.namespace, self.pod.name, self.container_id, self.pod.uid
        )
    }

    /// `CNI_PATH`: the binary's directory, the extra ones, the reference
    /// plugins (for delegation).
    pub fn cni_path(&self) -> String {
        let mut dirs: Vec<PathBuf> = Vec::new();
        if let Some(dir) = self.binary.parent().filter(|d| !d.as_os_str().is_empty()) {
            dirs.push(dir.to_path_buf());
        }
        dirs.extend(self.cni_path.iter().cloned());
        dirs.push(PathBuf::from(REFERENCE_PLUGINS));
        dirs.iter()
            .map(|d| d.display().to_string())
            .collect::<Vec<_>>()
            .join(":")
    }
}

/// One plugin's configuration out of a conflist, as libcni builds it: the
/// list's `name` and `cniVersion` added, and the previous result for a
/// chained plugin (or a DEL/CHECK) if there is one.
pub fn plugin_config(
    conflist: &Value,
    index: usize,
    prev_result: Option<&Value>,
) -> Result<Value, LabError> {
    let plugin = conflist
        .get("plugins")
        .and_then(|p| p.get(index))
        .and_then(Value::as_object)
        .ok_or_else(|| LabError::Invalid(format!("conflist has no plugins[{index}]")))?;
    let mut out = plugin.clone();
    for key in ["name", "cniVersion"] {
        if let Some(v) = conflist.get(key) {
            out.insert(key.into(), v.clone());
        }
    }
    if let Some(prev) = prev_result {
        out.insert("prevResult".into(), prev.clone());
    }
    Ok(Value::Object(out))
}

/// How a plugin call ended.
#[derive(Clone, Debug)]
pub struct CniOutcome {
    /// The exit code (`None`: killed by a signal).
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl CniOutcome {
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }

    /// stdout as JSON: the result on success, `{cniVersion, code, msg,
    /// details}` on error.
    pub fn json(&self) -> Result<Value, LabError> {
        serde_json::from_str(&self.stdout).map_err(|e| {
            LabError::Parse(format!(
                "plugin stdout is not JSON ({e}): {:?}",
                self.stdout
            ))
        })
    }
}

/// Run `call` with the node namespace `host`.
pub(crate) async fn run(call: &CniCall, host: &Netns) -> Result<CniOutcome, LabError> {
    let mut cmd = tokio::process::Command::new(&call.binary);
    cmd.env("CNI_COMMAND", call.command.as_str())
        .env("CNI_PATH", call.cni_path())
        .env(HOST_NETNS_ENV, host.path());
    if !matches!(call.command, CniCommand::Version | CniCommand::Gc) {
        cmd.env("CNI_CONTAINERID", &call.container_id)
            .env("CNI_NETNS", call.netns.path())
            .env("CNI_IFNAME", &call.ifname)
            .env("CNI_ARGS", call.cni_args());
    }
    for (k, v) in &call.env {
        cmd.env(k, v);
    }
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let what = format!("{} {}", call.binary.display(), call.command.as_str());
    let mut child = cmd.spawn().map_err(|e| LabError::Command {
        command: what.clone(),
        message: e.to_string(),
    })?;
    let stdin = serde_json::to_vec(&call.config)
        .map_err(|e| LabError::Invalid(format!("CNI config: {e}")))?;
    if let Some(mut pipe) = child.stdin.take() {
        // A plugin that exits without reading its stdin is its own business.
        let _ = pipe.write_all(&stdin).await;
    }
    let out = tokio::time::timeout(call.timeout, child.wait_with_output())
        .await
        .map_err(|_| LabError::Timeout(format!("{what} after {:?}", call.timeout)))??;
    Ok(CniOutcome {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    })
}

/// Whether `path` names an executable file.
pub(crate) fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn call() -> CniCall {
        CniCall::new(
            "/opt/x/vpc-eni-cni",
            CniCommand::Add,
            &Netns::new("lab1-pod-a"),
            &InstanceId::new("i-1"),
            PodRef {
                namespace: "default".into(),
                name: "web-0".into(),
                uid: "0f6c3a5e-7b1d-4c1e-9d1a-3f0e2b9a8c7d".into(),
            },
            json!({}),
        )
    }

    #[test]
    fn the_call_carries_what_containerd_passes() {
        let c = call();
        assert_eq!(c.container_id.len(), 64);
        assert!(c.container_id.starts_with("0f6c3a5e7b1d"));
        assert_eq!(
            c.cni_args(),
            format!(
                "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web-0;K8S_POD_INFRA_CONTAINER_ID={};K8S_POD_UID=0f6c3a5e-7b1d-4c1e-9d1a-3f0e2b9a8c7d",
                c.container_id
            )
        );
        assert_eq!(c.cni_path(), "/opt/x:/usr/lib/cni");
        assert_eq!(c.netns.path(), Path::new("/var/run/netns/lab1-pod-a"));
    }

    #[test]
    fn a_plugin_config_is_cut_from_the_conflist_as_libcni_does() {
        let list = json!({"cniVersion": "1.0.0", "name": "vpc-eni",
            "plugins": [{"type": "vpc-eni-cni", "mtu": 1500}, {"type": "portmap"}]});
        let prev = json!({"cniVersion": "1.0.0", "ips": []});
        let c = plugin_config(&list, 0, Some(&prev)).unwrap();
        assert_eq!(
            c,
            json!({"type": "vpc-eni-cni", "mtu": 1500, "name": "vpc-eni",
                "cniVersion": "1.0.0", "prevResult": prev})
        );
        assert!(plugin_config(&list, 2, None).is_err());
    }
}
