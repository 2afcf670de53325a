//! moto, the EC2 emulator, as a harness's fake cloud (feature `aws`). The
//! launcher (find `moto_server`, start it on a free port, seed a VPC) is
//! `mocks::moto`; here a replica's client of it is built from its config
//! the way `run::build_cloud` builds one, with moto's static keys.

use super::world::FakeCloud;
use super::Harness;
use crate::config::Config;
use async_trait::async_trait;
pub use mocks::moto::{seed, Moto, SeededVpc, INSTALL_HINT};
use providers::aws::AwsCloud;
use providers::Cloud;
use std::sync::Arc;

#[async_trait]
impl FakeCloud for Moto {
    async fn client_for(&self, config: &Config) -> anyhow::Result<Arc<dyn Cloud>> {
        let mut c = self.config(&config.cluster_id);
        c.route_table_ids = config.routes.route_table_ids.clone();
        for (api, rate) in &config.provider.rate_limits {
            c.call_policy.per_api_per_minute.insert(api.clone(), *rate);
        }
        let cloud = AwsCloud::connect(c)
            .await
            .map_err(|e| anyhow::anyhow!("aws client on moto: {e}"))?;
        Ok(Arc::new(cloud))
    }

    /// moto stops when dropped.
    async fn shutdown(self) {}
}

impl Harness<Moto> {
    /// Start moto and the fake apiserver; `Ok(None)` when moto is missing
    /// and `SKIP_MOTO_TESTS=1` (the test then returns early).
    pub async fn start_moto(
        kube: mocks::kubeapi::Options,
        identity_prefix: &str,
    ) -> anyhow::Result<Option<Harness<Moto>>> {
        let Some(moto) = Moto::start() else {
            return Ok(None);
        };
        Ok(Some(Harness::start(moto, kube, identity_prefix).await?))
    }

    pub fn moto(&self) -> &Moto {
        &self.cloud
    }
}
