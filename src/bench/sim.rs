//! `servetest sim-server`: an OpenAI-compatible server with a latency model, for testing the client
//! and measuring its overhead — never as proof of anything a real engine should prove.
//!
//! TTFT = `ttft_ms` + `ttft_per_token_us` × prompt tokens (prompt bytes / 4 as a token estimate);
//! then one chunk every `itl_ms` (± `itl_jitter_ms`), `max_tokens` chunks, a usage chunk, `[DONE]`.
//! A fraction `failure_rate` of requests gets HTTP 500. Every first chunk carries the server's own
//! measurement of its TTFT (`servetest_sim.ttft_us`), so clients can subtract it.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures_util::stream;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};

#[derive(Debug, Clone)]
pub struct SimConfig {
    pub ttft_ms: f64,
    pub ttft_per_token_us: f64,
    pub itl_ms: f64,
    pub itl_jitter_ms: f64,
    pub failure_rate: f64,
    pub seed: u64,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            ttft_ms: 20.0,
            ttft_per_token_us: 0.0,
            itl_ms: 5.0,
            itl_jitter_ms: 0.0,
            failure_rate: 0.0,
            seed: 0,
        }
    }
}

struct Sim {
    cfg: SimConfig,
    requests: AtomicU64,
    failures: AtomicU64,
    /// The server's own TTFT of every streamed request, microseconds (for `/servetest/stats`).
    ttfts_us: std::sync::Mutex<Vec<u64>>,
}

fn prompt_tokens(body: &Value) -> usize {
    let text: usize = match body.get("prompt") {
        Some(Value::String(s)) => s.len(),
        _ => body
            .get("messages")
            .and_then(Value::as_array)
            .map(|m| {
                m.iter()
                    .filter_map(|x| x.get("content").and_then(Value::as_str))
                    .map(str::len)
                    .sum()
            })
            .unwrap_or(0),
    };
    (text / 4).max(1)
}

async fn generate(State(sim): State<Arc<Sim>>, Json(body): Json<Value>) -> Response {
    let arrived = Instant::now();
    let n = sim.requests.fetch_add(1, Ordering::Relaxed);
    let mut rng =
        rand::rngs::StdRng::seed_from_u64(sim.cfg.seed ^ n.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    if sim.cfg.failure_rate > 0.0 && rng.random::<f64>() < sim.cfg.failure_rate {
        sim.failures.fetch_add(1, Ordering::Relaxed);
        return (StatusCode::INTERNAL_SERVER_ERROR, "simulated failure").into_response();
    }
    let chat = body.get("messages").is_some();
    let max_tokens = body
        .get("max_tokens")
        .and_then(Value::as_u64)
        .unwrap_or(16)
        .max(1) as usize;
    let prompt = prompt_tokens(&body);
    let ttft = Duration::from_secs_f64(
        (sim.cfg.ttft_ms / 1e3 + sim.cfg.ttft_per_token_us / 1e6 * prompt as f64).max(0.0),
    );
    let gaps: Vec<Duration> = (1..max_tokens)
        .map(|_| {
            let j = if sim.cfg.itl_jitter_ms > 0.0 {
                rng.random_range(-sim.cfg.itl_jitter_ms..=sim.cfg.itl_jitter_ms)
            } else {
                0.0
            };
            Duration::from_secs_f64(((sim.cfg.itl_ms + j) / 1e3).max(0.0))
        })
        .collect();
    let model = body.get("model").cloned().unwrap_or(json!("sim"));
    let choice = move |i: usize| {
        if chat {
            json!({"index": 0, "delta": {"content": format!("t{i} ")}, "finish_reason": if i + 1 == max_tokens { json!("length") } else { Value::Null }})
        } else {
            json!({"index": 0, "text": format!("t{i} "), "finish_reason": if i + 1 == max_tokens { json!("length") } else { Value::Null }})
        }
    };
    let usage = json!({"prompt_tokens": prompt, "completion_tokens": max_tokens, "total_tokens": prompt + max_tokens});
    if !body.get("stream").and_then(Value::as_bool).unwrap_or(false) {
        tokio::time::sleep(ttft + gaps.iter().sum::<Duration>()).await;
        let text: String = (0..max_tokens).map(|i| format!("t{i} ")).collect();
        let c = if chat {
            json!({"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "length"})
        } else {
            json!({"index": 0, "text": text, "finish_reason": "length"})
        };
        return Json(json!({"id": format!("sim-{n}"), "object": "text_completion", "model": model, "choices": [c], "usage": usage})).into_response();
    }
    // States: token index 0..max_tokens, then the usage chunk, then [DONE].
    let sim_for_stream = sim.clone();
    let events = stream::unfold(0usize, move |i| {
        let sim = sim_for_stream.clone();
        let gaps = gaps.clone();
        let model = model.clone();
        let usage = usage.clone();
        async move {
            if i < max_tokens {
                let due = arrived + ttft + gaps[..i].iter().sum::<Duration>();
                tokio::time::sleep_until(due.into()).await;
                let mut chunk = json!({"id": format!("sim-{n}"), "object": "text_completion", "model": model, "choices": [choice(i)]});
                if i == 0 {
                    let us = arrived.elapsed().as_micros() as u64;
                    sim.ttfts_us
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .push(us);
                    chunk["servetest_sim"] = json!({ "ttft_us": us });
                }
                Some((
                    Ok::<_, Infallible>(Event::default().data(chunk.to_string())),
                    i + 1,
                ))
            } else if i == max_tokens {
                let chunk = json!({"id": format!("sim-{n}"), "object": "text_completion", "model": model, "choices": [], "usage": usage});
                Some((Ok(Event::default().data(chunk.to_string())), i + 1))
            } else if i == max_tokens + 1 {
                Some((Ok(Event::default().data("[DONE]")), i + 1))
            } else {
                None
            }
        }
    });
    Sse::new(events).into_response()
}

/// Request counts and the server-side TTFT distribution (µs) of streamed requests.
async fn stats(State(sim): State<Arc<Sim>>) -> Json<Value> {
    let mut t = sim
        .ttfts_us
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    t.sort_unstable();
    let q = |p: f64| {
        t.get(((t.len() as f64 - 1.0) * p).round() as usize)
            .copied()
    };
    Json(json!({
        "requests": sim.requests.load(Ordering::Relaxed),
        "failures": sim.failures.load(Ordering::Relaxed),
        "ttft_us": {"count": t.len(), "p50": q(0.5), "p99": q(0.99),
                    "mean": if t.is_empty() { 0.0 } else { t.iter().sum::<u64>() as f64 / t.len() as f64 }},
    }))
}

pub fn router(cfg: SimConfig) -> Router {
    let sim = Arc::new(Sim {
        cfg,
        requests: AtomicU64::new(0),
        failures: AtomicU64::new(0),
        ttfts_us: std::sync::Mutex::new(Vec::new()),
    });
    Router::new()
        .route("/health", get(|| async { "ok" }))
        .route(
            "/v1/models",
            get(|| async {
                Json(json!({"object": "list", "data": [{"id": "sim", "object": "model"}]}))
            }),
        )
        .route("/v1/completions", post(generate))
        .route("/v1/chat/completions", post(generate))
        .route("/servetest/stats", get(stats))
        .with_state(sim)
}

/// Binds `addr` (port 0 = any free port) and serves in the background; returns the bound address.
pub async fn spawn(
    cfg: SimConfig,
    addr: SocketAddr,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    let app = router(cfg);
    // Without TCP_NODELAY a small first chunk waits for the ACK of the headers (Nagle), adding
    // milliseconds to every TTFT.
    use axum::serve::ListenerExt;
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    let handle = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok((bound, handle))
}
