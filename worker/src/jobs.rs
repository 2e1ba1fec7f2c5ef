//! The worker's view of the jobs: each job's definition, its etcd revision
//! and its next tick, indexed by time so the planner takes the ticks of the
//! next moments without looking at every job (100,000 jobs are fine).
//!
//! `JobTable` is a plain state machine (apply an event, take the ticks up to
//! a time) so it is tested without etcd. The planner owns it behind
//! [`SharedJobs`]; a run looks up its job's current definition there when
//! it is released.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use gdts_common::keys::Keys;
use gdts_common::schedule::due_ticks;
use gdts_common::timing::MAX_TICK_LATENESS;
use gdts_common::{Job, JobName, JobSpec};

use gdts_runtime::etcd_watch::{Entry, PrefixEvent};

/// A tick to attempt: the job as this worker knows it, the etcd
/// `mod_revision` of that definition, and the tick.
#[derive(Debug, Clone)]
pub struct DueTick {
    pub job: Arc<Job>,
    pub job_revision: i64,
    pub tick: DateTime<Utc>,
    /// A tick already past, taken in the first look after a start or resync
    /// of a job with `catchUpSeconds`: possibly missed during an outage.
    pub catch_up: bool,
    /// The `claimedAt` of this worker's attempts at the tick whose outcome
    /// stayed unknown (see `ClaimRequest::earlier`), carried along when the
    /// tick is decided again or owed to a catch-up.
    pub earlier: Vec<i64>,
}

struct Scheduled {
    job: Arc<Job>,
    revision: i64,
    next: Option<DateTime<Utc>>,
    /// Set by a resync (or start) for jobs with `catchUpSeconds`: the next
    /// look may take ticks as old as the catch-up window.
    catching_up: bool,
}

/// A job decoded from etcd, ready to go into the table.
pub struct Decoded {
    name: JobName,
    job: Option<(Arc<Job>, i64)>,
}

impl Decoded {
    pub fn name(&self) -> &JobName {
        &self.name
    }
}

pub struct JobTable {
    #[cfg_attr(not(test), allow(dead_code))]
    keys: Keys,
    jobs: HashMap<JobName, Scheduled>,
    /// (next tick in epoch ms, job) for every job with a next tick.
    by_time: BTreeSet<(i64, JobName)>,
    /// Jobs with a selector that fire (not paused).
    selecting: HashSet<JobName>,
}

impl JobTable {
    pub fn new(keys: Keys) -> Self {
        JobTable {
            keys,
            jobs: HashMap::new(),
            by_time: BTreeSet::new(),
            selecting: HashSet::new(),
        }
    }

    pub fn len(&self) -> usize {
        self.jobs.len()
    }

    /// The job as this worker knows it, with its revision.
    pub fn get(&self, name: &JobName) -> Option<(Arc<Job>, i64)> {
        self.jobs.get(name).map(|s| (s.job.clone(), s.revision))
    }

    /// The jobs with a selector that fire (not paused).
    pub fn selecting(&self) -> impl Iterator<Item = &Job> + '_ {
        self.selecting
            .iter()
            .filter_map(|name| self.jobs.get(name))
            .map(|s| s.job.as_ref())
    }

    fn insert(&mut self, name: JobName, mut s: Scheduled) {
        if s.job.paused {
            // A paused job keeps its definition but never fires.
            s.next = None;
        }
        self.remove(&name);
        if !s.job.paused && !s.job.selector.is_empty() {
            self.selecting.insert(name.clone());
        }
        if let Some(next) = s.next {
            self.by_time.insert((next.timestamp_millis(), name.clone()));
        }
        self.jobs.insert(name, s);
    }

    fn remove(&mut self, name: &JobName) -> Option<Scheduled> {
        self.selecting.remove(name);
        let old = self.jobs.remove(name)?;
        if let Some(next) = old.next {
            self.by_time
                .remove(&(next.timestamp_millis(), name.clone()));
        }
        Some(old)
    }

    /// Decodes an event's job definitions (the expensive part: JSON and
    /// cron parsing), so the table itself is locked only to [`JobTable::apply_decoded`].
    pub fn decode(keys: &Keys, event: PrefixEvent) -> DecodedEvent {
        match event {
            PrefixEvent::Reset(kvs) => {
                DecodedEvent::Reset(kvs.iter().filter_map(|kv| decode(keys, kv)).collect())
            }
            PrefixEvent::Put(kv) => match decode(keys, &kv) {
                Some(d) => DecodedEvent::Put(d),
                None => DecodedEvent::None,
            },
            PrefixEvent::Delete(kv) => match keys.parse_job_key(&kv.key) {
                Some(name) => DecodedEvent::Delete(name),
                None => DecodedEvent::None,
            },
        }
    }

    /// Decodes and applies `event` (for tests and small tables).
    #[cfg(test)]
    pub fn apply(&mut self, event: PrefixEvent, now: DateTime<Utc>) {
        let decoded = Self::decode(&self.keys.clone(), event);
        self.apply_decoded(decoded, now);
    }

    pub fn apply_decoded(&mut self, event: DecodedEvent, now: DateTime<Utc>) {
        match event {
            DecodedEvent::Reset(decoded) => {
                let mut old = std::mem::take(&mut self.jobs);
                self.by_time.clear();
                self.selecting.clear();
                for d in decoded {
                    let Some((job, revision)) = d.job else {
                        continue;
                    };
                    let catch_up = chrono::Duration::from_std(job.policy.catch_up)
                        .expect("catch-up window is small");
                    let next = match old.remove(&d.name) {
                        // Unchanged definition: keep its place in time so a
                        // resync neither skips nor repeats a tick.
                        Some(s) if s.revision == revision && s.next.is_some() => s.next,
                        // New to this worker (it just started): a catch-up
                        // window reaches back in time; the watermark in
                        // etcd filters out what already ran.
                        _ => job.schedule.next_fire(now - catch_up),
                    };
                    let catching_up = !catch_up.is_zero();
                    self.insert(
                        d.name,
                        Scheduled {
                            job,
                            revision,
                            next,
                            catching_up,
                        },
                    );
                }
            }
            DecodedEvent::Put(d) => match d.job {
                Some((job, revision)) => {
                    let next = job.schedule.next_fire(now);
                    self.insert(
                        d.name,
                        Scheduled {
                            job,
                            revision,
                            next,
                            catching_up: false,
                        },
                    );
                }
                None => {
                    self.remove(&d.name);
                }
            },
            DecodedEvent::Delete(name) => {
                self.remove(&name);
            }
            DecodedEvent::None => {}
        }
    }

    /// The earliest instant any job is due.
    #[cfg(test)]
    pub fn next_wake(&self) -> Option<DateTime<Utc>> {
        self.by_time
            .first()
            .and_then(|(ms, _)| DateTime::from_timestamp_millis(*ms))
    }

    /// Every tick due up to `until` (which may be ahead of `now`), oldest
    /// first per job; advances each job past them. Ticks older than the
    /// lateness bound are skipped, except the catch-up window of a job's
    /// first look after a start or resync.
    pub fn take_until(&mut self, now: DateTime<Utc>, until: DateTime<Utc>) -> Vec<DueTick> {
        let lateness = chrono::Duration::from_std(MAX_TICK_LATENESS).expect("small duration");
        let mut due = Vec::new();
        let until_ms = until.timestamp_millis();
        while let Some((ms, _)) = self.by_time.first() {
            if *ms > until_ms {
                break;
            }
            let (_, name) = self.by_time.pop_first().expect("just looked");
            let s = self.jobs.get_mut(&name).expect("indexed jobs exist");
            let next = s.next.expect("indexed jobs have a next tick");
            let catching_up = std::mem::take(&mut s.catching_up);
            let window = if catching_up {
                lateness.max(chrono::Duration::from_std(s.job.policy.catch_up).expect("small"))
            } else {
                lateness
            };
            // Ticks up to `until`; the window of lateness is counted from now.
            let (ticks, following) =
                due_ticks(&s.job.schedule, next, until, window + (until - now));
            s.next = following;
            due.extend(ticks.into_iter().map(|tick| DueTick {
                job: s.job.clone(),
                job_revision: s.revision,
                tick,
                // Right after a start or resync, the job's past ticks are
                // claimed in order by one task, so the watermark rises tick by tick.
                catch_up: catching_up && tick <= now,
                earlier: Vec::new(),
            }));
            if let Some(next) = s.next {
                self.by_time.insert((next.timestamp_millis(), name));
            }
        }
        due
    }
}

/// An event with its jobs decoded.
pub enum DecodedEvent {
    Reset(Vec<Decoded>),
    Put(Decoded),
    Delete(JobName),
    None,
}

fn decode(keys: &Keys, kv: &Entry) -> Option<Decoded> {
    let name = keys.parse_job_key(&kv.key)?;
    let parsed = serde_json::from_slice::<JobSpec>(&kv.value)
        .map_err(|e| e.to_string())
        .and_then(|spec| Job::from_spec(&spec).map_err(|e| e.to_string()));
    let job = match parsed {
        Ok(job) if job.name == name => Some((Arc::new(job), kv.mod_revision)),
        Ok(job) => {
            tracing::warn!(key = %name, named = %job.name, "job stored under another name; ignoring it");
            None
        }
        Err(e) => {
            tracing::warn!(job = %name, error = %e, "invalid job in etcd; ignoring it");
            None
        }
    };
    Some(Decoded { name, job })
}

/// The job table, shared by the planner (which changes it) and the runs
/// (which read their job's current definition).
#[derive(Clone)]
pub struct SharedJobs(Arc<Mutex<JobTable>>);

impl SharedJobs {
    pub fn new(table: JobTable) -> Self {
        SharedJobs(Arc::new(Mutex::new(table)))
    }

    pub fn lock(&self) -> std::sync::MutexGuard<'_, JobTable> {
        self.0.lock().expect("job table lock")
    }

    /// The job's current definition and revision, if it exists.
    pub fn current(&self, name: &JobName) -> Option<(Arc<Job>, i64)> {
        self.lock().get(name)
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

    fn take_due(table: &mut JobTable, now: DateTime<Utc>) -> Vec<DueTick> {
        table.take_until(now, now)
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
        let due = take_due(&mut table, at("2030-01-01T00:00:01.001Z"));
        assert_eq!(due.len(), 2);
        // A resync where `a` is unchanged and `b` is gone.
        table.apply(
            PrefixEvent::Reset(vec![kv(&keys, "a", "* * * * * *", 5)]),
            at("2030-01-01T00:00:01.900Z"),
        );
        let due = take_due(&mut table, at("2030-01-01T00:00:02.001Z"));
        assert_eq!(due.len(), 1);
        assert_eq!(due[0].job.name.as_str(), "a");
        assert_eq!(due[0].tick, at("2030-01-01T00:00:02Z"));
        assert_eq!(due[0].job_revision, 5);
    }

    #[test]
    fn ticks_ahead_of_now_are_taken_once_in_order() {
        let keys = Keys::new("/t/");
        let mut table = JobTable::new(keys.clone());
        let now = at("2030-01-01T00:00:00.200Z");
        table.apply(
            PrefixEvent::Reset(vec![
                kv(&keys, "a", "* * * * * *", 5),
                kv(&keys, "b", "*/2 * * * * *", 6),
            ]),
            now,
        );
        let until = now + chrono::Duration::milliseconds(2000);
        let mut due: Vec<_> = table
            .take_until(now, until)
            .into_iter()
            .map(|d| (d.job.name.to_string(), d.tick))
            .collect();
        due.sort();
        assert_eq!(
            due,
            vec![
                ("a".to_string(), at("2030-01-01T00:00:01Z")),
                ("a".to_string(), at("2030-01-01T00:00:02Z")),
                ("b".to_string(), at("2030-01-01T00:00:02Z")),
            ]
        );
        assert!(table.take_until(now, until).is_empty(), "taken only once");
        assert_eq!(table.next_wake(), Some(at("2030-01-01T00:00:03Z")));
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
        assert!(take_due(&mut table, at("2030-01-01T00:01:00Z")).is_empty());
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
        // Looking 1.5 s ahead: the past ticks are catch-up ticks, a future one is not.
        let due = table.take_until(now, now + chrono::Duration::milliseconds(5500));
        let ticks: Vec<_> = due.iter().map(|d| (d.tick, d.catch_up)).collect();
        assert_eq!(ticks.len(), 7, "{ticks:?}"); // 04:10 .. 05:00, then 05:10
        assert_eq!(ticks[0], (at("2030-01-01T00:04:10Z"), true));
        assert_eq!(ticks[5], (at("2030-01-01T00:05:00Z"), true));
        assert_eq!(ticks[6], (at("2030-01-01T00:05:10Z"), false));
        let due = take_due(&mut table, at("2030-01-01T00:05:20.2Z"));
        assert_eq!(due.len(), 1);
        assert!(!due[0].catch_up, "after the first look ticks are ordinary");

        // Without catch-up, a start fires only future ticks.
        spec.catch_up_seconds = None;
        table.apply(PrefixEvent::Reset(vec![job_kv(&keys, &spec, 4)]), now);
        assert!(take_due(&mut table, now).is_empty());
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
