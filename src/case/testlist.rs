//! Test-list files (`testlists/*.txt`): one case name per line; `#` starts a comment; blank lines are
//! skipped. Upstream's pytest node ids (`test_disagg.py::TestDisaggBenchmark::test_benchmark[NAME]`)
//! are accepted as they are, so existing lists work unchanged.

use std::path::{Path, PathBuf};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub line: usize,
    pub name: String,
}

#[derive(Debug, thiserror::Error)]
#[error("failed to read test list {}: {source}", path.display())]
pub struct ReadError {
    pub path: PathBuf,
    #[source]
    pub source: std::io::Error,
}

pub fn read(path: &Path) -> Result<Vec<Entry>, ReadError> {
    let text = std::fs::read_to_string(path).map_err(|source| ReadError {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(parse(&text))
}

pub fn parse(text: &str) -> Vec<Entry> {
    text.lines()
        .enumerate()
        .filter_map(|(i, raw)| {
            let line = match raw.find('#') {
                Some(pos) => &raw[..pos],
                None => raw,
            }
            .trim();
            if line.is_empty() {
                return None;
            }
            Some(Entry {
                line: i + 1,
                name: node_id_name(line).to_owned(),
            })
        })
        .collect()
}

/// `file.py::Class::test[NAME]` → `NAME`; anything else is taken as the name itself.
fn node_id_name(line: &str) -> &str {
    if line.contains("::") {
        if let (Some(open), true) = (line.find('['), line.ends_with(']')) {
            return &line[open + 1..line.len() - 1];
        }
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_names_node_ids_comments_and_blanks() {
        let text = "\
# a comment
disagg_perf_a

test_disagg.py::TestDisaggBenchmark::test_benchmark[disagg_perf_b]
  wideep_accuracy_c   # trailing comment
test_disagg.py::TestDisaggBenchmark::test_accuracy[wideep_accuracy_d-x]
";
        let names: Vec<(usize, String)> =
            parse(text).into_iter().map(|e| (e.line, e.name)).collect();
        assert_eq!(
            names,
            vec![
                (2, "disagg_perf_a".into()),
                (4, "disagg_perf_b".into()),
                (5, "wideep_accuracy_c".into()),
                (6, "wideep_accuracy_d-x".into()),
            ]
        );
    }
}
