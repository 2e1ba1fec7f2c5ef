//! `kill -9` one of two workers while jobs run: the other keeps every tick,
//! and the dead one leaves `/worker/list` within its lease TTL.

use std::time::{Duration, Instant};

use gdts_tests::{now_ms, Cluster, TickReport, WorkerOptions};

const LEASE_TTL_SECS: u64 = 4;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn survivor_keeps_every_tick_and_the_dead_worker_leaves() -> anyhow::Result<()> {
    let mut c = Cluster::start("worker_death").await?;
    let options = WorkerOptions {
        env: vec![(
            "GDTS_WORKER_LEASE_TTL_SECS".into(),
            LEASE_TTL_SECS.to_string(),
        )],
        ..Default::default()
    };
    c.start_worker("doomed", options.clone())?;
    c.start_worker("survivor", options)?;
    c.wait_for_workers(&["doomed", "survivor"], Duration::from_secs(20))
        .await?;

    let names: Vec<String> = (0..10).map(|i| format!("job-{i}")).collect();
    for n in &names {
        c.save_job(n, "echo tick", "* * * * * * *").await?;
    }
    let start = now_ms() + 2000;
    tokio::time::sleep(Duration::from_secs(6)).await;

    c.worker("doomed").kill9();
    let killed_ms = now_ms();
    let killed_at = Instant::now();
    c.wait_for_workers(&["survivor"], Duration::from_secs(LEASE_TTL_SECS + 2))
        .await?;
    let gone_after = killed_at.elapsed();
    println!("dead worker left /worker/list after {gone_after:?}");
    assert!(gone_after <= Duration::from_millis(LEASE_TTL_SECS * 1000 + 1000));

    tokio::time::sleep(Duration::from_secs(10)).await;
    let end = now_ms() - 2000;
    for n in &names {
        c.delete_job(n).await?;
    }
    assert!(
        c.worker("survivor").terminate(Duration::from_secs(30)),
        "survivor stopped uncleanly"
    );

    let records = c.run_records().await?;
    // After the kill, the survivor alone has every tick.
    let after = TickReport::every_second(&records, &names, killed_ms + 1000, end);
    println!(
        "after the kill: {} ticks, missing {:?}",
        after.expected, after.missing
    );
    assert!(
        after.expected >= 10 * 8,
        "window too small: {}",
        after.expected
    );
    assert!(
        after.is_exactly_once(),
        "missing {:?}; duplicated {:?}",
        after.missing,
        after.duplicated
    );
    // Before it, nothing ran twice (the tick in flight at the kill may be lost).
    let before = TickReport::every_second(&records, &names, start, killed_ms - 1000);
    assert!(
        before.is_exactly_once(),
        "missing {:?}; duplicated {:?}",
        before.missing,
        before.duplicated
    );
    Ok(())
}
