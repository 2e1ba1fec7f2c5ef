//! The OpenAPI document at /api/v1/openapi.json is generated from the same
//! annotations that build the routes: it lists exactly the API's
//! operations, and every operation it documents is routed.

use std::collections::BTreeSet;

use gdts_tests::Cluster;
use serde_json::Value;

const EXPECTED: &[(&str, &str)] = &[
    ("get", "/jobs"),
    ("get", "/jobs/{name}"),
    ("put", "/jobs/{name}"),
    ("delete", "/jobs/{name}"),
    ("post", "/jobs/{name}/kill"),
    ("post", "/jobs/{name}/run"),
    ("post", "/jobs/{name}/pause"),
    ("post", "/jobs/{name}/resume"),
    ("get", "/jobs/{name}/runs"),
    ("get", "/jobs/{name}/runs/{run_id}"),
    ("get", "/workers"),
    ("get", "/cron/preview"),
    ("get", "/stats"),
    ("get", "/events"),
    ("get", "/tokens"),
    ("post", "/tokens"),
    ("delete", "/tokens/{id}"),
    ("get", "/session"),
    ("post", "/session"),
    ("delete", "/session"),
    ("get", "/audit"),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openapi_document_matches_the_routes() -> anyhow::Result<()> {
    let c = Cluster::start("api_openapi").await?;
    let http = reqwest::Client::new();
    let doc: Value = http
        .get(format!("{}/api/v1/openapi.json", c.manager_url))
        .send()
        .await?
        .json()
        .await?;
    assert!(
        doc["openapi"]
            .as_str()
            .unwrap_or_default()
            .starts_with("3."),
        "{doc}"
    );
    assert_eq!(doc["servers"][0]["url"], "/api/v1");
    let mut documented = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for method in item.as_object().unwrap().keys() {
            if ["get", "put", "post", "delete", "patch"].contains(&method.as_str()) {
                documented.insert((method.clone(), path.clone()));
            }
        }
    }
    let expected: BTreeSet<(String, String)> = EXPECTED
        .iter()
        .map(|(m, p)| (m.to_string(), p.to_string()))
        .collect();
    assert_eq!(
        documented, expected,
        "the document and the API's operations differ"
    );
    for schema in ["JobSpec", "JobView", "LogRecord", "WorkerInfo", "ApiError"] {
        assert!(
            doc["components"]["schemas"].get(schema).is_some(),
            "schema {schema} missing"
        );
    }

    // Every documented operation is routed: no fallback 404, no 405.
    for (method, path) in &documented {
        let url = format!(
            "{}/api/v1{}",
            c.manager_url,
            path.replace("{name}", "probe")
                .replace("{run_id}", "probe-run")
                .replace("{id}", "0123456789abcdef")
        );
        let method: reqwest::Method = method.to_uppercase().parse()?;
        let mut req = http.request(method.clone(), &url);
        if method == reqwest::Method::PUT {
            req = req.json(&serde_json::json!({"command": "true", "cronExpr": "@yearly"}));
        }
        if path == "/events" {
            let resp = req.send().await?;
            assert_eq!(resp.status(), 200, "{method} {path}");
            continue;
        }
        let resp = req.send().await?;
        let status = resp.status();
        assert_ne!(
            status,
            reqwest::StatusCode::METHOD_NOT_ALLOWED,
            "{method} {path}"
        );
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        assert_ne!(
            body["error"]["message"], "no such API endpoint",
            "{method} {path} is not routed"
        );
    }
    Ok(())
}
