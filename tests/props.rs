//! Property tests of every parser that reads outside input (issue: hardening). Each property feeds
//! generated input — random text, and real files with random damage — and asserts: no panic, and every
//! error names where it is (file and key or line). CI runs a seeded subset (`PROPTEST_CASES=256`); the
//! benchmark-style run behind docs/reliability.md uses `PROPTEST_CASES=100000`.

use std::path::Path;

use proptest::prelude::*;

use servetest::bench::client::ErrorKind;
use servetest::case::{family, Case};

mod common;
use common::root;

/// The violations of `text` loaded as a case of `fam`/`cat`, as printed (file name normalised).
fn load_text(fam: &str, cat: &str, text: &str) -> Vec<String> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("case.yaml");
    std::fs::write(&path, text).unwrap();
    let case = Case::load(&path, family(fam).unwrap(), cat);
    case.violations
        .iter()
        .map(|v| {
            v.to_string()
                .replace(&path.display().to_string(), "case.yaml")
        })
        .collect()
}

/// Every repository case file with its family and category.
fn seeds() -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    for entry in walkdir::WalkDir::new(root().join("test_configs")).sort_by_file_name() {
        let entry = entry.unwrap();
        if entry.file_type().is_file() {
            let p = entry.path();
            let cat = p
                .parent()
                .unwrap()
                .file_name()
                .unwrap()
                .to_string_lossy()
                .into_owned();
            let fam = p
                .parent()
                .unwrap()
                .parent()
                .unwrap()
                .file_name()
                .unwrap()
                .to_string_lossy()
                .into_owned();
            out.push((fam, cat, std::fs::read_to_string(p).unwrap()));
        }
    }
    out
}

/// Loads `text` as a case of `fam`/`cat` from a temp file; checks every violation is located.
fn check_case(fam: &str, cat: &str, text: &str) -> Result<(), TestCaseError> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("case.yaml");
    std::fs::write(&path, text).unwrap();
    let family = family(fam).unwrap();
    let case = Case::load(&path, family, cat);
    // YAML's line breaks: also U+2028, U+2029 and NEL, which `str::lines` does not split on.
    let lines = 1 + text
        .chars()
        .filter(|c| matches!(c, '\n' | '\r' | '\u{2028}' | '\u{2029}' | '\u{85}'))
        .count();
    for v in &case.violations {
        prop_assert_eq!(&v.file, &path);
        prop_assert!(
            !v.reason.is_empty(),
            "a violation without a reason: {:?}",
            v
        );
        if let Some(line) = v.line {
            prop_assert!(
                line >= 1 && line <= lines + 1,
                "line {} of {}: {:?}",
                line,
                lines,
                v
            );
        }
        // Located by file (always), and by key (a dotted path) or line when one applies; an empty key
        // means the whole file (not a mapping, file-name convention).
        let shown = v.to_string();
        prop_assert!(!shown.contains('\n'), "not one line: {:?}", shown);
        prop_assert!(
            v.reason.len() < 2000,
            "unbounded message: {} chars",
            v.reason.len()
        );
    }
    // Matrix expansion of whatever loaded must not panic either.
    let _ = case.expand();
    Ok(())
}

/// Damage: replace a byte range with random text.
fn damage() -> impl Strategy<Value = (usize, prop::sample::Index, prop::sample::Index, String)> {
    (
        any::<usize>(),
        any::<prop::sample::Index>(),
        any::<prop::sample::Index>(),
        "[ -~\n\t:{}\\[\\]&*!|>'\"#%@`-]{0,24}",
    )
}

fn apply(text: &str, at: prop::sample::Index, len: prop::sample::Index, insert: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let start = at.index(chars.len().max(1)).min(chars.len());
    let end = (start + len.index(16)).min(chars.len());
    let mut s: String = chars[..start].iter().collect();
    s.push_str(insert);
    s.extend(&chars[end..]);
    s
}

proptest! {
    // Cases come from PROPTEST_CASES / PROPTEST_RNG_SEED; failures are printed with their minimal
    // input rather than persisted (this is not a crate with a src/lib.rs next to the test).
    #![proptest_config(ProptestConfig { failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn damaged_case_files_of_every_family_load_without_panic((pick, at, len, insert) in damage()) {
        let all = seeds();
        let (fam, cat, text) = &all[pick % all.len()];
        check_case(fam, cat, &apply(text, at, len, &insert))?;
    }

    /// A UTF-8 byte-order mark changes nothing: the same violations, the same lines.
    #[test]
    fn a_byte_order_mark_is_accepted(pick in 0usize..1000) {
        let all = seeds();
        let (fam, cat, text) = &all[pick % all.len()];
        let plain = load_text(fam, cat, text);
        let bom = load_text(fam, cat, &format!("\u{feff}{text}"));
        prop_assert_eq!(plain, bom);
    }

    /// Typos in any two sections are both reported (a type error in one section hides nothing).
    #[test]
    fn typos_in_every_section_are_reported_at_once(a in 0usize..5, b in 0usize..5) {
        let keys = ["gpus_per_node:", "streaming:", "partition:", "model_name:", "num_ctx_servers:"];
        prop_assume!(a != b);
        let text = std::fs::read_to_string(root().join(
            "test_configs/disagg/perf/deepseek-r1-fp4_1k1k_ctx1_gen4_tep8_bs32_eplb0_mtp0_ccb-NIXL.yaml",
        )).unwrap();
        let broken = [keys[a], keys[b]].iter().fold(text, |t, k| t.replacen(k, &k.replace(':', "x:"), 1));
        let got = load_text("disagg", "perf", &broken);
        for k in [keys[a], keys[b]] {
            let typo = k.replace(':', "x");
            prop_assert!(got.iter().any(|v| v.contains(&typo)), "{typo} not reported: {got:#?}");
        }
    }

    /// Deep flow nesting is refused by name, with a line, before the YAML parser sees it.
    #[test]
    fn deep_nesting_is_refused(depth in 65usize..200_000, open in "[\\[{]") {
        let got = load_text("disagg", "perf", &format!("a: {}", open.repeat(depth)));
        prop_assert!(got.iter().any(|v| v.contains(":1: nesting deeper than 64 levels")), "{got:?}");
    }

    /// Quotes with escapes (`'C:\'`, `"x\\"`, `'it''s'`) cannot hide deep nesting after them, and
    /// brackets inside quotes, comments and block scalars never count.
    #[test]
    fn nesting_scan_follows_quotes_comments_and_block_scalars(
        tricky in prop::sample::select(vec!["'C:\\'", "\"x\\\\\"", "'it''s'", "\"a\\\"b\"", "plain [text", "'[[[['"]),
        depth in 65usize..2000,
        noise in 65usize..300,
    ) {
        let deep = format!("a: {tricky}\nb: {}", "[".repeat(depth));
        let got = load_text("disagg", "perf", &deep);
        prop_assert!(got.iter().any(|v| v.contains(":2: nesting deeper than 64 levels")), "{tricky}: {got:?}");
        // Brackets in a block scalar, a quoted string and a comment: not nesting.
        let inert = format!(
            "a: |\n  {b}\n  more {b}\nc: '{b}'\nd: 1 # {b}\n",
            b = "[".repeat(noise)
        );
        let got = load_text("disagg", "perf", &inert);
        prop_assert!(got.iter().all(|v| !v.contains("nesting deeper")), "{got:?}");
    }

    /// Integers wider than 64 bits and documents that are not mappings get errors in the user's
    /// terms, with a line; never a Rust type name.
    #[test]
    fn out_of_range_numbers_and_non_mappings(digits in "[1-9][0-9]{20,40}", doc in prop::sample::select(vec![
        "- 1\n", "null\n", "~\n", "42\n", "text\n", "[1, 2]\n", "true\n",
    ])) {
        let text = std::fs::read_to_string(root().join(
            "test_configs/disagg/perf/deepseek-r1-fp4_1k1k_ctx1_gen4_tep8_bs32_eplb0_mtp0_ccb-NIXL.yaml",
        )).unwrap().replacen("gpus_per_node: 4", &format!("gpus_per_node: {digits}"), 1);
        let got = load_text("disagg", "perf", &text);
        prop_assert!(got.iter().any(|v| v.contains("hardware.gpus_per_node: integer") && v.contains("out of range")), "{got:?}");
        for fam in ["disagg", "script", "latency", "aggregated"] {
            let got = load_text(fam, "perf", doc);
            prop_assert!(got.iter().any(|v| v.contains(":1: the file must be a mapping")), "{fam} {doc:?}: {got:?}");
            prop_assert!(got.iter().all(|v| !v.contains("struct ") && !v.contains("u128")), "{got:?}");
        }
    }

    #[test]
    fn arbitrary_text_as_a_case_of_every_family(text in "\\PC{0,300}", pick in 0usize..6) {
        let (fam, cat) = [("disagg", "perf"), ("wideep", "accuracy"), ("script", "perf"),
                          ("cb", "steps"), ("latency", "perf"), ("aggregated", "perf")][pick];
        check_case(fam, cat, &text)?;
    }

    #[test]
    fn test_lists(text in "\\PC{0,400}") {
        let entries = servetest::case::testlist::parse(&text);
        let lines = text.lines().count();
        for e in entries {
            prop_assert!(e.line >= 1 && e.line <= lines);
            prop_assert!(!e.name.is_empty() && e.name.trim() == e.name);
        }
    }

    #[test]
    fn cluster_profiles(text in "\\PC{0,300}") {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.yaml");
        std::fs::write(&path, &text).unwrap();
        if let Err(e) = servetest::plan::profile::ClusterProfile::load(&path) {
            prop_assert!(e.to_string().contains(path.to_str().unwrap()), "{}", e);
        }
    }

    #[test]
    fn slurm_command_output(text in "[0-9_|A-Za-z:=; ()\n-]{0,300}", any_text in "\\PC{0,60}") {
        use servetest::exec::slurm::{parse_orphans, parse_sbatch_parsable, parse_scontrol, parse_squeue};
        let states = parse_squeue(&text);
        prop_assert!(states.len() <= text.lines().count());
        let _ = parse_scontrol(&text);
        for out in [&text, &any_text] {
            if let Some(id) = parse_sbatch_parsable(out) {
                prop_assert!(!id.is_empty() && id.bytes().all(|b| b.is_ascii_digit()), "{id:?}");
            }
        }
        let names: std::collections::HashSet<String> =
            ["script_perf_a".to_owned(), "B".to_owned()].into();
        for o in parse_orphans(&text, &names) {
            prop_assert!(names.contains(&o.name));
        }
    }

    #[test]
    fn benchmark_logs(text in "(\\PC{0,40}\n|Median TTFT \\(ms\\): +[-0-9.e]{1,8}\n|Benchmark with concurrency [0-9]{1,3} done\n){0,30}",
                      pattern in "\\PC{0,20}") {
        for b in servetest::check::logparse::parse_default(&text) {
            prop_assert!(!b.metrics.is_empty());
        }
        if let Ok(re) = servetest::check::logparse::compile_custom(&pattern) {
            let _ = servetest::check::logparse::parse_custom(&text, &re, &["a".into(), "b".into()]);
        }
    }

    #[test]
    fn small_grammars(text in "\\PC{0,40}") {
        let _ = servetest::case::common::parse_slurm_time(&text);
        if let Ok(pairs) = servetest::case::common::parse_env_assignments(&text) {
            for (k, _) in pairs {
                prop_assert!(!k.is_empty());
            }
        }
        if let Ok((b, s)) = servetest::latency::case::parse_grid(&text) {
            prop_assert!(b.iter().chain(&s).all(|v| *v > 0));
        }
        let _ = servetest::latency::case::layer_count(&text);
    }

    #[test]
    fn lm_eval_results_and_status_files(json in "\\PC{0,200}", status in "\\PC{0,80}") {
        if let Ok(v) = serde_json::from_str::<serde_json::Value>(&json) {
            let _ = servetest::check::accuracy::parse_results(&v);
        }
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("benchmark_status.txt"), &status).unwrap();
        std::fs::write(dir.path().join("CTX_0.json"), &status).unwrap();
        let r = servetest::disagg::role::rendezvous::Rendezvous::new(dir.path());
        prop_assert!(r.status().is_some());
        let _ = r.read("CTX_0");
    }
}

/// SSE streams of a completion: the bytes a server sends, and where its reads are cut.
mod sse {
    use super::*;
    use servetest::bench::client::RequestOutput;
    use servetest::bench::sse::read_completion;

    pub type Read = (Result<(), (ErrorKind, String)>, RequestOutput);

    /// Feeds `bytes` cut at `cuts` (positions, any order) to the client's stream reader.
    pub fn read(bytes: &[u8], cuts: &[prop::sample::Index]) -> Read {
        let mut at: Vec<usize> = cuts.iter().map(|i| i.index(bytes.len() + 1)).collect();
        at.extend([0, bytes.len()]);
        at.sort_unstable();
        at.dedup();
        let chunks: Vec<Result<Vec<u8>, std::io::Error>> = at
            .windows(2)
            .map(|w| Ok(bytes[w[0]..w[1]].to_vec()))
            .collect();
        let mut out = RequestOutput::default();
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let r = rt.block_on(read_completion(
            futures_util::stream::iter(chunks),
            std::time::Instant::now(),
            &mut out,
            |_| ErrorKind::Interrupted,
        ));
        (r, out)
    }

    /// A well-formed stream: optional BOM, tokens (any text, JSON-escaped) as completions or chat
    /// chunks, comments and empty texts between them, a usage chunk, `[DONE]`, one line ending.
    pub fn stream() -> impl Strategy<Value = (Vec<u8>, String, usize, usize)> {
        (
            any::<bool>(),
            prop::collection::vec(("\\PC{0,6}", any::<bool>(), 0u8..4), 1..12),
            prop::sample::select(vec!["\n", "\r\n", "\r"]),
            0u64..5000,
        )
            .prop_map(|(bom, tokens, eol, prompt)| {
                let mut s = String::new();
                if bom {
                    s.push('\u{feff}');
                }
                let mut text = String::new();
                let mut token_events = 0;
                for (tok, chat, extra) in &tokens {
                    let tok_json = serde_json::to_string(tok).unwrap();
                    let choice = if *chat {
                        format!("{{\"delta\":{{\"content\":{tok_json}}}}}")
                    } else {
                        format!("{{\"text\":{tok_json}}}")
                    };
                    match extra {
                        1 => s.push_str(&format!(": keep-alive{eol}{eol}")),
                        2 => s.push_str(&format!("event: message{eol}")),
                        _ => {}
                    }
                    s.push_str(&format!("data: {{\"choices\":[{choice}]}}{eol}{eol}"));
                    text.push_str(tok);
                    token_events += 1;
                }
                s.push_str(&format!(
                    "data: {{\"choices\":[],\"usage\":{{\"prompt_tokens\":{prompt},\"completion_tokens\":{}}}}}{eol}{eol}",
                    tokens.len()
                ));
                s.push_str(&format!("data: [DONE]{eol}{eol}"));
                (s.into_bytes(), text, token_events, prompt as usize)
            })
    }
}

proptest! {
    /// Any bytes, cut anywhere: no panic, and a stream without `[DONE]` never counts as complete.
    #[test]
    fn sse_arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..400),
                           cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..8)) {
        let (r, _) = sse::read(&bytes, &cuts);
        if !bytes.windows(6).any(|w| w == b"[DONE]") {
            prop_assert!(r.is_err());
        }
    }

    /// A well-formed stream, cut into reads anywhere (inside characters, inside the BOM, between
    /// CR and LF): all of its text, one gap per token after the first, the server's usage.
    #[test]
    fn sse_well_formed_streams_read_whole((bytes, text, tokens, prompt) in sse::stream(),
                                          cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..16)) {
        let (r, out) = sse::read(&bytes, &cuts);
        prop_assert_eq!(r, Ok(()));
        prop_assert_eq!(out.generated_text, text);
        prop_assert_eq!(out.itl.len(), tokens - 1);
        prop_assert_eq!(out.prompt_len, prompt);
        prop_assert_eq!(out.output_tokens, Some(tokens));
    }

    /// The same stream ended early (the server died): a failure, never a success.
    #[test]
    fn sse_streams_cut_short_fail((bytes, ..) in sse::stream(), end in any::<prop::sample::Index>(),
                                  cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..8)) {
        // Anywhere before the blank line that ends the [DONE] event.
        let end = end.index(bytes.len() - 1);
        let (r, _) = sse::read(&bytes[..end], &cuts);
        let kind = r.expect_err("a stream cut short read as complete").0;
        prop_assert!(matches!(kind, ErrorKind::Interrupted | ErrorKind::MalformedStream), "{kind:?}");
    }
}

#[test]
fn the_corpus_is_every_family() {
    let fams: std::collections::BTreeSet<String> = seeds().into_iter().map(|s| s.0).collect();
    for f in ["aggregated", "cb", "disagg", "latency", "script", "wideep"] {
        assert!(fams.contains(f), "{f} missing from {fams:?}");
    }
    let _ = Path::new("");
}
