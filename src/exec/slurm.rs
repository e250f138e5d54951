//! SLURM job manager: `sbatch --parsable` to submit; one poller thread that asks about *all* live
//! jobs with a single `squeue -t all` per interval (upstream runs one `squeue` per job every 180 s);
//! `scontrol show job` for exit codes and for jobs squeue no longer lists; `scancel` with every id
//! at once.

use std::collections::HashMap;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use super::job::{JobRecord, JobState, JobTable};
use super::{ExecError, Executor};
use crate::plan::render::JobPlan;

pub struct SlurmExecutor {
    table: JobTable,
    squeue_calls: AtomicU64,
    /// Sum over polls of the jobs each poll asked about: the squeue calls a per-job poller makes.
    jobs_polled: AtomicU64,
}

/// True when `sinfo` exists and the controller answers within a few seconds.
pub fn controller_answers() -> bool {
    Command::new("timeout")
        .args(["5", "sinfo", "-h", "-o", "%P"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

fn run(program: &str, args: &[String]) -> Result<Output, ExecError> {
    Command::new(program).args(args).output().map_err(|source| {
        if source.kind() == std::io::ErrorKind::NotFound {
            ExecError::Missing {
                program: program.to_owned(),
            }
        } else {
            ExecError::Io {
                program: program.to_owned(),
                source,
            }
        }
    })
}

/// A live (pending or running) job of this user whose name is one of `names`: what a harness that was
/// killed (SIGKILL, node loss) left behind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Orphan {
    pub id: String,
    pub name: String,
    pub state: String,
}

/// Live jobs of the current user named like one of `names` (servetest names jobs after their case).
pub fn orphans(names: &std::collections::HashSet<String>) -> Result<Vec<Orphan>, ExecError> {
    let user = std::env::var("USER").unwrap_or_else(|_| "root".into());
    let out = run(
        "squeue",
        &[
            "-h".into(),
            "-u".into(),
            user,
            "-t".into(),
            // Not COMPLETING: those are already ending.
            "PENDING,RUNNING,CONFIGURING,SUSPENDED".into(),
            "-o".into(),
            "%i|%j|%T".into(),
        ],
    )?;
    // A failed squeue (controller down, bad config) must not read as "no live jobs".
    if !out.status.success() {
        return Err(ExecError::Failed {
            program: "squeue".into(),
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        });
    }
    Ok(parse_orphans(&String::from_utf8_lossy(&out.stdout), names))
}

pub fn parse_orphans(text: &str, names: &std::collections::HashSet<String>) -> Vec<Orphan> {
    text.lines()
        .filter_map(|l| {
            let mut p = l.trim().splitn(3, '|');
            let (id, name, state) = (p.next()?, p.next()?, p.next()?);
            names.contains(name).then(|| Orphan {
                id: id.to_owned(),
                name: name.to_owned(),
                state: state.to_owned(),
            })
        })
        .collect()
}

/// Cancels the given jobs with one `scancel`.
pub fn cancel_ids(ids: &[String]) -> Result<(), ExecError> {
    if ids.is_empty() {
        return Ok(());
    }
    let out = run("scancel", ids)?;
    if out.status.success() {
        Ok(())
    } else {
        Err(ExecError::Io {
            program: "scancel".into(),
            source: std::io::Error::other(String::from_utf8_lossy(&out.stderr).trim().to_owned()),
        })
    }
}

/// The job id `sbatch --parsable` printed (`ID` or `ID;cluster`); `None` unless it is all ASCII
/// digits.
pub fn parse_sbatch_parsable(stdout: &str) -> Option<String> {
    let id = stdout.trim().split(';').next()?;
    (!id.is_empty() && id.bytes().all(|b| b.is_ascii_digit())).then(|| id.to_owned())
}

/// `id|STATE|reason` lines of `squeue -h -t all -o '%i|%T|%r'`.
pub fn parse_squeue(text: &str) -> HashMap<String, JobState> {
    text.lines()
        .filter_map(|line| {
            let mut parts = line.trim().splitn(3, '|');
            let id = parts.next()?.trim();
            let state = parts.next()?.trim();
            let reason = parts.next().unwrap_or("").trim();
            (!id.is_empty()).then(|| (id.to_owned(), JobState::from_slurm(state, reason)))
        })
        .collect()
}

/// What `scontrol -o show job ID` says of a job.
#[derive(Debug, Clone, PartialEq)]
pub struct ScontrolJob {
    pub state: JobState,
    pub exit_code: Option<String>,
    /// `NodeList=`; `None` for `(null)` (never ran).
    pub nodes: Option<String>,
}

/// `JobState=`, `ExitCode=` and `NodeList=` of `scontrol -o show job ID` (one line, `key=value`
/// words).
pub fn parse_scontrol(text: &str) -> Option<ScontrolJob> {
    let field = |key: &str| {
        text.split_whitespace()
            .find_map(|w| w.strip_prefix(key).map(str::to_owned))
    };
    let state = field("JobState=")?;
    let reason = field("Reason=").unwrap_or_default();
    Some(ScontrolJob {
        state: JobState::from_slurm(&state, &reason),
        exit_code: field("ExitCode="),
        nodes: field("NodeList=").filter(|n| !n.is_empty() && n != "(null)"),
    })
}

/// The nodes of `nodelist` that SLURM holds down, drained or failing, with its reasons:
/// `sinfo -R` lines `NODE|REASON` → `stnode2: Not responding`.
fn failed_nodes(nodelist: &str) -> Option<String> {
    let args: Vec<String> = ["-h", "-R", "-N", "-o", "%N|%E", "-n", nodelist]
        .map(str::to_owned)
        .to_vec();
    let out = run("sinfo", &args).ok().filter(|o| o.status.success())?;
    parse_failed_nodes(&String::from_utf8_lossy(&out.stdout))
}

pub fn parse_failed_nodes(text: &str) -> Option<String> {
    let found: Vec<String> = text
        .lines()
        .filter_map(|l| {
            let (node, reason) = l.split_once('|')?;
            let node = node.trim();
            (!node.is_empty()).then(|| match reason.trim() {
                "" | "none" => node.to_owned(),
                reason => format!("{node}: {reason}"),
            })
        })
        .collect();
    (!found.is_empty()).then(|| found.join(", "))
}

impl SlurmExecutor {
    pub fn start(poll: Duration) -> Arc<dyn Executor> {
        let exec = Arc::new(SlurmExecutor {
            table: JobTable::default(),
            squeue_calls: AtomicU64::new(0),
            jobs_polled: AtomicU64::new(0),
        });
        let weak: Weak<SlurmExecutor> = Arc::downgrade(&exec);
        std::thread::Builder::new()
            .name("slurm-poller".into())
            .spawn(move || loop {
                std::thread::sleep(poll);
                match weak.upgrade() {
                    Some(exec) => exec.poll_once(),
                    None => return,
                }
            })
            .expect("spawn slurm poller");
        exec
    }

    /// One `squeue` for every live job; `scontrol` for each job that just ended or vanished.
    pub fn poll_once(&self) {
        let ids = self.table.live_ids();
        if ids.is_empty() {
            return;
        }
        let args: Vec<String> = ["-h", "-t", "all", "-o", "%i|%T|%r", "-j"]
            .map(str::to_owned)
            .into_iter()
            .chain([ids.join(",")])
            .collect();
        self.squeue_calls.fetch_add(1, Ordering::Relaxed);
        self.jobs_polled
            .fetch_add(ids.len() as u64, Ordering::Relaxed);
        let listed = match run("squeue", &args) {
            Ok(out) if out.status.success() => parse_squeue(&String::from_utf8_lossy(&out.stdout)),
            // Every id unknown ("Invalid job id"): fall through to scontrol for each.
            Ok(_) => HashMap::new(),
            Err(e) => {
                eprintln!("servetest: squeue failed: {e}");
                return;
            }
        };
        for id in ids {
            match listed.get(&id) {
                Some(state) if !state.is_terminal() => {
                    let state = state.clone();
                    self.table.update(&id, |r| r.state = state);
                }
                _ => {
                    let found = self.scontrol(&id).unwrap_or_else(|_| ScontrolJob {
                        state: listed.get(&id).cloned().unwrap_or(JobState::Vanished),
                        exit_code: None,
                        nodes: None,
                    });
                    // A NODE_FAIL names the whole allocation; ask which node is down, while
                    // SLURM still says so (a node may return to service soon after).
                    let failed = match (&found.state, &found.nodes) {
                        (JobState::NodeFail, Some(nodes)) => failed_nodes(nodes),
                        _ => None,
                    };
                    self.table.update(&id, |r| {
                        r.state = found.state;
                        r.exit_code = found.exit_code;
                        r.nodes = found.nodes.or(r.nodes.take());
                        r.failed_nodes = failed.or(r.failed_nodes.take());
                    });
                }
            }
        }
    }

    fn scontrol(&self, id: &str) -> Result<ScontrolJob, ExecError> {
        let out = run(
            "scontrol",
            &["-o".into(), "show".into(), "job".into(), id.into()],
        )?;
        let text = String::from_utf8_lossy(&out.stdout);
        parse_scontrol(&text).ok_or_else(|| ExecError::UnknownJob {
            id: id.to_owned(),
            detail: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        })
    }
}

impl Executor for SlurmExecutor {
    fn name(&self) -> &'static str {
        "slurm"
    }

    fn submit(&self, plan: &JobPlan) -> Result<String, ExecError> {
        // The job sources the case's environment from a private file outside OUTPUT_PATH.
        plan.write_private_env()
            .map_err(|reason| ExecError::Private {
                case: plan.case.clone(),
                reason,
            })?;
        let out = Command::new("sbatch")
            .arg("--parsable")
            .arg(&plan.script_path)
            .current_dir(&plan.dir)
            .output()
            .inspect_err(|_| plan.remove_private_env())
            .map_err(|source| match source.kind() {
                std::io::ErrorKind::NotFound => ExecError::Missing {
                    program: "sbatch".into(),
                },
                _ => ExecError::Io {
                    program: "sbatch".into(),
                    source,
                },
            })?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        let parsed = parse_sbatch_parsable(&stdout).filter(|_| out.status.success());
        let Some(id) = parsed else {
            plan.remove_private_env();
            return Err(ExecError::Rejected {
                case: plan.case.clone(),
                script: plan.script_path.display().to_string(),
                stderr: format!(
                    "{}{}",
                    String::from_utf8_lossy(&out.stderr).trim(),
                    stdout.trim()
                ),
            });
        };
        self.table.insert(JobRecord::pending(&id, &plan.case));
        Ok(id)
    }

    fn table(&self) -> &JobTable {
        &self.table
    }

    fn cancel(&self, ids: &[String]) {
        if ids.is_empty() {
            return;
        }
        if let Err(e) = run("scancel", ids) {
            eprintln!("servetest: scancel {} failed: {e}", ids.join(" "));
        }
        // Reflect it at once; the poller confirms the final state.
        self.poll_once();
    }

    fn adopt(&self, id: &str, case: &str) -> Result<JobRecord, ExecError> {
        if self.table.get(id).is_none() {
            let found = self.scontrol(id)?;
            self.table.insert(JobRecord {
                state: found.state,
                exit_code: found.exit_code,
                nodes: found.nodes,
                ..JobRecord::pending(id, case)
            });
        }
        Ok(self.table.get(id).expect("just inserted"))
    }

    fn queries(&self) -> (u64, u64) {
        (
            self.squeue_calls.load(Ordering::Relaxed),
            self.jobs_polled.load(Ordering::Relaxed),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn squeue_lines() {
        let parsed =
            parse_squeue("12|PENDING|Resources\n13|RUNNING|None\n14|CANCELLED by 0|None\n\n");
        assert_eq!(parsed["12"].to_string(), "PENDING (Resources)");
        assert_eq!(parsed["13"], JobState::Running);
        assert_eq!(parsed["14"], JobState::Cancelled);
        assert_eq!(parsed.len(), 3);
    }

    #[test]
    fn scontrol_line() {
        let line = "JobId=7 JobName=x UserId=root(0) JobState=TIMEOUT Reason=TimeLimit Dependency=(null) ExitCode=0:15 RunTime=00:01:27";
        let job = parse_scontrol(line).unwrap();
        assert_eq!(job.state, JobState::Timeout);
        assert_eq!(job.exit_code.as_deref(), Some("0:15"));
        assert_eq!(job.nodes, None, "no NodeList field");
        let failed = "JobId=9 JobState=NODE_FAIL Reason=NodeDown ExitCode=0:0 NodeList=node-3 BatchHost=node-3";
        let job = parse_scontrol(failed).unwrap();
        assert_eq!(job.state, JobState::NodeFail);
        assert_eq!(job.nodes.as_deref(), Some("node-3"));
        let never_ran = "JobId=10 JobState=CANCELLED Reason=None ExitCode=0:0 NodeList=(null)";
        assert_eq!(parse_scontrol(never_ran).unwrap().nodes, None);
        assert_eq!(
            parse_failed_nodes("stnode2|Not responding\nstnode3|none\n").as_deref(),
            Some("stnode2: Not responding, stnode3")
        );
        assert_eq!(parse_failed_nodes(""), None);
        assert!(parse_scontrol("slurm_load_jobs error: Invalid job id specified").is_none());
    }

    #[test]
    fn sbatch_parsable_output() {
        assert_eq!(parse_sbatch_parsable("1234\n").as_deref(), Some("1234"));
        assert_eq!(
            parse_sbatch_parsable("77;cluster-a\n").as_deref(),
            Some("77")
        );
        assert_eq!(parse_sbatch_parsable(""), None);
        assert_eq!(parse_sbatch_parsable("Submitted batch job 5"), None);
        assert_eq!(
            parse_sbatch_parsable("١٢"),
            None,
            "Arabic-Indic digits are not a job id"
        );
    }
}
