//! Shared-ENI mode end to end on AWS: the real controller against the fake
//! kube-apiserver (scheduler, kubelet that waits for the allocation on
//! shared nodes) and moto, a third-party EC2 emulator on 127.0.0.1. What a
//! user sees: pods running on secondary IPs of their node's shared ENI (as
//! EC2 lists them), the pool refilled and released, IPs kept across a
//! restart, and nothing leaked or given twice after a crash at any step.

use aws_sdk_ec2::types::{InstanceType as Ec2InstanceType, NetworkInterface};
use controller::config::Config;
use controller::eni::{CrashAt, PodAllocation, Step, ALLOCATION_ANNOTATION};
use controller::harness::moto::Moto;
use controller::harness::{FakeKube, Harness};
use ipam::eni::tag;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, DeleteParams, PostParams};
use kube::ResourceExt;
use mocks::kubeapi::nodes::NodeTemplate;
use serde_json::json;
use std::collections::BTreeSet;
use std::future::Future;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

const CLUSTER: &str = "sharede2e";
const RESOURCE: &str = "vpc.amazonaws.com/eni";
const ZONE: &str = "us-east-1a";

async fn eventually<T, F, Fut>(what: &str, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        match probe().await {
            Ok(v) => return v,
            Err(state) => {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "gave up waiting for {what}; last state: {state}"
                );
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

struct Env {
    harness: Harness<Moto>,
    ec2: aws_sdk_ec2::Client,
    client: kube::Client,
    node_subnet: String,
    eni_subnet: String,
    security_group: String,
    image: String,
    /// `sharedEni.minPoolSize` / `maxPoolSize`.
    pool: (u32, u32),
}

impl Env {
    async fn start(pool: (u32, u32)) -> Option<Env> {
        let mut kube = FakeKube::options_for(RESOURCE);
        kube.resync = Duration::from_millis(500);
        let harness = Harness::start_moto(kube, "shared-aws-e2e").await.unwrap()?;
        let ec2 = harness.moto().sdk();
        let vpc = mocks::moto::vpc(&ec2).await;
        let node_subnet = mocks::moto::subnet(&ec2, &vpc, "10.0.0.0/24", ZONE).await;
        let eni_subnet = mocks::moto::subnet(&ec2, &vpc, "10.0.1.0/24", ZONE).await;
        let security_group = mocks::moto::pods_security_group(&ec2, &vpc).await;
        let image = mocks::moto::any_image(&ec2).await;
        let client = harness.client().clone();
        Some(Env {
            harness,
            ec2,
            client,
            node_subnet,
            eni_subnet,
            security_group,
            image,
            pool,
        })
    }

    fn config(&self) -> Config {
        Config::parse(&format!(
            r#"
clusterId: {CLUSTER}
provider: {{kind: aws, region: us-east-1, endpoint: "{endpoint}"}}
eni:
  enabled: true
  subnets: {{{ZONE}: [{subnet}]}}
  securityGroups: [{sg}]
  pollIntervalMs: 100
  gcIntervalSeconds: 1
  gcGraceSeconds: 1
sharedEni:
  enabled: true
  maxEnis: 1
  minPoolSize: {min}
  maxPoolSize: {max}
  ipCooldownSeconds: 1
  excessReleaseDelaySeconds: 1
  poolSyncSeconds: 1
controller: {{listen: "127.0.0.1:0", leaderElection: {{enabled: false}}}}
"#,
            endpoint = self.harness.moto().endpoint,
            subnet = self.eni_subnet,
            sg = self.security_group,
            min = self.pool.0,
            max = self.pool.1,
        ))
        .unwrap()
    }

    async fn start_replica(
        &mut self,
        token: CancellationToken,
        hook: Option<std::sync::Arc<CrashAt>>,
    ) {
        let config = self.config();
        self.harness
            .start_replica_with(config, token, hook.map(|h| h as _))
            .await
            .unwrap();
    }

    /// An m5.large instance (3 ENIs x 10 IPv4) and its Node.
    async fn add_node(&self, name: &str) -> String {
        let out = self
            .ec2
            .run_instances()
            .image_id(&self.image)
            .instance_type(Ec2InstanceType::M5Large)
            .subnet_id(&self.node_subnet)
            .min_count(1)
            .max_count(1)
            .send()
            .await
            .unwrap();
        let instance = out.instances()[0].instance_id().unwrap().to_owned();
        let mut t = NodeTemplate::new(name, "m5.large", "2", "8Gi");
        t.provider_id = Some(format!("aws:///{ZONE}/{instance}"));
        t.zone = Some(ZONE.into());
        let node: Node = serde_json::from_value(t.build()).unwrap();
        Api::<Node>::all(self.client.clone())
            .create(&PostParams::default(), &node)
            .await
            .unwrap();
        instance
    }

    fn pods(&self) -> Api<Pod> {
        Api::namespaced(self.client.clone(), "default")
    }

    async fn create_pod(&self, name: &str, node: &str) {
        let pod: Pod = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"nodeSelector": {"kubernetes.io/hostname": node},
                "containers": [{"name": "app", "image": "nginx"}]},
        }))
        .unwrap();
        self.pods()
            .create(&PostParams::default(), &pod)
            .await
            .unwrap();
    }

    async fn delete_pod(&self, name: &str) {
        self.pods()
            .delete(name, &DeleteParams::default())
            .await
            .unwrap();
        eventually(&format!("{name} gone"), || async {
            match self.pods().get_opt(name).await.unwrap() {
                None => Ok(()),
                Some(_) => Err("still there".to_owned()),
            }
        })
        .await;
    }

    /// The pod's shared allocation once it runs with it.
    async fn running(&self, name: &str) -> PodAllocation {
        eventually(&format!("{name} running on a shared IP"), || async {
            let pod = self.pods().get_opt(name).await.unwrap().ok_or("no pod")?;
            let a = pod
                .annotations()
                .get(ALLOCATION_ANNOTATION)
                .and_then(|a| PodAllocation::parse(a).ok())
                .ok_or("no allocation")?;
            let ip = pod.status.as_ref().and_then(|s| s.pod_ip.clone());
            if a.is_shared() && ip.as_deref() == Some(a.first.ip.as_str()) {
                Ok(a)
            } else {
                Err(format!("{a:?}, podIP {ip:?}"))
            }
        })
        .await
    }

    /// Shared ENIs of this cluster as EC2 lists them.
    async fn shared_enis(&self) -> Vec<NetworkInterface> {
        self.ec2
            .describe_network_interfaces()
            .send()
            .await
            .unwrap()
            .network_interfaces()
            .iter()
            .filter(|n| {
                let has = |k: &str, v: &str| {
                    n.tag_set()
                        .iter()
                        .any(|t| t.key() == Some(k) && t.value() == Some(v))
                };
                has(tag::CLUSTER, CLUSTER) && has(tag::MODE, tag::MODE_SHARED)
            })
            .cloned()
            .collect()
    }

    /// Secondary IPs of one ENI (primary excluded).
    async fn secondary_ips(&self, eni: &str) -> BTreeSet<String> {
        self.shared_enis()
            .await
            .iter()
            .filter(|n| n.network_interface_id() == Some(eni))
            .flat_map(|n| n.private_ip_addresses())
            .filter(|a| a.primary() != Some(true))
            .filter_map(|a| a.private_ip_address().map(str::to_owned))
            .collect()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_get_secondary_ips_of_a_shared_eni_and_the_pool_refills_then_releases() {
    let Some(mut env) = Env::start((2, 3)).await else {
        return;
    };
    let instance = env.add_node("m5-a").await;
    env.start_replica(CancellationToken::new(), None).await;
    for i in 0..5 {
        env.create_pod(&format!("web-{i}"), "m5-a").await;
    }
    let mut ips = BTreeSet::new();
    let mut eni = String::new();
    for i in 0..5 {
        let a = env.running(&format!("web-{i}")).await;
        assert!(ips.insert(a.first.ip.clone()), "{} twice", a.first.ip);
        eni = a.first.eni_id.clone();
    }
    let enis = env.shared_enis().await;
    assert_eq!(enis.len(), 1, "maxEnis 1: {enis:?}");
    assert_eq!(
        enis[0].attachment().and_then(|a| a.instance_id()),
        Some(instance.as_str())
    );
    // Every pod's IP is a secondary IP of the ENI in EC2, and the pool kept
    // at least minPoolSize free beside them (refilled after the pods took
    // the first IPs).
    let on_eni = env.secondary_ips(&eni).await;
    assert!(ips.is_subset(&on_eni), "{ips:?} not all on {on_eni:?}");
    eventually("the pool refilled to minPoolSize", || async {
        let n = env.secondary_ips(&eni).await.len();
        if n >= 5 + 2 {
            Ok(())
        } else {
            Err(format!("{n} IPs"))
        }
    })
    .await;
    // Four pods go: after the cool-down and release delay the ENI keeps one
    // pod's IP and at most maxPoolSize free ones.
    for i in 0..4 {
        env.delete_pod(&format!("web-{i}")).await;
    }
    eventually("the excess unassigned", || async {
        let n = env.secondary_ips(&eni).await.len();
        if n <= 1 + 3 {
            Ok(())
        } else {
            Err(format!("{n} IPs"))
        }
    })
    .await;
    // The last pod goes: the ENI stays, as minPoolSize needs two free IPs
    // and it holds them (within maxPoolSize once its IP has cooled).
    env.delete_pod("web-4").await;
    eventually("the pool within its watermarks with no pods", || async {
        let enis = env.shared_enis().await;
        let n = env.secondary_ips(&eni).await.len();
        if enis.len() == 1 && (2..=3).contains(&n) {
            Ok(())
        } else {
            Err(format!("{} shared ENIs, {n} IPs", enis.len()))
        }
    })
    .await;
    env.harness.shutdown().await;
}

/// Kill the controller right after `step`, start a new one, and check that
/// the pods end on distinct IPs of one shared ENI, or (release steps) that
/// nothing is left once the pods are gone.
async fn crash_at(step: Step) {
    let releasing = matches!(
        step,
        Step::IpsUnassigned | Step::DetachRequested | Step::EniDeleted
    );
    let pool = if releasing { (0, 1) } else { (2, 3) };
    let Some(mut env) = Env::start(pool).await else {
        return;
    };
    env.add_node("m5-a").await;
    let token = CancellationToken::new();
    let crash = CrashAt::new(step, token.clone());
    env.start_replica(token, Some(crash.clone())).await;
    for i in 0..4 {
        env.create_pod(&format!("p-{i}"), "m5-a").await;
    }
    if releasing {
        for i in 0..4 {
            env.running(&format!("p-{i}")).await;
        }
        let keep = usize::from(step == Step::IpsUnassigned);
        for i in 0..4 - keep {
            env.delete_pod(&format!("p-{i}")).await;
        }
    }
    eventually("the injected crash", || async {
        if crash.fired() {
            Ok(())
        } else {
            Err(format!("{step:?} not reached"))
        }
    })
    .await;
    env.start_replica(CancellationToken::new(), None).await;
    if releasing {
        if env.pods().get_opt("p-3").await.unwrap().is_some() {
            env.delete_pod("p-3").await;
        }
        eventually("every shared ENI released", || async {
            match env.shared_enis().await.len() {
                0 => Ok(()),
                n => Err(format!("{n} shared ENIs")),
            }
        })
        .await;
    } else {
        let mut ips = BTreeSet::new();
        for i in 0..4 {
            let a = env.running(&format!("p-{i}")).await;
            assert!(ips.insert(a.first.ip.clone()), "{} given twice", a.first.ip);
        }
        eventually("one shared ENI holding every pod's IP", || async {
            let enis = env.shared_enis().await;
            let [e] = enis.as_slice() else {
                return Err(format!("{} shared ENIs", enis.len()));
            };
            let on: BTreeSet<String> = e
                .private_ip_addresses()
                .iter()
                .filter_map(|a| a.private_ip_address().map(str::to_owned))
                .collect();
            if ips.is_subset(&on) {
                Ok(())
            } else {
                Err(format!("{ips:?} vs {on:?}"))
            }
        })
        .await;
    }
    env.harness.shutdown().await;
}

macro_rules! crash_tests {
    ($($name:ident: $step:expr;)*) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            crash_at($step).await;
        }
    )*};
}

crash_tests! {
    crash_after_shared_eni_created_on_ec2: Step::EniCreated;
    crash_after_shared_attach_on_ec2: Step::EniInUse;
    crash_after_ips_assigned_on_ec2: Step::IpsAssigned;
    crash_after_shared_ip_annotated_on_ec2: Step::Annotated;
    crash_after_ips_unassigned_on_ec2: Step::IpsUnassigned;
    crash_after_shared_detach_on_ec2: Step::DetachRequested;
    crash_after_shared_eni_deleted_on_ec2: Step::EniDeleted;
}
