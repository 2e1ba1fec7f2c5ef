//! Overlap policies across three workers: `forbid` never lets two runs of a
//! job overlap and logs each skipped tick; `replace` kills the running one
//! when the next tick starts.

use std::time::Duration;

use gdts_tests::{int_field, now_ms, records_of, save_job_json, Cluster, TickReport};
use serde_json::json;

async fn three_workers(name: &str) -> anyhow::Result<Cluster> {
    Cluster::with_workers(name, &["w1", "w2", "w3"]).await
}

async fn stop_workers(c: &mut Cluster) {
    for id in ["w1", "w2", "w3"] {
        assert!(
            c.worker(id).terminate(Duration::from_secs(30)),
            "{id} stopped uncleanly"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forbid_never_overlaps_and_logs_skips() -> anyhow::Result<()> {
    let mut c = three_workers("policy_forbid").await?;
    save_job_json(&c, &json!({"name": "slow", "command": "sleep 2.5", "cronExpr": "* * * * * * *", "overlap": "forbid"})).await?;
    let from = now_ms() + 2000;
    tokio::time::sleep(Duration::from_secs(12)).await;
    let to = now_ms() - 4000;
    c.delete_job("slow").await?;
    stop_workers(&mut c).await;

    let records = c.run_records().await?;
    let slow = records_of(&records, "slow");
    let mut ran: Vec<(i64, i64)> = slow
        .iter()
        .filter(|d| d.get_str("status") == Ok("succeeded"))
        .map(|d| (int_field(d, "startTime"), int_field(d, "endTime")))
        .collect();
    ran.sort();
    let skipped = slow
        .iter()
        .filter(|d| d.get_str("status") == Ok("skipped"))
        .count();
    println!("forbid: {} runs, {} skipped", ran.len(), skipped);
    for pair in ran.windows(2) {
        assert!(pair[1].0 >= pair[0].1, "runs overlap: {pair:?}");
    }
    assert!(
        ran.len() >= 3 && skipped >= 4,
        "{} runs, {skipped} skips",
        ran.len()
    );
    // Every tick has exactly one record: a run or a logged skip.
    let report = TickReport::every_second(&records, &["slow".to_string()], from, to);
    assert!(
        report.is_exactly_once(),
        "missing {:?}; duplicated {:?}",
        report.missing,
        report.duplicated
    );
    let skip = slow
        .iter()
        .find(|d| d.get_str("status") == Ok("skipped"))
        .unwrap();
    assert!(skip.get_str("err")?.contains("still in progress"), "{skip}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replace_kills_the_running_run_when_the_next_tick_starts() -> anyhow::Result<()> {
    let mut c = three_workers("policy_replace").await?;
    save_job_json(&c, &json!({"name": "long", "command": "sleep 30", "cronExpr": "*/3 * * * * * *", "overlap": "replace"})).await?;
    tokio::time::sleep(Duration::from_secs(11)).await;
    c.delete_job("long").await?;
    stop_workers(&mut c).await;

    let records = c.run_records().await?;
    let mut runs: Vec<_> = records_of(&records, "long");
    runs.sort_by_key(|d| int_field(d, "planTime"));
    println!("replace: {} runs", runs.len());
    assert!(runs.len() >= 3, "{runs:?}");
    // Every run but the last was replaced by the next one, as it started.
    for pair in runs.windows(2).take(runs.len().saturating_sub(2)) {
        let (old, new) = (pair[0], pair[1]);
        assert_eq!(old.get_str("status")?, "killed", "{old}");
        assert!(
            old.get_str("err")?.contains("replaced by a newer run"),
            "{old}"
        );
        let gap = int_field(old, "endTime") - int_field(new, "startTime");
        assert!(gap.abs() < 1500, "old ended {gap} ms from the new start");
    }
    Ok(())
}
