//! The manager's reads and writes: jobs, kill requests and worker
//! registrations in etcd; run records in MongoDB. The manager never holds a
//! lease it keeps alive and keeps no state between requests.

use std::time::Duration;

use etcd_client::{Client, DeleteOptions, GetOptions, PutOptions};
use gdts_common::keys::Keys;
use gdts_common::log_record::{LogRecord, LOG_COLLECTION};
use gdts_common::timing::KILL_REQUEST_TTL;
use gdts_common::values::KillRequest;
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

    /// Creates the index that `/job/log` queries use. Idempotent.
    pub async fn ensure_log_indexes(&self) -> Result<(), StoreError> {
        let by_job = IndexModel::builder()
            .keys(doc! { "jobName": 1, "planTime": -1 })
            .options(
                IndexOptions::builder()
                    .name("jobName_planTime".to_string())
                    .build(),
            )
            .build();
        self.logs.create_index(by_job).await?;
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

    /// Deletes a job; returns what was deleted.
    pub async fn delete_job(&self, name: &JobName) -> Result<Option<JobSpec>, StoreError> {
        let resp = self
            .etcd
            .kv_client()
            .delete(
                self.keys.job(name),
                Some(DeleteOptions::new().with_prev_key()),
            )
            .await?;
        Ok(resp
            .prev_kvs()
            .first()
            .and_then(|kv| decode_spec(kv.value())))
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
        let prefix = self.keys.workers_prefix();
        let resp = self
            .etcd
            .kv_client()
            .get(
                prefix.as_str(),
                Some(GetOptions::new().with_prefix().with_keys_only()),
            )
            .await?;
        Ok(resp
            .kvs()
            .iter()
            .filter_map(|kv| {
                std::str::from_utf8(kv.key())
                    .ok()?
                    .strip_prefix(&prefix)
                    .map(str::to_string)
            })
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
