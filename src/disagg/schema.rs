//! Typed model of a disagg/wideep case file, shaped so that upstream TensorRT-LLM YAML files load
//! unchanged. Sections the harness owns reject unknown keys (reported by `load`, all at once, with a
//! "did you mean" hint); engine keys under `worker_config.{ctx,gen}` that the harness does not reason
//! about are kept verbatim in `extra` and passed to the engine untouched.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize};
use serde_yaml::Value;

/// One disaggregated (or wide-EP) serving case: the whole YAML file.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct DisaggSpec {
    pub metadata: Metadata,
    pub slurm: Slurm,
    pub benchmark: Benchmark,
    pub hardware: Hardware,
    pub environment: Environment,
    #[serde(default)]
    pub profiling: Profiling,
    #[serde(default)]
    pub accuracy: Accuracy,
    /// Older upstream files keep the lengths in a top-level `sequence` section.
    #[serde(default)]
    pub sequence: Option<Sequence>,
    pub worker_config: WorkerConfigs,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct Metadata {
    pub model_name: String,
    #[serde(default)]
    pub precision: Option<String>,
    #[serde(default)]
    pub model_dir_name: Option<String>,
    /// Absent means "any GPU" (upstream falls back to a list of every type it knows).
    #[serde(default)]
    pub supported_gpus: Option<Vec<String>>,
    #[serde(default)]
    pub script_file: Option<String>,
    #[serde(default)]
    pub benchmark_type: Option<String>,
    #[serde(default)]
    pub config_index: Option<i64>,
    #[serde(default)]
    pub dataset_file: Option<String>,
    #[serde(default)]
    pub accuracy: Option<AccuracyExpectations>,
    /// Upstream's loader reads metric overrides from here.
    #[serde(default)]
    pub metrics: Option<MetricsOverride>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct AccuracyExpectations {
    #[serde(default)]
    pub datasets: Vec<DatasetThreshold>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct DatasetThreshold {
    /// Upstream YAML writes `dataset_name`; its loader reads `name`: accept both.
    #[serde(alias = "name")]
    pub dataset_name: String,
    pub expected_value: f64,
    #[serde(default)]
    pub threshold_type: ThresholdType,
    /// Absolute or relative allowance, for the `absolute`/`relative` threshold types.
    #[serde(default)]
    pub threshold: Option<f64>,
    #[serde(default)]
    pub filter_type: Option<String>,
    /// servetest: the lm-eval metric to judge (default `exact_match`).
    #[serde(default)]
    pub metric: Option<String>,
    #[serde(default)]
    pub alpha: Option<f64>,
    #[serde(default)]
    pub beta: Option<f64>,
    #[serde(default)]
    pub sigma: Option<f64>,
    #[serde(default)]
    pub num_samples: Option<u64>,
    #[serde(default)]
    pub higher_is_better: Option<bool>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ThresholdType {
    /// Upstream's one-tailed z-test (the only type upstream implements).
    #[default]
    HypothesisTest,
    Absolute,
    Relative,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct Slurm {
    #[serde(default)]
    pub script_file: Option<String>,
    pub partition: String,
    pub account: String,
    #[serde(deserialize_with = "string_or_number")]
    pub job_time: String,
    #[serde(default)]
    pub job_name: Option<String>,
    /// Older upstream files keep the dataset path here (later `benchmark.dataset_file`).
    #[serde(default)]
    pub dataset_file: Option<String>,
    #[serde(default)]
    pub extra_args: Option<String>,
    #[serde(default)]
    pub numa_bind: Option<bool>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BenchmarkMode {
    E2e,
    GenOnly,
    CtxOnly,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct Benchmark {
    pub mode: BenchmarkMode,
    /// Upstream: `get('enable_benchmark', True)`; false writes no benchmark command (accuracy-only).
    #[serde(default)]
    pub enable_benchmark: Option<bool>,
    #[serde(default)]
    pub use_nv_sa_benchmark: Option<bool>,
    #[serde(default)]
    pub multi_round: Option<u64>,
    #[serde(default)]
    pub benchmark_ratio: Option<f64>,
    pub streaming: bool,
    pub concurrency_list: ConcurrencyList,
    #[serde(default)]
    pub input_length: Option<u64>,
    #[serde(default)]
    pub output_length: Option<u64>,
    #[serde(default)]
    pub dataset_file: Option<String>,
    #[serde(default)]
    pub metrics: Option<MetricsOverride>,
    /// servetest: which load generator the BENCHMARK role runs.
    #[serde(default)]
    pub client: BenchmarkClient,
    /// servetest: seconds every server and the router get to become healthy (default 1800).
    #[serde(default)]
    pub server_timeout: Option<u64>,
    /// servetest: requests per concurrency level (default: concurrency × `multi_round`, at least 1).
    #[serde(default)]
    pub num_prompts: Option<u64>,
}

/// The BENCHMARK role's load generator.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BenchmarkClient {
    /// `servetest bench` (the native async client).
    #[default]
    Native,
    /// The engine's own serving benchmark script (e.g. TensorRT-LLM's benchmark_serving).
    Engine,
}

/// The serving engine a disagg case runs. Upstream files are TensorRT-LLM's, hence the default.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum EngineKind {
    #[default]
    Trtllm,
    Vllm,
    Sglang,
}

impl EngineKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EngineKind::Trtllm => "trtllm",
            EngineKind::Vllm => "vllm",
            EngineKind::Sglang => "sglang",
        }
    }
}

/// Upstream writes `"1 2 4 8"`, `'1024'` or a bare number; a YAML list is accepted too. Items that
/// are not positive integers are kept so that validation can name them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ConcurrencyList {
    pub items: Vec<String>,
}

impl ConcurrencyList {
    /// The parsed levels; items that do not parse are skipped (validation reports them).
    pub fn levels(&self) -> Vec<u64> {
        self.items.iter().filter_map(|s| s.parse().ok()).collect()
    }
}

/// The one concurrency-list grammar (case files and `servetest bench --concurrency-list`): items
/// separated by whitespace and/or commas, `"1 2 4"`, `"1,2,4"` and `"1, 2, 4"` alike.
pub fn split_levels(text: &str) -> Vec<String> {
    text.split(|c: char| c == ',' || c.is_whitespace())
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

impl<'de> Deserialize<'de> for ConcurrencyList {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Number(u64),
            Text(String),
            List(Vec<Scalar>),
        }
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Scalar {
            Number(i64),
            Text(String),
        }
        let items = match Raw::deserialize(deserializer)? {
            Raw::Number(n) => vec![n.to_string()],
            Raw::Text(s) => split_levels(&s),
            Raw::List(v) => v
                .into_iter()
                .map(|s| match s {
                    Scalar::Number(n) => n.to_string(),
                    Scalar::Text(t) => t,
                })
                .collect(),
        };
        Ok(ConcurrencyList { items })
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct MetricsOverride {
    #[serde(default)]
    pub log_file: Option<String>,
    #[serde(default)]
    pub extractor_pattern: Option<String>,
    #[serde(default)]
    pub metric_names: Option<Vec<String>>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct Sequence {
    pub input_length: u64,
    pub output_length: u64,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct Hardware {
    pub gpus_per_node: u64,
    pub num_ctx_servers: u64,
    pub num_gen_servers: u64,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub struct Environment {
    /// servetest: the serving engine (default `trtllm`, as in upstream files).
    #[serde(default)]
    pub engine: EngineKind,
    #[serde(default)]
    pub container_mount: Option<String>,
    #[serde(default)]
    pub container_image: Option<String>,
    #[serde(default)]
    pub model_path: Option<String>,
    #[serde(default)]
    pub trtllm_repo: Option<String>,
    #[serde(default)]
    pub trtllm_wheel_path: Option<String>,
    #[serde(default)]
    pub build_wheel: Option<bool>,
    #[serde(default)]
    pub dataset_file: Option<String>,
    #[serde(default)]
    pub work_dir: Option<String>,
    /// `"K=V K=V"`, exported for every worker.
    #[serde(default)]
    pub worker_env_var: Option<String>,
    /// `"K=V K=V"`, exported for the disagg router.
    #[serde(default)]
    pub server_env_var: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub struct Profiling {
    #[serde(default)]
    pub nsys_on: bool,
    /// Iterations `START-STOP` profiled on CTX workers (upstream's default `10-30`), exported as
    /// `TLLM_PROFILE_START_STOP`.
    #[serde(default)]
    pub ctx_profile_range: Option<String>,
    /// The same for GEN workers (default `200-250`).
    #[serde(default)]
    pub gen_profile_range: Option<String>,
}

/// The `accuracy` section. Current upstream files map task names to lm-eval settings; older ones use
/// a flat `model`/`tasks`/`model_args_extra` form. Both load; `tasks()` gives one view of them.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub struct Accuracy {
    #[serde(default)]
    pub enable_accuracy_test: bool,
    #[serde(default)]
    pub env_var: BTreeMap<String, String>,
    #[serde(default)]
    pub tasks: Option<AccuracyTasks>,
    /// Flat (older) form: lm-eval model type for every task.
    #[serde(default)]
    pub model: Option<String>,
    /// Flat (older) form: extra model args for every task.
    #[serde(default)]
    pub model_args_extra: Option<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(untagged)]
pub enum AccuracyTasks {
    /// `tasks: "gsm8k,mmlu"` (flat form).
    Names(String),
    /// `tasks: { gsm8k: { model: …, model_args_extra: …, extra_kwargs: … } }`.
    Map(BTreeMap<String, AccuracyTask>),
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
pub struct AccuracyTask {
    #[serde(default)]
    pub model: Option<String>,
    #[serde(default)]
    pub model_args_extra: Option<String>,
    #[serde(default)]
    pub extra_kwargs: BTreeMap<String, Value>,
}

impl Accuracy {
    /// Every task with its effective settings, whichever form the file used.
    pub fn tasks(&self) -> Vec<(String, AccuracyTask)> {
        match &self.tasks {
            None => Vec::new(),
            Some(AccuracyTasks::Map(map)) => {
                map.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
            }
            Some(AccuracyTasks::Names(names)) => names
                .split(',')
                .map(str::trim)
                .filter(|n| !n.is_empty())
                .map(|n| {
                    let task = AccuracyTask {
                        model: self.model.clone(),
                        model_args_extra: self.model_args_extra.clone(),
                        extra_kwargs: BTreeMap::new(),
                    };
                    (n.to_owned(), task)
                })
                .collect(),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct WorkerConfigs {
    pub ctx: WorkerConfig,
    pub gen: WorkerConfig,
    /// Older upstream form of `gen.moe_config.load_balancer.num_slots` (its submit script used it
    /// only to name the log directory); the name check reads it when the newer key is absent.
    #[serde(default)]
    pub eplb_num_slots: Option<u64>,
}

/// One worker's engine config. Typed fields are the ones the harness reasons about; everything else
/// is kept in `extra` and passed to the engine verbatim.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub struct WorkerConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tensor_parallel_size: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pipeline_parallel_size: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context_parallel_size: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub moe_expert_parallel_size: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enable_attention_dp: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_batch_size: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_num_tokens: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_seq_len: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_transceiver_config: Option<CacheTransceiverConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub speculative_config: Option<SpeculativeConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub moe_config: Option<MoeConfig>,
    #[serde(flatten)]
    pub extra: BTreeMap<String, Value>,
}

impl WorkerConfig {
    pub fn tp(&self) -> u64 {
        self.tensor_parallel_size.unwrap_or(1)
    }
    pub fn pp(&self) -> u64 {
        self.pipeline_parallel_size.unwrap_or(1)
    }
    pub fn cp(&self) -> u64 {
        self.context_parallel_size.unwrap_or(1)
    }
    pub fn attention_dp(&self) -> bool {
        self.enable_attention_dp.unwrap_or(false)
    }
    /// GPUs one instance of this worker occupies.
    pub fn gpus(&self) -> u64 {
        self.tp() * self.pp() * self.cp()
    }
    /// Speculative (MTP) layers: `num_nextn_predict_layers`, else `max_draft_len`, else 0.
    pub fn mtp_layers(&self) -> u64 {
        self.speculative_config
            .as_ref()
            .and_then(|s| s.num_nextn_predict_layers.or(s.max_draft_len))
            .unwrap_or(0)
    }
    pub fn eplb_slots(&self) -> u64 {
        self.moe_config
            .as_ref()
            .and_then(|m| m.load_balancer.as_ref())
            .and_then(|lb| lb.num_slots)
            .unwrap_or(0)
    }
    pub fn transceiver_backend(&self) -> Option<&str> {
        self.cache_transceiver_config
            .as_ref()
            .and_then(|c| c.backend.as_deref())
    }
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub struct CacheTransceiverConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend: Option<String>,
    #[serde(flatten)]
    pub extra: BTreeMap<String, Value>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub struct SpeculativeConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub num_nextn_predict_layers: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_draft_len: Option<u64>,
    #[serde(flatten)]
    pub extra: BTreeMap<String, Value>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub struct MoeConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load_balancer: Option<LoadBalancer>,
    #[serde(flatten)]
    pub extra: BTreeMap<String, Value>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub struct LoadBalancer {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub num_slots: Option<u64>,
    #[serde(flatten)]
    pub extra: BTreeMap<String, Value>,
}

/// SLURM times are strings, but `job_time: 120` (minutes) is a YAML number.
fn string_or_number<'de, D: Deserializer<'de>>(deserializer: D) -> Result<String, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Number(u64),
        Text(String),
    }
    Ok(match Raw::deserialize(deserializer)? {
        Raw::Number(n) => n.to_string(),
        Raw::Text(s) => s,
    })
}

/// Sections whose unknown keys are errors, with the struct fields known there (for "did you mean").
/// Paths not listed here (the `extra` maps of worker configs) accept any key.
pub fn known_fields(path: &str) -> Option<&'static [&'static str]> {
    use serde_aux::serde_introspection::serde_introspect as fields;
    Some(match path {
        "" => fields::<DisaggSpec>(),
        "metadata" => fields::<Metadata>(),
        "metadata.accuracy" => fields::<AccuracyExpectations>(),
        "metadata.metrics" | "benchmark.metrics" => fields::<MetricsOverride>(),
        "slurm" => fields::<Slurm>(),
        "benchmark" => fields::<Benchmark>(),
        "hardware" => fields::<Hardware>(),
        "environment" => fields::<Environment>(),
        "profiling" => fields::<Profiling>(),
        "accuracy" => fields::<Accuracy>(),
        "sequence" => fields::<Sequence>(),
        "worker_config" => fields::<WorkerConfigs>(),
        p if is_dataset_entry(p) => fields::<DatasetThreshold>(),
        _ => return None,
    })
}

fn is_dataset_entry(path: &str) -> bool {
    path.strip_prefix("metadata.accuracy.datasets.")
        .is_some_and(|idx| idx.parse::<usize>().is_ok())
}

/// Each top-level section with a checker of it alone (`load::parse_spec_sections`), so a type error
/// in one section does not hide another's.
pub const SECTIONS: &[crate::case::load::SectionCheck] = {
    use crate::case::load::section;
    &[
        ("metadata", section::<Metadata>),
        ("slurm", section::<Slurm>),
        ("benchmark", section::<Benchmark>),
        ("hardware", section::<Hardware>),
        ("environment", section::<Environment>),
        ("profiling", section::<Profiling>),
        ("accuracy", section::<Accuracy>),
        ("sequence", section::<Sequence>),
        ("worker_config", section::<WorkerConfigs>),
    ]
};

/// The iteration range profiled on `side`: the case's, else upstream's defaults (CTX `10-30`,
/// GEN `200-250`).
pub fn profile_range(p: &Profiling, side: crate::disagg::name::Side) -> String {
    use crate::disagg::name::Side;
    match side {
        Side::Ctx => p
            .ctx_profile_range
            .clone()
            .unwrap_or_else(|| "10-30".into()),
        Side::Gen => p
            .gen_profile_range
            .clone()
            .unwrap_or_else(|| "200-250".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::split_levels;

    #[test]
    fn one_concurrency_grammar_for_spaces_and_commas() {
        for text in ["1 4 16", "1,4,16", "1, 4, 16", " 1 ,4\t16 "] {
            assert_eq!(split_levels(text), ["1", "4", "16"], "{text:?}");
        }
    }
}
