//! Run-once holds for container jobs across three workers.

use std::time::Duration;

use gdts_tests::{
    containers_of, docker_or_skip, every_second_scenario, wait_until, Cluster, WorkerOptions,
    JOB_IMAGE,
};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn container_ticks_run_exactly_once_across_three_workers() -> anyhow::Result<()> {
    let Some(docker) = docker_or_skip().await? else {
        return Ok(());
    };
    let mut c = Cluster::start("container_run_once").await?;
    for id in ["w1", "w2", "w3"] {
        c.start_worker(id, WorkerOptions::default())?;
    }
    c.wait_for_workers(&["w1", "w2", "w3"], Duration::from_secs(20))
        .await?;
    let report = every_second_scenario(&mut c, 3, 16, |name| {
        json!({"name": name, "image": JOB_IMAGE, "command": "echo tick", "cronExpr": "* * * * * * *", "pull": "never"})
    })
    .await?;
    assert!(
        report.expected >= 3 * 10,
        "window too small: {}",
        report.expected
    );
    assert!(
        report.is_exactly_once(),
        "missing {:?}; duplicated {:?}",
        report.missing,
        report.duplicated
    );
    wait_until(
        "containers to be removed",
        Duration::from_secs(10),
        || async {
            containers_of(&docker, &c.prefix)
                .await
                .map(|v| v.is_empty())
                .unwrap_or(false)
        },
    )
    .await?;
    Ok(())
}
