//! A minimal Alibaba RPC client for the fake-alibaba tests, with its own
//! Signature V1.0 signer written from the documented algorithm and sharing no
//! code with the fake's verifier (so a bug in either shows up as a mismatch).
//! Used by the `fake_alibaba_*` tests through `mod support;`; each of them
//! uses only part of it.
#![allow(dead_code)]

use base64::Engine;
use hmac::{Hmac, KeyInit, Mac};
use mocks::alibaba::{FakeAlibaba, FakeAlibabaHandle};
use mocks::cloud::World;
use serde_json::Value;
use sha1::Sha1;
use std::collections::BTreeMap;

pub const ECS: &str = "2014-05-26";
pub const VPC: &str = "2016-04-28";

/// The product version of an action, as a real client would pick it.
pub fn version_of(action: &str) -> &'static str {
    match action {
        "DescribeVSwitches"
        | "DescribeRouteTableList"
        | "DescribeRouteEntryList"
        | "CreateRouteEntry"
        | "DeleteRouteEntry"
        | "CreateRouteEntries"
        | "DeleteRouteEntries" => VPC,
        _ => ECS,
    }
}

/// RFC 3986 encoding, byte by byte.
pub fn enc(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

pub fn string_to_sign(method: &str, params: &BTreeMap<String, String>) -> String {
    // Sorted by name (the map's order), not by the joined pair.
    let pairs: Vec<String> = params
        .iter()
        .filter(|(k, _)| k.as_str() != "Signature")
        .map(|(k, v)| format!("{}={}", enc(k), enc(v)))
        .collect();
    format!("{method}&{}&{}", enc("/"), enc(&pairs.join("&")))
}

pub fn signature(secret: &str, sts: &str) -> String {
    let mut mac = Hmac::<Sha1>::new_from_slice(format!("{secret}&").as_bytes()).unwrap();
    mac.update(sts.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

fn form(params: &BTreeMap<String, String>) -> String {
    params
        .iter()
        .map(|(k, v)| format!("{}={}", enc(k), enc(v)))
        .collect::<Vec<_>>()
        .join("&")
}

pub fn now_stamp() -> String {
    chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

#[derive(Clone)]
pub struct Client {
    pub url: String,
    pub id: String,
    pub secret: String,
    pub token: Option<String>,
    pub region: String,
    http: reqwest::Client,
}

/// One answer: HTTP status and JSON body.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub body: Value,
}

impl Answer {
    pub fn code(&self) -> &str {
        self.body["Code"].as_str().unwrap_or("")
    }

    #[track_caller]
    pub fn ok(&self) -> &Value {
        assert_eq!(self.status, 200, "expected success, got {:?}", self.body);
        assert!(self.body["RequestId"]
            .as_str()
            .is_some_and(|r| !r.is_empty()));
        &self.body
    }

    /// An Alibaba error body: `{RequestId, HostId, Code, Message}`.
    #[track_caller]
    pub fn err(&self, status: u16, code: &str) -> &str {
        assert_eq!(
            (self.status, self.code()),
            (status, code),
            "unexpected answer {:?}",
            self.body
        );
        for field in ["RequestId", "HostId", "Message"] {
            assert!(
                self.body[field].as_str().is_some_and(|v| !v.is_empty()),
                "error body lacks {field}: {:?}",
                self.body
            );
        }
        self.body["Message"].as_str().unwrap_or("")
    }
}

impl Client {
    pub fn new(url: &str, id: &str, secret: &str) -> Self {
        Self {
            url: url.to_owned(),
            id: id.to_owned(),
            secret: secret.to_owned(),
            token: None,
            region: "cn-hangzhou".into(),
            http: reqwest::Client::new(),
        }
    }

    /// Every parameter of a call, common ones included, before signing.
    pub fn params(&self, action: &str, extra: &[(&str, &str)]) -> BTreeMap<String, String> {
        let mut p: BTreeMap<String, String> = [
            ("AccessKeyId", self.id.as_str()),
            ("Action", action),
            ("Format", "JSON"),
            ("RegionId", self.region.as_str()),
            ("SignatureMethod", "HMAC-SHA1"),
            ("SignatureVersion", "1.0"),
            ("Version", version_of(action)),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        p.insert("SignatureNonce".into(), uuid::Uuid::new_v4().to_string());
        p.insert("Timestamp".into(), now_stamp());
        if let Some(t) = &self.token {
            p.insert("SecurityToken".into(), t.clone());
        }
        for (k, v) in extra {
            p.insert((*k).to_owned(), (*v).to_owned());
        }
        p
    }

    /// Add `Signature` for `method`.
    pub fn sign(&self, method: &str, params: &mut BTreeMap<String, String>) {
        let sig = signature(&self.secret, &string_to_sign(method, params));
        params.insert("Signature".into(), sig);
    }

    /// Send as a GET with everything in the query.
    pub async fn send_get(&self, params: &BTreeMap<String, String>) -> Answer {
        let url = format!("{}/?{}", self.url, form(params));
        let resp = self.http.get(url).send().await.unwrap();
        answer(resp).await
    }

    /// Send as a POST: `query` in the URL, `body` as a form.
    pub async fn send_post(
        &self,
        query: &BTreeMap<String, String>,
        body: &BTreeMap<String, String>,
    ) -> Answer {
        let url = format!("{}/?{}", self.url, form(query));
        let resp = self
            .http
            .post(url)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(form(body))
            .send()
            .await
            .unwrap();
        answer(resp).await
    }

    /// A signed POST the way Alibaba's SDKs send it: common parameters in
    /// the query, action parameters in the form body.
    pub async fn call(&self, action: &str, extra: &[(&str, &str)]) -> Answer {
        let mut all = self.params(action, extra);
        self.sign("POST", &mut all);
        let (body, query): (BTreeMap<_, _>, BTreeMap<_, _>) = all
            .into_iter()
            .partition(|(k, _)| extra.iter().any(|(e, _)| e == k));
        self.send_post(&query, &body).await
    }

    /// A signed GET.
    pub async fn get(&self, action: &str, extra: &[(&str, &str)]) -> Answer {
        let mut all = self.params(action, extra);
        self.sign("GET", &mut all);
        self.send_get(&all).await
    }
}

async fn answer(resp: reqwest::Response) -> Answer {
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    let body = serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON: {text}"));
    Answer { status, body }
}

/// A fake on a world built from `yaml`, and a client with `testid`.
pub async fn start(yaml: &str) -> (FakeAlibabaHandle, Client) {
    let world = World::from_yaml(yaml).unwrap();
    let fake = FakeAlibaba::start(world, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let client = Client::new(fake.url(), "testid", "testsecret");
    (fake, client)
}

pub const WORLD: &str = r#"
region: cn-hangzhou
accessKeys: [{id: testid, secret: testsecret}, {id: otherid, secret: othersecret}]
vpcs: [{id: vpc-1, cidr: 192.168.0.0/16, routeTables: [{id: vtb-1, quota: 3}]}]
vswitches:
  - {id: vsw-h, vpc: vpc-1, zone: cn-hangzhou-h, cidr: 192.168.1.0/24}
  - {id: vsw-tiny, vpc: vpc-1, zone: cn-hangzhou-h, cidr: 192.168.2.0/29}
securityGroups: [{id: sg-1, vpc: vpc-1}, {id: sg-2, vpc: vpc-1}]
instances:
  - {id: i-1, type: ecs.g6.large, zone: cn-hangzhou-h, vswitch: vsw-h, privateIp: 192.168.1.10}
  - {id: i-2, type: ecs.g6.xlarge, zone: cn-hangzhou-h, vswitch: vsw-h, privateIp: 192.168.1.11}
faults: {attachDelayMs: 0, detachDelayMs: 0, routeDelayMs: 0}
"#;
