//! `/job/kill` ends a running `sleep 60`: its whole process group is gone
//! within a second and the run's record says it was killed.

use std::time::{Duration, Instant};

use gdts_tests::{live_group_members, once_soon, records_of, wait_until, Cluster, WorkerOptions};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_ends_the_process_group_within_a_second() -> anyhow::Result<()> {
    let mut c = Cluster::start("kill").await?;
    c.start_worker("w1", WorkerOptions::default())?;
    c.start_worker("w2", WorkerOptions::default())?;
    c.wait_for_workers(&["w1", "w2"], Duration::from_secs(20))
        .await?;

    // Fire once, three seconds from now (once a minute at that second).
    let pid_file = c.dir.path().join("pid");
    // Two sleeps and the shell waiting for them (bash would exec a lone last
    // `sleep` in place of itself): a group of three for the kill to end.
    let command = format!(
        "echo $$ > {}; sleep 60 & sleep 60 & wait",
        pid_file.display()
    );
    c.save_job("sleeper", &command, &once_soon(3)).await?;

    wait_until("the job to start", Duration::from_secs(15), || async {
        std::fs::read_to_string(&pid_file).is_ok_and(|s| s.trim().parse::<i32>().is_ok())
    })
    .await?;
    let pgid: i32 = std::fs::read_to_string(&pid_file)?.trim().parse()?;
    wait_until(
        "sleep to be running in the group",
        Duration::from_secs(5),
        || async { live_group_members(pgid).len() >= 2 },
    )
    .await?;

    let r = c.post_form("/job/kill", &[("name", "sleeper")]).await?;
    assert_eq!(r.errno, 0, "{}", r.msg);
    let killed_at = Instant::now();
    wait_until(
        "the process group to be gone",
        Duration::from_secs(1),
        || async { live_group_members(pgid).is_empty() },
    )
    .await?;
    println!(
        "process group gone {:?} after the kill request",
        killed_at.elapsed()
    );

    wait_until(
        "the killed run's record",
        Duration::from_secs(10),
        || async {
            c.run_records()
                .await
                .map(|r| !r.is_empty())
                .unwrap_or(false)
        },
    )
    .await?;
    let records = c.run_records().await?;
    let runs = records_of(&records, "sleeper");
    assert_eq!(runs.len(), 1, "{runs:?}");
    let run = runs[0];
    assert_eq!(run.get_str("status")?, "killed");
    assert!(run.get_bool("killed")?);
    assert!(
        run.get_str("err")?.starts_with("killed on request"),
        "{run}"
    );
    let took = run.get_i64("endTime")? - run.get_i64("startTime")?;
    assert!(took < 10_000, "the run lasted {took} ms");
    Ok(())
}
