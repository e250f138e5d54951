//! Metrics from benchmark logs. The default table reads the summary lines that `vllm bench serve`,
//! TRT-LLM's `benchmark_serving.py` and `servetest bench` print (`Median TTFT (ms):   12.34`); a
//! log with several passes is split at `Benchmark with concurrency N done`, giving one block per
//! concurrency. Cases can bring their own pattern (`extractor_pattern` + `metric_names`).

use std::collections::BTreeMap;
use std::sync::LazyLock;

use regex::{Regex, RegexBuilder};

/// One pass of a benchmark: its concurrency (when the log says) and the metrics found.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Block {
    pub concurrency: Option<u64>,
    pub metrics: BTreeMap<String, f64>,
    /// The model the row measured, when a case serves several (aggregated); else the case's.
    pub model: Option<String>,
    /// What tells this row from the case's other rows at the same concurrency (a latency grid's
    /// sequence length, an aggregated sweep point, a perf-sanity server-client pair); empty for
    /// cases with one row per concurrency.
    pub variant: String,
}

/// Every default metric: its name in results, and the summary-line label that carries it.
pub const DEFAULT_METRICS: &[(&str, &str)] = &[
    ("mean_ttft_ms", "Mean TTFT (ms)"),
    ("median_ttft_ms", "Median TTFT (ms)"),
    ("p99_ttft_ms", "P99 TTFT (ms)"),
    ("mean_tpot_ms", "Mean TPOT (ms)"),
    ("median_tpot_ms", "Median TPOT (ms)"),
    ("p99_tpot_ms", "P99 TPOT (ms)"),
    ("mean_itl_ms", "Mean ITL (ms)"),
    ("median_itl_ms", "Median ITL (ms)"),
    ("p99_itl_ms", "P99 ITL (ms)"),
    ("mean_e2el_ms", "Mean E2EL (ms)"),
    ("median_e2el_ms", "Median E2EL (ms)"),
    ("p99_e2el_ms", "P99 E2EL (ms)"),
    ("request_throughput", "Request throughput (req/s)"),
    ("output_throughput", "Output token throughput (tok/s)"),
    ("total_token_throughput", "Total token throughput (tok/s)"),
    ("completed", "Successful requests"),
    ("failed", "Failed requests"),
];

/// `LABEL:   VALUE` at the start of a line (labels matched case-insensitively, as TRT-LLM writes
/// "Total Token throughput" where vLLM writes "Total token throughput").
static DEFAULT_RES: LazyLock<Vec<(&'static str, Regex)>> = LazyLock::new(|| {
    DEFAULT_METRICS
        .iter()
        .map(|(name, label)| {
            let re = RegexBuilder::new(&format!(
                r"(?m)^\s*{}:\s+([-+0-9.eE]+|nan|inf)\s*$",
                regex::escape(label)
            ))
            .case_insensitive(true)
            .build()
            .expect("default metric regex");
            (*name, re)
        })
        .collect()
});

static DONE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?m)^.*Benchmark with concurrency (\d+) done.*$").expect("done regex")
});
static MAX_CONCURRENCY: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?m)^\s*Maximum request concurrency:\s+(\d+)").expect("concurrency regex")
});

fn defaults_in(text: &str) -> BTreeMap<String, f64> {
    DEFAULT_RES
        .iter()
        .filter_map(|(name, re)| {
            let caps = re.captures_iter(text).last()?;
            Some(((*name).to_owned(), caps[1].parse().ok()?))
        })
        .collect()
}

/// Blocks of a benchmark log with the default table; blocks with no metric are dropped.
pub fn parse_default(text: &str) -> Vec<Block> {
    let mut blocks = Vec::new();
    let mut start = 0;
    for caps in DONE.captures_iter(text) {
        let m = caps.get(0).expect("whole match");
        let metrics = defaults_in(&text[start..m.start()]);
        if !metrics.is_empty() {
            blocks.push(Block {
                concurrency: caps[1].parse().ok(),
                metrics,
                model: None,
                variant: String::new(),
            });
        }
        start = m.end();
    }
    let rest = &text[start..];
    let metrics = defaults_in(rest);
    if !metrics.is_empty() {
        let concurrency = MAX_CONCURRENCY
            .captures(rest)
            .and_then(|c| c[1].parse().ok());
        blocks.push(Block {
            concurrency,
            metrics,
            model: None,
            variant: String::new(),
        });
    }
    blocks
}

/// A log's metric blocks, with a case's own pattern and names or the default summary-line table,
/// and the words that say which was used (for "found no metric" errors).
pub fn parse_with(
    text: &str,
    pattern: Option<(&str, &[String])>,
) -> Result<(Vec<Block>, String), String> {
    Ok(match pattern {
        Some((pattern, names)) => {
            let re = compile_custom(pattern).map_err(|e| e.to_string())?;
            (
                parse_custom(text, &re, names),
                format!("pattern {pattern:?}"),
            )
        }
        None => (
            parse_default(text),
            "the default summary-line table".to_owned(),
        ),
    })
}

/// Compiles a case's `extractor_pattern`. Multi-line patterns are upstream's verbose style
/// (`^.*?Median\ TTFT\ \(ms\):\s+([0-9.]+).*?$\n …`): whitespace in them is ignored; one-line
/// patterns match literally. `^`/`$` match at line breaks in both.
pub fn compile_custom(pattern: &str) -> Result<Regex, regex::Error> {
    RegexBuilder::new(pattern.trim())
        .multi_line(true)
        .ignore_whitespace(pattern.trim().contains('\n'))
        .build()
}

/// Every match of a custom pattern as a block: one capture per name, plus an optional trailing
/// capture that is the concurrency (as upstream's default patterns have).
pub fn parse_custom(text: &str, re: &Regex, names: &[String]) -> Vec<Block> {
    re.captures_iter(text)
        .map(|caps| {
            let metrics = names
                .iter()
                .enumerate()
                .filter_map(|(i, n)| {
                    Some((n.clone(), caps.get(i + 1)?.as_str().trim().parse().ok()?))
                })
                .collect();
            let concurrency = (caps.len() == names.len() + 2)
                .then(|| caps.get(names.len() + 1)?.as_str().trim().parse().ok())
                .flatten();
            Block {
                concurrency,
                metrics,
                model: None,
                variant: String::new(),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::metrics::{compute, Metrics};
    use crate::bench::report::{text, RunInfo};

    /// TRT-LLM's benchmark_serving prints the same left-aligned lines (one sample per kind here).
    const TRTLLM: &str = "\
============ Serving Benchmark Result ============
Successful requests:                     1024
Benchmark duration (s):                  120.51
Total input tokens:                      1048576
Request throughput (req/s):              8.50
Output token throughput (tok/s):         8701.22
Total Token throughput (tok/s):          17402.44
User throughput (tok/s):                 9.12
---------------Time to First Token----------------
Mean TTFT (ms):                          350.12
Median TTFT (ms):                        301.50
P99 TTFT (ms):                           1200.00
-----Time per Output Token (excl. 1st token)------
Mean TPOT (ms):                          105.20
Median TPOT (ms):                        104.10
P99 TPOT (ms):                           130.40
---------------Inter-token Latency----------------
Mean ITL (ms):                           104.90
Median ITL (ms):                         101.00
P99 ITL (ms):                            300.25
----------------End-to-end Latency----------------
Mean E2EL (ms):                          108000.10
Median E2EL (ms):                        107500.00
P99 E2EL (ms):                           110000.00
==================================================
Benchmark with concurrency 1024 done
";

    #[test]
    fn every_default_pattern_matches_a_real_line() {
        let blocks = parse_default(TRTLLM);
        assert_eq!(blocks.len(), 1);
        let b = &blocks[0];
        assert_eq!(b.concurrency, Some(1024));
        for (name, _) in DEFAULT_METRICS.iter().filter(|(n, _)| *n != "failed") {
            assert!(b.metrics.contains_key(*name), "{name} not found");
        }
        assert_eq!(b.metrics["median_ttft_ms"], 301.5);
        assert_eq!(b.metrics["total_token_throughput"], 17402.44);
        assert_eq!(b.metrics["p99_e2el_ms"], 110000.0);
    }

    #[test]
    fn servetest_bench_output_parses_per_concurrency() {
        let m = Metrics {
            completed: 3,
            ..compute(&[], 1.0, &[99.0], &[], |_| 0)
        };
        let info = |c| RunInfo {
            endpoint_type: "openai",
            label: None,
            model_id: "m",
            tokenizer_id: "t",
            num_prompts: 3,
            request_rate: f64::INFINITY,
            burstiness: 1.0,
            max_concurrency: Some(c),
            interrupted: false,
            goodput: false,
        };
        let log = format!(
            "{}Benchmark with concurrency 1 done\nnoise\n{}Benchmark with concurrency 4 done\n",
            text(&m, &info(1)),
            text(&m, &info(4))
        );
        let blocks = parse_default(&log);
        assert_eq!(
            blocks.iter().map(|b| b.concurrency).collect::<Vec<_>>(),
            [Some(1), Some(4)]
        );
        assert_eq!(blocks[1].metrics["completed"], 3.0);
        assert!(blocks[1].metrics.contains_key("median_e2el_ms"));
        // A single pass without the marker takes its concurrency from the summary.
        let one = parse_default(&text(&m, &info(8)));
        assert_eq!(one[0].concurrency, Some(8));
    }

    #[test]
    fn upstream_style_verbose_custom_pattern() {
        // The shape of TensorRT-LLM's default disagg pattern (multi-line, escaped spaces).
        let pattern = r"
            ^.*?Median\ TTFT\ \(ms\):\s+([0-9.]+).*?$\n
            ^.*?(?:\n|.)*?$\n
            ^.*?Median\ E2EL\ \(ms\):\s+([0-9.]+).*?$\n
            ^.*?(?:\n|.)*?$\n
            ^.*?Benchmark\ with\ concurrency\ (\d+)\ done
        ";
        let re = compile_custom(pattern).unwrap();
        let names = vec![
            "DISAGG_SERVER_TTFT".to_owned(),
            "DISAGG_SERVER_E2EL".to_owned(),
        ];
        let blocks = parse_custom(TRTLLM, &re, &names);
        assert_eq!(blocks.len(), 1);
        assert_eq!(blocks[0].concurrency, Some(1024));
        assert_eq!(blocks[0].metrics["DISAGG_SERVER_TTFT"], 301.5);
        assert_eq!(blocks[0].metrics["DISAGG_SERVER_E2EL"], 107500.0);
        // One-line patterns keep their spaces.
        let re = compile_custom(r"Custom Pattern:\s+([0-9.]+)").unwrap();
        let b = parse_custom("x\nCustom Pattern:  4.5\n", &re, &["C".to_owned()]);
        assert_eq!(b[0].metrics["C"], 4.5);
        assert_eq!(b[0].concurrency, None);
    }
}
