//! Authentication, roles, tokens, web UI sessions, cross-site defence, the
//! audit trail and request limits, against a real manager over a real etcd
//! and Mongo-protocol server.

use std::time::Duration;

use gdts_tests::Cluster;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

const ADMIN: &str = "bootstrap-0123456789abcdef0123456789abcdef";

struct Http {
    base: String,
    http: reqwest::Client,
}

/// One request: method, path, optional bearer token, extra headers, body
/// (JSON when it parses as JSON, a form otherwise).
struct Req<'a> {
    method: Method,
    path: &'a str,
    token: Option<&'a str>,
    headers: Vec<(&'a str, String)>,
    body: Option<String>,
}

fn req(method: Method, path: &str) -> Req<'_> {
    Req {
        method,
        path,
        token: None,
        headers: Vec::new(),
        body: None,
    }
}

impl<'a> Req<'a> {
    fn token(mut self, t: &'a str) -> Self {
        self.token = Some(t);
        self
    }
    fn header(mut self, k: &'a str, v: impl Into<String>) -> Self {
        self.headers.push((k, v.into()));
        self
    }
    fn json(mut self, v: Value) -> Self {
        self.body = Some(v.to_string());
        self.headers
            .push(("content-type", "application/json".into()));
        self
    }
    fn form(mut self, pairs: &[(&str, &str)]) -> Self {
        let body = pairs
            .iter()
            .map(|(k, v)| format!("{k}={}", urlencode(v)))
            .collect::<Vec<_>>()
            .join("&");
        self.body = Some(body);
        self.headers
            .push(("content-type", "application/x-www-form-urlencoded".into()));
        self
    }
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

struct Answer {
    status: StatusCode,
    headers: reqwest::header::HeaderMap,
    body: Value,
}

impl Http {
    async fn send(&self, r: Req<'_>) -> anyhow::Result<Answer> {
        let mut b = self
            .http
            .request(r.method.clone(), format!("{}{}", self.base, r.path));
        if let Some(t) = r.token {
            b = b.bearer_auth(t);
        }
        for (k, v) in &r.headers {
            b = b.header(*k, v);
        }
        if let Some(body) = r.body {
            b = b.body(body);
        }
        let resp = b.send().await?;
        let status = resp.status();
        let headers = resp.headers().clone();
        let text = resp.text().await?;
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        Ok(Answer {
            status,
            headers,
            body,
        })
    }
}

fn job(name: &str) -> Value {
    json!({ "name": name, "command": "true", "cronExpr": "0 0 0 1 1 * 2099" })
}

async fn cluster(test: &str, env: &[(&str, &str)]) -> anyhow::Result<(Cluster, Http)> {
    let mut c = Cluster::start(test).await?;
    let mut all = vec![("GDTS_AUTH", "on"), ("GDTS_ADMIN_TOKEN", ADMIN)];
    all.extend_from_slice(env);
    c.restart_manager_with(&all).await?;
    let http = Http {
        base: c.manager_url.clone(),
        http: reqwest::Client::builder()
            .timeout(Duration::from_secs(20))
            .build()?,
    };
    Ok((c, http))
}

async fn new_token(http: &Http, name: &str, role: &str) -> anyhow::Result<(String, String)> {
    let a = http
        .send(
            req(Method::POST, "/api/v1/tokens")
                .token(ADMIN)
                .json(json!({ "name": name, "role": role })),
        )
        .await?;
    assert_eq!(a.status, 201, "{}", a.body);
    Ok((
        a.body["id"].as_str().unwrap().to_string(),
        a.body["token"].as_str().unwrap().to_string(),
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_endpoint_needs_a_token_and_the_role_for_what_it_does() -> anyhow::Result<()> {
    let (c, http) = cluster("auth-roles", &[]).await?;

    // Public: probes, the UI's files, the API document, the session endpoint.
    for path in [
        "/healthz",
        "/livez",
        "/api/v1/openapi.json",
        "/api/v1/session",
    ] {
        let a = http.send(req(Method::GET, path)).await?;
        assert_eq!(a.status, 200, "GET {path} is public");
    }

    // Without a token: 401 everywhere else, in each API's own shape.
    let legacy = http.send(req(Method::GET, "/job/list")).await?;
    assert_eq!(legacy.status, 401);
    assert_eq!(legacy.body["errno"], -1, "{}", legacy.body);
    assert!(legacy.headers.contains_key("www-authenticate"));
    let save = http
        .send(req(Method::POST, "/job/save").form(&[("job", &job("sneaky").to_string())]))
        .await?;
    assert_eq!(save.status, 401);
    assert_eq!(save.body["errno"], -1);
    let v1 = http.send(req(Method::GET, "/api/v1/jobs")).await?;
    assert_eq!(v1.status, 401);
    assert_eq!(v1.body["error"]["status"], 401, "{}", v1.body);
    // The metrics name jobs and workers: a scraper needs a viewer token.
    let metrics = http.send(req(Method::GET, "/metrics")).await?;
    assert_eq!(metrics.status, 401);
    // Without IAP configured, its header is anyone's to send: ignored.
    let forged = http
        .send(req(Method::GET, "/api/v1/jobs").header("x-goog-iap-jwt-assertion", "e30.e30.e30"))
        .await?;
    assert_eq!(forged.status, 401, "{}", forged.body);

    // Every operation of the OpenAPI document, without a token: 401 unless
    // it is one of the public ones.
    let doc = http
        .send(req(Method::GET, "/api/v1/openapi.json"))
        .await?
        .body;
    let mut operations = 0;
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in ["get", "put", "post", "delete"] {
            if item.get(method).is_none() {
                continue;
            }
            operations += 1;
            let concrete = format!(
                "/api/v1{}",
                path.replace("{name}", "x")
                    .replace("{run_id}", "1")
                    .replace("{id}", "0123456789abcdef")
            );
            let m = Method::from_bytes(method.to_uppercase().as_bytes())?;
            let a = http
                .send(req(m, &concrete).json(json!({ "token": "nope" })))
                .await?;
            let public = path == "/session";
            if public {
                assert_ne!(a.status, 403, "{method} {concrete}");
            } else {
                assert_eq!(a.status, 401, "{method} {concrete} without a token");
            }
        }
    }
    assert!(
        operations >= 18,
        "only {operations} operations in the document"
    );

    // A wrong token is refused, not taken for no token.
    let wrong = http
        .send(req(Method::GET, "/api/v1/jobs").token("gdts_0123456789abcdef_00"))
        .await?;
    assert_eq!(wrong.status, 401);
    assert!(wrong.body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("not valid"));

    // Tokens: created by the bootstrap admin, shown once, stored hashed.
    let (_, viewer) = new_token(&http, "dashboards", "viewer").await?;
    let (operator_id, operator) = new_token(&http, "on-call", "operator").await?;
    let (_, admin) = new_token(&http, "deployer", "admin").await?;
    assert!(viewer.starts_with("gdts_") && viewer.len() > 60, "{viewer}");
    let listed = http
        .send(req(Method::GET, "/api/v1/tokens").token(&admin))
        .await?;
    assert_eq!(listed.status, 200);
    let listed_text = listed.body.to_string();
    assert!(listed_text.contains("on-call") && listed_text.contains(&operator_id));
    assert!(
        !listed_text.contains(&operator) && !listed_text.contains("sha256"),
        "the list shows no token value nor hash: {listed_text}"
    );
    let mut etcd = c.etcd_client().await?;
    let everything = etcd
        .get(
            c.prefix.as_bytes(),
            Some(etcd_client::GetOptions::new().with_prefix()),
        )
        .await?;
    for kv in everything.kvs() {
        let value = String::from_utf8_lossy(kv.value());
        for secret in [&viewer, &operator, &admin] {
            let secret_part = secret.rsplit('_').next().unwrap();
            assert!(
                !value.contains(secret_part),
                "{} holds a token in plaintext",
                kv.key_str()?
            );
        }
        assert!(!value.contains(ADMIN), "the bootstrap token is in etcd");
    }

    // Viewer reads, and nothing more.
    let ok = |a: &Answer| a.status.is_success();
    assert!(ok(&http
        .send(req(Method::GET, "/api/v1/jobs").token(&viewer))
        .await?));
    assert!(ok(&http
        .send(req(Method::GET, "/job/list").token(&viewer))
        .await?));
    assert!(ok(&http
        .send(req(Method::GET, "/metrics").token(&viewer))
        .await?));
    let viewer_put = http
        .send(
            req(Method::PUT, "/api/v1/jobs/j1")
                .token(&viewer)
                .json(job("j1")),
        )
        .await?;
    assert_eq!(viewer_put.status, 403, "{}", viewer_put.body);
    assert!(viewer_put.body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("viewer"));
    let viewer_save = http
        .send(
            req(Method::POST, "/job/save")
                .token(&viewer)
                .form(&[("job", &job("j1").to_string())]),
        )
        .await?;
    assert_eq!(viewer_save.status, 403);
    assert_eq!(viewer_save.body["errno"], -1);

    // Admin saves; operator runs, kills, pauses and resumes, but cannot save
    // or delete.
    let admin_put = http
        .send(
            req(Method::PUT, "/api/v1/jobs/j1")
                .token(&admin)
                .json(job("j1")),
        )
        .await?;
    assert_eq!(admin_put.status, 201, "{}", admin_put.body);
    for action in ["run", "kill", "pause", "resume"] {
        let a = http
            .send(req(Method::POST, &format!("/api/v1/jobs/j1/{action}")).token(&operator))
            .await?;
        assert!(a.status.is_success(), "operator {action}: {}", a.status);
        let a = http
            .send(req(Method::POST, &format!("/api/v1/jobs/j1/{action}")).token(&viewer))
            .await?;
        assert_eq!(a.status, 403, "viewer {action}");
    }
    let legacy_kill = http
        .send(
            req(Method::POST, "/job/kill")
                .token(&operator)
                .form(&[("name", "j1")]),
        )
        .await?;
    assert_eq!(legacy_kill.body["errno"], 0, "{}", legacy_kill.body);
    for (m, path) in [
        (Method::DELETE, "/api/v1/jobs/j1"),
        (Method::GET, "/api/v1/tokens"),
        (Method::GET, "/api/v1/audit"),
    ] {
        let a = http.send(req(m.clone(), path).token(&operator)).await?;
        assert_eq!(a.status, 403, "operator {m} {path}");
    }

    // Revoking a token takes effect at once.
    let revoke = http
        .send(req(Method::DELETE, &format!("/api/v1/tokens/{operator_id}")).token(&admin))
        .await?;
    assert_eq!(revoke.status, 204);
    let after = http
        .send(req(Method::POST, "/api/v1/jobs/j1/run").token(&operator))
        .await?;
    assert_eq!(after.status, 401, "a revoked token still works");

    // The audit trail has who did what, before and after, from where.
    let audit = http
        .send(req(Method::GET, "/api/v1/audit?pageSize=100").token(&admin))
        .await?;
    assert_eq!(audit.status, 200, "{}", audit.body);
    let entries = audit.body["items"].as_array().unwrap().clone();
    let find = |action: &str, actor: &str| {
        entries
            .iter()
            .find(|e| e["action"] == action && e["actor"] == actor)
            .cloned()
    };
    let saved = find("job.save", "deployer").expect("the save is audited");
    assert_eq!(saved["target"], "j1");
    assert_eq!(saved["role"], "admin");
    assert_eq!(saved["via"], "token");
    assert!(saved["before"].is_null());
    assert_eq!(saved["after"]["command"], "true");
    assert!(
        saved["from"].as_str().unwrap().contains("127.0.0.1"),
        "{saved}"
    );
    let paused = find("job.pause", "on-call").expect("the pause is audited");
    assert_eq!(paused["before"]["paused"], false);
    assert_eq!(paused["after"]["paused"], true);
    for (action, actor) in [
        ("job.run", "on-call"),
        ("job.kill", "on-call"),
        ("job.resume", "on-call"),
        ("token.create", "bootstrap admin"),
        ("token.revoke", "deployer"),
    ] {
        assert!(
            find(action, actor).is_some(),
            "{action} by {actor} not audited"
        );
    }
    let created = find("token.create", "bootstrap admin").unwrap();
    assert!(
        !created.to_string().contains(&viewer),
        "the audit trail holds a token"
    );
    Ok(())
}

/// Reads the event stream as `token`, from the revision after `after`,
/// until a `job.saved` of `job` has come (or 20 s), and returns all it read.
async fn events_until_saved(
    http: &Http,
    token: &str,
    after: i64,
    job: &str,
) -> anyhow::Result<String> {
    use futures::StreamExt;
    let resp = http
        .http
        .get(format!("{}/api/v1/events", http.base))
        .bearer_auth(token)
        .header("accept", "text/event-stream")
        .header("last-event-id", after.to_string())
        .send()
        .await?;
    anyhow::ensure!(resp.status() == 200, "events: HTTP {}", resp.status());
    let mut body = resp.bytes_stream();
    let mut text = String::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let wanted = format!("\"name\":\"{job}\"");
    // Only whole events (each ends with a blank line) count.
    let saved = |text: &str| {
        text.rsplit_once("\n\n").is_some_and(|(whole, _)| {
            whole
                .split("\n\n")
                .any(|block| block.contains("event: job.saved") && block.contains(&wanted))
        })
    };
    while !saved(&text) {
        let chunk = tokio::time::timeout_at(deadline, body.next())
            .await
            .map_err(|_| anyhow::anyhow!("no job.saved of {job} within 20 s: {text}"))?
            .ok_or_else(|| anyhow::anyhow!("event stream ended: {text}"))??;
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
    Ok(text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_jobs_env_values_and_webhook_urls_are_read_by_admins_only() -> anyhow::Result<()> {
    let (_c, http) = cluster("auth-secrets", &[]).await?;
    let (_, viewer) = new_token(&http, "dashboards", "viewer").await?;
    let (_, operator) = new_token(&http, "on-call", "operator").await?;
    const SECRET: &str = "s3cret-value";
    const HOOK: &str = "https://hooks.example.test/services/T0/B0/s3cret-hook";
    let spec = json!({
        "name": "with-secrets", "command": "true", "cronExpr": "0 0 0 1 1 * 2099",
        "env": { "API_TOKEN": SECRET, "MODE": "fast" },
        "notify": { "webhooks": [HOOK] },
    });

    let saved = http
        .send(
            req(Method::PUT, "/api/v1/jobs/with-secrets")
                .token(ADMIN)
                .json(spec.clone()),
        )
        .await?;
    assert_eq!(saved.status, 201, "{}", saved.body);
    // The admin who saved it reads it back whole.
    assert_eq!(saved.body["env"]["API_TOKEN"], SECRET);

    let redacted_env = json!({ "API_TOKEN": "(redacted)", "MODE": "(redacted)" });
    let redacted_hook = json!(["https://hooks.example.test/(redacted)"]);
    let hidden = |what: &str, body: &Value| {
        let text = body.to_string();
        assert!(
            !text.contains("s3cret"),
            "{what} shows a secret to a caller below admin: {text}"
        );
    };

    // Every read a viewer has.
    let one = http
        .send(req(Method::GET, "/api/v1/jobs/with-secrets").token(&viewer))
        .await?;
    assert_eq!(one.status, 200);
    hidden("GET /api/v1/jobs/{name}", &one.body);
    assert_eq!(one.body["env"], redacted_env);
    assert_eq!(one.body["notify"]["webhooks"], redacted_hook);
    // Nothing else of the job is hidden.
    assert_eq!(one.body["command"], "true");
    assert_eq!(one.body["nextFireTimes"].as_array().map(Vec::len), Some(1));
    let page = http
        .send(req(Method::GET, "/api/v1/jobs").token(&viewer))
        .await?;
    hidden("GET /api/v1/jobs", &page.body);
    assert_eq!(page.body["items"][0]["env"], redacted_env, "{}", page.body);
    let legacy = http
        .send(req(Method::GET, "/job/list").token(&viewer))
        .await?;
    hidden("GET /job/list", &legacy.body);
    assert_eq!(
        legacy.body["data"][0]["env"], redacted_env,
        "{}",
        legacy.body
    );
    assert_eq!(legacy.body["data"][0]["notify"]["webhooks"], redacted_hook);
    // The viewer's event stream, from just before the save (the job's
    // version is the revision of its save).
    let version: i64 = one.headers["etag"].to_str()?.trim_matches('"').parse()?;
    let events = events_until_saved(&http, &viewer, version - 1, "with-secrets").await?;
    assert!(
        !events.contains("s3cret") && events.contains("(redacted)"),
        "the viewer's event stream: {events}"
    );

    // An operator's pause and resume answer with the job: redacted too.
    let paused = http
        .send(req(Method::POST, "/api/v1/jobs/with-secrets/pause").token(&operator))
        .await?;
    assert_eq!(paused.status, 200, "{}", paused.body);
    hidden("POST /api/v1/jobs/{name}/pause", &paused.body);
    assert_eq!(paused.body["env"], redacted_env);
    let resumed = http
        .send(
            req(Method::POST, "/job/resume")
                .token(&operator)
                .form(&[("name", "with-secrets")]),
        )
        .await?;
    assert_eq!(resumed.body["errno"], 0, "{}", resumed.body);
    hidden("POST /job/resume", &resumed.body);

    // A redacted read saved back is refused, in both APIs, and the secrets
    // stay as they were.
    let mut read_back = one.body.clone();
    for derived in ["running", "nextFireTimes", "lastRun", "unmatched"] {
        read_back.as_object_mut().unwrap().remove(derived);
    }
    let put = http
        .send(
            req(Method::PUT, "/api/v1/jobs/with-secrets")
                .token(ADMIN)
                .json(read_back.clone()),
        )
        .await?;
    assert_eq!(put.status, 422, "{}", put.body);
    let message = put.body["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("API_TOKEN") && message.contains("placeholder"),
        "{}",
        put.body
    );
    let legacy_save = http
        .send(
            req(Method::POST, "/job/save")
                .token(ADMIN)
                .form(&[("job", &read_back.to_string())]),
        )
        .await?;
    // The legacy API answers errors as the original did: errno -1.
    assert_eq!(legacy_save.body["errno"], -1, "{}", legacy_save.body);
    assert!(
        legacy_save.body["msg"]
            .as_str()
            .is_some_and(|m| m.contains("API_TOKEN") && m.contains("placeholder")),
        "{}",
        legacy_save.body
    );
    // Only a webhook left as read: refused as well.
    let mut hook_only = spec.clone();
    hook_only["notify"]["webhooks"] = redacted_hook.clone();
    let put = http
        .send(
            req(Method::PUT, "/api/v1/jobs/with-secrets")
                .token(ADMIN)
                .json(hook_only),
        )
        .await?;
    assert_eq!(put.status, 422, "{}", put.body);
    assert_eq!(put.body["error"]["field"], "notify", "{}", put.body);
    let admin_read = http
        .send(req(Method::GET, "/api/v1/jobs/with-secrets").token(ADMIN))
        .await?;
    assert_eq!(admin_read.body["env"]["API_TOKEN"], SECRET);
    assert_eq!(admin_read.body["notify"]["webhooks"][0], HOOK);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_web_ui_session_is_a_cookie_that_cross_site_requests_cannot_use() -> anyhow::Result<()>
{
    let (_c, http) = cluster(
        "auth-session",
        &[
            ("GDTS_SSE_MAX_PER_CLIENT", "2"),
            ("GDTS_SSE_RECHECK_SECS", "1"),
        ],
    )
    .await?;
    let (admin_id, admin) = new_token(&http, "alice", "admin").await?;
    let (_, viewer) = new_token(&http, "bob", "viewer").await?;

    let bad = http
        .send(req(Method::POST, "/api/v1/session").json(json!({ "token": "gdts_nope_nope" })))
        .await?;
    assert_eq!(bad.status, 401);
    assert!(!bad.headers.contains_key("set-cookie"));

    let signed = http
        .send(req(Method::POST, "/api/v1/session").json(json!({ "token": admin })))
        .await?;
    assert_eq!(signed.status, 200, "{}", signed.body);
    assert_eq!(signed.body["identity"]["name"], "alice");
    assert_eq!(signed.body["identity"]["role"], "admin");
    let set_cookie = signed.headers["set-cookie"].to_str()?.to_string();
    for attribute in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(set_cookie.contains(attribute), "{set_cookie}");
    }
    assert!(
        !set_cookie.contains(&admin),
        "the cookie is a session, not the token"
    );
    let cookie = set_cookie.split(';').next().unwrap().to_string();

    let me = http
        .send(req(Method::GET, "/api/v1/session").header("cookie", cookie.clone()))
        .await?;
    assert_eq!(me.body["identity"]["name"], "alice");
    assert_eq!(me.body["identity"]["via"], "session");
    assert_eq!(me.body["authEnabled"], true);

    // Reads work with the cookie alone, the event stream included.
    let jobs = http
        .send(req(Method::GET, "/api/v1/jobs").header("cookie", cookie.clone()))
        .await?;
    assert_eq!(jobs.status, 200);

    // A change needs the X-GDTS-CSRF header and the manager's own origin.
    let host = http.base.trim_start_matches("http://").to_string();
    let plain = http
        .send(
            req(Method::PUT, "/api/v1/jobs/s1")
                .header("cookie", cookie.clone())
                .json(job("s1")),
        )
        .await?;
    assert_eq!(plain.status, 403, "{}", plain.body);
    assert!(plain.body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("X-GDTS-CSRF"));
    let foreign = http
        .send(
            req(Method::PUT, "/api/v1/jobs/s1")
                .header("cookie", cookie.clone())
                .header("x-gdts-csrf", "1")
                .header("origin", "http://evil.example")
                .json(job("s1")),
        )
        .await?;
    assert_eq!(foreign.status, 403);
    let own = http
        .send(
            req(Method::PUT, "/api/v1/jobs/s1")
                .header("cookie", cookie.clone())
                .header("x-gdts-csrf", "1")
                .header("origin", format!("http://{host}"))
                .json(job("s1")),
        )
        .await?;
    assert_eq!(own.status, 201, "{}", own.body);

    // A hostile page's form post to the legacy API: refused by its Origin,
    // even with a valid bearer token (a browser would not have one, but a
    // proxy might add it).
    let hostile = http
        .send(
            req(Method::POST, "/job/save")
                .token(&admin)
                .header("origin", "http://evil.example")
                .form(&[("job", &job("hostile").to_string())]),
        )
        .await?;
    assert_eq!(hostile.status, 403);
    assert_eq!(hostile.body["errno"], -1);
    let list = http
        .send(req(Method::GET, "/api/v1/jobs").token(&viewer))
        .await?;
    assert!(!list.body.to_string().contains("hostile"));

    // Event streams: at most GDTS_SSE_MAX_PER_CLIENT per client, then 429.
    let mut streams = Vec::new();
    for _ in 0..2 {
        let s = http
            .http
            .get(format!("{}/api/v1/events", http.base))
            .header("cookie", cookie.clone())
            .send()
            .await?;
        assert_eq!(s.status(), 200);
        streams.push(s);
    }
    let third = http
        .send(req(Method::GET, "/api/v1/events").header("cookie", cookie.clone()))
        .await?;
    assert_eq!(third.status, 429, "{}", third.body);
    let other_client = http
        .http
        .get(format!("{}/api/v1/events", http.base))
        .bearer_auth(&viewer)
        .send()
        .await?;
    assert_eq!(
        other_client.status(),
        200,
        "another client has its own count"
    );
    drop(other_client);
    drop(streams);
    gdts_tests::wait_until(
        "a closed stream to free its place",
        Duration::from_secs(10),
        || {
            let r = http
                .http
                .get(format!("{}/api/v1/events", http.base))
                .header("cookie", cookie.clone())
                .send();
            async move { r.await.map(|r| r.status() == 200).unwrap_or(false) }
        },
    )
    .await?;

    // An open stream ends once its token is revoked.
    let (doomed_id, doomed) = new_token(&http, "doomed", "viewer").await?;
    let mut stream = http
        .http
        .get(format!("{}/api/v1/events", http.base))
        .bearer_auth(&doomed)
        .send()
        .await?;
    assert_eq!(stream.status(), 200);
    http.send(req(Method::DELETE, &format!("/api/v1/tokens/{doomed_id}")).token(ADMIN))
        .await?;
    let ended = tokio::time::timeout(Duration::from_secs(15), async {
        // Keep-alive comments may come first; the body ends with the stream.
        while stream.chunk().await?.is_some() {}
        anyhow::Ok(())
    })
    .await;
    assert!(
        matches!(ended, Ok(Ok(()))),
        "a revoked token's event stream stayed open"
    );

    // Revoking the token ends its sessions; signing out ends the session.
    let (_, carol) = new_token(&http, "carol", "viewer").await?;
    let carol_cookie = http
        .send(req(Method::POST, "/api/v1/session").json(json!({ "token": carol })))
        .await?
        .headers["set-cookie"]
        .to_str()?
        .split(';')
        .next()
        .unwrap()
        .to_string();
    let out = http
        .send(
            req(Method::DELETE, "/api/v1/session")
                .header("cookie", carol_cookie.clone())
                .header("x-gdts-csrf", "1"),
        )
        .await?;
    assert_eq!(out.status, 204);
    let after_out = http
        .send(req(Method::GET, "/api/v1/jobs").header("cookie", carol_cookie))
        .await?;
    assert_eq!(after_out.status, 401);
    http.send(req(Method::DELETE, &format!("/api/v1/tokens/{admin_id}")).token(ADMIN))
        .await?;
    let after_revoke = http
        .send(req(Method::GET, "/api/v1/jobs").header("cookie", cookie.clone()))
        .await?;
    assert_eq!(
        after_revoke.status, 401,
        "a revoked token's session lives on"
    );
    // The UI's files still load with the dead cookie, so it can sign in again.
    let page = http
        .send(req(Method::GET, "/").header("cookie", cookie))
        .await?;
    assert_eq!(page.status, 200);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_over_the_limit_get_413_and_auth_off_still_refuses_cross_site_changes(
) -> anyhow::Result<()> {
    let mut c = Cluster::start("auth-limits").await?;
    c.restart_manager_with(&[("GDTS_AUTH", "off"), ("GDTS_MAX_BODY_BYTES", "4096")])
        .await?;
    let http = Http {
        base: c.manager_url.clone(),
        http: reqwest::Client::new(),
    };
    let mut big = job("big");
    big["command"] = json!("x".repeat(8000));
    let legacy = http
        .send(req(Method::POST, "/job/save").form(&[("job", &big.to_string())]))
        .await?;
    assert_eq!(legacy.status, 413);
    assert_eq!(legacy.body["errno"], -1);
    assert!(legacy.body["msg"].as_str().unwrap().contains("4096"));
    let v1 = http
        .send(req(Method::PUT, "/api/v1/jobs/big").json(big))
        .await?;
    assert_eq!(v1.status, 413);
    assert_eq!(v1.body["error"]["status"], 413);

    // With authentication off (make dev), the original system's page and
    // curl keep working, and a hostile page still cannot save a job.
    let from_curl = http
        .send(req(Method::POST, "/job/save").form(&[("job", &job("fine").to_string())]))
        .await?;
    assert_eq!(from_curl.body["errno"], 0, "{}", from_curl.body);
    let hostile = http
        .send(
            req(Method::POST, "/job/save")
                .header("origin", "http://evil.example")
                .form(&[("job", &job("hostile").to_string())]),
        )
        .await?;
    assert_eq!(hostile.status, 403);
    let list = c.get("/job/list", &[]).await?;
    assert!(!list.data.to_string().contains("hostile"));
    let me = http.send(req(Method::GET, "/api/v1/session")).await?;
    assert_eq!(me.body["authEnabled"], false);
    assert_eq!(me.body["identity"]["name"], "anonymous");
    Ok(())
}

/// An IAP assertion as Google's proxy signs it, with a test key.
struct FakeIap {
    key: jsonwebtoken::EncodingKey,
    other: jsonwebtoken::EncodingKey,
    jwks: std::path::PathBuf,
}

const IAP_AUDIENCE: &str = "/projects/123/locations/europe-west1/services/gdts-manager";

impl FakeIap {
    fn new(dir: &std::path::Path) -> anyhow::Result<FakeIap> {
        use base64::Engine;
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let pair = rcgen::KeyPair::generate()?;
        let raw = pair.public_key_raw();
        anyhow::ensure!(
            raw.len() == 65 && raw[0] == 4,
            "not an uncompressed P-256 point"
        );
        let jwks = json!({ "keys": [{
            "kty": "EC", "crv": "P-256", "alg": "ES256", "use": "sig", "kid": "test-key",
            "x": b64.encode(&raw[1..33]), "y": b64.encode(&raw[33..65]),
        }]});
        let path = dir.join("iap-jwks.json");
        std::fs::write(&path, jwks.to_string())?;
        let other = rcgen::KeyPair::generate()?;
        Ok(FakeIap {
            key: jsonwebtoken::EncodingKey::from_ec_pem(pair.serialize_pem().as_bytes())?,
            other: jsonwebtoken::EncodingKey::from_ec_pem(other.serialize_pem().as_bytes())?,
            jwks: path,
        })
    }

    fn assertion(&self, email: &str, aud: &str, exp_in: i64, forged: bool) -> String {
        let now = chrono::Utc::now().timestamp();
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
        header.kid = Some("test-key".into());
        let claims = json!({
            "iss": "https://cloud.google.com/iap", "aud": aud, "email": email,
            "sub": format!("accounts.google.com:{email}"), "iat": now - 5, "exp": now + exp_in,
        });
        let key = if forged { &self.other } else { &self.key };
        jsonwebtoken::encode(&header, &claims, key).unwrap()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_iap_a_verified_email_gets_its_role() -> anyhow::Result<()> {
    let keys_dir = tempfile::tempdir()?;
    let iap = FakeIap::new(keys_dir.path())?;
    let jwks = iap.jwks.to_str().unwrap().to_string();
    let (_c, http) = cluster(
        "auth-iap",
        &[
            ("GDTS_IAP_AUDIENCE", IAP_AUDIENCE),
            ("GDTS_IAP_KEYS", &jwks),
            (
                "GDTS_IAP_ROLES",
                "admin=alice@example.com;viewer=*@example.com",
            ),
        ],
    )
    .await?;
    let h = "x-goog-iap-jwt-assertion";
    let alice = iap.assertion("alice@example.com", IAP_AUDIENCE, 600, false);
    let bob = iap.assertion("bob@example.com", IAP_AUDIENCE, 600, false);

    let me = http
        .send(req(Method::GET, "/api/v1/session").header(h, alice.clone()))
        .await?;
    assert_eq!(
        me.body["identity"]["name"], "alice@example.com",
        "{}",
        me.body
    );
    assert_eq!(me.body["identity"]["role"], "admin");
    assert_eq!(me.body["identity"]["via"], "iap");

    // Alice (admin) saves, with the header every change through IAP needs.
    let save = http
        .send(
            req(Method::PUT, "/api/v1/jobs/iap-job")
                .header(h, alice.clone())
                .header("x-gdts-csrf", "1")
                .json(job("iap-job")),
        )
        .await?;
    assert_eq!(save.status, 201, "{}", save.body);
    let no_csrf = http
        .send(
            req(Method::PUT, "/api/v1/jobs/iap-job")
                .header(h, alice.clone())
                .json(job("iap-job")),
        )
        .await?;
    assert_eq!(
        no_csrf.status, 403,
        "a change through IAP needs X-GDTS-CSRF"
    );

    // Bob (viewer by domain) reads but cannot change.
    let read = http
        .send(req(Method::GET, "/api/v1/jobs").header(h, bob.clone()))
        .await?;
    assert_eq!(read.status, 200);
    let bob_delete = http
        .send(
            req(Method::DELETE, "/api/v1/jobs/iap-job")
                .header(h, bob)
                .header("x-gdts-csrf", "1"),
        )
        .await?;
    assert_eq!(bob_delete.status, 403);

    // Refused: another domain (no role), another audience, an expired or
    // forged assertion, garbage.
    for (what, assertion, status) in [
        (
            "no role",
            iap.assertion("eve@other.org", IAP_AUDIENCE, 600, false),
            403,
        ),
        (
            "wrong audience",
            iap.assertion("alice@example.com", "/projects/999/other", 600, false),
            401,
        ),
        (
            "expired",
            iap.assertion("alice@example.com", IAP_AUDIENCE, -120, false),
            401,
        ),
        (
            "forged",
            iap.assertion("alice@example.com", IAP_AUDIENCE, 600, true),
            401,
        ),
        ("garbage", "not.a.jwt".to_string(), 401),
    ] {
        let a = http
            .send(req(Method::GET, "/api/v1/jobs").header(h, assertion))
            .await?;
        assert_eq!(a.status, status, "{what}: {}", a.body);
    }
    // Audited under the verified e-mail.
    let audit = http
        .send(req(Method::GET, "/api/v1/audit").token(ADMIN))
        .await?;
    let text = audit.body.to_string();
    assert!(
        text.contains("alice@example.com") && text.contains("\"via\":\"iap\""),
        "{text}"
    );
    Ok(())
}
