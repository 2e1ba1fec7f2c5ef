//! Keeps this worker registered under `workers/{id}` with a lease it keeps
//! alive. A worker that dies stops renewing and its registration disappears
//! within the lease TTL. A lease that is lost (expired while cut off from
//! etcd) is replaced by a new one and the registration written again.
//!
//! The record is written when the worker registers and when what it says
//! changes (draining at shutdown, whether it can run containers), never on
//! a timer: renewals are keep-alive messages only, so an idle fleet costs
//! etcd next to nothing. (The manager reads when a worker last renewed from
//! its lease.) A worker registers only once it has read its jobs, so it
//! never owns ticks it does not know about.

use std::sync::Arc;
use std::time::Duration;

use etcd_client::{Client, Compare, CompareOp, PutOptions, Txn, TxnOp};
use gdts_common::keys::Keys;
use gdts_common::values::WorkerInfo;
use tokio_util::sync::CancellationToken;

use crate::health::Health;

/// What the registration knows across interruptions of its keep-alive.
#[derive(Default)]
struct Renewals {
    written_with: Option<i64>,
    last_renewed: Option<tokio::time::Instant>,
}

pub struct Registration {
    pub client: Client,
    pub keys: Keys,
    pub info: WorkerInfo,
    pub ttl: Duration,
    pub health: Arc<Health>,
    /// The current lease id (0 while unregistered), for running marks.
    pub lease_id: tokio::sync::watch::Sender<i64>,
    /// Until when the lease surely lives: the send time of the last renewal
    /// etcd answered, plus the TTL it granted. See [`fence_guarded_runs`].
    pub valid_until: tokio::sync::watch::Sender<Option<tokio::time::Instant>>,
    /// True once the worker has read its jobs.
    pub ready: tokio::sync::watch::Receiver<bool>,
    /// Set at shutdown: the worker takes no new ticks.
    pub draining: tokio::sync::watch::Receiver<bool>,
    /// Whether a Docker daemon answers.
    pub containers: tokio::sync::watch::Receiver<bool>,
    /// Cancelled when another live process is registered under this id:
    /// the worker stops.
    pub id_taken: CancellationToken,
    /// This worker's clock against the reference: shown, and a skewed
    /// worker owns no ticks.
    pub clock: tokio::sync::watch::Receiver<crate::clock::ClockReading>,
    /// Whether run records cannot be written (the log writer journals).
    pub records_blocked: tokio::sync::watch::Receiver<bool>,
}

/// Writing the registration found the key held under another lease.
#[derive(Debug)]
struct IdTaken {
    lease: i64,
}

impl std::fmt::Display for IdTaken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "registered under another process's lease {:x}",
            self.lease
        )
    }
}

impl std::error::Error for IdTaken {}

/// Waits until no live process is registered as `id`: a worker restarted
/// after a crash waits for its earlier life's lease to expire (at most
/// `ttl`); if the registration is still kept alive after that, another
/// worker runs with this id, and starting would remove its containers and
/// share its claims: an error.
pub async fn wait_for_id(
    client: &Client,
    keys: &Keys,
    id: &str,
    ttl: Duration,
) -> anyhow::Result<()> {
    let key = keys.worker(id);
    let deadline = tokio::time::Instant::now() + ttl + Duration::from_secs(2);
    let mut said = false;
    let mut backoff = Duration::from_millis(200);
    loop {
        // etcd (or the member this request went to) may be down for a
        // moment: a worker starting then waits for it, as it would later.
        let resp = match client.kv_client().get(key.as_str(), None).await {
            Ok(resp) => resp,
            Err(e) => {
                tracing::warn!(error = %e, retry_in = ?backoff, "cannot read this worker's registration from etcd; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
                continue;
            }
        };
        let Some(kv) = resp.kvs().first() else {
            return Ok(());
        };
        if tokio::time::Instant::now() >= deadline {
            anyhow::bail!(
                "another live worker is registered as {id} (lease {:x}, kept alive for more than \
                 {}s): refusing to start a second worker with this id (set GDTS_WORKER_ID)",
                kv.lease(),
                ttl.as_secs()
            );
        }
        if !said {
            tracing::info!(worker = id, lease = format!("{:x}", kv.lease()),
                "a registration of this worker id exists: waiting for it to expire (an earlier life of this worker) or refusing to start (another worker with this id)");
            said = true;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

impl Registration {
    /// Runs until `shutdown`, then revokes the lease so the worker leaves
    /// `/worker/list` at once.
    pub async fn run(mut self, shutdown: CancellationToken) {
        let mut lease: Option<i64> = None;
        // The lease the registration key was last written with, and when the
        // lease was last renewed: an interrupted keep-alive stream (an etcd
        // too busy to answer in time) does not end a registration whose
        // lease is still alive; the worker stays registered and keeps
        // claiming until the lease may have expired.
        let mut state = Renewals::default();
        let mut backoff = Duration::from_millis(200);
        tokio::select! {
            _ = shutdown.cancelled() => return,
            r = self.ready.wait_for(|ready| *ready) => if r.is_err() { return },
        }
        loop {
            let started = tokio::time::Instant::now();
            let result = tokio::select! {
                _ = shutdown.cancelled() => break,
                r = self.keep_registered(&mut lease, &mut state) => r,
            };
            if started.elapsed() > self.ttl {
                // It had been registered for a while: retry quickly again.
                backoff = Duration::from_millis(200);
            }
            if let Err(e) = result {
                if let Some(taken) = e.downcast_ref::<IdTaken>() {
                    tracing::error!(worker = %self.info.id, "another live worker is registered as this worker ({taken}); stopping");
                    self.health.set_registered(false);
                    self.lease_id.send_replace(0);
                    self.id_taken.cancel();
                    break;
                }
                if let Some(id) = lease {
                    if !self.lease_alive(id).await {
                        // Expired while we were cut off: start over with a new one.
                        lease = None;
                    }
                }
                let renewed_within_ttl =
                    state.last_renewed.is_some_and(|at| at.elapsed() < self.ttl);
                if lease.is_some() && renewed_within_ttl {
                    tracing::warn!(error = %e, "worker registration's keep-alive interrupted; its lease is still valid, renewing it again");
                } else {
                    self.health.set_registered(false);
                    self.health.metrics.lease_lost();
                    self.lease_id.send_replace(0);
                    tracing::warn!(error = %e, "worker registration interrupted; retrying");
                }
            }
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(Duration::from_secs(2));
        }
        self.lease_id.send_replace(0);
        if let Some(id) = lease {
            let revoke = self.client.lease_revoke(id);
            match tokio::time::timeout(Duration::from_secs(3), revoke).await {
                Ok(Ok(_)) => tracing::info!("registration lease revoked"),
                Ok(Err(e)) => tracing::warn!(error = %e, "revoking the registration lease failed"),
                Err(_) => tracing::warn!("revoking the registration lease timed out"),
            }
        }
    }

    /// Whether etcd still has lease `id`. When etcd cannot be asked, assume
    /// it does: the next attempt finds out.
    async fn lease_alive(&mut self, id: i64) -> bool {
        let ask = self.client.lease_time_to_live(id, None);
        match tokio::time::timeout(Duration::from_secs(2), ask).await {
            Ok(Ok(resp)) => resp.ttl() > 0,
            _ => true,
        }
    }

    async fn keep_registered(
        &mut self,
        lease: &mut Option<i64>,
        state: &mut Renewals,
    ) -> anyhow::Result<()> {
        let id = match *lease {
            Some(id) => id,
            None => {
                let granted = self
                    .client
                    .lease_grant(self.ttl.as_secs() as i64, None)
                    .await?;
                *lease = Some(granted.id());
                granted.id()
            }
        };
        let (mut keeper, mut responses) = self.client.lease_keep_alive(id).await?;
        let renew_every = self.ttl / 3;
        let mut renew = tokio::time::interval(renew_every);
        let mut registered = false;
        let (mut draining_open, mut containers_open, mut clock_open) = (true, true, true);
        let mut blocked_open = true;
        loop {
            tokio::select! {
                _ = renew.tick() => {
                    let sent = tokio::time::Instant::now();
                    let timed = std::time::Instant::now();
                    keeper.keep_alive().await?;
                    let answer = tokio::time::timeout(renew_every, responses.message()).await;
                    gdts_runtime::metrics::etcd_observed(
                        "lease_keep_alive",
                        timed,
                        matches!(answer, Ok(Ok(Some(_)))),
                    );
                    let resp = answer
                        .map_err(|_| anyhow::anyhow!("keep-alive not answered in {renew_every:?}"))??
                        .ok_or_else(|| anyhow::anyhow!("keep-alive stream ended"))?;
                    if resp.ttl() <= 0 {
                        *lease = None;
                        state.last_renewed = None;
                        self.valid_until.send_replace(Some(tokio::time::Instant::now()));
                        anyhow::bail!("registration lease {id:x} expired");
                    }
                    state.last_renewed = Some(tokio::time::Instant::now());
                    self.health.metrics.lease_renewed();
                    // etcd renewed it after the request left: it lives at
                    // least the granted TTL from then.
                    self.valid_until.send_replace(Some(
                        sent + Duration::from_secs(resp.ttl() as u64),
                    ));
                    if !registered {
                        // Written at every (re)registration, also under the
                        // same lease: a change of what it says (draining,
                        // clock, records blocked) may have come while the
                        // keep-alive was interrupted, and was not written.
                        self.write(id).await?;
                        if state.written_with != Some(id) {
                            state.written_with = Some(id);
                            tracing::info!(worker = %self.info.id, lease = format!("{id:x}"), "registered");
                        }
                        registered = true;
                        self.health.set_registered(true);
                        self.lease_id.send_replace(id);
                    }
                }
                r = self.draining.changed(), if draining_open => {
                    draining_open = r.is_ok();
                    if r.is_ok() && registered {
                        self.write(id).await?;
                        tracing::info!(worker = %self.info.id, "registered as draining: takes no new ticks");
                    }
                }
                r = self.containers.changed(), if containers_open => {
                    containers_open = r.is_ok();
                    if r.is_ok() && registered {
                        self.write(id).await?;
                    }
                }
                r = self.clock.changed(), if clock_open => {
                    clock_open = r.is_ok();
                    if r.is_ok() && registered {
                        self.write(id).await?;
                    }
                }
                r = self.records_blocked.changed(), if blocked_open => {
                    blocked_open = r.is_ok();
                    if r.is_ok() && registered {
                        self.write(id).await?;
                    }
                }
            }
        }
    }

    /// Writes the registration under `lease`, if the key is free or already
    /// ours; held under another lease, it is another process's: `IdTaken`.
    async fn write(&mut self, lease: i64) -> anyhow::Result<()> {
        self.info.draining = *self.draining.borrow();
        self.info.containers = *self.containers.borrow();
        let clock = *self.clock.borrow();
        self.info.clock_offset_ms = clock.offset_ms;
        self.info.clock_skewed = clock.skewed;
        self.info.records_blocked = *self.records_blocked.borrow();
        let value = serde_json::to_vec(&self.info).expect("worker info serializes");
        let key = self.keys.worker(&self.info.id);
        let put = TxnOp::put(
            key.as_str(),
            value,
            Some(PutOptions::new().with_lease(lease)),
        );
        // A missing key compares as lease 0.
        for held_by in [lease, 0] {
            let txn = Txn::new()
                .when([Compare::lease(key.as_str(), CompareOp::Equal, held_by)])
                .and_then([put.clone()]);
            if self.client.txn(txn).await?.succeeded() {
                return Ok(());
            }
        }
        let resp = self.client.get(key.as_str(), None).await?;
        match resp.kvs().first() {
            Some(kv) => Err(IdTaken { lease: kv.lease() }.into()),
            // Gone meanwhile (its lease expired): the next attempt writes it.
            None => anyhow::bail!("the registration key changed while being written"),
        }
    }
}

/// Stops the runs whose overlap policy rests on their running mark
/// (`forbid`, `replace`) before the registration lease that mark lives on
/// can expire: a worker cut off from etcd cannot renew its lease, and once
/// it expires another worker sees no run in progress and starts the job
/// again. The lease surely lives until `valid_until` (see
/// [`Registration::valid_until`]); `LEASE_FENCE_MARGIN` before that (a
/// quarter of the TTL at most, which renewals every third of it never
/// reach), the runs are killed without grace. Runs until `stop`.
pub async fn fence_guarded_runs(
    mut valid_until: tokio::sync::watch::Receiver<Option<tokio::time::Instant>>,
    ttl: Duration,
    runs: Arc<crate::runs::Runs>,
    stop: CancellationToken,
) {
    let margin = gdts_common::timing::LEASE_FENCE_MARGIN.min(ttl / 4);
    loop {
        let until = *valid_until.borrow_and_update();
        let fence = async {
            match until {
                Some(at) => tokio::time::sleep_until(at - margin).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = stop.cancelled() => return,
            changed = valid_until.changed() => {
                if changed.is_err() {
                    return;
                }
                // Renewed: its marks live on.
                if valid_until.borrow().is_some_and(|at| at - margin > tokio::time::Instant::now()) {
                    runs.unfence();
                }
            }
            _ = fence => {
                let killed = runs.kill_guarded(crate::executor::KillReason::LeaseLost);
                if killed > 0 {
                    tracing::error!(runs = killed, "the registration lease could not be renewed and may expire: stopped the forbid/replace runs its running marks protect");
                }
                // Until the next renewal or registration.
                if valid_until.changed().await.is_err() {
                    return;
                }
                if valid_until.borrow().is_some_and(|at| at - margin > tokio::time::Instant::now()) {
                    runs.unfence();
                }
            }
        }
    }
}
