//! Test harness: starts real etcd, a real MongoDB wire-protocol server
//! (SecantusDB), managers and workers as child processes on loopback ports
//! picked per test, and stops exactly the pids it started.
//!
//! Binaries come from the cargo target dir next to the test executable
//! (`make test` builds them first); `GDTS_BIN_DIR` overrides. The Mongo
//! server is `GDTS_SECANTUSD` or `.venv/bin/secantusd-py` in the workspace.

pub use gdts_common;

mod cluster;
mod containers;
mod etcd;
mod gcs;
mod mongo;
mod process;
mod proxy;
mod records;

pub use cluster::*;
pub use containers::*;
pub use etcd::*;
pub use gcs::*;
pub use mongo::*;
pub use process::*;
pub use proxy::*;
pub use records::*;

pub mod bench;
pub mod chaos;
pub mod pki;
