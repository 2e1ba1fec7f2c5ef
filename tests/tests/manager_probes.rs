//! The manager's probes: `/livez` says only that the process serves (Cloud
//! Run's startup and liveness probes use it, so an etcd outage or an etcd
//! still booting never restarts managers); `/healthz` also says whether
//! etcd answers.

use std::time::Duration;

use gdts_tests::{wait_until, Cluster};

async fn status(url: &str) -> Option<u16> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .ok()?;
    Some(client.get(url).send().await.ok()?.status().as_u16())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn livez_ignores_etcd_healthz_does_not() -> anyhow::Result<()> {
    let mut c = Cluster::start("probes").await?;
    let livez = format!("{}/livez", c.manager_url);
    let healthz = format!("{}/healthz", c.manager_url);
    assert_eq!(status(&livez).await, Some(200));
    assert_eq!(status(&healthz).await, Some(200));

    c.etcd.stop();
    wait_until(
        "/healthz to report etcd down",
        Duration::from_secs(20),
        || async { status(&healthz).await == Some(503) },
    )
    .await?;
    assert_eq!(
        status(&livez).await,
        Some(200),
        "/livez must not depend on etcd"
    );

    c.etcd.restart().await?;
    wait_until("/healthz to recover", Duration::from_secs(30), || async {
        status(&healthz).await == Some(200)
    })
    .await?;
    Ok(())
}
