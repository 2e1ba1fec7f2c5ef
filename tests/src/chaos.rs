//! The chaos scenario (`make chaos`; a short variant runs in `make test`,
//! `tests/tests/chaos_short.rs`): every-second jobs on three workers and a
//! three-member etcd while, on a schedule, a worker is killed with -9 and
//! started again, an etcd member is stopped and started, the etcd leader is
//! killed, one worker is cut off from etcd, MongoDB is stopped, and the
//! workers' clocks are 2 s apart each way. It reports every tick's fate
//! against the windows in which the protocol allows a tick to go unrun, every
//! claim without a record, and how long the API and its worker list were
//! unavailable or wrong.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::TryStreamExt;
use gdts_common::job::JobSpec;
use gdts_common::keys::Keys;
use gdts_common::log_record::{LogRecord, STATUS_LOST};
use gdts_common::values::ClaimRecord;
use gdts_runtime::etcd_pages::RangePages;
use mongodb::bson::{doc, Document};

use crate::bench::{ceil_second, put_jobs};
use crate::{now_ms, Cluster, ReplyHoldProxy, WorkerOptions};

/// The scenario's sizes and times.
#[derive(Debug, Clone)]
pub struct ChaosParams {
    /// Jobs firing every second (ticks per second).
    pub jobs: usize,
    pub duration: Duration,
    /// A worker is killed with -9 (and started again) this often.
    pub kill_every: Duration,
    /// How long a (non-leader) etcd member stays stopped.
    pub member_down: Duration,
    /// How long the killed etcd leader stays down.
    pub leader_down: Duration,
    /// How long one worker is cut off from etcd.
    pub partition: Duration,
    /// How long MongoDB is stopped.
    pub mongo_down: Duration,
    /// Keep the cluster's directory (logs) under this path.
    pub keep_under: Option<std::path::PathBuf>,
}

impl ChaosParams {
    /// `make chaos`: the figures.
    pub fn full() -> Self {
        ChaosParams {
            jobs: 200,
            duration: Duration::from_secs(300),
            kill_every: Duration::from_secs(20),
            member_down: Duration::from_secs(30),
            leader_down: Duration::from_secs(15),
            partition: Duration::from_secs(30),
            mongo_down: Duration::from_secs(60),
            keep_under: None,
        }
    }

    /// The variant in `make test`: every kind of fault once, shorter.
    pub fn short() -> Self {
        ChaosParams {
            jobs: 40,
            duration: Duration::from_secs(75),
            kill_every: Duration::from_secs(25),
            member_down: Duration::from_secs(10),
            leader_down: Duration::from_secs(8),
            partition: Duration::from_secs(15),
            mongo_down: Duration::from_secs(15),
            keep_under: Some(crate::workspace_root().join("target")),
        }
    }
}

/// A fault, and the window in which ticks may go unrun because of it.
#[derive(Debug, Clone)]
pub struct Fault {
    pub at_ms: i64,
    pub what: String,
    /// Ticks in `[from, to)` without a record are put down to this fault.
    pub window: Option<(i64, i64)>,
}

#[derive(Debug, Clone, Default)]
pub struct ChaosReport {
    pub params: String,
    pub faults: Vec<Fault>,
    pub from_ms: i64,
    pub to_ms: i64,
    pub ticks_due: usize,
    /// Ticks with exactly one record that is a run (any outcome, `lost`
    /// included).
    pub ran_once: usize,
    pub duplicates: Vec<String>,
    /// Ticks recorded as not run, by reason (`missed: ...`, `skipped: ...`).
    pub not_run: BTreeMap<String, usize>,
    /// Ticks without any record, by the fault whose window holds them.
    pub unrecorded_in_windows: BTreeMap<String, usize>,
    /// Ticks without any record outside every fault's window.
    pub unrecorded_unexplained: Vec<String>,
    pub lost_records: usize,
    /// Claims seen in etcd during the run.
    pub claims_seen: usize,
    /// Claims whose run has no record (run id), after the records settled.
    pub claims_without_record: Vec<String>,
    /// The longest stretch in which `/worker/list` did not answer, ms.
    pub api_longest_down_ms: i64,
    /// The longest stretch in which `/worker/list` was wrong, ms: it lacked
    /// a worker that had run and reached etcd for longer than the lease TTL
    /// and 5 s (a restarted worker registers once its earlier life's lease
    /// expires), or listed an unknown one.
    pub list_longest_wrong_ms: i64,
    /// When that stretch began (ms) and what was wrong at its start.
    pub list_wrong_at_ms: i64,
    pub list_wrong_why: String,
    pub list_polls: usize,
}

impl ChaosReport {
    pub fn passed(&self) -> bool {
        self.duplicates.is_empty()
            && self.unrecorded_unexplained.is_empty()
            && self.claims_without_record.is_empty()
            && self.ticks_due > 0
    }

    /// The targets, for `gdts-bench --strict`.
    pub fn targets(&self) -> Vec<crate::bench::Target> {
        let t = |what: &str, n: usize| crate::bench::Target {
            what: what.into(),
            measured: n.to_string(),
            pass: n == 0,
        };
        vec![
            t("duplicate ticks = 0", self.duplicates.len()),
            t(
                "ticks without a record outside the documented windows = 0",
                self.unrecorded_unexplained.len(),
            ),
            t(
                "claims without a record = 0",
                self.claims_without_record.len(),
            ),
        ]
    }

    pub fn markdown(&self) -> String {
        let mut out = String::new();
        let verdict = if self.passed() { "PASS" } else { "FAIL" };
        out.push_str(&format!(
            "Scenario: {}. Verdict: **{verdict}**.\n\n",
            self.params
        ));
        out.push_str("| figure | value |\n|---|---|\n");
        let unrecorded: usize = self.unrecorded_in_windows.values().sum();
        let not_run: usize = self.not_run.values().sum();
        for (k, v) in [
            ("ticks due", self.ticks_due.to_string()),
            ("ticks run once (a record of a run; `lost` counts)", self.ran_once.to_string()),
            ("duplicate ticks (must be 0)", self.duplicates.len().to_string()),
            ("ticks recorded as missed or skipped", not_run.to_string()),
            ("ticks without a record, inside a fault's window", unrecorded.to_string()),
            (
                "ticks without a record outside every window (must be 0)",
                self.unrecorded_unexplained.len().to_string(),
            ),
            ("`lost` records (runs of killed workers)", self.lost_records.to_string()),
            ("claims seen", self.claims_seen.to_string()),
            (
                "claims without a record (must be 0)",
                self.claims_without_record.len().to_string(),
            ),
            (
                "longest time `/worker/list` did not answer",
                format!("{:.1} s", self.api_longest_down_ms as f64 / 1000.0),
            ),
            (
                "longest time `/worker/list` was wrong (lacked a worker up for more than the lease TTL + 5 s)",
                if self.list_longest_wrong_ms == 0 {
                    "0 s".to_string()
                } else {
                    format!(
                        "{:.1} s (from {:.1} s: {})",
                        self.list_longest_wrong_ms as f64 / 1000.0,
                        (self.list_wrong_at_ms - self.from_ms) as f64 / 1000.0,
                        self.list_wrong_why
                    )
                },
            ),
        ] {
            out.push_str(&format!("| {k} | {v} |\n"));
        }
        out.push_str("\nFaults (times from the start of the window):\n\n");
        for f in &self.faults {
            let at = (f.at_ms - self.from_ms) as f64 / 1000.0;
            let unrun = self
                .unrecorded_in_windows
                .get(&f.what)
                .copied()
                .unwrap_or(0);
            out.push_str(&format!(
                "- {at:.1} s: {} ({unrun} ticks unrecorded in its window)\n",
                f.what
            ));
        }
        if !self.not_run.is_empty() {
            out.push_str("\nTicks recorded as not run, by reason:\n\n");
            for (reason, n) in &self.not_run {
                out.push_str(&format!("- {n} × {reason}\n"));
            }
        }
        for (title, list) in [
            ("Duplicates", &self.duplicates),
            ("Unexplained unrecorded ticks", &self.unrecorded_unexplained),
            ("Claims without a record", &self.claims_without_record),
        ] {
            if !list.is_empty() {
                out.push_str(&format!(
                    "\n{title} (first 10): {}\n",
                    list.iter().take(10).cloned().collect::<Vec<_>>().join(", ")
                ));
            }
        }
        out
    }
}

/// Lease TTL of the workers (s): the windows below follow from it.
const LEASE_TTL_SECS: i64 = 6;

/// Which member of the cluster leads now (its index), if one answers.
async fn leader_index(c: &mut Cluster) -> Option<usize> {
    for (i, m) in c.etcd_members().into_iter().enumerate() {
        if !m.is_up() {
            continue;
        }
        let Ok(mut client) = etcd_client::Client::connect([m.endpoint.clone()], None).await else {
            continue;
        };
        if let Ok(Ok(status)) = tokio::time::timeout(Duration::from_secs(2), client.status()).await
        {
            let me = status.header().map(|h| h.member_id()).unwrap_or_default();
            if status.leader() != 0 && status.leader() == me {
                return Some(i);
            }
        }
    }
    None
}

/// A worker process as the scenario drives it, for judging the list.
#[derive(Debug, Clone, Copy)]
struct Life {
    /// When this life started (ms).
    since: i64,
    /// Cut off from etcd (and for a moment after): it may or may not be listed.
    cut_off: bool,
}

/// Whether `/worker/list` says something wrong at `now`: it lacks a worker
/// whose process has run, reaching etcd, for longer than a registration
/// takes (its earlier life's lease must expire first: the TTL, and a few
/// seconds), or lists an unknown one. (A killed worker is listed until its
/// lease expires, and restarted at once under the same id: being listed
/// across a restart is right.)
fn list_is_wrong(
    listed: &BTreeSet<String>,
    lives: &HashMap<String, Life>,
    now: i64,
) -> Option<String> {
    let settle = LEASE_TTL_SECS * 1000 + 5000;
    if let Some(w) = listed.iter().find(|w| !lives.contains_key(*w)) {
        return Some(format!("listed the unknown {w}"));
    }
    lives
        .iter()
        .find(|(w, l)| !l.cut_off && now > l.since + settle && !listed.contains(*w))
        .map(|(w, l)| {
            format!(
                "lacked {w}, up since {:.1} s before",
                (now - l.since) as f64 / 1000.0
            )
        })
}

/// Polls `/worker/list` every 250 ms until `stop`: the longest stretch it
/// did not answer and the longest it answered wrong ([`list_is_wrong`]).
async fn watch_list(
    url: String,
    lives: Arc<Mutex<HashMap<String, Life>>>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> (i64, (i64, i64, String), usize) {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
        .expect("an HTTP client");
    let (mut down_since, mut wrong_since): (Option<i64>, Option<(i64, String)>) = (None, None);
    let (mut longest_down, mut longest_wrong, mut polls) =
        (0i64, (0i64, 0i64, String::new()), 0usize);
    let mut every = tokio::time::interval(Duration::from_millis(250));
    loop {
        tokio::select! {
            _ = every.tick() => {}
            _ = stop.changed() => break,
        }
        polls += 1;
        let listed: Option<BTreeSet<String>> = async {
            let v: serde_json::Value = http
                .get(format!("{url}/worker/list"))
                .send()
                .await
                .ok()?
                .error_for_status()
                .ok()?
                .json()
                .await
                .ok()?;
            serde_json::from_value(v["data"].clone()).ok()
        }
        .await;
        let now = now_ms();
        match listed {
            None => {
                down_since.get_or_insert(now);
            }
            Some(listed) => {
                if let Some(t) = down_since.take() {
                    longest_down = longest_down.max(now - t);
                }
                let wrong = list_is_wrong(&listed, &lives.lock().expect("lives lock"), now);
                match wrong {
                    Some(why) => {
                        wrong_since.get_or_insert((now, why));
                    }
                    None => {
                        if let Some((t, why)) = wrong_since.take() {
                            if now - t > longest_wrong.0 {
                                longest_wrong = (now - t, t, why);
                            }
                        }
                    }
                }
            }
        }
    }
    let now = now_ms();
    if let Some(t) = down_since {
        longest_down = longest_down.max(now - t);
    }
    if let Some((t, why)) = wrong_since {
        if now - t > longest_wrong.0 {
            longest_wrong = (now - t, t, why);
        }
    }
    (longest_down, longest_wrong, polls)
}

/// Reads every claim in etcd every 10 s until `stop` (claims expire about
/// 100 s after they are made): run id -> claim.
async fn collect_claims(
    endpoints: Vec<String>,
    keys: Keys,
    seen: Arc<Mutex<HashMap<String, ClaimRecord>>>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut every = tokio::time::interval(Duration::from_secs(10));
    loop {
        let last = tokio::select! {
            _ = every.tick() => false,
            _ = stop.changed() => true,
        };
        if let Ok(client) = etcd_client::Client::connect(endpoints.clone(), None).await {
            let mut pages = RangePages::prefix(client, &keys.claims_prefix());
            while let Ok(Some(page)) = pages.next_page().await {
                let mut seen = seen.lock().expect("claims lock");
                for kv in page {
                    let (Some((job, run)), Ok(claim)) = (
                        keys.parse_claim_run_key(kv.key()),
                        serde_json::from_slice::<ClaimRecord>(kv.value()),
                    ) else {
                        continue;
                    };
                    seen.insert(
                        LogRecord::run_id(job.as_str(), run.tick_ms, kv.create_revision()),
                        claim,
                    );
                }
            }
        }
        if last {
            return;
        }
    }
}

/// Runs the scenario and reports.
pub async fn run_chaos(p: &ChaosParams) -> anyhow::Result<ChaosReport> {
    let mut c = Cluster::start_with_etcd_members("chaos", 3).await?;
    let result = chaos_on(&mut c, p).await;
    if let Some(base) = &p.keep_under {
        // The logs of the last run (not the data).
        let kept = base.join("chaos-last");
        let _ = std::fs::remove_dir_all(&kept);
        std::fs::create_dir_all(&kept)?;
        for entry in std::fs::read_dir(c.dir.path())?.flatten() {
            let path = entry.path();
            if path.extension().is_some_and(|e| e == "log") {
                let _ = std::fs::copy(&path, kept.join(entry.file_name()));
            }
        }
        eprintln!("chaos: logs in {}", kept.display());
    }
    result
}

async fn chaos_on(c: &mut Cluster, p: &ChaosParams) -> anyhow::Result<ChaosReport> {
    // w3 reaches etcd through proxies, so it can be cut off.
    let mut proxies = Vec::new();
    for m in c.etcd_members() {
        proxies.push(ReplyHoldProxy::start(&m.client_address()).await?);
    }
    let through: Vec<String> = proxies.iter().map(|x| x.url.clone()).collect();
    let lease = (
        "GDTS_WORKER_LEASE_TTL_SECS".to_string(),
        LEASE_TTL_SECS.to_string(),
    );
    let options: BTreeMap<&str, WorkerOptions> = BTreeMap::from([
        (
            "w1",
            WorkerOptions {
                clock_offset: Some("+2s".into()),
                env: vec![lease.clone()],
                ..Default::default()
            },
        ),
        (
            "w2",
            WorkerOptions {
                clock_offset: Some("-2s".into()),
                env: vec![lease.clone()],
                ..Default::default()
            },
        ),
        (
            "w3",
            WorkerOptions {
                env: vec![
                    lease.clone(),
                    ("GDTS_ETCD_ENDPOINTS".into(), through.join(",")),
                ],
                ..Default::default()
            },
        ),
    ]);
    for (id, o) in &options {
        c.start_worker(id, o.clone())?;
    }
    c.wait_for_workers(&["w1", "w2", "w3"], Duration::from_secs(30))
        .await?;
    let names: Vec<String> = (0..p.jobs).map(|i| format!("chaos-{i:04}")).collect();
    let specs: Vec<JobSpec> = names
        .iter()
        .map(|n| JobSpec::shell(n, "true", "* * * * * * *"))
        .collect();
    put_jobs(c, &specs).await?;

    let started = now_ms();
    let lives: Arc<Mutex<HashMap<String, Life>>> = Arc::new(Mutex::new(
        ["w1", "w2", "w3"]
            .into_iter()
            .map(|w| {
                (
                    w.to_string(),
                    Life {
                        since: started,
                        cut_off: false,
                    },
                )
            })
            .collect(),
    ));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let list = tokio::spawn(watch_list(
        c.manager_url.clone(),
        lives.clone(),
        stop_rx.clone(),
    ));
    let claims = Arc::new(Mutex::new(HashMap::new()));
    let collector = tokio::spawn(collect_claims(
        c.etcd_endpoints().split(',').map(String::from).collect(),
        Keys::new(&c.prefix),
        claims.clone(),
        stop_rx.clone(),
    ));

    let from = ceil_second(now_ms() + 3000);
    eprintln!("chaos: window from {from} ms");
    let d = p.duration.as_millis() as i64;
    let to = from + d;
    // The schedule, in ms from `from`.
    #[derive(Debug)]
    enum Act {
        KillWorker(&'static str),
        StopMember,
        StartMember,
        KillLeader,
        StartLeader,
        Partition(bool),
        Mongo(bool),
    }
    let mut plan: Vec<(i64, Act)> = Vec::new();
    let kill_every = p.kill_every.as_millis() as i64;
    let partition_at = d * 45 / 100;
    let partition_to = partition_at + p.partition.as_millis() as i64;
    let mut k = kill_every / 2;
    let mut turn = 0;
    while k < d - 5000 {
        // w3 is the one cut off: it is not killed around its partition.
        let id = ["w1", "w2", "w3"][turn % 3];
        turn += 1;
        if id == "w3" && k > partition_at - 10_000 && k < partition_to + 10_000 {
            k += kill_every;
            continue;
        }
        plan.push((k, Act::KillWorker(id)));
        k += kill_every;
    }
    plan.push((d * 15 / 100, Act::StopMember));
    plan.push((
        d * 15 / 100 + p.member_down.as_millis() as i64,
        Act::StartMember,
    ));
    plan.push((d * 30 / 100, Act::KillLeader));
    plan.push((
        d * 30 / 100 + p.leader_down.as_millis() as i64,
        Act::StartLeader,
    ));
    plan.push((partition_at, Act::Partition(true)));
    plan.push((partition_to, Act::Partition(false)));
    let mongo_at = d * 65 / 100;
    plan.push((mongo_at, Act::Mongo(false)));
    plan.push((mongo_at + p.mongo_down.as_millis() as i64, Act::Mongo(true)));
    plan.sort_by_key(|(t, _)| *t);

    let mut faults: Vec<Fault> = Vec::new();
    let mut stopped_member: Option<usize> = None;
    let mut killed_leader: Option<usize> = None;
    for (offset, act) in plan {
        let at = from + offset;
        let wait = at - now_ms();
        if wait > 0 {
            tokio::time::sleep(Duration::from_millis(wait as u64)).await;
        }
        let now = now_ms();
        match act {
            Act::KillWorker(id) => {
                c.worker(id).kill9();
                // Keep the earlier life's log.
                let log = c.worker_log(id);
                let _ = std::fs::rename(&log, log.with_extension(format!("{now}.log")));
                c.start_worker(id, options[id].clone())?;
                if let Some(l) = lives.lock().expect("lives lock").get_mut(id) {
                    l.since = now_ms();
                }
                faults.push(Fault {
                    at_ms: now,
                    what: format!("{id} killed with -9 and started again"),
                    // Ticks it had claimed ahead (0.6 s) have claims: their
                    // records are `lost`. Nothing else may go unrun.
                    window: Some((now - 1000, now + 1000)),
                });
            }
            Act::StopMember => {
                let leader = leader_index(c).await;
                let pick = (0..3).find(|i| Some(*i) != leader).unwrap_or(1);
                c.etcd_members()[pick].stop();
                stopped_member = Some(pick);
                faults.push(Fault {
                    at_ms: now,
                    what: format!("etcd member n{} stopped", pick + 1),
                    window: Some((now - 1000, now + 5000)),
                });
            }
            Act::StartMember => {
                if let Some(i) = stopped_member.take() {
                    c.etcd_members()[i].start_again().await?;
                    faults.push(Fault {
                        at_ms: now_ms(),
                        what: format!("etcd member n{} started again", i + 1),
                        window: Some((now - 1000, now + 5000)),
                    });
                }
            }
            Act::KillLeader => {
                let leader = leader_index(c).await.unwrap_or(0);
                c.etcd_members()[leader].kill9();
                killed_leader = Some(leader);
                faults.push(Fault {
                    at_ms: now,
                    what: format!("etcd leader n{} killed with -9", leader + 1),
                    // An election, and clients moving to another member.
                    window: Some((now - 1000, now + 10_000)),
                });
            }
            Act::StartLeader => {
                if let Some(i) = killed_leader.take() {
                    c.etcd_members()[i].start_again().await?;
                    faults.push(Fault {
                        at_ms: now_ms(),
                        what: format!("etcd member n{} (the killed leader) started again", i + 1),
                        window: Some((now - 1000, now + 5000)),
                    });
                }
            }
            Act::Partition(on) => {
                for x in &proxies {
                    x.partition(on);
                }
                if on {
                    if let Some(l) = lives.lock().expect("lives lock").get_mut("w3") {
                        l.cut_off = true;
                    }
                } else {
                    // Back: it registers again within seconds.
                    let lives = lives.clone();
                    tokio::spawn(async move {
                        tokio::time::sleep(Duration::from_secs(5)).await;
                        if let Some(l) = lives.lock().expect("lives lock").get_mut("w3") {
                            l.cut_off = false;
                        }
                    });
                }
                faults.push(Fault {
                    at_ms: now,
                    what: format!(
                        "w3 {} etcd",
                        if on { "cut off from" } else { "reaches again" }
                    ),
                    window: Some((now - 1000, now + 2000)),
                });
            }
            Act::Mongo(up) => {
                if up {
                    c.mongo.start_again().await?;
                } else {
                    c.mongo.stop();
                }
                faults.push(Fault {
                    at_ms: now,
                    what: format!("MongoDB {}", if up { "started again" } else { "stopped" }),
                    window: None,
                });
            }
        }
        eprintln!(
            "chaos: {:.1} s: {}",
            (now - from) as f64 / 1000.0,
            faults.last().map(|f| f.what.as_str()).unwrap_or("")
        );
    }
    let wait = to + 1000 - now_ms();
    if wait > 0 {
        tokio::time::sleep(Duration::from_millis(wait as u64)).await;
    }
    // Stop the load: delete the jobs.
    {
        let mut etcd = c.etcd_client().await?;
        let keys = Keys::new(&c.prefix);
        etcd.delete(
            keys.jobs_prefix(),
            Some(etcd_client::DeleteOptions::new().with_prefix()),
        )
        .await?;
    }
    // Records settle: journals written, sweeps done (a killed worker's
    // lease expires a TTL after the kill).
    let runs = c.runs::<Document>().await;
    let _ = stop_tx.send(true);
    let (api_down, list_wrong, polls) = list.await?;
    collector.await?;
    let claims = claims.lock().expect("claims lock").clone();
    let in_window = |id: &str| {
        id.split_once('@')
            .and_then(|(_, rest)| rest.split_once('#'))
            .and_then(|(t, _)| t.parse::<i64>().ok())
            .is_some_and(|t| t >= from && t < to)
    };
    let settle_until = now_ms() + 90_000;
    let mut without = loop {
        let ids: BTreeSet<String> = runs
            .find(doc! {"planTime": {"$gte": from - 120_000}})
            .projection(doc! {"_id": 1})
            .await?
            .try_collect::<Vec<Document>>()
            .await?
            .into_iter()
            .filter_map(|d| d.get_str("_id").ok().map(String::from))
            .collect();
        let without: Vec<String> = claims
            .keys()
            .filter(|id| in_window(id) && !ids.contains(*id))
            .cloned()
            .collect();
        if without.is_empty() || now_ms() > settle_until {
            break without;
        }
        tokio::time::sleep(Duration::from_secs(3)).await;
    };
    without.sort();

    // Every tick's fate.
    let records: Vec<Document> = runs
        .find(doc! {"planTime": {"$gte": from, "$lt": to}})
        .projection(doc! {"jobName": 1, "planTime": 1, "status": 1, "err": 1})
        .await?
        .try_collect()
        .await?;
    let mut per_tick: HashMap<(String, i64), Vec<(String, String)>> = HashMap::new();
    for r in &records {
        let job = r.get_str("jobName").unwrap_or_default().to_string();
        let tick = crate::int_field(r, "planTime");
        per_tick.entry((job, tick)).or_default().push((
            r.get_str("status").unwrap_or_default().to_string(),
            r.get_str("err").unwrap_or_default().to_string(),
        ));
    }
    let mut report = ChaosReport {
        params: format!(
            "{} jobs every second ({} ticks/s) for {} s; 3 workers (clocks +2 s, −2 s, 0), a 3-member etcd; \
             a worker killed with -9 every {} s, an etcd member stopped for {} s, the etcd leader killed (down {} s), \
             a worker cut off from etcd for {} s, MongoDB stopped for {} s; worker lease TTL {LEASE_TTL_SECS} s",
            p.jobs,
            p.jobs,
            p.duration.as_secs(),
            p.kill_every.as_secs(),
            p.member_down.as_secs(),
            p.leader_down.as_secs(),
            p.partition.as_secs(),
            p.mongo_down.as_secs()
        ),
        faults: faults.clone(),
        from_ms: from,
        to_ms: to,
        claims_seen: claims.len(),
        claims_without_record: without,
        api_longest_down_ms: api_down,
        list_longest_wrong_ms: list_wrong.0,
        list_wrong_at_ms: list_wrong.1,
        list_wrong_why: list_wrong.2,
        list_polls: polls,
        ..Default::default()
    };
    for job in &names {
        let mut tick = from;
        while tick < to {
            report.ticks_due += 1;
            match per_tick.get(&(job.clone(), tick)).map(Vec::as_slice) {
                None | Some([]) => {
                    match faults
                        .iter()
                        .find(|f| f.window.is_some_and(|(a, b)| tick >= a && tick < b))
                    {
                        Some(f) => {
                            *report
                                .unrecorded_in_windows
                                .entry(f.what.clone())
                                .or_default() += 1
                        }
                        None => report.unrecorded_unexplained.push(format!("{job}@{tick}")),
                    }
                }
                Some([(status, err)]) => {
                    if status == "missed" || status == "skipped" {
                        let reason: String = err.chars().take(90).collect();
                        *report.not_run.entry(reason).or_default() += 1;
                    } else {
                        report.ran_once += 1;
                        if status == STATUS_LOST {
                            report.lost_records += 1;
                        }
                    }
                }
                Some(many) => report
                    .duplicates
                    .push(format!("{job}@{tick} ({} records)", many.len())),
            }
            tick += 1000;
        }
    }
    Ok(report)
}
