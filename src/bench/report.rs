//! The text summary in vLLM's exact layout (so log regexes written for `vllm bench serve` and
//! TRT-LLM's `benchmark_serving.py` keep working) and the result JSON (vLLM's keys, plus ours).

use serde_json::{json, Map, Value};

use super::metrics::{Metrics, Stat};

pub const SCHEMA_VERSION: u32 = 1;

pub struct RunInfo<'a> {
    pub endpoint_type: &'a str,
    pub label: Option<&'a str>,
    pub model_id: &'a str,
    pub tokenizer_id: &'a str,
    pub num_prompts: usize,
    pub request_rate: f64,
    pub burstiness: f64,
    pub max_concurrency: Option<usize>,
    pub interrupted: bool,
    pub goodput: bool,
}

fn line(out: &mut String, key: &str, value: impl std::fmt::Display) {
    out.push_str(&format!("{key:<40} {value:<10}\n"));
}

fn linef(out: &mut String, key: &str, value: f64) {
    out.push_str(&format!("{key:<40} {value:<10.2}\n"));
}

fn header(out: &mut String, title: &str, fill: char) {
    let total = 50usize;
    let len = title.chars().count();
    let left = (total.saturating_sub(len)) / 2;
    let right = total.saturating_sub(len + left);
    out.push_str(&format!(
        "{}{title}{}\n",
        fill.to_string().repeat(left),
        fill.to_string().repeat(right)
    ));
}

fn metric(out: &mut String, title: &str, name: &str, s: &Stat) {
    header(out, title, '-');
    linef(out, &format!("Mean {name} (ms):"), s.mean);
    linef(out, &format!("Median {name} (ms):"), s.median);
    for (p, v) in &s.percentiles {
        linef(out, &format!("P{} {name} (ms):", pword(*p)), *v);
    }
}

fn pword(p: f64) -> String {
    if p.fract() == 0.0 {
        format!("{}", p as i64)
    } else {
        format!("{p}")
    }
}

pub fn text(m: &Metrics, info: &RunInfo) -> String {
    let mut out = String::new();
    header(&mut out, " Serving Benchmark Result ", '=');
    line(&mut out, "Successful requests:", m.completed);
    line(&mut out, "Failed requests:", m.failed);
    if let Some(c) = info.max_concurrency {
        line(&mut out, "Maximum request concurrency:", c);
    }
    if info.request_rate.is_finite() {
        linef(
            &mut out,
            "Request rate configured (RPS):",
            info.request_rate,
        );
    }
    linef(&mut out, "Benchmark duration (s):", m.duration);
    line(&mut out, "Total input tokens:", m.total_input);
    line(&mut out, "Total generated tokens:", m.total_output);
    linef(
        &mut out,
        "Request throughput (req/s):",
        m.request_throughput,
    );
    if info.goodput {
        linef(&mut out, "Request goodput (req/s):", m.request_goodput);
    }
    linef(
        &mut out,
        "Output token throughput (tok/s):",
        m.output_throughput,
    );
    linef(
        &mut out,
        "Peak output token throughput (tok/s):",
        m.max_output_tokens_per_s,
    );
    linef(
        &mut out,
        "Peak concurrent requests:",
        m.max_concurrent_requests as f64,
    );
    linef(
        &mut out,
        "Total token throughput (tok/s):",
        m.total_token_throughput,
    );
    metric(&mut out, "Time to First Token", "TTFT", &m.ttft);
    metric(
        &mut out,
        "Time per Output Token (excl. 1st token)",
        "TPOT",
        &m.tpot,
    );
    metric(&mut out, "Inter-token Latency", "ITL", &m.itl);
    metric(&mut out, "End-to-end Latency", "E2EL", &m.e2el);
    // servetest's additions come after vLLM's sections, so existing regexes still match.
    metric(
        &mut out,
        "TTFT from scheduled send",
        "Scheduled TTFT",
        &m.ttft_from_scheduled,
    );
    metric(
        &mut out,
        "E2EL from scheduled send",
        "Scheduled E2EL",
        &m.e2el_from_scheduled,
    );
    if !m.errors_by_kind.is_empty() {
        header(&mut out, "Errors", '-');
        for (kind, n) in &m.errors_by_kind {
            line(&mut out, &format!("{kind}:"), n);
        }
    }
    if info.interrupted {
        out.push_str("(interrupted: partial results)\n");
    }
    header(&mut out, "", '=');
    out
}

fn put_stat(obj: &mut Map<String, Value>, name: &str, s: &Stat) {
    obj.insert(format!("mean_{name}_ms"), json!(s.mean));
    obj.insert(format!("median_{name}_ms"), json!(s.median));
    obj.insert(format!("std_{name}_ms"), json!(s.std));
    for (p, v) in &s.percentiles {
        obj.insert(format!("p{}_{name}_ms", pword(*p)), json!(v));
    }
}

/// vLLM's `--save-result` keys, then `schema_version` and servetest's own fields.
pub fn json(m: &Metrics, info: &RunInfo, per_request: Value) -> Value {
    let mut o = Map::new();
    o.insert(
        "date".into(),
        json!(chrono::Local::now().format("%Y%m%d-%H%M%S").to_string()),
    );
    o.insert("endpoint_type".into(), json!(info.endpoint_type));
    o.insert("backend".into(), json!(info.endpoint_type));
    o.insert("label".into(), json!(info.label));
    o.insert("model_id".into(), json!(info.model_id));
    o.insert("tokenizer_id".into(), json!(info.tokenizer_id));
    o.insert("num_prompts".into(), json!(info.num_prompts));
    let rate = if info.request_rate.is_finite() {
        json!(info.request_rate)
    } else {
        json!("inf")
    };
    o.insert("request_rate".into(), rate);
    o.insert("burstiness".into(), json!(info.burstiness));
    o.insert("max_concurrency".into(), json!(info.max_concurrency));
    o.insert("duration".into(), json!(m.duration));
    o.insert("completed".into(), json!(m.completed));
    o.insert("failed".into(), json!(m.failed));
    o.insert("total_input_tokens".into(), json!(m.total_input));
    o.insert("total_output_tokens".into(), json!(m.total_output));
    o.insert("request_throughput".into(), json!(m.request_throughput));
    o.insert(
        "request_goodput".into(),
        json!(if info.goodput {
            json!(m.request_goodput)
        } else {
            Value::Null
        }),
    );
    o.insert("output_throughput".into(), json!(m.output_throughput));
    o.insert(
        "total_token_throughput".into(),
        json!(m.total_token_throughput),
    );
    o.insert(
        "max_output_tokens_per_s".into(),
        json!(m.max_output_tokens_per_s),
    );
    o.insert(
        "max_concurrent_requests".into(),
        json!(m.max_concurrent_requests),
    );
    put_stat(&mut o, "ttft", &m.ttft);
    put_stat(&mut o, "tpot", &m.tpot);
    put_stat(&mut o, "itl", &m.itl);
    put_stat(&mut o, "e2el", &m.e2el);
    // vLLM's inverse real-time factor of audio benchmarks: 0 for text, as vLLM saves it.
    o.insert("rtfx".into(), json!(0.0));
    o.insert("schema_version".into(), json!(SCHEMA_VERSION));
    o.insert(
        "servetest".into(),
        json!({
            "interrupted": info.interrupted,
            "errors_by_kind": m.errors_by_kind,
            "statistics": "numpy (np.mean, np.std ddof=0, np.median, np.percentile linear)",
            "ttft_from_scheduled": m.ttft_from_scheduled,
            "e2el_from_scheduled": m.e2el_from_scheduled,
        }),
    );
    if let Value::Object(extra) = per_request {
        o.extend(extra);
    }
    Value::Object(o)
}
