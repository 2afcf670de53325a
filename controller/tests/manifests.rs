//! The manifests under `manifests/` are what a user applies. This test builds
//! each kustomize overlay the way `kubectl apply -k` does, for the kustomize
//! features the manifests use (resources, patches, configMapGenerator,
//! namespace, images; anything else fails the test so the model cannot go
//! stale silently), and checks what a user relies on: the RBAC grants exactly
//! `controller::rbac`, the Deployment is hardened and probed on the port the
//! config listens on, each overlay's config is accepted by the controller,
//! and the node DaemonSet installs the CNI plugin with read-only access.
//! Every check reports problems as text, and the `*_catches_*` tests break the
//! real manifests on purpose to prove each check can fail.

use controller::config::{known_apis, Config, ProviderKind};
use controller::rbac::{CLUSTER_ACCESS, NAMESPACE_ACCESS, NODE_ACCESS, NODE_PATCH_ACCESS};
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

const NAMESPACE: &str = "vpc-eni-system";
const CONFIG_PATH: &str = "/etc/vpc-eni-controller/config.yaml";
const PORT: i64 = 9090;
const PLACEHOLDER_IMAGE: &str = "vpc-eni-controller:latest";
/// `app.kubernetes.io/name` of the controller's objects and of the node
/// part's (manifests/node): every object carries one of the two.
const CONTROLLER_APP: &str = "vpc-eni-controller";
const NODE_APP: &str = "vpc-eni-node";
/// The ClusterRole of `manifests/patch-nodes`: `nodes: patch`, only for
/// `routes.allocatePodCidrs`.
const NODE_PATCH_ROLE: &str = "vpc-eni-controller-patch-nodes";

fn manifests_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../manifests")
}

// ---------------------------------------------------------------------------
// Reading YAML
// ---------------------------------------------------------------------------

/// Every document of a (multi-document) YAML text, as JSON values; empty
/// documents (only comments) are skipped as kubectl does.
fn parse_docs(text: &str, origin: &Path) -> Vec<Value> {
    let mut out = Vec::new();
    for (i, doc) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let yaml = serde_yaml::Value::deserialize(doc)
            .unwrap_or_else(|e| panic!("{} document {i}: not YAML: {e}", origin.display()));
        if yaml.is_null() {
            continue;
        }
        let value = serde_json::to_value(&yaml).unwrap_or_else(|e| {
            panic!(
                "{} document {i}: not JSON-compatible: {e}",
                origin.display()
            )
        });
        out.push(value);
    }
    out
}

fn read_docs(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    parse_docs(&text, path)
}

fn yaml_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            yaml_files(&path, out);
        } else if matches!(
            path.extension().and_then(|e| e.to_str()),
            Some("yaml" | "yml")
        ) {
            out.push(path);
        }
    }
}

// ---------------------------------------------------------------------------
// The kustomize subset
// ---------------------------------------------------------------------------

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Kustomization {
    api_version: String,
    kind: String,
    #[serde(default)]
    namespace: Option<String>,
    #[serde(default)]
    resources: Vec<String>,
    #[serde(default)]
    patches: Vec<PatchRef>,
    #[serde(default)]
    config_map_generator: Vec<Generator>,
    #[serde(default)]
    images: Vec<ImageRule>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PatchRef {
    path: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Generator {
    name: String,
    files: Vec<String>,
    #[serde(default)]
    options: Option<GeneratorOptions>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GeneratorOptions {
    #[serde(default)]
    labels: BTreeMap<String, String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ImageRule {
    name: String,
    #[serde(default)]
    new_name: Option<String>,
    #[serde(default)]
    new_tag: Option<String>,
}

fn read_kustomization(dir: &Path) -> Kustomization {
    let path = dir.join("kustomization.yaml");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let k: Kustomization = serde_yaml::from_str(&text).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (a kustomize field this test does not model must be added to it first)",
            path.display()
        )
    });
    assert_eq!(
        k.api_version,
        "kustomize.config.k8s.io/v1beta1",
        "{}",
        path.display()
    );
    assert_eq!(k.kind, "Kustomization", "{}", path.display());
    k
}

fn is_cluster_scoped(kind: &str) -> bool {
    matches!(
        kind,
        "Namespace" | "ClusterRole" | "ClusterRoleBinding" | "PriorityClass"
    )
}

/// What `kubectl kustomize <dir>` outputs, minus the content hash kustomize
/// appends to generated ConfigMap names (it renames every reference along
/// with the ConfigMap, so leaving it out changes no check).
fn build(dir: &Path) -> Vec<Value> {
    let k = read_kustomization(dir);
    let mut objects = Vec::new();
    for resource in &k.resources {
        let path = dir.join(resource);
        if path.is_dir() {
            objects.extend(build(&path));
        } else {
            objects.extend(read_docs(&path));
        }
    }
    for generator in &k.config_map_generator {
        let mut data = serde_json::Map::new();
        for file in &generator.files {
            let path = dir.join(file);
            let text = std::fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
            data.insert(file.clone(), Value::String(text));
        }
        let mut cm = json!({
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": generator.name},
            "data": data,
        });
        if let Some(options) = &generator.options {
            if !options.labels.is_empty() {
                cm["metadata"]["labels"] = json!(options.labels);
            }
        }
        objects.push(cm);
    }
    for patch in &k.patches {
        let path = dir.join(&patch.path);
        for doc in read_docs(&path) {
            let targets: Vec<&mut Value> = objects
                .iter_mut()
                .filter(|o| {
                    o["kind"] == doc["kind"] && o["metadata"]["name"] == doc["metadata"]["name"]
                })
                .collect();
            assert_eq!(
                targets.len(),
                1,
                "{}: a patch must match exactly one object",
                path.display()
            );
            for target in targets {
                merge(target, &doc, &path);
            }
        }
    }
    if let Some(ns) = &k.namespace {
        for o in &mut objects {
            if !is_cluster_scoped(o["kind"].as_str().unwrap_or_default()) {
                o["metadata"]["namespace"] = json!(ns);
            }
        }
    }
    for rule in &k.images {
        for o in &mut objects {
            for c in containers_mut(o) {
                let Some(image) = c["image"].as_str() else {
                    continue;
                };
                let (name, tag) = match image.rsplit_once(':') {
                    Some((n, t)) if !t.contains('/') => (n, Some(t)),
                    _ => (image, None),
                };
                if name != rule.name {
                    continue;
                }
                let new_name = rule.new_name.as_deref().unwrap_or(name);
                let new_image = match rule.new_tag.as_deref().or(tag) {
                    Some(t) => format!("{new_name}:{t}"),
                    None => new_name.to_owned(),
                };
                c["image"] = json!(new_image);
            }
        }
    }
    objects
}

/// A strategic merge patch restricted to maps and scalars: lists would merge
/// by key in kustomize, which this model does not do, so they are refused.
fn merge(target: &mut Value, patch: &Value, origin: &Path) {
    match (target, patch) {
        (Value::Object(t), Value::Object(p)) => {
            for (key, pv) in p {
                match t.get_mut(key) {
                    Some(tv) if tv.is_object() && pv.is_object() => merge(tv, pv, origin),
                    Some(tv) if tv.is_array() || pv.is_array() => panic!(
                        "{}: patching the list `{key}` is not modelled by this test",
                        origin.display()
                    ),
                    _ => {
                        t.insert(key.clone(), pv.clone());
                    }
                }
            }
        }
        (t, p) => *t = p.clone(),
    }
}

fn containers_mut(o: &mut Value) -> Vec<&mut Value> {
    let mut out = Vec::new();
    if let Some(spec) = o.pointer_mut("/spec/template/spec") {
        if let Some(spec) = spec.as_object_mut() {
            for (key, list) in spec.iter_mut() {
                if key == "containers" || key == "initContainers" {
                    if let Some(list) = list.as_array_mut() {
                        out.extend(list.iter_mut());
                    }
                }
            }
        }
    }
    out
}

// ---------------------------------------------------------------------------
// Looking things up in a build
// ---------------------------------------------------------------------------

fn of_kind<'a>(objects: &'a [Value], kind: &str) -> Vec<&'a Value> {
    objects.iter().filter(|o| o["kind"] == kind).collect()
}

fn one<'a>(objects: &'a [Value], kind: &str, problems: &mut Vec<String>) -> Option<&'a Value> {
    let found = of_kind(objects, kind);
    if found.len() != 1 {
        problems.push(format!(
            "expected exactly one {kind}, found {}",
            found.len()
        ));
        return None;
    }
    Some(found[0])
}

fn name_of(o: &Value) -> &str {
    o["metadata"]["name"].as_str().unwrap_or_default()
}

fn namespace_of(o: &Value) -> &str {
    o["metadata"]["namespace"].as_str().unwrap_or_default()
}

fn app_of(o: &Value) -> &str {
    o["metadata"]["labels"]["app.kubernetes.io/name"]
        .as_str()
        .unwrap_or_default()
}

/// The objects of one part of a build (the controller's or the node's).
fn part(objects: &[Value], app: &str) -> Vec<Value> {
    objects
        .iter()
        .filter(|o| app_of(o) == app)
        .cloned()
        .collect()
}

fn str_list(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .map(|s| s.as_str().unwrap_or("<not a string>").to_owned())
                .collect()
        })
        .unwrap_or_default()
}

type Triple = (String, String, String);
/// A list of `controller::rbac` grants.
type Access = &'static [(
    &'static str,
    &'static str,
    &'static [&'static str],
    &'static str,
)];

fn expected_triples(access: &[(&str, &str, &[&str], &str)]) -> BTreeSet<Triple> {
    let mut out = BTreeSet::new();
    for (group, resource, verbs, _why) in access {
        for verb in *verbs {
            out.insert((group.to_string(), resource.to_string(), verb.to_string()));
        }
    }
    out
}

/// (group, resource, verb) granted by a rule list; wildcards and
/// non-resource URLs are reported, resourceNames returned per triple.
fn granted(
    rules: &Value,
    what: &str,
    problems: &mut Vec<String>,
) -> BTreeMap<Triple, Option<Vec<String>>> {
    let mut out = BTreeMap::new();
    for (i, rule) in rules
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .enumerate()
    {
        if rule.get("nonResourceURLs").is_some() {
            problems.push(format!("{what} rule {i} grants nonResourceURLs"));
        }
        let names = rule.get("resourceNames").map(str_list);
        for group in str_list(&rule["apiGroups"]) {
            for resource in str_list(&rule["resources"]) {
                for verb in str_list(&rule["verbs"]) {
                    if group == "*" || resource == "*" || verb == "*" {
                        problems.push(format!(
                            "{what} rule {i} uses a wildcard: group {group:?} resource {resource:?} verb {verb:?}"
                        ));
                    }
                    out.insert((group.clone(), resource.clone(), verb), names.clone());
                }
            }
        }
    }
    out
}

fn compare_grants(
    what: &str,
    got: &BTreeSet<Triple>,
    want: &BTreeSet<Triple>,
    problems: &mut Vec<String>,
) {
    for extra in got.difference(want) {
        problems.push(format!(
            "{what} grants {extra:?}, which controller::rbac does not list"
        ));
    }
    for missing in want.difference(got) {
        problems.push(format!(
            "{what} lacks {missing:?}, which controller::rbac lists"
        ));
    }
}

fn binding_problems(
    objects: &[Value],
    kind: &str,
    role_kind: &str,
    role_name: &str,
    sa: (&str, &str),
    problems: &mut Vec<String>,
) {
    let Some(b) = one(objects, kind, problems) else {
        return;
    };
    if b["roleRef"]
        != json!({"apiGroup": "rbac.authorization.k8s.io", "kind": role_kind, "name": role_name})
    {
        problems.push(format!(
            "{kind} roleRef {} is not {role_kind} {role_name}",
            b["roleRef"]
        ));
    }
    let want = json!([{"kind": "ServiceAccount", "name": sa.0, "namespace": sa.1}]);
    if b["subjects"] != want {
        problems.push(format!("{kind} subjects {} are not {want}", b["subjects"]));
    }
}

/// The ClusterRoles and Role grant exactly `controller::rbac` (the podCIDR
/// role exactly when `patches_nodes`: `routes.allocatePodCidrs` or
/// `sharedEni.enabled`), are bound to the Deployment's
/// ServiceAccount, and nothing else grants anything.
fn rbac_problems(objects: &[Value], lease_name: &str, patches_nodes: bool) -> Vec<String> {
    let objects = &part(objects, CONTROLLER_APP);
    let mut problems = Vec::new();
    let Some(deploy) = one(objects, "Deployment", &mut problems) else {
        return problems;
    };
    let sa_name = deploy["spec"]["template"]["spec"]["serviceAccountName"]
        .as_str()
        .unwrap_or_default();
    let ns = namespace_of(deploy);
    let sa = (sa_name, ns);
    if !of_kind(objects, "ServiceAccount")
        .iter()
        .any(|s| name_of(s) == sa_name && namespace_of(s) == ns)
    {
        problems.push(format!(
            "no ServiceAccount {ns}/{sa_name} for the Deployment"
        ));
    }

    // The base ClusterRole always; the podCIDR one exactly when the config
    // hands out podCIDRs; nothing else.
    let mut roles: Vec<(&str, Access)> = vec![(CONTROLLER_APP, CLUSTER_ACCESS)];
    if patches_nodes {
        roles.push((NODE_PATCH_ROLE, NODE_PATCH_ACCESS));
    }
    for cr in of_kind(objects, "ClusterRole") {
        if !roles.iter().any(|(name, _)| *name == name_of(cr)) {
            problems.push(if name_of(cr) == NODE_PATCH_ROLE {
                format!("ClusterRole {NODE_PATCH_ROLE} is in the build but neither routes.allocatePodCidrs nor sharedEni is on: it may patch every Node for nothing")
            } else {
                format!("unexpected ClusterRole {}", name_of(cr))
            });
        }
    }
    for (name, access) in roles {
        let found: Vec<&Value> = of_kind(objects, "ClusterRole")
            .into_iter()
            .filter(|o| name_of(o) == name)
            .collect();
        let [cr] = found[..] else {
            problems.push(if name == NODE_PATCH_ROLE {
                format!("routes.allocatePodCidrs or sharedEni is on but the build lacks ClusterRole {NODE_PATCH_ROLE} (add ../patch-nodes)")
            } else {
                format!("expected exactly one ClusterRole {name}, found {}", found.len())
            });
            continue;
        };
        let what = format!("ClusterRole {name}");
        if cr.get("aggregationRule").is_some() {
            problems.push(format!("{what} aggregates other roles"));
        }
        let grants = granted(&cr["rules"], &what, &mut problems);
        for (triple, names) in &grants {
            if names.is_some() {
                problems.push(format!("{what} limits {triple:?} by resourceNames"));
            }
        }
        let got = grants.keys().cloned().collect();
        compare_grants(&what, &got, &expected_triples(access), &mut problems);
        let bindings: Vec<Value> = of_kind(objects, "ClusterRoleBinding")
            .into_iter()
            .filter(|b| b["roleRef"]["name"] == name)
            .cloned()
            .collect();
        binding_problems(
            &bindings,
            "ClusterRoleBinding",
            "ClusterRole",
            name,
            sa,
            &mut problems,
        );
    }
    for b in of_kind(objects, "ClusterRoleBinding") {
        if !of_kind(objects, "ClusterRole")
            .iter()
            .any(|cr| b["roleRef"]["name"] == name_of(cr))
        {
            problems.push(format!(
                "ClusterRoleBinding {} binds {}, which is not part of the build",
                name_of(b),
                b["roleRef"]
            ));
        }
    }

    if let Some(role) = one(objects, "Role", &mut problems) {
        if namespace_of(role) != ns {
            problems.push(format!(
                "Role is in namespace {:?}, the Lease is in the pod's namespace {ns:?}",
                namespace_of(role)
            ));
        }
        let grants = granted(&role["rules"], "Role", &mut problems);
        for ((_, _, verb), names) in &grants {
            match names {
                Some(_) if verb == "create" => problems.push(
                    "Role limits create by resourceNames: the apiserver then refuses to create the Lease".into(),
                ),
                Some(names) if names != &[lease_name.to_owned()] => problems.push(format!(
                    "Role limits {verb} to {names:?}, the config's Lease is {lease_name:?}"
                )),
                _ => {}
            }
        }
        let got = grants.keys().cloned().collect();
        compare_grants(
            "Role",
            &got,
            &expected_triples(NAMESPACE_ACCESS),
            &mut problems,
        );
        if let Some(rb) = of_kind(objects, "RoleBinding").first() {
            if namespace_of(rb) != ns {
                problems.push(format!(
                    "RoleBinding is in namespace {:?}, not {ns:?}",
                    namespace_of(rb)
                ));
            }
        }
        binding_problems(
            objects,
            "RoleBinding",
            "Role",
            name_of(role),
            sa,
            &mut problems,
        );
    }
    problems
}

/// A probe's or Service's port, by number or by the container port's name.
fn resolve_port(port: &Value, container: &Value) -> Option<i64> {
    if let Some(n) = port.as_i64() {
        return Some(n);
    }
    let name = port.as_str()?;
    container["ports"]
        .as_array()?
        .iter()
        .find(|p| p["name"] == name)
        .and_then(|p| p["containerPort"].as_i64())
}

fn pod_labels(deploy: &Value) -> &Value {
    &deploy["spec"]["template"]["metadata"]["labels"]
}

fn selects(selector: &Value, labels: &Value) -> bool {
    let Some(sel) = selector.as_object() else {
        return false;
    };
    !sel.is_empty() && sel.iter().all(|(k, v)| &labels[k] == v)
}

fn has_toleration(tolerations: &Value, key: &str) -> bool {
    tolerations.as_array().is_some_and(|ts| {
        ts.iter().any(|t| {
            t["key"] == key
                && t["operator"] == "Exists"
                && (t.get("effect").is_none() || t["effect"] == "NoSchedule")
        })
    })
}

fn env_field_ref(container: &Value, name: &str) -> Option<String> {
    container["env"]
        .as_array()?
        .iter()
        .find(|e| e["name"] == name)
        .and_then(|e| e.pointer("/valueFrom/fieldRef/fieldPath"))
        .and_then(|p| p.as_str())
        .map(str::to_owned)
}

/// The Deployment as the brief and a security reviewer want it, plus the
/// PodDisruptionBudget and metrics Service that go with it.
fn deployment_problems(objects: &[Value]) -> Vec<String> {
    let objects = &part(objects, CONTROLLER_APP);
    let mut problems = Vec::new();
    let mut bad = |p: String| problems.push(p);
    let mut found = Vec::new();
    let Some(deploy) = one(objects, "Deployment", &mut found) else {
        return found;
    };
    let spec = &deploy["spec"];
    let pod = &spec["template"]["spec"];
    let labels = pod_labels(deploy);

    if spec["replicas"] != 2 {
        bad(format!(
            "replicas is {}, want 2 (leader + standby)",
            spec["replicas"]
        ));
    }
    if !selects(&spec["selector"]["matchLabels"], labels) {
        bad("Deployment selector does not match its pod labels".into());
    }
    if pod["hostNetwork"] != true {
        bad(
            "hostNetwork is not true: the controller would depend on the pod network it sets up"
                .into(),
        );
    }
    if pod["priorityClassName"] != "system-cluster-critical" {
        bad(format!("priorityClassName is {}", pod["priorityClassName"]));
    } else if namespace_of(deploy) != "kube-system"
        && !quota_admits(objects, namespace_of(deploy), "system-cluster-critical", 3)
    {
        bad("no ResourceQuota admits system-cluster-critical pods outside kube-system (GKE refuses them)".into());
    }
    for key in [
        "node.kubernetes.io/network-unavailable",
        "node-role.kubernetes.io/control-plane",
    ] {
        if !has_toleration(&pod["tolerations"], key) {
            bad(format!("no NoSchedule toleration for {key}"));
        }
    }
    let psc = &pod["securityContext"];
    if psc["runAsNonRoot"] != true {
        bad("pod securityContext.runAsNonRoot is not true".into());
    }
    if psc["runAsUser"] != 65532 {
        bad(format!(
            "pod securityContext.runAsUser is {}, want 65532",
            psc["runAsUser"]
        ));
    }
    if psc["seccompProfile"]["type"] != "RuntimeDefault" {
        bad(format!(
            "pod seccompProfile is {}, want RuntimeDefault",
            psc["seccompProfile"]
        ));
    }
    if pod["hostPID"] == true || pod["hostIPC"] == true {
        bad("pod shares the host PID or IPC namespace".into());
    }

    let containers = pod["containers"].as_array().cloned().unwrap_or_default();
    if containers.len() != 1 {
        bad(format!(
            "expected one container, found {}",
            containers.len()
        ));
    }
    for c in pod["initContainers"]
        .as_array()
        .into_iter()
        .flatten()
        .chain(&containers)
    {
        let name = c["name"].as_str().unwrap_or("?");
        let sc = &c["securityContext"];
        if sc["allowPrivilegeEscalation"] != false {
            bad(format!(
                "container {name}: allowPrivilegeEscalation is not false"
            ));
        }
        if sc["readOnlyRootFilesystem"] != true {
            bad(format!(
                "container {name}: readOnlyRootFilesystem is not true"
            ));
        }
        if sc["privileged"] == true {
            bad(format!("container {name} is privileged"));
        }
        if !str_list(&sc["capabilities"]["drop"]).contains(&"ALL".to_owned()) {
            bad(format!("container {name}: capabilities do not drop ALL"));
        }
        if sc["capabilities"].get("add").is_some() {
            bad(format!(
                "container {name} adds capabilities {}",
                sc["capabilities"]["add"]
            ));
        }
        if sc["runAsNonRoot"] == false || sc["runAsUser"] == 0 {
            bad(format!("container {name} overrides the pod to run as root"));
        }
        for (kind, value) in [
            ("cpu", "requests"),
            ("memory", "requests"),
            ("cpu", "limits"),
            ("memory", "limits"),
        ] {
            if c["resources"][value][kind].is_null() {
                bad(format!("container {name}: no {value}.{kind}"));
            }
        }
    }
    let Some(c) = containers.first() else {
        return problems;
    };

    for (probe, path) in [("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")] {
        let get = &c[probe]["httpGet"];
        if get["path"] != path {
            bad(format!("{probe} path is {}, want {path}", get["path"]));
        }
        if resolve_port(&get["port"], c) != Some(PORT) {
            bad(format!("{probe} port {} is not {PORT}", get["port"]));
        }
    }
    if str_list(&c["args"]) != ["run", "--config", CONFIG_PATH] {
        bad(format!(
            "args are {}, want run --config {CONFIG_PATH}",
            c["args"]
        ));
    }
    for (var, field) in [
        ("POD_NAME", "metadata.name"),
        ("POD_NAMESPACE", "metadata.namespace"),
    ] {
        if env_field_ref(c, var).as_deref() != Some(field) {
            bad(format!(
                "env {var} does not come from the downward API field {field}"
            ));
        }
    }
    let secret_refs: Vec<&Value> = c["envFrom"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e.get("secretRef"))
        .collect();
    if secret_refs.len() != 1 || secret_refs[0]["optional"] != true {
        bad(format!(
            "want one optional envFrom secretRef for credentials, found {secret_refs:?}"
        ));
    }
    if config_map_name(deploy).is_none() {
        bad(format!(
            "no ConfigMap volume mounted so that {CONFIG_PATH} exists"
        ));
    }

    match of_kind(objects, "PodDisruptionBudget").as_slice() {
        [pdb] => {
            if pdb["spec"]["minAvailable"] != 1 {
                bad(format!(
                    "PodDisruptionBudget minAvailable is {}",
                    pdb["spec"]["minAvailable"]
                ));
            }
            if !selects(&pdb["spec"]["selector"]["matchLabels"], labels)
                || namespace_of(pdb) != namespace_of(deploy)
            {
                bad("PodDisruptionBudget does not select the controller pods".into());
            }
        }
        other => bad(format!(
            "expected one PodDisruptionBudget, found {}",
            other.len()
        )),
    }
    match of_kind(objects, "Service").as_slice() {
        [svc] => {
            if !selects(&svc["spec"]["selector"], labels)
                || namespace_of(svc) != namespace_of(deploy)
            {
                bad("metrics Service does not select the controller pods".into());
            }
            let ports = svc["spec"]["ports"].as_array().cloned().unwrap_or_default();
            if !ports
                .iter()
                .any(|p| resolve_port(&p["targetPort"], c) == Some(PORT))
            {
                bad(format!("metrics Service targets no port {PORT}"));
            }
        }
        other => bad(format!(
            "expected one metrics Service, found {}",
            other.len()
        )),
    }
    problems
}

/// A ResourceQuota in `namespace` whose scope selects `class` pods and
/// allows at least `pods` of them, which is what the "limit priority class
/// consumption" admission config asks for.
fn quota_admits(objects: &[Value], namespace: &str, class: &str, pods: u32) -> bool {
    of_kind(objects, "ResourceQuota").iter().any(|q| {
        namespace_of(q) == namespace
            && q["spec"]["hard"]["pods"]
                .as_str()
                .and_then(|n| n.parse::<u32>().ok())
                .is_some_and(|n| n >= pods)
            && q["spec"]["scopeSelector"]["matchExpressions"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|e| {
                    e["scopeName"] == "PriorityClass"
                        && e["operator"] == "In"
                        && str_list(&e["values"]).iter().any(|v| v == class)
                })
    })
}

/// The ConfigMap mounted such that the config file lands at CONFIG_PATH.
fn config_map_name(deploy: &Value) -> Option<String> {
    let pod = &deploy["spec"]["template"]["spec"];
    let (dir, file) = CONFIG_PATH.rsplit_once('/')?;
    let mounts = pod["containers"][0]["volumeMounts"].as_array()?;
    for m in mounts {
        let key = match m["subPath"].as_str() {
            Some(sub) if m["mountPath"] == CONFIG_PATH => sub.to_owned(),
            None if m["mountPath"] == dir || m["mountPath"] == format!("{dir}/") => file.to_owned(),
            _ => continue,
        };
        let volume = pod["volumes"]
            .as_array()?
            .iter()
            .find(|v| v["name"] == m["name"])?;
        if key != file || volume["configMap"]["items"].is_array() {
            // Remapped keys are not used by these manifests; say so rather than guess.
            continue;
        }
        return volume["configMap"]["name"].as_str().map(str::to_owned);
    }
    None
}

/// The config file a built overlay gives the controller.
fn config_text(objects: &[Value]) -> Result<String, String> {
    let deploy = of_kind(objects, "Deployment")
        .into_iter()
        .next()
        .ok_or("no Deployment")?;
    let name = config_map_name(deploy).ok_or("no config volume")?;
    let cm = of_kind(objects, "ConfigMap")
        .into_iter()
        .find(|cm| name_of(cm) == name && namespace_of(cm) == namespace_of(deploy))
        .ok_or(format!("ConfigMap {name} is not part of the build"))?;
    cm["data"]["config.yaml"]
        .as_str()
        .map(str::to_owned)
        .ok_or(format!("ConfigMap {name} has no key config.yaml"))
}

/// The overlay's config is valid, for the right cloud, and agrees with the
/// Deployment (port) and the Role (Lease name and namespace).
fn config_problems(objects: &[Value], kind: ProviderKind) -> Vec<String> {
    let text = match config_text(objects) {
        Ok(t) => t,
        Err(e) => return vec![e],
    };
    let config = match Config::parse(&text) {
        Ok(c) => c,
        Err(e) => return vec![format!("config.yaml is refused by the controller:\n{e}")],
    };
    let mut problems = rbac_problems(
        objects,
        &config.controller.leader_election.lease_name,
        config.routes.allocate_pod_cidrs || config.shared_eni.enabled,
    );
    if config.provider.kind != kind {
        problems.push(format!(
            "config is for {}, overlay is for {kind}",
            config.provider.kind
        ));
    }
    let port = config.controller.listen_addr().map(|a| i64::from(a.port()));
    if port != Ok(PORT) {
        problems.push(format!(
            "controller.listen {} is not the probed port {PORT}",
            config.controller.listen
        ));
    }
    if let Some(ns) = &config.controller.leader_election.namespace {
        if ns != NAMESPACE {
            problems.push(format!("Lease namespace {ns} has no Role granting access"));
        }
    }
    if !config.controller.leader_election.enabled {
        problems.push("leader election is off with 2 replicas: both would write".into());
    }
    problems
}

/// Problems of a whole overlay build.
fn overlay_problems(objects: &[Value], kind: ProviderKind) -> Vec<String> {
    let mut problems = deployment_problems(objects);
    problems.extend(config_problems(objects, kind));
    problems.extend(node_problems(objects));
    for o in objects {
        let kind = o["kind"].as_str().unwrap_or_default();
        if !is_cluster_scoped(kind) && namespace_of(o) != NAMESPACE {
            problems.push(format!(
                "{kind} {} is in namespace {:?}",
                name_of(o),
                namespace_of(o)
            ));
        }
        if ![CONTROLLER_APP, NODE_APP].contains(&app_of(o)) {
            problems.push(format!(
                "{kind} {} is labelled for neither {CONTROLLER_APP} nor {NODE_APP}, so no check looks at it",
                name_of(o)
            ));
        }
    }
    let image_of = |kind: &str, list: &str| {
        of_kind(objects, kind)
            .first()
            .and_then(|o| o["spec"]["template"]["spec"][list][0]["image"].as_str())
            .map(str::to_owned)
    };
    if image_of("DaemonSet", "initContainers") != image_of("Deployment", "containers") {
        problems.push(format!(
            "the node DaemonSet installs from image {:?}, the controller runs {:?}: the plugin must ship with its controller",
            image_of("DaemonSet", "initContainers"),
            image_of("Deployment", "containers")
        ));
    }
    if !of_kind(objects, "Namespace")
        .iter()
        .any(|n| name_of(n) == NAMESPACE)
    {
        problems.push(format!(
            "the build does not create the namespace {NAMESPACE}"
        ));
    }
    for o in of_kind(objects, "Deployment")
        .into_iter()
        .chain(of_kind(objects, "DaemonSet"))
    {
        let spec = &o["spec"]["template"]["spec"];
        for c in spec["containers"]
            .as_array()
            .into_iter()
            .chain(spec["initContainers"].as_array())
            .flatten()
        {
            if c["image"] == PLACEHOLDER_IMAGE {
                problems.push("the overlay keeps the placeholder image".into());
            }
        }
    }
    problems
}

fn overlay(name: &str) -> Vec<Value> {
    build(&manifests_dir().join(name))
}

fn assert_no_problems(what: &str, problems: &[String]) {
    assert!(problems.is_empty(), "{what}:\n  {}", problems.join("\n  "));
}

// ---------------------------------------------------------------------------
// The manifests as shipped
// ---------------------------------------------------------------------------

#[test]
fn every_yaml_file_parses_and_every_object_is_named() {
    let mut files = Vec::new();
    yaml_files(&manifests_dir(), &mut files);
    assert!(files.len() >= 12, "found only {files:?}");
    for file in files {
        for doc in read_docs(&file) {
            if doc.get("apiVersion").is_none() {
                // config.yaml files: checked by Config::parse below.
                continue;
            }
            assert!(
                doc["kind"].is_string(),
                "{}: object without kind",
                file.display()
            );
            if doc["kind"] != "Kustomization" {
                assert!(
                    !name_of(&doc).is_empty(),
                    "{}: {} without metadata.name",
                    file.display(),
                    doc["kind"]
                );
            }
        }
    }
}

#[test]
fn base_grants_exactly_the_rbac_the_controller_declares() {
    let base = overlay("base");
    assert_no_problems(
        "base rbac",
        &rbac_problems(&base, "vpc-eni-controller", false),
    );
    // Without the podCIDR part, nothing may patch a Node's spec.
    assert!(!expected_triples(CLUSTER_ACCESS).contains(&(
        String::new(),
        "nodes".into(),
        "patch".into()
    )));
}

#[test]
fn patch_nodes_part_grants_nodes_patch_only_where_pod_cidrs_or_shared_enis_need_it() {
    let mut with = overlay("base");
    with.extend(overlay("patch-nodes"));
    assert_no_problems(
        "base + patch-nodes",
        &rbac_problems(&with, "vpc-eni-controller", true),
    );
    let problems = rbac_problems(&with, "vpc-eni-controller", false).join("\n");
    assert!(
        problems.contains("neither routes.allocatePodCidrs nor sharedEni is on"),
        "got {problems:?}"
    );
    let problems = rbac_problems(&overlay("base"), "vpc-eni-controller", true).join("\n");
    assert!(problems.contains("add ../patch-nodes"), "got {problems:?}");
    // An overlay whose config turns it on must include the part, and one
    // that includes it is accepted.
    let objects = with_config(&overlay("alibaba"), |t| {
        t.replace("allocatePodCidrs: false", "allocatePodCidrs: true")
    });
    let problems = overlay_problems(&objects, ProviderKind::Alibaba).join("\n");
    assert!(problems.contains("add ../patch-nodes"), "got {problems:?}");
    let mut objects = objects;
    objects.extend(overlay("patch-nodes"));
    assert_no_problems(
        "alibaba with allocatePodCidrs and patch-nodes",
        &overlay_problems(&objects, ProviderKind::Alibaba),
    );
    // Shared-ENI mode marks its nodes: it needs the part too.
    let objects = with_config(&overlay("alibaba"), |t| {
        with_eni_example_enabled(t) + "\nsharedEni:\n  enabled: true\n"
    });
    let problems = overlay_problems(&objects, ProviderKind::Alibaba).join("\n");
    assert!(problems.contains("add ../patch-nodes"), "got {problems:?}");
}

#[test]
fn base_deployment_is_hardened_and_probed() {
    let base = overlay("base");
    assert_no_problems("base deployment", &deployment_problems(&base));
    // The base leaves the config to the overlays, and says so.
    assert!(config_text(&base).is_err());
}

#[test]
fn alibaba_overlay_is_complete_and_its_config_is_valid() {
    let objects = overlay("alibaba");
    assert_no_problems(
        "alibaba",
        &overlay_problems(&objects, ProviderKind::Alibaba),
    );
    let config = Config::parse(&config_text(&objects).unwrap()).unwrap();
    assert!(
        config.routes.enabled,
        "the alibaba example turns routes (VPC mode) on"
    );
}

#[test]
fn aws_overlay_is_complete_and_its_config_is_valid() {
    let objects = overlay("aws");
    assert_no_problems("aws", &overlay_problems(&objects, ProviderKind::Aws));
    let config = Config::parse(&config_text(&objects).unwrap()).unwrap();
    assert!(config.routes.enabled);
}

/// Uncomments the `# BEGIN eni example` .. `# END eni example` block and
/// flips `eni.enabled` to true: what the config's comment tells a user to do.
fn with_eni_example_enabled(text: &str) -> String {
    let mut out = Vec::new();
    let (mut section, mut inside, mut uncommented, mut flipped) = (String::new(), false, 0, false);
    for line in text.lines() {
        let trimmed = line.trim_start();
        let indent = &line[..line.len() - trimmed.len()];
        if indent.is_empty() && !trimmed.starts_with('#') && !trimmed.is_empty() {
            section = trimmed.split(':').next().unwrap_or_default().to_owned();
        }
        if trimmed.starts_with("# BEGIN eni example") {
            inside = true;
        } else if trimmed.starts_with("# END eni example") {
            inside = false;
        } else if inside {
            let body = trimmed
                .strip_prefix("# ")
                .unwrap_or_else(|| panic!("example line not commented with '# ': {line:?}"));
            out.push(format!("{indent}{body}"));
            uncommented += 1;
        } else if section == "eni" && trimmed.starts_with("enabled: false") {
            out.push(format!("{indent}enabled: true"));
            flipped = true;
        } else {
            out.push(line.to_owned());
        }
    }
    assert!(uncommented > 0 && flipped, "no eni example block found");
    out.join("\n")
}

#[test]
fn each_overlays_commented_eni_example_is_valid_once_uncommented() {
    for (name, resource) in [("alibaba", "aliyun/eni"), ("aws", "vpc.amazonaws.com/eni")] {
        let text = config_text(&overlay(name)).unwrap();
        let enabled = with_eni_example_enabled(&text);
        let config = Config::parse(&enabled)
            .unwrap_or_else(|e| panic!("{name} eni example:\n{e}\n---\n{enabled}"));
        assert!(config.eni.enabled, "{name}");
        assert!(!config.eni.subnets.is_empty(), "{name}");
        assert_eq!(config.eni_resource_name(), resource, "{name}");
    }
}

#[test]
fn aws_overlay_annotates_the_service_account_for_irsa() {
    let objects = overlay("aws");
    let sa = of_kind(&objects, "ServiceAccount");
    assert_eq!(sa.len(), 2, "the controller's and the node's");
    let node = sa.iter().find(|s| name_of(s) == "vpc-eni-node").unwrap();
    assert!(
        node["metadata"].get("annotations").is_none(),
        "the plugin calls no cloud API: no IAM role for it"
    );
    let sa: Vec<&Value> = sa
        .into_iter()
        .filter(|s| name_of(s) == "vpc-eni-controller")
        .collect();
    let arn = sa[0]["metadata"]["annotations"]["eks.amazonaws.com/role-arn"]
        .as_str()
        .expect("IRSA annotation");
    assert_eq!(arn, "arn:aws:iam::111122223333:role/vpc-eni-controller");
    // The patch changed the annotation only, not what the base set.
    assert_eq!(
        sa[0]["metadata"]["labels"]["app.kubernetes.io/name"],
        "vpc-eni-controller"
    );
    // alibaba keeps a plain ServiceAccount.
    let ali = overlay("alibaba");
    assert!(of_kind(&ali, "ServiceAccount")
        .iter()
        .all(|s| s["metadata"].get("annotations").is_none()));
}

/// One IAM statement's actions, resources and the values it requires of
/// each condition key (`StringEquals` only: the policy uses nothing else).
struct IamStatement {
    actions: BTreeSet<String>,
    resources: Vec<String>,
    conditions: BTreeMap<String, String>,
}

fn iam_statements(policy: &Value) -> Vec<IamStatement> {
    let as_list = |v: &Value| match v {
        Value::String(s) => vec![s.clone()],
        other => str_list(other),
    };
    policy["Statement"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|s| IamStatement {
                    actions: as_list(&s["Action"]).into_iter().collect(),
                    resources: as_list(&s["Resource"]),
                    conditions: s["Condition"]["StringEquals"]
                        .as_object()
                        .map(|m| {
                            m.iter()
                                .map(|(k, v)| {
                                    (k.clone(), v.as_str().unwrap_or("<not a string>").to_owned())
                                })
                                .collect()
                        })
                        .unwrap_or_default(),
                })
                .collect()
        })
        .unwrap_or_default()
}

/// EC2 actions that create, change or delete something: allowed only on
/// the objects the cluster tag marks (or, for the other resources such a
/// call touches, on resource types that are never ours to delete).
const AWS_MUTATING: &[&str] = &[
    "ec2:CreateNetworkInterface",
    "ec2:AttachNetworkInterface",
    "ec2:DetachNetworkInterface",
    "ec2:DeleteNetworkInterface",
    "ec2:ModifyNetworkInterfaceAttribute",
    "ec2:AssignPrivateIpAddresses",
    "ec2:UnassignPrivateIpAddresses",
    "ec2:CreateRoute",
    "ec2:DeleteRoute",
    "ec2:ModifyInstanceAttribute",
];

/// What is wrong with an IAM policy for a cluster `cluster`: it must grant
/// exactly the calls the controller makes (`API_NAMES`), nothing on `*`
/// but describes, ENI and route changes only on what carries the cluster
/// tag, and tagging only inside CreateNetworkInterface.
fn iam_problems(policy: &Value, cluster: &str) -> Vec<String> {
    let mut problems = Vec::new();
    let tag = format!("kubernetes.io/cluster/{cluster}");
    let on_ours = format!("ec2:ResourceTag/{tag}");
    let asked_ours = format!("aws:RequestTag/{tag}");
    let want: BTreeSet<String> = known_apis(ProviderKind::Aws)
        .iter()
        .map(|a| format!("ec2:{a}"))
        .collect();
    let statements = iam_statements(policy);
    if policy["Statement"]
        .as_array()
        .is_none_or(|a| a.iter().any(|s| s["Effect"] != "Allow"))
    {
        problems.push("every statement must be an Allow".into());
    }
    let granted: BTreeSet<String> = statements
        .iter()
        .flat_map(|s| s.actions.iter().cloned())
        .filter(|a| a != "ec2:CreateTags")
        .collect();
    for extra in granted.difference(&want) {
        problems.push(format!(
            "the policy grants {extra}, which the controller never calls"
        ));
    }
    for missing in want.difference(&granted) {
        problems.push(format!(
            "the policy lacks {missing}, which the controller calls"
        ));
    }
    for s in &statements {
        let kinds: Vec<&str> = s
            .resources
            .iter()
            .map(|r| {
                r.rsplit(':')
                    .next()
                    .unwrap_or(r)
                    .split('/')
                    .next()
                    .unwrap_or(r)
            })
            .collect();
        for action in &s.actions {
            let mutating = AWS_MUTATING.contains(&action.as_str());
            if action == "ec2:CreateTags" {
                if s.conditions.get("ec2:CreateAction").map(String::as_str)
                    != Some("CreateNetworkInterface")
                    || kinds != ["network-interface"]
                {
                    problems.push(
                        "ec2:CreateTags must be limited to network interfaces inside CreateNetworkInterface".into(),
                    );
                }
                continue;
            }
            if !mutating {
                continue;
            }
            for kind in &kinds {
                let needs = match *kind {
                    // Ours: only with the cluster tag on it (or asked for it).
                    "network-interface" if action == "ec2:CreateNetworkInterface" => {
                        Some(&asked_ours)
                    }
                    "network-interface" | "route-table" => Some(&on_ours),
                    // Touched by the call, never changed in a way that is
                    // someone else's loss: the node's instance, the subnet
                    // and security groups a new ENI goes in.
                    "instance" | "subnet" | "security-group" => None,
                    _ => {
                        problems.push(format!(
                            "{action} is granted on {kind:?}: name the resource types it touches"
                        ));
                        continue;
                    }
                };
                if let Some(key) = needs {
                    if s.conditions.get(key.as_str()).map(String::as_str) != Some("owned") {
                        problems.push(format!(
                            "{action} on {kind} is not limited by {key} = owned"
                        ));
                    }
                }
            }
        }
    }
    problems
}

#[test]
fn aws_docs_and_iam_policy_grant_exactly_the_ec2_calls_scoped_to_the_cluster() {
    let dir = manifests_dir().join("aws");
    let comment = std::fs::read_to_string(dir.join("kustomization.yaml")).unwrap();
    for action in known_apis(ProviderKind::Aws) {
        assert!(
            comment.contains(&format!("ec2:{action}")),
            "kustomization.yaml does not list ec2:{action}"
        );
    }
    let config = Config::parse(&std::fs::read_to_string(dir.join("config.yaml")).unwrap()).unwrap();
    let policy: Value = serde_json::from_str(
        &std::fs::read_to_string(dir.join("iam-policy.example.json")).unwrap(),
    )
    .unwrap();
    assert_no_problems(
        "iam-policy.example.json",
        &iam_problems(&policy, config.cluster().as_str()),
    );
}

#[test]
fn iam_check_catches_unused_unscoped_and_other_cluster_grants() {
    let path = manifests_dir().join("aws/iam-policy.example.json");
    let policy: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let statement = |p: &mut Value, sid: &str| -> usize {
        p["Statement"]
            .as_array()
            .unwrap()
            .iter()
            .position(|s| s["Sid"] == sid)
            .unwrap_or_else(|| panic!("no statement {sid}"))
    };
    type Breakage = (
        &'static str,
        fn(&mut Value, usize),
        &'static str,
        &'static str,
    );
    let cases: &[Breakage] = &[
        (
            "the unused ReplaceRoute",
            |p, i| {
                p["Statement"][i]["Action"]
                    .as_array_mut()
                    .unwrap()
                    .push(json!("ec2:ReplaceRoute"))
            },
            "RoutesOnlyInTheClustersTable",
            "ec2:ReplaceRoute, which the controller never calls",
        ),
        (
            "delete on any ENI",
            |p, i| {
                p["Statement"][i]
                    .as_object_mut()
                    .unwrap()
                    .remove("Condition");
            },
            "ChangeOnlyTheClustersEnis",
            "ec2:DeleteNetworkInterface on network-interface is not limited",
        ),
        (
            "routes in any table",
            |p, i| p["Statement"][i]["Resource"] = json!("*"),
            "RoutesOnlyInTheClustersTable",
            "ec2:DeleteRoute is granted on \"*\"",
        ),
        (
            "another cluster's tag",
            |p, i| {
                p["Statement"][i]["Condition"]["StringEquals"] =
                    json!({"aws:RequestTag/kubernetes.io/cluster/other": "owned"})
            },
            "CreateEnisOnlyTaggedForTheCluster",
            "ec2:CreateNetworkInterface on network-interface is not limited",
        ),
        (
            "retag anything",
            |p, i| {
                p["Statement"][i]
                    .as_object_mut()
                    .unwrap()
                    .remove("Condition");
            },
            "TagEnisOnCreateOnly",
            "ec2:CreateTags must be limited",
        ),
        (
            "a call dropped",
            |p, i| p["Statement"][i]["Action"] = json!(["ec2:DescribeInstances"]),
            "Describe",
            "lacks ec2:DescribeSubnets",
        ),
    ];
    for (what, breakage, sid, expected) in cases {
        let mut p = policy.clone();
        let i = statement(&mut p, sid);
        breakage(&mut p, i);
        let problems = iam_problems(&p, "my-cluster").join("\n");
        assert!(problems.contains(expected), "{what}: got {problems:?}");
    }
}

/// The RAM action of an OpenAPI call: route and vSwitch calls go to the VPC
/// product (as `providers::alibaba` sends them), the rest to ECS.
fn ram_action(api: &str) -> String {
    if api.contains("Route") || api.contains("VSwitch") {
        format!("vpc:{api}")
    } else {
        format!("ecs:{api}")
    }
}

/// What is wrong with a RAM policy for cluster `cluster`: exactly the
/// OpenAPI calls the controller makes; ENI changes only on ENIs carrying
/// the cluster tag (a new ENI only when the request carries it); route
/// changes only on route tables (Alibaba's default is the VPC's system
/// table, which carries no tag of ours: the entries are marked by name).
fn ram_problems(policy: &Value, cluster: &str) -> Vec<String> {
    let mut problems = Vec::new();
    let want: BTreeSet<String> = known_apis(ProviderKind::Alibaba)
        .iter()
        .map(|a| ram_action(a))
        .collect();
    if policy["Version"] != "1" {
        problems.push("a RAM policy has Version \"1\"".into());
    }
    let statements = iam_statements(policy);
    let granted: BTreeSet<String> = statements
        .iter()
        .flat_map(|s| s.actions.iter().cloned())
        .collect();
    for extra in granted.difference(&want) {
        problems.push(format!(
            "the policy grants {extra}, which the controller never calls"
        ));
    }
    for missing in want.difference(&granted) {
        problems.push(format!(
            "the policy lacks {missing}, which the controller calls"
        ));
    }
    let tag = ipam::eni::tag::CLUSTER;
    for s in &statements {
        for action in &s.actions {
            let name = action.split(':').nth(1).unwrap_or_default();
            if name.starts_with("Describe") {
                continue;
            }
            for resource in &s.resources {
                let kind = resource
                    .rsplit(':')
                    .next()
                    .unwrap_or(resource)
                    .split('/')
                    .next()
                    .unwrap_or(resource);
                let on_enis = name.contains("NetworkInterface") || name.contains("PrivateIp");
                let needs = match kind {
                    "eni" if name == "CreateNetworkInterface" => {
                        Some(format!("acs:RequestTag/{tag}"))
                    }
                    "eni" if on_enis => Some(format!("acs:ResourceTag/{tag}")),
                    "routetable" if name.contains("Route") => None,
                    "instance" | "vswitch" | "securitygroup"
                        if name.contains("NetworkInterface") =>
                    {
                        None
                    }
                    _ => {
                        problems.push(format!(
                            "{action} is granted on {kind:?}: name the resource types it touches"
                        ));
                        continue;
                    }
                };
                if let Some(key) = needs {
                    if s.conditions.get(&key).map(String::as_str) != Some(cluster) {
                        problems.push(format!(
                            "{action} on {kind} is not limited by {key} = {cluster}"
                        ));
                    }
                }
            }
        }
    }
    problems
}

#[test]
fn alibaba_docs_and_ram_policy_grant_exactly_the_openapi_calls_scoped_to_the_cluster() {
    let dir = manifests_dir().join("alibaba");
    let comment = std::fs::read_to_string(dir.join("kustomization.yaml")).unwrap();
    for api in known_apis(ProviderKind::Alibaba) {
        let action = ram_action(api);
        assert!(
            comment.contains(action.as_str()),
            "alibaba/kustomization.yaml does not list {action}"
        );
    }
    let config = Config::parse(&std::fs::read_to_string(dir.join("config.yaml")).unwrap()).unwrap();
    let policy: Value = serde_json::from_str(
        &std::fs::read_to_string(dir.join("ram-policy.example.json")).unwrap(),
    )
    .unwrap();
    assert_no_problems(
        "ram-policy.example.json",
        &ram_problems(&policy, config.cluster().as_str()),
    );
    type Breakage = (&'static str, fn(&mut Value), &'static str);
    let breakages: &[Breakage] = &[
        (
            "delete any ENI",
            |p| {
                p["Statement"][3]
                    .as_object_mut()
                    .unwrap()
                    .remove("Condition");
            },
            "ecs:DeleteNetworkInterface on eni is not limited",
        ),
        (
            "create untagged ENIs",
            |p| {
                p["Statement"][1]["Condition"]["StringEquals"] = json!({"acs:RequestTag/team": "x"})
            },
            "ecs:CreateNetworkInterface on eni is not limited",
        ),
        (
            "an unused action",
            |p| {
                p["Statement"][5]["Action"]
                    .as_array_mut()
                    .unwrap()
                    .push(json!("ecs:ModifyInstanceAttribute"))
            },
            "ecs:ModifyInstanceAttribute, which the controller never calls",
        ),
        (
            "routes anywhere",
            |p| {
                p["Statement"][3]["Action"]
                    .as_array_mut()
                    .unwrap()
                    .push(json!("vpc:DeleteRouteEntry"))
            },
            "vpc:DeleteRouteEntry is granted on \"eni\"",
        ),
    ];
    for (what, breakage, expected) in breakages {
        let mut p = policy.clone();
        breakage(&mut p);
        let problems = ram_problems(&p, config.cluster().as_str()).join("\n");
        assert!(problems.contains(expected), "{what}: got {problems:?}");
    }
}

#[test]
fn alibaba_secret_example_feeds_the_deployment_and_is_not_applied() {
    let dir = manifests_dir().join("alibaba");
    let docs = read_docs(&dir.join("secret.example.yaml"));
    assert_eq!(docs.len(), 1);
    let secret = &docs[0];
    assert_eq!(secret["kind"], "Secret");
    assert_eq!(namespace_of(secret), NAMESPACE);
    let objects = overlay("alibaba");
    assert!(
        of_kind(&objects, "Secret").is_empty(),
        "the example must not be applied"
    );
    let deploy = of_kind(&objects, "Deployment")[0];
    let wanted =
        &deploy["spec"]["template"]["spec"]["containers"][0]["envFrom"][0]["secretRef"]["name"];
    assert_eq!(&secret["metadata"]["name"], wanted);
    let keys: BTreeSet<&str> = secret["stringData"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys,
        BTreeSet::from([
            "ALIBABA_CLOUD_ACCESS_KEY_ID",
            "ALIBABA_CLOUD_ACCESS_KEY_SECRET"
        ])
    );
    for value in secret["stringData"].as_object().unwrap().values() {
        assert!(
            value.as_str().unwrap().starts_with("REPLACE-WITH-"),
            "not a placeholder: {value}"
        );
    }
    let text = std::fs::read_to_string(dir.join("secret.example.yaml")).unwrap();
    assert!(text.contains(
        "kubectl -n vpc-eni-system create secret generic vpc-eni-controller-cloud-credentials"
    ));
}

#[test]
fn readme_explains_how_to_apply_each_overlay() {
    let readme = std::fs::read_to_string(manifests_dir().join("README.md")).unwrap();
    for overlay in ["alibaba", "aws"] {
        assert!(
            readme.contains(&format!("kubectl apply -k manifests/{overlay}")),
            "{overlay}"
        );
    }
}

/// `kubectl kustomize` (kustomize built into kubectl; scripts/test.sh
/// installs kubectl) produces the same objects as this test's model, so the
/// checks above look at what a user really applies.
#[test]
fn kustomize_model_agrees_with_kubectl_kustomize() {
    let Ok(output) = std::process::Command::new("kubectl")
        .arg("version")
        .arg("--client")
        .output()
    else {
        panic!("kubectl is not installed; run ./scripts/test.sh, which installs it");
    };
    assert!(output.status.success());
    for name in ["base", "node", "alibaba", "aws"] {
        let dir = manifests_dir().join(name);
        let out = std::process::Command::new("kubectl")
            .arg("kustomize")
            .arg(&dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let generators = generator_names(&dir);
        let mut theirs = parse_docs(&String::from_utf8(out.stdout).unwrap(), &dir);
        for o in &mut theirs {
            strip_name_hash(o, &generators);
        }
        let key = |o: &Value| {
            (
                o["kind"].to_string(),
                namespace_of(o).to_owned(),
                name_of(o).to_owned(),
            )
        };
        let theirs: BTreeMap<_, _> = theirs.into_iter().map(|o| (key(&o), o)).collect();
        let ours: BTreeMap<_, _> = build(&dir).into_iter().map(|o| (key(&o), o)).collect();
        assert_eq!(
            ours.keys().collect::<Vec<_>>(),
            theirs.keys().collect::<Vec<_>>(),
            "{name}"
        );
        for (k, o) in &ours {
            assert_eq!(
                o, &theirs[k],
                "{name}: {k:?} differs from kubectl kustomize"
            );
        }
    }
}

/// Names of the ConfigMaps generated by a kustomization and the ones it
/// includes.
fn generator_names(dir: &Path) -> Vec<String> {
    let k = read_kustomization(dir);
    let mut out: Vec<String> = k
        .config_map_generator
        .iter()
        .map(|g| g.name.clone())
        .collect();
    for resource in &k.resources {
        let path = dir.join(resource);
        if path.is_dir() {
            out.extend(generator_names(&path));
        }
    }
    out
}

/// `vpc-eni-controller-config-5g7h9k2m8t` -> `vpc-eni-controller-config`.
fn strip_name_hash(v: &mut Value, generators: &[String]) {
    match v {
        Value::String(s) => {
            for g in generators {
                if let Some(hash) = s.strip_prefix(&format!("{g}-")) {
                    if hash.len() == 10 && hash.chars().all(|c| c.is_ascii_alphanumeric()) {
                        *s = g.clone();
                    }
                }
            }
        }
        Value::Array(a) => a.iter_mut().for_each(|x| strip_name_hash(x, generators)),
        Value::Object(m) => m.values_mut().for_each(|x| strip_name_hash(x, generators)),
        _ => {}
    }
}

// ---------------------------------------------------------------------------
// Each check can fail: break the real manifests on purpose
// ---------------------------------------------------------------------------

fn rule_mut<'a>(objects: &'a mut [Value], kind: &str, i: usize) -> &'a mut Value {
    let o = objects.iter_mut().find(|o| o["kind"] == kind).unwrap();
    &mut o["rules"][i]
}

#[test]
fn rbac_check_catches_extra_missing_wildcard_and_misplaced_grants() {
    type Breakage = (&'static str, fn(&mut Vec<Value>), &'static str);
    let cases: &[Breakage] = &[
        (
            "extra verb",
            |o| {
                rule_mut(o, "ClusterRole", 0)["verbs"]
                    .as_array_mut()
                    .unwrap()
                    .push(json!("delete"))
            },
            "\"delete\"",
        ),
        (
            "extra resource",
            |o| {
                rule_mut(o, "ClusterRole", 2)["resources"]
                    .as_array_mut()
                    .unwrap()
                    .push(json!("secrets"))
            },
            "\"secrets\"",
        ),
        (
            "extra group",
            |o| {
                // The events rule (events.k8s.io): "" would add core events.
                rule_mut(o, "ClusterRole", 4)["apiGroups"]
                    .as_array_mut()
                    .unwrap()
                    .push(json!(""))
            },
            "which controller::rbac does not list",
        ),
        (
            "wildcard verb",
            |o| rule_mut(o, "ClusterRole", 1)["verbs"] = json!(["*"]),
            "wildcard",
        ),
        (
            "missing verb",
            |o| rule_mut(o, "ClusterRole", 2)["verbs"] = json!(["get", "list", "watch"]),
            "lacks",
        ),
        (
            "non-resource URL",
            |o| rule_mut(o, "ClusterRole", 0)["nonResourceURLs"] = json!(["/metrics"]),
            "nonResourceURLs",
        ),
        (
            "extra Role verb",
            |o| {
                rule_mut(o, "Role", 1)["verbs"]
                    .as_array_mut()
                    .unwrap()
                    .push(json!("delete"))
            },
            "\"delete\"",
        ),
        (
            "create limited by name",
            |o| rule_mut(o, "Role", 1)["resourceNames"] = json!(["vpc-eni-controller"]),
            "create",
        ),
        (
            "other Lease",
            |o| rule_mut(o, "Role", 0)["resourceNames"] = json!(["someone-else"]),
            "someone-else",
        ),
        (
            "second ClusterRole",
            |o| {
                let mut extra = o
                    .iter()
                    .find(|x| x["kind"] == "ClusterRole")
                    .unwrap()
                    .clone();
                extra["metadata"]["name"] = json!("more");
                o.push(extra);
            },
            "unexpected ClusterRole more",
        ),
        (
            "nodes patch in the base",
            |o| {
                rule_mut(o, "ClusterRole", 0)["verbs"]
                    .as_array_mut()
                    .unwrap()
                    .push(json!("patch"))
            },
            "\"nodes\", \"patch\"), which controller::rbac does not list",
        ),
        (
            "binding to another account",
            |o| {
                let b = o
                    .iter_mut()
                    .find(|x| x["kind"] == "ClusterRoleBinding")
                    .unwrap();
                b["subjects"][0]["name"] = json!("default");
            },
            "subjects",
        ),
        (
            "Role in another namespace",
            |o| {
                let r = o.iter_mut().find(|x| x["kind"] == "Role").unwrap();
                r["metadata"]["namespace"] = json!("kube-system");
            },
            "Role is in namespace",
        ),
    ];
    let base = overlay("base");
    for (what, breakage, expected) in cases {
        let mut objects = base.clone();
        breakage(&mut objects);
        let problems = rbac_problems(&objects, "vpc-eni-controller", false).join("\n");
        assert!(problems.contains(expected), "{what}: got {problems:?}");
    }
}

fn pod_mut(objects: &mut [Value]) -> &mut Value {
    let d = objects
        .iter_mut()
        .find(|o| o["kind"] == "Deployment")
        .unwrap();
    &mut d["spec"]["template"]["spec"]
}

fn container_mut(objects: &mut [Value]) -> &mut Value {
    &mut pod_mut(objects)["containers"][0]
}

#[test]
fn deployment_check_catches_each_weakening() {
    type Breakage = (&'static str, fn(&mut Vec<Value>), &'static str);
    let cases: &[Breakage] = &[
        (
            "one replica",
            |o| {
                o.iter_mut().find(|x| x["kind"] == "Deployment").unwrap()["spec"]["replicas"] =
                    json!(1)
            },
            "replicas",
        ),
        (
            "root allowed",
            |o| pod_mut(o)["securityContext"]["runAsNonRoot"] = json!(false),
            "runAsNonRoot",
        ),
        (
            "other uid",
            |o| pod_mut(o)["securityContext"]["runAsUser"] = json!(1000),
            "runAsUser",
        ),
        (
            "no seccomp",
            |o| pod_mut(o)["securityContext"]["seccompProfile"]["type"] = json!("Unconfined"),
            "seccomp",
        ),
        (
            "container root",
            |o| container_mut(o)["securityContext"]["runAsUser"] = json!(0),
            "as root",
        ),
        (
            "escalation",
            |o| container_mut(o)["securityContext"]["allowPrivilegeEscalation"] = json!(true),
            "allowPrivilegeEscalation",
        ),
        (
            "writable root",
            |o| container_mut(o)["securityContext"]["readOnlyRootFilesystem"] = json!(false),
            "readOnlyRootFilesystem",
        ),
        (
            "capabilities kept",
            |o| container_mut(o)["securityContext"]["capabilities"]["drop"] = json!(["NET_RAW"]),
            "drop ALL",
        ),
        (
            "capability added",
            |o| container_mut(o)["securityContext"]["capabilities"]["add"] = json!(["NET_ADMIN"]),
            "adds capabilities",
        ),
        (
            "privileged",
            |o| container_mut(o)["securityContext"]["privileged"] = json!(true),
            "privileged",
        ),
        (
            "liveness path",
            |o| container_mut(o)["livenessProbe"]["httpGet"]["path"] = json!("/readyz"),
            "livenessProbe path",
        ),
        (
            "readiness port",
            |o| container_mut(o)["readinessProbe"]["httpGet"]["port"] = json!(8080),
            "readinessProbe port",
        ),
        (
            "named port moved",
            |o| container_mut(o)["ports"][0]["containerPort"] = json!(8080),
            "livenessProbe port \"metrics\" is not 9090",
        ),
        (
            "no memory limit",
            |o| {
                container_mut(o)["resources"]["limits"]
                    .as_object_mut()
                    .unwrap()
                    .remove("memory");
            },
            "limits.memory",
        ),
        (
            "no quota for the priority",
            |o| o.retain(|x| x["kind"] != "ResourceQuota"),
            "ResourceQuota",
        ),
        (
            "no priority",
            |o| {
                pod_mut(o)
                    .as_object_mut()
                    .unwrap()
                    .remove("priorityClassName");
            },
            "priorityClassName",
        ),
        (
            "no network-unavailable toleration",
            |o| {
                pod_mut(o)["tolerations"]
                    .as_array_mut()
                    .unwrap()
                    .retain(|t| t["key"] != "node.kubernetes.io/network-unavailable");
            },
            "network-unavailable",
        ),
        (
            "no control-plane toleration",
            |o| {
                pod_mut(o)["tolerations"]
                    .as_array_mut()
                    .unwrap()
                    .retain(|t| t["key"] != "node-role.kubernetes.io/control-plane");
            },
            "control-plane",
        ),
        (
            "pod network",
            |o| pod_mut(o)["hostNetwork"] = json!(false),
            "hostNetwork",
        ),
        (
            "POD_NAME from a literal",
            |o| container_mut(o)["env"][0] = json!({"name": "POD_NAME", "value": "x"}),
            "POD_NAME",
        ),
        (
            "POD_NAMESPACE gone",
            |o| {
                container_mut(o)["env"]
                    .as_array_mut()
                    .unwrap()
                    .retain(|e| e["name"] != "POD_NAMESPACE");
            },
            "POD_NAMESPACE",
        ),
        (
            "secret required",
            |o| container_mut(o)["envFrom"][0]["secretRef"]["optional"] = json!(false),
            "optional envFrom",
        ),
        (
            "config elsewhere",
            |o| container_mut(o)["volumeMounts"][0]["mountPath"] = json!("/config"),
            "ConfigMap volume",
        ),
        (
            "wrong args",
            |o| container_mut(o)["args"] = json!(["run"]),
            "args",
        ),
        (
            "PDB allows zero",
            |o| {
                o.iter_mut()
                    .find(|x| x["kind"] == "PodDisruptionBudget")
                    .unwrap()["spec"]["minAvailable"] = json!(0)
            },
            "minAvailable",
        ),
        (
            "Service selects nothing",
            |o| {
                o.iter_mut().find(|x| x["kind"] == "Service").unwrap()["spec"]["selector"] =
                    json!({"app": "other"})
            },
            "does not select",
        ),
        (
            "Service wrong port",
            |o| {
                o.iter_mut().find(|x| x["kind"] == "Service").unwrap()["spec"]["ports"][0]
                    ["targetPort"] = json!(9091)
            },
            "targets no port",
        ),
    ];
    let base = overlay("base");
    for (what, breakage, expected) in cases {
        let mut objects = base.clone();
        breakage(&mut objects);
        let problems = deployment_problems(&objects).join("\n");
        assert!(problems.contains(expected), "{what}: got {problems:?}");
    }
}

fn with_config(objects: &[Value], edit: impl Fn(&str) -> String) -> Vec<Value> {
    let mut objects = objects.to_vec();
    let cm = objects
        .iter_mut()
        .find(|o| o["kind"] == "ConfigMap" && name_of(o) == "vpc-eni-controller-config")
        .unwrap();
    let text = cm["data"]["config.yaml"].as_str().unwrap().to_owned();
    let edited = edit(&text);
    assert_ne!(edited, text, "the edit changed nothing");
    cm["data"]["config.yaml"] = json!(edited);
    objects
}

#[test]
fn overlay_check_catches_bad_config_and_mismatches() {
    let objects = overlay("alibaba");
    let cases: Vec<(&str, Vec<Value>, ProviderKind, &str)> = vec![
        (
            "invalid config",
            with_config(&objects, |t| {
                t.replace("clusterCidr: 10.244.0.0/16", "clusterCidr: 10.244.0.0/33")
            }),
            ProviderKind::Alibaba,
            "refused by the controller",
        ),
        (
            "unknown field",
            with_config(&objects, |t| {
                t.replace("allocatePodCidrs:", "allocatePodCidr:")
            }),
            ProviderKind::Alibaba,
            "unknown field",
        ),
        (
            "wrong cloud",
            objects.clone(),
            ProviderKind::Aws,
            "config is for alibaba",
        ),
        (
            "listen elsewhere",
            with_config(&objects, |t| {
                t.replace("listen: \"${POD_IP}:9090\"", "listen: \"${POD_IP}:8080\"")
            }),
            ProviderKind::Alibaba,
            "is not the probed port",
        ),
        (
            "other lease",
            with_config(&objects, |t| {
                t.replace("leaseName: vpc-eni-controller", "leaseName: mine")
            }),
            ProviderKind::Alibaba,
            "the config's Lease is \"mine\"",
        ),
        (
            "no leader election",
            with_config(&objects, |t| {
                t.replacen(
                    "enabled: true\n    leaseName",
                    "enabled: false\n    leaseName",
                    1,
                )
            }),
            ProviderKind::Alibaba,
            "leader election is off",
        ),
        (
            "config map missing",
            objects
                .iter()
                .filter(|o| name_of(o) != "vpc-eni-controller-config")
                .cloned()
                .collect(),
            ProviderKind::Alibaba,
            "is not part of the build",
        ),
        (
            "placeholder image",
            {
                let mut o = objects.clone();
                container_mut(&mut o)["image"] = json!(PLACEHOLDER_IMAGE);
                o
            },
            ProviderKind::Alibaba,
            "placeholder image",
        ),
        (
            "object in default namespace",
            {
                let mut o = objects.clone();
                o.iter_mut().find(|x| x["kind"] == "Service").unwrap()["metadata"]["namespace"] =
                    json!("default");
                o
            },
            ProviderKind::Alibaba,
            "Service vpc-eni-controller-metrics is in namespace \"default\"",
        ),
    ];
    for (what, objects, kind, expected) in cases {
        let problems = overlay_problems(&objects, kind).join("\n");
        assert!(problems.contains(expected), "{what}: got {problems:?}");
    }
}

// ---------------------------------------------------------------------------
// The node part (manifests/node): DaemonSet installing the CNI plugin
// ---------------------------------------------------------------------------

const CNI_BIN_DIR: &str = "/opt/cni/bin";
const CNI_CONF_DIR: &str = "/etc/cni/net.d";
const PLUGIN_BINARY: &str = "/usr/local/bin/vpc-eni-cni";
const PAUSE_IMAGE: &str = "registry.k8s.io/pause:3.9";
const READ_VERBS: &[&str] = &["get", "list", "watch"];

fn env_value(container: &Value, name: &str) -> Option<String> {
    container["env"]
        .as_array()?
        .iter()
        .find(|e| e["name"] == name)
        .and_then(|e| e["value"].as_str())
        .map(str::to_owned)
}

fn daemonset(objects: &[Value]) -> Option<&Value> {
    of_kind(objects, "DaemonSet").into_iter().next()
}

/// The node ClusterRole grants exactly `controller::rbac::NODE_ACCESS`, no
/// write verb at all, to the DaemonSet's ServiceAccount, and the node part
/// has no other role.
fn node_rbac_problems(objects: &[Value]) -> Vec<String> {
    let objects = &part(objects, NODE_APP);
    let mut problems = Vec::new();
    let Some(ds) = one(objects, "DaemonSet", &mut problems) else {
        return problems;
    };
    let sa_name = ds["spec"]["template"]["spec"]["serviceAccountName"]
        .as_str()
        .unwrap_or_default();
    let ns = namespace_of(ds);
    if !of_kind(objects, "ServiceAccount")
        .iter()
        .any(|s| name_of(s) == sa_name && namespace_of(s) == ns)
    {
        problems.push(format!(
            "no ServiceAccount {ns}/{sa_name} for the node DaemonSet"
        ));
    }
    for kind in ["Role", "RoleBinding"] {
        if !of_kind(objects, kind).is_empty() {
            problems.push(format!(
                "the node part has a {kind}: the plugin needs no namespaced access"
            ));
        }
    }
    let Some(cr) = one(objects, "ClusterRole", &mut problems) else {
        return problems;
    };
    if cr.get("aggregationRule").is_some() {
        problems.push("node ClusterRole aggregates other roles".into());
    }
    let grants = granted(&cr["rules"], "node ClusterRole", &mut problems);
    for ((_, resource, verb), names) in &grants {
        if !READ_VERBS.contains(&verb.as_str()) {
            problems.push(format!(
                "node ClusterRole grants the write verb {verb:?} on {resource:?}: its token lies on every node"
            ));
        }
        if names.is_some() {
            problems.push(format!(
                "node ClusterRole limits {verb} on {resource} by resourceNames"
            ));
        }
    }
    let got = grants.keys().cloned().collect();
    compare_grants(
        "node ClusterRole",
        &got,
        &expected_triples(NODE_ACCESS),
        &mut problems,
    );
    binding_problems(
        objects,
        "ClusterRoleBinding",
        "ClusterRole",
        name_of(cr),
        (sa_name, ns),
        &mut problems,
    );
    problems
}

/// The conflist the install container copies, from the ConfigMap mounted
/// where `VPC_ENI_CNI_CONFLIST` points.
fn node_conflist(objects: &[Value]) -> Result<String, String> {
    let ds = daemonset(objects).ok_or("no DaemonSet")?;
    let pod = &ds["spec"]["template"]["spec"];
    let init = &pod["initContainers"][0];
    let path = env_value(init, "VPC_ENI_CNI_CONFLIST").ok_or("no VPC_ENI_CNI_CONFLIST")?;
    let (dir, key) = path
        .rsplit_once('/')
        .ok_or(format!("VPC_ENI_CNI_CONFLIST {path:?} is not a path"))?;
    let mount = init["volumeMounts"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|m| m["mountPath"] == dir)
        .ok_or(format!(
            "VPC_ENI_CNI_CONFLIST {path}: nothing is mounted at {dir}"
        ))?;
    let cm_name = pod["volumes"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|v| v["name"] == mount["name"])
        .and_then(|v| v["configMap"]["name"].as_str())
        .ok_or(format!("{dir} is not a ConfigMap volume"))?;
    let cm = of_kind(objects, "ConfigMap")
        .into_iter()
        .find(|c| name_of(c) == cm_name && namespace_of(c) == namespace_of(ds))
        .ok_or(format!("ConfigMap {cm_name} is not part of the build"))?;
    cm["data"][key]
        .as_str()
        .map(str::to_owned)
        .ok_or(format!("ConfigMap {cm_name} has no key {key}"))
}

/// The conflist parses, is CNI 1.0.0, and its first plugin is vpc-eni-cni
/// reading the kubeconfig the install container writes.
fn conflist_problems(text: &str, kubeconfig: &str) -> Vec<String> {
    let list: Value = match serde_json::from_str(text) {
        Ok(v) => v,
        Err(e) => return vec![format!("the conflist is not JSON: {e}")],
    };
    let mut problems = Vec::new();
    if list["cniVersion"] != "1.0.0" {
        problems.push(format!("conflist cniVersion is {}", list["cniVersion"]));
    }
    if list["name"].as_str().is_none_or(str::is_empty) {
        problems.push("conflist has no name".into());
    }
    let plugin = &list["plugins"][0];
    if plugin["type"] != "vpc-eni-cni" {
        problems.push(format!(
            "the conflist's first plugin is {}, not vpc-eni-cni",
            plugin["type"]
        ));
    }
    if plugin["kubeconfig"] != kubeconfig {
        problems.push(format!(
            "the plugin reads kubeconfig {}, the install container writes {kubeconfig}",
            plugin["kubeconfig"]
        ));
    }
    if plugin["delegate"]["type"].as_str().is_none() {
        problems.push("the plugin has no delegate for routes-mode pods".into());
    }
    problems
}

/// The DaemonSet as a node needs it: on every node (all taints tolerated,
/// node-critical, host network), its init container installing the plugin
/// from the controller's image into the host's CNI directories, a pause
/// container keeping the pod, hardened containers.
fn daemonset_problems(objects: &[Value]) -> Vec<String> {
    let objects = &part(objects, NODE_APP);
    let mut problems = Vec::new();
    let Some(ds) = one(objects, "DaemonSet", &mut problems) else {
        return problems;
    };
    let mut bad = |p: String| problems.push(p);
    let pod = &ds["spec"]["template"]["spec"];
    if !selects(&ds["spec"]["selector"]["matchLabels"], pod_labels(ds)) {
        bad("DaemonSet selector does not match its pod labels".into());
    }
    if pod["hostNetwork"] != true {
        bad(
            "hostNetwork is not true: the node pod cannot wait for the pod network it installs"
                .into(),
        );
    }
    if pod["hostPID"] == true || pod["hostIPC"] == true {
        bad("node pod shares the host PID or IPC namespace".into());
    }
    if pod["automountServiceAccountToken"] == false {
        bad("no service-account token to write into the plugin's kubeconfig".into());
    }
    if pod["priorityClassName"] != "system-node-critical" {
        bad(format!(
            "node pod priorityClassName is {}, want system-node-critical",
            pod["priorityClassName"]
        ));
    } else if namespace_of(ds) != "kube-system"
        && !quota_admits(objects, namespace_of(ds), "system-node-critical", 1000)
    {
        bad("no ResourceQuota admits a system-node-critical pod per node outside kube-system (GKE refuses them)".into());
    }
    let tolerates_all = pod["tolerations"].as_array().is_some_and(|ts| {
        ts.iter().any(|t| {
            t["operator"] == "Exists" && t.get("key").is_none() && t.get("effect").is_none()
        })
    });
    if !tolerates_all {
        bad(format!(
            "tolerations {} do not tolerate every taint: a tainted node would get no plugin",
            pod["tolerations"]
        ));
    }

    let inits = pod["initContainers"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let mains = pod["containers"].as_array().cloned().unwrap_or_default();
    for c in inits.iter().chain(&mains) {
        let name = c["name"].as_str().unwrap_or("?");
        let sc = &c["securityContext"];
        if sc["allowPrivilegeEscalation"] != false {
            bad(format!(
                "node container {name}: allowPrivilegeEscalation is not false"
            ));
        }
        if sc["readOnlyRootFilesystem"] != true {
            bad(format!(
                "node container {name}: readOnlyRootFilesystem is not true"
            ));
        }
        if sc["privileged"] == true {
            bad(format!("node container {name} is privileged"));
        }
        if !str_list(&sc["capabilities"]["drop"]).contains(&"ALL".to_owned()) {
            bad(format!(
                "node container {name}: capabilities do not drop ALL"
            ));
        }
        if sc["capabilities"].get("add").is_some() {
            bad(format!("node container {name} adds capabilities"));
        }
        for (kind, value) in [
            ("cpu", "requests"),
            ("memory", "requests"),
            ("memory", "limits"),
        ] {
            if c["resources"][value][kind].is_null() {
                bad(format!("node container {name}: no {value}.{kind}"));
            }
        }
    }
    match mains.as_slice() {
        [pause] => {
            if pause["image"] != PAUSE_IMAGE {
                bad(format!(
                    "the main container runs {}, want {PAUSE_IMAGE}",
                    pause["image"]
                ));
            }
            if pause["securityContext"]["runAsNonRoot"] != true {
                bad("the pause container may run as root".into());
            }
        }
        other => bad(format!(
            "want one main (pause) container, found {}",
            other.len()
        )),
    }
    let [init] = inits.as_slice() else {
        bad(format!(
            "want one init container installing the plugin, found {}",
            inits.len()
        ));
        return problems;
    };
    if str_list(&init["command"]) != [PLUGIN_BINARY, "install"] {
        bad(format!(
            "install container command is {}, want [{PLUGIN_BINARY}, install]",
            init["command"]
        ));
    }
    // Each host directory is a hostPath volume, mounted writable in the
    // install container where its variable points.
    for (host_dir, var) in [
        (CNI_BIN_DIR, "VPC_ENI_CNI_BIN_DIR"),
        (CNI_CONF_DIR, "VPC_ENI_CNI_CONF_DIR"),
    ] {
        let volume = pod["volumes"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|v| v["hostPath"]["path"] == host_dir);
        let Some(volume) = volume else {
            bad(format!("no hostPath volume for {host_dir}"));
            continue;
        };
        let mount = init["volumeMounts"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|m| m["name"] == volume["name"]);
        let Some(mount) = mount else {
            bad(format!("the install container does not mount {host_dir}"));
            continue;
        };
        if mount["readOnly"] == true {
            bad(format!("the install container mounts {host_dir} read-only"));
        }
        if env_value(init, var).as_deref() != mount["mountPath"].as_str() {
            bad(format!(
                "{var} is {:?}, but {host_dir} is mounted at {}",
                env_value(init, var),
                mount["mountPath"]
            ));
        }
    }
    let kubeconfig = format!(
        "{CNI_CONF_DIR}/{}",
        env_value(init, "VPC_ENI_CNI_KUBECONFIG_NAME").unwrap_or_default()
    );
    match node_conflist(objects) {
        Ok(text) => problems.extend(conflist_problems(&text, &kubeconfig)),
        Err(e) => problems.push(e),
    }
    problems
}

fn node_problems(objects: &[Value]) -> Vec<String> {
    let mut problems = node_rbac_problems(objects);
    problems.extend(daemonset_problems(objects));
    problems
}

#[test]
fn node_rbac_grants_exactly_get_on_pods_and_nodes() {
    let want: BTreeSet<Triple> = [("", "pods", "get"), ("", "nodes", "get")]
        .iter()
        .map(|(g, r, v)| (g.to_string(), r.to_string(), v.to_string()))
        .collect();
    assert_eq!(expected_triples(NODE_ACCESS), want);
    for name in ["node", "alibaba", "aws"] {
        assert_no_problems(name, &node_rbac_problems(&overlay(name)));
    }
    // And the controller's own RBAC check still sees only the controller's.
    for name in ["alibaba", "aws"] {
        assert_no_problems(
            name,
            &rbac_problems(&overlay(name), "vpc-eni-controller", false),
        );
    }
}

#[test]
fn node_daemonset_installs_into_the_host_cni_directories() {
    let objects = overlay("node");
    assert_no_problems("node daemonset", &daemonset_problems(&objects));
    let ds = daemonset(&objects).unwrap();
    let host_paths: BTreeSet<&str> = ds["spec"]["template"]["spec"]["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|v| v["hostPath"]["path"].as_str())
        .collect();
    assert_eq!(host_paths, BTreeSet::from([CNI_BIN_DIR, CNI_CONF_DIR]));
    // The overlays install from the controller's image, rewritten by their
    // `images` rule like the Deployment's.
    for name in ["alibaba", "aws"] {
        let built = overlay(name);
        let image = daemonset(&built).unwrap()["spec"]["template"]["spec"]["initContainers"][0]
            ["image"]
            .as_str()
            .unwrap()
            .to_owned();
        assert_eq!(
            image, "registry.example.com/vpc-eni-controller:0.1.0",
            "{name}"
        );
    }
}

#[test]
fn node_conflist_parses_and_names_the_vpc_eni_cni_plugin() {
    let text = node_conflist(&overlay("node")).unwrap();
    let list: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(list["plugins"][0]["type"], "vpc-eni-cni");
    assert_eq!(list["name"], "vpc-eni");
    assert_eq!(
        list["plugins"][0]["kubeconfig"],
        "/etc/cni/net.d/vpc-eni.kubeconfig"
    );
    assert_eq!(list["plugins"][0]["delegate"]["type"], "ptp");
    assert_eq!(
        list["plugins"][0]["delegate"]["ipam"]["ranges"][0][0]["subnet"],
        "usePodCidr"
    );
    assert!(conflist_problems(&text, "/etc/cni/net.d/vpc-eni.kubeconfig").is_empty());
}

fn node_pod_mut(objects: &mut [Value]) -> &mut Value {
    let d = objects
        .iter_mut()
        .find(|o| o["kind"] == "DaemonSet")
        .unwrap();
    &mut d["spec"]["template"]["spec"]
}

fn conflist_mut(objects: &mut [Value]) -> &mut Value {
    let cm = objects
        .iter_mut()
        .find(|o| o["kind"] == "ConfigMap" && name_of(o) == "vpc-eni-cni-config")
        .unwrap();
    &mut cm["data"]["10-vpc-eni.conflist"]
}

fn edit_conflist(objects: &mut [Value], from: &str, to: &str) {
    let c = conflist_mut(objects);
    let text = c.as_str().unwrap().to_owned();
    assert!(text.contains(from), "{from}");
    *c = json!(text.replace(from, to));
}

#[test]
fn node_check_catches_each_weakening() {
    type Breakage = (&'static str, fn(&mut Vec<Value>), &'static str);
    let cases: &[Breakage] = &[
        (
            "write verb",
            |o| {
                rule_mut(o, "ClusterRole", 0)["verbs"]
                    .as_array_mut()
                    .unwrap()
                    .push(json!("patch"))
            },
            "write verb \"patch\"",
        ),
        (
            "list pods",
            |o| {
                rule_mut(o, "ClusterRole", 0)["verbs"]
                    .as_array_mut()
                    .unwrap()
                    .push(json!("list"))
            },
            "which controller::rbac does not list",
        ),
        (
            "secrets",
            |o| {
                rule_mut(o, "ClusterRole", 1)["resources"]
                    .as_array_mut()
                    .unwrap()
                    .push(json!("secrets"))
            },
            "\"secrets\"",
        ),
        (
            "wildcard",
            |o| rule_mut(o, "ClusterRole", 1)["verbs"] = json!(["*"]),
            "wildcard",
        ),
        (
            "nodes dropped",
            |o| {
                o.iter_mut().find(|x| x["kind"] == "ClusterRole").unwrap()["rules"]
                    .as_array_mut()
                    .unwrap()
                    .pop();
            },
            "lacks",
        ),
        (
            "a namespaced Role too",
            |o| {
                let mut role = o
                    .iter()
                    .find(|x| x["kind"] == "ClusterRole")
                    .unwrap()
                    .clone();
                role["kind"] = json!("Role");
                o.push(role);
            },
            "has a Role",
        ),
        (
            "bound to another account",
            |o| {
                o.iter_mut()
                    .find(|x| x["kind"] == "ClusterRoleBinding")
                    .unwrap()["subjects"][0]["name"] = json!("default")
            },
            "subjects",
        ),
        (
            "no bin mount",
            |o| {
                node_pod_mut(o)["initContainers"][0]["volumeMounts"]
                    .as_array_mut()
                    .unwrap()
                    .retain(|m| m["name"] != "cni-bin")
            },
            "does not mount /opt/cni/bin",
        ),
        (
            "conf dir read-only",
            |o| node_pod_mut(o)["initContainers"][0]["volumeMounts"][1]["readOnly"] = json!(true),
            "mounts /etc/cni/net.d read-only",
        ),
        (
            "conf dir not from the host",
            |o| node_pod_mut(o)["volumes"][1] = json!({"name": "cni-conf", "emptyDir": {}}),
            "no hostPath volume for /etc/cni/net.d",
        ),
        (
            "binary installed elsewhere",
            |o| node_pod_mut(o)["initContainers"][0]["env"][0]["value"] = json!("/tmp"),
            "VPC_ENI_CNI_BIN_DIR",
        ),
        (
            "install by shell",
            |o| node_pod_mut(o)["initContainers"][0]["command"] = json!(["sh", "-c", "cp"]),
            "install container command",
        ),
        (
            "kubeconfig written elsewhere",
            |o| node_pod_mut(o)["initContainers"][0]["env"][3]["value"] = json!("other.kubeconfig"),
            "the install container writes /etc/cni/net.d/other.kubeconfig",
        ),
        (
            "another plugin",
            |o| edit_conflist(o, "\"type\":\"vpc-eni-cni\"", "\"type\":\"bridge\""),
            "not vpc-eni-cni",
        ),
        (
            "broken conflist",
            |o| edit_conflist(o, "\"plugins\":[", "\"plugins\":"),
            "not JSON",
        ),
        (
            "conflist not mounted",
            |o| {
                node_pod_mut(o)["initContainers"][0]["env"][2]["value"] =
                    json!("/etc/other/x.conflist")
            },
            "nothing is mounted at /etc/other",
        ),
        (
            "some taints only",
            |o| {
                node_pod_mut(o)["tolerations"] =
                    json!([{"key": "node.kubernetes.io/not-ready", "operator": "Exists"}])
            },
            "do not tolerate every taint",
        ),
        (
            "cluster-critical",
            |o| node_pod_mut(o)["priorityClassName"] = json!("system-cluster-critical"),
            "want system-node-critical",
        ),
        (
            "no quota",
            |o| o.retain(|x| x["kind"] != "ResourceQuota"),
            "ResourceQuota",
        ),
        (
            "pod network",
            |o| node_pod_mut(o)["hostNetwork"] = json!(false),
            "hostNetwork",
        ),
        (
            "no token",
            |o| node_pod_mut(o)["automountServiceAccountToken"] = json!(false),
            "no service-account token",
        ),
        (
            "not pause",
            |o| node_pod_mut(o)["containers"][0]["image"] = json!("busybox"),
            "want registry.k8s.io/pause:3.9",
        ),
        (
            "privileged install",
            |o| node_pod_mut(o)["initContainers"][0]["securityContext"]["privileged"] = json!(true),
            "install-cni is privileged",
        ),
        (
            "capability added",
            |o| {
                node_pod_mut(o)["initContainers"][0]["securityContext"]["capabilities"]["add"] =
                    json!(["NET_ADMIN"])
            },
            "adds capabilities",
        ),
    ];
    let base = overlay("node");
    for (what, breakage, expected) in cases {
        let mut objects = base.clone();
        breakage(&mut objects);
        let problems = node_problems(&objects).join("\n");
        assert!(problems.contains(expected), "{what}: got {problems:?}");
    }
}

#[test]
fn overlay_check_catches_a_node_part_out_of_step_with_the_controller() {
    let objects = overlay("aws");
    let mut other_image = objects.clone();
    node_pod_mut(&mut other_image)["initContainers"][0]["image"] = json!("someone/else:1");
    let mut unlabelled = objects.clone();
    let quota = unlabelled
        .iter_mut()
        .find(|o| name_of(o) == "vpc-eni-node-critical-pods")
        .unwrap();
    quota["metadata"].as_object_mut().unwrap().remove("labels");
    let mut placeholder = objects.clone();
    node_pod_mut(&mut placeholder)["initContainers"][0]["image"] = json!(PLACEHOLDER_IMAGE);
    for (what, objects, expected) in [
        (
            "other image",
            other_image,
            "the plugin must ship with its controller",
        ),
        ("unlabelled", unlabelled, "labelled for neither"),
        ("placeholder", placeholder, "placeholder image"),
    ] {
        let problems = overlay_problems(&objects, ProviderKind::Aws).join("\n");
        assert!(problems.contains(expected), "{what}: got {problems:?}");
    }
}
