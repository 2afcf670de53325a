//! What a peer must be told to go from the routes it has from us to the
//! routes we want it to have: withdrawals and announcements as UPDATE
//! messages, announcements grouped by next hop (one attribute set per
//! message) and packed up to the 4096-byte message limit. Pure functions.

use crate::message::{AsSegment, PathAttribute, Update, AS_SEQUENCE, HEADER_LEN, MAX_LEN};
use ipnet::Ipv4Net;
use std::collections::BTreeMap;
use std::net::Ipv4Addr;

/// Prefix -> next hop: what is (or should be) announced to one peer.
pub type Routes = BTreeMap<Ipv4Net, Ipv4Addr>;

/// How our announcements to one peer look.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PathContext {
    /// The AS we speak to this peer as.
    pub local_as: u32,
    /// eBGP (the peer is in another AS): our AS in AS_PATH and no LOCAL_PREF.
    pub ebgp: bool,
}

impl PathContext {
    /// ORIGIN IGP, AS_PATH (empty for iBGP, our AS for eBGP), NEXT_HOP as
    /// given (the node; a third-party next hop for eBGP), LOCAL_PREF 100 on
    /// iBGP.
    pub fn attributes(&self, next_hop: Ipv4Addr) -> Vec<PathAttribute> {
        let mut attrs = vec![
            PathAttribute::Origin(0),
            PathAttribute::AsPath(if self.ebgp {
                vec![AsSegment {
                    kind: AS_SEQUENCE,
                    asns: vec![self.local_as],
                }]
            } else {
                Vec::new()
            }),
            PathAttribute::NextHop(next_hop),
        ];
        if !self.ebgp {
            attrs.push(PathAttribute::LocalPref(100));
        }
        attrs
    }
}

/// Bytes a prefix takes in NLRI or withdrawn routes.
fn prefix_len(p: &Ipv4Net) -> usize {
    1 + usize::from(p.prefix_len()).div_ceil(8)
}

/// Room for prefixes in one UPDATE next to attributes of `attrs` bytes:
/// header, the two length fields, the attributes. AS4_PATH for a 2-octet
/// peer and 4-octet ASes are covered by counting 4 bytes per AS.
const ATTRS_BUDGET: usize = 64;
const ROOM: usize = MAX_LEN - HEADER_LEN - 4 - ATTRS_BUDGET;

fn pack(prefixes: impl IntoIterator<Item = Ipv4Net>) -> Vec<Vec<Ipv4Net>> {
    let mut out: Vec<Vec<Ipv4Net>> = Vec::new();
    let mut used = ROOM;
    for p in prefixes {
        let n = prefix_len(&p);
        if used + n > ROOM {
            out.push(Vec::new());
            used = 0;
        }
        used += n;
        if let Some(last) = out.last_mut() {
            last.push(p);
        }
    }
    out
}

/// The UPDATEs that take a peer holding `advertised` to `desired`:
/// withdrawals first, then announcements (a changed next hop is a new
/// announcement of the same prefix, which replaces the old path).
pub fn updates(advertised: &Routes, desired: &Routes, ctx: &PathContext) -> Vec<Update> {
    let withdraw = advertised
        .keys()
        .filter(|p| !desired.contains_key(p))
        .copied();
    let mut out: Vec<Update> = pack(withdraw)
        .into_iter()
        .map(|withdrawn| Update {
            withdrawn,
            ..Update::default()
        })
        .collect();
    let mut by_hop: BTreeMap<Ipv4Addr, Vec<Ipv4Net>> = BTreeMap::new();
    for (p, hop) in desired {
        if advertised.get(p) != Some(hop) {
            by_hop.entry(*hop).or_default().push(*p);
        }
    }
    for (hop, prefixes) in by_hop {
        for nlri in pack(prefixes) {
            out.push(Update {
                withdrawn: Vec::new(),
                attributes: ctx.attributes(hop),
                nlri,
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::Message;
    use bytes::BytesMut;
    use proptest::prelude::*;

    const IBGP: PathContext = PathContext {
        local_as: 64512,
        ebgp: false,
    };

    fn routes(items: &[(&str, [u8; 4])]) -> Routes {
        items
            .iter()
            .map(|(p, h)| (p.parse().unwrap(), Ipv4Addr::from(*h)))
            .collect()
    }

    /// What a peer holds after applying `updates` to `held`.
    fn apply(held: &Routes, updates: &[Update]) -> Routes {
        let mut held = held.clone();
        for u in updates {
            for w in &u.withdrawn {
                held.remove(w);
            }
            let hop = u.attributes.iter().find_map(|a| match a {
                PathAttribute::NextHop(h) => Some(*h),
                _ => None,
            });
            for p in &u.nlri {
                held.insert(*p, hop.unwrap());
            }
        }
        held
    }

    #[test]
    fn delete_withdraws_and_change_replaces() {
        let before = routes(&[
            ("10.244.1.0/24", [10, 0, 0, 1]),
            ("10.244.2.0/24", [10, 0, 0, 2]),
        ]);
        let after = routes(&[
            ("10.244.1.0/24", [10, 0, 0, 9]),
            ("10.244.3.0/24", [10, 0, 0, 2]),
        ]);
        let ups = updates(&before, &after, &IBGP);
        assert_eq!(
            ups[0].withdrawn,
            vec!["10.244.2.0/24".parse::<Ipv4Net>().unwrap()]
        );
        assert_eq!(apply(&before, &ups), after);
        assert!(updates(&after, &after, &IBGP).is_empty());
    }

    #[test]
    fn ebgp_paths_carry_our_as_and_no_local_pref() {
        let ctx = PathContext {
            local_as: 65001,
            ebgp: true,
        };
        let attrs = ctx.attributes(Ipv4Addr::new(10, 0, 0, 1));
        assert!(attrs.contains(&PathAttribute::AsPath(vec![AsSegment {
            kind: AS_SEQUENCE,
            asns: vec![65001]
        }])));
        assert!(!attrs
            .iter()
            .any(|a| matches!(a, PathAttribute::LocalPref(_))));
    }

    proptest! {
        /// Any change is reached exactly, and every message fits in 4096 bytes.
        #[test]
        fn updates_reach_desired_within_message_limit(
            before in proptest::collection::btree_map((0u32..3000).prop_map(|i| Ipv4Net::new(Ipv4Addr::from(0x0a00_0000 + (i << 8)), 24).unwrap()), (0u8..4).prop_map(|h| Ipv4Addr::new(10, 1, 0, h)), 0..1500),
            after in proptest::collection::btree_map((0u32..3000).prop_map(|i| Ipv4Net::new(Ipv4Addr::from(0x0a00_0000 + (i << 8)), 24).unwrap()), (0u8..4).prop_map(|h| Ipv4Addr::new(10, 1, 0, h)), 0..1500),
            ebgp: bool,
        ) {
            let ctx = PathContext { local_as: 4_200_000_000, ebgp };
            let ups = updates(&before, &after, &ctx);
            for u in &ups {
                for four in [true, false] {
                    let mut b = BytesMut::new();
                    Message::Update(u.clone()).encode(four, &mut b);
                    prop_assert!(b.len() <= MAX_LEN, "{} bytes", b.len());
                }
            }
            prop_assert_eq!(apply(&before, &ups), after);
        }
    }
}
