//! The Alibaba OpenAPI RPC client: one signed POST per attempt, through the
//! shared [`Caller`] (rate limit, retries, same `ClientToken`, counters).
//!
//! Owns the products' endpoints and versions, the request parameters (common
//! ones and the helpers that build an action's own), the paging guard, the
//! HTTP timeouts, and turning Alibaba's error body
//! `{RequestId, HostId, Code, Message}` plus the HTTP status into a
//! [`CloudError`].

use super::api::Api;
use super::credentials::{CredentialError, CredentialProvider};
use super::errors::kind_for;
use super::sign::{percent_encode, sign};
use crate::call::Caller;
use crate::error::{CloudError, CloudResult, ErrorKind};
use crate::model::Tags;
use ipam::ids::{IdempotencyToken, RegionId};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use std::sync::Arc;
use std::time::Duration;

/// `(key, value)` request parameters.
pub(super) type Params = Vec<(String, String)>;

pub(super) fn param(key: impl Into<String>, value: impl ToString) -> (String, String) {
    (key.into(), value.to_string())
}

/// Appends `Tag.1.Key`/`Tag.1.Value`... for tags.
pub(super) fn push_tags(params: &mut Params, tags: &Tags) {
    for (n, (k, v)) in tags.iter().enumerate() {
        params.push(param(format!("Tag.{}.Key", n + 1), k));
        params.push(param(format!("Tag.{}.Value", n + 1), v));
    }
}

/// Guards paging loops against a server that repeats its token forever.
pub(super) const MAX_PAGES: usize = 1000;

/// The two OpenAPI products the provider speaks to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Product {
    Ecs,
    Vpc,
}

impl Product {
    pub fn version(self) -> &'static str {
        match self {
            Product::Ecs => "2014-05-26",
            Product::Vpc => "2016-04-28",
        }
    }

    fn host_prefix(self) -> &'static str {
        match self {
            Product::Ecs => "ecs",
            Product::Vpc => "vpc",
        }
    }
}

/// HTTP timeouts of one client.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeouts {
    pub connect: Duration,
    /// The whole request, answer body included.
    pub request: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            connect: Duration::from_secs(5),
            request: Duration::from_secs(30),
        }
    }
}

/// Alibaba's error body.
#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
struct ErrorBody {
    #[serde(default)]
    request_id: Option<String>,
    #[serde(default)]
    code: Option<String>,
    #[serde(default)]
    message: Option<String>,
}

/// Signs and sends RPC calls to ECS and VPC.
pub struct RpcClient {
    http: reqwest::Client,
    caller: Caller,
    region: RegionId,
    /// Serves both products when set (tests, private endpoints).
    endpoint_override: Option<String>,
    credentials: Arc<CredentialProvider>,
}

impl RpcClient {
    pub fn new(
        region: RegionId,
        endpoint_override: Option<String>,
        credentials: Arc<CredentialProvider>,
        caller: Caller,
        timeouts: Timeouts,
    ) -> CloudResult<Self> {
        let http = reqwest::Client::builder()
            .connect_timeout(timeouts.connect)
            .timeout(timeouts.request)
            .build()
            .map_err(|e| {
                CloudError::new(
                    ErrorKind::InvalidRequest,
                    "client",
                    "ClientBuild",
                    e.to_string(),
                )
            })?;
        Ok(Self {
            http,
            caller,
            region,
            endpoint_override: endpoint_override.map(|e| e.trim_end_matches('/').to_owned()),
            credentials,
        })
    }

    pub fn caller(&self) -> &Caller {
        &self.caller
    }

    pub fn region(&self) -> &RegionId {
        &self.region
    }

    /// Where a product's calls go.
    pub fn endpoint(&self, product: Product) -> String {
        match &self.endpoint_override {
            Some(base) => format!("{base}/"),
            None => format!(
                "https://{}.{}.aliyuncs.com/",
                product.host_prefix(),
                self.region
            ),
        }
    }

    /// One logical call of `api`. `params` are the action's own
    /// parameters (`RegionId` is added). With `client_token`, every attempt
    /// carries it as `ClientToken`, so a retried create is not done twice.
    pub async fn call<T: DeserializeOwned>(
        &self,
        product: Product,
        api: Api,
        params: Vec<(String, String)>,
        client_token: Option<&IdempotencyToken>,
    ) -> CloudResult<T> {
        let action = api.name();
        let uses_token = client_token.is_some();
        self.caller
            .call(action, client_token, |attempt| {
                let mut params = params.clone();
                if uses_token {
                    params.push(("ClientToken".into(), attempt.token.to_string()));
                }
                async move { self.attempt(product, action, params).await }
            })
            .await
    }

    async fn attempt<T: DeserializeOwned>(
        &self,
        product: Product,
        action: &str,
        mut params: Vec<(String, String)>,
    ) -> CloudResult<T> {
        let credentials = self
            .credentials
            .get()
            .await
            .map_err(|e| credential_error(action, e))?;
        let timestamp = chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string();
        params.extend([
            ("Action".to_owned(), action.to_owned()),
            ("RegionId".to_owned(), self.region.to_string()),
            ("Format".to_owned(), "JSON".to_owned()),
            ("Version".to_owned(), product.version().to_owned()),
            ("AccessKeyId".to_owned(), credentials.access_key_id.clone()),
            ("SignatureMethod".to_owned(), "HMAC-SHA1".to_owned()),
            ("SignatureVersion".to_owned(), "1.0".to_owned()),
            // A fresh nonce per attempt: Alibaba rejects a reused one.
            (
                "SignatureNonce".to_owned(),
                uuid::Uuid::new_v4().to_string(),
            ),
            ("Timestamp".to_owned(), timestamp),
        ]);
        if let Some(token) = &credentials.security_token {
            params.push(("SecurityToken".to_owned(), token.expose().to_owned()));
        }
        let signature = sign("POST", &params, credentials.access_key_secret.expose());
        params.push(("Signature".to_owned(), signature));

        // Parameters travel in the form body, never in the URL: reqwest
        // errors quote the URL and the body holds the STS token.
        let response = self
            .http
            .post(self.endpoint(product))
            .form(&params)
            .send()
            .await
            .map_err(|e| transport_error(action, &e))?;
        let status = response.status().as_u16();
        let body = response
            .bytes()
            .await
            .map_err(|e| transport_error(action, &e))?;
        if (200..300).contains(&status) {
            return serde_json::from_slice(&body).map_err(|e| {
                CloudError::new(
                    ErrorKind::InvalidRequest,
                    action,
                    "UnparsableResponse",
                    format!("answer to {action} does not have the expected shape: {e}"),
                )
            });
        }
        let mut err = error_from_answer(action, status, &body);
        if let Some(token) = &credentials.security_token {
            err.message = scrub(&err.message, token.expose());
        }
        Err(err)
    }
}

/// Alibaba echoes its string-to-sign in `SignatureDoesNotMatch` messages,
/// and that string holds the STS `SecurityToken`: cut the echo off, and
/// blank the token (raw or percent-encoded) wherever else it appears.
fn scrub(message: &str, secret: &str) -> String {
    let mut out = match message.find("server string to sign is") {
        Some(at) => format!("{}(string to sign withheld)", &message[..at]),
        None => message.to_owned(),
    };
    if !secret.is_empty() {
        let once = percent_encode(secret);
        let twice = percent_encode(&once);
        for form in [twice.as_str(), once.as_str(), secret] {
            out = out.replace(form, "***");
        }
    }
    out
}

/// The `CloudError` for a non-2xx answer.
pub fn error_from_answer(action: &str, status: u16, body: &[u8]) -> CloudError {
    let parsed: ErrorBody = serde_json::from_slice(body).unwrap_or_default();
    let code = parsed
        .code
        .filter(|c| !c.is_empty())
        .unwrap_or_else(|| format!("HTTP{status}"));
    let message = parsed
        .message
        .unwrap_or_else(|| String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned());
    let kind = kind_for(&code, status);
    tracing::debug!(api = action, status, %code, %kind, "Alibaba call failed");
    let err = CloudError::new(kind, action, code, message);
    match parsed.request_id {
        Some(id) if !id.is_empty() => err.with_request_id(id),
        _ => err,
    }
}

fn transport_error(action: &str, e: &reqwest::Error) -> CloudError {
    let code = if e.is_timeout() {
        "RequestTimeout"
    } else if e.is_connect() {
        "ConnectFailed"
    } else if e.is_decode() || e.is_body() {
        "ResponseBodyError"
    } else {
        "TransportError"
    };
    CloudError::new(ErrorKind::Transient, action, code, e.to_string())
}

fn credential_error(action: &str, e: CredentialError) -> CloudError {
    let kind = if e.is_transient() {
        ErrorKind::Transient
    } else {
        ErrorKind::Auth
    };
    CloudError::new(kind, action, "CredentialsUnavailable", e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_body_becomes_cloud_error() {
        let body = br#"{"RequestId":"7463B73D-35CC-4D19-A010-6B8D65D242EF","HostId":"ecs.aliyuncs.com","Code":"InvalidVSwitchId.IpNotEnough","Message":"The specified VSwitch has not enough IpAddress."}"#;
        let err = error_from_answer("CreateNetworkInterface", 403, body);
        assert_eq!(err.kind, ErrorKind::SubnetExhausted);
        assert_eq!(err.api, "CreateNetworkInterface");
        assert_eq!(err.code, "InvalidVSwitchId.IpNotEnough");
        assert_eq!(
            err.message,
            "The specified VSwitch has not enough IpAddress."
        );
        assert_eq!(
            err.request_id.as_deref(),
            Some("7463B73D-35CC-4D19-A010-6B8D65D242EF")
        );
    }

    #[test]
    fn echoed_string_to_sign_and_token_are_scrubbed() {
        let token = "CAIS+token/with=chars";
        let message = format!(
            "Specified signature is not matched with our calculation. server string to sign is:POST&%2F&SecurityToken%3D{}",
            percent_encode(&percent_encode(token))
        );
        let scrubbed = scrub(&message, token);
        assert_eq!(
            scrubbed,
            "Specified signature is not matched with our calculation. (string to sign withheld)"
        );
        assert_eq!(scrub(&format!("bad token {token}"), token), "bad token ***");
        assert_eq!(
            scrub(&format!("bad token {}", percent_encode(token)), token),
            "bad token ***"
        );
    }

    #[test]
    fn non_json_error_falls_back_to_status() {
        let err = error_from_answer("DescribeVSwitches", 502, b"<html>Bad Gateway</html>");
        assert_eq!(err.kind, ErrorKind::Transient);
        assert_eq!(err.code, "HTTP502");
        assert!(err.message.contains("Bad Gateway"));
        assert_eq!(err.request_id, None);
        let err = error_from_answer("DescribeVSwitches", 400, b"");
        assert_eq!(err.kind, ErrorKind::InvalidRequest);
    }

    #[test]
    fn endpoints_per_product_and_override() {
        let creds = Arc::new(CredentialProvider::fixed(
            super::super::credentials::Credentials {
                access_key_id: "id".into(),
                access_key_secret: "s".into(),
                security_token: None,
                expiration: None,
            },
        ));
        let client = RpcClient::new(
            RegionId::new("cn-hangzhou"),
            None,
            creds.clone(),
            Caller::new(Default::default()),
            Timeouts::default(),
        )
        .unwrap();
        assert_eq!(
            client.endpoint(Product::Ecs),
            "https://ecs.cn-hangzhou.aliyuncs.com/"
        );
        assert_eq!(
            client.endpoint(Product::Vpc),
            "https://vpc.cn-hangzhou.aliyuncs.com/"
        );
        let local = RpcClient::new(
            RegionId::new("cn-hangzhou"),
            Some("http://127.0.0.1:1234/".into()),
            creds,
            Caller::new(Default::default()),
            Timeouts::default(),
        )
        .unwrap();
        assert_eq!(local.endpoint(Product::Ecs), "http://127.0.0.1:1234/");
        assert_eq!(local.endpoint(Product::Vpc), "http://127.0.0.1:1234/");
    }
}
