//! The claim decision: given the live workers, the horizons they have
//! published, one tick and this worker's clock, what this worker does about
//! the tick now. Pure; `worker/src/planner.rs` wires it to etcd and to
//! processes, and the property test below runs it in a simulated fleet.
//!
//! - The tick's **owner** (rank 0 of the rendezvous ranking, `ownership.rs`)
//!   claims it: a claim-ahead tick `CLAIM_LEAD` before it is due (its process
//!   started at a gate `PREPARE_LEAD` before), an at-tick tick when it is due.
//!   Its claims of one instant are batched, and the last transaction of the
//!   batch also raises its horizon (`values::Horizon`) to that instant.
//! - Its **backups** (ranks 1 and 2) read the owner's horizon, which every
//!   worker follows with a watch. If it does not cover the tick at their
//!   stage (`BACKUP_LEADS` before a claim-ahead tick, `AT_TICK_BACKUP_DELAYS`
//!   after an at-tick one), the owner is dead, cut off or late: they claim it.
//!   An owner whose horizon is only a little behind (`SLOW_OWNER_WINDOW`) is
//!   alive and slow (etcd answering late under load); its backups wait until
//!   `SLOW_OWNER_GRACE` after the tick, so they do not add their claims to an
//!   etcd that is already behind.
//! - Nobody else ever claims it. etcd work per tick is therefore one claim in
//!   a batch, whatever the size of the fleet; backups add work only while an
//!   owner fails.
//! - A claim whose outcome stays unknown (not sent, or etcd never said) is
//!   decided again (`decide_again_at`, 1-4 s later): claimed again while not too
//!   late, then recorded as missed. Owner and backups can all fail at one
//!   instant (etcd unreachable from each); the tick is then claimed once one
//!   of them reaches etcd again within its windows.
//!
//! Two claims of one tick cannot both win (the claim transaction creates the
//! key only if it is absent); views of the fleet that differ for a moment
//! (a worker joining or leaving) can only make two workers both claim, never
//! make a claimed tick run twice.

use std::collections::HashMap;
use std::time::Duration;

use crate::ownership::owner_and_rank;
use crate::timing::{
    AT_TICK_BACKUP_DELAYS, BACKUP_LEADS, CLAIM_LEAD, CLAIM_TIMEOUT, MAX_TICK_LATENESS,
    MISSED_RECORD_WINDOW, PREPARE_LEAD, SLOW_OWNER_GRACE, SLOW_OWNER_WINDOW,
};
use crate::values::Horizon;

/// When a tick is claimed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ClaimMode {
    /// By its owner, `CLAIM_LEAD` before the tick; its process is started
    /// ahead and released at the tick.
    Ahead,
    /// At the tick: the job's policy needs the state at that moment (overlap
    /// `forbid`/`replace`, catch-up) or it runs in a container.
    AtTick,
}

impl ClaimMode {
    /// How `job`'s ticks are claimed: ahead by their owner, with the process
    /// started at a gate, unless the policy needs the state at the tick or
    /// the run is a container.
    pub fn of(job: &crate::job::Job) -> ClaimMode {
        if job.container.is_none()
            && job.policy.overlap == crate::job::Overlap::Allow
            && job.policy.catch_up.is_zero()
        {
            ClaimMode::Ahead
        } else {
            ClaimMode::AtTick
        }
    }
}

/// This worker's view of the fleet.
pub struct View<'a> {
    pub me: &'a str,
    /// Registered workers that take ticks (not draining).
    pub workers: &'a [String],
    /// The horizons the workers published, as last seen.
    pub horizons: &'a HashMap<String, Horizon>,
    /// This worker's fleet fingerprint (`ownership::fleet_fingerprint`); a
    /// horizon computed under another fleet does not cover ticks.
    pub fleet: u64,
}

/// What to do about a tick now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Not this worker's to claim, by the current view.
    NotMine,
    /// Nothing yet: decide again at this time (epoch ms, this worker's clock).
    WaitUntil(i64),
    /// This worker owns the claim-ahead tick: start its process at the gate
    /// now, claim at `claim_at`.
    Prepare { claim_at: i64 },
    /// Claim now, as owner (`rank` 0) or as a backup.
    Claim { rank: usize },
    /// Past the lateness bound and nobody is known to have it: record it as
    /// missed (claimed with a `missed` flag, so it is recorded once).
    Missed { rank: usize },
}

fn ms(d: Duration) -> i64 {
    d.as_millis() as i64
}

/// The decision for one tick of `job` due at `tick_ms`, at `now_ms` by this
/// worker's clock.
pub fn decide(view: &View, job: &str, tick_ms: i64, mode: ClaimMode, now_ms: i64) -> Decision {
    let Some((owner, Some(rank))) = owner_and_rank(view.workers, view.me, job, tick_ms) else {
        return Decision::NotMine;
    };
    let too_late = now_ms > tick_ms + ms(MAX_TICK_LATENESS);
    if now_ms > tick_ms + ms(MAX_TICK_LATENESS + MISSED_RECORD_WINDOW) {
        // Too old even to record; the claim-TTL inequality counts on it.
        return Decision::NotMine;
    }
    match rank {
        0 => {
            if mode == ClaimMode::Ahead {
                let prepare_at = tick_ms - ms(PREPARE_LEAD);
                let claim_at = tick_ms - ms(CLAIM_LEAD);
                if now_ms < prepare_at {
                    return Decision::WaitUntil(prepare_at);
                }
                if now_ms < claim_at {
                    return Decision::Prepare { claim_at };
                }
            } else if now_ms < tick_ms {
                return Decision::WaitUntil(tick_ms);
            }
            if too_late {
                Decision::Missed { rank }
            } else {
                Decision::Claim { rank }
            }
        }
        1 | 2 => {
            // A horizon says nothing of ticks before its owner started
            // taking ticks into account (a worker that just joined).
            let published = view.horizons.get(owner).filter(|h| h.since <= tick_ms);
            let owner_horizon = published.map(|h| match mode {
                ClaimMode::Ahead => h.ahead,
                ClaimMode::AtTick => h.at_tick,
            });
            // Computed under another fleet, the horizon shows the owner
            // alive but not that it has this tick: after a fleet change the
            // tick may be the owner's only since (and its claim lost).
            let same_fleet = published.is_some_and(|h| h.fleet == 0 || h.fleet == view.fleet);
            let covered = same_fleet && owner_horizon.is_some_and(|h| h >= tick_ms);
            // An owner whose horizon is close behind is alive, only slow.
            let slow = owner_horizon.is_some_and(|h| h >= tick_ms - ms(SLOW_OWNER_WINDOW));
            let normal_stage = match mode {
                ClaimMode::Ahead => tick_ms - ms(BACKUP_LEADS[rank - 1]),
                ClaimMode::AtTick => tick_ms + ms(AT_TICK_BACKUP_DELAYS[rank - 1]),
            };
            let stage = if slow {
                let second = ms(AT_TICK_BACKUP_DELAYS[1] - AT_TICK_BACKUP_DELAYS[0]);
                tick_ms + ms(SLOW_OWNER_GRACE) + if rank == 2 { second } else { 0 }
            } else {
                normal_stage
            };
            if covered {
                return Decision::NotMine;
            }
            if now_ms < stage {
                return Decision::WaitUntil(stage);
            }
            match too_late {
                false => Decision::Claim { rank },
                // One backup records the miss, the other leaves it be.
                true if rank == 1 => Decision::Missed { rank },
                true => Decision::NotMine,
            }
        }
        _ => Decision::NotMine,
    }
}

/// When a worker decides again about a tick whose `n`th claim from it had
/// an unknown outcome (never sent, or etcd never said), learned at `now_ms`:
/// 1 s later, then 2 s, then every 4 s, so a tick is tried a few times
/// within its windows; but no later than `CLAIM_TIMEOUT` before the last
/// moment `decide` allows any attempt, so one last attempt (claim, or record
/// as missed) is made whenever the worker learns in time. Nobody may have
/// the tick: the owner's backups can fail alike. A second claim of a tick
/// that was won after all loses on its claim key.
pub fn decide_again_at(tick_ms: i64, now_ms: i64, n: u32) -> i64 {
    let delay = 1000i64 << (n.clamp(1, 3) - 1);
    let last_chance = tick_ms + ms(MAX_TICK_LATENESS + MISSED_RECORD_WINDOW) - ms(CLAIM_TIMEOUT);
    if now_ms < last_chance {
        (now_ms + delay).min(last_chance)
    } else {
        now_ms + delay
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ownership::ranking;

    fn fleet(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("w{i}")).collect()
    }

    #[test]
    fn the_owner_prepares_then_claims_ahead_and_backups_wait_for_its_horizon() {
        let workers = fleet(3);
        let t = 1_000_000;
        let ranked = ranking(&workers, "j", t);
        let mut horizons = HashMap::new();
        let none = HashMap::new();
        let view = |me| View {
            me,
            workers: &workers,
            horizons: &none,
            fleet: 0,
        };
        let owner = ranked[0];
        assert_eq!(
            decide(&view(owner), "j", t, ClaimMode::Ahead, t - 5000),
            Decision::WaitUntil(t - 1200)
        );
        assert_eq!(
            decide(&view(owner), "j", t, ClaimMode::Ahead, t - 800),
            Decision::Prepare { claim_at: t - 600 }
        );
        assert_eq!(
            decide(&view(owner), "j", t, ClaimMode::Ahead, t - 600),
            Decision::Claim { rank: 0 }
        );
        assert_eq!(
            decide(&view(owner), "j", t, ClaimMode::Ahead, t + 10_001),
            Decision::Missed { rank: 0 }
        );
        // Backups: wait for their stage, then act unless the owner's horizon covers the tick.
        let b1 = ranked[1];
        assert_eq!(
            decide(&view(b1), "j", t, ClaimMode::Ahead, t - 600),
            Decision::WaitUntil(t - 250)
        );
        assert_eq!(
            decide(&view(b1), "j", t, ClaimMode::Ahead, t - 250),
            Decision::Claim { rank: 1 }
        );
        horizons.insert(
            owner.to_string(),
            Horizon {
                ahead: t,
                at_tick: 0,
                since: 0,
                fleet: 0,
            },
        );
        let covered = View {
            me: b1,
            workers: &workers,
            horizons: &horizons,
            fleet: 0,
        };
        assert_eq!(
            decide(&covered, "j", t, ClaimMode::Ahead, t - 250),
            Decision::NotMine
        );
        // The same horizon computed under another fleet (a worker left since,
        // so the tick may have become the owner's only then) covers nothing:
        // the owner is alive, so its backup waits out the slow-owner grace,
        // then claims.
        let mut elsewhere = horizons.clone();
        elsewhere.get_mut(owner).unwrap().fleet = 7;
        let other_fleet = View {
            me: b1,
            workers: &workers,
            horizons: &elsewhere,
            fleet: 8,
        };
        assert_eq!(
            decide(&other_fleet, "j", t, ClaimMode::Ahead, t - 250),
            Decision::WaitUntil(t + 1000)
        );
        assert_eq!(
            decide(&other_fleet, "j", t, ClaimMode::Ahead, t + 1000),
            Decision::Claim { rank: 1 }
        );
        let same_fleet = View {
            fleet: 7,
            ..other_fleet
        };
        assert_eq!(
            decide(&same_fleet, "j", t, ClaimMode::Ahead, t - 250),
            Decision::NotMine
        );
        // The at-tick horizon is separate.
        assert_eq!(
            decide(&covered, "j", t, ClaimMode::AtTick, t + 300),
            Decision::Claim { rank: 1 }
        );
        assert_eq!(
            decide(&view(ranked[2]), "j", t, ClaimMode::AtTick, t + 300),
            Decision::WaitUntil(t + 600)
        );
        assert_eq!(
            decide(&view("stranger"), "j", t, ClaimMode::Ahead, t),
            Decision::NotMine
        );
    }

    /// A worker that joins (restarted, its clock ahead) claims from its
    /// start on and publishes a horizon past earlier ticks it never took
    /// into account: for those its backups step in as for a dead owner.
    #[test]
    fn an_unsettled_claim_is_tried_again_with_back_off_and_a_last_chance() {
        let t = 1_000_000;
        // 1 s, 2 s, then 4 s after the outcome was learned.
        assert_eq!(decide_again_at(t, t - 600, 1), t + 400);
        assert_eq!(decide_again_at(t, t + 1000, 2), t + 3000);
        assert_eq!(decide_again_at(t, t + 1000, 3), t + 5000);
        assert_eq!(decide_again_at(t, t + 1000, 9), t + 5000);
        // Never past the last moment a claim sent then still goes out.
        let last = t + 15_000 - 5_000;
        assert_eq!(decide_again_at(t, t + 8000, 3), last);
        assert_eq!(decide_again_at(t, last - 1, 2), last);
        // Learned after it: decided again (`decide` says NotMine by then).
        assert_eq!(decide_again_at(t, last + 500, 1), last + 1500);
    }

    #[test]
    fn a_horizon_covers_nothing_before_its_owner_started() {
        let workers = fleet(3);
        let t = 70_000;
        let ranked = ranking(&workers, "j", t);
        let horizons = HashMap::from([(
            ranked[0].to_string(),
            Horizon {
                ahead: t + 2000,
                at_tick: t + 2000,
                since: t + 500,
                fleet: 0,
            },
        )]);
        let view = View {
            me: ranked[1],
            workers: &workers,
            horizons: &horizons,
            fleet: 0,
        };
        assert_eq!(
            decide(&view, "j", t, ClaimMode::Ahead, t - 250),
            Decision::Claim { rank: 1 }
        );
        assert_eq!(
            decide(&view, "j", t, ClaimMode::AtTick, t + 300),
            Decision::Claim { rank: 1 }
        );
        // From its start on, it is covered as usual.
        let t2 = t + 1000;
        let ranked2 = ranking(&workers, "j", t2);
        let horizons2 = HashMap::from([(
            ranked2[0].to_string(),
            Horizon {
                ahead: t + 2000,
                at_tick: t + 2000,
                since: t + 500,
                fleet: 0,
            },
        )]);
        let view2 = View {
            me: ranked2[1],
            workers: &workers,
            horizons: &horizons2,
            fleet: 0,
        };
        assert_eq!(
            decide(&view2, "j", t2, ClaimMode::Ahead, t2 - 250),
            Decision::NotMine
        );
    }

    #[test]
    fn backups_give_a_slow_owner_more_time() {
        let workers = fleet(3);
        let t = 50_000;
        let ranked = ranking(&workers, "j", t);
        // The owner settled the instant before: alive, only slow.
        let horizons = HashMap::from([(
            ranked[0].to_string(),
            Horizon {
                ahead: t - 1000,
                at_tick: t - 1000,
                since: 0,
                fleet: 0,
            },
        )]);
        let view = |me| View {
            me,
            workers: &workers,
            horizons: &horizons,
            fleet: 0,
        };
        assert_eq!(
            decide(&view(ranked[1]), "j", t, ClaimMode::Ahead, t - 250),
            Decision::WaitUntil(t + 1000)
        );
        assert_eq!(
            decide(&view(ranked[2]), "j", t, ClaimMode::AtTick, t + 300),
            Decision::WaitUntil(t + 1300)
        );
        assert_eq!(
            decide(&view(ranked[1]), "j", t, ClaimMode::Ahead, t + 1000),
            Decision::Claim { rank: 1 }
        );
    }

    #[test]
    fn the_owner_claims_at_tick_ticks_when_due() {
        let workers = fleet(2);
        let t = 7_000;
        let owner = ranking(&workers, "j", t)[0];
        let view = View {
            me: owner,
            workers: &workers,
            horizons: &HashMap::new(),
            fleet: 0,
        };
        assert_eq!(
            decide(&view, "j", t, ClaimMode::AtTick, t - 1),
            Decision::WaitUntil(t)
        );
        assert_eq!(
            decide(&view, "j", t, ClaimMode::AtTick, t),
            Decision::Claim { rank: 0 }
        );
    }

    /// A fleet simulated against a model of etcd: claims are create-if-absent
    /// keys that expire `CLAIM_TTL` after they are written; horizons and the
    /// worker set reach the others through a delayed watch; workers have
    /// skewed clocks, die, and are cut off from etcd.
    mod simulation {
        use super::*;
        use crate::timing::{CLAIM_TTL, MAX_CLOCK_SKEW};
        use proptest::prelude::*;
        use std::collections::BTreeMap;

        const JOBS: [(&str, ClaimMode); 4] = [
            ("a", ClaimMode::Ahead),
            ("b", ClaimMode::Ahead),
            ("c", ClaimMode::AtTick),
            ("d", ClaimMode::Ahead),
        ];
        const STEP: i64 = 10;
        const LEASE_TTL: i64 = 4_000;

        #[derive(Debug, Clone)]
        struct WorkerSpec {
            offset: i64,
            dies_at: Option<i64>,
            cut: Option<(i64, i64)>,
        }

        #[derive(Debug, Clone)]
        struct Scenario {
            workers: Vec<WorkerSpec>,
            latency: i64,
            watch_delay: i64,
            end: i64,
        }

        /// (job, tick, claimed only to record it as missed)
        type Attempt = (String, i64, bool);

        /// A claim in flight: sent by `worker` at real time `sent`, reaching
        /// etcd at `arrives` (never, if the worker is cut off then).
        struct Request {
            worker: usize,
            arrives: i64,
            claims: Vec<Attempt>,
            /// (mode, instant, fleet fingerprint it was computed under)
            horizon: Option<(ClaimMode, i64, u64)>,
        }

        #[derive(Default)]
        struct Outcome {
            /// (job, tick) -> (worker, real time it was claimed, missed flag)
            claimed: BTreeMap<(String, i64), (usize, i64, bool)>,
            /// Claims that were created while an earlier claim of the same
            /// tick was still alive would be duplicates; the model counts
            /// creations after an expiry instead.
            recreated: Vec<(String, i64)>,
        }

        fn impaired(w: &WorkerSpec, from: i64, to: i64) -> bool {
            w.dies_at.is_some_and(|d| d <= to) || w.cut.is_some_and(|(a, b)| a <= to && b >= from)
        }

        fn run(s: &Scenario) -> Outcome {
            let n = s.workers.len();
            let ids = fleet(n);
            let mut out = Outcome::default();
            // What etcd holds: claim key -> (created, worker); horizons.
            let mut keys: HashMap<(String, i64), (i64, usize)> = HashMap::new();
            let mut horizons_at: Vec<(i64, usize, Horizon)> = Vec::new();
            let mut published: Vec<Horizon> = vec![Horizon::default(); n];
            let mut in_flight: Vec<Request> = Vec::new();
            // Per worker: the ticks it has sent claims of, when it looks at
            // each again (never, once etcd answered: `i64::MAX`), and how
            // many of its claims of it had an unknown outcome.
            let mut sent: Vec<HashMap<(String, i64), (i64, u32)>> = vec![HashMap::new(); n];
            // Per worker: its own claim batches not yet answered, and when
            // they will be (a batch sent while cut off is resolved once etcd
            // answers again: 2 s after the cut, the key still absent).
            let mut pending: Vec<Vec<(ClaimMode, i64, i64)>> = vec![Vec::new(); n];
            let mut t = 0;
            while t < s.end {
                // etcd applies what arrives now.
                let (now_arriving, later): (Vec<_>, Vec<_>) =
                    in_flight.drain(..).partition(|r| r.arrives <= t);
                in_flight = later;
                for r in now_arriving {
                    for (job, tick, missed) in r.claims {
                        let key = (job.clone(), tick);
                        let alive = keys
                            .get(&key)
                            .is_some_and(|(created, _)| t - created < ms(CLAIM_TTL));
                        if !alive {
                            if out.claimed.contains_key(&key) {
                                out.recreated.push(key.clone());
                            }
                            keys.insert(key.clone(), (t, r.worker));
                            out.claimed.insert(key, (r.worker, t, missed));
                        }
                    }
                    if let Some((mode, tick, fleet)) = r.horizon {
                        // The value sent is written as it is: it may go down.
                        let h = &mut published[r.worker];
                        h.fleet = fleet;
                        match mode {
                            ClaimMode::Ahead => h.ahead = tick,
                            ClaimMode::AtTick => h.at_tick = tick,
                        }
                        horizons_at.push((t + s.watch_delay, r.worker, *h));
                    }
                }
                // The worker set everyone sees: registered until the lease expires.
                let live: Vec<String> = (0..n)
                    .filter(|&i| s.workers[i].dies_at.is_none_or(|d| t < d + LEASE_TTL))
                    .map(|i| ids[i].clone())
                    .collect();
                let fleet = crate::ownership::fleet_fingerprint(&live);
                let mut seen: HashMap<String, Horizon> = HashMap::new();
                for (visible, w, h) in &horizons_at {
                    if *visible <= t {
                        seen.insert(ids[*w].clone(), *h);
                    }
                }
                for (i, spec) in s.workers.iter().enumerate() {
                    if spec.dies_at.is_some_and(|d| t >= d) {
                        continue;
                    }
                    let now = t + spec.offset;
                    let view = View {
                        me: &ids[i],
                        workers: &live,
                        horizons: &seen,
                        fleet,
                    };
                    // Every whole second in the window, per job.
                    let mut batches: BTreeMap<(i64, ClaimMode, bool), Vec<Attempt>> =
                        BTreeMap::new();
                    let first = (now - ms(MAX_TICK_LATENESS + MISSED_RECORD_WINDOW) - 1000)
                        .div_euclid(1000)
                        * 1000;
                    for tick in (first..=now + ms(PREPARE_LEAD)).step_by(1000) {
                        if tick < 1000 {
                            continue;
                        }
                        for (job, mode) in JOBS {
                            let key = (job.to_string(), tick);
                            if sent[i].get(&key).is_some_and(|(look, _)| *look > t) {
                                continue;
                            }
                            let (missed, rank) = match decide(&view, job, tick, mode, now) {
                                Decision::Claim { rank } => (false, rank),
                                Decision::Missed { rank } => (true, rank),
                                _ => continue,
                            };
                            batches.entry((tick, mode, rank == 0)).or_default().push((
                                job.to_string(),
                                tick,
                                missed,
                            ));
                        }
                    }
                    let cut = spec.cut.filter(|(a, b)| *a <= t && t <= *b);
                    pending[i].retain(|(_, _, settles)| *settles > t);
                    for ((tick, mode, owned), claims) in batches {
                        let arrives = if cut.is_some() {
                            i64::MAX
                        } else {
                            t + s.latency
                        };
                        // Sent while cut off: it times out, and once etcd
                        // answers again the key is found absent for 2 s.
                        let settles = match cut {
                            Some((_, end)) => end.max(t + ms(CLAIM_TIMEOUT)) + 2_000 + s.latency,
                            None => arrives,
                        };
                        for (job, tick, _) in &claims {
                            let entry = sent[i].entry((job.clone(), *tick)).or_default();
                            *entry = match cut {
                                // Its outcome learned as unknown once etcd
                                // answers again: decided again after that.
                                Some(_) => {
                                    (decide_again_at(*tick, settles, entry.1 + 1), entry.1 + 1)
                                }
                                None => (i64::MAX, entry.1),
                            };
                        }
                        // The horizon never passes an instant of its own still
                        // in doubt (see `planner::Planner::send`).
                        let horizon = owned.then(|| {
                            let doubt = pending[i]
                                .iter()
                                .filter(|(m, at, _)| *m == mode && *at < tick)
                                .map(|(_, at, _)| *at)
                                .min();
                            (mode, doubt.map_or(tick, |d| d - 1), fleet)
                        });
                        if owned {
                            pending[i].push((mode, tick, settles));
                        }
                        in_flight.push(Request {
                            worker: i,
                            arrives,
                            claims,
                            horizon,
                        });
                    }
                }
                t += STEP;
            }
            out
        }

        fn scenario(max_offset: i64) -> impl Strategy<Value = Scenario> {
            let worker = (
                -max_offset..=max_offset,
                proptest::option::weighted(0.3, 3_000i64..20_000),
                proptest::option::weighted(0.3, (3_000i64..20_000, 500i64..6_000)),
            )
                .prop_map(|(offset, dies_at, cut)| WorkerSpec {
                    offset,
                    dies_at,
                    cut: cut.map(|(a, len)| (a, a + len)),
                });
            (proptest::collection::vec(worker, 1..6), 1i64..80, 0i64..60).prop_map(
                |(workers, latency, watch_delay)| Scenario {
                    workers,
                    latency,
                    watch_delay,
                    end: 26_000,
                },
            )
        }

        /// Workers that never die, each maybe cut off from etcd once (for up
        /// to 12 s, so owner and backups are often all cut at one tick).
        fn scenario_with_cuts() -> impl Strategy<Value = Scenario> {
            let worker = (
                -50i64..=50,
                proptest::option::weighted(0.6, (3_000i64..14_000, 500i64..12_000)),
            )
                .prop_map(|(offset, cut)| WorkerSpec {
                    offset,
                    dies_at: None,
                    cut: cut.map(|(a, len)| (a, a + len)),
                });
            (proptest::collection::vec(worker, 1..5), 1i64..80, 0i64..60).prop_map(
                |(workers, latency, watch_delay)| Scenario {
                    workers,
                    latency,
                    watch_delay,
                    end: 34_000,
                },
            )
        }

        proptest! {
            #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

            /// However the owner and backups of a tick are cut off from etcd
            /// around it (all of them, at once), the tick is claimed (to run,
            /// or to record it as missed) when its owner or first backup
            /// reaches etcd again soon enough: its claims whose outcome was
            /// unknown are decided again.
            #[test]
            fn every_tick_is_claimed_once_its_owner_or_first_backup_reaches_etcd(
                s in scenario_with_cuts()
            ) {
                let out = run(&s);
                let ids = fleet(s.workers.len());
                for tick in (5_000..=s.end - 17_000).step_by(1000) {
                    for (job, _) in JOBS {
                        let ranked = ranking(&ids, job, tick);
                        let index = |w: &str| ids.iter().position(|x| x == w).unwrap();
                        // Back 2 s (and a retry delay) before the lateness
                        // bound: in time to claim it or record it as missed.
                        let back_in_time = ranked.iter().take(2).any(|w| {
                            s.workers[index(w)].cut.is_none_or(|(_, end)| end <= tick + 7_000)
                        });
                        let key = (job.to_string(), tick);
                        prop_assert!(
                            !back_in_time || out.claimed.contains_key(&key),
                            "{key:?} never claimed"
                        );
                    }
                }
            }

            /// Whatever the skew (within the bound), deaths and cuts, a claim
            /// key is never created twice for one tick: the TTL outlives
            /// every attempt the decision allows.
            #[test]
            fn no_tick_is_claimed_twice(s in scenario(ms(MAX_CLOCK_SKEW) / 2)) {
                let out = run(&s);
                prop_assert!(out.recreated.is_empty(), "claimed twice: {:?}", out.recreated);
            }

            /// With clocks close together, every tick is claimed before it is
            /// due (claim-ahead) or soon after (at-tick), by a worker that is
            /// up, unless its owner and both backups were all dead or cut off
            /// around it; and a tick is claimed by a worker that died before
            /// it only if that worker died within `CLAIM_LEAD` of it.
            #[test]
            fn every_tick_is_claimed_while_a_ranked_worker_is_up(s in scenario(50)) {
                let out = run(&s);
                let ids = fleet(s.workers.len());
                for tick in (5_000..s.end - 12_000).step_by(1000) {
                    let live: Vec<String> = (0..s.workers.len())
                        .filter(|&i| s.workers[i].dies_at.is_none_or(|d| tick < d + LEASE_TTL))
                        .map(|i| ids[i].clone())
                        .collect();
                    for (job, _) in JOBS {
                        let ranked = ranking(&live, job, tick);
                        let index = |w: &str| ids.iter().position(|x| x == w).unwrap();
                        let all_impaired = ranked.iter().take(3).all(|w| {
                            impaired(&s.workers[index(w)], tick - 3_000, tick + 1_500)
                        });
                        let key = (job.to_string(), tick);
                        match out.claimed.get(&key) {
                            None => prop_assert!(all_impaired, "{key:?} never claimed"),
                            Some((w, at, missed)) => {
                                if !all_impaired {
                                    prop_assert!(!missed, "{key:?} recorded missed");
                                    // On time, or (an owner that died or was cut
                                    // off shortly before) after the slow-owner grace.
                                    let deadline = tick + ms(SLOW_OWNER_GRACE)
                                        + ms(AT_TICK_BACKUP_DELAYS[1] - AT_TICK_BACKUP_DELAYS[0]);
                                    // (+ 50 ms: the clocks' offsets here)
                                    prop_assert!(*at <= deadline + s.latency + s.watch_delay + STEP + 50,
                                        "{key:?} claimed late at {at}");
                                }
                                if let Some(d) = s.workers[*w].dies_at {
                                    prop_assert!(d > tick || tick - d <= ms(CLAIM_LEAD) + s.latency + STEP + 50,
                                        "{key:?} claimed by a worker dead since {d}");
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}
