//! The native benchmark client (`servetest bench`). Shaped like oha: the whole send schedule is
//! computed up front, one task per request waits for its time (and a concurrency slot), sends,
//! and hands its `RequestOutput` to one collector over a channel. Ctrl-C stops sending and keeps
//! what was collected.

pub mod client;
pub mod dataset;
pub mod metrics;
pub mod numpy;
pub mod report;
pub mod sim;
pub mod sse;

use std::io::IsTerminal;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::SeedableRng;
use rand_distr::{Distribution, Gamma};
use tokio::sync::{mpsc, Semaphore};

use self::client::{RequestOutput, RequestSettings};
use self::dataset::Request;

/// Send offsets in seconds from the start: vLLM's gamma process (shape = burstiness,
/// scale = 1 / (rate · burstiness)), rescaled so the last request is due at N / rate; all zero for an
/// infinite rate.
pub fn schedule(n: usize, rate: f64, burstiness: f64, seed: u64) -> Vec<f64> {
    if !rate.is_finite() || n == 0 {
        return vec![0.0; n];
    }
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut t = 0.0;
    let mut out = Vec::with_capacity(n);
    if burstiness.is_infinite() {
        for _ in 0..n {
            out.push(t);
            t += 1.0 / rate;
        }
        return out;
    }
    let gamma =
        Gamma::new(burstiness, 1.0 / (rate * burstiness)).expect("positive gamma parameters");
    for _ in 0..n {
        out.push(t);
        t += gamma.sample(&mut rng);
    }
    let last = *out.last().unwrap_or(&0.0);
    if last > 0.0 {
        let target = (n as f64 - 1.0).max(0.0) / rate;
        for v in &mut out {
            *v *= target / last;
        }
    }
    out
}

pub struct Pass {
    pub outputs: Vec<RequestOutput>,
    pub duration: f64,
    pub interrupted: bool,
    /// `GONE_AFTER` connection failures in a row ended the pass early.
    pub target_gone: bool,
}

/// Whether passes show a progress bar on a terminal (`--disable-tqdm` turns it off, as in vLLM).
static PROGRESS: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(true);

pub fn set_progress_bar(on: bool) {
    PROGRESS.store(on, std::sync::atomic::Ordering::Relaxed);
}

/// Connection failures in a row after which the target counts as gone: the pass stops instead of
/// failing every remaining request one by one (100,000 of them took a minute), so a client whose
/// server died — or whose job was killed around it — ends within moments.
pub const GONE_AFTER: usize = 64;

/// Runs one pass: `requests` at `offsets`, at most `max_concurrency` in flight, stopping early
/// (keeping results) when `stop` resolves, `deadline` passes, or the target is gone.
pub async fn run_pass(
    http: &reqwest::Client,
    settings: Arc<RequestSettings>,
    requests: &[Request],
    offsets: &[f64],
    max_concurrency: Option<usize>,
    deadline: Option<Duration>,
    stop: impl std::future::Future<Output = ()>,
) -> Pass {
    let origin = Instant::now();
    let slots = Arc::new(Semaphore::new(
        max_concurrency.unwrap_or(Semaphore::MAX_PERMITS),
    ));
    let (tx, mut rx) = mpsc::unbounded_channel::<RequestOutput>();
    let bar =
        if std::io::stderr().is_terminal() && PROGRESS.load(std::sync::atomic::Ordering::Relaxed) {
            indicatif::ProgressBar::new(requests.len() as u64)
        } else {
            indicatif::ProgressBar::hidden()
        };
    let mut tasks = tokio::task::JoinSet::new();
    for (req, &offset) in requests.iter().zip(offsets) {
        if deadline.is_some_and(|d| offset > d.as_secs_f64()) {
            break;
        }
        let (tx, http, settings, slots, req) = (
            tx.clone(),
            http.clone(),
            settings.clone(),
            slots.clone(),
            req.clone(),
        );
        tasks.spawn(async move {
            tokio::time::sleep_until((origin + Duration::from_secs_f64(offset)).into()).await;
            let Ok(_permit) = slots.acquire_owned().await else {
                return;
            };
            let out = client::send(&http, &settings, &req, origin, offset).await;
            let _ = tx.send(out);
        });
    }
    drop(tx);
    let planned = tasks.len();
    let mut outputs = Vec::with_capacity(planned);
    let mut interrupted = false;
    let mut target_gone = false;
    tokio::pin!(stop);
    let collect = async {
        let mut refused_in_a_row = 0;
        while let Some(o) = rx.recv().await {
            bar.inc(1);
            if matches!(o.error, Some(client::ErrorKind::Connect)) {
                refused_in_a_row += 1;
            } else {
                refused_in_a_row = 0;
            }
            outputs.push(o);
            if refused_in_a_row >= GONE_AFTER {
                target_gone = true;
                break;
            }
        }
    };
    tokio::select! {
        _ = collect => {}
        _ = &mut stop => { interrupted = true; }
    }
    tasks.abort_all();
    // Requests that finished just before the stop are already in the channel: keep them.
    while let Ok(o) = rx.try_recv() {
        outputs.push(o);
    }
    bar.finish_and_clear();
    // Requests cut off by Ctrl-C never finished: they are not counted as failures of the server.
    Pass {
        duration: origin.elapsed().as_secs_f64(),
        outputs,
        interrupted: interrupted || target_gone,
        target_gone,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_matches_rate_and_is_reproducible() {
        assert_eq!(schedule(3, f64::INFINITY, 1.0, 0), vec![0.0; 3]);
        let s = schedule(1001, 100.0, 1.0, 7);
        assert_eq!(s, schedule(1001, 100.0, 1.0, 7));
        assert!(
            (s[1000] - 10.0).abs() < 1e-9,
            "rescaled to N/rate: {}",
            s[1000]
        );
        assert!(s.windows(2).all(|w| w[1] >= w[0]));
        let even = schedule(5, 10.0, f64::INFINITY, 0);
        assert!((even[4] - 0.4).abs() < 1e-9);
        // Burstier traffic has more variable gaps.
        let cv = |s: &[f64]| {
            let gaps: Vec<f64> = s.windows(2).map(|w| w[1] - w[0]).collect();
            let m = gaps.iter().sum::<f64>() / gaps.len() as f64;
            (gaps.iter().map(|g| (g - m).powi(2)).sum::<f64>() / gaps.len() as f64).sqrt() / m
        };
        assert!(cv(&schedule(2000, 10.0, 0.25, 1)) > cv(&schedule(2000, 10.0, 4.0, 1)) * 2.0);
    }
}

#[cfg(test)]
#[path = "tests.rs"]
mod client_tests;
