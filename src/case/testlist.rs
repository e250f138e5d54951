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
    parse_with(text, &crate::env::perf_test_id())
}

/// `parse` with the perf-sanity id parts given (`PERF_TEST_*` in `parse`).
pub fn parse_with(text: &str, id: &crate::env::PerfTestId) -> Vec<Entry> {
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
                name: node_id_name(line, &id.prefix),
            })
        })
        .collect()
}

/// `file.py::Class::test[NAME]` → `NAME`; anything else is taken as the name itself.
/// The case name of one list line: a plain name, or a pytest node id (`file.py::Class::test[NAME]`),
/// optionally as a YAML list item (upstream's test-db files) and with a CI suffix such as
/// ` TIMEOUT (120)`. Perf-sanity ids `test_e2e[disagg_upload-[e2e-|gen_only-]STEM]` name the
/// `disagg/perf-sanity/STEM.yaml` case (`disagg_upload` is `PERF_TEST_PREFIX`'s default).
fn node_id_name(line: &str, perf_prefix: &str) -> String {
    static SUFFIX: std::sync::LazyLock<regex::Regex> = std::sync::LazyLock::new(|| {
        regex::Regex::new(r"\s+(TIMEOUT|ISOLATION)\b.*$").expect("static regex")
    });
    let line = line.strip_prefix("- ").unwrap_or(line).trim();
    let line = if line.contains("::") {
        SUFFIX.replace(line, "").into_owned()
    } else {
        line.to_owned()
    };
    if !line.contains("::") {
        return line;
    }
    let (Some(open), true) = (line.find('['), line.ends_with(']')) else {
        return line;
    };
    let id = &line[open + 1..line.len() - 1];
    // Older upstream ids: `{family}_{category}_file:{stem}_{ISL}k{OSL}k_ctx:N_gen:M_…`.
    static OLD_ID: std::sync::LazyLock<regex::Regex> = std::sync::LazyLock::new(|| {
        regex::Regex::new(r"^([a-z]+)_([a-z-]+)_file:(.+?)_\d+k\d+k_ctx:").expect("static regex")
    });
    if let Some(c) = OLD_ID.captures(id) {
        return crate::case::Case::make_name(&c[1], &c[2], &c[3]);
    }
    let prefix = format!("{perf_prefix}-");
    let aggr_prefix = format!("{}-", aggr_prefix(perf_prefix));
    if let Some(rest) = id.strip_prefix(prefix.as_str()) {
        let stem = rest
            .strip_prefix("e2e-")
            .or_else(|| rest.strip_prefix("gen_only-"))
            .unwrap_or(rest);
        return crate::case::Case::make_name("disagg", "perf-sanity", stem);
    }
    // Upstream's aggregated ids: `aggr_upload-FILE` (every server config of FILE, which upstream
    // takes up to the first `-`) and `aggr_upload-FILE-SERVER` (one). `ctx_only-…` ids run a disagg
    // file aggregated, which servetest does not: they stay unknown names.
    match id.strip_prefix(aggr_prefix.as_str()) {
        Some(rest) if !rest.starts_with("ctx_only-") => {
            let (file, server) = match rest.split_once('-') {
                Some((file, server)) => (file, Some(server)),
                None => (rest, None),
            };
            let case = crate::case::Case::make_name("aggr", "perf-sanity", file);
            match server {
                Some(server) => format!("{case}[{server}]"),
                None => case,
            }
        }
        _ => id.to_owned(),
    }
}

/// The aggregated tests' prefix: `PERF_TEST_PREFIX` with `disagg` read as `aggr` (upstream collects
/// `disagg_upload-…` and `aggr_upload-…` side by side).
fn aggr_prefix(perf_prefix: &str) -> String {
    perf_prefix.replacen("disagg", "aggr", 1)
}

/// An aggr trial as upstream's pytest reports it: (`perf.test_perf_sanity`,
/// `test_e2e[aggr_upload-FILE-SERVER]`).
pub fn aggr_junit(stem: &str, server: &str) -> (String, String) {
    let id = crate::env::perf_test_id();
    let (classname, _) = perf_sanity_junit_with(&id, stem, false);
    (
        classname,
        format!(
            "{}[{}-{stem}-{server}]",
            id.function,
            aggr_prefix(&id.prefix)
        ),
    )
}

/// A perf-sanity case as upstream's pytest reports it: (`perf.test_perf_sanity`,
/// `test_e2e[disagg_upload-e2e-STEM]`), from `PERF_TEST_MODULE/FUNCTION/PREFIX`, so CI dashboards
/// keyed on upstream's JUnit ids keep their history.
pub fn perf_sanity_junit(stem: &str, gen_only: bool) -> (String, String) {
    perf_sanity_junit_with(&crate::env::perf_test_id(), stem, gen_only)
}

fn perf_sanity_junit_with(
    id: &crate::env::PerfTestId,
    stem: &str,
    gen_only: bool,
) -> (String, String) {
    let classname = id
        .module
        .strip_suffix(".py")
        .unwrap_or(&id.module)
        .replace('/', ".");
    let mode = if gen_only { "gen_only" } else { "e2e" };
    (
        classname,
        format!("{}[{}-{mode}-{stem}]", id.function, id.prefix),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn perf_test_variables_name_ids_both_ways() {
        let default = crate::env::PerfTestId {
            module: "perf/test_perf_sanity.py".into(),
            function: "test_e2e".into(),
            prefix: "disagg_upload".into(),
        };
        assert_eq!(
            perf_sanity_junit_with(&default, "gb200_ds", true),
            (
                "perf.test_perf_sanity".to_owned(),
                "test_e2e[disagg_upload-gen_only-gb200_ds]".to_owned()
            )
        );
        let mine = crate::env::PerfTestId {
            module: "perf/test_mine.py".into(),
            function: "test_x".into(),
            prefix: "my_upload".into(),
        };
        let names: Vec<String> = parse_with(
            "perf/test_mine.py::test_x[my_upload-e2e-cfg_a]\nperf/test_perf_sanity.py::test_e2e[disagg_upload-e2e-cfg_b]\n",
            &mine,
        )
        .into_iter()
        .map(|e| e.name)
        .collect();
        assert_eq!(
            names,
            ["disagg_perf-sanity_cfg_a", "disagg_upload-e2e-cfg_b"],
            "the prefix names the case; another prefix is taken as a name"
        );
        assert_eq!(
            perf_sanity_junit_with(&mine, "cfg_a", false),
            (
                "perf.test_mine".to_owned(),
                "test_x[my_upload-e2e-cfg_a]".to_owned()
            )
        );
    }

    #[test]
    fn aggregated_perf_sanity_ids_name_a_file_or_one_server_config() {
        let default = crate::env::PerfTestId {
            module: "perf/test_perf_sanity.py".into(),
            function: "test_e2e".into(),
            prefix: "disagg_upload".into(),
        };
        let names: Vec<String> = parse_with(
            "perf/test_perf_sanity.py::test_e2e[aggr_upload-deepseek_r1_fp4_v2_grace_blackwell-r1_fp4_v2_dep4_mtp1_1k1k] TIMEOUT (90)\n\
             perf/test_perf_sanity.py::test_e2e[aggr_upload-gpt_oss_120b_fp4_blackwell]\n\
             perf/test_perf_sanity.py::test_e2e[aggr_upload-ctx_only-gb200_ds-r1]\n",
            &default,
        )
        .into_iter()
        .map(|e| e.name)
        .collect();
        assert_eq!(
            names,
            [
                "aggr_perf-sanity_deepseek_r1_fp4_v2_grace_blackwell[r1_fp4_v2_dep4_mtp1_1k1k]",
                "aggr_perf-sanity_gpt_oss_120b_fp4_blackwell",
                "aggr_upload-ctx_only-gb200_ds-r1",
            ]
        );
    }

    #[test]
    fn plain_names_node_ids_comments_and_blanks() {
        let text = "\
# a comment
disagg_perf_a

test_disagg.py::TestDisaggBenchmark::test_benchmark[disagg_perf_b]
  wideep_accuracy_c   # trailing comment
test_disagg.py::TestDisaggBenchmark::test_accuracy[wideep_accuracy_d-x]
perf/test_perf_sanity.py::test_e2e[disagg_upload-gb200-deepseek-r1_ccb-UCX] TIMEOUT (120)
  - perf/test_perf_sanity.py::test_e2e[disagg_upload-gen_only-gb200_ds_con1024] TIMEOUT (120)
perf/test_perf_sanity.py::test_e2e[disagg_upload-e2e-gb200_ds_con1]
test_disagg.py::TestDisaggBenchmark::test_benchmark[disagg_perf_file:ds-r1_000_1k1k_ctx:1_gen:4_tep:8_bs:32_eplb:0_mtp:3_ccbackend:NIXL]
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
                (7, "disagg_perf-sanity_gb200-deepseek-r1_ccb-UCX".into()),
                (8, "disagg_perf-sanity_gb200_ds_con1024".into()),
                (9, "disagg_perf-sanity_gb200_ds_con1".into()),
                (10, "disagg_perf_ds-r1_000".into()),
            ]
        );
    }
}
