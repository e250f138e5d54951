//! How well the history's change-point detection (src/history/changepoint.rs) finds a regression and
//! how often it raises a false alarm, on generated series with known steps and noise.
//!
//! Each series: 30 runs of a metric at 100 with Gaussian noise of the given coefficient of variation,
//! then — for the step series — 3 more runs 5 % higher (a latency regression), or — for the noise
//! series — 3 more runs of the same level. Detection: the gate (`report history --gate`: a change
//! point among the last 3 runs that moved the metric the bad way) fires on a step series. False alarm:
//! it fires on a noise series. Seeded, so every run prints the same table.
//!
//!   cargo bench --bench changepoint [-- --trials N]

use rand::SeedableRng;
use rand_distr::{Distribution, Normal};
use servetest::history::changepoint::{detect, Settings};

const BEFORE: usize = 30;
const AFTER: usize = 3;
const STEP: f64 = 0.05;

fn series(rng: &mut rand::rngs::StdRng, cv: f64, step: f64) -> Vec<f64> {
    let noise = Normal::new(0.0, cv).expect("normal");
    (0..BEFORE + AFTER)
        .map(|i| {
            let level = if i >= BEFORE {
                100.0 * (1.0 + step)
            } else {
                100.0
            };
            level * (1.0 + noise.sample(rng))
        })
        .collect()
}

/// The gate's verdict: a change among the last AFTER runs, upwards (latency got worse).
fn fires(x: &[f64], s: Settings) -> bool {
    detect(x, s)
        .iter()
        .any(|c| c.index + AFTER >= x.len() && c.after > c.before)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let trials: usize = args
        .iter()
        .position(|a| a == "--trials")
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000);
    println!(
        "{trials} series per cell: {BEFORE} runs at one level, then {AFTER} runs {:.0} % higher (detection) \
         or at the same level (false alarm); the gate looks at the last {AFTER} runs\n",
        STEP * 100.0
    );
    println!("| noise (CV) | max_p | min_size | detected within {AFTER} runs | false alarms |");
    println!("| --- | --- | --- | --- | --- |");
    for cv in [0.01, 0.02, 0.03] {
        for max_p in [0.001, 0.01, 0.05] {
            let s = Settings { max_p, min_size: 3 };
            let mut rng = rand::rngs::StdRng::seed_from_u64(20261203);
            let (mut hit, mut false_alarm) = (0, 0);
            for _ in 0..trials {
                hit += usize::from(fires(&series(&mut rng, cv, STEP), s));
                false_alarm += usize::from(fires(&series(&mut rng, cv, 0.0), s));
            }
            println!(
                "| {:.0} % | {max_p} | 3 | {:.1} % | {:.1} % |",
                cv * 100.0,
                100.0 * hit as f64 / trials as f64,
                100.0 * false_alarm as f64 / trials as f64
            );
        }
    }
}
