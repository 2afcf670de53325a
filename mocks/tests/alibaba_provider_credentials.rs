//! Alibaba credentials as a user of the provider notices them: the lookup
//! order, the ECS RAM role read from a metadata stand-in on 127.0.0.1 (plain
//! and token-protected), the refresh ahead of expiry, errors that never show
//! a secret, and an STS rotation against `fake-alibaba`.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, put};
use axum::Router;
use mocks::alibaba::auth::AccessKey;
use mocks::alibaba::FakeAlibaba;
use mocks::cloud::World;
use parking_lot::Mutex;
use providers::alibaba::credentials::{CredentialError, CredentialProvider, CredentialSource};
use providers::alibaba::{AlibabaCloud, AlibabaConfig};
use providers::ids::SubnetId;
use providers::{Cloud, ErrorKind};
use std::sync::Arc;
use std::time::Duration;

/// What the metadata stand-in hands out and what it has seen.
#[derive(Default)]
struct Meta {
    /// (AccessKeyId, AccessKeySecret, SecurityToken, seconds until expiry)
    serving: Option<(String, String, String, i64)>,
    /// Require the token-protected mode.
    require_token: bool,
    credential_fetches: u32,
    token_puts: u32,
    ttl_header_seen: Option<String>,
}

type Shared = Arc<Mutex<Meta>>;

const SESSION_TOKEN: &str = "metadata-session-token";

fn token_ok(meta: &Meta, headers: &HeaderMap) -> bool {
    !meta.require_token
        || headers
            .get("X-aliyun-ecs-metadata-token")
            .and_then(|v| v.to_str().ok())
            == Some(SESSION_TOKEN)
}

async fn api_token(State(meta): State<Shared>, headers: HeaderMap) -> (StatusCode, String) {
    let mut m = meta.lock();
    m.token_puts += 1;
    m.ttl_header_seen = headers
        .get("X-aliyun-ecs-metadata-token-ttl-seconds")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    if m.ttl_header_seen.is_none() {
        return (StatusCode::BAD_REQUEST, String::new());
    }
    (StatusCode::OK, SESSION_TOKEN.to_owned())
}

async fn role_list(State(meta): State<Shared>, headers: HeaderMap) -> (StatusCode, String) {
    let m = meta.lock();
    if !token_ok(&m, &headers) {
        return (StatusCode::UNAUTHORIZED, String::new());
    }
    if m.serving.is_none() {
        return (StatusCode::NOT_FOUND, String::new());
    }
    (StatusCode::OK, "ControllerRole\n".to_owned())
}

async fn role_credentials(State(meta): State<Shared>, headers: HeaderMap) -> (StatusCode, String) {
    let mut m = meta.lock();
    if !token_ok(&m, &headers) {
        return (StatusCode::UNAUTHORIZED, String::new());
    }
    let Some((id, secret, token, expires_in)) = m.serving.clone() else {
        return (StatusCode::NOT_FOUND, String::new());
    };
    m.credential_fetches += 1;
    let expiration = (chrono::Utc::now() + chrono::Duration::seconds(expires_in))
        .format("%Y-%m-%dT%H:%M:%SZ")
        .to_string();
    let body = serde_json::json!({
        "AccessKeyId": id,
        "AccessKeySecret": secret,
        "SecurityToken": token,
        "Expiration": expiration,
        "LastUpdated": chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string(),
        "Code": "Success"
    });
    (StatusCode::OK, body.to_string())
}

/// Start the stand-in on 127.0.0.1; returns its base URL.
async fn metadata_stand_in(meta: Shared) -> String {
    let app = Router::new()
        .route("/latest/api/token", put(api_token))
        .route(
            "/latest/meta-data/ram/security-credentials/",
            get(role_list),
        )
        .route(
            "/latest/meta-data/ram/security-credentials/ControllerRole",
            get(role_credentials),
        )
        .with_state(meta);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    format!("http://{addr}")
}

fn serving(meta: &Shared, id: &str, secret: &str, token: &str, expires_in: i64) {
    meta.lock().serving = Some((id.into(), secret.into(), token.into(), expires_in));
}

fn no_env(_: &str) -> Option<String> {
    None
}

#[tokio::test]
async fn ram_role_is_discovered_fetched_and_cached_while_fresh() {
    let meta = Shared::default();
    serving(&meta, "STS.first", "role-secret-1", "role-token-1", 3600);
    let url = metadata_stand_in(meta.clone()).await;
    let provider = CredentialProvider::with_env(&CredentialSource::default_chain(), &url, no_env);
    assert!(provider.is_ram_role());

    let first = provider.get().await.unwrap();
    assert_eq!(first.access_key_id, "STS.first");
    assert_eq!(first.access_key_secret.expose(), "role-secret-1");
    assert_eq!(
        first.security_token.as_ref().map(|t| t.expose()),
        Some("role-token-1")
    );
    assert!(first.expiration.is_some());

    // An hour of validity left: the second caller gets the cached set.
    serving(&meta, "STS.second", "role-secret-2", "role-token-2", 3600);
    let again = provider.get().await.unwrap();
    assert_eq!(again.access_key_id, "STS.first");
    assert_eq!(meta.lock().credential_fetches, 1);
}

#[tokio::test]
async fn credentials_within_five_minutes_of_expiry_are_refreshed() {
    let meta = Shared::default();
    // Four minutes left: inside the refresh window from the start.
    serving(&meta, "STS.old", "s-old", "t-old", 4 * 60);
    let url = metadata_stand_in(meta.clone()).await;
    let source = CredentialSource {
        ram_role: Some("ControllerRole".into()),
        ..CredentialSource::default()
    };
    let provider = CredentialProvider::with_env(&source, &url, no_env);
    assert_eq!(provider.get().await.unwrap().access_key_id, "STS.old");
    serving(&meta, "STS.new", "s-new", "t-new", 3600);
    assert_eq!(provider.get().await.unwrap().access_key_id, "STS.new");
    assert_eq!(provider.get().await.unwrap().access_key_id, "STS.new");
    assert_eq!(meta.lock().credential_fetches, 2);
}

#[tokio::test]
async fn a_failed_refresh_keeps_credentials_that_still_work_until_they_expire() {
    let meta = Shared::default();
    // Four minutes left: every call tries to refresh.
    serving(&meta, "STS.current", "s-cur", "t-cur", 4 * 60);
    let url = metadata_stand_in(meta.clone()).await;
    let source = CredentialSource {
        ram_role: Some("ControllerRole".into()),
        ..CredentialSource::default()
    };
    let provider = CredentialProvider::with_env(&source, &url, no_env);
    assert_eq!(provider.get().await.unwrap().access_key_id, "STS.current");
    // The metadata service stops answering: the current set still signs.
    meta.lock().serving = None;
    assert_eq!(provider.get().await.unwrap().access_key_id, "STS.current");
    assert_eq!(provider.get().await.unwrap().access_key_id, "STS.current");
    // Once it answers again the refresh goes through.
    serving(&meta, "STS.next", "s-next", "t-next", 3600);
    assert_eq!(provider.get().await.unwrap().access_key_id, "STS.next");

    // Credentials at their last seconds are not used when the refresh fails.
    let meta = Shared::default();
    serving(&meta, "STS.dying", "s-d", "t-d", 10);
    let url = metadata_stand_in(meta.clone()).await;
    let provider = CredentialProvider::with_env(&source, &url, no_env);
    assert_eq!(provider.get().await.unwrap().access_key_id, "STS.dying");
    meta.lock().serving = None;
    assert!(provider.get().await.is_err());
}

#[tokio::test]
async fn token_protected_metadata_mode_sends_the_session_token() {
    let meta = Shared::default();
    serving(&meta, "STS.tok", "s", "t", 3600);
    meta.lock().require_token = true;
    let url = metadata_stand_in(meta.clone()).await;

    let plain = CredentialProvider::with_env(&CredentialSource::default(), &url, no_env);
    let err = plain.get().await.unwrap_err();
    assert_eq!(
        err,
        CredentialError::MetadataStatus {
            what: "role name",
            status: 401
        }
    );
    assert!(!err.is_transient());

    let source = CredentialSource {
        metadata_token_mode: true,
        ..CredentialSource::default()
    };
    let hardened = CredentialProvider::with_env(&source, &url, no_env);
    assert_eq!(hardened.get().await.unwrap().access_key_id, "STS.tok");
    let m = meta.lock();
    assert_eq!(m.token_puts, 1);
    assert_eq!(m.ttl_header_seen.as_deref(), Some("21600"));
}

#[tokio::test]
async fn instance_without_role_and_unreachable_metadata_are_told_apart() {
    let meta = Shared::default();
    let url = metadata_stand_in(meta).await;
    let provider = CredentialProvider::with_env(&CredentialSource::default(), &url, no_env);
    assert_eq!(provider.get().await.unwrap_err(), CredentialError::NoRole);

    // A port that was just free and is closed again: nothing listens.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let provider = CredentialProvider::with_env(
        &CredentialSource::default(),
        &format!("http://{closed}"),
        no_env,
    );
    let err = provider.get().await.unwrap_err();
    assert!(err.is_transient(), "{err:?}");
}

#[tokio::test]
async fn secrets_never_show_in_debug_or_errors() {
    let meta = Shared::default();
    serving(
        &meta,
        "STS.dbg",
        "very-secret-value",
        "very-secret-token",
        3600,
    );
    let url = metadata_stand_in(meta).await;
    let provider = CredentialProvider::with_env(&CredentialSource::default(), &url, no_env);
    let creds = provider.get().await.unwrap();
    for shown in [format!("{creds:?}"), format!("{provider:?}")] {
        assert!(!shown.contains("very-secret-value"), "{shown}");
        assert!(!shown.contains("very-secret-token"), "{shown}");
    }

    // A call refused because of a wrong secret names the code, not the secret.
    let world = World::from_yaml(WORLD).unwrap();
    let fake = FakeAlibaba::start(world, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let mut config = AlibabaConfig::new("cn-hangzhou");
    config.endpoint = Some(fake.url().to_owned());
    config.credentials =
        CredentialSource::explicit("testid", "wrong-secret-xyz", Some("sts-token-xyz".into()));
    let cloud = AlibabaCloud::new(config.clone()).unwrap();
    let err = cloud
        .describe_subnets(&[SubnetId::new("vsw-h")])
        .await
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::Auth);
    for shown in [
        format!("{err}"),
        format!("{err:?}"),
        format!("{config:?}"),
        format!("{cloud:?}"),
    ] {
        assert!(!shown.contains("wrong-secret-xyz"), "{shown}");
        assert!(!shown.contains("sts-token-xyz"), "{shown}");
    }
}

const WORLD: &str = r#"
region: cn-hangzhou
accessKeys: [{id: testid, secret: testsecret}]
vpcs: [{id: vpc-1, cidr: 192.168.0.0/16, routeTables: [{id: vtb-1}]}]
vswitches: [{id: vsw-h, vpc: vpc-1, zone: cn-hangzhou-h, cidr: 192.168.1.0/24}]
securityGroups: [{id: sg-1, vpc: vpc-1}]
instances: [{id: i-1, type: ecs.g6.xlarge, zone: cn-hangzhou-h, vswitch: vsw-h, privateIp: 192.168.1.10}]
"#;

#[tokio::test]
async fn sts_credentials_rotate_through_the_metadata_service() {
    let world = World::from_yaml(WORLD).unwrap();
    let fake = FakeAlibaba::start(world, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    fake.keys()
        .put(AccessKey::sts("STS.one", "secret-one", "token-one"));

    let meta = Shared::default();
    // Valid for 5 min + 2 s: cached now, due for refresh two seconds later.
    serving(&meta, "STS.one", "secret-one", "token-one", 5 * 60 + 2);
    let url = metadata_stand_in(meta.clone()).await;

    let mut config = AlibabaConfig::new("cn-hangzhou");
    config.endpoint = Some(fake.url().to_owned());
    config.metadata_url = url;
    config.credentials = CredentialSource::default();
    let cloud = AlibabaCloud::new(config).unwrap();

    let subnets = cloud
        .describe_subnets(&[SubnetId::new("vsw-h")])
        .await
        .unwrap();
    assert_eq!(subnets.len(), 1);

    // The role's credentials rotate; the old ones stop working at the cloud.
    fake.keys()
        .put(AccessKey::sts("STS.two", "secret-two", "token-two"));
    serving(&meta, "STS.two", "secret-two", "token-two", 3600);
    fake.keys().expire("STS.one");
    tokio::time::sleep(Duration::from_millis(2500)).await;

    let subnets = cloud
        .describe_subnets(&[SubnetId::new("vsw-h")])
        .await
        .unwrap();
    assert_eq!(subnets.len(), 1);
    assert!(meta.lock().credential_fetches >= 2);
    let stats = cloud.stats().get("DescribeVSwitches");
    assert_eq!(
        stats.errors, 0,
        "the refresh happened before the old key failed"
    );
}
