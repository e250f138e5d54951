//! `servetest bench` and `servetest sim-server`.

use std::net::SocketAddr;
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

/// `servetest bench`'s options. vLLM's `vllm bench serve` names work too (aliases, and the flag forms
/// of `--save-result` and `--ignore-eos`), so a recorded `vllm bench serve` command line runs with
/// `servetest bench` swapped in (`cli::a_vllm_bench_serve_command_line_runs_unchanged`).
#[derive(Args, Debug)]
pub struct BenchArgs {
    /// Server base URL, e.g. http://127.0.0.1:8000 (loopback or $SERVETEST_CLUSTER_NETWORK unless
    /// --allow-remote; default http://HOST:PORT).
    #[arg(long)]
    base_url: Option<String>,
    /// Server host when --base-url is not given (vLLM's --host).
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// Server port when --base-url is not given (vLLM's --port).
    #[arg(long, default_value_t = 8000)]
    port: u16,
    /// API: `completions` or `chat`, or vLLM's paths `/v1/completions`, `/v1/chat/completions`.
    #[arg(long, value_parser = parse_endpoint, default_value = "completions")]
    endpoint: Endpoint,
    /// vLLM's backend name: `openai`/`vllm` (completions) or `openai-chat`/`vllm-chat` (chat);
    /// sets the endpoint and the result's `backend`.
    #[arg(long, value_parser = ["openai", "vllm", "openai-chat", "vllm-chat"])]
    backend: Option<String>,
    /// Model name sent in requests (vLLM: the served model name, often the model path).
    #[arg(long)]
    model: String,
    /// Name sent in requests instead of --model (vLLM's --served-model-name).
    #[arg(long)]
    served_model_name: Option<String>,
    /// Directory with tokenizer.json (default: --model, if it is a directory).
    #[arg(long)]
    tokenizer: Option<PathBuf>,
    /// Prompt source (vLLM's --dataset-name).
    #[arg(long, value_enum, default_value = "random", alias = "dataset-name")]
    dataset: DatasetName,
    /// ShareGPT JSON or a prompts file (one prompt per line).
    #[arg(long)]
    dataset_path: Option<PathBuf>,
    /// Prompt tokens of the random dataset (vLLM's --random-input-len).
    #[arg(long, default_value_t = 1024, value_parser = at_least_one, alias = "random-input-len")]
    input_len: usize,
    /// Output tokens (vLLM's --random-output-len).
    #[arg(long, default_value_t = 128, value_parser = at_least_one, alias = "random-output-len")]
    output_len: usize,
    /// Lengths uniform in [L(1-r), L(1+r)], 0 ≤ r < 1 (vLLM's --random-range-ratio).
    #[arg(long, default_value_t = 0.0, value_parser = range_ratio, alias = "random-range-ratio")]
    range_ratio: f64,
    /// vLLM's shared random prefix: only 0 is supported (a clear error otherwise).
    #[arg(long = "random-prefix-len", default_value_t = 0)]
    prefix_len: usize,
    /// Requests per pass.
    #[arg(long, default_value_t = 1000, value_parser = at_least_one)]
    num_prompts: usize,
    /// Closed-loop cap on requests in flight.
    #[arg(long, value_parser = at_least_one)]
    max_concurrency: Option<usize>,
    /// One pass per level ("1 2 4 8" or "1,2,4"), as the YAML's concurrency_list.
    #[arg(long)]
    concurrency_list: Option<String>,
    /// Requests per second, > 0 ("inf": all at once).
    #[arg(long, default_value = "inf", value_parser = positive_or_inf)]
    request_rate: f64,
    /// Gamma shape of inter-arrival times, > 0 (1 = Poisson).
    #[arg(long, default_value_t = 1.0, value_parser = positive)]
    burstiness: f64,
    /// Stop sending after this many seconds (requests in flight finish).
    #[arg(long, value_parser = positive)]
    duration: Option<f64>,
    /// Requests sent before each pass and left out of the metrics.
    #[arg(long, default_value_t = 0)]
    warmups: usize,
    /// Seed of the dataset and the arrival schedule.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Percentiles to report, comma-separated (vLLM's --metric-percentiles).
    #[arg(long, default_value = "99", alias = "metric-percentiles")]
    percentiles: String,
    /// Metrics whose statistics are saved, comma-separated from ttft,tpot,itl,e2el (vLLM's
    /// --percentile-metrics; the text summary shows all four).
    #[arg(long, default_value = "ttft,tpot,itl,e2el")]
    percentile_metrics: String,
    /// SLOs for goodput, e.g. `ttft:200 tpot:50 e2el:2000` (milliseconds).
    #[arg(long, num_args = 1..)]
    goodput: Vec<String>,
    /// Ask the server to ignore EOS: `--ignore-eos`, `--ignore-eos true|false` (default on for the
    /// random dataset, as vLLM forces it).
    #[arg(long, num_args = 0..=1, default_missing_value = "true")]
    ignore_eos: Option<bool>,
    /// Sampling temperature sent with each request (≥ 0).
    #[arg(long, value_parser = non_negative)]
    temperature: Option<f64>,
    /// Logprobs per token requested from the server.
    #[arg(long)]
    logprobs: Option<u32>,
    /// JSON object merged into every request body.
    #[arg(long)]
    extra_body: Option<String>,
    /// Non-streaming requests (TTFT = E2EL then).
    #[arg(long)]
    no_stream: bool,
    /// Per-request timeout, seconds (> 0).
    #[arg(long, default_value_t = 600.0, value_parser = positive)]
    timeout: f64,
    /// Save the result JSON: `--save-result FILE`, or vLLM's flag form with --result-dir and
    /// --result-filename (default name as vLLM's). Per level `NAME.conN.json` when sweeping.
    #[arg(long, num_args = 0..=1)]
    save_result: Option<Option<PathBuf>>,
    /// Directory for the saved result (created if missing).
    #[arg(long)]
    result_dir: Option<PathBuf>,
    /// File name of the saved result (vLLM's --result-filename).
    #[arg(long)]
    result_filename: Option<String>,
    /// Also save the per-request lists vLLM's --save-detailed saves (input_lens, output_lens,
    /// start_times, ttfts, itls, generated_texts, errors; seconds).
    #[arg(long)]
    save_detailed: bool,
    /// Label saved in the result (vLLM's --label).
    #[arg(long)]
    label: Option<String>,
    /// No progress bar (it shows only on a terminal anyway), as vLLM's --disable-tqdm.
    #[arg(long)]
    disable_tqdm: bool,
    /// Allow a target outside loopback and the cluster network.
    #[arg(long)]
    allow_remote: bool,
    /// Do not record this run in the results history (also SERVETEST_DB=off).
    #[arg(long)]
    no_history: bool,
}

fn parse_endpoint(s: &str) -> Result<Endpoint, String> {
    match s {
        "completions" | "/v1/completions" => Ok(Endpoint::Completions),
        "chat" | "/v1/chat/completions" => Ok(Endpoint::Chat),
        _ => Err(format!(
            "`{s}`: expected completions, chat, /v1/completions or /v1/chat/completions"
        )),
    }
}

fn number(s: &str) -> Result<f64, String> {
    let v: f64 = s
        .trim()
        .parse()
        .map_err(|_| format!("`{s}` is not a number"))?;
    if v.is_nan() {
        return Err("NaN is not a value here".into());
    }
    Ok(v)
}

fn positive(s: &str) -> Result<f64, String> {
    let v = number(s)?;
    if v > 0.0 && v.is_finite() {
        Ok(v)
    } else {
        Err(format!("`{s}`: must be a finite number greater than 0"))
    }
}

pub(crate) fn non_negative(s: &str) -> Result<f64, String> {
    let v = number(s)?;
    if v >= 0.0 && v.is_finite() {
        Ok(v)
    } else {
        Err(format!("`{s}`: must be a finite number of at least 0"))
    }
}

fn positive_or_inf(s: &str) -> Result<f64, String> {
    let v = number(s)?;
    if v > 0.0 {
        Ok(v)
    } else {
        Err(format!("`{s}`: must be greater than 0, or inf"))
    }
}

fn range_ratio(s: &str) -> Result<f64, String> {
    let v = number(s)?;
    if (0.0..1.0).contains(&v) {
        Ok(v)
    } else {
        Err(format!("`{s}`: must be at least 0 and below 1"))
    }
}

pub(crate) fn probability(s: &str) -> Result<f64, String> {
    let v = number(s)?;
    if (0.0..=1.0).contains(&v) {
        Ok(v)
    } else {
        Err(format!("`{s}`: must be between 0 and 1"))
    }
}

fn at_least_one(s: &str) -> Result<usize, String> {
    match s.trim().parse::<usize>() {
        Ok(n) if n >= 1 => Ok(n),
        _ => Err(format!("`{s}`: must be a whole number of at least 1")),
    }
}

/// The target's host, after checking the URL is one this build can load (plain http).
fn target_host(url: &str) -> Result<String, String> {
    let parsed = reqwest::Url::parse(url).map_err(|e| format!("invalid --base-url {url}: {e}"))?;
    if parsed.scheme() != "http" {
        return Err(format!(
            "{url}: only http:// is supported (this build has no TLS)"
        ));
    }
    parsed
        .host_str()
        .map(str::to_owned)
        .ok_or_else(|| format!("invalid --base-url {url}: no host"))
}

fn parse_levels(text: &str) -> Result<Vec<usize>, String> {
    servetest::disagg::schema::split_levels(text)
        .into_iter()
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

pub fn run(mut a: BenchArgs) -> Result<bool, String> {
    let base_url = a.base_url.clone().unwrap_or_else(|| {
        format!(
            "http://{}",
            servetest::serve::engine::host_port(&a.host, a.port)
        )
    });
    servetest::netscope::check(&target_host(&base_url)?, a.allow_remote, "load the target")
        .map_err(|e| format!("{e} ({base_url})"))?;
    if a.prefix_len > 0 {
        return Err(
            "--random-prefix-len: a shared random prefix is not supported yet (use 0)".into(),
        );
    }
    if let Some(backend) = &a.backend {
        if backend.ends_with("-chat") {
            a.endpoint = Endpoint::Chat;
        }
    }
    let saved_metrics: Vec<&str> = a
        .percentile_metrics
        .split(',')
        .map(str::trim)
        .filter(|m| !m.is_empty())
        .collect();
    if let Some(bad) = saved_metrics
        .iter()
        .find(|m| !matches!(**m, "ttft" | "tpot" | "itl" | "e2el"))
    {
        return Err(format!(
            "--percentile-metrics: `{bad}` is not one of ttft, tpot, itl, e2el"
        ));
    }
    ready_check(&base_url)?;
    servetest::bench::set_progress_bar(!a.disable_tqdm);
    let percentiles: Vec<f64> = a
        .percentiles
        .split(',')
        .map(|p| {
            p.trim()
                .parse::<f64>()
                .ok()
                .filter(|p| (0.0..=100.0).contains(p))
                .ok_or(format!("--percentiles: `{p}` is not in [0, 100]"))
        })
        .collect::<Result<_, _>>()?;
    let goodput = parse_goodput(&a.goodput)?;
    let levels: Vec<Option<usize>> = match &a.concurrency_list {
        Some(list) => parse_levels(list)?.into_iter().map(Some).collect(),
        None => vec![a.max_concurrency],
    };
    // Opened before any request: a database that cannot be opened is an error, not a lost record.
    let history = match (!a.no_history).then(servetest::history::location).flatten() {
        Some(location) => Some(BenchHistory::open(&location, &a)?),
        None => None,
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
        url: format!("{}{}", base_url.trim_end_matches('/'), a.endpoint.path()),
        endpoint: a.endpoint,
        model: a
            .served_model_name
            .clone()
            .unwrap_or_else(|| a.model.clone()),
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
        if let Some(path) = result_path(&a, endpoint_type, level)? {
            let path = match (&a.concurrency_list, level) {
                (Some(_), Some(c)) => path.with_extension(format!("con{c}.json")),
                _ => path,
            };
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir)
                    .map_err(|e| format!("failed to create {}: {e}", dir.display()))?;
            }
            // vLLM keeps these two in every save: latency and client-side queueing per request.
            let mut per_request = json!({
                "latencies": pass.outputs.iter().map(|o| o.latency).collect::<Vec<_>>(),
                "queue_times": pass.outputs.iter().map(|o| (o.sent_at - o.scheduled_at).max(0.0)).collect::<Vec<_>>(),
            });
            let detailed = if a.save_detailed {
                json!({
                    "input_lens": pass.outputs.iter().map(|o| o.prompt_len).collect::<Vec<_>>(),
                    "output_lens": m.output_lens,
                    "start_times": pass.outputs.iter().map(|o| o.sent_at).collect::<Vec<_>>(),
                    "ttfts": pass.outputs.iter().map(|o| o.ttft).collect::<Vec<_>>(),
                    "itls": pass.outputs.iter().map(|o| o.itl.clone()).collect::<Vec<_>>(),
                    "generated_texts": pass.outputs.iter().map(|o| o.generated_text.clone()).collect::<Vec<_>>(),
                    "errors": pass.outputs.iter().map(|o| o.error_detail.clone().unwrap_or_default()).collect::<Vec<_>>(),
                    "server_ttfts": pass.outputs.iter().map(|o| o.server_ttft).collect::<Vec<_>>(),
                })
            } else {
                Value::Null
            };
            if let (Value::Object(all), Value::Object(more)) = (&mut per_request, detailed) {
                all.extend(more);
            }
            let mut doc = report::json(&m, &info, per_request);
            // vLLM saves the --backend it was given.
            if let (Some(backend), Value::Object(o)) = (&a.backend, &mut doc) {
                o.insert("backend".into(), json!(backend));
            }
            // vLLM saves statistics only for --percentile-metrics.
            if let Value::Object(o) = &mut doc {
                o.retain(|k, _| {
                    !["ttft", "tpot", "itl", "e2el"].iter().any(|metric| {
                        k.ends_with(&format!("_{metric}_ms")) && !saved_metrics.contains(metric)
                    })
                });
            }
            let bytes = serde_json::to_vec_pretty(&doc).expect("result serializes");
            servetest::fsutil::write_atomic(&path, &bytes)
                .map_err(|e| format!("failed to write {}: {e}", path.display()))?;
            eprintln!("servetest: saved {}", path.display());
        }
        all_ok &= m.failed == 0;
        if let Some(h) = &history {
            h.record(&m, &info, level, &a)?;
        }
        if pass.target_gone {
            return Err(format!(
                "the server stopped answering ({} connection failures in a row); the pass was stopped, partial results printed and saved",
                servetest::bench::GONE_AFTER
            ));
        }
        if pass.interrupted {
            return Err("interrupted: partial results printed and saved".into());
        }
    }
    Ok(all_ok)
}

/// Fails fast, with one line, when nothing listens at `base_url` (vLLM stops at its first test
/// request; a dead port would otherwise print a table of failures).
fn ready_check(base_url: &str) -> Result<(), String> {
    let url =
        reqwest::Url::parse(base_url).map_err(|e| format!("invalid --base-url {base_url}: {e}"))?;
    let host = url
        .host_str()
        .unwrap_or("127.0.0.1")
        .trim_matches(['[', ']']);
    let port = url.port_or_known_default().unwrap_or(80);
    let addrs: Vec<SocketAddr> = std::net::ToSocketAddrs::to_socket_addrs(&(host, port))
        .map_err(|e| format!("cannot resolve {host}: {e}"))?
        .collect();
    let reachable = addrs
        .iter()
        .any(|addr| std::net::TcpStream::connect_timeout(addr, Duration::from_secs(5)).is_ok());
    if reachable {
        Ok(())
    } else {
        Err(format!(
            "nothing answers at {base_url} (connection refused or timed out): is the server up?"
        ))
    }
}

/// Where to save this pass: `--save-result FILE` (under --result-dir when relative), or the flag
/// form with --result-filename or vLLM's default name
/// `{label or backend}-{rate}qps[-concurrency{N}]-{model}-{YYYYmmdd-HHMMSS}.json`.
fn result_path(
    a: &BenchArgs,
    backend: &str,
    level: Option<usize>,
) -> Result<Option<PathBuf>, String> {
    let Some(save) = &a.save_result else {
        return Ok(None);
    };
    let name = match (save, &a.result_filename) {
        (Some(path), _) => path.clone(),
        (None, Some(name)) => PathBuf::from(name),
        (None, None) => {
            let rate = if a.request_rate.is_finite() {
                format!("{:?}", a.request_rate)
            } else {
                "inf".to_owned()
            };
            let concurrency = level
                .map(|c| format!("-concurrency{c}"))
                .unwrap_or_default();
            let model = a
                .model
                .trim_end_matches('/')
                .rsplit('/')
                .next()
                .unwrap_or(&a.model);
            let date = chrono::Local::now().format("%Y%m%d-%H%M%S");
            let label = a
                .label
                .as_deref()
                .or(a.backend.as_deref())
                .unwrap_or(backend);
            PathBuf::from(format!(
                "{label}-{rate}qps{concurrency}-{model}-{date}.json"
            ))
        }
    };
    Ok(Some(match &a.result_dir {
        Some(dir) if name.is_relative() => dir.join(name),
        _ => name,
    }))
}

#[derive(Args, Debug)]
pub struct SimArgs {
    /// Address or host name to listen on (loopback or $SERVETEST_CLUSTER_NETWORK unless
    /// --allow-remote).
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// 0 picks a free port.
    #[arg(long, default_value_t = 0)]
    port: u16,
    /// Time to first token, ms.
    #[arg(long, default_value_t = 20.0, value_parser = non_negative)]
    ttft_ms: f64,
    /// Added to TTFT per prompt token, µs.
    #[arg(long, default_value_t = 0.0, value_parser = non_negative)]
    ttft_per_token_us: f64,
    /// Time between chunks, ms.
    #[arg(long, default_value_t = 5.0, value_parser = non_negative)]
    itl_ms: f64,
    /// Uniform jitter on the time between chunks, ± ms.
    #[arg(long, default_value_t = 0.0, value_parser = non_negative)]
    itl_jitter_ms: f64,
    /// Share of requests answered with HTTP 500 (0..1).
    #[arg(long, default_value_t = 0.0, value_parser = probability)]
    failure_rate: f64,
    /// Seed of the jitter and failures.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Write the base URL here once listening.
    #[arg(long)]
    ready_file: Option<PathBuf>,
    /// Allow listening on an address outside loopback and the cluster network.
    #[arg(long)]
    allow_remote: bool,
}

pub fn sim_server(a: SimArgs) -> Result<(), String> {
    servetest::netscope::check(&a.host, a.allow_remote, "listen on")?;
    let ip: std::net::IpAddr = servetest::netscope::bind_ip(&a.host)
        .parse()
        .map_err(|_| format!("cannot resolve host `{}`", a.host))?;
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
        let (addr, handle) = sim::spawn(cfg, SocketAddr::new(ip, a.port))
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

/// `servetest bench` runs in the results history: one series per workload (model, dataset, lengths,
/// prompts, rate), a row per concurrency with every number of the saved result.
struct BenchHistory {
    store: servetest::history::Store,
    run_id: String,
    workload: String,
    hash: String,
}

impl BenchHistory {
    fn open(location: &str, a: &BenchArgs) -> Result<BenchHistory, String> {
        use sha2::Digest;
        let store = servetest::history::Store::open(location)?;
        let secs = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let run_id = format!("bench-{secs}-{}", std::process::id());
        let mut meta = servetest::history::RunMeta::here(&run_id, "bench");
        meta.executor = Some("bench".into());
        meta.output_path = None;
        store.begin_run(&meta)?;
        let workload = format!(
            "bench:{}:{:?}:{}/{}",
            a.label.as_deref().unwrap_or(&a.model),
            a.dataset,
            a.input_len,
            a.output_len
        );
        let identity = format!(
            "{workload} prompts={} rate={} burstiness={} range={} dataset_path={:?} endpoint={:?}",
            a.num_prompts, a.request_rate, a.burstiness, a.range_ratio, a.dataset_path, a.endpoint
        );
        let hash = format!("{:x}", sha2::Sha256::digest(identity.as_bytes()));
        eprintln!("servetest: results history {} (run {run_id})", store.shown);
        Ok(BenchHistory {
            store,
            run_id,
            workload,
            hash,
        })
    }

    fn record(
        &self,
        m: &servetest::bench::metrics::Metrics,
        info: &RunInfo,
        level: Option<usize>,
        a: &BenchArgs,
    ) -> Result<(), String> {
        let doc = report::json(m, info, Value::Null);
        let metrics = doc
            .as_object()
            .map(|o| {
                o.iter()
                    .filter_map(|(k, v)| Some((k.clone(), v.as_f64().filter(|x| x.is_finite())?)))
                    .collect()
            })
            .unwrap_or_default();
        let row = servetest::report::results::Row {
            test_name: self.workload.clone(),
            family: "bench".into(),
            category: "perf".into(),
            model: a.model.clone(),
            variant: String::new(),
            gpu_type: servetest::env::gpu_type(),
            executor: "bench".into(),
            job_id: self.run_id.clone(),
            concurrency: level.map(|c| c as u64),
            state: if m.failed == 0 { "COMPLETED" } else { "FAILED" }.into(),
            start: None,
            end: None,
            metrics,
        };
        self.store.record(&self.run_id, &[row], &self.hash)
    }
}
