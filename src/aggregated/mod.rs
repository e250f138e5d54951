//! `servetest aggregated run` / `launch`: seed 000's batched test (MetaX-MACA/vLLM-metax
//! `tools/batched_test`). Per model: serve it with vLLM, run its inference cases, sweep
//! `servetest bench` over the bench-param combinations, and write upstream's layout under
//! `<out>/<YYYYmmdd_HHMM>/`:
//!
//! ```text
//! collect_env.txt
//! inference/<model>[tpXppYdpZ]_serve.log, …_text_only_inference.log | …_single_image_inference.log
//! inference/inference_results.csv                Model, Correct Ratio, Stage, Reason, Model Path
//! performance/<model>_tpX_ppY_dpZ_serve.log
//! performance/<model>_tpX_ppY_dpZ/<YYYYmmdd_HHMMSS>/BENCH--k=v-…/run=N.json, summary.json
//! performance/<model>_tpX_ppY_dpZ/<YYYYmmdd_HHMMSS>/summary.csv   one row per run
//! ```
//!
//! `--resume-csv FILE` (or `SERVETEST_RESUME_CSV`): an `inference_results.csv` skips the models
//! whose rows all ended normally (upstream's rule); a sweep's `summary.csv` skips its combinations.

pub mod case;
pub mod cluster;
pub mod inference;
pub mod launch;
pub mod sweep;

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::check::logparse::Block;
use crate::family::step::{job_dir, RowOut, ROWS_FILE};
use crate::family::{Family, Spec};
use crate::plan::render::{JobParts, JobSite, SlurmFields};
use crate::run::RunContext;
use crate::serve::engine::{default_python, ServeSpec, Vllm};
use crate::serve::server::{free_port, Server};
use case::{read_bench_params, AggregatedSpec, BenchPoint, ModelEntry, SWAP_SPACE_DEFAULT};
use inference::{Cases, ResultRow, Stage};

pub const RESUME_CSV_ENV: &str = "SERVETEST_RESUME_CSV";

pub static FAMILY: Family = Family {
    name: "aggregated",
    categories: &["perf"],
    load: case::load,
    in_process: None,
};

impl Spec for AggregatedSpec {
    fn model(&self) -> Option<&str> {
        self.models.first().map(|m| m.name.as_str())
    }

    fn supported_gpus(&self) -> Option<&[String]> {
        self.supported_gpus.as_deref()
    }

    /// The largest model's devices: models are served one after another.
    fn total_gpus(&self) -> u64 {
        self.models
            .iter()
            .map(ModelEntry::devices)
            .max()
            .unwrap_or(0)
    }

    fn environment(&self) -> Vec<(String, String)> {
        self.models
            .iter()
            .flat_map(|m| m.extra_env.clone())
            .collect()
    }

    /// One `servetest aggregated run` step; the largest model sets the allocation (nodes =
    /// tp·pp·dp / GPUs per node).
    fn job(&self, site: &JobSite) -> Result<JobParts, (String, String)> {
        let devices = self.total_gpus();
        let nodes = devices.div_ceil(self.gpus_per_node.max(1)).max(1);
        Ok(JobParts {
            fields: SlurmFields::from_script(&self.slurm, nodes, self.gpus_per_node),
            env: Vec::new(),
            steps: vec![crate::family::step::planned(
                "aggregated",
                site,
                devices.min(self.gpus_per_node),
            )],
            serving_roles: false,
        })
    }

    fn results(
        &self,
        run: &RunContext,
        case: &crate::case::Case,
        job: &str,
    ) -> Result<Vec<Block>, String> {
        crate::family::step::rows(run, case, job)
    }
}

/// What an earlier run already did.
#[derive(Debug, Default)]
pub struct Resume {
    /// Model tags (`name[tpXppYdpZ]`) whose inference ended normally.
    pub infer: HashSet<String>,
    /// (model perf label, combination) recorded in a sweep's summary.csv.
    pub perf: HashSet<(String, (u64, u64, u64, u64))>,
}

impl Resume {
    pub fn load(path: &Path) -> Result<Resume, String> {
        let mut r = Resume::default();
        let header = std::fs::read_to_string(path)
            .map_err(|e| format!("--resume-csv {}: {e}", path.display()))?
            .lines()
            .next()
            .unwrap_or_default()
            .to_owned();
        if header.split(',').any(|h| h == "Stage") {
            r.infer = inference::finished_models(path)?;
        } else {
            r.perf = sweep::recorded(path)?.into_iter().collect();
        }
        Ok(r)
    }
}

/// How a run reads its inputs: relative paths in the model entries resolve against `base`
/// (the project root for case files; the working directory for `launch`, as upstream).
pub struct RunOptions {
    pub out: PathBuf,
    pub resume_csvs: Vec<PathBuf>,
    pub base: PathBuf,
    /// Write the job's `rows.json` for the harness (not for `launch`, which runs outside a job).
    pub job_rows: bool,
}

fn stamp(fmt: &str) -> String {
    chrono::Local::now().format(fmt).to_string()
}

/// `servetest aggregated run --case FILE`: the job step of an aggregated case.
pub fn run(case_path: &Path, out: &Path, resume_csvs: &[PathBuf]) -> Result<(), String> {
    let case = crate::case::Case::load_file(case_path)?;
    crate::secrets::mask_case(&case);
    let Some(spec) = case.spec_of::<AggregatedSpec>() else {
        return Err(format!("{}: not an aggregated case", case_path.display()));
    };
    let opts = RunOptions {
        out: out.to_path_buf(),
        resume_csvs: resume_csvs.to_vec(),
        base: crate::env::project_dir(),
        job_rows: true,
    };
    run_spec(spec, &opts)
}

pub fn run_spec(spec: &AggregatedSpec, opts: &RunOptions) -> Result<(), String> {
    crate::secrets::mask_process_environment();
    // `launch` reads no case file: the models' own environment is masked here for both.
    crate::secrets::mask_secret_pairs(
        spec.models
            .iter()
            .flat_map(|m| m.extra_env.iter().map(|(k, v)| (k.as_str(), v.as_str()))),
    );
    let mut paths: Vec<PathBuf> = opts.resume_csvs.clone();
    if let Some(p) = std::env::var_os(RESUME_CSV_ENV) {
        paths.extend(std::env::split_paths(&p));
    }
    let mut resume = Resume::default();
    for p in &paths {
        let r = Resume::load(p)?;
        println!(
            "resuming from {}: {} finished model(s), {} recorded combination(s) are skipped",
            p.display(),
            r.infer.len(),
            r.perf.len()
        );
        resume.infer.extend(r.infer);
        resume.perf.extend(r.perf);
    }
    let root = crate::env::project_dir();
    let python = default_python(&root);
    let run_dir = opts.out.join(stamp("%Y%m%d_%H%M"));
    std::fs::create_dir_all(&run_dir).map_err(|e| format!("{}: {e}", run_dir.display()))?;
    collect_env(&python, &run_dir.join("collect_env.txt"));
    if !spec.infer && !spec.perf {
        println!(
            "neither --infer nor --perf: only {}",
            run_dir.join("collect_env.txt").display()
        );
        return Ok(());
    }
    let image_case = opts.base.join(&spec.image_case);
    let cases = Cases {
        text: inference::read_cases(&opts.base.join(&spec.text_case)),
        image: inference::read_cases(&image_case),
        image_bases: vec![
            image_case
                .parent()
                .map(Path::to_path_buf)
                .unwrap_or_default(),
            root.clone(),
        ],
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let mut rows = Vec::new();
    let mut failures = Vec::new();
    let ctx = Context {
        spec,
        base: &opts.base,
        python: &python,
        run_dir: &run_dir,
        resume: &resume,
        cases: &cases,
    };
    for model in &spec.models {
        let (mut r, mut f) = runtime.block_on(run_model(&ctx, model));
        rows.append(&mut r);
        failures.append(&mut f);
    }
    if opts.job_rows {
        let dir = job_dir(&opts.out);
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        crate::fsutil::write_atomic(
            &dir.join(ROWS_FILE),
            &serde_json::to_vec_pretty(&rows).expect("json"),
        )
        .map_err(|e| e.to_string())?;
    }
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

/// Whether the engine still takes `--swap-space` (vLLM dropped it; upstream stopped passing it
/// then). Read from the engine's argument module without importing vLLM.
fn engine_has_swap_space(python: &Path) -> bool {
    static HAS: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *HAS.get_or_init(|| {
        let out = std::process::Command::new(python)
            .args([
                "-c",
                "import importlib.util as u; s = u.find_spec('vllm'); \
                 print(s.submodule_search_locations[0])",
            ])
            .output();
        out.ok()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
            .and_then(|dir| {
                std::fs::read_to_string(Path::new(&dir).join("engine/arg_utils.py")).ok()
            })
            .is_some_and(|src| src.contains("--swap-space") || src.contains("swap_space:"))
    })
}

/// vLLM serve flags of a model entry, in upstream's order: parallelism, `--trust-remote-code`,
/// memory, the seed's `--swap-space` (where the engine has it), length, executor, then
/// `extra_args` as written (last, so they override: argparse keeps the last value).
fn serve_args(m: &ModelEntry, python: &Path) -> Result<Vec<String>, String> {
    let s = &m.serve_config;
    let mut a: Vec<String> = vec![
        "--tensor-parallel-size".into(),
        s.tp.to_string(),
        "--pipeline-parallel-size".into(),
        s.pp.to_string(),
        "--data-parallel-size".into(),
        s.dp.to_string(),
        "--trust-remote-code".into(),
        "--gpu-memory-utilization".into(),
        s.gpu_memory_utilization.to_string(),
    ];
    let swap = s.swap_space.unwrap_or(SWAP_SPACE_DEFAULT);
    if engine_has_swap_space(python) {
        a.extend(["--swap-space".into(), swap.to_string()]);
    } else {
        println!(
            "{}: swap_space {swap} not passed: this vLLM has no --swap-space (upstream dropped it too)",
            m.name
        );
    }
    a.extend([
        "--max-model-len".into(),
        s.max_model_len.to_string(),
        "--distributed-executor-backend".into(),
        m.backend().into(),
    ]);
    a.extend(s.extra_argv()?);
    Ok(a)
}

struct Context<'a> {
    spec: &'a AggregatedSpec,
    base: &'a Path,
    python: &'a Path,
    run_dir: &'a Path,
    resume: &'a Resume,
    cases: &'a Cases,
}

/// Appends one row to `inference/inference_results.csv` (header when new), flushed at once.
fn record(infer_dir: &Path, row: &ResultRow) -> Result<(), String> {
    std::fs::create_dir_all(infer_dir).map_err(|e| e.to_string())?;
    let path = infer_dir.join("inference_results.csv");
    let exists = path.exists();
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let mut w = csv::WriterBuilder::new()
        .has_headers(!exists)
        .from_writer(file);
    w.serialize(row).map_err(|e| e.to_string())?;
    w.flush().map_err(|e| e.to_string())
}

/// One model: rows for the report and failures; a failure never stops the other models.
async fn run_model(ctx: &Context<'_>, m: &ModelEntry) -> (Vec<RowOut>, Vec<String>) {
    let label = m.infer_label();
    let infer_dir = ctx.run_dir.join("inference");
    let infer = ctx.spec.infer && !ctx.resume.infer.contains(&label);
    if ctx.spec.infer && !infer {
        let row = ResultRow::new(
            &label,
            None,
            Stage::NormalEnd,
            "Resumed from last result",
            &m.model_path,
        );
        if let Err(e) = record(&infer_dir, &row) {
            return (Vec::new(), vec![format!("{}: {e}", m.name)]);
        }
    }
    let mut rows = Vec::new();
    let mut failures = Vec::new();
    let fail_infer = |stage: Stage, reason: &str, failures: &mut Vec<String>| {
        failures.push(format!("{} ({stage:?}): {reason}", m.name));
        if infer {
            let row = ResultRow::new(&label, None, stage, reason, &m.model_path);
            if let Err(e) = record(&infer_dir, &row) {
                failures.push(e);
            }
        }
    };
    let perf_label = m.perf_label();
    let perf_todo: Vec<BenchPoint> = if ctx.spec.perf {
        match read_bench_params(&ctx.base.join(&m.benchmark.bench_param)) {
            Ok(points) => points
                .into_iter()
                .filter(|p| !ctx.resume.perf.contains(&(perf_label.clone(), p.key())))
                .collect(),
            Err(e) => {
                // Only this model's sweep fails (upstream's too); its inference still runs.
                failures.push(format!("{} (perf): benchmark.bench_param {e}", m.name));
                Vec::new()
            }
        }
    } else {
        Vec::new()
    };
    if !infer && perf_todo.is_empty() {
        println!("{}: everything recorded already (resume)", m.name);
        return (rows, failures);
    }
    // On an SSH cluster: the nodes this model needs, Ray on them (stopped however this returns).
    struct Release(Vec<cluster::Node>, bool);
    impl Drop for Release {
        fn drop(&mut self) {
            cluster::release(&self.0, self.1);
        }
    }
    let _nodes = match &ctx.spec.cluster {
        Some(nodes) => {
            let needed = m.devices().div_ceil(ctx.spec.gpus_per_node.max(1)).max(1) as usize;
            let ray = m.backend() == "ray";
            match cluster::acquire(nodes, needed, ray, ctx.run_dir) {
                Ok(n) => Some(Release(n, ray)),
                Err(e) => {
                    fail_infer(Stage::Init, &e, &mut failures);
                    return (rows, failures);
                }
            }
        }
        None => None,
    };
    let model_path = resolve(ctx.base, &m.model_path);
    let perf_dir = ctx.run_dir.join("performance");
    let log = if infer {
        infer_dir.join(format!("{label}_serve.log"))
    } else {
        perf_dir.join(format!("{perf_label}_serve.log"))
    };
    let server = match start(ctx, m, &model_path, &log).await {
        Ok(s) => s,
        Err(e) => {
            fail_infer(Stage::StartingServer, &e, &mut failures);
            return (rows, failures);
        }
    };
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(300))
        .no_proxy()
        .build()
        .expect("http client");
    if infer {
        let outcome = match m.infer_kind() {
            None => Err(format!(
                "infer_type {:?} has no supported type (text-only, single-image)",
                m.infer_type
            )),
            Some(kind) => {
                let log =
                    infer_dir.join(format!("{label}_{}_inference.log", kind.replace('-', "_")));
                inference::run(kind, &m.name, ctx.cases, &http, &server.base_url, &log).await
            }
        };
        match outcome {
            Ok(o) => {
                println!(
                    "{}: {} of {} answer(s) have a keyword ({})",
                    m.name,
                    o.correct,
                    o.total,
                    inference::percent(o.ratio())
                );
                let row =
                    ResultRow::new(&label, Some(o.ratio()), Stage::NormalEnd, "", &m.model_path);
                if let Err(e) = record(&infer_dir, &row) {
                    failures.push(e);
                }
                rows.push(RowOut {
                    concurrency: None,
                    metrics: BTreeMap::from([
                        ("infer_passed".to_owned(), 1.0),
                        ("infer_failed".to_owned(), 0.0),
                        ("correct_ratio".to_owned(), o.ratio()),
                    ]),
                    model: Some(m.name.clone()),
                    variant: format!("{} inference", m.name),
                });
            }
            Err(e) => {
                fail_infer(Stage::Inferencing, &e, &mut failures);
                rows.push(RowOut {
                    concurrency: None,
                    metrics: BTreeMap::from([
                        ("infer_passed".to_owned(), 0.0),
                        ("infer_failed".to_owned(), 1.0),
                    ]),
                    model: Some(m.name.clone()),
                    variant: format!("{} inference", m.name),
                });
            }
        }
    }
    if !perf_todo.is_empty() {
        let mut sweep = sweep::Sweep::new(perf_dir.join(&perf_label).join(stamp("%Y%m%d_%H%M%S")));
        let flags = match remote(&server.base_url) {
            Ok(f) => f,
            Err(e) => {
                failures.push(format!("{}: {e}", m.name));
                Vec::new()
            }
        };
        for point in perf_todo {
            match sweep
                .point(m, &model_path, &server.base_url, &flags, &point)
                .await
            {
                Ok(mut metrics) => {
                    println!(
                        "{}: {}: {:.1} req/s, median TTFT {:.1} ms",
                        m.name,
                        point.dir_name(),
                        metrics["request_throughput"],
                        metrics["median_ttft_ms"]
                    );
                    // The request shape, so a report draws one line per model and shape.
                    metrics.insert("random_input_len".into(), point.random_input_len as f64);
                    metrics.insert("random_output_len".into(), point.random_output_len as f64);
                    metrics.insert("num_prompts".into(), point.num_prompts as f64);
                    rows.push(RowOut {
                        concurrency: Some(point.max_concurrency),
                        metrics,
                        model: Some(m.name.clone()),
                        variant: format!("{} {}", m.name, point.dir_name()),
                    });
                }
                Err(e) => failures.push(format!("{} {}: {e}", m.name, point.dir_name())),
            }
        }
    }
    let log_path = server.log_path().to_path_buf();
    let _ = server.stop(Duration::from_secs(10)).await;
    // Both parts ran on one server: the perf layout gets its serve log too.
    if ctx.spec.perf && log_path.starts_with(&infer_dir) {
        let _ = std::fs::create_dir_all(&perf_dir);
        let _ = std::fs::copy(&log_path, perf_dir.join(format!("{perf_label}_serve.log")));
    }
    (rows, failures)
}

/// `tiny` is the project's model; a relative path resolves against the run's base when it is one
/// (it exists there, or starts with `./`, `../`); anything else, a hub id such as
/// `Qwen/Qwen3-8B`, goes to the engine as written, as upstream passes it.
fn resolve(base: &Path, model: &str) -> PathBuf {
    if model == "tiny" {
        return crate::env::project_dir().join("models/tiny");
    }
    if let Some(home) = model.strip_prefix("~/") {
        if let Some(h) = std::env::var_os("HOME") {
            return PathBuf::from(h).join(home);
        }
    }
    let joined = base.join(model);
    if Path::new(model).is_absolute()
        || model.starts_with("./")
        || model.starts_with("../")
        || joined.exists()
    {
        joined
    } else {
        PathBuf::from(model)
    }
}

async fn start(
    ctx: &Context<'_>,
    m: &ModelEntry,
    model: &Path,
    log: &Path,
) -> Result<Server, String> {
    let host = crate::netscope::serve_host()?;
    let serve = ServeSpec {
        model: model.to_path_buf(),
        host: host.clone(),
        port: free_port(&host).map_err(|e| e.to_string())?,
        python: ctx.python.to_path_buf(),
        extra_args: serve_args(m, ctx.python)?,
    };
    let env: Vec<(String, String)> = m.extra_env.clone().into_iter().collect();
    println!(
        "{}: serving {} (log {})",
        m.name,
        model.display(),
        log.display()
    );
    Server::start(
        &Vllm,
        &serve,
        log.to_path_buf(),
        env,
        Duration::from_secs(m.timeout),
    )
    .await
    .map_err(|e| e.to_string())
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
