//! The Alibaba Cloud backend: ECS (2014-05-26) and VPC (2016-04-28) OpenAPI,
//! RPC style, signed HMAC-SHA1, over reqwest.
//!
//! Laid out like the AWS backend, one file per job:
//! - this module: the configuration ([`AlibabaConfig`], [`DEFAULT_API_LIMITS`]),
//!   [`AlibabaCloud`] and its [`Cloud`] implementation;
//! - [`api`]: the actions it calls, one constant each, and [`API_NAMES`];
//! - `client`: the signed RPC transport every action goes through (the
//!   shared rate-limited, retrying [`Caller`]) and the request parameters;
//! - `errors`: Alibaba error codes -> [`ErrorKind`](crate::ErrorKind);
//! - `instances`: instances, instance-type limits, subnets (vSwitches);
//! - `enis`: ENIs and their secondary IPs;
//! - `routes`: route tables and their entries;
//! - `wire`: Alibaba's JSON shapes and their translation into the model;
//! - Alibaba only: [`sign`] (request signatures) and [`credentials`]
//!   (AccessKey, STS token, RAM role).
//!
//! Nothing Alibaba-specific leaves this module but the config, the cloud,
//! the credential types, the signing function and the API names.

pub mod api;
mod client;
pub mod credentials;
mod enis;
mod errors;
mod instances;
mod routes;
pub mod sign;
mod wire;

/// The response parsers, for the fuzz targets in `fuzz/` (feature `fuzzing`).
#[cfg(feature = "fuzzing")]
pub use wire::read_any_answer;

pub use api::API_NAMES;
pub use client::Timeouts;
pub use credentials::{CredentialProvider, CredentialSource, Credentials, Secret};

use crate::call::{ApiStats, CallPolicy, Caller};
use crate::cloud::Cloud;
use crate::error::CloudResult;
use crate::model::*;
use crate::wait::PollPolicy;
use async_trait::async_trait;
use client::RpcClient;
use ipam::ids::{
    EniId, IdempotencyToken, InstanceId, InstanceType, RegionId, RouteTableId, SubnetId, VpcId,
};
use ipnet::Ipv4Net;
use std::net::Ipv4Addr;
use std::sync::Arc;

/// Per-API rate limits (calls per minute) Alibaba's own CNI uses; anything
/// not named here gets [`CallPolicy::default_per_minute`].
pub const DEFAULT_API_LIMITS: &[(&str, u32)] = &[
    (api::CREATE_NETWORK_INTERFACE.name(), 500),
    (api::ATTACH_NETWORK_INTERFACE.name(), 500),
    (api::DELETE_NETWORK_INTERFACE.name(), 500),
    (api::DETACH_NETWORK_INTERFACE.name(), 400),
    (api::ASSIGN_PRIVATE_IP_ADDRESSES.name(), 400),
    (api::UNASSIGN_PRIVATE_IP_ADDRESSES.name(), 400),
    (api::DESCRIBE_NETWORK_INTERFACES.name(), 800),
    (api::DESCRIBE_VSWITCHES.name(), 300),
];

/// How to reach and authenticate against Alibaba Cloud.
#[derive(Clone, Debug)]
pub struct AlibabaConfig {
    /// e.g. `cn-hangzhou`.
    pub region: RegionId,
    /// One base URL serving both ECS and VPC (e.g. `http://127.0.0.1:PORT`);
    /// `None` uses `https://{ecs,vpc}.<region>.aliyuncs.com`.
    pub endpoint: Option<String>,
    pub credentials: CredentialSource,
    pub call_policy: CallPolicy,
    /// How `create_eni` waits for a new ENI to become `Available`.
    pub poll: PollPolicy,
    /// ECS metadata service base URL, for RAM-role credentials.
    pub metadata_url: String,
    pub timeouts: Timeouts,
}

impl AlibabaConfig {
    /// Defaults for `region`: public endpoints, environment then RAM role
    /// credentials, the default per-API limits.
    pub fn new(region: impl Into<RegionId>) -> Self {
        Self {
            region: region.into(),
            endpoint: None,
            credentials: CredentialSource::default_chain(),
            call_policy: Self::default_call_policy(),
            poll: PollPolicy::default(),
            metadata_url: credentials::DEFAULT_METADATA_URL.to_owned(),
            timeouts: Timeouts::default(),
        }
    }

    /// [`CallPolicy::default`] with [`DEFAULT_API_LIMITS`].
    pub fn default_call_policy() -> CallPolicy {
        let mut policy = CallPolicy::default();
        for (api, per_minute) in DEFAULT_API_LIMITS {
            policy
                .per_api_per_minute
                .insert((*api).to_owned(), *per_minute);
        }
        policy
    }
}

/// The Alibaba Cloud backend.
pub struct AlibabaCloud {
    client: RpcClient,
    poll: PollPolicy,
    types: tokio::sync::Mutex<instances::TypeCache>,
}

impl std::fmt::Debug for AlibabaCloud {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AlibabaCloud")
            .field("region", self.client.region())
            .field("ecs", &self.client.endpoint(client::Product::Ecs))
            .finish_non_exhaustive()
    }
}

impl AlibabaCloud {
    /// Build the backend; credentials are resolved now (explicit, environment,
    /// RAM role) but fetched from the metadata service only on first use.
    pub fn new(config: AlibabaConfig) -> CloudResult<Self> {
        let credentials = Arc::new(CredentialProvider::new(
            &config.credentials,
            &config.metadata_url,
        ));
        Self::with_credentials(config, credentials)
    }

    /// Build the backend with an already resolved credential provider.
    pub fn with_credentials(
        config: AlibabaConfig,
        credentials: Arc<CredentialProvider>,
    ) -> CloudResult<Self> {
        let client = RpcClient::new(
            config.region,
            config.endpoint,
            credentials,
            Caller::new(config.call_policy),
            config.timeouts,
        )?;
        Ok(Self {
            client,
            poll: config.poll,
            types: tokio::sync::Mutex::new(instances::TypeCache::default()),
        })
    }
}

#[async_trait]
impl Cloud for AlibabaCloud {
    fn name(&self) -> &'static str {
        "alibaba"
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            route_batch_size: routes::BATCH_SIZE,
            serialize_route_changes: true,
            max_ips_per_assign: enis::MAX_IPS_PER_ASSIGN,
        }
    }

    fn stats(&self) -> Arc<ApiStats> {
        self.client.caller().stats()
    }

    async fn describe_instance(&self, id: &InstanceId) -> CloudResult<Instance> {
        self.describe_instance_impl(id).await
    }

    async fn describe_instances(&self, ids: &[InstanceId]) -> CloudResult<Vec<Instance>> {
        self.describe_instances_impl(ids).await
    }

    async fn instance_type_limits(
        &self,
        instance_type: &InstanceType,
    ) -> CloudResult<InstanceTypeLimits> {
        self.instance_type_limits_impl(instance_type).await
    }

    async fn describe_subnets(&self, ids: &[SubnetId]) -> CloudResult<Vec<Subnet>> {
        self.describe_subnets_impl(ids).await
    }

    async fn create_eni(&self, request: &CreateEniRequest) -> CloudResult<Eni> {
        self.create_eni_impl(request).await
    }

    async fn attach_eni(&self, eni: &EniId, instance: &InstanceId) -> CloudResult<()> {
        self.attach_eni_impl(eni, instance).await
    }

    async fn detach_eni(&self, eni: &EniId, instance: &InstanceId) -> CloudResult<()> {
        self.detach_eni_impl(eni, instance).await
    }

    async fn delete_eni(&self, eni: &EniId) -> CloudResult<()> {
        self.delete_eni_impl(eni).await
    }

    async fn describe_enis(&self, filter: &EniFilter) -> CloudResult<Vec<Eni>> {
        self.describe_enis_impl(filter).await
    }

    async fn assign_private_ips(
        &self,
        eni: &EniId,
        count: u32,
        token: &IdempotencyToken,
    ) -> CloudResult<Vec<Ipv4Addr>> {
        self.assign_private_ips_impl(eni, count, token).await
    }

    async fn unassign_private_ips(&self, eni: &EniId, ips: &[Ipv4Addr]) -> CloudResult<()> {
        self.unassign_private_ips_impl(eni, ips).await
    }

    async fn describe_route_tables(&self, vpc: &VpcId) -> CloudResult<Vec<RouteTable>> {
        self.describe_route_tables_impl(vpc).await
    }

    async fn list_route_entries(&self, table: &RouteTableId) -> CloudResult<Vec<RouteEntry>> {
        self.list_route_entries_impl(table).await
    }

    async fn create_route_entries(
        &self,
        table: &RouteTableId,
        entries: &[NewRouteEntry],
    ) -> CloudResult<BatchOutcome> {
        self.create_route_entries_impl(table, entries).await
    }

    async fn delete_route_entries(
        &self,
        table: &RouteTableId,
        entries: &[(Ipv4Net, InstanceId)],
    ) -> CloudResult<BatchOutcome> {
        self.delete_route_entries_impl(table, entries).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_limits_follow_the_documented_per_api_rates() {
        let policy = AlibabaConfig::default_call_policy();
        assert_eq!(policy.per_minute("CreateNetworkInterface"), 500);
        assert_eq!(policy.per_minute("DetachNetworkInterface"), 400);
        assert_eq!(policy.per_minute("AssignPrivateIpAddresses"), 400);
        assert_eq!(policy.per_minute("DescribeNetworkInterfaces"), 800);
        assert_eq!(policy.per_minute("DescribeVSwitches"), 300);
        assert_eq!(
            policy.per_minute("DescribeRouteEntryList"),
            CallPolicy::default().default_per_minute
        );
    }

    #[test]
    fn capabilities_and_config_debug() {
        let mut config = AlibabaConfig::new("cn-hangzhou");
        config.credentials =
            CredentialSource::explicit("id", "shh-secret", Some("shh-token".into()));
        let shown = format!("{config:?}");
        assert!(!shown.contains("shh-secret") && !shown.contains("shh-token"));
        let cloud = AlibabaCloud::new(config).unwrap();
        assert_eq!(
            cloud.capabilities(),
            Capabilities {
                route_batch_size: 50,
                serialize_route_changes: true,
                max_ips_per_assign: 10,
            }
        );
        assert_eq!(cloud.name(), "alibaba");
    }
}
