//! One harness for `simulate` and every end-to-end test (feature
//! `simulate`): the real controller, started the way `run` starts it,
//! against in-process fakes.
//!
//! - [`world`]: the fake cloud, Alibaba's in-memory world behind its OpenAPI
//!   front, and how a replica gets its own client of a fake cloud;
//! - [`apiserver`]: the fake kube-apiserver (scheduler, kubelet stand-in,
//!   Deployments) and a client of it;
//! - [`replica`]: controller replicas; [`replica::start`] is the one place
//!   outside `run` that builds a [`crate::run::Deps`];
//! - [`crash`]: replicas killed right after a chosen ENI step, and the Lease
//!   as a kill or a restart leaves it;
//! - [`moto`] (feature `aws`): moto, the EC2 emulator, as a fake cloud.
//!
//! [`Harness`] ties them together: one fake cloud, one fake apiserver and the
//! replicas started on them.

pub mod apiserver;
pub mod crash;
#[cfg(feature = "aws")]
pub mod moto;
pub mod replica;
pub mod world;

pub use apiserver::FakeKube;
pub use replica::Replica;
pub use world::{AlibabaWorld, FakeCloud};

use crate::config::Config;
use crate::eni::StepHook;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// A fake cloud, the fake kube-apiserver and the controller replicas started
/// on them.
pub struct Harness<C: FakeCloud> {
    pub cloud: C,
    pub kube: FakeKube,
    /// Every replica started, oldest first, stopped ones included.
    pub replicas: Vec<Replica>,
    /// Replica `n` (from 1) is `<identity_prefix>-<n>` in the Lease.
    identity_prefix: String,
    /// Where replicas run: their own runtime (as their own process would
    /// have) when set, else the caller's.
    own_runtime: Option<OwnRuntime>,
}

/// A tokio runtime of its own for the replicas, so the fakes' work (a
/// scheduler pass over every pod, a listing of the whole world) never
/// holds up a replica's tasks on a shared worker thread, as it would not in
/// a real cluster, where the controller is a process of its own. Shut down
/// in the background when dropped (a runtime may not be dropped inside
/// another one).
struct OwnRuntime(Option<tokio::runtime::Runtime>);

impl Drop for OwnRuntime {
    fn drop(&mut self) {
        if let Some(rt) = self.0.take() {
            rt.shutdown_background();
        }
    }
}

impl<C: FakeCloud> Harness<C> {
    /// Start the fake apiserver beside `cloud`. Replicas are named
    /// `<identity_prefix>-1`, `-2`, ... in the Lease.
    pub async fn start(
        cloud: C,
        kube: mocks::kubeapi::Options,
        identity_prefix: &str,
    ) -> anyhow::Result<Harness<C>> {
        crate::run::install_crypto_provider();
        init_test_logs();
        let kube = FakeKube::start(kube).await?;
        Ok(Harness {
            cloud,
            kube,
            replicas: Vec::new(),
            identity_prefix: identity_prefix.to_owned(),
            own_runtime: None,
        })
    }

    /// Run the replicas started from now on on a runtime of their own
    /// (`worker_threads` as a process on this machine gets by default), with
    /// their own client of the fake apiserver. `simulate` does, so its
    /// latency figures are the controller's and not the fakes'.
    pub fn with_own_runtime(mut self) -> anyhow::Result<Self> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .thread_name("controller")
            .build()?;
        self.own_runtime = Some(OwnRuntime(Some(rt)));
        Ok(self)
    }

    pub fn client(&self) -> &kube::Client {
        &self.kube.client
    }

    /// Start a replica with `config` that runs until [`Harness::stop_replicas`]
    /// or its [`Replica::stop`].
    pub async fn start_replica(&mut self, config: Config) -> anyhow::Result<Replica> {
        self.start_replica_with(config, CancellationToken::new(), None)
            .await
    }

    /// Start a replica with `config` that stops when `token` is cancelled,
    /// with an optional ENI step hook. It gets its own client of the fake
    /// cloud, as a new process would.
    pub async fn start_replica_with(
        &mut self,
        config: Config,
        token: CancellationToken,
        eni_hook: Option<Arc<dyn StepHook>>,
    ) -> anyhow::Result<Replica> {
        let cloud = self.cloud.client_for(&config).await?;
        let identity = format!("{}-{}", self.identity_prefix, self.replicas.len() + 1);
        let spec = replica::ReplicaSpec {
            config,
            client: self.kube.client.clone(),
            cloud,
            identity,
            eni_hook,
        };
        let replica = match self.own_runtime.as_ref().and_then(|r| r.0.as_ref()) {
            None => replica::start(spec, token).await?,
            Some(rt) => {
                // The client's connection tasks run where it is made: there.
                let kube_config = self.kube.api.client_config();
                rt.spawn(async move {
                    let client = kube::Client::try_from(kube_config)?;
                    replica::start(replica::ReplicaSpec { client, ..spec }, token).await
                })
                .await??
            }
        };
        self.replicas.push(replica.clone());
        Ok(replica)
    }

    /// Replicas not stopped, oldest first.
    pub fn live_replicas(&self) -> impl Iterator<Item = &Replica> {
        self.replicas.iter().filter(|r| !r.is_stopped())
    }

    /// Stop every replica (their reconcilers end, a leader hands its Lease
    /// back).
    pub fn stop_replicas(&self) {
        for r in &self.replicas {
            r.stop();
        }
    }

    /// Stop the replicas, then the fakes.
    pub async fn shutdown(self) {
        self.stop_replicas();
        self.cloud.shutdown().await;
        self.kube.shutdown().await;
    }
}

/// `RUST_LOG=controller=debug cargo test ...` shows the controller's logs in
/// tests; a subscriber already set (as `simulate` sets one) stays.
fn init_test_logs() {
    if std::env::var_os("RUST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
    }
}
