//! vLLM's serving metrics from per-request outputs (see docs/metrics.md for every formula).
//! Statistics follow numpy exactly as vLLM calls it: `np.mean`/`np.std`/`np.median`/`np.percentile`
//! over the per-request values in seconds, then × 1000 (`numpy_stats` below).

use std::collections::BTreeMap;

use serde::Serialize;

use super::client::RequestOutput;
use super::numpy;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Slo {
    Ttft,
    Tpot,
    E2el,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Stat {
    pub mean: f64,
    pub median: f64,
    pub std: f64,
    /// `(percentile, value)`, milliseconds.
    pub percentiles: Vec<(f64, f64)>,
    pub count: usize,
}

/// Summary of `values` (seconds) in milliseconds, as vLLM's `calculate_metrics` computes it:
/// `np.mean(values or 0) * 1000` and likewise for std (population), median and linear percentiles.
pub fn stat(values: &[f64], percentiles: &[f64]) -> Stat {
    // vLLM passes `values or 0`: an empty list becomes the scalar 0, so every statistic is 0.
    let zero = [0.0];
    let xs = if values.is_empty() { &zero[..] } else { values };
    let mut sorted = xs.to_vec();
    sorted.sort_by(f64::total_cmp);
    Stat {
        mean: numpy::mean(xs) * 1000.0,
        median: numpy::median_sorted(&sorted) * 1000.0,
        std: numpy::std(xs) * 1000.0,
        percentiles: percentiles
            .iter()
            .map(|p| (*p, numpy::percentile_sorted(&sorted, *p) * 1000.0))
            .collect(),
        count: values.len(),
    }
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Metrics {
    pub completed: usize,
    pub failed: usize,
    pub errors_by_kind: BTreeMap<String, usize>,
    pub total_input: usize,
    pub total_output: usize,
    pub duration: f64,
    pub request_throughput: f64,
    pub request_goodput: f64,
    pub output_throughput: f64,
    pub total_token_throughput: f64,
    pub max_output_tokens_per_s: f64,
    pub max_concurrent_requests: usize,
    pub ttft: Stat,
    pub tpot: Stat,
    pub itl: Stat,
    pub e2el: Stat,
    /// Measured from the time each request was *due*, not sent: includes time spent waiting for a
    /// concurrency slot (coordinated omission made visible).
    pub ttft_from_scheduled: Stat,
    pub e2el_from_scheduled: Stat,
    pub output_lens: Vec<usize>,
}

/// `output_len(o)` counts output tokens when the server gave no usage (the tokenizer's count).
pub fn compute(
    outputs: &[RequestOutput],
    duration: f64,
    percentiles: &[f64],
    goodput: &[(Slo, f64)],
    output_len: impl Fn(&RequestOutput) -> usize,
) -> Metrics {
    let mut m = Metrics {
        duration,
        ..Metrics::default()
    };
    let (mut ttfts, mut tpots, mut itls, mut e2els) = (vec![], vec![], vec![], vec![]);
    let (mut sched_ttft, mut sched_e2el) = (vec![], vec![]);
    let mut good = 0;
    for o in outputs {
        if !o.success {
            m.failed += 1;
            m.output_lens.push(0);
            let kind = o
                .error
                .as_ref()
                .map_or("other".to_owned(), ToString::to_string);
            *m.errors_by_kind.entry(kind).or_default() += 1;
            continue;
        }
        let out_len = o.output_tokens.unwrap_or_else(|| output_len(o)).max(1);
        m.completed += 1;
        m.output_lens.push(out_len);
        m.total_input += o.prompt_len;
        m.total_output += out_len;
        // TPOT excludes the first token; a 1-token answer has TPOT 0 for goodput only.
        let tpot = if out_len > 1 {
            let t = (o.latency - o.ttft) / (out_len - 1) as f64;
            tpots.push(t);
            t
        } else {
            0.0
        };
        ttfts.push(o.ttft);
        itls.extend_from_slice(&o.itl);
        e2els.push(o.latency);
        let wait = (o.sent_at - o.scheduled_at).max(0.0);
        sched_ttft.push(o.ttft + wait);
        sched_e2el.push(o.latency + wait);
        let is_good = goodput.iter().all(|(slo, limit_ms)| {
            let v = match slo {
                Slo::Ttft => o.ttft,
                Slo::Tpot => tpot,
                Slo::E2el => o.latency,
            };
            v * 1000.0 <= *limit_ms
        });
        if !goodput.is_empty() && is_good {
            good += 1;
        }
    }
    let d = duration.max(f64::EPSILON);
    m.request_throughput = m.completed as f64 / d;
    m.request_goodput = good as f64 / d;
    m.output_throughput = m.total_output as f64 / d;
    m.total_token_throughput = (m.total_input + m.total_output) as f64 / d;
    m.ttft = stat(&ttfts, percentiles);
    m.tpot = stat(&tpots, percentiles);
    m.itl = stat(&itls, percentiles);
    m.e2el = stat(&e2els, percentiles);
    m.ttft_from_scheduled = stat(&sched_ttft, percentiles);
    m.e2el_from_scheduled = stat(&sched_e2el, percentiles);
    peaks(outputs, &mut m);
    m
}

/// Peak output tokens in any one-second bucket, and peak requests active in a bucket (as vLLM).
fn peaks(outputs: &[RequestOutput], m: &mut Metrics) {
    let ok: Vec<&RequestOutput> = outputs.iter().filter(|o| o.success).collect();
    let Some(t0) = ok.iter().map(|o| o.sent_at).reduce(f64::min) else {
        return;
    };
    let end = ok.iter().map(|o| o.sent_at + o.latency).fold(t0, f64::max);
    let buckets = (end - t0).ceil() as usize + 1;
    let mut tokens = vec![0f64; buckets];
    let mut active = vec![0usize; buckets];
    for o in ok {
        let mut t = o.sent_at + o.ttft;
        let mut times = vec![t];
        for gap in &o.itl {
            t += gap;
            times.push(t);
        }
        for tt in times {
            let b = (tt - t0) as usize;
            if b < buckets {
                tokens[b] += 1.0;
            }
        }
        let (s, e) = (
            (o.sent_at - t0) as usize,
            ((o.sent_at + o.latency) - t0) as usize,
        );
        for slot in active.iter_mut().take(e.min(buckets - 1) + 1).skip(s) {
            *slot += 1;
        }
    }
    m.max_output_tokens_per_s = tokens.iter().cloned().fold(0.0, f64::max);
    m.max_concurrent_requests = active.into_iter().max().unwrap_or(0);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::client::ErrorKind;

    fn ok(ttft: f64, itl: Vec<f64>, tokens: usize) -> RequestOutput {
        let latency = ttft + itl.iter().sum::<f64>();
        RequestOutput {
            success: true,
            prompt_len: 10,
            output_tokens: Some(tokens),
            ttft,
            itl,
            latency,
            ..RequestOutput::default()
        }
    }

    #[test]
    fn vllm_definitions() {
        let outs = vec![
            ok(0.100, vec![0.010, 0.010, 0.010], 4),
            ok(0.200, vec![0.020, 0.020, 0.020], 4),
            RequestOutput {
                error: Some(ErrorKind::Status(500)),
                ..RequestOutput::default()
            },
        ];
        let m = compute(&outs, 2.0, &[99.0], &[(Slo::Ttft, 150.0)], |_| 0);
        assert_eq!((m.completed, m.failed), (2, 1));
        assert_eq!(m.errors_by_kind.get("http_500"), Some(&1));
        assert_eq!(m.total_output, 8);
        assert_eq!(m.total_input, 20);
        assert!((m.request_throughput - 1.0).abs() < 1e-9);
        assert!(
            (m.request_goodput - 0.5).abs() < 1e-9,
            "only the first meets TTFT ≤ 150 ms"
        );
        assert!((m.output_throughput - 4.0).abs() < 1e-9);
        assert!((m.ttft.mean - 150.0).abs() < 1e-6);
        assert!((m.ttft.std - 50.0).abs() < 1e-6);
        // TPOT = (latency − ttft) / (tokens − 1) = 10 ms and 20 ms.
        assert!((m.tpot.mean - 15.0).abs() < 1e-6);
        assert_eq!(m.itl.count, 6);
        assert!((m.itl.mean - 15.0).abs() < 1e-6);
        assert!((m.e2el.mean - 195.0).abs() < 1e-6);
        // numpy: percentile([0.1, 0.2], 99) = 0.199; median([0.1, 0.2]) = 0.15 (s), reported in ms.
        let p99 = m.ttft.percentiles[0].1;
        assert!((p99 - 199.0).abs() < 1e-9, "{p99}");
        assert!((m.ttft.median - 150.0).abs() < 1e-9, "{}", m.ttft.median);
        assert!((m.e2el.median - 195.0).abs() < 1e-9, "{}", m.e2el.median);
    }

    #[test]
    fn empty_lists_report_zero_as_vllm_does() {
        let s = stat(&[], &[50.0, 99.0]);
        assert_eq!((s.mean, s.median, s.std, s.count), (0.0, 0.0, 0.0, 0));
        assert_eq!(s.percentiles, vec![(50.0, 0.0), (99.0, 0.0)]);
    }

    #[test]
    fn scheduled_view_adds_client_side_waiting() {
        let mut o = ok(0.050, vec![0.01], 2);
        o.scheduled_at = 0.0;
        o.sent_at = 0.300;
        let m = compute(&[o], 1.0, &[], &[], |_| 0);
        assert!((m.ttft.mean - 50.0).abs() < 1e-6);
        assert!((m.ttft_from_scheduled.mean - 350.0).abs() < 1e-6);
    }
}
