//! The worker's counters, served in the Prometheus text format at
//! `/metrics` on the health port.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use crate::claim::Claim;

#[derive(Default)]
pub struct Metrics {
    prepared: AtomicU64,
    claims_owner: AtomicU64,
    claims_backup: AtomicU64,
    won: AtomicU64,
    lost: AtomicU64,
    skipped: AtomicU64,
    unknown: AtomicU64,
    missed: Mutex<BTreeMap<&'static str, u64>>,
}

impl Metrics {
    pub fn prepared(&self) {
        self.prepared.fetch_add(1, Ordering::Relaxed);
    }

    pub fn claims_sent(&self, n: usize, backup: bool) {
        let counter = if backup {
            &self.claims_backup
        } else {
            &self.claims_owner
        };
        counter.fetch_add(n as u64, Ordering::Relaxed);
    }

    pub fn claim_outcome(&self, outcome: Option<Claim>) {
        let counter = match outcome {
            Some(Claim::Won { .. }) => &self.won,
            Some(Claim::Lost) => &self.lost,
            Some(Claim::Skipped { .. }) => &self.skipped,
            Some(Claim::Missed { .. }) => return,
            None => &self.unknown,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// A tick recorded as missed, by its reason (the record's `err`).
    pub fn tick_missed(&self, reason: &'static str) {
        *self
            .missed
            .lock()
            .expect("metrics lock")
            .entry(reason)
            .or_insert(0) += 1;
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        let counter = |out: &mut String, name: &str, help: &str, value: u64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}"
            );
        };
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        counter(
            &mut out,
            "gdts_worker_prepared_total",
            "Processes started ahead of their tick, held at a gate.",
            get(&self.prepared),
        );
        let _ = writeln!(
            out,
            "# HELP gdts_worker_claims_total Claims sent, by role.\n# TYPE gdts_worker_claims_total counter"
        );
        let _ = writeln!(
            out,
            "gdts_worker_claims_total{{role=\"owner\"}} {}",
            get(&self.claims_owner)
        );
        let _ = writeln!(
            out,
            "gdts_worker_claims_total{{role=\"backup\"}} {}",
            get(&self.claims_backup)
        );
        let _ = writeln!(
            out,
            "# HELP gdts_worker_claim_outcomes_total Claim outcomes.\n# TYPE gdts_worker_claim_outcomes_total counter"
        );
        for (outcome, c) in [
            ("won", &self.won),
            ("lost", &self.lost),
            ("skipped", &self.skipped),
            ("unknown", &self.unknown),
        ] {
            let _ = writeln!(
                out,
                "gdts_worker_claim_outcomes_total{{outcome=\"{outcome}\"}} {}",
                get(c)
            );
        }
        let _ = writeln!(
            out,
            "# HELP gdts_worker_ticks_missed_total Ticks recorded as missed, by reason.\n# TYPE gdts_worker_ticks_missed_total counter"
        );
        for (reason, n) in self.missed.lock().expect("metrics lock").iter() {
            let reason = reason.replace('\\', "\\\\").replace('"', "\\\"");
            let _ = writeln!(
                out,
                "gdts_worker_ticks_missed_total{{reason=\"{reason}\"}} {n}"
            );
        }
        out
    }
}
