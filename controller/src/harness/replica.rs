//! Controller replicas for `simulate` and the tests. [`start`] is the one
//! place outside `run` that builds a [`Deps`]: a change to what a replica
//! runs with is made here and in `run`, nowhere else.

use crate::config::Config;
use crate::eni::StepHook;
use crate::metrics::Metrics;
use crate::run::{self, Deps, Running};
use crate::server::Health;
use providers::Cloud;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// What a replica is started with.
pub struct ReplicaSpec {
    pub config: Config,
    pub client: kube::Client,
    /// Its own client of the cloud, as a new process would make.
    pub cloud: Arc<dyn Cloud>,
    /// Its identity in the Lease.
    pub identity: String,
    /// Called at each step of an ENI allocation or release (crash injection).
    pub eni_hook: Option<Arc<dyn StepHook>>,
}

/// A started replica: what tests and `simulate` look at.
#[derive(Clone)]
pub struct Replica {
    pub identity: String,
    /// Cancelled = the replica is stopped.
    pub token: CancellationToken,
    pub running: Running,
    /// Its cloud client (call counts per API in `cloud.stats()`).
    pub cloud: Arc<dyn Cloud>,
    pub metrics: Arc<Metrics>,
    pub health: Health,
}

impl Replica {
    pub fn stop(&self) {
        self.token.cancel();
    }

    pub fn is_stopped(&self) -> bool {
        self.token.is_cancelled()
    }

    /// Whether it leads right now.
    pub fn leading(&self) -> bool {
        *self.running.leading.borrow()
    }
}

/// Start a replica through [`run::start`], stopped by `token`.
pub async fn start(spec: ReplicaSpec, token: CancellationToken) -> anyhow::Result<Replica> {
    let metrics = Metrics::new();
    metrics.set_cloud(spec.cloud.name(), spec.cloud.stats());
    let health = Health::default();
    let deps = Deps {
        config: spec.config,
        client: spec.client,
        cloud: spec.cloud.clone(),
        metrics: metrics.clone(),
        health: health.clone(),
        identity: spec.identity.clone(),
        eni_hook: spec.eni_hook,
    };
    let running = run::start(deps, token.clone()).await?;
    Ok(Replica {
        identity: spec.identity,
        token,
        running,
        cloud: spec.cloud,
        metrics,
        health,
    })
}
