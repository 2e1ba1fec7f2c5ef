//! Run-once holds for container jobs across three workers.

use std::time::Duration;

use gdts_tests::{
    docker_or_skip, every_second_scenario, wait_for_no_containers, Cluster, JOB_IMAGE,
};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn container_ticks_run_exactly_once_across_three_workers() -> anyhow::Result<()> {
    let Some(docker) = docker_or_skip().await? else {
        return Ok(());
    };
    let mut c = Cluster::with_workers("container_run_once", &["w1", "w2", "w3"]).await?;
    let report = every_second_scenario(&mut c, 3, 16, |name| {
        json!({"name": name, "image": JOB_IMAGE, "command": "echo tick", "cronExpr": "* * * * * * *", "pull": "never"})
    })
    .await?;
    report.assert_exactly_once(3 * 10);
    wait_for_no_containers(&docker, &c.prefix, Duration::from_secs(10)).await?;
    Ok(())
}
