//! etcd on loopback for a test: one member or a cluster of several,
//! stopped, killed and restarted on the same ports and data.

use anyhow::Context;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::*;

/// An etcd on loopback: a single member, or one member of a cluster
/// ([`Etcd::start_members`]).
pub struct Etcd {
    pub endpoint: String,
    /// The member name (`n1`, `n2`, ...).
    pub name: String,
    client_port: u16,
    peer_port: u16,
    /// `--initial-cluster` of a multi-member cluster (None: just this one).
    initial_cluster: Option<String>,
    data_dir: PathBuf,
    log_dir: PathBuf,
    proc: Option<Proc>,
    starts: u32,
    /// Flags added to every start (restarts too).
    extra_flags: Vec<String>,
}

/// Every test etcd compacts its history as production's does (Terraform,
/// `make dev`), with a shorter retention: claims come and go all the time.
pub const ETCD_COMPACTION: [&str; 2] = [
    "--auto-compaction-mode=periodic",
    "--auto-compaction-retention=1m",
];

impl Etcd {
    pub async fn start(dir: &Path) -> anyhow::Result<Etcd> {
        Self::start_with_flags(dir, &[]).await
    }

    /// Like [`Etcd::start`], with extra etcd flags (kept across restarts).
    pub async fn start_with_flags(dir: &Path, flags: &[&str]) -> anyhow::Result<Etcd> {
        let mut etcd = Etcd {
            endpoint: String::new(),
            name: "n1".into(),
            client_port: free_port(),
            peer_port: free_port(),
            initial_cluster: None,
            data_dir: dir.join("etcd-data"),
            log_dir: dir.to_path_buf(),
            proc: None,
            starts: 0,
            extra_flags: flags.iter().map(|f| f.to_string()).collect(),
        };
        etcd.endpoint = format!("http://127.0.0.1:{}", etcd.client_port);
        etcd.launch().await?;
        Ok(etcd)
    }

    /// A cluster of `n` members on loopback, started together (a member
    /// answers only once a quorum is up).
    pub async fn start_members(dir: &Path, n: usize, flags: &[&str]) -> anyhow::Result<Vec<Etcd>> {
        let mut members: Vec<Etcd> = (1..=n)
            .map(|i| {
                let client_port = free_port();
                Etcd {
                    endpoint: format!("http://127.0.0.1:{client_port}"),
                    name: format!("n{i}"),
                    client_port,
                    peer_port: free_port(),
                    initial_cluster: None,
                    data_dir: dir.join(format!("etcd-data-n{i}")),
                    log_dir: dir.to_path_buf(),
                    proc: None,
                    starts: 0,
                    extra_flags: flags.iter().map(|f| f.to_string()).collect(),
                }
            })
            .collect();
        let initial: Vec<String> = members
            .iter()
            .map(|m| format!("{}=http://127.0.0.1:{}", m.name, m.peer_port))
            .collect();
        for m in &mut members {
            m.initial_cluster = Some(initial.join(","));
            m.spawn()?;
        }
        for m in &members {
            m.wait_ready().await?;
        }
        Ok(members)
    }

    async fn launch(&mut self) -> anyhow::Result<()> {
        self.spawn()?;
        self.wait_ready().await
    }

    fn spawn(&mut self) -> anyhow::Result<()> {
        let client = format!("http://127.0.0.1:{}", self.client_port);
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let initial = self
            .initial_cluster
            .clone()
            .unwrap_or_else(|| format!("{}={peer}", self.name));
        let mut cmd =
            Command::new(std::env::var("GDTS_ETCD_BIN").unwrap_or_else(|_| "etcd".into()));
        cmd.args(["--name", &self.name, "--data-dir"])
            .arg(&self.data_dir)
            .args([
                "--listen-client-urls",
                &client,
                "--advertise-client-urls",
                &client,
            ])
            .args([
                "--listen-peer-urls",
                &peer,
                "--initial-advertise-peer-urls",
                &peer,
            ])
            .args(["--initial-cluster", &initial])
            .args(ETCD_COMPACTION)
            .args(&self.extra_flags);
        self.starts += 1;
        let log = match self.initial_cluster {
            None => self.log_dir.join(format!("etcd-{}.log", self.starts)),
            Some(_) => self
                .log_dir
                .join(format!("etcd-{}-{}.log", self.name, self.starts)),
        };
        self.proc = Some(Proc::spawn("etcd", cmd, &log, None).context(
            "starting etcd (install it with `make deps` or apt-get install etcd-server)",
        )?);
        Ok(())
    }

    async fn wait_ready(&self) -> anyhow::Result<()> {
        let endpoint = self.endpoint.clone();
        wait_until("etcd to answer", Duration::from_secs(20), || {
            let endpoint = endpoint.clone();
            async move {
                match etcd_client::Client::connect([endpoint], None).await {
                    Ok(mut c) => c.status().await.is_ok(),
                    Err(_) => false,
                }
            }
        })
        .await
    }

    /// Stops etcd (SIGTERM) and starts it again on the same ports and data.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.stop();
        self.launch().await
    }

    pub fn stop(&mut self) {
        if let Some(mut p) = self.proc.take() {
            p.terminate(Duration::from_secs(10));
        }
    }

    /// Starts a stopped etcd again on the same ports and data.
    pub async fn start_again(&mut self) -> anyhow::Result<()> {
        self.launch().await
    }

    /// Kills the member with SIGKILL (no clean shutdown).
    pub fn kill9(&mut self) {
        if let Some(mut p) = self.proc.take() {
            p.kill9();
        }
    }

    /// Whether this member runs (not stopped or killed by the test).
    pub fn is_up(&self) -> bool {
        self.proc.is_some()
    }

    /// `host:port` of the client URL (for a proxy in front of it).
    pub fn client_address(&self) -> String {
        format!("127.0.0.1:{}", self.client_port)
    }

    pub async fn client(&self) -> etcd_client::Client {
        etcd_client::Client::connect([self.endpoint.clone()], None)
            .await
            .expect("connecting to the test etcd")
    }
}

impl Etcd {
    /// The pid of the running etcd, if it runs.
    pub fn pid(&self) -> Option<i32> {
        self.proc.as_ref().map(Proc::pid)
    }

    /// The log file of the current (or last) start.
    pub fn log_file(&self) -> PathBuf {
        self.log_dir.join(format!("etcd-{}.log", self.starts))
    }
}
