//! The worker's main loop: takes each job's ticks from the job table a
//! little ahead of time, decides for each what this worker does about it
//! (`gdts_common::plan::decide`: prepare, claim as owner or backup, record as
//! missed, or nothing), sends the claims in batches, and hands won ticks to
//! their runs. All of its inputs are events on channels (jobs, workers,
//! horizons, run-now requests, claim results) or the clock.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use gdts_common::job::Job;
use gdts_common::keys::{Keys, RunKey};
use gdts_common::plan::{decide, decide_again_at, ClaimMode, Decision, View};
use gdts_common::timing::{
    AT_TICK_BACKUP_DELAYS, CLAIM_BATCH, MAX_TICK_LATENESS, MISSED_RECORD_WINDOW, PREPARE_LEAD,
    SLOW_OWNER_GRACE,
};
use gdts_common::values::{Horizon, RunNowRequest, WorkerInfo};
use gdts_common::JobName;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::claim::{Claim, ClaimRequest};
use crate::jobs::{DueTick, JobTable};
use crate::run::{self, Go, Preparer, RunContext};
use gdts_runtime::etcd_watch::{Entry, PrefixEvent};

/// The planner's event sources.
pub struct Inputs {
    pub jobs: mpsc::Receiver<PrefixEvent>,
    pub run_now: mpsc::Receiver<PrefixEvent>,
    pub workers: mpsc::Receiver<PrefixEvent>,
    pub horizons: mpsc::Receiver<PrefixEvent>,
}

#[derive(Debug)]
enum SlotState {
    /// Nothing done yet.
    Idle,
    /// Process started at its gate; the run task waits for `Go`.
    Prepared(oneshot::Sender<Go>),
    /// Claim sent; the prepared run (if any) waits for its outcome.
    Claiming(Option<oneshot::Sender<Go>>),
    /// Not this worker's by the current view of the fleet.
    Passed,
    Done,
}

struct Slot {
    due: DueTick,
    mode: ClaimMode,
    state: SlotState,
    /// Do not look at the slot again before this (epoch ms).
    wake_at: i64,
    /// Counted in `gdts_worker_ticks_unmatched_total` already.
    unmatched_counted: bool,
}

impl Slot {
    /// Claims of the tick sent from here whose outcome stayed unknown (one
    /// `claimedAt` each in `due.earlier`; a window slot starts with none).
    fn unsettled_claims(&self) -> u32 {
        self.due.earlier.len() as u32
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Role {
    Owner,
    Backup,
    Missed,
}

struct BatchResult {
    tick_ms: i64,
    /// The mode of an owner's batch (its horizon waited on it).
    owned: Option<ClaimMode>,
    /// When its claims were decided: their `claimedAt`.
    decided_at: i64,
    outcomes: Vec<(usize, Option<Claim>)>,
}

/// The workers that take ticks, as this worker sees them.
#[derive(Default)]
struct Fleet {
    infos: HashMap<String, WorkerInfo>,
    /// Registered and not draining, sorted.
    all: Vec<String>,
    /// Of those, the ones that can run containers (all of them if none can,
    /// so a container tick is still claimed and its failure recorded).
    containers: Vec<String>,
    /// For jobs with a selector: the workers that may own their ticks, by
    /// (selector, container job), made when first asked for; emptied when
    /// the fleet changes.
    selected: HashMap<(BTreeMap<String, String>, bool), Vec<String>>,
    horizons: HashMap<String, Horizon>,
    /// `ownership::fleet_fingerprint` of what decides ownership (the
    /// workers that take ticks, whether they run containers, their labels):
    /// published with horizons, compared by backups, and how this worker
    /// tells that ownership may have moved.
    fingerprint: u64,
}

impl Fleet {
    fn recompute(&mut self) {
        // A worker that cannot write records owns no ticks while another
        // can; when none can, all take ticks (their records are journaled).
        let ticking = gdts_common::values::ticking_workers(self.infos.values());
        let mut all: Vec<String> = ticking.iter().map(|i| i.id.clone()).collect();
        all.sort();
        let mut containers: Vec<String> = ticking
            .iter()
            .filter(|i| i.containers)
            .map(|i| i.id.clone())
            .collect();
        containers.sort();
        if containers.is_empty() {
            containers = all.clone();
        }
        let entries: Vec<String> = ticking
            .iter()
            .map(|i| {
                let labels: Vec<String> =
                    i.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
                format!("{}|{}|{}", i.id, i.containers, labels.join(","))
            })
            .collect();
        self.fingerprint = gdts_common::ownership::fleet_fingerprint(&entries);
        self.all = all;
        self.containers = containers;
        self.selected.clear();
    }

    /// Who may own `job`'s ticks: the workers that take ticks, whose labels
    /// match its selector, and (for a container job) that run containers if
    /// any of those does. Empty when no live worker matches the selector.
    /// For a job with a selector, `select` must have been called since the
    /// fleet last changed.
    fn eligible(&self, job: &Job) -> &[String] {
        let container = crate::runner::Runner::of(job).needs_docker();
        match (job.selector.is_empty(), container) {
            (true, true) => &self.containers,
            (true, false) => &self.all,
            (false, _) => &self.selected[&(job.selector.clone(), container)],
        }
    }

    /// Makes the set `eligible` gives for a job with a selector, once per
    /// fleet.
    fn select(&mut self, job: &Job) {
        if job.selector.is_empty() {
            return;
        }
        let container = crate::runner::Runner::of(job).needs_docker();
        let key = (job.selector.clone(), container);
        if !self.selected.contains_key(&key) {
            let matching = |ids: &[String]| -> Vec<String> {
                ids.iter()
                    .filter(|id| {
                        self.infos.get(*id).is_some_and(|i| {
                            gdts_common::job::selector_matches(&job.selector, &i.labels)
                        })
                    })
                    .cloned()
                    .collect()
            };
            let mut ids = if container {
                matching(&self.containers)
            } else {
                Vec::new()
            };
            if ids.is_empty() {
                ids = matching(&self.all);
            }
            self.selected.insert(key, ids);
        }
    }
}

/// A catch-up job's ticks whose claims this worker (their owner) sent
/// without learning the outcome, and the ticks that came due meanwhile. The
/// watermark only lets a tick older than `CATCH_UP_KEY_SAFE_AGE` be claimed
/// while no later tick was, so the job's claims must stay in tick order:
/// while one is open, later ticks wait here; when none is, the unsettled
/// ones and those that waited go to the job's catch-up queue, oldest first.
#[derive(Default)]
struct Owed {
    open: usize,
    ticks: Vec<DueTick>,
}

struct Planner {
    ctx: Arc<RunContext>,
    keys: Keys,
    preparer: Preparer,
    runs: TaskTracker,
    fleet: Fleet,
    /// By mode, the highest instant this worker sent its own claims for.
    sent_max: HashMap<ClaimMode, i64>,
    /// Its own claim batches not yet answered, by mode and instant: the
    /// horizon never passes an instant still in doubt, or a backup would
    /// take it as settled when the claim in fact never reached etcd.
    in_doubt: BTreeMap<(ClaimMode, i64), usize>,
    /// Its own instants with claims that ended unsettled (not sent, or
    /// unknown), until their backups have had their turn (by mode and
    /// instant, until when): the horizon stays below them meanwhile, or a
    /// later instant's batch would cover them before backups giving a slow
    /// owner its grace look, and nobody would claim them.
    unsettled: BTreeMap<(ClaimMode, i64), i64>,
    /// When this planner first read its jobs (its clock): its horizon
    /// says nothing of earlier ticks, which it never took into account.
    since: i64,
    jobs_loaded: bool,
    window: BTreeMap<i64, Vec<Slot>>,
    catching_up: HashMap<JobName, mpsc::UnboundedSender<DueTick>>,
    /// Ticks of catch-up jobs whose outcome is not known yet or was never
    /// settled (etcd unreachable), kept so that they are claimed again, in
    /// order, once etcd answers. See [`Owed`].
    owed: HashMap<JobName, Owed>,
    results: mpsc::UnboundedSender<BatchResult>,
    in_flight: usize,
    draining: bool,
    /// Run-now requests for jobs this worker does not know yet (its job
    /// watch behind its run-now watch), by key, until their lease would end:
    /// started when the job arrives.
    pending_run_now: HashMap<Vec<u8>, (Entry, std::time::Instant)>,
    /// The jobs or the fleet changed since the unmatched jobs were counted.
    unmatched_stale: bool,
    /// When they were last counted.
    unmatched_counted_at: Option<std::time::Instant>,
}

/// The unmatched jobs are counted at most this often.
const UNMATCHED_RECOUNT: Duration = Duration::from_secs(1);

/// How long a run-now request for a job not known yet is kept: as long as
/// the request itself lives in etcd.
fn run_now_keep_until() -> std::time::Instant {
    std::time::Instant::now() + gdts_common::timing::RUN_NOW_REQUEST_TTL
}

fn ms(d: Duration) -> i64 {
    d.as_millis() as i64
}

/// Runs until `shutdown`; then claims nothing new, lets the claims in flight
/// settle (their runs go on as tasks on `runs`) and returns.
pub async fn run_planner(
    ctx: Arc<RunContext>,
    keys: Keys,
    mut inputs: Inputs,
    preparer: Preparer,
    runs: TaskTracker,
    ready: watch::Sender<bool>,
    shutdown: CancellationToken,
) {
    let (results, mut result_rx) = mpsc::unbounded_channel();
    let mut p = Planner {
        ctx,
        keys,
        preparer,
        runs,
        fleet: Fleet::default(),
        sent_max: HashMap::new(),
        in_doubt: BTreeMap::new(),
        unsettled: BTreeMap::new(),
        since: Utc::now().timestamp_millis(),
        jobs_loaded: false,
        window: BTreeMap::new(),
        catching_up: HashMap::new(),
        owed: HashMap::new(),
        results,
        in_flight: 0,
        draining: false,
        pending_run_now: HashMap::new(),
        unmatched_stale: true,
        unmatched_counted_at: None,
    };
    let mut next_wake = 0i64;
    loop {
        let now = Utc::now();
        let now_ms = now.timestamp_millis();
        if now_ms >= next_wake {
            if !p.draining {
                p.pull(now);
            }
            next_wake = p.step(now_ms);
            p.forget_old(now_ms);
        }
        p.count_unmatched();
        if p.draining && p.in_flight == 0 {
            break;
        }
        let sleep_for =
            Duration::from_millis((next_wake - Utc::now().timestamp_millis()).clamp(0, 100) as u64);
        tokio::select! {
            biased;
            _ = shutdown.cancelled(), if !p.draining => {
                p.drain();
                next_wake = 0;
            }
            Some(result) = result_rx.recv() => p.apply_result(result),
            event = inputs.jobs.recv(), if !p.draining => match event {
                Some(event) => {
                    let first = matches!(event, PrefixEvent::Reset(_));
                    p.apply_job_event(event);
                    if first && !*ready.borrow() {
                        ready.send_replace(true);
                    }
                    next_wake = 0;
                }
                None => p.drain(),
            },
            request = inputs.run_now.recv(), if !p.draining => match request {
                // After a resync, requests still alive are offered again; their
                // claim keys make sure each runs once.
                Some(PrefixEvent::Put(entry)) => p.start_manual_run(&entry, run_now_keep_until()),
                Some(PrefixEvent::Reset(entries)) => {
                    for entry in &entries {
                        p.start_manual_run(entry, run_now_keep_until());
                    }
                }
                // The request is gone (run, or expired): no longer pending.
                Some(PrefixEvent::Delete(entry)) => {
                    p.pending_run_now.remove(&entry.key);
                }
                None => {}
            },
            Some(event) = inputs.workers.recv() => {
                p.apply_worker_event(event);
                next_wake = 0;
            }
            Some(event) = inputs.horizons.recv() => p.apply_horizon_event(event),
            _ = tokio::time::sleep(sleep_for) => {}
        }
    }
    tracing::info!("planner stopped: no new ticks will be claimed");
}

impl Planner {
    /// Moves the ticks due within `PREPARE_LEAD` from the job table into the
    /// window (past ticks of a catch-up go to their job's catch-up queue).
    fn pull(&mut self, now: DateTime<Utc>) {
        let until = now + chrono::Duration::from_std(PREPARE_LEAD).expect("small");
        let due = self.ctx.jobs.lock().take_until(now, until);
        for tick in due {
            if tick.catch_up {
                self.dispatch_catch_up(tick);
                continue;
            }
            let mode = ClaimMode::of(&tick.job);
            self.window
                .entry(tick.tick.timestamp_millis())
                .or_default()
                .push(Slot {
                    due: tick,
                    mode,
                    state: SlotState::Idle,
                    wake_at: 0,
                    unmatched_counted: false,
                });
        }
    }

    /// Decides for every slot that is due for a look; returns when to look again.
    fn step(&mut self, now_ms: i64) -> i64 {
        let me = self.ctx.worker_id.clone();
        let mut next = now_ms + 100;
        let mut groups: BTreeMap<(i64, ClaimMode, Role), Vec<usize>> = BTreeMap::new();
        let horizon_end = now_ms + ms(PREPARE_LEAD);
        // A worker whose clock is beyond the bound claims nothing (the
        // others own its ticks: its registration says it is skewed).
        let skewed = self.ctx.clock.borrow().skewed;
        for (&tick_ms, slots) in self.window.range_mut(..=horizon_end) {
            for (i, slot) in slots.iter_mut().enumerate() {
                if !matches!(slot.state, SlotState::Idle | SlotState::Prepared(_)) {
                    continue;
                }
                if slot.wake_at > now_ms {
                    next = next.min(slot.wake_at);
                    continue;
                }
                if self.draining {
                    drop_prepared(&mut slot.state);
                    slot.state = SlotState::Done;
                    continue;
                }
                if skewed {
                    drop_prepared(&mut slot.state);
                    // Looked at again when the fleet changes (this worker's
                    // own registration, once its clock is sound).
                    slot.state = SlotState::Passed;
                    continue;
                }
                let job = slot.due.job.clone();
                self.fleet.select(&job);
                let fleet = &self.fleet;
                let workers = fleet.eligible(&job);
                if workers.is_empty() && !fleet.all.is_empty() && !slot.unmatched_counted {
                    // No live worker matches the selector: the owner of the
                    // tick among all workers counts it, once.
                    let counter = gdts_common::ownership::owner_and_rank(
                        &fleet.all,
                        &me,
                        job.name.as_str(),
                        tick_ms,
                    );
                    if matches!(counter, Some((_, Some(0)))) {
                        slot.unmatched_counted = true;
                        self.ctx.metrics.tick_unmatched();
                    }
                }
                let view = View {
                    me: &me,
                    workers,
                    horizons: &fleet.horizons,
                    fleet: fleet.fingerprint,
                };
                match decide(
                    &view,
                    slot.due.job.name.as_str(),
                    tick_ms,
                    slot.mode,
                    now_ms,
                ) {
                    Decision::WaitUntil(at) => {
                        slot.wake_at = at;
                        next = next.min(at);
                    }
                    Decision::Prepare { claim_at } => {
                        if matches!(slot.state, SlotState::Idle) {
                            slot.state = prepare(&self.ctx, &self.preparer, &self.runs, &slot.due);
                        }
                        slot.wake_at = claim_at;
                        next = next.min(claim_at);
                    }
                    Decision::Claim { rank } => {
                        let role = if rank == 0 { Role::Owner } else { Role::Backup };
                        groups
                            .entry((tick_ms, slot.mode, role))
                            .or_default()
                            .push(i);
                    }
                    Decision::Missed { .. } => {
                        groups
                            .entry((tick_ms, slot.mode, Role::Missed))
                            .or_default()
                            .push(i);
                    }
                    Decision::NotMine => {
                        drop_prepared(&mut slot.state);
                        // Final unless the fleet changes (see `apply_worker_event`).
                        slot.state = SlotState::Passed;
                    }
                }
            }
        }
        for ((tick_ms, mode, role), slots) in groups {
            self.send(tick_ms, mode, role, slots, now_ms);
        }
        next
    }

    /// Sends the claims of one group: the owner's claims of one instant in
    /// batches, the last of which (sent when the others are answered) also
    /// raises this worker's horizon to the instant.
    fn send(&mut self, tick_ms: i64, mode: ClaimMode, role: Role, slots: Vec<usize>, now_ms: i64) {
        let mut requests = Vec::new();
        let mut indices = Vec::new();
        let window = self
            .window
            .get_mut(&tick_ms)
            .expect("group of a slot in the window");
        // Ticks handed to a catch-up queue are claimed later, by it: the
        // horizon must not cover their instant yet.
        let mut handed_off = false;
        for i in slots {
            let slot = &mut window[i];
            let job = &slot.due.job;
            // A job catching up claims its ticks in order, in its queue.
            if role == Role::Owner && mode == ClaimMode::AtTick {
                if let Some(queue) = self.catching_up.get(&job.name) {
                    // Caught up however late its turn comes (within the
                    // job's catchUpSeconds).
                    let due = DueTick {
                        catch_up: true,
                        ..slot.due.clone()
                    };
                    if queue.send(due).is_ok() {
                        slot.state = SlotState::Done;
                        handed_off = true;
                        continue;
                    }
                    self.catching_up.remove(&job.name);
                }
                if !job.policy.catch_up.is_zero() {
                    let owed = self.owed.entry(job.name.clone()).or_default();
                    if owed.open > 0 {
                        // An earlier tick's claim is still in doubt: this one
                        // waits, so the job's claims stay in order.
                        owed.ticks.push(DueTick {
                            catch_up: true,
                            ..slot.due.clone()
                        });
                        slot.state = SlotState::Done;
                        handed_off = true;
                        continue;
                    }
                    owed.open += 1;
                }
            }
            let run = RunKey::scheduled(tick_ms);
            let mut request = match mode {
                ClaimMode::Ahead => ClaimRequest::ahead(job, slot.due.job_revision, run, now_ms),
                ClaimMode::AtTick => ClaimRequest::new(job, slot.due.job_revision, run, now_ms),
            };
            request.missed = role == Role::Missed;
            request.earlier = slot.due.earlier.clone();
            requests.push(request);
            indices.push(i);
            let go = match std::mem::replace(&mut slot.state, SlotState::Done) {
                SlotState::Prepared(go) => Some(go),
                _ => None,
            };
            slot.state = SlotState::Claiming(go);
        }
        if requests.is_empty() {
            return;
        }
        let horizon = (role == Role::Owner).then(|| {
            let if_all_answered = self.horizon_with(mode, (!handed_off).then_some(tick_ms));
            let otherwise = self.horizon_with(mode, None);
            *self.in_doubt.entry((mode, tick_ms)).or_default() += 1;
            self.sent_max.insert(
                mode,
                self.sent_max.get(&mode).copied().unwrap_or(0).max(tick_ms),
            );
            HorizonChoice {
                if_all_answered,
                otherwise,
            }
        });
        let owned = (role == Role::Owner).then_some(mode);
        self.ctx.metrics.claims_sent(&requests, role != Role::Owner);
        self.in_flight += 1;
        let ctx = self.ctx.clone();
        let results = self.results.clone();
        self.runs.spawn(async move {
            let outcomes = claim_in_batches(&ctx, &requests, horizon).await;
            let _ = results.send(BatchResult {
                tick_ms,
                owned,
                decided_at: now_ms,
                outcomes: indices.into_iter().zip(outcomes).collect(),
            });
        });
    }

    /// The horizon to publish: for each mode, the highest instant this
    /// worker sent claims for (and `adding`, the instant being sent now),
    /// but never at or past an instant of its own whose claims are still
    /// unanswered. It may go down: a backup stepping in needlessly is safe,
    /// one standing by for a claim that never reached etcd loses the tick.
    fn horizon_with(&self, mode: ClaimMode, adding: Option<i64>) -> Horizon {
        let field = |m: ClaimMode| {
            let mut high = self.sent_max.get(&m).copied().unwrap_or(0);
            if m == mode {
                if let Some(at) = adding {
                    high = high.max(at);
                }
            }
            let doubt = self.in_doubt.range((m, i64::MIN)..=(m, i64::MAX)).next();
            let unsettled = self.unsettled.range((m, i64::MIN)..=(m, i64::MAX)).next();
            [doubt.map(|((_, t), _)| *t), unsettled.map(|((_, t), _)| *t)]
                .into_iter()
                .flatten()
                .fold(high, |h, t| h.min(t - 1))
        };
        Horizon {
            ahead: field(ClaimMode::Ahead),
            at_tick: field(ClaimMode::AtTick),
            since: self.since,
            fleet: self.fleet.fingerprint,
        }
    }

    fn apply_result(&mut self, result: BatchResult) {
        self.in_flight -= 1;
        if let Some(mode) = result.owned {
            let key = (mode, result.tick_ms);
            if let Some(n) = self.in_doubt.get_mut(&key) {
                *n -= 1;
                if *n == 0 {
                    self.in_doubt.remove(&key);
                }
            }
        }
        if let Some(mode) = result.owned {
            if result.outcomes.iter().any(|(_, o)| o.is_none()) {
                let keep_until =
                    result.tick_ms + ms(SLOW_OWNER_GRACE + AT_TICK_BACKUP_DELAYS[1]) + 1000;
                self.unsettled.insert((mode, result.tick_ms), keep_until);
            }
        }
        let Some(slots) = self.window.get_mut(&result.tick_ms) else {
            return;
        };
        let mut settle_owed = Vec::new();
        let now_ms = Utc::now().timestamp_millis();
        let mut again = 0;
        for (i, outcome) in result.outcomes {
            let slot = &mut slots[i];
            if outcome.is_none() {
                slot.due.earlier.push(result.decided_at);
            }
            let mut owed_again = false;
            if result.owned == Some(ClaimMode::AtTick) && !slot.due.job.policy.catch_up.is_zero() {
                if let Some(owed) = self.owed.get_mut(&slot.due.job.name) {
                    owed.open = owed.open.saturating_sub(1);
                    if outcome.is_none() {
                        owed_again = true;
                        // Never settled: claimed again once etcd answers.
                        tracing::warn!(job = %slot.due.job.name, tick = %slot.due.tick, "a catch-up job's claim was not settled; it will be claimed again");
                        owed.ticks.push(DueTick {
                            catch_up: true,
                            ..slot.due.clone()
                        });
                    }
                    if owed.open == 0 {
                        settle_owed.push(slot.due.job.name.clone());
                    }
                }
            }
            let go = match std::mem::replace(&mut slot.state, SlotState::Done) {
                SlotState::Claiming(go) => go,
                _ => None,
            };
            self.ctx.metrics.claim_outcome(outcome);
            match (outcome, go) {
                (Some(Claim::Won { revision }), Some(go)) => {
                    if go.send(Go::Run { revision }).is_err() {
                        // Its run task is gone: the tick is run from scratch.
                        tracing::warn!(job = %slot.due.job.name, "a won tick's run task is gone; starting it anew");
                        self.runs.spawn(run::claimed_tick(
                            self.ctx.clone(),
                            slot.due.job.clone(),
                            slot.due.job_revision,
                            slot.due.tick,
                            Claim::Won { revision },
                        ));
                    }
                }
                (
                    Some(
                        claim @ (Claim::Won { .. } | Claim::Skipped { .. } | Claim::Missed { .. }),
                    ),
                    go,
                ) => {
                    if let Some(go) = go {
                        let _ = go.send(Go::Drop);
                    }
                    self.runs.spawn(run::claimed_tick(
                        self.ctx.clone(),
                        slot.due.job.clone(),
                        slot.due.job_revision,
                        slot.due.tick,
                        claim,
                    ));
                }
                (_, Some(go)) => {
                    let _ = go.send(Go::Drop);
                }
                (_, None) => {}
            }
            if outcome.is_none() && !owed_again {
                // Not sent, or its fate not learned: nobody may have the
                // tick (see `decide_again_at`). `decide` says what
                // happens to it then, as for any tick.
                slot.state = SlotState::Idle;
                slot.wake_at = decide_again_at(result.tick_ms, now_ms, slot.unsettled_claims());
                again += 1;
            }
        }
        if again > 0 {
            tracing::info!(
                ticks = again,
                tick = result.tick_ms,
                "claims not settled; the ticks are decided again shortly"
            );
        }
        for name in settle_owed {
            self.settle_owed(&name);
        }
    }

    /// No claim of the job is in doubt any more: the ticks it owes go to its
    /// catch-up queue, oldest first.
    fn settle_owed(&mut self, name: &JobName) {
        let Some(owed) = self.owed.remove(name) else {
            return;
        };
        let mut ticks = owed.ticks;
        ticks.sort_by_key(|due| due.tick);
        for due in ticks {
            self.dispatch_catch_up(due);
        }
    }

    /// Sets `gdts_worker_jobs_unmatched`: the jobs that fire whose selector
    /// matches no live worker (none while no worker is known). Counted
    /// again after the jobs or the fleet changed, at most once per
    /// `UNMATCHED_RECOUNT`.
    fn count_unmatched(&mut self) {
        if !self.unmatched_stale
            || self
                .unmatched_counted_at
                .is_some_and(|at| at.elapsed() < UNMATCHED_RECOUNT)
        {
            return;
        }
        self.unmatched_stale = false;
        self.unmatched_counted_at = Some(std::time::Instant::now());
        let jobs = self.ctx.jobs.lock();
        let fleet = &mut self.fleet;
        let unmatched = if fleet.all.is_empty() {
            0
        } else {
            jobs.selecting()
                .filter(|job| {
                    fleet.select(job);
                    fleet.eligible(job).is_empty()
                })
                .count()
        };
        self.ctx.metrics.set_jobs_unmatched(unmatched);
    }

    /// A job changed or was deleted: its ticks not yet claimed are dropped
    /// (the table gives the new definition's ticks again); claimed ones check
    /// their definition when released (`run::execute`).
    fn apply_job_event(&mut self, event: PrefixEvent) {
        self.unmatched_stale = true;
        self.apply_job_table_event(event);
        if !self.pending_run_now.is_empty() {
            let now = std::time::Instant::now();
            let pending = std::mem::take(&mut self.pending_run_now);
            for (entry, until) in pending.into_values() {
                if until > now {
                    self.start_manual_run(&entry, until);
                }
            }
        }
    }

    fn apply_job_table_event(&mut self, event: PrefixEvent) {
        let decoded = JobTable::decode(&self.keys, event);
        let touched: Vec<JobName> = match &decoded {
            crate::jobs::DecodedEvent::Put(d) => vec![d.name().clone()],
            crate::jobs::DecodedEvent::Delete(name) => vec![name.clone()],
            crate::jobs::DecodedEvent::Reset(_) => Vec::new(),
            crate::jobs::DecodedEvent::None => Vec::new(),
        };
        let reset = matches!(decoded, crate::jobs::DecodedEvent::Reset(_));
        let now = Utc::now();
        if reset && !self.jobs_loaded {
            // The table takes ticks from now on: the horizon says nothing of
            // earlier ones.
            self.jobs_loaded = true;
            self.since = now.timestamp_millis();
        }
        let mut jobs = self.ctx.jobs.lock();
        // A job new to this worker has no ticks in the window yet (the common
        // case when many jobs are saved at once): nothing to look through.
        let known = reset || touched.iter().any(|name| jobs.get(name).is_some());
        jobs.apply_decoded(decoded, now);
        if !known {
            return;
        }
        for slots in self.window.values_mut() {
            for slot in slots.iter_mut() {
                if !matches!(
                    slot.state,
                    SlotState::Idle | SlotState::Prepared(_) | SlotState::Passed
                ) {
                    continue;
                }
                let changed = if reset {
                    jobs.get(&slot.due.job.name)
                        .is_none_or(|(_, revision)| revision != slot.due.job_revision)
                } else {
                    touched.contains(&slot.due.job.name)
                };
                if changed {
                    drop_prepared(&mut slot.state);
                    slot.state = SlotState::Done;
                }
            }
        }
        tracing::debug!(jobs = jobs.len(), "job table updated");
    }

    fn apply_worker_event(&mut self, event: PrefixEvent) {
        let decode = |entry: &Entry| serde_json::from_slice::<WorkerInfo>(&entry.value).ok();
        let mut departed = Vec::new();
        match event {
            PrefixEvent::Reset(entries) => {
                let infos: HashMap<String, WorkerInfo> = entries
                    .iter()
                    .filter_map(|e| {
                        let id = self.keys.parse_worker_key(&e.key)?;
                        Some((id, decode(e)?))
                    })
                    .collect();
                // Registrations gone while the watch was down.
                departed.extend(
                    self.fleet
                        .infos
                        .values()
                        .filter(|old| {
                            infos
                                .get(&old.id)
                                .is_none_or(|new| new.start_time != old.start_time)
                        })
                        .cloned(),
                );
                self.fleet.infos = infos;
            }
            PrefixEvent::Put(entry) => {
                if let (Some(id), Some(info)) =
                    (self.keys.parse_worker_key(&entry.key), decode(&entry))
                {
                    self.fleet.infos.insert(id, info);
                }
            }
            PrefixEvent::Delete(entry) => {
                if let Some(id) = self.keys.parse_worker_key(&entry.key) {
                    departed.extend(self.fleet.infos.remove(&id));
                    self.fleet.horizons.remove(&id);
                }
            }
        }
        let before = self.fleet.fingerprint;
        self.fleet.recompute();
        for gone in departed {
            if gone.id != self.ctx.worker_id
                && crate::orphans::sweeper(&self.fleet.all, &gone) == Some(&self.ctx.worker_id)
            {
                self.runs.spawn(crate::orphans::sweep(
                    self.ctx.clone(),
                    self.keys.clone(),
                    gone,
                ));
            }
        }
        if before != self.fleet.fingerprint {
            self.unmatched_stale = true;
            tracing::info!(workers = ?self.fleet.all, "fleet changed");
            // Ownership moved: look at every open tick again.
            for slots in self.window.values_mut() {
                for slot in slots.iter_mut() {
                    if matches!(slot.state, SlotState::Passed) {
                        slot.state = SlotState::Idle;
                    }
                    // A tick waiting out its claim's back-off keeps it (the
                    // fleet changes most while etcd is in trouble).
                    if slot.unsettled_claims() == 0 {
                        slot.wake_at = 0;
                    }
                }
            }
        }
    }

    fn apply_horizon_event(&mut self, event: PrefixEvent) {
        let decode = |entry: &Entry| serde_json::from_slice::<Horizon>(&entry.value).ok();
        match event {
            PrefixEvent::Reset(entries) => {
                self.fleet.horizons = entries
                    .iter()
                    .filter_map(|e| Some((self.keys.parse_horizon_key(&e.key)?, decode(e)?)))
                    .collect();
            }
            PrefixEvent::Put(entry) => {
                if let (Some(id), Some(h)) =
                    (self.keys.parse_horizon_key(&entry.key), decode(&entry))
                {
                    self.fleet.horizons.insert(id, h);
                }
            }
            PrefixEvent::Delete(entry) => {
                if let Some(id) = self.keys.parse_horizon_key(&entry.key) {
                    self.fleet.horizons.remove(&id);
                }
            }
        }
    }

    /// Past catch-up ticks of a job, claimed in order by one task; its later
    /// ticks join the same queue while it drains.
    fn dispatch_catch_up(&mut self, due: DueTick) {
        if !gdts_common::job::selector_matches(&due.job.selector, &self.ctx.labels) {
            // Only workers the job's selector matches claim its ticks.
            return;
        }
        if self.ctx.clock.borrow().skewed {
            tracing::warn!(job = %due.job.name, "clock skewed: not catching up");
            return;
        }
        let name = due.job.name.clone();
        if let Some(queue) = self.catching_up.get(&name) {
            match queue.send(due) {
                Ok(()) => return,
                Err(mpsc::error::SendError(due)) => {
                    self.catching_up.remove(&name);
                    return self.dispatch_catch_up(due);
                }
            }
        }
        let (queue, receiver) = mpsc::unbounded_channel();
        queue.send(due).expect("the receiver is alive");
        self.catching_up.insert(name, queue);
        self.runs.spawn(run::catch_up_ticks(
            self.ctx.clone(),
            receiver,
            self.runs.clone(),
        ));
    }

    /// Starts a run-now request (its claim key makes sure it runs once in
    /// the fleet); one for a job not known here yet waits for the job until
    /// `keep_until`.
    fn start_manual_run(&mut self, entry: &Entry, keep_until: std::time::Instant) {
        if self.ctx.clock.borrow().skewed {
            // Another worker takes it (run-now requests go to every worker).
            return;
        }
        let Some((job, request)) = self.keys.parse_run_now_key(&entry.key) else {
            return;
        };
        let Ok(req) = serde_json::from_slice::<RunNowRequest>(&entry.value) else {
            tracing::warn!(job = %job, "undecodable run-now request; ignoring it");
            return;
        };
        match self.ctx.jobs.current(&job) {
            Some((job, _))
                if !gdts_common::job::selector_matches(&job.selector, &self.ctx.labels) =>
            {
                // Not this worker's to run: its labels do not match.
            }
            Some((job, revision)) => {
                self.runs.spawn(run::run_manual(
                    self.ctx.clone(),
                    job,
                    revision,
                    req.requested_at,
                    request,
                ));
            }
            None => {
                tracing::info!(job = %job, "run-now for a job this worker does not know yet; kept until the job arrives");
                self.pending_run_now
                    .insert(entry.key.clone(), (entry.clone(), keep_until));
            }
        }
    }

    /// Shutdown: ticks not yet claimed are left to the other workers (the
    /// registration says draining), prepared processes are killed; claims
    /// in flight settle and won ticks still run.
    fn drain(&mut self) {
        self.draining = true;
        for slots in self.window.values_mut() {
            for slot in slots.iter_mut() {
                if matches!(slot.state, SlotState::Idle | SlotState::Prepared(_)) {
                    drop_prepared(&mut slot.state);
                    slot.state = SlotState::Done;
                }
            }
        }
        self.catching_up.clear();
        self.owed.clear();
    }

    /// Drops instants too old for anything to happen to them.
    fn forget_old(&mut self, now_ms: i64) {
        self.unsettled.retain(|_, until| *until > now_ms);
        let oldest = now_ms - ms(MAX_TICK_LATENESS + MISSED_RECORD_WINDOW) - 2_000;
        while let Some((&tick_ms, slots)) = self.window.first_key_value() {
            if tick_ms >= oldest {
                break;
            }
            if slots
                .iter()
                .any(|s| matches!(s.state, SlotState::Claiming(_)))
            {
                break;
            }
            self.window.pop_first();
        }
    }
}

/// Starts a slot's process at its gate and the task that will run it.
fn prepare(
    ctx: &Arc<RunContext>,
    preparer: &Preparer,
    runs: &TaskTracker,
    due: &DueTick,
) -> SlotState {
    let run = RunKey::scheduled(due.tick.timestamp_millis());
    let until_tick = (due.tick - Utc::now()).to_std().unwrap_or_default();
    let not_after = std::time::Instant::now() + until_tick;
    let prepared = preparer.prepare(&ctx.shell, &due.job, &run, not_after);
    let (go, go_rx) = oneshot::channel();
    runs.spawn(run::prepared_tick(
        ctx.clone(),
        due.job.clone(),
        due.job_revision,
        due.tick,
        prepared,
        go_rx,
    ));
    ctx.metrics.prepared();
    SlotState::Prepared(go)
}

fn drop_prepared(state: &mut SlotState) {
    if let SlotState::Prepared(_) = state {
        if let SlotState::Prepared(go) = std::mem::replace(state, SlotState::Idle) {
            let _ = go.send(Go::Drop);
        }
    }
}

/// The horizon to send with an owner's claims of one instant: raised to the
/// instant only if every other transaction of the instant was answered.
#[derive(Clone, Copy)]
struct HorizonChoice {
    if_all_answered: Horizon,
    otherwise: Horizon,
}

/// Claims `requests` in transactions of at most `CLAIM_BATCH`; when a
/// horizon is given, the last transaction carries it and is sent once the
/// others are answered, so a horizon never covers a claim still in doubt.
async fn claim_in_batches(
    ctx: &RunContext,
    requests: &[ClaimRequest],
    horizon: Option<HorizonChoice>,
) -> Vec<Option<Claim>> {
    let lease = ctx.claimer.registration_lease_id();
    let chunks: Vec<&[ClaimRequest]> = requests.chunks(CLAIM_BATCH).collect();
    let (last, first) = chunks.split_last().expect("at least one request");
    let first_results =
        futures::future::join_all(first.iter().map(|c| run::send_claims(ctx, c, None))).await;
    let all_answered = first_results.iter().all(Result::is_ok);
    let horizon = horizon.map(|h| {
        if all_answered {
            h.if_all_answered
        } else {
            h.otherwise
        }
    });
    let last_result = run::send_claims(ctx, last, horizon).await;
    let mut outcomes = Vec::with_capacity(requests.len());
    for (chunk, result) in first.iter().zip(first_results) {
        outcomes.extend(run::settle_claims(ctx, chunk, result, lease).await);
    }
    outcomes.extend(run::settle_claims(ctx, last, last_result, lease).await);
    outcomes
}
