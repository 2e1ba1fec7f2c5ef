//! The manager's reads and writes: jobs, kill requests and worker
//! registrations in etcd; run records in MongoDB. The manager never holds a
//! lease it keeps alive and keeps no state of its own between requests (the
//! job index is a copy of what etcd holds, read again at every start). Every read of an
//! etcd prefix that can grow goes page by page (`RangePages`): a single
//! response above 4 MiB is refused by the client. A page of the job list
//! finds its bounds in the job index (`job_index.rs`) and reads only them.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use etcd_client::{
    Client, Compare, CompareOp, DeleteOptions, KeyValue, PutOptions, Txn, TxnOp, TxnOpResponse,
};
use gdts_common::keys::{prefix_range_end, Keys};
use gdts_common::log_record::{LogRecord, LOG_COLLECTION};
use gdts_common::timing::{KILL_REQUEST_TTL, RUN_NOW_REQUEST_TTL};
use gdts_common::values::{KillRequest, RunNowRequest, RunningRecord, WorkerInfo};
use gdts_common::{Job, JobName, JobSpec};
use gdts_runtime::etcd_pages::{count_range, RangePages};

use crate::job_index::{JobIndex, PageBounds};
use mongodb::bson::{doc, Document};
use mongodb::options::IndexOptions;
use mongodb::IndexModel;

/// Failures of the backing stores. Shown to callers only as "unavailable";
/// the cause is logged.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("etcd: {0}")]
    Etcd(#[from] etcd_client::Error),
    #[error("mongodb: {0}")]
    Mongo(#[from] mongodb::error::Error),
    #[error("the job kept changing under a read-modify-write")]
    Conflict,
}

/// What became of a request for an immediate run ([`Store::request_run`]).
#[derive(Debug, PartialEq, Eq)]
pub enum RunRequest {
    /// Made: its time (the run's `planTime`) and id.
    Made {
        requested_at: i64,
        request: String,
    },
    NoSuchJob,
    /// The job's selector matches none of the workers that take ticks.
    NobodyMatches,
}

#[derive(Clone)]
pub struct Store {
    etcd: Client,
    keys: Keys,
    logs: mongodb::Collection<Document>,
    /// The job names, when followed ([`Store::with_job_index`]).
    index: JobIndex,
    /// When [`Store::last_runs_since`] last found more runs than it took:
    /// until when (epoch ms) it does not read with that limit or a lower one.
    many_recent_runs: Arc<std::sync::Mutex<ManyRecentRuns>>,
}

#[derive(Default, Clone, Copy)]
struct ManyRecentRuns {
    until: i64,
    limit: i64,
}

/// How long [`Store::last_runs_since`] stays off once it found too many
/// runs: the runs a second of the fleet change slowly.
const MANY_RECENT_RUNS_FOR: Duration = Duration::from_secs(30);

/// How far back [`Store::last_run`] looks first for a job that fired lately.
pub const LAST_RUN_RECENT: Duration = Duration::from_secs(15);

/// Timeout for one etcd request made while serving an HTTP request.
const ETCD_REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// The index of a job's runs, newest first (`Store::ensure_log_indexes`).
const RUNS_BY_JOB_INDEX: &str = "jobName_planTime_startTime";
/// What earlier versions made instead (without `startTime`).
const OLD_RUNS_BY_JOB_INDEX: &str = "jobName_planTime";

/// Whether dropping an index failed because there is no such index
/// (`IndexNotFound`, 27; `NamespaceNotFound`, 26: no collection).
fn is_index_not_found(e: &mongodb::error::Error) -> bool {
    matches!(
        e.kind.as_ref(),
        mongodb::error::ErrorKind::Command(c) if c.code == 27 || c.code == 26
    )
}

/// A run record as stored, or `None` (logged) if it does not decode.
fn decode_record(d: Document) -> Option<LogRecord> {
    let job = d.get_str("jobName").unwrap_or("?").to_string();
    match mongodb::bson::from_document::<LogRecord>(d) {
        Ok(r) => Some(r),
        Err(e) => {
            tracing::warn!(job = %job, error = %e, "skipping undecodable log record");
            None
        }
    }
}

impl Store {
    pub fn new(etcd: Client, keys: Keys, mongo: &mongodb::Database) -> Self {
        Store {
            etcd,
            keys,
            logs: mongo.collection(LOG_COLLECTION),
            index: JobIndex::default(),
            many_recent_runs: Arc::default(),
        }
    }

    /// Pages the job list through `index` (see `job_index.rs`).
    pub fn with_job_index(mut self, index: JobIndex) -> Self {
        self.index = index;
        self
    }

    /// Creates the index that `/job/log` queries use, and the retention TTL
    /// index when a retention is configured (updating its expiry when the
    /// setting changed, dropping it when retention was turned off). Idempotent.
    pub async fn ensure_log_indexes(&self, retention_days: Option<u64>) -> Result<(), StoreError> {
        // A job's runs newest first, as every read of them sorts (tick, then
        // start: the attempts of one tick): with `startTime` in the index,
        // MongoDB walks it in that order and stops at the limit, instead of
        // reading every run of the job to sort them.
        let by_job = IndexModel::builder()
            .keys(doc! { "jobName": 1, "planTime": -1, "startTime": -1 })
            .options(
                IndexOptions::builder()
                    .name(RUNS_BY_JOB_INDEX.to_string())
                    .build(),
            )
            .build();
        self.logs.create_index(by_job).await?;
        // Its predecessor (without `startTime`), from an earlier version:
        // a prefix of the new one, it only costs writes now.
        if let Err(e) = self.logs.drop_index(OLD_RUNS_BY_JOB_INDEX).await {
            if !is_index_not_found(&e) {
                tracing::warn!(error = %e, index = OLD_RUNS_BY_JOB_INDEX, "could not drop an index an earlier version made");
            }
        }
        // The overview (`/api/v1/stats`): the newest runs of all jobs.
        let by_time = IndexModel::builder()
            .keys(doc! { "planTime": -1 })
            .options(IndexOptions::builder().name("planTime".to_string()).build())
            .build();
        self.logs.create_index(by_time).await?;
        const TTL_INDEX: &str = "endDate_ttl";
        let Some(days) = retention_days else {
            // Retention off: a TTL index left from earlier must not keep deleting.
            let _ = self.logs.drop_index(TTL_INDEX).await;
            return Ok(());
        };
        let expire = std::time::Duration::from_secs(days * 86400);
        let ttl = IndexModel::builder()
            .keys(doc! { "endDate": 1 })
            .options(
                IndexOptions::builder()
                    .name(TTL_INDEX.to_string())
                    .expire_after(expire)
                    .build(),
            )
            .build();
        if self.logs.create_index(ttl).await.is_err() {
            // Exists with another expiry: change it in place.
            self.logs
                .client()
                .database(self.logs.namespace().db.as_str())
                .run_command(doc! {
                    "collMod": self.logs.name(),
                    "index": { "name": TTL_INDEX, "expireAfterSeconds": expire.as_secs() as i64 },
                })
                .await?;
        }
        Ok(())
    }

    /// Stores a job; returns the version it replaced.
    pub async fn save_job(&self, job: &Job) -> Result<Option<JobSpec>, StoreError> {
        let value = serde_json::to_vec(&job.to_spec()).expect("a job spec serializes");
        let resp = self
            .etcd
            .kv_client()
            .put(
                self.keys.job(&job.name),
                value,
                Some(PutOptions::new().with_prev_key()),
            )
            .await?;
        self.index.saved(job.name.as_str());
        Ok(resp.prev_key().and_then(|kv| decode_spec(kv.value())))
    }

    /// Replaces a job only if it is still at `version` (its `mod_revision`);
    /// false if it changed or was deleted since.
    pub async fn replace_job_at(&self, job: &Job, version: i64) -> Result<bool, StoreError> {
        let key = self.keys.job(&job.name);
        self.put_job_if(job, Compare::mod_revision(key, CompareOp::Equal, version))
            .await
    }

    /// Stores a job only if no job has its name; false if one has.
    pub async fn create_job(&self, job: &Job) -> Result<bool, StoreError> {
        let key = self.keys.job(&job.name);
        self.put_job_if(job, Compare::create_revision(key, CompareOp::Equal, 0))
            .await
    }

    async fn put_job_if(&self, job: &Job, condition: Compare) -> Result<bool, StoreError> {
        let value = serde_json::to_vec(&job.to_spec()).expect("a job spec serializes");
        let txn = Txn::new().when(vec![condition]).and_then(vec![TxnOp::put(
            self.keys.job(&job.name),
            value,
            None,
        )]);
        let stored = gdts_runtime::metrics::etcd("put_job", self.etcd.kv_client().txn(txn))
            .await?
            .succeeded();
        if stored {
            self.index.saved(job.name.as_str());
        }
        Ok(stored)
    }

    /// Deletes a job; returns what was deleted.
    pub async fn delete_job(&self, name: &JobName) -> Result<Option<JobSpec>, StoreError> {
        self.delete_job_at(name, None).await
    }

    /// Deletes a job if it is at `version` (its etcd mod revision, the
    /// ETag), or whatever its version with `None`; returns what was deleted
    /// (`None`: absent, or at another version).
    pub async fn delete_job_at(
        &self,
        name: &JobName,
        version: Option<i64>,
    ) -> Result<Option<JobSpec>, StoreError> {
        let when = match version {
            Some(v) => vec![Compare::mod_revision(
                self.keys.job(name),
                CompareOp::Equal,
                v,
            )],
            None => Vec::new(),
        };
        // The job and its watermark go together, so nothing piles up per name.
        let txn = Txn::new().when(when).and_then(vec![
            TxnOp::delete(
                self.keys.job(name),
                Some(DeleteOptions::new().with_prev_key()),
            ),
            TxnOp::delete(self.keys.last_tick(name), None),
        ]);
        let resp =
            gdts_runtime::metrics::etcd("delete_job", self.etcd.kv_client().txn(txn)).await?;
        if resp.succeeded() {
            self.index.deleted(name.as_str());
        }
        Ok(resp.op_responses().into_iter().find_map(|op| match op {
            TxnOpResponse::Delete(d) => d.prev_kvs().first().and_then(|kv| decode_spec(kv.value())),
            _ => None,
        }))
    }

    /// Sets a job's `paused` flag without touching the rest of it. Returns
    /// the flag before and the job as stored after the change, or `None` if
    /// there is no such job.
    /// Read-modify-write guarded by the job's `mod_revision`, retried on a
    /// concurrent change.
    pub async fn set_paused(
        &self,
        name: &JobName,
        paused: bool,
    ) -> Result<Option<(bool, JobSpec)>, StoreError> {
        let key = self.keys.job(name);
        for _ in 0..5 {
            let resp = self.etcd.kv_client().get(key.as_str(), None).await?;
            let Some(kv) = resp.kvs().first() else {
                return Ok(None);
            };
            let Some(mut spec) = decode_spec(kv.value()) else {
                return Ok(None);
            };
            let was_paused = spec.paused;
            spec.paused = paused;
            let value = serde_json::to_vec(&spec).expect("a job spec serializes");
            let txn = Txn::new()
                .when(vec![Compare::mod_revision(
                    key.as_str(),
                    CompareOp::Equal,
                    kv.mod_revision(),
                )])
                .and_then(vec![TxnOp::put(key.as_str(), value, None)]);
            if self.etcd.kv_client().txn(txn).await?.succeeded() {
                return Ok(Some((was_paused, spec)));
            }
        }
        Err(StoreError::Conflict)
    }

    /// Asks the fleet for one immediate run of `name`: the request's time
    /// (the run's `planTime`) and id. Not made for a job that does not exist,
    /// nor for one whose selector matches none of the workers that take ticks
    /// (every worker would pass it by, and no record would say so; with no
    /// such worker at all, the request waits for one, as any job's does).
    pub async fn request_run(&self, name: &JobName) -> Result<RunRequest, StoreError> {
        let Some(spec) = self.get_job(name).await? else {
            return Ok(RunRequest::NoSuchJob);
        };
        if !spec.selector.is_empty() {
            let workers = self.registrations().await?;
            let ticking = gdts_common::values::ticking_workers(&workers);
            if !ticking.is_empty()
                && gdts_common::values::selector_unmatched(&spec.selector, &ticking)
            {
                return Ok(RunRequest::NobodyMatches);
            }
        }
        let lease = self
            .etcd
            .lease_client()
            .grant(RUN_NOW_REQUEST_TTL.as_secs() as i64, None)
            .await?;
        let requested_at = chrono::Utc::now().timestamp_millis();
        // The lease id is unique in the cluster: a unique request id for free.
        let request = format!("{requested_at}-{:x}", lease.id());
        let value = serde_json::to_vec(&RunNowRequest { requested_at }).expect("serializes");
        self.etcd
            .kv_client()
            .put(
                self.keys.run_now(name, &request),
                value,
                Some(PutOptions::new().with_lease(lease.id())),
            )
            .await?;
        Ok(RunRequest::Made {
            requested_at,
            request,
        })
    }

    /// Every job, page by page at one revision: the whole list never has to
    /// be in memory (nor in one etcd response) at once.
    pub fn job_pages(&self) -> JobPages {
        JobPages {
            pages: RangePages::prefix(self.etcd.clone(), &self.keys.jobs_prefix()),
        }
    }

    /// One page of the jobs whose names start with `window.prefix`, in name
    /// order, and how many jobs that prefix holds in all. Reads only what
    /// the page needs: etcd counts the range, the skipped jobs travel as
    /// keys only, and just the page's values are read.
    pub async fn job_page(
        &self,
        window: &JobWindow<'_>,
    ) -> Result<(Vec<JobSpec>, u64), StoreError> {
        // Job names never hold `/`, so `jobs/{prefix}` ranges over exactly
        // the names starting with `prefix`.
        let start = format!("{}{}", self.keys.jobs_prefix(), window.prefix);
        let end = prefix_range_end(&start);
        let start = start.into_bytes();
        let after = window.after.map(JobName::as_str);
        if let Some(bounds) = self
            .index
            .page(window.prefix, after, window.skip, window.take)
        {
            return self.read_page_within(window, bounds, start, end).await;
        }
        let count = {
            let (start, end) = (start.clone(), end.clone());
            async move {
                let n = count_range(&self.etcd, start, end).await?;
                Ok::<_, StoreError>(n.max(0) as u64)
            }
        };
        let mut from = start;
        if let Some(after) = window.after {
            from = from.max(just_after(self.keys.job(after).into_bytes()));
        }
        // etcd (3.4 and 3.5) walks the whole range for any read of it,
        // limited or not, the count too: the walks go at once, not one after
        // the other. A count that shows the page is past the end stops the
        // read, which would otherwise go through every key to find that out.
        let count = std::pin::pin!(count);
        let read = std::pin::pin!(self.read_jobs(from, end, window.skip, window.take));
        match futures::future::select(count, read).await {
            futures::future::Either::Left((total, read)) => {
                let total = total?;
                if window.skip >= total {
                    return Ok((Vec::new(), total));
                }
                Ok((read.await?, total))
            }
            futures::future::Either::Right((jobs, count)) => Ok((jobs?, count.await?)),
        }
    }

    /// The page the index bounds: the jobs etcd holds now between its first
    /// and last name (from the window's own start for a first page, to the
    /// prefix's end for a page the index does not fill), so a job created
    /// or deleted in that range since the index saw it shows as it is.
    async fn read_page_within(
        &self,
        window: &JobWindow<'_>,
        bounds: PageBounds,
        mut from: Vec<u8>,
        mut end: Vec<u8>,
    ) -> Result<(Vec<JobSpec>, u64), StoreError> {
        let Some(first) = bounds.first else {
            return Ok((Vec::new(), bounds.total));
        };
        let key = |name: &str| format!("{}{}", self.keys.jobs_prefix(), name).into_bytes();
        if window.skip > 0 {
            from = key(&first);
        } else if let Some(after) = window.after {
            from = from.max(just_after(self.keys.job(after).into_bytes()));
        }
        if let Some(last) = bounds.last {
            end = just_after(key(&last));
        }
        let (kvs, _) = RangePages::range(self.etcd.clone(), from, end)
            .take(window.take as usize)
            .collect()
            .await?;
        Ok((decode_specs(&kvs), bounds.total))
    }

    /// Up to `take` jobs of `[from, end)` after the first `skip`.
    async fn read_jobs(
        &self,
        mut from: Vec<u8>,
        mut end: Vec<u8>,
        skip: u64,
        take: u64,
    ) -> Result<Vec<JobSpec>, StoreError> {
        if from >= end || take == 0 {
            return Ok(Vec::new());
        }
        let mut revision = 0;
        if skip > 0 {
            // The keys of the skipped jobs and of the page, so the values are
            // read over the page's own keys only: etcd walks every key of a
            // range it reads, and the page's range is short.
            let (skip, take) = (skip as usize, take as usize);
            let mut keys = RangePages::range(self.etcd.clone(), from.clone(), end.clone())
                .keys_only()
                .take(skip.saturating_add(take));
            let (mut seen, mut first, mut last) = (0, None, None);
            while let Some(page) = keys.next_page().await? {
                if let Some(kv) = skip.checked_sub(seen).and_then(|i| page.get(i)) {
                    first = Some(kv.key().to_vec());
                }
                seen += page.len();
                last = page.last().map(|kv| kv.key().to_vec()).or(last);
            }
            let (Some(first), Some(last)) = (first, last) else {
                return Ok(Vec::new());
            };
            (from, end, revision) = (first, just_after(last), keys.revision());
        }
        // At the revision the keys were read at, so a job saved or deleted
        // meanwhile neither shifts nor repeats a name.
        let mut pages = RangePages::range(self.etcd.clone(), from, end).take(take as usize);
        if revision > 0 {
            pages = pages.at_revision(revision);
        }
        let (kvs, _) = pages.collect().await?;
        Ok(decode_specs(&kvs))
    }

    /// Asks every worker running `name` to kill that run. The request lives
    /// under a short lease that the manager does not keep alive.
    pub async fn request_kill(&self, name: &JobName) -> Result<(), StoreError> {
        let lease = self
            .etcd
            .lease_client()
            .grant(KILL_REQUEST_TTL.as_secs() as i64, None)
            .await?;
        let value = serde_json::to_vec(&KillRequest {
            requested_at: chrono::Utc::now().timestamp_millis(),
            reason: None,
            tick: None,
        })
        .expect("a kill request serializes");
        self.etcd
            .kv_client()
            .put(
                self.keys.kill(name),
                value,
                Some(PutOptions::new().with_lease(lease.id())),
            )
            .await?;
        Ok(())
    }

    /// The ids of the live workers.
    pub async fn list_workers(&self) -> Result<Vec<String>, StoreError> {
        let (kvs, _) = RangePages::prefix(self.etcd.clone(), &self.keys.workers_prefix())
            .keys_only()
            .collect()
            .await?;
        Ok(kvs
            .iter()
            .filter_map(|kv| self.keys.parse_worker_key(kv.key()))
            .collect())
    }

    /// A job's runs, newest tick first.
    pub async fn job_logs(
        &self,
        name: &JobName,
        skip: u64,
        limit: i64,
    ) -> Result<Vec<LogRecord>, StoreError> {
        self.find_job_logs(name, None, skip, limit, doc! { "_id": 0 })
            .await
    }

    /// The newest run records of every job with a tick at or after
    /// `since` (epoch ms), at most `limit`, newest first: only the fields
    /// the overview needs.
    pub async fn recent_runs(&self, since: i64, limit: i64) -> Result<Vec<Document>, StoreError> {
        use futures::TryStreamExt;
        Ok(gdts_runtime::metrics::mongo("recent_runs", async {
            self.logs
                .find(doc! { "planTime": { "$gte": since } })
                .sort(doc! { "planTime": -1 })
                .limit(limit)
                .projection(doc! { "_id": 0, "status": 1, "planTime": 1, "startTime": 1, "trigger": 1, "attempt": 1 })
                .await?
                .try_collect()
                .await
        })
        .await?)
    }

    /// A job's runs, newest tick first, without their output (left empty):
    /// MongoDB does not send it.
    pub async fn job_logs_without_output(
        &self,
        name: &JobName,
        skip: u64,
        limit: i64,
    ) -> Result<Vec<LogRecord>, StoreError> {
        self.find_job_logs(name, None, skip, limit, doc! { "_id": 0, "output": 0 })
            .await
    }

    /// A job's runs (with a tick at or after `since`, epoch ms, if given).
    async fn find_job_logs(
        &self,
        name: &JobName,
        since: Option<i64>,
        skip: u64,
        limit: i64,
        projection: Document,
    ) -> Result<Vec<LogRecord>, StoreError> {
        use futures::TryStreamExt;
        let docs: Vec<Document> = gdts_runtime::metrics::mongo("find_runs", async {
            self.logs
                .find(match since {
                    None => doc! { "jobName": name.as_str() },
                    Some(t) => doc! { "jobName": name.as_str(), "planTime": { "$gte": t } },
                })
                .sort(doc! { "planTime": -1, "startTime": -1 })
                .skip(skip)
                .limit(limit)
                .projection(projection)
                .await?
                .try_collect()
                .await
        })
        .await?;
        Ok(docs.into_iter().filter_map(decode_record).collect())
    }

    /// A job's newest run (newest tick), without its output. `recent_from`
    /// (a `planTime`, epoch ms): where its newest run most likely is (see
    /// `api_v1::recent_from`). The runs from there on are looked at first,
    /// then those of the last [`LAST_RUN_RECENT`], then all of them: any run
    /// in a range makes the newest of that range the newest of all, and a
    /// short range is read much faster (the Mongo-protocol server of the
    /// tests and benchmarks sorts every run of the range: 17 ms for 500 runs
    /// against 0.9 ms for a few).
    pub async fn last_run(
        &self,
        name: &JobName,
        recent_from: Option<i64>,
    ) -> Result<Option<LogRecord>, StoreError> {
        let without_output = || doc! { "_id": 0, "output": 0 };
        if let Some(from) = recent_from {
            let lately = chrono::Utc::now().timestamp_millis() - LAST_RUN_RECENT.as_millis() as i64;
            let ranges = [Some(from), Some(lately).filter(|l| *l < from)];
            for since in ranges.into_iter().flatten() {
                let newest = self
                    .find_job_logs(name, Some(since), 0, 1, without_output())
                    .await?
                    .pop();
                if newest.is_some() {
                    return Ok(newest);
                }
            }
        }
        Ok(self
            .find_job_logs(name, None, 0, 1, without_output())
            .await?
            .pop())
    }

    /// The newest run (without output) of each job named `first` to `last`
    /// (both included), by job name; `None` if those jobs have `limit` runs
    /// or more between them (ask [`Store::last_run`] then). One read where
    /// `last_run` makes one a job: for a stretch of jobs that have few runs
    /// (none fired lately), that is most of a page's time.
    pub async fn last_runs_between(
        &self,
        first: &JobName,
        last: &JobName,
        limit: i64,
    ) -> Result<Option<HashMap<String, LogRecord>>, StoreError> {
        self.newest_by_job(
            "find_runs",
            doc! { "jobName": { "$gte": first.as_str(), "$lte": last.as_str() } },
            limit,
        )
        .await
    }

    /// The newest run (without output) of each job that has a run with a
    /// tick at or after `since` (epoch ms), by job name: of every job, so
    /// the jobs of a page that fire often are answered by one read of the
    /// `planTime` index instead of a lookup each. `None` if there are
    /// `limit` runs or more since then (ask [`Store::last_run`] then); for
    /// [`MANY_RECENT_RUNS_FOR`] after that, `None` without a read for a
    /// limit as low or lower (a read of that many runs costs more than the
    /// lookups it saves).
    pub async fn last_runs_since(
        &self,
        since: i64,
        limit: i64,
    ) -> Result<Option<HashMap<String, LogRecord>>, StoreError> {
        let now = chrono::Utc::now().timestamp_millis();
        let many = || {
            self.many_recent_runs
                .lock()
                .unwrap_or_else(|e| e.into_inner())
        };
        let last = *many();
        if now < last.until && limit <= last.limit {
            return Ok(None);
        }
        let newest = self
            .newest_by_job(
                "find_recent_runs",
                doc! { "planTime": { "$gte": since } },
                limit,
            )
            .await?;
        if newest.is_none() {
            let mut many = many();
            let limit = if now < many.until {
                many.limit.max(limit)
            } else {
                limit
            };
            *many = ManyRecentRuns {
                until: now + MANY_RECENT_RUNS_FOR.as_millis() as i64,
                limit,
            };
        }
        Ok(newest)
    }

    /// The newest run of each job among the runs `filter` matches, by job
    /// name, unless there are `limit` of them or more. The newest of a
    /// range holds for the job only if the range holds all its newer runs.
    async fn newest_by_job(
        &self,
        op: &'static str,
        filter: Document,
        limit: i64,
    ) -> Result<Option<HashMap<String, LogRecord>>, StoreError> {
        use futures::TryStreamExt;
        let docs: Vec<Document> = gdts_runtime::metrics::mongo(op, async {
            self.logs
                .find(filter)
                .limit(limit)
                .projection(doc! { "_id": 0, "output": 0 })
                .await?
                .try_collect()
                .await
        })
        .await?;
        if docs.len() as i64 >= limit {
            return Ok(None);
        }
        let mut newest: HashMap<String, LogRecord> = HashMap::new();
        for run in docs.into_iter().filter_map(decode_record) {
            let order = |r: &LogRecord| (r.plan_time, r.start_time);
            match newest.get(&run.job_name) {
                Some(held) if order(held) >= order(&run) => {}
                _ => {
                    newest.insert(run.job_name.clone(), run);
                }
            }
        }
        Ok(Some(newest))
    }

    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    pub fn etcd(&self) -> Client {
        self.etcd.clone()
    }

    /// How many runs a job has on record.
    pub async fn count_job_logs(&self, name: &JobName) -> Result<u64, StoreError> {
        Ok(gdts_runtime::metrics::mongo(
            "count_runs",
            std::future::IntoFuture::into_future(
                self.logs.count_documents(doc! { "jobName": name.as_str() }),
            ),
        )
        .await?)
    }

    /// One job, or `None`.
    pub async fn get_job(&self, name: &JobName) -> Result<Option<JobSpec>, StoreError> {
        Ok(self.get_job_versioned(name).await?.map(|(spec, _)| spec))
    }

    /// One job with its version (the etcd `mod_revision` of its key).
    pub async fn get_job_versioned(
        &self,
        name: &JobName,
    ) -> Result<Option<(JobSpec, i64)>, StoreError> {
        let resp = gdts_runtime::metrics::etcd(
            "get_job",
            self.etcd.kv_client().get(self.keys.job(name), None),
        )
        .await?;
        Ok(resp
            .kvs()
            .first()
            .and_then(|kv| decode_spec(kv.value()).map(|spec| (spec, kv.mod_revision()))))
    }

    /// The workers' registrations as they wrote them: no running counts, no
    /// last-seen (no lease lookups), enough to tell who takes ticks.
    pub async fn registrations(&self) -> Result<Vec<WorkerInfo>, StoreError> {
        let (kvs, _) = RangePages::prefix(self.etcd.clone(), &self.keys.workers_prefix())
            .collect()
            .await?;
        Ok(kvs.iter().filter_map(decode_registration).collect())
    }

    /// Live workers with their registrations. Workers write a registration
    /// once, so what changes is filled in here: `lastSeen` from the
    /// registration lease (its last renewal, to the second), and `running`,
    /// the running marks that name the worker.
    pub async fn worker_infos(&self) -> Result<Vec<WorkerInfo>, StoreError> {
        use futures::{StreamExt, TryStreamExt};
        let registrations =
            RangePages::prefix(self.etcd.clone(), &self.keys.workers_prefix()).collect();
        let ((kvs, _), running) = tokio::try_join!(
            async { registrations.await.map_err(StoreError::from) },
            self.running_by_worker(),
        )?;
        let now = chrono::Utc::now().timestamp_millis();
        let running = &running;
        let infos: Vec<Option<WorkerInfo>> = futures::stream::iter(kvs)
            .map(|kv| async move {
                let Some(mut info) = decode_registration(&kv) else {
                    return Ok(None);
                };
                if let Some(renewed) = self.lease_renewed_at(kv.lease(), now).await? {
                    // It was alive when it wrote its start time, too (its
                    // lease may be a moment older than that).
                    info.last_seen = renewed.max(info.start_time);
                }
                info.running = running.get(&info.id).copied().unwrap_or(0);
                Ok::<_, StoreError>(Some(info))
            })
            .buffered(16)
            .try_collect()
            .await?;
        Ok(infos.into_iter().flatten().collect())
    }

    /// When a lease was last granted or renewed (epoch ms, to the second, as
    /// etcd counts TTLs); `None` for no lease or one already gone.
    async fn lease_renewed_at(&self, lease: i64, now_ms: i64) -> Result<Option<i64>, StoreError> {
        if lease == 0 {
            return Ok(None);
        }
        let ttl = self.etcd.lease_client().time_to_live(lease, None).await?;
        if ttl.ttl() < 0 || ttl.granted_ttl() <= 0 {
            return Ok(None);
        }
        let since_renewal = (ttl.granted_ttl() - ttl.ttl()).max(0);
        Ok(Some(now_ms - since_renewal * 1000))
    }

    /// How many running marks name each worker.
    async fn running_by_worker(&self) -> Result<HashMap<String, u32>, StoreError> {
        let mut pages = RangePages::prefix(self.etcd.clone(), &self.keys.running_all_prefix());
        let mut counts = HashMap::new();
        while let Some(page) = pages.next_page().await? {
            for kv in page {
                if let Ok(mark) = serde_json::from_slice::<RunningRecord>(kv.value()) {
                    *counts.entry(mark.worker).or_insert(0) += 1;
                }
            }
        }
        Ok(counts)
    }

    /// How many runs of one job are marked running in the fleet now.
    pub async fn running_count(&self, name: &JobName) -> Result<u32, StoreError> {
        let prefix = self.keys.running_prefix(name);
        let end = prefix_range_end(&prefix);
        let n = count_range(&self.etcd, prefix.into_bytes(), end).await?;
        Ok(n.clamp(0, u32::MAX as i64) as u32)
    }

    /// How many runs of each of `names` are marked running now; jobs with
    /// none are left out. One paged keys-only read over the smallest range
    /// that holds every `running/{name}/`.
    pub async fn running_counts_of(
        &self,
        names: &[JobName],
    ) -> Result<HashMap<String, u32>, StoreError> {
        // Not simply `running/{first}/` to `running/{last}/`: `/` sorts after
        // `-` and `.`, so `running/a/` comes after `running/a.b/` while job
        // `a` comes before `a.b`.
        let prefixes: Vec<String> = names.iter().map(|n| self.keys.running_prefix(n)).collect();
        let (Some(start), Some(end)) = (
            prefixes.iter().min(),
            prefixes.iter().map(|p| prefix_range_end(p)).max(),
        ) else {
            return Ok(HashMap::new());
        };
        let wanted: HashSet<&str> = names.iter().map(JobName::as_str).collect();
        let mut pages =
            RangePages::range(self.etcd.clone(), start.clone().into_bytes(), end).keys_only();
        let mut counts = HashMap::new();
        while let Some(page) = pages.next_page().await? {
            for kv in page {
                if let Some((job, _)) = self.keys.parse_running_key(kv.key()) {
                    if wanted.contains(job.as_str()) {
                        *counts.entry(job.to_string()).or_insert(0) += 1;
                    }
                }
            }
        }
        Ok(counts)
    }

    /// One run record of a job, by run id.
    pub async fn run_record(
        &self,
        name: &JobName,
        run_id: &str,
    ) -> Result<Option<LogRecord>, StoreError> {
        let doc = self
            .logs
            .find_one(doc! { "_id": run_id, "jobName": name.as_str() })
            .projection(doc! { "_id": 0 })
            .await?;
        Ok(doc.and_then(|d| mongodb::bson::from_document::<LogRecord>(d).ok()))
    }

    /// Cheap liveness probe of etcd for `/healthz`.
    pub async fn etcd_reachable(&self) -> bool {
        let mut maintenance = self.etcd.maintenance_client();
        tokio::time::timeout(ETCD_REQUEST_TIMEOUT, maintenance.status())
            .await
            .map(|r| r.is_ok())
            .unwrap_or(false)
    }
}

/// The jobs page by page (see [`Store::job_pages`]).
pub struct JobPages {
    pages: RangePages,
}

impl JobPages {
    /// The next page of jobs in name order, or `None` after the last.
    pub async fn next_page(&mut self) -> Result<Option<Vec<JobSpec>>, StoreError> {
        Ok(self.pages.next_page().await?.map(|kvs| decode_specs(&kvs)))
    }
}

/// Which jobs a page of the list shows.
pub struct JobWindow<'a> {
    /// Only names starting with this.
    pub prefix: &'a str,
    /// Only names after this one.
    pub after: Option<&'a JobName>,
    /// Leave out this many names first.
    pub skip: u64,
    /// At most this many.
    pub take: u64,
}

/// A worker's registration; `None` (logged) when it cannot be decoded.
fn decode_registration(kv: &KeyValue) -> Option<WorkerInfo> {
    let info = serde_json::from_slice::<WorkerInfo>(kv.value()).ok();
    if info.is_none() {
        tracing::warn!(key = %String::from_utf8_lossy(kv.key()), "skipping undecodable worker registration");
    }
    info
}

fn decode_spec(raw: &[u8]) -> Option<JobSpec> {
    serde_json::from_slice(raw).ok()
}

fn decode_specs(kvs: &[KeyValue]) -> Vec<JobSpec> {
    kvs.iter()
        .filter_map(|kv| {
            let spec = decode_spec(kv.value());
            if spec.is_none() {
                tracing::warn!(key = %String::from_utf8_lossy(kv.key()), "skipping undecodable job");
            }
            spec
        })
        .collect()
}

/// The smallest key after `key`.
fn just_after(mut key: Vec<u8>) -> Vec<u8> {
    key.push(0);
    key
}
