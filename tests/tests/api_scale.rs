//! The manager with 100,000 jobs: the legacy list answers with all of them
//! (one etcd response that size is above the client's 4 MiB limit, so it
//! must be read page by page), and a page of the JSON API reads only what it
//! shows. The jobs are written straight into etcd, in batched transactions.

use std::time::{Duration, Instant};

use etcd_client::{PutOptions, Txn, TxnOp};
use futures::{StreamExt, TryStreamExt};
use gdts_tests::gdts_common::keys::{Keys, RunKey};
use gdts_tests::gdts_common::JobName;
use gdts_tests::Cluster;
use serde_json::{json, Value};

const JOBS: usize = 100_000;
/// etcd's default `--max-txn-ops`.
const PUTS_PER_TXN: usize = 128;

fn job_name(i: usize) -> String {
    format!("job-{i:06}")
}

async fn load_jobs(c: &Cluster) -> anyhow::Result<()> {
    let keys = Keys::new(&c.prefix);
    let etcd = c.etcd.client().await;
    let batches: Vec<Vec<usize>> = (0..JOBS)
        .collect::<Vec<_>>()
        .chunks(PUTS_PER_TXN)
        .map(<[usize]>::to_vec)
        .collect();
    futures::stream::iter(batches)
        .map(|batch| {
            let (keys, mut etcd) = (keys.clone(), etcd.clone());
            async move {
                let ops: Vec<TxnOp> = batch
                    .into_iter()
                    .map(|i| {
                        let name = JobName::parse(&job_name(i)).expect("a valid name");
                        let spec = json!({"name": name.as_str(), "command": "true", "cronExpr": "@yearly"});
                        TxnOp::put(keys.job(&name), spec.to_string(), None)
                    })
                    .collect();
                etcd.txn(Txn::new().and_then(ops)).await?;
                anyhow::Ok(())
            }
        })
        .buffer_unordered(8)
        .try_collect::<Vec<()>>()
        .await?;
    Ok(())
}

/// The time of each of `n` GETs of `url`, sorted.
async fn timings(http: &reqwest::Client, url: &str, n: usize) -> anyhow::Result<Vec<Duration>> {
    let mut all = Vec::with_capacity(n);
    for _ in 0..n {
        let start = Instant::now();
        let resp = http.get(url).send().await?;
        anyhow::ensure!(resp.status() == 200, "{url}: HTTP {}", resp.status());
        resp.bytes().await?;
        all.push(start.elapsed());
    }
    all.sort();
    Ok(all)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_thousand_jobs() -> anyhow::Result<()> {
    let c = Cluster::start("api_scale").await?;
    let started = Instant::now();
    load_jobs(&c).await?;
    eprintln!("loaded {JOBS} jobs in {:?}", started.elapsed());
    // A few runs in progress, on jobs of the first page and a deep one.
    let keys = Keys::new(&c.prefix);
    let mut etcd = c.etcd.client().await;
    for (i, tick) in [(0, 1), (0, 2), (2, 1), (60_001, 1)] {
        let key = keys.running(&JobName::parse(&job_name(i))?, &RunKey::scheduled(tick));
        let mark = json!({"worker": "w", "startedAt": 0}).to_string();
        etcd.put(key, mark, None::<PutOptions>).await?;
    }
    let http = reqwest::Client::new();
    // The manager pages the list through its index of job names, which its
    // watch of the jobs keeps (`job_index.rs`): jobs written straight into
    // etcd, as by another manager, are in it once the watch has brought them.
    let total_url = format!("{}/api/v1/jobs?pageSize=1", c.manager_url);
    gdts_tests::wait_until(
        "the manager's job index to hold every job",
        Duration::from_secs(60),
        || async {
            match http.get(&total_url).send().await {
                Ok(r) => r.json::<Value>().await.is_ok_and(|v| v["total"] == JOBS),
                Err(_) => false,
            }
        },
    )
    .await?;

    // The legacy list: every job, in order, in one envelope.
    let started = Instant::now();
    let resp = http
        .get(format!("{}/job/list", c.manager_url))
        .send()
        .await?;
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await?;
    eprintln!("GET /job/list with {JOBS} jobs: {:?}", started.elapsed());
    assert_eq!(
        (&body["errno"], &body["msg"]),
        (&json!(0), &json!("success"))
    );
    let jobs = body["data"].as_array().expect("data is the job array");
    assert_eq!(jobs.len(), JOBS);
    assert!(jobs
        .iter()
        .enumerate()
        .all(|(i, j)| j["name"] == job_name(i).as_str()));

    // The JSON API: pages anywhere in the list, and cursors.
    let api = |path: String| {
        let http = &http;
        let url = format!("{}/api/v1{path}", c.manager_url);
        async move {
            let resp = http.get(&url).send().await?;
            anyhow::ensure!(resp.status() == 200, "{url}: HTTP {}", resp.status());
            anyhow::Ok(resp.json::<Value>().await?)
        }
    };
    let names_and_running = |page: &Value| -> Vec<(String, i64)> {
        page["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|j| {
                (
                    j["name"].as_str().unwrap().to_string(),
                    j["running"].as_i64().unwrap(),
                )
            })
            .collect()
    };
    let first = api("/jobs?pageSize=3".into()).await?;
    assert_eq!(first["total"], JOBS);
    assert_eq!(
        names_and_running(&first),
        vec![(job_name(0), 2), (job_name(1), 0), (job_name(2), 1)]
    );
    let deep = api("/jobs?page=1201&pageSize=50".into()).await?;
    let names = names_and_running(&deep);
    assert_eq!(names.len(), 50);
    assert_eq!(names[0], (job_name(60_000), 0));
    assert_eq!(names[1], (job_name(60_001), 1));
    let next = api(format!("/jobs?after={}&pageSize=50", job_name(60_049))).await?;
    assert_eq!(names_and_running(&next)[0].0, job_name(60_050));
    let last = api("/jobs?page=2000&pageSize=50".into()).await?;
    assert_eq!(
        names_and_running(&last).last().unwrap().0,
        job_name(JOBS - 1)
    );
    assert_eq!(
        api("/jobs?page=2001&pageSize=50".into()).await?["items"],
        json!([])
    );
    let prefixed = api("/jobs?prefix=job-0999&pageSize=500".into()).await?;
    assert_eq!(
        (
            prefixed["total"].clone(),
            names_and_running(&prefixed).len()
        ),
        (json!(100), 100)
    );
    let one = api(format!("/jobs/{}", job_name(0))).await?;
    assert_eq!(one["running"], 2);

    // How long a page takes (debug build, loopback, SecantusDB for `lastRun`).
    let base = format!("{}/api/v1", c.manager_url);
    for (what, path, n) in [
        ("first page", "/jobs".to_string(), 50),
        ("page 1000", "/jobs?page=1000".to_string(), 10),
        ("page 2000", "/jobs?page=2000".to_string(), 10),
        (
            "after a deep cursor",
            format!("/jobs?after={}", job_name(99_000)),
            50,
        ),
        ("one job", format!("/jobs/{}", job_name(50_000)), 50),
    ] {
        let t = timings(&http, &format!("{base}{path}"), n).await?;
        eprintln!(
            "GET /api/v1{path} ({what}, {n} times): p50 {:?}, p99 {:?}, max {:?}",
            percentile(&t, 0.5),
            percentile(&t, 0.99),
            t.last().unwrap()
        );
        // Only against pathologies; the figures above are the measurement.
        assert!(percentile(&t, 0.5) < Duration::from_secs(2), "{what}");
    }
    Ok(())
}
