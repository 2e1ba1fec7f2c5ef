//! The JSON API over HTTP: the base URL and token, and errors that say what
//! the server said.

use std::time::Duration;

use anyhow::Context;
use reqwest::{Method, StatusCode};
use serde_json::Value;

/// A request the server refused, with its status and message.
#[derive(Debug)]
pub struct ApiFailure {
    pub status: StatusCode,
    pub field: Option<String>,
    pub message: String,
}

impl std::fmt::Display for ApiFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.field {
            Some(field) => write!(
                f,
                "{} ({}): {field}: {}",
                self.status.as_u16(),
                reason(self.status),
                self.message
            ),
            None => write!(
                f,
                "{} ({}): {}",
                self.status.as_u16(),
                reason(self.status),
                self.message
            ),
        }
    }
}

impl std::error::Error for ApiFailure {}

fn reason(status: StatusCode) -> &'static str {
    status.canonical_reason().unwrap_or("error")
}

#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
}

/// An answer: the `ETag` if any, and the JSON body (`Null` if none).
pub struct Answer {
    pub etag: Option<String>,
    pub body: Value,
}

impl Client {
    pub fn new(url: &str, token: Option<String>) -> anyhow::Result<Client> {
        let base = url.trim_end_matches('/').to_string();
        anyhow::ensure!(
            base.starts_with("http://") || base.starts_with("https://"),
            "GDTS_URL must start with http:// or https://, not {base:?}"
        );
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .user_agent(concat!("gdts/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Client { http, base, token })
    }

    pub fn request(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        let mut r = self
            .http
            .request(method, format!("{}/api/v1{path}", self.base));
        if let Some(t) = &self.token {
            r = r.bearer_auth(t);
        }
        r
    }

    /// Sends `req` (with a 30 s timeout); a 4xx or 5xx becomes an [`ApiFailure`].
    pub async fn send(&self, req: reqwest::RequestBuilder) -> anyhow::Result<Answer> {
        let resp = req
            .timeout(Duration::from_secs(30))
            .send()
            .await
            .with_context(|| format!("cannot reach the manager at {}", self.base))?;
        let status = resp.status();
        let etag = resp
            .headers()
            .get(reqwest::header::ETAG)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let text = resp.text().await?;
        let body: Value = if text.trim().is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        if status.is_client_error() || status.is_server_error() {
            let error = &body["error"];
            return Err(ApiFailure {
                status,
                field: error["field"].as_str().map(str::to_string),
                message: error["message"]
                    .as_str()
                    .map(str::to_string)
                    .unwrap_or_else(|| body.to_string()),
            }
            .into());
        }
        Ok(Answer { etag, body })
    }

    pub async fn get(&self, path: &str) -> anyhow::Result<Answer> {
        self.send(self.request(Method::GET, path)).await
    }

    pub fn base(&self) -> &str {
        &self.base
    }
}

/// A path segment, escaped (job names are `[A-Za-z0-9._-]`, but a typed
/// name may be anything).
pub fn segment(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
