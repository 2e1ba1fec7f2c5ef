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

/// How many times in a row the event stream may fail to open before
/// `--follow` gives up (exit 1).
const MAX_FAILED_CONNECTS: u32 = 8;

/// Follows `/events` for good: each `run.finished` of `job` that names its
/// run is fetched and printed, once (`printed`: run ids printed already).
/// When the stream ends or breaks (a manager replaced, a proxy's request
/// timeout), it is opened again with `Last-Event-ID`, so no run finished
/// meanwhile is missed; runs that finished before the stream first opened,
/// but not before `listed_at` (epoch ms: when the recent ones were listed),
/// are printed once it has.
pub async fn follow(
    client: &Client,
    job: &str,
    json_out: bool,
    mut printed: HashSet<String>,
    listed_at: i64,
) -> anyhow::Result<()> {
    let mut last_id: Option<String> = None;
    let mut failed = 0u32;
    let mut opened_once = false;
    loop {
        match open(client, last_id.as_deref()).await {
            Ok(resp) => {
                failed = 0;
                if !opened_once {
                    opened_once = true;
                    catch_up(client, job, json_out, listed_at, &mut printed).await;
                }
                if let Err(e) = read(resp, client, job, json_out, &mut printed, &mut last_id).await
                {
                    eprintln!("gdts: the event stream broke ({e:#}); opening it again");
                }
            }
            Err(e) => {
                failed += 1;
                if failed >= MAX_FAILED_CONNECTS {
                    return Err(e.context(format!(
                        "the event stream could not be opened {failed} times in a row"
                    )));
                }
                eprintln!("gdts: {e:#}; trying again");
            }
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

/// Reads one connection's events until it ends.
async fn read(
    resp: reqwest::Response,
    client: &Client,
    job: &str,
    json_out: bool,
    printed: &mut HashSet<String>,
    last_id: &mut Option<String>,
) -> anyhow::Result<()> {
    let mut stream = resp.bytes_stream();
    let mut buffer = String::new();
    let (mut event, mut data, mut id) = (String::new(), String::new(), None::<String>);
    while let Some(chunk) = stream.next().await {
        buffer.push_str(&String::from_utf8_lossy(&chunk?));
        while let Some(end) = buffer.find('\n') {
            let line = buffer[..end].trim_end_matches('\r').to_string();
            buffer.drain(..=end);
            if line.is_empty() {
                if event == "run.finished" {
                    finished(client, job, &data, json_out, printed).await;
                }
                if let Some(id) = id.take() {
                    *last_id = Some(id);
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
    Ok(())
}

/// Prints the job's recent runs that ended at `listed_at` or later and were
/// not printed yet, oldest first.
async fn catch_up(
    client: &Client,
    job: &str,
    json_out: bool,
    listed_at: i64,
    printed: &mut HashSet<String>,
) {
    let path = format!("/jobs/{}/runs?page=1&pageSize=20", segment(job));
    let Ok(answer) = client.get(&path).await else {
        return;
    };
    let runs = answer.body["items"].as_array().cloned().unwrap_or_default();
    let recent = runs
        .iter()
        .rev()
        .filter(|r| r["endTime"].as_i64().is_some_and(|end| end >= listed_at));
    for run in recent {
        if let Some(run_id) = run["runId"].as_str() {
            if !printed.contains(run_id) {
                print_by_id(client, job, run_id, json_out, printed).await;
            }
        }
    }
}

async fn finished(
    client: &Client,
    job: &str,
    data: &str,
    json_out: bool,
    printed: &mut HashSet<String>,
) {
    let Ok(event) = serde_json::from_str::<Value>(data) else {
        return;
    };
    if event["job"] != job {
        return;
    }
    let Some(run_id) = event["runId"].as_str() else {
        return;
    };
    if !printed.contains(run_id) {
        print_by_id(client, job, run_id, json_out, printed).await;
    }
}

/// Fetches a run and prints it, noting its id.
async fn print_by_id(
    client: &Client,
    job: &str,
    run_id: &str,
    json_out: bool,
    printed: &mut HashSet<String>,
) {
    let path = format!("/jobs/{}/runs/{}", segment(job), segment(run_id));
    // The record may reach MongoDB just after the event.
    for _ in 0..20 {
        if let Ok(answer) = client.get(&path).await {
            print_run(&answer.body, json_out);
            printed.insert(run_id.to_string());
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
    eprintln!("gdts: run {run_id} finished, but its record is not readable yet");
}
