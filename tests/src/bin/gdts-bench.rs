//! `gdts-bench`: runs one benchmark scenario against a deployment it starts
//! itself on loopback (see `gdts_tests::bench`), prints its figures and
//! targets, and replaces the scenario's section of `docs/benchmarks.md`.
//!
//! ```text
//! gdts-bench ticks    --jobs K --workers W --seconds S [--forbid-percent P [--forbid-run-ms MS]] [--warmup S] [--shell SHELL] [--job-user USER]
//! gdts-bench fleet    --jobs 200 --workers 1,3,6 --seconds S [--warmup S]
//! gdts-bench overload --jobs 3000 --workers 3 --seconds S [--warmup S]
//! gdts-bench jobs     --total 100000 --per-second 100 [--requests 200]
//! gdts-bench floor    --n 1000 [--releasers 1] [--locale C]
//! gdts-bench soak     --jobs 1000 --workers 3 --seconds 1800 [--sample-every 30] [--warmup S]
//! gdts-bench chaos    --jobs 200 --seconds 300
//!
//! common: --doc PATH (default docs/benchmarks.md)  --no-doc  --no-logs  --strict
//! ```
//!
//! Binaries come from `GDTS_BIN_DIR` (`make bench` sets `target/release`),
//! else from this executable's directory. Logs of each run are kept under
//! `target/bench/` unless `--no-logs`. With `--strict` a failed target makes
//! the exit status 2.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use gdts_tests::bench::{
    self, display_path, lag_csv, soak_csv, soak_flatness, JobsParams, LoadParams, LoadReport,
    RunInfo, Target,
};
use gdts_tests::workspace_root;

/// Parsed command line: the scenario, its `--key value` options and flags.
struct Args {
    scenario: String,
    options: HashMap<String, String>,
    flags: Vec<String>,
}

const FLAGS: &[&str] = &["no-doc", "no-logs", "strict"];

impl Args {
    fn parse(raw: &[String]) -> anyhow::Result<Args> {
        let mut scenario = None;
        let mut options = HashMap::new();
        let mut flags = Vec::new();
        let mut it = raw.iter();
        while let Some(arg) = it.next() {
            match arg.strip_prefix("--") {
                Some(flag) if FLAGS.contains(&flag) => flags.push(flag.to_string()),
                Some(key) => {
                    let value = it
                        .next()
                        .with_context(|| format!("--{key} needs a value"))?;
                    options.insert(key.to_string(), value.clone());
                }
                None if scenario.is_none() => scenario = Some(arg.clone()),
                None => bail!("unexpected argument {arg:?}"),
            }
        }
        Ok(Args {
            scenario: scenario.context(USAGE)?,
            options,
            flags,
        })
    }

    fn flag(&self, name: &str) -> bool {
        self.flags.iter().any(|f| f == name)
    }

    fn number<T: std::str::FromStr>(&self, key: &str, default: Option<T>) -> anyhow::Result<T> {
        match self.options.get(key) {
            Some(v) => v
                .parse()
                .map_err(|_| anyhow::anyhow!("--{key}: {v:?} is not a number")),
            None => default.with_context(|| format!("--{key} is required")),
        }
    }

    fn check_known(&self, known: &[&str]) -> anyhow::Result<()> {
        for key in self.options.keys() {
            if !known.contains(&key.as_str()) && key != "doc" {
                bail!("{}: unknown option --{key}", self.scenario);
            }
        }
        Ok(())
    }
}

const USAGE: &str = "usage: gdts-bench ticks|fleet|overload|jobs|floor|soak|chaos [options] (see the source header or docs/benchmarks.md)";

/// What one scenario produced: its section and targets.
struct Outcome {
    id: String,
    title: String,
    body: String,
    targets: Vec<Target>,
}

fn main() -> anyhow::Result<()> {
    let raw: Vec<String> = std::env::args().collect();
    let bin_dir_given = std::env::var("GDTS_BIN_DIR").ok();
    // The harness looks for the gdts binaries in GDTS_BIN_DIR; default to
    // the directory of this executable (target/<profile>). Set before any
    // thread exists.
    let bin_dir = match &bin_dir_given {
        Some(dir) => PathBuf::from(dir),
        None => std::env::current_exe()?
            .parent()
            .context("executable directory")?
            .to_path_buf(),
    };
    let bin_dir = bin_dir
        .canonicalize()
        .with_context(|| format!("GDTS_BIN_DIR {}", bin_dir.display()))?;
    std::env::set_var("GDTS_BIN_DIR", &bin_dir);

    let args = Args::parse(&raw[1..])?;
    let command = format!(
        "GDTS_BIN_DIR={} {} {}",
        bin_dir_given
            .as_deref()
            .map(shown_program)
            .unwrap_or_else(|| display_path(&bin_dir)),
        shown_program(&raw[0]),
        raw[1..].join(" ")
    );
    let doc = args
        .options
        .get("doc")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("docs/benchmarks.md"));
    let keep_logs = (!args.flag("no-logs")).then(|| workspace_root().join("target/bench"));

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let mut info = RunInfo::collect(&command);
    if args.scenario == "floor" {
        // Its shells get the locale of its --locale, said in its table.
        info.shell_locale = None;
    }
    // Plots go beside the document they illustrate; a run that writes no
    // document leaves docs/bench/ alone too.
    let plots = if args.flag("no-doc") {
        workspace_root().join("target/bench/plots")
    } else {
        doc.parent().unwrap_or(Path::new(".")).join("bench")
    };
    let outcome = runtime.block_on(run(&args, keep_logs, &plots))?;

    let mut section = format!("### {}\n\n{}\n", outcome.title, info.markdown());
    let targets = bench::targets_table(&outcome.targets);
    if !targets.is_empty() {
        section.push_str(&targets);
        section.push('\n');
    }
    section.push_str(&outcome.body);
    println!("{section}");
    let failed = outcome.targets.iter().filter(|t| !t.pass).count();
    println!(
        "{}: {} targets, {failed} failed",
        outcome.id,
        outcome.targets.len()
    );
    if !args.flag("no-doc") {
        bench::write_section(&doc, &outcome.id, &section)?;
        println!("wrote section {} of {}", outcome.id, display_path(&doc));
    }
    if failed > 0 && args.flag("strict") {
        std::process::exit(2);
    }
    Ok(())
}

/// A path as typed, relative to the workspace when it was absolute (docs
/// never name a path of the machine that ran them).
fn shown_program(arg0: &str) -> String {
    let path = Path::new(arg0);
    if path.is_absolute() {
        display_path(path)
    } else {
        arg0.to_string()
    }
}

async fn run(args: &Args, keep_logs: Option<PathBuf>, plots: &Path) -> anyhow::Result<Outcome> {
    let warmup = |args: &Args| -> anyhow::Result<Duration> {
        Ok(Duration::from_secs(
            args.number("warmup", Some(bench::DEFAULT_WARMUP.as_secs()))?,
        ))
    };
    match args.scenario.as_str() {
        "ticks" => {
            args.check_known(&[
                "jobs",
                "workers",
                "seconds",
                "forbid-percent",
                "forbid-run-ms",
                "warmup",
                "shell",
                "job-user",
            ])?;
            let mut p = LoadParams::new(
                "bench_ticks",
                args.number("jobs", None)?,
                args.number("workers", None)?,
                args.number("seconds", None)?,
            );
            p.forbid_percent = args.number("forbid-percent", Some(0))?;
            let forbid_run_ms: u64 = args.number("forbid-run-ms", Some(0))?;
            p.forbid_run = (forbid_run_ms > 0).then(|| Duration::from_millis(forbid_run_ms));
            let shell = args.options.get("shell").cloned();
            if let Some(shell) = &shell {
                p.worker_env.push(("GDTS_SHELL".into(), shell.clone()));
            }
            let job_user = args.options.get("job-user").cloned();
            if let Some(user) = &job_user {
                p.worker_env.push(("GDTS_JOB_USER".into(), user.clone()));
            }
            p.warmup = warmup(args)?;
            p.keep_logs_under = keep_logs;
            let r = bench::run_load(&p).await?;
            let mut id = format!("ticks-{}x{}", p.jobs, p.workers);
            if p.forbid_percent > 0 {
                let _ = write!(id, "-forbid{}", p.forbid_percent);
            }
            if forbid_run_ms > 0 {
                let _ = write!(id, "-run{forbid_run_ms}ms");
            }
            if let Some(shell) = &shell {
                let _ = write!(id, "-{shell}");
            }
            if let Some(user) = &job_user {
                let _ = write!(id, "-as-{user}");
            }
            let mut body = r.figures_markdown();
            body.push_str(&lag_plot(&r, &id, plots));
            Ok(Outcome {
                title: format!(
                    "Ticks: {} jobs every second on {} workers{}",
                    p.jobs,
                    p.workers,
                    if p.forbid_percent > 0 && forbid_run_ms > 0 {
                        format!(", {} % forbid running {forbid_run_ms} ms", p.forbid_percent)
                    } else if p.forbid_percent > 0 {
                        format!(", {} % forbid", p.forbid_percent)
                    } else {
                        String::new()
                    }
                ) + &shell
                    .as_ref()
                    .map(|s| format!(" (`GDTS_SHELL={s}`)"))
                    .unwrap_or_default()
                    + &job_user
                        .as_ref()
                        .map(|u| format!(" (`GDTS_JOB_USER={u}`)"))
                        .unwrap_or_default(),
                targets: r.ticks_targets(),
                id,
                body,
            })
        }
        "fleet" => {
            args.check_known(&["jobs", "workers", "seconds", "warmup"])?;
            let jobs = args.number("jobs", Some(200))?;
            let seconds = args.number("seconds", None)?;
            let workers: Vec<usize> = args
                .options
                .get("workers")
                .map(String::as_str)
                .unwrap_or("1,3,6")
                .split(',')
                .map(|w| w.trim().parse().context("--workers: a list like 1,3,6"))
                .collect::<anyhow::Result<_>>()?;
            let mut reports = Vec::new();
            for w in &workers {
                let mut p = LoadParams::new("bench_fleet", jobs, *w, seconds);
                p.warmup = warmup(args)?;
                p.keep_logs_under = keep_logs.clone();
                println!("fleet: {w} workers");
                reports.push(bench::run_load(&p).await?);
            }
            Ok(fleet_outcome(jobs, seconds, &reports, plots))
        }
        "overload" => {
            args.check_known(&["jobs", "workers", "seconds", "warmup"])?;
            let mut p = LoadParams::new(
                "bench_overload",
                args.number("jobs", Some(3000))?,
                args.number("workers", Some(3))?,
                args.number("seconds", None)?,
            );
            p.poll_api = true;
            p.warmup = warmup(args)?;
            p.keep_logs_under = keep_logs;
            let r = bench::run_load(&p).await?;
            Ok(Outcome {
                id: "overload".into(),
                title: format!(
                    "Overload: {} jobs every second on {} workers",
                    p.jobs, p.workers
                ),
                targets: r.overload_targets(),
                body: format!(
                    "Beyond what this machine can run: what matters is that workers stay \
                     registered, the API answers, and every due tick is accounted for \
                     exactly once (a run, or a `missed` record with its reason).\n\n{}",
                    r.figures_markdown()
                ),
            })
        }
        "jobs" => {
            args.check_known(&["total", "per-second", "requests"])?;
            let p = JobsParams {
                total: args.number("total", Some(100_000))?,
                per_second: args.number("per-second", Some(100))?,
                api_requests: args.number("requests", Some(200))?,
                keep_logs_under: keep_logs,
            };
            let r = bench::run_jobs(&p).await?;
            Ok(Outcome {
                id: "jobs".into(),
                title: format!(
                    "Many jobs: {} defined, {} every second",
                    p.total, p.per_second
                ),
                targets: r.targets(),
                body: r.figures_markdown(),
            })
        }
        "floor" => {
            args.check_known(&["n", "releasers", "locale"])?;
            let n = args.number("n", Some(1000))?;
            let releasers = args.number("releasers", Some(1))?;
            if releasers == 0 {
                bail!("--releasers: at least 1");
            }
            let locale = args.options.get("locale").cloned().unwrap_or("C".into());
            // A locale name goes into the section's marker and table.
            if locale.is_empty()
                || !locale
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "_.@-".contains(c))
            {
                bail!("--locale: {locale:?} is not a locale name (letters, digits, _ . @ -)");
            }
            let r = tokio::task::spawn_blocking(move || bench::run_floor(n, releasers, &locale))
                .await??;
            // Named by the threads it released from (at most one a process).
            let shape = format!("floor-{n}x{}", r.releasers);
            let (id, by) = match (n, r.releasers, r.locale.as_str()) {
                (1000, 1, "C") => ("floor".to_string(), String::new()),
                (_, threads, "C") => (shape, format!(" from {threads} threads")),
                (_, threads, locale) => (
                    format!("{shape}-{locale}"),
                    format!(" from {threads} threads, LC_ALL={locale}"),
                ),
            };
            Ok(Outcome {
                id,
                title: format!("Floor: releasing {n} waiting processes at once{by}"),
                targets: Vec::new(),
                body: format!(
                    "No scheduler fires a command sooner than this machine can wake a \
                     process that is already started and waiting: the lag below is the \
                     floor under the command-clock figures of the other sections.\n\n{}",
                    r.figures_markdown()
                ),
            })
        }
        "soak" => {
            args.check_known(&["jobs", "workers", "seconds", "sample-every", "warmup"])?;
            let mut p = LoadParams::new(
                "bench_soak",
                args.number("jobs", Some(1000))?,
                args.number("workers", Some(3))?,
                args.number("seconds", Some(1800))?,
            );
            p.sample_every = Some(Duration::from_secs(args.number("sample-every", Some(30))?));
            p.warmup = warmup(args)?;
            p.keep_logs_under = keep_logs;
            let r = bench::run_load(&p).await?;
            Ok(soak_outcome(&r, plots))
        }
        "chaos" => {
            args.check_known(&["jobs", "seconds"])?;
            let mut p = gdts_tests::chaos::ChaosParams::full();
            p.jobs = args.number("jobs", Some(p.jobs))?;
            p.duration = Duration::from_secs(args.number("seconds", Some(300))?);
            p.keep_under = keep_logs;
            let r = gdts_tests::chaos::run_chaos(&p).await?;
            Ok(Outcome {
                id: "chaos".into(),
                title: "Chaos: faults under load".into(),
                targets: r.targets(),
                body: format!(
                    "Each tick must run at most once; a tick may go without a record \
                     only inside the documented window of a fault (README, \"Failure \
                     windows\"); every claim must end with a record (`lost` for the \
                     runs of a killed worker).\n\n{}",
                    r.markdown()
                ),
            })
        }
        other => bail!("unknown scenario {other:?}\n{USAGE}"),
    }
}

/// Writes `name.csv` and plots `name.png` under `plots`; the Markdown image
/// line when the plot was made.
fn plot_csv(plots: &Path, name: &str, kind: &str, csv: &str, title: &str) -> String {
    if std::fs::create_dir_all(plots).is_err() {
        return String::new();
    }
    let csv_path = plots.join(format!("{name}.csv"));
    let png_path = plots.join(format!("{name}.png"));
    if std::fs::write(&csv_path, csv).is_err() {
        return String::new();
    }
    if bench::plot(kind, &csv_path, &png_path, title) {
        format!("\n![{title}](bench/{name}.png)\n")
    } else {
        String::new()
    }
}

fn lag_plot(r: &LoadReport, id: &str, plots: &Path) -> String {
    if r.lag_records_sorted.is_empty() && r.lag_clock_sorted.is_empty() {
        return String::new();
    }
    plot_csv(
        plots,
        &format!("{id}-lag"),
        "lag",
        &lag_csv(&r.lag_records_sorted, &r.lag_clock_sorted),
        &format!(
            "Start lag, {} jobs every second, {} workers",
            r.params.jobs, r.params.workers
        ),
    )
}

fn fleet_outcome(jobs: usize, seconds: u64, reports: &[LoadReport], plots: &Path) -> Outcome {
    let base = reports.first().map(LoadReport::requests_per_tick);
    let mut table = String::from(
        "| workers | etcd requests/tick | ratio to the first | revisions/tick | WAL bytes/tick | etcd CPU µs/tick | runs/s | duplicates | missed | lag p99 records / clock (ms) |\n|---|---|---|---|---|---|---|---|---|---|\n",
    );
    let mut csv = String::from("workers,requests_per_tick,ratio,revisions_per_tick\n");
    let mut targets = Vec::new();
    for r in reports {
        let rpt = r.requests_per_tick();
        let ratio = base.filter(|b| *b > 0.0).map(|b| rpt / b).unwrap_or(0.0);
        let ticks = r.tick_count();
        let p99 = |d: &Option<bench::Dist>| {
            d.map(|d| format!("{:.1}", d.p99))
                .unwrap_or_else(|| "-".into())
        };
        let _ = writeln!(
            table,
            "| {} | {rpt:.2} | {ratio:.2} | {:.3} | {:.0} | {:.1} | {:.1} | {} | {} | {} / {} |",
            r.params.workers,
            r.etcd.revisions / ticks,
            r.etcd.wal_bytes / ticks,
            r.etcd.cpu_seconds / ticks * 1e6,
            r.runs_per_second(),
            r.ticks.duplicated,
            r.ticks.missed_ticks(),
            p99(&r.lag_records),
            p99(&r.lag_clock)
        );
        let _ = writeln!(
            csv,
            "{},{rpt:.4},{ratio:.4},{:.4}",
            r.params.workers,
            r.etcd.revisions / ticks
        );
        if !std::ptr::eq(r, &reports[0]) {
            targets.push(Target {
                what: format!(
                    "{} workers: etcd requests/tick within 1.5× of {} {}",
                    r.params.workers,
                    reports[0].params.workers,
                    if reports[0].params.workers == 1 {
                        "worker"
                    } else {
                        "workers"
                    }
                ),
                measured: format!("{ratio:.2}×"),
                pass: ratio <= 1.5,
            });
        }
        targets.push(Target {
            what: format!("{} workers: 0 duplicates, 0 missed", r.params.workers),
            measured: format!("{} / {}", r.ticks.duplicated, r.ticks.missed_ticks()),
            pass: r.ticks.duplicated == 0 && r.ticks.missed_ticks() == 0,
        });
    }
    let chart = plot_csv(
        plots,
        "fleet",
        "fleet",
        &csv,
        &format!("etcd requests per tick, {jobs} jobs every second"),
    );
    let logs: Vec<String> = reports
        .iter()
        .filter_map(|r| r.log_dir.as_deref().map(display_path))
        .map(|d| format!("`{d}`"))
        .collect();
    let mut body = format!(
        "{jobs} jobs every second, {seconds} s windows. etcd work per tick should not \
         grow with the fleet.\n\n{table}{chart}"
    );
    if !logs.is_empty() {
        let _ = writeln!(body, "\nLogs: {}", logs.join(", "));
    }
    Outcome {
        id: "fleet".into(),
        title: format!("Fleet: {jobs} jobs, etcd work as workers are added"),
        body,
        targets,
    }
}

fn soak_outcome(r: &LoadReport, plots: &Path) -> Outcome {
    let mut targets = vec![
        Target {
            what: "duplicate ticks = 0".into(),
            measured: r.ticks.duplicated.to_string(),
            pass: r.ticks.duplicated == 0,
        },
        Target {
            what: "missed ticks = 0".into(),
            measured: r.ticks.missed_ticks().to_string(),
            pass: r.ticks.missed_ticks() == 0,
        },
    ];
    let flat = soak_flatness(&r.soak);
    let mut table = String::from(
        "| series | middle third avg | last third avg | change | |\n|---|---|---|---|---|\n",
    );
    for f in &flat {
        let scale = if f.series.starts_with("RSS") {
            1.0 / 1024.0
        } else {
            1.0 / 1048576.0
        };
        let _ = writeln!(
            table,
            "| {} | {:.1} MiB | {:.1} MiB | {:+.1} % | {} |",
            f.series,
            f.middle * scale,
            f.last * scale,
            f.change() * 100.0,
            if f.flat { "flat" } else { "**grows**" }
        );
        targets.push(Target {
            what: format!(
                "{} flat after warm-up (last third within 10 % of the middle)",
                f.series
            ),
            measured: format!("{:+.1} %", f.change() * 100.0),
            pass: f.flat,
        });
    }
    let chart = plot_csv(
        plots,
        "soak",
        "soak",
        &soak_csv(&r.soak),
        &format!(
            "Soak: {} jobs every second, {} workers, {} s",
            r.params.jobs, r.params.workers, r.params.seconds
        ),
    );
    let lag = lag_plot(r, "soak", plots);
    Outcome {
        id: "soak".into(),
        title: format!(
            "Soak: {} jobs every second on {} workers for {} s",
            r.params.jobs, r.params.workers, r.params.seconds
        ),
        body: format!(
            "Sampled every {} s: RSS of every process, etcd's db size, in-use size and \
             revision.\n\n{table}{chart}\n{}{lag}",
            r.params.sample_every.map(|d| d.as_secs()).unwrap_or(0),
            r.figures_markdown()
        ),
        targets,
    }
}
