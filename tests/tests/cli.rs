//! `gdts`, the command line, against a real manager (authentication on),
//! worker, etcd and Mongo-protocol server: jobs as code from YAML and TOML
//! (a diff, --dry-run changing nothing, --detailed-exitcode, apply, --prune,
//! a typo refused), job actions, runs, logs (also --follow), workers and
//! tokens, with exit codes a CI job can rely on (also 4: a job changed on
//! the server between `apply`'s plan and its write). Also the API's
//! conditional delete that `--prune` uses.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use gdts_tests::{binary, wait_until, Cluster};
use serde_json::Value;

const ADMIN: &str = "cli-test-admin-token-0123456789abcdef0123";

struct Gdts {
    url: String,
    token: String,
}

impl Gdts {
    fn run(&self, args: &[&str]) -> Output {
        self.run_as(&self.token, args)
    }

    fn run_as(&self, token: &str, args: &[&str]) -> Output {
        Command::new(binary("gdts"))
            .args(args)
            .env("GDTS_URL", &self.url)
            .env("GDTS_TOKEN", token)
            .output()
            .expect("gdts runs")
    }

    /// Runs and expects `code`; stdout.
    fn expect(&self, code: i32, args: &[&str]) -> String {
        let out = self.run(args);
        let (stdout, stderr) = (
            String::from_utf8_lossy(&out.stdout).to_string(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        );
        assert_eq!(
            out.status.code(),
            Some(code),
            "gdts {args:?}\nstdout:\n{stdout}\nstderr:\n{stderr}"
        );
        stdout
    }

    fn json(&self, args: &[&str]) -> Value {
        let mut all = args.to_vec();
        all.push("--json");
        serde_json::from_str(&self.expect(0, &all)).expect("JSON output")
    }
}

fn names(list: &Value) -> Vec<String> {
    list.as_array()
        .into_iter()
        .flatten()
        .filter_map(|j| j["name"].as_str().map(str::to_string))
        .collect()
}

fn write(dir: &Path, file: &str, text: &str) -> String {
    let path = dir.join(file);
    std::fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_as_code_and_every_command() -> anyhow::Result<()> {
    let mut c = Cluster::start("cli").await?;
    c.start_worker(
        "w1",
        gdts_tests::WorkerOptions {
            env: vec![("GDTS_WORKER_LABELS".into(), "zone=any".into())],
            ..Default::default()
        },
    )?;
    c.wait_for_workers(&["w1"], Duration::from_secs(20)).await?;
    c.restart_manager_with(&[("GDTS_AUTH", "on"), ("GDTS_ADMIN_TOKEN", ADMIN)])
        .await?;
    let gdts = Gdts {
        url: c.manager_url.clone(),
        token: ADMIN.into(),
    };
    let dir = c.dir.path().to_path_buf();

    // No token: refused, exit 1, saying why.
    let out = gdts.run_as("", &["jobs", "list"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("401"));

    let yaml = write(
        &dir,
        "jobs.yaml",
        "jobs:\n  - name: alpha\n    command: echo alpha\n    cronExpr: \"0 0 * * * * *\"\n  \
         - name: beta\n    command: echo hi\n    cronExpr: \"* * * * * * *\"\n    selector: {zone: any}\n",
    );
    // A dry run shows the plan, changes nothing, and says so in its exit code.
    let plan = gdts.expect(
        3,
        &[
            "jobs",
            "apply",
            "-f",
            &yaml,
            "--dry-run",
            "--detailed-exitcode",
        ],
    );
    assert!(
        plan.contains("+ create alpha") && plan.contains("+ create beta"),
        "{plan}"
    );
    assert!(
        plan.contains("2 to create, 0 to update, 0 to delete"),
        "{plan}"
    );
    assert!(names(&gdts.json(&["jobs", "list"])).is_empty());

    let applied = gdts.expect(0, &["jobs", "apply", "-f", &yaml]);
    assert!(applied.contains("applied 2 changes"), "{applied}");
    assert_eq!(names(&gdts.json(&["jobs", "list"])), ["alpha", "beta"]);
    let beta = gdts.json(&["jobs", "get", "beta"]);
    assert_eq!(beta["command"], "echo hi");
    assert_eq!(beta["selector"]["zone"], "any");
    // Applying the same file again changes nothing.
    let again = gdts.expect(
        0,
        &[
            "jobs",
            "apply",
            "-f",
            &yaml,
            "--dry-run",
            "--detailed-exitcode",
        ],
    );
    assert!(
        again.contains("0 to create, 0 to update, 0 to delete, 2 unchanged"),
        "{again}"
    );

    // Edit one, drop the other: the diff names the field; --prune deletes.
    let yaml2 = write(
        &dir,
        "jobs2.yaml",
        "- name: beta\n  command: echo bye\n  cronExpr: \"* * * * * * *\"\n  selector: {zone: any}\n",
    );
    let plan = gdts.expect(0, &["jobs", "apply", "-f", &yaml2, "--prune", "--dry-run"]);
    assert!(plan.contains("~ update beta"), "{plan}");
    assert!(
        plan.contains(r#"command: "echo hi" -> "echo bye""#),
        "{plan}"
    );
    assert!(plan.contains("- delete alpha"), "{plan}");
    // Without --prune, alpha stays.
    let plan = gdts.expect(0, &["jobs", "apply", "-f", &yaml2, "--dry-run"]);
    assert!(!plan.contains("- delete"), "{plan}");
    gdts.expect(0, &["jobs", "apply", "-f", &yaml2, "--prune"]);
    assert_eq!(names(&gdts.json(&["jobs", "list"])), ["beta"]);
    assert_eq!(gdts.json(&["jobs", "get", "beta"])["command"], "echo bye");

    // TOML works too; a typo is refused before anything is sent.
    let toml = write(
        &dir,
        "jobs.toml",
        "[[jobs]]\nname = \"gamma\"\ncommand = \"echo gamma\"\ncronExpr = \"0 0 * * * * *\"\n",
    );
    gdts.expect(0, &["jobs", "apply", "-f", &toml]);
    assert_eq!(names(&gdts.json(&["jobs", "list"])), ["beta", "gamma"]);
    let typo = write(
        &dir,
        "typo.yaml",
        "jobs:\n  - name: delta\n    command: x\n    cronExpr: \"* * * * * * *\"\n    timeoutSecond: 5\n",
    );
    let out = gdts.run(&["jobs", "apply", "-f", &typo]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("timeoutSecond is not a job field"), "{err}");
    let bad = write(&dir, "bad.yaml", "jobs:\n  - name: delta\n    command: x\n");
    let out = gdts.run(&["jobs", "apply", "-f", &bad]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cronExpr: is missing"));
    assert_eq!(names(&gdts.json(&["jobs", "list"])), ["beta", "gamma"]);

    // Actions.
    for action in ["pause", "resume", "run"] {
        gdts.expect(0, &["jobs", action, "gamma"]);
    }
    let out = gdts.run(&["jobs", "pause", "nope"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("404"));

    // Runs and logs.
    wait_until("runs of beta", Duration::from_secs(20), || async {
        gdts.json(&["runs", "list", "beta"])
            .as_array()
            .is_some_and(|r| r.len() >= 2)
    })
    .await?;
    let runs = gdts.expect(0, &["runs", "list", "beta", "--limit", "3"]);
    assert!(
        runs.starts_with("TICK") && runs.contains("succeeded") && runs.contains("w1"),
        "{runs}"
    );
    let logs = gdts.expect(0, &["logs", "beta", "--last", "2"]);
    assert!(logs.contains("== beta") && logs.contains("bye"), "{logs}");

    // --follow prints runs as they finish, and keeps doing so when the
    // manager is replaced under it (the stream reopened with Last-Event-ID).
    let mut follow = Command::new(binary("gdts"))
        .args(["logs", "beta", "--last", "0", "--follow"])
        .env("GDTS_URL", &gdts.url)
        .env("GDTS_TOKEN", ADMIN)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let stdout = follow.stdout.take().expect("piped");
    let (lines_tx, lines) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut seen = Vec::new();
    let runs_printed = |seen: &mut Vec<String>| {
        seen.extend(lines.try_iter());
        seen.iter().filter(|l| l.starts_with("== beta")).count()
    };
    wait_until("--follow to print a run", Duration::from_secs(30), || {
        let n = runs_printed(&mut seen);
        async move { n >= 1 }
    })
    .await?;
    c.restart_manager().await?;
    let before = runs_printed(&mut seen);
    let outcome = wait_until(
        "--follow to print runs after the manager restarted",
        Duration::from_secs(30),
        || {
            let n = runs_printed(&mut seen);
            async move { n >= before + 2 }
        },
    )
    .await;
    let exited = follow.try_wait()?;
    let _ = follow.kill();
    let _ = follow.wait();
    assert!(exited.is_none(), "--follow exited: {exited:?}");
    outcome.map_err(|e| e.context(format!("--follow printed: {seen:?}")))?;
    let ids: Vec<&String> = seen.iter().filter(|l| l.starts_with("== beta")).collect();
    let distinct: std::collections::BTreeSet<&&String> = ids.iter().collect();
    assert_eq!(ids.len(), distinct.len(), "a run printed twice: {seen:?}");

    // Workers and tokens; a viewer's token may read, not delete.
    let workers = gdts.expect(0, &["workers"]);
    assert!(
        workers.starts_with("WORKER") && workers.contains("w1"),
        "{workers}"
    );
    let made = gdts.json(&["tokens", "create", "ci-viewer", "--role", "viewer"]);
    let viewer = made["token"].as_str().expect("a token value").to_string();
    let id = made["id"].as_str().expect("an id").to_string();
    assert!(gdts.expect(0, &["tokens", "list"]).contains("ci-viewer"));
    let out = gdts.run_as(&viewer, &["jobs", "list"]);
    assert_eq!(out.status.code(), Some(0));
    let out = gdts.run_as(&viewer, &["jobs", "delete", "beta"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("403"));
    gdts.expect(0, &["tokens", "revoke", &id]);
    assert_eq!(
        gdts.run_as(&viewer, &["jobs", "list"]).status.code(),
        Some(1)
    );

    // The API's conditional delete: a stale ETag is refused (412), the
    // current one deletes.
    let http = reqwest::Client::new();
    let url = |p: &str| format!("{}/api/v1{p}", c.manager_url);
    let stale = http
        .get(url("/jobs/gamma"))
        .bearer_auth(ADMIN)
        .send()
        .await?
        .headers()["etag"]
        .to_str()?
        .to_string();
    gdts.expect(0, &["jobs", "pause", "gamma"]);
    let r = http
        .delete(url("/jobs/gamma"))
        .bearer_auth(ADMIN)
        .header("If-Match", &stale)
        .send()
        .await?;
    assert_eq!(r.status(), 412);
    let current = http
        .get(url("/jobs/gamma"))
        .bearer_auth(ADMIN)
        .send()
        .await?
        .headers()["etag"]
        .to_str()?
        .to_string();
    let r = http
        .delete(url("/jobs/gamma"))
        .bearer_auth(ADMIN)
        .header("If-Match", &current)
        .send()
        .await?;
    assert_eq!(r.status(), 204);
    gdts.expect(0, &["jobs", "delete", "beta"]);
    assert!(names(&gdts.json(&["jobs", "list"])).is_empty());
    Ok(())
}

/// Between `gdts` and the manager: forwards every request, but before the
/// first conditional write (`If-Match`) of `job` it changes that job itself,
/// as another client would between `apply`'s plan and its write.
struct ChangeFirst {
    upstream: String,
    job: String,
    http: reqwest::Client,
    changed: std::sync::atomic::AtomicBool,
}

impl ChangeFirst {
    /// Serves on a loopback port; its URL.
    async fn start(upstream: &str, job: &str) -> anyhow::Result<String> {
        let state = std::sync::Arc::new(ChangeFirst {
            upstream: upstream.to_string(),
            job: job.to_string(),
            http: reqwest::Client::new(),
            changed: false.into(),
        });
        let app = axum::Router::new()
            .fallback(Self::forward)
            .with_state(state);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}", listener.local_addr()?);
        tokio::spawn(async move { axum::serve(listener, app).await });
        Ok(url)
    }

    async fn forward(
        axum::extract::State(s): axum::extract::State<std::sync::Arc<ChangeFirst>>,
        req: axum::extract::Request,
    ) -> axum::response::Response {
        use axum::response::IntoResponse;
        let (parts, body) = req.into_parts();
        let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
        let body = axum::body::to_bytes(body, 1 << 20)
            .await
            .unwrap_or_default();
        let job_path = format!("/api/v1/jobs/{}", s.job);
        if parts.headers.contains_key("if-match")
            && path == job_path
            && !s.changed.swap(true, std::sync::atomic::Ordering::SeqCst)
        {
            let other = serde_json::json!({"command": "echo other", "cronExpr": "0 0 * * * * *"});
            let r = s
                .http
                .put(format!("{}{job_path}", s.upstream))
                .json(&other)
                .send()
                .await;
            assert!(
                r.is_ok_and(|r| r.status().is_success()),
                "the other client's change"
            );
        }
        let mut forwarded = s
            .http
            .request(parts.method, format!("{}{path}", s.upstream))
            .body(body);
        for (name, value) in &parts.headers {
            if !matches!(name.as_str(), "host" | "content-length" | "connection") {
                forwarded = forwarded.header(name, value);
            }
        }
        match forwarded.send().await {
            Ok(r) => {
                let (status, headers) = (r.status(), r.headers().clone());
                let bytes = r.bytes().await.unwrap_or_default();
                let mut answer = (status, bytes).into_response();
                for (name, value) in &headers {
                    if !matches!(
                        name.as_str(),
                        "content-length" | "connection" | "transfer-encoding"
                    ) {
                        answer.headers_mut().insert(name, value.clone());
                    }
                }
                answer
            }
            Err(e) => (reqwest::StatusCode::BAD_GATEWAY, e.to_string()).into_response(),
        }
    }
}

/// A job changed on the server between `apply`'s plan and its write: the
/// write is refused (412), `apply` exits 4 (plan again), and the other
/// client's change stands. Applying again then goes through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_exits_4_when_a_job_changed_since_its_plan() -> anyhow::Result<()> {
    let c = Cluster::start("cli_changed_since").await?;
    let direct = Gdts {
        url: c.manager_url.clone(),
        token: String::new(),
    };
    let dir = c.dir.path().to_path_buf();
    let job = |command: &str| {
        format!("jobs:\n  - name: gamma\n    command: {command}\n    cronExpr: \"0 0 * * * * *\"\n")
    };
    let first = write(&dir, "first.yaml", &job("echo one"));
    direct.expect(0, &["jobs", "apply", "-f", &first]);
    let through = Gdts {
        url: ChangeFirst::start(&c.manager_url, "gamma").await?,
        token: String::new(),
    };
    let second = write(&dir, "second.yaml", &job("echo two"));
    let out = through.run(&["jobs", "apply", "-f", &second]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(4), "stderr: {stderr}");
    assert!(
        stderr.contains("gamma") && stderr.contains("412"),
        "{stderr}"
    );
    assert_eq!(
        direct.json(&["jobs", "get", "gamma"])["command"],
        "echo other"
    );
    // Planned again against what is there now: applied.
    through.expect(0, &["jobs", "apply", "-f", &second]);
    assert_eq!(
        direct.json(&["jobs", "get", "gamma"])["command"],
        "echo two"
    );
    Ok(())
}
