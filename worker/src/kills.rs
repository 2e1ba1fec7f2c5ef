//! Applies kill requests from `kill/{job}` to the runs on this worker.

use std::sync::Arc;

use gdts_common::keys::Keys;
use tokio::sync::mpsc;

use gdts_common::values::KillRequest;

use crate::executor::KillReason;
use crate::runs::{Kill, Runs};
use gdts_runtime::etcd_watch::{Entry, PrefixEvent};

pub async fn apply_kill_requests(
    keys: Keys,
    runs: Arc<Runs>,
    mut events: mpsc::Receiver<PrefixEvent>,
) {
    while let Some(event) = events.recv().await {
        match event {
            // After a resync, requests still alive apply to runs claimed
            // before them: exactly the runs they were meant for.
            PrefixEvent::Reset(entries) => entries.iter().for_each(|e| apply(&keys, &runs, e)),
            PrefixEvent::Put(entry) => apply(&keys, &runs, &entry),
            PrefixEvent::Delete(_) => {}
        }
    }
}

fn apply(keys: &Keys, runs: &Runs, entry: &Entry) {
    if let Some(job) = keys.parse_kill_key(&entry.key) {
        let request = serde_json::from_slice::<KillRequest>(&entry.value).ok();
        let replaced = request.as_ref().and_then(|r| r.reason.as_deref()) == Some("replaced");
        let kill = Kill {
            revision: entry.mod_revision,
            reason: if replaced {
                KillReason::Replaced
            } else {
                KillReason::Requested
            },
            // A replacement written before ticks were recorded in it hits
            // every run claimed before it, as it always did.
            before_tick: request.and_then(|r| r.tick).filter(|_| replaced),
        };
        let killed = runs.kill_job(&job, kill);
        if killed > 0 {
            tracing::info!(job = %job, runs = killed, "kill request applied");
        }
    }
}
