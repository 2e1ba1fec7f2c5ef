//! Timing constants of the run-once protocol, derived from one another so the
//! safety inequality in ARCHITECTURE.md cannot be broken by editing one alone.

use std::time::Duration;

/// A worker never tries to claim a tick that is older than this by its own
/// clock (a worker that stalled or was partitioned skips the tick instead).
pub const MAX_TICK_LATENESS: Duration = Duration::from_secs(10);

/// A claim request that has not been answered within this is abandoned and
/// the tick is not run by this worker.
pub const CLAIM_TIMEOUT: Duration = Duration::from_secs(5);

/// Largest clock difference between any two workers the protocol tolerates.
pub const MAX_CLOCK_SKEW: Duration = Duration::from_secs(30);

/// Claims are attached to a lease of at least this TTL, never renewed.
/// Safety needs CLAIM_TTL > 2 * MAX_CLOCK_SKEW + MAX_TICK_LATENESS + CLAIM_TIMEOUT.
pub const CLAIM_TTL: Duration = Duration::from_secs(
    2 * MAX_CLOCK_SKEW.as_secs() + MAX_TICK_LATENESS.as_secs() + CLAIM_TIMEOUT.as_secs() + 15,
);

/// A worker opens a fresh claim lease at most this often; every claim made in
/// the window shares it. Its TTL is `CLAIM_TTL + CLAIM_LEASE_ROTATION`, so each
/// claim lives at least `CLAIM_TTL`.
pub const CLAIM_LEASE_ROTATION: Duration = Duration::from_secs(10);

/// A catch-up tick younger than this is still protected by its claim key (an
/// earlier claim of it cannot have expired yet), so it is claimed like any
/// tick. Older ones also need the job's watermark below them. Safety needs
/// CATCH_UP_KEY_SAFE_AGE + 2 * MAX_CLOCK_SKEW + CLAIM_TIMEOUT < CLAIM_TTL.
pub const CATCH_UP_KEY_SAFE_AGE: Duration = Duration::from_secs(
    CLAIM_TTL.as_secs() - 2 * MAX_CLOCK_SKEW.as_secs() - CLAIM_TIMEOUT.as_secs() - 5,
);

/// A run-now request lives this long in etcd (workers act on it at once;
/// the claim keys, which live longer, make sure it runs once).
pub const RUN_NOW_REQUEST_TTL: Duration = Duration::from_secs(30);

/// A kill request lives this long in etcd.
pub const KILL_REQUEST_TTL: Duration = Duration::from_secs(10);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claim_outlives_the_latest_possible_duplicate_attempt() {
        assert!(CLAIM_TTL > MAX_CLOCK_SKEW * 2 + MAX_TICK_LATENESS + CLAIM_TIMEOUT);
        assert!(CATCH_UP_KEY_SAFE_AGE + MAX_CLOCK_SKEW * 2 + CLAIM_TIMEOUT < CLAIM_TTL);
        assert!(CATCH_UP_KEY_SAFE_AGE > MAX_TICK_LATENESS);
    }
}
