//! Manager configuration, from environment variables (see README).

use gdts_common::config::{GcsConfig, LogFormat, Lookup, StoreConfig};

#[derive(Debug, Clone)]
pub struct ManagerConfig {
    pub store: StoreConfig,
    /// `GDTS_BIND`: address to listen on. Default `0.0.0.0`.
    pub bind: String,
    /// `PORT` (Cloud Run sets it): HTTP port. Default 8070.
    pub port: u16,
    pub log_format: LogFormat,
    /// `GDTS_LOG_RETENTION_DAYS`: run records older than this are deleted by
    /// a MongoDB TTL index. Unset: kept forever.
    pub log_retention_days: Option<u64>,
    /// The outputs bucket (`GDTS_GCS_BUCKET`, `GDTS_GCS_ENDPOINT`), to serve
    /// whole outputs.
    pub gcs: Option<GcsConfig>,
    /// `GDTS_WEBROOT`: the web UI's directory (`webroot/` with its
    /// `node_modules`), served at `/`. Unset: `/` is a plain-text index.
    pub webroot: Option<std::path::PathBuf>,
    /// Authentication, cross-origin defence, body size (see `auth.rs`).
    pub auth: crate::auth::AuthConfig,
    /// Google's Identity-Aware Proxy (`GDTS_IAP_*`, see `iap.rs`).
    pub iap: Option<crate::iap::IapConfig>,
    /// `GDTS_SSE_MAX_STREAMS`: event streams open at once. Default 1000.
    pub sse_max_streams: usize,
    /// `GDTS_SSE_MAX_PER_CLIENT`: event streams one client may hold open.
    /// Default 10.
    pub sse_max_per_client: usize,
    /// `GDTS_SSE_RECHECK_SECS`: how often an open event stream checks its
    /// token or session again (1-3600). Default 30.
    pub sse_recheck_secs: usize,
}

fn count(get: Lookup, name: &str, default: usize, max: usize) -> Result<usize, String> {
    match get(name) {
        None => Ok(default),
        Some(v) => match v.trim().parse::<usize>() {
            Ok(n) if (1..=max).contains(&n) => Ok(n),
            _ => Err(format!("{name}: {v:?} is not a whole number in 1..={max}")),
        },
    }
}

impl ManagerConfig {
    pub fn from_lookup(get: Lookup) -> Result<Self, String> {
        let port = match get("PORT") {
            None => 8070,
            Some(p) => p
                .trim()
                .parse()
                .map_err(|_| format!("PORT: {p:?} is not a port number"))?,
        };
        Ok(ManagerConfig {
            auth: crate::auth::AuthConfig::from_lookup(get)?,
            iap: crate::iap::IapConfig::from_lookup(get)?,
            sse_max_streams: count(get, "GDTS_SSE_MAX_STREAMS", 1000, 100_000)?,
            sse_max_per_client: count(get, "GDTS_SSE_MAX_PER_CLIENT", 10, 10_000)?,
            sse_recheck_secs: count(get, "GDTS_SSE_RECHECK_SECS", 30, 3600)?,
            store: StoreConfig::from_lookup(get)?,
            bind: get("GDTS_BIND").unwrap_or_else(|| "0.0.0.0".into()),
            port,
            log_format: LogFormat::from_lookup(get)?,
            gcs: GcsConfig::from_lookup(get)?,
            webroot: match get("GDTS_WEBROOT").filter(|v| !v.trim().is_empty()) {
                None => None,
                Some(dir) => {
                    let dir = std::path::PathBuf::from(dir);
                    if !dir.join("index.html").is_file() {
                        return Err(format!(
                            "GDTS_WEBROOT: {} has no index.html (the web UI's directory is webroot/)",
                            dir.display()
                        ));
                    }
                    Some(dir)
                }
            },
            log_retention_days: match get("GDTS_LOG_RETENTION_DAYS") {
                None => None,
                Some(v) => match v.trim().parse::<u64>() {
                    Ok(d) if (1..=36500).contains(&d) => Some(d),
                    _ => {
                        return Err(format!(
                        "GDTS_LOG_RETENTION_DAYS: {v:?} is not a whole number of days in 1..=36500"
                    ))
                    }
                },
            },
        })
    }
}
