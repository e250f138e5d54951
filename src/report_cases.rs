//! Text and JSON views of discovered cases, shared by `servetest list|validate` and the harness.

use serde::Serialize;

use crate::case::discover::Discovery;
use crate::case::Case;

#[derive(Debug, Serialize)]
pub struct CaseRow<'a> {
    pub name: &'a str,
    pub family: &'a str,
    pub category: &'a str,
    pub kind: &'a str,
    pub path: String,
    pub model: Option<&'a str>,
    pub gpus: Option<u64>,
    pub supported_gpus: Option<&'a [String]>,
    pub valid: bool,
    pub ignored: Option<String>,
}

impl<'a> CaseRow<'a> {
    pub fn new(case: &'a Case, gpu_type: &str) -> Self {
        CaseRow {
            name: &case.name,
            family: case.family.name,
            category: &case.category,
            kind: case.kind(),
            path: case.path.display().to_string(),
            model: case.model(),
            gpus: case.total_gpus(),
            supported_gpus: case.supported_gpus(),
            valid: case.is_valid(),
            ignored: case.gpu_ignore_reason(gpu_type),
        }
    }
}

/// Every violation, one per line, then a one-line summary.
pub fn violations_text(discovery: &Discovery, include_warnings: bool) -> String {
    let mut out = String::new();
    let mut warnings = 0;
    for v in discovery.violations() {
        if !v.is_error() {
            warnings += 1;
            if !include_warnings {
                continue;
            }
        }
        out.push_str(&v.to_string());
        out.push('\n');
    }
    let invalid = discovery.cases.iter().filter(|c| !c.is_valid()).count();
    out.push_str(&format!(
        "{} case(s), {} invalid; {} error(s), {} warning(s)\n",
        discovery.cases.len(),
        invalid,
        discovery.error_count(),
        warnings
    ));
    out
}
