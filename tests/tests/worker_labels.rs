//! Worker labels and job selectors: a job with a `selector` runs only on
//! workers whose labels (`GDTS_WORKER_LABELS`) include every pair, still
//! exactly once per tick; a job whose selector matches no live worker is
//! flagged `unmatched` in the API and counted in the workers' metrics, and
//! runs once a matching worker joins; a manual run goes to a matching
//! worker too; the worker list shows the labels. The
//! JSON API refuses a field a job does not have (a typo) with 422 naming it.

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use gdts_tests::{free_port, record_key, records_of, wait_until, Cluster, WorkerOptions};
use serde_json::{json, Value};

fn labelled(labels: &str, health_port: u16) -> WorkerOptions {
    WorkerOptions {
        env: vec![
            ("GDTS_WORKER_LABELS".into(), labels.into()),
            ("GDTS_HEALTH_PORT".into(), health_port.to_string()),
        ],
        ..Default::default()
    }
}

async fn job_view(c: &Cluster, http: &reqwest::Client, name: &str) -> anyhow::Result<Value> {
    Ok(http
        .get(format!("{}/api/v1/jobs/{name}", c.manager_url))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn selectors_pick_workers_by_label_and_unmatched_jobs_are_flagged() -> anyhow::Result<()> {
    let mut c = Cluster::start("worker_labels").await?;
    let ports: HashMap<&str, u16> = [
        ("w-gpu", free_port()),
        ("w-a", free_port()),
        ("w-b", free_port()),
    ]
    .into_iter()
    .collect();
    c.start_worker("w-gpu", labelled("gpu=true, zone=a", ports["w-gpu"]))?;
    c.start_worker("w-a", labelled("zone=a", ports["w-a"]))?;
    c.start_worker("w-b", labelled("zone=b", ports["w-b"]))?;
    c.wait_for_workers(&["w-gpu", "w-a", "w-b"], Duration::from_secs(20))
        .await?;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()?;

    let put = |name: &str, body: Value| {
        http.put(format!("{}/api/v1/jobs/{name}", c.manager_url))
            .json(&body)
            .send()
    };
    let every_second = "* * * * * * *";
    for (name, selector) in [
        ("gpu-job", json!({"gpu": "true"})),
        ("zone-a", json!({"zone": "a"})),
        ("zone-c", json!({"zone": "c"})),
        ("anywhere", json!({})),
    ] {
        let r = put(
            name,
            json!({"command": "echo ran", "cronExpr": every_second, "selector": selector}),
        )
        .await?;
        assert_eq!(r.status(), 201, "{name}: {}", r.text().await?);
    }
    // A typo is refused, naming the field; nothing is saved.
    let r = put(
        "typo",
        json!({"command": "true", "cronExpr": every_second, "timeoutSecond": 5}),
    )
    .await?;
    assert_eq!(r.status(), 422);
    let body: Value = r.json().await?;
    assert_eq!(body["error"]["field"], "timeoutSecond", "{body}");
    let r = http
        .get(format!("{}/api/v1/jobs/typo", c.manager_url))
        .send()
        .await?;
    assert_eq!(r.status(), 404);
    // A malformed selector is refused too.
    let r = put(
        "bad-selector",
        json!({"command": "true", "cronExpr": every_second, "selector": {"gpu": "yes please"}}),
    )
    .await?;
    assert_eq!(r.status(), 422);

    // The worker list shows the labels.
    let workers: Value = http
        .get(format!("{}/api/v1/workers", c.manager_url))
        .send()
        .await?
        .json()
        .await?;
    let gpu = workers
        .as_array()
        .and_then(|w| w.iter().find(|w| w["id"] == "w-gpu"))
        .cloned()
        .unwrap_or_default();
    assert_eq!(
        gpu["labels"],
        json!({"gpu": "true", "zone": "a"}),
        "{workers}"
    );

    wait_until(
        "runs of the matched jobs",
        Duration::from_secs(30),
        || async {
            let records = c.run_records().await.unwrap_or_default();
            ["gpu-job", "zone-a", "anywhere"]
                .iter()
                .all(|j| records_of(&records, j).len() >= 6)
        },
    )
    .await?;
    let records = c.run_records().await?;
    let workers_of = |job: &str| -> BTreeSet<String> {
        records_of(&records, job)
            .iter()
            .map(|d| d.get_str("worker").unwrap_or_default().to_string())
            .collect()
    };
    assert_eq!(workers_of("gpu-job"), BTreeSet::from(["w-gpu".to_string()]));
    assert!(
        workers_of("zone-a")
            .iter()
            .all(|w| w == "w-gpu" || w == "w-a"),
        "zone-a ran outside zone a: {:?}",
        workers_of("zone-a")
    );
    assert!(records_of(&records, "zone-c").is_empty(), "zone-c ran");
    // Run-once holds with selectors: one record per (job, tick).
    let mut seen = BTreeSet::new();
    for d in &records {
        let (job, tick, _) = record_key(d);
        assert!(seen.insert((job.clone(), tick)), "{job}@{tick} ran twice");
    }

    // The unmatched job is flagged, in its view and in the list, and the
    // ticks nobody may run are counted by the workers.
    assert_eq!(job_view(&c, &http, "zone-c").await?["unmatched"], true);
    assert_eq!(job_view(&c, &http, "gpu-job").await?["unmatched"], false);
    let list: Value = http
        .get(format!("{}/api/v1/jobs", c.manager_url))
        .send()
        .await?
        .json()
        .await?;
    let flagged: Vec<&str> = list["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|j| j["unmatched"] == true)
        .filter_map(|j| j["name"].as_str())
        .collect();
    assert_eq!(flagged, ["zone-c"], "{list}");
    let mut unmatched_ticks = 0.0;
    for port in ports.values() {
        let text = http
            .get(format!("http://127.0.0.1:{port}/metrics"))
            .send()
            .await?
            .text()
            .await?;
        unmatched_ticks += text
            .lines()
            .find_map(|l| l.strip_prefix("gdts_worker_ticks_unmatched_total "))
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0);
    }
    assert!(
        unmatched_ticks >= 3.0,
        "unmatched ticks counted: {unmatched_ticks}"
    );
    // ... and every worker says how many jobs are unmatched now.
    let unmatched_jobs = |port: u16| {
        let http = http.clone();
        async move {
            let text = http
                .get(format!("http://127.0.0.1:{port}/metrics"))
                .send()
                .await
                .ok()?
                .text()
                .await
                .ok()?;
            text.lines()
                .find_map(|l| l.strip_prefix("gdts_worker_jobs_unmatched "))
                .and_then(|v| v.parse::<f64>().ok())
        }
    };
    for port in ports.values() {
        assert_eq!(unmatched_jobs(*port).await, Some(1.0), "worker on {port}");
    }
    // A manual run nobody could take is refused, not lost.
    let run = http
        .post(format!("{}/api/v1/jobs/zone-c/run", c.manager_url))
        .send()
        .await?;
    assert_eq!(run.status(), 409);
    let why: Value = run.json().await?;
    assert!(
        why["error"]["message"]
            .as_str()
            .is_some_and(|e| e.contains("no live worker")),
        "{why}"
    );
    let legacy: Value = http
        .post(format!("{}/job/run", c.manager_url))
        .form(&[("name", "zone-c")])
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(legacy["errno"], -1, "{legacy}");
    assert!(
        legacy["msg"]
            .as_str()
            .is_some_and(|m| m.contains("no live worker")),
        "{legacy}"
    );

    // A manual run of a job with a selector runs on a matching worker only
    // (four runs: one outside the selector among three workers is likely).
    let r = put(
        "gpu-manual",
        json!({"command": "echo manual", "cronExpr": "0 0 0 1 1 * 2099", "selector": {"gpu": "true"}}),
    )
    .await?;
    assert_eq!(r.status(), 201, "{}", r.text().await?);
    for n in 1..=4 {
        let run = http
            .post(format!("{}/api/v1/jobs/gpu-manual/run", c.manager_url))
            .send()
            .await?;
        assert!(run.status().is_success(), "{}", run.text().await?);
        wait_until(
            "the manual run's record",
            Duration::from_secs(20),
            || async {
                let records = c.run_records().await.unwrap_or_default();
                records_of(&records, "gpu-manual").len() >= n
            },
        )
        .await?;
    }
    let records = c.run_records().await?;
    let manual = records_of(&records, "gpu-manual");
    assert_eq!(manual.len(), 4);
    for d in manual {
        assert_eq!(d.get_str("trigger"), Ok("manual"), "{d}");
        assert_eq!(d.get_str("worker"), Ok("w-gpu"), "{d}");
    }

    // A worker in zone c joins: the job is no longer flagged, and runs there.
    c.start_worker("w-c", labelled("zone=c", free_port()))?;
    c.wait_for_workers(&["w-gpu", "w-a", "w-b", "w-c"], Duration::from_secs(20))
        .await?;
    wait_until("zone-c to run on w-c", Duration::from_secs(20), || async {
        let records = c.run_records().await.unwrap_or_default();
        records_of(&records, "zone-c").len() >= 2
    })
    .await?;
    let records = c.run_records().await?;
    assert!(records_of(&records, "zone-c")
        .iter()
        .all(|d| d.get_str("worker") == Ok("w-c")));
    assert_eq!(job_view(&c, &http, "zone-c").await?["unmatched"], false);
    for port in ports.values() {
        wait_until(
            "no job to be unmatched",
            Duration::from_secs(10),
            || async { unmatched_jobs(*port).await == Some(0.0) },
        )
        .await?;
    }
    Ok(())
}
