//! The `aggregated` family (seed 000, vLLM's batched-test launcher): for each model of the case,
//! serve it, run inference checks, and sweep the serving benchmark over a bench-param file.
//!
//! ```yaml
//! models:                                  # the seed's model config
//!   - name: tiny-llama
//!     model_path: models/tiny
//!     timeout: 300                         # seconds for the server to become healthy
//!     serve_config: {tp: 1, pp: 1, dp: 1, distributed_executor_backend: mp,
//!                    gpu_memory_utilization: 0.8, swap_space: 4, max_model_len: 512,
//!                    extra_args: {--dtype: float32, --enforce-eager: ""}}
//!     infer_type: [text-only]              # or single-image; the seed's TODO types are not run
//!     benchmark: {bench_param: configs/bench_params/tiny.json, dataset_name: random,
//!                 ignore_eos: true, sweep_num_runs: 1}
//!     extra_env: {VLLM_CPU_KVCACHE_SPACE: "1"}
//! infer: true
//! perf: true
//! gpus_per_node: 8                         # nodes = tp·pp·dp / gpus_per_node
//! slurm: {partition: p, account: a, job_time: "00:30:00"}
//! ```

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::case::common::{parse_slurm_time, ScriptSlurm};
use crate::case::load::parse_spec;
use crate::case::violation::Violation;
use crate::family::Loaded;

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct AggregatedSpec {
    #[serde(default)]
    pub description: Option<String>,
    pub models: Vec<ModelEntry>,
    #[serde(default = "yes")]
    pub infer: bool,
    #[serde(default = "yes")]
    pub perf: bool,
    /// Text-only cases, upstream's `{question, keywords}` list.
    #[serde(default = "text_case")]
    pub text_case: String,
    /// Single-image cases, upstream's `{picture_url, keywords}` list.
    #[serde(default = "image_case")]
    pub image_case: String,
    #[serde(default = "eight")]
    pub gpus_per_node: u64,
    #[serde(default)]
    pub supported_gpus: Option<Vec<String>>,
    /// The seed's cluster config: nodes reached over SSH, Ray started on as many as a model needs.
    /// The first node must be the machine the job step runs on.
    #[serde(default)]
    pub cluster: Option<Vec<ClusterNode>>,
    pub slurm: ScriptSlurm,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct ClusterNode {
    pub ssh: SshTarget,
    #[serde(default)]
    pub ray: Option<RayNode>,
    /// Upstream also reads the NIC at the node's top level.
    #[serde(default)]
    pub nic: Option<String>,
}

impl ClusterNode {
    /// The interface for `GLOO_SOCKET_IFNAME`: `ray.nic`, else `nic`.
    pub fn nic(&self) -> Option<&str> {
        self.ray
            .as_ref()
            .map(|r| r.nic.as_str())
            .or(self.nic.as_deref())
    }
}

#[derive(Clone, Deserialize, Serialize)]
pub struct SshTarget {
    pub hostname: String,
    #[serde(default = "ssh_port")]
    pub port: u16,
    #[serde(default = "root")]
    pub user: String,
    #[serde(default)]
    pub auth_type: AuthType,
    #[serde(default)]
    pub private_key: Option<String>,
    /// The seed's plaintext password (accepted, warned about): prefer `password_env`.
    #[serde(default)]
    pub password: Option<String>,
    /// Name of the environment variable holding the password.
    #[serde(default)]
    pub password_env: Option<String>,
}

/// Never prints the password.
impl std::fmt::Debug for SshTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SshTarget")
            .field("hostname", &self.hostname)
            .field("port", &self.port)
            .field("user", &self.user)
            .field("auth_type", &self.auth_type)
            .field("private_key", &self.private_key)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("password_env", &self.password_env)
            .finish()
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthType {
    #[default]
    Key,
    Password,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct RayNode {
    /// The network interface Ray's Gloo backend uses (`GLOO_SOCKET_IFNAME`).
    pub nic: String,
}

fn text_case() -> String {
    "configs/inference/text_case.yaml".into()
}
fn image_case() -> String {
    "configs/inference/image_case.yaml".into()
}

fn ssh_port() -> u16 {
    22
}
fn root() -> String {
    "root".into()
}

fn yes() -> bool {
    true
}
fn eight() -> u64 {
    8
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct ModelEntry {
    pub name: String,
    pub model_path: String,
    #[serde(default = "timeout")]
    pub timeout: u64,
    #[serde(default, deserialize_with = "null_default")]
    pub serve_config: ServeConfig,
    #[serde(default, deserialize_with = "null_default")]
    pub infer_type: Vec<String>,
    #[serde(default, deserialize_with = "null_default")]
    pub benchmark: BenchSettings,
    /// A map, or a list of maps merged in order (upstream accepts both); values as Python's `str()`.
    #[serde(default, deserialize_with = "env_maps")]
    pub extra_env: BTreeMap<String, String>,
    /// `--tag` filters on these (upstream's key; none means `dense`).
    #[serde(default, deserialize_with = "words")]
    pub tags: Option<Vec<String>>,
    /// The seed README's spelling; upstream's code never reads it, servetest reads it as `tags`.
    #[serde(default, deserialize_with = "words")]
    pub tag: Option<Vec<String>>,
}

fn timeout() -> u64 {
    600
}

/// An explicit `null` (upstream files write `extra_args:` with nothing) is the default.
fn null_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// Python's `str()` of a YAML scalar, as upstream exports `extra_env` values (`True`, `1`, `0.5`).
pub fn python_str(v: &serde_yaml::Value) -> String {
    match v {
        serde_yaml::Value::Null => "None".into(),
        serde_yaml::Value::Bool(true) => "True".into(),
        serde_yaml::Value::Bool(false) => "False".into(),
        serde_yaml::Value::Number(n) => n.to_string(),
        serde_yaml::Value::String(s) => s.clone(),
        other => serde_json::to_string(other).unwrap_or_default(),
    }
}

fn env_maps<'de, D: serde::Deserializer<'de>>(d: D) -> Result<BTreeMap<String, String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        One(BTreeMap<String, serde_yaml::Value>),
        Many(Vec<BTreeMap<String, serde_yaml::Value>>),
    }
    let maps = match Option::<Raw>::deserialize(d)? {
        None => Vec::new(),
        Some(Raw::One(m)) => vec![m],
        Some(Raw::Many(v)) => v,
    };
    Ok(maps
        .into_iter()
        .flatten()
        .map(|(k, v)| (k, python_str(&v)))
        .collect())
}

/// A list of words or one word, lower-cased (upstream's tags).
fn words<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Vec<String>>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        One(String),
        Many(Vec<String>),
    }
    Ok(Option::<Raw>::deserialize(d)?.map(|r| {
        let v = match r {
            Raw::One(s) => vec![s],
            Raw::Many(v) => v,
        };
        v.into_iter().map(|s| s.trim().to_lowercase()).collect()
    }))
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct ServeConfig {
    #[serde(default = "one")]
    pub tp: u64,
    #[serde(default = "one")]
    pub pp: u64,
    #[serde(default = "one")]
    pub dp: u64,
    /// Upstream's rule: `ray` when written as `ray` or the model needs 8 or more devices, else `mp`
    /// (`ModelEntry::backend`).
    #[serde(default)]
    pub distributed_executor_backend: Option<String>,
    #[serde(default = "mem")]
    pub gpu_memory_utilization: f64,
    /// The seed's default is 16; passed when the engine still has `--swap-space`
    /// (`aggregated::serve_args`).
    #[serde(default)]
    pub swap_space: Option<u64>,
    #[serde(default = "len")]
    pub max_model_len: u64,
    /// Upstream writes it in its model files; used here to check `infer_type`.
    #[serde(default)]
    pub is_multimodal: Option<bool>,
    /// Flags appended verbatim after the defaults, in order (so they override them, as argparse
    /// takes the last): a map `--flag: value` (`null` or `""` = a bare flag), a list of words, or
    /// one command-line string.
    #[serde(default)]
    pub extra_args: serde_yaml::Value,
}

impl Default for ServeConfig {
    fn default() -> Self {
        ServeConfig {
            tp: 1,
            pp: 1,
            dp: 1,
            distributed_executor_backend: None,
            gpu_memory_utilization: mem(),
            swap_space: None,
            max_model_len: len(),
            is_multimodal: None,
            extra_args: serde_yaml::Value::Null,
        }
    }
}

/// The seed's `swap_space` default (GiB).
pub const SWAP_SPACE_DEFAULT: u64 = 16;

impl ServeConfig {
    /// `extra_args` as argv words, in the order written.
    pub fn extra_argv(&self) -> Result<Vec<String>, String> {
        use serde_yaml::Value;
        let word = |v: &Value| match v {
            Value::String(s) => s.clone(),
            Value::Bool(_) | Value::Number(_) => python_str(v),
            other => serde_json::to_string(other).unwrap_or_default(),
        };
        Ok(match &self.extra_args {
            Value::Null => Vec::new(),
            Value::Mapping(m) => {
                let mut out = Vec::new();
                for (k, v) in m {
                    let Value::String(flag) = k else {
                        return Err(format!("extra_args: key {k:?} is not a flag"));
                    };
                    out.push(flag.clone());
                    match v {
                        Value::Null => {}
                        Value::String(s) if s.is_empty() => {}
                        other => out.push(word(other)),
                    }
                }
                out
            }
            Value::Sequence(items) => items.iter().map(word).collect(),
            Value::String(line) => shell_words::split(line)
                .map_err(|e| format!("extra_args: cannot split `{line}`: {e}"))?,
            other => {
                return Err(format!(
                    "extra_args: expected a map, a list or a string, got {other:?}"
                ))
            }
        })
    }
}

fn one() -> u64 {
    1
}
fn mem() -> f64 {
    0.8
}
fn len() -> u64 {
    4096
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct BenchSettings {
    /// A JSON (or YAML) list of combinations, upstream's `bench_params/*.json`.
    #[serde(default = "bench_default")]
    pub bench_param: String,
    #[serde(default = "random")]
    pub dataset_name: String,
    /// Upstream's code default (its README says true).
    #[serde(default)]
    pub ignore_eos: bool,
    /// Upstream's code default 3 (its README says 1); a number or a numeric string.
    #[serde(default = "three", deserialize_with = "count")]
    pub sweep_num_runs: u64,
}

impl Default for BenchSettings {
    fn default() -> Self {
        BenchSettings {
            bench_param: bench_default(),
            dataset_name: random(),
            ignore_eos: false,
            sweep_num_runs: 3,
        }
    }
}

fn three() -> u64 {
    3
}

fn count<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Number(u64),
        Text(String),
    }
    match Raw::deserialize(d)? {
        Raw::Number(n) => Ok(n),
        Raw::Text(s) => s
            .trim()
            .parse()
            .map_err(|_| serde::de::Error::custom(format!("`{s}` is not a count"))),
    }
}

fn bench_default() -> String {
    "configs/bench_params/bench_default.json".into()
}
fn random() -> String {
    "random".into()
}

/// One combination of a bench-param file: its parameters in the file's order (which names its
/// directory) and the four a random-dataset run needs.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct BenchPoint {
    pub max_concurrency: u64,
    pub num_prompts: u64,
    pub random_input_len: u64,
    pub random_output_len: u64,
    /// `key=value` in the order written.
    #[serde(skip)]
    pub params: Vec<(String, String)>,
}

/// The `vllm bench serve` options a combination may set here (the ones servetest's sweep acts on).
pub const BENCH_KEYS: &[&str] = &[
    "max_concurrency",
    "num_prompts",
    "random_input_len",
    "random_output_len",
];

impl BenchPoint {
    /// vLLM sweep's directory name: `BENCH--k=v-k=v…` in the file's key order.
    pub fn dir_name(&self) -> String {
        let parts: Vec<String> = self
            .params
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        format!("BENCH--{}", parts.join("-"))
    }

    /// The same combination regardless of key order (resume matches on this).
    pub fn key(&self) -> (u64, u64, u64, u64) {
        (
            self.max_concurrency,
            self.num_prompts,
            self.random_input_len,
            self.random_output_len,
        )
    }
}

/// Reads a bench-param file: a list of maps, each one combination (no product), as vLLM's
/// `bench sweep --bench-params`; JSON, or the same structure in YAML.
pub fn read_bench_params(path: &std::path::Path) -> Result<Vec<BenchPoint>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    parse_bench_params(&text).map_err(|e| format!("{}: {e}", path.display()))
}

pub fn parse_bench_params(text: &str) -> Result<Vec<BenchPoint>, String> {
    let doc: serde_yaml::Value = serde_yaml::from_str(text).map_err(|e| e.to_string())?;
    let items: Vec<serde_yaml::Value> = match doc {
        serde_yaml::Value::Sequence(items) => items,
        serde_yaml::Value::Mapping(_) => {
            return Err(
                "vLLM's named form {name: {params}} is not supported: write a list of maps".into(),
            )
        }
        _ => return Err("expected a list of combinations (maps of bench options)".into()),
    };
    let mut points = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let serde_yaml::Value::Mapping(map) = item else {
            return Err(format!("combination {i}: expected a map of bench options"));
        };
        let mut point = BenchPoint {
            max_concurrency: 0,
            num_prompts: 0,
            random_input_len: 0,
            random_output_len: 0,
            params: Vec::new(),
        };
        for (k, v) in map {
            let key = k.as_str().unwrap_or_default().replace('-', "_");
            let n = v.as_u64().filter(|n| *n > 0).ok_or_else(|| {
                format!("combination {i}: `{key}` must be a positive integer, got {v:?}")
            })?;
            match key.as_str() {
                "max_concurrency" => point.max_concurrency = n,
                "num_prompts" => point.num_prompts = n,
                "random_input_len" => point.random_input_len = n,
                "random_output_len" => point.random_output_len = n,
                other => {
                    return Err(format!(
                        "combination {i}: `{other}` is not an option servetest's sweep sets (one of: {})",
                        BENCH_KEYS.join(", ")
                    ))
                }
            }
            point.params.push((key, n.to_string()));
        }
        for key in BENCH_KEYS {
            if !point.params.iter().any(|(k, _)| k == key) {
                return Err(format!("combination {i}: needs `{key}`"));
            }
        }
        points.push(point);
    }
    if points.is_empty() {
        return Err("no combinations".into());
    }
    Ok(points)
}

/// Inference check types: the seed's supported ones, and its TODO ones (warned about, not run).
pub const INFER_SUPPORTED: &[&str] = &["text-only", "single-image"];
pub const INFER_TODO: &[&str] = &["multi-image", "multi-modal", "video", "audio"];

impl ModelEntry {
    /// Upstream's executor rule (`model_worker.py`): ray when asked for or at 8+ devices, else mp.
    pub fn backend(&self) -> &'static str {
        let asked = self.serve_config.distributed_executor_backend.as_deref();
        if asked == Some("ray") || self.devices() >= 8 {
            "ray"
        } else {
            "mp"
        }
    }

    /// Lower-cased tags (`tags`, else `tag`); none means `dense`, as upstream.
    pub fn tag_set(&self) -> Vec<String> {
        match self.tags.as_ref().or(self.tag.as_ref()) {
            Some(t) if !t.is_empty() => t.clone(),
            _ => vec!["dense".into()],
        }
    }

    /// The one inference type upstream runs for this model: single-image wins over text-only.
    pub fn infer_kind(&self) -> Option<&'static str> {
        if self.infer_type.iter().any(|t| t == "single-image") {
            Some("single-image")
        } else if self.infer_type.iter().any(|t| t == "text-only") {
            Some("text-only")
        } else {
            None
        }
    }

    /// `name[tpXppYdpZ]`, the seed's inference file prefix.
    pub fn infer_label(&self) -> String {
        let s = &self.serve_config;
        format!("{}[tp{}pp{}dp{}]", self.name, s.tp, s.pp, s.dp)
    }
    /// `name_tpX_ppY_dpZ`, the seed's performance directory name.
    pub fn perf_label(&self) -> String {
        let s = &self.serve_config;
        format!("{}_tp{}_pp{}_dp{}", self.name, s.tp, s.pp, s.dp)
    }
    pub fn devices(&self) -> u64 {
        let s = &self.serve_config;
        s.tp * s.pp * s.dp
    }
}

fn known_fields(path: &str) -> Option<&'static [&'static str]> {
    use serde_aux::serde_introspection::serde_introspect as fields;
    let model = |p: &str| p.starts_with("models.") && p[7..].parse::<usize>().is_ok();
    let sub = |p: &str, tail: &str| {
        p.strip_prefix("models.")
            .and_then(|r| r.split_once('.'))
            .is_some_and(|(i, t)| i.parse::<usize>().is_ok() && t == tail)
    };
    Some(match path {
        "" => fields::<AggregatedSpec>(),
        "slurm" => fields::<ScriptSlurm>(),
        p if model(p) => fields::<ModelEntry>(),
        p if sub(p, "serve_config") => fields::<ServeConfig>(),
        p if sub(p, "benchmark") => fields::<BenchSettings>(),
        p if p.starts_with("cluster.") && p[8..].parse::<usize>().is_ok() => {
            fields::<ClusterNode>()
        }
        p if p.starts_with("cluster.") && p.ends_with(".ssh") => fields::<SshTarget>(),
        p if p.starts_with("cluster.") && p.ends_with(".ray") => fields::<RayNode>(),
        _ => return None,
    })
}

pub fn load(text: &str, _category: &str, _stem: &str) -> Loaded {
    let (spec, mut violations) = parse_spec::<AggregatedSpec>(text, known_fields);
    let Some(spec) = spec else {
        return (None, violations);
    };
    violations.extend(validate(&spec));
    (Some(std::sync::Arc::new(spec)), violations)
}

pub fn validate(spec: &AggregatedSpec) -> Vec<Violation> {
    let mut v = Vec::new();
    if spec.models.is_empty() {
        v.push(Violation::error("models", "needs at least one model"));
    }
    if !spec.infer && !spec.perf {
        v.push(Violation::error(
            "infer",
            "neither infer nor perf is on: nothing would run",
        ));
    }
    spec.slurm.refuse_nodes("aggregated", &mut v);
    if let Err(reason) = parse_slurm_time(&spec.slurm.job_time) {
        v.push(Violation::error("slurm.job_time", reason).with_value(&spec.slurm.job_time));
    }
    for (i, node) in spec.cluster.iter().flatten().enumerate() {
        let key = format!("cluster.{i}.ssh");
        let ssh = &node.ssh;
        match ssh.auth_type {
            AuthType::Key if ssh.private_key.is_none() => v.push(Violation::error(
                format!("{key}.private_key"),
                "auth_type key needs private_key",
            )),
            AuthType::Password if ssh.password.is_none() && ssh.password_env.is_none() => {
                v.push(Violation::error(
                    format!("{key}.password_env"),
                    "auth_type password needs password_env (or password)",
                ))
            }
            _ => {}
        }
        if ssh.password.is_some() {
            v.push(Violation::warning(
                format!("{key}.password"),
                "a plaintext password in a case file; use password_env (the value is never logged)",
            ));
        }
        if ssh.hostname.is_empty() || ssh.hostname.starts_with('-') {
            v.push(Violation::error(
                format!("{key}.hostname"),
                "must be a host name or address",
            ));
        }
        if ssh.user.is_empty() || ssh.user.starts_with('-') || ssh.user.contains('@') {
            v.push(Violation::error(
                format!("{key}.user"),
                "must be a plain user name",
            ));
        }
    }
    let mut names = std::collections::HashSet::new();
    for (i, m) in spec.models.iter().enumerate() {
        let key = format!("models.{i}");
        if !names.insert(m.name.as_str()) {
            // Upstream's own model.yaml repeats names (Qwen3-32B three times): it runs each.
            v.push(Violation::warning(
                format!("{key}.name"),
                format!(
                    "`{}` again: it runs again, and its logs and rows share the name",
                    m.name
                ),
            ));
        }
        let s = &m.serve_config;
        for (field, value) in [("tp", s.tp), ("pp", s.pp), ("dp", s.dp)] {
            if value == 0 {
                v.push(Violation::error(
                    format!("{key}.serve_config.{field}"),
                    "must be at least 1",
                ));
            }
        }
        if !(0.0..=1.0).contains(&s.gpu_memory_utilization) || s.gpu_memory_utilization == 0.0 {
            v.push(Violation::error(
                format!("{key}.serve_config.gpu_memory_utilization"),
                "must be in (0, 1]",
            ));
        }
        if let Some(b) = &s.distributed_executor_backend {
            if b != "ray" && b != "mp" {
                v.push(Violation::warning(
                    format!("{key}.serve_config.distributed_executor_backend"),
                    format!("`{b}`: upstream runs anything but `ray` as `mp` (so does servetest)"),
                ));
            }
        }
        match s.extra_argv() {
            Err(e) => v.push(Violation::error(
                format!("{key}.serve_config.extra_args"),
                e,
            )),
            Ok(words) => {
                if let serde_yaml::Value::Mapping(m) = &s.extra_args {
                    for flag in m.keys().filter_map(|k| k.as_str()) {
                        if !flag.starts_with('-') {
                            v.push(Violation::error(
                                format!("{key}.serve_config.extra_args"),
                                format!(
                                    "`{flag}`: flags are written with their dashes (`--{flag}`)"
                                ),
                            ));
                        }
                    }
                }
                if words.first().is_some_and(|w| !w.starts_with('-')) {
                    v.push(Violation::error(
                        format!("{key}.serve_config.extra_args"),
                        format!("`{}`: the first word must be a flag", words[0]),
                    ));
                }
            }
        }
        if m.tag.is_some() {
            v.push(Violation::warning(
                format!("{key}.tag"),
                if m.tags.is_some() {
                    "both `tag` and `tags`: `tags` is used (upstream reads only `tags`)"
                } else {
                    "upstream's code reads `tags` (the README's `tag` makes it `dense` there); \
                     servetest reads it as `tags`"
                },
            ));
        }
        if spec.infer && m.infer_kind().is_none() {
            v.push(Violation::warning(
                format!("{key}.infer_type"),
                format!(
                    "no supported type ({}): the model records a failed inference, as upstream",
                    INFER_SUPPORTED.join(", ")
                ),
            ));
        }
        for t in &m.infer_type {
            if INFER_TODO.contains(&t.as_str()) {
                v.push(Violation::warning(
                    format!("{key}.infer_type"),
                    format!("`{t}` is not supported yet, here or upstream: it is not run"),
                ));
            } else if !INFER_SUPPORTED.contains(&t.as_str()) {
                v.push(Violation::error(
                    format!("{key}.infer_type"),
                    format!(
                        "unknown type `{t}` (supported: {}; upstream's TODO: {})",
                        INFER_SUPPORTED.join(", "),
                        INFER_TODO.join(", ")
                    ),
                ));
            }
        }
        if let Some(mm) = s.is_multimodal {
            let image = m.infer_type.iter().any(|t| t == "single-image");
            if image && !mm {
                v.push(Violation::warning(
                    format!("{key}.serve_config.is_multimodal"),
                    "false, but infer_type asks for single-image",
                ));
            }
        }
        if m.benchmark.sweep_num_runs == 0 {
            v.push(Violation::error(
                format!("{key}.benchmark.sweep_num_runs"),
                "must be at least 1",
            ));
        }
        if m.benchmark.dataset_name != "random" {
            v.push(Violation::error(
                format!("{key}.benchmark.dataset_name"),
                "only `random` is supported (the seed's default)",
            ));
        }
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_defaults_labels_and_todo_types() {
        let text = "models:\n  - name: m\n    model_path: /m\n    infer_type: [text-only, video]\n    serve_config: {tp: 2, extra_args: {dtype: x}}\nslurm: {job_time: '00:10:00'}\n";
        let (spec, v) = load(text, "perf", "x");
        let spec = spec.unwrap_or_else(|| panic!("{v:?}"));
        let spec = spec
            .downcast::<AggregatedSpec>()
            .expect("an aggregated spec");
        let m = &spec.models[0];
        assert_eq!(
            m.backend(),
            "mp",
            "upstream: mp below 8 devices unless ray is asked for"
        );
        assert_eq!(
            (m.serve_config.swap_space, m.serve_config.max_model_len),
            (None, 4096)
        );
        assert_eq!(
            (m.benchmark.ignore_eos, m.benchmark.sweep_num_runs),
            (false, 3)
        );
        assert_eq!(m.infer_kind(), Some("text-only"));
        assert_eq!(m.infer_label(), "m[tp2pp1dp1]");
        assert_eq!(m.perf_label(), "m_tp2_pp1_dp1");
        let reasons: Vec<String> = v
            .iter()
            .map(|v| format!("{}: {}", v.key, v.reason))
            .collect();
        let video = v
            .iter()
            .find(|v| v.reason.contains("`video` is not supported yet"))
            .unwrap();
        assert!(
            !video.is_error(),
            "upstream accepts it and does not run it: {video:?}"
        );
        assert!(
            reasons
                .iter()
                .any(|r| r.contains("`dtype`: flags are written with their dashes")),
            "{reasons:?}"
        );
    }

    #[test]
    fn extra_args_keep_their_order_and_forms() {
        let cfg = |yaml: &str| -> ServeConfig { serde_yaml::from_str(yaml).unwrap() };
        let c = cfg("extra_args: {--z: 1, --a: null, --enforce-eager: '', --hf-overrides: '{\"x\": 1}', --flag: true}");
        assert_eq!(
            c.extra_argv().unwrap(),
            [
                "--z",
                "1",
                "--a",
                "--enforce-eager",
                "--hf-overrides",
                "{\"x\": 1}",
                "--flag",
                "True"
            ]
        );
        let c = cfg("extra_args: [--max-num-seqs, 8]");
        assert_eq!(c.extra_argv().unwrap(), ["--max-num-seqs", "8"]);
        let c = cfg("extra_args: \"--enable-expert-parallel --chat-template 'a b.jinja'\"");
        assert_eq!(
            c.extra_argv().unwrap(),
            ["--enable-expert-parallel", "--chat-template", "a b.jinja"]
        );
    }

    #[test]
    fn bench_params_are_upstreams_json_list_named_in_key_order() {
        let pts = parse_bench_params(
            r#"[{"max_concurrency": 1, "num_prompts": 5, "random_input_len": 128, "random_output_len": 128},
                {"num_prompts": 20, "max_concurrency": 4, "random_input_len": 1024, "random_output_len": 1024}]"#,
        )
        .unwrap();
        assert_eq!(pts.len(), 2, "explicit combinations, no product");
        assert_eq!(
            pts[0].dir_name(),
            "BENCH--max_concurrency=1-num_prompts=5-random_input_len=128-random_output_len=128"
        );
        assert_eq!(
            pts[1].dir_name(),
            "BENCH--num_prompts=20-max_concurrency=4-random_input_len=1024-random_output_len=1024"
        );
        assert_eq!(pts[1].key(), (4, 20, 1024, 1024));
        let e = parse_bench_params(r#"[{"max_concurrency": 1, "request_rate": 2}]"#).unwrap_err();
        assert!(
            e.contains("`request_rate` is not an option servetest's sweep sets"),
            "{e}"
        );
        let e = parse_bench_params(r#"[{"max_concurrency": 1}]"#).unwrap_err();
        assert!(e.contains("needs `num_prompts`"), "{e}");
    }
}
