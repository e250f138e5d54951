//! The `cases` test harness (libtest-mimic), shared by `harness/main.rs` and `servetest test`:
//! arguments → discover → select → trials → run. With the `perf` feature, trials execute their
//! case through a `RunContext` (SLURM or local); without it they validate and name-check it.

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;
use libtest_mimic::{Arguments, Completion, Failed, Trial};

use crate::case::discover::{discover, Discovery};
use crate::case::select::Selector;
use crate::case::Case;
use crate::env;
use crate::plan::batch::BatchManager;
use crate::plan::profile::ClusterProfile;
use crate::report::baseline::Policy;
use crate::report::junit::{JunitCollector, Outcome, TrialRecord};
use crate::run::{Baseline, RunContext, RunOptions};

#[derive(Parser, Debug)]
#[command(name = "cases", about = "servetest cases (libtest-compatible)")]
struct HarnessArgs {
    #[command(flatten)]
    libtest: Arguments,
    /// Run only cases whose name contains NAME (repeatable; any may match; with --exact, whole names).
    #[arg(long = "filter", value_name = "NAME")]
    filters: Vec<String>,
    /// Run only the cases named in this test list (also $SERVETEST_TEST_LIST; upstream's
    /// `--disagg-test-list` works too).
    #[arg(long, value_name = "FILE", alias = "disagg-test-list")]
    test_list: Option<PathBuf>,
    /// Select by category like pytest's `-m` markers: `perf`, `accuracy`, `stress`, `perf-sanity`
    /// (`cb`, `steps`, … for other families), `A or B`, `not A`.
    #[arg(short = 'm', long = "marker", value_name = "EXPR")]
    marker: Option<String>,
    /// Root of the case tree (also $SERVETEST_CONFIG_DIR; default test_configs/ of this crate).
    #[arg(long, value_name = "DIR")]
    config_dir: Option<PathBuf>,
    /// Cases per submitted batch; 0 = all at once (also $DISAGG_BATCH_SIZE; default 5).
    #[arg(long, value_name = "N")]
    disagg_batch_size: Option<usize>,
    /// Cluster profile to apply when rendering jobs (also $SERVETEST_CLUSTER).
    #[arg(long, value_name = "FILE")]
    cluster: Option<PathBuf>,
    /// Gate metrics against an earlier run's results.json or CSV (also $SERVETEST_BASELINE).
    #[arg(long, value_name = "FILE")]
    baseline: Option<PathBuf>,
    /// Which metrics the gate checks, with direction and tolerance (default: latencies and
    /// throughputs at 10%; also $SERVETEST_BASELINE_POLICY).
    #[arg(long, value_name = "FILE")]
    baseline_policy: Option<PathBuf>,
    /// Continue the run in $OUTPUT_PATH: cases whose results are complete there are not run again
    /// (also SERVETEST_RESUME=1).
    #[arg(long)]
    resume: bool,
    /// Do not record this run in the results history (also SERVETEST_DB=off).
    #[arg(long)]
    no_history: bool,
    /// Write JUnit XML here (default when executing: $OUTPUT_PATH/junit.xml).
    #[arg(long, value_name = "FILE")]
    junit: Option<PathBuf>,
    /// What a run that selects no case does: fail (default, with the closest names), pass or warn
    /// (cargo-nextest's spelling).
    #[arg(long, value_name = "WHAT", default_value = "fail")]
    no_tests: NoTests,
    /// File-name ↔ content mismatches are errors, not warnings (also SERVETEST_STRICT_NAMES=1).
    #[arg(long)]
    strict_names: bool,
    /// Stop at the first failing case (pytest's `-x`): submit nothing more, cancel running jobs,
    /// and report the cases that did not finish as not run (ignored, with the reason).
    #[arg(short = 'x', long = "exitfirst", alias = "fail-fast")]
    exit_first: bool,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum NoTests {
    Fail,
    Pass,
    Warn,
}

/// How the harness was started: the `cases` test target validates without the `perf` feature by
/// design; `servetest test` is asked to execute, so a build that cannot is an error there.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Caller {
    CargoTest,
    ServetestTest,
}

const EXECUTE: bool = cfg!(feature = "perf");

/// The servetest binary job steps call (`servetest role`, `servetest bench`).
static SERVETEST_BIN: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();

/// `servetest`: the binary job steps run. The `cases` test target passes cargo's build of it; the
/// `servetest test` subcommand passes itself.
pub fn main_with_args(
    args: impl IntoIterator<Item = OsString>,
    servetest: PathBuf,
    caller: Caller,
) -> ExitCode {
    let _ = SERVETEST_BIN.set(servetest);
    let args = HarnessArgs::parse_from(args);
    match run(args, caller) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(101)
        }
    }
}

fn run(args: HarnessArgs, caller: Caller) -> Result<ExitCode, String> {
    if args.strict_names {
        crate::disagg::name::set_strict(true);
    }
    if let Some(m) = &args.marker {
        check_marker(m)?;
    }
    let config_dir = config_root(args.config_dir.clone())?;
    let discovery = discover(&[config_dir]);
    let selector = Selector {
        filters: args.filters.clone(),
        exact: args.libtest.exact,
        test_list: args.test_list.clone().or_else(env::test_list),
    };
    let selected = selector
        .select(&discovery.cases)
        .map_err(|e| e.to_string())?;
    let listing = args.libtest.list;
    let gpu_type = env::gpu_type();
    let Discovery { cases, problems } = discovery;
    let mut trials = Vec::with_capacity(selected.len() + 1);
    if !problems.is_empty() {
        // A misplaced or duplicate file is an error of the tree, reported as its own failing trial.
        let text: Vec<String> = problems.iter().map(ToString::to_string).collect();
        trials.push(
            Trial::test("test_configs_layout", move || {
                Err(Failed::from(text.join("\n")))
            })
            .with_kind("layout"),
        );
    }
    let problems_trial = trials.len();
    let all_names: Vec<String> = cases.iter().map(|c| c.name.clone()).collect();
    let cases: Vec<Arc<Case>> = cases.into_iter().map(Arc::new).collect();
    let chosen: Vec<Arc<Case>> = selected
        .iter()
        .map(|&i| cases[i].clone())
        .filter(|c| {
            args.marker
                .as_deref()
                .is_none_or(|m| marker_matches(m, &c.category))
        })
        .collect();
    // Only cases that will really run are batched: valid, and supported on this GPU type.
    // libtest's own filters (positional, --exact, --skip, --ignored) are applied here too, so that a
    // filtered-out case is never submitted as part of a batch.
    // cb cases drive the engine in-process from their trial: no job, no batch.
    let runnable: Vec<Arc<Case>> = chosen
        .iter()
        .filter(|c| c.family.in_process.is_none())
        .filter(|c| c.is_valid() && c.gpu_ignore_reason(&gpu_type).is_none())
        .filter(|c| {
            let probe = probe(c, false);
            !args.libtest.is_filtered_out(&probe) && !args.libtest.is_ignored(&probe)
        })
        .cloned()
        .collect();
    if !EXECUTE && !listing && !runnable.is_empty() {
        // Not an error (plain `cargo test` is the validation run), but never a silent "ok".
        eprintln!(
            "note: this build has no `perf` feature: the {} selected case(s) are validated and rendered, \
             not executed (cargo test --features perf executes them)",
            runnable.len()
        );
    }
    let context = if EXECUTE && !listing && !runnable.is_empty() {
        let baseline = load_baseline(args.baseline.clone(), args.baseline_policy.clone())?;
        let resume = args.resume || env::resume();
        Some(Arc::new(execution_context(
            &runnable,
            args.disagg_batch_size,
            args.cluster.clone(),
            baseline,
            resume,
            (!args.no_history).then(crate::history::location).flatten(),
        )?))
    } else {
        None
    };
    if let Some(ctx) = &context {
        install_signal_handler(ctx.clone());
    }
    let junit_path = args.junit.clone().or_else(|| {
        context
            .as_ref()
            .map(|_| env::output_path().join("junit.xml"))
    });
    let junit = Arc::new(JunitCollector::default());
    // In-process families (cb) need their engine here; without it their trials are ignored with
    // the reason (the install command), asked once per family.
    let mut unavailable: std::collections::HashMap<&str, Option<String>> = Default::default();
    for c in &chosen {
        if let Some(p) = &c.family.in_process {
            unavailable
                .entry(c.family.name)
                .or_insert_with(p.unavailable);
        }
    }
    if !listing {
        let selected = chosen.iter().map(|c| &**c).filter(|c| {
            let ignored = c.gpu_ignore_reason(&gpu_type).is_some();
            !args.libtest.is_filtered_out(&probe(c, ignored))
        });
        if let Some(note) = crate::report_cases::loader_overwritten_note(selected) {
            eprintln!("{note}");
        }
    }
    let (mut will_run, mut validated_only) = (0usize, 0usize);
    let stopped = Arc::new(std::sync::atomic::AtomicBool::new(false));
    // Notes and warnings only about the cases this run selected (libtest's own filters included);
    // the rest are counted in one line.
    let mut quiet_about = 0usize;
    for case in chosen {
        // Unsupported GPU: ignored (shown, never dropped); forced runs with --include-ignored
        // still do not execute and say why.
        let ignored = if case.family.in_process.is_some() {
            unavailable.get(case.family.name).cloned().flatten()
        } else {
            case.gpu_ignore_reason(&gpu_type)
        };
        let selected = !args
            .libtest
            .is_filtered_out(&probe(&case, ignored.is_some()));
        if !listing && selected {
            for v in case.violations.iter().filter(|v| !v.is_error()) {
                eprintln!("{v}");
            }
            if let Some(why) = &ignored {
                eprintln!("note: {} is ignored: {why}", case.name);
            }
        } else if !listing {
            quiet_about += 1;
        }
        let name = case.name.clone();
        let kind = case.kind().to_owned();
        let is_ignored = ignored.is_some();
        let ctx = context.clone();
        // Perf-sanity cases keep upstream's pytest id in the JUnit report (PERF_TEST_*).
        let (classname, junit_name) = case
            .spec
            .as_deref()
            .and_then(|s| s.report_id(&case))
            .unwrap_or_else(|| {
                (
                    format!("{}.{}", case.family.name, case.category),
                    name.clone(),
                )
            });
        let trial = probe(&case, is_ignored);
        let runs = !listing && !args.libtest.is_filtered_out(&trial);
        if !args.libtest.is_filtered_out(&trial) {
            will_run += 1;
            if !is_ignored && case.family.in_process.is_none() && !EXECUTE {
                validated_only += 1;
            }
        }
        if runs && args.libtest.is_ignored(&trial) {
            // libtest will not call the runner: the report still says why it was skipped.
            junit.record(TrialRecord {
                name: junit_name.clone(),
                classname: classname.clone(),
                outcome: Outcome::Skipped(ignored.clone().unwrap_or_default()),
                time: Default::default(),
            });
        }
        let junit = junit.clone();
        let stopped = stopped.clone();
        let exit_first = args.exit_first;
        trials.push(
            Trial::ignorable_test(name.clone(), move || {
                use std::sync::atomic::Ordering;
                let started = std::time::Instant::now();
                let result = if exit_first && stopped.load(Ordering::SeqCst) {
                    Ok(Completion::ignored_with(
                        "not run: stopped after the first failure (-x)",
                    ))
                } else {
                    run_case(&case, ignored, ctx.as_deref())
                };
                let result = match result {
                    // Another case failed first and cancelled this one's job: not run, not failed.
                    Err(e)
                        if exit_first
                            && stopped.load(Ordering::SeqCst)
                            && e.message().is_some_and(|m| m.contains("CANCELLED")) =>
                    {
                        Ok(Completion::ignored_with(
                            "not run: cancelled after the first failure (-x)",
                        ))
                    }
                    Err(e) if exit_first => {
                        stopped.store(true, Ordering::SeqCst);
                        if let Some(ctx) = &ctx {
                            let n = ctx.cancel_all();
                            ctx.progress().line(&format!(
                                "servetest: -x: {name} failed; cancelled {n} job(s), submitting nothing more"
                            ));
                        }
                        Err(e)
                    }
                    other => other,
                };
                if !EXECUTE && case.family.in_process.is_none() && result.is_ok() {
                    eprintln!("{name}: validated, not executed (build with --features perf)");
                }
                let outcome = match &result {
                    Ok(Completion::Completed) => Outcome::Passed,
                    Ok(Completion::Ignored { reason }) => {
                        Outcome::Skipped(reason.clone().unwrap_or_default())
                    }
                    Err(f) => Outcome::Failed(f.message().unwrap_or("failed").to_owned()),
                };
                junit.record(TrialRecord {
                    name: junit_name,
                    classname,
                    outcome,
                    time: started.elapsed(),
                });
                result
            })
            .with_kind(kind)
            .with_ignored_flag(is_ignored),
        );
    }
    if quiet_about > 0 {
        eprintln!(
            "servetest: {quiet_about} case(s) not selected by the filters (no notes about them)"
        );
    }
    // The layout trial counts only when the filters keep it.
    let layout_runs = problems_trial > 0
        && !args
            .libtest
            .is_filtered_out(&Trial::test("test_configs_layout", || Ok(())).with_kind("layout"));
    if !listing && will_run == 0 && !layout_runs {
        let message = nothing_selected(&args, &all_names);
        match args.no_tests {
            NoTests::Fail => return Err(format!("{message} (--no-tests=pass accepts this)")),
            NoTests::Warn => eprintln!("warning: {message}"),
            NoTests::Pass => {}
        }
    }
    // After the selection check, so a typo still gets the closest names from any build.
    if caller == Caller::ServetestTest && !EXECUTE && !listing && validated_only > 0 {
        return Err(
            "this servetest was built without the `perf` feature: it can validate cases \
             (`servetest validate`, `servetest test --list`) but not execute them; \
             build with `cargo build --features perf` (`servetest --version` names the features)"
                .into(),
        );
    }
    let conclusion = libtest_mimic::run(&args.libtest, trials);
    if !EXECUTE && !listing && validated_only > 0 {
        eprintln!(
            "servetest: {validated_only} case(s) validated, not executed: build with --features perf to run them"
        );
    }
    if let (Some(path), false) = (&junit_path, listing) {
        match junit.write(path, "cases") {
            Ok(()) => eprintln!("servetest: JUnit report {}", path.display()),
            Err(e) => eprintln!("servetest: failed to write {}: {e}", path.display()),
        }
    }
    if let Some(ctx) = &context {
        ctx.flush_results();
        if !listing {
            if let Some(path) = ctx.write_history_page() {
                eprintln!("servetest: history page {}", path.display());
            }
            match ctx.write_html() {
                Ok(path) => eprintln!("servetest: HTML report {}", path.display()),
                // No results yet (every trial resumed or filtered): nothing to draw.
                Err(e) => eprintln!("servetest: no HTML report: {e}"),
            }
        }
        let left = ctx.cancel_all();
        crate::secrets::remove_private_files();
        if left > 0 {
            ctx.progress().line(&format!(
                "servetest: cancelled {left} job(s) no trial waited for"
            ));
        }
        ctx.progress().line(&ctx.summary());
    }
    Ok(conclusion.exit_code())
}

/// The case tree: --config-dir, $SERVETEST_CONFIG_DIR, or ./test_configs of the directory the user
/// stands in (never the build tree's, which may be another checkout).
fn config_root(cli: Option<PathBuf>) -> Result<PathBuf, String> {
    if let Some(dir) = cli.or_else(env::config_dir) {
        return Ok(dir);
    }
    let here = PathBuf::from("test_configs");
    if here.is_dir() {
        return Ok(here);
    }
    let cwd = std::env::current_dir().map_or_else(|_| ".".into(), |d| d.display().to_string());
    Err(format!(
        "no test_configs/ in {cwd}: run from the directory that holds your cases, or pass \
         --config-dir DIR (or SERVETEST_CONFIG_DIR)"
    ))
}

/// Only `A`, `A or B …` and `not A` are understood; anything else is an error, not an empty
/// selection.
fn check_marker(expr: &str) -> Result<(), String> {
    let bad = expr.contains(" and ")
        || expr.contains('(')
        || expr.contains(')')
        || expr
            .split(" or ")
            .any(|t| t.trim().is_empty() || t.split_whitespace().count() > 2);
    if bad {
        return Err(format!(
            "-m `{expr}`: only a category, `A or B`, or `not A` is supported (categories: perf, \
             accuracy, stress, perf-sanity, steps, output)"
        ));
    }
    Ok(())
}

/// pytest-style marker expression over a case's category: `perf`, `perf or accuracy`, `not stress`.
fn marker_matches(expr: &str, category: &str) -> bool {
    // (Expressions are checked by `check_marker` before selection.)
    expr.split(" or ").any(|term| {
        let term = term.trim();
        match term.strip_prefix("not ") {
            Some(neg) => neg.trim() != category,
            None => term == category,
        }
    })
}

/// The error for a selection that matched no case, with the closest names to what was asked.
fn nothing_selected(args: &HarnessArgs, names: &[String]) -> String {
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let mut asked: Vec<String> = args.filters.clone();
    asked.extend(args.libtest.filter.clone());
    let mut lines = vec![format!(
        "the selection runs no case ({} discovered)",
        names.len()
    )];
    for query in &asked {
        let near = crate::case::select::closest(query, &names, 3);
        if !near.is_empty() {
            lines.push(format!(
                "  `{query}`: closest: {}",
                near.iter()
                    .map(|n| format!("`{n}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
    }
    if !args.libtest.skip.is_empty() {
        lines.push(format!("  --skip {}", args.libtest.skip.join(" --skip ")));
    }
    if let Some(m) = &args.marker {
        lines.push(format!("  -m `{m}` (it matches case categories: perf, accuracy, stress, perf-sanity, steps, output)"));
    }
    lines.join("\n")
}

/// A stand-in trial with `case`'s name and kind, to ask libtest's own filters about it.
fn probe(case: &Case, ignored: bool) -> Trial {
    Trial::test(case.name.clone(), || Ok(()))
        .with_kind(case.kind().to_owned())
        .with_ignored_flag(ignored)
}

fn load_baseline(
    cli: Option<PathBuf>,
    cli_policy: Option<PathBuf>,
) -> Result<Option<Baseline>, String> {
    let Some(path) = cli.or_else(env::baseline) else {
        return Ok(None);
    };
    let policy = match cli_policy.or_else(env::baseline_policy) {
        Some(p) => Policy::load(&p)?,
        None => Policy::default(),
    };
    let rows = crate::report::baseline::load_rows(&path)?;
    Ok(Some(Baseline { path, rows, policy }))
}

fn execution_context(
    runnable: &[Arc<Case>],
    cli_batch: Option<usize>,
    cli_cluster: Option<PathBuf>,
    baseline: Option<Baseline>,
    resume: bool,
    history: Option<String>,
) -> Result<RunContext, String> {
    let profile = match cli_cluster.or_else(env::cluster) {
        Some(path) => Some(ClusterProfile::load(&path).map_err(|e| e.to_string())?),
        None => None,
    };
    let poll = env::poll_interval()?;
    let executor = crate::exec::from_env(poll)?;
    let servetest = SERVETEST_BIN
        .get()
        .cloned()
        .unwrap_or_else(|| PathBuf::from("servetest"));
    // Jobs a killed earlier run left behind compete with this run: say so (never cancel silently).
    if executor.name() == "slurm" {
        let names: std::collections::HashSet<String> =
            runnable.iter().map(|c| c.name.clone()).collect();
        if let Ok(found) = crate::exec::slurm::orphans(&names) {
            if !found.is_empty() {
                let list: Vec<String> = found
                    .iter()
                    .map(|o| format!("{} {} ({})", o.id, o.name, o.state))
                    .collect();
                eprintln!(
                    "servetest: {} job(s) of an earlier run are still live: {}; `servetest cleanup` cancels them",
                    found.len(),
                    list.join(", ")
                );
            }
        }
    }
    RunContext::new(
        runnable,
        RunOptions {
            batch_size: BatchManager::resolve_size(cli_batch, env::batch_size()?),
            profile,
            executor,
            wait_timeout: env::wait_timeout()?,
            debug_job: env::debug_job()?,
            out_root: env::output_path(),
            work_dir: env::work_dir(),
            heartbeat: env::heartbeat()?,
            servetest,
            baseline,
            resume,
            history,
        },
    )
}

/// SIGINT/SIGTERM: cancel every job this run submitted (scancel; local process groups are killed
/// and waited for), say so, and exit. Results already written stay on disk.
fn install_signal_handler(ctx: Arc<RunContext>) {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let mut signals = match signal_hook::iterator::Signals::new([SIGINT, SIGTERM]) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("servetest: cannot handle signals ({e}); Ctrl-C may leave jobs running");
            return;
        }
    };
    std::thread::spawn(move || {
        if let Some(sig) = signals.forever().next() {
            let name = if sig == SIGINT { "SIGINT" } else { "SIGTERM" };
            ctx.progress()
                .line(&format!("servetest: {name}: cancelling this run's jobs"));
            let n = ctx.cancel_all();
            ctx.flush_results();
            ctx.progress().line(&format!(
                "servetest: cancelled {n} job(s); results written so far are kept"
            ));
            crate::fsutil::remove_temporary_files();
            crate::secrets::remove_private_files();
            std::process::exit(128 + sig);
        }
    });
}

/// Without the `perf` feature a trial checks the case itself: it loads, validates and its name
/// matches its content. With it, the case's job is also run and judged.
fn run_case(
    case: &Case,
    ignored: Option<String>,
    ctx: Option<&RunContext>,
) -> Result<Completion, Failed> {
    if let Some(why) = ignored {
        return Ok(Completion::ignored_with(why));
    }
    let errors: Vec<String> = case.errors().map(ToString::to_string).collect();
    if !errors.is_empty() {
        return Err(Failed::from(format!(
            "{} violation(s):\n{}",
            errors.len(),
            errors.join("\n")
        )));
    }
    if let Some(in_process) = &case.family.in_process {
        let result = (in_process.run)(case);
        crate::history::record_in_process(case, &result);
        let note = result.map_err(Failed::from)?;
        eprintln!("{}: {note}", case.name);
        return Ok(Completion::Completed);
    }
    if let Some(ctx) = ctx {
        // Errors quote logs and scripts: masked values never reach the terminal, JUnit or the run log.
        ctx.run_trial(case).map_err(|e| {
            ctx.record_failure(case, &e);
            Failed::from(crate::secrets::redact(&e))
        })?;
    }
    Ok(Completion::Completed)
}

#[cfg(test)]
mod tests {
    use super::marker_matches;

    #[test]
    fn markers_select_categories_like_pytest_m() {
        assert!(marker_matches("perf", "perf"));
        assert!(!marker_matches("perf", "accuracy"));
        assert!(marker_matches("perf or accuracy", "accuracy"));
        assert!(marker_matches("not stress", "perf"));
        assert!(!marker_matches("not stress", "stress"));
    }
}
