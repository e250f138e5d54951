//! The aggr family's schema and rules: upstream TensorRT-LLM's aggregated perf-sanity files
//! (`tests/scripts/perf-sanity/aggregated/*.yaml`), read unchanged:
//!
//! ```yaml
//! metadata: {model_name: gpt_oss_120b_fp4, supported_gpus: [B200]}
//! hardware: {gpus_per_node: 8}
//! server_configs:
//!   - name: gpt_oss_fp4_tp2_mtp0_1k1k          # one trial each: aggr_perf-sanity_<file>[<name>]
//!     model_name: gpt_oss_120b_fp4             # default: metadata.model_name
//!     server_env_var: "K=V K=V"
//!     tensor_parallel_size: 2                  # every other key: the engine's config file
//!     max_batch_size: 512
//!     kv_cache_config: {free_gpu_memory_fraction: 0.85}
//!     client_configs:
//!       - {name: con4_iter10_1k1k, concurrency: 4, iterations: 10, isl: 1024, osl: 1024}
//! # servetest's own, all optional:
//! environment: {engine: vllm, model_path: models/tiny, server_env_var: "…", client_env_var: "…"}
//! slurm: {partition: p, account: a, job_time: "03:00:00"}
//! ```

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_yaml::Value;

use crate::case::common::{parse_env_assignments, parse_slurm_time, ScriptSlurm};
use crate::case::load::parse_spec;
use crate::case::violation::Violation;
use crate::disagg::schema::{EngineKind, WorkerConfig};
use crate::family::Loaded;

/// Upstream's per-test limit (`DEFAULT_TIMEOUT`, 3 h): the job's time when `slurm` is not given.
pub const DEFAULT_JOB_TIME: &str = "03:00:00";

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct AggrSpec {
    pub metadata: Metadata,
    #[serde(default)]
    pub hardware: Hardware,
    pub server_configs: Vec<ServerConfig>,
    /// servetest's: the engine, the model directory, and (as upstream's older files had them)
    /// environment strings for every server and client.
    #[serde(default)]
    pub environment: Environment,
    /// servetest's: the job's SLURM settings (upstream's CI wraps perf-sanity in its own job).
    #[serde(default)]
    pub slurm: Option<ScriptSlurm>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct Metadata {
    pub model_name: String,
    #[serde(default)]
    pub supported_gpus: Option<Vec<String>>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct Hardware {
    #[serde(default = "eight")]
    pub gpus_per_node: u64,
}

impl Default for Hardware {
    fn default() -> Self {
        Hardware { gpus_per_node: 8 }
    }
}

fn eight() -> u64 {
    8
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub struct Environment {
    #[serde(default)]
    pub engine: EngineKind,
    /// The model directory (relative: to the project root). Default: `$LLM_MODELS_ROOT/<model_name>`
    /// when that exists, else the model name as given (upstream's fallback).
    #[serde(default)]
    pub model_path: Option<String>,
    #[serde(default)]
    pub server_env_var: Option<String>,
    #[serde(default)]
    pub client_env_var: Option<String>,
}

/// One `server_configs` entry: upstream's own keys, and everything else as the engine's config.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct ServerConfig {
    pub name: String,
    #[serde(default)]
    pub model_name: Option<String>,
    /// GPUs of the server (default tp·pp·cp).
    #[serde(default)]
    pub gpus: Option<u64>,
    #[serde(default)]
    pub gpus_per_node: Option<u64>,
    #[serde(default)]
    pub server_env_var: Option<String>,
    /// `trtllm-serve --backend` (default `pytorch`).
    #[serde(default)]
    pub backend: Option<String>,
    pub client_configs: Vec<ClientConfig>,
    /// Keys upstream reads only to match rows in its results database (servetest warns).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub match_mode: Option<String>,
    /// Keys upstream's loader overwrites or never passes on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disagg_run_type: Option<Value>,
    /// A YAML merged under this server's engine keys (theirs win), as upstream merges it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extra_llm_api_config_path: Option<String>,
    #[serde(flatten)]
    pub engine: WorkerConfig,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct ClientConfig {
    pub name: String,
    #[serde(default = "one")]
    pub concurrency: u64,
    #[serde(default = "one")]
    pub iterations: u64,
    #[serde(default = "k1")]
    pub isl: u64,
    #[serde(default = "k1")]
    pub osl: u64,
    #[serde(default)]
    pub random_range_ratio: f64,
    /// `openai` (completions) or `openai-chat`.
    #[serde(default = "openai")]
    pub backend: String,
    #[serde(default)]
    pub use_chat_template: bool,
    #[serde(default = "yes")]
    pub streaming: bool,
    #[serde(default = "yes")]
    pub trust_remote_code: bool,
    #[serde(default)]
    pub dataset_file: Option<String>,
    #[serde(default)]
    pub use_nv_sa_benchmark: bool,
    /// Upstream sends one test request first when set; servetest sends one warm-up request.
    #[serde(default)]
    pub warmup: Option<Value>,
    #[serde(default)]
    pub accuracy_config: Option<Value>,
    #[serde(default)]
    pub only_run_accuracy: Option<bool>,
    #[serde(default)]
    pub client_env_var: Option<String>,
}

fn one() -> u64 {
    1
}
fn k1() -> u64 {
    1024
}
fn openai() -> String {
    "openai".into()
}
fn yes() -> bool {
    true
}

/// Where upstream's relative paths point: `extra_llm_api_config_path` into the TensorRT-LLM
/// checkout (`$LLM_ROOT`, else servetest's project root), `speculative_model` under the models root
/// (`$LLM_MODELS_ROOT`, else as written).
pub struct Roots {
    pub llm_root: std::path::PathBuf,
    pub models_root: Option<std::path::PathBuf>,
}

impl Roots {
    pub fn from_env(project: &std::path::Path) -> Roots {
        let var = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
        Roots {
            llm_root: var("LLM_ROOT").map_or_else(|| project.to_path_buf(), Into::into),
            models_root: var("LLM_MODELS_ROOT").map(Into::into),
        }
    }
}

impl ServerConfig {
    /// The engine's config as upstream writes it: this server's engine keys over the
    /// `extra_llm_api_config_path` file's, and a relative `speculative_config.speculative_model`
    /// under the models root.
    pub fn engine_config(&self, roots: &Roots) -> Result<WorkerConfig, String> {
        let mut config = match &self.extra_llm_api_config_path {
            None => self.engine.clone(),
            Some(path) => {
                let path = roots.llm_root.join(path);
                let text = std::fs::read_to_string(&path).map_err(|e| {
                    format!(
                        "extra_llm_api_config_path {}: {e} (relative paths are read from $LLM_ROOT, \
                         the TensorRT-LLM checkout, else the project root)",
                        path.display()
                    )
                })?;
                let mut base: serde_yaml::Mapping =
                    serde_yaml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
                let ours = serde_yaml::to_value(&self.engine).map_err(|e| e.to_string())?;
                if let Value::Mapping(m) = ours {
                    for (k, v) in m {
                        base.insert(k, v);
                    }
                }
                serde_yaml::from_value(Value::Mapping(base))
                    .map_err(|e| format!("{}: {e}", path.display()))?
            }
        };
        if let (Some(root), Some(spec)) = (&roots.models_root, config.speculative_config.as_mut()) {
            if let Some(Value::String(m)) = spec.extra.get_mut("speculative_model") {
                if std::path::Path::new(m.as_str()).is_relative() {
                    *m = root.join(&*m).display().to_string();
                }
            }
        }
        Ok(config)
    }

    /// GPUs the server occupies: `gpus`, else tp·pp·cp.
    pub fn devices(&self) -> u64 {
        self.gpus.unwrap_or_else(|| self.engine.gpus())
    }
}

impl ClientConfig {
    /// Requests one client run sends: concurrency × iterations, as upstream.
    pub fn num_prompts(&self) -> u64 {
        self.concurrency * self.iterations
    }
}

fn known_fields(path: &str) -> Option<&'static [&'static str]> {
    use serde_aux::serde_introspection::serde_introspect as fields;
    let parts: Vec<&str> = path.split('.').collect();
    Some(match parts.as_slice() {
        [""] => fields::<AggrSpec>(),
        ["metadata"] => fields::<Metadata>(),
        ["hardware"] => fields::<Hardware>(),
        ["environment"] => fields::<Environment>(),
        ["slurm"] => fields::<ScriptSlurm>(),
        ["server_configs", i, "client_configs", j]
            if i.parse::<usize>().is_ok() && j.parse::<usize>().is_ok() =>
        {
            fields::<ClientConfig>()
        }
        _ => return None,
    })
}

pub fn load(text: &str, _category: &str, _stem: &str) -> Loaded {
    let (spec, mut violations) = parse_spec::<AggrSpec>(text, known_fields);
    let Some(spec) = spec else {
        return (None, violations);
    };
    violations.extend(validate(&spec));
    (Some(std::sync::Arc::new(spec)), violations)
}

pub fn validate(spec: &AggrSpec) -> Vec<Violation> {
    let mut v = Vec::new();
    if spec.server_configs.is_empty() {
        v.push(Violation::error(
            "server_configs",
            "needs at least one server config",
        ));
    }
    if let Some(s) = &spec.slurm {
        if let Err(reason) = parse_slurm_time(&s.job_time) {
            v.push(Violation::error("slurm.job_time", reason).with_value(&s.job_time));
        }
        s.refuse_nodes("aggr", &mut v);
    }
    for (key, text) in [
        (
            "environment.server_env_var",
            &spec.environment.server_env_var,
        ),
        (
            "environment.client_env_var",
            &spec.environment.client_env_var,
        ),
    ] {
        env_string(key, text.as_deref(), &mut v);
    }
    let mut names: BTreeMap<&str, usize> = BTreeMap::new();
    for (i, s) in spec.server_configs.iter().enumerate() {
        let key = format!("server_configs.{i}");
        if let Some(first) = names.insert(&s.name, i) {
            v.push(
                Violation::error(
                    format!("{key}.name"),
                    format!("`{}` is also the name of server config {first}; each names a trial and its files", s.name),
                )
                .with_value(&s.name),
            );
        }
        // The name becomes part of a trial name, a test id (upstream splits ids on `-`… in the file
        // part only) and file names.
        if s.name.is_empty()
            || !s
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        {
            v.push(
                Violation::error(
                    format!("{key}.name"),
                    "use letters, digits, `-`, `_` and `.` (it names a trial and its files)",
                )
                .with_value(&s.name),
            );
        }
        env_string(
            &format!("{key}.server_env_var"),
            s.server_env_var.as_deref(),
            &mut v,
        );
        if s.match_mode.is_some() {
            v.push(Violation::warning(
                format!("{key}.match_mode"),
                "upstream reads it only to match rows in its OpenSearch database; servetest's baseline \
                 gate and results history match by case, variant and concurrency",
            ));
        }
        for (field, set) in [
            ("mode", s.mode.is_some()),
            ("concurrency", s.concurrency.is_some()),
            ("disagg_run_type", s.disagg_run_type.is_some()),
        ] {
            if set {
                v.push(Violation::warning(
                    format!("{key}.{field}"),
                    "upstream's loader overwrites it and never passes it to the server; so does servetest",
                ));
            }
        }
        if let Some(b) = &s.backend {
            if !["pytorch", "_autodeploy", "tensorrt"].contains(&b.as_str()) {
                v.push(Violation::warning(
                    format!("{key}.backend"),
                    "not a trtllm-serve backend servetest knows (pytorch, _autodeploy, tensorrt)",
                ));
            }
        }
        // A typo of a server config's own key lands among the engine keys: named here. The pinned
        // argument list is the PyTorch backend's (AutoDeploy's `_autodeploy` has its own).
        if s.backend.as_deref().is_none_or(|b| b == "pytorch") {
            crate::disagg::validate::engine_key_warnings(
                spec.environment.engine,
                &key,
                &s.engine,
                &mut v,
            );
        }
        let per_node = s
            .gpus_per_node
            .unwrap_or(spec.hardware.gpus_per_node)
            .max(1);
        if s.devices() > per_node {
            v.push(Violation::warning(
                key.clone(),
                format!(
                    "{} GPUs span {} nodes of {per_node}: servetest serves an aggr server config on \
                     one node, so this trial's job is refused (multi-node aggregated servers are \
                     not implemented)",
                    s.devices(),
                    s.devices().div_ceil(per_node)
                ),
            ));
        }
        if s.engine.tp() == 0 || s.engine.pp() == 0 || s.engine.cp() == 0 {
            v.push(Violation::error(
                key.clone(),
                "tensor/pipeline/context parallel sizes must be at least 1",
            ));
        }
        if s.client_configs.is_empty() {
            v.push(Violation::error(
                format!("{key}.client_configs"),
                "needs at least one client config",
            ));
        }
        let mut clients: BTreeMap<&str, usize> = BTreeMap::new();
        for (j, c) in s.client_configs.iter().enumerate() {
            let ckey = format!("{key}.client_configs.{j}");
            if let Some(first) = clients.insert(&c.name, j) {
                v.push(
                    Violation::error(
                        format!("{ckey}.name"),
                        format!("`{}` is also the name of client config {first}; `<server>-<client>` names each result", c.name),
                    )
                    .with_value(&c.name),
                );
            }
            for (field, n) in [
                ("concurrency", c.concurrency),
                ("iterations", c.iterations),
                ("isl", c.isl),
                ("osl", c.osl),
            ] {
                if n == 0 {
                    v.push(Violation::error(
                        format!("{ckey}.{field}"),
                        "must be at least 1",
                    ));
                }
            }
            if !(0.0..1.0).contains(&c.random_range_ratio) {
                v.push(Violation::error(
                    format!("{ckey}.random_range_ratio"),
                    "must be in [0, 1): lengths are drawn from [L(1-r), L(1+r)]",
                ));
            }
            if !["openai", "openai-chat"].contains(&c.backend.as_str()) {
                v.push(
                    Violation::error(
                        format!("{ckey}.backend"),
                        "the native client speaks `openai` (completions) or `openai-chat`",
                    )
                    .with_value(&c.backend),
                );
            }
            if c.accuracy_config.is_some() || c.only_run_accuracy == Some(true) {
                v.push(Violation::error(
                    format!("{ckey}.accuracy_config"),
                    "accuracy runs of aggregated perf-sanity clients are not implemented in servetest; \
                     disagg accuracy cases run lm-eval",
                ));
            }
            if c.dataset_file.is_some() {
                v.push(Violation::warning(
                    format!("{ckey}.dataset_file"),
                    "the native client does not read TensorRT-LLM's trtllm_custom datasets; it sends \
                     random prompts of isl/osl tokens",
                ));
            }
            if c.use_nv_sa_benchmark {
                v.push(Violation::warning(
                    format!("{ckey}.use_nv_sa_benchmark"),
                    "the native client runs instead of the SA benchmark",
                ));
            }
            if c.use_chat_template {
                v.push(Violation::warning(
                    format!("{ckey}.use_chat_template"),
                    "the native client sends the prompt without the model's chat template",
                ));
            }
            env_string(
                &format!("{ckey}.client_env_var"),
                c.client_env_var.as_deref(),
                &mut v,
            );
        }
    }
    v
}

fn env_string(key: &str, text: Option<&str>, out: &mut Vec<Violation>) {
    if let Some(text) = text {
        if let Err(reason) = parse_env_assignments(text) {
            out.push(Violation::error(key, reason));
        }
    }
}
