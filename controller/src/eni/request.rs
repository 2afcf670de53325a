//! What a pod asks of ENI mode, read off the pod: how many of the extended
//! resource (`ipam::eni::pod_eni_request` decides the count), which node it
//! is bound to, and whether it has finished and gives its ENIs back.

use ipam::eni::{pod_eni_request, ContainerAsk};
use k8s_openapi::api::core::v1::{Container, Pod};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::ResourceExt;
use std::collections::BTreeMap;

/// How many of `resource` the pod asks for, or an error naming the
/// container with a bad quantity.
pub fn requested(pod: &Pod, resource: &str) -> Result<u32, String> {
    let Some(spec) = pod.spec.as_ref() else {
        return Ok(0);
    };
    let init = spec.init_containers.as_deref().unwrap_or_default();
    let apps: Vec<ContainerAsk<'_>> = spec
        .containers
        .iter()
        .map(|c| container_ask(c, resource))
        .collect();
    let inits: Vec<ContainerAsk<'_>> = init.iter().map(|c| container_ask(c, resource)).collect();
    pod_eni_request(&apps, &inits).map_err(|e| {
        let list = if e.init { init } else { &spec.containers };
        let name = list
            .get(e.container)
            .map(|c| c.name.as_str())
            .unwrap_or("?");
        format!("container {name}: resources.limits[{resource}] = {e}")
    })
}

fn container_ask<'a>(c: &'a Container, resource: &str) -> ContainerAsk<'a> {
    let get = |m: Option<&'a BTreeMap<String, Quantity>>| {
        m.and_then(|m| m.get(resource)).map(|q| q.0.as_str())
    };
    let r = c.resources.as_ref();
    ContainerAsk {
        limit: get(r.and_then(|r| r.limits.as_ref())),
        request: get(r.and_then(|r| r.requests.as_ref())),
    }
}

/// `namespace/name`, for logs and the step hook.
pub fn pod_key(pod: &Pod) -> String {
    format!("{}/{}", pod.namespace().unwrap_or_default(), pod.name_any())
}

/// The node the pod is bound to, once the scheduler has bound it.
pub fn bound_node(pod: &Pod) -> Option<&str> {
    pod.spec.as_ref()?.node_name.as_deref()
}

/// A pod that finished (Succeeded or Failed): its ENIs go back.
pub fn terminal(pod: &Pod) -> bool {
    matches!(
        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded" | "Failed")
    )
}

/// Being deleted or finished: what it holds is released, nothing is given.
pub fn leaving(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_some() || terminal(pod)
}
