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
//!     infer_type: [text-only]              # single-image too; the seed's TODO types are errors
//!     benchmark: {bench_param: configs/bench_params/tiny.yaml, dataset_name: random,
//!                 ignore_eos: true, sweep_num_runs: 1}
//!     extra_env: {VLLM_CPU_KVCACHE_SPACE: "1"}
//! infer: true
//! perf: true
//! gpus_per_node: 8                         # nodes = tp·pp·dp / gpus_per_node
//! slurm: {partition: p, account: a, job_time: "00:30:00"}
//! ```

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::load::parse_spec;
use super::script::ScriptSlurm;
use super::violation::Violation;
use super::{CaseSpec, Loaded};

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct AggregatedSpec {
    #[serde(default)]
    pub description: Option<String>,
    pub models: Vec<ModelEntry>,
    #[serde(default = "yes")]
    pub infer: bool,
    #[serde(default = "yes")]
    pub perf: bool,
    /// Text-only inference prompts (default: built in).
    #[serde(default)]
    pub text_case: Option<String>,
    #[serde(default)]
    pub image_case: Option<String>,
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
    #[serde(default)]
    pub serve_config: ServeConfig,
    pub infer_type: Vec<String>,
    #[serde(default)]
    pub benchmark: BenchSettings,
    #[serde(default)]
    pub extra_env: BTreeMap<String, String>,
}

fn timeout() -> u64 {
    600
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct ServeConfig {
    #[serde(default = "one")]
    pub tp: u64,
    #[serde(default = "one")]
    pub pp: u64,
    #[serde(default = "one")]
    pub dp: u64,
    #[serde(default = "ray")]
    pub distributed_executor_backend: String,
    #[serde(default = "mem")]
    pub gpu_memory_utilization: f64,
    /// The seed's default is 16, but current vLLM has no `--swap-space`: passed only when set.
    #[serde(default)]
    pub swap_space: Option<u64>,
    #[serde(default = "len")]
    pub max_model_len: u64,
    /// `--flag: value` pairs appended verbatim (`""` = a bare flag); never override the defaults.
    #[serde(default)]
    pub extra_args: BTreeMap<String, serde_yaml::Value>,
}

impl Default for ServeConfig {
    fn default() -> Self {
        ServeConfig {
            tp: 1,
            pp: 1,
            dp: 1,
            distributed_executor_backend: ray(),
            gpu_memory_utilization: mem(),
            swap_space: None,
            max_model_len: len(),
            extra_args: BTreeMap::new(),
        }
    }
}

fn one() -> u64 {
    1
}
fn ray() -> String {
    "ray".into()
}
fn mem() -> f64 {
    0.8
}
fn len() -> u64 {
    4096
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct BenchSettings {
    #[serde(default = "bench_default")]
    pub bench_param: String,
    #[serde(default = "random")]
    pub dataset_name: String,
    #[serde(default = "yes")]
    pub ignore_eos: bool,
    #[serde(default = "one")]
    pub sweep_num_runs: u64,
}

impl Default for BenchSettings {
    fn default() -> Self {
        BenchSettings {
            bench_param: bench_default(),
            dataset_name: random(),
            ignore_eos: true,
            sweep_num_runs: 1,
        }
    }
}

fn bench_default() -> String {
    "configs/bench_params/bench_default.yaml".into()
}
fn random() -> String {
    "random".into()
}

/// The bench-param file: every (max_concurrency, num_prompts) pair × every (input, output) length.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct BenchParams {
    pub concurrency_prompts: Vec<(u64, u64)>,
    pub lengths: Vec<(u64, u64)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct BenchPoint {
    pub max_concurrency: u64,
    pub num_prompts: u64,
    pub random_input_len: u64,
    pub random_output_len: u64,
}

impl BenchPoint {
    /// The seed's directory name for a combination.
    pub fn dir_name(&self) -> String {
        format!(
            "BENCH--max_concurrency={}-num_prompts={}-random_input_len={}-random_output_len={}",
            self.max_concurrency, self.num_prompts, self.random_input_len, self.random_output_len
        )
    }
}

impl BenchParams {
    pub fn points(&self) -> Vec<BenchPoint> {
        self.concurrency_prompts
            .iter()
            .flat_map(|&(c, n)| {
                self.lengths.iter().map(move |&(i, o)| BenchPoint {
                    max_concurrency: c,
                    num_prompts: n,
                    random_input_len: i,
                    random_output_len: o,
                })
            })
            .collect()
    }
}

/// Inference check types: the seed's supported ones, and its TODO ones (errors, never skipped).
pub const INFER_SUPPORTED: &[&str] = &["text-only", "single-image"];
pub const INFER_TODO: &[&str] = &["multi-image", "multi-modal", "video", "audio"];

impl ModelEntry {
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
    (Some(CaseSpec::Aggregated(Box::new(spec))), violations)
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
    if let Err(reason) = super::validate::parse_slurm_time(&spec.slurm.job_time) {
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
            v.push(Violation::error(
                format!("{key}.name"),
                format!("duplicate model name `{}`", m.name),
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
        if !["ray", "mp", "uni", "external_launcher"]
            .contains(&s.distributed_executor_backend.as_str())
        {
            v.push(Violation::error(
                format!("{key}.serve_config.distributed_executor_backend"),
                format!(
                    "`{}`: expected ray, mp, uni or external_launcher",
                    s.distributed_executor_backend
                ),
            ));
        }
        for flag in s.extra_args.keys() {
            if !flag.starts_with("--") {
                v.push(Violation::error(
                    format!("{key}.serve_config.extra_args"),
                    format!("`{flag}`: flags are written with their dashes (`--{flag}`)"),
                ));
            }
        }
        if m.infer_type.is_empty() && spec.infer {
            v.push(Violation::error(
                format!("{key}.infer_type"),
                "needs at least one type (required by the seed)",
            ));
        }
        for t in &m.infer_type {
            if INFER_TODO.contains(&t.as_str()) {
                v.push(Violation::error(
                    format!("{key}.infer_type"),
                    format!(
                        "`{t}` is not supported yet (supported: {})",
                        INFER_SUPPORTED.join(", ")
                    ),
                ));
            } else if !INFER_SUPPORTED.contains(&t.as_str()) {
                v.push(Violation::error(
                    format!("{key}.infer_type"),
                    format!(
                        "unknown type `{t}` (supported: {})",
                        INFER_SUPPORTED.join(", ")
                    ),
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
        let Some(CaseSpec::Aggregated(spec)) = spec else {
            panic!("{v:?}")
        };
        let m = &spec.models[0];
        assert_eq!(m.serve_config.distributed_executor_backend, "ray");
        assert_eq!(
            (m.serve_config.swap_space, m.serve_config.max_model_len),
            (None, 4096)
        );
        assert_eq!(m.infer_label(), "m[tp2pp1dp1]");
        assert_eq!(m.perf_label(), "m_tp2_pp1_dp1");
        let reasons: Vec<String> = v
            .iter()
            .map(|v| format!("{}: {}", v.key, v.reason))
            .collect();
        assert!(
            reasons
                .iter()
                .any(|r| r.contains("`video` is not supported yet")),
            "{reasons:?}"
        );
        assert!(
            reasons
                .iter()
                .any(|r| r.contains("`dtype`: flags are written with their dashes")),
            "{reasons:?}"
        );
    }

    #[test]
    fn bench_params_cross_pairs_and_name_dirs_as_the_seed() {
        let p: BenchParams = serde_yaml::from_str(
            "concurrency_prompts: [[1, 5], [4, 20]]\nlengths: [[128, 128], [1024, 1024]]\n",
        )
        .unwrap();
        let pts = p.points();
        assert_eq!(pts.len(), 4);
        assert_eq!(
            pts[1].dir_name(),
            "BENCH--max_concurrency=1-num_prompts=5-random_input_len=1024-random_output_len=1024"
        );
    }
}
