//! `GET /api/v1/events`: job, run and worker events derived from etcd, and
//! resuming with `Last-Event-ID`. The worker's side (registration, running
//! marks, run feed) is written straight into etcd, as a worker writes it.

use std::time::Duration;

use etcd_client::{PutOptions, Txn, TxnOp};
use futures::StreamExt;
use gdts_tests::gdts_common::keys::{Keys, RunKey};
use gdts_tests::gdts_common::values::{FinishedRun, RunFeed, RunningRecord};
use gdts_tests::gdts_common::JobName;
use gdts_tests::{now_ms, Cluster};
use serde_json::{json, Value};

#[derive(Debug, Clone)]
struct SseEvent {
    id: Option<String>,
    event: String,
    data: Value,
}

/// A minimal Server-Sent Events reader.
struct SseClient {
    body: std::pin::Pin<Box<dyn futures::Stream<Item = reqwest::Result<bytes::Bytes>> + Send>>,
    buffer: String,
}

impl SseClient {
    async fn connect(url: &str, last_event_id: Option<&str>) -> anyhow::Result<SseClient> {
        let mut req = reqwest::Client::new()
            .get(url)
            .header("accept", "text/event-stream");
        if let Some(id) = last_event_id {
            req = req.header("last-event-id", id);
        }
        let resp = req.send().await?;
        anyhow::ensure!(resp.status() == 200, "events: HTTP {}", resp.status());
        Ok(SseClient {
            body: Box::pin(resp.bytes_stream()),
            buffer: String::new(),
        })
    }

    /// The next event that satisfies `want`, skipping others, within `timeout`.
    async fn next_matching(
        &mut self,
        timeout: Duration,
        want: impl Fn(&SseEvent) -> bool,
    ) -> anyhow::Result<SseEvent> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            while let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let mut event = SseEvent {
                    id: None,
                    event: "message".into(),
                    data: Value::Null,
                };
                let mut data = String::new();
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("id:") {
                        event.id = Some(v.trim().to_string());
                    } else if let Some(v) = line.strip_prefix("event:") {
                        event.event = v.trim().to_string();
                    } else if let Some(v) = line.strip_prefix("data:") {
                        data.push_str(v.trim_start());
                    }
                }
                if data.is_empty() {
                    continue; // keep-alive comment
                }
                event.data = serde_json::from_str(&data)?;
                if want(&event) {
                    return Ok(event);
                }
            }
            let chunk = tokio::time::timeout_at(deadline, self.body.next())
                .await
                .map_err(|_| anyhow::anyhow!("no matching event within {timeout:?}"))?
                .ok_or_else(|| anyhow::anyhow!("event stream ended"))??;
            self.buffer.push_str(&String::from_utf8_lossy(&chunk));
        }
    }
}

/// What a worker writes, written by the test.
struct FakeWorker {
    etcd: etcd_client::Client,
    keys: Keys,
    id: String,
    lease: i64,
}

impl FakeWorker {
    async fn register(c: &Cluster, id: &str) -> anyhow::Result<FakeWorker> {
        let mut etcd = c.etcd.client().await;
        let lease = etcd.lease_grant(30, None).await?.id();
        let w = FakeWorker {
            etcd,
            keys: Keys::new(&c.prefix),
            id: id.to_string(),
            lease,
        };
        let info = json!({"id": id, "hostname": "test", "version": "0", "startTime": now_ms(), "running": 0});
        w.etcd
            .clone()
            .put(w.keys.worker(id), info.to_string(), Some(w.on_lease()))
            .await?;
        Ok(w)
    }

    fn on_lease(&self) -> PutOptions {
        PutOptions::new().with_lease(self.lease)
    }

    fn running_key(&self, job: &str, run: &RunKey) -> String {
        self.keys.running(&JobName::parse(job).unwrap(), run)
    }

    /// Marks a run as running; returns the revision.
    async fn start(&self, job: &str, run: &RunKey) -> anyhow::Result<i64> {
        let mark = RunningRecord {
            worker: self.id.clone(),
            started_at: now_ms(),
        };
        let resp = self
            .etcd
            .clone()
            .put(
                self.running_key(job, run),
                serde_json::to_vec(&mark)?,
                Some(self.on_lease()),
            )
            .await?;
        Ok(resp.header().map(|h| h.revision()).unwrap_or_default())
    }

    /// Lists `runs` in the feed and deletes the marks of `marked`, in one
    /// transaction; returns its revision.
    async fn finish(
        &self,
        runs: &[(&str, &RunKey, &str)],
        marked: &[(&str, &RunKey)],
    ) -> anyhow::Result<i64> {
        let feed = RunFeed {
            runs: runs
                .iter()
                .map(|(job, run, status)| FinishedRun {
                    job: job.to_string(),
                    run: run.to_string(),
                    run_id: format!("{job}@{}#1", run.tick_ms),
                    status: status.to_string(),
                    start_time: run.tick_ms,
                    end_time: run.tick_ms + 5,
                })
                .collect(),
        };
        let mut ops: Vec<TxnOp> = marked
            .iter()
            .map(|(job, run)| TxnOp::delete(self.running_key(job, run), None))
            .collect();
        ops.push(TxnOp::put(
            self.keys.run_feed(&self.id),
            serde_json::to_vec(&feed)?,
            Some(self.on_lease()),
        ));
        let resp = self.etcd.clone().txn(Txn::new().and_then(ops)).await?;
        Ok(resp.header().map(|h| h.revision()).unwrap_or_default())
    }
}

fn is_run_event(e: &SseEvent) -> bool {
    e.event.starts_with("run.")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_follow_jobs_runs_and_workers_and_resume() -> anyhow::Result<()> {
    let c = Cluster::start("api_events").await?;
    let url = format!("{}/api/v1/events", c.manager_url);
    let mut events = SseClient::connect(&url, None).await?;
    let wait = Duration::from_secs(20);

    let w1 = FakeWorker::register(&c, "w1").await?;
    let joined = events
        .next_matching(wait, |e| e.event == "worker.joined")
        .await?;
    assert_eq!(joined.data["id"], "w1");
    assert_eq!(joined.data["worker"]["hostname"], "test");

    let http = reqwest::Client::new();
    let job = json!({"command": "echo hi", "cronExpr": "@yearly"});
    let resp = http
        .put(format!("{}/api/v1/jobs/ev", c.manager_url))
        .json(&job)
        .send()
        .await?;
    assert_eq!(resp.status(), 201);
    let saved = events
        .next_matching(wait, |e| e.event == "job.saved")
        .await?;
    assert_eq!(saved.data["name"], "ev");
    assert_eq!(saved.data["job"]["command"], "echo hi");

    // A run claimed at its tick gets a mark: run.started.
    let (long, short) = (RunKey::scheduled(1_000), RunKey::scheduled(2_000));
    let started_at = w1.start("ev", &long).await?;
    let started = events.next_matching(wait, is_run_event).await?;
    assert_eq!(started.event, "run.started");
    assert_eq!(
        (
            &started.data["job"],
            &started.data["run"],
            &started.data["worker"]
        ),
        (&json!("ev"), &json!(long.to_string()), &json!("w1"))
    );
    assert_eq!(started.id, Some(started_at.to_string()));

    // It ends with a feed entry and its mark's deletion in one transaction,
    // together with a short run that never had a mark: one run.finished
    // each, from the feed, and the revision's id on the last of them only.
    let finished_at = w1
        .finish(
            &[("ev", &long, "succeeded"), ("ev", &short, "failed")],
            &[("ev", &long)],
        )
        .await?;
    let first = events.next_matching(wait, is_run_event).await?;
    let second = events.next_matching(wait, is_run_event).await?;
    assert_eq!(
        first.data,
        json!({"job": "ev", "run": long.to_string(), "worker": "w1", "status": "succeeded",
               "runId": "ev@1000#1", "startTime": 1000, "endTime": 1005}),
        "{first:?}"
    );
    assert_eq!(
        (first.event.as_str(), first.id.as_deref()),
        ("run.finished", None)
    );
    assert_eq!(
        (
            second.event.as_str(),
            &second.data["run"],
            &second.data["status"]
        ),
        ("run.finished", &json!(short.to_string()), &json!("failed"))
    );
    assert_eq!(second.id, Some(finished_at.to_string()));

    // A mark that goes without a feed entry: its run ended unreported.
    let lost = RunKey::scheduled(3_000);
    w1.start("ev", &lost).await?;
    let started = events.next_matching(wait, is_run_event).await?;
    assert_eq!(started.event, "run.started");
    w1.etcd
        .clone()
        .delete(w1.running_key("ev", &lost), None)
        .await?;
    let gone = events.next_matching(wait, is_run_event).await?;
    assert_eq!(
        (gone.event.as_str(), &gone.data),
        (
            "run.finished",
            &json!({"job": "ev", "run": lost.to_string()})
        )
    );

    let resp = http
        .delete(format!("{}/api/v1/jobs/ev", c.manager_url))
        .send()
        .await?;
    assert_eq!(resp.status(), 204);
    let deleted = events
        .next_matching(wait, |e| e.event.starts_with("job.") || is_run_event(e))
        .await?;
    assert_eq!(
        (deleted.event.as_str(), &deleted.data["name"]),
        ("job.deleted", &json!("ev"))
    );

    // A client that reconnects after `job.saved` gets what came after it, in order.
    let mut resumed = SseClient::connect(&url, saved.id.as_deref()).await?;
    let first = resumed.next_matching(wait, is_run_event).await?;
    assert_eq!(
        (first.event.as_str(), first.id),
        ("run.started", Some(started_at.to_string()))
    );
    // Reconnecting after the revision before the feed's gets all of the
    // feed's revision, not only its last event.
    let mut resumed = SseClient::connect(&url, Some(&started_at.to_string())).await?;
    let first = resumed.next_matching(wait, is_run_event).await?;
    assert_eq!(
        (first.event.as_str(), &first.data["run"], first.id),
        ("run.finished", &json!(long.to_string()), None)
    );
    let second = resumed.next_matching(wait, is_run_event).await?;
    assert_eq!(second.id, Some(finished_at.to_string()));
    resumed
        .next_matching(wait, |e| e.event == "job.deleted")
        .await?;

    // The worker dies: its lease goes, and with it its registration and the
    // mark of the run it had going, in one revision.
    let orphan = RunKey::scheduled(4_000);
    w1.start("other", &orphan).await?;
    events.next_matching(wait, is_run_event).await?;
    w1.etcd.clone().lease_revoke(w1.lease).await?;
    let mut seen = Vec::new();
    while seen.len() < 2 {
        let e = events
            .next_matching(wait, |e| is_run_event(e) || e.event.starts_with("worker."))
            .await?;
        seen.push(e);
    }
    seen.sort_by(|a, b| a.event.cmp(&b.event));
    assert_eq!(
        (seen[0].event.as_str(), &seen[0].data),
        (
            "run.finished",
            &json!({"job": "other", "run": orphan.to_string()})
        )
    );
    assert_eq!(
        (seen[1].event.as_str(), &seen[1].data["id"]),
        ("worker.left", &json!("w1"))
    );
    assert_eq!(
        seen.iter().filter(|e| e.id.is_some()).count(),
        1,
        "one revision, one id: {seen:?}"
    );
    Ok(())
}

/// A client resuming after an id etcd has compacted away gets `reset` with
/// an id of its own, and the stream goes on from there: reconnecting with
/// that id resumes normally (before, the reset had no id and the stream
/// ended, so a browser reconnected with the compacted id forever).
#[tokio::test]
async fn a_compacted_last_event_id_gets_a_reset_with_an_id_and_goes_on() -> anyhow::Result<()> {
    let c = Cluster::start("api_events_compacted").await?;
    let url = format!("{}/api/v1/events", c.manager_url);
    let wait = Duration::from_secs(20);
    let http = reqwest::Client::new();
    let save = |name: &str| {
        http.put(format!("{}/api/v1/jobs/{name}", c.manager_url))
            .json(&json!({"command": "echo hi", "cronExpr": "@yearly"}))
            .send()
    };
    let old = c.etcd_revision().await?;
    for name in ["a1", "a2", "a3"] {
        assert_eq!(save(name).await?.status(), 201);
    }
    let now = c.etcd_revision().await?;
    c.etcd.client().await.compact(now, None).await?;

    let mut events = SseClient::connect(&url, Some(&old.to_string())).await?;
    let reset = events.next_matching(wait, |_| true).await?;
    assert_eq!(reset.event, "reset", "{reset:?}");
    let reset_id: i64 = reset
        .id
        .as_deref()
        .expect("the reset carries an id")
        .parse()?;
    assert!(
        reset_id >= now,
        "reset id {reset_id} before the compaction at {now}"
    );
    // The same stream goes on.
    assert_eq!(save("b1").await?.status(), 201);
    let saved = events
        .next_matching(wait, |e| e.event == "job.saved")
        .await?;
    assert_eq!(saved.data["name"], "b1", "{saved:?}");
    // Reconnecting with the reset's id resumes without another reset.
    let mut resumed = SseClient::connect(&url, Some(&reset_id.to_string())).await?;
    let first = resumed.next_matching(wait, |_| true).await?;
    assert_eq!(
        (first.event.as_str(), &first.data["name"]),
        ("job.saved", &json!("b1"))
    );
    Ok(())
}

/// An open event stream (a browser tab) does not hold up the manager's
/// graceful shutdown: streams end and the manager exits at once.
#[tokio::test]
async fn open_event_streams_do_not_hold_up_shutdown() -> anyhow::Result<()> {
    let mut c = Cluster::start("api_events_shutdown").await?;
    let url = format!("{}/api/v1/events", c.manager_url);
    let _open = SseClient::connect(&url, None).await?;
    let stopped = tokio::task::spawn_blocking(move || {
        let stopped = c.stop_manager(Duration::from_secs(8));
        (c, stopped)
    })
    .await?
    .1;
    assert!(
        stopped,
        "the manager did not stop within 8 s with an event stream open"
    );
    Ok(())
}
