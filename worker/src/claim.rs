//! Winning a run in etcd. One transaction creates the run's claim key only if
//! no claim for it exists and the job is still exactly the definition this
//! worker scheduled (same `mod_revision`, so neither deleted nor changed). In
//! the same transaction it raises the job's watermark (`high-water/{job}`), applies
//! the overlap policy against the job's `running/` keys, and records the run
//! as running under this worker's lease. See "The run-once argument" in
//! ARCHITECTURE.md.

use std::time::Duration;

use etcd_client::{Client, Compare, CompareOp, PutOptions, Txn, TxnOp, TxnOpResponse};
use gdts_common::job::Overlap;
use gdts_common::keys::{watermark_value, Keys, RunKey};
use gdts_common::timing::{CLAIM_LEASE_ROTATION, CLAIM_TTL};
use gdts_common::values::{ClaimRecord, KillRequest, RunningRecord};
use gdts_common::JobName;
use tokio::sync::Mutex;
use tokio::time::Instant;

/// The outcome of one claim attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// This worker runs it. `revision` is the etcd revision of the claim,
    /// unique per claim and used to order kill requests after it.
    Won { revision: i64 },
    /// This worker won the tick but must not run it: it records the skip,
    /// with `reason` as the record's `err`. A run of the job was in progress
    /// under `forbid` ([`SKIP_OVERLAP`]), or the win was learned too late to
    /// run under the overlap policy ([`SKIP_LEARNED_LATE`], see `run::claim`).
    Skipped { revision: i64, reason: &'static str },
    /// Another worker has it, or the job changed or was deleted, or (for a
    /// catch-up) the watermark shows it was already handled.
    Lost,
}

pub const SKIP_OVERLAP: &str = "skipped: a run of this job was still in progress (overlap forbid)";
pub const SKIP_LEARNED_LATE: &str =
    "skipped: this worker won the tick but lost etcd before it learned so, \
     and its registration expired meanwhile; running it then could have broken the overlap policy";

/// What to claim.
pub struct ClaimRequest<'a> {
    pub job: &'a JobName,
    pub job_revision: i64,
    pub run: &'a RunKey,
    pub overlap: Overlap,
    /// A catch-up tick (older than the lateness bound): the claim also
    /// requires the job's watermark to be below the tick, so a tick that was
    /// handled (even long ago, its claim key expired) is never run again.
    pub catch_up: bool,
    pub now_ms: i64,
}

impl<'a> ClaimRequest<'a> {
    /// A claim under the job's overlap policy, without the catch-up compare.
    pub fn new(job: &'a gdts_common::Job, job_revision: i64, run: &'a RunKey, now_ms: i64) -> Self {
        ClaimRequest {
            job: &job.name,
            job_revision,
            run,
            overlap: job.policy.overlap,
            catch_up: false,
            now_ms,
        }
    }
}

/// Claims for one worker. Claim keys share a lease opened every
/// `CLAIM_LEASE_ROTATION`, never kept alive, whose TTL lets each claim live at
/// least `CLAIM_TTL`. Running keys use the worker's registration lease, so they
/// vanish with a dead worker.
pub struct Claimer {
    client: Client,
    keys: Keys,
    worker_id: String,
    lease: Mutex<Option<(i64, Instant)>>,
    registration_lease: tokio::sync::watch::Receiver<i64>,
}

impl Claimer {
    pub fn new(
        client: Client,
        keys: Keys,
        worker_id: String,
        registration_lease: tokio::sync::watch::Receiver<i64>,
    ) -> Self {
        Claimer {
            client,
            keys,
            worker_id,
            lease: Mutex::new(None),
            registration_lease,
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

    async fn drop_lease(&self) {
        *self.lease.lock().await = None;
    }

    /// The job's watermark: the highest scheduled tick ever claimed.
    /// The registration lease running marks hang on now (0 if none).
    pub fn registration_lease_id(&self) -> i64 {
        *self.registration_lease.borrow()
    }

    /// What etcd holds for a claim this worker sent without learning the
    /// answer: `Won`/`Skipped` if the claim key records this very attempt
    /// (this worker and its `claimedAt`), `Lost` if it records another,
    /// `None` if there is no claim key (the attempt did not commit, or has
    /// not yet).
    pub async fn claim_outcome(
        &self,
        req: &ClaimRequest<'_>,
    ) -> Result<Option<Claim>, etcd_client::Error> {
        let resp = self
            .client
            .kv_client()
            .get(self.keys.claim_run(req.job, req.run), None)
            .await?;
        Ok(resp.kvs().first().map(|kv| {
            match serde_json::from_slice::<ClaimRecord>(kv.value()) {
                Ok(r) if r.worker == self.worker_id && r.claimed_at == req.now_ms => {
                    // The claim key is created by the claim transaction, so
                    // its create revision is the transaction's revision.
                    let revision = kv.create_revision();
                    if r.skipped {
                        Claim::Skipped {
                            revision,
                            reason: SKIP_OVERLAP,
                        }
                    } else {
                        Claim::Won { revision }
                    }
                }
                _ => Claim::Lost,
            }
        }))
    }

    pub async fn watermark(&self, job: &JobName) -> Result<Option<i64>, etcd_client::Error> {
        let resp = self
            .client
            .kv_client()
            .get(self.keys.last_tick(job), None)
            .await?;
        Ok(resp
            .kvs()
            .first()
            .and_then(|kv| std::str::from_utf8(kv.value()).ok()?.parse().ok()))
    }

    pub async fn try_claim(&self, req: &ClaimRequest<'_>) -> Result<Claim, ClaimError> {
        let running_lease = match *self.registration_lease.borrow() {
            0 => return Err(ClaimError::NotRegistered),
            id => id,
        };
        let claim_lease = self.current_lease().await?;
        let txn = self.claim_txn(req, claim_lease, running_lease);
        let resp = match self.client.kv_client().txn(txn).await {
            Ok(resp) => resp,
            Err(e) => {
                // The lease may be why (expired while etcd was unreachable, or
                // lost with etcd's data): the next attempt starts a new one.
                self.drop_lease().await;
                return Err(e.into());
            }
        };
        if !resp.succeeded() {
            return Ok(Claim::Lost);
        }
        let revision = resp.header().map(|h| h.revision()).unwrap_or_default();
        // The overlap transaction is the last operation of the success branch.
        let ran = match resp.op_responses().last() {
            Some(TxnOpResponse::Txn(inner)) => inner.succeeded(),
            _ => true,
        };
        Ok(if ran {
            Claim::Won { revision }
        } else {
            Claim::Skipped {
                revision,
                reason: SKIP_OVERLAP,
            }
        })
    }

    fn claim_txn(&self, req: &ClaimRequest<'_>, claim_lease: i64, running_lease: i64) -> Txn {
        let claim_key = self.keys.claim_run(req.job, req.run);
        let claim_value = |skipped: bool| {
            serde_json::to_vec(&ClaimRecord {
                worker: self.worker_id.clone(),
                claimed_at: req.now_ms,
                skipped,
                missed: false,
            })
            .expect("a claim record serializes")
        };
        let claim_options = || Some(PutOptions::new().with_lease(claim_lease));
        let mut when = vec![
            Compare::mod_revision(self.keys.job(req.job), CompareOp::Equal, req.job_revision),
            Compare::create_revision(claim_key.as_str(), CompareOp::Equal, 0),
        ];
        let last_key = self.keys.last_tick(req.job);
        if req.catch_up {
            // Fails too when there is no watermark: nothing is known to be
            // missed, so nothing is caught up.
            when.push(Compare::value(
                last_key.as_str(),
                CompareOp::Less,
                watermark_value(req.run.tick_ms),
            ));
        }

        let run_it = |mut ops: Vec<TxnOp>| {
            ops.push(TxnOp::put(
                claim_key.as_str(),
                claim_value(false),
                claim_options(),
            ));
            let running = serde_json::to_vec(&RunningRecord {
                worker: self.worker_id.clone(),
                started_at: req.now_ms,
            })
            .expect("a running record serializes");
            ops.push(TxnOp::put(
                self.keys.running(req.job, req.run),
                running,
                Some(PutOptions::new().with_lease(running_lease)),
            ));
            ops
        };
        let overlap = match req.overlap {
            Overlap::Allow => Txn::new().and_then(run_it(Vec::new())),
            Overlap::Forbid => Txn::new()
                .when(vec![Compare::create_revision(
                    self.keys.running_prefix(req.job),
                    CompareOp::Equal,
                    0,
                )
                .with_prefix()])
                .and_then(run_it(Vec::new()))
                .or_else(vec![TxnOp::put(
                    claim_key.as_str(),
                    claim_value(true),
                    claim_options(),
                )]),
            Overlap::Replace => {
                // Written in this transaction, the kill request's revision
                // equals this claim's: it hits runs claimed before, not this one.
                let kill = serde_json::to_vec(&KillRequest {
                    requested_at: req.now_ms,
                    reason: Some("replaced".into()),
                })
                .expect("a kill request serializes");
                Txn::new().and_then(run_it(vec![TxnOp::put(
                    self.keys.kill(req.job),
                    kill,
                    claim_options(),
                )]))
            }
        };

        let mut then = Vec::new();
        if req.run.is_scheduled_tick() {
            // Raise the watermark to this tick if it is higher.
            let mark = watermark_value(req.run.tick_ms);
            let raise = Txn::new()
                .when(vec![Compare::create_revision(
                    last_key.as_str(),
                    CompareOp::Equal,
                    0,
                )])
                .and_then(vec![TxnOp::put(last_key.as_str(), mark.as_str(), None)])
                .or_else(vec![TxnOp::txn(
                    Txn::new()
                        .when(vec![Compare::value(
                            last_key.as_str(),
                            CompareOp::Less,
                            mark.as_str(),
                        )])
                        .and_then(vec![TxnOp::put(last_key.as_str(), mark.as_str(), None)]),
                )]);
            then.push(TxnOp::txn(raise));
        }
        then.push(TxnOp::txn(overlap));
        Txn::new().when(when).and_then(then)
    }

    /// Marks a run as no longer running.
    pub async fn finish(&self, job: &JobName, run: &RunKey) {
        if let Err(e) = self
            .client
            .kv_client()
            .delete(self.keys.running(job, run), None)
            .await
        {
            // It expires with this worker's lease if it cannot be deleted now.
            tracing::warn!(job = %job, run = %run, error = %e, "could not clear the running mark");
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ClaimError {
    #[error("this worker is not registered in etcd (no lease)")]
    NotRegistered,
    #[error(transparent)]
    Etcd(#[from] etcd_client::Error),
}
