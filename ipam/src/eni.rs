//! Exclusive-ENI decisions: how many ENI slots a node has and advertises,
//! how the controller marks the ENIs it creates, the idempotency token of a
//! create, and which orphaned ENIs garbage collection may release.

use crate::ids::{ClusterId, EniId, IdempotencyToken};
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
pub fn eni_client_token(pod_uid: &str, index: u32) -> IdempotencyToken {
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
    /// Time since creation.
    pub age: Duration,
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
        if eni.age >= grace && seen_last_pass.contains(&eni.id) {
            plan.release_now.push(eni.id.clone());
        }
    }
    plan
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
        let weird = eni_client_token(&"ü".repeat(100), u32::MAX);
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
            age: Duration::from_secs(age_s),
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
                    age: Duration::from_secs(*age),
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

        #[test]
        fn client_token_always_fits(uid in "\\PC{0,80}", index in any::<u32>()) {
            let t = eni_client_token(&uid, index);
            prop_assert!(t.as_str().is_ascii());
            prop_assert!(t.as_str().len() <= MAX_CLIENT_TOKEN_LEN);
            prop_assert_eq!(t.clone(), eni_client_token(&uid, index));
        }
    }
}
