//! Records for claims whose worker is gone. A worker killed with -9 (or cut
//! off from etcd past its lease) never writes the records of the runs it
//! had claimed; so when a registration disappears, one surviving worker
//! reads the claims that name the departed worker and hands a record for
//! each to its own log writer: `lost` for a run, `skipped`/`missed` for a
//! tick claimed only to record that. Each record has the run's own id
//! (`{job}@{tick}#{claim revision}`), so a claim whose record was written
//! keeps it (a duplicate id writes nothing), and a real record that comes
//! later (the worker was only cut off, or replays its spool) replaces a
//! `lost` one (`log_sink::insert_idempotent`). Claim keys live `CLAIM_TTL`
//! (90 s) and longer: a run claimed longer ago than that when its worker
//! died has no key left to find.

use std::sync::Arc;
use std::time::Duration;

use gdts_common::keys::Keys;
use gdts_common::log_record::{LogRecord, STATUS_LOST};
use gdts_common::timing::SWEEP_AFTER;
use gdts_common::values::{ClaimRecord, WorkerInfo};
use gdts_runtime::etcd_pages::RangePages;

use crate::run::RunContext;

/// The sweeper of a departed worker among the live ones (ids sorted): one
/// deterministic worker, so the claims are read once. Never a new life of
/// the departed worker itself (it sweeps its earlier lives at its start,
/// [`sweep_earlier_lives`], but may have started before this departure was
/// seen).
pub fn sweeper<'a>(live: &'a [String], gone: &WorkerInfo) -> Option<&'a str> {
    let others: Vec<String> = live.iter().filter(|w| **w != gone.id).cloned().collect();
    let first =
        gdts_common::ownership::ranking(&others, &format!("departed.{}", gone.id), gone.start_time)
            .first()
            .map(|w| w.to_string())?;
    live.iter().find(|w| **w == first).map(String::as_str)
}

/// At a worker's start: records for the claims an earlier life of it left
/// without one (killed with -9, with nobody else alive to sweep them).
pub async fn sweep_earlier_lives(ctx: Arc<RunContext>, keys: Keys, started_at: i64) {
    let id = ctx.worker_id.clone();
    sweep_claims(&ctx, &keys, &id, started_at).await;
}

/// How many times a sweep reads etcd before it gives up, and the longest
/// pause between two tries: an etcd member that is down (the client may
/// pick it) or an election must not leave a dead worker's claims without
/// records. Handing a record twice is harmless (same run id).
const SWEEP_TRIES: u32 = 8;
const SWEEP_MAX_PAUSE: Duration = Duration::from_secs(5);

/// Waits `pause` before a sweep tries etcd again, then doubles it (up to
/// [`SWEEP_MAX_PAUSE`]); false when the worker is shutting down: it stops
/// trying (the next sweep, or its next life's, takes the claims while their
/// keys live).
async fn pause_before_retry(ctx: &RunContext, pause: &mut Duration) -> bool {
    tokio::select! {
        _ = ctx.stop_scheduling.cancelled() => return false,
        _ = tokio::time::sleep(*pause) => {}
    }
    *pause = (*pause * 2).min(SWEEP_MAX_PAUSE);
    true
}

/// Writes records for the claims of `gone` (the registration as it was
/// last seen) that have none. Retries while etcd cannot be read (see
/// [`SWEEP_TRIES`]); then the claims stay, and a sweep is only triggered by
/// a departure.
pub async fn sweep(ctx: Arc<RunContext>, keys: Keys, gone: WorkerInfo) {
    tokio::time::sleep(SWEEP_AFTER).await;
    let client = ctx.claimer.client();
    // Registered again? The same life (cut off for a moment) writes its own
    // records; a new life (restarted) leaves the earlier life's claims.
    let mut pause = Duration::from_millis(500);
    let mut tries = 0;
    let until = loop {
        tries += 1;
        match client.kv_client().get(keys.worker(&gone.id), None).await {
            Ok(resp) => match resp
                .kvs()
                .first()
                .and_then(|kv| serde_json::from_slice::<WorkerInfo>(kv.value()).ok())
            {
                Some(now) if now.start_time == gone.start_time => return,
                Some(now) => break now.start_time,
                None => break i64::MAX,
            },
            Err(e) if tries >= SWEEP_TRIES => {
                tracing::warn!(worker = %gone.id, error = %e, "cannot read the registration of a departed worker; its claims are not swept");
                return;
            }
            Err(_) => {}
        }
        if !pause_before_retry(&ctx, &mut pause).await {
            return;
        }
    };
    sweep_claims(&ctx, &keys, &gone.id, until).await;
}

/// Hands a record to the log writer for every claim of worker `id` made
/// before `until` (its clock); reads all claims again from the start when
/// a page cannot be read, up to [`SWEEP_TRIES`] times.
async fn sweep_claims(ctx: &RunContext, keys: &Keys, id: &str, until: i64) {
    let mut pause = Duration::from_millis(500);
    for tries in 1..=SWEEP_TRIES {
        match sweep_claims_once(ctx, keys, id, until).await {
            Ok(()) => return,
            Err(e) if tries == SWEEP_TRIES => {
                tracing::warn!(worker = %id, error = %e, tries, "reading the claims of a departed worker failed; giving up");
                return;
            }
            Err(e) => {
                tracing::info!(worker = %id, error = %e, "reading the claims of a departed worker failed; trying again");
            }
        }
        if !pause_before_retry(ctx, &mut pause).await {
            return;
        }
    }
}

async fn sweep_claims_once(
    ctx: &RunContext,
    keys: &Keys,
    id: &str,
    until: i64,
) -> Result<(), etcd_client::Error> {
    let client = ctx.claimer.client();
    let mut pages = RangePages::prefix(client, &keys.claims_prefix());
    let mut handed = 0usize;
    loop {
        let page = match pages.next_page().await? {
            Some(page) => page,
            None => break,
        };
        for kv in page {
            let Ok(claim) = serde_json::from_slice::<ClaimRecord>(kv.value()) else {
                continue;
            };
            if claim.worker != id || claim.claimed_at >= until {
                continue;
            }
            let Some((job, run)) = keys.parse_claim_run_key(kv.key()) else {
                continue;
            };
            let command = ctx
                .jobs
                .current(&job)
                .map(|(j, _)| j.command.clone())
                .unwrap_or_default();
            let now = chrono::Utc::now().timestamp_millis();
            let (status, err) = if claim.missed {
                ("missed", crate::run::MISSED_LATE.to_string())
            } else if claim.skipped {
                ("skipped", crate::claim::SKIP_OVERLAP.to_string())
            } else {
                (
                    STATUS_LOST,
                    format!(
                        "lost: worker {id} stopped (its registration expired) before it recorded \
                         this run; the command may have run in part, in full, or not at all"
                    ),
                )
            };
            let record = LogRecord {
                run_id: LogRecord::run_id(job.as_str(), run.tick_ms, kv.create_revision()),
                job_name: job.to_string(),
                command,
                err,
                output: String::new(),
                plan_time: run.tick_ms,
                schedule_time: claim.claimed_at,
                start_time: claim.claimed_at,
                end_time: now,
                exit_code: None,
                signal: None,
                worker: id.to_string(),
                truncated: false,
                output_bytes: 0,
                output_uri: None,
                killed: false,
                status: status.into(),
                attempt: run.attempt,
                trigger: if run.manual.is_some() {
                    "manual"
                } else {
                    "schedule"
                }
                .into(),
            };
            ctx.metrics.run_recorded(&record);
            if record.status == STATUS_LOST {
                if let Some((job, _)) = ctx.jobs.current(&job) {
                    ctx.notifier.notify(&job, &record);
                }
            }
            if ctx.log_records.send(record).await.is_err() {
                return Ok(());
            }
            handed += 1;
        }
    }
    if handed > 0 {
        tracing::info!(worker = %id, records = handed,
            "claims of a departed worker (or an earlier life): a record handed over for each (written where it has none)");
    }
    Ok(())
}
