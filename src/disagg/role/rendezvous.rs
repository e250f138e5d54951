//! How the roles of one job find each other: files in the job's directory, as upstream's
//! perf-sanity test does (hostname files and a benchmark status file), but typed and atomic.
//!
//! - `<ROLE>.json`: where a role serves, its log, and its state (`starting`, `ready`, `failed` with a
//!   reason, `stopped`). Written atomically, so a reader never sees half a record.
//! - `benchmark_status.txt`: `done`, or `failed: <reason>`. Written once by BENCHMARK; every other
//!   role shuts its server down when it appears.

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::fsutil::write_atomic;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RoleState {
    Starting,
    Ready,
    Failed,
    Stopped,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RoleRecord {
    pub role: String,
    pub host: String,
    pub port: u16,
    #[serde(default)]
    pub bootstrap_port: Option<u16>,
    /// The server's own log (what a failure shows the tail of).
    pub log: PathBuf,
    pub state: RoleState,
    #[serde(default)]
    pub reason: Option<String>,
    #[serde(default)]
    pub pid: Option<u32>,
    /// Seconds since the epoch of the last change.
    pub updated: f64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status {
    Done,
    Failed(String),
}

#[derive(Debug, Clone)]
pub struct Rendezvous {
    dir: PathBuf,
}

pub const STATUS_FILE: &str = "benchmark_status.txt";

fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

impl Rendezvous {
    pub fn new(dir: &Path) -> Rendezvous {
        Rendezvous {
            dir: dir.to_path_buf(),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn record_path(&self, role: &str) -> PathBuf {
        self.dir.join(format!("{role}.json"))
    }

    pub fn publish(&self, record: &mut RoleRecord) -> Result<(), String> {
        record.updated = now();
        record.reason = record.reason.as_deref().map(crate::secrets::redact);
        let bytes = serde_json::to_vec_pretty(record).expect("record serializes");
        let path = self.record_path(&record.role);
        write_atomic(&path, &bytes).map_err(|e| format!("failed to write {}: {e}", path.display()))
    }

    /// `None` until the role has published (or when its file cannot be read yet).
    pub fn read(&self, role: &str) -> Option<RoleRecord> {
        let bytes = std::fs::read(self.record_path(role)).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    pub fn status(&self) -> Option<Status> {
        let text = std::fs::read_to_string(self.dir.join(STATUS_FILE)).ok()?;
        let line = text.lines().next().unwrap_or("").trim();
        Some(if line == "done" {
            Status::Done
        } else {
            Status::Failed(
                text.trim()
                    .strip_prefix("failed:")
                    .unwrap_or(text.trim())
                    .trim()
                    .to_owned(),
            )
        })
    }

    pub fn set_status(&self, status: &Status) -> Result<(), String> {
        let text = match status {
            Status::Done => "done\n".to_owned(),
            Status::Failed(reason) => format!("failed: {}\n", crate::secrets::redact(reason)),
        };
        let path = self.dir.join(STATUS_FILE);
        write_atomic(&path, text.as_bytes())
            .map_err(|e| format!("failed to write {}: {e}", path.display()))
    }

    /// The job directory of job `job_id` under the case's output directory (`job-<id>`): where
    /// every job step writes, and where the harness reads.
    pub fn for_job(case_out: &Path, job_id: &str) -> Rendezvous {
        Rendezvous::new(&case_out.join(format!("job-{job_id}")))
    }

    /// The job directory of the job this process runs in (`nojob` outside a job).
    pub fn for_this_job(case_out: &Path) -> Rendezvous {
        let job = crate::env::job_id().unwrap_or_else(|| "nojob".to_owned());
        Rendezvous::for_job(case_out, &job)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_and_status_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let r = Rendezvous::new(dir.path());
        assert_eq!(r.read("CTX_0"), None);
        assert_eq!(r.status(), None);
        let mut rec = RoleRecord {
            role: "CTX_0".into(),
            host: "127.0.0.1".into(),
            port: 8001,
            bootstrap_port: None,
            log: dir.path().join("vllm.0.CTX_0.log"),
            state: RoleState::Starting,
            reason: None,
            pid: Some(42),
            updated: 0.0,
        };
        r.publish(&mut rec).unwrap();
        assert!(rec.updated > 0.0);
        assert_eq!(r.read("CTX_0"), Some(rec));
        r.set_status(&Status::Failed("GEN_0: exited\nwith tail".into()))
            .unwrap();
        assert_eq!(
            r.status(),
            Some(Status::Failed("GEN_0: exited\nwith tail".into()))
        );
        r.set_status(&Status::Done).unwrap();
        assert_eq!(r.status(), Some(Status::Done));
    }
}
