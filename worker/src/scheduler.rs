//! The worker's view of the jobs and the timer that fires their ticks.
//!
//! `JobTable` is a plain state machine (apply an event, take the due ticks at
//! `now`) so it is tested without etcd; `run_scheduler` is the loop around it.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use gdts_common::keys::Keys;
use gdts_common::schedule::due_ticks;
use gdts_common::timing::MAX_TICK_LATENESS;
use gdts_common::{Job, JobName, JobSpec};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::etcd_watch::{Entry, PrefixEvent};
use crate::run::{catch_up_ticks, run_manual, run_tick, RunContext};

/// A tick to attempt: the job as this worker knows it, the etcd
/// `mod_revision` of that definition, and the tick.
#[derive(Debug, Clone)]
pub struct DueTick {
    pub job: Job,
    pub job_revision: i64,
    pub tick: DateTime<Utc>,
    /// Due in the first wake-up after a start or resync of a job with
    /// `catchUpSeconds`: possibly a tick missed during an outage.
    pub catch_up: bool,
}

struct Scheduled {
    job: Job,
    revision: i64,
    next: Option<DateTime<Utc>>,
    /// Set by a resync (or start) for jobs with `catchUpSeconds`: the next
    /// wake-up may take ticks as old as the catch-up window.
    catching_up: bool,
}

impl Scheduled {
    fn new(job: Job, revision: i64, next: Option<DateTime<Utc>>, catching_up: bool) -> Self {
        // A paused job keeps its definition but never fires.
        let next = if job.paused { None } else { next };
        Scheduled {
            job,
            revision,
            next,
            catching_up,
        }
    }
}

pub struct JobTable {
    keys: Keys,
    jobs: HashMap<JobName, Scheduled>,
}

impl JobTable {
    pub fn new(keys: Keys) -> Self {
        JobTable {
            keys,
            jobs: HashMap::new(),
        }
    }

    pub fn len(&self) -> usize {
        self.jobs.len()
    }

    pub fn apply(&mut self, event: PrefixEvent, now: DateTime<Utc>) {
        match event {
            PrefixEvent::Reset(kvs) => {
                let mut fresh = HashMap::new();
                for kv in &kvs {
                    if let Some((job, revision)) = self.decode(kv) {
                        let catch_up = chrono::Duration::from_std(job.policy.catch_up)
                            .expect("catch-up window is small");
                        let next = match self.jobs.remove(&job.name) {
                            // Unchanged definition: keep its place in time so a
                            // resync neither skips nor repeats a tick.
                            Some(s) if s.revision == revision && s.next.is_some() => s.next,
                            // New to this worker (it just started): a catch-up
                            // window reaches back in time; the watermark in
                            // etcd filters out what already ran.
                            _ => job.schedule.next_fire(now - catch_up),
                        };
                        let catching_up = !catch_up.is_zero();
                        fresh.insert(
                            job.name.clone(),
                            Scheduled::new(job, revision, next, catching_up),
                        );
                    }
                }
                self.jobs = fresh;
            }
            PrefixEvent::Put(kv) => match self.decode(&kv) {
                Some((job, revision)) => {
                    let next = job.schedule.next_fire(now);
                    self.jobs
                        .insert(job.name.clone(), Scheduled::new(job, revision, next, false));
                }
                None => {
                    if let Some(name) = self.keys.parse_job_key(&kv.key) {
                        self.jobs.remove(&name);
                    }
                }
            },
            PrefixEvent::Delete(kv) => {
                if let Some(name) = self.keys.parse_job_key(&kv.key) {
                    self.jobs.remove(&name);
                }
            }
        }
    }

    fn decode(&self, kv: &Entry) -> Option<(Job, i64)> {
        let name = self.keys.parse_job_key(&kv.key)?;
        let parsed = serde_json::from_slice::<JobSpec>(&kv.value)
            .map_err(|e| e.to_string())
            .and_then(|spec| Job::from_spec(&spec).map_err(|e| e.to_string()));
        match parsed {
            Ok(job) if job.name == name => Some((job, kv.mod_revision)),
            Ok(job) => {
                tracing::warn!(key = %name, named = %job.name, "job stored under another name; ignoring it");
                None
            }
            Err(e) => {
                tracing::warn!(job = %name, error = %e, "invalid job in etcd; ignoring it");
                None
            }
        }
    }

    /// The earliest instant any job is due.
    pub fn next_wake(&self) -> Option<DateTime<Utc>> {
        self.jobs.values().filter_map(|s| s.next).min()
    }

    /// The job as this worker knows it, with its revision.
    pub fn get(&self, name: &JobName) -> Option<(&Job, i64)> {
        self.jobs.get(name).map(|s| (&s.job, s.revision))
    }

    /// The ticks due at `now`, oldest first per job; advances each job.
    pub fn take_due(&mut self, now: DateTime<Utc>) -> Vec<DueTick> {
        let lateness = chrono::Duration::from_std(MAX_TICK_LATENESS).expect("small duration");
        let mut due = Vec::new();
        for s in self.jobs.values_mut() {
            let Some(next) = s.next.filter(|n| *n <= now) else {
                continue;
            };
            let catching_up = std::mem::take(&mut s.catching_up);
            let window = if catching_up {
                lateness.max(chrono::Duration::from_std(s.job.policy.catch_up).expect("small"))
            } else {
                lateness
            };
            let (ticks, following) = due_ticks(&s.job.schedule, next, now, window);
            s.next = following;
            due.extend(ticks.into_iter().map(|tick| DueTick {
                job: s.job.clone(),
                job_revision: s.revision,
                tick,
                // Right after a start or resync, the job's ticks are claimed
                // in order by one task, so the watermark rises tick by tick.
                catch_up: catching_up,
            }));
        }
        due
    }
}

/// Longest the timer sleeps before looking at the wall clock again, so a
/// clock step does not leave it sleeping past a tick.
const MAX_SLEEP: Duration = Duration::from_millis(500);

/// Fires ticks until `shutdown`. Each due tick becomes a task on `runs`
/// that claims it and, if won, runs it; the catch-up ticks of a job are
/// claimed in order by one task. Run-now requests become manual runs.
pub async fn run_scheduler(
    mut table: JobTable,
    mut events: mpsc::Receiver<PrefixEvent>,
    mut run_now: mpsc::Receiver<PrefixEvent>,
    ctx: Arc<RunContext>,
    runs: TaskTracker,
    mut registered: tokio::sync::watch::Receiver<i64>,
    shutdown: CancellationToken,
) {
    // Jobs whose catch-up is in progress: their ticks queue behind it.
    let mut catching_up: HashMap<JobName, mpsc::UnboundedSender<DueTick>> = HashMap::new();
    // Claims need this worker's lease (for its running marks): fire nothing
    // before the first registration, so no tick is lost to the start-up race.
    tokio::select! {
        _ = shutdown.cancelled() => return,
        r = registered.wait_for(|lease| *lease != 0) => if r.is_err() { return },
    }
    loop {
        let sleep_for = table
            .next_wake()
            .map(|t| (t - Utc::now()).to_std().unwrap_or(Duration::ZERO))
            .unwrap_or(MAX_SLEEP)
            .min(MAX_SLEEP);
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => break,
            event = events.recv() => match event {
                Some(event) => {
                    table.apply(event, Utc::now());
                    tracing::debug!(jobs = table.len(), "job table updated");
                }
                None => break,
            },
            request = run_now.recv() => match request {
                // After a resync, requests still alive are offered again; their
                // claim keys make sure each runs once.
                Some(PrefixEvent::Put(entry)) => start_manual_run(&table, &entry, &ctx, &runs),
                Some(PrefixEvent::Reset(entries)) => {
                    for entry in &entries {
                        start_manual_run(&table, entry, &ctx, &runs);
                    }
                }
                Some(PrefixEvent::Delete(_)) => {}
                None => break,
            },
            _ = tokio::time::sleep(sleep_for) => {
                for due in table.take_due(Utc::now()) {
                    dispatch(due, &mut catching_up, &ctx, &runs);
                }
            }
        }
    }
    tracing::info!("scheduler stopped: no new ticks will be claimed");
}

/// Starts a due tick: into its job's catch-up queue while one is draining
/// (so the job's claims stay in tick order), else as a task of its own.
fn dispatch(
    due: DueTick,
    catching_up: &mut HashMap<JobName, mpsc::UnboundedSender<DueTick>>,
    ctx: &Arc<RunContext>,
    runs: &TaskTracker,
) {
    let name = due.job.name.clone();
    let due = match catching_up.get(&name) {
        Some(queue) => match queue.send(due) {
            Ok(()) => return,
            // That catch-up has drained and ended.
            Err(mpsc::error::SendError(due)) => {
                catching_up.remove(&name);
                due
            }
        },
        None => due,
    };
    if due.catch_up {
        let (queue, receiver) = mpsc::unbounded_channel();
        queue.send(due).expect("the receiver is alive");
        catching_up.insert(name, queue);
        runs.spawn(catch_up_ticks(ctx.clone(), receiver, runs.clone()));
    } else {
        runs.spawn(run_tick(ctx.clone(), due));
    }
}

fn start_manual_run(table: &JobTable, entry: &Entry, ctx: &Arc<RunContext>, runs: &TaskTracker) {
    let Some((job, request)) = table.keys.parse_run_now_key(&entry.key) else {
        return;
    };
    let Ok(req) = serde_json::from_slice::<gdts_common::values::RunNowRequest>(&entry.value) else {
        tracing::warn!(job = %job, "undecodable run-now request; ignoring it");
        return;
    };
    match table.get(&job) {
        Some((job, revision)) => {
            runs.spawn(run_manual(
                ctx.clone(),
                job.clone(),
                revision,
                req.requested_at,
                request,
            ));
        }
        None => tracing::debug!(job = %job, "run-now for a job this worker does not know"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kv(keys: &Keys, name: &str, cron: &str, rev: i64) -> Entry {
        let spec = JobSpec::shell(name, "true", cron);
        Entry {
            key: keys.job(&JobName::parse(name).unwrap()).into_bytes(),
            value: serde_json::to_vec(&spec).unwrap(),
            mod_revision: rev,
        }
    }

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn resync_keeps_unchanged_jobs_in_place_and_drops_deleted_ones() {
        let keys = Keys::new("/t/");
        let mut table = JobTable::new(keys.clone());
        let t0 = at("2030-01-01T00:00:00.500Z");
        table.apply(
            PrefixEvent::Reset(vec![
                kv(&keys, "a", "* * * * * *", 5),
                kv(&keys, "b", "* * * * * *", 6),
            ]),
            t0,
        );
        let due = table.take_due(at("2030-01-01T00:00:01.001Z"));
        assert_eq!(due.len(), 2);
        // A resync where `a` is unchanged and `b` is gone.
        table.apply(
            PrefixEvent::Reset(vec![kv(&keys, "a", "* * * * * *", 5)]),
            at("2030-01-01T00:00:01.900Z"),
        );
        let due = table.take_due(at("2030-01-01T00:00:02.001Z"));
        assert_eq!(due.len(), 1);
        assert_eq!(due[0].job.name.as_str(), "a");
        assert_eq!(due[0].tick, at("2030-01-01T00:00:02Z"));
        assert_eq!(due[0].job_revision, 5);
    }

    fn job_kv(keys: &Keys, spec: &JobSpec, rev: i64) -> Entry {
        Entry {
            key: keys.job(&JobName::parse(&spec.name).unwrap()).into_bytes(),
            value: serde_json::to_vec(spec).unwrap(),
            mod_revision: rev,
        }
    }

    #[test]
    fn paused_jobs_never_fire() {
        let keys = Keys::new("/t/");
        let mut table = JobTable::new(keys.clone());
        let mut spec = JobSpec::shell("p", "true", "* * * * * *");
        spec.paused = true;
        table.apply(
            PrefixEvent::Put(job_kv(&keys, &spec, 3)),
            at("2030-01-01T00:00:00Z"),
        );
        assert_eq!(table.next_wake(), None);
        assert!(table.take_due(at("2030-01-01T00:01:00Z")).is_empty());
        spec.paused = false;
        table.apply(
            PrefixEvent::Put(job_kv(&keys, &spec, 4)),
            at("2030-01-01T00:01:00.5Z"),
        );
        assert_eq!(table.next_wake(), Some(at("2030-01-01T00:01:01Z")));
    }

    #[test]
    fn a_start_with_catch_up_reaches_back_once() {
        let keys = Keys::new("/t/");
        let mut table = JobTable::new(keys.clone());
        let mut spec = JobSpec::shell("c", "true", "*/10 * * * * *");
        spec.catch_up_seconds = Some(60);
        let now = at("2030-01-01T00:05:05Z");
        table.apply(PrefixEvent::Reset(vec![job_kv(&keys, &spec, 3)]), now);
        let due = table.take_due(now);
        let ticks: Vec<_> = due.iter().map(|d| (d.tick, d.catch_up)).collect();
        assert_eq!(ticks.len(), 6, "{ticks:?}"); // 04:10 .. 05:00
        assert_eq!(ticks[0], (at("2030-01-01T00:04:10Z"), true));
        assert_eq!(ticks[5], (at("2030-01-01T00:05:00Z"), true));
        let due = table.take_due(at("2030-01-01T00:05:10.2Z"));
        assert_eq!(due.len(), 1);
        assert!(
            !due[0].catch_up,
            "after the first wake-up ticks are ordinary"
        );

        // Without catch-up, a start fires only future ticks.
        spec.catch_up_seconds = None;
        table.apply(PrefixEvent::Reset(vec![job_kv(&keys, &spec, 4)]), now);
        assert!(table.take_due(now).is_empty());
    }

    #[test]
    fn put_replaces_and_delete_removes() {
        let keys = Keys::new("/t/");
        let mut table = JobTable::new(keys.clone());
        let t0 = at("2030-01-01T00:00:00.500Z");
        table.apply(PrefixEvent::Put(kv(&keys, "a", "* * * * * *", 5)), t0);
        table.apply(PrefixEvent::Put(kv(&keys, "a", "0 0 * * * *", 9)), t0);
        assert_eq!(table.next_wake(), Some(at("2030-01-01T01:00:00Z")));
        table.apply(PrefixEvent::Delete(kv(&keys, "a", "0 0 * * * *", 10)), t0);
        assert_eq!(table.next_wake(), None);
        // Garbage under a job key is ignored, not fatal.
        let mut bad = kv(&keys, "c", "* * * * * *", 11);
        bad.value = b"{not json".to_vec();
        table.apply(PrefixEvent::Put(bad), t0);
        assert_eq!(table.len(), 0);
    }
}
