//! Accuracy cases: lm-eval's results JSON → scores per (task, metric, filter), judged against the
//! case's `metadata.accuracy.datasets`. Three threshold types:
//!
//! - `hypothesis_test` (upstream's only one): a one-tailed z-test. The score fails when it is worse than
//!   the reference by more than `z(1-α) · sqrt(2σ²/n)`; `β` gives the smallest regression the test
//!   reliably detects, `(z(1-α) + z(1-β)) · sqrt(2σ²/n)`, reported alongside. Defaults as upstream's
//!   gsm8k: α 0.05, β 0.2, σ 50 on a 0–100 scale (0.5 when scores are fractions), n = samples scored.
//! - `absolute`: worse than the reference by more than `threshold`.
//! - `relative`: worse than the reference by more than `threshold · reference`.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use statrs::distribution::{ContinuousCDF, Normal};

use crate::disagg::schema::{DatasetThreshold, ThresholdType};

/// One score from lm-eval: `results[task]["<metric>,<filter>"]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Score {
    pub task: String,
    pub metric: String,
    pub filter: String,
    pub value: f64,
    pub stderr: Option<f64>,
    /// Documents scored (lm-eval's `n-samples.<task>.effective`).
    pub samples: Option<u64>,
}

/// Every score in one lm-eval results file.
pub fn parse_results(json: &serde_json::Value) -> Vec<Score> {
    let mut out = Vec::new();
    let Some(results) = json["results"].as_object() else {
        return out;
    };
    for (task, fields) in results {
        let Some(fields) = fields.as_object() else {
            continue;
        };
        let samples = json["n-samples"][task]["effective"].as_u64();
        for (key, value) in fields {
            let Some((metric, filter)) = key.split_once(',') else {
                continue;
            };
            if metric.ends_with("_stderr") {
                continue;
            }
            let Some(value) = value.as_f64() else {
                continue;
            };
            let stderr = fields
                .get(&format!("{metric}_stderr,{filter}"))
                .and_then(|v| v.as_f64());
            out.push(Score {
                task: task.clone(),
                metric: metric.to_owned(),
                filter: filter.to_owned(),
                value,
                stderr,
                samples,
            });
        }
    }
    out.sort_by(|a, b| (&a.task, &a.metric, &a.filter).cmp(&(&b.task, &b.metric, &b.filter)));
    out
}

/// The newest `results_*.json` lm-eval wrote under `dir` (it nests them by model name).
pub fn find_results(dir: &Path) -> Option<PathBuf> {
    walkdir::WalkDir::new(dir)
        .into_iter()
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_str()
                .is_some_and(|n| n.starts_with("results_") && n.ends_with(".json"))
        })
        .max_by_key(|e| e.metadata().ok().and_then(|m| m.modified().ok()))
        .map(|e| e.into_path())
}

#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    pub task: String,
    pub metric: String,
    pub filter: String,
    pub expected: f64,
    /// `None`: lm-eval reported no such score.
    pub got: Option<f64>,
    pub samples: Option<u64>,
    /// How far below (or above, when lower is better) the reference a score may be.
    pub allowance: f64,
    pub kind: ThresholdType,
    /// hypothesis_test only: the smallest regression the test detects with power 1-β.
    pub detectable: Option<f64>,
    pub passed: bool,
}

impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self.kind {
            ThresholdType::HypothesisTest => "hypothesis_test",
            ThresholdType::Absolute => "absolute",
            ThresholdType::Relative => "relative",
        };
        write!(
            f,
            "task {} filter {} metric {}: expected {:.4}, got {}, threshold {kind} ±{:.4}{}, samples {} — {}",
            self.task,
            self.filter,
            self.metric,
            self.expected,
            self.got.map_or("nothing (no such score)".to_owned(), |g| format!("{g:.4}")),
            self.allowance,
            self.detectable
                .map(|d| format!(" (detects regressions ≥ {d:.4})"))
                .unwrap_or_default(),
            self.samples.map_or("?".to_owned(), |n| n.to_string()),
            if self.passed { "PASS" } else { "FAIL" }
        )
    }
}

fn z(p: f64) -> f64 {
    Normal::new(0.0, 1.0)
        .expect("standard normal")
        .inverse_cdf(p)
}

/// Judges one expectation against the scores of a run.
pub fn judge(expect: &DatasetThreshold, scores: &[Score]) -> Verdict {
    let metric = expect.metric.as_deref().unwrap_or("exact_match");
    let filter = expect.filter_type.as_deref().unwrap_or("none");
    let score = scores
        .iter()
        .find(|s| s.task == expect.dataset_name && s.metric == metric && s.filter == filter);
    let higher_is_better = expect.higher_is_better.unwrap_or(true);
    let samples = expect.num_samples.or_else(|| {
        scores
            .iter()
            .find(|s| s.task == expect.dataset_name)
            .and_then(|s| s.samples)
    });
    let (allowance, detectable) = match expect.threshold_type {
        ThresholdType::HypothesisTest => {
            let sigma = expect
                .sigma
                .unwrap_or(if expect.expected_value.abs() <= 1.0 {
                    0.5
                } else {
                    50.0
                });
            let n = samples.unwrap_or(1).max(1) as f64;
            let se = (2.0 * sigma * sigma / n).sqrt();
            let alpha = expect.alpha.unwrap_or(0.05);
            let beta = expect.beta.unwrap_or(0.2);
            (
                z(1.0 - alpha) * se,
                Some((z(1.0 - alpha) + z(1.0 - beta)) * se),
            )
        }
        ThresholdType::Absolute => (expect.threshold.unwrap_or(0.0), None),
        ThresholdType::Relative => (
            expect.threshold.unwrap_or(0.0) * expect.expected_value.abs(),
            None,
        ),
    };
    let passed = score.is_some_and(|s| {
        if higher_is_better {
            s.value >= expect.expected_value - allowance
        } else {
            s.value <= expect.expected_value + allowance
        }
    });
    Verdict {
        task: expect.dataset_name.clone(),
        metric: metric.to_owned(),
        filter: filter.to_owned(),
        expected: expect.expected_value,
        got: score.map(|s| s.value),
        samples,
        allowance,
        kind: expect.threshold_type,
        detectable,
        passed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn expect(kind: ThresholdType, expected: f64, threshold: Option<f64>) -> DatasetThreshold {
        DatasetThreshold {
            dataset_name: "gsm8k".into(),
            expected_value: expected,
            threshold_type: kind,
            threshold,
            filter_type: Some("flexible-extract".into()),
            metric: None,
            alpha: None,
            beta: None,
            sigma: None,
            num_samples: None,
            higher_is_better: None,
        }
    }

    fn results(value: f64, n: u64) -> Vec<Score> {
        let json = serde_json::json!({
            "results": {"gsm8k": {
                "alias": "gsm8k",
                "exact_match,strict-match": 0.5,
                "exact_match_stderr,strict-match": 0.01,
                "exact_match,flexible-extract": value,
                "exact_match_stderr,flexible-extract": 0.0123,
            }},
            "n-samples": {"gsm8k": {"original": n, "effective": n}},
        });
        parse_results(&json)
    }

    #[test]
    fn parses_every_metric_filter_pair_with_stderr_and_samples() {
        let s = results(0.9454, 1319);
        assert_eq!(s.len(), 2);
        let flex = s.iter().find(|s| s.filter == "flexible-extract").unwrap();
        assert_eq!(flex.value, 0.9454);
        assert_eq!(flex.stderr, Some(0.0123));
        assert_eq!(flex.samples, Some(1319));
        assert_eq!(flex.metric, "exact_match");
    }

    #[test]
    fn hypothesis_test_matches_upstreams_gsm8k_numbers() {
        // Upstream's gsm8k defaults on a 0–100 scale: σ 50, n 1319, α 0.05 → 1.645 · sqrt(2·2500/1319).
        let mut e = expect(ThresholdType::HypothesisTest, 94.54, None);
        e.sigma = Some(50.0);
        let v = judge(&e, &results(92.0, 1319));
        assert!((v.allowance - 3.2028).abs() < 1e-3, "{}", v.allowance);
        assert!((v.detectable.unwrap() - 4.8417).abs() < 1e-3, "{v}");
        assert!(v.passed, "{v}");
        let v = judge(&e, &results(91.0, 1319));
        assert!(!v.passed, "{v}");
        // Fractions get σ 0.5 by default: the same test on a 0–1 scale.
        let v = judge(
            &expect(ThresholdType::HypothesisTest, 0.9454, None),
            &results(0.92, 1319),
        );
        assert!((v.allowance - 0.032028).abs() < 1e-5 && v.passed, "{v}");
    }

    #[test]
    fn absolute_and_relative_thresholds_and_direction() {
        let abs = expect(ThresholdType::Absolute, 0.9, Some(0.05));
        assert!(judge(&abs, &results(0.86, 100)).passed);
        assert!(!judge(&abs, &results(0.84, 100)).passed);
        // Better than the reference always passes when higher is better.
        assert!(judge(&abs, &results(1.0, 100)).passed);
        let rel = expect(ThresholdType::Relative, 0.8, Some(0.1));
        assert!(judge(&rel, &results(0.73, 100)).passed);
        assert!(!judge(&rel, &results(0.71, 100)).passed);
        let mut lower = expect(ThresholdType::Absolute, 2.0, Some(0.5));
        lower.higher_is_better = Some(false);
        assert!(judge(&lower, &results(2.4, 100)).passed);
        assert!(!judge(&lower, &results(2.6, 100)).passed);
    }

    #[test]
    fn a_missing_score_fails_and_says_so() {
        let mut e = expect(ThresholdType::Absolute, 0.9, Some(0.05));
        e.filter_type = Some("no-such-filter".into());
        let v = judge(&e, &results(0.9, 10));
        assert!(!v.passed);
        let text = v.to_string();
        assert!(
            text.contains("task gsm8k filter no-such-filter metric exact_match")
                && text.contains("got nothing (no such score)")
                && text.contains("expected 0.9000")
                && text.contains("samples 10"),
            "{text}"
        );
    }
}
