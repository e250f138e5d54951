//! What the integration test targets share: the repository root, a child's output as text, and the
//! harness command every execution test starts from. Each target uses a part of it.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A finished child's stdout and stderr, for assertions and failure messages.
pub fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// `servetest test --config-dir <cases>` on `executor`, results in `out`: the local cluster profile,
/// a fast poll, CPU, and none of the caller's batch, debug or test-list settings.
pub fn harness_command(executor: &str, cases: &Path, out: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_servetest"));
    cmd.arg("test")
        .arg("--config-dir")
        .arg(cases)
        .env("SERVETEST_EXECUTOR", executor)
        .env("SERVETEST_CLUSTER", root().join("clusters/local.yaml"))
        .env("SERVETEST_POLL_INTERVAL", "0.5")
        .env("OUTPUT_PATH", out)
        .env("GPU_TYPE", "CPU")
        .env_remove("DISAGG_BATCH_SIZE")
        .env_remove("DEBUG_MODE")
        .env_remove("SERVETEST_TEST_LIST");
    cmd
}
