//! Files that are never half-written: write to a temporary sibling, fsync, rename.

use std::io::Write;
use std::path::Path;

pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    write_with_mode(path, bytes, 0o644)
}

/// Like `write_atomic`, readable by the owner only (0600): files that hold secrets.
pub fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    write_with_mode(path, bytes, 0o600)
}

/// Temporary files of atomic writes in progress: `std::process::exit` (the harness's Ctrl-C path)
/// runs no destructor, so the signal handler removes these (`remove_temporary_files`) instead of
/// leaving `.tmpXXXX` files next to the results.
static IN_FLIGHT: std::sync::Mutex<Vec<std::path::PathBuf>> = std::sync::Mutex::new(Vec::new());

/// Removes the temporary files of writes still in progress, and keeps any new one from starting:
/// the lock stays taken until the process exits (the signal handler calls this last, right before
/// `exit`), so a trial thread cannot create a `.tmpXXXX` file after the sweep.
pub fn remove_temporary_files() {
    let guard = IN_FLIGHT.lock().unwrap_or_else(|p| p.into_inner());
    for p in guard.iter() {
        let _ = std::fs::remove_file(p);
    }
    std::mem::forget(guard);
}

fn write_with_mode(path: &Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or_else(|| Path::new("."));
    std::fs::create_dir_all(dir)?;
    // Created and registered under the lock, so the signal handler's sweep sees every file that
    // exists (or, holding the lock, lets none be created after it).
    let (tmp, tmp_path) = {
        let mut g = IN_FLIGHT.lock().unwrap_or_else(|p| p.into_inner());
        let tmp = tempfile::NamedTempFile::new_in(dir)?;
        let tmp_path = tmp.path().to_path_buf();
        g.push(tmp_path.clone());
        (tmp, tmp_path)
    };
    let result = finish_write(tmp, path, bytes, mode);
    if let Ok(mut g) = IN_FLIGHT.lock() {
        g.retain(|p| p != &tmp_path);
    }
    result
}

fn finish_write(
    mut tmp: tempfile::NamedTempFile,
    path: &Path,
    bytes: &[u8],
    mode: u32,
) -> std::io::Result<()> {
    // tempfile creates 0600; results and reports are meant to be read by others (umask still applies
    // to files created elsewhere, so match the usual 0644).
    use std::os::unix::fs::PermissionsExt;
    tmp.as_file()
        .set_permissions(std::fs::Permissions::from_mode(mode))?;
    tmp.write_all(bytes)?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

/// The first `program` on `PATH`, if any.
pub fn which(program: &str) -> Option<std::path::PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join(program))
            .find(|p| p.is_file())
    })
}
