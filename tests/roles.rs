//! The serving-role choreography of disaggregated cases (CTX/GEN servers, the vllm-router in PD mode,
//! BENCHMARK), on the local SLURM cluster and the local executor, and how it fails: a server that never
//! becomes healthy, a server killed mid-benchmark, a hung (stopped) server. Tests named `sim_*` put
//! servetest's simulator where the engine would be (tests/fixtures/engines); tests named `real_*` run
//! the real vLLM CPU engine with the tiny model and need scripts/engine-setup + make-tiny-model.
//! Run by scripts/test with `--features perf -- --test-threads=1` after `scripts/slurm-up`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use servetest::exec::process::live_members;

mod common;
use common::{
    harness_command, job_dir, listeners_of, live_processes_mentioning, record, root, text,
};

const SIM: &str = "tests/fixtures/engines/sim-engine";
const HANG: &str = "tests/fixtures/engines/hang-engine";

fn harness(executor: &str, tree: &str, out: &Path, filter: &str, engine: Option<&str>) -> Command {
    assert!(
        root().join(".venv/router/bin/vllm-router").exists(),
        "the vllm-router is missing: run scripts/engine-setup"
    );
    let mut cmd = harness_command(executor, &root().join(tree), out);
    cmd.args(["--exact", filter])
        .current_dir(root())
        .env_remove("SERVETEST_ENGINE_PYTHON");
    if let Some(engine) = engine {
        cmd.env("SERVETEST_ENGINE_PYTHON", root().join(engine));
    }
    cmd
}

const ROLES: [&str; 3] = ["CTX_0", "GEN_0", "DISAGG_SERVER"];

/// Every server a role started is gone: no live process is left in its process group.
fn assert_nothing_left(job: &Path) {
    let deadline = Instant::now() + Duration::from_secs(20);
    for role in ROLES {
        let Some(pgid) = record(job, role).and_then(|r| r["pid"].as_i64()) else {
            continue;
        };
        loop {
            let left = live_members(pgid as i32);
            if left.is_empty() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{role}'s server group {pgid} left running: {left:?}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

fn tracker_state(out: &Path, case: &str) -> String {
    let t: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join(case).join("tracker.json")).unwrap())
            .unwrap();
    t["state"].as_str().unwrap_or_default().to_owned()
}

/// Waits until `role`'s server is up and the benchmark client has started, then returns its pgid.
fn wait_for_load(child: &mut Child, out: &Path, case: &str, role: &str, limit: Duration) -> i32 {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(job) = job_dir(out, case) {
            let ready = record(&job, role).filter(|r| r["state"] == "ready");
            let loading = job.join("benchmark.client.log").exists();
            if let (Some(r), true) = (ready, loading) {
                // Let some requests flow through both servers first.
                std::thread::sleep(Duration::from_secs(3));
                return r["pid"].as_i64().unwrap() as i32;
            }
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("the run ended ({status}) before the benchmark started");
        }
        assert!(
            Instant::now() < deadline,
            "the benchmark did not start within {limit:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn finish(child: Child) -> String {
    let o = child.wait_with_output().unwrap();
    assert!(!o.status.success(), "the trial should fail:\n{}", text(&o));
    text(&o)
}

const SIM_QUICK: &str = "disagg_perf_sim-quick_ctx1_tp1_bs8_gen1_tp1_bs8_ccb-STORAGE";
const SIM_LONG: &str = "disagg_perf_sim-long_ctx1_tp1_bs8_gen1_tp1_bs8_ccb-STORAGE";

#[test]
fn sim_choreography_runs_every_role_on_slurm_and_local() {
    for executor in ["slurm", "local"] {
        let out = tempfile::tempdir().unwrap();
        let o = harness(
            executor,
            "tests/exec_configs/roles",
            out.path(),
            SIM_QUICK,
            Some(SIM),
        )
        .output()
        .unwrap();
        let all = text(&o);
        assert!(o.status.success(), "{executor}:\n{all}");
        let job = job_dir(out.path(), SIM_QUICK).expect("a job directory");
        assert_eq!(
            std::fs::read_to_string(job.join("benchmark_status.txt")).unwrap(),
            "done\n"
        );
        for role in ROLES {
            let r = record(&job, role).unwrap_or_else(|| panic!("{role} published nothing"));
            assert_eq!(r["state"], "stopped", "{executor} {role}: {r}");
        }
        // The router was given both workers, in PD mode.
        let ctx = record(&job, "CTX_0").unwrap();
        let gen = record(&job, "GEN_0").unwrap();
        let router_log =
            std::fs::read_to_string(out.path().join(SIM_QUICK).join("disagg_server.log")).unwrap();
        assert!(
            router_log.contains("--vllm-pd-disaggregation")
                && router_log.contains(&format!("--prefill http://127.0.0.1:{}", ctx["port"]))
                && router_log.contains(&format!("--decode http://127.0.0.1:{}", gen["port"])),
            "{router_log}"
        );
        // Both stand-in servers came up where their roles said (their ready files name the port).
        let up = |r: &serde_json::Value| job.join(format!("sim-ready.{}", r["port"])).exists();
        assert!(up(&ctx) && up(&gen));
        let csv = std::fs::read_to_string(out.path().join("servetest_results.csv")).unwrap();
        for con in [1, 2] {
            assert!(
                csv.lines()
                    .any(|l| l.starts_with(SIM_QUICK) && l.contains(&format!(",{con},COMPLETED,"))),
                "{executor}: no row for concurrency {con}:\n{csv}"
            );
        }
        // Upstream's file under upstream's name, in upstream's schema: one row per default metric.
        let upstream =
            std::fs::read_to_string(out.path().join("perf_script_test_results.csv")).unwrap();
        let mut lines = upstream.lines();
        assert_eq!(
            lines.next(),
            Some(servetest::report::upstream::COLUMNS.join(",").as_str())
        );
        for con in [1, 2] {
            for metric in ["SERVER_MEDIAN_TTFT", "SERVER_MEDIAN_E2EL"] {
                let name = format!("test_benchmark[{SIM_QUICK}]_con:{con},");
                assert!(
                    upstream
                        .lines()
                        .any(|l| l.starts_with(&name) && l.ends_with(&format!(",{metric}"))),
                    "{executor}: no {metric} at {con}:\n{upstream}"
                );
            }
        }
        assert_nothing_left(&job);
    }
}

const SIM_SECRETS: &str = "disagg_perf_sim-secrets_ctx1_tp1_bs8_gen1_tp1_bs8_ccb-STORAGE";

/// Values planted in `worker_env_var` and `server_env_var`, under secret-looking and ordinary names,
/// reach the processes of the job (the stand-in servers, the router) on SLURM and locally, but no
/// file under OUTPUT_PATH (role records, logs, scripts, results), no file in SLURM's directories, no
/// command line of any process while the job runs, and no line the harness printed.
#[test]
fn sim_planted_secrets_reach_the_roles_and_nowhere_else() {
    const VALUES: [&str; 4] = [
        "st-planted-wk-5e1d",
        "st-planted-wp-88b0",
        "st-planted-sk-2a9c",
        "st-planted-sp-c3f7",
    ];
    for executor in ["slurm", "local"] {
        let out = tempfile::tempdir().unwrap();
        let runtime = tempfile::tempdir().unwrap();
        let watch = common::PlantedSecrets::watch(&VALUES);
        let o = harness(
            executor,
            "tests/exec_configs/roles",
            out.path(),
            SIM_SECRETS,
            Some(SIM),
        )
        .env("SERVETEST_RUNTIME_DIR", runtime.path())
        .output()
        .unwrap();
        let mut dirs: Vec<PathBuf> = vec![out.path().into(), runtime.path().into()];
        dirs.extend(common::slurm_dirs());
        let dir_refs: Vec<&Path> = dirs.iter().map(PathBuf::as_path).collect();
        let (in_files, read) = watch.in_files(&dir_refs);
        let (cmdlines, delivered) = watch.finish();
        let all = text(&o);
        assert!(o.status.success(), "{executor}:\n{all}");
        for v in VALUES {
            assert!(!all.contains(v), "{executor}: the harness printed {v}");
            assert!(delivered.contains(v), "{executor}: no process ever had {v}");
        }
        assert!(cmdlines.is_empty(), "{executor}: {cmdlines:#?}");
        assert!(in_files.is_empty(), "{executor}: {in_files:#?}");
        assert!(read >= 10, "{executor}: only {read} files read");
        assert_nothing_left(&job_dir(out.path(), SIM_SECRETS).unwrap());
    }
}

#[test]
fn sim_servers_that_never_become_healthy_fail_with_each_role_and_its_log_tail() {
    let out = tempfile::tempdir().unwrap();
    let o = harness(
        "local",
        "tests/exec_configs/roles",
        out.path(),
        SIM_LONG,
        Some(HANG),
    )
    .output()
    .unwrap();
    let all = text(&o);
    assert!(!o.status.success(), "{all}");
    assert!(
        all.contains("servers not healthy within 20 s (benchmark.server_timeout)"),
        "{all}"
    );
    for role in ["CTX_0: starting at http://127.0.0.1:", "GEN_0: starting at"] {
        assert!(all.contains(role), "{role}:\n{all}");
    }
    assert!(all.contains("hang-engine: loading the model"), "{all}");
    // Ended by the benchmark's verdict, not by the job's time limit.
    assert_eq!(tracker_state(out.path(), SIM_LONG), "FAILED");
    assert_nothing_left(&job_dir(out.path(), SIM_LONG).unwrap());
}

#[test]
fn sim_server_killed_mid_benchmark_fails_the_trial_and_ends_the_job_on_slurm() {
    let out = tempfile::tempdir().unwrap();
    let mut child = harness(
        "slurm",
        "tests/exec_configs/roles",
        out.path(),
        SIM_LONG,
        Some(SIM),
    )
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    let pgid = wait_for_load(
        &mut child,
        out.path(),
        SIM_LONG,
        "GEN_0",
        Duration::from_secs(60),
    );
    nix::sys::signal::killpg(
        nix::unistd::Pid::from_raw(pgid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let all = finish(child);
    assert!(
        all.contains("GEN_0 failed during the benchmark (concurrency 1): server exited with signal: 9 (SIGKILL)"),
        "{all}"
    );
    assert!(
        all.contains("sim-engine: serving"),
        "the GEN_0 log tail:\n{all}"
    );
    assert_eq!(tracker_state(out.path(), SIM_LONG), "FAILED");
    let job = job_dir(out.path(), SIM_LONG).unwrap();
    let status = std::fs::read_to_string(job.join("benchmark_status.txt")).unwrap();
    assert!(status.starts_with("failed: GEN_0 failed"), "{status}");
    assert_nothing_left(&job);
}

#[test]
fn sim_hung_server_is_reported_as_not_answering() {
    let out = tempfile::tempdir().unwrap();
    let mut child = harness(
        "local",
        "tests/exec_configs/roles",
        out.path(),
        SIM_LONG,
        Some(SIM),
    )
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    let pgid = wait_for_load(
        &mut child,
        out.path(),
        SIM_LONG,
        "GEN_0",
        Duration::from_secs(60),
    );
    // A stopped process keeps its port open but never answers: what a wedged server looks like.
    nix::sys::signal::killpg(
        nix::unistd::Pid::from_raw(pgid),
        nix::sys::signal::Signal::SIGSTOP,
    )
    .unwrap();
    let all = finish(child);
    assert!(
        all.contains("GEN_0 stopped answering http://127.0.0.1:"),
        "{all}"
    );
    assert_eq!(tracker_state(out.path(), SIM_LONG), "FAILED");
    assert_nothing_left(&job_dir(out.path(), SIM_LONG).unwrap());
}

#[test]
fn sim_benchmark_killed_hard_still_stops_every_server() {
    // SIGKILL leaves no status file: the servers must notice BENCHMARK's silence and stop.
    let out = tempfile::tempdir().unwrap();
    let mut child = harness(
        "local",
        "tests/exec_configs/roles",
        out.path(),
        SIM_LONG,
        Some(SIM),
    )
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    wait_for_load(
        &mut child,
        out.path(),
        SIM_LONG,
        "GEN_0",
        Duration::from_secs(60),
    );
    let job = job_dir(out.path(), SIM_LONG).unwrap();
    let bench = record(&job, "BENCHMARK").expect("BENCHMARK publishes its heartbeat");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(bench["pid"].as_i64().unwrap() as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let all = finish(child);
    assert_eq!(tracker_state(out.path(), SIM_LONG), "FAILED", "{all}");
    assert!(!job.join("benchmark_status.txt").exists());
    for role in ROLES {
        let r = record(&job, role).unwrap();
        assert_eq!(r["state"], "stopped", "{role}: {r}");
        if role != "DISAGG_SERVER" || r["reason"].is_string() {
            assert!(
                r["reason"]
                    .as_str()
                    .unwrap_or_default()
                    .contains("BENCHMARK went silent"),
                "{role}: {r}"
            );
        }
    }
    assert_nothing_left(&job);
    // The orphaned load client ends too (its target is gone).
    let deadline = Instant::now() + Duration::from_secs(30);
    let needle = out.path().display().to_string();
    while !live_processes_mentioning(&needle).is_empty() {
        assert!(
            Instant::now() < deadline,
            "left running: {:?}",
            live_processes_mentioning(&needle)
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

#[test]
fn lmeval_accuracy_below_expectation_fails_with_the_whole_verdict() {
    // Real lm-eval on the local task, through the router, against servers that answer random text.
    let out = tempfile::tempdir().unwrap();
    let case = "disagg_accuracy_sim-acc_ctx1_tp1_bs8_gen1_tp1_bs8_ccb-STORAGE";
    let o = harness(
        "local",
        "tests/exec_configs/roles",
        out.path(),
        case,
        Some(SIM),
    )
    .output()
    .unwrap();
    let all = text(&o);
    assert!(!o.status.success(), "{all}");
    assert!(
        all.contains("accuracy below expectation:\ntask tiny_greedy filter none metric exact_match: expected 1.0000, got 0.0000, threshold hypothesis_test ±0.1839 (detects regressions ≥ 0.2780), samples 40 — FAIL"),
        "{all}"
    );
    let job = job_dir(out.path(), case).unwrap();
    let scores: serde_json::Value =
        serde_json::from_slice(&std::fs::read(job.join("accuracy.json")).unwrap()).unwrap();
    assert_eq!(scores["scores"][0]["samples"], 40);
    assert_nothing_left(&job);
}

const TINY: &str = "disagg_perf_tiny-llama_ctx1_tp1_bs8_gen1_tp1_bs8_ccb-STORAGE";
const TINY_LONG: &str = "disagg_perf_tiny-long_ctx1_tp1_bs8_gen1_tp1_bs8_ccb-STORAGE";

fn count(path: &Path, needle: &str) -> usize {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .matches(needle)
        .count()
}

#[test]
fn real_vllm_prefill_hands_kv_to_decode_through_the_router() {
    let out = tempfile::tempdir().unwrap();
    let child = harness("local", "test_configs", out.path(), TINY, None)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Meanwhile: every socket the harness and the job's processes listen on.
    let mut listeners = std::collections::BTreeSet::new();
    let pid = child.id();
    while Path::new(&format!("/proc/{pid}/cmdline")).exists()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .unwrap_or_default()
            .contains(") Z ")
    {
        listeners.extend(listeners_of(pid));
        std::thread::sleep(Duration::from_millis(500));
    }
    let o = child.wait_with_output().unwrap();
    let all = text(&o);
    assert!(o.status.success(), "{all}");
    // Two engines, the router and its metrics port at least; none reachable from outside.
    let ports: std::collections::BTreeSet<&str> = listeners
        .iter()
        .map(|(_, a)| a.rsplit(':').next().unwrap())
        .collect();
    assert!(ports.len() >= 4, "too few listeners seen: {listeners:?}");
    let exposed: Vec<_> = listeners
        .iter()
        .filter(|(_, a)| !a.starts_with("127.") && !a.starts_with("[::1]"))
        .collect();
    assert!(exposed.is_empty(), "listening beyond loopback: {exposed:?}");
    eprintln!("listeners: {listeners:?}");
    let job = job_dir(out.path(), TINY).unwrap();
    // Concurrency 1 and 4, multi_round 5: 5 + 20 requests, each prefilled by CTX_0 and decoded by
    // GEN_0 from the KV that CTX_0 saved (vLLM logs a hit on the external cache for each).
    let requests = 25;
    let ctx_log = job.join("vllm.0.CTX_0.log");
    let gen_log = job.join("vllm.0.GEN_0.log");
    assert_eq!(count(&ctx_log, "POST /v1/completions"), requests);
    assert_eq!(count(&gen_log, "POST /v1/completions"), requests);
    assert_eq!(count(&gen_log, "External Cache Hit!"), requests);
    let csv = std::fs::read_to_string(out.path().join("servetest_results.csv")).unwrap();
    assert_eq!(
        csv.lines()
            .filter(|l| l.starts_with(TINY) && l.contains("COMPLETED"))
            .count(),
        2,
        "{csv}"
    );
    assert_nothing_left(&job);
}

#[test]
fn real_vllm_decode_server_killed_mid_benchmark_fails_the_trial() {
    let out = tempfile::tempdir().unwrap();
    let mut child = harness(
        "local",
        "tests/exec_configs/roles-engine",
        out.path(),
        TINY_LONG,
        None,
    )
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    let pgid = wait_for_load(
        &mut child,
        out.path(),
        TINY_LONG,
        "GEN_0",
        Duration::from_secs(400),
    );
    nix::sys::signal::killpg(
        nix::unistd::Pid::from_raw(pgid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let all = finish(child);
    assert!(
        all.contains("GEN_0 failed during the benchmark (concurrency 2): server exited with signal: 9 (SIGKILL)"),
        "{all}"
    );
    assert_eq!(tracker_state(out.path(), TINY_LONG), "FAILED");
    assert_nothing_left(&job_dir(out.path(), TINY_LONG).unwrap());
}

#[test]
fn proc_net_addresses() {
    assert_eq!(common::proc_net_address("0100007F:1F90"), "127.0.0.1:8080");
    assert_eq!(common::proc_net_address("00000000:0050"), "0.0.0.0:80");
    assert_eq!(
        common::proc_net_address("00000000000000000000000001000000:1F90"),
        "[::1]:8080"
    );
}
