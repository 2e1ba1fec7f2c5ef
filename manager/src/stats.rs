//! `GET /api/v1/stats`: the fleet at a glance for the UI's overview, from
//! the run records of the last minutes (the `planTime` index): runs,
//! failures, missed ticks and start lag per minute, and the live workers.
//! At most `MAX_RECORDS` records are read (the newest); with more, the
//! answer says `truncated` and covers only the newest ones. For long
//! windows and alerting, use the Prometheus metrics.

use std::collections::{BTreeMap, HashMap};

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::Json;
use mongodb::bson::Document;
use serde::Serialize;

use crate::reply::{query, ApiError, V1Error, V1Result};
use crate::state::AppState;

/// Records read at most per answer.
pub const MAX_RECORDS: i64 = 50_000;
pub const MAX_MINUTES: i64 = 60;

#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Stats {
    /// The window, epoch ms (ticks at or after `from`; when `truncated`,
    /// from the oldest of the records read, which rates are over).
    pub from: i64,
    pub to: i64,
    /// More records than were read fall in the window: the figures cover
    /// the newest `MAX_RECORDS` (50,000) only.
    pub truncated: bool,
    /// Registered workers, and those of them taking ticks (not draining).
    pub workers: usize,
    pub workers_ready: usize,
    pub totals: Bucket,
    /// Per minute, oldest first (minutes without runs included).
    pub minutes: Vec<Bucket>,
}

#[derive(Serialize, Default, Clone, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Bucket {
    /// Start of the minute (epoch ms); the window's start for totals.
    pub start: i64,
    /// Run records (every status).
    pub runs: u64,
    pub succeeded: u64,
    /// `failed`, `timed-out` or `lost`.
    pub failed: u64,
    pub missed: u64,
    /// succeeded / (succeeded + failed + missed), when any.
    pub success_rate: Option<f64>,
    /// 99th percentile of start minus planned time of scheduled first
    /// attempts that ran, milliseconds.
    pub lag_p99_ms: Option<i64>,
}

#[derive(Default)]
struct Tally {
    bucket: Bucket,
    lags: Vec<i64>,
}

impl Tally {
    fn add(&mut self, status: &str, lag: Option<i64>) {
        let b = &mut self.bucket;
        b.runs += 1;
        match status {
            "succeeded" => b.succeeded += 1,
            "failed" | "timed-out" | "lost" => b.failed += 1,
            "missed" => b.missed += 1,
            _ => {}
        }
        self.lags.extend(lag);
    }

    fn finish(mut self) -> Bucket {
        let b = &mut self.bucket;
        let judged = b.succeeded + b.failed + b.missed;
        b.success_rate = (judged > 0).then(|| b.succeeded as f64 / judged as f64);
        self.lags.sort_unstable();
        b.lag_p99_ms = (!self.lags.is_empty()).then(|| {
            let i = ((self.lags.len() as f64) * 0.99).ceil() as usize;
            self.lags[i.clamp(1, self.lags.len()) - 1]
        });
        self.bucket
    }
}

fn int(d: &Document, field: &str) -> Option<i64> {
    d.get_i64(field)
        .ok()
        .or_else(|| d.get_i32(field).ok().map(i64::from))
}

/// Totals and per-minute buckets of `records` over `[from, to)`.
fn tally(records: &[Document], from: i64, to: i64) -> (Bucket, Vec<Bucket>) {
    let mut total = Tally::default();
    let mut minutes: BTreeMap<i64, Tally> = BTreeMap::new();
    let first = from - from.rem_euclid(60_000);
    let mut m = first;
    while m < to {
        minutes.entry(m).or_default().bucket.start = m;
        m += 60_000;
    }
    for d in records {
        let (Some(plan), Ok(status)) = (int(d, "planTime"), d.get_str("status")) else {
            continue;
        };
        let ran = matches!(status, "succeeded" | "failed" | "killed" | "timed-out");
        let scheduled = matches!(d.get_str("trigger"), Ok("schedule") | Err(_));
        let first_attempt = int(d, "attempt").unwrap_or(1) == 1;
        let lag = match int(d, "startTime") {
            Some(start) if ran && scheduled && first_attempt && start > 0 => {
                Some((start - plan).max(0))
            }
            _ => None,
        };
        total.add(status, lag);
        let minute = plan - plan.rem_euclid(60_000);
        let t = minutes.entry(minute).or_default();
        t.bucket.start = minute;
        t.add(status, lag);
    }
    let mut totals = total.finish();
    totals.start = from;
    (totals, minutes.into_values().map(Tally::finish).collect())
}

/// Where the figures start: `from`, or, when only the newest records were
/// read (`truncated`; newest first), the oldest of those, so that rates
/// are over the time the records cover and not the whole window.
fn covered_from(records: &[Document], from: i64, truncated: bool) -> i64 {
    match records.last().and_then(|d| int(d, "planTime")) {
        Some(oldest) if truncated => oldest.max(from),
        _ => from,
    }
}

/// The fleet over the last `minutes` (1-60, default 15): runs, failures,
/// missed ticks, start lag, per minute; and the live workers.
#[utoipa::path(get, path = "/stats", tag = "stats",
    params(("minutes" = Option<i64>, Query, minimum = 1, maximum = 60, description = "the window, 1-60 minutes, default 15")),
    responses((status = 200, body = Stats), (status = 400, body = ApiError)))]
pub async fn stats(
    State(state): State<AppState>,
    q: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> V1Result<Json<Stats>> {
    let q = query(q)?;
    let minutes = match q.get("minutes") {
        None => 15,
        Some(v) => v
            .parse::<i64>()
            .ok()
            .filter(|m| (1..=MAX_MINUTES).contains(m))
            .ok_or_else(|| V1Error::BadRequest {
                field: Some("minutes".into()),
                message: format!("{v:?} is not a whole number in 1..={MAX_MINUTES}"),
            })?,
    };
    let to = chrono::Utc::now().timestamp_millis();
    let from = to - minutes * 60_000;
    let (records, workers) = tokio::try_join!(
        async { Ok::<_, V1Error>(state.store.recent_runs(from, MAX_RECORDS + 1).await?) },
        async { Ok::<_, V1Error>(state.store.registrations().await?) },
    )?;
    let truncated = records.len() as i64 > MAX_RECORDS;
    let records = &records[..records.len().min(MAX_RECORDS as usize)];
    let from = covered_from(records, from, truncated);
    let (totals, minutes) = tally(records, from, to);
    Ok(Json(Stats {
        from,
        to,
        truncated,
        workers: workers.len(),
        workers_ready: workers
            .iter()
            .filter(|w| !w.draining && !w.clock_skewed)
            .count(),
        totals,
        minutes,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use mongodb::bson::doc;

    #[test]
    fn buckets_count_rates_and_lag() {
        let from = 120_000;
        let to = 240_000;
        let mut records = Vec::new();
        for i in 0..100i64 {
            records.push(doc! { "status": "succeeded", "planTime": 120_000 + i, "startTime": 120_000 + i + (i % 10), "trigger": "schedule", "attempt": 1 });
        }
        records.push(doc! { "status": "failed", "planTime": 180_000i64, "startTime": 180_500i64, "trigger": "schedule" });
        records.push(doc! { "status": "missed", "planTime": 180_000i64, "startTime": 195_000i64, "trigger": "schedule" });
        records.push(doc! { "status": "succeeded", "planTime": 180_000i64, "startTime": 190_000i64, "trigger": "manual" });
        let (totals, minutes) = tally(&records, from, to);
        assert_eq!(
            (totals.runs, totals.succeeded, totals.failed, totals.missed),
            (103, 101, 1, 1)
        );
        assert_eq!(minutes.len(), 2);
        assert_eq!(
            (minutes[0].start, minutes[0].runs, minutes[0].lag_p99_ms),
            (120_000, 100, Some(9))
        );
        // The missed tick and the manual run have no start lag.
        assert_eq!(minutes[1].lag_p99_ms, Some(500));
        assert_eq!(minutes[1].success_rate, Some(1.0 / 3.0));
        // Only the newest records read: the figures cover their time.
        assert_eq!(covered_from(&records[..50], from, false), from);
        let newest_first: Vec<Document> = records[..50].iter().rev().cloned().collect();
        assert_eq!(covered_from(&newest_first, from, true), 120_000);
        let later: Vec<Document> = vec![doc! { "status": "succeeded", "planTime": 200_000i64 }];
        assert_eq!(covered_from(&later, from, true), 200_000);
        let (empty, quiet) = tally(&[], from, to);
        assert_eq!((empty.runs, empty.success_rate, quiet.len()), (0, None, 2));
    }
}
