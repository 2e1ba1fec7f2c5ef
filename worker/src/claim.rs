//! Winning runs in etcd, in batches. One transaction claims up to
//! `CLAIM_BATCH` runs, each through a nested transaction of its own that
//! creates the run's claim key only if no claim for it exists and the job is
//! still exactly the definition this worker scheduled (same `mod_revision`,
//! so neither deleted nor changed). For runs claimed at their tick, the same
//! nested transaction applies the overlap policy against the job's
//! `running/` keys, records the run as running under this worker's lease and
//! (catch-up jobs) raises the job's watermark. The batch also carries this
//! worker's horizon and the small writes that may wait a little: running
//! marks of long runs, the deletion of marks of finished runs, the run feed.
//! See "The run-once argument" in ARCHITECTURE.md.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::Mutex as StdMutex;
use std::time::Duration;

use etcd_client::{Client, Compare, CompareOp, PutOptions, Txn, TxnOp, TxnOpResponse};
use gdts_common::job::Overlap;
use gdts_common::keys::{watermark_value, Keys, RunKey};
use gdts_common::timing::{
    CLAIM_LEASE_REUSE, CLAIM_LEASE_ROTATION, CLAIM_LEASE_TTL, CLAIM_RESOLVE_WINDOW, CLAIM_TIMEOUT,
    MARK_WRITE_DELAY, MAX_TICK_LATENESS, MISSED_RECORD_WINDOW,
};
use gdts_common::values::{ClaimRecord, FinishedRun, Horizon, KillRequest, RunFeed, RunningRecord};
use gdts_common::JobName;
use tokio::sync::{Mutex, Notify};
use tokio::time::Instant;

/// The outcome of one claim attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// This worker runs it. `revision` is the etcd revision of the claim,
    /// unique per claim key and used to order kill requests after it.
    Won { revision: i64 },
    /// This worker won the tick but must not run it: it records the skip,
    /// with `reason` as the record's `err`. A run of the job was in progress
    /// under `forbid` ([`SKIP_OVERLAP`]), or the win was learned too late to
    /// run under the overlap policy ([`SKIP_LEARNED_LATE`], see `run::claim`;
    /// [`SKIP_EARLIER_WIN`], see `Claimer::recognise`).
    Skipped { revision: i64, reason: &'static str },
    /// This worker claimed the tick only to record that it was missed.
    Missed { revision: i64 },
    /// Another worker has it, or the job changed or was deleted, or (for a
    /// catch-up) the watermark shows it was already handled.
    Lost,
}

pub const SKIP_OVERLAP: &str = "skipped: a run of this job was still in progress (overlap forbid)";
pub const SKIP_LEARNED_LATE: &str =
    "skipped: this worker won the tick but lost etcd before it learned so, \
     and its registration expired meanwhile; running it then could have broken the overlap policy";
pub const SKIP_EARLIER_WIN: &str =
    "skipped: an earlier claim of this worker, taken as not made, was found to have won the tick \
     only later; its running mark may have been gone meanwhile, so running it could have broken the \
     overlap policy";

/// What to claim.
#[derive(Debug, Clone)]
pub struct ClaimRequest {
    pub job: JobName,
    pub job_revision: i64,
    pub run: RunKey,
    pub overlap: Overlap,
    /// A catch-up tick (older than the lateness bound): the claim also
    /// requires the job's watermark to be below the tick, so a tick that was
    /// handled (even long ago, its claim key expired) is never run again.
    pub catch_up: bool,
    /// Raise the job's watermark to this tick (jobs with catch-up).
    pub raise_watermark: bool,
    /// Write the run's running mark in the claim (runs claimed at their
    /// time; claim-ahead runs get theirs later, and only if long).
    pub mark_running: bool,
    /// Claim only to record the tick as missed.
    pub missed: bool,
    /// When the claim was decided (this worker's clock, epoch ms); also its
    /// `claimedAt`, by which the worker recognises its own attempt.
    pub now_ms: i64,
    /// The `claimedAt` of this worker's earlier attempts at the tick whose
    /// outcome stayed unknown (`Claimer::resolve`): one of them may have
    /// committed after all, and a claim key it wrote is this worker's too.
    pub earlier: Vec<i64>,
}

impl ClaimRequest {
    /// The latest time (this worker's clock) the claim may still be sent:
    /// `CLAIM_TIMEOUT` after it was decided, and never after the last moment
    /// the claim-TTL inequality allows for its tick (a missed record's).
    /// A claim held up longer (a slow lease grant, a wait for the
    /// registration, a batch waiting for another) is not sent at all.
    pub fn send_by(&self) -> i64 {
        let decided = self.now_ms + CLAIM_TIMEOUT.as_millis() as i64;
        let latest =
            self.run.tick_ms + (MAX_TICK_LATENESS + MISSED_RECORD_WINDOW).as_millis() as i64;
        if self.catch_up || !self.run.is_scheduled_tick() {
            // Catch-up ticks are older by design (the watermark guards them);
            // manual runs and retries have their own keys.
            decided
        } else {
            decided.min(latest)
        }
    }
}

impl ClaimRequest {
    /// A claim at the tick under the job's overlap policy, marked running,
    /// without the catch-up compare.
    pub fn new(job: &gdts_common::Job, job_revision: i64, run: RunKey, now_ms: i64) -> Self {
        ClaimRequest {
            job: job.name.clone(),
            job_revision,
            raise_watermark: run.is_scheduled_tick() && !job.policy.catch_up.is_zero(),
            run,
            overlap: job.policy.overlap,
            catch_up: false,
            mark_running: true,
            missed: false,
            now_ms,
            earlier: Vec::new(),
        }
    }

    /// A claim made ahead of the tick: no policy state, no running mark.
    pub fn ahead(job: &gdts_common::Job, job_revision: i64, run: RunKey, now_ms: i64) -> Self {
        ClaimRequest {
            mark_running: false,
            raise_watermark: false,
            overlap: Overlap::Allow,
            ..ClaimRequest::new(job, job_revision, run, now_ms)
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ClaimError {
    #[error("this worker is not registered in etcd (no lease)")]
    NotRegistered,
    #[error(transparent)]
    Etcd(#[from] etcd_client::Error),
    #[error("no answer from etcd within {0:?}")]
    TimedOut(Duration),
    /// Held up past its send deadline before it went out; never sent.
    #[error("not sent: {0}")]
    NotSent(&'static str),
}

/// A write of a running mark waiting to go out.
#[derive(Debug, Clone, PartialEq, Eq)]
enum MarkWrite {
    /// The mark, written under the registration lease.
    Put(Vec<u8>),
    /// Deleted, but only while it still holds this value (the mark this
    /// worker wrote): a deletion that lands after a later claim of the
    /// run wrote the mark anew (its own `startedAt`), or after another
    /// worker wrote it, leaves that mark. `None` where the value is not
    /// known here: deleted whatever it holds.
    Delete(Option<Vec<u8>>),
}

impl MarkWrite {
    fn is_delete(&self) -> bool {
        matches!(self, MarkWrite::Delete(_))
    }

    /// The operation that makes this write in a transaction.
    fn op(&self, key: &str, lease: i64) -> TxnOp {
        match self {
            MarkWrite::Put(value) => TxnOp::put(
                key,
                value.clone(),
                Some(PutOptions::new().with_lease(lease)),
            ),
            MarkWrite::Delete(None) => TxnOp::delete(key, None),
            MarkWrite::Delete(Some(value)) => TxnOp::txn(
                Txn::new()
                    .when(vec![Compare::value(key, CompareOp::Equal, value.clone())])
                    .and_then(vec![TxnOp::delete(key, None)]),
            ),
        }
    }
}

/// Writes that may wait a little and ride along with the next claim batch.
#[derive(Default)]
struct SideOps {
    /// Running-mark key -> its pending write.
    marks: HashMap<String, MarkWrite>,
    feed: Vec<FinishedRun>,
    /// When the oldest pending write should go out at the latest.
    due: Option<Instant>,
    /// A transaction carrying side writes is in flight: the next one waits,
    /// so a mark's put and its deletion are never reordered.
    in_flight: bool,
    /// Running-mark deletions in the transaction in flight.
    deleting: std::collections::HashSet<String>,
    /// Of those, the ones a claim taken out since writes anew
    /// (`Claimer::drop_pending_marks`): not queued again should the
    /// transaction fail while that claim is out, nor once it was sent.
    superseded: HashMap<String, Superseding>,
    /// Superseded deletions whose transaction failed while their claim was
    /// out: queued again if that claim is never sent
    /// (`Claimer::restore_marks`), else forgotten (`supersede_marks`).
    held: HashMap<String, MarkWrite>,
    /// After a failed side transaction: nothing is due before this (the
    /// writer's back-off), however urgent.
    retry_after: Option<Instant>,
    /// Side transactions that failed so far.
    failures: u64,
    /// Marks whose put went out in a transaction whose answer was lost (it
    /// may have been applied), or that a won claim learned of later wrote:
    /// their deletion is always sent.
    maybe_written: std::collections::HashSet<String>,
    /// The marks of runs in progress here: key -> (value, the registration
    /// lease it was written under; 0 if not known). When the worker
    /// registers under a new lease (the old one expired, taking the marks
    /// with it), the marks of runs still going are written again.
    live: HashMap<String, (Vec<u8>, i64)>,
}

/// Where the claim that superseded a deletion in flight is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Superseding {
    /// Not answered yet: it may turn out never sent.
    Out,
    /// Sent (whatever its outcome).
    Sent,
}

impl SideOps {
    /// Pending writes go out within `delay` at the latest, and not before
    /// the back-off after a failed side transaction (writes already due
    /// included).
    fn due_in(&mut self, delay: Duration) {
        let due = Instant::now() + delay;
        let due = self.due.map_or(due, |d| d.min(due));
        self.due = Some(self.retry_after.map_or(due, |floor| due.max(floor)));
    }
}

/// For [`Claimer::clear_running`]: the mark of a `forbid` claim taken back
/// goes out at once (the job's next tick is not known here).
pub fn at_once_if_forbid(req: &ClaimRequest) -> Option<i64> {
    (req.overlap == Overlap::Forbid).then_some(0)
}

/// How soon a mark deletion asked for by `by_ms` (epoch ms) is due at
/// `now_ms`: within `MARK_WRITE_DELAY`, sooner if `by_ms` is, at once if it
/// has passed.
fn mark_delay(by_ms: Option<i64>, now_ms: i64) -> Duration {
    match by_ms {
        None => MARK_WRITE_DELAY,
        Some(by) => MARK_WRITE_DELAY.min(Duration::from_millis((by - now_ms).max(0) as u64)),
    }
}

/// A failed side transaction's writes go out again this much later.
const SIDE_RETRY_AFTER: Duration = Duration::from_millis(500);

/// How often a claim transaction or claim-lease grant that never left this
/// process (no connection to the etcd member picked) is sent again at once.
const MAX_UNSENT_RETRIES: usize = 3;

/// Mark writes a claim batch took back before it went out
/// (`Claimer::drop_pending_marks`).
#[derive(Default)]
struct DroppedMarks {
    /// Queued writes of its claims' marks.
    queued: Vec<(String, MarkWrite)>,
    /// Deletions of its claims' marks that were in flight.
    in_flight: Vec<String>,
}

/// How long a batch with `forbid` claims waits for deletions of those jobs'
/// running marks to be written (`Claimer::settle_forbid_marks`).
const FORBID_MARK_WAIT: Duration = Duration::from_millis(300);
/// What that wait leaves of the claims' send deadlines.
const SEND_MARGIN_MS: i64 = 200;

/// Most side writes per transaction (etcd allows 128 operations a list).
const MAX_SIDE_OPS: usize = 100;
/// Most finished runs listed in one write of the run feed (about 150 bytes each).
const MAX_FEED_PER_WRITE: usize = 250;
/// Most finished runs waiting for the feed while etcd does not take them.
const MAX_FEED_BACKLOG: usize = 10_000;
/// Finished runs reach the feed (and the event stream) this soon.
const FEED_DELAY: Duration = Duration::from_secs(1);

/// The claim lease in use (its id and when it was asked for), and whether
/// its successor is being granted.
#[derive(Default)]
struct LeaseSlot {
    current: Option<(i64, Instant)>,
    granting: bool,
}

/// What a claim does about its lease.
#[derive(Debug, PartialEq, Eq)]
enum LeaseUse {
    /// Goes under this lease.
    Use(i64),
    /// Goes under this lease, and a successor's grant starts beside it.
    UseAndGrant(i64),
    /// Waits for a grant: no lease is young enough.
    Grant,
}

impl LeaseSlot {
    /// Past `CLAIM_LEASE_ROTATION` a fresh lease is asked for beside the
    /// claims, which keep the current one until the grant arrives (for at
    /// most `CLAIM_LEASE_REUSE`); only without a lease young enough does a
    /// claim wait for a grant. Marks the grant started when it says so.
    fn choose(&mut self, now: Instant) -> LeaseUse {
        let Some((id, asked)) = self.current else {
            return LeaseUse::Grant;
        };
        let age = now.saturating_duration_since(asked);
        if age < CLAIM_LEASE_ROTATION || (age < CLAIM_LEASE_REUSE && self.granting) {
            LeaseUse::Use(id)
        } else if age < CLAIM_LEASE_REUSE {
            self.granting = true;
            LeaseUse::UseAndGrant(id)
        } else {
            LeaseUse::Grant
        }
    }

    /// The grant started beside the claims, asked for at `asked`, arrived
    /// (or failed: `None`).
    fn granted(&mut self, lease: Option<i64>, asked: Instant) {
        self.granting = false;
        if let Some(id) = lease {
            self.install(id, asked);
        }
    }

    /// A lease asked for at `asked` is the one claims go under, unless the
    /// one in use was asked for later. A grant a claim waited for leaves the
    /// one under way beside the claims (if any) under way.
    fn install(&mut self, id: i64, asked: Instant) {
        if self.current.is_none_or(|(_, at)| at < asked) {
            self.current = Some((id, asked));
        }
    }
}

/// Grants a claim lease, never renewed (`CLAIM_LEASE_TTL`). A grant that
/// never left this process is asked for again ([`resend_unsent`]).
async fn grant_claim_lease(client: Client) -> Result<i64, etcd_client::Error> {
    let leases = client.lease_client();
    let granted = resend_unsent(
        || {
            let mut leases = leases.clone();
            async move { leases.grant(CLAIM_LEASE_TTL.as_secs() as i64, None).await }
        },
        || true,
    )
    .await?;
    Ok(granted.id())
}

/// Sends the request `send` makes; one that never left this process (the
/// client's balancer picked a member that is down) is sent again at once,
/// to another member, up to `MAX_UNSENT_RETRIES` times while `may_resend`
/// says so. Any other failure may have reached etcd: it is returned.
async fn resend_unsent<T, F, Fut>(
    mut send: F,
    may_resend: impl Fn() -> bool,
) -> Result<T, etcd_client::Error>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, etcd_client::Error>>,
{
    let mut tries = 0;
    loop {
        match send().await {
            Err(e)
                if gdts_runtime::etcd_never_sent(&e)
                    && tries < MAX_UNSENT_RETRIES
                    && may_resend() =>
            {
                tries += 1;
            }
            answer => return answer,
        }
    }
}

/// Claims for one worker. Claim keys share a lease asked for every
/// `CLAIM_LEASE_ROTATION` (used for at most `CLAIM_LEASE_REUSE`), never kept
/// alive, whose TTL lets each claim live at
/// least `CLAIM_TTL`. Running marks, the horizon and the run feed use the
/// worker's registration lease, so they vanish with a dead worker.
pub struct Claimer {
    client: Client,
    keys: Keys,
    worker_id: String,
    lease: Arc<Mutex<LeaseSlot>>,
    registration_lease: tokio::sync::watch::Receiver<i64>,
    side: StdMutex<SideOps>,
    side_ready: Notify,
    /// A transaction carrying side writes has ended (all waiters).
    side_done: Notify,
    /// How long a batch with `forbid` claims waits for deletions of those
    /// jobs' running marks (`FORBID_MARK_WAIT`; tests set more).
    forbid_mark_wait: Duration,
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
            lease: Arc::default(),
            registration_lease,
            side: StdMutex::new(SideOps::default()),
            side_ready: Notify::new(),
            side_done: Notify::new(),
            forbid_mark_wait: FORBID_MARK_WAIT,
        }
    }

    /// The claim lease new claims go under (see `LeaseSlot::choose`).
    async fn current_lease(&self) -> Result<i64, etcd_client::Error> {
        let mut slot = self.lease.lock().await;
        match slot.choose(Instant::now()) {
            LeaseUse::Use(id) => Ok(id),
            LeaseUse::UseAndGrant(id) => {
                let (client, lease) = (self.client.clone(), self.lease.clone());
                tokio::spawn(async move {
                    let asked = Instant::now();
                    let grant =
                        tokio::time::timeout(CLAIM_TIMEOUT, grant_claim_lease(client)).await;
                    lease
                        .lock()
                        .await
                        .granted(grant.ok().and_then(Result::ok), asked);
                });
                Ok(id)
            }
            LeaseUse::Grant => {
                let asked = Instant::now();
                let id = grant_claim_lease(self.client.clone()).await?;
                slot.install(id, asked);
                Ok(id)
            }
        }
    }

    async fn drop_lease(&self) {
        self.lease.lock().await.current = None;
    }

    /// Waits (up to `limit`) for this worker to be registered: it registers
    /// only after reading its jobs, and a catch-up or a run-now request may
    /// come first.
    pub async fn wait_registered(&self, limit: Duration) -> bool {
        let mut lease = self.registration_lease.clone();
        let registered = tokio::time::timeout(limit, lease.wait_for(|id| *id != 0))
            .await
            .is_ok_and(|r| r.is_ok());
        registered
    }

    /// The etcd client claims go through.
    pub fn client(&self) -> Client {
        self.client.clone()
    }

    /// The registration lease running marks hang on now (0 if none).
    pub fn registration_lease_id(&self) -> i64 {
        *self.registration_lease.borrow()
    }

    /// The job's watermark: the highest scheduled tick ever claimed.
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

    /// Claims `reqs` in one transaction (at most `CLAIM_BATCH` of them), and
    /// raises this worker's horizon to `horizon` in the same transaction.
    /// An error means the outcome is unknown: see [`Claimer::resolve`].
    pub async fn claim_batch(
        &self,
        reqs: &[ClaimRequest],
        horizon: Option<Horizon>,
    ) -> Result<Vec<Claim>, ClaimError> {
        if self.registration_lease_id() == 0 {
            return Err(ClaimError::NotRegistered);
        }
        // First: the claim lease is chosen right before the send.
        self.settle_forbid_marks(reqs).await;
        // Again: the registration may have been lost during that wait.
        let running_lease = match self.registration_lease_id() {
            0 => return Err(ClaimError::NotRegistered),
            id => id,
        };
        let claim_lease = match tokio::time::timeout(CLAIM_TIMEOUT, self.current_lease()).await {
            Ok(Ok(id)) => id,
            // No claim left: the claim lease could not be had.
            Ok(Err(_)) | Err(_) => return Err(ClaimError::NotSent("no claim lease from etcd")),
        };
        // Checked right before the send: the at-most-once window counts on it.
        let now = chrono::Utc::now().timestamp_millis();
        if reqs.iter().any(|r| now > r.send_by()) {
            return Err(ClaimError::NotSent("held up past its send deadline"));
        }
        let mut ops: Vec<TxnOp> = reqs
            .iter()
            .map(|r| TxnOp::txn(self.claim_txn(r, claim_lease, running_lease)))
            .collect();
        if let Some(h) = horizon {
            let value = serde_json::to_vec(&h).expect("a horizon serializes");
            ops.push(TxnOp::put(
                self.keys.horizon(&self.worker_id),
                value,
                Some(PutOptions::new().with_lease(running_lease)),
            ));
        }
        let dropped = self.drop_pending_marks(reqs);
        let side = self.take_side_ops(running_lease);
        if let Some(taken) = &side {
            ops.extend(taken.ops.iter().cloned());
        }
        let kv = self.client.kv_client();
        let timed = std::time::Instant::now();
        // A resend stays within the claims' send deadlines.
        let sent = resend_unsent(
            || {
                let (mut kv, txn) = (kv.clone(), Txn::new().and_then(ops.clone()));
                async move { kv.txn(txn).await }
            },
            || {
                let now = chrono::Utc::now().timestamp_millis();
                reqs.iter().all(|r| now <= r.send_by())
            },
        );
        let result = match tokio::time::timeout(CLAIM_TIMEOUT, sent).await {
            Ok(Ok(resp)) => Ok(resp),
            Ok(Err(e)) if gdts_runtime::etcd_never_sent(&e) => {
                Err(ClaimError::NotSent("no etcd member could be reached"))
            }
            Ok(Err(e)) => Err(ClaimError::from(e)),
            Err(_) => Err(ClaimError::TimedOut(CLAIM_TIMEOUT)),
        };
        gdts_runtime::metrics::etcd_observed("claim_txn", timed, result.is_ok());
        if let Some(taken) = side {
            self.side_sent(taken, result.is_ok());
        }
        match result {
            // Not written: the mark writes these claims replaced stand.
            Err(ClaimError::NotSent(_)) => self.restore_marks(dropped),
            _ => self.supersede_marks(dropped),
        }
        let resp = match result {
            Ok(resp) => resp,
            Err(e) => {
                // The lease may be why (expired while etcd was unreachable, or
                // lost with etcd's data): the next attempt starts a new one.
                self.drop_lease().await;
                return Err(e);
            }
        };
        let revision = resp.header().map(|h| h.revision()).unwrap_or_default();
        let answers = resp.op_responses();
        let claims: Vec<Claim> = reqs
            .iter()
            .zip(&answers)
            .map(|(req, answer)| match answer {
                TxnOpResponse::Txn(inner) if inner.succeeded() => {
                    outcome_of_won(req, revision, inner.op_responses().last())
                }
                // Refused: the claim key as it is, read where `req` names
                // earlier attempts (see `ClaimRequest::earlier`).
                TxnOpResponse::Txn(inner) => match inner.op_responses().first() {
                    Some(TxnOpResponse::Get(get)) => match get.kvs().first() {
                        Some(kv) => self.recognise(req, kv),
                        None => {
                            // The job changed, or (a catch-up refused by
                            // its watermark) a later tick was claimed, or an
                            // earlier attempt won and its claim has expired
                            // since: then nobody records the tick.
                            tracing::warn!(job = %req.job, tick = req.run.tick_ms, earlier = ?req.earlier, "a claim retried after attempts with an unknown outcome was refused with no claim key: the job changed, a later tick raised the catch-up watermark, or an earlier attempt won and its claim expired (the tick then has no record)");
                            Claim::Lost
                        }
                    },
                    _ => Claim::Lost,
                },
                _ => Claim::Lost,
            })
            .collect();
        self.note_marks(reqs, &answers, &claims, running_lease);
        Ok(claims)
    }

    /// A claim that writes its run's running mark supersedes a write of that
    /// mark still waiting to go out: the deletion queued when an earlier
    /// attempt at the tick was taken as not made (`resolve`), before the
    /// tick was claimed again. In one transaction with the claim, a deletion
    /// whose value the mark held before would still remove the new mark
    /// (etcd evaluates every compare before any write), and one without a
    /// value (`MarkWrite::Delete(None)`) would have the whole batch refused
    /// (etcd takes no key twice in a transaction); sent after it, one
    /// without a value would remove the mark of a run this claim may start,
    /// or of the worker that won the tick. So the
    /// queued writes are taken out here, before the claims go out, and given
    /// back by [`Claimer::restore_marks`] if they never do; a deletion in
    /// flight is dealt with once they have (`supersede_marks`).
    fn drop_pending_marks(&self, reqs: &[ClaimRequest]) -> DroppedMarks {
        let mut side = self.side.lock().expect("side ops lock");
        let mut dropped = DroppedMarks::default();
        for req in reqs.iter().filter(|r| r.mark_running && !r.missed) {
            let key = self.keys.running(&req.job, &req.run);
            if let Some(value) = side.marks.remove(&key) {
                dropped.queued.push((key.clone(), value));
            }
            if side.deleting.contains(&key) {
                side.superseded.insert(key.clone(), Superseding::Out);
                dropped.in_flight.push(key);
            }
        }
        dropped
    }

    /// The claims `dropped` was taken for were never sent: the mark writes
    /// they would have replaced are queued again, and a deletion in flight
    /// is queued again should its transaction fail (or has failed).
    fn restore_marks(&self, dropped: DroppedMarks) {
        if dropped.queued.is_empty() && dropped.in_flight.is_empty() {
            return;
        }
        let mut side = self.side.lock().expect("side ops lock");
        for (key, value) in dropped.queued {
            side.marks.entry(key).or_insert(value);
        }
        for key in dropped.in_flight {
            side.superseded.remove(&key);
            if let Some(deletion) = side.held.remove(&key) {
                side.marks.entry(key).or_insert(deletion);
            }
        }
        side.due_in(MARK_WRITE_DELAY);
        drop(side);
        self.side_ready.notify_one();
    }

    /// The claims `dropped` was taken for went out (with whatever outcome):
    /// a deletion of their marks in flight is not queued again, whether its
    /// transaction fails later or has failed already.
    fn supersede_marks(&self, dropped: DroppedMarks) {
        if dropped.in_flight.is_empty() {
            return;
        }
        let mut side = self.side.lock().expect("side ops lock");
        for key in dropped.in_flight {
            if let Some(state) = side.superseded.get_mut(&key) {
                *state = Superseding::Sent;
            }
            side.held.remove(&key);
        }
    }

    /// Remembers the running marks that claims won by this transaction
    /// (`answers`) wrote (under `lease`). A claim won by an earlier attempt
    /// (`ClaimRequest::earlier`) had its mark noted by `recognise`, to be
    /// written again.
    fn note_marks(
        &self,
        reqs: &[ClaimRequest],
        answers: &[TxnOpResponse],
        claims: &[Claim],
        lease: i64,
    ) {
        let won = reqs
            .iter()
            .zip(answers)
            .zip(claims)
            .filter(|((r, answer), c)| {
                r.mark_running
                    && matches!(c, Claim::Won { .. })
                    && matches!(answer, TxnOpResponse::Txn(inner) if inner.succeeded())
            })
            .map(|((r, _), c)| (r, c));
        let mut side = self.side.lock().expect("side ops lock");
        for (req, _) in won {
            let value = self.running_value(req.now_ms);
            side.live
                .insert(self.keys.running(&req.job, &req.run), (value, lease));
        }
    }

    fn running_value(&self, started_at: i64) -> Vec<u8> {
        serde_json::to_vec(&RunningRecord {
            worker: self.worker_id.clone(),
            started_at,
        })
        .expect("a running record serializes")
    }

    /// Queues again the marks of runs in progress not written under the
    /// current registration lease: after a new registration, the runs this
    /// worker still has are listed as running again (a `forbid` run that
    /// could have overlapped was stopped before its lease could expire, see
    /// `registration::fence_guarded_runs`).
    pub fn rewrite_stale_marks(&self) {
        let lease = self.registration_lease_id();
        if lease == 0 {
            return;
        }
        let mut side = self.side.lock().expect("side ops lock");
        let stale: Vec<(String, Vec<u8>)> = side
            .live
            .iter_mut()
            .filter(|(_, (_, written))| *written != lease)
            .map(|(key, (value, written))| {
                *written = lease;
                (key.clone(), value.clone())
            })
            .collect();
        if stale.is_empty() {
            return;
        }
        tracing::info!(
            marks = stale.len(),
            "registered under a new lease: writing the running marks of runs in progress again"
        );
        for (key, value) in stale {
            side.marks.insert(key, MarkWrite::Put(value));
        }
        side.due_in(MARK_WRITE_DELAY);
        drop(side);
        self.side_ready.notify_one();
    }

    /// Asks etcd, until it answers or `CLAIM_RESOLVE_WINDOW` is over, what
    /// became of claims sent without learning the answer: the claim record
    /// names the worker and its `claimedAt`, so this worker recognises its
    /// own attempt. `None` where that could not be learned in time, and
    /// where the claim is taken not to have been made (its key still absent
    /// past its send deadline): either way it is not known to be anybody's,
    /// so the planner decides the tick again (`plan::decide_again_at`), and
    /// a catch-up job owes it (`planner::Owed`).
    pub async fn resolve(
        &self,
        reqs: &[ClaimRequest],
        stop: &tokio_util::sync::CancellationToken,
    ) -> Vec<Option<Claim>> {
        /// Past its send deadline, a claim key still absent this long after
        /// etcd answered again is taken to mean the attempt did not commit.
        const ABSENT_FOR: Duration = Duration::from_secs(2);
        let deadline = Instant::now() + CLAIM_RESOLVE_WINDOW;
        let mut outcomes: Vec<Option<Claim>> = vec![None; reqs.len()];
        // Known to be won, skipped, missed or lost, or taken as not made.
        let mut settled = vec![false; reqs.len()];
        let mut absent_since: Vec<Option<Instant>> = vec![None; reqs.len()];
        let mut pause = Duration::from_millis(500);
        while Instant::now() < deadline && !stop.is_cancelled() {
            let open: Vec<usize> = (0..reqs.len()).filter(|&i| !settled[i]).collect();
            if open.is_empty() {
                break;
            }
            let gets: Vec<TxnOp> = open
                .iter()
                .map(|&i| TxnOp::get(self.keys.claim_run(&reqs[i].job, &reqs[i].run), None))
                .collect();
            let mut kv = self.client.kv_client();
            let read = kv.txn(Txn::new().and_then(gets));
            let mut absent = Vec::new();
            if let Ok(Ok(resp)) = tokio::time::timeout(CLAIM_TIMEOUT, read).await {
                for (&i, answer) in open.iter().zip(resp.op_responses()) {
                    let TxnOpResponse::Get(get) = answer else {
                        continue;
                    };
                    match get.kvs().first() {
                        Some(kv) => {
                            outcomes[i] = Some(self.recognise(&reqs[i], kv));
                            settled[i] = true;
                        }
                        None => absent.push(i),
                    }
                }
                pause = Duration::from_millis(500);
            } else {
                // etcd still unreachable: ask less often, so a fleet of
                // resolving workers does not add to what etcd is behind on.
                pause = (pause * 2).min(Duration::from_secs(4));
            }
            // Absent while still within its send deadline: send the very same
            // claim again. If it commits, the tick is this worker's; if the
            // first attempt commits after all, this one fails and the next
            // read recognises it. Either way the outcome is settled, and a
            // first attempt arriving late can no longer create the key.
            let now = chrono::Utc::now().timestamp_millis();
            let (again, past): (Vec<usize>, Vec<usize>) =
                absent.into_iter().partition(|&i| now <= reqs[i].send_by());
            if !again.is_empty() {
                let resend: Vec<ClaimRequest> = again.iter().map(|&i| reqs[i].clone()).collect();
                if let Ok(claims) = Box::pin(self.claim_batch(&resend, None)).await {
                    for (&i, claim) in again.iter().zip(claims) {
                        if claim != Claim::Lost {
                            outcomes[i] = Some(claim);
                            settled[i] = true;
                        }
                    }
                }
            }
            for i in past {
                match absent_since[i] {
                    None => absent_since[i] = Some(Instant::now()),
                    Some(t) if t.elapsed() >= ABSENT_FOR => {
                        settled[i] = true;
                        if reqs[i].mark_running {
                            // Should the attempt commit after all, its mark
                            // must not block the job's later ticks.
                            self.clear_attempts_mark(&reqs[i], reqs[i].now_ms);
                        }
                    }
                    Some(_) => {}
                }
            }
            if settled.iter().all(|s| *s) {
                break;
            }
            tokio::time::sleep(pause).await;
        }
        outcomes
    }

    /// What a claim key says about this worker's attempt `req`, or about
    /// one of its earlier attempts at the tick (`ClaimRequest::earlier`).
    /// A run claim won by an earlier attempt is recorded as missed when `req`
    /// only meant to record the tick as missed: it is too late to run by now;
    /// and as skipped for a `forbid`/`replace` job: the earlier attempt's
    /// running mark may have been deleted meanwhile, so another tick's run may
    /// have started.
    fn recognise(&self, req: &ClaimRequest, kv: &etcd_client::KeyValue) -> Claim {
        let Ok(r) = serde_json::from_slice::<ClaimRecord>(kv.value()) else {
            return Claim::Lost;
        };
        let this_attempt = r.claimed_at == req.now_ms;
        if r.worker != self.worker_id || !(this_attempt || req.earlier.contains(&r.claimed_at)) {
            return Claim::Lost;
        }
        // The claim key is created by the claim transaction, so its create
        // revision is the transaction's revision.
        let revision = kv.create_revision();
        if r.missed {
            return Claim::Missed { revision };
        }
        if r.skipped {
            return Claim::Skipped {
                revision,
                reason: SKIP_OVERLAP,
            };
        }
        if !this_attempt && (req.missed || req.overlap != Overlap::Allow) {
            // An earlier attempt's win, learned of only now. Its running mark
            // (if it wrote one) was deleted when the attempt was taken as not
            // made, or is deleted now: it is too late to run the tick, or
            // running it could overlap a run that started meanwhile.
            if req.mark_running {
                self.clear_attempts_mark(req, r.claimed_at);
            }
            return if req.missed {
                Claim::Missed { revision }
            } else {
                Claim::Skipped {
                    revision,
                    reason: SKIP_EARLIER_WIN,
                }
            };
        }
        if req.mark_running {
            // The attempt that won wrote its mark (its own `claimedAt`) under
            // a lease not known here, and an earlier attempt's mark may have
            // been deleted since it was taken as not made: written again
            // under the current lease. Already in etcd, it is deleted even
            // should the run end before that write goes out.
            let key = self.keys.running(&req.job, &req.run);
            let value = self.running_value(r.claimed_at);
            let mut side = self.side.lock().expect("side ops lock");
            side.maybe_written.insert(key.clone());
            side.live.insert(key, (value, 0));
            drop(side);
            self.rewrite_stale_marks();
        }
        Claim::Won { revision }
    }

    fn claim_record(&self, req: &ClaimRequest, skipped: bool) -> Vec<u8> {
        serde_json::to_vec(&ClaimRecord {
            worker: self.worker_id.clone(),
            claimed_at: req.now_ms,
            skipped,
            missed: req.missed,
        })
        .expect("a claim record serializes")
    }

    fn claim_txn(&self, req: &ClaimRequest, claim_lease: i64, running_lease: i64) -> Txn {
        let claim_key = self.keys.claim_run(&req.job, &req.run);
        let claim_options = || Some(PutOptions::new().with_lease(claim_lease));
        let mut when = vec![
            Compare::mod_revision(self.keys.job(&req.job), CompareOp::Equal, req.job_revision),
            Compare::create_revision(claim_key.as_str(), CompareOp::Equal, 0),
        ];
        let last_key = self.keys.last_tick(&req.job);
        if req.catch_up {
            // Fails too when there is no watermark: nothing is known to be
            // missed, so nothing is caught up.
            when.push(Compare::value(
                last_key.as_str(),
                CompareOp::Less,
                watermark_value(req.run.tick_ms),
            ));
        }
        // Where an earlier attempt may have made the claim, a refused one
        // reads the key back, so the worker learns whose it is.
        let read_back = |txn: Txn| {
            if req.earlier.is_empty() {
                txn
            } else {
                txn.or_else(vec![TxnOp::get(claim_key.as_str(), None)])
            }
        };
        if req.missed {
            return read_back(Txn::new().when(when).and_then(vec![TxnOp::put(
                claim_key.as_str(),
                self.claim_record(req, false),
                claim_options(),
            )]));
        }

        let run_it = |mut ops: Vec<TxnOp>| {
            ops.push(TxnOp::put(
                claim_key.as_str(),
                self.claim_record(req, false),
                claim_options(),
            ));
            if req.mark_running {
                ops.push(TxnOp::put(
                    self.keys.running(&req.job, &req.run),
                    self.running_value(req.now_ms),
                    Some(PutOptions::new().with_lease(running_lease)),
                ));
            }
            ops
        };
        let overlap = match req.overlap {
            Overlap::Allow => Txn::new().and_then(run_it(Vec::new())),
            Overlap::Forbid => Txn::new()
                .when(vec![Compare::create_revision(
                    self.keys.running_prefix(&req.job),
                    CompareOp::Equal,
                    0,
                )
                .with_prefix()])
                .and_then(run_it(Vec::new()))
                .or_else(vec![TxnOp::put(
                    claim_key.as_str(),
                    self.claim_record(req, true),
                    claim_options(),
                )]),
            Overlap::Replace => {
                // Written in this transaction, the kill request's revision
                // equals this claim's: it hits runs claimed before, not this one.
                let kill = serde_json::to_vec(&KillRequest {
                    requested_at: req.now_ms,
                    reason: Some("replaced".into()),
                    tick: Some(req.run.tick_ms),
                })
                .expect("a kill request serializes");
                Txn::new().and_then(run_it(vec![TxnOp::put(
                    self.keys.kill(&req.job),
                    kill,
                    claim_options(),
                )]))
            }
        };

        let mut then = Vec::new();
        if req.raise_watermark {
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
        read_back(Txn::new().when(when).and_then(then))
    }

    /// Puts a run's claim key again, value unchanged, under the current
    /// claim lease: the claim of a run in progress lives as long as the run
    /// (see `CLAIM_REFRESH_EVERY`). A key already gone stays gone.
    pub async fn refresh_claim(&self, job: &JobName, run: &RunKey) {
        let key = self.keys.claim_run(job, run);
        let refresh = async {
            let lease = self.current_lease().await?;
            let options = PutOptions::new().with_lease(lease).with_ignore_value();
            self.client
                .kv_client()
                .put(key.as_str(), "", Some(options))
                .await
        };
        match tokio::time::timeout(CLAIM_TIMEOUT, refresh).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                tracing::warn!(job = %job, run = %run, error = %e, "could not refresh a long run's claim")
            }
            Err(_) => {
                tracing::warn!(job = %job, run = %run, "refreshing a long run's claim timed out")
            }
        }
    }

    /// Marks a run as running (a claim-ahead run that is taking long).
    pub fn mark_running(&self, job: &JobName, run: &RunKey, started_at: i64) {
        let value = self.running_value(started_at);
        self.queue_mark(
            self.keys.running(job, run),
            MarkWrite::Put(value),
            MARK_WRITE_DELAY,
        );
    }

    /// Marks a run as no longer running. Retried until etcd takes it (or
    /// the mark goes with this worker's lease). Written within
    /// `MARK_WRITE_DELAY`, with other writes, and by `by_ms` (epoch ms) if
    /// that is sooner (at once if it has passed): a `forbid` job's next tick
    /// is claimed at the tick, as likely as not by another worker, and
    /// would be skipped for a run whose mark is still there.
    ///
    /// The deletion removes the mark only while it holds the value this
    /// worker last wrote for the run (see [`MarkWrite::Delete`]); whatever
    /// it holds where this worker wrote none it knows of.
    pub fn clear_running(&self, job: &JobName, run: &RunKey, by_ms: Option<i64>) {
        self.clear_mark(job, run, None, by_ms);
    }

    /// [`Claimer::clear_running`] for a mark an attempt that claimed at
    /// `claimed_at` (epoch ms, its `now_ms`) may have written.
    fn clear_attempts_mark(&self, req: &ClaimRequest, claimed_at: i64) {
        let value = self.running_value(claimed_at);
        self.clear_mark(&req.job, &req.run, Some(value), at_once_if_forbid(req));
    }

    /// Deletes the mark if it holds `value`, or (`None`) the value this
    /// worker last wrote for it; whatever it holds when that is not known.
    fn clear_mark(&self, job: &JobName, run: &RunKey, value: Option<Vec<u8>>, by_ms: Option<i64>) {
        let delay = mark_delay(by_ms, chrono::Utc::now().timestamp_millis());
        let key = self.keys.running(job, run);
        let side = self.side.lock().expect("side ops lock");
        let value = value.or_else(|| side.live.get(&key).map(|(value, _)| value.clone()));
        self.queue_mark_in(side, key, MarkWrite::Delete(value), delay);
    }

    fn queue_mark(&self, key: String, write: MarkWrite, delay: Duration) {
        let side = self.side.lock().expect("side ops lock");
        self.queue_mark_in(side, key, write, delay);
    }

    fn queue_mark_in(
        &self,
        mut side: std::sync::MutexGuard<'_, SideOps>,
        key: String,
        write: MarkWrite,
        delay: Duration,
    ) {
        let lease = self.registration_lease_id();
        match &write {
            MarkWrite::Put(v) => side.live.insert(key.clone(), (v.clone(), lease)),
            MarkWrite::Delete(_) => side.live.remove(&key),
        };
        let maybe_written = side.maybe_written.contains(&key);
        match (side.marks.get(&key), &write) {
            // A put that never went out, then its deletion: nothing to write.
            (Some(MarkWrite::Put(_)), MarkWrite::Delete(_)) if !maybe_written => {
                side.marks.remove(&key);
            }
            _ => {
                side.marks.insert(key, write);
            }
        }
        side.due_in(delay);
        drop(side);
        self.side_ready.notify_one();
    }

    /// Lists a finished run in the run feed.
    pub fn feed(&self, run: FinishedRun) {
        let mut side = self.side.lock().expect("side ops lock");
        if side.feed.len() >= MAX_FEED_BACKLOG {
            side.feed.remove(0);
        }
        side.feed.push(run);
        side.due_in(FEED_DELAY);
        drop(side);
        self.side_ready.notify_one();
    }

    /// Takes pending side writes for a transaction, unless another one
    /// carrying them is in flight or there is no registration lease.
    fn take_side_ops(&self, lease: i64) -> Option<TakenSideOps> {
        let mut side = self.side.lock().expect("side ops lock");
        if side.in_flight || lease == 0 || (side.marks.is_empty() && side.feed.is_empty()) {
            return None;
        }
        let mut marks = Vec::new();
        let keys: Vec<String> = side.marks.keys().take(MAX_SIDE_OPS - 1).cloned().collect();
        for key in keys {
            let value = side.marks.remove(&key).expect("key listed");
            marks.push((key, value));
        }
        // At most MAX_FEED_PER_WRITE runs per write: the rest go with the next.
        let cut = side.feed.len().min(MAX_FEED_PER_WRITE);
        let rest = side.feed.split_off(cut);
        let feed = std::mem::replace(&mut side.feed, rest);
        side.in_flight = true;
        side.deleting = marks
            .iter()
            .filter(|(_, write)| write.is_delete())
            .map(|(key, _)| key.clone())
            .collect();
        if side.marks.is_empty() && side.feed.is_empty() {
            side.due = None;
        }
        drop(side);
        let mut ops: Vec<TxnOp> = marks
            .iter()
            .map(|(key, write)| write.op(key, lease))
            .collect();
        if !feed.is_empty() {
            let value = serde_json::to_vec(&RunFeed { runs: feed.clone() }).expect("serializes");
            ops.push(TxnOp::put(
                self.keys.run_feed(&self.worker_id),
                value,
                Some(PutOptions::new().with_lease(lease)),
            ));
        }
        Some(TakenSideOps { ops, marks, feed })
    }

    /// After a transaction with side writes: on failure they are queued
    /// again (all are idempotent) unless newer writes replaced them.
    fn side_sent(&self, taken: TakenSideOps, ok: bool) {
        let mut side = self.side.lock().expect("side ops lock");
        side.in_flight = false;
        side.deleting.clear();
        let superseded = std::mem::take(&mut side.superseded);
        if ok {
            side.retry_after = None;
            for (key, write) in &taken.marks {
                // Not where the mark was written anew meanwhile (a win
                // learned late, `recognise`): that mark is still to delete.
                let anew = side.live.contains_key(key)
                    || matches!(side.marks.get(key), Some(MarkWrite::Put(_)));
                if write.is_delete() && !anew {
                    side.maybe_written.remove(key);
                }
            }
        } else {
            side.failures += 1;
            side.retry_after = Some(Instant::now() + SIDE_RETRY_AFTER);
            for (key, write) in taken.marks {
                if write.is_delete() {
                    match superseded.get(&key) {
                        Some(Superseding::Out) => {
                            side.held.insert(key, write);
                            continue;
                        }
                        Some(Superseding::Sent) => continue,
                        None => {}
                    }
                } else {
                    side.maybe_written.insert(key.clone());
                }
                side.marks.entry(key).or_insert(write);
            }
            let newer = std::mem::take(&mut side.feed);
            side.feed = taken.feed;
            side.feed.extend(newer);
            if side.feed.len() > MAX_FEED_BACKLOG {
                // The feed only serves the event stream (the records are in
                // MongoDB): past this, the oldest entries are dropped.
                let excess = side.feed.len() - MAX_FEED_BACKLOG;
                side.feed.drain(..excess);
                tracing::warn!(
                    dropped = excess,
                    "run feed backlog full; oldest entries dropped"
                );
            }
            side.due_in(SIDE_RETRY_AFTER);
        }
        drop(side);
        self.side_ready.notify_one();
        self.side_done.notify_waiters();
    }

    /// Before `reqs` go out: deletions of the running marks of their
    /// `forbid` jobs, still queued here or in flight, are written first (for
    /// up to `forbid_mark_wait`, within the claims' send deadlines). Such a
    /// mark is of a run that has ended: left in place it would make the
    /// claim a skip, and riding in the claim's own transaction would not
    /// help (etcd evaluates every compare of a transaction, nested ones
    /// too, before any of its writes). Gives up at once when a side
    /// transaction fails meanwhile (the writer's back-off stands). Only this
    /// worker's deletions are waited for; another worker writes the
    /// deletion of a `forbid` run's mark `FORBID_MARK_LEAD` before the job's
    /// next tick at the latest (`clear_running`), so a run that ended there
    /// only a moment before the tick can still make it a skip.
    async fn settle_forbid_marks(&self, reqs: &[ClaimRequest]) {
        let prefixes: Vec<String> = reqs
            .iter()
            .filter(|r| !r.missed && r.overlap == Overlap::Forbid)
            .map(|r| self.keys.running_prefix(&r.job))
            .collect();
        if prefixes.is_empty() {
            return;
        }
        let now_ms = chrono::Utc::now().timestamp_millis();
        let budget = reqs
            .iter()
            .map(|r| r.send_by() - now_ms - SEND_MARGIN_MS)
            .min()
            .unwrap_or(0)
            .clamp(0, self.forbid_mark_wait.as_millis() as i64);
        let until = Instant::now() + Duration::from_millis(budget as u64);
        let ours = |key: &String| prefixes.iter().any(|p| key.starts_with(p.as_str()));
        let failures = self.side.lock().expect("side ops lock").failures;
        loop {
            let done = self.side_done.notified();
            tokio::pin!(done);
            done.as_mut().enable();
            {
                let mut side = self.side.lock().expect("side ops lock");
                if side.failures != failures || side.retry_after.is_some_and(|r| r > until) {
                    // etcd refused or did not answer: the writer's back-off
                    // stands, and the claims go out as they are.
                    return;
                }
                let queued = side
                    .marks
                    .iter()
                    .any(|(key, write)| write.is_delete() && ours(key));
                if !queued && !side.deleting.iter().any(ours) {
                    return;
                }
                if queued {
                    side.due_in(Duration::ZERO);
                }
            }
            self.side_ready.notify_one();
            if tokio::time::timeout_at(until, done).await.is_err() {
                tracing::debug!(
                    "a forbid claim goes out before a deletion of its job's running mark"
                );
                return;
            }
        }
    }

    /// Writes side writes that no claim batch took along, by their deadline.
    /// Runs until `stop`; then flushes what is left once.
    pub async fn run_side_writer(&self, stop: tokio_util::sync::CancellationToken) {
        let mut lease = self.registration_lease.clone();
        let mut lease_open = true;
        loop {
            let (due, in_flight) = {
                let side = self.side.lock().expect("side ops lock");
                (side.due, side.in_flight)
            };
            let unregistered = self.registration_lease_id() == 0;
            let wait = async {
                match due {
                    // A transaction carrying side writes is out: its end notifies.
                    _ if in_flight => std::future::pending().await,
                    // Nothing can be written without a registration lease:
                    // wait for one (the lease branch), never spin.
                    _ if unregistered && lease_open => std::future::pending().await,
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = self.side_ready.notified() => continue,
                changed = lease.changed(), if lease_open => {
                    lease_open = changed.is_ok();
                    if lease_open {
                        self.rewrite_stale_marks();
                    }
                    continue;
                }
                _ = wait => {}
            }
            self.flush_side_ops().await;
        }
        self.flush_side_ops().await;
    }

    async fn flush_side_ops(&self) {
        let lease = self.registration_lease_id();
        let Some(taken) = self.take_side_ops(lease) else {
            return;
        };
        let mut kv = self.client.kv_client();
        let sent = kv.txn(Txn::new().and_then(taken.ops.clone()));
        let ok = matches!(tokio::time::timeout(CLAIM_TIMEOUT, sent).await, Ok(Ok(_)));
        if !ok {
            tracing::warn!("could not write running marks and the run feed; will retry");
        }
        self.side_sent(taken, ok);
    }
}

struct TakenSideOps {
    ops: Vec<TxnOp>,
    marks: Vec<(String, MarkWrite)>,
    feed: Vec<FinishedRun>,
}

/// The outcome of a claim whose transaction succeeded: the overlap
/// transaction is the last operation of its success branch.
fn outcome_of_won(req: &ClaimRequest, revision: i64, last: Option<&TxnOpResponse>) -> Claim {
    if req.missed {
        return Claim::Missed { revision };
    }
    let ran = match last {
        Some(TxnOpResponse::Txn(inner)) => inner.succeeded(),
        _ => true,
    };
    if ran {
        Claim::Won { revision }
    } else {
        Claim::Skipped {
            revision,
            reason: SKIP_OVERLAP,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slot_with(id: i64, asked: Instant) -> LeaseSlot {
        let mut slot = LeaseSlot::default();
        slot.install(id, asked);
        slot
    }

    #[test]
    fn a_claim_waits_for_a_grant_only_without_a_young_enough_lease() {
        let t0 = Instant::now();
        assert_eq!(LeaseSlot::default().choose(t0), LeaseUse::Grant);
        assert_eq!(slot_with(1, t0).choose(t0), LeaseUse::Use(1));
        let stale = t0 + CLAIM_LEASE_REUSE;
        assert_eq!(slot_with(1, t0).choose(stale), LeaseUse::Grant);
    }

    #[test]
    fn past_a_rotation_one_grant_starts_beside_the_claims() {
        let t0 = Instant::now();
        let mut slot = slot_with(1, t0);
        let later = t0 + CLAIM_LEASE_ROTATION;
        assert_eq!(slot.choose(later), LeaseUse::UseAndGrant(1));
        // While it is under way, claims keep the lease and start no other.
        assert_eq!(slot.choose(later), LeaseUse::Use(1));
        slot.granted(Some(2), later);
        assert_eq!(slot.choose(later), LeaseUse::Use(2));
    }

    #[test]
    fn a_failed_grant_is_tried_again_and_a_late_one_never_replaces_a_newer_lease() {
        let t0 = Instant::now();
        let mut slot = slot_with(1, t0);
        let later = t0 + CLAIM_LEASE_ROTATION;
        assert_eq!(slot.choose(later), LeaseUse::UseAndGrant(1));
        slot.granted(None, later);
        assert_eq!(slot.choose(later), LeaseUse::UseAndGrant(1));
        slot.granted(Some(3), later + CLAIM_LEASE_ROTATION);
        // A grant asked for before lease 3 arrives after it.
        slot.granted(Some(2), later);
        assert_eq!(slot.choose(later + CLAIM_LEASE_ROTATION), LeaseUse::Use(3));
    }

    #[test]
    fn a_grant_a_claim_waited_for_leaves_the_one_beside_the_claims_under_way() {
        let t0 = Instant::now();
        let mut slot = slot_with(1, t0);
        let later = t0 + CLAIM_LEASE_ROTATION;
        assert_eq!(slot.choose(later), LeaseUse::UseAndGrant(1));
        // The grant beside the claims is held up until lease 1 is too old.
        let stale = t0 + CLAIM_LEASE_REUSE;
        assert_eq!(slot.choose(stale), LeaseUse::Grant);
        slot.install(2, stale);
        // Still under way: no second one starts beside it.
        assert_eq!(slot.choose(stale + CLAIM_LEASE_ROTATION), LeaseUse::Use(2));
        slot.granted(None, later);
        assert_eq!(
            slot.choose(stale + CLAIM_LEASE_ROTATION),
            LeaseUse::UseAndGrant(2)
        );
    }

    fn forbid_job(name: &str, command: &str) -> gdts_common::Job {
        gdts_common::Job::from_spec(&gdts_common::JobSpec {
            overlap: Some("forbid".into()),
            ..gdts_common::JobSpec::shell(name, command, "* * * * * * *")
        })
        .unwrap()
    }

    /// Worker `w1`'s claimer against an etcd of its own, registered under a
    /// 60 s lease, with `jobs` stored in one transaction (`job_revision`).
    struct TestClaimer {
        claimer: Arc<Claimer>,
        job_revision: i64,
        _lease: tokio::sync::watch::Sender<i64>,
        etcd: gdts_tests::Etcd,
        _dir: tempfile::TempDir,
    }

    impl TestClaimer {
        async fn start(jobs: &[&gdts_common::Job]) -> Self {
            Self::start_waiting(jobs, FORBID_MARK_WAIT).await
        }

        /// With `forbid_mark_wait` set to `wait`.
        async fn start_waiting(jobs: &[&gdts_common::Job], wait: Duration) -> Self {
            let dir = tempfile::tempdir().unwrap();
            let etcd = gdts_tests::Etcd::start(dir.path()).await.unwrap();
            let client = Client::connect([etcd.endpoint.as_str()], None)
                .await
                .unwrap();
            let keys = Keys::new("/gdts");
            let puts: Vec<TxnOp> = jobs
                .iter()
                .map(|job| TxnOp::put(keys.job(&job.name), "{}", None))
                .collect();
            let put = client
                .kv_client()
                .txn(Txn::new().and_then(puts))
                .await
                .unwrap();
            let job_revision = put.header().unwrap().revision();
            let registration = client.lease_client().grant(60, None).await.unwrap().id();
            let (lease, lease_rx) = tokio::sync::watch::channel(registration);
            let mut claimer = Claimer::new(client, keys, "w1".into(), lease_rx);
            claimer.forbid_mark_wait = wait;
            TestClaimer {
                claimer: Arc::new(claimer),
                job_revision,
                _lease: lease,
                etcd,
                _dir: dir,
            }
        }
    }

    /// A claim that never reached etcd's answer and was taken as not made
    /// may commit later (stuck in a member's log). Its tick is then claimed
    /// again by this worker, and that attempt loses to the first: the claim
    /// key names this worker, under the first attempt's `claimedAt`.
    #[tokio::test]
    async fn a_claim_lost_to_this_workers_own_earlier_attempt_is_this_workers() {
        let spec = gdts_common::JobSpec::shell("late", "true", "* * * * * * *");
        let job = gdts_common::Job::from_spec(&spec).unwrap();
        let forbid = forbid_job("late-forbid", "true");
        let t = TestClaimer::start(&[&job, &forbid]).await;
        let (claimer, job_revision) = (&t.claimer, t.job_revision);

        let tick = 1_800_000_000_000;
        let now = chrono::Utc::now().timestamp_millis();
        let claim =
            |job: &gdts_common::Job, at: i64, earlier: Vec<i64>, missed: bool| ClaimRequest {
                earlier,
                missed,
                ..ClaimRequest::new(job, job_revision, RunKey::scheduled(tick), at)
            };
        // The first attempts, whose answers the planner never learned.
        let mut firsts = Vec::new();
        for job in [&job, &forbid] {
            let first = claimer
                .claim_batch(&[claim(job, now, vec![], false)], None)
                .await;
            let Ok(first) = first else {
                panic!("first attempt: {first:?}")
            };
            let Claim::Won { revision } = first[0] else {
                panic!("first attempt: {first:?}")
            };
            firsts.push(revision);
        }
        let (revision, forbid_revision) = (firsts[0], firsts[1]);
        // Each attempt is a transaction of its own: etcd takes a key once
        // per transaction.
        let mut outcomes = Vec::new();
        for attempt in [
            // Decided again: the first attempt's key is this worker's.
            claim(&job, now + 1000, vec![now], false),
            // Too late to run by then: recorded as missed.
            claim(&job, now + 9000, vec![now - 5, now], true),
            // Nothing of this worker's before: somebody else's.
            claim(&job, now + 2000, vec![now - 5], false),
            // `forbid`: its running mark was gone for a while, so another
            // tick may have started meanwhile; not run.
            claim(&forbid, now + 1000, vec![now], false),
        ] {
            outcomes.extend(claimer.claim_batch(&[attempt], None).await.unwrap());
        }
        assert_eq!(
            outcomes,
            vec![
                Claim::Won { revision },
                Claim::Missed { revision },
                Claim::Lost,
                Claim::Skipped {
                    revision: forbid_revision,
                    reason: SKIP_EARLIER_WIN
                },
            ]
        );
    }

    /// `forbid` skips a tick while a run of the job is in progress, not
    /// because the mark of a run that has ended is still on its way out:
    /// etcd evaluates every compare of a transaction before its writes, so
    /// the deletion riding in the claim's own transaction would not count.
    #[tokio::test]
    async fn a_forbid_claim_is_not_skipped_for_a_run_that_has_ended() {
        let forbid = forbid_job("ends-late", "sleep 0.95");
        // A wait far longer than the test needs (a slow machine).
        let t = TestClaimer::start_waiting(&[&forbid], Duration::from_secs(4)).await;
        let (claimer, job_revision) = (t.claimer.clone(), t.job_revision);
        let stop = tokio_util::sync::CancellationToken::new();
        let writer = tokio::spawn({
            let (claimer, stop) = (claimer.clone(), stop.clone());
            async move { claimer.run_side_writer(stop).await }
        });

        let now = chrono::Utc::now().timestamp_millis();
        let tick = now - now % 1000;
        let claim =
            |tick: i64| ClaimRequest::new(&forbid, job_revision, RunKey::scheduled(tick), now);
        let mut outcomes = Vec::new();
        outcomes.extend(claimer.claim_batch(&[claim(tick)], None).await.unwrap());
        // The run ends just before the next tick is claimed (its mark's
        // deletion batched as if the next tick were far).
        claimer.clear_running(&forbid.name, &RunKey::scheduled(tick), None);
        outcomes.extend(
            claimer
                .claim_batch(&[claim(tick + 1000)], None)
                .await
                .unwrap(),
        );
        // That run goes on: the tick after is skipped.
        outcomes.extend(
            claimer
                .claim_batch(&[claim(tick + 2000)], None)
                .await
                .unwrap(),
        );
        stop.cancel();
        writer.await.unwrap();
        let kinds: Vec<&str> = outcomes
            .iter()
            .map(|o| match o {
                Claim::Won { .. } => "won",
                Claim::Skipped { reason, .. } if *reason == SKIP_OVERLAP => "skipped",
                _ => "other",
            })
            .collect();
        assert_eq!(kinds, ["won", "won", "skipped"], "{outcomes:?}");
    }

    /// A deletion already in flight is waited for too, and the claim does
    /// not go out before it has been written; one a later claim has
    /// superseded (it writes that mark anew) is not queued again when its
    /// transaction fails: sent later, it could remove the new run's mark.
    #[tokio::test]
    async fn a_mark_deletion_in_flight_is_waited_for_and_not_sent_again_over_a_new_mark() {
        let forbid = forbid_job("in-flight", "sleep 0.95");
        // A wait far longer than the test needs: a slow machine cannot make
        // the claim give up waiting and be skipped.
        let t = TestClaimer::start_waiting(&[&forbid], Duration::from_secs(4)).await;
        let (claimer, job_revision) = (t.claimer.clone(), t.job_revision);
        let lease = claimer.registration_lease_id();
        let now = chrono::Utc::now().timestamp_millis();
        let tick = now - now % 1000;
        let claim =
            |tick: i64| ClaimRequest::new(&forbid, job_revision, RunKey::scheduled(tick), now);
        let won = |c: &[Claim]| matches!(c, [Claim::Won { .. }]);

        let first = claimer.claim_batch(&[claim(tick)], None).await.unwrap();
        assert!(won(&first), "{first:?}");
        claimer.clear_running(&forbid.name, &RunKey::scheduled(tick), Some(0));
        // The deletion goes out in a side transaction (no side writer runs
        // here: this test plays it).
        let taken = claimer
            .take_side_ops(lease)
            .expect("the deletion is queued");
        let mut next = tokio::spawn({
            let (claimer, req) = (claimer.clone(), claim(tick + 1000));
            async move { claimer.claim_batch(&[req], None).await }
        });
        let waited = tokio::time::timeout(Duration::from_millis(300), &mut next).await;
        assert!(waited.is_err(), "the claim did not wait for the deletion");
        let mut kv = claimer.client().kv_client();
        let next_claim = claimer.keys.claim(&forbid.name, tick + 1000);
        let sent = kv.get(next_claim.as_str(), None).await.unwrap();
        assert!(
            sent.kvs().is_empty(),
            "the claim went out before the deletion"
        );
        kv.txn(Txn::new().and_then(taken.ops.clone()))
            .await
            .unwrap();
        claimer.side_sent(taken, true);
        let next = next.await.unwrap().unwrap();
        assert!(won(&next), "{next:?}");

        // The second run's mark: its deletion is in flight when a claim of
        // the same run, which writes the mark again, goes out.
        let second = RunKey::scheduled(tick + 1000);
        let key = claimer.keys.running(&forbid.name, &second);
        let queued = |claimer: &Claimer| {
            let side = claimer.side.lock().unwrap();
            (side.marks.contains_key(&key), side.held.contains_key(&key))
        };
        let in_flight = || {
            claimer.clear_running(&forbid.name, &second, Some(0));
            claimer
                .take_side_ops(lease)
                .expect("the deletion is queued")
        };
        // The deletion fails after the claim's answer: not queued again.
        let taken = in_flight();
        let dropped = claimer.drop_pending_marks(&[claim(tick + 1000)]);
        claimer.supersede_marks(dropped);
        claimer.side_sent(taken, false);
        assert_eq!(queued(&claimer), (false, false));
        assert_eq!(claimer.side.lock().unwrap().failures, 1);
        // It fails while the claim is out: held back (sent now, it could
        // land after the claim and remove the new mark), then forgotten
        // once the claim was sent.
        let taken = in_flight();
        let dropped = claimer.drop_pending_marks(&[claim(tick + 1000)]);
        claimer.side_sent(taken, false);
        assert_eq!(queued(&claimer), (false, true));
        claimer.supersede_marks(dropped);
        assert_eq!(queued(&claimer), (false, false));
        // The same, but the claim was never sent: queued again.
        let taken = in_flight();
        let dropped = claimer.drop_pending_marks(&[claim(tick + 1000)]);
        claimer.side_sent(taken, false);
        claimer.restore_marks(dropped);
        assert_eq!(queued(&claimer), (true, false));
        claimer.side.lock().unwrap().marks.clear();
        // The claim was never sent, the deletion fails afterwards: queued again.
        let taken = in_flight();
        let dropped = claimer.drop_pending_marks(&[claim(tick + 1000)]);
        claimer.restore_marks(dropped);
        claimer.side_sent(taken, false);
        assert_eq!(queued(&claimer), (true, false));
    }

    /// A claim that never went out (no etcd member could be reached) leaves
    /// the mark writes it would have replaced as they were: the deletion
    /// queued for an earlier attempt at the tick taken as not made is still
    /// written, should that attempt commit late.
    #[tokio::test]
    async fn a_claim_never_sent_leaves_the_mark_deletion_it_would_have_replaced() {
        let job = gdts_common::Job::from_spec(&gdts_common::JobSpec::shell(
            "never-sent",
            "true",
            "* * * * * * *",
        ))
        .unwrap();
        let mut t = TestClaimer::start(&[&job]).await;
        let (claimer, job_revision) = (t.claimer.clone(), t.job_revision);
        let now = chrono::Utc::now().timestamp_millis();
        let run = RunKey::scheduled(now - now % 1000 + 1000);
        // A claim lease, so the claim below needs no grant.
        claimer.current_lease().await.unwrap();
        // An earlier attempt at the tick was taken as not made.
        let earlier = ClaimRequest::new(&job, job_revision, run.clone(), now - 10);
        claimer.clear_attempts_mark(&earlier, earlier.now_ms);
        t.etcd.stop();
        // Until the client has seen the connection go (a request on the old
        // one fails with no telling whether it was applied).
        let mut kv = claimer.client().kv_client();
        let gone = async {
            loop {
                match kv.get("probe", None).await {
                    Err(e) if gdts_runtime::etcd_never_sent(&e) => break,
                    _ => tokio::time::sleep(Duration::from_millis(20)).await,
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(10), gone)
            .await
            .expect("etcd still reachable");
        // Decided now: well within its send deadline.
        let now = chrono::Utc::now().timestamp_millis();
        let retried = claimer
            .claim_batch(
                &[ClaimRequest::new(&job, job_revision, run.clone(), now)],
                None,
            )
            .await;
        assert!(
            matches!(
                retried,
                Err(ClaimError::NotSent("no etcd member could be reached"))
            ),
            "{retried:?}"
        );
        let key = claimer.keys.running(&job.name, &run);
        let side = claimer.side.lock().unwrap();
        assert_eq!(
            side.marks.get(&key),
            Some(&MarkWrite::Delete(Some(
                claimer.running_value(earlier.now_ms)
            ))),
            "the deletion is gone: {:?}",
            side.marks.keys()
        );
    }

    /// What etcd holds at `key`.
    async fn value_at(claimer: &Claimer, key: &str) -> Option<Vec<u8>> {
        let got = claimer.client().kv_client().get(key, None).await.unwrap();
        got.kvs().first().map(|kv| kv.value().to_vec())
    }

    /// The claim key and running mark this worker's attempt at `req`'s tick
    /// decided at `claimed_at` wrote, as a claim whose answer was lost leaves
    /// them, and what `req` learns by reading the claim back (`recognise`).
    async fn win_learned_late(claimer: &Claimer, req: &ClaimRequest, claimed_at: i64) -> Claim {
        let mut kv = claimer.client().kv_client();
        let record = ClaimRecord {
            worker: "w1".into(),
            claimed_at,
            skipped: false,
            missed: false,
        };
        let claim_key = claimer.keys.claim_run(&req.job, &req.run);
        kv.put(
            claim_key.as_str(),
            serde_json::to_vec(&record).unwrap(),
            None,
        )
        .await
        .unwrap();
        let mark = claimer.keys.running(&req.job, &req.run);
        kv.put(mark, claimer.running_value(claimed_at), None)
            .await
            .unwrap();
        let got = kv.get(claim_key, None).await.unwrap();
        claimer.recognise(req, &got.kvs()[0])
    }

    /// A run's mark deletion deletes only the mark this worker wrote: one
    /// that lands after the mark was written anew (by a later attempt at
    /// the tick, with its own `startedAt`, or by another worker) leaves it.
    #[tokio::test]
    async fn a_mark_deletion_leaves_a_mark_written_anew() {
        let (a, b) = (forbid_job("anew", "true"), forbid_job("as-written", "true"));
        let t = TestClaimer::start(&[&a, &b]).await;
        let claimer = t.claimer.clone();
        let mut kv = claimer.client().kv_client();
        let mark = |job: &gdts_common::Job, run: &RunKey| {
            let key = claimer.keys.running(&job.name, run);
            let claimer = claimer.clone();
            async move { value_at(&claimer, &key).await }
        };
        let now = chrono::Utc::now().timestamp_millis();
        let run = RunKey::scheduled(now - now % 1000 + 1000);
        let reqs: Vec<ClaimRequest> = [&a, &b]
            .iter()
            .map(|job| ClaimRequest::new(job, t.job_revision, run.clone(), now))
            .collect();
        let won = claimer.claim_batch(&reqs, None).await.unwrap();
        assert!(
            matches!(won[..], [Claim::Won { .. }, Claim::Won { .. }]),
            "{won:?}"
        );
        assert_eq!(mark(&a, &run).await, Some(claimer.running_value(now)));
        // Job a's mark is written anew before this worker's deletion of the
        // one it wrote lands.
        let anew = claimer.running_value(now + 1);
        kv.put(claimer.keys.running(&a.name, &run), anew.clone(), None)
            .await
            .unwrap();
        claimer.clear_running(&a.name, &run, Some(0));
        claimer.clear_running(&b.name, &run, Some(0));
        claimer.flush_side_ops().await;
        {
            let side = claimer.side.lock().unwrap();
            assert!(side.marks.is_empty() && !side.in_flight && side.failures == 0);
        }
        assert_eq!(
            mark(&a, &run).await,
            Some(anew),
            "the mark written anew is gone"
        );
        assert_eq!(
            mark(&b, &run).await,
            None,
            "the mark this worker wrote stays"
        );
        // An attempt's mark, deleted as that attempt's: the same.
        let later = RunKey::scheduled(now - now % 1000 + 2000);
        let req = ClaimRequest::new(&a, t.job_revision, later.clone(), now - 5);
        let key = claimer.keys.running(&a.name, &later);
        kv.put(key.as_str(), claimer.running_value(now), None)
            .await
            .unwrap();
        claimer.clear_attempts_mark(&req, req.now_ms);
        claimer.flush_side_ops().await;
        assert_eq!(mark(&a, &later).await, Some(claimer.running_value(now)));
        claimer.clear_attempts_mark(&req, now);
        claimer.flush_side_ops().await;
        assert_eq!(mark(&a, &later).await, None);
    }

    /// A won claim learned of only by reading its claim key back
    /// (`recognise`): its mark, written by the attempt that won (under its
    /// own `claimedAt`), is deleted when the run ends, even before the
    /// mark's rewrite under the current lease went out.
    #[tokio::test]
    async fn the_mark_of_a_win_learned_late_is_deleted_at_the_runs_end() {
        let spec = gdts_common::JobSpec::shell("learned-late", "true", "* * * * * * *");
        let allow = gdts_common::Job::from_spec(&spec).unwrap();
        let forbid = forbid_job("learned-late-forbid", "true");
        let t = TestClaimer::start(&[&allow, &forbid]).await;
        let claimer = t.claimer.clone();
        let now = chrono::Utc::now().timestamp_millis();
        let run = RunKey::scheduled(now - now % 1000 + 1000);
        // The allow job's tick was won by an earlier attempt, the forbid
        // job's by this one; their answers were lost.
        let mut late = ClaimRequest::new(&allow, t.job_revision, run.clone(), now);
        late.earlier = vec![now - 10];
        let this = ClaimRequest::new(&forbid, t.job_revision, run.clone(), now);
        for (req, claimed_at) in [(&late, now - 10), (&this, now)] {
            let claim = win_learned_late(&claimer, req, claimed_at).await;
            assert!(matches!(claim, Claim::Won { .. }), "{claim:?}");
            // The run ends at once.
            claimer.clear_running(&req.job, &run, Some(0));
        }
        claimer.flush_side_ops().await;
        assert!(claimer.side.lock().unwrap().marks.is_empty());
        for job in [&allow, &forbid] {
            let mark = value_at(&claimer, &claimer.keys.running(&job.name, &run)).await;
            assert_eq!(mark, None, "{}'s mark is left", job.name);
        }
    }

    /// A win learned late while a deletion of the run's mark (an earlier
    /// attempt's, taken as not made) is in flight: that deletion's success
    /// does not make the run's end forget the mark the win wrote.
    #[tokio::test]
    async fn a_deletion_in_flight_does_not_make_a_win_learned_late_leave_its_mark() {
        let forbid = forbid_job("in-flight-late", "true");
        let t = TestClaimer::start(&[&forbid]).await;
        let claimer = t.claimer.clone();
        let lease = claimer.registration_lease_id();
        let now = chrono::Utc::now().timestamp_millis();
        let run = RunKey::scheduled(now - now % 1000 + 1000);
        let key = claimer.keys.running(&forbid.name, &run);
        // The earlier attempt was taken as not made: its deletion goes out.
        let earlier = ClaimRequest::new(&forbid, t.job_revision, run.clone(), now - 10);
        claimer.clear_attempts_mark(&earlier, earlier.now_ms);
        let taken = claimer.take_side_ops(lease).expect("queued");
        // Meanwhile the next attempt's win is learned by reading it back.
        let mut req = ClaimRequest::new(&forbid, t.job_revision, run.clone(), now);
        req.earlier = vec![earlier.now_ms];
        let claim = win_learned_late(&claimer, &req, now).await;
        assert!(matches!(claim, Claim::Won { .. }), "{claim:?}");
        // The deletion's transaction succeeds; the run ends before the
        // mark's rewrite went out.
        claimer.side_sent(taken, true);
        claimer.clear_running(&forbid.name, &run, Some(0));
        assert_eq!(
            claimer.side.lock().unwrap().marks.get(&key),
            Some(&MarkWrite::Delete(Some(claimer.running_value(now))))
        );
        claimer.flush_side_ops().await;
        assert_eq!(value_at(&claimer, &key).await, None, "the mark is left");
    }

    /// A mark's deletion is due `MARK_WRITE_DELAY` after the run's end, to
    /// go out with other writes, or sooner when asked (a `forbid` job's next
    /// tick, claimed at the tick and most often by another worker, would be
    /// skipped for a run that ended up to `MARK_WRITE_DELAY` before it).
    #[tokio::test]
    async fn a_run_marks_deletion_is_due_by_the_time_asked() {
        let forbid = forbid_job("due-now", "true");
        let t = TestClaimer::start(&[&forbid]).await;
        let claimer = t.claimer.clone();
        // When the write is due, from just before the call and from just after.
        let due = |by_ms: Option<i64>, tick: i64| {
            let before = Instant::now();
            claimer.clear_running(&forbid.name, &RunKey::scheduled(tick), by_ms);
            let after = Instant::now();
            let mut side = claimer.side.lock().unwrap();
            let due = side.due.take().expect("a write is due");
            side.marks.clear();
            (due.saturating_duration_since(before), due <= after)
        };
        assert!(due(None, 1000).0 >= MARK_WRITE_DELAY);
        assert!(due(Some(0), 2000).1, "not due at once");
    }

    #[test]
    fn a_mark_deletion_is_due_within_the_write_delay_or_by_the_time_asked() {
        let now = 1_000_000;
        assert_eq!(mark_delay(None, now), MARK_WRITE_DELAY);
        assert_eq!(mark_delay(Some(now - 5), now), Duration::ZERO);
        assert_eq!(mark_delay(Some(now + 40), now), Duration::from_millis(40));
        assert_eq!(mark_delay(Some(now + 1000), now), MARK_WRITE_DELAY);
    }

    /// After a failed side transaction nothing is due before its back-off,
    /// not even a deletion asked for at once.
    #[tokio::test]
    async fn an_urgent_write_waits_out_the_back_off_after_a_failure() {
        let forbid = forbid_job("back-off", "true");
        let t = TestClaimer::start(&[&forbid]).await;
        let claimer = t.claimer.clone();
        let lease = claimer.registration_lease_id();
        claimer.clear_running(&forbid.name, &RunKey::scheduled(1000), Some(0));
        let taken = claimer.take_side_ops(lease).expect("queued");
        // Due at once, queued while that transaction is out...
        claimer.clear_running(&forbid.name, &RunKey::scheduled(2000), Some(0));
        let failed = Instant::now();
        claimer.side_sent(taken, false);
        let due = claimer.side.lock().unwrap().due.expect("a write is due");
        assert!(due >= failed + SIDE_RETRY_AFTER, "due before the back-off");
        // ...and asked for at once after it failed.
        claimer.clear_running(&forbid.name, &RunKey::scheduled(3000), Some(0));
        let due = claimer.side.lock().unwrap().due.expect("a write is due");
        assert!(due >= failed + SIDE_RETRY_AFTER, "due before the back-off");
    }
}
