//! The results history: every executing run recorded in a database, for trends over runs and
//! regressions judged against a series rather than one baseline file.
//!
//! - `store.rs`: SQLite (default, an embedded file) or PostgreSQL (`SERVETEST_DB=postgres://…`), one
//!   schema with versioned migrations (`migrations/`, applied by refinery) for both.
//! - `changepoint.rs`: change points in a series (E-divisive means with a t-test, as Hunter does).
//! - `report.rs`: `servetest report history` — a table and an HTML page of charts over runs.

pub mod changepoint;
pub mod report;
pub mod store;

pub use store::{RunMeta, Store};

/// Where the database is: `SERVETEST_DB` (a path, `sqlite:PATH`, a `postgres://` URL, or `off`),
/// else `$OUTPUT_PATH/../servetest.db`. `None`: recording is off.
pub fn location() -> Option<String> {
    match std::env::var("SERVETEST_DB") {
        Ok(v) if v.eq_ignore_ascii_case("off") => None,
        Ok(v) if !v.trim().is_empty() => Some(v),
        _ => {
            let out = std::path::absolute(crate::env::output_path())
                .unwrap_or_else(|_| crate::env::output_path());
            let parent = out
                .parent()
                .map(std::path::Path::to_path_buf)
                .unwrap_or(out);
            Some(parent.join("servetest.db").display().to_string())
        }
    }
}

/// The URL with any password replaced, for messages.
pub fn shown(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            // Set as a plain word (the URL encoder would escape `<>`), shown as servetest shows
            // every masked value.
            let _ = u.set_password(Some("REDACTED"));
            u.to_string().replacen(":REDACTED@", ":<redacted>@", 1)
        }
        _ => url.to_owned(),
    }
}

/// Cases the harness runs in-process (cb), without a job or a RunContext: recorded in the history
/// of this process's run, opened at the first such case. A database that cannot be opened is said
/// once and the cases still run (their verdict does not depend on the record).
pub fn record_in_process(case: &crate::case::Case, result: &Result<String, String>) {
    static RECORDER: std::sync::OnceLock<Option<(Store, String)>> = std::sync::OnceLock::new();
    let recorder = RECORDER.get_or_init(|| {
        let location = location()?;
        let secs = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let run_id = format!("{secs}-{}", std::process::id());
        let opened = Store::open(&location).and_then(|store| {
            let mut meta = RunMeta::here(&run_id, "harness");
            meta.executor = Some("in-process".into());
            store.begin_run(&meta)?;
            Ok(store)
        });
        match opened {
            Ok(store) => Some((store, run_id)),
            Err(e) => {
                eprintln!("servetest: {e}; in-process cases are not recorded");
                None
            }
        }
    });
    let Some((store, run_id)) = recorder else {
        return;
    };
    let row = crate::report::results::Row {
        test_name: case.name.clone(),
        family: case.family.name.to_owned(),
        category: case.category.clone(),
        model: case.model().unwrap_or_default().to_owned(),
        variant: String::new(),
        gpu_type: crate::env::gpu_type(),
        executor: "in-process".into(),
        job_id: run_id.clone(),
        concurrency: None,
        state: if result.is_ok() {
            "COMPLETED"
        } else {
            "FAILED"
        }
        .into(),
        start: None,
        end: None,
        metrics: [("passed".to_owned(), if result.is_ok() { 1.0 } else { 0.0 })].into(),
    };
    let recorded = store
        .record(run_id, &[row], &store::case_hash(&case.path))
        .and_then(|()| match result {
            Err(reason) => store.record_failure(run_id, &case.name, reason),
            Ok(_) => Ok(()),
        });
    if let Err(e) = recorded {
        eprintln!("servetest: {}: {e}", case.name);
    }
}
