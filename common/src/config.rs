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
    /// TLS and credentials for etcd.
    pub etcd_security: EtcdSecurity,
}

/// How a process proves itself to etcd and checks etcd's certificate:
/// `GDTS_ETCD_CA` (the CA that signed etcd's certificate), `GDTS_ETCD_CERT`
/// and `GDTS_ETCD_KEY` (this process's client certificate; with etcd's
/// `--client-cert-auth` its CN is the etcd user unless a user is given),
/// `GDTS_ETCD_USER` and `GDTS_ETCD_PASSWORD` (etcd authentication). Each
/// PEM variable holds the PEM text itself or the path of a file with it
/// (Cloud Run passes secrets as variables, VMs as files).
#[derive(Clone, PartialEq, Default)]
pub struct EtcdSecurity {
    pub ca_pem: Option<String>,
    /// Certificate and key, PEM.
    pub identity_pem: Option<(String, String)>,
    /// User and password.
    pub user: Option<(String, String)>,
}

impl std::fmt::Debug for EtcdSecurity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdSecurity")
            .field("tls", &self.ca_pem.is_some())
            .field("client_certificate", &self.identity_pem.is_some())
            .field("user", &self.user.as_ref().map(|(u, _)| u))
            .finish()
    }
}

/// PEM text from a variable that holds it or names a file with it.
fn pem(get: Lookup, name: &str) -> Result<Option<String>, String> {
    let Some(value) = get(name).filter(|v| !v.trim().is_empty()) else {
        return Ok(None);
    };
    let text = if value.trim_start().starts_with("-----BEGIN") {
        value
    } else {
        std::fs::read_to_string(value.trim())
            .map_err(|e| format!("{name}: reading {}: {e}", value.trim()))?
    };
    if !text.contains("-----BEGIN") {
        return Err(format!("{name}: not PEM (no -----BEGIN line)"));
    }
    Ok(Some(text))
}

impl EtcdSecurity {
    pub fn from_lookup(get: Lookup, endpoints: &[String]) -> Result<Self, String> {
        let ca_pem = pem(get, "GDTS_ETCD_CA")?;
        let identity_pem = match (pem(get, "GDTS_ETCD_CERT")?, pem(get, "GDTS_ETCD_KEY")?) {
            (Some(cert), Some(key)) => Some((cert, key)),
            (None, None) => None,
            _ => return Err("GDTS_ETCD_CERT and GDTS_ETCD_KEY go together".into()),
        };
        let user = match (
            get("GDTS_ETCD_USER").filter(|v| !v.trim().is_empty()),
            get("GDTS_ETCD_PASSWORD").filter(|v| !v.is_empty()),
        ) {
            (Some(u), Some(p)) => Some((u.trim().to_string(), p)),
            (None, None) => None,
            (Some(_), None) => return Err("GDTS_ETCD_USER needs GDTS_ETCD_PASSWORD".into()),
            (None, Some(_)) => return Err("GDTS_ETCD_PASSWORD needs GDTS_ETCD_USER".into()),
        };
        let https = endpoints
            .iter()
            .filter(|e| e.starts_with("https://"))
            .count();
        if https != 0 && https != endpoints.len() {
            return Err("GDTS_ETCD_ENDPOINTS: mixes https:// and other endpoints".into());
        }
        match (https > 0, ca_pem.is_some()) {
            (true, false) => {
                return Err(
                    "GDTS_ETCD_ENDPOINTS uses https:// but GDTS_ETCD_CA is not set (the CA that signed etcd's certificate)"
                        .into(),
                )
            }
            (false, true) => {
                return Err("GDTS_ETCD_CA is set but GDTS_ETCD_ENDPOINTS are not https://".into())
            }
            (false, false) if identity_pem.is_some() => {
                return Err("GDTS_ETCD_CERT needs https:// endpoints and GDTS_ETCD_CA".into())
            }
            _ => {}
        }
        if user.is_some() && https == 0 {
            return Err(
                "GDTS_ETCD_USER: a password is not sent over plain http://; use https:// endpoints and GDTS_ETCD_CA"
                    .into(),
            );
        }
        Ok(EtcdSecurity {
            ca_pem,
            identity_pem,
            user,
        })
    }
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
            etcd_security: EtcdSecurity::from_lookup(get, &etcd_endpoints)?,
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

    #[test]
    fn etcd_security_is_checked_and_never_printed() {
        const PEM: &str = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
        let https = ("GDTS_ETCD_ENDPOINTS", "https://a:2379");
        let c = StoreConfig::from_lookup(&lookup(&[
            https,
            ("GDTS_ETCD_CA", PEM),
            ("GDTS_ETCD_CERT", PEM),
            ("GDTS_ETCD_KEY", PEM),
            ("GDTS_ETCD_USER", "gdts-manager"),
            ("GDTS_ETCD_PASSWORD", "hunter2-long"),
        ]))
        .unwrap();
        assert_eq!(c.etcd_security.ca_pem.as_deref(), Some(PEM));
        assert!(c.etcd_security.identity_pem.is_some());
        let shown = format!("{c:?}");
        assert!(
            !shown.contains("hunter2") && !shown.contains("MIIB"),
            "{shown}"
        );
        let err = |pairs: &[(&str, &str)]| StoreConfig::from_lookup(&lookup(pairs)).unwrap_err();
        assert!(err(&[https]).contains("GDTS_ETCD_CA"));
        assert!(err(&[("GDTS_ETCD_CA", PEM)]).contains("not https"));
        assert!(
            err(&[https, ("GDTS_ETCD_CA", PEM), ("GDTS_ETCD_CERT", PEM)]).contains("go together")
        );
        assert!(err(&[("GDTS_ETCD_USER", "u")]).contains("GDTS_ETCD_PASSWORD"));
        assert!(err(&[("GDTS_ETCD_USER", "u"), ("GDTS_ETCD_PASSWORD", "p")]).contains("plain"));
        assert!(err(&[https, ("GDTS_ETCD_CA", "/no/such/file.pem")]).contains("reading"));
        assert!(err(&[("GDTS_ETCD_ENDPOINTS", "https://a:1,http://b:2")]).contains("mixes"));
    }
}
