//! Benchmarks of a whole GDTS deployment on this machine. Each scenario
//! starts its own etcd (with auto-compaction), Mongo-protocol server, manager
//! and workers through the harness, loads them with jobs and measures from
//! the outside only: run records in MongoDB, the commands' own clocks (a line
//! each run appends to a file), etcd's `/metrics` and log, the worker logs,
//! `/worker/list`, the API, and `/proc`.
//!
//! Every scenario is a function returning a report with its figures and its
//! targets (`Target`, PASS/FAIL) and able to write itself as Markdown.
//! `gdts-bench` (`src/bin/gdts-bench.rs`) runs them and replaces their
//! sections in `docs/benchmarks.md`; `tests/soak_short.rs` asserts on a short
//! run of the same code.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use etcd_client::{Txn, TxnOp};
use futures::TryStreamExt;
use gdts_common::job::{JobName, JobSpec};
use gdts_common::keys::Keys;
use gdts_common::timing::{MAX_TICK_LATENESS, MISSED_RECORD_WINDOW};
use mongodb::bson::{doc, Document};
use tokio::sync::watch;
use tokio::time::MissedTickBehavior;

use crate::{now_ms, workspace_root, Cluster, WorkerOptions};

/// etcd as the benchmarks run it (the harness's defaults): compacting
/// history older than a minute, as a production etcd should, so the db size
/// measures live data.
pub const ETCD_FLAGS: &[&str] = &crate::ETCD_COMPACTION;

/// Warm-up before a measuring window, unless a scenario says otherwise.
pub const DEFAULT_WARMUP: Duration = Duration::from_secs(10);

/// Most operations in one etcd transaction (etcd's `--max-txn-ops` is 128).
const PUT_BATCH: usize = 100;

/// A tick that nobody started is recorded as missed within
/// `MAX_TICK_LATENESS + MISSED_RECORD_WINDOW`; the records of a window are
/// complete this long after its end.
const MISSED_SETTLE: Duration = MAX_TICK_LATENESS
    .saturating_add(MISSED_RECORD_WINDOW)
    .saturating_add(Duration::from_secs(5));

// ---------------------------------------------------------------- time

pub fn now_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or_default()
}

/// The first whole second at or after `ms`.
pub fn ceil_second(ms: i64) -> i64 {
    (ms + 999).div_euclid(1000) * 1000
}

async fn sleep_until_ms(at_ms: i64) {
    let wait = at_ms - now_ms();
    if wait > 0 {
        tokio::time::sleep(Duration::from_millis(wait as u64)).await;
    }
}

// ---------------------------------------------------------------- distributions

/// Percentiles of a sample (nearest rank), in the sample's unit.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Dist {
    pub n: usize,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub max: f64,
}

impl Dist {
    pub fn of(mut values: Vec<f64>) -> Option<Dist> {
        values.sort_by(f64::total_cmp);
        Dist::of_sorted(&values)
    }

    pub fn of_sorted(sorted: &[f64]) -> Option<Dist> {
        let max = *sorted.last()?;
        Some(Dist {
            n: sorted.len(),
            p50: quantile(sorted, 0.50),
            p90: quantile(sorted, 0.90),
            p99: quantile(sorted, 0.99),
            max,
        })
    }

    /// `p50 1.2 · p90 3.4 · p99 5.6 · max 7.8 ms (n 100)`.
    pub fn describe(&self, unit: &str) -> String {
        format!(
            "p50 {:.1} · p90 {:.1} · p99 {:.1} · max {:.1} {unit} (n {})",
            self.p50, self.p90, self.p99, self.max, self.n
        )
    }
}

/// Nearest-rank quantile `q` (0..=1) of a sorted, non-empty sample.
fn quantile(sorted: &[f64], q: f64) -> f64 {
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn describe_dist(d: &Option<Dist>, unit: &str) -> String {
    d.map(|d| d.describe(unit))
        .unwrap_or_else(|| "no data".into())
}

// ---------------------------------------------------------------- etcd metrics

/// One scrape of etcd's Prometheus `/metrics`.
#[derive(Debug, Clone, Default)]
pub struct Metrics {
    samples: Vec<MetricSample>,
}

#[derive(Debug, Clone)]
struct MetricSample {
    name: String,
    labels: Vec<(String, String)>,
    value: f64,
}

impl Metrics {
    pub async fn scrape(http: &reqwest::Client, etcd_endpoint: &str) -> anyhow::Result<Metrics> {
        let text = http
            .get(format!("{etcd_endpoint}/metrics"))
            .send()
            .await?
            .error_for_status()?
            .text()
            .await?;
        Ok(Metrics::parse(&text))
    }

    /// Parses the Prometheus text format (comments and malformed lines are
    /// skipped).
    pub fn parse(text: &str) -> Metrics {
        let samples = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .filter_map(parse_metric_line)
            .collect();
        Metrics { samples }
    }

    /// Sum of every series of `name` (0 when absent).
    pub fn sum(&self, name: &str) -> f64 {
        self.samples
            .iter()
            .filter(|s| s.name == name)
            .map(|s| s.value)
            .sum()
    }

    /// Sums of `name` grouped by the values of `labels`, joined with `/`.
    pub fn sum_by(&self, name: &str, labels: &[&str]) -> BTreeMap<String, f64> {
        let mut out = BTreeMap::new();
        for s in self.samples.iter().filter(|s| s.name == name) {
            let key: Vec<&str> = labels
                .iter()
                .map(|l| {
                    s.labels
                        .iter()
                        .find(|(k, _)| k == l)
                        .map(|(_, v)| v.as_str())
                        .unwrap_or("")
                })
                .collect();
            *out.entry(key.join("/")).or_insert(0.0) += s.value;
        }
        out
    }

    pub fn has(&self, name: &str) -> bool {
        self.samples.iter().any(|s| s.name == name)
    }
}

fn parse_metric_line(line: &str) -> Option<MetricSample> {
    let (name, labels, rest) = match line.find('{') {
        Some(open) => {
            let close = line.rfind('}')?;
            (
                &line[..open],
                parse_labels(&line[open + 1..close])?,
                &line[close + 1..],
            )
        }
        None => {
            let (name, rest) = line.split_once(char::is_whitespace)?;
            (name, Vec::new(), rest)
        }
    };
    let value = rest.split_whitespace().next()?.parse().ok()?;
    Some(MetricSample {
        name: name.trim().to_string(),
        labels,
        value,
    })
}

/// `a="x",b="y\"z"` into pairs.
fn parse_labels(s: &str) -> Option<Vec<(String, String)>> {
    let mut out = Vec::new();
    let mut chars = s.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| *c == ',' || c.is_whitespace()) {
            chars.next();
        }
        if chars.peek().is_none() {
            return Some(out);
        }
        let key: String = chars.by_ref().take_while(|c| *c != '=').collect();
        if chars.next()? != '"' {
            return None;
        }
        let mut value = String::new();
        loop {
            match chars.next()? {
                '\\' => match chars.next()? {
                    'n' => value.push('\n'),
                    c => value.push(c),
                },
                '"' => break,
                c => value.push(c),
            }
        }
        out.push((key.trim().to_string(), value));
    }
}

/// What etcd did between two scrapes.
#[derive(Debug, Clone, Default)]
pub struct EtcdFigures {
    /// gRPC messages received (unary requests and stream messages).
    pub requests: f64,
    /// The same by `service/method`, zero rows left out.
    pub requests_by_method: BTreeMap<String, f64>,
    pub revisions: f64,
    pub wal_bytes: f64,
    /// False when this etcd has no `etcd_disk_wal_write_bytes_total`.
    pub wal_metric: bool,
    pub cpu_seconds: f64,
    /// (start, end) of the db file size and its in-use part, bytes.
    pub db_bytes: (f64, f64),
    pub db_in_use_bytes: (f64, f64),
}

impl EtcdFigures {
    pub fn between(start: &Metrics, end: &Metrics) -> EtcdFigures {
        const RECEIVED: &str = "grpc_server_msg_received_total";
        const WAL: &str = "etcd_disk_wal_write_bytes_total";
        let before = start.sum_by(RECEIVED, &["grpc_service", "grpc_method"]);
        let requests_by_method = end
            .sum_by(RECEIVED, &["grpc_service", "grpc_method"])
            .into_iter()
            .map(|(k, v)| {
                let delta = v - before.get(&k).copied().unwrap_or(0.0);
                (k.trim_start_matches("etcdserverpb.").to_string(), delta)
            })
            .filter(|(_, d)| *d > 0.0)
            .collect();
        let delta = |name: &str| end.sum(name) - start.sum(name);
        let both = |name: &str| (start.sum(name), end.sum(name));
        EtcdFigures {
            requests: delta(RECEIVED),
            requests_by_method,
            revisions: delta("etcd_debugging_mvcc_current_revision"),
            wal_bytes: delta(WAL),
            wal_metric: end.has(WAL),
            cpu_seconds: delta("process_cpu_seconds_total"),
            db_bytes: both("etcd_mvcc_db_total_size_in_bytes"),
            db_in_use_bytes: both("etcd_mvcc_db_total_size_in_use_in_bytes"),
        }
    }
}

// ---------------------------------------------------------------- processes

/// A field of `/proc/PID/status` in KiB (`VmRSS`, `VmHWM`).
pub fn proc_status_kib(pid: i32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find_map(|line| {
        line.strip_prefix(field)?
            .strip_prefix(':')?
            .split_whitespace()
            .next()?
            .parse()
            .ok()
    })
}

/// CPU time of a process from `/proc/PID/stat`, in seconds: its own (user +
/// system) and its waited-for children's (a worker's commands).
pub fn proc_cpu_seconds(pid: i32) -> Option<(f64, f64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces; the fields after it are fixed.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i)?.parse::<f64>().ok();
    // utime, stime, cutime, cstime are fields 14 to 17; `fields[0]` is 3.
    let per_second = 100.0; // USER_HZ on Linux
    Some((
        (ticks(11)? + ticks(12)?) / per_second,
        (ticks(13)? + ticks(14)?) / per_second,
    ))
}

/// The processes a benchmark watches: the workers (by id), the manager,
/// etcd and the Mongo server.
pub fn watched_pids(cluster: &Cluster) -> Vec<(String, i32)> {
    let mut out: Vec<(String, i32)> = cluster
        .workers
        .iter()
        .map(|(id, p)| (format!("worker {id}"), p.pid()))
        .collect();
    out.sort();
    out.extend(cluster.manager_pid().map(|p| ("manager".to_string(), p)));
    out.extend(cluster.etcd.pid().map(|p| ("etcd".to_string(), p)));
    out.extend(cluster.mongo.pid().map(|p| ("mongo".to_string(), p)));
    out
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// Raises the soft limit of open files towards `want` (bounded by the hard
/// limit): the floor scenario holds a pipe per process.
fn raise_fd_limit(want: u64) {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        if soft < want {
            let _ = setrlimit(Resource::RLIMIT_NOFILE, want.min(hard), hard);
        }
    }
}

// ---------------------------------------------------------------- the world

/// A cluster (etcd with [`ETCD_FLAGS`], Mongo server, manager) in a fresh
/// directory: under `keep_under` (kept afterwards, see [`finish_cluster`])
/// or a temporary one. `name` names the etcd prefix and the database.
pub async fn start_cluster(name: &str, keep_under: Option<&Path>) -> anyhow::Result<Cluster> {
    let prefix = format!("gdts-bench-{name}-");
    let mut builder = tempfile::Builder::new();
    builder.prefix(&prefix);
    let dir = match keep_under {
        Some(base) => {
            std::fs::create_dir_all(base)
                .with_context(|| format!("creating {}", base.display()))?;
            builder.tempdir_in(base)?
        }
        None => builder.tempdir()?,
    };
    Cluster::start_in(name, dir, &[]).await
}

/// Stops every process of the cluster (workers first, so they flush). With
/// `keep`, keeps its directory without the etcd and Mongo data (the logs
/// stay) and returns it.
pub fn finish_cluster(mut cluster: Cluster, keep: bool) -> Option<PathBuf> {
    let kept = if keep {
        match tempfile::tempdir() {
            Ok(placeholder) => Some(std::mem::replace(&mut cluster.dir, placeholder).keep()),
            Err(_) => None,
        }
    } else {
        None
    };
    drop(cluster);
    if let Some(dir) = &kept {
        crate::drop_data_dirs(dir);
    }
    kept
}

/// Stops every worker at once (SIGTERM; SIGKILL after `grace`), so a slow
/// shutdown costs `grace` once, not once per worker. Blocks.
pub fn stop_workers(cluster: &mut Cluster, grace: Duration) {
    std::thread::scope(|scope| {
        for proc in cluster.workers.values_mut() {
            scope.spawn(move || proc.terminate(grace));
        }
    });
}

/// Writes jobs straight into etcd, as the manager stores them (`JobSpec`
/// JSON under the job's key), in batched transactions.
pub async fn put_jobs(cluster: &Cluster, specs: &[JobSpec]) -> anyhow::Result<()> {
    let keys = Keys::new(&cluster.prefix);
    let mut etcd = cluster.etcd.client().await;
    for chunk in specs.chunks(PUT_BATCH) {
        let mut ops = Vec::with_capacity(chunk.len());
        for spec in chunk {
            let name = JobName::parse(&spec.name).map_err(|e| anyhow::anyhow!("{e}"))?;
            ops.push(TxnOp::put(keys.job(&name), serde_json::to_vec(spec)?, None));
        }
        // Puts are idempotent: an overloaded etcd that times out is asked
        // again (the overload scenario fills it while workers already run).
        let txn = Txn::new().and_then(ops);
        let mut attempt = 1;
        loop {
            match etcd.txn(txn.clone()).await {
                Ok(_) => break,
                Err(e) if attempt < 5 => {
                    eprintln!("putting jobs into etcd failed ({e}); retrying");
                    tokio::time::sleep(Duration::from_secs(attempt)).await;
                    attempt += 1;
                }
                Err(e) => return Err(e).context("putting jobs into etcd"),
            }
        }
    }
    Ok(())
}

/// The command of a ticks job: one line per run with the job, its tick and
/// the command's own clock. Under the worker's bash with `GDTS_JOB` and
/// `GDTS_PLAN_TIME_MS` exported this is
/// `echo "$GDTS_JOB $GDTS_PLAN_TIME_MS $EPOCHREALTIME" >> FILE`; the
/// defaults keep it meaningful under a shell or worker without them (plan
/// time 0 means "infer the tick from the clock").
pub fn clock_command(job: &str, file: &Path) -> String {
    format!(
        "echo \"${{GDTS_JOB:-{job}}} ${{GDTS_PLAN_TIME_MS:-0}} ${{EPOCHREALTIME:-$(date +%s.%N)}}\" >> '{}'",
        file.display()
    )
}

fn http_client(timeout: Duration) -> anyhow::Result<reqwest::Client> {
    Ok(reqwest::Client::builder().timeout(timeout).build()?)
}

async fn worker_list(http: &reqwest::Client, manager_url: &str) -> anyhow::Result<Vec<String>> {
    let v: serde_json::Value = http
        .get(format!("{manager_url}/worker/list"))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    Ok(serde_json::from_value(v["data"].clone())?)
}

// ---------------------------------------------------------------- background watchers

/// What the 500 ms watcher saw: `/worker/list` (from the window's start) and
/// the RSS of every watched process (from its own start).
#[derive(Debug, Clone, Default)]
pub struct FleetWatch {
    pub list_polls: usize,
    pub list_failures: usize,
    /// Polls where a started worker was not listed.
    pub list_lacking: usize,
    pub lacking_workers: BTreeSet<String>,
    /// Highest VmRSS seen, KiB, by process.
    pub peak_rss_kib: BTreeMap<String, u64>,
}

async fn watch_fleet(
    http: reqwest::Client,
    manager_url: String,
    workers: Vec<String>,
    pids: Vec<(String, i32)>,
    list_from_ms: i64,
    mut stop: watch::Receiver<bool>,
) -> FleetWatch {
    let mut seen = FleetWatch::default();
    let mut every = tokio::time::interval(Duration::from_millis(500));
    every.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = every.tick() => {}
            _ = stop.changed() => break,
        }
        for (name, pid) in &pids {
            if let Some(kib) = proc_status_kib(*pid, "VmRSS") {
                let peak = seen.peak_rss_kib.entry(name.clone()).or_default();
                *peak = (*peak).max(kib);
            }
        }
        if now_ms() < list_from_ms {
            continue;
        }
        seen.list_polls += 1;
        match worker_list(&http, &manager_url).await {
            Ok(listed) => {
                let missing: Vec<&String> =
                    workers.iter().filter(|id| !listed.contains(id)).collect();
                if !missing.is_empty() {
                    seen.list_lacking += 1;
                    seen.lacking_workers.extend(missing.into_iter().cloned());
                }
            }
            Err(_) => seen.list_failures += 1,
        }
    }
    seen
}

/// Latency and availability of one API path, polled at a fixed period.
#[derive(Debug, Clone, Default)]
pub struct ApiPoll {
    pub path: String,
    pub requests: usize,
    pub failures: usize,
    /// Failures by kind (`HTTP 503`, `timeout`, `connect`, ...).
    pub failure_kinds: BTreeMap<String, usize>,
    /// Latency of the answered (2xx) requests, ms.
    pub latency_ms: Option<Dist>,
}

async fn poll_api(
    http: reqwest::Client,
    url: String,
    path: String,
    period: Duration,
    mut stop: watch::Receiver<bool>,
) -> ApiPoll {
    let mut latencies = Vec::new();
    let mut out = ApiPoll {
        path: path.clone(),
        ..ApiPoll::default()
    };
    let mut every = tokio::time::interval(period);
    every.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = every.tick() => {}
            _ = stop.changed() => break,
        }
        out.requests += 1;
        let started = Instant::now();
        let answer = match http.get(format!("{url}{path}")).send().await {
            Ok(resp) if resp.status().is_success() => resp.bytes().await.map_err(failure_kind),
            Ok(resp) => Err(format!("HTTP {}", resp.status().as_u16())),
            Err(e) => Err(failure_kind(e)),
        };
        match answer {
            Ok(_) => latencies.push(started.elapsed().as_secs_f64() * 1000.0),
            Err(kind) => {
                out.failures += 1;
                *out.failure_kinds.entry(kind).or_default() += 1;
            }
        }
    }
    out.latency_ms = Dist::of(latencies);
    out
}

fn failure_kind(e: reqwest::Error) -> String {
    if e.is_timeout() {
        "timeout".into()
    } else if e.is_connect() {
        "connect".into()
    } else {
        "transport".into()
    }
}

/// One sample of a long run.
#[derive(Debug, Clone, Default)]
pub struct SoakSample {
    /// Seconds since the window started.
    pub at_s: f64,
    pub rss_kib: BTreeMap<String, u64>,
    pub db_bytes: f64,
    pub db_in_use_bytes: f64,
    pub revision: f64,
}

async fn sample_soak(
    http: reqwest::Client,
    etcd_endpoint: String,
    pids: Vec<(String, i32)>,
    period: Duration,
    mut stop: watch::Receiver<bool>,
) -> Vec<SoakSample> {
    let started = Instant::now();
    let mut samples = Vec::new();
    let mut every = tokio::time::interval(period);
    every.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = every.tick() => {}
            _ = stop.changed() => break,
        }
        let metrics = Metrics::scrape(&http, &etcd_endpoint)
            .await
            .unwrap_or_default();
        samples.push(SoakSample {
            at_s: started.elapsed().as_secs_f64(),
            rss_kib: pids
                .iter()
                .filter_map(|(n, pid)| Some((n.clone(), proc_status_kib(*pid, "VmRSS")?)))
                .collect(),
            db_bytes: metrics.sum("etcd_mvcc_db_total_size_in_bytes"),
            db_in_use_bytes: metrics.sum("etcd_mvcc_db_total_size_in_use_in_bytes"),
            revision: metrics.sum("etcd_debugging_mvcc_current_revision"),
        });
    }
    samples
}

// ---------------------------------------------------------------- logs

fn file_len(path: &Path) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

/// Lines of `path` between byte offsets `from` and `to` that match `pred`.
fn count_lines(path: &Path, from: u64, to: u64, pred: impl Fn(&str) -> bool) -> usize {
    let Ok(mut file) = std::fs::File::open(path) else {
        return 0;
    };
    if to <= from || file.seek(SeekFrom::Start(from)).is_err() {
        return 0;
    }
    let mut bytes = Vec::new();
    if file.take(to - from).read_to_end(&mut bytes).is_err() {
        return 0;
    }
    String::from_utf8_lossy(&bytes)
        .lines()
        .filter(|l| pred(l))
        .count()
}

/// A worker log line saying its registration broke (the worker logs
/// "worker registration interrupted; retrying"). Claim-lease errors do not
/// count: they name no registration.
pub fn is_registration_loss(line: &str) -> bool {
    let l = line.to_ascii_lowercase();
    // A keep-alive retried while the lease is still valid is not a loss:
    // the worker stays registered.
    l.contains("registration")
        && !l.contains("still valid")
        && ["interrupted", "lost", "expired"]
            .iter()
            .any(|w| l.contains(w))
}

/// A worker log line saying it (re-)registered.
fn is_registered(line: &str) -> bool {
    // The worker's own line when it registers ("... registered worker=w1
    // lease=..."), not the ones that mention a registration in passing.
    line.contains("gdts_worker::registration") && line.contains(" registered ")
}

// ---------------------------------------------------------------- run records

/// The fate of every (job, tick) of every-second jobs in a window, from
/// their run records, accumulated one record at a time (a soak has
/// millions).
#[derive(Debug, Clone, Default)]
pub struct TickStats {
    /// (job, tick) pairs in the window.
    pub expected: usize,
    /// Ticks with exactly one record, status `succeeded`.
    pub ok: usize,
    /// Ticks without any record.
    pub unrecorded: usize,
    /// Ticks with more than one record (any status).
    pub duplicated: usize,
    /// Ticks with one record whose status is not `succeeded` (missed,
    /// skipped, failed).
    pub one_other: usize,
    /// Records in the window by status.
    pub by_status: BTreeMap<String, usize>,
    /// Records in the window by worker.
    pub by_worker: BTreeMap<String, usize>,
    /// `err` of `missed`/`skipped` records (digits shown as `N`), and how often.
    pub missed_reasons: BTreeMap<String, usize>,
    pub missed_without_reason: usize,
    /// Records of jobs this run did not create or ticks off the second.
    pub stray_records: usize,
    /// A few unrecorded and duplicated ticks, for the report.
    pub examples: Vec<String>,
    /// `forbid` ticks skipped as "still in progress" although the job's
    /// last run before the tick (in the window) had ended by the tick.
    pub skipped_after_end: usize,
}

impl TickStats {
    /// Ticks that did not run exactly once (unrecorded, or one record that
    /// is not a successful run). Duplicates are counted apart.
    pub fn missed_ticks(&self) -> usize {
        self.unrecorded + self.one_other
    }

    /// Records of runs (not `missed` or `skipped`).
    pub fn runs(&self) -> usize {
        self.by_status
            .iter()
            .filter(|(s, _)| !is_not_run(s))
            .map(|(_, n)| n)
            .sum()
    }

    pub fn is_exactly_once(&self) -> bool {
        self.expected > 0 && self.ok == self.expected && self.duplicated == 0
    }
}

fn is_not_run(status: &str) -> bool {
    matches!(status, "missed" | "skipped")
}

/// Accumulates records against the ticks of `jobs` (each firing every
/// second) in `[from_ms, to_ms)`.
pub struct TickTally {
    job_index: HashMap<String, usize>,
    /// Jobs with an index below this are the `forbid` ones.
    forbid_jobs: usize,
    from_ms: i64,
    seconds: usize,
    /// Per (job, second): records, and records with status `succeeded`.
    counts: Vec<(u16, u16)>,
    /// Per (job, second) of `forbid` jobs: the end (epoch ms) of its run, 0
    /// for none, or -1 for a skip.
    forbid_ends: Vec<i64>,
    stats: TickStats,
    /// startTime − planTime of runs, ms, for allow and forbid jobs.
    lag_allow_ms: Vec<f64>,
    lag_forbid_ms: Vec<f64>,
}

impl TickTally {
    pub fn new(jobs: &[String], forbid_jobs: usize, from_ms: i64, to_ms: i64) -> TickTally {
        let seconds = ((to_ms - from_ms) / 1000).max(0) as usize;
        TickTally {
            job_index: jobs
                .iter()
                .enumerate()
                .map(|(i, j)| (j.clone(), i))
                .collect(),
            forbid_jobs,
            from_ms,
            seconds,
            counts: vec![(0, 0); jobs.len() * seconds],
            forbid_ends: vec![0; forbid_jobs.min(jobs.len()) * seconds],
            stats: TickStats::default(),
            lag_allow_ms: Vec::new(),
            lag_forbid_ms: Vec::new(),
        }
    }

    pub fn add(&mut self, d: &Document) {
        let job = d.get_str("jobName").unwrap_or_default();
        let tick = crate::int_field(d, "planTime");
        let offset = tick - self.from_ms;
        let second = (offset / 1000) as usize;
        let Some(&j) = self.job_index.get(job) else {
            self.stats.stray_records += 1;
            return;
        };
        if offset < 0 || offset % 1000 != 0 || second >= self.seconds {
            self.stats.stray_records += 1;
            return;
        }
        let status = d.get_str("status").unwrap_or("?");
        if j < self.forbid_jobs {
            self.forbid_ends[j * self.seconds + second] = match status {
                "skipped" => -1,
                _ if is_not_run(status) => 0,
                _ => crate::int_field(d, "endTime"),
            };
        }
        let cell = &mut self.counts[j * self.seconds + second];
        cell.0 = cell.0.saturating_add(1);
        if status == "succeeded" {
            cell.1 = cell.1.saturating_add(1);
        }
        *self.stats.by_status.entry(status.to_string()).or_default() += 1;
        *self
            .stats
            .by_worker
            .entry(d.get_str("worker").unwrap_or("?").to_string())
            .or_default() += 1;
        if is_not_run(status) {
            let err = d.get_str("err").unwrap_or_default().trim();
            if err.is_empty() {
                self.stats.missed_without_reason += 1;
            } else {
                *self
                    .stats
                    .missed_reasons
                    .entry(format!("{status}: {}", normalise_reason(err)))
                    .or_default() += 1;
            }
        } else {
            let lag = (crate::int_field(d, "startTime") - tick) as f64;
            if j < self.forbid_jobs {
                self.lag_forbid_ms.push(lag);
            } else {
                self.lag_allow_ms.push(lag);
            }
        }
    }

    /// The stats, and the start lags (ms) of allow and forbid jobs.
    pub fn finish(mut self) -> (TickStats, Vec<f64>, Vec<f64>) {
        let mut names: Vec<(&String, &usize)> = self.job_index.iter().collect();
        names.sort_by_key(|(_, i)| **i);
        for (name, &j) in names {
            for s in 0..self.seconds {
                let (n, ok) = self.counts[j * self.seconds + s];
                let tick = self.from_ms + s as i64 * 1000;
                self.stats.expected += 1;
                match n {
                    0 => {
                        self.stats.unrecorded += 1;
                        if self.stats.examples.len() < 5 {
                            self.stats
                                .examples
                                .push(format!("{name}@{tick}: no record"));
                        }
                    }
                    1 if ok == 1 => self.stats.ok += 1,
                    1 => self.stats.one_other += 1,
                    n => {
                        self.stats.duplicated += 1;
                        if self.stats.examples.len() < 5 {
                            self.stats
                                .examples
                                .push(format!("{name}@{tick}: {n} records"));
                        }
                    }
                }
            }
        }
        self.stats.skipped_after_end = self.skipped_after_end();
        (self.stats, self.lag_allow_ms, self.lag_forbid_ms)
    }

    /// `forbid` skips with the job's last run before them ended by their tick.
    fn skipped_after_end(&self) -> usize {
        let mut n = 0;
        for cells in self.forbid_ends.chunks(self.seconds.max(1)) {
            for (s, &end) in cells.iter().enumerate() {
                if end != -1 {
                    continue;
                }
                let tick = self.from_ms + s as i64 * 1000;
                let last_run = cells[..s].iter().rev().find(|&&e| e > 0);
                if last_run.is_some_and(|&e| e <= tick) {
                    n += 1;
                }
            }
        }
        n
    }
}

/// A reason with its numbers blanked, so reasons of different ticks group.
fn normalise_reason(err: &str) -> String {
    let mut out = String::new();
    let mut in_digits = false;
    for c in err.chars().take(160) {
        if c.is_ascii_digit() {
            if !in_digits {
                out.push('N');
            }
            in_digits = true;
        } else {
            in_digits = false;
            out.push(c);
        }
    }
    out
}

/// Streams the records of ticks in `[from_ms, to_ms)` into `tally`.
async fn tally_records(
    runs: &mongodb::Collection<Document>,
    from_ms: i64,
    to_ms: i64,
    tally: &mut TickTally,
) -> anyhow::Result<()> {
    let mut cursor = runs
        .find(doc! {"planTime": {"$gte": from_ms, "$lt": to_ms}})
        .projection(doc! {
            "jobName": 1, "planTime": 1, "startTime": 1, "endTime": 1, "status": 1, "err": 1,
            "worker": 1,
        })
        .batch_size(5000)
        .await?;
    while let Some(d) = cursor.try_next().await? {
        tally.add(&d);
    }
    Ok(())
}

/// Waits until the records of the window's last second are in for a few
/// jobs spread over the set (queries the runs-by-job index answers
/// at once; a range count scans the whole collection, which on the
/// Mongo-protocol server of the tests takes tens of seconds at 300k
/// records), and at least 2 s after the window. At most 30 s after it.
async fn wait_for_records(
    runs: &mongodb::Collection<Document>,
    jobs: &[String],
    to_ms: i64,
) -> anyhow::Result<()> {
    let step = (jobs.len() / 5).max(1);
    let sample: Vec<&String> = jobs.iter().step_by(step).chain(jobs.last()).collect();
    let last_tick = to_ms - 1000;
    loop {
        let mut all_in = true;
        for job in &sample {
            let found = runs
                .find_one(doc! {"jobName": job.as_str(), "planTime": last_tick})
                .projection(doc! {"_id": 1})
                .await?;
            if found.is_none() {
                all_in = false;
                break;
            }
        }
        let now = now_ms();
        if (all_in && now >= to_ms + 2000) || now >= to_ms + 30_000 {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Tallies the window's records. Ticks nobody ran are recorded as missed
/// only within `MISSED_SETTLE` of the tick: when some tick has no record
/// yet, wait until then and tally again.
async fn tally_window(
    runs: &mongodb::Collection<Document>,
    jobs: &[String],
    forbid_jobs: usize,
    from_ms: i64,
    to_ms: i64,
) -> anyhow::Result<(TickStats, Vec<f64>, Vec<f64>)> {
    let mut tally = TickTally::new(jobs, forbid_jobs, from_ms, to_ms);
    tally_records(runs, from_ms, to_ms, &mut tally).await?;
    let first = tally.finish();
    let settled = to_ms + MISSED_SETTLE.as_millis() as i64;
    if first.0.unrecorded == 0 || now_ms() >= settled {
        return Ok(first);
    }
    sleep_until_ms(settled).await;
    let mut tally = TickTally::new(jobs, forbid_jobs, from_ms, to_ms);
    tally_records(runs, from_ms, to_ms, &mut tally).await?;
    Ok(tally.finish())
}

// ---------------------------------------------------------------- command clock

/// The command clock of a window: when each run's command actually ran,
/// against its tick.
#[derive(Debug, Clone, Default)]
pub struct ClockStats {
    /// Lines for ticks in the window.
    pub lines: usize,
    /// Lines whose tick came from `GDTS_PLAN_TIME_MS`; the others inferred
    /// it as the whole second before the clock (right only under 1 s lag).
    pub with_plan_time: usize,
    /// (job, tick) pairs with more than one line.
    pub duplicated: usize,
    /// Lines that could not be read.
    pub unreadable: usize,
}

/// `SECONDS.FRACTION` (either decimal mark, any number of digits) in µs.
fn parse_epoch_us(s: &str) -> Option<i64> {
    let (secs, frac) = s.split_once(['.', ',']).unwrap_or((s, ""));
    let secs: i64 = secs.parse().ok()?;
    let digits: String = frac.chars().take(6).collect();
    let micros: i64 = if digits.is_empty() {
        0
    } else {
        format!("{digits:0<6}").parse().ok()?
    };
    Some(secs * 1_000_000 + micros)
}

/// Reads the clock file: lags (ms) of allow and forbid jobs for ticks in
/// `[from_ms, to_ms)`.
fn tally_clock_file(
    path: &Path,
    jobs: &[String],
    forbid_jobs: usize,
    from_ms: i64,
    to_ms: i64,
) -> anyhow::Result<(ClockStats, Vec<f64>, Vec<f64>)> {
    let index: HashMap<&str, usize> = jobs
        .iter()
        .enumerate()
        .map(|(i, j)| (j.as_str(), i))
        .collect();
    let mut stats = ClockStats::default();
    let (mut allow, mut forbid) = (Vec::new(), Vec::new());
    let mut seen: HashMap<(usize, i64), u16> = HashMap::new();
    let file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok((stats, allow, forbid));
        }
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    for line in BufReader::new(file).lines() {
        let line = line?;
        let mut fields = line.split_whitespace();
        let parsed = (|| {
            let job = *index.get(fields.next()?)?;
            let plan: i64 = fields.next()?.parse().ok()?;
            let at_us = parse_epoch_us(fields.next()?)?;
            Some((job, plan, at_us))
        })();
        let Some((job, plan, at_us)) = parsed else {
            stats.unreadable += 1;
            continue;
        };
        let tick = if plan > 0 {
            plan
        } else {
            at_us.div_euclid(1_000_000) * 1000
        };
        if tick < from_ms || tick >= to_ms {
            continue;
        }
        stats.lines += 1;
        if plan > 0 {
            stats.with_plan_time += 1;
        }
        let n = seen.entry((job, tick)).or_default();
        *n += 1;
        if *n == 2 {
            stats.duplicated += 1;
        }
        let lag = (at_us - tick * 1000) as f64 / 1000.0;
        if job < forbid_jobs {
            forbid.push(lag);
        } else {
            allow.push(lag);
        }
    }
    Ok((stats, allow, forbid))
}

// ---------------------------------------------------------------- the load scenario

/// K every-second jobs on W workers, measured over a window after a warm-up.
/// The `ticks`, `fleet`, `overload` and `soak` scenarios are this with
/// different sizes and extra watchers.
#[derive(Debug, Clone)]
pub struct LoadParams {
    /// Names the etcd prefix and database (`[a-z0-9_]`).
    pub name: String,
    pub jobs: usize,
    pub workers: usize,
    pub warmup: Duration,
    /// Length of the measuring window.
    pub seconds: u64,
    /// Percentage of the jobs with `overlap: forbid` (claimed at the tick).
    pub forbid_percent: u32,
    /// How long each run of those `forbid` jobs lasts after its clock line
    /// (a `sleep`): near a second, their runs end just before the next tick.
    pub forbid_run: Option<Duration>,
    /// Poll `/healthz` and `/api/v1/jobs?pageSize=1` every 200 ms.
    pub poll_api: bool,
    /// Sample RSS and etcd's size this often (a soak).
    pub sample_every: Option<Duration>,
    /// Keep the run's logs in a directory under this one.
    pub keep_logs_under: Option<PathBuf>,
    /// Extra environment of every worker (e.g. `GDTS_SHELL`).
    pub worker_env: Vec<(String, String)>,
}

impl LoadParams {
    pub fn new(name: &str, jobs: usize, workers: usize, seconds: u64) -> LoadParams {
        LoadParams {
            name: name.into(),
            jobs,
            workers,
            warmup: DEFAULT_WARMUP,
            seconds,
            forbid_percent: 0,
            forbid_run: None,
            poll_api: false,
            sample_every: None,
            keep_logs_under: None,
            worker_env: Vec::new(),
        }
    }
}

/// Everything measured in one load run.
#[derive(Debug, Clone)]
pub struct LoadReport {
    pub params: LoadParams,
    pub forbid_jobs: usize,
    pub window_ms: (i64, i64),
    pub ticks: TickStats,
    /// Start lag from the records (startTime − planTime), ms.
    pub lag_records: Option<Dist>,
    pub lag_records_forbid: Option<Dist>,
    /// Start lag from the command's clock, ms.
    pub lag_clock: Option<Dist>,
    pub lag_clock_forbid: Option<Dist>,
    /// Sorted lags of the allow jobs (for the plot).
    pub lag_records_sorted: Vec<f64>,
    pub lag_clock_sorted: Vec<f64>,
    pub clock: ClockStats,
    pub etcd: EtcdFigures,
    /// etcd log lines with "took too long" in the window.
    pub etcd_took_too_long: usize,
    /// Worker log lines in the window saying the registration broke, and
    /// registrations made in the window, by worker.
    pub registration_losses: BTreeMap<String, usize>,
    pub registrations: BTreeMap<String, usize>,
    pub fleet: FleetWatch,
    /// VmHWM at the window's end, KiB, by process.
    pub hwm_kib: BTreeMap<String, u64>,
    /// CPU seconds used in the window, by process: its own and its
    /// children's (the commands a worker ran and reaped).
    pub cpu_seconds: BTreeMap<String, (f64, f64)>,
    pub api: Vec<ApiPoll>,
    pub soak: Vec<SoakSample>,
    pub log_dir: Option<PathBuf>,
}

impl LoadReport {
    pub fn tick_count(&self) -> f64 {
        (self.params.jobs as u64 * self.params.seconds) as f64
    }

    pub fn runs_per_second(&self) -> f64 {
        self.ticks.runs() as f64 / self.params.seconds as f64
    }

    pub fn requests_per_tick(&self) -> f64 {
        self.etcd.requests / self.tick_count()
    }

    pub fn registration_kept(&self) -> bool {
        self.fleet.list_lacking == 0 && self.registration_losses.values().all(|n| *n == 0)
    }
}

/// Starts a cluster, runs the load, stops everything. The logs are kept
/// (`LoadReport::log_dir`) under `keep_logs_under`, and also in a temporary
/// directory when the run failed or a tick did not run exactly once; the
/// error of a failed run names them.
pub async fn run_load(p: &LoadParams) -> anyhow::Result<LoadReport> {
    let mut cluster = start_cluster(&p.name, p.keep_logs_under.as_deref()).await?;
    let result = load_on(&mut cluster, p).await;
    let keep =
        p.keep_logs_under.is_some() || result.as_ref().map_or(true, |r| !r.ticks.is_exactly_once());
    let kept = finish_cluster(cluster, keep);
    match result {
        Ok(mut report) => {
            report.log_dir = kept;
            Ok(report)
        }
        Err(e) => Err(match kept {
            Some(dir) => e.context(format!("logs kept in {}", dir.display())),
            None => e,
        }),
    }
}

async fn load_on(cluster: &mut Cluster, p: &LoadParams) -> anyhow::Result<LoadReport> {
    let ids: Vec<String> = (1..=p.workers).map(|i| format!("w{i}")).collect();
    for id in &ids {
        let options = WorkerOptions {
            env: p.worker_env.clone(),
            ..Default::default()
        };
        cluster.start_worker(id, options)?;
    }
    let id_refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    cluster
        .wait_for_workers(&id_refs, Duration::from_secs(30))
        .await?;

    let clock_file = cluster.dir.path().join("clock.log");
    // Runs under an unprivileged job user (GDTS_JOB_USER) append to it too.
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::write(&clock_file, "")?;
        std::fs::set_permissions(&clock_file, std::fs::Permissions::from_mode(0o666))?;
        std::fs::set_permissions(cluster.dir.path(), std::fs::Permissions::from_mode(0o711))?;
    }
    let forbid_jobs = p.jobs * p.forbid_percent.min(100) as usize / 100;
    let names: Vec<String> = (0..p.jobs).map(|i| format!("tick-{i:05}")).collect();
    let specs: Vec<JobSpec> = names
        .iter()
        .enumerate()
        .map(|(i, name)| {
            let mut command = clock_command(name, &clock_file);
            if let (true, Some(run)) = (i < forbid_jobs, p.forbid_run) {
                command = format!("{command}; sleep {:.3}", run.as_secs_f64());
            }
            let mut spec = JobSpec::shell(name, &command, "* * * * * * *");
            if i < forbid_jobs {
                spec.overlap = Some("forbid".into());
            }
            spec
        })
        .collect();
    put_jobs(cluster, &specs).await?;

    let from = ceil_second(now_ms() + p.warmup.as_millis() as i64);
    let to = from + p.seconds as i64 * 1000;
    let http = http_client(Duration::from_secs(5))?;
    let pids = watched_pids(cluster);
    let (stop, stopped) = watch::channel(false);
    let fleet_task = tokio::spawn(watch_fleet(
        http.clone(),
        cluster.manager_url.clone(),
        ids.clone(),
        pids.clone(),
        from,
        stopped.clone(),
    ));

    sleep_until_ms(from).await;
    let api_tasks: Vec<_> = if p.poll_api {
        ["/healthz", "/api/v1/jobs?pageSize=1"]
            .into_iter()
            .map(|path| {
                tokio::spawn(poll_api(
                    http.clone(),
                    cluster.manager_url.clone(),
                    path.to_string(),
                    Duration::from_millis(200),
                    stopped.clone(),
                ))
            })
            .collect()
    } else {
        Vec::new()
    };
    let soak_task = p.sample_every.map(|period| {
        tokio::spawn(sample_soak(
            http.clone(),
            cluster.etcd.endpoint.clone(),
            pids.clone(),
            period,
            stopped.clone(),
        ))
    });
    let etcd_log = cluster.etcd.log_file();
    let worker_logs: Vec<PathBuf> = ids.iter().map(|id| cluster.worker_log(id)).collect();
    let metrics_start = Metrics::scrape(&http, &cluster.etcd.endpoint).await?;
    let etcd_log_start = file_len(&etcd_log);
    let worker_logs_start: Vec<u64> = worker_logs.iter().map(|l| file_len(l)).collect();
    let cpu_start: BTreeMap<String, (f64, f64)> = pids
        .iter()
        .filter_map(|(n, pid)| Some((n.clone(), proc_cpu_seconds(*pid)?)))
        .collect();

    sleep_until_ms(to).await;
    let metrics_end = Metrics::scrape(&http, &cluster.etcd.endpoint).await?;
    let etcd_log_end = file_len(&etcd_log);
    let worker_logs_end: Vec<u64> = worker_logs.iter().map(|l| file_len(l)).collect();
    let hwm_kib = pids
        .iter()
        .filter_map(|(n, pid)| Some((n.clone(), proc_status_kib(*pid, "VmHWM")?)))
        .collect();
    let cpu_seconds = pids
        .iter()
        .filter_map(|(n, pid)| {
            let (own, children) = proc_cpu_seconds(*pid)?;
            let (own0, children0) = cpu_start.get(n)?;
            Some((n.clone(), (own - own0, children - children0)))
        })
        .collect();
    stop.send_replace(true);
    let fleet = fleet_task.await?;
    let mut api = Vec::new();
    for task in api_tasks {
        api.push(task.await?);
    }
    let soak = match soak_task {
        Some(task) => task.await?,
        None => Vec::new(),
    };

    let runs = cluster.runs::<Document>().await;
    wait_for_records(&runs, &names, to).await?;
    // The workers stop before the records are read: the reads then do not
    // compete with a thousand runs a second.
    stop_workers(cluster, Duration::from_secs(20));
    let (ticks, mut lag_allow, lag_forbid) =
        tally_window(&runs, &names, forbid_jobs, from, to).await?;
    let (clock, mut clock_allow, clock_forbid) =
        tally_clock_file(&clock_file, &names, forbid_jobs, from, to)?;
    lag_allow.sort_by(f64::total_cmp);
    clock_allow.sort_by(f64::total_cmp);

    let took_too_long = count_lines(&etcd_log, etcd_log_start, etcd_log_end, |l| {
        l.contains("took too long")
    });
    let mut registration_losses = BTreeMap::new();
    let mut registrations = BTreeMap::new();
    for (i, id) in ids.iter().enumerate() {
        let (log, a, b) = (&worker_logs[i], worker_logs_start[i], worker_logs_end[i]);
        registration_losses.insert(id.clone(), count_lines(log, a, b, is_registration_loss));
        registrations.insert(id.clone(), count_lines(log, a, b, is_registered));
    }

    Ok(LoadReport {
        params: p.clone(),
        forbid_jobs,
        window_ms: (from, to),
        ticks,
        lag_records: Dist::of_sorted(&lag_allow),
        lag_records_forbid: Dist::of(lag_forbid),
        lag_clock: Dist::of_sorted(&clock_allow),
        lag_clock_forbid: Dist::of(clock_forbid),
        lag_records_sorted: lag_allow,
        lag_clock_sorted: clock_allow,
        clock,
        etcd: EtcdFigures::between(&metrics_start, &metrics_end),
        etcd_took_too_long: took_too_long,
        registration_losses,
        registrations,
        fleet,
        hwm_kib,
        cpu_seconds,
        api,
        soak,
        log_dir: None,
    })
}

// ---------------------------------------------------------------- targets

/// A figure checked against a target.
#[derive(Debug, Clone)]
pub struct Target {
    pub what: String,
    pub measured: String,
    pub pass: bool,
}

impl Target {
    fn new(what: impl Into<String>, measured: impl Into<String>, pass: bool) -> Target {
        Target {
            what: what.into(),
            measured: measured.into(),
            pass,
        }
    }
}

/// The targets as a Markdown table with PASS/FAIL (empty for none).
pub fn targets_table(targets: &[Target]) -> String {
    if targets.is_empty() {
        return String::new();
    }
    let mut out = String::from("| target | measured | |\n|---|---|---|\n");
    for t in targets {
        let verdict = if t.pass { "PASS" } else { "**FAIL**" };
        let _ = writeln!(out, "| {} | {} | {verdict} |", t.what, t.measured);
    }
    out
}

/// The p99 start-lag target for K every-second jobs: 20 ms up to 100 jobs,
/// 50 ms up to 1,000, none beyond (that is the overload scenario).
pub fn lag_target_ms(jobs: usize) -> Option<f64> {
    match jobs {
        0..=100 => Some(20.0),
        101..=1000 => Some(50.0),
        _ => None,
    }
}

impl LoadReport {
    /// The targets of the ticks scenario.
    pub fn ticks_targets(&self) -> Vec<Target> {
        let k = self.params.jobs as f64;
        let min_rate = k * 0.999;
        let mut t = vec![
            Target::new(
                format!("runs/s ≥ {min_rate:.1}"),
                format!("{:.1}", self.runs_per_second()),
                self.runs_per_second() >= min_rate,
            ),
            Target::new(
                "duplicate ticks = 0",
                self.ticks.duplicated.to_string(),
                self.ticks.duplicated == 0,
            ),
            Target::new(
                "missed ticks = 0",
                format!(
                    "{} (no record {}, not run {})",
                    self.ticks.missed_ticks(),
                    self.ticks.unrecorded,
                    self.ticks.one_other
                ),
                self.ticks.missed_ticks() == 0,
            ),
        ];
        let allow_jobs = self.forbid_jobs < self.params.jobs;
        if let (Some(limit), true) = (lag_target_ms(self.params.jobs), allow_jobs) {
            let forbid = if self.forbid_jobs > 0 {
                ", allow jobs"
            } else {
                ""
            };
            let check = |d: &Option<Dist>| d.is_some_and(|d| d.p99 <= limit);
            let p99 = |d: &Option<Dist>| {
                d.map(|d| format!("{:.1} ms", d.p99))
                    .unwrap_or_else(|| "no data".into())
            };
            t.push(Target::new(
                format!("start lag p99 (records{forbid}) ≤ {limit} ms"),
                p99(&self.lag_records),
                check(&self.lag_records),
            ));
            let inferred = if self.clock.lines > 0 && self.clock.with_plan_time < self.clock.lines {
                " (tick inferred: no GDTS_PLAN_TIME_MS)"
            } else {
                ""
            };
            t.push(Target::new(
                format!("start lag p99 (command clock{forbid}) ≤ {limit} ms"),
                format!("{}{inferred}", p99(&self.lag_clock)),
                check(&self.lag_clock),
            ));
        }
        t
    }

    /// The targets of the overload scenario.
    pub fn overload_targets(&self) -> Vec<Target> {
        let mut t = vec![
            Target::new(
                "registrations kept (every /worker/list poll lists every worker; no loss in the logs)",
                format!(
                    "{} of {} polls lacking a worker; {} loss lines",
                    self.fleet.list_lacking,
                    self.fleet.list_polls,
                    self.registration_losses.values().sum::<usize>()
                ),
                self.registration_kept(),
            ),
            Target::new(
                "every due tick has a record (run or missed)",
                format!("{} of {} without", self.ticks.unrecorded, self.ticks.expected),
                self.ticks.unrecorded == 0 && self.ticks.expected > 0,
            ),
            Target::new(
                "duplicate ticks = 0",
                self.ticks.duplicated.to_string(),
                self.ticks.duplicated == 0,
            ),
            Target::new(
                "every missed record gives its reason in `err`",
                format!("{} without", self.ticks.missed_without_reason),
                self.ticks.missed_without_reason == 0,
            ),
        ];
        for poll in &self.api {
            t.push(Target::new(
                format!("`GET {}` answers every 200 ms poll", poll.path),
                format!("{} failures of {}", poll.failures, poll.requests),
                poll.failures == 0 && poll.requests > 0,
            ));
        }
        t
    }

    /// The figures table shared by the load scenarios.
    pub fn figures_markdown(&self) -> String {
        let p = &self.params;
        let ticks = self.tick_count();
        let e = &self.etcd;
        let mut rows: Vec<(String, String)> = Vec::new();
        let mut row = |k: &str, v: String| rows.push((k.to_string(), v));
        row(
            "window",
            format!(
                "{} s after a {} s warm-up: {} jobs × {} s = {} ticks",
                p.seconds,
                p.warmup.as_secs(),
                p.jobs,
                p.seconds,
                self.ticks.expected
            ),
        );
        if self.forbid_jobs > 0 {
            row(
                "jobs with `overlap: forbid`",
                format!("{} ({} %)", self.forbid_jobs, p.forbid_percent),
            );
            row(
                "`forbid` ticks skipped though the job's run before had ended by the tick",
                self.ticks.skipped_after_end.to_string(),
            );
        }
        row("runs/s", format!("{:.1}", self.runs_per_second()));
        row(
            "ticks: exactly one successful run / no record / one record not a run / duplicated",
            format!(
                "{} / {} / {} / {}",
                self.ticks.ok, self.ticks.unrecorded, self.ticks.one_other, self.ticks.duplicated
            ),
        );
        row("records by status", join_counts(&self.ticks.by_status));
        row(
            "records of runs / of ticks not run (missed, skipped)",
            format!(
                "{} / {}",
                self.ticks.runs(),
                self.ticks
                    .by_status
                    .iter()
                    .filter(|(s, _)| is_not_run(s))
                    .map(|(_, n)| n)
                    .sum::<usize>()
            ),
        );
        if !self.ticks.missed_reasons.is_empty() || self.ticks.missed_without_reason > 0 {
            let mut reasons = join_counts(&self.ticks.missed_reasons);
            if self.ticks.missed_without_reason > 0 {
                let _ = write!(
                    reasons,
                    "; without a reason: {}",
                    self.ticks.missed_without_reason
                );
            }
            row("missed/skipped reasons", reasons);
        }
        row("records by worker", join_counts(&self.ticks.by_worker));
        if !self.ticks.examples.is_empty() {
            row("examples", self.ticks.examples.join("; "));
        }
        if self.ticks.stray_records > 0 {
            row(
                "records outside the job set or off the second",
                self.ticks.stray_records.to_string(),
            );
        }
        let allow = if self.forbid_jobs > 0 {
            " (allow jobs)"
        } else {
            ""
        };
        row(
            &format!("start lag, records (startTime − planTime){allow}"),
            describe_dist(&self.lag_records, "ms"),
        );
        if self.forbid_jobs > 0 {
            row(
                "start lag, records (forbid jobs)",
                describe_dist(&self.lag_records_forbid, "ms"),
            );
        }
        row(
            &format!("start lag, command clock (EPOCHREALTIME − tick){allow}"),
            describe_dist(&self.lag_clock, "ms"),
        );
        if self.forbid_jobs > 0 {
            row(
                "start lag, command clock (forbid jobs)",
                describe_dist(&self.lag_clock_forbid, "ms"),
            );
        }
        row(
            "command-clock lines: ticks from GDTS_PLAN_TIME_MS / inferred / duplicated / unreadable",
            format!(
                "{} / {} / {} / {}",
                self.clock.with_plan_time,
                self.clock.lines - self.clock.with_plan_time,
                self.clock.duplicated,
                self.clock.unreadable
            ),
        );
        row(
            "etcd requests (gRPC messages received)",
            format!("{:.0}: {:.2} per tick", e.requests, e.requests / ticks),
        );
        row(
            "etcd revisions per tick",
            format!("{:.3}", e.revisions / ticks),
        );
        row(
            "etcd WAL bytes per tick",
            if e.wal_metric {
                format!("{:.0}", e.wal_bytes / ticks)
            } else {
                "n/a (no etcd_disk_wal_write_bytes_total in this etcd)".into()
            },
        );
        row(
            "etcd CPU per tick",
            format!(
                "{:.1} µs ({:.1} s in the window, {:.0} % of a core)",
                e.cpu_seconds / ticks * 1e6,
                e.cpu_seconds,
                e.cpu_seconds / p.seconds as f64 * 100.0
            ),
        );
        row(
            "etcd db size, start → end (in use)",
            format!(
                "{:.1} → {:.1} MiB ({:.1} → {:.1} MiB)",
                e.db_bytes.0 / 1048576.0,
                e.db_bytes.1 / 1048576.0,
                e.db_in_use_bytes.0 / 1048576.0,
                e.db_in_use_bytes.1 / 1048576.0
            ),
        );
        row(
            "etcd \"took too long\" log lines",
            self.etcd_took_too_long.to_string(),
        );
        row(
            "worker registration losses (log lines) / registrations in the window",
            self.registration_losses
                .iter()
                .map(|(w, n)| format!("{w} {n} / {}", self.registrations.get(w).unwrap_or(&0)))
                .collect::<Vec<_>>()
                .join(", "),
        );
        row(
            "/worker/list polls (500 ms) lacking a worker",
            format!(
                "{} of {}{}{}",
                self.fleet.list_lacking,
                self.fleet.list_polls,
                if self.fleet.lacking_workers.is_empty() {
                    String::new()
                } else {
                    format!(
                        " ({})",
                        self.fleet
                            .lacking_workers
                            .iter()
                            .cloned()
                            .collect::<Vec<_>>()
                            .join(", ")
                    )
                },
                if self.fleet.list_failures > 0 {
                    format!("; {} polls failed", self.fleet.list_failures)
                } else {
                    String::new()
                }
            ),
        );
        row(
            "peak RSS (VmRSS every 500 ms from the jobs' creation; VmHWM)",
            self.fleet
                .peak_rss_kib
                .iter()
                .map(|(n, kib)| {
                    let hwm = self
                        .hwm_kib
                        .get(n)
                        .map(|h| format!(" (HWM {:.0})", mib(*h)))
                        .unwrap_or_default();
                    format!("{n} {:.0} MiB{hwm}", mib(*kib))
                })
                .collect::<Vec<_>>()
                .join(", "),
        );
        if !self.cpu_seconds.is_empty() {
            let seconds = self.params.seconds as f64;
            row(
                "CPU in the window (share of one core; + the commands it ran)",
                self.cpu_seconds
                    .iter()
                    .map(|(n, (own, children))| {
                        let commands = if *children > 0.0 {
                            format!(" + {:.0} %", children / seconds * 100.0)
                        } else {
                            String::new()
                        };
                        format!("{n} {:.0} %{commands}", own / seconds * 100.0)
                    })
                    .collect::<Vec<_>>()
                    .join(", "),
            );
        }
        for poll in &self.api {
            row(
                &format!("`GET {}` every 200 ms", poll.path),
                format!(
                    "{} requests, {} failed{}; {}",
                    poll.requests,
                    poll.failures,
                    if poll.failure_kinds.is_empty() {
                        String::new()
                    } else {
                        format!(" ({})", join_counts(&poll.failure_kinds))
                    },
                    describe_dist(&poll.latency_ms, "ms")
                ),
            );
        }
        if let Some(dir) = &self.log_dir {
            row("logs", format!("`{}`", display_path(dir)));
        }

        let mut out = String::from("| figure | value |\n|---|---|\n");
        for (k, v) in rows {
            let _ = writeln!(out, "| {k} | {v} |");
        }
        if !e.requests_by_method.is_empty() {
            out.push_str(
                "\netcd requests by method:\n\n| method | messages | per tick |\n|---|---|---|\n",
            );
            let mut methods: Vec<(&String, &f64)> = e.requests_by_method.iter().collect();
            methods.sort_by(|a, b| b.1.total_cmp(a.1));
            for (m, n) in methods {
                let _ = writeln!(out, "| {m} | {n:.0} | {:.3} |", n / ticks);
            }
        }
        out
    }
}

fn join_counts(counts: &BTreeMap<String, usize>) -> String {
    if counts.is_empty() {
        return "none".into();
    }
    counts
        .iter()
        .map(|(k, n)| format!("{} {n}", k.replace('|', "/")))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A path relative to the workspace when inside it (docs never name a path
/// of the machine that ran them).
pub fn display_path(path: &Path) -> String {
    let root = workspace_root();
    let root = root.canonicalize().unwrap_or(root);
    let path = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
    match path.strip_prefix(&root) {
        Ok(rel) => rel.display().to_string(),
        Err(_) => path
            .file_name()
            .map(|n| format!("…/{}", n.to_string_lossy()))
            .unwrap_or_default(),
    }
}

// ---------------------------------------------------------------- soak

/// Whether a series is flat: the average of the last third of the samples
/// within 10 % of the middle third's.
#[derive(Debug, Clone)]
pub struct Flatness {
    pub series: String,
    pub middle: f64,
    pub last: f64,
    pub flat: bool,
}

impl Flatness {
    pub fn change(&self) -> f64 {
        if self.middle == 0.0 {
            0.0
        } else {
            self.last / self.middle - 1.0
        }
    }
}

/// Flatness of every RSS series and of etcd's db size and in-use size.
pub fn soak_flatness(samples: &[SoakSample]) -> Vec<Flatness> {
    let n = samples.len();
    if n < 3 {
        return Vec::new();
    }
    let names: BTreeSet<String> = samples
        .iter()
        .flat_map(|s| s.rss_kib.keys().cloned())
        .collect();
    let mut series: Vec<(String, Vec<f64>)> = names
        .into_iter()
        .map(|name| {
            let values = samples
                .iter()
                .map(|s| s.rss_kib.get(&name).copied().unwrap_or(0) as f64)
                .collect();
            (format!("RSS {name}"), values)
        })
        .collect();
    series.push((
        "etcd db size".into(),
        samples.iter().map(|s| s.db_bytes).collect(),
    ));
    series.push((
        "etcd db in use".into(),
        samples.iter().map(|s| s.db_in_use_bytes).collect(),
    ));
    let avg = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
    series
        .into_iter()
        .map(|(name, v)| {
            let (middle, last) = (avg(&v[n / 3..2 * n / 3]), avg(&v[2 * n / 3..]));
            Flatness {
                series: name,
                middle,
                last,
                flat: middle == 0.0 || (last / middle - 1.0).abs() <= 0.10,
            }
        })
        .collect()
}

/// The soak's samples as CSV (for the plot): seconds, RSS MiB by process,
/// db and in-use MiB, revision.
pub fn soak_csv(samples: &[SoakSample]) -> String {
    let names: BTreeSet<String> = samples
        .iter()
        .flat_map(|s| s.rss_kib.keys().cloned())
        .collect();
    let mut out = String::from("seconds");
    for n in &names {
        let _ = write!(out, ",rss_mib:{n}");
    }
    out.push_str(",db_mib,db_in_use_mib,revision\n");
    for s in samples {
        let _ = write!(out, "{:.0}", s.at_s);
        for n in &names {
            let _ = write!(out, ",{:.1}", mib(s.rss_kib.get(n).copied().unwrap_or(0)));
        }
        let _ = writeln!(
            out,
            ",{:.2},{:.2},{:.0}",
            s.db_bytes / 1048576.0,
            s.db_in_use_bytes / 1048576.0,
            s.revision
        );
    }
    out
}

/// Lag quantiles as CSV (for the plot): percent, records ms, clock ms.
pub fn lag_csv(records_sorted: &[f64], clock_sorted: &[f64]) -> String {
    let mut out = String::from("percent,records_ms,clock_ms\n");
    let mut percents: Vec<f64> = (0..=100).map(f64::from).collect();
    percents.extend([99.5, 99.9]);
    percents.sort_by(f64::total_cmp);
    for pct in percents {
        let q = |s: &[f64]| {
            if s.is_empty() {
                String::new()
            } else {
                format!("{:.3}", quantile(s, pct / 100.0))
            }
        };
        let _ = writeln!(out, "{pct},{},{}", q(records_sorted), q(clock_sorted));
    }
    out
}

// ---------------------------------------------------------------- many jobs

/// 100,000 jobs: `per_second` every second, the rest hourly, spread over the
/// hour; one manager and one worker.
#[derive(Debug, Clone)]
pub struct JobsParams {
    pub total: usize,
    pub per_second: usize,
    /// `GET /api/v1/jobs` requests to time.
    pub api_requests: usize,
    pub keep_logs_under: Option<PathBuf>,
}

/// Latency of one kind of `GET /api/v1/jobs` request.
#[derive(Debug, Clone, Default)]
pub struct PageTiming {
    pub kind: String,
    pub requests: usize,
    pub failures: usize,
    pub statuses: BTreeMap<String, usize>,
    pub latency_ms: Option<Dist>,
}

#[derive(Debug, Clone, Default)]
pub struct JobsReport {
    pub params: Option<JobsParams>,
    /// Writing every job into etcd.
    pub put_seconds: f64,
    /// From the worker's start until its first record was in MongoDB.
    pub first_record_seen_s: Option<f64>,
    /// From the worker's start to the first record's `startTime`.
    pub first_record_start_s: Option<f64>,
    /// VmRSS of the worker 30 s after its start, and its peak.
    pub worker_rss_kib: Option<u64>,
    pub worker_peak_rss_kib: Option<u64>,
    pub worker_hwm_kib: Option<u64>,
    /// Ticks due in a 10 s window once running, and what became of them.
    pub steady_due: usize,
    pub steady_ok: usize,
    pub steady_unrecorded: usize,
    /// Due ticks with one record that is not a successful run.
    pub steady_not_run: usize,
    pub steady_duplicated: usize,
    pub steady_by_status: BTreeMap<String, usize>,
    pub pages: Vec<PageTiming>,
    /// Whether `after=` answered with names after the cursor (None: never
    /// answered).
    pub after_honoured: Option<bool>,
    pub job_list_status: Option<u16>,
    pub job_list_bytes: usize,
    pub job_list_seconds: f64,
    pub job_list_jobs: Option<usize>,
    pub job_list_error: Option<String>,
    /// The every-second job saved while all the others exist.
    pub new_job_saved_ms: i64,
    pub new_job_save_error: Option<String>,
    pub new_job_expected_tick: i64,
    pub new_job_first_tick: Option<i64>,
    pub new_job_first_start: Option<i64>,
    pub registration_lacking: usize,
    pub registration_polls: usize,
    pub log_dir: Option<PathBuf>,
}

impl JobsReport {
    pub fn targets(&self) -> Vec<Target> {
        let secs = |s: Option<f64>| {
            s.map(|s| format!("{s:.2} s"))
                .unwrap_or_else(|| "no record".into())
        };
        let mut t = vec![
            Target::new(
                "worker start → first run record ≤ 5 s",
                secs(self.first_record_seen_s),
                self.first_record_seen_s.is_some_and(|s| s <= 5.0),
            ),
            Target::new(
                "worker RSS after load ≤ 300 MB",
                self.worker_rss_kib
                    .map(|k| format!("{:.0} MiB", mib(k)))
                    .unwrap_or_else(|| "n/a".into()),
                self.worker_rss_kib
                    .is_some_and(|k| k as f64 * 1024.0 <= 300e6),
            ),
        ];
        t.push(Target::new(
            "10 s of steady state: every due tick ran exactly once",
            format!(
                "{} of {} (no record {}, not run {}, duplicated {})",
                self.steady_ok,
                self.steady_due,
                self.steady_unrecorded,
                self.steady_not_run,
                self.steady_duplicated
            ),
            self.steady_due > 0 && self.steady_ok == self.steady_due,
        ));
        for page in &self.pages {
            t.push(Target::new(
                format!("`GET /api/v1/jobs` {} p99 ≤ 100 ms", page.kind),
                format!(
                    "{}{}",
                    page.latency_ms
                        .map(|d| format!("{:.1} ms", d.p99))
                        .unwrap_or_else(|| "no answer".into()),
                    if page.failures > 0 {
                        format!(
                            " ({} failed: {})",
                            page.failures,
                            join_counts(&page.statuses)
                        )
                    } else {
                        String::new()
                    }
                ),
                page.failures == 0 && page.latency_ms.is_some_and(|d| d.p99 <= 100.0),
            ));
        }
        t.push(Target::new(
            "`GET /job/list` answers",
            match (self.job_list_status, &self.job_list_error) {
                (Some(s), _) => format!(
                    "HTTP {s}, {:.1} MB in {:.2} s",
                    self.job_list_bytes as f64 / 1e6,
                    self.job_list_seconds
                ),
                (None, Some(e)) => e.clone(),
                (None, None) => "not asked".into(),
            },
            self.job_list_status == Some(200)
                && self.job_list_jobs == self.params.as_ref().map(|p| p.total),
        ));
        let fired = match self.new_job_first_tick {
            Some(first) => format!(
                "first tick {} ms after the save (expected {} ms)",
                first - self.new_job_saved_ms,
                self.new_job_expected_tick - self.new_job_saved_ms
            ),
            None => self
                .new_job_save_error
                .clone()
                .unwrap_or_else(|| "never ran within 30 s".into()),
        };
        t.push(Target::new(
            "a job saved now fires on its first tick",
            fired,
            self.new_job_first_tick
                .is_some_and(|first| first <= self.new_job_expected_tick),
        ));
        t
    }

    pub fn figures_markdown(&self) -> String {
        let mut out = String::from("| figure | value |\n|---|---|\n");
        let mut row = |k: &str, v: String| {
            let _ = writeln!(out, "| {k} | {v} |");
        };
        if let Some(p) = &self.params {
            row(
                "jobs",
                format!(
                    "{} in etcd: {} every second, {} hourly (`S M * * * * *`, spread over the hour)",
                    p.total,
                    p.per_second,
                    p.total - p.per_second
                ),
            );
            row(
                "writing them (batched txns of 100 puts)",
                format!(
                    "{:.1} s ({:.0} jobs/s)",
                    self.put_seconds,
                    p.total as f64 / self.put_seconds.max(1e-9)
                ),
            );
        }
        let secs = |s: Option<f64>| s.map(|s| format!("{s:.2} s")).unwrap_or("n/a".into());
        row(
            "worker start → first record in MongoDB / its startTime",
            format!(
                "{} / {}",
                secs(self.first_record_seen_s),
                secs(self.first_record_start_s)
            ),
        );
        let kib = |k: Option<u64>| {
            k.map(|k| format!("{:.0} MiB", mib(k)))
                .unwrap_or("n/a".into())
        };
        row(
            "worker RSS 30 s after its start / peak sampled / VmHWM",
            format!(
                "{} / {} / {}",
                kib(self.worker_rss_kib),
                kib(self.worker_peak_rss_kib),
                kib(self.worker_hwm_kib)
            ),
        );
        row(
            "ticks due in 10 s of steady state: exactly one successful run / no record / one record not a run / duplicated",
            format!(
                "{}: {} / {} / {} / {} (records: {})",
                self.steady_due,
                self.steady_ok,
                self.steady_unrecorded,
                self.steady_not_run,
                self.steady_duplicated,
                join_counts(&self.steady_by_status)
            ),
        );
        for page in &self.pages {
            row(
                &format!("`GET /api/v1/jobs` {}", page.kind),
                format!(
                    "{} requests, {} failed; {}",
                    page.requests,
                    page.failures,
                    describe_dist(&page.latency_ms, "ms")
                ),
            );
        }
        row(
            "`after=` cursor honoured",
            match self.after_honoured {
                Some(true) => "yes".into(),
                Some(false) => "no (the answer did not start after the cursor)".into(),
                None => "never answered".into(),
            },
        );
        row(
            "`GET /job/list`",
            format!(
                "{}, {} bytes, {:.2} s, {} jobs{}",
                self.job_list_status
                    .map(|s| format!("HTTP {s}"))
                    .unwrap_or_else(|| "no answer".into()),
                self.job_list_bytes,
                self.job_list_seconds,
                self.job_list_jobs
                    .map(|n| n.to_string())
                    .unwrap_or_else(|| "?".into()),
                self.job_list_error
                    .as_ref()
                    .map(|e| format!(" ({e})"))
                    .unwrap_or_default()
            ),
        );
        row(
            "new every-second job: first tick expected at the latest / first tick run / its start",
            format!(
                "save + {} ms / {} / {}",
                self.new_job_expected_tick - self.new_job_saved_ms,
                self.new_job_first_tick
                    .map(|t| format!("save + {} ms", t - self.new_job_saved_ms))
                    .unwrap_or_else(|| "none".into()),
                self.new_job_first_start
                    .map(|t| format!("save + {} ms", t - self.new_job_saved_ms))
                    .unwrap_or_else(|| "none".into())
            ),
        );
        row(
            "/worker/list polls lacking the worker (from 15 s after its start)",
            format!(
                "{} of {}",
                self.registration_lacking, self.registration_polls
            ),
        );
        if let Some(dir) = &self.log_dir {
            row("logs", format!("`{}`", display_path(dir)));
        }
        out
    }
}

fn hourly_cron(index: usize) -> String {
    format!("{} {} * * * * *", index % 60, (index / 60) % 60)
}

/// Runs the many-jobs scenario.
pub async fn run_jobs(p: &JobsParams) -> anyhow::Result<JobsReport> {
    let mut cluster = start_cluster("bench_jobs", p.keep_logs_under.as_deref()).await?;
    let result = jobs_on(&mut cluster, p).await;
    let kept = finish_cluster(cluster, p.keep_logs_under.is_some());
    match result {
        Ok(mut report) => {
            report.log_dir = kept;
            Ok(report)
        }
        Err(e) => Err(match kept {
            Some(dir) => e.context(format!("logs kept in {}", dir.display())),
            None => e,
        }),
    }
}

async fn jobs_on(cluster: &mut Cluster, p: &JobsParams) -> anyhow::Result<JobsReport> {
    let mut report = JobsReport {
        params: Some(p.clone()),
        ..JobsReport::default()
    };
    let per_second = p.per_second.min(p.total);
    let names: Vec<String> = (0..p.total).map(|i| format!("bench-{i:06}")).collect();
    let specs: Vec<JobSpec> = names
        .iter()
        .enumerate()
        .map(|(i, name)| {
            let cron = if i < per_second {
                "* * * * * * *".to_string()
            } else {
                hourly_cron(i)
            };
            JobSpec::shell(name, ":", &cron)
        })
        .collect();
    let started = Instant::now();
    put_jobs(cluster, &specs).await?;
    report.put_seconds = started.elapsed().as_secs_f64();

    let runs = cluster.runs::<Document>().await;
    let worker_started_ms = now_ms();
    let worker_started = Instant::now();
    cluster.start_worker("w1", WorkerOptions::default())?;
    let worker_pid = cluster.workers["w1"].pid();
    let http = http_client(Duration::from_secs(10))?;
    let (stop, stopped) = watch::channel(false);
    let fleet_task = tokio::spawn(watch_fleet(
        http.clone(),
        cluster.manager_url.clone(),
        vec!["w1".to_string()],
        vec![("worker w1".to_string(), worker_pid)],
        worker_started_ms + 15_000,
        stopped,
    ));

    while worker_started.elapsed() < Duration::from_secs(120) {
        if runs.count_documents(doc! {}).await? > 0 {
            report.first_record_seen_s = Some(worker_started.elapsed().as_secs_f64());
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    if report.first_record_seen_s.is_some() {
        if let Some(first) = runs.find_one(doc! {}).sort(doc! {"startTime": 1}).await? {
            report.first_record_start_s =
                Some((crate::int_field(&first, "startTime") - worker_started_ms) as f64 / 1000.0);
        }
    }
    sleep_until_ms(worker_started_ms + 30_000).await;
    report.worker_rss_kib = proc_status_kib(worker_pid, "VmRSS");

    // Steady state: every tick due in 10 s, against its records.
    let from = ceil_second(now_ms());
    let to = from + 10_000;
    let mut due: HashMap<(String, i64), (usize, usize)> = HashMap::new();
    let mut slots: HashMap<(usize, usize), Vec<usize>> = HashMap::new();
    for i in per_second..p.total {
        slots.entry((i % 60, (i / 60) % 60)).or_default().push(i);
    }
    let mut t = from;
    while t < to {
        for name in &names[..per_second] {
            due.insert((name.clone(), t), (0, 0));
        }
        let (second, minute) = (((t / 1000) % 60) as usize, ((t / 60_000) % 60) as usize);
        for &i in slots.get(&(second, minute)).into_iter().flatten() {
            due.insert((names[i].clone(), t), (0, 0));
        }
        t += 1000;
    }
    sleep_until_ms(to + 5_000).await;
    let mut cursor = runs
        .find(doc! {"planTime": {"$gte": from, "$lt": to}})
        .projection(doc! {"jobName": 1, "planTime": 1, "status": 1})
        .await?;
    while let Some(d) = cursor.try_next().await? {
        let status = d.get_str("status").unwrap_or("?").to_string();
        *report.steady_by_status.entry(status.clone()).or_default() += 1;
        let key = (
            d.get_str("jobName").unwrap_or_default().to_string(),
            crate::int_field(&d, "planTime"),
        );
        if let Some(cell) = due.get_mut(&key) {
            cell.0 += 1;
            if status == "succeeded" {
                cell.1 += 1;
            }
        }
    }
    report.steady_due = due.len();
    for (n, ok) in due.values() {
        match (n, ok) {
            (0, _) => report.steady_unrecorded += 1,
            (1, 1) => report.steady_ok += 1,
            (1, _) => report.steady_not_run += 1,
            _ => report.steady_duplicated += 1,
        }
    }

    time_job_pages(cluster, &http, p, &mut report).await;

    let started = Instant::now();
    match http_client(Duration::from_secs(120))?
        .get(format!("{}/job/list", cluster.manager_url))
        .send()
        .await
    {
        Ok(resp) => {
            report.job_list_status = Some(resp.status().as_u16());
            match resp.bytes().await {
                Ok(body) => {
                    report.job_list_bytes = body.len();
                    report.job_list_jobs = serde_json::from_slice::<serde_json::Value>(&body)
                        .ok()
                        .and_then(|v| v["data"].as_array().map(Vec::len));
                }
                Err(e) => report.job_list_error = Some(format!("reading the body: {e}")),
            }
        }
        Err(e) => report.job_list_error = Some(failure_kind(e)),
    }
    report.job_list_seconds = started.elapsed().as_secs_f64();

    let job = JobSpec::shell("bench-new", ":", "* * * * * * *");
    let form = [("job", serde_json::to_string(&job)?)];
    match http
        .post(format!("{}/job/save", cluster.manager_url))
        .form(&form)
        .send()
        .await
    {
        Ok(resp) => {
            let v: serde_json::Value = resp.json().await.unwrap_or_default();
            if v["errno"].as_i64() != Some(0) {
                report.new_job_save_error = Some(format!("save refused: {}", v["msg"]));
            }
        }
        Err(e) => report.new_job_save_error = Some(format!("save failed: {}", failure_kind(e))),
    }
    report.new_job_saved_ms = now_ms();
    report.new_job_expected_tick = ceil_second(report.new_job_saved_ms + 1000);
    if report.new_job_save_error.is_none() {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            let first = runs
                .find_one(doc! {"jobName": "bench-new"})
                .sort(doc! {"planTime": 1})
                .await?;
            if let Some(first) = first {
                report.new_job_first_tick = Some(crate::int_field(&first, "planTime"));
                report.new_job_first_start = Some(crate::int_field(&first, "startTime"));
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    report.worker_hwm_kib = proc_status_kib(worker_pid, "VmHWM");
    stop.send_replace(true);
    let fleet = fleet_task.await?;
    report.worker_peak_rss_kib = fleet.peak_rss_kib.get("worker w1").copied();
    report.registration_lacking = fleet.list_lacking;
    report.registration_polls = fleet.list_polls;
    Ok(report)
}

/// A small xorshift generator: random pages without a dependency.
struct XorShift(u64);

impl XorShift {
    fn next_below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n.max(1)
    }
}

/// Times `GET /api/v1/jobs`: the first page, random `page=`, and `after=`
/// cursor pages, interleaved.
async fn time_job_pages(
    cluster: &Cluster,
    http: &reqwest::Client,
    p: &JobsParams,
    report: &mut JobsReport,
) {
    const PAGE_SIZE: u64 = 50;
    let kinds = ["first page", "random page=", "after= cursor"];
    let mut latencies: Vec<Vec<f64>> = vec![Vec::new(); kinds.len()];
    let mut timings: Vec<PageTiming> = kinds
        .iter()
        .map(|k| PageTiming {
            kind: k.to_string(),
            ..PageTiming::default()
        })
        .collect();
    let pages = (p.total as u64).div_ceil(PAGE_SIZE);
    let mut rng = XorShift(now_us() as u64 | 1);
    let mut cursor: Option<String> = None;
    let url = format!("{}/api/v1/jobs", cluster.manager_url);
    // A manager that takes seconds a page still gets a verdict in minutes.
    let budget = Instant::now() + Duration::from_secs(120);
    for i in 0..p.api_requests {
        if Instant::now() >= budget {
            break;
        }
        let kind = i % kinds.len();
        let mut query = vec![("pageSize".to_string(), PAGE_SIZE.to_string())];
        match kind {
            1 => query.push(("page".into(), (1 + rng.next_below(pages)).to_string())),
            2 => {
                if let Some(after) = &cursor {
                    query.push(("after".into(), after.clone()));
                }
            }
            _ => {}
        }
        let started = Instant::now();
        let answer = match http.get(&url).query(&query).send().await {
            Ok(resp) => {
                let status = resp.status();
                match resp.json::<serde_json::Value>().await {
                    Ok(v) if status.is_success() => Ok(v),
                    Ok(_) => Err(format!("HTTP {}", status.as_u16())),
                    Err(_) => Err(format!("HTTP {} (unreadable body)", status.as_u16())),
                }
            }
            Err(e) => Err(failure_kind(e)),
        };
        let elapsed = started.elapsed().as_secs_f64() * 1000.0;
        let timing = &mut timings[kind];
        timing.requests += 1;
        match answer {
            Ok(v) => {
                latencies[kind].push(elapsed);
                *timing.statuses.entry("HTTP 200".into()).or_default() += 1;
                let items = v["items"].as_array().cloned().unwrap_or_default();
                let first = items.first().and_then(|j| j["name"].as_str());
                let last = items.last().and_then(|j| j["name"].as_str());
                if kind == 2 {
                    if let (Some(after), Some(first)) = (&cursor, first) {
                        let honoured = first > after.as_str();
                        report.after_honoured =
                            Some(report.after_honoured.unwrap_or(true) && honoured);
                    }
                }
                if kind == 2 || (kind == 0 && cursor.is_none()) {
                    // Walk on from this page; start over after the last.
                    cursor = last.map(str::to_string);
                }
            }
            Err(status) => {
                timing.failures += 1;
                *timing.statuses.entry(status).or_default() += 1;
            }
        }
    }
    for (timing, lat) in timings.iter_mut().zip(latencies) {
        timing.latency_ms = Dist::of(lat);
    }
    report.pages = timings;
}

// ---------------------------------------------------------------- the physical floor

/// Releasing N processes that are already started and waiting.
#[derive(Debug, Clone, Default)]
pub struct FloorReport {
    pub n: usize,
    /// Threads that release them, each a share, all at the same instant
    /// (as the workers of a ticks scenario do).
    pub releasers: usize,
    /// `LC_ALL` of the shells.
    pub locale: String,
    /// Starting the N processes.
    pub spawn_seconds: f64,
    /// Writing the N release bytes.
    pub release_ms: f64,
    /// Command clock − release instant, ms.
    pub lag_ms: Option<Dist>,
    pub lines: usize,
    pub failed: usize,
    /// CPU each process took from its start to its exit (user + system,
    /// from this process's waited-for children's times), ms.
    pub cpu_per_process_ms: Option<f64>,
}

impl FloorReport {
    pub fn figures_markdown(&self) -> String {
        let mut out = String::from("| figure | value |\n|---|---|\n");
        let _ = writeln!(
            out,
            "| processes | {} `bash -c 'IFS= read -r _g \\|\\| exit 125; echo \"$EPOCHREALTIME\" >> FILE'`, stdin a pipe each, `LC_ALL={}` ({}) |",
            self.n,
            self.locale,
            locale_source(&self.locale)
        );
        let _ = writeln!(
            out,
            "| released by | {} thread{}, each writing to its share of the pipes in turn, all from the same instant |",
            self.releasers,
            if self.releasers == 1 { "" } else { "s" }
        );
        let _ = writeln!(
            out,
            "| starting them | {:.2} s ({:.0}/s) |",
            self.spawn_seconds,
            self.n as f64 / self.spawn_seconds.max(1e-9)
        );
        let _ = writeln!(
            out,
            "| writing the N newlines (1 s later; the slowest releaser) | {:.1} ms |",
            self.release_ms
        );
        let _ = writeln!(
            out,
            "| command clock − release instant | {} |",
            describe_dist(&self.lag_ms, "ms")
        );
        let _ = writeln!(
            out,
            "| lines written / processes failed | {} / {} |",
            self.lines, self.failed
        );
        if let Some(cpu) = self.cpu_per_process_ms {
            let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
            let _ = writeln!(
                out,
                "| CPU per process, start to exit (user + system) | {cpu:.2} ms: at 1000 runs/s, {:.0} % of this machine's {cores} cores for the commands alone |",
                // ms per run × 1000 runs/s = ms per ms, i.e. cores.
                cpu / cores as f64 * 100.0
            );
        }
        out
    }
}

/// The locale a worker started from here hands its shell runs (it passes
/// `LC_ALL`, `LC_CTYPE` and `LANG` on), said with where glibc loads it from:
/// a locale out of the locale archive is one mapping, one from its own
/// directory is a dozen files opened and mapped by every shell (about
/// 0.2 ms of CPU a run on the machines of these sections).
fn describe_shell_locale() -> String {
    let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    match var("LC_ALL").or_else(|| var("LANG")) {
        Some(l) => format!("{l} ({})", locale_source(&l)),
        None => "C (built in)".into(),
    }
}

/// Where glibc finds `locale`: built in, the locale archive, or a
/// directory of its own under /usr/lib/locale.
fn locale_source(locale: &str) -> &'static str {
    if locale == "C" || locale == "POSIX" {
        return "built in";
    }
    let listed = Command::new("localedef")
        .arg("--list-archive")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned());
    let wanted = normalize_locale_name(locale);
    match listed {
        Some(names)
            if names
                .lines()
                .any(|n| normalize_locale_name(n.trim()) == wanted) =>
        {
            "from the locale archive"
        }
        _ => "from its own files, not the locale archive",
    }
}

/// glibc's spelling of a locale's codeset: `C.UTF-8` is `C.utf8`,
/// `en_US.8859-1` is `en_US.iso88591`.
fn normalize_locale_name(name: &str) -> String {
    let (base, modifier) = match name.split_once('@') {
        Some((b, m)) => (b, Some(m)),
        None => (name, None),
    };
    let mut out = match base.split_once('.') {
        Some((lang, codeset)) => {
            let codeset: String = codeset
                .chars()
                .filter(|c| c.is_ascii_alphanumeric())
                .map(|c| c.to_ascii_lowercase())
                .collect();
            // As glibc's _nl_normalize_codeset: digits only read as ISO.
            let iso = if codeset.chars().all(|c| c.is_ascii_digit()) {
                "iso"
            } else {
                ""
            };
            format!("{lang}.{iso}{codeset}")
        }
        None => base.to_string(),
    };
    if let Some(m) = modifier {
        out.push('@');
        out.push_str(m);
    }
    out
}

/// Starts `n` bash processes blocked on a read of their stdin, waits 1 s,
/// releases them all at once from `releasers` threads (a share each) and
/// measures when each command ran by its own clock. The shells run with
/// `LC_ALL=locale`. Blocking; run it off the async runtime.
pub fn run_floor(n: usize, releasers: usize, locale: &str) -> anyhow::Result<FloorReport> {
    let releasers = releasers.clamp(1, n.max(1));
    raise_fd_limit(n as u64 * 2 + 256);
    let dir = tempfile::Builder::new()
        .prefix("gdts-bench-floor-")
        .tempdir()?;
    let file = dir.path().join("clock.log");
    let script = format!(
        "IFS= read -r _g || exit 125; echo \"$EPOCHREALTIME\" >> '{}'",
        file.display()
    );
    let children_cpu = || proc_cpu_seconds(std::process::id() as i32).map(|(_, c)| c);
    let cpu_before = children_cpu();
    let started = Instant::now();
    let mut children = Vec::with_capacity(n);
    for _ in 0..n {
        let child = Command::new("bash")
            .arg("-c")
            .arg(&script)
            .env("LC_ALL", locale)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        match child {
            Ok(c) => children.push(c),
            Err(e) => {
                // Release the ones started, so none is left waiting.
                for mut c in children {
                    drop(c.stdin.take());
                    let _ = c.wait();
                }
                bail!("starting bash process {}: {e}", n);
            }
        }
    }
    let spawn_seconds = started.elapsed().as_secs_f64();
    let mut gates: Vec<Vec<std::process::ChildStdin>> =
        (0..releasers).map(|_| Vec::new()).collect();
    for (i, child) in children.iter_mut().enumerate() {
        gates[i % releasers].extend(child.stdin.take());
    }
    std::thread::sleep(Duration::from_secs(1));
    // Held by this thread until every releaser is started and has said so,
    // then let go at once. A releaser that cannot be started drops its
    // share of the pipes (its shells read end-of-file and exit 125): nobody
    // is left waiting.
    let gate = std::sync::RwLock::new(());
    let held = gate.write().unwrap_or_else(|e| e.into_inner());
    let (ready, all_ready) = std::sync::mpsc::channel::<()>();
    let (release_us, release_ms, not_started) = std::thread::scope(|scope| {
        let mut not_started = None;
        let mut threads = Vec::with_capacity(releasers);
        for share in gates {
            let gate = &gate;
            let ready = ready.clone();
            let spawned = std::thread::Builder::new().spawn_scoped(scope, move || {
                let _ = ready.send(());
                drop(gate.read());
                let writing = Instant::now();
                for mut stdin in share {
                    let _ = stdin.write_all(b"\n");
                }
                writing.elapsed().as_secs_f64() * 1000.0
            });
            match spawned {
                Ok(t) => threads.push(t),
                Err(e) => not_started = Some(e),
            }
        }
        // Every releaser running, at the gate, before it opens.
        for _ in 0..threads.len() {
            let _ = all_ready.recv();
        }
        let release_us = now_us();
        drop(held);
        let slowest = threads
            .into_iter()
            .filter_map(|t| t.join().ok())
            .fold(0.0, f64::max);
        (release_us, slowest, not_started)
    });
    let mut failed = 0;
    for mut child in children {
        if !child.wait().map(|s| s.success()).unwrap_or(false) {
            failed += 1;
        }
    }
    if let Some(e) = not_started {
        bail!("could not start a releasing thread ({e}); its share of the shells was let go unreleased");
    }
    let cpu_per_process_ms = match (cpu_before, children_cpu()) {
        (Some(before), Some(after)) if n > 0 => Some((after - before) * 1000.0 / n as f64),
        _ => None,
    };
    let text = std::fs::read_to_string(&file).unwrap_or_default();
    let lags: Vec<f64> = text
        .lines()
        .filter_map(|l| parse_epoch_us(l.trim()))
        .map(|at| (at - release_us) as f64 / 1000.0)
        .collect();
    Ok(FloorReport {
        n,
        releasers,
        locale: locale.to_string(),
        spawn_seconds,
        release_ms,
        lines: lags.len(),
        lag_ms: Dist::of(lags),
        failed,
        cpu_per_process_ms,
    })
}

// ---------------------------------------------------------------- the report file

/// Where and how a benchmark ran, for the head of its section.
#[derive(Debug, Clone)]
pub struct RunInfo {
    pub date: String,
    pub commit: String,
    pub machine: String,
    /// The locale the workers' shell runs get (see
    /// [`describe_shell_locale`]); `None` where the scenario sets its own.
    pub shell_locale: Option<String>,
    pub command: String,
    pub etcd: String,
}

impl RunInfo {
    /// Collects the machine, the date and the commit; `command` is how the
    /// benchmark was started.
    pub fn collect(command: &str) -> RunInfo {
        let root = workspace_root();
        let git = |args: &[&str]| {
            Command::new("git")
                .arg("--no-optional-locks")
                .args(args)
                .current_dir(&root)
                .output()
                .ok()
                .filter(|o| o.status.success())
                .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        };
        let commit = match git(&["rev-parse", "--short=12", "HEAD"]) {
            Some(c) => {
                let dirty = git(&["status", "--porcelain", "--untracked-files=no"])
                    .is_some_and(|s| !s.is_empty());
                if dirty {
                    format!("`{c}` with uncommitted changes")
                } else {
                    format!("`{c}`")
                }
            }
            None => "unknown".into(),
        };
        let cpu = std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("model name")?.split_once(':'))
                    .map(|(_, m)| m.trim().to_string())
            })
            .unwrap_or_else(|| "unknown CPU".into());
        let cores = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0);
        let ram_gib = proc_meminfo_kib("MemTotal").map(|k| k as f64 / 1048576.0);
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|s| s.trim().to_string())
            .unwrap_or_else(|_| "?".into());
        let etcd = Command::new(std::env::var("GDTS_ETCD_BIN").unwrap_or_else(|_| "etcd".into()))
            .arg("--version")
            .output()
            .ok()
            .and_then(|o| {
                String::from_utf8_lossy(&o.stdout)
                    .lines()
                    .next()
                    .map(|l| l.trim().replace("etcd Version:", "etcd"))
            })
            .unwrap_or_else(|| "etcd ?".into());
        RunInfo {
            date: chrono::Utc::now().format("%Y-%m-%d %H:%M UTC").to_string(),
            commit,
            machine: format!(
                "{cpu}, {cores} cores, {} RAM, Linux {kernel}",
                ram_gib
                    .map(|g| format!("{g:.1} GiB"))
                    .unwrap_or_else(|| "? GiB".into()),
            ),
            shell_locale: Some(describe_shell_locale()),
            command: command.to_string(),
            etcd,
        }
    }

    pub fn markdown(&self) -> String {
        let locale = match &self.shell_locale {
            Some(l) => format!(", the workers' shells' locale {l}"),
            None => String::new(),
        };
        format!(
            "Run {} on commit {}; {}{locale}; {} (`{}`).\n\n```sh\n{}\n```\n",
            self.date,
            self.commit,
            self.machine,
            self.etcd,
            ETCD_FLAGS.join(" "),
            self.command
        )
    }
}

fn proc_meminfo_kib(field: &str) -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    text.lines().find_map(|l| {
        l.strip_prefix(field)?
            .strip_prefix(':')?
            .split_whitespace()
            .next()?
            .parse()
            .ok()
    })
}

fn section_markers(id: &str) -> (String, String) {
    (
        format!("<!-- bench:{id}:begin -->"),
        format!("<!-- bench:{id}:end -->"),
    )
}

/// Replaces section `id` of the Markdown file `doc` with `body` (between its
/// markers), or appends it when the file has no such section yet.
pub fn write_section(doc: &Path, id: &str, body: &str) -> anyhow::Result<()> {
    let (begin, end) = section_markers(id);
    let text = match std::fs::read_to_string(doc) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::from("# Benchmarks\n"),
        Err(e) => return Err(e).with_context(|| format!("reading {}", doc.display())),
    };
    let section = format!("{begin}\n{}\n{end}", body.trim_end());
    let updated = match (text.find(&begin), text.find(&end)) {
        (Some(b), Some(e)) if e > b => {
            format!("{}{section}{}", &text[..b], &text[e + end.len()..])
        }
        _ => format!("{}\n\n{section}\n", text.trim_end()),
    };
    if let Some(parent) = doc.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(doc, updated).with_context(|| format!("writing {}", doc.display()))
}

/// Runs `scripts/bench-plot.py KIND CSV PNG` with the project's Python
/// (`GDTS_BENCH_PYTHON`, default `.venv/bin/python`, where `make bench`
/// installs matplotlib). Returns whether the PNG was written.
pub fn plot(kind: &str, csv: &Path, png: &Path, title: &str) -> bool {
    let root = workspace_root();
    let python = std::env::var("GDTS_BENCH_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|_| root.join(".venv/bin/python"));
    let out = Command::new(&python)
        .arg(root.join("scripts/bench-plot.py"))
        .args([kind])
        .arg(csv)
        .arg(png)
        .arg(title)
        .output();
    match out {
        Ok(o) if o.status.success() => true,
        Ok(o) => {
            eprintln!(
                "plot {kind} failed (run scripts/bench-deps.sh): {}",
                String::from_utf8_lossy(&o.stderr).trim()
            );
            false
        }
        Err(e) => {
            eprintln!("plot {kind}: cannot run {} ({e})", python.display());
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locale_names_are_spelled_as_glibc_files_them() {
        assert_eq!(normalize_locale_name("C.UTF-8"), "C.utf8");
        assert_eq!(normalize_locale_name("en_US.ISO-8859-1"), "en_US.iso88591");
        assert_eq!(normalize_locale_name("de_DE.UTF-8@euro"), "de_DE.utf8@euro");
        assert_eq!(normalize_locale_name("C.utf8"), "C.utf8");
        assert_eq!(normalize_locale_name("POSIX"), "POSIX");
        assert_eq!(normalize_locale_name("en_US.8859-1"), "en_US.iso88591");
        assert_eq!(locale_source("C"), "built in");
    }

    #[test]
    fn metrics_are_summed_by_name_and_label() {
        let m = Metrics::parse(
            "# HELP x y\n\
             grpc_server_msg_received_total{grpc_method=\"Txn\",grpc_service=\"etcdserverpb.KV\",grpc_type=\"unary\"} 10\n\
             grpc_server_msg_received_total{grpc_method=\"Range\",grpc_service=\"etcdserverpb.KV\",grpc_type=\"unary\"} 5\n\
             grpc_server_msg_received_total{grpc_method=\"Txn\",grpc_service=\"etcdserverpb.KV\",grpc_type=\"x\"} 1\n\
             etcd_debugging_mvcc_current_revision 42\n\
             weird{a=\"q\\\"uote\"} 1e3\n",
        );
        assert_eq!(m.sum("grpc_server_msg_received_total"), 16.0);
        assert_eq!(m.sum("etcd_debugging_mvcc_current_revision"), 42.0);
        assert_eq!(m.sum("weird"), 1000.0);
        let by = m.sum_by(
            "grpc_server_msg_received_total",
            &["grpc_service", "grpc_method"],
        );
        assert_eq!(by["etcdserverpb.KV/Txn"], 11.0);
        assert_eq!(by["etcdserverpb.KV/Range"], 5.0);

        let later = Metrics::parse(
            "grpc_server_msg_received_total{grpc_method=\"Txn\",grpc_service=\"etcdserverpb.KV\"} 31\n\
             grpc_server_msg_received_total{grpc_method=\"Range\",grpc_service=\"etcdserverpb.KV\"} 5\n",
        );
        let e = EtcdFigures::between(&m, &later);
        assert_eq!(e.requests, 20.0);
        assert_eq!(e.requests_by_method.len(), 1, "unchanged methods left out");
        assert_eq!(e.requests_by_method["KV/Txn"], 20.0);
    }

    #[test]
    fn epoch_times_parse_with_either_mark_and_any_precision() {
        assert_eq!(
            parse_epoch_us("1764230000.123456"),
            Some(1_764_230_000_123_456)
        );
        assert_eq!(parse_epoch_us("1764230000,5"), Some(1_764_230_000_500_000));
        assert_eq!(
            parse_epoch_us("1764230000.123456789"),
            Some(1_764_230_000_123_456)
        );
        assert_eq!(parse_epoch_us("1764230000"), Some(1_764_230_000_000_000));
        assert_eq!(parse_epoch_us("soon"), None);
    }

    fn record(job: &str, tick: i64, status: &str, err: &str) -> Document {
        doc! {"jobName": job, "planTime": tick, "startTime": tick + 7, "status": status,
        "err": err, "worker": "w1"}
    }

    #[test]
    fn a_tally_tells_runs_from_missing_duplicated_and_missed_ticks() {
        let jobs = vec!["a".to_string(), "b".to_string()];
        let mut t = TickTally::new(&jobs, 0, 10_000, 13_000);
        for d in [
            record("a", 10_000, "succeeded", ""),
            record("a", 11_000, "succeeded", ""),
            record("a", 11_000, "succeeded", ""),
            record("a", 12_000, "missed", "owner w2 gone at 11999 ms"),
            record("b", 10_000, "succeeded", ""),
            record("b", 12_000, "succeeded", ""),
            record("b", 12_500, "succeeded", ""),
            record("c", 12_000, "succeeded", ""),
        ] {
            t.add(&d);
        }
        let (s, lags, _) = t.finish();
        assert_eq!(s.expected, 6);
        assert_eq!(s.ok, 3);
        assert_eq!(s.duplicated, 1);
        assert_eq!(s.unrecorded, 1, "b@11000");
        assert_eq!(s.one_other, 1, "a@12000 missed");
        assert_eq!(s.missed_ticks(), 2);
        assert_eq!(s.stray_records, 2, "off the second, unknown job");
        assert_eq!(s.runs(), 5);
        assert_eq!(s.missed_reasons["missed: owner wN gone at N ms"], 1);
        assert!(lags.iter().all(|l| *l == 7.0));
    }

    #[test]
    fn a_forbid_skip_counts_as_after_the_end_when_the_run_before_had_ended() {
        let jobs = vec!["f".to_string(), "g".to_string()];
        let mut t = TickTally::new(&jobs, 1, 10_000, 15_000);
        let run = |tick: i64, end: i64| {
            let mut d = record("f", tick, "succeeded", "");
            d.insert("endTime", end);
            d
        };
        for d in [
            run(10_000, 11_005),
            // Still running at 11_000: a real overlap.
            record("f", 11_000, "skipped", "still in progress"),
            // It ended at 11_005: skipping 12_000 was not needed.
            record("f", 12_000, "skipped", "still in progress"),
            run(13_000, 13_950),
            record("f", 14_000, "skipped", "still in progress"),
            // Not a forbid job.
            record("g", 11_000, "skipped", "still in progress"),
        ] {
            t.add(&d);
        }
        let (s, _, _) = t.finish();
        assert_eq!(s.skipped_after_end, 2, "12000 and 14000");
    }

    #[test]
    fn the_clock_file_gives_lags_and_duplicates() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("clock.log");
        std::fs::write(
            &file,
            "a 10000 10.012000\na 10000 10.013000\nb 0 11.020000\nb 11000 garbage\nz 10000 10.0\n",
        )
        .unwrap();
        let jobs = vec!["a".to_string(), "b".to_string()];
        let (s, lags, _) = tally_clock_file(&file, &jobs, 0, 10_000, 12_000).unwrap();
        assert_eq!((s.lines, s.with_plan_time, s.duplicated), (3, 2, 1));
        assert_eq!(s.unreadable, 2);
        assert_eq!(lags, vec![12.0, 13.0, 20.0]);
    }

    #[test]
    fn a_section_is_replaced_between_its_markers_or_appended() {
        let dir = tempfile::tempdir().unwrap();
        let doc = dir.path().join("b.md");
        std::fs::write(
            &doc,
            "# B\n\n<!-- bench:one:begin -->\nold\n<!-- bench:one:end -->\n\ntail\n",
        )
        .unwrap();
        write_section(&doc, "one", "new\n").unwrap();
        write_section(&doc, "two", "second").unwrap();
        write_section(&doc, "one", "newer").unwrap();
        let text = std::fs::read_to_string(&doc).unwrap();
        assert_eq!(
            text,
            "# B\n\n<!-- bench:one:begin -->\nnewer\n<!-- bench:one:end -->\n\ntail\n\n\
             <!-- bench:two:begin -->\nsecond\n<!-- bench:two:end -->\n"
        );
    }

    #[test]
    fn flatness_compares_the_last_third_with_the_middle() {
        let samples: Vec<SoakSample> = (0..9)
            .map(|i| SoakSample {
                at_s: i as f64,
                rss_kib: BTreeMap::from([("w".to_string(), 1000 + i * 100)]),
                db_bytes: 5.0,
                db_in_use_bytes: 5.0,
                revision: 0.0,
            })
            .collect();
        let f = soak_flatness(&samples);
        let rss = f.iter().find(|f| f.series == "RSS w").unwrap();
        assert_eq!((rss.middle, rss.last), (1400.0, 1700.0));
        assert!(!rss.flat);
        assert!(f
            .iter()
            .filter(|f| f.series.starts_with("etcd"))
            .all(|f| f.flat));
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let d = Dist::of((1..=100).map(f64::from).collect()).unwrap();
        assert_eq!(
            (d.p50, d.p90, d.p99, d.max, d.n),
            (50.0, 90.0, 99.0, 100.0, 100)
        );
        assert_eq!(Dist::of(Vec::new()), None);
    }
}
