//! Jobs do not see the worker's secrets: a shell run starts from a clean
//! environment with only the documented variables passed on (PATH, HOME,
//! LANG, TZ, ...), its job's own `env`, and `GDTS_JOB`/`GDTS_PLAN_TIME_MS`.

use std::time::Duration;

use gdts_tests::{save_job_json, Cluster, WorkerOptions};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_sees_none_of_the_workers_variables() -> anyhow::Result<()> {
    let mut c = Cluster::start("job_environment").await?;
    c.start_worker(
        "w1",
        WorkerOptions {
            env: vec![
                ("GDTS_SECRET_FOR_TEST".into(), "s3cr3t".into()),
                ("AWS_SECRET_ACCESS_KEY".into(), "also-secret".into()),
            ],
            ..Default::default()
        },
    )?;
    c.wait_for_workers(&["w1"], Duration::from_secs(20)).await?;
    save_job_json(
        &c,
        &json!({"name": "env", "command": "printenv", "cronExpr": gdts_tests::once_soon(2),
                "env": {"MINE": "job value"}}),
    )
    .await?;
    let record = match c.first_record("env", Duration::from_secs(20)).await {
        Ok(r) => r,
        Err(e) => {
            let log = std::fs::read_to_string(c.worker_log("w1")).unwrap_or_default();
            anyhow::bail!("{e}; the worker's log:\n{log}");
        }
    };
    let output = record.get_str("output")?;
    println!("{output}");
    let names: Vec<&str> = output
        .lines()
        .filter_map(|l| l.split_once('=').map(|(k, _)| k))
        .collect();
    let gdts: Vec<&&str> = names
        .iter()
        .filter(|n| n.starts_with("GDTS_") && !["GDTS_JOB", "GDTS_PLAN_TIME_MS"].contains(n))
        .collect();
    assert!(gdts.is_empty(), "the job saw the worker's {gdts:?}");
    assert!(
        !output.contains("s3cr3t") && !output.contains("also-secret"),
        "{output}"
    );
    assert!(output.contains("MINE=job value"), "{output}");
    assert!(names.contains(&"PATH"), "{output}");
    assert!(names.contains(&"GDTS_JOB"), "{output}");
    Ok(())
}

/// With `GDTS_JOB_USER`, a shell run is that user: not root, none of root's
/// groups, its own HOME, started in it. The worker itself must be root to
/// switch (CI runs as root; locally `GDTS_TEST_SKIP_ROOT=1` lets a non-root
/// run pass, never in CI).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_runs_as_the_unprivileged_job_user() -> anyhow::Result<()> {
    if !nix::unistd::geteuid().is_root() {
        let in_ci = std::env::var("CI").is_ok_and(|v| v == "true");
        let opted_out = std::env::var("GDTS_TEST_SKIP_ROOT").is_ok_and(|v| v == "1");
        anyhow::ensure!(
            opted_out && !in_ci,
            "switching users needs root; run as root (CI does) or set GDTS_TEST_SKIP_ROOT=1 locally"
        );
        eprintln!("skipping: not root and GDTS_TEST_SKIP_ROOT=1");
        return Ok(());
    }
    let mut c = Cluster::start("job_user").await?;
    c.start_worker(
        "w1",
        WorkerOptions {
            env: vec![("GDTS_JOB_USER".into(), "nobody".into())],
            ..Default::default()
        },
    )?;
    c.wait_for_workers(&["w1"], Duration::from_secs(20)).await?;
    save_job_json(
        &c,
        &json!({"name": "who", "command": "echo uid=$(id -u) groups=$(id -G) home=$HOME user=$USER pwd=$(pwd); touch /root/gdts-probe && echo WROTE-ROOT; grep NoNewPrivs /proc/self/status",
                "cronExpr": gdts_tests::once_soon(2)}),
    )
    .await?;
    let record = c.first_record("who", Duration::from_secs(20)).await?;
    let output = record.get_str("output")?;
    println!("{output}");
    assert!(output.contains("uid=65534 "), "{output}");
    let groups = output
        .split("groups=")
        .nth(1)
        .and_then(|r| r.split(" home=").next())
        .unwrap_or_default();
    assert!(
        !groups.split_whitespace().any(|g| g == "0"),
        "the job kept root's group: {output}"
    );
    assert!(
        output.contains("home=/tmp user=nobody pwd=/tmp"),
        "{output}"
    );
    assert!(
        !output.contains("WROTE-ROOT"),
        "the job wrote to /root: {output}"
    );
    // No setuid binary lifts it back to root.
    assert!(
        output.contains("NoNewPrivs:\t1"),
        "a job user's run may gain privileges: {output}"
    );
    Ok(())
}
