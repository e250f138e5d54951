//! The client against the in-process simulator (port 0) and against hand-written SSE streams.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::client::{self, Endpoint, ErrorKind, RequestSettings};
use super::dataset::{self, DatasetSpec, Request};
use super::metrics::{self, Slo};
use super::report::{self, RunInfo};
use super::sim::{self, SimConfig};
use super::{run_pass, schedule};

fn tokenizer() -> tokenizers::Tokenizer {
    dataset::load_tokenizer(&Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tokenizer"))
        .unwrap()
}

fn settings(url: &str, endpoint: Endpoint) -> RequestSettings {
    RequestSettings {
        url: format!("{url}{}", endpoint.path()),
        endpoint,
        model: "m".into(),
        stream: true,
        ignore_eos: true,
        temperature: None,
        logprobs: None,
        extra_body: Default::default(),
        timeout: Duration::from_secs(10),
    }
}

async fn sim(cfg: SimConfig) -> String {
    let (addr, _) = sim::spawn(cfg, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    format!("http://{addr}")
}

#[test]
fn random_prompts_have_exact_token_counts() {
    let tok = tokenizer();
    let spec = DatasetSpec::Random {
        input_len: 32,
        output_len: 8,
        range_ratio: 0.0,
    };
    let reqs = dataset::build(&spec, &tok, 20, 3).unwrap();
    assert!(
        reqs.iter().all(|r| r.prompt_len == 32 && r.output_len == 8),
        "{reqs:?}"
    );
    assert_eq!(reqs, dataset::build(&spec, &tok, 20, 3).unwrap(), "seeded");
    let spread = DatasetSpec::Random {
        input_len: 100,
        output_len: 10,
        range_ratio: 0.5,
    };
    let reqs = dataset::build(&spread, &tok, 200, 1).unwrap();
    assert!(reqs.iter().all(|r| (50..=150).contains(&r.prompt_len)));
    assert!(reqs.iter().any(|r| r.prompt_len < 80) && reqs.iter().any(|r| r.prompt_len > 120));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_match_the_simulators_latencies() {
    let url = sim(SimConfig {
        ttft_ms: 40.0,
        itl_ms: 8.0,
        ..SimConfig::default()
    })
    .await;
    for endpoint in [Endpoint::Completions, Endpoint::Chat] {
        let reqs: Vec<Request> = (0..24)
            .map(|_| Request {
                prompt: "w1 w2 w3".into(),
                prompt_len: 4,
                output_len: 10,
            })
            .collect();
        let offsets = schedule(reqs.len(), f64::INFINITY, 1.0, 0);
        let http = reqwest::Client::new();
        let pass = run_pass(
            &http,
            Arc::new(settings(&url, endpoint)),
            &reqs,
            &offsets,
            Some(4),
            None,
            std::future::pending(),
        )
        .await;
        let m = metrics::compute(
            &pass.outputs,
            pass.duration,
            &[99.0],
            &[(Slo::Ttft, 1000.0)],
            |_| 0,
        );
        assert_eq!((m.completed, m.failed), (24, 0), "{endpoint:?}");
        assert_eq!(m.total_output, 240, "usage from the server");
        assert_eq!(m.itl.count, 24 * 9);
        // No upper bounds on wall-clock times (the machine is shared): lower bounds the server's
        // schedule guarantees, and relations between values of the same request, which a
        // mis-measurement (TTFT of the whole response, TPOT over all tokens, ITL 0) breaks.
        for o in &pass.outputs {
            let server = o.server_ttft.expect("the simulator reports its TTFT");
            assert!(
                server >= 0.040 && o.ttft >= server,
                "TTFT {} vs server {server}",
                o.ttft
            );
            assert!(
                o.latency >= 0.040 + 9.0 * 0.008,
                "the last token is due after 112 ms: {}",
                o.latency
            );
            assert!(
                o.itl.iter().sum::<f64>() <= o.latency - o.ttft + 1e-9,
                "ITLs lie between the first token and the end"
            );
        }
        let mut gaps: Vec<f64> = pass.outputs.iter().map(|o| o.latency - o.ttft).collect();
        gaps.sort_by(f64::total_cmp);
        assert!(
            gaps[gaps.len() / 2] >= 0.036,
            "tokens 2..10 come after the first: {gaps:?}"
        );
        assert!(m.ttft.mean >= 40.0 && m.ttft.mean < m.e2el.mean);
        assert!(
            (m.tpot.mean - (m.e2el.mean - m.ttft.mean) / 9.0).abs() < 0.01,
            "TPOT excludes the first token"
        );
        assert!((m.request_goodput - m.request_throughput).abs() < 1e-9);
        // 24 requests, 4 at a time: later ones waited for a slot, visible only from the schedule.
        assert!(m.ttft_from_scheduled.mean > m.ttft.mean);
        assert!(pass.outputs.iter().all(|o| o.server_ttft.is_some()));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_error_is_counted_by_kind() {
    let url = sim(SimConfig {
        ttft_ms: 1.0,
        itl_ms: 1.0,
        failure_rate: 0.5,
        seed: 9,
        ..SimConfig::default()
    })
    .await;
    let reqs: Vec<Request> = (0..40)
        .map(|_| Request {
            prompt: "w1".into(),
            prompt_len: 2,
            output_len: 3,
        })
        .collect();
    let http = reqwest::Client::new();
    let pass = run_pass(
        &http,
        Arc::new(settings(&url, Endpoint::Completions)),
        &reqs,
        &vec![0.0; 40],
        Some(8),
        None,
        std::future::pending(),
    )
    .await;
    let m = metrics::compute(&pass.outputs, pass.duration, &[], &[], |_| 0);
    assert_eq!(m.completed + m.failed, 40);
    assert!(m.failed > 5 && m.completed > 5, "{} failed", m.failed);
    assert_eq!(m.errors_by_kind.get("http_500"), Some(&m.failed));

    // Nothing listening: connect errors.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dead = settings(&format!("http://127.0.0.1:{port}"), Endpoint::Completions);
    let o = client::send(&http, &dead, &reqs[0], Instant::now(), 0.0).await;
    assert_eq!(o.error, Some(ErrorKind::Connect), "{o:?}");

    // Too slow: timeouts.
    let slow = sim(SimConfig {
        ttft_ms: 2000.0,
        ..SimConfig::default()
    })
    .await;
    let mut s = settings(&slow, Endpoint::Completions);
    s.timeout = Duration::from_millis(200);
    let o = client::send(&http, &s, &reqs[0], Instant::now(), 0.0).await;
    assert_eq!(o.error, Some(ErrorKind::Timeout), "{o:?}");
}

/// A server that answers every request with `parts`, written separately with small pauses.
async fn raw_server(parts: Vec<&'static str>, close_early: bool) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr: SocketAddr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            let parts = parts.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 65536];
                let _ = sock.read(&mut buf).await;
                let _ = sock.write_all(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\n").await;
                for p in parts {
                    let _ = sock.write_all(p.as_bytes()).await;
                    let _ = sock.flush().await;
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                if !close_early {
                    let _ = sock.shutdown().await;
                }
            });
        }
    });
    format!("http://{addr}")
}

async fn one(url: &str) -> client::RequestOutput {
    let req = Request {
        prompt: "w1".into(),
        prompt_len: 2,
        output_len: 3,
    };
    client::send(
        &reqwest::Client::new(),
        &settings(url, Endpoint::Completions),
        &req,
        Instant::now(),
        0.0,
    )
    .await
}

#[tokio::test]
async fn sse_edge_cases() {
    // Events split mid-line across writes, a comment, an empty text, two events in one write,
    // a usage-only final chunk, then [DONE].
    let url = raw_server(
        vec![
            ": keep-alive\n\n",
            "data: {\"choices\":[{\"text\":\"a\"}]}\n",
            "\ndata: {\"choi",
            "ces\":[{\"text\":\"\"}]}\n\ndata: {\"choices\":[{\"text\":\"b\"}]}\n\n",
            "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":7,\"completion_tokens\":3}}\n\n",
            "data: [DONE]\n\n",
        ],
        false,
    )
    .await;
    let o = one(&url).await;
    assert!(o.success, "{o:?}");
    assert_eq!(o.generated_text, "ab");
    assert_eq!(o.itl.len(), 2, "three token chunks (one empty) → two gaps");
    assert_eq!((o.prompt_len, o.output_tokens), (7, Some(3)));

    let url = raw_server(vec!["data: {\"choices\":[{\"text\":\"a\"}]}\n\n"], false).await;
    assert_eq!(
        one(&url).await.error,
        Some(ErrorKind::Interrupted),
        "closed before [DONE]"
    );
    let url = raw_server(vec!["data: {not json}\n\n"], false).await;
    assert_eq!(one(&url).await.error, Some(ErrorKind::MalformedStream));
    let url = raw_server(vec!["data: [DONE]\n\n"], false).await;
    assert_eq!(
        one(&url).await.error,
        Some(ErrorKind::MalformedStream),
        "no token at all"
    );
    // A BOM first and CR line endings: both legal SSE (eventsource-stream alone panics on the BOM).
    let url = raw_server(
        vec!["\u{feff}data: {\"choices\":[{\"text\":\"a\"}]}\r\rdata: [DONE]\r\r"],
        false,
    )
    .await;
    let o = one(&url).await;
    assert!(o.success, "{o:?}");
    assert_eq!(o.generated_text, "a");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_keeps_partial_results_and_json_round_trips() {
    let url = sim(SimConfig {
        ttft_ms: 5.0,
        itl_ms: 20.0,
        ..SimConfig::default()
    })
    .await;
    let reqs: Vec<Request> = (0..50)
        .map(|_| Request {
            prompt: "w1".into(),
            prompt_len: 2,
            output_len: 10,
        })
        .collect();
    let http = reqwest::Client::new();
    // Stop once the simulator has seen a third request: with two slots, the first has finished.
    let stats = format!("{url}/servetest/stats");
    let stop = async move {
        loop {
            tokio::time::sleep(Duration::from_millis(20)).await;
            let seen = match reqwest::get(&stats).await {
                Ok(r) => r
                    .json::<serde_json::Value>()
                    .await
                    .ok()
                    .and_then(|v| v["requests"].as_u64()),
                Err(_) => None,
            };
            if seen.unwrap_or(0) >= 3 {
                break;
            }
        }
    };
    let pass = run_pass(
        &http,
        Arc::new(settings(&url, Endpoint::Completions)),
        &reqs,
        &vec![0.0; 50],
        Some(2),
        None,
        stop,
    )
    .await;
    assert!(pass.interrupted);
    assert!(
        !pass.outputs.is_empty() && pass.outputs.len() < 50,
        "{}",
        pass.outputs.len()
    );
    let m = metrics::compute(&pass.outputs, pass.duration, &[50.0, 99.0], &[], |_| 0);
    let info = RunInfo {
        endpoint_type: "openai",
        label: Some("t"),
        model_id: "m",
        tokenizer_id: "tok",
        num_prompts: 50,
        request_rate: f64::INFINITY,
        burstiness: 1.0,
        max_concurrency: Some(2),
        interrupted: true,
        goodput: false,
    };
    let doc = report::json(&m, &info, serde_json::json!({"ttfts": [0.1]}));
    let back: serde_json::Value =
        serde_json::from_str(&serde_json::to_string(&doc).unwrap()).unwrap();
    assert_eq!(back, doc);
    for key in [
        "date",
        "num_prompts",
        "request_rate",
        "max_concurrency",
        "duration",
        "completed",
        "failed",
        "total_input_tokens",
        "total_output_tokens",
        "request_throughput",
        "output_throughput",
        "total_token_throughput",
        "mean_ttft_ms",
        "median_ttft_ms",
        "std_ttft_ms",
        "p99_ttft_ms",
        "p50_itl_ms",
        "mean_e2el_ms",
        "schema_version",
        "ttfts",
    ] {
        assert!(back.get(key).is_some(), "missing {key}");
    }
    assert_eq!(back["request_rate"], "inf");
    assert_eq!(back["completed"], m.completed);
    assert_eq!(back["servetest"]["interrupted"], true);
    let text = report::text(&m, &info);
    assert!(text.starts_with("============ Serving Benchmark Result ============\n"));
    assert!(text.contains(&format!(
        "{:<40} {:<10}\n",
        "Successful requests:", m.completed
    )));
    assert!(
        text.contains("Median TTFT (ms):")
            && text.contains("Median E2EL (ms):")
            && text.contains("P99 ITL (ms):")
    );
    assert!(text.contains("(interrupted: partial results)"));
}
