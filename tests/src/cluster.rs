//! [`Cluster`]: one test's world (etcd, the Mongo server, a manager and
//! workers) and what tests ask of it: jobs saved, records read, workers
//! started, killed and cut off.

use anyhow::bail;
use futures::TryStreamExt;
use gdts_common::response::Envelope;
use mongodb::bson::{doc, Document};
use serde_json::Value;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::*;

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
        self.start_manager_on(free_port()).await
    }

    async fn start_manager_on(&mut self, port: u16) -> anyhow::Result<()> {
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

    /// Starts worker `id` reaching etcd only through a [`ReplyHoldProxy`]
    /// (returned, to hold, cut or sever its connections on demand), under a
    /// registration lease of `lease_ttl_secs`.
    pub async fn start_worker_behind_proxy(
        &mut self,
        id: &str,
        lease_ttl_secs: u64,
    ) -> anyhow::Result<ReplyHoldProxy> {
        let target = self.etcd.endpoint.trim_start_matches("http://").to_string();
        let proxy = ReplyHoldProxy::start(&target).await?;
        self.start_worker(
            id,
            WorkerOptions {
                env: vec![
                    ("GDTS_ETCD_ENDPOINTS".into(), proxy.url.clone()),
                    (
                        "GDTS_WORKER_LEASE_TTL_SECS".into(),
                        lease_ttl_secs.to_string(),
                    ),
                ],
                ..Default::default()
            },
        )?;
        Ok(proxy)
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

    /// The run records' collection in the test database, read (or written)
    /// as `T`: straight from Mongo.
    pub async fn runs<T: Send + Sync>(&self) -> mongodb::Collection<T> {
        self.mongo
            .client()
            .await
            .database(&self.db)
            .collection::<T>(gdts_common::log_record::LOG_COLLECTION)
    }

    /// Every run record in the test database (straight from Mongo).
    pub async fn run_records(&self) -> anyhow::Result<Vec<Document>> {
        let cursor = self.runs::<Document>().await.find(doc! {}).await?;
        Ok(cursor.try_collect().await?)
    }

    /// Waits up to `timeout` until `job` has a run record; returns the first.
    pub async fn first_record(&self, job: &str, timeout: Duration) -> anyhow::Result<Document> {
        Ok(self.wait_for_records(job, 1, timeout).await?[0].clone())
    }

    /// Waits until `job` has at least `n` run records; its records then.
    pub async fn wait_for_records(
        &self,
        job: &str,
        n: usize,
        timeout: Duration,
    ) -> anyhow::Result<Vec<Document>> {
        wait_until(&format!("{n} records of {job}"), timeout, || async {
            self.run_records()
                .await
                .map(|r| records_of(&r, job).len() >= n)
                .unwrap_or(false)
        })
        .await?;
        let records = self.run_records().await?;
        Ok(records_of(&records, job).into_iter().cloned().collect())
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

impl Cluster {
    /// SIGTERM to the manager; whether it exited by itself, with status 0,
    /// within `timeout`.
    pub fn stop_manager(&mut self, timeout: Duration) -> bool {
        self.manager
            .take()
            .is_some_and(|mut m| m.terminate(timeout))
    }

    /// Stops the manager (SIGTERM) and starts it again at the same address,
    /// as a client sees a manager replaced.
    pub async fn restart_manager(&mut self) -> anyhow::Result<()> {
        self.manager.take();
        let port = self
            .manager_url
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .ok_or_else(|| anyhow::anyhow!("no manager port in {}", self.manager_url))?;
        self.start_manager_on(port).await
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
