//! `cleanup-eni`: what ENI mode leaves in the cluster once it is switched
//! off, taken away. ENI mode writes the extended resource into every node's
//! status and puts its release finalizer on ENI pods; the controller stops
//! maintaining both when the mode is off, so the scheduler would keep
//! counting ENIs nobody hands out and deleted ENI pods would hang in
//! Terminating.
//!
//! One pass: a pod that is leaving (deleted or finished) and still carries
//! the finalizer gets its ENIs released exactly as the controller releases
//! them (`lifecycle`: only ENIs tagged as this cluster's, detached, waited
//! available, deleted), then the finalizer removed (`record`). A pod that
//! still holds or asks for ENIs is named and left alone, and while any does
//! the nodes keep the resource: it is removed (`capacity::removal_patch`)
//! only once no pod needs it. Owned ENIs whose pod is gone are named, not
//! touched (the controller's GC releases those with its grace period).
//! Nothing is written in `--dry-run`.

use super::capacity::removal_patch;
use super::lifecycle::Lifecycle;
use super::request::{bound_node, leaving, pod_key, requested};
use super::steps::Steps;
use super::waiter::Waiter;
use super::{PodAllocation, ALLOCATION_ANNOTATION, RELEASE_FINALIZER};
use crate::config::Config;
use anyhow::Context as _;
use ipam::eni::pod_uid_of;
use ipam::ids::EniId;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::ResourceExt;
use providers::model::Eni;
use providers::Cloud;
use std::collections::HashSet;
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// What a pod needs from the cleanup.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PodStep {
    /// Leaving with our finalizer: release its ENIs, then let it go.
    Release {
        key: String,
        uid: String,
        /// The ENIs its annotation names (listed by tag too).
        annotated: Vec<EniId>,
    },
    /// Still holds or asks for ENIs: the nodes keep the resource for it.
    Holds {
        key: String,
        node: Option<String>,
        enis: Vec<EniId>,
    },
}

/// Which pods are released and which hold the cleanup back. Pods that
/// neither carry the finalizer nor ask for `resource` are not ENI mode's.
pub fn plan(pods: &[Pod], resource: &str) -> Vec<PodStep> {
    let mut steps = Vec::new();
    for pod in pods {
        let finalizer = pod.finalizers().iter().any(|f| f == RELEASE_FINALIZER);
        let enis: Vec<EniId> = pod
            .annotations()
            .get(ALLOCATION_ANNOTATION)
            .and_then(|a| PodAllocation::parse(a).ok())
            .map(|a| a.all().iter().map(|e| EniId::new(&e.eni_id)).collect())
            .unwrap_or_default();
        if leaving(pod) {
            if finalizer {
                steps.push(PodStep::Release {
                    key: pod_key(pod),
                    uid: pod.uid().unwrap_or_default(),
                    annotated: enis,
                });
            }
        } else if finalizer || !enis.is_empty() || requested(pod, resource).unwrap_or(1) > 0 {
            steps.push(PodStep::Holds {
                key: pod_key(pod),
                node: bound_node(pod).map(str::to_owned),
                enis,
            });
        }
    }
    steps
}

/// What one pass did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    pub enis_released: usize,
    pub finalizers_removed: usize,
    pub nodes_cleaned: usize,
    /// Pods that still hold or ask for ENIs.
    pub pods_holding: usize,
    /// Owned ENIs whose pod is gone, left to the controller's GC.
    pub orphans: usize,
    /// Releases or writes that failed (each named in the output).
    pub failed: usize,
}

impl Summary {
    /// Nothing of ENI mode is left behind.
    pub fn done(&self) -> bool {
        self.pods_holding == 0 && self.failed == 0
    }
}

/// The `cleanup-eni` command: the kube client and cloud built as `run`
/// builds them, output on stdout.
pub async fn command(
    config: &Config,
    kubeconfig: Option<PathBuf>,
    dry_run: bool,
) -> anyhow::Result<Summary> {
    crate::run::install_crypto_provider();
    let client = crate::run::kube_client(kubeconfig).await?;
    let cloud = crate::run::build_cloud(config).await?;
    let mut out = std::io::stdout();
    run(config, client, cloud, dry_run, &mut out).await
}

/// One cleanup pass, saying on `out` what it did (or would do).
pub async fn run(
    config: &Config,
    client: kube::Client,
    cloud: Arc<dyn Cloud>,
    dry_run: bool,
    out: &mut (dyn Write + Send),
) -> anyhow::Result<Summary> {
    let shutdown = CancellationToken::new();
    let _stop_waiter = shutdown.clone().drop_guard();
    let lifecycle = Lifecycle::new(
        cloud.clone(),
        config.cluster(),
        Waiter::start(
            cloud,
            Duration::from_millis(config.eni.poll_interval_ms.into()),
            Duration::from_secs(config.eni.attach_timeout_seconds.into()),
            shutdown.clone(),
        ),
        Steps::new(None),
    )
    .with_attach_concurrency(config.eni.attach_concurrency);
    let mut pass = Pass {
        resource: config.eni_resource_name(),
        client,
        lifecycle,
        dry_run,
        out,
        summary: Summary::default(),
    };
    let pods = Api::<Pod>::all(pass.client.clone())
        .list(&ListParams::default())
        .await
        .context("listing pods")?
        .items;
    let owned = pass
        .lifecycle
        .owned()
        .await
        .context("listing the ENIs tagged as this cluster's")?;
    for step in plan(&pods, &pass.resource) {
        match step {
            PodStep::Holds { key, node, enis } => pass.holds(&key, node, &enis)?,
            PodStep::Release {
                key,
                uid,
                annotated,
            } => pass.release(&pods, &key, &uid, &annotated).await?,
        }
    }
    pass.orphans(&pods, &owned)?;
    if pass.summary.pods_holding > 0 {
        let (resource, holding) = (pass.resource.clone(), pass.summary.pods_holding);
        say(pass.out, format!("nodes keep {resource} while {holding} pod(s) hold or ask for it; run cleanup-eni again when they are gone"))?;
    } else {
        pass.clean_nodes().await?;
    }
    let s = &pass.summary;
    say(
        pass.out,
        format!(
            "{}{} ENI(s) released, {} finalizer(s) removed, {} node(s) cleaned, {} pod(s) still holding, {} orphan ENI(s), {} failure(s)",
            if dry_run { "dry run: nothing changed; " } else { "" },
            s.enis_released,
            s.finalizers_removed,
            s.nodes_cleaned,
            s.pods_holding,
            s.orphans,
            s.failed
        ),
    )?;
    Ok(pass.summary)
}

/// One run of the command: what it works with, what it says, what it did.
struct Pass<'o> {
    resource: String,
    client: kube::Client,
    lifecycle: Lifecycle,
    dry_run: bool,
    out: &'o mut (dyn Write + Send),
    summary: Summary,
}

impl Pass<'_> {
    fn would(&self) -> &'static str {
        if self.dry_run {
            "would "
        } else {
            ""
        }
    }

    /// A pod that still holds or asks for ENIs: named, left alone.
    fn holds(&mut self, key: &str, node: Option<String>, enis: &[EniId]) -> anyhow::Result<()> {
        self.summary.pods_holding += 1;
        let resource = &self.resource;
        let held = if enis.is_empty() {
            format!("asks for {resource}")
        } else {
            format!("holds {}", join(enis))
        };
        let on = node.map(|n| format!(" on node {n}")).unwrap_or_default();
        say(self.out, format!("pod {key}{on}: {held}; not touched. Delete it (or take {resource} out of its spec); once it is deleting, cleanup-eni releases its ENIs"))
    }

    /// A deleting or finished pod: its ENIs released, then its finalizer.
    async fn release(
        &mut self,
        pods: &[Pod],
        key: &str,
        uid: &str,
        annotated: &[EniId],
    ) -> anyhow::Result<()> {
        let enis = self
            .lifecycle
            .of_pod(uid, annotated)
            .await
            .with_context(|| format!("listing the ENIs of pod {key}"))?;
        let mut released = true;
        for eni in &enis {
            if self.dry_run {
                say(self.out, format!("pod {key}: would release ENI {}", eni.id))?;
                continue;
            }
            match self.lifecycle.release(eni, key, false).await {
                Ok(()) => {
                    self.summary.enis_released += 1;
                    say(self.out, format!("pod {key}: released ENI {}", eni.id))?;
                }
                Err(e) => {
                    released = false;
                    self.summary.failed += 1;
                    say(self.out, format!("pod {key}: releasing ENI {} failed: {e}; finalizer kept, run cleanup-eni again", eni.id))?;
                }
            }
        }
        if !released {
            return Ok(());
        }
        if !self.dry_run {
            let Some(pod) = pods.iter().find(|p| pod_key(p) == key) else {
                return Ok(());
            };
            if let Err(e) = super::record::remove_finalizer(&self.client, pod).await {
                self.summary.failed += 1;
                return say(
                    self.out,
                    format!("pod {key}: removing finalizer {RELEASE_FINALIZER} failed: {e}"),
                );
            }
            self.summary.finalizers_removed += 1;
        }
        let would = self.would();
        say(
            self.out,
            format!("pod {key}: {would}remove finalizer {RELEASE_FINALIZER}"),
        )
    }

    /// Owned ENIs no pod holds: named, never touched here.
    fn orphans(&mut self, pods: &[Pod], owned: &[Eni]) -> anyhow::Result<()> {
        let uids: HashSet<String> = pods.iter().filter_map(|p| p.uid()).collect();
        for eni in owned {
            let uid = pod_uid_of(&eni.tags);
            if uid.is_some_and(|u| uids.contains(u)) {
                continue;
            }
            self.summary.orphans += 1;
            say(self.out, format!("ENI {} ({:?}, tagged for pod uid {}) belongs to no pod: not touched; the controller's ENI GC releases it with ENI mode on, or delete it in the cloud", eni.id, eni.status, uid.unwrap_or("(none)")))?;
        }
        Ok(())
    }

    /// The resource taken off every node's status.
    async fn clean_nodes(&mut self) -> anyhow::Result<()> {
        let nodes: Api<Node> = Api::all(self.client.clone());
        let resource = self.resource.clone();
        let would = self.would();
        for node in nodes
            .list(&ListParams::default())
            .await
            .context("listing nodes")?
            .items
        {
            let Some(ops) = removal_patch(&node, &resource) else {
                continue;
            };
            let name = node.name_any();
            if !self.dry_run {
                let patch: json_patch::Patch =
                    serde_json::from_value(ops).context("building the node status patch")?;
                if let Err(e) = nodes
                    .patch_status(&name, &PatchParams::default(), &Patch::Json::<()>(patch))
                    .await
                {
                    self.summary.failed += 1;
                    say(
                        self.out,
                        format!("node {name}: removing {resource} from its status failed: {e}"),
                    )?;
                    continue;
                }
                self.summary.nodes_cleaned += 1;
            }
            say(
                self.out,
                format!("node {name}: {would}remove {resource} from status.capacity and status.allocatable"),
            )?;
        }
        Ok(())
    }
}

fn say(out: &mut (dyn Write + Send), line: String) -> anyhow::Result<()> {
    writeln!(out, "{line}").context("writing the output")
}

fn join(ids: &[EniId]) -> String {
    ids.iter().map(EniId::as_str).collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(name: &str, extra: serde_json::Value) -> Pod {
        let mut pod = json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": "default", "uid": format!("uid-{name}")},
            "spec": {"containers": [{"name": "app", "image": "pause"}]},
        });
        json_patch::merge(&mut pod, &extra);
        serde_json::from_value(pod).unwrap()
    }

    fn eni_pod(name: &str, extra: serde_json::Value) -> Pod {
        let base = json!({
            "metadata": {"finalizers": [RELEASE_FINALIZER],
                "annotations": {ALLOCATION_ANNOTATION: format!(
                    r#"{{"eniId":"eni-{name}","mac":"00:16:3e:00:00:01","ip":"192.168.0.9","subnetId":"vsw-1","subnetCidr":"192.168.0.0/24","gateway":"192.168.0.253","node":"n1"}}"#)}},
            "spec": {"nodeName": "n1", "containers": [{"name": "app", "image": "pause",
                "resources": {"limits": {"aliyun/eni": "1"}}}]},
        });
        let mut p = serde_json::to_value(pod(name, base)).unwrap();
        json_patch::merge(&mut p, &extra);
        serde_json::from_value(p).unwrap()
    }

    #[test]
    fn leaving_pods_are_released_running_ones_hold_and_others_are_not_ours() {
        let pods = [
            eni_pod("running", json!({})),
            eni_pod(
                "deleting",
                json!({"metadata": {"deletionTimestamp": "2024-01-01T00:00:00Z"}}),
            ),
            eni_pod("finished", json!({"status": {"phase": "Succeeded"}})),
            // Finished and already let go: nothing to do.
            eni_pod(
                "let-go",
                json!({"metadata": {"finalizers": null}, "status": {"phase": "Failed"}}),
            ),
            // Pending, never allocated, but asks for the resource.
            pod(
                "pending",
                json!({"spec": {"containers": [{"name": "app", "image": "pause",
                    "resources": {"limits": {"aliyun/eni": "1"}}}]}}),
            ),
            pod("plain", json!({})),
        ];
        let steps = plan(&pods, "aliyun/eni");
        assert_eq!(
            steps,
            vec![
                PodStep::Holds {
                    key: "default/running".into(),
                    node: Some("n1".into()),
                    enis: vec![EniId::new("eni-running")],
                },
                PodStep::Release {
                    key: "default/deleting".into(),
                    uid: "uid-deleting".into(),
                    annotated: vec![EniId::new("eni-deleting")],
                },
                PodStep::Release {
                    key: "default/finished".into(),
                    uid: "uid-finished".into(),
                    annotated: vec![EniId::new("eni-finished")],
                },
                PodStep::Holds {
                    key: "default/pending".into(),
                    node: None,
                    enis: vec![],
                },
            ]
        );
        // Under another resource name the pending pod is not ENI mode's.
        assert_eq!(plan(&pods[4..], "vpc.amazonaws.com/eni"), vec![]);
    }
}
