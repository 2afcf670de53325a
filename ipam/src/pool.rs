//! The warm pool of secondary IPs on a node's shared ENIs, kept between two
//! watermarks: below `min_idle` free IPs (plus one for every pod waiting)
//! it grows (assigning IPs to the fullest ENIs first, then creating ENIs),
//! above `max_idle` spare IPs (free and cooling) it shrinks (releasing free
//! IPs from the emptiest ENIs first, and whole ENIs no pod uses, never
//! below `min_idle` free). In between it does nothing, which keeps pod
//! churn from flapping IPs. IPs a pod gave back and still cooling down are
//! never handed out or released before they have cooled (see
//! `ipam::ledger`), so they do not count as free.

use crate::ids::EniId;
use std::collections::BTreeSet;
use std::net::Ipv4Addr;

/// Watermarks and the per-call limit of the cloud.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PoolConfig {
    pub min_idle: u32,
    pub max_idle: u32,
    /// Most IPs one assign/unassign call may carry (10 on Alibaba).
    pub max_ips_per_call: u32,
}

/// A pool configuration that cannot work.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PoolConfigError {
    #[error("pool minIdle ({min_idle}) must not exceed maxIdle ({max_idle})")]
    MinAboveMax { min_idle: u32, max_idle: u32 },
    #[error("pool maxIpsPerCall must be at least 1")]
    ZeroPerCall,
}

impl PoolConfig {
    pub fn validate(&self) -> Result<(), PoolConfigError> {
        if self.min_idle > self.max_idle {
            return Err(PoolConfigError::MinAboveMax {
                min_idle: self.min_idle,
                max_idle: self.max_idle,
            });
        }
        if self.max_ips_per_call == 0 {
            return Err(PoolConfigError::ZeroPerCall);
        }
        Ok(())
    }
}

/// One shared ENI of the node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EniIps {
    pub id: EniId,
    /// Secondary IPs this ENI can hold in total.
    pub capacity: u32,
    /// IPs held by pods.
    pub used: Vec<Ipv4Addr>,
    /// IPs assigned to the ENI and free for the next pod.
    pub idle: Vec<Ipv4Addr>,
    /// IPs a pod gave back that may not be handed out or released yet.
    pub cooling: Vec<Ipv4Addr>,
}

/// A node's pool as observed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodePool {
    pub enis: Vec<EniIps>,
    /// How many more ENIs the node may attach.
    pub attachable_enis: u32,
    /// Secondary IPs a newly created ENI can hold.
    pub new_eni_capacity: u32,
    /// Pods bound to the node that wait for an IP.
    pub waiting: u32,
}

/// What to do to the node's pool.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PoolAction {
    Grow {
        /// One entry per assign call (an ENI may appear more than once).
        assign: Vec<(EniId, u32)>,
        /// IP count of each ENI to create.
        new_enis: Vec<u32>,
    },
    Shrink {
        /// One entry per unassign call; only idle IPs.
        release: Vec<(EniId, Vec<Ipv4Addr>)>,
        /// ENIs to detach and delete whole: no pod uses them and the rest
        /// of the pool covers `min_idle` and the waiting pods.
        delete_enis: Vec<EniId>,
    },
    Steady,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PoolPlan {
    pub action: PoolAction,
    /// How far below `min_idle` the pool stays after this plan because the
    /// ENIs are full and no more can be attached (0 when it reaches it).
    pub short_by: u32,
}

/// IPs of `eni` that are idle and not also reported as used or cooling (a
/// defensive filter: an address must never be released while a pod may
/// hold it).
fn truly_idle(eni: &EniIps) -> Vec<Ipv4Addr> {
    let held: BTreeSet<&Ipv4Addr> = eni.used.iter().chain(eni.cooling.iter()).collect();
    let idle: BTreeSet<Ipv4Addr> = eni
        .idle
        .iter()
        .filter(|ip| !held.contains(ip))
        .copied()
        .collect();
    idle.into_iter().collect()
}

fn occupied(eni: &EniIps) -> u32 {
    let all: BTreeSet<&Ipv4Addr> = eni
        .used
        .iter()
        .chain(eni.idle.iter())
        .chain(eni.cooling.iter())
        .collect();
    count(all.len())
}

fn count(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

fn cooling(eni: &EniIps) -> u32 {
    let used: BTreeSet<&Ipv4Addr> = eni.used.iter().collect();
    let c: BTreeSet<&Ipv4Addr> = eni.cooling.iter().filter(|ip| !used.contains(ip)).collect();
    count(c.len())
}

/// How many IPs the node lacks: below `min_idle` free IPs (plus one for
/// each waiting pod). Cooling IPs do not count: they cannot be handed out.
/// Sort nodes by it (largest first) so the hungriest node gets the next
/// cloud calls.
pub fn idle_deficit(cfg: &PoolConfig, node: &NodePool) -> u32 {
    let idle: u32 = node
        .enis
        .iter()
        .map(|e| count(truly_idle(e).len()))
        .fold(0u32, u32::saturating_add);
    cfg.min_idle
        .saturating_add(node.waiting)
        .saturating_sub(idle)
}

/// Plans the node's pool. `may_shrink` is false until the pool has been
/// above `max_idle` (or an ENI unused) for the release delay, so a burst of
/// deletions followed by creations costs no calls.
pub fn plan_pool(
    cfg: &PoolConfig,
    node: &NodePool,
    may_shrink: bool,
) -> Result<PoolPlan, PoolConfigError> {
    cfg.validate()?;
    let idle_by_eni: Vec<Vec<Ipv4Addr>> = node.enis.iter().map(truly_idle).collect();
    let idle: u32 = idle_by_eni
        .iter()
        .map(|v| count(v.len()))
        .fold(0u32, u32::saturating_add);
    let cooling_total = node
        .enis
        .iter()
        .map(cooling)
        .fold(0u32, u32::saturating_add);
    let spare = idle.saturating_add(cooling_total);

    let deficit = idle_deficit(cfg, node);
    if deficit > 0 {
        return Ok(grow(cfg, node, spare, deficit));
    }
    let keep = cfg.min_idle.saturating_add(node.waiting);
    if may_shrink {
        let excess = spare.saturating_sub(cfg.max_idle.saturating_add(node.waiting));
        let plan = shrink(cfg, node, &idle_by_eni, idle, keep, excess);
        if plan.action != PoolAction::Steady {
            return Ok(plan);
        }
    }
    Ok(PoolPlan {
        action: PoolAction::Steady,
        short_by: 0,
    })
}

fn grow(cfg: &PoolConfig, node: &NodePool, spare: u32, deficit: u32) -> PoolPlan {
    // Round up to one full call when there is room under max_idle: a call
    // costs the same for 1 IP or 10, and the rate limits count calls.
    let room = cfg
        .max_idle
        .saturating_add(node.waiting)
        .saturating_sub(spare);
    let want = deficit.max(cfg.max_ips_per_call.min(room));
    let mut remaining = want;

    let mut order: Vec<&EniIps> = node.enis.iter().collect();
    order.sort_by(|a, b| occupied(b).cmp(&occupied(a)).then_with(|| a.id.cmp(&b.id)));
    let mut assign = Vec::new();
    for eni in order {
        let mut take = remaining.min(eni.capacity.saturating_sub(occupied(eni)));
        remaining -= take;
        while take > 0 {
            let n = take.min(cfg.max_ips_per_call);
            assign.push((eni.id.clone(), n));
            take -= n;
        }
        if remaining == 0 {
            break;
        }
    }
    let mut new_enis = Vec::new();
    for _ in 0..node.attachable_enis {
        let n = remaining.min(node.new_eni_capacity);
        if n == 0 {
            break;
        }
        new_enis.push(n);
        remaining -= n;
    }
    let planned = want - remaining;
    let short_by = deficit.saturating_sub(planned);
    let action = if planned == 0 {
        PoolAction::Steady
    } else {
        PoolAction::Grow { assign, new_enis }
    };
    PoolPlan { action, short_by }
}

/// Whole ENIs go first (one detach and delete instead of unassign calls),
/// then single IPs down to `max_idle` spare IPs (cooling ones included),
/// never below `keep` free ones.
fn shrink(
    cfg: &PoolConfig,
    node: &NodePool,
    idle_by_eni: &[Vec<Ipv4Addr>],
    idle: u32,
    keep: u32,
    excess: u32,
) -> PoolPlan {
    let mut order: Vec<(&EniIps, &Vec<Ipv4Addr>)> = node.enis.iter().zip(idle_by_eni).collect();
    // Emptiest first: fewest pod IPs, then fewest IPs at all.
    order.sort_by(|(a, _), (b, _)| {
        (a.used.len(), occupied(a), &a.id).cmp(&(b.used.len(), occupied(b), &b.id))
    });
    let mut idle_left = idle;
    let mut excess_left = excess;
    let mut delete_enis = Vec::new();
    for (eni, idle) in &order {
        let unused = eni.used.is_empty() && cooling(eni) == 0;
        let n = count(idle.len());
        if unused && idle_left - n >= keep {
            delete_enis.push(eni.id.clone());
            idle_left -= n;
            excess_left = excess_left.saturating_sub(n);
        }
    }
    let per_call = cfg.max_ips_per_call as usize;
    let mut remaining = excess_left.min(idle_left.saturating_sub(keep)) as usize;
    let mut release = Vec::new();
    for (eni, idle) in order {
        if remaining == 0 {
            break;
        }
        if delete_enis.contains(&eni.id) {
            continue;
        }
        let take = remaining.min(idle.len());
        // Highest addresses go first; which ones does not matter to pods.
        let chosen: Vec<Ipv4Addr> = idle[idle.len() - take..].iter().rev().copied().collect();
        for chunk in chosen.chunks(per_call) {
            release.push((eni.id.clone(), chunk.to_vec()));
        }
        remaining -= take;
    }
    let action = if release.is_empty() && delete_enis.is_empty() {
        PoolAction::Steady
    } else {
        PoolAction::Shrink {
            release,
            delete_enis,
        }
    };
    PoolPlan {
        action,
        short_by: 0,
    }
}

/// Shared ENIs a node may still attach: within the pool's `max_shared`
/// slots and the instance's free slots. `shared` counts the node's shared
/// ENIs, those on their way in included; `others` every other ENI on the
/// instance (the primary, exclusive ENIs, foreign ones).
pub fn attachable_enis(max_shared: u32, shared: u32, max_enis: u32, others: u32) -> u32 {
    let free_slots = max_enis.saturating_sub(others).saturating_sub(shared);
    max_shared.saturating_sub(shared).min(free_slots)
}

/// The node's watermarks: `min_pool` free IPs, raised until the node has
/// once held `warm_up` IPs (free, used and cooling together) to what it
/// still lacks of them; `max_pool` never below that. Returns the config and
/// whether the warm-up is done.
pub fn watermarks(
    min_pool: u32,
    max_pool: u32,
    warm_up: u32,
    warmed: bool,
    held: u32,
    used: u32,
    max_ips_per_call: u32,
) -> (PoolConfig, bool) {
    let warmed = warmed || held >= warm_up;
    let min_idle = if warmed {
        min_pool
    } else {
        min_pool.max(warm_up.saturating_sub(used))
    };
    (
        PoolConfig {
            min_idle,
            max_idle: max_pool.max(min_idle),
            max_ips_per_call,
        },
        warmed,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    fn ip(n: u32) -> Ipv4Addr {
        Ipv4Addr::from(0x0a00_0000 + n)
    }

    fn eni(
        id: &str,
        capacity: u32,
        used: std::ops::Range<u32>,
        idle: std::ops::Range<u32>,
    ) -> EniIps {
        EniIps {
            id: EniId::new(id),
            capacity,
            used: used.map(ip).collect(),
            idle: idle.map(ip).collect(),
            cooling: vec![],
        }
    }

    const CFG: PoolConfig = PoolConfig {
        min_idle: 5,
        max_idle: 20,
        max_ips_per_call: 10,
    };

    #[test]
    fn invalid_config_is_refused() {
        let node = NodePool {
            enis: vec![],
            attachable_enis: 1,
            new_eni_capacity: 10,
            waiting: 0,
        };
        let bad = PoolConfig {
            min_idle: 9,
            max_idle: 3,
            max_ips_per_call: 10,
        };
        assert!(plan_pool(&bad, &node, true)
            .unwrap_err()
            .to_string()
            .contains("minIdle (9)"));
        let bad = PoolConfig {
            max_ips_per_call: 0,
            ..CFG
        };
        assert_eq!(
            plan_pool(&bad, &node, true),
            Err(PoolConfigError::ZeroPerCall)
        );
    }

    #[test]
    fn grows_fullest_eni_first_in_one_call_batch() {
        let node = NodePool {
            enis: vec![
                eni("eni-a", 15, 0..2, 2..3),
                eni("eni-b", 15, 100..110, 110..111),
            ],
            attachable_enis: 1,
            new_eni_capacity: 15,
            waiting: 0,
        };
        // idle 2 < 5: one full call of 10 (under max_idle 20), to eni-b first.
        let plan = plan_pool(&CFG, &node, true).unwrap();
        assert_eq!(plan.short_by, 0);
        assert_eq!(
            plan.action,
            PoolAction::Grow {
                assign: vec![(EniId::new("eni-b"), 4), (EniId::new("eni-a"), 6)],
                new_enis: vec![],
            }
        );
    }

    #[test]
    fn creates_an_eni_when_attached_ones_are_full_and_reports_shortfall() {
        let full = eni("eni-a", 4, 0..4, 4..4);
        let node = NodePool {
            enis: vec![full.clone()],
            attachable_enis: 1,
            new_eni_capacity: 10,
            waiting: 0,
        };
        let plan = plan_pool(&CFG, &node, true).unwrap();
        assert_eq!(
            plan.action,
            PoolAction::Grow {
                assign: vec![],
                new_enis: vec![10]
            }
        );
        assert_eq!(plan.short_by, 0);

        let node = NodePool {
            enis: vec![full.clone()],
            attachable_enis: 1,
            new_eni_capacity: 3,
            waiting: 0,
        };
        let plan = plan_pool(&CFG, &node, true).unwrap();
        assert_eq!(
            plan.action,
            PoolAction::Grow {
                assign: vec![],
                new_enis: vec![3]
            }
        );
        assert_eq!(plan.short_by, 2);

        let node = NodePool {
            enis: vec![full],
            attachable_enis: 0,
            new_eni_capacity: 10,
            waiting: 0,
        };
        let plan = plan_pool(&CFG, &node, true).unwrap();
        assert_eq!(
            plan,
            PoolPlan {
                action: PoolAction::Steady,
                short_by: 5
            }
        );
    }

    #[test]
    fn deficit_counts_only_truly_idle_ips() {
        let hungry = NodePool {
            enis: vec![eni("eni-a", 30, 0..3, 0..4)],
            attachable_enis: 0,
            new_eni_capacity: 0,
            waiting: 0,
        };
        let fed = NodePool {
            enis: vec![eni("eni-a", 30, 0..3, 3..13)],
            attachable_enis: 0,
            new_eni_capacity: 0,
            waiting: 0,
        };
        // 0..3 are used, so only IP 3 is idle: 5 - 1 = 4 short.
        assert_eq!(idle_deficit(&CFG, &hungry), 4);
        assert_eq!(idle_deficit(&CFG, &fed), 0);
    }

    #[test]
    fn steady_between_watermarks() {
        let node = NodePool {
            enis: vec![eni("eni-a", 30, 0..3, 3..13)],
            attachable_enis: 2,
            new_eni_capacity: 10,
            waiting: 0,
        };
        assert_eq!(
            plan_pool(&CFG, &node, true).unwrap(),
            PoolPlan {
                action: PoolAction::Steady,
                short_by: 0
            }
        );
    }

    #[test]
    fn shrinks_by_deleting_an_unused_eni_then_releasing_single_ips() {
        let node = NodePool {
            enis: vec![
                eni("eni-busy", 30, 0..5, 5..20),
                eni("eni-empty", 30, 0..0, 100..112),
            ],
            attachable_enis: 0,
            new_eni_capacity: 10,
            waiting: 0,
        };
        // 15 + 12 = 27 idle, min 5: the ENI with no pods goes whole (15 left).
        let plan = plan_pool(&CFG, &node, true).unwrap();
        assert_eq!(
            plan.action,
            PoolAction::Shrink {
                release: vec![],
                delete_enis: vec![EniId::new("eni-empty")],
            }
        );
        // Not before the release delay has passed.
        assert_eq!(
            plan_pool(&CFG, &node, false).unwrap().action,
            PoolAction::Steady
        );

        // With a pod on each ENI, single IPs go from the emptier one.
        let node = NodePool {
            enis: vec![
                eni("eni-busy", 30, 0..5, 5..20),
                eni("eni-light", 30, 100..101, 101..113),
            ],
            ..node
        };
        let plan = plan_pool(&CFG, &node, true).unwrap();
        let PoolAction::Shrink {
            release,
            delete_enis,
        } = plan.action
        else {
            panic!("{plan:?}")
        };
        assert!(delete_enis.is_empty());
        assert_eq!(release.len(), 1);
        assert_eq!(release[0].0, EniId::new("eni-light"));
        assert_eq!(release[0].1.len(), 7);
    }

    #[test]
    fn waiting_pods_grow_the_pool_even_while_ips_cool_down() {
        let mut e = eni("eni-a", 30, 0..3, 3..3);
        e.cooling = (3..13).map(ip).collect();
        let node = NodePool {
            enis: vec![e],
            attachable_enis: 0,
            new_eni_capacity: 0,
            waiting: 2,
        };
        // 10 cooling, but none can be handed out: min_idle 5 free plus the
        // two waiting pods, rounded up to a full call.
        assert_eq!(idle_deficit(&CFG, &node), 7);
        let plan = plan_pool(&CFG, &node, true).unwrap();
        assert_eq!(
            plan.action,
            PoolAction::Grow {
                assign: vec![(EniId::new("eni-a"), 10)],
                new_enis: vec![]
            }
        );
        // Cooling IPs are never released, however far above max_idle, and
        // min_idle free ones are kept beside them.
        let mut e = eni("eni-a", 60, 0..1, 1..1);
        e.cooling = (1..50).map(ip).collect();
        let node = NodePool {
            enis: vec![e],
            attachable_enis: 0,
            new_eni_capacity: 0,
            waiting: 0,
        };
        assert_eq!(
            plan_pool(&CFG, &node, true).unwrap().action,
            PoolAction::Grow {
                assign: vec![(EniId::new("eni-a"), 5)],
                new_enis: vec![]
            }
        );
        let mut e = eni("eni-a", 60, 0..1, 50..55);
        e.cooling = (1..50).map(ip).collect();
        let node = NodePool {
            enis: vec![e],
            ..node
        };
        assert_eq!(
            plan_pool(&CFG, &node, true).unwrap().action,
            PoolAction::Steady
        );
    }

    #[test]
    fn attachable_enis_keep_within_the_pool_and_the_instance() {
        // 4 ENIs, primary + one exclusive: 2 slots; the pool may use 2.
        assert_eq!(attachable_enis(2, 0, 4, 2), 2);
        assert_eq!(attachable_enis(2, 1, 4, 2), 1);
        // One more exclusive ENI took a slot.
        assert_eq!(attachable_enis(2, 1, 4, 3), 0);
        // maxEnis lowered below what is attached.
        assert_eq!(attachable_enis(1, 2, 8, 1), 0);
    }

    #[test]
    fn warm_up_raises_min_until_the_node_held_that_many_once() {
        let (c, warmed) = watermarks(2, 10, 8, false, 3, 1, 10);
        assert!(!warmed);
        assert_eq!((c.min_idle, c.max_idle), (7, 10));
        let (c, warmed) = watermarks(2, 10, 8, false, 8, 1, 10);
        assert!(warmed);
        assert_eq!(c.min_idle, 2);
        // Once warmed, it stays so however few IPs the node holds later.
        let (c, warmed) = watermarks(2, 10, 8, true, 0, 0, 10);
        assert!(warmed && c.min_idle == 2);
        // A warm-up above maxPoolSize (refused by the config) still plans.
        let (c, _) = watermarks(0, 4, 12, false, 0, 0, 10);
        assert_eq!((c.min_idle, c.max_idle), (12, 12));
    }

    #[test]
    fn never_releases_an_ip_also_reported_used() {
        // The observation lists 0..5 both as used and as idle.
        let e = eni("eni-a", 40, 0..5, 0..30);
        let node = NodePool {
            enis: vec![e],
            attachable_enis: 0,
            new_eni_capacity: 0,
            waiting: 0,
        };
        let plan = plan_pool(&CFG, &node, true).unwrap();
        let PoolAction::Shrink { release, .. } = plan.action else {
            panic!("{plan:?}")
        };
        let released: Vec<Ipv4Addr> = release.into_iter().flat_map(|(_, ips)| ips).collect();
        assert_eq!(released.len(), 5); // 25 truly idle - 20
        assert!(released.iter().all(|r| !(0..5).map(ip).any(|u| u == *r)));
    }

    fn arb_node() -> impl Strategy<Value = NodePool> {
        (
            proptest::collection::vec((0u32..20, 0u32..12, 0u32..12), 0..5),
            0u32..3,
            0u32..15,
        )
            .prop_map(|(enis, attachable_enis, new_eni_capacity)| {
                let mut next = 0u32;
                let enis = enis
                    .into_iter()
                    .enumerate()
                    .map(|(i, (cap, used, idle))| {
                        let e = eni(
                            &format!("eni-{i}"),
                            cap.max(used + idle),
                            next..next + used,
                            next + used..next + used + idle,
                        );
                        next += 100;
                        e
                    })
                    .collect();
                NodePool {
                    enis,
                    attachable_enis,
                    new_eni_capacity,
                    waiting: 0,
                }
            })
    }

    fn arb_cfg() -> impl Strategy<Value = PoolConfig> {
        (0u32..20, 0u32..20, 1u32..12).prop_map(|(a, b, per)| PoolConfig {
            min_idle: a.min(b),
            max_idle: a.max(b),
            max_ips_per_call: per,
        })
    }

    proptest! {
        #[test]
        fn grow_reaches_min_idle_within_limits(cfg in arb_cfg(), node in arb_node(), waiting in 0u32..4) {
            let node = NodePool { waiting, ..node };
            let idle: u32 = node.enis.iter().map(|e| e.idle.len() as u32).sum();
            let deficit = idle_deficit(&cfg, &node);
            let plan = plan_pool(&cfg, &node, true).unwrap();
            let (assign, new_enis) = match &plan.action {
                PoolAction::Grow { assign, new_enis } => (assign.clone(), new_enis.clone()),
                PoolAction::Steady => (vec![], vec![]),
                PoolAction::Shrink { .. } => {
                    prop_assert_eq!(deficit, 0);
                    return Ok(());
                }
            };
            let mut added: BTreeMap<EniId, u32> = BTreeMap::new();
            for (id, n) in &assign {
                prop_assert!(*n >= 1 && *n <= cfg.max_ips_per_call);
                *added.entry(id.clone()).or_default() += n;
            }
            for e in &node.enis {
                let a = added.get(&e.id).copied().unwrap_or(0);
                prop_assert!(e.used.len() as u32 + e.idle.len() as u32 + a <= e.capacity, "{} over capacity", e.id);
                // Fullest first: an ENI only gets IPs once every fuller one is full.
                if a > 0 {
                    for f in node.enis.iter().filter(|f| occupied(f) > occupied(e)) {
                        let fa = added.get(&f.id).copied().unwrap_or(0);
                        prop_assert_eq!(occupied(f) + fa, f.capacity, "{} filled before fuller {}", e.id, f.id);
                    }
                }
            }
            prop_assert!(new_enis.len() as u32 <= node.attachable_enis);
            prop_assert!(new_enis.iter().all(|n| *n >= 1 && *n <= node.new_eni_capacity));
            let planned = added.values().sum::<u32>() + new_enis.iter().sum::<u32>();
            let after = idle + planned;
            let room: u32 = node.enis.iter().map(|e| e.capacity - occupied(e)).sum::<u32>()
                + node.attachable_enis * node.new_eni_capacity;
            if idle <= cfg.max_idle + waiting {
                prop_assert!(after <= (cfg.max_idle + waiting).max(idle + deficit), "grew past max_idle");
            }
            if planned >= deficit {
                prop_assert_eq!(plan.short_by, 0);
            } else {
                prop_assert_eq!(plan.short_by, deficit - planned);
                // Short only when the limits are exhausted.
                prop_assert!(room < deficit, "short by {} with room {}", plan.short_by, room);
            }
        }

        #[test]
        fn shrink_stays_within_watermarks_and_keeps_used_ips(cfg in arb_cfg(), node in arb_node(), waiting in 0u32..4) {
            let node = NodePool { waiting, ..node };
            let idle: u32 = node.enis.iter().map(|e| e.idle.len() as u32).sum();
            let plan = plan_pool(&cfg, &node, true).unwrap();
            prop_assert_eq!(plan_pool(&cfg, &node, false).unwrap().action == PoolAction::Steady,
                !matches!(plan.action, PoolAction::Grow { .. }));
            let PoolAction::Shrink { release, delete_enis } = &plan.action else {
                return Ok(());
            };
            let mut released: BTreeMap<EniId, BTreeSet<Ipv4Addr>> = BTreeMap::new();
            for (id, ips) in release {
                prop_assert!(!delete_enis.contains(id), "{} released from and deleted", id);
                prop_assert!(!ips.is_empty() && ips.len() as u32 <= cfg.max_ips_per_call);
                let e = node.enis.iter().find(|e| &e.id == id).unwrap();
                for ip in ips {
                    prop_assert!(e.idle.contains(ip) && !e.used.contains(ip));
                    prop_assert!(released.entry(id.clone()).or_default().insert(*ip), "{} released twice", ip);
                }
            }
            let mut gone: u32 = released.values().map(|s| s.len() as u32).sum();
            for id in delete_enis {
                let e = node.enis.iter().find(|e| &e.id == id).unwrap();
                prop_assert!(e.used.is_empty() && e.cooling.is_empty(), "{} deleted with pods on it", id);
                gone += e.idle.len() as u32;
            }
            let left = idle - gone;
            prop_assert!(left >= cfg.min_idle + waiting, "shrunk below min_idle: {}", left);
            if !release.is_empty() {
                // Single IPs go only down to max_idle.
                prop_assert!(left >= cfg.max_idle + waiting);
            }
            if delete_enis.is_empty() {
                prop_assert_eq!(left, cfg.max_idle + waiting);
            }
            // Emptiest first: an ENI only loses single IPs once every ENI with
            // fewer pods gave all its idle IPs or went whole.
            for e in &node.enis {
                if released.contains_key(&e.id) {
                    for f in node.enis.iter().filter(|f| f.used.len() < e.used.len()) {
                        let gave = released.get(&f.id).map_or(0, BTreeSet::len);
                        prop_assert!(gave == f.idle.len() || delete_enis.contains(&f.id));
                    }
                }
            }
        }
    }
}
