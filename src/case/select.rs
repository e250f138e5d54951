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
            .filter(|(_, c)| listed.as_ref().is_none_or(|names| names.contains(&c.name)))
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
        let known: Vec<&str> = cases.iter().map(|c| c.name.as_str()).collect();
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
