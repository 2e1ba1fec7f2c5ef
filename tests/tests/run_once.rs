//! Three workers, fifty jobs firing every second, twenty-odd seconds: every
//! (job, tick) in the window has exactly one run record.

use gdts_tests::{every_second_scenario, every_second_shell_job, Cluster};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_tick_runs_exactly_once_across_three_workers() -> anyhow::Result<()> {
    let mut c = Cluster::with_workers("run_once", &["w1", "w2", "w3"]).await?;
    let report = every_second_scenario(&mut c, 50, 24, every_second_shell_job).await?;
    report.assert_exactly_once(50 * 18);
    Ok(())
}
