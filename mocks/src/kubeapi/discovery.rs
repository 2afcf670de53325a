//! Discovery documents (`/api`, `/apis`, `/api/v1`, `/apis/<g>[/<v>]`,
//! `/version`) built from the resource table, and the OpenAPI v2 document
//! kubectl fetches (in protobuf) before `apply` validates a manifest.

use super::resources::Registry;
use serde_json::{json, Value};

/// `/version`
pub fn version() -> Value {
    json!({
        "major": "1",
        "minor": "20",
        "gitVersion": "v1.20.2-fake",
        "gitCommit": "0000000000000000000000000000000000000000",
        "gitTreeState": "clean",
        "buildDate": "2026-01-01T00:00:00Z",
        "goVersion": "go1.15",
        "compiler": "gc",
        "platform": "linux/amd64"
    })
}

/// `/api`
pub fn core_versions(server_address: &str) -> Value {
    json!({
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": server_address}]
    })
}

fn group_doc(name: &str, versions: &[String]) -> Value {
    let vs: Vec<Value> = versions
        .iter()
        .map(|v| json!({"groupVersion": format!("{name}/{v}"), "version": v}))
        .collect();
    let preferred = vs.first().cloned().unwrap_or(Value::Null);
    json!({"name": name, "versions": vs, "preferredVersion": preferred})
}

/// `/apis`
pub fn group_list(reg: &Registry) -> Value {
    let groups: Vec<Value> = reg
        .groups()
        .into_iter()
        .filter(|(g, _)| !g.is_empty())
        .map(|(g, vs)| group_doc(&g, &vs))
        .collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

/// `/apis/<group>`, if served.
pub fn group(reg: &Registry, name: &str) -> Option<Value> {
    reg.groups()
        .into_iter()
        .find(|(g, _)| g == name && !g.is_empty())
        .map(|(g, vs)| {
            let mut d = group_doc(&g, &vs);
            d["kind"] = json!("APIGroup");
            d["apiVersion"] = json!("v1");
            d
        })
}

/// `/api/v1` or `/apis/<group>/<version>`, if served.
pub fn resource_list(reg: &Registry, group: &str, version: &str) -> Option<Value> {
    let rs: Vec<_> = reg
        .all()
        .iter()
        .filter(|r| r.group == group && r.version == version)
        .collect();
    if rs.is_empty() {
        return None;
    }
    let verbs = json!([
        "create",
        "delete",
        "deletecollection",
        "get",
        "list",
        "patch",
        "update",
        "watch"
    ]);
    let mut out = Vec::new();
    for r in rs {
        let mut d = json!({
            "name": r.plural,
            "singularName": r.singular,
            "namespaced": r.namespaced,
            "kind": r.kind,
            "verbs": verbs,
        });
        if !r.short_names.is_empty() {
            d["shortNames"] = json!(r.short_names);
        }
        // `kubectl get all` expands the "all" category.
        if matches!(
            (r.group.as_str(), r.plural.as_str()),
            ("", "pods") | ("", "services") | ("apps", "deployments")
        ) {
            d["categories"] = json!(["all"]);
        }
        out.push(d);
        if r.has_status {
            out.push(json!({"name": format!("{}/status", r.plural), "singularName": "", "namespaced": r.namespaced, "kind": r.kind, "verbs": ["get", "patch", "update"]}));
        }
        if r.group == "apps" && r.plural == "deployments" {
            out.push(json!({"name": "deployments/scale", "singularName": "", "namespaced": true, "group": "autoscaling", "version": "v1", "kind": "Scale", "verbs": ["get", "patch", "update"]}));
        }
        if r.group.is_empty() && r.plural == "pods" {
            out.push(json!({"name": "pods/binding", "singularName": "", "namespaced": true, "kind": "Binding", "verbs": ["create"]}));
        }
    }
    if group.is_empty() {
        out.push(json!({"name": "bindings", "singularName": "", "namespaced": true, "kind": "Binding", "verbs": ["create"]}));
    }
    let gv = if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    };
    Some(
        json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": out}),
    )
}

fn pb_bytes(field: u32, bytes: &[u8], out: &mut Vec<u8>) {
    // Length-delimited field: key = field << 3 | wire type 2.
    out.push(((field << 3) | 2) as u8);
    let mut len = bytes.len();
    loop {
        let b = (len & 0x7f) as u8;
        len >>= 7;
        if len == 0 {
            out.push(b);
            break;
        }
        out.push(b | 0x80);
    }
    out.extend_from_slice(bytes);
}

/// A minimal OpenAPI v2 document (`openapi_v2.Document`: swagger=1, info=2
/// with title=1, version=2) in protobuf. It declares no definitions, so
/// kubectl's client-side validation finds no schema for any kind and accepts
/// the manifest; the server remains the judge.
pub fn openapi_v2_protobuf() -> Vec<u8> {
    let mut info = Vec::new();
    pb_bytes(1, b"Kubernetes (vpc-eni-controller fake)", &mut info);
    pb_bytes(2, b"v1.20.2", &mut info);
    let mut doc = Vec::new();
    pb_bytes(1, b"2.0", &mut doc);
    pb_bytes(2, &info, &mut doc);
    doc
}

/// The same document in JSON, for clients that ask for it.
pub fn openapi_v2_json() -> Value {
    json!({"swagger": "2.0", "info": {"title": "Kubernetes (vpc-eni-controller fake)", "version": "v1.20.2"}, "paths": {}, "definitions": {}})
}
