//! A worker cut off from etcd in the middle of a `forbid` run: its running
//! mark lives on its registration lease, so once the lease expires another
//! worker may start the next tick. The cut-off worker must have stopped its
//! run before that can happen, so the two runs never overlap; and when it
//! is back, it registers again and keeps working.

use std::time::Duration;

use gdts_tests::{int_field, records_of, save_job_json, wait_until, Cluster, WorkerOptions};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forbid_run_stops_before_its_lease_can_expire() -> anyhow::Result<()> {
    let mut c = Cluster::start("lease_lost_during_run").await?;
    let proxy = c.start_worker_behind_proxy("w1", 4).await?;
    c.wait_for_workers(&["w1"], Duration::from_secs(20)).await?;
    save_job_json(
        &c,
        &json!({"name": "guarded", "command": "sleep 20", "cronExpr": "*/2 * * * * * *",
                "overlap": "forbid"}),
    )
    .await?;
    // A skip record means a run is in progress (on w1, the only worker).
    let skipped = |records: &[mongodb::bson::Document]| {
        records_of(records, "guarded")
            .iter()
            .filter(|d| d.get_str("status") == Ok("skipped"))
            .count()
    };
    wait_until("w1's run to be going", Duration::from_secs(20), || async {
        c.run_records()
            .await
            .map(|r| skipped(&r) >= 1)
            .unwrap_or(false)
    })
    .await?;
    c.start_worker("w2", WorkerOptions::default())?;
    c.wait_for_workers(&["w1", "w2"], Duration::from_secs(20))
        .await?;

    // Cut w1 off: its lease expires, its mark with it, and w2 takes the ticks.
    proxy.partition(true);
    c.wait_for_workers(&["w2"], Duration::from_secs(15)).await?;
    let ran = |records: Vec<mongodb::bson::Document>| -> Vec<(i64, i64, String, String)> {
        records_of(&records, "guarded")
            .iter()
            .filter(|d| d.get_str("status") != Ok("skipped"))
            .map(|d| {
                (
                    int_field(d, "startTime"),
                    int_field(d, "endTime"),
                    d.get_str("worker").unwrap_or_default().to_string(),
                    d.get_str("err").unwrap_or_default().to_string(),
                )
            })
            .collect()
    };
    // w2's run starts (it has no record until it ends; its mark shows it).
    wait_for_mark(&c, "guarded", "w2").await?;
    proxy.partition(false);
    c.wait_for_workers(&["w1", "w2"], Duration::from_secs(20))
        .await?;
    c.post_form("/job/kill", &[("name", "guarded")]).await?;
    wait_until(
        "both runs to be recorded",
        Duration::from_secs(40),
        || async {
            c.run_records()
                .await
                .map(|r| ran(r).len() >= 2)
                .unwrap_or(false)
        },
    )
    .await?;
    c.delete_job("guarded").await?;

    let mut runs = ran(c.run_records().await?);
    runs.sort();
    println!("runs: {runs:?}");
    for pair in runs.windows(2) {
        assert!(pair[1].0 >= pair[0].1, "forbid runs overlap: {pair:?}");
    }
    let first = &runs[0];
    assert_eq!(first.2, "w1", "{runs:?}");
    assert!(
        first.3.contains("lease"),
        "w1's run should say it was stopped for its lease: {first:?}"
    );
    Ok(())
}

/// A running mark whose deletion fails (the worker's connection to etcd
/// cut as the run ends) is deleted once etcd answers again: the job's later ticks run,
/// rather than being skipped as "still in progress" for good.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mark_whose_deletion_failed_does_not_block_the_job() -> anyhow::Result<()> {
    let mut c = Cluster::start("mark_deletion_failed").await?;
    // Longer than the hold: the registration (and the mark) outlive it.
    let proxy = c.start_worker_behind_proxy("w1", 30).await?;
    c.wait_for_workers(&["w1"], Duration::from_secs(20)).await?;
    save_job_json(
        &c,
        &json!({"name": "short", "command": "sleep 2", "cronExpr": "*/4 * * * * * *",
                "overlap": "forbid"}),
    )
    .await?;
    c.first_record("short", Duration::from_secs(20)).await?;
    wait_for_mark(&c, "short", "w1").await?;
    // The run going now ends while the worker's connections to etcd are
    // cut: the deletion of its mark fails.
    proxy.sever(true);
    tokio::time::sleep(Duration::from_secs(5)).await;
    proxy.sever(false);
    let released = gdts_tests::now_ms();
    wait_until("a run after the cut", Duration::from_secs(30), || async {
        c.run_records()
            .await
            .map(|r| {
                records_of(&r, "short").iter().any(|d| {
                    d.get_str("status") == Ok("succeeded")
                        && int_field(d, "planTime") > released + 4000
                })
            })
            .unwrap_or(false)
    })
    .await?;
    c.delete_job("short").await?;
    Ok(())
}

/// Waits until `worker` has a running mark of `job` in etcd.
async fn wait_for_mark(c: &Cluster, job: &str, worker: &str) -> anyhow::Result<()> {
    let etcd = c.etcd.client().await;
    let running = gdts_tests::gdts_common::keys::Keys::new(&c.prefix)
        .running_prefix(&gdts_tests::gdts_common::JobName::parse(job)?);
    let named = format!("\"{worker}\"");
    wait_until(
        &format!("a run of {job} on {worker}"),
        Duration::from_secs(20),
        || {
            let (mut etcd, running, named) = (etcd.clone(), running.clone(), named.clone());
            async move {
                let options = etcd_client::GetOptions::new().with_prefix();
                etcd.get(running.as_str(), Some(options))
                    .await
                    .map(|r| {
                        r.kvs()
                            .iter()
                            .any(|kv| String::from_utf8_lossy(kv.value()).contains(&named))
                    })
                    .unwrap_or(false)
            }
        },
    )
    .await
}
