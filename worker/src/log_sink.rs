//! Writes run records to MongoDB in batches (by count and by time).
//!
//! Records wait in a bounded channel. While MongoDB is down the writer
//! retries the same batch with backoff and the channel fills; when it is full
//! a finished run waits to hand over its record (the worker slows down, no
//! record is dropped). Each record's `_id` is its run id, so a batch retried
//! after a partial success does not write anything twice.
//!
//! At shutdown the writer keeps retrying for the flush timeout; what is still
//! unwritten then goes to a spool file (`gdts-unsent-{worker}-{ms}.jsonl` in
//! the spool dir), which the next start of the same worker id writes first.
//! With a bucket, the spool file is uploaded to it (`spool/...`) and removed
//! from the disk, and any worker writes it: at its start and every
//! `BUCKET_SPOOL_EVERY`. So records outlive a worker whose machine is gone
//! for good (a scale-in deletes the VM and its disk, and its name never
//! comes back).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::gcs::OutputStore;

use gdts_common::log_record::{LogRecord, LOG_COLLECTION};
use mongodb::bson::{self, Document};
use mongodb::error::{ErrorKind, WriteFailure};
use tokio::sync::mpsc;
use tokio::time::Instant;

pub struct SinkConfig {
    pub batch_size: usize,
    pub batch_wait: Duration,
    /// After the channel closes, how long to keep retrying unwritten records.
    pub flush_timeout: Duration,
    /// Where records that could not be written by shutdown are kept.
    pub spool_dir: PathBuf,
    pub worker_id: String,
    /// Where spool files go for any worker to write (the outputs bucket).
    pub bucket: Option<Arc<OutputStore>>,
}

/// How often a worker looks for run records spooled to the bucket.
pub const BUCKET_SPOOL_EVERY: Duration = Duration::from_secs(300);

impl SinkConfig {
    fn spool_prefix(&self) -> String {
        format!("gdts-unsent-{}-", self.worker_id)
    }
}

/// Runs until every sender is dropped and the buffer is written (or the
/// flush timeout passes). Returns how many records could not be written.
pub async fn run_log_writer(
    db: mongodb::Database,
    mut records: mpsc::Receiver<LogRecord>,
    config: SinkConfig,
) -> usize {
    let collection = db.collection::<Document>(LOG_COLLECTION);
    replay_spool(&collection, &config).await;
    let mut closed_at: Option<Instant> = None;
    loop {
        let Some(first) = records.recv().await else {
            return 0;
        };
        let mut batch = vec![first];
        let fill_until = Instant::now() + config.batch_wait;
        while batch.len() < config.batch_size {
            match tokio::time::timeout_at(fill_until, records.recv()).await {
                Ok(Some(r)) => batch.push(r),
                Ok(None) => {
                    closed_at.get_or_insert_with(Instant::now);
                    break;
                }
                Err(_) => break,
            }
        }
        let docs: Vec<Document> = batch.iter().map(to_document).collect();
        let mut backoff = Duration::from_millis(100);
        loop {
            match insert_idempotent(&collection, &docs).await {
                Ok(()) => break,
                Err(e) => {
                    tracing::warn!(records = docs.len(), error = %e, retry_in = ?backoff, "writing run records failed");
                }
            }
            // Every sender is gone (shutdown): the flush timeout runs from
            // now, however many records still wait behind this batch.
            if records.is_closed() {
                closed_at.get_or_insert_with(Instant::now);
            }
            if let Some(t) = closed_at {
                if t.elapsed() >= config.flush_timeout {
                    let mut rest = batch;
                    while let Ok(r) = records.try_recv() {
                        rest.push(r);
                    }
                    return match spool(&config, &rest) {
                        Ok(path) => {
                            hand_to_bucket(&config, &path, rest.len()).await;
                            0
                        }
                        Err(e) => {
                            tracing::error!(records = rest.len(), error = %e, "gave up writing run records at shutdown");
                            rest.len()
                        }
                    };
                }
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
    }
}

/// Writes `records` as JSON lines to a new spool file (atomically: a
/// temporary name, then a rename).
fn spool(config: &SinkConfig, records: &[LogRecord]) -> std::io::Result<PathBuf> {
    std::fs::create_dir_all(&config.spool_dir)?;
    let name = format!(
        "{}{}.jsonl",
        config.spool_prefix(),
        chrono::Utc::now().timestamp_millis()
    );
    let path = config.spool_dir.join(name);
    let tmp = path.with_extension("partial");
    let mut text = String::new();
    for r in records {
        text.push_str(&serde_json::to_string(r).expect("a log record serializes"));
        text.push('\n');
    }
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, &path)?;
    Ok(path)
}

/// Uploads a spool file to the bucket, if there is one, and removes it from
/// the disk; otherwise (or if the upload fails) it stays for the next start.
async fn hand_to_bucket(config: &SinkConfig, path: &std::path::Path, records: usize) {
    let file = path.display();
    let Some(bucket) = &config.bucket else {
        tracing::warn!(records, file = %file, "MongoDB unreachable at shutdown; records spooled for the next start");
        return;
    };
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("unsent.jsonl");
    let object = format!("{}{name}", crate::gcs::SPOOL_PREFIX);
    match bucket.upload(&object, path).await {
        Ok(uri) => {
            if let Err(e) = std::fs::remove_file(path) {
                // Both copies are written (idempotently) later: harmless.
                tracing::warn!(file = %file, error = %e, "cannot remove a spool file handed to the bucket");
            }
            tracing::warn!(records, object = %uri, "MongoDB unreachable at shutdown; records spooled to the bucket for any worker to write");
        }
        Err(e) => {
            tracing::warn!(records, file = %file, error = %e, "MongoDB unreachable at shutdown and the bucket refused the spool; records spooled for the next start");
        }
    }
}

/// Writes the run records spooled to the bucket (by any worker) and deletes
/// them there. Records carry their run id as `_id`, so two workers writing
/// the same file at once write nothing twice. Gives up for now (to try again
/// later) while MongoDB or the bucket fails.
async fn replay_bucket(collection: &mongodb::Collection<Document>, bucket: &OutputStore) {
    let objects = match bucket.spooled().await {
        Ok(objects) => objects,
        Err(e) => {
            tracing::warn!(error = %e, "cannot list spooled run records in the bucket; trying later");
            return;
        }
    };
    for (object, generation) in objects {
        let data = match bucket.download(&object).await {
            Ok(data) => data,
            Err(e) => {
                tracing::warn!(object, error = %e, "cannot read spooled run records from the bucket; trying later");
                continue;
            }
        };
        let docs = spooled_documents(&String::from_utf8_lossy(&data));
        if let Err(e) = insert_idempotent(collection, &docs).await {
            tracing::warn!(object, error = %e, "writing spooled run records from the bucket failed; trying later");
            return;
        }
        if let Err(e) = bucket.delete(&object, generation).await {
            tracing::warn!(object, error = %e, "cannot delete replayed spooled run records in the bucket");
        }
        tracing::info!(
            records = docs.len(),
            object,
            "spooled run records from the bucket written"
        );
    }
}

/// `replay_bucket` at once and then every `BUCKET_SPOOL_EVERY` until `stop`,
/// beside the log writer (never in its way).
pub async fn replay_bucket_periodically(
    db: mongodb::Database,
    bucket: Arc<OutputStore>,
    stop: tokio_util::sync::CancellationToken,
) {
    let collection = db.collection::<Document>(LOG_COLLECTION);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = replay_bucket(&collection, &bucket) => {}
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(BUCKET_SPOOL_EVERY) => {}
        }
    }
}

fn spooled_documents(text: &str) -> Vec<Document> {
    text.lines()
        .filter_map(|l| serde_json::from_str::<LogRecord>(l).ok())
        .map(|r| to_document(&r))
        .collect()
}

/// Writes the records an earlier life of this worker spooled, then removes
/// their files. Retries while MongoDB is down (new records wait meanwhile).
/// Records in the bucket are other workers' and need not hold up this
/// worker's own: `replay_bucket_periodically` writes them.
async fn replay_spool(collection: &mongodb::Collection<Document>, config: &SinkConfig) {
    let prefix = config.spool_prefix();
    let Ok(entries) = std::fs::read_dir(&config.spool_dir) else {
        return;
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(&prefix) && n.ends_with(".jsonl"))
        })
        .collect();
    files.sort();
    for file in files {
        let text = match std::fs::read_to_string(&file) {
            Ok(t) => t,
            Err(e) => {
                tracing::error!(file = %file.display(), error = %e, "cannot read spooled run records");
                continue;
            }
        };
        let docs = spooled_documents(&text);
        let mut backoff = Duration::from_millis(200);
        while let Err(e) = insert_idempotent(collection, &docs).await {
            tracing::warn!(file = %file.display(), error = %e, "writing spooled run records failed; retrying");
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
        if let Err(e) = std::fs::remove_file(&file) {
            tracing::warn!(file = %file.display(), error = %e, "cannot remove a replayed spool file");
        }
        tracing::info!(records = docs.len(), file = %file.display(), "spooled run records written");
    }
}

fn to_document(record: &LogRecord) -> Document {
    let mut doc = bson::to_document(record).expect("a log record converts to BSON");
    doc.insert("_id", record.run_id.clone());
    // A real date for the retention TTL index (TTL needs a BSON date).
    doc.insert("endDate", bson::DateTime::from_millis(record.end_time));
    doc
}

/// Inserts `docs`, treating "already there" (duplicate `_id`) as success.
async fn insert_idempotent(
    collection: &mongodb::Collection<Document>,
    docs: &[Document],
) -> Result<(), mongodb::error::Error> {
    match collection.insert_many(docs).ordered(false).await {
        Ok(_) => Ok(()),
        Err(e) if only_duplicate_keys(&e) => Ok(()),
        Err(e) => Err(e),
    }
}

const DUPLICATE_KEY: i32 = 11000;

fn only_duplicate_keys(e: &mongodb::error::Error) -> bool {
    match e.kind.as_ref() {
        ErrorKind::InsertMany(err) => {
            err.write_concern_error.is_none()
                && err
                    .write_errors
                    .as_ref()
                    .is_some_and(|errs| errs.iter().all(|w| w.code == DUPLICATE_KEY))
        }
        ErrorKind::Write(WriteFailure::WriteError(w)) => w.code == DUPLICATE_KEY,
        _ => false,
    }
}
