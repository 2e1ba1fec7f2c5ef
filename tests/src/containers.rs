//! Docker for container tests: the example job image, skipping where
//! Docker is opted out of, and the containers a job left behind.

use anyhow::bail;
use std::collections::HashMap;
use std::time::Duration;

use crate::*;

/// The image container-job tests run (built by `make images` /
/// `scripts/images.sh`).
pub const JOB_IMAGE: &str = "gdts-example-job:local";

/// A Docker client for tests, after checking the daemon answers. In CI
/// (`CI=true`) a missing daemon fails the test; locally
/// `GDTS_TEST_SKIP_DOCKER=1` lets Docker tests pass without running.
pub async fn docker_or_skip() -> anyhow::Result<Option<bollard::Docker>> {
    let in_ci = std::env::var("CI").is_ok_and(|v| v == "true");
    let opted_out = std::env::var("GDTS_TEST_SKIP_DOCKER").is_ok_and(|v| v == "1");
    let docker = bollard::Docker::connect_with_defaults()?;
    match docker.ping().await {
        Ok(_) => Ok(Some(docker.negotiate_version().await?)),
        Err(e) if opted_out && !in_ci => {
            eprintln!("skipping: Docker unavailable ({e}) and GDTS_TEST_SKIP_DOCKER=1");
            Ok(None)
        }
        Err(e) => bail!("Docker is not reachable ({e}); run `make docker-up` (make test does)"),
    }
}

/// Containers of this test's etcd prefix (running or not).
pub async fn containers_of(
    docker: &bollard::Docker,
    prefix: &str,
) -> anyhow::Result<Vec<bollard::models::ContainerSummary>> {
    let filters = HashMap::from([("label".to_string(), vec![format!("gdts.prefix={prefix}")])]);
    let options = bollard::query_parameters::ListContainersOptionsBuilder::default()
        .all(true)
        .filters(&filters)
        .build();
    Ok(docker.list_containers(Some(options)).await?)
}

/// Waits until no container of this test's prefix is left.
pub async fn wait_for_no_containers(
    docker: &bollard::Docker,
    prefix: &str,
    timeout: Duration,
) -> anyhow::Result<()> {
    wait_until("containers to be removed", timeout, || async {
        containers_of(docker, prefix)
            .await
            .map(|v| v.is_empty())
            .unwrap_or(false)
    })
    .await
}
