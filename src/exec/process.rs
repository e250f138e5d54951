//! Children in their own process group, so that a server and everything it forks (vLLM's engine
//! core, tokenizer workers) are stopped together: SIGTERM to the group, a grace period, then SIGKILL.
//! A `GroupChild` dropped while running kills its group, so a panic never leaves servers behind.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use tokio::process::{Child, Command};

/// A program and its arguments — never a shell string — plus extra environment.
#[derive(Clone, PartialEq, Eq)]
pub struct CommandSpec {
    pub program: PathBuf,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    /// Working directory (default: inherited).
    pub cwd: Option<PathBuf>,
}

/// Environment values may hold tokens: only names are shown.
impl std::fmt::Debug for CommandSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let env: Vec<String> = self
            .env
            .iter()
            .map(|(k, _)| format!("{k}=<redacted>"))
            .collect();
        f.debug_struct("CommandSpec")
            .field("program", &self.program)
            .field("args", &self.args)
            .field("env", &env)
            .finish()
    }
}

impl CommandSpec {
    /// The command as a copy-pasteable, shell-quoted line (environment names only).
    pub fn display_line(&self) -> String {
        let mut words = vec![self.program.display().to_string()];
        words.extend(self.args.iter().cloned());
        shell_words::join(words)
    }
}

#[derive(Debug)]
pub struct GroupChild {
    name: String,
    child: Child,
    pgid: Pid,
    log: PathBuf,
    /// The log's length when this process started: what it wrote begins here (logs are appended to).
    log_start: u64,
}

impl GroupChild {
    /// Starts `spec` as the leader of a new process group, stdout and stderr appended to `log`.
    pub fn spawn(name: &str, spec: &CommandSpec, log: &Path) -> std::io::Result<GroupChild> {
        if let Some(dir) = log.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let out = File::options().create(true).append(true).open(log)?;
        let log_start = out.metadata()?.len();
        let err = out.try_clone()?;
        let mut cmd = Command::new(&spec.program);
        cmd.args(&spec.args)
            .envs(spec.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .process_group(0);
        if let Some(dir) = &spec.cwd {
            cmd.current_dir(dir);
        }
        let child = cmd.spawn().map_err(|e| {
            std::io::Error::new(
                e.kind(),
                format!("failed to start {name} ({}): {e}", spec.program.display()),
            )
        })?;
        let pid = child.id().expect("a just-spawned child has a pid");
        Ok(GroupChild {
            name: name.to_owned(),
            child,
            pgid: Pid::from_raw(pid as i32),
            log: log.to_path_buf(),
            log_start,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn pgid(&self) -> i32 {
        self.pgid.as_raw()
    }

    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// The log's length when this process started.
    pub fn log_start(&self) -> u64 {
        self.log_start
    }

    /// `Some(status)` once the group leader has exited.
    pub fn try_exited(&mut self) -> std::io::Result<Option<ExitStatus>> {
        self.child.try_wait()
    }

    pub async fn wait(&mut self) -> std::io::Result<ExitStatus> {
        self.child.wait().await
    }

    /// SIGTERM to the group, up to `grace` for the leader to exit, then SIGKILL to whatever is left
    /// in the group (also after a clean exit: forked helpers may outlive the leader).
    pub async fn terminate(&mut self, grace: Duration) -> std::io::Result<ExitStatus> {
        let _ = killpg(self.pgid, Signal::SIGTERM);
        let status = match tokio::time::timeout(grace, self.child.wait()).await {
            Ok(status) => status?,
            Err(_) => {
                let _ = killpg(self.pgid, Signal::SIGKILL);
                self.child.wait().await?
            }
        };
        let _ = killpg(self.pgid, Signal::SIGKILL);
        Ok(status)
    }
}

impl Drop for GroupChild {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) || !live_members(self.pgid()).is_empty() {
            let _ = killpg(self.pgid, Signal::SIGKILL);
        }
    }
}

/// Live (non-zombie) processes in process group `pgid`, as `(pid, command name)`, read from /proc.
/// Zombies are left out: here PID 1 may reap re-parented children late.
pub fn live_members(pgid: i32) -> Vec<(i32, String)> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            // `pid (comm) state ppid pgrp …`; comm may contain spaces and parentheses.
            let close = stat.rfind(')')?;
            let comm = stat[stat.find('(')? + 1..close].to_owned();
            let mut rest = stat[close + 1..].split_whitespace();
            let state = rest.next()?;
            let pgrp: i32 = rest.nth(1)?.parse().ok()?;
            (pgrp == pgid && state != "Z").then_some((pid, comm))
        })
        .collect()
}

/// Runs `cmd` to its end with stdout and stderr in a fresh `log` file.
pub fn run_to_log(cmd: &mut std::process::Command, log: &Path) -> std::io::Result<ExitStatus> {
    let out = File::create(log)?;
    cmd.stdout(out.try_clone()?).stderr(out).status()
}

/// The last `n` lines of a log file (reads at most the last 256 KiB).
pub fn log_tail(path: &Path, n: usize) -> String {
    log_tail_from(path, 0, n)
}

/// The last `n` lines of `path` at or after byte `from`.
pub fn log_tail_from(path: &Path, from: u64, n: usize) -> String {
    const WINDOW: u64 = 256 * 1024;
    let Ok(mut file) = File::open(path) else {
        return format!("(no log at {})", path.display());
    };
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = file.seek(SeekFrom::Start(len.saturating_sub(WINDOW).max(from)));
    let mut buf = Vec::new();
    let _ = file.read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf);
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(script: &str) -> CommandSpec {
        CommandSpec {
            program: "/bin/sh".into(),
            args: vec!["-c".into(), script.into()],
            env: vec![("SECRET_TOKEN".into(), "hunter2".into())],
            cwd: None,
        }
    }

    #[tokio::test]
    async fn terminate_stops_the_whole_group_including_forked_children() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("x.log");
        // The leader forks a grandchild that ignores SIGTERM; SIGKILL after the grace must get it.
        let mut child = GroupChild::spawn(
            "x",
            &sh("(trap '' TERM; sleep 60) & echo started; wait"),
            &log,
        )
        .unwrap();
        let pgid = child.pgid();
        for _ in 0..50 {
            if log_tail(&log, 1).contains("started") && live_members(pgid).len() >= 2 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(live_members(pgid).len() >= 2, "{:?}", live_members(pgid));
        child.terminate(Duration::from_millis(300)).await.unwrap();
        for _ in 0..50 {
            if live_members(pgid).is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(live_members(pgid).is_empty(), "{:?}", live_members(pgid));
    }

    #[tokio::test]
    async fn dropping_a_running_child_kills_its_group() {
        let dir = tempfile::tempdir().unwrap();
        let child = GroupChild::spawn("y", &sh("sleep 60"), &dir.path().join("y.log")).unwrap();
        let pgid = child.pgid();
        drop(child);
        for _ in 0..50 {
            if live_members(pgid).is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(live_members(pgid).is_empty());
    }

    #[tokio::test]
    async fn a_rerun_sees_only_its_own_log_lines() {
        // `servetest serve --log FILE` appends: the old run's Traceback is not this run's error.
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("server.log");
        std::fs::write(&log, "Traceback (most recent call last)\nold line\n").unwrap();
        let mut child = GroupChild::spawn("s", &sh("echo new line"), &log).unwrap();
        child.wait().await.unwrap();
        let own = log_tail_from(&log, child.log_start(), 10);
        assert_eq!(own, "new line");
        assert!(
            log_tail(&log, 10).contains("Traceback"),
            "the old lines stay in the file"
        );
    }

    #[test]
    fn debug_redacts_env_values_and_display_quotes() {
        let spec = sh("echo 'a b'; rm -rf x");
        assert!(!format!("{spec:?}").contains("hunter2"));
        assert_eq!(
            spec.display_line(),
            "/bin/sh -c 'echo '\\''a b'\\''; rm -rf x'"
        );
    }

    #[test]
    fn tail_returns_last_lines() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("l");
        std::fs::write(&p, "1\n2\n3\n4\n").unwrap();
        assert_eq!(log_tail(&p, 2), "3\n4");
        assert!(log_tail(&dir.path().join("none"), 2).contains("no log"));
    }
}
