//! Documented size limits shared by the manager (which validates) and the
//! workers (which enforce at run time).

/// Longest job name, in bytes (names are ASCII).
pub const MAX_JOB_NAME_LEN: usize = 128;

/// Longest shell command accepted by `/job/save`, in bytes.
pub const MAX_COMMAND_LEN: usize = 64 * 1024;

/// Longest cron expression accepted, in bytes.
pub const MAX_CRON_EXPR_LEN: usize = 256;

/// Largest `limit` for `GET /job/log`; larger values are capped to it.
pub const MAX_LOG_PAGE: i64 = 1000;

/// Default `limit` for `GET /job/log`.
pub const DEFAULT_LOG_PAGE: i64 = 20;
