//! A small network-namespace lab for the plugin's tests and bench: a "node"
//! namespace holding a veth whose MAC is the ENI's (its other end in a
//! "vswitch" namespace that holds the subnet's gateway), pod namespaces made
//! the way a runtime makes them, the fake apiserver, and the built binary run
//! the way a runtime runs it. Every namespace and link name starts with a
//! per-lab prefix; dropping the lab removes all of it.

#![allow(dead_code)]

use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::PostParams;
use kube::{Api, Client};
use mocks::kubeapi::{FakeApiServer, Options};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU32, Ordering};

pub const BIN: &str = env!("CARGO_BIN_EXE_vpc-eni-cni");

/// The plugin binary the lab runs: `VPC_ENI_CNI_BENCH_BIN` when set (the
/// bench measures the release build, e.g. the static one the image ships),
/// else the one cargo built for these tests.
pub fn plugin_binary() -> String {
    std::env::var("VPC_ENI_CNI_BENCH_BIN")
        .ok()
        .filter(|p| !p.is_empty())
        .unwrap_or_else(|| BIN.to_owned())
}
pub const CNI_DIR: &str = "/usr/lib/cni";

pub const SUBNET: &str = "10.0.0.0/24";
pub const GATEWAY: &str = "10.0.0.253";
pub const SERVICE_CIDR: &str = "10.96.0.0/12";
/// An address of the Service CIDR held by the node (as kube-proxy's rules
/// would answer for a ClusterIP).
pub const SERVICE_IP: &str = "10.96.0.10";
pub const NODE: &str = "node-a";
pub const POD_CIDR: &str = "10.244.7.0/24";

static SEQ: AtomicU32 = AtomicU32::new(0);

/// Why the namespace tests cannot run here, if they cannot.
pub fn skip_reason() -> Option<String> {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let root = status
        .lines()
        .find(|l| l.starts_with("Uid:"))
        .and_then(|l| l.split_whitespace().nth(2))
        == Some("0");
    if !root {
        return Some("not root".into());
    }
    let ok = std::process::Command::new("ip")
        .args(["netns", "list"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !ok {
        return Some("`ip netns` is unavailable".into());
    }
    None
}

/// Skip the calling test with a one-line reason.
#[macro_export]
macro_rules! skip_unless_lab {
    () => {
        if let Some(why) = support::skip_reason() {
            eprintln!("skipped: {why}");
            return;
        }
    };
}

pub fn has_ping() -> bool {
    std::process::Command::new("ping")
        .arg("-V")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}

pub fn has_reference_plugins() -> bool {
    ["ptp", "host-local"]
        .iter()
        .all(|p| Path::new(CNI_DIR).join(p).exists())
}

/// Run a command; panics with its output when it fails.
pub fn sh(args: &[&str]) -> String {
    let out = std::process::Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("{args:?}: {e}"));
    assert!(
        out.status.success(),
        "{args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Run a command, ignoring failure.
pub fn sh_quiet(args: &[&str]) -> bool {
    std::process::Command::new(args[0])
        .args(&args[1..])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// What one plugin run printed.
#[derive(Debug)]
pub struct Run {
    pub ok: bool,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {self:?}"))
    }
}

/// One lab; dropping it deletes its namespaces and files.
pub struct Lab {
    pub prefix: String,
    pub node_ns: String,
    pub vsw_ns: String,
    /// The ENI's link in the node namespace, and its MAC.
    pub eni_link: String,
    pub eni_mac: String,
    pub dir: PathBuf,
    pub kubeconfig: PathBuf,
    pub server: FakeApiServer,
    pub client: Client,
    pods: Vec<String>,
}

impl Lab {
    pub async fn new() -> Lab {
        let n = SEQ.fetch_add(1, Ordering::SeqCst);
        let pid = std::process::id() % 1000;
        let prefix = format!("vcn{pid}-{n}");
        let dir = std::env::temp_dir().join(format!("{prefix}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("lab dir");
        let server = FakeApiServer::start(Options::without_controllers())
            .await
            .expect("fake apiserver");
        let kubeconfig = dir.join("kubeconfig");
        std::fs::write(&kubeconfig, server.kubeconfig_yaml()).expect("kubeconfig");
        let client = Client::try_from(server.client_config()).expect("client");
        let mut lab = Lab {
            node_ns: format!("{prefix}-node"),
            vsw_ns: format!("{prefix}-vsw"),
            eni_link: format!("{prefix}e"),
            eni_mac: format!("02:00:5e:{:02x}:{:02x}:07", pid % 256, n % 256),
            prefix,
            dir,
            kubeconfig,
            server,
            client,
            pods: Vec::new(),
        };
        lab.build_network();
        lab
    }

    fn build_network(&mut self) {
        for ns in [&self.node_ns, &self.vsw_ns] {
            sh(&["ip", "netns", "add", ns]);
            sh(&["ip", "-n", ns, "link", "set", "lo", "up"]);
        }
        let peer = format!("{}g", self.prefix);
        sh(&[
            "ip",
            "-n",
            &self.node_ns,
            "link",
            "add",
            &self.eni_link,
            "address",
            &self.eni_mac,
            "type",
            "veth",
            "peer",
            "name",
            &peer,
            "netns",
            &self.vsw_ns,
        ]);
        sh(&[
            "ip",
            "-n",
            &self.vsw_ns,
            "addr",
            "add",
            &format!("{GATEWAY}/24"),
            "dev",
            &peer,
        ]);
        sh(&["ip", "-n", &self.vsw_ns, "link", "set", &peer, "up"]);
        // What the node answers for as a ClusterIP.
        sh(&[
            "ip",
            "-n",
            &self.node_ns,
            "addr",
            "add",
            &format!("{SERVICE_IP}/32"),
            "dev",
            "lo",
        ]);
    }

    pub fn netns_path(ns: &str) -> String {
        format!("/run/netns/{ns}")
    }

    /// A pod namespace, made as a runtime makes one (lo up).
    pub fn pod_ns(&mut self, name: &str) -> String {
        let ns = format!("{}-{name}", self.prefix);
        sh(&["ip", "netns", "add", &ns]);
        sh(&["ip", "-n", &ns, "link", "set", "lo", "up"]);
        self.pods.push(ns.clone());
        ns
    }

    /// The ENI allocation annotation for the lab's ENI.
    pub fn allocation(&self) -> Value {
        json!({
            "eniId": format!("eni-{}", self.prefix),
            "mac": self.eni_mac,
            "ip": "10.0.0.7",
            "subnetId": "vsw-lab",
            "subnetCidr": SUBNET,
            "gateway": GATEWAY,
            "node": NODE,
        })
    }

    pub async fn create_node(&self, pod_cidr: Option<&str>) {
        let mut spec = json!({});
        if let Some(c) = pod_cidr {
            spec["podCIDR"] = json!(c);
        }
        let node: Node = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Node",
            "metadata": {"name": NODE},
            "spec": spec,
        }))
        .expect("node");
        Api::<Node>::all(self.client.clone())
            .create(&PostParams::default(), &node)
            .await
            .expect("create node");
    }

    /// Create a pod on the lab's node; `eni` makes it ask for `aliyun/eni`,
    /// `allocation` puts the annotation on it. Returns its uid.
    pub async fn create_pod(&self, name: &str, eni: bool, allocation: Option<&Value>) -> String {
        let mut meta = json!({"name": name, "namespace": "default"});
        if let Some(a) = allocation {
            meta["annotations"] = json!({"vpc-eni.io/allocation": a.to_string()});
        }
        let mut container = json!({"name": "app", "image": "app:1"});
        if eni {
            container["resources"] =
                json!({"limits": {"aliyun/eni": "1"}, "requests": {"aliyun/eni": "1"}});
        }
        let pod: Pod = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": meta,
            "spec": {"nodeName": NODE, "containers": [container]},
        }))
        .expect("pod");
        let made = Api::<Pod>::namespaced(self.client.clone(), "default")
            .create(&PostParams::default(), &pod)
            .await
            .expect("create pod");
        made.metadata.uid.unwrap_or_default()
    }

    /// The network config a node would have, with a per-lab name, state
    /// dir and host-local data dir.
    pub fn config(&self, timeout_s: f64) -> Value {
        json!({
            "cniVersion": "1.0.0",
            "name": self.prefix,
            "type": "vpc-eni-cni",
            "kubeconfig": self.kubeconfig,
            "allocationTimeoutSeconds": timeout_s,
            "mtu": 1500,
            "serviceCidr": SERVICE_CIDR,
            "stateDir": self.dir.join("state"),
            "delegate": {"type": "ptp", "ipam": {
                "type": "host-local",
                "dataDir": self.dir.join("ipam"),
                "ranges": [[{"subnet": "usePodCidr"}]],
                "routes": [{"dst": "0.0.0.0/0"}],
            }},
        })
    }

    /// Run the binary as a runtime would.
    pub async fn cni(
        &self,
        command: &str,
        container_id: &str,
        pod_ns: Option<&str>,
        pod: &str,
        uid: Option<&str>,
        config: &Value,
    ) -> Run {
        let mut args = format!(
            "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME={pod};K8S_POD_INFRA_CONTAINER_ID={container_id}"
        );
        if let Some(u) = uid {
            args.push_str(&format!(";K8S_POD_UID={u}"));
        }
        let mut cmd = tokio::process::Command::new(plugin_binary());
        cmd.env("CNI_COMMAND", command)
            .env("CNI_CONTAINERID", container_id)
            .env("CNI_IFNAME", "eth0")
            .env("CNI_PATH", CNI_DIR)
            .env("CNI_ARGS", args)
            .env("VPC_ENI_CNI_HOST_NETNS", Self::netns_path(&self.node_ns))
            .env("VPC_ENI_CNI_LOG", "info")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        match pod_ns {
            Some(ns) => cmd.env("CNI_NETNS", Self::netns_path(ns)),
            None => cmd.env_remove("CNI_NETNS"),
        };
        let mut child = cmd.spawn().expect("spawn plugin");
        let stdin = config.to_string();
        if let Some(mut pipe) = child.stdin.take() {
            use tokio::io::AsyncWriteExt;
            pipe.write_all(stdin.as_bytes()).await.expect("stdin");
        }
        let out = tokio::time::timeout(
            std::time::Duration::from_secs(120),
            child.wait_with_output(),
        )
        .await
        .expect("plugin hung")
        .expect("plugin output");
        Run {
            ok: out.status.success(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// `ip -j ... ` in a namespace, parsed.
    pub fn ip_json(ns: &str, args: &[&str]) -> Value {
        let mut full = vec!["ip", "-j", "-n", ns];
        full.extend_from_slice(args);
        let out = sh(&full);
        serde_json::from_str(out.trim()).unwrap_or(Value::Array(vec![]))
    }

    /// The link named `name` in `ns`, as `ip -j -d link show` prints it.
    pub fn link(ns: &str, name: &str) -> Option<Value> {
        let all = Self::ip_json(ns, &["-d", "link", "show"]);
        all.as_array()?
            .iter()
            .find(|l| l["ifname"] == name)
            .cloned()
    }

    pub fn link_names(ns: &str) -> Vec<String> {
        Self::ip_json(ns, &["link", "show"])
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|l| l["ifname"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// `addr/prefix` strings of the IPv4 addresses on `dev` in `ns`.
    pub fn addrs(ns: &str, dev: &str) -> Vec<String> {
        let v = Self::ip_json(ns, &["-4", "addr", "show", "dev", dev]);
        v.as_array()
            .into_iter()
            .flatten()
            .flat_map(|l| l["addr_info"].as_array().cloned().unwrap_or_default())
            .filter_map(|a| Some(format!("{}/{}", a["local"].as_str()?, a["prefixlen"])))
            .collect()
    }

    pub fn routes(ns: &str) -> Value {
        Self::ip_json(ns, &["-4", "route", "show"])
    }

    /// One ping, bounded.
    pub fn ping(ns: &str, ip: &str) -> bool {
        sh_quiet(&["ip", "netns", "exec", ns, "ping", "-c", "1", "-W", "1", ip])
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for ns in self.pods.iter().chain([&self.node_ns, &self.vsw_ns]) {
            sh_quiet(&["ip", "netns", "del", ns]);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
