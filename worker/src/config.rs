//! Worker configuration, from environment variables (see README).

use std::time::Duration;

use gdts_common::config::{duration_ms, number, GcsConfig, LogFormat, Lookup, StoreConfig};

#[derive(Debug, Clone)]
pub struct WorkerConfig {
    pub store: StoreConfig,
    /// `GDTS_WORKER_ID`: this worker's id in `/worker/list`. Default
    /// `{hostname}-{pid}`; characters outside `[A-Za-z0-9._-]` become `-`.
    pub worker_id: String,
    /// `GDTS_WORKER_LABELS`: `key=value` pairs separated by commas
    /// (`zone=a,gpu=true`); jobs with a `selector` run only on workers whose
    /// labels include it.
    pub labels: std::collections::BTreeMap<String, String>,
    /// `GDTS_WORKER_LEASE_TTL_SECS`: TTL of the registration lease; a dead
    /// worker leaves `/worker/list` within it. Default 10.
    pub lease_ttl: Duration,
    /// `GDTS_OUTPUT_LIMIT_BYTES`: output kept inline per run. Without a
    /// bucket, the tail is kept; with one, the whole output goes to the bucket
    /// when larger, and the head and tail stay inline. Default 65536.
    pub output_limit: usize,
    /// `GDTS_OUTPUT_MAX_BYTES`: most output uploaded per run. Default 268435456.
    pub output_max: u64,
    /// `GDTS_SPOOL_DIR`: where outputs are spooled before upload, and where
    /// run records that could not reach MongoDB by shutdown are kept for the
    /// next start of the same worker id. Default the system temp dir.
    pub spool_dir: std::path::PathBuf,
    pub gcs: Option<GcsConfig>,
    /// `GDTS_KILL_GRACE_MS`: after SIGTERM, how long a killed run's process
    /// group gets before SIGKILL. Default 2000.
    pub kill_grace: Duration,
    /// `GDTS_SHUTDOWN_GRACE_MS`: on SIGTERM, how long running jobs may go on
    /// before they are killed. Default 30000.
    pub shutdown_grace: Duration,
    /// `GDTS_LOG_BATCH_SIZE`: most run records per MongoDB insert. Default 500.
    pub log_batch_size: usize,
    /// At most this many job names label per-job metrics (GDTS_METRICS_MAX_JOBS).
    pub metrics_max_jobs: usize,
    /// `GDTS_LOG_BATCH_WAIT_MS`: longest a record waits for a batch to fill. Default 200.
    pub log_batch_wait: Duration,
    /// `GDTS_LOG_BUFFER`: run records held while MongoDB is slow or down;
    /// when full, finished runs wait to hand over their record. Default 10000.
    pub log_buffer: usize,
    /// `GDTS_LOG_FLUSH_TIMEOUT_MS`: on shutdown, how long to keep retrying
    /// MongoDB for records not yet written. Default 60000.
    pub log_flush_timeout: Duration,
    pub log_format: LogFormat,
    /// `GDTS_SHELL`: the shell that runs shell jobs with `-c`. Default `bash`
    /// (as the original system); it must support `read -r`. Container jobs'
    /// commands run in it too (with `bash`: where the image has bash, `sh`
    /// otherwise).
    /// `GDTS_JOB_NICE`: how many nice levels below the worker shell runs
    /// run (0-19, default 10), so an overloaded machine still serves the
    /// worker (its lease, its claims) first.
    pub shell: crate::executor::ShellConfig,
    /// `GDTS_JOB_CGROUP`: `auto` (default), `off`, or a cgroup directory
    /// that holds every shell run (see `cgroup.rs`).
    pub job_cgroup: crate::cgroup::CgroupSetting,
    /// `GDTS_JOB_CPU_WEIGHT`: what all shell runs together weigh on a busy
    /// machine, in cgroup v2 units (100 = one ordinary process; 1-10000).
    /// Default 100.
    pub job_cpu_weight: u32,
    /// `GDTS_START_MAX_RUNNABLE`: runnable tasks per CPU at which the worker
    /// holds its process starts (see `load.rs`); a start held past its tick
    /// is not made and the tick is recorded as missed. 0 turns it off.
    /// Default 4.
    pub start_max_runnable: u32,
    /// `GDTS_HEALTH_PORT`: serve `/healthz` and `/readyz` on this port (all
    /// interfaces). Unset: no health endpoint.
    pub health_port: Option<u16>,
    /// `GDTS_CONTAINER_HOST_NETWORK`: `true` lets container jobs ask for
    /// `network: host`. Default `false` (such runs fail with a message).
    pub container_host_network: bool,
}

impl WorkerConfig {
    pub fn from_lookup(get: Lookup) -> Result<Self, String> {
        let worker_id = match get("GDTS_WORKER_ID") {
            Some(id) if !id.trim().is_empty() => sanitize_id(id.trim()),
            Some(_) => return Err("GDTS_WORKER_ID: must not be empty".into()),
            None => default_worker_id(),
        };
        let labels = match get("GDTS_WORKER_LABELS") {
            None => Default::default(),
            Some(raw) => parse_labels(&raw).map_err(|e| format!("GDTS_WORKER_LABELS: {e}"))?,
        };
        let lease_secs = number(get, "GDTS_WORKER_LEASE_TTL_SECS", 10)?;
        if !(2..=300).contains(&lease_secs) {
            return Err(format!(
                "GDTS_WORKER_LEASE_TTL_SECS: {lease_secs} is outside 2..=300"
            ));
        }
        let positive = |var: &str, default: u64| -> Result<usize, String> {
            match number(get, var, default)? {
                0 => Err(format!("{var}: must be at least 1")),
                n => Ok(n as usize),
            }
        };
        Ok(WorkerConfig {
            store: StoreConfig::from_lookup(get)?,
            worker_id,
            labels,
            lease_ttl: Duration::from_secs(lease_secs),
            output_limit: positive("GDTS_OUTPUT_LIMIT_BYTES", 64 * 1024)?,
            output_max: positive("GDTS_OUTPUT_MAX_BYTES", 256 * 1024 * 1024)? as u64,
            spool_dir: get("GDTS_SPOOL_DIR")
                .map(std::path::PathBuf::from)
                .unwrap_or_else(std::env::temp_dir),
            gcs: GcsConfig::from_lookup(get)?,
            kill_grace: duration_ms(get, "GDTS_KILL_GRACE_MS", Duration::from_secs(2))?,
            shutdown_grace: duration_ms(get, "GDTS_SHUTDOWN_GRACE_MS", Duration::from_secs(30))?,
            log_batch_size: positive("GDTS_LOG_BATCH_SIZE", 500)?,
            metrics_max_jobs: positive(
                "GDTS_METRICS_MAX_JOBS",
                crate::metrics::DEFAULT_MAX_JOB_LABELS as u64,
            )?,
            log_batch_wait: duration_ms(get, "GDTS_LOG_BATCH_WAIT_MS", Duration::from_millis(200))?,
            log_buffer: positive("GDTS_LOG_BUFFER", 10_000)?,
            log_flush_timeout: duration_ms(
                get,
                "GDTS_LOG_FLUSH_TIMEOUT_MS",
                Duration::from_secs(60),
            )?,
            log_format: LogFormat::from_lookup(get)?,
            shell: crate::executor::ShellConfig {
                program: match get("GDTS_SHELL") {
                    Some(s) if s.trim().is_empty() => {
                        return Err("GDTS_SHELL: must not be empty".into())
                    }
                    Some(s) => s.trim().to_string(),
                    None => "bash".into(),
                },
                nice: match number(get, "GDTS_JOB_NICE", 10)? {
                    n @ 0..=19 => n as i32,
                    n => return Err(format!("GDTS_JOB_NICE: {n} is outside 0..=19")),
                },
                inherited: env_pass(get)?,
                run_as: job_user(get("GDTS_JOB_USER").as_deref())?,
            },
            job_cgroup: crate::cgroup::CgroupSetting::parse(
                &get("GDTS_JOB_CGROUP").unwrap_or_default(),
            )?,
            job_cpu_weight: match number(get, "GDTS_JOB_CPU_WEIGHT", 100)? {
                n @ 1..=10_000 => n as u32,
                n => return Err(format!("GDTS_JOB_CPU_WEIGHT: {n} is outside 1..=10000")),
            },
            start_max_runnable: match number(get, "GDTS_START_MAX_RUNNABLE", 4)? {
                n @ 0..=1_000 => n as u32,
                n => return Err(format!("GDTS_START_MAX_RUNNABLE: {n} is outside 0..=1000")),
            },
            container_host_network: match get("GDTS_CONTAINER_HOST_NETWORK")
                .as_deref()
                .map(str::trim)
            {
                None | Some("") | Some("false") | Some("0") => false,
                Some("true") | Some("1") => true,
                Some(other) => {
                    return Err(format!(
                        "GDTS_CONTAINER_HOST_NETWORK: {other:?} is not true or false"
                    ))
                }
            },
            health_port: match get("GDTS_HEALTH_PORT") {
                None => None,
                Some(p) => Some(
                    p.trim()
                        .parse()
                        .map_err(|_| format!("GDTS_HEALTH_PORT: {p:?} is not a port number"))?,
                ),
            },
        })
    }
}

/// `zone=a,gpu=true` as pairs; empty items are skipped, a key given twice
/// or a malformed pair is refused.
pub fn parse_labels(raw: &str) -> Result<std::collections::BTreeMap<String, String>, String> {
    let mut labels = std::collections::BTreeMap::new();
    for item in raw.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        let (k, v) = item
            .split_once('=')
            .ok_or_else(|| format!("{item:?} is not key=value"))?;
        let (k, v) = (k.trim(), v.trim());
        if labels.insert(k.to_string(), v.to_string()).is_some() {
            return Err(format!("{k} is given twice"));
        }
    }
    gdts_common::job::validate_labels(&labels)?;
    Ok(labels)
}

fn default_worker_id() -> String {
    let host = nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "worker".into());
    sanitize_id(&format!("{host}-{}", std::process::id()))
}

/// Worker ids are etcd key segments: keep them to `[A-Za-z0-9._-]`.
fn sanitize_id(raw: &str) -> String {
    raw.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '-'
            }
        })
        .collect()
}

pub fn hostname() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_default()
}

/// `GDTS_JOB_USER`: the user shell runs run as, by name (`gdts-job`) or
/// id (`65534` or `65534:65534`); unset or empty: the worker's own user.
/// Never root; a worker that is not root can only name itself.
pub fn job_user(raw: Option<&str>) -> Result<Option<crate::executor::RunAs>, String> {
    use nix::unistd::{Uid, User};
    let Some(raw) = raw.map(str::trim).filter(|r| !r.is_empty()) else {
        return Ok(None);
    };
    let err = |why: String| format!("GDTS_JOB_USER: {raw:?} {why}");
    let numeric = |s: &str| s.parse::<u32>().ok();
    let (uid, gid, entry) = match raw.split_once(':') {
        Some((u, g)) => {
            let (Some(uid), Some(gid)) = (numeric(u), numeric(g)) else {
                return Err(err("is not uid:gid (two numbers)".into()));
            };
            (
                uid,
                Some(gid),
                User::from_uid(Uid::from_raw(uid)).ok().flatten(),
            )
        }
        None => match numeric(raw) {
            Some(uid) => (uid, None, User::from_uid(Uid::from_raw(uid)).ok().flatten()),
            None => match User::from_name(raw) {
                Ok(Some(user)) => (user.uid.as_raw(), None, Some(user)),
                _ => return Err(err("is not a user of this machine".into())),
            },
        },
    };
    if uid == 0 {
        return Err(err(
            "is root; running jobs as an unprivileged user is the point".into(),
        ));
    }
    let me = nix::unistd::geteuid().as_raw();
    if me != 0 && me != uid {
        return Err(err(format!(
            "needs the worker to run as root to switch to it (the worker runs as uid {me})"
        )));
    }
    let gid = gid
        .or_else(|| entry.as_ref().map(|u| u.gid.as_raw()))
        .unwrap_or(uid);
    if gid == 0 {
        return Err(err(
            "has group root (gid 0); give an unprivileged group too (uid:gid)".into(),
        ));
    }
    let home = entry
        .as_ref()
        .map(|u| u.dir.clone())
        .filter(|d| d.is_dir())
        .map(|d| d.to_string_lossy().into_owned())
        .unwrap_or_else(|| "/tmp".into());
    let name = entry.map(|u| u.name).unwrap_or_else(|| uid.to_string());
    Ok(Some(crate::executor::RunAs {
        uid,
        gid,
        name,
        home,
    }))
}

/// `GDTS_JOB_ENV_PASS`: the names of the worker's variables shell runs get
/// (comma-separated; default [`crate::executor::DEFAULT_ENV_PASS`]), with
/// their values. Nothing else of the worker's environment reaches a job.
fn env_pass(get: &dyn Fn(&str) -> Option<String>) -> Result<Vec<(String, String)>, String> {
    let names: Vec<String> = match get("GDTS_JOB_ENV_PASS") {
        Some(list) => list
            .split(',')
            .map(|n| n.trim().to_string())
            .filter(|n| !n.is_empty())
            .collect(),
        None => crate::executor::DEFAULT_ENV_PASS
            .iter()
            .map(|n| n.to_string())
            .collect(),
    };
    for n in &names {
        if !n.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(format!("GDTS_JOB_ENV_PASS: {n:?} is not a variable name"));
        }
    }
    Ok(names
        .into_iter()
        .filter_map(|n| {
            let v = get(&n)?;
            Some((n, v))
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_parse_and_bad_ones_are_named() {
        let labels = parse_labels(" zone=a, gpu=true ,").unwrap();
        assert_eq!(
            labels.into_iter().collect::<Vec<_>>(),
            [("gpu".into(), "true".into()), ("zone".into(), "a".into())]
        );
        assert!(parse_labels("").unwrap().is_empty());
        for (raw, want) in [
            ("zone", "is not key=value"),
            ("zone=a,zone=b", "given twice"),
            ("zone=a b", "value"),
            ("=a", "key"),
        ] {
            let err = parse_labels(raw).unwrap_err();
            assert!(err.contains(want), "{raw}: {err}");
        }
    }

    #[test]
    fn ids_are_key_safe() {
        assert_eq!(sanitize_id("host/a b"), "host-a-b");
        let get = |k: &str| (k == "GDTS_WORKER_ID").then(|| "w 1".to_string());
        assert_eq!(WorkerConfig::from_lookup(&get).unwrap().worker_id, "w-1");
        let get = |k: &str| (k == "GDTS_WORKER_LEASE_TTL_SECS").then(|| "1".to_string());
        assert!(WorkerConfig::from_lookup(&get).is_err());
    }

    #[test]
    fn shell_runs_get_only_the_variables_let_through() {
        let env = |pass: Option<&'static str>| {
            move |k: &str| match k {
                "GDTS_JOB_ENV_PASS" => pass.map(String::from),
                "PATH" => Some("/usr/bin".into()),
                "GDTS_MONGO_URI" => Some("mongodb://user:secret@db/".into()),
                "EXTRA" => Some("x".into()),
                _ => None,
            }
        };
        let inherited = |pass| {
            WorkerConfig::from_lookup(&env(pass))
                .unwrap()
                .shell
                .inherited
        };
        assert_eq!(inherited(None), vec![("PATH".into(), "/usr/bin".into())]);
        assert_eq!(
            inherited(Some("EXTRA, PATH")),
            vec![
                ("EXTRA".into(), "x".into()),
                ("PATH".into(), "/usr/bin".into())
            ]
        );
        assert!(WorkerConfig::from_lookup(&env(Some("PATH,A=B"))).is_err());
    }

    #[test]
    fn the_job_user_is_resolved_and_never_root() {
        assert_eq!(job_user(None).unwrap(), None);
        assert_eq!(job_user(Some(" ")).unwrap(), None);
        for root in ["root", "0", "0:0"] {
            let e = job_user(Some(root)).unwrap_err();
            assert!(e.contains("is root"), "{e}");
        }
        assert!(job_user(Some("no-such-user-gdts"))
            .unwrap_err()
            .contains("not a user"));
        assert!(job_user(Some("1:x")).unwrap_err().contains("uid:gid"));
        assert!(job_user(Some("65534:0")).unwrap_err().contains("gid 0"));
        if nix::unistd::geteuid().is_root() {
            let nobody = job_user(Some("nobody")).unwrap().unwrap();
            assert_eq!((nobody.uid, nobody.name.as_str()), (65534, "nobody"));
            // nobody's home (/nonexistent) does not exist: runs start in /tmp.
            assert_eq!(nobody.home, "/tmp");
            let numeric = job_user(Some("65534:100")).unwrap().unwrap();
            assert_eq!((numeric.uid, numeric.gid), (65534, 100));
        } else {
            assert!(job_user(Some("nobody")).unwrap_err().contains("root"));
        }
    }
}
