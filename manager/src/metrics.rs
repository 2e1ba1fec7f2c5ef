//! The manager's metrics (the `prometheus` crate), at `GET /metrics` (the
//! viewer role): HTTP requests by route, method and status with their
//! latency, open event streams, and etcd's and MongoDB's request latency
//! and errors from `gdts_runtime::metrics`.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, IntGauge, Opts, Registry};

pub struct HttpMetrics {
    registry: Registry,
    requests: IntCounterVec,
    seconds: HistogramVec,
    sse_clients: IntGauge,
}

impl Default for HttpMetrics {
    fn default() -> Self {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new(
                "gdts_http_requests_total",
                "HTTP requests by route (the route's pattern; static for the UI's files), method and status.",
            ),
            &["route", "method", "status"],
        )
        .expect("valid");
        let seconds = HistogramVec::new(
            HistogramOpts::new(
                "gdts_http_request_duration_seconds",
                "Time to the response's head, by route and method (an event stream's head comes at once).",
            )
            .buckets(gdts_runtime::metrics::REQUEST_BUCKETS.to_vec()),
            &["route", "method"],
        )
        .expect("valid");
        let sse_clients = IntGauge::new("gdts_sse_clients", "Event streams open on this manager.")
            .expect("valid");
        registry.register(Box::new(requests.clone())).expect("once");
        registry.register(Box::new(seconds.clone())).expect("once");
        registry
            .register(Box::new(sse_clients.clone()))
            .expect("once");
        HttpMetrics {
            registry,
            requests,
            seconds,
            sse_clients,
        }
    }
}

/// The route label: the pattern the router matched (`/api/v1/jobs/{name}`),
/// never the path itself, so names and ids make no series of their own.
fn route_label(req: &Request) -> String {
    match req.extensions().get::<MatchedPath>() {
        Some(p) => p.as_str().to_string(),
        None if matches!(*req.method(), Method::GET | Method::HEAD) => "static".into(),
        None => "unmatched".into(),
    }
}

/// The method label: the standard methods by name, anything else as
/// "other", so a caller's made-up methods make no series of their own.
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::OPTIONS => "OPTIONS",
        Method::TRACE => "TRACE",
        Method::CONNECT => "CONNECT",
        _ => "other",
    }
}

/// Counts and times every request (outermost layer: refusals by the
/// authorization layer are counted too).
pub async fn track(State(m): State<Shared>, req: Request, next: Next) -> Response {
    let route = route_label(&req);
    let method = method_label(req.method());
    let started = Instant::now();
    let response = next.run(req).await;
    m.seconds
        .with_label_values(&[&route, method])
        .observe(started.elapsed().as_secs_f64());
    m.requests
        .with_label_values(&[&route, method, response.status().as_str()])
        .inc();
    response
}

pub type Shared = Arc<HttpMetrics>;

impl HttpMetrics {
    /// The text `GET /metrics` answers, with `open_streams` as the number of
    /// event streams open now.
    pub fn render(&self, open_streams: usize) -> Response {
        self.sse_clients.set(open_streams as i64);
        (
            [(header::CONTENT_TYPE, gdts_runtime::metrics::CONTENT_TYPE)],
            gdts_runtime::metrics::encode(&self.registry),
        )
            .into_response()
    }
}
