//! The worker's health endpoint (`GDTS_HEALTH_PORT`), for managed instance
//! group autohealing and load balancers.
//!
//! `/healthz` answers 200 while the process and its scheduler loop are alive.
//! It deliberately ignores etcd: when etcd is down every worker would fail
//! the check and autohealing would recreate the whole fleet for nothing.
//! `/readyz` also requires a current registration in etcd. `/metrics` serves
//! the worker's counters (Prometheus text format).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use tokio_util::sync::CancellationToken;

#[derive(Default)]
pub struct Health {
    scheduler_running: AtomicBool,
    registered: AtomicBool,
    pub metrics: Arc<crate::metrics::Metrics>,
}

impl Health {
    pub fn new(metrics: Arc<crate::metrics::Metrics>) -> Self {
        Health {
            metrics,
            ..Default::default()
        }
    }

    pub fn set_scheduler_running(&self, running: bool) {
        self.scheduler_running.store(running, Ordering::Relaxed);
    }

    pub fn set_registered(&self, registered: bool) {
        self.registered.store(registered, Ordering::Relaxed);
        self.metrics.set_registered(registered);
    }
}

pub fn router(health: Arc<Health>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(health)
}

async fn healthz(State(h): State<Arc<Health>>) -> (StatusCode, &'static str) {
    if h.scheduler_running.load(Ordering::Relaxed) {
        (StatusCode::OK, "ok")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "scheduler stopped")
    }
}

async fn metrics(
    State(h): State<Arc<Health>>,
) -> ([(axum::http::HeaderName, &'static str); 1], String) {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            gdts_runtime::metrics::CONTENT_TYPE,
        )],
        h.metrics.render(),
    )
}

async fn readyz(State(h): State<Arc<Health>>) -> (StatusCode, &'static str) {
    match (
        h.scheduler_running.load(Ordering::Relaxed),
        h.registered.load(Ordering::Relaxed),
    ) {
        (true, true) => (StatusCode::OK, "ready"),
        (false, _) => (StatusCode::SERVICE_UNAVAILABLE, "scheduler stopped"),
        (true, false) => (StatusCode::SERVICE_UNAVAILABLE, "not registered in etcd"),
    }
}

/// Serves until `shutdown`.
pub async fn serve(
    listener: tokio::net::TcpListener,
    health: Arc<Health>,
    shutdown: CancellationToken,
) {
    let result = axum::serve(listener, router(health))
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await;
    if let Err(e) = result {
        tracing::error!(error = %e, "health endpoint stopped");
    }
}
