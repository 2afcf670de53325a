//! The Kubernetes API access the controller and the node half use, as data:
//! the ClusterRoles in `manifests/` must grant exactly this (a test checks
//! it), and a reviewer can see in one place why each verb is needed.

/// (apiGroup, resource, verbs, why): the ClusterRole `vpc-eni-controller`
/// (`manifests/base`), whatever the config.
pub const CLUSTER_ACCESS: &[(&str, &str, &[&str], &str)] = &[
    (
        "",
        "nodes",
        &["get", "list", "watch"],
        "watch nodes (providerID, podCIDR, zone, addresses)",
    ),
    (
        "",
        "nodes/status",
        &["patch"],
        "NetworkUnavailable condition; ENI extended resource capacity",
    ),
    (
        "",
        "pods",
        &["get", "list", "watch", "patch"],
        "watch ENI pods; write the allocation annotation and the release finalizer",
    ),
    (
        "",
        "pods/eviction",
        &["create"],
        "evict an ENI pod its node can never serve (ENI slots or subnet addresses gone), so its controller makes a new one the scheduler places elsewhere",
    ),
    (
        "events.k8s.io",
        "events",
        &["create", "patch"],
        "Events on nodes and pods (created, then patched as a series of repeats)",
    ),
];

/// Added only when `routes.allocatePodCidrs` or `sharedEni.enabled` is on:
/// the ClusterRole `vpc-eni-controller-patch-nodes` (`manifests/patch-nodes`,
/// an overlay includes it). Patching a Node lets a holder change its taints
/// and labels too, so a controller that needs neither goes without.
pub const NODE_PATCH_ACCESS: &[(&str, &str, &[&str], &str)] = &[(
    "",
    "nodes",
    &["patch"],
    "set spec.podCIDR of nodes without one (routes.allocatePodCidrs); mark nodes in shared-ENI mode (annotation vpc-eni.io/shared-eni, sharedEni.enabled)",
)];

/// Namespaced access (in the controller's own namespace) for leader election.
pub const NAMESPACE_ACCESS: &[(&str, &str, &[&str], &str)] = &[(
    "coordination.k8s.io",
    "leases",
    &["get", "create", "update"],
    "leader election",
)];

/// What the CNI plugin `vpc-eni-cni` reads, with the token the node
/// DaemonSet writes into its kubeconfig on every node (ClusterRole
/// `vpc-eni-node`). Read-only by design: the token lies in a file on each
/// host.
pub const NODE_ACCESS: &[(&str, &str, &[&str], &str)] = &[
    (
        "",
        "pods",
        &["get"],
        "the pod's vpc-eni.io/allocation annotation (ADD of an ENI pod)",
    ),
    (
        "",
        "nodes",
        &["get"],
        "the node's spec.podCIDR (ADD of a routes-mode pod, delegated to ptp + host-local) and its shared-ENI mark",
    ),
];
