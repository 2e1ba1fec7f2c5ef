//! Job notifications: runs that end with a status the job's `notify.on`
//! names are posted to its webhooks (Slack-compatible `text` plus the run
//! record's fields, the run id also in `X-GDTS-Run-Id`), at least once:
//! notices of runs that ended while the receiver was down arrive once it is
//! up. Statuses not asked for send nothing, and a webhook that never answers
//! delays no run.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::routing::post;
use axum::{Json, Router};
use gdts_tests::{free_port, records_of, wait_until, Cluster};
use serde_json::{json, Value};

type Seen = Arc<Mutex<Vec<(Option<String>, Value)>>>;

async fn receive(
    State(seen): State<Seen>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> &'static str {
    let run_id = headers
        .get("x-gdts-run-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    seen.lock().unwrap().push((run_id, body));
    "ok"
}

/// A webhook receiver on `port`, and what it has seen.
async fn start_receiver(port: u16) -> anyhow::Result<(Seen, tokio::task::JoinHandle<()>)> {
    let seen: Seen = Arc::default();
    let app = Router::new()
        .route("/hook", post(receive))
        .with_state(seen.clone());
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    let server = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok((seen, server))
}

/// The ids of the runs `c` recorded for `job`.
async fn run_ids(c: &Cluster, job: &str) -> anyhow::Result<BTreeSet<String>> {
    let records = c.run_records().await?;
    Ok(records_of(&records, job)
        .iter()
        .map(|d| d.get_str("runId").unwrap_or_default().to_string())
        .collect())
}

/// Waits until the receiver has seen a notice of each of `runs`.
async fn wait_for_notices(
    what: &str,
    seen: &Seen,
    runs: &BTreeSet<String>,
    timeout: Duration,
) -> anyhow::Result<()> {
    wait_until(what, timeout, || {
        let got: BTreeSet<String> = seen
            .lock()
            .unwrap()
            .iter()
            .filter_map(|(_, b)| b["runId"].as_str().map(str::to_string))
            .collect();
        let all = runs.is_subset(&got);
        async move { all }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notices_reach_the_webhook_at_least_once_and_never_hold_runs() -> anyhow::Result<()> {
    let c = Cluster::with_workers("notifications", &["w1"]).await?;
    // The receiver's port is chosen now and opened only later: it is down
    // while the first runs end.
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}/hook");
    // A webhook that takes connections and never answers.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let silent_url = format!("http://{}/hook", silent.local_addr()?);
    let held = tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((conn, _)) = silent.accept().await {
            open.push(conn);
        }
    });

    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()?;
    for (name, command, notify) in [
        (
            "fails",
            "echo broken; exit 3",
            json!({"webhooks": [url, silent_url]}),
        ),
        (
            "fine",
            "echo fine",
            json!({"webhooks": [url], "on": ["failed"]}),
        ),
        (
            "cheers",
            "echo done",
            json!({"webhooks": [url], "on": ["succeeded"]}),
        ),
    ] {
        let r = http
            .put(format!("{}/api/v1/jobs/{name}", c.manager_url))
            .json(&json!({"command": command, "cronExpr": "*/2 * * * * * *", "notify": notify}))
            .send()
            .await?;
        assert_eq!(r.status(), 201, "{name}: {}", r.text().await?);
    }
    // Three failed runs while the receiver is down.
    c.wait_for_records("fails", 3, Duration::from_secs(30))
        .await?;
    let (seen, server) = start_receiver(port).await?;

    // Every failed run so far reaches the receiver (the retries back off to
    // at most a minute).
    let failed = run_ids(&c, "fails").await?;
    wait_for_notices(
        "a notice of every failed run",
        &seen,
        &failed,
        Duration::from_secs(90),
    )
    .await?;
    let cheers = wait_until(
        "a notice of a succeeded run of cheers",
        Duration::from_secs(20),
        || {
            let seen = seen.clone();
            async move {
                seen.lock()
                    .unwrap()
                    .iter()
                    .any(|(_, b)| b["jobName"] == "cheers")
            }
        },
    );
    cheers.await?;

    let notices = seen.lock().unwrap().clone();
    let mut by_job: BTreeMap<String, usize> = BTreeMap::new();
    for (header, body) in &notices {
        let job = body["jobName"].as_str().unwrap_or_default().to_string();
        *by_job.entry(job.clone()).or_default() += 1;
        assert_eq!(
            header.as_deref(),
            body["runId"].as_str(),
            "the run id header: {body}"
        );
        match job.as_str() {
            "fails" => {
                assert_eq!(body["status"], "failed", "{body}");
                assert_eq!(body["exitCode"], 3, "{body}");
                assert_eq!(body["worker"], "w1", "{body}");
                let text = body["text"].as_str().unwrap_or_default();
                assert!(text.contains("fails failed (exit 3)"), "{text}");
            }
            "cheers" => assert_eq!(body["status"], "succeeded", "{body}"),
            other => panic!("a notice of {other}, which asked for none: {body}"),
        }
    }
    assert!(!by_job.contains_key("fine"));

    // The silent webhook held nothing up: runs of `fails` went on every 2 s.
    let records = c
        .wait_for_records("fails", 6, Duration::from_secs(30))
        .await?;
    let mut ticks: Vec<i64> = records
        .iter()
        .map(|d| gdts_tests::int_field(d, "planTime"))
        .collect();
    ticks.sort();
    assert!(ticks.len() >= 6, "{ticks:?}");
    for pair in ticks.windows(2) {
        assert_eq!(
            pair[1] - pair[0],
            2000,
            "a tick of fails went unrun: {ticks:?}"
        );
    }
    // The worker counts its deliveries.
    server.abort();
    held.abort();
    Ok(())
}

/// A worker killed with notices undelivered (the receiver down) delivers
/// them after its next start: they wait in its outbox, not only in memory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notices_outlive_the_worker_that_queued_them() -> anyhow::Result<()> {
    let mut c = Cluster::with_workers("notifications_outbox", &["w1"]).await?;
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}/hook");
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()?;
    let r = http
        .put(format!("{}/api/v1/jobs/fails", c.manager_url))
        .json(&json!({"command": "exit 3", "cronExpr": "* * * * * * *",
                      "notify": {"webhooks": [url], "on": ["failed"]}}))
        .send()
        .await?;
    assert_eq!(r.status(), 201, "{}", r.text().await?);
    // Two failed runs while the receiver is down.
    c.wait_for_records("fails", 2, Duration::from_secs(30))
        .await?;
    // No new run may end (and be noticed by the next life) from here on.
    let r = http
        .post(format!("{}/api/v1/jobs/fails/pause", c.manager_url))
        .send()
        .await?;
    assert_eq!(r.status(), 200, "{}", r.text().await?);
    c.worker("w1").kill9();
    let failed = run_ids(&c, "fails").await?;

    let (seen, server) = start_receiver(port).await?;
    c.start_worker("w1", Default::default())?;
    wait_for_notices(
        "the restarted worker to deliver the notices its last life queued",
        &seen,
        &failed,
        Duration::from_secs(30),
    )
    .await?;
    server.abort();
    Ok(())
}
