//! `gdts logs --follow`: the event stream, and each finished run of the job
//! printed with its output.

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

/// Follows `/events` until it ends; each `run.finished` of `job` that
/// names its run is fetched and printed.
pub async fn follow(client: &Client, job: &str, json_out: bool) -> anyhow::Result<()> {
    let resp = client
        .request(Method::GET, "/events")
        .header("Accept", "text/event-stream")
        .send()
        .await
        .with_context(|| format!("cannot reach the manager at {}", client.base()))?;
    anyhow::ensure!(
        resp.status().is_success(),
        "the event stream answered {}",
        resp.status()
    );
    let mut stream = resp.bytes_stream();
    let mut buffer = String::new();
    let (mut event, mut data) = (String::new(), String::new());
    while let Some(chunk) = stream.next().await {
        buffer.push_str(&String::from_utf8_lossy(&chunk?));
        while let Some(end) = buffer.find('\n') {
            let line = buffer[..end].trim_end_matches('\r').to_string();
            buffer.drain(..=end);
            if line.is_empty() {
                if event == "run.finished" {
                    finished(client, job, &data, json_out).await;
                }
                event.clear();
                data.clear();
            } else if let Some(v) = line.strip_prefix("event:") {
                event = v.trim().to_string();
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

async fn finished(client: &Client, job: &str, data: &str, json_out: bool) {
    let Ok(event) = serde_json::from_str::<Value>(data) else {
        return;
    };
    if event["job"] != job {
        return;
    }
    let Some(run_id) = event["runId"].as_str() else {
        return;
    };
    let path = format!("/jobs/{}/runs/{}", segment(job), segment(run_id));
    // The record may reach MongoDB just after the event.
    for _ in 0..20 {
        if let Ok(answer) = client.get(&path).await {
            print_run(&answer.body, json_out);
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
    eprintln!("gdts: run {run_id} finished, but its record is not readable yet");
}
