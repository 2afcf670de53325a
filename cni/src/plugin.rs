//! One invocation: read the environment and stdin, pick the path (exclusive
//! ENI, shared ENI or delegate) and run the command, and turn the outcome into what the
//! spec prints (a result, nothing, or an error object) and the exit status.

use crate::config::NetConf;
use crate::delegate;
use crate::eni::{self, Plumbing, Target};
use crate::error::PluginError;
use crate::kubeapi::{self, Kube, PodRef};
use crate::netlink::Netlink;
use crate::netns::NetNs;
use crate::shared::{self, Shared};
use crate::spec::{self, Command, Invocation, VersionResult, FALLBACK_VERSION};
use serde_json::{json, Value};
use std::collections::HashSet;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Lab and tests only: the namespace to treat as the node's ("the host"),
/// when the plugin runs in another (the lab's fake apiserver listens on the
/// real host's 127.0.0.1, the node is a network namespace). Kube I/O stays
/// in the namespace the plugin started in; every link change and the
/// delegate plugin happen in this one. Unset in production.
pub const HOST_NETNS_ENV: &str = "VPC_ENI_CNI_HOST_NETNS";

/// Stand-in podCIDR for a delegate DEL when neither the ADD's saved config
/// nor the node's podCIDR can be had (the pod is gone): `host-local`
/// releases by container id whatever its range says.
pub const DEL_PLACEHOLDER_CIDR: &str = "169.254.255.252/30";

/// The ENI's link may appear a moment after the attach the annotation
/// records; it is waited for at least this long.
const MIN_LINK_WAIT: Duration = Duration::from_secs(2);

/// What to print on stdout and how to exit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub stdout: String,
    pub exit_code: u8,
}

/// Run one invocation with the environment read through `var`.
pub fn execute(var: impl Fn(&str) -> Option<String>, stdin: &[u8]) -> Outcome {
    let hint = NetConf::version_hint(stdin);
    let error_version = hint
        .clone()
        .filter(|v| spec::SUPPORTED_VERSIONS.contains(&v.as_str()))
        .unwrap_or_else(|| FALLBACK_VERSION.to_owned());
    let fail = |e: PluginError| {
        tracing::warn!(code = e.code(), error = %e, "command failed");
        Outcome {
            stdout: json_line(&e.to_result(&error_version)),
            exit_code: 1,
        }
    };
    let inv = match Invocation::from_vars(&var) {
        Ok(i) => i,
        Err(e) => return fail(e),
    };
    if inv.command == Command::Version {
        return Outcome {
            stdout: json_line(&VersionResult::answering(hint.as_deref())),
            exit_code: 0,
        };
    }
    let conf = match NetConf::parse(stdin) {
        Ok(c) => c,
        Err(e) => return fail(e),
    };
    if !spec::version_knows(&conf.cni_version, inv.command) {
        return fail(PluginError::UnsupportedCommand {
            command: inv.command.as_str(),
            version: conf.cni_version.clone(),
        });
    }
    let host_override = var(HOST_NETNS_ENV)
        .filter(|s| !s.is_empty())
        .map(PathBuf::from);
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => return fail(PluginError::io("start the runtime", e)),
    };
    tracing::debug!(command = inv.command.as_str(), container = %inv.container_id, ifname = %inv.ifname, "invoked");
    match runtime.block_on(run(&inv, &conf, host_override)) {
        Ok(Some(result)) => Outcome {
            stdout: json_line(&result),
            exit_code: 0,
        },
        Ok(None) => Outcome {
            stdout: String::new(),
            exit_code: 0,
        },
        Err(e) => fail(e),
    }
}

fn json_line(v: &impl serde::Serialize) -> String {
    // Plain maps, strings and numbers: encoding cannot fail.
    serde_json::to_string(v).unwrap_or_default() + "\n"
}

async fn run(
    inv: &Invocation,
    conf: &NetConf,
    host_override: Option<PathBuf>,
) -> Result<Option<Value>, PluginError> {
    let host_ns = match &host_override {
        Some(p) => NetNs::open(p)?,
        None => NetNs::current()?,
    };
    let ctx = Ctx { inv, conf, host_ns };
    match inv.command {
        Command::Add => ctx.add().await,
        Command::Del => ctx.del().await.map(|()| None),
        Command::Check => ctx.check().await.map(|()| None),
        Command::Status => ctx.status().await.map(|()| None),
        Command::Gc => ctx.gc().await.map(|()| None),
        Command::Version => Ok(None),
    }
}

struct Ctx<'a> {
    inv: &'a Invocation,
    conf: &'a NetConf,
    host_ns: NetNs,
}

impl Ctx<'_> {
    fn pod_ref(&self) -> Result<PodRef, PluginError> {
        match (self.inv.args.pod_namespace(), self.inv.args.pod_name()) {
            (Some(ns), Some(name)) => Ok(PodRef {
                namespace: ns.to_owned(),
                name: name.to_owned(),
                uid: self.inv.args.pod_uid().map(str::to_owned),
            }),
            _ => Err(PluginError::InvalidEnv {
                var: "CNI_ARGS",
                reason: "K8S_POD_NAMESPACE and K8S_POD_NAME are needed".into(),
            }),
        }
    }

    fn pod_netns(&self) -> Result<NetNs, PluginError> {
        match &self.inv.netns {
            Some(p) => NetNs::open(p),
            None => Err(PluginError::InvalidEnv {
                var: "CNI_NETNS",
                reason: "not set".into(),
            }),
        }
    }

    fn plumbing<'b>(
        &'b self,
        pod: Option<(&'b NetNs, Netlink)>,
    ) -> Result<Plumbing<'b>, PluginError> {
        Ok(Plumbing {
            host_ns: &self.host_ns,
            host: Netlink::open_in(&self.host_ns, "host")?,
            pod,
            container_id: &self.inv.container_id,
            ifname: &self.inv.ifname,
        })
    }

    fn shared<'b>(&'b self, pod: Option<(&'b NetNs, Netlink)>) -> Result<Shared<'b>, PluginError> {
        Ok(Shared {
            at: self.plumbing(pod)?,
            state_dir: &self.conf.state_dir,
        })
    }

    /// Does this pod get its address from the controller (an exclusive ENI,
    /// or a shared-ENI IP on a node in shared mode: `sharedEni` in the
    /// network config, or the node marked so by the controller) rather than
    /// the delegate?
    async fn wants_allocation(
        &self,
        kube: &Kube,
        pod: &k8s_openapi::api::core::v1::Pod,
    ) -> Result<bool, PluginError> {
        if self.conf.shared_eni || kubeapi::wants_eni(pod, &self.conf.eni_resources) {
            return Ok(true);
        }
        match kubeapi::node_of(pod) {
            Some(node) => kube.node_in_shared_mode(node).await,
            None => Ok(false),
        }
    }

    fn cache_path(&self) -> PathBuf {
        delegate::cache_path(
            &self.conf.state_dir,
            &self.inv.container_id,
            &self.inv.ifname,
        )
    }

    async fn add(&self) -> Result<Option<Value>, PluginError> {
        let start = Instant::now();
        let pod_ref = self.pod_ref()?;
        let kube = Kube::connect(&self.conf.kubeconfig).await?;
        let pod = kube.pod(&pod_ref).await?;
        if !self.wants_allocation(&kube, &pod).await? {
            return self.delegate_add(&kube, &pod_ref, &pod).await.map(Some);
        }
        let deadline = start + self.conf.allocation_timeout;
        let (_, alloc) = kube
            .wait_allocation(&pod_ref, pod, deadline, self.conf.allocation_timeout)
            .await?;
        if alloc.is_shared() {
            let target = Target::new(&alloc.first, self.conf.mtu, self.conf.service_cidr)?;
            let pod_ns = self.pod_netns()?;
            let pod_nl = Netlink::open_in(&pod_ns, "pod")?;
            let link_deadline = deadline.max(Instant::now() + MIN_LINK_WAIT);
            let result = self
                .shared(Some((&pod_ns, pod_nl)))?
                .add(&target, link_deadline)
                .await?;
            tracing::info!(pod = %pod_ref, eni = %target.eni_id, ip = %target.ip, "shared-ENI IP plumbed");
            let v = serde_json::to_value(result.for_version(&self.conf.cni_version))
                .map_err(|e| PluginError::io("encode the result", e))?;
            return Ok(Some(v));
        }
        if alloc.all().len() > 1 {
            tracing::warn!(pod = %pod_ref, enis = alloc.all().len(), "only the first ENI of the allocation is plumbed");
        }
        let target = Target::new(&alloc.first, self.conf.mtu, self.conf.service_cidr)?;
        let pod_ns = self.pod_netns()?;
        let pod_nl = Netlink::open_in(&pod_ns, "pod")?;
        let plumbing = self.plumbing(Some((&pod_ns, pod_nl)))?;
        let link_deadline = deadline.max(Instant::now() + MIN_LINK_WAIT);
        let result = plumbing.add(&target, link_deadline).await?;
        tracing::info!(pod = %pod_ref, eni = %target.eni_id, ip = %target.ip, "ENI plumbed");
        let v = serde_json::to_value(result.for_version(&self.conf.cni_version))
            .map_err(|e| PluginError::io("encode the result", e))?;
        Ok(Some(v))
    }

    /// The delegate's config object; a pod without an ENI needs one.
    fn delegate_object(&self) -> Result<&serde_json::Map<String, Value>, PluginError> {
        self.conf.delegate.as_ref().ok_or_else(|| {
            PluginError::invalid_config(
                "delegate",
                "a pod without an ENI needs a delegate plugin, and none is configured",
            )
        })
    }

    /// The delegate's config for this pod (podCIDR from its node).
    async fn delegate_config_for(
        &self,
        kube: &Kube,
        pod_ref: &PodRef,
        pod: &k8s_openapi::api::core::v1::Pod,
    ) -> Result<Value, PluginError> {
        let d = self.delegate_object()?;
        let pod_cidr = if delegate::uses_pod_cidr(d) {
            let node = kubeapi::node_of(pod).ok_or_else(|| PluginError::TryAgainLater {
                what: format!("pod {pod_ref} is not bound to a node"),
            })?;
            Some(kube.node_pod_cidr(node).await?)
        } else {
            None
        };
        Ok(self.delegate_config(pod_cidr.as_deref()))
    }

    fn delegate_config(&self, pod_cidr: Option<&str>) -> Value {
        let empty = serde_json::Map::new();
        delegate::delegate_config(
            self.conf.delegate.as_ref().unwrap_or(&empty),
            &self.conf.raw,
            pod_cidr,
            self.conf.mtu_given.then_some(self.conf.mtu),
        )
    }

    fn run_delegate(&self, command: Command, config: &Value) -> Result<Option<Value>, PluginError> {
        self.run_delegate_with(command, config, &[])
    }

    /// Run the delegate named by `config`'s `type`, with some `CNI_*`
    /// variables overridden (GC names each attachment itself).
    fn run_delegate_with(
        &self,
        command: Command,
        config: &Value,
        env: &[(&str, &str)],
    ) -> Result<Option<Value>, PluginError> {
        let plugin = config
            .get("type")
            .and_then(Value::as_str)
            .ok_or_else(|| PluginError::invalid_config("delegate.type", "missing"))?;
        let binary = delegate::find_plugin(plugin, &self.inv.path)?;
        delegate::run_with_env(plugin, &binary, command, config, &self.host_ns, env)
    }

    async fn delegate_add(
        &self,
        kube: &Kube,
        pod_ref: &PodRef,
        pod: &k8s_openapi::api::core::v1::Pod,
    ) -> Result<Value, PluginError> {
        let config = self.delegate_config_for(kube, pod_ref, pod).await?;
        let cache = self.cache_path();
        delegate::write_cache(&cache, &self.cache_entry(&config))?;
        let out = self
            .run_delegate(Command::Add, &config)
            .and_then(|r| r.ok_or_else(|| PluginError::io("delegate ADD", "printed no result")));
        if out.is_err() {
            if let Err(e) = self.run_delegate(Command::Del, &config) {
                tracing::warn!(error = %e, "delegate DEL after a failed ADD failed");
            }
            delegate::remove_cache(&cache);
        }
        out
    }

    fn cache_entry(&self, config: &Value) -> Value {
        json!({
            "containerID": self.inv.container_id,
            "ifname": self.inv.ifname,
            "config": config,
        })
    }

    async fn del(&self) -> Result<(), PluginError> {
        // A netns already gone is fine for DEL.
        let pod_ns = self.inv.netns.as_deref().and_then(|p| NetNs::open(p).ok());
        let pod = match &pod_ns {
            Some(ns) => Some((ns, Netlink::open_in(ns, "pod")?)),
            None => None,
        };
        // The shared path first: it reads the pod's IP off a veth the
        // exclusive path never touches (another name), then sweeps.
        let shared_pod = match &pod_ns {
            Some(ns) => Some((ns, Netlink::open_in(ns, "pod")?)),
            None => None,
        };
        let shared_found = self.shared(shared_pod)?.teardown().await?;
        let found = self.plumbing(pod)?.teardown().await? || shared_found;
        let cache = self.cache_path();
        if let Some(entry) = delegate::read_cache(&cache) {
            let config = entry.get("config").cloned().unwrap_or(Value::Null);
            self.run_delegate(Command::Del, &config)?;
            delegate::remove_cache(&cache);
            return Ok(());
        }
        if found || self.conf.delegate.is_none() {
            return Ok(());
        }
        // Nothing of ours and no record of a delegate ADD: ask the API what
        // this pod was; a pod that asks for an ENI had no delegate.
        let pod_cidr = match self.del_pod_cidr().await {
            Ok(None) => return Ok(()),
            Ok(Some(c)) => c,
            Err(e) => {
                tracing::info!(error = %e, "pod or node unknown; delegate DEL with a placeholder range");
                DEL_PLACEHOLDER_CIDR.to_owned()
            }
        };
        self.run_delegate(Command::Del, &self.delegate_config(Some(&pod_cidr)))?;
        Ok(())
    }

    /// `None` for a pod that asks for an ENI (nothing to delegate).
    async fn del_pod_cidr(&self) -> Result<Option<String>, PluginError> {
        let pod_ref = self.pod_ref()?;
        let kube = Kube::connect(&self.conf.kubeconfig).await?;
        let pod = kube.pod(&pod_ref).await?;
        if self.wants_allocation(&kube, &pod).await? {
            return Ok(None);
        }
        let node = kubeapi::node_of(&pod)
            .ok_or_else(|| PluginError::Kube(format!("pod {pod_ref} has no node")))?;
        Ok(Some(kube.node_pod_cidr(node).await?))
    }

    async fn check(&self) -> Result<(), PluginError> {
        let pod_ref = self.pod_ref()?;
        let kube = Kube::connect(&self.conf.kubeconfig).await?;
        let pod = kube.pod(&pod_ref).await?;
        if self.wants_allocation(&kube, &pod).await? {
            let alloc = kubeapi::allocation_for_node(&pod).ok_or_else(|| {
                PluginError::CheckFailed(format!("pod {pod_ref} has no ENI allocation"))
            })?;
            let target = Target::new(&alloc.first, self.conf.mtu, self.conf.service_cidr)?;
            let pod_ns = self.pod_netns()?;
            let pod_nl = Netlink::open_in(&pod_ns, "pod")?;
            if alloc.is_shared() {
                return self.shared(Some((&pod_ns, pod_nl)))?.check(&target).await;
            }
            return self.plumbing(Some((&pod_ns, pod_nl)))?.check(&target).await;
        }
        self.delegate_object()?;
        let mut config = match delegate::read_cache(&self.cache_path()) {
            Some(entry) => entry.get("config").cloned().unwrap_or(Value::Null),
            None => self.delegate_config_for(&kube, &pod_ref, &pod).await?,
        };
        // CHECK's prevResult is this call's, not the one saved at ADD.
        if let (Some(obj), Some(prev)) = (config.as_object_mut(), self.conf.raw.get("prevResult")) {
            obj.insert("prevResult".into(), prev.clone());
        }
        self.run_delegate(Command::Check, &config).map(|_| ())
    }

    /// STATUS: ready when the kubeconfig reads and the delegate is installed.
    async fn status(&self) -> Result<(), PluginError> {
        kube::config::Kubeconfig::read_from(&self.conf.kubeconfig).map_err(|e| {
            PluginError::NotAvailable(format!(
                "kubeconfig {}: {e}",
                self.conf.kubeconfig.display()
            ))
        })?;
        if let Some(t) = self
            .conf
            .delegate
            .as_ref()
            .and_then(|d| d.get("type"))
            .and_then(Value::as_str)
        {
            delegate::find_plugin(t, &self.inv.path)
                .map_err(|e| PluginError::NotAvailable(e.to_string()))?;
        }
        Ok(())
    }

    /// GC: what this plugin left for attachments the runtime no longer
    /// lists in `cni.dev/valid-attachments` is released (ENIs back, veths
    /// deleted, delegate DEL from the saved config).
    async fn gc(&self) -> Result<(), PluginError> {
        let valid: Vec<(String, String)> = self
            .conf
            .raw
            .get("cni.dev/valid-attachments")
            .and_then(Value::as_array)
            .map(|items| {
                items
                    .iter()
                    .filter_map(|a| {
                        Some((
                            a.get("containerID")?.as_str()?.to_owned(),
                            a.get("ifname")?.as_str()?.to_owned(),
                        ))
                    })
                    .collect()
            })
            .unwrap_or_default();
        let valid_ids: HashSet<String> = valid.iter().map(|(c, _)| c.clone()).collect();
        let host = Netlink::open_in(&self.host_ns, "host")?;
        let cleaned = eni::gc_host(&host, &valid_ids).await?;
        if !cleaned.is_empty() {
            tracing::info!(links = ?cleaned, "GC released links of gone attachments");
        }
        let cleaned = shared::gc_host(&host, &self.conf.state_dir, &valid_ids).await?;
        if !cleaned.is_empty() {
            tracing::info!(links = ?cleaned, "GC removed shared-ENI veths of gone attachments");
        }
        let keep: HashSet<PathBuf> = valid
            .iter()
            .map(|(c, i)| delegate::cache_path(&self.conf.state_dir, c, i))
            .collect();
        let Ok(dir) = std::fs::read_dir(&self.conf.state_dir) else {
            return Ok(());
        };
        for entry in dir.flatten() {
            let path = entry.path();
            if path.extension().is_none_or(|e| e != "json") || keep.contains(&path) {
                continue;
            }
            let Some(saved) = delegate::read_cache(&path) else {
                continue;
            };
            let (Some(config), Some(cid), Some(ifname)) = (
                saved.get("config"),
                saved.get("containerID").and_then(Value::as_str),
                saved.get("ifname").and_then(Value::as_str),
            ) else {
                continue;
            };
            // The delegate reads the attachment from the environment, which
            // names no container in GC: use the one saved. Its netns is
            // gone or not ours to touch.
            let env = [
                ("CNI_CONTAINERID", cid),
                ("CNI_IFNAME", ifname),
                ("CNI_NETNS", ""),
            ];
            match self.run_delegate_with(Command::Del, config, &env) {
                Ok(_) => delegate::remove_cache(&path),
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "GC: delegate DEL failed")
                }
            }
        }
        Ok(())
    }
}
