//! The object store: every object as `serde_json::Value`, one global
//! resourceVersion, a bounded history of changes for watches (older
//! resourceVersions answer 410 Gone), optimistic concurrency, finalizers,
//! status subresources, generateName, CRD registration.

use super::error::ApiError;
use super::events;
use super::patch::{self, PatchKind};
use super::resources::{self, Registry, ResourceDesc, StorageKey, View};
use super::selectors::{FieldSelector, LabelSelector};
use parking_lot::Mutex;
use rand::Rng;
use serde_json::{json, Map, Value};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use tokio::sync::broadcast;

/// What happened to an object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeType {
    /// Created.
    Added,
    /// Updated (including deletionTimestamp being set).
    Modified,
    /// Removed from the store.
    Deleted,
}

impl ChangeType {
    /// The watch event type string.
    pub fn as_str(self) -> &'static str {
        match self {
            ChangeType::Added => "ADDED",
            ChangeType::Modified => "MODIFIED",
            ChangeType::Deleted => "DELETED",
        }
    }
}

/// One committed change, as kept in history and sent to watchers.
#[derive(Debug, Clone)]
pub struct Change {
    /// The resourceVersion this change produced.
    pub rv: u64,
    /// Which object set changed.
    pub storage: StorageKey,
    /// What happened.
    pub kind: ChangeType,
    /// The object after the change (for Deleted: its last state).
    pub obj: Arc<Value>,
    /// The object before the change, when there was one.
    pub prev: Option<Arc<Value>>,
}

/// What watchers receive.
#[derive(Debug, Clone)]
pub enum Broadcast {
    /// A committed change.
    Change(Arc<Change>),
    /// History was dropped: every open watch must end with 410 Gone.
    Expire,
}

/// Which part of an object a write addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sub {
    /// The main resource: status is preserved if the type has a status subresource.
    Main,
    /// The `/status` subresource: only status changes.
    Status,
}

/// Options of a list call.
#[derive(Debug, Clone, Default)]
pub struct ListOptions {
    /// `labelSelector`
    pub labels: LabelSelector,
    /// `fieldSelector`
    pub fields: FieldSelector,
    /// `limit` (0 = no limit)
    pub limit: usize,
    /// `continue`
    pub continue_token: Option<String>,
}

/// One page of a list.
#[derive(Debug, Clone)]
pub struct ListPage {
    /// Items in wire form.
    pub items: Vec<Arc<Value>>,
    /// `metadata.resourceVersion` of the list.
    pub resource_version: u64,
    /// `metadata.continue`, when more items remain.
    pub continue_token: Option<String>,
    /// `metadata.remainingItemCount`, when more items remain.
    pub remaining: Option<usize>,
}

/// The starting point of a watch.
pub struct WatchStart {
    /// Changes to replay before live ones (synthetic ADDED for a fresh watch).
    pub backlog: Vec<Arc<Change>>,
    /// Live changes, subscribed atomically with the backlog snapshot.
    pub rx: broadcast::Receiver<Broadcast>,
    /// The resourceVersion the backlog brings the watcher to.
    pub rv: u64,
}

type ObjKey = (String, String);

struct Inner {
    rv: u64,
    registry: Registry,
    objects: HashMap<StorageKey, BTreeMap<ObjKey, Arc<Value>>>,
    history: VecDeque<Arc<Change>>,
    history_size: usize,
    /// Changes with rv <= this are no longer in history.
    compacted_rv: u64,
}

/// The shared object store.
pub struct Store {
    inner: Mutex<Inner>,
    tx: broadcast::Sender<Broadcast>,
}

/// Current time as a Kubernetes `Time`.
pub fn now_time() -> String {
    chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// Current time as a Kubernetes `MicroTime`.
pub fn now_micro() -> String {
    chrono::Utc::now()
        .format("%Y-%m-%dT%H:%M:%S%.6fZ")
        .to_string()
}

fn random_suffix() -> String {
    // The alphabet upstream uses for generateName (no vowels, no confusable digits).
    const ALPHA: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut rng = rand::rng();
    (0..5)
        .map(|_| ALPHA[rng.random_range(0..ALPHA.len())] as char)
        .collect()
}

fn meta_str<'a>(obj: &'a Value, field: &str) -> &'a str {
    obj["metadata"][field].as_str().unwrap_or_default()
}

fn finalizers(obj: &Value) -> Vec<Value> {
    obj["metadata"]["finalizers"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// Everything except metadata and status: a change here bumps generation.
fn spec_part(obj: &Value) -> Map<String, Value> {
    let mut m = obj.as_object().cloned().unwrap_or_default();
    for k in ["metadata", "status", "apiVersion", "kind"] {
        m.remove(k);
    }
    m
}

/// Convert a stored object to the wire form of `r`.
pub fn to_wire(r: &ResourceDesc, stored: &Arc<Value>) -> Arc<Value> {
    match r.view {
        View::EventsV1 => Arc::new(events::core_to_v1(stored)),
        View::Plain => {
            let av = r.api_version();
            if stored["apiVersion"].as_str() == Some(av.as_str()) {
                stored.clone()
            } else {
                let mut v = (**stored).clone();
                v["apiVersion"] = json!(av);
                Arc::new(v)
            }
        }
    }
}

fn from_wire(r: &ResourceDesc, mut obj: Value) -> Value {
    if r.view == View::EventsV1 {
        obj = events::v1_to_core(&obj);
    }
    obj
}

impl Store {
    /// A store with the built-in resources, namespaces `default`,
    /// `kube-system`, `kube-public`, `kube-node-lease`, and a history of
    /// `history_size` changes; `watch_buffer` bounds how far a watcher may lag.
    pub fn new(history_size: usize, watch_buffer: usize) -> Arc<Self> {
        let (tx, _) = broadcast::channel(watch_buffer.max(16));
        let store = Arc::new(Store {
            inner: Mutex::new(Inner {
                rv: 0,
                registry: Registry::with_builtins(),
                objects: HashMap::new(),
                history: VecDeque::new(),
                history_size: history_size.max(1),
                compacted_rv: 0,
            }),
            tx,
        });
        for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
            if let Ok(r) = store.resource("", "namespaces") {
                let _ = store.create(&r, "", json!({"metadata": {"name": ns}}));
            }
        }
        store
    }

    /// The resource `<plural>` of `group` (preferred version).
    pub fn resource(&self, group: &str, plural: &str) -> Result<Arc<ResourceDesc>, ApiError> {
        self.inner
            .lock()
            .registry
            .find_any_version(group, plural)
            .ok_or_else(ApiError::no_route)
    }

    /// The resource for an exact group/version/plural.
    pub fn resource_version(
        &self,
        group: &str,
        version: &str,
        plural: &str,
    ) -> Option<Arc<ResourceDesc>> {
        self.inner.lock().registry.find(group, version, plural)
    }

    /// A snapshot of the served resources.
    pub fn registry(&self) -> Registry {
        self.inner.lock().registry.clone()
    }

    /// The latest resourceVersion.
    pub fn current_rv(&self) -> u64 {
        self.inner.lock().rv
    }

    /// Live change feed (for in-process controllers such as the scheduler).
    pub fn subscribe(&self) -> broadcast::Receiver<Broadcast> {
        self.tx.subscribe()
    }

    /// Drop all watch history and end every open watch with 410 Gone, as an
    /// apiserver does when its watch cache cannot serve a client any more.
    pub fn expire_watches(&self) {
        let mut inner = self.inner.lock();
        inner.compacted_rv = inner.rv;
        inner.history.clear();
        let _ = self.tx.send(Broadcast::Expire);
    }

    /// Resize the retained history (tests use a small one to force 410).
    pub fn set_history_size(&self, n: usize) {
        let mut inner = self.inner.lock();
        inner.history_size = n.max(1);
        Self::trim(&mut inner);
    }

    fn trim(inner: &mut Inner) {
        while inner.history.len() > inner.history_size {
            if let Some(c) = inner.history.pop_front() {
                inner.compacted_rv = c.rv;
            }
        }
    }

    /// Commit one change: bump the rv, stamp it on the object, store, record, broadcast.
    fn commit(
        &self,
        inner: &mut Inner,
        storage: &StorageKey,
        key: ObjKey,
        kind: ChangeType,
        mut obj: Value,
        prev: Option<Arc<Value>>,
    ) -> Arc<Value> {
        inner.rv += 1;
        let rv = inner.rv;
        obj["metadata"]["resourceVersion"] = json!(rv.to_string());
        let obj = Arc::new(obj);
        let set = inner.objects.entry(storage.clone()).or_default();
        if kind == ChangeType::Deleted {
            set.remove(&key);
        } else {
            set.insert(key, obj.clone());
        }
        let change = Arc::new(Change {
            rv,
            storage: storage.clone(),
            kind,
            obj: obj.clone(),
            prev,
        });
        inner.history.push_back(change.clone());
        Self::trim(inner);
        // No receivers is fine: nobody is watching yet.
        let _ = self.tx.send(Broadcast::Change(change));
        obj
    }

    fn ns_key(r: &ResourceDesc, ns: &str, name: &str) -> ObjKey {
        if r.namespaced {
            (ns.to_string(), name.to_string())
        } else {
            (String::new(), name.to_string())
        }
    }

    fn get_stored(inner: &Inner, r: &ResourceDesc, key: &ObjKey) -> Option<Arc<Value>> {
        inner.objects.get(&r.storage)?.get(key).cloned()
    }

    /// Get one object.
    pub fn get(&self, r: &ResourceDesc, ns: &str, name: &str) -> Result<Value, ApiError> {
        let key = Self::ns_key(r, ns, name);
        let inner = self.inner.lock();
        let obj = Self::get_stored(&inner, r, &key)
            .ok_or_else(|| ApiError::not_found(&r.group, &r.plural, name))?;
        drop(inner);
        Ok((*to_wire(r, &obj)).clone())
    }

    /// List objects (all namespaces when `ns` is None).
    pub fn list(
        &self,
        r: &ResourceDesc,
        ns: Option<&str>,
        opts: &ListOptions,
    ) -> Result<ListPage, ApiError> {
        // The continue token carries the list's rv and the last key returned.
        let (list_rv, after) = match &opts.continue_token {
            Some(t) if !t.is_empty() => {
                let raw =
                    base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, t)
                        .map_err(|_| ApiError::bad_request("continue key is not valid"))?;
                let v: Value = serde_json::from_slice(&raw)
                    .map_err(|_| ApiError::bad_request("continue key is not valid"))?;
                let rv = v["rv"].as_u64().unwrap_or_default();
                let k = (
                    v["ns"].as_str().unwrap_or_default().to_string(),
                    v["name"].as_str().unwrap_or_default().to_string(),
                );
                (Some(rv), Some(k))
            }
            _ => (None, None),
        };
        let inner = self.inner.lock();
        if let Some(rv) = list_rv {
            if rv < inner.compacted_rv {
                return Err(ApiError::expired(
                    "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter.",
                ));
            }
        }
        let rv = list_rv.unwrap_or(inner.rv);
        let empty = BTreeMap::new();
        let set = inner.objects.get(&r.storage).unwrap_or(&empty);
        let start = match (&after, ns) {
            (Some(k), _) => std::ops::Bound::Excluded(k.clone()),
            (None, Some(ns)) if r.namespaced => {
                std::ops::Bound::Included((ns.to_string(), String::new()))
            }
            _ => std::ops::Bound::Unbounded,
        };
        let filtering = !opts.labels.is_empty() || !opts.fields.is_empty();
        let mut items = Vec::new();
        let mut last_key = None;
        let mut remaining = 0usize;
        for (k, obj) in set.range((start, std::ops::Bound::Unbounded)) {
            if let Some(ns) = ns {
                if r.namespaced && k.0 != ns {
                    break;
                }
            }
            if filtering {
                let wire = to_wire(r, obj);
                if !(opts.labels.matches(&wire) && opts.fields.matches(&wire)) {
                    continue;
                }
            }
            if opts.limit > 0 && items.len() >= opts.limit {
                remaining += 1;
                continue;
            }
            items.push(obj.clone());
            last_key = Some(k.clone());
        }
        drop(inner);
        let continue_token = if remaining > 0 {
            last_key.map(|(ns, name)| {
                let t = json!({"rv": rv, "ns": ns, "name": name}).to_string();
                base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, t)
            })
        } else {
            None
        };
        let items = items.iter().map(|o| to_wire(r, o)).collect();
        Ok(ListPage {
            items,
            resource_version: rv,
            continue_token,
            remaining: (remaining > 0).then_some(remaining),
        })
    }

    /// Create an object; fills name (generateName), uid, creationTimestamp,
    /// generation and resourceVersion.
    pub fn create(&self, r: &ResourceDesc, ns: &str, obj: Value) -> Result<Value, ApiError> {
        if !obj.is_object() {
            return Err(ApiError::bad_request(
                "the body of the request must be a JSON object",
            ));
        }
        let mut obj = from_wire(r, obj);
        let mut inner = self.inner.lock();
        let body_ns = meta_str(&obj, "namespace").to_string();
        let ns = if r.namespaced {
            if !body_ns.is_empty() && !ns.is_empty() && body_ns != ns {
                return Err(ApiError::bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request",
                ));
            }
            let ns = if ns.is_empty() {
                body_ns
            } else {
                ns.to_string()
            };
            if ns.is_empty() {
                return Err(ApiError::bad_request(
                    "namespace is required for a namespaced resource",
                ));
            }
            let nsr = StorageKey {
                group: String::new(),
                plural: "namespaces".into(),
            };
            let exists = inner
                .objects
                .get(&nsr)
                .is_some_and(|s| s.contains_key(&(String::new(), ns.clone())));
            if !exists {
                return Err(ApiError::not_found("", "namespaces", &ns));
            }
            ns
        } else {
            String::new()
        };
        let mut name = meta_str(&obj, "name").to_string();
        if name.is_empty() {
            let gen = meta_str(&obj, "generateName").to_string();
            if gen.is_empty() {
                return Err(ApiError::invalid(
                    &r.group,
                    &r.plural,
                    "",
                    "metadata.name: Required value: name or generateName is required",
                ));
            }
            // Retry on the (unlikely) collision like upstream's generator would.
            for _ in 0..8 {
                let candidate = format!("{gen}{}", random_suffix());
                if Self::get_stored(&inner, r, &(ns.clone(), candidate.clone())).is_none() {
                    name = candidate;
                    break;
                }
            }
        }
        let key = (ns.clone(), name.clone());
        if Self::get_stored(&inner, r, &key).is_some() {
            return Err(ApiError::already_exists(&r.group, &r.plural, &name));
        }
        let stored_av = match r.view {
            View::EventsV1 => "v1".to_string(),
            View::Plain => r.api_version(),
        };
        obj["apiVersion"] = json!(stored_av);
        obj["kind"] = json!(r.kind);
        {
            let meta = obj["metadata"].as_object_mut();
            let meta = match meta {
                Some(m) => m,
                None => {
                    obj["metadata"] = json!({});
                    obj["metadata"]
                        .as_object_mut()
                        .ok_or_else(|| ApiError::bad_request("metadata must be an object"))?
                }
            };
            meta.insert("name".into(), json!(name));
            if r.namespaced {
                meta.insert("namespace".into(), json!(ns));
            } else {
                meta.remove("namespace");
            }
            meta.insert("uid".into(), json!(uuid::Uuid::new_v4().to_string()));
            meta.insert("creationTimestamp".into(), json!(now_time()));
            meta.insert("generation".into(), json!(1));
            meta.remove("deletionTimestamp");
            meta.remove("resourceVersion");
        }
        apply_defaults(r, &mut obj);
        let storage = r.storage.clone();
        let crd = r.group == "apiextensions.k8s.io" && r.plural == "customresourcedefinitions";
        if crd {
            establish_crd(&mut obj);
        }
        let stored = self.commit(&mut inner, &storage, key, ChangeType::Added, obj, None);
        if crd {
            register_crd(&mut inner.registry, &stored);
        }
        drop(inner);
        Ok((*to_wire(r, &stored)).clone())
    }

    /// Replace an object (PUT). A `metadata.resourceVersion` in the body must
    /// match the stored one (409 Conflict otherwise).
    pub fn update(
        &self,
        r: &ResourceDesc,
        ns: &str,
        name: &str,
        obj: Value,
        sub: Sub,
    ) -> Result<Value, ApiError> {
        if !obj.is_object() {
            return Err(ApiError::bad_request(
                "the body of the request must be a JSON object",
            ));
        }
        let body_name = meta_str(&obj, "name");
        if !body_name.is_empty() && body_name != name {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({body_name}) does not match the name on the URL ({name})"
            )));
        }
        let obj = from_wire(r, obj);
        let mut inner = self.inner.lock();
        self.write_locked(&mut inner, r, ns, name, obj, sub, true)
    }

    /// Patch an object; a resourceVersion set by the patch acts as a precondition.
    pub fn patch(
        &self,
        r: &ResourceDesc,
        ns: &str,
        name: &str,
        kind: PatchKind,
        body: &[u8],
        sub: Sub,
    ) -> Result<Value, ApiError> {
        let mut inner = self.inner.lock();
        let key = Self::ns_key(r, ns, name);
        let cur = Self::get_stored(&inner, r, &key)
            .ok_or_else(|| ApiError::not_found(&r.group, &r.plural, name))?;
        let mut doc = (*to_wire(r, &cur)).clone();
        patch::apply(&mut doc, kind, body).map_err(|mut e| {
            if e.code == 422 {
                e.group = Some(r.group.clone());
                e.kind = Some(r.plural.clone());
                e.name = Some(name.to_string());
            }
            e
        })?;
        let doc = from_wire(r, doc);
        self.write_locked(&mut inner, r, ns, name, doc, sub, true)
    }

    #[allow(clippy::too_many_arguments)]
    fn write_locked(
        &self,
        inner: &mut Inner,
        r: &ResourceDesc,
        ns: &str,
        name: &str,
        obj: Value,
        sub: Sub,
        check_rv: bool,
    ) -> Result<Value, ApiError> {
        let key = Self::ns_key(r, ns, name);
        let cur = Self::get_stored(inner, r, &key)
            .ok_or_else(|| ApiError::not_found(&r.group, &r.plural, name))?;
        let body_rv = meta_str(&obj, "resourceVersion");
        if check_rv && !body_rv.is_empty() && body_rv != meta_str(&cur, "resourceVersion") {
            return Err(ApiError::conflict(&r.group, &r.plural, name));
        }
        // A uid in the written object is a precondition, as the real
        // apiserver treats it: a write meant for a deleted object must not
        // land on the one re-created under its name.
        let body_uid = meta_str(&obj, "uid");
        let have_uid = meta_str(&cur, "uid");
        if !body_uid.is_empty() && body_uid != have_uid {
            return Err(ApiError::conflict_msg(
                &r.group,
                &r.plural,
                name,
                format!(
                    "Operation cannot be fulfilled on {} \"{name}\": Precondition failed: UID in precondition: {body_uid}, UID in object meta: {have_uid}",
                    r.plural
                ),
            ));
        }
        let mut new = match sub {
            Sub::Status => {
                let mut n = (*cur).clone();
                n["status"] = obj.get("status").cloned().unwrap_or(Value::Null);
                n
            }
            Sub::Main => {
                let mut n = obj;
                if r.has_status {
                    n["status"] = cur.get("status").cloned().unwrap_or(Value::Null);
                }
                n
            }
        };
        if new["status"].is_null() {
            if let Some(m) = new.as_object_mut() {
                m.remove("status");
            }
        }
        // Identity and server-owned metadata never change through writes.
        new["apiVersion"] = cur["apiVersion"].clone();
        new["kind"] = cur["kind"].clone();
        if !new["metadata"].is_object() {
            new["metadata"] = json!({});
        }
        for f in [
            "name",
            "namespace",
            "uid",
            "creationTimestamp",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
        ] {
            match cur["metadata"].get(f) {
                Some(v) => new["metadata"][f] = v.clone(),
                None => {
                    if let Some(m) = new["metadata"].as_object_mut() {
                        m.remove(f);
                    }
                }
            }
        }
        let deleting = cur["metadata"].get("deletionTimestamp").is_some();
        let new_fin = finalizers(&new);
        if deleting {
            let old_fin = finalizers(&cur);
            if new_fin.iter().any(|f| !old_fin.contains(f)) {
                return Err(ApiError::invalid(
                    &r.group,
                    &r.plural,
                    name,
                    "metadata.finalizers: Forbidden: no new finalizers can be added if the object is being deleted",
                ));
            }
        }
        let gen = cur["metadata"]["generation"].as_i64().unwrap_or(1);
        let gen = if spec_part(&new) != spec_part(&cur) {
            gen + 1
        } else {
            gen
        };
        new["metadata"]["generation"] = json!(gen);
        new["metadata"]["resourceVersion"] = cur["metadata"]["resourceVersion"].clone();
        if new == *cur {
            // A no-op write does not produce a new resourceVersion, as upstream.
            return Ok((*to_wire(r, &cur)).clone());
        }
        let crd = r.group == "apiextensions.k8s.io" && r.plural == "customresourcedefinitions";
        if crd {
            establish_crd(&mut new);
        }
        let storage = r.storage.clone();
        if deleting && new_fin.is_empty() {
            let stored = self.commit(inner, &storage, key, ChangeType::Deleted, new, Some(cur));
            self.after_delete(inner, r, &stored);
            return Ok((*to_wire(r, &stored)).clone());
        }
        let stored = self.commit(inner, &storage, key, ChangeType::Modified, new, Some(cur));
        if crd {
            register_crd(&mut inner.registry, &stored);
        }
        Ok((*to_wire(r, &stored)).clone())
    }

    /// Delete an object: with finalizers it only gets a deletionTimestamp
    /// and stays until they are removed. `preconditions` is DeleteOptions'.
    pub fn delete(
        &self,
        r: &ResourceDesc,
        ns: &str,
        name: &str,
        preconditions: &Value,
    ) -> Result<Value, ApiError> {
        let mut inner = self.inner.lock();
        self.delete_locked(&mut inner, r, ns, name, preconditions)
    }

    fn delete_locked(
        &self,
        inner: &mut Inner,
        r: &ResourceDesc,
        ns: &str,
        name: &str,
        preconditions: &Value,
    ) -> Result<Value, ApiError> {
        let key = Self::ns_key(r, ns, name);
        let cur = Self::get_stored(inner, r, &key)
            .ok_or_else(|| ApiError::not_found(&r.group, &r.plural, name))?;
        if let Some(uid) = preconditions["uid"].as_str() {
            let have = meta_str(&cur, "uid");
            if uid != have {
                return Err(ApiError::conflict_msg(
                    &r.group,
                    &r.plural,
                    name,
                    format!("Precondition failed: UID in precondition: {uid}, UID in object meta: {have}"),
                ));
            }
        }
        if let Some(rv) = preconditions["resourceVersion"].as_str() {
            let have = meta_str(&cur, "resourceVersion");
            if rv != have {
                return Err(ApiError::conflict_msg(
                    &r.group,
                    &r.plural,
                    name,
                    format!("Precondition failed: ResourceVersion in precondition: {rv}, ResourceVersion in object meta: {have}"),
                ));
            }
        }
        let storage = r.storage.clone();
        if !finalizers(&cur).is_empty() {
            if cur["metadata"].get("deletionTimestamp").is_some() {
                return Ok((*to_wire(r, &cur)).clone());
            }
            let mut new = (*cur).clone();
            new["metadata"]["deletionTimestamp"] = json!(now_time());
            new["metadata"]["deletionGracePeriodSeconds"] = json!(0);
            let stored = self.commit(inner, &storage, key, ChangeType::Modified, new, Some(cur));
            return Ok((*to_wire(r, &stored)).clone());
        }
        let new = (*cur).clone();
        let stored = self.commit(inner, &storage, key, ChangeType::Deleted, new, Some(cur));
        self.after_delete(inner, r, &stored);
        Ok((*to_wire(r, &stored)).clone())
    }

    /// Cascades: a namespace takes its objects along; a CRD its resources.
    fn after_delete(&self, inner: &mut Inner, r: &ResourceDesc, gone: &Value) {
        let name = meta_str(gone, "name").to_string();
        if r.group.is_empty() && r.plural == "namespaces" {
            let keys: Vec<(StorageKey, ObjKey)> = inner
                .objects
                .iter()
                .flat_map(|(sk, set)| {
                    set.keys()
                        .filter(|k| k.0 == name)
                        .map(|k| (sk.clone(), k.clone()))
                        .collect::<Vec<_>>()
                })
                .collect();
            for (sk, k) in keys {
                if let Some(cur) = inner.objects.get(&sk).and_then(|s| s.get(&k)).cloned() {
                    self.commit(
                        inner,
                        &sk,
                        k,
                        ChangeType::Deleted,
                        (*cur).clone(),
                        Some(cur),
                    );
                }
            }
        }
        if r.group == "apiextensions.k8s.io" && r.plural == "customresourcedefinitions" {
            let group = gone["spec"]["group"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            let plural = gone["spec"]["names"]["plural"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            inner.registry.set_crd(&group, &plural, Vec::new());
            let sk = StorageKey { group, plural };
            let keys: Vec<ObjKey> = inner
                .objects
                .get(&sk)
                .map(|s| s.keys().cloned().collect())
                .unwrap_or_default();
            for k in keys {
                if let Some(cur) = inner.objects.get(&sk).and_then(|s| s.get(&k)).cloned() {
                    self.commit(
                        inner,
                        &sk,
                        k,
                        ChangeType::Deleted,
                        (*cur).clone(),
                        Some(cur),
                    );
                }
            }
        }
    }

    /// Delete every matching object (deletecollection); returns those affected.
    pub fn delete_collection(
        &self,
        r: &ResourceDesc,
        ns: Option<&str>,
        opts: &ListOptions,
    ) -> Result<Vec<Value>, ApiError> {
        let page = self.list(
            r,
            ns,
            &ListOptions {
                limit: 0,
                continue_token: None,
                ..opts.clone()
            },
        )?;
        let mut out = Vec::new();
        let mut inner = self.inner.lock();
        for o in page.items {
            let ns = meta_str(&o, "namespace").to_string();
            let name = meta_str(&o, "name").to_string();
            if let Ok(v) = self.delete_locked(&mut inner, r, &ns, &name, &Value::Null) {
                out.push(v);
            }
        }
        Ok(out)
    }

    /// Bind a pod to a node (the `pods/binding` subresource).
    pub fn bind(&self, ns: &str, pod: &str, node: &str) -> Result<Value, ApiError> {
        let r = self.resource("", "pods")?;
        let mut inner = self.inner.lock();
        let key = (ns.to_string(), pod.to_string());
        let cur = Self::get_stored(&inner, &r, &key)
            .ok_or_else(|| ApiError::not_found("", "pods", pod))?;
        if let Some(bound) = cur["spec"]["nodeName"].as_str().filter(|s| !s.is_empty()) {
            return Err(ApiError::conflict_msg(
                "",
                "pods",
                pod,
                format!(
                    "Operation cannot be fulfilled on pods/binding \"{pod}\": pod {pod} is already assigned to node \"{bound}\""
                ),
            ));
        }
        if cur["metadata"].get("deletionTimestamp").is_some() {
            return Err(ApiError::conflict_msg(
                "",
                "pods",
                pod,
                format!("Operation cannot be fulfilled on pods/binding \"{pod}\": pod {pod} is being deleted, cannot be assigned to a host"),
            ));
        }
        let mut new = (*cur).clone();
        new["spec"]["nodeName"] = json!(node);
        set_condition(&mut new, "PodScheduled", "True", None, None);
        let stored = self.commit(
            &mut inner,
            &r.storage,
            key,
            ChangeType::Modified,
            new,
            Some(cur),
        );
        Ok((*stored).clone())
    }

    /// Start a watch on `storage`: from `rv` (replaying retained history) or,
    /// with `None`, from a synthetic ADDED for every current object.
    pub fn watch(&self, storage: &StorageKey, rv: Option<u64>) -> Result<WatchStart, ApiError> {
        let inner = self.inner.lock();
        let rx = self.tx.subscribe();
        let backlog = match rv {
            None => inner
                .objects
                .get(storage)
                .map(|set| {
                    set.values()
                        .map(|o| {
                            Arc::new(Change {
                                rv: inner.rv,
                                storage: storage.clone(),
                                kind: ChangeType::Added,
                                obj: o.clone(),
                                prev: None,
                            })
                        })
                        .collect()
                })
                .unwrap_or_default(),
            Some(n) => {
                if n < inner.compacted_rv {
                    return Err(ApiError::expired(format!(
                        "too old resource version: {n} ({})",
                        inner.compacted_rv + 1
                    )));
                }
                inner
                    .history
                    .iter()
                    .filter(|c| c.rv > n && c.storage == *storage)
                    .cloned()
                    .collect()
            }
        };
        Ok(WatchStart {
            backlog,
            rx,
            rv: inner.rv,
        })
    }

    /// Every stored object of several storage keys, read at one instant.
    pub fn snapshot_many(&self, keys: &[StorageKey]) -> Vec<Vec<Arc<Value>>> {
        let inner = self.inner.lock();
        keys.iter()
            .map(|k| {
                inner
                    .objects
                    .get(k)
                    .map(|s| s.values().cloned().collect())
                    .unwrap_or_default()
            })
            .collect()
    }

    /// Every stored object of a storage key (in-process controllers use this).
    pub fn snapshot(&self, storage: &StorageKey) -> Vec<Arc<Value>> {
        self.inner
            .lock()
            .objects
            .get(storage)
            .map(|s| s.values().cloned().collect())
            .unwrap_or_default()
    }
}

/// Set (or replace) a status condition of type `ty`, keeping lastTransitionTime when the status is unchanged.
pub fn set_condition(
    obj: &mut Value,
    ty: &str,
    status: &str,
    reason: Option<&str>,
    message: Option<&str>,
) {
    if !obj["status"].is_object() {
        obj["status"] = json!({});
    }
    if !obj["status"]["conditions"].is_array() {
        obj["status"]["conditions"] = json!([]);
    }
    let mut cond = json!({"type": ty, "status": status, "lastProbeTime": null, "lastTransitionTime": now_time()});
    if let Some(r) = reason {
        cond["reason"] = json!(r);
    }
    if let Some(m) = message {
        cond["message"] = json!(m);
    }
    if let Some(list) = obj["status"]["conditions"].as_array_mut() {
        match list.iter_mut().find(|c| c["type"] == ty) {
            Some(c) => {
                if c["status"] == status {
                    cond["lastTransitionTime"] = c["lastTransitionTime"].clone();
                }
                *c = cond;
            }
            None => list.push(cond),
        }
    }
}

/// Server-side defaults the fake's users depend on.
fn apply_defaults(r: &ResourceDesc, obj: &mut Value) {
    match (r.group.as_str(), r.plural.as_str()) {
        ("", "pods") => {
            if obj["status"]["phase"].as_str().is_none() {
                obj["status"]["phase"] = json!("Pending");
            }
            if obj["spec"].is_object() {
                for (field, value) in [
                    ("schedulerName", json!("default-scheduler")),
                    ("restartPolicy", json!("Always")),
                    ("dnsPolicy", json!("ClusterFirst")),
                    ("terminationGracePeriodSeconds", json!(30)),
                    ("securityContext", json!({})),
                    ("enableServiceLinks", json!(true)),
                ] {
                    if obj["spec"][field].is_null() {
                        obj["spec"][field] = value;
                    }
                }
            }
            // API defaulting: a limit without a request makes the request equal the limit.
            for field in ["containers", "initContainers"] {
                if let Some(cs) = obj["spec"][field].as_array_mut() {
                    for c in cs {
                        let limits = c["resources"]["limits"].as_object().cloned();
                        if let Some(limits) = limits {
                            if !c["resources"]["requests"].is_object() {
                                c["resources"]["requests"] = json!({});
                            }
                            for (k, v) in limits {
                                if c["resources"]["requests"].get(&k).is_none() {
                                    c["resources"]["requests"][k] = v;
                                }
                            }
                        }
                    }
                }
            }
        }
        ("", "nodes") => {
            // What the real apiserver's defaulting gives a Node created
            // without a status: a status object, so `add /status/capacity`
            // JSON patches (what the docs show for extended resources) work.
            if !obj["status"].is_object() {
                obj["status"] = json!({});
            }
            if !obj["status"]["daemonEndpoints"].is_object() {
                obj["status"]["daemonEndpoints"] = json!({"kubeletEndpoint": {"Port": 0}});
            }
            if !obj["status"]["nodeInfo"].is_object() {
                obj["status"]["nodeInfo"] = json!({
                    "machineID": "", "systemUUID": "", "bootID": "", "kernelVersion": "",
                    "osImage": "", "containerRuntimeVersion": "", "kubeletVersion": "",
                    "kubeProxyVersion": "", "operatingSystem": "", "architecture": "",
                });
            }
        }
        ("", "namespaces") if obj["status"]["phase"].as_str().is_none() => {
            obj["status"] = json!({"phase": "Active"});
        }
        ("apps", "deployments") if obj["spec"].is_object() && obj["spec"]["replicas"].is_null() => {
            obj["spec"]["replicas"] = json!(1);
        }
        _ => {}
    }
}

fn establish_crd(obj: &mut Value) {
    let names = obj["spec"]["names"].clone();
    let stored: Vec<Value> = obj["spec"]["versions"]
        .as_array()
        .map(|vs| {
            vs.iter()
                .filter(|v| v["storage"].as_bool() == Some(true))
                .map(|v| v["name"].clone())
                .collect()
        })
        .unwrap_or_default();
    obj["status"]["acceptedNames"] = names;
    obj["status"]["storedVersions"] = json!(stored);
    set_condition(
        obj,
        "NamesAccepted",
        "True",
        Some("NoConflicts"),
        Some("no conflicts found"),
    );
    set_condition(
        obj,
        "Established",
        "True",
        Some("InitialNamesAccepted"),
        Some("the initial names have been accepted"),
    );
}

fn register_crd(registry: &mut Registry, crd: &Value) {
    let descs = resources::from_crd(crd);
    let group = crd["spec"]["group"].as_str().unwrap_or_default();
    let plural = crd["spec"]["names"]["plural"].as_str().unwrap_or_default();
    registry.set_crd(group, plural, descs);
}
