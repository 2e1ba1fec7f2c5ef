//! This worker's clock against a shared reference: MongoDB's clock (the
//! `localTime` of `hello`), which every worker and manager reaches. etcd
//! offers none. The offset is measured at start, before the worker claims
//! anything, and every `CHECK_EVERY` after; a worker whose clock is off by
//! more than `MAX_CLOCK_SKEW` (beyond the measurement's own uncertainty)
//! is skewed: it says so in its registration (others then leave its ticks
//! to the rest of the fleet) and claims nothing until its clock is back.

use crate::metrics::Metrics;
use std::time::Duration;

use gdts_common::timing::MAX_CLOCK_SKEW;
use mongodb::bson::{doc, Document};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// What the last measurement said.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ClockReading {
    /// Reference clock minus this worker's clock, in milliseconds (negative:
    /// this worker is ahead); `None` until measured.
    pub offset_ms: Option<i64>,
    /// The offset is beyond the bound: claim nothing.
    pub skewed: bool,
}

const CHECK_EVERY: Duration = Duration::from_secs(15);
/// A measurement whose round trip took longer than this says too little.
const MAX_ROUND_TRIP: Duration = Duration::from_secs(5);

/// One measurement: the offset and its uncertainty (half the round trip).
pub async fn measure(mongo: &mongodb::Client) -> anyhow::Result<(i64, i64)> {
    let before = chrono::Utc::now().timestamp_millis();
    let reply: Document = mongo
        .database("admin")
        .run_command(doc! { "hello": 1 })
        .await?;
    let after = chrono::Utc::now().timestamp_millis();
    let server = reply
        .get_datetime("localTime")
        .map_err(|e| anyhow::anyhow!("no localTime in hello: {e}"))?
        .timestamp_millis();
    anyhow::ensure!(
        after - before <= MAX_ROUND_TRIP.as_millis() as i64,
        "round trip of {} ms",
        after - before
    );
    Ok((server - (before + after) / 2, (after - before) / 2 + 1))
}

/// Whether `offset_ms`, known to within `uncertainty_ms`, is surely beyond
/// the bound.
pub fn is_skewed(offset_ms: i64, uncertainty_ms: i64) -> bool {
    offset_ms.abs() - uncertainty_ms > MAX_CLOCK_SKEW.as_millis() as i64
}

/// Measures once and publishes the reading (unchanged when MongoDB cannot
/// be asked: the last reading stands).
pub async fn check(
    mongo: &mongodb::Client,
    readings: &watch::Sender<ClockReading>,
    metrics: &Metrics,
) {
    match tokio::time::timeout(MAX_ROUND_TRIP * 2, measure(mongo)).await {
        Ok(Ok((offset, uncertainty))) => {
            metrics.set_clock_offset_ms(offset);
            let reading = ClockReading {
                offset_ms: Some(offset),
                skewed: is_skewed(offset, uncertainty),
            };
            let was = *readings.borrow();
            if reading.skewed && !was.skewed {
                tracing::error!(offset_ms = offset, bound_ms = MAX_CLOCK_SKEW.as_millis() as u64,
                    "this worker's clock is off from MongoDB's by more than the bound: claiming nothing until it is fixed");
            } else if !reading.skewed && was.skewed {
                tracing::info!(
                    offset_ms = offset,
                    "this worker's clock is within the bound again"
                );
            }
            readings.send_if_modified(|r| {
                // Small changes of a sound clock are not worth a registration write.
                let changed = r.skewed != reading.skewed
                    || r.offset_ms.is_none_or(|o| (o - offset).abs() > 1_000);
                if changed {
                    *r = reading;
                }
                changed
            });
        }
        Ok(Err(e)) => tracing::debug!(error = %e, "could not measure the clock offset"),
        Err(_) => tracing::debug!("measuring the clock offset timed out"),
    }
}

/// Re-measures every `CHECK_EVERY` until `stop`.
pub async fn keep_checking(
    mongo: mongodb::Client,
    readings: watch::Sender<ClockReading>,
    metrics: std::sync::Arc<Metrics>,
    stop: CancellationToken,
) {
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(CHECK_EVERY) => {}
        }
        check(&mongo, &readings, &metrics).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skewed_only_beyond_the_bound_and_the_uncertainty() {
        let bound = MAX_CLOCK_SKEW.as_millis() as i64;
        assert!(!is_skewed(0, 10));
        assert!(!is_skewed(bound, 10));
        assert!(!is_skewed(-(bound + 5), 10));
        assert!(is_skewed(-(bound + 11), 10));
        assert!(is_skewed(120_000, 50));
    }
}
