//! Three workers, fifty jobs firing every second, twenty-odd seconds: every
//! (job, tick) in the window has exactly one run record.

use std::time::Duration;

use gdts_tests::{every_second_scenario, every_second_shell_job, Cluster, WorkerOptions};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_tick_runs_exactly_once_across_three_workers() -> anyhow::Result<()> {
    let mut c = Cluster::start("run_once").await?;
    for id in ["w1", "w2", "w3"] {
        c.start_worker(id, WorkerOptions::default())?;
    }
    c.wait_for_workers(&["w1", "w2", "w3"], Duration::from_secs(20))
        .await?;
    let report = every_second_scenario(&mut c, 50, 24, every_second_shell_job).await?;
    assert!(
        report.expected >= 50 * 18,
        "window too small: {}",
        report.expected
    );
    assert!(
        report.is_exactly_once(),
        "missing {:?}; duplicated {:?}",
        report.missing,
        report.duplicated
    );
    Ok(())
}
