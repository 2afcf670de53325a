//! The AWS backend: EC2 through `aws-sdk-ec2`.
//!
//! Laid out like the Alibaba backend, one file per job:
//! - this module: the configuration ([`AwsConfig`], [`default_call_policy`]),
//!   the ownership tags, [`AwsCloud`] and its [`Cloud`] implementation;
//! - [`api`]: the operations it calls, one constant each, and [`API_NAMES`];
//! - `client`: the SDK client set-up and the call wrapper every EC2 call goes
//!   through (the shared rate-limited, retrying [`Caller`]; the SDK's own
//!   retries are off so there is one retry policy);
//! - `errors`: EC2 error codes -> [`ErrorKind`](crate::ErrorKind);
//! - `instances`: instances, instance-type limits, subnets;
//! - `enis`: ENIs and their secondary IPs;
//! - `routes`: route tables and their entries;
//! - `wire`: EC2 shapes -> the cloud-neutral model, model -> filter values.
//!
//! EC2 emulators (moto) enforce none of the ENI, IP or subnet limits, and real
//! EC2 answers late with an error; so this backend checks instance-type limits
//! and subnet space itself and fails before any mutating call is sent.

pub mod api;
mod client;
mod enis;
mod errors;
mod instances;
mod routes;
mod wire;

pub use api::API_NAMES;
pub use client::{AwsSetupError, AwsTimeouts, StaticCredentials};

use crate::call::{ApiStats, CallPolicy, Caller};
use crate::cloud::Cloud;
use crate::error::CloudResult;
use crate::model::*;
use async_trait::async_trait;
use enis::MAX_IPS_PER_ASSIGN;
use ipam::ids::{
    ClusterId, EniId, IdempotencyToken, InstanceId, InstanceType, RouteTableId, SubnetId, VpcId,
};
use ipnet::Ipv4Net;
use parking_lot::Mutex;
use std::collections::{HashMap, HashSet};
use std::net::Ipv4Addr;
use std::sync::Arc;

/// Tag key prefix that marks an ENI as owned by one cluster (the same key the
/// AWS cloud provider and the VPC CNI use): `kubernetes.io/cluster/<id>=owned`.
pub const CLUSTER_TAG_PREFIX: &str = "kubernetes.io/cluster/";
/// Value of the cluster tag.
pub const CLUSTER_TAG_VALUE: &str = "owned";
/// EC2 reports no creation time for an ENI; we record it in this tag
/// (RFC 3339) so garbage collection can spare young ENIs after a restart.
pub const CREATED_AT_TAG: &str = "vpc-eni-controller/created-at";

/// The cluster tag `(key, value)` of `cluster`.
pub fn cluster_tag(cluster: &ClusterId) -> (String, String) {
    (
        format!("{CLUSTER_TAG_PREFIX}{cluster}"),
        CLUSTER_TAG_VALUE.to_owned(),
    )
}

/// Everything the AWS backend needs.
#[derive(Clone, Debug)]
pub struct AwsConfig {
    /// Region; `None` = the standard chain (env `AWS_REGION`, profile, IMDS).
    pub region: Option<String>,
    /// Endpoint override (VPC interface endpoint, an emulator).
    pub endpoint: Option<String>,
    /// Named profile of the shared config files; `None` = default chain.
    pub profile: Option<String>,
    /// Fixed credentials instead of the standard chain (env, profile, web
    /// identity / IRSA, container, IMDSv2). Meant for emulators and tests.
    pub static_credentials: Option<StaticCredentials>,
    pub cluster_id: ClusterId,
    /// Rate limits and retries of the shared [`Caller`].
    pub call_policy: CallPolicy,
    /// Route tables the controller manages; empty = every table of the VPC.
    pub route_table_ids: Vec<RouteTableId>,
    pub timeouts: AwsTimeouts,
}

impl AwsConfig {
    /// A config with defaults for everything but the cluster.
    pub fn new(cluster_id: ClusterId) -> Self {
        Self {
            region: None,
            endpoint: None,
            profile: None,
            static_credentials: None,
            cluster_id,
            call_policy: default_call_policy(),
            route_table_ids: Vec::new(),
            timeouts: AwsTimeouts::default(),
        }
    }
}

/// Per-API rate limits (calls per minute) sized from EC2's documented
/// token-bucket refill rates, well below them so that other tools in the
/// account keep their share.
pub fn default_call_policy() -> CallPolicy {
    let mut policy = CallPolicy::default();
    for (name, per_minute) in [
        (api::DESCRIBE_INSTANCES.name(), 600),
        (api::DESCRIBE_INSTANCE_TYPES.name(), 120),
        (api::DESCRIBE_SUBNETS.name(), 300),
        (api::DESCRIBE_NETWORK_INTERFACES.name(), 800),
        (api::CREATE_NETWORK_INTERFACE.name(), 500),
        (api::ATTACH_NETWORK_INTERFACE.name(), 500),
        (api::MODIFY_NETWORK_INTERFACE_ATTRIBUTE.name(), 500),
        (api::DETACH_NETWORK_INTERFACE.name(), 400),
        (api::DELETE_NETWORK_INTERFACE.name(), 500),
        (api::ASSIGN_PRIVATE_IP_ADDRESSES.name(), 400),
        (api::UNASSIGN_PRIVATE_IP_ADDRESSES.name(), 400),
        (api::DESCRIBE_ROUTE_TABLES.name(), 300),
        (api::CREATE_ROUTE.name(), 300),
        (api::DELETE_ROUTE.name(), 300),
        (api::MODIFY_INSTANCE_ATTRIBUTE.name(), 300),
    ] {
        policy
            .per_api_per_minute
            .insert(name.to_owned(), per_minute);
    }
    policy
}

/// The AWS implementation of [`Cloud`] (name `aws`).
pub struct AwsCloud {
    client: aws_sdk_ec2::Client,
    caller: Caller,
    cluster_id: ClusterId,
    route_table_ids: Vec<RouteTableId>,
    /// Instance-type limits seen so far (they never change for a type).
    known_types: Mutex<HashMap<InstanceType, InstanceTypeLimits>>,
    /// Types EC2 did not know, with when we last asked: asked again at most
    /// once per [`UNKNOWN_TYPE_REFRESH`].
    unknown_types: Mutex<HashMap<InstanceType, tokio::time::Instant>>,
    /// Instances whose source/destination check we already turned off.
    source_dest_off: Mutex<HashSet<InstanceId>>,
    /// Device indexes of attaches in flight per instance: attaches to one
    /// instance run concurrently, and each must pick an index the others
    /// have not (EC2 refuses a second interface at one index; moto does not).
    attaching: Mutex<HashMap<InstanceId, enis::InstanceAttaches>>,
}

/// How long an instance type EC2 did not know stays "not found" without
/// asking again.
pub const UNKNOWN_TYPE_REFRESH: std::time::Duration = std::time::Duration::from_secs(60);

impl AwsCloud {
    /// Build the SDK client from `config` (standard credential and region
    /// chains unless overridden) and the backend on top of it.
    pub async fn connect(config: AwsConfig) -> Result<Self, AwsSetupError> {
        let client = client::build_client(&config).await?;
        Ok(Self::from_parts(client, config))
    }

    /// Wrap an SDK client built elsewhere (tests use `aws-smithy-mocks`). The
    /// client's own retries are turned off so the shared [`Caller`] is the one
    /// place that retries.
    pub fn from_sdk_client(client: aws_sdk_ec2::Client, config: AwsConfig) -> Self {
        let conf = client
            .config()
            .to_builder()
            .retry_config(aws_sdk_ec2::config::retry::RetryConfig::disabled())
            .build();
        Self::from_parts(aws_sdk_ec2::Client::from_conf(conf), config)
    }

    fn from_parts(client: aws_sdk_ec2::Client, config: AwsConfig) -> Self {
        Self {
            client,
            caller: Caller::new(config.call_policy),
            cluster_id: config.cluster_id,
            route_table_ids: config.route_table_ids,
            known_types: Mutex::default(),
            unknown_types: Mutex::default(),
            source_dest_off: Mutex::default(),
            attaching: Mutex::default(),
        }
    }

    /// The cluster this backend tags ENIs for.
    pub fn cluster_id(&self) -> &ClusterId {
        &self.cluster_id
    }
}

#[async_trait]
impl Cloud for AwsCloud {
    fn name(&self) -> &'static str {
        "aws"
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            // EC2 has no batch route call; tables take concurrent changes.
            route_batch_size: 1,
            serialize_route_changes: false,
            max_ips_per_assign: MAX_IPS_PER_ASSIGN,
        }
    }

    fn stats(&self) -> Arc<ApiStats> {
        self.caller.stats()
    }

    async fn describe_instance(&self, id: &InstanceId) -> CloudResult<Instance> {
        self.do_describe_instance(id).await
    }

    async fn describe_instances(&self, ids: &[InstanceId]) -> CloudResult<Vec<Instance>> {
        self.do_describe_instances(ids).await
    }

    async fn instance_type_limits(
        &self,
        instance_type: &InstanceType,
    ) -> CloudResult<InstanceTypeLimits> {
        self.do_instance_type_limits(instance_type).await
    }

    async fn describe_subnets(&self, ids: &[SubnetId]) -> CloudResult<Vec<Subnet>> {
        self.do_describe_subnets(ids).await
    }

    async fn create_eni(&self, request: &CreateEniRequest) -> CloudResult<Eni> {
        self.do_create_eni(request).await
    }

    async fn attach_eni(&self, eni: &EniId, instance: &InstanceId) -> CloudResult<()> {
        self.do_attach_eni(eni, instance).await
    }

    async fn detach_eni(&self, eni: &EniId, instance: &InstanceId) -> CloudResult<()> {
        self.do_detach_eni(eni, instance).await
    }

    async fn delete_eni(&self, eni: &EniId) -> CloudResult<()> {
        self.do_delete_eni(eni).await
    }

    async fn describe_enis(&self, filter: &EniFilter) -> CloudResult<Vec<Eni>> {
        self.do_describe_enis(filter).await
    }

    async fn assign_private_ips(
        &self,
        eni: &EniId,
        count: u32,
        token: &IdempotencyToken,
    ) -> CloudResult<Vec<Ipv4Addr>> {
        self.do_assign_private_ips(eni, count, token).await
    }

    async fn unassign_private_ips(&self, eni: &EniId, ips: &[Ipv4Addr]) -> CloudResult<()> {
        self.do_unassign_private_ips(eni, ips).await
    }

    async fn describe_route_tables(&self, vpc: &VpcId) -> CloudResult<Vec<RouteTable>> {
        self.do_describe_route_tables(vpc).await
    }

    async fn list_route_entries(&self, table: &RouteTableId) -> CloudResult<Vec<RouteEntry>> {
        self.do_list_route_entries(table).await
    }

    async fn create_route_entries(
        &self,
        table: &RouteTableId,
        entries: &[NewRouteEntry],
    ) -> CloudResult<BatchOutcome> {
        self.do_create_route_entries(table, entries).await
    }

    async fn delete_route_entries(
        &self,
        table: &RouteTableId,
        entries: &[(Ipv4Net, InstanceId)],
    ) -> CloudResult<BatchOutcome> {
        self.do_delete_route_entries(table, entries).await
    }
}
