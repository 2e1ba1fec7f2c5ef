//! API tokens and web UI sessions, kept in etcd (so every manager replica
//! knows them), and their endpoints: `/api/v1/tokens` (admin) and
//! `/api/v1/session` (sign in and out of the web UI).
//!
//! A token is `gdts_<id>_<secret>`: `id` (16 hex digits) names its record,
//! `secret` (64 hex digits, 256 random bits) proves it. The record holds the
//! SHA-256 of the whole token, never the token, which is shown once, when it
//! is created. A fast hash is enough: the secret is random, not a password.
//! A session is a random cookie value whose SHA-256 keys a record under a
//! 12-hour lease; it names its token, so revoking the token ends the session.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use etcd_client::{Client, PutOptions};
use gdts_common::keys::Keys;
use gdts_runtime::etcd_pages::RangePages;
use serde::{Deserialize, Serialize};
use serde_json::json;
use subtle::ConstantTimeEq;

use crate::auth::{self, AuthConfig, Caller, Identity, Role, Via, SECURE_SESSION_COOKIE};
use crate::reply::{V1Error, V1Result};
use crate::state::AppState;
use crate::store::StoreError;

/// How long a web UI session lasts.
pub const SESSION_TTL_SECS: i64 = 12 * 3600;
const TOKEN_PREFIX: &str = "gdts_";

#[derive(Clone)]
pub struct Tokens {
    etcd: Client,
    keys: Keys,
}

/// A token as etcd keeps it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct TokenRecord {
    id: String,
    name: String,
    role: Role,
    /// Hex SHA-256 of the whole token.
    sha256: String,
    created_at: i64,
    created_by: String,
}

/// A token as the API shows it (never its secret).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TokenInfo {
    pub id: String,
    pub name: String,
    pub role: Role,
    /// Epoch milliseconds.
    pub created_at: i64,
    pub created_by: String,
}

/// A token just created: the only time its value is shown.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct NewToken {
    #[serde(flatten)]
    pub info: TokenInfo,
    /// Send as `Authorization: Bearer <token>`. Not shown again.
    pub token: String,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct SessionRecord {
    /// The token signed in with; `None` for the bootstrap token.
    token_id: Option<String>,
    /// For the bootstrap token: which one (a hash of its hash), so a
    /// session ends when the bootstrap token is rotated.
    #[serde(default)]
    bootstrap: Option<String>,
    created_at: i64,
}

impl From<&TokenRecord> for TokenInfo {
    fn from(r: &TokenRecord) -> TokenInfo {
        TokenInfo {
            id: r.id.clone(),
            name: r.name.clone(),
            role: r.role,
            created_at: r.created_at,
            created_by: r.created_by.clone(),
        }
    }
}

fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    getrandom::getrandom(&mut buf).expect("the operating system supplies random bytes");
    hex::encode(buf)
}

fn is_lower_hex(s: &str, len: usize) -> bool {
    s.len() == len && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

impl Tokens {
    pub fn new(etcd: Client, keys: Keys) -> Tokens {
        Tokens { etcd, keys }
    }

    /// Creates a token; its value is in the answer and nowhere else.
    pub async fn create(
        &self,
        name: &str,
        role: Role,
        created_by: &str,
    ) -> Result<NewToken, StoreError> {
        let id = random_hex(8);
        let token = format!("{TOKEN_PREFIX}{id}_{}", random_hex(32));
        let record = TokenRecord {
            id: id.clone(),
            name: name.to_string(),
            role,
            sha256: hex::encode(auth::sha256(token.as_bytes())),
            created_at: chrono::Utc::now().timestamp_millis(),
            created_by: created_by.to_string(),
        };
        let value = serde_json::to_vec(&record).expect("a token record serializes");
        self.etcd
            .kv_client()
            .put(self.keys.token(&id), value, None)
            .await?;
        Ok(NewToken {
            info: TokenInfo::from(&record),
            token,
        })
    }

    async fn record(&self, id: &str) -> Result<Option<TokenRecord>, StoreError> {
        if !is_lower_hex(id, 16) {
            return Ok(None);
        }
        let resp = gdts_runtime::metrics::etcd(
            "get_token",
            self.etcd.kv_client().get(self.keys.token(id), None),
        )
        .await?;
        Ok(resp
            .kvs()
            .first()
            .and_then(|kv| serde_json::from_slice(kv.value()).ok()))
    }

    /// The token's record if `token` is a live token (hash compared in
    /// constant time).
    async fn verify(&self, token: &str) -> Result<Option<TokenRecord>, StoreError> {
        let Some((id, _)) = token
            .strip_prefix(TOKEN_PREFIX)
            .and_then(|rest| rest.split_once('_'))
        else {
            return Ok(None);
        };
        let Some(record) = self.record(id).await? else {
            return Ok(None);
        };
        let Ok(expected) = hex::decode(&record.sha256) else {
            return Ok(None);
        };
        let matches: bool = auth::sha256(token.as_bytes())
            .as_slice()
            .ct_eq(&expected)
            .into();
        Ok(matches.then_some(record))
    }

    /// Who `token` is, if it is a live API token.
    pub async fn identify(&self, token: &str) -> Result<Option<Identity>, StoreError> {
        Ok(self.verify(token).await?.map(|t| Identity {
            name: t.name,
            role: t.role,
            via: Via::Token,
            token_id: Some(t.id),
        }))
    }

    pub async fn list(&self) -> Result<Vec<TokenInfo>, StoreError> {
        let mut pages = RangePages::prefix(self.etcd.clone(), &self.keys.tokens_prefix());
        let mut out = Vec::new();
        while let Some(page) = pages.next_page().await? {
            out.extend(
                page.iter()
                    .filter_map(|kv| serde_json::from_slice::<TokenRecord>(kv.value()).ok())
                    .map(|r| TokenInfo::from(&r)),
            );
        }
        out.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        Ok(out)
    }

    /// Deletes a token; what it was, if it existed. Its sessions end with
    /// it (a session is checked against its token at every request).
    pub async fn revoke(&self, id: &str) -> Result<Option<TokenInfo>, StoreError> {
        if !is_lower_hex(id, 16) {
            return Ok(None);
        }
        let resp = self
            .etcd
            .kv_client()
            .delete(
                self.keys.token(id),
                Some(etcd_client::DeleteOptions::new().with_prev_key()),
            )
            .await?;
        Ok(resp
            .prev_kvs()
            .first()
            .and_then(|kv| serde_json::from_slice::<TokenRecord>(kv.value()).ok())
            .map(|r| TokenInfo::from(&r)))
    }

    /// Starts a session for `identity`; the cookie value.
    async fn start_session(
        &self,
        identity: &Identity,
        config: &AuthConfig,
    ) -> Result<String, StoreError> {
        let secret = random_hex(32);
        let lease = self
            .etcd
            .lease_client()
            .grant(SESSION_TTL_SECS, None)
            .await?;
        let record = SessionRecord {
            token_id: identity.token_id.clone(),
            bootstrap: identity
                .token_id
                .is_none()
                .then(|| config.bootstrap_fingerprint())
                .flatten(),
            created_at: chrono::Utc::now().timestamp_millis(),
        };
        self.etcd
            .kv_client()
            .put(
                self.session_key(&secret),
                serde_json::to_vec(&record).expect("a session record serializes"),
                Some(PutOptions::new().with_lease(lease.id())),
            )
            .await?;
        Ok(secret)
    }

    fn session_key(&self, secret: &str) -> String {
        self.keys
            .session(&hex::encode(auth::sha256(secret.as_bytes())))
    }

    /// Who a session cookie belongs to, if the session and its token live.
    pub async fn session(
        &self,
        secret: &str,
        config: &AuthConfig,
    ) -> Result<Option<Identity>, StoreError> {
        if !is_lower_hex(secret, 64) {
            return Ok(None);
        }
        let resp = self
            .etcd
            .kv_client()
            .get(self.session_key(secret), None)
            .await?;
        let Some(record) = resp
            .kvs()
            .first()
            .and_then(|kv| serde_json::from_slice::<SessionRecord>(kv.value()).ok())
        else {
            return Ok(None);
        };
        Ok(match record.token_id {
            None => (record.bootstrap.is_some()
                && record.bootstrap == config.bootstrap_fingerprint())
            .then(|| Identity::bootstrap(Via::Session)),
            Some(id) => self.record(&id).await?.map(|t| Identity {
                name: t.name,
                role: t.role,
                via: Via::Session,
                token_id: Some(t.id),
            }),
        })
    }

    async fn end_session(&self, secret: &str) -> Result<(), StoreError> {
        if is_lower_hex(secret, 64) {
            self.etcd
                .kv_client()
                .delete(self.session_key(secret), None)
                .await?;
        }
        Ok(())
    }
}

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
