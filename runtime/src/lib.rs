//! Process plumbing shared by `gdts-manager` and `gdts-worker`: logging
//! set-up, the shutdown signal, and how each backing service's client is
//! built, so both binaries talk to etcd, MongoDB and the bucket the same way.
//! (The scheduling core, `gdts-common`, stays free of all of this.)

pub mod etcd_pages;
pub mod etcd_watch;
pub mod metrics;

use std::time::Duration;

use anyhow::Context;
use gdts_common::config::{GcsConfig, LogFormat};
use gdts_common::timing;

/// Logs to stderr, filtered by `RUST_LOG` (default `info`), as text or as one
/// JSON object per line (`GDTS_LOG_FORMAT=json`, for Cloud Logging).
pub fn init_tracing(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

/// Resolves on SIGTERM (Cloud Run, systemd, `docker stop`) or Ctrl-C.
pub async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("installing the SIGTERM handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

/// An etcd client. Connecting is lazy (etcd may be down at start); HTTP/2
/// keep-alives find a dead connection within seconds, so watches break and
/// resync instead of hanging.
///
/// The pings respect etcd's keep-alive enforcement (grpc-go): no pings on a
/// connection without streams, and none closer than `--grpc-keepalive-min-time`
/// (5 s by default). An idle manager pinging every 3 s was answered with
/// GOAWAY ("too many pings") and its next request failed ("broken pipe").
pub async fn connect_etcd(
    endpoints: &[String],
    security: &gdts_common::config::EtcdSecurity,
) -> anyhow::Result<etcd_client::Client> {
    let mut options = etcd_client::ConnectOptions::new()
        .with_connect_timeout(timing::ETCD_CONNECT_TIMEOUT)
        .with_timeout(timing::ETCD_REQUEST_TIMEOUT)
        .with_keep_alive(timing::ETCD_PING_EVERY, timing::ETCD_PING_TIMEOUT)
        .with_keep_alive_while_idle(false);
    if let Some(ca) = &security.ca_pem {
        let mut tls =
            etcd_client::TlsOptions::new().ca_certificate(etcd_client::Certificate::from_pem(ca));
        if let Some((cert, key)) = &security.identity_pem {
            tls = tls.identity(etcd_client::Identity::from_pem(cert, key));
        }
        options = options.with_tls(tls);
    }
    if let Some((user, password)) = &security.user {
        options = options.with_user(user.clone(), password.clone());
    }
    etcd_client::Client::connect(endpoints, Some(options))
        .await
        .context("connecting to etcd")
}

/// Whether an etcd request failed before it left this process: no
/// connection to the member the client's balancer picked could be made
/// ("tcp connect error"; a member that is down answers so until the
/// balancer stops picking it). Such a request is safe to send again at
/// once; any other failure may have reached etcd.
pub fn etcd_never_sent(e: &etcd_client::Error) -> bool {
    match e {
        etcd_client::Error::GRpcStatus(status) => {
            // 14: gRPC UNAVAILABLE.
            i32::from(status.code()) == 14 && status.message().contains("tcp connect error")
        }
        _ => false,
    }
}

/// A MongoDB client that fails a request after a few seconds without a
/// server instead of waiting the driver's default 30 s.
pub async fn mongo_client(uri: &str, app_name: &str) -> anyhow::Result<mongodb::Client> {
    let mut options = mongodb::options::ClientOptions::parse(uri)
        .await
        .context("GDTS_MONGO_URI is not a valid MongoDB connection string")?;
    options.server_selection_timeout = Some(Duration::from_secs(3));
    options.app_name = Some(app_name.into());
    mongodb::Client::with_options(options).context("creating the MongoDB client")
}

/// A Cloud Storage client for the outputs bucket: anonymous against an
/// emulator (`GDTS_GCS_ENDPOINT`), else with Application Default Credentials.
pub async fn gcs_client(config: &GcsConfig) -> anyhow::Result<gcloud_storage::client::Client> {
    use gcloud_storage::client::ClientConfig;
    let client_config = match &config.endpoint {
        Some(endpoint) => ClientConfig {
            storage_endpoint: endpoint.clone(),
            ..Default::default()
        }
        .anonymous(),
        None => ClientConfig::default()
            .with_auth()
            .await
            .context("finding Google credentials for the outputs bucket")?,
    };
    Ok(gcloud_storage::client::Client::new(client_config))
}
