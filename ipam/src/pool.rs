//! The warm pool of secondary IPs on a node's shared ENIs, kept between two
//! watermarks: below `min_idle` idle IPs it grows (assigning IPs to the
//! fullest ENIs first, then creating ENIs), above `max_idle` it shrinks
//! (releasing idle IPs from the emptiest ENIs first, so whole ENIs can go).
//! In between it does nothing, which keeps pod churn from flapping IPs.

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
}

/// A node's pool as observed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodePool {
    pub enis: Vec<EniIps>,
    /// How many more ENIs the node may attach.
    pub attachable_enis: u32,
    /// Secondary IPs a newly created ENI can hold.
    pub new_eni_capacity: u32,
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

/// IPs of `eni` that are idle and not also reported as used (a defensive
/// filter: an address must never be released while a pod may hold it).
fn truly_idle(eni: &EniIps) -> Vec<Ipv4Addr> {
    let used: BTreeSet<&Ipv4Addr> = eni.used.iter().collect();
    let idle: BTreeSet<Ipv4Addr> = eni
        .idle
        .iter()
        .filter(|ip| !used.contains(ip))
        .copied()
        .collect();
    idle.into_iter().collect()
}

fn occupied(eni: &EniIps) -> u32 {
    let used: BTreeSet<&Ipv4Addr> = eni.used.iter().chain(eni.idle.iter()).collect();
    u32::try_from(used.len()).unwrap_or(u32::MAX)
}

/// How many idle IPs the node lacks below `min_idle`: sort nodes by it
/// (largest first) so the hungriest node gets the next cloud calls.
pub fn idle_deficit(cfg: &PoolConfig, node: &NodePool) -> u32 {
    let idle = node
        .enis
        .iter()
        .map(|e| u32::try_from(truly_idle(e).len()).unwrap_or(u32::MAX))
        .fold(0u32, u32::saturating_add);
    cfg.min_idle.saturating_sub(idle)
}

/// Plans the node's pool.
pub fn plan_pool(cfg: &PoolConfig, node: &NodePool) -> Result<PoolPlan, PoolConfigError> {
    cfg.validate()?;
    let idle_by_eni: Vec<Vec<Ipv4Addr>> = node.enis.iter().map(truly_idle).collect();
    let idle: u32 = idle_by_eni
        .iter()
        .map(|v| u32::try_from(v.len()).unwrap_or(u32::MAX))
        .fold(0u32, u32::saturating_add);

    if idle < cfg.min_idle {
        return Ok(grow(cfg, node, idle));
    }
    if idle > cfg.max_idle {
        return Ok(shrink(cfg, node, &idle_by_eni, idle - cfg.max_idle));
    }
    Ok(PoolPlan {
        action: PoolAction::Steady,
        short_by: 0,
    })
}

fn grow(cfg: &PoolConfig, node: &NodePool, idle: u32) -> PoolPlan {
    let deficit = cfg.min_idle - idle;
    // Round up to one full call when there is room under max_idle: a call
    // costs the same for 1 IP or 10, and the rate limits count calls.
    let want = deficit.max(cfg.max_ips_per_call.min(cfg.max_idle - idle));
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
    let short_by = cfg.min_idle.saturating_sub(idle + planned);
    let action = if planned == 0 {
        PoolAction::Steady
    } else {
        PoolAction::Grow { assign, new_enis }
    };
    PoolPlan { action, short_by }
}

fn shrink(
    cfg: &PoolConfig,
    node: &NodePool,
    idle_by_eni: &[Vec<Ipv4Addr>],
    excess: u32,
) -> PoolPlan {
    let mut order: Vec<(&EniIps, &Vec<Ipv4Addr>)> = node.enis.iter().zip(idle_by_eni).collect();
    // Emptiest first: fewest pod IPs, then fewest IPs at all.
    order.sort_by(|(a, _), (b, _)| {
        (a.used.len(), occupied(a), &a.id).cmp(&(b.used.len(), occupied(b), &b.id))
    });
    let per_call = cfg.max_ips_per_call as usize;
    let mut remaining = excess as usize;
    let mut release = Vec::new();
    for (eni, idle) in order {
        if remaining == 0 {
            break;
        }
        let take = remaining.min(idle.len());
        // Highest addresses go first; which ones does not matter to pods.
        let chosen: Vec<Ipv4Addr> = idle[idle.len() - take..].iter().rev().copied().collect();
        for chunk in chosen.chunks(per_call) {
            release.push((eni.id.clone(), chunk.to_vec()));
        }
        remaining -= take;
    }
    PoolPlan {
        action: PoolAction::Shrink { release },
        short_by: 0,
    }
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
        };
        let bad = PoolConfig {
            min_idle: 9,
            max_idle: 3,
            max_ips_per_call: 10,
        };
        assert!(plan_pool(&bad, &node)
            .unwrap_err()
            .to_string()
            .contains("minIdle (9)"));
        let bad = PoolConfig {
            max_ips_per_call: 0,
            ..CFG
        };
        assert_eq!(plan_pool(&bad, &node), Err(PoolConfigError::ZeroPerCall));
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
        };
        // idle 2 < 5: one full call of 10 (under max_idle 20), to eni-b first.
        let plan = plan_pool(&CFG, &node).unwrap();
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
        };
        let plan = plan_pool(&CFG, &node).unwrap();
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
        };
        let plan = plan_pool(&CFG, &node).unwrap();
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
        };
        let plan = plan_pool(&CFG, &node).unwrap();
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
        };
        let fed = NodePool {
            enis: vec![eni("eni-a", 30, 0..3, 3..13)],
            attachable_enis: 0,
            new_eni_capacity: 0,
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
        };
        assert_eq!(
            plan_pool(&CFG, &node).unwrap(),
            PoolPlan {
                action: PoolAction::Steady,
                short_by: 0
            }
        );
    }

    #[test]
    fn shrinks_emptiest_eni_first_down_to_max_idle() {
        let node = NodePool {
            enis: vec![
                eni("eni-busy", 30, 0..5, 5..20),
                eni("eni-empty", 30, 0..0, 100..112),
            ],
            attachable_enis: 0,
            new_eni_capacity: 10,
        };
        // 15 + 12 = 27 idle, max 20: release 7, all from the ENI with no pods.
        let plan = plan_pool(&CFG, &node).unwrap();
        let PoolAction::Shrink { release } = plan.action else {
            panic!("{plan:?}")
        };
        assert_eq!(release.len(), 1);
        assert_eq!(release[0].0, EniId::new("eni-empty"));
        assert_eq!(release[0].1.len(), 7);
    }

    #[test]
    fn never_releases_an_ip_also_reported_used() {
        // The observation lists 0..5 both as used and as idle.
        let e = eni("eni-a", 40, 0..5, 0..30);
        let node = NodePool {
            enis: vec![e],
            attachable_enis: 0,
            new_eni_capacity: 0,
        };
        let plan = plan_pool(&CFG, &node).unwrap();
        let PoolAction::Shrink { release } = plan.action else {
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
        fn grow_reaches_min_idle_within_limits(cfg in arb_cfg(), node in arb_node()) {
            let idle: u32 = node.enis.iter().map(|e| e.idle.len() as u32).sum();
            let plan = plan_pool(&cfg, &node).unwrap();
            let (assign, new_enis) = match &plan.action {
                PoolAction::Grow { assign, new_enis } => (assign.clone(), new_enis.clone()),
                PoolAction::Steady => (vec![], vec![]),
                PoolAction::Shrink { .. } => {
                    prop_assert!(idle > cfg.max_idle);
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
            let after = idle + added.values().sum::<u32>() + new_enis.iter().sum::<u32>();
            let room: u32 = node.enis.iter().map(|e| e.capacity - occupied(e)).sum::<u32>()
                + node.attachable_enis * node.new_eni_capacity;
            if idle <= cfg.max_idle {
                prop_assert!(after <= cfg.max_idle.max(idle));
            }
            if after >= cfg.min_idle {
                prop_assert_eq!(plan.short_by, 0);
            } else {
                prop_assert_eq!(plan.short_by, cfg.min_idle - after);
                // Short only when the limits are exhausted.
                prop_assert!(room < cfg.min_idle - idle, "short by {} with room {}", plan.short_by, room);
            }
        }

        #[test]
        fn shrink_lands_on_max_idle_and_keeps_used_ips(cfg in arb_cfg(), node in arb_node()) {
            let idle: u32 = node.enis.iter().map(|e| e.idle.len() as u32).sum();
            let plan = plan_pool(&cfg, &node).unwrap();
            let PoolAction::Shrink { release } = &plan.action else {
                prop_assert!(idle <= cfg.max_idle);
                return Ok(());
            };
            let mut released: BTreeMap<EniId, BTreeSet<Ipv4Addr>> = BTreeMap::new();
            for (id, ips) in release {
                prop_assert!(!ips.is_empty() && ips.len() as u32 <= cfg.max_ips_per_call);
                let e = node.enis.iter().find(|e| &e.id == id).unwrap();
                for ip in ips {
                    prop_assert!(e.idle.contains(ip) && !e.used.contains(ip));
                    prop_assert!(released.entry(id.clone()).or_default().insert(*ip), "{} released twice", ip);
                }
            }
            let total: u32 = released.values().map(|s| s.len() as u32).sum();
            prop_assert_eq!(idle - total, cfg.max_idle);
            prop_assert!(idle - total >= cfg.min_idle);
            // Emptiest first: an ENI only loses IPs once every ENI with fewer pods gave all its idle IPs.
            for e in &node.enis {
                if released.contains_key(&e.id) {
                    for f in node.enis.iter().filter(|f| f.used.len() < e.used.len()) {
                        let gave = released.get(&f.id).map_or(0, BTreeSet::len);
                        prop_assert_eq!(gave, f.idle.len());
                    }
                }
            }
        }
    }
}
