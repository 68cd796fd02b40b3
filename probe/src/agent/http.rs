//! The HTTP endpoints: `/metrics` (Prometheus text format), `/alerts` (recent alerts as JSON) and
//! `/healthz` (200 while polls keep happening, 503 when the engine has stalled).

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use axum::{Router, extract::State, http::StatusCode, response::IntoResponse, routing::get};
use tokio::net::TcpListener;

use crate::{alert::AlertSinks, metrics::Metrics};

/// Shared with the engine: when it last finished a poll.
pub struct Health {
    pub last_poll_unix_ms: AtomicU64,
    pub poll_interval: Duration,
}

impl Health {
    pub fn mark_poll(&self) {
        self.last_poll_unix_ms.store(unix_ms(), Ordering::Relaxed);
    }
}

pub fn unix_ms() -> u64 {
    crate::kernel::clock::wall_now_ns() / 1_000_000
}

#[derive(Clone)]
struct AppState {
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    sinks: Arc<AlertSinks>,
}

pub async fn serve(listener: TcpListener, metrics: Arc<Metrics>, health: Arc<Health>, sinks: Arc<AlertSinks>) -> std::io::Result<()> {
    let app = Router::new()
        .route("/alerts", get(alerts_handler))
        .route("/metrics", get(metrics_handler))
        .route("/healthz", get(health_handler))
        .with_state(AppState { metrics, health, sinks });
    axum::serve(listener, app).await
}

async fn metrics_handler(State(s): State<AppState>) -> impl IntoResponse {
    ([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], s.metrics.render())
}

/// The most recent alerts (up to 1000), oldest first, as a JSON array.
async fn alerts_handler(State(s): State<AppState>) -> impl IntoResponse {
    ([(axum::http::header::CONTENT_TYPE, "application/json")], s.sinks.recent_json())
}

async fn health_handler(State(s): State<AppState>) -> impl IntoResponse {
    let last = s.health.last_poll_unix_ms.load(Ordering::Relaxed);
    let allowed = 3 * s.health.poll_interval.as_millis() as u64 + 1000;
    if last != 0 && unix_ms().saturating_sub(last) <= allowed {
        (StatusCode::OK, "ok\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "stalled: no poll finished recently\n")
    }
}
