//! `servetest latency run`: the job step of a `latency` case. Composes the engine arguments from the
//! case's layers, builds the model variant, runs the engine's forward-only latency benchmark over the
//! grid (vLLM: `scripts/latency-driver`; SGLang: `sglang.bench_one_batch`), adds FLOPs and MFU, and
//! writes `latency.csv` plus `rows.json` (what the harness records) into `<out>/job-<id>/`.

pub mod mfu;

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::case::latency::{compose, layer_count, layers_root, parse_grid, LatencySpec, Profile};
use crate::case::CaseSpec;
use crate::exec::process::log_tail;

/// What every family job step leaves for the harness: one entry per result row.
pub const ROWS_FILE: &str = "rows.json";

#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct RowOut {
    pub concurrency: Option<u64>,
    pub metrics: std::collections::BTreeMap<String, f64>,
    /// The model this row measured, when the case serves several (aggregated).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
}

pub fn job_dir(out: &Path) -> PathBuf {
    crate::role::rendezvous::Rendezvous::for_this_job(out)
        .dir()
        .to_path_buf()
}

/// A copy of the model directory with `num_hidden_layers` set to `layers` (files linked, not copied).
fn model_variant(model: &Path, layers: u64, dir: &Path) -> Result<PathBuf, String> {
    let out = dir.join(format!("model-{layers}l"));
    std::fs::create_dir_all(&out).map_err(|e| e.to_string())?;
    for entry in std::fs::read_dir(model).map_err(|e| format!("{}: {e}", model.display()))? {
        let entry = entry.map_err(|e| e.to_string())?;
        let name = entry.file_name();
        let target = out.join(&name);
        let _ = std::fs::remove_file(&target);
        if name == "config.json" {
            let mut cfg: serde_json::Value =
                serde_json::from_slice(&std::fs::read(entry.path()).map_err(|e| e.to_string())?)
                    .map_err(|e| format!("{}: {e}", entry.path().display()))?;
            cfg["num_hidden_layers"] = layers.into();
            std::fs::write(&target, serde_json::to_vec_pretty(&cfg).expect("json"))
                .map_err(|e| e.to_string())?;
        } else {
            std::os::unix::fs::symlink(entry.path(), &target).map_err(|e| e.to_string())?;
        }
    }
    Ok(out)
}

#[derive(Debug, Serialize)]
struct CsvRow<'a> {
    model: &'a str,
    model_config: &'a str,
    bsz: u64,
    seq: u64,
    output_len: u64,
    prefill_latency_ms: f64,
    /// None when noise swallowed the decode time (total ≤ prefill): raise output_len or num_iters.
    decode_latency_ms: Option<f64>,
    prefill_tflops: f64,
    decode_tflops: Option<f64>,
    prefill_mfu: Option<f64>,
    decode_mfu: Option<f64>,
    profiled: bool,
}

pub fn run(case_path: &Path, out: &Path) -> Result<(), String> {
    let case = crate::case::Case::load_file(case_path)?;
    let Some(CaseSpec::Latency(spec)) = &case.spec else {
        return Err(format!("{}: not a latency case", case_path.display()));
    };
    let root = crate::env::project_dir();
    let dir = job_dir(out);
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let composed = compose(&layers_root(&root), &spec.layers)?;
    for o in &composed.overrides {
        println!("override: {o}");
    }
    crate::fsutil::write_atomic(
        &dir.join("engine-args.yaml"),
        serde_yaml::to_string(&composed.args)
            .expect("yaml")
            .as_bytes(),
    )
    .map_err(|e| e.to_string())?;
    let mut model = crate::cb::resolve_model(&root, &spec.model);
    if let Some(n) = layer_count(&spec.model_config)? {
        model = model_variant(&model, n, &dir)?;
    }
    let (bszs, seqs) = parse_grid(&spec.grid)?;
    let grid: Vec<(u64, u64)> = bszs
        .iter()
        .flat_map(|b| seqs.iter().map(move |s| (*b, *s)))
        .collect();
    let profiled = spec.profile != Profile::None && crate::fsutil::which("nsys").is_some();
    if spec.profile != Profile::None && !profiled {
        println!(
            "profile: {:?} requested, but nsys is not installed on this machine: running without a profile",
            spec.profile
        );
    }
    let points = match spec.engine.as_str() {
        "vllm" => run_vllm(spec, &root, &model, &composed.args, &grid, &dir, profiled)?,
        "sglang" => {
            let cmd = sglang_command(
                &root,
                &model,
                &composed.args,
                &bszs,
                &seqs,
                spec.output_len,
                &dir,
            )?;
            let status = std::process::Command::new(&cmd.program)
                .args(&cmd.args)
                .status()
                .map_err(|e| format!("failed to start {}: {e}", cmd.display_line()))?;
            return Err(format!(
                "engine sglang: `{}` exited with {status}; servetest reads vLLM's driver output only \
                 so far (SGLang needs GPUs, none here to check its result format against)",
                cmd.display_line()
            ));
        }
        other => return Err(format!("engine {other}: expected vllm or sglang")),
    };
    let cfg: mfu::ModelConfig = serde_json::from_slice(
        &std::fs::read(model.join("config.json"))
            .map_err(|e| format!("{}: {e}", model.display()))?,
    )
    .map_err(|e| format!("{}/config.json: {e}", model.display()))?;
    let gpu = spec.gpu.clone().unwrap_or_else(crate::env::gpu_type);
    let peak = mfu::peak_flops(&gpu);
    let devices = ["tensor_parallel_size", "pipeline_parallel_size"]
        .iter()
        .map(|k| composed.args.get(*k).and_then(|v| v.as_u64()).unwrap_or(1))
        .product::<u64>();
    let csv_path = dir.join("latency.csv");
    let mut csv = csv::Writer::from_path(&csv_path).map_err(|e| e.to_string())?;
    let mut rows = Vec::new();
    for p in &points {
        let prefill_flops = cfg.prefill_flops(p.bsz, p.seq);
        // The middle decode step of the measured ones: context = prompt + half the outputs.
        let decode_flops = cfg.decode_flops(p.bsz, p.seq + p.output_len / 2);
        let decode_s = Some(p.decode_s_per_step).filter(|d| *d > 0.0);
        if decode_s.is_none() {
            println!(
                "bsz {} seq {}: the decode time was lost in measurement noise (total ≤ prefill); \
                 raise output_len or num_iters",
                p.bsz, p.seq
            );
        }
        let row = CsvRow {
            model: &spec.model,
            model_config: &spec.model_config,
            bsz: p.bsz,
            seq: p.seq,
            output_len: p.output_len,
            prefill_latency_ms: p.prefill_s * 1e3,
            decode_latency_ms: decode_s.map(|d| d * 1e3),
            prefill_tflops: prefill_flops / p.prefill_s / 1e12,
            decode_tflops: decode_s.map(|d| decode_flops / d / 1e12),
            prefill_mfu: peak.map(|pk| mfu::mfu(prefill_flops, p.prefill_s, pk, devices)),
            decode_mfu: peak
                .zip(decode_s)
                .map(|(pk, d)| mfu::mfu(decode_flops, d, pk, devices)),
            profiled,
        };
        println!(
            "bsz {:>4} seq {:>6}: prefill {:>9.3} ms, decode {} ms/step, prefill MFU {}",
            row.bsz,
            row.seq,
            row.prefill_latency_ms,
            row.decode_latency_ms
                .map_or("n/a".to_owned(), |d| format!("{d:>8.3}")),
            row.prefill_mfu.map_or(
                format!("n/a (no peak FLOP/s known for {gpu})"),
                |m| format!("{:.4}%", m * 100.0)
            )
        );
        let mut metrics = std::collections::BTreeMap::new();
        metrics.insert("seq_len".to_owned(), p.seq as f64);
        metrics.insert("prefill_latency_ms".to_owned(), row.prefill_latency_ms);
        metrics.insert("prefill_tflops".to_owned(), row.prefill_tflops);
        let optional = [
            ("decode_latency_ms", row.decode_latency_ms),
            ("decode_tflops", row.decode_tflops),
            ("prefill_mfu", row.prefill_mfu),
            ("decode_mfu", row.decode_mfu),
        ];
        for (name, value) in optional {
            if let Some(v) = value {
                metrics.insert(name.to_owned(), v);
            }
        }
        csv.serialize(&row).map_err(|e| e.to_string())?;
        rows.push(RowOut {
            concurrency: Some(p.bsz),
            metrics,
            model: None,
        });
    }
    csv.flush().map_err(|e| e.to_string())?;
    crate::fsutil::write_atomic(
        &dir.join(ROWS_FILE),
        &serde_json::to_vec_pretty(&rows).expect("json"),
    )
    .map_err(|e| e.to_string())?;
    println!("results: {}", csv_path.display());
    Ok(())
}

/// SGLang's forward-only benchmark for the whole grid in one run (it loops over batch sizes and input
/// lengths itself): `python -m sglang.bench_one_batch --batch-size … --input-len … --output-len …`.
pub fn sglang_command(
    root: &Path,
    model: &Path,
    args: &std::collections::BTreeMap<String, serde_yaml::Value>,
    bszs: &[u64],
    seqs: &[u64],
    output_len: u64,
    dir: &Path,
) -> Result<crate::exec::process::CommandSpec, String> {
    let mut a: Vec<String> = vec![
        "-m".into(),
        "sglang.bench_one_batch".into(),
        "--model-path".into(),
        model.display().to_string(),
        "--batch-size".into(),
    ];
    a.extend(bszs.iter().map(u64::to_string));
    a.push("--input-len".into());
    a.extend(seqs.iter().map(u64::to_string));
    a.extend(["--output-len".into(), output_len.to_string()]);
    // vLLM-only keys of the shared base layer have no SGLang meaning; the rest get SGLang's names.
    let renamed: Vec<(String, serde_yaml::Value)> = args
        .iter()
        .filter(|(k, _)| {
            ![
                "load_format",
                "enforce_eager",
                "enable_prefix_caching",
                "block_size",
            ]
            .contains(&k.as_str())
        })
        .map(|(k, v)| {
            let key = match k.as_str() {
                "tensor_parallel_size" => "tp_size",
                "pipeline_parallel_size" => "pp_size",
                "max_model_len" => "context_length",
                "max_num_seqs" => "max_running_requests",
                other => other,
            };
            (key.to_owned(), v.clone())
        })
        .collect();
    a.extend(crate::serve::engine::flags_from_map(
        renamed.iter().map(|(k, v)| (k, v)),
        crate::serve::engine::FlagNames::Dashed,
        "args",
    )?);
    a.extend([
        "--result-filename".into(),
        dir.join("sglang-latency.jsonl").display().to_string(),
    ]);
    Ok(crate::exec::process::CommandSpec {
        program: crate::serve::engine::default_python(root),
        args: a,
        env: Vec::new(),
        cwd: None,
    })
}

#[derive(Debug, serde::Deserialize)]
struct Point {
    bsz: u64,
    seq: u64,
    output_len: u64,
    prefill_s: f64,
    decode_s_per_step: f64,
}

fn run_vllm(
    spec: &LatencySpec,
    root: &Path,
    model: &Path,
    args: &std::collections::BTreeMap<String, serde_yaml::Value>,
    grid: &[(u64, u64)],
    dir: &Path,
    profiled: bool,
) -> Result<Vec<Point>, String> {
    let input = serde_json::json!({
        "model": model.display().to_string(),
        "engine_args": args,
        "grid": grid,
        "output_len": spec.output_len,
        "num_iters": spec.num_iters,
    });
    let spec_path = dir.join("latency-spec.json");
    crate::fsutil::write_atomic(&spec_path, input.to_string().as_bytes())
        .map_err(|e| e.to_string())?;
    let out = dir.join("latency.jsonl");
    let log = dir.join("latency-driver.log");
    let python = crate::serve::engine::default_python(root);
    let driver = root.join("scripts/latency-driver");
    let mut cmd = if profiled {
        let mut c = std::process::Command::new("nsys");
        c.args(["profile", "--force-overwrite", "true", "-o"])
            .arg(dir.join("profile"))
            .arg(&python);
        c
    } else {
        std::process::Command::new(&python)
    };
    cmd.arg(&driver).arg(&spec_path).arg(&out);
    let log_file = std::fs::File::create(&log).map_err(|e| e.to_string())?;
    let status = cmd
        .stdout(log_file.try_clone().map_err(|e| e.to_string())?)
        .stderr(log_file)
        .status()
        .map_err(|e| format!("failed to start {}: {e}", python.display()))?;
    if !status.success() {
        return Err(format!(
            "the latency driver exited with {status}; last lines of {}:\n{}",
            log.display(),
            log_tail(&log, 30)
        ));
    }
    std::fs::read_to_string(&out)
        .map_err(|e| format!("{}: {e}", out.display()))?
        .lines()
        .map(|l| serde_json::from_str(l).map_err(|e| format!("{}: {e}", out.display())))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sglang_command_maps_the_layers_to_its_flags() {
        let args: std::collections::BTreeMap<String, serde_yaml::Value> = serde_yaml::from_str(
            "load_format: dummy\ntensor_parallel_size: 8\nenable_expert_parallel: true\nattention_backend: fa3\nmax_model_len: 4096\n",
        )
        .unwrap();
        let c = sglang_command(
            Path::new("/r"),
            Path::new("/m/qwen"),
            &args,
            &[1, 8],
            &[128, 1024],
            32,
            Path::new("/j"),
        )
        .unwrap();
        assert_eq!(
            c.args.join(" "),
            "-m sglang.bench_one_batch --model-path /m/qwen --batch-size 1 8 --input-len 128 1024 \
             --output-len 32 --attention-backend fa3 --enable-expert-parallel --context-length 4096 \
             --tp-size 8 --result-filename /j/sglang-latency.jsonl"
        );
    }
}
