//! core/v1 Events and events.k8s.io/v1 Events are two views of one store:
//! objects are stored in the core/v1 shape and converted field by field
//! (regarding<->involvedObject, note<->message, ...) for the events.k8s.io view.

use serde_json::{json, Map, Value};

/// Pairs of (core/v1 field, events.k8s.io/v1 field) that only change name.
const RENAMES: &[(&str, &str)] = &[
    ("involvedObject", "regarding"),
    ("message", "note"),
    ("source", "deprecatedSource"),
    ("firstTimestamp", "deprecatedFirstTimestamp"),
    ("lastTimestamp", "deprecatedLastTimestamp"),
    ("count", "deprecatedCount"),
    ("reportingComponent", "reportingController"),
];

/// Fields with the same name in both versions.
const SHARED: &[&str] = &[
    "metadata",
    "reason",
    "type",
    "action",
    "related",
    "series",
    "eventTime",
    "reportingInstance",
];

/// Stored (core/v1) event -> events.k8s.io/v1 wire form.
pub fn core_to_v1(core: &Value) -> Value {
    let mut out = Map::new();
    out.insert("apiVersion".into(), json!("events.k8s.io/v1"));
    out.insert("kind".into(), json!("Event"));
    for f in SHARED {
        if let Some(v) = core.get(*f).filter(|v| !v.is_null()) {
            out.insert((*f).into(), v.clone());
        }
    }
    for (c, e) in RENAMES {
        if let Some(v) = core.get(*c).filter(|v| !v.is_null()) {
            out.insert((*e).into(), v.clone());
        }
    }
    // Events written through core/v1 by old clients carry only `source`.
    if !out.contains_key("reportingController") {
        if let Some(c) = core["source"]["component"].as_str() {
            out.insert("reportingController".into(), json!(c));
        }
    }
    Value::Object(out)
}

/// events.k8s.io/v1 wire form -> stored (core/v1) event.
pub fn v1_to_core(ev: &Value) -> Value {
    let mut out = Map::new();
    out.insert("apiVersion".into(), json!("v1"));
    out.insert("kind".into(), json!("Event"));
    for f in SHARED {
        if let Some(v) = ev.get(*f).filter(|v| !v.is_null()) {
            out.insert((*f).into(), v.clone());
        }
    }
    for (c, e) in RENAMES {
        if let Some(v) = ev.get(*e).filter(|v| !v.is_null()) {
            out.insert((*c).into(), v.clone());
        }
    }
    // `kubectl describe` shows `source.component` in its From column.
    if !out.contains_key("source") {
        let mut src = Map::new();
        if let Some(c) = ev["reportingController"].as_str() {
            src.insert("component".into(), json!(c));
        }
        if let Some(h) = ev["reportingInstance"].as_str() {
            src.insert("host".into(), json!(h));
        }
        if !src.is_empty() {
            out.insert("source".into(), Value::Object(src));
        }
    }
    // The events.k8s.io API counts repeats in `series`; core/v1 readers use `count`.
    if !out.contains_key("count") {
        if let Some(n) = ev["series"]["count"].as_i64() {
            out.insert("count".into(), json!(n));
        }
    }
    if !out.contains_key("lastTimestamp") {
        if let Some(t) = ev["series"]["lastObservedTime"].as_str() {
            out.insert("lastTimestamp".into(), json!(trim_micro(t)));
        }
    }
    Value::Object(out)
}

/// MicroTime (`...:05.123456Z`) -> Time (`...:05Z`).
fn trim_micro(t: &str) -> String {
    match t.split_once('.') {
        Some((head, _)) => format!("{head}Z"),
        None => t.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recorder_event_reads_back_as_core_event_for_describe() {
        let v1 = json!({
            "metadata": {"name": "p.1", "namespace": "default"},
            "regarding": {"kind": "Pod", "name": "p", "namespace": "default"},
            "note": "Allocated ENI",
            "reason": "Allocated",
            "type": "Normal",
            "action": "Allocate",
            "reportingController": "vpc-eni-controller",
            "reportingInstance": "vpc-eni-controller-0",
            "eventTime": "2026-01-01T00:00:00.000001Z",
            "series": {"count": 3, "lastObservedTime": "2026-01-01T00:01:00.500000Z"}
        });
        let core = v1_to_core(&v1);
        assert_eq!(core["involvedObject"]["name"], "p");
        assert_eq!(core["message"], "Allocated ENI");
        assert_eq!(core["source"]["component"], "vpc-eni-controller");
        assert_eq!(core["count"], 3);
        assert_eq!(core["lastTimestamp"], "2026-01-01T00:01:00Z");
        let back = core_to_v1(&core);
        assert_eq!(back["regarding"], v1["regarding"]);
        assert_eq!(back["note"], v1["note"]);
        assert_eq!(back["reportingController"], "vpc-eni-controller");
        assert_eq!(back["deprecatedCount"], 3);
    }
}
