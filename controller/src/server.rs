//! The probe and metrics HTTP server: `/healthz` (the process serves and its
//! leader election loop is not stuck),
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
    /// When the election loop last went round, and how long it may take
    /// before the process counts as stalled (`None`: no election runs).
    election: Arc<parking_lot::Mutex<Option<(tokio::time::Instant, std::time::Duration)>>>,
}

impl Health {
    /// With leader election on: the loop must come round within `stall_after`.
    pub fn expect_election(&self, stall_after: std::time::Duration) {
        *self.election.lock() = Some((tokio::time::Instant::now(), stall_after));
    }

    /// The election loop came round.
    pub fn election_alive(&self) {
        if let Some((at, _)) = self.election.lock().as_mut() {
            *at = tokio::time::Instant::now();
        }
    }

    /// Whether the process is live: the election loop (if any) is not stuck.
    pub fn is_live(&self) -> bool {
        self.election
            .lock()
            .is_none_or(|(at, stall_after)| at.elapsed() < stall_after)
    }

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
        .route(
            "/healthz",
            get(|State(s): State<AppState>| async move {
                if s.health.is_live() {
                    (StatusCode::OK, "ok")
                } else {
                    (
                        StatusCode::SERVICE_UNAVAILABLE,
                        "leader election loop stalled",
                    )
                }
            }),
        )
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
