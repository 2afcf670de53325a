//! The AWS backend: EC2 through `aws-sdk-ec2`.
//!
//! Owns the SDK client set-up ([`client`]), the error mapping ([`errors`]),
//! the translation of EC2 shapes into the cloud-neutral model ([`convert`]),
//! and the [`crate::Cloud`] implementation split by resource (instances and
//! subnets, ENIs and IPs, routes). Every wire call goes through the shared
//! [`Caller`]; the SDK's own retries are off so there is one retry policy.
//!
//! EC2 emulators (moto) enforce none of the ENI, IP or subnet limits, and real
//! EC2 answers late with an error; so this backend checks instance-type limits
//! and subnet space itself and fails before any mutating call is sent.

mod client;
mod cloud_impl;
mod convert;
mod enis;
mod errors;
mod instances;
mod routes;

pub use client::{AwsSetupError, AwsTimeouts, StaticCredentials};

use crate::call::{CallPolicy, Caller};
use crate::error::CloudResult;
use aws_sdk_ec2::error::{ProvideErrorMetadata, SdkError};
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use ipam::ids::{ClusterId, IdempotencyToken, InstanceId, InstanceType, RouteTableId};
use parking_lot::Mutex;
use std::collections::{HashMap, HashSet};
use std::future::Future;

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
    for (api, per_minute) in [
        ("DescribeInstances", 600),
        ("DescribeInstanceTypes", 120),
        ("DescribeSubnets", 300),
        ("DescribeNetworkInterfaces", 800),
        ("CreateNetworkInterface", 500),
        ("AttachNetworkInterface", 500),
        ("ModifyNetworkInterfaceAttribute", 500),
        ("DetachNetworkInterface", 400),
        ("DeleteNetworkInterface", 500),
        ("AssignPrivateIpAddresses", 400),
        ("UnassignPrivateIpAddresses", 400),
        ("DescribeRouteTables", 300),
        ("CreateRoute", 300),
        ("DeleteRoute", 300),
        ("ModifyInstanceAttribute", 300),
    ] {
        policy.per_api_per_minute.insert(api.to_owned(), per_minute);
    }
    policy
}

/// The AWS implementation of [`crate::Cloud`] (name `aws`).
pub struct AwsCloud {
    client: aws_sdk_ec2::Client,
    caller: Caller,
    cluster_id: ClusterId,
    route_table_ids: Vec<RouteTableId>,
    /// Instance-type limits seen so far (they never change for a type).
    known_types: Mutex<HashMap<InstanceType, crate::model::InstanceTypeLimits>>,
    /// Types EC2 did not know, with when we last asked: asked again at most
    /// once per [`UNKNOWN_TYPE_REFRESH`].
    unknown_types: Mutex<HashMap<InstanceType, tokio::time::Instant>>,
    /// Instances whose source/destination check we already turned off.
    source_dest_off: Mutex<HashSet<InstanceId>>,
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
        }
    }

    /// The cluster this backend tags ENIs for.
    pub fn cluster_id(&self) -> &ClusterId {
        &self.cluster_id
    }

    /// One logical EC2 call through the shared [`Caller`]: `send` builds and
    /// sends the request with a fresh client handle per attempt, and its SDK
    /// error is mapped before the caller decides on a retry.
    async fn send<T, E, F, Fut>(
        &self,
        api: &'static str,
        token: Option<&IdempotencyToken>,
        mut send: F,
    ) -> CloudResult<T>
    where
        F: FnMut(aws_sdk_ec2::Client, crate::call::Attempt) -> Fut,
        Fut: Future<Output = Result<T, SdkError<E, HttpResponse>>>,
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        self.caller
            .call(api, token, |attempt| {
                let fut = send(self.client.clone(), attempt);
                async move { fut.await.map_err(|e| errors::from_sdk(api, e)) }
            })
            .await
    }
}
