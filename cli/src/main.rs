//! `gdts`: the GDTS command line, over the manager's JSON API (`/api/v1`).
//!
//! `GDTS_URL` (default `http://127.0.0.1:8070`) and `GDTS_TOKEN` say where
//! and as whom. Tables for people, `--json` for scripts. Exit codes: 0 done;
//! 1 failed (the message says why); 2 a usage error; 3 `jobs apply
//! --dry-run --detailed-exitcode` found changes; 4 a job changed on the
//! server since it was compared (plan again).

mod apply;
mod client;
mod follow;
mod table;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use reqwest::Method;
use serde_json::{json, Value};

use client::{segment, ApiFailure, Client};
use table::{time, Table};

#[derive(Parser)]
#[command(
    name = "gdts",
    version,
    about = "GDTS from the command line: jobs as code, runs, logs, workers, tokens"
)]
struct Cli {
    /// The manager's URL.
    #[arg(
        long,
        env = "GDTS_URL",
        default_value = "http://127.0.0.1:8070",
        global = true
    )]
    url: String,
    /// An API token (Authorization: Bearer).
    #[arg(long, env = "GDTS_TOKEN", hide_env_values = true, global = true)]
    token: Option<String>,
    /// Print JSON instead of tables.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Jobs: list, show, apply from a file, delete, run, kill, pause, resume.
    Jobs {
        #[command(subcommand)]
        command: JobsCommand,
    },
    /// Runs of a job, newest first.
    Runs {
        #[command(subcommand)]
        command: RunsCommand,
    },
    /// A job's recent runs with their output; --follow prints new runs as they finish.
    Logs {
        job: String,
        /// How many recent runs.
        #[arg(long, default_value_t = 5)]
        last: u32,
        /// Keep printing runs as they finish (the event stream).
        #[arg(long, short)]
        follow: bool,
    },
    /// The registered workers.
    Workers,
    /// API tokens (admin).
    Tokens {
        #[command(subcommand)]
        command: TokensCommand,
    },
}

#[derive(Subcommand)]
enum JobsCommand {
    /// Jobs sorted by name.
    List {
        /// Only names starting with this.
        #[arg(long)]
        prefix: Option<String>,
    },
    /// One job.
    Get { name: String },
    /// Make the server's jobs those of a YAML or TOML file: shows the diff,
    /// then creates and updates (each only if unchanged since compared).
    Apply {
        /// `jobs: [...]` in YAML (.yaml, .yml) or `[[jobs]]` in TOML (.toml).
        #[arg(short = 'f', long = "file")]
        file: PathBuf,
        /// Also delete jobs the file does not name.
        #[arg(long)]
        prune: bool,
        /// Show the diff, change nothing.
        #[arg(long)]
        dry_run: bool,
        /// With --dry-run: exit 3 when there are changes (0 when none).
        #[arg(long, requires = "dry_run")]
        detailed_exitcode: bool,
    },
    /// Delete a job.
    Delete { name: String },
    /// Run a job now (a manual run).
    Run { name: String },
    /// Kill a job's runs in progress.
    Kill { name: String },
    /// Pause a job (it keeps its definition, never fires).
    Pause { name: String },
    /// Resume a paused job.
    Resume { name: String },
}

#[derive(Subcommand)]
enum RunsCommand {
    /// A job's runs, newest first, without output.
    List {
        job: String,
        #[arg(long, default_value_t = 20)]
        limit: u32,
    },
}

#[derive(Subcommand)]
enum TokensCommand {
    /// The tokens (never their values).
    List,
    /// Create a token; its value is printed once.
    Create {
        name: String,
        /// viewer, operator or admin.
        #[arg(long, default_value = "viewer")]
        role: String,
    },
    /// Revoke a token by id.
    Revoke { id: String },
}

/// Exit codes.
const FAILED: u8 = 1;
const CHANGES: u8 = 3;
const CHANGED_SINCE: u8 = 4;

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli).await {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("gdts: {e:#}");
            let stale = e
                .chain()
                .filter_map(|c| c.downcast_ref::<ApiFailure>())
                .any(|f| f.status == reqwest::StatusCode::PRECONDITION_FAILED);
            ExitCode::from(if stale { CHANGED_SINCE } else { FAILED })
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<u8> {
    let client = Client::new(&cli.url, cli.token.clone())?;
    let json_out = cli.json;
    let print_json =
        |v: &Value| println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
    match cli.command {
        Command::Jobs { command } => match command {
            JobsCommand::List { prefix } => {
                let jobs = apply::server_jobs(&client).await?;
                let jobs: Vec<_> = jobs
                    .into_values()
                    .filter(|j| prefix.as_deref().is_none_or(|p| j.name.starts_with(p)))
                    .collect();
                if json_out {
                    print_json(&serde_json::to_value(&jobs)?);
                } else {
                    let mut t = Table::new(&["NAME", "SCHEDULE", "COMMAND OR IMAGE", "STATE"]);
                    for j in &jobs {
                        let what = j.image.clone().unwrap_or_else(|| j.command.clone());
                        let state = if j.paused { "paused" } else { "scheduled" };
                        t.row(vec![
                            j.name.clone(),
                            j.cron_expr.clone(),
                            what,
                            state.into(),
                        ]);
                    }
                    print!("{}", t.render());
                }
            }
            JobsCommand::Get { name } => {
                let job = client.get(&format!("/jobs/{}", segment(&name))).await?.body;
                if json_out {
                    print_json(&job);
                } else {
                    let mut t = Table::new(&["FIELD", "VALUE"]);
                    for (k, v) in job.as_object().into_iter().flatten() {
                        let v = match v {
                            Value::String(s) => s.clone(),
                            other => other.to_string(),
                        };
                        t.row(vec![k.clone(), v]);
                    }
                    print!("{}", t.render());
                }
            }
            JobsCommand::Apply {
                file,
                prune,
                dry_run,
                detailed_exitcode,
            } => {
                let wanted = apply::read_file(&file)?;
                let changes = apply::plan(&client, &wanted, prune).await?;
                let pending = changes
                    .iter()
                    .filter(|c| !matches!(c, apply::Change::Same(_)))
                    .count();
                if json_out {
                    let summary: Vec<Value> = changes
                        .iter()
                        .map(|c| {
                            let action = match c {
                                apply::Change::Create(_) => "create",
                                apply::Change::Update { .. } => "update",
                                apply::Change::Delete { .. } => "delete",
                                apply::Change::Same(_) => "unchanged",
                            };
                            json!({"name": c.name(), "action": action})
                        })
                        .collect();
                    print_json(&json!({"dryRun": dry_run, "changes": summary}));
                } else {
                    print!("{}", apply::render(&changes));
                }
                if dry_run {
                    return Ok(if detailed_exitcode && pending > 0 {
                        CHANGES
                    } else {
                        0
                    });
                }
                let done = apply::apply(&client, &changes).await?;
                if !json_out {
                    println!("applied {done} change{}", if done == 1 { "" } else { "s" });
                }
            }
            JobsCommand::Delete { name } => {
                client
                    .send(client.request(Method::DELETE, &format!("/jobs/{}", segment(&name))))
                    .await?;
                if !json_out {
                    println!("deleted {name}");
                }
            }
            JobsCommand::Run { name } => action(&client, &name, "run", json_out).await?,
            JobsCommand::Kill { name } => action(&client, &name, "kill", json_out).await?,
            JobsCommand::Pause { name } => action(&client, &name, "pause", json_out).await?,
            JobsCommand::Resume { name } => action(&client, &name, "resume", json_out).await?,
        },
        Command::Runs {
            command: RunsCommand::List { job, limit },
        } => {
            let runs = runs_of(&client, &job, limit).await?;
            if json_out {
                print_json(&Value::Array(runs));
            } else {
                let mut t =
                    Table::new(&["TICK", "STATUS", "WORKER", "DURATION", "TRIGGER", "RUN ID"]);
                for r in &runs {
                    t.row(run_row(r));
                }
                print!("{}", t.render());
            }
        }
        Command::Logs { job, last, follow } => {
            let listed_at = chrono::Utc::now().timestamp_millis();
            let mut runs = runs_of(&client, &job, last).await?;
            runs.reverse();
            let mut printed = std::collections::HashSet::new();
            for r in &runs {
                let run_id = r["runId"].as_str().unwrap_or_default();
                let full = client
                    .get(&format!("/jobs/{}/runs/{}", segment(&job), segment(run_id)))
                    .await?
                    .body;
                follow::print_run(&full, json_out);
                printed.insert(run_id.to_string());
            }
            if follow {
                follow::follow(&client, &job, json_out, printed, listed_at).await?;
            }
        }
        Command::Workers => {
            let workers = client.get("/workers").await?.body;
            if json_out {
                print_json(&workers);
            } else {
                let mut t = Table::new(&[
                    "WORKER",
                    "HOST",
                    "VERSION",
                    "RUNNING",
                    "LAST SEEN",
                    "LABELS",
                    "STATE",
                ]);
                for w in workers.as_array().into_iter().flatten() {
                    let labels = w["labels"]
                        .as_object()
                        .map(|l| {
                            l.iter()
                                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
                                .collect::<Vec<_>>()
                                .join(",")
                        })
                        .unwrap_or_default();
                    let state = if w["draining"] == true {
                        "draining"
                    } else if w["clockSkewed"] == true {
                        "clock skewed"
                    } else {
                        "ready"
                    };
                    t.row(vec![
                        w["id"].as_str().unwrap_or_default().into(),
                        w["hostname"].as_str().unwrap_or_default().into(),
                        w["version"].as_str().unwrap_or_default().into(),
                        w["running"].to_string(),
                        time(w["lastSeen"].as_i64()),
                        labels,
                        state.into(),
                    ]);
                }
                print!("{}", t.render());
            }
        }
        Command::Tokens { command } => match command {
            TokensCommand::List => {
                let tokens = client.get("/tokens").await?.body;
                if json_out {
                    print_json(&tokens);
                } else {
                    let mut t = Table::new(&["ID", "NAME", "ROLE", "CREATED", "BY"]);
                    for k in tokens.as_array().into_iter().flatten() {
                        t.row(vec![
                            k["id"].as_str().unwrap_or_default().into(),
                            k["name"].as_str().unwrap_or_default().into(),
                            k["role"].as_str().unwrap_or_default().into(),
                            time(k["createdAt"].as_i64()),
                            k["createdBy"].as_str().unwrap_or_default().into(),
                        ]);
                    }
                    print!("{}", t.render());
                }
            }
            TokensCommand::Create { name, role } => {
                let made = client
                    .send(
                        client
                            .request(Method::POST, "/tokens")
                            .json(&json!({"name": name, "role": role})),
                    )
                    .await?
                    .body;
                if json_out {
                    print_json(&made);
                } else {
                    println!(
                        "token {} ({}, {}); its value, shown only now:",
                        made["id"].as_str().unwrap_or_default(),
                        made["name"].as_str().unwrap_or_default(),
                        made["role"].as_str().unwrap_or_default()
                    );
                    println!("{}", made["token"].as_str().unwrap_or_default());
                }
            }
            TokensCommand::Revoke { id } => {
                client
                    .send(client.request(Method::DELETE, &format!("/tokens/{}", segment(&id))))
                    .await?;
                if !json_out {
                    println!("revoked {id}");
                }
            }
        },
    }
    Ok(0)
}

async fn action(client: &Client, name: &str, what: &str, json_out: bool) -> anyhow::Result<()> {
    let answer = client
        .send(client.request(Method::POST, &format!("/jobs/{}/{what}", segment(name))))
        .await?;
    if json_out {
        println!("{}", serde_json::to_string_pretty(&answer.body)?);
    } else {
        let done = match what {
            "run" => "run requested for",
            "kill" => "kill requested for",
            "pause" => "paused",
            _ => "resumed",
        };
        println!("{done} {name}");
    }
    Ok(())
}

/// A job's newest `limit` runs, newest first, read a page (of at most 500,
/// the API's largest) at a time.
async fn runs_of(client: &Client, job: &str, limit: u32) -> anyhow::Result<Vec<Value>> {
    // One size for every page, so that page numbers line up.
    let size = limit.min(500);
    let mut runs = Vec::new();
    let mut page = 1;
    while (runs.len() as u32) < limit {
        let answer = client
            .get(&format!(
                "/jobs/{}/runs?page={page}&pageSize={size}",
                segment(job)
            ))
            .await?
            .body;
        let items = answer["items"].as_array().cloned().unwrap_or_default();
        let last = (items.len() as u32) < size;
        runs.extend(items);
        if last {
            break;
        }
        page += 1;
    }
    runs.truncate(limit as usize);
    Ok(runs)
}

fn run_row(r: &Value) -> Vec<String> {
    let (start, end) = (r["startTime"].as_i64(), r["endTime"].as_i64());
    let duration = match (start, end) {
        (Some(s), Some(e)) if e >= s && s > 0 => format!("{:.3}s", (e - s) as f64 / 1000.0),
        _ => "-".into(),
    };
    vec![
        time(r["planTime"].as_i64()),
        r["status"].as_str().unwrap_or_default().into(),
        r["worker"].as_str().unwrap_or_default().into(),
        duration,
        r["trigger"].as_str().unwrap_or_default().into(),
        r["runId"].as_str().unwrap_or_default().into(),
    ]
}
