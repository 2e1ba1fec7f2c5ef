//! The one supervision loop every run goes through, whatever runs it (a
//! shell's process group, a container): its output until that closes, its
//! exit, a kill (SIGTERM, then SIGKILL after the grace), the job's timeout,
//! and a short drain of output left after the exit. A runner gives the loop
//! its output as a stream, its exit as a future and a way to signal it.

use std::future::Future;
use std::time::Duration;

use futures::{Stream, StreamExt};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::output::{CaptureConfig, OutputCapture};

/// What every run is held to: how much of its output is kept, and how
/// long SIGTERM gets before SIGKILL.
pub struct RunLimits {
    pub capture: CaptureConfig,
    pub kill_grace: Duration,
}

/// Why a run is being killed; it ends up in the log's `err`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KillReason {
    /// `/job/kill`.
    Requested,
    /// A newer run of the job replaced it (overlap `replace`).
    Replaced,
    /// The worker is shutting down and the grace period is over.
    Shutdown,
    /// It ran longer than the job's timeout.
    TimedOut(Duration),
    /// Its running mark was about to expire with the worker's registration
    /// lease, which the worker could not renew (cut off from etcd): a run
    /// under `forbid` or `replace` stops before another worker can start
    /// the job again. Killed at once, without the grace.
    LeaseLost,
}

impl KillReason {
    /// How long after SIGTERM the run gets SIGKILL.
    pub fn grace(self, configured: Duration) -> Duration {
        match self {
            KillReason::LeaseLost => Duration::ZERO,
            _ => configured,
        }
    }
}

/// The signal the loop asks the runner to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    Term,
    Kill,
}

/// What a run is watched for besides itself.
pub struct Watch<'a, K> {
    pub limits: &'a RunLimits,
    pub timeout: Option<Duration>,
    pub kill: &'a CancellationToken,
    /// Read when a kill arrives.
    pub kill_reason: K,
    /// Already killed before the loop began (the runner stopped it).
    pub killed: Option<KillReason>,
}

/// How a run ended: its output, its exit as the runner reported it (`None`
/// when the drain ran out first), and why it was stopped, if it was.
pub struct Supervised<E> {
    pub out: OutputCapture,
    pub exit: Option<E>,
    pub killed: Option<KillReason>,
}

/// Follows a started run to its end. `ends_at_once` tells an exit after
/// which the output is not drained (the runner lost track of the run).
pub async fn supervise<E, K, S, F>(
    mut output: impl Stream<Item = Vec<u8>> + Unpin,
    exit: impl Future<Output = E>,
    mut signal: S,
    mut out: OutputCapture,
    drain_after_exit: Duration,
    ends_at_once: impl Fn(&E) -> bool,
    watch: Watch<'_, K>,
) -> Supervised<E>
where
    K: Fn() -> KillReason,
    S: FnMut(Stop) -> F,
    F: Future<Output = ()>,
{
    let Watch {
        limits,
        timeout,
        kill,
        kill_reason,
        mut killed,
    } = watch;
    tokio::pin!(exit);
    let mut out_open = true;
    let mut status: Option<E> = None;
    let far = Instant::now() + Duration::from_secs(86400 * 365);
    let mut sigkill_at = far;
    let mut drain_until = far;
    let timeout_at = timeout.map_or(far, |t| Instant::now() + t);
    loop {
        if status.is_some() && !out_open {
            break;
        }
        tokio::select! {
            chunk = output.next(), if out_open => match chunk {
                Some(bytes) => out.push(&bytes),
                None => out_open = false,
            },
            ended = &mut exit, if status.is_none() => {
                let at_once = ends_at_once(&ended);
                status = Some(ended);
                if at_once {
                    break;
                }
                drain_until = Instant::now() + drain_after_exit;
            },
            _ = kill.cancelled(), if killed.is_none() => {
                let why = kill_reason();
                killed = Some(why);
                signal(Stop::Term).await;
                sigkill_at = Instant::now() + why.grace(limits.kill_grace);
            },
            _ = tokio::time::sleep_until(timeout_at), if killed.is_none() && status.is_none() => {
                killed = timeout.map(KillReason::TimedOut);
                signal(Stop::Term).await;
                sigkill_at = Instant::now() + limits.kill_grace;
            },
            _ = tokio::time::sleep_until(sigkill_at), if status.is_none() => {
                signal(Stop::Kill).await;
                sigkill_at = far;
            },
            _ = tokio::time::sleep_until(drain_until) => break,
        }
    }
    Supervised {
        out,
        exit: status,
        killed,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    fn limits(grace_ms: u64) -> RunLimits {
        RunLimits {
            capture: CaptureConfig::Tail { limit: 1024 },
            kill_grace: Duration::from_millis(grace_ms),
        }
    }

    /// A run that ignores SIGTERM and ends on SIGKILL: the timeout sends
    /// SIGTERM, the grace SIGKILL; its output so far is kept.
    #[tokio::test]
    async fn a_timeout_terms_then_kills_after_the_grace() {
        let (ended, exit) = tokio::sync::oneshot::channel::<i32>();
        let ended = Mutex::new(Some(ended));
        let sent = Arc::new(Mutex::new(Vec::new()));
        let output = futures::stream::iter([b"partial".to_vec()]).chain(futures::stream::pending());
        let kill = CancellationToken::new();
        let started = Instant::now();
        let done = supervise(
            Box::pin(output),
            async { exit.await.unwrap_or(-1) },
            |stop| {
                sent.lock().unwrap().push((stop, started.elapsed()));
                if stop == Stop::Kill {
                    if let Some(ended) = ended.lock().unwrap().take() {
                        let _ = ended.send(137);
                    }
                }
                std::future::ready(())
            },
            OutputCapture::new(&limits(100).capture),
            Duration::from_millis(20),
            |_| false,
            Watch {
                limits: &limits(100),
                timeout: Some(Duration::from_millis(50)),
                kill: &kill,
                kill_reason: || KillReason::Requested,
                killed: None,
            },
        )
        .await;
        let sent = sent.lock().unwrap().clone();
        assert_eq!(
            sent.iter().map(|(s, _)| *s).collect::<Vec<_>>(),
            [Stop::Term, Stop::Kill]
        );
        assert!(
            sent[1].1 >= sent[0].1 + Duration::from_millis(100),
            "{sent:?}"
        );
        assert_eq!(done.exit, Some(137));
        assert!(matches!(done.killed, Some(KillReason::TimedOut(_))));
        assert!(done.out.finish().inline.contains("partial"));
    }

    /// A kill before the run's exit is the reason given, not the timeout;
    /// output written after the exit is still read during the drain.
    #[tokio::test]
    async fn a_kill_wins_over_the_timeout_and_late_output_is_drained() {
        let kill = CancellationToken::new();
        kill.cancel();
        let (tx, rx) = futures::channel::mpsc::unbounded::<Vec<u8>>();
        let done = supervise(
            rx,
            async {
                // Ends a moment after the kill (which is there at once).
                tokio::time::sleep(Duration::from_millis(50)).await;
                tx.unbounded_send(b"after the exit".to_vec()).unwrap();
                tx.close_channel();
                0
            },
            |_| std::future::ready(()),
            OutputCapture::new(&limits(1000).capture),
            Duration::from_millis(500),
            |_| false,
            Watch {
                limits: &limits(1000),
                timeout: Some(Duration::from_secs(60)),
                kill: &kill,
                kill_reason: || KillReason::Requested,
                killed: None,
            },
        )
        .await;
        assert_eq!(done.exit, Some(0));
        assert!(matches!(done.killed, Some(KillReason::Requested)));
        assert!(done.out.finish().inline.contains("after the exit"));
    }
}
