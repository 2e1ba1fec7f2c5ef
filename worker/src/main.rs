//! `gdts-worker`: follows the jobs in etcd, claims each tick it is due for,
//! runs the ticks it wins and writes their records to MongoDB.

mod cgroup;
mod claim;
mod clock;
mod config;
mod container;
mod executor;
mod gcs;
mod health;
mod jobs;
mod kills;
mod load;
mod log_sink;
mod metrics;
mod notify;
mod orphans;
mod output;
mod planner;
mod registration;
mod run;
mod runner;
mod runs;
mod supervise;

use std::sync::Arc;

use anyhow::Context;
use config::WorkerConfig;
use gdts_common::keys::Keys;
use gdts_common::values::WorkerInfo;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

fn main() -> anyhow::Result<()> {
    let config = WorkerConfig::from_lookup(&|k| std::env::var(k).ok())
        .map_err(anyhow::Error::msg)
        .context("invalid configuration")?;
    if config.shell.run_as.is_some() {
        // Before any other thread exists (no_new_privs is a thread's, and
        // threads inherit it): every process the worker starts has it, so
        // no setuid or file-capability binary (sudo, su, ping) lifts a run
        // above the job user. The worker keeps its own rights: it switches
        // users by system call, never by exec.
        nix::sys::prctl::set_no_new_privs()
            .context("setting no_new_privs for runs as the job user")?;
    }
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?
        .block_on(run(config))
}

async fn run(config: WorkerConfig) -> anyhow::Result<()> {
    gdts_runtime::init_tracing(config.log_format);
    tracing::info!(worker = %config.worker_id, "worker starting");
    // Not dumpable: a job running as the worker's own user cannot read the
    // worker's memory or /proc/<worker>/environ (GDTS_MONGO_URI, etcd
    // credentials). Root still can: run jobs as GDTS_JOB_USER.
    if let Err(e) = nix::sys::prctl::set_dumpable(false) {
        tracing::warn!(error = %e, "could not make the worker non-dumpable");
    }
    match &config.shell.run_as {
        Some(user) => {
            tracing::info!(user = %user.name, uid = user.uid, "shell jobs run as an unprivileged user (no_new_privs)");
        }
        None if nix::unistd::geteuid().is_root() => tracing::warn!(
            "shell jobs run as root: set GDTS_JOB_USER (e.g. nobody) to run them unprivileged"
        ),
        None => {}
    }

    let etcd =
        gdts_runtime::connect_etcd(&config.store.etcd_endpoints, &config.store.etcd_security)
            .await?;
    let mongo = gdts_runtime::mongo_client(&config.store.mongo_uri, "gdts-worker").await?;

    // Outputs waiting for upload and records waiting for MongoDB go here.
    if let Err(e) = log_sink::create_private_dir(&config.spool_dir) {
        tracing::warn!(dir = %config.spool_dir.display(), error = %e, "cannot create the spool directory (GDTS_SPOOL_DIR)");
    }
    let keys = Keys::new(&config.store.etcd_prefix);
    let outputs = match config.gcs.clone() {
        Some(gcs) => Some(Arc::new(
            gcs::OutputStore::connect(gcs)
                .await
                .context("setting up the outputs bucket client")?,
        )),
        None => None,
    };
    // One process per worker id: a second one would take the first one's
    // containers for its own leftovers and remove them.
    registration::wait_for_id(&etcd, &keys, &config.worker_id, config.lease_ttl).await?;
    let mut docker = container::DockerConn::connect();
    docker.allow_host_network = config.container_host_network;
    match docker.get().await {
        Ok(d) => remove_leftover_containers(&d, &etcd, &keys, &config).await,
        Err(e) => {
            tracing::warn!(error = %e, "Docker unavailable; container jobs fail until it is back")
        }
    }
    raise_open_file_limit();
    let stop_scheduling = CancellationToken::new();
    let stop_all = CancellationToken::new();
    let background = TaskTracker::new();
    // The clock is checked before anything is claimed, then kept checked.
    let metrics = Arc::new(metrics::Metrics::new(config.metrics_max_jobs));
    let (clock_tx, clock_rx) = tokio::sync::watch::channel(clock::ClockReading::default());
    clock::check(&mongo, &clock_tx, &metrics).await;
    background.spawn(clock::keep_checking(
        mongo.clone(),
        clock_tx,
        metrics.clone(),
        stop_all.clone(),
    ));
    let run_tasks = TaskTracker::new();
    // Ends once every sender (the run context) is gone and deliveries in
    // flight finish, or `notify::FLUSH_GRACE` after.
    let (notifier, notifier_done) = notify::Notifier::start(
        metrics.clone(),
        notify::Outbox::new(&config.spool_dir, &config.worker_id),
        stop_all.clone(),
    );
    let runs = Arc::new(runs::Runs::default());
    let health = Arc::new(health::Health::new(metrics.clone()));
    let (lease_id, lease_rx) = tokio::sync::watch::channel(0i64);
    let (valid_until, valid_until_rx) = tokio::sync::watch::channel(None);
    background.spawn(registration::fence_guarded_runs(
        valid_until_rx,
        config.lease_ttl,
        runs.clone(),
        stop_all.clone(),
    ));
    let (ready_tx, ready_rx) = tokio::sync::watch::channel(false);
    let (draining_tx, draining_rx) = tokio::sync::watch::channel(false);
    // Whether this worker can take container ticks, as Docker comes and goes.
    let containers_rx =
        container::watch_availability(docker.clone(), &background, stop_all.clone()).await;
    health.set_scheduler_running(true);
    if let Some(port) = config.health_port {
        let listener = tokio::net::TcpListener::bind(("0.0.0.0", port))
            .await
            .with_context(|| format!("binding the health port {port}"))?;
        background.spawn(health::serve(listener, health.clone(), stop_all.clone()));
    }

    let (log_tx, log_rx) = mpsc::channel(config.log_buffer);
    let (records_blocked_tx, records_blocked_rx) = tokio::sync::watch::channel(false);
    let log_writer = tokio::spawn(log_sink::run_log_writer(
        mongo.database(&config.store.mongo_db),
        log_rx,
        log_sink::SinkConfig {
            batch_size: config.log_batch_size,
            batch_wait: config.log_batch_wait,
            flush_timeout: config.log_flush_timeout,
            spool_dir: config.spool_dir.clone(),
            worker_id: config.worker_id.clone(),
            bucket: outputs.clone(),
            blocked: records_blocked_tx,
            metrics: metrics.clone(),
        },
    ));
    if let Some(bucket) = &outputs {
        // Records other workers spooled to the bucket when they stopped.
        background.spawn(log_sink::replay_bucket_periodically(
            mongo.database(&config.store.mongo_db),
            bucket.clone(),
            stop_all.clone(),
        ));
    }

    let keys_for_registration = keys.clone();
    // The registration keeps its lease alive on a thread and etcd connection
    // of its own: a worker whose runtime is busy (hundreds of runs starting
    // at one tick) must never lose its registration for it.
    let endpoints = config.store.etcd_endpoints.clone();
    let security = config.store.etcd_security.clone();
    let started_at = executor::now_ms();
    let info = WorkerInfo {
        id: config.worker_id.clone(),
        hostname: config::hostname(),
        version: env!("CARGO_PKG_VERSION").into(),
        start_time: started_at,
        running: 0,
        last_seen: 0,
        draining: false,
        containers: false,
        clock_offset_ms: None,
        clock_skewed: false,
        records_blocked: false,
        labels: config.labels.clone(),
    };
    let (ttl, registration_health) = (config.lease_ttl, health.clone());
    // Cancelled when another process holds this worker's id.
    let id_taken = CancellationToken::new();
    let id_taken_for_registration = id_taken.clone();
    let registration_clock = clock_rx.clone();
    let registration = move |client| registration::Registration {
        id_taken: id_taken_for_registration,
        clock: registration_clock,
        records_blocked: records_blocked_rx,
        client,
        keys: keys_for_registration,
        info,
        ttl,
        health: registration_health,
        lease_id,
        valid_until,
        ready: ready_rx,
        draining: draining_rx,
        containers: containers_rx,
    };
    let registration = {
        let stop = stop_all.clone();
        std::thread::Builder::new()
            .name("gdts-registration".into())
            .spawn(move || {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("building the registration runtime")
                    .block_on(async move {
                        // Connecting is lazy: this fails only on bad endpoints,
                        // which the main connection already accepted.
                        match gdts_runtime::connect_etcd(&endpoints, &security).await {
                            Ok(client) => registration(client).run(stop).await,
                            Err(e) => tracing::error!(error = %e, "registration: no etcd client"),
                        }
                    })
            })
            .context("starting the registration thread")?
    };

    let (kill_tx, kill_rx) = mpsc::channel(64);
    background.spawn(gdts_runtime::etcd_watch::follow_prefix(
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

    let follow = |prefix: String, stop: &CancellationToken| {
        let (tx, rx) = mpsc::channel(256);
        background.spawn(gdts_runtime::etcd_watch::follow_prefix(
            etcd.clone(),
            prefix,
            tx,
            stop.clone(),
        ));
        rx
    };
    let inputs = planner::Inputs {
        jobs: follow(keys.jobs_prefix(), &stop_all),
        run_now: follow(keys.run_now_prefix(), &stop_all),
        workers: follow(keys.workers_prefix(), &stop_all),
        horizons: follow(keys.horizons_prefix(), &stop_all),
    };
    let job_cgroup = match cgroup::JobCgroup::open(
        &config.job_cgroup,
        &config.worker_id,
        config.job_cpu_weight,
    ) {
        Ok(Some(group)) => {
            tracing::info!(cgroup = %group.dir().display(), weight = config.job_cpu_weight, "shell runs share one CPU cgroup");
            Some(Arc::new(group))
        }
        Ok(None) => None,
        Err(e) => {
            tracing::warn!(error = %e, "no CPU cgroup for shell runs (GDTS_JOB_CGROUP); they run at their nice level only");
            None
        }
    };
    let preparer = run::Preparer::start(
        tokio::runtime::Handle::current(),
        config.shell.nice,
        job_cgroup.clone(),
        load::StartGate::new(config.start_max_runnable),
    );
    let claimer = Arc::new(claim::Claimer::new(
        etcd.clone(),
        keys.clone(),
        config.worker_id.clone(),
        lease_rx.clone(),
    ));
    let shell = config.shell.clone().with_program_resolved();
    tracing::info!(shell = %shell.program, "shell jobs run with -c in this shell");
    let ctx = Arc::new(run::RunContext {
        worker_id: config.worker_id.clone(),
        prefix: keys.prefix().to_string(),
        docker,
        claimer: claimer.clone(),
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
        shell,
        releaser: executor::Releaser::start(),
        preparer: preparer.clone(),
        jobs: jobs::SharedJobs::new(jobs::JobTable::new(keys.clone())),
        outputs,
        log_records: log_tx,
        metrics: metrics.clone(),
        labels: config.labels.clone(),
        notifier: notifier.clone(),
        stop_scheduling: stop_scheduling.clone(),
        stop_resolving: stop_all.clone(),
        clock: clock_rx.clone(),
    });
    let stop_side = CancellationToken::new();
    let side_writer = {
        let stop = stop_side.clone();
        tokio::spawn(async move { claimer.run_side_writer(stop).await })
    };
    // Claims an earlier life of this worker left without a record.
    run_tasks.spawn(orphans::sweep_earlier_lives(
        ctx.clone(),
        keys.clone(),
        started_at,
    ));
    let planner = {
        let health = health.clone();
        let run = planner::run_planner(
            ctx.clone(),
            keys.clone(),
            inputs,
            preparer,
            run_tasks.clone(),
            ready_tx,
            stop_scheduling.clone(),
        );
        tokio::spawn(async move {
            run.await;
            health.set_scheduler_running(false);
        })
    };

    tokio::select! {
        _ = gdts_runtime::shutdown_signal() => {}
        _ = id_taken.cancelled() => {}
    }
    tracing::info!("shutting down: no new ticks; waiting for running jobs");
    // The others take over this worker's ticks; the claims it has run.
    draining_tx.send_replace(true);
    stop_scheduling.cancel();
    planner.await.context("planner task panicked")?;
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
    // Every run task is gone: the last running marks and feed entries go
    // out (before the registration lease is revoked), then the log writer
    // drains what is buffered and stops (the context held its last sender).
    stop_side.cancel();
    side_writer.await.context("side writer panicked")?;
    drop(ctx);
    let unwritten = log_writer.await.context("log writer panicked")?;
    drop(notifier);
    let _ = tokio::time::timeout(notify::FLUSH_GRACE * 2, notifier_done).await;
    stop_all.cancel();
    tokio::task::spawn_blocking(move || registration.join())
        .await
        .context("joining the registration thread")?
        .map_err(|_| anyhow::anyhow!("registration thread panicked"))?;
    background.close();
    background.wait().await;
    if let Some(group) = &job_cgroup {
        group.remove();
    }
    if unwritten > 0 {
        anyhow::bail!("{unwritten} run records could not be written to MongoDB");
    }
    if id_taken.is_cancelled() {
        anyhow::bail!(
            "another live worker is registered as {}: stopped (each worker needs its own GDTS_WORKER_ID)",
            config.worker_id
        );
    }
    tracing::info!("worker stopped");
    Ok(())
}

/// Each process started ahead holds a few descriptors (its gate, its output,
/// its pidfd): allow as many as the hard limit lets us.
fn raise_open_file_limit() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        if soft < hard {
            if let Err(e) = setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
                tracing::warn!(error = %e, "could not raise the open file limit");
            }
        }
    }
}

/// Containers left by an earlier life of this worker, or by workers no
/// longer registered, are removed before any new run starts.
async fn remove_leftover_containers(
    docker: &bollard::Docker,
    etcd: &etcd_client::Client,
    keys: &Keys,
    config: &WorkerConfig,
) {
    let workers =
        gdts_runtime::etcd_pages::RangePages::prefix(etcd.clone(), &keys.workers_prefix())
            .keys_only()
            .collect()
            .await;
    let live: Option<std::collections::HashSet<String>> = match workers {
        Ok((kvs, _)) => Some(
            kvs.iter()
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
