//! One request against an OpenAI-compatible server, timed the way vLLM's benchmark times it: TTFT is
//! the first chunk that carries a choice, ITL the gap between consecutive such chunks, E2EL the whole
//! request. The SSE stream is parsed incrementally (`sse`), so chunks split across reads,
//! several events in one read, comments and a usage-only final chunk are all handled.

use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::{json, Value};

use super::dataset::Request;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Endpoint {
    /// `/v1/completions`
    Completions,
    /// `/v1/chat/completions`
    Chat,
}

impl Endpoint {
    pub fn path(self) -> &'static str {
        match self {
            Endpoint::Completions => "/v1/completions",
            Endpoint::Chat => "/v1/chat/completions",
        }
    }
}

/// Why a request failed; every failure is counted by kind, none disappears from the totals.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    Connect,
    Status(u16),
    Timeout,
    /// The stream was not valid SSE/JSON, or ended without any token.
    MalformedStream,
    /// The connection broke mid-stream.
    Interrupted,
    Other,
}

impl std::fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ErrorKind::Status(code) => write!(f, "http_{code}"),
            other => write!(
                f,
                "{}",
                serde_json::to_value(other)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_default()
            ),
        }
    }
}

#[derive(Debug, Clone)]
pub struct RequestSettings {
    pub url: String,
    pub endpoint: Endpoint,
    pub model: String,
    pub stream: bool,
    pub ignore_eos: bool,
    pub temperature: Option<f64>,
    pub logprobs: Option<u32>,
    /// Merged into every request body last (e.g. `{"top_k": 1}`).
    pub extra_body: serde_json::Map<String, Value>,
    pub timeout: Duration,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct RequestOutput {
    pub success: bool,
    pub error: Option<ErrorKind>,
    pub error_detail: Option<String>,
    pub prompt_len: usize,
    /// From the server's usage report when present.
    pub output_tokens: Option<usize>,
    pub generated_text: String,
    /// Seconds.
    pub ttft: f64,
    pub itl: Vec<f64>,
    pub latency: f64,
    /// Seconds from the benchmark start: when the request was due, and when it was sent.
    pub scheduled_at: f64,
    pub sent_at: f64,
    /// The simulator's own TTFT measurement (seconds), when talking to `servetest sim-server`.
    pub server_ttft: Option<f64>,
}

pub fn body(settings: &RequestSettings, req: &Request) -> Value {
    let mut body = json!({
        "model": settings.model,
        "max_tokens": req.output_len,
        "stream": settings.stream,
    });
    let obj = body.as_object_mut().expect("object");
    match settings.endpoint {
        Endpoint::Completions => {
            obj.insert("prompt".into(), json!(req.prompt));
        }
        Endpoint::Chat => {
            obj.insert(
                "messages".into(),
                json!([{"role": "user", "content": req.prompt}]),
            );
        }
    }
    if settings.stream {
        obj.insert("stream_options".into(), json!({"include_usage": true}));
    }
    if settings.ignore_eos {
        obj.insert("ignore_eos".into(), json!(true));
    }
    if let Some(t) = settings.temperature {
        obj.insert("temperature".into(), json!(t));
    }
    if let Some(n) = settings.logprobs {
        obj.insert("logprobs".into(), json!(n));
    }
    for (k, v) in &settings.extra_body {
        obj.insert(k.clone(), v.clone());
    }
    body
}

/// The text of a chunk's first choice (completions: `text`; chat: `delta.content`), if it has one.
pub(crate) fn choice_text(chunk: &Value) -> Option<String> {
    let choice = chunk.get("choices")?.as_array()?.first()?;
    let text = choice
        .get("text")
        .or_else(|| choice.get("delta").and_then(|d| d.get("content")))
        .or_else(|| choice.get("message").and_then(|d| d.get("content")));
    Some(text.and_then(Value::as_str).unwrap_or_default().to_owned())
}

pub(crate) fn usage(chunk: &Value, out: &mut RequestOutput) {
    if let Some(u) = chunk.get("usage").filter(|u| !u.is_null()) {
        if let Some(c) = u.get("completion_tokens").and_then(Value::as_u64) {
            out.output_tokens = Some(c as usize);
        }
        if let Some(p) = u.get("prompt_tokens").and_then(Value::as_u64) {
            out.prompt_len = p as usize;
        }
    }
}

fn classify(e: &reqwest::Error) -> ErrorKind {
    if e.is_timeout() {
        ErrorKind::Timeout
    } else if e.is_connect() {
        ErrorKind::Connect
    } else if e.is_body() || e.is_decode() {
        ErrorKind::Interrupted
    } else {
        ErrorKind::Other
    }
}

/// Sends `req` and times it. `origin` is the benchmark start; `scheduled_at` when it was due.
pub async fn send(
    client: &reqwest::Client,
    settings: &RequestSettings,
    req: &Request,
    origin: Instant,
    scheduled_at: f64,
) -> RequestOutput {
    let mut out = RequestOutput {
        prompt_len: req.prompt_len,
        scheduled_at,
        ..RequestOutput::default()
    };
    let body = body(settings, req);
    let start = Instant::now();
    out.sent_at = start.duration_since(origin).as_secs_f64();
    let fail = |mut out: RequestOutput, kind: ErrorKind, detail: String| {
        out.success = false;
        out.error = Some(kind);
        out.error_detail = Some(detail);
        out.latency = start.elapsed().as_secs_f64();
        out
    };
    let work = async {
        let resp = match client.post(&settings.url).json(&body).send().await {
            Ok(r) => r,
            Err(e) => return fail(out, classify(&e), e.to_string()),
        };
        let status = resp.status();
        if !status.is_success() {
            let text = resp.text().await.unwrap_or_default();
            return fail(
                out,
                ErrorKind::Status(status.as_u16()),
                text.chars().take(300).collect(),
            );
        }
        if !settings.stream {
            let bytes = match resp.bytes().await {
                Ok(b) => b,
                Err(e) => return fail(out, classify(&e), e.to_string()),
            };
            let Ok(v) = serde_json::from_slice::<Value>(&bytes) else {
                return fail(
                    out,
                    ErrorKind::MalformedStream,
                    "response is not JSON".into(),
                );
            };
            out.latency = start.elapsed().as_secs_f64();
            out.ttft = out.latency;
            out.generated_text = choice_text(&v).unwrap_or_default();
            usage(&v, &mut out);
            out.success = true;
            return out;
        }
        let read =
            super::sse::read_completion(resp.bytes_stream(), start, &mut out, classify).await;
        out.latency = start.elapsed().as_secs_f64();
        if let Err((kind, detail)) = read {
            return fail(out, kind, detail);
        }
        out.success = true;
        out
    };
    match tokio::time::timeout(settings.timeout, work).await {
        Ok(out) => out,
        Err(_) => {
            let mut o = RequestOutput {
                prompt_len: req.prompt_len,
                scheduled_at,
                ..RequestOutput::default()
            };
            o.sent_at = start.duration_since(origin).as_secs_f64();
            fail(
                o,
                ErrorKind::Timeout,
                format!("no complete response within {:?}", settings.timeout),
            )
        }
    }
}
