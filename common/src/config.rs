//! Configuration pieces shared by the manager and the workers, read from
//! `GDTS_*` environment variables. Reading takes a lookup function so tests
//! never touch the process environment.

use std::time::Duration;

/// A source of configuration values (normally `std::env::var`).
pub type Lookup<'a> = &'a dyn Fn(&str) -> Option<String>;

/// Where etcd and MongoDB are, and how keys are namespaced.
#[derive(Debug, Clone, PartialEq)]
pub struct StoreConfig {
    /// `GDTS_ETCD_ENDPOINTS`: comma-separated etcd client URLs.
    /// Default `http://127.0.0.1:2379`.
    pub etcd_endpoints: Vec<String>,
    /// `GDTS_ETCD_PREFIX`: every key lives under it. Default `/gdts/`.
    pub etcd_prefix: String,
    /// `GDTS_MONGO_URI`: MongoDB connection string. Default
    /// `mongodb://127.0.0.1:27017`. May hold credentials: never logged.
    pub mongo_uri: String,
    /// `GDTS_MONGO_DB`: database holding the run log. Default `gdts`.
    pub mongo_db: String,
}

impl StoreConfig {
    pub fn from_lookup(get: Lookup) -> Result<Self, String> {
        let etcd_endpoints: Vec<String> = get("GDTS_ETCD_ENDPOINTS")
            .unwrap_or_else(|| "http://127.0.0.1:2379".into())
            .split(',')
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect();
        if etcd_endpoints.is_empty() {
            return Err("GDTS_ETCD_ENDPOINTS: no endpoint given".into());
        }
        let etcd_prefix = get("GDTS_ETCD_PREFIX").unwrap_or_else(|| "/gdts/".into());
        if etcd_prefix.is_empty() {
            return Err("GDTS_ETCD_PREFIX: must not be empty".into());
        }
        Ok(StoreConfig {
            etcd_endpoints,
            etcd_prefix,
            mongo_uri: get("GDTS_MONGO_URI").unwrap_or_else(|| "mongodb://127.0.0.1:27017".into()),
            mongo_db: get("GDTS_MONGO_DB").unwrap_or_else(|| "gdts".into()),
        })
    }
}

/// Where large run outputs go.
#[derive(Debug, Clone, PartialEq)]
pub struct GcsConfig {
    /// `GDTS_GCS_BUCKET`: bucket for outputs above the inline cap. Unset:
    /// outputs are only kept inline (truncated to their tail).
    pub bucket: String,
    /// `GDTS_GCS_ENDPOINT`: storage endpoint, for an emulator such as
    /// fake-gcs-server (requests are then unauthenticated). Unset: Google
    /// Cloud Storage with Application Default Credentials.
    pub endpoint: Option<String>,
}

impl GcsConfig {
    pub fn from_lookup(get: Lookup) -> Result<Option<Self>, String> {
        let Some(bucket) = get("GDTS_GCS_BUCKET").filter(|b| !b.trim().is_empty()) else {
            return Ok(None);
        };
        let bucket = bucket.trim().to_string();
        let ok = (3..=222).contains(&bucket.len())
            && bucket.chars().all(|c| {
                c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '_' | '.')
            });
        if !ok {
            return Err(format!("GDTS_GCS_BUCKET: {bucket:?} is not a bucket name"));
        }
        Ok(Some(GcsConfig {
            bucket,
            endpoint: get("GDTS_GCS_ENDPOINT").filter(|e| !e.trim().is_empty()),
        }))
    }

    /// The `gs://` URI of an object in this bucket.
    pub fn uri(&self, object: &str) -> String {
        format!("gs://{}/{}", self.bucket, object)
    }

    /// The object name of a `gs://` URI in this bucket.
    pub fn object_of<'a>(&self, uri: &'a str) -> Option<&'a str> {
        uri.strip_prefix("gs://")?
            .strip_prefix(self.bucket.as_str())?
            .strip_prefix('/')
    }
}

/// `GDTS_LOG_FORMAT`: `text` (default) or `json` (one JSON object per line,
/// for Cloud Logging).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

impl LogFormat {
    pub fn from_lookup(get: Lookup) -> Result<Self, String> {
        match get("GDTS_LOG_FORMAT").as_deref() {
            None | Some("text") => Ok(LogFormat::Text),
            Some("json") => Ok(LogFormat::Json),
            Some(other) => Err(format!(
                "GDTS_LOG_FORMAT: {other:?} is not one of text, json"
            )),
        }
    }
}

/// Reads an optional number-of-milliseconds variable.
pub fn duration_ms(get: Lookup, var: &str, default: Duration) -> Result<Duration, String> {
    Ok(match get(var) {
        None => default,
        Some(v) => Duration::from_millis(
            v.trim()
                .parse()
                .map_err(|_| format!("{var}: {v:?} is not a whole number of milliseconds"))?,
        ),
    })
}

/// Reads an optional unsigned integer variable.
pub fn number(get: Lookup, var: &str, default: u64) -> Result<u64, String> {
    match get(var) {
        None => Ok(default),
        Some(v) => v
            .trim()
            .parse()
            .map_err(|_| format!("{var}: {v:?} is not a non-negative whole number")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn lookup(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn defaults() {
        let c = StoreConfig::from_lookup(&lookup(&[])).unwrap();
        assert_eq!(c.etcd_endpoints, vec!["http://127.0.0.1:2379"]);
        assert_eq!(c.etcd_prefix, "/gdts/");
        assert_eq!(c.mongo_db, "gdts");
    }

    #[test]
    fn endpoints_split_and_errors_name_the_variable() {
        let c = StoreConfig::from_lookup(&lookup(&[(
            "GDTS_ETCD_ENDPOINTS",
            "http://a:1, http://b:2",
        )]))
        .unwrap();
        assert_eq!(c.etcd_endpoints, vec!["http://a:1", "http://b:2"]);
        let e = StoreConfig::from_lookup(&lookup(&[("GDTS_ETCD_ENDPOINTS", " , ")])).unwrap_err();
        assert!(e.starts_with("GDTS_ETCD_ENDPOINTS"));
        let e = duration_ms(&lookup(&[("X", "soon")]), "X", Duration::ZERO).unwrap_err();
        assert!(e.starts_with("X:"));
    }
}
