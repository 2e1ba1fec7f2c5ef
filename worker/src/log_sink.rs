//! Writes run records to MongoDB in batches (by count and by time).
//!
//! Records wait in a bounded channel. While MongoDB does not take them the
//! writer retries the same batch with backoff; once that has gone on for
//! `JOURNAL_AFTER`, the worker is *blocked*: it journals the batch and every
//! record after it to spool files on disk (so neither memory nor waiting
//! runs pile up, and a worker killed then loses at most the records of the
//! last moments, whose claims the orphan sweep finds), says so in its
//! registration (`recordsBlocked`: the others take its ticks, unless every
//! worker is blocked), and writes the journal to MongoDB as soon as it
//! answers again. Each record's `_id` is its run id, so a batch retried
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

use crate::metrics::{Metrics, RecordEvent};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::gcs::OutputStore;

use futures::TryStreamExt;
use gdts_common::log_record::{LogRecord, LOG_COLLECTION, STATUS_LOST};
use mongodb::bson::{self, Document};
use mongodb::error::{ErrorKind, WriteFailure};
use tokio::sync::mpsc;
use tokio::time::Instant;

/// A batch MongoDB has refused for this long starts the journal.
pub const JOURNAL_AFTER: Duration = Duration::from_secs(3);
/// While journaling, MongoDB is tried again this often.
const PROBE_EVERY: Duration = Duration::from_secs(2);
/// An insert that takes longer than this has failed (a connection that
/// went silent would otherwise hold the writer for good).
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

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
    /// Set while records cannot be written (journaling).
    pub blocked: tokio::sync::watch::Sender<bool>,
    /// Counts what happens to records (`gdts_worker_records_total`).
    pub metrics: Arc<Metrics>,
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
    let mut closed_at: Option<Instant> = None;
    // Journaling: MongoDB refused records for `JOURNAL_AFTER`. An earlier
    // life's spool is written first; if MongoDB refuses it, this life
    // starts journaling (and blocked) until it takes it.
    let mut journaling = !try_replay_journal(&collection, &config).await;
    if journaling {
        tracing::warn!("MongoDB refuses the run records an earlier life of this worker spooled; journaling until it takes them");
        config.blocked.send_replace(true);
    }
    let mut next_probe = Instant::now() + PROBE_EVERY;
    loop {
        let first = if journaling {
            // Records or not, MongoDB is tried again every `PROBE_EVERY`
            // (checked first: with records always waiting, the receive
            // below would never time out).
            let probe_due = Instant::now() >= next_probe;
            let received = if probe_due {
                Err(())
            } else {
                tokio::time::timeout_at(next_probe, records.recv())
                    .await
                    .map_err(|_| ())
            };
            match received {
                Ok(Some(r)) => Some(r),
                Ok(None) => None,
                Err(_) => {
                    if try_replay_journal(&collection, &config).await {
                        journaling = false;
                        config.blocked.send_replace(false);
                        tracing::info!("MongoDB takes run records again; journal written");
                    }
                    // From the probe's end: a probe that takes longer than
                    // the interval (MongoDB's server selection gives up after
                    // seconds) must still leave time to take records, and to
                    // see the channel close at shutdown.
                    next_probe = Instant::now() + PROBE_EVERY;
                    continue;
                }
            }
        } else {
            records.recv().await
        };
        let Some(first) = first else {
            if journaling {
                hand_journal_to_bucket(&config).await;
            }
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
        if journaling {
            journal(&config, &batch);
            continue;
        }
        let docs: Vec<Document> = batch.iter().map(to_document).collect();
        let mut backoff = Duration::from_millis(100);
        let failing_since = Instant::now();
        loop {
            match insert_with_timeout(&collection, &docs).await {
                Ok(()) => {
                    config.metrics.record(RecordEvent::Written, docs.len());
                    break;
                }
                Err(e) => {
                    config.metrics.record(RecordEvent::Retried, 1);
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
                            config.metrics.record(RecordEvent::Spooled, rest.len());
                            hand_to_bucket(&config, &path, rest.len()).await;
                            hand_journal_to_bucket(&config).await;
                            0
                        }
                        Err(e) => {
                            tracing::error!(records = rest.len(), error = %e, "gave up writing run records at shutdown");
                            rest.len()
                        }
                    };
                }
            } else if failing_since.elapsed() >= JOURNAL_AFTER {
                tracing::error!(
                    "MongoDB has refused run records for {JOURNAL_AFTER:?}: journaling them to {} \
                     and taking no ticks while another worker can",
                    config.spool_dir.display()
                );
                journaling = true;
                config.blocked.send_replace(true);
                next_probe = Instant::now() + PROBE_EVERY;
                journal(&config, &batch);
                break;
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
    }
}

/// Appends a batch to the journal (a spool file of its own); should the
/// disk refuse it, the records are lost (and said so): their claims still
/// get `lost` records only if this worker dies, so this is logged loudly.
fn journal(config: &SinkConfig, batch: &[LogRecord]) {
    match spool(config, batch) {
        Ok(_) => config.metrics.record(RecordEvent::Journaled, batch.len()),
        Err(e) => {
            tracing::error!(records = batch.len(), error = %e, "cannot journal run records; they are lost")
        }
    }
}

/// Writes this worker's journal (its spool files) to MongoDB, oldest first;
/// true once none is left. Stops at the first failure.
async fn try_replay_journal(
    collection: &mongodb::Collection<Document>,
    config: &SinkConfig,
) -> bool {
    for file in own_spool_files(config) {
        let text = match std::fs::read_to_string(&file) {
            Ok(t) => t,
            Err(e) => {
                tracing::error!(file = %file.display(), error = %e, "cannot read spooled run records");
                continue;
            }
        };
        let docs = spooled_documents(&text);
        if docs.is_empty() {
            let _ = std::fs::remove_file(&file);
            continue;
        }
        if let Err(e) = insert_with_timeout(collection, &docs).await {
            tracing::debug!(error = %e, "MongoDB still refuses run records");
            return false;
        }
        if let Err(e) = std::fs::remove_file(&file) {
            tracing::warn!(file = %file.display(), error = %e, "cannot remove a written journal file");
        }
        tracing::info!(records = docs.len(), file = %file.display(), "spooled run records written");
    }
    true
}

/// At shutdown while journaling: with a bucket, the journal goes there for
/// any worker to write; without, it stays for the next start.
async fn hand_journal_to_bucket(config: &SinkConfig) {
    let files = own_spool_files(config);
    if config.bucket.is_none() {
        if !files.is_empty() {
            tracing::warn!(files = files.len(), dir = %config.spool_dir.display(), "MongoDB unreachable at shutdown; journaled records stay for the next start");
        }
        return;
    }
    for file in files {
        let records = std::fs::read_to_string(&file)
            .map(|t| t.lines().count())
            .unwrap_or(0);
        hand_to_bucket(config, &file, records).await;
    }
}

async fn insert_with_timeout(
    collection: &mongodb::Collection<Document>,
    docs: &[Document],
) -> Result<(), String> {
    let started = std::time::Instant::now();
    let result =
        match tokio::time::timeout(WRITE_TIMEOUT, insert_idempotent(collection, docs)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(format!("no answer from MongoDB in {WRITE_TIMEOUT:?}")),
        };
    gdts_runtime::metrics::mongo_observed("insert_records", started, result.is_ok());
    result
}

/// Creates `dir` (and its parents) if missing, the worker's alone (0700).
/// A directory that exists keeps its mode (it may be the system's temporary
/// directory, shared by everyone): what matters is that every file the
/// worker writes there (journaled records, outputs waiting for upload,
/// notices) is its own alone, 0600, since those hold what jobs printed,
/// which other jobs (all run as the same job user) must not read.
pub fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

/// Writes `bytes` as a new file in `dir` (made if missing, see
/// [`create_private_dir`]), named `{prefix}{at:013}-{sequence:08}.{ext}`
/// (`at` in epoch ms: names sort in the order written), whole or not at
/// all: under a temporary name first, on disk, then renamed; nothing is
/// left behind when that fails. Its path.
pub fn write_spool_file(
    dir: &Path,
    prefix: &str,
    at: i64,
    ext: &str,
    bytes: &[u8],
) -> std::io::Result<PathBuf> {
    static SEQUENCE: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    create_private_dir(dir)?;
    let seq = SEQUENCE.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let path = dir.join(format!("{prefix}{at:013}-{seq:08}.{ext}"));
    let tmp = path.with_extension("partial");
    write_private(&tmp, bytes)?;
    std::fs::rename(&tmp, &path).inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })?;
    Ok(path)
}

/// Writes a new file only the worker's user may read (0600), to disk
/// (fsync) before it returns; a file left half-written is removed.
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    let written = file.write_all(bytes).and_then(|()| file.sync_data());
    if written.is_err() {
        let _ = std::fs::remove_file(path);
    }
    written
}

/// Writes `records` as JSON lines to a new spool file (atomically: a
/// temporary name, then a rename).
fn spool(config: &SinkConfig, records: &[LogRecord]) -> std::io::Result<PathBuf> {
    let mut text = String::new();
    for r in records {
        text.push_str(&serde_json::to_string(r).expect("a log record serializes"));
        text.push('\n');
    }
    write_spool_file(
        &config.spool_dir,
        &config.spool_prefix(),
        chrono::Utc::now().timestamp_millis(),
        "jsonl",
        text.as_bytes(),
    )
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

/// This worker id's spool files, oldest first.
fn own_spool_files(config: &SinkConfig) -> Vec<PathBuf> {
    let prefix = config.spool_prefix();
    let Ok(entries) = std::fs::read_dir(&config.spool_dir) else {
        return Vec::new();
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
    files
}

fn to_document(record: &LogRecord) -> Document {
    let mut doc = bson::to_document(record).expect("a log record converts to BSON");
    doc.insert("_id", record.run_id.clone());
    // A real date for the retention TTL index (TTL needs a BSON date).
    doc.insert("endDate", bson::DateTime::from_millis(record.end_time));
    doc
}

/// Inserts `docs`, treating "already there" (duplicate `_id`) as success,
/// except that a real record replaces a `lost` one another worker wrote
/// for the same run (see `orphans.rs`), so a tick keeps one record and the
/// one that knows.
async fn insert_idempotent(
    collection: &mongodb::Collection<Document>,
    docs: &[Document],
) -> Result<(), mongodb::error::Error> {
    match collection.insert_many(docs).ordered(false).await {
        Ok(_) => Ok(()),
        Err(e) => match duplicate_indices(&e) {
            Some(already) => replace_lost(collection, docs, &already).await,
            None => Err(e),
        },
    }
}

/// Replaces the `lost` records among those already there by the real
/// ones in `docs` (`already`: their indices).
async fn replace_lost(
    collection: &mongodb::Collection<Document>,
    docs: &[Document],
    already: &[usize],
) -> Result<(), mongodb::error::Error> {
    let real: Vec<&Document> = already
        .iter()
        .filter_map(|&i| docs.get(i))
        .filter(|d| d.get_str("status") != Ok(STATUS_LOST))
        .collect();
    if real.is_empty() {
        return Ok(());
    }
    let ids: Vec<bson::Bson> = real.iter().filter_map(|d| d.get("_id").cloned()).collect();
    let lost: Vec<Document> = collection
        .find(bson::doc! {"_id": {"$in": ids}, "status": STATUS_LOST})
        .projection(bson::doc! {"_id": 1})
        .await?
        .try_collect()
        .await?;
    for found in lost {
        let Some(id) = found.get("_id") else {
            continue;
        };
        if let Some(doc) = real.iter().find(|d| d.get("_id") == Some(id)) {
            // Only while it still says lost: a retry finds nothing to do.
            collection
                .replace_one(bson::doc! {"_id": id.clone(), "status": STATUS_LOST}, *doc)
                .await?;
            tracing::info!(run = %id, "a run recorded as lost has its real record now");
        }
    }
    Ok(())
}

const DUPLICATE_KEY: i32 = 11000;

/// The indices of the documents refused only for being there already;
/// `None` if anything else failed.
fn duplicate_indices(e: &mongodb::error::Error) -> Option<Vec<usize>> {
    match e.kind.as_ref() {
        ErrorKind::InsertMany(err) => {
            let errs = err.write_errors.as_ref()?;
            (err.write_concern_error.is_none() && errs.iter().all(|w| w.code == DUPLICATE_KEY))
                .then(|| errs.iter().map(|w| w.index).collect())
        }
        ErrorKind::Write(WriteFailure::WriteError(w)) if w.code == DUPLICATE_KEY => Some(vec![0]),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn journaled_records_are_the_workers_alone() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("spool/deeper");
        create_private_dir(&dir).unwrap();
        assert_eq!(mode(&dir), 0o700);
        // A directory that exists is left as it is (/tmp must stay 1777).
        let shared = root.path().join("shared");
        std::fs::create_dir(&shared).unwrap();
        std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o1777)).unwrap();
        create_private_dir(&shared).unwrap();
        let full = std::fs::metadata(&shared).unwrap().permissions().mode() & 0o7777;
        assert_eq!(full, 0o1777);
        let file = dir.join("records.jsonl");
        write_private(&file, b"{}\n").unwrap();
        assert_eq!(mode(&file), 0o600);
        assert_eq!(std::fs::read(&file).unwrap(), b"{}\n");
    }
}
