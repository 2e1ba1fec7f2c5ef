//! The audit trail: every change made through the manager (who, when, what,
//! the thing before and after, from where), in MongoDB's `audit` collection,
//! read through `GET /api/v1/audit` (admin).
//!
//! A change is made first and recorded after: if MongoDB cannot take the
//! entry, the change stands and the entry goes to the log at error level
//! (a job's `env` values and webhook URLs redacted), so it still reaches
//! the logging backend. `before` and `after` are
//! kept as JSON text: a job's variables may have any name, and no document
//! store has to accept them as field names.

use std::time::Duration;

use mongodb::bson::{doc, Document};
use mongodb::options::FindOptions;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::auth::{Caller, Role, Via};
use crate::store::StoreError;

pub const AUDIT_COLLECTION: &str = "audit";
const WRITE_TIMEOUT: Duration = Duration::from_secs(3);

#[derive(Clone)]
pub struct Audit {
    entries: mongodb::Collection<Document>,
}

/// One change.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AuditEntry {
    /// Epoch milliseconds.
    pub at: i64,
    /// The token's name (`anonymous` with authentication off).
    pub actor: String,
    pub role: Option<Role>,
    pub via: Option<Via>,
    pub token_id: Option<String>,
    /// `job.save`, `job.delete`, `job.kill`, `job.run`, `job.pause`,
    /// `job.resume`, `token.create`, `token.revoke`, `session.create`.
    pub action: String,
    /// The job's name, the token's id, or who signed in.
    pub target: String,
    #[schema(value_type = Option<Object>)]
    pub before: Option<Value>,
    #[schema(value_type = Option<Object>)]
    pub after: Option<Value>,
    /// The peer address, and the `X-Forwarded-For` chain a proxy sent.
    pub from: String,
    pub user_agent: Option<String>,
}

impl Audit {
    pub fn new(db: &mongodb::Database) -> Audit {
        Audit {
            entries: db.collection(AUDIT_COLLECTION),
        }
    }

    pub async fn ensure_indexes(&self) -> Result<(), StoreError> {
        let by_time = mongodb::IndexModel::builder()
            .keys(doc! { "at": -1 })
            .build();
        let by_target = mongodb::IndexModel::builder()
            .keys(doc! { "target": 1, "at": -1 })
            .build();
        self.entries.create_indexes([by_time, by_target]).await?;
        Ok(())
    }

    /// Records a change made by `caller`. Never fails the change: see the
    /// module's doc.
    pub async fn record(
        &self,
        caller: &Caller,
        action: &str,
        target: &str,
        before: Option<Value>,
        after: Option<Value>,
    ) {
        let identity = caller.identity.as_ref();
        let entry = AuditEntry {
            at: chrono::Utc::now().timestamp_millis(),
            actor: caller.name(),
            role: identity.map(|i| i.role),
            via: identity.map(|i| i.via),
            token_id: identity.and_then(|i| i.token_id.clone()),
            action: action.to_string(),
            target: target.to_string(),
            before,
            after,
            from: caller.from.clone(),
            user_agent: caller.user_agent.clone(),
        };
        let document = to_document(&entry);
        let written = tokio::time::timeout(WRITE_TIMEOUT, self.entries.insert_one(document)).await;
        let failure = match written {
            Ok(Ok(_)) => return,
            Ok(Err(e)) => e.to_string(),
            Err(_) => format!("no answer within {WRITE_TIMEOUT:?}"),
        };
        tracing::error!(
            error = %failure,
            entry = %serde_json::to_string(&for_the_log(entry)).unwrap_or_default(),
            "audit entry not stored in MongoDB; kept here"
        );
    }

    /// A pause or resume: the flag before and after.
    pub async fn record_pause(&self, caller: &Caller, job: &str, was: bool, paused: bool) {
        let action = if paused { "job.pause" } else { "job.resume" };
        let flag = |p: bool| Some(serde_json::json!({ "paused": p }));
        self.record(caller, action, job, flag(was), flag(paused))
            .await;
    }

    pub async fn page(
        &self,
        target: Option<&str>,
        skip: u64,
        limit: i64,
    ) -> Result<(Vec<AuditEntry>, u64), StoreError> {
        use futures::TryStreamExt;
        let filter = match target {
            Some(t) => doc! { "target": t },
            None => doc! {},
        };
        let total = self.entries.count_documents(filter.clone()).await?;
        let options = FindOptions::builder()
            .sort(doc! { "at": -1, "_id": -1 })
            .skip(skip)
            .limit(limit)
            .build();
        let docs: Vec<Document> = self
            .entries
            .find(filter)
            .with_options(options)
            .await?
            .try_collect()
            .await?;
        Ok((docs.iter().filter_map(from_document).collect(), total))
    }
}

fn to_document(e: &AuditEntry) -> Document {
    let json = |v: &Option<Value>| v.as_ref().map(|v| v.to_string());
    doc! {
        "at": e.at,
        "actor": &e.actor,
        "role": e.role.map(|r| r.as_str()),
        "via": e.via.map(Via::as_str),
        "tokenId": e.token_id.clone(),
        "action": &e.action,
        "target": &e.target,
        "before": json(&e.before),
        "after": json(&e.after),
        "from": &e.from,
        "userAgent": e.user_agent.clone(),
    }
}

fn from_document(d: &Document) -> Option<AuditEntry> {
    let text = |k: &str| d.get_str(k).ok().map(String::from);
    let json = |k: &str| text(k).and_then(|t| serde_json::from_str(&t).ok());
    Some(AuditEntry {
        at: d.get_i64("at").ok()?,
        actor: text("actor")?,
        role: text("role").and_then(|r| serde_json::from_value(Value::String(r)).ok()),
        via: text("via").and_then(|r| serde_json::from_value(Value::String(r)).ok()),
        token_id: text("tokenId"),
        action: text("action")?,
        target: text("target")?,
        before: json("before"),
        after: json("after"),
        from: text("from").unwrap_or_default(),
        user_agent: text("userAgent"),
    })
}

/// An entry as the log keeps it when MongoDB would not: a saved or deleted
/// job's `env` values and webhook URLs redacted, as for callers below
/// admin (the log reaches more people than the audit trail does).
fn for_the_log(mut entry: AuditEntry) -> AuditEntry {
    if entry.action.starts_with("job.") {
        for side in [&mut entry.before, &mut entry.after].into_iter().flatten() {
            gdts_common::JobSpec::redact_secrets_in_json(side);
        }
    }
    entry
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_logged_entry_holds_no_secret_of_the_job() {
        let job = serde_json::json!({
            "name": "j", "command": "true", "cronExpr": "* * * * *",
            "env": {"TOKEN": "s3cret"},
            "notify": {"webhooks": ["https://hooks.example/services/s3cret"]},
        });
        let entry = |action: &str, before: Option<Value>, after: Option<Value>| AuditEntry {
            at: 0,
            actor: "a".into(),
            role: None,
            via: None,
            token_id: None,
            action: action.into(),
            target: "j".into(),
            before,
            after,
            from: "127.0.0.1".into(),
            user_agent: None,
        };
        for (action, before, after) in [
            ("job.save", Some(job.clone()), Some(job.clone())),
            ("job.save", None, Some(job.clone())),
            ("job.delete", Some(job.clone()), None),
        ] {
            let logged = serde_json::to_string(&for_the_log(entry(action, before, after))).unwrap();
            assert!(!logged.contains("s3cret"), "{logged}");
            assert!(
                logged.contains("TOKEN") && logged.contains("hooks.example"),
                "{logged}"
            );
        }
        // Other entries are logged as they are.
        let pause = entry(
            "job.pause",
            Some(serde_json::json!({"paused": false})),
            None,
        );
        let logged = serde_json::to_string(&for_the_log(pause)).unwrap();
        assert!(logged.contains("\"paused\":false"), "{logged}");
    }
}
