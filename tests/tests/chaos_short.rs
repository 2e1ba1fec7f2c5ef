//! The short variant of `make chaos` (see `gdts_tests::chaos`): every kind of
//! fault once, at 40 ticks a second. No tick runs twice, every tick without
//! a record lies in a fault's documented window, and every claim ends with
//! a record (`lost` for runs of a killed worker).

use gdts_tests::chaos::{run_chaos, ChaosParams};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faults_never_run_a_tick_twice_nor_lose_a_record() -> anyhow::Result<()> {
    let report = run_chaos(&ChaosParams::short()).await?;
    println!("{}", report.markdown());
    assert!(report.passed(), "{}", report.markdown());
    Ok(())
}
