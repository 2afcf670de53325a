//! The EC2 transport: building the SDK client (credential and region
//! chains, endpoint override, explicit timeouts, SDK retries off) and
//! [`AwsCloud::send`], the wrapper every EC2 call goes through.

use super::api::Api;
use super::errors::from_sdk;
use super::{AwsCloud, AwsConfig};
use crate::call::Attempt;
use crate::error::CloudResult;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::BehaviorVersion;
use aws_sdk_ec2::config::{Credentials, Region};
use aws_sdk_ec2::error::{ProvideErrorMetadata, SdkError};
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use ipam::ids::IdempotencyToken;
use std::fmt;
use std::future::Future;
use std::time::Duration;

/// Fixed credentials (emulators, tests). The secret never shows in `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub struct StaticCredentials {
    pub access_key_id: String,
    pub secret_access_key: String,
    pub session_token: Option<String>,
}

impl fmt::Debug for StaticCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StaticCredentials")
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"<redacted>")
            .field(
                "session_token",
                &self.session_token.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

/// Timeouts of every EC2 call. The SDK has none by default except connect,
/// and a hung call would stall a reconciler forever.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AwsTimeouts {
    pub connect: Duration,
    /// One HTTP attempt (the SDK makes exactly one per logical try).
    pub attempt: Duration,
    /// The whole SDK operation, credential resolution included.
    pub operation: Duration,
}

impl Default for AwsTimeouts {
    fn default() -> Self {
        Self {
            connect: Duration::from_secs(5),
            attempt: Duration::from_secs(20),
            operation: Duration::from_secs(30),
        }
    }
}

/// Why the AWS client could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum AwsSetupError {
    #[error(
        "no AWS region: set it in the config, AWS_REGION, the profile, or run where IMDS answers"
    )]
    NoRegion,
    #[error("invalid endpoint override {endpoint:?}: {reason}")]
    InvalidEndpoint { endpoint: String, reason: String },
}

pub(crate) async fn build_client(config: &AwsConfig) -> Result<aws_sdk_ec2::Client, AwsSetupError> {
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        // The shared Caller retries with its own backoff and counters; SDK
        // retries underneath would multiply the attempts and hide throttling.
        .retry_config(RetryConfig::disabled())
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(config.timeouts.connect)
                .operation_attempt_timeout(config.timeouts.attempt)
                .operation_timeout(config.timeouts.operation)
                .build(),
        );
    if let Some(region) = &config.region {
        loader = loader.region(Region::new(region.clone()));
    }
    if let Some(profile) = &config.profile {
        loader = loader.profile_name(profile.clone());
    }
    if let Some(endpoint) = &config.endpoint {
        let rest = endpoint
            .strip_prefix("https://")
            .or_else(|| endpoint.strip_prefix("http://"));
        if rest.is_none_or(|host| host.is_empty() || host.starts_with('/')) {
            return Err(AwsSetupError::InvalidEndpoint {
                endpoint: endpoint.clone(),
                reason: "expected http(s)://host[:port]".into(),
            });
        }
        loader = loader.endpoint_url(endpoint.clone());
    }
    if let Some(creds) = &config.static_credentials {
        loader = loader.credentials_provider(Credentials::new(
            creds.access_key_id.clone(),
            creds.secret_access_key.clone(),
            creds.session_token.clone(),
            None,
            "vpc-eni-controller-static",
        ));
    }
    let shared = loader.load().await;
    let Some(region) = shared.region() else {
        return Err(AwsSetupError::NoRegion);
    };
    tracing::info!(
        region = %region,
        endpoint = config.endpoint.as_deref().unwrap_or("default"),
        static_credentials = config.static_credentials.is_some(),
        "EC2 client ready"
    );
    Ok(aws_sdk_ec2::Client::new(&shared))
}

impl AwsCloud {
    /// One logical EC2 call through the shared [`Caller`](crate::call::Caller): `send` builds and
    /// sends the request with a fresh client handle per attempt, and its SDK
    /// error is mapped before the caller decides on a retry.
    pub(super) async fn send<T, E, F, Fut>(
        &self,
        api: Api,
        token: Option<&IdempotencyToken>,
        mut send: F,
    ) -> CloudResult<T>
    where
        F: FnMut(aws_sdk_ec2::Client, Attempt) -> Fut,
        Fut: Future<Output = Result<T, SdkError<E, HttpResponse>>>,
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        let api = api.name();
        self.caller
            .call(api, token, |attempt| {
                let fut = send(self.client.clone(), attempt);
                async move { fut.await.map_err(|e| from_sdk(api, e)) }
            })
            .await
    }
}
