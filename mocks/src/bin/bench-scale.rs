//! `bench-scale`: the scale benchmark (not a test): `vpc-eni-controller
//! run` as its own process, routes and ENI modes on, against the `fake-apiserver` (scheduler
//! and kubelet stand-ins on) and `fake-alibaba` processes holding N nodes
//! and M realistic pods; waits for it to settle and prints one JSON
//! document with the controller's peak RSS and the figures around it.
//!
//! Steps: the cloud world (N instances) is written and `fake-alibaba`
//! started; `fake-apiserver` started; N nodes and M - K plain pods created
//! over HTTP (pods/s measured); the controller started; once every node has
//! its podCIDR, route and ENI capacity, K pods asking for `aliyun/eni` are
//! created and must all get their allocation; then the controller runs
//! settled for a while. Its RSS is sampled throughout; the kernel's
//! high-water mark (`VmHWM`) is the figure.
//!
//! Run through `scripts/bench-scale.sh` (it builds the release binaries):
//! `target/release/bench-scale --bin-dir target/release --nodes 5000
//! --pods 100000`.

use anyhow::{bail, Context as _};
use futures::{StreamExt, TryStreamExt};
use ipam::allocation::ALLOCATION_ANNOTATION;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, ListParams, PostParams};
use kube::ResourceExt;
use mocks::kubeapi::NodeTemplate;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const REGION: &str = "cn-hangzhou";
const ZONES: [&str; 2] = ["cn-hangzhou-h", "cn-hangzhou-i"];
const INSTANCE_TYPE: &str = "ecs.g6.xlarge";
/// Secondary ENIs of `INSTANCE_TYPE` (3 incl. the primary).
const ENI_SLOTS: &str = "2";
const RESOURCE: &str = "aliyun/eni";
const TABLE: &str = "vtb-bench";
const KEY_ID: &str = "bench-key";
const KEY_SECRET: &str = "bench-secret-not-a-real-one";
/// Namespaces the pods are spread over.
const TEAMS: usize = 20;

struct Args {
    bin_dir: PathBuf,
    nodes: usize,
    pods: usize,
    eni_pods: usize,
    concurrency: usize,
    settled_seconds: u64,
    timeout_seconds: u64,
}

fn parse_args() -> anyhow::Result<Args> {
    let mut args = Args {
        bin_dir: PathBuf::from("target/release"),
        nodes: 1000,
        pods: 20_000,
        eni_pods: 0,
        concurrency: 16,
        settled_seconds: 20,
        timeout_seconds: 1800,
    };
    let mut eni_pods = None;
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut value = |name: &str| it.next().with_context(|| format!("{name} needs a value"));
        match a.as_str() {
            "--bin-dir" => args.bin_dir = value("--bin-dir")?.into(),
            "--nodes" => args.nodes = value("--nodes")?.parse()?,
            "--pods" => args.pods = value("--pods")?.parse()?,
            "--eni-pods" => eni_pods = Some(value("--eni-pods")?.parse()?),
            "--concurrency" => args.concurrency = value("--concurrency")?.parse()?,
            "--settled-seconds" => args.settled_seconds = value("--settled-seconds")?.parse()?,
            "--timeout-seconds" => args.timeout_seconds = value("--timeout-seconds")?.parse()?,
            other => bail!("unknown argument {other}: --bin-dir DIR --nodes N --pods M [--eni-pods K] [--concurrency C] [--settled-seconds S] [--timeout-seconds T]"),
        }
    }
    // One ENI pod per 10 nodes unless told otherwise.
    args.eni_pods = eni_pods.unwrap_or(args.nodes / 10).min(args.pods);
    if args.nodes == 0 || args.nodes > 16_000 {
        bail!("--nodes must be 1..=16000 (each node takes an address of a /17 vSwitch and a /24 of 10.0.0.0/10)");
    }
    Ok(args)
}

/// A process we started; killed (by its own pid) when dropped.
struct Proc {
    child: Child,
    name: &'static str,
}

impl Proc {
    fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        eprintln!("stopped {}", self.name);
    }
}

/// Start a fake that prints `listening on URL` as its first stdout line.
fn start_fake(
    name: &'static str,
    bin: &Path,
    args: &[&str],
    log: &Path,
) -> anyhow::Result<(Proc, String)> {
    let mut child = Command::new(bin)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(log)?)
        .spawn()
        .with_context(|| format!("cannot start {}", bin.display()))?;
    let stdout = child.stdout.take().context("no stdout")?;
    let proc = Proc { child, name };
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line)?;
    let url = line
        .trim()
        .strip_prefix("listening on ")
        .with_context(|| format!("{name} said {line:?}; log in {}", log.display()))?
        .to_owned();
    Ok((proc, url))
}

fn node_name(i: usize) -> String {
    format!("bench-node-{i}")
}

fn instance_id(i: usize) -> String {
    format!("i-benchnode{i}")
}

fn node_ip(i: usize) -> Ipv4Addr {
    // Zone h: 192.168.0.0/17, zone i: 192.168.128.0/17; from .10 on.
    let base = if i.is_multiple_of(2) {
        0xC0A8_0000u32
    } else {
        0xC0A8_8000
    };
    Ipv4Addr::from(base + 10 + (i / 2) as u32)
}

fn world_yaml(nodes: usize) -> anyhow::Result<String> {
    let instances: Vec<Value> = (0..nodes)
        .map(|i| {
            json!({"id": instance_id(i), "type": INSTANCE_TYPE, "zone": ZONES[i % 2],
                   "vswitch": format!("vsw-{}", ZONES[i % 2]), "privateIp": node_ip(i).to_string()})
        })
        .collect();
    let world = json!({
        "region": REGION,
        "accessKeys": [{"id": KEY_ID, "secret": KEY_SECRET}],
        "vpcs": [{"id": "vpc-bench", "cidr": "192.168.0.0/16",
                  "routeTables": [{"id": TABLE, "quota": nodes + 100, "main": true}]}],
        "vswitches": [
            {"id": format!("vsw-{}", ZONES[0]), "vpc": "vpc-bench", "zone": ZONES[0], "cidr": "192.168.0.0/17"},
            {"id": format!("vsw-{}", ZONES[1]), "vpc": "vpc-bench", "zone": ZONES[1], "cidr": "192.168.128.0/17"}
        ],
        "securityGroups": [{"id": "sg-bench", "vpc": "vpc-bench"}],
        "instances": instances,
        // The bench measures memory, not the cloud's pace.
        "faults": {"routeDelayMs": 50, "attachDelayMs": 200, "detachDelayMs": 100}
    });
    Ok(serde_yaml::to_string(&world)?)
}

/// The controller's config: routes (podCIDRs allocated) and ENI mode on.
fn controller_config(cloud: &str, metrics: u16) -> String {
    format!(
        r#"clusterId: bench
provider:
  kind: alibaba
  region: {REGION}
  endpoint: {cloud}
routes:
  enabled: true
  routeTableIds: [{TABLE}]
  clusterCidr: 10.0.0.0/10
  allocatePodCidrs: true
  nodeCidrMaskSize: 24
  batchPauseMs: 50
eni:
  enabled: true
  resourceName: {RESOURCE}
  subnets: {{{z0}: [vsw-{z0}], {z1}: [vsw-{z1}]}}
  securityGroups: [sg-bench]
controller:
  listen: 127.0.0.1:{metrics}
  leaderElection: {{namespace: kube-system}}
"#,
        z0 = ZONES[0],
        z1 = ZONES[1],
    )
}

fn node_json(i: usize) -> anyhow::Result<Node> {
    let mut t = NodeTemplate::new(&node_name(i), INSTANCE_TYPE, "4", "16Gi");
    t.zone = Some(ZONES[i % 2].into());
    t.provider_id = Some(format!("{REGION}.{}", instance_id(i)));
    t.internal_ip = Some(node_ip(i).to_string());
    let mut v = t.build();
    // What a kubelet adds that nobody here reads.
    v["metadata"]["labels"]["kubernetes.io/os"] = json!("linux");
    v["metadata"]["labels"]["kubernetes.io/arch"] = json!("amd64");
    v["metadata"]["labels"]["node.kubernetes.io/pool"] = json!("general");
    v["metadata"]["annotations"] = json!({
        "node.alpha.kubernetes.io/ttl": "0",
        "volumes.kubernetes.io/controller-managed-attach-detach": "true"
    });
    v["status"]["images"] = json!([
        {"names": ["registry.example.com/base/pause@sha256:0123456789abcdef", "registry.example.com/base/pause:3.9"], "sizeBytes": 321_000},
        {"names": ["envoyproxy/envoy@sha256:fedcba9876543210", "envoyproxy/envoy:v1.29.1"], "sizeBytes": 62_000_000}
    ]);
    Ok(serde_json::from_value(v)?)
}

/// A pod as a Deployment's ReplicaSet makes it: an app container and a
/// sidecar, env, ports, probes, mounts, labels and annotations (~1.5 KB).
fn pod_json(i: usize, eni: bool) -> anyhow::Result<Pod> {
    let app = format!("app-{}", i % 500);
    let hash = format!("{:x}", 0x7d9f_8c6bu64 + (i % 500) as u64);
    let mut limits = json!({"memory": "256Mi"});
    if eni {
        limits[RESOURCE] = json!("1");
    }
    let pod = json!({
        "metadata": {
            "name": format!("{app}-{hash}-{i:06}"),
            "namespace": format!("team-{}", i % TEAMS),
            "labels": {"app": app, "tier": "backend", "version": "v1.4.2", "team": format!("team-{}", i % TEAMS),
                       "pod-template-hash": hash, "bench/eni": if eni { "true" } else { "false" }},
            "annotations": {"prometheus.io/scrape": "true", "prometheus.io/port": "9102",
                            "kubectl.kubernetes.io/restartedAt": "2026-11-30T10:00:00Z"},
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": format!("{app}-{hash}"),
                                 "uid": format!("00000000-0000-4000-8000-{:012}", i % 500), "controller": true,
                                 "blockOwnerDeletion": true}]
        },
        "spec": {
            "serviceAccountName": app,
            "terminationGracePeriodSeconds": 30,
            "containers": [
                {"name": "app", "image": format!("registry.example.com/payments/{app}:v1.4.2"),
                 "ports": [{"containerPort": 8080, "name": "http"}, {"containerPort": 9102, "name": "metrics"}],
                 "env": [{"name": "LOG_LEVEL", "value": "info"}, {"name": "DB_HOST", "value": "db.payments.svc"},
                         {"name": "DB_POOL", "value": "16"}, {"name": "REGION", "value": REGION},
                         {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}],
                 "resources": {"requests": {"cpu": "50m", "memory": "128Mi"}, "limits": limits},
                 "volumeMounts": [{"name": "config", "mountPath": "/etc/app"}],
                 "readinessProbe": {"httpGet": {"path": "/healthz", "port": 8080}, "periodSeconds": 10}},
                {"name": "envoy", "image": "envoyproxy/envoy:v1.29.1",
                 "args": ["--config-path", "/etc/envoy/envoy.yaml", "--log-level", "warn"],
                 "resources": {"requests": {"cpu": "10m", "memory": "32Mi"}}}
            ],
            "volumes": [{"name": "config", "configMap": {"name": format!("{app}-config")}}],
            "tolerations": [{"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300}]
        }
    });
    Ok(serde_json::from_value(pod)?)
}

/// Create `count` objects made by `make(i)` with `concurrency` requests in
/// flight; returns objects per second.
async fn create_all<K, F>(
    api_of: impl Fn(&K) -> Api<K>,
    count: usize,
    concurrency: usize,
    make: F,
) -> anyhow::Result<f64>
where
    K: kube::Resource + Clone + serde::Serialize + serde::de::DeserializeOwned + std::fmt::Debug,
    F: Fn(usize) -> anyhow::Result<K>,
{
    let started = Instant::now();
    let done = Arc::new(AtomicU64::new(0));
    futures::stream::iter(0..count)
        .map(|i| {
            let obj = make(i);
            let api = obj.as_ref().ok().map(&api_of);
            let done = done.clone();
            async move {
                let (obj, api) = (obj?, api.context("no api")?);
                api.create(&PostParams::default(), &obj).await?;
                let n = done.fetch_add(1, Ordering::Relaxed) + 1;
                if n.is_multiple_of(10_000) {
                    eprintln!("  {n} created");
                }
                anyhow::Ok(())
            }
        })
        .buffer_unordered(concurrency)
        .try_collect::<Vec<()>>()
        .await?;
    Ok(count as f64 / started.elapsed().as_secs_f64().max(1e-9))
}

/// `vpc_eni_cloud_api_calls_total` per API from the controller's /metrics
/// (empty when it cannot be read).
async fn cloud_calls(port: u16) -> BTreeMap<String, u64> {
    let text = match reqwest::get(format!("http://127.0.0.1:{port}/metrics")).await {
        Ok(r) => r.text().await.unwrap_or_default(),
        Err(e) => {
            eprintln!("cannot read the controller's metrics: {e}");
            String::new()
        }
    };
    let mut out = BTreeMap::new();
    for line in text
        .lines()
        .filter(|l| l.starts_with("vpc_eni_cloud_api_calls_total{"))
    {
        let api = line
            .split("api=\"")
            .nth(1)
            .and_then(|r| r.split('"').next())
            .unwrap_or_default();
        let n: u64 = line
            .rsplit(' ')
            .next()
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0) as u64;
        *out.entry(api.to_owned()).or_default() += n;
    }
    out
}

/// (VmRSS, VmHWM) of a process, in bytes.
fn rss(pid: u32) -> Option<(u64, u64)> {
    mocks::procfs::memory(pid)
}

/// Nodes with their podCIDR, route condition and ENI capacity.
async fn nodes_ready(nodes: &Api<Node>) -> anyhow::Result<usize> {
    let items = loop {
        match list_nodes(nodes).await {
            // The store moved on past the list's version (410 Expired)
            // between two pages: list again.
            Err(kube::Error::Api(e)) if e.code == 410 => continue,
            other => break other?,
        }
    };
    Ok(items
        .iter()
        .filter(|n| {
            let routed = n
                .status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .and_then(|c| c.iter().find(|c| c.type_ == "NetworkUnavailable"))
                .is_some_and(|c| c.status == "False");
            let capacity = n
                .status
                .as_ref()
                .and_then(|s| s.allocatable.as_ref())
                .and_then(|a| a.get(RESOURCE))
                .is_some_and(|q| q.0 == ENI_SLOTS);
            let cidr = n.spec.as_ref().and_then(|s| s.pod_cidr.as_ref()).is_some();
            routed && capacity && cidr
        })
        .count())
}

async fn list_nodes(nodes: &Api<Node>) -> Result<Vec<Node>, kube::Error> {
    let list = nodes.list(&ListParams::default().limit(1000)).await?;
    let mut items = list.items;
    let mut token = list.metadata.continue_;
    while let Some(t) = token.filter(|t| !t.is_empty()) {
        let page = nodes
            .list(&ListParams::default().limit(1000).continue_token(&t))
            .await?;
        items.extend(page.items);
        token = page.metadata.continue_;
    }
    Ok(items)
}

async fn eni_pods_allocated(pods: &Api<Pod>) -> anyhow::Result<usize> {
    let list = pods
        .list(&ListParams::default().labels("bench/eni=true"))
        .await?;
    Ok(list
        .items
        .iter()
        .filter(|p| {
            p.annotations().contains_key(ALLOCATION_ANNOTATION)
                && p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
        })
        .count())
}

async fn wait_for(
    pid: u32,
    what: &str,
    want: usize,
    deadline: Instant,
    mut check: impl AsyncFnMut() -> anyhow::Result<usize>,
) -> anyhow::Result<()> {
    let mut last = usize::MAX;
    loop {
        let n = check().await?;
        if n != last {
            eprintln!("  {what}: {n}/{want}");
            last = n;
        }
        if n >= want {
            return Ok(());
        }
        if rss(pid).is_none() {
            bail!("{what}: the controller exited (its log is kept)");
        }
        if Instant::now() > deadline {
            bail!("{what}: only {n} of {want} before the timeout");
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = parse_args()?;
    let dir = std::env::temp_dir().join(format!("vpc-eni-bench-scale-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let result = run(&args, &dir).await;
    if result.is_ok() {
        let _ = std::fs::remove_dir_all(&dir);
    } else {
        eprintln!("logs kept in {}", dir.display());
    }
    let out = result?;
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(())
}

async fn run(args: &Args, dir: &Path) -> anyhow::Result<Value> {
    let bin = |name: &str| args.bin_dir.join(name);
    let world = dir.join("world.yaml");
    std::fs::write(&world, world_yaml(args.nodes)?)?;
    let (cloud, cloud_url) = start_fake(
        "fake-alibaba",
        &bin("fake-alibaba"),
        &["--state", world.to_str().context("path")?],
        &dir.join("fake-alibaba.log"),
    )?;
    let kubeconfig = dir.join("kubeconfig");
    let (kube, kube_url) = start_fake(
        "fake-apiserver",
        &bin("fake-apiserver"),
        &[
            "--no-deployments",
            "--history-size",
            "50000",
            "--kubeconfig-out",
            kubeconfig.to_str().context("path")?,
        ],
        &dir.join("fake-apiserver.log"),
    )?;
    eprintln!("fake-alibaba {cloud_url}, fake-apiserver {kube_url}");
    let client = kube::Client::try_from(kube::Config::new(kube_url.parse()?))?;

    eprintln!("creating {} nodes", args.nodes);
    let nodes_api: Api<Node> = Api::all(client.clone());
    let node_rate = create_all(
        |_: &Node| nodes_api.clone(),
        args.nodes,
        args.concurrency,
        node_json,
    )
    .await?;
    let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client.clone());
    for t in 0..TEAMS {
        let ns = serde_json::from_value(json!({"metadata": {"name": format!("team-{t}")}}))?;
        namespaces.create(&PostParams::default(), &ns).await?;
    }
    let plain = args.pods - args.eni_pods;
    eprintln!("creating {plain} pods");
    let pod_api =
        |p: &Pod| Api::<Pod>::namespaced(client.clone(), &p.namespace().unwrap_or_default());
    let pod_rate = create_all(pod_api, plain, args.concurrency, |i| pod_json(i, false)).await?;
    eprintln!("  {pod_rate:.0} pods/s");

    // A free port for the controller's /metrics (its cloud call counters).
    let metrics_port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let config = dir.join("config.yaml");
    std::fs::write(&config, controller_config(&cloud_url, metrics_port))?;
    let started = Instant::now();
    let ctl = Proc {
        child: Command::new(bin("vpc-eni-controller"))
            .args([
                "run",
                "--config",
                config.to_str().context("path")?,
                "--kubeconfig",
                kubeconfig.to_str().context("path")?,
            ])
            .env("ALIBABA_CLOUD_ACCESS_KEY_ID", KEY_ID)
            .env("ALIBABA_CLOUD_ACCESS_KEY_SECRET", KEY_SECRET)
            .env("RUST_LOG", "warn")
            .env("POD_NAMESPACE", "kube-system")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("controller.log"))?)
            .spawn()
            .context("cannot start vpc-eni-controller")?,
        name: "vpc-eni-controller",
    };
    let pid = ctl.pid();
    let samples = Arc::new(parking_lot::Mutex::new(Vec::<(f64, u64)>::new()));
    let sampler = {
        let samples = samples.clone();
        tokio::spawn(async move {
            loop {
                if let Some((now, _)) = rss(pid) {
                    samples.lock().push((started.elapsed().as_secs_f64(), now));
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        })
    };
    let deadline = started + Duration::from_secs(args.timeout_seconds);
    wait_for(
        pid,
        "nodes routed with ENI capacity",
        args.nodes,
        deadline,
        async || nodes_ready(&nodes_api).await,
    )
    .await?;
    let nodes_settled = started.elapsed().as_secs_f64();
    eprintln!("creating {} ENI pods", args.eni_pods);
    let eni_rate = create_all(pod_api, args.eni_pods, args.concurrency, |i| {
        pod_json(plain + i, true)
    })
    .await?;
    let all_pods: Api<Pod> = Api::all(client.clone());
    wait_for(
        pid,
        "ENI pods allocated",
        args.eni_pods,
        deadline,
        async || eni_pods_allocated(&all_pods).await,
    )
    .await?;
    let settled = started.elapsed().as_secs_f64();
    eprintln!(
        "settled in {settled:.1}s; running {}s more",
        args.settled_seconds
    );
    let calls_before = cloud_calls(metrics_port).await;
    tokio::time::sleep(Duration::from_secs(args.settled_seconds)).await;
    let calls_after = cloud_calls(metrics_port).await;
    let upkeep: BTreeMap<String, u64> = calls_after
        .iter()
        .map(|(api, n)| (api.clone(), n - calls_before.get(api).copied().unwrap_or(0)))
        .filter(|(_, n)| *n > 0)
        .collect();
    let upkeep_total: u64 = upkeep.values().sum();
    sampler.abort();
    let (rss_now, hwm) = rss(pid).context("the controller is gone")?;
    let fake_rss = rss(kube.pid()).map(|r| r.1).unwrap_or(0);
    drop(ctl);
    drop(kube);
    drop(cloud);
    let samples = samples.lock().clone();
    let at = |t: f64| {
        samples
            .iter()
            .filter(|(s, _)| *s <= t)
            .map(|(_, r)| *r)
            .max()
            .unwrap_or(0)
    };
    Ok(json!({
        "nodes": args.nodes,
        "pods": args.pods,
        "eniPods": args.eni_pods,
        "nodeCreatesPerSecond": node_rate.round(),
        "podCreatesPerSecond": pod_rate.round(),
        "eniPodCreatesPerSecond": eni_rate.round(),
        "nodesSettledSeconds": nodes_settled,
        "settledSeconds": settled,
        "controller": {
            "peakRssBytes": hwm,
            "peakRssMiB": (hwm as f64 / 1048576.0 * 10.0).round() / 10.0,
            "peakRssBeforeEniPodsBytes": at(nodes_settled),
            "rssSettledBytes": rss_now,
        },
        "fakeApiserverPeakRssBytes": fake_rss,
        // Cloud calls while settled: what keeping N nodes right costs.
        "settledCloudCalls": {
            "seconds": args.settled_seconds,
            "byApi": upkeep,
            "perSecond": upkeep_total as f64 / args.settled_seconds.max(1) as f64,
        },
    }))
}
