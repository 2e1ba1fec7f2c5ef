//! The MongoDB wire-protocol server (SecantusDB) on loopback for a test.

use anyhow::bail;
use mongodb::bson::doc;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::*;

/// A MongoDB wire-protocol server (SecantusDB) on loopback.
pub struct Mongo {
    pub uri: String,
    host: String,
    port: u16,
    storage: PathBuf,
    log_dir: PathBuf,
    proc: Option<Proc>,
    starts: u32,
}

fn secantusd() -> PathBuf {
    std::env::var("GDTS_SECANTUSD")
        .map(PathBuf::from)
        .unwrap_or_else(|_| workspace_root().join(".venv/bin/secantusd-py"))
}

impl Mongo {
    pub async fn start(dir: &Path) -> anyhow::Result<Mongo> {
        Mongo::start_on(dir, "127.0.0.1").await
    }

    /// Starts the server listening on `host` (e.g. a test network's gateway,
    /// so containers on that network reach it).
    pub async fn start_on(dir: &Path, host: &str) -> anyhow::Result<Mongo> {
        let port = free_port();
        let storage = dir.join("mongo-data");
        std::fs::create_dir_all(&storage)?;
        let mut m = Mongo {
            uri: format!("mongodb://{host}:{port}/"),
            host: host.to_string(),
            port,
            storage,
            log_dir: dir.to_path_buf(),
            proc: None,
            starts: 0,
        };
        m.launch().await?;
        Ok(m)
    }

    async fn launch(&mut self) -> anyhow::Result<()> {
        let bin = secantusd();
        if !bin.exists() {
            bail!(
                "{} is missing: run `make deps` to install the MongoDB wire-protocol server",
                bin.display()
            );
        }
        let mut cmd = Command::new(bin);
        cmd.args([
            "--host",
            &self.host,
            "--port",
            &self.port.to_string(),
            "--storage-path",
        ])
        .arg(&self.storage)
        .args(["--standalone", "--log-level", "WARNING"]);
        self.starts += 1;
        let log = self.log_dir.join(format!("mongo-{}.log", self.starts));
        self.proc = Some(Proc::spawn("secantusd", cmd, &log, None)?);
        let client = self.client().await;
        wait_until(
            "the Mongo server to answer",
            Duration::from_secs(30),
            || {
                let db = client.database("admin");
                async move { db.run_command(doc! { "ping": 1 }).await.is_ok() }
            },
        )
        .await
    }

    /// Stops the server (SIGTERM; it flushes its storage) until `start_again`.
    pub fn stop(&mut self) {
        if let Some(mut p) = self.proc.take() {
            p.terminate(Duration::from_secs(20));
        }
    }

    pub async fn start_again(&mut self) -> anyhow::Result<()> {
        self.launch().await
    }

    pub async fn client(&self) -> mongodb::Client {
        let mut opts = mongodb::options::ClientOptions::parse(&self.uri)
            .await
            .expect("valid test URI");
        opts.server_selection_timeout = Some(Duration::from_secs(2));
        mongodb::Client::with_options(opts).expect("mongo client")
    }
}

impl Mongo {
    /// The pid of the running server, if it runs.
    pub fn pid(&self) -> Option<i32> {
        self.proc.as_ref().map(Proc::pid)
    }
}
