//! Invariants of the code kept by a machine rather than by review (as
//! rust-analyzer's tidy tests do), over the source tree:
//!
//! - only `worker/src/executor.rs` spawns processes in the binaries' code
//!   (the run's supervision, environment and cgroup live there);
//! - only `worker/src/container.rs` creates or starts containers;
//! - only `common/src/keys.rs` spells etcd key segments: no `claims/`,
//!   `workers/`, ... literal anywhere else, tests included;
//! - only `webroot/html.js` puts markup into the page (`innerHTML` and its
//!   kin): every page goes through its `render`, which takes only what the
//!   escaping `html` tag built.
//!
//! Each rule is also checked against a sample that breaks it, so a rule
//! that silently stopped matching would fail here too.

use std::path::{Path, PathBuf};

use gdts_tests::workspace_root;

/// The binaries' own code (tests excluded).
const PRODUCTION: &[&str] = &[
    "common/src",
    "runtime/src",
    "manager/src",
    "worker/src",
    "cli/src",
];
/// Everything else that is Rust.
const TESTS: &[&str] = &["tests/src", "tests/tests"];

/// etcd key segments (`common/src/keys.rs`).
const KEY_SEGMENTS: &[&str] = &[
    "jobs/",
    "claims/",
    "workers/",
    "running/",
    "horizon/",
    "run-feed/",
    "high-water/",
    "run-now/",
    "auth/tokens/",
    "auth/sessions/",
    "kill/",
];

/// Literals that look like key segments but are not keys.
const NOT_KEYS: &[&str] = &[
    // A Terraform module's template path (the boot rehearsal renders it).
    "\"workers/cloud-init.yaml.tftpl\"",
];

/// What writes markup into a page.
const MARKUP_SINKS: &[&str] = &[
    ".innerHTML",
    ".outerHTML",
    "insertAdjacentHTML",
    "document.write",
];

/// Lines of a web module that write markup into the page.
fn writes_markup(text: &str) -> Vec<usize> {
    lines_with(text, MARKUP_SINKS)
}

/// Files under `dir` whose name ends in `.{ext}`, npm's packages left out.
fn walk(dir: &Path, ext: &str, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let path = e.path();
        if path.is_dir() {
            if path.file_name().is_some_and(|n| n != "node_modules") {
                walk(&path, ext, out);
            }
        } else if path.extension().is_some_and(|x| x == ext) {
            out.push(path);
        }
    }
}

/// The `.{ext}` files under `roots`, path (from the workspace root) and text.
fn files_of(roots: &[&str], ext: &str) -> Vec<(String, String)> {
    let root = workspace_root();
    let mut paths = Vec::new();
    for r in roots {
        walk(&root.join(r), ext, &mut paths);
    }
    paths.sort();
    assert!(!paths.is_empty(), "no .{ext} files under {roots:?}");
    paths
        .into_iter()
        .map(|p| {
            let text = std::fs::read_to_string(&p).expect("readable source");
            let rel = p
                .strip_prefix(&root)
                .unwrap_or(&p)
                .to_string_lossy()
                .to_string();
            (rel, text)
        })
        .collect()
}

/// The Rust sources under `roots`.
fn files(roots: &[&str]) -> Vec<(String, String)> {
    files_of(roots, "rs")
}

/// The web UI's modules.
fn web_modules() -> Vec<(String, String)> {
    files_of(&["webroot"], "js")
}

/// Lines (1-based) of `text` that spawn a process.
fn spawns(text: &str) -> Vec<usize> {
    lines_with(
        text,
        &["Command::new(", "process::Command", "std::process::Command"],
    )
}

/// Lines of `text` that create or start a container.
fn starts_containers(text: &str) -> Vec<usize> {
    lines_with(text, &[".create_container(", ".start_container("])
}

fn lines_with(text: &str, needles: &[&str]) -> Vec<usize> {
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim_start().starts_with("//"))
        .filter(|(_, l)| needles.iter().any(|n| l.contains(n)))
        .map(|(i, _)| i + 1)
        .collect()
}

/// Lines of `text` with a key segment at the start of a string literal or
/// right after a `{...}` placeholder (`"claims/"`, `"{}claims/"`, `{p}claims/`),
/// which is how a key is spelled; an HTTP path (`/api/v1/jobs/`) is not.
fn spells_keys(text: &str) -> Vec<usize> {
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim_start().starts_with("//"))
        .filter(|(_, l)| {
            let mut line = l.to_string();
            for allowed in NOT_KEYS {
                line = line.replace(allowed, "");
            }
            KEY_SEGMENTS.iter().any(|seg| {
                line.match_indices(seg)
                    .any(|(at, _)| at > 0 && matches!(line.as_bytes()[at - 1], b'"' | b'}'))
            })
        })
        .map(|(i, _)| i + 1)
        .collect()
}

#[test]
fn the_rules_catch_what_they_are_about() {
    assert_eq!(spawns("let c = tokio::process::Command::new(\"sh\");"), [1]);
    assert_eq!(
        spawns("// Command::new is only in executor.rs"),
        Vec::<usize>::new()
    );
    assert_eq!(
        starts_containers("\n docker.start_container(id, None)"),
        [2]
    );
    assert_eq!(spells_keys(r#"let k = format!("{}claims/{job}", p);"#), [1]);
    assert_eq!(
        spells_keys(r#"let k = "/gdts/workers/w1";"#),
        Vec::<usize>::new()
    );
    assert_eq!(spells_keys(r#"c.get("running/", None)"#), [1]);
    assert_eq!(writes_markup("  el.innerHTML = `<b>${name}</b>`;"), [1]);
    assert_eq!(
        writes_markup("render(el, html`<b>${name}</b>`);"),
        Vec::<usize>::new()
    );
    assert_eq!(
        spells_keys(r#"get(format!("{}/api/v1/jobs/{name}", base))"#),
        Vec::<usize>::new()
    );
    assert_eq!(
        spells_keys(r#"("workers", "workers/cloud-init.yaml.tftpl")"#),
        Vec::<usize>::new()
    );
}

#[test]
fn only_the_executor_spawns_processes() {
    let offenders: Vec<String> = files(PRODUCTION)
        .iter()
        .filter(|(path, _)| path != "worker/src/executor.rs")
        .flat_map(|(path, text)| spawns(text).into_iter().map(move |l| format!("{path}:{l}")))
        .collect();
    assert!(
        offenders.is_empty(),
        "processes are spawned outside worker/src/executor.rs: {offenders:?}"
    );
}

#[test]
fn only_the_container_runner_starts_containers() {
    let offenders: Vec<String> = files(PRODUCTION)
        .iter()
        .filter(|(path, _)| path != "worker/src/container.rs")
        .flat_map(|(path, text)| {
            starts_containers(text)
                .into_iter()
                .map(move |l| format!("{path}:{l}"))
        })
        .collect();
    assert!(
        offenders.is_empty(),
        "containers are created or started outside worker/src/container.rs: {offenders:?}"
    );
}

#[test]
fn only_keys_rs_spells_etcd_keys() {
    let mut all = files(PRODUCTION);
    all.extend(files(TESTS));
    let offenders: Vec<String> = all
        .iter()
        .filter(|(path, _)| path != "common/src/keys.rs" && path != "tests/tests/tidy.rs")
        .flat_map(|(path, text)| {
            spells_keys(text)
                .into_iter()
                .map(move |l| format!("{path}:{l}"))
        })
        .collect();
    assert!(
        offenders.is_empty(),
        "etcd keys spelled outside common/src/keys.rs (use Keys): {offenders:?}"
    );
}

#[test]
fn only_html_js_puts_markup_into_the_page() {
    let offenders: Vec<String> = web_modules()
        .iter()
        .filter(|(path, _)| path != "webroot/html.js")
        .flat_map(|(path, text)| {
            writes_markup(text)
                .into_iter()
                .map(move |l| format!("{path}:{l}"))
        })
        .collect();
    assert!(
        offenders.is_empty(),
        "markup written outside webroot/html.js (use render(el, html`...`)): {offenders:?}"
    );
}
