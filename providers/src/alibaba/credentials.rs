//! Alibaba Cloud credentials: where they come from and how they stay fresh.
//!
//! Owns the lookup order (explicit config, then the
//! `ALIBABA_CLOUD_ACCESS_KEY_ID` / `ALIBABA_CLOUD_ACCESS_KEY_SECRET` /
//! `ALIBABA_CLOUD_SECURITY_TOKEN` environment, then the ECS instance's RAM role
//! from the metadata service), the STS refresh ahead of expiry, and the
//! [`Secret`] wrapper that keeps secrets out of logs, `Debug` and errors.

use chrono::{DateTime, Utc};
use serde::Deserialize;
use std::fmt;
use std::time::Duration;
use tokio::sync::Mutex;

/// The real ECS metadata service. Tests always point elsewhere.
pub const DEFAULT_METADATA_URL: &str = "http://100.100.100.200";

/// STS credentials are refreshed this long before they expire.
pub const REFRESH_AHEAD: Duration = Duration::from_secs(5 * 60);

/// Lifetime asked for a metadata session token in token-protected mode.
const METADATA_TOKEN_TTL_SECONDS: &str = "21600";

/// A secret string: readable only through [`Secret::expose`]; `Debug` and
/// `Display` print a placeholder.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl From<&str> for Secret {
    fn from(s: &str) -> Self {
        Self(s.to_owned())
    }
}

impl From<String> for Secret {
    fn from(s: String) -> Self {
        Self(s)
    }
}

/// One set of credentials to sign with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Credentials {
    /// Not a secret by itself (it names the key), so it shows in `Debug`.
    pub access_key_id: String,
    pub access_key_secret: Secret,
    /// Present for STS credentials (RAM role); sent as `SecurityToken`.
    pub security_token: Option<Secret>,
    /// When STS credentials stop working; `None` for long-lived keys.
    pub expiration: Option<DateTime<Utc>>,
}

/// Credentials this close to expiry are not signed with any more: a request
/// signed now must still be valid when the cloud checks it.
const LAST_USE_MARGIN: chrono::Duration = chrono::Duration::seconds(30);

impl Credentials {
    /// Whether these can still sign a request at `now` (a failed refresh
    /// falls back to them).
    pub fn still_usable(&self, now: DateTime<Utc>) -> bool {
        self.expiration.is_none_or(|e| e - LAST_USE_MARGIN > now)
    }

    /// Whether these must be replaced before signing at `now`.
    pub fn needs_refresh(&self, now: DateTime<Utc>) -> bool {
        match self.expiration {
            None => false,
            Some(expiration) => {
                let ahead = chrono::Duration::from_std(REFRESH_AHEAD).unwrap_or_default();
                expiration - ahead <= now
            }
        }
    }
}

/// Where credentials come from, as configured. Every field is optional: the
/// first complete source in the order explicit values, environment, RAM role
/// wins.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct CredentialSource {
    pub access_key_id: Option<String>,
    pub access_key_secret: Option<Secret>,
    pub security_token: Option<Secret>,
    /// RAM role attached to the instance; `None` asks the metadata service
    /// which role it has.
    pub ram_role: Option<String>,
    /// Use the metadata service's token-protected mode (session token first).
    pub metadata_token_mode: bool,
    /// Whether to consult the process environment at all.
    pub use_environment: bool,
}

impl fmt::Debug for CredentialSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CredentialSource")
            .field("access_key_id", &self.access_key_id)
            .field("access_key_secret", &self.access_key_secret)
            .field("security_token", &self.security_token)
            .field("ram_role", &self.ram_role)
            .field("metadata_token_mode", &self.metadata_token_mode)
            .field("use_environment", &self.use_environment)
            .finish()
    }
}

impl CredentialSource {
    /// Explicit key pair (optionally STS token) from config.
    pub fn explicit(
        access_key_id: impl Into<String>,
        access_key_secret: impl Into<Secret>,
        security_token: Option<Secret>,
    ) -> Self {
        Self {
            access_key_id: Some(access_key_id.into()),
            access_key_secret: Some(access_key_secret.into()),
            security_token,
            ..Self::default()
        }
    }

    /// Environment first, then the instance's RAM role: what a controller
    /// running on ECS without explicit keys uses.
    pub fn default_chain() -> Self {
        Self {
            use_environment: true,
            ..Self::default()
        }
    }
}

/// Why no credentials could be had. Never carries a secret.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CredentialError {
    #[error("the metadata service could not be reached: {0}")]
    MetadataUnreachable(String),
    #[error("the metadata service answered {status} for {what}")]
    MetadataStatus { what: &'static str, status: u16 },
    #[error("the metadata service's answer for {what} is malformed: {reason}")]
    Malformed { what: &'static str, reason: String },
    #[error("the instance has no RAM role attached")]
    NoRole,
}

impl CredentialError {
    /// Whether trying again later could help (the metadata service was down
    /// or answered 5xx).
    pub fn is_transient(&self) -> bool {
        match self {
            CredentialError::MetadataUnreachable(_) => true,
            CredentialError::MetadataStatus { status, .. } => *status >= 500,
            _ => false,
        }
    }
}

/// The metadata service's credentials document.
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RoleCredentials {
    access_key_id: String,
    access_key_secret: String,
    security_token: String,
    expiration: String,
    #[serde(default)]
    code: Option<String>,
}

/// Hands out valid credentials, refreshing STS ones ahead of expiry.
pub struct CredentialProvider {
    inner: Provider,
}

enum Provider {
    Fixed(Credentials),
    RamRole(Box<RamRoleProvider>),
}

struct RamRoleProvider {
    http: reqwest::Client,
    base_url: String,
    role: Option<String>,
    token_mode: bool,
    cached: Mutex<Option<Credentials>>,
}

impl fmt::Debug for CredentialProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.inner {
            Provider::Fixed(c) => f
                .debug_struct("CredentialProvider::Fixed")
                .field("access_key_id", &c.access_key_id)
                .finish_non_exhaustive(),
            Provider::RamRole(r) => f
                .debug_struct("CredentialProvider::RamRole")
                .field("metadata", &r.base_url)
                .field("role", &r.role)
                .finish_non_exhaustive(),
        }
    }
}

impl CredentialProvider {
    /// Resolve the source against the real process environment.
    pub fn new(source: &CredentialSource, metadata_url: &str) -> Self {
        Self::with_env(source, metadata_url, |name| std::env::var(name).ok())
    }

    /// Resolve the source with `env` standing in for the process environment
    /// (tests must not mutate the real one: it is shared by parallel tests).
    pub fn with_env(
        source: &CredentialSource,
        metadata_url: &str,
        env: impl Fn(&str) -> Option<String>,
    ) -> Self {
        let non_empty = |v: Option<String>| v.filter(|s| !s.is_empty());
        if let (Some(id), Some(secret)) = (
            non_empty(source.access_key_id.clone()),
            source
                .access_key_secret
                .clone()
                .filter(|s| !s.expose().is_empty()),
        ) {
            tracing::debug!(access_key_id = %id, "using explicitly configured Alibaba credentials");
            return Self::fixed(Credentials {
                access_key_id: id,
                access_key_secret: secret,
                security_token: source.security_token.clone(),
                expiration: None,
            });
        }
        if source.use_environment {
            if let (Some(id), Some(secret)) = (
                non_empty(env("ALIBABA_CLOUD_ACCESS_KEY_ID")),
                non_empty(env("ALIBABA_CLOUD_ACCESS_KEY_SECRET")),
            ) {
                tracing::debug!(access_key_id = %id, "using Alibaba credentials from the environment");
                return Self::fixed(Credentials {
                    access_key_id: id,
                    access_key_secret: Secret(secret),
                    security_token: non_empty(env("ALIBABA_CLOUD_SECURITY_TOKEN")).map(Secret),
                    expiration: None,
                });
            }
        }
        tracing::debug!(
            metadata = metadata_url,
            "using the ECS RAM role from the metadata service"
        );
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(2))
            .timeout(Duration::from_secs(5))
            .build()
            .unwrap_or_default();
        Self {
            inner: Provider::RamRole(Box::new(RamRoleProvider {
                http,
                base_url: metadata_url.trim_end_matches('/').to_owned(),
                role: source.ram_role.clone().filter(|r| !r.is_empty()),
                token_mode: source.metadata_token_mode,
                cached: Mutex::new(None),
            })),
        }
    }

    /// Fixed credentials that never refresh.
    pub fn fixed(credentials: Credentials) -> Self {
        Self {
            inner: Provider::Fixed(credentials),
        }
    }

    /// Whether these credentials come from the metadata service.
    pub fn is_ram_role(&self) -> bool {
        matches!(self.inner, Provider::RamRole(_))
    }

    /// Credentials valid for at least [`REFRESH_AHEAD`] (STS) or for good.
    pub async fn get(&self) -> Result<Credentials, CredentialError> {
        match &self.inner {
            Provider::Fixed(c) => Ok(c.clone()),
            Provider::RamRole(r) => r.get().await,
        }
    }
}

impl RamRoleProvider {
    async fn get(&self) -> Result<Credentials, CredentialError> {
        // One refresh at a time: concurrent callers wait for it instead of
        // hammering the metadata service.
        let mut cached = self.cached.lock().await;
        if let Some(c) = cached.as_ref() {
            if !c.needs_refresh(Utc::now()) {
                return Ok(c.clone());
            }
        }
        let fresh = match self.fetch().await {
            Ok(fresh) => fresh,
            // A refresh ahead of expiry that fails must not throw away
            // credentials that still work: sign with them and try again on
            // the next call, until they are about to expire.
            Err(e) => match cached.as_ref().filter(|c| c.still_usable(Utc::now())) {
                Some(c) => {
                    tracing::warn!(
                        error = %e,
                        expiration = ?c.expiration,
                        "could not refresh STS credentials; using the current ones until they expire"
                    );
                    return Ok(c.clone());
                }
                None => return Err(e),
            },
        };
        tracing::info!(
            access_key_id = %fresh.access_key_id,
            expiration = ?fresh.expiration,
            "refreshed STS credentials from the ECS RAM role"
        );
        *cached = Some(fresh.clone());
        Ok(fresh)
    }

    async fn fetch(&self) -> Result<Credentials, CredentialError> {
        let token = if self.token_mode {
            Some(self.session_token().await?)
        } else {
            None
        };
        let role = match &self.role {
            Some(role) => role.clone(),
            None => {
                let listed = self
                    .get_text("ram/security-credentials/", token.as_ref(), "role name")
                    .await?;
                listed
                    .lines()
                    .map(str::trim)
                    .find(|l| !l.is_empty())
                    .map(str::to_owned)
                    .ok_or(CredentialError::NoRole)?
            }
        };
        let body = self
            .get_text(
                &format!("ram/security-credentials/{role}"),
                token.as_ref(),
                "role credentials",
            )
            .await?;
        let doc: RoleCredentials =
            serde_json::from_str(&body).map_err(|e| CredentialError::Malformed {
                what: "role credentials",
                // serde's message names the field, never the value.
                reason: e.to_string(),
            })?;
        if let Some(code) = doc.code.as_deref() {
            if code != "Success" {
                return Err(CredentialError::Malformed {
                    what: "role credentials",
                    reason: format!("Code is {code}"),
                });
            }
        }
        let expiration = DateTime::parse_from_rfc3339(&doc.expiration)
            .map_err(|e| CredentialError::Malformed {
                what: "role credentials",
                reason: format!("Expiration: {e}"),
            })?
            .with_timezone(&Utc);
        Ok(Credentials {
            access_key_id: doc.access_key_id,
            access_key_secret: Secret(doc.access_key_secret),
            security_token: Some(Secret(doc.security_token)),
            expiration: Some(expiration),
        })
    }

    async fn session_token(&self) -> Result<Secret, CredentialError> {
        let response = self
            .http
            .put(format!("{}/latest/api/token", self.base_url))
            .header(
                "X-aliyun-ecs-metadata-token-ttl-seconds",
                METADATA_TOKEN_TTL_SECONDS,
            )
            .send()
            .await
            .map_err(|e| CredentialError::MetadataUnreachable(e.without_url().to_string()))?;
        let status = response.status();
        if !status.is_success() {
            return Err(CredentialError::MetadataStatus {
                what: "session token",
                status: status.as_u16(),
            });
        }
        let text = response
            .text()
            .await
            .map_err(|e| CredentialError::MetadataUnreachable(e.without_url().to_string()))?;
        Ok(Secret(text.trim().to_owned()))
    }

    async fn get_text(
        &self,
        path: &str,
        token: Option<&Secret>,
        what: &'static str,
    ) -> Result<String, CredentialError> {
        let mut request = self
            .http
            .get(format!("{}/latest/meta-data/{path}", self.base_url));
        if let Some(token) = token {
            request = request.header("X-aliyun-ecs-metadata-token", token.expose());
        }
        let response = request
            .send()
            .await
            .map_err(|e| CredentialError::MetadataUnreachable(e.without_url().to_string()))?;
        let status = response.status();
        if status.as_u16() == 404 && what == "role name" {
            return Err(CredentialError::NoRole);
        }
        if !status.is_success() {
            return Err(CredentialError::MetadataStatus {
                what,
                status: status.as_u16(),
            });
        }
        response
            .text()
            .await
            .map_err(|e| CredentialError::MetadataUnreachable(e.without_url().to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_debug_and_display_redact() {
        let s = Secret::new("super-secret-value");
        assert!(!format!("{s:?}").contains("super-secret-value"));
        assert!(!format!("{s}").contains("super-secret-value"));
        assert_eq!(s.expose(), "super-secret-value");
    }

    #[test]
    fn credentials_debug_redacts_secret_and_token() {
        let c = Credentials {
            access_key_id: "LTAIkeyid".into(),
            access_key_secret: Secret::new("the-secret"),
            security_token: Some(Secret::new("the-sts-token")),
            expiration: None,
        };
        let shown = format!("{c:?}");
        assert!(shown.contains("LTAIkeyid"));
        assert!(!shown.contains("the-secret"));
        assert!(!shown.contains("the-sts-token"));
        let source = CredentialSource::explicit("LTAIkeyid", "the-secret", Some("tok".into()));
        let shown = format!("{source:?}");
        assert!(!shown.contains("the-secret"));
        assert!(!shown.contains("\"tok\""));
    }

    #[test]
    fn refresh_is_due_five_minutes_before_expiry() {
        let now = Utc::now();
        let mut c = Credentials {
            access_key_id: "id".into(),
            access_key_secret: Secret::new("s"),
            security_token: None,
            expiration: None,
        };
        assert!(!c.needs_refresh(now));
        c.expiration = Some(now + chrono::Duration::minutes(6));
        assert!(!c.needs_refresh(now));
        c.expiration = Some(now + chrono::Duration::minutes(4));
        assert!(c.needs_refresh(now));
        c.expiration = Some(now - chrono::Duration::minutes(1));
        assert!(c.needs_refresh(now));
    }

    fn env_of(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |name| {
            pairs
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        }
    }

    const FULL_ENV: &[(&str, &str)] = &[
        ("ALIBABA_CLOUD_ACCESS_KEY_ID", "env-id"),
        ("ALIBABA_CLOUD_ACCESS_KEY_SECRET", "env-secret"),
        ("ALIBABA_CLOUD_SECURITY_TOKEN", "env-token"),
    ];

    #[tokio::test]
    async fn explicit_values_win_over_environment() {
        let mut source = CredentialSource::explicit("cfg-id", "cfg-secret", None);
        source.use_environment = true;
        let provider =
            CredentialProvider::with_env(&source, "http://127.0.0.1:9", env_of(FULL_ENV));
        let c = provider.get().await.unwrap();
        assert_eq!(c.access_key_id, "cfg-id");
        assert_eq!(c.access_key_secret.expose(), "cfg-secret");
        assert_eq!(c.security_token, None);
    }

    #[tokio::test]
    async fn environment_is_used_when_config_has_no_keys() {
        let provider = CredentialProvider::with_env(
            &CredentialSource::default_chain(),
            "http://127.0.0.1:9",
            env_of(FULL_ENV),
        );
        let c = provider.get().await.unwrap();
        assert_eq!(c.access_key_id, "env-id");
        assert_eq!(c.access_key_secret.expose(), "env-secret");
        assert_eq!(
            c.security_token.as_ref().map(Secret::expose),
            Some("env-token")
        );
        assert!(!provider.is_ram_role());
    }

    #[test]
    fn incomplete_config_and_environment_fall_through_to_ram_role() {
        let source = CredentialSource {
            access_key_id: Some("only-id".into()),
            use_environment: true,
            ..CredentialSource::default()
        };
        let provider = CredentialProvider::with_env(
            &source,
            "http://127.0.0.1:9",
            env_of(&[("ALIBABA_CLOUD_ACCESS_KEY_ID", "env-id")]),
        );
        assert!(provider.is_ram_role());
    }

    #[test]
    fn environment_is_ignored_unless_asked_for() {
        let provider = CredentialProvider::with_env(
            &CredentialSource::default(),
            "http://127.0.0.1:9",
            env_of(FULL_ENV),
        );
        assert!(provider.is_ram_role());
    }
}
