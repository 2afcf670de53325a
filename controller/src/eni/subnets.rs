//! The configured subnets (vSwitches) as the cloud last reported them, for
//! choosing where a new ENI goes: one DescribeVSwitches per zone per
//! [`CACHE_TTL`] instead of one per pod, a local count of addresses taken
//! since, and a cool-down for subnets the cloud said are exhausted. The
//! choice itself is `ipam::subnet::choose_subnet`.

use super::error::{Phase, PodError};
use crate::metrics::Metrics;
use ipam::forecast::{Sample, Window};
use ipam::ids::{SubnetId, ZoneId};
use ipam::subnet::{choose_subnet, zone_free_ips, SubnetView};
use providers::model::Subnet;
use providers::{Cloud, CloudError, ErrorKind};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use tokio::time::{Duration, Instant};

const CACHE_TTL: Duration = Duration::from_secs(30);

/// How far back the exhaustion forecast looks.
const FORECAST_WINDOW: Duration = Duration::from_secs(3600);

#[derive(Default)]
struct Cached {
    subnets: HashMap<SubnetId, Subnet>,
    /// When each zone's configured subnets were last described.
    zone_fetched: HashMap<ZoneId, Instant>,
    /// Subnets that ran out of addresses, until when to skip them.
    cooling: HashMap<SubnetId, Instant>,
}

/// The cache of one leading term.
pub struct SubnetCache {
    cached: parking_lot::Mutex<Cached>,
    /// One describe at a time, so a burst of pods makes one call.
    fetch: tokio::sync::Mutex<()>,
    /// Free addresses per subnet over the last hour of describes.
    history: parking_lot::Mutex<HashMap<SubnetId, Window>>,
    /// Where the samples' time starts.
    origin: Instant,
    metrics: Arc<Metrics>,
}

impl SubnetCache {
    pub fn new(metrics: Arc<Metrics>) -> Self {
        Self {
            cached: Default::default(),
            fetch: Default::default(),
            history: Default::default(),
            origin: Instant::now(),
            metrics,
        }
    }

    /// A describe's answer as samples and gauges.
    fn observed(&self, found: &[Subnet]) {
        let at = self.origin.elapsed();
        let mut history = self.history.lock();
        for s in found {
            let window = history
                .entry(s.id.clone())
                .or_insert_with(|| Window::new(FORECAST_WINDOW));
            window.push(Sample {
                at,
                free: s.free_ips,
            });
            let exhausted_in = window.forecast().and_then(|f| f.exhausted_in);
            self.metrics
                .set_subnet(s.id.as_str(), s.zone.as_str(), s.free_ips, exhausted_in);
        }
    }

    /// The subnet a new ENI in `zone` should come from, among `configured`.
    pub async fn choose(
        &self,
        cloud: &dyn Cloud,
        zone: &ZoneId,
        configured: &BTreeMap<ZoneId, Vec<SubnetId>>,
    ) -> Result<SubnetId, PodError> {
        let (views, cooling) = self
            .views(cloud, zone, configured)
            .await
            .map_err(PodError::cloud(Phase::Allocate))?;
        choose_subnet(zone, configured, &views, 1, &cooling)
            .map_err(|e| PodError::unservable(e.to_string()))
    }

    /// Free addresses a new ENI in `zone` could get (node capacity counts
    /// them), from the same cached describe as [`Self::choose`].
    pub async fn zone_free(
        &self,
        cloud: &dyn Cloud,
        zone: &ZoneId,
        configured: &BTreeMap<ZoneId, Vec<SubnetId>>,
    ) -> Result<u32, CloudError> {
        let (views, cooling) = self.views(cloud, zone, configured).await?;
        Ok(zone_free_ips(zone, configured, &views, &cooling))
    }

    /// The zone's configured subnets as views, and those cooling down.
    async fn views(
        &self,
        cloud: &dyn Cloud,
        zone: &ZoneId,
        configured: &BTreeMap<ZoneId, Vec<SubnetId>>,
    ) -> Result<(Vec<SubnetView>, HashSet<SubnetId>), CloudError> {
        let ids = configured.get(zone).cloned().unwrap_or_default();
        let subnets = self.zone(cloud, zone, &ids).await?;
        let views: Vec<SubnetView> = subnets
            .iter()
            .map(|s| SubnetView {
                id: s.id.clone(),
                zone: s.zone.clone(),
                cidr: s.cidr,
                free_ips: s.free_ips,
            })
            .collect();
        let cooling: HashSet<SubnetId> = {
            let mut c = self.cached.lock();
            let now = Instant::now();
            c.cooling.retain(|_, until| *until > now);
            c.cooling.keys().cloned().collect()
        };
        Ok((views, cooling))
    }

    /// An ENI was made in `subnet`: one address fewer until the next describe.
    pub fn took_one(&self, subnet: &SubnetId) {
        if let Some(s) = self.cached.lock().subnets.get_mut(subnet) {
            s.free_ips = s.free_ips.saturating_sub(1);
        }
    }

    /// A create in `subnet` failed: an exhausted subnet is skipped for the
    /// kind's cool-down and its zone described again next time.
    pub fn create_failed(&self, subnet: &SubnetId, zone: &ZoneId, error: &CloudError) {
        if error.kind != ErrorKind::SubnetExhausted {
            return;
        }
        if let Some(cool) = error.kind.cool_down() {
            let mut c = self.cached.lock();
            c.cooling.insert(subnet.clone(), Instant::now() + cool);
            c.zone_fetched.remove(zone);
        }
    }

    /// A subnet by id (for the allocation record), from the cache or the cloud.
    pub async fn get(&self, cloud: &dyn Cloud, id: &SubnetId) -> Result<Subnet, PodError> {
        if let Some(s) = self.cached.lock().subnets.get(id) {
            return Ok(s.clone());
        }
        let found = cloud
            .describe_subnets(std::slice::from_ref(id))
            .await
            .map_err(PodError::cloud(Phase::Allocate))?;
        let s = found.into_iter().find(|s| &s.id == id).ok_or_else(|| {
            PodError::blocked(
                Phase::Allocate,
                format!("subnet {id} of the ENI was not found"),
            )
        })?;
        self.cached.lock().subnets.insert(id.clone(), s.clone());
        Ok(s)
    }

    /// The configured subnets of a zone as the cloud reports them: fresh
    /// when the zone was described recently (ids the cloud did not return
    /// then, deleted vSwitches, are simply absent).
    async fn zone(
        &self,
        cloud: &dyn Cloud,
        zone: &ZoneId,
        ids: &[SubnetId],
    ) -> Result<Vec<Subnet>, CloudError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        if let Some(hit) = self.fresh(zone, ids) {
            return Ok(hit);
        }
        let _one_fetch = self.fetch.lock().await;
        if let Some(hit) = self.fresh(zone, ids) {
            return Ok(hit);
        }
        let found = cloud.describe_subnets(ids).await?;
        self.observed(&found);
        let mut c = self.cached.lock();
        for id in ids {
            c.subnets.remove(id);
        }
        for s in &found {
            c.subnets.insert(s.id.clone(), s.clone());
        }
        c.zone_fetched.insert(zone.clone(), Instant::now());
        Ok(found)
    }

    fn fresh(&self, zone: &ZoneId, ids: &[SubnetId]) -> Option<Vec<Subnet>> {
        let c = self.cached.lock();
        let at = *c.zone_fetched.get(zone)?;
        if at.elapsed() >= CACHE_TTL {
            return None;
        }
        Some(
            ids.iter()
                .filter_map(|id| c.subnets.get(id).cloned())
                .collect(),
        )
    }
}
