//! The legacy HTTP API of the original system, kept exactly: form-encoded
//! requests, HTTP 200 with a JSON envelope `{errno, msg, data}` whose `errno`
//! is -1 on any error.

use std::collections::HashMap;

use axum::extract::rejection::{FormRejection, QueryRejection};
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Form, Json, Router};
use gdts_common::limits::{DEFAULT_LOG_PAGE, MAX_LOG_PAGE};
use gdts_common::response::Envelope;
use gdts_common::{Job, JobError, JobName};
use serde::Serialize;

use crate::auth::Caller;
use crate::state::AppState;
use crate::store::{RunRequest, Store, StoreError};
use serde_json::json;

/// The original system's endpoints, and the probes.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/job/save", post(save_job))
        .route("/job/delete", post(delete_job))
        .route("/job/kill", post(kill_job))
        .route("/job/run", post(run_job))
        .route("/job/pause", post(pause_job))
        .route("/job/resume", post(resume_job))
        .route("/job/list", get(list_jobs))
        .route("/job/log", get(job_log))
        .route("/worker/list", get(list_workers))
        .route("/healthz", get(healthz))
        .route("/livez", get(livez))
        .route("/job/output", get(crate::outputs::job_output))
}

/// Why a legacy request failed. The caller's mistakes carry a message that
/// says what is wrong; our own failures are logged and reported opaquely.
#[derive(Debug, thiserror::Error)]
enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("storage unavailable, try again")]
    Store(#[from] StoreError),
}

impl From<JobError> for ApiError {
    fn from(e: JobError) -> Self {
        ApiError::BadRequest(e.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if let ApiError::Store(cause) = &self {
            tracing::error!(error = %cause, "request failed in a backing store");
        }
        // Legacy clients read `errno`, not the status code.
        (StatusCode::OK, Json(Envelope::error(self.to_string()))).into_response()
    }
}

type ApiResult<T> = Result<Json<Envelope<T>>, ApiError>;

fn ok<T: Serialize>(data: T) -> ApiResult<T> {
    Ok(Json(Envelope::ok(data)))
}

type Fields = HashMap<String, String>;

fn form_fields(form: Result<Form<Fields>, FormRejection>) -> Result<Fields, ApiError> {
    form.map(|Form(f)| f).map_err(|e| {
        ApiError::BadRequest(format!(
            "request body must be form-encoded (application/x-www-form-urlencoded): {}",
            e.body_text()
        ))
    })
}

fn required<'a>(fields: &'a Fields, name: &str) -> Result<&'a str, ApiError> {
    fields
        .get(name)
        .map(String::as_str)
        .ok_or_else(|| ApiError::BadRequest(format!("{name}: form field is missing")))
}

fn job_name(fields: &Fields) -> Result<JobName, ApiError> {
    Ok(JobName::parse(required(fields, "name")?)?)
}

async fn save_job(
    State(state): State<AppState>,
    caller: Caller,
    form: Result<Form<Fields>, FormRejection>,
) -> ApiResult<Option<gdts_common::JobSpec>> {
    let fields = form_fields(form)?;
    let job = Job::from_json(required(&fields, "job")?)?;
    job.to_spec().check_not_redacted()?;
    let previous = state.store.save_job(&job).await?;
    tracing::info!(job = %job.name, cron = job.schedule.as_str(), by = %caller.name(), "job saved");
    state
        .audit
        .record(
            &caller,
            "job.save",
            job.name.as_str(),
            previous.as_ref().map(|p| json!(p)),
            Some(json!(job.to_spec())),
        )
        .await;
    ok(previous)
}

async fn delete_job(
    State(state): State<AppState>,
    caller: Caller,
    form: Result<Form<Fields>, FormRejection>,
) -> ApiResult<Option<gdts_common::JobSpec>> {
    let name = job_name(&form_fields(form)?)?;
    let deleted = state.store.delete_job(&name).await?;
    tracing::info!(job = %name, existed = deleted.is_some(), by = %caller.name(), "job deleted");
    if let Some(before) = &deleted {
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
    }
    ok(deleted)
}

async fn kill_job(
    State(state): State<AppState>,
    caller: Caller,
    form: Result<Form<Fields>, FormRejection>,
) -> ApiResult<Option<()>> {
    let name = job_name(&form_fields(form)?)?;
    state.store.request_kill(&name).await?;
    tracing::info!(job = %name, by = %caller.name(), "kill requested");
    state
        .audit
        .record(&caller, "job.kill", name.as_str(), None, None)
        .await;
    ok(None)
}

/// One immediate run, subject to the job's overlap policy; logged as manual.
async fn run_job(
    State(state): State<AppState>,
    caller: Caller,
    form: Result<Form<Fields>, FormRejection>,
) -> ApiResult<serde_json::Value> {
    let name = job_name(&form_fields(form)?)?;
    let (requested_at, request) = match state.store.request_run(&name).await? {
        RunRequest::Made {
            requested_at,
            request,
        } => (requested_at, request),
        RunRequest::NoSuchJob => {
            return Err(ApiError::BadRequest(format!("name: no job named {name:?}")))
        }
        RunRequest::NobodyMatches => {
            return Err(ApiError::BadRequest(crate::api_v1::nobody_could_run(&name)))
        }
    };
    tracing::info!(job = %name, request = %request, by = %caller.name(), "run requested");
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
    ok(answer)
}

async fn pause_job(
    State(state): State<AppState>,
    caller: Caller,
    form: Result<Form<Fields>, FormRejection>,
) -> ApiResult<gdts_common::JobSpec> {
    set_paused(state, caller, form, true).await
}

async fn resume_job(
    State(state): State<AppState>,
    caller: Caller,
    form: Result<Form<Fields>, FormRejection>,
) -> ApiResult<gdts_common::JobSpec> {
    set_paused(state, caller, form, false).await
}

async fn set_paused(
    state: AppState,
    caller: Caller,
    form: Result<Form<Fields>, FormRejection>,
    paused: bool,
) -> ApiResult<gdts_common::JobSpec> {
    let name = job_name(&form_fields(form)?)?;
    match state.store.set_paused(&name, paused).await? {
        Some((was, spec)) => {
            tracing::info!(job = %name, paused, by = %caller.name(), "job paused state changed");
            state
                .audit
                .record_pause(&caller, name.as_str(), was, paused)
                .await;
            let mut spec = spec;
            caller.hide_secrets(&mut spec);
            ok(spec)
        }
        None => Err(ApiError::BadRequest(format!("name: no job named {name:?}"))),
    }
}

/// Every job, in the envelope, streamed page by page: 100,000 jobs are
/// never one etcd response nor one buffer. The first page is read before
/// answering, so an unreachable etcd still gets an error envelope; a failure
/// on a later page can only cut the body short (the client sees broken JSON,
/// never a shorter list).
async fn list_jobs(State(store): State<Store>, caller: Caller) -> Result<Response, ApiError> {
    use futures::{StreamExt, TryStreamExt};
    let redact = !caller.sees_secrets();
    let as_seen = move |mut page: Vec<gdts_common::JobSpec>| {
        if redact {
            page.iter_mut()
                .for_each(gdts_common::JobSpec::redact_secrets);
        }
        page
    };
    let mut pages = store.job_pages();
    let first = as_seen(pages.next_page().await?.unwrap_or_default());
    let items = futures::stream::try_unfold(
        (pages, Some(first), true),
        move |(mut pages, pending, first_item)| async move {
            let page = match pending {
                Some(page) => page,
                None => match pages.next_page().await? {
                    Some(page) => as_seen(page),
                    None => return Ok(None),
                },
            };
            let chunk = json_items(&page, first_item);
            let first_item = first_item && page.is_empty();
            Ok::<_, StoreError>(Some((chunk, (pages, None, first_item))))
        },
    )
    .map_err(|e| {
        tracing::error!(error = %e, "job list cut short by a backing store");
        std::io::Error::other(e)
    });
    let (head, tail) = envelope_around_data();
    let body = futures::stream::once(async move { Ok(head) })
        .chain(items)
        .chain(futures::stream::once(async move { Ok(tail) }));
    Ok((
        [(
            axum::http::header::CONTENT_TYPE,
            axum::http::HeaderValue::from_static("application/json"),
        )],
        axum::body::Body::from_stream(body),
    )
        .into_response())
}

/// The success envelope around a JSON array, as `Json(Envelope::ok(vec))`
/// writes it: the bytes before the array's items and after them.
fn envelope_around_data() -> (axum::body::Bytes, axum::body::Bytes) {
    let empty = serde_json::to_string(&Envelope::ok([(); 0])).expect("serializes");
    let (head, tail) = empty
        .split_once("[]")
        .expect("the envelope holds the empty array");
    (
        axum::body::Bytes::from(format!("{head}[")),
        axum::body::Bytes::from(format!("]{tail}")),
    )
}

/// Items of a JSON array, comma-separated, with a leading comma unless they
/// are the first of the array.
fn json_items<T: Serialize>(items: &[T], first_of_array: bool) -> axum::body::Bytes {
    let mut out = Vec::new();
    for (i, item) in items.iter().enumerate() {
        if i > 0 || !first_of_array {
            out.push(b',');
        }
        serde_json::to_writer(&mut out, item).expect("a job spec serializes");
    }
    out.into()
}

fn query_number(fields: &Fields, name: &str, default: i64, min: i64) -> Result<i64, ApiError> {
    match fields.get(name).map(|v| v.trim()).filter(|v| !v.is_empty()) {
        None => Ok(default),
        Some(v) => match v.parse::<i64>() {
            Ok(n) if n >= min => Ok(n),
            _ => Err(ApiError::BadRequest(format!(
                "{name}: {v:?} is not a whole number >= {min}"
            ))),
        },
    }
}

async fn job_log(
    State(store): State<Store>,
    query: Result<Query<Fields>, QueryRejection>,
) -> ApiResult<Vec<gdts_common::log_record::LogRecord>> {
    let Query(fields) = query.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let name = job_name(&fields)?;
    let skip = query_number(&fields, "skip", 0, 0)?;
    let limit = query_number(&fields, "limit", DEFAULT_LOG_PAGE, 1)?.min(MAX_LOG_PAGE);
    ok(store.job_logs(&name, skip as u64, limit).await?)
}

async fn list_workers(State(store): State<Store>) -> ApiResult<Vec<String>> {
    ok(store.list_workers().await?)
}

/// Liveness: 200 while the process serves HTTP, whatever etcd does (a
/// restart would not bring etcd back). For Cloud Run's startup and liveness
/// probes.
async fn livez() -> &'static str {
    "ok"
}

/// Readiness: 200 when etcd answers, 503 otherwise.
async fn healthz(State(store): State<Store>) -> Response {
    if store.etcd_reachable().await {
        (StatusCode::OK, "ok").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "etcd unreachable").into_response()
    }
}

/// A plain index of the API for someone who opens the manager in a browser.
pub async fn index() -> &'static str {
    "GDTS manager\n\n\
     POST /job/save    form: job={\"name\",\"command\",\"cronExpr\"}\n\
     POST /job/delete  form: name\n\
     POST /job/kill    form: name\n\
     POST /job/run     form: name (one run now)\n\
     POST /job/pause   form: name\n\
     POST /job/resume  form: name\n\
     GET  /job/list\n\
     GET  /job/log?name=&skip=&limit=\n\
     GET  /job/output?name=&runId=  (a run's whole output)\n\
     GET  /worker/list\n\
     GET  /healthz  (200 when etcd answers)\n\
     GET  /livez    (200 while the process serves)\n"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_streamed_job_list_is_byte_for_byte_the_envelope() {
        let spec = |name: &str| {
            gdts_common::JobSpec::shell(name, &format!("echo \"{name}\" é"), "* * * * *")
        };
        let jobs = vec![spec("a"), spec("b"), spec("c")];
        let (head, tail) = envelope_around_data();
        for split in 0..=jobs.len() {
            // Pages of any size, empty ones included.
            let mut body = head.to_vec();
            let (left, right) = jobs.split_at(split);
            body.extend_from_slice(&json_items(left, true));
            body.extend_from_slice(&json_items(&[] as &[gdts_common::JobSpec], left.is_empty()));
            body.extend_from_slice(&json_items(right, left.is_empty()));
            body.extend_from_slice(&tail);
            let whole = serde_json::to_vec(&Envelope::ok(&jobs)).unwrap();
            assert_eq!(
                String::from_utf8(body).unwrap(),
                String::from_utf8(whole).unwrap()
            );
        }
        let mut empty = head.to_vec();
        empty.extend_from_slice(&tail);
        assert_eq!(
            empty,
            serde_json::to_vec(&Envelope::ok(Vec::<()>::new())).unwrap()
        );
    }
}
