//! vLLM: `python -m vllm.entrypoints.openai.api_server … --config FILE` per worker (the `vllm`
//! console script of the CPU wheel is broken, see docs/engine.md), KV handed from prefill to decode
//! by a KV connector, and the `vllm-router` package in PD mode in front.

use serde_yaml::{Mapping, Value};

use super::{
    config_file_server, host_port, worker_config_name, AggrLaunch, ClientLaunch, Engine, Launch,
    RouterLaunch, ServeSpec, WorkerLaunch,
};
use crate::disagg::name::Side;
use crate::disagg::schema::WorkerConfig;
use crate::exec::process::CommandSpec;

pub struct Vllm;

/// `cache_transceiver_config.backend` → vLLM KV connector. `STORAGE` is vLLM's shared-storage
/// connector (`ExampleConnector`): KV goes through files in the job directory, which works on CPU.
const CONNECTORS: &[(&str, &str)] = &[
    ("NIXL", "NixlConnector"),
    ("MOONCAKE", "MooncakeConnector"),
    ("LMCACHE", "LMCacheConnectorV1"),
    ("STORAGE", "ExampleConnector"),
];

/// Runs `vllm bench serve` through vLLM's own parser and main (the console script is broken).
const BENCH_SERVE: &str = "import sys\nfrom vllm.benchmarks import serve\nfrom vllm.utils.argparse_utils import FlexibleArgumentParser\np = FlexibleArgumentParser()\nserve.add_cli_args(p)\nserve.main(p.parse_args(sys.argv[1:]))";

impl Vllm {
    /// The worker's vLLM config file: typed keys mapped to vLLM's option names, pass-through keys
    /// verbatim. TensorRT-LLM-only settings that vLLM has no equivalent for are refused, not dropped.
    fn config(w: &WorkerLaunch) -> Result<Mapping, String> {
        Self::mapped(
            w.config,
            &format!("worker_config.{}", side_key(w.side)),
            Some(&|| kv_transfer_config(w)),
        )
    }

    /// A TensorRT-LLM-style config (`key` names it in errors) as vLLM's options: typed keys mapped
    /// to vLLM's names, then a disagg worker's `kv-transfer-config`, then pass-through keys verbatim
    /// (they win); TensorRT-LLM-only settings refused.
    fn mapped(
        c: &WorkerConfig,
        key: &str,
        kv: Option<&dyn Fn() -> Result<String, String>>,
    ) -> Result<Mapping, String> {
        let unsupported = |field: &str, hint: &str| {
            Err(format!(
                "{key}.{field}: not supported with engine vllm ({hint})"
            ))
        };
        if c.attention_dp() {
            return unsupported(
                "enable_attention_dp",
                "set data-parallel-size and enable-expert-parallel instead",
            );
        }
        if c.cp() > 1 {
            return unsupported(
                "context_parallel_size",
                "set decode-context-parallel-size instead",
            );
        }
        if c.moe_config.is_some() {
            return unsupported("moe_config", "it is a TensorRT-LLM setting");
        }
        let mut m = Mapping::new();
        let mut put = |k: &str, v: Value| {
            m.insert(Value::String(k.to_owned()), v);
        };
        put("tensor-parallel-size", c.tp().into());
        put("pipeline-parallel-size", c.pp().into());
        if c.moe_expert_parallel_size.is_some_and(|ep| ep > 1) {
            put("enable-expert-parallel", true.into());
        }
        if let Some(v) = c.max_batch_size {
            put("max-num-seqs", v.into());
        }
        if let Some(v) = c.max_num_tokens {
            put("max-num-batched-tokens", v.into());
        }
        if let Some(v) = c.max_seq_len {
            put("max-model-len", v.into());
        }
        if let Some(spec) = &c.speculative_config {
            let json = serde_json::to_string(spec).map_err(|e| e.to_string())?;
            put("speculative-config", json.into());
        }
        if let Some(kv) = kv {
            put("kv-transfer-config", kv()?.into());
        }
        for (k, v) in &c.extra {
            m.insert(Value::String(k.clone()), v.clone());
        }
        Ok(m)
    }
}

fn side_key(side: Side) -> &'static str {
    match side {
        Side::Ctx => "ctx",
        Side::Gen => "gen",
    }
}

/// vLLM's `--kv-transfer-config` JSON for one worker.
fn kv_transfer_config(w: &WorkerLaunch) -> Result<String, String> {
    let side = side_key(w.side);
    let cfg = w.config.cache_transceiver_config.as_ref();
    let backend = cfg
        .and_then(|c| c.backend.as_deref())
        .unwrap_or("NIXL")
        .to_ascii_uppercase();
    let mut extra = serde_json::Map::new();
    let mut connector = None;
    for (k, v) in cfg.map(|c| &c.extra).into_iter().flatten() {
        let v = serde_json::to_value(v).map_err(|e| e.to_string())?;
        if k == "kv_connector" {
            connector = v.as_str().map(str::to_owned);
        } else {
            extra.insert(k.clone(), v);
        }
    }
    let connector = match connector {
        Some(c) => c,
        None => CONNECTORS
            .iter()
            .find(|(b, _)| *b == backend)
            .map(|(_, c)| (*c).to_owned())
            .ok_or_else(|| {
                format!(
                    "worker_config.{side}.cache_transceiver_config.backend: `{backend}` has no vLLM \
                     KV connector (expected one of {}, or set kv_connector)",
                    CONNECTORS
                        .iter()
                        .map(|(b, _)| *b)
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            })?,
    };
    let role = if connector == "ExampleConnector" {
        // The shared-storage connector saves and loads on every instance.
        "kv_both"
    } else {
        match w.side {
            Side::Ctx => "kv_producer",
            Side::Gen => "kv_consumer",
        }
    };
    if connector == "ExampleConnector" && !extra.contains_key("shared_storage_path") {
        extra.insert(
            "shared_storage_path".into(),
            w.dir.join("kv-store").display().to_string().into(),
        );
    }
    let doc = serde_json::json!({
        "kv_connector": connector,
        "kv_role": role,
        "kv_connector_extra_config": extra,
    });
    Ok(doc.to_string())
}

impl Engine for Vllm {
    fn name(&self) -> &'static str {
        "vllm"
    }

    fn log_name(&self) -> &'static str {
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

    fn worker(&self, w: &WorkerLaunch) -> Result<Launch, String> {
        let config = Self::config(w)?;
        let path = w
            .dir
            .join(worker_config_name("vllm-config", w.side, w.case));
        config_file_server(self, &w.at(), path, &config)
    }

    fn aggregated(&self, a: &AggrLaunch) -> Result<Launch, String> {
        let config = Self::mapped(a.config, &format!("server_configs.{}", a.index), None)?;
        let path = a.dir.join(format!("vllm-config.aggr.{}.yml", a.name));
        config_file_server(self, &a.at(), path, &config)
    }

    fn router(&self, r: &RouterLaunch) -> Result<Launch, String> {
        let mut args: Vec<String> = vec![
            "--host".into(),
            r.host.to_owned(),
            "--port".into(),
            r.port.to_string(),
            "--vllm-pd-disaggregation".into(),
            "--policy".into(),
            "round_robin".into(),
            "--worker-startup-timeout-secs".into(),
            r.worker_timeout.to_string(),
            // Its default re-checks unready workers every 30 s, which dominates a small job's start.
            "--worker-startup-check-interval".into(),
            "2".into(),
            // An address, not a name: vllm-router binds its metrics on 0.0.0.0 when given a host
            // name here (seen on the multi-node cluster; tests/multinode.rs samples listeners).
            "--prometheus-host".into(),
            crate::netscope::bind_ip(r.host),
            "--prometheus-port".into(),
            r.metrics_port.to_string(),
        ];
        for w in r.ctx {
            args.extend(["--prefill".into(), w.url()]);
        }
        for w in r.gen {
            args.extend(["--decode".into(), w.url()]);
        }
        Ok(Launch {
            command: CommandSpec {
                program: r.tools.vllm_router.clone(),
                args,
                env: Vec::new(),
                cwd: Some(r.dir.to_path_buf()),
            },
            files: Vec::new(),
        })
    }

    fn engine_client(&self, c: &ClientLaunch) -> CommandSpec {
        let dir = c.result.parent().unwrap_or(c.result);
        let file = c
            .result
            .file_name()
            .map(|f| f.to_string_lossy().into_owned());
        let mut args: Vec<String> = vec!["-c".into(), BENCH_SERVE.into()];
        args.extend(
            [
                "--backend",
                "vllm",
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
                "--num-prompts",
                &c.num_prompts.to_string(),
                "--max-concurrency",
                &c.concurrency.to_string(),
                "--ignore-eos",
                "--percentile-metrics",
                "ttft,tpot,itl,e2el",
                "--metric-percentiles",
                "50,99",
                "--save-result",
                "--result-dir",
                &dir.display().to_string(),
                "--result-filename",
                file.as_deref().unwrap_or("result.json"),
            ]
            .map(str::to_owned),
        );
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
            "Engine core initialization failed",
            "Address already in use",
        ]
    }
}
