//! The web UI's markup tag (`webroot/html.js`) under node's own test runner:
//! `tests/browser/html.test.mjs`. Needs node (`make test` installs it);
//! locally `GDTS_TEST_SKIP_BROWSER=1` lets the test pass without it, in CI
//! (`CI=true`) nothing is skipped.

use std::process::Command;

use gdts_tests::workspace_root;

#[test]
fn the_html_tag_escapes_by_default() {
    let dir = workspace_root().join("tests/browser");
    let run = Command::new("node")
        .args(["--test", "html.test.mjs"])
        .current_dir(&dir)
        .output();
    let out = match run {
        Ok(out) => out,
        Err(e) => {
            let in_ci = std::env::var("CI").is_ok_and(|v| v == "true");
            let opted_out = std::env::var("GDTS_TEST_SKIP_BROWSER").is_ok_and(|v| v == "1");
            assert!(
                opted_out && !in_ci,
                "node cannot run ({e}); run scripts/deps.sh (make test does)"
            );
            eprintln!("skipping: node cannot run ({e}) and GDTS_TEST_SKIP_BROWSER=1");
            return;
        }
    };
    assert!(
        out.status.success(),
        "node --test html.test.mjs failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
