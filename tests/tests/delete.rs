//! A deleted job never runs again, including across an etcd restart under the
//! workers (their watches break and resync).

use std::time::Duration;

use gdts_tests::{claim_revision, record_key, records_of, wait_until, Cluster, WorkerOptions};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleted_jobs_stay_deleted_across_an_etcd_restart() -> anyhow::Result<()> {
    let mut c = Cluster::start("delete").await?;
    c.start_worker("w1", WorkerOptions::default())?;
    c.start_worker("w2", WorkerOptions::default())?;
    c.wait_for_workers(&["w1", "w2"], Duration::from_secs(20))
        .await?;
    for name in ["keep", "gone-before", "gone-after"] {
        c.save_job(name, "echo tick", "* * * * * * *").await?;
    }
    wait_until("gone-before to run", Duration::from_secs(15), || async {
        !runs_of(&c, "gone-before").await.is_empty()
    })
    .await?;

    c.delete_job("gone-before").await?;
    let deleted_before = c.etcd_revision().await?;

    c.etcd.restart().await?;
    // Delete while the workers are still reconnecting their watches.
    c.delete_job("gone-after").await?;
    let deleted_after = c.etcd_revision().await?;

    // The fleet recovered: `keep` runs again, on claims made after the restart.
    wait_until(
        "keep to run three times after the restart",
        Duration::from_secs(30),
        || async {
            runs_of(&c, "keep")
                .await
                .iter()
                .filter(|(_, _, run)| claim_revision(run) > deleted_after)
                .count()
                >= 3
        },
    )
    .await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    for id in ["w1", "w2"] {
        assert!(
            c.worker(id).terminate(Duration::from_secs(30)),
            "{id} stopped uncleanly"
        );
    }

    for (job, deleted_at) in [
        ("gone-before", deleted_before),
        ("gone-after", deleted_after),
    ] {
        let late: Vec<_> = runs_of(&c, job)
            .await
            .into_iter()
            .filter(|(_, _, run)| claim_revision(run) > deleted_at)
            .collect();
        assert!(late.is_empty(), "{job} ran after its deletion: {late:?}");
    }
    Ok(())
}

async fn runs_of(c: &Cluster, job: &str) -> Vec<(String, i64, String)> {
    c.run_records()
        .await
        .map(|r| records_of(&r, job).into_iter().map(record_key).collect())
        .unwrap_or_default()
}
