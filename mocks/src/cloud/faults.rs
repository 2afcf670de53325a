//! Fault injection of the model: per-API error rates (by kind), latency and
//! server-side rate limits, plus the asynchronous-operation delays. Decisions
//! are deterministic under the seed: one `StdRng` drawn once per call of an
//! API that has an error rate.

use super::flavor::Fail;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::Duration;
use tokio::time::Instant;

/// Every action the model answers, by its Alibaba name.
pub const ALL_APIS: [&str; 14] = [
    "CreateNetworkInterface",
    "AttachNetworkInterface",
    "DetachNetworkInterface",
    "DeleteNetworkInterface",
    "DescribeNetworkInterfaces",
    "AssignPrivateIpAddresses",
    "UnassignPrivateIpAddresses",
    "DescribeInstances",
    "DescribeInstanceTypes",
    "DescribeVSwitches",
    "DescribeRouteTableList",
    "DescribeRouteEntryList",
    "CreateRouteEntries",
    "DeleteRouteEntries",
];

/// The actions that change the world; tests assert "no mutating call" on these.
pub const MUTATING_APIS: [&str; 8] = [
    "CreateNetworkInterface",
    "AttachNetworkInterface",
    "DetachNetworkInterface",
    "DeleteNetworkInterface",
    "AssignPrivateIpAddresses",
    "UnassignPrivateIpAddresses",
    "CreateRouteEntries",
    "DeleteRouteEntries",
];

/// Whether an action changes the world.
pub fn is_mutating(api: &str) -> bool {
    MUTATING_APIS.contains(&api)
}

/// Which error an injected fault answers with.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum FaultKind {
    /// `Throttled` (`Throttling.User` / `RequestLimitExceeded`).
    #[default]
    Throttled,
    /// `Transient` (`ServiceUnavailable` / `InternalError`).
    Transient,
    /// `Conflict` (`Operation.Conflict` / `IncorrectState`).
    Conflict,
    /// `Auth` (`InvalidAccessKeyId.NotFound` / `AuthFailure`).
    Auth,
    /// `InvalidRequest` (`InvalidParameter` / `InvalidParameterValue`).
    InvalidRequest,
    /// `SubnetExhausted` (`InvalidVSwitchId.IpNotEnough` /
    /// `InsufficientFreeAddressesInSubnet`).
    SubnetExhausted,
}

impl FaultKind {
    pub(crate) fn fail(self) -> Fail {
        match self {
            FaultKind::Throttled => Fail::Throttled,
            FaultKind::Transient => Fail::Transient,
            FaultKind::Conflict => Fail::Conflict,
            FaultKind::Auth => Fail::Auth,
            FaultKind::InvalidRequest => Fail::InvalidRequest,
            FaultKind::SubnetExhausted => Fail::SubnetExhausted,
        }
    }
}

/// Faults of one API.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ApiFault {
    /// Share of calls (0.0..=1.0) that fail with `errorKind` before any effect.
    #[serde(default)]
    pub error_rate: f64,
    /// The kind injected failures have (default `throttled`).
    #[serde(default)]
    pub error_kind: FaultKind,
    /// Added to every call of this API, failed ones included.
    #[serde(default)]
    pub latency_ms: u64,
    /// Server-side limit: calls beyond this many in any one-second window
    /// answer `Throttled`.
    #[serde(default)]
    pub rate_per_second: Option<u32>,
    /// Injected errors happen after the call took effect, as when the answer
    /// is lost on the way back: a retry without the same token duplicates.
    #[serde(default)]
    pub after_effect: bool,
}

fn default_attach_ms() -> u64 {
    2000
}
fn default_detach_ms() -> u64 {
    1000
}
fn default_route_ms() -> u64 {
    1000
}
fn default_eni_ops_per_instance() -> u32 {
    DEFAULT_ENI_OPS_PER_INSTANCE
}

/// ENI attach/detach operations one instance takes in flight by default.
///
/// Neither cloud publishes a number. Both refuse an ENI operation on an
/// instance that is busy with others: ECS's AttachNetworkInterface lists
/// `InvalidOperation.InvalidEcsState` ("the operation is not supported
/// while the instance is in the current state", HTTP 400) and EC2's common
/// client errors list `IncorrectInstanceState` (HTTP 400). Terway's control
/// plane keeps at most 5 ENI attaches in flight per ECS instance, which is
/// what this model accepts unless a spec says otherwise.
pub const DEFAULT_ENI_OPS_PER_INSTANCE: u32 = 5;

/// The `faults:` key of a world spec.
///
/// ```yaml
/// faults:
///   seed: 7                 # StdRng seed of the error draws (default 0)
///   attachDelayMs: 2000     # Attaching -> InUse (default 2000, 0 = at once)
///   detachDelayMs: 1000     # Detaching -> Available (default 1000)
///   routeDelayMs: 1000      # route entry Pending -> Available, Deleting -> gone (default 1000)
///   eniOpsPerInstance: 5    # ENIs Attaching or Detaching at once on one instance (default 5, 0 = no limit)
///   CreateNetworkInterface: {errorRate: 0.1, errorKind: throttled, latencyMs: 50, ratePerSecond: 20}
/// ```
/// Every other key must be one of [`ALL_APIS`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FaultsSpec {
    /// Seed of the error draws: the same seed gives the same fault sequence.
    #[serde(default)]
    pub seed: u64,
    /// Attaching -> InUse after this many ms (default 2000; 0 = at once).
    #[serde(default = "default_attach_ms")]
    pub attach_delay_ms: u64,
    /// Detaching -> Available after this many ms (default 1000; 0 = at once).
    #[serde(default = "default_detach_ms")]
    pub detach_delay_ms: u64,
    /// Alibaba route entries: Pending -> Available and Deleting -> gone after
    /// this many ms (default 1000; 0 = at once). EC2 routes are immediate.
    #[serde(default = "default_route_ms")]
    pub route_delay_ms: u64,
    /// A listing of ENIs by tag leaves out ENIs created less than this many
    /// ms ago (default 0), as EC2's eventually consistent listings do; a
    /// lookup by id sees them at once.
    #[serde(default)]
    pub tag_listing_lag_ms: u64,
    /// ENI attach and detach operations one instance accepts in flight (its
    /// ENIs in `Attaching` or `Detaching`); one more is refused with the
    /// flavor's busy-instance code (Alibaba `InvalidOperation.InvalidEcsState`,
    /// EC2 `IncorrectInstanceState`) before any effect. Default
    /// [`DEFAULT_ENI_OPS_PER_INSTANCE`]; 0 = no limit.
    #[serde(default = "default_eni_ops_per_instance")]
    pub eni_ops_per_instance: u32,
    /// Faults per API name.
    #[serde(flatten)]
    pub apis: BTreeMap<String, ApiFault>,
}

impl Default for FaultsSpec {
    fn default() -> Self {
        Self {
            seed: 0,
            attach_delay_ms: default_attach_ms(),
            detach_delay_ms: default_detach_ms(),
            route_delay_ms: default_route_ms(),
            tag_listing_lag_ms: 0,
            eni_ops_per_instance: DEFAULT_ENI_OPS_PER_INSTANCE,
            apis: BTreeMap::new(),
        }
    }
}

/// Delays of the asynchronous operations.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Delays {
    pub attach: Duration,
    pub detach: Duration,
    pub route: Duration,
    pub tag_listing_lag: Duration,
    /// ENI operations in flight per instance (0 = no limit).
    pub eni_ops_per_instance: u32,
}

impl Delays {
    pub fn from_spec(spec: &FaultsSpec) -> Self {
        Self {
            attach: Duration::from_millis(spec.attach_delay_ms),
            detach: Duration::from_millis(spec.detach_delay_ms),
            route: Duration::from_millis(spec.route_delay_ms),
            tag_listing_lag: Duration::from_millis(spec.tag_listing_lag_ms),
            eni_ops_per_instance: spec.eni_ops_per_instance,
        }
    }
}

/// What happens to one call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Decision {
    pub latency: Duration,
    pub fail: Option<Fail>,
    pub after_effect: bool,
}

/// Run-time fault state of a world.
pub(crate) struct Faults {
    rng: StdRng,
    apis: BTreeMap<String, ApiFault>,
    windows: HashMap<String, VecDeque<Instant>>,
}

impl Faults {
    pub(crate) fn new(spec: &FaultsSpec) -> Self {
        Self {
            rng: StdRng::seed_from_u64(spec.seed),
            apis: spec.apis.clone(),
            windows: HashMap::new(),
        }
    }

    pub(crate) fn set(&mut self, api: &str, fault: Option<ApiFault>) {
        match fault {
            Some(fault) => {
                self.apis.insert(api.to_owned(), fault);
            }
            None => {
                self.apis.remove(api);
                self.windows.remove(api);
            }
        }
    }

    /// Decide the fate of one call arriving at `now`: the latency to add, the
    /// failure to answer with, and whether that failure comes after the
    /// effect (server-side throttling never does).
    pub(crate) fn decide(&mut self, api: &str, now: Instant) -> Decision {
        let after = self.apis.get(api).is_some_and(|f| f.after_effect);
        let (latency, fail, throttled_here) = self.decide_inner(api, now);
        let after_effect = after && fail.is_some() && !throttled_here;
        Decision {
            latency,
            fail,
            after_effect,
        }
    }

    fn decide_inner(&mut self, api: &str, now: Instant) -> (Duration, Option<Fail>, bool) {
        let Some(fault) = self.apis.get(api) else {
            return (Duration::ZERO, None, false);
        };
        let latency = Duration::from_millis(fault.latency_ms);
        if let Some(rate) = fault.rate_per_second {
            let window = self.windows.entry(api.to_owned()).or_default();
            while window
                .front()
                .is_some_and(|t| now.duration_since(*t) >= Duration::from_secs(1))
            {
                window.pop_front();
            }
            if window.len() >= rate as usize {
                return (latency, Some(Fail::Throttled), true);
            }
            window.push_back(now);
        }
        if fault.error_rate > 0.0 && self.rng.random_bool(fault.error_rate.clamp(0.0, 1.0)) {
            return (latency, Some(fault.error_kind.fail()), false);
        }
        (latency, None, false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_api_faults_and_delays() {
        let spec: FaultsSpec = serde_yaml::from_str(
            "seed: 3\nattachDelayMs: 0\nCreateNetworkInterface: {errorRate: 0.5, errorKind: transient, latencyMs: 50, ratePerSecond: 20}\n",
        )
        .unwrap();
        assert_eq!(spec.seed, 3);
        assert_eq!(spec.attach_delay_ms, 0);
        assert_eq!(spec.detach_delay_ms, 1000);
        assert_eq!(spec.eni_ops_per_instance, DEFAULT_ENI_OPS_PER_INSTANCE);
        let limited: FaultsSpec = serde_yaml::from_str("eniOpsPerInstance: 2\n").unwrap();
        assert_eq!(Delays::from_spec(&limited).eni_ops_per_instance, 2);
        let f = &spec.apis["CreateNetworkInterface"];
        assert_eq!(f.error_kind, FaultKind::Transient);
        assert_eq!(f.rate_per_second, Some(20));
    }

    #[test]
    fn unknown_fault_field_is_rejected() {
        let err = serde_yaml::from_str::<FaultsSpec>("CreateNetworkInterface: {errorRat: 0.5}\n");
        assert!(err.is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn rate_limit_counts_a_sliding_second() {
        let mut spec = FaultsSpec::default();
        spec.apis.insert(
            "DescribeVSwitches".into(),
            ApiFault {
                rate_per_second: Some(2),
                ..ApiFault::default()
            },
        );
        let mut faults = Faults::new(&spec);
        let t0 = Instant::now();
        assert_eq!(faults.decide("DescribeVSwitches", t0).fail, None);
        assert_eq!(faults.decide("DescribeVSwitches", t0).fail, None);
        assert_eq!(
            faults.decide("DescribeVSwitches", t0).fail,
            Some(Fail::Throttled)
        );
        let later = t0 + Duration::from_secs(1);
        assert_eq!(faults.decide("DescribeVSwitches", later).fail, None);
    }
}
