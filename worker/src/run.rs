//! One run from claim to log record: scheduled ticks, catch-up ticks, manual
//! runs, and the retries of a failed run.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use gdts_common::job::{Job, Overlap};
use gdts_common::keys::RunKey;
use gdts_common::log_record::LogRecord;
use gdts_common::timing::{CATCH_UP_KEY_SAFE_AGE, CLAIM_TIMEOUT, MAX_TICK_LATENESS};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::claim::{Claim, ClaimError, ClaimRequest, Claimer, SKIP_LEARNED_LATE};
use crate::container;
use crate::executor::{self, now_ms, Outcome, RunLimits};
use crate::runs::Runs;
use crate::scheduler::DueTick;

/// How long a worker that cannot reach Docker waits before claiming a
/// container job's tick.
const DEFER_WITHOUT_DOCKER: Duration = Duration::from_millis(500);

/// What every run task shares.
pub struct RunContext {
    pub worker_id: String,
    /// The etcd prefix, recorded on containers so leftovers can be found.
    pub prefix: String,
    pub docker: container::DockerConn,
    pub claimer: Claimer,
    pub runs: Arc<Runs>,
    pub limits: RunLimits,
    /// Where outputs larger than the inline cap go, when a bucket is set.
    pub outputs: Option<crate::gcs::OutputStore>,
    pub log_records: mpsc::Sender<LogRecord>,
    /// Cancelled at shutdown: pending retries are abandoned.
    pub stop_scheduling: CancellationToken,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Trigger {
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

/// A scheduled tick within the normal lateness bound.
pub async fn run_tick(ctx: Arc<RunContext>, due: DueTick) {
    let run = RunKey::scheduled(due.tick.timestamp_millis());
    run_with_retries(
        &ctx,
        &due.job,
        due.job_revision,
        run,
        Trigger::Schedule,
        Some(due.tick),
    )
    .await;
}

/// A manual run requested through `/job/run`.
pub async fn run_manual(
    ctx: Arc<RunContext>,
    job: Job,
    job_revision: i64,
    requested_at: i64,
    request: String,
) {
    let run = RunKey::manual(requested_at, &request);
    run_with_retries(&ctx, &job, job_revision, run, Trigger::Manual, None).await;
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
    // in tick order until it is drained; then the scheduler claims as usual.
    let mut next = Some(first);
    while let Some(due) = next {
        let tick_ms = due.tick.timestamp_millis();
        if tick_ms > mark {
            if let Some(won) = catch_up_one(&ctx, &job, due, &tasks).await {
                mark = won;
            }
        }
        next = queue.try_recv().ok();
    }
}

/// Claims one tick of a catch-up; returns it when this worker won it.
async fn catch_up_one(
    ctx: &Arc<RunContext>,
    job: &Job,
    due: DueTick,
    tasks: &TaskTracker,
) -> Option<i64> {
    let tick_ms = due.tick.timestamp_millis();
    let age = (Utc::now() - due.tick).to_std().unwrap_or_default();
    let trigger = if age > CATCH_UP_LABEL_AGE {
        Trigger::CatchUp
    } else {
        Trigger::Schedule
    };
    let run = RunKey::scheduled(tick_ms);
    let request = ClaimRequest {
        catch_up: age > CATCH_UP_KEY_SAFE_AGE,
        ..ClaimRequest::new(job, due.job_revision, &run, now_ms())
    };
    match claim(ctx, &request).await? {
        Claim::Won { revision } => {
            let ctx = ctx.clone();
            let job = job.clone();
            tasks.spawn(async move {
                execute_and_retry(&ctx, &job, due.job_revision, run, trigger, revision).await
            });
            Some(tick_ms)
        }
        Claim::Skipped { revision, reason } => {
            log_skip(ctx, job, &run, trigger, revision, reason).await;
            Some(tick_ms)
        }
        // Someone else has it (or the job changed): go on with the next.
        Claim::Lost => None,
    }
}

/// A tick this late when claimed is logged as caught up, not scheduled.
const CATCH_UP_LABEL_AGE: Duration = Duration::from_secs(1);

/// How long a worker keeps asking etcd whether a claim that got no answer
/// was won. Well inside `CLAIM_TTL`, so the claim key is still there to say.
const CLAIM_RESOLVE_WINDOW: Duration = Duration::from_secs(60);
/// A claim key still absent this long after etcd answered again means the
/// attempt did not commit.
const CLAIM_ABSENT_FOR: Duration = Duration::from_secs(2);

/// Claims with the claim timeout. A claim that fails or times out after it
/// was sent may still have committed (its answer lost with the connection):
/// then the worker asks etcd which it was, so a tick it won is run here,
/// late, rather than by nobody. `None` when that cannot be known in time.
async fn claim(ctx: &RunContext, request: &ClaimRequest<'_>) -> Option<Claim> {
    let lease = ctx.claimer.registration_lease_id();
    let failure = match tokio::time::timeout(CLAIM_TIMEOUT, ctx.claimer.try_claim(request)).await {
        Ok(Ok(c)) => return Some(c),
        Ok(Err(e @ ClaimError::NotRegistered)) => {
            tracing::warn!(job = %request.job, run = %request.run, error = %e, "claim not sent; not run here");
            return None;
        }
        Ok(Err(e)) => e.to_string(),
        Err(_) => "timed out".to_string(),
    };
    tracing::warn!(job = %request.job, run = %request.run, error = %failure,
        "claim got no answer; asking etcd whether it was won");
    let outcome = resolve_claim(ctx, request).await;
    match outcome {
        Some(Claim::Won { revision })
            if request.overlap != Overlap::Allow
                && ctx.claimer.registration_lease_id() != lease =>
        {
            // The running mark of the claim went with the registration that
            // expired meanwhile, so other runs may have started: running now
            // could break the overlap policy. The tick is recorded instead.
            tracing::warn!(job = %request.job, run = %request.run,
                "won a claim, learned too late to run it under its overlap policy");
            Some(Claim::Skipped {
                revision,
                reason: SKIP_LEARNED_LATE,
            })
        }
        other => {
            tracing::info!(job = %request.job, run = %request.run, outcome = ?other, "claim outcome learned");
            other
        }
    }
}

/// Reads the claim key of `request` until etcd says whether it committed.
async fn resolve_claim(ctx: &RunContext, request: &ClaimRequest<'_>) -> Option<Claim> {
    let deadline = tokio::time::Instant::now() + CLAIM_RESOLVE_WINDOW;
    let mut absent_since = None;
    while tokio::time::Instant::now() < deadline && !ctx.stop_scheduling.is_cancelled() {
        match tokio::time::timeout(CLAIM_TIMEOUT, ctx.claimer.claim_outcome(request)).await {
            Ok(Ok(Some(claim))) => return Some(claim),
            // Absent: not committed, unless the attempt is still on its way.
            Ok(Ok(None)) => match absent_since {
                None => absent_since = Some(tokio::time::Instant::now()),
                Some(t) if t.elapsed() >= CLAIM_ABSENT_FOR => return Some(Claim::Lost),
                Some(_) => {}
            },
            // etcd still unreachable: ask again.
            Ok(Err(_)) | Err(_) => {}
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    tracing::warn!(job = %request.job, run = %request.run, "claim outcome unknown; not run here");
    None
}

async fn run_with_retries(
    ctx: &RunContext,
    job: &Job,
    job_revision: i64,
    run: RunKey,
    trigger: Trigger,
    scheduled_tick: Option<DateTime<Utc>>,
) {
    if job.container.is_some() {
        if let Err(e) = ctx.docker.available().await {
            // Let workers that can run containers win; if none claims it,
            // this worker does and records why it failed.
            tracing::debug!(job = %job.name, error = %e, "no Docker here; deferring the claim");
            tokio::time::sleep(DEFER_WITHOUT_DOCKER).await;
        }
    }
    // Measured after any deferral: the lateness bound covers everything
    // between this check and the claim request (see ARCHITECTURE.md).
    let now = Utc::now();
    if let Some(tick) = scheduled_tick {
        if (now - tick).to_std().unwrap_or_default() > MAX_TICK_LATENESS {
            tracing::warn!(job = %job.name, tick = %tick, "tick too old to claim; skipped");
            return;
        }
    }
    let request = ClaimRequest::new(job, job_revision, &run, now.timestamp_millis());
    match claim(ctx, &request).await {
        Some(Claim::Won { revision }) => {
            execute_and_retry(ctx, job, job_revision, run, trigger, revision).await
        }
        Some(Claim::Skipped { revision, reason }) => {
            log_skip(ctx, job, &run, trigger, revision, reason).await
        }
        Some(Claim::Lost) | None => {}
    }
}

/// Runs a won claim; a failed or timed-out attempt is retried (each retry
/// claimed under its own key, so no attempt runs twice) with exponential
/// backoff and jitter, up to the job's `retries`.
async fn execute_and_retry(
    ctx: &RunContext,
    job: &Job,
    job_revision: i64,
    mut run: RunKey,
    trigger: Trigger,
    mut claim_revision: i64,
) {
    loop {
        let outcome = execute(ctx, job, &run, trigger, claim_revision).await;
        let retry = !outcome.succeeded() && !outcome.killed && run.attempt <= job.policy.retries;
        if !retry {
            return;
        }
        let wait = retry_backoff(job.policy.retry_backoff, run.attempt);
        tracing::info!(job = %job.name, attempt = run.attempt, retry_in = ?wait, "run failed; will retry");
        tokio::select! {
            _ = ctx.stop_scheduling.cancelled() => {
                tracing::warn!(job = %job.name, attempt = run.attempt + 1, "shutting down; retry abandoned");
                return;
            }
            _ = tokio::time::sleep(wait) => {}
        }
        run = run.next_attempt();
        let request = ClaimRequest::new(job, job_revision, &run, now_ms());
        match claim(ctx, &request).await {
            Some(Claim::Won { revision }) => claim_revision = revision,
            Some(Claim::Skipped { revision, reason }) => {
                log_skip(ctx, job, &run, trigger, revision, reason).await;
                return;
            }
            // The job changed or was deleted meanwhile: no more attempts.
            Some(Claim::Lost) | None => return,
        }
    }
}

/// `base * 2^(attempt-1)`, ±20 % jitter, capped at an hour.
fn retry_backoff(base: Duration, attempt: u32) -> Duration {
    let exp = base.saturating_mul(1u32 << (attempt - 1).min(16));
    let capped = exp.min(Duration::from_secs(3600));
    // Jitter from the clock's nanoseconds: no RNG dependency needed for this.
    let nanos = u64::from(Utc::now().timestamp_subsec_nanos());
    let factor = 0.8 + 0.4 * (nanos % 1000) as f64 / 1000.0;
    capped.mul_f64(factor)
}

async fn execute(
    ctx: &RunContext,
    job: &Job,
    run: &RunKey,
    trigger: Trigger,
    claim_revision: i64,
) -> Outcome {
    let schedule_time = now_ms();
    tracing::debug!(job = %job.name, run = %run, "claimed");
    let run_id = LogRecord::run_id(job.name.as_str(), run.tick_ms, claim_revision);
    let outcome = {
        let guard = ctx.runs.start(job.name.clone(), claim_revision);
        let kill_reason = || guard.kill_reason();
        let timeout = job.policy.timeout;
        match &job.container {
            None => {
                executor::run_shell(
                    &job.command,
                    &job.env,
                    &ctx.limits,
                    timeout,
                    &guard.kill,
                    kill_reason,
                )
                .await
            }
            Some(spec) => {
                let identity = container::ContainerRun {
                    prefix: &ctx.prefix,
                    worker: &ctx.worker_id,
                    job: job.name.as_str(),
                    tick_ms: run.tick_ms,
                    run_id: &run_id,
                    claim_revision,
                };
                container::run_container(
                    &ctx.docker,
                    spec,
                    &job.command,
                    &job.env,
                    &identity,
                    &ctx.limits,
                    timeout,
                    &guard.kill,
                    kill_reason,
                )
                .await
            }
        }
    };
    ctx.claimer.finish(&job.name, run).await;
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
    hand_over(ctx, record).await;
    outcome
}

/// The record of a tick skipped because a run of the job was in progress.
/// Records a claimed tick that is not run, and why (`err`).
async fn log_skip(
    ctx: &RunContext,
    job: &Job,
    run: &RunKey,
    trigger: Trigger,
    claim_revision: i64,
    err: &str,
) {
    let now = now_ms();
    tracing::info!(job = %job.name, run = %run, reason = err, "tick skipped");
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
        status: "skipped".into(),
        attempt: run.attempt,
        trigger: trigger.as_str().into(),
    };
    hand_over(ctx, record).await;
}

async fn hand_over(ctx: &RunContext, record: LogRecord) {
    let job = record.job_name.clone();
    if ctx.log_records.send(record).await.is_err() {
        tracing::error!(job = %job, "log writer has stopped; run record lost");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert!(retry_backoff(Duration::from_secs(3600), 10) <= Duration::from_secs(4320));
    }
}
