//! Baselines and the regression gate: compare this run's metric rows with an earlier run's
//! (`results.json` or `servetest_results.csv`), per case and concurrency, under a policy of
//! direction (lower/higher is better) and tolerance (% or absolute) per metric.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;

use super::results::{header, Row, LEAD_COLUMNS};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    Lower,
    Higher,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Tolerance {
    Percent(f64),
    Absolute(f64),
}

impl<'de> Deserialize<'de> for Tolerance {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Number(f64),
            Text(String),
        }
        let text = match Raw::deserialize(d)? {
            Raw::Number(n) => n.to_string(),
            Raw::Text(t) => t,
        };
        parse_tolerance(&text).map_err(serde::de::Error::custom)
    }
}

/// `10%` or `2.5` (absolute, in the metric's unit).
pub fn parse_tolerance(text: &str) -> Result<Tolerance, String> {
    let t = text.trim();
    let (num, pct) = match t.strip_suffix('%') {
        Some(n) => (n, true),
        None => (t, false),
    };
    let v: f64 = num
        .trim()
        .parse()
        .map_err(|_| format!("tolerance `{text}`: expected e.g. 10% or 2.5"))?;
    if v.is_nan() || v < 0.0 {
        return Err(format!("tolerance `{text}` must not be negative"));
    }
    Ok(if pct {
        Tolerance::Percent(v)
    } else {
        Tolerance::Absolute(v)
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
pub struct Rule {
    pub direction: Direction,
    pub tolerance: Tolerance,
}

/// Which metrics are gated and how (`baselines/policy.yaml`); the default gates the latency
/// medians and p99s (lower is better) and the throughputs (higher is better) at 10%.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    pub metrics: BTreeMap<String, Rule>,
}

impl Default for Policy {
    fn default() -> Self {
        let ten = Tolerance::Percent(10.0);
        let mut metrics = BTreeMap::new();
        for m in ["ttft", "tpot", "itl", "e2el"] {
            for s in ["median", "p99"] {
                metrics.insert(
                    format!("{s}_{m}_ms"),
                    Rule {
                        direction: Direction::Lower,
                        tolerance: ten,
                    },
                );
            }
        }
        for m in [
            "request_throughput",
            "output_throughput",
            "total_token_throughput",
        ] {
            metrics.insert(
                m.to_owned(),
                Rule {
                    direction: Direction::Higher,
                    tolerance: ten,
                },
            );
        }
        Policy { metrics }
    }
}

impl Policy {
    pub fn load(path: &Path) -> Result<Policy, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("failed to read {}: {e}", path.display()))?;
        serde_yaml::from_str(&text).map_err(|e| format!("invalid policy {}: {e}", path.display()))
    }
}

/// Rows of an earlier run, from its `results.json` or its CSV.
/// Result rows from anything servetest writes — a run directory (its results.json or
/// servetest_results.csv), results.json, servetest_results.csv, a `servetest bench --save-result`
/// file (one row, case `bench`, at its max concurrency) — or an upstream-shaped
/// perf_script_test_results.csv (one row per case and concurrency, metric types mapped back).
pub fn load_rows(path: &Path) -> Result<Vec<Row>, String> {
    let shown = path.display();
    if path.is_dir() {
        for name in [
            super::results::JSON_NAME,
            super::results::CSV_NAME,
            super::results::UPSTREAM_CSV_NAME,
        ] {
            if path.join(name).is_file() {
                return load_rows(&path.join(name));
            }
        }
        return Err(format!(
            "{shown}: a directory without results.json, servetest_results.csv or perf_script_test_results.csv"
        ));
    }
    if path.extension().is_some_and(|e| e == "csv") {
        let mut reader =
            csv::Reader::from_path(path).map_err(|e| format!("failed to read {shown}: {e}"))?;
        let headers = reader
            .headers()
            .map_err(|e| format!("{shown}: {e}"))?
            .clone();
        let found: Vec<&str> = headers.iter().collect();
        let before_variant = super::results::header_before_variant();
        if found != header().iter().map(String::as_str).collect::<Vec<_>>()
            && found
                != before_variant
                    .iter()
                    .map(String::as_str)
                    .collect::<Vec<_>>()
        {
            if headers.iter().collect::<Vec<_>>() == super::upstream::COLUMNS {
                return upstream_rows(reader, &shown.to_string());
            }
            return Err(format!(
                "{shown}: neither servetest's results CSV nor TensorRT-LLM's perf_script_test_results.csv \
                 (unexpected columns)"
            ));
        }
        let mut rows = Vec::new();
        for rec in reader.records() {
            let rec = rec.map_err(|e| format!("{shown}: {e}"))?;
            let get = |name: &str| {
                headers
                    .iter()
                    .position(|h| h == name)
                    .map(|i| rec[i].to_owned())
                    .unwrap_or_default()
            };
            let mut metrics: BTreeMap<String, f64> = headers
                .iter()
                .enumerate()
                .filter(|(_, h)| *h != "extra_metrics" && !LEAD_COLUMNS.contains(h))
                .filter_map(|(i, h)| Some((h.to_owned(), rec[i].parse().ok()?)))
                .collect();
            if let Ok(extra) = serde_json::from_str::<BTreeMap<String, f64>>(&get("extra_metrics"))
            {
                metrics.extend(extra);
            }
            rows.push(Row {
                test_name: get("test_name"),
                family: get("family"),
                category: get("category"),
                model: get("model"),
                variant: get("variant"),
                gpu_type: get("gpu_type"),
                executor: get("executor"),
                job_id: get("job_id"),
                concurrency: get("concurrency").parse().ok(),
                state: get("state"),
                start: get("start").parse().ok(),
                end: get("end").parse().ok(),
                metrics,
            });
        }
        return Ok(rows);
    }
    let doc: serde_json::Value = serde_json::from_slice(
        &std::fs::read(path).map_err(|e| format!("failed to read {shown}: {e}"))?,
    )
    .map_err(|e| format!("{shown}: {e}"))?;
    if doc.get("rows").is_some() {
        return serde_json::from_value(doc["rows"].clone())
            .map_err(|e| format!("{shown}: not a servetest results.json: {e}"));
    }
    if doc.get("completed").is_some() && doc.get("duration").is_some() {
        return Ok(vec![bench_row(&doc)]);
    }
    Err(format!(
        "{shown}: not a result servetest can compare (expected a run's results.json, a \
         servetest bench --save-result file, or a results CSV)"
    ))
}

/// A `servetest bench` / `vllm bench serve` result file as one row: every numeric key that is one
/// of the default metrics.
fn bench_row(doc: &serde_json::Value) -> Row {
    let metrics = crate::check::logparse::DEFAULT_METRICS
        .iter()
        .filter_map(|(name, _)| Some(((*name).to_owned(), doc.get(*name)?.as_f64()?)))
        .collect();
    Row {
        test_name: "bench".into(),
        family: "bench".into(),
        category: "perf".into(),
        model: doc["model_id"].as_str().unwrap_or_default().to_owned(),
        variant: String::new(),
        gpu_type: String::new(),
        executor: String::new(),
        job_id: String::new(),
        concurrency: doc["max_concurrency"].as_u64(),
        state: "COMPLETED".into(),
        start: None,
        end: None,
        metrics,
    }
}

/// Rows of an upstream-shaped CSV: `test_benchmark[NAME]_con:N` → case NAME at N, metric types
/// `SERVER_MEDIAN_TTFT` (and older `DISAGG_SERVER_TTFT`) → `median_ttft_ms`.
fn upstream_rows(mut reader: csv::Reader<std::fs::File>, shown: &str) -> Result<Vec<Row>, String> {
    let mut rows: Vec<Row> = Vec::new();
    for rec in reader.records() {
        let rec = rec.map_err(|e| format!("{shown}: {e}"))?;
        let name = &rec[6];
        let (case, con) = match name.rsplit_once("_con:") {
            Some((case, n)) => (case, n.parse::<u64>().ok()),
            None => (name, None),
        };
        let case = case
            .strip_prefix("test_benchmark[")
            .and_then(|c| c.strip_suffix(']'))
            .unwrap_or(case);
        let Ok(value) = rec[8].parse::<f64>() else {
            continue;
        };
        let metric = upstream_metric_name(&rec[16]);
        match rows
            .iter_mut()
            .find(|r| r.test_name == case && r.concurrency == con)
        {
            Some(r) => {
                r.metrics.insert(metric, value);
            }
            None => rows.push(Row {
                test_name: case.to_owned(),
                family: String::new(),
                category: String::new(),
                model: String::new(),
                variant: String::new(),
                gpu_type: String::new(),
                executor: String::new(),
                job_id: String::new(),
                concurrency: con,
                // Upstream writes only completed results, as state `valid`.
                state: if &rec[12] == "valid" {
                    "COMPLETED".to_owned()
                } else {
                    rec[12].to_owned()
                },
                start: None,
                end: None,
                metrics: [(metric, value)].into(),
            }),
        }
    }
    Ok(rows)
}

/// `SERVER_MEDIAN_TTFT` / `DISAGG_SERVER_TTFT` (median) / `WIDEEP_SERVER_P99_ITL` → servetest's
/// metric names; anything else is kept as it is.
fn upstream_metric_name(kind: &str) -> String {
    let base = kind
        .strip_prefix("SERVER_")
        .or_else(|| kind.split_once("_SERVER_").map(|(_, rest)| rest))
        .map(|rest| {
            if rest.contains('_') {
                rest.to_owned()
            } else {
                format!("MEDIAN_{rest}")
            }
        });
    match base {
        Some(b) => {
            let name = format!("{}_ms", b.to_lowercase());
            if crate::check::logparse::DEFAULT_METRICS
                .iter()
                .any(|(n, _)| *n == name)
            {
                name
            } else {
                kind.to_owned()
            }
        }
        None => kind.to_owned(),
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Comparison {
    pub case: String,
    pub concurrency: Option<u64>,
    pub metric: String,
    pub baseline: f64,
    pub now: f64,
    /// Signed change in percent of the baseline.
    pub change_pct: f64,
    /// The worst value allowed.
    pub limit: f64,
    pub regressed: bool,
}

/// The variants of `now`'s rows for which `baseline` has rows of the same case, but none of that
/// variant (so nothing of them was compared).
pub fn variants_without_baseline(baseline: &[Row], now: &[Row]) -> Vec<String> {
    let mut out: Vec<String> = now
        .iter()
        .filter(|r| baseline.iter().any(|b| b.test_name == r.test_name))
        .filter(|r| {
            !baseline
                .iter()
                .any(|b| b.test_name == r.test_name && b.variant == r.variant)
        })
        .map(|r| format!("[{}]", r.variant))
        .collect();
    out.sort();
    out.dedup();
    out
}

/// Every gated metric present in both runs for the same case, variant and concurrency.
pub fn compare(baseline: &[Row], now: &[Row], policy: &Policy) -> Vec<Comparison> {
    let mut out = Vec::new();
    for row in now {
        let Some(base) = baseline.iter().rev().find(|b| {
            b.test_name == row.test_name
                && b.variant == row.variant
                && b.concurrency == row.concurrency
        }) else {
            continue;
        };
        for (metric, rule) in &policy.metrics {
            let (Some(&b), Some(&n)) = (base.metrics.get(metric), row.metrics.get(metric)) else {
                continue;
            };
            let allowance = match rule.tolerance {
                Tolerance::Percent(p) => b.abs() * p / 100.0,
                Tolerance::Absolute(a) => a,
            };
            let (limit, regressed) = match rule.direction {
                Direction::Lower => (b + allowance, n > b + allowance),
                Direction::Higher => (b - allowance, n < b - allowance),
            };
            let change_pct = if b == 0.0 {
                0.0
            } else {
                (n - b) / b.abs() * 100.0
            };
            out.push(Comparison {
                case: if row.variant.is_empty() {
                    row.test_name.clone()
                } else {
                    format!("{} [{}]", row.test_name, row.variant)
                },
                concurrency: row.concurrency,
                metric: metric.clone(),
                baseline: b,
                now: n,
                change_pct,
                limit,
                regressed,
            });
        }
    }
    out
}

/// `metric | baseline | now | change | limit`, regressions marked.
pub fn table(rows: &[Comparison]) -> String {
    let mut out = format!(
        "{:<44} {:>5} {:<24} {:>12} {:>12} {:>9} {:>12}\n",
        "case", "conc", "metric", "baseline", "now", "change", "limit"
    );
    for c in rows {
        out.push_str(&format!(
            "{:<44} {:>5} {:<24} {:>12.3} {:>12.3} {:>+8.1}% {:>12.3}{}\n",
            c.case,
            c.concurrency.map_or("-".to_owned(), |v| v.to_string()),
            c.metric,
            c.baseline,
            c.now,
            c.change_pct,
            c.limit,
            if c.regressed { "  REGRESSED" } else { "" }
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(case: &str, c: u64, metrics: &[(&str, f64)]) -> Row {
        Row {
            test_name: case.into(),
            family: "script".into(),
            category: "perf".into(),
            model: String::new(),
            variant: String::new(),
            gpu_type: "CPU".into(),
            executor: "local".into(),
            job_id: "1".into(),
            concurrency: Some(c),
            state: "COMPLETED".into(),
            start: None,
            end: None,
            metrics: metrics.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect(),
        }
    }

    #[test]
    fn rows_are_compared_with_the_baseline_row_of_their_own_variant() {
        // A latency grid: two sequence lengths at batch size 4, each against its own baseline.
        let at = |seq: &str, ms: f64| {
            let mut r = row("latency_perf_grid", 4, &[("median_ttft_ms", ms)]);
            r.variant = seq.into();
            r
        };
        let base = [at("seq=32", 10.0), at("seq=64", 20.0)];
        let now = [at("seq=32", 10.5), at("seq=64", 21.0)];
        let policy = Policy::default();
        let c = compare(&base, &now, &policy);
        assert_eq!(c.len(), 2);
        assert!(c.iter().all(|c| !c.regressed), "{c:?}");
        assert_eq!(c[1].case, "latency_perf_grid [seq=64]");
        assert_eq!((c[0].baseline, c[1].baseline), (10.0, 20.0));
        // A baseline from before row variants compares nothing, and says which variants it lacks.
        let old = [row("latency_perf_grid", 4, &[("median_ttft_ms", 10.0)])];
        assert!(compare(&old, &now, &policy).is_empty());
        assert_eq!(
            variants_without_baseline(&old, &now),
            ["[seq=32]", "[seq=64]"]
        );
    }

    #[test]
    fn directions_and_tolerances() {
        let base = [row(
            "a",
            4,
            &[("median_ttft_ms", 100.0), ("output_throughput", 1000.0)],
        )];
        let ok = [row(
            "a",
            4,
            &[("median_ttft_ms", 109.0), ("output_throughput", 950.0)],
        )];
        let bad = [row(
            "a",
            4,
            &[("median_ttft_ms", 111.0), ("output_throughput", 899.0)],
        )];
        let other_level = [row("a", 8, &[("median_ttft_ms", 500.0)])];
        let p = Policy::default();
        assert!(compare(&base, &ok, &p).iter().all(|c| !c.regressed));
        let r = compare(&base, &bad, &p);
        assert_eq!(r.iter().filter(|c| c.regressed).count(), 2, "{r:?}");
        let ttft = r.iter().find(|c| c.metric == "median_ttft_ms").unwrap();
        assert_eq!((ttft.limit, ttft.change_pct.round()), (110.0, 11.0));
        assert!(
            compare(&base, &other_level, &p).is_empty(),
            "concurrency must match"
        );
        let abs = Policy {
            metrics: [(
                "median_ttft_ms".to_owned(),
                Rule {
                    direction: Direction::Lower,
                    tolerance: parse_tolerance("20").unwrap(),
                },
            )]
            .into(),
        };
        assert!(!compare(&base, &bad, &abs)[0].regressed, "111 ≤ 100 + 20");
        let t = table(&r);
        assert!(
            t.contains("REGRESSED") && t.contains("median_ttft_ms") && t.contains("+11.0%"),
            "{t}"
        );
        assert!(parse_tolerance("-1%").is_err() && parse_tolerance("x").is_err());
        let p: Policy = serde_yaml::from_str("metrics:\n  a: {direction: lower, tolerance: 5}\n  b: {direction: higher, tolerance: 7.5%}\n").unwrap();
        assert_eq!(p.metrics["a"].tolerance, Tolerance::Absolute(5.0));
        assert_eq!(p.metrics["b"].tolerance, Tolerance::Percent(7.5));
    }

    #[test]
    fn upstream_csv_rows_map_back_to_servetest_metrics() {
        assert_eq!(upstream_metric_name("SERVER_MEDIAN_TTFT"), "median_ttft_ms");
        assert_eq!(upstream_metric_name("SERVER_P99_ITL"), "p99_itl_ms");
        assert_eq!(upstream_metric_name("DISAGG_SERVER_TTFT"), "median_ttft_ms");
        assert_eq!(
            upstream_metric_name("WIDEEP_SERVER_MEAN_TPOT"),
            "mean_tpot_ms"
        );
        assert_eq!(upstream_metric_name("MY_METRIC"), "MY_METRIC");
        let row = Row {
            test_name: "disagg_perf_x".into(),
            family: "disagg".into(),
            category: "perf".into(),
            model: "m".into(),
            variant: String::new(),
            gpu_type: "GB200".into(),
            executor: "slurm".into(),
            job_id: "7".into(),
            concurrency: Some(4),
            state: "COMPLETED".into(),
            start: Some(1.0),
            end: Some(2.0),
            metrics: [
                ("median_ttft_ms".to_owned(), 10.0),
                ("median_e2el_ms".to_owned(), 50.0),
            ]
            .into(),
        };
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("perf_script_test_results.csv");
        std::fs::write(&path, crate::report::upstream::export(&[row], &[])).unwrap();
        let rows = load_rows(&path).unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].test_name, "disagg_perf_x");
        assert_eq!(rows[0].concurrency, Some(4));
        assert_eq!(rows[0].metrics.get("median_e2el_ms"), Some(&50.0));
        // A run directory is read through its results file.
        assert_eq!(load_rows(dir.path()).unwrap().len(), 1);
    }
}
