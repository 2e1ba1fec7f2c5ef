//! The Mongo server stopped for 10 s under load and started again: every run
//! of that period is in the log, once.

use std::time::Duration;

use gdts_tests::{now_ms, Cluster, TickReport, WorkerOptions};

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
