//! Building Node objects the way a kubelet registers them, for tests and
//! the `simulate` command.

use serde_json::{json, Value};

/// What a simulated node looks like.
#[derive(Debug, Clone)]
pub struct NodeTemplate {
    /// Node name.
    pub name: String,
    /// `node.kubernetes.io/instance-type` label.
    pub instance_type: String,
    /// CPU capacity (`4`).
    pub cpu: String,
    /// Memory capacity (`8Gi`).
    pub memory: String,
    /// Max pods (`110` by default).
    pub pods: u32,
    /// `spec.providerID`.
    pub provider_id: Option<String>,
    /// `spec.podCIDR`.
    pub pod_cidr: Option<String>,
    /// `topology.kubernetes.io/zone` label.
    pub zone: Option<String>,
    /// InternalIP address.
    pub internal_ip: Option<String>,
    /// Extended resources added to capacity and allocatable (`aliyun/eni` -> `2`).
    pub extended: Vec<(String, String)>,
}

impl NodeTemplate {
    /// A Ready node of `instance_type` with `cpu`/`memory` capacity.
    pub fn new(name: &str, instance_type: &str, cpu: &str, memory: &str) -> Self {
        NodeTemplate {
            name: name.into(),
            instance_type: instance_type.into(),
            cpu: cpu.into(),
            memory: memory.into(),
            pods: 110,
            provider_id: None,
            pod_cidr: None,
            zone: None,
            internal_ip: None,
            extended: Vec::new(),
        }
    }

    /// The Node object.
    pub fn build(&self) -> Value {
        let mut labels = json!({
            "kubernetes.io/hostname": self.name,
            "kubernetes.io/os": "linux",
            "kubernetes.io/arch": "amd64",
            "node.kubernetes.io/instance-type": self.instance_type,
        });
        if let Some(z) = &self.zone {
            labels["topology.kubernetes.io/zone"] = json!(z);
        }
        let mut capacity = json!({
            "cpu": self.cpu,
            "memory": self.memory,
            "pods": self.pods.to_string(),
            "ephemeral-storage": "40Gi",
        });
        for (k, v) in &self.extended {
            capacity[k] = json!(v);
        }
        let mut addresses = vec![json!({"type": "Hostname", "address": self.name})];
        if let Some(ip) = &self.internal_ip {
            addresses.insert(0, json!({"type": "InternalIP", "address": ip}));
        }
        let mut spec = json!({});
        if let Some(p) = &self.provider_id {
            spec["providerID"] = json!(p);
        }
        if let Some(c) = &self.pod_cidr {
            spec["podCIDR"] = json!(c);
            spec["podCIDRs"] = json!([c]);
        }
        json!({
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": self.name, "labels": labels},
            "spec": spec,
            "status": {
                "capacity": capacity,
                "allocatable": capacity,
                "addresses": addresses,
                "conditions": [{
                    "type": "Ready", "status": "True", "reason": "KubeletReady",
                    "message": "kubelet is posting ready status",
                    "lastHeartbeatTime": super::store::now_time(),
                    "lastTransitionTime": super::store::now_time(),
                }],
                "nodeInfo": {
                    "kubeletVersion": "v1.20.2",
                    "kubeProxyVersion": "v1.20.2",
                    "osImage": "Alibaba Cloud Linux 3",
                    "kernelVersion": "5.10.134",
                    "containerRuntimeVersion": "containerd://1.6.0",
                    "operatingSystem": "linux",
                    "architecture": "amd64",
                },
            },
        })
    }
}

/// A Ready node: name, instance type with its cpu/memory, providerID, podCIDR, zone.
pub fn node_object(
    name: &str,
    instance_type: &str,
    cpu: &str,
    memory: &str,
    provider_id: &str,
    pod_cidr: Option<&str>,
    zone: &str,
) -> Value {
    let mut t = NodeTemplate::new(name, instance_type, cpu, memory);
    t.provider_id = Some(provider_id.into());
    t.pod_cidr = pod_cidr.map(str::to_string);
    t.zone = Some(zone.into());
    t.build()
}
