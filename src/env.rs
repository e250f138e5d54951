//! Every environment variable servetest reads, in one place (README lists them).

use std::path::PathBuf;

/// GPU type of the machines cases run on; cases whose `metadata.supported_gpus` lacks it are ignored.
pub const GPU_TYPE: &str = "GPU_TYPE";
pub const DEFAULT_GPU_TYPE: &str = "GB200";
/// Test-list file for the harness when `--test-list` is not given (handy in CI job definitions).
pub const TEST_LIST: &str = "SERVETEST_TEST_LIST";
/// Root of the case tree when `--config-dir` is not given.
pub const CONFIG_DIR: &str = "SERVETEST_CONFIG_DIR";

fn non_empty(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

fn path(name: &str) -> Option<PathBuf> {
    non_empty(name).map(PathBuf::from)
}

pub fn gpu_type() -> String {
    non_empty(GPU_TYPE).unwrap_or_else(|| DEFAULT_GPU_TYPE.to_owned())
}

pub fn test_list() -> Option<PathBuf> {
    path(TEST_LIST)
}

pub fn config_dir() -> Option<PathBuf> {
    path(CONFIG_DIR)
}

/// Python interpreter of the engine virtualenv (default: .venv/engine/bin/python when present).
pub const ENGINE_PYTHON: &str = "SERVETEST_ENGINE_PYTHON";
/// Where results and logs go (default ./output), as in the seed.
pub const OUTPUT_PATH: &str = "OUTPUT_PATH";

pub fn engine_python() -> Option<PathBuf> {
    path(ENGINE_PYTHON)
}

pub fn output_path() -> PathBuf {
    non_empty(OUTPUT_PATH).map_or_else(|| PathBuf::from("output"), PathBuf::from)
}

/// Directory with a replacement `job.sbatch.j2` (default: the template built from scripts/templates/).
pub const TEMPLATE_DIR: &str = "SERVETEST_TEMPLATE_DIR";

pub fn template_dir() -> Option<PathBuf> {
    path(TEMPLATE_DIR)
}

/// `slurm`, `local` or `auto` (default).
pub const EXECUTOR: &str = "SERVETEST_EXECUTOR";
/// Seconds between scheduler polls (default 5; upstream polls every 180).
pub const POLL_INTERVAL: &str = "SERVETEST_POLL_INTERVAL";
/// Seconds a trial waits for its job (default 36000, as in seed 001).
pub const WAIT_TIMEOUT: &str = "SERVETEST_WAIT_TIMEOUT";
/// Cases per submitted batch; 0 = all at once (default 5). `--disagg-batch-size` wins.
pub const BATCH_SIZE: &str = "DISAGG_BATCH_SIZE";
/// Cluster profile (`clusters/local.yaml`); `--cluster` wins.
pub const CLUSTER: &str = "SERVETEST_CLUSTER";
/// `1`: submit nothing and evaluate the outputs of `DEBUG_JOB_ID`.
pub const DEBUG_MODE: &str = "DEBUG_MODE";
pub const DEBUG_JOB_ID: &str = "DEBUG_JOB_ID";
/// Where jobs run (default: each case's output directory).
pub const WORK_DIR: &str = "WORK_DIR";

pub fn executor() -> String {
    non_empty(EXECUTOR).unwrap_or_else(|| "auto".to_owned())
}

fn seconds(name: &str, default: f64) -> Result<std::time::Duration, String> {
    match non_empty(name) {
        None => Ok(std::time::Duration::from_secs_f64(default)),
        Some(v) => v
            .parse::<f64>()
            .ok()
            .filter(|s| s.is_finite() && *s > 0.0)
            .map(std::time::Duration::from_secs_f64)
            .ok_or_else(|| format!("{name}={v}: expected a positive number of seconds")),
    }
}

pub fn poll_interval() -> Result<std::time::Duration, String> {
    seconds(POLL_INTERVAL, 5.0)
}

/// Seconds between heartbeat lines for a live job (`SERVETEST_HEARTBEAT`, default 60; 0 = none).
pub const HEARTBEAT: &str = "SERVETEST_HEARTBEAT";

pub fn heartbeat() -> Result<Option<std::time::Duration>, String> {
    match non_empty(HEARTBEAT) {
        Some(v) if v.trim().parse::<f64>().is_ok_and(|s| s == 0.0) => Ok(None),
        _ => seconds(HEARTBEAT, 60.0).map(Some),
    }
}

pub fn wait_timeout() -> Result<std::time::Duration, String> {
    seconds(WAIT_TIMEOUT, 36_000.0)
}

pub fn batch_size() -> Result<Option<usize>, String> {
    non_empty(BATCH_SIZE)
        .map(|v| {
            v.trim()
                .parse()
                .map_err(|_| format!("{BATCH_SIZE}={v}: expected a whole number (0 = all)"))
        })
        .transpose()
}

pub fn cluster() -> Option<PathBuf> {
    path(CLUSTER)
}

/// `Ok(None)`: not in debug mode. `Err`: debug mode without a job id.
pub fn debug_job() -> Result<Option<String>, String> {
    if non_empty(DEBUG_MODE).as_deref() != Some("1") {
        return Ok(None);
    }
    non_empty(DEBUG_JOB_ID).map(Some).ok_or_else(|| {
        format!("{DEBUG_MODE}=1 needs {DEBUG_JOB_ID}: the id of the job whose outputs to evaluate")
    })
}

pub fn work_dir() -> Option<PathBuf> {
    path(WORK_DIR)
}

/// An earlier run's results.json or CSV to gate metrics against; `--baseline` wins.
pub const BASELINE: &str = "SERVETEST_BASELINE";
/// The gate's policy file; `--baseline-policy` wins.
pub const BASELINE_POLICY: &str = "SERVETEST_BASELINE_POLICY";

pub fn baseline() -> Option<PathBuf> {
    path(BASELINE)
}

pub fn baseline_policy() -> Option<PathBuf> {
    path(BASELINE_POLICY)
}

/// `1`: continue the run in OUTPUT_PATH (`--resume`).
pub const RESUME: &str = "SERVETEST_RESUME";

pub fn resume() -> bool {
    non_empty(RESUME).as_deref() == Some("1")
}

/// `trtllm-serve` for TensorRT-LLM cases (default: from PATH).
pub const TRTLLM_SERVE: &str = "SERVETEST_TRTLLM_SERVE";
/// `vllm-router` for vLLM cases (default: .venv/router/bin/vllm-router when present, else PATH).
pub const VLLM_ROUTER: &str = "SERVETEST_VLLM_ROUTER";
/// Set by job scripts: the directory servetest was started from (relative model paths resolve here).
pub const PROJECT_ROOT: &str = "SERVETEST_PROJECT_ROOT";
/// Address roles bind and advertise: an IP, or `hostname` for the node's name (default 127.0.0.1).
pub const SERVE_HOST: &str = "SERVETEST_SERVE_HOST";
/// Which role a job step plays: `CTX_i`, `GEN_i`, `DISAGG_SERVER` or `BENCHMARK` (upstream's name).
pub const SERVING_TYPE: &str = "DISAGG_SERVING_TYPE";

/// Python with lm-eval for accuracy cases (default: .venv/engine/bin/python).
pub const EVAL_PYTHON: &str = "SERVETEST_EVAL_PYTHON";

pub fn eval_python() -> Option<PathBuf> {
    path(EVAL_PYTHON)
}

pub fn trtllm_serve() -> Option<PathBuf> {
    path(TRTLLM_SERVE)
}

pub fn vllm_router() -> Option<PathBuf> {
    path(VLLM_ROUTER)
}

pub fn project_root() -> Option<PathBuf> {
    path(PROJECT_ROOT)
}

/// Where the project's scripts, configs and models are: `$SERVETEST_PROJECT_ROOT` when set (job
/// steps get it), else the current directory.
pub fn project_dir() -> PathBuf {
    project_root()
        .or_else(|| std::env::current_dir().ok())
        .unwrap_or_default()
}

pub fn serve_host() -> Option<String> {
    non_empty(SERVE_HOST)
}

pub fn serving_type() -> Option<String> {
    non_empty(SERVING_TYPE)
}

/// The id of the job a step runs in: SLURM's, or the local executor's.
pub fn job_id() -> Option<String> {
    non_empty("SLURM_JOB_ID").or_else(|| non_empty("SERVETEST_JOB_ID"))
}

/// Jobs the local executor runs at once (default 64); the others wait PENDING (Resources).
pub const LOCAL_SLOTS: &str = "SERVETEST_LOCAL_SLOTS";
/// `LO-HI`: the ports serving roles, `servetest serve --port 0` and the simulator pick from.
pub const PORT_RANGE: &str = "SERVETEST_PORT_RANGE";

pub fn local_slots() -> usize {
    non_empty(LOCAL_SLOTS)
        .and_then(|v| v.trim().parse::<usize>().ok())
        .filter(|n| *n > 0)
        .unwrap_or(64)
}

/// The pytest node id of upstream's perf-sanity jobs, `{MODULE}::{FUNCTION}[{PREFIX}-{config}]`,
/// as a TensorRT-LLM fork's `run_disagg_test.sh` takes it from the environment (same defaults):
/// test lists are read and JUnit test cases named with these.
pub const PERF_TEST_MODULE: &str = "PERF_TEST_MODULE";
pub const PERF_TEST_FUNCTION: &str = "PERF_TEST_FUNCTION";
pub const PERF_TEST_PREFIX: &str = "PERF_TEST_PREFIX";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PerfTestId {
    pub module: String,
    pub function: String,
    pub prefix: String,
}

pub fn perf_test_id() -> PerfTestId {
    let get = |name: &str, default: &str| non_empty(name).unwrap_or_else(|| default.to_owned());
    PerfTestId {
        module: get(PERF_TEST_MODULE, "perf/test_perf_sanity.py"),
        function: get(PERF_TEST_FUNCTION, "test_e2e"),
        prefix: get(PERF_TEST_PREFIX, "disagg_upload"),
    }
}
