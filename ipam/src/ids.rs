//! Newtype identifiers shared by every layer.
//!
//! They live here, at the bottom of the dependency graph, so that `ipam`
//! decisions, the `providers` contract and the controller all speak of the
//! same `EniId` without conversions, and so that passing a subnet id where an
//! ENI id is expected does not compile.

use serde::{Deserialize, Serialize};
use std::fmt;

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            pub fn new(id: impl Into<String>) -> Self {
                Self(id.into())
            }
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl From<&str> for $name {
            fn from(s: &str) -> Self {
                Self(s.to_owned())
            }
        }

        impl From<String> for $name {
            fn from(s: String) -> Self {
                Self(s)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
    };
}

id_type!(
    /// A cloud region, e.g. `cn-hangzhou` or `us-east-1`.
    RegionId
);
id_type!(
    /// An availability zone, e.g. `cn-hangzhou-h` or `us-east-1a`.
    ZoneId
);
id_type!(
    /// A VPC, e.g. `vpc-bp1...`.
    VpcId
);
id_type!(
    /// A subnet (Alibaba: vSwitch), e.g. `vsw-...` or `subnet-...`.
    SubnetId
);
id_type!(
    /// A compute instance (ECS / EC2), e.g. `i-...`.
    InstanceId
);
id_type!(
    /// An instance type, e.g. `ecs.g6.xlarge` or `t3.medium`.
    InstanceType
);
id_type!(
    /// An elastic network interface, e.g. `eni-...`.
    EniId
);
id_type!(
    /// A security group, e.g. `sg-...`.
    SecurityGroupId
);
id_type!(
    /// A VPC route table, e.g. `vtb-...` or `rtb-...`.
    RouteTableId
);
id_type!(
    /// A client token that makes one logical mutating call idempotent: the
    /// same token is sent on every retry of that call.
    IdempotencyToken
);
id_type!(
    /// The cluster identity that marks what the controller owns in the cloud.
    ClusterId
);
