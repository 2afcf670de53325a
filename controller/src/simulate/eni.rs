//! The ENI side of the simulation: Deployments whose pods request the ENI
//! extended resource, deleting one of their pods, and what "settled" means
//! for them as a user would check it (node capacity, pod phase and IP, the
//! scheduler's message, ENIs in the cloud, nothing leaked).

use super::{instance_for, Sim, CLUSTER_ID};
use crate::eni::PodAllocation;
use crate::eni::ALLOCATION_ANNOTATION;
use anyhow::Context as _;
use ipam::ids::ClusterId;
use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, DeleteParams, ListParams};
use kube::ResourceExt;
use providers::model::EniStatus;
use std::collections::{BTreeSet, HashSet};

/// A Deployment of ENI pods the simulation created.
#[derive(Clone, Debug)]
pub struct EniDeployment {
    pub name: String,
    pub replicas: u32,
    pub eni_per_pod: u32,
}

/// How far the ENI side is from settled.
#[derive(Clone, Debug, Default)]
pub struct EniProgress {
    /// ENI pods Running with their ENIs, or Pending with FailedScheduling.
    pub settled: usize,
    /// ENI pods there are (or should be, by the Deployments' replicas).
    pub total: usize,
    /// Nodes whose advertised capacity is not what the cloud allows.
    pub nodes_wrong: Vec<String>,
    /// ENIs tagged as ours that no live pod's annotation names.
    pub leaked: Vec<String>,
    pub converged: bool,
}

/// ENIs a pod requests of `resource` (limits, else requests), summed over
/// its containers.
pub fn requested_enis(pod: &Pod, resource: &str) -> u32 {
    crate::eni::request::requested(pod, resource).unwrap_or(0)
}

/// The pod's allocation annotation, parsed.
pub fn allocation(pod: &Pod) -> Option<PodAllocation> {
    pod.annotations()
        .get(ALLOCATION_ANNOTATION)
        .and_then(|v| PodAllocation::parse(v).ok())
}

/// Pods (by uid) with a `FailedScheduling` Event, and the Events' notes.
pub async fn failed_scheduling(client: &kube::Client) -> anyhow::Result<HashSet<String>> {
    let events: Api<Event> = Api::all(client.clone());
    Ok(events
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .filter(|e| e.reason.as_deref() == Some("FailedScheduling"))
        .filter_map(|e| e.regarding.and_then(|r| r.uid))
        .collect())
}

impl Sim {
    /// A Deployment whose pods each request `eni_per_pod` of the ENI resource.
    pub async fn create_eni_deployment(
        &mut self,
        name: &str,
        replicas: u32,
        eni_per_pod: u32,
    ) -> anyhow::Result<()> {
        let resource = self.scenario.eni_resource_name();
        self.post_deployment(
            name,
            replicas,
            serde_json::json!({"cpu": "100m", "memory": "64Mi"}),
            Some(serde_json::json!({resource: eni_per_pod.to_string()})),
        )
        .await?;
        self.eni_deployments.push(EniDeployment {
            name: name.to_owned(),
            replicas,
            eni_per_pod,
        });
        Ok(())
    }

    /// `kubectl delete pod` of the oldest Running pod of a Deployment (by
    /// creation time, then name), as a rolling restart replaces them: every
    /// pod in turn, so deletions spread over the nodes the way the pods do.
    /// Returns its name.
    pub async fn delete_pod_of(&mut self, deployment: &str) -> anyhow::Result<String> {
        let pods: Api<Pod> = Api::namespaced(self.client().clone(), "default");
        let mut list = pods
            .list(&ListParams::default().labels(&format!("app={deployment}")))
            .await?
            .items;
        list.sort_by_key(|p| (p.creation_timestamp(), p.name_any()));
        let victim = list
            .iter()
            .find(|p| {
                p.metadata.deletion_timestamp.is_none()
                    && p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
            })
            .with_context(|| format!("deployment {deployment} has no Running pod to delete"))?
            .name_any();
        pods.delete(&victim, &DeleteParams::default()).await?;
        Ok(victim)
    }

    /// Where the ENI side stands (see [`EniProgress`]).
    pub async fn eni_convergence(&self) -> anyhow::Result<EniProgress> {
        let resource = self.scenario.eni_resource_name();
        let cluster = ClusterId::new(CLUSTER_ID);
        let enis = self.world().enis();
        let nodes: Api<Node> = Api::all(self.client().clone());
        let mut progress = EniProgress::default();
        for node in nodes.list(&ListParams::default()).await?.items {
            let name = node.name_any();
            let instance = instance_for(&name);
            let max = node
                .labels()
                .get(crate::kubeutil::INSTANCE_TYPE_LABEL)
                .and_then(|t| mocks::cloud::instance_types::lookup(t))
                .map(|t| t.max_enis)
                .unwrap_or(0);
            let foreign = enis
                .iter()
                .filter(|e| {
                    e.instance_id.as_ref().map(|i| i.as_str()) == Some(instance.as_str())
                        && e.device_index != Some(0)
                        && !ipam::eni::is_owned(&e.tags, &cluster)
                })
                .count() as u32;
            let want = ipam::eni::advertised_capacity(max, foreign).to_string();
            let status = node.status.unwrap_or_default();
            let get = |m: Option<
                &std::collections::BTreeMap<
                    String,
                    k8s_openapi::apimachinery::pkg::api::resource::Quantity,
                >,
            >| { m.and_then(|m| m.get(&resource)).map(|q| q.0.clone()) };
            let capacity = get(status.capacity.as_ref());
            let allocatable = get(status.allocatable.as_ref());
            if capacity.as_deref() != Some(want.as_str())
                || allocatable.as_deref() != Some(want.as_str())
            {
                progress.nodes_wrong.push(name);
            }
        }
        let pods: Api<Pod> = Api::all(self.client().clone());
        let pods: Vec<Pod> = pods
            .list(&ListParams::default())
            .await?
            .items
            .into_iter()
            .filter(|p| requested_enis(p, &resource) > 0)
            .collect();
        let unschedulable = failed_scheduling(self.client()).await?;
        let mut named: BTreeSet<String> = BTreeSet::new();
        for pod in &pods {
            if let Some(a) = allocation(pod) {
                named.extend(a.all().iter().map(|e| e.eni_id.clone()));
            }
            if pod_settled(pod, &resource, &unschedulable, &enis) {
                progress.settled += 1;
            }
        }
        progress.leaked = enis
            .iter()
            .filter(|e| ipam::eni::is_owned(&e.tags, &cluster) && !named.contains(e.id.as_str()))
            .map(|e| e.id.to_string())
            .collect();
        let live = |d: &EniDeployment| {
            pods.iter()
                .filter(|p| {
                    p.metadata.deletion_timestamp.is_none()
                        && p.labels().get("app") == Some(&d.name)
                })
                .count()
        };
        let complete = self
            .eni_deployments
            .iter()
            .all(|d| live(d) == d.replicas as usize);
        let wanted: usize = self
            .eni_deployments
            .iter()
            .map(|d| d.replicas as usize)
            .sum();
        progress.total = pods.len().max(wanted);
        progress.converged = complete
            && progress.settled == pods.len()
            && progress.nodes_wrong.is_empty()
            && progress.leaked.is_empty();
        Ok(progress)
    }
}

/// Running with every requested ENI attached to its node's instance and the
/// annotation's IP as pod IP; or not bound with the scheduler's reason given.
fn pod_settled(
    pod: &Pod,
    resource: &str,
    unschedulable: &HashSet<String>,
    enis: &[providers::model::Eni],
) -> bool {
    if pod.metadata.deletion_timestamp.is_some() {
        return false;
    }
    let status = pod.status.clone().unwrap_or_default();
    let node = pod
        .spec
        .as_ref()
        .and_then(|s| s.node_name.clone())
        .filter(|n| !n.is_empty());
    let Some(node) = node else {
        return pod.uid().is_some_and(|u| unschedulable.contains(&u));
    };
    let Some(alloc) = allocation(pod) else {
        return false;
    };
    let instance = instance_for(&node);
    let attached = alloc.all().iter().all(|a| {
        enis.iter().any(|e| {
            e.id.as_str() == a.eni_id
                && e.status == EniStatus::InUse
                && e.instance_id.as_ref().map(|i| i.as_str()) == Some(instance.as_str())
                && e.primary_ip.to_string() == a.ip
        })
    });
    status.phase.as_deref() == Some("Running")
        && status.pod_ip.as_deref() == Some(alloc.first.ip.as_str())
        && alloc.all().len() == requested_enis(pod, resource) as usize
        && attached
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requested_enis_reads_limits_then_requests() {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p"},
            "spec": {"containers": [
                {"name": "a", "resources": {"limits": {"aliyun/eni": "2"}}},
                {"name": "b", "resources": {"requests": {"aliyun/eni": "1", "cpu": "1"}}},
                {"name": "c"}
            ]}
        }))
        .unwrap();
        assert_eq!(requested_enis(&pod, "aliyun/eni"), 3);
        assert_eq!(requested_enis(&pod, "example.com/eni"), 0);
    }
}
