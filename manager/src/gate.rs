//! The middleware in front of every route ([`authorize`]): who sent the
//! request ([`Credential`]: a bearer token, the session cookie, IAP's
//! assertion), checked against the rules of `auth.rs`, and the [`Caller`]
//! handed to handlers.

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::Response;

use crate::auth::{
    caller_address, cookie, rebinding_safe_host, refusal, required, same_origin,
    session_cookie_name, Access, Caller, Identity, Via, CSRF_HEADER,
};
use crate::state::AppState;

/// The middleware in front of every route.
pub async fn authorize(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let path = req.uri().path().to_string();
    let legacy = !(path == "/api/v1" || path.starts_with("/api/v1/"));
    let changes = !matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS);
    let deny = |status: StatusCode, message: String| refusal(status, legacy, message);
    let config = &state.auth;

    let too_large = |size: String| {
        deny(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "the request body is {size} bytes; the limit is {} (GDTS_MAX_BODY_BYTES)",
                config.max_body_bytes
            ),
        )
    };
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if let Some(len) = declared.filter(|len| *len > config.max_body_bytes) {
        return too_large(len.to_string());
    }
    if changes {
        if let Err(message) = same_origin(req.headers(), &config.allowed_origins) {
            return deny(StatusCode::FORBIDDEN, message);
        }
    }
    if !config.enabled && !rebinding_safe_host(req.headers(), &config.allowed_origins) {
        return deny(
            StatusCode::FORBIDDEN,
            "with authentication off only requests to an address or localhost are served \
             (a defence against DNS rebinding); list the host name in GDTS_ALLOWED_ORIGINS"
                .into(),
        );
    }

    let identity = if config.enabled {
        match authenticate(&state, req.headers(), changes).await {
            Ok(identity) => identity,
            Err(Refusal(status, message)) => {
                // A failing credential on a public path (a stale session
                // cookie while the UI's files load) is ignored; anywhere else
                // it is refused, so the client learns its token is wrong.
                if status != StatusCode::UNAUTHORIZED
                    || required(req.method(), &path) != Access::Public
                {
                    return deny(status, message);
                }
                None
            }
        }
    } else {
        Some(Identity::anonymous())
    };

    if let Access::Role(needed) = required(req.method(), &path) {
        match &identity {
            None => return deny(
                StatusCode::UNAUTHORIZED,
                "sign in: send Authorization: Bearer <token> (an API token or GDTS_ADMIN_TOKEN)"
                    .into(),
            ),
            Some(who) if who.role < needed => {
                return deny(
                    StatusCode::FORBIDDEN,
                    format!(
                        "{} has the {} role; this needs {}",
                        who.name,
                        who.role.as_str(),
                        needed.as_str()
                    ),
                )
            }
            Some(_) => {}
        }
    }

    let credential = Credential::of(&state, req.headers());
    req.extensions_mut().insert(credential);
    let caller = Caller {
        identity,
        from: caller_address(&req),
        user_agent: req
            .headers()
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .map(|v| v.chars().take(200).collect()),
    };
    req.extensions_mut().insert(caller);
    if declared.is_none() && changes {
        // No length given (a chunked body), from a caller allowed to send
        // it: read here, up to the limit and for a bounded time, so an
        // oversized body gets this refusal and not the extractors' plain
        // text.
        let (parts, body) = req.into_parts();
        let limit = config.max_body_bytes as usize;
        match tokio::time::timeout(BODY_READ_TIMEOUT, axum::body::to_bytes(body, limit)).await {
            Ok(Ok(bytes)) => req = Request::from_parts(parts, axum::body::Body::from(bytes)),
            Ok(Err(e)) if over_limit(&e) => return too_large(format!("over {limit}")),
            Ok(Err(e)) => {
                return deny(
                    StatusCode::BAD_REQUEST,
                    format!("the request body could not be read: {e}"),
                )
            }
            Err(_) => {
                return deny(
                    StatusCode::REQUEST_TIMEOUT,
                    format!("the request body did not arrive within {BODY_READ_TIMEOUT:?}"),
                )
            }
        }
    }
    next.run(req).await
}

/// How long a body sent without a length may take to arrive.
const BODY_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Whether reading a body failed for its size (and not for a broken
/// connection).
fn over_limit(e: &axum::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = source {
        if err.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        source = err.source();
    }
    false
}

/// The credential a request came with, kept for the event stream, which
/// checks it again while it stays open (a revoked token or an ended session
/// ends the stream).
#[derive(Clone)]
pub enum Credential {
    /// Authentication off, or nothing sent.
    None,
    Bearer(String),
    Session(String),
    Iap(String),
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the secret itself.
        f.write_str(match self {
            Credential::None => "Credential::None",
            Credential::Bearer(_) => "Credential::Bearer(<redacted>)",
            Credential::Session(_) => "Credential::Session(<redacted>)",
            Credential::Iap(_) => "Credential::Iap(<redacted>)",
        })
    }
}

impl Credential {
    fn of(state: &AppState, headers: &HeaderMap) -> Credential {
        let text = |v: &HeaderValue| v.to_str().unwrap_or_default().to_string();
        if !state.auth.enabled {
            return Credential::None;
        }
        if let Some(v) = headers.get(header::AUTHORIZATION) {
            let v = text(v);
            let token = v.trim().split_once(' ').map(|(_, t)| t.trim().to_string());
            return Credential::Bearer(token.unwrap_or_default());
        }
        if state.iap.is_some() {
            if let Some(v) = headers.get(crate::iap::HEADER) {
                return Credential::Iap(text(v));
            }
        }
        match cookie(headers, session_cookie_name(&state.auth, headers)) {
            Some(c) => Credential::Session(c),
            None => Credential::None,
        }
    }

    /// Whether the credential still proves who it proved. A store that does
    /// not answer counts as yes: an etcd blip must not cut every stream.
    pub async fn still_valid(&self, state: &AppState) -> bool {
        match self {
            Credential::None => true,
            Credential::Bearer(token) => {
                state.auth.is_bootstrap(token)
                    || !matches!(state.tokens.identify(token).await, Ok(None))
            }
            Credential::Session(secret) => {
                !matches!(state.tokens.session(secret, &state.auth).await, Ok(None))
            }
            Credential::Iap(assertion) => match &state.iap {
                Some(iap) => iap.identify(assertion).await.is_ok(),
                None => false,
            },
        }
    }
}

/// A refusal: status and message.
pub struct Refusal(pub StatusCode, pub String);

/// Who sent the request, if anyone did: `Ok(None)` when no credential was
/// sent (or a session cookie that is no longer valid), an error for a
/// credential that is wrong.
async fn authenticate(
    state: &AppState,
    headers: &HeaderMap,
    changes: bool,
) -> Result<Option<Identity>, Refusal> {
    let unavailable = |e: crate::store::StoreError| {
        tracing::error!(error = %e, "checking credentials failed in etcd");
        Refusal(
            StatusCode::SERVICE_UNAVAILABLE,
            "storage unavailable, try again".into(),
        )
    };
    if let Some(value) = headers.get(header::AUTHORIZATION) {
        let token = value
            .to_str()
            .ok()
            .and_then(|v| {
                let (scheme, token) = v.trim().split_once(' ')?;
                scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
            })
            .filter(|t| !t.is_empty())
            .ok_or_else(|| {
                Refusal(
                    StatusCode::UNAUTHORIZED,
                    "Authorization: only `Bearer <token>` is accepted".into(),
                )
            })?;
        if state.auth.is_bootstrap(token) {
            return Ok(Some(Identity::bootstrap(Via::Bootstrap)));
        }
        return match state.tokens.identify(token).await.map_err(unavailable)? {
            Some(identity) => Ok(Some(identity)),
            None => Err(Refusal(
                StatusCode::UNAUTHORIZED,
                "the bearer token is not valid (unknown, revoked or mistyped)".into(),
            )),
        };
    }
    if let (Some(iap), Some(assertion)) = (state.iap.as_ref(), headers.get(crate::iap::HEADER)) {
        // Only with IAP configured: without IAP in front, anyone could
        // send the header.
        let assertion = assertion.to_str().unwrap_or_default();
        let identity = match iap.identify(assertion).await {
            Ok(identity) => identity,
            Err(crate::iap::Refused::Invalid(why)) => {
                tracing::warn!(why, "an IAP assertion was refused");
                return Err(Refusal(
                    StatusCode::UNAUTHORIZED,
                    format!("the IAP assertion is not valid: {why}"),
                ));
            }
            Err(crate::iap::Refused::NoRole(email)) => {
                return Err(Refusal(
                    StatusCode::FORBIDDEN,
                    format!("{email} has no role here (GDTS_IAP_ROLES)"),
                ))
            }
        };
        // The browser sends IAP's cookie with any request, a cross-site one
        // too: a change needs the same header as with a session.
        if changes && !headers.contains_key(CSRF_HEADER) {
            return Err(Refusal(
                StatusCode::FORBIDDEN,
                "a change made through IAP must carry the X-GDTS-CSRF header".into(),
            ));
        }
        return Ok(Some(identity));
    }
    let Some(session) = cookie(headers, session_cookie_name(&state.auth, headers)) else {
        return Ok(None);
    };
    let Some(identity) = state
        .tokens
        .session(&session, &state.auth)
        .await
        .map_err(unavailable)?
    else {
        return Err(Refusal(
            StatusCode::UNAUTHORIZED,
            "the session has ended (signed out, expired, or its token was revoked); sign in again"
                .into(),
        ));
    };
    if changes && !headers.contains_key(CSRF_HEADER) {
        return Err(Refusal(
            StatusCode::FORBIDDEN,
            "a change made with the session cookie must carry the X-GDTS-CSRF header".into(),
        ));
    }
    Ok(Some(identity))
}
