//! A fake kube-apiserver over plain HTTP on 127.0.0.1: the real REST paths
//! and JSON for the resources the controller and kubectl use, list/watch
//! with resourceVersions, patches, selectors, finalizers, Events in both API
//! groups, CRDs at run time, discovery; plus an in-process scheduler, kubelet
//! and deployment controller so pods get placed and started.
//!
//! ```no_run
//! # async fn demo() -> Result<(), mocks::kubeapi::StartError> {
//! let server = mocks::kubeapi::FakeApiServer::start(Default::default()).await?;
//! let client = kube::Client::try_from(server.client_config()).expect("client");
//! # let _ = client; Ok(()) }
//! ```

pub mod deployments;
pub mod discovery;
pub mod error;
pub mod events;
pub mod kubelet;
pub mod nodes;
pub mod patch;
pub mod quantity;
pub mod reactor;
pub mod resources;
pub mod scheduler;
pub mod selectors;
pub mod server;
pub mod store;
pub mod table;

pub use error::ApiError;
pub use kubelet::KubeletConfig;
pub use nodes::{node_object, NodeTemplate};
pub use store::Store;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinHandle;

/// How to run the fake apiserver.
#[derive(Debug, Clone)]
pub struct Options {
    /// Where to listen (default `127.0.0.1:0`, an ephemeral port).
    pub listen: SocketAddr,
    /// Changes kept for watches; a watch from an older resourceVersion gets 410.
    pub history_size: usize,
    /// How many live changes a watcher may lag before it gets 410 (the
    /// buffer keeps that many old object versions alive, so keep it modest).
    pub watch_buffer: usize,
    /// Interval between BOOKMARK events on watches that allow them.
    pub bookmark_interval: Duration,
    /// Run the scheduler.
    pub scheduler: bool,
    /// Run the kubelet stand-in.
    pub kubelet: bool,
    /// Run the deployment controller.
    pub deployments: bool,
    /// Kubelet knobs (which resources need an allocation annotation).
    pub kubelet_config: KubeletConfig,
    /// Resync period of the in-process controllers (they also react to changes).
    pub resync: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            history_size: 10_000,
            watch_buffer: 16_384,
            bookmark_interval: Duration::from_secs(30),
            scheduler: true,
            kubelet: true,
            deployments: true,
            kubelet_config: KubeletConfig::default(),
            resync: Duration::from_secs(5),
        }
    }
}

impl Options {
    /// The REST front and store only: no scheduler, kubelet stand-in or
    /// Deployment controller writes anything of its own.
    pub fn without_controllers() -> Self {
        Options {
            scheduler: false,
            kubelet: false,
            deployments: false,
            ..Options::default()
        }
    }
}

/// Starting the server failed.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// Requested address.
        addr: SocketAddr,
        /// Underlying error.
        source: std::io::Error,
    },
}

/// A running fake apiserver; dropping it stops everything.
pub struct FakeApiServer {
    addr: SocketAddr,
    store: Arc<Store>,
    tasks: Vec<JoinHandle<()>>,
    held_reads: Arc<parking_lot::Mutex<HashMap<String, Duration>>>,
}

impl FakeApiServer {
    /// Bind, start serving, and start the enabled in-process controllers.
    pub async fn start(opts: Options) -> Result<Self, StartError> {
        let listener = tokio::net::TcpListener::bind(opts.listen)
            .await
            .map_err(|source| StartError::Bind {
                addr: opts.listen,
                source,
            })?;
        let addr = listener.local_addr().map_err(|source| StartError::Bind {
            addr: opts.listen,
            source,
        })?;
        let store = Store::new(opts.history_size, opts.watch_buffer);
        let held_reads = Arc::new(parking_lot::Mutex::new(HashMap::new()));
        let app = Arc::new(server::App {
            store: store.clone(),
            server_address: addr.to_string(),
            bookmark_interval: opts.bookmark_interval,
            held_reads: held_reads.clone(),
        });
        let router = server::router(app);
        let mut tasks = vec![tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, router).await {
                tracing::error!(error = %e, "fake apiserver stopped serving");
            }
        })];
        let pods_nodes = vec![reactor::key("", "pods"), reactor::key("", "nodes")];
        if opts.scheduler {
            tasks.push(tokio::spawn(reactor::run_loop(
                store.clone(),
                pods_nodes.clone(),
                opts.resync,
                {
                    let mut scheduler = scheduler::Scheduler::default();
                    move |s: &Store, changes| scheduler.pass(s, changes)
                },
            )));
        }
        if opts.kubelet {
            let cfg = opts.kubelet_config.clone();
            tasks.push(tokio::spawn(reactor::run_loop(
                store.clone(),
                pods_nodes.clone(),
                opts.resync,
                {
                    let mut kubelet = kubelet::Kubelet::new(cfg);
                    move |s: &Store, changes| kubelet.pass(s, changes)
                },
            )));
        }
        if opts.deployments {
            tasks.push(tokio::spawn(reactor::run_loop(
                store.clone(),
                vec![
                    reactor::key("", "pods"),
                    reactor::key("apps", "deployments"),
                ],
                opts.resync,
                |s: &Store, _| deployments::deployment_pass(s),
            )));
        }
        tracing::info!(%addr, "fake apiserver listening");
        Ok(FakeApiServer {
            addr,
            store,
            tasks,
            held_reads,
        })
    }

    /// Answer reads (get, list, watch) of `plural` (`nodes`, `pods`...)
    /// only after `delay` from now on; `None` answers them at once again. A
    /// test makes a client's cache of one kind lag behind another this way.
    pub fn hold_reads(&self, plural: &str, delay: Option<Duration>) {
        let mut held = self.held_reads.lock();
        match delay {
            Some(d) => held.insert(plural.to_owned(), d),
            None => held.remove(plural),
        };
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Direct access to the objects (tests, `simulate`).
    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    /// A kubeconfig pointing at this server (no credentials: the fake has no auth).
    pub fn kubeconfig_yaml(&self) -> String {
        kubeconfig_yaml(&self.url())
    }

    /// A kube-rs client configuration pointing at this server, namespace `default`.
    pub fn client_config(&self) -> kube::Config {
        let uri: http::Uri = match self.url().parse() {
            Ok(u) => u,
            // The URL is built from a SocketAddr, so it always parses.
            Err(_) => http::Uri::from_static("http://127.0.0.1"),
        };
        let mut cfg = kube::Config::new(uri);
        cfg.default_namespace = "default".into();
        cfg
    }

    /// Stop serving and stop the in-process controllers.
    pub async fn shutdown(mut self) {
        for t in self.tasks.drain(..) {
            t.abort();
            let _ = t.await;
        }
    }
}

impl Drop for FakeApiServer {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// A kubeconfig for a server at `url`.
pub fn kubeconfig_yaml(url: &str) -> String {
    format!(
        "apiVersion: v1
kind: Config
clusters:
- name: fake
  cluster:
    server: {url}
contexts:
- name: fake
  context:
    cluster: fake
    namespace: default
    user: fake
current-context: fake
preferences: {{}}
users:
- name: fake
  user: {{}}
"
    )
}
