//! `gdts-manager`: the stateless HTTP front of GDTS. Any number of replicas
//! can run; all state is in etcd and MongoDB.

mod api;
mod config;
mod outputs;
mod store;

use std::time::Duration;

use anyhow::Context;
use config::ManagerConfig;
use gdts_common::config::LogFormat;
use gdts_common::keys::Keys;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = ManagerConfig::from_lookup(&|k| std::env::var(k).ok())
        .map_err(anyhow::Error::msg)
        .context("invalid configuration")?;
    init_tracing(config.log_format);

    let etcd = etcd_client::Client::connect(
        &config.store.etcd_endpoints,
        Some(
            etcd_client::ConnectOptions::new()
                .with_connect_timeout(Duration::from_secs(5))
                .with_timeout(Duration::from_secs(10))
                .with_keep_alive(Duration::from_secs(10), Duration::from_secs(5)),
        ),
    )
    .await
    .context("connecting to etcd")?;

    let mut mongo_options = mongodb::options::ClientOptions::parse(&config.store.mongo_uri)
        .await
        .context("GDTS_MONGO_URI is not a valid MongoDB connection string")?;
    mongo_options.server_selection_timeout = Some(Duration::from_secs(5));
    mongo_options.app_name = Some("gdts-manager".into());
    let mongo = mongodb::Client::with_options(mongo_options).context("creating MongoDB client")?;

    let store = store::Store::new(
        etcd,
        Keys::new(&config.store.etcd_prefix),
        &mongo.database(&config.store.mongo_db),
    );
    if let Err(e) = store.ensure_log_indexes(config.log_retention_days).await {
        // Queries still work without the index, only slower; a later start retries.
        tracing::warn!(error = %e, "could not create log indexes");
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
    axum::serve(listener, api::router(api::AppState { store, outputs }))
        .with_graceful_shutdown(shutdown_signal())
        .await
        .context("serving HTTP")?;
    tracing::info!("manager stopped");
    Ok(())
}

fn init_tracing(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("installing the SIGTERM handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    tracing::info!("shutting down");
}
