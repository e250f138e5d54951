//! `servetest`: everything that is not a test — validating and listing cases today; serving,
//! benchmarking and reporting as those parts land.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use servetest::case::discover::discover;
use servetest::env;
use servetest::report_cases::{violations_text, CaseRow};

mod cli;

/// `--version` names the features built in: a build without `perf` only validates.
const VERSION: &str = if cfg!(feature = "perf") {
    concat!(
        env!("CARGO_PKG_VERSION"),
        " (features: perf — executes cases)"
    )
} else {
    concat!(
        env!("CARGO_PKG_VERSION"),
        " (features: none — validates cases only; build with --features perf to execute)"
    )
};

#[derive(Parser)]
#[command(
    name = "servetest",
    version = VERSION,
    about = "A typed, fast test harness for LLM serving"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Validate case files; prints every violation as `file:line: key: reason`.
    Validate {
        /// Case files or directories (default: $SERVETEST_CONFIG_DIR or ./test_configs).
        paths: Vec<PathBuf>,
        /// Treat warnings as errors.
        #[arg(long)]
        deny_warnings: bool,
        /// Only print errors and the summary.
        #[arg(long, short)]
        quiet: bool,
        /// Print violations as JSON (one array) instead of text.
        #[arg(long)]
        json: bool,
        /// File-name ↔ content mismatches are errors, not warnings (also SERVETEST_STRICT_NAMES=1).
        #[arg(long)]
        strict_names: bool,
    },
    /// Start an inference server (own process group), wait until healthy, print its URL, and stop it
    /// cleanly on Ctrl-C/SIGTERM. Arguments after `--` go to the engine verbatim.
    Serve(cli::serve::Options),
    /// Run the cases harness (the same as `cargo test --test cases`; execution needs a build with
    /// `--features perf`). Arguments are the harness's: filters, --list, --test-list, …
    #[command(disable_help_flag = true)]
    Test {
        /// The harness's arguments (`servetest test -- --help` lists them).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<std::ffi::OsString>,
    },
    /// Render a case's job script (as it would be submitted) to stdout.
    Render {
        /// The case file (under test_configs/{family}/{category}/).
        case: PathBuf,
        /// Cluster profile to apply (also $SERVETEST_CLUSTER).
        #[arg(long)]
        cluster: Option<PathBuf>,
    },
    /// One role of a disaggregated job (what each job step runs): CTX_<n>, GEN_<n>, DISAGG_SERVER or
    /// BENCHMARK, from --role or $DISAGG_SERVING_TYPE.
    Role {
        /// The case file.
        #[arg(long)]
        case: PathBuf,
        /// The case's output directory (the job's files go to `job-<id>/` under it).
        #[arg(long)]
        out: PathBuf,
        /// The role to run (default: $DISAGG_SERVING_TYPE).
        #[arg(long)]
        role: Option<String>,
    },
    /// Continuous batching by hand: `cb run` drives vLLM's engine in-process like the seed's offline
    /// inference scripts (and the cb cases).
    Cb {
        #[command(subcommand)]
        what: CbCommand,
    },
    /// The job step of an `aggregated` case (seed 000): serve each model, inference checks, sweep.
    Aggregated {
        #[command(subcommand)]
        what: AggregatedCommand,
    },
    /// The job step of an `aggr` case (upstream's aggregated perf-sanity): serve a server config,
    /// run its clients.
    Aggr {
        #[command(subcommand)]
        what: AggrCommand,
    },
    /// The job step of a `latency` case: prefill/decode latency over its grid, with FLOPs and MFU.
    Latency {
        #[command(subcommand)]
        what: LatencyCommand,
    },
    /// Benchmark an OpenAI-compatible server (vLLM's metrics and output format).
    Bench(Box<cli::bench::BenchArgs>),
    /// An OpenAI-compatible simulator with a latency model (for testing clients).
    SimServer(cli::bench::SimArgs),
    /// Reports over results: `compare A B` prints metric, baseline, now, change, limit per case and
    /// concurrency (A = baseline), exit 1 on a regression.
    Report {
        #[command(subcommand)]
        what: ReportCommand,
    },
    /// Cancel SLURM jobs an earlier (killed) run left live: this user's pending/running jobs named
    /// after a discovered case.
    Cleanup {
        /// Case files or directories (default: $SERVETEST_CONFIG_DIR or ./test_configs).
        paths: Vec<PathBuf>,
        /// Only list them.
        #[arg(long)]
        dry_run: bool,
    },
    /// List discovered cases: name, family, category, model, GPUs, and why a case is ignored.
    List {
        /// Case files or directories (default: $SERVETEST_CONFIG_DIR or ./test_configs).
        paths: Vec<PathBuf>,
        /// Print the cases as JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum AggregatedCommand {
    /// Run an aggregated case (what its job step runs); results under OUT/<YYYYmmdd_HHMM>/.
    Run {
        /// The aggregated case file.
        #[arg(long)]
        case: PathBuf,
        /// Output directory (results go to a timestamped directory under it).
        #[arg(long)]
        out: PathBuf,
        /// Skip what an earlier inference_results.csv or summary.csv recorded (repeatable).
        #[arg(long)]
        resume_csv: Vec<PathBuf>,
    },
    /// Seed 000's launch.py: its flags over its own model/cluster config, case and bench-param files.
    Launch(Box<servetest::aggregated::launch::LaunchArgs>),
}

#[derive(Subcommand)]
enum AggrCommand {
    /// Run an aggr case's server configs (what its job step runs); rows in OUT/job-<id>/rows.json.
    Run {
        /// The aggr case file (upstream's aggregated perf-sanity YAML).
        #[arg(long)]
        case: PathBuf,
        /// The case's output directory.
        #[arg(long)]
        out: PathBuf,
        /// Only this server config (the trial's); default: every one, in order.
        #[arg(long)]
        server: Option<String>,
    },
}

#[derive(Subcommand)]
enum LatencyCommand {
    /// Run a latency case (what its job step runs); results in OUT/job-<id>/latency.csv.
    Run {
        /// The latency case file.
        #[arg(long)]
        case: PathBuf,
        /// The case's output directory.
        #[arg(long)]
        out: PathBuf,
    },
}

#[derive(Subcommand)]
enum CbCommand {
    /// Run prompts through the engine and print the generated text (cb_spyre_inference.py's flags).
    Run(cli::cb::CbRunArgs),
}

#[derive(Subcommand)]
enum ReportCommand {
    /// Write a run's results in the shape of TensorRT-LLM's perf_script_test_results.csv.
    ExportUpstream {
        /// results.json or servetest_results.csv of a servetest run.
        results: PathBuf,
        /// Where to write the upstream-shaped CSV.
        out: PathBuf,
    },
    /// A self-contained HTML page for a run: per case throughput vs latency, TTFT and TPOT vs
    /// concurrency (SVG charts), the numbers, and the baseline run beside them.
    Html {
        /// The run's output directory (holds results.json).
        run_dir: PathBuf,
        /// An earlier run's results.json or CSV to draw beside this one.
        #[arg(long)]
        baseline: Option<PathBuf>,
        /// Where to write the page (default RUN_DIR/report.html).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Compare two results (runs, bench saves, CSVs): metric, baseline, now, change, limit per case
    /// and concurrency; exit 1 on a regression.
    Compare {
        /// Baseline: a run directory, results.json, servetest_results.csv, a bench save or an
        /// upstream-shaped CSV.
        baseline: PathBuf,
        /// Current run, same formats.
        current: PathBuf,
        /// Gate policy (default: latencies and throughputs at 10%).
        #[arg(long)]
        policy: Option<PathBuf>,
    },
    /// The results history (every recorded run): one line per case, metric and concurrency with its
    /// change points, and an HTML page of charts over runs; `--gate` exits 1 on a recent regression.
    History {
        /// Cases to show (default: all).
        cases: Vec<String>,
        /// Only this metric (e.g. median_ttft_ms).
        #[arg(long)]
        metric: Option<String>,
        /// At most this many newest runs per series.
        #[arg(long, default_value_t = 40)]
        last: usize,
        /// The database (default: SERVETEST_DB, else $OUTPUT_PATH/../servetest.db).
        #[arg(long)]
        db: Option<String>,
        /// Where to write the page (default: history.html next to an SQLite database, else ./history.html).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Exit 1 when a series' newest level is worse than the one before it (its latest change
        /// point moved the metric the bad way); judges the default gated metrics unless --metric.
        #[arg(long)]
        gate: bool,
        /// Only a latest change point among this many newest runs counts (default: wherever it
        /// is; at least --min-size, since a change needs that many runs after it).
        #[arg(long)]
        recent: Option<usize>,
        /// Smallest relative change --gate calls a regression (0.05 = 5 %).
        #[arg(long, default_value_t = 0.0, value_parser = cli::bench::non_negative)]
        min_change: f64,
        /// Largest t-test p-value at which a change point is accepted.
        #[arg(long, default_value_t = 0.01, value_parser = cli::bench::probability)]
        max_p: f64,
        /// Fewest runs on each side of a change point.
        #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(2..))]
        min_size: u64,
    },
    /// Import earlier runs into the results history: run directories, results.json,
    /// servetest_results.csv or upstream's perf_script_test_results.csv files (one run each).
    Import {
        /// What to import.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        /// The database (default: SERVETEST_DB, else $OUTPUT_PATH/../servetest.db).
        #[arg(long)]
        db: Option<String>,
    },
}

fn default_paths(paths: Vec<PathBuf>) -> Vec<PathBuf> {
    if paths.is_empty() {
        vec![env::config_dir().unwrap_or_else(|| PathBuf::from("test_configs"))]
    } else {
        paths
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Validate {
            paths,
            deny_warnings,
            quiet,
            json,
            strict_names,
        } => {
            if strict_names {
                servetest::disagg::name::set_strict(true);
            }
            let discovery = discover(&default_paths(paths));
            let warnings = discovery.violations().filter(|v| !v.is_error()).count();
            if json {
                let all: Vec<_> = discovery.violations().collect();
                println!(
                    "{}",
                    serde_json::to_string_pretty(&all).expect("violations serialize")
                );
            } else {
                print!("{}", violations_text(&discovery, !quiet));
                if let Some(note) =
                    servetest::report_cases::loader_overwritten_note(&discovery.cases)
                {
                    if !quiet {
                        println!("{note}");
                    }
                }
            }
            if discovery.error_count() > 0 || (deny_warnings && warnings > 0) {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            }
        }
        Command::Serve(opts) => match cli::serve::run(opts) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {}", servetest::secrets::redact(&e.to_string()));
                ExitCode::from(1)
            }
        },
        Command::Test { args } => {
            let argv = std::iter::once(std::ffi::OsString::from("servetest test")).chain(args);
            servetest::harness::main_with_args(
                argv,
                std::env::current_exe().unwrap_or_else(|_| "servetest".into()),
                servetest::harness::Caller::ServetestTest,
            )
        }
        Command::Render { case, cluster } => match render_case(&case, cluster) {
            Ok(script) => {
                print!("{script}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {}", servetest::secrets::redact(&e.to_string()));
                ExitCode::from(1)
            }
        },
        Command::Role { case, out, role } => {
            match servetest::disagg::role::main(&case, &out, role.as_deref()) {
                Ok(()) => ExitCode::SUCCESS,
                Err(_) => ExitCode::from(1),
            }
        }
        Command::Aggregated {
            what:
                AggregatedCommand::Run {
                    case,
                    out,
                    resume_csv,
                },
        } => match servetest::aggregated::run(&case, &out, &resume_csv) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {}", servetest::secrets::redact(&e.to_string()));
                ExitCode::from(1)
            }
        },
        Command::Aggregated {
            what: AggregatedCommand::Launch(args),
        } => match servetest::aggregated::launch::launch(&args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {}", servetest::secrets::redact(&e.to_string()));
                ExitCode::from(1)
            }
        },
        Command::Aggr {
            what: AggrCommand::Run { case, out, server },
        } => match servetest::aggr::run(&case, &out, server.as_deref()) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {}", servetest::secrets::redact(&e.to_string()));
                ExitCode::from(1)
            }
        },
        Command::Latency {
            what: LatencyCommand::Run { case, out },
        } => match servetest::latency::run(&case, &out) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {}", servetest::secrets::redact(&e.to_string()));
                ExitCode::from(1)
            }
        },
        Command::Cb {
            what: CbCommand::Run(args),
        } => match cli::cb::run(args) {
            Ok(true) => ExitCode::SUCCESS,
            Ok(false) => ExitCode::from(2),
            Err(e) => {
                eprintln!("error: {}", servetest::secrets::redact(&e.to_string()));
                ExitCode::from(1)
            }
        },
        Command::Bench(args) => match cli::bench::run(*args) {
            Ok(true) => ExitCode::SUCCESS,
            Ok(false) => ExitCode::from(2),
            Err(e) => {
                eprintln!("error: {}", servetest::secrets::redact(&e.to_string()));
                ExitCode::from(1)
            }
        },
        Command::SimServer(args) => match cli::bench::sim_server(args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {}", servetest::secrets::redact(&e.to_string()));
                ExitCode::from(1)
            }
        },
        Command::Report {
            what:
                ReportCommand::Html {
                    run_dir,
                    baseline,
                    out,
                },
        } => match servetest::report::html::write_for_run(
            &run_dir,
            baseline.as_deref(),
            out.as_deref(),
        ) {
            Ok(path) => {
                println!("{}", path.display());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {}", servetest::secrets::redact(&e.to_string()));
                ExitCode::from(1)
            }
        },
        Command::Report {
            what:
                ReportCommand::Compare {
                    baseline,
                    current,
                    policy,
                },
        } => {
            use servetest::report::baseline::{compare, load_rows, table, Policy};
            let run = || -> Result<bool, String> {
                let policy = match policy {
                    Some(p) => Policy::load(&p)?,
                    None => Policy::default(),
                };
                let (base_rows, now_rows) = (load_rows(&baseline)?, load_rows(&current)?);
                let comparisons = compare(&base_rows, &now_rows, &policy);
                if comparisons.is_empty() {
                    return Err(format!(
                        "nothing to compare: no case and concurrency with a gated metric is in both \
                         ({} row(s) in {}, {} in {})",
                        base_rows.len(),
                        baseline.display(),
                        now_rows.len(),
                        current.display()
                    ));
                }
                print!("{}", table(&comparisons));
                Ok(comparisons.iter().any(|c| c.regressed))
            };
            match run() {
                Ok(false) => ExitCode::SUCCESS,
                Ok(true) => ExitCode::from(1),
                Err(e) => {
                    eprintln!("error: {}", servetest::secrets::redact(&e.to_string()));
                    ExitCode::from(2)
                }
            }
        }
        Command::Report {
            what:
                ReportCommand::History {
                    cases,
                    metric,
                    last,
                    db,
                    out,
                    gate,
                    recent,
                    min_change,
                    max_p,
                    min_size,
                },
        } => {
            let settings = servetest::history::changepoint::Settings {
                max_p,
                min_size: min_size as usize,
            };
            if recent.is_some_and(|r| r < min_size as usize) {
                eprintln!(
                    "error: --recent {} is below --min-size {min_size}: a change point needs \
                     --min-size runs after it, so the gate could never fire",
                    recent.unwrap_or(0)
                );
                return ExitCode::from(2);
            }
            let opts = servetest::history::report::Options {
                db,
                out,
                gate,
                recent,
                min_change,
                chosen_metric: metric.is_some(),
            };
            match servetest::history::report::run(&cases, metric.as_deref(), last, settings, &opts)
            {
                Ok(false) => ExitCode::SUCCESS,
                Ok(true) => ExitCode::from(1),
                Err(e) => {
                    eprintln!("error: {}", servetest::secrets::redact(&e));
                    ExitCode::from(2)
                }
            }
        }
        Command::Report {
            what: ReportCommand::Import { paths, db },
        } => match servetest::history::report::import(&paths, db) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {}", servetest::secrets::redact(&e));
                ExitCode::from(1)
            }
        },
        Command::Report {
            what: ReportCommand::ExportUpstream { results, out },
        } => {
            use servetest::report::{baseline::load_rows, upstream::export};
            let run = || -> Result<(), String> {
                let rows = load_rows(&results)?;
                // The cases of ./test_configs (or $SERVETEST_CONFIG_DIR) give model, precision and
                // gen servers, as the run's own file has them.
                let cases = discover(&default_paths(Vec::new())).cases;
                servetest::fsutil::write_atomic(&out, &export(&rows, &cases))
                    .map_err(|e| format!("failed to write {}: {e}", out.display()))
            };
            match run() {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: {}", servetest::secrets::redact(&e.to_string()));
                    ExitCode::from(2)
                }
            }
        }
        Command::Cleanup { paths, dry_run } => {
            let discovery = discover(&default_paths(paths));
            let names: std::collections::HashSet<String> =
                discovery.cases.iter().map(|c| c.name.clone()).collect();
            match servetest::exec::slurm::orphans(&names) {
                Err(e) => {
                    eprintln!("error: {}", servetest::secrets::redact(&e.to_string()));
                    ExitCode::from(1)
                }
                Ok(found) => {
                    for o in &found {
                        println!("{} {} {}", o.id, o.name, o.state);
                    }
                    let ids: Vec<String> = found.iter().map(|o| o.id.clone()).collect();
                    if dry_run || ids.is_empty() {
                        eprintln!("servetest: {} live job(s) named after a case", ids.len());
                        return ExitCode::SUCCESS;
                    }
                    match servetest::exec::slurm::cancel_ids(&ids) {
                        Ok(()) => {
                            eprintln!("servetest: cancelled {} job(s)", ids.len());
                            ExitCode::SUCCESS
                        }
                        Err(e) => {
                            eprintln!("error: {}", servetest::secrets::redact(&e.to_string()));
                            ExitCode::from(1)
                        }
                    }
                }
            }
        }
        Command::List { paths, json } => {
            let discovery = discover(&default_paths(paths));
            let gpu = env::gpu_type();
            let rows: Vec<CaseRow> = discovery
                .cases
                .iter()
                .map(|c| CaseRow::new(c, &gpu))
                .collect();
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&rows).expect("rows serialize")
                );
            } else {
                for r in &rows {
                    let mut line = format!(
                        "{}\t{}\t{}\t{}\t{}",
                        r.name,
                        r.family,
                        r.category,
                        r.model.unwrap_or("-"),
                        r.gpus.map_or("-".into(), |g| g.to_string())
                    );
                    if !r.valid {
                        line.push_str("\tINVALID");
                    }
                    if let Some(why) = &r.ignored {
                        line.push_str(&format!("\tignored: {why}"));
                    }
                    println!("{line}");
                }
            }
            for p in &discovery.problems {
                eprintln!("{p}");
            }
            if discovery.problems.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
    }
}

fn render_case(path: &std::path::Path, cluster: Option<PathBuf>) -> Result<String, String> {
    use servetest::plan::profile::ClusterProfile;
    use servetest::plan::render::{plan, RenderInput};
    let discovery = discover(&[path.to_path_buf()]);
    if let Some(p) = discovery.problems.first() {
        return Err(p.to_string());
    }
    let case = discovery.cases.first().ok_or("no case found")?;
    if !case.is_valid() {
        let errors: Vec<String> = case.errors().map(ToString::to_string).collect();
        return Err(errors.join("\n"));
    }
    let profile = match cluster.or_else(env::cluster) {
        Some(p) => Some(ClusterProfile::load(&p).map_err(|e| e.to_string())?),
        None => None,
    };
    let exe = std::env::current_exe().unwrap_or_else(|_| PathBuf::from("servetest"));
    let job = plan(&RenderInput {
        case,
        out_root: &env::output_path(),
        work_dir: env::work_dir().as_deref(),
        profile: profile.as_ref(),
        run_id: "render",
        servetest: &exe,
    })
    .map_err(|e| e.to_string())?;
    for o in &job.overrides {
        eprintln!("override: {o}");
    }
    Ok(job.script)
}

#[cfg(test)]
mod help_tests {
    use clap::CommandFactory;

    /// Every subcommand and every option has a help line (`--help` never shows a bare flag).
    #[test]
    fn every_subcommand_and_option_has_help() {
        fn walk(cmd: &clap::Command, path: &str, missing: &mut Vec<String>) {
            for arg in cmd.get_arguments() {
                let id = arg.get_id().as_str();
                if matches!(id, "help" | "version") || arg.is_hide_set() {
                    continue;
                }
                if arg.get_help().is_none() && arg.get_long_help().is_none() {
                    missing.push(format!("{path} --{id}"));
                }
            }
            for sub in cmd.get_subcommands() {
                let sub_path = format!("{path} {}", sub.get_name());
                if sub.get_about().is_none() && sub.get_name() != "help" {
                    missing.push(format!("{sub_path} (about)"));
                }
                walk(sub, &sub_path, missing);
            }
        }
        let mut missing = Vec::new();
        walk(&super::Cli::command(), "servetest", &mut missing);
        assert!(
            missing.is_empty(),
            "{} without help:\n{}",
            missing.len(),
            missing.join("\n")
        );
    }

    /// The README's CLI block lists every subcommand, and each of its lines parses.
    #[test]
    fn readme_lists_every_subcommand_and_each_line_parses() {
        use clap::Parser;
        let readme = include_str!("../README.md");
        let block = readme
            .split("```text\n")
            .find(|b| b.starts_with("servetest validate"))
            .expect("the CLI block")
            .split("```")
            .next()
            .unwrap();
        let mut listed = std::collections::BTreeSet::new();
        for line in block.lines().filter(|l| l.starts_with("servetest ")) {
            // The command up to its first optional part, placeholder list or description.
            let cmd: Vec<&str> = line
                .split("  ")
                .next()
                .unwrap()
                .split_whitespace()
                .take_while(|t| !t.starts_with('[') && !t.contains('…'))
                .collect();
            if let Err(e) = super::Cli::try_parse_from(&cmd) {
                panic!("README line does not parse: {line}\n{e}");
            }
            listed.insert(
                cmd[1..]
                    .iter()
                    .take_while(|t| {
                        !t.starts_with('-') && t.chars().all(|c| c.is_ascii_lowercase() || c == '-')
                    })
                    .take(2)
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(" "),
            );
        }
        let cli = super::Cli::command();
        for sub in cli.get_subcommands().filter(|s| s.get_name() != "help") {
            let nested: Vec<&clap::Command> = sub
                .get_subcommands()
                .filter(|s| s.get_name() != "help")
                .collect();
            let names: Vec<String> = if nested.is_empty() {
                vec![sub.get_name().to_owned()]
            } else {
                nested
                    .iter()
                    .map(|n| format!("{} {}", sub.get_name(), n.get_name()))
                    .collect()
            };
            for name in names {
                assert!(
                    listed
                        .iter()
                        .any(|l| l == &name || (l.starts_with(&name) && !name.contains(' '))),
                    "`servetest {name}` is not in the README's CLI block (listed: {listed:?})"
                );
            }
        }
    }
}
