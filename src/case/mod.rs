//! Cases: the YAML files under `test_configs/{family}/{category}/`, typed, validated and named.

pub mod common;
pub mod discover;
pub mod load;
pub mod locate;
pub mod select;
pub mod testlist;
pub mod violation;

use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use crate::family::{family, Family, Loaded, Spec, FAMILIES};

use self::violation::Violation;

#[derive(Debug, Clone)]
pub struct Case {
    /// `{family}_{category}_{file stem}`: the trial name.
    pub name: String,
    pub family: &'static Family,
    pub category: String,
    pub path: PathBuf,
    /// `None` when the file did not deserialize (see `violations`).
    pub spec: Option<Arc<dyn Spec>>,
    /// Errors and warnings, each with file and line.
    pub violations: Vec<Violation>,
}

/// The GPU type `supported_gpus` is matched against: upstream's loader maps every `GB200_…` variant
/// (e.g. `GB200_LYRIS`, a GB200 system) to `GB200`; other values are used as they are.
pub fn gpu_family(gpu_type: &str) -> &str {
    let upper = gpu_type.get(..6).map(str::to_ascii_uppercase);
    if upper.as_deref() == Some("GB200_") {
        &gpu_type[..5]
    } else {
        gpu_type
    }
}

impl Case {
    pub fn make_name(family: &str, category: &str, stem: &str) -> String {
        format!("{family}_{category}_{stem}")
    }

    /// Reads, deserializes, validates and name-checks one file.
    pub fn load(path: &Path, family: &'static Family, category: &str) -> Case {
        let stem = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let name = Case::make_name(family.name, category, &stem);
        let (spec, mut violations) = match std::fs::read_to_string(path) {
            Ok(text) => {
                // A UTF-8 byte-order mark is legal YAML (editors on Windows write one).
                let text = text.strip_prefix('\u{feff}').unwrap_or(&text);
                let (spec, mut violations) = (family.load)(text, category, &stem);
                locate::fill_lines(&mut violations, text);
                (spec, violations)
            }
            Err(e) => (
                None,
                vec![Violation::error("", format!("failed to read: {e}"))],
            ),
        };
        for v in &mut violations {
            v.file = path.to_path_buf();
        }
        violations.sort_by_key(|v| (std::cmp::Reverse(v.severity), v.line));
        Case {
            name,
            family,
            category: category.to_owned(),
            path: path.to_path_buf(),
            spec,
            violations,
        }
    }

    /// Loads one case file from `…/<family>/<category>/<stem>.yaml` (what job steps get), refusing
    /// an invalid one with all its violations.
    pub fn load_file(path: &Path) -> Result<Case, String> {
        let parent = path.parent();
        let name_of = |p: Option<&Path>| {
            p.and_then(Path::file_name)
                .and_then(|s| s.to_str())
                .unwrap_or_default()
                .to_owned()
        };
        let category = name_of(parent);
        let fam_name = name_of(parent.and_then(Path::parent));
        let fam = family(&fam_name).ok_or_else(|| {
            format!(
                "{}: not under <family>/<category>/ (found family `{fam_name}`)",
                path.display()
            )
        })?;
        let case = Case::load(path, fam, &category);
        if !case.is_valid() {
            let errors: Vec<String> = case.errors().map(|v| v.to_string()).collect();
            return Err(format!(
                "{}: the case is invalid:\n{}",
                path.display(),
                errors.join("\n")
            ));
        }
        Ok(case)
    }

    /// The libtest-mimic kind shown as `[kind]`: the category; the family's name for families that
    /// run in the harness process (cb), whose categories say what they compare.
    pub fn kind(&self) -> &str {
        if self.family.in_process.is_some() {
            self.family.name
        } else {
            &self.category
        }
    }

    /// A case whose family expands it (cb: `matrix:`, `SERVETEST_CB_MODELS`) becomes one case per
    /// variant, named `<name>[key=value,…]`; every other case is itself.
    pub fn expand(self) -> Vec<Case> {
        let variants = match &self.spec {
            Some(spec) if self.is_valid() || spec.expands_with_errors() => spec.variants(),
            _ => Vec::new(),
        };
        if variants.is_empty() {
            return vec![self];
        }
        variants
            .into_iter()
            .map(|v| {
                let violations = match v.entry {
                    Some((list, i)) => {
                        let own = format!("{list}.{i}");
                        let prefix = format!("{list}.");
                        self.violations
                            .iter()
                            .filter(|x| match x.key.strip_prefix(&prefix) {
                                Some(_) => x.key == own || x.key.starts_with(&format!("{own}.")),
                                None => true,
                            })
                            .cloned()
                            .collect()
                    }
                    None => self.violations.clone(),
                };
                Case {
                    name: format!("{}{}", self.name, v.suffix),
                    spec: Some(v.spec),
                    violations,
                    ..self.clone()
                }
            })
            .collect()
    }

    pub fn errors(&self) -> impl Iterator<Item = &Violation> {
        self.violations.iter().filter(|v| v.is_error())
    }

    pub fn is_valid(&self) -> bool {
        self.errors().next().is_none()
    }

    /// The spec as its family's own type (`None` for another family's case, or one that did not
    /// load).
    pub fn spec_of<T: Spec>(&self) -> Option<&T> {
        self.spec.as_deref()?.downcast::<T>()
    }

    pub fn disagg(&self) -> Option<&crate::disagg::schema::DisaggSpec> {
        self.spec_of()
    }

    pub fn model(&self) -> Option<&str> {
        self.spec.as_deref()?.model()
    }

    /// `None`: the case runs on any GPU type.
    pub fn supported_gpus(&self) -> Option<&[String]> {
        self.spec.as_deref()?.supported_gpus()
    }

    /// Why this case cannot run on `gpu_type`, if it cannot.
    pub fn gpu_ignore_reason(&self, gpu_type: &str) -> Option<String> {
        let gpus = self.supported_gpus()?;
        let family = gpu_family(gpu_type);
        if gpus.iter().any(|g| g.eq_ignore_ascii_case(family)) {
            None
        } else {
            let shown = if family == gpu_type {
                gpu_type.to_owned()
            } else {
                format!("{gpu_type} (family {family})")
            };
            Some(format!(
                "GPU_TYPE={shown} is not in metadata.supported_gpus [{}]",
                gpus.join(", ")
            ))
        }
    }

    /// Total GPUs one job of this case occupies (all ctx and gen workers of a disagg case).
    pub fn total_gpus(&self) -> Option<u64> {
        Some(self.spec.as_deref()?.total_gpus())
    }
}

#[cfg(test)]
mod fixture_tests {
    //! Each directory under tests/fixtures/invalid/ breaks one rule. Its file declares, in header
    //! comments, exactly the errors it must produce (`# expect: KEY :: TEXT`) and any warnings
    //! (`# expect-warning: …`). Removing a rule makes its fixture fail; so does a new, unexpected error.
    use super::*;
    use crate::case::violation::Severity;
    use crate::disagg::schema::{self, DisaggSpec};
    use crate::disagg::{name, validate};

    fn expectations(text: &str, tag: &str) -> Vec<(String, String)> {
        text.lines()
            .filter_map(|l| l.strip_prefix(tag))
            .map(|l| {
                let (k, f) = l.split_once(" :: ").expect("`KEY :: TEXT`");
                (k.trim().to_owned(), f.trim().to_owned())
            })
            .collect()
    }

    #[test]
    fn every_invalid_fixture_reports_exactly_its_violations() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/invalid");
        let mut checked = 0;
        for dir in std::fs::read_dir(&root).expect("fixtures dir") {
            let dir = dir.unwrap().path();
            for file in std::fs::read_dir(&dir).unwrap() {
                let file = file.unwrap().path();
                let text = std::fs::read_to_string(&file).unwrap();
                let category = text
                    .lines()
                    .find_map(|l| l.strip_prefix("# category: "))
                    .unwrap_or("perf");
                let case = Case::load(&file, family("disagg").unwrap(), category);
                for (tag, severity) in [
                    ("# expect: ", Severity::Error),
                    ("# expect-warning: ", Severity::Warning),
                ] {
                    let expected = expectations(&text, tag);
                    let got: Vec<&Violation> = case
                        .violations
                        .iter()
                        .filter(|v| v.severity == severity)
                        .collect();
                    for (key, fragment) in &expected {
                        let hit = got
                            .iter()
                            .find(|v| v.key == *key && v.reason.contains(fragment));
                        let hit = hit.unwrap_or_else(|| {
                            panic!(
                                "{}: expected {key} :: {fragment}; got {got:#?}",
                                file.display()
                            )
                        });
                        if !key.is_empty() {
                            assert!(hit.line.is_some(), "{}: {key} has no line", file.display());
                        }
                    }
                    if severity == Severity::Error {
                        for v in &got {
                            assert!(
                                expected
                                    .iter()
                                    .any(|(k, f)| v.key == *k && v.reason.contains(f)),
                                "{}: unexpected error {v}",
                                file.display()
                            );
                        }
                    }
                }
                checked += 1;
            }
        }
        assert!(checked >= 30, "only {checked} fixtures found");
    }

    /// Name ↔ content mismatches are warnings (upstream ignores names); strict mode makes each one
    /// an error, the same set.
    #[test]
    fn name_mismatches_warn_by_default_and_fail_in_strict_mode() {
        for dir in ["name-mismatch", "name-attention-dp"] {
            let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/fixtures/invalid")
                .join(dir);
            let file = dir.read_dir().unwrap().next().unwrap().unwrap().path();
            let text = std::fs::read_to_string(&file).unwrap();
            let stem = file.file_stem().unwrap().to_str().unwrap();
            let (spec, _) = load::parse_spec::<DisaggSpec>(&text, schema::known_fields);
            let spec = spec.unwrap();
            let lenient = name::check(stem, &spec, false);
            let strict = name::check(stem, &spec, true);
            let says = |v: &&Violation| v.reason.contains("file name says");
            let warned: Vec<_> = lenient.iter().filter(says).collect();
            assert!(!warned.is_empty(), "{}", file.display());
            assert!(warned.iter().all(|v| !v.is_error()), "{warned:#?}");
            let failed: Vec<_> = strict.iter().filter(says).collect();
            assert_eq!(failed.len(), warned.len());
            assert!(failed.iter().all(|v| v.is_error()), "{failed:#?}");
            let case = Case::load(&file, family("disagg").unwrap(), "perf");
            assert!(case.is_valid(), "{:#?}", case.violations);
        }
    }

    #[test]
    fn gb200_variants_match_gb200_as_upstream_maps_them() {
        assert_eq!(gpu_family("GB200_LYRIS"), "GB200");
        assert_eq!(gpu_family("gb200_lyris"), "gb200");
        assert_eq!(gpu_family("GB200"), "GB200");
        assert_eq!(gpu_family("GB300"), "GB300");
        assert_eq!(gpu_family("GB300_X"), "GB300_X");
        let file = Path::new(env!("CARGO_MANIFEST_DIR")).join(
            "test_configs/disagg/perf/deepseek-r1-fp4_1k1k_ctx1_gen4_tep8_bs32_eplb0_mtp0_ccb-NIXL.yaml",
        );
        let case = Case::load(&file, family("disagg").unwrap(), "perf");
        assert_eq!(case.gpu_ignore_reason("GB200_LYRIS"), None);
        assert!(case.gpu_ignore_reason("H200").is_some());
    }

    /// Keys upstream reads load and are acted on: benchmark_ratio 0.0 (perf-sanity) is fixed lengths,
    /// enable_benchmark/profile ranges/eplb_num_slots are known.
    #[test]
    fn upstream_keys_load() {
        let file = Path::new(env!("CARGO_MANIFEST_DIR")).join(
            "test_configs/disagg/perf/deepseek-r1-fp4_1k1k_ctx1_gen4_tep8_bs32_eplb0_mtp0_ccb-NIXL.yaml",
        );
        let text = std::fs::read_to_string(&file).unwrap();
        let with = |extra: &str| {
            let t = text
                .lines()
                .filter(|l| !l.contains("benchmark_ratio:") && !l.contains("use_nv_sa_benchmark:"))
                .map(|l| format!("{l}\n"))
                .collect::<String>()
                .replacen("benchmark:\n", &format!("benchmark:\n{extra}"), 1)
                .replacen(
                    "worker_config:\n",
                    "worker_config:\n  eplb_num_slots: 0\n",
                    1,
                )
                .replacen(
                    "profiling:\n",
                    "profiling:\n  ctx_profile_range: 10-30\n  gen_profile_range: 200-250\n",
                    1,
                );
            let (spec, v) = load::parse_spec::<DisaggSpec>(&t, schema::known_fields);
            let mut v = v;
            if let Some(spec) = &spec {
                v.extend(validate::validate(spec, "perf"));
            }
            v.into_iter().map(|v| v.to_string()).collect::<Vec<_>>()
        };
        assert_eq!(
            with("  benchmark_ratio: 0.0\n  enable_benchmark: true\n"),
            Vec::<String>::new()
        );
        let bad = with("  benchmark_ratio: 1.5\n  enable_benchmark: false\n");
        assert!(
            bad.iter()
                .any(|v| v.contains("benchmark_ratio: must be in [0, 1]")),
            "{bad:?}"
        );
        assert!(
            bad.iter()
                .any(|v| v.contains("enable_benchmark: false in a perf case")),
            "{bad:?}"
        );
        let sa = with("  benchmark_ratio: 1.0\n  use_nv_sa_benchmark: true\n");
        assert!(sa.iter().all(|v| v.contains(": warning: ")), "{sa:?}");
        assert!(
            sa.iter()
                .any(|v| v.contains("use_nv_sa_benchmark: upstream-only")),
            "{sa:?}"
        );
        let range = text.replacen(
            "profiling:\n",
            "profiling:\n  gen_profile_range: 30-10\n",
            1,
        );
        let (spec, _) = load::parse_spec::<DisaggSpec>(&range, schema::known_fields);
        let v = validate::validate(&spec.unwrap(), "perf");
        assert!(
            v.iter().any(|v| v.key == "profiling.gen_profile_range"),
            "{v:?}"
        );
    }

    /// Upstream's own configs (tests/fixtures/upstream, verbatim, manifest with commits): every file
    /// upstream runs loads here — warnings allowed, no error, no layout problem.
    #[test]
    fn upstream_corpus_loads_without_false_rejection() {
        let base = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/upstream");
        let manifest = std::fs::read_to_string(base.join("manifest.tsv")).unwrap();
        // Files upstream's own code rejects, each with the rule that rejects it there.
        let expected_text = std::fs::read_to_string(base.join("expected-rejections.tsv")).unwrap();
        let expected: Vec<Vec<&str>> = expected_text
            .lines()
            .skip(1)
            .map(|l| l.split('\t').collect())
            .collect();
        let (mut files, mut errors) = (0, Vec::new());
        for commit in std::fs::read_dir(base.join("configs")).unwrap() {
            let root = commit.unwrap().path().join("test_configs");
            let d = discover::discover(std::slice::from_ref(&root));
            assert!(d.problems.is_empty(), "{:?}", d.problems);
            files += d.cases.len();
            errors.extend(d.violations().filter(|v| v.is_error()).cloned());
        }
        let upstream_rejects = |v: &Violation, e: &[&str]| {
            v.file.ends_with(e[0]) && v.key == e[1] && v.reason.contains(e[2])
        };
        let false_rejections: Vec<String> = errors
            .iter()
            .filter(|v| !expected.iter().any(|e| upstream_rejects(v, e)))
            .map(|v| v.to_string())
            .collect();
        assert!(
            false_rejections.is_empty(),
            "{} false rejection(s):\n{}",
            false_rejections.len(),
            false_rejections.join("\n")
        );
        for e in &expected {
            assert!(
                errors.iter().any(|v| upstream_rejects(v, e)),
                "{} must be rejected as upstream rejects it ({})",
                e[0],
                e[3]
            );
        }
        let listed = manifest
            .lines()
            .filter(|l| l.starts_with("configs/"))
            .count();
        assert_eq!(files, listed, "every YAML in the manifest is loaded");
        assert!(files >= 80, "only {files} upstream files");
        // Unchanged since gathered: each file has the size its manifest row records (character
        // counts were checked against upstream's stored copy when gathering).
        for line in manifest.lines().skip(1) {
            let cols: Vec<&str> = line.split('\t').collect();
            let size = std::fs::metadata(base.join(cols[0])).unwrap().len();
            assert_eq!(size.to_string(), cols[3], "{}", cols[0]);
        }
    }

    /// An engine key typo under worker_config is named at validation with the closest argument.
    #[test]
    fn engine_key_typos_warn_with_the_closest_argument() {
        let file = Path::new(env!("CARGO_MANIFEST_DIR")).join(
            "test_configs/disagg/perf/deepseek-r1-fp4_1k1k_ctx1_gen4_tep8_bs32_eplb0_mtp0_ccb-NIXL.yaml",
        );
        let text = std::fs::read_to_string(&file).unwrap().replacen(
            "  gen:\n",
            "  gen:\n    max_num_tokns: 64\n",
            1,
        );
        let (spec, _) = load::parse_spec::<DisaggSpec>(&text, schema::known_fields);
        let v = validate::validate(&spec.unwrap(), "perf");
        let hit = v
            .iter()
            .find(|v| v.key == "worker_config.gen.max_num_tokns")
            .unwrap_or_else(|| panic!("{v:#?}"));
        assert!(!hit.is_error());
        assert!(
            hit.reason.contains("did you mean `max_num_tokens`"),
            "{}",
            hit.reason
        );
    }

    /// Upstream's own test lists (every version in the corpus, perf-sanity test-db lists included)
    /// resolve in full: each id names a case of the corpus.
    #[test]
    fn upstream_test_lists_resolve_in_full() {
        let base = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/upstream");
        let mut names = std::collections::HashSet::new();
        for commit in std::fs::read_dir(base.join("configs")).unwrap() {
            let root = commit.unwrap().path().join("test_configs");
            for c in discover::discover(&[root]).cases {
                names.insert(c.name);
            }
        }
        let (mut lists, mut ids, mut missing) = (0, 0, Vec::new());
        for dir in ["testlists", "testlists-sanity"] {
            for entry in walkdir::WalkDir::new(base.join(dir)) {
                let path = entry.unwrap().into_path();
                if !path.is_file() {
                    continue;
                }
                let text = std::fs::read_to_string(&path).unwrap();
                // test-db YAML files: only their test id items.
                let text: String = if path.extension().is_some_and(|e| e == "yml") {
                    text.lines()
                        .filter(|l| l.contains("::"))
                        .map(|l| format!("{l}\n"))
                        .collect()
                } else {
                    text
                };
                lists += 1;
                for e in testlist::parse(&text) {
                    ids += 1;
                    if !names.contains(&e.name) {
                        missing.push(format!("{}:{}: {}", path.display(), e.line, e.name));
                    }
                }
            }
        }
        assert!(lists >= 10 && ids >= 200, "{lists} lists, {ids} ids");
        assert!(
            missing.is_empty(),
            "{} unresolved:\n{}",
            missing.len(),
            missing.join("\n")
        );
    }

    #[test]
    fn shipped_cases_are_valid_without_warnings() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("test_configs");
        let d = discover::discover(&[root]);
        assert!(d.problems.is_empty(), "{:?}", d.problems);
        assert!(d.cases.len() >= 11);
        let all: Vec<String> = d.violations().map(ToString::to_string).collect();
        assert!(all.is_empty(), "{all:#?}");
    }

    #[test]
    fn violation_lines_point_at_the_key() {
        let file = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/invalid/streaming")
            .read_dir()
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .path();
        let text = std::fs::read_to_string(&file).unwrap();
        let case = Case::load(&file, family("disagg").unwrap(), "perf");
        let v = case.errors().next().unwrap();
        let line = text.lines().nth(v.line.unwrap() - 1).unwrap();
        assert_eq!(line.trim(), "streaming: false");
        assert!(v.to_string().starts_with(&format!(
            "{}:{}: benchmark.streaming: ",
            file.display(),
            v.line.unwrap()
        )));
    }
}
