//! The etcd key layout. This module is the only place that formats or parses
//! a key; everything lives under one configurable prefix (default `/gdts/`).
//!
//! | key                              | value                 | lease                        |
//! |----------------------------------|-----------------------|------------------------------|
//! | `{p}jobs/{job}`                  | `JobSpec` JSON        | none                         |
//! | `{p}workers/{worker}`            | `WorkerInfo` JSON     | the worker's lease (kept alive) |
//! | `{p}claims/{job}/{tick_ms:020}`  | `ClaimRecord` JSON    | a claim lease, never renewed |
//! | `{p}kill/{job}`                  | `KillRequest` JSON    | a short lease, never renewed |
//!
//! Job names and worker ids are restricted to `[A-Za-z0-9._-]`, so a segment
//! never contains `/` and a prefix range never matches a neighbour.
//! Ticks are zero-padded to 20 digits so key order is time order.

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

    pub fn claims_prefix(&self) -> String {
        format!("{}claims/", self.prefix)
    }

    pub fn job_claims_prefix(&self, name: &JobName) -> String {
        format!("{}claims/{}/", self.prefix, name)
    }

    pub fn claim(&self, name: &JobName, tick_ms: i64) -> String {
        format!("{}claims/{}/{:020}", self.prefix, name, tick_ms)
    }

    /// `(job, tick_ms)` of a claim key.
    pub fn parse_claim_key(&self, key: &[u8]) -> Option<(JobName, i64)> {
        let rest = std::str::from_utf8(key)
            .ok()?
            .strip_prefix(&self.claims_prefix())?;
        let (name, tick) = rest.split_once('/')?;
        Some((JobName::parse(name).ok()?, tick.parse().ok()?))
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

    fn parse_name_under(&self, key: &[u8], under: &str) -> Option<JobName> {
        let rest = std::str::from_utf8(key).ok()?.strip_prefix(under)?;
        JobName::parse(rest).ok()
    }
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
    }

    #[test]
    fn claim_keys_sort_by_time() {
        let k = Keys::new("/p/");
        let n = JobName::parse("j").unwrap();
        assert!(k.claim(&n, 999) < k.claim(&n, 1000));
    }

    #[test]
    fn range_end() {
        assert_eq!(prefix_range_end("/a/"), b"/a0".to_vec());
    }
}
