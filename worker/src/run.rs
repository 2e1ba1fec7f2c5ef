//! One tick from claim to log record.

use std::sync::Arc;

use chrono::Utc;
use gdts_common::log_record::LogRecord;
use gdts_common::timing::{CLAIM_TIMEOUT, MAX_TICK_LATENESS};
use tokio::sync::mpsc;

use crate::claim::{Claim, Claimer};
use crate::executor::{self, now_ms, RunLimits};
use crate::runs::Runs;
use crate::scheduler::DueTick;

/// What every run task shares.
pub struct RunContext {
    pub worker_id: String,
    pub claimer: Claimer,
    pub runs: Arc<Runs>,
    pub limits: RunLimits,
    pub log_records: mpsc::Sender<LogRecord>,
}

/// Claims `due` and, if this worker won it, runs it and hands its record to
/// the log writer (waiting while the writer's buffer is full).
pub async fn run_tick(ctx: Arc<RunContext>, due: DueTick) {
    let job = &due.job;
    let tick_ms = due.tick.timestamp_millis();
    let now = Utc::now();
    // The safety argument bounds how late a claim may be attempted: a tick
    // this old is skipped, never claimed (see ARCHITECTURE.md).
    if (now - due.tick).to_std().unwrap_or_default() > MAX_TICK_LATENESS {
        tracing::warn!(job = %job.name, tick = tick_ms, "tick too old to claim; skipped");
        return;
    }
    let attempt =
        ctx.claimer
            .try_claim(&job.name, due.job_revision, tick_ms, now.timestamp_millis());
    let claim_revision = match tokio::time::timeout(CLAIM_TIMEOUT, attempt).await {
        Ok(Ok(Claim::Won { revision })) => revision,
        Ok(Ok(Claim::Lost)) => return,
        Ok(Err(e)) => {
            tracing::warn!(job = %job.name, tick = tick_ms, error = %e, "claim failed; tick not run here");
            return;
        }
        Err(_) => {
            tracing::warn!(job = %job.name, tick = tick_ms, "claim timed out; tick not run here");
            return;
        }
    };
    let schedule_time = now_ms();
    tracing::debug!(job = %job.name, tick = tick_ms, "claimed");
    let outcome = {
        let guard = ctx.runs.start(job.name.clone(), claim_revision);
        executor::run_shell(&job.command, &ctx.limits, &guard.kill, || {
            guard.kill_reason()
        })
        .await
    };
    if !outcome.succeeded() {
        tracing::info!(job = %job.name, tick = tick_ms, err = %outcome.err, "run failed");
    }
    let status = if outcome.killed {
        "killed"
    } else if outcome.succeeded() {
        "succeeded"
    } else {
        "failed"
    };
    let record = LogRecord {
        run_id: LogRecord::run_id(job.name.as_str(), tick_ms, claim_revision),
        job_name: job.name.to_string(),
        command: job.command.clone(),
        err: outcome.err,
        output: outcome.output,
        plan_time: tick_ms,
        schedule_time,
        start_time: outcome.start_ms,
        end_time: outcome.end_ms,
        exit_code: outcome.exit_code,
        signal: outcome.signal,
        worker: ctx.worker_id.clone(),
        truncated: outcome.truncated,
        killed: outcome.killed,
        status: status.into(),
    };
    if ctx.log_records.send(record).await.is_err() {
        tracing::error!(job = %job.name, tick = tick_ms, "log writer has stopped; run record lost");
    }
}
