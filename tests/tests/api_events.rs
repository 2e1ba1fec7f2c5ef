//! `GET /api/v1/events`: job, run and worker events derived from etcd, and
//! resuming with `Last-Event-ID`.

use std::time::Duration;

use futures::StreamExt;
use gdts_tests::{once_soon, Cluster, WorkerOptions};
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_follow_jobs_runs_and_workers_and_resume() -> anyhow::Result<()> {
    let mut c = Cluster::start("api_events").await?;
    let url = format!("{}/api/v1/events", c.manager_url);
    let mut events = SseClient::connect(&url, None).await?;
    let wait = Duration::from_secs(20);

    c.start_worker("w1", WorkerOptions::default())?;
    let joined = events
        .next_matching(wait, |e| e.event == "worker.joined")
        .await?;
    assert_eq!(joined.data["id"], "w1");

    let http = reqwest::Client::new();
    let job = json!({"command": "echo hi", "cronExpr": once_soon(2)});
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
    let started = events
        .next_matching(wait, |e| e.event == "run.started")
        .await?;
    assert_eq!(
        (started.data["job"].clone(), started.data["worker"].clone()),
        (json!("ev"), json!("w1"))
    );
    let finished = events
        .next_matching(wait, |e| e.event == "run.finished")
        .await?;
    assert_eq!(finished.data["status"], "succeeded", "{:?}", finished);

    let resp = http
        .delete(format!("{}/api/v1/jobs/ev", c.manager_url))
        .send()
        .await?;
    assert_eq!(resp.status(), 204);
    events
        .next_matching(wait, |e| e.event == "job.deleted" && e.data["name"] == "ev")
        .await?;

    // A client that reconnects after `job.saved` gets what came after it, in order.
    let mut resumed = SseClient::connect(&url, saved.id.as_deref()).await?;
    let first = resumed
        .next_matching(wait, |e| {
            e.event.starts_with("job.") || e.event.starts_with("run.")
        })
        .await?;
    assert_eq!(first.event, "run.started", "{first:?}");
    resumed
        .next_matching(wait, |e| e.event == "job.deleted")
        .await?;

    assert!(c.worker("w1").terminate(Duration::from_secs(30)));
    let left = events
        .next_matching(wait, |e| e.event == "worker.left")
        .await?;
    assert_eq!(left.data["id"], "w1");
    Ok(())
}
