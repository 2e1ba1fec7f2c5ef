//! Writes run records to MongoDB in batches (by count and by time).
//!
//! Records wait in a bounded channel. While MongoDB is down the writer
//! retries the same batch with backoff and the channel fills; when it is full
//! a finished run waits to hand over its record (the worker slows down, no
//! record is dropped). Each record's `_id` is its run id, so a batch retried
//! after a partial success does not write anything twice.

use std::time::Duration;

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
}

/// Runs until every sender is dropped and the buffer is written (or the
/// flush timeout passes). Returns how many records could not be written.
pub async fn run_log_writer(
    db: mongodb::Database,
    mut records: mpsc::Receiver<LogRecord>,
    config: SinkConfig,
) -> usize {
    let collection = db.collection::<Document>(LOG_COLLECTION);
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
            if records.is_closed() && records.is_empty() {
                closed_at.get_or_insert_with(Instant::now);
            }
            if let Some(t) = closed_at {
                if t.elapsed() >= config.flush_timeout {
                    let lost = docs.len() + drain_count(&mut records);
                    tracing::error!(records = lost, "gave up writing run records at shutdown");
                    return lost;
                }
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
    }
}

fn drain_count(records: &mut mpsc::Receiver<LogRecord>) -> usize {
    let mut n = 0;
    while records.try_recv().is_ok() {
        n += 1;
    }
    n
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
