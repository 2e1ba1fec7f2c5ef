//! The job model: `JobSpec` is the JSON form (in etcd and on the HTTP API),
//! `Job` is a spec that passed validation.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::limits::{MAX_COMMAND_LEN, MAX_JOB_NAME_LEN};
use crate::schedule::CronSchedule;

/// A job name: 1-128 characters of `[A-Za-z0-9._-]`, never `.` or `..`.
/// The charset keeps every name a single safe etcd key segment.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct JobName(String);

impl JobName {
    pub fn parse(raw: &str) -> Result<Self, JobError> {
        let bad = |reason: String| JobError {
            field: Cow::Borrowed("name"),
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
    pub field: Cow<'static, str>,
    pub reason: String,
}

/// The JSON form of a job, as stored in etcd and exchanged over HTTP.
/// Field names follow the original system (`cronExpr`); the container fields
/// are left out of the JSON when unset, so a shell job looks exactly as in
/// the original.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct JobSpec {
    #[schema(min_length = 1, max_length = 128)]
    pub name: String,
    /// The shell command; may be empty only for a container job (the image
    /// then runs as built).
    #[serde(default, deserialize_with = "null_as_default")]
    #[schema(required = true)]
    pub command: String,
    /// Seven fields with seconds and year (`0 */5 * * * * *`), or five or
    /// six, or a macro (`@hourly`).
    #[schema(min_length = 1)]
    pub cron_expr: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    #[serde(
        default,
        skip_serializing_if = "BTreeMap::is_empty",
        deserialize_with = "null_as_default"
    )]
    pub env: BTreeMap<String, String>,
    /// Only workers whose labels (`GDTS_WORKER_LABELS`) include every pair
    /// run the job's ticks.
    #[serde(
        default,
        skip_serializing_if = "BTreeMap::is_empty",
        deserialize_with = "null_as_default"
    )]
    pub selector: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpus: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_mb: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pull: Option<String>,
    /// IANA time zone of the cron expression (default UTC).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timezone: Option<String>,
    #[serde(
        default,
        skip_serializing_if = "std::ops::Not::not",
        deserialize_with = "null_as_default"
    )]
    pub paused: bool,
    /// `allow` (default), `forbid` or `replace`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub overlap: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_seconds: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retries: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_backoff_seconds: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub catch_up_seconds: Option<u64>,
    /// Where to send a notice when a run ends with one of the `on`
    /// statuses.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notify: Option<NotifySpec>,
}

/// A job's notifications: a JSON POST (Slack-compatible `text`, plus the run
/// record's fields) to each webhook when a run ends with one of `on`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct NotifySpec {
    /// 1-5 `http://` or `https://` URLs.
    pub webhooks: Vec<String>,
    /// Statuses that send a notice (`succeeded`, `failed`, `killed`,
    /// `timed-out`, `lost`, `missed`, `skipped`); default `failed`,
    /// `timed-out`, `lost`, `missed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on: Option<Vec<String>>,
}

/// Statuses a notification may be sent on.
pub const NOTIFY_STATUSES: [&str; 7] = [
    "succeeded",
    "failed",
    "killed",
    "timed-out",
    "lost",
    "missed",
    "skipped",
];
/// What notifies when `on` is left out.
pub const NOTIFY_DEFAULT_ON: [&str; 4] = ["failed", "timed-out", "lost", "missed"];
pub const MAX_WEBHOOKS: usize = 5;
pub const MAX_WEBHOOK_LEN: usize = 2048;

/// What a caller below admin reads in place of a job's secrets: each `env`
/// value, and what follows the scheme and host of each webhook URL.
pub const REDACTED: &str = "(redacted)";

/// A webhook URL without the parts that may hold a secret (Slack's path
/// does, and so may a user and password): its scheme, host and port as the
/// URL parser that checks and sends webhooks reads them (it also ends a
/// host at `\`), then `/` [`REDACTED`]; just [`REDACTED`] for what it
/// cannot parse.
pub fn redact_webhook(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(u) => match (u.host_str(), u.port()) {
            (Some(host), Some(port)) => format!("{}://{host}:{port}/{REDACTED}", u.scheme()),
            (Some(host), None) => format!("{}://{host}/{REDACTED}", u.scheme()),
            (None, _) => REDACTED.into(),
        },
        Err(_) => REDACTED.into(),
    }
}

/// A validated [`NotifySpec`].
#[derive(Debug, Clone, PartialEq)]
pub struct Notify {
    pub webhooks: Vec<String>,
    pub on: std::collections::BTreeSet<String>,
}

impl Notify {
    /// Whether a run that ended with `status` sends a notice.
    pub fn wants(&self, status: &str) -> bool {
        self.on.contains(status)
    }
}

fn notify_of(spec: &NotifySpec) -> Result<Notify, JobError> {
    if spec.webhooks.is_empty() || spec.webhooks.len() > MAX_WEBHOOKS {
        return Err(invalid(
            "notify",
            format!(
                "webhooks: 1 to {MAX_WEBHOOKS} URLs, not {}",
                spec.webhooks.len()
            ),
        ));
    }
    for url in &spec.webhooks {
        // Parsed as the worker's HTTP client will: a URL it cannot send to
        // is refused here, not retried for half an hour.
        let parsed = url::Url::parse(url).ok();
        let sendable = parsed.as_ref().is_some_and(|u| {
            matches!(u.scheme(), "http" | "https") && u.host_str().is_some_and(|h| !h.is_empty())
        });
        if url.len() > MAX_WEBHOOK_LEN
            || !sendable
            || url.chars().any(|c| c.is_whitespace() || c.is_control())
        {
            return Err(invalid(
                "notify",
                format!("webhooks: {url:?} is not an http:// or https:// URL of at most {MAX_WEBHOOK_LEN} characters"),
            ));
        }
    }
    let on: std::collections::BTreeSet<String> = match &spec.on {
        None => NOTIFY_DEFAULT_ON.iter().map(|s| s.to_string()).collect(),
        Some(on) => on.iter().cloned().collect(),
    };
    if on.is_empty() {
        return Err(invalid("notify", "on: name at least one status"));
    }
    if let Some(bad) = on.iter().find(|s| !NOTIFY_STATUSES.contains(&s.as_str())) {
        return Err(invalid(
            "notify",
            format!("on: {bad:?} is not one of {}", NOTIFY_STATUSES.join(", ")),
        ));
    }
    Ok(Notify {
        webhooks: spec.webhooks.clone(),
        on,
    })
}

impl JobSpec {
    /// The job as a caller that may not see its secrets reads it: each
    /// `env` value is [`REDACTED`] (the names stay), each webhook keeps its
    /// scheme and host only ([`redact_webhook`]).
    pub fn redact_secrets(&mut self) {
        for value in self.env.values_mut() {
            *value = REDACTED.into();
        }
        if let Some(notify) = &mut self.notify {
            for url in &mut notify.webhooks {
                *url = redact_webhook(url);
            }
        }
    }

    /// The first field that holds a placeholder of
    /// [`redact_secrets`](Self::redact_secrets) where a secret was: the
    /// field, and the variable's name or the webhook.
    pub fn redacted_field(&self) -> Option<(&'static str, &str)> {
        if let Some(name) = self
            .env
            .iter()
            .find_map(|(name, value)| (value == REDACTED).then_some(name))
        {
            return Some(("env", name));
        }
        self.notify
            .iter()
            .flat_map(|n| &n.webhooks)
            .find(|url| {
                url.as_str() == REDACTED
                    || url
                        .strip_suffix(REDACTED)
                        .is_some_and(|rest| rest.ends_with('/'))
            })
            .map(|url| ("notify", url.as_str()))
    }

    /// Refuses a definition that holds a placeholder of
    /// [`redact_secrets`](Self::redact_secrets) where a secret was: a job read
    /// by a caller below admin, on its way to being saved back, would
    /// replace its secrets with the placeholder.
    pub fn check_not_redacted(&self) -> Result<(), JobError> {
        const HOW: &str = "a caller below admin reads it in place of the secret, and saving it \
                           would replace the secret: read the job as an admin, or give the value";
        match self.redacted_field() {
            None => Ok(()),
            Some(("env", name)) => Err(invalid(
                "env",
                format!("{name}: {REDACTED:?} is a placeholder: {HOW}"),
            )),
            Some((field, url)) => Err(invalid(
                field,
                format!(
                    "webhooks: {url:?} ends with the placeholder {:?}: {HOW}",
                    format!("/{REDACTED}")
                ),
            )),
        }
    }

    /// Redacts, in place, a job given as JSON (as events and logs carry
    /// it); a value that is not a job is left as it is.
    pub fn redact_secrets_in_json(value: &mut serde_json::Value) {
        if let Ok(mut spec) = JobSpec::deserialize(&*value) {
            spec.redact_secrets();
            if let Ok(redacted) = serde_json::to_value(spec) {
                *value = redacted;
            }
        }
    }

    /// A shell job with no container fields.
    pub fn shell(name: &str, command: &str, cron_expr: &str) -> Self {
        JobSpec {
            name: name.into(),
            command: command.into(),
            cron_expr: cron_expr.into(),
            image: None,
            env: BTreeMap::new(),
            selector: BTreeMap::new(),
            cpus: None,
            memory_mb: None,
            network: None,
            pull: None,
            timezone: None,
            paused: false,
            overlap: None,
            timeout_seconds: None,
            retries: None,
            retry_backoff_seconds: None,
            catch_up_seconds: None,
            notify: None,
        }
    }
}

/// What happens to a tick while a run of the same job is still going.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Overlap {
    /// Run it anyway (the original system's behaviour).
    Allow,
    /// Skip the tick, and log the skip.
    Forbid,
    /// Kill the running one and run the new tick.
    Replace,
}

impl Overlap {
    pub const NAMES: [&'static str; 3] = ["allow", "forbid", "replace"];

    pub fn as_str(self) -> &'static str {
        match self {
            Overlap::Allow => "allow",
            Overlap::Forbid => "forbid",
            Overlap::Replace => "replace",
        }
    }

    fn parse(raw: &str) -> Option<Self> {
        match raw {
            "allow" => Some(Overlap::Allow),
            "forbid" => Some(Overlap::Forbid),
            "replace" => Some(Overlap::Replace),
            _ => None,
        }
    }
}

/// How runs of a job are governed.
#[derive(Debug, Clone, PartialEq)]
pub struct RunPolicy {
    pub overlap: Overlap,
    /// A run longer than this is killed and logged as timed out.
    pub timeout: Option<std::time::Duration>,
    /// Further attempts after a failed or timed-out run.
    pub retries: u32,
    /// Wait before retry n is `retry_backoff * 2^(n-1)`, with ±20 % jitter.
    pub retry_backoff: std::time::Duration,
    /// After an outage, missed ticks this recent still run (once each).
    pub catch_up: std::time::Duration,
}

impl Default for RunPolicy {
    fn default() -> Self {
        RunPolicy {
            overlap: Overlap::Allow,
            timeout: None,
            retries: 0,
            retry_backoff: std::time::Duration::from_secs(DEFAULT_RETRY_BACKOFF_SECS),
            catch_up: std::time::Duration::ZERO,
        }
    }
}

pub const MAX_TIMEOUT_SECS: u64 = 7 * 86400;
pub const MAX_RETRIES: u64 = 10;
pub const DEFAULT_RETRY_BACKOFF_SECS: u64 = 10;
pub const MAX_RETRY_BACKOFF_SECS: u64 = 3600;
pub const MAX_CATCH_UP_SECS: u64 = 86400;

/// When a worker pulls a container job's image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PullPolicy {
    Never,
    IfNotPresent,
    Always,
}

impl PullPolicy {
    pub const NAMES: [&'static str; 3] = ["never", "if-not-present", "always"];

    pub fn as_str(self) -> &'static str {
        match self {
            PullPolicy::Never => "never",
            PullPolicy::IfNotPresent => "if-not-present",
            PullPolicy::Always => "always",
        }
    }

    fn parse(raw: &str) -> Option<Self> {
        match raw {
            "never" => Some(PullPolicy::Never),
            "if-not-present" => Some(PullPolicy::IfNotPresent),
            "always" => Some(PullPolicy::Always),
            _ => None,
        }
    }
}

/// How a container job runs.
#[derive(Debug, Clone, PartialEq)]
pub struct ContainerSpec {
    pub image: String,
    /// CPU limit in CPUs (Docker `--cpus`).
    pub cpus: Option<f64>,
    pub memory_mb: Option<u64>,
    /// `none` (default), `bridge`, `host` or a named network.
    pub network: String,
    pub pull: PullPolicy,
}

/// A validated job.
#[derive(Debug, Clone, PartialEq)]
pub struct Job {
    pub name: JobName,
    /// For a shell job, run with `sh -c`; for a container job, run with
    /// `sh -c` inside the container, or empty to run the image's entrypoint.
    pub command: String,
    pub schedule: CronSchedule,
    /// Extra environment variables for the run.
    pub env: BTreeMap<String, String>,
    /// Labels a worker must carry to run the job's ticks (empty: any worker).
    pub selector: BTreeMap<String, String>,
    /// Where to send notices of runs that end with chosen statuses.
    pub notify: Option<Notify>,
    /// Set for a container job.
    pub container: Option<ContainerSpec>,
    /// A paused job keeps its definition but never fires.
    pub paused: bool,
    pub policy: RunPolicy,
}

/// Bounds of the container limits accepted at save time.
pub const MIN_CPUS: f64 = 0.01;
pub const MAX_CPUS: f64 = 256.0;
/// Docker refuses less than 6 MiB.
pub const MIN_MEMORY_MB: u64 = 6;
pub const MAX_MEMORY_MB: u64 = 1024 * 1024;
pub const MAX_ENV_VARS: usize = 200;
pub const MAX_ENV_BYTES: usize = 64 * 1024;
pub const MAX_IMAGE_LEN: usize = 255;

fn invalid(field: &'static str, reason: impl Into<String>) -> JobError {
    JobError {
        field: Cow::Borrowed(field),
        reason: reason.into(),
    }
}

/// A `null` where a map, a string or a flag is expected means "not set",
/// as it did in the original system.
fn null_as_default<'de, D, T>(de: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(de)?.unwrap_or_default())
}

/// serde's "invalid type: integer `5`, expected a string" as "must be a
/// string, not integer 5", with Rust's type names said in words.
fn plain_words(reason: &str) -> String {
    let Some((got, expected)) = reason
        .strip_prefix("invalid type: ")
        .or_else(|| reason.strip_prefix("invalid value: "))
        .and_then(|r| r.split_once(", expected "))
    else {
        return reason.to_string();
    };
    let expected = match expected {
        "u64" | "u32" | "usize" => "a whole number >= 0",
        "f64" | "f32" => "a number",
        "a boolean" => "true or false",
        "a map" => "an object",
        other => other,
    };
    let got = got.replace('`', "");
    format!("must be {expected}, not {got}")
}

/// Most pairs in a job's selector or a worker's labels.
pub const MAX_LABELS: usize = 32;

/// Checks label pairs (a job's `selector`, a worker's labels): keys and
/// values of 1-63 characters of `[A-Za-z0-9._/-]`.
pub fn validate_labels(labels: &BTreeMap<String, String>) -> Result<(), String> {
    if labels.len() > MAX_LABELS {
        return Err(format!(
            "has {} pairs; at most {MAX_LABELS} allowed",
            labels.len()
        ));
    }
    let ok = |s: &str| {
        (1..=63).contains(&s.len())
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'/'))
    };
    for (k, v) in labels {
        if !ok(k) {
            return Err(format!(
                "key {k:?} must be 1-63 characters of letters, digits, '.', '_', '-' or '/'"
            ));
        }
        if !ok(v) {
            return Err(format!(
                "value {v:?} of {k} must be 1-63 characters of letters, digits, '.', '_', '-' or '/'"
            ));
        }
    }
    Ok(())
}

/// Whether a worker with `labels` may run a job with `selector`: it
/// carries every pair.
pub fn selector_matches(
    selector: &BTreeMap<String, String>,
    labels: &BTreeMap<String, String>,
) -> bool {
    selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

impl Job {
    /// Validates a spec. Every error names the field it is about.
    pub fn from_spec(spec: &JobSpec) -> Result<Job, JobError> {
        let name = JobName::parse(&spec.name)?;
        if spec.command.len() > MAX_COMMAND_LEN {
            return Err(invalid(
                "command",
                format!(
                    "is {} bytes long; at most {MAX_COMMAND_LEN} allowed",
                    spec.command.len()
                ),
            ));
        }
        if spec.command.contains('\0') {
            return Err(invalid("command", "contains a NUL byte"));
        }
        if spec.image.is_none() && spec.command.trim().is_empty() {
            return Err(invalid("command", "is empty"));
        }
        let mut schedule =
            CronSchedule::parse(&spec.cron_expr).map_err(|e| invalid("cronExpr", e.to_string()))?;
        if let Some(zone) = &spec.timezone {
            let tz: chrono_tz::Tz = zone.parse().map_err(|_| {
                invalid(
                    "timezone",
                    format!("{zone:?} is not an IANA time zone name (like Europe/Berlin or UTC)"),
                )
            })?;
            schedule = schedule.in_timezone(tz);
        }
        validate_env(&spec.env)?;
        validate_labels(&spec.selector).map_err(|e| invalid("selector", e))?;
        let notify = spec.notify.as_ref().map(notify_of).transpose()?;
        let policy = run_policy(spec)?;
        let container = match &spec.image {
            Some(image) => Some(container_spec(image, spec)?),
            None => {
                for (field, set) in [
                    ("cpus", spec.cpus.is_some()),
                    ("memoryMb", spec.memory_mb.is_some()),
                    ("network", spec.network.is_some()),
                    ("pull", spec.pull.is_some()),
                ] {
                    if set {
                        return Err(invalid(field, "only applies to container jobs (set image)"));
                    }
                }
                None
            }
        };
        Ok(Job {
            name,
            command: spec.command.clone(),
            schedule,
            env: spec.env.clone(),
            selector: spec.selector.clone(),
            notify,
            container,
            paused: spec.paused,
            policy,
        })
    }

    /// Parses and validates the `job` JSON an operator sent. Unknown fields
    /// are ignored (as the original did); a field of the wrong type is named
    /// in the error.
    pub fn from_json(raw: &str) -> Result<Job, JobError> {
        Job::parse_json(raw).map(|(job, _)| job)
    }

    /// As [`Job::from_json`], also returning the fields that are not job
    /// fields (the JSON API refuses them: a typo must not be dropped).
    pub fn parse_json(raw: &str) -> Result<(Job, Vec<String>), JobError> {
        let value: Value = serde_json::from_str(raw)
            .map_err(|e| invalid("job", format!("is not a valid job JSON object: {e}")))?;
        let Value::Object(map) = value else {
            return Err(invalid(
                "job",
                "is not a valid job JSON object: expected {...}",
            ));
        };
        // A shell job names its command; "" is refused by validation.
        let has_command = !matches!(map.get("command"), None | Some(Value::Null));
        let mut unknown = Vec::new();
        let spec: JobSpec = serde_path_to_error::deserialize(serde_ignored::Deserializer::new(
            Value::Object(map),
            &mut |path: serde_ignored::Path| unknown.push(path.to_string()),
        ))
        .map_err(|e| {
            let field = e.path().iter().find_map(|segment| match segment {
                serde_path_to_error::Segment::Map { key } => Some(key.clone()),
                _ => None,
            });
            let reason = plain_words(&e.into_inner().to_string());
            match (field, reason.strip_prefix("missing field `")) {
                (Some(field), _) => JobError {
                    field: Cow::Owned(field),
                    reason,
                },
                // A top-level field left out.
                (None, Some(rest)) => JobError {
                    field: Cow::Owned(rest.trim_end_matches('`').to_string()),
                    reason: "is missing".into(),
                },
                (None, None) => invalid("job", reason),
            }
        })?;
        if spec.image.is_none() && !has_command {
            return Err(invalid("command", "is missing"));
        }
        Ok((Job::from_spec(&spec)?, unknown))
    }

    pub fn to_spec(&self) -> JobSpec {
        let c = self.container.as_ref();
        JobSpec {
            name: self.name.to_string(),
            command: self.command.clone(),
            cron_expr: self.schedule.as_str().to_string(),
            image: c.map(|c| c.image.clone()),
            env: self.env.clone(),
            selector: self.selector.clone(),
            cpus: c.and_then(|c| c.cpus),
            memory_mb: c.and_then(|c| c.memory_mb),
            network: c.map(|c| c.network.clone()),
            pull: c.map(|c| c.pull.as_str().to_string()),
            timezone: (self.schedule.timezone() != chrono_tz::Tz::UTC)
                .then(|| self.schedule.timezone().name().to_string()),
            paused: self.paused,
            overlap: (self.policy.overlap != Overlap::Allow)
                .then(|| self.policy.overlap.as_str().to_string()),
            timeout_seconds: self.policy.timeout.map(|t| t.as_secs()),
            retries: (self.policy.retries > 0).then_some(u64::from(self.policy.retries)),
            retry_backoff_seconds: (self.policy.retries > 0)
                .then_some(self.policy.retry_backoff.as_secs()),
            catch_up_seconds: (!self.policy.catch_up.is_zero())
                .then_some(self.policy.catch_up.as_secs()),
            notify: self.notify.as_ref().map(|n| NotifySpec {
                webhooks: n.webhooks.clone(),
                on: Some(n.on.iter().cloned().collect()),
            }),
        }
    }
}

fn run_policy(spec: &JobSpec) -> Result<RunPolicy, JobError> {
    use std::time::Duration;
    let in_range = |field: &'static str, v: Option<u64>, min: u64, max: u64| match v {
        Some(n) if !(min..=max).contains(&n) => {
            Err(invalid(field, format!("{n} is outside {min}..={max}")))
        }
        other => Ok(other),
    };
    let overlap = match spec.overlap.as_deref() {
        None => Overlap::Allow,
        Some(raw) => Overlap::parse(raw).ok_or_else(|| {
            invalid(
                "overlap",
                format!("{raw:?} is not one of {}", Overlap::NAMES.join(", ")),
            )
        })?,
    };
    let timeout = in_range("timeoutSeconds", spec.timeout_seconds, 1, MAX_TIMEOUT_SECS)?;
    let retries = in_range("retries", spec.retries, 0, MAX_RETRIES)?.unwrap_or(0);
    let backoff = in_range(
        "retryBackoffSeconds",
        spec.retry_backoff_seconds,
        1,
        MAX_RETRY_BACKOFF_SECS,
    )?
    .unwrap_or(DEFAULT_RETRY_BACKOFF_SECS);
    let catch_up = in_range(
        "catchUpSeconds",
        spec.catch_up_seconds,
        0,
        MAX_CATCH_UP_SECS,
    )?
    .unwrap_or(0);
    Ok(RunPolicy {
        overlap,
        timeout: timeout.map(Duration::from_secs),
        retries: retries as u32,
        retry_backoff: Duration::from_secs(backoff),
        catch_up: Duration::from_secs(catch_up),
    })
}

fn container_spec(image: &str, spec: &JobSpec) -> Result<ContainerSpec, JobError> {
    validate_image(image)?;
    if let Some(cpus) = spec.cpus {
        if !(MIN_CPUS..=MAX_CPUS).contains(&cpus) {
            return Err(invalid(
                "cpus",
                format!("{cpus} is outside {MIN_CPUS}..={MAX_CPUS}"),
            ));
        }
    }
    if let Some(mb) = spec.memory_mb {
        if !(MIN_MEMORY_MB..=MAX_MEMORY_MB).contains(&mb) {
            return Err(invalid(
                "memoryMb",
                format!("{mb} is outside {MIN_MEMORY_MB}..={MAX_MEMORY_MB}"),
            ));
        }
    }
    let network = spec.network.clone().unwrap_or_else(|| "none".into());
    let network_ok = !network.is_empty()
        && network.len() <= 128
        && network.starts_with(|c: char| c.is_ascii_alphanumeric())
        && network
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if !network_ok {
        return Err(invalid(
            "network",
            format!("{network:?} is not none, bridge, host or a network name ([A-Za-z0-9][A-Za-z0-9_.-]*)"),
        ));
    }
    let pull = match spec.pull.as_deref() {
        None => PullPolicy::IfNotPresent,
        Some(raw) => PullPolicy::parse(raw).ok_or_else(|| {
            invalid(
                "pull",
                format!("{raw:?} is not one of {}", PullPolicy::NAMES.join(", ")),
            )
        })?,
    };
    Ok(ContainerSpec {
        image: image.to_string(),
        cpus: spec.cpus,
        memory_mb: spec.memory_mb,
        network,
        pull,
    })
}

/// Checks the shape Docker accepts for an image reference:
/// `[host[:port]/]path[:tag][@algo:hex]`, the path lowercase.
fn validate_image(image: &str) -> Result<(), JobError> {
    let bad = |why: String| invalid("image", format!("{image:?} {why}"));
    if image.is_empty() {
        return Err(invalid("image", "is empty"));
    }
    if image.len() > MAX_IMAGE_LEN {
        return Err(bad(format!("is longer than {MAX_IMAGE_LEN} characters")));
    }
    let (rest, digest) = match image.split_once('@') {
        Some((rest, digest)) => (rest, Some(digest)),
        None => (image, None),
    };
    if let Some(d) = digest {
        let ok = d.split_once(':').is_some_and(|(algo, hex)| {
            !algo.is_empty()
                && algo
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
                && hex.len() >= 32
                && hex.chars().all(|c| c.is_ascii_hexdigit())
        });
        if !ok {
            return Err(bad("has an invalid digest (expected @algorithm:hex)".into()));
        }
    }
    // A tag is what follows the last ':' when no '/' comes after it.
    let (path, tag) = match rest.rsplit_once(':') {
        Some((p, t)) if !t.contains('/') => (p, Some(t)),
        _ => (rest, None),
    };
    if let Some(t) = tag {
        let ok = !t.is_empty()
            && t.len() <= 128
            && t.starts_with(|c: char| c.is_ascii_alphanumeric() || c == '_')
            && t.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
        if !ok {
            return Err(bad(format!("has an invalid tag {t:?}")));
        }
    }
    let mut parts: Vec<&str> = path.split('/').collect();
    // The first part may be a registry host (with a port or a dot); it may
    // hold uppercase letters and ':'.
    if parts.len() > 1 && (parts[0].contains(['.', ':']) || parts[0] == "localhost") {
        let host = parts.remove(0);
        if !host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':'))
        {
            return Err(bad(format!("has an invalid registry host {host:?}")));
        }
    }
    for part in parts {
        let ok = !part.is_empty()
            && part.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
            && part.ends_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
            && part.chars().all(|c| {
                c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-')
            });
        if !ok {
            return Err(bad(format!(
                "has an invalid name component {part:?} (lowercase letters, digits, '.', '_', '-')"
            )));
        }
    }
    Ok(())
}

fn validate_env(env: &BTreeMap<String, String>) -> Result<(), JobError> {
    if env.len() > MAX_ENV_VARS {
        return Err(invalid(
            "env",
            format!(
                "has {} variables; at most {MAX_ENV_VARS} allowed",
                env.len()
            ),
        ));
    }
    let mut bytes = 0;
    for (k, v) in env {
        let ok = !k.is_empty()
            && k.len() <= 256
            && k.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
            && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !ok {
            return Err(invalid(
                "env",
                format!("{k:?} is not a variable name ([A-Za-z_][A-Za-z0-9_]*)"),
            ));
        }
        if v.contains('\0') {
            return Err(invalid("env", format!("value of {k} contains a NUL byte")));
        }
        bytes += k.len() + v.len();
    }
    if bytes > MAX_ENV_BYTES {
        return Err(invalid(
            "env",
            format!("is {bytes} bytes; at most {MAX_ENV_BYTES} allowed"),
        ));
    }
    Ok(())
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
            (r#"{"name": 1}"#, "name: must be a string, not integer 1"),
            (
                r#"{"name":"j","command":"x","cronExpr":"* * * * *","paused":"yes"}"#,
                "paused: must be true or false, not string",
            ),
            (
                r#"{"name":"j","command":"x","cronExpr":"* * * * *","selector":{"gpu":""}}"#,
                "selector: value",
            ),
            ("[1]", "job: is not a valid job JSON"),
            ("not json", "job: is not a valid job JSON"),
        ];
        for (raw, want) in cases {
            let err = Job::from_json(raw).unwrap_err().to_string();
            assert!(err.starts_with(want), "{raw}: {err}");
        }
    }

    #[test]
    fn extra_fields_are_accepted_and_named() {
        let raw =
            r#"{"name":"j","command":"x","cronExpr":"* * * * *","future":true,"timeoutSecond":5}"#;
        assert!(Job::from_json(raw).is_ok());
        let (_, unknown) = Job::parse_json(raw).unwrap();
        assert_eq!(unknown, ["future", "timeoutSecond"]);
    }

    #[test]
    fn notifications_validate_and_round_trip() {
        let raw = r#"{"name":"j","command":"x","cronExpr":"* * * * *","notify":{"webhooks":["https://hooks.example/a"]}}"#;
        let job = Job::from_json(raw).unwrap();
        let n = job.notify.clone().unwrap();
        assert!(n.wants("failed") && n.wants("missed") && !n.wants("succeeded"));
        assert_eq!(Job::from_spec(&job.to_spec()).unwrap(), job);
        for (notify, want) in [
            (r#"{"webhooks":[]}"#, "notify: webhooks: 1 to 5"),
            (
                r#"{"webhooks":["ftp://x"]}"#,
                "notify: webhooks: \"ftp://x\"",
            ),
            (r#"{"webhooks":["https://"]}"#, "notify: webhooks"),
            // Not URLs an HTTP client can send to.
            (r#"{"webhooks":["http://a:b:c/"]}"#, "notify: webhooks"),
            (r#"{"webhooks":["https://h:99999/x"]}"#, "notify: webhooks"),
            (r#"{"webhooks":["https://[::1/x"]}"#, "notify: webhooks"),
            (
                r#"{"webhooks":["https://h/x"],"on":["exploded"]}"#,
                "notify: on: \"exploded\"",
            ),
            (
                r#"{"webhooks":["https://h/x"],"on":[]}"#,
                "notify: on: name at least one",
            ),
            (r#"{"on":["failed"]}"#, "notify: missing field"),
        ] {
            let raw =
                format!(r#"{{"name":"j","command":"x","cronExpr":"* * * * *","notify":{notify}}}"#);
            let err = Job::from_json(&raw).unwrap_err().to_string();
            assert!(err.starts_with(want), "{notify}: {err}");
        }
    }

    #[test]
    fn null_means_not_set() {
        let raw = r#"{"name":"j","command":"x","cronExpr":"* * * * *","env":null,"paused":null,"selector":null,"image":null}"#;
        let job = Job::from_json(raw).unwrap();
        assert!(job.env.is_empty() && !job.paused && job.selector.is_empty());
    }

    #[test]
    fn selectors_round_trip_and_match() {
        let raw = r#"{"name":"j","command":"x","cronExpr":"* * * * *","selector":{"gpu":"true","zone":"a"}}"#;
        let job = Job::from_json(raw).unwrap();
        assert_eq!(Job::from_spec(&job.to_spec()).unwrap(), job);
        let labels = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        assert!(selector_matches(
            &job.selector,
            &labels(&[("gpu", "true"), ("zone", "a"), ("x", "y")])
        ));
        assert!(!selector_matches(
            &job.selector,
            &labels(&[("gpu", "true")])
        ));
        assert!(!selector_matches(
            &job.selector,
            &labels(&[("gpu", "false"), ("zone", "a")])
        ));
        assert!(selector_matches(&BTreeMap::new(), &BTreeMap::new()));
    }
}

#[cfg(test)]
mod secret_tests {
    use super::*;

    #[test]
    fn secrets_are_redacted_and_a_redacted_definition_is_not_saved_back() {
        let mut spec = Job::from_json(
            r#"{"name":"s","command":"echo","cronExpr":"* * * * *",
                "env":{"TOKEN":"s3cret","MODE":"fast"},
                "notify":{"webhooks":["https://u:pw@hooks.slack.com/services/T0/B0/x?y=1","http://10.0.0.1:8080/h"]}}"#,
        )
        .unwrap()
        .to_spec();
        assert!(spec.check_not_redacted().is_ok());
        let full = spec.clone();
        spec.redact_secrets();
        assert_eq!(
            spec.env
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect::<Vec<_>>(),
            [("MODE", REDACTED), ("TOKEN", REDACTED)]
        );
        assert_eq!(
            spec.notify.as_ref().unwrap().webhooks,
            [
                "https://hooks.slack.com/(redacted)",
                "http://10.0.0.1:8080/(redacted)"
            ]
        );
        // Everything else is as stored.
        assert_eq!(
            (&spec.command, &spec.cron_expr),
            (&full.command, &full.cron_expr)
        );
        let env = spec.check_not_redacted().unwrap_err();
        assert_eq!(env.field, "env");
        assert!(
            env.reason
                .starts_with("MODE: \"(redacted)\" is a placeholder"),
            "{env}"
        );
        // A redacted webhook alone is refused too.
        let mut hooks = full.clone();
        hooks.notify = spec.notify.clone();
        let notify = hooks.check_not_redacted().unwrap_err();
        assert_eq!(notify.field, "notify");
        assert!(
            notify.reason.contains("https://hooks.slack.com/(redacted)"),
            "{notify}"
        );
        // Without a scheme (never saved: the save refuses it) nothing is kept.
        assert_eq!(redact_webhook("hooks.slack.com/x"), REDACTED);
        // The host ends where the sending parser ends it: a backslash path
        // (sent to /services/T0/B0/x) keeps none of its path either.
        assert_eq!(
            redact_webhook(r"https://hooks.slack.com\services\T0\B0\x"),
            "https://hooks.slack.com/(redacted)"
        );
        assert_eq!(
            redact_webhook("https://user:p@ss@hooks.example:8443/x"),
            "https://hooks.example:8443/(redacted)"
        );
    }
}

#[cfg(test)]
mod container_tests {
    use super::*;

    fn job(extra: &str) -> Result<Job, JobError> {
        Job::from_json(&format!(r#"{{"name":"c","cronExpr":"* * * * *"{extra}}}"#))
    }

    #[test]
    fn container_jobs_parse_with_defaults() {
        let j = job(r#","image":"busybox:1.36""#).unwrap();
        let c = j.container.clone().unwrap();
        assert_eq!(
            (c.network.as_str(), c.pull),
            ("none", PullPolicy::IfNotPresent)
        );
        assert_eq!(j.command, "", "an image may run its own entrypoint");
        let j = job(r#","image":"registry.example:5000/team/app@sha256:0123456789abcdef0123456789abcdef","command":"echo hi","env":{"A_1":"x"},"cpus":0.5,"memoryMb":64,"network":"bridge","pull":"never""#).unwrap();
        let back = Job::from_spec(&j.to_spec()).unwrap();
        assert_eq!(back, j);
        let json = serde_json::to_value(JobSpec::shell("s", "true", "* * * * *")).unwrap();
        assert_eq!(
            json.as_object().unwrap().len(),
            3,
            "shell jobs keep the original shape: {json}"
        );
    }

    #[test]
    fn container_rejections_name_the_field() {
        let cases = [
            (r#","image":"Busybox""#, "image:"),
            (r#","image":"busybox:bad tag""#, "image:"),
            (r#","image":"busybox@sha256:xyz""#, "image:"),
            (r#","image":"""#, "image: is empty"),
            (r#","image":5"#, "image: must be a string"),
            (r#","image":"busybox","cpus":0"#, "cpus:"),
            (r#","image":"busybox","cpus":"1""#, "cpus: must be a number"),
            (r#","image":"busybox","memoryMb":4"#, "memoryMb:"),
            (r#","image":"busybox","memoryMb":1.5"#, "memoryMb:"),
            (r#","image":"busybox","network":"container:x""#, "network:"),
            (r#","image":"busybox","pull":"sometimes""#, "pull:"),
            (r#","image":"busybox","env":{"1X":"y"}"#, "env:"),
            (r#","image":"busybox","env":{"X":1}"#, "env:"),
            (r#","image":"busybox","env":[]"#, "env:"),
            (
                r#","command":"true","cpus":1"#,
                "cpus: only applies to container jobs",
            ),
            (r#","command":"true","pull":"never""#, "pull: only applies"),
            (r#""#, "command: is missing"),
        ];
        for (extra, want) in cases {
            let err = job(extra).unwrap_err().to_string();
            assert!(err.starts_with(want), "{extra}: {err}");
        }
    }

    #[test]
    fn shell_jobs_may_have_env() {
        let j = job(r#","command":"echo $X","env":{"X":"1"}"#).unwrap();
        assert_eq!(j.env.get("X").map(String::as_str), Some("1"));
        assert!(j.container.is_none());
    }
}

#[cfg(test)]
mod policy_tests {
    use super::*;

    fn job(extra: &str) -> Result<Job, JobError> {
        Job::from_json(&format!(
            r#"{{"name":"p","command":"true","cronExpr":"* * * * *"{extra}}}"#
        ))
    }

    #[test]
    fn policies_parse_and_round_trip() {
        let j = job(r#","timezone":"Europe/Berlin","paused":true,"overlap":"forbid","timeoutSeconds":30,"retries":2,"retryBackoffSeconds":5,"catchUpSeconds":120"#).unwrap();
        assert!(j.paused);
        assert_eq!(j.policy.overlap, Overlap::Forbid);
        assert_eq!(j.policy.timeout, Some(std::time::Duration::from_secs(30)));
        assert_eq!(j.policy.retries, 2);
        assert_eq!(j.schedule.timezone().name(), "Europe/Berlin");
        assert_eq!(Job::from_spec(&j.to_spec()).unwrap(), j);
        let plain = job("").unwrap();
        assert_eq!(plain.policy, RunPolicy::default());
        assert!(!plain.paused);
    }

    #[test]
    fn policy_rejections_name_the_field() {
        for (extra, want) in [
            (r#","timezone":"Mars/Olympus""#, "timezone:"),
            (r#","paused":"yes""#, "paused:"),
            (r#","overlap":"sometimes""#, "overlap:"),
            (r#","timeoutSeconds":0"#, "timeoutSeconds:"),
            (r#","timeoutSeconds":-5"#, "timeoutSeconds:"),
            (r#","retries":11"#, "retries:"),
            (r#","retryBackoffSeconds":0"#, "retryBackoffSeconds:"),
            (r#","catchUpSeconds":100000"#, "catchUpSeconds:"),
            (r#","catchUpSeconds":"1""#, "catchUpSeconds:"),
        ] {
            let err = job(extra).unwrap_err().to_string();
            assert!(err.starts_with(want), "{extra}: {err}");
        }
    }
}
