//! `gdts-worker`: follows the jobs in etcd, claims each tick it is due for,
//! runs the ticks it wins and writes their records to MongoDB.

mod claim;
mod config;
mod container;
mod etcd_watch;
mod executor;
mod gcs;
mod health;
mod kills;
mod log_sink;
mod output;
mod registration;
mod run;
mod runs;
mod scheduler;

use std::sync::Arc;

use anyhow::Context;
use config::WorkerConfig;
use gdts_common::keys::Keys;
use gdts_common::values::WorkerInfo;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = WorkerConfig::from_lookup(&|k| std::env::var(k).ok())
        .map_err(anyhow::Error::msg)
        .context("invalid configuration")?;
    gdts_runtime::init_tracing(config.log_format);
    tracing::info!(worker = %config.worker_id, "worker starting");

    let etcd = gdts_runtime::connect_etcd(&config.store.etcd_endpoints).await?;
    let mongo = gdts_runtime::mongo_client(&config.store.mongo_uri, "gdts-worker").await?;

    let keys = Keys::new(&config.store.etcd_prefix);
    let outputs = match config.gcs.clone() {
        Some(gcs) => Some(
            gcs::OutputStore::connect(gcs)
                .await
                .context("setting up the outputs bucket client")?,
        ),
        None => None,
    };
    let docker = container::DockerConn::connect();
    match docker.get().await {
        Ok(d) => remove_leftover_containers(&d, &etcd, &keys, &config).await,
        Err(e) => {
            tracing::warn!(error = %e, "Docker unavailable; container jobs fail until it is back")
        }
    }
    let stop_scheduling = CancellationToken::new();
    let stop_all = CancellationToken::new();
    let background = TaskTracker::new();
    let run_tasks = TaskTracker::new();
    let runs = Arc::new(runs::Runs::default());
    let health = Arc::new(health::Health::default());
    let (lease_id, lease_rx) = tokio::sync::watch::channel(0i64);
    health.set_scheduler_running(true);
    if let Some(port) = config.health_port {
        let listener = tokio::net::TcpListener::bind(("0.0.0.0", port))
            .await
            .with_context(|| format!("binding the health port {port}"))?;
        background.spawn(health::serve(listener, health.clone(), stop_all.clone()));
    }

    let (log_tx, log_rx) = mpsc::channel(config.log_buffer);
    let log_writer = tokio::spawn(log_sink::run_log_writer(
        mongo.database(&config.store.mongo_db),
        log_rx,
        log_sink::SinkConfig {
            batch_size: config.log_batch_size,
            batch_wait: config.log_batch_wait,
            flush_timeout: config.log_flush_timeout,
            spool_dir: config.spool_dir.clone(),
            worker_id: config.worker_id.clone(),
        },
    ));

    background.spawn(
        registration::Registration {
            client: etcd.clone(),
            keys: keys.clone(),
            info: WorkerInfo {
                id: config.worker_id.clone(),
                hostname: config::hostname(),
                version: env!("CARGO_PKG_VERSION").into(),
                start_time: executor::now_ms(),
                running: 0,
                last_seen: 0,
                draining: false,
            },
            ttl: config.lease_ttl,
            runs: runs.clone(),
            health: health.clone(),
            lease_id,
        }
        .run(stop_all.clone()),
    );

    let (kill_tx, kill_rx) = mpsc::channel(64);
    background.spawn(etcd_watch::follow_prefix(
        etcd.clone(),
        keys.kill_prefix(),
        kill_tx,
        stop_all.clone(),
    ));
    background.spawn(kills::apply_kill_requests(
        keys.clone(),
        runs.clone(),
        kill_rx,
    ));

    let (job_tx, job_rx) = mpsc::channel(256);
    background.spawn(etcd_watch::follow_prefix(
        etcd.clone(),
        keys.jobs_prefix(),
        job_tx,
        stop_scheduling.clone(),
    ));
    let ctx = Arc::new(run::RunContext {
        worker_id: config.worker_id.clone(),
        prefix: keys.prefix().to_string(),
        docker,
        claimer: claim::Claimer::new(
            etcd.clone(),
            keys.clone(),
            config.worker_id.clone(),
            lease_rx.clone(),
        ),
        runs: runs.clone(),
        limits: executor::RunLimits {
            capture: match &config.gcs {
                Some(_) => output::CaptureConfig::Spool {
                    inline: config.output_limit,
                    max: config.output_max,
                    dir: config.spool_dir.clone(),
                },
                None => output::CaptureConfig::Tail {
                    limit: config.output_limit,
                },
            },
            kill_grace: config.kill_grace,
        },
        outputs,
        log_records: log_tx,
        stop_scheduling: stop_scheduling.clone(),
    });
    let (run_now_tx, run_now_rx) = mpsc::channel(64);
    background.spawn(etcd_watch::follow_prefix(
        etcd.clone(),
        keys.run_now_prefix(),
        run_now_tx,
        stop_scheduling.clone(),
    ));
    let scheduler = {
        let health = health.clone();
        let run = scheduler::run_scheduler(
            scheduler::JobTable::new(keys.clone()),
            job_rx,
            run_now_rx,
            ctx,
            run_tasks.clone(),
            lease_rx,
            stop_scheduling.clone(),
        );
        tokio::spawn(async move {
            run.await;
            health.set_scheduler_running(false);
        })
    };

    gdts_runtime::shutdown_signal().await;
    tracing::info!("shutting down: no new ticks; waiting for running jobs");
    stop_scheduling.cancel();
    scheduler.await.context("scheduler task panicked")?;
    run_tasks.close();
    if tokio::time::timeout(config.shutdown_grace, run_tasks.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            running = runs.count(),
            "shutdown grace over; killing running jobs"
        );
        runs.kill_all(executor::KillReason::Shutdown);
        run_tasks.wait().await;
    }
    // Every run task (and with it every log sender) is gone: the writer
    // drains what is buffered and stops.
    let unwritten = log_writer.await.context("log writer panicked")?;
    stop_all.cancel();
    background.close();
    background.wait().await;
    if unwritten > 0 {
        anyhow::bail!("{unwritten} run records could not be written to MongoDB");
    }
    tracing::info!("worker stopped");
    Ok(())
}

/// Containers left by an earlier life of this worker, or by workers no
/// longer registered, are removed before any new run starts.
async fn remove_leftover_containers(
    docker: &bollard::Docker,
    etcd: &etcd_client::Client,
    keys: &Keys,
    config: &WorkerConfig,
) {
    let options = etcd_client::GetOptions::new()
        .with_prefix()
        .with_keys_only();

    let live: Option<std::collections::HashSet<String>> = match etcd
        .clone()
        .get(keys.workers_prefix(), Some(options))
        .await
    {
        Ok(resp) => Some(
            resp.kvs()
                .iter()
                .filter_map(|kv| keys.parse_worker_key(kv.key()))
                .collect(),
        ),
        Err(e) => {
            // Without the list, only this worker's own leftovers are safe to remove.
            tracing::warn!(error = %e, "could not list live workers; removing only own leftovers");
            None
        }
    };
    let removed =
        container::remove_leftovers(docker, keys.prefix(), &config.worker_id, live.as_ref()).await;
    if removed > 0 {
        tracing::info!(removed, "removed leftover containers");
    }
}
