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

pub fn gpu_type() -> String {
    non_empty(GPU_TYPE).unwrap_or_else(|| DEFAULT_GPU_TYPE.to_owned())
}

pub fn test_list() -> Option<PathBuf> {
    non_empty(TEST_LIST).map(PathBuf::from)
}

pub fn config_dir() -> Option<PathBuf> {
    non_empty(CONFIG_DIR).map(PathBuf::from)
}

/// Python interpreter of the engine virtualenv (default: .venv/engine/bin/python when present).
pub const ENGINE_PYTHON: &str = "SERVETEST_ENGINE_PYTHON";
/// Where results and logs go (default ./output), as in the seed.
pub const OUTPUT_PATH: &str = "OUTPUT_PATH";

pub fn engine_python() -> Option<PathBuf> {
    non_empty(ENGINE_PYTHON).map(PathBuf::from)
}

pub fn output_path() -> PathBuf {
    non_empty(OUTPUT_PATH).map_or_else(|| PathBuf::from("output"), PathBuf::from)
}

/// Directory with a replacement `job.sbatch.j2` (default: the template built from scripts/templates/).
pub const TEMPLATE_DIR: &str = "SERVETEST_TEMPLATE_DIR";

pub fn template_dir() -> Option<PathBuf> {
    non_empty(TEMPLATE_DIR).map(PathBuf::from)
}
