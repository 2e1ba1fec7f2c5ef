//! The JSON API under `/api/v1`, beside the legacy endpoints: resource paths,
//! JSON bodies, and status codes that mean something (400 malformed request,
//! 404 no such thing, 409 conflicting change, 422 invalid job naming the
//! field; 5xx only for our own faults, logged with their cause and reported
//! opaquely).

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use gdts_common::job::JobError;
use gdts_common::log_record::LogRecord;
use gdts_common::schedule::due_ticks;
use gdts_common::values::WorkerInfo;
use gdts_common::{CronSchedule, Job, JobName, JobSpec};
use serde::Serialize;
use serde_json::{json, Value};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::Caller;
use crate::reply::{paging, query, ApiError, ApiErrorBody, Page, V1Error, V1Result};
use crate::state::AppState;
use crate::store::{JobWindow, RunRequest};

#[derive(utoipa::OpenApi)]
#[openapi(
    info(title = "GDTS API", description = "Jobs, runs and workers of a GDTS cluster."),
    servers((url = "/api/v1")),
    components(schemas(ApiError, ApiErrorBody))
)]
struct ApiDoc;

/// Routes relative to `/api/v1` (see `app::app`), and the OpenAPI
/// document generated from the same handler annotations, so the two cannot
/// drift apart. The document is served at `/api/v1/openapi.json`.
pub fn router() -> Router<AppState> {
    let (router, doc) = OpenApiRouter::with_openapi(<ApiDoc as utoipa::OpenApi>::openapi())
        .routes(routes!(list_jobs))
        .routes(routes!(get_job, put_job, delete_job))
        .routes(routes!(kill_job))
        .routes(routes!(run_job))
        .routes(routes!(pause_job))
        .routes(routes!(resume_job))
        .routes(routes!(list_runs))
        .routes(routes!(get_run))
        .routes(routes!(list_workers))
        .routes(routes!(preview))
        .routes(routes!(crate::stats::stats))
        .routes(routes!(crate::events::events))
        .routes(routes!(
            crate::access_api::list_tokens,
            crate::access_api::create_token
        ))
        .routes(routes!(crate::access_api::revoke_token))
        .routes(routes!(
            crate::access_api::get_session,
            crate::access_api::sign_in,
            crate::access_api::sign_out
        ))
        .routes(routes!(crate::access_api::list_audit))
        .split_for_parts();
    let doc = std::sync::Arc::new(crate::contract::apply(
        serde_json::to_value(&doc).expect("the OpenAPI document serializes"),
    ));
    router
        .route(
            "/openapi.json",
            get(move || {
                let doc = doc.clone();
                async move { Json(doc.as_ref().clone()) }
            }),
        )
        .fallback(not_found)
}

async fn not_found() -> V1Error {
    V1Error::NotFound("no such API endpoint".into())
}

/// Why a manual run of a job whose selector no live worker matches is
/// refused: every worker would pass the request by, and no record would say
/// so.
pub(crate) fn nobody_could_run(name: &JobName) -> String {
    format!("no live worker matches the selector of {name}: nobody could run it")
}

fn no_such_job(name: &JobName) -> V1Error {
    V1Error::NotFound(format!("no job named {name}"))
}

fn name_of(raw: &str) -> V1Result<JobName> {
    JobName::parse(raw).map_err(|e| V1Error::BadRequest {
        field: Some("name".into()),
        message: e.reason,
    })
}

/// A job with what the fleet knows about it now.
#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct JobView {
    #[serde(flatten)]
    pub spec: JobSpec,
    /// Runs in progress in the fleet.
    pub running: u32,
    /// The next fire times (UTC, epoch ms), none while paused.
    pub next_fire_times: Vec<i64>,
    /// The newest run on record (newest tick), without its output.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_run: Option<LogRecord>,
    /// The job has a `selector` that no live worker's labels match: nobody
    /// runs its ticks until such a worker registers.
    pub unmatched: bool,
}

/// Sets `unmatched` on the views whose selector no worker that takes ticks
/// matches (the workers are read only if a view has a selector). Best
/// effort: when the workers cannot be read, nothing is flagged (a save has
/// already happened and must not answer 503).
async fn flag_unmatched(state: &AppState, views: &mut [JobView]) {
    if views.iter().all(|v| v.spec.selector.is_empty()) {
        return;
    }
    let workers = match state.store.registrations().await {
        Ok(w) => w,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the workers to flag unmatched selectors");
            return;
        }
    };
    let ticking = gdts_common::values::ticking_workers(&workers);
    for v in views.iter_mut().filter(|v| !v.spec.selector.is_empty()) {
        v.unmatched = gdts_common::values::selector_unmatched(&v.spec.selector, &ticking);
    }
}

fn view(spec: JobSpec, running: u32) -> JobView {
    let next_fire_times = match Job::from_spec(&spec) {
        Ok(job) if !job.paused => job
            .schedule
            .upcoming(chrono::Utc::now(), 3)
            .iter()
            .map(|t| t.timestamp_millis())
            .collect(),
        _ => Vec::new(),
    };
    JobView {
        spec,
        running,
        next_fire_times,
        last_run: None,
        unmatched: false,
    }
}

/// A job of the page and where its lookup looks first ([`recent_from`]).
type Wanted = (JobName, Option<i64>);

/// The last run of each job: the jobs that fire often with one read of the
/// runs of the last seconds, stretches of jobs that did not fire lately a
/// stretch at a time, the others (and those the reads left open) a few
/// lookups at a time.
async fn last_runs(state: &AppState, jobs: &[JobSpec]) -> V1Result<Vec<Option<LogRecord>>> {
    use futures::{StreamExt, TryStreamExt};
    let now = chrono::Utc::now();
    let lately = now.timestamp_millis() - PAGE_READ_SPAN.as_millis() as i64;
    // Each job's recent ticks are worked out once, for both reads.
    let (wanted, often): (Vec<Option<Wanted>>, Vec<Option<i64>>) = jobs
        .iter()
        .map(|j| {
            let Ok(name) = JobName::parse(&j.name) else {
                return (None, None);
            };
            let ticks = recent_ticks(j, now);
            let from = |nth| ticks.as_ref().and_then(|t| t.look_from(nth));
            let often = from(PAGE_RECENT_TICKS).filter(|from| *from >= lately);
            (Some((name, from(RECENT_TICKS))), often)
        })
        .unzip();
    let often: Vec<i64> = often.into_iter().flatten().collect();
    let page_read = async {
        match often.iter().min() {
            Some(since) if often.len() >= 2 => {
                let limit = (RECENT_RUNS_A_PAGE_JOB * often.len()) as i64;
                // Only a shortcut: the lookups answer without it.
                Ok::<_, V1Error>(match state.store.last_runs_since(*since, limit).await {
                    Ok(newest) => newest,
                    Err(e) => {
                        tracing::warn!(error = %e, "reading the runs of the last seconds failed; looking up each job");
                        None
                    }
                })
            }
            _ => Ok(None),
        }
    };
    // A few stretches at a time, as the lookups below.
    let wanted_ref = &wanted;
    let stretches = futures::stream::iter(quiet_stretches(wanted_ref))
        .map(|stretch| async move {
            let names: Vec<&JobName> = wanted_ref[stretch.clone()]
                .iter()
                .flatten()
                .map(|(name, _)| name)
                .collect();
            let (Some(first), Some(last)) = (names.iter().min(), names.iter().max()) else {
                return Ok::<_, V1Error>((stretch, None));
            };
            let limit = (RUNS_A_QUIET_JOB * names.len()) as i64;
            // Only a shortcut, as the page read.
            let newest = match state.store.last_runs_between(first, last, limit).await {
                Ok(newest) => newest,
                Err(e) => {
                    tracing::warn!(error = %e, "reading a stretch of quiet jobs' runs failed; looking up each job");
                    None
                }
            };
            Ok((stretch, newest))
        })
        .buffer_unordered(LAST_RUN_LOOKUPS)
        .try_collect::<Vec<_>>();
    let (recent, stretches) = futures::try_join!(page_read, stretches)?;
    // `Some(run)`: known.
    let mut known: Vec<Option<Option<LogRecord>>> = vec![None; wanted.len()];
    if let Some(mut recent) = recent {
        // Whatever job of the page ran since then: its newest run is there.
        for (i, w) in wanted.iter().enumerate() {
            if let Some(run) = w
                .as_ref()
                .and_then(|(name, _)| recent.remove(name.as_str()))
            {
                known[i] = Some(Some(run));
            }
        }
    }
    for (stretch, newest) in stretches {
        let Some(mut newest) = newest else { continue };
        for i in stretch {
            if let Some((name, _)) = &wanted[i] {
                known[i] = Some(newest.remove(name.as_str()));
            }
        }
    }
    // The rest one by one.
    futures::stream::iter(wanted.into_iter().zip(known))
        .map(|(wanted, known)| async move {
            Ok::<_, V1Error>(match (known, wanted) {
                (Some(run), _) => run,
                (None, Some((name, from))) => state.store.last_run(&name, from).await?,
                (None, None) => None,
            })
        })
        .buffered(LAST_RUN_LOOKUPS)
        .try_collect()
        .await
}

/// The page's jobs whose [`PAGE_RECENT_TICKS`]th newest tick is at most this
/// old have their newest runs read together ([`Store::last_runs_since`]):
/// one read of every run of the fleet in the last seconds, instead of a
/// lookup each (the Mongo-protocol server of the tests and benchmarks
/// answers a lookup in about a millisecond, one at a time, and sends a
/// run in about 70 µs: with 100 jobs a second, a page of jobs that fire
/// every second takes about 15 ms instead of 50).
///
/// [`Store::last_runs_since`]: crate::store::Store::last_runs_since
const PAGE_READ_SPAN: std::time::Duration = std::time::Duration::from_secs(3);

/// Ticks of a job's newest that the read of the page's recent runs covers:
/// the newest may still be running, or its record on its way (the worker
/// writes records in batches); the one before it is most likely on record.
/// A job whose runs the read misses is looked up alone.
const PAGE_RECENT_TICKS: usize = 2;

/// Runs a job the page read is for may have, on average, in its span: more
/// and the read is not worth it (the fleet runs many more jobs than those);
/// the store then skips it for a while.
const RECENT_RUNS_A_PAGE_JOB: usize = 8;

/// Runs a job that did not fire lately has on average, at most, for its
/// stretch's runs to be read in one go ([`quiet_stretches`]). A stretch of
/// jobs with more (a long history of hourly runs) costs that one read of at
/// most this many records a job, without output, before its lookups.
const RUNS_A_QUIET_JOB: usize = 4;

/// The stretches (index ranges, at least two long) of consecutive jobs that
/// did not fire lately (`recent_from` is `None`). Their newest runs are read
/// with one range read of names each: a page comes in name order, so each
/// stretch spans names of its own jobs only (and of jobs deleted since, whose
/// runs are left out), and few runs if its jobs fire rarely.
fn quiet_stretches(wanted: &[Option<Wanted>]) -> Vec<std::ops::Range<usize>> {
    let mut stretches = Vec::new();
    let mut start = 0;
    for (i, w) in wanted.iter().enumerate() {
        let quiet = matches!(w, Some((_, None)));
        if !quiet {
            if i - start >= 2 {
                stretches.push(start..i);
            }
            start = i + 1;
        }
    }
    if wanted.len().saturating_sub(start) >= 2 {
        stretches.push(start..wanted.len());
    }
    stretches
}

/// How many of a job's newest ticks [`recent_from`] covers for a lookup of
/// its own: the newest may
/// still be running, or its record on its way (the worker writes records in
/// batches), the one before it is most likely on record.
const RECENT_TICKS: usize = 3;

/// Where [`crate::store::Store::last_run`] looks first for the job's newest
/// run (a `planTime`, epoch ms): from its `nth` newest tick in
/// the last [`crate::store::LAST_RUN_RECENT`], or from the start of that
/// span if it had fewer ticks in it. `None`: no tick in that span (or a
/// paused job), its newest run is not likely to be recent.
///
/// A narrow range matters: the Mongo-protocol server of the tests and
/// benchmarks reads every run in the range before it picks the newest.
fn recent_from(spec: &JobSpec, now: chrono::DateTime<chrono::Utc>, nth: usize) -> Option<i64> {
    recent_ticks(spec, now)?.look_from(nth)
}

/// A job's ticks in the last [`crate::store::LAST_RUN_RECENT`], oldest
/// first, and that span's start (epoch ms).
struct RecentTicks {
    ticks: Vec<i64>,
    start: i64,
}

/// `None` for a paused job (or one that does not parse) and one with no
/// tick ahead of the span's start.
fn recent_ticks(spec: &JobSpec, now: chrono::DateTime<chrono::Utc>) -> Option<RecentTicks> {
    let job = Job::from_spec(spec).ok().filter(|j| !j.paused)?;
    let recent = chrono::Duration::from_std(crate::store::LAST_RUN_RECENT).unwrap_or_default();
    let start = now - recent;
    let (ticks, _) = due_ticks(&job.schedule, job.schedule.next_fire(start)?, now, recent);
    Some(RecentTicks {
        ticks: ticks.iter().map(|t| t.timestamp_millis()).collect(),
        start: start.timestamp_millis(),
    })
}

impl RecentTicks {
    /// [`recent_from`] of these ticks.
    fn look_from(&self, nth: usize) -> Option<i64> {
        match self.ticks.len() {
            0 => None,
            n if n >= nth => Some(self.ticks[n - nth]),
            _ => Some(self.start),
        }
    }
}

/// Last-run lookups of a page in flight at once.
const LAST_RUN_LOOKUPS: usize = 8;

/// Jobs sorted by name, a page at a time. `total` counts every job matching
/// `prefix`; a deep `page` costs a keys-only read of the jobs before it, so
/// to walk the whole list pass the last name of a page as `after` instead.
#[utoipa::path(get, path = "/jobs", tag = "jobs",
    params(("prefix" = Option<String>, Query, description = "only names starting with this"),
           ("after" = Option<String>, Query, description = "only names after this one (a cursor: the last name of the previous page; cheap however deep); `page` then counts from it"),
           ("page" = Option<u64>, Query, description = "1-based page"),
           ("pageSize" = Option<u64>, Query, description = "1..=500, default 50")),
    responses((status = 200, body = Page<JobView>), (status = 400, body = ApiError)))]
async fn list_jobs(
    State(state): State<AppState>,
    caller: Caller,
    q: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> V1Result<Json<Page<JobView>>> {
    let q = query(q)?;
    let paging = paging(&q)?;
    let prefix = q.get("prefix").map(String::as_str).unwrap_or_default();
    let after = match q.get("after").filter(|a| !a.is_empty()) {
        None => None,
        Some(a) => Some(JobName::parse(a).map_err(|e| V1Error::BadRequest {
            field: Some("after".into()),
            message: e.reason,
        })?),
    };
    let window = JobWindow {
        prefix,
        after: after.as_ref(),
        skip: paging.skip(),
        take: paging.size,
    };
    let (jobs, total) = state.store.job_page(&window).await?;
    let names: Vec<JobName> = jobs
        .iter()
        .filter_map(|j| JobName::parse(&j.name).ok())
        .collect();
    let (running, last_runs) = tokio::try_join!(
        async { Ok(state.store.running_counts_of(&names).await?) },
        last_runs(&state, &jobs),
    )?;
    let mut items: Vec<JobView> = jobs
        .into_iter()
        .zip(last_runs)
        .map(|(spec, last_run)| {
            let n = running.get(&spec.name).copied().unwrap_or(0);
            JobView {
                last_run,
                ..view(spec, n)
            }
        })
        .collect();
    flag_unmatched(&state, &mut items).await;
    // Last: the lookups above read the job as it is.
    for v in &mut items {
        caller.hide_secrets(&mut v.spec);
    }
    Ok(Json(paging.answer(items, total)))
}

/// One job. Its `ETag` names this version of it, for `If-Match` on `PUT`.
#[utoipa::path(get, path = "/jobs/{name}", tag = "jobs", params(("name" = String, Path)),
    responses((status = 200, body = JobView, headers(("ETag" = String, description = "this version of the job"))),
              (status = 400, body = ApiError), (status = 404, body = ApiError)))]
async fn get_job(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> V1Result<Response> {
    let name = name_of(&name)?;
    let (spec, version) = state
        .store
        .get_job_versioned(&name)
        .await?
        .ok_or_else(|| no_such_job(&name))?;
    let mut v = view(spec, state.store.running_count(&name).await?);
    v.last_run = state
        .store
        .last_run(
            &name,
            recent_from(&v.spec, chrono::Utc::now(), RECENT_TICKS),
        )
        .await?;
    flag_unmatched(&state, std::slice::from_mut(&mut v)).await;
    caller.hide_secrets(&mut v.spec);
    Ok((
        [(axum::http::header::ETAG, format!("\"{version}\""))],
        Json(v),
    )
        .into_response())
}

/// What a `PUT` may require of the job it writes (RFC 9110 13.1: both
/// headers may be given; both must hold).
struct Precondition {
    /// `If-Match: "<version>"`: that the job is at one of these versions.
    if_match: Option<Vec<i64>>,
    /// `If-None-Match`: `*`, that there is no such job; a list of versions,
    /// that the job is at none of them.
    if_none_match: Option<NoneMatch>,
}

impl Precondition {
    /// Fails with 412 unless `If-Match` is absent or names `version`, the
    /// job's version now (`None`: no such job).
    fn check_if_match(&self, name: &JobName, version: Option<i64>) -> V1Result<()> {
        match &self.if_match {
            Some(versions) if !version.is_some_and(|v| versions.contains(&v)) => {
                Err(if_match_failed(name))
            }
            _ => Ok(()),
        }
    }
}

fn if_match_failed(name: &JobName) -> V1Error {
    V1Error::PreconditionFailed {
        field: None,
        message: format!(
            "job {name} was changed or deleted since it was read (If-Match); \
             read it again and reapply your change"
        ),
    }
}

enum NoneMatch {
    Absent,
    NotAt(Vec<i64>),
}

/// The versions of an ETag list: quoted numbers as GET gives them (bare
/// numbers and weak `W/` tags are taken too), `None` if any is not one.
fn etag_list(raw: &str) -> Option<Vec<i64>> {
    raw.split(',')
        .map(|t| {
            let t = t.trim();
            let t = t.strip_prefix("W/").unwrap_or(t);
            let bare = t
                .strip_prefix('"')
                .and_then(|t| t.strip_suffix('"'))
                .unwrap_or(t);
            (!bare.is_empty() && bare.len() <= 18 && bare.bytes().all(|b| b.is_ascii_digit()))
                .then(|| bare.parse().ok())
                .flatten()
        })
        .collect()
}

fn precondition(headers: &axum::http::HeaderMap) -> V1Result<Precondition> {
    use axum::http::header::{IF_MATCH, IF_NONE_MATCH};
    let bad = |field: &str, v: &axum::http::HeaderValue| V1Error::BadRequest {
        field: Some(field.into()),
        message: format!(
            "{v:?} is not `*` nor a list of ETags of this API (quoted numbers from GET)"
        ),
    };
    let if_match = match headers.get(IF_MATCH) {
        None => None,
        Some(v) if v.as_bytes() == b"*" => {
            return Err(V1Error::BadRequest {
                field: Some("If-Match".into()),
                message: "`*` is not supported: give the ETag from GET".into(),
            })
        }
        Some(v) => Some(
            v.to_str()
                .ok()
                .and_then(etag_list)
                .ok_or_else(|| bad("If-Match", v))?,
        ),
    };
    let if_none_match = match headers.get(IF_NONE_MATCH) {
        None => None,
        Some(v) if v.as_bytes().trim_ascii() == b"*" => Some(NoneMatch::Absent),
        Some(v) => Some(NoneMatch::NotAt(
            v.to_str()
                .ok()
                .and_then(etag_list)
                .ok_or_else(|| bad("If-None-Match", v))?,
        )),
    };
    Ok(Precondition {
        if_match,
        if_none_match,
    })
}

/// Creates (201) or replaces (200) a job. The path names the job; a `name`
/// in the body must agree. With `If-None-Match: *` it only creates, and with
/// `If-Match: <ETag of GET>` it only replaces that version; otherwise the
/// job is left as it is and the answer is 412.
#[utoipa::path(put, path = "/jobs/{name}", tag = "jobs",
    params(("name" = String, Path),
           ("If-None-Match" = Option<String>, Header, pattern = r#"^(\*|(W/)?("[0-9]{1,18}"|[0-9]{1,18})( *, *(W/)?("[0-9]{1,18}"|[0-9]{1,18}))*)$"#, description = "`*`: create only, never replace; or ETags: only if the job is at none of them"),
           ("If-Match" = Option<String>, Header, pattern = r#"^("[0-9]{1,18}"|[0-9]{1,18})$"#, description = "the job's `ETag` from `GET`: replace only that version")),
    request_body(content = JobSpec, description = "the job; `name` may be left out"),
    responses((status = 200, body = JobView, description = "replaced"), (status = 201, body = JobView, description = "created"),
              (status = 400, body = ApiError), (status = 412, body = ApiError, description = "`If-None-Match: *` and the job exists, or `If-Match` and it changed"),
              (status = 422, body = ApiError, description = "invalid job; `field` names the field")))]
async fn put_job(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    headers: axum::http::HeaderMap,
    body: Bytes,
) -> V1Result<Response> {
    let precondition = precondition(&headers)?;
    let name = name_of(&name)?;
    let mut object = match serde_json::from_slice::<Value>(&body) {
        Ok(Value::Object(map)) => map,
        Ok(_) => {
            return Err(V1Error::BadRequest {
                field: None,
                message: "the body must be a JSON object".into(),
            })
        }
        Err(e) => {
            return Err(V1Error::BadRequest {
                field: None,
                message: format!("the body is not valid JSON: {e}"),
            })
        }
    };
    match object.get("name") {
        None => {
            object.insert("name".into(), Value::String(name.to_string()));
        }
        Some(Value::String(n)) if n == name.as_str() => {}
        Some(other) => {
            return Err(V1Error::Unprocessable {
                field: "name".into(),
                message: format!("{other} differs from the job name in the path ({name})"),
            })
        }
    }
    let (job, unknown) =
        Job::parse_json(&Value::Object(object).to_string()).map_err(V1Error::Invalid)?;
    job.to_spec()
        .check_not_redacted()
        .map_err(V1Error::Invalid)?;
    if let Some(field) = unknown.into_iter().next() {
        // A typo (`timeoutSecond`) must not be saved as if it were not there.
        return Err(V1Error::Unprocessable {
            field: field.clone(),
            message: format!("{field} is not a job field"),
        });
    }
    let before = if precondition.if_match.is_none() && precondition.if_none_match.is_none() {
        state.store.save_job(&job).await?
    } else {
        let current = state.store.get_job_versioned(&name).await?;
        let version = current.as_ref().map(|(_, v)| *v);
        let failed = |message: String| V1Error::PreconditionFailed {
            field: None,
            message,
        };
        precondition.check_if_match(&name, version)?;
        match (&precondition.if_none_match, version) {
            (Some(NoneMatch::Absent), Some(_)) => {
                return Err(V1Error::PreconditionFailed {
                    field: Some("name".into()),
                    message: format!("a job named {name} already exists"),
                })
            }
            (Some(NoneMatch::NotAt(versions)), Some(v)) if versions.contains(&v) => {
                return Err(failed(format!(
                    "job {name} is at a version If-None-Match names"
                )))
            }
            _ => {}
        }
        // Written only if nothing changed since the read.
        let written = match version {
            Some(v) => state.store.replace_job_at(&job, v).await?,
            None => state.store.create_job(&job).await?,
        };
        if !written {
            return Err(failed(format!(
                "job {name} changed while this request was checked; try again"
            )));
        }
        current.map(|(spec, _)| spec)
    };
    let created = before.is_none();
    tracing::info!(job = %job.name, created, by = %caller.name(), "job saved (api)");
    state
        .audit
        .record(
            &caller,
            "job.save",
            name.as_str(),
            before.map(|b| json!(b)),
            Some(json!(job.to_spec())),
        )
        .await;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    let mut v = view(job.to_spec(), 0);
    flag_unmatched(&state, std::slice::from_mut(&mut v)).await;
    Ok((status, Json(v)).into_response())
}

/// Deletes a job; with `If-Match: <ETag of GET>` only that version (412 if
/// it changed since).
#[utoipa::path(delete, path = "/jobs/{name}", tag = "jobs",
    params(("name" = String, Path),
           ("If-Match" = Option<String>, Header, pattern = r#"^("[0-9]{1,18}"|[0-9]{1,18})$"#, description = "the job's `ETag` from `GET`: delete only that version")),
    responses((status = 204), (status = 400, body = ApiError), (status = 404, body = ApiError),
              (status = 412, body = ApiError, description = "`If-Match` and the job changed or was deleted since")))]
async fn delete_job(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    headers: axum::http::HeaderMap,
) -> V1Result<StatusCode> {
    let precondition = precondition(&headers)?;
    let name = name_of(&name)?;
    let deleted = if precondition.if_match.is_none() {
        state.store.delete_job(&name).await?
    } else {
        let version = state.store.get_job_versioned(&name).await?.map(|(_, v)| v);
        precondition.check_if_match(&name, version)?;
        // Deleted only at that version: changed in between, it is a 412 too.
        Some(
            state
                .store
                .delete_job_at(&name, version)
                .await?
                .ok_or_else(|| if_match_failed(&name))?,
        )
    };
    match deleted {
        Some(before) => {
            tracing::info!(job = %name, by = %caller.name(), "job deleted (api)");
            state
                .audit
                .record(
                    &caller,
                    "job.delete",
                    name.as_str(),
                    Some(json!(before)),
                    None,
                )
                .await;
            Ok(StatusCode::NO_CONTENT)
        }
        None => Err(no_such_job(&name)),
    }
}

async fn existing(state: &AppState, name: &str) -> V1Result<JobName> {
    let name = name_of(name)?;
    match state.store.get_job(&name).await? {
        Some(_) => Ok(name),
        None => Err(no_such_job(&name)),
    }
}

#[utoipa::path(post, path = "/jobs/{name}/kill", tag = "jobs", params(("name" = String, Path)),
    responses((status = 202, description = "every run in progress is being killed"), (status = 404, body = ApiError)))]
async fn kill_job(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> V1Result<StatusCode> {
    let name = existing(&state, &name).await?;
    state.store.request_kill(&name).await?;
    state
        .audit
        .record(&caller, "job.kill", name.as_str(), None, None)
        .await;
    Ok(StatusCode::ACCEPTED)
}

#[utoipa::path(post, path = "/jobs/{name}/run", tag = "jobs", params(("name" = String, Path)),
    responses((status = 202, description = "`{requestedAt, request}`: one run now, subject to overlap"), (status = 404, body = ApiError),
        (status = 409, description = "the job's selector matches no live worker: nobody could run it", body = ApiError)))]
async fn run_job(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> V1Result<(StatusCode, Json<Value>)> {
    let name = name_of(&name)?;
    let (requested_at, request) = match state.store.request_run(&name).await? {
        RunRequest::Made {
            requested_at,
            request,
        } => (requested_at, request),
        RunRequest::NoSuchJob => return Err(no_such_job(&name)),
        RunRequest::NobodyMatches => return Err(V1Error::Conflict(nobody_could_run(&name))),
    };
    let answer = json!({ "requestedAt": requested_at, "request": request });
    state
        .audit
        .record(
            &caller,
            "job.run",
            name.as_str(),
            None,
            Some(answer.clone()),
        )
        .await;
    Ok((StatusCode::ACCEPTED, Json(answer)))
}

async fn set_paused(
    state: AppState,
    caller: Caller,
    name: String,
    paused: bool,
) -> V1Result<Json<JobView>> {
    let name = name_of(&name)?;
    let (was, spec) = state
        .store
        .set_paused(&name, paused)
        .await?
        .ok_or_else(|| no_such_job(&name))?;
    state
        .audit
        .record_pause(&caller, name.as_str(), was, paused)
        .await;
    let mut v = view(spec, 0);
    caller.hide_secrets(&mut v.spec);
    Ok(Json(v))
}

#[utoipa::path(post, path = "/jobs/{name}/pause", tag = "jobs", params(("name" = String, Path)),
    responses((status = 200, body = JobView), (status = 404, body = ApiError), (status = 409, body = ApiError)))]
async fn pause_job(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> V1Result<Json<JobView>> {
    set_paused(state, caller, name, true).await
}

#[utoipa::path(post, path = "/jobs/{name}/resume", tag = "jobs", params(("name" = String, Path)),
    responses((status = 200, body = JobView), (status = 404, body = ApiError), (status = 409, body = ApiError)))]
async fn resume_job(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> V1Result<Json<JobView>> {
    set_paused(state, caller, name, false).await
}

/// A job's runs, newest first, without their output (see the run itself).
#[utoipa::path(get, path = "/jobs/{name}/runs", tag = "runs",
    params(("name" = String, Path), ("page" = Option<u64>, Query), ("pageSize" = Option<u64>, Query)),
    responses((status = 200, body = Page<LogRecord>, description = "newest first, without output"), (status = 400, body = ApiError)))]
async fn list_runs(
    State(state): State<AppState>,
    Path(name): Path<String>,
    q: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> V1Result<Json<Page<LogRecord>>> {
    let name = name_of(&name)?;
    let paging = paging(&query(q)?)?;
    let total = state.store.count_job_logs(&name).await?;
    let items = state
        .store
        .job_logs_without_output(&name, paging.skip(), paging.size as i64)
        .await?;
    Ok(Json(paging.answer(items, total)))
}

/// One run with its inline output (the whole output is `GET /job/output`).
#[utoipa::path(get, path = "/jobs/{name}/runs/{run_id}", tag = "runs",
    params(("name" = String, Path), ("run_id" = String, Path)),
    responses((status = 200, body = LogRecord), (status = 404, body = ApiError)))]
async fn get_run(
    State(state): State<AppState>,
    Path((name, run_id)): Path<(String, String)>,
) -> V1Result<Json<LogRecord>> {
    let name = name_of(&name)?;
    state
        .store
        .run_record(&name, &run_id)
        .await?
        .map(Json)
        .ok_or_else(|| V1Error::NotFound(format!("no run {run_id:?} of job {name}")))
}

/// Live workers by id. `lastSeen` is the last renewal of the worker's
/// registration lease (to the second); `running` counts the running marks
/// naming the worker (runs claimed at their tick, and other runs once they
/// have gone on for a second), so it leaves out short runs; `draining` is
/// present while the worker shuts down.
#[utoipa::path(get, path = "/workers", tag = "workers", responses((status = 200, body = Vec<WorkerInfo>)))]
async fn list_workers(State(state): State<AppState>) -> V1Result<Json<Vec<WorkerInfo>>> {
    let mut workers = state.store.worker_infos().await?;
    workers.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(Json(workers))
}

/// The next `count` (1..=50, default 5) fire times of a cron expression in a
/// time zone, for the job form to show while the operator types.
#[utoipa::path(get, path = "/cron/preview", tag = "jobs",
    params(("expr" = String, Query, min_length = 1), ("timezone" = Option<String>, Query), ("count" = Option<usize>, Query, minimum = 1, maximum = 50, description = "1..=50, default 5")),
    responses((status = 200, description = "`{fireTimes, fireTimesUtc}`"), (status = 400, body = ApiError), (status = 422, body = ApiError)))]
async fn preview(
    q: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> V1Result<Json<Value>> {
    let q = query(q)?;
    let expr = q.get("expr").ok_or_else(|| V1Error::BadRequest {
        field: Some("expr".into()),
        message: "query parameter is missing".into(),
    })?;
    let count = match q.get("count") {
        None => 5,
        Some(c) => c
            .parse::<usize>()
            .ok()
            .filter(|c| (1..=50).contains(c))
            .ok_or_else(|| V1Error::BadRequest {
                field: Some("count".into()),
                message: format!("{c:?} is not a whole number in 1..=50"),
            })?,
    };
    let mut schedule = CronSchedule::parse(expr).map_err(|e| {
        V1Error::Invalid(JobError {
            field: "cronExpr".into(),
            reason: e.to_string(),
        })
    })?;
    if let Some(zone) = q.get("timezone").filter(|z| !z.is_empty()) {
        let tz: chrono_tz::Tz = zone.parse().map_err(|_| {
            V1Error::Invalid(JobError {
                field: "timezone".into(),
                reason: format!("{zone:?} is not an IANA time zone name"),
            })
        })?;
        schedule = schedule.in_timezone(tz);
    }
    let times = schedule.upcoming(chrono::Utc::now(), count);
    Ok(Json(json!({
        "fireTimes": times.iter().map(|t| t.timestamp_millis()).collect::<Vec<_>>(),
        "fireTimesUtc": times.iter().map(|t| t.to_rfc3339()).collect::<Vec<_>>(),
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_jobs_newest_run_is_looked_for_from_its_nth_newest_tick_lately() {
        use chrono::TimeZone;
        let at = |s: u32, ms: u32| {
            chrono::Utc
                .with_ymd_and_hms(2026, 11, 29, 12, 0, s)
                .unwrap()
                .checked_add_signed(chrono::Duration::milliseconds(ms.into()))
                .unwrap()
        };
        let ms = |t: chrono::DateTime<chrono::Utc>| t.timestamp_millis();
        let every_second = JobSpec::shell("a", "true", "* * * * * * *");
        assert_eq!(
            recent_from(&every_second, at(30, 500), RECENT_TICKS),
            Some(ms(at(28, 0)))
        );
        // A tick at this very moment counts.
        assert_eq!(
            recent_from(&every_second, at(30, 0), RECENT_TICKS),
            Some(ms(at(28, 0)))
        );
        // The page read: from the second newest.
        assert_eq!(
            recent_from(&every_second, at(30, 500), PAGE_RECENT_TICKS),
            Some(ms(at(29, 0)))
        );
        // Fewer ticks lately than that: from the start of the span.
        let every_ten = JobSpec::shell("b", "true", "*/10 * * * * * *");
        assert_eq!(
            recent_from(&every_ten, at(35, 500), RECENT_TICKS),
            Some(ms(at(35, 500)) - crate::store::LAST_RUN_RECENT.as_millis() as i64)
        );
        // No tick lately, or paused: none.
        let hourly = JobSpec::shell("c", "true", "0 0 * * * * *");
        assert_eq!(recent_from(&hourly, at(30, 0), RECENT_TICKS), None);
        let paused = JobSpec {
            paused: true,
            ..every_second.clone()
        };
        assert_eq!(recent_from(&paused, at(30, 500), RECENT_TICKS), None);
    }

    #[test]
    fn quiet_stretches_are_runs_of_two_or_more_jobs_not_fired_lately() {
        let job = |name: &str, from: Option<i64>| Some((JobName::parse(name).unwrap(), from));
        let (quiet, lately) = (None, Some(1));
        let wanted = [
            job("a", quiet),
            job("b", quiet),
            job("c", lately),
            job("d", quiet),
            job("e", lately),
            None,
            job("f", quiet),
            job("g", quiet),
            job("h", quiet),
        ];
        assert_eq!(quiet_stretches(&wanted), vec![0..2, 6..9]);
        assert_eq!(
            quiet_stretches(&wanted[..1]),
            Vec::<std::ops::Range<usize>>::new()
        );
        assert_eq!(quiet_stretches(&[]), Vec::<std::ops::Range<usize>>::new());
        assert_eq!(
            quiet_stretches(&wanted[2..5]),
            Vec::<std::ops::Range<usize>>::new()
        );
    }

    #[test]
    fn etag_lists_are_quoted_or_bare_numbers() {
        assert_eq!(etag_list(r#""5""#), Some(vec![5]));
        assert_eq!(etag_list(r#"5, W/"7" ,"9""#), Some(vec![5, 7, 9]));
        for bad in ["", r#""5"#, "abc", r#""""#, "5,", "1234567890123456789"] {
            assert_eq!(etag_list(bad), None, "{bad:?}");
        }
    }
}
