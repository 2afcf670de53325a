//! The fake kube-apiserver a harness runs (list/watch, patches, Events,
//! Leases, with the scheduler, the kubelet stand-in and the Deployment
//! controller in-process) and a kube client of it.

use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, PostParams};
use mocks::kubeapi::nodes::NodeTemplate;
use mocks::kubeapi::{FakeApiServer, KubeletConfig, Options};

/// The fake apiserver and a client of it.
pub struct FakeKube {
    pub api: FakeApiServer,
    pub client: kube::Client,
}

impl FakeKube {
    pub async fn start(options: Options) -> anyhow::Result<FakeKube> {
        let api = FakeApiServer::start(options)
            .await
            .map_err(|e| anyhow::anyhow!("fake apiserver: {e}"))?;
        let client = kube::Client::try_from(api.client_config())?;
        Ok(FakeKube { api, client })
    }

    /// Default options, with a kubelet that starts a pod asking for
    /// `resource` only once it has its allocation annotation.
    pub fn options_for(resource: &str) -> Options {
        Options {
            kubelet_config: KubeletConfig {
                allocation_resources: vec![resource.to_owned()],
                ..KubeletConfig::default()
            },
            ..Options::default()
        }
    }

    pub fn nodes(&self) -> Api<Node> {
        Api::all(self.client.clone())
    }

    /// Register a Node as the kubelet would.
    pub async fn create_node(&self, template: &NodeTemplate) -> anyhow::Result<Node> {
        let node: Node = serde_json::from_value(template.build())?;
        Ok(self.nodes().create(&PostParams::default(), &node).await?)
    }

    pub async fn shutdown(self) {
        self.api.shutdown().await;
    }
}
