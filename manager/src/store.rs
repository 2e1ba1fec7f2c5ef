//! The manager's reads and writes: jobs, kill requests and worker
//! registrations in etcd; run records in MongoDB. The manager never holds a
//! lease it keeps alive and keeps no state between requests.

use std::time::Duration;

use etcd_client::{
    Client, Compare, CompareOp, DeleteOptions, GetOptions, PutOptions, Txn, TxnOp, TxnOpResponse,
};
use gdts_common::keys::Keys;
use gdts_common::log_record::{LogRecord, LOG_COLLECTION};
use gdts_common::timing::{KILL_REQUEST_TTL, RUN_NOW_REQUEST_TTL};
use gdts_common::values::{KillRequest, RunNowRequest, WorkerInfo};
use gdts_common::{Job, JobName, JobSpec};
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

#[derive(Clone)]
pub struct Store {
    etcd: Client,
    keys: Keys,
    logs: mongodb::Collection<Document>,
}

/// Timeout for one etcd request made while serving an HTTP request.
const ETCD_REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

impl Store {
    pub fn new(etcd: Client, keys: Keys, mongo: &mongodb::Database) -> Self {
        Store {
            etcd,
            keys,
            logs: mongo.collection(LOG_COLLECTION),
        }
    }

    /// Creates the index that `/job/log` queries use, and the retention TTL
    /// index when a retention is configured (updating its expiry when the
    /// setting changed, dropping it when retention was turned off). Idempotent.
    pub async fn ensure_log_indexes(&self, retention_days: Option<u64>) -> Result<(), StoreError> {
        let by_job = IndexModel::builder()
            .keys(doc! { "jobName": 1, "planTime": -1 })
            .options(
                IndexOptions::builder()
                    .name("jobName_planTime".to_string())
                    .build(),
            )
            .build();
        self.logs.create_index(by_job).await?;
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
        Ok(self.etcd.kv_client().txn(txn).await?.succeeded())
    }

    /// Deletes a job; returns what was deleted.
    pub async fn delete_job(&self, name: &JobName) -> Result<Option<JobSpec>, StoreError> {
        // The job and its watermark go together, so nothing piles up per name.
        let txn = Txn::new().and_then(vec![
            TxnOp::delete(
                self.keys.job(name),
                Some(DeleteOptions::new().with_prev_key()),
            ),
            TxnOp::delete(self.keys.last_tick(name), None),
        ]);
        let resp = self.etcd.kv_client().txn(txn).await?;
        Ok(resp.op_responses().into_iter().find_map(|op| match op {
            TxnOpResponse::Delete(d) => d.prev_kvs().first().and_then(|kv| decode_spec(kv.value())),
            _ => None,
        }))
    }

    /// Sets a job's `paused` flag without touching the rest of it. Returns
    /// the job as stored after the change, or `None` if there is no such job.
    /// Read-modify-write guarded by the job's `mod_revision`, retried on a
    /// concurrent change.
    pub async fn set_paused(
        &self,
        name: &JobName,
        paused: bool,
    ) -> Result<Option<JobSpec>, StoreError> {
        let key = self.keys.job(name);
        for _ in 0..5 {
            let resp = self.etcd.kv_client().get(key.as_str(), None).await?;
            let Some(kv) = resp.kvs().first() else {
                return Ok(None);
            };
            let Some(mut spec) = decode_spec(kv.value()) else {
                return Ok(None);
            };
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
                return Ok(Some(spec));
            }
        }
        Err(StoreError::Conflict)
    }

    /// Asks the fleet for one immediate run of `name`. Returns the request's
    /// time (the run's `planTime`) and id, or `None` if there is no such job.
    pub async fn request_run(&self, name: &JobName) -> Result<Option<(i64, String)>, StoreError> {
        let exists = self
            .etcd
            .kv_client()
            .get(
                self.keys.job(name),
                Some(GetOptions::new().with_count_only()),
            )
            .await?
            .count()
            > 0;
        if !exists {
            return Ok(None);
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
        Ok(Some((requested_at, request)))
    }

    pub async fn list_jobs(&self) -> Result<Vec<JobSpec>, StoreError> {
        let resp = self
            .etcd
            .kv_client()
            .get(
                self.keys.jobs_prefix(),
                Some(GetOptions::new().with_prefix()),
            )
            .await?;
        Ok(resp
            .kvs()
            .iter()
            .filter_map(|kv| {
                let spec = decode_spec(kv.value());
                if spec.is_none() {
                    tracing::warn!(key = %String::from_utf8_lossy(kv.key()), "skipping undecodable job");
                }
                spec
            })
            .collect())
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

    pub async fn list_workers(&self) -> Result<Vec<String>, StoreError> {
        let resp = self
            .etcd
            .kv_client()
            .get(
                self.keys.workers_prefix(),
                Some(GetOptions::new().with_prefix().with_keys_only()),
            )
            .await?;
        Ok(resp
            .kvs()
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
        use futures::TryStreamExt;
        let cursor = self
            .logs
            .find(doc! { "jobName": name.as_str() })
            .sort(doc! { "planTime": -1, "startTime": -1 })
            .skip(skip)
            .limit(limit)
            .projection(doc! { "_id": 0 })
            .await?;
        let docs: Vec<Document> = cursor.try_collect().await?;
        Ok(docs
            .into_iter()
            .filter_map(|d| match mongodb::bson::from_document::<LogRecord>(d) {
                Ok(r) => Some(r),
                Err(e) => {
                    tracing::warn!(job = %name, error = %e, "skipping undecodable log record");
                    None
                }
            })
            .collect())
    }

    /// A job's newest run (newest tick), without its output.
    pub async fn last_run(&self, name: &JobName) -> Result<Option<LogRecord>, StoreError> {
        Ok(self.job_logs(name, 0, 1).await?.pop().map(|mut r| {
            r.output.clear();
            r
        }))
    }

    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    pub fn etcd(&self) -> Client {
        self.etcd.clone()
    }

    /// The status of run `run` (a `RunKey` string) of `job`, if its record
    /// has been written.
    pub async fn status_of_run(
        &self,
        job: &JobName,
        tick_ms: i64,
        run: &str,
    ) -> Result<Option<String>, StoreError> {
        let attempt: i64 = run
            .rsplit_once(".a")
            .and_then(|(_, n)| n.parse().ok())
            .unwrap_or(1);
        let doc = self
            .logs
            .find_one(doc! { "jobName": job.as_str(), "planTime": tick_ms, "attempt": attempt })
            .sort(doc! { "endTime": -1 })
            .await?;
        Ok(doc.and_then(|d| d.get_str("status").ok().map(str::to_string)))
    }

    /// How many runs a job has on record.
    pub async fn count_job_logs(&self, name: &JobName) -> Result<u64, StoreError> {
        Ok(self
            .logs
            .count_documents(doc! { "jobName": name.as_str() })
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
        let resp = self.etcd.kv_client().get(self.keys.job(name), None).await?;
        Ok(resp
            .kvs()
            .first()
            .and_then(|kv| decode_spec(kv.value()).map(|spec| (spec, kv.mod_revision()))))
    }

    /// Live workers with their registrations.
    pub async fn worker_infos(&self) -> Result<Vec<WorkerInfo>, StoreError> {
        let resp = self
            .etcd
            .kv_client()
            .get(
                self.keys.workers_prefix(),
                Some(GetOptions::new().with_prefix()),
            )
            .await?;
        Ok(resp
            .kvs()
            .iter()
            .filter_map(|kv| serde_json::from_slice(kv.value()).ok())
            .collect())
    }

    /// How many runs of each job are in progress in the fleet now.
    pub async fn running_counts(
        &self,
    ) -> Result<std::collections::HashMap<String, u32>, StoreError> {
        let resp = self
            .etcd
            .kv_client()
            .get(
                self.keys.running_all_prefix(),
                Some(GetOptions::new().with_prefix().with_keys_only()),
            )
            .await?;
        let mut counts = std::collections::HashMap::new();
        for kv in resp.kvs() {
            if let Some(job) = self.keys.parse_running_key(kv.key()) {
                *counts.entry(job.to_string()).or_insert(0) += 1;
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

fn decode_spec(raw: &[u8]) -> Option<JobSpec> {
    serde_json::from_slice(raw).ok()
}
