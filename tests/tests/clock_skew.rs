//! Run-once with skewed clocks: one worker under libfaketime at +1.5 s,
//! another at -1.5 s, a third on the real clock.

use std::time::Duration;

use gdts_tests::{every_second_scenario, every_second_shell_job, now_ms, Cluster, WorkerOptions};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_tick_runs_exactly_once_with_skewed_clocks() -> anyhow::Result<()> {
    let mut c = Cluster::start("clock_skew").await?;
    let skewed = |offset: &str| WorkerOptions {
        clock_offset: Some(offset.to_string()),
        ..Default::default()
    };
    let started = now_ms();
    c.start_worker("ahead", skewed("+1.5s"))?;
    c.start_worker("behind", skewed("-1.5s"))?;
    c.start_worker("true", WorkerOptions::default())?;
    c.wait_for_workers(&["ahead", "behind", "true"], Duration::from_secs(20))
        .await?;

    // The skew is real: each worker registered its own clock's start time.
    let mut etcd = c.etcd.client().await;
    for (id, lo, hi) in [("ahead", 1000, 2500), ("behind", -2000, -500)] {
        let key = gdts_tests::gdts_common::keys::Keys::new(&c.prefix).worker(id);
        let resp = etcd.get(key, None).await?;
        let info: serde_json::Value = serde_json::from_slice(resp.kvs()[0].value())?;
        let skew = info["startTime"].as_i64().unwrap() - started;
        assert!((lo..=hi).contains(&skew), "{id}: clock offset {skew} ms");
    }

    let report = every_second_scenario(&mut c, 50, 24, every_second_shell_job).await?;
    report.assert_exactly_once(50 * 18);
    Ok(())
}

/// A worker whose clock is far beyond the skew bound (two minutes ahead)
/// measures its offset against MongoDB's clock, shows itself as skewed in
/// the worker list, and claims nothing: every tick still runs exactly once,
/// on the worker with a sound clock.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_far_ahead_is_shown_as_skewed_and_claims_nothing() -> anyhow::Result<()> {
    let mut c = Cluster::start("clock_far_skew").await?;
    c.start_worker(
        "far-ahead",
        WorkerOptions {
            clock_offset: Some("+120s".into()),
            ..Default::default()
        },
    )?;
    c.start_worker("true", WorkerOptions::default())?;
    c.wait_for_workers(&["far-ahead", "true"], Duration::from_secs(20))
        .await?;
    let workers: serde_json::Value = reqwest::get(format!("{}/api/v1/workers", c.manager_url))
        .await?
        .json()
        .await?;
    let far = workers
        .as_array()
        .and_then(|w| w.iter().find(|w| w["id"] == "far-ahead"))
        .cloned()
        .unwrap_or_default();
    assert_eq!(far["clockSkewed"], true, "{far}");
    let offset = far["clockOffsetMs"].as_i64().unwrap_or_default();
    assert!(
        (-125_000..=-115_000).contains(&offset),
        "offset {offset} ms: {far}"
    );

    let report = every_second_scenario(&mut c, 10, 12, every_second_shell_job).await?;
    report.assert_exactly_once(10 * 6);
    Ok(())
}
