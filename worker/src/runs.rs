//! The runs in progress on this worker, so kill requests and shutdown can
//! reach them.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use gdts_common::JobName;
use tokio_util::sync::CancellationToken;

use crate::executor::KillReason;

struct Entry {
    job: JobName,
    /// The tick the run is for (a retry keeps its tick).
    tick_ms: i64,
    claim_revision: i64,
    /// Held in place by a running mark (overlap `forbid`/`replace`).
    guarded: bool,
    kill: CancellationToken,
    reason: Arc<Mutex<KillReason>>,
}

#[derive(Default)]
pub struct Runs {
    entries: Mutex<HashMap<u64, Entry>>,
    next_id: AtomicU64,
    /// The newest kill request seen per job (its revision and reason), so a
    /// run whose claim came before a kill but which registers only after it
    /// (a claim answered late, a run claimed ahead) is killed all the same.
    kills: Mutex<HashMap<JobName, Kill>>,
    /// Set by [`Runs::kill_all`]: runs starting after it are killed at once.
    closed: std::sync::atomic::AtomicBool,
    /// Set by [`Runs::kill_guarded`] until [`Runs::unfence`] (the lease was
    /// renewed): guarded runs starting meanwhile are killed at once.
    fenced: std::sync::atomic::AtomicBool,
}

/// A kill request: its etcd revision, why, and for a replacement the tick
/// of the run that replaces (only runs of older ticks are replaced).
#[derive(Clone, Copy, Debug)]
pub struct Kill {
    pub revision: i64,
    pub reason: KillReason,
    pub before_tick: Option<i64>,
}

impl Kill {
    /// Whether this kill ends a run of `tick_ms` claimed at `claim_revision`:
    /// claimed before the request (etcd revisions, never clocks) and, for a
    /// replacement, of an older tick (a retry of an older tick, claimed after
    /// a newer tick's run, does not replace it).
    fn hits(&self, tick_ms: i64, claim_revision: i64) -> bool {
        claim_revision < self.revision && self.before_tick.is_none_or(|t| tick_ms < t)
    }
}

/// A run's place in the registry; leaving it (drop) removes the run.
pub struct RunGuard<'a> {
    runs: &'a Runs,
    id: u64,
    pub kill: CancellationToken,
    reason: Arc<Mutex<KillReason>>,
}

impl RunGuard<'_> {
    pub fn kill_reason(&self) -> KillReason {
        *self.reason.lock().expect("kill reason lock")
    }
}

impl Drop for RunGuard<'_> {
    fn drop(&mut self) {
        self.runs
            .entries
            .lock()
            .expect("runs lock")
            .remove(&self.id);
    }
}

impl Runs {
    /// Registers a run of tick `tick_ms` whose claim was written at
    /// `claim_revision`; `guarded` if its overlap policy rests on its
    /// running mark.
    pub fn start(
        &self,
        job: JobName,
        tick_ms: i64,
        claim_revision: i64,
        guarded: bool,
    ) -> RunGuard<'_> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let kill = CancellationToken::new();
        let reason = Arc::new(Mutex::new(KillReason::Requested));
        let killed_before = self
            .kills
            .lock()
            .expect("kills lock")
            .get(&job)
            .filter(|k| k.hits(tick_ms, claim_revision))
            .map(|k| k.reason);
        if let Some(why) = killed_before {
            *reason.lock().expect("kill reason lock") = why;
            kill.cancel();
        } else if self.closed.load(Ordering::Acquire) {
            *reason.lock().expect("kill reason lock") = KillReason::Shutdown;
            kill.cancel();
        } else if guarded && self.fenced.load(Ordering::Acquire) {
            *reason.lock().expect("kill reason lock") = KillReason::LeaseLost;
            kill.cancel();
        }
        self.entries.lock().expect("runs lock").insert(
            id,
            Entry {
                job,
                tick_ms,
                claim_revision,
                guarded,
                kill: kill.clone(),
                reason: reason.clone(),
            },
        );
        RunGuard {
            runs: self,
            id,
            kill,
            reason,
        }
    }

    pub fn count(&self) -> usize {
        self.entries.lock().expect("runs lock").len()
    }

    /// Kills the runs of `job` the request hits (see [`Kill::hits`]).
    /// Returns how many.
    pub fn kill_job(&self, job: &JobName, request: Kill) -> usize {
        {
            let mut kills = self.kills.lock().expect("kills lock");
            let newest = kills.entry(job.clone()).or_insert(request);
            if newest.revision < request.revision {
                *newest = request;
            }
        }
        let entries = self.entries.lock().expect("runs lock");
        let mut n = 0;
        for e in entries.values() {
            if &e.job == job && request.hits(e.tick_ms, e.claim_revision) && !e.kill.is_cancelled()
            {
                *e.reason.lock().expect("kill reason lock") = request.reason;
                e.kill.cancel();
                n += 1;
            }
        }
        n
    }

    /// Kills the runs held in place by a running mark (see
    /// [`KillReason::LeaseLost`]). Returns how many.
    pub fn kill_guarded(&self, reason: KillReason) -> usize {
        self.fenced.store(true, Ordering::Release);
        let mut n = 0;
        for e in self.entries.lock().expect("runs lock").values() {
            if e.guarded && !e.kill.is_cancelled() {
                *e.reason.lock().expect("kill reason lock") = reason;
                e.kill.cancel();
                n += 1;
            }
        }
        n
    }

    /// The lease was renewed (or a new one registered): guarded runs may
    /// start again.
    pub fn unfence(&self) {
        self.fenced.store(false, Ordering::Release);
    }

    /// Kills every run (shutdown grace expired).
    pub fn kill_all(&self, reason: KillReason) {
        self.closed.store(true, Ordering::Release);
        for e in self.entries.lock().expect("runs lock").values() {
            *e.reason.lock().expect("kill reason lock") = reason;
            e.kill.cancel();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kill(revision: i64, reason: KillReason, before_tick: Option<i64>) -> Kill {
        Kill {
            revision,
            reason,
            before_tick,
        }
    }

    #[test]
    fn kill_hits_only_runs_claimed_before_it() {
        let runs = Runs::default();
        let a = JobName::parse("a").unwrap();
        let b = JobName::parse("b").unwrap();
        let old = runs.start(a.clone(), 1_000, 10, false);
        let newer = runs.start(a.clone(), 2_000, 30, false);
        let other = runs.start(b, 1_000, 5, false);
        assert_eq!(runs.kill_job(&a, kill(20, KillReason::Requested, None)), 1);
        assert!(old.kill.is_cancelled());
        assert!(!newer.kill.is_cancelled());
        assert!(!other.kill.is_cancelled());
        assert_eq!(runs.count(), 3);
        drop(old);
        assert_eq!(runs.count(), 2);
        runs.kill_all(KillReason::Shutdown);
        assert_eq!(newer.kill_reason(), KillReason::Shutdown);
        // After kill_all, a run that starts is killed at once.
        assert!(runs
            .start(JobName::parse("c").unwrap(), 1_000, 99, false)
            .kill
            .is_cancelled());
    }

    #[test]
    fn a_run_registered_after_a_kill_of_its_claim_is_killed() {
        let runs = Runs::default();
        let a = JobName::parse("a").unwrap();
        assert_eq!(
            runs.kill_job(&a, kill(20, KillReason::Replaced, Some(5_000))),
            0
        );
        let claimed_before = runs.start(a.clone(), 1_000, 10, false);
        assert!(claimed_before.kill.is_cancelled());
        assert_eq!(claimed_before.kill_reason(), KillReason::Replaced);
        let claimed_after = runs.start(a, 1_000, 30, false);
        assert!(!claimed_after.kill.is_cancelled());
    }

    /// Under `replace`, a retry of an older tick (claimed after a newer
    /// tick's run) replaces runs of older ticks only, never the newer run.
    #[test]
    fn a_replacement_hits_only_older_ticks() {
        let runs = Runs::default();
        let a = JobName::parse("a").unwrap();
        let older = runs.start(a.clone(), 1_000, 10, false);
        let newer = runs.start(a.clone(), 2_000, 20, false);
        // The retry of tick 1000 (attempt 2) is claimed at revision 30.
        assert_eq!(
            runs.kill_job(&a, kill(30, KillReason::Replaced, Some(1_000))),
            0
        );
        assert!(!older.kill.is_cancelled() && !newer.kill.is_cancelled());
        // Tick 3000's claim replaces both.
        assert_eq!(
            runs.kill_job(&a, kill(40, KillReason::Replaced, Some(3_000))),
            2
        );
        // An operator's kill hits every run claimed before it, whatever its tick.
        let later = runs.start(a.clone(), 9_000, 50, false);
        assert_eq!(runs.kill_job(&a, kill(60, KillReason::Requested, None)), 1);
        assert!(later.kill.is_cancelled());
    }

    /// A lost lease stops the runs a running mark protects, and only them.
    #[test]
    fn a_lost_lease_kills_only_guarded_runs() {
        let runs = Runs::default();
        let a = JobName::parse("a").unwrap();
        let guarded = runs.start(a.clone(), 1_000, 10, true);
        let free = runs.start(a, 2_000, 20, false);
        assert_eq!(runs.kill_guarded(KillReason::LeaseLost), 1);
        assert!(guarded.kill.is_cancelled() && !free.kill.is_cancelled());
        assert_eq!(guarded.kill_reason(), KillReason::LeaseLost);
        assert_eq!(runs.kill_guarded(KillReason::LeaseLost), 0);
        // Until the lease is renewed, a guarded run that starts is stopped.
        let late = runs.start(JobName::parse("b").unwrap(), 3_000, 30, true);
        assert_eq!(late.kill_reason(), KillReason::LeaseLost);
        assert!(late.kill.is_cancelled());
        runs.unfence();
        assert!(!runs
            .start(JobName::parse("b").unwrap(), 4_000, 40, true)
            .kill
            .is_cancelled());
    }
}
