//! A bundled catalogue of common Alibaba ECS and AWS EC2 instance types:
//! per-type ENI and private-IP limits, vCPUs and memory. `max-pods` answers
//! from it without a cloud call (as the AWS max-pods calculator does from
//! its own table); the fakes model instances with it.

/// Which cloud sells a type.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TypeCloud {
    Alibaba,
    Aws,
}

/// One instance type and what it allows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TypeInfo {
    pub name: &'static str,
    pub cloud: TypeCloud,
    pub vcpus: u32,
    pub memory_mib: u64,
    /// ENIs the instance may have, primary included (Alibaba `EniQuantity`,
    /// EC2 `MaximumNetworkInterfaces`).
    pub max_enis: u32,
    /// Private IPv4 addresses per ENI, primary included (Alibaba
    /// `EniPrivateIpAddressQuantity`, EC2 `Ipv4AddressesPerInterface`).
    pub ipv4_per_eni: u32,
}

impl TypeInfo {
    /// Secondary ENIs an instance of this type can take (the primary is fixed).
    pub fn secondary_enis(&self) -> u32 {
        self.max_enis.saturating_sub(1)
    }
}

const fn t(
    name: &'static str,
    cloud: TypeCloud,
    vcpus: u32,
    memory_gib: u64,
    max_enis: u32,
    ipv4_per_eni: u32,
) -> TypeInfo {
    TypeInfo {
        name,
        cloud,
        vcpus,
        memory_mib: memory_gib * 1024,
        max_enis,
        ipv4_per_eni,
    }
}

use TypeCloud::{Alibaba as A, Aws as W};

// Checking note: the AWS rows were cross-checked against public copies of the
// AWS table (t3.small 3x4, t3.medium 3x6, m5.large 3x10, c5.large 3 ENIs,
// c5/m5.xlarge 4x15). The Alibaba rows follow the family pages cited below;
// the search corpus held no copy of those tables, so re-check a row against
// the page (or DescribeInstanceTypes) before relying on an exact number.
static TYPES: &[TypeInfo] = &[
    // Alibaba g6 (general purpose, 1:4). Source: Alibaba Cloud ECS docs,
    // "General-purpose instance families" (g6 table: ENIs, private IPv4
    // addresses per ENI), https://www.alibabacloud.com/help/en/ecs/user-guide/general-purpose-instance-families
    t("ecs.g6.large", A, 2, 8, 2, 6),
    t("ecs.g6.xlarge", A, 4, 16, 3, 10),
    t("ecs.g6.2xlarge", A, 8, 32, 4, 10),
    t("ecs.g6.3xlarge", A, 12, 48, 6, 10),
    // Alibaba g7 (general purpose, 1:4). Same page, g7 table.
    t("ecs.g7.large", A, 2, 8, 3, 6),
    t("ecs.g7.xlarge", A, 4, 16, 4, 15),
    t("ecs.g7.2xlarge", A, 8, 32, 4, 15),
    // Alibaba c6 (compute optimised, 1:2). Source: Alibaba Cloud ECS docs,
    // "Compute-optimized instance families" (c6 table),
    // https://www.alibabacloud.com/help/en/ecs/user-guide/compute-optimized-instance-families
    // ecs.c6.xlarge is the 4 vCPU / 8 GiB type of the docs scenario: 3 ENIs,
    // so 2 secondary ENIs.
    t("ecs.c6.large", A, 2, 4, 2, 6),
    t("ecs.c6.xlarge", A, 4, 8, 3, 10),
    t("ecs.c6.2xlarge", A, 8, 16, 4, 10),
    // Alibaba c7 (compute optimised, 1:2). Same page, c7 table.
    t("ecs.c7.large", A, 2, 4, 3, 6),
    t("ecs.c7.xlarge", A, 4, 8, 4, 15),
    // AWS t3 (burstable). Source: Amazon EC2 User Guide, "Maximum IP addresses
    // per network interface" (DescribeInstanceTypes NetworkInfo),
    // https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/AvailableIpPerENI.html
    t("t3.micro", W, 2, 1, 2, 2),
    t("t3.small", W, 2, 2, 3, 4),
    t("t3.medium", W, 2, 4, 3, 6),
    t("t3.large", W, 2, 8, 3, 12),
    t("t3.xlarge", W, 4, 16, 4, 15),
    // AWS m5 (general purpose). Same page.
    t("m5.large", W, 2, 8, 3, 10),
    t("m5.xlarge", W, 4, 16, 4, 15),
    t("m5.2xlarge", W, 8, 32, 4, 15),
    // AWS c5 (compute optimised). Same page.
    t("c5.large", W, 2, 4, 3, 10),
    t("c5.xlarge", W, 4, 8, 4, 15),
    t("c5.2xlarge", W, 8, 16, 4, 15),
];

/// The type with this exact name, whichever cloud sells it.
pub fn lookup(instance_type: &str) -> Option<&'static TypeInfo> {
    TYPES.iter().find(|info| info.name == instance_type)
}

/// Every type in the catalogue.
pub fn all() -> impl Iterator<Item = &'static TypeInfo> {
    TYPES.iter()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docs_scenario_type_leaves_two_secondary_enis() {
        let c6 = lookup("ecs.c6.xlarge").unwrap();
        assert_eq!((c6.vcpus, c6.memory_mib), (4, 8 * 1024));
        assert_eq!(c6.secondary_enis(), 2);
    }

    #[test]
    fn t3_medium_is_three_enis_of_six_ips() {
        let t3 = lookup("t3.medium").unwrap();
        assert_eq!((t3.max_enis, t3.ipv4_per_eni), (3, 6));
        assert_eq!(t3.cloud, TypeCloud::Aws);
    }

    #[test]
    fn names_are_unique() {
        let mut names: Vec<_> = all().map(|i| i.name).collect();
        names.sort_unstable();
        let before = names.len();
        names.dedup();
        assert_eq!(before, names.len());
    }
}
