//! kubectl (1.20, Debian `kubernetes-client`) against the fake apiserver, as
//! a user types it. Set `KUBECTL` to pick a binary; without kubectl these
//! tests fail with install instructions unless `SKIP_KUBECTL_TESTS=1`.

use mocks::kubeapi::{FakeApiServer, NodeTemplate, Options};
use serde_json::json;
use std::path::PathBuf;
use std::time::Duration;

fn kubectl_binary() -> Option<String> {
    let bin = std::env::var("KUBECTL").unwrap_or_else(|_| "kubectl".into());
    let works = std::process::Command::new(&bin)
        .args(["version", "--client"])
        .output()
        .is_ok_and(|o| o.status.success());
    if works {
        return Some(bin);
    }
    if std::env::var("SKIP_KUBECTL_TESTS").as_deref() == Ok("1") {
        eprintln!("kubectl not found; skipped because SKIP_KUBECTL_TESTS=1");
        return None;
    }
    panic!(
        "kubectl not found (tried `{bin}`): install it with `apt-get install -y kubernetes-client` \
         (kubectl 1.20), or point KUBECTL at a kubectl binary; set SKIP_KUBECTL_TESTS=1 to skip these tests"
    );
}

/// A kubectl session with its own HOME (discovery cache) and kubeconfig file.
struct Session {
    bin: String,
    dir: PathBuf,
    kubeconfig: PathBuf,
}

impl Session {
    fn new(bin: String, server: &FakeApiServer, tag: &str) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "fake-apiserver-kubectl-{}-{tag}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let kubeconfig = dir.join("kubeconfig");
        std::fs::write(&kubeconfig, server.kubeconfig_yaml()).unwrap();
        Session {
            bin,
            dir,
            kubeconfig,
        }
    }

    async fn run(&self, args: &[&str]) -> String {
        let kc = self.kubeconfig.to_string_lossy().to_string();
        let mut full = vec!["--kubeconfig", kc.as_str()];
        full.extend_from_slice(args);
        let out = tokio::process::Command::new(&self.bin)
            .args(&full)
            .env("HOME", &self.dir)
            .env_remove("KUBECONFIG")
            .output()
            .await
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).to_string();
        let stderr = String::from_utf8_lossy(&out.stderr).to_string();
        assert!(
            out.status.success(),
            "kubectl {args:?} failed: {stderr}\n{stdout}"
        );
        stdout
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

async fn start() -> FakeApiServer {
    FakeApiServer::start(Options {
        resync: Duration::from_millis(200),
        ..Options::default()
    })
    .await
    .unwrap()
}

fn add_node(server: &FakeApiServer, name: &str, ip: &str, cidr: &str, eni: &str) {
    let mut t = NodeTemplate::new(name, "ecs.g6.xlarge", "4", "16Gi");
    t.internal_ip = Some(ip.into());
    t.pod_cidr = Some(cidr.into());
    t.provider_id = Some(format!("cn-hangzhou.i-{name}"));
    t.extended = vec![("aliyun/eni".into(), eni.into())];
    let r = server.store().resource("", "nodes").unwrap();
    server.store().create(&r, "", t.build()).unwrap();
}

async fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    for _ in 0..500 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("timed out waiting for {what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_get_nodes_and_pods_wide() {
    let Some(bin) = kubectl_binary() else { return };
    let server = start().await;
    add_node(&server, "node-a", "192.168.1.10", "10.244.1.0/24", "2");
    add_node(&server, "node-b", "192.168.1.11", "10.244.2.0/24", "2");
    let pods = server.store().resource("", "pods").unwrap();
    server
        .store()
        .create(&pods, "default", json!({"metadata": {"name": "web"}, "spec": {"containers": [{"name": "c", "image": "nginx"}]}}))
        .unwrap();
    wait_for("web running", || {
        server
            .store()
            .get(&pods, "default", "web")
            .is_ok_and(|p| p["status"]["phase"] == "Running")
    })
    .await;
    let k = Session::new(bin, &server, "get");
    let nodes = k.run(&["get", "nodes"]).await;
    let lines: Vec<&str> = nodes.lines().collect();
    assert!(
        lines[0].starts_with("NAME") && lines[0].contains("STATUS") && lines[0].contains("VERSION"),
        "{nodes}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("node-a") && l.contains("Ready") && l.contains("v1.20.2")),
        "{nodes}"
    );
    assert!(lines.iter().any(|l| l.starts_with("node-b")), "{nodes}");

    let wide = k.run(&["get", "pods", "-o", "wide"]).await;
    let header = wide.lines().next().unwrap();
    for col in ["READY", "STATUS", "IP", "NODE"] {
        assert!(header.contains(col), "{wide}");
    }
    let row = wide.lines().find(|l| l.starts_with("web")).unwrap();
    let cells: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(cells[1..3], ["1/1", "Running"], "{wide}");
    assert!(
        cells.contains(&"10.244.1.2") || cells.contains(&"10.244.2.2"),
        "{wide}"
    );
    assert!(
        cells.contains(&"node-a") || cells.contains(&"node-b"),
        "{wide}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_apply_eni_pod_then_describe_shows_insufficient_eni() {
    let Some(bin) = kubectl_binary() else { return };
    let server = start().await;
    add_node(&server, "node-a", "192.168.1.10", "10.244.1.0/24", "0");
    let k = Session::new(bin, &server, "apply");
    let manifest = k.dir.join("pod.yaml");
    std::fs::write(
        &manifest,
        "apiVersion: v1
kind: Pod
metadata:
  name: eni-pod
spec:
  containers:
  - name: app
    image: nginx
    resources:
      limits:
        aliyun/eni: 1
",
    )
    .unwrap();
    let out = k.run(&["apply", "-f", manifest.to_str().unwrap()]).await;
    assert_eq!(out.trim(), "pod/eni-pod created");
    let pods = server.store().resource("", "pods").unwrap();
    wait_for("unschedulable", || {
        server
            .store()
            .get(&pods, "default", "eni-pod")
            .is_ok_and(|p| {
                p["status"]["conditions"]
                    .as_array()
                    .is_some_and(|cs| cs.iter().any(|c| c["reason"] == "Unschedulable"))
            })
    })
    .await;
    let described = k.run(&["describe", "pod", "eni-pod"]).await;
    let line = described
        .lines()
        .find(|l| l.contains("FailedScheduling"))
        .unwrap_or_else(|| panic!("no FailedScheduling event in:\n{described}"));
    assert!(
        line.contains("Warning") && line.contains("default-scheduler"),
        "{line}"
    );
    assert!(
        line.trim_end()
            .ends_with("0/1 nodes are available: 1 Insufficient aliyun/eni."),
        "{line}"
    );
    assert!(described.contains("aliyun/eni:  1"), "{described}");

    // Re-applying the same manifest is a no-op patch, as against a real cluster.
    let out = k.run(&["apply", "-f", manifest.to_str().unwrap()]).await;
    assert_eq!(out.trim(), "pod/eni-pod unchanged");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_runs_and_scales_a_deployment_of_two_pods() {
    let Some(bin) = kubectl_binary() else { return };
    let server = start().await;
    add_node(&server, "node-a", "192.168.1.10", "10.244.1.0/24", "2");
    let k = Session::new(bin, &server, "deploy");
    let manifest = k.dir.join("deploy.yaml");
    std::fs::write(
        &manifest,
        "apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  replicas: 2
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
      - name: c
        image: nginx
",
    )
    .unwrap();
    assert_eq!(
        k.run(&["apply", "-f", manifest.to_str().unwrap()])
            .await
            .trim(),
        "deployment.apps/web created"
    );
    let pods = server.store().resource("", "pods").unwrap();
    let running = |n: usize| {
        let l = server
            .store()
            .list(&pods, Some("default"), &Default::default())
            .unwrap();
        l.items.len() == n && l.items.iter().all(|p| p["status"]["phase"] == "Running")
    };
    wait_for("2 running pods", || running(2)).await;
    let out = k.run(&["get", "deploy", "web"]).await;
    assert!(
        out.lines()
            .nth(1)
            .is_some_and(|l| l.split_whitespace().nth(1) == Some("2/2")),
        "{out}"
    );
    assert_eq!(
        k.run(&["scale", "deploy", "web", "--replicas=1"])
            .await
            .trim(),
        "deployment.apps/web scaled"
    );
    wait_for("1 running pod", || running(1)).await;
    let all = k.run(&["get", "all"]).await;
    assert!(
        all.contains("deployment.apps/web") && all.contains("pod/web-"),
        "{all}"
    );
}
