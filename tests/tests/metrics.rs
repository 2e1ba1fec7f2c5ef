//! Metrics and alerting, checked with Prometheus' own `promtool` (unpacked
//! from Debian's prometheus package by scripts/deps.sh): a worker's and a
//! manager's `/metrics`, after real runs, pass `promtool check metrics` and
//! count what happened (runs by status, start lag, per-job outcomes, claim
//! transactions and record writes timed, HTTP requests by route pattern);
//! the alert rules in ops/prometheus pass `promtool check rules` and their
//! unit tests; and every metric the rules and the Grafana dashboard use is
//! one the processes export.

use std::collections::BTreeSet;
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use gdts_tests::{free_port, wait_until, workspace_root, Cluster, WorkerOptions};

fn promtool() -> anyhow::Result<PathBuf> {
    let path = workspace_root().join(".tools/prometheus/usr/bin/promtool");
    anyhow::ensure!(
        path.exists(),
        "{} is missing: scripts/deps.sh (make test) unpacks it",
        path.display()
    );
    Ok(path)
}

/// Runs promtool with `args`, `stdin` fed in; its output, or an error with it.
fn run_promtool(args: &[&str], stdin: Option<&str>) -> anyhow::Result<String> {
    let mut child = Command::new(promtool()?)
        .args(args)
        .current_dir(workspace_root().join("ops/prometheus"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    if let Some(text) = stdin {
        child
            .stdin
            .take()
            .expect("piped")
            .write_all(text.as_bytes())?;
    } else {
        drop(child.stdin.take());
    }
    let out = child.wait_with_output()?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    anyhow::ensure!(out.status.success(), "promtool {args:?} failed:\n{text}");
    Ok(text)
}

/// The value of the sample whose name and labels are exactly `series`.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

/// Metric family names (`# TYPE name ...`) in an exposition.
fn families(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect()
}

/// `gdts_...` names used in a rules file or dashboard, as family names.
fn used_metrics(text: &str) -> BTreeSet<String> {
    let mut used = BTreeSet::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while let Some(at) = text[i..].find("gdts_") {
        let start = i + at;
        let mut end = start;
        while end < bytes.len() && (bytes[end].is_ascii_alphanumeric() || bytes[end] == b'_') {
            end += 1;
        }
        let name = &text[start..end];
        let family = ["_bucket", "_count", "_sum"]
            .iter()
            .find_map(|s| name.strip_suffix(s))
            .unwrap_or(name);
        used.insert(family.to_string());
        i = end;
    }
    used
}

/// Label names used by the samples of an exposition.
fn label_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some(open) = line.find('{') else { continue };
        let mut rest = &line[open + 1..];
        while let Some(eq) = rest.find("=\"") {
            names.insert(rest[..eq].trim_start_matches(',').to_string());
            // Past the quoted value (backslash escapes its quote).
            let value = &rest[eq + 2..];
            let mut end = 0;
            let bytes = value.as_bytes();
            while end < bytes.len() && bytes[end] != b'"' {
                end += if bytes[end] == b'\\' { 2 } else { 1 };
            }
            rest = value.get(end + 1..).unwrap_or("");
            if rest.starts_with('}') {
                break;
            }
        }
    }
    names
}

/// Prometheus gives every scraped series these target labels; a metric's
/// own label by one of these names would be renamed `exported_...`, and
/// rules grouping by it would group by the scrape target instead.
const TARGET_LABELS: &[&str] = &["job", "instance"];

#[test]
fn label_names_reads_every_label_of_a_sample() {
    let names =
        label_names("# TYPE a counter\na{x=\"1\",route=\"/j/{name}\",y=\"q\\\"}\"} 1\nb 2\n");
    assert_eq!(
        names,
        BTreeSet::from(["route".to_string(), "x".to_string(), "y".to_string()])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_pass_promtool_and_count_what_happened() -> anyhow::Result<()> {
    promtool()?;
    let mut c = Cluster::start("metrics").await?;
    let health_port = free_port();
    c.start_worker(
        "w1",
        WorkerOptions {
            env: vec![("GDTS_HEALTH_PORT".into(), health_port.to_string())],
            ..Default::default()
        },
    )?;
    c.wait_for_workers(&["w1"], Duration::from_secs(20)).await?;
    c.save_job("fine", "echo fine", "* * * * * * *").await?;
    c.save_job("failing", "exit 3", "* * * * * * *").await?;

    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()?;
    let worker_metrics = format!("http://127.0.0.1:{health_port}/metrics");
    let counted = |text: &str| {
        let ok = sample(
            text,
            "gdts_worker_runs_total{status=\"succeeded\",trigger=\"schedule\"}",
        )
        .unwrap_or(0.0);
        let failed = sample(
            text,
            "gdts_worker_runs_total{status=\"failed\",trigger=\"schedule\"}",
        )
        .unwrap_or(0.0);
        let written = sample(text, "gdts_worker_records_total{event=\"written\"}").unwrap_or(0.0);
        ok >= 3.0 && failed >= 3.0 && written >= 6.0
    };
    wait_until(
        "the worker's metrics to count runs and written records",
        Duration::from_secs(30),
        || {
            let req = http.get(&worker_metrics).send();
            async move {
                match req.await {
                    Ok(r) => counted(&r.text().await.unwrap_or_default()),
                    Err(_) => false,
                }
            }
        },
    )
    .await?;
    let worker = http.get(&worker_metrics).send().await?;
    assert!(worker.headers().get("content-type").is_some_and(|v| v
        .to_str()
        .unwrap_or("")
        .starts_with("text/plain; version=0.0.4")));
    let worker = worker.text().await?;
    run_promtool(&["check", "metrics"], Some(&worker))?;
    for (series, at_least) in [
        ("gdts_worker_registered", 1.0),
        (
            "gdts_worker_job_runs_total{job_name=\"failing\",outcome=\"failed\"}",
            3.0,
        ),
        (
            "gdts_worker_job_runs_total{job_name=\"fine\",outcome=\"ok\"}",
            3.0,
        ),
        (
            "gdts_worker_tick_start_lag_seconds_count{trigger=\"schedule\"}",
            6.0,
        ),
        ("gdts_worker_run_duration_seconds_count", 6.0),
        ("gdts_worker_claim_outcomes_total{outcome=\"won\"}", 6.0),
        ("gdts_worker_lease_renewals_total", 1.0),
        (
            "gdts_etcd_request_duration_seconds_count{op=\"claim_txn\"}",
            1.0,
        ),
        (
            "gdts_etcd_request_duration_seconds_count{op=\"lease_keep_alive\"}",
            1.0,
        ),
        (
            "gdts_mongo_request_duration_seconds_count{op=\"insert_records\"}",
            1.0,
        ),
    ] {
        let value = sample(&worker, series);
        assert!(
            value.is_some_and(|v| v >= at_least),
            "{series} is {value:?}, expected at least {at_least}:\n{worker}"
        );
    }
    // Started ahead and released at the tick: the lag is small on this box.
    assert!(
        sample(
            &worker,
            "gdts_worker_tick_start_lag_seconds_bucket{trigger=\"schedule\",le=\"1\"}"
        )
        .unwrap_or(0.0)
            >= 3.0,
        "no run started within a second of its tick:\n{worker}"
    );
    assert!(
        sample(&worker, "gdts_worker_clock_offset_seconds").is_some(),
        "no clock offset:\n{worker}"
    );

    // The manager: requests by the route's pattern, never by the job's name.
    for _ in 0..3 {
        let r = http
            .get(format!("{}/api/v1/jobs/fine", c.manager_url))
            .send()
            .await?;
        assert_eq!(r.status(), 200);
    }
    let missing = http
        .get(format!("{}/api/v1/jobs/nope", c.manager_url))
        .send()
        .await?;
    assert_eq!(missing.status(), 404);
    // A method nobody serves is counted as "other": a caller cannot make
    // new series at will.
    for method in ["FROB", "XYZZY"] {
        http.request(
            reqwest::Method::from_bytes(method.as_bytes())?,
            format!("{}/api/v1/jobs", c.manager_url),
        )
        .send()
        .await?;
    }
    let manager = http
        .get(format!("{}/metrics", c.manager_url))
        .send()
        .await?
        .text()
        .await?;
    run_promtool(&["check", "metrics"], Some(&manager))?;
    assert_eq!(
        sample(
            &manager,
            "gdts_http_requests_total{method=\"GET\",route=\"/api/v1/jobs/{name}\",status=\"200\"}"
        ),
        Some(3.0),
        "{manager}"
    );
    assert_eq!(
        sample(
            &manager,
            "gdts_http_requests_total{method=\"GET\",route=\"/api/v1/jobs/{name}\",status=\"404\"}"
        ),
        Some(1.0),
        "{manager}"
    );
    assert!(
        !manager.contains("route=\"/api/v1/jobs/fine\""),
        "a job's name became a label:\n{manager}"
    );
    assert!(
        sample(
            &manager,
            "gdts_etcd_request_duration_seconds_count{op=\"get_job\"}"
        )
        .is_some_and(|v| v >= 4.0),
        "{manager}"
    );
    assert_eq!(sample(&manager, "gdts_sse_clients"), Some(0.0), "{manager}");
    assert!(
        !manager.contains("FROB") && !manager.contains("XYZZY"),
        "a client's made-up method became a label:\n{manager}"
    );
    assert!(
        manager.contains("method=\"other\""),
        "made-up methods not counted as other:\n{manager}"
    );
    for (who, text) in [("worker", &worker), ("manager", &manager)] {
        let names = label_names(text);
        for target in TARGET_LABELS {
            assert!(
                !names.contains(*target),
                "the {who} labels a metric {target:?}, which Prometheus' own target label overrides"
            );
        }
    }

    // The alert rules and the dashboard use only what the processes export.
    let exported: BTreeSet<String> = families(&worker)
        .union(&families(&manager))
        .cloned()
        .collect();
    let root = workspace_root();
    for file in [
        "ops/prometheus/alerts.yml",
        "ops/grafana/gdts-dashboard.json",
    ] {
        let text = std::fs::read_to_string(root.join(file))?;
        let used = used_metrics(&text);
        assert!(used.len() >= 8, "{file} uses too few metrics: {used:?}");
        let unknown: Vec<_> = used.difference(&exported).collect();
        assert!(
            unknown.is_empty(),
            "{file} uses metrics nobody exports: {unknown:?}"
        );
    }
    let _: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(
        root.join("ops/grafana/gdts-dashboard.json"),
    )?)?;
    Ok(())
}

#[test]
fn alert_rules_pass_promtool_and_their_unit_tests() -> anyhow::Result<()> {
    let checked = run_promtool(&["check", "rules", "alerts.yml"], None)?;
    assert!(checked.contains("SUCCESS"), "{checked}");
    let tested = run_promtool(&["test", "rules", "alerts_test.yml"], None)?;
    assert!(tested.contains("SUCCESS"), "{tested}");
    // Every alert has a unit test that makes it fire.
    let dir = workspace_root().join("ops/prometheus");
    let rules = std::fs::read_to_string(dir.join("alerts.yml"))?;
    let tests = std::fs::read_to_string(dir.join("alerts_test.yml"))?;
    let alerts: Vec<&str> = rules
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- alert: "))
        .collect();
    assert!(alerts.len() >= 6, "{alerts:?}");
    // Each test case runs from its alertname to the next one's.
    let firing: BTreeSet<&str> = tests
        .split("alertname: ")
        .skip(1)
        .filter(|case| case.contains("exp_labels"))
        .filter_map(|case| case.lines().next())
        .map(str::trim)
        .collect();
    let untested: Vec<&&str> = alerts.iter().filter(|a| !firing.contains(**a)).collect();
    assert!(
        untested.is_empty(),
        "alerts without a unit test: {untested:?}"
    );
    Ok(())
}
