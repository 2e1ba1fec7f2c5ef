//! The manager serves the web UI from `GDTS_WEBROOT` beside the APIs, which
//! keep their own routes and errors; a webroot without index.html is a
//! configuration error at start.

use std::time::Duration;

use gdts_tests::{binary, workspace_root, Cluster};
use reqwest::StatusCode;

#[tokio::test(flavor = "multi_thread")]
async fn manager_serves_the_web_ui_from_gdts_webroot() -> anyhow::Result<()> {
    let mut c = Cluster::start("web_root").await?;
    let http = reqwest::Client::new();
    let get = |path: &str| http.get(format!("{}{path}", c.manager_url)).send();

    // Without a webroot, `/` is the plain-text index of the API.
    let r = get("/").await?;
    assert_eq!(r.status(), StatusCode::OK);
    assert!(r.text().await?.starts_with("GDTS manager"));

    let webroot = workspace_root().join("webroot");
    c.restart_manager_with(&[("GDTS_WEBROOT", webroot.to_str().unwrap())])
        .await?;
    let get = |path: &str| http.get(format!("{}{path}", c.manager_url)).send();
    for (path, content_type, wants) in [
        ("/", "text/html", "<title>GDTS</title>"),
        ("/index.html", "text/html", "app.js"),
        ("/app.js", "javascript", "EventSource"),
        ("/app.css", "text/css", "table-stack"),
        (
            "/node_modules/bootstrap/dist/css/bootstrap.min.css",
            "text/css",
            "Bootstrap",
        ),
        (
            "/node_modules/cronstrue/dist/cronstrue.min.js",
            "javascript",
            "cronstrue",
        ),
    ] {
        let r = get(path).await?;
        assert_eq!(r.status(), StatusCode::OK, "GET {path}");
        let ct = r.headers()["content-type"].to_str()?.to_string();
        assert!(ct.contains(content_type), "GET {path}: {ct}");
        assert_eq!(r.headers()["cache-control"], "no-cache", "GET {path}");
        assert!(r.text().await?.contains(wants), "GET {path}");
    }
    assert_eq!(
        get("/no-such-page.html").await?.status(),
        StatusCode::NOT_FOUND
    );
    // Nothing outside the webroot is reachable.
    for path in ["/%2e%2e/Cargo.toml", "/..%2fCargo.toml"] {
        let r = get(path).await?;
        assert!(r.status().is_client_error(), "GET {path}: {}", r.status());
        assert!(!r.text().await?.contains("[workspace]"), "GET {path}");
    }

    // The APIs keep their routes and their own 404s.
    let r = get("/api/v1/jobs").await?;
    assert_eq!(r.status(), StatusCode::OK);
    assert!(r.text().await?.contains("\"items\""));
    let r = get("/api/v1/no-such-endpoint").await?;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert!(r.text().await?.contains("no such API endpoint"));
    let r = get("/job/list").await?;
    assert!(r.text().await?.contains("\"errno\":0"));
    Ok(())
}

#[tokio::test]
async fn a_webroot_without_index_html_stops_the_manager_with_a_message() -> anyhow::Result<()> {
    let empty = tempfile::tempdir()?;
    let out = tokio::time::timeout(
        Duration::from_secs(20),
        tokio::process::Command::new(binary("gdts-manager"))
            .env("GDTS_WEBROOT", empty.path())
            .env("GDTS_ETCD_ENDPOINTS", "http://127.0.0.1:9")
            .kill_on_drop(true)
            .output(),
    )
    .await??;
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("GDTS_WEBROOT") && stderr.contains("no index.html"),
        "{stderr}"
    );
    Ok(())
}
