//! JSON values stored under the etcd keys of [`crate::keys`].

use std::collections::BTreeMap;

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
    /// Runs in progress on this worker. Workers write 0 (they write the
    /// record only when they register or change state); the manager fills it
    /// in from the running marks that name the worker.
    pub running: u32,
    /// When the worker last renewed its registration (epoch ms). Workers
    /// write 0; the manager fills it in from the registration lease.
    #[serde(default)]
    pub last_seen: i64,
    /// Set when the worker is shutting down: it claims nothing new and owns
    /// no ticks, while its runs in progress finish.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub draining: bool,
    /// Whether the worker can run container jobs (reaches a Docker daemon);
    /// container ticks are owned by workers that can.
    #[serde(default)]
    pub containers: bool,
    /// The reference clock (MongoDB's) minus the worker's, in milliseconds,
    /// as last measured; absent until measured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clock_offset_ms: Option<i64>,
    /// The worker's clock is off by more than `MAX_CLOCK_SKEW`: it claims
    /// nothing and owns no ticks until it is back within the bound.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub clock_skewed: bool,
    /// The worker cannot write run records (MongoDB refuses them): it
    /// journals them to disk and owns no ticks while another worker can.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub records_blocked: bool,
    /// The worker's labels (`GDTS_WORKER_LABELS`); a job with a `selector`
    /// is run only by workers whose labels include every pair of it.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub labels: std::collections::BTreeMap<String, String>,
}

/// The workers that take ticks: not draining, their clock within the
/// bound, and able to write run records; when none of those can write
/// records, all of them (their records are journaled). The planner ranks
/// ticks over these; the API flags a job no one of them matches.
pub fn ticking_workers<'a, I>(infos: I) -> Vec<&'a WorkerInfo>
where
    I: IntoIterator<Item = &'a WorkerInfo>,
{
    let sound: Vec<&WorkerInfo> = infos
        .into_iter()
        .filter(|i| !i.draining && !i.clock_skewed)
        .collect();
    let all_blocked = sound.iter().all(|i| i.records_blocked);
    sound
        .into_iter()
        .filter(|i| all_blocked || !i.records_blocked)
        .collect()
}

/// None of `ticking` (the workers that take ticks, [`ticking_workers`]) has
/// every label `selector` asks for (an empty selector is matched by any).
pub fn selector_unmatched(selector: &BTreeMap<String, String>, ticking: &[&WorkerInfo]) -> bool {
    !ticking
        .iter()
        .any(|w| crate::job::selector_matches(selector, &w.labels))
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
    /// True when the tick was claimed only to record that it was missed
    /// (no worker could start it within the lateness bound).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub missed: bool,
}

/// How far a worker has settled the ticks it owns: every tick it owns at or
/// before `ahead` (claim-ahead ticks) or `atTick` (ticks claimed at their
/// time) has been claimed, lost to another worker, or recorded as missed.
/// Backups read it (through a watch) to tell whether to step in; see
/// `plan.rs`. Values are tick times (epoch ms), not clock readings, so
/// workers with skewed clocks compare them safely.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Horizon {
    pub ahead: i64,
    pub at_tick: i64,
    /// The first tick time this worker (this life of it) took into
    /// account: it says nothing of ticks before it, which a worker that
    /// joins with its clock ahead never saw. 0: no such bound.
    #[serde(default)]
    pub since: i64,
    /// The fleet the horizon was computed under
    /// (`ownership::fleet_fingerprint`): a fleet change moves ticks between
    /// owners, so a backup whose view of the fleet differs does not take
    /// this horizon's word that a tick is covered (its owner may own it
    /// only since the change). 0: not given (trusted, as before).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub fleet: u64,
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

/// The runs a worker finished since it last wrote its `run-feed/` key: the
/// manager turns each into a `run.finished` event.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RunFeed {
    pub runs: Vec<FinishedRun>,
}

/// One finished (or skipped, or missed) run, as the run feed lists it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FinishedRun {
    pub job: String,
    /// The run key (`RunKey` text): tick, manual request, attempt.
    pub run: String,
    /// The run record's `_id`.
    pub run_id: String,
    /// The run record's `status`.
    pub status: String,
    /// Epoch milliseconds.
    pub start_time: i64,
    pub end_time: i64,
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
    /// With `replaced`: the tick of the run that replaces; only runs of
    /// older ticks are ended (a retry of an older tick never replaces a
    /// newer tick's run).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tick: Option<i64>,
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
