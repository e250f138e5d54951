//! `servetest latency run`: the job step of a `latency` case. Composes the engine arguments from the
//! case's layers, builds the model variant, runs the engine's forward-only latency benchmark over the
//! grid (vLLM: `scripts/latency-driver`; SGLang: `sglang.bench_one_batch`), adds FLOPs and MFU, and
//! writes `latency.csv` plus `rows.json` (what the harness records) into `<out>/job-<id>/`.

pub mod case;
pub mod mfu;

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::case::common::ScriptSlurm;
use crate::check::logparse::Block;
use crate::exec::process::{log_tail, run_to_log};
use crate::family::step::{job_dir, RowOut, ROWS_FILE};
use crate::family::{Family, Spec};
use crate::plan::render::{JobParts, JobSite, SlurmFields};
use crate::run::RunContext;
use case::{compose, grid_points, layer_count, layers_root, LatencySpec, Profile};

pub static FAMILY: Family = Family {
    name: "latency",
    categories: &["perf"],
    load: case::load,
    in_process: None,
};

impl Spec for LatencySpec {
    fn model(&self) -> Option<&str> {
        Some(&self.model)
    }

    fn supported_gpus(&self) -> Option<&[String]> {
        self.supported_gpus.as_deref()
    }

    /// One `servetest latency run` step on one node.
    fn job(&self, site: &JobSite) -> Result<JobParts, (String, String)> {
        let slurm: &ScriptSlurm = &self.slurm;
        Ok(JobParts {
            fields: SlurmFields::from_script(slurm, 1, 0),
            env: Vec::new(),
            steps: vec![crate::family::step::planned("latency", site, 0)],
            serving_roles: false,
        })
    }

    fn results(
        &self,
        run: &RunContext,
        case: &crate::case::Case,
        job: &str,
    ) -> Result<Vec<Block>, String> {
        crate::family::step::rows(run, case, job)
    }
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
    /// None when no decode forward was timed (a driver that reports 0).
    decode_latency_ms: Option<f64>,
    prefill_tflops: f64,
    decode_tflops: Option<f64>,
    prefill_mfu: Option<f64>,
    decode_mfu: Option<f64>,
    /// `LLM.generate` wall time of a 1-token generate, and per later step: what forward-only
    /// excludes (scheduling, input preparation, sampling).
    wall_prefill_ms: Option<f64>,
    wall_decode_ms: Option<f64>,
    /// The per-op profile tables of this point (`profile/b{bsz}_s{seq}_{phase}.json`), if any.
    profile: String,
}

pub fn run(case_path: &Path, out: &Path) -> Result<(), String> {
    let case = crate::case::Case::load_file(case_path)?;
    let Some(spec) = case.spec_of::<LatencySpec>() else {
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
    let grid = grid_points(&spec.grid, &root)?;
    let distinct = |pick: fn(&(u64, u64)) -> u64| {
        let mut v: Vec<u64> = Vec::new();
        for p in &grid {
            if !v.contains(&pick(p)) {
                v.push(pick(p));
            }
        }
        v
    };
    let (bszs, seqs) = (distinct(|p| p.0), distinct(|p| p.1));
    let points = match spec.engine.as_str() {
        "vllm" => run_vllm(spec, &root, &model, &composed.args, &grid, &dir)?,
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
    let measured: Vec<(u64, u64)> = points.iter().map(|p| (p.bsz, p.seq)).collect();
    if spec.engine == "vllm" && measured != grid {
        return Err(format!(
            "the driver measured {measured:?}, the grid is {grid:?} (driver log {})",
            dir.join("latency-driver.log").display()
        ));
    }
    let problems: Vec<String> = points
        .iter()
        .filter(|p| !p.shape_ok)
        .map(|p| {
            format!(
                "bsz {} seq {}: {}",
                p.bsz,
                p.seq,
                p.shape_problems.join("; ")
            )
        })
        .collect();
    if !problems.is_empty() {
        return Err(format!(
            "the engine did not run the seed's batch shape (one prefill of bsz×seq tokens, then \
             decodes of bsz), so the figures are not forward-only latencies at that shape:\n{}",
            problems.join("\n")
        ));
    }
    let check = if spec.cross_check {
        Some(cross_check(
            spec,
            &root,
            &model,
            &composed.args,
            &points[0],
            &dir,
        )?)
    } else {
        None
    };
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
                "bsz {} seq {}: no decode forward was timed; raise output_len",
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
            wall_prefill_ms: p.wall_prefill_ms,
            wall_decode_ms: p.wall_decode_ms,
            profile: [&p.prefill_profile, &p.decode_profile]
                .into_iter()
                .flatten()
                .cloned()
                .collect::<Vec<_>>()
                .join(" "),
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
        if let Some(c) = check.as_ref().filter(|c| (c.bsz, c.seq) == (p.bsz, p.seq)) {
            metrics.insert("bench_latency_avg_ms".into(), c.bench_avg_ms);
            if let Some(share) = c.forward_share {
                metrics.insert("forward_share".into(), share);
            }
        }
        csv.serialize(&row).map_err(|e| e.to_string())?;
        rows.push(RowOut {
            concurrency: Some(p.bsz),
            metrics,
            model: None,
            // A grid has several sequence lengths per batch size.
            variant: format!("seq={}", p.seq),
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
    /// Medians of the forward call alone.
    prefill_s: f64,
    decode_s_per_step: f64,
    /// Required: a driver that does not say is not trusted.
    shape_ok: bool,
    #[serde(default)]
    shape_problems: Vec<String>,
    #[serde(default)]
    wall_prefill_ms: Option<f64>,
    #[serde(default)]
    wall_decode_ms: Option<f64>,
    #[serde(default)]
    wall_total_ms: Option<f64>,
    #[serde(default)]
    wall_minus_fwd_ms: Option<f64>,
    #[serde(default)]
    prefill_profile: Option<String>,
    #[serde(default)]
    decode_profile: Option<String>,
}

/// `vllm bench latency` on one point, next to the forward-only figures (cross-check.json). The
/// two are separate processes at different times, so on a shared machine their ratio is reported,
/// never asserted (measured in CI: the driver's generate at 587 ms under the other jobs' load, the
/// bench's at 148 ms right after). What is asserted holds within one process: the forwards timed
/// inside a generate never add up to more than that generate.
#[derive(Debug, Serialize)]
struct CrossCheck {
    bsz: u64,
    seq: u64,
    output_len: u64,
    /// vLLM's end-to-end average of one `generate` (prefill + decodes + sampling + the rest).
    bench_avg_ms: f64,
    /// prefill forward + (output_len − 1) decode forwards, from the driver.
    forward_sum_ms: f64,
    /// The driver's own `generate` wall time of the same shape (what the bench measures).
    driver_wall_total_ms: Option<f64>,
    /// Median over the driver's generates of (wall − the forwards timed inside it).
    driver_overhead_ms: Option<f64>,
    /// bench ÷ the driver's generate: 1 when both ran under the same load.
    bench_over_driver: Option<f64>,
    /// Forwards ÷ the driver's generate.
    forward_share: Option<f64>,
    command: String,
}

/// Runs `vllm bench latency` (through scripts/vllm-cli) at the point's shape with the case's engine
/// arguments. The forwards of one generate can never take longer than the whole generate, so a
/// forward sum above vLLM's own end-to-end figure fails the case.
fn cross_check(
    spec: &LatencySpec,
    root: &Path,
    model: &Path,
    args: &std::collections::BTreeMap<String, serde_yaml::Value>,
    p: &Point,
    dir: &Path,
) -> Result<CrossCheck, String> {
    let json = dir.join("vllm-bench-latency.json");
    let log = dir.join("vllm-bench-latency.log");
    let python = crate::serve::engine::default_python(root);
    let mut a: Vec<String> = vec![
        root.join("scripts/vllm-cli").display().to_string(),
        "bench".into(),
        "latency".into(),
        "--model".into(),
        model.display().to_string(),
        "--input-len".into(),
        p.seq.to_string(),
        "--output-len".into(),
        p.output_len.to_string(),
        "--batch-size".into(),
        p.bsz.to_string(),
        "--num-iters-warmup".into(),
        "1".into(),
        "--num-iters".into(),
        spec.num_iters.max(3).to_string(),
        "--disable-log-stats".into(),
        "--output-json".into(),
        json.display().to_string(),
    ];
    let mut engine = args.clone();
    engine
        .entry("max_num_seqs".into())
        .or_insert_with(|| p.bsz.into());
    a.extend(crate::serve::engine::flags_from_map(
        engine.iter(),
        crate::serve::engine::FlagNames::Dashed,
        "args",
    )?);
    let vocab: Option<u64> = std::fs::read(model.join("config.json"))
        .ok()
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .and_then(|c| c["vocab_size"].as_u64());
    let mut cmd = std::process::Command::new(&python);
    cmd.args(&a).env("VLLM_ENABLE_V1_MULTIPROCESSING", "0");
    // The driver's defaults, where the caller set nothing, so both measure the same engine.
    if std::env::var_os("VLLM_CPU_KVCACHE_SPACE").is_none() {
        cmd.env("VLLM_CPU_KVCACHE_SPACE", "1");
    }
    if std::env::var_os("OMP_NUM_THREADS").is_none() {
        // The driver's setting, so both measure the same forward.
        cmd.env("OMP_NUM_THREADS", "1");
    }
    if let Some(v) = vocab {
        cmd.env("SERVETEST_BENCH_MAX_TOKEN_ID", v.to_string());
    }
    let status = run_to_log(&mut cmd, &log)
        .map_err(|e| format!("failed to start vllm bench latency: {e}"))?;
    let command = format!("{} {}", python.display(), a.join(" "));
    if !status.success() {
        return Err(format!(
            "cross-check: `{command}` exited with {status}; last lines of {}:\n{}",
            log.display(),
            log_tail(&log, 20)
        ));
    }
    let out: serde_json::Value = serde_json::from_slice(
        &std::fs::read(&json).map_err(|e| format!("{}: {e}", json.display()))?,
    )
    .map_err(|e| format!("{}: {e}", json.display()))?;
    let bench_avg_ms = out["avg_latency"]
        .as_f64()
        .ok_or_else(|| format!("{}: no avg_latency", json.display()))?
        * 1e3;
    let forward_sum_ms =
        (p.prefill_s + p.output_len.saturating_sub(1) as f64 * p.decode_s_per_step) * 1e3;
    let c = CrossCheck {
        bsz: p.bsz,
        seq: p.seq,
        output_len: p.output_len,
        bench_avg_ms,
        forward_sum_ms,
        driver_wall_total_ms: p.wall_total_ms,
        driver_overhead_ms: p.wall_minus_fwd_ms,
        bench_over_driver: p.wall_total_ms.map(|w| bench_avg_ms / w),
        forward_share: p.wall_total_ms.map(|w| forward_sum_ms / w),
        command,
    };
    crate::fsutil::write_atomic(
        &dir.join("cross-check.json"),
        &serde_json::to_vec_pretty(&c).expect("json"),
    )
    .map_err(|e| e.to_string())?;
    let ms = |v: Option<f64>| v.map_or("n/a".into(), |w| format!("{w:.2}"));
    println!(
        "cross-check bsz {} seq {} output {}: vllm bench latency {:.2} ms per generate, the driver's \
         generate {} ms, of which forwards {:.2} ms",
        c.bsz,
        c.seq,
        c.output_len,
        c.bench_avg_ms,
        ms(c.driver_wall_total_ms),
        c.forward_sum_ms,
    );
    forwards_fit(&c)?;
    Ok(c)
}

fn forwards_fit(c: &CrossCheck) -> Result<(), String> {
    match c.driver_overhead_ms {
        None => Err(format!(
            "cross-check: the driver reported no wall_minus_fwd_ms at bsz {} seq {}",
            c.bsz, c.seq
        )),
        Some(o) if o < 0.0 => Err(format!(
            "cross-check: the forwards timed inside a generate add up to {:.2} ms more than the \
             generate itself at bsz {} seq {}: the forward-only timing is wrong",
            -o, c.bsz, c.seq
        )),
        Some(_) => Ok(()),
    }
}

fn run_vllm(
    spec: &LatencySpec,
    root: &Path,
    model: &Path,
    args: &std::collections::BTreeMap<String, serde_yaml::Value>,
    grid: &[(u64, u64)],
    dir: &Path,
) -> Result<Vec<Point>, String> {
    let profile = match spec.profile {
        Profile::None => "none",
        Profile::Prefill => "prefill",
        Profile::Decode => "decode",
        Profile::Both => "both",
    };
    let input = serde_json::json!({
        "model": model.display().to_string(),
        "engine_args": args,
        "grid": grid,
        "output_len": spec.output_len,
        "num_iters": spec.num_iters,
        "profile": profile,
        "profile_dir": dir.join("profile").display().to_string(),
    });
    let spec_path = dir.join("latency-spec.json");
    crate::fsutil::write_atomic(&spec_path, input.to_string().as_bytes())
        .map_err(|e| e.to_string())?;
    let out = dir.join("latency.jsonl");
    let log = dir.join("latency-driver.log");
    let python = crate::serve::engine::default_python(root);
    let driver = root.join("scripts/latency-driver");
    let mut cmd = std::process::Command::new(&python);
    cmd.arg(&driver).arg(&spec_path).arg(&out);
    let status = run_to_log(&mut cmd, &log)
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
    fn forwards_longer_than_their_generate_fail_and_the_bench_is_reported() {
        let mut c = CrossCheck {
            bsz: 1,
            seq: 32,
            output_len: 32,
            bench_avg_ms: 133.4,
            forward_sum_ms: 51.5,
            driver_wall_total_ms: Some(138.4),
            driver_overhead_ms: Some(86.9),
            bench_over_driver: Some(0.96),
            forward_share: Some(0.37),
            command: String::new(),
        };
        assert!(forwards_fit(&c).is_ok());
        // The bench's figure under another load is reported, not judged.
        c.bench_avg_ms = 20.0;
        assert!(forwards_fit(&c).is_ok());
        // A driver that timed whole engine steps twice over would report this.
        c.driver_overhead_ms = Some(-12.5);
        let e = forwards_fit(&c).unwrap_err();
        assert!(
            e.contains("add up to 12.50 ms more than the generate itself"),
            "{e}"
        );
        c.driver_overhead_ms = None;
        assert!(forwards_fit(&c).is_err());
    }

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
