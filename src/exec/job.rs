//! Job states and the table every executor keeps them in. Trials block on the table (a condition
//! variable) until their job reaches a terminal state; executors update it.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant, SystemTime};

use serde::Serialize;

/// SLURM's job states (the local executor uses the same names).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum JobState {
    Pending {
        reason: String,
    },
    Running,
    Completing,
    Completed,
    Failed,
    Timeout,
    Cancelled,
    NodeFail,
    OutOfMemory,
    Preempted,
    BootFail,
    Deadline,
    /// The scheduler no longer knows the job.
    Vanished,
    Other(String),
}

impl JobState {
    /// Parses a SLURM state name (`CANCELLED by 0` and `CANCELLED+` forms included).
    pub fn from_slurm(state: &str, reason: &str) -> JobState {
        let word = state
            .split_whitespace()
            .next()
            .unwrap_or_default()
            .trim_end_matches('+');
        match word {
            "PENDING" | "CONFIGURING" | "REQUEUED" | "REQUEUE_HOLD" | "RESIZING" | "SUSPENDED" => {
                JobState::Pending {
                    reason: reason.to_owned(),
                }
            }
            "RUNNING" => JobState::Running,
            "COMPLETING" | "STAGE_OUT" => JobState::Completing,
            "COMPLETED" => JobState::Completed,
            "FAILED" => JobState::Failed,
            "TIMEOUT" => JobState::Timeout,
            "CANCELLED" => JobState::Cancelled,
            "NODE_FAIL" => JobState::NodeFail,
            "OUT_OF_MEMORY" => JobState::OutOfMemory,
            "PREEMPTED" => JobState::Preempted,
            "BOOT_FAIL" => JobState::BootFail,
            "DEADLINE" => JobState::Deadline,
            other => JobState::Other(other.to_owned()),
        }
    }

    pub fn is_terminal(&self) -> bool {
        !matches!(
            self,
            JobState::Pending { .. } | JobState::Running | JobState::Completing
        )
    }
}

impl fmt::Display for JobState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self {
            JobState::Pending { reason } if !reason.is_empty() && reason != "None" => {
                return write!(f, "PENDING ({reason})")
            }
            JobState::Pending { .. } => "PENDING",
            JobState::Running => "RUNNING",
            JobState::Completing => "COMPLETING",
            JobState::Completed => "COMPLETED",
            JobState::Failed => "FAILED",
            JobState::Timeout => "TIMEOUT",
            JobState::Cancelled => "CANCELLED",
            JobState::NodeFail => "NODE_FAIL",
            JobState::OutOfMemory => "OUT_OF_MEMORY",
            JobState::Preempted => "PREEMPTED",
            JobState::BootFail => "BOOT_FAIL",
            JobState::Deadline => "DEADLINE",
            JobState::Vanished => "VANISHED",
            JobState::Other(s) => s,
        };
        f.write_str(s)
    }
}

/// What a trial learns about its job.
#[derive(Debug, Clone, Serialize)]
pub struct JobRecord {
    pub id: String,
    pub case: String,
    pub state: JobState,
    /// `exit:signal` as SLURM reports it, when known.
    pub exit_code: Option<String>,
    /// The nodes it ran on (SLURM's `NodeList`), when known.
    pub nodes: Option<String>,
    /// For NODE_FAIL: which of those nodes failed and why (`stnode2: Not responding`).
    pub failed_nodes: Option<String>,
    pub submitted: SystemTime,
    pub started: Option<SystemTime>,
    pub finished: Option<SystemTime>,
}

impl JobRecord {
    /// A just-submitted job.
    pub fn pending(id: &str, case: &str) -> JobRecord {
        JobRecord {
            id: id.to_owned(),
            case: case.to_owned(),
            state: JobState::Pending {
                reason: String::new(),
            },
            exit_code: None,
            nodes: None,
            failed_nodes: None,
            submitted: SystemTime::now(),
            started: None,
            finished: None,
        }
    }
}

#[derive(Default)]
pub struct JobTable {
    jobs: Mutex<HashMap<String, JobRecord>>,
    changed: Condvar,
}

impl JobTable {
    pub fn insert(&self, record: JobRecord) {
        self.jobs.lock().unwrap().insert(record.id.clone(), record);
        self.changed.notify_all();
    }

    /// Applies `f` to job `id` (if known) and wakes waiters. Start/finish times are stamped here.
    pub fn update(&self, id: &str, f: impl FnOnce(&mut JobRecord)) {
        let mut jobs = self.jobs.lock().unwrap();
        if let Some(rec) = jobs.get_mut(id) {
            let was_terminal = rec.state.is_terminal();
            f(rec);
            if rec.started.is_none() && !matches!(rec.state, JobState::Pending { .. }) {
                rec.started = Some(SystemTime::now());
            }
            if !was_terminal && rec.state.is_terminal() {
                rec.finished = Some(SystemTime::now());
            }
        }
        drop(jobs);
        self.changed.notify_all();
    }

    pub fn get(&self, id: &str) -> Option<JobRecord> {
        self.jobs.lock().unwrap().get(id).cloned()
    }

    /// Ids of jobs not yet in a terminal state.
    pub fn live_ids(&self) -> Vec<String> {
        let jobs = self.jobs.lock().unwrap();
        let mut ids: Vec<String> = jobs
            .values()
            .filter(|r| !r.state.is_terminal())
            .map(|r| r.id.clone())
            .collect();
        ids.sort();
        ids
    }

    /// Blocks until job `id` is terminal, or `timeout` passes (then returns the last record seen).
    /// `on_change` is called whenever the state differs from the last one seen (progress output).
    pub fn wait_terminal(
        &self,
        id: &str,
        timeout: Duration,
        on_change: impl FnMut(&JobRecord),
    ) -> (JobRecord, bool) {
        self.wait_terminal_beating(id, timeout, None, on_change, |_| {})
    }

    /// `wait_terminal`, also calling `on_beat` every `beat` while the job is live (progress lines
    /// for long jobs, which otherwise print nothing between RUNNING and their end).
    pub fn wait_terminal_beating(
        &self,
        id: &str,
        timeout: Duration,
        beat: Option<Duration>,
        mut on_change: impl FnMut(&JobRecord),
        mut on_beat: impl FnMut(&JobRecord),
    ) -> (JobRecord, bool) {
        let deadline = Instant::now() + timeout;
        let mut jobs = self.jobs.lock().unwrap();
        let mut last: Option<JobState> = None;
        let mut next_beat = beat.map(|b| Instant::now() + b);
        loop {
            let rec = jobs
                .get(id)
                .cloned()
                .expect("waiting on a job that was never inserted");
            if last.as_ref() != Some(&rec.state) {
                on_change(&rec);
                last = Some(rec.state.clone());
            }
            if let (Some(at), Some(every)) = (next_beat, beat) {
                if Instant::now() >= at && !rec.state.is_terminal() {
                    drop(jobs);
                    on_beat(&rec);
                    jobs = self.jobs.lock().unwrap();
                    next_beat = Some(Instant::now() + every);
                    continue;
                }
            }
            if rec.state.is_terminal() {
                return (rec, true);
            }
            let now = Instant::now();
            if now >= deadline {
                return (rec, false);
            }
            let step = (deadline - now).min(Duration::from_secs(1));
            jobs = self.changed.wait_timeout(jobs, step).unwrap().0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slurm_state_names() {
        assert_eq!(
            JobState::from_slurm("CANCELLED by 0", ""),
            JobState::Cancelled
        );
        assert_eq!(JobState::from_slurm("CANCELLED+", ""), JobState::Cancelled);
        assert_eq!(
            JobState::from_slurm("OUT_OF_MEMORY", ""),
            JobState::OutOfMemory
        );
        assert_eq!(
            JobState::from_slurm("PENDING", "Resources").to_string(),
            "PENDING (Resources)"
        );
        assert!(!JobState::from_slurm("COMPLETING", "").is_terminal());
        assert!(JobState::from_slurm("NODE_FAIL", "").is_terminal());
        assert_eq!(
            JobState::from_slurm("WEIRD", ""),
            JobState::Other("WEIRD".into())
        );
    }

    #[test]
    fn waiters_wake_on_terminal_state_and_time_out_otherwise() {
        let table = std::sync::Arc::new(JobTable::default());
        table.insert(JobRecord::pending("1", "c"));
        table.insert(JobRecord::pending("2", "c"));
        let t = table.clone();
        let h = std::thread::spawn(move || t.wait_terminal("1", Duration::from_secs(10), |_| {}));
        std::thread::sleep(Duration::from_millis(50));
        table.update("1", |r| r.state = JobState::Running);
        table.update("1", |r| r.state = JobState::Completed);
        let (r, done) = h.join().unwrap();
        assert!(done);
        assert_eq!(r.state, JobState::Completed);
        assert!(r.started.is_some() && r.finished.is_some());
        let (r, done) = table.wait_terminal("2", Duration::from_millis(100), |_| {});
        assert!(!done);
        assert!(matches!(r.state, JobState::Pending { .. }));
        assert_eq!(table.live_ids(), vec!["2".to_owned()]);
    }
}
