//! What runs a job's command: the seam between a run (`run.rs`: claims,
//! checks, records) and the modules that start and stop processes. Each kind
//! of runner is one module with one entry point that takes a [`Launch`]:
//! `executor::run_prepared` (a shell process, started ahead of its tick and held
//! at a gate) and `container::run_container` (a Docker container, started at
//! its tick). Both end in the one supervision loop (`supervise.rs`). A new
//! kind is a module, a variant here and its arm in `run.rs`.

use std::time::Duration;

use chrono::{DateTime, Utc};
use gdts_common::job::{ContainerSpec, Job};
use tokio_util::sync::CancellationToken;

use crate::supervise::{KillReason, RunLimits};

/// The runner a job's runs go to.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Runner<'a> {
    /// The command in the worker's shell, as a process group of its own.
    Shell,
    /// The command in a container of `spec`'s image.
    Container(&'a ContainerSpec),
}

impl<'a> Runner<'a> {
    pub fn of(job: &'a Job) -> Runner<'a> {
        match &job.container {
            None => Runner::Shell,
            Some(spec) => Runner::Container(spec),
        }
    }

    /// Whether a run's process can be started before its tick and held at a
    /// gate until then (so that the tick only opens it). A container is
    /// created and started at its tick.
    pub fn starts_ahead(self) -> bool {
        matches!(self, Runner::Shell)
    }

    /// Whether only workers that reach Docker can run it.
    pub fn needs_docker(self) -> bool {
        matches!(self, Runner::Container(_))
    }
}

/// What a run hands its runner.
pub struct Launch<'a, K> {
    pub job: &'a Job,
    /// When the command starts (its tick); `None`: at once.
    pub release_at: Option<DateTime<Utc>>,
    pub limits: &'a RunLimits,
    /// The job's timeout.
    pub timeout: Option<Duration>,
    /// Cancelled when the run is to be killed...
    pub kill: &'a CancellationToken,
    /// ...and read then: why.
    pub kill_reason: K,
}

impl<K: Fn() -> KillReason> Launch<'_, K> {
    /// Why the run is being killed.
    pub fn kill_reason(&self) -> KillReason {
        (self.kill_reason)()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(json: &str) -> Job {
        Job::from_json(json).expect("a valid job")
    }

    #[test]
    fn a_job_with_an_image_goes_to_the_container_runner() {
        let shell = job(r#"{"name":"a","command":"true","cronExpr":"* * * * * * *"}"#);
        assert_eq!(Runner::of(&shell), Runner::Shell);
        assert!(Runner::of(&shell).starts_ahead());
        assert!(!Runner::of(&shell).needs_docker());
        let boxed = job(r#"{"name":"b","image":"busybox:1.36","cronExpr":"* * * * * * *"}"#);
        assert!(matches!(Runner::of(&boxed), Runner::Container(s) if s.image == "busybox:1.36"));
        assert!(!Runner::of(&boxed).starts_ahead());
        assert!(Runner::of(&boxed).needs_docker());
    }
}
