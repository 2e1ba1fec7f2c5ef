//! The record of one run, as stored in MongoDB and returned by `/job/log`.
//! Field names follow the original system; times are epoch milliseconds.

use serde::{Deserialize, Serialize};

/// MongoDB collection holding run records.
pub const LOG_COLLECTION: &str = "job_logs";

/// The status of a run whose worker died (or was cut off past its lease)
/// before it recorded the run: claimed, but nobody knows how it ended.
pub const STATUS_LOST: &str = "lost";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct LogRecord {
    /// Unique per run: `{job}@{tick_ms}#{claim_revision}`. Also the document
    /// `_id`, so a retried insert of the same record is a no-op.
    pub run_id: String,
    pub job_name: String,
    pub command: String,
    /// Why the run failed (spawn error, non-zero exit, killed); empty on success.
    pub err: String,
    /// Combined stdout and stderr, at most the configured cap (the tail is
    /// kept). Empty in listings, which leave it out.
    #[serde(default)]
    pub output: String,
    /// The scheduled tick this run is for.
    pub plan_time: i64,
    /// When the worker won the claim for the tick.
    pub schedule_time: i64,
    pub start_time: i64,
    pub end_time: i64,
    /// Exit code, or `None` when the process was ended by a signal or never started.
    pub exit_code: Option<i32>,
    /// The signal that ended the process, if any.
    pub signal: Option<i32>,
    pub worker: String,
    /// True when `output` is not the whole output: only its tail (no
    /// bucket), or its head and tail with the whole in `outputUri`.
    pub truncated: bool,
    /// Bytes the run wrote to stdout and stderr.
    #[serde(default)]
    pub output_bytes: u64,
    /// `gs://bucket/object` holding the whole output, when it was larger than
    /// the inline cap; served by `GET /job/output`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_uri: Option<String>,
    /// True when the run was ended by a kill request (an operator's, or a
    /// newer run replacing it).
    pub killed: bool,
    /// `succeeded`, `failed`, `killed`, `timed-out`, `skipped`, `missed`, or
    /// [`STATUS_LOST`]: the run's worker stopped before it recorded the run
    /// (written by another worker; the real record replaces it should it
    /// come after all).
    pub status: String,
    /// 1 for the first attempt; n for retry n - 1.
    #[serde(default = "first_attempt")]
    pub attempt: u32,
    /// `schedule`, `catch-up` (a tick missed during an outage) or `manual`
    /// (`/job/run`).
    #[serde(default = "scheduled")]
    pub trigger: String,
}

fn first_attempt() -> u32 {
    1
}

fn scheduled() -> String {
    "schedule".into()
}

impl LogRecord {
    pub fn run_id(job: &str, tick_ms: i64, claim_revision: i64) -> String {
        format!("{job}@{tick_ms}#{claim_revision}")
    }

    /// The bucket object holding a run's whole output.
    pub fn output_object(job: &str, tick_ms: i64, claim_revision: i64) -> String {
        format!("outputs/{job}/{tick_ms}-{claim_revision}.log")
    }
}
