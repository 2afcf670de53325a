//! The contract between the controller and the node half: the
//! `vpc-eni.io/allocation` annotation the controller writes on a pod and the
//! CNI plugin reads to plumb the pod's network, its one type and one parser,
//! and the finalizer that holds the pod until what it was given is released.

use crate::ids::EniId;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The annotation key holding the allocation JSON.
pub const ALLOCATION_ANNOTATION: &str = "vpc-eni.io/allocation";

/// The finalizer that keeps a pod until its ENIs are detached and deleted.
pub const RELEASE_FINALIZER: &str = "vpc-eni.io/eni-release";

/// How the pod holds its address: a whole ENI, or one secondary IP of a
/// shared ENI that stays in the node's namespace.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum AllocationMode {
    /// The pod owns the ENI; `ip` is its primary address. A recorded
    /// allocation without a mode (written before shared mode existed) is
    /// exclusive.
    #[default]
    Exclusive,
    /// `ip` is a secondary address of the shared ENI `eniId` of the node.
    Shared,
}

impl AllocationMode {
    pub fn as_str(self) -> &'static str {
        match self {
            AllocationMode::Exclusive => "exclusive",
            AllocationMode::Shared => "shared",
        }
    }
}

/// One ENI given to a pod.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EniAllocation {
    pub eni_id: String,
    pub mac: String,
    /// The ENI's primary private IP: the pod's IP.
    pub ip: String,
    pub subnet_id: String,
    pub subnet_cidr: String,
    pub gateway: String,
    /// The node whose instance the ENI is attached to.
    pub node: String,
}

/// The annotation's value. The first ENI's fields are at the top level (what
/// a pod with one ENI needs); a pod that asked for more also gets `enis`,
/// every ENI in order, the first included.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodAllocation {
    /// Exclusive (the ENI is the pod's) or shared (one of its IPs is).
    #[serde(default)]
    pub mode: AllocationMode,
    #[serde(flatten)]
    pub first: EniAllocation,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub enis: Vec<EniAllocation>,
    /// Bumped each time the allocation is re-made because its ENI vanished;
    /// part of the create idempotency token.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub generation: u32,
    /// Shared mode: the uid of the pod the IP was given to. A copy of the
    /// annotation on another pod (made from its YAML) names the wrong uid
    /// and is not taken as that pod's allocation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_uid: Option<String>,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

impl PodAllocation {
    /// Build from the pod's ENIs in order; `None` when there are none.
    pub fn new(enis: Vec<EniAllocation>, generation: u32) -> Option<Self> {
        let first = enis.first()?.clone();
        let enis = if enis.len() > 1 { enis } else { Vec::new() };
        Some(Self {
            mode: AllocationMode::Exclusive,
            first,
            enis,
            generation,
            pod_uid: None,
        })
    }

    /// One secondary IP of a shared ENI (`eni.ip` is that IP), given to the
    /// pod with `pod_uid`.
    pub fn shared(eni: EniAllocation, pod_uid: &str) -> Self {
        Self {
            mode: AllocationMode::Shared,
            first: eni,
            enis: Vec::new(),
            generation: 0,
            pod_uid: Some(pod_uid.to_owned()),
        }
    }

    pub fn is_shared(&self) -> bool {
        self.mode == AllocationMode::Shared
    }

    /// Every ENI of the allocation, the first included.
    pub fn all(&self) -> Vec<&EniAllocation> {
        if self.enis.is_empty() {
            vec![&self.first]
        } else {
            self.enis.iter().collect()
        }
    }

    /// The ids of every ENI of the allocation, in order.
    pub fn eni_ids(&self) -> Vec<EniId> {
        self.all()
            .iter()
            .map(|e| EniId::new(e.eni_id.clone()))
            .collect()
    }

    /// Whether this recorded allocation can be taken as the pod's own
    /// without making it again: the pod carries our release finalizer (we
    /// add it before anything is created, so a copied or hand-written
    /// annotation lacks it) and every ENI is on the node the pod is bound to.
    /// That the ENIs are tagged with the pod's uid is checked against the
    /// cloud by whoever acts on it.
    pub fn vouched_for(&self, has_our_finalizer: bool, bound_node: &str) -> bool {
        has_our_finalizer && self.all().iter().all(|e| e.node == bound_node)
    }

    /// Parse the annotation's value.
    pub fn parse(value: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(value)
    }

    /// The allocation recorded in an object's annotations: `None` when there
    /// is none, or when it does not parse (then it is no allocation: the
    /// controller makes it again, the node half waits for it).
    pub fn from_annotations(annotations: &BTreeMap<String, String>) -> Option<Self> {
        Self::parse(annotations.get(ALLOCATION_ANNOTATION)?).ok()
    }

    pub fn to_json(&self) -> String {
        // Plain strings and numbers: serialisation cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eni(id: &str, ip: &str) -> EniAllocation {
        EniAllocation {
            eni_id: id.into(),
            mac: "00:16:3e:00:00:01".into(),
            ip: ip.into(),
            subnet_id: "vsw-h1".into(),
            subnet_cidr: "10.0.0.0/24".into(),
            gateway: "10.0.0.253".into(),
            node: "node-a".into(),
        }
    }

    #[test]
    fn one_eni_is_flat_json_with_the_documented_keys() {
        let a = PodAllocation::new(vec![eni("eni-1", "10.0.0.7")], 0).unwrap();
        let v: serde_json::Value = serde_json::from_str(&a.to_json()).unwrap();
        let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(
            keys.iter()
                .copied()
                .collect::<std::collections::BTreeSet<_>>(),
            [
                "eniId",
                "gateway",
                "ip",
                "mac",
                "mode",
                "node",
                "subnetCidr",
                "subnetId"
            ]
            .into_iter()
            .collect()
        );
        assert_eq!(v["ip"], "10.0.0.7");
        assert_eq!(v["mode"], "exclusive");
        assert_eq!(PodAllocation::parse(&a.to_json()).unwrap(), a);
    }

    #[test]
    fn an_allocation_without_a_mode_reads_as_exclusive_and_shared_round_trips() {
        let old = r#"{"eniId":"eni-1","mac":"m","ip":"10.0.0.7","subnetId":"vsw","subnetCidr":"10.0.0.0/24","gateway":"10.0.0.253","node":"n"}"#;
        let a = PodAllocation::parse(old).unwrap();
        assert_eq!(a.mode, AllocationMode::Exclusive);
        assert!(!a.is_shared());
        let s = PodAllocation::shared(eni("eni-1", "10.0.0.9"), "uid-1");
        let v: serde_json::Value = serde_json::from_str(&s.to_json()).unwrap();
        assert_eq!(v["mode"], "shared");
        assert_eq!(v["podUid"], "uid-1");
        assert_eq!(v["ip"], "10.0.0.9");
        let back = PodAllocation::parse(&s.to_json()).unwrap();
        assert!(back.is_shared());
        assert_eq!(back, s);
        assert!(PodAllocation::parse(&old.replace("\"n\"}", "\"n\",\"mode\":\"trunk\"}")).is_err());
    }

    #[test]
    fn several_enis_are_listed_in_order() {
        let a = PodAllocation::new(vec![eni("eni-1", "10.0.0.7"), eni("eni-2", "10.0.0.8")], 2)
            .unwrap();
        let back = PodAllocation::parse(&a.to_json()).unwrap();
        assert_eq!(back.first.eni_id, "eni-1");
        let ids: Vec<&str> = back.all().iter().map(|e| e.eni_id.as_str()).collect();
        assert_eq!(ids, ["eni-1", "eni-2"]);
        assert_eq!(back.generation, 2);
        assert!(PodAllocation::new(vec![], 0).is_none());
    }

    #[test]
    fn only_an_allocation_with_our_finalizer_on_the_bound_node_is_vouched_for() {
        let a = PodAllocation::new(vec![eni("eni-1", "10.0.0.7"), eni("eni-2", "10.0.0.8")], 0)
            .unwrap();
        assert!(a.vouched_for(true, "node-a"));
        assert!(!a.vouched_for(false, "node-a"), "copied from another pod");
        assert!(!a.vouched_for(true, "node-b"), "the pod is bound elsewhere");
        let mut moved = a.clone();
        moved.enis[1].node = "node-b".into();
        assert!(!moved.vouched_for(true, "node-a"));
    }

    #[test]
    fn from_annotations_reads_only_a_parsable_allocation() {
        let a = PodAllocation::new(vec![eni("eni-1", "10.0.0.7")], 0).unwrap();
        let mut map = BTreeMap::new();
        assert_eq!(PodAllocation::from_annotations(&map), None);
        map.insert(ALLOCATION_ANNOTATION.to_owned(), "{not json".to_owned());
        assert_eq!(PodAllocation::from_annotations(&map), None);
        map.insert(ALLOCATION_ANNOTATION.to_owned(), a.to_json());
        assert_eq!(PodAllocation::from_annotations(&map), Some(a));
    }

    mod arbitrary_input {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(2000))]

            /// Whatever a user writes in the annotation, reading it never
            /// panics; what parses writes back to the same value.
            #[test]
            fn any_bytes_parse_or_fail_cleanly(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
                let text = String::from_utf8_lossy(&bytes);
                if let Ok(a) = PodAllocation::parse(&text) {
                    prop_assert_eq!(PodAllocation::parse(&a.to_json()).ok(), Some(a));
                }
            }

            #[test]
            fn json_shaped_input_parses_or_fails_cleanly(
                id in "\\PC{0,20}", ip in "\\PC{0,20}", gen in any::<i64>(), extra in "\\PC{0,10}",
            ) {
                let text = format!(
                    r#"{{"eniId":{id:?},"mac":"","ip":{ip:?},"subnetId":"","subnetCidr":"","gateway":"","node":"","generation":{gen},"x":{extra:?},"enis":[{{"eniId":1}}]}}"#
                );
                let _ = PodAllocation::parse(&text);
                let mut map = BTreeMap::new();
                map.insert(ALLOCATION_ANNOTATION.to_owned(), text);
                let _ = PodAllocation::from_annotations(&map);
            }
        }
    }
}
