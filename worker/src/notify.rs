//! Job notifications: when a run ends with a status its job's `notify.on`
//! names, the worker that wrote the record POSTs a notice to each webhook.
//!
//! At least once: each delivery is retried with backoff (1 s doubling to
//! 60 s, for up to `GIVE_UP_AFTER` after the run ended) until the receiver
//! answers 2xx; a 4xx other than 408 and 429 ends it (the receiver refuses
//! it). Each notice is kept in an outbox directory
//! (`GDTS_SPOOL_DIR/notices-{worker id}`, one file per notice, the worker's
//! alone) until its delivery ends, so a
//! worker that stops before then (at shutdown deliveries get `FLUSH_GRACE`)
//! or dies delivers it after its next start. Never in the way of runs or
//! records: notices are queued without waiting (a full queue drops the
//! notice, logged and counted), and delivered by their own tasks. Every
//! notice carries the run id (body `runId`, headers `X-GDTS-Run-Id` and
//! `Idempotency-Key`), so a receiver drops repeats by it.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use gdts_common::job::{redact_webhook, Job};
use gdts_common::log_record::LogRecord;
use serde::{Deserialize, Serialize};
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

/// A notice, as kept in the outbox.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Notice {
    url: String,
    run_id: String,
    body: serde_json::Value,
    /// When it was queued (epoch ms): `GIVE_UP_AFTER` counts from here,
    /// across restarts.
    queued_at: i64,
}

/// Where notices wait until their delivery ends: one file per notice,
/// written (0600) before the notice is queued, removed when it is
/// delivered, refused or given up.
#[derive(Clone)]
pub struct Outbox {
    dir: PathBuf,
}

impl Outbox {
    /// The outbox of worker `worker_id`: its own, should workers share a
    /// spool directory (the default, the system's temporary one).
    pub fn new(spool_dir: &Path, worker_id: &str) -> Outbox {
        Outbox {
            dir: spool_dir.join(format!("notices-{worker_id}")),
        }
    }

    /// Keeps `notice`; its file, or `None` (logged) if it cannot be kept.
    fn keep(&self, notice: &Notice) -> Option<PathBuf> {
        let bytes = serde_json::to_vec(notice).expect("a notice serializes");
        let kept =
            crate::log_sink::write_spool_file(&self.dir, "", notice.queued_at, "json", &bytes);
        match kept {
            Ok(path) => Some(path),
            Err(e) => {
                tracing::warn!(dir = %self.dir.display(), error = %e, run_id = %notice.run_id, "cannot keep a notice in the outbox; it is lost if the worker stops before it is delivered");
                None
            }
        }
    }

    /// The notices kept by an earlier life of this worker, oldest first
    /// (unreadable files are left where they are, logged).
    fn kept(&self) -> Vec<(Notice, PathBuf)> {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        let mut paths = Vec::new();
        for path in entries.flatten().map(|e| e.path()) {
            match path.extension().and_then(|x| x.to_str()) {
                Some("json") => paths.push(path),
                // A write the last life did not finish: never queued.
                Some("partial") => {
                    let _ = std::fs::remove_file(&path);
                }
                _ => {}
            }
        }
        paths.sort();
        paths
            .into_iter()
            .filter_map(|path| {
                let read = std::fs::read(&path)
                    .map_err(|e| e.to_string())
                    .and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string()));
                match read {
                    Ok(notice) => Some((notice, path)),
                    Err(e) => {
                        tracing::error!(file = %path.display(), error = %e, "an outbox notice cannot be read; left in place");
                        None
                    }
                }
            })
            .collect()
    }
}

/// A notice on its way, with its outbox file (if it has one).
struct Queued {
    notice: Notice,
    file: Option<PathBuf>,
}

impl Queued {
    /// Its delivery ended (delivered, refused or given up): the outbox
    /// forgets it.
    fn done(&self) {
        if let Some(file) = &self.file {
            if let Err(e) = std::fs::remove_file(file) {
                tracing::warn!(file = %file.display(), error = %e, "cannot remove a delivered notice from the outbox; it may be sent again");
            }
        }
    }
}

/// Queues notices for delivery.
#[derive(Clone)]
pub struct Notifier {
    tx: mpsc::Sender<Queued>,
    outbox: Outbox,
    metrics: Arc<Metrics>,
}

impl Notifier {
    /// Starts the delivery loop, first with the notices `outbox` kept from
    /// an earlier life; it ends once `stop` is cancelled and the deliveries
    /// in flight finish or `FLUSH_GRACE` passes.
    pub fn start(
        metrics: Arc<Metrics>,
        outbox: Outbox,
        stop: CancellationToken,
    ) -> (Notifier, tokio::task::JoinHandle<()>) {
        let (tx, rx) = mpsc::channel(QUEUE);
        let kept: Vec<Queued> = outbox
            .kept()
            .into_iter()
            .map(|(notice, file)| Queued {
                notice,
                file: Some(file),
            })
            .collect();
        if !kept.is_empty() {
            tracing::info!(
                notices = kept.len(),
                "delivering notices an earlier run of this worker kept"
            );
        }
        let handle = tokio::spawn(deliver_all(kept, rx, metrics.clone(), stop));
        (
            Notifier {
                tx,
                outbox,
                metrics,
            },
            handle,
        )
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
        let queued_at = chrono::Utc::now().timestamp_millis();
        for url in &notify.webhooks {
            let notice = Notice {
                url: url.clone(),
                run_id: record.run_id.clone(),
                body: body.clone(),
                queued_at,
            };
            let file = self.outbox.keep(&notice);
            match self.tx.try_send(Queued { notice, file }) {
                Ok(()) => {}
                // Stopping: kept for the next start.
                Err(mpsc::error::TrySendError::Closed(_)) => {}
                Err(mpsc::error::TrySendError::Full(q)) => {
                    q.done();
                    self.metrics.notification("dropped");
                    tracing::error!(job = %job.name, run_id = %record.run_id, "notification queue full; a notice is dropped");
                }
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
    kept: Vec<Queued>,
    mut rx: mpsc::Receiver<Queued>,
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
    let spawn = |queued: Queued, slot: Option<OwnedSemaphorePermit>| {
        let (client, metrics, abandon, requests) = (
            client.clone(),
            metrics.clone(),
            abandon.clone(),
            requests.clone(),
        );
        tasks.spawn(async move {
            if deliver(&client, &requests, &queued.notice, &metrics, &abandon).await {
                queued.done();
            }
            drop(slot);
        });
    };
    for queued in kept {
        let Ok(slot) = deliveries.clone().acquire_owned().await else {
            break;
        };
        spawn(queued, Some(slot));
    }
    loop {
        let notice = tokio::select! {
            n = rx.recv() => n,
            _ = stop.cancelled() => None,
        };
        let Some(queued) = notice else { break };
        let Ok(slot) = deliveries.clone().acquire_owned().await else {
            break;
        };
        spawn(queued, Some(slot));
    }
    // Notices still queued at the stop get their chance too.
    while let Ok(queued) = rx.try_recv() {
        spawn(queued, None);
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

/// Delivers one notice; true once its delivery ended (delivered, refused or
/// given up), false if the worker stopped first (it stays in the outbox).
async fn deliver(
    client: &reqwest::Client,
    requests: &Semaphore,
    n: &Notice,
    metrics: &Metrics,
    abandon: &CancellationToken,
) -> bool {
    let waited = chrono::Utc::now().timestamp_millis() - n.queued_at;
    let started = tokio::time::Instant::now()
        .checked_sub(Duration::from_millis(waited.max(0) as u64))
        .unwrap_or_else(tokio::time::Instant::now);
    let mut backoff = FIRST_RETRY;
    if started.elapsed() >= GIVE_UP_AFTER {
        // Kept by a life of the worker that ended long ago: too late.
        metrics.notification("failed");
        tracing::error!(url = %redact_webhook(&n.url), run_id = %n.run_id, "notification not delivered in {GIVE_UP_AFTER:?}; given up");
        return true;
    }
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
                tracing::warn!(url = %redact_webhook(&n.url), run_id = %n.run_id, "notification not delivered by shutdown; kept for the next start");
                return false;
            }
        };
        let why = match outcome {
            Ok(resp) if resp.status().is_success() => {
                metrics.notification("delivered");
                return true;
            }
            Ok(resp) => {
                let status = resp.status();
                if status.is_client_error()
                    && status != reqwest::StatusCode::REQUEST_TIMEOUT
                    && status != reqwest::StatusCode::TOO_MANY_REQUESTS
                {
                    metrics.notification("failed");
                    tracing::error!(url = %redact_webhook(&n.url), run_id = %n.run_id, %status, "the webhook refused a notification; not retried");
                    return true;
                }
                format!("answered {status}")
            }
            // Its text would name the whole URL; its causes do not.
            Err(e) => {
                let e = e.without_url();
                let mut why = e.to_string();
                let mut cause = std::error::Error::source(&e);
                while let Some(c) = cause {
                    why.push_str(": ");
                    why.push_str(&c.to_string());
                    cause = c.source();
                }
                why
            }
        };
        if started.elapsed() + backoff > GIVE_UP_AFTER {
            metrics.notification("failed");
            tracing::error!(url = %redact_webhook(&n.url), run_id = %n.run_id, error = %why, "notification not delivered in {GIVE_UP_AFTER:?}; given up");
            return true;
        }
        metrics.notification("retried");
        tracing::warn!(url = %redact_webhook(&n.url), run_id = %n.run_id, error = %why, retry_in = ?backoff, "notification not delivered; retrying");
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = abandon.cancelled() => {
                tracing::warn!(url = %redact_webhook(&n.url), run_id = %n.run_id, "notification not delivered by shutdown; kept for the next start");
                return false;
            }
        }
        backoff = (backoff * 2).min(MAX_RETRY);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_outbox_keeps_notices_until_their_delivery_ends() {
        let spool = tempfile::tempdir().unwrap();
        let outbox = Outbox::new(spool.path(), "w1");
        assert!(outbox.kept().is_empty());
        let notice = |run: &str, at: i64| Notice {
            url: "http://127.0.0.1:9/hook".into(),
            run_id: run.into(),
            body: json!({"runId": run}),
            queued_at: at,
        };
        let second = outbox.keep(&notice("b", 2_000)).unwrap();
        let first = outbox.keep(&notice("a", 1_000)).unwrap();
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&first).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        // A later life finds them, oldest first.
        let kept = Outbox::new(spool.path(), "w1").kept();
        // Another worker's outbox is its own.
        assert!(Outbox::new(spool.path(), "w2").kept().is_empty());
        assert_eq!(
            kept.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>(),
            [notice("a", 1_000), notice("b", 2_000)]
        );
        // A torn write is not a notice.
        std::fs::write(spool.path().join("notices-w1/x.partial"), b"{").unwrap();
        assert_eq!(outbox.kept().len(), 2);
        Queued {
            notice: notice("a", 1_000),
            file: Some(first),
        }
        .done();
        let kept = outbox.kept();
        assert_eq!(kept.len(), 1);
        assert_eq!(kept[0].1, second);
    }

    #[test]
    fn urls_are_logged_without_their_secret_part() {
        assert_eq!(
            redact_webhook("https://hooks.slack.com/services/T0/B0/secret"),
            "https://hooks.slack.com/(redacted)"
        );
        assert_eq!(
            redact_webhook("http://127.0.0.1:9/x?token=1"),
            "http://127.0.0.1:9/(redacted)"
        );
        assert_eq!(
            redact_webhook("https://user:p@ss@hooks.example:8443/x"),
            "https://hooks.example:8443/(redacted)"
        );
    }
}
