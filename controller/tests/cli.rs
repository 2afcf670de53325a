//! The binary as a user runs it: a bad config is refused with exit code 2 and
//! the field's path, before any cloud or kube call; a good one is explained.

use std::process::Command;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_vpc-eni-controller"))
}

fn write(name: &str, text: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("vpc-eni-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

const GOOD: &str = "clusterId: demo
provider: {kind: alibaba, region: cn-hangzhou, endpoint: 'http://127.0.0.1:9'}
routes: {enabled: true, clusterCidr: 10.244.0.0/16}
";

#[test]
fn check_config_explains_a_good_config() {
    let path = write("good.yaml", GOOD);
    let out = bin()
        .args(["check-config", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(stdout.contains("OK"), "{stdout}");
    assert!(stdout.contains("one entry per node podCIDR"), "{stdout}");
}

#[test]
fn bad_config_exits_2_naming_the_field_for_check_config_and_run() {
    let path = write("bad.yaml", &GOOD.replace("10.244.0.0/16", "10.244.0.1/16"));
    for args in [["check-config", "--config"], ["run", "--config"]] {
        // No kubeconfig and an endpoint nobody serves: reaching either would
        // fail differently (exit 1), so exit 2 shows validation came first.
        let out = bin()
            .args(args)
            .arg(&path)
            .env_remove("KUBECONFIG")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(
            stderr.contains(
                "routes.clusterCidr: 10.244.0.1/16 has host bits set; did you mean 10.244.0.0/16?"
            ),
            "{stderr}"
        );
    }
}

#[test]
fn unknown_key_exits_2() {
    let path = write("unknown.yaml", &format!("{GOOD}colour: blue\n"));
    let out = bin()
        .args(["check-config", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("unknown field `colour`"), "{stderr}");
}
