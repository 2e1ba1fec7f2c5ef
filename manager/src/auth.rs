//! Who may do what: every request passes `gate::authorize` before any
//! handler, which applies the rules here.
//!
//! - The role a request needs comes from one table, [`required`]: `viewer`
//!   reads, `operator` runs, kills, pauses and resumes, `admin` saves and
//!   deletes jobs and manages tokens and reads the audit trail. The web UI's
//!   files, the health probes, the OpenAPI document and the sign-in endpoint
//!   are public.
//! - A caller proves who it is with `Authorization: Bearer <token>` (an API
//!   token from `tokens.rs`, or the bootstrap `GDTS_ADMIN_TOKEN`), or, in
//!   the web UI, with the `gdts_session` cookie (HttpOnly, SameSite=Strict,
//!   Secure), which the event stream can use because EventSource cannot send
//!   headers.
//! - Cross-site request forgery: a state-changing request whose `Origin` is
//!   not the manager's own (or listed in `GDTS_ALLOWED_ORIGINS`) is refused,
//!   with authentication on or off; one authenticated by the cookie must also
//!   carry `X-GDTS-CSRF` (a header no cross-site form can send, and which a
//!   script from another origin could only send after a CORS preflight that
//!   this server never grants).
//! - With `GDTS_AUTH=off` every caller is an anonymous admin (for `make dev`
//!   and for the original system's own page and examples, which send no
//!   credentials); the manager says so loudly at start.
//!
//! Refusals: 401 without valid credentials (with `WWW-Authenticate`), 403
//! for a role that is not enough or a cross-site request, 413 for a body
//! over the limit; in the legacy API's envelope on legacy paths, in the
//! JSON API's error body under `/api/v1`.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use gdts_common::config::Lookup;
use gdts_common::response::Envelope;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// The cookie that carries a web UI session over plain HTTP on loopback.
pub const SESSION_COOKIE: &str = "gdts_session";
/// Its name when it is `Secure`: browsers take a `__Host-` cookie only from
/// this very host, with `Path=/` and no `Domain`, so a sibling subdomain
/// cannot plant a session of its own (session fixation).
pub const SECURE_SESSION_COOKIE: &str = "__Host-gdts_session";

/// The session cookie's name for this request (see [`cookie_secure`]).
pub fn session_cookie_name(config: &AuthConfig, headers: &HeaderMap) -> &'static str {
    if cookie_secure(config, headers) {
        SECURE_SESSION_COOKIE
    } else {
        SESSION_COOKIE
    }
}
/// The header a cookie-authenticated state change must carry.
pub const CSRF_HEADER: &str = "x-gdts-csrf";

/// What a caller may do. Each role may do everything the roles before it
/// may.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Reads jobs, runs, outputs, workers and events.
    Viewer,
    /// Also runs, kills, pauses and resumes jobs.
    Operator,
    /// Also saves and deletes jobs, manages tokens, reads the audit trail.
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
            Role::Admin => "admin",
        }
    }
}

/// How a caller proved who it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Via {
    /// Authentication is off.
    None,
    /// The bootstrap token, `GDTS_ADMIN_TOKEN`.
    Bootstrap,
    /// An API token.
    Token,
    /// The web UI's session cookie.
    Session,
    /// Google's Identity-Aware Proxy (a verified assertion).
    Iap,
}

impl Via {
    pub fn as_str(self) -> &'static str {
        match self {
            Via::None => "none",
            Via::Bootstrap => "bootstrap",
            Via::Token => "token",
            Via::Session => "session",
            Via::Iap => "iap",
        }
    }
}

/// Who is calling.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Identity {
    /// The token's name (`bootstrap admin` for `GDTS_ADMIN_TOKEN`,
    /// `anonymous` with authentication off).
    pub name: String,
    pub role: Role,
    pub via: Via,
    /// The API token behind the request (also for a session).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_id: Option<String>,
}

impl Identity {
    pub fn anonymous() -> Identity {
        Identity {
            name: "anonymous".into(),
            role: Role::Admin,
            via: Via::None,
            token_id: None,
        }
    }

    pub fn bootstrap(via: Via) -> Identity {
        Identity {
            name: "bootstrap admin".into(),
            role: Role::Admin,
            via,
            token_id: None,
        }
    }
}

/// The caller of a request as handlers see it: who, and from where (for
/// the audit trail). Always present: [`authorize`] puts it in.
#[derive(Debug, Clone)]
pub struct Caller {
    /// `None` on a public path for a caller that did not sign in.
    pub identity: Option<Identity>,
    /// The peer address, and the `X-Forwarded-For` chain when a proxy (Cloud
    /// Run's front end, IAP) sent one.
    pub from: String,
    pub user_agent: Option<String>,
}

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Caller, Self::Rejection> {
        Ok(parts
            .extensions
            .get::<Caller>()
            .cloned()
            .unwrap_or_else(|| Caller {
                identity: None,
                from: "unknown".into(),
                user_agent: None,
            }))
    }
}

impl Caller {
    /// Whether this caller reads a job's secrets (its `env` values and
    /// webhook URLs): admins only, who may change them anyway. Everyone
    /// else reads them redacted ([`JobSpec::redact_secrets`]).
    ///
    /// [`JobSpec::redact_secrets`]: gdts_common::JobSpec::redact_secrets
    pub fn sees_secrets(&self) -> bool {
        self.identity
            .as_ref()
            .is_some_and(|i| i.role >= Role::Admin)
    }

    /// Makes `spec` what this caller may read of it.
    pub fn hide_secrets(&self, spec: &mut gdts_common::JobSpec) {
        if !self.sees_secrets() {
            spec.redact_secrets();
        }
    }

    /// Who, for logs and the audit trail.
    pub fn name(&self) -> String {
        match &self.identity {
            Some(i) => i.name.clone(),
            None => "unauthenticated".into(),
        }
    }
}

/// `GDTS_AUTH`, `GDTS_ADMIN_TOKEN`, `GDTS_ALLOWED_ORIGINS`,
/// `GDTS_COOKIE_SECURE`, `GDTS_MAX_BODY_BYTES`.
#[derive(Clone)]
pub struct AuthConfig {
    pub enabled: bool,
    /// SHA-256 of the bootstrap admin token; the token itself is not kept.
    bootstrap: Option<[u8; 32]>,
    /// Origins besides the manager's own that may send state changes
    /// (e.g. `https://gdts.example.com` in front of a proxy).
    pub allowed_origins: Vec<String>,
    /// Whether the session cookie is `Secure`; `None`: unless the request
    /// came to a loopback host over plain HTTP.
    pub cookie_secure: Option<bool>,
    /// Largest request body, in bytes.
    pub max_body_bytes: u64,
}

impl std::fmt::Debug for AuthConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthConfig")
            .field("enabled", &self.enabled)
            .field("bootstrap", &self.bootstrap.map(|_| "<set>"))
            .field("allowed_origins", &self.allowed_origins)
            .field("cookie_secure", &self.cookie_secure)
            .field("max_body_bytes", &self.max_body_bytes)
            .finish()
    }
}

/// Shortest bootstrap token accepted: it is the key to the whole fleet.
pub const MIN_ADMIN_TOKEN_LEN: usize = 32;
/// Default largest request body (a job is a few KiB; 1 MiB leaves room for
/// a long command and many variables).
pub const DEFAULT_MAX_BODY_BYTES: u64 = 1024 * 1024;

impl AuthConfig {
    pub fn from_lookup(get: Lookup) -> Result<AuthConfig, String> {
        let enabled = match get("GDTS_AUTH").as_deref().map(str::trim) {
            None | Some("") | Some("on") | Some("true") | Some("1") => true,
            Some("off") | Some("false") | Some("0") => false,
            Some(other) => return Err(format!("GDTS_AUTH: {other:?} is not on or off")),
        };
        let bootstrap = match get("GDTS_ADMIN_TOKEN").filter(|t| !t.trim().is_empty()) {
            None => None,
            Some(t) if t.trim().len() < MIN_ADMIN_TOKEN_LEN => {
                return Err(format!(
                    "GDTS_ADMIN_TOKEN: {} characters is too short to guard the fleet; \
                     use at least {MIN_ADMIN_TOKEN_LEN} random characters (e.g. openssl rand -hex 32)",
                    t.trim().len()
                ))
            }
            Some(t) => Some(sha256(t.trim().as_bytes())),
        };
        let mut allowed_origins = Vec::new();
        for origin in get("GDTS_ALLOWED_ORIGINS")
            .unwrap_or_default()
            .split(',')
            .map(str::trim)
            .filter(|o| !o.is_empty())
        {
            let origin = origin.trim_end_matches('/');
            let rest = origin
                .strip_prefix("https://")
                .or_else(|| origin.strip_prefix("http://"));
            if rest.is_none_or(|host| host.is_empty() || host.contains('/')) {
                return Err(format!(
                    "GDTS_ALLOWED_ORIGINS: {origin:?} is not an origin (scheme://host[:port])"
                ));
            }
            allowed_origins.push(origin.to_ascii_lowercase());
        }
        let cookie_secure = match get("GDTS_COOKIE_SECURE").as_deref().map(str::trim) {
            None | Some("") | Some("auto") => None,
            Some("true") | Some("on") => Some(true),
            Some("false") | Some("off") => Some(false),
            Some(other) => {
                return Err(format!(
                    "GDTS_COOKIE_SECURE: {other:?} is not auto, true or false"
                ))
            }
        };
        let max_body_bytes = match get("GDTS_MAX_BODY_BYTES") {
            None => DEFAULT_MAX_BODY_BYTES,
            Some(v) => match v.trim().parse::<u64>() {
                Ok(n) if (1024..=64 * 1024 * 1024).contains(&n) => n,
                _ => {
                    return Err(format!(
                        "GDTS_MAX_BODY_BYTES: {v:?} is not a byte count in 1024..=67108864"
                    ))
                }
            },
        };
        Ok(AuthConfig {
            enabled,
            bootstrap,
            allowed_origins,
            cookie_secure,
            max_body_bytes,
        })
    }

    /// Whether `token` is the bootstrap admin token (in constant time).
    pub fn is_bootstrap(&self, token: &str) -> bool {
        self.bootstrap
            .is_some_and(|hash| bool::from(sha256(token.as_bytes()).ct_eq(&hash)))
    }

    pub fn has_bootstrap(&self) -> bool {
        self.bootstrap.is_some()
    }

    /// Names the bootstrap token without revealing it (a hash of its
    /// hash), for sessions to end when it is rotated.
    pub fn bootstrap_fingerprint(&self) -> Option<String> {
        self.bootstrap.map(|h| hex::encode(sha256(&h)))
    }
}

pub fn sha256(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

/// What a request needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Anyone: the web UI's files, probes, the API document, sign-in.
    Public,
    /// A caller with at least this role.
    Role(Role),
}

/// The one table of who may do what. Paths are matched as the router
/// matches them (undecoded), so a path the table does not know is one no
/// API route serves: reading it is public (the UI's files), changing
/// anything through it needs an admin.
pub fn required(method: &Method, path: &str) -> Access {
    use Role::*;
    let reads = matches!(*method, Method::GET | Method::HEAD);
    let role = |r| Access::Role(r);
    match path {
        "/healthz" | "/livez" | "/api/v1/openapi.json" | "/api/v1/session" => Access::Public,
        "/job/save" | "/job/delete" => role(Admin),
        "/job/kill" | "/job/run" | "/job/pause" | "/job/resume" => role(Operator),
        "/job/list" | "/job/log" | "/job/output" | "/worker/list" | "/metrics" => {
            role(if reads { Viewer } else { Admin })
        }
        p if p == "/api/v1/tokens"
            || p.starts_with("/api/v1/tokens/")
            || p == "/api/v1/audit"
            || p.starts_with("/api/v1/audit/") =>
        {
            role(Admin)
        }
        p if p == "/api/v1" || p.starts_with("/api/v1/") => {
            let segments: Vec<&str> = p.split('/').collect();
            let operates = matches!(
                segments.as_slice(),
                ["", "api", "v1", "jobs", name, "kill" | "run" | "pause" | "resume"] if !name.is_empty()
            );
            role(if reads {
                Viewer
            } else if operates && *method == Method::POST {
                Operator
            } else {
                Admin
            })
        }
        // Anything else is the web UI's files.
        _ if reads => Access::Public,
        _ => role(Admin),
    }
}

/// `Ok` unless the request comes from a browser page of another origin:
/// its `Origin` (or, without one, `Sec-Fetch-Site`) says so.
pub fn same_origin(headers: &HeaderMap, allowed: &[String]) -> Result<(), String> {
    let text = |name: header::HeaderName| headers.get(name).and_then(|v| v.to_str().ok());
    match text(header::ORIGIN) {
        Some(origin) => {
            let origin = origin.trim().trim_end_matches('/').to_ascii_lowercase();
            let authority = origin
                .strip_prefix("https://")
                .or_else(|| origin.strip_prefix("http://"));
            let host = text(header::HOST).map(|h| h.trim().to_ascii_lowercase());
            let own = authority.is_some() && authority == host.as_deref();
            if own || allowed.contains(&origin) {
                Ok(())
            } else {
                Err(format!(
                    "cross-origin change from {origin} refused (add the origin to \
                     GDTS_ALLOWED_ORIGINS to allow it)"
                ))
            }
        }
        None => match headers.get("sec-fetch-site").and_then(|v| v.to_str().ok()) {
            Some("cross-site") | Some("same-site") => {
                Err("cross-site change refused (Sec-Fetch-Site)".into())
            }
            _ => Ok(()),
        },
    }
}

/// With authentication off, a page on any site could reach the manager by
/// re-pointing its own name at the manager's address (DNS rebinding): its
/// requests then carry that name as `Host`. An address (or `localhost`) as
/// `Host` cannot be rebound; a name must be one the operator listed.
pub fn rebinding_safe_host(headers: &HeaderMap, allowed: &[String]) -> bool {
    let Some(host) = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .map(|h| h.trim().to_ascii_lowercase())
    else {
        // HTTP/1.0 without Host: not a browser.
        return true;
    };
    let name = match host.rsplit_once(':') {
        Some((h, port)) if port.chars().all(|c| c.is_ascii_digit()) => h.to_string(),
        _ => host.clone(),
    };
    let is_address =
        name.parse::<std::net::IpAddr>().is_ok() || (name.starts_with('[') && name.ends_with(']'));
    is_address
        || name == "localhost"
        || name.ends_with(".localhost")
        || allowed.iter().any(|o| {
            o.strip_prefix("https://")
                .or_else(|| o.strip_prefix("http://"))
                .is_some_and(|authority| authority == host || authority == name)
        })
}

/// The value of cookie `name`, if the request carries it.
pub fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim().to_string())
        .filter(|v| !v.is_empty())
}

/// Whether the session cookie should be `Secure` for this request.
pub fn cookie_secure(config: &AuthConfig, headers: &HeaderMap) -> bool {
    if let Some(set) = config.cookie_secure {
        return set;
    }
    let https = headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|p| p.trim().eq_ignore_ascii_case("https"));
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let hostname = match host.rsplit_once(':') {
        Some((h, port)) if port.chars().all(|c| c.is_ascii_digit()) => h,
        _ => host,
    };
    let loopback = hostname == "localhost"
        || hostname.starts_with("127.")
        || hostname == "[::1]"
        || hostname.ends_with(".localhost");
    https || !loopback
}

/// The end of an `X-Forwarded-For` chain: the proxy in front appends the
/// address it saw, so the end is what a client cannot push out with
/// padding. At most the last three hops and 200 characters.
fn forwarded_tail(chain: &str) -> String {
    let mut hops: Vec<&str> = chain.rsplit(',').take(3).map(str::trim).collect();
    hops.reverse();
    let joined = hops.join(", ");
    let skip = joined.chars().count().saturating_sub(200);
    joined.chars().skip(skip).collect()
}

pub fn caller_address(req: &Request) -> String {
    let peer = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip().to_string())
        .unwrap_or_else(|| "unknown".into());
    match req
        .headers()
        .get("x-forwarded-for")
        .and_then(|v| v.to_str().ok())
    {
        Some(chain) => format!("{} (via {peer})", forwarded_tail(chain)),
        None => peer,
    }
}

/// A refusal in the shape of the API it is on.
pub fn refusal(status: StatusCode, legacy: bool, message: String) -> Response {
    let mut response = if legacy {
        (status, Json(Envelope::error(message))).into_response()
    } else {
        crate::reply::error_response(status, None, message)
    };
    if status == StatusCode::UNAUTHORIZED {
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"gdts\""),
        );
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn needs(method: Method, path: &str) -> Access {
        required(&method, path)
    }

    #[test]
    fn every_route_needs_the_role_of_what_it_does() {
        use Access::{Public, Role as R};
        use Role::*;
        let table = [
            (Method::GET, "/", Public),
            (Method::GET, "/app.js", Public),
            (Method::GET, "/healthz", Public),
            (Method::GET, "/livez", Public),
            (Method::GET, "/api/v1/openapi.json", Public),
            (Method::GET, "/api/v1/session", Public),
            (Method::POST, "/api/v1/session", Public),
            (Method::DELETE, "/api/v1/session", Public),
            (Method::GET, "/job/list", R(Viewer)),
            (Method::GET, "/job/log", R(Viewer)),
            (Method::GET, "/job/output", R(Viewer)),
            (Method::GET, "/worker/list", R(Viewer)),
            (Method::GET, "/metrics", R(Viewer)),
            (Method::POST, "/job/kill", R(Operator)),
            (Method::POST, "/job/run", R(Operator)),
            (Method::POST, "/job/pause", R(Operator)),
            (Method::POST, "/job/resume", R(Operator)),
            (Method::POST, "/job/save", R(Admin)),
            (Method::POST, "/job/delete", R(Admin)),
            (Method::GET, "/api/v1/jobs", R(Viewer)),
            (Method::GET, "/api/v1/jobs/a", R(Viewer)),
            (Method::GET, "/api/v1/jobs/a/runs", R(Viewer)),
            (Method::GET, "/api/v1/events", R(Viewer)),
            (Method::GET, "/api/v1/workers", R(Viewer)),
            (Method::GET, "/api/v1/cron/preview", R(Viewer)),
            (Method::POST, "/api/v1/jobs/a/kill", R(Operator)),
            (Method::POST, "/api/v1/jobs/a/run", R(Operator)),
            (Method::POST, "/api/v1/jobs/a/pause", R(Operator)),
            (Method::POST, "/api/v1/jobs/a/resume", R(Operator)),
            (Method::PUT, "/api/v1/jobs/a", R(Admin)),
            // A job may be called `kill`: saving it is still an admin's.
            (Method::PUT, "/api/v1/jobs/kill", R(Admin)),
            (Method::DELETE, "/api/v1/jobs/a", R(Admin)),
            (Method::PUT, "/api/v1/jobs/a/kill", R(Admin)),
            (Method::GET, "/api/v1/tokens", R(Admin)),
            (Method::POST, "/api/v1/tokens", R(Admin)),
            (Method::DELETE, "/api/v1/tokens/0123", R(Admin)),
            (Method::GET, "/api/v1/audit", R(Admin)),
            // Unknown paths: reading is the UI's files, changing is refused.
            (Method::POST, "/", R(Admin)),
            (Method::POST, "/job/save/", R(Admin)),
            (Method::PUT, "/whatever", R(Admin)),
            (Method::GET, "/api/v1/nothing", R(Viewer)),
        ];
        for (method, path, expected) in table {
            assert_eq!(needs(method.clone(), path), expected, "{method} {path}");
        }
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn a_change_from_another_origin_is_refused() {
        let allowed = vec!["https://ops.example.com".to_string()];
        let ok = |pairs: &[(&'static str, &str)]| same_origin(&headers(pairs), &allowed).is_ok();
        assert!(ok(&[]), "curl sends no Origin");
        assert!(ok(&[
            ("origin", "http://127.0.0.1:8070"),
            ("host", "127.0.0.1:8070")
        ]));
        assert!(ok(&[
            ("origin", "https://gdts.run.app"),
            ("host", "gdts.run.app")
        ]));
        assert!(ok(&[
            ("origin", "https://ops.example.com"),
            ("host", "gdts.run.app")
        ]));
        assert!(!ok(&[
            ("origin", "http://evil.example"),
            ("host", "127.0.0.1:8070")
        ]));
        assert!(!ok(&[
            ("origin", "http://127.0.0.1:9999"),
            ("host", "127.0.0.1:8070")
        ]));
        assert!(!ok(&[("origin", "null"), ("host", "127.0.0.1:8070")]));
        assert!(!ok(&[("sec-fetch-site", "cross-site")]));
        assert!(ok(&[("sec-fetch-site", "same-origin")]));
    }

    #[test]
    fn the_forwarded_address_is_the_end_of_the_chain() {
        let padded = format!("203.0.113.7,{}, 198.51.100.9", "x".repeat(300));
        let tail = forwarded_tail(&padded);
        assert!(tail.ends_with("198.51.100.9"), "{tail}");
        assert!(tail.chars().count() <= 200);
        assert_eq!(forwarded_tail("a, b, c, d"), "b, c, d");
    }

    #[test]
    fn with_auth_off_only_addresses_and_listed_names_are_served() {
        let allowed = vec!["https://ops.example.com".to_string()];
        let ok = |host: &str| rebinding_safe_host(&headers(&[("host", host)]), &allowed);
        for host in [
            "127.0.0.1:8070",
            "10.0.0.5",
            "[::1]:8070",
            "localhost:8070",
            "ops.example.com",
        ] {
            assert!(ok(host), "{host}");
        }
        for host in [
            "rebind.evil.example:8070",
            "evil.example",
            "127.0.0.1.nip.io",
        ] {
            assert!(!ok(host), "{host}");
        }
    }

    #[test]
    fn cookies_are_found_among_others() {
        let h = headers(&[("cookie", "a=1; gdts_session=abc ; b=2")]);
        assert_eq!(cookie(&h, SESSION_COOKIE).as_deref(), Some("abc"));
        assert_eq!(
            cookie(&headers(&[("cookie", "gdts_session=")]), SESSION_COOKIE),
            None
        );
        assert_eq!(cookie(&headers(&[]), SESSION_COOKIE), None);
    }

    #[test]
    fn the_session_cookie_is_secure_except_on_plain_loopback() {
        let config = AuthConfig::from_lookup(&|_| None).unwrap();
        assert!(!cookie_secure(
            &config,
            &headers(&[("host", "127.0.0.1:8070")])
        ));
        assert!(!cookie_secure(
            &config,
            &headers(&[("host", "localhost:8070")])
        ));
        assert!(cookie_secure(
            &config,
            &headers(&[("host", "gdts.run.app")])
        ));
        assert!(cookie_secure(
            &config,
            &headers(&[("host", "127.0.0.1:8080"), ("x-forwarded-proto", "https")])
        ));
    }

    #[test]
    fn configuration_is_checked() {
        let cfg = |pairs: &'static [(&'static str, &'static str)]| {
            AuthConfig::from_lookup(&move |k| {
                pairs
                    .iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| v.to_string())
            })
        };
        let default = cfg(&[]).unwrap();
        assert!(default.enabled, "authentication is on unless turned off");
        assert!(!default.has_bootstrap());
        assert!(!cfg(&[("GDTS_AUTH", "off")]).unwrap().enabled);
        assert!(cfg(&[("GDTS_AUTH", "maybe")]).is_err());
        let short = cfg(&[("GDTS_ADMIN_TOKEN", "secret")]).unwrap_err();
        assert!(short.contains("too short"), "{short}");
        let c = cfg(&[("GDTS_ADMIN_TOKEN", "0123456789abcdef0123456789abcdef")]).unwrap();
        assert!(c.is_bootstrap("0123456789abcdef0123456789abcdef"));
        assert!(!c.is_bootstrap("0123456789abcdef0123456789abcdeF"));
        assert!(
            !format!("{c:?}").contains("0123"),
            "the token is never printed"
        );
        assert!(cfg(&[("GDTS_ALLOWED_ORIGINS", "ops.example.com")]).is_err());
        assert_eq!(
            cfg(&[(
                "GDTS_ALLOWED_ORIGINS",
                "https://Ops.example.com/, http://a:1"
            )])
            .unwrap()
            .allowed_origins,
            vec!["https://ops.example.com", "http://a:1"]
        );
        assert!(cfg(&[("GDTS_MAX_BODY_BYTES", "10")]).is_err());
    }
}
