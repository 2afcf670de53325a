//! fake-alibaba checks requests as Alibaba's gateway does: correctly signed
//! GET and POST calls pass, and a changed parameter, an unknown key, a reused
//! nonce, a stale timestamp or a wrong STS token is refused with Alibaba's
//! code and status, before anything reaches the cloud model.

mod support;

use mocks::alibaba::auth::AccessKey;
use std::collections::BTreeMap;
use support::alibaba_client::{self as client, start, string_to_sign, Client, WORLD};

#[test]
fn the_test_signer_matches_the_documented_example() {
    let params: BTreeMap<String, String> = [
        ("AccessKeyId", "testid"),
        ("Action", "DescribeRegions"),
        ("Format", "XML"),
        ("SignatureMethod", "HMAC-SHA1"),
        ("SignatureNonce", "3ee8c1b8-83d3-44af-a94f-4e0ad82fd6cf"),
        ("SignatureVersion", "1.0"),
        ("Timestamp", "2016-02-23T12:46:24Z"),
        ("Version", "2014-05-26"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    let sts = string_to_sign("GET", &params);
    assert_eq!(
        sts,
        "GET&%2F&AccessKeyId%3Dtestid%26Action%3DDescribeRegions%26Format%3DXML%26SignatureMethod%3DHMAC-SHA1%26SignatureNonce%3D3ee8c1b8-83d3-44af-a94f-4e0ad82fd6cf%26SignatureVersion%3D1.0%26Timestamp%3D2016-02-23T12%253A46%253A24Z%26Version%3D2014-05-26"
    );
    assert_eq!(
        client::signature("testsecret", &sts),
        "OLeaidS1JvxuMvnyHOwuJ+uX5qY="
    );
}

#[tokio::test]
async fn signed_get_and_post_requests_are_accepted() {
    let (_fake, c) = start(WORLD).await;
    let get = c.get("DescribeVSwitches", &[("VSwitchId", "vsw-h")]).await;
    assert_eq!(get.ok()["VSwitches"]["VSwitch"][0]["VSwitchId"], "vsw-h");

    // POST: common parameters in the query, action parameters in the body;
    // the signature covers their union.
    let post = c
        .call(
            "DescribeNetworkInterfaces",
            &[("InstanceId", "i-1"), ("Tag.1.Key", "a b*~/+=漢")],
        )
        .await;
    post.ok();
}

#[tokio::test]
async fn the_server_string_to_sign_equals_the_clients() {
    let (_fake, c) = start(WORLD).await;
    let mut params = c.params("DescribeVSwitches", &[("Description", "x y*z~")]);
    params.insert("Signature".into(), "AAAAAAAAAAAAAAAAAAAAAAAAAAA=".into());
    let answer = c.send_get(&params).await;
    let message = answer.err(400, "SignatureDoesNotMatch");
    let expected = string_to_sign("GET", &params);
    assert!(
        message.ends_with(&format!("server string to sign is:{expected}")),
        "{message}"
    );
}

#[tokio::test]
async fn changing_any_single_parameter_after_signing_is_refused() {
    let (fake, c) = start(WORLD).await;
    let extra = [
        ("VSwitchId", "vsw-h"),
        ("SecurityGroupId", "sg-1"),
        ("SecondaryPrivateIpAddressCount", "2"),
        ("Description", "pods"),
        ("Tag.1.Key", "cluster"),
        ("Tag.1.Value", "c1"),
        ("ClientToken", "tok-1"),
    ];
    let mut signed = c.params("CreateNetworkInterface", &extra);
    c.sign("POST", &mut signed);
    let names: Vec<String> = signed
        .keys()
        .filter(|k| k.as_str() != "Signature")
        .cloned()
        .collect();
    assert!(names.len() >= 15, "{names:?}");

    for name in &names {
        let mut tampered = signed.clone();
        let value = tampered.get_mut(name).unwrap();
        *value = match name.as_str() {
            // Still well-formed, so only the signature can catch it.
            "Timestamp" => {
                let t = chrono::DateTime::parse_from_rfc3339(value).unwrap()
                    + chrono::Duration::seconds(1);
                t.format("%Y-%m-%dT%H:%M:%SZ").to_string()
            }
            "AccessKeyId" => "otherid".into(),
            "SecondaryPrivateIpAddressCount" => "3".into(),
            _ => format!("{value}1"),
        };
        let answer = c.send_post(&tampered, &BTreeMap::new()).await;
        assert_eq!(answer.status, 400, "{name}: {:?}", answer.body);
        let expected = match name.as_str() {
            "SignatureMethod" | "SignatureVersion" => "InvalidParameter",
            _ => "SignatureDoesNotMatch",
        };
        assert_eq!(answer.code(), expected, "{name}: {:?}", answer.body);
    }

    // A parameter added or removed after signing is refused as well.
    let mut added = signed.clone();
    added.insert("Tag.2.Key".into(), "extra".into());
    let answer = c.send_post(&added, &BTreeMap::new()).await;
    answer.err(400, "SignatureDoesNotMatch");
    let mut removed = signed.clone();
    removed.remove("Description");
    let answer = c.send_post(&removed, &BTreeMap::new()).await;
    answer.err(400, "SignatureDoesNotMatch");

    // None of it reached the cloud; the untouched request still works.
    assert_eq!(fake.world().calls().get("CreateNetworkInterface"), None);
    let answer = c.send_post(&signed, &BTreeMap::new()).await;
    assert!(answer.ok()["NetworkInterfaceId"]
        .as_str()
        .unwrap()
        .starts_with("eni-"));
}

#[tokio::test]
async fn unknown_key_and_wrong_secret() {
    let (_fake, c) = start(WORLD).await;
    let unknown = Client::new(&c.url, "nobody", "testsecret");
    let answer = unknown.get("DescribeVSwitches", &[]).await;
    assert_eq!(
        answer.err(404, "InvalidAccessKeyId.NotFound"),
        "Specified access key is not found."
    );

    let wrong = Client::new(&c.url, "testid", "not-the-secret");
    wrong
        .call("DescribeVSwitches", &[])
        .await
        .err(400, "SignatureDoesNotMatch");
}

#[tokio::test]
async fn a_reused_nonce_is_refused() {
    let (_fake, c) = start(WORLD).await;
    let mut p = c.params("DescribeVSwitches", &[]);
    c.sign("GET", &mut p);
    c.send_get(&p).await.ok();
    let again = c.send_get(&p).await;
    assert_eq!(
        again.err(400, "SignatureNonceUsed"),
        "Specified signature nonce was used already."
    );
}

#[tokio::test]
async fn timestamps_more_than_fifteen_minutes_off_are_refused() {
    let (_fake, c) = start(WORLD).await;
    for offset in [-20i64, 20] {
        let t = chrono::Utc::now() + chrono::Duration::minutes(offset);
        let mut p = c.params(
            "DescribeVSwitches",
            &[("Timestamp", &t.format("%Y-%m-%dT%H:%M:%SZ").to_string())],
        );
        c.sign("GET", &mut p);
        c.send_get(&p).await.err(400, "InvalidTimeStamp.Expired");
    }
    let mut p = c.params("DescribeVSwitches", &[("Timestamp", "yesterday")]);
    c.sign("GET", &mut p);
    c.send_get(&p).await.err(400, "InvalidTimeStamp.Format");
}

#[tokio::test]
async fn sts_credentials_need_their_token_and_can_be_rotated() {
    let (fake, c) = start(WORLD).await;
    fake.keys()
        .put(AccessKey::sts("STS.one", "secret-one", "token-one"));
    let mut sts = Client::new(&c.url, "STS.one", "secret-one");

    sts.get("DescribeVSwitches", &[])
        .await
        .err(400, "MissingSecurityToken");
    sts.token = Some("token-two".into());
    sts.get("DescribeVSwitches", &[])
        .await
        .err(400, "InvalidSecurityToken.MismatchWithAccessKey");
    sts.token = Some("token-one".into());
    sts.get("DescribeVSwitches", &[]).await.ok();

    // The refresh: new credentials arrive, the old ones expire.
    fake.keys()
        .put(AccessKey::sts("STS.two", "secret-two", "token-two"));
    fake.keys().expire("STS.one");
    sts.get("DescribeVSwitches", &[])
        .await
        .err(400, "InvalidSecurityToken.Expired");
    let mut fresh = Client::new(&c.url, "STS.two", "secret-two");
    fresh.token = Some("token-two".into());
    fresh.call("DescribeVSwitches", &[]).await.ok();
}

#[tokio::test]
async fn missing_parameters_unknown_actions_and_versions() {
    let (_fake, c) = start(WORLD).await;
    let mut p = c.params("DescribeVSwitches", &[]);
    p.remove("SignatureNonce");
    c.sign("GET", &mut p);
    c.send_get(&p).await.err(400, "MissingSignatureNonce");

    c.get("RunInstances", &[])
        .await
        .err(404, "InvalidAction.NotFound");
    c.get("DescribeVSwitches", &[("Version", "2014-05-26")])
        .await
        .err(400, "InvalidVersion");
    c.get("DescribeVSwitches", &[("Format", "XML")])
        .await
        .err(400, "InvalidParameter");
    c.get("DescribeVSwitches", &[("RegionId", "cn-beijing")])
        .await
        .err(404, "InvalidRegionId.NotFound");
    let message = c
        .call("AttachNetworkInterface", &[("InstanceId", "i-1")])
        .await
        .err(400, "MissingParameter")
        .to_owned();
    assert!(message.contains("NetworkInterfaceId"), "{message}");
}

#[tokio::test]
async fn the_signature_covers_query_and_form_body_together() {
    let (_fake, c) = start(WORLD).await;
    let extra = [("VSwitchId", "vsw-h"), ("Description", "pods")];
    let mut signed = c.params("CreateNetworkInterface", &extra);
    c.sign("POST", &mut signed);
    let split = |moved: &[&str]| -> (BTreeMap<String, String>, BTreeMap<String, String>) {
        signed
            .clone()
            .into_iter()
            .partition(|(k, _)| !moved.contains(&k.as_str()))
    };

    // A body parameter changed after signing is caught like a query one.
    let (query, mut body) = split(&["VSwitchId", "Description"]);
    body.insert("Description".into(), "other".into());
    c.send_post(&query, &body)
        .await
        .err(400, "SignatureDoesNotMatch");

    // Which side a parameter travels on does not matter, only the union.
    let (query, body) = split(&["VSwitchId", "Description", "Action"]);
    c.send_post(&query, &body)
        .await
        .err(400, "MissingParameter"); // signature fine; sg missing in the model

    // The method is signed: a POST signature does not verify as a GET.
    let mut as_get = c.params("DescribeVSwitches", &[]);
    c.sign("POST", &mut as_get);
    c.send_get(&as_get).await.err(400, "SignatureDoesNotMatch");
}

mod property {
    use super::client::{signature, string_to_sign};
    use mocks::alibaba::auth::{AccessKey, KeyStore};
    use mocks::alibaba::params::Params;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    fn base(nonce: &str) -> BTreeMap<String, String> {
        [
            ("AccessKeyId", "testid"),
            ("Action", "DescribeVSwitches"),
            ("SignatureMethod", "HMAC-SHA1"),
            ("SignatureVersion", "1.0"),
            ("Version", "2016-04-28"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .chain([
            ("SignatureNonce".to_owned(), nonce.to_owned()),
            ("Timestamp".to_owned(), super::client::now_stamp()),
        ])
        .collect()
    }

    proptest! {
        // Any parameter names and values, Unicode and reserved characters
        // included: what the test signer signs, the fake verifies; a change of
        // any one value is refused.
        #[test]
        fn independent_signer_and_verifier_agree(
            extra in proptest::collection::btree_map("[A-Za-z][A-Za-z0-9.]{0,12}", "\\PC{0,16}", 0..6),
            nonce in "[a-z0-9-]{8,36}",
            method in prop_oneof![Just("GET"), Just("POST")],
        ) {
            let store = KeyStore::new([AccessKey::new("testid", "testsecret")]);
            let mut params = base(&nonce);
            for (k, v) in &extra {
                params.entry(format!("X{k}")).or_insert_with(|| v.clone());
            }
            let sig = signature("testsecret", &string_to_sign(method, &params));
            params.insert("Signature".into(), sig);
            let now = chrono::Utc::now();

            let mut tampered = params.clone();
            if let Some((k, v)) = tampered.iter_mut().find(|(k, _)| k.starts_with('X')) {
                let _ = k;
                v.push('!');
                let refused = store.verify(method, &Params::new(tampered), now);
                prop_assert_eq!(refused.unwrap_err().code, "SignatureDoesNotMatch");
            }
            prop_assert_eq!(store.verify(method, &Params::new(params), now), Ok(()));
        }
    }
}
