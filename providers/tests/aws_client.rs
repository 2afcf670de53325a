//! The AWS client set-up: transport failures become `Transient` (and are
//! retried by the shared Caller, not the SDK), a bad endpoint is refused at
//! start, and secrets stay out of `Debug`. Only 127.0.0.1 is contacted.

#![cfg(feature = "aws")]

use ipam::ids::{ClusterId, InstanceId};
use providers::aws::{AwsCloud, AwsConfig, AwsSetupError, AwsTimeouts, StaticCredentials};
use providers::call::CallPolicy;
use providers::{Cloud, ErrorKind};
use std::time::Duration;

fn config(endpoint: String, max_tries: u32) -> AwsConfig {
    let mut config = AwsConfig::new(ClusterId::from("c1"));
    config.region = Some("us-east-1".into());
    config.endpoint = Some(endpoint);
    config.static_credentials = Some(StaticCredentials {
        access_key_id: "AKIDEXAMPLE".into(),
        secret_access_key: "very-secret-key".into(),
        session_token: Some("very-secret-token".into()),
    });
    config.call_policy = CallPolicy {
        max_tries,
        base_backoff: Duration::from_millis(10),
        max_backoff: Duration::from_millis(20),
        ..CallPolicy::default()
    };
    config
}

#[tokio::test]
async fn refused_connection_is_transient_and_retried_by_the_caller() {
    // A port that was free a moment ago and has no listener now.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let cloud = AwsCloud::connect(config(format!("http://127.0.0.1:{port}"), 3))
        .await
        .unwrap();
    let err = cloud
        .describe_instance(&InstanceId::from("i-1"))
        .await
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::Transient, "{err}");
    let stats = cloud.stats().get("DescribeInstances");
    assert_eq!((stats.calls, stats.retries), (3, 2));
}

#[tokio::test]
async fn a_silent_endpoint_hits_the_operation_timeout_as_transient() {
    // Accepts connections and never answers.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let holder = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    let mut cfg = config(format!("http://127.0.0.1:{port}"), 1);
    cfg.timeouts = AwsTimeouts {
        connect: Duration::from_millis(500),
        attempt: Duration::from_millis(300),
        operation: Duration::from_millis(400),
    };
    let cloud = AwsCloud::connect(cfg).await.unwrap();
    let err = cloud
        .describe_instance(&InstanceId::from("i-1"))
        .await
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::Transient, "{err}");
    assert_eq!(err.code, "Timeout");
    holder.abort();
}

#[tokio::test]
async fn an_endpoint_without_scheme_is_refused_at_start() {
    for bad in ["127.0.0.1:4566", "ftp://127.0.0.1", "http://"] {
        let result = AwsCloud::connect(config(bad.to_owned(), 1)).await;
        assert!(
            matches!(result, Err(AwsSetupError::InvalidEndpoint { .. })),
            "{bad}"
        );
    }
}

#[test]
fn secrets_never_show_in_debug_output() {
    let shown = format!("{:?}", config("http://127.0.0.1:1".into(), 1));
    assert!(shown.contains("AKIDEXAMPLE"));
    assert!(!shown.contains("very-secret-key"), "{shown}");
    assert!(!shown.contains("very-secret-token"), "{shown}");
}
