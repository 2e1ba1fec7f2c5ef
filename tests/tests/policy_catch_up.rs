//! Catch-up: all workers stopped for 10 s, then started again. A job with
//! `catchUpSeconds` runs each missed tick exactly once; a job without it
//! runs none of them. And with etcd down while the worker stays up, the
//! ticks whose claims failed are caught up once it is back.

use std::time::Duration;

use gdts_tests::{
    int_field, now_ms, records_of, save_job_json, wait_until, Cluster, TickReport, WorkerOptions,
};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missed_ticks_run_once_each_only_with_catch_up() -> anyhow::Result<()> {
    let mut c = Cluster::with_workers("policy_catch_up", &["w1", "w2"]).await?;
    save_job_json(&c, &json!({"name": "catch", "command": "echo tick", "cronExpr": "* * * * * * *", "catchUpSeconds": 60})).await?;
    save_job_json(
        &c,
        &json!({"name": "skip", "command": "echo tick", "cronExpr": "* * * * * * *"}),
    )
    .await?;
    let from = now_ms() + 2000;
    tokio::time::sleep(Duration::from_secs(5)).await;

    for id in ["w1", "w2"] {
        assert!(
            c.worker(id).terminate(Duration::from_secs(30)),
            "{id} stopped uncleanly"
        );
    }
    let down_from = now_ms();
    tokio::time::sleep(Duration::from_secs(10)).await;
    let down_to = now_ms();
    for id in ["w1", "w2"] {
        c.start_worker(id, WorkerOptions::default())?;
    }
    c.wait_for_workers(&["w1", "w2"], Duration::from_secs(20))
        .await?;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let to = now_ms() - 2000;
    c.delete_job("catch").await?;
    c.delete_job("skip").await?;
    for id in ["w1", "w2"] {
        assert!(
            c.worker(id).terminate(Duration::from_secs(30)),
            "{id} stopped uncleanly"
        );
    }

    let records = c.run_records().await?;
    let report = TickReport::every_second(&records, &["catch".to_string()], from, to);
    let caught = records_of(&records, "catch")
        .iter()
        .filter(|d| d.get_str("trigger") == Ok("catch-up"))
        .count();
    println!(
        "catch-up: {} ticks in the window, {caught} caught up, missing {:?}, duplicated {:?}",
        report.expected, report.missing, report.duplicated
    );
    assert!(
        report.is_exactly_once(),
        "missing {:?}; duplicated {:?}",
        report.missing,
        report.duplicated
    );
    assert!(caught >= 8, "only {caught} ticks were caught up");

    // Without catch-up, the ticks of the outage (after the last claim before
    // the stop, before the start) did not run.
    let during: Vec<i64> = records_of(&records, "skip")
        .iter()
        .map(|d| int_field(d, "planTime"))
        .filter(|t| *t > down_from + 1000 && *t < down_to - 1000)
        .collect();
    assert!(
        during.is_empty(),
        "ticks of the outage ran without catch-up: {during:?}"
    );
    Ok(())
}

/// Ticks older than the claim keys can vouch for are caught up only above
/// the job's watermark: with the watermark 40 s back, two workers starting
/// together run each tick after it once, and none at or before it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn old_ticks_are_caught_up_only_above_the_watermark() -> anyhow::Result<()> {
    let mut c = Cluster::start("policy_catch_up_watermark").await?;
    save_job_json(&c, &json!({"name": "deep", "command": "echo tick", "cronExpr": "* * * * * * *", "catchUpSeconds": 60})).await?;
    // As if the fleet had run every tick up to 40 s ago, then gone down.
    let mark = (now_ms() - 40_000) / 1000 * 1000;
    let mut etcd = c.etcd.client().await;
    etcd.put(
        gdts_tests::gdts_common::keys::Keys::new(&c.prefix)
            .last_tick(&gdts_tests::gdts_common::JobName::parse("deep")?),
        gdts_tests::gdts_common::keys::watermark_value(mark),
        None,
    )
    .await?;

    let started = now_ms();
    for id in ["w1", "w2"] {
        c.start_worker(id, WorkerOptions::default())?;
    }
    c.wait_for_workers(&["w1", "w2"], Duration::from_secs(20))
        .await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    c.delete_job("deep").await?;
    for id in ["w1", "w2"] {
        assert!(
            c.worker(id).terminate(Duration::from_secs(30)),
            "{id} stopped uncleanly"
        );
    }
    let records = c.run_records().await?;
    let ticks: Vec<i64> = records_of(&records, "deep")
        .iter()
        .map(|d| int_field(d, "planTime"))
        .collect();
    assert!(
        ticks.iter().all(|t| *t > mark),
        "a tick at or before the watermark ran"
    );
    let report = TickReport::every_second(&records, &["deep".to_string()], mark + 1000, started);
    println!(
        "watermark catch-up: {} ticks after the mark, missing {:?}",
        report.expected, report.missing
    );
    report.assert_exactly_once(38);
    Ok(())
}

/// etcd down for 15 s while the worker stays up: the ticks whose claims
/// failed meanwhile are caught up once etcd is back, each exactly once, in
/// order (the oldest already past the age where the watermark guards them).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ticks_missed_in_an_etcd_outage_are_caught_up() -> anyhow::Result<()> {
    let mut c = Cluster::with_workers("policy_catch_up_etcd_outage", &["w1"]).await?;
    save_job_json(&c, &json!({"name": "catch", "command": "echo tick", "cronExpr": "* * * * * * *", "catchUpSeconds": 60})).await?;
    save_job_json(
        &c,
        &json!({"name": "skip", "command": "echo tick", "cronExpr": "* * * * * * *"}),
    )
    .await?;
    let from = now_ms() + 2000;
    tokio::time::sleep(Duration::from_secs(5)).await;
    c.etcd.stop();
    let down_from = now_ms();
    tokio::time::sleep(Duration::from_secs(15)).await;
    c.etcd.start_again().await?;
    let down_to = now_ms();
    let outage_recorded = || async {
        let records = c.run_records().await.unwrap_or_default();
        TickReport::every_second(&records, &["catch".to_string()], from, down_to)
            .missing
            .is_empty()
    };
    // Failing here leaves the assertions below to say what is missing.
    let _ = wait_until(
        "the outage's ticks",
        Duration::from_secs(60),
        outage_recorded,
    )
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let to = now_ms() - 2000;
    c.delete_job("catch").await?;
    c.delete_job("skip").await?;
    assert!(
        c.worker("w1").terminate(Duration::from_secs(30)),
        "w1 stopped uncleanly"
    );

    let records = c.run_records().await?;
    let report = TickReport::every_second(&records, &["catch".to_string()], from, to);
    let in_outage = |d: &&&mongodb::bson::Document| {
        (down_from + 1000..down_to - 1000).contains(&int_field(d, "planTime"))
    };
    let caught = records_of(&records, "catch")
        .iter()
        .filter(in_outage)
        .filter(|d| d.get_str("status") == Ok("succeeded"))
        .count();
    let skipped_ran = records_of(&records, "skip")
        .iter()
        .filter(in_outage)
        .filter(|d| d.get_str("status") == Ok("succeeded"))
        .count();
    println!(
        "etcd outage: {} ticks, {caught} caught up in the outage, missing {:?}, duplicated {:?}; \
         {skipped_ran} outage ticks of the job without catch-up ran",
        report.expected, report.missing, report.duplicated
    );
    report.assert_exactly_once(20);
    assert!(caught >= 12, "{caught} outage ticks caught up");
    Ok(())
}
