//! Container jobs on a real dockerd: output, exit code and timing in the log;
//! failures (non-zero exit, missing image) recorded with messages; kill; limits.

use std::time::{Duration, Instant};

use gdts_tests::{
    containers_of, docker_or_skip, once_soon, save_job_json, wait_for_no_containers, wait_until,
    Cluster, WorkerOptions, JOB_IMAGE,
};
use mongodb::bson::Document;
use serde_json::json;

/// Waits until the test's one container exists.
async fn wait_for_one_container(docker: &bollard::Docker, c: &Cluster) -> anyhow::Result<()> {
    wait_until("the container to run", Duration::from_secs(20), || async {
        containers_of(docker, &c.prefix)
            .await
            .map(|v| v.len() == 1)
            .unwrap_or(false)
    })
    .await
}

async fn first_record(c: &Cluster, job: &str) -> anyhow::Result<Document> {
    c.first_record(job, Duration::from_secs(30)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn container_runs_and_failures_are_logged() -> anyhow::Result<()> {
    let Some(docker) = docker_or_skip().await? else {
        return Ok(());
    };
    let mut c = Cluster::start("container_jobs").await?;
    c.start_worker("w1", WorkerOptions::default())?;
    c.wait_for_workers(&["w1"], Duration::from_secs(20)).await?;

    let cron = once_soon(3);
    save_job_json(&c, &json!({"name": "ok", "image": JOB_IMAGE, "command": "echo out; echo err >&2; echo \"$GREETING\"", "env": {"GREETING": "hi"}, "cronExpr": cron, "pull": "never"})).await?;
    save_job_json(&c, &json!({"name": "entrypoint", "image": JOB_IMAGE, "cronExpr": cron, "env": {"REPORT_TARGET": "tests"}})).await?;
    save_job_json(&c, &json!({"name": "fails", "image": JOB_IMAGE, "command": "echo bye; exit 7", "cronExpr": cron})).await?;
    save_job_json(&c, &json!({"name": "no-image", "image": "gdts-no-such-image:never", "command": "true", "cronExpr": cron, "pull": "never"})).await?;
    save_job_json(&c, &json!({"name": "unpullable", "image": "gdts-no-such-image:never", "command": "true", "cronExpr": cron})).await?;

    let ok = first_record(&c, "ok").await?;
    assert_eq!(ok.get_str("status")?, "succeeded", "{ok}");
    // stdout and stderr are separate streams: their relative order is not kept.
    let mut lines: Vec<&str> = ok.get_str("output")?.lines().collect();
    lines.sort();
    assert_eq!(lines, vec!["err", "hi", "out"], "{ok}");
    assert_eq!(
        ok.get_i32("exitCode")
            .map(i64::from)
            .or_else(|_| ok.get_i64("exitCode"))?,
        0
    );
    let (plan, start, end) = (
        ok.get_i64("planTime")?,
        ok.get_i64("startTime")?,
        ok.get_i64("endTime")?,
    );
    assert!(plan <= start && start <= end && end - plan < 30_000, "{ok}");

    let entry = first_record(&c, "entrypoint").await?;
    assert_eq!(entry.get_str("status")?, "succeeded", "{entry}");
    assert!(
        entry.get_str("output")?.contains("REPORT_TARGET=tests"),
        "{entry}"
    );

    let fails = first_record(&c, "fails").await?;
    assert_eq!(fails.get_str("status")?, "failed");
    assert_eq!(fails.get_str("err")?, "exit status 7");
    assert_eq!(fails.get_str("output")?, "bye\n");

    let missing = first_record(&c, "no-image").await?;
    assert_eq!(missing.get_str("status")?, "failed");
    assert!(
        missing.get_str("err")?.contains("not present")
            && missing.get_str("err")?.contains("never"),
        "{missing}"
    );
    let unpullable = first_record(&c, "unpullable").await?;
    assert_eq!(unpullable.get_str("status")?, "failed");
    assert!(
        unpullable
            .get_str("err")?
            .starts_with("pulling image gdts-no-such-image:never failed"),
        "{unpullable}"
    );

    // Nothing is left behind.
    wait_for_no_containers(&docker, &c.prefix, Duration::from_secs(10)).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn container_kill_and_limits() -> anyhow::Result<()> {
    let Some(docker) = docker_or_skip().await? else {
        return Ok(());
    };
    let mut c = Cluster::start("container_kill").await?;
    c.start_worker("w1", WorkerOptions::default())?;
    c.wait_for_workers(&["w1"], Duration::from_secs(20)).await?;

    save_job_json(&c, &json!({"name": "sleeper", "image": JOB_IMAGE, "command": "sleep 60", "cronExpr": once_soon(3), "cpus": 0.5, "memoryMb": 64})).await?;
    wait_until("the container to run", Duration::from_secs(20), || async {
        containers_of(&docker, &c.prefix)
            .await
            .map(|v| {
                v.iter()
                    .any(|c| c.state == Some(bollard::models::ContainerSummaryStateEnum::RUNNING))
            })
            .unwrap_or(false)
    })
    .await?;
    let id = containers_of(&docker, &c.prefix).await?[0]
        .id
        .clone()
        .unwrap();
    let inspect = docker.inspect_container(&id, None).await?;
    let host = inspect.host_config.unwrap();
    assert_eq!(host.nano_cpus, Some(500_000_000));
    assert_eq!(host.memory, Some(64 * 1024 * 1024));
    assert_eq!(host.network_mode.as_deref(), Some("none"));
    let labels = inspect.config.unwrap().labels.unwrap();
    assert_eq!(labels.get("gdts.job").map(String::as_str), Some("sleeper"));
    assert_eq!(labels.get("gdts.worker").map(String::as_str), Some("w1"));
    assert!(labels.contains_key("gdts.tick"));

    let r = c.post_form("/job/kill", &[("name", "sleeper")]).await?;
    assert_eq!(r.errno, 0);
    let asked = Instant::now();
    wait_until("the container to stop", Duration::from_secs(1), || async {
        match docker.inspect_container(&id, None).await {
            Ok(i) => i.state.and_then(|s| s.running) == Some(false),
            Err(_) => true, // already removed
        }
    })
    .await?;
    println!(
        "container stopped {:?} after the kill request",
        asked.elapsed()
    );
    let rec = first_record(&c, "sleeper").await?;
    assert_eq!(rec.get_str("status")?, "killed", "{rec}");
    assert!(
        rec.get_str("err")?.starts_with("killed on request"),
        "{rec}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_worker_removes_the_containers_it_left_behind() -> anyhow::Result<()> {
    let Some(docker) = docker_or_skip().await? else {
        return Ok(());
    };
    let mut c = Cluster::start("container_leftovers").await?;
    c.start_worker("w1", WorkerOptions::default())?;
    c.wait_for_workers(&["w1"], Duration::from_secs(20)).await?;
    save_job_json(&c, &json!({"name": "orphan", "image": JOB_IMAGE, "command": "sleep 120", "cronExpr": once_soon(3)})).await?;
    wait_for_one_container(&docker, &c).await?;
    // A crash: the worker dies, its container lives on.
    c.worker("w1").kill9();
    c.delete_job("orphan").await?;
    assert_eq!(containers_of(&docker, &c.prefix).await?.len(), 1);
    // Its next life (same id) cleans up before running anything.
    c.start_worker("w1", WorkerOptions::default())?;
    wait_for_no_containers(&docker, &c.prefix, Duration::from_secs(20)).await?;
    Ok(())
}

/// A second worker started with the id of a live one is refused: it stops
/// with an error naming the id, and removes nothing of the first one's (its
/// start-up clean-up of "its" leftover containers would kill the first
/// one's runs).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_worker_with_a_live_workers_id_is_refused() -> anyhow::Result<()> {
    let Some(docker) = docker_or_skip().await? else {
        return Ok(());
    };
    let mut c = Cluster::start("duplicate_id").await?;
    let ttl = [("GDTS_WORKER_LEASE_TTL_SECS".to_string(), "4".to_string())];
    c.start_worker(
        "w1",
        WorkerOptions {
            env: ttl.to_vec(),
            ..Default::default()
        },
    )?;
    c.wait_for_workers(&["w1"], Duration::from_secs(20)).await?;
    save_job_json(&c, &json!({"name": "long", "image": JOB_IMAGE, "command": "sleep 120", "cronExpr": once_soon(3)})).await?;
    wait_for_one_container(&docker, &c).await?;

    c.start_worker(
        "impostor",
        WorkerOptions {
            env: ttl.to_vec(),
            worker_id: Some("w1".into()),
            ..Default::default()
        },
    )?;
    wait_until("the second w1 to stop", Duration::from_secs(20), || {
        let running = c.worker("impostor").is_running();
        async move { !running }
    })
    .await?;
    let log = std::fs::read_to_string(c.worker_log("impostor"))?;
    assert!(
        log.contains("another live worker is registered as w1"),
        "the refusal says why: {log}"
    );
    let containers = containers_of(&docker, &c.prefix).await?;
    assert_eq!(containers.len(), 1, "the first w1's container was removed");
    assert_eq!(
        containers[0]
            .state
            .as_ref()
            .map(|s| s.to_string())
            .as_deref(),
        Some("running")
    );
    assert_eq!(c.worker_list().await?, vec!["w1".to_string()]);
    assert!(c.worker("w1").is_running());
    Ok(())
}

/// As the original ran every command with `/bin/bash -c`, a container job's
/// command runs in bash where the image has it (bash syntax works), and in
/// `sh` where it does not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn container_commands_run_in_bash_where_the_image_has_it() -> anyhow::Result<()> {
    if docker_or_skip().await?.is_none() {
        return Ok(());
    }
    // The job image without bash.
    let context = tempfile::Builder::new().prefix("gdts-nobash-").tempdir()?;
    std::fs::write(
        context.path().join("Dockerfile"),
        format!("FROM {JOB_IMAGE}\nRUN rm -f /bin/bash /usr/bin/bash\nENTRYPOINT []\n"),
    )?;
    let built = std::process::Command::new("docker")
        .args(["build", "-q", "-t", NO_BASH_IMAGE])
        .arg(context.path())
        .env("DOCKER_BUILDKIT", "0")
        .output()?;
    assert!(
        built.status.success(),
        "building {NO_BASH_IMAGE}: {}",
        String::from_utf8_lossy(&built.stderr)
    );

    let mut c = Cluster::start("container_bash").await?;
    c.start_worker("w1", WorkerOptions::default())?;
    c.wait_for_workers(&["w1"], Duration::from_secs(15)).await?;
    let cron = once_soon(2);
    save_job_json(&c, &json!({"name": "bash-syntax", "image": JOB_IMAGE, "command": "[[ 2 -gt 1 ]] && words=(in bash) && echo \"${words[@]}\"", "cronExpr": cron, "pull": "never"})).await?;
    save_job_json(&c, &json!({"name": "no-bash", "image": NO_BASH_IMAGE, "command": "echo in sh; command -v bash || echo no bash here", "cronExpr": cron, "pull": "never"})).await?;

    let bash = first_record(&c, "bash-syntax").await?;
    assert_eq!(bash.get_str("status")?, "succeeded", "{bash}");
    assert_eq!(bash.get_str("output")?, "in bash\n", "{bash}");
    let sh = first_record(&c, "no-bash").await?;
    assert_eq!(sh.get_str("status")?, "succeeded", "{sh}");
    assert_eq!(sh.get_str("output")?, "in sh\nno bash here\n", "{sh}");
    Ok(())
}

const NO_BASH_IMAGE: &str = "gdts-test-nobash:local";

/// A container job cannot reach the host: it runs unprivileged with
/// no-new-privileges, without the Docker socket, with a process limit, and
/// a worker refuses the host's network unless its operator allows it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_container_job_cannot_reach_the_host() -> anyhow::Result<()> {
    let Some(docker) = docker_or_skip().await? else {
        return Ok(());
    };
    let mut c = Cluster::start("container_confined").await?;
    c.start_worker("w1", WorkerOptions::default())?;
    c.wait_for_workers(&["w1"], Duration::from_secs(20)).await?;
    let cron = once_soon(3);
    let probe = "grep NoNewPrivs /proc/self/status; \
                 echo pids=$(cat /sys/fs/cgroup/pids.max 2>/dev/null || cat /sys/fs/cgroup/pids/pids.max 2>/dev/null); \
                 ls /var/run/docker.sock 2>/dev/null && echo HAS-SOCKET; \
                 ip link add gdts0 type dummy 2>/dev/null && echo NET-ADMIN; echo probed";
    save_job_json(&c, &json!({"name": "confined", "image": JOB_IMAGE, "command": probe, "cronExpr": cron, "pull": "never", "network": "bridge"})).await?;
    save_job_json(&c, &json!({"name": "on-host-net", "image": JOB_IMAGE, "command": "echo on the host network", "cronExpr": cron, "pull": "never", "network": "host"})).await?;

    let confined = first_record(&c, "confined").await?;
    let out = confined.get_str("output")?;
    assert!(out.contains("probed"), "{confined}");
    assert!(
        out.lines()
            .any(|l| l.starts_with("NoNewPrivs:") && l.trim_end().ends_with('1')),
        "no-new-privileges is not set: {out}"
    );
    assert!(
        !out.contains("HAS-SOCKET"),
        "the Docker socket is mounted: {out}"
    );
    assert!(
        !out.contains("NET-ADMIN"),
        "the container has NET_ADMIN: {out}"
    );
    assert!(out.contains("pids=1024"), "no process limit: {out}");

    let host = first_record(&c, "on-host-net").await?;
    assert_eq!(host.get_str("status")?, "failed", "{host}");
    assert!(
        host.get_str("err")?.contains("GDTS_CONTAINER_HOST_NETWORK"),
        "{host}"
    );
    wait_for_no_containers(&docker, &c.prefix, Duration::from_secs(10)).await?;
    Ok(())
}
