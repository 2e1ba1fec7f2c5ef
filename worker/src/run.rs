//! One tick from claim to log record.

use std::sync::Arc;

use chrono::Utc;
use gdts_common::log_record::LogRecord;
use gdts_common::timing::{CLAIM_TIMEOUT, MAX_TICK_LATENESS};
use tokio::sync::mpsc;

use crate::claim::{Claim, Claimer};
use crate::container;
use crate::executor::{self, now_ms, RunLimits};
use crate::runs::Runs;
use crate::scheduler::DueTick;

/// How long a worker that cannot reach Docker waits before claiming a
/// container job's tick.
const DEFER_WITHOUT_DOCKER: std::time::Duration = std::time::Duration::from_millis(500);

/// What every run task shares.
pub struct RunContext {
    pub worker_id: String,
    /// The etcd prefix, recorded on containers so leftovers can be found.
    pub prefix: String,
    pub docker: container::DockerConn,
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
    if job.container.is_some() {
        if let Err(e) = ctx.docker.available().await {
            // Let workers that can run containers win this tick; if none
            // claims it, this worker does and records why it failed.
            tracing::debug!(job = %job.name, error = %e, "no Docker here; deferring the claim");
            tokio::time::sleep(DEFER_WITHOUT_DOCKER).await;
        }
    }
    // Measured after any deferral: the lateness bound covers everything
    // between this check and the claim request.
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
    let run_id = LogRecord::run_id(job.name.as_str(), tick_ms, claim_revision);
    let outcome = {
        let guard = ctx.runs.start(job.name.clone(), claim_revision);
        let kill_reason = || guard.kill_reason();
        match &job.container {
            None => {
                executor::run_shell(
                    &job.command,
                    &job.env,
                    &ctx.limits,
                    &guard.kill,
                    kill_reason,
                )
                .await
            }
            Some(spec) => {
                let run = container::ContainerRun {
                    prefix: &ctx.prefix,
                    worker: &ctx.worker_id,
                    job: job.name.as_str(),
                    tick_ms,
                    run_id: &run_id,
                    claim_revision,
                };
                container::run_container(
                    &ctx.docker,
                    spec,
                    &job.command,
                    &job.env,
                    &run,
                    &ctx.limits,
                    &guard.kill,
                    kill_reason,
                )
                .await
            }
        }
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
        run_id,
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
