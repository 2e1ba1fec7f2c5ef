//! The GDTS scheduling core, shared by the manager and the workers.
//!
//! Architecture invariant: this crate never does I/O. It has no tokio, etcd or
//! MongoDB dependency, so every decision here (is a job valid, when does it
//! fire next, which key does a claim live under) is a pure function that takes
//! `now` as an argument and is unit tested.

pub mod config;
pub mod job;
pub mod keys;
pub mod limits;
pub mod log_record;
pub mod ownership;
pub mod plan;
pub mod response;
pub mod schedule;
pub mod timing;
pub mod values;

pub use job::{Job, JobError, JobName, JobSpec};
pub use schedule::CronSchedule;
