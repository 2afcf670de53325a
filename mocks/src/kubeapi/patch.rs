//! PATCH bodies: JSON patch (RFC 6902), JSON merge patch (RFC 7386) and a
//! strategic merge patch covering the list fields this project's clients
//! touch (conditions by `type`, containers by `name`, finalizers as a set...).

use super::error::ApiError;
use serde_json::{Map, Value};

/// The patch flavours, from the request's Content-Type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchKind {
    /// `application/json-patch+json`
    Json,
    /// `application/merge-patch+json`
    Merge,
    /// `application/strategic-merge-patch+json`
    Strategic,
    /// `application/apply-patch+yaml` (server-side apply, approximated as a strategic merge)
    Apply,
}

impl PatchKind {
    /// Map a Content-Type header to a patch kind.
    pub fn from_content_type(ct: &str) -> Result<Self, ApiError> {
        let base = ct.split(';').next().unwrap_or_default().trim();
        match base {
            "application/json-patch+json" => Ok(PatchKind::Json),
            "application/merge-patch+json" => Ok(PatchKind::Merge),
            "application/strategic-merge-patch+json" => Ok(PatchKind::Strategic),
            "application/apply-patch+yaml" => Ok(PatchKind::Apply),
            _ => Err(ApiError::unsupported_media_type(ct)),
        }
    }
}

/// Apply a patch body to `doc`.
pub fn apply(doc: &mut Value, kind: PatchKind, body: &[u8]) -> Result<(), ApiError> {
    match kind {
        PatchKind::Json => {
            let p: json_patch::Patch = serde_json::from_slice(body)
                .map_err(|e| ApiError::bad_request(format!("invalid JSON patch: {e}")))?;
            json_patch::patch(doc, &p.0).map_err(|e| {
                ApiError::invalid(
                    "",
                    "",
                    "",
                    format!("the server rejected our request due to an error in our request: {e}"),
                )
            })
        }
        PatchKind::Merge => {
            let p: Value = serde_json::from_slice(body)
                .map_err(|e| ApiError::bad_request(format!("invalid merge patch: {e}")))?;
            json_patch::merge(doc, &p);
            Ok(())
        }
        PatchKind::Strategic => {
            let p: Value = serde_json::from_slice(body).map_err(|e| {
                ApiError::bad_request(format!("invalid strategic merge patch: {e}"))
            })?;
            strategic_merge(doc, &p, "");
            Ok(())
        }
        PatchKind::Apply => {
            let p: Value = serde_yaml::from_slice(body)
                .map_err(|e| ApiError::bad_request(format!("invalid apply patch: {e}")))?;
            strategic_merge(doc, &p, "");
            Ok(())
        }
    }
}

/// How a list field merges in a strategic merge patch.
#[derive(Debug, Clone, Copy, PartialEq)]
enum ListRule {
    /// Items with the same value of this key are merged; others appended.
    ByKey(&'static str),
    /// Primitive list merged as a set.
    Set,
    /// Replaced wholesale.
    Replace,
}

/// Merge rules for the list fields upstream marks `patchStrategy: merge`.
fn list_rule(field: &str) -> ListRule {
    match field {
        "conditions" | "addresses" => ListRule::ByKey("type"),
        "containers"
        | "initContainers"
        | "ephemeralContainers"
        | "volumes"
        | "env"
        | "imagePullSecrets" => ListRule::ByKey("name"),
        "ownerReferences" => ListRule::ByKey("uid"),
        "volumeMounts" => ListRule::ByKey("mountPath"),
        "ports" => ListRule::ByKey("containerPort"),
        "taints" => ListRule::ByKey("key"),
        "finalizers" => ListRule::Set,
        _ => ListRule::Replace,
    }
}

/// Strategic merge of `patch` into `doc`; `field` is the key `doc` sits under.
pub fn strategic_merge(doc: &mut Value, patch: &Value, field: &str) {
    let Value::Object(pm) = patch else {
        *doc = patch.clone();
        return;
    };
    if pm.get("$patch").and_then(Value::as_str) == Some("replace") {
        let mut p = pm.clone();
        p.remove("$patch");
        *doc = Value::Object(p);
        return;
    }
    if !doc.is_object() {
        *doc = Value::Object(Map::new());
    }
    let _ = field;
    let Some(dm) = doc.as_object_mut() else {
        return;
    };
    for (k, v) in pm {
        if k == "$patch" || k == "$retainKeys" || k.starts_with("$setElementOrder/") {
            continue;
        }
        if let Some(target) = k.strip_prefix("$deleteFromPrimitiveList/") {
            if let (Some(Value::Array(items)), Value::Array(del)) = (dm.get_mut(target), v) {
                items.retain(|i| !del.contains(i));
            }
            continue;
        }
        if v.is_null() {
            dm.remove(k);
            continue;
        }
        match v {
            Value::Object(_) => {
                let slot = dm.entry(k.clone()).or_insert(Value::Null);
                strategic_merge(slot, v, k);
            }
            Value::Array(items) => {
                let slot = dm.entry(k.clone()).or_insert(Value::Array(Vec::new()));
                merge_list(slot, items, list_rule(k));
            }
            _ => {
                dm.insert(k.clone(), v.clone());
            }
        }
    }
}

fn merge_list(slot: &mut Value, items: &[Value], rule: ListRule) {
    let existing = match slot {
        Value::Array(a) => a,
        _ => {
            *slot = Value::Array(Vec::new());
            match slot {
                Value::Array(a) => a,
                _ => return,
            }
        }
    };
    match rule {
        ListRule::Replace => {
            *existing = items
                .iter()
                .filter(|i| i.get("$patch").is_none())
                .cloned()
                .collect();
        }
        ListRule::Set => {
            for i in items {
                if !existing.contains(i) {
                    existing.push(i.clone());
                }
            }
        }
        ListRule::ByKey(key) => {
            // A list-level `{"$patch": "replace"}` item replaces the whole list.
            if items
                .iter()
                .any(|i| i.get("$patch").and_then(Value::as_str) == Some("replace"))
            {
                *existing = items
                    .iter()
                    .filter(|i| i.get("$patch").is_none())
                    .cloned()
                    .collect();
                return;
            }
            for item in items {
                let id = item.get(key).cloned();
                let pos = id
                    .as_ref()
                    .and_then(|id| existing.iter().position(|e| e.get(key) == Some(id)));
                let delete = item.get("$patch").and_then(Value::as_str) == Some("delete");
                match (pos, delete) {
                    (Some(p), true) => {
                        existing.remove(p);
                    }
                    (None, true) => {}
                    (Some(p), false) => strategic_merge(&mut existing[p], item, ""),
                    (None, false) => {
                        let mut fresh = Value::Object(Map::new());
                        strategic_merge(&mut fresh, item, "");
                        existing.push(fresh);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn strategic_merges_conditions_by_type_and_replaces_other_lists() {
        let mut pod = json!({
            "metadata": {"finalizers": ["a"], "labels": {"x": "1"}},
            "spec": {"containers": [{"name": "c", "image": "i1"}], "tolerations": [{"key": "t"}]},
            "status": {"conditions": [{"type": "Ready", "status": "False"}, {"type": "PodScheduled", "status": "True"}]}
        });
        let patch = json!({
            "metadata": {"finalizers": ["b"], "labels": {"x": null}},
            "spec": {"containers": [{"name": "c", "image": "i2"}], "tolerations": [{"key": "u"}]},
            "status": {"conditions": [{"type": "Ready", "status": "True"}]}
        });
        apply(&mut pod, PatchKind::Strategic, patch.to_string().as_bytes()).unwrap();
        assert_eq!(pod["metadata"]["finalizers"], json!(["a", "b"]));
        assert_eq!(pod["metadata"]["labels"], json!({}));
        assert_eq!(
            pod["spec"]["containers"],
            json!([{"name": "c", "image": "i2"}])
        );
        assert_eq!(pod["spec"]["tolerations"], json!([{"key": "u"}]));
        assert_eq!(
            pod["status"]["conditions"],
            json!([{"type": "Ready", "status": "True"}, {"type": "PodScheduled", "status": "True"}])
        );
    }

    #[test]
    fn strategic_delete_directives() {
        let mut obj = json!({"metadata": {"finalizers": ["a", "b"]}, "status": {"conditions": [{"type": "X"}, {"type": "Y"}]}});
        let patch = json!({
            "metadata": {"$deleteFromPrimitiveList/finalizers": ["a"]},
            "status": {"conditions": [{"type": "X", "$patch": "delete"}]}
        });
        apply(&mut obj, PatchKind::Strategic, patch.to_string().as_bytes()).unwrap();
        assert_eq!(obj["metadata"]["finalizers"], json!(["b"]));
        assert_eq!(obj["status"]["conditions"], json!([{"type": "Y"}]));
    }

    #[test]
    fn json_patch_with_escaped_extended_resource_name() {
        let mut node = json!({"status": {"capacity": {"cpu": "4"}}});
        let p = json!([{"op": "add", "path": "/status/capacity/aliyun~1eni", "value": "2"}]);
        apply(&mut node, PatchKind::Json, p.to_string().as_bytes()).unwrap();
        assert_eq!(node["status"]["capacity"]["aliyun/eni"], "2");
        let bad = json!([{"op": "test", "path": "/status/capacity/cpu", "value": "8"}]);
        assert_eq!(
            apply(&mut node, PatchKind::Json, bad.to_string().as_bytes())
                .unwrap_err()
                .code,
            422
        );
    }
}
