//! The job model: `JobSpec` is the JSON form (in etcd and on the HTTP API),
//! `Job` is a spec that passed validation.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::limits::{MAX_COMMAND_LEN, MAX_JOB_NAME_LEN};
use crate::schedule::CronSchedule;

/// A job name: 1-128 characters of `[A-Za-z0-9._-]`, never `.` or `..`.
/// The charset keeps every name a single safe etcd key segment.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct JobName(String);

impl JobName {
    pub fn parse(raw: &str) -> Result<Self, JobError> {
        let bad = |reason: String| JobError {
            field: "name",
            reason,
        };
        if raw.is_empty() {
            return Err(bad("is empty".into()));
        }
        if raw.len() > MAX_JOB_NAME_LEN {
            return Err(bad(format!(
                "is {} characters long; at most {MAX_JOB_NAME_LEN} allowed",
                raw.len()
            )));
        }
        if let Some(c) = raw
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
        {
            return Err(bad(format!(
                "contains {c:?}; only letters, digits, '.', '_' and '-' are allowed"
            )));
        }
        if raw == "." || raw == ".." {
            return Err(bad(format!("{raw:?} is reserved")));
        }
        Ok(JobName(raw.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for JobName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What is wrong with a job, naming the offending field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct JobError {
    pub field: &'static str,
    pub reason: String,
}

/// The JSON form of a job, as stored in etcd and exchanged over HTTP.
/// Field names follow the original system (`cronExpr`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JobSpec {
    pub name: String,
    pub command: String,
    pub cron_expr: String,
}

/// The shape operators send: every field optional so a missing one gets a
/// message naming it instead of a serde error.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct JobInput {
    name: Option<String>,
    command: Option<String>,
    cron_expr: Option<String>,
}

/// A validated job.
#[derive(Debug, Clone, PartialEq)]
pub struct Job {
    pub name: JobName,
    pub command: String,
    pub schedule: CronSchedule,
}

impl Job {
    /// Validates a spec. Every error names the field it is about.
    pub fn from_spec(spec: &JobSpec) -> Result<Job, JobError> {
        let name = JobName::parse(&spec.name)?;
        let command = spec.command.trim();
        if command.is_empty() {
            return Err(JobError {
                field: "command",
                reason: "is empty".into(),
            });
        }
        if spec.command.len() > MAX_COMMAND_LEN {
            return Err(JobError {
                field: "command",
                reason: format!(
                    "is {} bytes long; at most {MAX_COMMAND_LEN} allowed",
                    spec.command.len()
                ),
            });
        }
        if spec.command.contains('\0') {
            return Err(JobError {
                field: "command",
                reason: "contains a NUL byte".into(),
            });
        }
        let schedule = CronSchedule::parse(&spec.cron_expr).map_err(|e| JobError {
            field: "cronExpr",
            reason: e.to_string(),
        })?;
        Ok(Job {
            name,
            command: spec.command.clone(),
            schedule,
        })
    }

    /// Parses and validates the `job` JSON an operator sent.
    pub fn from_json(raw: &str) -> Result<Job, JobError> {
        let input: JobInput = serde_json::from_str(raw).map_err(|e| JobError {
            field: "job",
            reason: format!("is not a valid job JSON object: {e}"),
        })?;
        let missing = |field: &'static str| JobError {
            field,
            reason: "is missing".into(),
        };
        let spec = JobSpec {
            name: input.name.ok_or_else(|| missing("name"))?,
            command: input.command.ok_or_else(|| missing("command"))?,
            cron_expr: input.cron_expr.ok_or_else(|| missing("cronExpr"))?,
        };
        Job::from_spec(&spec)
    }

    pub fn to_spec(&self) -> JobSpec {
        JobSpec {
            name: self.name.to_string(),
            command: self.command.clone(),
            cron_expr: self.schedule.as_str().to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for ok in ["a", "backup-db_1.daily", &"x".repeat(128)] {
            assert!(JobName::parse(ok).is_ok(), "{ok}");
        }
        for (bad, why) in [
            ("", "empty"),
            ("a/b", "'/'"),
            ("a b", "' '"),
            ("..", "reserved"),
            ("é", "'é'"),
            (&"x".repeat(129), "at most 128"),
        ] {
            let err = JobName::parse(bad).unwrap_err();
            assert_eq!(err.field, "name");
            assert!(err.reason.contains(why), "{bad:?}: {err}");
        }
    }

    #[test]
    fn json_round_trip_and_errors() {
        let job =
            Job::from_json(r#"{"name":"j","command":"echo hi","cronExpr":"*/5 * * * * * *"}"#)
                .unwrap();
        let spec = job.to_spec();
        let back: JobSpec = serde_json::from_str(&serde_json::to_string(&spec).unwrap()).unwrap();
        assert_eq!(Job::from_spec(&back).unwrap(), job);

        let cases = [
            (r#"{"name":"j","command":"x"}"#, "cronExpr: is missing"),
            (
                r#"{"command":"x","cronExpr":"* * * * *"}"#,
                "name: is missing",
            ),
            (
                r#"{"name":"j","command":"  ","cronExpr":"* * * * *"}"#,
                "command: is empty",
            ),
            (
                r#"{"name":"j","command":"x","cronExpr":"nope"}"#,
                "cronExpr:",
            ),
            (
                r#"{"name":"j/k","command":"x","cronExpr":"* * * * *"}"#,
                "name:",
            ),
            (r#"{"name": 1}"#, "job: is not a valid job JSON"),
            ("not json", "job: is not a valid job JSON"),
        ];
        for (raw, want) in cases {
            let err = Job::from_json(raw).unwrap_err().to_string();
            assert!(err.starts_with(want), "{raw}: {err}");
        }
    }

    #[test]
    fn extra_fields_are_accepted() {
        let raw = r#"{"name":"j","command":"x","cronExpr":"* * * * *","future":true}"#;
        assert!(Job::from_json(raw).is_ok());
    }
}
