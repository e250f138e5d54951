//! Which cases a run selects: `--filter` substrings (any may match; `--exact` for whole names) and an
//! optional test list. Selection keeps discovery order, so batching is deterministic.

use std::path::{Path, PathBuf};

use super::load::suggest;
use super::{testlist, Case};

#[derive(Debug, Clone, Default)]
pub struct Selector {
    pub filters: Vec<String>,
    pub exact: bool,
    pub test_list: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum SelectError {
    #[error(transparent)]
    Read(#[from] testlist::ReadError),
    #[error("test list {} names cases that do not exist:\n{}", path.display(), lines.join("\n"))]
    UnknownNames { path: PathBuf, lines: Vec<String> },
    #[error("test list {} selects no case (it is empty or only has comments)", path.display())]
    Empty { path: PathBuf },
}

impl Selector {
    fn filter_matches(&self, name: &str) -> bool {
        self.filters.is_empty()
            || self.filters.iter().any(|f| {
                if self.exact {
                    name == f
                } else {
                    name.contains(f.as_str())
                }
            })
    }

    /// Indices into `cases` of the selected ones, in discovery order.
    pub fn select(&self, cases: &[Case]) -> Result<Vec<usize>, SelectError> {
        let listed = match &self.test_list {
            Some(path) => Some(self.listed_names(path, cases)?),
            None => None,
        };
        Ok(cases
            .iter()
            .enumerate()
            .filter(|(_, c)| {
                listed.as_ref().is_none_or(|names| {
                    names.contains(&c.name) || names.iter().any(|n| n == base_name(&c.name))
                })
            })
            .filter(|(_, c)| self.filter_matches(&c.name))
            .map(|(i, _)| i)
            .collect())
    }

    fn listed_names(&self, path: &Path, cases: &[Case]) -> Result<Vec<String>, SelectError> {
        let entries = testlist::read(path)?;
        if entries.is_empty() {
            return Err(SelectError::Empty {
                path: path.to_path_buf(),
            });
        }
        // A case that expands into variants (`NAME[…]`: cb matrices, aggr server configs) is listed
        // whole by its base name.
        let mut known: Vec<&str> = cases.iter().map(|c| c.name.as_str()).collect();
        known.extend(cases.iter().map(|c| base_name(&c.name)));
        known.sort_unstable();
        known.dedup();
        let unknown: Vec<String> = entries
            .iter()
            .filter(|e| !known.contains(&e.name.as_str()))
            .map(|e| {
                let hint = suggest(&e.name, &known)
                    .map(|s| format!(" (did you mean `{s}`?)"))
                    .unwrap_or_default();
                format!("  {}:{}: `{}`{hint}", path.display(), e.line, e.name)
            })
            .collect();
        if !unknown.is_empty() {
            return Err(SelectError::UnknownNames {
                path: path.to_path_buf(),
                lines: unknown,
            });
        }
        Ok(entries.into_iter().map(|e| e.name).collect())
    }
}

/// A variant's case name without its `[…]` suffix.
fn base_name(name: &str) -> &str {
    match name.split_once('[') {
        Some((base, _)) if name.ends_with(']') => base,
        _ => name,
    }
}

/// Up to `k` case names closest to `query` (names containing it first, then by Jaro-Winkler), for
/// "did you mean" lines when a selection matches nothing.
pub fn closest<'a>(query: &str, names: &[&'a str], k: usize) -> Vec<&'a str> {
    let q = query.to_ascii_lowercase();
    let mut scored: Vec<(f64, &'a str)> = names
        .iter()
        .map(|n| {
            let lower = n.to_ascii_lowercase();
            let score = if lower.contains(&q) || q.contains(&lower) {
                2.0
            } else {
                // Names are long and typed from their start: a typo of a name's beginning
                // ranks by that beginning, not by how much longer the rest of the name is.
                let head: String = lower.chars().take(q.chars().count()).collect();
                strsim::jaro_winkler(&q, &lower).max(strsim::jaro_winkler(&q, &head))
            };
            (score, *n)
        })
        .collect();
    scored.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(b.1)));
    scored.into_iter().take(k).map(|(_, n)| n).collect()
}

#[cfg(test)]
mod tests {
    use super::closest;

    #[test]
    fn closest_names_rank_typos_first() {
        let names = [
            "disagg_perf_tiny",
            "disagg_accuracy_tiny",
            "script_perf_hello",
        ];
        assert_eq!(
            closest("disagg_perf_tinny", &names, 1),
            ["disagg_perf_tiny"]
        );
        assert_eq!(closest("hello", &names, 1), ["script_perf_hello"]);
        let long = [
            "disagg_perf_multinode-tiny-llama_ctx1_tp1_bs8_gen1_tp1_bs8_ccb-STORAGE",
            "disagg_perf_tiny-llama_ctx1_tp1_bs8_gen1_tp1_bs8_ccb-STORAGE",
        ];
        assert_eq!(closest("disagg_perf_tinny", &long, 1), [long[1]]);
        assert_eq!(closest("x", &names, 5).len(), 3);
    }
}
