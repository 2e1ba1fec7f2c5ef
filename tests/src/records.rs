//! Reading run records: the tick tally ([`TickReport`]), record keys and
//! fields, and the every-second scenario most run-once tests share.

use anyhow::bail;
use mongodb::bson::Document;
use serde_json::Value;
use std::collections::HashMap;
use std::time::Duration;

use crate::*;

/// A record's `(jobName, planTime, runId)`.
pub fn record_key(d: &Document) -> (String, i64, String) {
    (
        d.get_str("jobName").unwrap_or_default().to_string(),
        d.get_i64("planTime")
            .or_else(|_| d.get_i32("planTime").map(i64::from))
            .unwrap_or_default(),
        d.get_str("runId").unwrap_or_default().to_string(),
    )
}

/// The claim revision encoded in a run id (`job@tick#revision`).
pub fn claim_revision(run_id: &str) -> i64 {
    run_id
        .rsplit_once('#')
        .and_then(|(_, r)| r.parse().ok())
        .unwrap_or_default()
}

/// How the run records of every-second jobs compare with their ticks.
#[derive(Debug, Default)]
pub struct TickReport {
    /// (job, tick) pairs in the window.
    pub expected: usize,
    /// Ticks in the window with no record.
    pub missing: Vec<(String, i64)>,
    /// Ticks (anywhere) with more than one record, and how many.
    pub duplicated: Vec<(String, i64, usize)>,
}

impl TickReport {
    /// For jobs firing every second: every whole second in `[from_ms, to_ms]`
    /// is a tick that must have exactly one record.
    pub fn every_second(
        records: &[Document],
        jobs: &[String],
        from_ms: i64,
        to_ms: i64,
    ) -> TickReport {
        let mut counts: HashMap<(String, i64), usize> = HashMap::new();
        for d in records {
            let (job, tick, _) = record_key(d);
            *counts.entry((job, tick)).or_default() += 1;
        }
        let first = (from_ms + 999) / 1000 * 1000;
        let mut report = TickReport::default();
        for job in jobs {
            let mut t = first;
            while t <= to_ms {
                report.expected += 1;
                if !counts.contains_key(&(job.clone(), t)) {
                    report.missing.push((job.clone(), t));
                }
                t += 1000;
            }
        }
        report.duplicated = counts
            .into_iter()
            .filter(|(_, n)| *n > 1)
            .map(|((j, t), n)| (j, t, n))
            .collect();
        report
    }

    pub fn is_exactly_once(&self) -> bool {
        self.missing.is_empty() && self.duplicated.is_empty()
    }
}

/// A shell job firing every second.
pub fn every_second_shell_job(name: &str) -> Value {
    serde_json::json!({"name": name, "command": "echo tick", "cronExpr": "* * * * * * *"})
}

/// The run-once scenario shared by the run-once and clock-skew tests: `jobs`
/// jobs firing every second on the given workers for `seconds`, then every
/// worker stopped cleanly (so every record is flushed) and the records
/// compared with the ticks.
pub async fn every_second_scenario(
    cluster: &mut Cluster,
    jobs: usize,
    seconds: u64,
    job: impl Fn(&str) -> Value,
) -> anyhow::Result<TickReport> {
    let names: Vec<String> = (0..jobs).map(|i| format!("job-{i:03}")).collect();
    for name in &names {
        save_job_json(cluster, &job(name)).await?;
    }
    let from = now_ms() + 2000;
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    let to = now_ms() - 2000;
    for name in &names {
        cluster.delete_job(name).await?;
    }
    let ids: Vec<String> = cluster.workers.keys().cloned().collect();
    for id in ids {
        let clean = cluster.worker(&id).terminate(Duration::from_secs(30));
        if !clean {
            bail!("worker {id} did not shut down cleanly");
        }
    }
    let records = cluster.run_records().await?;
    let report = TickReport::every_second(&records, &names, from, to);
    let mut by_worker: std::collections::BTreeMap<String, usize> = Default::default();
    for d in &records {
        *by_worker
            .entry(d.get_str("worker").unwrap_or("?").to_string())
            .or_default() += 1;
    }
    println!(
        "{} records {by_worker:?}; window {} ticks; missing {}; duplicated {}",
        records.len(),
        report.expected,
        report.missing.len(),
        report.duplicated.len()
    );
    Ok(report)
}

/// The records of one job, from Mongo.
pub fn records_of<'a>(records: &'a [Document], job: &str) -> Vec<&'a Document> {
    records
        .iter()
        .filter(|d| d.get_str("jobName") == Ok(job))
        .collect()
}

/// A cron expression that fires once a minute, `secs` seconds from now (UTC).
pub fn once_soon(secs: i64) -> String {
    use chrono::Timelike;
    let s = (chrono::Utc::now() + chrono::Duration::seconds(secs)).second();
    format!("{s} * * * * * *")
}

/// Integer field of a record, whichever BSON integer width it was stored in.
pub fn int_field(d: &Document, field: &str) -> i64 {
    d.get_i64(field)
        .or_else(|_| d.get_i32(field).map(i64::from))
        .unwrap_or_default()
}

impl TickReport {
    /// Fails the test unless the window held at least `min_expected` ticks,
    /// each with exactly one record.
    pub fn assert_exactly_once(&self, min_expected: usize) {
        assert!(
            self.expected >= min_expected,
            "window too small: {} ticks, want {min_expected}",
            self.expected
        );
        assert!(
            self.is_exactly_once(),
            "missing {:?}; duplicated {:?}",
            self.missing,
            self.duplicated
        );
    }
}
