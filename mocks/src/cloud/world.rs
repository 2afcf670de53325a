//! `World`: the raw in-memory cloud. Implements `providers::Cloud` directly,
//! with faults, latency, server-side rate limits and cloud limits applied but
//! no client-side retry; also the seeding and inspection methods used by
//! tests, the `simulate` command and the Alibaba HTTP front.

use super::faults::{is_mutating, ApiFault, Delays, Faults};
use super::flavor::{Fail, Flavor};
use super::snapshot::{TableSnapshot, WorldSnapshot};
use super::spec::{AccessKey, InstanceSpec, SpecError, WorldSpec};
use super::state::{OpResult, State};
use async_trait::async_trait;
use ipam::ids::{
    EniId, IdempotencyToken, InstanceId, InstanceType, RegionId, RouteTableId, SubnetId, VpcId,
};
use ipnet::Ipv4Net;
use parking_lot::Mutex;
use providers::call::ApiStats;
use providers::error::{CloudError, CloudResult};
use providers::model::{
    BatchOutcome, Capabilities, CreateEniRequest, Eni, EniFilter, Instance, InstanceTypeLimits,
    NewRouteEntry, RouteEntry, RouteTable, Subnet,
};
use providers::Cloud;
use std::collections::{BTreeMap, HashSet};
use std::net::Ipv4Addr;
use std::sync::Arc;
use tokio::time::Instant;

struct Inner {
    flavor: Flavor,
    state: Mutex<State>,
    faults: Mutex<Faults>,
    calls: Mutex<BTreeMap<String, u64>>,
    /// Calls answered with an injected error (lost answers included).
    injected: std::sync::atomic::AtomicU64,
    stats: Arc<ApiStats>,
}

/// The in-memory cloud. Cheap to clone; clones share one world.
#[derive(Clone)]
pub struct World {
    inner: Arc<Inner>,
}

impl World {
    /// Build a world from a spec (validated here).
    pub fn from_spec(spec: &WorldSpec) -> Result<World, SpecError> {
        spec.validate()?;
        let state = State::new(spec, Instant::now())?;
        Ok(World {
            inner: Arc::new(Inner {
                flavor: spec.flavor,
                state: Mutex::new(state),
                faults: Mutex::new(Faults::new(&spec.faults)),
                calls: Mutex::default(),
                injected: Default::default(),
                stats: Arc::default(),
            }),
        })
    }

    /// Parse, validate and build.
    pub fn from_yaml(yaml: &str) -> Result<World, SpecError> {
        World::from_spec(&WorldSpec::from_yaml(yaml)?)
    }

    pub fn flavor(&self) -> Flavor {
        self.inner.flavor
    }

    pub fn region(&self) -> RegionId {
        self.inner.state.lock().region.clone()
    }

    /// The access keys the HTTP front accepts.
    pub fn access_keys(&self) -> Vec<AccessKey> {
        self.inner.state.lock().access_keys.clone()
    }

    /// Add an instance (with its primary ENI) while the world runs.
    pub fn add_instance(&self, spec: &InstanceSpec) -> Result<(), SpecError> {
        let now = Instant::now();
        let mut state = self.inner.state.lock();
        state.settle(now);
        state.add_instance(spec, now).map_err(|(_, msg)| {
            SpecError::invalid(
                format!("instance {}", spec.id),
                msg,
                "fix the instance entry",
            )
        })
    }

    /// Release an instance: its primary ENI is deleted and its addresses
    /// returned, secondary ENIs become `Available`; in the aws flavor routes
    /// to it turn `Blackhole`.
    pub fn remove_instance(&self, id: &InstanceId) -> Result<(), SpecError> {
        let now = Instant::now();
        let mut state = self.inner.state.lock();
        state.settle(now);
        state.remove_instance(id).map_err(|(_, msg)| {
            SpecError::invalid(format!("instance {id}"), msg, "name an existing instance")
        })
    }

    /// Every ENI, primary ones included, without counting a call.
    pub fn enis(&self) -> Vec<Eni> {
        self.inspect(|s| s.describe_enis(&EniFilter::default()))
    }

    /// Whether an ENI exists, without counting a call.
    pub fn has_eni(&self, id: &EniId) -> bool {
        self.inspect(|s| s.has_eni(id))
    }

    /// The primary ENIs among `ids`, without counting a call.
    pub fn primaries_among<'a>(&self, ids: impl IntoIterator<Item = &'a EniId>) -> HashSet<EniId> {
        self.inspect(|s| s.primaries_among(ids))
    }

    /// The instances among `ids` that exist and the ENIs attached to them,
    /// without counting a call (one pass over the ENIs, not the world).
    pub fn instances_with_enis(&self, ids: &[InstanceId]) -> (Vec<Instance>, Vec<Eni>) {
        self.inspect(|s| {
            let instances = s.describe_instances(ids).unwrap_or_default();
            let eni_ids: Vec<EniId> = instances
                .iter()
                .flat_map(|i| i.enis.iter().map(|a| a.eni_id.clone()))
                .collect();
            let enis = if eni_ids.is_empty() {
                Vec::new()
            } else {
                s.describe_enis(&EniFilter {
                    eni_ids,
                    ..EniFilter::default()
                })
            };
            (instances, enis)
        })
    }

    /// Ids of every instance.
    pub fn instance_ids(&self) -> Vec<InstanceId> {
        self.inspect(|s| s.instances.keys().cloned().collect())
    }

    /// Every entry of a table (system entries included), without counting a
    /// call; empty for an unknown table.
    pub fn route_entries(&self, table: &RouteTableId) -> Vec<RouteEntry> {
        self.inspect(|s| s.list_route_entries(table).unwrap_or_default())
    }

    /// Everything, for printing.
    pub fn snapshot(&self) -> WorldSnapshot {
        self.inspect(|s| {
            let instances = s.all_instances();
            let mut route_tables = Vec::new();
            for vpc in s.vpc_cidrs.keys() {
                for table in s.describe_route_tables(vpc).unwrap_or_default() {
                    let entries = s.list_route_entries(&table.id).unwrap_or_default();
                    route_tables.push(TableSnapshot { table, entries });
                }
            }
            WorldSnapshot {
                region: s.region.clone(),
                flavor: s.flavor,
                subnets: s.describe_subnets(&[]),
                instances,
                enis: s.describe_enis(&EniFilter::default()),
                route_tables,
            }
        })
    }

    /// The most ENI attaches and detaches one instance had in flight at once
    /// (ENIs `Attaching` or `Detaching` on it), 0 for an instance never seen
    /// with one.
    pub fn max_eni_ops_in_flight(&self, instance: &InstanceId) -> u32 {
        self.inspect(|s| {
            s.max_eni_ops_in_flight
                .get(instance)
                .copied()
                .unwrap_or_default()
        })
    }

    /// Attaches and detaches refused so far because their instance had as
    /// many ENI operations in flight as it takes.
    pub fn eni_ops_refused_busy(&self) -> u64 {
        self.inspect(|s| s.eni_ops_refused_busy)
    }

    /// Calls received per action (every attempt, failed ones included).
    pub fn calls(&self) -> BTreeMap<String, u64> {
        self.inner.calls.lock().clone()
    }

    /// Calls received by the mutating actions ([`super::faults::MUTATING_APIS`]).
    pub fn mutating_calls(&self) -> u64 {
        self.inner
            .calls
            .lock()
            .iter()
            .filter(|(api, _)| is_mutating(api))
            .map(|(_, n)| n)
            .sum()
    }

    /// Calls answered with an injected error so far (error rates and
    /// server-side rate limits; a lost answer counts too).
    pub fn faults_injected(&self) -> u64 {
        self.inner
            .injected
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    pub fn reset_calls(&self) {
        self.inner.calls.lock().clear();
    }

    /// Set (or with `None` clear) the faults of one API at run time.
    pub fn set_fault(&self, api: &str, fault: Option<ApiFault>) {
        self.inner.faults.lock().set(api, fault);
    }

    /// Change the asynchronous delays at run time (new operations use them).
    pub fn set_delays(&self, delays: Delays) {
        self.inner.state.lock().delays = delays;
    }

    fn inspect<T>(&self, f: impl FnOnce(&State) -> T) -> T {
        let mut state = self.inner.state.lock();
        state.settle(Instant::now());
        f(&state)
    }

    fn error(&self, api: &str, fail: &Fail, message: impl Into<String>) -> CloudError {
        let (kind, code) = fail.parts(self.inner.flavor);
        let request_id = uuid::Uuid::new_v4().to_string().to_uppercase();
        CloudError::new(kind, api, code, message).with_request_id(request_id)
    }

    /// Count the call, apply latency, rate limit and injected errors.
    /// `Ok(Some(err))`: act, then answer `err` (a lost answer).
    async fn enter(&self, api: &str) -> CloudResult<Option<CloudError>> {
        let now = Instant::now();
        *self.inner.calls.lock().entry(api.to_owned()).or_default() += 1;
        let decision = self.inner.faults.lock().decide(api, now);
        let (latency, failure, after_effect) =
            (decision.latency, decision.fail, decision.after_effect);
        if !latency.is_zero() {
            tokio::time::sleep(latency).await;
        }
        match failure {
            Some(fail) => {
                self.inner
                    .injected
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                tracing::debug!(api, ?fail, after_effect, "memory cloud injects a fault");
                let err = self.error(api, &fail, "injected fault");
                if after_effect {
                    Ok(Some(err))
                } else {
                    Err(err)
                }
            }
            None => Ok(None),
        }
    }

    /// One call: faults, then the operation on the state.
    async fn run<T, F>(&self, api: &str, op: F) -> CloudResult<T>
    where
        F: FnOnce(&mut State, Instant) -> OpResult<T> + Send,
        T: Send,
    {
        let lost = self.enter(api).await?;
        let result = self.with_state(api, op);
        match lost {
            Some(err) => Err(err),
            None => result,
        }
    }

    fn with_state<T>(
        &self,
        api: &str,
        f: impl FnOnce(&mut State, Instant) -> OpResult<T>,
    ) -> CloudResult<T> {
        let now = Instant::now();
        let mut state = self.inner.state.lock();
        state.settle(now);
        f(&mut state, now).map_err(|(fail, msg)| self.error(api, &fail, msg))
    }

    fn outcome(
        &self,
        api: &str,
        failed: Vec<(Ipv4Net, Fail, String)>,
    ) -> CloudResult<BatchOutcome> {
        let failed: Vec<(Ipv4Net, CloudError)> = failed
            .into_iter()
            .map(|(dest, fail, msg)| (dest, self.error(api, &fail, msg)))
            .collect();
        // EC2 has no batch route call: one route per call, its failure is the call's.
        if self.inner.flavor == Flavor::Aws {
            if let Some((_, err)) = failed.into_iter().next() {
                return Err(err);
            }
            return Ok(BatchOutcome::default());
        }
        Ok(BatchOutcome { failed })
    }
}

#[async_trait]
impl Cloud for World {
    fn name(&self) -> &'static str {
        "memory"
    }

    fn capabilities(&self) -> Capabilities {
        self.inner.flavor.capabilities()
    }

    /// Always empty: the raw world has no client-side wrapper; server-side
    /// counts are in [`World::calls`].
    fn stats(&self) -> Arc<ApiStats> {
        self.inner.stats.clone()
    }

    async fn describe_instance(&self, id: &InstanceId) -> CloudResult<Instance> {
        const API: &str = "DescribeInstances";
        self.run(API, |s, _| s.describe_instance(id)).await
    }

    async fn describe_instances(&self, ids: &[InstanceId]) -> CloudResult<Vec<Instance>> {
        const API: &str = "DescribeInstances";
        self.run(API, |s, _| s.describe_instances(ids)).await
    }

    async fn instance_type_limits(
        &self,
        instance_type: &InstanceType,
    ) -> CloudResult<InstanceTypeLimits> {
        const API: &str = "DescribeInstanceTypes";
        self.run(API, |s, _| s.instance_type_limits(instance_type))
            .await
    }

    /// Every subnet when `ids` is empty.
    async fn describe_subnets(&self, ids: &[SubnetId]) -> CloudResult<Vec<Subnet>> {
        const API: &str = "DescribeVSwitches";
        self.run(API, |s, _| Ok(s.describe_subnets(ids))).await
    }

    async fn create_eni(&self, request: &CreateEniRequest) -> CloudResult<Eni> {
        const API: &str = "CreateNetworkInterface";
        self.run(API, |s, now| s.create_eni(request, now)).await
    }

    async fn attach_eni(&self, eni: &EniId, instance: &InstanceId) -> CloudResult<()> {
        const API: &str = "AttachNetworkInterface";
        self.run(API, |s, now| s.attach_eni(eni, instance, now))
            .await
    }

    async fn detach_eni(&self, eni: &EniId, instance: &InstanceId) -> CloudResult<()> {
        const API: &str = "DetachNetworkInterface";
        self.run(API, |s, now| s.detach_eni(eni, instance, now))
            .await
    }

    async fn delete_eni(&self, eni: &EniId) -> CloudResult<()> {
        const API: &str = "DeleteNetworkInterface";
        self.run(API, |s, _| s.delete_eni(eni)).await
    }

    async fn describe_enis(&self, filter: &EniFilter) -> CloudResult<Vec<Eni>> {
        const API: &str = "DescribeNetworkInterfaces";
        self.run(API, |s, now| Ok(s.describe_enis_at(filter, now)))
            .await
    }

    async fn assign_private_ips(
        &self,
        eni: &EniId,
        count: u32,
        token: &IdempotencyToken,
    ) -> CloudResult<Vec<Ipv4Addr>> {
        const API: &str = "AssignPrivateIpAddresses";
        self.run(API, |s, _| s.assign_private_ips(eni, count, token))
            .await
    }

    async fn unassign_private_ips(&self, eni: &EniId, ips: &[Ipv4Addr]) -> CloudResult<()> {
        const API: &str = "UnassignPrivateIpAddresses";
        self.run(API, |s, _| s.unassign_private_ips(eni, ips)).await
    }

    async fn describe_route_tables(&self, vpc: &VpcId) -> CloudResult<Vec<RouteTable>> {
        const API: &str = "DescribeRouteTableList";
        self.run(API, |s, _| s.describe_route_tables(vpc)).await
    }

    async fn list_route_entries(&self, table: &RouteTableId) -> CloudResult<Vec<RouteEntry>> {
        const API: &str = "DescribeRouteEntryList";
        self.run(API, |s, _| s.list_route_entries(table)).await
    }

    /// Alibaba flavor: per-entry failures in the outcome. AWS flavor: the
    /// single entry's failure is the call's error.
    async fn create_route_entries(
        &self,
        table: &RouteTableId,
        entries: &[NewRouteEntry],
    ) -> CloudResult<BatchOutcome> {
        const API: &str = "CreateRouteEntries";
        let failed = self
            .run(API, |s, now| s.create_route_entries(table, entries, now))
            .await?;
        self.outcome(API, failed)
    }

    async fn delete_route_entries(
        &self,
        table: &RouteTableId,
        entries: &[(Ipv4Net, InstanceId)],
    ) -> CloudResult<BatchOutcome> {
        const API: &str = "DeleteRouteEntries";
        let failed = self
            .run(API, |s, now| s.delete_route_entries(table, entries, now))
            .await?;
        self.outcome(API, failed)
    }
}
