//! Exclusive-ENI decisions: how many ENI slots a node has and advertises,
//! how the controller marks the ENIs it creates, the idempotency token of a
//! create, and which orphaned ENIs garbage collection may release.

use crate::ids::{ClusterId, EniId, IdempotencyToken, InstanceId};
use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

/// Tag keys written on every ENI the controller creates.
pub mod tag {
    pub const CLUSTER: &str = "vpc-eni.io/cluster";
    pub const POD_NAMESPACE: &str = "vpc-eni.io/pod-namespace";
    pub const POD_NAME: &str = "vpc-eni.io/pod-name";
    pub const POD_UID: &str = "vpc-eni.io/pod-uid";
    pub const NODE: &str = "vpc-eni.io/node";
    pub const CREATOR: &str = "creator";
    /// Value of the `creator` tag.
    pub const CREATOR_VALUE: &str = "vpc-eni-controller";
    /// On shared ENIs only: `shared`. Exclusive ENIs carry none (they did
    /// not before shared mode existed either).
    pub const MODE: &str = "vpc-eni.io/mode";
    pub const MODE_SHARED: &str = "shared";
}

/// Longest tag value we write: Alibaba allows 128 characters (EC2 256), and
/// pod or node names may be up to 253.
pub const MAX_TAG_VALUE_CHARS: usize = 128;

/// Longest client token Alibaba (and EC2) accept: 64 ASCII characters.
pub const MAX_CLIENT_TOKEN_LEN: usize = 64;

/// Slots for secondary ENIs: every ENI the instance type allows except the
/// primary one.
pub fn secondary_eni_slots(max_enis: u32) -> u32 {
    max_enis.saturating_sub(1)
}

/// How many more ENIs can be attached right now.
pub fn free_eni_slots(max_enis: u32, attached_total_incl_primary: u32) -> u32 {
    max_enis.saturating_sub(attached_total_incl_primary)
}

/// The node's extended-resource capacity: secondary slots minus secondary
/// ENIs someone else attached. Our own ENIs are not subtracted because the
/// scheduler already counts the pods that hold them against this capacity.
pub fn advertised_capacity(max_enis: u32, attached_not_ours: u32) -> u32 {
    secondary_eni_slots(max_enis).saturating_sub(attached_not_ours)
}

/// The node's capacity once its zone's subnets are counted: every ENI
/// needs an address of a configured subnet of the node's zone, so a node
/// cannot take more new ENIs than those subnets have free addresses. The
/// scheduler counts the pods already holding ENIs on the node against the
/// capacity, so they are added back: `slot_capacity` (from
/// [`advertised_capacity`]) bounded by `held_by_pods + zone_free_ips`.
/// Nodes of one zone share its addresses, so each may advertise the same
/// free ones; a create that finds them gone fails as exhausted and is
/// retried, never made twice.
pub fn capacity_within_addresses(slot_capacity: u32, held_by_pods: u32, zone_free_ips: u32) -> u32 {
    slot_capacity.min(held_by_pods.saturating_add(zone_free_ips))
}

/// ENI slots of a node in shared mode that the exclusive resource must not
/// offer: the slots reserved for the pool, or the shared ENIs attached if
/// more are (the reservation was lowered while they were in use).
pub fn shared_slots_taken(shared_reserved: u32, shared_attached: u32) -> u32 {
    shared_reserved.max(shared_attached)
}

/// Pods a node can run with shared-ENI IPs: each shared ENI (at most
/// `max_enis - 1` of them) holds `ipv4_per_eni - 1` pod IPs (its primary
/// address is the ENI's own), plus `host_network_pods` that need no IP of
/// their own (2, as the AWS VPC CNI's max-pods calculation counts).
pub fn max_pods(max_enis: u32, ipv4_per_eni: u32, shared_enis: u32, host_network_pods: u32) -> u32 {
    shared_enis
        .min(secondary_eni_slots(max_enis))
        .saturating_mul(ipv4_per_eni.saturating_sub(1))
        .saturating_add(host_network_pods)
}

/// A secondary ENI attached to a node's instance, as capacity sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AttachedEniView {
    /// Tagged as this cluster's (creator and cluster).
    pub owned: bool,
    /// The pod uid tag of an owned ENI.
    pub pod_uid: Option<String>,
}

/// Secondary ENIs that hold a slot the scheduler does not count against
/// the node: everything not ours, and ours whose pod is gone (until GC
/// releases them, e.g. after someone stripped the pod's finalizer). With the
/// pod list not known yet (`None`), owned ENIs are assumed to be counted, so
/// capacity does not dip at start.
pub fn slots_held_outside_pods(
    attached_secondary: &[AttachedEniView],
    live_pod_uids: Option<&HashSet<String>>,
) -> u32 {
    let held = attached_secondary
        .iter()
        .filter(|e| {
            !e.owned
                || live_pod_uids
                    .is_some_and(|live| !e.pod_uid.as_ref().is_some_and(|uid| live.contains(uid)))
        })
        .count();
    u32::try_from(held).unwrap_or(u32::MAX)
}

/// One container's ask for the ENI resource, as written in its spec.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ContainerAsk<'a> {
    pub limit: Option<&'a str>,
    pub request: Option<&'a str>,
}

/// A container asked for a quantity that is not a whole number of ENIs.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{value:?} is not a whole number of ENIs; use e.g. 1")]
pub struct BadEniCount {
    /// Index in the containers (or init containers) list.
    pub container: usize,
    pub init: bool,
    pub value: String,
}

/// How many ENIs a pod needs, counted the way the scheduler counts an
/// extended resource: the larger of the app containers' sum and the largest
/// init container (init containers run one at a time, before the others).
/// A limit wins over a request (for extended resources they must be equal).
pub fn pod_eni_request(
    containers: &[ContainerAsk<'_>],
    init_containers: &[ContainerAsk<'_>],
) -> Result<u32, BadEniCount> {
    let amount = |c: &ContainerAsk<'_>, container: usize, init: bool| -> Result<u32, BadEniCount> {
        match c.limit.or(c.request) {
            None => Ok(0),
            Some(v) => v.trim().parse::<u32>().map_err(|_| BadEniCount {
                container,
                init,
                value: v.to_owned(),
            }),
        }
    };
    let mut sum = 0u32;
    for (i, c) in containers.iter().enumerate() {
        sum = sum.saturating_add(amount(c, i, false)?);
    }
    let mut init_max = 0u32;
    for (i, c) in init_containers.iter().enumerate() {
        init_max = init_max.max(amount(c, i, true)?);
    }
    Ok(sum.max(init_max))
}

/// The pod an ENI is created for.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PodRef {
    pub namespace: String,
    pub name: String,
    pub uid: String,
}

/// The tags that mark an ENI as this cluster's, created for `pod` on `node`.
pub fn owned_eni_tags(cluster: &ClusterId, pod: &PodRef, node: &str) -> BTreeMap<String, String> {
    [
        (tag::CLUSTER, cluster.as_str()),
        (tag::POD_NAMESPACE, pod.namespace.as_str()),
        (tag::POD_NAME, pod.name.as_str()),
        (tag::POD_UID, pod.uid.as_str()),
        (tag::NODE, node),
        (tag::CREATOR, tag::CREATOR_VALUE),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), truncate_chars(v, MAX_TAG_VALUE_CHARS)))
    .collect()
}

/// The tags of a shared ENI of `node`: ours, no pod, the mode tag.
pub fn shared_eni_tags(cluster: &ClusterId, node: &str) -> BTreeMap<String, String> {
    [
        (tag::CLUSTER, cluster.as_str()),
        (tag::NODE, node),
        (tag::CREATOR, tag::CREATOR_VALUE),
        (tag::MODE, tag::MODE_SHARED),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), truncate_chars(v, MAX_TAG_VALUE_CHARS)))
    .collect()
}

/// Whether an ENI's tags mark it as a shared-mode ENI (whoever owns it).
pub fn is_shared(tags: &BTreeMap<String, String>) -> bool {
    tags.get(tag::MODE).map(String::as_str) == Some(tag::MODE_SHARED)
}

/// The node a shared ENI was made for, as tagged.
pub fn node_of(tags: &BTreeMap<String, String>) -> Option<&str> {
    tags.get(tag::NODE).map(String::as_str)
}

/// Whether tags mark an ENI as created by this controller for `cluster`.
/// Both the creator and the cluster must match: an ENI of another cluster in
/// the same VPC is never ours.
pub fn is_owned(tags: &BTreeMap<String, String>, cluster: &ClusterId) -> bool {
    tags.get(tag::CREATOR).map(String::as_str) == Some(tag::CREATOR_VALUE)
        && tags.get(tag::CLUSTER).map(String::as_str)
            == Some(truncate_chars(cluster.as_str(), MAX_TAG_VALUE_CHARS).as_str())
}

/// The pod uid an owned ENI was created for, if tagged.
pub fn pod_uid_of(tags: &BTreeMap<String, String>) -> Option<&str> {
    tags.get(tag::POD_UID).map(String::as_str)
}

/// The client token of the `index`-th ENI create for a pod. Same inputs give
/// the same token, so a retried create cannot make a second ENI; bump
/// `index` for a genuinely new ENI for the same pod (e.g. after the first
/// one was deleted). Always ASCII and at most 64 characters.
pub fn eni_client_token(pod_uid: &str, index: u64) -> IdempotencyToken {
    let plain = format!("vpc-eni-{pod_uid}-{index}");
    let safe = pod_uid
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-');
    if safe && !pod_uid.is_empty() && plain.len() <= MAX_CLIENT_TOKEN_LEN {
        return IdempotencyToken::new(plain);
    }
    // A uid that does not fit as-is (never seen from a real apiserver) is
    // hashed so the token stays deterministic and within limits.
    IdempotencyToken::new(format!(
        "vpc-eni-h{:016x}-{index}",
        fnv1a64(pod_uid.as_bytes())
    ))
}

fn fnv1a64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

fn truncate_chars(s: &str, max: usize) -> String {
    s.chars().take(max).collect()
}

/// What garbage collection knows about one ENI it owns.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OwnedEniView {
    pub id: EniId,
    /// From the `vpc-eni.io/pod-uid` tag; `None` when missing.
    pub pod_uid: Option<String>,
    /// Whether it is attached to an instance (then it must be detached
    /// before it can be deleted).
    pub attached: bool,
    /// Time since creation; `None` when the cloud does not say. Unknown
    /// counts as old enough: the two-pass rule still protects a new ENI.
    pub age: Option<Duration>,
}

/// The GC decision for one pass.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GcPlan {
    /// Orphans to detach (if attached) and delete now.
    pub release_now: Vec<EniId>,
    /// Every orphan seen in this pass (a superset of `release_now`): hand it
    /// back as `seen_last_pass` next time, so a failed release is retried.
    pub mark: Vec<EniId>,
}

/// Decides which owned ENIs to release. An owned ENI whose pod is not live
/// is released only when it is at least `grace` old AND was already an
/// orphan in the previous pass: a pod whose watch event is late, or an ENI
/// created a moment ago whose pod annotation is not written yet, survives.
pub fn gc_plan(
    owned_enis: &[OwnedEniView],
    live_pod_uids: &HashSet<String>,
    grace: Duration,
    seen_last_pass: &HashSet<EniId>,
) -> GcPlan {
    let mut plan = GcPlan::default();
    for eni in owned_enis {
        let live = eni
            .pod_uid
            .as_ref()
            .is_some_and(|uid| live_pod_uids.contains(uid));
        if live {
            continue;
        }
        plan.mark.push(eni.id.clone());
        if eni.age.is_none_or(|age| age >= grace) && seen_last_pass.contains(&eni.id) {
            plan.release_now.push(eni.id.clone());
        }
    }
    plan
}

/// One ENI tagged for a pod, as the cloud reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodEniView {
    pub id: EniId,
    /// The instance it is attached (or attaching) to.
    pub attached_to: Option<InstanceId>,
    /// Named in the pod's allocation annotation.
    pub annotated: bool,
}

/// What to do with a pod's ENIs to reach exactly the number it asked for.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PodEniPlan {
    /// ENIs the pod keeps, best first (the first is the pod's primary one).
    pub keep: Vec<EniId>,
    /// ENIs to detach (if attached) and delete: beyond the need, or attached
    /// to an instance other than the pod's node.
    pub release: Vec<EniId>,
    /// New ENIs to create.
    pub create: u32,
}

/// Plans a pod's ENIs from every ENI tagged with its uid. Reusing what
/// exists is what makes an allocation safe to repeat after a crash at any
/// step: an ENI already created (or attached, or annotated) is kept, never
/// made twice. Preference: annotated and on the node, then on the node, then
/// not attached; an ENI on another instance is never kept.
pub fn plan_pod_enis(need: u32, node_instance: &InstanceId, existing: &[PodEniView]) -> PodEniPlan {
    let rank = |e: &PodEniView| match &e.attached_to {
        Some(i) if i == node_instance && e.annotated => Some(0),
        Some(i) if i == node_instance => Some(1),
        None => Some(2),
        Some(_) => None,
    };
    let mut usable: Vec<(u8, &PodEniView)> = Vec::new();
    let mut plan = PodEniPlan::default();
    let mut seen = HashSet::new();
    for e in existing {
        if !seen.insert(&e.id) {
            continue;
        }
        match rank(e) {
            Some(r) => usable.push((r, e)),
            None => plan.release.push(e.id.clone()),
        }
    }
    usable.sort_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1.id.cmp(&b.1.id)));
    for (i, (_, e)) in usable.into_iter().enumerate() {
        if (i as u64) < u64::from(need) {
            plan.keep.push(e.id.clone());
        } else {
            plan.release.push(e.id.clone());
        }
    }
    plan.create = need.saturating_sub(plan.keep.len() as u32);
    plan
}

/// Whether a pod's written allocation still holds: every annotated ENI is
/// still tagged for the pod and attached to the pod's node. When it does
/// not (an ENI was deleted or detached behind our back) the allocation is
/// made again.
pub fn allocation_intact(
    annotated: &[EniId],
    node_instance: &InstanceId,
    existing: &[PodEniView],
) -> bool {
    !annotated.is_empty()
        && annotated.iter().all(|id| {
            existing
                .iter()
                .any(|e| &e.id == id && e.attached_to.as_ref() == Some(node_instance))
        })
}

/// Whether to give up on a pod's node and evict the pod: its node has failed
/// it for `failing` without a break, for reasons only the node can mend,
/// and `limit` (`eni.evictAfterSeconds`; zero = never) has passed.
pub fn give_up_on_node(failing: Duration, limit: Duration) -> bool {
    !limit.is_zero() && failing >= limit
}

/// Index for [`eni_client_token`] of the `slot`-th ENI created for a pod in
/// allocation `generation` (bumped when an allocation is re-made), so a
/// re-made allocation never reuses the token of an ENI that was deleted.
/// Every (generation, slot) pair has its own index, whatever the values (the
/// generation is read back from an annotation anyone may write), and
/// generation 0 keeps the plain slot.
pub fn create_token_index(generation: u32, slot: u32) -> u64 {
    (u64::from(generation) << 32) | u64::from(slot)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn pod() -> PodRef {
        PodRef {
            namespace: "default".into(),
            name: "web-0".into(),
            uid: "6f1c1c9e-3b0a-4b9e-9d7c-1f2e3d4c5b6a".into(),
        }
    }

    fn view(id: &str, at: Option<&str>, annotated: bool) -> PodEniView {
        PodEniView {
            id: EniId::new(id),
            attached_to: at.map(InstanceId::new),
            annotated,
        }
    }

    #[test]
    fn pod_plan_reuses_what_a_crashed_attempt_left() {
        let node = InstanceId::new("i-a");
        // Crash after create: the detached ENI is reused, nothing new made.
        let p = plan_pod_enis(1, &node, &[view("eni-1", None, false)]);
        assert_eq!(p.keep, [EniId::new("eni-1")]);
        assert_eq!(p.create, 0);
        assert!(p.release.is_empty());
        // Two ENIs for a one-ENI pod: the one on the node stays, the other goes.
        let p = plan_pod_enis(
            1,
            &node,
            &[
                view("eni-1", None, false),
                view("eni-2", Some("i-a"), false),
            ],
        );
        assert_eq!(p.keep, [EniId::new("eni-2")]);
        assert_eq!(p.release, [EniId::new("eni-1")]);
        // The annotated one wins over another on the node.
        let p = plan_pod_enis(
            1,
            &node,
            &[
                view("eni-1", Some("i-a"), false),
                view("eni-9", Some("i-a"), true),
            ],
        );
        assert_eq!(p.keep, [EniId::new("eni-9")]);
        // On another instance: released, a new one is made.
        let p = plan_pod_enis(1, &node, &[view("eni-1", Some("i-b"), true)]);
        assert_eq!(p.release, [EniId::new("eni-1")]);
        assert_eq!(p.create, 1);
        // Nothing yet: create all.
        assert_eq!(plan_pod_enis(2, &node, &[]).create, 2);
    }

    #[test]
    fn allocation_intact_only_when_every_annotated_eni_is_on_the_node() {
        let node = InstanceId::new("i-a");
        let ids = [EniId::new("eni-1")];
        assert!(allocation_intact(
            &ids,
            &node,
            &[view("eni-1", Some("i-a"), true)]
        ));
        assert!(!allocation_intact(&ids, &node, &[]));
        assert!(!allocation_intact(
            &ids,
            &node,
            &[view("eni-1", None, true)]
        ));
        assert!(!allocation_intact(
            &ids,
            &node,
            &[view("eni-1", Some("i-b"), true)]
        ));
        assert!(!allocation_intact(&[], &node, &[]));
    }

    #[test]
    fn capacity_stops_at_the_zones_free_addresses_plus_what_pods_hold() {
        // 7 slots, 2 held by pods, 3 addresses left: 2 + 3.
        assert_eq!(capacity_within_addresses(7, 2, 3), 5);
        // Plenty of addresses: the slots decide.
        assert_eq!(capacity_within_addresses(7, 2, 4000), 7);
        // An exhausted zone: only the pods already served keep their count.
        assert_eq!(capacity_within_addresses(7, 2, 0), 2);
        assert_eq!(capacity_within_addresses(7, 0, 0), 0);
        // Foreign ENIs took the slots: addresses do not add any.
        assert_eq!(capacity_within_addresses(0, 0, 50), 0);
        assert_eq!(capacity_within_addresses(3, u32::MAX, u32::MAX), 3);
    }

    proptest! {
        #[test]
        fn capacity_within_addresses_never_exceeds_slots_or_free_addresses(
            slots in 0u32..20, held in 0u32..20, free in 0u32..100, more in 0u32..50,
        ) {
            let c = capacity_within_addresses(slots, held, free);
            prop_assert!(c <= slots);
            // New ENIs it lets the scheduler place: never more than free addresses.
            prop_assert!(c.saturating_sub(held) <= free);
            // Pods already served keep their count while the slots allow.
            prop_assert!(c >= held.min(slots));
            // More free addresses never lower it.
            prop_assert!(capacity_within_addresses(slots, held, free + more) >= c);
        }
    }

    proptest! {
        /// Two different (generation, slot) pairs never share a create
        /// token, even for a generation someone forged in an annotation.
        #[test]
        fn token_indexes_never_collide(g1 in any::<u32>(), s1 in any::<u32>(), g2 in any::<u32>(), s2 in any::<u32>()) {
            prop_assume!((g1, s1) != (g2, s2));
            prop_assert_ne!(create_token_index(g1, s1), create_token_index(g2, s2));
            let uid = "0b5f9a6e-3c1d-4f7a-9e2b-1a2b3c4d5e6f";
            prop_assert_ne!(
                eni_client_token(uid, create_token_index(g1, s1)),
                eni_client_token(uid, create_token_index(g2, s2))
            );
        }
    }

    #[test]
    fn a_node_is_given_up_on_only_after_the_limit_and_never_with_zero() {
        let s = Duration::from_secs;
        assert!(!give_up_on_node(s(299), s(300)));
        assert!(give_up_on_node(s(300), s(300)));
        assert!(!give_up_on_node(s(10_000), s(0)));
    }

    #[test]
    fn shared_mode_reserves_its_slots_and_max_pods_counts_secondary_ips() {
        assert_eq!(shared_slots_taken(2, 0), 2);
        assert_eq!(shared_slots_taken(2, 3), 3);
        // ecs.g6.large: 3 ENIs, 6 IPv4 each -> 2 shared ENIs x 5 + 2.
        assert_eq!(max_pods(3, 6, 2, 2), 12);
        // More shared ENIs asked for than the type has secondary slots.
        assert_eq!(max_pods(3, 6, 9, 2), 12);
        // m5.large: 3 ENIs x 10 IPv4, all secondary ENIs shared.
        assert_eq!(max_pods(3, 10, 2, 0), 18);
        let t = shared_eni_tags(&ClusterId::new("c1"), "node-a");
        assert!(is_shared(&t) && is_owned(&t, &ClusterId::new("c1")));
        assert_eq!(node_of(&t), Some("node-a"));
        assert_eq!(pod_uid_of(&t), None);
        let pod = PodRef {
            namespace: "ns".into(),
            name: "p".into(),
            uid: "u".into(),
        };
        assert!(!is_shared(&owned_eni_tags(
            &ClusterId::new("c1"),
            &pod,
            "node-a"
        )));
    }

    #[test]
    fn token_index_differs_per_generation() {
        assert_ne!(create_token_index(0, 0), create_token_index(1, 0));
        assert_ne!(create_token_index(0, 1), create_token_index(0, 0));
        assert_ne!(
            eni_client_token("u", create_token_index(1, 0)),
            eni_client_token("u", create_token_index(0, 0))
        );
    }

    #[test]
    fn orphaned_owned_enis_hold_slots_but_live_pods_enis_do_not() {
        let ours = |uid: &str| AttachedEniView {
            owned: true,
            pod_uid: Some(uid.into()),
        };
        let foreign = AttachedEniView {
            owned: false,
            pod_uid: None,
        };
        let live: HashSet<String> = ["a".to_owned()].into();
        let enis = [ours("a"), ours("gone"), foreign];
        assert_eq!(slots_held_outside_pods(&enis, Some(&live)), 2);
        // Pod list not known yet: only the foreign one.
        assert_eq!(slots_held_outside_pods(&enis, None), 1);
        assert_eq!(slots_held_outside_pods(&[], Some(&live)), 0);
        // An owned ENI without a pod uid belongs to no pod.
        let untagged_uid = AttachedEniView {
            owned: true,
            pod_uid: None,
        };
        assert_eq!(slots_held_outside_pods(&[untagged_uid], Some(&live)), 1);
    }

    #[test]
    fn pod_request_sums_app_containers_and_takes_the_largest_init() {
        let ask = |limit: Option<&'static str>, request: Option<&'static str>| ContainerAsk {
            limit,
            request,
        };
        let apps = [ask(Some("2"), None), ask(None, Some("1")), ask(None, None)];
        assert_eq!(pod_eni_request(&apps, &[]), Ok(3));
        assert_eq!(pod_eni_request(&apps, &[ask(Some("5"), None)]), Ok(5));
        assert_eq!(pod_eni_request(&apps, &[ask(Some("1"), None)]), Ok(3));
        // The limit wins over the request.
        assert_eq!(pod_eni_request(&[ask(Some("1"), Some("4"))], &[]), Ok(1));
        assert_eq!(pod_eni_request(&[], &[]), Ok(0));
        let err = pod_eni_request(&[ask(None, None), ask(Some("1.5"), None)], &[]).unwrap_err();
        assert_eq!((err.container, err.init), (1, false));
        assert_eq!(err.value, "1.5");
    }

    #[test]
    fn an_orphan_of_unknown_age_still_needs_two_passes() {
        let orphan = OwnedEniView {
            id: EniId::new("eni-1"),
            pod_uid: Some("gone".into()),
            attached: false,
            age: None,
        };
        let none = HashSet::new();
        let grace = Duration::from_secs(600);
        let first = gc_plan(std::slice::from_ref(&orphan), &none, grace, &HashSet::new());
        assert!(first.release_now.is_empty());
        let seen: HashSet<EniId> = first.mark.into_iter().collect();
        let second = gc_plan(std::slice::from_ref(&orphan), &none, grace, &seen);
        assert_eq!(second.release_now, [EniId::new("eni-1")]);
    }

    #[test]
    fn slots_and_capacity() {
        // ecs 4 vCPU / 8 GiB: 3 ENIs incl. primary -> 2 secondary slots.
        assert_eq!(secondary_eni_slots(3), 2);
        assert_eq!(secondary_eni_slots(0), 0);
        assert_eq!(free_eni_slots(3, 1), 2);
        assert_eq!(free_eni_slots(3, 5), 0);
        assert_eq!(advertised_capacity(3, 0), 2);
        assert_eq!(advertised_capacity(3, 1), 1);
        assert_eq!(advertised_capacity(3, 7), 0);
    }

    #[test]
    fn tags_mark_ownership_for_one_cluster_only() {
        let c = ClusterId::new("c-prod");
        let tags = owned_eni_tags(&c, &pod(), "node-a");
        assert_eq!(tags.get(tag::POD_UID).unwrap(), &pod().uid);
        assert_eq!(tags.get(tag::NODE).unwrap(), "node-a");
        assert_eq!(tags.get(tag::CREATOR).unwrap(), "vpc-eni-controller");
        assert!(is_owned(&tags, &c));
        assert!(!is_owned(&tags, &ClusterId::new("c-staging")));
        let mut foreign = tags.clone();
        foreign.insert(tag::CREATOR.into(), "terway".into());
        assert!(!is_owned(&foreign, &c));
        assert!(!is_owned(&BTreeMap::new(), &c));
        assert_eq!(pod_uid_of(&tags), Some(pod().uid.as_str()));
    }

    #[test]
    fn long_names_are_truncated_to_the_tag_limit() {
        let long = "x".repeat(253);
        let p = PodRef {
            name: long.clone(),
            ..pod()
        };
        let c = ClusterId::new("y".repeat(200));
        let tags = owned_eni_tags(&c, &p, &long);
        assert!(tags
            .values()
            .all(|v| v.chars().count() <= MAX_TAG_VALUE_CHARS));
        assert!(is_owned(&tags, &c));
    }

    #[test]
    fn client_token_is_stable_and_short() {
        let a = eni_client_token(&pod().uid, 0);
        assert_eq!(a, eni_client_token(&pod().uid, 0));
        assert_ne!(a, eni_client_token(&pod().uid, 1));
        assert_ne!(a, eni_client_token("another-uid", 0));
        assert!(a.as_str().contains(&pod().uid));
        let weird = eni_client_token(&"ü".repeat(100), u64::from(u32::MAX));
        assert!(
            weird.as_str().is_ascii() && weird.as_str().len() <= 64,
            "{weird}"
        );
    }

    fn eni(id: &str, uid: Option<&str>, age_s: u64) -> OwnedEniView {
        OwnedEniView {
            id: EniId::new(id),
            pod_uid: uid.map(str::to_owned),
            attached: true,
            age: Some(Duration::from_secs(age_s)),
        }
    }

    #[test]
    fn orphan_is_released_only_on_second_sighting_after_grace() {
        let grace = Duration::from_secs(600);
        let live: HashSet<String> = ["live".to_owned()].into();
        let enis = vec![
            eni("eni-live", Some("live"), 9999),
            eni("eni-old", Some("gone"), 9999),
            eni("eni-young", Some("gone"), 10),
            eni("eni-untagged", None, 9999),
        ];
        let first = gc_plan(&enis, &live, grace, &HashSet::new());
        assert!(first.release_now.is_empty());
        assert_eq!(
            first.mark,
            vec![
                EniId::new("eni-old"),
                EniId::new("eni-young"),
                EniId::new("eni-untagged")
            ]
        );
        let seen: HashSet<EniId> = first.mark.iter().cloned().collect();
        let second = gc_plan(&enis, &live, grace, &seen);
        assert_eq!(
            second.release_now,
            vec![EniId::new("eni-old"), EniId::new("eni-untagged")]
        );
        // A pod that comes back (late watch event) saves its ENI.
        let live2: HashSet<String> = ["live".to_owned(), "gone".to_owned()].into();
        let third = gc_plan(&enis, &live2, grace, &seen);
        assert_eq!(third.release_now, vec![EniId::new("eni-untagged")]);
    }

    proptest! {
        #[test]
        fn gc_never_releases_live_or_unknown_enis(
            enis in proptest::collection::btree_map(0u8..20, (proptest::option::of(0u8..10), 0u64..2000), 0..20),
            live in proptest::collection::hash_set(0u8..10, 0..10),
            seen in proptest::collection::hash_set(0u8..25, 0..25),
            grace in 0u64..1500,
        ) {
            let views: Vec<OwnedEniView> = enis
                .iter()
                .map(|(id, (uid, age))| OwnedEniView {
                    id: EniId::new(format!("eni-{id}")),
                    pod_uid: uid.map(|u| format!("uid-{u}")),
                    attached: false,
                    age: Some(Duration::from_secs(*age)),
                })
                .collect();
            let live: HashSet<String> = live.iter().map(|u| format!("uid-{u}")).collect();
            let seen: HashSet<EniId> = seen.iter().map(|i| EniId::new(format!("eni-{i}"))).collect();
            let plan = gc_plan(&views, &live, Duration::from_secs(grace), &seen);
            for id in &plan.release_now {
                let matching: Vec<&OwnedEniView> = views.iter().filter(|v| &v.id == id).collect();
                prop_assert!(!matching.is_empty(), "released {} which is not ours", id);
                for v in matching {
                    prop_assert!(!v.pod_uid.as_ref().is_some_and(|u| live.contains(u)), "released live {}", id);
                }
                prop_assert!(seen.contains(id));
                prop_assert!(plan.mark.contains(id));
            }
        }

        /// Whatever is tagged for the pod, the plan ends with exactly `need`
        /// ENIs on the node: kept + created = need, nothing is both kept and
        /// released, every observed ENI is either kept or released, and an
        /// ENI on another instance is never kept.
        #[test]
        fn pod_plan_reaches_exactly_the_need(
            need in 0u32..4,
            enis in proptest::collection::vec((0u8..6, proptest::option::of(0u8..3), any::<bool>()), 0..7),
        ) {
            let node = InstanceId::new("i-node0");
            let views: Vec<PodEniView> = enis
                .iter()
                .map(|(id, at, ann)| PodEniView {
                    id: EniId::new(format!("eni-{id}")),
                    attached_to: at.map(|i| InstanceId::new(format!("i-node{i}"))),
                    annotated: *ann,
                })
                .collect();
            let plan = plan_pod_enis(need, &node, &views);
            prop_assert_eq!(plan.keep.len() as u32 + plan.create, need);
            let distinct: HashSet<&EniId> = views.iter().map(|v| &v.id).collect();
            prop_assert_eq!(plan.keep.len() + plan.release.len(), distinct.len());
            for id in &plan.keep {
                prop_assert!(!plan.release.contains(id));
                let v = views.iter().find(|v| &v.id == id).unwrap();
                prop_assert!(v.attached_to.is_none() || v.attached_to.as_ref() == Some(&node));
            }
            // Repeating the plan after applying it changes nothing.
            let created = (0..plan.create).map(|i| EniId::new(format!("eni-new-{i}")));
            let after: Vec<PodEniView> = plan
                .keep
                .iter()
                .cloned()
                .chain(created)
                .map(|id| PodEniView { id, attached_to: Some(node.clone()), annotated: true })
                .collect();
            let again = plan_pod_enis(need, &node, &after);
            prop_assert!(again.release.is_empty());
            prop_assert_eq!(again.create, 0);
            prop_assert_eq!(again.keep.len() as u32, need);
        }

        #[test]
        fn client_token_always_fits(uid in "\\PC{0,80}", index in any::<u64>()) {
            let t = eni_client_token(&uid, index);
            prop_assert!(t.as_str().is_ascii());
            prop_assert!(t.as_str().len() <= MAX_CLIENT_TOKEN_LEN);
            prop_assert_eq!(t.clone(), eni_client_token(&uid, index));
        }
    }
}
