//! Families: the registry and the one interface the pipeline calls them through.
//!
//! A family is a folder (`src/disagg/`, `src/script/`, `src/aggregated/`, `src/latency/`, `src/cb/`)
//! holding its schema and validation (`load`), and a [`Spec`] implementation: what its job runs
//! (steps), and how a finished job becomes metrics and a verdict. The shared stages (discovery,
//! selection, the harness, plan/render, run, report) only see [`Family`] and `dyn Spec`; adding a
//! family is a folder and one line in [`FAMILIES`].

use std::any::Any;
use std::fmt;
use std::sync::Arc;

use crate::case::violation::Violation;
use crate::case::Case;
use crate::check::logparse::Block;
use crate::plan::render::{JobParts, JobSite};
use crate::run::RunContext;

/// What a family's loader returns: the spec when it deserialized, and every violation.
pub type Loaded = (Option<Arc<dyn Spec>>, Vec<Violation>);
type LoadFn = fn(text: &str, category: &str, stem: &str) -> Loaded;

/// A family of cases: its directory name, its categories and its loader.
pub struct Family {
    pub name: &'static str,
    pub categories: &'static [&'static str],
    pub load: LoadFn,
    /// Trials that drive their engine in the harness process (no job, never batched).
    pub in_process: Option<InProcess>,
}

/// How an in-process family runs a trial.
pub struct InProcess {
    /// Why trials cannot run on this machine (a missing engine), asked once per run; they are
    /// then ignored with that reason.
    pub unavailable: fn() -> Option<String>,
    /// Runs one trial: a line for the log when it passed, the reason when it failed.
    pub run: fn(&Case) -> Result<String, String>,
}

impl fmt::Debug for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name)
    }
}

/// Every family, in the order `servetest list` and reports show them.
pub static FAMILIES: &[&Family] = &[
    &crate::disagg::DISAGG,
    &crate::disagg::WIDEEP,
    &crate::script::FAMILY,
    &crate::aggregated::FAMILY,
    &crate::aggr::FAMILY,
    &crate::latency::FAMILY,
    &crate::cb::FAMILY,
];

pub fn family(name: &str) -> Option<&'static Family> {
    FAMILIES.iter().copied().find(|f| f.name == name)
}

/// The typed content of a case, as each family implements it.
pub trait Spec: Any + fmt::Debug + Send + Sync {
    /// The model the case serves, for result rows and reports.
    fn model(&self) -> Option<&str>;

    /// GPU types the case runs on; `None`: any.
    fn supported_gpus(&self) -> Option<&[String]> {
        None
    }

    /// GPUs one job of the case occupies.
    fn total_gpus(&self) -> u64 {
        0
    }

    /// Every environment value the case supplies, as (name, value): secret-named ones are masked.
    fn environment(&self) -> Vec<(String, String)> {
        Vec::new()
    }

    /// The job: SLURM fields, the case's private environment, its steps. `Err((key, reason))`.
    fn job(&self, site: &JobSite) -> Result<JobParts, (String, String)>;

    /// What a running job has done so far, for heartbeat lines (`job_dir`: `<case>/job-<id>/`).
    fn progress(&self, _job_dir: &std::path::Path) -> Option<String> {
        None
    }

    /// A failure the job's own steps reported (disagg: BENCHMARK's status), whatever the job's
    /// final state: it is the trial's message.
    fn reported_failure(&self, _run: &RunContext, _case: &Case, _job: &str) -> Option<String> {
        None
    }

    /// The metrics of a job that completed; an error fails the trial.
    fn results(&self, run: &RunContext, case: &Case, job: &str) -> Result<Vec<Block>, String>;

    /// The variants one file expands to (`[key=value,…]` name suffixes); empty: the case itself.
    fn variants(&self) -> Vec<Variant> {
        Vec::new()
    }

    /// Whether a file with errors still expands: its variants are made of list entries
    /// (`Variant::entry`), so one entry's error fails only its own trial (aggr's server configs).
    fn expands_with_errors(&self) -> bool {
        false
    }

    /// The (classname, name) reports give the trial instead of `{family}.{category}` and its name:
    /// an upstream test id a migrating team's dashboards know.
    fn report_id(&self, _case: &Case) -> Option<(String, String)> {
        None
    }
}

/// One case of several that a file expands to.
pub struct Variant {
    /// Appended to the case name (`[…]`).
    pub suffix: String,
    pub spec: Arc<dyn Spec>,
    /// The entry of a list this variant is made of (`("server_configs", 2)`): violations of the
    /// list's other entries belong to their own variants and are left out of this one.
    pub entry: Option<(&'static str, usize)>,
}

impl dyn Spec {
    /// The family's own type, for the family's own code.
    pub fn downcast<T: Spec>(&self) -> Option<&T> {
        (self as &dyn Any).downcast_ref::<T>()
    }
}

/// Families whose job is one servetest subcommand (`servetest FAMILY run --case PATH --out DIR`,
/// logging to `DIR/FAMILY.log`) that leaves its result rows in `job-<id>/rows.json`.
pub mod step {
    use std::collections::BTreeMap;
    use std::path::{Path, PathBuf};

    use serde::{Deserialize, Serialize};

    use crate::case::Case;
    use crate::check::logparse::Block;
    use crate::disagg::role::rendezvous::Rendezvous;
    use crate::plan::placement::Nodes;
    use crate::plan::render::{JobSite, PlannedStep};
    use crate::run::RunContext;

    /// What the step leaves for the harness: one entry per result row.
    pub const ROWS_FILE: &str = "rows.json";

    #[derive(Debug, Clone, Serialize, Deserialize)]
    pub struct RowOut {
        pub concurrency: Option<u64>,
        pub metrics: BTreeMap<String, f64>,
        /// The model this row measured, when the case serves several (aggregated).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub model: Option<String>,
        /// What tells this row from the case's other rows at the same concurrency.
        #[serde(default, skip_serializing_if = "String::is_empty")]
        pub variant: String,
    }

    /// The step's directory for this job (`<out>/job-<SLURM_JOB_ID>/`).
    pub fn job_dir(out: &Path) -> PathBuf {
        Rendezvous::for_this_job(out).dir().to_path_buf()
    }

    /// The one step: the subcommand on the allocation's first node.
    pub fn planned(family: &str, site: &JobSite, gpus: u64) -> PlannedStep {
        PlannedStep {
            name: family.into(),
            argv: vec![
                site.servetest.display().to_string(),
                family.into(),
                "run".into(),
                "--case".into(),
                site.case_path.display().to_string(),
                "--out".into(),
                site.dir.display().to_string(),
            ],
            ntasks: 1,
            nodes: Nodes::FIRST,
            gpus,
            log: site.dir.join(format!("{family}.log")),
            ranks: None,
        }
    }

    /// The rows the step wrote; none fails the trial.
    pub fn rows(run: &RunContext, case: &Case, id: &str) -> Result<Vec<Block>, String> {
        let path = Rendezvous::for_job(&run.case_dir(case), id)
            .dir()
            .join(ROWS_FILE);
        let rows: Vec<RowOut> = std::fs::read(&path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .ok_or_else(|| {
                format!(
                    "{}: job {id} completed but left no results at {}{}",
                    case.name,
                    path.display(),
                    run.tails(case, id)
                )
            })?;
        // Empty is legitimate: a resumed aggregated run with everything already recorded.
        Ok(rows
            .into_iter()
            .map(|r| Block {
                concurrency: r.concurrency,
                metrics: r.metrics,
                model: r.model,
                variant: r.variant,
            })
            .collect())
    }
}
