//! `servetest bench` and `servetest sim-server`.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use serde_json::{json, Value};

use servetest::bench::client::{Endpoint, RequestSettings};
use servetest::bench::dataset::{self, DatasetSpec};
use servetest::bench::metrics::{self, Slo};
use servetest::bench::report::{self, RunInfo};
use servetest::bench::{run_pass, schedule, sim};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DatasetName {
    Random,
    Sharegpt,
    Prompts,
}

#[derive(Args, Debug)]
pub struct BenchArgs {
    /// Server base URL, e.g. http://127.0.0.1:8000 (loopback only unless --allow-remote).
    #[arg(long)]
    base_url: String,
    #[arg(long, value_enum, default_value = "completions")]
    endpoint: Endpoint,
    /// Model name sent in requests (vLLM: the served model name, often the model path).
    #[arg(long)]
    model: String,
    /// Directory with tokenizer.json (default: --model, if it is a directory).
    #[arg(long)]
    tokenizer: Option<PathBuf>,
    #[arg(long, value_enum, default_value = "random")]
    dataset: DatasetName,
    /// ShareGPT JSON or a prompts file (one prompt per line).
    #[arg(long)]
    dataset_path: Option<PathBuf>,
    #[arg(long, default_value_t = 1024)]
    input_len: usize,
    #[arg(long, default_value_t = 128)]
    output_len: usize,
    /// Lengths uniform in [L(1-r), L(1+r)].
    #[arg(long, default_value_t = 0.0)]
    range_ratio: f64,
    #[arg(long, default_value_t = 1000)]
    num_prompts: usize,
    /// Closed-loop cap on requests in flight.
    #[arg(long)]
    max_concurrency: Option<usize>,
    /// One pass per level ("1 2 4 8" or "1,2,4"), as the YAML's concurrency_list.
    #[arg(long)]
    concurrency_list: Option<String>,
    /// Requests per second ("inf": all at once).
    #[arg(long, default_value = "inf")]
    request_rate: f64,
    /// Gamma shape of inter-arrival times (1 = Poisson).
    #[arg(long, default_value_t = 1.0)]
    burstiness: f64,
    /// Stop sending after this many seconds (requests in flight finish).
    #[arg(long)]
    duration: Option<f64>,
    /// Requests sent before each pass and left out of the metrics.
    #[arg(long, default_value_t = 0)]
    warmups: usize,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Percentiles to report, comma-separated (vLLM's --metric-percentiles).
    #[arg(long, default_value = "99")]
    percentiles: String,
    /// SLOs for goodput, e.g. `ttft:200 tpot:50 e2el:2000` (milliseconds).
    #[arg(long, num_args = 1..)]
    goodput: Vec<String>,
    /// Ask the server to ignore EOS (default on for the random dataset, as vLLM forces it).
    #[arg(long)]
    ignore_eos: Option<bool>,
    #[arg(long)]
    temperature: Option<f64>,
    #[arg(long)]
    logprobs: Option<u32>,
    /// JSON object merged into every request body.
    #[arg(long)]
    extra_body: Option<String>,
    /// Non-streaming requests (TTFT = E2EL then).
    #[arg(long)]
    no_stream: bool,
    /// Per-request timeout, seconds.
    #[arg(long, default_value_t = 600.0)]
    timeout: f64,
    /// Write the result JSON here (per level `NAME.conN.json` when sweeping).
    #[arg(long)]
    save_result: Option<PathBuf>,
    #[arg(long)]
    label: Option<String>,
    #[arg(long)]
    allow_remote: bool,
}

fn is_loopback(url: &str) -> Result<bool, String> {
    let parsed = reqwest::Url::parse(url).map_err(|e| format!("invalid --base-url {url}: {e}"))?;
    if parsed.scheme() != "http" {
        return Err(format!(
            "{url}: only http:// is supported (this build has no TLS)"
        ));
    }
    Ok(match parsed.host() {
        Some(url::Host::Domain(d)) => d == "localhost",
        Some(url::Host::Ipv4(ip)) => IpAddr::V4(ip).is_loopback(),
        Some(url::Host::Ipv6(ip)) => IpAddr::V6(ip).is_loopback(),
        None => false,
    })
}

fn parse_levels(text: &str) -> Result<Vec<usize>, String> {
    text.split(|c: char| c == ',' || c.is_whitespace())
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse()
                .ok()
                .filter(|n: &usize| *n > 0)
                .ok_or_else(|| format!("concurrency `{s}` is not a positive integer"))
        })
        .collect()
}

fn parse_goodput(items: &[String]) -> Result<Vec<(Slo, f64)>, String> {
    items
        .iter()
        .flat_map(|s| s.split_whitespace())
        .map(|item| {
            let (k, v) = item
                .split_once(':')
                .ok_or_else(|| format!("--goodput `{item}`: expected NAME:MS"))?;
            let slo = match k {
                "ttft" => Slo::Ttft,
                "tpot" => Slo::Tpot,
                "e2el" => Slo::E2el,
                _ => return Err(format!("--goodput `{k}`: expected ttft, tpot or e2el")),
            };
            let ms: f64 = v
                .parse()
                .map_err(|_| format!("--goodput `{item}`: `{v}` is not a number of ms"))?;
            Ok((slo, ms))
        })
        .collect()
}

pub fn run(a: BenchArgs) -> Result<bool, String> {
    if !is_loopback(&a.base_url)? && !a.allow_remote {
        return Err(format!(
            "refusing to load a non-loopback target {} without --allow-remote",
            a.base_url
        ));
    }
    let percentiles: Vec<f64> = a
        .percentiles
        .split(',')
        .map(|p| {
            p.trim()
                .parse::<f64>()
                .ok()
                .filter(|p| *p > 0.0 && *p < 100.0)
                .ok_or(format!("--percentiles: `{p}` is not in (0, 100)"))
        })
        .collect::<Result<_, _>>()?;
    let goodput = parse_goodput(&a.goodput)?;
    let levels: Vec<Option<usize>> = match &a.concurrency_list {
        Some(list) => parse_levels(list)?.into_iter().map(Some).collect(),
        None => vec![a.max_concurrency],
    };
    let tok_dir = a
        .tokenizer
        .clone()
        .unwrap_or_else(|| PathBuf::from(&a.model));
    let tok =
        dataset::load_tokenizer(&tok_dir).map_err(|e| format!("{e} (pass --tokenizer DIR)"))?;
    let spec = match a.dataset {
        DatasetName::Random => DatasetSpec::Random {
            input_len: a.input_len,
            output_len: a.output_len,
            range_ratio: a.range_ratio,
        },
        DatasetName::Sharegpt => DatasetSpec::ShareGpt {
            path: a
                .dataset_path
                .clone()
                .ok_or("--dataset sharegpt needs --dataset-path")?,
            output_len: None,
        },
        DatasetName::Prompts => DatasetSpec::Prompts {
            path: a
                .dataset_path
                .clone()
                .ok_or("--dataset prompts needs --dataset-path")?,
            output_len: a.output_len,
        },
    };
    let extra_body = match &a.extra_body {
        Some(text) => match serde_json::from_str::<Value>(text) {
            Ok(Value::Object(m)) => m,
            _ => return Err("--extra-body must be a JSON object".into()),
        },
        None => Default::default(),
    };
    let settings = Arc::new(RequestSettings {
        url: format!("{}{}", a.base_url.trim_end_matches('/'), a.endpoint.path()),
        endpoint: a.endpoint,
        model: a.model.clone(),
        stream: !a.no_stream,
        ignore_eos: a.ignore_eos.unwrap_or(a.dataset == DatasetName::Random),
        temperature: a.temperature,
        logprobs: a.logprobs,
        extra_body,
        timeout: Duration::from_secs_f64(a.timeout),
    });
    let total = a.num_prompts + a.warmups;
    let all = dataset::build(&spec, &tok, total, a.seed).map_err(|e| e.to_string())?;
    let (warm, requests) = all.split_at(a.warmups);
    let offsets = schedule(requests.len(), a.request_rate, a.burstiness, a.seed);
    let rt = tokio::runtime::Runtime::new().map_err(|e| e.to_string())?;
    let endpoint_type = match a.endpoint {
        Endpoint::Completions => "openai",
        Endpoint::Chat => "openai-chat",
    };
    let mut all_ok = true;
    for level in levels {
        let max_pool = level.unwrap_or(256).max(1);
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(max_pool)
            .no_proxy()
            .build()
            .map_err(|e| e.to_string())?;
        let pass = rt.block_on(async {
            if !warm.is_empty() {
                let zeros = vec![0.0; warm.len()];
                run_pass(
                    &http,
                    settings.clone(),
                    warm,
                    &zeros,
                    level,
                    None,
                    std::future::pending(),
                )
                .await;
            }
            let stop = async {
                let _ = tokio::signal::ctrl_c().await;
            };
            run_pass(
                &http,
                settings.clone(),
                requests,
                &offsets,
                level,
                a.duration.map(Duration::from_secs_f64),
                stop,
            )
            .await
        });
        let m = metrics::compute(&pass.outputs, pass.duration, &percentiles, &goodput, |o| {
            dataset::count_tokens(&tok, &o.generated_text, false)
        });
        let info = RunInfo {
            endpoint_type,
            label: a.label.as_deref(),
            model_id: &a.model,
            tokenizer_id: &tok_dir.display().to_string(),
            num_prompts: requests.len(),
            request_rate: a.request_rate,
            burstiness: a.burstiness,
            max_concurrency: level,
            interrupted: pass.interrupted,
            goodput: !goodput.is_empty(),
        };
        print!("{}", report::text(&m, &info));
        if let Some(c) = level {
            println!("Benchmark with concurrency {c} done");
        }
        if let Some(path) = &a.save_result {
            let path = match (&a.concurrency_list, level) {
                (Some(_), Some(c)) => path.with_extension(format!("con{c}.json")),
                _ => path.clone(),
            };
            let per_request = json!({
                "input_lens": pass.outputs.iter().map(|o| o.prompt_len).collect::<Vec<_>>(),
                "output_lens": m.output_lens,
                "ttfts": pass.outputs.iter().map(|o| o.ttft).collect::<Vec<_>>(),
                "itls": pass.outputs.iter().map(|o| o.itl.clone()).collect::<Vec<_>>(),
                "errors": pass.outputs.iter().map(|o| o.error_detail.clone().unwrap_or_default()).collect::<Vec<_>>(),
                "server_ttfts": pass.outputs.iter().map(|o| o.server_ttft).collect::<Vec<_>>(),
            });
            let doc = report::json(&m, &info, per_request);
            let bytes = serde_json::to_vec_pretty(&doc).expect("result serializes");
            servetest::fsutil::write_atomic(&path, &bytes)
                .map_err(|e| format!("failed to write {}: {e}", path.display()))?;
            eprintln!("servetest: saved {}", path.display());
        }
        all_ok &= m.failed == 0;
        if pass.interrupted {
            return Err("interrupted: partial results printed and saved".into());
        }
    }
    Ok(all_ok)
}

#[derive(Args, Debug)]
pub struct SimArgs {
    #[arg(long, default_value = "127.0.0.1")]
    host: IpAddr,
    /// 0 picks a free port.
    #[arg(long, default_value_t = 0)]
    port: u16,
    #[arg(long, default_value_t = 20.0)]
    ttft_ms: f64,
    #[arg(long, default_value_t = 0.0)]
    ttft_per_token_us: f64,
    #[arg(long, default_value_t = 5.0)]
    itl_ms: f64,
    #[arg(long, default_value_t = 0.0)]
    itl_jitter_ms: f64,
    #[arg(long, default_value_t = 0.0)]
    failure_rate: f64,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Write the base URL here once listening.
    #[arg(long)]
    ready_file: Option<PathBuf>,
    #[arg(long)]
    allow_remote: bool,
}

pub fn sim_server(a: SimArgs) -> Result<(), String> {
    if !a.host.is_loopback() && !a.allow_remote {
        return Err(format!(
            "refusing to listen on non-loopback address {} without --allow-remote",
            a.host
        ));
    }
    let cfg = sim::SimConfig {
        ttft_ms: a.ttft_ms,
        ttft_per_token_us: a.ttft_per_token_us,
        itl_ms: a.itl_ms,
        itl_jitter_ms: a.itl_jitter_ms,
        failure_rate: a.failure_rate,
        seed: a.seed,
    };
    let rt = tokio::runtime::Runtime::new().map_err(|e| e.to_string())?;
    rt.block_on(async {
        let (addr, handle) = sim::spawn(cfg, SocketAddr::new(a.host, a.port))
            .await
            .map_err(|e| e.to_string())?;
        let url = format!("http://{addr}");
        println!("{url}");
        if let Some(p) = &a.ready_file {
            std::fs::write(p, format!("{url}\n")).map_err(|e| e.to_string())?;
        }
        let _ = tokio::signal::ctrl_c().await;
        handle.abort();
        Ok(())
    })
}
