//! The HTTP front: maps Kubernetes REST paths and verbs onto the store,
//! serves discovery, tables and watch streams (newline-delimited JSON).

use super::discovery;
use super::error::ApiError;
use super::patch::PatchKind;
use super::resources::ResourceDesc;
use super::selectors::{FieldSelector, LabelSelector};
use super::store::{to_wire, Broadcast, Change, ChangeType, ListOptions, Store, Sub, WatchStart};
use super::table::{self, IncludeObject};
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{broadcast, mpsc};

/// Shared state of the HTTP handlers.
pub struct App {
    /// The object store.
    pub store: Arc<Store>,
    /// `host:port` advertised in `/api`.
    pub server_address: String,
    /// How often an idle watch that asked for bookmarks gets one.
    pub bookmark_interval: Duration,
    /// Reads (GET: get, list, watch) of these resources, by plural, are
    /// answered only after the delay: a test makes one client's cache of a
    /// kind lag behind its cache of another, as a slow list does.
    pub held_reads: Arc<parking_lot::Mutex<HashMap<String, Duration>>>,
}

/// The router: every path goes through one dispatcher, since resources are data.
pub fn router(app: Arc<App>) -> axum::Router {
    axum::Router::new().fallback(dispatch).with_state(app)
}

fn json_response(code: u16, v: &Value) -> Response {
    let body = serde_json::to_vec(v).unwrap_or_default();
    (
        StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        [(header::CONTENT_TYPE, "application/json")],
        body,
    )
        .into_response()
}

fn error_response(e: &ApiError) -> Response {
    json_response(e.code, &e.to_status())
}

fn parse_query(q: Option<&str>) -> HashMap<String, String> {
    let mut out = HashMap::new();
    for pair in q.unwrap_or_default().split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let dec = |s: &str| {
            percent_encoding::percent_decode_str(&s.replace('+', " "))
                .decode_utf8_lossy()
                .into_owned()
        };
        out.insert(dec(k), dec(v));
    }
    out
}

/// A request addressed to a resource.
struct Target {
    r: Arc<ResourceDesc>,
    ns: Option<String>,
    name: Option<String>,
    sub: Option<String>,
}

enum Route {
    Json(Value),
    Bytes(&'static str, Vec<u8>),
    Resource(Target),
    /// `POST /api/v1/namespaces/<ns>/bindings`
    Bindings(String),
}

fn route(app: &App, path: &str, accept: &str) -> Result<Route, ApiError> {
    let segs: Vec<&str> = path
        .trim_matches('/')
        .split('/')
        .filter(|s| !s.is_empty())
        .collect();
    let reg = app.store.registry();
    let (group, version, rest): (&str, &str, &[&str]) = match segs.as_slice() {
        ["version"] => return Ok(Route::Json(discovery::version())),
        ["healthz"] | ["readyz"] | ["livez"] => {
            return Ok(Route::Bytes("text/plain", b"ok".to_vec()))
        }
        ["openapi", "v2"] | ["swagger-2.0.0.pb-v1"] => {
            return if accept.contains("protobuf") {
                Ok(Route::Bytes(
                    "application/octet-stream",
                    discovery::openapi_v2_protobuf(),
                ))
            } else {
                Ok(Route::Json(discovery::openapi_v2_json()))
            };
        }
        ["api"] => return Ok(Route::Json(discovery::core_versions(&app.server_address))),
        ["apis"] => return Ok(Route::Json(discovery::group_list(&reg))),
        ["apis", g] => {
            return discovery::group(&reg, g)
                .map(Route::Json)
                .ok_or_else(ApiError::no_route)
        }
        ["api", v] => {
            return discovery::resource_list(&reg, "", v)
                .map(Route::Json)
                .ok_or_else(ApiError::no_route)
        }
        ["apis", g, v] => {
            return discovery::resource_list(&reg, g, v)
                .map(Route::Json)
                .ok_or_else(ApiError::no_route)
        }
        ["api", v, rest @ ..] => ("", *v, rest),
        ["apis", g, v, rest @ ..] => (*g, *v, rest),
        _ => return Err(ApiError::no_route()),
    };
    let find = |plural: &str| reg.find(group, version, plural);
    let (ns, plural, name, sub) = match rest {
        ["namespaces", ns, "bindings"] if group.is_empty() => {
            return Ok(Route::Bindings(ns.to_string()))
        }
        ["namespaces", ns, plural, tail @ ..] if find(plural).is_some_and(|r| r.namespaced) => {
            (Some(ns.to_string()), *plural, tail.first(), tail.get(1))
        }
        [plural, tail @ ..] => (None, *plural, tail.first(), tail.get(1)),
        [] => return Err(ApiError::no_route()),
    };
    if rest.len() > 5 {
        return Err(ApiError::no_route());
    }
    let r = find(plural).ok_or_else(ApiError::no_route)?;
    Ok(Route::Resource(Target {
        r,
        ns,
        name: name.map(|s| s.to_string()),
        sub: sub.map(|s| s.to_string()),
    }))
}

async fn dispatch(
    State(app): State<Arc<App>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let accept = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json")
        .to_string();
    let q = parse_query(uri.query());
    tracing::debug!(%method, path = uri.path(), "fake apiserver request");
    let result = match route(&app, uri.path(), &accept) {
        Ok(Route::Json(v)) if method == Method::GET => Ok(json_response(200, &v)),
        Ok(Route::Bytes(ct, b)) if method == Method::GET => {
            Ok(([(header::CONTENT_TYPE, ct)], b).into_response())
        }
        Ok(Route::Json(_)) | Ok(Route::Bytes(..)) => Err(ApiError::method_not_allowed()),
        Ok(Route::Bindings(ns)) if method == Method::POST => bind(&app, &ns, None, &body),
        Ok(Route::Bindings(_)) => Err(ApiError::method_not_allowed()),
        Ok(Route::Resource(t)) => {
            if method == Method::GET {
                let held = app.held_reads.lock().get(&t.r.plural).copied();
                if let Some(d) = held {
                    tokio::time::sleep(d).await;
                }
            }
            resource(&app, method, t, &q, &accept, &content_type, &body).await
        }
        Err(e) => Err(e),
    };
    match result {
        Ok(r) => r,
        Err(e) => error_response(&e),
    }
}

fn parse_body(body: &[u8]) -> Result<Value, ApiError> {
    // kubectl and client-go send JSON; YAML is accepted for hand-written requests.
    serde_json::from_slice(body)
        .or_else(|_| serde_yaml::from_slice(body))
        .map_err(|e| {
            ApiError::bad_request(format!("the body of the request could not be decoded: {e}"))
        })
}

fn list_options(q: &HashMap<String, String>) -> Result<ListOptions, ApiError> {
    Ok(ListOptions {
        labels: LabelSelector::parse(
            q.get("labelSelector")
                .map(String::as_str)
                .unwrap_or_default(),
        )?,
        fields: FieldSelector::parse(
            q.get("fieldSelector")
                .map(String::as_str)
                .unwrap_or_default(),
        )?,
        limit: q.get("limit").and_then(|l| l.parse().ok()).unwrap_or(0),
        continue_token: q.get("continue").cloned(),
    })
}

fn bind(app: &App, ns: &str, pod: Option<&str>, body: &[u8]) -> Result<Response, ApiError> {
    let b = parse_body(body)?;
    let name = pod
        .map(str::to_string)
        .or_else(|| b["metadata"]["name"].as_str().map(str::to_string))
        .ok_or_else(|| ApiError::bad_request("binding has no pod name"))?;
    let node = b["target"]["name"]
        .as_str()
        .filter(|n| !n.is_empty())
        .ok_or_else(|| ApiError::invalid("", "bindings", &name, "target.name: Required value"))?;
    app.store.bind(ns, &name, node)?;
    Ok(json_response(
        201,
        &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}),
    ))
}

fn wants_table(accept: &str) -> bool {
    accept.contains("as=Table")
}

async fn resource(
    app: &Arc<App>,
    method: Method,
    t: Target,
    q: &HashMap<String, String>,
    accept: &str,
    content_type: &str,
    body: &[u8],
) -> Result<Response, ApiError> {
    let r = t.r.clone();
    let ns_str = t.ns.clone().unwrap_or_default();
    if r.namespaced && t.name.is_some() && t.ns.is_none() {
        return Err(ApiError::no_route());
    }
    let sub = match t.sub.as_deref() {
        None => Sub::Main,
        Some("status") if r.has_status => Sub::Status,
        Some("binding") if r.group.is_empty() && r.plural == "pods" && method == Method::POST => {
            return bind(app, &ns_str, t.name.as_deref(), body);
        }
        Some("eviction") if r.group.is_empty() && r.plural == "pods" && method == Method::POST => {
            // The Eviction API (policy/v1): a delete that would honour
            // PodDisruptionBudgets; the fake has none, so it always admits.
            let name = t.name.as_deref().ok_or_else(ApiError::no_route)?;
            let opts: Value = if body.is_empty() {
                Value::Null
            } else {
                parse_body(body)?
            };
            app.store
                .delete(&r, &ns_str, name, &opts["deleteOptions"]["preconditions"])?;
            return Ok(json_response(
                201,
                &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}),
            ));
        }
        Some("scale") if r.group == "apps" && r.plural == "deployments" => {
            let name = t.name.as_deref().ok_or_else(ApiError::no_route)?;
            return scale(app, &r, &ns_str, name, method, content_type, body);
        }
        Some(_) => return Err(ApiError::no_route()),
    };
    let store = &app.store;
    match (method, t.name.as_deref()) {
        (Method::GET, None) => {
            let opts = list_options(q)?;
            let watching = matches!(q.get("watch").map(String::as_str), Some("true") | Some("1"));
            if watching {
                return watch(app, r, t.ns, opts, q, wants_meta(accept));
            }
            let page = store.list(&r, t.ns.as_deref(), &opts)?;
            if wants_table(accept) {
                let inc = IncludeObject::parse(q.get("includeObject").map(String::as_str));
                let tb = table::render(
                    &r,
                    &page.items,
                    page.resource_version,
                    page.continue_token.as_deref(),
                    inc,
                );
                return Ok(json_response(200, &tb));
            }
            if wants_meta(accept) {
                let page = super::store::ListPage {
                    items: page.items.iter().map(|o| Arc::new(meta_only(o))).collect(),
                    ..page
                };
                return Ok(list_response(
                    "PartialObjectMetadataList",
                    "meta.k8s.io/v1",
                    &page,
                ));
            }
            Ok(list_response(
                &format!("{}List", r.kind),
                &r.api_version(),
                &page,
            ))
        }
        (Method::GET, Some(name)) => {
            let obj = store.get(&r, &ns_str, name)?;
            if wants_table(accept) {
                let inc = IncludeObject::parse(q.get("includeObject").map(String::as_str));
                let rv = obj["metadata"]["resourceVersion"]
                    .as_str()
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(0);
                return Ok(json_response(
                    200,
                    &table::render(&r, &[Arc::new(obj)], rv, None, inc),
                ));
            }
            if wants_meta(accept) {
                return Ok(json_response(200, &meta_only(&obj)));
            }
            Ok(json_response(200, &obj))
        }
        (Method::POST, None) => {
            let obj = parse_body(body)?;
            if q.get("dryRun").is_some() {
                return Ok(json_response(201, &obj));
            }
            let created = store.create(&r, &ns_str, obj)?;
            Ok(json_response(201, &created))
        }
        (Method::PUT, Some(name)) => {
            let obj = parse_body(body)?;
            Ok(json_response(
                200,
                &store.update(&r, &ns_str, name, obj, sub)?,
            ))
        }
        (Method::PATCH, Some(name)) => {
            let kind = PatchKind::from_content_type(content_type)?;
            if kind == PatchKind::Strategic && !is_builtin(&r) {
                return Err(ApiError::unsupported_media_type(content_type));
            }
            match store.patch(&r, &ns_str, name, kind, body, sub) {
                // Server-side apply creates what does not exist yet.
                Err(e) if e.code == 404 && kind == PatchKind::Apply && sub == Sub::Main => {
                    let mut obj: Value = serde_yaml::from_slice(body)
                        .map_err(|e| ApiError::bad_request(format!("invalid apply patch: {e}")))?;
                    obj["metadata"]["name"] = json!(name);
                    Ok(json_response(201, &store.create(&r, &ns_str, obj)?))
                }
                other => Ok(json_response(200, &other?)),
            }
        }
        (Method::DELETE, Some(name)) => {
            let opts: Value = if body.is_empty() {
                Value::Null
            } else {
                parse_body(body)?
            };
            Ok(json_response(
                200,
                &store.delete(&r, &ns_str, name, &opts["preconditions"])?,
            ))
        }
        (Method::DELETE, None) => {
            let opts = list_options(q)?;
            let gone = store.delete_collection(&r, t.ns.as_deref(), &opts)?;
            let items: Vec<Arc<Value>> = gone.into_iter().map(Arc::new).collect();
            let page = super::store::ListPage {
                items,
                resource_version: store.current_rv(),
                continue_token: None,
                remaining: None,
            };
            Ok(list_response(
                &format!("{}List", r.kind),
                &r.api_version(),
                &page,
            ))
        }
        _ => Err(ApiError::method_not_allowed()),
    }
}

/// The autoscaling/v1 Scale view of a Deployment.
fn scale_of(d: &Value) -> Value {
    let labels = d["spec"]["selector"]["matchLabels"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default();
    let meta = &d["metadata"];
    json!({
        "kind": "Scale", "apiVersion": "autoscaling/v1",
        "metadata": {"name": meta["name"], "namespace": meta["namespace"], "uid": meta["uid"],
            "resourceVersion": meta["resourceVersion"], "creationTimestamp": meta["creationTimestamp"]},
        "spec": {"replicas": d["spec"]["replicas"].as_i64().unwrap_or(1)},
        "status": {"replicas": d["status"]["replicas"].as_i64().unwrap_or(0), "selector": labels},
    })
}

/// `deployments/<name>/scale`: get, replace or patch the replica count.
fn scale(
    app: &App,
    r: &ResourceDesc,
    ns: &str,
    name: &str,
    method: Method,
    content_type: &str,
    body: &[u8],
) -> Result<Response, ApiError> {
    let store = &app.store;
    let current = store.get(r, ns, name)?;
    let mut sc = scale_of(&current);
    match method {
        Method::GET => return Ok(json_response(200, &sc)),
        Method::PUT => sc = parse_body(body)?,
        Method::PATCH => {
            let kind = PatchKind::from_content_type(content_type)?;
            super::patch::apply(&mut sc, kind, body)?;
        }
        _ => return Err(ApiError::method_not_allowed()),
    }
    let replicas = sc["spec"]["replicas"].as_i64().ok_or_else(|| {
        ApiError::invalid(
            "autoscaling",
            "scales",
            name,
            "spec.replicas: Required value",
        )
    })?;
    let p = json!({"metadata": {"resourceVersion": sc["metadata"]["resourceVersion"]}, "spec": {"replicas": replicas}});
    let updated = store.patch(
        r,
        ns,
        name,
        PatchKind::Merge,
        p.to_string().as_bytes(),
        Sub::Main,
    )?;
    Ok(json_response(200, &scale_of(&updated)))
}

/// Custom resources do not support strategic merge patch upstream either.
fn is_builtin(r: &ResourceDesc) -> bool {
    super::resources::builtin()
        .iter()
        .any(|b| b.group == r.group && b.plural == r.plural)
}

/// `Accept: ...;as=PartialObjectMetadata[List];g=meta.k8s.io;v=v1` (kube-rs metadata API).
fn wants_meta(accept: &str) -> bool {
    accept.contains("as=PartialObjectMetadata")
}

fn meta_only(obj: &Value) -> Value {
    json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": obj["metadata"]})
}

fn list_response(list_kind: &str, api_version: &str, page: &super::store::ListPage) -> Response {
    // Written by hand so 100k shared items are serialised without cloning.
    let mut meta = json!({"resourceVersion": page.resource_version.to_string()});
    if let Some(c) = &page.continue_token {
        meta["continue"] = json!(c);
    }
    if let Some(n) = page.remaining {
        meta["remainingItemCount"] = json!(n);
    }
    let mut out = Vec::with_capacity(256 + page.items.len() * 512);
    out.extend_from_slice(
        format!(
            "{{\"kind\":\"{list_kind}\",\"apiVersion\":\"{api_version}\",\"metadata\":{meta},\"items\":["
        )
        .as_bytes(),
    );
    for (i, it) in page.items.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        let _ = serde_json::to_writer(&mut out, &**it);
    }
    out.extend_from_slice(b"]}");
    ([(header::CONTENT_TYPE, "application/json")], out).into_response()
}

fn event_line(ty: &str, obj: &Value) -> Bytes {
    let mut out = Vec::with_capacity(512);
    out.extend_from_slice(b"{\"type\":\"");
    out.extend_from_slice(ty.as_bytes());
    out.extend_from_slice(b"\",\"object\":");
    let _ = serde_json::to_writer(&mut out, obj);
    out.extend_from_slice(b"}\n");
    Bytes::from(out)
}

fn error_line(e: &ApiError) -> Bytes {
    event_line("ERROR", &e.to_status())
}

struct WatchFilter {
    r: Arc<ResourceDesc>,
    ns: Option<String>,
    opts: ListOptions,
    meta_only: bool,
}

impl WatchFilter {
    fn matches(&self, wire: &Value) -> bool {
        if let Some(ns) = &self.ns {
            if self.r.namespaced && wire["metadata"]["namespace"].as_str() != Some(ns.as_str()) {
                return false;
            }
        }
        self.opts.labels.matches(wire) && self.opts.fields.matches(wire)
    }

    /// The event a watcher sees for a change, honouring selector transitions.
    fn event(&self, c: &Change) -> Option<(&'static str, Arc<Value>)> {
        if c.storage != self.r.storage {
            return None;
        }
        let wire = to_wire(&self.r, &c.obj);
        let now = self.matches(&wire);
        let before = c.prev.as_ref().map(|p| self.matches(&to_wire(&self.r, p)));
        let ty = match (c.kind, before, now) {
            (ChangeType::Added, _, true) => "ADDED",
            (ChangeType::Deleted, _, true) => "DELETED",
            (ChangeType::Deleted, Some(true), false) => "DELETED",
            (ChangeType::Modified, Some(false), true) => "ADDED",
            (ChangeType::Modified, _, true) => "MODIFIED",
            (ChangeType::Modified, Some(true), false) => "DELETED",
            _ => return None,
        };
        if self.meta_only {
            return Some((ty, Arc::new(meta_only(&wire))));
        }
        Some((ty, wire))
    }
}

fn watch(
    app: &Arc<App>,
    r: Arc<ResourceDesc>,
    ns: Option<String>,
    opts: ListOptions,
    q: &HashMap<String, String>,
    metadata_only: bool,
) -> Result<Response, ApiError> {
    let rv_param = q
        .get("resourceVersion")
        .map(String::as_str)
        .unwrap_or_default();
    let send_initial = q.get("sendInitialEvents").map(String::as_str) == Some("true");
    let from = match rv_param {
        "" | "0" => None,
        // A streaming list replays current state whatever resourceVersion it names.
        _ if send_initial => None,
        s => Some(s.parse::<u64>().map_err(|_| {
            ApiError::bad_request(format!(
                "resourceVersion: Invalid value: \"{s}\": must be a number"
            ))
        })?),
    };
    let bookmarks = q.get("allowWatchBookmarks").map(String::as_str) == Some("true");
    let timeout = q
        .get("timeoutSeconds")
        .and_then(|s| s.parse::<u64>().ok())
        .map(Duration::from_secs)
        .unwrap_or(Duration::from_secs(1800));
    let filter = WatchFilter {
        r: r.clone(),
        ns,
        opts,
        meta_only: metadata_only,
    };
    let (tx, rx) = mpsc::channel::<Bytes>(256);
    let (kind, api_version) = if metadata_only {
        (
            "PartialObjectMetadata".to_string(),
            "meta.k8s.io/v1".to_string(),
        )
    } else {
        (r.kind.clone(), r.api_version())
    };
    let bookmark_every = app.bookmark_interval;
    match app.store.watch(&r.storage, from) {
        Err(e) => {
            // Upstream answers a too-old watch with 200 and one ERROR event.
            let _ = tx.try_send(error_line(&e));
        }
        Ok(start) => {
            tokio::spawn(pump(
                start,
                filter,
                tx,
                bookmarks,
                send_initial,
                timeout,
                bookmark_every,
                kind,
                api_version,
            ));
        }
    }
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|b| (Ok::<Bytes, std::io::Error>(b), rx))
    });
    Ok((
        [
            (header::CONTENT_TYPE, "application/json"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        Body::from_stream(stream),
    )
        .into_response())
}

#[allow(clippy::too_many_arguments)]
async fn pump(
    start: WatchStart,
    filter: WatchFilter,
    tx: mpsc::Sender<Bytes>,
    bookmarks: bool,
    send_initial: bool,
    timeout: Duration,
    bookmark_every: Duration,
    kind: String,
    api_version: String,
) {
    let WatchStart {
        backlog,
        mut rx,
        rv,
    } = start;
    let mut seen_rv = rv;
    for c in &backlog {
        if let Some((ty, obj)) = filter.event(c) {
            if tx.send(event_line(ty, &obj)).await.is_err() {
                return;
            }
        }
    }
    let bookmark = |rv: u64, initial_end: bool| {
        let mut meta = json!({"resourceVersion": rv.to_string()});
        if initial_end {
            meta["annotations"] = json!({"k8s.io/initial-events-end": "true"});
        }
        event_line(
            "BOOKMARK",
            &json!({"kind": kind, "apiVersion": api_version, "metadata": meta}),
        )
    };
    if send_initial && bookmarks && tx.send(bookmark(seen_rv, true)).await.is_err() {
        return;
    }
    let deadline = tokio::time::sleep(timeout);
    tokio::pin!(deadline);
    let mut ticker = tokio::time::interval(bookmark_every.max(Duration::from_millis(10)));
    ticker.tick().await;
    loop {
        tokio::select! {
            _ = &mut deadline => return,
            _ = tx.closed() => return,
            _ = ticker.tick(), if bookmarks => {
                if tx.send(bookmark(seen_rv, false)).await.is_err() {
                    return;
                }
            }
            msg = rx.recv() => match msg {
                Ok(Broadcast::Change(c)) => {
                    if c.rv <= seen_rv {
                        continue;
                    }
                    seen_rv = c.rv;
                    if let Some((ty, obj)) = filter.event(&c) {
                        if tx.send(event_line(ty, &obj)).await.is_err() {
                            return;
                        }
                    }
                }
                Ok(Broadcast::Expire) => {
                    let _ = tx.send(error_line(&ApiError::expired(format!("too old resource version: {seen_rv}")))).await;
                    return;
                }
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    tracing::warn!(lagged = n, "watcher fell behind; ending its watch with 410");
                    let _ = tx.send(error_line(&ApiError::expired(format!("too old resource version: {seen_rv}")))).await;
                    return;
                }
                Err(broadcast::error::RecvError::Closed) => return,
            }
        }
    }
}
