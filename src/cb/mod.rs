//! Running `cb` cases: each case (after matrix expansion) drives vLLM's engine in-process through
//! `scripts/cb-driver` in its own process group — an engine crash fails that case only, as pytest's
//! `--forked` does for the seed's suite — then the trace is compared here.
//!
//! - steps: the driver writes one JSON line per engine step; every expected row is compared on the
//!   fields it names; the first differing step is shown side by side with the trace's path.
//! - output: greedy token ids must be identical to the transformers reference; each logprob must be
//!   within `rel_tol` (default 0.35, the seed's) or `abs_tol`; the worst deviation is always reported.

pub mod compare;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

pub mod case;

use std::sync::Arc;

use crate::case::Case;
use crate::check::logparse::Block;
use crate::exec::process::log_tail;
use crate::family::{Family, InProcess, Spec, Variant};
use crate::plan::render::{JobParts, JobSite};
use crate::run::RunContext;
use case::CbSpec;

pub static FAMILY: Family = Family {
    name: "cb",
    categories: &["steps", "output"],
    load: case::load,
    in_process: Some(InProcess {
        unavailable: || engine(&crate::env::project_dir()).err(),
        run,
    }),
};

impl Spec for CbSpec {
    fn model(&self) -> Option<&str> {
        Some(&self.model)
    }

    fn job(&self, _site: &JobSite) -> Result<JobParts, (String, String)> {
        Err((
            "family".into(),
            "cb cases drive the engine in-process from the harness; they have no job script".into(),
        ))
    }

    fn results(&self, _run: &RunContext, _case: &Case, _job: &str) -> Result<Vec<Block>, String> {
        Ok(Vec::new())
    }

    /// One case per `matrix:` combination, and per model under `SERVETEST_CB_MODELS`.
    fn variants(&self) -> Vec<Variant> {
        let models: Vec<String> = std::env::var(MODELS_ENV)
            .ok()
            .map(|v| {
                v.split(',')
                    .map(str::trim)
                    .filter(|m| !m.is_empty())
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default();
        let mut out: Vec<(String, Arc<dyn Spec>)> = Vec::new();
        for (suffix, variant) in self.expand() {
            if models.is_empty() {
                out.push((suffix, Arc::new(variant)));
                continue;
            }
            for m in &models {
                let mut v = variant.clone();
                v.model = m.clone();
                let label = std::path::Path::new(m)
                    .file_name()
                    .map_or(m.clone(), |f| f.to_string_lossy().into_owned());
                let suffix = match suffix.strip_suffix(']') {
                    Some(open) => format!("{open},model={label}]"),
                    None => format!("[model={label}]"),
                };
                out.push((suffix, Arc::new(v)));
            }
        }
        if out.len() == 1 && out[0].0.is_empty() {
            return Vec::new();
        }
        out.into_iter()
            .map(|(suffix, spec)| Variant {
                suffix,
                spec,
                entry: None,
            })
            .collect()
    }
}

/// Overrides the model of every cb case: comma-separated model directories (or `tiny`), one trial
/// per model — servetest's `VLLM_SPYRE_TEST_MODEL_LIST`.
pub const MODELS_ENV: &str = "SERVETEST_CB_MODELS";
/// Seconds one case may take (engine start included) before its process group is killed.
const TIMEOUT: Duration = Duration::from_secs(900);

/// The engine's interpreter, or why cb cases cannot run here (they are then ignored, never passed).
pub fn engine(root: &Path) -> Result<PathBuf, String> {
    let python = crate::serve::engine::default_python(root);
    let installed = crate::env::engine_python().is_some()
        || std::fs::read_dir(root.join(".venv/engine")).is_ok_and(|mut d| {
            d.any(|e| {
                e.ok().is_some_and(|e| {
                    e.file_name()
                        .to_string_lossy()
                        .starts_with(".servetest-engine-")
                })
            })
        });
    if !installed {
        return Err(
            "vLLM's CPU engine is not installed: run scripts/engine-setup (and scripts/make-tiny-model \
             --out models/tiny)"
                .into(),
        );
    }
    Ok(python)
}

/// `tiny` is the project's own model directory; anything else is a path (relative to the root).
pub fn resolve_model(root: &Path, model: &str) -> PathBuf {
    if model == "tiny" {
        root.join("models/tiny")
    } else {
        let p = PathBuf::from(model);
        if p.is_absolute() {
            p
        } else {
            root.join(p)
        }
    }
}

/// Where a case's spec, trace and driver log go: `$OUTPUT_PATH/cb/<case>/`.
pub fn case_dir(case: &str) -> PathBuf {
    crate::env::output_path().join("cb").join(case)
}

/// Runs one cb case; `Ok(note)` carries what a passing case reports (worst deviation, steps).
pub fn run(case: &Case) -> Result<String, String> {
    let Some(spec) = case.spec_of::<CbSpec>() else {
        return Err(format!("{}: not a cb case", case.name));
    };
    let root = crate::env::project_dir();
    let python = engine(&root)?;
    let mode = if case.category == "steps" {
        "steps"
    } else {
        "output"
    };
    let dir = case_dir(&case.name);
    let (trace, log) = drive(&python, &root, spec, mode, &dir)?;
    match mode {
        "steps" => compare::steps(&spec.steps, &trace, spec),
        _ => compare::output(&trace, spec),
    }
    .map_err(|e| {
        format!(
            "{}: {e}\n(trace {}, driver log {})",
            case.name,
            trace.display(),
            log.display()
        )
    })
}

/// Writes the spec, runs the driver, returns (trace/result path, driver log).
pub fn drive(
    python: &Path,
    root: &Path,
    spec: &CbSpec,
    mode: &str,
    dir: &Path,
) -> Result<(PathBuf, PathBuf), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("failed to create {}: {e}", dir.display()))?;
    let mut doc = serde_json::to_value(spec).map_err(|e| e.to_string())?;
    doc["model"] = resolve_model(root, &spec.model)
        .display()
        .to_string()
        .into();
    let spec_path = dir.join("spec.json");
    crate::fsutil::write_atomic(&spec_path, doc.to_string().as_bytes())
        .map_err(|e| format!("failed to write {}: {e}", spec_path.display()))?;
    let out = dir.join(if mode == "steps" {
        "trace.jsonl"
    } else {
        "result.json"
    });
    let _ = std::fs::remove_file(&out);
    let log = dir.join("driver.log");
    let log_file = std::fs::File::create(&log).map_err(|e| e.to_string())?;
    let mut cmd = Command::new(python);
    cmd.arg(root.join("scripts/cb-driver"))
        .arg(mode)
        .arg(&spec_path)
        .arg(&out)
        .stdin(Stdio::null())
        .stdout(log_file.try_clone().map_err(|e| e.to_string())?)
        .stderr(log_file);
    std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
    let mut child = cmd.spawn().map_err(|e| {
        format!(
            "failed to start {} scripts/cb-driver: {e}",
            python.display()
        )
    })?;
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().map_err(|e| e.to_string())? {
            break status;
        }
        if started.elapsed() > TIMEOUT {
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(child.id() as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
            let _ = child.wait();
            return Err(format!(
                "the engine driver ran past {} s and was killed; last lines of {}:\n{}",
                TIMEOUT.as_secs(),
                log.display(),
                log_tail(&log, 30)
            ));
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    // Whatever the engine forked goes with it.
    let _ = nix::sys::signal::killpg(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGKILL,
    );
    if !status.success() {
        return Err(format!(
            "the engine driver exited with {status}; last lines of {}:\n{}",
            log.display(),
            log_tail(&log, 30)
        ));
    }
    Ok((out, log))
}
