//! The commands and config files each adapter renders for the repository's own disagg/wideep cases,
//! pinned as snapshots (insta): a change to what an engine is told to run shows up in review.
//! TensorRT-LLM and SGLang cannot run here, so these snapshots, checked against their documented
//! CLIs, are what keeps their adapters honest.

use std::path::PathBuf;

use super::*;
use crate::case::discover::discover;

fn tools() -> Tools {
    Tools {
        python: "/venv/bin/python".into(),
        eval_python: "/venv/bin/python".into(),
        trtllm_serve: "trtllm-serve".into(),
        vllm_router: "vllm-router".into(),
        servetest: "/bin/servetest".into(),
    }
}

fn command_yaml(c: &CommandSpec) -> serde_yaml::Value {
    let mut m = serde_yaml::Mapping::new();
    let mut argv = vec![c.program.display().to_string()];
    argv.extend(c.args.iter().cloned());
    m.insert("argv".into(), argv.into());
    if let Some(cwd) = &c.cwd {
        m.insert("cwd".into(), cwd.display().to_string().into());
    }
    serde_yaml::Value::Mapping(m)
}

fn launch_yaml(l: Result<Launch, String>) -> serde_yaml::Value {
    match l {
        Err(e) => serde_yaml::Value::String(format!("error: {e}")),
        Ok(l) => {
            let mut m = match command_yaml(&l.command) {
                serde_yaml::Value::Mapping(m) => m,
                _ => unreachable!(),
            };
            for (path, text) in l.files {
                m.insert(
                    format!("file {}", path.display()).into(),
                    serde_yaml::Value::String(text),
                );
            }
            serde_yaml::Value::Mapping(m)
        }
    }
}

/// What a case's job would start, with fixed hosts, ports and paths.
fn rendered(spec: &crate::disagg::schema::DisaggSpec, case: &str) -> String {
    let engine = for_kind(spec.environment.engine);
    let tools = tools();
    let dir = PathBuf::from("/jobs/job-1");
    let model = PathBuf::from(format!(
        "/models/{}",
        spec.metadata
            .model_dir_name
            .as_deref()
            .unwrap_or(&spec.metadata.model_name)
    ));
    let worker = |side: Side, port: u16| {
        let bootstrap_port = engine.needs_bootstrap_port(side).then_some(port + 1000);
        let config = match side {
            Side::Ctx => &spec.worker_config.ctx,
            Side::Gen => &spec.worker_config.gen,
        };
        engine.worker(&WorkerLaunch {
            case,
            side,
            index: 0,
            model: &model,
            host: "10.0.0.1",
            port,
            bootstrap_port,
            config,
            dir: &dir,
            tools: &tools,
            nodes: config
                .gpus()
                .div_ceil(spec.hardware.gpus_per_node.max(1))
                .max(1),
        })
    };
    let addr = |side: Side, port: u16| WorkerAddr {
        host: "10.0.0.1".into(),
        port,
        bootstrap_port: engine.needs_bootstrap_port(side).then_some(port + 1000),
    };
    let ctx = [addr(Side::Ctx, 8001)];
    let gen = [addr(Side::Gen, 8002)];
    let router = engine.router(&RouterLaunch {
        case,
        host: "10.0.0.1",
        port: 8000,
        ctx: &ctx,
        gen: &gen,
        metrics_port: 9100,
        worker_timeout: 1800,
        dir: &dir,
        tools: &tools,
    });
    let client = engine.engine_client(&ClientLaunch {
        model: &model,
        host: "10.0.0.1",
        port: 8000,
        input_len: 1024,
        output_len: 1024,
        num_prompts: 40,
        concurrency: 4,
        streaming: true,
        result: &dir.join("bench.con4.json"),
        tools: &tools,
    });
    let mut doc = serde_yaml::Mapping::new();
    doc.insert("engine".into(), engine.name().into());
    doc.insert("ctx".into(), launch_yaml(worker(Side::Ctx, 8001)));
    doc.insert("gen".into(), launch_yaml(worker(Side::Gen, 8002)));
    doc.insert("router".into(), launch_yaml(router));
    doc.insert("engine_client".into(), command_yaml(&client));
    serde_yaml::to_string(&doc).unwrap()
}

#[test]
fn every_repository_case_renders_its_engine_commands_and_configs() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("test_configs");
    let found = discover(&[root]);
    let mut seen = 0;
    for case in &found.cases {
        let Some(spec) = case.disagg() else {
            continue;
        };
        seen += 1;
        insta::assert_snapshot!(case.name.clone(), rendered(spec, &case.name));
    }
    assert!(seen >= 10, "only {seen} disagg cases found");
}

#[test]
fn vllm_refuses_tensorrt_llm_only_settings_instead_of_dropping_them() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("test_configs");
    let found = discover(&[root]);
    let trt = found
        .cases
        .iter()
        .find_map(|c| c.disagg().filter(|s| s.worker_config.ctx.attention_dp()))
        .expect("a case with attention DP");
    let tools = tools();
    let err = Vllm
        .worker(&WorkerLaunch {
            case: "x",
            side: Side::Ctx,
            index: 0,
            model: "/m".as_ref(),
            host: "127.0.0.1",
            port: 1,
            bootstrap_port: None,
            config: &trt.worker_config.ctx,
            dir: "/d".as_ref(),
            tools: &tools,
            nodes: 1,
        })
        .unwrap_err();
    assert!(
        err.starts_with("worker_config.ctx.enable_attention_dp: not supported with engine vllm"),
        "{err}"
    );
}

#[test]
fn pass_through_keys_become_flags() {
    use serde_yaml::Value;
    let mut m = std::collections::BTreeMap::new();
    m.insert("mem_fraction_static".to_owned(), Value::from(0.8));
    m.insert("enable-metrics".to_owned(), Value::from(true));
    m.insert("disable-radix-cache".to_owned(), Value::from(false));
    m.insert(
        "cuda-graph-bs".to_owned(),
        Value::Sequence(vec![1.into(), 2.into()]),
    );
    let flags = flags_from_map(&m, FlagNames::Dashed, "worker_config").unwrap();
    assert_eq!(
        flags,
        [
            "--cuda-graph-bs",
            "1",
            "2",
            "--enable-metrics",
            "--mem-fraction-static",
            "0.8"
        ]
    );
    let nested = Value::Sequence(vec![Value::Sequence(vec![1.into()])]);
    let m = std::collections::BTreeMap::from([("bad".to_owned(), nested)]);
    assert_eq!(
        flags_from_map(&m, FlagNames::Dashed, "worker_config").unwrap_err(),
        "worker_config.bad: list items must be scalars"
    );
    let m = std::collections::BTreeMap::from([("num_fewshot".to_owned(), Value::from(5))]);
    assert_eq!(
        flags_from_map(&m, FlagNames::AsWritten, "extra_kwargs").unwrap(),
        ["--num_fewshot", "5"]
    );
}

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

/// What an aggr trial (upstream's aggregated perf-sanity server config) starts: the server with its
/// config file, and the native client's command for each client config.
fn rendered_aggr(spec: &crate::aggr::case::AggrSpec) -> String {
    let engine = for_kind(spec.environment.engine);
    let tools = tools();
    let dir = PathBuf::from("/jobs/job-1");
    let mut doc = serde_yaml::Mapping::new();
    doc.insert("engine".into(), engine.name().into());
    for (i, s) in spec.server_configs.iter().enumerate() {
        let model = PathBuf::from(format!(
            "/models/{}",
            s.model_name.as_deref().unwrap_or(&spec.metadata.model_name)
        ));
        let server = engine.aggregated(&AggrLaunch {
            name: &s.name,
            index: i,
            model: &model,
            host: "10.0.0.1",
            port: 8000,
            config: &s.engine,
            backend: s.backend.as_deref().unwrap_or("pytorch"),
            dir: &dir,
            tools: &tools,
        });
        doc.insert(format!("server {}", s.name).into(), launch_yaml(server));
        for (j, c) in s.client_configs.iter().enumerate() {
            let client = crate::aggr::client_command(
                &tools.servetest,
                "http://10.0.0.1:8000",
                &model,
                c,
                &dir.join(format!("bench.{i}.{j}.json")),
                &format!("{}-{}", s.name, c.name),
                Vec::new(),
            )
            .map(|c| command_yaml(&c))
            .unwrap_or_else(|e| format!("error: {e}").into());
            doc.insert(format!("client {}-{}", s.name, c.name).into(), client);
        }
    }
    serde_yaml::to_string(&doc).unwrap()
}

#[test]
fn every_aggr_case_renders_its_servers_and_clients() {
    // The repository's own case (vLLM) and upstream's files as fixtures (TensorRT-LLM), whole files:
    // each trial renders its one server config the same way.
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let mut roots = vec![root.join("test_configs")];
    for e in std::fs::read_dir(root.join("tests/fixtures/upstream-aggr")).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            roots.push(p);
        }
    }
    let mut seen = 0;
    for r in roots {
        let found = discover(&[r]);
        let mut files: Vec<&crate::case::Case> = found
            .cases
            .iter()
            .filter(|c| c.family.name == "aggr")
            .collect();
        files.dedup_by_key(|c| c.path.clone());
        for case in files {
            let whole = crate::case::Case::load_file(&case.path).unwrap();
            let spec = whole.spec_of::<crate::aggr::case::AggrSpec>().unwrap();
            let stem = case
                .path
                .file_stem()
                .unwrap()
                .to_string_lossy()
                .into_owned();
            seen += 1;
            insta::assert_snapshot!(format!("aggr_{stem}"), rendered_aggr(spec));
        }
    }
    assert!(seen >= 6, "only {seen} aggr files found");
}
