//! The fake cloud a harness runs on, and a replica's client of it. The
//! Alibaba one is the in-memory world behind its signature-checking OpenAPI
//! front, reached over HTTP like the real cloud; the AWS one is moto
//! ([`super::moto`]). Each replica gets its own client, built from its
//! config the way `run::build_cloud` builds it, with the fake's keys instead
//! of the credential chain.

use super::FakeKube;
use crate::config::Config;
use anyhow::Context as _;
use async_trait::async_trait;
use ipam::ids::{InstanceId, InstanceType, SubnetId, ZoneId};
use ipnet::Ipv4Net;
use mocks::alibaba::{FakeAlibaba, FakeAlibabaHandle};
use mocks::cloud::{AccessKey, InstanceSpec, World};
use mocks::kubeapi::nodes::NodeTemplate;
use providers::alibaba::credentials::CredentialSource;
use providers::alibaba::{AlibabaCloud, AlibabaConfig};
use providers::Cloud;
use std::net::Ipv4Addr;
use std::sync::Arc;

/// A fake cloud a harness can start replicas on.
#[async_trait]
pub trait FakeCloud: Send + Sync + Sized {
    /// A new client of this cloud for a replica started with `config`.
    async fn client_for(&self, config: &Config) -> anyhow::Result<Arc<dyn Cloud>>;

    /// Stop the fake.
    async fn shutdown(self);
}

/// The in-memory cloud behind the Alibaba OpenAPI front on 127.0.0.1.
pub struct AlibabaWorld {
    pub front: FakeAlibabaHandle,
    /// The key replicas sign with: the world's first.
    key: AccessKey,
}

/// An instance to add to the world, and its Node.
#[derive(Clone, Debug)]
pub struct NodeSpec<'a> {
    pub name: &'a str,
    /// A real ECS type from `mocks::cloud::instance_types`.
    pub instance_type: &'a str,
    pub zone: &'a str,
    /// The vSwitch of the instance's primary ENI.
    pub vswitch: SubnetId,
    pub ip: Ipv4Addr,
    pub pod_cidr: Option<Ipv4Net>,
}

impl AlibabaWorld {
    /// Serve `world` on a free port of 127.0.0.1. The world needs an access
    /// key for the replicas.
    pub async fn start(world: World) -> anyhow::Result<AlibabaWorld> {
        let key = world
            .access_keys()
            .into_iter()
            .next()
            .context("the world has no access key for the controller")?;
        let front = FakeAlibaba::start(world, ([127, 0, 0, 1], 0).into())
            .await
            .context("fake alibaba")?;
        Ok(AlibabaWorld { front, key })
    }

    /// [`AlibabaWorld::start`] on a world given as YAML (`mocks/FAKE_ALIBABA.md`).
    pub async fn from_yaml(yaml: &str) -> anyhow::Result<AlibabaWorld> {
        let world = World::from_yaml(yaml).map_err(|e| anyhow::anyhow!("world spec: {e}"))?;
        Self::start(world).await
    }

    pub fn world(&self) -> &World {
        self.front.world()
    }

    pub fn url(&self) -> &str {
        self.front.url()
    }

    /// An instance in the world, then its Node registered as the kubelet and
    /// the cloud provider would (providerID `<region>.<instance>`, InternalIP,
    /// zone, type, capacity of the type). The instance id is
    /// [`instance_for`] the node's name.
    pub async fn add_node(
        &self,
        kube: &FakeKube,
        node: &NodeSpec<'_>,
    ) -> anyhow::Result<InstanceId> {
        let mut t = node_template(node.name, node.instance_type, node.zone)?;
        let id = InstanceId::new(instance_for(node.name));
        self.world()
            .add_instance(&InstanceSpec {
                id: id.clone(),
                instance_type: InstanceType::new(node.instance_type),
                zone: ZoneId::new(node.zone),
                vswitch: node.vswitch.clone(),
                private_ip: node.ip,
                security_groups: vec![],
            })
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        t.provider_id = Some(format!("{}.{id}", self.world().region()));
        t.internal_ip = Some(node.ip.to_string());
        t.pod_cidr = node.pod_cidr.map(|c| c.to_string());
        kube.create_node(&t).await?;
        Ok(id)
    }
}

#[async_trait]
impl FakeCloud for AlibabaWorld {
    async fn client_for(&self, config: &Config) -> anyhow::Result<Arc<dyn Cloud>> {
        let region = match &config.provider.region {
            Some(r) => r.clone(),
            None => self.world().region().to_string(),
        };
        let mut c = AlibabaConfig::new(region);
        c.endpoint = Some(self.url().to_owned());
        c.credentials =
            CredentialSource::explicit(self.key.id.clone(), self.key.secret.clone(), None);
        for (api, rate) in &config.provider.rate_limits {
            c.call_policy.per_api_per_minute.insert(api.clone(), *rate);
        }
        let cloud = AlibabaCloud::new(c).map_err(|e| anyhow::anyhow!("alibaba client: {e}"))?;
        Ok(Arc::new(cloud))
    }

    async fn shutdown(self) {
        self.front.shutdown().await;
    }
}

/// The instance id behind a node of the fake cloud: real ids are `i-` and
/// alphanumerics.
pub fn instance_for(node: &str) -> String {
    format!(
        "i-{}",
        node.replace(|c: char| !c.is_ascii_alphanumeric(), "")
    )
}

/// A Node of `instance_type` in `zone`, with the type's CPU and memory as
/// capacity; no providerID or address yet.
pub fn node_template(name: &str, instance_type: &str, zone: &str) -> anyhow::Result<NodeTemplate> {
    let info = mocks::cloud::instance_types::lookup(instance_type)
        .with_context(|| format!("unknown instance type {instance_type}"))?;
    let mut t = NodeTemplate::new(
        name,
        instance_type,
        &info.vcpus.to_string(),
        &format!("{}Mi", info.memory_mib),
    );
    t.zone = Some(zone.to_owned());
    Ok(t)
}
