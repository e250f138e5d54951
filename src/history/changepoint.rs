//! Change points in a series of runs, the way Hunter (Fleming et al., "Hunter: Using Change Point
//! Detection to Hunt for Performance Regressions", ICPE 2023; now Apache Otava) finds them: E-divisive
//! means (Matteson & James, 2014) proposes the split that maximises the energy divergence between the
//! two sides, and a Welch t-test between the two sides accepts it when its p-value is at most
//! `max_p` (Hunter replaced E-divisive's permutation test with a t-test: deterministic, and cheap).
//! Accepted splits are searched again on each side (binary segmentation).
//!
//! Sensitivity: `max_p` and `min_size` (the fewest runs on either side of a change). The rates on
//! generated series are in docs/performance.md (`cargo bench --bench changepoint`).

use statrs::distribution::{ContinuousCDF, StudentsT};

#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// Largest t-test p-value at which a split is accepted.
    pub max_p: f64,
    /// Fewest values on each side of a change point.
    pub min_size: usize,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            max_p: 0.01,
            min_size: 3,
        }
    }
}

/// A change: the first index of the new level, the means before and after, and the p-value.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    pub index: usize,
    pub before: f64,
    pub after: f64,
    pub p_value: f64,
}

impl Change {
    /// (after − before) / before.
    /// (after − before) / before; from a level of 0, any rise is infinite (0 failures → some).
    pub fn relative(&self) -> f64 {
        if self.before == 0.0 {
            if self.after == 0.0 {
                0.0
            } else {
                f64::INFINITY.copysign(self.after)
            }
        } else {
            (self.after - self.before) / self.before
        }
    }
}

/// E-divisive's statistic for splitting `x` at `tau` (α = 1): the scaled energy distance between
/// x[..tau] and x[tau..].
fn q_hat(x: &[f64], tau: usize) -> f64 {
    let (a, b) = x.split_at(tau);
    let (m, n) = (a.len() as f64, b.len() as f64);
    let mut between = 0.0;
    for ai in a {
        for bj in b {
            between += (ai - bj).abs();
        }
    }
    let within = |s: &[f64]| {
        let mut sum = 0.0;
        for i in 0..s.len() {
            for j in i + 1..s.len() {
                sum += (s[i] - s[j]).abs();
            }
        }
        let pairs = (s.len() * (s.len() - 1) / 2) as f64;
        if pairs > 0.0 {
            sum / pairs
        } else {
            0.0
        }
    };
    let e = 2.0 * between / (m * n) - within(a) - within(b);
    m * n / (m + n) * e
}

fn mean(s: &[f64]) -> f64 {
    s.iter().sum::<f64>() / s.len() as f64
}

fn variance(s: &[f64], m: f64) -> f64 {
    if s.len() < 2 {
        return 0.0;
    }
    s.iter().map(|v| (v - m).powi(2)).sum::<f64>() / (s.len() - 1) as f64
}

/// Two-sided Welch t-test p-value between `a` and `b`.
pub fn welch_p(a: &[f64], b: &[f64]) -> f64 {
    let (ma, mb) = (mean(a), mean(b));
    let (va, vb) = (
        variance(a, ma) / a.len() as f64,
        variance(b, mb) / b.len() as f64,
    );
    let se2 = va + vb;
    if se2 == 0.0 {
        return if ma == mb { 1.0 } else { 0.0 };
    }
    let t = (ma - mb) / se2.sqrt();
    if !t.is_finite() {
        return 1.0;
    }
    // Welch–Satterthwaite degrees of freedom.
    let df_den =
        va * va / (a.len() as f64 - 1.0).max(1.0) + vb * vb / (b.len() as f64 - 1.0).max(1.0);
    let df = if df_den > 0.0 {
        se2 * se2 / df_den
    } else {
        1.0
    };
    match StudentsT::new(0.0, 1.0, df.max(1.0)) {
        Ok(dist) => 2.0 * (1.0 - dist.cdf(t.abs())),
        Err(_) => 1.0,
    }
}

/// Every accepted change point of `x`, in index order.
pub fn detect(x: &[f64], s: Settings) -> Vec<Change> {
    // A NaN or an infinity has no place in a mean or a distance: such a series has no verdict
    // (series() drops those values before it gets here).
    if x.iter().any(|v| !v.is_finite()) {
        return Vec::new();
    }
    let mut found = Vec::new();
    segment(x, 0, s, &mut found);
    found.sort_by_key(|c| c.index);
    found
}

fn segment(x: &[f64], offset: usize, s: Settings, found: &mut Vec<Change>) {
    let min = s.min_size.max(2);
    if x.len() < 2 * min {
        return;
    }
    let Some(tau) = (min..=x.len() - min).max_by(|&i, &j| q_hat(x, i).total_cmp(&q_hat(x, j)))
    else {
        return;
    };
    let (a, b) = x.split_at(tau);
    let p = welch_p(a, b);
    // A NaN p-value (non-finite input) is never a change.
    if p.is_nan() || p > s.max_p {
        return;
    }
    found.push(Change {
        index: offset + tau,
        before: mean(a),
        after: mean(b),
        p_value: p,
    });
    segment(a, offset, s, found);
    segment(b, offset + tau, s, found);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_clear_step_is_found_where_it_is_and_flat_noise_has_none() {
        // ±1 % alternating noise around 100, then a 10 % step at index 12.
        let mut x: Vec<f64> = (0..12)
            .map(|i| if i % 2 == 0 { 101.0 } else { 99.0 })
            .collect();
        x.extend((0..6).map(|i| if i % 2 == 0 { 111.0 } else { 109.0 }));
        let c = detect(&x, Settings::default());
        assert_eq!(c.len(), 1, "{c:?}");
        assert_eq!(c[0].index, 12);
        assert!((c[0].relative() - 0.10).abs() < 1e-9, "{c:?}");
        let flat: Vec<f64> = (0..30)
            .map(|i| if i % 2 == 0 { 101.0 } else { 99.0 })
            .collect();
        assert!(detect(&flat, Settings::default()).is_empty());
    }

    #[test]
    fn welch_matches_a_known_value() {
        // scipy.stats.ttest_ind([1, 2, 3, 4], [3, 4, 5, 6], equal_var=False).pvalue = 0.070987…
        let p = welch_p(&[1.0, 2.0, 3.0, 4.0], &[3.0, 4.0, 5.0, 6.0]);
        assert!((p - 0.070988).abs() < 1e-5, "{p}");
    }

    #[test]
    fn two_steps_are_both_found() {
        let mut x = vec![100.0, 101.0, 99.0, 100.0, 101.0, 99.0];
        x.extend([120.0, 121.0, 119.0, 120.0, 121.0, 119.0]);
        x.extend([90.0, 91.0, 89.0, 90.0, 91.0, 89.0]);
        let idx: Vec<usize> = detect(&x, Settings::default())
            .iter()
            .map(|c| c.index)
            .collect();
        assert_eq!(idx, [6, 12]);
    }
}
