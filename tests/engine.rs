//! Real-engine test: starts vLLM's CPU server on the tiny model that scripts/make-tiny-model builds,
//! sends a streaming completion with logprobs, checks shape and token counts, stops the server and
//! checks nothing of it remains. Needs `scripts/engine-setup` and the model (scripts/test does both).

use std::path::PathBuf;
use std::time::Duration;

use servetest::exec::process::live_members;
use servetest::serve::engine::{default_python, ServeSpec, Vllm};
use servetest::serve::server::{free_port, Server};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

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
