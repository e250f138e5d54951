//! The `cases` test target (`harness = false`): one libtest-mimic trial per case under test_configs/.
//! Thin on purpose: arguments → discover → select → trials → run. See README for the flags.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use libtest_mimic::{Arguments, Completion, Failed, Trial};

use servetest::case::discover::{discover, Discovery};
use servetest::case::select::Selector;
use servetest::case::Case;
use servetest::env;

#[derive(Parser, Debug)]
#[command(name = "cases", about = "servetest cases (libtest-compatible)")]
struct HarnessArgs {
    #[command(flatten)]
    libtest: Arguments,
    /// Run only cases whose name contains NAME (repeatable; any may match; with --exact, whole names).
    #[arg(long = "filter", value_name = "NAME")]
    filters: Vec<String>,
    /// Run only the cases named in this test list (also $SERVETEST_TEST_LIST).
    #[arg(long, value_name = "FILE")]
    test_list: Option<PathBuf>,
    /// Root of the case tree (also $SERVETEST_CONFIG_DIR; default test_configs/ of this crate).
    #[arg(long, value_name = "DIR")]
    config_dir: Option<PathBuf>,
}

fn main() -> ExitCode {
    let args = HarnessArgs::parse();
    let config_dir = args
        .config_dir
        .or_else(env::config_dir)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("test_configs"));
    let discovery = discover(&[config_dir]);
    let selector = Selector {
        filters: args.filters,
        exact: args.libtest.exact,
        test_list: args.test_list.or_else(env::test_list),
    };
    let selected = match selector.select(&discovery.cases) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(101);
        }
    };
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
    let mut cases: Vec<Option<Case>> = cases.into_iter().map(Some).collect();
    for index in selected {
        let case = cases[index].take().expect("each case is selected once");
        if !listing {
            print_warnings(&case);
        }
        // Unsupported GPU: ignored (shown, never dropped); forced runs with --include-ignored
        // still do not execute and say why.
        let ignored = case.gpu_ignore_reason(&gpu_type);
        if let (Some(why), false) = (&ignored, listing) {
            eprintln!("note: {} is ignored: {why}", case.name);
        }
        let name = case.name.clone();
        let kind = case.kind().to_owned();
        let is_ignored = ignored.is_some();
        trials.push(
            Trial::ignorable_test(name, move || run_case(case, ignored))
                .with_kind(kind)
                .with_ignored_flag(is_ignored),
        );
    }
    libtest_mimic::run(&args.libtest, trials).exit_code()
}

fn print_warnings(case: &Case) {
    for v in case.violations.iter().filter(|v| !v.is_error()) {
        eprintln!("{v}");
    }
}

/// Without the `perf` feature a trial checks the case itself: it loads, validates and its name
/// matches its content. With it, the case is also executed (execution lands with the SLURM issue).
fn run_case(case: Case, ignored: Option<String>) -> Result<Completion, Failed> {
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
    if cfg!(feature = "perf") {
        return Err(Failed::from(format!(
            "{}: execution is not implemented yet in this build (the case is valid; run without \
             --features perf to only validate)",
            case.name
        )));
    }
    Ok(Completion::Completed)
}
