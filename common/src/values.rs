//! JSON values stored under the etcd keys of [`crate::keys`].

use serde::{Deserialize, Serialize};

/// A live worker's registration, under its kept-alive lease.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkerInfo {
    pub id: String,
    pub hostname: String,
    pub version: String,
    /// Epoch milliseconds.
    pub start_time: i64,
    /// Runs in progress on this worker when the record was last written.
    pub running: u32,
}

/// Who won a (job, tick).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClaimRecord {
    pub worker: String,
    /// The claiming worker's clock, epoch milliseconds.
    pub claimed_at: i64,
}

/// A request to kill every run of a job in progress when it was written.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KillRequest {
    /// Epoch milliseconds, manager clock; informational only (workers compare
    /// etcd revisions, not clocks).
    pub requested_at: i64,
}
