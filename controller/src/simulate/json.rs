//! `simulate --json`: the whole run as one JSON document on stdout, for
//! benchmarks and CI. Built from the same phase figures (and the same lower
//! bounds, `bound`) the text report prints. Optional blocks are `Option`s
//! skipped when absent, so a new kind of figure is one more field.

use super::bound::{AllocationFigures, Percentiles};
use super::Sim;
use serde::Serialize;
use std::collections::BTreeMap;

/// The document: one entry per act, in order.
#[derive(Clone, Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SimReport {
    pub acts: Vec<ActReport>,
}

/// One act (a scenario document, run on its own fresh fakes).
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ActReport {
    pub name: String,
    /// Every phase converged within `timeoutSeconds`.
    pub converged: bool,
    pub phases: Vec<PhaseReport>,
    pub controller: ControllerFigures,
    /// `--dataplane`: what packets showed at the end of the act.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dataplane: Option<DataplaneSummary>,
    /// Fault injection against the controller (scenarios that ask for it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub chaos: Option<serde_json::Value>,
    /// `routes.backend: bgp`: one entry per peer, as the text report's lines.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub bgp_peers: Vec<super::bgp::PeerLine>,
}

/// One phase: a step (or several with `wait: false`) and the wait for
/// convergence after it.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PhaseReport {
    pub name: String,
    pub converged: bool,
    /// From the phase's first step to convergence (or the timeout).
    pub seconds: f64,
    /// Mutating calls the cloud received (every attempt).
    pub mutating_calls: u64,
    /// Every call the cloud received, by action (every attempt).
    pub calls_by_action: BTreeMap<String, u64>,
    /// The least time the phase could take: its route changes and ENI
    /// allocations at the controller's own rate limits and the cloud's pace
    /// (route changes on a table one at a time, the attach latency); zero
    /// when it needed neither.
    pub lower_bound_seconds: f64,
    /// `seconds / lowerBoundSeconds`, when the bound is not zero.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ratio_to_bound: Option<f64>,
    /// Phases in which ENI pods were bound.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pods: Option<PodFigures>,
}

/// The ENI pods bound in a phase.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PodFigures {
    /// Pods bound in the phase.
    pub count: usize,
    /// Of those, pods still without the allocation annotation at its end.
    pub pending: usize,
    /// Binding (`spec.nodeName` first seen) to the annotation first seen.
    pub bind_to_allocation_ms: Millis,
    /// The same bindings replayed through the controller's create/attach
    /// limits plus the attach latency, with at most
    /// `attachesInFlightPerNode` attaches in flight per node.
    pub lower_bound_ms: Millis,
    /// The least of `eni.attachConcurrency` and the ENI operations the
    /// cloud takes in flight per instance.
    pub attaches_in_flight_per_node: usize,
    /// That bound when a node's attaches also go one at a time.
    pub lower_bound_serial_ms: Millis,
    /// Cloud calls in the phase per annotated pod.
    pub cloud_calls_per_pod: f64,
}

/// p50 / p99 / max in milliseconds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Millis {
    pub p50: u64,
    pub p99: u64,
    pub max: u64,
}

impl From<&Percentiles> for Millis {
    fn from(p: &Percentiles) -> Self {
        let ms = |d: std::time::Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        Self {
            p50: ms(p.p50),
            p99: ms(p.p99),
            max: ms(p.max),
        }
    }
}

/// The controller's side of the act.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ControllerFigures {
    /// Peak resident memory of the `simulate` process so far (Linux
    /// `VmHWM`; the fakes run in it too); 0 where it cannot be read.
    pub peak_rss_bytes: u64,
    /// Over every replica of the act: answers the cloud throttled, retries,
    /// and calls the controller's own rate limits held back.
    pub throttled: u64,
    pub retries: u64,
    pub held_back: u64,
    /// Replicas started in the act (restarts add one each).
    pub replicas: usize,
    /// Event objects in the apiserver at the end of the act (each one
    /// create), and the occurrences they stand for (their series counts).
    pub event_objects: usize,
    pub event_occurrences: u64,
}

/// `--dataplane` in short.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DataplaneSummary {
    /// Every check agreed with what the controller reports.
    pub agrees: bool,
    pub checked: usize,
    /// The targets that disagreed.
    pub mismatches: Vec<String>,
}

impl DataplaneSummary {
    pub fn of(report: &super::dataplane::DataplaneReport) -> Self {
        let checks: Vec<_> = report.routes.iter().chain(&report.enis).collect();
        Self {
            agrees: report.agrees(),
            checked: checks.len(),
            mismatches: checks
                .iter()
                .filter(|c| c.expected != c.answered)
                .map(|c| c.what.clone())
                .collect(),
        }
    }
}

/// Throttles, retries and held-back calls over every replica of the act.
pub fn controller_figures(sim: &Sim) -> ControllerFigures {
    let mut out = ControllerFigures {
        peak_rss_bytes: peak_rss_bytes().unwrap_or(0),
        replicas: sim.harness.replicas.len(),
        ..Default::default()
    };
    let events = sim
        .harness
        .kube
        .api
        .store()
        .snapshot(&mocks::kubeapi::reactor::key("", "events"));
    out.event_objects = events.len();
    out.event_occurrences = events
        .iter()
        .map(|e| {
            e["series"]["count"]
                .as_u64()
                .or(e["count"].as_u64())
                .unwrap_or(1)
        })
        .sum();
    for replica in &sim.harness.replicas {
        for c in replica.cloud.stats().snapshot().values() {
            out.throttled += c.throttles;
            out.retries += c.retries;
            out.held_back += c.rate_limited;
        }
    }
    out
}

/// This process's peak resident set size (`VmHWM` in /proc/self/status).
pub fn peak_rss_bytes() -> Option<u64> {
    mocks::procfs::memory(std::process::id()).map(|(_, peak)| peak)
}

fn pods(a: &AllocationFigures, calls: &BTreeMap<String, u64>) -> PodFigures {
    let total: u64 = calls.values().sum();
    PodFigures {
        count: a.pods + a.unannotated,
        pending: a.unannotated,
        bind_to_allocation_ms: (&a.measured).into(),
        lower_bound_ms: (&a.bound).into(),
        attaches_in_flight_per_node: a.per_node,
        lower_bound_serial_ms: (&a.bound_serial).into(),
        cloud_calls_per_pod: if a.pods > 0 {
            total as f64 / a.pods as f64
        } else {
            0.0
        },
    }
}

/// The act as it stands at its end.
pub fn act(sim: &Sim) -> ActReport {
    let phases: Vec<PhaseReport> = sim
        .phases
        .iter()
        .map(|p| {
            let bound = p.lower_bound.as_secs_f64();
            let seconds = p.took.as_secs_f64();
            PhaseReport {
                name: p.name.clone(),
                converged: p.converged,
                seconds,
                mutating_calls: p.mutating_calls,
                calls_by_action: p.calls.clone(),
                lower_bound_seconds: bound,
                ratio_to_bound: (bound > 0.0).then(|| seconds / bound),
                pods: p.allocations.as_ref().map(|a| pods(a, &p.calls)),
            }
        })
        .collect();
    ActReport {
        name: sim.scenario.name.clone(),
        converged: phases.iter().all(|p| p.converged),
        phases,
        controller: controller_figures(sim),
        dataplane: None,
        chaos: None,
        bgp_peers: super::bgp::peer_lines(sim),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn absent_blocks_are_left_out_and_keys_are_camel_case() {
        let report = SimReport {
            acts: vec![ActReport {
                name: "a".into(),
                converged: true,
                phases: vec![PhaseReport {
                    name: "p".into(),
                    converged: true,
                    seconds: 1.5,
                    mutating_calls: 2,
                    calls_by_action: BTreeMap::from([("CreateRouteEntries".into(), 2)]),
                    lower_bound_seconds: 0.0,
                    ratio_to_bound: None,
                    pods: None,
                }],
                controller: ControllerFigures::default(),
                dataplane: None,
                chaos: None,
                bgp_peers: Vec::new(),
            }],
        };
        let v = serde_json::to_value(&report).unwrap();
        let act = &v["acts"][0];
        assert!(act.get("chaos").is_none() && act.get("dataplane").is_none());
        assert!(act.get("bgpPeers").is_none());
        let phase = &act["phases"][0];
        assert!(phase.get("pods").is_none() && phase.get("ratioToBound").is_none());
        assert_eq!(phase["callsByAction"]["CreateRouteEntries"], 2);
        assert_eq!(act["controller"]["peakRssBytes"], 0);
        assert_eq!(act["controller"]["heldBack"], 0);
    }
}
