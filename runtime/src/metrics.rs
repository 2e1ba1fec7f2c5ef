//! Metrics both binaries share, in Prometheus' registry (the `prometheus`
//! crate): the latency and errors of every etcd and MongoDB request a
//! process times with [`etcd`] or [`mongo`], and [`encode`], which renders
//! a process's registry together with these for `/metrics`.
//!
//! Names: `gdts_` then the process (`worker_`, `manager_`, `http_`, `sse_`)
//! or the service (`etcd_`, `mongo_`); seconds and `_total` as Prometheus'
//! conventions say. Labels are bounded sets (operations, statuses, routes),
//! never ids, except job names where a process caps them.

use std::future::Future;
use std::sync::OnceLock;
use std::time::Instant;

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry, TextEncoder,
};

/// Request latency buckets, seconds: from a loopback etcd commit to a
/// request that times out.
pub const REQUEST_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

struct Store {
    registry: Registry,
    etcd_seconds: HistogramVec,
    etcd_errors: IntCounterVec,
    mongo_seconds: HistogramVec,
    mongo_errors: IntCounterVec,
}

fn store() -> &'static Store {
    static STORE: OnceLock<Store> = OnceLock::new();
    STORE.get_or_init(|| {
        let registry = Registry::new();
        let histogram = |name: &str, help: &str| {
            let h = HistogramVec::new(
                HistogramOpts::new(name, help).buckets(REQUEST_BUCKETS.to_vec()),
                &["op"],
            )
            .expect("a valid histogram");
            registry
                .register(Box::new(h.clone()))
                .expect("registered once");
            h
        };
        let counter = |name: &str, help: &str| {
            let c = IntCounterVec::new(Opts::new(name, help), &["op"]).expect("a valid counter");
            registry
                .register(Box::new(c.clone()))
                .expect("registered once");
            c
        };
        Store {
            etcd_seconds: histogram(
                "gdts_etcd_request_duration_seconds",
                "etcd requests, by operation: time to an answer or an error.",
            ),
            etcd_errors: counter(
                "gdts_etcd_request_errors_total",
                "etcd requests that failed or timed out, by operation.",
            ),
            mongo_seconds: histogram(
                "gdts_mongo_request_duration_seconds",
                "MongoDB requests, by operation: time to an answer or an error.",
            ),
            mongo_errors: counter(
                "gdts_mongo_request_errors_total",
                "MongoDB requests that failed or timed out, by operation.",
            ),
            registry,
        }
    })
}

/// Times an etcd request as `op`; an `Err` counts as an error.
pub async fn etcd<T, E>(
    op: &'static str,
    request: impl Future<Output = Result<T, E>>,
) -> Result<T, E> {
    let s = store();
    timed(&s.etcd_seconds, &s.etcd_errors, op, request).await
}

/// Times a MongoDB request as `op`; an `Err` counts as an error.
pub async fn mongo<T, E>(
    op: &'static str,
    request: impl Future<Output = Result<T, E>>,
) -> Result<T, E> {
    let s = store();
    timed(&s.mongo_seconds, &s.mongo_errors, op, request).await
}

/// Records an etcd request as `op` that was timed elsewhere (`ok`: answered).
pub fn etcd_observed(op: &'static str, started: Instant, ok: bool) {
    let s = store();
    observe(&s.etcd_seconds, &s.etcd_errors, op, started, ok);
}

/// Records a MongoDB request as `op` that was timed elsewhere.
pub fn mongo_observed(op: &'static str, started: Instant, ok: bool) {
    let s = store();
    observe(&s.mongo_seconds, &s.mongo_errors, op, started, ok);
}

async fn timed<T, E>(
    seconds: &HistogramVec,
    errors: &IntCounterVec,
    op: &'static str,
    request: impl Future<Output = Result<T, E>>,
) -> Result<T, E> {
    let started = Instant::now();
    let result = request.await;
    observe(seconds, errors, op, started, result.is_ok());
    result
}

fn observe(seconds: &HistogramVec, errors: &IntCounterVec, op: &str, started: Instant, ok: bool) {
    seconds
        .with_label_values(&[op])
        .observe(started.elapsed().as_secs_f64());
    if !ok {
        errors.with_label_values(&[op]).inc();
    }
}

/// `registry`'s metrics and the shared ones, in the text format
/// (`text/plain; version=0.0.4`).
pub fn encode(registry: &Registry) -> String {
    let mut families = registry.gather();
    families.extend(store().registry.gather());
    families.sort_by(|a, b| a.name().cmp(b.name()));
    let mut out = Vec::new();
    TextEncoder::new()
        .encode(&families, &mut out)
        .expect("text encoding does not fail");
    String::from_utf8(out).expect("the text format is UTF-8")
}

/// The content type of [`encode`]'s output.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn timed_requests_and_errors_are_rendered() {
        let _ = etcd("test_get", async { Ok::<_, ()>(()) }).await;
        let _ = mongo("test_insert", async { Err::<(), _>("refused") }).await;
        let text = encode(&Registry::new());
        assert!(
            text.contains("gdts_etcd_request_duration_seconds_count{op=\"test_get\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("gdts_mongo_request_errors_total{op=\"test_insert\"} 1"),
            "{text}"
        );
        assert!(
            !text.contains("gdts_etcd_request_errors_total{op=\"test_get\"}"),
            "{text}"
        );
    }
}
