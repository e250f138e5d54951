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
/// Values shorter than this are not masked: masking "1", "on" or "user" would garble every log.
const MIN_MASKED_LEN: usize = 6;
/// Values taken from the harness's own environment must be longer still, and some names that match
/// a secret word are session plumbing, not secrets (XDG_SESSION_CLASS=user, SSH_AUTH_SOCK, …).
const MIN_ENV_MASKED_LEN: usize = 8;
const NOT_SECRETS: &[&str] = &[
    "XDG_",
    "DBUS_SESSION",
    "SSH_AUTH_SOCK",
    "XAUTHORITY",
    "DESKTOP_SESSION",
    "GIT_AUTHOR",
    "GIT_COMMITTER",
];

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
    case.spec
        .as_deref()
        .map(|s| s.environment())
        .unwrap_or_default()
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
            let plumbing = NOT_SECRETS.iter().any(|p| n.starts_with(p));
            if is_secret_name(n) && !plumbing && v.len() >= MIN_ENV_MASKED_LEN {
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
/// cluster profile's `runtime_dir`, else `$HOME/.cache/servetest/runtime` (home directories are
/// shared across a cluster's nodes, so a job on another node can read it; `$XDG_RUNTIME_DIR` and
/// `/tmp` are node-local), else `<temp dir>/servetest-<uid>`. Never inside OUTPUT_PATH, which users
/// upload as CI artifacts (`check_outside`).
pub fn runtime_root(profile_dir: Option<&Path>) -> PathBuf {
    if let Some(d) = std::env::var_os(RUNTIME_DIR_ENV).filter(|d| !d.is_empty()) {
        return PathBuf::from(d);
    }
    if let Some(d) = profile_dir {
        return d.to_path_buf();
    }
    if let Some(home) = std::env::var_os("HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(home).join(".cache/servetest/runtime");
    }
    std::env::temp_dir().join(format!("servetest-{}", nix::unistd::getuid()))
}

/// This run's directory under the runtime root: the run id and a random part, so another user
/// cannot guess it and prepare it in advance.
pub fn run_dir_name(run_id: &str) -> String {
    static TOKEN: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let token = TOKEN.get_or_init(|| {
        use rand::Rng;
        let n: u64 = rand::rng().random();
        format!("{n:016x}")
    });
    format!("{run_id}-{token}")
}

/// Refuses a runtime root inside `out` (OUTPUT_PATH).
pub fn check_outside(root: &Path, out: &Path) -> Result<(), String> {
    let abs = |p: &Path| std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
    if abs(root).starts_with(abs(out)) {
        return Err(format!(
            "the runtime directory {} is inside OUTPUT_PATH {}, which is shared as results; set \
             {RUNTIME_DIR_ENV} or the cluster profile's runtime_dir elsewhere",
            root.display(),
            out.display()
        ));
    }
    Ok(())
}

/// Creates `dir` as 0700 (missing parents as usual), or checks an existing one is this user's and
/// not writable by others: in a directory another user can write to, they could swap our private
/// file for theirs, which the job would then source.
pub fn private_dir(dir: &Path) -> Result<(), String> {
    if std::fs::symlink_metadata(dir).is_err() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    }
    let meta = std::fs::symlink_metadata(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
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
    if meta.mode() & 0o022 != 0 {
        return Err(format!(
            "{}: writable by others (mode {:o}); refusing to keep private files there",
            dir.display(),
            meta.mode() & 0o777
        ));
    }
    Ok(())
}

/// Private files and directories of this process still on disk: removed when their job ends, at the
/// end of the run, and by the signal handler (`remove_private_files`), which runs no destructors.
static LIVE: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

/// Writes `text` to `path` (0600) in its directory (0700, created), under a root that must be
/// this user's and not writable by others, and remembers it for removal.
pub fn write_private_file(path: &Path, text: &str) -> Result<(), String> {
    let dir = path.parent().unwrap_or_else(|| Path::new("."));
    if let Some(root) = dir.parent() {
        private_dir(root)?;
    }
    private_dir(dir)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .map_err(|e| format!("{}: {e}", dir.display()))?;
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
        mask("user");
        assert_eq!(
            redact("a st-mask-abcdef b st-mask-abc c user"),
            "a <redacted> b <redacted> c user"
        );
    }

    #[test]
    fn private_files_live_in_a_closed_directory_and_go_away() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("rt");
        let dir = root.join(run_dir_name("run1"));
        let file = dir.join("case.env");
        write_private_file(&file, "export A=1\n").unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().mode() & 0o777;
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&file), 0o600);
        // (Not remove_private_files: it is process-wide, and other tests' files are live.)
        remove_private_file(&file);
        std::fs::remove_dir(&dir).unwrap();
        assert!(!file.exists() && !dir.exists());
        // A root others can write to is refused: they could swap the file the job sources.
        std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o777)).unwrap();
        let e = write_private_file(&file, "export A=1\n").unwrap_err();
        assert!(e.contains("writable by others"), "{e}");
        // The run directory's name cannot be guessed from the run id.
        assert!(run_dir_name("run1").len() > "run1-".len() + 8);
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
