//! The `servetest` binary as a user runs it: exit codes and what it prints.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn servetest(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_servetest"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env_remove("GPU_TYPE")
        .output()
        .expect("run servetest")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn fixture_tree(rules: &[&str]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("disagg/perf");
    std::fs::create_dir_all(&dest).unwrap();
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/invalid");
    for (i, rule) in rules.iter().enumerate() {
        let file = std::fs::read_dir(src.join(rule))
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .path();
        let stem = file.file_stem().unwrap().to_string_lossy();
        std::fs::copy(&file, dest.join(format!("{stem}_{i}.yaml"))).unwrap();
    }
    dir
}

#[test]
fn validate_passes_on_the_shipped_cases() {
    let o = servetest(&["validate"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("0 error(s)"));
}

#[test]
fn validate_reports_every_violation_of_every_file_and_fails() {
    let tree = fixture_tree(&["streaming", "job-time", "unknown-keys"]);
    let o = servetest(&["validate", tree.path().to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let out = text(&o);
    for needle in [
        ": benchmark.streaming: must be true",
        ": slurm.job_time: `2h` is not a SLURM time",
        ": slurm.partiton: unknown key; did you mean `partition`?",
        ": hardwre: unknown key; did you mean `hardware`?",
        "3 case(s), 3 invalid",
    ] {
        assert!(out.contains(needle), "missing {needle:?} in:\n{out}");
    }
    // `file:line: key` — every error names its file and line.
    for line in out
        .lines()
        .filter(|l| l.contains(": benchmark.") || l.contains(": slurm."))
    {
        let mut parts = line.splitn(3, ':');
        let file = PathBuf::from(parts.next().unwrap());
        assert!(file.exists(), "{line}");
        assert!(parts.next().unwrap().parse::<usize>().is_ok(), "{line}");
    }
}

#[test]
fn validate_json_and_deny_warnings() {
    let tree = fixture_tree(&["concurrency-cap"]);
    let dir = tree.path().to_str().unwrap();
    let o = servetest(&["validate", dir]);
    assert!(o.status.success(), "a warning alone passes: {}", text(&o));
    let o = servetest(&["validate", "--deny-warnings", dir]);
    assert_eq!(o.status.code(), Some(1));
    let o = servetest(&["validate", "--json", dir]);
    let all: Vec<serde_json::Value> = serde_json::from_slice(&o.stdout).unwrap();
    let v = all
        .iter()
        .find(|v| v["key"] == "benchmark.concurrency_list")
        .expect("the concurrency warning");
    assert_eq!(v["severity"], "warning");
    assert!(v["line"].as_u64().unwrap() > 0);
    assert!(v["file"].as_str().unwrap().ends_with(".yaml"));
}

#[test]
fn list_shows_ignored_cases_with_the_reason() {
    let o = servetest(&["list", "--json"]);
    assert!(o.status.success(), "{}", text(&o));
    let rows: Vec<serde_json::Value> = serde_json::from_slice(&o.stdout).unwrap();
    assert!(rows.len() >= 11);
    let ignored: Vec<&serde_json::Value> =
        rows.iter().filter(|r| !r["ignored"].is_null()).collect();
    assert_eq!(
        ignored.len(),
        1,
        "only the H100/B200 case is ignored on GB200"
    );
    assert!(ignored[0]["ignored"]
        .as_str()
        .unwrap()
        .contains("GPU_TYPE=GB200"));
    let disagg = rows.iter().filter(|r| r["family"] != "script");
    assert!(disagg.clone().all(|r| r["gpus"].as_u64().unwrap() > 0));
    assert!(disagg.count() >= 11);
}

#[test]
fn serve_refuses_remote_addresses_and_missing_models() {
    let o = servetest(&["serve", "--model", "models/tiny", "--host", "0.0.0.0"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o).contains("refusing to listen on non-loopback address 0.0.0.0"));
    let o = servetest(&["serve", "--model", "/nonexistent/model"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o).contains("has no config.json"));
}
