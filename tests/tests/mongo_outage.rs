//! The Mongo server stopped for 10 s under load and started again: every run
//! of that period is in the log, once.

use std::time::Duration;

use gdts_tests::{now_ms, record_key, wait_until, Cluster, FakeGcs, TickReport, WorkerOptions};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_during_a_mongo_outage_are_all_logged() -> anyhow::Result<()> {
    let mut c = Cluster::start("mongo_outage").await?;
    c.start_worker("w1", WorkerOptions::default())?;
    c.start_worker("w2", WorkerOptions::default())?;
    c.wait_for_workers(&["w1", "w2"], Duration::from_secs(20))
        .await?;
    let names: Vec<String> = (0..10).map(|i| format!("job-{i}")).collect();
    for n in &names {
        c.save_job(n, "echo tick", "* * * * * * *").await?;
    }
    let start = now_ms() + 2000;
    tokio::time::sleep(Duration::from_secs(4)).await;

    c.mongo.stop();
    let outage_from = now_ms();
    tokio::time::sleep(Duration::from_secs(10)).await;
    c.mongo.start_again().await?;
    let outage_to = now_ms();
    println!("mongo was down for {} ms", outage_to - outage_from);

    tokio::time::sleep(Duration::from_secs(5)).await;
    let end = now_ms() - 2000;
    for n in &names {
        c.delete_job(n).await?;
    }
    for id in ["w1", "w2"] {
        assert!(
            c.worker(id).terminate(Duration::from_secs(60)),
            "{id} stopped uncleanly"
        );
    }
    let records = c.run_records().await?;
    let report = TickReport::every_second(&records, &names, start, end);
    let during = TickReport::every_second(&records, &names, outage_from, outage_to);
    println!(
        "{} records; window {} ticks ({} during the outage); missing {}",
        records.len(),
        report.expected,
        during.expected,
        report.missing.len()
    );
    assert!(
        during.expected >= 10 * 10,
        "the outage window holds too few ticks"
    );
    assert!(
        report.is_exactly_once(),
        "missing {:?}; duplicated {:?}",
        report.missing,
        report.duplicated
    );
    Ok(())
}

/// Waits until MongoDB holds a record of each tick in `ticks`.
async fn wait_for_ticks_logged(c: &Cluster, ticks: &[i64], what: &str) -> anyhow::Result<()> {
    wait_until(what, Duration::from_secs(30), || async {
        let Ok(records) = c.run_records().await else {
            return false;
        };
        let have: std::collections::HashSet<i64> =
            records.iter().map(|d| record_key(d).1).collect();
        ticks.iter().all(|t| have.contains(t))
    })
    .await
}

/// Starts worker `id`, runs an every-second job until records are written,
/// stops MongoDB, lets the job run on for 3 s (records it cannot write),
/// deletes the job and stops the worker, which must stop cleanly (spooling).
async fn run_until_mongo_stops_then_stop(
    c: &mut Cluster,
    id: &str,
    options: WorkerOptions,
) -> anyhow::Result<()> {
    c.start_worker(id, options)?;
    c.wait_for_workers(&[id], Duration::from_secs(20)).await?;
    c.save_job("spooled", "echo tick", "* * * * * * *").await?;
    wait_until("first records", Duration::from_secs(15), || async {
        c.run_records().await.map(|r| r.len() >= 2).unwrap_or(false)
    })
    .await?;

    c.mongo.stop();
    tokio::time::sleep(Duration::from_secs(3)).await;
    c.delete_job("spooled").await?;
    // Stopped while journaling (it took 3 s of refusals): the journal's
    // probes of MongoDB, which outlast their interval while it is down, must
    // still let the writer see the shutdown (it did not, and never stopped).
    let http = reqwest::Client::new();
    let workers = format!("{}/api/v1/workers", c.manager_url);
    wait_until("the worker to journal", Duration::from_secs(20), || {
        let req = http.get(&workers).send();
        async move {
            match req.await {
                Ok(r) => r
                    .json::<serde_json::Value>()
                    .await
                    .map(|v| v[0]["recordsBlocked"] == true)
                    .unwrap_or(false),
                Err(_) => false,
            }
        }
    })
    .await?;
    assert!(
        c.worker(id).terminate(Duration::from_secs(30)),
        "{id} should stop cleanly after spooling"
    );
    Ok(())
}

/// Records a worker could not write before it stopped (MongoDB down past
/// the flush timeout) are spooled to disk and written by its next start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_unwritten_at_shutdown_are_spooled_and_replayed() -> anyhow::Result<()> {
    let mut c = Cluster::start("mongo_spool").await?;
    let spool_dir = c.dir.path().join("spool");
    let options = WorkerOptions {
        env: vec![
            ("GDTS_LOG_FLUSH_TIMEOUT_MS".into(), "1000".into()),
            ("GDTS_SPOOL_DIR".into(), spool_dir.display().to_string()),
        ],
        ..Default::default()
    };
    run_until_mongo_stops_then_stop(&mut c, "w1", options.clone()).await?;
    let files: Vec<_> = std::fs::read_dir(&spool_dir)?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .collect();
    // The journal (one file per batch once MongoDB had refused for 3 s)
    // and the records left at the flush timeout.
    assert!(!files.is_empty(), "nothing spooled");
    let mut spooled: Vec<i64> = Vec::new();
    for file in &files {
        spooled.extend(std::fs::read_to_string(file)?.lines().map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["planTime"]
                .as_i64()
                .unwrap()
        }));
    }
    assert!(spooled.len() >= 2, "only {} records spooled", spooled.len());

    c.mongo.start_again().await?;
    c.start_worker("w1", options)?;
    wait_for_ticks_logged(&c, &spooled, "the spooled records to be written").await?;
    wait_until(
        "the spool files to be removed",
        Duration::from_secs(10),
        || async { files.iter().all(|f| !f.exists()) },
    )
    .await?;
    Ok(())
}

/// With a bucket, records a stopping worker could not write go to the bucket
/// (not only its own disk), and another worker writes them: the first one's
/// machine may be gone for good (a scale-in) and its id never come back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_spooled_to_the_bucket_are_written_by_another_worker() -> anyhow::Result<()> {
    let mut c = Cluster::start("mongo_spool_bucket").await?;
    let bucket = "gdts-test-spool";
    let gcs = FakeGcs::start(c.dir.path(), bucket).await?;
    let dir = c.dir.path().to_path_buf();
    let options = |spool: &str| WorkerOptions {
        env: vec![
            ("GDTS_LOG_FLUSH_TIMEOUT_MS".into(), "1000".into()),
            (
                "GDTS_SPOOL_DIR".into(),
                dir.join(spool).display().to_string(),
            ),
            ("GDTS_GCS_BUCKET".into(), bucket.into()),
            ("GDTS_GCS_ENDPOINT".into(), gcs.endpoint.clone()),
        ],
        ..Default::default()
    };
    run_until_mongo_stops_then_stop(&mut c, "gone", options("spool-gone")).await?;
    let on_disk: Vec<_> = std::fs::read_dir(dir.join("spool-gone"))
        .map(|d| d.filter_map(|e| e.ok()).map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(
        on_disk.is_empty(),
        "the spool should have left the disk: {on_disk:?}"
    );

    let http = reqwest::Client::new();
    let list = format!("{}/storage/v1/b/{bucket}/o?prefix=spool/", gcs.endpoint);
    let listing: serde_json::Value = http.get(&list).send().await?.json().await?;
    let objects: Vec<String> = listing["items"]
        .as_array()
        .map(|items| {
            items
                .iter()
                .filter_map(|o| o["name"].as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    assert!(
        !objects.is_empty(),
        "no spool object in the bucket: {listing}"
    );
    let mut spooled: Vec<i64> = Vec::new();
    for object in &objects {
        let url = format!(
            "{}/storage/v1/b/{bucket}/o/{}?alt=media",
            gcs.endpoint,
            object.replace('/', "%2F")
        );
        spooled.extend(http.get(&url).send().await?.text().await?.lines().map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["planTime"]
                .as_i64()
                .unwrap()
        }));
    }
    assert!(spooled.len() >= 2, "only {} records spooled", spooled.len());

    c.mongo.start_again().await?;
    c.start_worker("other", options("spool-other"))?;
    wait_for_ticks_logged(&c, &spooled, "another worker to write the spooled records").await?;
    wait_until(
        "the spool objects to be deleted",
        Duration::from_secs(10),
        || async {
            let Ok(resp) = http.get(&list).send().await else {
                return false;
            };
            let listing: serde_json::Value = resp.json().await.unwrap_or_default();
            listing["items"]
                .as_array()
                .is_none_or(|items| items.is_empty())
        },
    )
    .await?;
    let records = c.run_records().await?;
    let mut seen = std::collections::HashSet::new();
    for d in &records {
        assert!(seen.insert(record_key(d)), "a record written twice: {d:?}");
    }
    Ok(())
}

/// One worker cut off from MongoDB: it journals its records to disk, says
/// so in its registration, and takes no ticks while the other can write;
/// once MongoDB is back its journal is written and it takes ticks again.
/// Every tick has one record.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_that_cannot_write_records_hands_its_ticks_over() -> anyhow::Result<()> {
    let mut c = Cluster::start("records_blocked").await?;
    let mongo = c
        .mongo
        .uri
        .trim_start_matches("mongodb://")
        .trim_end_matches('/')
        .to_string();
    let proxy = gdts_tests::ReplyHoldProxy::start(&mongo).await?;
    let spool_dir = c.dir.path().join("spool-w1");
    c.start_worker(
        "w1",
        WorkerOptions {
            env: vec![
                (
                    "GDTS_MONGO_URI".into(),
                    format!(
                        "{}/?directConnection=true",
                        proxy.url.replace("http://", "mongodb://")
                    ),
                ),
                ("GDTS_SPOOL_DIR".into(), spool_dir.display().to_string()),
            ],
            ..Default::default()
        },
    )?;
    c.start_worker("w2", WorkerOptions::default())?;
    c.wait_for_workers(&["w1", "w2"], Duration::from_secs(20))
        .await?;
    let names: Vec<String> = (0..6).map(|i| format!("job-{i}")).collect();
    for n in &names {
        c.save_job(n, "echo tick", "* * * * * * *").await?;
    }
    let start = now_ms() + 2000;
    tokio::time::sleep(Duration::from_secs(4)).await;

    let blocked = |want: bool| {
        let c = &c;
        async move {
            let url = format!("{}/api/v1/workers", c.manager_url);
            reqwest::get(url)
                .await
                .ok()?
                .text()
                .await
                .ok()
                .is_some_and(|text| {
                    let w1 = text.find("\"w1\"").map(|i| &text[i..]).unwrap_or("");
                    let w1 = &w1[..w1.find('}').unwrap_or(w1.len())];
                    w1.contains("\"recordsBlocked\":true") == want
                })
                .then_some(())
        }
    };
    proxy.sever(true);
    let cut_at = now_ms();
    wait_until(
        "w1 to say its records are blocked",
        Duration::from_secs(15),
        || async { blocked(true).await.is_some() },
    )
    .await?;
    let blocked_at = now_ms();
    println!("w1 blocked {} ms after the cut", blocked_at - cut_at);
    tokio::time::sleep(Duration::from_secs(8)).await;
    let journal_files = std::fs::read_dir(&spool_dir)
        .map(|d| {
            d.filter_map(|e| e.ok())
                .filter(|e| e.file_name().to_string_lossy().ends_with(".jsonl"))
                .count()
        })
        .unwrap_or(0);
    proxy.sever(false);
    let healed_at = now_ms();
    wait_until(
        "w1 to take records again",
        Duration::from_secs(20),
        || async { blocked(false).await.is_some() },
    )
    .await?;
    tokio::time::sleep(Duration::from_secs(4)).await;
    let end = now_ms() - 2000;
    for n in &names {
        c.delete_job(n).await?;
    }
    for id in ["w1", "w2"] {
        assert!(
            c.worker(id).terminate(Duration::from_secs(60)),
            "{id} stopped uncleanly"
        );
    }
    let records = c.run_records().await?;
    TickReport::every_second(&records, &names, start, end).assert_exactly_once(60);
    assert!(
        journal_files > 0,
        "w1 journaled nothing to {}",
        spool_dir.display()
    );
    // While blocked (after the others saw it), w1 took no ticks.
    let taken: Vec<i64> = records
        .iter()
        .filter(|d| d.get_str("worker") == Ok("w1"))
        .map(|d| gdts_tests::int_field(d, "planTime"))
        .filter(|t| *t > blocked_at + 2000 && *t < healed_at)
        .collect();
    assert!(taken.is_empty(), "w1 ran ticks while blocked: {taken:?}");
    // Its journal was written.
    assert!(
        records.iter().any(|d| d.get_str("worker") == Ok("w1")
            && (cut_at..blocked_at).contains(&gdts_tests::int_field(d, "planTime"))),
        "w1's journaled records are missing"
    );
    Ok(())
}
