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
pub fn load_rows(path: &Path) -> Result<Vec<Row>, String> {
    let shown = path.display();
    if path.extension().is_some_and(|e| e == "csv") {
        let mut reader =
            csv::Reader::from_path(path).map_err(|e| format!("failed to read {shown}: {e}"))?;
        let headers = reader
            .headers()
            .map_err(|e| format!("{shown}: {e}"))?
            .clone();
        if headers.iter().collect::<Vec<_>>()
            != header().iter().map(String::as_str).collect::<Vec<_>>()
        {
            let upstream = headers.iter().collect::<Vec<_>>() == super::upstream::COLUMNS;
            return Err(if upstream {
                format!(
                    "{shown}: TensorRT-LLM's perf_script_test_results.csv schema; compare the run's \
                     servetest_results.csv or results.json instead"
                )
            } else {
                format!("{shown}: not a servetest results CSV (unexpected columns)")
            });
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
                .skip(LEAD_COLUMNS.len())
                .filter(|(_, h)| *h != "extra_metrics")
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
    serde_json::from_value(doc["rows"].clone())
        .map_err(|e| format!("{shown}: not a servetest results.json: {e}"))
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

/// Every gated metric present in both runs for the same case and concurrency.
pub fn compare(baseline: &[Row], now: &[Row], policy: &Policy) -> Vec<Comparison> {
    let mut out = Vec::new();
    for row in now {
        let Some(base) = baseline
            .iter()
            .rev()
            .find(|b| b.test_name == row.test_name && b.concurrency == row.concurrency)
        else {
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
                case: row.test_name.clone(),
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
}
