//! `WorldSpec`: the YAML seed of an in-memory world, and its validation.
//!
//! ```yaml
//! region: cn-hangzhou
//! flavor: alibaba            # optional: alibaba (default) | aws
//! accessKeys: [{id: testid, secret: testsecret}]
//! vpcs: [{id: vpc-1, cidr: 192.168.0.0/16, routeTables: [{id: vtb-1, quota: 200}]}]
//! vswitches: [{id: vsw-h, vpc: vpc-1, zone: cn-hangzhou-h, cidr: 192.168.1.0/24}]
//! securityGroups: [{id: sg-1, vpc: vpc-1}]
//! instances: [{id: i-1, type: ecs.g6.xlarge, zone: cn-hangzhou-h, vswitch: vsw-h, privateIp: 192.168.1.10}]
//! faults: {}
//! ```
//! Unknown keys are rejected; validation errors name the field and the fix.

use super::faults::{FaultsSpec, ALL_APIS};
use super::flavor::Flavor;
use super::instance_types::{self, TypeCloud};
use ipam::ids::{
    InstanceId, InstanceType, RegionId, RouteTableId, SecurityGroupId, SubnetId, VpcId, ZoneId,
};
use ipnet::Ipv4Net;
use providers::model::Tags;
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::fmt;
use std::net::Ipv4Addr;

/// The example world of the issue: one VPC, one vSwitch, one instance of a
/// type with 2 secondary ENIs.
pub const EXAMPLE_YAML: &str = r#"region: cn-hangzhou
flavor: alibaba
accessKeys: [{id: testid, secret: testsecret}]
vpcs: [{id: vpc-1, cidr: 192.168.0.0/16, routeTables: [{id: vtb-1, quota: 200}]}]
vswitches: [{id: vsw-h, vpc: vpc-1, zone: cn-hangzhou-h, cidr: 192.168.1.0/24}]
securityGroups: [{id: sg-1, vpc: vpc-1}]
instances: [{id: i-1, type: ecs.g6.xlarge, zone: cn-hangzhou-h, vswitch: vsw-h, privateIp: 192.168.1.10}]
faults: {}
"#;

/// Why a spec cannot become a world.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error("world spec is not valid YAML for this schema: {0}")]
    Yaml(#[from] serde_yaml::Error),
    #[error("world spec field `{field}`: {problem}; {fix}")]
    Invalid {
        field: String,
        problem: String,
        fix: String,
    },
}

impl SpecError {
    pub(crate) fn invalid(
        field: impl Into<String>,
        problem: impl Into<String>,
        fix: impl Into<String>,
    ) -> Self {
        SpecError::Invalid {
            field: field.into(),
            problem: problem.into(),
            fix: fix.into(),
        }
    }
}

/// The seed of a world.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WorldSpec {
    /// Region id, e.g. `cn-hangzhou`; every zone must start with it.
    pub region: RegionId,
    /// `alibaba` (default) or `aws`: picks error codes, reserved addresses,
    /// capabilities and the instance types the world knows.
    #[serde(default)]
    pub flavor: Flavor,
    /// Access keys the HTTP front accepts.
    #[serde(default)]
    pub access_keys: Vec<AccessKey>,
    /// VPCs with their route tables.
    #[serde(default)]
    pub vpcs: Vec<VpcSpec>,
    /// Subnets (vSwitches).
    #[serde(default)]
    pub vswitches: Vec<VSwitchSpec>,
    /// Security groups, each in one VPC.
    #[serde(default)]
    pub security_groups: Vec<SecurityGroupSpec>,
    /// Instances present from the start, each with its primary ENI.
    #[serde(default)]
    pub instances: Vec<InstanceSpec>,
    /// Error rates, latency, rate limits and asynchronous delays.
    #[serde(default)]
    pub faults: FaultsSpec,
}

/// An access key pair. `Debug` never shows the secret.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccessKey {
    /// AccessKeyId.
    pub id: String,
    /// AccessKeySecret.
    pub secret: String,
}

impl fmt::Debug for AccessKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AccessKey")
            .field("id", &self.id)
            .field("secret", &"<redacted>")
            .finish()
    }
}

/// A VPC.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VpcSpec {
    /// VPC id, e.g. `vpc-1`.
    pub id: VpcId,
    /// The VPC CIDR; every vSwitch CIDR must lie inside it.
    pub cidr: Ipv4Net,
    /// Route tables; the one with `main: true` (else the first) is the main table.
    #[serde(default)]
    pub route_tables: Vec<RouteTableSpec>,
}

/// A route table of a VPC.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RouteTableSpec {
    /// Route table id, e.g. `vtb-1` or `rtb-1`.
    pub id: RouteTableId,
    /// Custom entries the table takes (system entries do not count). Default:
    /// 200 (Alibaba) or 50 (AWS).
    #[serde(default)]
    pub quota: Option<u32>,
    /// Tags of the table (a cluster may pick its table by tag).
    #[serde(default)]
    pub tags: Tags,
    /// The VPC's main (system) table.
    #[serde(default)]
    pub main: bool,
}

/// A subnet (vSwitch).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VSwitchSpec {
    /// vSwitch / subnet id, e.g. `vsw-h`.
    pub id: SubnetId,
    /// The VPC it belongs to.
    pub vpc: VpcId,
    /// Zone, starting with the region id (e.g. `cn-hangzhou-h`).
    pub zone: ZoneId,
    /// Alibaba: /16 to /29; AWS: /16 to /28; inside the VPC CIDR.
    pub cidr: Ipv4Net,
}

/// A security group.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SecurityGroupSpec {
    /// Security group id, e.g. `sg-1`.
    pub id: SecurityGroupId,
    /// The VPC it belongs to.
    pub vpc: VpcId,
}

/// An instance with its primary ENI.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct InstanceSpec {
    /// Instance id, e.g. `i-1`.
    pub id: InstanceId,
    /// An instance type of the world's flavor from [`instance_types`].
    #[serde(rename = "type")]
    pub instance_type: InstanceType,
    /// Must equal the vSwitch's zone.
    pub zone: ZoneId,
    /// The vSwitch of the primary ENI.
    pub vswitch: SubnetId,
    /// Primary private IP: inside the vSwitch, not reserved, not taken.
    pub private_ip: Ipv4Addr,
    /// Security groups of the primary ENI (default: every group of the VPC).
    #[serde(default)]
    pub security_groups: Vec<SecurityGroupId>,
}

impl WorldSpec {
    /// Parse and validate a YAML spec.
    pub fn from_yaml(yaml: &str) -> Result<Self, SpecError> {
        let spec: WorldSpec = serde_yaml::from_str(yaml)?;
        spec.validate()?;
        Ok(spec)
    }

    /// Check everything that would make the world inconsistent.
    pub fn validate(&self) -> Result<(), SpecError> {
        if self.region.as_str().is_empty() {
            return Err(SpecError::invalid(
                "region",
                "is empty",
                "set a region id such as cn-hangzhou",
            ));
        }
        for (i, key) in self.access_keys.iter().enumerate() {
            if key.id.is_empty() || key.secret.is_empty() {
                return Err(SpecError::invalid(
                    format!("accessKeys[{i}]"),
                    "has an empty id or secret",
                    "give both `id` and `secret`",
                ));
            }
        }
        self.validate_vpcs()?;
        self.validate_vswitches()?;
        for (i, sg) in self.security_groups.iter().enumerate() {
            if !self.vpcs.iter().any(|v| v.id == sg.vpc) {
                return Err(SpecError::invalid(
                    format!("securityGroups[{i}] ({}).vpc", sg.id),
                    format!("VPC `{}` does not exist", sg.vpc),
                    "name a VPC listed under `vpcs`",
                ));
            }
        }
        unique(
            "securityGroups",
            self.security_groups.iter().map(|s| s.id.as_str()),
        )?;
        let mut ips = BTreeSet::new();
        for (i, inst) in self.instances.iter().enumerate() {
            self.validate_instance(&format!("instances[{i}] ({})", inst.id), inst)?;
            if !ips.insert(inst.private_ip) {
                return Err(SpecError::invalid(
                    format!("instances[{i}] ({}).privateIp", inst.id),
                    format!("{} is used by another instance", inst.private_ip),
                    "give each instance its own address",
                ));
            }
        }
        unique("instances", self.instances.iter().map(|s| s.id.as_str()))?;
        self.validate_faults()
    }

    fn validate_vpcs(&self) -> Result<(), SpecError> {
        unique("vpcs", self.vpcs.iter().map(|v| v.id.as_str()))?;
        unique(
            "routeTables",
            self.vpcs
                .iter()
                .flat_map(|v| v.route_tables.iter().map(|t| t.id.as_str())),
        )?;
        for (i, vpc) in self.vpcs.iter().enumerate() {
            if vpc.cidr != vpc.cidr.trunc() {
                return Err(SpecError::invalid(
                    format!("vpcs[{i}] ({}).cidr", vpc.id),
                    format!("{} has host bits set", vpc.cidr),
                    format!("write it as {}", vpc.cidr.trunc()),
                ));
            }
            if vpc.route_tables.iter().filter(|t| t.main).count() > 1 {
                return Err(SpecError::invalid(
                    format!("vpcs[{i}] ({}).routeTables", vpc.id),
                    "more than one table has `main: true`",
                    "mark at most one table as main",
                ));
            }
            for (j, table) in vpc.route_tables.iter().enumerate() {
                if table.quota == Some(0) {
                    return Err(SpecError::invalid(
                        format!("vpcs[{i}].routeTables[{j}] ({}).quota", table.id),
                        "is 0",
                        "give a positive quota or leave it out for the cloud default",
                    ));
                }
            }
        }
        Ok(())
    }

    fn validate_vswitches(&self) -> Result<(), SpecError> {
        unique("vswitches", self.vswitches.iter().map(|v| v.id.as_str()))?;
        let max_prefix = match self.flavor {
            Flavor::Alibaba => 29,
            Flavor::Aws => 28,
        };
        for (i, vsw) in self.vswitches.iter().enumerate() {
            let field = format!("vswitches[{i}] ({})", vsw.id);
            let Some(vpc) = self.vpcs.iter().find(|v| v.id == vsw.vpc) else {
                return Err(SpecError::invalid(
                    format!("{field}.vpc"),
                    format!("VPC `{}` does not exist", vsw.vpc),
                    "name a VPC listed under `vpcs`",
                ));
            };
            if vsw.cidr != vsw.cidr.trunc() {
                return Err(SpecError::invalid(
                    format!("{field}.cidr"),
                    format!("{} has host bits set", vsw.cidr),
                    format!("write it as {}", vsw.cidr.trunc()),
                ));
            }
            if !vpc.cidr.contains(&vsw.cidr) {
                return Err(SpecError::invalid(
                    format!("{field}.cidr"),
                    format!("{} is outside VPC {} ({})", vsw.cidr, vpc.id, vpc.cidr),
                    "pick a CIDR inside the VPC CIDR",
                ));
            }
            if !(16..=max_prefix).contains(&vsw.cidr.prefix_len()) {
                return Err(SpecError::invalid(
                    format!("{field}.cidr"),
                    format!(
                        "/{} is not allowed in the {} flavor",
                        vsw.cidr.prefix_len(),
                        self.flavor
                    ),
                    format!("use a prefix length from /16 to /{max_prefix}"),
                ));
            }
            if !vsw.zone.as_str().starts_with(self.region.as_str()) {
                return Err(SpecError::invalid(
                    format!("{field}.zone"),
                    format!("zone `{}` is not in region `{}`", vsw.zone, self.region),
                    format!("use a zone of {} such as {}-a", self.region, self.region),
                ));
            }
            if let Some(other) = self.vswitches[..i].iter().find(|o| {
                o.vpc == vsw.vpc && (o.cidr.contains(&vsw.cidr) || vsw.cidr.contains(&o.cidr))
            }) {
                return Err(SpecError::invalid(
                    format!("{field}.cidr"),
                    format!(
                        "{} overlaps vSwitch {} ({})",
                        vsw.cidr, other.id, other.cidr
                    ),
                    "give every vSwitch of a VPC its own CIDR",
                ));
            }
        }
        Ok(())
    }

    pub(crate) fn validate_instance(
        &self,
        field: &str,
        inst: &InstanceSpec,
    ) -> Result<(), SpecError> {
        let want = match self.flavor {
            Flavor::Alibaba => TypeCloud::Alibaba,
            Flavor::Aws => TypeCloud::Aws,
        };
        if !instance_types::lookup(inst.instance_type.as_str()).is_some_and(|t| t.cloud == want) {
            let known: Vec<&str> = instance_types::all()
                .filter(|t| t.cloud == want)
                .map(|t| t.name)
                .collect();
            return Err(SpecError::invalid(
                format!("{field}.type"),
                format!(
                    "`{}` is not in the {} instance-type table",
                    inst.instance_type, self.flavor
                ),
                format!("use one of: {}", known.join(", ")),
            ));
        }
        let Some(vsw) = self.vswitches.iter().find(|v| v.id == inst.vswitch) else {
            return Err(SpecError::invalid(
                format!("{field}.vswitch"),
                format!("vSwitch `{}` does not exist", inst.vswitch),
                "name a vSwitch listed under `vswitches`",
            ));
        };
        if vsw.zone != inst.zone {
            return Err(SpecError::invalid(
                format!("{field}.zone"),
                format!(
                    "`{}` differs from the zone of vSwitch {} ({})",
                    inst.zone, vsw.id, vsw.zone
                ),
                format!("set zone: {}", vsw.zone),
            ));
        }
        if !vsw.cidr.contains(&inst.private_ip)
            || self.flavor.is_reserved(&vsw.cidr, inst.private_ip)
        {
            return Err(SpecError::invalid(
                format!("{field}.privateIp"),
                format!(
                    "{} is not a usable address of vSwitch {} ({})",
                    inst.private_ip, vsw.id, vsw.cidr
                ),
                "pick an address inside the vSwitch CIDR that the cloud does not reserve",
            ));
        }
        for sg in &inst.security_groups {
            if !self
                .security_groups
                .iter()
                .any(|s| &s.id == sg && s.vpc == vsw.vpc)
            {
                return Err(SpecError::invalid(
                    format!("{field}.securityGroups"),
                    format!("security group `{sg}` does not exist in VPC {}", vsw.vpc),
                    "name a security group of the instance's VPC",
                ));
            }
        }
        Ok(())
    }

    fn validate_faults(&self) -> Result<(), SpecError> {
        for (api, fault) in &self.faults.apis {
            let field = format!("faults.{api}");
            if !ALL_APIS.contains(&api.as_str()) {
                return Err(SpecError::invalid(
                    field,
                    "is not a known API name",
                    format!(
                        "use seed, attachDelayMs, detachDelayMs, routeDelayMs or one of: {}",
                        ALL_APIS.join(", ")
                    ),
                ));
            }
            if !(0.0..=1.0).contains(&fault.error_rate) {
                return Err(SpecError::invalid(
                    format!("{field}.errorRate"),
                    format!("{} is not a share", fault.error_rate),
                    "use a value from 0.0 to 1.0",
                ));
            }
            if fault.rate_per_second == Some(0) {
                return Err(SpecError::invalid(
                    format!("{field}.ratePerSecond"),
                    "is 0",
                    "give a positive rate or leave it out",
                ));
            }
        }
        Ok(())
    }
}

fn unique<'a>(what: &str, ids: impl Iterator<Item = &'a str>) -> Result<(), SpecError> {
    let mut seen = BTreeSet::new();
    for id in ids {
        if !seen.insert(id) {
            return Err(SpecError::invalid(
                what,
                format!("id `{id}` appears twice"),
                "give every object its own id",
            ));
        }
    }
    Ok(())
}
