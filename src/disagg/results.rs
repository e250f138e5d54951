//! A finished disagg job's verdict: BENCHMARK's status, one metric block per benchmarked
//! concurrency from the client's log, and lm-eval's scores against `metadata.accuracy`.

use std::path::Path;

use crate::case::Case;
use crate::check::accuracy;
use crate::check::logparse::{self, Block};
use crate::exec::process::log_tail;
use crate::run::{RunContext, TAIL};

use super::role::rendezvous::{Rendezvous, Status, STATUS_FILE};
use super::role::{ACCURACY_FILE, CLIENT_LOG};
use super::schema::DisaggSpec;

/// The roles' states and the concurrency levels benchmarked so far, from the job directory.
pub fn progress(job: &Path) -> Option<String> {
    let mut roles: Vec<String> = std::fs::read_dir(job)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let role = name.strip_suffix(".json")?;
            if !role
                .chars()
                .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
            {
                return None;
            }
            let doc: serde_json::Value =
                serde_json::from_slice(&std::fs::read(e.path()).ok()?).ok()?;
            Some(format!("{role} {}", doc["state"].as_str()?))
        })
        .collect();
    roles.sort();
    let done = std::fs::read_to_string(job.join(CLIENT_LOG))
        .map(|log| log.matches("Benchmark with concurrency").count())
        .unwrap_or(0);
    let mut parts = Vec::new();
    if !roles.is_empty() {
        parts.push(format!("roles: {}", roles.join(", ")));
    }
    if done > 0 {
        parts.push(format!("{done} concurrency level(s) benchmarked"));
    }
    (!parts.is_empty()).then(|| parts.join("; "))
}

/// BENCHMARK's failure, when it wrote one.
pub fn reported_failure(run: &RunContext, case: &Case, id: &str) -> Option<String> {
    match Rendezvous::for_job(&run.case_dir(case), id).status()? {
        Status::Failed(reason) => Some(format!("the benchmark failed: {reason}")),
        Status::Done => None,
    }
}

/// A completed job's metrics: one block per benchmarked concurrency, from the benchmark client's
/// log, with the case's own pattern (`benchmark.metrics`/`metadata.metrics`) or the default table;
/// accuracy scores as one more block.
pub fn collect(
    run: &RunContext,
    case: &Case,
    spec: &DisaggSpec,
    id: &str,
) -> Result<Vec<Block>, String> {
    let rdv = Rendezvous::for_job(&run.case_dir(case), id);
    if rdv.status().is_none() {
        return Err(format!(
            "{}: job {id} completed but BENCHMARK wrote no status to {}{}",
            case.name,
            rdv.dir().join(STATUS_FILE).display(),
            run.tails(case, id)
        ));
    }
    let accuracy_only = case.category == "accuracy";
    let mut blocks = if accuracy_only {
        Vec::new()
    } else {
        perf_blocks(run, case, spec, &rdv)?
    };
    if accuracy_only || spec.accuracy.enable_accuracy_test {
        blocks.push(judge_accuracy(run, case, spec, &rdv)?);
    }
    Ok(blocks)
}

/// One block per benchmarked concurrency from the client log; a missing concurrency fails.
fn perf_blocks(
    run: &RunContext,
    case: &Case,
    spec: &DisaggSpec,
    rdv: &Rendezvous,
) -> Result<Vec<Block>, String> {
    let custom = spec
        .benchmark
        .metrics
        .as_ref()
        .or(spec.metadata.metrics.as_ref());
    let log = match custom.and_then(|m| m.log_file.as_deref()) {
        Some(f) => rdv.dir().join(f),
        None => rdv.dir().join(CLIENT_LOG),
    };
    let text = std::fs::read_to_string(&log)
        .map_err(|e| format!("{}: failed to read {}: {e}", case.name, log.display()))?;
    let pattern =
        custom.and_then(|m| Some((m.extractor_pattern.as_deref()?, m.metric_names.as_deref()?)));
    let (blocks, what) = logparse::parse_with(&text, pattern)?;
    let levels = spec.benchmark.concurrency_list.levels();
    let missing: Vec<String> = levels
        .iter()
        .filter(|l| {
            !blocks
                .iter()
                .any(|b| b.concurrency == Some(**l) && !b.metrics.is_empty())
        })
        .map(u64::to_string)
        .collect();
    if !missing.is_empty() {
        return Err(format!(
            "{}: {what} found no metrics for concurrency {} in {}; last {TAIL} lines:\n{}",
            case.name,
            missing.join(", "),
            log.display(),
            log_tail(&log, TAIL)
        ));
    }
    run.note_blocks(case, &blocks);
    Ok(blocks)
}

/// lm-eval's scores (`accuracy.json`) against `metadata.accuracy.datasets`; every verdict is
/// printed, any failure fails the trial with task, filter, expected, got, threshold and samples.
fn judge_accuracy(
    run: &RunContext,
    case: &Case,
    spec: &DisaggSpec,
    rdv: &Rendezvous,
) -> Result<Block, String> {
    let path = rdv.dir().join(ACCURACY_FILE);
    let doc: serde_json::Value = std::fs::read(&path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or_else(|| format!("{}: no accuracy scores at {}", case.name, path.display()))?;
    let scores: Vec<accuracy::Score> = serde_json::from_value(doc["scores"].clone())
        .map_err(|e| format!("{}: {}: {e}", case.name, path.display()))?;
    let expected = spec
        .metadata
        .accuracy
        .as_ref()
        .map(|a| a.datasets.as_slice())
        .unwrap_or_default();
    if expected.is_empty() {
        return Err(format!(
            "{}: metadata.accuracy.datasets is empty: lm-eval ran but nothing says what to expect",
            case.name
        ));
    }
    let verdicts: Vec<accuracy::Verdict> = expected
        .iter()
        .map(|e| accuracy::judge(e, &scores))
        .collect();
    for v in &verdicts {
        run.progress()
            .line(&format!("  {}: accuracy: {v}", case.name));
    }
    let failed: Vec<String> = verdicts
        .iter()
        .filter(|v| !v.passed)
        .map(|v| v.to_string())
        .collect();
    if !failed.is_empty() {
        return Err(format!(
            "{}: accuracy below expectation:\n{}\n(scores in {})",
            case.name,
            failed.join("\n"),
            path.display()
        ));
    }
    let metrics = scores
        .iter()
        .map(|s| (format!("{}/{}/{}", s.task, s.metric, s.filter), s.value))
        .collect();
    Ok(Block {
        concurrency: None,
        metrics,
        model: None,
        variant: String::new(),
    })
}
