//! JSON values stored under the etcd keys of [`crate::keys`].

use serde::{Deserialize, Serialize};

/// A live worker's registration, under its kept-alive lease.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct WorkerInfo {
    pub id: String,
    pub hostname: String,
    pub version: String,
    /// Epoch milliseconds.
    pub start_time: i64,
    /// Runs in progress on this worker when the record was last written.
    pub running: u32,
    /// When the worker last renewed its registration (its clock, epoch ms).
    #[serde(default)]
    pub last_seen: i64,
}

/// Who won a (job, tick).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClaimRecord {
    pub worker: String,
    /// The claiming worker's clock, epoch milliseconds.
    pub claimed_at: i64,
    /// True when the tick was claimed only to record that it was skipped
    /// (overlap `forbid` while a run was in progress).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub skipped: bool,
}

/// A request to kill every run of a job in progress when it was written.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KillRequest {
    /// Epoch milliseconds, writer's clock; informational only (workers compare
    /// etcd revisions, not clocks).
    pub requested_at: i64,
    /// `replaced` when a newer run of the job replaced the running ones
    /// (overlap `replace`); absent for an operator's kill.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// A run in progress somewhere in the fleet.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RunningRecord {
    pub worker: String,
    /// Worker clock, epoch milliseconds.
    pub started_at: i64,
}

/// A request for one immediate run of a job (`POST /job/run`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RunNowRequest {
    /// Manager clock, epoch milliseconds: the manual run's `planTime`.
    pub requested_at: i64,
}
