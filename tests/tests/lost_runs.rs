//! Every claimed tick ends with a record. A worker killed with -9 in the
//! middle of its runs never writes their records: the worker that finds
//! its claims orphaned writes a `lost` record for each, under the run's own
//! id, so the log never silently lacks a run; and a real record that comes
//! later (a cut-off worker that was not dead after all) replaces it.

use std::collections::HashMap;
use std::time::Duration;

use gdts_common::values::ClaimRecord;
use gdts_tests::{records_of, save_job_json, wait_until, Cluster, WorkerOptions};
use serde_json::json;

/// The claims `worker` holds now: run id -> claim record.
async fn claims_of(c: &Cluster, worker: &str) -> anyhow::Result<HashMap<String, ClaimRecord>> {
    let mut etcd = c.etcd.client().await;
    let keys = gdts_common::keys::Keys::new(&c.prefix);
    let prefix = keys.claims_prefix();
    let resp = etcd
        .get(
            prefix.as_str(),
            Some(etcd_client::GetOptions::new().with_prefix()),
        )
        .await?;
    let mut claims = HashMap::new();
    for kv in resp.kvs() {
        let Ok(record) = serde_json::from_slice::<ClaimRecord>(kv.value()) else {
            continue;
        };
        if record.worker != worker {
            continue;
        }
        let (job, tick) = keys
            .parse_claim_key(kv.key())
            .expect("a claim key under the claims prefix");
        claims.insert(
            gdts_common::log_record::LogRecord::run_id(job.as_str(), tick, kv.create_revision()),
            record,
        );
    }
    Ok(claims)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_workers_runs_get_lost_records() -> anyhow::Result<()> {
    let mut c = Cluster::with_workers("lost_runs", &["w1", "w2"]).await?;
    save_job_json(
        &c,
        &json!({"name": "long", "command": "sleep 30", "cronExpr": "* * * * * * *"}),
    )
    .await?;
    // Both workers have runs going.
    wait_until("runs on w1", Duration::from_secs(20), || async {
        claims_of(&c, "w1")
            .await
            .map(|m| m.len() >= 3)
            .unwrap_or(false)
    })
    .await?;
    c.worker("w1").kill9();
    let orphaned = claims_of(&c, "w1").await?;
    c.delete_job("long").await?;
    println!("w1 held {} claims when killed", orphaned.len());
    assert!(orphaned.len() >= 3);

    let by_id = |records: &[mongodb::bson::Document]| -> HashMap<String, String> {
        records_of(records, "long")
            .iter()
            .map(|d| {
                (
                    d.get_str("_id").unwrap_or_default().to_string(),
                    d.get_str("status").unwrap_or_default().to_string(),
                )
            })
            .collect()
    };
    wait_until(
        "a record for each claim of the killed worker",
        Duration::from_secs(60),
        || async {
            let records = c.run_records().await.unwrap_or_default();
            let have = by_id(&records);
            orphaned.keys().all(|id| have.contains_key(id))
        },
    )
    .await?;
    let records = c.run_records().await?;
    let have = by_id(&records);
    for id in orphaned.keys() {
        assert_eq!(have[id], "lost", "{id}");
    }
    let lost = records_of(&records, "long")
        .into_iter()
        .find(|d| d.get_str("status") == Ok("lost"))
        .expect("a lost record");
    assert_eq!(lost.get_str("worker")?, "w1");
    assert!(lost.get_str("err")?.contains("w1"), "{lost}");
    // One record per tick: none lost and also recorded otherwise.
    let mut ticks: Vec<i64> = records_of(&records, "long")
        .iter()
        .map(|d| gdts_tests::int_field(d, "planTime"))
        .collect();
    let n = ticks.len();
    ticks.sort();
    ticks.dedup();
    assert_eq!(ticks.len(), n, "a tick has two records");
    // w2 was not killed: its runs are not called lost.
    assert!(records_of(&records, "long")
        .iter()
        .all(|d| d.get_str("status") != Ok("lost") || d.get_str("worker") == Ok("w1")));
    Ok(())
}

/// Statuses of the records of `job` by run id.
fn statuses(records: &[mongodb::bson::Document], job: &str) -> HashMap<String, String> {
    records_of(records, job)
        .iter()
        .map(|d| {
            (
                d.get_str("_id").unwrap_or_default().to_string(),
                d.get_str("status").unwrap_or_default().to_string(),
            )
        })
        .collect()
}

/// A worker cut off from etcd past its lease looks dead: its runs get
/// `lost` records. It was not: when its runs end, their real records
/// replace the `lost` ones (same run id), so each tick keeps one record.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_record_replaces_a_lost_one() -> anyhow::Result<()> {
    let mut c = Cluster::start("lost_then_found").await?;
    let proxy = c.start_worker_behind_proxy("w1", 4).await?;
    c.start_worker("w2", WorkerOptions::default())?;
    c.wait_for_workers(&["w1", "w2"], Duration::from_secs(20))
        .await?;
    save_job_json(
        &c,
        &json!({"name": "mid", "command": "sleep 14", "cronExpr": "* * * * * * *"}),
    )
    .await?;
    wait_until("runs on w1", Duration::from_secs(20), || async {
        claims_of(&c, "w1")
            .await
            .map(|m| m.len() >= 3)
            .unwrap_or(false)
    })
    .await?;
    proxy.partition(true);
    let cut_off = claims_of(&c, "w1").await?;
    c.wait_for_workers(&["w2"], Duration::from_secs(15)).await?;
    wait_until(
        "lost records for w1's runs",
        Duration::from_secs(20),
        || async {
            let records = c.run_records().await.unwrap_or_default();
            let have = statuses(&records, "mid");
            cut_off
                .keys()
                .any(|id| have.get(id).map(String::as_str) == Some("lost"))
        },
    )
    .await?;
    proxy.partition(false);
    c.delete_job("mid").await?;
    wait_until(
        "w1's real records to replace the lost ones",
        Duration::from_secs(40),
        || async {
            let records = c.run_records().await.unwrap_or_default();
            let have = statuses(&records, "mid");
            cut_off
                .keys()
                .all(|id| have.get(id).map(String::as_str) == Some("succeeded"))
        },
    )
    .await?;
    let records = c.run_records().await?;
    let mut ticks: Vec<i64> = records_of(&records, "mid")
        .iter()
        .map(|d| gdts_tests::int_field(d, "planTime"))
        .collect();
    let n = ticks.len();
    ticks.sort();
    ticks.dedup();
    assert_eq!(ticks.len(), n, "a tick has two records");
    Ok(())
}

/// A run longer than a claim's lifetime keeps its claim alive (it is put
/// again every `CLAIM_REFRESH_EVERY`), so a worker killed in the middle of
/// it still leaves a claim for the sweep: the run gets its `lost` record.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_longer_than_a_claim_lives_still_gets_its_lost_record() -> anyhow::Result<()> {
    use gdts_common::timing::CLAIM_LEASE_TTL;
    let mut c = Cluster::start("lost_long_run").await?;
    c.start_worker("w1", WorkerOptions::default())?;
    c.wait_for_workers(&["w1"], Duration::from_secs(20)).await?;
    save_job_json(
        &c,
        &json!({"name": "marathon", "command": "sleep 600", "cronExpr": gdts_tests::once_soon(2)}),
    )
    .await?;
    wait_until("the run's claim", Duration::from_secs(20), || async {
        claims_of(&c, "w1")
            .await
            .map(|m| !m.is_empty())
            .unwrap_or(false)
    })
    .await?;
    let claimed = claims_of(&c, "w1").await?;
    c.start_worker("w2", WorkerOptions::default())?;
    // Past the longest a claim key lives without a refresh.
    tokio::time::sleep(CLAIM_LEASE_TTL + Duration::from_secs(3)).await;
    let still = claims_of(&c, "w1").await?;
    assert!(
        claimed.keys().all(|id| still.contains_key(id)),
        "the long run's claim expired: {claimed:?} then {still:?}"
    );
    c.worker("w1").kill9();
    c.delete_job("marathon").await?;
    wait_until(
        "the long run's lost record",
        Duration::from_secs(40),
        || async {
            let records = c.run_records().await.unwrap_or_default();
            let have = statuses(&records, "marathon");
            claimed
                .keys()
                .all(|id| have.get(id).map(String::as_str) == Some("lost"))
        },
    )
    .await?;
    Ok(())
}
