//! The aggr family: upstream TensorRT-LLM's aggregated perf-sanity tests
//! (`test_configs/aggr/perf-sanity/<file>.yaml`, upstream's `tests/scripts/perf-sanity/aggregated/`).
//! Each server config is a trial, `aggr_perf-sanity_<file>[<server>]` (upstream's
//! `aggr_upload-<file>-<server>`; the whole file, `aggr_upload-<file>`, selects them all). Its job is
//! one step, `servetest aggr run --case FILE --out DIR --server NAME`: serve the config (the engine
//! adapter's aggregated server, `trtllm-serve … --config extra-llm-api-config.aggr.<name>.yml` for
//! TensorRT-LLM), run its clients one after another with the native client as upstream's
//! `benchmark_serving` command would, and leave one row per client, variant `<server>-<client>`
//! (upstream's `s_test_case_name`).

pub mod case;

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::case::common::parse_env_assignments;
use crate::case::Case;
use crate::check::logparse::{self, Block};
use crate::exec::process::{log_tail, CommandSpec, GroupChild};
use crate::family::step::{job_dir, RowOut, ROWS_FILE};
use crate::family::{Family, Spec, Variant};
use crate::plan::render::{JobParts, JobSite, SlurmFields};
use crate::run::RunContext;
use crate::serve::engine::{self, AggrLaunch, Engine, Tools};
use crate::serve::server::{free_port, Server};
use case::{AggrSpec, ClientConfig, ServerConfig, DEFAULT_JOB_TIME};

pub static FAMILY: Family = Family {
    name: "aggr",
    categories: &["perf-sanity"],
    load: case::load,
    in_process: None,
};

/// Upstream's default wait for an aggregated server's health (`AGG_SERVER_READY_TIMEOUT`).
const READY_TIMEOUT: u64 = 3600;
const TAIL: usize = 30;

impl Spec for AggrSpec {
    fn model(&self) -> Option<&str> {
        Some(match self.server_configs.first() {
            Some(s) => s.model_name.as_deref().unwrap_or(&self.metadata.model_name),
            None => &self.metadata.model_name,
        })
    }

    fn supported_gpus(&self) -> Option<&[String]> {
        self.metadata.supported_gpus.as_deref()
    }

    fn total_gpus(&self) -> u64 {
        self.server_configs
            .iter()
            .map(ServerConfig::devices)
            .max()
            .unwrap_or(0)
    }

    fn environment(&self) -> Vec<(String, String)> {
        let e = &self.environment;
        let mut texts = vec![&e.server_env_var, &e.client_env_var];
        for s in &self.server_configs {
            texts.push(&s.server_env_var);
            texts.extend(s.client_configs.iter().map(|c| &c.client_env_var));
        }
        texts
            .into_iter()
            .flatten()
            .flat_map(|t| parse_env_assignments(t).unwrap_or_default())
            .collect()
    }

    /// One `servetest aggr run` step for the trial's server config, on as many nodes as its GPUs
    /// need.
    fn job(&self, site: &JobSite) -> Result<JobParts, (String, String)> {
        let server = match self.server_configs.as_slice() {
            [one] => one,
            _ => {
                return Err((
                    "server_configs".into(),
                    "a trial runs one server config (the case expands into one trial each)".into(),
                ))
            }
        };
        let per_node = server
            .gpus_per_node
            .unwrap_or(self.hardware.gpus_per_node)
            .max(1);
        let devices = server.devices();
        if devices > per_node {
            return Err((
                "server_configs.0".into(),
                format!(
                    "`{}` needs {devices} GPUs, more than one node's {per_node}: servetest serves an \
                     aggr server config on one node (multi-node aggregated servers are not implemented)",
                    server.name
                ),
            ));
        }
        let slurm = self
            .slurm
            .clone()
            .unwrap_or_else(|| crate::case::common::ScriptSlurm {
                partition: None,
                account: None,
                job_time: DEFAULT_JOB_TIME.into(),
                extra_args: None,
                nodes: None,
            });
        let mut step = crate::family::step::planned("aggr", site, devices.min(per_node));
        step.argv.extend(["--server".into(), server.name.clone()]);
        Ok(JobParts {
            fields: SlurmFields::from_script(&slurm, 1, per_node),
            env: Vec::new(),
            steps: vec![step],
            serving_roles: false,
        })
    }

    fn results(&self, run: &RunContext, case: &Case, job: &str) -> Result<Vec<Block>, String> {
        crate::family::step::rows(run, case, job)
    }

    /// One trial per server config, named `[<server name>]`.
    fn variants(&self) -> Vec<Variant> {
        self.server_configs
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let mut one = self.clone();
                one.server_configs = vec![s.clone()];
                Variant {
                    suffix: format!("[{}]", s.name),
                    spec: std::sync::Arc::new(one),
                    entry: Some(("server_configs", i)),
                }
            })
            .collect()
    }

    fn expands_with_errors(&self) -> bool {
        true
    }

    /// Upstream's pytest id, `test_e2e[aggr_upload-<file>-<server>]` (`PERF_TEST_*`; the prefix is
    /// `PERF_TEST_PREFIX` with `disagg` read as `aggr`).
    fn report_id(&self, case: &Case) -> Option<(String, String)> {
        let stem = case.path.file_stem()?.to_string_lossy();
        let server = &self.server_configs.first()?.name;
        Some(crate::case::testlist::aggr_junit(&stem, server))
    }
}

/// `servetest aggr run`: serves each chosen server config in turn (all when `server` is `None`),
/// runs its clients, and writes `rows.json` into the job directory; stops at the first failure, as
/// upstream does.
pub fn run(case_path: &Path, out: &Path, server: Option<&str>) -> Result<(), String> {
    let whole = Case::load(case_path, &FAMILY, "perf-sanity");
    crate::secrets::mask_case(&whole);
    crate::secrets::mask_process_environment();
    // The trial's own server config, valid as the harness judged it (another server config's error
    // is that trial's); without `--server`, the whole file.
    let case = match server {
        Some(name) => {
            let known: Vec<String> = whole
                .spec_of::<AggrSpec>()
                .map(|s| s.server_configs.iter().map(|c| c.name.clone()).collect())
                .unwrap_or_default();
            let suffix = format!("[{name}]");
            whole
                .clone()
                .expand()
                .into_iter()
                .find(|c| c.name.ends_with(&suffix))
                .ok_or_else(|| {
                    format!(
                        "{}: no server config named `{name}` (there are: {})",
                        case_path.display(),
                        known.join(", ")
                    )
                })?
        }
        None => whole,
    };
    if !case.is_valid() {
        let errors: Vec<String> = case.errors().map(|v| v.to_string()).collect();
        return Err(format!(
            "{}: the case is invalid:\n{}",
            case_path.display(),
            errors.join("\n")
        ));
    }
    let spec = case
        .spec_of::<AggrSpec>()
        .ok_or_else(|| format!("{}: not an aggr case", case_path.display()))?;
    let root = crate::env::project_dir();
    let dir = job_dir(out);
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let run = Run {
        spec,
        engine: engine::for_kind(spec.environment.engine),
        tools: Tools::resolve(&root),
        host: crate::netscope::serve_host()?,
        root,
        dir,
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let mut rows: Vec<RowOut> = Vec::new();
    let outcome = runtime.block_on(async {
        // SIGTERM (a cancelled job, its time limit) or SIGINT ends the server in progress: dropping
        // its future kills the server's and the client's process groups.
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate()).map_err(|e| e.to_string())?;
        let mut int = signal(SignalKind::interrupt()).map_err(|e| e.to_string())?;
        for (idx, s) in spec.server_configs.iter().enumerate() {
            let done = tokio::select! {
                r = run.server(idx, s, &mut rows) => r,
                _ = term.recv() => Err("stopped by SIGTERM".to_owned()),
                _ = int.recv() => Err("stopped by SIGINT".to_owned()),
            };
            done.map_err(|e| format!("{}: {e}", s.name))?;
        }
        Ok::<(), String>(())
    });
    // The rows of the clients that finished stay in rows.json, whatever failed later.
    crate::fsutil::write_atomic(
        &run.dir.join(ROWS_FILE),
        &serde_json::to_vec_pretty(&rows).expect("rows serialize"),
    )
    .map_err(|e| e.to_string())?;
    outcome
}

struct Run<'a> {
    spec: &'a AggrSpec,
    engine: Box<dyn Engine>,
    tools: Tools,
    host: String,
    root: PathBuf,
    dir: PathBuf,
}

impl Run<'_> {
    /// The model directory: `environment.model_path`, else `$LLM_MODELS_ROOT/<model_name>` when it
    /// exists, else the name as given (upstream's fallback).
    fn model(&self, s: &ServerConfig) -> PathBuf {
        let name = s
            .model_name
            .as_deref()
            .unwrap_or(&self.spec.metadata.model_name);
        if let Some(p) = &self.spec.environment.model_path {
            return self.root.join(p);
        }
        if let Some(root) = std::env::var_os("LLM_MODELS_ROOT") {
            let p = PathBuf::from(root).join(name);
            if p.exists() {
                return p;
            }
        }
        PathBuf::from(name)
    }

    /// A client's log: upstream's `trtllm-benchmark.<idx>.<client>.log` for TensorRT-LLM, the
    /// engine's name in place of `trtllm` for the others.
    fn client_log(&self, idx: usize, cidx: usize) -> PathBuf {
        self.dir
            .join(format!("{}-benchmark.{idx}.{cidx}.log", self.engine.name()))
    }

    async fn server(
        &self,
        idx: usize,
        s: &ServerConfig,
        rows: &mut Vec<RowOut>,
    ) -> Result<(), String> {
        let model = self.model(s);
        let config = s.engine_config(&case::Roots::from_env(&self.root))?;
        let port = free_port(&self.host).map_err(|e| e.to_string())?;
        let launch = self.engine.aggregated(&AggrLaunch {
            name: &s.name,
            index: idx,
            model: &model,
            host: &self.host,
            port,
            config: &config,
            backend: s.backend.as_deref().unwrap_or("pytorch"),
            dir: &self.dir,
            tools: &self.tools,
        })?;
        for (path, text) in &launch.files {
            std::fs::write(path, text).map_err(|e| format!("{}: {e}", path.display()))?;
        }
        let mut command = launch.command;
        command.env.extend(env_of(&[
            &self.spec.environment.server_env_var,
            &s.server_env_var,
        ]));
        let log = self
            .dir
            .join(format!("{}.{idx}.log", self.engine.log_name()));
        println!(
            "{}: starting {} (log {})",
            s.name,
            self.engine.name(),
            log.display()
        );
        let server = Server::start_command(
            self.engine.as_ref(),
            command,
            &self.host,
            port,
            log,
            ready_timeout(),
        )
        .await
        .map_err(|e| e.to_string())?;
        println!("{}: ready in {:.1} s", s.name, server.startup.as_secs_f64());
        let mut outcome = Ok(());
        for (cidx, c) in s.client_configs.iter().enumerate() {
            match self.client(&server.base_url, &model, idx, cidx, s, c).await {
                Ok(row) => rows.push(row),
                Err(e) => {
                    outcome = Err(format!("client {}: {e}", c.name));
                    break;
                }
            }
        }
        let _ = server.stop(Duration::from_secs(10)).await;
        outcome
    }

    /// One client config: the native client with upstream's `benchmark_serving` settings; its
    /// log's summary is the row. Failed requests fail it, as upstream's check does.
    async fn client(
        &self,
        base_url: &str,
        model: &Path,
        idx: usize,
        cidx: usize,
        s: &ServerConfig,
        c: &ClientConfig,
    ) -> Result<RowOut, String> {
        let log = self.client_log(idx, cidx);
        let variant = format!("{}-{}", s.name, c.name);
        let command = client_command(
            &self.tools.servetest,
            base_url,
            model,
            c,
            &self.dir.join(format!("bench.{idx}.{cidx}.json")),
            &variant,
            env_of(&[&self.spec.environment.client_env_var, &c.client_env_var]),
        )?;
        let mut child = GroupChild::spawn("benchmark-client", &command, &log)
            .map_err(|e| format!("cannot start the client: {e}"))?;
        let status = child.wait().await.map_err(|e| e.to_string())?;
        if !status.success() {
            return Err(format!(
                "the client exited with {status}; last {TAIL} lines of {}:\n{}",
                log.display(),
                log_tail(&log, TAIL)
            ));
        }
        let text = std::fs::read_to_string(&log).map_err(|e| format!("{}: {e}", log.display()))?;
        let block = logparse::parse_default(&text)
            .into_iter()
            .find(|b| b.concurrency == Some(c.concurrency) && !b.metrics.is_empty())
            .ok_or_else(|| {
                format!(
                    "no summary for concurrency {} in {}; last {TAIL} lines:\n{}",
                    c.concurrency,
                    log.display(),
                    log_tail(&log, TAIL)
                )
            })?;
        if let Some(failed) = block.metrics.get("failed").filter(|f| **f > 0.0) {
            return Err(format!(
                "{failed} failed request(s) (upstream fails a client on any); see {}",
                log.display()
            ));
        }
        println!(
            "{variant}: {} metric(s) at concurrency {}",
            block.metrics.len(),
            c.concurrency
        );
        Ok(RowOut {
            concurrency: Some(c.concurrency),
            metrics: block.metrics,
            model: s.model_name.clone(),
            variant,
        })
    }
}

/// The native client's argv for one client config: upstream's `benchmark_serving` flags in
/// servetest bench's terms (random prompts of `isl`/`osl` tokens with `random_range_ratio`,
/// concurrency × iterations prompts, EOS ignored, one warm-up request only when `warmup` is set).
pub fn client_command(
    servetest: &Path,
    base_url: &str,
    model: &Path,
    c: &ClientConfig,
    result: &Path,
    label: &str,
    env: Vec<(String, String)>,
) -> Result<CommandSpec, String> {
    let mut args: Vec<String> = vec![
        "bench".into(),
        "--base-url".into(),
        base_url.into(),
        "--model".into(),
        model.display().to_string(),
        "--backend".into(),
        c.backend.clone(),
        "--dataset".into(),
        "random".into(),
        "--input-len".into(),
        c.isl.to_string(),
        "--output-len".into(),
        c.osl.to_string(),
        "--range-ratio".into(),
        c.random_range_ratio.to_string(),
        "--num-prompts".into(),
        c.num_prompts().to_string(),
        "--concurrency-list".into(),
        c.concurrency.to_string(),
        "--percentile-metrics".into(),
        "ttft,tpot,itl,e2el".into(),
        "--ignore-eos".into(),
        "--save-result".into(),
        result.display().to_string(),
        "--label".into(),
        label.into(),
        "--disable-tqdm".into(),
        "--no-history".into(),
    ];
    if c.warmup.as_ref().is_some_and(truthy) {
        args.extend(["--warmups".into(), "1".into()]);
    }
    if !c.streaming {
        args.push("--no-stream".into());
    }
    let host = url::Url::parse(base_url)
        .ok()
        .and_then(|u| u.host_str().map(str::to_owned))
        .unwrap_or_default();
    if crate::netscope::client_needs_allow_remote(&host)? {
        args.push("--allow-remote".into());
    }
    Ok(CommandSpec {
        program: servetest.to_path_buf(),
        args,
        env,
        cwd: None,
    })
}

/// A YAML `warmup` value as Python's truth test reads it.
fn truthy(v: &serde_yaml::Value) -> bool {
    match v {
        serde_yaml::Value::Null => false,
        serde_yaml::Value::Bool(b) => *b,
        serde_yaml::Value::Number(n) => n.as_f64().is_some_and(|x| x != 0.0),
        serde_yaml::Value::String(s) => !s.is_empty(),
        serde_yaml::Value::Sequence(s) => !s.is_empty(),
        serde_yaml::Value::Mapping(m) => !m.is_empty(),
        serde_yaml::Value::Tagged(t) => truthy(&t.value),
    }
}

fn env_of(texts: &[&Option<String>]) -> Vec<(String, String)> {
    texts
        .iter()
        .filter_map(|t| t.as_deref())
        .flat_map(|t| parse_env_assignments(t).unwrap_or_default())
        .collect()
}

/// `TRTLLM_TEST_AGG_SERVER_READY_TIMEOUT`, else `TRTLLM_TEST_SERVER_READY_TIMEOUT`, else 3600 s, as
/// upstream reads them (a value that is not a positive integer is skipped).
fn ready_timeout() -> Duration {
    ready_timeout_from(|name| std::env::var(name).ok())
}

fn ready_timeout_from(get: impl Fn(&str) -> Option<String>) -> Duration {
    let secs = [
        "TRTLLM_TEST_AGG_SERVER_READY_TIMEOUT",
        "TRTLLM_TEST_SERVER_READY_TIMEOUT",
    ]
    .iter()
    .filter_map(|v| get(v))
    .find_map(|raw| raw.trim().parse::<u64>().ok().filter(|s| *s > 0))
    .unwrap_or(READY_TIMEOUT);
    Duration::from_secs(secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(yaml: &str) -> ClientConfig {
        serde_yaml::from_str(yaml).unwrap()
    }

    #[test]
    fn a_client_config_becomes_upstreams_benchmark_settings() {
        let c = client("{name: con4_iter10_1k1k, concurrency: 4, iterations: 10, isl: 1024, osl: 1024, random_range_ratio: 0.2}");
        let cmd = client_command(
            Path::new("/bin/servetest"),
            "http://127.0.0.1:8000",
            Path::new("/m"),
            &c,
            Path::new("/r.json"),
            "s-con4",
            Vec::new(),
        )
        .unwrap();
        let argv = cmd.args.join(" ");
        for part in [
            "--backend openai",
            "--input-len 1024 --output-len 1024 --range-ratio 0.2",
            "--num-prompts 40 --concurrency-list 4",
            "--ignore-eos",
        ] {
            assert!(argv.contains(part), "{part}: {argv}");
        }
        assert!(
            !argv.contains("--warmups") && !argv.contains("--no-stream"),
            "{argv}"
        );
        let c = client("{name: x, streaming: false, warmup: true, backend: openai-chat}");
        let argv = client_command(
            Path::new("/s"),
            "http://127.0.0.1:1",
            Path::new("/m"),
            &c,
            Path::new("/r"),
            "l",
            Vec::new(),
        )
        .unwrap()
        .args
        .join(" ");
        // Upstream's defaults: 1 request at concurrency 1, 1024/1024 tokens.
        assert!(
            argv.contains("--num-prompts 1 --concurrency-list 1"),
            "{argv}"
        );
        assert!(
            argv.contains("--input-len 1024 --output-len 1024"),
            "{argv}"
        );
        assert!(
            argv.contains("--warmups 1") && argv.contains("--no-stream"),
            "{argv}"
        );
        assert!(argv.contains("--backend openai-chat"), "{argv}");
    }

    #[test]
    fn ready_timeout_reads_upstreams_variables_in_order() {
        let with = |agg: Option<&str>, any: Option<&str>| {
            ready_timeout_from(|name| match name {
                "TRTLLM_TEST_AGG_SERVER_READY_TIMEOUT" => agg.map(str::to_owned),
                "TRTLLM_TEST_SERVER_READY_TIMEOUT" => any.map(str::to_owned),
                _ => None,
            })
        };
        assert_eq!(with(Some("bad"), Some("120")), Duration::from_secs(120));
        assert_eq!(with(Some("60"), Some("120")), Duration::from_secs(60));
        assert_eq!(with(Some("0"), None), Duration::from_secs(READY_TIMEOUT));
        assert_eq!(with(None, None), Duration::from_secs(READY_TIMEOUT));
    }

    const TWO: &str = "metadata: {model_name: m}\nserver_configs:\n  - name: a\n    tensor_parallel_size: 2\n    client_configs: [{name: c1, concurency: 4}]\n  - name: b\n    max_batch_size: 8\n    client_configs: [{name: c1, accuracy_config: {tasks: [x]}}]\n";

    fn trials(text: &str) -> Vec<Case> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("aggr/perf-sanity/two.yaml");
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, text).unwrap();
        Case::load(&path, &FAMILY, "perf-sanity").expand()
    }

    #[test]
    fn each_server_config_is_a_trial_that_keeps_only_its_own_errors() {
        let t = trials(TWO);
        let names: Vec<&str> = t.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(
            names,
            ["aggr_perf-sanity_two[a]", "aggr_perf-sanity_two[b]"]
        );
        let errors = |c: &Case| -> Vec<String> { c.errors().map(|v| v.key.clone()).collect() };
        // A client key typo is an error with the closest key; b's refused accuracy client is b's.
        assert_eq!(
            errors(&t[0]),
            ["server_configs.0.client_configs.0.concurency"]
        );
        assert!(
            t[0].violations[0].reason.contains("concurrency"),
            "{:?}",
            t[0].violations
        );
        assert_eq!(
            errors(&t[1]),
            ["server_configs.1.client_configs.0.accuracy_config"]
        );
        let fixed = TWO.replace("concurency", "concurrency");
        let t = trials(&fixed);
        assert!(
            t[0].is_valid() && !t[1].is_valid(),
            "a's trial runs while b's fails"
        );
    }

    #[test]
    fn a_typo_of_a_server_key_is_named_with_the_closest_engine_argument() {
        // Server configs pass unknown keys to the engine, so a typo lands there: a warning.
        let text = "metadata: {model_name: m}\nserver_configs:\n  - name: a\n    max_batchsize: 8\n    client_configs: [{name: c}]\n";
        let t = trials(text);
        let w = t[0]
            .violations
            .iter()
            .find(|v| v.key == "server_configs.0.max_batchsize")
            .expect("a warning");
        assert!(
            w.reason.contains("did you mean `max_batch_size`"),
            "{}",
            w.reason
        );
    }

    #[test]
    fn a_server_config_wider_than_a_node_is_refused_at_planning() {
        let text = "metadata: {model_name: m}\nhardware: {gpus_per_node: 4}\nserver_configs:\n  - name: wide\n    tensor_parallel_size: 8\n    client_configs: [{name: c}]\n";
        let t = trials(text);
        assert!(t[0].is_valid(), "{:?}", t[0].violations);
        assert!(t[0]
            .violations
            .iter()
            .any(|v| v.reason.contains("span 2 nodes")));
        let site = JobSite {
            servetest: Path::new("/bin/servetest"),
            dir: Path::new("/out/x"),
            case_path: Path::new("/c.yaml"),
        };
        let err = t[0].spec.as_deref().unwrap().job(&site).err().unwrap();
        assert!(err.1.contains("more than one node's 4"), "{err:?}");
    }

    #[test]
    fn the_engine_config_merges_upstreams_extra_file_and_roots_the_draft_model() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("base.yaml"),
            "max_batch_size: 4\nworld_size: 2\n",
        )
        .unwrap();
        let s: ServerConfig = serde_yaml::from_str(
            "{name: s, extra_llm_api_config_path: base.yaml, max_batch_size: 16, speculative_config: {decoding_type: Eagle, speculative_model: gpt_oss/eagle3}, client_configs: []}",
        )
        .unwrap();
        let roots = case::Roots {
            llm_root: dir.path().to_path_buf(),
            models_root: Some("/models".into()),
        };
        let c = s.engine_config(&roots).unwrap();
        assert_eq!(c.max_batch_size, Some(16), "the server's own key wins");
        assert_eq!(c.extra["world_size"], serde_yaml::Value::from(2));
        assert_eq!(
            c.speculative_config.unwrap().extra["speculative_model"],
            serde_yaml::Value::from("/models/gpt_oss/eagle3")
        );
        let missing = case::Roots {
            llm_root: "/nowhere".into(),
            models_root: None,
        };
        assert!(s
            .engine_config(&missing)
            .unwrap_err()
            .contains("/nowhere/base.yaml"));
    }
}
