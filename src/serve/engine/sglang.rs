//! SGLang: `python -m sglang.launch_server --disaggregation-mode prefill|decode` per worker (options as
//! flags: pass-through keys become `--key value`), and `python -m sglang_router.launch_router
//! --pd-disaggregation` in front, given each prefill server's bootstrap port.

use super::{
    flags_from_map, host_port, AggrLaunch, ClientLaunch, Engine, FlagNames, Launch, RouterLaunch,
    ServeSpec, WorkerLaunch,
};
use crate::disagg::name::Side;
use crate::disagg::schema::WorkerConfig;
use crate::exec::process::CommandSpec;

pub struct Sglang;

/// `cache_transceiver_config.backend` → `--disaggregation-transfer-backend`.
const BACKENDS: &[&str] = &["MOONCAKE", "NIXL", "ASCEND"];

/// A TensorRT-LLM-style config (`key` names it in errors) as SGLang's server flags.
fn server_flags(c: &WorkerConfig, key: &str) -> Result<Vec<String>, String> {
    if c.moe_config.is_some() || c.speculative_config.is_some() {
        return Err(format!(
            "{key}: moe_config/speculative_config are TensorRT-LLM settings; write SGLang's own \
                 options (e.g. speculative-algorithm) instead"
        ));
    }
    let mut extra: Vec<String> = Vec::new();
    extra.extend(["--tp-size".into(), c.tp().to_string()]);
    if c.pp() > 1 {
        extra.extend(["--pp-size".into(), c.pp().to_string()]);
    }
    if c.attention_dp() {
        extra.extend([
            "--enable-dp-attention".into(),
            "--dp-size".into(),
            c.tp().to_string(),
        ]);
    }
    if let Some(ep) = c.moe_expert_parallel_size.filter(|ep| *ep > 1) {
        extra.extend(["--ep-size".into(), ep.to_string()]);
    }
    if let Some(v) = c.max_batch_size {
        extra.extend(["--max-running-requests".into(), v.to_string()]);
    }
    if let Some(v) = c.max_num_tokens {
        extra.extend(["--max-prefill-tokens".into(), v.to_string()]);
    }
    if let Some(v) = c.max_seq_len {
        extra.extend(["--context-length".into(), v.to_string()]);
    }
    extra.extend(flags_from_map(&c.extra, FlagNames::Dashed, key)?);
    Ok(extra)
}

impl Engine for Sglang {
    fn name(&self) -> &'static str {
        "sglang"
    }

    fn log_name(&self) -> &'static str {
        "sglang"
    }

    fn serve_command(&self, spec: &ServeSpec) -> CommandSpec {
        let mut args: Vec<String> = vec![
            "-m".into(),
            "sglang.launch_server".into(),
            "--model-path".into(),
            spec.model.display().to_string(),
            "--host".into(),
            spec.host.clone(),
            "--port".into(),
            spec.port.to_string(),
        ];
        args.extend(spec.extra_args.iter().cloned());
        CommandSpec {
            program: spec.python.clone(),
            args,
            env: Vec::new(),
            cwd: None,
        }
    }

    fn needs_bootstrap_port(&self, side: Side) -> bool {
        side == Side::Ctx
    }

    fn worker(&self, w: &WorkerLaunch) -> Result<Launch, String> {
        let c = w.config;
        let side = if w.side == Side::Ctx { "ctx" } else { "gen" };
        let backend = c
            .transceiver_backend()
            .unwrap_or("MOONCAKE")
            .to_ascii_uppercase();
        if !BACKENDS.contains(&backend.as_str()) {
            return Err(format!(
                "worker_config.{side}.cache_transceiver_config.backend: `{backend}` is not an SGLang \
                 transfer backend (expected one of {})",
                BACKENDS.join(", ")
            ));
        }
        let mut extra = vec![
            "--disaggregation-mode".to_owned(),
            if w.side == Side::Ctx {
                "prefill"
            } else {
                "decode"
            }
            .to_owned(),
            "--disaggregation-transfer-backend".to_owned(),
            backend.to_ascii_lowercase(),
        ];
        if let Some(port) = w.bootstrap_port {
            extra.extend(["--disaggregation-bootstrap-port".into(), port.to_string()]);
        }
        let transceiver_extra = c
            .cache_transceiver_config
            .as_ref()
            .map(|t| t.extra.iter().collect::<Vec<_>>())
            .unwrap_or_default();
        if !transceiver_extra.is_empty() {
            return Err(format!(
                "worker_config.{side}.cache_transceiver_config: only `backend` applies to SGLang"
            ));
        }
        extra.extend(server_flags(c, &format!("worker_config.{side}"))?);
        let mut command = self.serve_command(&ServeSpec {
            model: w.model.to_path_buf(),
            host: w.host.to_owned(),
            port: w.port,
            python: w.tools.python.clone(),
            extra_args: extra,
        });
        command.cwd = Some(w.dir.to_path_buf());
        Ok(Launch {
            command,
            files: Vec::new(),
        })
    }

    fn aggregated(&self, a: &AggrLaunch) -> Result<Launch, String> {
        let mut command = self.serve_command(&ServeSpec {
            model: a.model.to_path_buf(),
            host: a.host.to_owned(),
            port: a.port,
            python: a.tools.python.clone(),
            extra_args: server_flags(a.config, &format!("server_configs.{}", a.index))?,
        });
        command.cwd = Some(a.dir.to_path_buf());
        Ok(Launch {
            command,
            files: Vec::new(),
        })
    }

    fn router(&self, r: &RouterLaunch) -> Result<Launch, String> {
        let mut args: Vec<String> = vec![
            "-m".into(),
            "sglang_router.launch_router".into(),
            "--pd-disaggregation".into(),
            "--host".into(),
            r.host.to_owned(),
            "--port".into(),
            r.port.to_string(),
            "--worker-startup-timeout-secs".into(),
            r.worker_timeout.to_string(),
            "--prometheus-host".into(),
            r.host.to_owned(),
            "--prometheus-port".into(),
            r.metrics_port.to_string(),
        ];
        for w in r.ctx {
            args.extend(["--prefill".into(), w.url()]);
            if let Some(b) = w.bootstrap_port {
                args.push(b.to_string());
            }
        }
        for w in r.gen {
            args.extend(["--decode".into(), w.url()]);
        }
        Ok(Launch {
            command: CommandSpec {
                program: r.tools.python.clone(),
                args,
                env: Vec::new(),
                cwd: Some(r.dir.to_path_buf()),
            },
            files: Vec::new(),
        })
    }

    fn engine_client(&self, c: &ClientLaunch) -> CommandSpec {
        let mut args: Vec<String> = [
            "-m",
            "sglang.bench_serving",
            "--backend",
            "sglang-oai",
            "--base-url",
            &format!("http://{}", host_port(c.host, c.port)),
            "--model",
            &c.model.display().to_string(),
            "--dataset-name",
            "random",
            "--random-input-len",
            &c.input_len.to_string(),
            "--random-output-len",
            &c.output_len.to_string(),
            "--random-range-ratio",
            "1",
            "--num-prompts",
            &c.num_prompts.to_string(),
            "--max-concurrency",
            &c.concurrency.to_string(),
            "--output-file",
            &c.result.display().to_string(),
        ]
        .map(str::to_owned)
        .to_vec();
        if !c.streaming {
            args.push("--disable-stream".into());
        }
        CommandSpec {
            program: c.tools.python.clone(),
            args,
            env: Vec::new(),
            cwd: None,
        }
    }

    fn fatal_patterns(&self) -> &'static [&'static str] {
        &[
            "Traceback (most recent call last)",
            "Address already in use",
            "CUDA out of memory",
        ]
    }
}
