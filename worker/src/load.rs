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
//! CPU of the machine (online CPUs from `/proc/stat`: the same scope as the
//! count, so a worker in a container limited to one CPU of a large host is
//! not held by the host's other tasks). It counts every process, so several
//! workers on one machine (the benchmarks) hold back together. The preparer
//! looks at it before each start (`run::Preparer`); a start held is put
//! back in its queue, behind any start wanted now.

use std::time::Duration;

/// How often a held start looks at the run queue again.
pub const RECHECK: Duration = Duration::from_millis(2);

/// Gives a start the go while the run queue is short enough.
#[derive(Debug, Clone)]
pub struct StartGate {
    /// Runnable tasks (all CPUs) at and above which starts wait; `None`: off.
    limit: Option<u32>,
}

impl StartGate {
    /// `per_cpu` runnable tasks for each of the machine's CPUs (0: off).
    pub fn new(per_cpu: u32) -> StartGate {
        let cpus = std::fs::read_to_string("/proc/stat")
            .ok()
            .and_then(|stat| online_cpus(&stat))
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get() as u32));
        StartGate {
            limit: (per_cpu > 0).then(|| per_cpu.saturating_mul(cpus)),
        }
    }

    /// Whether a start may go now: the run queue is below the limit (or
    /// the gate is off, or the count cannot be read).
    pub fn open(&self) -> bool {
        match self.limit {
            None => true,
            Some(limit) => runnable_now().is_none_or(|n| n < limit),
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

/// The machine's online CPUs: the `cpuN` lines of `/proc/stat`.
fn online_cpus(stat: &str) -> Option<u32> {
    let n = stat
        .lines()
        .filter(|l| {
            l.strip_prefix("cpu")
                .is_some_and(|rest| rest.starts_with(|c: char| c.is_ascii_digit()))
        })
        .count() as u32;
    (n > 0).then_some(n)
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
    fn counts_online_cpus() {
        let stat = "cpu  1 2 3\ncpu0 1 2 3\ncpu1 4 5 6\nintr 1\nctxt 2\n";
        assert_eq!(online_cpus(stat), Some(2));
        assert_eq!(online_cpus("intr 1\n"), None);
    }

    #[test]
    fn a_gate_opens_below_its_limit_only() {
        assert!(StartGate { limit: None }.open());
        // The reader itself is runnable: a limit of one is never met.
        assert!(!StartGate { limit: Some(1) }.open());
        assert!(StartGate {
            limit: Some(u32::MAX)
        }
        .open());
        assert!(StartGate::new(0).open());
    }
}
