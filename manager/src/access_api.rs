//! The JSON API's endpoints about access: API tokens (admin), web UI
//! sessions (sign in, who am I, sign out) and the audit trail (admin). The
//! stores behind them are `tokens.rs` and `audit.rs`.

use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::Query;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use mongodb::bson::doc;
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::collections::HashMap;

use crate::audit::AuditEntry;
use crate::auth::{self, Caller, Identity, Role, Via, SECURE_SESSION_COOKIE};
use crate::reply::{paging, query, Page, V1Error, V1Result};
use crate::state::AppState;
use crate::tokens::{NewToken, TokenInfo, SESSION_TTL_SECS};

/// Largest sign-in body (a token is under 100 bytes).
const MAX_SIGN_IN_BODY: usize = 4096;

/// Longest token name.
pub const MAX_TOKEN_NAME_LEN: usize = 64;

/// `POST /tokens`'s body.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TokenRequest {
    /// Who or what uses the token (shown in the audit trail): 1 to 64 of
    /// `A-Za-z0-9 ._@+-`.
    #[schema(min_length = 1, max_length = 64, pattern = "^[A-Za-z0-9 ._@+-]{1,64}$")]
    pub name: String,
    pub role: Role,
}

fn parse_body<T: serde::de::DeserializeOwned>(body: &Bytes) -> V1Result<T> {
    serde_json::from_slice(body).map_err(|e| V1Error::BadRequest {
        field: None,
        message: format!("the body is not what this endpoint takes: {e}"),
    })
}

/// Creates an API token. Its value is in this answer only.
#[utoipa::path(post, path = "/tokens", tag = "tokens", request_body = TokenRequest,
    responses((status = 201, body = NewToken), (status = 400, body = crate::reply::ApiError),
              (status = 401, body = crate::reply::ApiError), (status = 403, body = crate::reply::ApiError),
              (status = 422, body = crate::reply::ApiError)))]
pub async fn create_token(
    State(state): State<AppState>,
    caller: Caller,
    body: Bytes,
) -> V1Result<(StatusCode, Json<NewToken>)> {
    let request: TokenRequest = parse_body(&body)?;
    let name = request.name.trim();
    if name.is_empty()
        || name.len() > MAX_TOKEN_NAME_LEN
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || " ._@+-".contains(c))
    {
        return Err(V1Error::Unprocessable {
            field: "name".into(),
            message: format!(
                "{name:?} is not a token name (1 to {MAX_TOKEN_NAME_LEN} of A-Za-z0-9 ._@+-)"
            ),
        });
    }
    let created = state
        .tokens
        .create(name, request.role, &caller.name())
        .await?;
    tracing::info!(token = %created.info.id, name, role = request.role.as_str(), by = %caller.name(), "token created");
    state
        .audit
        .record(
            &caller,
            "token.create",
            &created.info.id,
            None,
            Some(json!(created.info)),
        )
        .await;
    Ok((StatusCode::CREATED, Json(created)))
}

/// Every API token (never their values).
#[utoipa::path(get, path = "/tokens", tag = "tokens",
    responses((status = 200, body = Vec<TokenInfo>), (status = 401, body = crate::reply::ApiError),
              (status = 403, body = crate::reply::ApiError)))]
pub async fn list_tokens(State(state): State<AppState>) -> V1Result<Json<Vec<TokenInfo>>> {
    Ok(Json(state.tokens.list().await?))
}

/// Revokes a token at once, with the web UI sessions signed in with it.
#[utoipa::path(delete, path = "/tokens/{id}", tag = "tokens", params(("id" = String, Path)),
    responses((status = 204), (status = 401, body = crate::reply::ApiError),
              (status = 403, body = crate::reply::ApiError), (status = 404, body = crate::reply::ApiError)))]
pub async fn revoke_token(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> V1Result<StatusCode> {
    match state.tokens.revoke(&id).await? {
        Some(info) => {
            tracing::info!(token = %id, by = %caller.name(), "token revoked");
            state
                .audit
                .record(&caller, "token.revoke", &id, Some(json!(info)), None)
                .await;
            Ok(StatusCode::NO_CONTENT)
        }
        None => Err(V1Error::NotFound(format!("no token {id:?}"))),
    }
}

/// Whether authentication is on, and who the caller is (`null` when not
/// signed in).
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SessionView {
    pub auth_enabled: bool,
    pub identity: Option<Identity>,
}

/// Who the caller is. Public: the web UI asks it to know whether to show
/// its sign-in form.
#[utoipa::path(get, path = "/session", tag = "session",
    responses((status = 200, body = SessionView)))]
pub async fn get_session(State(state): State<AppState>, caller: Caller) -> Json<SessionView> {
    Json(SessionView {
        auth_enabled: state.auth.enabled,
        identity: caller.identity,
    })
}

/// `POST /session`'s body.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SignIn {
    /// An API token or the bootstrap admin token.
    #[schema(min_length = 1)]
    pub token: String,
}

/// Signs the web UI in with a token: sets the `gdts_session` cookie
/// (HttpOnly, SameSite=Strict, Secure except on plain-HTTP loopback) for 12
/// hours. With authentication off there is nothing to sign in to: the answer
/// names the anonymous admin and sets no cookie.
#[utoipa::path(post, path = "/session", tag = "session", request_body = SignIn,
    responses((status = 200, body = SessionView, headers(("Set-Cookie" = String, description = "the session"))),
              (status = 400, body = crate::reply::ApiError), (status = 401, body = crate::reply::ApiError),
              (status = 403, body = crate::reply::ApiError)))]
pub async fn sign_in(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    body: Bytes,
) -> V1Result<Response> {
    // Anyone may call this: it reads no more than a token needs.
    if body.len() > MAX_SIGN_IN_BODY {
        return Err(V1Error::PayloadTooLarge(format!(
            "a sign-in body is at most {MAX_SIGN_IN_BODY} bytes"
        )));
    }
    let request: SignIn = parse_body(&body)?;
    if !state.auth.enabled {
        return Ok(Json(SessionView {
            auth_enabled: false,
            identity: Some(Identity::anonymous()),
        })
        .into_response());
    }
    let token = request.token.trim();
    let identity = if state.auth.is_bootstrap(token) {
        Identity::bootstrap(Via::Bootstrap)
    } else {
        match state.tokens.identify(token).await? {
            Some(identity) => identity,
            None => {
                tracing::warn!(from = %caller.from, "sign-in with a token that is not valid");
                return Err(V1Error::Unauthorized(
                    "that token is not valid (unknown, revoked or mistyped)".into(),
                ));
            }
        }
    };
    let secret = state.tokens.start_session(&identity, &state.auth).await?;
    let signed_in = Caller {
        identity: Some(identity.clone()),
        ..caller
    };
    state
        .audit
        .record(&signed_in, "session.create", &identity.name, None, None)
        .await;
    let secure = if auth::cookie_secure(&state.auth, &headers) {
        "; Secure"
    } else {
        ""
    };
    let name = auth::session_cookie_name(&state.auth, &headers);
    let cookie = format!(
        "{name}={secret}; Path=/; HttpOnly; SameSite=Strict; Max-Age={SESSION_TTL_SECS}{secure}"
    );
    let mut identity = identity;
    identity.via = Via::Session;
    Ok((
        [(header::SET_COOKIE, cookie)],
        Json(SessionView {
            auth_enabled: true,
            identity: Some(identity),
        }),
    )
        .into_response())
}

/// Signs the web UI out: ends the session and clears the cookie.
#[utoipa::path(delete, path = "/session", tag = "session", responses((status = 204)))]
pub async fn sign_out(State(state): State<AppState>, headers: HeaderMap) -> V1Result<Response> {
    let name = auth::session_cookie_name(&state.auth, &headers);
    if let Some(secret) = auth::cookie(&headers, name) {
        state.tokens.end_session(&secret).await?;
    }
    let secure = if name == SECURE_SESSION_COOKIE {
        "; Secure"
    } else {
        ""
    };
    let cookie = format!("{name}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0{secure}");
    Ok((StatusCode::NO_CONTENT, [(header::SET_COOKIE, cookie)]).into_response())
}

/// The audit trail, newest first; `target` keeps the entries about one job
/// (or token).
#[utoipa::path(get, path = "/audit", tag = "audit",
    params(("target" = Option<String>, Query, description = "a job name or token id"),
           ("page" = Option<u64>, Query, minimum = 1), ("pageSize" = Option<u64>, Query, minimum = 1, maximum = 500)),
    responses((status = 200, body = Page<AuditEntry>), (status = 400, body = crate::reply::ApiError),
              (status = 401, body = crate::reply::ApiError), (status = 403, body = crate::reply::ApiError)))]
pub async fn list_audit(
    State(state): State<AppState>,
    q: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> V1Result<Json<Page<AuditEntry>>> {
    let q = query(q)?;
    let paging = paging(&q)?;
    let target = q
        .get("target")
        .map(String::as_str)
        .filter(|t| !t.is_empty());
    let (items, total) = state
        .audit
        .page(target, paging.skip(), paging.size as i64)
        .await?;
    Ok(Json(paging.answer(items, total)))
}
