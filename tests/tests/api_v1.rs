//! The JSON API under /api/v1: every endpoint, error cases, paging edges.

use std::time::Duration;

use gdts_tests::{once_soon, wait_until, Cluster};
use reqwest::StatusCode;
use serde_json::{json, Value};

struct Api {
    base: String,
    http: reqwest::Client,
}

impl Api {
    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&str>,
    ) -> anyhow::Result<(StatusCode, Value)> {
        self.call_with(method, path, body, &[]).await
    }
    async fn call_with(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&str>,
        headers: &[(&str, &str)],
    ) -> anyhow::Result<(StatusCode, Value)> {
        let mut req = self
            .http
            .request(method, format!("{}/api/v1{path}", self.base));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        if let Some(b) = body {
            req = req
                .header("content-type", "application/json")
                .body(b.to_string());
        }
        let resp = req.send().await?;
        let status = resp.status();
        let text = resp.text().await?;
        let value = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text)?
        };
        Ok((status, value))
    }
    async fn get(&self, path: &str) -> anyhow::Result<(StatusCode, Value)> {
        self.call(reqwest::Method::GET, path, None).await
    }
    async fn put(&self, path: &str, body: &str) -> anyhow::Result<(StatusCode, Value)> {
        self.call(reqwest::Method::PUT, path, Some(body)).await
    }
    async fn post(&self, path: &str) -> anyhow::Result<(StatusCode, Value)> {
        self.call(reqwest::Method::POST, path, None).await
    }
    async fn delete(&self, path: &str) -> anyhow::Result<(StatusCode, Value)> {
        self.call(reqwest::Method::DELETE, path, None).await
    }
}

fn assert_error(resp: &(StatusCode, Value), status: StatusCode, field: Option<&str>) {
    assert_eq!(resp.0, status, "{}", resp.1);
    assert_eq!(resp.1["error"]["status"], status.as_u16(), "{}", resp.1);
    if let Some(f) = field {
        assert_eq!(resp.1["error"]["field"], f, "{}", resp.1);
    }
    assert!(
        !resp.1["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .is_empty(),
        "{}",
        resp.1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_runs_workers_and_preview() -> anyhow::Result<()> {
    let c = Cluster::with_workers("api_v1", &["w1"]).await?;
    let api = Api {
        base: c.manager_url.clone(),
        http: reqwest::Client::new(),
    };

    // Create (201), replace (200), read back.
    let job = json!({"command": "echo v1", "cronExpr": once_soon(3), "timezone": "Europe/Berlin"});
    let r = api.put("/jobs/alpha", &job.to_string()).await?;
    assert_eq!(r.0, StatusCode::CREATED, "{}", r.1);
    assert_eq!(r.1["name"], "alpha");
    let r = api.put("/jobs/alpha", &job.to_string()).await?;
    assert_eq!(r.0, StatusCode::OK);
    let r = api.get("/jobs/alpha").await?;
    assert_eq!(r.0, StatusCode::OK);
    assert_eq!(
        (r.1["command"].clone(), r.1["timezone"].clone()),
        (json!("echo v1"), json!("Europe/Berlin"))
    );
    assert_eq!(r.1["nextFireTimes"].as_array().unwrap().len(), 3);
    assert_eq!(r.1["running"], 0);

    // Errors: 404, 400 (bad name, bad JSON, name mismatch), 422 naming the field.
    assert_error(&api.get("/jobs/nope").await?, StatusCode::NOT_FOUND, None);
    assert_error(
        &api.get("/jobs/a%20b").await?,
        StatusCode::BAD_REQUEST,
        Some("name"),
    );
    assert_error(
        &api.put("/jobs/alpha", "{not json").await?,
        StatusCode::BAD_REQUEST,
        None,
    );
    assert_error(
        &api.put("/jobs/alpha", "[1]").await?,
        StatusCode::BAD_REQUEST,
        None,
    );
    assert_error(
        &api.put(
            "/jobs/alpha",
            r#"{"name":"beta","command":"x","cronExpr":"* * * * *"}"#,
        )
        .await?,
        StatusCode::UNPROCESSABLE_ENTITY,
        Some("name"),
    );
    assert_error(
        &api.put(
            "/jobs/alpha",
            r#"{"command":"x","cronExpr":"61 * * * * *"}"#,
        )
        .await?,
        StatusCode::UNPROCESSABLE_ENTITY,
        Some("cronExpr"),
    );
    assert_error(
        &api.put(
            "/jobs/alpha",
            r#"{"command":"x","cronExpr":"* * * * *","overlap":"maybe"}"#,
        )
        .await?,
        StatusCode::UNPROCESSABLE_ENTITY,
        Some("overlap"),
    );
    assert_error(
        &api.put("/jobs/alpha", r#"{"cronExpr":"* * * * *"}"#)
            .await?,
        StatusCode::UNPROCESSABLE_ENTITY,
        Some("command"),
    );
    assert_error(
        &api.get("/no/such/thing").await?,
        StatusCode::NOT_FOUND,
        None,
    );

    // `If-None-Match: *` creates but never replaces.
    let put_if = |header: &'static str, value: String, body: &'static str| {
        let api = &api;
        async move {
            api.call_with(
                reqwest::Method::PUT,
                "/jobs/once-only",
                Some(body),
                &[(header, value.as_str())],
            )
            .await
        }
    };
    let create_only = |body| put_if("if-none-match", "*".into(), body);
    let first = r#"{"command": "echo first", "cronExpr": "@yearly"}"#;
    assert_eq!(create_only(first).await?.0, StatusCode::CREATED);
    assert_error(
        &create_only(r#"{"command": "echo second", "cronExpr": "@yearly"}"#).await?,
        StatusCode::PRECONDITION_FAILED,
        Some("name"),
    );
    assert_eq!(api.get("/jobs/once-only").await?.1["command"], "echo first");
    assert_error(
        &put_if("if-none-match", "\"abc\"".into(), first).await?,
        StatusCode::BAD_REQUEST,
        Some("If-None-Match"),
    );
    // `If-Match` with the ETag of a GET replaces only that version.
    let etag = api
        .http
        .get(format!("{}/api/v1/jobs/once-only", api.base))
        .send()
        .await?
        .headers()
        .get("etag")
        .expect("GET /jobs/{name} has an ETag")
        .to_str()?
        .to_string();
    let replace_at = |tag: String, body| put_if("if-match", tag, body);
    let second = r#"{"command": "echo second", "cronExpr": "@yearly"}"#;
    assert_eq!(replace_at(etag.clone(), second).await?.0, StatusCode::OK);
    assert_error(
        &replace_at(etag.clone(), first).await?,
        StatusCode::PRECONDITION_FAILED,
        None,
    );
    assert_eq!(
        api.get("/jobs/once-only").await?.1["command"],
        "echo second"
    );
    assert_error(
        &replace_at("soon".into(), first).await?,
        StatusCode::BAD_REQUEST,
        Some("If-Match"),
    );
    assert_eq!(
        api.delete("/jobs/once-only").await?.0,
        StatusCode::NO_CONTENT
    );
    assert_error(
        &replace_at(etag, first).await?,
        StatusCode::PRECONDITION_FAILED,
        None,
    );
    assert_eq!(api.get("/jobs/once-only").await?.0, StatusCode::NOT_FOUND);

    // Listing: paged, filtered by prefix, sorted by name.
    for n in ["beta-1", "beta-2", "beta-3", "gamma"] {
        let body = json!({"command": "true", "cronExpr": "@yearly"}).to_string();
        assert_eq!(
            api.put(&format!("/jobs/{n}"), &body).await?.0,
            StatusCode::CREATED
        );
    }
    let r = api.get("/jobs?prefix=beta&page=2&pageSize=2").await?;
    assert_eq!(r.0, StatusCode::OK);
    assert_eq!(
        (
            r.1["total"].clone(),
            r.1["page"].clone(),
            r.1["pageSize"].clone()
        ),
        (json!(3), json!(2), json!(2))
    );
    let names: Vec<&str> = r.1["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, vec!["beta-3"]);
    let r = api.get("/jobs?page=9").await?;
    assert_eq!(
        (r.0, r.1["items"].clone(), r.1["total"].clone()),
        (StatusCode::OK, json!([]), json!(5))
    );
    assert_error(
        &api.get("/jobs?pageSize=0").await?,
        StatusCode::BAD_REQUEST,
        Some("pageSize"),
    );
    assert_error(
        &api.get("/jobs?pageSize=501").await?,
        StatusCode::BAD_REQUEST,
        Some("pageSize"),
    );
    assert_error(
        &api.get("/jobs?page=x").await?,
        StatusCode::BAD_REQUEST,
        Some("page"),
    );

    // Pause / resume / run / kill.
    let r = api.post("/jobs/gamma/pause").await?;
    assert_eq!(
        (r.0, r.1["paused"].clone(), r.1["nextFireTimes"].clone()),
        (StatusCode::OK, json!(true), json!([]))
    );
    let r = api.post("/jobs/gamma/resume").await?;
    assert_eq!((r.0, r.1.get("paused").cloned()), (StatusCode::OK, None));
    let r = api.post("/jobs/gamma/run").await?;
    assert_eq!(r.0, StatusCode::ACCEPTED);
    assert!(r.1["request"].is_string());
    assert_eq!(api.post("/jobs/gamma/kill").await?.0, StatusCode::ACCEPTED);
    for action in ["pause", "resume", "run", "kill"] {
        assert_error(
            &api.post(&format!("/jobs/nope/{action}")).await?,
            StatusCode::NOT_FOUND,
            None,
        );
    }

    // Runs of alpha: paged, newest first, and one with its output.
    wait_until("alpha to run", Duration::from_secs(20), || async {
        api.get("/jobs/alpha/runs")
            .await
            .map(|r| r.1["total"] == 1)
            .unwrap_or(false)
    })
    .await?;
    let r = api.get("/jobs/alpha/runs?page=1&pageSize=10").await?;
    let run = r.1["items"][0].clone();
    assert_eq!(run["status"], "succeeded");
    assert_eq!(run["output"], "", "lists leave the output out");
    let run_id = run["runId"].as_str().unwrap().to_string();
    let path = format!("/jobs/alpha/runs/{}", urlencode(&run_id));
    let r = api.get(&path).await?;
    assert_eq!(
        (r.0, r.1["output"].clone()),
        (StatusCode::OK, json!("v1\n"))
    );
    assert_error(
        &api.get("/jobs/alpha/runs/nope").await?,
        StatusCode::NOT_FOUND,
        None,
    );
    let r = api.get("/jobs/alpha/runs?page=2&pageSize=1").await?;
    assert_eq!(
        (r.1["items"].clone(), r.1["total"].clone()),
        (json!([]), json!(1))
    );
    // The job itself, and the list, carry that newest run, without output.
    let r = api.get("/jobs/alpha").await?;
    assert_eq!(
        (
            r.1["lastRun"]["runId"].clone(),
            r.1["lastRun"]["status"].clone()
        ),
        (json!(run_id), json!("succeeded"))
    );
    assert_eq!(r.1["lastRun"]["output"], "");
    let r = api.get("/jobs?prefix=alpha").await?;
    assert_eq!(r.1["items"][0]["lastRun"]["runId"], json!(run_id));
    let r = api.get("/jobs/beta-1").await?;
    assert!(r.1.get("lastRun").is_none(), "beta-1 never ran: {}", r.1);

    // Workers with their details.
    let r = api.get("/workers").await?;
    let w = &r.1.as_array().unwrap()[0];
    assert_eq!(w["id"], "w1");
    for field in ["hostname", "version", "startTime", "running", "lastSeen"] {
        assert!(w.get(field).is_some(), "worker lacks {field}: {w}");
    }
    assert!(w["lastSeen"].as_i64().unwrap() >= w["startTime"].as_i64().unwrap());

    // Preview of fire times while typing.
    let r = api
        .get("/cron/preview?expr=0%200%209%20*%20*%20MON-FRI&timezone=America/New_York&count=3")
        .await?;
    assert_eq!(r.0, StatusCode::OK, "{}", r.1);
    assert_eq!(r.1["fireTimes"].as_array().unwrap().len(), 3);
    assert_error(
        &api.get("/cron/preview?expr=nonsense").await?,
        StatusCode::UNPROCESSABLE_ENTITY,
        Some("cronExpr"),
    );
    assert_error(
        &api.get("/cron/preview?expr=@daily&timezone=Nowhere")
            .await?,
        StatusCode::UNPROCESSABLE_ENTITY,
        Some("timezone"),
    );
    assert_error(
        &api.get("/cron/preview?expr=@daily&count=0").await?,
        StatusCode::BAD_REQUEST,
        Some("count"),
    );
    assert_error(
        &api.get("/cron/preview").await?,
        StatusCode::BAD_REQUEST,
        Some("expr"),
    );

    // Delete: 204, then 404.
    assert_eq!(api.delete("/jobs/alpha").await?.0, StatusCode::NO_CONTENT);
    assert_error(
        &api.delete("/jobs/alpha").await?,
        StatusCode::NOT_FOUND,
        None,
    );
    Ok(())
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Running counts, cursors and workers from what workers write to etcd,
/// written here straight into etcd (no worker process).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn running_counts_cursors_and_workers_from_etcd() -> anyhow::Result<()> {
    use etcd_client::PutOptions;
    use gdts_tests::gdts_common::keys::{Keys, RunKey};
    use gdts_tests::gdts_common::JobName;

    let c = Cluster::start("api_v1_etcd").await?;
    let api = Api {
        base: c.manager_url.clone(),
        http: reqwest::Client::new(),
    };
    // In name order; `-` and `.` sort before `/`, so `running/a/` comes
    // after `running/a.b/` although `a` comes before `a.b`.
    let names = ["a", "a-c", "a.b", "b"];
    for n in names {
        let body = json!({"command": "true", "cronExpr": "@yearly"}).to_string();
        assert_eq!(
            api.put(&format!("/jobs/{n}"), &body).await?.0,
            StatusCode::CREATED
        );
    }

    let keys = Keys::new(&c.prefix);
    let mut etcd = c.etcd.client().await;
    let granted_at = gdts_tests::now_ms();
    let lease_a = etcd.lease_grant(10, None).await?.id();
    let lease_b = etcd.lease_grant(10, None).await?.id();
    let register = |id: &str, draining: bool| {
        json!({"id": id, "hostname": "h", "version": "0", "startTime": granted_at - 60_000,
               "running": 0, "draining": draining})
        .to_string()
    };
    etcd.put(
        keys.worker("w-a"),
        register("w-a", false),
        Some(PutOptions::new().with_lease(lease_a)),
    )
    .await?;
    etcd.put(
        keys.worker("w-b"),
        register("w-b", true),
        Some(PutOptions::new().with_lease(lease_b)),
    )
    .await?;
    // Marks: a ×2 and b on w-a; a.b and a job that is gone on w-b.
    for (job, tick, worker, lease) in [
        ("a", 1, "w-a", lease_a),
        ("a", 2, "w-a", lease_a),
        ("b", 1, "w-a", lease_a),
        ("a.b", 1, "w-b", lease_b),
        ("gone", 1, "w-b", lease_b),
    ] {
        let key = keys.running(&JobName::parse(job)?, &RunKey::scheduled(tick));
        let mark = json!({"worker": worker, "startedAt": granted_at}).to_string();
        etcd.put(key, mark, Some(PutOptions::new().with_lease(lease)))
            .await?;
    }

    let page = |path: &'static str| {
        let api = &api;
        async move {
            let r = api.get(path).await?;
            assert_eq!(r.0, StatusCode::OK, "{path}: {}", r.1);
            let items: Vec<(String, i64)> = r.1["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|j| {
                    (
                        j["name"].as_str().unwrap().to_string(),
                        j["running"].as_i64().unwrap(),
                    )
                })
                .collect();
            anyhow::Ok((items, r.1["total"].as_u64().unwrap()))
        }
    };
    let owned = |v: &[(&str, i64)]| -> Vec<(String, i64)> {
        v.iter().map(|(n, r)| (n.to_string(), *r)).collect()
    };
    assert_eq!(
        page("/jobs?pageSize=3").await?,
        (owned(&[("a", 2), ("a-c", 0), ("a.b", 1)]), 4)
    );
    assert_eq!(
        page("/jobs?pageSize=3&page=2").await?,
        (owned(&[("b", 1)]), 4)
    );
    // `after`: names after it; `page` counts from there; `total` is the prefix's.
    assert_eq!(
        page("/jobs?after=a-c&pageSize=1").await?,
        (owned(&[("a.b", 1)]), 4)
    );
    assert_eq!(
        page("/jobs?after=a&page=2&pageSize=1").await?,
        (owned(&[("a.b", 1)]), 4)
    );
    assert_eq!(page("/jobs?after=b").await?, (owned(&[]), 4));
    assert_eq!(page("/jobs?after=a.b&prefix=a").await?, (owned(&[]), 3));
    assert_eq!(
        page("/jobs?after=0&prefix=a.").await?,
        (owned(&[("a.b", 1)]), 1)
    );
    assert_eq!(page("/jobs?prefix=zz").await?, (owned(&[]), 0));
    assert_error(
        &api.get("/jobs?after=a%2Fb").await?,
        StatusCode::BAD_REQUEST,
        Some("after"),
    );
    for (name, running) in [("a", 2), ("a-c", 0), ("a.b", 1)] {
        let r = api.get(&format!("/jobs/{name}")).await?;
        assert_eq!(r.1["running"], running, "{name}: {}", r.1);
    }

    // The legacy list: every job, in the envelope exactly as serde writes it.
    let text = reqwest::get(format!("{}/job/list", c.manager_url))
        .await?
        .text()
        .await?;
    let parsed: gdts_tests::gdts_common::response::Envelope<Vec<gdts_tests::gdts_common::JobSpec>> =
        serde_json::from_str(&text)?;
    assert_eq!(parsed.data.len(), names.len());
    assert_eq!(text, serde_json::to_string(&parsed)?);

    // A job another manager saves or deletes (written straight into etcd
    // here) shows in the list, total and pages, once this manager's watch
    // of the jobs brings the change (the job index, `job_index.rs`).
    let elsewhere = JobName::parse("a-b")?;
    let spec = json!({"name": "a-b", "command": "true", "cronExpr": "@yearly"}).to_string();
    etcd.put(keys.job(&elsewhere), spec, None).await?;
    wait_until(
        "the list to show a job saved elsewhere",
        Duration::from_secs(10),
        || async {
            page("/jobs?pageSize=2&page=2").await.ok()
                == Some((owned(&[("a-c", 0), ("a.b", 1)]), 5))
        },
    )
    .await?;
    etcd.delete(keys.job(&elsewhere), None).await?;
    wait_until(
        "the list to drop a job deleted elsewhere",
        Duration::from_secs(10),
        || async {
            page("/jobs?pageSize=2&page=2").await.ok() == Some((owned(&[("a.b", 1), ("b", 1)]), 4))
        },
    )
    .await?;

    // Workers: `running` counts the marks naming each; `draining` shows.
    let r = api.get("/workers").await?;
    let workers = r.1.as_array().unwrap();
    let summary: Vec<(&Value, &Value, Option<&Value>)> = workers
        .iter()
        .map(|w| (&w["id"], &w["running"], w.get("draining")))
        .collect();
    assert_eq!(
        summary,
        vec![
            (&json!("w-a"), &json!(3), None),
            (&json!("w-b"), &json!(2), Some(&json!(true)))
        ],
        "{}",
        r.1
    );
    assert_eq!(
        c.get("/worker/list", &[]).await?.data,
        json!(["w-a", "w-b"])
    );

    // `lastSeen` is the lease's last renewal (to the second): it stays put
    // while the lease is not renewed, and moves when it is.
    let last_seen = |id: &'static str| {
        let api = &api;
        async move {
            let r = api.get("/workers").await?;
            let w =
                r.1.as_array()
                    .unwrap()
                    .iter()
                    .find(|w| w["id"] == id)
                    .cloned();
            anyhow::Ok(w.and_then(|w| w["lastSeen"].as_i64()).unwrap_or_default())
        }
    };
    let first = last_seen("w-a").await?;
    assert!(
        (granted_at - 1_000..=gdts_tests::now_ms()).contains(&first),
        "lastSeen {first}, lease granted at {granted_at}"
    );
    wait_until(
        "two seconds of the lease to go",
        Duration::from_secs(10),
        || async {
            last_seen("w-a")
                .await
                .is_ok_and(|s| s > 0 && s <= gdts_tests::now_ms() - 2_000)
        },
    )
    .await?;
    let renewed_at = gdts_tests::now_ms();
    let (mut keeper, mut answers) = etcd.lease_keep_alive(lease_a).await?;
    keeper.keep_alive().await?;
    answers.message().await?;
    let after_renewal = last_seen("w-a").await?;
    assert!(
        (renewed_at - 1_000..=gdts_tests::now_ms()).contains(&after_renewal),
        "lastSeen {after_renewal}, renewed at {renewed_at}"
    );
    Ok(())
}

/// A job's `lastRun` is its newest run (by tick, then start) however long
/// ago that was: the manager looks at a job's few newest ticks first, then
/// its last seconds, then at all of its runs, or reads a stretch of jobs
/// that did not fire lately in one go; each way must give the newest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn last_run_is_the_newest_however_old() -> anyhow::Result<()> {
    use gdts_tests::gdts_common::log_record::LogRecord;

    let c = Cluster::start("api_v1_last_run").await?;
    let api = Api {
        base: c.manager_url.clone(),
        http: reqwest::Client::new(),
    };
    // No worker runs these jobs: their runs are the records written here,
    // (tick in seconds from now, attempt).
    const EVERY_SECOND: &str = "* * * * * * *";
    const YEARLY: &str = "0 0 0 1 1 * *";
    let many: Vec<_> = (1..=10).map(|h| (-3600 * h, 1)).collect();
    type Run = (i64, u32);
    let cases: Vec<(&str, &str, Vec<Run>, Option<Run>)> = vec![
        (
            "ages-ago",
            EVERY_SECOND,
            vec![(-3_600, 1), (-60, 1)],
            Some((-60, 1)),
        ),
        (
            "in-the-last-seconds",
            EVERY_SECOND,
            vec![(-60, 1), (-10, 1)],
            Some((-10, 1)),
        ),
        (
            "in-the-last-ticks",
            EVERY_SECOND,
            vec![(-60, 1), (-10, 1), (-2, 1)],
            Some((-2, 1)),
        ),
        (
            "ahead-of-the-clock",
            EVERY_SECOND,
            vec![(-1, 1), (5, 1)],
            Some((5, 1)),
        ),
        ("never", EVERY_SECOND, vec![], None),
        // Jobs that did not fire lately, three in a row (read together)...
        ("quiet-a", YEARLY, vec![], None),
        (
            "quiet-b",
            YEARLY,
            vec![(-7_200, 1), (-3_600, 1)],
            Some((-3_600, 1)),
        ),
        (
            "quiet-c",
            YEARLY,
            vec![(-200, 2), (-100, 1), (-100, 2)],
            Some((-100, 2)),
        ),
        ("r-every-second", EVERY_SECOND, vec![(-1, 1)], Some((-1, 1))),
        // Jobs that fire every second are read together from the runs of the
        // last seconds (any job's): ticks ahead are always among those.
        (
            "soon-retried",
            EVERY_SECOND,
            vec![(2, 1), (3, 1), (3, 2)],
            Some((3, 2)),
        ),
        // ... and two with too many runs to read together.
        ("slow-a", YEARLY, many.clone(), Some((-3_600, 1))),
        ("slow-b", YEARLY, vec![(-5_000, 1)], Some((-5_000, 1))),
    ];
    let now = gdts_tests::now_ms() / 1000 * 1000;
    let run_id = |job: &str, (s, attempt): Run| format!("{job}@{}#{attempt}", now + s * 1000);
    let runs = c.runs::<LogRecord>().await;
    let record = |job: &str, (s, attempt): Run| {
        let tick = now + s * 1000;
        LogRecord {
            run_id: run_id(job, (s, attempt)),
            job_name: job.to_string(),
            command: "true".into(),
            err: String::new(),
            output: "out".into(),
            plan_time: tick,
            schedule_time: tick,
            start_time: tick + 100 * attempt as i64,
            end_time: tick + 100 * attempt as i64 + 5,
            exit_code: Some(0),
            signal: None,
            worker: "w1".into(),
            truncated: false,
            output_bytes: 3,
            output_uri: None,
            killed: false,
            status: "succeeded".into(),
            attempt,
            trigger: "schedule".into(),
        }
    };
    for (job, cron, ticks, _) in &cases {
        let body = json!({"command": "true", "cronExpr": cron}).to_string();
        assert_eq!(
            api.put(&format!("/jobs/{job}"), &body).await?.0,
            StatusCode::CREATED
        );
        for &run in ticks {
            runs.insert_one(record(job, run)).await?;
        }
    }
    let expected = |job: &str| {
        if job == "busy" {
            return Some(json!(run_id(job, (3_600, BUSY_ATTEMPTS))));
        }
        let (_, _, _, newest) = cases.iter().find(|c| c.0 == job).unwrap();
        newest.map(|n| json!(run_id(job, n)))
    };
    let last_run = |v: &Value| v.get("lastRun").map(|l| l["runId"].clone());
    for (job, _, _, _) in &cases {
        let r = api.get(&format!("/jobs/{job}")).await?;
        assert_eq!(last_run(&r.1), expected(job), "{job}: {}", r.1);
    }
    let list_matches = |jobs: usize| {
        let api = &api;
        async move {
            let r = api.get("/jobs").await?;
            let items = r.1["items"].as_array().cloned().unwrap_or_default();
            assert_eq!(items.len(), jobs, "{}", r.1);
            for item in items {
                let job = item["name"].as_str().unwrap_or_default();
                assert_eq!(last_run(&item), expected(job), "{job}: {item}");
                assert_eq!(
                    item["lastRun"].get("output").cloned().unwrap_or(json!("")),
                    ""
                );
            }
            anyhow::Ok(())
        }
    };
    // How many times the manager read the runs of the last seconds for a page.
    let page_reads = || async {
        let text = reqwest::get(format!("{}/metrics", c.manager_url))
            .await?
            .text()
            .await?;
        let count = text
            .lines()
            .find(|l| {
                l.starts_with("gdts_mongo_request_duration_seconds_count")
                    && l.contains("op=\"find_recent_runs\"")
            })
            .and_then(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .unwrap_or(0);
        anyhow::Ok(count)
    };
    list_matches(cases.len()).await?;
    assert_eq!(page_reads().await?, 1, "the page read its recent runs once");
    // More runs since the read's start than it takes (8 for each job fired
    // lately: 8 of them, so 64; 80 is under 8 for each job of the page, 13):
    // the jobs are looked up one by one, with the same answers, and the
    // next page does not try the read again for a while. An hour ahead, the
    // runs are in the read's span however slow this test is.
    const BUSY_ATTEMPTS: u32 = 80;
    let body = json!({"command": "true", "cronExpr": EVERY_SECOND}).to_string();
    assert_eq!(api.put("/jobs/busy", &body).await?.0, StatusCode::CREATED);
    let busy: Vec<_> = (1..=BUSY_ATTEMPTS)
        .map(|a| record("busy", (3_600, a)))
        .collect();
    runs.insert_many(busy).await?;
    list_matches(cases.len() + 1).await?;
    assert_eq!(page_reads().await?, 2);
    list_matches(cases.len() + 1).await?;
    assert_eq!(
        page_reads().await?,
        2,
        "a read over its limit is not tried again at once"
    );
    Ok(())
}

/// A job's runs are indexed in the order every read of them sorts in (job,
/// tick, start); the index an earlier version made without the start is
/// dropped when a manager starts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_are_indexed_in_the_order_they_are_read() -> anyhow::Result<()> {
    use gdts_tests::gdts_common::log_record::LOG_COLLECTION;
    use mongodb::bson::{doc, Document};
    use mongodb::options::IndexOptions;
    use mongodb::IndexModel;
    const INDEX: &str = "jobName_planTime_startTime";
    const OLD_INDEX: &str = "jobName_planTime";

    let mut c = Cluster::start("api_v1_run_index").await?;
    let db = c.mongo.client().await.database(&c.db);
    let runs = c.runs::<Document>().await;
    // The manager makes its indexes in the background as it starts.
    let only_the_new_index = || async {
        runs.list_index_names().await.is_ok_and(|indexes| {
            indexes.iter().any(|i| i == INDEX) && !indexes.iter().any(|i| i == OLD_INDEX)
        })
    };
    wait_until(
        "the runs-by-job index",
        Duration::from_secs(20),
        only_the_new_index,
    )
    .await?;
    // As an earlier version left it.
    runs.create_index(
        IndexModel::builder()
            .keys(doc! { "jobName": 1, "planTime": -1 })
            .options(IndexOptions::builder().name(OLD_INDEX.to_string()).build())
            .build(),
    )
    .await?;
    c.restart_manager().await?;
    wait_until(
        "the old index to go",
        Duration::from_secs(20),
        only_the_new_index,
    )
    .await?;
    // A job's newest run is found through it.
    let records: Vec<Document> = (0..20_i64)
        .map(|i| doc! { "jobName": format!("j{}", i % 4), "planTime": i * 1000, "startTime": i * 1000 + 5 })
        .collect();
    runs.insert_many(records).await?;
    let plan = db
        .run_command(doc! {
            "explain": {
                "find": LOG_COLLECTION,
                "filter": { "jobName": "j1" },
                "sort": { "planTime": -1, "startTime": -1 },
                "limit": 1,
            },
        })
        .await?;
    let winning = plan
        .get_document("queryPlanner")
        .and_then(|p| p.get_document("winningPlan"))
        .map(|p| p.to_string())
        .unwrap_or_default();
    assert!(winning.contains(&format!("\"{INDEX}\"")), "{plan}");
    Ok(())
}
