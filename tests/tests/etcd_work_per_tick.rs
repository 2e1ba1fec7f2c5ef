//! etcd work per tick does not grow with the fleet: the same load (100 jobs
//! every second) on one worker and on three, etcd's own count of the
//! requests it received (unary calls and stream messages) per tick stays
//! within 1.5 times the one-worker figure. Before ownership, every worker
//! sent a claim for every tick: three workers made three times the work.
//! (`make bench` measures the same with 1, 3 and 6 workers at 200 jobs.)

use std::time::Duration;

use gdts_tests::bench::{run_load, LoadParams, LoadReport};

fn per_tick(r: &LoadReport) -> f64 {
    r.etcd.requests / r.ticks.expected.max(1) as f64
}

async fn load(workers: usize) -> anyhow::Result<LoadReport> {
    let mut p = LoadParams::new(&format!("etcd_work_{workers}"), 100, workers, 15);
    p.warmup = Duration::from_secs(6);
    let r = run_load(&p).await?;
    assert_eq!(r.ticks.duplicated, 0, "{workers} workers: duplicated ticks");
    assert_eq!(r.ticks.missed_ticks(), 0, "{workers} workers: missed ticks");
    Ok(r)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_requests_per_tick_do_not_grow_with_the_fleet() -> anyhow::Result<()> {
    let one = load(1).await?;
    let three = load(3).await?;
    let (a, b) = (per_tick(&one), per_tick(&three));
    println!(
        "etcd requests per tick: 1 worker {a:.3} ({:?}), 3 workers {b:.3} ({:?}); ratio {:.2}",
        one.etcd.requests_by_method,
        three.etcd.requests_by_method,
        b / a
    );
    assert!(a > 0.0 && b > 0.0, "no etcd requests measured");
    assert!(
        b <= 1.5 * a,
        "three workers made {b:.3} requests per tick, one made {a:.3}"
    );
    Ok(())
}
