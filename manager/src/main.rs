//! `gdts-manager`: the stateless HTTP front of GDTS. Any number of replicas
//! can run; all state is in etcd and MongoDB.

use gdts_manager::{app, audit, config, iap, job_index, outputs, state, store, streams, tokens};

use anyhow::Context;
use config::ManagerConfig;
use gdts_common::keys::Keys;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = ManagerConfig::from_lookup(&|k| std::env::var(k).ok())
        .map_err(anyhow::Error::msg)
        .context("invalid configuration")?;
    gdts_runtime::init_tracing(config.log_format);

    let etcd =
        gdts_runtime::connect_etcd(&config.store.etcd_endpoints, &config.store.etcd_security)
            .await?;
    let mongo = gdts_runtime::mongo_client(&config.store.mongo_uri, "gdts-manager").await?;

    let keys = Keys::new(&config.store.etcd_prefix);
    let db = mongo.database(&config.store.mongo_db);
    let store = store::Store::new(etcd.clone(), keys.clone(), &db);
    let audit = audit::Audit::new(&db);
    if let Err(e) = audit.ensure_indexes().await {
        tracing::warn!(error = %e, "could not create audit indexes");
    }
    if config.auth.enabled {
        tracing::info!(
            bootstrap_token = config.auth.has_bootstrap(),
            "authentication on: every API request needs a token (GDTS_ADMIN_TOKEN or an API token)"
        );
        if !config.auth.has_bootstrap() {
            tracing::warn!(
                "authentication on without GDTS_ADMIN_TOKEN: only API tokens already in etcd can sign in"
            );
        }
    } else {
        tracing::warn!(
            "AUTHENTICATION IS OFF (GDTS_AUTH=off): anyone who reaches this manager can run any \
             command on every worker. Use it only on a machine of your own."
        );
    }
    {
        // In the background: a new index over a large collection takes
        // MongoDB a while to build (as when an upgrade changes one), and the
        // manager serves meanwhile (a start held that long fails its
        // platform's start-up probe). Queries work without the index, only
        // slower; a later start retries.
        let (store, retention) = (store.clone(), config.log_retention_days);
        tokio::spawn(async move {
            match store.ensure_log_indexes(retention).await {
                Ok(()) => tracing::info!("log indexes in place"),
                Err(e) => tracing::warn!(error = %e, "could not create log indexes"),
            }
        });
    }

    let addr = format!("{}:{}", config.bind, config.port);
    let listener = tokio::net::TcpListener::bind(&addr)
        .await
        .with_context(|| format!("binding {addr}"))?;
    tracing::info!(addr = %listener.local_addr()?, "manager listening");
    let outputs = match config.gcs.clone() {
        Some(gcs) => Some(std::sync::Arc::new(
            outputs::OutputBucket::connect(gcs)
                .await
                .context("setting up the outputs bucket client")?,
        )),
        None => None,
    };
    let shutdown = tokio_util::sync::CancellationToken::new();
    let store = store.with_job_index(job_index::JobIndex::follow(
        etcd.clone(),
        &keys,
        shutdown.clone(),
    ));
    let state = state::AppState {
        store,
        outputs,
        shutdown: shutdown.clone(),
        auth: std::sync::Arc::new(config.auth.clone()),
        tokens: tokens::Tokens::new(etcd, keys),
        audit,
        streams: streams::StreamLimits::new(
            config.sse_max_streams,
            config.sse_max_per_client,
            std::time::Duration::from_secs(config.sse_recheck_secs as u64),
        ),
        iap: config.iap.clone().map(|c| {
            tracing::info!(audience = %c.audience, "Identity-Aware Proxy assertions are accepted");
            let iap = iap::Iap::new(c);
            iap.spawn_refresh();
            iap
        }),
        metrics: std::sync::Arc::default(),
    };
    let app = app::app(state, config.webroot.as_deref());
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<std::net::SocketAddr>(),
    )
    .with_graceful_shutdown(async move {
        gdts_runtime::shutdown_signal().await;
        tracing::info!("shutting down");
        // Requests in flight finish; event streams end now.
        shutdown.cancel();
    })
    .await
    .context("serving HTTP")?;
    tracing::info!("manager stopped");
    Ok(())
}
