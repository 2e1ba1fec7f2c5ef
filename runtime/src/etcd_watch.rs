//! Follows an etcd prefix: a full read (paged, at one revision), then a watch
//! from the revision after it. Any watch error, disconnect, cancellation or compaction starts over
//! with a fresh full read, so a consumer's view can never stay stale.

use std::time::Duration;

use etcd_client::{Client, EventType, KeyValue, WatchOptions};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// One key as a consumer sees it (a copy of etcd's `KeyValue`, so consumers
/// can be tested without etcd).
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub key: Vec<u8>,
    pub value: Vec<u8>,
    pub mod_revision: i64,
}

impl From<&KeyValue> for Entry {
    fn from(kv: &KeyValue) -> Self {
        Entry {
            key: kv.key().to_vec(),
            value: kv.value().to_vec(),
            mod_revision: kv.mod_revision(),
        }
    }
}

/// What a consumer of a prefix sees.
#[derive(Debug)]
pub enum PrefixEvent {
    /// Everything under the prefix now: replaces all earlier state.
    Reset(Vec<Entry>),
    Put(Entry),
    /// A deleted key; `mod_revision` is the revision of the deletion.
    Delete(Entry),
}

/// Runs until `shutdown` fires or the receiver is dropped.
pub async fn follow_prefix(
    client: Client,
    prefix: String,
    events: mpsc::Sender<PrefixEvent>,
    shutdown: CancellationToken,
) {
    const FIRST_BACKOFF: Duration = Duration::from_millis(100);
    /// A watch that lasted this long was healthy: its break starts the
    /// backoff over rather than doubling the last one.
    const HEALTHY_WATCH: Duration = Duration::from_secs(30);
    let mut backoff = FIRST_BACKOFF;
    loop {
        let started = tokio::time::Instant::now();
        let result = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = follow_once(client.clone(), &prefix, &events) => r,
        };
        if events.is_closed() {
            return;
        }
        if started.elapsed() >= HEALTHY_WATCH {
            backoff = FIRST_BACKOFF;
        }
        match result {
            Ok(()) => backoff = FIRST_BACKOFF,
            Err(e) => {
                tracing::warn!(prefix = %prefix, error = %e, "watch broke; resyncing");
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

async fn follow_once(
    mut client: Client,
    prefix: &str,
    events: &mpsc::Sender<PrefixEvent>,
) -> anyhow::Result<()> {
    // Paged: a prefix of 100,000 jobs does not fit in one response.
    let (snapshot, revision) = crate::etcd_pages::RangePages::prefix(client.clone(), prefix)
        .collect()
        .await?;
    let mut stream = client
        .watch(
            prefix,
            Some(
                WatchOptions::new()
                    .with_prefix()
                    .with_start_revision(revision + 1)
                    .with_progress_notify(),
            ),
        )
        .await?;
    if events
        .send(PrefixEvent::Reset(
            snapshot.iter().map(Entry::from).collect(),
        ))
        .await
        .is_err()
    {
        return Ok(());
    }
    // Progress notifications arrive every few minutes on an idle watch; a
    // silent stream for longer than this is treated as dead.
    const SILENCE_LIMIT: Duration = Duration::from_secs(15 * 60);
    loop {
        let message = tokio::time::timeout(SILENCE_LIMIT, stream.message())
            .await
            .map_err(|_| anyhow::anyhow!("watch silent for {SILENCE_LIMIT:?}"))??;
        let Some(resp) = message else {
            anyhow::bail!("watch stream ended");
        };
        if resp.canceled() || resp.compact_revision() > 0 {
            anyhow::bail!(
                "watch canceled (compact revision {}): {}",
                resp.compact_revision(),
                resp.cancel_reason()
            );
        }
        for event in resp.events() {
            let Some(kv) = event.kv() else { continue };
            let ev = match event.event_type() {
                EventType::Put => PrefixEvent::Put(kv.into()),
                EventType::Delete => PrefixEvent::Delete(kv.into()),
            };
            if events.send(ev).await.is_err() {
                return Ok(());
            }
        }
    }
}
