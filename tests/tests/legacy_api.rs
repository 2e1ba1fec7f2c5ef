//! Every legacy endpoint, form-encoded, against a real manager, etcd, Mongo
//! server and worker; and the bad-input table.

use std::time::Duration;

use gdts_tests::{wait_until, Cluster, WorkerOptions};
use serde_json::{json, Value};

#[tokio::test]
async fn legacy_endpoints_round_trip() -> anyhow::Result<()> {
    let mut c = Cluster::start("legacy_api").await?;
    let health_port = gdts_tests::free_port();
    c.start_worker(
        "w1",
        WorkerOptions {
            env: vec![("GDTS_HEALTH_PORT".into(), health_port.to_string())],
            ..Default::default()
        },
    )?;
    c.wait_for_workers(&["w1"], Duration::from_secs(20)).await?;
    // The worker's health endpoint (for autohealing) answers once registered.
    for path in ["healthz", "readyz"] {
        let url = format!("http://127.0.0.1:{health_port}/{path}");
        wait_until(
            &format!("worker /{path}"),
            Duration::from_secs(10),
            || async { reqwest::get(&url).await.is_ok_and(|r| r.status() == 200) },
        )
        .await?;
    }

    // save: new job returns null, a replacement returns the previous version.
    let job = json!({"name": "echo-job", "command": "echo hello", "cronExpr": "* * * * * * *"});
    let r = c
        .post_form("/job/save", &[("job", &job.to_string())])
        .await?;
    assert_eq!(
        (r.errno, r.msg.as_str(), &r.data),
        (0, "success", &Value::Null)
    );
    let job2 = json!({"name": "echo-job", "command": "echo hello again", "cronExpr": "*/1 * * * * *", "extra": 1});
    let r = c
        .post_form("/job/save", &[("job", &job2.to_string())])
        .await?;
    assert_eq!(r.errno, 0);
    assert_eq!(r.data["command"], "echo hello");

    // list
    let r = c.get("/job/list", &[]).await?;
    assert_eq!(r.errno, 0);
    let jobs = r.data.as_array().unwrap();
    assert_eq!(jobs.len(), 1);
    assert_eq!(jobs[0]["name"], "echo-job");
    assert_eq!(jobs[0]["command"], "echo hello again");
    assert_eq!(jobs[0]["cronExpr"], "*/1 * * * * *");

    // log: the worker runs it; records use the original field names.
    wait_until("three runs logged", Duration::from_secs(20), || async {
        c.get("/job/log", &[("name", "echo-job")])
            .await
            .map(|r| r.data.as_array().map_or(0, |a| a.len()) >= 3)
            .unwrap_or(false)
    })
    .await?;
    let r = c
        .get(
            "/job/log",
            &[("name", "echo-job"), ("skip", "0"), ("limit", "2")],
        )
        .await?;
    let logs = r.data.as_array().unwrap();
    assert_eq!(logs.len(), 2, "limit applies");
    let first = &logs[0];
    for field in [
        "jobName",
        "command",
        "err",
        "output",
        "planTime",
        "scheduleTime",
        "startTime",
        "endTime",
        "exitCode",
        "worker",
        "truncated",
    ] {
        assert!(
            first.get(field).is_some(),
            "log record lacks {field}: {first}"
        );
    }
    assert_eq!(first["output"], "hello again\n");
    assert_eq!(first["exitCode"], 0);
    assert_eq!(first["worker"], "w1");
    assert!(
        first["planTime"].as_i64() > logs[1]["planTime"].as_i64(),
        "newest first"
    );
    assert!(first["startTime"].as_i64() <= first["endTime"].as_i64());
    let r = c
        .get(
            "/job/log",
            &[("name", "echo-job"), ("skip", "1"), ("limit", "1")],
        )
        .await?;
    assert_eq!(r.data[0]["planTime"], logs[1]["planTime"], "skip applies");
    let r = c
        .get("/job/log", &[("name", "echo-job"), ("limit", "100000")])
        .await?;
    assert_eq!(r.errno, 0, "an over-large limit is capped, not refused");
    let r = c.get("/job/log", &[("name", "no-such-job")]).await?;
    assert_eq!((r.errno, r.data.clone()), (0, json!([])));

    // worker list
    let r = c.get("/worker/list", &[]).await?;
    assert_eq!(r.data, json!(["w1"]));

    // kill of a job that is not running is accepted (nothing to kill).
    let r = c.post_form("/job/kill", &[("name", "echo-job")]).await?;
    assert_eq!(r.errno, 0, "{}", r.msg);

    // delete returns the deleted job; deleting again returns null.
    let r = c.post_form("/job/delete", &[("name", "echo-job")]).await?;
    assert_eq!((r.errno, r.data["name"].clone()), (0, json!("echo-job")));
    let r = c.post_form("/job/delete", &[("name", "echo-job")]).await?;
    assert_eq!((r.errno, r.data), (0, Value::Null));
    let r = c.get("/job/list", &[]).await?;
    assert_eq!(r.data, json!([]));

    // Other cron forms are accepted.
    for cron in [
        "*/5 * * * *",
        "0 */5 * * * *",
        "@hourly",
        "0 0 12 * * 1-5 *",
    ] {
        let job = json!({"name": "forms", "command": "true", "cronExpr": cron});
        let r = c
            .post_form("/job/save", &[("job", &job.to_string())])
            .await?;
        assert_eq!(r.errno, 0, "{cron}: {}", r.msg);
    }
    Ok(())
}

#[tokio::test]
async fn bad_inputs_get_errno_minus_one_and_say_why() -> anyhow::Result<()> {
    let c = Cluster::start("legacy_bad").await?;
    let save = |job: &str| vec![("job".to_string(), job.to_string())];
    type Form = Vec<(String, String)>;
    let cases: Vec<(&str, Form, &str)> = vec![
        (
            "/job/save",
            save(r#"{"name":"a","command":"x","cronExpr":"61 * * * * *"}"#),
            "cronExpr",
        ),
        (
            "/job/save",
            save(r#"{"name":"a","command":"x","cronExpr":"* * *"}"#),
            "cronExpr: has 3 fields",
        ),
        (
            "/job/save",
            save(r#"{"name":"a b","command":"x","cronExpr":"* * * * *"}"#),
            "name: contains ' '",
        ),
        (
            "/job/save",
            save(r#"{"name":"a/b","command":"x","cronExpr":"* * * * *"}"#),
            "name: contains '/'",
        ),
        (
            "/job/save",
            save(r#"{"name":"","command":"x","cronExpr":"* * * * *"}"#),
            "name: is empty",
        ),
        (
            "/job/save",
            save(r#"{"name":"a","command":"","cronExpr":"* * * * *"}"#),
            "command: is empty",
        ),
        (
            "/job/save",
            save(r#"{"name":"a","command":"x","cronExpr":"* * * * *""#),
            "job: is not a valid job JSON",
        ),
        (
            "/job/save",
            save("not json"),
            "job: is not a valid job JSON",
        ),
        (
            "/job/save",
            save(r#"{"name":"a","cronExpr":"* * * * *"}"#),
            "command: is missing",
        ),
        (
            "/job/save",
            save(r#"{"command":"x","cronExpr":"* * * * *"}"#),
            "name: is missing",
        ),
        (
            "/job/save",
            save(r#"{"name":"a","command":"x"}"#),
            "cronExpr: is missing",
        ),
        ("/job/save", vec![], "job: form field is missing"),
        ("/job/delete", vec![], "name: form field is missing"),
        (
            "/job/delete",
            vec![("name".into(), "../x".into())],
            "name: contains '/'",
        ),
        (
            "/job/kill",
            vec![("name".into(), "".into())],
            "name: is empty",
        ),
    ];
    let http = reqwest::Client::new();
    for (path, form, want) in cases {
        let resp = http
            .post(format!("{}{path}", c.manager_url))
            .form(&form)
            .send()
            .await?;
        assert_eq!(resp.status(), 200, "{path} {form:?}");
        let body: Value = resp.json().await?;
        assert_eq!(body["errno"], -1, "{path} {form:?}: {body}");
        let msg = body["msg"].as_str().unwrap_or_default();
        assert!(
            msg.starts_with(want),
            "{path} {form:?}: {msg:?} should start with {want:?}"
        );
    }
    for (query, want) in [
        (vec![], "name: form field is missing"),
        (vec![("name", "j"), ("skip", "-1")], "skip:"),
        (vec![("name", "j"), ("limit", "0")], "limit:"),
        (vec![("name", "j"), ("limit", "ten")], "limit:"),
    ] {
        let r = c.get("/job/log", &query).await?;
        assert_eq!(r.errno, -1, "{query:?}");
        assert!(r.msg.starts_with(want), "{query:?}: {}", r.msg);
    }
    // A JSON body instead of a form is refused with a message, not a 4xx/5xx page.
    let resp = http
        .post(format!("{}/job/save", c.manager_url))
        .header("content-type", "application/json")
        .body("{}")
        .send()
        .await?;
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await?;
    assert_eq!(body["errno"], -1);
    assert!(body["msg"].as_str().unwrap().contains("form-encoded"));
    // Nothing bad was stored.
    assert_eq!(c.get("/job/list", &[]).await?.data, json!([]));
    Ok(())
}

/// The original ran every command with `/bin/bash -c`: bash syntax in a job
/// saved through the legacy API (`[[ ]]`, arrays, `$EPOCHREALTIME`) works.
#[tokio::test]
async fn commands_run_in_bash_as_in_the_original() -> anyhow::Result<()> {
    let mut c = Cluster::start("legacy_bash").await?;
    c.start_worker("w1", WorkerOptions::default())?;
    c.wait_for_workers(&["w1"], Duration::from_secs(20)).await?;
    let command = r#"[[ -n "$EPOCHREALTIME" ]] && words=(bash arrays) && echo "${words[1]}""#;
    let job = json!({"name": "bashisms", "command": command, "cronExpr": gdts_tests::once_soon(2)});
    let r = c
        .post_form("/job/save", &[("job", &job.to_string())])
        .await?;
    assert_eq!(r.errno, 0, "{}", r.msg);
    wait_until("a run of bashisms", Duration::from_secs(20), || async {
        c.get("/job/log", &[("name", "bashisms")])
            .await
            .is_ok_and(|r| r.data.as_array().is_some_and(|a| !a.is_empty()))
    })
    .await?;
    let r = c.get("/job/log", &[("name", "bashisms")]).await?;
    let run = &r.data[0];
    assert_eq!(run["output"], "arrays\n", "{run}");
    assert_eq!(run["err"], "", "{run}");
    Ok(())
}
