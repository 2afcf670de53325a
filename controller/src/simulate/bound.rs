//! ENI allocation figures of a phase: the measured time from binding to the
//! allocation annotation (percentiles), and the lower bound the controller's
//! own per-API rate limits put on it, computed by replaying the same bindings
//! through ideal limiters (every call at the limit, nothing else slow) with
//! as many attaches in flight per instance as the controller runs and the
//! cloud takes (`eni.attachConcurrency`, the fake's `eniOpsPerInstance`);
//! and, for comparison, the same with one attach per instance at a time.
//! Also the least time a phase's route changes take on one
//! route table (batches through the limiter, one at a time where the cloud
//! serialises a table's changes).

use providers::call::CallPolicy;
use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

/// The calls each ENI costs at the least: one create, one attach.
pub const CALLS_PER_ENI: [&str; 2] = ["CreateNetworkInterface", "AttachNetworkInterface"];

/// p50 / p99 / max of some durations.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Percentiles {
    pub p50: Duration,
    pub p99: Duration,
    pub max: Duration,
}

impl Percentiles {
    /// Nearest-rank percentiles; `None` for no samples.
    pub fn of(samples: &[Duration]) -> Option<Self> {
        if samples.is_empty() {
            return None;
        }
        let mut v = samples.to_vec();
        v.sort_unstable();
        let rank = |p: f64| {
            let r = (p * v.len() as f64).ceil() as usize;
            v[r.clamp(1, v.len()) - 1]
        };
        Some(Self {
            p50: rank(0.50),
            p99: rank(0.99),
            max: v[v.len() - 1],
        })
    }
}

/// One rate-limited API's share of the bound.
#[derive(Clone, Debug, PartialEq)]
pub struct ApiBound {
    pub api: String,
    /// Calls the cloud received in the phase (every attempt).
    pub calls: u64,
    pub per_minute: u32,
    /// `calls / rate`: how long those calls take at the limit.
    pub seconds_at_limit: f64,
}

/// The figures of one phase in which pods got ENIs.
#[derive(Clone, Debug, PartialEq)]
pub struct AllocationFigures {
    /// Pods bound in the phase that got their annotation.
    pub pods: usize,
    /// Pods bound in the phase still without an annotation at its end.
    pub unannotated: usize,
    pub measured: Percentiles,
    /// Lower bound with the same bindings, from the rate limits, the attach
    /// latency and the attaches in flight per instance (`per_node`).
    pub bound: Percentiles,
    /// Attaches in flight per instance the bound allows: the least of
    /// `eni.attachConcurrency` and what the cloud takes.
    pub per_node: usize,
    /// The same with one attach at a time per instance.
    pub bound_serial: Percentiles,
    /// Mutating ENI APIs: calls and time at the limit.
    pub apis: Vec<ApiBound>,
    /// Seconds from the phase's start until the last of its pods could have
    /// had its annotation (binding time + its limits bound).
    pub last_done_seconds: f64,
}

/// Generic cell rate algorithm, as governor runs it: `burst` calls at once,
/// then one every `60 / per_minute` seconds.
struct Gcra {
    interval: f64,
    tolerance: f64,
    tat: Option<f64>,
}

impl Gcra {
    fn new(per_minute: u32) -> Self {
        let per_minute = per_minute.max(1);
        let burst = per_minute.div_ceil(60).max(1);
        let interval = 60.0 / f64::from(per_minute);
        Self {
            interval,
            tolerance: interval * f64::from(burst - 1),
            tat: None,
        }
    }

    /// The earliest time a call wanted at `t` goes out.
    fn send(&mut self, t: f64) -> f64 {
        let tat = self.tat.unwrap_or(t);
        let at = t.max(tat - self.tolerance);
        self.tat = Some(tat.max(at) + self.interval);
        at
    }
}

/// One pod's binding.
#[derive(Clone, Debug, PartialEq)]
pub struct Binding {
    /// Seconds from any common origin.
    pub at: f64,
    /// ENIs the pod requests.
    pub enis: u32,
    pub node: String,
}

/// For pods bound as given, the least time from binding to annotation each
/// could have had: pods served in binding order, each ENI's create then
/// attach sent as soon as the limiters allow and, with `per_node: Some(k)`,
/// once one of the node's `k` attach slots is free (a slot is held from the
/// attach call until the ENI is in use), then `attach_latency` until it is
/// in use. `None`: no bound per node.
pub fn lower_bounds(
    bindings: &[Binding],
    policy: &CallPolicy,
    attach_latency: Duration,
    per_node: Option<usize>,
) -> Vec<Duration> {
    let latency = attach_latency.as_secs_f64();
    let mut order: Vec<usize> = (0..bindings.len()).collect();
    order.sort_by(|a, b| bindings[*a].at.total_cmp(&bindings[*b].at));
    // Creates go out in binding order.
    let mut create = Gcra::new(policy.per_minute(CALLS_PER_ENI[0]));
    let mut pending: Vec<(usize, f64)> = Vec::new();
    for &i in &order {
        for _ in 0..bindings[i].enis.max(1) {
            pending.push((i, create.send(bindings[i].at)));
        }
    }
    // Attaches go out in the order they become possible (created, and a slot
    // of the node free), which never goes back in time, as a limiter needs;
    // ties in binding order.
    let mut attach = Gcra::new(policy.per_minute(CALLS_PER_ENI[1]));
    let mut slots: HashMap<&str, Vec<f64>> = HashMap::new();
    let k = per_node.map(|k| k.max(1));
    let free_slot = |slots: &HashMap<&str, Vec<f64>>, node: &str| -> (usize, f64) {
        slots
            .get(node)
            .and_then(|s| {
                s.iter()
                    .copied()
                    .enumerate()
                    .min_by(|a, b| a.1.total_cmp(&b.1))
            })
            .unwrap_or((0, 0.0))
    };
    let mut done: Vec<f64> = bindings.iter().map(|b| b.at).collect();
    while !pending.is_empty() {
        let ready = |&(i, created): &(usize, f64)| match k {
            Some(_) => created.max(free_slot(&slots, bindings[i].node.as_str()).1),
            None => created,
        };
        let Some((pos, at)) = pending
            .iter()
            .map(ready)
            .enumerate()
            .min_by(|a, b| a.1.total_cmp(&b.1))
        else {
            break;
        };
        let (i, _) = pending.remove(pos);
        let in_use = attach.send(at) + latency;
        if let Some(k) = k {
            let node = bindings[i].node.as_str();
            let (slot, _) = free_slot(&slots, node);
            let node_slots = slots.entry(node).or_insert_with(|| vec![0.0; k]);
            if let Some(s) = node_slots.get_mut(slot) {
                *s = in_use;
            }
        }
        done[i] = done[i].max(in_use);
    }
    bindings
        .iter()
        .zip(done)
        .map(|(b, d)| Duration::from_secs_f64((d - b.at).max(0.0)))
        .collect()
}

/// The route changes of a phase on one table.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct RouteWork {
    /// Entries to create.
    pub creates: usize,
    /// Entries to delete.
    pub deletes: usize,
}

/// How the cloud takes route changes.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RouteCloud {
    /// Most entries per call (1 = no batch call).
    pub batch: usize,
    /// A table takes its next change only once the previous one settled.
    pub serialised: bool,
    /// How long a change takes to settle (Pending -> Available).
    pub settle: Duration,
}

/// The least time `work` can take from the phase's start: every change in
/// calls of `batch` entries (one entry: the single-entry API), each sent as
/// soon as its API's limiter allows and, on a serialising cloud, once the
/// previous call's entries settled; done when the last call's entries
/// settle. Zero when there is nothing to change.
pub fn route_bound(work: RouteWork, cloud: RouteCloud, policy: &CallPolicy) -> Duration {
    let batch = cloud.batch.max(1);
    let settle = cloud.settle.as_secs_f64();
    let mut free = 0.0f64;
    let mut done = 0.0f64;
    for (entries, one, many) in [
        (work.creates, "CreateRouteEntry", "CreateRouteEntries"),
        (work.deletes, "DeleteRouteEntry", "DeleteRouteEntries"),
    ] {
        if entries == 0 {
            continue;
        }
        let api = if entries == 1 || batch == 1 {
            one
        } else {
            many
        };
        let mut limiter = Gcra::new(policy.per_minute(api));
        for _ in 0..entries.div_ceil(batch) {
            let sent = limiter.send(if cloud.serialised { free } else { 0.0 });
            free = sent + settle;
            done = done.max(sent + settle);
        }
    }
    Duration::from_secs_f64(done)
}

/// Calls and time at the limit of every mutating ENI API that was called.
pub fn api_bounds(calls: &BTreeMap<String, u64>, policy: &CallPolicy) -> Vec<ApiBound> {
    const MUTATING: [&str; 6] = [
        "CreateNetworkInterface",
        "AttachNetworkInterface",
        "DetachNetworkInterface",
        "DeleteNetworkInterface",
        "AssignPrivateIpAddresses",
        "UnassignPrivateIpAddresses",
    ];
    MUTATING
        .iter()
        .filter_map(|api| {
            let n = calls.get(*api).copied().filter(|n| *n > 0)?;
            let per_minute = policy.per_minute(api);
            Some(ApiBound {
                api: (*api).to_owned(),
                calls: n,
                per_minute,
                seconds_at_limit: n as f64 * 60.0 / f64::from(per_minute.max(1)),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(create: u32, attach: u32) -> CallPolicy {
        let mut p = CallPolicy::default();
        p.per_api_per_minute
            .insert("CreateNetworkInterface".into(), create);
        p.per_api_per_minute
            .insert("AttachNetworkInterface".into(), attach);
        p
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let v: Vec<Duration> = (1..=100).map(Duration::from_secs).collect();
        let p = Percentiles::of(&v).unwrap();
        assert_eq!(p.p50, Duration::from_secs(50));
        assert_eq!(p.p99, Duration::from_secs(99));
        assert_eq!(p.max, Duration::from_secs(100));
        assert!(Percentiles::of(&[]).is_none());
        let one = Percentiles::of(&[Duration::from_millis(7)]).unwrap();
        assert_eq!(one.p50, one.max);
    }

    #[test]
    fn burst_goes_at_once_then_one_per_interval() {
        // 120/min: burst 2, then one every 0.5 s.
        let mut g = Gcra::new(120);
        let sends: Vec<f64> = (0..5).map(|_| g.send(0.0)).collect();
        assert_eq!(sends, [0.0, 0.0, 0.5, 1.0, 1.5]);
        // A quiet limiter refills: a call much later goes at once.
        assert_eq!(g.send(100.0), 100.0);
    }

    fn at(at: f64, enis: u32, node: &str) -> Binding {
        Binding {
            at,
            enis,
            node: node.into(),
        }
    }

    #[test]
    fn bound_of_many_pods_bound_at_once_is_set_by_the_slowest_limit() {
        // 300 pods on 300 nodes at 500/min (burst 9): the last create goes
        // out at (300 - 9) * 0.12 s = 34.92 s, its attach right after, + 2 s.
        let pods: Vec<Binding> = (0..300).map(|i| at(0.0, 1, &format!("n{i}"))).collect();
        let two = Duration::from_secs(2);
        let b = lower_bounds(&pods, &policy(500, 500), two, None);
        let p = Percentiles::of(&b).unwrap();
        assert!((p.max.as_secs_f64() - 36.92).abs() < 0.01, "{p:?}");
        assert!(p.p50 < p.p99 && p.p99 <= p.max);
        // One pod per node: serial attaches change nothing.
        assert_eq!(lower_bounds(&pods, &policy(500, 500), two, Some(1)), b);
        // A slower attach limit moves the bound.
        let b = lower_bounds(&pods, &policy(500, 250), two, None);
        assert!(Percentiles::of(&b).unwrap().max.as_secs_f64() > 60.0);
    }

    #[test]
    fn spread_bindings_wait_only_for_attach_latency() {
        let pods: Vec<Binding> = (0..10).map(|i| at(f64::from(i) * 10.0, 1, "n")).collect();
        let two = Duration::from_secs(2);
        let b = lower_bounds(&pods, &policy(60, 60), two, Some(1));
        assert!(b.iter().all(|d| *d == two), "{b:?}");
        // Two ENIs per pod at 60/min (burst 1): the second waits a second.
        let b = lower_bounds(&[at(0.0, 2, "n")], &policy(60, 60), two, None);
        assert_eq!(b, [Duration::from_secs(3)]);
    }

    #[test]
    fn attaches_on_one_node_queue_for_its_slots() {
        // Five pods on one node at once, 2 s per attach: one slot gives
        // 2, 4, 6, 8, 10 s; two slots 2, 2, 4, 4, 6 s; five or no bound all 2 s.
        let pods: Vec<Binding> = (0..5).map(|_| at(0.0, 1, "n")).collect();
        let two = Duration::from_secs(2);
        let secs = |per_node| -> Vec<u64> {
            lower_bounds(&pods, &policy(600, 600), two, per_node)
                .iter()
                .map(|d| d.as_secs_f64().round() as u64)
                .collect()
        };
        assert_eq!(secs(Some(1)), [2, 4, 6, 8, 10]);
        assert_eq!(secs(Some(2)), [2, 2, 4, 4, 6]);
        assert_eq!(secs(Some(5)), [2; 5]);
        assert_eq!(secs(None), [2; 5]);
        // Another node's pods do not queue behind these.
        let mut two_nodes = pods.clone();
        two_nodes.push(at(0.0, 1, "m"));
        let b = lower_bounds(&two_nodes, &policy(600, 600), two, Some(1));
        assert_eq!(b[5], two);
    }

    fn alibaba(settle_ms: u64) -> RouteCloud {
        RouteCloud {
            batch: 50,
            serialised: true,
            settle: Duration::from_millis(settle_ms),
        }
    }

    fn route_policy(per_minute: u32) -> CallPolicy {
        let mut p = CallPolicy::default();
        for api in [
            "CreateRouteEntry",
            "CreateRouteEntries",
            "DeleteRouteEntry",
            "DeleteRouteEntries",
        ] {
            p.per_api_per_minute.insert(api.into(), per_minute);
        }
        p
    }

    #[test]
    fn route_bound_of_a_serialised_table_is_one_settle_per_batch() {
        // 1,000 routes in 20 batches of 50; 5 calls/s is faster than the
        // 1 s each batch takes to settle, so settling sets the pace.
        let work = RouteWork {
            creates: 1000,
            deletes: 0,
        };
        let b = route_bound(work, alibaba(1000), &route_policy(300));
        assert!((b.as_secs_f64() - 20.0).abs() < 1e-9, "{b:?}");
        // With a slow limit (6/min: one call every 10 s) the limit paces it.
        let b = route_bound(work, alibaba(1000), &route_policy(6));
        assert!((b.as_secs_f64() - 191.0).abs() < 1e-9, "{b:?}");
        // Nothing to change: nothing to wait for.
        assert_eq!(
            route_bound(RouteWork::default(), alibaba(1000), &route_policy(300)),
            Duration::ZERO
        );
    }

    #[test]
    fn route_bound_without_serialisation_is_the_limit_alone() {
        // One route per call at 60/min (burst 1), active at once: 10 routes
        // go out one a second, the last at 9 s.
        let cloud = RouteCloud {
            batch: 1,
            serialised: false,
            settle: Duration::ZERO,
        };
        let work = RouteWork {
            creates: 10,
            deletes: 0,
        };
        let b = route_bound(work, cloud, &route_policy(60));
        assert!((b.as_secs_f64() - 9.0).abs() < 1e-9, "{b:?}");
        // Deletes share the serialised table with creates.
        let work = RouteWork {
            creates: 50,
            deletes: 1,
        };
        let b = route_bound(work, alibaba(1000), &route_policy(300));
        assert!((b.as_secs_f64() - 2.0).abs() < 1e-9, "{b:?}");
    }

    #[test]
    fn api_bounds_divide_calls_by_the_rate() {
        let calls = BTreeMap::from([
            ("CreateNetworkInterface".to_owned(), 300),
            ("DescribeNetworkInterfaces".to_owned(), 40),
            ("AttachNetworkInterface".to_owned(), 301),
        ]);
        let b = api_bounds(&calls, &policy(500, 500));
        assert_eq!(b.len(), 2, "only mutating ENI APIs");
        assert_eq!(b[0].api, "CreateNetworkInterface");
        assert!((b[0].seconds_at_limit - 36.0).abs() < 1e-9);
        assert_eq!(b[1].calls, 301);
    }
}
