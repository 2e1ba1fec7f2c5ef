//! A job in a non-UTC time zone fires at the right instant.

use std::time::Duration;

use chrono::{Timelike, Utc};
use gdts_tests::{int_field, records_of, save_job_json, Cluster, WorkerOptions};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_in_kolkata_time_fires_at_its_local_second() -> anyhow::Result<()> {
    let mut c = Cluster::start("policy_timezone").await?;
    c.start_worker("w1", WorkerOptions::default())?;
    c.wait_for_workers(&["w1"], Duration::from_secs(20)).await?;
    // A wall-clock time in Asia/Kolkata (UTC+05:30) a few seconds ahead: a
    // worker reading the expression as UTC would fire 5.5 hours off.
    let tz: chrono_tz::Tz = "Asia/Kolkata".parse().unwrap();
    let target = (Utc::now() + chrono::Duration::seconds(4))
        .with_nanosecond(0)
        .unwrap();
    let local = target.with_timezone(&tz);
    let cron = format!(
        "{} {} {} * * *",
        local.second(),
        local.minute(),
        local.hour()
    );
    save_job_json(&c, &json!({"name": "kolkata", "command": "echo namaste", "cronExpr": cron, "timezone": "Asia/Kolkata"})).await?;
    // The same wall-clock expression in UTC must not fire now.
    save_job_json(
        &c,
        &json!({"name": "utc-twin", "command": "echo hi", "cronExpr": cron}),
    )
    .await?;
    let run = &c.first_record("kolkata", Duration::from_secs(20)).await?;
    let records = c.run_records().await?;
    assert_eq!(
        int_field(run, "planTime"),
        target.timestamp_millis(),
        "{run}"
    );
    assert!(
        int_field(run, "startTime") - target.timestamp_millis() < 2000,
        "{run}"
    );
    assert!(records_of(&records, "utc-twin").is_empty());
    let list = c.get("/job/list", &[]).await?;
    let saved = list
        .data
        .as_array()
        .unwrap()
        .iter()
        .find(|j| j["name"] == "kolkata")
        .unwrap()
        .clone();
    assert_eq!(saved["timezone"], "Asia/Kolkata");
    Ok(())
}
