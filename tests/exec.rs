//! Execution on the real one-node SLURM cluster of scripts/slurm-up (and the local executor):
//! batching, failure states, debug mode, and cancellation on SIGINT. Run by scripts/test with
//! `--features perf` after `scripts/slurm-up` (SLURM_CONF must point at that cluster).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod common;
use common::{harness_command, live_processes_mentioning, processes, root, text};

fn harness(
    executor: &str,
    tree: &str,
    out: &Path,
    extra: &[&str],
    env: &[(&str, &str)],
) -> Command {
    let mut cmd = harness_command(executor, &root().join("tests/exec_configs").join(tree), out);
    cmd.args(extra);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd
}

/// The tracker.json the run wrote for `case`.
fn tracker(out: &Path, case: &str) -> serde_json::Value {
    let path = out.join(case).join("tracker.json");
    serde_json::from_slice(
        &std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display())),
    )
    .unwrap()
}

fn squeue_names() -> String {
    let o = Command::new("squeue")
        .args(["-h", "-o", "%j %T"])
        .output()
        .expect("squeue");
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// A `squeue` in front of the real one that logs each call's arguments (one line per call).
fn logging_squeue(dir: &Path) -> (String, PathBuf) {
    let real = String::from_utf8(Command::new("which").arg("squeue").output().unwrap().stdout)
        .unwrap()
        .trim()
        .to_owned();
    let log = dir.join("squeue-calls.log");
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let script = bin.join("squeue");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\necho \"$*\" >> '{}'\nexec '{real}' \"$@\"\n",
            log.display()
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap());
    (path, log)
}

/// With every job submitted at once (batch size 0), each poll is one `squeue` call that asks about
/// all live jobs: counted by a logging `squeue` in front of the real one, that count matches the
/// run's own summary line, and one call covered all six jobs.
#[test]
fn one_squeue_call_per_poll_covers_every_live_job() {
    let out = tempfile::tempdir().unwrap();
    let tools = tempfile::tempdir().unwrap();
    let (path, log) = logging_squeue(tools.path());
    let o = harness(
        "slurm",
        "pass",
        out.path(),
        &["--disagg-batch-size", "0"],
        &[("PATH", &path)],
    )
    .output()
    .unwrap();
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    let calls = std::fs::read_to_string(&log).unwrap();
    // The start-of-run orphan check asks by user (-u); polls ask by job id (-j).
    let polls: Vec<&str> = calls.lines().filter(|l| l.contains(" -j ")).collect();
    let ids_per_call: Vec<usize> = polls
        .iter()
        .map(|l| l.rsplit(' ').next().unwrap().split(',').count())
        .collect();
    let summary = format!(
        "{} scheduler queries covering {} job-polls",
        polls.len(),
        ids_per_call.iter().sum::<usize>()
    );
    assert!(
        t.contains(&summary),
        "expected `{summary}` in:\n{t}\ncalls:\n{calls}"
    );
    assert_eq!(ids_per_call.iter().max(), Some(&6), "calls:\n{calls}");
    assert!(polls.len() >= 2, "calls:\n{calls}");
}

#[test]
fn batch_sizes_submit_lazily_and_poll_with_one_squeue() {
    for (size, batches) in [(Some("1"), 6), (Some("2"), 3), (Some("0"), 1), (None, 2)] {
        let out = tempfile::tempdir().unwrap();
        let mut extra = vec![];
        if let Some(s) = size {
            extra = vec!["--disagg-batch-size", s];
        }
        let o = harness("slurm", "pass", out.path(), &extra, &[])
            .output()
            .unwrap();
        let t = text(&o);
        assert!(o.status.success(), "batch size {size:?}:\n{t}");
        assert!(t.contains(&format!("Total batches: {batches}")), "{t}");
        assert_eq!(t.matches("Submitting Batch").count(), batches, "{t}");
        assert_eq!(t.matches("] Job ").count(), 6, "{t}");
        assert!(t.contains("6 passed; 0 failed"), "{t}");
        // Outputs: script, tracker with final state, the SLURM output file.
        let dir = out.path().join("script_perf_short-1");
        assert!(dir.join("job.sbatch").exists());
        let tr = tracker(out.path(), "script_perf_short-1");
        assert_eq!(tr["state"], "COMPLETED");
        assert_eq!(tr["executor"], "slurm");
        assert!(std::fs::read_to_string(dir.join("overrides.txt"))
            .unwrap()
            .contains("dropped --gres=gpu:4"));
        assert!(std::fs::read_to_string(dir.join("work.log"))
            .unwrap()
            .contains("case 1 done"));
        let log = std::fs::read_dir(out.path())
            .unwrap()
            .filter_map(|e| e.ok())
            .find(|e| {
                e.file_name()
                    .to_string_lossy()
                    .starts_with("disagg_benchmark_")
            })
            .expect("run log");
        assert!(std::fs::read_to_string(log.path())
            .unwrap()
            .contains("Batch Manager Initialized"));
    }
}

#[test]
fn failed_timed_out_and_cancelled_jobs_fail_their_trials_with_state_and_log_tail() {
    let out = tempfile::tempdir().unwrap();
    let child = harness(
        "slurm",
        "fail",
        out.path(),
        &[
            "--disagg-batch-size",
            "0",
            "--format",
            "json",
            "-Z",
            "unstable-options",
        ],
        &[],
    )
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    // Cancel one job from outside once it runs.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if squeue_names().contains("script_perf_d-cancel-me RUNNING") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "cancel-me never ran: {}",
            squeue_names()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    Command::new("scancel")
        .args(["--name", "script_perf_d-cancel-me"])
        .status()
        .unwrap();
    let o = child.wait_with_output().unwrap();
    let t = text(&o);
    assert!(!o.status.success());
    let events: Vec<serde_json::Value> = String::from_utf8_lossy(&o.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .filter(|v: &serde_json::Value| v["type"] == "test" && v["event"] != "started")
        .collect();
    let outcome = |name: &str| {
        events
            .iter()
            .find(|e| e["name"].as_str().is_some_and(|n| n.ends_with(name)))
            .unwrap_or_else(|| panic!("no event for {name}:\n{t}"))
            .clone()
    };
    assert_eq!(outcome("a-ok")["event"], "ok", "{t}");
    let failed = outcome("b-exit-1");
    assert_eq!(failed["event"], "failed");
    let msg = failed["stdout"].as_str().unwrap();
    assert!(
        msg.contains("ended FAILED on ") && msg.contains("(exit code 1:0)"),
        "state, node and exit code: {msg}"
    );
    assert!(msg.contains("boom"), "the log tail shows stderr: {msg}");
    let timeout = outcome("c-time-limit");
    assert!(
        timeout["stdout"]
            .as_str()
            .unwrap()
            .contains("ended TIMEOUT"),
        "{timeout}"
    );
    let cancelled = outcome("d-cancel-me");
    assert!(
        cancelled["stdout"]
            .as_str()
            .unwrap()
            .contains("ended CANCELLED"),
        "{cancelled}"
    );
    let tr = tracker(out.path(), "script_perf_c-time-limit");
    assert_eq!(tr["state"], "TIMEOUT");
}

#[test]
fn debug_mode_evaluates_an_existing_job_without_submitting() {
    let out = tempfile::tempdir().unwrap();
    let o = harness(
        "slurm",
        "pass",
        out.path(),
        &["--exact", "script_perf_short-2"],
        &[],
    )
    .output()
    .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let tr = tracker(out.path(), "script_perf_short-2");
    let id = tr["job_id"].as_str().unwrap().to_owned();
    let o = harness(
        "slurm",
        "pass",
        out.path(),
        &["--exact", "script_perf_short-2"],
        &[("DEBUG_MODE", "1"), ("DEBUG_JOB_ID", &id)],
    )
    .output()
    .unwrap();
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    assert!(
        t.contains(&format!(
            "DEBUG_MODE: evaluating job {id}, submitting nothing"
        )),
        "{t}"
    );
    assert!(!t.contains("Submitting Batch"), "{t}");
    let o = harness("slurm", "pass", out.path(), &[], &[("DEBUG_MODE", "1")])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(101));
    assert!(text(&o).contains("DEBUG_MODE=1 needs DEBUG_JOB_ID"));
}

#[test]
fn local_executor_runs_the_same_cases() {
    let out = tempfile::tempdir().unwrap();
    let o = harness(
        "local",
        "pass",
        out.path(),
        &["--disagg-batch-size", "0"],
        &[],
    )
    .output()
    .unwrap();
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    assert!(
        t.contains("Executor: local") && t.contains("6 passed; 0 failed"),
        "{t}"
    );
    let tr = tracker(out.path(), "script_perf_short-3");
    assert_eq!(tr["state"], "COMPLETED");
    assert_eq!(tr["executor"], "local");
    let o = harness(
        "local",
        "fail",
        out.path(),
        &["--exact", "script_perf_b-exit-1"],
        &[],
    )
    .output()
    .unwrap();
    let t = text(&o);
    assert!(!o.status.success());
    assert!(
        t.contains("ended FAILED (exit code 1:0)") && t.contains("boom"),
        "{t}"
    );
    // The job's time limit holds on the local executor too: TIMEOUT, with the step's output.
    let o = harness("local", "timeout", out.path(), &[], &[])
        .output()
        .unwrap();
    let t = text(&o);
    assert!(!o.status.success());
    assert!(
        t.contains("ended TIMEOUT") && t.contains("sleeping past the limit"),
        "{t}"
    );
    assert_eq!(
        tracker(out.path(), "script_perf_five-seconds")["state"],
        "TIMEOUT"
    );
    assert!(
        live_processes_mentioning("servetest-timeout-marker").is_empty(),
        "the timed-out step is gone"
    );
}

fn marker_processes() -> Vec<String> {
    live_processes_mentioning("servetest-signal-marker")
}

fn sigint_leaves_nothing(executor: &str) {
    let out = tempfile::tempdir().unwrap();
    let mut child = harness(
        executor,
        "sleep",
        out.path(),
        &["--disagg-batch-size", "0"],
        &[],
    )
    .stdout(Stdio::null())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while marker_processes().len() < 3 {
        assert!(
            Instant::now() < deadline,
            "sleepers never started ({executor})"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let status = child.wait().unwrap();
    let mut err = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err).unwrap();
    assert_eq!(status.code(), Some(130), "{err}");
    assert!(
        err.contains("SIGINT: cancelling this run's jobs") && err.contains("cancelled 3 job(s)"),
        "{err}"
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let left = marker_processes();
        let queued = squeue_names();
        let jobs_left = executor == "slurm"
            && (queued.contains("sleeper")
                && (queued.contains("RUNNING") || queued.contains("PENDING")));
        if left.is_empty() && !jobs_left {
            break;
        }
        assert!(Instant::now() < deadline, "left behind: {left:?}\n{queued}");
        std::thread::sleep(Duration::from_millis(200));
    }
    // No temporary file of an atomic write (tracker, results) is left after the exit.
    let temporaries: Vec<_> = walkdir::WalkDir::new(out.path())
        .min_depth(1)
        .into_iter()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(".tmp"))
        .map(|e| e.path().display().to_string())
        .collect();
    assert!(temporaries.is_empty(), "{executor}: {temporaries:?}");
}

#[test]
fn sigint_cancels_every_job_and_leaves_no_process() {
    sigint_leaves_nothing("slurm");
    sigint_leaves_nothing("local");
}

#[test]
fn rejected_submissions_and_wait_timeouts_fail_with_the_reason() {
    let out = tempfile::tempdir().unwrap();
    // No cluster profile: the case's own (nonexistent) partition reaches sbatch.
    let mut cmd = harness("slurm", "reject", out.path(), &[], &[]);
    cmd.env_remove("SERVETEST_CLUSTER");
    let o = cmd.output().unwrap();
    let t = text(&o);
    assert!(!o.status.success());
    assert!(
        t.contains("sbatch rejected script_perf_no-such-partition"),
        "{t}"
    );
    assert!(
        t.to_lowercase().contains("invalid partition"),
        "sbatch's stderr is shown: {t}"
    );

    let o = harness(
        "slurm",
        "slow",
        out.path(),
        &[],
        &[("SERVETEST_WAIT_TIMEOUT", "3")],
    )
    .output()
    .unwrap();
    let t = text(&o);
    assert!(!o.status.success());
    assert!(
        t.contains("gave up waiting for job") && t.contains("the job was cancelled"),
        "{t}"
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while squeue_names().contains("script_perf_outlives-the-wait RUNNING") {
        assert!(
            Instant::now() < deadline,
            "the job kept running: {}",
            squeue_names()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn metrics_from_step_logs_land_in_the_results_csv() {
    let out = tempfile::tempdir().unwrap();
    let o = harness(
        "local",
        "metrics",
        out.path(),
        &["--disagg-batch-size", "0"],
        &[],
    )
    .output()
    .unwrap();
    let t = text(&o);
    assert!(t.contains("2 passed; 1 failed"), "{t}");
    assert!(
        t.contains("the default summary-line table found no metric in")
            && t.contains("nothing to see"),
        "{t}"
    );
    let mut reader = csv::Reader::from_path(out.path().join("servetest_results.csv")).unwrap();
    let headers = reader.headers().unwrap().clone();
    let col = |name: &str| headers.iter().position(|h| h == name).unwrap();
    let rows: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
    let of = |case: &str| -> Vec<&csv::StringRecord> {
        rows.iter()
            .filter(|r| &r[col("test_name")] == case)
            .collect()
    };
    let sweep = of("script_perf_bench-sweep");
    assert_eq!(
        sweep
            .iter()
            .map(|r| &r[col("concurrency")])
            .collect::<Vec<_>>(),
        ["1", "4"]
    );
    for r in &sweep {
        assert_eq!(&r[col("state")], "COMPLETED");
        assert_eq!(&r[col("completed")], "20");
        assert!(
            r[col("median_ttft_ms")].parse::<f64>().unwrap() >= 5.0,
            "TTFT includes the sim's 5 ms"
        );
        assert!(!r[col("p99_e2el_ms")].is_empty());
    }
    let custom = of("script_perf_custom-pattern");
    assert_eq!(custom.len(), 2);
    assert_eq!(&custom[1][col("concurrency")], "9");
    assert_eq!(
        &custom[1][col("extra_metrics")],
        "{\"CUSTOM_LATENCY\":7.25}"
    );
    let failed = of("script_perf_no-metrics-printed");
    assert_eq!(failed.len(), 1, "a failed trial still leaves its row");
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.path().join("results.json")).unwrap()).unwrap();
    assert_eq!(json["rows"].as_array().unwrap().len(), 5);
    let junit = std::fs::read_to_string(out.path().join("junit.xml")).unwrap();
    assert!(
        junit.contains("tests=\"3\"") && junit.contains("failures=\"1\""),
        "{junit}"
    );
    assert!(junit.contains("found no metric in"), "{junit}");
}

#[test]
fn a_slowed_case_fails_the_regression_gate_with_the_table() {
    let (base, now) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let only = ["--exact", "script_perf_bench-sweep"];
    let o = harness("local", "metrics", base.path(), &only, &[])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let baseline = base.path().join("results.json");
    // Same case, same baseline: within tolerance.
    let mut args = only.to_vec();
    let b = baseline.to_str().unwrap();
    let policy = root().join("tests/fixtures/baseline-policy.yaml");
    args.extend([
        "--baseline",
        b,
        "--baseline-policy",
        policy.to_str().unwrap(),
    ]);
    let o = harness("local", "metrics", now.path(), &args, &[])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    // Deliberately slowed: the simulator's TTFT goes from 5 ms to 60 ms.
    let slowed = tempfile::tempdir().unwrap();
    let o = harness(
        "local",
        "metrics",
        slowed.path(),
        &args,
        &[("SIM_TTFT_MS", "60")],
    )
    .output()
    .unwrap();
    let t = text(&o);
    assert!(!o.status.success());
    assert!(t.contains("regressed beyond tolerance against"), "{t}");
    assert!(
        t.lines()
            .any(|l| l.contains("median_ttft_ms") && l.ends_with("REGRESSED")),
        "{t}"
    );
    assert!(
        t.contains("baseline") && t.contains("change") && t.contains("limit"),
        "{t}"
    );
    // The same table offline, from the two runs' files.
    let report = |a: &Path, b: &Path| {
        Command::new(env!("CARGO_BIN_EXE_servetest"))
            .args(["report", "compare", "--policy"])
            .arg(&policy)
            .arg(a)
            .arg(b)
            .output()
            .unwrap()
    };
    let o = report(&baseline, &slowed.path().join("servetest_results.csv"));
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("REGRESSED"));
    let o = report(&baseline, &baseline);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    // The same rows in upstream's CSV shape.
    let upstream = slowed.path().join("upstream.csv");
    let o = Command::new(env!("CARGO_BIN_EXE_servetest"))
        .args(["report", "export-upstream"])
        .arg(&baseline)
        .arg(&upstream)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let exported = std::fs::read_to_string(&upstream).unwrap();
    assert!(
        exported.starts_with("network_name,network_hash,sm_clk,mem_clk,gpu_idx,perf_case_name,")
    );
    assert!(
        exported.contains("test_benchmark[script_perf_bench-sweep]_con:4"),
        "{exported}"
    );
    assert!(exported.contains(",SERVER_MEDIAN_TTFT\n"), "{exported}");
}

fn result_rows(out: &Path) -> Vec<(String, String)> {
    let Ok(mut reader) = csv::Reader::from_path(out.join("servetest_results.csv")) else {
        return Vec::new();
    };
    let headers = reader.headers().unwrap().clone();
    let col = |n: &str| headers.iter().position(|h| h == n).unwrap();
    reader
        .records()
        .filter_map(Result::ok)
        .map(|r| (r[col("test_name")].to_owned(), r[col("state")].to_owned()))
        .collect()
}

#[test]
fn sigkill_then_resume_matches_an_uninterrupted_run() {
    let (killed, clean) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let one_by_one = ["--disagg-batch-size", "1", "--test-threads", "1"];
    let mut child = harness("local", "resume", killed.path(), &one_by_one, &[])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while result_rows(killed.path()).is_empty() {
        assert!(Instant::now() < deadline, "no case finished");
        std::thread::sleep(Duration::from_millis(50));
    }
    child.kill().unwrap(); // SIGKILL: no handler runs, nothing is flushed on the way out
    child.wait().unwrap();
    let before = result_rows(killed.path());
    assert!(
        !before.is_empty() && before.len() < 4,
        "killed mid-way: {before:?}"
    );

    let mut args = one_by_one.to_vec();
    args.push("--resume");
    let o = harness("local", "resume", killed.path(), &args, &[])
        .output()
        .unwrap();
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    assert!(
        t.contains(&format!("{} case(s) already complete", before.len())),
        "{t}"
    );
    assert!(t.contains("(resumed; not run again)"), "{t}");

    let o = harness("local", "resume", clean.path(), &one_by_one, &[])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let mut resumed = result_rows(killed.path());
    let mut uninterrupted = result_rows(clean.path());
    resumed.sort();
    uninterrupted.sort();
    assert_eq!(resumed, uninterrupted, "nothing duplicated, nothing lost");
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(killed.path().join("results.json")).unwrap())
            .unwrap();
    assert_eq!(
        json["rows"].as_array().unwrap().len(),
        4,
        "results.json carries the earlier rows too"
    );
}

/// Planted values (one under a secret-looking name, one under an ordinary name) reach the step on
/// both executors, yet no file servetest wrote (script, logs, CSV, JSON, JUnit, HTML, tracker), no
/// file in SLURM's state, spool or log directories, no process's command line during the run and no
/// harness output holds either; the private environment file is gone from the runtime directory.
#[test]
fn planted_secrets_reach_steps_but_no_output_file() {
    const VALUES: [&str; 2] = ["st-planted-hf-7f3a", "st-planted-plain-19c2"];
    for executor in ["slurm", "local"] {
        let out = tempfile::tempdir().unwrap();
        let runtime = tempfile::tempdir().unwrap();
        let watch = common::PlantedSecrets::watch(&VALUES);
        let o = harness(
            executor,
            "secret",
            out.path(),
            &[],
            &[("SERVETEST_RUNTIME_DIR", runtime.path().to_str().unwrap())],
        )
        .output()
        .unwrap();
        let files = watch.in_files(&[out.path(), runtime.path()]);
        let slurm: Vec<PathBuf> = common::slurm_dirs();
        let slurm_refs: Vec<&Path> = slurm.iter().map(PathBuf::as_path).collect();
        let spool = watch.in_files(&slurm_refs);
        let (cmdlines, delivered) = watch.finish();
        assert!(o.status.success(), "{executor}: {}", text(&o));
        for v in VALUES {
            assert!(
                !text(&o).contains(v),
                "{executor}: harness output holds {v}"
            );
            assert!(delivered.contains(v), "{executor}: no process ever had {v}");
        }
        assert!(cmdlines.is_empty(), "{executor}: {cmdlines:#?}");
        assert!(files.0.is_empty(), "{executor}: {:#?}", files.0);
        assert!(spool.0.is_empty(), "{executor}: {:#?}", spool.0);
        assert!(files.1 >= 6, "{executor}: only {} files written?", files.1);
        let left: Vec<_> = walkdir::WalkDir::new(runtime.path())
            .into_iter()
            .flatten()
            .filter(|e| e.file_type().is_file())
            .map(|e| e.path().display().to_string())
            .collect();
        assert!(left.is_empty(), "{executor}: private files left: {left:?}");
        let log = std::fs::read_to_string(
            out.path()
                .join("script_perf_planted")
                .join("uses-secret.log"),
        )
        .unwrap();
        assert!(log.contains("values received"), "{executor}: {log}");
    }
}

/// A harness killed with SIGKILL cannot cancel its jobs: `servetest cleanup` finds them by name and
/// cancels them (`--dry-run` only lists).
#[test]
fn cleanup_cancels_the_jobs_of_a_killed_run() {
    let out = tempfile::tempdir().unwrap();
    let mut child = harness(
        "slurm",
        "sleep",
        out.path(),
        &["--disagg-batch-size", "0"],
        &[],
    )
    .stdout(Stdio::null())
    .stderr(Stdio::null())
    .spawn()
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while marker_processes().len() < 3 {
        assert!(Instant::now() < deadline, "sleepers never started");
        std::thread::sleep(Duration::from_millis(200));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    // A new run of the same cases names the live jobs of the killed one before doing anything (in
    // debug mode with a job id that does not exist it submits nothing and cancels nothing).
    let again = tempfile::tempdir().unwrap();
    let o = harness(
        "slurm",
        "sleep",
        again.path(),
        &[],
        &[("DEBUG_MODE", "1"), ("DEBUG_JOB_ID", "99999999")],
    )
    .output()
    .unwrap();
    let warned = text(&o);
    assert!(
        warned.contains("servetest: 3 job(s) of an earlier run are still live: ")
            && (1..=3).all(|i| warned.contains(&format!("script_perf_sleeper-{i} (RUNNING)")))
            && warned.contains("`servetest cleanup` cancels them"),
        "{warned}"
    );
    let tree = root().join("tests/exec_configs/sleep");
    let cleanup = |extra: &[&str]| {
        let o = Command::new(env!("CARGO_BIN_EXE_servetest"))
            .arg("cleanup")
            .args(extra)
            .arg(&tree)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", text(&o));
        text(&o)
    };
    let listed = cleanup(&["--dry-run"]);
    assert!(
        listed.contains("3 live job(s) named after a case"),
        "{listed}"
    );
    assert_eq!(listed.matches("RUNNING").count(), 3, "{listed}");
    let done = cleanup(&[]);
    assert!(done.contains("cancelled 3 job(s)"), "{done}");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !marker_processes().is_empty() {
        assert!(
            Instant::now() < deadline,
            "left running: {:?}",
            marker_processes()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // scancel is asynchronous: the jobs leave the queue shortly after their processes.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let listed = cleanup(&["--dry-run"]);
        if listed.contains("0 live job(s)") {
            break;
        }
        assert!(Instant::now() < deadline, "still live: {listed}");
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// OUTPUT_PATH on a tiny tmpfs that fills up: the trial that cannot write fails naming the file and
/// the cause; the rows already written stay whole; once space is back, `--resume` completes the run.
#[test]
fn a_full_output_disk_fails_the_trial_and_keeps_what_was_written() {
    let out = tempfile::tempdir().unwrap();
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=512k", "tmpfs"])
        .arg(out.path())
        .status()
        .unwrap();
    assert!(mounted.success(), "mounting a tmpfs needs root");
    struct Unmount<'a>(&'a Path);
    impl Drop for Unmount<'_> {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg(self.0).status();
        }
    }
    let _guard = Unmount(out.path());
    let run = |extra: &[&str]| {
        harness("local", "pass", out.path(), extra, &[])
            .output()
            .unwrap()
    };
    let first = run(&["--skip", "short-6"]);
    assert!(first.status.success(), "{}", text(&first));
    let csv = out.path().join("servetest_results.csv");
    let before = std::fs::read_to_string(&csv).unwrap();
    assert_eq!(before.lines().count(), 6, "header + 5 rows:\n{before}");
    // Fill the disk.
    let filler = out.path().join("filler");
    let mut f = std::fs::File::create(&filler).unwrap();
    let chunk = vec![b'x'; 4096];
    while std::io::Write::write_all(&mut f, &chunk).is_ok() {}
    drop(f);
    let full = run(&["--resume"]);
    let all = text(&full);
    assert!(!full.status.success(), "{all}");
    assert!(all.contains("short-6"), "{all}");
    assert!(all.contains("No space left on device"), "{all}");
    // Nothing written before was lost or cut.
    let after = std::fs::read_to_string(&csv).unwrap();
    assert!(after.starts_with(&before), "rows changed:\n{after}");
    let columns = before.lines().next().unwrap().matches(',').count();
    for line in after.lines() {
        assert!(line.matches(',').count() >= columns, "a cut row: {line}");
    }
    // Space back: the run completes.
    std::fs::remove_file(&filler).unwrap();
    let resumed = run(&["--resume"]);
    assert!(resumed.status.success(), "{}", text(&resumed));
    let done = std::fs::read_to_string(&csv).unwrap();
    assert_eq!(
        done.lines().filter(|l| l.contains("short-6")).count(),
        1,
        "{done}"
    );
}

/// A `key=value` of the cluster's slurm.conf (`SLURM_CONF`).
fn slurm_conf(key: &str) -> String {
    let conf = std::env::var("SLURM_CONF").expect("SLURM_CONF (eval \"$(scripts/slurm-up)\")");
    std::fs::read_to_string(&conf)
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{key}=")).map(str::to_owned))
        .unwrap_or_else(|| panic!("{key} not in {conf}"))
}

/// Pids whose command line or environment names SLURM job `id`: its slurmstepd and every process
/// of its steps.
fn job_processes(id: &str) -> Vec<u32> {
    let step = format!("slurmstepd: [{id}.");
    let env = format!("SLURM_JOB_ID={id}");
    processes()
        .into_iter()
        .filter(|p| p.cmdline.starts_with(&step) || p.has_env(&env))
        .map(|p| p.pid)
        .collect()
}

/// The node as `sinfo` shows it.
fn node_state() -> String {
    Command::new("sinfo")
        .args(["-h", "-o", "%T"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default()
}

/// Starts slurmd again (if it is not running) and waits until the node takes jobs: run even when the
/// test fails, so the tests after it find a working cluster.
struct RestartSlurmd;
impl Drop for RestartSlurmd {
    fn drop(&mut self) {
        // No panics here: this also runs while a failed assertion unwinds.
        let Ok(conf) = std::env::var("SLURM_CONF") else {
            return;
        };
        let pid_file = std::fs::read_to_string(&conf).ok().and_then(|c| {
            c.lines()
                .find_map(|l| l.strip_prefix("SlurmdPidFile=").map(str::to_owned))
        });
        let alive = pid_file
            .and_then(|f| std::fs::read_to_string(f).ok())
            .and_then(|p| p.trim().parse::<i32>().ok())
            .is_some_and(|p| Path::new(&format!("/proc/{p}")).exists());
        if !alive {
            let _ = Command::new("slurmd").args(["-f", &conf]).status();
        }
        let deadline = Instant::now() + Duration::from_secs(90);
        while !["idle", "mixed", "allocated"].contains(&node_state().as_str())
            && Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(500));
        }
    }
}

/// A node crash mid-job: slurmd and every process of the running job are SIGKILLed. The controller
/// marks the node down after `SlurmdTimeout` and the job NODE_FAIL; that trial fails naming the
/// state, the node and what to do, its row is written, and the next case (submitted once slurmd is
/// back) passes.
#[test]
fn slurmd_stopped_mid_job_fails_that_trial_and_the_next_runs() {
    let out = tempfile::tempdir().unwrap();
    let child = harness(
        "slurm",
        "nodefail",
        out.path(),
        &["--disagg-batch-size", "1", "--test-threads", "1"],
        &[],
    )
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    let _restart = RestartSlurmd;
    let victim = "script_perf_a-node-crash";
    let deadline = Instant::now() + Duration::from_secs(60);
    let id = loop {
        let o = Command::new("squeue")
            .args(["-h", "-t", "running", "-n", victim, "-o", "%i"])
            .output()
            .unwrap();
        let id = String::from_utf8_lossy(&o.stdout).trim().to_owned();
        if !id.is_empty() && !job_processes(&id).is_empty() {
            break id;
        }
        assert!(
            Instant::now() < deadline,
            "{victim} never ran: {}",
            squeue_names()
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    std::thread::sleep(Duration::from_secs(1));
    let slurmd: i32 = std::fs::read_to_string(slurm_conf("SlurmdPidFile"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let crashed = Instant::now();
    let _ = Command::new("kill")
        .args(["-9", &slurmd.to_string()])
        .status();
    for pid in job_processes(&id) {
        let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
    }
    // The controller notices after SlurmdTimeout; then the node comes back.
    let limit: u64 = slurm_conf("SlurmdTimeout").parse().unwrap();
    let deadline = Instant::now() + Duration::from_secs(limit * 3 + 60);
    loop {
        let o = Command::new("squeue")
            .args(["-h", "-t", "all", "-j", &id, "-o", "%T"])
            .output()
            .unwrap();
        if String::from_utf8_lossy(&o.stdout).trim() == "NODE_FAIL" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "job {id} never became NODE_FAIL (node {}; SlurmdTimeout {limit})",
            node_state()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    let detected = crashed.elapsed();
    drop(_restart);
    let o = child.wait_with_output().unwrap();
    let t = text(&o);
    assert!(!o.status.success(), "{t}");
    let host = Command::new("hostname").arg("-s").output().unwrap();
    let host = String::from_utf8_lossy(&host.stdout).trim().to_owned();
    assert!(
        t.contains(&format!("job {id} ended NODE_FAIL on {host}")),
        "{t}"
    );
    assert!(t.contains("--no-requeue") && t.contains("--resume"), "{t}");
    assert!(
        t.lines()
            .any(|l| l.contains("script_perf_b-after-recovery") && l.ends_with("... ok")),
        "the next case runs once the node is back:\n{t}"
    );
    let rows = result_rows(out.path());
    assert!(
        rows.contains(&(victim.to_owned(), "NODE_FAIL".to_owned())),
        "{rows:?}"
    );
    assert!(
        rows.contains(&(
            "script_perf_b-after-recovery".to_owned(),
            "COMPLETED".to_owned()
        )),
        "{rows:?}"
    );
    assert!(job_processes(&id).is_empty(), "processes of job {id} left");
    eprintln!("NODE_FAIL seen {detected:?} after the crash (SlurmdTimeout {limit} s)");
}

/// A second run into the same OUTPUT_PATH reads only its own step output: the local executor
/// truncates step logs at the start of a step, as `srun --output` does, so metrics of the earlier
/// run are not parsed again.
#[test]
fn a_second_run_into_the_same_output_parses_only_its_own_logs() {
    for executor in ["local", "slurm"] {
        let out = tempfile::tempdir().unwrap();
        for _ in 0..2 {
            let o = harness(
                executor,
                "metrics",
                out.path(),
                &[
                    "--disagg-batch-size",
                    "0",
                    "--exact",
                    "script_perf_bench-sweep",
                ],
                &[],
            )
            .output()
            .unwrap();
            assert!(o.status.success(), "{executor}: {}", text(&o));
        }
        let sweep_rows = result_rows(out.path())
            .into_iter()
            .filter(|(case, _)| case == "script_perf_bench-sweep")
            .count();
        assert_eq!(
            sweep_rows, 4,
            "{executor}: two runs of two concurrencies each"
        );
    }
}

/// `-x`: the first failure cancels the jobs still running and the rest are reported as not run.
fn exit_first_stops_the_run(executor: &str) {
    let out = tempfile::tempdir().unwrap();
    let o = harness(
        executor,
        "exitfirst",
        out.path(),
        &["-x", "--disagg-batch-size", "0", "--test-threads", "3"],
        &[],
    )
    .output()
    .unwrap();
    let t = text(&o);
    assert!(!o.status.success(), "{t}");
    assert!(
        t.contains("1 failed") && t.contains("2 ignored"),
        "{executor}: {t}"
    );
    assert!(
        t.contains("not run: cancelled after the first failure (-x)"),
        "{t}"
    );
    assert!(
        t.contains("-x: script_perf_a-fails failed; cancelled"),
        "{t}"
    );
    assert!(
        live_processes_mentioning("servetest-exitfirst-marker").is_empty(),
        "{executor}: the sleepers' jobs were not cancelled"
    );
}

#[test]
fn exit_first_cancels_running_jobs_and_reports_the_rest_as_not_run() {
    exit_first_stops_the_run("local");
    exit_first_stops_the_run("slurm");
}

/// A live job gets a heartbeat line at the chosen interval (state and time in it).
#[test]
fn live_jobs_get_heartbeat_lines() {
    for executor in ["local", "slurm"] {
        let out = tempfile::tempdir().unwrap();
        let o = harness(
            executor,
            "heartbeat",
            out.path(),
            &[],
            &[("SERVETEST_HEARTBEAT", "1")],
        )
        .output()
        .unwrap();
        let t = text(&o);
        assert!(o.status.success(), "{executor}: {t}");
        assert!(
            t.lines()
                .filter(|l| l.contains("heartbeat: script_perf_beat: job "))
                .count()
                >= 2,
            "{executor}: {t}"
        );
        assert!(t.contains("RUNNING for "), "{executor}: {t}");
    }
}

/// Ctrl-C, then --resume: the interrupted attempt's rows are history (results.json's
/// `earlier_attempts`), not failures; the final view and the report show every case COMPLETED.
#[test]
fn sigint_then_resume_shows_the_final_attempt_only() {
    let out = tempfile::tempdir().unwrap();
    let one_by_one = ["--disagg-batch-size", "1", "--test-threads", "1"];
    let mut child = harness("local", "resume-sigint", out.path(), &one_by_one, &[])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while live_processes_mentioning("servetest-resume-marker").is_empty() {
        assert!(Instant::now() < deadline, "the slow case never started");
        std::thread::sleep(Duration::from_millis(50));
    }
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    assert_eq!(child.wait().unwrap().code(), Some(130));
    let mut args = one_by_one.to_vec();
    args.push("--resume");
    let o = harness("local", "resume-sigint", out.path(), &args, &[])
        .output()
        .unwrap();
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    assert!(
        t.contains("Total test configs: 1 to run (+1 complete in the earlier run"),
        "{t}"
    );
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.path().join("results.json")).unwrap()).unwrap();
    let rows = json["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 2, "{json:#}");
    assert!(rows.iter().all(|r| r["state"] == "COMPLETED"), "{json:#}");
    let earlier = json["earlier_attempts"].as_array().unwrap();
    assert!(
        earlier.iter().all(|r| r["state"] != "COMPLETED"),
        "{json:#}"
    );
    let html = std::fs::read_to_string(out.path().join("report.html")).unwrap();
    assert!(
        html.contains("2 case(s), 2 row(s), 0 not COMPLETED"),
        "report summary"
    );
}
