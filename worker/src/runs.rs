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
    claim_revision: i64,
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
    kills: Mutex<HashMap<JobName, (i64, KillReason)>>,
    /// Set by [`Runs::kill_all`]: runs starting after it are killed at once.
    closed: std::sync::atomic::AtomicBool,
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
    /// Registers a run whose claim was written at `claim_revision`.
    pub fn start(&self, job: JobName, claim_revision: i64) -> RunGuard<'_> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let kill = CancellationToken::new();
        let reason = Arc::new(Mutex::new(KillReason::Requested));
        let killed_before = self
            .kills
            .lock()
            .expect("kills lock")
            .get(&job)
            .filter(|(revision, _)| claim_revision < *revision)
            .map(|(_, why)| *why);
        if let Some(why) = killed_before {
            *reason.lock().expect("kill reason lock") = why;
            kill.cancel();
        } else if self.closed.load(Ordering::Acquire) {
            *reason.lock().expect("kill reason lock") = KillReason::Shutdown;
            kill.cancel();
        }
        self.entries.lock().expect("runs lock").insert(
            id,
            Entry {
                job,
                claim_revision,
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

    /// Kills the runs of `job` claimed before the kill request was written
    /// (`kill_revision`): comparing etcd revisions, never clocks, so a run
    /// that starts after the request is not hit by it. Returns how many.
    pub fn kill_job(&self, job: &JobName, kill_revision: i64, reason: KillReason) -> usize {
        {
            let mut kills = self.kills.lock().expect("kills lock");
            let newest = kills.entry(job.clone()).or_insert((kill_revision, reason));
            if newest.0 < kill_revision {
                *newest = (kill_revision, reason);
            }
        }
        let entries = self.entries.lock().expect("runs lock");
        let mut n = 0;
        for e in entries.values() {
            if &e.job == job && e.claim_revision < kill_revision && !e.kill.is_cancelled() {
                *e.reason.lock().expect("kill reason lock") = reason;
                e.kill.cancel();
                n += 1;
            }
        }
        n
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

    #[test]
    fn kill_hits_only_runs_claimed_before_it() {
        let runs = Runs::default();
        let a = JobName::parse("a").unwrap();
        let b = JobName::parse("b").unwrap();
        let old = runs.start(a.clone(), 10);
        let newer = runs.start(a.clone(), 30);
        let other = runs.start(b, 5);
        assert_eq!(runs.kill_job(&a, 20, KillReason::Requested), 1);
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
            .start(JobName::parse("c").unwrap(), 99)
            .kill
            .is_cancelled());
    }

    #[test]
    fn a_run_registered_after_a_kill_of_its_claim_is_killed() {
        let runs = Runs::default();
        let a = JobName::parse("a").unwrap();
        assert_eq!(runs.kill_job(&a, 20, KillReason::Replaced), 0);
        let claimed_before = runs.start(a.clone(), 10);
        assert!(claimed_before.kill.is_cancelled());
        assert_eq!(claimed_before.kill_reason(), KillReason::Replaced);
        let claimed_after = runs.start(a, 30);
        assert!(!claimed_after.kill.is_cancelled());
    }
}
