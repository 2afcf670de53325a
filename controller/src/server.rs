//! The probe and metrics HTTP server: `/healthz` (the process serves),
//! `/readyz` (caches synced and the cloud answered), `/metrics` (OpenMetrics text).

use crate::metrics::Metrics;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// Readiness. A standby is ready once it reaches the apiserver (so a PDB
/// never blocks a drain on it); the leader is ready once its reconcilers
/// synced their caches and the cloud answered.
#[derive(Clone, Default)]
pub struct Health {
    kube_ok: Arc<AtomicBool>,
    leading: Arc<AtomicBool>,
    work_ready: Arc<AtomicBool>,
}

impl Health {
    /// The leader's reconcilers are (not) serving.
    pub fn set_ready(&self, ready: bool) {
        self.work_ready.store(ready, Ordering::SeqCst);
    }
    pub fn set_kube_ok(&self, ok: bool) {
        self.kube_ok.store(ok, Ordering::SeqCst);
    }
    pub fn set_leading(&self, leading: bool) {
        self.leading.store(leading, Ordering::SeqCst);
    }
    pub fn is_leading(&self) -> bool {
        self.leading.load(Ordering::SeqCst)
    }
    pub fn is_ready(&self) -> bool {
        if self.leading.load(Ordering::SeqCst) {
            self.work_ready.load(Ordering::SeqCst)
        } else {
            self.kube_ok.load(Ordering::SeqCst)
        }
    }
}

#[derive(Clone)]
struct AppState {
    health: Health,
    metrics: Arc<Metrics>,
}

pub fn router(health: Health, metrics: Arc<Metrics>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/readyz",
            get(|State(s): State<AppState>| async move {
                if s.health.is_ready() {
                    (StatusCode::OK, "ready")
                } else {
                    (StatusCode::SERVICE_UNAVAILABLE, "not ready")
                }
            }),
        )
        .route(
            "/metrics",
            get(|State(s): State<AppState>| async move {
                (
                    [("content-type", crate::metrics::CONTENT_TYPE)],
                    s.metrics.render(),
                )
            }),
        )
        .with_state(AppState { health, metrics })
}

pub async fn serve(
    listen: String,
    health: Health,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(&listen).await?;
    tracing::info!(%listen, "serving /healthz, /readyz, /metrics");
    axum::serve(listener, router(health, metrics))
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await?;
    Ok(())
}
