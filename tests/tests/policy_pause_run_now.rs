//! Pause and resume without resaving; run-now, and run-now under `forbid`
//! while a run is in progress.

use std::time::Duration;

use gdts_tests::{int_field, records_of, save_job_json, wait_until, Cluster, WorkerOptions};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_resume_and_run_now() -> anyhow::Result<()> {
    let mut c = Cluster::start("policy_pause_run_now").await?;
    c.start_worker("w1", WorkerOptions::default())?;
    c.start_worker("w2", WorkerOptions::default())?;
    c.wait_for_workers(&["w1", "w2"], Duration::from_secs(20))
        .await?;
    let count = |job: &'static str| {
        let c = &c;
        async move {
            c.run_records()
                .await
                .map(|r| records_of(&r, job).len())
                .unwrap_or(0)
        }
    };

    // Pause and resume.
    save_job_json(
        &c,
        &json!({"name": "ticker", "command": "echo tick", "cronExpr": "* * * * * * *"}),
    )
    .await?;
    wait_until("ticker to run", Duration::from_secs(15), || async {
        count("ticker").await >= 2
    })
    .await?;
    let r = c.post_form("/job/pause", &[("name", "ticker")]).await?;
    assert_eq!(
        (r.errno, r.data["paused"].clone()),
        (0, json!(true)),
        "{}",
        r.msg
    );
    assert_eq!(
        r.data["command"], "echo tick",
        "pausing keeps the definition"
    );
    tokio::time::sleep(Duration::from_secs(2)).await; // runs already claimed land
    let paused_at = count("ticker").await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(count("ticker").await, paused_at, "a paused job fired");
    let r = c.post_form("/job/resume", &[("name", "ticker")]).await?;
    assert_eq!(
        (r.errno, r.data.get("paused").cloned()),
        (0, None),
        "{}",
        r.msg
    );
    wait_until("ticker to run again", Duration::from_secs(15), || async {
        count("ticker").await >= paused_at + 2
    })
    .await?;
    c.delete_job("ticker").await?;
    let r = c
        .post_form("/job/pause", &[("name", "no-such-job")])
        .await?;
    assert_eq!(r.errno, -1);
    assert!(r.msg.contains("no job named"), "{}", r.msg);

    // Run now: a job that would fire only on 1 January.
    save_job_json(
        &c,
        &json!({"name": "yearly", "command": "echo now", "cronExpr": "@yearly"}),
    )
    .await?;
    let r = c.post_form("/job/run", &[("name", "yearly")]).await?;
    assert_eq!(r.errno, 0, "{}", r.msg);
    wait_until("the manual run", Duration::from_secs(15), || async {
        count("yearly").await == 1
    })
    .await?;
    let records = c.run_records().await?;
    let manual = records_of(&records, "yearly")[0];
    assert_eq!(manual.get_str("trigger")?, "manual");
    assert_eq!(manual.get_str("output")?, "now\n");
    assert_eq!(
        int_field(manual, "planTime"),
        r.data["requestedAt"].as_i64().unwrap()
    );
    let r = c.post_form("/job/run", &[("name", "no-such-job")]).await?;
    assert_eq!(r.errno, -1);

    // Run now under forbid while a run is going: the second is a logged skip.
    save_job_json(&c, &json!({"name": "exclusive", "command": "sleep 4", "cronExpr": "@yearly", "overlap": "forbid"})).await?;
    assert_eq!(
        c.post_form("/job/run", &[("name", "exclusive")])
            .await?
            .errno,
        0
    );
    wait_until(
        "the first manual run to start",
        Duration::from_secs(10),
        || async {
            let mut etcd = c.etcd.client().await;
            let prefix = gdts_tests::gdts_common::keys::Keys::new(&c.prefix).running_prefix(
                &gdts_tests::gdts_common::JobName::parse("exclusive").expect("a valid name"),
            );
            etcd.get(
                prefix,
                Some(
                    etcd_client::GetOptions::new()
                        .with_prefix()
                        .with_count_only(),
                ),
            )
            .await
            .map(|r| r.count() == 1)
            .unwrap_or(false)
        },
    )
    .await?;
    assert_eq!(
        c.post_form("/job/run", &[("name", "exclusive")])
            .await?
            .errno,
        0
    );
    wait_until(
        "both manual requests recorded",
        Duration::from_secs(15),
        || async { count("exclusive").await == 2 },
    )
    .await?;
    let records = c.run_records().await?;
    let mut statuses: Vec<&str> = records_of(&records, "exclusive")
        .iter()
        .map(|d| d.get_str("status").unwrap_or("?"))
        .collect();
    statuses.sort();
    assert_eq!(statuses, vec!["skipped", "succeeded"]);
    assert!(records_of(&records, "exclusive")
        .iter()
        .all(|d| d.get_str("trigger") == Ok("manual")));
    Ok(())
}

/// A run-now request the worker sees before the job itself (its job watch
/// lags its run-now watch) is kept until the job arrives, then run once:
/// the API had already answered 202 for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_now_seen_before_its_job_still_runs() -> anyhow::Result<()> {
    use gdts_tests::gdts_common::keys::Keys;
    use gdts_tests::gdts_common::values::RunNowRequest;
    use gdts_tests::gdts_common::JobName;

    let mut c = Cluster::start("run_now_lag").await?;
    c.start_worker("w1", WorkerOptions::default())?;
    c.wait_for_workers(&["w1"], Duration::from_secs(20)).await?;
    // The request first, as the worker would see it with its job watch behind.
    let mut etcd = c.etcd.client().await;
    let lease = etcd.lease_grant(30, None).await?.id();
    let requested_at = gdts_tests::now_ms();
    let key = Keys::new(&c.prefix).run_now(
        &JobName::parse("late")?,
        &format!("{requested_at}-{lease:x}"),
    );
    let value = serde_json::to_vec(&RunNowRequest { requested_at })?;
    etcd.put(
        key,
        value,
        Some(etcd_client::PutOptions::new().with_lease(lease)),
    )
    .await?;
    // Time for the worker to take the request while it knows no such job
    // (nothing to poll: it only logs at debug level without the fix).
    tokio::time::sleep(Duration::from_secs(1)).await;
    save_job_json(
        &c,
        &json!({"name": "late", "command": "echo manual", "cronExpr": "@yearly"}),
    )
    .await?;
    c.first_record("late", Duration::from_secs(20)).await?;
    let records = c.run_records().await?;
    let runs = records_of(&records, "late");
    assert_eq!(runs.len(), 1, "{runs:?}");
    assert_eq!(runs[0].get_str("trigger")?, "manual");
    assert_eq!(int_field(runs[0], "planTime"), requested_at);
    Ok(())
}
