//! Cases across the nodes of a real multi-node SLURM cluster: `scripts/slurm-up --nodes 3` starts
//! three slurmd daemons, each in its own network and UTS namespace (docs/multinode.md), and
//! clusters/multinode.yaml places roles as upstream does. Tests named `sim_*` put servetest's
//! simulator where the engine would be (tests/fixtures/engines/sim-engine). The faults break one node
//! for real (its slurmd and processes killed; its veth down) and restore it before they return.
//! Run by scripts/test with `--features perf -- --test-threads=1` after `scripts/slurm-up --nodes 3`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

mod common;
use common::{harness_command, job_dir, live_processes_mentioning, record, root, text};

const CASES: &str = "tests/exec_configs/multinode";
const SIM: &str = "tests/fixtures/engines/sim-engine";
const SIM_3: &str = "disagg_perf_multinode-sim_ctx2_tp1_bs8_gen1_tp1_bs8_ccb-STORAGE";
const SIM_LONG: &str = "disagg_perf_multinode-sim-long_ctx1_tp1_bs8_gen1_tp1_bs8_ccb-STORAGE";
const TWO_NODES: &str = "script_perf_multinode-two-nodes";

/// A node of the cluster as SLURM knows it.
#[derive(Debug, Clone)]
struct Node {
    name: String,
    addr: String,
    /// Its network namespace (`stn<i>` for `stnode<i>`, scripts/lib/nodes.sh).
    ns: String,
    /// This machine's end of its veth.
    veth: String,
}

/// scripts/lib/nodes.sh's naming: `SERVETEST_NODE_PREFIX` (default `st`).
fn prefix() -> String {
    std::env::var("SERVETEST_NODE_PREFIX").unwrap_or_else(|_| "st".into())
}

fn slurm_dir() -> PathBuf {
    std::env::var_os("SERVETEST_SLURM_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join(".slurm"))
}

/// The cluster's nodes, in SLURM's order; fails unless it has at least three.
fn nodes() -> Vec<Node> {
    let p = prefix();
    let out = Command::new("scontrol")
        .args(["-o", "show", "nodes"])
        .output()
        .expect("scontrol (scripts/slurm-up --nodes 3)");
    let found: Vec<Node> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let field = |k: &str| {
                l.split_whitespace()
                    .find_map(|w| w.strip_prefix(k).map(str::to_owned))
            };
            let name = field("NodeName=")?;
            let index = name.strip_prefix(&format!("{p}node"))?.to_owned();
            Some(Node {
                addr: field("NodeAddr=")?,
                ns: format!("{p}n{index}"),
                veth: format!("{p}v{index}"),
                name,
            })
        })
        .collect();
    assert!(
        found.len() >= 3,
        "needs the 3-node cluster: eval \"$(scripts/slurm-up --nodes 3)\" (found {found:?})"
    );
    found
}

fn harness(out: &Path, case: &str) -> Command {
    let mut cmd = harness_command("slurm", &root().join(CASES), out);
    cmd.args(["--exact", case])
        .current_dir(root())
        .env("SERVETEST_CLUSTER", root().join("clusters/multinode.yaml"))
        .env("SERVETEST_ENGINE_PYTHON", root().join(SIM));
    cmd
}

/// Starts the harness with its output in a file (a pipe nobody reads while the test polls could
/// fill and stall it); `finish` collects it.
fn spawn(out: &Path, case: &str) -> Child {
    let log = std::fs::File::create(out.join("harness.out")).unwrap();
    harness(out, case)
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap()
}

/// Waits for the harness (at most 10 minutes) and returns whether it passed, and what it printed.
fn finish(mut child: Child, out: &Path) -> (bool, String) {
    let deadline = Instant::now() + Duration::from_secs(600);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the harness ran for over 10 minutes");
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let text = std::fs::read_to_string(out.join("harness.out")).unwrap_or_default();
    (status.success(), text)
}

fn host_of(job: &Path, role: &str) -> String {
    record(job, role).unwrap_or_else(|| panic!("{role} published nothing"))["host"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// Processes in `ns`, read from this machine's /proc.
fn pids_in(ns: &str) -> Vec<u32> {
    let out = Command::new("ip")
        .args(["netns", "pids", ns])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

/// Every listening TCP socket of the job's processes in `ns` as (program, address). SLURM's own
/// daemons (slurmd, slurmstepd, srun) are not the job's and are left out. /proc/PID/net shows the
/// sockets of that process's namespace.
fn job_listeners(ns: &str) -> Vec<(String, String)> {
    let mut found = Vec::new();
    for pid in pids_in(ns) {
        let dir = PathBuf::from(format!("/proc/{pid}"));
        let comm = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
        let comm = comm.trim().to_owned();
        if ["slurmd", "slurmstepd", "srun"].contains(&comm.as_str()) {
            continue;
        }
        let mut by_inode = std::collections::HashMap::new();
        for table in ["net/tcp", "net/tcp6"] {
            for line in std::fs::read_to_string(dir.join(table))
                .unwrap_or_default()
                .lines()
                .skip(1)
            {
                let f: Vec<&str> = line.split_whitespace().collect();
                if f.len() > 9 && f[3] == "0A" {
                    by_inode.insert(f[9].to_owned(), common::proc_net_address(f[1]));
                }
            }
        }
        let Ok(fds) = std::fs::read_dir(dir.join("fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            let link = std::fs::read_link(fd.path()).unwrap_or_default();
            let link = link.to_string_lossy().into_owned();
            if let Some(addr) = link
                .strip_prefix("socket:[")
                .and_then(|l| l.strip_suffix(']'))
                .and_then(|inode| by_inode.get(inode))
            {
                found.push((comm.clone(), addr.clone()));
            }
        }
    }
    found
}

fn ip_of(addr: &str) -> &str {
    addr.rsplit_once(':')
        .map_or(addr, |(ip, _)| ip)
        .trim_matches(['[', ']'])
}

/// Waits until GEN_0 serves and the client runs, then returns the job directory.
fn wait_for_load(child: &mut Child, out: &Path, case: &str) -> PathBuf {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if let Some(job) = job_dir(out, case) {
            let ready = record(&job, "GEN_0").is_some_and(|r| r["state"] == "ready");
            if ready && job.join("benchmark.client.log").exists() {
                std::thread::sleep(Duration::from_secs(2));
                return job;
            }
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("the run ended ({status}) before the benchmark started");
        }
        assert!(Instant::now() < deadline, "the benchmark did not start");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Starts the long simulated load and waits until it runs; returns the harness, the job directory
/// and GEN_0's node (the one the fault tests break).
fn start_loaded(nodes: &[Node], out: &Path) -> (Child, PathBuf, Node) {
    let mut child = spawn(out, SIM_LONG);
    let job = wait_for_load(&mut child, out, SIM_LONG);
    let gen = host_of(&job, "GEN_0");
    let node = nodes
        .iter()
        .find(|n| n.name == gen)
        .unwrap_or_else(|| panic!("GEN_0 ran on {gen}, not a node of {nodes:?}"))
        .clone();
    (child, job, node)
}

/// No process of the run is left on any node (or on this machine) once it ended.
fn assert_nothing_left(out: &Path) {
    let needle = out.display().to_string();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let left = live_processes_mentioning(&needle);
        if left.is_empty() {
            return;
        }
        assert!(Instant::now() < deadline, "left running: {left:#?}");
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Brings every node back (scripts/slurm-up restarts a dead slurmd, recreating its namespace if
/// needed) and waits until SLURM has all of them idle again.
fn restore_cluster() {
    let o = Command::new(root().join("scripts/slurm-up"))
        .args(["--nodes", "3"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(o.status.success(), "slurm-up --nodes 3:\n{}", text(&o));
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let o = Command::new("sinfo")
            .args(["-h", "-N", "-o", "%T"])
            .output()
            .unwrap();
        let states = String::from_utf8_lossy(&o.stdout).into_owned();
        if states.lines().filter(|s| s.trim() == "idle").count() >= 3 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the nodes did not come back: {states}"
        );
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// Restores the cluster even when the test panics, so later tests find three nodes. (A panic
/// inside it while the test is already panicking would abort and hide the test's own failure: it
/// only reports then.)
struct Restore<F: FnMut() + std::panic::UnwindSafe + Clone>(F);
impl<F: FnMut() + std::panic::UnwindSafe + Clone> Drop for Restore<F> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            if std::panic::catch_unwind(self.0.clone()).is_err() {
                eprintln!("restoring the cluster failed too; run scripts/slurm-up --nodes 3");
            }
        } else {
            (self.0)();
        }
    }
}

#[test]
fn sim_roles_span_three_nodes_placed_as_upstream_and_bound_to_their_own_addresses() {
    let nodes = nodes();
    let out = tempfile::tempdir().unwrap();
    let mut child = spawn(out.path(), SIM_3);
    // Sample every listener of the job's processes on every node while the job runs.
    let mut seen: Vec<(String, String, String)> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(300);
    while child.try_wait().unwrap().is_none() && Instant::now() < deadline {
        for n in &nodes {
            for (comm, addr) in job_listeners(&n.ns) {
                let entry = (n.name.clone(), comm, addr);
                if !seen.contains(&entry) {
                    seen.push(entry);
                }
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let (passed, all) = finish(child, out.path());
    assert!(passed, "{all}");
    for (node, comm, addr) in &seen {
        let own = &nodes.iter().find(|n| &n.name == node).unwrap().addr;
        let ip = ip_of(addr);
        assert!(
            ip == own || ip == "127.0.0.1" || ip == "::1",
            "{comm} on {node} listens on {addr}: not the node's own address {own} or loopback"
        );
    }
    // Each node served: CTX_0, CTX_1 and GEN_0 (with the router) on a node of their own.
    for n in &nodes[..3] {
        assert!(
            seen.iter()
                .any(|(node, _, addr)| node == &n.name && ip_of(addr) == n.addr),
            "nothing listened on {} ({}): {seen:?}",
            n.name,
            n.addr
        );
    }
    // Upstream's placement: workers in order CTX then GEN, a node each; the router on GEN_0's node;
    // the client on the allocation's first node.
    let job = job_dir(out.path(), SIM_3).unwrap();
    let names: Vec<&str> = nodes.iter().map(|n| n.name.as_str()).collect();
    for (role, node) in [
        ("CTX_0", names[0]),
        ("CTX_1", names[1]),
        ("GEN_0", names[2]),
        ("DISAGG_SERVER", names[2]),
        ("BENCHMARK", names[0]),
    ] {
        assert_eq!(host_of(&job, role), node, "{role}");
    }
    // The router reached the workers on other nodes by host name.
    let router_log =
        std::fs::read_to_string(out.path().join(SIM_3).join("disagg_server.log")).unwrap();
    let ctx1 = record(&job, "CTX_1").unwrap();
    assert!(
        router_log.contains(&format!("--prefill http://{}:{}", names[1], ctx1["port"])),
        "{router_log}"
    );
    let csv = std::fs::read_to_string(out.path().join("servetest_results.csv")).unwrap();
    for con in [1, 2] {
        assert!(
            csv.lines()
                .any(|l| l.starts_with(SIM_3) && l.contains(&format!(",{con},COMPLETED,"))),
            "no row for concurrency {con}:\n{csv}"
        );
    }
    assert_nothing_left(out.path());
}

#[test]
fn sim_node_killed_mid_job_fails_with_node_fail_naming_it_and_the_rest_still_runs() {
    let nodes = nodes();
    let out = tempfile::tempdir().unwrap();
    let _restore = Restore(restore_cluster);
    let (child, _job, victim) = start_loaded(&nodes, out.path());
    // The node crashes: its slurmd and every process on it die at once.
    let pidfile = slurm_dir().join(format!("run/slurmd.{}.pid", victim.name));
    let slurmd = std::fs::read_to_string(&pidfile).unwrap();
    let _ = Command::new("kill").args(["-KILL", slurmd.trim()]).status();
    for pid in pids_in(&victim.ns) {
        let _ = Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .status();
    }
    let (passed, all) = finish(child, out.path());
    assert!(!passed, "the trial should fail:\n{all}");
    assert!(all.contains("NODE_FAIL"), "{all}");
    assert!(
        all.contains(&format!("failed node: {}", victim.name)),
        "the failed node is not named:\n{all}"
    );
    assert_nothing_left(out.path());
    // Another case still runs, on the two nodes that remain.
    let out2 = tempfile::tempdir().unwrap();
    let o = harness(out2.path(), TWO_NODES).output().unwrap();
    assert!(o.status.success(), "{}", text(&o));
    for step in ["first", "second"] {
        let log = std::fs::read_to_string(out2.path().join(TWO_NODES).join(format!("{step}.log")))
            .unwrap();
        assert!(log.contains(&format!("ran on {}node", prefix())), "{log}");
        assert!(
            !log.contains(&victim.name),
            "{step} ran on the failed node: {log}"
        );
    }
}

#[test]
fn sim_partitioned_node_is_named_by_the_benchmark_instead_of_hanging() {
    let nodes = nodes();
    let out = tempfile::tempdir().unwrap();
    let _restore = Restore(restore_cluster);
    let (child, job, victim) = start_loaded(&nodes, out.path());
    let link = |state: &str| {
        let ok = Command::new("ip")
            .args(["link", "set", &victim.veth, state])
            .status()
            .unwrap()
            .success();
        assert!(ok, "ip link set {} {state}", victim.veth);
    };
    link("down");
    let veth = victim.veth.clone();
    let _link_up = Restore(move || {
        let _ = Command::new("ip")
            .args(["link", "set", &veth, "up"])
            .status();
    });
    // The benchmark (on another node) names the role it cannot reach, in its status, well before
    // SLURM's own timeout (45 s) could fail the job.
    let started = Instant::now();
    let status_file = job.join("benchmark_status.txt");
    let status = loop {
        if let Ok(s) = std::fs::read_to_string(&status_file) {
            if !s.trim().is_empty() {
                break s;
            }
        }
        assert!(
            started.elapsed() < Duration::from_secs(90),
            "the benchmark wrote no status within 90 s of the partition: hanging"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(40),
        "the benchmark named the partitioned role only after {took:?}: SLURM's 45 s node timeout could fail the job first"
    );
    assert!(status.starts_with("failed"), "{status}");
    assert!(
        (status.contains("GEN_0") || status.contains("DISAGG_SERVER"))
            && status.contains("unreachable")
            && status.contains(&victim.name),
        "the status does not name the unreachable role on {}: {status}",
        victim.name
    );
    // The partition heals; the job ends (its roles stop on the status file) and the trial fails
    // with the benchmark's reason.
    link("up");
    let (passed, all) = finish(child, out.path());
    assert!(!passed, "the trial should fail:\n{all}");
    assert!(all.contains("unreachable"), "{all}");
    eprintln!("the benchmark named the unreachable role after {took:?}");
    assert_nothing_left(out.path());
}
