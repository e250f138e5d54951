//! Finds case files: `{root}/{family}/{category}/*.yaml|yml`, in a stable (sorted) order. Family and
//! category come from the two directories above each file, so `servetest validate` can be pointed at
//! the root, one family, one category or single files alike. A YAML file anywhere else is an error,
//! never silently ignored; other files (README.md) are ignored, as is a top-level `templates/`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use rayon::prelude::*;
use walkdir::WalkDir;

use super::load::suggest;
use super::violation::Violation;
use super::{family, Case, FAMILIES};

#[derive(Debug, Default)]
pub struct Discovery {
    /// Every case found, sorted by path.
    pub cases: Vec<Case>,
    /// Problems not tied to one case's content: misplaced files, unknown directories, duplicates.
    pub problems: Vec<Violation>,
}

impl Discovery {
    /// Every problem, structural ones first, then each case's, in path order.
    pub fn violations(&self) -> impl Iterator<Item = &Violation> {
        self.problems
            .iter()
            .chain(self.cases.iter().flat_map(|c| c.violations.iter()))
    }

    pub fn error_count(&self) -> usize {
        self.violations().filter(|v| v.is_error()).count()
    }
}

fn is_yaml(path: &Path) -> bool {
    matches!(
        path.extension().and_then(|e| e.to_str()),
        Some("yaml" | "yml")
    )
}

/// Discovers every case under each of `paths` (directories or files).
pub fn discover(paths: &[PathBuf]) -> Discovery {
    let mut files = Vec::new();
    let mut problems = Vec::new();
    for root in paths {
        if !root.exists() {
            problems.push(at(root, "", "does not exist".into()));
            continue;
        }
        let walker = WalkDir::new(root)
            .sort_by_file_name()
            .into_iter()
            .filter_entry(|e| {
                !(e.depth() == 1 && e.file_type().is_dir() && e.file_name() == "templates")
            });
        for entry in walker {
            match entry {
                Ok(e) if e.file_type().is_file() && is_yaml(e.path()) => files.push(e.into_path()),
                Ok(_) => {}
                Err(e) => problems.push(at(
                    e.path().unwrap_or(root),
                    "",
                    format!("failed to read directory entry: {e}"),
                )),
            }
        }
    }

    let mut placed = Vec::with_capacity(files.len());
    for file in files {
        match place(&file) {
            Ok((fam, cat)) => placed.push((file, fam, cat)),
            Err(reason) => problems.push(at(&file, "", reason)),
        }
    }
    let mut cases: Vec<Case> = placed
        .par_iter()
        .map(|(file, fam, cat)| Case::load(file, fam, cat))
        .collect::<Vec<_>>()
        .into_iter()
        .flat_map(Case::expand)
        .collect();
    cases.sort_by(|a, b| a.path.cmp(&b.path));
    cases.dedup_by(|a, b| a.path == b.path && a.name == b.name);

    let mut seen: HashMap<&str, &Path> = HashMap::new();
    for case in &cases {
        if let Some(first) = seen.insert(&case.name, &case.path) {
            problems.push(at(
                &case.path,
                "",
                format!(
                    "duplicate case name `{}` (also from {})",
                    case.name,
                    first.display()
                ),
            ));
        }
    }
    Discovery { cases, problems }
}

/// Family and category of a file from its two parent directories.
fn place(file: &Path) -> Result<(&'static super::Family, String), String> {
    let dir_name = |p: Option<&Path>| {
        p.and_then(|p| p.file_name())
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    };
    let category_dir = file.parent();
    let category = dir_name(category_dir);
    let family_name = dir_name(category_dir.and_then(Path::parent));
    let families: Vec<&str> = FAMILIES.iter().map(|f| f.name).collect();
    let layout = "case files belong in test_configs/{family}/{category}/NAME.yaml";
    let Some(fam) = family(&family_name) else {
        let above = dir_name(category_dir.and_then(Path::parent).and_then(Path::parent));
        if family(&above).is_some_and(|f| f.categories.contains(&family_name.as_str())) {
            return Err(format!(
                "{layout}; directories below a category (`{family_name}/{category}`) are not supported"
            ));
        }
        if family(&category).is_some() {
            return Err(format!(
                "{layout}; this file sits directly in the family directory `{category}`"
            ));
        }
        let hint = suggest(&family_name, &families)
            .map(|s| format!("; did you mean `{s}`?"))
            .unwrap_or_default();
        return Err(format!(
            "{layout}; `{family_name}` is not a known family ({}){hint}",
            families.join(", ")
        ));
    };
    if !fam.categories.contains(&category.as_str()) {
        let hint = suggest(&category, fam.categories)
            .map(|s| format!("; did you mean `{s}`?"))
            .unwrap_or_default();
        return Err(format!(
            "`{category}` is not a category of family `{}` ({}){hint}",
            fam.name,
            fam.categories.join(", ")
        ));
    }
    Ok((fam, category))
}

fn at(path: &Path, key: &str, reason: String) -> Violation {
    let mut v = Violation::error(key, reason);
    v.file = path.to_path_buf();
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    const CASE: &str = "tests/fixtures/invalid/mtp-token-budget-larger/deepseek-r1-fp4_1k1k_ctx1_gen1_dep32_bs32_eplb0_mtp3_ccb-NIXL.yaml";

    fn tree(files: &[&str]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let text = fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(CASE)).unwrap();
        for f in files {
            let p = dir.path().join(f);
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            fs::write(p, &text).unwrap();
        }
        dir
    }

    fn reasons(d: &Discovery) -> Vec<String> {
        d.problems.iter().map(|p| p.reason.clone()).collect()
    }

    #[test]
    fn layout_errors_are_reported_not_ignored() {
        let dir = tree(&[
            "disagg/perf/a_1k1k.yaml",
            "stray.yaml",
            "disagg/loose.yaml",
            "disagg/accurracy/b.yaml",
            "dissagg/perf/c.yaml",
            "disagg/perf/nested/d.yaml",
            "templates/base.yaml",
            "README.md",
        ]);
        let d = discover(&[dir.path().to_path_buf()]);
        let r = reasons(&d);
        assert_eq!(d.cases.len(), 1, "{r:?}");
        assert_eq!(d.cases[0].name, "disagg_perf_a_1k1k");
        assert_eq!(r.len(), 5, "{r:#?}");
        assert!(r.iter().any(|x| x.contains("did you mean `accuracy`")));
        assert!(r.iter().any(|x| x.contains("did you mean `disagg`")));
        assert!(r
            .iter()
            .any(|x| x.contains("directly in the family directory `disagg`")));
        assert!(r
            .iter()
            .any(|x| x.contains("below a category (`perf/nested`)")));
    }

    #[test]
    fn duplicate_names_are_errors_and_order_is_stable() {
        let dir = tree(&[
            "wideep/perf/z.yaml",
            "disagg/perf/x.yaml",
            "disagg/perf/x.yml",
        ]);
        let d = discover(&[dir.path().to_path_buf()]);
        let names: Vec<&str> = d.cases.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["disagg_perf_x", "disagg_perf_x", "wideep_perf_z"]);
        assert!(reasons(&d)[0].contains("duplicate case name `disagg_perf_x`"));
    }

    #[test]
    fn single_files_and_subtrees_can_be_named() {
        let dir = tree(&["disagg/perf/x.yaml", "wideep/perf/y.yaml"]);
        let d = discover(&[
            dir.path().join("wideep"),
            dir.path().join("disagg/perf/x.yaml"),
        ]);
        assert_eq!(d.cases.len(), 2);
        assert!(d.problems.is_empty());
        let missing = discover(&[dir.path().join("nope")]);
        assert!(reasons(&missing)[0].contains("does not exist"));
    }
}
