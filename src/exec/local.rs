//! The local executor: the same interface as SLURM, on this machine. A job's steps run side by side,
//! each in its own process group, in the job's work directory, with the same logs as under SLURM.
//! The job's time limit is enforced (TIMEOUT), cancelling kills every step's group (CANCELLED).

use std::collections::HashMap;
use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;

use super::job::{JobRecord, JobState, JobTable};
use super::process::{CommandSpec, GroupChild};
use super::{ExecError, Executor};
use crate::plan::render::JobPlan;

/// Grace between SIGTERM and SIGKILL when a job is cancelled or times out.
const GRACE: Duration = Duration::from_secs(5);

pub struct LocalExecutor {
    table: Arc<JobTable>,
    runtime: tokio::runtime::Runtime,
    next_id: AtomicU64,
    /// Jobs that can still be cancelled.
    running: Mutex<HashMap<String, Running>>,
    /// Jobs allowed to run at once (`SERVETEST_LOCAL_SLOTS`); the rest wait PENDING (Resources), as
    /// SLURM queues jobs that do not fit, so a huge batch cannot exhaust processes or memory.
    slots: Arc<tokio::sync::Semaphore>,
}

/// How to stop a submitted job, and how to know it has stopped.
struct Running {
    cancel: watch::Sender<bool>,
    done: tokio::sync::oneshot::Receiver<()>,
}

impl LocalExecutor {
    pub fn start() -> Arc<dyn Executor> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .thread_name("local-executor")
            .build()
            .expect("tokio runtime");
        Arc::new(LocalExecutor {
            table: Arc::new(JobTable::default()),
            runtime,
            next_id: AtomicU64::new(1),
            running: Mutex::new(HashMap::new()),
            slots: Arc::new(tokio::sync::Semaphore::new(crate::env::local_slots())),
        })
    }
}

enum Ending {
    Finished,
    TimedOut,
    Cancelled,
}

async fn run_job(
    id: String,
    plan: JobPlan,
    table: Arc<JobTable>,
    mut cancel: watch::Receiver<bool>,
) -> (JobState, Option<String>) {
    let out_path = plan.slurm_out.display().to_string().replace("%j", &id);
    let mut out = std::fs::File::options()
        .create(true)
        .append(true)
        .open(&out_path)
        .ok();
    let mut note = |line: String| {
        if let Some(f) = out.as_mut() {
            let _ = writeln!(f, "{line}");
        }
    };
    let mut children = Vec::new();
    for step in &plan.steps {
        let Some((program, args)) = step.argv.split_first() else {
            continue;
        };
        let mut env = plan.env.clone();
        env.push(("SERVETEST_JOB_ID".into(), id.clone()));
        env.push(("SERVETEST_STEP".into(), step.name.clone()));
        let spec = CommandSpec {
            program: program.into(),
            args: args.to_vec(),
            env,
            cwd: Some(plan.work_dir.clone()),
        };
        // A step's log holds this job's output only, as `srun --output` (which truncates) makes it
        // under SLURM; otherwise a second run into the same OUTPUT_PATH parses the first run's
        // metrics again.
        if let Err(e) = std::fs::File::create(&step.log) {
            note(format!(
                "step {}: cannot truncate {}: {e}",
                step.name,
                step.log.display()
            ));
        }
        match GroupChild::spawn(&step.name, &spec, &step.log) {
            Ok(child) => {
                note(format!(
                    "step {} started: {}",
                    step.name,
                    spec.display_line()
                ));
                children.push(child);
            }
            Err(e) => {
                note(format!("step {} failed to start: {e}", step.name));
                for mut c in children {
                    let _ = c.terminate(GRACE).await;
                }
                return (JobState::Failed, Some("1:0".into()));
            }
        }
    }
    table.update(&id, |r| r.state = JobState::Running);

    let limit = plan
        .time_limit
        .map(Duration::from_secs)
        .unwrap_or(Duration::MAX);
    let deadline = tokio::time::Instant::now()
        .checked_add(limit)
        .unwrap_or_else(|| tokio::time::Instant::now() + Duration::from_secs(u32::MAX as u64));
    let mut statuses = Vec::new();
    let mut ending = Ending::Finished;
    for child in children.iter_mut() {
        tokio::select! {
            status = child.wait() => statuses.push((child.name().to_owned(), status.ok())),
            _ = tokio::time::sleep_until(deadline) => { ending = Ending::TimedOut; break; }
            _ = cancel.wait_for(|c| *c) => { ending = Ending::Cancelled; break; }
        }
    }
    if !matches!(ending, Ending::Finished) {
        for child in children.iter_mut() {
            let _ = child.terminate(GRACE).await;
        }
    }
    // Forked helpers may outlive a step's leader; the group goes with the step.
    for child in children.iter_mut() {
        let _ = child.terminate(Duration::from_millis(10)).await;
    }
    for (name, status) in &statuses {
        note(format!(
            "step {name} exited: {}",
            status.map_or("unknown".to_owned(), |s| s.to_string())
        ));
    }
    match ending {
        Ending::TimedOut => {
            note(format!("job {id}: DUE TO TIME LIMIT"));
            (JobState::Timeout, Some("0:15".into()))
        }
        Ending::Cancelled => {
            note(format!("job {id}: CANCELLED"));
            (JobState::Cancelled, Some("0:15".into()))
        }
        Ending::Finished => {
            let failed = statuses
                .iter()
                .find(|(_, s)| !s.is_some_and(|s| s.success()));
            match failed {
                None => (JobState::Completed, Some("0:0".into())),
                Some((_, status)) => {
                    let code = status.and_then(|s| s.code()).unwrap_or(1);
                    (JobState::Failed, Some(format!("{code}:0")))
                }
            }
        }
    }
}

impl Executor for LocalExecutor {
    fn name(&self) -> &'static str {
        "local"
    }

    fn submit(&self, plan: &JobPlan) -> Result<String, ExecError> {
        // Unique across runs too: job directories (`job-<id>`) must never meet a previous run's files.
        let id = format!(
            "local-{}-{}",
            std::process::id(),
            self.next_id.fetch_add(1, Ordering::Relaxed)
        );
        self.table.insert(JobRecord::pending(&id, &plan.case));
        let (tx, rx) = watch::channel(false);
        let (done_tx, done_rx) = tokio::sync::oneshot::channel();
        self.running.lock().unwrap().insert(
            id.clone(),
            Running {
                cancel: tx,
                done: done_rx,
            },
        );
        let table = self.table.clone();
        let plan = plan.clone();
        let job_id = id.clone();
        let slots = self.slots.clone();
        self.runtime.spawn(async move {
            if slots.available_permits() == 0 {
                table.update(&job_id, |r| {
                    r.state = JobState::Pending {
                        reason: "Resources".into(),
                    }
                });
            }
            let mut waiting = rx.clone();
            let permit = tokio::select! {
                p = slots.acquire_owned() => p.ok(),
                _ = waiting.wait_for(|c| *c) => None,
            };
            let (state, exit) = match permit {
                Some(_permit) => run_job(job_id.clone(), plan, table.clone(), rx).await,
                // Cancelled while queued: nothing ever started.
                None => (JobState::Cancelled, None),
            };
            table.update(&job_id, |r| {
                r.state = state;
                r.exit_code = exit;
            });
            let _ = done_tx.send(());
        });
        Ok(id)
    }

    fn table(&self) -> &JobTable {
        &self.table
    }

    /// Kills the jobs' process groups and waits until they are gone.
    fn cancel(&self, ids: &[String]) {
        let mut waits = Vec::new();
        for id in ids {
            if let Some(job) = self.running.lock().unwrap().remove(id) {
                let _ = job.cancel.send(true);
                waits.push(job.done);
            }
        }
        self.runtime.block_on(async {
            for rx in waits {
                let _ = tokio::time::timeout(GRACE * 2, rx).await;
            }
        });
    }

    fn adopt(&self, id: &str, _case: &str) -> Result<JobRecord, ExecError> {
        self.table.get(id).ok_or_else(|| ExecError::UnknownJob {
            id: id.to_owned(),
            detail: "the local executor only knows jobs of this run (DEBUG_MODE needs SLURM)"
                .into(),
        })
    }
}
