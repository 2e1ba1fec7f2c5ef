//! The etcd key layout. This module is the only place that formats or parses
//! a key; everything lives under one configurable prefix (default `/gdts/`).
//!
//! | key                              | value                 | lease                        |
//! |----------------------------------|-----------------------|------------------------------|
//! | `{p}jobs/{job}`                  | `JobSpec` JSON        | none                         |
//! | `{p}workers/{worker}`            | `WorkerInfo` JSON     | the worker's lease (kept alive) |
//! | `{p}claims/{job}/{tick_ms:020}`  | `ClaimRecord` JSON    | a claim lease, never renewed |
//! | `{p}kill/{job}`                  | `KillRequest` JSON    | a short lease, never renewed |
//! | `{p}running/{job}/{run}`         | `RunningRecord` JSON  | the running worker's lease   |
//! | `{p}high-water/{job}`            | highest claimed scheduled tick, 20 digits | none |
//! | `{p}run-now/{job}/{request}`     | `RunNowRequest` JSON  | a short lease, never renewed |
//! | `{p}horizon/{worker}`            | `Horizon` JSON        | the worker's lease           |
//! | `{p}run-feed/{worker}`           | `RunFeed` JSON        | the worker's lease           |
//! | `{p}auth/tokens/{id}`            | `TokenRecord` JSON (SHA-256 of the token, never the token) | none |
//! | `{p}auth/sessions/{sha256}`      | `SessionRecord` JSON (keyed by the SHA-256 of the cookie) | a session lease (12 h) |
//!
//! `{run}` is a [`RunKey`]: the tick zero-padded to 20 digits (so key order is
//! time order), then `.m{request}` for a manual run and `.a{n}` for retry
//! attempt n > 1. Claims use the same suffix: `{p}claims/{job}/{run}`.
//!
//! Job names and worker ids are restricted to `[A-Za-z0-9._-]`, so a segment
//! never contains `/` and a prefix range never matches a neighbour.

use crate::job::JobName;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keys {
    prefix: String,
}

impl Keys {
    /// `prefix` gets a trailing `/` if it lacks one.
    pub fn new(prefix: &str) -> Self {
        let mut prefix = prefix.to_string();
        if !prefix.ends_with('/') {
            prefix.push('/');
        }
        Keys { prefix }
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    pub fn jobs_prefix(&self) -> String {
        format!("{}jobs/", self.prefix)
    }

    pub fn job(&self, name: &JobName) -> String {
        format!("{}jobs/{}", self.prefix, name)
    }

    /// The job name of a `jobs/` key, or `None` for any other key.
    pub fn parse_job_key(&self, key: &[u8]) -> Option<JobName> {
        self.parse_name_under(key, &self.jobs_prefix())
    }

    pub fn workers_prefix(&self) -> String {
        format!("{}workers/", self.prefix)
    }

    pub fn worker(&self, worker_id: &str) -> String {
        format!("{}workers/{}", self.prefix, worker_id)
    }

    /// The worker id of a `workers/` key.
    pub fn parse_worker_key(&self, key: &[u8]) -> Option<String> {
        let id = std::str::from_utf8(key)
            .ok()?
            .strip_prefix(&self.workers_prefix())?;
        (!id.is_empty() && !id.contains('/')).then(|| id.to_string())
    }

    pub fn claims_prefix(&self) -> String {
        format!("{}claims/", self.prefix)
    }

    pub fn job_claims_prefix(&self, name: &JobName) -> String {
        format!("{}claims/{}/", self.prefix, name)
    }

    /// The claim key of the first scheduled attempt of a tick.
    pub fn claim(&self, name: &JobName, tick_ms: i64) -> String {
        self.claim_run(name, &RunKey::scheduled(tick_ms))
    }

    pub fn claim_run(&self, name: &JobName, run: &RunKey) -> String {
        format!("{}claims/{}/{}", self.prefix, name, run)
    }

    /// `(job, tick_ms)` of a claim key (any attempt, scheduled or manual).
    pub fn parse_claim_key(&self, key: &[u8]) -> Option<(JobName, i64)> {
        let rest = std::str::from_utf8(key)
            .ok()?
            .strip_prefix(&self.claims_prefix())?;
        let (name, run) = rest.split_once('/')?;
        let tick = run.get(..20)?;
        Some((JobName::parse(name).ok()?, tick.parse().ok()?))
    }

    /// `(job, run)` of a claim key.
    pub fn parse_claim_run_key(&self, key: &[u8]) -> Option<(JobName, RunKey)> {
        let rest = std::str::from_utf8(key)
            .ok()?
            .strip_prefix(&self.claims_prefix())?;
        let (name, run) = rest.split_once('/')?;
        Some((JobName::parse(name).ok()?, RunKey::parse(run)?))
    }

    pub fn running_prefix(&self, name: &JobName) -> String {
        format!("{}running/{}/", self.prefix, name)
    }

    pub fn running_all_prefix(&self) -> String {
        format!("{}running/", self.prefix)
    }

    pub fn running(&self, name: &JobName, run: &RunKey) -> String {
        format!("{}running/{}/{}", self.prefix, name, run)
    }

    /// The job and run of a `running/` key.
    pub fn parse_running_key(&self, key: &[u8]) -> Option<(JobName, RunKey)> {
        let rest = std::str::from_utf8(key)
            .ok()?
            .strip_prefix(&self.running_all_prefix())?;
        let (job, run) = rest.split_once('/')?;
        Some((JobName::parse(job).ok()?, RunKey::parse(run)?))
    }

    pub fn horizons_prefix(&self) -> String {
        format!("{}horizon/", self.prefix)
    }

    /// How far a worker has settled the ticks it owns (see `plan.rs`).
    pub fn horizon(&self, worker_id: &str) -> String {
        format!("{}horizon/{}", self.prefix, worker_id)
    }

    /// The worker id of a `horizon/` key.
    pub fn parse_horizon_key(&self, key: &[u8]) -> Option<String> {
        let id = std::str::from_utf8(key)
            .ok()?
            .strip_prefix(&self.horizons_prefix())?;
        (!id.is_empty() && !id.contains('/')).then(|| id.to_string())
    }

    pub fn run_feed_prefix(&self) -> String {
        format!("{}run-feed/", self.prefix)
    }

    /// The runs a worker finished since its previous write of this key.
    pub fn run_feed(&self, worker_id: &str) -> String {
        format!("{}run-feed/{}", self.prefix, worker_id)
    }

    /// The worker id of a `run-feed/` key.
    pub fn parse_run_feed_key(&self, key: &[u8]) -> Option<String> {
        let id = std::str::from_utf8(key)
            .ok()?
            .strip_prefix(&self.run_feed_prefix())?;
        (!id.is_empty() && !id.contains('/')).then(|| id.to_string())
    }

    /// The watermark: the highest scheduled tick ever claimed for the job.
    pub fn last_tick(&self, name: &JobName) -> String {
        format!("{}high-water/{}", self.prefix, name)
    }

    pub fn run_now_prefix(&self) -> String {
        format!("{}run-now/", self.prefix)
    }

    pub fn run_now(&self, name: &JobName, request: &str) -> String {
        format!("{}run-now/{}/{}", self.prefix, name, request)
    }

    /// `(job, request)` of a `run-now/` key.
    pub fn parse_run_now_key(&self, key: &[u8]) -> Option<(JobName, String)> {
        let rest = std::str::from_utf8(key)
            .ok()?
            .strip_prefix(&self.run_now_prefix())?;
        let (name, request) = rest.split_once('/')?;
        let request_ok = !request.is_empty()
            && request
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-');
        request_ok.then(|| Some((JobName::parse(name).ok()?, request.to_string())))?
    }

    /// API tokens (manager only). `auth/` sorts before `jobs/`, so no
    /// token or session is in the event stream's range.
    pub fn tokens_prefix(&self) -> String {
        format!("{}auth/tokens/", self.prefix)
    }

    /// A token's record; `id` is the public part of the token (hex).
    pub fn token(&self, id: &str) -> String {
        format!("{}auth/tokens/{}", self.prefix, id)
    }

    /// A web UI session, by the hex SHA-256 of its cookie value.
    pub fn session(&self, digest_hex: &str) -> String {
        format!("{}auth/sessions/{}", self.prefix, digest_hex)
    }

    pub fn kill_prefix(&self) -> String {
        format!("{}kill/", self.prefix)
    }

    pub fn kill(&self, name: &JobName) -> String {
        format!("{}kill/{}", self.prefix, name)
    }

    pub fn parse_kill_key(&self, key: &[u8]) -> Option<JobName> {
        self.parse_name_under(key, &self.kill_prefix())
    }

    /// The key range `[start, end)` the manager's event stream watches: from
    /// `jobs/` to the end of `workers/`. It holds `jobs/`, `kill/`, `run-feed/`,
    /// `run-now/`, `running/` and `workers/`, and leaves out the busy `claims/`,
    /// `high-water/` and `horizon/` keys, which sort before `jobs/`.
    pub fn event_range(&self) -> (String, Vec<u8>) {
        (self.jobs_prefix(), prefix_range_end(&self.workers_prefix()))
    }

    fn parse_name_under(&self, key: &[u8], under: &str) -> Option<JobName> {
        let rest = std::str::from_utf8(key).ok()?.strip_prefix(under)?;
        JobName::parse(rest).ok()
    }
}

/// Which run of a job a claim or running key is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunKey {
    /// The scheduled tick, or the request time of a manual run (epoch ms).
    pub tick_ms: i64,
    /// Set for a manual run: its request id.
    pub manual: Option<String>,
    /// 1 for the first attempt, n for retry n - 1.
    pub attempt: u32,
}

impl RunKey {
    pub fn scheduled(tick_ms: i64) -> Self {
        RunKey {
            tick_ms,
            manual: None,
            attempt: 1,
        }
    }

    pub fn manual(tick_ms: i64, request: &str) -> Self {
        RunKey {
            tick_ms,
            manual: Some(request.to_string()),
            attempt: 1,
        }
    }

    pub fn next_attempt(&self) -> Self {
        RunKey {
            attempt: self.attempt + 1,
            ..self.clone()
        }
    }

    /// The inverse of `Display`: `{tick:020}[.m{request}][.a{n}]`.
    pub fn parse(s: &str) -> Option<Self> {
        let tick_ms = s.get(..20)?.parse().ok()?;
        let mut rest = &s[20..];
        let mut run = RunKey::scheduled(tick_ms);
        if let Some(after) = rest.strip_prefix(".m") {
            let (request, tail) = match after.find(".a") {
                Some(i) => (&after[..i], &after[i..]),
                None => (after, ""),
            };
            if request.is_empty() {
                return None;
            }
            run.manual = Some(request.to_string());
            rest = tail;
        }
        if let Some(n) = rest.strip_prefix(".a") {
            run.attempt = n.parse().ok().filter(|n| *n > 1)?;
            rest = "";
        }
        rest.is_empty().then_some(run)
    }

    /// A scheduled first attempt: the runs the watermark and catch-up track.
    pub fn is_scheduled_tick(&self) -> bool {
        self.manual.is_none() && self.attempt == 1
    }
}

impl std::fmt::Display for RunKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:020}", self.tick_ms)?;
        if let Some(request) = &self.manual {
            write!(f, ".m{request}")?;
        }
        if self.attempt > 1 {
            write!(f, ".a{}", self.attempt)?;
        }
        Ok(())
    }
}

/// A tick as the watermark stores it: zero-padded, so byte order is time order.
pub fn watermark_value(tick_ms: i64) -> String {
    format!("{tick_ms:020}")
}

/// The end of the etcd range that covers every key starting with `prefix`
/// (what `etcdctl get --prefix` uses): the prefix with its last byte + 1.
pub fn prefix_range_end(prefix: &str) -> Vec<u8> {
    let mut end = prefix.as_bytes().to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_keys_round_trip() {
        let runs = [
            RunKey::scheduled(1_700_000_000_000),
            RunKey::scheduled(5).next_attempt().next_attempt(),
            RunKey::manual(1_700_000_000_123, "1700000000123-7a3f"),
            RunKey::manual(9, "9-a").next_attempt(),
        ];
        for run in runs {
            assert_eq!(RunKey::parse(&run.to_string()), Some(run.clone()), "{run}");
        }
        for bad in [
            "123",
            "00000000000000000005.a1",
            "00000000000000000005.m",
            "00000000000000000005x",
        ] {
            assert_eq!(RunKey::parse(bad), None, "{bad}");
        }
        let k = Keys::new("/t1");
        let job = JobName::parse("j").unwrap();
        let run = RunKey::manual(7, "7-ab").next_attempt();
        assert_eq!(
            k.parse_claim_run_key(k.claim_run(&job, &run).as_bytes()),
            Some((job, run))
        );
    }

    #[test]
    fn layout_round_trips() {
        let k = Keys::new("/t1");
        let name = JobName::parse("backup.db").unwrap();
        assert_eq!(k.job(&name), "/t1/jobs/backup.db");
        assert_eq!(k.parse_job_key(k.job(&name).as_bytes()), Some(name.clone()));
        assert_eq!(k.parse_job_key(b"/t1/workers/w"), None);
        assert_eq!(k.parse_job_key(b"/t1/jobs/a/b"), None);
        let claim = k.claim(&name, 1_700_000_000_000);
        assert_eq!(claim, "/t1/claims/backup.db/00000001700000000000");
        assert_eq!(
            k.parse_claim_key(claim.as_bytes()),
            Some((name.clone(), 1_700_000_000_000))
        );
        assert!(claim.starts_with(&k.job_claims_prefix(&name)));
        assert_eq!(k.parse_kill_key(k.kill(&name).as_bytes()), Some(name));
        assert_eq!(
            k.parse_worker_key(k.worker("w-1").as_bytes()),
            Some("w-1".into())
        );
        assert_eq!(k.parse_worker_key(b"/t1/jobs/w"), None);
        assert_eq!(
            k.parse_horizon_key(k.horizon("w-1").as_bytes()),
            Some("w-1".into())
        );
        assert_eq!(
            k.parse_run_feed_key(k.run_feed("w-1").as_bytes()),
            Some("w-1".into())
        );
        assert_eq!(k.parse_run_feed_key(k.horizon("w-1").as_bytes()), None);
    }

    #[test]
    fn run_keys_and_their_parsers() {
        let k = Keys::new("/p/");
        let n = JobName::parse("j").unwrap();
        let manual = RunKey::manual(5, "abc-1");
        let retry = manual.next_attempt();
        assert_eq!(
            k.claim_run(&n, &retry),
            "/p/claims/j/00000000000000000005.mabc-1.a2"
        );
        assert_eq!(
            k.parse_claim_key(k.claim_run(&n, &retry).as_bytes()),
            Some((n.clone(), 5))
        );
        assert!(!retry.is_scheduled_tick() && RunKey::scheduled(5).is_scheduled_tick());
        assert_eq!(
            k.parse_running_key(k.running(&n, &manual).as_bytes()),
            Some((n.clone(), manual.clone()))
        );
        assert!(k.running(&n, &manual).starts_with(&k.running_prefix(&n)));
        assert_eq!(
            k.parse_run_now_key(k.run_now(&n, "17-ab").as_bytes()),
            Some((n.clone(), "17-ab".to_string()))
        );
        assert_eq!(k.parse_run_now_key(b"/p/run-now/j/x/y"), None);
        assert!(watermark_value(999) < watermark_value(1000));
    }

    #[test]
    fn claim_keys_sort_by_time() {
        let k = Keys::new("/p/");
        let n = JobName::parse("j").unwrap();
        assert!(k.claim(&n, 999) < k.claim(&n, 1000));
    }

    #[test]
    fn the_event_range_holds_exactly_what_the_event_stream_reports() {
        let k = Keys::new("/p/");
        let n = JobName::parse("j").unwrap();
        let (start, end) = k.event_range();
        let inside = |key: &str| key >= start.as_str() && key.as_bytes() < end.as_slice();
        for key in [
            k.job(&n),
            k.kill(&n),
            k.run_now(&n, "1-a"),
            k.running(&n, &RunKey::scheduled(1)),
            k.run_feed("w"),
            k.worker("w"),
        ] {
            assert!(inside(&key), "{key} should be watched");
        }
        for key in [
            k.claim(&n, 1),
            k.last_tick(&n),
            k.horizon("w"),
            k.token("ab12"),
            k.session("cd34"),
        ] {
            assert!(!inside(&key), "{key} should not be watched");
        }
    }

    #[test]
    fn range_end() {
        assert_eq!(prefix_range_end("/a/"), b"/a0".to_vec());
    }
}
