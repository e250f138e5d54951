//! numpy's float64 statistics, operation for operation, so that servetest's numbers are the ones
//! `vllm bench serve` prints (it calls `np.mean`, `np.std`, `np.median` and `np.percentile`).
//!
//! The order of floating-point operations is numpy's: sums are pairwise (`pairwise_sum_DOUBLE`,
//! blocks of 128 with eight accumulators), the standard deviation is the population one (`ddof=0`,
//! two-pass as `_var`), percentiles interpolate linearly (numpy's default method, `_lerp` with its
//! `t >= 0.5` branch). tests/engine.rs compares every function with the engine venv's numpy.

/// numpy's block size below which a sum is unrolled instead of split.
const PAIRWISE_BLOCK: usize = 128;

/// `np.add.reduce` over a contiguous float64 array (numpy starts the reduction from the identity 0).
pub fn sum(xs: &[f64]) -> f64 {
    0.0 + pairwise(xs)
}

fn pairwise(xs: &[f64]) -> f64 {
    let n = xs.len();
    if n < 8 {
        let mut res = 0.0;
        for x in xs {
            res += x;
        }
        res
    } else if n <= PAIRWISE_BLOCK {
        let mut r = [0.0; 8];
        r.copy_from_slice(&xs[..8]);
        let whole = n - n % 8;
        let mut i = 8;
        while i < whole {
            for (acc, x) in r.iter_mut().zip(&xs[i..i + 8]) {
                *acc += x;
            }
            i += 8;
        }
        let mut res = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]));
        for x in &xs[whole..] {
            res += x;
        }
        res
    } else {
        let mut half = n / 2;
        half -= half % 8;
        pairwise(&xs[..half]) + pairwise(&xs[half..])
    }
}

/// `np.mean`; NaN for an empty slice, as numpy (with a warning there).
pub fn mean(xs: &[f64]) -> f64 {
    sum(xs) / xs.len() as f64
}

/// `np.std` with `ddof=0`: the mean first, then the mean of squared deviations, then the root.
pub fn std(xs: &[f64]) -> f64 {
    let m = mean(xs);
    let squares: Vec<f64> = xs
        .iter()
        .map(|x| {
            let d = x - m;
            d * d
        })
        .collect();
    (sum(&squares) / xs.len() as f64).sqrt()
}

/// `np.median` of an ascending slice: the middle value, or the mean of the two middle values.
pub fn median_sorted(sorted: &[f64]) -> f64 {
    let n = sorted.len();
    if n == 0 {
        return f64::NAN;
    }
    if n % 2 == 1 {
        sorted[n / 2]
    } else {
        mean(&sorted[n / 2 - 1..=n / 2])
    }
}

/// `np.percentile(values, p)` (method "linear") of an ascending slice; `p` in [0, 100].
pub fn percentile_sorted(sorted: &[f64], p: f64) -> f64 {
    let n = sorted.len();
    if n == 0 {
        return f64::NAN;
    }
    let q = p / 100.0;
    let virtual_index = (n - 1) as f64 * q;
    if virtual_index >= (n - 1) as f64 {
        return sorted[n - 1];
    }
    if virtual_index <= 0.0 {
        return sorted[0];
    }
    let below = virtual_index.floor();
    let t = virtual_index - below;
    let (a, b) = (sorted[below as usize], sorted[below as usize + 1]);
    lerp(a, b, t)
}

/// numpy's `_lerp`: from `b` backwards when `t >= 0.5`, which keeps the result monotonic.
fn lerp(a: f64, b: f64, t: f64) -> f64 {
    let diff = b - a;
    if t >= 0.5 {
        b - diff * (1.0 - t)
    } else {
        a + diff * t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn linear_percentiles_and_medians_as_numpy_documents_them() {
        // np.median([100, 200]) == 150; np.percentile([1, 2, 3, 4], 25) == 1.75.
        assert_eq!(median_sorted(&[100.0, 200.0]), 150.0);
        assert_eq!(median_sorted(&[1.0, 5.0, 9.0]), 5.0);
        assert_eq!(percentile_sorted(&[1.0, 2.0, 3.0, 4.0], 25.0), 1.75);
        assert_eq!(percentile_sorted(&[1.0, 2.0, 3.0, 4.0], 100.0), 4.0);
        assert_eq!(percentile_sorted(&[1.0, 2.0, 3.0, 4.0], 0.0), 1.0);
        assert_eq!(percentile_sorted(&[7.0], 99.0), 7.0);
        // p99 of 1..=5 is 4.96 (index 3.96 between 4 and 5).
        let p99 = percentile_sorted(&[1.0, 2.0, 3.0, 4.0, 5.0], 99.0);
        assert!((p99 - 4.96).abs() < 1e-12, "{p99}");
    }

    #[test]
    fn population_std_and_pairwise_sum() {
        assert_eq!(std(&[1.0, 3.0]), 1.0);
        assert_eq!(mean(&[2.0; 1000]), 2.0);
        // Pairwise summation keeps 0.1 × 10⁶ far closer than a running sum would.
        let xs = vec![0.1; 1_000_000];
        let naive: f64 = xs.iter().sum();
        assert!((sum(&xs) - 100_000.0).abs() < (naive - 100_000.0).abs());
    }
}
