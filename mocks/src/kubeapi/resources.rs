//! The table of resource types the fake serves. Adding a built-in type is one
//! entry in `builtin()`; CustomResourceDefinitions add entries at run time.

use serde_json::Value;
use std::sync::Arc;

/// How a resource's wire form relates to its stored form.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum View {
    /// Stored as served.
    Plain,
    /// `events.k8s.io/v1` Event: stored as core/v1 Event, converted on the way in and out.
    EventsV1,
}

/// One served resource (group/version/plural) and how it is stored.
#[derive(Debug, Clone, PartialEq)]
pub struct ResourceDesc {
    /// API group, empty for core.
    pub group: String,
    /// API version, e.g. `v1`.
    pub version: String,
    /// Lower-case plural, the path segment.
    pub plural: String,
    /// Lower-case singular.
    pub singular: String,
    /// Kind, e.g. `Pod`.
    pub kind: String,
    /// Whether objects live in namespaces.
    pub namespaced: bool,
    /// Whether a `/status` subresource exists (status ignored on main-resource writes).
    pub has_status: bool,
    /// Short names for kubectl (`po`, `no`...).
    pub short_names: Vec<String>,
    /// Wire/storage relation.
    pub view: View,
    /// Storage key: objects of all versions (and views) sharing it are one set.
    pub storage: StorageKey,
}

/// Identifies one set of stored objects.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StorageKey {
    /// Group of the stored form.
    pub group: String,
    /// Plural of the stored form.
    pub plural: String,
}

impl ResourceDesc {
    /// `apiVersion` value for objects of this resource.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// A plain (non-converted) resource.
    #[allow(clippy::too_many_arguments)]
    pub fn plain(
        group: &str,
        version: &str,
        plural: &str,
        kind: &str,
        namespaced: bool,
        has_status: bool,
        short_names: &[&str],
    ) -> Self {
        ResourceDesc {
            group: group.into(),
            version: version.into(),
            plural: plural.into(),
            singular: kind.to_lowercase(),
            kind: kind.into(),
            namespaced,
            has_status,
            short_names: short_names.iter().map(|s| s.to_string()).collect(),
            view: View::Plain,
            storage: StorageKey {
                group: group.into(),
                plural: plural.into(),
            },
        }
    }
}

/// The built-in resources.
pub fn builtin() -> Vec<ResourceDesc> {
    let p = ResourceDesc::plain;
    let mut events_v1 = p(
        "events.k8s.io",
        "v1",
        "events",
        "Event",
        true,
        false,
        &["ev"],
    );
    events_v1.view = View::EventsV1;
    events_v1.storage = StorageKey {
        group: String::new(),
        plural: "events".into(),
    };
    vec![
        p("", "v1", "namespaces", "Namespace", false, true, &["ns"]),
        p("", "v1", "nodes", "Node", false, true, &["no"]),
        p("", "v1", "pods", "Pod", true, true, &["po"]),
        p("", "v1", "events", "Event", true, false, &["ev"]),
        p("", "v1", "configmaps", "ConfigMap", true, false, &["cm"]),
        p("", "v1", "secrets", "Secret", true, false, &[]),
        p(
            "",
            "v1",
            "serviceaccounts",
            "ServiceAccount",
            true,
            false,
            &["sa"],
        ),
        p("", "v1", "services", "Service", true, true, &["svc"]),
        events_v1,
        p(
            "coordination.k8s.io",
            "v1",
            "leases",
            "Lease",
            true,
            false,
            &[],
        ),
        p(
            "apps",
            "v1",
            "deployments",
            "Deployment",
            true,
            true,
            &["deploy"],
        ),
        p(
            "apiextensions.k8s.io",
            "v1",
            "customresourcedefinitions",
            "CustomResourceDefinition",
            false,
            true,
            &["crd", "crds"],
        ),
    ]
}

/// The resources a CustomResourceDefinition object declares (one per served version).
pub fn from_crd(crd: &Value) -> Vec<ResourceDesc> {
    let spec = &crd["spec"];
    let group = spec["group"].as_str().unwrap_or_default();
    let names = &spec["names"];
    let (Some(plural), Some(kind)) = (names["plural"].as_str(), names["kind"].as_str()) else {
        return Vec::new();
    };
    if group.is_empty() {
        return Vec::new();
    }
    let singular = names["singular"]
        .as_str()
        .map(str::to_string)
        .unwrap_or_else(|| kind.to_lowercase());
    let short: Vec<String> = names["shortNames"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    let namespaced = spec["scope"].as_str() != Some("Cluster");
    let mut out = Vec::new();
    for v in spec["versions"].as_array().into_iter().flatten() {
        let Some(version) = v["name"].as_str() else {
            continue;
        };
        if v["served"].as_bool() == Some(false) {
            continue;
        }
        out.push(ResourceDesc {
            group: group.into(),
            version: version.into(),
            plural: plural.into(),
            singular: singular.clone(),
            kind: kind.into(),
            namespaced,
            has_status: v["subresources"]["status"].is_object(),
            short_names: short.clone(),
            view: View::Plain,
            storage: StorageKey {
                group: group.into(),
                plural: plural.into(),
            },
        });
    }
    out
}

/// The set of served resources; built-ins plus whatever CRDs registered.
#[derive(Debug, Clone, Default)]
pub struct Registry {
    resources: Vec<Arc<ResourceDesc>>,
}

impl Registry {
    /// A registry holding the built-in resources.
    pub fn with_builtins() -> Self {
        Registry {
            resources: builtin().into_iter().map(Arc::new).collect(),
        }
    }

    /// Find by group, version and plural.
    pub fn find(&self, group: &str, version: &str, plural: &str) -> Option<Arc<ResourceDesc>> {
        self.resources
            .iter()
            .find(|r| r.group == group && r.version == version && r.plural == plural)
            .cloned()
    }

    /// Find by group and plural, first (preferred) version.
    pub fn find_any_version(&self, group: &str, plural: &str) -> Option<Arc<ResourceDesc>> {
        self.resources
            .iter()
            .find(|r| r.group == group && r.plural == plural)
            .cloned()
    }

    /// Every served resource, in registration order.
    pub fn all(&self) -> &[Arc<ResourceDesc>] {
        &self.resources
    }

    /// Replace the resources of one CRD (group + plural) with `descs`.
    pub fn set_crd(&mut self, group: &str, plural: &str, descs: Vec<ResourceDesc>) {
        self.resources.retain(|r| {
            !(r.group == group && r.plural == plural && r.view == View::Plain && is_custom(r))
        });
        self.resources.extend(descs.into_iter().map(Arc::new));
    }

    /// Groups in first-seen order with their versions in first-seen order.
    pub fn groups(&self) -> Vec<(String, Vec<String>)> {
        let mut out: Vec<(String, Vec<String>)> = Vec::new();
        for r in &self.resources {
            match out.iter_mut().find(|(g, _)| *g == r.group) {
                Some((_, vs)) => {
                    if !vs.contains(&r.version) {
                        vs.push(r.version.clone())
                    }
                }
                None => out.push((r.group.clone(), vec![r.version.clone()])),
            }
        }
        out
    }
}

/// Built-in resources can never be replaced by a CRD of the same name.
fn is_custom(r: &ResourceDesc) -> bool {
    !builtin()
        .iter()
        .any(|b| b.group == r.group && b.plural == r.plural)
}
