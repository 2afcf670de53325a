//! Which subnet (vSwitch) a new ENI or IP comes from, and, when none fits,
//! a "why not" that names every candidate and its reason.

use crate::ids::{SubnetId, ZoneId};
use ipnet::Ipv4Net;
use std::collections::{BTreeMap, HashSet};
use std::fmt;

/// The config key users set subnets under, quoted in errors.
pub const SUBNETS_CONFIG_KEY: &str = "eni.subnets";

/// A subnet as the cloud reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SubnetView {
    pub id: SubnetId,
    pub zone: ZoneId,
    pub cidr: Ipv4Net,
    pub free_ips: u32,
}

/// Why one configured subnet was not chosen.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Unusable {
    NotFound,
    OtherZone { zone: ZoneId },
    TooFewFree { free: u32, need: u32 },
    CoolingDown,
}

impl fmt::Display for Unusable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Unusable::NotFound => f.write_str("not found in the cloud"),
            Unusable::OtherZone { zone } => write!(f, "is in zone {zone}"),
            Unusable::TooFewFree { free, need } => write!(f, "only {free} free, need {need}"),
            Unusable::CoolingDown => f.write_str("cooling down after running out of IPs"),
        }
    }
}

/// No configured subnet of the zone can serve the request.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum NoSubnet {
    #[error("no subnet is configured for zone {zone} in {key} (configured zones: {zones})", key = SUBNETS_CONFIG_KEY, zones = list_or_none(configured_zones))]
    ZoneNotConfigured {
        zone: ZoneId,
        configured_zones: Vec<ZoneId>,
    },
    #[error("no subnet of zone {zone} can provide {need} IP(s): {reasons}", reasons = reasons(candidates))]
    NoneUsable {
        zone: ZoneId,
        need: u32,
        candidates: Vec<(SubnetId, Unusable)>,
    },
}

fn list_or_none(zones: &[ZoneId]) -> String {
    if zones.is_empty() {
        "none".to_owned()
    } else {
        zones
            .iter()
            .map(ZoneId::as_str)
            .collect::<Vec<_>>()
            .join(", ")
    }
}

fn reasons(candidates: &[(SubnetId, Unusable)]) -> String {
    candidates
        .iter()
        .map(|(id, why)| format!("{id} {why}"))
        .collect::<Vec<_>>()
        .join("; ")
}

/// Whether ENIs can be made in `zone` at all: at least one subnet is
/// configured for it. A node in a zone that is not served advertises no ENI
/// capacity, so pods go to nodes that can serve them.
pub fn zone_configured(zone: &ZoneId, configured: &BTreeMap<ZoneId, Vec<SubnetId>>) -> bool {
    configured.get(zone).is_some_and(|ids| !ids.is_empty())
}

/// Free addresses a new ENI in `zone` could get: the sum over the zone's
/// configured subnets that the cloud reported in that zone and that are not
/// cooling down after running out (each subnet once, however often listed).
pub fn zone_free_ips(
    zone: &ZoneId,
    configured: &BTreeMap<ZoneId, Vec<SubnetId>>,
    observed: &[SubnetView],
    cooling_down: &HashSet<SubnetId>,
) -> u32 {
    let mut seen: HashSet<&SubnetId> = HashSet::new();
    configured
        .get(zone)
        .into_iter()
        .flatten()
        .filter(|id| seen.insert(id) && !cooling_down.contains(*id))
        .filter_map(|id| observed.iter().find(|s| &s.id == id && &s.zone == zone))
        .fold(0u32, |sum, s| sum.saturating_add(s.free_ips))
}

/// Picks, among the subnets configured for `zone`, the one with the most
/// free IPs that can hold `need` (ties: lowest id). Spreading by most-free
/// keeps small subnets from running dry first.
pub fn choose_subnet(
    zone: &ZoneId,
    configured: &BTreeMap<ZoneId, Vec<SubnetId>>,
    observed: &[SubnetView],
    need: u32,
    cooling_down: &HashSet<SubnetId>,
) -> Result<SubnetId, NoSubnet> {
    let candidates = match configured.get(zone) {
        Some(list) if !list.is_empty() => list,
        _ => {
            return Err(NoSubnet::ZoneNotConfigured {
                zone: zone.clone(),
                configured_zones: configured
                    .iter()
                    .filter(|(_, v)| !v.is_empty())
                    .map(|(z, _)| z.clone())
                    .collect(),
            })
        }
    };
    let mut best: Option<&SubnetView> = None;
    let mut rejected = Vec::new();
    let mut seen: HashSet<&SubnetId> = HashSet::new();
    for id in candidates {
        if !seen.insert(id) {
            continue;
        }
        let verdict = match observed.iter().find(|s| &s.id == id) {
            None => Err(Unusable::NotFound),
            Some(s) if &s.zone != zone => Err(Unusable::OtherZone {
                zone: s.zone.clone(),
            }),
            Some(_) if cooling_down.contains(id) => Err(Unusable::CoolingDown),
            Some(s) if s.free_ips < need => Err(Unusable::TooFewFree {
                free: s.free_ips,
                need,
            }),
            Some(s) => Ok(s),
        };
        match verdict {
            Ok(s) => {
                let better = best.is_none_or(|b| {
                    s.free_ips > b.free_ips || (s.free_ips == b.free_ips && s.id < b.id)
                });
                if better {
                    best = Some(s);
                }
            }
            Err(why) => rejected.push((id.clone(), why)),
        }
    }
    best.map(|s| s.id.clone())
        .ok_or_else(|| NoSubnet::NoneUsable {
            zone: zone.clone(),
            need,
            candidates: rejected,
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn view(id: &str, zone: &str, free: u32) -> SubnetView {
        SubnetView {
            id: SubnetId::new(id),
            zone: ZoneId::new(zone),
            cidr: "10.0.0.0/24".parse().unwrap(),
            free_ips: free,
        }
    }

    fn config(entries: &[(&str, &[&str])]) -> BTreeMap<ZoneId, Vec<SubnetId>> {
        entries
            .iter()
            .map(|(z, ids)| {
                (
                    ZoneId::new(*z),
                    ids.iter().map(|i| SubnetId::new(*i)).collect(),
                )
            })
            .collect()
    }

    #[test]
    fn a_zone_is_served_only_with_a_subnet_listed() {
        let c = config(&[("h", &["vsw-1"]), ("i", &[])]);
        assert!(zone_configured(&ZoneId::new("h"), &c));
        assert!(!zone_configured(&ZoneId::new("i"), &c));
        assert!(!zone_configured(&ZoneId::new("k"), &c));
    }

    #[test]
    fn a_zones_free_addresses_count_its_usable_subnets_once() {
        let cfg = config(&[
            (
                "z1",
                &["vsw-a", "vsw-b", "vsw-a", "vsw-far", "vsw-gone", "vsw-cool"],
            ),
            ("z2", &["vsw-c"]),
        ]);
        let obs = [
            view("vsw-a", "z1", 5),
            view("vsw-b", "z1", 3),
            // Listed for z1 but the cloud has it in z2: no ENI of z1 gets it.
            view("vsw-far", "z2", 100),
            view("vsw-cool", "z1", 7),
            view("vsw-c", "z2", 9),
        ];
        let cooling: HashSet<SubnetId> = [SubnetId::new("vsw-cool")].into();
        assert_eq!(zone_free_ips(&ZoneId::new("z1"), &cfg, &obs, &cooling), 8);
        assert_eq!(
            zone_free_ips(&ZoneId::new("z1"), &cfg, &obs, &HashSet::new()),
            15
        );
        assert_eq!(zone_free_ips(&ZoneId::new("z2"), &cfg, &obs, &cooling), 9);
        assert_eq!(zone_free_ips(&ZoneId::new("z3"), &cfg, &obs, &cooling), 0);
    }

    #[test]
    fn zone_free_ips_is_zero_exactly_when_no_subnet_can_serve_one_address() {
        let cfg = config(&[("z1", &["vsw-a", "vsw-b"])]);
        for (a, b) in [(0, 0), (0, 1), (2, 0), (4, 4)] {
            let obs = [view("vsw-a", "z1", a), view("vsw-b", "z1", b)];
            let free = zone_free_ips(&ZoneId::new("z1"), &cfg, &obs, &HashSet::new());
            let choosable =
                choose_subnet(&ZoneId::new("z1"), &cfg, &obs, 1, &HashSet::new()).is_ok();
            assert_eq!(free > 0, choosable, "{a} {b}");
        }
    }

    #[test]
    fn picks_most_free_then_lowest_id() {
        let cfg = config(&[("z1", &["vsw-b", "vsw-a", "vsw-c"])]);
        let obs = [
            view("vsw-a", "z1", 50),
            view("vsw-b", "z1", 50),
            view("vsw-c", "z1", 10),
        ];
        let got = choose_subnet(&ZoneId::new("z1"), &cfg, &obs, 1, &HashSet::new()).unwrap();
        assert_eq!(got, SubnetId::new("vsw-a"));
        let cooling: HashSet<SubnetId> = [SubnetId::new("vsw-a")].into();
        let got = choose_subnet(&ZoneId::new("z1"), &cfg, &obs, 1, &cooling).unwrap();
        assert_eq!(got, SubnetId::new("vsw-b"));
    }

    #[test]
    fn unconfigured_zone_names_the_configured_ones_and_the_key() {
        let cfg = config(&[("cn-hangzhou-i", &["vsw-a"]), ("cn-hangzhou-j", &["vsw-b"])]);
        let err = choose_subnet(&ZoneId::new("cn-hangzhou-h"), &cfg, &[], 1, &HashSet::new())
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "no subnet is configured for zone cn-hangzhou-h in eni.subnets (configured zones: cn-hangzhou-i, cn-hangzhou-j)"
        );
    }

    #[test]
    fn explains_every_candidate() {
        let cfg = config(&[("z1", &["vsw-gone", "vsw-far", "vsw-full", "vsw-cool"])]);
        let obs = [
            view("vsw-far", "z2", 100),
            view("vsw-full", "z1", 0),
            view("vsw-cool", "z1", 100),
        ];
        let cooling: HashSet<SubnetId> = [SubnetId::new("vsw-cool")].into();
        let err = choose_subnet(&ZoneId::new("z1"), &cfg, &obs, 1, &cooling).unwrap_err();
        assert_eq!(
            err.to_string(),
            "no subnet of zone z1 can provide 1 IP(s): vsw-gone not found in the cloud; vsw-far is in zone z2; vsw-full only 0 free, need 1; vsw-cool cooling down after running out of IPs"
        );
    }

    proptest! {
        #[test]
        fn choice_is_configured_and_big_enough(
            cfg_ids in proptest::collection::vec(0u8..8, 0..6),
            obs in proptest::collection::btree_map(0u8..8, (0u8..3, 0u32..20), 0..8),
            need in 0u32..20,
            cooling in proptest::collection::hash_set(0u8..8, 0..4),
        ) {
            let zone = ZoneId::new("z0");
            let mut cfg = BTreeMap::new();
            cfg.insert(zone.clone(), cfg_ids.iter().map(|i| SubnetId::new(format!("s{i}"))).collect::<Vec<_>>());
            let observed: Vec<SubnetView> = obs
                .iter()
                .map(|(i, (z, free))| view(&format!("s{i}"), &format!("z{z}"), *free))
                .collect();
            let cooling: HashSet<SubnetId> = cooling.iter().map(|i| SubnetId::new(format!("s{i}"))).collect();
            let qualifies = |id: &SubnetId| {
                observed.iter().any(|s| &s.id == id && s.zone == zone && s.free_ips >= need)
                    && !cooling.contains(id)
            };
            match choose_subnet(&zone, &cfg, &observed, need, &cooling) {
                Ok(id) => {
                    prop_assert!(cfg[&zone].contains(&id));
                    prop_assert!(qualifies(&id));
                    let free = observed.iter().find(|s| s.id == id).unwrap().free_ips;
                    for other in cfg[&zone].iter().filter(|o| qualifies(o)) {
                        let f = observed.iter().find(|s| &s.id == other).unwrap().free_ips;
                        prop_assert!(f <= free);
                    }
                }
                Err(e) => {
                    prop_assert!(!cfg[&zone].iter().any(qualifies), "refused although one qualifies: {e}");
                }
            }
        }
    }
}
