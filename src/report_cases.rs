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

/// One note naming the keys of `cases` that upstream's loader overwrites from its environment (their
/// file values act nowhere, upstream included) and what servetest uses instead; `None` if none.
pub fn loader_overwritten_note<'a>(
    cases: impl IntoIterator<Item = &'a crate::case::Case>,
) -> Option<String> {
    let mut seen: std::collections::BTreeMap<&str, (&str, usize)> = Default::default();
    for case in cases {
        if let Some(spec) = case.disagg() {
            for (key, instead) in crate::disagg::validate::loader_overwritten_keys(spec) {
                seen.entry(key).or_insert((instead, 0)).1 += 1;
            }
        }
    }
    if seen.is_empty() {
        return None;
    }
    let keys: Vec<String> = seen
        .iter()
        .map(|(k, (instead, n))| format!("{k} ({n} file(s); servetest: {instead})"))
        .collect();
    Some(format!(
        "note: keys upstream's loader overwrites from its environment, so their file values are not used (docs/upstream.md): {}",
        keys.join("; ")
    ))
}
