//! Winning a (job, tick) in etcd. One transaction creates the tick's claim
//! key only if no claim for it exists and the job is still exactly the
//! definition this worker scheduled (same `mod_revision`, so neither deleted
//! nor changed). See "The run-once argument" in ARCHITECTURE.md.

use std::time::Duration;

use etcd_client::{Client, Compare, CompareOp, PutOptions, Txn, TxnOp};
use gdts_common::keys::Keys;
use gdts_common::timing::{CLAIM_LEASE_ROTATION, CLAIM_TTL};
use gdts_common::values::ClaimRecord;
use gdts_common::JobName;
use tokio::sync::Mutex;
use tokio::time::Instant;

/// The outcome of one claim attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// This worker runs the tick. `revision` is the etcd revision of the
    /// claim, unique per claim and used to order kill requests after it.
    Won { revision: i64 },
    /// Another worker has the tick, or the job changed or was deleted.
    Lost,
}

/// Hands out claim leases: a fresh one every `CLAIM_LEASE_ROTATION`, shared
/// by every claim made meanwhile, never kept alive, with a TTL that lets each
/// claim live at least `CLAIM_TTL`.
pub struct Claimer {
    client: Client,
    keys: Keys,
    worker_id: String,
    lease: Mutex<Option<(i64, Instant)>>,
}

impl Claimer {
    pub fn new(client: Client, keys: Keys, worker_id: String) -> Self {
        Claimer {
            client,
            keys,
            worker_id,
            lease: Mutex::new(None),
        }
    }

    async fn current_lease(&self) -> Result<i64, etcd_client::Error> {
        let mut guard = self.lease.lock().await;
        if let Some((id, granted)) = *guard {
            if granted.elapsed() < CLAIM_LEASE_ROTATION {
                return Ok(id);
            }
        }
        let ttl: Duration = CLAIM_TTL + CLAIM_LEASE_ROTATION;
        let granted_at = Instant::now();
        let resp = self
            .client
            .lease_client()
            .grant(ttl.as_secs() as i64, None)
            .await?;
        *guard = Some((resp.id(), granted_at));
        Ok(resp.id())
    }

    /// Forget the current lease (e.g. after etcd said it does not exist).
    async fn drop_lease(&self) {
        *self.lease.lock().await = None;
    }

    pub async fn try_claim(
        &self,
        job: &JobName,
        job_revision: i64,
        tick_ms: i64,
        now_ms: i64,
    ) -> Result<Claim, etcd_client::Error> {
        let lease = self.current_lease().await?;
        let claim_key = self.keys.claim(job, tick_ms);
        let value = serde_json::to_vec(&ClaimRecord {
            worker: self.worker_id.clone(),
            claimed_at: now_ms,
        })
        .expect("a claim record serializes");
        let txn = Txn::new()
            .when(vec![
                Compare::mod_revision(self.keys.job(job), CompareOp::Equal, job_revision),
                Compare::create_revision(claim_key.as_str(), CompareOp::Equal, 0),
            ])
            .and_then(vec![TxnOp::put(
                claim_key,
                value,
                Some(PutOptions::new().with_lease(lease)),
            )]);
        let resp = match self.client.kv_client().txn(txn).await {
            Ok(resp) => resp,
            Err(e) => {
                // The lease may be why (expired while etcd was unreachable, or
                // lost with etcd's data): the next attempt starts a new one.
                self.drop_lease().await;
                return Err(e);
            }
        };
        if !resp.succeeded() {
            return Ok(Claim::Lost);
        }
        let revision = resp.header().map(|h| h.revision()).unwrap_or_default();
        Ok(Claim::Won { revision })
    }
}
