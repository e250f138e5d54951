//! The `script` family: a job of plain commands (`test_configs/script/{perf,accuracy}/*.yaml`).
//! Useful on its own (run any benchmark script as a SLURM job), and the simplest case for exercising
//! the executors end to end. Schema and rules in `case`.

pub mod case;

use crate::case::Case;
use crate::check::logparse::{self, Block};
use crate::exec::process::log_tail;
use crate::family::{Family, Spec};
use crate::plan::placement::Nodes;
use crate::plan::render::{JobParts, JobSite, PlannedStep, SlurmFields};
use crate::run::{RunContext, TAIL};
use case::ScriptSpec;

pub static FAMILY: Family = Family {
    name: "script",
    categories: &["perf", "accuracy"],
    load: case::load,
    in_process: None,
};

impl Spec for ScriptSpec {
    fn model(&self) -> Option<&str> {
        None
    }

    fn supported_gpus(&self) -> Option<&[String]> {
        self.metadata.supported_gpus.as_deref()
    }

    fn environment(&self) -> Vec<(String, String)> {
        self.environment
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    /// One step per command, on the nodes it names.
    fn job(&self, site: &JobSite) -> Result<JobParts, (String, String)> {
        let steps = self
            .steps
            .iter()
            .map(|st| PlannedStep {
                name: st.name.clone(),
                argv: st.command(),
                ntasks: st.ntasks,
                nodes: Nodes {
                    first: st.node,
                    count: st.nodes,
                },
                gpus: 0,
                log: site.dir.join(format!("{}.log", st.name)),
                ranks: None,
            })
            .collect();
        Ok(JobParts {
            fields: SlurmFields::from_script(&self.slurm, self.slurm.nodes(), 0),
            env: self.environment(),
            steps,
            serving_roles: false,
        })
    }

    /// The metrics the case asks for (`metrics:`), from its step's log; none found fails the trial.
    fn results(&self, run: &RunContext, case: &Case, _job: &str) -> Result<Vec<Block>, String> {
        let Some(m) = &self.metrics else {
            return Ok(Vec::new());
        };
        let log = run.step_log(case, &m.step);
        let text = std::fs::read_to_string(&log)
            .map_err(|e| format!("{}: failed to read {}: {e}", case.name, log.display()))?;
        let pattern = m
            .extractor_pattern
            .as_deref()
            .zip(m.metric_names.as_deref());
        let (blocks, what) = logparse::parse_with(&text, pattern)?;
        if blocks.iter().all(|b| b.metrics.is_empty()) {
            return Err(format!(
                "{}: {what} found no metric in {}; last {TAIL} lines:\n{}",
                case.name,
                log.display(),
                log_tail(&log, TAIL)
            ));
        }
        run.note_blocks(case, &blocks);
        Ok(blocks)
    }
}
