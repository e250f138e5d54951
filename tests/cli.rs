//! The `servetest` binary as a user runs it: exit codes and what it prints.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

mod common;
use common::{text, Sim};

fn servetest(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_servetest"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env_remove("GPU_TYPE")
        .output()
        .expect("run servetest")
}

fn fixture_tree(rules: &[&str]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("disagg/perf");
    std::fs::create_dir_all(&dest).unwrap();
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/invalid");
    for (i, rule) in rules.iter().enumerate() {
        let file = std::fs::read_dir(src.join(rule))
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .path();
        let stem = file.file_stem().unwrap().to_string_lossy();
        std::fs::copy(&file, dest.join(format!("{stem}_{i}.yaml"))).unwrap();
    }
    dir
}

#[test]
fn validate_passes_on_the_shipped_cases() {
    let o = servetest(&["validate"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("0 error(s)"));
    // Keys upstream's loader overwrites from its environment: named once, with what is used instead.
    for key in ["slurm.job_name (", "slurm.script_file ("] {
        assert!(
            text(&o).contains(key),
            "{key} not in the note: {}",
            text(&o)
        );
    }
    assert_eq!(
        text(&o)
            .matches("note: keys upstream's loader overwrites")
            .count(),
        1
    );
}

#[test]
fn validate_reports_every_violation_of_every_file_and_fails() {
    let tree = fixture_tree(&["streaming", "job-time", "unknown-keys"]);
    let o = servetest(&["validate", tree.path().to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let out = text(&o);
    for needle in [
        ": benchmark.streaming: must be true",
        ": slurm.job_time: `2h` is not a SLURM time",
        ": slurm.partiton: unknown key; did you mean `partition`?",
        ": hardwre: unknown key; did you mean `hardware`?",
        "3 case(s), 3 invalid",
    ] {
        assert!(out.contains(needle), "missing {needle:?} in:\n{out}");
    }
    // `file:line: key` — every error names its file and line.
    for line in out
        .lines()
        .filter(|l| l.contains(": benchmark.") || l.contains(": slurm."))
    {
        let mut parts = line.splitn(3, ':');
        let file = PathBuf::from(parts.next().unwrap());
        assert!(file.exists(), "{line}");
        assert!(parts.next().unwrap().parse::<usize>().is_ok(), "{line}");
    }
}

#[test]
fn validate_json_and_deny_warnings() {
    let tree = fixture_tree(&["concurrency-cap"]);
    let dir = tree.path().to_str().unwrap();
    let o = servetest(&["validate", dir]);
    assert!(o.status.success(), "a warning alone passes: {}", text(&o));
    let o = servetest(&["validate", "--deny-warnings", dir]);
    assert_eq!(o.status.code(), Some(1));
    let o = servetest(&["validate", "--json", dir]);
    let all: Vec<serde_json::Value> = serde_json::from_slice(&o.stdout).unwrap();
    let v = all
        .iter()
        .find(|v| v["key"] == "benchmark.concurrency_list")
        .expect("the concurrency warning");
    assert_eq!(v["severity"], "warning");
    assert!(v["line"].as_u64().unwrap() > 0);
    assert!(v["file"].as_str().unwrap().ends_with(".yaml"));
}

#[test]
fn list_shows_ignored_cases_with_the_reason() {
    let o = servetest(&["list", "--json"]);
    assert!(o.status.success(), "{}", text(&o));
    let rows: Vec<serde_json::Value> = serde_json::from_slice(&o.stdout).unwrap();
    assert!(rows.len() >= 11);
    let ignored: Vec<&serde_json::Value> =
        rows.iter().filter(|r| !r["ignored"].is_null()).collect();
    // On GB200 (the default): the H100/B200 case, the SGLang H100/H200 case and the CPU-only cases
    // (tiny disagg perf on one node and across nodes, accuracy, latency, the two aggregated ones,
    // the aggr case's two server configs).
    assert_eq!(ignored.len(), 10, "{ignored:?}");
    assert!(ignored
        .iter()
        .all(|r| r["ignored"].as_str().unwrap().contains("GPU_TYPE=GB200")));
    let disagg = rows
        .iter()
        .filter(|r| r["family"] == "disagg" || r["family"] == "wideep");
    assert!(disagg.clone().all(|r| r["gpus"].as_u64().unwrap() > 0));
    assert!(disagg.count() >= 11);
}

#[test]
fn serve_refuses_remote_addresses_and_missing_models() {
    let o = servetest(&["serve", "--model", "models/tiny", "--host", "0.0.0.0"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        text(&o).contains("refusing to listen on 0.0.0.0: it is not loopback"),
        "{}",
        text(&o)
    );
    // A cluster network admits its own addresses only (src/netscope.rs); nothing is bound here.
    let o = Command::new(env!("CARGO_BIN_EXE_servetest"))
        .args(["sim-server", "--host", "10.9.9.9"])
        .env("SERVETEST_CLUSTER_NETWORK", "10.1.2.0/24")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(
        text(&o).contains("it is not loopback or the cluster network 10.1.2.0/24"),
        "{}",
        text(&o)
    );
    let o = servetest(&["serve", "--model", "/nonexistent/model"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o).contains("has no config.json"));
}

/// A plain HTTP/1.0 GET on loopback (no HTTP client needed in tests).
fn http_get_json(url: &str) -> serde_json::Value {
    use std::io::{Read, Write};
    let rest = url.trim_start_matches("http://");
    let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
    let Ok(mut s) = std::net::TcpStream::connect(host) else {
        return serde_json::Value::Null;
    };
    let _ = write!(s, "GET /{path} HTTP/1.0\r\nHost: {host}\r\n\r\n");
    let mut body = String::new();
    let _ = s.read_to_string(&mut body);
    body.split_once("\r\n\r\n")
        .and_then(|(_, b)| serde_json::from_str(b).ok())
        .unwrap_or(serde_json::Value::Null)
}

#[test]
fn bench_refuses_remote_targets_and_saves_partial_results_on_ctrl_c() {
    let o = servetest(&[
        "bench",
        "--base-url",
        "http://10.1.2.3:8000",
        "--model",
        "m",
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        text(&o).contains("refusing to load the target 10.1.2.3: it is not loopback"),
        "{}",
        text(&o)
    );

    let tmp = tempfile::tempdir().unwrap();
    let ready = tmp.path().join("url");
    let mut sim = Command::new(env!("CARGO_BIN_EXE_servetest"))
        .args([
            "sim-server",
            "--ttft-ms",
            "5",
            "--itl-ms",
            "20",
            "--ready-file",
        ])
        .arg(&ready)
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    for _ in 0..100 {
        if ready.exists() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let url = std::fs::read_to_string(&ready).unwrap().trim().to_owned();
    let out = tmp.path().join("partial.json");
    let tokenizer = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tokenizer");
    let bench = Command::new(env!("CARGO_BIN_EXE_servetest"))
        .args([
            "bench",
            "--base-url",
            &url,
            "--model",
            "m",
            "--input-len",
            "8",
            "--output-len",
            "20",
        ])
        .args([
            "--num-prompts",
            "200",
            "--max-concurrency",
            "2",
            "--tokenizer",
        ])
        .arg(&tokenizer)
        .arg("--save-result")
        .arg(&out)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Interrupt once the simulator has seen a third request (two slots: one has finished).
    let stats = format!("{url}/servetest/stats");
    for _ in 0..600 {
        let seen = http_get_json(&stats)["requests"].as_u64().unwrap_or(0);
        if seen >= 3 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(bench.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let o = bench.wait_with_output().unwrap();
    let _ = sim.kill();
    let _ = sim.wait();
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        text(&o).contains("Successful requests:"),
        "summary printed: {}",
        text(&o)
    );
    let saved: serde_json::Value = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
    assert_eq!(saved["servetest"]["interrupted"], true);
    let done = saved["completed"].as_u64().unwrap();
    assert!(done > 0 && done < 200, "{done}");
}

/// `servetest test` reads ./test_configs of the directory the user stands in, refuses a build that
/// cannot execute, and `--version` names the features.
#[test]
fn servetest_test_uses_the_current_directory_and_says_what_the_build_can_do() {
    let dir = fixture_tree(&["name-mismatch"]);
    let cwd = tempfile::tempdir().unwrap();
    std::fs::rename(dir.path(), cwd.path().join("test_configs")).unwrap();
    let run = |args: &[&str], at: &Path| {
        Command::new(env!("CARGO_BIN_EXE_servetest"))
            .args(args)
            .current_dir(at)
            .env_remove("SERVETEST_CONFIG_DIR")
            .output()
            .unwrap()
    };
    let o = run(&["test", "--list"], cwd.path());
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains("disagg_perf_deepseek-r1-fp4_8k1k_con7"),
        "{}",
        text(&o)
    );
    assert!(
        !text(&o).contains("tiny-llama"),
        "the build tree's cases leaked in: {}",
        text(&o)
    );
    let empty = tempfile::tempdir().unwrap();
    let o = run(&["test", "--list"], empty.path());
    assert!(!o.status.success());
    assert!(text(&o).contains("no test_configs/ in"), "{}", text(&o));
    let version = text(&run(&["--version"], cwd.path()));
    assert!(version.contains("features:"), "{version}");
    if !cfg!(feature = "perf") {
        assert!(version.contains("validates cases only"), "{version}");
        let o = run(&["test"], cwd.path());
        assert!(
            !o.status.success(),
            "a build without perf must not report a pass"
        );
        assert!(
            text(&o).contains("without the `perf` feature"),
            "{}",
            text(&o)
        );
        // A typo is named with the closest cases from any build.
        let o = run(&["test", "--exact", "disagg_perf_no_such_case"], cwd.path());
        assert!(!o.status.success());
        assert!(
            text(&o).contains("closest: `disagg_perf_deepseek"),
            "{}",
            text(&o)
        );
    }
}

/// Upstream's loader sets partition, account and container image from SLURM_PARTITION,
/// SLURM_ACCOUNT and CONTAINER_IMAGE: a migrating team's environment keeps working.
#[test]
fn upstream_environment_overrides_apply_to_rendered_jobs() {
    let case = "test_configs/disagg/perf/deepseek-r1-fp4_1k1k_ctx1_gen4_tep8_bs32_eplb0_mtp0_ccb-NIXL.yaml";
    let o = Command::new(env!("CARGO_BIN_EXE_servetest"))
        .args(["render", case])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env_remove("SERVETEST_CLUSTER")
        .env("SLURM_PARTITION", "batch_team")
        .env("SLURM_ACCOUNT", "acct_team")
        .env("CONTAINER_IMAGE", "/images/trtllm.sqsh")
        .output()
        .unwrap();
    let script = text(&o);
    assert!(o.status.success(), "{script}");
    for want in [
        "batch_team",
        "acct_team",
        "/images/trtllm.sqsh",
        "$SLURM_PARTITION",
    ] {
        assert!(script.contains(want), "{want} missing:\n{script}");
    }
}

/// `servetest bench` against `sim` with the test tokenizer, small prompts and `extra` flags.
fn bench_sim(sim: &Sim, extra: &[&str]) -> Output {
    let tokenizer = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tokenizer");
    Command::new(env!("CARGO_BIN_EXE_servetest"))
        .args([
            "bench",
            "--base-url",
            &sim.url,
            "--model",
            "m",
            "--tokenizer",
        ])
        .arg(&tokenizer)
        .args(["--input-len", "8", "--output-len", "4"])
        .args(extra)
        .output()
        .unwrap()
}

/// A `vllm bench serve` command line, recorded as users write it, runs with `servetest bench`
/// swapped in: vLLM's flag names and flag forms, the result where --result-dir/--result-filename
/// say, per-request lists only with --save-detailed, statistics only for --percentile-metrics.
#[test]
fn a_vllm_bench_serve_command_line_runs_unchanged() {
    let sim = Sim::start();
    let out = tempfile::tempdir().unwrap();
    let tokenizer = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tokenizer");
    let (host, port) = sim
        .url
        .trim_start_matches("http://")
        .rsplit_once(':')
        .unwrap();
    let recorded = format!(
        "vllm bench serve --backend vllm --host {host} --port {port} --endpoint /v1/completions \
         --model m --tokenizer {tok} --dataset-name random --random-input-len 16 \
         --random-output-len 8 --random-range-ratio 0.5 --num-prompts 12 --max-concurrency 4 \
         --request-rate inf --burstiness 1.0 --seed 7 --percentile-metrics ttft,tpot,itl \
         --metric-percentiles 50,90,99 --ignore-eos --save-result --save-detailed \
         --result-dir {dir}/results --result-filename run.json --label recorded --disable-tqdm",
        tok = tokenizer.display(),
        dir = out.path().display()
    );
    let argv: Vec<&str> = recorded.split_whitespace().collect();
    assert_eq!(&argv[..3], ["vllm", "bench", "serve"]);
    let o = Command::new(env!("CARGO_BIN_EXE_servetest"))
        .arg("bench")
        .args(&argv[3..])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains("Successful requests:                     12"),
        "{}",
        text(&o)
    );
    let saved: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.path().join("results/run.json")).unwrap())
            .unwrap();
    assert_eq!(saved["label"], "recorded");
    assert_eq!(saved["completed"], 12);
    for key in [
        "p50_ttft_ms",
        "p90_tpot_ms",
        "p99_itl_ms",
        "median_ttft_ms",
        "std_itl_ms",
    ] {
        assert!(saved.get(key).is_some(), "{key} missing");
    }
    assert!(
        saved.get("mean_e2el_ms").is_none(),
        "e2el was not asked for"
    );
    for list in [
        "input_lens",
        "output_lens",
        "start_times",
        "ttfts",
        "itls",
        "generated_texts",
        "errors",
    ] {
        assert_eq!(saved[list].as_array().map(Vec::len), Some(12), "{list}");
    }
    // Lengths spread around 16 ± 50% (counted as the server counts them, BOS included).
    let lens: Vec<u64> = saved["input_lens"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap())
        .collect();
    let distinct: std::collections::BTreeSet<_> = lens.iter().collect();
    assert!(
        distinct.len() > 3 && lens.iter().all(|l| (6..=27).contains(l)),
        "{lens:?}"
    );
    // Without --save-detailed the per-request lists are left out, as vLLM does.
    let save = out.path().join("plain.json");
    let o = bench_sim(
        &sim,
        &[
            "--num-prompts",
            "3",
            "--save-result",
            save.to_str().unwrap(),
        ],
    );
    assert!(o.status.success(), "{}", text(&o));
    let plain: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.path().join("plain.json")).unwrap()).unwrap();
    assert!(plain.get("ttfts").is_none() && plain.get("mean_e2el_ms").is_some());
}

/// Against a port nothing listens on, bench fails at once with one line (no table of failures).
#[test]
fn bench_against_a_dead_port_fails_fast_with_one_line() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let o = servetest(&[
        "bench",
        "--base-url",
        &format!("http://127.0.0.1:{port}"),
        "--model",
        "m",
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("nothing answers at"), "{}", text(&o));
    assert!(
        !text(&o).contains("Serving Benchmark Result"),
        "{}",
        text(&o)
    );
}

/// Every numeric flag of `bench` given zero, a negative, NaN, infinity or a huge value: a clear
/// error (exit 2, the flag named) or a normal run — never a panic (exit 101).
#[test]
fn numeric_bench_flags_never_panic() {
    let flags = [
        "--request-rate",
        "--burstiness",
        "--duration",
        "--timeout",
        "--range-ratio",
        "--temperature",
        "--input-len",
        "--output-len",
        "--num-prompts",
        "--max-concurrency",
        "--warmups",
        "--seed",
        "--logprobs",
        "--port",
        "--random-prefix-len",
    ];
    let values = [
        "0",
        "-1",
        "NaN",
        "inf",
        "-inf",
        "1e309",
        "18446744073709551616",
    ];
    let mut refused = 0;
    for flag in flags {
        for value in values {
            // A closed port: a value that passes parsing reaches the ready check and stops there.
            let arg = format!("{flag}={value}");
            let o = servetest(&[
                "bench",
                "--base-url",
                "http://127.0.0.1:9",
                "--model",
                "m",
                &arg,
            ]);
            let code = o.status.code();
            assert!(
                matches!(code, Some(1) | Some(2)),
                "{flag} {value}: exit {code:?}\n{}",
                text(&o)
            );
            if code == Some(2) {
                assert!(
                    text(&o).contains(&flag[2..]),
                    "{flag} {value}: {}",
                    text(&o)
                );
                refused += 1;
            }
        }
    }
    assert!(refused > 60, "only {refused} refused");
    // The simulator's latency model: negative, NaN and infinite values are refused by name
    // (they would start a server otherwise, so only refused values are walked).
    for flag in [
        "--ttft-ms",
        "--ttft-per-token-us",
        "--itl-ms",
        "--itl-jitter-ms",
        "--failure-rate",
    ] {
        for value in ["-1", "NaN", "inf", "1e309"] {
            let arg = format!("{flag}={value}");
            let o = servetest(&["sim-server", &arg]);
            assert_eq!(o.status.code(), Some(2), "{flag} {value}: {}", text(&o));
            assert!(
                text(&o).contains(&flag[2..]),
                "{flag} {value}: {}",
                text(&o)
            );
        }
    }
}

/// `report compare` of two `servetest bench --save-result` files prints the comparison table; a
/// pair with nothing in common says so.
#[test]
fn report_compare_takes_two_bench_saves() {
    let sim = Sim::start();
    let out = tempfile::tempdir().unwrap();
    for name in ["a.json", "b.json"] {
        let save = out.path().join(name);
        let o = bench_sim(
            &sim,
            &[
                "--num-prompts",
                "6",
                "--max-concurrency",
                "2",
                "--save-result",
                save.to_str().unwrap(),
            ],
        );
        assert!(o.status.success(), "{}", text(&o));
    }
    let compare = |a: &str, b: &str| {
        Command::new(env!("CARGO_BIN_EXE_servetest"))
            .args(["report", "compare"])
            .arg(out.path().join(a))
            .arg(out.path().join(b))
            .output()
            .unwrap()
    };
    let o = compare("a.json", "b.json");
    assert!(matches!(o.status.code(), Some(0) | Some(1)), "{}", text(&o));
    assert!(
        text(&o).contains("median_ttft_ms") && text(&o).contains("bench"),
        "{}",
        text(&o)
    );
    // Two results with no case and concurrency in common: said plainly, exit 2.
    let save = out.path().join("c3.json");
    let save = save.to_str().unwrap();
    let o = bench_sim(
        &sim,
        &[
            "--num-prompts",
            "3",
            "--max-concurrency",
            "3",
            "--save-result",
            save,
        ],
    );
    assert!(o.status.success(), "{}", text(&o));
    let o = compare("a.json", "c3.json");
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("nothing to compare"), "{}", text(&o));
}

/// `cleanup --dry-run` with a failing squeue is an error naming it, not "0 live jobs".
#[test]
fn cleanup_fails_when_squeue_fails() {
    let bin = tempfile::tempdir().unwrap();
    let squeue = bin.path().join("squeue");
    std::fs::write(
        &squeue,
        "#!/bin/sh\necho 'slurm_load_jobs error: Unable to contact slurm controller' >&2\nexit 1\n",
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&squeue, std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = format!(
        "{}:{}",
        bin.path().display(),
        std::env::var("PATH").unwrap()
    );
    let o = Command::new(env!("CARGO_BIN_EXE_servetest"))
        .args(["cleanup", "--dry-run"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("PATH", path)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        text(&o).contains("`squeue` failed") && text(&o).contains("Unable to contact"),
        "{}",
        text(&o)
    );
}

/// Two `servetest bench` runs of one workload are two runs of one series in the results history;
/// `report history` shows both, and `--gate` over them finds nothing to flag.
#[test]
fn bench_runs_are_recorded_in_the_results_history() {
    let sim = Sim::start();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("history.db");
    let tokenizer = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tokenizer");
    let bench = |db: &Path, levels: &str| {
        Command::new(env!("CARGO_BIN_EXE_servetest"))
            .args([
                "bench",
                "--base-url",
                &sim.url,
                "--model",
                "m",
                "--tokenizer",
            ])
            .arg(&tokenizer)
            .args([
                "--num-prompts",
                "8",
                "--input-len",
                "16",
                "--output-len",
                "4",
            ])
            .args(["--concurrency-list", levels])
            .env("SERVETEST_DB", db)
            .output()
            .unwrap()
    };
    for _ in 0..2 {
        let o = bench(&db, "1 2");
        assert!(o.status.success(), "{}", text(&o));
    }
    let o = Command::new(env!("CARGO_BIN_EXE_servetest"))
        .args(["report", "history", "--db"])
        .arg(&db)
        .args(["--metric", "median_ttft_ms", "--gate", "--out"])
        .arg(dir.path().join("history.html"))
        .output()
        .unwrap();
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    for c in [1, 2] {
        let line = format!("| bench:m:Random:16/4 | median_ttft_ms | {c} | 2 |");
        assert!(t.contains(&line), "{t}");
    }
    assert!(t.contains("gate: no regression"), "{t}");
    assert!(dir.path().join("history.html").exists());
    // An unopenable database stops the benchmark before any request.
    let o = bench(Path::new("/nonexistent-dir/h.db"), "1");
    assert!(!o.status.success());
    assert!(
        text(&o).contains("results history /nonexistent-dir/h.db"),
        "{}",
        text(&o)
    );
}

/// Seed 000's own configuration files (MetaX-MACA/vLLM-metax tools/batched_test/configs at babccd0,
/// tests/fixtures/upstream-batched, CRLF line ends and all) load unchanged: every model of each
/// model config is selected, its cluster config, case files and bench-param files are read.
#[test]
fn upstream_batched_test_configs_load_unchanged() {
    let dir = "tests/fixtures/upstream-batched";
    for (file, models) in [
        ("model.yaml", 81),
        ("model_by_cluster.yaml", 13),
        ("model_test.yaml", 1),
    ] {
        let o = servetest(&[
            "aggregated",
            "launch",
            "--dry-run",
            "--infer",
            "--perf",
            "--gpus",
            "1,2,4,8,16,32",
            "--model-config",
            &format!("{dir}/{file}"),
            "--cluster-config",
            &format!("{dir}/cluster.yaml"),
        ]);
        assert!(o.status.success(), "{file}: {}", text(&o));
        let out = text(&o);
        assert!(
            out.contains(&format!("[Scheduler] Selected {models} model(s):")),
            "{file}: {out}"
        );
        // Repeated names are upstream's own (Qwen3-32B three times): warned about, run.
        assert!(!out.contains("error"), "{file}: {out}");
    }
    use servetest::aggregated::inference::{read_cases, ImageCase, TextCase};
    let text_cases: Vec<TextCase> =
        read_cases(Path::new(&format!("{dir}/inference/text_case.yaml"))).unwrap();
    assert_eq!(text_cases.len(), 5);
    let image_cases: Vec<ImageCase> =
        read_cases(Path::new(&format!("{dir}/inference/image_case.yaml"))).unwrap();
    assert_eq!(image_cases.len(), 4);
    for (file, points) in [
        ("bench_default.json", 12),
        ("bench_2.json", 3),
        ("bench_high.json", 16),
    ] {
        let p = servetest::aggregated::case::read_bench_params(Path::new(&format!(
            "{dir}/bench_params/{file}"
        )))
        .unwrap();
        assert_eq!(p.len(), points, "{file}");
    }
}

#[test]
fn upstream_aggregated_perf_sanity_files_load_unchanged() {
    // Upstream's own aggregated perf-sanity files (tests/fixtures/upstream-aggr, manifest with
    // SHA-256): every server config becomes a trial named after it, nothing is refused, and each
    // trial keeps only its own server config's warnings. A whole-file test id selects every
    // trial of the file, a `FILE-SERVER` id one.
    let root = Path::new("tests/fixtures/upstream-aggr");
    let manifest = std::fs::read_to_string(root.join("manifest.tsv")).unwrap();
    let mut files = 0;
    for line in manifest.lines().skip(1) {
        let cols: Vec<&str> = line.split('\t').collect();
        let bytes = std::fs::read(root.join(cols[0])).unwrap();
        assert_eq!(bytes.len().to_string(), cols[3], "{}: size", cols[0]);
        use sha2::Digest;
        assert_eq!(
            format!("{:x}", sha2::Sha256::digest(&bytes)),
            cols[4],
            "{}: SHA-256",
            cols[0]
        );
        let commit_dir = root.join(cols[0].split('/').next().unwrap());
        let found = servetest::case::discover::discover(&[commit_dir]);
        assert!(found.problems.is_empty(), "{:?}", found.problems);
        let stem = Path::new(cols[0]).file_stem().unwrap().to_string_lossy();
        let text = String::from_utf8(bytes).unwrap();
        let servers: Vec<String> = text
            .lines()
            .filter_map(|l| l.trim().strip_prefix("- name:"))
            .map(|n| n.trim().trim_matches('"').to_owned())
            .collect();
        let trials: Vec<&servetest::case::Case> = found
            .cases
            .iter()
            .filter(|c| c.name.starts_with(&format!("aggr_perf-sanity_{stem}[")))
            .collect();
        assert!(!trials.is_empty(), "{stem}: no trial");
        for t in &trials {
            assert!(t.is_valid(), "{}: {:?}", t.name, t.violations);
            let server = &t.name[t.name.find('[').unwrap() + 1..t.name.len() - 1];
            assert!(
                servers.iter().any(|s| s == server),
                "{}: {servers:?}",
                t.name
            );
            let index = t.violations.iter().filter_map(|v| {
                v.key
                    .strip_prefix("server_configs.")
                    .and_then(|k| k.split('.').next())
            });
            let own: std::collections::BTreeSet<&str> = index.collect();
            assert!(
                own.len() <= 1,
                "{}: other servers' warnings: {own:?}",
                t.name
            );
        }
        files += 1;
    }
    assert_eq!(files, 5);
    // The ids of upstream's test-db lists select them: a file's id every server config, a
    // `FILE-SERVER` id one.
    for (dir, id, expected) in [
        ("06508c5f1c00", "aggr_upload-gpt_oss_120b_fp4_blackwell", 4),
        (
            "233544c6dbd2",
            "aggr_upload-deepseek_r1_fp4_v2_grace_blackwell-r1_fp4_v2_dep4_mtp1_1k1k",
            1,
        ),
    ] {
        let list = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(
            list.path(),
            format!("perf/test_perf_sanity.py::test_e2e[{id}] TIMEOUT (90)\n"),
        )
        .unwrap();
        let found = servetest::case::discover::discover(&[root.join(dir)]);
        let selector = servetest::case::select::Selector {
            filters: Vec::new(),
            exact: false,
            test_list: Some(list.path().to_path_buf()),
        };
        let chosen = selector.select(&found.cases).unwrap();
        assert_eq!(chosen.len(), expected, "{id}");
    }
}

#[test]
fn a_terminated_aggr_step_leaves_no_server_behind() {
    // `servetest aggr run` as a cancelled job sees it: SIGTERM while its server is starting. The
    // stand-in engine records its pid and never becomes healthy; after servetest exits, it must be
    // gone (it runs in a process group of its own, which the executor's signal does not reach).
    let dir = tempfile::tempdir().unwrap();
    let engine = dir.path().join("python");
    let pid_file = dir.path().join("server.pid");
    std::fs::write(
        &engine,
        format!(
            "#!/bin/sh\necho $$ > {}\nexec sleep 600\n",
            pid_file.display()
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&engine, std::fs::Permissions::from_mode(0o755)).unwrap();
    let case = dir.path().join("aggr/perf-sanity/stub.yaml");
    std::fs::create_dir_all(case.parent().unwrap()).unwrap();
    std::fs::write(
        &case,
        "metadata: {model_name: m}\nserver_configs:\n  - name: a\n    client_configs: [{name: c}]\nenvironment: {engine: vllm, model_path: /nonexistent}\n",
    )
    .unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_servetest"))
        .args(["aggr", "run", "--case"])
        .arg(&case)
        .arg("--out")
        .arg(dir.path().join("out"))
        .args(["--server", "a"])
        .env("SERVETEST_ENGINE_PYTHON", &engine)
        .env("SLURM_JOB_ID", "1")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let started = std::time::Instant::now();
    let pid: i32 = loop {
        if let Some(p) = std::fs::read_to_string(&pid_file)
            .ok()
            .and_then(|t| t.trim().parse().ok())
        {
            break p;
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(60),
            "the stand-in engine never started"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("stopped by SIGTERM"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Gone, or a zombie waiting for this container's init to reap it: not running either way.
    let state = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rsplit_once(") ").map(|(_, rest)| rest.chars().next()))
        .flatten();
    assert!(
        matches!(state, None | Some('Z')),
        "server {pid} still {state:?}"
    );
    // The job's rows.json is written (empty: no client finished).
    let rows = std::fs::read_to_string(dir.path().join("out/job-1/rows.json")).unwrap();
    assert_eq!(rows.trim(), "[]");
}
