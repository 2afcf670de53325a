//! The books of one node's shared-ENI pool: which secondary IP of which
//! shared ENI is free, held by which pod, or cooling down after its pod
//! went. The controller keeps one ledger per node in memory and rebuilds it
//! from the cloud (ENIs and their IPs) and the pods' annotations after a
//! restart; every hand-out and return goes through here, so the rules that
//! matter to pods hold in one place:
//!
//! - one IP is never held by two pods ([`Ledger::take`], [`Ledger::claim`]);
//! - an IP a pod gave back is not handed out, nor released to the cloud,
//!   before its cool-down has passed ([`Ledger::release`], [`Ledger::tick`]);
//! - an IP the cloud shows that nobody claims is treated as cooling, since a
//!   pod may have held it a moment ago ([`Ledger::sync_eni`]).
//!
//! Time is the caller's monotonic clock, passed in: no clock is read here.

use crate::ids::EniId;
use crate::pool::{EniIps, NodePool};
use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

/// What one secondary IP is doing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IpState {
    /// Assigned to the ENI and free for the next pod.
    Free,
    /// Held by the pod with this uid.
    Used(String),
    /// Given back (or found unclaimed); free again at this instant.
    Cooling(Instant),
}

/// One shared ENI in the books.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LedgerEni {
    /// Secondary IPs the ENI can hold (the instance type's IPs per ENI,
    /// less the primary).
    pub capacity: u32,
    pub ips: BTreeMap<Ipv4Addr, IpState>,
    /// IPs in the books that the last cloud listing did not show: dropped
    /// when the next listing does not show them either (listings lag).
    missing: BTreeSet<Ipv4Addr>,
}

/// Why a pod's recorded IP was not taken into the books.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ClaimError {
    #[error("IP {ip} is not on shared ENI {eni} of this node")]
    NotOnEni { eni: EniId, ip: Ipv4Addr },
    #[error("IP {ip} is already held by pod {holder}")]
    HeldByOther { ip: Ipv4Addr, holder: String },
    #[error("the pod already holds IP {held}")]
    HoldsAnother { held: Ipv4Addr },
}

/// The books of one node.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Ledger {
    enis: BTreeMap<EniId, LedgerEni>,
}

impl Ledger {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn eni(&self, id: &EniId) -> Option<&LedgerEni> {
        self.enis.get(id)
    }

    /// An ENI this controller just created or attached, with the IPs it
    /// assigned: those are free at once.
    pub fn add_eni(&mut self, id: EniId, capacity: u32, ips: &[Ipv4Addr]) {
        let e = self.enis.entry(id).or_insert_with(|| LedgerEni {
            capacity,
            ips: BTreeMap::new(),
            missing: BTreeSet::new(),
        });
        e.capacity = capacity;
        for ip in ips {
            e.ips.entry(*ip).or_insert(IpState::Free);
        }
    }

    /// IPs this controller just assigned to `eni`: free at once.
    pub fn add_ips(&mut self, eni: &EniId, ips: &[Ipv4Addr]) {
        if let Some(e) = self.enis.get_mut(eni) {
            for ip in ips {
                e.ips.entry(*ip).or_insert(IpState::Free);
                e.missing.remove(ip);
            }
        }
    }

    /// Bring one ENI in line with what the cloud lists for it. An IP the
    /// cloud shows that the books lack is cooling until `now + cooldown`
    /// (someone may have held it); an IP the books hold that two listings
    /// in a row lack is dropped, and the uids of pods that held such IPs
    /// are returned (their allocation is broken and must be made again).
    pub fn sync_eni(
        &mut self,
        id: &EniId,
        capacity: u32,
        cloud_ips: &[Ipv4Addr],
        now: Instant,
        cooldown: Duration,
    ) -> Vec<String> {
        let e = self.enis.entry(id.clone()).or_insert_with(|| LedgerEni {
            capacity,
            ips: BTreeMap::new(),
            missing: BTreeSet::new(),
        });
        e.capacity = capacity;
        let listed: BTreeSet<Ipv4Addr> = cloud_ips.iter().copied().collect();
        for ip in &listed {
            e.ips
                .entry(*ip)
                .or_insert_with(|| IpState::Cooling(now + cooldown));
            e.missing.remove(ip);
        }
        let mut lost = Vec::new();
        let absent: Vec<Ipv4Addr> = e
            .ips
            .keys()
            .filter(|ip| !listed.contains(ip))
            .copied()
            .collect();
        for ip in absent {
            if e.missing.insert(ip) {
                continue;
            }
            e.missing.remove(&ip);
            if let Some(IpState::Used(uid)) = e.ips.remove(&ip) {
                lost.push(uid);
            }
        }
        lost
    }

    /// Drop ENIs the cloud no longer lists for this node (detached or
    /// deleted). Returns the uids of pods that held IPs on them.
    pub fn retain_enis(&mut self, listed: &BTreeSet<EniId>) -> Vec<String> {
        let mut lost = Vec::new();
        self.enis.retain(|id, e| {
            let keep = listed.contains(id);
            if !keep {
                lost.extend(e.ips.values().filter_map(|s| match s {
                    IpState::Used(uid) => Some(uid.clone()),
                    _ => None,
                }));
            }
            keep
        });
        lost
    }

    /// Take a pod's recorded IP into the books (rebuilding after a restart,
    /// or a pod this replica has not seen yet). Claiming again for the same
    /// pod is a no-op.
    pub fn claim(&mut self, uid: &str, eni: &EniId, ip: Ipv4Addr) -> Result<(), ClaimError> {
        let not_on = || ClaimError::NotOnEni {
            eni: eni.clone(),
            ip,
        };
        if let Some((_, held)) = self.held_by(uid).filter(|(_, held)| *held != ip) {
            return Err(ClaimError::HoldsAnother { held });
        }
        let e = self.enis.get_mut(eni).ok_or_else(not_on)?;
        let state = e.ips.get_mut(&ip).ok_or_else(not_on)?;
        match state {
            IpState::Used(holder) if holder == uid => Ok(()),
            IpState::Used(holder) => Err(ClaimError::HeldByOther {
                ip,
                holder: holder.clone(),
            }),
            _ => {
                *state = IpState::Used(uid.to_owned());
                Ok(())
            }
        }
    }

    /// The IP the pod holds, if any.
    pub fn held_by(&self, uid: &str) -> Option<(EniId, Ipv4Addr)> {
        self.enis.iter().find_map(|(id, e)| {
            e.ips.iter().find_map(|(ip, s)| match s {
                IpState::Used(u) if u == uid => Some((id.clone(), *ip)),
                _ => None,
            })
        })
    }

    /// Hand a free IP to the pod: the one it already holds, else a free IP
    /// of the fullest ENI (packing pods keeps other
    /// ENIs emptier, so they can go whole), lowest address first. `None`
    /// when nothing is free.
    pub fn take(&mut self, uid: &str) -> Option<(EniId, Ipv4Addr)> {
        if let Some(held) = self.held_by(uid) {
            return Some(held);
        }
        let (id, ip) = self
            .enis
            .iter()
            .filter_map(|(id, e)| {
                let used = e
                    .ips
                    .values()
                    .filter(|s| matches!(s, IpState::Used(_)))
                    .count();
                let free = e.ips.iter().find(|(_, s)| **s == IpState::Free)?;
                Some((used, id, *free.0))
            })
            .max_by(|a, b| a.0.cmp(&b.0).then_with(|| b.1.cmp(a.1)))
            .map(|(_, id, ip)| (id.clone(), ip))?;
        if let Some(e) = self.enis.get_mut(&id) {
            e.ips.insert(ip, IpState::Used(uid.to_owned()));
        }
        Some((id, ip))
    }

    /// The pod is gone: its IP cools down until `now + cooldown`.
    pub fn release(&mut self, uid: &str, now: Instant, cooldown: Duration) -> Option<Ipv4Addr> {
        let (eni, ip) = self.held_by(uid)?;
        if let Some(e) = self.enis.get_mut(&eni) {
            e.ips.insert(ip, IpState::Cooling(now + cooldown));
        }
        Some(ip)
    }

    /// Give back an IP handed out by [`Ledger::take`] whose recording
    /// failed before any pod could use it: free again at once.
    pub fn undo_take(&mut self, uid: &str) {
        if let Some((eni, ip)) = self.held_by(uid) {
            if let Some(e) = self.enis.get_mut(&eni) {
                e.ips.insert(ip, IpState::Free);
            }
        }
    }

    /// Every pod holding an IP whose uid is not in `live` gave it back:
    /// cooling from `now`.
    pub fn release_all_but(&mut self, live: &BTreeSet<String>, now: Instant, cooldown: Duration) {
        for e in self.enis.values_mut() {
            for s in e.ips.values_mut() {
                if matches!(s, IpState::Used(uid) if !live.contains(uid)) {
                    *s = IpState::Cooling(now + cooldown);
                }
            }
        }
    }

    /// IPs whose cool-down has passed become free.
    pub fn tick(&mut self, now: Instant) {
        for e in self.enis.values_mut() {
            for s in e.ips.values_mut() {
                if matches!(s, IpState::Cooling(until) if *until <= now) {
                    *s = IpState::Free;
                }
            }
        }
    }

    /// Remove IPs before they are unassigned in the cloud; only free ones
    /// are removed, and those are returned (the ones to unassign).
    pub fn remove_free(&mut self, eni: &EniId, ips: &[Ipv4Addr]) -> Vec<Ipv4Addr> {
        let Some(e) = self.enis.get_mut(eni) else {
            return Vec::new();
        };
        ips.iter()
            .filter(|ip| e.ips.get(ip) == Some(&IpState::Free))
            .copied()
            .collect::<Vec<_>>()
            .into_iter()
            .inspect(|ip| {
                e.ips.remove(ip);
            })
            .collect()
    }

    /// Take an ENI out of the books to detach it, when no pod holds or
    /// recently held one of its IPs; false (and nothing changed) otherwise.
    pub fn drain(&mut self, eni: &EniId) -> bool {
        let Some(e) = self.enis.get(eni) else {
            return true;
        };
        if e.ips.values().all(|s| *s == IpState::Free) {
            self.enis.remove(eni);
            true
        } else {
            false
        }
    }

    /// Forget a deleted ENI.
    pub fn remove_eni(&mut self, eni: &EniId) {
        self.enis.remove(eni);
    }

    /// The pool as `ipam::pool` plans it.
    pub fn view(&self, attachable_enis: u32, new_eni_capacity: u32, waiting: u32) -> NodePool {
        let enis = self
            .enis
            .iter()
            .map(|(id, e)| {
                let mut v = EniIps {
                    id: id.clone(),
                    capacity: e.capacity,
                    used: Vec::new(),
                    idle: Vec::new(),
                    cooling: Vec::new(),
                };
                for (ip, s) in &e.ips {
                    match s {
                        IpState::Free => v.idle.push(*ip),
                        IpState::Used(_) => v.used.push(*ip),
                        IpState::Cooling(_) => v.cooling.push(*ip),
                    }
                }
                v
            })
            .collect();
        NodePool {
            enis,
            attachable_enis,
            new_eni_capacity,
            waiting,
        }
    }

    /// (free, used, cooling) IP counts.
    pub fn counts(&self) -> (u32, u32, u32) {
        let (mut f, mut u, mut c) = (0u32, 0u32, 0u32);
        for s in self.enis.values().flat_map(|e| e.ips.values()) {
            match s {
                IpState::Free => f += 1,
                IpState::Used(_) => u += 1,
                IpState::Cooling(_) => c += 1,
            }
        }
        (f, u, c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ip(n: u8) -> Ipv4Addr {
        Ipv4Addr::new(10, 0, 0, n)
    }

    const COOL: Duration = Duration::from_secs(30);

    #[test]
    fn a_returned_ip_is_not_handed_out_before_its_cool_down() {
        let t0 = Instant::now();
        let mut l = Ledger::new();
        l.add_eni(EniId::new("eni-a"), 10, &[ip(1)]);
        assert_eq!(l.take("pod-1"), Some((EniId::new("eni-a"), ip(1))));
        assert_eq!(
            l.take("pod-1"),
            Some((EniId::new("eni-a"), ip(1))),
            "idempotent"
        );
        assert_eq!(l.take("pod-2"), None);
        l.release("pod-1", t0, COOL);
        l.tick(t0 + COOL - Duration::from_millis(1));
        assert_eq!(l.take("pod-2"), None, "still cooling");
        l.tick(t0 + COOL);
        assert_eq!(l.take("pod-2"), Some((EniId::new("eni-a"), ip(1))));
    }

    #[test]
    fn unclaimed_ips_found_in_the_cloud_cool_down_and_missing_ones_go_after_two_listings() {
        let t0 = Instant::now();
        let eni = EniId::new("eni-a");
        let mut l = Ledger::new();
        assert!(l.sync_eni(&eni, 10, &[ip(1), ip(2)], t0, COOL).is_empty());
        assert_eq!(l.counts(), (0, 0, 2));
        // A pod's annotation names ip(1): claimed despite the cooling.
        l.claim("pod-1", &eni, ip(1)).unwrap();
        assert_eq!(
            l.claim("pod-2", &eni, ip(1)),
            Err(ClaimError::HeldByOther {
                ip: ip(1),
                holder: "pod-1".into()
            })
        );
        assert!(matches!(
            l.claim("pod-2", &eni, ip(9)),
            Err(ClaimError::NotOnEni { .. })
        ));
        assert_eq!(
            l.claim("pod-1", &eni, ip(2)),
            Err(ClaimError::HoldsAnother { held: ip(1) })
        );
        // One listing without ip(1) is a lag; the second one is the truth.
        assert!(l.sync_eni(&eni, 10, &[ip(2)], t0, COOL).is_empty());
        assert_eq!(l.held_by("pod-1"), Some((eni.clone(), ip(1))));
        assert_eq!(
            l.sync_eni(&eni, 10, &[ip(2)], t0, COOL),
            vec!["pod-1".to_owned()]
        );
        assert_eq!(l.held_by("pod-1"), None);
    }

    #[test]
    fn only_free_ips_are_removed_and_only_an_eni_nobody_holds_is_drained() {
        let t0 = Instant::now();
        let a = EniId::new("eni-a");
        let mut l = Ledger::new();
        l.add_eni(a.clone(), 10, &[ip(1), ip(2), ip(3)]);
        l.take("pod-1");
        assert_eq!(l.remove_free(&a, &[ip(1), ip(2)]), vec![ip(2)]);
        assert!(!l.drain(&a));
        assert_eq!(l.held_by("pod-1").map(|h| h.0), Some(a.clone()));
        l.release("pod-1", t0, COOL);
        assert!(!l.drain(&a), "a cooling IP keeps the ENI");
        l.tick(t0 + COOL);
        assert!(l.drain(&a));
        assert!(l.eni(&a).is_none());
        assert_eq!(l.take("pod-2"), None);
    }

    #[test]
    fn pods_pack_onto_the_fullest_eni() {
        let mut l = Ledger::new();
        l.add_eni(EniId::new("eni-a"), 10, &[ip(1), ip(2)]);
        l.add_eni(EniId::new("eni-b"), 10, &[ip(11), ip(12), ip(13)]);
        l.take("p1");
        let first = l.held_by("p1").unwrap().0;
        l.take("p2");
        assert_eq!(l.held_by("p2").unwrap().0, first);
    }

    #[derive(Clone, Debug)]
    enum Op {
        Take(u8),
        Release(u8),
        Undo(u8),
        Tick(u16),
        Sync(u8, Vec<u8>),
        Remove(u8, Vec<u8>),
        Claim(u8, u8, u8),
        ReleaseAllBut(Vec<u8>),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (0u8..12).prop_map(Op::Take),
            (0u8..12).prop_map(Op::Release),
            (0u8..12).prop_map(Op::Undo),
            (0u16..40).prop_map(Op::Tick),
            (0u8..2, proptest::collection::vec(0u8..16, 0..10)).prop_map(|(e, v)| Op::Sync(e, v)),
            (0u8..2, proptest::collection::vec(0u8..16, 0..6)).prop_map(|(e, v)| Op::Remove(e, v)),
            (0u8..12, 0u8..2, 0u8..16).prop_map(|(p, e, i)| Op::Claim(p, e, i)),
            proptest::collection::vec(0u8..12, 0..12).prop_map(Op::ReleaseAllBut),
        ]
    }

    proptest! {
        /// Whatever happens in whatever order, no IP is held by two pods, a
        /// pod holds at most one IP, and a returned IP is not handed out
        /// again before its cool-down has passed.
        #[test]
        fn never_one_ip_on_two_pods_and_cool_down_honoured(ops in proptest::collection::vec(op(), 0..80)) {
            let t0 = Instant::now();
            let mut now = t0;
            let enis = [EniId::new("eni-a"), EniId::new("eni-b")];
            let addr = |e: u8, i: u8| Ipv4Addr::new(10, 0, e, i);
            let mut l = Ledger::new();
            l.add_eni(enis[0].clone(), 16, &[addr(0, 1), addr(0, 2)]);
            // When each IP last stopped being held: not to be taken before +COOL.
            let mut returned: BTreeMap<Ipv4Addr, Instant> = BTreeMap::new();
            for op in ops {
                let mut undone = None;
                let before: BTreeMap<String, Ipv4Addr> = (0u8..12)
                    .filter_map(|p| l.held_by(&format!("p{p}")).map(|(_, ip)| (format!("p{p}"), ip)))
                    .collect();
                match op {
                    Op::Take(p) => {
                        let uid = format!("p{p}");
                        if let Some((_, ip)) = l.take(&uid) {
                            if before.get(&uid) != Some(&ip) {
                                if let Some(t) = returned.get(&ip) {
                                    prop_assert!(now >= *t + COOL, "{} handed out {:?} after return", ip, now - *t);
                                }
                            }
                        }
                    }
                    Op::Release(p) => { l.release(&format!("p{p}"), now, COOL); }
                    Op::Undo(p) => {
                        // Only right after a take in real use; here a no-op
                        // unless held, and it must not break the rules below.
                        let uid = format!("p{p}");
                        if let Some((_, ip)) = l.held_by(&uid) {
                            l.undo_take(&uid);
                            returned.remove(&ip);
                            undone = Some(ip);
                        }
                    }
                    Op::Tick(ms) => { now += Duration::from_millis(u64::from(ms) * 1000); l.tick(now); }
                    Op::Sync(e, v) => {
                        let ips: Vec<Ipv4Addr> = v.iter().map(|i| addr(e, *i)).collect();
                        for ip in &ips {
                            if l.eni(&enis[e as usize]).is_none_or(|x| !x.ips.contains_key(ip)) {
                                returned.insert(*ip, now);
                            }
                        }
                        l.sync_eni(&enis[e as usize], 16, &ips, now, COOL);
                    }
                    Op::Remove(e, v) => {
                        let ips: Vec<Ipv4Addr> = v.iter().map(|i| addr(e, *i)).collect();
                        let removed = l.remove_free(&enis[e as usize], &ips);
                        for ip in removed {
                            prop_assert!(!before.values().any(|h| *h == ip), "removed a held IP");
                        }
                    }
                    Op::Claim(p, e, i) => { let _ = l.claim(&format!("p{p}"), &enis[e as usize], addr(e, i)); }
                    Op::ReleaseAllBut(live) => {
                        let live: BTreeSet<String> = live.iter().map(|p| format!("p{p}")).collect();
                        l.release_all_but(&live, now, COOL);
                    }
                }
                let after: BTreeMap<String, Ipv4Addr> = (0u8..12)
                    .filter_map(|p| l.held_by(&format!("p{p}")).map(|(_, ip)| (format!("p{p}"), ip)))
                    .collect();
                for (uid, ip) in &before {
                    if after.get(uid) != Some(ip) && undone != Some(*ip) {
                        returned.insert(*ip, now);
                    }
                }
                let mut seen = BTreeSet::new();
                for ip in after.values() {
                    prop_assert!(seen.insert(*ip), "{} held by two pods", ip);
                }
                let used = l.counts().1 as usize;
                prop_assert_eq!(used, after.len(), "a pod holds two IPs");
            }
        }
    }
}
