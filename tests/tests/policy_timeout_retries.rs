//! `timeoutSeconds` kills a run and logs it as timed out; `retries` runs the
//! right number of attempts, once each, with growing gaps.

use std::time::Duration;

use gdts_tests::{
    int_field, once_soon, records_of, save_job_json, wait_until, Cluster, WorkerOptions,
};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeouts_and_retries() -> anyhow::Result<()> {
    let mut c = Cluster::start("policy_timeout_retries").await?;
    c.start_worker("w1", WorkerOptions::default())?;
    c.start_worker("w2", WorkerOptions::default())?;
    c.wait_for_workers(&["w1", "w2"], Duration::from_secs(20))
        .await?;
    let cron = once_soon(3);
    save_job_json(
        &c,
        &json!({"name": "stuck", "command": "sleep 30", "cronExpr": cron, "timeoutSeconds": 1}),
    )
    .await?;
    save_job_json(&c, &json!({"name": "flaky", "command": "echo try; exit 3", "cronExpr": cron, "retries": 3, "retryBackoffSeconds": 1})).await?;

    wait_until(
        "four attempts of flaky and the timeout",
        Duration::from_secs(40),
        || async {
            c.run_records()
                .await
                .map(|r| records_of(&r, "flaky").len() >= 4 && !records_of(&r, "stuck").is_empty())
                .unwrap_or(false)
        },
    )
    .await?;
    // A retry more than asked for would show up within its backoff.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let records = c.run_records().await?;

    let stuck = records_of(&records, "stuck");
    assert_eq!(
        stuck.len(),
        1,
        "a timed-out run is not retried without retries"
    );
    let t = stuck[0];
    assert_eq!(t.get_str("status")?, "timed-out", "{t}");
    assert!(t.get_str("err")?.starts_with("timed out after 1s"), "{t}");
    let lasted = int_field(t, "endTime") - int_field(t, "startTime");
    assert!((900..3000).contains(&lasted), "ran {lasted} ms");

    let mut flaky = records_of(&records, "flaky");
    flaky.sort_by_key(|d| int_field(d, "attempt"));
    let attempts: Vec<i64> = flaky.iter().map(|d| int_field(d, "attempt")).collect();
    assert_eq!(attempts, vec![1, 2, 3, 4], "each attempt exactly once");
    let plan = int_field(flaky[0], "planTime");
    assert!(flaky
        .iter()
        .all(|d| int_field(d, "planTime") == plan && d.get_str("status") == Ok("failed")));
    let gaps: Vec<i64> = flaky
        .windows(2)
        .map(|w| int_field(w[1], "startTime") - int_field(w[0], "endTime"))
        .collect();
    println!("retry gaps: {gaps:?} ms");
    // 1 s, 2 s, 4 s, each ±20 %.
    for (gap, want) in gaps.iter().zip([1000, 2000, 4000]) {
        assert!(
            *gap >= want * 8 / 10 && *gap <= want * 12 / 10 + 500,
            "gap {gap} for {want}"
        );
    }
    Ok(())
}

/// A kill request stops a run's retries too: one that arrives while a
/// failed attempt waits out its backoff leaves no further attempt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_during_the_retry_backoff_stops_the_retries() -> anyhow::Result<()> {
    let mut c = Cluster::start("retry_kill").await?;
    c.start_worker("w1", WorkerOptions::default())?;
    c.wait_for_workers(&["w1"], Duration::from_secs(20)).await?;
    save_job_json(&c, &json!({"name": "flaky", "command": "exit 3", "cronExpr": once_soon(2), "retries": 3, "retryBackoffSeconds": 4})).await?;
    c.first_record("flaky", Duration::from_secs(20)).await?;
    let r = c.post_form("/job/kill", &[("name", "flaky")]).await?;
    assert_eq!(r.errno, 0, "{}", r.msg);
    // The retry was due 4 s (±20 %) after the first attempt: wait past it.
    // (Nothing to poll for: what is checked is that nothing happens.)
    tokio::time::sleep(Duration::from_secs(7)).await;
    let records = c.run_records().await?;
    let attempts = records_of(&records, "flaky");
    assert_eq!(
        attempts.len(),
        1,
        "a retry ran after the kill: {attempts:?}"
    );
    Ok(())
}
