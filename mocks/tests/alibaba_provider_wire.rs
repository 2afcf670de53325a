//! What the Alibaba provider puts on the wire, seen by a scripted stand-in on
//! 127.0.0.1 (not `fake-alibaba`: these answers are written by hand to drive
//! the client through paging and retries): every page is fetched, a retry
//! carries the same `ClientToken` with a fresh signature nonce, and each
//! request is signed as documented.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::Router;
use parking_lot::Mutex;
use providers::alibaba::sign::sign;
use providers::alibaba::{AlibabaCloud, AlibabaConfig, CredentialSource};
use providers::call::CallPolicy;
use providers::ids::{IdempotencyToken, RouteTableId, SecurityGroupId, SubnetId, VpcId};
use providers::model::{CreateEniRequest, EniFilter, EniStatus};
use providers::Cloud;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

type Form = BTreeMap<String, String>;

/// Answers by action: `script(action, form, seen_before)` -> (status, body).
type Script = Arc<dyn Fn(&str, &Form, usize) -> (u16, String) + Send + Sync>;

#[derive(Clone)]
struct Stand {
    seen: Arc<Mutex<Vec<Form>>>,
    script: Script,
}

async fn answer(State(stand): State<Stand>, body: Bytes) -> (StatusCode, String) {
    let form: Form = url_form(&body);
    let action = form.get("Action").cloned().unwrap_or_default();
    let before = stand
        .seen
        .lock()
        .iter()
        .filter(|f| f.get("Action") == Some(&action))
        .count();
    stand.seen.lock().push(form.clone());
    let (status, body) = (stand.script)(&action, &form, before);
    (StatusCode::from_u16(status).unwrap(), body)
}

fn url_form(body: &[u8]) -> Form {
    let text = std::str::from_utf8(body).unwrap();
    text.split('&')
        .filter(|kv| !kv.is_empty())
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            let decode = |s: &str| {
                percent_encoding::percent_decode_str(&s.replace('+', " "))
                    .decode_utf8()
                    .unwrap()
                    .into_owned()
            };
            (decode(k), decode(v))
        })
        .collect()
}

async fn stand_in(script: Script) -> (String, Arc<Mutex<Vec<Form>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let app = Router::new().fallback(answer).with_state(Stand {
        seen: seen.clone(),
        script,
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (format!("http://{addr}"), seen)
}

fn cloud(url: &str) -> AlibabaCloud {
    let mut config = AlibabaConfig::new("cn-hangzhou");
    config.endpoint = Some(url.to_owned());
    config.credentials = CredentialSource::explicit("testid", "testsecret", None);
    config.call_policy = CallPolicy {
        base_backoff: Duration::from_millis(10),
        max_backoff: Duration::from_millis(50),
        ..AlibabaConfig::default_call_policy()
    };
    AlibabaCloud::new(config).unwrap()
}

fn eni_json(id: &str) -> serde_json::Value {
    serde_json::json!({
        "NetworkInterfaceId": id, "Status": "Available", "Type": "Secondary",
        "VpcId": "vpc-1", "VSwitchId": "vsw-1", "ZoneId": "cn-hangzhou-h",
        "PrivateIpAddress": "192.168.1.5", "MacAddress": "00:16:3e:00:00:05",
        "PrivateIpSets": {"PrivateIpSet": [{"PrivateIpAddress": "192.168.1.5", "Primary": true}]},
        "Tags": {"Tag": [{"TagKey": "cluster", "TagValue": "c1"}]}
    })
}

#[tokio::test]
async fn every_page_of_network_interfaces_is_fetched() {
    let script: Script = Arc::new(|action, form, _| {
        assert_eq!(action, "DescribeNetworkInterfaces");
        let (ids, next) = match form.get("NextToken").map(String::as_str) {
            None => (vec!["eni-1", "eni-2"], "page-2"),
            Some("page-2") => (vec!["eni-3"], "page-3"),
            Some("page-3") => (vec!["eni-4"], ""),
            other => panic!("unexpected NextToken {other:?}"),
        };
        let sets: Vec<_> = ids.into_iter().map(eni_json).collect();
        let body = serde_json::json!({
            "RequestId": "R", "NextToken": next,
            "NetworkInterfaceSets": {"NetworkInterfaceSet": sets}
        });
        (200, body.to_string())
    });
    let (url, seen) = stand_in(script).await;
    let enis = cloud(&url)
        .describe_enis(&EniFilter {
            tags: [("cluster".to_owned(), "c1".to_owned())].into(),
            status: Some(EniStatus::Available),
            ..EniFilter::default()
        })
        .await
        .unwrap();
    let ids: Vec<&str> = enis.iter().map(|e| e.id.as_str()).collect();
    assert_eq!(ids, vec!["eni-1", "eni-2", "eni-3", "eni-4"]);
    let seen = seen.lock();
    assert_eq!(seen.len(), 3);
    for form in seen.iter() {
        assert_eq!(form.get("Tag.1.Key").map(String::as_str), Some("cluster"));
        assert_eq!(form.get("Tag.1.Value").map(String::as_str), Some("c1"));
        assert_eq!(form.get("Status").map(String::as_str), Some("Available"));
        assert_eq!(form.get("Version").map(String::as_str), Some("2014-05-26"));
    }
}

#[tokio::test]
async fn a_server_repeating_its_token_does_not_loop_forever() {
    let script: Script = Arc::new(|_, _, _| {
        let body = serde_json::json!({
            "RequestId": "R", "NextToken": "same",
            "NetworkInterfaceSets": {"NetworkInterfaceSet": [eni_json("eni-1")]}
        });
        (200, body.to_string())
    });
    let (url, seen) = stand_in(script).await;
    let enis = cloud(&url)
        .describe_enis(&EniFilter::default())
        .await
        .unwrap();
    assert_eq!(enis.len(), 2);
    assert_eq!(seen.lock().len(), 2);
}

#[tokio::test]
async fn route_tables_and_entries_are_paged() {
    let script: Script = Arc::new(|action, form, _| match action {
        "DescribeRouteTableList" => {
            let page: u32 = form["PageNumber"].parse().unwrap();
            let size: u32 = form["PageSize"].parse().unwrap();
            let tables: Vec<_> = (1..=(size + 1))
                .skip(((page - 1) * size) as usize)
                .take(size as usize)
                .map(|n| {
                    serde_json::json!({"RouteTableId": format!("vtb-{n}"), "VpcId": "vpc-1",
                    "RouteTableType": if n == 1 { "System" } else { "Custom" }})
                })
                .collect();
            let body = serde_json::json!({"RequestId": "R", "TotalCount": size + 1,
                "PageNumber": page, "PageSize": size,
                "RouterTableList": {"RouterTableListType": tables}});
            (200, body.to_string())
        }
        "DescribeRouteEntryList" => {
            let (cidr, next) = match form.get("NextToken").map(String::as_str) {
                None => ("10.244.1.0/24", "t2"),
                _ => ("10.244.2.0/24", ""),
            };
            let body = serde_json::json!({"RequestId": "R", "NextToken": next,
                "RouteEntrys": {"RouteEntry": [{"RouteTableId": "vtb-1", "DestinationCidrBlock": cidr,
                  "Type": "Custom", "Status": "Available",
                  "NextHops": {"NextHop": [{"NextHopType": "Instance", "NextHopId": "i-1"}]}}]}});
            (200, body.to_string())
        }
        other => panic!("unexpected {other}"),
    });
    let (url, seen) = stand_in(script).await;
    let cloud = cloud(&url);
    let tables = cloud
        .describe_route_tables(&VpcId::new("vpc-1"))
        .await
        .unwrap();
    assert_eq!(tables.len(), 51);
    assert_eq!(tables.iter().filter(|t| t.main).count(), 1);
    let entries = cloud
        .list_route_entries(&RouteTableId::new("vtb-1"))
        .await
        .unwrap();
    assert_eq!(entries.len(), 2);
    assert!(seen.lock().iter().all(|f| f["Version"] == "2016-04-28"));
}

#[tokio::test]
async fn a_retried_create_keeps_its_client_token_and_is_signed_each_time() {
    let script: Script = Arc::new(|action, _, before| {
        assert_eq!(action, "CreateNetworkInterface");
        if before < 2 {
            let body = serde_json::json!({"RequestId": "R-throttled", "HostId": "ecs.aliyuncs.com",
                "Code": "Throttling.User", "Message": "Request was denied due to user flow control."});
            return (400, body.to_string());
        }
        let mut eni = eni_json("eni-new");
        eni["RequestId"] = "R-ok".into();
        (200, eni.to_string())
    });
    let (url, seen) = stand_in(script).await;
    let cloud = cloud(&url);
    let eni = cloud
        .create_eni(&CreateEniRequest {
            subnet_id: SubnetId::new("vsw-1"),
            security_groups: vec![SecurityGroupId::new("sg-1"), SecurityGroupId::new("sg-2")],
            secondary_ip_count: 0,
            tags: [("cluster".to_owned(), "c1".to_owned())].into(),
            description: "a b*c~d".into(),
            idempotency_token: IdempotencyToken::new("pod-uid-42"),
        })
        .await
        .unwrap();
    assert_eq!(eni.id.as_str(), "eni-new");

    let seen = seen.lock();
    assert_eq!(seen.len(), 3);
    let nonces: std::collections::BTreeSet<&str> =
        seen.iter().map(|f| f["SignatureNonce"].as_str()).collect();
    assert_eq!(nonces.len(), 3, "a fresh nonce per attempt");
    for form in seen.iter() {
        assert_eq!(form["ClientToken"], "pod-uid-42");
        assert_eq!(form["SecurityGroupIds.1"], "sg-1");
        assert_eq!(form["SecurityGroupIds.2"], "sg-2");
        assert_eq!(form["Description"], "a b*c~d");
        assert_eq!(form["RegionId"], "cn-hangzhou");
        assert_eq!(form["Format"], "JSON");
        assert!(!form.contains_key("SecondaryPrivateIpAddressCount"));
        // The signature the server would compute matches the one sent.
        let params: Vec<(String, String)> = form
            .iter()
            .filter(|(k, _)| *k != "Signature")
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        assert_eq!(form["Signature"], sign("POST", &params, "testsecret"));
    }
    let stats = cloud.stats().get("CreateNetworkInterface");
    assert_eq!((stats.calls, stats.throttles, stats.retries), (3, 2, 2));
}

#[tokio::test]
async fn an_unknown_instance_type_is_asked_for_again_after_a_minute() {
    let known = Arc::new(Mutex::new(false));
    let knows = known.clone();
    let script: Script = Arc::new(move |action, form, _| {
        assert_eq!(action, "DescribeInstanceTypes");
        assert_eq!(form["InstanceTypes.1"], "ecs.new.large");
        let types = if *knows.lock() {
            serde_json::json!([{"InstanceTypeId": "ecs.new.large", "EniQuantity": 3,
                "EniPrivateIpAddressQuantity": 10, "EniTotalQuantity": 3}])
        } else {
            serde_json::json!([])
        };
        let body = serde_json::json!({"RequestId": "R", "InstanceTypes": {"InstanceType": types}});
        (200, body.to_string())
    });
    let (url, seen) = stand_in(script).await;
    let cloud = cloud(&url);
    let new_type = providers::ids::InstanceType::new("ecs.new.large");

    let err = cloud.instance_type_limits(&new_type).await.unwrap_err();
    assert_eq!(err.kind, providers::ErrorKind::NotFound);
    // The catalogue learns the type, but within the minute nobody asks.
    *known.lock() = true;
    let err = cloud.instance_type_limits(&new_type).await.unwrap_err();
    assert_eq!(err.kind, providers::ErrorKind::NotFound);
    assert_eq!(seen.lock().len(), 1);

    // Time moves on a minute (paused only around the jump: the HTTP calls
    // themselves run on real time).
    tokio::time::pause();
    tokio::time::advance(Duration::from_secs(61)).await;
    tokio::time::resume();
    let limits = cloud.instance_type_limits(&new_type).await.unwrap();
    assert_eq!((limits.max_enis, limits.ipv4_per_eni), (3, 10));
    cloud.instance_type_limits(&new_type).await.unwrap();
    assert_eq!(seen.lock().len(), 2, "known types come from the cache");
}
