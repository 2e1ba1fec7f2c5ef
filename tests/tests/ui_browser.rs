//! The web UI in a real browser: `tests/browser/ui.test.mjs` (playwright-core
//! driving Debian's Chromium) against a real manager serving `webroot/`, two
//! workers, etcd and the Mongo-protocol server started here. It writes the
//! screenshots in `docs/screenshots/` (desktop and phone width).
//!
//! Needs node, `/usr/bin/chromium` and the npm packages of `webroot/` and
//! `tests/browser/` (`make test` installs them). Locally,
//! `GDTS_TEST_SKIP_BROWSER=1` lets the test pass without them; in CI
//! (`CI=true`) nothing is skipped.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use gdts_tests::{workspace_root, Cluster};

fn missing_prerequisite(root: &Path, chromium: &str) -> Option<String> {
    if Command::new("node").arg("--version").output().is_err() {
        return Some("node is not installed".into());
    }
    if !Path::new(chromium).exists() {
        return Some(format!("{chromium} is not installed"));
    }
    for dir in [
        "webroot/node_modules/bootstrap",
        "webroot/node_modules/cronstrue",
        "tests/browser/node_modules/playwright-core",
    ] {
        if !root.join(dir).is_dir() {
            return Some(format!("{dir} is missing (scripts/deps.sh installs it)"));
        }
    }
    None
}

const ADMIN_TOKEN: &str = "ui-admin-0123456789abcdef0123456789abcdef";

#[tokio::test(flavor = "multi_thread")]
async fn web_ui_in_chromium() -> anyhow::Result<()> {
    let root = workspace_root();
    let chromium = std::env::var("GDTS_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    if let Some(why) = missing_prerequisite(&root, &chromium) {
        let in_ci = std::env::var("CI").is_ok_and(|v| v == "true");
        let opted_out = std::env::var("GDTS_TEST_SKIP_BROWSER").is_ok_and(|v| v == "1");
        anyhow::ensure!(
            opted_out && !in_ci,
            "{why}; run scripts/deps.sh (make test does)"
        );
        eprintln!("skipping: {why} and GDTS_TEST_SKIP_BROWSER=1");
        return Ok(());
    }

    let workers = ["ui-worker-1", "ui-worker-2"];
    // Labelled workers, for the selector steps.
    let mut cluster = Cluster::start("ui_browser").await?;
    for (id, labels) in workers.iter().zip(["zone=a,gpu=none", "zone=b"]) {
        cluster.start_worker(
            id,
            gdts_tests::WorkerOptions {
                env: vec![("GDTS_WORKER_LABELS".into(), labels.into())],
                ..Default::default()
            },
        )?;
    }
    cluster
        .wait_for_workers(&workers, Duration::from_secs(20))
        .await?;
    let webroot = root.join("webroot");
    cluster
        .restart_manager_with(&[
            ("GDTS_WEBROOT", webroot.to_str().unwrap()),
            // As deployed: authentication on, signed in with a token.
            ("GDTS_AUTH", "on"),
            ("GDTS_ADMIN_TOKEN", ADMIN_TOKEN),
        ])
        .await?;
    let artifacts = cluster.dir.path().join("browser-artifacts");

    let mut node = tokio::process::Command::new("node");
    node.arg("ui.test.mjs")
        .current_dir(root.join("tests/browser"))
        .env("GDTS_URL", &cluster.manager_url)
        .env("GDTS_WORKERS", workers.join(","))
        .env("GDTS_SCREENSHOTS", root.join("docs/screenshots"))
        .env("GDTS_ARTIFACTS", &artifacts)
        .env("GDTS_CHROMIUM", &chromium)
        .env("GDTS_ADMIN_TOKEN", ADMIN_TOKEN)
        .kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(300), node.output())
        .await
        .map_err(|_| anyhow::anyhow!("the browser tests took over 5 minutes"))??;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    eprintln!("{stderr}");
    if !out.status.success() {
        let manager_log =
            std::fs::read_to_string(cluster.dir.path().join("manager.log")).unwrap_or_default();
        let tail: Vec<&str> = manager_log.lines().rev().take(40).collect();
        eprintln!(
            "manager log (last lines, newest first):\n{}",
            tail.join("\n")
        );
        // Keep the failure screenshots: the temp dir goes with the cluster.
        let kept = std::env::temp_dir().join("gdts-ui-browser-failure");
        let _ = std::fs::create_dir_all(&kept);
        for name in ["failure-desktop.png", "failure-phone.png"] {
            let _ = std::fs::copy(artifacts.join(name), kept.join(name));
        }
        anyhow::bail!(
            "the browser tests failed ({}); failure screenshots in {}",
            out.status,
            kept.display()
        );
    }
    let steps = stdout.lines().filter(|l| l.starts_with("ok ")).count();
    assert!(steps >= 10, "only {steps} browser steps ran:\n{stdout}");
    for shot in [
        "jobs-desktop.png",
        "job-desktop.png",
        "output-desktop.png",
        "form-desktop.png",
        "workers-desktop.png",
        "jobs-phone.png",
        "job-phone.png",
        "form-phone.png",
        "workers-phone.png",
        "sign-in-desktop.png",
        "tokens-desktop.png",
        "audit-desktop.png",
        "viewer-jobs-desktop.png",
    ] {
        let path = root.join("docs/screenshots").join(shot);
        let len = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        assert!(len > 10_000, "{} is missing or empty", path.display());
    }
    Ok(())
}
