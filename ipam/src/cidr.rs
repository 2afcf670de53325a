//! IPv4 CIDR arithmetic and the per-node podCIDR allocator.
//!
//! `PodCidrAllocator` carves the cluster CIDR into equal blocks of
//! `nodeCidrMaskSize` and hands out the lowest free one. State is a bitmap
//! (one bit per block) plus a cursor below which every block is known to be
//! taken, so a /8 cut into /24s (65,536 blocks) costs 8 KiB and allocation
//! stays near O(1) even with thousands of nodes.

use ipnet::Ipv4Net;
use std::net::Ipv4Addr;

/// Most blocks one allocator may track (2^24, a 2 MiB bitmap). Beyond that
/// the configuration is almost certainly a typo (e.g. a /8 cut into /32s).
pub const MAX_BLOCKS_LOG2: u8 = 24;

/// Why a CIDR was refused or could not be handed out.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CidrError {
    #[error(
        "nodeCidrMaskSize {mask} is invalid for cluster CIDR {cluster}: it must be between {min} and 32"
    )]
    InvalidMask { cluster: Ipv4Net, mask: u8, min: u8 },
    #[error(
        "nodeCidrMaskSize {mask} cuts cluster CIDR {cluster} into 2^{log2} blocks; at most 2^{max_log2} are supported, use a larger block (a smaller nodeCidrMaskSize)"
    )]
    TooManyBlocks {
        cluster: Ipv4Net,
        mask: u8,
        log2: u8,
        max_log2: u8,
    },
    #[error("cluster CIDR {given} has host bits set; did you mean {suggested}?")]
    ClusterNotCanonical { given: Ipv4Net, suggested: Ipv4Net },
    #[error("cluster CIDR {cluster} is exhausted: all {total} /{mask} node blocks are allocated")]
    Exhausted {
        cluster: Ipv4Net,
        mask: u8,
        total: u64,
    },
    #[error("block {block} is outside the cluster CIDR {cluster}")]
    OutsideCluster { block: Ipv4Net, cluster: Ipv4Net },
    #[error("block {block} is not a /{mask} (nodeCidrMaskSize is {mask})")]
    WrongSize { block: Ipv4Net, mask: u8 },
    #[error("block {block} is not aligned: its network address is {network}")]
    Misaligned { block: Ipv4Net, network: Ipv4Addr },
    #[error("block {block} is already allocated")]
    AlreadyAllocated { block: Ipv4Net },
}

/// A block `rebuild` could not take over, and why (e.g. two nodes that
/// claim the same podCIDR: the second one is rejected).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rejected {
    pub block: Ipv4Net,
    pub reason: CidrError,
}

/// Whether `net` has no host bits set (e.g. `10.0.1.0/24`, not `10.0.1.5/24`).
pub fn is_canonical(net: &Ipv4Net) -> bool {
    net.addr() == net.network()
}

/// Whether the two networks share at least one address.
pub fn overlaps(a: &Ipv4Net, b: &Ipv4Net) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

/// Whether `inner` lies entirely inside `outer`.
pub fn contains_net(outer: &Ipv4Net, inner: &Ipv4Net) -> bool {
    outer.prefix_len() <= inner.prefix_len() && outer.contains(&inner.network())
}

/// How many blocks of `/block_mask` fit in a `/prefix` (0 when the block is
/// larger than the network).
pub fn block_count(prefix: u8, block_mask: u8) -> u64 {
    if block_mask < prefix || block_mask > 32 {
        0
    } else {
        1u64 << (block_mask - prefix)
    }
}

/// Hands out per-node podCIDR blocks from one cluster CIDR.
#[derive(Clone)]
pub struct PodCidrAllocator {
    cluster: Ipv4Net,
    mask: u8,
    total: u64,
    used: u64,
    bits: Vec<u64>,
    /// Every block below this index is allocated: the search starts here.
    cursor: u64,
}

// The bitmap can be megabytes: print the summary, not the bits.
impl std::fmt::Debug for PodCidrAllocator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PodCidrAllocator")
            .field("cluster", &self.cluster)
            .field("node_mask", &self.mask)
            .field("total", &self.total)
            .field("used", &self.used)
            .finish_non_exhaustive()
    }
}

impl PodCidrAllocator {
    /// An empty allocator for `cluster` cut into `/node_mask` blocks.
    pub fn new(cluster: Ipv4Net, node_mask: u8) -> Result<Self, CidrError> {
        if !is_canonical(&cluster) {
            return Err(CidrError::ClusterNotCanonical {
                given: cluster,
                suggested: cluster.trunc(),
            });
        }
        let prefix = cluster.prefix_len();
        if node_mask < prefix || node_mask > 32 {
            return Err(CidrError::InvalidMask {
                cluster,
                mask: node_mask,
                min: prefix,
            });
        }
        let log2 = node_mask - prefix;
        if log2 > MAX_BLOCKS_LOG2 {
            return Err(CidrError::TooManyBlocks {
                cluster,
                mask: node_mask,
                log2,
                max_log2: MAX_BLOCKS_LOG2,
            });
        }
        let total = 1u64 << log2;
        let words = total.div_ceil(64) as usize;
        Ok(Self {
            cluster,
            mask: node_mask,
            total,
            used: 0,
            bits: vec![0; words],
            cursor: 0,
        })
    }

    /// An allocator that already holds `existing` (the podCIDRs nodes have
    /// today). Blocks that cannot be held (outside, wrong size, misaligned,
    /// or claimed a second time) come back as `Rejected`, in input order.
    pub fn rebuild(
        cluster: Ipv4Net,
        node_mask: u8,
        existing: impl IntoIterator<Item = Ipv4Net>,
    ) -> Result<(Self, Vec<Rejected>), CidrError> {
        let mut alloc = Self::new(cluster, node_mask)?;
        let mut rejected = Vec::new();
        for block in existing {
            if let Err(reason) = alloc.occupy(block) {
                // A block of another size (or misaligned) that overlaps the
                // cluster CIDR is still taken: every block it touches is
                // never handed out.
                alloc.reserve_overlapping(block);
                rejected.push(Rejected { block, reason });
            }
        }
        Ok((alloc, rejected))
    }

    /// Mark every block that shares an address with `range` as taken.
    fn reserve_overlapping(&mut self, range: Ipv4Net) {
        let (cluster_lo, cluster_hi) = (
            u32::from(self.cluster.network()),
            u32::from(self.cluster.broadcast()),
        );
        let lo = u32::from(range.network()).max(cluster_lo);
        let hi = u32::from(range.broadcast()).min(cluster_hi);
        if lo > hi {
            return;
        }
        let shift = 32 - u32::from(self.mask);
        let first = u64::from(lo - cluster_lo) >> shift;
        let last = u64::from(hi - cluster_lo) >> shift;
        for index in first..=last {
            if !self.get(index) {
                self.set(index, true);
                self.used += 1;
            }
        }
    }

    pub fn cluster(&self) -> Ipv4Net {
        self.cluster
    }

    pub fn node_mask(&self) -> u8 {
        self.mask
    }

    /// How many blocks the cluster CIDR holds.
    pub fn total_blocks(&self) -> u64 {
        self.total
    }

    pub fn allocated_count(&self) -> u64 {
        self.used
    }

    pub fn free_count(&self) -> u64 {
        self.total - self.used
    }

    /// Whether `block` is a valid block of this allocator and is taken.
    pub fn is_allocated(&self, block: Ipv4Net) -> bool {
        self.index_of(block).is_ok_and(|i| self.get(i))
    }

    /// The lowest free block, now marked allocated.
    pub fn allocate(&mut self) -> Result<Ipv4Net, CidrError> {
        let Some(index) = self.first_free_from(self.cursor) else {
            self.cursor = self.total;
            return Err(CidrError::Exhausted {
                cluster: self.cluster,
                mask: self.mask,
                total: self.total,
            });
        };
        self.set(index, true);
        self.used += 1;
        self.cursor = index + 1;
        Ok(self.block_at(index))
    }

    /// Marks a block a node already has as allocated.
    pub fn occupy(&mut self, block: Ipv4Net) -> Result<(), CidrError> {
        let index = self.index_of(block)?;
        if self.get(index) {
            return Err(CidrError::AlreadyAllocated { block });
        }
        self.set(index, true);
        self.used += 1;
        Ok(())
    }

    /// Returns a block to the free set. `Ok(false)` when it was not
    /// allocated (releasing twice is harmless: a node deleted twice).
    pub fn release(&mut self, block: Ipv4Net) -> Result<bool, CidrError> {
        let index = self.index_of(block)?;
        if !self.get(index) {
            return Ok(false);
        }
        self.set(index, false);
        self.used -= 1;
        self.cursor = self.cursor.min(index);
        Ok(true)
    }

    /// The block index of `block`, after checking it belongs here.
    fn index_of(&self, block: Ipv4Net) -> Result<u64, CidrError> {
        if !self.cluster.contains(&block.addr()) {
            return Err(CidrError::OutsideCluster {
                block,
                cluster: self.cluster,
            });
        }
        if block.prefix_len() != self.mask {
            // A larger block may still start inside but spill outside: say
            // "outside" for that, it is the more useful message.
            if !contains_net(&self.cluster, &block) {
                return Err(CidrError::OutsideCluster {
                    block,
                    cluster: self.cluster,
                });
            }
            return Err(CidrError::WrongSize {
                block,
                mask: self.mask,
            });
        }
        if !is_canonical(&block) {
            return Err(CidrError::Misaligned {
                block,
                network: block.network(),
            });
        }
        let offset = u64::from(u32::from(block.addr()) - u32::from(self.cluster.network()));
        Ok(offset >> (32 - u32::from(self.mask)))
    }

    fn block_at(&self, index: u64) -> Ipv4Net {
        let base = u64::from(u32::from(self.cluster.network()));
        let addr = base + (index << (32 - u32::from(self.mask)));
        // index < total, so addr stays inside the cluster CIDR (< 2^32).
        let addr = Ipv4Addr::from(addr as u32);
        match Ipv4Net::new(addr, self.mask) {
            Ok(net) => net,
            // mask <= 32 is checked in `new`.
            Err(_) => unreachable!("mask validated at construction"),
        }
    }

    fn get(&self, index: u64) -> bool {
        let (w, b) = ((index / 64) as usize, index % 64);
        self.bits[w] & (1u64 << b) != 0
    }

    fn set(&mut self, index: u64, on: bool) {
        let (w, b) = ((index / 64) as usize, index % 64);
        if on {
            self.bits[w] |= 1u64 << b;
        } else {
            self.bits[w] &= !(1u64 << b);
        }
    }

    fn first_free_from(&self, start: u64) -> Option<u64> {
        if start >= self.total {
            return None;
        }
        let mut w = (start / 64) as usize;
        // Treat the bits below `start` in the first word as taken.
        let mut word = self.bits[w] | ((1u64 << (start % 64)) - 1);
        loop {
            if word != u64::MAX {
                let index = w as u64 * 64 + u64::from(word.trailing_ones());
                return (index < self.total).then_some(index);
            }
            w += 1;
            if w >= self.bits.len() {
                return None;
            }
            word = self.bits[w];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    fn net(s: &str) -> Ipv4Net {
        s.parse().unwrap()
    }

    #[test]
    fn allocates_lowest_free_block_in_order() {
        let mut a = PodCidrAllocator::new(net("10.0.0.0/16"), 24).unwrap();
        assert_eq!(a.allocate().unwrap(), net("10.0.0.0/24"));
        assert_eq!(a.allocate().unwrap(), net("10.0.1.0/24"));
        assert_eq!(a.allocate().unwrap(), net("10.0.2.0/24"));
        assert!(a.release(net("10.0.1.0/24")).unwrap());
        assert_eq!(a.allocate().unwrap(), net("10.0.1.0/24"));
        assert_eq!(a.allocate().unwrap(), net("10.0.3.0/24"));
        assert_eq!(a.free_count(), 256 - 4);
    }

    #[test]
    fn mask_out_of_range_names_the_config_field() {
        let err = PodCidrAllocator::new(net("10.0.0.0/16"), 8).unwrap_err();
        assert!(err.to_string().contains("nodeCidrMaskSize"), "{err}");
        assert!(err.to_string().contains("between 16 and 32"), "{err}");
        let err = PodCidrAllocator::new(net("10.0.0.0/16"), 33).unwrap_err();
        assert!(err.to_string().contains("nodeCidrMaskSize 33"), "{err}");
        let err = PodCidrAllocator::new(net("16.0.0.0/4"), 32).unwrap_err();
        assert!(matches!(err, CidrError::TooManyBlocks { .. }), "{err}");
    }

    #[test]
    fn cluster_with_host_bits_is_refused_with_a_suggestion() {
        let err = PodCidrAllocator::new(net("10.0.3.0/16"), 24).unwrap_err();
        assert!(
            err.to_string().contains("did you mean 10.0.0.0/16"),
            "{err}"
        );
    }

    #[test]
    fn exhaustion_says_how_many_blocks_exist() {
        let mut a = PodCidrAllocator::new(net("10.0.0.0/22"), 24).unwrap();
        for _ in 0..4 {
            a.allocate().unwrap();
        }
        let err = a.allocate().unwrap_err();
        assert!(err.to_string().contains("all 4 /24"), "{err}");
        assert_eq!(a.free_count(), 0);
        // Still exhausted on the second try, and recovers after a release.
        assert!(a.allocate().is_err());
        a.release(net("10.0.2.0/24")).unwrap();
        assert_eq!(a.allocate().unwrap(), net("10.0.2.0/24"));
    }

    #[test]
    fn single_block_cluster_works() {
        let mut a = PodCidrAllocator::new(net("192.168.5.0/24"), 24).unwrap();
        assert_eq!(a.total_blocks(), 1);
        assert_eq!(a.allocate().unwrap(), net("192.168.5.0/24"));
        assert!(a.allocate().is_err());
    }

    #[test]
    fn occupy_rejects_bad_blocks_and_double_claims() {
        let mut a = PodCidrAllocator::new(net("10.0.0.0/16"), 24).unwrap();
        assert!(matches!(
            a.occupy(net("10.1.0.0/24")),
            Err(CidrError::OutsideCluster { .. })
        ));
        assert!(matches!(
            a.occupy(net("10.0.0.0/8")),
            Err(CidrError::OutsideCluster { .. })
        ));
        assert!(matches!(
            a.occupy(net("10.0.4.0/23")),
            Err(CidrError::WrongSize { mask: 24, .. })
        ));
        assert!(matches!(
            a.occupy(net("10.0.4.7/24")),
            Err(CidrError::Misaligned { .. })
        ));
        a.occupy(net("10.0.0.0/24")).unwrap();
        let err = a.occupy(net("10.0.0.0/24")).unwrap_err();
        assert!(err.to_string().contains("already allocated"), "{err}");
        assert_eq!(a.allocated_count(), 1);
        // The next allocation skips the occupied block.
        assert_eq!(a.allocate().unwrap(), net("10.0.1.0/24"));
    }

    #[test]
    fn release_of_free_block_is_reported_not_fatal() {
        let mut a = PodCidrAllocator::new(net("10.0.0.0/16"), 24).unwrap();
        assert!(!a.release(net("10.0.9.0/24")).unwrap());
        assert!(a.release(net("11.0.9.0/24")).is_err());
        assert_eq!(a.free_count(), 256);
    }

    #[test]
    fn rebuild_reports_duplicates_and_strays() {
        let (mut a, rejected) = PodCidrAllocator::rebuild(
            net("10.0.0.0/16"),
            24,
            [
                net("10.0.0.0/24"),
                net("10.0.2.0/24"),
                net("10.0.2.0/24"),
                net("172.16.0.0/24"),
            ],
        )
        .unwrap();
        assert_eq!(rejected.len(), 2);
        assert_eq!(rejected[0].block, net("10.0.2.0/24"));
        assert!(matches!(
            rejected[0].reason,
            CidrError::AlreadyAllocated { .. }
        ));
        assert!(matches!(
            rejected[1].reason,
            CidrError::OutsideCluster { .. }
        ));
        assert_eq!(a.allocate().unwrap(), net("10.0.1.0/24"));
        assert_eq!(a.allocate().unwrap(), net("10.0.3.0/24"));
    }

    #[test]
    fn slash8_with_slash24_blocks_handles_thousands_of_nodes() {
        let (mut a, rejected) = PodCidrAllocator::rebuild(
            net("10.0.0.0/8"),
            24,
            (0..5000u32)
                .map(|i| Ipv4Net::new(Ipv4Addr::from(0x0a00_0000 + ((i * 2) << 8)), 24).unwrap()),
        )
        .unwrap();
        assert!(rejected.is_empty());
        assert_eq!(a.total_blocks(), 65_536);
        assert_eq!(a.free_count(), 65_536 - 5000);
        // Odd blocks are free among the first 10,000: the holes get filled first.
        assert_eq!(a.allocate().unwrap(), net("10.0.1.0/24"));
        for _ in 0..(65_536 - 5000 - 1) {
            a.allocate().unwrap();
        }
        assert!(matches!(
            a.allocate(),
            Err(CidrError::Exhausted { total: 65_536, .. })
        ));
    }

    #[test]
    fn cidr_math_helpers() {
        assert!(overlaps(&net("10.0.0.0/16"), &net("10.0.3.0/24")));
        assert!(overlaps(&net("10.0.3.0/24"), &net("10.0.0.0/16")));
        assert!(!overlaps(&net("10.0.0.0/24"), &net("10.0.1.0/24")));
        assert!(contains_net(&net("10.0.0.0/16"), &net("10.0.3.0/24")));
        assert!(!contains_net(&net("10.0.3.0/24"), &net("10.0.0.0/16")));
        assert_eq!(block_count(16, 24), 256);
        assert_eq!(block_count(24, 16), 0);
        assert!(is_canonical(&net("10.0.0.0/16")));
        assert!(!is_canonical(&net("10.0.0.1/16")));
    }

    #[derive(Clone, Debug)]
    enum Op {
        Allocate,
        Release(usize),
        Occupy(u32),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => Just(Op::Allocate),
            2 => any::<usize>().prop_map(Op::Release),
            1 => (0u32..64).prop_map(Op::Occupy),
        ]
    }

    proptest! {
        #[test]
        fn never_hands_out_a_block_twice_and_stays_inside(
            prefix in 8u8..=28,
            extra in 0u8..=4,
            ops in proptest::collection::vec(op(), 0..200),
        ) {
            let cluster = Ipv4Net::new(Ipv4Addr::new(10, 0, 0, 0), prefix).unwrap().trunc();
            let mask = (prefix + extra).min(32);
            let mut a = PodCidrAllocator::new(cluster, mask).unwrap();
            let mut held: BTreeSet<Ipv4Net> = BTreeSet::new();
            for op in ops {
                match op {
                    Op::Allocate => match a.allocate() {
                        Ok(b) => {
                            prop_assert!(contains_net(&cluster, &b));
                            prop_assert_eq!(b.prefix_len(), mask);
                            prop_assert!(held.insert(b), "block {} handed out twice", b);
                        }
                        Err(CidrError::Exhausted { total, .. }) => {
                            prop_assert_eq!(held.len() as u64, total);
                        }
                        Err(e) => prop_assert!(false, "unexpected {e}"),
                    },
                    Op::Release(i) => {
                        if !held.is_empty() {
                            let b = *held.iter().nth(i % held.len()).unwrap();
                            held.remove(&b);
                            prop_assert!(a.release(b).unwrap());
                        }
                    }
                    Op::Occupy(i) => {
                        let i = u64::from(i) % a.total_blocks();
                        let b = a.block_at(i);
                        match a.occupy(b) {
                            Ok(()) => prop_assert!(held.insert(b)),
                            Err(CidrError::AlreadyAllocated { .. }) => prop_assert!(held.contains(&b)),
                            Err(e) => prop_assert!(false, "unexpected {e}"),
                        }
                    }
                }
                prop_assert_eq!(a.allocated_count(), held.len() as u64);
                prop_assert_eq!(a.free_count(), a.total_blocks() - held.len() as u64);
            }
        }

        /// Blocks of other sizes (a node given a /23 or a /26 by hand, or
        /// under an older mask) are never carved into.
        #[test]
        fn rebuild_with_other_sizes_never_hands_out_an_overlapping_block(
            existing in proptest::collection::vec((0u32..65536, 20u8..=28), 0..40),
            more in 0usize..300,
        ) {
            let cluster = net("10.0.0.0/16");
            let blocks: Vec<Ipv4Net> = existing
                .iter()
                .map(|(offset, len)| Ipv4Net::new(Ipv4Addr::from(0x0a00_0000u32 + offset), *len).unwrap().trunc())
                .collect();
            let (mut a, _) = PodCidrAllocator::rebuild(cluster, 24, blocks.clone()).unwrap();
            for _ in 0..more {
                let Ok(b) = a.allocate() else { break };
                for e in &blocks {
                    prop_assert!(
                        !(b.contains(&e.network()) || e.contains(&b.network())),
                        "{} overlaps existing {}", b, e
                    );
                }
            }
        }

        #[test]
        fn rebuild_then_allocate_never_collides(
            picks in proptest::collection::vec(0u64..256, 0..300),
            more in 0usize..300,
        ) {
            let cluster = net("10.0.0.0/16");
            let blocks: Vec<Ipv4Net> = picks
                .iter()
                .map(|i| Ipv4Net::new(Ipv4Addr::from(0x0a00_0000u32 + ((*i as u32) << 8)), 24).unwrap())
                .collect();
            let (mut a, rejected) = PodCidrAllocator::rebuild(cluster, 24, blocks.clone()).unwrap();
            let held: BTreeSet<Ipv4Net> = blocks.iter().copied().collect();
            prop_assert_eq!(rejected.len(), blocks.len() - held.len());
            let mut all = held.clone();
            for _ in 0..more {
                match a.allocate() {
                    Ok(b) => prop_assert!(all.insert(b), "{} collides", b),
                    Err(_) => prop_assert_eq!(all.len(), 256),
                }
            }
        }
    }
}
