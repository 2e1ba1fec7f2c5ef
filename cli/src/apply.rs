//! Jobs as code: a YAML or TOML file of jobs, compared with the server's,
//! shown as a diff, then applied with optimistic concurrency (a create only
//! if the job is still absent, an update only of the version compared
//! against), optionally deleting jobs the file does not name.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use anyhow::{bail, Context};
use gdts_common::{Job, JobSpec};
use reqwest::{Method, StatusCode};
use serde_json::Value;

use crate::client::{segment, ApiFailure, Client};

/// The file: `jobs: [...]` (YAML or TOML `[[jobs]]`), or a YAML list.
#[derive(serde::Deserialize)]
#[serde(untagged)]
enum JobsFile {
    Wrapped { jobs: Vec<Value> },
    List(Vec<Value>),
}

/// Reads and validates a jobs file; each job as the server would store it.
pub fn read_file(path: &Path) -> anyhow::Result<Vec<JobSpec>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let is_toml = path.extension().is_some_and(|e| e == "toml");
    let file: JobsFile = if is_toml {
        toml::from_str(&text)
            .with_context(|| format!("{} is not a TOML jobs file", path.display()))?
    } else {
        serde_norway::from_str(&text)
            .with_context(|| format!("{} is not a YAML jobs file", path.display()))?
    };
    let raw = match file {
        JobsFile::Wrapped { jobs } | JobsFile::List(jobs) => jobs,
    };
    let mut seen = BTreeSet::new();
    let mut specs = Vec::new();
    for (i, job) in raw.into_iter().enumerate() {
        let name = job["name"].as_str().unwrap_or("").to_string();
        let at = if name.is_empty() {
            format!("job {}", i + 1)
        } else {
            format!("job {} ({name})", i + 1)
        };
        let (parsed, unknown) = Job::parse_json(&job.to_string())
            .map_err(|e| anyhow::anyhow!("{}: {at}: {e}", path.display()))?;
        if let Some(field) = unknown.first() {
            bail!("{}: {at}: {field} is not a job field", path.display());
        }
        if !seen.insert(parsed.name.to_string()) {
            bail!("{}: {at}: the name is used twice", path.display());
        }
        specs.push(parsed.to_spec());
    }
    Ok(specs)
}

/// What applying would do to one job.
pub enum Change {
    Create(JobSpec),
    Update {
        spec: JobSpec,
        etag: String,
        fields: Vec<(String, Value, Value)>,
    },
    Delete {
        name: String,
        /// The version compared: deleted only if still that one.
        etag: String,
    },
    Same(String),
}

impl Change {
    pub fn name(&self) -> &str {
        match self {
            Change::Create(s) | Change::Update { spec: s, .. } => &s.name,
            Change::Delete { name, .. } | Change::Same(name) => name,
        }
    }
}

/// The server's jobs, all of them (paged by name).
pub async fn server_jobs(client: &Client) -> anyhow::Result<BTreeMap<String, JobSpec>> {
    let mut jobs = BTreeMap::new();
    let mut after = String::new();
    loop {
        let path = format!("/jobs?pageSize=500&after={}", segment(&after));
        let page = client.get(&path).await?.body;
        let items = page["items"].as_array().cloned().unwrap_or_default();
        if items.is_empty() {
            break;
        }
        for item in items {
            let spec = spec_of(&item)?;
            after = spec.name.clone();
            jobs.insert(spec.name.clone(), spec);
        }
    }
    Ok(jobs)
}

/// A job as the API shows it, without what the fleet adds.
fn spec_of(view: &Value) -> anyhow::Result<JobSpec> {
    let mut v = view.clone();
    if let Some(o) = v.as_object_mut() {
        for derived in ["running", "nextFireTimes", "lastRun", "unmatched"] {
            o.remove(derived);
        }
    }
    Ok(serde_json::from_value(v)?)
}

/// Compares the file's jobs with the server's.
pub async fn plan(client: &Client, wanted: &[JobSpec], prune: bool) -> anyhow::Result<Vec<Change>> {
    let current = server_jobs(client).await?;
    let mut changes = Vec::new();
    for spec in wanted {
        match current.get(&spec.name) {
            None => changes.push(Change::Create(spec.clone())),
            Some(have) => {
                let fields = diff(have, spec);
                if fields.is_empty() {
                    changes.push(Change::Same(spec.name.clone()));
                } else {
                    // The version the comparison was made against.
                    let answer = client
                        .get(&format!("/jobs/{}", segment(&spec.name)))
                        .await?;
                    let etag = answer.etag.unwrap_or_default();
                    let fields = diff(&spec_of(&answer.body)?, spec);
                    if fields.is_empty() {
                        changes.push(Change::Same(spec.name.clone()));
                    } else {
                        changes.push(Change::Update {
                            spec: spec.clone(),
                            etag,
                            fields,
                        });
                    }
                }
            }
        }
    }
    if prune {
        let named: BTreeSet<&str> = wanted.iter().map(|s| s.name.as_str()).collect();
        for name in current.keys().filter(|n| !named.contains(n.as_str())) {
            // Never deleted unconditionally: a job changed since this
            // read is left alone (412), so the plan is made again.
            let answer = match client.get(&format!("/jobs/{}", segment(name))).await {
                Ok(answer) => answer,
                Err(e)
                    if e.downcast_ref::<ApiFailure>()
                        .is_some_and(|f| f.status == StatusCode::NOT_FOUND) =>
                {
                    continue; // Gone already.
                }
                Err(e) => return Err(e.context(format!("{name}: cannot read it to prune it"))),
            };
            let etag = answer.etag.ok_or_else(|| {
                anyhow::anyhow!("{name}: the server sent no ETag; not pruned without one")
            })?;
            changes.push(Change::Delete {
                name: name.clone(),
                etag,
            });
        }
    }
    Ok(changes)
}

/// The fields that differ: (field, server's value, file's value).
///
/// A caller below admin reads a job's `env` values and webhook URLs
/// redacted; the file's are then compared redacted the same way (by
/// variable name, by webhook host), so a read-only token's drift check
/// neither reports every secret as changed nor prints the file's secrets.
pub fn diff(have: &JobSpec, want: &JobSpec) -> Vec<(String, Value, Value)> {
    // The server answered with the job's secrets redacted.
    let want = if have.redacted_field().is_some() {
        let mut w = want.clone();
        w.redact_secrets();
        w
    } else {
        want.clone()
    };
    let (a, b) = (
        serde_json::to_value(have).unwrap_or_default(),
        serde_json::to_value(&want).unwrap_or_default(),
    );
    let empty = serde_json::Map::new();
    let (a, b) = (
        a.as_object().unwrap_or(&empty),
        b.as_object().unwrap_or(&empty),
    );
    let keys: BTreeSet<&String> = a.keys().chain(b.keys()).collect();
    keys.into_iter()
        .filter_map(|k| {
            let (x, y) = (
                a.get(k).cloned().unwrap_or(Value::Null),
                b.get(k).cloned().unwrap_or(Value::Null),
            );
            (x != y).then(|| (k.clone(), x, y))
        })
        .collect()
}

/// The plan, as people read it (`+` create, `~` update, `-` delete). It
/// goes to terminals and CI logs, so it never shows a secret: `env` by
/// variable name (which are new, gone or changed), webhooks by scheme,
/// host and port.
pub fn render(changes: &[Change]) -> String {
    let mut out = String::new();
    for c in changes {
        match c {
            Change::Create(spec) => {
                out.push_str(&format!("+ create {}\n", spec.name));
                let fields = serde_json::to_value(spec).unwrap_or_default();
                for (k, v) in fields.as_object().into_iter().flatten() {
                    if k != "name" {
                        out.push_str(&format!("    {k}: {}\n", shown(k, v)));
                    }
                }
            }
            Change::Update { spec, fields, .. } => {
                out.push_str(&format!("~ update {}\n", spec.name));
                for (k, from, to) in fields {
                    match (k.as_str(), from, to) {
                        ("env", from, to) => {
                            out.push_str(&format!("    env: {}\n", env_changes(from, to)))
                        }
                        _ => out.push_str(&format!(
                            "    {k}: {} -> {}\n",
                            shown(k, from),
                            shown(k, to)
                        )),
                    }
                }
            }
            Change::Delete { name, .. } => out.push_str(&format!("- delete {name}\n")),
            Change::Same(_) => {}
        }
    }
    let count = |f: fn(&Change) -> bool| changes.iter().filter(|c| f(c)).count();
    out.push_str(&format!(
        "{} to create, {} to update, {} to delete, {} unchanged\n",
        count(|c| matches!(c, Change::Create(_))),
        count(|c| matches!(c, Change::Update { .. })),
        count(|c| matches!(c, Change::Delete { .. })),
        count(|c| matches!(c, Change::Same(_))),
    ));
    out
}

/// A field's value as the plan shows it: `env` by names only, webhooks
/// redacted.
fn shown(field: &str, value: &Value) -> String {
    match (field, value) {
        (_, Value::Null) => "(unset)".to_string(),
        ("env", Value::Object(vars)) => {
            let names: Vec<&str> = vars.keys().map(String::as_str).collect();
            format!("{} (values not shown)", names.join(", "))
        }
        ("notify", v) => match serde_json::from_value::<gdts_common::job::NotifySpec>(v.clone()) {
            Ok(mut n) => {
                n.webhooks = n
                    .webhooks
                    .iter()
                    .map(|w| gdts_common::job::redact_webhook(w))
                    .collect();
                serde_json::to_value(n).unwrap_or_default().to_string()
            }
            Err(_) => "(not shown)".to_string(),
        },
        (_, other) => other.to_string(),
    }
}

/// The names of `of` that `pick` takes.
fn names(of: &serde_json::Map<String, Value>, pick: impl Fn(&String) -> bool) -> Vec<&str> {
    of.keys().filter(|k| pick(k)).map(String::as_str).collect()
}

/// Which variables an update adds, removes and changes, by name.
fn env_changes(from: &Value, to: &Value) -> String {
    let empty = serde_json::Map::new();
    let (a, b) = (
        from.as_object().unwrap_or(&empty),
        to.as_object().unwrap_or(&empty),
    );
    let mut parts = Vec::new();
    for (what, list) in [
        ("added", names(b, |k| !a.contains_key(k))),
        ("removed", names(a, |k| !b.contains_key(k))),
        (
            "changed",
            names(a, |k| b.get(k).is_some_and(|v| a[k] != *v)),
        ),
    ] {
        if !list.is_empty() {
            parts.push(format!("{what} {}", list.join(", ")));
        }
    }
    format!("{} (values not shown)", parts.join("; "))
}

/// Applies the plan; stops at the first refusal. A job changed on the
/// server since the plan (412) is an error that says to plan again.
pub async fn apply(client: &Client, changes: &[Change]) -> anyhow::Result<usize> {
    let mut done = 0;
    for c in changes {
        let path = format!("/jobs/{}", segment(c.name()));
        let req = match c {
            Change::Create(spec) => client
                .request(Method::PUT, &path)
                .header("If-None-Match", "*")
                .json(spec),
            Change::Update { spec, etag, .. } => client
                .request(Method::PUT, &path)
                .header("If-Match", etag.as_str())
                .json(spec),
            Change::Delete { etag, .. } => client
                .request(Method::DELETE, &path)
                .header("If-Match", etag.as_str()),
            Change::Same(_) => continue,
        };
        client
            .send(req)
            .await
            .with_context(|| format!("{}: not applied", c.name()))?;
        done += 1;
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(env: &[(&str, &str)], hooks: &[&str]) -> JobSpec {
        let mut s = JobSpec::shell("j", "true", "* * * * *");
        s.env = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        if !hooks.is_empty() {
            s.notify = Some(gdts_common::job::NotifySpec {
                webhooks: hooks.iter().map(|h| h.to_string()).collect(),
                on: None,
            });
        }
        s
    }

    #[test]
    fn a_redacted_read_is_compared_redacted_and_shows_no_secret() {
        let file = spec(
            &[("TOKEN", "s3cret")],
            &["https://hooks.example/services/s3cret"],
        );
        let mut read = file.clone();
        read.redact_secrets();
        // Same secrets, read by a viewer: no change.
        assert_eq!(diff(&read, &file), Vec::new());
        // What a redacted read can tell apart is still told apart, and
        // the file's secret is not in what is shown.
        let mut more = file.clone();
        more.env.insert("OTHER".into(), "s3cret-too".into());
        more.notify.as_mut().unwrap().webhooks = vec!["https://elsewhere.example/s3cret".into()];
        let fields = diff(&read, &more);
        assert_eq!(
            fields
                .iter()
                .map(|(k, _, _)| k.as_str())
                .collect::<Vec<_>>(),
            ["env", "notify"]
        );
        let shown = render(&[Change::Update {
            spec: more.clone(),
            etag: String::new(),
            fields,
        }]);
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(
            shown.contains("env: added OTHER (values not shown)"),
            "{shown}"
        );
        // An admin's read compares the values themselves.
        let mut changed = file.clone();
        changed.env.insert("TOKEN".into(), "rotated".into());
        changed.env.insert("NEW".into(), "s3cret-new".into());
        let fields = diff(&file, &changed);
        assert_eq!(fields.len(), 1);
        assert_eq!(diff(&file, &file), Vec::new());
        // Neither an update nor a create shows a value, for any role.
        let shown = render(&[
            Change::Update {
                spec: changed.clone(),
                etag: String::new(),
                fields,
            },
            Change::Create(more),
        ]);
        assert!(
            !shown.contains("s3cret") && !shown.contains("rotated"),
            "{shown}"
        );
        assert!(
            shown.contains("env: added NEW; changed TOKEN (values not shown)"),
            "{shown}"
        );
        assert!(
            shown.contains("https://elsewhere.example/(redacted)"),
            "{shown}"
        );
    }
}
