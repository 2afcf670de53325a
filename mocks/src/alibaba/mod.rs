//! `fake-alibaba`: an Alibaba Cloud OpenAPI (RPC style) HTTP front on the
//! in-memory cloud model. It checks every request as Alibaba's gateway does
//! (Signature V1.0, timestamp window, nonce reuse, STS tokens) and answers
//! with Alibaba's JSON shapes, error codes and HTTP statuses.
//!
//! - [`FakeAlibaba::start`] serves a [`World`] on a local address;
//! - [`auth`]: keys, nonces and signature checks; [`sign`]: the V1.0 algorithm;
//! - [`params`]: request parameters; [`error`]: error bodies and statuses;
//! - `actions`, `ecs`, `vpc`: the actions and their JSON shapes.

mod actions;
pub mod auth;
mod ecs;
pub mod error;
pub mod params;
pub mod sign;
mod vpc;

use crate::cloud::World;
use auth::{AccessKey, KeyStore};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, Method, Uri};
use axum::response::{IntoResponse, Response};
use axum::Router;
use error::ApiError;
use params::Params;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// ECS API version the fake serves (`Version=2014-05-26`).
pub const ECS_VERSION: &str = "2014-05-26";
/// VPC API version the fake serves (`Version=2016-04-28`).
pub const VPC_VERSION: &str = "2016-04-28";

/// The Alibaba OpenAPI front.
pub struct FakeAlibaba;

#[derive(Clone)]
struct AppState {
    world: World,
    keys: Arc<KeyStore>,
    writes: Arc<WriteLog>,
}

/// One mutating request that passed the signature check: when it arrived
/// and under which access key, so a test can tell which caller wrote when
/// (two controller replicas with their own keys).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WriteRecord {
    pub at: tokio::time::Instant,
    /// The same moment on the wall clock (to compare with times other
    /// processes of the host wrote, such as a Lease's `acquireTime`).
    pub wall: std::time::SystemTime,
    pub access_key_id: String,
    pub action: String,
}

/// Every mutating request, in arrival order.
#[derive(Default)]
pub struct WriteLog(parking_lot::Mutex<Vec<WriteRecord>>);

impl WriteLog {
    fn push(&self, record: WriteRecord) {
        self.0.lock().push(record);
    }

    /// The records from index `from` on (pass the previous length to read
    /// only what is new).
    pub fn since(&self, from: usize) -> Vec<WriteRecord> {
        let log = self.0.lock();
        log.get(from..)
            .map(<[WriteRecord]>::to_vec)
            .unwrap_or_default()
    }

    pub fn len(&self) -> usize {
        self.0.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.lock().is_empty()
    }
}

/// A running front. Dropping it stops the server too; [`Self::shutdown`]
/// waits until it has stopped.
pub struct FakeAlibabaHandle {
    addr: SocketAddr,
    url: String,
    world: World,
    keys: Arc<KeyStore>,
    writes: Arc<WriteLog>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl FakeAlibaba {
    /// Serve `world` on `addr` (use `127.0.0.1:0` for a free port). The keys
    /// of the world's spec are accepted from the start; more can be added
    /// through [`FakeAlibabaHandle::keys`].
    pub async fn start(world: World, addr: SocketAddr) -> std::io::Result<FakeAlibabaHandle> {
        let keys = Arc::new(KeyStore::new(
            world
                .access_keys()
                .into_iter()
                .map(|k| AccessKey::new(k.id, k.secret)),
        ));
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let writes = Arc::new(WriteLog::default());
        let state = AppState {
            world: world.clone(),
            keys: keys.clone(),
            writes: writes.clone(),
        };
        let app = Router::new().fallback(handle).with_state(state);
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let server = axum::serve(listener, app).with_graceful_shutdown(async move {
                let _ = stopped.await;
            });
            if let Err(err) = server.await {
                tracing::warn!(error = %err, "fake-alibaba server stopped with an error");
            }
        });
        tracing::info!(%addr, region = %world.region(), "fake-alibaba listening");
        Ok(FakeAlibabaHandle {
            addr,
            url: format!("http://{addr}"),
            world,
            keys,
            writes,
            stop: Some(stop),
            task: Some(task),
        })
    }
}

impl FakeAlibabaHandle {
    /// `http://127.0.0.1:PORT`: the endpoint for both ECS and VPC calls.
    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The world behind the front (shared, not a copy).
    pub fn world(&self) -> &World {
        &self.world
    }

    /// The keys the front accepts; add, rotate or expire them at run time.
    pub fn keys(&self) -> &KeyStore {
        &self.keys
    }

    /// Every mutating request that passed the signature check, with its
    /// access key and arrival time.
    pub fn writes(&self) -> &WriteLog {
        &self.writes
    }

    /// Stop serving and wait for the server task to end.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for FakeAlibabaHandle {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Every request, whatever the path: the RPC style signs `/` regardless.
async fn handle(
    State(state): State<AppState>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let request_id = uuid::Uuid::new_v4().to_string().to_uppercase();
    let region = state.world.region();
    let fail = |err: ApiError, version: Option<&str>| {
        let host = host_id(version, region.as_str());
        tracing::debug!(code = %err.code, status = %err.status, "fake-alibaba refuses a request");
        err.into_response_with(&request_id, &host)
    };

    if method != Method::GET && method != Method::POST {
        return fail(
            ApiError::new(
                400,
                "UnsupportedHTTPMethod",
                "This action does not support the HTTP method.",
            ),
            None,
        );
    }
    let form = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/x-www-form-urlencoded"));
    let body = if form && !body.is_empty() {
        match std::str::from_utf8(&body) {
            Ok(text) => Some(text),
            Err(_) => {
                return fail(
                    ApiError::new(
                        400,
                        "InvalidParameter",
                        "The request body is not valid UTF-8.",
                    ),
                    None,
                )
            }
        }
    } else {
        None
    };
    let params = match Params::parse(uri.query(), body) {
        Ok(p) => p,
        Err(err) => return fail(err, None),
    };
    let version = params.get("Version").map(str::to_owned);
    let version = version.as_deref();

    for name in ["Action", "Version"] {
        if params.get(name).is_none() {
            return fail(ApiError::missing_common(name), version);
        }
    }
    if let Err(err) = state
        .keys
        .verify(method.as_str(), &params, chrono::Utc::now())
    {
        return fail(err, version);
    }
    if let Some(format) = params.get("Format") {
        if !format.eq_ignore_ascii_case("JSON") {
            return fail(
                ApiError::invalid("Format", "this fake answers in JSON only; send Format=JSON"),
                version,
            );
        }
    }

    let action = params.get("Action").unwrap_or_default();
    tracing::debug!(action, %request_id, "fake-alibaba call");
    if crate::cloud::faults::is_mutating(action)
        || action == "CreateRouteEntry"
        || action == "DeleteRouteEntry"
    {
        state.writes.push(WriteRecord {
            at: tokio::time::Instant::now(),
            wall: std::time::SystemTime::now(),
            access_key_id: params.get("AccessKeyId").unwrap_or_default().to_owned(),
            action: action.to_owned(),
        });
    }
    match actions::dispatch(&state.world, action, &params).await {
        Ok(mut body) => {
            if let Some(obj) = body.as_object_mut() {
                obj.insert(
                    "RequestId".into(),
                    serde_json::Value::String(request_id.clone()),
                );
            }
            axum::Json(body).into_response()
        }
        Err(err) => fail(err, version),
    }
}

/// `HostId` of an answer: the product endpoint the version belongs to.
fn host_id(version: Option<&str>, region: &str) -> String {
    let product = if version == Some(VPC_VERSION) {
        "vpc"
    } else {
        "ecs"
    };
    format!("{product}.{region}.aliyuncs.com")
}
