//! The one context every reconciler runs with: the kube client, the cloud,
//! where Events go, the metrics, the config and the clock. Built in one
//! place ([`Context::new`], called when a replica starts); what a single
//! reconciler keeps between passes lives in that reconciler, not here.

use crate::config::Config;
use crate::events::Events;
use crate::metrics::Metrics;
use ipam::ids::ClusterId;
use providers::Cloud;
use std::sync::Arc;

/// Shared by every reconciler of one replica; cheap to clone.
#[derive(Clone)]
pub struct Context {
    pub client: kube::Client,
    pub cloud: Arc<dyn Cloud>,
    pub events: Events,
    pub metrics: Arc<Metrics>,
    pub config: Arc<Config>,
    pub clock: Clock,
    cluster: ClusterId,
}

impl Context {
    pub fn new(
        config: Config,
        client: kube::Client,
        cloud: Arc<dyn Cloud>,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            events: Events::new(client.clone()),
            cluster: config.cluster(),
            config: Arc::new(config),
            client,
            cloud,
            metrics,
            clock: Clock,
        }
    }

    /// The cluster id: the mark on everything this controller owns.
    pub fn cluster(&self) -> &ClusterId {
        &self.cluster
    }
}

/// Time as the reconcilers read it: monotonic instants from tokio's clock
/// (so tests can pause and advance it) and wall time for ages the cloud
/// reports.
#[derive(Clone, Copy, Debug, Default)]
pub struct Clock;

impl Clock {
    /// Monotonic now, for deadlines, cache ages and backoff.
    pub fn now(&self) -> tokio::time::Instant {
        tokio::time::Instant::now()
    }

    /// Wall-clock now, to compare with timestamps from the cloud or kube.
    pub fn wall(&self) -> chrono::DateTime<chrono::Utc> {
        chrono::Utc::now()
    }
}
