//! A short run of the benchmark's load scenario (`gdts_tests::bench`, what
//! `make bench` and `make soak` run for minutes): 100 jobs firing every
//! second on two workers, 20 s measured after an 8 s warm-up. Every tick of
//! the window has exactly one record, a successful run; none is missed or
//! duplicated.

use std::time::Duration;

use gdts_tests::bench::{run_load, LoadParams};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_soak_runs_every_tick_exactly_once() -> anyhow::Result<()> {
    let mut p = LoadParams::new("soak_short", 100, 2, 20);
    p.warmup = Duration::from_secs(8);
    let r = run_load(&p).await?;
    println!("{}", r.figures_markdown());
    if let Some(dir) = &r.log_dir {
        eprintln!("logs are in {}", dir.display());
    }
    let t = &r.ticks;
    assert_eq!(t.expected, 100 * 20, "the window's ticks");
    assert_eq!(t.duplicated, 0, "duplicated ticks: {:?}", t.examples);
    assert_eq!(t.unrecorded, 0, "ticks without a record: {:?}", t.examples);
    assert_eq!(
        t.missed_ticks(),
        0,
        "ticks not run: {:?} ({:?})",
        t.by_status,
        t.missed_reasons
    );
    assert_eq!(t.ok, t.expected, "every tick one successful run");
    assert!(
        r.fleet.list_lacking == 0,
        "a worker left /worker/list: {:?}",
        r.fleet.lacking_workers
    );
    Ok(())
}
