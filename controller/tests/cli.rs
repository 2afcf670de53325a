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

/// `run` up to its first log line: a kubeconfig that does not exist makes
/// it log the error and exit 1. Its stderr is a pipe here, as in a container.
fn run_logs(log_format: &str) -> String {
    let config = format!("{GOOD}controller: {{logFormat: {log_format}}}\n");
    let path = write(&format!("logs-{log_format}.yaml"), &config);
    let out = bin()
        .args(["run", "--config"])
        .arg(&path)
        .env("KUBECONFIG", "/nonexistent/vpc-eni-kubeconfig")
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    stderr
}

#[test]
fn logs_into_a_pipe_are_plain_text_without_colour_codes() {
    let stderr = run_logs("text");
    assert!(!stderr.contains('\u{1b}'), "{stderr:?}");
    let line = stderr.lines().next().unwrap_or_default();
    assert!(line.contains("ERROR"), "{stderr}");
    assert!(line.contains("cannot read kubeconfig"), "{stderr}");
}

#[test]
fn json_logs_are_one_object_per_line_with_the_message_at_the_top() {
    let stderr = run_logs("json");
    assert!(!stderr.contains('\u{1b}'), "{stderr:?}");
    let first = stderr.lines().next().unwrap_or_default();
    let line: serde_json::Value =
        serde_json::from_str(first).unwrap_or_else(|e| panic!("not JSON ({e}): {first:?}"));
    assert_eq!(line["level"], "ERROR", "{line}");
    let message = line["message"].as_str().unwrap_or_default();
    assert!(message.contains("cannot read kubeconfig"), "{line}");
}

#[test]
fn cleanup_eni_refuses_a_config_that_still_has_eni_mode_on() {
    let on = format!(
        "{GOOD}eni: {{enabled: true, subnets: {{cn-hangzhou-h: [vsw-1]}}, securityGroups: [sg-1]}}\n"
    );
    let path = write("eni-on.yaml", &on);
    let out = bin()
        .args(["cleanup-eni", "--config"])
        .arg(&path)
        .env("KUBECONFIG", "/nonexistent/vpc-eni-kubeconfig")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("eni.enabled is true"), "{stderr}");
}

/// Terway's eni-config as `kubectl get configmap eni-config -o yaml` shows
/// it on an ACK cluster (credentials by addon token, trunking on).
const TERWAY_ENI_CONFIG: &str = r#"apiVersion: v1
kind: ConfigMap
metadata: {name: eni-config, namespace: kube-system}
data:
  eni_conf: |
    {"version": "1", "max_pool_size": 5, "min_pool_size": 0,
     "credential_path": "/var/addon/token-config", "enable_eni_trunking": true,
     "vswitches": {"cn-hangzhou-j": ["vsw-j1"], "cn-hangzhou-k": ["vsw-k1"]},
     "eni_tags": {"ack.aliyun.com": "c1234"}, "service_cidr": "192.168.0.0/16",
     "security_group": "sg-1", "ip_stack": "ipv4", "vswitch_selection_policy": "ordered"}
"#;

#[test]
fn import_terway_prints_a_config_that_check_config_accepts() {
    let cm = write("eni-config.yaml", TERWAY_ENI_CONFIG);
    let out = bin()
        .args([
            "import-terway",
            "--region",
            "cn-hangzhou",
            "--check",
            "--eni-config",
        ])
        .arg(&cm)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stderr.contains("check-config: OK"), "{stderr}");
    assert!(stdout.contains("# - enable_eni_trunking:"), "{stdout}");
    // What it printed is a config file check-config takes as it is.
    let config = write("imported.yaml", &stdout);
    let out = bin()
        .args(["check-config", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn import_terway_check_without_a_region_exits_2_naming_it() {
    use std::io::Write;
    let mut child = bin()
        .args(["import-terway", "--check", "--eni-config", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(TERWAY_ENI_CONFIG.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("provider.region: give --region"),
        "{stderr}"
    );
    assert!(
        stdout.contains("from Terway's eni-config (stdin)"),
        "{stdout}"
    );
}

#[cfg(feature = "simulate")]
/// The ENI act of the built-in scenario, alone (one act, fresh fakes).
fn default_eni_act() -> String {
    let text = controller::simulate::scenario::DEFAULT_SCENARIO;
    let at = text
        .find("\n---\n")
        .expect("the default scenario has two acts");
    text[at + 5..].to_owned()
}

#[cfg(feature = "simulate")]
#[test]
fn simulate_print_default_shows_the_routes_act_and_the_eni_act() {
    let out = bin()
        .args(["simulate", "--print-default"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    let acts = controller::simulate::scenario::Scenario::parse_acts(&text).unwrap();
    assert_eq!(acts.len(), 2);
    assert!(acts[1].eni_enabled() && acts[1].total_nodes() == 1);
}

#[cfg(feature = "simulate")]
#[test]
fn simulate_bad_scenario_names_the_field_before_starting() {
    let bad = default_eni_act().replace("replicas: 2}", "replicas: 2, eniPerPod: 0}");
    let path = write("bad-scenario.yaml", &bad);
    let out = bin()
        .args(["simulate", "--scenario"])
        .arg(&path)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success());
    assert!(stderr.contains("scenario.steps[0].eniPerPod"), "{stderr}");
    assert!(
        !stdout.contains("fake kube-apiserver"),
        "nothing started: {stdout}"
    );
}

#[cfg(feature = "simulate")]
#[test]
fn simulate_eni_act_shows_running_pods_their_enis_and_the_pending_text() {
    let path = write("eni-act.yaml", &default_eni_act());
    let out = bin()
        .args(["simulate", "--scenario"])
        .arg(&path)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    for want in [
        "CAPACITY(aliyun/eni)",
        "0/1 nodes are available: 1 Insufficient aliyun/eni.",
        "AllocIPSucceed",
        "ENIs in the cloud",
        "MEASURED p50 / p99 / max",
    ] {
        assert!(stdout.contains(want), "missing {want:?} in:\n{stdout}");
    }
    // The scheduler's exact words on a pod of the second Deployment.
    assert!(
        stdout.lines().any(|l| {
            let cols: Vec<&str> = l.split_whitespace().collect();
            cols.len() > 3
                && cols[0] == "Warning"
                && cols[1] == "FailedScheduling"
                && cols[2].starts_with("pod/eni-b-")
                && l.ends_with("   0/1 nodes are available: 1 Insufficient aliyun/eni.")
        }),
        "{stdout}"
    );
    // Two pods run on the node's two secondary ENIs, two wait.
    let pods: Vec<&str> = stdout
        .lines()
        .filter(|l| l.starts_with("eni-a-") || l.starts_with("eni-b-"))
        .collect();
    assert_eq!(pods.len(), 4, "{stdout}");
    let running = pods.iter().filter(|l| l.contains(" Running ")).count();
    assert_eq!(running, 2, "{stdout}");
    // NAME STATUS IP NODE ENI: a vSwitch IP and an ENI id on each.
    for l in pods.iter().filter(|l| l.contains(" Running ")) {
        let cols: Vec<&str> = l.split_whitespace().collect();
        assert!(cols[2].starts_with("192.168."), "{l}");
        assert!(cols[4].starts_with("eni-"), "{l}");
    }
    assert!(!stdout.contains(" NO "), "every phase converges:\n{stdout}");
}

#[test]
fn check_config_explains_attach_concurrency() {
    let eni = format!(
        "{GOOD}eni: {{enabled: true, subnets: {{cn-hangzhou-h: [vsw-1]}}, securityGroups: [sg-1], attachConcurrency: 3}}\n"
    );
    let out = bin()
        .args(["check-config", "--config"])
        .arg(write("attach.yaml", &eni))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(
        stdout.contains("up to 3 ENI attaches at once per node (eni.attachConcurrency)"),
        "{stdout}"
    );
    let out = bin()
        .args(["check-config", "--config"])
        .arg(write(
            "attach-bad.yaml",
            &eni.replace("attachConcurrency: 3", "attachConcurrency: 0"),
        ))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        all.contains("eni.attachConcurrency: 0 is outside 1..=16"),
        "{all}"
    );
}
