//! The `run` command: wire config, cloud, kube, leader election, probes and
//! reconcilers together. `simulate` reuses [`start`] in-process.

use crate::config::{Config, ProviderKind};
use crate::context::Context;
use crate::fence::{Fence, FencedCloud};
use crate::leader::{LeaderElector, LeaseSettings};
use crate::metrics::Metrics;
use crate::routes::{resolve_tables, PassSummary, RouteReconciler};
use crate::server::{self, Health};
use crate::tasks::AbortOnDrop;
use anyhow::Context as _;
use k8s_openapi::api::core::v1::Node;
use providers::Cloud;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// Make rustls use aws-lc-rs everywhere (kube, reqwest and the AWS SDK all
/// link it); without one process-wide choice rustls may refuse to pick.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}

/// Build the configured cloud backend. Reads credential files, never logs them.
/// Without a `provider` block (routes over BGP): a cloud that refuses every
/// call, sending nothing.
pub async fn build_cloud(config: &Config) -> anyhow::Result<Arc<dyn Cloud>> {
    let p = &config.provider;
    if p.absent {
        return Ok(Arc::new(crate::routes_bgp::nocloud::NoCloud::default()));
    }
    match p.kind {
        ProviderKind::Alibaba => {
            use providers::alibaba::{credentials::CredentialSource, AlibabaCloud, AlibabaConfig};
            let region = p
                .region
                .clone()
                .context("provider.region is required for alibaba")?;
            let mut c = AlibabaConfig::new(region);
            c.endpoint = p.endpoint.clone();
            for (api, rate) in &p.rate_limits {
                c.call_policy.per_api_per_minute.insert(api.clone(), *rate);
            }
            if let Some(files) = &p.credentials {
                let read = |path: &str, field: &str| {
                    std::fs::read_to_string(path)
                        .map(|s| s.trim().to_owned())
                        .with_context(|| {
                            format!("provider.credentials.{field}: cannot read {path}")
                        })
                };
                let id = read(&files.access_key_id_file, "accessKeyIdFile")?;
                let secret = read(&files.access_key_secret_file, "accessKeySecretFile")?;
                let token = match &files.security_token_file {
                    Some(f) => Some(read(f, "securityTokenFile")?.into()),
                    None => None,
                };
                c.credentials = CredentialSource::explicit(id, secret, token);
            }
            let cloud =
                AlibabaCloud::new(c).map_err(|e| anyhow::anyhow!("alibaba provider: {e}"))?;
            Ok(Arc::new(cloud))
        }
        ProviderKind::Aws => build_aws(config).await,
    }
}

#[cfg(feature = "aws")]
async fn build_aws(config: &Config) -> anyhow::Result<Arc<dyn Cloud>> {
    use providers::aws::{AwsCloud, AwsConfig};
    let p = &config.provider;
    let mut c = AwsConfig::new(config.cluster());
    c.region = p.region.clone();
    c.endpoint = p.endpoint.clone();
    c.route_table_ids = config.routes.route_table_ids.clone();
    for (api, rate) in &p.rate_limits {
        c.call_policy.per_api_per_minute.insert(api.clone(), *rate);
    }
    let cloud = AwsCloud::connect(c)
        .await
        .map_err(|e| anyhow::anyhow!("aws provider: {e}"))?;
    Ok(Arc::new(cloud))
}

#[cfg(not(feature = "aws"))]
async fn build_aws(_config: &Config) -> anyhow::Result<Arc<dyn Cloud>> {
    anyhow::bail!("provider.kind aws: this binary was built without the `aws` feature")
}

pub(crate) async fn kube_client(kubeconfig: Option<PathBuf>) -> anyhow::Result<kube::Client> {
    let config = match kubeconfig {
        Some(path) => {
            let kc = kube::config::Kubeconfig::read_from(&path)
                .with_context(|| format!("cannot read kubeconfig {}", path.display()))?;
            kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
                .await
                .with_context(|| format!("kubeconfig {}", path.display()))?
        }
        None => kube::Config::infer()
            .await
            .context("no kubeconfig given and not running in a cluster")?,
    };
    Ok(kube::Client::try_from(with_timeouts(config))?)
}

/// Bounds on every kube call: connecting and sending never hang; reads keep
/// the client's default, which must outlast a watch's server-side timeout
/// (Lease renewals are bounded by the fence on top of this).
fn with_timeouts(mut config: kube::Config) -> kube::Config {
    config.connect_timeout = Some(Duration::from_secs(10));
    config.write_timeout = Some(Duration::from_secs(30));
    config.read_timeout = config.read_timeout.or(Some(Duration::from_secs(295)));
    config
}

/// Everything a controller replica runs with.
#[derive(Clone)]
pub struct Deps {
    pub config: Config,
    pub client: kube::Client,
    pub cloud: Arc<dyn Cloud>,
    pub metrics: Arc<Metrics>,
    pub health: Health,
    /// Identity in the Lease (pod name in a cluster).
    pub identity: String,
    /// Called at each step of an ENI allocation or release (tests inject
    /// crashes here); `None` in production.
    pub eni_hook: Option<Arc<dyn crate::eni::StepHook>>,
}

/// Handles a running replica exposes to its caller (tests, simulate).
#[derive(Clone)]
pub struct Running {
    pub leading: watch::Receiver<bool>,
    pub route_pass: Arc<parking_lot::Mutex<PassSummary>>,
}

pub async fn run(config: Config, kubeconfig: Option<PathBuf>) -> anyhow::Result<()> {
    install_crypto_provider();
    for w in config.warnings() {
        tracing::warn!(field = %w.path, "{}", w.problem);
    }
    let client = kube_client(kubeconfig).await?;
    let cloud = build_cloud(&config).await?;
    let metrics = Metrics::new();
    metrics.set_cloud(cloud.name(), cloud.stats());
    let health = Health::default();
    let shutdown = CancellationToken::new();
    let listen = config
        .controller
        .listen_addr()
        .map_err(|e| anyhow::anyhow!("controller.listen: {e}"))?
        .to_string();
    let server = tokio::spawn(server::serve(
        listen,
        health.clone(),
        metrics.clone(),
        shutdown.clone(),
    ));
    let identity = std::env::var("POD_NAME").unwrap_or_else(|_| {
        format!(
            "vpc-eni-controller-{}",
            &uuid::Uuid::new_v4().to_string()[..8]
        )
    });
    let deps = Deps {
        config,
        client,
        cloud,
        metrics,
        health,
        identity,
        eni_hook: None,
    };
    {
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            wait_for_signal().await;
            tracing::info!("shutting down");
            shutdown.cancel();
        });
    }
    let _running = start(deps, shutdown.clone()).await?;
    shutdown.cancelled().await;
    // Let the leader elector give up the lease.
    tokio::time::sleep(Duration::from_millis(300)).await;
    server.abort();
    Ok(())
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Start leader election and, while leading, the reconcilers. Returns at
/// once; everything stops when `shutdown` is cancelled.
pub async fn start(deps: Deps, shutdown: CancellationToken) -> anyhow::Result<Running> {
    let (leading_tx, leading_rx) = watch::channel(false);
    let le = &deps.config.controller.leader_election;
    let fence = if le.enabled {
        Fence::closed()
    } else {
        Fence::open_forever()
    };
    if le.enabled {
        let namespace = le
            .namespace
            .clone()
            .or_else(|| std::env::var("POD_NAMESPACE").ok())
            .unwrap_or_else(|| "kube-system".into());
        let elector = LeaderElector::new(
            deps.client.clone(),
            LeaseSettings {
                name: le.lease_name.clone(),
                namespace,
                identity: deps.identity.clone(),
                lease_duration: Duration::from_secs(le.lease_duration_seconds.into()),
                renew_interval: Duration::from_secs(le.renew_interval_seconds.into()),
            },
        );
        deps.health
            .expect_election(Duration::from_secs(le.lease_duration_seconds.into()) * 2);
        tokio::spawn(elector.run(
            leading_tx,
            deps.health.clone(),
            fence.clone(),
            shutdown.clone(),
        ));
    } else {
        deps.health.set_kube_ok(true);
        leading_tx.send_replace(true);
        // Keep the sender alive for the life of the replica.
        let keep = shutdown.clone();
        tokio::spawn(async move {
            keep.cancelled().await;
            drop(leading_tx);
        });
    }
    let route_pass: Arc<parking_lot::Mutex<PassSummary>> = Arc::default();
    let running = Running {
        leading: leading_rx.clone(),
        route_pass: route_pass.clone(),
    };
    let replica = Replica {
        // Every mutating cloud call is checked against the fence.
        ctx: Context::new(
            deps.config,
            deps.client,
            Arc::new(FencedCloud::new(deps.cloud, fence)),
            deps.metrics,
        ),
        health: deps.health,
        eni_hook: deps.eni_hook,
        route_pass,
    };
    tokio::spawn(supervise(replica, leading_rx, shutdown));
    Ok(running)
}

/// What a replica's reconcilers run with, whenever it leads.
#[derive(Clone)]
struct Replica {
    ctx: Context,
    health: Health,
    eni_hook: Option<Arc<dyn crate::eni::StepHook>>,
    route_pass: Arc<parking_lot::Mutex<PassSummary>>,
}

/// Run the reconcilers whenever this replica leads; stop them the moment it
/// does not.
async fn supervise(
    replica: Replica,
    mut leading: watch::Receiver<bool>,
    shutdown: CancellationToken,
) {
    loop {
        // Wait to lead.
        while !*leading.borrow_and_update() {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                changed = leading.changed() => if changed.is_err() { return; }
            }
        }
        replica.health.set_leading(true);
        replica.ctx.metrics.set_leader(true);
        let term = shutdown.child_token();
        let work = AbortOnDrop::spawn(run_reconcilers(replica.clone(), term.clone()));
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                changed = leading.changed() => {
                    if changed.is_err() || !*leading.borrow_and_update() { break; }
                }
            }
        }
        term.cancel();
        drop(work);
        replica.health.set_ready(false);
        replica.health.set_leading(false);
        replica.ctx.metrics.set_leader(false);
        if shutdown.is_cancelled() {
            return;
        }
        tracing::warn!("not leading any more: reconcilers stopped");
    }
}

async fn run_reconcilers(replica: Replica, shutdown: CancellationToken) {
    let ctx = &replica.ctx;
    // One node cache for every reconciler that reads nodes, keeping the
    // labels their node selectors read.
    let mut label_keys: Vec<String> = ctx
        .config
        .shared_eni
        .node_selector
        .keys()
        .cloned()
        .collect();
    if let Some(bgp) = &ctx.config.routes.bgp {
        label_keys.extend(bgp.label_keys());
    }
    let mut nodes = crate::cache::Shared::new(
        kube::Api::<k8s_openapi::api::core::v1::Node>::all(ctx.client.clone()),
        crate::cache::node_stripper(label_keys),
    );
    let routes_changed = nodes.changes();
    let eni_nodes = ctx.config.eni.enabled.then(|| nodes.applied());
    let shared_nodes = ctx.config.shared_eni.enabled.then(|| nodes.changes());
    let nodes = nodes.start();
    // Stopped with this function, however it ends.
    let _eni = eni_nodes.map(|applied| {
        AbortOnDrop::spawn(crate::eni::run(
            ctx.clone(),
            (nodes.store.clone(), applied),
            replica.eni_hook.clone(),
            shutdown.clone(),
        ))
    });
    let _shared = shared_nodes.map(|changed| {
        AbortOnDrop::spawn(crate::shared::run(
            ctx.clone(),
            (nodes.store.clone(), changed),
            replica.eni_hook.clone(),
            shutdown.clone(),
        ))
    });
    if !ctx.config.routes.enabled {
        replica.health.set_ready(true);
        shutdown.cancelled().await;
        return;
    }
    if ctx.config.routes.backend == crate::routes_bgp::config::RouteBackend::Bgp {
        replica.health.set_ready(true);
        crate::routes_bgp::run(
            ctx.clone(),
            replica.route_pass.clone(),
            (nodes.store.clone(), routes_changed),
            shutdown,
        )
        .await;
        return;
    }
    let tables = loop {
        match discover_tables(ctx, &nodes.store).await {
            Ok(tables) => break tables,
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), "cannot resolve route tables yet; retrying");
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_secs(5)) => {}
                }
            }
        }
    };
    tracing::info!(tables = ?tables.iter().map(|t| t.id.to_string()).collect::<Vec<_>>(), "writing routes");
    let mut reconciler = RouteReconciler::new(ctx.clone(), tables);
    reconciler.last_pass = replica.route_pass.clone();
    replica.health.set_ready(true);
    reconciler
        .run(nodes.store.clone(), routes_changed, shutdown)
        .await;
}

/// The VPC is the one of the nodes' instances: ask the cloud about the first
/// node that names one.
/// Read from the node cache: listing every node again would hold them all,
/// uncut, at once.
async fn discover_tables(
    ctx: &Context,
    nodes: &kube::runtime::reflector::Store<Node>,
) -> anyhow::Result<Vec<crate::routes::TableTarget>> {
    tokio::time::timeout(Duration::from_secs(5), nodes.wait_until_ready())
        .await
        .ok()
        .and_then(Result::ok)
        .context("the node cache is not filled yet")?;
    let instance = nodes
        .state()
        .iter()
        .filter_map(|n| crate::kubeutil::provider_id(n))
        .find_map(|p| ipam::provider_id::instance_from_provider_id(p).ok())
        .context("no node with a valid spec.providerID yet, so the VPC is unknown")?;
    let vpc = ctx.cloud.describe_instance(&instance).await?.vpc_id;
    resolve_tables(
        ctx.cloud.as_ref(),
        &vpc,
        &ctx.config.routes.route_table_ids,
        ctx.cluster(),
    )
    .await
}
