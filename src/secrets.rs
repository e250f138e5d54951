//! Keeping the values a case hands to its job out of everything servetest writes or shows.
//!
//! - **Values travel privately.** Every environment value a case passes to a job (`environment`,
//!   `worker_env_var`, …) is written to a private file (0600) in a per-run runtime directory (0700)
//!   outside `OUTPUT_PATH`; the job script only sources it by path and removes it. The local executor
//!   needs no file: it hands the values to its processes directly. See `runtime_root`.
//! - **Values are masked.** Values whose variable names look secret (`is_secret_name`) are registered
//!   (`mask`) and replaced by `<redacted>` in whatever servetest prints or records from logs and
//!   errors (`redact`), the way CI systems mask registered secrets in their logs.

use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, RwLock};

/// What a masked value is replaced with.
pub const REDACTED: &str = "<redacted>";
/// Overrides where private runtime files go (`runtime_dir` of a cluster profile otherwise).
pub const RUNTIME_DIR_ENV: &str = "SERVETEST_RUNTIME_DIR";
/// Values shorter than this are not masked: masking "1" or "on" would garble every log.
const MIN_MASKED_LEN: usize = 4;

/// Environment variable names whose values are treated as secrets: masked in logs, errors and
/// `Debug`. Values under other names are kept out of job scripts and OUTPUT_PATH all the same.
pub fn is_secret_name(name: &str) -> bool {
    let n = name.to_ascii_uppercase();
    [
        "TOKEN",
        "SECRET",
        "PASSWORD",
        "PASSWD",
        "PASSPHRASE",
        // KEY covers API_KEY, ACCESS_KEY, PRIVATE_KEY, WANDB_KEY, NGC_KEY, …
        "KEY",
        "CREDENTIAL",
        "AUTH",
        "SESSION",
        "COOKIE",
    ]
    .iter()
    .any(|w| n.contains(w))
}

static MASKED: RwLock<Vec<String>> = RwLock::new(Vec::new());

/// Registers `value` to be masked in everything `redact` sees from now on (short values are not).
pub fn mask(value: &str) {
    if value.len() < MIN_MASKED_LEN {
        return;
    }
    if let Ok(mut m) = MASKED.write() {
        if !m.iter().any(|v| v == value) {
            m.push(value.to_owned());
            // Longest first, so a value that contains another is masked whole.
            m.sort_by_key(|v| std::cmp::Reverse(v.len()));
        }
    }
}

/// Masks the values of the secret-named pairs in `pairs`.
pub fn mask_secret_pairs<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) {
    for (name, value) in pairs {
        if is_secret_name(name) {
            mask(value);
        }
    }
}

/// Every environment value `case` supplies (script `environment`, disagg `worker_env_var`,
/// `server_env_var` and `accuracy.env_var`, aggregated `extra_env`), as (name, value).
pub fn case_environment(case: &crate::case::Case) -> Vec<(String, String)> {
    use crate::case::validate::parse_env_assignments;
    use crate::case::CaseSpec;
    let mut out: Vec<(String, String)> = Vec::new();
    match &case.spec {
        Some(CaseSpec::Script(s)) => out.extend(s.environment.clone()),
        Some(CaseSpec::Disagg(s)) => {
            for text in [&s.environment.worker_env_var, &s.environment.server_env_var]
                .into_iter()
                .flatten()
            {
                out.extend(parse_env_assignments(text).unwrap_or_default());
            }
            out.extend(s.accuracy.env_var.clone());
        }
        Some(CaseSpec::Aggregated(s)) => {
            for m in &s.models {
                out.extend(m.extra_env.clone());
            }
        }
        _ => {}
    }
    out
}

/// Masks the secret-named values `case` supplies.
pub fn mask_case(case: &crate::case::Case) {
    let env = case_environment(case);
    mask_secret_pairs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
}

/// Masks the values of this process's own secret-named environment variables (HF_TOKEN exported in
/// the shell that started the harness, …).
pub fn mask_process_environment() {
    for (name, value) in std::env::vars_os() {
        if let (Some(n), Some(v)) = (name.to_str(), value.to_str()) {
            if is_secret_name(n) {
                mask(v);
            }
        }
    }
}

/// `text` with every registered value replaced by `<redacted>`.
pub fn redact(text: &str) -> String {
    let Ok(masked) = MASKED.read() else {
        return text.to_owned();
    };
    let mut out = text.to_owned();
    for v in masked.iter() {
        if out.contains(v.as_str()) {
            out = out.replace(v.as_str(), REDACTED);
        }
    }
    out
}

/// The directory private runtime files of this user go under: `$SERVETEST_RUNTIME_DIR`, else the
/// cluster profile's `runtime_dir` (a shared filesystem every node sees, on a multi-node cluster),
/// else `$XDG_RUNTIME_DIR/servetest`, else `<temp dir>/servetest-<uid>`. Never inside OUTPUT_PATH,
/// which users upload as CI artifacts.
pub fn runtime_root(profile_dir: Option<&Path>) -> PathBuf {
    if let Some(d) = std::env::var_os(RUNTIME_DIR_ENV).filter(|d| !d.is_empty()) {
        return PathBuf::from(d);
    }
    if let Some(d) = profile_dir {
        return d.to_path_buf();
    }
    if let Some(d) = std::env::var_os("XDG_RUNTIME_DIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(d).join("servetest");
    }
    std::env::temp_dir().join(format!("servetest-{}", nix::unistd::getuid()))
}

/// Creates `dir` (and missing parents of it that servetest owns) as 0700, or checks an existing one
/// is this user's and closed to others: a private file in a directory others can write to could be
/// swapped for theirs.
pub fn private_dir(dir: &Path) -> Result<(), String> {
    match std::fs::symlink_metadata(dir) {
        Ok(meta) => {
            let uid = nix::unistd::getuid().as_raw();
            if !meta.is_dir() {
                return Err(format!("{}: not a directory", dir.display()));
            }
            if meta.uid() != uid {
                return Err(format!(
                    "{}: owned by uid {}, not by this user ({uid}); refusing to keep private files there",
                    dir.display(),
                    meta.uid()
                ));
            }
            if meta.mode() & 0o077 != 0 {
                std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
                    .map_err(|e| format!("{}: cannot make it private: {e}", dir.display()))?;
            }
            Ok(())
        }
        Err(_) => std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display())),
    }
}

/// Private files and directories of this process still on disk: removed when their job ends, at the
/// end of the run, and by the signal handler (`remove_private_files`), which runs no destructors.
static LIVE: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

/// Writes `text` to `path` (0600) inside a private directory, and remembers it for removal.
pub fn write_private_file(path: &Path, text: &str) -> Result<(), String> {
    let dir = path.parent().unwrap_or_else(|| Path::new("."));
    private_dir(dir)?;
    crate::fsutil::write_private(path, text.as_bytes())
        .map_err(|e| format!("failed to write {}: {e}", path.display()))?;
    if let Ok(mut live) = LIVE.lock() {
        live.push(path.to_path_buf());
        live.push(dir.to_path_buf());
    }
    Ok(())
}

/// Removes one private file (its job ended).
pub fn remove_private_file(path: &Path) {
    let _ = std::fs::remove_file(path);
    if let Ok(mut live) = LIVE.lock() {
        live.retain(|p| p != path);
    }
}

/// Removes every private file this process wrote and their directories, if empty (end of run,
/// signals).
pub fn remove_private_files() {
    let paths = LIVE
        .lock()
        .map(|mut g| std::mem::take(&mut *g))
        .unwrap_or_default();
    for p in &paths {
        let _ = std::fs::remove_file(p);
    }
    for p in &paths {
        let _ = std::fs::remove_dir(p);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn common_secret_names_are_recognised() {
        for name in [
            "HF_TOKEN",
            "WANDB_KEY",
            "HF_AUTH",
            "NGC_KEY",
            "AWS_SESSION_TOKEN",
            "AWS_SESSION",
            "MY_COOKIE",
            "DB_PASSWORD",
            "GCP_CREDENTIALS",
            "SSH_PASSPHRASE",
            "OPENAI_API_KEY",
        ] {
            assert!(is_secret_name(name), "{name}");
        }
        for name in [
            "TLLM_LOG_LEVEL",
            "CUDA_VISIBLE_DEVICES",
            "HF_HOME",
            "OMP_NUM_THREADS",
        ] {
            assert!(!is_secret_name(name), "{name}");
        }
    }

    #[test]
    fn masked_values_are_redacted_longest_first_and_short_ones_left_alone() {
        mask("st-mask-abc");
        mask("st-mask-abcdef");
        mask("on");
        assert_eq!(
            redact("a st-mask-abcdef b st-mask-abc c on"),
            "a <redacted> b <redacted> c on"
        );
    }

    #[test]
    fn private_files_live_in_a_closed_directory_and_go_away() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("rt/run1");
        let file = dir.join("case.env");
        write_private_file(&file, "export A=1\n").unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().mode() & 0o777;
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&file), 0o600);
        // A directory opened to others is closed again before use.
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        private_dir(&dir).unwrap();
        assert_eq!(mode(&dir), 0o700);
        remove_private_files();
        assert!(!file.exists() && !dir.exists());
    }

    #[test]
    fn the_runtime_root_is_never_the_output_path_and_the_override_wins() {
        let root = runtime_root(None);
        assert!(
            !root.starts_with(crate::env::output_path()),
            "{}",
            root.display()
        );
        assert_eq!(
            runtime_root(Some(Path::new("/shared/rt"))),
            std::env::var_os(RUNTIME_DIR_ENV).map_or(PathBuf::from("/shared/rt"), PathBuf::from)
        );
    }
}
