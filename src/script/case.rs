//! The script family's schema and rules:
//!
//! ```yaml
//! metadata: {description: "…", supported_gpus: [GB200]}   # both optional
//! slurm: {partition: p, account: a, job_time: "00:05:00", extra_args: "--exclusive", nodes: 2}
//! environment: {FOO: bar}
//! steps:
//!   - name: bench
//!     run: "python bench.py --n 3"          # bash -c; or `argv: [python, bench.py]`
//!     ntasks: 1
//!     node: 1        # first node of the allocation this step runs on (0-based; default 0)
//!     nodes: 1       # how many nodes from there (default 1)
//! ```

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::case::common::{parse_slurm_time, ScriptSlurm, NAME_RE};
use crate::case::load::parse_spec;
use crate::case::violation::Violation;
use crate::family::Loaded;

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct ScriptSpec {
    #[serde(default)]
    pub metadata: ScriptMetadata,
    pub slurm: ScriptSlurm,
    #[serde(default)]
    pub environment: BTreeMap<String, String>,
    pub steps: Vec<Step>,
    /// Metrics to read from a step's log once the job completed (missing ones fail the trial).
    #[serde(default)]
    pub metrics: Option<ScriptMetrics>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct ScriptMetrics {
    /// The step whose log holds the benchmark output.
    pub step: String,
    /// Default: the summary lines of vLLM/TRT-LLM/servetest benchmarks (see check::logparse).
    #[serde(default)]
    pub extractor_pattern: Option<String>,
    #[serde(default)]
    pub metric_names: Option<Vec<String>>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub struct ScriptMetadata {
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub supported_gpus: Option<Vec<String>>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct Step {
    pub name: String,
    /// A bash command line (`bash -c RUN`).
    #[serde(default)]
    pub run: Option<String>,
    /// A program and its arguments, no shell.
    #[serde(default)]
    pub argv: Option<Vec<String>>,
    #[serde(default = "one")]
    pub ntasks: u64,
    /// Index of the step's first node in the allocation (0-based).
    #[serde(default)]
    pub node: u64,
    /// Nodes the step spans from `node` on.
    #[serde(default = "one")]
    pub nodes: u64,
}

fn one() -> u64 {
    1
}

impl Step {
    /// The argv this step runs.
    pub fn command(&self) -> Vec<String> {
        match (&self.argv, &self.run) {
            (Some(argv), _) => argv.clone(),
            (None, Some(run)) => vec!["bash".into(), "-c".into(), run.clone()],
            (None, None) => Vec::new(),
        }
    }
}

fn known_fields(path: &str) -> Option<&'static [&'static str]> {
    use serde_aux::serde_introspection::serde_introspect as fields;
    Some(match path {
        "" => fields::<ScriptSpec>(),
        "metadata" => fields::<ScriptMetadata>(),
        "slurm" => fields::<ScriptSlurm>(),
        "metrics" => fields::<ScriptMetrics>(),
        p if p.starts_with("steps.") && p[6..].parse::<usize>().is_ok() => fields::<Step>(),
        _ => return None,
    })
}

pub fn load(text: &str, _category: &str, _stem: &str) -> Loaded {
    let (spec, mut violations) = parse_spec::<ScriptSpec>(text, known_fields);
    let Some(spec) = spec else {
        return (None, violations);
    };
    if let Err(reason) = parse_slurm_time(&spec.slurm.job_time) {
        violations
            .push(Violation::error("slurm.job_time", reason).with_value(&spec.slurm.job_time));
    }
    if spec.slurm.nodes == Some(0) {
        violations.push(Violation::error("slurm.nodes", "must be at least 1"));
    }
    if spec.steps.is_empty() {
        violations.push(Violation::error("steps", "needs at least one step"));
    }
    for (i, step) in spec.steps.iter().enumerate() {
        let key = format!("steps.{i}");
        match (&step.run, &step.argv) {
            (Some(_), Some(_)) => {
                violations.push(Violation::error(&key, "give `run` or `argv`, not both"))
            }
            (None, None) => violations.push(Violation::error(&key, "needs `run` or `argv`")),
            (None, Some(argv)) if argv.is_empty() => {
                violations.push(Violation::error(format!("{key}.argv"), "is empty"))
            }
            _ => {}
        }
        if step.nodes == 0 {
            violations.push(Violation::error(
                format!("{key}.nodes"),
                "must be at least 1",
            ));
        } else if step.node + step.nodes > spec.slurm.nodes() {
            violations.push(Violation::error(
                format!("{key}.node"),
                format!(
                    "nodes {}..{} are outside the job's {} node(s) (slurm.nodes)",
                    step.node,
                    step.node + step.nodes - 1,
                    spec.slurm.nodes()
                ),
            ));
        } else if step.ntasks < step.nodes {
            violations.push(Violation::error(
                format!("{key}.ntasks"),
                format!("{} task(s) cannot span {} nodes", step.ntasks, step.nodes),
            ));
        }
        if step.ntasks == 0 {
            violations.push(Violation::error(
                format!("{key}.ntasks"),
                "must be at least 1",
            ));
        }
        if !step
            .name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
            || step.name.is_empty()
        {
            violations.push(
                Violation::error(
                    format!("{key}.name"),
                    "use letters, digits, `-`, `_` and `.` (it names a log file)",
                )
                .with_value(&step.name),
            );
        }
        // Each step writes `<name>.log`: two steps of one name would interleave into one file.
        if let Some(first) = spec.steps[..i].iter().position(|s| s.name == step.name) {
            violations.push(
                Violation::error(
                    format!("{key}.name"),
                    format!("`{}` is also the name of step {first}; step names name their log files and must differ", step.name),
                )
                .with_value(&step.name),
            );
        }
    }
    if let Some(m) = &spec.metrics {
        if !spec.steps.iter().any(|s| s.name == m.step) {
            violations.push(
                Violation::error("metrics.step", "names no step of this case").with_value(&m.step),
            );
        }
        violations.extend(crate::case::common::check_metrics_pattern(
            "metrics",
            m.extractor_pattern.as_deref(),
            m.metric_names.as_deref(),
        ));
    }
    for name in spec.environment.keys() {
        if !NAME_RE.is_match(name) {
            violations.push(Violation::error(
                format!("environment.{name}"),
                "is not a valid variable name",
            ));
        }
    }
    (Some(std::sync::Arc::new(spec)), violations)
}

#[cfg(test)]
mod duplicate_step_tests {
    #[test]
    fn two_steps_of_one_name_are_refused() {
        let text = "slurm: {job_time: \"00:01:00\"}\nsteps: [{name: a, run: \"true\"}, {name: a, run: \"true\"}]\n";
        let (_, v) = super::load(text, "perf", "x");
        assert!(
            v.iter()
                .any(|v| v.key == "steps.1.name" && v.reason.contains("also the name of step 0")),
            "{v:#?}"
        );
    }
}
