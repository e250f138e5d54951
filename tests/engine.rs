//! Real-engine test: starts vLLM's CPU server on the tiny model that scripts/make-tiny-model builds,
//! sends a streaming completion with logprobs, checks shape and token counts, stops the server and
//! checks nothing of it remains. Needs `scripts/engine-setup` and the model (scripts/test does both).

use std::path::PathBuf;
use std::time::Duration;

use servetest::exec::process::live_members;
use servetest::serve::engine::{default_python, ServeSpec, Vllm};
use servetest::serve::server::{free_port, Server};

mod common;
use common::root;

fn tiny_model() -> PathBuf {
    let model = std::env::var("SERVETEST_TINY_MODEL")
        .map(PathBuf::from)
        .unwrap_or_else(|_| root().join("models/tiny"));
    assert!(
        model.join("config.json").exists(),
        "{} is missing: run scripts/engine-setup and scripts/make-tiny-model --out models/tiny",
        model.display()
    );
    model
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vllm_serves_streaming_completions_with_logprobs_benchmarks_and_stops_cleanly() {
    let model = tiny_model();
    let python = default_python(&root());
    let spec = ServeSpec {
        model: model.clone(),
        host: "127.0.0.1".into(),
        port: free_port("127.0.0.1").unwrap(),
        python,
        extra_args: [
            "--dtype",
            "float32",
            "--enforce-eager",
            "--max-model-len",
            "512",
        ]
        .map(String::from)
        .to_vec(),
    };
    let out = tempfile::tempdir().unwrap();
    let log = out.path().join("vllm.log");
    let env = vec![("VLLM_CPU_KVCACHE_SPACE".to_owned(), "1".to_owned())];
    let server = Server::start(&Vllm, &spec, log, env, Duration::from_secs(600))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let pgid = server.pgid();
    eprintln!(
        "vllm healthy in {:.1} s at {}",
        server.startup.as_secs_f64(),
        server.base_url
    );

    let max_tokens = 7;
    let body = serde_json::json!({
        "model": model.display().to_string(),
        "prompt": "def fibonacci(n):",
        "max_tokens": max_tokens,
        "temperature": 0.0,
        "ignore_eos": true,
        "logprobs": 2,
        "stream": true,
        "stream_options": {"include_usage": true},
    });
    let text = reqwest::Client::new()
        .post(format!("{}/v1/completions", server.base_url))
        .json(&body)
        .send()
        .await
        .unwrap()
        .error_for_status()
        .unwrap()
        .text()
        .await
        .unwrap();
    let events: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .collect();
    assert_eq!(
        events.last(),
        Some(&"[DONE]"),
        "stream must end with [DONE]: {text}"
    );
    let chunks: Vec<serde_json::Value> = events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str(e).unwrap())
        .collect();
    let token_chunks: Vec<&serde_json::Value> = chunks
        .iter()
        .filter(|c| !c["choices"].as_array().unwrap().is_empty())
        .collect();
    let mut tokens = 0;
    for c in &token_chunks {
        let lp = &c["choices"][0]["logprobs"];
        let n = lp["tokens"].as_array().expect("logprobs.tokens").len();
        tokens += n;
        assert_eq!(lp["token_logprobs"].as_array().unwrap().len(), n);
        for (i, top) in lp["top_logprobs"].as_array().unwrap().iter().enumerate() {
            let top = top.as_object().unwrap();
            assert!(
                !top.is_empty() && top.len() <= 3,
                "top-2 (+ sampled) logprobs: {top:?}"
            );
            let chosen = lp["token_logprobs"][i].as_f64().unwrap();
            assert!(chosen <= 0.0, "a logprob is never positive: {chosen}");
        }
    }
    assert_eq!(tokens, max_tokens, "ignore_eos: exactly max_tokens tokens");
    assert_eq!(
        token_chunks.last().unwrap()["choices"][0]["finish_reason"],
        "length"
    );
    let usage = &chunks.last().unwrap()["usage"];
    assert_eq!(usage["completion_tokens"], max_tokens);
    let prompt_tokens = usage["prompt_tokens"].as_u64().unwrap();
    assert!(prompt_tokens > 1, "BOS + prompt tokens: {usage}");
    assert_eq!(
        usage["total_tokens"].as_u64().unwrap(),
        prompt_tokens + max_tokens as u64
    );

    // The native benchmark client against the same real server (the command from the README).
    let result = out.path().join("bench.json");
    let bench = tokio::process::Command::new(env!("CARGO_BIN_EXE_servetest"))
        .args(["bench", "--base-url", &server.base_url, "--model"])
        .arg(&model)
        .args([
            "--dataset",
            "random",
            "--input-len",
            "128",
            "--output-len",
            "64",
        ])
        .args([
            "--max-concurrency",
            "8",
            "--num-prompts",
            "200",
            "--save-result",
        ])
        .arg(&result)
        .output()
        .await
        .unwrap();
    let printed = String::from_utf8_lossy(&bench.stdout);
    assert!(
        bench.status.success(),
        "{printed}{}",
        String::from_utf8_lossy(&bench.stderr)
    );
    assert!(
        printed.contains("Median TTFT (ms):")
            && printed.contains("Benchmark with concurrency 8 done")
    );
    let r: serde_json::Value = serde_json::from_slice(&std::fs::read(&result).unwrap()).unwrap();
    assert_eq!(r["completed"], 200, "{r}");
    assert_eq!(r["failed"], 0);
    // Exact lengths: prompts built with the model's tokenizer (BOS included), ignore_eos forced.
    assert_eq!(r["total_input_tokens"], 200 * 128);
    assert_eq!(r["total_output_tokens"], 200 * 64);
    for key in [
        "median_ttft_ms",
        "median_tpot_ms",
        "median_itl_ms",
        "median_e2el_ms",
    ] {
        assert!(r[key].as_f64().unwrap() > 0.0, "{key}: {r}");
    }
    eprintln!(
        "servetest bench on vLLM CPU: {:.1} req/s, median TTFT {:.1} ms, TPOT {:.2} ms",
        r["request_throughput"].as_f64().unwrap(),
        r["median_ttft_ms"].as_f64().unwrap(),
        r["median_tpot_ms"].as_f64().unwrap()
    );

    server.stop(Duration::from_secs(15)).await.unwrap();
    for _ in 0..100 {
        if live_members(pgid).is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        live_members(pgid).is_empty(),
        "left running: {:?}",
        live_members(pgid)
    );
}

/// A cb step case with a deliberately wrong row fails, showing the first differing step side by side.
#[test]
fn a_wrong_cb_step_row_fails_with_the_side_by_side_diff() {
    tiny_model();
    let out = tempfile::tempdir().unwrap();
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_servetest"))
        .args(["test", "--config-dir"])
        .arg(root().join("tests/fixtures/cb-wrong"))
        .current_dir(root())
        .env("OUTPUT_PATH", out.path())
        .output()
        .unwrap();
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(!o.status.success(), "{all}");
    assert!(
        all.contains("first differing step\nstep 2:\n  field            expected  actual\n"),
        "{all}"
    );
    assert!(all.contains("≠ running          []        [A]"), "{all}");
    assert!(all.contains("  request_outputs  [A]       [A]"), "{all}");
    assert!(all.contains("≠ n_used_blocks    3         2"), "{all}");
    assert!(
        all.contains("trace.jsonl"),
        "the trace path is shown: {all}"
    );
}

fn servetest(args: &[&str]) -> (bool, String) {
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_servetest"))
        .args(args)
        .current_dir(root())
        .output()
        .unwrap();
    (
        o.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        ),
    )
}

fn only_dir(dir: &std::path::Path, prefix: &str) -> PathBuf {
    let found: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with(prefix))
        .collect();
    assert_eq!(found.len(), 1, "{found:?} in {}", dir.display());
    found[0].clone()
}

/// Seed 000's `launch.py` command line over upstream-format files (a model config list, a
/// bench-param JSON list, `{question, keywords}` text cases): the layout and contents upstream
/// writes; then `--resume-csv` skips the model, `--dry-run` selects by device count, and neither
/// `--infer` nor `--perf` only collects the environment.
#[test]
fn seed_launch_runs_upstream_configs_end_to_end_and_resumes() {
    tiny_model();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let models = d.join("model.yaml");
    std::fs::write(
        &models,
        "- name: tiny-llama\n  model_path: models/tiny\n  timeout: 300\n  serve_config:\n    max_model_len: 256\n    extra_args:\n      --dtype: float32\n      --enforce-eager:\n  infer_type:\n    - text-only\n  benchmark:\n    bench_param: BENCH\n    ignore_eos: true\n    sweep_num_runs: '1'\n  extra_env:\n    - VLLM_CPU_KVCACHE_SPACE: 1\n  tags: [dense]\n"
            .replace("BENCH", d.join("bench.json").to_str().unwrap())
            .as_str(),
    )
    .unwrap();
    std::fs::write(
        d.join("bench.json"),
        r#"[{"max_concurrency": 1, "num_prompts": 2, "random_input_len": 16, "random_output_len": 8},
            {"num_prompts": 4, "max_concurrency": 2, "random_input_len": 16, "random_output_len": 8}]"#,
    )
    .unwrap();
    let cases = d.join("text_case.yaml");
    std::fs::write(
        &cases,
        "- question: What is 2 + 2?\n  keywords: ['4', four]\n- question: Name a colour.\n  keywords: [red, blue]\n",
    )
    .unwrap();
    let work = d.join("work");
    let launch = |work: &std::path::Path, extra: &[&str]| {
        let mut args = vec![
            "aggregated",
            "launch",
            "--work-dir",
            work.to_str().unwrap(),
            "--model-config",
            models.to_str().unwrap(),
            "--text-case",
            cases.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        servetest(&args)
    };
    let (ok, all) = launch(&work, &["--infer", "--perf"]);
    assert!(ok, "{all}");
    assert!(
        all.contains("swap_space 16 not passed: this vLLM has no --swap-space"),
        "{all}"
    );
    let run = only_dir(&work, "20");
    assert!(
        std::fs::metadata(run.join("collect_env.txt"))
            .unwrap()
            .len()
            > 0
    );
    let infer = run.join("inference");
    let results = std::fs::read_to_string(infer.join("inference_results.csv")).unwrap();
    let lines: Vec<&str> = results.lines().collect();
    assert_eq!(
        lines[0], "Model,Correct Ratio,Stage,Reason,Model Path",
        "{results}"
    );
    assert!(
        lines[1].starts_with("tiny-llama[tp1pp1dp1],")
            && lines[1].ends_with("%,NORMAL_END,,models/tiny"),
        "{results}"
    );
    let answers =
        std::fs::read_to_string(infer.join("tiny-llama[tp1pp1dp1]_text_only_inference.log"))
            .unwrap();
    assert_eq!(
        answers.matches("[tiny-llama] Response:").count(),
        2,
        "{answers}"
    );
    assert!(
        answers.contains("[tiny-llama] Question: What is 2 + 2?"),
        "{answers}"
    );
    assert!(infer.join("tiny-llama[tp1pp1dp1]_serve.log").exists());
    let perf = run.join("performance");
    assert!(perf.join("tiny-llama_tp1_pp1_dp1_serve.log").exists());
    let sweep = only_dir(&perf.join("tiny-llama_tp1_pp1_dp1"), "20");
    // Directory names follow each combination's key order, as vLLM's sweep names them.
    let second = sweep
        .join("BENCH--num_prompts=4-max_concurrency=2-random_input_len=16-random_output_len=8");
    let run0: serde_json::Value =
        serde_json::from_slice(&std::fs::read(second.join("run=0.json")).unwrap()).unwrap();
    assert_eq!(
        (
            run0["run_number"].as_u64(),
            run0["max_concurrency"].as_u64()
        ),
        (Some(0), Some(2))
    );
    assert_eq!(run0["completed"].as_u64(), Some(4), "{run0}");
    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(second.join("summary.json")).unwrap()).unwrap();
    assert_eq!(
        summary.as_array().map(Vec::len),
        Some(1),
        "a list of the runs"
    );
    let csv = std::fs::read_to_string(sweep.join("summary.csv")).unwrap();
    assert_eq!(csv.lines().count(), 3, "one row per run: {csv}");
    assert!(csv.starts_with(',') && csv.contains("run_number"), "{csv}");

    // Upstream's resume: the model's rows all ended normally, so it is skipped and re-recorded.
    let (ok, all) = launch(
        &d.join("work2"),
        &[
            "--infer",
            "--resume-csv",
            infer.join("inference_results.csv").to_str().unwrap(),
        ],
    );
    assert!(ok, "{all}");
    assert!(
        all.contains("1 finished model(s)") && all.contains("everything recorded already"),
        "{all}"
    );
    let run2 = only_dir(&d.join("work2"), "20");
    let again = std::fs::read_to_string(run2.join("inference/inference_results.csv")).unwrap();
    assert!(
        again.contains("tiny-llama[tp1pp1dp1],0%,NORMAL_END,Resumed from last result,models/tiny"),
        "{again}"
    );
    assert!(!run2
        .join("inference/tiny-llama[tp1pp1dp1]_serve.log")
        .exists());

    let (ok, all) = launch(&work, &["--dry-run", "--gpus", "2"]);
    assert!(
        ok && all.contains("[Scheduler] Selected 0 model(s):"),
        "{all}"
    );
    let (ok, all) = launch(&work, &["--dry-run"]);
    assert!(
        ok && all.contains("  - tiny-llama | gpus=1 | tags=dense"),
        "{all}"
    );
    let (ok, all) = launch(&d.join("work3"), &[]);
    assert!(ok && all.contains("neither --infer nor --perf"), "{all}");
    let run3 = only_dir(&d.join("work3"), "20");
    assert!(run3.join("collect_env.txt").exists() && !run3.join("inference").exists());
}

/// Seed 003's grid on vLLM: every point gets a prefill and a decode latency; layers are composed.
#[test]
fn latency_grid_reports_every_point() {
    tiny_model();
    let out = tempfile::tempdir().unwrap();
    let (ok, all) = servetest(&[
        "latency",
        "run",
        "--case",
        "test_configs/latency/perf/tiny-1l_grid2x2.yaml",
        "--out",
        out.path().to_str().unwrap(),
    ]);
    assert!(ok, "{all}");
    assert!(
        all.contains("override: max_model_len: 512 (base.yaml) -> 256 (optional/small-batch.yaml)"),
        "{all}"
    );
    let csv = std::fs::read_to_string(out.path().join("job-nojob/latency.csv")).unwrap();
    let rows: Vec<&str> = csv.lines().skip(1).collect();
    assert_eq!(rows.len(), 4, "{csv}");
    for (row, (b, s)) in rows.iter().zip([(1, 32), (1, 64), (4, 32), (4, 64)]) {
        let f: Vec<&str> = row.split(',').collect();
        assert_eq!(
            (f[2], f[3]),
            (b.to_string().as_str(), s.to_string().as_str())
        );
        assert!(f[5].parse::<f64>().unwrap() > 0.0, "prefill latency: {row}");
    }
    // The 1-layer variant really has one layer.
    let job = out.path().join("job-nojob");
    let cfg = std::fs::read_to_string(job.join("model-1l/config.json")).unwrap();
    assert!(cfg.contains("\"num_hidden_layers\": 1"), "{cfg}");
    // Forward-only: every point ran the seed's shape, and each forward is inside its generate.
    let points = std::fs::read_to_string(job.join("latency.jsonl")).unwrap();
    for line in points.lines() {
        let p: serde_json::Value = serde_json::from_str(line).unwrap();
        assert_eq!(p["shape_ok"], true, "{p}");
        let (b, s) = (p["bsz"].as_u64().unwrap(), p["seq"].as_u64().unwrap());
        assert_eq!(
            p["prefill_tokens_per_fwd"],
            serde_json::json!([b * s]),
            "{p}"
        );
        assert_eq!(p["decode_tokens_per_fwd"], serde_json::json!([b]), "{p}");
        assert!(
            p["prefill_fwd_ms"].as_f64() < p["wall_prefill_ms"].as_f64(),
            "{p}"
        );
    }
    // vllm bench latency ran at the first point and is reported beside the driver's generate; the
    // forwards timed inside that generate fit in it.
    let check: serde_json::Value =
        serde_json::from_slice(&std::fs::read(job.join("cross-check.json")).unwrap()).unwrap();
    assert!(check["bench_avg_ms"].as_f64().unwrap() > 0.0, "{check}");
    let share = check["forward_share"].as_f64().unwrap();
    assert!(share > 0.0 && share < 1.0, "{check}");
    assert!(
        all.contains("cross-check bsz 1 seq 32 output 32: vllm bench latency"),
        "{all}"
    );
    // profile: decode → per-op tables of decode forwards only, per point, in JSON and SQLite.
    let table: serde_json::Value =
        serde_json::from_slice(&std::fs::read(job.join("profile/b4_s64_decode.json")).unwrap())
            .unwrap();
    assert!(table["forwards"].as_u64().unwrap() > 0, "{table}");
    assert!(!job.join("profile/b4_s64_prefill.json").exists());
    let db = rusqlite::Connection::open(job.join("profile/profile.sqlite")).unwrap();
    let phases: Vec<String> = db
        .prepare("select distinct phase from ops")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(phases, ["decode"]);
}

/// The driver's shape check can fail: with max_num_seqs below the batch size, the engine splits
/// the batch, and the point says so instead of recording a latency at the wrong shape.
#[test]
fn latency_driver_refuses_a_batch_the_engine_split() {
    let model = tiny_model();
    let dir = tempfile::tempdir().unwrap();
    let spec = dir.path().join("spec.json");
    std::fs::write(
        &spec,
        serde_json::json!({
            "model": model,
            "engine_args": {"dtype": "float32", "enforce_eager": true, "max_model_len": 128,
                            "block_size": 32, "max_num_seqs": 2},
            "grid": [[4, 16]], "output_len": 2, "num_iters": 1,
        })
        .to_string(),
    )
    .unwrap();
    let out = dir.path().join("out.jsonl");
    let o = std::process::Command::new(default_python(&root()))
        .arg(root().join("scripts/latency-driver"))
        .args([&spec, &out])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let p: serde_json::Value =
        serde_json::from_str(std::fs::read_to_string(&out).unwrap().trim()).unwrap();
    assert_eq!(p["shape_ok"], false, "{p}");
    let problems = p["shape_problems"].to_string();
    assert!(
        problems.contains("prefill step 32 tokens / 2 reqs"),
        "{problems}"
    );
}

/// servetest's statistics against numpy itself (the engine venv's), with vLLM's own expressions:
/// `np.mean(x) * 1000`, `np.std(x) * 1000`, `np.median(x) * 1000`, `np.percentile(x, p) * 1000`.
#[test]
fn numpy_statistics_match_servetest() {
    use rand::{Rng, SeedableRng};
    use servetest::bench::metrics::stat;

    let mut rng = rand::rngs::StdRng::seed_from_u64(20261202);
    let percentiles = [
        0.0, 1.0, 10.0, 25.0, 50.0, 75.0, 90.0, 95.0, 99.0, 99.9, 100.0,
    ];
    let mut arrays: Vec<Vec<f64>> =
        vec![vec![], vec![0.25], vec![0.1, 0.2], vec![0.3, 0.3, 0.3, 0.3]];
    for n in [
        2, 3, 4, 5, 7, 8, 9, 16, 17, 127, 128, 129, 256, 1000, 1001, 10_000,
    ] {
        // Latency-like seconds, and the same length drawn from five values (ties).
        arrays.push((0..n).map(|_| rng.random_range(0.0005..2.5)).collect());
        arrays.push(
            (0..n)
                .map(|_| [0.01, 0.02, 0.02, 0.5, 1.0][rng.random_range(0..5)])
                .collect(),
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("arrays.json");
    std::fs::write(
        &input,
        serde_json::json!({"arrays": arrays, "percentiles": percentiles}).to_string(),
    )
    .unwrap();
    let script = r#"
import json, sys
import numpy as np
d = json.load(open(sys.argv[1]))
out = []
for xs in d["arrays"]:
    x = xs or 0  # vLLM passes `values or 0`
    out.append({"mean": float(np.mean(x) * 1000), "std": float(np.std(x) * 1000),
                "median": float(np.median(x) * 1000),
                "p": [float(np.percentile(x, p) * 1000) for p in d["percentiles"]]})
print(json.dumps({"numpy": np.__version__, "stats": out}))
"#;
    let python = default_python(&root());
    let out = std::process::Command::new(&python)
        .args(["-c", script])
        .arg(&input)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{} with numpy: {}",
        python.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let theirs: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let mut compared = 0;
    for (xs, want) in arrays.iter().zip(theirs["stats"].as_array().unwrap()) {
        let ours = stat(xs, &percentiles);
        let mut check = |what: &str, got: f64, expect: &serde_json::Value| {
            let expect = expect.as_f64().unwrap();
            // Bit for bit: same operations in the same order as numpy.
            assert_eq!(
                got.to_bits(),
                expect.to_bits(),
                "{what} of {} values: servetest {got}, numpy {expect}",
                xs.len()
            );
            compared += 1;
        };
        check("mean", ours.mean, &want["mean"]);
        check("std", ours.std, &want["std"]);
        check("median", ours.median, &want["median"]);
        for ((p, got), expect) in ours.percentiles.iter().zip(want["p"].as_array().unwrap()) {
            check(&format!("p{p}"), *got, expect);
        }
    }
    eprintln!(
        "{compared} statistics equal to numpy {} bit for bit",
        theirs["numpy"]
    );
}

/// `servetest bench` and `vllm bench serve` (scripts/vllm-bench-serve) against the same simulator
/// with the same command line: every key vLLM saves is in servetest's file, and every deterministic
/// value (counts, output tokens, run settings, the per-request lists' lengths) is equal.
#[test]
fn saved_json_matches_vllm_bench_serve_key_for_key() {
    let dir = tempfile::tempdir().unwrap();
    let sim = common::Sim::start();
    let url = sim.url.clone();
    let tiny = tiny_model();
    let common = |file: &str| -> Vec<String> {
        format!(
            "--backend openai --base-url {url} --endpoint /v1/completions --model m --tokenizer {} \
             --dataset-name random --random-input-len 16 --random-output-len 8 --num-prompts 10 \
             --max-concurrency 2 --ignore-eos --percentile-metrics ttft,tpot,itl,e2el \
             --metric-percentiles 50,99 --save-result --save-detailed --result-dir {} \
             --result-filename {file} --disable-tqdm --seed 0",
            tiny.display(),
            dir.path().display()
        )
        .split_whitespace()
        .map(str::to_owned)
        .collect()
    };
    let vllm = std::process::Command::new(default_python(&root()))
        .arg(root().join("scripts/vllm-bench-serve"))
        .args(common("vllm.json"))
        .output()
        .unwrap();
    let ours = std::process::Command::new(env!("CARGO_BIN_EXE_servetest"))
        .arg("bench")
        .args(common("servetest.json"))
        .output()
        .unwrap();
    drop(sim);
    assert!(
        vllm.status.success(),
        "{}",
        String::from_utf8_lossy(&vllm.stderr)
    );
    assert!(
        ours.status.success(),
        "{}",
        String::from_utf8_lossy(&ours.stderr)
    );
    let load = |f: &str| -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(dir.path().join(f)).unwrap()).unwrap()
    };
    let (theirs, mine) = (load("vllm.json"), load("servetest.json"));
    let missing: Vec<&String> = theirs
        .as_object()
        .unwrap()
        .keys()
        .filter(|k| mine.get(k.as_str()).is_none())
        .collect();
    assert!(
        missing.is_empty(),
        "keys vLLM saves that servetest does not: {missing:?}"
    );
    for key in [
        "num_prompts",
        "completed",
        "failed",
        "total_output_tokens",
        "request_rate",
        "burstiness",
        "max_concurrency",
        "backend",
        "endpoint_type",
        "label",
        "model_id",
        "output_lens",
        "rtfx",
    ] {
        assert_eq!(theirs[key], mine[key], "{key}");
    }
    for list in [
        "input_lens",
        "output_lens",
        "start_times",
        "ttfts",
        "itls",
        "generated_texts",
        "errors",
        "latencies",
        "queue_times",
    ] {
        assert_eq!(
            theirs[list].as_array().map(Vec::len),
            mine[list].as_array().map(Vec::len),
            "{list}"
        );
    }
    // Every statistic vLLM saved is a number in servetest's file too.
    for (k, v) in theirs.as_object().unwrap() {
        if k.ends_with("_ms") {
            assert!(v.is_number() && mine[k].is_number(), "{k}");
        }
    }
}

/// The cb output tolerance can fail: the same case against a reference whose weights moved by 1e-3
/// (scripts/cb-driver's mutation hook) fails, naming the request, the position and both values.
#[test]
fn a_perturbed_reference_fails_the_output_case_naming_position_and_values() {
    let out = tempfile::tempdir().unwrap();
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_servetest"))
        .args(["test", "--exact", "cb_output_text-prompts"])
        .current_dir(root())
        .env("SERVETEST_CB_REFERENCE_PERTURB", "1e-3")
        .env("OUTPUT_PATH", out.path())
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(!o.status.success(), "a perturbed reference passed:\n{text}");
    let named = text.contains("outside tolerance")
        && text.contains("position")
        && text.contains("reference ")
        || text.contains("tokens diverge at position");
    assert!(named, "{text}");
}
