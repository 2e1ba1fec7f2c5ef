//! The worker's metrics (the `prometheus` crate), served in the text format
//! at `/metrics` on the health port, with etcd's and MongoDB's request
//! latency and errors from `gdts_runtime::metrics`.

use std::collections::HashSet;
use std::sync::Mutex;

use gdts_common::log_record::LogRecord;
use prometheus::{
    Gauge, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts,
    Registry,
};

use crate::claim::{Claim, ClaimRequest};

/// At most this many job names label `gdts_worker_job_runs_total` (the
/// rest count under `job="_other"`), so 100,000 jobs cannot make 100,000
/// series. `GDTS_METRICS_MAX_JOBS`.
pub const DEFAULT_MAX_JOB_LABELS: usize = 500;
/// The label of jobs beyond the cap.
pub const OTHER_JOBS: &str = "_other";

/// Start lag buckets, seconds: a start held at a gate is released within
/// milliseconds; a start at the tick takes a spawn; late ones seconds.
const LAG_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];
const DURATION_BUCKETS: &[f64] = &[
    0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0,
];

/// Why a tick was recorded as missed (`gdts_worker_ticks_missed_total`'s
/// `reason`; the record's `err` says it in words).
#[derive(Clone, Copy, Debug)]
pub enum Missed {
    /// Won, but its process could not be started before the tick.
    NotPrepared,
    /// Nobody could start it within the lateness bound.
    Late,
    /// Won, but this worker could not start it within the lateness bound.
    Overloaded,
}

impl Missed {
    const ALL: [Missed; 3] = [Missed::NotPrepared, Missed::Late, Missed::Overloaded];

    fn label(self) -> &'static str {
        match self {
            Missed::NotPrepared => "not_prepared",
            Missed::Late => "late",
            Missed::Overloaded => "overloaded",
        }
    }
}

/// Record events counted by `gdts_worker_records_total`.
#[derive(Clone, Copy, Debug)]
pub enum RecordEvent {
    /// Handed to the writer.
    Queued,
    /// Written to MongoDB.
    Written,
    /// A write attempt that failed (the batch is tried again).
    Retried,
    /// Appended to the journal on disk while MongoDB refuses records.
    Journaled,
    /// Spooled at shutdown (to the bucket or the disk).
    Spooled,
}

impl RecordEvent {
    fn label(self) -> &'static str {
        match self {
            RecordEvent::Queued => "queued",
            RecordEvent::Written => "written",
            RecordEvent::Retried => "retried",
            RecordEvent::Journaled => "journaled",
            RecordEvent::Spooled => "spooled",
        }
    }
}

pub struct Metrics {
    registry: Registry,
    prepared: IntCounter,
    claims: IntCounterVec,
    retries: IntCounter,
    outcomes: IntCounterVec,
    missed: IntCounterVec,
    unmatched: IntCounter,
    jobs_unmatched: IntGauge,
    runs: IntCounterVec,
    job_runs: IntCounterVec,
    job_labels: Mutex<HashSet<String>>,
    max_job_labels: usize,
    duration: Histogram,
    lag: HistogramVec,
    running: IntGauge,
    records: IntCounterVec,
    records_pending: IntGauge,
    notifications: IntCounterVec,
    lease_renewals: IntCounter,
    lease_losses: IntCounter,
    clock_offset: Gauge,
    registered: IntGauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new(DEFAULT_MAX_JOB_LABELS)
    }
}

impl Metrics {
    pub fn new(max_job_labels: usize) -> Self {
        let registry = Registry::new();
        fn reg<T: prometheus::core::Collector + Clone + 'static>(r: &Registry, m: T) -> T {
            r.register(Box::new(m.clone())).expect("registered once");
            m
        }
        let counter =
            |name: &str, help: &str| reg(&registry, IntCounter::new(name, help).expect("valid"));
        let counter_vec = |name: &str, help: &str, labels: &[&str]| {
            reg(
                &registry,
                IntCounterVec::new(Opts::new(name, help), labels).expect("valid"),
            )
        };
        let gauge =
            |name: &str, help: &str| reg(&registry, IntGauge::new(name, help).expect("valid"));
        let m = Metrics {
            prepared: counter(
                "gdts_worker_prepared_total",
                "Processes started ahead of their tick, held at a gate.",
            ),
            claims: counter_vec(
                "gdts_worker_claims_total",
                "Tick claims sent, by role (owner, or backup for a silent owner).",
                &["role"],
            ),
            retries: counter(
                "gdts_worker_claim_retries_total",
                "Claims of a tick sent again after earlier attempts whose outcome stayed unknown (their answer was lost); counted in gdts_worker_claims_total too.",
            ),
            outcomes: counter_vec(
                "gdts_worker_claim_outcomes_total",
                "Claim outcomes: won, lost (another worker has the tick), skipped (a policy), unknown (no answer).",
                &["outcome"],
            ),
            missed: counter_vec(
                "gdts_worker_ticks_missed_total",
                "Ticks this worker recorded as missed, by reason: not_prepared, late, overloaded.",
                &["reason"],
            ),
            unmatched: counter(
                "gdts_worker_ticks_unmatched_total",
                "Ticks of jobs whose selector matches no live worker (counted once, by one worker); nobody runs them.",
            ),
            jobs_unmatched: gauge(
                "gdts_worker_jobs_unmatched",
                "Jobs (not paused) whose selector matches no live worker, as this worker sees the fleet; nobody runs their ticks.",
            ),
            runs: counter_vec(
                "gdts_worker_runs_total",
                "Run records this worker wrote, by status and trigger.",
                &["status", "trigger"],
            ),
            job_runs: counter_vec(
                "gdts_worker_job_runs_total",
                "Run records by job and outcome (ok: succeeded or skipped; failed: anything else); at most GDTS_METRICS_MAX_JOBS job names, the rest as _other.",
                // Not "job": Prometheus sets that label to the scrape job's.
                &["job_name", "outcome"],
            ),
            job_labels: Mutex::new(HashSet::new()),
            max_job_labels,
            duration: reg(
                &registry,
                Histogram::with_opts(
                    HistogramOpts::new(
                        "gdts_worker_run_duration_seconds",
                        "How long runs took, start to end, of runs that started.",
                    )
                    .buckets(DURATION_BUCKETS.to_vec()),
                )
                .expect("valid"),
            ),
            lag: reg(
                &registry,
                HistogramVec::new(
                    HistogramOpts::new(
                        "gdts_worker_tick_start_lag_seconds",
                        "Start time minus the tick's planned time, of runs that started, by trigger.",
                    )
                    .buckets(LAG_BUCKETS.to_vec()),
                    &["trigger"],
                )
                .expect("valid"),
            ),
            running: gauge("gdts_worker_runs_running", "Runs in progress on this worker."),
            records: counter_vec(
                "gdts_worker_records_total",
                "Run records by what happened to them: queued, written (to MongoDB), retried (a failed write attempt), journaled, spooled.",
                &["event"],
            ),
            records_pending: gauge(
                "gdts_worker_records_pending",
                "Run records queued and not yet written, journaled or spooled.",
            ),
            notifications: counter_vec(
                "gdts_worker_notifications_total",
                "Job notification deliveries by result: delivered, retried (an attempt failed), failed (given up), dropped (queue full).",
                &["result"],
            ),
            lease_renewals: counter(
                "gdts_worker_lease_renewals_total",
                "Renewals of the registration lease etcd answered.",
            ),
            lease_losses: counter(
                "gdts_worker_lease_losses_total",
                "Times the registration was lost (lease expired, or keep-alive failed) and made again.",
            ),
            clock_offset: reg(
                &registry,
                Gauge::new(
                    "gdts_worker_clock_offset_seconds",
                    "MongoDB's clock (the fleet's reference) minus this worker's, last measured.",
                )
                .expect("valid"),
            ),
            registered: gauge(
                "gdts_worker_registered",
                "1 while this worker holds a current registration in etcd.",
            ),
            registry,
        };
        for role in ["owner", "backup"] {
            m.claims.with_label_values(&[role]);
        }
        for result in ["delivered", "retried", "failed", "dropped"] {
            m.notifications.with_label_values(&[result]);
        }
        for reason in Missed::ALL {
            m.missed.with_label_values(&[reason.label()]);
        }
        for outcome in ["won", "lost", "skipped", "unknown"] {
            m.outcomes.with_label_values(&[outcome]);
        }
        for event in [
            RecordEvent::Queued,
            RecordEvent::Written,
            RecordEvent::Retried,
            RecordEvent::Journaled,
            RecordEvent::Spooled,
        ] {
            m.records.with_label_values(&[event.label()]);
        }
        m
    }

    pub fn prepared(&self) {
        self.prepared.inc();
    }

    pub fn claims_sent(&self, requests: &[ClaimRequest], backup: bool) {
        let role = if backup { "backup" } else { "owner" };
        self.claims
            .with_label_values(&[role])
            .inc_by(requests.len() as u64);
        let retries = requests.iter().filter(|r| !r.earlier.is_empty()).count();
        self.retries.inc_by(retries as u64);
    }

    pub fn claim_outcome(&self, outcome: Option<Claim>) {
        let label = match outcome {
            Some(Claim::Won { .. }) => "won",
            Some(Claim::Lost) => "lost",
            Some(Claim::Skipped { .. }) => "skipped",
            Some(Claim::Missed { .. }) => return,
            None => "unknown",
        };
        self.outcomes.with_label_values(&[label]).inc();
    }

    /// A tick recorded as missed.
    pub fn tick_missed(&self, reason: Missed) {
        self.missed.with_label_values(&[reason.label()]).inc();
    }

    /// A tick nobody may run: its job's selector matches no live worker.
    pub fn tick_unmatched(&self) {
        self.unmatched.inc();
    }

    /// How many jobs' selectors match no live worker now.
    pub fn set_jobs_unmatched(&self, jobs: usize) {
        self.jobs_unmatched.set(jobs as i64);
    }

    /// A run started on this worker; the guard counts it as running until
    /// dropped.
    pub fn run_started(&self) -> RunningGuard<'_> {
        self.running.inc();
        RunningGuard(&self.running)
    }

    /// A run record handed to the writer: by status and trigger, its
    /// duration and start lag if it ran, and its job's outcome.
    pub fn run_recorded(&self, record: &LogRecord) {
        self.runs
            .with_label_values(&[record.status.as_str(), record.trigger.as_str()])
            .inc();
        // Only runs that ran have a duration and a start lag (a missed or
        // skipped record's times are when it was recorded).
        let ran = matches!(
            record.status.as_str(),
            "succeeded" | "failed" | "killed" | "timed-out"
        );
        if ran && record.start_time > 0 && record.end_time >= record.start_time {
            self.duration
                .observe((record.end_time - record.start_time) as f64 / 1000.0);
            if record.plan_time > 0 && record.attempt == 1 {
                let lag = (record.start_time - record.plan_time).max(0) as f64 / 1000.0;
                self.lag
                    .with_label_values(&[record.trigger.as_str()])
                    .observe(lag);
            }
        }
        let outcome = match record.status.as_str() {
            "succeeded" | "skipped" => "ok",
            _ => "failed",
        };
        let job = {
            let mut labels = self.job_labels.lock().expect("metrics lock");
            if labels.contains(&record.job_name) {
                record.job_name.as_str()
            } else if labels.len() < self.max_job_labels {
                labels.insert(record.job_name.clone());
                record.job_name.as_str()
            } else {
                OTHER_JOBS
            }
        };
        self.job_runs.with_label_values(&[job, outcome]).inc();
        self.record(RecordEvent::Queued, 1);
    }

    /// `n` run records went through `event`.
    pub fn record(&self, event: RecordEvent, n: usize) {
        self.records
            .with_label_values(&[event.label()])
            .inc_by(n as u64);
        match event {
            RecordEvent::Queued => self.records_pending.add(n as i64),
            RecordEvent::Written | RecordEvent::Journaled | RecordEvent::Spooled => {
                self.records_pending.sub(n as i64)
            }
            RecordEvent::Retried => {}
        }
    }

    /// A notification delivery ended so, or was retried.
    pub fn notification(&self, result: &'static str) {
        self.notifications.with_label_values(&[result]).inc();
    }

    pub fn lease_renewed(&self) {
        self.lease_renewals.inc();
    }

    pub fn lease_lost(&self) {
        self.lease_losses.inc();
    }

    pub fn set_registered(&self, registered: bool) {
        self.registered.set(i64::from(registered));
    }

    pub fn set_clock_offset_ms(&self, offset_ms: i64) {
        self.clock_offset.set(offset_ms as f64 / 1000.0);
    }

    pub fn render(&self) -> String {
        gdts_runtime::metrics::encode(&self.registry)
    }
}

/// Counts a run as running while it lives.
pub struct RunningGuard<'a>(&'a IntGauge);

impl Drop for RunningGuard<'_> {
    fn drop(&mut self) {
        self.0.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(job: &str, status: &str) -> LogRecord {
        LogRecord {
            run_id: format!("{job}@1000#1"),
            job_name: job.into(),
            command: "true".into(),
            err: String::new(),
            output: String::new(),
            plan_time: 1_000,
            schedule_time: 900,
            start_time: 1_004,
            end_time: 1_504,
            exit_code: Some(0),
            signal: None,
            worker: "w".into(),
            truncated: false,
            output_bytes: 0,
            output_uri: None,
            killed: false,
            status: status.into(),
            attempt: 1,
            trigger: "schedule".into(),
        }
    }

    #[test]
    fn runs_are_counted_with_their_lag_and_duration() {
        let m = Metrics::new(2);
        m.run_recorded(&record("a", "succeeded"));
        m.run_recorded(&record("a", "failed"));
        m.run_recorded(&record("b", "succeeded"));
        // A third job name is over the cap.
        m.run_recorded(&record("c", "timed-out"));
        m.record(RecordEvent::Written, 3);
        let text = m.render();
        for line in [
            "gdts_worker_runs_total{status=\"succeeded\",trigger=\"schedule\"} 2",
            "gdts_worker_runs_total{status=\"timed-out\",trigger=\"schedule\"} 1",
            "gdts_worker_job_runs_total{job_name=\"a\",outcome=\"failed\"} 1",
            "gdts_worker_job_runs_total{job_name=\"_other\",outcome=\"failed\"} 1",
            "gdts_worker_tick_start_lag_seconds_bucket{trigger=\"schedule\",le=\"0.005\"} 4",
            "gdts_worker_tick_start_lag_seconds_bucket{trigger=\"schedule\",le=\"0.0025\"} 0",
            "gdts_worker_run_duration_seconds_bucket{le=\"0.5\"} 4",
            "gdts_worker_records_total{event=\"queued\"} 4",
            "gdts_worker_records_pending 1",
        ] {
            assert!(text.contains(line), "{line} not in:\n{text}");
        }
        assert!(!text.contains("job_name=\"c\""), "{text}");
    }

    #[test]
    fn claims_sent_again_after_a_lost_answer_count_as_retries() {
        let m = Metrics::default();
        let job =
            gdts_common::Job::from_spec(&gdts_common::JobSpec::shell("r", "true", "* * * * * * *"))
                .unwrap();
        let first = ClaimRequest::new(&job, 1, gdts_common::keys::RunKey::scheduled(1000), 900);
        let again = ClaimRequest {
            earlier: vec![900],
            ..first.clone()
        };
        m.claims_sent(&[first, again], false);
        let text = m.render();
        assert!(
            text.contains("gdts_worker_claims_total{role=\"owner\"} 2"),
            "{text}"
        );
        assert!(text.contains("gdts_worker_claim_retries_total 1"), "{text}");
    }

    #[test]
    fn the_running_gauge_follows_its_guards() {
        let m = Metrics::default();
        let a = m.run_started();
        let _b = m.run_started();
        drop(a);
        assert!(m.render().contains("gdts_worker_runs_running 1"));
    }
}
