//! TensorRT-LLM: `trtllm-serve MODEL --backend pytorch --config FILE` per worker, the worker's
//! `worker_config` written verbatim (typed and pass-through keys) as its extra LLM-API config, and
//! `trtllm-serve disaggregated -c CONFIG` as the router, as upstream's perf-sanity test does. A worker
//! whose step spans several nodes runs as MPI ranks, `trtllm-llmapi-launch trtllm-serve …` on every
//! rank, as upstream's disaggregated SLURM scripts start it (`start_worker.sh` under
//! `srun --mpi=pmix --ntasks=<world size> --ntasks-per-node=<GPUs per node>`).

use serde_yaml::{Mapping, Value};

use super::{
    config_file_server, worker_config_name, AggrLaunch, ClientLaunch, Engine, Launch, RouterLaunch,
    ServeSpec, WorkerLaunch,
};
use crate::exec::process::CommandSpec;

pub struct Trtllm;

fn servers(addrs: &[super::WorkerAddr]) -> Value {
    let mut m = Mapping::new();
    m.insert("num_instances".into(), (addrs.len() as u64).into());
    let urls: Vec<Value> = addrs
        .iter()
        .map(|a| super::host_port(&a.host, a.port).into())
        .collect();
    m.insert("urls".into(), Value::Sequence(urls));
    Value::Mapping(m)
}

/// `trtllm-llmapi-launch` beside the configured `trtllm-serve` (one installation), else on PATH.
fn llmapi_launch(trtllm_serve: &std::path::Path) -> std::path::PathBuf {
    match trtllm_serve.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.join("trtllm-llmapi-launch"),
        _ => "trtllm-llmapi-launch".into(),
    }
}

impl Engine for Trtllm {
    fn name(&self) -> &'static str {
        "trtllm"
    }

    fn log_name(&self) -> &'static str {
        "trtllm-serve"
    }

    fn serve_command(&self, spec: &ServeSpec) -> CommandSpec {
        let mut args = vec![
            spec.model.display().to_string(),
            "--backend".into(),
            "pytorch".into(),
            "--host".into(),
            spec.host.clone(),
            "--port".into(),
            spec.port.to_string(),
        ];
        args.extend(spec.extra_args.iter().cloned());
        CommandSpec {
            program: "trtllm-serve".into(),
            args,
            env: Vec::new(),
            cwd: None,
        }
    }

    fn worker(&self, w: &WorkerLaunch) -> Result<Launch, String> {
        let path = w
            .dir
            .join(worker_config_name("extra-llm-api-config", w.side, w.case));
        let mut launch = config_file_server(self, &w.at(), path, w.config)?;
        let command = &mut launch.command;
        command.program = w.tools.trtllm_serve.clone();
        if w.nodes > 1 {
            // Rank 0 serves; the others join its MPI world (trtllm-llmapi-launch decides by rank).
            command
                .args
                .insert(0, command.program.display().to_string());
            command.program = llmapi_launch(&w.tools.trtllm_serve);
        }
        Ok(launch)
    }

    /// Upstream's aggregated perf-sanity server: `trtllm-serve MODEL --backend B --config
    /// extra-llm-api-config.aggr.<name>.yml`, the server's engine keys written verbatim.
    fn aggregated(&self, a: &AggrLaunch) -> Result<Launch, String> {
        let path = a
            .dir
            .join(format!("extra-llm-api-config.aggr.{}.yml", a.name));
        let mut launch = config_file_server(self, &a.at(), path, a.config)?;
        let command = &mut launch.command;
        command.program = a.tools.trtllm_serve.clone();
        // serve_command's `--backend pytorch`, or the server config's own backend.
        if let Some(i) = command.args.iter().position(|x| x == "--backend") {
            command.args[i + 1] = a.backend.to_owned();
        }
        Ok(launch)
    }

    fn router(&self, r: &RouterLaunch) -> Result<Launch, String> {
        let mut m = Mapping::new();
        m.insert("hostname".into(), r.host.into());
        m.insert("port".into(), u64::from(r.port).into());
        m.insert("backend".into(), "pytorch".into());
        m.insert("context_servers".into(), servers(r.ctx));
        m.insert("generation_servers".into(), servers(r.gen));
        let path = r.dir.join(format!("disagg-config.{}.yaml", r.case));
        let text = serde_yaml::to_string(&m).map_err(|e| e.to_string())?;
        let timeout = r.worker_timeout.to_string();
        Ok(Launch {
            command: CommandSpec {
                program: r.tools.trtllm_serve.clone(),
                args: vec![
                    "disaggregated".into(),
                    "-c".into(),
                    path.display().to_string(),
                    "-t".into(),
                    timeout.clone(),
                    "-r".into(),
                    timeout,
                ],
                env: Vec::new(),
                cwd: Some(r.dir.to_path_buf()),
            },
            files: vec![(path, text)],
        })
    }

    fn engine_client(&self, c: &ClientLaunch) -> CommandSpec {
        let dir = c.result.parent().unwrap_or(c.result);
        let file = c
            .result
            .file_name()
            .map(|f| f.to_string_lossy().into_owned());
        let mut args: Vec<String> = [
            "-m",
            "tensorrt_llm.serve.scripts.benchmark_serving",
            "--backend",
            "openai",
            "--host",
            c.host,
            "--port",
            &c.port.to_string(),
            "--model",
            &c.model.display().to_string(),
            "--dataset-name",
            "random",
            "--random-ids",
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
            "--ignore-eos",
            "--percentile-metrics",
            "ttft,tpot,itl,e2el",
            "--save-result",
            "--result-dir",
            &dir.display().to_string(),
            "--result-filename",
            file.as_deref().unwrap_or("result.json"),
        ]
        .map(str::to_owned)
        .to_vec();
        if !c.streaming {
            args.push("--non-streaming".into());
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
            "MPI_ABORT",
            "CUDA error",
            "Address already in use",
        ]
    }
}
