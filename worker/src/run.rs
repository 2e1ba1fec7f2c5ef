//! One run from claim to record: claim-ahead ticks (process prepared at a
//! gate, released at the tick), ticks claimed at their time, catch-up ticks,
//! manual runs, the retries of a failed run, and the records of ticks that
//! are skipped or missed.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use gdts_common::job::{Job, Overlap};
use gdts_common::keys::RunKey;
use gdts_common::log_record::LogRecord;
use gdts_common::timing::{
    CATCH_UP_KEY_SAFE_AGE, CATCH_UP_LABEL_AGE, CLAIM_REFRESH_EVERY, FORBID_MARK_LEAD,
    LAZY_RUNNING_MARK_AFTER, MAX_TICK_LATENESS, PREPARED_HOLD, PREPARE_DONE_BEFORE, RELEASE_CHECK,
    WAIT_FOR_REGISTRATION,
};
use gdts_common::values::FinishedRun;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::claim::{
    at_once_if_forbid, Claim, ClaimError, ClaimRequest, Claimer, SKIP_LEARNED_LATE,
};
use crate::container;
use crate::executor::{self, now_ms, Outcome, Prepared, RunLimits, ShellConfig};
use crate::jobs::DueTick;
use crate::jobs::SharedJobs;
use crate::metrics::{Metrics, Missed};
use crate::runner::{Launch, Runner};
use crate::runs::Runs;

/// What every run task shares.
pub struct RunContext {
    pub worker_id: String,
    /// The etcd prefix, recorded on containers so leftovers can be found.
    pub prefix: String,
    pub docker: container::DockerConn,
    pub claimer: Arc<Claimer>,
    pub runs: Arc<Runs>,
    pub limits: RunLimits,
    pub shell: ShellConfig,
    /// Opens the gates of prepared processes at their ticks.
    pub releaser: executor::Releaser,
    /// Starts every shell run's process, off the async runtime.
    pub preparer: Preparer,
    /// The jobs as this worker knows them now (a run checks its definition
    /// at its release).
    pub jobs: SharedJobs,
    /// Where outputs larger than the inline cap go, when a bucket is set.
    pub outputs: Option<Arc<crate::gcs::OutputStore>>,
    pub log_records: mpsc::Sender<LogRecord>,
    pub metrics: Arc<Metrics>,
    /// This worker's labels (`GDTS_WORKER_LABELS`), for manual runs of jobs
    /// with a selector.
    pub labels: std::collections::BTreeMap<String, String>,
    /// Sends the notices jobs ask for (`notify`).
    pub notifier: crate::notify::Notifier,
    /// Cancelled at shutdown: pending retries are abandoned.
    pub stop_scheduling: CancellationToken,
    /// Cancelled only once every run is over: a claim whose answer was lost
    /// is still resolved while the worker drains.
    pub stop_resolving: CancellationToken,
    /// This worker's clock against the reference (see `clock.rs`).
    pub clock: tokio::sync::watch::Receiver<crate::clock::ClockReading>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    Schedule,
    CatchUp,
    Manual,
}

impl Trigger {
    fn as_str(self) -> &'static str {
        match self {
            Trigger::Schedule => "schedule",
            Trigger::CatchUp => "catch-up",
            Trigger::Manual => "manual",
        }
    }
}

/// The variables every shell run gets on top of its job's `env`.
fn run_vars(job: &Job, run: &RunKey) -> [(&'static str, String); 2] {
    [
        ("GDTS_JOB", job.name.to_string()),
        ("GDTS_PLAN_TIME_MS", run.tick_ms.to_string()),
    ]
}

/// Starts processes ahead of their ticks, on threads of their own: starting
/// a process blocks the caller for a fraction of a millisecond (more on a
/// busy machine), which the async runtime should not pay, and the starts of
/// one second's ticks spread out instead of competing with the releases.
#[derive(Clone)]
pub struct Preparer {
    queues: Arc<Vec<std::sync::mpsc::Sender<PrepareJob>>>,
    next: Arc<std::sync::atomic::AtomicUsize>,
}

/// Threads starting processes: a start blocks its thread until the new
/// process has called exec, which on a busy machine waits for a CPU.
const PREPARER_THREADS: usize = 3;

struct PrepareJob {
    /// Wanted now (a run starting at once): first in line, no pacing.
    urgent: bool,
    command: String,
    env: BTreeMap<String, String>,
    vars: Vec<(&'static str, String)>,
    shell: ShellConfig,
    /// The tick: not started at all when dequeued after it.
    not_after: std::time::Instant,
    /// When the start was asked for.
    asked: std::time::Instant,
    reply: oneshot::Sender<Result<Prepared, String>>,
}

impl PrepareJob {
    /// Until when a start may be held while the machine's run queue is long
    /// (`load::StartGate`): one for a later tick until that tick (then the
    /// tick is missed); one wanted now `URGENT_HOLD` at most from when it
    /// was asked for, then it goes (it is already due: holding it longer
    /// would only make it later).
    fn hold_until(&self) -> std::time::Instant {
        if self.urgent {
            self.not_after.min(self.asked + URGENT_HOLD)
        } else {
            self.not_after
        }
    }
}

/// The longest a start wanted now waits for a shorter run queue.
const URGENT_HOLD: Duration = Duration::from_millis(500);

/// The preparer's answer for a start it dequeued after the tick.
const TOO_LATE_TO_PREPARE: &str = "too late to start ahead";

/// The `err` of a won tick whose process could not be started before it.
pub const MISSED_NOT_PREPARED: &str = "missed: this worker won the tick but could not start its \
     process before it (overloaded)";

/// Longest pause between two starts.
const MAX_PREPARE_GAP: Duration = Duration::from_millis(10);

/// No start ahead is made from `TICK_QUIET_BEFORE` before a whole second
/// until `TICK_QUIET_AFTER` after it (epoch ms): every scheduled tick falls
/// on a whole second, and there the releaser wakes that second's held
/// processes together. A start made then (for a later tick: they are spread
/// over the second before their tick, so some land there) takes a CPU from
/// the commands that should be starting. Starts wanted now are not held.
const TICK_QUIET_BEFORE: i64 = 3;
const TICK_QUIET_AFTER: i64 = 25;

/// How long a start ahead at `now_ms` (epoch ms) waits for the quiet time
/// around a whole second to end (zero outside it).
fn tick_quiet_wait(now_ms: i64) -> Duration {
    let into = now_ms.rem_euclid(1000);
    let wait = if into < TICK_QUIET_AFTER {
        TICK_QUIET_AFTER - into
    } else if into >= 1000 - TICK_QUIET_BEFORE {
        1000 - into + TICK_QUIET_AFTER
    } else {
        0
    };
    Duration::from_millis(wait as u64)
}

/// The pause after a start, so the starts due by `ready_by` spread evenly
/// over the time left: started back to back, hundreds of shells starting
/// up at once would be runnable together and crowd out the worker, etcd
/// and the runs going on (the scheduler shares the CPU per process).
fn prepare_gap(
    ready_by: std::time::Instant,
    still_queued: usize,
    now: std::time::Instant,
) -> Duration {
    let left = ready_by.saturating_duration_since(now);
    (left / (still_queued as u32 + 1)).min(MAX_PREPARE_GAP)
}

/// Queues a start: urgent ones (a run starting now) ahead of the starts
/// prepared for later ticks, behind earlier urgent ones, so the oldest waits
/// least.
fn enqueue<T>(queued: &mut std::collections::VecDeque<T>, job: T, urgent: impl Fn(&T) -> bool) {
    if urgent(&job) {
        let at = queued.iter().take_while(|j| urgent(j)).count();
        queued.insert(at, job);
    } else {
        queued.push_back(job);
    }
}

/// Takes in what comes on `jobs` until `deadline`, or until a start wanted
/// now comes (`urgent`).
fn take_in_until<T>(
    jobs: &std::sync::mpsc::Receiver<T>,
    queued: &mut std::collections::VecDeque<T>,
    deadline: std::time::Instant,
    urgent: impl Fn(&T) -> bool,
) {
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            return;
        }
        match jobs.recv_timeout(left) {
            Ok(job) => {
                let now = urgent(&job);
                enqueue(queued, job, &urgent);
                if now {
                    return;
                }
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => return,
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                // Shutting down: still not before the deadline.
                std::thread::sleep(left);
                return;
            }
        }
    }
}

impl Preparer {
    /// Runs until every handle is dropped.
    pub fn start(
        runtime: tokio::runtime::Handle,
        nice: i32,
        cgroup: Option<Arc<crate::cgroup::JobCgroup>>,
        gate: crate::load::StartGate,
    ) -> Preparer {
        let queues = (0..PREPARER_THREADS)
            .map(|i| Self::start_thread(runtime.clone(), i, nice, cgroup.clone(), gate.clone()))
            .collect();
        Preparer {
            queues: Arc::new(queues),
            next: Arc::new(std::sync::atomic::AtomicUsize::new(0)),
        }
    }

    fn start_thread(
        runtime: tokio::runtime::Handle,
        i: usize,
        nice: i32,
        cgroup: Option<Arc<crate::cgroup::JobCgroup>>,
        gate: crate::load::StartGate,
    ) -> std::sync::mpsc::Sender<PrepareJob> {
        let (queue, jobs) = std::sync::mpsc::channel::<PrepareJob>();
        std::thread::Builder::new()
            .name(format!("gdts-preparer-{i}"))
            .spawn(move || {
                let _entered = runtime.enter();
                let mut queued = std::collections::VecDeque::new();
                loop {
                    if queued.is_empty() {
                        match jobs.recv() {
                            Ok(job) => queued.push_back(job),
                            Err(_) => return,
                        }
                    }
                    for job in jobs.try_iter() {
                        enqueue(&mut queued, job, |j| j.urgent);
                    }
                    let Some(job) = queued.pop_front() else {
                        continue;
                    };
                    let now = std::time::Instant::now();
                    let quiet = if job.urgent {
                        Duration::ZERO
                    } else {
                        tick_quiet_wait(executor::now_ms())
                    };
                    let result = if job.reply.is_closed() {
                        // Nobody waits for it any more.
                        continue;
                    } else if now > job.not_after {
                        Err(TOO_LATE_TO_PREPARE.to_string())
                    } else if !quiet.is_zero() && now + quiet < job.not_after {
                        // Around a whole second: held until its quiet time
                        // ends (one for the second being released is not:
                        // it would miss its tick), but not a start wanted
                        // now that comes meanwhile.
                        queued.push_front(job);
                        // One for the second being released that queued
                        // behind it (asked for late: its job saved, or taken
                        // over, just before the tick) goes first, now.
                        match queued.iter().position(|j| j.not_after <= now + quiet) {
                            Some(i) => {
                                let due = queued.remove(i).expect("found");
                                queued.push_front(due);
                            }
                            None => take_in_until(&jobs, &mut queued, now + quiet, |j| j.urgent),
                        }
                        continue;
                    } else if now < job.hold_until() && !gate.open() {
                        // The run queue is long: held, and looked at again
                        // shortly, behind any start wanted now that came
                        // meanwhile (see `load.rs`). One for a later tick
                        // held until its tick is not made.
                        queued.push_front(job);
                        std::thread::sleep(crate::load::RECHECK);
                        continue;
                    } else {
                        executor::prepare_shell(&job.shell, &job.command, &job.env, &job.vars)
                            .inspect(|p| {
                                if let (Some(group), Some(pid)) = (&cgroup, p.pid()) {
                                    // ESRCH: it already exited (a syntax error).
                                    if let Err(e) = group.add(pid) {
                                        if e.raw_os_error() != Some(nix::errno::Errno::ESRCH as i32) {
                                            tracing::debug!(error = %e, "could not move a run into the job cgroup");
                                        }
                                    }
                                }
                                p.lower_priority(nice)
                            })
                    };
                    let ready_by = job
                        .not_after
                        .checked_sub(PREPARE_DONE_BEFORE)
                        .unwrap_or(now);
                    if let Err(Ok(prepared)) = job.reply.send(result) {
                        // Nobody waits for it any more.
                        prepared.abort();
                    }
                    if job.urgent || queued.front().is_some_and(|j| j.urgent) {
                        continue;
                    }
                    let due_with = queued
                        .iter()
                        .filter(|j| j.not_after <= job.not_after)
                        .count();
                    std::thread::sleep(prepare_gap(ready_by, due_with, std::time::Instant::now()));
                }
            })
            .expect("starting a preparer thread");
        queue
    }

    /// Queues the start of `job`'s command for `run`; the answer arrives on
    /// the returned channel.
    pub fn prepare(
        &self,
        shell: &ShellConfig,
        job: &Job,
        run: &RunKey,
        not_after: std::time::Instant,
    ) -> oneshot::Receiver<Result<Prepared, String>> {
        self.send(shell, job, run, not_after, false)
    }

    /// Starts `job`'s command for `run` now (first in line, after the other
    /// starts asked for now), for a run that starts at once: off the async
    /// runtime all the same. With `not_after`, a start the preparer cannot
    /// make by then fails with `TOO_LATE_TO_PREPARE`.
    pub async fn start_now(
        &self,
        shell: &ShellConfig,
        job: &Job,
        run: &RunKey,
        not_after: Option<std::time::Instant>,
    ) -> Result<Prepared, String> {
        let not_after =
            not_after.unwrap_or_else(|| std::time::Instant::now() + Duration::from_secs(3600));
        self.send(shell, job, run, not_after, true)
            .await
            .unwrap_or_else(|_| Err("the preparer has stopped".into()))
    }

    fn send(
        &self,
        shell: &ShellConfig,
        job: &Job,
        run: &RunKey,
        not_after: std::time::Instant,
        urgent: bool,
    ) -> oneshot::Receiver<Result<Prepared, String>> {
        let (reply, answer) = oneshot::channel();
        let i = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % self.queues.len();
        let _ = self.queues[i].send(PrepareJob {
            urgent,
            command: job.command.clone(),
            env: job.env.clone(),
            vars: run_vars(job, run).to_vec(),
            shell: shell.clone(),
            not_after,
            asked: std::time::Instant::now(),
            reply,
        });
        answer
    }
}

/// Why a won tick has no process started ahead: its claim was settled
/// more than `PREPARED_HOLD` after the tick, and the process was killed.
const HELD_PAST_TICK: &str = "its claim was settled too long after the tick";

/// What the planner tells a prepared run once its claim is settled.
#[derive(Debug)]
pub enum Go {
    /// Won: run at the tick.
    Run { revision: i64 },
    /// Not this worker's: the process is killed, never released.
    Drop,
}

/// A claim-ahead tick this worker owns: its process is being started at the
/// gate; it runs at the tick if the planner says the claim was won.
pub async fn prepared_tick(
    ctx: Arc<RunContext>,
    job: Arc<Job>,
    job_revision: i64,
    tick: DateTime<Utc>,
    prepared: oneshot::Receiver<Result<Prepared, String>>,
    go: oneshot::Receiver<Go>,
) {
    let run = RunKey::scheduled(tick.timestamp_millis());
    let mut go = go;
    let hold = run.tick_ms + PREPARED_HOLD.as_millis() as i64 - now_ms();
    let settled = tokio::select! {
        biased;
        decision = &mut go => Some(decision),
        _ = tokio::time::sleep(Duration::from_millis(hold.max(0) as u64)) => None,
    };
    let (decision, prepared) = match settled {
        Some(decision) => (
            decision,
            prepared
                .await
                .unwrap_or_else(|_| Err("preparer stopped".into())),
        ),
        None => {
            let prepared = match prepared.await {
                Ok(Ok(p)) => {
                    p.abort();
                    Err(HELD_PAST_TICK.to_string())
                }
                // Not started (too late, the run queue too long): a claim
                // won later is missed, not started now.
                Ok(Err(e)) => Err(e),
                Err(_) => Err("preparer stopped".into()),
            };
            (go.await, prepared)
        }
    };
    let decided = now_ms() - run.tick_ms;
    tracing::debug!(job = %job.name, decided_ms = decided, prepared_ms = now_ms() - run.tick_ms, ok = prepared.is_ok(), "prepared tick settled");
    match decision {
        Ok(Go::Run { revision }) => {
            let prepared = match prepared {
                Ok(p) => Some(p),
                Err(e) if e == TOO_LATE_TO_PREPARE => {
                    // The preparer is behind: this worker is overloaded.
                    // Starting the process late would only add to it.
                    ctx.metrics.tick_missed(Missed::NotPrepared);
                    log_not_run(
                        &ctx,
                        &job,
                        &run,
                        Trigger::Schedule,
                        revision,
                        "missed",
                        MISSED_NOT_PREPARED,
                    )
                    .await;
                    return;
                }
                Err(e) => {
                    tracing::debug!(job = %job.name, error = %e, "not prepared ahead; starting at the tick");
                    None
                }
            };
            let start = Start {
                prepared,
                at: Some(tick),
                ahead: true,
            };
            execute_and_retry(
                &ctx,
                &job,
                job_revision,
                run,
                Trigger::Schedule,
                revision,
                start,
            )
            .await;
        }
        Ok(Go::Drop) | Err(_) => {
            if let Ok(p) = prepared {
                p.abort();
            }
        }
    }
}

/// A tick this worker claimed (ahead, or at its time) without a prepared
/// process: runs it at the tick.
pub async fn claimed_tick(
    ctx: Arc<RunContext>,
    job: Arc<Job>,
    job_revision: i64,
    tick: DateTime<Utc>,
    claim: Claim,
) {
    let run = RunKey::scheduled(tick.timestamp_millis());
    match claim {
        Claim::Won { revision } => {
            let start = Start {
                prepared: None,
                at: Some(tick),
                ahead: gdts_common::plan::ClaimMode::of(&job)
                    == gdts_common::plan::ClaimMode::Ahead,
            };
            execute_and_retry(
                &ctx,
                &job,
                job_revision,
                run,
                Trigger::Schedule,
                revision,
                start,
            )
            .await
        }
        Claim::Skipped { revision, reason } => {
            log_skip(&ctx, &job, &run, Trigger::Schedule, revision, reason).await
        }
        Claim::Missed { revision } => {
            ctx.metrics.tick_missed(Missed::Late);
            log_not_run(
                &ctx,
                &job,
                &run,
                Trigger::Schedule,
                revision,
                "missed",
                MISSED_LATE,
            )
            .await
        }
        Claim::Lost => {}
    }
}

/// The `err` of a tick recorded as missed: nobody could start it in time.
pub const MISSED_LATE: &str = "missed: no worker could start this tick within the lateness bound \
     (its owner was down, cut off from etcd or overloaded)";

/// A manual run requested through `/job/run`.
pub async fn run_manual(
    ctx: Arc<RunContext>,
    job: Arc<Job>,
    job_revision: i64,
    requested_at: i64,
    request: String,
) {
    let run = RunKey::manual(requested_at, &request);
    let request = ClaimRequest::new(&job, job_revision, run.clone(), now_ms());
    match claim_one(&ctx, &request).await {
        Some(Claim::Won { revision }) => {
            execute_and_retry(
                &ctx,
                &job,
                job_revision,
                run,
                Trigger::Manual,
                revision,
                Start::now(),
            )
            .await
        }
        Some(Claim::Skipped { revision, reason }) => {
            log_skip(&ctx, &job, &run, Trigger::Manual, revision, reason).await
        }
        _ => {}
    }
}

/// The ticks of one job due in the first wake-up after a start or resync,
/// oldest first, claimed in order by this one task. Ticks older than
/// `CATCH_UP_KEY_SAFE_AGE` are claimed only while the job's watermark is below
/// them, so a tick that already ran (its claim key expired since) never runs
/// again; younger ones are protected by their claim keys. Won runs proceed as
/// their own tasks.
pub async fn catch_up_ticks(
    ctx: Arc<RunContext>,
    mut queue: mpsc::UnboundedReceiver<DueTick>,
    tasks: TaskTracker,
) {
    let Some(first) = queue.recv().await else {
        return;
    };
    let job = first.job.clone();
    let mut mark = match ctx.claimer.watermark(&job.name).await {
        Ok(mark) => mark.unwrap_or(i64::MIN),
        Err(e) => {
            // Unknown watermark: old ticks fail their compare in etcd anyway.
            tracing::warn!(job = %job.name, error = %e, "could not read the watermark");
            i64::MIN
        }
    };
    // Ticks that come due meanwhile join this queue, so the job's claims stay
    // in tick order until it is drained; then the planner claims as usual.
    let mut next = Some(first);
    while let Some(due) = next {
        if ctx.stop_scheduling.is_cancelled() {
            // Shutting down: claim nothing new.
            return;
        }
        let tick_ms = due.tick.timestamp_millis();
        if tick_ms > mark {
            if let Some(won) = catch_up_one(&ctx, &job, due, &tasks).await {
                mark = won;
            }
        }
        next = match queue.try_recv() {
            Ok(due) => Some(due),
            // Drained: close the queue (the planner then claims as usual)
            // and take whatever it handed over before it saw it closed.
            Err(_) => {
                queue.close();
                queue.try_recv().ok()
            }
        };
    }
}

/// Claims one tick of a catch-up; returns it when this worker won it.
async fn catch_up_one(
    ctx: &Arc<RunContext>,
    job: &Arc<Job>,
    due: DueTick,
    tasks: &TaskTracker,
) -> Option<i64> {
    let tick_ms = due.tick.timestamp_millis();
    let run = RunKey::scheduled(tick_ms);
    let mut pause = Duration::from_secs(1);
    // Attempts whose outcome stayed unknown (see `ClaimRequest::earlier`),
    // the planner's too.
    let mut earlier = due.earlier.clone();
    let (claim, trigger) = loop {
        let age = (Utc::now() - due.tick).to_std().unwrap_or_default();
        let trigger = if age > CATCH_UP_LABEL_AGE {
            Trigger::CatchUp
        } else {
            Trigger::Schedule
        };
        if age > MAX_TICK_LATENESS && !due.catch_up {
            return None;
        }
        if age > job.policy.catch_up.max(MAX_TICK_LATENESS) {
            tracing::warn!(job = %job.name, tick = %due.tick, "not caught up: older than catchUpSeconds before etcd settled its claim");
            return None;
        }
        let request = ClaimRequest {
            catch_up: age > CATCH_UP_KEY_SAFE_AGE,
            earlier: earlier.clone(),
            ..ClaimRequest::new(job, due.job_revision, run.clone(), now_ms())
        };
        match claim_one(ctx, &request).await {
            Some(claim) => break (claim, trigger),
            // Not settled (etcd unreachable): the same tick again, so the
            // job's ticks stay in order.
            None => {
                earlier.push(request.now_ms);
                tokio::select! {
                    _ = ctx.stop_scheduling.cancelled() => return None,
                    _ = tokio::time::sleep(pause) => {}
                }
                pause = (pause * 2).min(Duration::from_secs(5));
            }
        }
    };
    match claim {
        Claim::Won { revision } => {
            let ctx = ctx.clone();
            let job = job.clone();
            tasks.spawn(async move {
                execute_and_retry(
                    &ctx,
                    &job,
                    due.job_revision,
                    run,
                    trigger,
                    revision,
                    Start::now(),
                )
                .await
            });
            Some(tick_ms)
        }
        Claim::Skipped { revision, reason } => {
            log_skip(ctx, job, &run, trigger, revision, reason).await;
            Some(tick_ms)
        }
        Claim::Missed { .. } => Some(tick_ms),
        // Someone else has it (or the job changed): go on with the next.
        Claim::Lost => None,
    }
}

/// Claims one run. A claim that fails or times out after it was sent may
/// still have committed (its answer lost with the connection): then the
/// worker asks etcd which it was, so a run it won is run here, late, rather
/// than by nobody. `None` when that cannot be known in time.
pub async fn claim_one(ctx: &RunContext, request: &ClaimRequest) -> Option<Claim> {
    claim_many(ctx, std::slice::from_ref(request), None)
        .await
        .pop()
        .flatten()
}

/// Claims a batch (see [`Claimer::claim_batch`]), resolving the outcome of
/// a batch whose answer was lost.
pub async fn claim_many(
    ctx: &RunContext,
    requests: &[ClaimRequest],
    horizon: Option<gdts_common::values::Horizon>,
) -> Vec<Option<Claim>> {
    let lease = ctx.claimer.registration_lease_id();
    let result = send_claims(ctx, requests, horizon).await;
    settle_claims(ctx, requests, result, lease).await
}

/// Sends one claim transaction (waiting a little for a registration first).
pub async fn send_claims(
    ctx: &RunContext,
    requests: &[ClaimRequest],
    horizon: Option<gdts_common::values::Horizon>,
) -> Result<Vec<Claim>, ClaimError> {
    if ctx.claimer.registration_lease_id() == 0 {
        ctx.claimer.wait_registered(WAIT_FOR_REGISTRATION).await;
    }
    ctx.claimer.claim_batch(requests, horizon).await
}

/// The outcomes of a sent batch: its answer, or what etcd says when asked
/// after the answer was lost. `lease` is the registration lease the claims
/// were sent under.
pub async fn settle_claims(
    ctx: &RunContext,
    requests: &[ClaimRequest],
    result: Result<Vec<Claim>, ClaimError>,
    lease: i64,
) -> Vec<Option<Claim>> {
    let failure = match result {
        Ok(claims) => return claims.into_iter().map(Some).collect(),
        Err(e @ (ClaimError::NotRegistered | ClaimError::NotSent(_))) => {
            // Never reached etcd: nothing to ask about (the planner decides
            // the ticks again).
            tracing::warn!(runs = requests.len(), error = %e, "claims not sent");
            return vec![None; requests.len()];
        }
        Err(e) => e.to_string(),
    };
    tracing::warn!(runs = requests.len(), first = %requests[0].job, error = %failure,
        "claims got no answer; asking etcd whether they were won");
    let outcomes = ctx.claimer.resolve(requests, &ctx.stop_resolving).await;
    let registration_changed = ctx.claimer.registration_lease_id() != lease;
    let settled: Vec<Option<Claim>> = requests
        .iter()
        .zip(outcomes)
        .map(|(request, outcome)| match outcome {
            Some(Claim::Won { revision })
                if request.overlap != Overlap::Allow && registration_changed =>
            {
                // The running mark of the claim went with the registration that
                // expired meanwhile, so other runs may have started: running now
                // could break the overlap policy. The tick is recorded instead.
                tracing::warn!(job = %request.job, run = %request.run,
                    "won a claim, learned too late to run it under its overlap policy");
                // Its mark, should it still be there, must not hold up the
                // job's later ticks.
                ctx.claimer.clear_running(&request.job, &request.run, at_once_if_forbid(request));
                Some(Claim::Skipped {
                    revision,
                    reason: SKIP_LEARNED_LATE,
                })
            }
            other => {
                tracing::debug!(job = %request.job, run = %request.run, outcome = ?other, "claim outcome learned");
                other
            }
        })
        .collect();
    let won = settled
        .iter()
        .filter(|c| matches!(c, Some(Claim::Won { .. })))
        .count();
    let unknown = settled.iter().filter(|c| c.is_none()).count();
    tracing::info!(runs = requests.len(), first = %requests[0].job, won, unknown,
        others = requests.len() - won - unknown, "claim outcomes learned");
    settled
}

/// How a won run starts: with a process prepared ahead or not, at a tick
/// (a wall-clock time) or at once.
pub struct Start {
    prepared: Option<Prepared>,
    at: Option<DateTime<Utc>>,
    /// Claimed ahead of its tick (no running mark written with the claim).
    ahead: bool,
}

impl Start {
    fn now() -> Start {
        Start {
            prepared: None,
            at: None,
            ahead: false,
        }
    }
}

/// The `err` of a won tick this worker could not start in time.
pub const MISSED_OVERLOADED: &str = "missed: this worker won the tick but could not start it \
     within the lateness bound (overloaded)";

/// Runs a won claim; a failed or timed-out attempt is retried (each retry
/// claimed under its own key, so no attempt runs twice) with exponential
/// backoff and jitter, up to the job's `retries`.
async fn execute_and_retry(
    ctx: &RunContext,
    job: &Arc<Job>,
    job_revision: i64,
    mut run: RunKey,
    trigger: Trigger,
    mut claim_revision: i64,
    start: Start,
) {
    let mut job = job.clone();
    let mut start = Some(start);
    loop {
        let Some(outcome) = execute(
            ctx,
            &mut job,
            job_revision,
            &run,
            trigger,
            claim_revision,
            start.take().unwrap_or_else(Start::now),
        )
        .await
        else {
            return;
        };
        let retry = !outcome.succeeded() && !outcome.killed && run.attempt <= job.policy.retries;
        if !retry {
            return;
        }
        let wait = retry_backoff(job.policy.retry_backoff, run.attempt);
        tracing::info!(job = %job.name, attempt = run.attempt, retry_in = ?wait, "run failed; will retry");
        // Waiting for its retry, the run can still be killed: a kill
        // request for the job (written after this attempt's claim) ends it.
        let waiting = ctx
            .runs
            .start(job.name.clone(), run.tick_ms, claim_revision, false);
        tokio::select! {
            _ = ctx.stop_scheduling.cancelled() => {
                tracing::warn!(job = %job.name, attempt = run.attempt + 1, "shutting down; retry abandoned");
                return;
            }
            _ = waiting.kill.cancelled() => {
                tracing::info!(job = %job.name, attempt = run.attempt + 1, "killed while waiting to retry; no more attempts");
                return;
            }
            _ = tokio::time::sleep(wait) => {}
        }
        drop(waiting);
        run = run.next_attempt();
        let request = ClaimRequest::new(&job, job_revision, run.clone(), now_ms());
        match claim_one(ctx, &request).await {
            Some(Claim::Won { revision }) => claim_revision = revision,
            Some(Claim::Skipped { revision, reason }) => {
                log_skip(ctx, &job, &run, trigger, revision, reason).await;
                return;
            }
            // The job changed or was deleted meanwhile: no more attempts.
            _ => return,
        }
    }
}

/// `base * 2^(attempt-1)`, ±20 % jitter, at most an hour.
fn retry_backoff(base: Duration, attempt: u32) -> Duration {
    // Jitter from the clock's nanoseconds: no RNG dependency needed for this.
    let nanos = u64::from(Utc::now().timestamp_subsec_nanos());
    retry_backoff_with(base, attempt, 0.8 + 0.4 * (nanos % 1000) as f64 / 1000.0)
}

/// [`retry_backoff`] with its jitter factor given; the hour caps the
/// jittered wait, so no retry waits longer (README).
fn retry_backoff_with(base: Duration, attempt: u32, jitter: f64) -> Duration {
    const MAX_RETRY_BACKOFF: Duration = Duration::from_secs(3600);
    let exp = base.saturating_mul(1u32 << (attempt - 1).min(16));
    exp.min(MAX_RETRY_BACKOFF)
        .mul_f64(jitter)
        .min(MAX_RETRY_BACKOFF)
}

/// The skip record of a claimed tick whose job changed or was deleted
/// between the claim and the tick.
const SKIP_CHANGED: &str = "skipped: the job was changed after this tick was claimed ahead, \
     and the new definition does not run it";

/// Runs one attempt. A run claimed ahead checks, at its release, that its
/// job is still the definition it was claimed for: a deleted job does not
/// run; a changed one runs its new definition if that still fires at the
/// tick the same way (claim-ahead), and is recorded as skipped otherwise.
/// `None` when the run did not happen (deleted job).
async fn execute(
    ctx: &RunContext,
    job: &mut Arc<Job>,
    job_revision: i64,
    run: &RunKey,
    trigger: Trigger,
    claim_revision: i64,
    start: Start,
) -> Option<Outcome> {
    let schedule_time = now_ms();
    let run_id = LogRecord::run_id(job.name.as_str(), run.tick_ms, claim_revision);
    let guard = ctx.runs.start(
        job.name.clone(),
        run.tick_ms,
        claim_revision,
        job.policy.overlap != Overlap::Allow,
    );
    let _running = ctx.metrics.run_started();
    let Start {
        mut prepared,
        at: release_at,
        ahead: claimed_ahead,
    } = start;
    // A claim-ahead tick this worker could not release within the lateness
    // bound (it is overloaded, or learned of its claim late) is recorded as
    // missed, never started late. (A claim made at the tick whose answer
    // came late still runs, late.)
    if let Some(at) = release_at {
        let late = (Utc::now() - at).to_std().unwrap_or_default();
        let mut too_late = claimed_ahead && late > MAX_TICK_LATENESS && run.is_scheduled_tick();
        // Won without a process ready (its start ahead failed or came too
        // late, or the claim came late): start it now, but only within the
        // lateness bound, like every claim-ahead tick; an overloaded
        // preparer must not pile up starts it can only make minutes late.
        if !too_late
            && prepared.is_none()
            && claimed_ahead
            && Runner::of(job).starts_ahead()
            && run.is_scheduled_tick()
        {
            let left = (at + chrono::Duration::from_std(MAX_TICK_LATENESS).expect("small")
                - Utc::now())
            .to_std()
            .unwrap_or_default();
            let not_after = std::time::Instant::now() + left;
            match ctx
                .preparer
                .start_now(&ctx.shell, job, run, Some(not_after))
                .await
            {
                Ok(p) => prepared = Some(p),
                Err(e) if e == TOO_LATE_TO_PREPARE => too_late = true,
                // Tried again below, which records why it failed.
                Err(_) => {}
            }
        }
        if too_late {
            if let Some(p) = prepared.take() {
                p.abort();
            }
            drop(guard);
            ctx.metrics.tick_missed(Missed::Overloaded);
            log_not_run(
                ctx,
                job,
                run,
                trigger,
                claim_revision,
                "missed",
                MISSED_OVERLOADED,
            )
            .await;
            return None;
        }
    }
    // A prepared process's gate goes to the releaser at once, which opens it
    // at the tick (this task may be woken late on a busy machine); until
    // then a kill or a change of the job still keeps it closed.
    let mut handed = match (prepared.as_mut(), release_at) {
        (Some(p), Some(at)) => Some(p.hand_over(&ctx.releaser, at.timestamp_millis())),
        _ => None,
    };
    // Closes the gate if it is not open yet; true if it was still closed.
    let stop_before_release =
        |handed: &Option<executor::HandedGate>| handed.as_ref().is_none_or(|h| h.cancel());
    if let Some(at) = release_at {
        let check_at = at - chrono::Duration::from_std(RELEASE_CHECK).expect("small");
        let wait = (check_at - Utc::now()).to_std().unwrap_or_default();
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = guard.kill.cancelled() => {
                stop_before_release(&handed);
            }
        }
    }
    if claimed_ahead {
        match ctx.jobs.current(&job.name) {
            Some((_, revision)) if revision == job_revision => {}
            // Learned too late: the gate is open, the claimed definition runs
            // (the window ARCHITECTURE.md states).
            Some(_) | None if !stop_before_release(&handed) => {
                tracing::info!(job = %job.name, run = %run, "job changed after its tick was released");
            }
            Some((current, _))
                if gdts_common::plan::ClaimMode::of(&current)
                    == gdts_common::plan::ClaimMode::Ahead
                    && current.schedule.fires_at(
                        chrono::DateTime::from_timestamp_millis(run.tick_ms).unwrap_or_default(),
                    )
                    && !current.paused =>
            {
                tracing::info!(job = %job.name, run = %run, "job changed since the claim; running its new definition");
                if let Some(p) = prepared.take() {
                    p.abort();
                }
                handed = None;
                *job = current;
            }
            Some(_) => {
                if let Some(p) = prepared.take() {
                    p.abort();
                }
                drop(guard);
                log_skip(ctx, job, run, trigger, claim_revision, SKIP_CHANGED).await;
                return None;
            }
            None => {
                tracing::info!(job = %job.name, run = %run, "job deleted since the claim; not run");
                if let Some(p) = prepared.take() {
                    p.abort();
                }
                return None;
            }
        }
    }
    let mut marked = !claimed_ahead;
    let vars = run_vars(job, run);
    let launch = Launch {
        job,
        release_at,
        limits: &ctx.limits,
        timeout: job.policy.timeout,
        kill: &guard.kill,
        kill_reason: || guard.kill_reason(),
    };
    let outcome = {
        let running = async {
            match Runner::of(job) {
                Runner::Shell => {
                    let prepared = match prepared.take() {
                        Some(p) => Ok(p),
                        None => ctx.preparer.start_now(&ctx.shell, job, run, None).await,
                    };
                    executor::run_prepared(&launch, prepared, handed.take(), &ctx.releaser).await
                }
                Runner::Container(spec) => {
                    let identity = container::ContainerRun {
                        shell: &ctx.shell.program,
                        prefix: &ctx.prefix,
                        worker: &ctx.worker_id,
                        job: job.name.as_str(),
                        tick_ms: run.tick_ms,
                        run_id: &run_id,
                        claim_revision,
                    };
                    let mut env = job.env.clone();
                    env.extend(vars.iter().map(|(k, v)| (k.to_string(), v.clone())));
                    container::run_container(&ctx.docker, spec, &env, &identity, &launch).await
                }
            }
        };
        tokio::pin!(running);
        let mark_after = tokio::time::sleep(LAZY_RUNNING_MARK_AFTER);
        tokio::pin!(mark_after);
        let mut refresh = tokio::time::interval_at(
            tokio::time::Instant::now() + CLAIM_REFRESH_EVERY,
            CLAIM_REFRESH_EVERY,
        );
        loop {
            tokio::select! {
                outcome = &mut running => break outcome,
                _ = refresh.tick() => {
                    // A long run: its claim lives as long as it does.
                    let (claimer, name, run) = (ctx.claimer.clone(), job.name.clone(), run.clone());
                    tokio::spawn(async move { claimer.refresh_claim(&name, &run).await });
                }
                _ = &mut mark_after, if !marked => {
                    // A long run: list it as running, for the API and kills.
                    ctx.claimer.mark_running(&job.name, run, now_ms());
                    marked = true;
                }
            }
        }
    };
    if marked {
        ctx.claimer
            .clear_running(&job.name, run, mark_gone_by(job, Utc::now()));
    }
    drop(guard);
    let output_uri = match (&ctx.outputs, &outcome.spool) {
        (Some(store), Some(spool)) => {
            let object = LogRecord::output_object(job.name.as_str(), run.tick_ms, claim_revision);
            match store.upload(&object, spool.path()).await {
                Ok(uri) => Some(uri),
                Err(e) => {
                    // The head and tail stay inline; the record says truncated.
                    tracing::error!(job = %job.name, run = %run, error = %e, "uploading the output failed");
                    None
                }
            }
        }
        _ => None,
    };
    if !outcome.succeeded() {
        tracing::info!(job = %job.name, run = %run, err = %outcome.err, "run failed");
    }
    let record = LogRecord {
        run_id,
        job_name: job.name.to_string(),
        command: job.command.clone(),
        err: outcome.err.clone(),
        output: outcome.output.clone(),
        plan_time: run.tick_ms,
        schedule_time,
        start_time: outcome.start_ms,
        end_time: outcome.end_ms,
        exit_code: outcome.exit_code,
        signal: outcome.signal,
        worker: ctx.worker_id.clone(),
        truncated: outcome.truncated,
        output_bytes: outcome.output_bytes,
        output_uri,
        killed: outcome.killed,
        status: outcome.status().into(),
        attempt: run.attempt,
        trigger: trigger.as_str().into(),
    };
    hand_over(ctx, job, record, run).await;
    Some(outcome)
}

/// Records a claimed tick that is not run, and why (`err`).
pub async fn log_skip(
    ctx: &RunContext,
    job: &Job,
    run: &RunKey,
    trigger: Trigger,
    claim_revision: i64,
    err: &str,
) {
    log_not_run(ctx, job, run, trigger, claim_revision, "skipped", err).await
}

async fn log_not_run(
    ctx: &RunContext,
    job: &Job,
    run: &RunKey,
    trigger: Trigger,
    claim_revision: i64,
    status: &str,
    err: &str,
) {
    let now = now_ms();
    tracing::info!(job = %job.name, run = %run, reason = err, status, "tick not run");
    let record = LogRecord {
        run_id: LogRecord::run_id(job.name.as_str(), run.tick_ms, claim_revision),
        job_name: job.name.to_string(),
        command: job.command.clone(),
        err: err.into(),
        output: String::new(),
        plan_time: run.tick_ms,
        schedule_time: now,
        start_time: now,
        end_time: now,
        exit_code: None,
        signal: None,
        worker: ctx.worker_id.clone(),
        truncated: false,
        output_bytes: 0,
        output_uri: None,
        killed: false,
        status: status.into(),
        attempt: run.attempt,
        trigger: trigger.as_str().into(),
    };
    hand_over(ctx, job, record, run).await;
}

async fn hand_over(ctx: &RunContext, job: &Job, record: LogRecord, run: &RunKey) {
    ctx.notifier.notify(job, &record);
    ctx.claimer.feed(FinishedRun {
        job: record.job_name.clone(),
        run: run.to_string(),
        run_id: record.run_id.clone(),
        status: record.status.clone(),
        start_time: record.start_time,
        end_time: record.end_time,
    });
    let job = record.job_name.clone();
    ctx.metrics.run_recorded(&record);
    if ctx.log_records.send(record).await.is_err() {
        tracing::error!(job = %job, "log writer has stopped; run record lost");
    }
}

/// When the deletion of the mark of a run of `job` that ends `now` must be
/// written by (see [`Claimer::clear_running`]): for a `forbid` job,
/// `FORBID_MARK_LEAD` before its next tick, which is claimed at the tick.
fn mark_gone_by(job: &Job, now: DateTime<Utc>) -> Option<i64> {
    if job.policy.overlap != Overlap::Forbid {
        return None;
    }
    let next = job.schedule.next_fire(now)?;
    Some(next.timestamp_millis() - FORBID_MARK_LEAD.as_millis() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starts_ahead_keep_off_the_moments_around_a_whole_second() {
        let second = 1_764_410_405_000_i64;
        let ms = |n| Duration::from_millis(n);
        assert_eq!(tick_quiet_wait(second), ms(25));
        assert_eq!(tick_quiet_wait(second + 10), ms(15));
        assert_eq!(tick_quiet_wait(second + 25), Duration::ZERO);
        assert_eq!(tick_quiet_wait(second + 500), Duration::ZERO);
        assert_eq!(tick_quiet_wait(second + 996), Duration::ZERO);
        assert_eq!(tick_quiet_wait(second + 997), ms(28));
        assert_eq!(tick_quiet_wait(second + 999), ms(26));
    }

    #[test]
    fn a_quiet_wait_takes_in_starts_and_ends_early_for_one_wanted_now() {
        use std::time::Instant;
        let (send, jobs) = std::sync::mpsc::channel::<(&str, bool)>();
        let mut queued = std::collections::VecDeque::from([("held", false)]);
        send.send(("later", false)).unwrap();
        send.send(("now", true)).unwrap();
        send.send(("after", false)).unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        take_in_until(&jobs, &mut queued, deadline, |j| j.1);
        assert!(Instant::now() < deadline);
        assert_eq!(
            queued.iter().map(|j| j.0).collect::<Vec<_>>(),
            ["now", "held", "later"]
        );
        // Nothing wanted now: until the deadline.
        let deadline = Instant::now() + Duration::from_millis(30);
        take_in_until(&jobs, &mut queued, deadline, |j| j.1);
        assert!(Instant::now() >= deadline);
        assert_eq!(queued.len(), 4);
        // Every sender gone (shutting down): still not before the deadline,
        // and what is queued stays queued.
        drop(send);
        let deadline = Instant::now() + Duration::from_millis(30);
        take_in_until(&jobs, &mut queued, deadline, |j| j.1);
        assert!(Instant::now() >= deadline);
        assert_eq!(
            queued.iter().map(|j| j.0).collect::<Vec<_>>(),
            ["now", "held", "later", "after"]
        );
    }

    #[test]
    fn a_forbid_runs_mark_is_gone_a_little_before_the_jobs_next_tick() {
        let spec = |overlap: &str, cron: &str| {
            Job::from_spec(&gdts_common::JobSpec {
                overlap: Some(overlap.into()),
                ..gdts_common::JobSpec::shell("m", "true", cron)
            })
            .unwrap()
        };
        let now = DateTime::parse_from_rfc3339("2026-11-29T10:00:05.960Z")
            .unwrap()
            .with_timezone(&Utc);
        let next_second = DateTime::parse_from_rfc3339("2026-11-29T10:00:06Z")
            .unwrap()
            .timestamp_millis();
        assert_eq!(
            mark_gone_by(&spec("forbid", "* * * * * * *"), now),
            Some(next_second - FORBID_MARK_LEAD.as_millis() as i64)
        );
        assert_eq!(mark_gone_by(&spec("allow", "* * * * * * *"), now), None);
        assert_eq!(mark_gone_by(&spec("replace", "* * * * * * *"), now), None);
    }

    #[test]
    fn starts_asked_for_now_go_first_oldest_first() {
        let mut queued = std::collections::VecDeque::new();
        for job in [(1, false), (2, true), (3, false), (4, true), (5, true)] {
            enqueue(&mut queued, job, |j| j.1);
        }
        let order: Vec<u32> = queued.iter().map(|j| j.0).collect();
        assert_eq!(order, [2, 4, 5, 1, 3]);
    }

    #[test]
    fn starts_spread_over_the_time_left() {
        let now = std::time::Instant::now();
        let ready_by = now + Duration::from_millis(700);
        // 349 more after this one, 700 ms left: 2 ms apart.
        assert_eq!(prepare_gap(ready_by, 349, now), Duration::from_millis(2));
        // Few left: never more than the cap; late: no pause at all.
        assert_eq!(prepare_gap(ready_by, 0, now), MAX_PREPARE_GAP);
        assert_eq!(
            prepare_gap(now, 10, now + Duration::from_millis(1)),
            Duration::ZERO
        );
    }

    #[test]
    fn backoff_grows_with_jitter() {
        let base = Duration::from_secs(2);
        for attempt in 1..=4 {
            let want = 2.0 * f64::from(1u32 << (attempt - 1));
            let got = retry_backoff(base, attempt).as_secs_f64();
            assert!(
                got >= want * 0.8 - 1e-9 && got <= want * 1.2 + 1e-9,
                "attempt {attempt}: {got}"
            );
        }
        // The hour caps the jittered wait, whatever the jitter.
        for jitter in [0.8, 1.0, 1.2] {
            let longest = retry_backoff_with(Duration::from_secs(3600), 10, jitter);
            assert!(
                longest <= Duration::from_secs(3600),
                "{longest:?} with jitter {jitter}"
            );
        }
        assert_eq!(
            retry_backoff_with(Duration::from_secs(10), 2, 1.2),
            Duration::from_secs(24)
        );
    }
}
