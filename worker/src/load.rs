//! Holds process starts while the machine's run queue is long.
//!
//! A shell run costs about a millisecond and a half of CPU to start (fork,
//! exec, the shell's own start-up). Asked for more starts than the CPUs can
//! make, the preparer used to start them all the same: thousands of shells
//! starting up together were runnable at once, the scheduler shared the CPUs
//! among them, and etcd and MongoDB beside them (or the worker's own claims
//! and records) got so little of it that etcd's apply fell seconds behind,
//! leases could not be renewed and claims went unanswered. Starting fewer
//! processes than asked is the only way out: a start that waits here past
//! its tick is not made, and the tick is recorded as missed, which is what
//! the machine could not carry.
//!
//! The signal is the number of runnable tasks on the machine right now (the
//! fourth field of `/proc/loadavg`), against `GDTS_START_MAX_RUNNABLE` per
//! CPU. It counts every process, so several workers on one machine (the
//! benchmarks) hold back together.

use std::time::{Duration, Instant};

/// How often a held start looks at the run queue again.
const RECHECK: Duration = Duration::from_millis(2);

/// Gives a start the go while the run queue is short enough.
#[derive(Debug, Clone)]
pub struct StartGate {
    /// Runnable tasks (all CPUs) at and above which starts wait; `None`: off.
    limit: Option<u32>,
}

impl StartGate {
    /// `per_cpu` runnable tasks for each of the machine's CPUs (0: off).
    pub fn new(per_cpu: u32) -> StartGate {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get() as u32);
        StartGate {
            limit: (per_cpu > 0).then(|| per_cpu.saturating_mul(cpus)),
        }
    }

    /// Waits until the run queue is below the limit or `until` has passed;
    /// `true` if a start may go now. Blocks the calling thread: for the
    /// preparer's threads only.
    pub fn wait(&self, until: Instant) -> bool {
        let Some(limit) = self.limit else {
            return true;
        };
        loop {
            // Unreadable (not Linux, no /proc): never holds anything.
            let short = runnable_now().is_none_or(|n| n < limit);
            if short {
                return true;
            }
            let now = Instant::now();
            if now >= until {
                return false;
            }
            std::thread::sleep(RECHECK.min(until - now));
        }
    }
}

/// Runnable tasks on the machine now, the reader included.
fn runnable_now() -> Option<u32> {
    runnable(&std::fs::read_to_string("/proc/loadavg").ok()?)
}

/// The runnable count of a `/proc/loadavg` line (`0.52 0.58 0.59 3/812 4242`).
fn runnable(loadavg: &str) -> Option<u32> {
    let tasks = loadavg.split_whitespace().nth(3)?;
    tasks.split_once('/')?.0.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_runnable_count() {
        assert_eq!(runnable("0.52 0.58 0.59 3/812 4242\n"), Some(3));
        assert_eq!(
            runnable("139.54 249.51 142.59 1561/10243 24900"),
            Some(1561)
        );
        assert_eq!(runnable("0.52 0.58 0.59"), None);
        assert_eq!(runnable("0.52 0.58 0.59 x/812 1"), None);
    }

    #[test]
    fn an_open_gate_never_waits_and_a_shut_one_waits_until_its_deadline() {
        let open = StartGate { limit: None };
        assert!(open.wait(Instant::now()));
        // The reader itself is runnable: a limit of one is never met.
        let shut = StartGate { limit: Some(1) };
        let until = Instant::now() + Duration::from_millis(20);
        assert!(!shut.wait(until));
        assert!(Instant::now() >= until);
        let wide = StartGate {
            limit: Some(u32::MAX),
        };
        assert!(wide.wait(Instant::now()));
    }
}
