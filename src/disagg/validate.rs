//! Semantic rules for disagg/wideep cases, run after the file deserialized. Every rule adds to one
//! list, so a user sees every problem of a file at once.
//!
//! Upstream's validator (TensorRT-LLM `config_validator.py`) and seed 001 disagree in two places;
//! the choices made here:
//! - MTP token budget: gen `max_num_tokens >= max_batch_size * (mtp + 1)` is required (upstream's
//!   refinement of the seed's "equal"); a larger budget is only a warning.
//! - Sequence lengths: ctx `max_seq_len > input_length` and gen `max_seq_len > input + output`. The
//!   seed's literal "both > input + output" would reject upstream's own 1k1k configs whose ctx
//!   workers only ever see the prompt.

use super::name::lengths;
use super::schema::{DisaggSpec, ThresholdType, WorkerConfig};
use crate::case::common::{check_metrics_pattern, parse_env_assignments, parse_slurm_time};
use crate::case::violation::Violation;

pub fn validate(spec: &DisaggSpec, category: &str) -> Vec<Violation> {
    let mut out = Vec::new();
    mtp_token_budget(spec, &mut out);
    streaming(spec, &mut out);
    sequence_lengths(spec, &mut out);
    concurrency(spec, &mut out);
    positive_sizes(spec, &mut out);
    gpu_layout(spec, &mut out);
    job_time(spec, &mut out);
    env_var_strings(spec, &mut out);
    benchmark_knobs(spec, category, &mut out);
    metrics_patterns(spec, &mut out);
    upstream_only_keys(spec, &mut out);
    engine_keys(spec, &mut out);
    if category == "accuracy" {
        accuracy(spec, &mut out);
    }
    out
}

fn sides(spec: &DisaggSpec) -> [(&'static str, &WorkerConfig); 2] {
    [
        ("ctx", &spec.worker_config.ctx),
        ("gen", &spec.worker_config.gen),
    ]
}

fn mtp_token_budget(spec: &DisaggSpec, out: &mut Vec<Violation>) {
    let gen = &spec.worker_config.gen;
    let mtp = gen.mtp_layers();
    let (Some(tokens), Some(batch)) = (gen.max_num_tokens, gen.max_batch_size) else {
        return;
    };
    if mtp == 0 {
        return;
    }
    let needed = batch * (mtp + 1);
    let key = "worker_config.gen.max_num_tokens";
    if tokens < needed {
        out.push(
            Violation::error(
                key,
                format!(
                    "is {tokens} but must be at least max_batch_size × (mtp + 1) = {batch} × {} = {needed}",
                    mtp + 1
                ),
            )
            .with_value(tokens),
        );
    } else if tokens > needed {
        out.push(
            Violation::warning(
                key,
                format!(
                    "is {tokens}, more than max_batch_size × (mtp + 1) = {needed}; seed 001 expects them equal"
                ),
            )
            .with_value(tokens),
        );
    }
}

fn streaming(spec: &DisaggSpec, out: &mut Vec<Violation>) {
    if !spec.benchmark.streaming {
        out.push(
            Violation::error(
                "benchmark.streaming",
                "must be true (TTFT/ITL are only measurable on streamed responses)",
            )
            .with_value(false),
        );
    }
}

fn sequence_lengths(spec: &DisaggSpec, out: &mut Vec<Violation>) {
    let (isl, osl) = lengths(spec);
    if isl.is_none() {
        out.push(Violation::error(
            "benchmark.input_length",
            "is missing (set benchmark.input_length, or sequence.input_length in older files)",
        ));
    }
    if osl.is_none() {
        out.push(Violation::error(
            "benchmark.output_length",
            "is missing (set benchmark.output_length, or sequence.output_length in older files)",
        ));
    }
    let (Some(isl), Some(osl)) = (isl, osl) else {
        return;
    };
    if let Some(ctx) = spec.worker_config.ctx.max_seq_len {
        if ctx <= isl {
            out.push(
                Violation::error(
                    "worker_config.ctx.max_seq_len",
                    format!("is {ctx} but must be greater than input_length {isl}"),
                )
                .with_value(ctx),
            );
        }
    }
    if let Some(gen) = spec.worker_config.gen.max_seq_len {
        if gen <= isl + osl {
            out.push(
                Violation::error(
                    "worker_config.gen.max_seq_len",
                    format!(
                        "is {gen} but must be greater than input_length + output_length = {}",
                        isl + osl
                    ),
                )
                .with_value(gen),
            );
        }
    }
}

fn concurrency(spec: &DisaggSpec, out: &mut Vec<Violation>) {
    let list = &spec.benchmark.concurrency_list;
    let key = "benchmark.concurrency_list";
    if list.items.is_empty() {
        out.push(Violation::error(
            key,
            "is empty; give at least one concurrency level",
        ));
        return;
    }
    for item in &list.items {
        if !matches!(item.parse::<u64>(), Ok(n) if n > 0) {
            out.push(
                Violation::error(key, format!("`{item}` is not a positive integer"))
                    .with_value(item),
            );
        }
    }
    let gen = &spec.worker_config.gen;
    let Some(batch) = gen.max_batch_size else {
        return;
    };
    let (cap, how) = if gen.attention_dp() {
        (
            batch * gen.tp(),
            format!(
                "gen max_batch_size × tensor_parallel_size = {batch} × {}",
                gen.tp()
            ),
        )
    } else {
        (batch, format!("gen max_batch_size {batch}"))
    };
    for level in list.levels() {
        if level > cap {
            out.push(
                Violation::warning(
                    key,
                    format!("concurrency {level} exceeds {how} = {cap}; requests will queue"),
                )
                .with_value(level),
            );
        }
    }
}

fn positive_sizes(spec: &DisaggSpec, out: &mut Vec<Violation>) {
    let mut need = |key: String, value: Option<u64>| {
        if value == Some(0) {
            out.push(Violation::error(key, "must be at least 1").with_value(0));
        }
    };
    need(
        "hardware.gpus_per_node".into(),
        Some(spec.hardware.gpus_per_node),
    );
    need(
        "hardware.num_ctx_servers".into(),
        Some(spec.hardware.num_ctx_servers),
    );
    need(
        "hardware.num_gen_servers".into(),
        Some(spec.hardware.num_gen_servers),
    );
    let (isl, osl) = lengths(spec);
    need("benchmark.input_length".into(), isl);
    need("benchmark.output_length".into(), osl);
    for (side, cfg) in sides(spec) {
        for (field, value) in [
            ("tensor_parallel_size", cfg.tensor_parallel_size),
            ("pipeline_parallel_size", cfg.pipeline_parallel_size),
            ("context_parallel_size", cfg.context_parallel_size),
            ("moe_expert_parallel_size", cfg.moe_expert_parallel_size),
            ("max_batch_size", cfg.max_batch_size),
            ("max_num_tokens", cfg.max_num_tokens),
            ("max_seq_len", cfg.max_seq_len),
        ] {
            need(format!("worker_config.{side}.{field}"), value);
        }
    }
}

/// A worker spans whole nodes or an even share of one; MoE expert parallelism splits the TP group.
fn gpu_layout(spec: &DisaggSpec, out: &mut Vec<Violation>) {
    let per_node = spec.hardware.gpus_per_node;
    if per_node == 0 {
        return;
    }
    for (side, cfg) in sides(spec) {
        let gpus = cfg.gpus();
        if gpus == 0 {
            continue;
        }
        if gpus % per_node != 0 && per_node % gpus != 0 {
            out.push(
                Violation::error(
                    format!("worker_config.{side}.tensor_parallel_size"),
                    format!(
                        "a {side} worker needs tp × pp × cp = {} × {} × {} = {gpus} GPUs, which neither fills \
                         whole nodes nor divides a node of hardware.gpus_per_node = {per_node}",
                        cfg.tp(),
                        cfg.pp(),
                        cfg.cp()
                    ),
                )
                .with_value(gpus),
            );
        }
        if let Some(ep) = cfg.moe_expert_parallel_size {
            if ep > 0 && cfg.tp() % ep != 0 {
                out.push(
                    Violation::error(
                        format!("worker_config.{side}.moe_expert_parallel_size"),
                        format!(
                            "is {ep} but must divide tensor_parallel_size {} (MoE TP × EP = TP)",
                            cfg.tp()
                        ),
                    )
                    .with_value(ep),
                );
            }
        }
    }
}

fn job_time(spec: &DisaggSpec, out: &mut Vec<Violation>) {
    if let Err(reason) = parse_slurm_time(&spec.slurm.job_time) {
        out.push(Violation::error("slurm.job_time", reason).with_value(&spec.slurm.job_time));
    }
}

fn env_var_strings(spec: &DisaggSpec, out: &mut Vec<Violation>) {
    for (key, value) in [
        (
            "environment.worker_env_var",
            &spec.environment.worker_env_var,
        ),
        (
            "environment.server_env_var",
            &spec.environment.server_env_var,
        ),
    ] {
        if let Some(text) = value {
            if let Err(reason) = parse_env_assignments(text) {
                out.push(Violation::error(key, reason).with_value(text));
            }
        }
    }
}

/// Keys whose upstream meaning servetest does not reproduce, each a warning saying what happens
/// instead. (`slurm.job_name`, `script_file`, `environment.work_dir`, `trtllm_repo`,
/// `trtllm_wheel_path` are not here: upstream's loader always overwrites them from its environment
/// — SLURM_JOB_NAME, SCRIPT_DIR, REPO_DIR, TRTLLM_WHEEL_PATH — so a file's values never act there
/// either; docs/upstream.md maps each to servetest's equivalent.) `<placeholder>` and empty values
/// say nothing.
fn upstream_only_keys(spec: &DisaggSpec, out: &mut Vec<Violation>) {
    let set = |v: &Option<String>| {
        v.as_deref()
            .is_some_and(|v| !v.trim().is_empty() && !v.trim_start().starts_with('<'))
    };
    let dataset_keys = [
        ("metadata.dataset_file", &spec.metadata.dataset_file),
        ("benchmark.dataset_file", &spec.benchmark.dataset_file),
        ("environment.dataset_file", &spec.environment.dataset_file),
        ("slurm.dataset_file", &spec.slurm.dataset_file),
    ];
    let dataset = dataset_keys.iter().find(|(_, v)| set(v)).map(|(k, _)| *k);
    let keys: [(&str, bool, &str); 3] = [
        (
            dataset.unwrap_or("benchmark.dataset_file"),
            dataset.is_some(),
            "the native client does not read trtllm_custom datasets yet: it sends random prompts \
             of input_length tokens (as upstream's perf-sanity does when the file does not resolve)",
        ),
        (
            "benchmark.use_nv_sa_benchmark",
            spec.benchmark.use_nv_sa_benchmark == Some(true),
            "the native client runs instead of the SA client, with the SA client's length \
             interval [benchmark_ratio·L, L]",
        ),
        (
            "environment.build_wheel",
            spec.environment.build_wheel == Some(true),
            "servetest does not build TensorRT-LLM: it runs the nodes' trtllm-serve \
             (SERVETEST_TRTLLM_SERVE)",
        ),
    ];
    for (key, is_set, why) in keys {
        if is_set {
            out.push(Violation::warning(key, format!("upstream-only: {why}")));
        }
    }
}

/// Keys under `worker_config.{ctx,gen}` that the engine does not know (a typo found now, not when
/// the job starts): a warning with the closest known argument.
fn engine_keys(spec: &DisaggSpec, out: &mut Vec<Violation>) {
    for (side, cfg) in sides(spec) {
        engine_key_warnings(
            spec.environment.engine,
            &format!("worker_config.{side}"),
            cfg,
            out,
        );
    }
}

/// Pass-through keys of an engine config (`prefix` names it) that are not arguments of the engine:
/// warnings with the closest argument (disagg workers, aggr server configs).
pub fn engine_key_warnings(
    engine: crate::disagg::schema::EngineKind,
    prefix: &str,
    cfg: &WorkerConfig,
    out: &mut Vec<Violation>,
) {
    use crate::serve::engine::known_args;
    let Some(source) = known_args::source(engine) else {
        return;
    };
    for key in cfg.extra.keys() {
        if let Some(Some(hint)) = known_args::check(engine, key) {
            let hint = if hint.is_empty() {
                String::new()
            } else {
                format!("; did you mean `{hint}`?")
            };
            out.push(Violation::warning(
                format!("{prefix}.{key}"),
                format!("not an argument of {source}{hint} (the engine would refuse it when the job starts)"),
            ));
        }
    }
}

/// Keys set in `spec` that upstream's loader always overwrites from its environment (so a file's
/// value acts nowhere), each with servetest's equivalent. `servetest validate` and the harness print
/// one note naming them, rather than a warning in every upstream file.
pub fn loader_overwritten_keys(spec: &DisaggSpec) -> Vec<(&'static str, &'static str)> {
    let set = |v: &Option<String>| v.as_deref().is_some_and(|v| !v.trim().is_empty());
    let env = &spec.environment;
    [
        (
            set(&spec.slurm.job_name),
            "slurm.job_name",
            "jobs are named after their case",
        ),
        (
            set(&spec.slurm.script_file) || set(&spec.metadata.script_file),
            "slurm.script_file",
            "servetest's job template (SERVETEST_TEMPLATE_DIR)",
        ),
        (
            set(&env.work_dir),
            "environment.work_dir",
            "steps run `servetest role` (WORK_DIR: their working directory)",
        ),
        (
            set(&env.trtllm_repo) || set(&env.trtllm_wheel_path),
            "environment.trtllm_repo/trtllm_wheel_path",
            "the nodes' trtllm-serve (SERVETEST_TRTLLM_SERVE)",
        ),
    ]
    .into_iter()
    .filter(|(is_set, ..)| *is_set)
    .map(|(_, key, instead)| (key, instead))
    .collect()
}

fn benchmark_knobs(spec: &DisaggSpec, category: &str, out: &mut Vec<Violation>) {
    let b = &spec.benchmark;
    // Upstream passes it as the random range ratio to the SA client (0 ≤ r ≤ 1) and, in perf-sanity,
    // to TensorRT-LLM's client (0 ≤ r < 1; 0 = fixed lengths); its other jobs never read it.
    if let Some(r) = b.benchmark_ratio {
        let sa = b.use_nv_sa_benchmark.unwrap_or(false);
        let ok = r >= 0.0 && (r < 1.0 || (r <= 1.0 && (sa || category != "perf-sanity")));
        if !ok {
            let range = if sa || category != "perf-sanity" {
                "must be in [0, 1] (the SA client draws lengths from [r·L, L])"
            } else {
                "must be in [0, 1) (the client draws lengths from [L(1−r), L(1+r)]; 0 = fixed)"
            };
            out.push(Violation::error("benchmark.benchmark_ratio", range).with_value(r));
        }
    }
    if b.enable_benchmark == Some(false) && matches!(category, "perf" | "stress" | "perf-sanity") {
        // Upstream writes no benchmark command then, and its perf test fails for want of a log.
        out.push(
            Violation::error(
                "benchmark.enable_benchmark",
                format!("false in a {category} case: nothing would be measured (upstream fails such a test for want of a benchmark log); use an accuracy case"),
            )
            .with_value(false),
        );
    }
    for (key, range) in [
        (
            "profiling.ctx_profile_range",
            &spec.profiling.ctx_profile_range,
        ),
        (
            "profiling.gen_profile_range",
            &spec.profiling.gen_profile_range,
        ),
    ] {
        let Some(range) = range else { continue };
        let parsed = range.split_once('-').and_then(|(a, b)| {
            Some((a.trim().parse::<u64>().ok()?, b.trim().parse::<u64>().ok()?))
        });
        if !matches!(parsed, Some((start, stop)) if start <= stop) {
            out.push(
                Violation::error(
                    key,
                    "must be `START-STOP` iterations with START ≤ STOP (e.g. `10-30`)",
                )
                .with_value(range.clone()),
            );
        }
    }
    if b.multi_round == Some(0) {
        out.push(Violation::error("benchmark.multi_round", "must be at least 1").with_value(0));
    }
    if let Some(gpus) = &spec.metadata.supported_gpus {
        if gpus.is_empty() {
            out.push(Violation::error(
                "metadata.supported_gpus",
                "is empty, so the case could never run; list GPU types or remove the key",
            ));
        }
    }
}

/// A custom metric pattern must compile and have one capture per metric name (upstream's default
/// patterns add one trailing capture for the concurrency, so names + 1 is accepted too).
fn metrics_patterns(spec: &DisaggSpec, out: &mut Vec<Violation>) {
    for (base, metrics) in [
        ("metadata.metrics", &spec.metadata.metrics),
        ("benchmark.metrics", &spec.benchmark.metrics),
    ] {
        if let Some(m) = metrics {
            out.extend(check_metrics_pattern(
                base,
                m.extractor_pattern.as_deref(),
                m.metric_names.as_deref(),
            ));
        }
    }
}

fn accuracy(spec: &DisaggSpec, out: &mut Vec<Violation>) {
    if !spec.accuracy.enable_accuracy_test {
        out.push(Violation::error(
            "accuracy.enable_accuracy_test",
            "must be true for a case under accuracy/",
        ));
    }
    let tasks = spec.accuracy.tasks();
    if tasks.is_empty() {
        out.push(Violation::error(
            "accuracy.tasks",
            "an accuracy case needs at least one lm-eval task",
        ));
    }
    let datasets = spec
        .metadata
        .accuracy
        .as_ref()
        .map(|a| a.datasets.as_slice())
        .unwrap_or_default();
    if datasets.is_empty() {
        out.push(Violation::error(
            "metadata.accuracy.datasets",
            "an accuracy case needs at least one dataset with an expected_value",
        ));
    }
    for (i, ds) in datasets.iter().enumerate() {
        let base = format!("metadata.accuracy.datasets.{i}");
        if !tasks.is_empty()
            && !tasks
                .iter()
                .any(|(name, _)| name.eq_ignore_ascii_case(&ds.dataset_name))
        {
            let names: Vec<&str> = tasks.iter().map(|(n, _)| n.as_str()).collect();
            out.push(
                Violation::error(
                    format!("{base}.dataset_name"),
                    format!(
                        "`{}` has no task in accuracy.tasks ({})",
                        ds.dataset_name,
                        names.join(", ")
                    ),
                )
                .with_value(&ds.dataset_name),
            );
        }
        match ds.threshold_type {
            ThresholdType::Absolute | ThresholdType::Relative => match ds.threshold {
                None => out.push(Violation::error(
                    format!("{base}.threshold"),
                    "is required with threshold_type absolute or relative",
                )),
                Some(t) if t.is_nan() || t < 0.0 => out.push(
                    Violation::error(format!("{base}.threshold"), "must not be negative")
                        .with_value(t),
                ),
                _ => {}
            },
            ThresholdType::HypothesisTest => {
                for (field, value) in [("alpha", ds.alpha), ("beta", ds.beta)] {
                    if let Some(v) = value {
                        if !(v > 0.0 && v < 1.0) {
                            out.push(
                                Violation::error(format!("{base}.{field}"), "must be in (0, 1)")
                                    .with_value(v),
                            );
                        }
                    }
                }
                if let Some(s) = ds.sigma {
                    if s.is_nan() || s <= 0.0 {
                        out.push(
                            Violation::error(format!("{base}.sigma"), "must be positive")
                                .with_value(s),
                        );
                    }
                }
                if ds.num_samples == Some(0) {
                    out.push(
                        Violation::error(format!("{base}.num_samples"), "must be at least 1")
                            .with_value(0),
                    );
                }
            }
        }
    }
}
