//! Engine adapters: everything engine-specific about serving lives here, as data (argv, config files,
//! health path, fatal log patterns), so process handling, health checks and the role choreography
//! are shared by all engines. One adapter per engine: TensorRT-LLM, vLLM, SGLang.

pub mod known_args;
mod sglang;
mod trtllm;
mod vllm;

use std::path::{Path, PathBuf};

pub use sglang::Sglang;
pub use trtllm::Trtllm;
pub use vllm::Vllm;

use crate::disagg::name::Side;
use crate::disagg::schema::{EngineKind, WorkerConfig};
use crate::exec::process::CommandSpec;

/// What a single server start needs (`servetest serve`), independent of the engine.
#[derive(Debug, Clone)]
pub struct ServeSpec {
    pub model: PathBuf,
    pub host: String,
    pub port: u16,
    /// Interpreter of the engine's virtualenv (Python engines).
    pub python: PathBuf,
    /// Passed to the engine verbatim, after the adapter's own arguments.
    pub extra_args: Vec<String>,
}

/// Where the engine's programs are. Resolved once per role from the environment (see `env.rs`).
#[derive(Debug, Clone)]
pub struct Tools {
    /// The engine virtualenv's interpreter (vLLM, SGLang, TensorRT-LLM's Python entry points).
    pub python: PathBuf,
    /// The interpreter with lm-eval (accuracy cases): `$SERVETEST_EVAL_PYTHON`, else the engine venv's.
    pub eval_python: PathBuf,
    pub trtllm_serve: PathBuf,
    pub vllm_router: PathBuf,
    /// The servetest binary (native benchmark client).
    pub servetest: PathBuf,
}

/// One CTX (prefill) or GEN (decode) server of a disaggregated case.
#[derive(Debug, Clone)]
pub struct WorkerLaunch<'a> {
    pub case: &'a str,
    pub side: Side,
    pub index: u64,
    pub model: &'a Path,
    pub host: &'a str,
    pub port: u16,
    /// A second port for engines whose prefill servers hand KV over a bootstrap server (SGLang).
    pub bootstrap_port: Option<u16>,
    pub config: &'a WorkerConfig,
    /// This job's directory: engine config files and a shared KV store go here.
    pub dir: &'a Path,
    pub tools: &'a Tools,
    /// The nodes this worker's step spans. Over 1, engines that launch across nodes do so (the
    /// TensorRT-LLM adapter: MPI ranks under `trtllm-llmapi-launch`).
    pub nodes: u64,
}

/// One aggregated server of upstream's perf-sanity files (a `server_configs` entry).
#[derive(Debug, Clone)]
pub struct AggrLaunch<'a> {
    /// The server config's name: its config file is named after it, as upstream's.
    pub name: &'a str,
    /// Its position in the case (for error messages).
    pub index: usize,
    pub model: &'a Path,
    pub host: &'a str,
    pub port: u16,
    pub config: &'a WorkerConfig,
    /// `trtllm-serve --backend` (TensorRT-LLM only).
    pub backend: &'a str,
    pub dir: &'a Path,
    pub tools: &'a Tools,
}

/// Where one server listens and runs: what `config_file_server` needs besides its file.
pub(crate) struct ServeAt<'a> {
    pub model: &'a Path,
    pub host: &'a str,
    pub port: u16,
    pub tools: &'a Tools,
    pub dir: &'a Path,
}

/// `serve_command` with `--config PATH`, run in the job directory; `config` is written to `path`
/// before the server starts (a disagg worker's or an aggregated server's config file).
pub(crate) fn config_file_server(
    engine: &dyn Engine,
    at: &ServeAt,
    path: PathBuf,
    config: &impl serde::Serialize,
) -> Result<Launch, String> {
    let text = serde_yaml::to_string(config).map_err(|e| e.to_string())?;
    let mut command = engine.serve_command(&ServeSpec {
        model: at.model.to_path_buf(),
        host: at.host.to_owned(),
        port: at.port,
        python: at.tools.python.clone(),
        extra_args: vec!["--config".into(), path.display().to_string()],
    });
    command.cwd = Some(at.dir.to_path_buf());
    Ok(Launch {
        command,
        files: vec![(path, text)],
    })
}

impl WorkerLaunch<'_> {
    pub(crate) fn at(&self) -> ServeAt<'_> {
        ServeAt {
            model: self.model,
            host: self.host,
            port: self.port,
            tools: self.tools,
            dir: self.dir,
        }
    }
}

impl AggrLaunch<'_> {
    pub(crate) fn at(&self) -> ServeAt<'_> {
        ServeAt {
            model: self.model,
            host: self.host,
            port: self.port,
            tools: self.tools,
            dir: self.dir,
        }
    }
}

/// A worker as the router sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerAddr {
    pub host: String,
    pub port: u16,
    pub bootstrap_port: Option<u16>,
}

impl WorkerAddr {
    pub fn url(&self) -> String {
        format!("http://{}", host_port(&self.host, self.port))
    }
}

/// `host:port`, with IPv6 literals bracketed.
pub fn host_port(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

#[derive(Debug, Clone)]
pub struct RouterLaunch<'a> {
    pub case: &'a str,
    pub host: &'a str,
    pub port: u16,
    pub ctx: &'a [WorkerAddr],
    pub gen: &'a [WorkerAddr],
    /// A port for the router's own Prometheus exporter (routers that have one bind a fixed default,
    /// which collides when two jobs share a node).
    pub metrics_port: u16,
    /// Seconds the router may wait for its workers.
    pub worker_timeout: u64,
    pub dir: &'a Path,
    pub tools: &'a Tools,
}

/// One run of the engine's own serving benchmark at one concurrency.
#[derive(Debug, Clone)]
pub struct ClientLaunch<'a> {
    pub model: &'a Path,
    pub host: &'a str,
    pub port: u16,
    pub input_len: u64,
    pub output_len: u64,
    pub num_prompts: u64,
    pub concurrency: u64,
    pub streaming: bool,
    /// Where the result JSON goes.
    pub result: &'a Path,
    pub tools: &'a Tools,
}

/// A command plus the config files it reads (written by the role before starting it).
#[derive(Debug, Clone)]
pub struct Launch {
    pub command: CommandSpec,
    pub files: Vec<(PathBuf, String)>,
}

pub trait Engine: Send + Sync {
    fn name(&self) -> &'static str;
    /// Server logs are named `<log_name>.<idx>.<ROLE>.log`.
    fn log_name(&self) -> &'static str;
    /// A plain server (`servetest serve`).
    fn serve_command(&self, spec: &ServeSpec) -> CommandSpec;
    /// A CTX/GEN server of a disaggregated case.
    fn worker(&self, w: &WorkerLaunch) -> Result<Launch, String>;
    /// Whether prefill servers need a bootstrap port (handed to the router).
    fn needs_bootstrap_port(&self, _side: Side) -> bool {
        false
    }
    /// An aggregated server (upstream's aggregated perf-sanity).
    fn aggregated(&self, a: &AggrLaunch) -> Result<Launch, String>;
    /// The disagg router in front of the workers.
    fn router(&self, r: &RouterLaunch) -> Result<Launch, String>;
    /// The engine's own serving benchmark (`benchmark.client: engine`).
    fn engine_client(&self, c: &ClientLaunch) -> CommandSpec;
    fn health_path(&self) -> &'static str {
        "/health"
    }
    /// Log lines that mean the server will never become healthy (fail early, not at the timeout).
    fn fatal_patterns(&self) -> &'static [&'static str];
}

pub fn for_kind(kind: EngineKind) -> Box<dyn Engine> {
    match kind {
        EngineKind::Trtllm => Box::new(Trtllm),
        EngineKind::Vllm => Box::new(Vllm),
        EngineKind::Sglang => Box::new(Sglang),
    }
}

pub fn by_name(name: &str) -> Option<Box<dyn Engine>> {
    match name {
        "vllm" => Some(Box::new(Vllm)),
        "trtllm" => Some(Box::new(Trtllm)),
        "sglang" => Some(Box::new(Sglang)),
        _ => None,
    }
}

/// The engine virtualenv's interpreter: `$SERVETEST_ENGINE_PYTHON`, else `.venv/engine/bin/python`
/// under `root` when scripts/engine-setup created it, else `python3` from PATH.
pub fn default_python(root: &Path) -> PathBuf {
    if let Some(p) = crate::env::engine_python() {
        return p;
    }
    let venv = root.join(".venv/engine/bin/python");
    if venv.exists() {
        venv
    } else {
        PathBuf::from("python3")
    }
}

impl Tools {
    /// Programs from the environment, else the project's virtualenvs under `root`, else PATH.
    pub fn resolve(root: &Path) -> Tools {
        let router = root.join(".venv/router/bin/vllm-router");
        let venv = root.join(".venv/engine/bin/python");
        Tools {
            python: default_python(root),
            eval_python: crate::env::eval_python().unwrap_or_else(|| {
                if venv.exists() {
                    venv
                } else {
                    default_python(root)
                }
            }),
            trtllm_serve: crate::env::trtllm_serve().unwrap_or_else(|| "trtllm-serve".into()),
            vllm_router: crate::env::vllm_router().unwrap_or_else(|| {
                if router.exists() {
                    router
                } else {
                    "vllm-router".into()
                }
            }),
            servetest: std::env::current_exe().unwrap_or_else(|_| "servetest".into()),
        }
    }
}

/// The config file name upstream uses for a worker: `extra-llm-api-config.<ctx|gen>.<case>.yml`
/// (other engines put their own prefix in front).
pub fn worker_config_name(prefix: &str, side: Side, case: &str) -> String {
    let side = match side {
        Side::Ctx => "ctx",
        Side::Gen => "gen",
    };
    format!("{prefix}.{side}.{case}.yml")
}

/// How a YAML key is spelled as a command-line flag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlagNames {
    /// `mem_fraction_static` → `--mem-fraction-static` (SGLang, vLLM).
    Dashed,
    /// `num_fewshot` → `--num_fewshot` (lm-eval, whose flags keep underscores).
    AsWritten,
}

/// `key: value` pass-through entries as `--key value` flags — SGLang worker options (it has no config
/// file), SGLang latency options, lm-eval `extra_kwargs`: `true` is a bare flag, `false`/null are
/// left out, lists repeat values, mappings become JSON. `what` names the entries in errors.
pub fn flags_from_map<'a>(
    entries: impl IntoIterator<Item = (&'a String, &'a serde_yaml::Value)>,
    names: FlagNames,
    what: &str,
) -> Result<Vec<String>, String> {
    use serde_yaml::Value;
    let mut out = Vec::new();
    for (key, value) in entries {
        let flag = match names {
            FlagNames::Dashed => format!("--{}", key.replace('_', "-")),
            FlagNames::AsWritten => format!("--{key}"),
        };
        match value {
            Value::Null | Value::Bool(false) => {}
            Value::Bool(true) => out.push(flag),
            Value::Number(n) => out.extend([flag, n.to_string()]),
            Value::String(s) => out.extend([flag, s.clone()]),
            Value::Sequence(items) => {
                out.push(flag);
                for item in items {
                    out.push(
                        scalar_text(item)
                            .ok_or_else(|| format!("{what}.{key}: list items must be scalars"))?,
                    );
                }
            }
            Value::Mapping(_) | Value::Tagged(_) => {
                let json =
                    serde_json::to_string(value).map_err(|e| format!("{what}.{key}: {e}"))?;
                out.extend([flag, json]);
            }
        }
    }
    Ok(out)
}

fn scalar_text(v: &serde_yaml::Value) -> Option<String> {
    use serde_yaml::Value;
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests;
