//! Google's Identity-Aware Proxy in front of the manager: IAP signs every
//! request it lets through with a JWT in `x-goog-iap-jwt-assertion` (ES256,
//! issuer `https://cloud.google.com/iap`, audience naming the service). The
//! manager checks the signature against IAP's public keys, the issuer, the
//! audience and the times, and maps the verified e-mail to a role
//! (`GDTS_IAP_ROLES`). The assertion carries no groups: map domains
//! (`*@example.com`) or people, and let IAM on IAP decide who passes at all.
//!
//! Settings: `GDTS_IAP_AUDIENCE` (turns it on), `GDTS_IAP_KEYS` (an https
//! URL of a JWK set, default Google's, fetched at start and hourly and when
//! an unknown key id shows up; or a file or inline JSON, for tests),
//! `GDTS_IAP_ROLES` (`admin=alice@example.com;operator=*@example.com`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use gdts_common::config::Lookup;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use tokio::sync::RwLock;

use crate::auth::{Identity, Role, Via};

pub const HEADER: &str = "x-goog-iap-jwt-assertion";
pub const ISSUER: &str = "https://cloud.google.com/iap";
pub const GOOGLE_KEYS: &str = "https://www.gstatic.com/iap/verify/public_key-jwk";
/// How often the keys are fetched again; also the least time between two
/// fetches for an unknown key id.
const REFRESH: Duration = Duration::from_secs(3600);
const MIN_REFETCH: Duration = Duration::from_secs(60);

#[derive(Debug, Clone)]
pub enum KeySource {
    Url(String),
    Fixed(JwkSet),
}

/// Who gets which role: patterns are an e-mail, `*@domain` or `*`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RoleMap(Vec<(Role, String)>);

impl RoleMap {
    pub fn parse(raw: &str) -> Result<RoleMap, String> {
        let mut out = Vec::new();
        for part in raw.split(';').map(str::trim).filter(|p| !p.is_empty()) {
            let (role, patterns) = part
                .split_once('=')
                .ok_or_else(|| format!("GDTS_IAP_ROLES: {part:?} is not role=pattern,..."))?;
            let role = match role.trim() {
                "viewer" => Role::Viewer,
                "operator" => Role::Operator,
                "admin" => Role::Admin,
                other => {
                    return Err(format!(
                        "GDTS_IAP_ROLES: {other:?} is not viewer, operator or admin"
                    ))
                }
            };
            for p in patterns.split(',').map(str::trim).filter(|p| !p.is_empty()) {
                let ok = p == "*"
                    || p.strip_prefix("*@")
                        .is_some_and(|d| !d.is_empty() && !d.contains('@'))
                    || (p.matches('@').count() == 1 && !p.contains('*'));
                if !ok {
                    return Err(format!(
                        "GDTS_IAP_ROLES: {p:?} is not an e-mail, *@domain or *"
                    ));
                }
                out.push((role, p.to_ascii_lowercase()));
            }
        }
        Ok(RoleMap(out))
    }

    /// The highest role any pattern gives `email`.
    pub fn role_of(&self, email: &str) -> Option<Role> {
        let email = email.to_ascii_lowercase();
        let domain = email.rsplit_once('@').map(|(_, d)| d);
        self.0
            .iter()
            .filter(|(_, p)| {
                p == "*" || *p == email || p.strip_prefix("*@").is_some_and(|d| Some(d) == domain)
            })
            .map(|(r, _)| *r)
            .max()
    }
}

#[derive(Debug, Clone)]
pub struct IapConfig {
    pub audience: String,
    pub keys: KeySource,
    pub roles: RoleMap,
}

impl IapConfig {
    pub fn from_lookup(get: Lookup) -> Result<Option<IapConfig>, String> {
        let Some(audience) = get("GDTS_IAP_AUDIENCE").filter(|a| !a.trim().is_empty()) else {
            return Ok(None);
        };
        let keys = match get("GDTS_IAP_KEYS").filter(|k| !k.trim().is_empty()) {
            None => KeySource::Url(GOOGLE_KEYS.into()),
            Some(k) if k.trim().starts_with("https://") => KeySource::Url(k.trim().into()),
            Some(k) => {
                let text = if k.trim_start().starts_with('{') {
                    k
                } else {
                    std::fs::read_to_string(k.trim())
                        .map_err(|e| format!("GDTS_IAP_KEYS: reading {}: {e}", k.trim()))?
                };
                KeySource::Fixed(
                    serde_json::from_str(&text)
                        .map_err(|e| format!("GDTS_IAP_KEYS: not a JWK set: {e}"))?,
                )
            }
        };
        let roles = RoleMap::parse(&get("GDTS_IAP_ROLES").unwrap_or_default())?;
        if roles.0.is_empty() {
            return Err("GDTS_IAP_AUDIENCE is set but GDTS_IAP_ROLES gives nobody a role".into());
        }
        Ok(Some(IapConfig {
            audience: audience.trim().to_string(),
            keys,
            roles,
        }))
    }
}

/// Checks IAP assertions; keeps IAP's keys fresh.
pub struct Iap {
    config: IapConfig,
    keys: RwLock<(JwkSet, Option<Instant>)>,
    http: reqwest::Client,
}

#[derive(Debug, Deserialize)]
struct Claims {
    email: String,
}

/// Why an assertion was refused.
#[derive(Debug, PartialEq)]
pub enum Refused {
    /// Not a valid assertion for this audience.
    Invalid(String),
    /// Valid, but the e-mail has no role.
    NoRole(String),
}

impl Iap {
    pub fn new(config: IapConfig) -> Arc<Iap> {
        let initial = match &config.keys {
            KeySource::Fixed(set) => set.clone(),
            KeySource::Url(_) => JwkSet { keys: Vec::new() },
        };
        Arc::new(Iap {
            config,
            keys: RwLock::new((initial, None)),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .expect("an HTTP client builds"),
        })
    }

    /// Fetches the keys now and then every hour (URL sources only).
    pub fn spawn_refresh(self: &Arc<Self>) {
        if !matches!(self.config.keys, KeySource::Url(_)) {
            return;
        }
        let me = self.clone();
        tokio::spawn(async move {
            loop {
                me.refetch().await;
                tokio::time::sleep(REFRESH).await;
            }
        });
    }

    async fn refetch(&self) {
        let KeySource::Url(url) = &self.config.keys else {
            return;
        };
        {
            let mut keys = self.keys.write().await;
            if keys.1.is_some_and(|at| at.elapsed() < MIN_REFETCH) {
                return;
            }
            keys.1 = Some(Instant::now());
        }
        let fetched = async {
            self.http
                .get(url)
                .send()
                .await?
                .error_for_status()?
                .json::<JwkSet>()
                .await
        }
        .await;
        match fetched {
            Ok(set) => {
                tracing::info!(keys = set.keys.len(), "IAP keys fetched");
                self.keys.write().await.0 = set;
            }
            Err(e) => tracing::warn!(error = %e, url, "fetching IAP's keys failed"),
        }
    }

    /// Who the assertion says is calling.
    pub async fn identify(&self, assertion: &str) -> Result<Identity, Refused> {
        let bad = |why: String| Refused::Invalid(why);
        let header =
            jsonwebtoken::decode_header(assertion).map_err(|e| bad(format!("not a JWT: {e}")))?;
        if header.alg != Algorithm::ES256 {
            return Err(bad(format!("{:?} is not IAP's ES256", header.alg)));
        }
        let kid = header.kid.ok_or_else(|| bad("no key id".into()))?;
        let mut jwk = self.keys.read().await.0.find(&kid).cloned();
        if jwk.is_none() {
            // Keys rotate: fetch again (at most once a minute).
            self.refetch().await;
            jwk = self.keys.read().await.0.find(&kid).cloned();
        }
        let jwk = jwk.ok_or_else(|| bad(format!("unknown key id {kid:?}")))?;
        let key = DecodingKey::from_jwk(&jwk).map_err(|e| bad(format!("key {kid:?}: {e}")))?;
        let mut validation = Validation::new(Algorithm::ES256);
        validation.set_audience(&[&self.config.audience]);
        validation.set_issuer(&[ISSUER]);
        validation.set_required_spec_claims(&["exp", "iat", "aud", "iss"]);
        validation.leeway = 30;
        let data = jsonwebtoken::decode::<Claims>(assertion, &key, &validation)
            .map_err(|e| bad(e.to_string()))?;
        let email = data.claims.email;
        match self.config.roles.role_of(&email) {
            Some(role) => Ok(Identity {
                name: email,
                role,
                via: Via::Iap,
                token_id: None,
            }),
            None => Err(Refused::NoRole(email)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_go_to_emails_domains_and_everyone() {
        let m =
            RoleMap::parse("admin=Alice@Example.com; operator=*@example.com ;viewer=*").unwrap();
        assert_eq!(m.role_of("alice@example.com"), Some(Role::Admin));
        assert_eq!(m.role_of("bob@example.com"), Some(Role::Operator));
        assert_eq!(m.role_of("eve@other.org"), Some(Role::Viewer));
        let strict = RoleMap::parse("viewer=*@example.com").unwrap();
        assert_eq!(strict.role_of("eve@example.com.evil.org"), None);
        assert_eq!(strict.role_of("eve@sub.example.com"), None);
        for bad in [
            "admin",
            "root=a@b",
            "viewer=a*b@c",
            "viewer=*@",
            "viewer=a@b@c",
        ] {
            assert!(RoleMap::parse(bad).is_err(), "{bad}");
        }
    }
}
