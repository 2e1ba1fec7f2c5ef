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

use etcd_client::{Client, PutOptions};
use gdts_common::keys::Keys;
use gdts_runtime::etcd_pages::RangePages;
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;

use crate::auth::{self, AuthConfig, Identity, Role, Via};
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
    pub async fn start_session(
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

    pub async fn end_session(&self, secret: &str) -> Result<(), StoreError> {
        if is_lower_hex(secret, 64) {
            self.etcd
                .kv_client()
                .delete(self.session_key(secret), None)
                .await?;
        }
        Ok(())
    }
}
