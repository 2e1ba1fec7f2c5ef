//! `GET /api/v1/events`: Server-Sent Events derived from etcd watches, so
//! any manager replica serves them without state of its own.
//!
//! | event | from | data |
//! |---|---|---|
//! | `job.saved` / `job.deleted` | `jobs/` | `{name, job?}` |
//! | `run.started` | a `running/` put | `{job, run, worker?}` |
//! | `run.finished` | each entry of a `run-feed/` put | `{job, run, worker, status, runId, startTime, endTime}` |
//! | `run.finished` | a `running/` delete that no feed entry of the same watch response reports (its worker died) | `{job, run}` |
//! | `worker.joined` / `worker.updated` / `worker.left` | `workers/` | `{id, worker?}` |
//! | `reset` | resuming from compacted history | the client should reload its state; the event's id (the current revision) is where the stream goes on |
//!
//! Short runs get no running mark, so their `run.finished` comes without a
//! `run.started`. An event's id is the etcd revision of its change; when one
//! revision (one transaction) gives several events, only the last of them
//! carries the id, so a client that reconnects with `Last-Event-ID` never
//! skips the rest of a revision. It resumes right after that revision
//! (watches start from the next one); if etcd compacted that history, it gets
//! `reset` with an id of its own and the stream goes on from that revision (a
//! reconnect with that id resumes there, never with the compacted one).

use std::collections::HashSet;
use std::convert::Infallible;
use std::time::Duration;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use etcd_client::{Client, EventType, WatchOptions, WatchResponse, WatchStream};
use futures::stream::{self, Stream, StreamExt};
use gdts_common::keys::Keys;
use gdts_common::values::{RunFeed, RunningRecord, WorkerInfo};
use gdts_common::JobSpec;
use serde_json::{json, Value};

use crate::auth::{Caller, Via};
use crate::gate::Credential;
use crate::reply::V1Error;
use crate::state::AppState;

#[utoipa::path(get, path = "/events", tag = "events",
    params(("Last-Event-ID" = Option<String>, Header, description = "resume after this event id")),
    responses((status = 200, content_type = "text/event-stream",
        description = "job.saved, job.deleted, run.started, run.finished, worker.joined, worker.updated, worker.left, reset"),
        (status = 401, body = crate::reply::ApiError), (status = 429, body = crate::reply::ApiError,
        description = "too many event streams open, in all or from this client")))]
pub async fn events(
    State(state): State<AppState>,
    caller: Caller,
    credential: Option<axum::Extension<Credential>>,
    headers: HeaderMap,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, V1Error> {
    let client = match caller.identity.as_ref() {
        Some(i) if i.via != Via::None => {
            format!("token:{}", i.token_id.as_deref().unwrap_or(&i.name))
        }
        _ => format!("address:{}", caller.from),
    };
    let slot = state
        .streams
        .take(&client)
        .map_err(V1Error::TooManyRequests)?;
    let resume_after = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<i64>().ok())
        // etcd revisions start at 1; anything else resumes from now.
        .filter(|rev| *rev >= 0);
    let keys = state.store.keys().clone();
    let etcd = state.store.etcd();
    let watch = watch_after(&etcd, &keys, resume_after).await;
    let redact = !caller.sees_secrets();
    let events = stream::iter(watch)
        .flat_map(move |watch| watch_events(watch, keys.clone(), etcd.clone()))
        .map(move |mut e| {
            // The slot lives as long as the stream.
            let _held = &slot;
            if redact {
                e.hide_job_secrets();
            }
            Ok(e.into_sse())
        })
        .take_until(state.shutdown.clone().cancelled_owned())
        .take_until(revoked(state.clone(), credential.map(|c| c.0)));
    Ok(Sse::new(events).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}

/// Completes once the stream's credential no longer holds (a revoked
/// token, an ended session, an expired IAP assertion): the client then
/// reconnects and is asked again.
async fn revoked(state: AppState, credential: Option<Credential>) {
    let Some(credential) = credential else {
        return std::future::pending().await;
    };
    loop {
        tokio::time::sleep(state.streams.recheck_every).await;
        if !credential.still_valid(&state).await {
            tracing::info!("event stream ended: its credential no longer holds");
            return;
        }
    }
}

/// The events watch, from the revision after `after` (from now if none),
/// or `None` if etcd refused it (the stream then ends, and the client
/// reconnects). One watcher over the range from `jobs/` to the end of
/// `workers/`: etcd delivers one watcher's events in revision order, and
/// never splits a revision across responses, so event ids only grow and a
/// resumed client misses nothing and sees nothing twice. (The busy
/// `claims/`, `high-water/` and `horizon/` keys sort before `jobs/`,
/// outside it.)
async fn watch_after(etcd: &Client, keys: &Keys, after: Option<i64>) -> Option<WatchStream> {
    let (start, end) = keys.event_range();
    let mut options = WatchOptions::new().with_range(end);
    if let Some(rev) = after {
        options = options.with_start_revision(rev.saturating_add(1));
    }
    match etcd.clone().watch(start, Some(options)).await {
        Ok(w) => Some(w),
        Err(e) => {
            tracing::warn!(error = %e, "event stream: watch failed");
            None
        }
    }
}

/// The events of one watch as a stream; it ends when the watch fails (the
/// client reconnects and resumes from its last id). When the client asked
/// to resume from history etcd has compacted away, it gets `reset` with the
/// current revision as its id (reconnecting with it resumes from there),
/// and the stream goes on from that revision on a new watch.
fn watch_events(
    watch: WatchStream,
    keys: Keys,
    etcd: Client,
) -> impl Stream<Item = Outgoing> + Send {
    stream::unfold(Some(watch), move |state| {
        let keys = keys.clone();
        let etcd = etcd.clone();
        async move {
            let mut watch = state?;
            loop {
                match watch.message().await {
                    Ok(Some(resp)) => {
                        if resp.compact_revision() > 0 {
                            let now = resp
                                .header()
                                .map(|h| h.revision())
                                .unwrap_or_default()
                                .max(resp.compact_revision());
                            let next = watch_after(&etcd, &keys, Some(now)).await;
                            return Some((vec![Outgoing::reset(now)], next));
                        }
                        if resp.canceled() {
                            return None;
                        }
                        let events = events_of(&keys, &changes_of(&resp));
                        if !events.is_empty() {
                            return Some((events, Some(watch)));
                        }
                    }
                    _ => return None,
                }
            }
        }
    })
    .flat_map(stream::iter)
}

/// One key change of a watch response.
#[derive(Debug, Clone)]
struct Change {
    kind: EventType,
    key: Vec<u8>,
    value: Vec<u8>,
    revision: i64,
    /// True when the put created the key (not an update).
    created: bool,
}

fn changes_of(resp: &WatchResponse) -> Vec<Change> {
    resp.events()
        .iter()
        .filter_map(|e| {
            let kv = e.kv()?;
            Some(Change {
                kind: e.event_type(),
                key: kv.key().to_vec(),
                value: kv.value().to_vec(),
                revision: kv.mod_revision(),
                created: kv.create_revision() == kv.mod_revision(),
            })
        })
        .collect()
}

/// An event to send, before it becomes an SSE frame.
#[derive(Debug, Clone, PartialEq)]
struct Outgoing {
    name: &'static str,
    revision: i64,
    /// Set on the last event of its revision only.
    id: Option<i64>,
    data: Value,
}

impl Outgoing {
    fn new(name: &'static str, revision: i64, data: Value) -> Self {
        Outgoing {
            name,
            revision,
            id: None,
            data,
        }
    }

    /// A `job.saved` as a caller that may not read the job's secrets gets
    /// it ([`JobSpec::redact_secrets`]).
    fn hide_job_secrets(&mut self) {
        if self.name != "job.saved" {
            return;
        }
        if let Some(job) = self.data.get_mut("job") {
            JobSpec::redact_secrets_in_json(job);
        }
    }

    /// Reload your state; events go on after `revision` (the event's id).
    fn reset(revision: i64) -> Self {
        Outgoing {
            id: Some(revision),
            ..Outgoing::new("reset", revision, json!({}))
        }
    }

    fn into_sse(self) -> Event {
        let event = Event::default()
            .event(self.name)
            .data(self.data.to_string());
        match self.id {
            Some(id) => event.id(id.to_string()),
            None => event,
        }
    }
}

/// The events of one watch response's changes, in order, with ids on the
/// last event of each revision.
fn events_of(keys: &Keys, changes: &[Change]) -> Vec<Outgoing> {
    // A worker ends a run by listing it in its feed and deleting its mark;
    // a mark deleted with no feed entry in the same response vanished
    // because its worker's lease did.
    let feeds: Vec<Option<(String, RunFeed)>> = changes.iter().map(|c| feed_of(keys, c)).collect();
    let reported: HashSet<(&str, &str)> = feeds
        .iter()
        .flatten()
        .flat_map(|(_, feed)| feed.runs.iter())
        .map(|r| (r.job.as_str(), r.run.as_str()))
        .collect();
    let mut out = Vec::new();
    for (change, feed) in changes.iter().zip(&feeds) {
        match feed {
            Some((worker, feed)) => out.extend(feed.runs.iter().map(|r| {
                Outgoing::new(
                    "run.finished",
                    change.revision,
                    json!({
                        "job": r.job, "run": r.run, "worker": worker, "status": r.status,
                        "runId": r.run_id, "startTime": r.start_time, "endTime": r.end_time,
                    }),
                )
            })),
            None => out.extend(event_of(keys, change, &reported)),
        }
    }
    for i in 0..out.len() {
        if out
            .get(i + 1)
            .is_none_or(|next| next.revision != out[i].revision)
        {
            out[i].id = Some(out[i].revision);
        }
    }
    out
}

/// The worker and entries of a `run-feed/` put.
fn feed_of(keys: &Keys, change: &Change) -> Option<(String, RunFeed)> {
    let worker = keys.parse_run_feed_key(&change.key)?;
    if change.kind != EventType::Put {
        return None;
    }
    match serde_json::from_slice::<RunFeed>(&change.value) {
        Ok(feed) => Some((worker, feed)),
        Err(e) => {
            tracing::warn!(worker = %worker, error = %e, "event stream: undecodable run feed");
            None
        }
    }
}

/// The event of one change that is not a feed, if it makes one.
fn event_of(keys: &Keys, change: &Change, reported: &HashSet<(&str, &str)>) -> Option<Outgoing> {
    let (key, value) = (change.key.as_slice(), change.value.as_slice());
    let (name, data) = if let Some(job) = keys.parse_job_key(key) {
        match change.kind {
            EventType::Put => (
                "job.saved",
                json!({ "name": job.as_str(), "job": serde_json::from_slice::<JobSpec>(value).ok() }),
            ),
            EventType::Delete => ("job.deleted", json!({ "name": job.as_str() })),
        }
    } else if let Some((job, run)) = keys.parse_running_key(key) {
        let run = run.to_string();
        let run = run.as_str();
        match change.kind {
            EventType::Put => {
                let mark = serde_json::from_slice::<RunningRecord>(value).ok();
                (
                    "run.started",
                    json!({ "job": job.as_str(), "run": run, "worker": mark.map(|m| m.worker) }),
                )
            }
            EventType::Delete if reported.contains(&(job.as_str(), run)) => return None,
            EventType::Delete => ("run.finished", json!({ "job": job.as_str(), "run": run })),
        }
    } else {
        let id = keys.parse_worker_key(key)?;
        match change.kind {
            EventType::Put => {
                let info = serde_json::from_slice::<WorkerInfo>(value).ok()?;
                // A registration is written once; a rewrite (draining, or a
                // worker that re-registers under its lease) is an update.
                let name = if change.created {
                    "worker.joined"
                } else {
                    "worker.updated"
                };
                (name, json!({ "id": id, "worker": info }))
            }
            EventType::Delete => ("worker.left", json!({ "id": id })),
        }
    };
    Some(Outgoing::new(name, change.revision, data))
}

#[cfg(test)]
mod tests {
    use super::*;
    use gdts_common::values::FinishedRun;
    use gdts_common::JobName;

    fn keys() -> Keys {
        Keys::new("/p/")
    }

    fn running_key(job: &str, run: &str) -> Vec<u8> {
        let k = keys();
        format!("{}{run}", k.running_prefix(&JobName::parse(job).unwrap())).into_bytes()
    }

    fn put(key: Vec<u8>, value: Value, revision: i64) -> Change {
        Change {
            kind: EventType::Put,
            key,
            value: value.to_string().into_bytes(),
            revision,
            created: true,
        }
    }

    fn delete(key: Vec<u8>, revision: i64) -> Change {
        Change {
            kind: EventType::Delete,
            key,
            value: Vec::new(),
            revision,
            created: false,
        }
    }

    fn feed(runs: &[(&str, &str)]) -> Value {
        serde_json::to_value(RunFeed {
            runs: runs
                .iter()
                .map(|(job, run)| FinishedRun {
                    job: job.to_string(),
                    run: run.to_string(),
                    run_id: format!("{job}@{run}#1"),
                    status: "succeeded".into(),
                    start_time: 1,
                    end_time: 2,
                })
                .collect(),
        })
        .unwrap()
    }

    #[test]
    fn a_feed_entry_is_the_end_of_a_run_and_its_mark_deletion_adds_nothing() {
        let k = keys();
        let changes = [
            delete(running_key("a", "00000000000000000001"), 7),
            put(
                k.run_feed("w1").into_bytes(),
                feed(&[("a", "00000000000000000001"), ("b", "00000000000000000002")]),
                7,
            ),
            // A mark whose run no feed reports: its worker died.
            delete(running_key("c", "00000000000000000003"), 8),
        ];
        let out = events_of(&k, &changes);
        let summary: Vec<(&str, &Value, &Value, Option<i64>)> = out
            .iter()
            .map(|e| (e.name, &e.data["job"], &e.data["status"], e.id))
            .collect();
        assert_eq!(
            summary,
            vec![
                ("run.finished", &json!("a"), &json!("succeeded"), None),
                ("run.finished", &json!("b"), &json!("succeeded"), Some(7)),
                ("run.finished", &json!("c"), &Value::Null, Some(8)),
            ]
        );
        assert_eq!(
            out[0].data,
            json!({"job": "a", "run": "00000000000000000001", "worker": "w1", "status": "succeeded",
                   "runId": "a@00000000000000000001#1", "startTime": 1, "endTime": 2})
        );
        assert_eq!(
            out[2].data,
            json!({"job": "c", "run": "00000000000000000003"})
        );
    }

    #[test]
    fn the_id_goes_on_the_last_event_of_a_revision_that_makes_one() {
        let k = keys();
        let job = JobName::parse("j").unwrap();
        let changes = [
            put(
                running_key("j", "00000000000000000001"),
                json!({"worker": "w", "startedAt": 1}),
                5,
            ),
            // Makes no event: the id must still land on revision 5's last one.
            put(k.kill(&job).into_bytes(), json!({"requestedAt": 1}), 5),
            put(
                k.job(&job).into_bytes(),
                json!({"name": "j", "command": "x", "cronExpr": "@daily"}),
                6,
            ),
            put(k.run_feed("w").into_bytes(), json!({"runs": []}), 7),
            delete(k.worker("w").into_bytes(), 9),
        ];
        let out = events_of(&k, &changes);
        let summary: Vec<(&str, Option<i64>)> = out.iter().map(|e| (e.name, e.id)).collect();
        assert_eq!(
            summary,
            vec![
                ("run.started", Some(5)),
                ("job.saved", Some(6)),
                ("worker.left", Some(9)),
            ]
        );
    }
}
