//! Timing constants of the run-once protocol, derived from one another so the
//! safety inequalities in ARCHITECTURE.md cannot be broken by editing one alone.
//!
//! A tick's life on the worker that owns it (see `ownership.rs` and `plan.rs`):
//!
//! ```text
//!   t - PREPARE_LEAD   start the command's process, held at a gate (claim-ahead jobs)
//!   t - CLAIM_LEAD     claim the tick in etcd, batched with the owner's other ticks
//!   t                  open the gate (or claim now, for jobs whose policy needs the
//!                      state at the tick: overlap forbid/replace, catch-up, containers)
//!   t + PREPARED_HOLD  a process still at its gate (claim in doubt) is killed
//!   (any time)         a claim whose outcome stayed unknown: the tick is decided
//!                      again 1-4 s later (`plan::decide_again_at`)
//!   t + LATENESS       too late: the tick is recorded as missed, never run
//! ```
//!
//! Backups (the next workers in the tick's ranking) claim a tick only when
//! the owner's horizon shows it has not: `BACKUP_LEADS` before the tick for
//! claim-ahead ticks, `AT_TICK_BACKUP_DELAYS` after it for the others.

use std::time::Duration;

/// A worker never tries to claim a tick that is older than this by its own
/// clock (a worker that stalled or was partitioned skips the tick instead).
pub const MAX_TICK_LATENESS: Duration = Duration::from_secs(10);

/// A tick that nobody started within `MAX_TICK_LATENESS` is recorded as
/// missed by its owner (or first backup) within this much more; after that
/// nobody touches it.
pub const MISSED_RECORD_WINDOW: Duration = Duration::from_secs(5);

/// A claim request that has not been answered within this is abandoned and
/// the worker asks etcd what became of it (see `CLAIM_RESOLVE_WINDOW`).
pub const CLAIM_TIMEOUT: Duration = Duration::from_secs(5);

/// Largest clock difference between any two workers the protocol tolerates.
pub const MAX_CLOCK_SKEW: Duration = Duration::from_secs(30);

/// The owner of a claim-ahead tick claims it this long before the tick, and
/// never earlier. Shorter than a second, so a worker killed at `d` holds no
/// claim on a tick later than `d + CLAIM_LEAD`.
pub const CLAIM_LEAD: Duration = Duration::from_millis(600);

/// The owner of a claim-ahead shell tick starts its process this long before
/// the tick, held at a gate until the tick (so the fork and exec cost is paid
/// before it). A process whose claim is lost is killed without running.
pub const PREPARE_LEAD: Duration = Duration::from_millis(1200);

/// When the owner's horizon does not yet cover a claim-ahead tick, its first
/// and second backups claim it this long before the tick.
pub const BACKUP_LEADS: [Duration; 2] = [Duration::from_millis(250), Duration::from_millis(100)];

/// When the owner's horizon does not yet cover an at-tick tick, its first and
/// second backups claim it this long after the tick.
pub const AT_TICK_BACKUP_DELAYS: [Duration; 2] =
    [Duration::from_millis(300), Duration::from_millis(600)];

/// An owner whose horizon is at most this far behind a tick is alive and
/// claiming, only slow (etcd answering late under load): its backups give it
/// `SLOW_OWNER_GRACE` more before they step in, instead of adding their
/// claims to an etcd that is already behind.
pub const SLOW_OWNER_WINDOW: Duration = Duration::from_secs(2);

/// How long after the tick the backups of a slow owner wait (the second
/// backup waits the difference between its stage and the first's longer).
pub const SLOW_OWNER_GRACE: Duration = Duration::from_millis(1000);

/// Most ticks claimed in one etcd transaction.
pub const CLAIM_BATCH: usize = 10;

/// Claims are attached to a lease of at least this TTL, never renewed.
/// Safety needs `CLAIM_TTL > CLAIM_LEAD + 2 * MAX_CLOCK_SKEW +
/// MAX_TICK_LATENESS + MISSED_RECORD_WINDOW + CLAIM_TIMEOUT` (80.6 s): the
/// first claim of a tick is written no earlier than `t - CLAIM_LEAD - skew`
/// (real time), the last attempt (a missed record's claim) reaches etcd no
/// later than `t + skew + MAX_TICK_LATENESS + MISSED_RECORD_WINDOW +
/// CLAIM_TIMEOUT`. The tests below check this and the other inequalities it
/// must meet.
pub const CLAIM_TTL: Duration = Duration::from_secs(90);

/// How long a worker keeps asking etcd whether a claim that got no answer was
/// won. Needs `CLAIM_TIMEOUT + CLAIM_RESOLVE_WINDOW < CLAIM_TTL`: the key of
/// an attempt that committed is still there to say so for the whole window.
pub const CLAIM_RESOLVE_WINDOW: Duration = Duration::from_secs(60);

/// A worker asks for a fresh claim lease this often; every claim made
/// meanwhile shares it. Short, because etcd deletes all of a lease's keys in
/// one step when it expires: at 1000 ticks/s a 10-s lease held about 3,300
/// claims per worker, and its expiry stalled etcd's apply loop for seconds.
/// The grant is made beside the claims, never in their way (see
/// `CLAIM_LEASE_REUSE`).
pub const CLAIM_LEASE_ROTATION: Duration = Duration::from_secs(1);

/// How long a claim lease may still take new claims while its successor's
/// grant is slow or fails (etcd's answers held up): claims go on under it
/// meanwhile. Its TTL is `CLAIM_TTL + CLAIM_LEASE_REUSE + CLAIM_TIMEOUT`, so
/// each claim lives at least `CLAIM_TTL`.
pub const CLAIM_LEASE_REUSE: Duration = Duration::from_secs(15);

/// A claim lease's TTL: a claim made under it up to `CLAIM_LEASE_REUSE` after
/// its grant was asked for, and committed up to `CLAIM_TIMEOUT` after that,
/// still lives `CLAIM_TTL`.
pub const CLAIM_LEASE_TTL: Duration = Duration::from_secs(
    CLAIM_TTL.as_secs() + CLAIM_LEASE_REUSE.as_secs() + CLAIM_TIMEOUT.as_secs(),
);

/// A catch-up tick younger than this is still protected by its claim key (an
/// earlier claim of it cannot have expired yet), so it is claimed like any
/// tick. Older ones also need the job's watermark below them. Safety needs
/// `CATCH_UP_KEY_SAFE_AGE + CLAIM_LEAD + 2 * MAX_CLOCK_SKEW + CLAIM_TIMEOUT < CLAIM_TTL`.
pub const CATCH_UP_KEY_SAFE_AGE: Duration = Duration::from_secs(
    CLAIM_TTL.as_secs() - 2 * MAX_CLOCK_SKEW.as_secs() - CLAIM_TIMEOUT.as_secs() - 10,
);

/// A worker that cannot renew its registration lease stops its `forbid` and
/// `replace` runs this long (at most a quarter of the lease TTL) before the
/// lease may expire, since their running marks go with it and another
/// worker could then start the job again (`registration::fence_guarded_runs`).
pub const LEASE_FENCE_MARGIN: Duration = Duration::from_secs(1);

/// A run that started ahead of its claim-ahead tick and is still going after
/// this long is marked as running in etcd (so the API counts it and a kill
/// finds it listed). Shorter runs never write a running mark.
pub const LAZY_RUNNING_MARK_AFTER: Duration = Duration::from_secs(1);

/// A run in progress puts its claim key again under a current claim lease
/// this often, so the key lives as long as the run (and `CLAIM_TTL` more): a
/// worker that dies in the middle of a long run leaves a claim for the
/// orphan sweep to find and record as `lost`. The first refresh must come
/// before the key can expire even for a claim learned late:
/// `CLAIM_TIMEOUT + CLAIM_RESOLVE_WINDOW + CLAIM_REFRESH_EVERY + CLAIM_TIMEOUT < CLAIM_TTL`.
pub const CLAIM_REFRESH_EVERY: Duration = Duration::from_secs(15);

/// A run-now request lives this long in etcd (workers act on it at once;
/// the claim keys, which live longer, make sure it runs once).
pub const RUN_NOW_REQUEST_TTL: Duration = Duration::from_secs(30);

/// A kill request lives this long in etcd.
pub const KILL_REQUEST_TTL: Duration = Duration::from_secs(10);

/// The owner's process starts for one instant are spread out to finish this
/// long before it (after `PREPARE_LEAD` began them).
pub const PREPARE_DONE_BEFORE: Duration = Duration::from_millis(150);

/// A process started ahead whose claim is still unsettled this long after
/// its tick (etcd answering late, a claim whose answer was lost) is killed
/// rather than kept at its gate for as long as the claim's resolution may
/// take (up to a minute: an overloaded machine held thousands so); a claim
/// won later still runs, from a process started then.
pub const PREPARED_HOLD: Duration = Duration::from_secs(2);

/// A run released at a tick checks its job's definition this long before it
/// (a job changed or deleted in the last moment is not run).
pub const RELEASE_CHECK: Duration = Duration::from_millis(30);

/// A tick this late when claimed is logged as caught up, not scheduled.
pub const CATCH_UP_LABEL_AGE: Duration = Duration::from_secs(1);

/// A claim made before this worker is registered (a catch-up or run-now
/// right after its start, a claim during a re-registration) waits this long
/// for the registration.
pub const WAIT_FOR_REGISTRATION: Duration = Duration::from_secs(10);

/// A running mark's write or deletion goes out this soon, batched with
/// others; the deletion of a `forbid` run's mark sooner if the job's next
/// tick is near (`FORBID_MARK_LEAD`).
pub const MARK_WRITE_DELAY: Duration = Duration::from_millis(100);

/// The deletion of a `forbid` run's mark is written at least this long
/// before the job's next tick (when that is sooner than `MARK_WRITE_DELAY`
/// after the run's end): that tick is claimed at the tick, as likely as not
/// by another worker, and would be a skip with the mark still there. By the
/// ending worker's clock: worker clocks further apart than this leave the
/// batching delay as the window.
pub const FORBID_MARK_LEAD: Duration = Duration::from_millis(50);

/// How long after a registration disappears its claims are swept (recorded
/// as lost): a worker only cut off for a moment registers again meanwhile
/// (same start time) and writes its own records.
pub const SWEEP_AFTER: Duration = Duration::from_secs(2);

/// etcd client: how long connecting may take, how long any request may
/// take (the protocol's own timeouts, such as `CLAIM_TIMEOUT`, are shorter
/// and decide first), and the HTTP/2 keep-alive ping period and its answer's
/// timeout, which find a dead connection well within a registration lease
/// (10 s by default). The ping period respects etcd's keep-alive enforcement
/// (`--grpc-keepalive-min-time`, 5 s by default).
pub const ETCD_CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
pub const ETCD_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
pub const ETCD_PING_EVERY: Duration = Duration::from_secs(6);
pub const ETCD_PING_TIMEOUT: Duration = Duration::from_secs(3);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claim_outlives_the_latest_possible_duplicate_attempt() {
        assert!(
            CLAIM_TTL
                > CLAIM_LEAD
                    + MAX_CLOCK_SKEW * 2
                    + MAX_TICK_LATENESS
                    + MISSED_RECORD_WINDOW
                    + CLAIM_TIMEOUT
        );
        assert!(
            CATCH_UP_KEY_SAFE_AGE + CLAIM_LEAD + MAX_CLOCK_SKEW * 2 + CLAIM_TIMEOUT < CLAIM_TTL
        );
        assert!(CATCH_UP_KEY_SAFE_AGE > MAX_TICK_LATENESS);
    }

    #[test]
    fn a_claim_that_lost_its_answer_can_be_resolved_while_its_key_lives() {
        assert!(CLAIM_TIMEOUT + CLAIM_RESOLVE_WINDOW < CLAIM_TTL);
    }

    #[test]
    fn a_long_runs_claim_is_refreshed_before_it_can_expire() {
        assert!(
            CLAIM_TIMEOUT + CLAIM_RESOLVE_WINDOW + CLAIM_REFRESH_EVERY + CLAIM_TIMEOUT < CLAIM_TTL
        );
    }

    #[test]
    fn etcd_client_timeouts_leave_the_protocol_its_own() {
        assert!(ETCD_REQUEST_TIMEOUT > CLAIM_TIMEOUT);
        assert!(ETCD_PING_EVERY >= Duration::from_secs(5));
        // A dead connection is found before a default registration lease
        // (10 s) runs out.
        assert!(ETCD_PING_EVERY + ETCD_PING_TIMEOUT < Duration::from_secs(10));
    }

    #[test]
    fn a_claim_lease_rotates_before_its_reuse_ends() {
        assert!(CLAIM_LEASE_ROTATION < CLAIM_LEASE_REUSE);
        assert!(CLAIM_TIMEOUT < CLAIM_LEASE_REUSE);
    }

    #[test]
    fn stages_come_in_order() {
        // Processes are started before the claim; backups act after the
        // owner's claim had time to show in its horizon.
        assert!(PREPARE_LEAD > CLAIM_LEAD);
        assert!(CLAIM_LEAD < Duration::from_secs(1));
        assert!(BACKUP_LEADS[0] < CLAIM_LEAD && BACKUP_LEADS[1] < BACKUP_LEADS[0]);
        assert!(AT_TICK_BACKUP_DELAYS[0] < AT_TICK_BACKUP_DELAYS[1]);
        assert!(AT_TICK_BACKUP_DELAYS[1] < MAX_TICK_LATENESS);
        assert!(SLOW_OWNER_GRACE > AT_TICK_BACKUP_DELAYS[1]);
        assert!(SLOW_OWNER_GRACE * 2 < MAX_TICK_LATENESS);
        // A prepared process is up before the tick, and its last check of
        // the job comes after the starts are done.
        assert!(RELEASE_CHECK < PREPARE_DONE_BEFORE && PREPARE_DONE_BEFORE < PREPARE_LEAD);
        assert!(CATCH_UP_LABEL_AGE < MAX_TICK_LATENESS);
        // Batched mark writes go out well within a second; a forbid run's
        // deletion, when due by its lead, is sooner than batching would be.
        assert!(MARK_WRITE_DELAY < Duration::from_secs(1));
        assert!(FORBID_MARK_LEAD < MARK_WRITE_DELAY);
    }
}
