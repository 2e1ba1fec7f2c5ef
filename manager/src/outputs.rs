//! Serves a run's whole output: from the outputs bucket when the run's
//! record points there, else the record's inline output.

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use gcloud_storage::client::Client;
use gcloud_storage::http::objects::download::Range;
use gcloud_storage::http::objects::get::GetObjectRequest;
use gdts_common::config::GcsConfig;
use gdts_common::response::Envelope;
use gdts_common::JobName;

use crate::store::Store;

/// The bucket client, when a bucket is configured.
pub struct OutputBucket {
    client: Client,
    config: GcsConfig,
}

impl OutputBucket {
    pub async fn connect(config: GcsConfig) -> anyhow::Result<Self> {
        Ok(OutputBucket {
            client: gdts_runtime::gcs_client(&config).await?,
            config,
        })
    }
}

fn error(status: StatusCode, msg: impl Into<String>) -> Response {
    (status, Json(Envelope::error(msg))).into_response()
}

/// `GET /job/output?name=&runId=`: the run's whole output as
/// `text/plain`, byte for byte as the command wrote it.
pub async fn job_output(
    State(store): State<Store>,
    State(bucket): State<Option<std::sync::Arc<OutputBucket>>>,
    query: Result<Query<std::collections::HashMap<String, String>>, QueryRejection>,
) -> Response {
    let Ok(Query(fields)) = query else {
        return error(StatusCode::BAD_REQUEST, "query string is not valid");
    };
    let name = match fields.get("name").map(|n| JobName::parse(n)) {
        None => return error(StatusCode::BAD_REQUEST, "name: query parameter is missing"),
        Some(Err(e)) => return error(StatusCode::BAD_REQUEST, e.to_string()),
        Some(Ok(n)) => n,
    };
    let Some(run_id) = fields.get("runId").filter(|r| !r.is_empty()) else {
        return error(StatusCode::BAD_REQUEST, "runId: query parameter is missing");
    };
    let record = match store.run_record(&name, run_id).await {
        Ok(Some(r)) => r,
        Ok(None) => {
            return error(
                StatusCode::NOT_FOUND,
                format!("no run {run_id:?} of job {name}"),
            )
        }
        Err(e) => {
            tracing::error!(error = %e, "reading a run record failed");
            return error(
                StatusCode::SERVICE_UNAVAILABLE,
                "storage unavailable, try again",
            );
        }
    };
    let text = |body: Vec<u8>| {
        ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], body).into_response()
    };
    let Some(uri) = record.output_uri else {
        return text(record.output.into_bytes());
    };
    let Some(bucket) = &bucket else {
        tracing::error!(
            uri,
            "a run's output is in a bucket but GDTS_GCS_BUCKET is not set"
        );
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the outputs bucket is not configured on this manager",
        );
    };
    let Some(object) = bucket.config.object_of(&uri) else {
        tracing::error!(
            uri,
            "a run's output is in another bucket than GDTS_GCS_BUCKET"
        );
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the output is in a bucket this manager does not serve",
        );
    };
    let request = GetObjectRequest {
        bucket: bucket.config.bucket.clone(),
        object: object.to_string(),
        ..Default::default()
    };
    match bucket
        .client
        .download_object(&request, &Range::default())
        .await
    {
        Ok(bytes) => text(bytes),
        Err(e) => {
            tracing::error!(uri, error = %e, "downloading an output failed");
            error(
                StatusCode::SERVICE_UNAVAILABLE,
                "the outputs bucket is unavailable, try again",
            )
        }
    }
}
