//! Running jobs: the SLURM job manager, the local executor (same interface, no SLURM), and the
//! process groups both rely on.

pub mod job;
pub mod local;
pub mod process;
pub mod slurm;

use std::sync::Arc;
use std::time::Duration;

use self::job::{JobRecord, JobTable};
use crate::plan::render::JobPlan;

#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error("`{program}` is not on PATH: install SLURM or run scripts/slurm-up (or use SERVETEST_EXECUTOR=local)")]
    Missing { program: String },
    #[error("sbatch rejected {case} ({script}): {stderr}")]
    Rejected {
        case: String,
        script: String,
        stderr: String,
    },
    #[error("{case}: cannot write the job's private environment file: {reason}")]
    Private { case: String, reason: String },
    #[error("failed to run {program}: {source}")]
    Io {
        program: String,
        #[source]
        source: std::io::Error,
    },
    #[error("job {id} is unknown to SLURM: {detail}")]
    UnknownJob { id: String, detail: String },
    #[error("`{program}` failed ({status}): {stderr}")]
    Failed {
        program: String,
        status: String,
        stderr: String,
    },
}

pub trait Executor: Send + Sync {
    fn name(&self) -> &'static str;
    /// Starts the job of `plan` (its script is already written) and returns its id.
    fn submit(&self, plan: &JobPlan) -> Result<String, ExecError>;
    fn table(&self) -> &JobTable;
    /// Cancels jobs; returns once the cancellation was issued (SLURM) or done (local).
    fn cancel(&self, ids: &[String]);
    fn cancel_all(&self) {
        let ids = self.table().live_ids();
        if !ids.is_empty() {
            self.cancel(&ids);
        }
    }
    /// The record of an existing job this run did not submit (debug mode).
    fn adopt(&self, id: &str, case: &str) -> Result<JobRecord, ExecError>;
    /// Scheduler queries so far (squeue calls) and the job-polls they covered (what one query per
    /// job per poll would have cost).
    fn queries(&self) -> (u64, u64) {
        (0, 0)
    }
}

/// `SERVETEST_EXECUTOR`: `slurm`, `local`, or `auto` (SLURM when `sinfo` answers, else local).
pub fn from_env(poll: Duration) -> Result<Arc<dyn Executor>, String> {
    let choice = crate::env::executor();
    let use_slurm = match choice.as_str() {
        "slurm" => true,
        "local" => false,
        "auto" => slurm::controller_answers(),
        other => {
            return Err(format!(
                "{}={other}: expected slurm, local or auto",
                crate::env::EXECUTOR
            ))
        }
    };
    Ok(if use_slurm {
        slurm::SlurmExecutor::start(poll)
    } else {
        local::LocalExecutor::start()
    })
}
