//! `servetest aggregated run`: the job step of an `aggregated` case (seed 000's launch.py). Per
//! model: serve it with vLLM, run the inference checks, sweep `servetest bench` over the bench-param
//! combinations, and write the seed's layout under `<out>/<YYYYmmdd_HHMM>/`:
//!
//! ```text
//! collect_env.txt
//! inference/<model>[tpXppYdpZ]_serve.log, …_text_only_inference.log, inference_results.csv
//! performance/<model>_tpX_ppY_dpZ_serve.log
//! performance/<model>_tpX_ppY_dpZ/<YYYYmmdd_HHMMSS>/BENCH--max_concurrency=…/run=N.json, summary.json
//! performance/<model>_tpX_ppY_dpZ/<YYYYmmdd_HHMMSS>/summary.csv
//! ```
//!
//! `--resume-csv FILE` (or `SERVETEST_RESUME_CSV`) skips what an earlier run recorded: passed checks
//! of an `inference_results.csv`, or combinations of a `summary.csv`.

pub mod cluster;

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::case::aggregated::{AggregatedSpec, BenchParams, BenchPoint, ModelEntry};
use crate::case::CaseSpec;
use crate::latency::{job_dir, RowOut, ROWS_FILE};
use crate::serve::engine::{default_python, ServeSpec, Vllm};
use crate::serve::server::{free_port, Server};

pub const RESUME_CSV_ENV: &str = "SERVETEST_RESUME_CSV";

/// What an earlier run already did.
#[derive(Debug, Default)]
pub struct Resume {
    /// (model name, infer type) that passed.
    pub infer: HashSet<(String, String)>,
    /// (model perf label, point) recorded in a summary.csv.
    pub perf: HashSet<(String, BenchPoint)>,
}

impl Resume {
    pub fn load(path: &Path) -> Result<Resume, String> {
        let mut r = Resume::default();
        let mut reader =
            csv::Reader::from_path(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let headers = reader.headers().map_err(|e| e.to_string())?.clone();
        let col = |name: &str| headers.iter().position(|h| h == name);
        for rec in reader.records() {
            let rec = rec.map_err(|e| format!("{}: {e}", path.display()))?;
            let get = |name: &str| col(name).and_then(|i| rec.get(i)).unwrap_or("").to_owned();
            let num = |name: &str| get(name).parse::<u64>().unwrap_or(0);
            if col("infer_type").is_some() {
                if get("status") == "PASSED" {
                    r.infer.insert((get("model"), get("infer_type")));
                }
            } else if col("max_concurrency").is_some() {
                r.perf.insert((
                    get("model"),
                    BenchPoint {
                        max_concurrency: num("max_concurrency"),
                        num_prompts: num("num_prompts"),
                        random_input_len: num("random_input_len"),
                        random_output_len: num("random_output_len"),
                    },
                ));
            } else {
                return Err(format!(
                    "{}: neither an inference_results.csv nor a summary.csv (header {:?})",
                    path.display(),
                    headers
                ));
            }
        }
        Ok(r)
    }
}

#[derive(Debug, Serialize)]
struct InferRow {
    model: String,
    tp: u64,
    pp: u64,
    dp: u64,
    infer_type: String,
    status: String,
    seconds: f64,
    detail: String,
}

#[derive(Debug, Serialize)]
struct SummaryRow {
    model: String,
    max_concurrency: u64,
    num_prompts: u64,
    random_input_len: u64,
    random_output_len: u64,
    runs: u64,
    request_throughput: f64,
    output_throughput: f64,
    median_ttft_ms: f64,
    median_tpot_ms: f64,
    median_e2el_ms: f64,
    failed: f64,
}

fn stamp(fmt: &str) -> String {
    chrono::Local::now().format(fmt).to_string()
}

fn default_prompts() -> Vec<String> {
    vec![
        "Write a haiku about continuous batching.".into(),
        "What is the capital of France?".into(),
        "def add(a, b):".into(),
    ]
}

pub fn run(case_path: &Path, out: &Path, resume_csvs: &[PathBuf]) -> Result<(), String> {
    let case = crate::case::Case::load_file(case_path)?;
    crate::secrets::mask_case(&case);
    crate::secrets::mask_process_environment();
    let Some(CaseSpec::Aggregated(spec)) = &case.spec else {
        return Err(format!("{}: not an aggregated case", case_path.display()));
    };
    let mut paths: Vec<PathBuf> = resume_csvs.to_vec();
    if let Some(p) = std::env::var_os(RESUME_CSV_ENV) {
        paths.extend(std::env::split_paths(&p));
    }
    let mut resume = Resume::default();
    for p in &paths {
        let r = Resume::load(p)?;
        println!(
            "resuming from {}: {} passed check(s), {} recorded combination(s) are skipped",
            p.display(),
            r.infer.len(),
            r.perf.len()
        );
        resume.infer.extend(r.infer);
        resume.perf.extend(r.perf);
    }
    let root = crate::env::project_dir();
    let python = default_python(&root);
    let run_dir = out.join(stamp("%Y%m%d_%H%M"));
    std::fs::create_dir_all(&run_dir).map_err(|e| format!("{}: {e}", run_dir.display()))?;
    collect_env(&python, &run_dir.join("collect_env.txt"));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let mut rows = Vec::new();
    let mut failures = Vec::new();
    for model in &spec.models {
        match runtime.block_on(run_model(spec, model, &root, &python, &run_dir, &resume)) {
            Ok((mut r, mut f)) => {
                rows.append(&mut r);
                failures.append(&mut f);
            }
            Err(e) => failures.push(format!("{}: {e}", model.name)),
        }
    }
    let dir = job_dir(out);
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    crate::fsutil::write_atomic(
        &dir.join(ROWS_FILE),
        &serde_json::to_vec_pretty(&rows).expect("json"),
    )
    .map_err(|e| e.to_string())?;
    println!("results: {}", run_dir.display());
    if failures.is_empty() {
        Ok(())
    } else {
        Err(failures.join("\n"))
    }
}

fn collect_env(python: &Path, path: &Path) {
    let out = std::process::Command::new(python)
        .args(["-c", "from vllm import collect_env; collect_env.main()"])
        .output();
    let text = match out {
        Ok(o) => format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        ),
        Err(e) => format!("collect_env failed to start: {e}\n"),
    };
    let _ = std::fs::write(path, text);
}

/// vLLM serve flags of a model entry. Its `extra_args` are the seed's literal flags
/// (`--enforce-eager: ""` is a bare flag), not the key maps `serve::engine::flags_from_map` reads.
fn serve_args(m: &ModelEntry) -> Vec<String> {
    let s = &m.serve_config;
    let mut a: Vec<String> = vec![
        "--tensor-parallel-size".into(),
        s.tp.to_string(),
        "--pipeline-parallel-size".into(),
        s.pp.to_string(),
        "--data-parallel-size".into(),
        s.dp.to_string(),
        "--distributed-executor-backend".into(),
        s.distributed_executor_backend.clone(),
        "--gpu-memory-utilization".into(),
        s.gpu_memory_utilization.to_string(),
        "--max-model-len".into(),
        s.max_model_len.to_string(),
    ];
    if let Some(swap) = s.swap_space {
        a.extend(["--swap-space".into(), swap.to_string()]);
    }
    for (flag, value) in &s.extra_args {
        // Extra arguments never replace the defaults above (the seed's rule).
        if a.iter().any(|x| x == flag) {
            continue;
        }
        a.push(flag.clone());
        match value {
            serde_yaml::Value::Null => {}
            serde_yaml::Value::String(v) if v.is_empty() => {}
            serde_yaml::Value::String(v) => a.push(v.clone()),
            other => a.push(serde_json::to_string(other).unwrap_or_default()),
        }
    }
    a
}

async fn run_model(
    spec: &AggregatedSpec,
    m: &ModelEntry,
    root: &Path,
    python: &Path,
    run_dir: &Path,
    resume: &Resume,
) -> Result<(Vec<RowOut>, Vec<String>), String> {
    let mut rows = Vec::new();
    let mut failures = Vec::new();
    let infer_todo: Vec<&String> = if spec.infer {
        m.infer_type
            .iter()
            .filter(|t| !resume.infer.contains(&(m.name.clone(), (*t).clone())))
            .collect()
    } else {
        Vec::new()
    };
    let params: Option<BenchParams> = if spec.perf {
        let path = root.join(&m.benchmark.bench_param);
        let text = std::fs::read_to_string(&path)
            .map_err(|e| format!("benchmark.bench_param {}: {e}", path.display()))?;
        Some(serde_yaml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?)
    } else {
        None
    };
    let perf_label = m.perf_label();
    let perf_todo: Vec<BenchPoint> = params
        .as_ref()
        .map(|p| p.points())
        .unwrap_or_default()
        .into_iter()
        .filter(|p| !resume.perf.contains(&(perf_label.clone(), *p)))
        .collect();
    if infer_todo.is_empty() && perf_todo.is_empty() {
        println!("{}: everything recorded already (resume)", m.name);
        return Ok((rows, failures));
    }
    // On an SSH cluster: the nodes this model needs, Ray on them (stopped however this returns).
    struct Release(Vec<cluster::Node>, bool);
    impl Drop for Release {
        fn drop(&mut self) {
            cluster::release(&self.0, self.1);
        }
    }
    let _nodes = match &spec.cluster {
        Some(nodes) => {
            let needed = m.devices().div_ceil(spec.gpus_per_node.max(1)).max(1) as usize;
            let ray = m.serve_config.distributed_executor_backend == "ray";
            Some(Release(cluster::acquire(nodes, needed, ray, run_dir)?, ray))
        }
        None => None,
    };
    let model_path = crate::cb::resolve_model(root, &m.model_path);
    let infer_dir = run_dir.join("inference");
    let perf_dir = run_dir.join("performance");
    let log = if !infer_todo.is_empty() {
        infer_dir.join(format!("{}_serve.log", m.infer_label()))
    } else {
        perf_dir.join(format!("{perf_label}_serve.log"))
    };
    let host = crate::netscope::serve_host()?;
    let serve = ServeSpec {
        model: model_path.clone(),
        host: host.clone(),
        port: free_port(&host).map_err(|e| e.to_string())?,
        python: python.to_path_buf(),
        extra_args: serve_args(m),
    };
    let env: Vec<(String, String)> = m.extra_env.clone().into_iter().collect();
    println!(
        "{}: serving {} (log {})",
        m.name,
        model_path.display(),
        log.display()
    );
    let server = Server::start(
        &Vllm,
        &serve,
        log.clone(),
        env,
        Duration::from_secs(m.timeout),
    )
    .await
    .map_err(|e| e.to_string())?;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(300))
        .no_proxy()
        .build()
        .map_err(|e| e.to_string())?;
    if !infer_todo.is_empty() {
        std::fs::create_dir_all(&infer_dir).map_err(|e| e.to_string())?;
        let csv_path = infer_dir.join("inference_results.csv");
        let exists = csv_path.exists();
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&csv_path)
            .map_err(|e| e.to_string())?;
        let mut csv = csv::WriterBuilder::new()
            .has_headers(!exists)
            .from_writer(file);
        let (mut passed, mut failed) = (0.0, 0.0);
        for t in infer_todo {
            let started = Instant::now();
            let result = match t.as_str() {
                "text-only" => text_only(spec, m, root, &server.base_url, &http, &infer_dir).await,
                "single-image" => single_image(&model_path),
                other => Err(format!("`{other}` is not supported yet")),
            };
            let row = InferRow {
                model: m.name.clone(),
                tp: m.serve_config.tp,
                pp: m.serve_config.pp,
                dp: m.serve_config.dp,
                infer_type: t.clone(),
                status: if result.is_ok() { "PASSED" } else { "FAILED" }.into(),
                seconds: started.elapsed().as_secs_f64(),
                detail: match &result {
                    Ok(d) | Err(d) => d.clone(),
                },
            };
            println!("{}: {} {}: {}", m.name, t, row.status, row.detail);
            if result.is_ok() {
                passed += 1.0;
            } else {
                failed += 1.0;
                failures.push(format!("{} {t}: {}", m.name, row.detail));
            }
            csv.serialize(&row).map_err(|e| e.to_string())?;
            csv.flush().map_err(|e| e.to_string())?;
        }
        rows.push(RowOut {
            concurrency: None,
            metrics: BTreeMap::from([
                ("infer_passed".to_owned(), passed),
                ("infer_failed".to_owned(), failed),
            ]),
            model: Some(m.name.clone()),
        });
    }
    if !perf_todo.is_empty() {
        let sweep_dir = perf_dir.join(&perf_label).join(stamp("%Y%m%d_%H%M%S"));
        std::fs::create_dir_all(&sweep_dir).map_err(|e| e.to_string())?;
        let mut summary =
            csv::Writer::from_path(sweep_dir.join("summary.csv")).map_err(|e| e.to_string())?;
        for point in perf_todo {
            match sweep_point(m, &model_path, &server.base_url, &sweep_dir, &point).await {
                Ok((row, metrics)) => {
                    summary.serialize(&row).map_err(|e| e.to_string())?;
                    summary.flush().map_err(|e| e.to_string())?;
                    // The request shape, so a report draws one line per model and shape.
                    let mut metrics = metrics;
                    metrics.insert("random_input_len".into(), point.random_input_len as f64);
                    metrics.insert("random_output_len".into(), point.random_output_len as f64);
                    metrics.insert("num_prompts".into(), point.num_prompts as f64);
                    rows.push(RowOut {
                        concurrency: Some(point.max_concurrency),
                        metrics,
                        model: Some(m.name.clone()),
                    });
                }
                Err(e) => failures.push(format!("{} {}: {e}", m.name, point.dir_name())),
            }
        }
    }
    let log_path = server.log_path().to_path_buf();
    let _ = server.stop(Duration::from_secs(10)).await;
    // Both parts ran on one server: the perf layout gets its serve log too.
    if spec.perf && log_path.starts_with(&infer_dir) {
        let _ = std::fs::create_dir_all(&perf_dir);
        let _ = std::fs::copy(&log_path, perf_dir.join(format!("{perf_label}_serve.log")));
    }
    Ok((rows, failures))
}

async fn text_only(
    spec: &AggregatedSpec,
    m: &ModelEntry,
    root: &Path,
    base: &str,
    http: &reqwest::Client,
    dir: &Path,
) -> Result<String, String> {
    #[derive(serde::Deserialize)]
    struct TextCase {
        prompt: String,
        #[serde(default = "sixteen")]
        max_tokens: u64,
    }
    fn sixteen() -> u64 {
        16
    }
    let cases: Vec<TextCase> = match &spec.text_case {
        Some(p) => {
            let path = root.join(p);
            let text = std::fs::read_to_string(&path)
                .map_err(|e| format!("text_case {}: {e}", path.display()))?;
            serde_yaml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?
        }
        None => default_prompts()
            .into_iter()
            .map(|prompt| TextCase {
                prompt,
                max_tokens: 16,
            })
            .collect(),
    };
    let log_path = dir.join(format!("{}_text_only_inference.log", m.infer_label()));
    let mut log = String::new();
    let model = crate::cb::resolve_model(root, &m.model_path)
        .display()
        .to_string();
    for (i, c) in cases.iter().enumerate() {
        let body = serde_json::json!({
            "model": model,
            "messages": [{"role": "user", "content": c.prompt}],
            "max_tokens": c.max_tokens,
            "temperature": 0,
        });
        let resp = http
            .post(format!("{base}/v1/chat/completions"))
            .json(&body)
            .send()
            .await
            .map_err(|e| format!("case {i}: {e}"))?;
        let status = resp.status();
        let json: serde_json::Value = resp.json().await.map_err(|e| format!("case {i}: {e}"))?;
        let answer = json["choices"][0]["message"]["content"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        log.push_str(&format!(
            "=== case {i} (HTTP {status})\nprompt: {}\nanswer: {answer}\n",
            c.prompt
        ));
        if !status.is_success() || json["usage"]["completion_tokens"].as_u64().unwrap_or(0) == 0 {
            std::fs::write(&log_path, &log).map_err(|e| e.to_string())?;
            return Err(format!("case {i}: no completion (HTTP {status}): {json}"));
        }
    }
    std::fs::write(&log_path, &log).map_err(|e| e.to_string())?;
    Ok(format!("{} prompt(s) answered", cases.len()))
}

fn single_image(model: &Path) -> Result<String, String> {
    let cfg: serde_json::Value = std::fs::read(model.join("config.json"))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default();
    if cfg.get("vision_config").is_none() {
        return Err(format!(
            "single-image needs a vision model; {}/config.json has no vision_config",
            model.display()
        ));
    }
    Err(
        "single-image requests need an image case (image_case); none is wired for this engine yet"
            .into(),
    )
}

/// `--allow-remote` when the server is on a cluster node the job allocated, outside loopback and any
/// cluster network (`netscope::client_needs_allow_remote`).
fn remote(base: &str) -> Result<Vec<&'static str>, String> {
    let host = url::Url::parse(base)
        .ok()
        .and_then(|u| u.host_str().map(str::to_owned))
        .ok_or_else(|| format!("invalid server URL {base}"))?;
    Ok(if crate::netscope::client_needs_allow_remote(&host)? {
        vec!["--allow-remote"]
    } else {
        Vec::new()
    })
}

async fn sweep_point(
    m: &ModelEntry,
    model: &Path,
    base: &str,
    sweep_dir: &Path,
    p: &BenchPoint,
) -> Result<(SummaryRow, BTreeMap<String, f64>), String> {
    let dir = sweep_dir.join(p.dir_name());
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let mut runs: Vec<serde_json::Value> = Vec::new();
    for n in 0..m.benchmark.sweep_num_runs {
        let result = dir.join(format!("run={n}.json"));
        let out = tokio::process::Command::new(&exe)
            .arg("bench")
            .args(["--base-url", base, "--model"])
            .arg(model)
            .args(["--dataset", "random", "--input-len"])
            .arg(p.random_input_len.to_string())
            .arg("--output-len")
            .arg(p.random_output_len.to_string())
            .arg("--num-prompts")
            .arg(p.num_prompts.to_string())
            .arg("--max-concurrency")
            .arg(p.max_concurrency.to_string())
            .arg("--ignore-eos")
            .arg(m.benchmark.ignore_eos.to_string())
            .arg("--save-result")
            .arg(&result)
            .args(remote(base)?)
            .output()
            .await
            .map_err(|e| e.to_string())?;
        let json: serde_json::Value = std::fs::read(&result)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .ok_or_else(|| {
                format!(
                    "run {n} wrote no {}: {}",
                    result.display(),
                    String::from_utf8_lossy(&out.stderr)
                )
            })?;
        runs.push(json);
    }
    let mean = |key: &str| {
        runs.iter().filter_map(|r| r[key].as_f64()).sum::<f64>() / runs.len().max(1) as f64
    };
    let keys = [
        "request_throughput",
        "output_throughput",
        "total_token_throughput",
        "mean_ttft_ms",
        "median_ttft_ms",
        "p99_ttft_ms",
        "mean_tpot_ms",
        "median_tpot_ms",
        "p99_tpot_ms",
        "mean_itl_ms",
        "median_itl_ms",
        "p99_itl_ms",
        "mean_e2el_ms",
        "median_e2el_ms",
        "p99_e2el_ms",
        "completed",
        "failed",
    ];
    let metrics: BTreeMap<String, f64> = keys.iter().map(|k| ((*k).to_owned(), mean(k))).collect();
    let summary = serde_json::json!({
        "point": p,
        "runs": runs.len(),
        "mean_over_runs": metrics,
    });
    crate::fsutil::write_atomic(
        &dir.join("summary.json"),
        &serde_json::to_vec_pretty(&summary).expect("json"),
    )
    .map_err(|e| e.to_string())?;
    let row = SummaryRow {
        model: m.perf_label(),
        max_concurrency: p.max_concurrency,
        num_prompts: p.num_prompts,
        random_input_len: p.random_input_len,
        random_output_len: p.random_output_len,
        runs: runs.len() as u64,
        request_throughput: metrics["request_throughput"],
        output_throughput: metrics["output_throughput"],
        median_ttft_ms: metrics["median_ttft_ms"],
        median_tpot_ms: metrics["median_tpot_ms"],
        median_e2el_ms: metrics["median_e2el_ms"],
        failed: metrics["failed"],
    };
    println!(
        "{}: {}: {:.1} req/s, median TTFT {:.1} ms",
        m.name,
        p.dir_name(),
        row.request_throughput,
        row.median_ttft_ms
    );
    Ok((row, metrics))
}
