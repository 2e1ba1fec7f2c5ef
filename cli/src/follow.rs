//! `gdts logs --follow`: the event stream, and each finished run of the job
//! printed with its output.

use std::collections::HashSet;

use anyhow::Context;
use futures::StreamExt;
use reqwest::Method;
use serde_json::Value;

use crate::client::{segment, Client};
use crate::table::time;

/// Prints a run: a header line, then its output.
pub fn print_run(run: &Value, json_out: bool) {
    if json_out {
        println!("{}", serde_json::to_string(run).unwrap_or_default());
        return;
    }
    let mut head = format!(
        "== {} {} {} on {}",
        run["jobName"].as_str().unwrap_or_default(),
        time(run["planTime"].as_i64()),
        run["status"].as_str().unwrap_or_default(),
        run["worker"].as_str().unwrap_or_default()
    );
    if let Some(code) = run["exitCode"].as_i64() {
        head.push_str(&format!(" (exit {code})"));
    }
    println!("{head}");
    if let Some(err) = run["err"].as_str().filter(|e| !e.is_empty()) {
        println!("   {err}");
    }
    let output = run["output"].as_str().unwrap_or_default();
    if !output.is_empty() {
        print!("{output}");
        if !output.ends_with('\n') {
            println!();
        }
    }
}

/// How many times in a row the event stream may fail (not open, or end
/// before anything arrived) before `--follow` gives up (exit 1).
const MAX_FAILED_CONNECTS: u32 = 8;
/// The manager sends a keep-alive every 15 s: a stream silent this long is
/// dead (a manager gone without closing it, a NAT that forgot it).
const SILENCE: std::time::Duration = std::time::Duration::from_secs(45);

/// Follows `/events` for good: each `run.finished` of `job` that names its
/// run is fetched and printed, once (`printed`: run ids printed already).
/// When the stream ends or breaks (a manager replaced, a proxy's request
/// timeout, or silent past `SILENCE`), it is opened again with
/// `Last-Event-ID`. Each time it opens, and when the manager says it could
/// not resume (`reset`), the job's recent runs that ended since `listed_at`
/// (epoch ms: when the recent ones were listed) and were not printed yet
/// are printed, so none is missed.
pub async fn follow(
    client: &Client,
    job: &str,
    json_out: bool,
    printed: HashSet<String>,
    listed_at: i64,
) -> anyhow::Result<()> {
    let mut printer = Printer {
        client,
        job,
        json_out,
        listed_at,
        printed,
    };
    let mut last_id: Option<String> = None;
    let mut failed = 0u32;
    loop {
        let why = match open(client, last_id.as_deref()).await {
            Ok(resp) => {
                printer.catch_up().await;
                let mut stream = Stream {
                    printer: &mut printer,
                    last_id: &mut last_id,
                    heard: false,
                };
                let ended = stream.read(resp).await;
                if stream.heard {
                    // It worked for a while: start counting afresh.
                    failed = 0;
                }
                match ended {
                    Ok(()) if stream.heard => None,
                    Ok(()) => Some(anyhow::anyhow!("the event stream ended at once")),
                    Err(e) => Some(e.context("the event stream broke")),
                }
            }
            Err(e) => Some(e),
        };
        if let Some(e) = why {
            failed += 1;
            if failed >= MAX_FAILED_CONNECTS {
                return Err(e.context(format!("the event stream failed {failed} times in a row")));
            }
            eprintln!("gdts: {e:#}; trying again");
        }
        // 0.5 s, doubling up to 8 s, while opening fails.
        let wait = 500u64 << failed.min(4);
        tokio::time::sleep(std::time::Duration::from_millis(wait)).await;
    }
}

async fn open(client: &Client, last_id: Option<&str>) -> anyhow::Result<reqwest::Response> {
    let mut req = client
        .request(Method::GET, "/events")
        .header("Accept", "text/event-stream");
    if let Some(id) = last_id {
        req = req.header("Last-Event-ID", id);
    }
    let resp = req
        .send()
        .await
        .with_context(|| format!("cannot reach the manager at {}", client.base()))?;
    anyhow::ensure!(
        resp.status().is_success(),
        "the event stream answered {}",
        resp.status()
    );
    Ok(resp)
}

/// One open event stream and what reading it updates.
struct Stream<'a, 'c> {
    printer: &'a mut Printer<'c>,
    last_id: &'a mut Option<String>,
    /// Anything (an event, a keep-alive) arrived.
    heard: bool,
}

impl Stream<'_, '_> {
    /// Reads the connection's events until it ends, breaks or goes silent.
    async fn read(&mut self, resp: reqwest::Response) -> anyhow::Result<()> {
        let mut stream = resp.bytes_stream();
        let mut buffer = String::new();
        let (mut event, mut data, mut id) = (String::new(), String::new(), None::<String>);
        loop {
            let chunk = match tokio::time::timeout(SILENCE, stream.next()).await {
                Ok(Some(chunk)) => chunk?,
                Ok(None) => return Ok(()),
                Err(_) => anyhow::bail!("nothing arrived in {SILENCE:?}"),
            };
            self.heard = true;
            buffer.push_str(&String::from_utf8_lossy(&chunk));
            while let Some(end) = buffer.find('\n') {
                let line = buffer[..end].trim_end_matches('\r').to_string();
                buffer.drain(..=end);
                if line.is_empty() {
                    match event.as_str() {
                        "run.finished" => self.printer.finished(&data).await,
                        // The manager could not resume where this left off:
                        // what ended meanwhile is read from the records.
                        "reset" => self.printer.catch_up().await,
                        _ => {}
                    }
                    if let Some(id) = id.take() {
                        *self.last_id = Some(id);
                    }
                    event.clear();
                    data.clear();
                } else if let Some(v) = line.strip_prefix("event:") {
                    event = v.trim().to_string();
                } else if let Some(v) = line.strip_prefix("id:") {
                    id = Some(v.trim().to_string());
                } else if let Some(v) = line.strip_prefix("data:") {
                    if !data.is_empty() {
                        data.push('\n');
                    }
                    data.push_str(v.trim_start());
                }
            }
        }
    }
}

/// Prints a job's runs, each once.
struct Printer<'c> {
    client: &'c Client,
    job: &'c str,
    json_out: bool,
    /// Epoch ms: when the recent runs were listed.
    listed_at: i64,
    /// Run ids printed already.
    printed: HashSet<String>,
}

impl Printer<'_> {
    /// Prints the job's recent runs that ended at `listed_at` or later,
    /// oldest first.
    async fn catch_up(&mut self) {
        let Ok(runs) = crate::runs_of(self.client, self.job, 20).await else {
            return;
        };
        let listed_at = self.listed_at;
        let recent = runs
            .iter()
            .rev()
            .filter(|r| r["endTime"].as_i64().is_some_and(|end| end >= listed_at));
        for run in recent {
            if let Some(run_id) = run["runId"].as_str() {
                self.print(run_id).await;
            }
        }
    }

    /// Prints the run a `run.finished` event names, if it is the job's.
    async fn finished(&mut self, data: &str) {
        let Ok(event) = serde_json::from_str::<Value>(data) else {
            return;
        };
        if event["job"] != self.job {
            return;
        }
        if let Some(run_id) = event["runId"].as_str() {
            self.print(run_id).await;
        }
    }

    /// Fetches a run and prints it, unless it was printed already.
    async fn print(&mut self, run_id: &str) {
        if self.printed.contains(run_id) {
            return;
        }
        let path = format!("/jobs/{}/runs/{}", segment(self.job), segment(run_id));
        // The record may reach MongoDB just after the event.
        for _ in 0..20 {
            if let Ok(answer) = self.client.get(&path).await {
                print_run(&answer.body, self.json_out);
                self.printed.insert(run_id.to_string());
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(250)).await;
        }
        eprintln!("gdts: run {run_id} finished, but its record is not readable yet");
    }
}
