//! Runs one command. The only module that spawns processes.
//!
//! Each run is `bash -c COMMAND` (the shell is configurable) in a process
//! group of its own, so a kill reaches everything the command started. The
//! run ends when the shell exits; anything it left behind in its group is
//! then killed, so a run never leaks processes onto the worker. A run is
//! started in two steps ([`prepare_shell`], then [`Prepared::release`]) so
//! the cost of starting a process can be paid before the tick.

use std::collections::BTreeMap;
use std::os::fd::AsRawFd;
use std::os::unix::process::ExitStatusExt;
use std::process::Stdio;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use tokio::process::Command;
use tokio_util::sync::CancellationToken;

use crate::output::OutputCapture;
use crate::runner::Launch;
pub use crate::supervise::{KillReason, RunLimits};
use crate::supervise::{Stop, Watch};

/// How a run ended.
#[derive(Debug)]
pub struct Outcome {
    pub start_ms: i64,
    pub end_ms: i64,
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    pub output: String,
    pub truncated: bool,
    /// Total bytes the run wrote to stdout and stderr.
    pub output_bytes: u64,
    /// The whole output, when it did not fit inline and a bucket is set.
    pub spool: Option<tempfile::NamedTempFile>,
    /// Empty on success.
    pub err: String,
    /// Ended by a kill request (an operator's, a replacing run's, or shutdown).
    pub killed: bool,
    /// Ended because it ran past the job's `timeoutSeconds`.
    pub timed_out: bool,
}

impl Outcome {
    pub fn succeeded(&self) -> bool {
        self.err.is_empty()
    }

    /// The run record's `status`.
    pub fn status(&self) -> &'static str {
        if self.killed {
            "killed"
        } else if self.timed_out {
            "timed-out"
        } else if self.succeeded() {
            "succeeded"
        } else {
            "failed"
        }
    }
}

/// After the shell exits, how long to keep reading output that processes it
/// left behind may still be writing before they are killed.
const DRAIN_AFTER_EXIT: Duration = Duration::from_millis(300);

/// How a shell run is started.
#[derive(Debug, Clone)]
pub struct ShellConfig {
    /// The shell that runs each command with `-c` (`GDTS_SHELL`, default
    /// `bash`, as the original system). It must support `read -r`.
    pub program: String,
    /// How much lower than the worker's a run's CPU priority is
    /// (`GDTS_JOB_NICE`, 0-19): see [`Prepared::lower_priority`].
    pub nice: i32,
    /// The only variables of the worker's environment a shell run gets
    /// (names from `GDTS_JOB_ENV_PASS`, default [`DEFAULT_ENV_PASS`], with
    /// the worker's values): runs start from a clean environment, so the
    /// worker's secrets (`GDTS_MONGO_URI`, credentials) never reach a job.
    pub inherited: Vec<(String, String)>,
    /// The unprivileged user shell runs run as (`GDTS_JOB_USER`); `None`:
    /// the worker's own user.
    pub run_as: Option<RunAs>,
}

/// A user shell runs run as: its ids, and the `HOME`, `USER` and `LOGNAME`
/// a run gets instead of the worker's. Supplementary groups are dropped
/// (the standard library calls `setgroups(0)` when a root parent sets a
/// uid).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunAs {
    pub uid: u32,
    pub gid: u32,
    pub name: String,
    /// Also the run's working directory.
    pub home: String,
}

/// The variables a shell run takes from the worker's environment by default.
pub const DEFAULT_ENV_PASS: &[&str] = &[
    "PATH", "HOME", "LANG", "LANGUAGE", "LC_ALL", "LC_CTYPE", "TZ", "USER", "LOGNAME", "SHELL",
    "TMPDIR",
];

impl ShellConfig {
    /// The same, with a bare shell name (`bash`) replaced by its absolute
    /// path, looked up in the `PATH` runs get (or `/bin:/usr/bin`, where
    /// `execvp` looks without one), as the run's `exec` would. Runs start
    /// from a clean environment, and the standard library cannot use
    /// `posix_spawn` for a bare name whose `PATH` changed: it forks the whole
    /// worker instead, for every run, which at hundreds of runs a second
    /// costs more CPU than the runs (the benchmark's 1000 ticks/s fell to
    /// about 190 runs/s). Left as it is when nothing is found; the run's
    /// start then fails with a message.
    pub fn with_program_resolved(mut self) -> Self {
        if !self.program.contains('/') {
            let path = self
                .inherited
                .iter()
                .find(|(k, _)| k == "PATH")
                .map_or("/bin:/usr/bin", |(_, v)| v.as_str());
            if let Some(found) = find_program(&self.program, path) {
                self.program = found;
            }
        }
        self
    }
}

/// The first executable regular file named `name` in `path`'s directories.
fn find_program(name: &str, path: &str) -> Option<String> {
    use std::os::unix::fs::PermissionsExt;
    path.split(':')
        .filter(|dir| dir.starts_with('/'))
        .map(|dir| std::path::Path::new(dir).join(name))
        .find(|candidate| {
            std::fs::metadata(candidate)
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
        .and_then(|found| found.to_str().map(str::to_string))
}

impl Default for ShellConfig {
    fn default() -> Self {
        ShellConfig {
            program: "bash".into(),
            nice: 0,
            inherited: DEFAULT_ENV_PASS
                .iter()
                .filter_map(|k| Some((k.to_string(), std::env::var(k).ok()?)))
                .collect(),
            run_as: None,
        }
    }
}

/// The line the shell runs before the command: wait at the gate (stdin) for
/// the release. A closed gate without a release (the worker died) exits
/// without running the command. On the same line as the command, so the
/// command's own first line keeps its line number.
const GATE_PREFIX: &str = "IFS= read -r _gdts_gate || exit 125; ";

/// A command's process, started and held at its gate until [`Prepared::release`].
///
/// Starting a process (fork, exec, the shell's own start-up) costs about a
/// millisecond of CPU here; a thousand jobs due in the same second would
/// start up to a second late if that happened at the tick. Started ahead and
/// released at the tick, the command only pays for waking up.
pub struct Prepared {
    child: tokio::process::Child,
    pgid: Option<Pid>,
    /// The worker's end of the one socket pair that is the process's stdin,
    /// stdout and stderr: the gate is a line written into it (then its
    /// writing side is shut, so the command reads end-of-file on stdin),
    /// and the output is read from it. One descriptor per run: each process
    /// started copies (and its exec then closes) every descriptor the worker
    /// holds, a thousand processes held ahead make that cost count.
    io: Arc<tokio::net::UnixStream>,
    /// The gate is still closed.
    gated: bool,
}

/// Opens a gate: one line in, then the writing side shut (the command sees
/// end-of-file on stdin, as with `/dev/null`). A shell that already exited
/// (a syntax error on its first line) makes the write fail, which is fine:
/// its exit status says why.
fn open_gate(io: &tokio::net::UnixStream) {
    // Straight to the socket (tokio's `try_write` would refuse before its
    // reactor has seen the socket writable); one byte never blocks.
    let _ = nix::unistd::write(io, b"\n");
    let _ = nix::sys::socket::shutdown(io.as_raw_fd(), nix::sys::socket::Shutdown::Write);
}

impl Prepared {
    /// Opens the gate: the command starts now. Returns the start time.
    pub fn release(&mut self) -> i64 {
        let start = now_ms();
        if std::mem::take(&mut self.gated) {
            open_gate(&self.io);
        }
        start
    }

    /// Hands the gate to `releaser`, which opens it at `at` (epoch ms)
    /// together with every other gate of that moment, unless the returned
    /// handle is cancelled first.
    pub fn hand_over(&mut self, releaser: &Releaser, at: i64) -> HandedGate {
        let (done, started) = tokio::sync::oneshot::channel();
        let state = Arc::new(AtomicU8::new(GATE_WAITING));
        if std::mem::take(&mut self.gated) {
            let gate = Gate {
                at,
                io: self.io.clone(),
                done,
                state: state.clone(),
            };
            if releaser.queue.send(gate).is_err() {
                // No releaser thread (it stopped): the gate stays here.
                self.gated = true;
            }
        }
        HandedGate { started, state }
    }

    /// Lowers the process's CPU priority `by` nice levels below the worker's,
    /// right after its start (before its shell has done much): runs then
    /// yield the CPU to the worker itself (and to etcd where it shares the
    /// machine) when the machine is overloaded, so the worker keeps its lease
    /// and sends its claims on time instead of every run being late together.
    /// The process id (also its process group's).
    pub fn pid(&self) -> Option<u32> {
        self.pgid.map(|p| p.as_raw() as u32)
    }

    pub fn lower_priority(&self, by: i32) {
        if by <= 0 {
            return;
        }
        let Some(pid) = self
            .pgid
            .and_then(|p| rustix::process::Pid::from_raw(p.as_raw()))
        else {
            return;
        };
        let own = rustix::process::getpriority_process(None).unwrap_or(0);
        // ESRCH (it exited at once, a syntax error) is fine.
        let _ = rustix::process::setpriority_process(Some(pid), (own + by).min(19));
    }

    /// Kills a process that was never released (its claim was lost).
    pub fn abort(mut self) {
        signal_group(self.pgid, Signal::SIGKILL);
        // The child is reaped by tokio's orphan reaper once dropped.
        let _ = self.child.start_kill();
    }
}

/// Opens the gates of prepared processes at their tick, all gates of one
/// tick in one tight loop on a thread of its own: a thousand run tasks each
/// waking up to open their own gate would be woken late, one after another,
/// on a busy machine.
#[derive(Clone)]
pub struct Releaser {
    queue: std::sync::mpsc::Sender<Gate>,
}

struct Gate {
    /// Epoch ms.
    at: i64,
    io: Arc<tokio::net::UnixStream>,
    done: tokio::sync::oneshot::Sender<i64>,
    state: Arc<AtomicU8>,
}

const GATE_WAITING: u8 = 0;
const GATE_OPEN: u8 = 1;
const GATE_CANCELLED: u8 = 2;

/// A gate handed to the releaser.
pub struct HandedGate {
    started: tokio::sync::oneshot::Receiver<i64>,
    state: Arc<AtomicU8>,
}

impl HandedGate {
    /// Keeps the gate closed, if it is not open yet (then the process exits
    /// without running its command). True if it was still closed.
    pub fn cancel(&self) -> bool {
        self.state
            .compare_exchange(
                GATE_WAITING,
                GATE_CANCELLED,
                Ordering::AcqRel,
                Ordering::Acquire,
            )
            .is_ok()
    }

    /// When the gate opened, or `None` if it never will (cancelled, or the
    /// releaser stopped).
    pub async fn opened(self) -> Option<i64> {
        self.started.await.ok()
    }
}

impl Releaser {
    /// Runs until every handle is dropped (gates still queued are opened at
    /// their time first).
    pub fn start() -> Releaser {
        let (queue, gates) = std::sync::mpsc::channel::<Gate>();
        std::thread::Builder::new()
            .name("gdts-releaser".into())
            .spawn(move || release_loop(gates))
            .expect("starting the releaser thread");
        Releaser { queue }
    }
}

fn release_loop(gates: std::sync::mpsc::Receiver<Gate>) {
    use std::collections::BTreeMap;
    let mut due: BTreeMap<i64, Vec<Gate>> = BTreeMap::new();
    let mut open = true;
    while open || !due.is_empty() {
        let wait = match due.first_key_value() {
            Some((at, _)) => Duration::from_millis((at - now_ms()).max(0) as u64),
            None => Duration::from_secs(3600),
        };
        if !wait.is_zero() && open {
            match gates.recv_timeout(wait) {
                Ok(g) => {
                    due.entry(g.at).or_default().push(g);
                    continue;
                }
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => open = false,
            }
        } else if !wait.is_zero() {
            std::thread::sleep(wait);
        }
        // Take in everything queued meanwhile, so gates handed over late
        // open in this same pass.
        while let Ok(g) = gates.try_recv() {
            due.entry(g.at).or_default().push(g);
        }
        let now = now_ms();
        let ready: Vec<i64> = due.range(..=now).map(|(at, _)| *at).collect();
        let mut opened = Vec::new();
        for at in ready {
            for g in due.remove(&at).unwrap_or_default() {
                let claimed = g
                    .state
                    .compare_exchange(GATE_WAITING, GATE_OPEN, Ordering::AcqRel, Ordering::Acquire)
                    .is_ok();
                if !claimed {
                    // Cancelled: closing the pipe makes the shell exit unrun.
                    continue;
                }
                let started = now_ms();
                open_gate(&g.io);
                opened.push((g, started));
            }
        }
        if let (Some((first, t0)), Some((_, t1))) = (opened.first(), opened.last()) {
            tracing::debug!(
                gates = opened.len(),
                late_ms = t0 - first.at,
                took_ms = t1 - t0,
                "gates opened"
            );
        }
        // Told after every gate of the pass is open: waking the run tasks
        // must not delay the next gate.
        for (g, started) in opened {
            let _ = g.done.send(started);
        }
    }
}

/// Starts `command` held at its gate. `vars` are set for the command on top
/// of the job's `env`, on a clean environment but for the variables
/// [`ShellConfig::inherited`] passes on.
pub fn prepare_shell(
    shell: &ShellConfig,
    command: &str,
    env: &BTreeMap<String, String>,
    vars: &[(&str, String)],
) -> Result<Prepared, String> {
    let socket_error = |e: std::io::Error| format!("could not create a socket pair: {e}");
    let (ours, theirs) = std::os::unix::net::UnixStream::pair().map_err(socket_error)?;
    let (theirs_out, theirs_err) = (
        theirs.try_clone().map_err(socket_error)?,
        theirs.try_clone().map_err(socket_error)?,
    );
    let mut script = String::with_capacity(GATE_PREFIX.len() + command.len());
    script.push_str(GATE_PREFIX);
    script.push_str(command);
    let mut cmd = Command::new(&shell.program);
    cmd.arg("-c")
        .arg(script)
        .env_clear()
        // bash whose stdin is a socket and that thinks it is a top-level
        // shell (SHLVL unset) takes itself for a shell run by sshd and reads
        // ~/.bashrc (which may print, prompt or take seconds): never for a run.
        .env("SHLVL", "1")
        .envs(shell.inherited.iter().map(|(k, v)| (k, v)));
    if let Some(user) = &shell.run_as {
        cmd.uid(user.uid)
            .gid(user.gid)
            .current_dir(&user.home)
            .env("HOME", &user.home)
            .env("USER", &user.name)
            .env("LOGNAME", &user.name);
    }
    let child = cmd
        .envs(env)
        .envs(vars.iter().map(|(k, v)| (*k, v.as_str())))
        // stdin, stdout and stderr are one socket (see `Prepared::io`):
        // stdout and stderr interleave as written.
        .stdin(Stdio::from(std::os::fd::OwnedFd::from(theirs)))
        .stdout(Stdio::from(std::os::fd::OwnedFd::from(theirs_out)))
        .stderr(Stdio::from(std::os::fd::OwnedFd::from(theirs_err)))
        .process_group(0)
        .spawn()
        .map_err(|e| format!("could not start {}: {e}", shell.program))?;
    ours.set_nonblocking(true).map_err(socket_error)?;
    let io = tokio::net::UnixStream::from_std(ours)
        .map_err(|e| format!("could not watch the output socket: {e}"))?;
    let pgid = child.id().map(|id| Pid::from_raw(id as i32));
    Ok(Prepared {
        child,
        pgid,
        io: Arc::new(io),
        gated: true,
    })
}

/// Runs `command` now and returns how it ended. `kill` asks for SIGTERM to
/// the whole group, then SIGKILL after `limits.kill_grace`; `kill_reason` is
/// read when that happens.
#[cfg(test)]
pub async fn run_shell(
    shell: &ShellConfig,
    command: &str,
    env: &BTreeMap<String, String>,
    limits: &RunLimits,
    timeout: Option<Duration>,
    kill: &CancellationToken,
    kill_reason: impl Fn() -> KillReason,
) -> Outcome {
    let start_ms = now_ms();
    if kill.is_cancelled() {
        let out = OutputCapture::new(&limits.capture);
        return finished(start_ms, out, None, Some(kill_reason()), String::new());
    }
    match prepare_shell(shell, command, env, &[]) {
        Ok(mut prepared) => {
            let start_ms = prepared.release();
            supervise(prepared, start_ms, limits, timeout, kill, kill_reason).await
        }
        Err(e) => finished(start_ms, OutputCapture::new(&limits.capture), None, None, e),
    }
}

/// Runs a shell job's command: its process (started ahead and held at its
/// gate, or started just now: `prepared`) is let through at the launch's
/// release time, then supervised to its end. A gate already handed to the
/// releaser (`handed`) opens at the tick even if this task wakes late.
pub async fn run_prepared<K: Fn() -> KillReason>(
    launch: &Launch<'_, K>,
    prepared: Result<Prepared, String>,
    handed: Option<HandedGate>,
    releaser: &Releaser,
) -> Outcome {
    let never_ran = |p: Prepared| {
        let start_ms = now_ms();
        p.abort();
        finished(
            start_ms,
            OutputCapture::new(&launch.limits.capture),
            None,
            Some(launch.kill_reason()),
            String::new(),
        )
    };
    let mut p = match prepared {
        Ok(p) if launch.kill.is_cancelled() => return never_ran(p),
        Ok(p) => p,
        Err(e) => {
            return finished(
                now_ms(),
                OutputCapture::new(&launch.limits.capture),
                None,
                None,
                e,
            )
        }
    };
    let handed = match (handed, launch.release_at) {
        (Some(h), _) => Some(h),
        // Started just now, for a tick still ahead.
        (None, Some(at)) if at > chrono::Utc::now() => {
            Some(p.hand_over(releaser, at.timestamp_millis()))
        }
        (None, _) => None,
    };
    let opened = match handed {
        Some(h) => h.opened().await,
        None => Some(p.release()),
    };
    let Some(start_ms) = opened else {
        // Kept closed (a kill came first), or the releaser is gone: it never
        // ran.
        return never_ran(p);
    };
    supervise(
        p,
        start_ms,
        launch.limits,
        launch.timeout,
        launch.kill,
        &launch.kill_reason,
    )
    .await
}

/// Follows a released process to its end: output, exit, kill, timeout.
pub async fn supervise(
    prepared: Prepared,
    start_ms: i64,
    limits: &RunLimits,
    timeout: Option<Duration>,
    kill: &CancellationToken,
    kill_reason: impl Fn() -> KillReason,
) -> Outcome {
    let Prepared {
        mut child,
        pgid,
        io: output,
        gated: _,
    } = prepared;
    let mut killed = None;
    if kill.is_cancelled() {
        // Killed between the claim and the release: it never ran.
        killed = Some(kill_reason());
        signal_group(pgid, Signal::SIGKILL);
    }
    let output = Box::pin(futures::stream::unfold(
        (output, vec![0u8; 8192]),
        |(io, mut buf)| async move {
            loop {
                match io.readable().await.and_then(|()| io.try_read(&mut buf)) {
                    Ok(0) => return None,
                    Ok(n) => return Some((buf[..n].to_vec(), (io, buf))),
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                    Err(_) => return None,
                }
            }
        },
    ));
    let supervised = crate::supervise::supervise(
        output,
        child.wait(),
        |stop| {
            signal_group(
                pgid,
                match stop {
                    Stop::Term => Signal::SIGTERM,
                    Stop::Kill => Signal::SIGKILL,
                },
            );
            std::future::ready(())
        },
        OutputCapture::new(&limits.capture),
        DRAIN_AFTER_EXIT,
        // wait() failed: nothing more to wait for.
        |exit| exit.is_err(),
        Watch {
            limits,
            timeout,
            kill,
            kill_reason,
            killed,
        },
    )
    .await;
    let (out, killed) = (supervised.out, supervised.killed);
    let (status, wait_error) = match supervised.exit {
        Some(Ok(st)) => (Some(st), None),
        Some(Err(e)) => (None, Some(e.to_string())),
        None => (None, None),
    };
    // Whatever the shell left running in its group goes with it.
    signal_group(pgid, Signal::SIGKILL);
    if status.is_none() {
        // wait() failed: make sure the child is reaped before returning.
        let _ = child.kill().await;
    }
    let (exit_code, signal) = match status {
        Some(st) => (st.code(), st.signal()),
        None => (None, None),
    };
    let err = match (wait_error, exit_code, signal) {
        (Some(e), _, _) => format!("waiting for the process failed: {e}"),
        (None, Some(0), _) => String::new(),
        (None, Some(code), _) => format!("exit status {code}"),
        (None, None, Some(sig)) => format!("terminated by signal {sig}"),
        (None, None, None) => "ended without an exit status".into(),
    };
    let mut outcome = finished(start_ms, out, exit_code, killed, err);
    outcome.signal = signal;
    outcome
}

pub fn finished(
    start_ms: i64,
    out: OutputCapture,
    exit_code: Option<i32>,
    killed: Option<KillReason>,
    err: String,
) -> Outcome {
    let captured = out.finish();
    let err = match killed {
        Some(KillReason::Requested) => format!("killed on request ({})", nonempty(&err)),
        Some(KillReason::Replaced) => {
            format!(
                "killed: replaced by a newer run (overlap replace) ({})",
                nonempty(&err)
            )
        }
        Some(KillReason::Shutdown) => format!("killed: worker shutting down ({})", nonempty(&err)),
        Some(KillReason::LeaseLost) => format!(
            "killed: this worker could not renew its registration lease, with which the run's \
             running mark would expire; stopped so that no other run of the job overlaps it ({})",
            nonempty(&err)
        ),
        Some(KillReason::TimedOut(t)) => {
            format!(
                "timed out after {}s (timeoutSeconds) ({})",
                t.as_secs(),
                nonempty(&err)
            )
        }
        None => err,
    };
    Outcome {
        start_ms,
        end_ms: now_ms(),
        exit_code,
        signal: None,
        output: captured.inline,
        truncated: captured.truncated,
        output_bytes: captured.total_bytes,
        spool: captured.spool,
        err,
        killed: killed.is_some_and(|k| !matches!(k, KillReason::TimedOut(_))),
        timed_out: matches!(killed, Some(KillReason::TimedOut(_))),
    }
}

fn nonempty(s: &str) -> &str {
    if s.is_empty() {
        "before it started"
    } else {
        s
    }
}

fn signal_group(pgid: Option<Pid>, signal: Signal) {
    if let Some(pgid) = pgid {
        // ESRCH (group already gone) is the normal case after exit.
        let _ = killpg(pgid, signal);
    }
}

pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output::CaptureConfig;

    fn limits(cap: usize) -> RunLimits {
        RunLimits {
            capture: CaptureConfig::Tail { limit: cap },
            kill_grace: Duration::from_millis(500),
        }
    }

    async fn run(cmd: &str, cap: usize) -> Outcome {
        run_shell(
            &ShellConfig::default(),
            cmd,
            &BTreeMap::new(),
            &limits(cap),
            None,
            &CancellationToken::new(),
            || KillReason::Requested,
        )
        .await
    }

    #[tokio::test]
    async fn captures_output_and_exit_code() {
        let o = run("echo out; echo err >&2; exit 3", 1024).await;
        assert_eq!(o.exit_code, Some(3));
        assert!(
            o.output.contains("out\n") && o.output.contains("err\n"),
            "{o:?}"
        );
        assert_eq!(o.err, "exit status 3");
        assert!(!o.truncated);
        let o = run("true", 1024).await;
        assert!(o.succeeded(), "{o:?}");
    }

    #[tokio::test]
    async fn passes_the_job_environment() {
        let env = BTreeMap::from([("GDTS_TEST_VAR".to_string(), "v 1".to_string())]);
        let o = run_shell(
            &ShellConfig::default(),
            "echo \"$GDTS_TEST_VAR\"",
            &env,
            &limits(64),
            None,
            &CancellationToken::new(),
            || KillReason::Requested,
        )
        .await;
        assert_eq!(o.output, "v 1\n");
    }

    /// The shell is looked up in the runs' PATH (not the worker's), only
    /// among executable files; a path or a name found nowhere stays as it is.
    #[test]
    fn the_shell_is_resolved_in_the_runs_path() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let (runnable, plain) = (dir.path().join("myshell"), dir.path().join("plain"));
        std::fs::write(&runnable, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&runnable, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::write(&plain, "").unwrap();
        let with = |program: &str| {
            ShellConfig {
                program: program.into(),
                inherited: vec![(
                    "PATH".into(),
                    format!("/nonexistent:relative:{}", dir.path().display()),
                )],
                ..ShellConfig::default()
            }
            .with_program_resolved()
            .program
        };
        assert_eq!(with("myshell"), runnable.display().to_string());
        assert_eq!(with("plain"), "plain");
        assert_eq!(with("nowhere"), "nowhere");
        assert_eq!(with("./myshell"), "./myshell");
        // Without a PATH for the runs, where execvp would look.
        let bare = ShellConfig {
            program: "sh".into(),
            inherited: Vec::new(),
            ..ShellConfig::default()
        }
        .with_program_resolved()
        .program;
        assert!(
            ["/bin/sh", "/usr/bin/sh"].contains(&bare.as_str()),
            "{bare}"
        );
    }

    /// A run gets the variables let through and its own, nothing else of the
    /// worker's, and bash never reads ~/.bashrc (its stdin is a socket,
    /// which bash takes for sshd's unless SHLVL says it is nested).
    #[tokio::test]
    async fn runs_start_from_a_clean_environment_without_bashrc() {
        let home = tempfile::tempdir().unwrap();
        std::fs::write(home.path().join(".bashrc"), "echo BASHRC-READ\n").unwrap();
        let shell = ShellConfig {
            inherited: vec![
                ("HOME".into(), home.path().display().to_string()),
                ("PATH".into(), "/usr/bin:/bin".into()),
            ],
            ..ShellConfig::default()
        };
        let env = BTreeMap::from([("MINE".to_string(), "x".to_string())]);
        let o = run_shell(
            &shell,
            "env | grep -v '^_=' | sort",
            &env,
            &limits(4096),
            None,
            &CancellationToken::new(),
            || KillReason::Requested,
        )
        .await;
        assert!(!o.output.contains("BASHRC-READ"), "{}", o.output);
        let names: Vec<&str> = o
            .output
            .lines()
            .filter_map(|l| l.split_once('=').map(|(k, _)| k))
            .collect();
        // What bash sets itself besides what the run was given.
        let allowed = ["HOME", "MINE", "OLDPWD", "PATH", "PWD", "SHLVL"];
        assert!(names.iter().all(|n| allowed.contains(n)), "{}", o.output);
        assert!(
            names.contains(&"MINE") && names.contains(&"PATH"),
            "{}",
            o.output
        );
    }

    #[tokio::test]
    async fn timeout_kills_and_says_so() {
        let started = std::time::Instant::now();
        let o = run_shell(
            &ShellConfig::default(),
            "sleep 30",
            &BTreeMap::new(),
            &limits(64),
            Some(Duration::from_millis(300)),
            &CancellationToken::new(),
            || KillReason::Requested,
        )
        .await;
        assert!(o.timed_out && !o.killed, "{o:?}");
        assert_eq!(o.status(), "timed-out");
        assert!(o.err.starts_with("timed out after 0s"), "{}", o.err);
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[tokio::test]
    async fn keeps_the_tail_of_long_output() {
        let o = run("seq 1 100000", 64).await;
        assert!(o.truncated);
        assert!(o.output.ends_with("99999\n100000\n"), "{:?}", o.output);
        assert!(o.output.len() <= 64);
    }

    #[tokio::test]
    async fn kill_ends_the_whole_group() {
        let kill = CancellationToken::new();
        let k = kill.clone();
        let started = std::time::Instant::now();
        let handle = tokio::spawn(async move {
            run_shell(
                &ShellConfig::default(),
                "sleep 60 & sleep 60; wait",
                &BTreeMap::new(),
                &limits(1024),
                None,
                &k,
                || KillReason::Requested,
            )
            .await
        });
        tokio::time::sleep(Duration::from_millis(200)).await;
        kill.cancel();
        let o = handle.await.unwrap();
        assert!(o.killed);
        assert!(o.err.starts_with("killed on request"), "{}", o.err);
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[tokio::test]
    async fn a_prepared_command_waits_at_its_gate_until_released() {
        let dir = tempfile::tempdir().unwrap();
        let marker = dir.path().join("ran");
        let command = format!("echo \"$GDTS_PLAN_TIME_MS\" > {}", marker.display());
        let mut prepared = prepare_shell(
            &ShellConfig::default(),
            &command,
            &BTreeMap::new(),
            &[("GDTS_PLAN_TIME_MS", "1234".to_string())],
        )
        .unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(!marker.exists(), "the command ran before its release");
        let start = prepared.release();
        let o = supervise(
            prepared,
            start,
            &limits(64),
            None,
            &CancellationToken::new(),
            || KillReason::Requested,
        )
        .await;
        assert!(o.succeeded(), "{o:?}");
        assert_eq!(std::fs::read_to_string(&marker).unwrap(), "1234\n");

        // Aborted, it never runs.
        let other = dir.path().join("never");
        let prepared = prepare_shell(
            &ShellConfig::default(),
            &format!("touch {}", other.display()),
            &BTreeMap::new(),
            &[],
        )
        .unwrap();
        prepared.abort();
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(!other.exists());
    }

    #[tokio::test]
    async fn commands_run_in_bash_with_stdout_and_stderr_interleaved() {
        let o = run("[[ 1 == 1 ]] && echo one; echo two >&2; echo three", 1024).await;
        assert_eq!(o.output, "one\ntwo\nthree\n", "{o:?}");
        // A syntax error is the command's own failure, as with `bash -c`.
        let o = run("if then", 1024).await;
        assert_eq!(o.exit_code, Some(2), "{o:?}");
        assert!(o.output.contains("syntax error"), "{o:?}");
        // stdin is empty, as /dev/null would be.
        let o = run("cat; echo done", 1024).await;
        assert_eq!(o.output, "done\n", "{o:?}");
    }

    #[tokio::test]
    async fn background_leftovers_do_not_hold_the_run() {
        let started = std::time::Instant::now();
        let o = run("sleep 30 & echo done", 1024).await;
        assert!(o.succeeded(), "{o:?}");
        assert!(o.output.contains("done"));
        assert!(started.elapsed() < Duration::from_secs(5));
    }
}
