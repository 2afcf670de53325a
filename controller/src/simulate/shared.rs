//! Shared-ENI acts of `simulate`: Deployments of plain pods on shared
//! nodes, steady churn, when the act has converged (every pod of a shared
//! Deployment Running on its own secondary IP, on a shared ENI in use on its
//! node's instance, no IP on two pods), and the least time a phase's pool
//! changes take at the controller's rate limits.

use super::bound::ApiBound;
use super::Sim;
use crate::harness::world::instance_for;
use ipam::allocation::PodAllocation;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};
use kube::ResourceExt;
use providers::model::EniStatus;
use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

/// The least time a phase's pool changes take: its slowest API's calls at
/// the limit, plus one attach latency when ENIs were attached.
pub fn pool_bound(apis: &[ApiBound], attach_latency: Duration) -> Duration {
    let slowest = apis.iter().map(|a| a.seconds_at_limit).fold(0.0, f64::max);
    let attached = apis
        .iter()
        .any(|a| a.api == "AttachNetworkInterface" && a.calls > 0);
    Duration::from_secs_f64(slowest)
        + if attached {
            attach_latency
        } else {
            Duration::ZERO
        }
}

impl Sim {
    /// A Deployment of plain pods: on shared nodes each gets a shared IP.
    pub async fn create_shared_deployment(
        &mut self,
        name: &str,
        replicas: u32,
    ) -> anyhow::Result<()> {
        self.post_deployment(
            name,
            replicas,
            serde_json::json!({"cpu": "10m", "memory": "16Mi"}),
            None,
        )
        .await?;
        self.shared_deployments.insert(name.to_owned(), replicas);
        Ok(())
    }

    /// Delete `cycles` Running pods of a Deployment, `per_second` a second
    /// (its ReplicaSet makes a replacement each time).
    pub async fn churn(&mut self, of: &str, cycles: u32, per_second: f64) -> anyhow::Result<()> {
        let pause = Duration::from_secs_f64(1.0 / per_second);
        let mut done = 0;
        let mut misses = 0;
        while done < cycles {
            match self.delete_pod_of(of).await {
                Ok(_) => {
                    done += 1;
                    misses = 0;
                    tokio::time::sleep(pause).await;
                }
                // No Running pod right now: the replacements are on their way.
                Err(_) if misses < 600 => {
                    misses += 1;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// (pods settled, pods wanted, converged) of the shared Deployments.
    pub async fn shared_convergence(&self) -> anyhow::Result<(usize, usize, bool)> {
        let total: usize = self.shared_deployments.values().map(|r| *r as usize).sum();
        if total == 0 {
            return Ok((0, 0, true));
        }
        let pods: Api<Pod> = Api::namespaced(self.client().clone(), "default");
        let list = pods.list(&ListParams::default()).await?.items;
        let enis: HashMap<String, providers::model::Eni> = self
            .world()
            .enis()
            .into_iter()
            .map(|e| (e.id.to_string(), e))
            .collect();
        let mut live = 0;
        let mut done = 0;
        let mut ips = BTreeSet::new();
        let mut doubled = false;
        for pod in &list {
            let app = pod.labels().get("app").cloned().unwrap_or_default();
            if !self.shared_deployments.contains_key(&app) {
                continue;
            }
            if pod.metadata.deletion_timestamp.is_some() {
                continue;
            }
            live += 1;
            let Some(a) = pod
                .metadata
                .annotations
                .as_ref()
                .and_then(PodAllocation::from_annotations)
                .filter(|a| a.is_shared())
            else {
                continue;
            };
            let node = pod
                .spec
                .as_ref()
                .and_then(|s| s.node_name.clone())
                .unwrap_or_default();
            let running = pod.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
                && pod.status.as_ref().and_then(|s| s.pod_ip.as_deref())
                    == Some(a.first.ip.as_str());
            let on_eni = enis.get(&a.first.eni_id).is_some_and(|e| {
                e.status == EniStatus::InUse
                    && e.instance_id.as_ref().map(|i| i.to_string()) == Some(instance_for(&node))
                    && e.secondary_ips
                        .iter()
                        .any(|ip| ip.to_string() == a.first.ip)
            });
            if !ips.insert(a.first.ip.clone()) {
                doubled = true;
            }
            if running && on_eni {
                done += 1;
            }
        }
        Ok((done, total, done == total && live == total && !doubled))
    }
}

#[cfg(test)]
mod tests {
    use super::super::bound::api_bounds;
    use super::*;
    use providers::call::CallPolicy;
    use std::collections::BTreeMap;

    #[test]
    fn a_pool_bound_is_its_slowest_api_plus_one_attach() {
        let mut calls = BTreeMap::new();
        calls.insert("CreateNetworkInterface".to_owned(), 100);
        calls.insert("AttachNetworkInterface".to_owned(), 100);
        calls.insert("AssignPrivateIpAddresses".to_owned(), 50);
        let mut policy = CallPolicy::default();
        policy
            .per_api_per_minute
            .insert("CreateNetworkInterface".into(), 500);
        policy
            .per_api_per_minute
            .insert("AttachNetworkInterface".into(), 500);
        policy
            .per_api_per_minute
            .insert("AssignPrivateIpAddresses".into(), 400);
        let apis = api_bounds(&calls, &policy);
        assert_eq!(apis.len(), 3);
        let b = pool_bound(&apis, Duration::from_secs(2));
        assert!((b.as_secs_f64() - 14.0).abs() < 1e-9, "{b:?}");
        calls.remove("CreateNetworkInterface");
        calls.remove("AttachNetworkInterface");
        let b = pool_bound(&api_bounds(&calls, &policy), Duration::from_secs(2));
        assert!((b.as_secs_f64() - 7.5).abs() < 1e-9, "{b:?}");
    }
}
