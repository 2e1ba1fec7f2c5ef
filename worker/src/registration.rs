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

use etcd_client::{Client, PutOptions};
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
    /// True once the worker has read its jobs.
    pub ready: tokio::sync::watch::Receiver<bool>,
    /// Set at shutdown: the worker takes no new ticks.
    pub draining: tokio::sync::watch::Receiver<bool>,
    /// Whether a Docker daemon answers.
    pub containers: tokio::sync::watch::Receiver<bool>,
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
        let (mut draining_open, mut containers_open) = (true, true);
        loop {
            tokio::select! {
                _ = renew.tick() => {
                    keeper.keep_alive().await?;
                    let resp = tokio::time::timeout(renew_every, responses.message())
                        .await
                        .map_err(|_| anyhow::anyhow!("keep-alive not answered in {renew_every:?}"))??
                        .ok_or_else(|| anyhow::anyhow!("keep-alive stream ended"))?;
                    if resp.ttl() <= 0 {
                        *lease = None;
                        state.last_renewed = None;
                        anyhow::bail!("registration lease {id:x} expired");
                    }
                    state.last_renewed = Some(tokio::time::Instant::now());
                    if !registered {
                        // The key lives as long as its lease: written once.
                        if state.written_with != Some(id) {
                            self.write(id).await?;
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
            }
        }
    }

    async fn write(&mut self, lease: i64) -> Result<(), etcd_client::Error> {
        self.info.draining = *self.draining.borrow();
        self.info.containers = *self.containers.borrow();
        let value = serde_json::to_vec(&self.info).expect("worker info serializes");
        self.client
            .put(
                self.keys.worker(&self.info.id),
                value,
                Some(PutOptions::new().with_lease(lease)),
            )
            .await?;
        Ok(())
    }
}
