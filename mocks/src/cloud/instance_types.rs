//! The instance-type catalogue of the model: `ipam::instance_types` (real
//! per-type ENI and private-IP limits, vCPUs and memory). The fake
//! scheduler/kubelet reads vCPUs and memory for node capacity; the world
//! enforces `max_enis` on attach and `ipv4_per_eni` on assign.

use ipam::ids::InstanceType;
pub use ipam::instance_types::*;
use providers::model::InstanceTypeLimits;

/// The limits in the shape the `Cloud` trait answers with.
pub fn limits(info: &TypeInfo) -> InstanceTypeLimits {
    InstanceTypeLimits {
        instance_type: InstanceType::new(info.name),
        max_enis: info.max_enis,
        ipv4_per_eni: info.ipv4_per_eni,
    }
}
