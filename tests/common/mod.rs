//! What the integration test targets share: the repository root, a child's output as text, and the
//! harness command every execution test starts from. Each target uses a part of it.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A finished child's stdout and stderr, for assertions and failure messages.
pub fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// `servetest test --config-dir <cases>` on `executor`, results in `out`: the local cluster profile,
/// a fast poll, CPU, and none of the caller's batch, debug or test-list settings.
pub fn harness_command(executor: &str, cases: &Path, out: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_servetest"));
    cmd.arg("test")
        .arg("--config-dir")
        .arg(cases)
        .env("SERVETEST_EXECUTOR", executor)
        .env("SERVETEST_CLUSTER", root().join("clusters/local.yaml"))
        .env("SERVETEST_POLL_INTERVAL", "0.5")
        .env("OUTPUT_PATH", out)
        .env("GPU_TYPE", "CPU")
        // Not recorded in a shared results history unless a test asks (tests/history.rs).
        .env("SERVETEST_DB", "off")
        .env_remove("DISAGG_BATCH_SIZE")
        .env_remove("DEBUG_MODE")
        .env_remove("SERVETEST_TEST_LIST");
    cmd
}

/// A disaggregated case's only job directory (`<OUTPUT_PATH>/<case>/job-<id>`).
pub fn job_dir(out: &Path, case: &str) -> Option<PathBuf> {
    std::fs::read_dir(out.join(case))
        .ok()?
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("job-"))
        })
}

/// A role's rendezvous record (`<job>/<ROLE>.json`), once it wrote one.
pub fn record(job: &Path, role: &str) -> Option<serde_json::Value> {
    serde_json::from_slice(&std::fs::read(job.join(format!("{role}.json"))).ok()?).ok()
}

/// A listening TCP socket of a process: (process name, local address as `ip:port`).
pub type Listener = (String, String);

/// Every listening TCP socket (IPv4 and IPv6) held by process `root` or its descendants. (Found by
/// parentage, not by environment: vllm-router rewrites its process title over its environment.)
pub fn listeners_of(root: u32) -> Vec<Listener> {
    let mut by_inode = std::collections::HashMap::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        for line in std::fs::read_to_string(table)
            .unwrap_or_default()
            .lines()
            .skip(1)
        {
            let f: Vec<&str> = line.split_whitespace().collect();
            // sl local rem st … inode (field 9); st 0A = LISTEN.
            if f.len() > 9 && f[3] == "0A" {
                by_inode.insert(f[9].to_owned(), proc_net_address(f[1]));
            }
        }
    }
    let mut found = Vec::new();
    for pid in descendants(root) {
        let dir = PathBuf::from(format!("/proc/{pid}"));
        let comm = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
        let Ok(fds) = std::fs::read_dir(dir.join("fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            let link = std::fs::read_link(fd.path()).unwrap_or_default();
            let link = link.to_string_lossy();
            if let Some(inode) = link
                .strip_prefix("socket:[")
                .and_then(|l| l.strip_suffix(']'))
            {
                if let Some(addr) = by_inode.get(inode) {
                    found.push((comm.trim().to_owned(), addr.clone()));
                }
            }
        }
    }
    found
}

/// One process as /proc shows it.
pub struct Proc {
    pub pid: u32,
    pub ppid: u32,
    /// Arguments joined by spaces (a process title as it set it).
    pub cmdline: String,
    pub zombie: bool,
}

impl Proc {
    /// Whether its environment holds exactly `KEY=VALUE`.
    pub fn has_env(&self, kv: &str) -> bool {
        std::fs::read(format!("/proc/{}/environ", self.pid))
            .unwrap_or_default()
            .split(|b| *b == 0)
            .any(|e| e == kv.as_bytes())
    }
}

/// Every process on the machine (one that ends while it is read is skipped).
pub fn processes() -> Vec<Proc> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // pid (comm) state ppid …; comm may hold spaces and parentheses.
        let mut rest = stat
            .rsplit_once(") ")
            .map(|(_, r)| r)
            .unwrap_or("")
            .split_whitespace();
        let zombie = rest.next() == Some("Z");
        let ppid = rest.next().and_then(|p| p.parse().ok()).unwrap_or(0);
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        out.push(Proc {
            pid,
            ppid,
            cmdline: String::from_utf8_lossy(&cmdline).replace('\0', " "),
            zombie,
        });
    }
    out
}

/// Command lines of live (not zombie) processes that mention `needle`.
pub fn live_processes_mentioning(needle: &str) -> Vec<String> {
    processes()
        .into_iter()
        .filter(|p| !p.zombie && p.cmdline.contains(needle))
        .map(|p| p.cmdline)
        .collect()
}

/// `root` and every process below it.
pub fn descendants(root: u32) -> Vec<u32> {
    let all = processes();
    let mut tree = vec![root];
    let mut i = 0;
    while i < tree.len() {
        let p = tree[i];
        tree.extend(all.iter().filter(|c| c.ppid == p).map(|c| c.pid));
        i += 1;
    }
    tree
}

/// `0100007F:1F90` → `127.0.0.1:8080`; IPv6 as four little-endian words.
pub fn proc_net_address(field: &str) -> String {
    let (ip, port) = field.split_once(':').unwrap_or((field, "0"));
    let port = u16::from_str_radix(port, 16).unwrap_or(0);
    let bytes: Vec<u8> = (0..ip.len() / 2)
        .map(|i| u8::from_str_radix(&ip[2 * i..2 * i + 2], 16).unwrap_or(0))
        .collect();
    let ip: std::net::IpAddr = if bytes.len() == 4 {
        std::net::Ipv4Addr::new(bytes[3], bytes[2], bytes[1], bytes[0]).into()
    } else {
        let mut b = [0u8; 16];
        for (word, chunk) in bytes.chunks(4).enumerate() {
            for (i, byte) in chunk.iter().rev().enumerate() {
                b[word * 4 + i] = *byte;
            }
        }
        std::net::Ipv6Addr::from(b).into()
    };
    std::net::SocketAddr::new(ip, port).to_string()
}

/// A simulator on a free loopback port; killed (and reaped) on drop.
pub struct Sim {
    child: std::process::Child,
    pub url: String,
    _dir: tempfile::TempDir,
}

impl Sim {
    /// `servetest sim-server` with a 2 ms TTFT and 1 ms between chunks.
    pub fn start() -> Sim {
        let dir = tempfile::tempdir().unwrap();
        let ready = dir.path().join("url");
        let child = Command::new(env!("CARGO_BIN_EXE_servetest"))
            .args([
                "sim-server",
                "--ttft-ms",
                "2",
                "--itl-ms",
                "1",
                "--ready-file",
            ])
            .arg(&ready)
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap();
        for _ in 0..200 {
            if std::fs::read_to_string(&ready).is_ok_and(|s| s.ends_with('\n')) {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        let url = std::fs::read_to_string(&ready).unwrap().trim().to_owned();
        Sim {
            child,
            url,
            _dir: dir,
        }
    }
}

impl Drop for Sim {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Planted values and where they must never show: command lines of running processes (sampled on a
/// thread while a run is live), and files under given directories (searched afterwards). Also proves
/// delivery: the environment of some process held each value (`/proc/*/environ`, readable as root).
pub struct PlantedSecrets {
    values: Vec<String>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    sampler: Option<std::thread::JoinHandle<(Vec<String>, std::collections::BTreeSet<String>)>>,
}

impl PlantedSecrets {
    /// Starts sampling every 100 ms.
    pub fn watch(values: &[&str]) -> PlantedSecrets {
        let values: Vec<String> = values.iter().map(|v| (*v).to_owned()).collect();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (vals, flag) = (values.clone(), stop.clone());
        let sampler = std::thread::spawn(move || {
            let mut leaks = Vec::new();
            let mut delivered = std::collections::BTreeSet::new();
            while !flag.load(std::sync::atomic::Ordering::Relaxed) {
                for p in processes() {
                    for v in &vals {
                        if p.cmdline.contains(v.as_str()) {
                            leaks
                                .push(format!("/proc/{}/cmdline `{}` holds {v}", p.pid, p.cmdline));
                        }
                        let environ =
                            std::fs::read(format!("/proc/{}/environ", p.pid)).unwrap_or_default();
                        if environ.windows(v.len()).any(|w| w == v.as_bytes()) {
                            delivered.insert(v.clone());
                        }
                    }
                }
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
            (leaks, delivered)
        });
        PlantedSecrets {
            values,
            stop,
            sampler: Some(sampler),
        }
    }

    /// Stops sampling; returns the command-line leaks and the values seen in some environment.
    pub fn finish(mut self) -> (Vec<String>, std::collections::BTreeSet<String>) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.sampler.take().unwrap().join().unwrap()
    }

    /// Every (file, value) under `dirs` whose bytes hold a planted value; also how many files were read.
    pub fn in_files(&self, dirs: &[&Path]) -> (Vec<String>, usize) {
        let mut found = Vec::new();
        let mut read = 0;
        for dir in dirs {
            for entry in walkdir::WalkDir::new(dir).into_iter().flatten() {
                if !entry.file_type().is_file() {
                    continue;
                }
                let Ok(bytes) = std::fs::read(entry.path()) else {
                    continue;
                };
                read += 1;
                for v in &self.values {
                    if bytes.windows(v.len()).any(|w| w == v.as_bytes()) {
                        found.push(format!("{} holds {v}", entry.path().display()));
                    }
                }
            }
        }
        (found, read)
    }
}

/// The local SLURM cluster's state, spool and log directories (scripts/slurm-up).
pub fn slurm_dirs() -> Vec<PathBuf> {
    let dir = std::env::var_os("SERVETEST_SLURM_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join(".slurm"));
    ["state", "spool", "log"]
        .iter()
        .map(|d| dir.join(d))
        .collect()
}
