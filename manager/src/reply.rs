//! What the JSON API (`/api/v1`) answers besides its data: its errors
//! ([`V1Error`], documented as [`ApiError`]) and pages ([`Page`],
//! [`paging`]); shared by every module with `/api/v1` handlers.

use std::collections::HashMap;

use axum::extract::rejection::QueryRejection;
use axum::extract::Query;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use gdts_common::job::JobError;
use serde::Serialize;
use serde_json::json;

use crate::store::StoreError;

/// The error body of every failed `/api/v1` request.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)] // documents the JSON built in `IntoResponse for V1Error`
pub struct ApiError {
    error: ApiErrorBody,
}

#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub struct ApiErrorBody {
    status: u16,
    /// The request field at fault, when there is one.
    field: Option<String>,
    message: String,
}

/// Largest page of jobs or runs.
pub const MAX_PAGE_SIZE: u64 = 500;
/// Highest page number (deeper lists are walked with `after`).
pub const MAX_PAGE: u64 = 1_000_000;
const DEFAULT_PAGE_SIZE: u64 = 50;

#[derive(Debug)]
pub enum V1Error {
    BadRequest {
        field: Option<String>,
        message: String,
    },
    NotFound(String),
    Conflict(String),
    /// A precondition of the request (`If-None-Match: *`) does not hold.
    PreconditionFailed {
        field: Option<String>,
        message: String,
    },
    Invalid(JobError),
    /// A field of a body other than a job's is not acceptable.
    Unprocessable {
        field: String,
        message: String,
    },
    /// No valid credentials.
    Unauthorized(String),
    /// A limit on open streams was reached.
    TooManyRequests(String),
    /// A body over a limit.
    PayloadTooLarge(String),
    Internal(StoreError),
}

impl From<StoreError> for V1Error {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Conflict => {
                V1Error::Conflict("the job changed meanwhile; try again".into())
            }
            other => V1Error::Internal(other),
        }
    }
}

impl IntoResponse for V1Error {
    fn into_response(self) -> Response {
        let (status, field, message) = match self {
            V1Error::BadRequest { field, message } => (StatusCode::BAD_REQUEST, field, message),
            V1Error::NotFound(m) => (StatusCode::NOT_FOUND, None, m),
            V1Error::Conflict(m) => (StatusCode::CONFLICT, None, m),
            V1Error::PreconditionFailed { field, message } => {
                (StatusCode::PRECONDITION_FAILED, field, message)
            }
            V1Error::Invalid(e) => (
                StatusCode::UNPROCESSABLE_ENTITY,
                Some(e.field.to_string()),
                e.reason,
            ),
            V1Error::Unprocessable { field, message } => {
                (StatusCode::UNPROCESSABLE_ENTITY, Some(field), message)
            }
            V1Error::Unauthorized(m) => (StatusCode::UNAUTHORIZED, None, m),
            V1Error::TooManyRequests(m) => (StatusCode::TOO_MANY_REQUESTS, None, m),
            V1Error::PayloadTooLarge(m) => (StatusCode::PAYLOAD_TOO_LARGE, None, m),
            V1Error::Internal(cause) => {
                tracing::error!(error = %cause, "api request failed in a backing store");
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    None,
                    "storage unavailable, try again".to_string(),
                )
            }
        };
        let mut response = error_response(status, field, message);
        if status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                axum::http::header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static("Bearer realm=\"gdts\""),
            );
        }
        response
    }
}

/// The error body of this API.
pub fn error_response(status: StatusCode, field: Option<String>, message: String) -> Response {
    let body =
        json!({ "error": { "status": status.as_u16(), "field": field, "message": message } });
    (status, Json(body)).into_response()
}

pub type V1Result<T> = Result<T, V1Error>;

pub fn query(
    q: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> V1Result<HashMap<String, String>> {
    q.map(|Query(m)| m).map_err(|e| V1Error::BadRequest {
        field: None,
        message: e.body_text(),
    })
}

/// The page a request asks for: `page` (1-based) and `pageSize` (1..=500)
/// from its query string.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Paging {
    pub page: u64,
    pub size: u64,
}

impl Paging {
    /// How many items come before the page.
    pub fn skip(self) -> u64 {
        (self.page - 1) * self.size
    }

    /// The answer: this page's `items` of `total`.
    pub fn answer<T>(self, items: Vec<T>, total: u64) -> Page<T> {
        Page {
            items,
            total,
            page: self.page,
            page_size: self.size,
        }
    }
}

/// The page the query string asks for, or which parameter is wrong.
pub fn paging(q: &HashMap<String, String>) -> V1Result<Paging> {
    let number = |field: &str, default: u64, max: u64| -> V1Result<u64> {
        match q.get(field).map(|v| v.trim()) {
            None => Ok(default),
            Some(v) => match v.parse::<u64>() {
                Ok(n) if (1..=max).contains(&n) => Ok(n),
                _ => Err(V1Error::BadRequest {
                    field: Some(field.into()),
                    message: format!("{v:?} is not a whole number in 1..={max}"),
                }),
            },
        }
    };
    Ok(Paging {
        page: number("page", 1, MAX_PAGE)?,
        size: number("pageSize", DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)?,
    })
}

#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Page<T> {
    pub items: Vec<T>,
    pub total: u64,
    pub page: u64,
    pub page_size: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn paging_defaults_and_skips_whole_pages() {
        let first = paging(&q(&[])).unwrap();
        assert_eq!(
            first,
            Paging {
                page: 1,
                size: DEFAULT_PAGE_SIZE
            }
        );
        assert_eq!(first.skip(), 0);
        let third = paging(&q(&[("page", "3"), ("pageSize", " 20 ")])).unwrap();
        assert_eq!(third.skip(), 40);
        let page = third.answer(vec!["a"], 41);
        assert_eq!((page.page, page.page_size, page.total), (3, 20, 41));
    }

    #[test]
    fn paging_names_the_parameter_out_of_bounds() {
        for (field, value) in [("page", "0"), ("pageSize", "501"), ("pageSize", "x")] {
            match paging(&q(&[(field, value)])) {
                Err(V1Error::BadRequest { field: Some(f), .. }) => assert_eq!(f, field),
                other => panic!("{field}={value}: {:?}", other.map(|p| p.page)),
            }
        }
    }
}
