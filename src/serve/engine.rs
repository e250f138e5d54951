//! Engine adapters: everything engine-specific about starting a server lives here, as data (argv,
//! health path, fatal log patterns), so the process and health-check code is shared by all engines.

use std::path::{Path, PathBuf};

use crate::exec::process::CommandSpec;

/// What a server start needs, independent of the engine.
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

pub trait Engine: Send + Sync {
    fn name(&self) -> &'static str;
    fn serve_command(&self, spec: &ServeSpec) -> CommandSpec;
    fn health_path(&self) -> &'static str {
        "/health"
    }
    /// Log lines that mean the server will never become healthy (fail early, not at the timeout).
    fn fatal_patterns(&self) -> &'static [&'static str];
}

/// vLLM's OpenAI-compatible server. Started as a module: the `vllm` console script of the CPU
/// wheel looks up a distribution named `vllm` and fails (see docs/engine.md).
pub struct Vllm;

impl Engine for Vllm {
    fn name(&self) -> &'static str {
        "vllm"
    }

    fn serve_command(&self, spec: &ServeSpec) -> CommandSpec {
        let mut args: Vec<String> = ["-m", "vllm.entrypoints.openai.api_server", "--model"]
            .map(str::to_owned)
            .to_vec();
        args.push(spec.model.display().to_string());
        args.extend(["--host".to_owned(), spec.host.clone()]);
        args.extend(["--port".to_owned(), spec.port.to_string()]);
        args.extend(spec.extra_args.iter().cloned());
        CommandSpec {
            program: spec.python.clone(),
            args,
            env: Vec::new(),
            cwd: None,
        }
    }

    fn fatal_patterns(&self) -> &'static [&'static str] {
        &[
            "Traceback (most recent call last)",
            "Engine core initialization failed",
            "Address already in use",
        ]
    }
}

pub fn by_name(name: &str) -> Option<Box<dyn Engine>> {
    match name {
        "vllm" => Some(Box::new(Vllm)),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vllm_command_is_argv_with_extra_args_last() {
        let spec = ServeSpec {
            model: "/m/tiny model".into(),
            host: "127.0.0.1".into(),
            port: 8011,
            python: "/venv/bin/python".into(),
            extra_args: vec!["--dtype".into(), "float32".into()],
        };
        let cmd = Vllm.serve_command(&spec);
        assert_eq!(cmd.program, PathBuf::from("/venv/bin/python"));
        assert_eq!(
            cmd.args,
            [
                "-m",
                "vllm.entrypoints.openai.api_server",
                "--model",
                "/m/tiny model",
                "--host",
                "127.0.0.1",
                "--port",
                "8011",
                "--dtype",
                "float32"
            ]
        );
    }
}
