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
