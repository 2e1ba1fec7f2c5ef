//! Shell runs share one CPU cgroup (`GDTS_JOB_CGROUP=auto`, the default),
//! weighted by `GDTS_JOB_CPU_WEIGHT`, so a thousand runs weigh as one
//! process against the worker and not a thousand. Where the machine offers
//! no cgroup the worker can make, it says so and runs go on.

use std::path::PathBuf;
use std::time::Duration;

use gdts_tests::{once_soon, wait_until, Cluster, WorkerOptions};

/// The v1 `cpu` hierarchy's directory of this process, if any (as the
/// worker finds it: /proc/self/cgroup and /proc/self/mountinfo).
fn v1_cpu_dir() -> Option<PathBuf> {
    let own = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let path = own.lines().find_map(|line| {
        let mut parts = line.splitn(3, ':');
        let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        controllers.split(',').any(|c| c == "cpu").then_some(path)
    })?;
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    let mount = mounts.lines().find_map(|line| {
        let (left, right) = line.split_once(" - ")?;
        let mut right = right.split(' ');
        let (fs, _, options) = (right.next()?, right.next()?, right.next()?);
        (fs == "cgroup" && options.split(',').any(|o| o == "cpu"))
            .then(|| left.split(' ').nth(4))?
    })?;
    Some(PathBuf::from(mount).join(path.trim_start_matches('/')))
}

/// Whether this machine lets us make a cgroup in the v1 cpu hierarchy.
fn can_make_v1_cgroup() -> bool {
    let Some(dir) = v1_cpu_dir() else {
        return false;
    };
    let probe = dir.join(format!("gdts-probe-{}", std::process::id()));
    let made = std::fs::create_dir(&probe).is_ok();
    if made {
        let _ = std::fs::remove_dir(&probe);
    }
    made
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shell_runs_share_one_weighted_cpu_cgroup() -> anyhow::Result<()> {
    let mut c = Cluster::start("cgroup").await?;
    let options = WorkerOptions {
        env: vec![("GDTS_JOB_CPU_WEIGHT".into(), "50".into())],
        ..Default::default()
    };
    c.start_worker("cg1", options)?;
    c.wait_for_workers(&["cg1"], Duration::from_secs(20))
        .await?;

    let out = c.dir.path().join("cgroup-of-run");
    let command = format!(
        "cat /proc/self/cgroup > {}.tmp && mv {0}.tmp {0}",
        out.display()
    );
    c.save_job("where", &command, &once_soon(3)).await?;
    wait_until(
        "the run to write its cgroup",
        Duration::from_secs(15),
        || async { out.exists() },
    )
    .await?;
    let run_cgroups = std::fs::read_to_string(&out)?;
    let log = std::fs::read_to_string(c.worker_log("cg1"))?;

    if !can_make_v1_cgroup() {
        // No cgroup here for the worker either: it must say so, and the run
        // still ran (above).
        assert!(
            log.contains("no CPU cgroup for shell runs"),
            "the worker should say why runs have no cgroup:\n{log}"
        );
        println!("this machine offers no cgroup v1 cpu hierarchy to write; the worker said so");
        return Ok(());
    }
    let cpu_line = run_cgroups
        .lines()
        .find(|l| {
            l.split(':')
                .nth(1)
                .is_some_and(|c| c.split(',').any(|c| c == "cpu"))
        })
        .unwrap_or_default()
        .to_string();
    assert!(
        cpu_line.contains("/gdts-jobs-cg1-"),
        "the run should be in the worker's job cgroup, it is in {cpu_line:?}:\n{run_cgroups}\n{log}"
    );
    let group = v1_cpu_dir()
        .expect("checked above")
        .join(cpu_line.rsplit('/').next().unwrap_or_default());
    let shares = std::fs::read_to_string(group.join("cpu.shares"))?;
    // Weight 50 in v2 units (100 = one process) is 512 v1 shares (1024 = one process).
    assert_eq!(shares.trim(), "512", "cpu.shares of {}", group.display());
    println!("run in {cpu_line}, cpu.shares {}", shares.trim());

    // A worker that stops removes its cgroup.
    let worker = c.workers.get_mut("cg1").expect("started above");
    worker.terminate(Duration::from_secs(20));
    assert!(
        !group.exists(),
        "{} should be gone after the worker stopped",
        group.display()
    );
    Ok(())
}
