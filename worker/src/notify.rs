//! Job notifications: when a run ends with a status its job's `notify.on`
//! names, the worker that wrote the record POSTs a notice to each webhook.
//!
//! At least once while the worker lives: each delivery is retried with
//! backoff (1 s doubling to 60 s, for up to `GIVE_UP_AFTER`) until the
//! receiver answers 2xx; a 4xx other than 408 and 429 ends it (the receiver
//! refuses it). Never in the way of runs or records: notices are queued
//! without waiting (a full queue drops the notice, logged and counted), and
//! delivered by their own tasks. At shutdown, deliveries get `FLUSH_GRACE`.
//! Every notice carries the run id (body `runId`, headers `X-GDTS-Run-Id`
//! and `Idempotency-Key`), so a receiver drops repeats by it.

use std::sync::Arc;
use std::time::Duration;

use gdts_common::job::Job;
use gdts_common::log_record::LogRecord;
use serde_json::json;
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::metrics::Metrics;

/// Notices waiting for a delivery task; more are dropped.
const QUEUE: usize = 10_000;
/// Deliveries under way (each until delivered or given up, retries
/// included); past this, notices wait in the queue.
const DELIVERIES: usize = 10_000;
/// HTTP requests in flight at once (a delivery holds a slot only while its
/// request is out, never while it waits to retry: a dead webhook cannot
/// hold up the others').
const CONCURRENCY: usize = 32;
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
const FIRST_RETRY: Duration = Duration::from_secs(1);
const MAX_RETRY: Duration = Duration::from_secs(60);
/// A delivery still failing this long after the run is given up.
const GIVE_UP_AFTER: Duration = Duration::from_secs(30 * 60);
/// How long deliveries may go on once the worker stops.
pub const FLUSH_GRACE: Duration = Duration::from_secs(10);

struct Notice {
    url: String,
    run_id: String,
    body: serde_json::Value,
}

/// Queues notices for delivery.
#[derive(Clone)]
pub struct Notifier {
    tx: mpsc::Sender<Notice>,
    metrics: Arc<Metrics>,
}

impl Notifier {
    /// Starts the delivery loop; it ends once `stop` is cancelled and the
    /// deliveries in flight finish or `FLUSH_GRACE` passes.
    pub fn start(
        metrics: Arc<Metrics>,
        stop: CancellationToken,
    ) -> (Notifier, tokio::task::JoinHandle<()>) {
        let (tx, rx) = mpsc::channel(QUEUE);
        let handle = tokio::spawn(deliver_all(rx, metrics.clone(), stop));
        (Notifier { tx, metrics }, handle)
    }

    /// Queues a notice of `record` to each of `job`'s webhooks, if its
    /// status is one the job asks for.
    pub fn notify(&self, job: &Job, record: &LogRecord) {
        let Some(notify) = &job.notify else {
            return;
        };
        if !notify.wants(&record.status) {
            return;
        }
        let body = body(record);
        for url in &notify.webhooks {
            let notice = Notice {
                url: url.clone(),
                run_id: record.run_id.clone(),
                body: body.clone(),
            };
            if self.tx.try_send(notice).is_err() {
                self.metrics.notification("dropped");
                tracing::error!(job = %job.name, run_id = %record.run_id, "notification queue full; a notice is dropped");
            }
        }
    }
}

/// Slack-compatible (`text`), with the run record's fields (no output).
fn body(r: &LogRecord) -> serde_json::Value {
    let what = match r.exit_code {
        Some(code) if r.status == "failed" => format!("{} (exit {code})", r.status),
        _ => r.status.clone(),
    };
    let mut text = format!("GDTS: job {} {what} on {}", r.job_name, r.worker);
    if !r.err.is_empty() {
        text.push_str(": ");
        text.push_str(&r.err);
    }
    json!({
        "text": text,
        "event": format!("run.{}", r.status),
        "runId": r.run_id,
        "jobName": r.job_name,
        "status": r.status,
        "err": r.err,
        "exitCode": r.exit_code,
        "signal": r.signal,
        "planTime": r.plan_time,
        "startTime": r.start_time,
        "endTime": r.end_time,
        "worker": r.worker,
        "trigger": r.trigger,
        "attempt": r.attempt,
    })
}

async fn deliver_all(
    mut rx: mpsc::Receiver<Notice>,
    metrics: Arc<Metrics>,
    stop: CancellationToken,
) {
    let client = match reqwest::Client::builder()
        .timeout(REQUEST_TIMEOUT)
        .user_agent(concat!("gdts-worker/", env!("CARGO_PKG_VERSION")))
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "cannot build the notification HTTP client; notices are dropped");
            return;
        }
    };
    let requests = Arc::new(Semaphore::new(CONCURRENCY));
    let deliveries = Arc::new(Semaphore::new(DELIVERIES));
    let tasks = TaskTracker::new();
    // Each delivery ends at the latest `FLUSH_GRACE` after the stop.
    let abandon = CancellationToken::new();
    // A delivery of its own, holding its place among `DELIVERIES` (if
    // given) until it ends.
    let spawn = |notice: Notice, slot: Option<OwnedSemaphorePermit>| {
        let (client, metrics, abandon, requests) = (
            client.clone(),
            metrics.clone(),
            abandon.clone(),
            requests.clone(),
        );
        tasks.spawn(async move {
            deliver(&client, &requests, &notice, &metrics, &abandon).await;
            drop(slot);
        });
    };
    loop {
        let notice = tokio::select! {
            n = rx.recv() => n,
            _ = stop.cancelled() => None,
        };
        let Some(notice) = notice else { break };
        let Ok(slot) = deliveries.clone().acquire_owned().await else {
            break;
        };
        spawn(notice, Some(slot));
    }
    // Notices still queued at the stop get their chance too.
    while let Ok(notice) = rx.try_recv() {
        spawn(notice, None);
    }
    tasks.close();
    if tokio::time::timeout(FLUSH_GRACE, tasks.wait())
        .await
        .is_err()
    {
        abandon.cancel();
        tasks.wait().await;
    }
}

async fn deliver(
    client: &reqwest::Client,
    requests: &Semaphore,
    n: &Notice,
    metrics: &Metrics,
    abandon: &CancellationToken,
) {
    let started = tokio::time::Instant::now();
    let mut backoff = FIRST_RETRY;
    loop {
        let sent = async {
            let _slot = requests.acquire().await;
            client
                .post(&n.url)
                .header("X-GDTS-Run-Id", &n.run_id)
                .header("Idempotency-Key", &n.run_id)
                .json(&n.body)
                .send()
                .await
        };
        let outcome = tokio::select! {
            r = sent => r,
            _ = abandon.cancelled() => {
                metrics.notification("failed");
                tracing::warn!(url = %redact(&n.url), run_id = %n.run_id, "notification not delivered by shutdown; given up");
                return;
            }
        };
        let why = match outcome {
            Ok(resp) if resp.status().is_success() => {
                metrics.notification("delivered");
                return;
            }
            Ok(resp) => {
                let status = resp.status();
                if status.is_client_error()
                    && status != reqwest::StatusCode::REQUEST_TIMEOUT
                    && status != reqwest::StatusCode::TOO_MANY_REQUESTS
                {
                    metrics.notification("failed");
                    tracing::error!(url = %redact(&n.url), run_id = %n.run_id, %status, "the webhook refused a notification; not retried");
                    return;
                }
                format!("answered {status}")
            }
            Err(e) => e.to_string(),
        };
        if started.elapsed() + backoff > GIVE_UP_AFTER {
            metrics.notification("failed");
            tracing::error!(url = %redact(&n.url), run_id = %n.run_id, error = %why, "notification not delivered in {GIVE_UP_AFTER:?}; given up");
            return;
        }
        metrics.notification("retried");
        tracing::warn!(url = %redact(&n.url), run_id = %n.run_id, error = %why, retry_in = ?backoff, "notification not delivered; retrying");
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = abandon.cancelled() => {
                metrics.notification("failed");
                tracing::warn!(url = %redact(&n.url), run_id = %n.run_id, "notification not delivered by shutdown; given up");
                return;
            }
        }
        backoff = (backoff * 2).min(MAX_RETRY);
    }
}

/// A webhook URL for logs: its path and query may hold a secret (Slack's
/// do), and so may a user and password, so only the scheme, host and port
/// are shown.
fn redact(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => {
            let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
            let host = authority.rsplit('@').next().unwrap_or_default();
            format!("{scheme}://{host}/…")
        }
        None => "…".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_logged_without_their_secret_part() {
        assert_eq!(
            redact("https://hooks.slack.com/services/T0/B0/secret"),
            "https://hooks.slack.com/…"
        );
        assert_eq!(
            redact("http://127.0.0.1:9/x?token=1"),
            "http://127.0.0.1:9/…"
        );
        assert_eq!(
            redact("https://user:p@ss@hooks.example:8443/x"),
            "https://hooks.example:8443/…"
        );
    }
}
