//! Runs container jobs through the Docker API (bollard): pull as the job's
//! policy says, create, start, stream logs, wait, remove. Besides
//! `executor.rs`, the only module that starts anything.
//!
//! Every container carries labels naming the etcd prefix, worker, job, tick
//! and run, so a worker that restarts after a crash can find and remove what
//! its earlier life left behind.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use bollard::models::{ContainerCreateBody, HostConfig};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, CreateImageOptionsBuilder, KillContainerOptionsBuilder,
    ListContainersOptionsBuilder, LogsOptionsBuilder, RemoveContainerOptionsBuilder,
    WaitContainerOptionsBuilder,
};
use bollard::Docker;
use futures::StreamExt;
use gdts_common::job::{ContainerSpec, PullPolicy};
use tokio_util::sync::CancellationToken;

use crate::executor::{finished, now_ms, KillReason, Outcome, RunLimits};
use crate::output::OutputCapture;
use crate::runner::Launch;
use crate::supervise::{Stop, Watch};

pub const LABEL_PREFIX: &str = "gdts.prefix";
pub const LABEL_WORKER: &str = "gdts.worker";
pub const LABEL_JOB: &str = "gdts.job";
pub const LABEL_TICK: &str = "gdts.tick";
pub const LABEL_RUN: &str = "gdts.run";

/// The Docker client of a worker. Connecting is lazy and the API version is
/// negotiated on first use (the daemon may be older than the client, or not
/// up yet): a worker without Docker still starts, and picks Docker up once it
/// answers.
#[derive(Clone)]
pub struct DockerConn {
    client: Option<Docker>,
    negotiated: std::sync::Arc<tokio::sync::Mutex<Option<Docker>>>,
    /// `GDTS_CONTAINER_HOST_NETWORK`: whether a job may ask for the host's
    /// network (off by default: from there a container reaches etcd,
    /// MongoDB and the metadata server, as root).
    pub allow_host_network: bool,
}

impl DockerConn {
    /// Uses `DOCKER_HOST` when set, else the local socket.
    pub fn connect() -> Self {
        let client = match Docker::connect_with_defaults() {
            Ok(d) => Some(d),
            Err(e) => {
                tracing::warn!(error = %e, "no Docker client; container jobs will fail");
                None
            }
        };
        DockerConn {
            client,
            negotiated: Default::default(),
            allow_host_network: false,
        }
    }

    /// A client speaking the daemon's API version, or why there is none.
    pub async fn get(&self) -> Result<Docker, String> {
        let Some(client) = &self.client else {
            return Err("this worker has no Docker client (check DOCKER_HOST)".into());
        };
        let mut negotiated = self.negotiated.lock().await;
        if let Some(d) = negotiated.as_ref() {
            return Ok(d.clone());
        }
        let attempt = client.clone().negotiate_version();
        match tokio::time::timeout(Duration::from_secs(2), attempt).await {
            Ok(Ok(d)) => {
                *negotiated = Some(d.clone());
                Ok(d)
            }
            Ok(Err(e)) => Err(format!("Docker is not reachable from this worker: {e}")),
            Err(_) => Err("Docker did not answer within 2 s on this worker".into()),
        }
    }

    /// Whether Docker answers now (one cheap round trip once negotiated).
    pub async fn available(&self) -> Result<(), String> {
        let docker = self.get().await?;
        match tokio::time::timeout(Duration::from_secs(2), docker.ping()).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(format!("Docker is not reachable from this worker: {e}")),
            Err(_) => Err("Docker did not answer within 2 s on this worker".into()),
        }
    }
}

/// How often a worker asks whether Docker answers.
const AVAILABILITY_EVERY: Duration = Duration::from_secs(10);

/// Whether Docker answers now, then again every `AVAILABILITY_EVERY` (on a
/// task of `tasks`, until `stop`): workers that cannot run containers take
/// no container ticks.
pub async fn watch_availability(
    docker: DockerConn,
    tasks: &tokio_util::task::TaskTracker,
    stop: CancellationToken,
) -> tokio::sync::watch::Receiver<bool> {
    let (tx, rx) = tokio::sync::watch::channel(docker.available().await.is_ok());
    tasks.spawn(async move {
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(AVAILABILITY_EVERY) => {}
            }
            let up = docker.available().await.is_ok();
            tx.send_if_modified(|v| std::mem::replace(v, up) != up);
        }
    });
    rx
}

/// Identity of one container run, for its name and labels, and the shell
/// its command runs in.
pub struct ContainerRun<'a> {
    /// The configured shell (`GDTS_SHELL`): `bash` (the default, also as
    /// `bash-static`) runs the command in bash where the image has it and in
    /// `sh` where it does not; any other shell is run as named.
    pub shell: &'a str,
    pub prefix: &'a str,
    pub worker: &'a str,
    pub job: &'a str,
    pub tick_ms: i64,
    pub run_id: &'a str,
    pub claim_revision: i64,
}

/// The entrypoint that runs `command`. With bash (the original system ran
/// every command with `bash -c`), images without bash (busybox, alpine)
/// still run it, in `sh`.
fn shell_entrypoint(shell: &str, command: &str) -> Vec<String> {
    let name = std::path::Path::new(shell)
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or(shell);
    if name == "bash" || name == "bash-static" {
        const BASH_WHERE_PRESENT: &str =
            r#"if command -v bash >/dev/null 2>&1; then exec bash -c "$1"; fi; exec sh -c "$1""#;
        ["sh", "-c", BASH_WHERE_PRESENT, "gdts", command]
            .map(String::from)
            .to_vec()
    } else {
        vec![shell.to_string(), "-c".to_string(), command.to_string()]
    }
}

/// Runs one container job at the launch's release time (its tick) and
/// returns how it ended; never leaves the container behind. `env` is the
/// job's environment with the run's variables.
pub async fn run_container<K: Fn() -> KillReason>(
    conn: &DockerConn,
    spec: &ContainerSpec,
    env: &std::collections::BTreeMap<String, String>,
    run: &ContainerRun<'_>,
    launch: &Launch<'_, K>,
) -> Outcome {
    if let Some(at) = launch.release_at {
        let wait = (at - chrono::Utc::now()).to_std().unwrap_or_default();
        tokio::time::sleep(wait).await;
    }
    let Launch {
        job,
        limits,
        timeout,
        kill,
        ..
    } = *launch;
    let command = job.command.as_str();
    let kill_reason = || launch.kill_reason();
    let start_ms = now_ms();
    let out = OutputCapture::new(&limits.capture);
    if spec.network == "host" && !conn.allow_host_network {
        return finished(
            start_ms,
            out,
            None,
            None,
            "network host is refused on this worker: a container on the host's network reaches \
             etcd, MongoDB and the cloud metadata server (GDTS_CONTAINER_HOST_NETWORK=true allows it)"
                .into(),
        );
    }
    let docker = match conn.get().await {
        Ok(d) => d,
        Err(e) => return finished(start_ms, out, None, None, e),
    };
    let docker = &docker;
    if let Err(e) = ensure_image(docker, &spec.image, spec.pull).await {
        return finished(start_ms, out, None, None, e);
    }
    if kill.is_cancelled() {
        return finished(start_ms, out, None, Some(kill_reason()), String::new());
    }
    let name = format!("gdts-{}-{}-{}", run.job, run.tick_ms, run.claim_revision);
    let labels = HashMap::from([
        (LABEL_PREFIX.to_string(), run.prefix.to_string()),
        (LABEL_WORKER.to_string(), run.worker.to_string()),
        (LABEL_JOB.to_string(), run.job.to_string()),
        (LABEL_TICK.to_string(), run.tick_ms.to_string()),
        (LABEL_RUN.to_string(), run.run_id.to_string()),
    ]);
    let body = ContainerCreateBody {
        image: Some(spec.image.clone()),
        // The shell with `-c COMMAND` replaces the image's entrypoint; an
        // empty command runs the image as it was built.
        entrypoint: (!command.trim().is_empty()).then(|| shell_entrypoint(run.shell, command)),
        cmd: None,
        env: Some(env.iter().map(|(k, v)| format!("{k}={v}")).collect()),
        labels: Some(labels),
        attach_stdout: Some(true),
        attach_stderr: Some(true),
        tty: Some(false),
        host_config: Some(host_config(spec)),
        ..Default::default()
    };
    let options = CreateContainerOptionsBuilder::default().name(&name).build();
    let id = match docker.create_container(Some(options), body).await {
        Ok(created) => created.id,
        Err(e) => {
            return finished(
                start_ms,
                out,
                None,
                None,
                format!(
                    "creating the container from {} failed: {}",
                    spec.image,
                    docker_message(&e)
                ),
            )
        }
    };
    let outcome = supervise(
        docker,
        &id,
        start_ms,
        out,
        limits,
        timeout,
        kill,
        kill_reason,
    )
    .await;
    remove(docker, &id).await;
    outcome
}

/// How long a container's log stream is read after it exited.
const CONTAINER_DRAIN_AFTER_EXIT: Duration = Duration::from_secs(2);

/// Most processes one container run may have (a fork bomb stops there).
pub const CONTAINER_PIDS_LIMIT: i64 = 1024;

/// How a job's container is confined. A job can ask for CPU, memory and a
/// network, nothing else: never privileged, no host path, device or the
/// Docker socket (a job has no field for them), no new privileges through
/// setuid binaries, no raw sockets or device nodes, a process limit.
fn host_config(spec: &ContainerSpec) -> HostConfig {
    HostConfig {
        nano_cpus: spec.cpus.map(|c| (c * 1e9).round() as i64),
        memory: spec.memory_mb.map(|mb| (mb * 1024 * 1024) as i64),
        network_mode: Some(spec.network.clone()),
        // A tiny init as PID 1 forwards SIGTERM to the command, so a kill
        // is prompt even when the command does not handle signals.
        init: Some(true),
        privileged: Some(false),
        binds: None,
        mounts: None,
        devices: None,
        security_opt: Some(vec!["no-new-privileges:true".into()]),
        cap_drop: Some(vec!["NET_RAW".into(), "MKNOD".into(), "AUDIT_WRITE".into()]),
        pids_limit: Some(CONTAINER_PIDS_LIMIT),
        ..Default::default()
    }
}

#[allow(clippy::too_many_arguments)]
async fn supervise(
    docker: &Docker,
    id: &str,
    start_ms: i64,
    out: OutputCapture,
    limits: &RunLimits,
    timeout: Option<Duration>,
    kill: &CancellationToken,
    kill_reason: impl Fn() -> KillReason,
) -> Outcome {
    if let Err(e) = docker.start_container(id, None).await {
        let err = format!("starting the container failed: {}", docker_message(&e));
        return finished(start_ms, out, None, None, err);
    }
    let logs_options = LogsOptionsBuilder::default()
        .follow(true)
        .stdout(true)
        .stderr(true)
        .build();
    let logs = docker.logs(id, Some(logs_options));
    let wait_options = WaitContainerOptionsBuilder::default()
        .condition("not-running")
        .build();
    let mut wait = docker.wait_container(id, Some(wait_options));
    let output = Box::pin(logs.scan((), |_, chunk| {
        std::future::ready(chunk.ok().map(|output| output.into_bytes().to_vec()))
    }));
    let exit = async move {
        match wait.next().await {
            Some(Ok(resp)) => Ok(resp.status_code),
            Some(Err(bollard::errors::Error::DockerContainerWaitError { code, .. })) => Ok(code),
            Some(Err(e)) => Err(format!(
                "waiting for the container failed: {}",
                docker_message(&e)
            )),
            None => Err("the container wait ended without a status".into()),
        }
    };
    let supervised = crate::supervise::supervise(
        output,
        exit,
        |stop| {
            signal(
                docker,
                id,
                match stop {
                    Stop::Term => "SIGTERM",
                    Stop::Kill => "SIGKILL",
                },
            )
        },
        out,
        CONTAINER_DRAIN_AFTER_EXIT,
        |_| false,
        Watch {
            limits,
            timeout,
            kill,
            kill_reason,
            killed: None,
        },
    )
    .await;
    let (out, killed, exit) = (supervised.out, supervised.killed, supervised.exit);
    let (exit_code, err) = match exit {
        Some(Ok(0)) => (Some(0), String::new()),
        Some(Ok(code)) => (Some(code as i32), format!("exit status {code}")),
        Some(Err(e)) => (None, e),
        None => (None, "the container ended without an exit status".into()),
    };
    let mut outcome = finished(start_ms, out, exit_code, killed, err);
    // Docker reports death by signal N as exit code 128 + N.
    if let Some(code) = exit_code.filter(|c| *c > 128 && *c < 128 + 65) {
        if outcome.killed || outcome.timed_out {
            outcome.signal = Some(code - 128);
        }
    }
    outcome
}

async fn signal(docker: &Docker, id: &str, signal: &str) {
    let options = KillContainerOptionsBuilder::default()
        .signal(signal)
        .build();
    if let Err(e) = docker.kill_container(id, Some(options)).await {
        // "is not running" is expected when it ended on its own meanwhile.
        tracing::debug!(container = id, signal, error = %e, "signalling the container failed");
    }
}

async fn remove(docker: &Docker, id: &str) {
    let options = RemoveContainerOptionsBuilder::default().force(true).build();
    if let Err(e) = docker.remove_container(id, Some(options)).await {
        tracing::warn!(container = id, error = %e, "removing a finished container failed");
    }
}

async fn ensure_image(docker: &Docker, image: &str, pull: PullPolicy) -> Result<(), String> {
    let present = docker.inspect_image(image).await.is_ok();
    match (pull, present) {
        (PullPolicy::Never, true) | (PullPolicy::IfNotPresent, true) => return Ok(()),
        (PullPolicy::Never, false) => {
            return Err(format!(
                "image {image} is not present on this worker and the pull policy is never"
            ))
        }
        _ => {}
    }
    let options = CreateImageOptionsBuilder::default()
        .from_image(image)
        .build();
    let mut progress = docker.create_image(Some(options), None, None);
    while let Some(step) = progress.next().await {
        match step {
            Ok(info) => {
                if let Some(detail) = info.error_detail.and_then(|d| d.message) {
                    return Err(format!("pulling image {image} failed: {detail}"));
                }
            }
            Err(e) => {
                return Err(format!(
                    "pulling image {image} failed: {}",
                    docker_message(&e)
                ))
            }
        }
    }
    if docker.inspect_image(image).await.is_err() {
        return Err(format!("pulling image {image} did not make it available"));
    }
    Ok(())
}

/// The daemon's own message where there is one (it says what is wrong with
/// the image or the limits), else the error's text.
fn docker_message(e: &bollard::errors::Error) -> String {
    match e {
        bollard::errors::Error::DockerResponseServerError { message, .. } => message.clone(),
        other => other.to_string(),
    }
}

/// Removes containers of this etcd prefix whose worker is this one (an
/// earlier life of it) or, when `live_workers` is known, no longer registered.
pub async fn remove_leftovers(
    docker: &Docker,
    prefix: &str,
    own_id: &str,
    live_workers: Option<&HashSet<String>>,
) -> usize {
    let filters = HashMap::from([(
        "label".to_string(),
        vec![format!("{LABEL_PREFIX}={prefix}")],
    )]);
    let options = ListContainersOptionsBuilder::default()
        .all(true)
        .filters(&filters)
        .build();
    let containers = match docker.list_containers(Some(options)).await {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(error = %e, "listing leftover containers failed");
            return 0;
        }
    };
    let mut removed = 0;
    for c in containers {
        let owner = c
            .labels
            .as_ref()
            .and_then(|l| l.get(LABEL_WORKER))
            .cloned()
            .unwrap_or_default();
        let orphaned = owner == own_id || live_workers.is_some_and(|live| !live.contains(&owner));
        if !orphaned {
            continue;
        }
        if let Some(id) = c.id {
            remove(docker, &id).await;
            tracing::info!(container = %id, worker = %owner, "removed a leftover container");
            removed += 1;
        }
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;
    use gdts_common::job::PullPolicy;

    /// The worker's bash, static or not, becomes "bash where the image has
    /// it"; another shell runs as named.
    #[test]
    fn a_bash_worker_runs_container_commands_in_bash_where_present() {
        for shell in ["bash", "/usr/bin/bash", "/usr/bin/bash-static"] {
            let entry = shell_entrypoint(shell, "echo hi");
            assert_eq!(entry[..2], ["sh", "-c"], "{shell}");
            assert_eq!(entry.last().map(String::as_str), Some("echo hi"), "{shell}");
            assert!(entry[2].contains("exec bash -c"), "{shell}: {entry:?}");
        }
        assert_eq!(
            shell_entrypoint("/bin/dash", "echo hi"),
            ["/bin/dash", "-c", "echo hi"]
        );
    }

    #[test]
    fn a_job_container_is_confined() {
        let spec = ContainerSpec {
            image: "busybox".into(),
            cpus: Some(0.5),
            memory_mb: Some(64),
            network: "bridge".into(),
            pull: PullPolicy::Never,
        };
        let h = host_config(&spec);
        assert_eq!(h.privileged, Some(false));
        assert!(h.binds.is_none() && h.mounts.is_none() && h.devices.is_none());
        assert_eq!(
            h.security_opt,
            Some(vec!["no-new-privileges:true".to_string()])
        );
        assert!(h.cap_drop.unwrap().contains(&"NET_RAW".to_string()));
        assert!(h.cap_add.is_none());
        assert_eq!(h.pids_limit, Some(CONTAINER_PIDS_LIMIT));
        assert_eq!(h.network_mode.as_deref(), Some("bridge"));
        assert!(h.pid_mode.is_none() && h.ipc_mode.is_none() && h.userns_mode.is_none());
        assert_eq!(h.nano_cpus, Some(500_000_000));
    }
}
