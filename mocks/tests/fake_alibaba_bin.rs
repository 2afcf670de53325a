//! The `fake-alibaba` binary: started on port 0 with a STATE.yaml, its first
//! stdout line names the endpoint, and a signed call to it is answered.

mod support;

use support::alibaba_client::Client;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

const STATE: &str = r#"
region: cn-hangzhou
accessKeys: [{id: testid, secret: testsecret}]
vpcs: [{id: vpc-1, cidr: 192.168.0.0/16, routeTables: [{id: vtb-1, quota: 200}]}]
vswitches: [{id: vsw-h, vpc: vpc-1, zone: cn-hangzhou-h, cidr: 192.168.1.0/24}]
securityGroups: [{id: sg-1, vpc: vpc-1}]
instances: [{id: i-1, type: ecs.g6.xlarge, zone: cn-hangzhou-h, vswitch: vsw-h, privateIp: 192.168.1.10}]
faults: {}
"#;

#[tokio::test]
async fn the_binary_prints_its_endpoint_first_and_serves_it() {
    let path =
        std::env::temp_dir().join(format!("fake-alibaba-state-{}.yaml", uuid::Uuid::new_v4()));
    std::fs::write(&path, STATE).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_fake-alibaba"))
        .args(["--listen", "127.0.0.1:0", "--state"])
        .arg(&path)
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let first = BufReader::new(stdout)
        .lines()
        .next_line()
        .await
        .unwrap()
        .unwrap();
    let url = first
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {first:?}"))
        .to_owned();
    assert!(url.starts_with("http://127.0.0.1:"), "{url}");

    let c = Client::new(&url, "testid", "testsecret");
    let answer = c
        .call("DescribeInstances", &[("InstanceIds", r#"["i-1"]"#)])
        .await;
    assert_eq!(
        answer.ok()["Instances"]["Instance"][0]["InstanceType"],
        "ecs.g6.xlarge"
    );

    child.kill().await.unwrap();
    let _ = std::fs::remove_file(&path);
}

#[tokio::test]
async fn an_invalid_state_file_is_reported_and_exits() {
    let path = std::env::temp_dir().join(format!("fake-alibaba-bad-{}.yaml", uuid::Uuid::new_v4()));
    std::fs::write(&path, "region: cn-hangzhou\nvpcs: [{id: vpc-1}]\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_fake-alibaba"))
        .args(["--listen", "127.0.0.1:0", "--state"])
        .arg(&path)
        .output()
        .await
        .unwrap();
    assert!(!out.status.success());
    assert!(out.stdout.is_empty());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("is not valid"), "{err}");
    let _ = std::fs::remove_file(&path);
}
