//! `GET /api/v1/events`: Server-Sent Events derived from etcd watches, so
//! any manager replica serves them without state of its own.
//!
//! | event | from | data |
//! |---|---|---|
//! | `job.saved` / `job.deleted` | `jobs/` | `{name, job?}` |
//! | `run.started` / `run.finished` | `running/` | `{job, run, worker?, status?}` (`status` from the run log when written in time) |
//! | `worker.joined` / `worker.updated` / `worker.left` | `workers/` | `{id, worker?}` |
//! | `reset` | compaction | the client should reload its state |
//!
//! Each event's id is the etcd revision of its change. A client that
//! reconnects with `Last-Event-ID` resumes right after it (watches start from
//! the next revision); if etcd compacted that history, it gets `reset` and
//! the stream goes on from now.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use etcd_client::{EventType, WatchOptions, WatchStream};
use futures::stream::{self, Stream, StreamExt};
use gdts_common::keys::Keys;
use gdts_common::values::{RunningRecord, WorkerInfo};
use gdts_common::JobSpec;
use serde_json::json;

use crate::api::AppState;

#[utoipa::path(get, path = "/events", tag = "events",
    params(("Last-Event-ID" = Option<String>, Header, description = "resume after this event id")),
    responses((status = 200, content_type = "text/event-stream",
        description = "job.saved, job.deleted, run.started, run.finished, worker.joined, worker.updated, worker.left, reset")))]
pub async fn events(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let resume_after = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<i64>().ok());
    let keys = state.store.keys().clone();
    let etcd = state.store.etcd();
    let store = state.store.clone();
    // One watcher over the range from `jobs/` to the end of `workers/`: etcd
    // delivers one watcher's events in revision order, so event ids only
    // grow and a resumed client misses nothing and sees nothing twice. (The
    // busy `claims/` and `high-water/` keys sort before `jobs/`, outside it.)
    let (start, end) = keys.event_range();
    let mut options = WatchOptions::new().with_range(end);
    if let Some(rev) = resume_after {
        options = options.with_start_revision(rev + 1);
    }
    let watch = match etcd.clone().watch(start, Some(options)).await {
        Ok(w) => Some(w),
        Err(e) => {
            tracing::warn!(error = %e, "event stream: watch failed");
            None
        }
    };
    let events = stream::iter(watch)
        .flat_map(watch_messages)
        .filter_map(move |item| {
            let keys = keys.clone();
            let store = store.clone();
            async move {
                match item {
                    WatchItem::Compacted => Some(Event::default().event("reset").data("{}")),
                    WatchItem::Event(change) => to_event(&keys, &store, change).await,
                }
            }
        })
        .map(Ok);
    Sse::new(events).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}

enum WatchItem {
    Event(Change),
    Compacted,
}

struct Change {
    kind: EventType,
    key: Vec<u8>,
    value: Vec<u8>,
    revision: i64,
    /// True when the put created the key (not an update).
    created: bool,
}

/// The events of one watch as a stream; it ends when the watch fails (the
/// client reconnects and resumes from its last id).
fn watch_messages(watch: WatchStream) -> impl Stream<Item = WatchItem> + Send {
    stream::unfold(Some(watch), |state| async move {
        let mut watch = state?;
        loop {
            match watch.message().await {
                Ok(Some(resp)) => {
                    if resp.compact_revision() > 0 {
                        return Some((vec![WatchItem::Compacted], None));
                    }
                    if resp.canceled() {
                        return None;
                    }
                    let items: Vec<WatchItem> = resp
                        .events()
                        .iter()
                        .filter_map(|e| {
                            let kv = e.kv()?;
                            Some(WatchItem::Event(Change {
                                kind: e.event_type(),
                                key: kv.key().to_vec(),
                                value: kv.value().to_vec(),
                                revision: kv.mod_revision(),
                                created: kv.create_revision() == kv.mod_revision(),
                            }))
                        })
                        .collect();
                    if !items.is_empty() {
                        return Some((items, Some(watch)));
                    }
                }
                _ => return None,
            }
        }
    })
    .flat_map(stream::iter)
}

async fn to_event(keys: &Keys, store: &crate::store::Store, change: Change) -> Option<Event> {
    let Change {
        kind,
        key,
        value,
        revision,
        created,
    } = change;
    let (key, value) = (key.as_slice(), value.as_slice());
    let (name, data) = if let Some(job) = keys.parse_job_key(key) {
        match kind {
            EventType::Put => (
                "job.saved",
                json!({ "name": job.as_str(), "job": serde_json::from_slice::<JobSpec>(value).ok() }),
            ),
            EventType::Delete => ("job.deleted", json!({ "name": job.as_str() })),
        }
    } else if let Some(job) = keys.parse_running_key(key) {
        let run = std::str::from_utf8(key)
            .ok()?
            .rsplit('/')
            .next()?
            .to_string();
        match kind {
            EventType::Put => {
                let rec = serde_json::from_slice::<RunningRecord>(value).ok();
                (
                    "run.started",
                    json!({ "job": job.as_str(), "run": run, "worker": rec.map(|r| r.worker) }),
                )
            }
            EventType::Delete => {
                let status = finished_status(store, &job, &run).await;
                (
                    "run.finished",
                    json!({ "job": job.as_str(), "run": run, "status": status }),
                )
            }
        }
    } else {
        let id = keys.parse_worker_key(key)?;
        match kind {
            EventType::Put => {
                let info = serde_json::from_slice::<WorkerInfo>(value).ok()?;
                // Registrations are rewritten on every renewal: only a new
                // key is a join; the rest update `running` and `lastSeen`.
                let name = if created {
                    "worker.joined"
                } else {
                    "worker.updated"
                };
                (name, json!({ "id": id, "worker": info }))
            }
            EventType::Delete => ("worker.left", json!({ "id": id })),
        }
    };
    Some(
        Event::default()
            .event(name)
            .id(revision.to_string())
            .data(data.to_string()),
    )
}

/// The status of a run that just ended, from its record (written by the
/// worker in a batch shortly after); `None` if it is not there within 2 s.
async fn finished_status(
    store: &crate::store::Store,
    job: &gdts_common::JobName,
    run: &str,
) -> Option<String> {
    let tick: i64 = run.get(..20)?.parse().ok()?;
    for _ in 0..10 {
        if let Ok(Some(status)) = store.status_of_run(job, tick, run).await {
            return Some(status);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    None
}
