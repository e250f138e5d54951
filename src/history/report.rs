//! `servetest report history`: the series of the results history as a table (stdout) and an HTML page
//! with one chart per case, metric and concurrency over runs, change points marked; with `--gate`, a
//! regression verdict per series from its change points rather than from one baseline file.

use std::collections::BTreeMap;

use plotters::prelude::*;

use super::changepoint::{detect, Change, Settings};
use super::store::Point;

/// The history page's file name beside a run's report.html.
pub const PAGE_NAME: &str = "history.html";

/// One series: a case's metric at one concurrency over runs on one executor and GPU type.
pub struct Series<'a> {
    pub test_name: &'a str,
    /// The rows' variant (empty for a case with one row per concurrency).
    pub variant: &'a str,
    pub metric: &'a str,
    pub concurrency: i64,
    pub executor: &'a str,
    pub gpu_type: &'a str,
    pub points: Vec<&'a Point>,
    pub changes: Vec<Change>,
}

impl Series<'_> {
    pub fn label(&self) -> String {
        let conc = if self.concurrency < 0 {
            String::new()
        } else {
            format!(" @ concurrency {}", self.concurrency)
        };
        format!(
            "{} · {}{conc} · {} {}",
            self.case(),
            self.metric,
            self.executor,
            self.gpu_type
        )
    }

    /// The case, with the rows' variant when it has one (`case [seq=64]`).
    pub fn case(&self) -> String {
        if self.variant.is_empty() {
            self.test_name.to_owned()
        } else {
            format!("{} [{}]", self.test_name, self.variant)
        }
    }

    /// A regression: the newest level (after the latest change point) is worse than the level
    /// before it — latency up, throughput or a score down — by more than `min_relative`; with
    /// `recent`, only when that change point is among the last `recent` runs. A regression stays
    /// flagged on later nights until a change point moves the metric back. Metrics without a known
    /// direction are never gated.
    pub fn regression(&self, recent: Option<usize>, min_relative: f64) -> Option<&Change> {
        let lower = direction(self.metric)?;
        let c = self.changes.last()?;
        let worse = if lower { c.relative() } else { -c.relative() };
        let in_window = recent.is_none_or(|r| c.index + r >= self.points.len());
        (worse > min_relative && in_window).then_some(c)
    }
}

/// Whether a lower value is better (`Some(true)`: latencies, failures, durations), higher
/// (`Some(false)`: throughputs, completed requests, accuracy scores, FLOP/s and MFU), or unknown
/// (`None`: statistics such as std, token counts; the gate leaves those alone).
pub fn direction(metric: &str) -> Option<bool> {
    let m = metric;
    if m.starts_with("std_") || m.ends_with("_tokens") || m.starts_with("total_") {
        return None;
    }
    if m.ends_with("_ms")
        || m.contains("latency")
        || matches!(m, "failed" | "infer_failed" | "duration")
    {
        Some(true)
    } else if m.ends_with("_throughput")
        || m.ends_with("tokens_per_s")
        || m.ends_with("_tflops")
        || m.ends_with("_mfu")
        || matches!(m, "completed" | "infer_passed" | "passed" | "request_goodput")
        // lm-eval scores: task/metric/filter.
        || m.matches('/').count() == 2
    {
        Some(false)
    } else {
        None
    }
}

/// The metrics `--gate` judges unless `--metric` names one: gating every recorded metric would turn
/// a 1 % false-alarm rate per series into many alarms a night (a benchmark records ~40 numbers per
/// concurrency).
pub const GATED_BY_DEFAULT: &[&str] = &[
    "median_ttft_ms",
    "p99_ttft_ms",
    "median_tpot_ms",
    "median_itl_ms",
    "median_e2el_ms",
    "request_throughput",
    "output_throughput",
    "failed",
];

/// Whether `--gate` judges `metric` when no `--metric` was given (accuracy scores always).
pub fn gated_by_default(metric: &str) -> bool {
    GATED_BY_DEFAULT.contains(&metric) || metric.matches('/').count() == 2
}

/// Points grouped into series (a changed case file starts a new series: only its newest content's
/// points are kept), each with its change points.
pub fn series(points: &[Point], settings: Settings) -> Vec<Series<'_>> {
    type Key<'a> = (&'a str, &'a str, &'a str, i64, &'a str, &'a str);
    let mut by: BTreeMap<Key, Vec<&Point>> = BTreeMap::new();
    for p in points.iter().filter(|p| p.value.is_finite()) {
        by.entry((
            &p.test_name,
            &p.variant,
            &p.metric,
            p.concurrency,
            &p.executor,
            &p.gpu_type,
        ))
        .or_default()
        .push(p);
    }
    by.into_iter()
        .map(
            |((test_name, variant, metric, concurrency, executor, gpu_type), mut pts)| {
                if let Some(hash) = pts.last().map(|p| p.case_hash.clone()) {
                    pts.retain(|p| p.case_hash == hash);
                }
                let values: Vec<f64> = pts.iter().map(|p| p.value).collect();
                Series {
                    test_name,
                    variant,
                    metric,
                    concurrency,
                    executor,
                    gpu_type,
                    changes: detect(&values, settings),
                    points: pts,
                }
            },
        )
        .collect()
}

/// The table printed to stdout: one line per series.
pub fn table(series: &[Series]) -> String {
    let mut out =
        String::from("| case | metric | concurrency | runs | first | last | change points |\n");
    out.push_str("| --- | --- | --- | --- | --- | --- | --- |\n");
    for s in series {
        let first = s.points.first().map_or(f64::NAN, |p| p.value);
        let last = s.points.last().map_or(f64::NAN, |p| p.value);
        let changes: Vec<String> = s
            .changes
            .iter()
            .map(|c| {
                format!(
                    "run {} ({}): {:+.1} % (p {:.2e})",
                    c.index + 1,
                    s.points[c.index].run_id,
                    c.relative() * 100.0,
                    c.p_value
                )
            })
            .collect();
        out.push_str(&format!(
            "| {} | {} | {} | {} | {first:.3} | {last:.3} | {} |\n",
            s.case(),
            s.metric,
            if s.concurrency < 0 {
                "-".to_owned()
            } else {
                s.concurrency.to_string()
            },
            s.points.len(),
            if changes.is_empty() {
                "none".to_owned()
            } else {
                changes.join("; ")
            }
        ));
    }
    out
}

fn chart(s: &Series) -> Result<String, String> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (520, 280)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| e.to_string())?;
        let n = s.points.len().max(1);
        let (lo, hi) = s
            .points
            .iter()
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), p| {
                (lo.min(p.value), hi.max(p.value))
            });
        let pad = ((hi - lo) * 0.15).max(hi.abs() * 0.05).max(1e-9);
        let mut c = ChartBuilder::on(&root)
            .caption(s.label(), ("sans-serif", 13))
            .margin(8)
            .x_label_area_size(30)
            .y_label_area_size(56)
            .build_cartesian_2d(0.5..n as f64 + 0.5, (lo - pad).max(0.0)..hi + pad)
            .map_err(|e| e.to_string())?;
        c.configure_mesh()
            .x_desc("run")
            .y_desc(s.metric)
            .label_style(("sans-serif", 10))
            .draw()
            .map_err(|e| e.to_string())?;
        let blue = RGBColor(0x1f, 0x6f, 0xb4);
        let pts: Vec<(f64, f64)> = s
            .points
            .iter()
            .enumerate()
            .map(|(i, p)| ((i + 1) as f64, p.value))
            .collect();
        c.draw_series(LineSeries::new(pts.iter().copied(), blue.stroke_width(2)))
            .map_err(|e| e.to_string())?;
        c.draw_series(pts.iter().map(|p| Circle::new(*p, 3, blue.filled())))
            .map_err(|e| e.to_string())?;
        // A change point: a red vertical line before the first run of the new level, and each
        // level's mean as a dashed segment.
        let red = RGBColor(0xc0, 0x1c, 0x28);
        let mut start = 0;
        for (k, ch) in s.changes.iter().enumerate() {
            let x = ch.index as f64 + 0.5;
            c.draw_series(std::iter::once(PathElement::new(
                vec![(x, lo - pad), (x, hi + pad)],
                red.stroke_width(2),
            )))
            .map_err(|e| e.to_string())?;
            let end = ch.index;
            let level = ch.before;
            if k == 0 || start < end {
                c.draw_series(DashedLineSeries::new(
                    vec![(start as f64 + 0.5, level), (end as f64 + 0.5, level)],
                    4,
                    3,
                    red.mix(0.6).stroke_width(1),
                ))
                .map_err(|e| e.to_string())?;
            }
            start = end;
        }
        root.present().map_err(|e| e.to_string())?;
    }
    Ok(svg)
}

const PAGE: &str = r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{{ title }}</title>
<style>
body { font-family: sans-serif; margin: 24px; color: #222; }
h1 { font-size: 22px; } .meta { color: #666; font-size: 13px; }
.charts { display: flex; flex-wrap: wrap; gap: 12px; }
figure { margin: 0; } figcaption { font-size: 12px; color: #444; max-width: 520px; }
.bad { color: #b00020; }
</style></head><body>
<h1>{{ title }}</h1>
<p class="meta">{{ summary }}</p>
<div class="charts">{% for s in series %}<figure class="history" data-runs="{{ s.runs }}" data-changes="{{ s.changes }}">{{ s.svg|safe }}
<figcaption>{{ s.caption }}{% if s.regression %} <span class="bad">regression: {{ s.regression }}</span>{% endif %}</figcaption></figure>{% endfor %}</div>
</body></html>
"#;

/// The history page: one chart per series, change points marked, regressions named.
pub fn html(
    series: &[Series],
    source: &str,
    recent: Option<usize>,
    min_relative: f64,
) -> Result<String, String> {
    let mut items = Vec::new();
    for s in series {
        let caption = format!(
            "{} run(s), {} change point(s)",
            s.points.len(),
            s.changes.len()
        );
        let regression = s
            .regression(recent, min_relative)
            .map(|c| format!("{:+.1} % at run {}", c.relative() * 100.0, c.index + 1));
        items.push(minijinja::context! {
            svg => chart(s)?,
            runs => s.points.len(),
            changes => s.changes.len(),
            caption => caption,
            regression => regression,
        });
    }
    crate::report::html::page(
        PAGE,
        minijinja::context! {
            title => "servetest results history",
            summary => format!("{} series from {source}", series.len()),
            series => items,
        },
    )
}

/// What `servetest report history` was asked besides the selection.
pub struct Options {
    pub db: Option<String>,
    pub out: Option<std::path::PathBuf>,
    pub gate: bool,
    /// Only change points among this many newest runs count (`None`: the latest, wherever).
    pub recent: Option<usize>,
    pub min_change: f64,
    /// `--metric` was given: gate it even if it is not among `GATED_BY_DEFAULT`.
    pub chosen_metric: bool,
}

fn open(db: Option<String>) -> Result<super::Store, String> {
    let location = db
        .or_else(super::location)
        .ok_or("the results history is off (SERVETEST_DB=off); name a database with --db")?;
    super::Store::open(&location)
}

/// Prints the table, writes the page; with `gate`, returns whether a series regressed recently.
pub fn run(
    cases: &[String],
    metric: Option<&str>,
    last: usize,
    settings: Settings,
    opts: &Options,
) -> Result<bool, String> {
    let store = open(opts.db.clone())?;
    let points = store.series(cases, metric, last)?;
    if points.is_empty() {
        return Err(format!(
            "no recorded COMPLETED values{}{} in {}",
            if cases.is_empty() {
                String::new()
            } else {
                format!(" of {}", cases.join(", "))
            },
            metric.map(|m| format!(" for {m}")).unwrap_or_default(),
            store.shown
        ));
    }
    let all = series(&points, settings);
    print!("{}", table(&all));
    let out = opts.out.clone().unwrap_or_else(|| {
        let db =
            std::path::PathBuf::from(store.shown.strip_prefix("sqlite:").unwrap_or(&store.shown));
        match db.parent() {
            Some(dir) if !store.shown.contains("://") && dir.is_dir() => dir.join("history.html"),
            _ => std::path::PathBuf::from("history.html"),
        }
    });
    let page = html(&all, &store.shown, opts.recent, opts.min_change)?;
    crate::fsutil::write_atomic(&out, page.as_bytes())
        .map_err(|e| format!("failed to write {}: {e}", out.display()))?;
    eprintln!("servetest: history page {}", out.display());
    let regressions: Vec<String> = all
        .iter()
        .filter(|s| opts.chosen_metric || gated_by_default(s.metric))
        .filter_map(|s| {
            s.regression(opts.recent, opts.min_change).map(|c| {
                format!(
                    "{}: {:+.1} % at run {} of {} (p {:.2e})",
                    s.label(),
                    c.relative() * 100.0,
                    c.index + 1,
                    s.points.len(),
                    c.p_value
                )
            })
        })
        .collect();
    if opts.gate {
        if regressions.is_empty() {
            println!(
                "gate: no regression in {} series{}",
                all.len(),
                opts.recent
                    .map(|r| format!(" (change points in the last {r} run(s))"))
                    .unwrap_or_default()
            );
        } else {
            println!(
                "gate: {} regression(s):\n  {}",
                regressions.len(),
                regressions.join("\n  ")
            );
        }
    }
    Ok(opts.gate && !regressions.is_empty())
}

/// Imports earlier runs (each path one run: a run directory, results.json, servetest_results.csv or
/// an upstream-shaped CSV) into the history, keyed by the path, so importing twice adds nothing.
pub fn import(paths: &[std::path::PathBuf], db: Option<String>) -> Result<(), String> {
    let store = open(db)?;
    // Imported rows join the series of today's case files (same content hash), so history that
    // starts from old runs continues into new ones; a case no longer on disk keeps its name only.
    let root = crate::env::config_dir().unwrap_or_else(|| std::path::PathBuf::from("test_configs"));
    let hashes: std::collections::HashMap<String, String> =
        crate::case::discover::discover(&[root])
            .cases
            .iter()
            .map(|c| (c.name.clone(), super::store::case_hash(&c.path)))
            .collect();
    for path in paths {
        let rows = crate::report::baseline::load_rows(path)?;
        let abs = std::path::absolute(path).unwrap_or_else(|_| path.clone());
        let started = rows
            .iter()
            .filter_map(|r| r.start)
            .fold(f64::INFINITY, f64::min);
        let started = if started.is_finite() {
            started
        } else {
            std::fs::metadata(path)
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map_or(0.0, |d| d.as_secs_f64())
        };
        let mut meta = super::RunMeta::here(&format!("import:{}", abs.display()), "import");
        meta.started = started;
        meta.project_commit = None;
        meta.engine_version = None;
        meta.gpu_type = rows.first().map(|r| r.gpu_type.clone());
        meta.executor = rows.first().map(|r| r.executor.clone());
        meta.output_path = Some(abs.display().to_string());
        store.begin_run(&meta)?;
        let cases = store.record_by_case(&meta.run_id, &rows, |case| {
            hashes
                .get(case)
                .cloned()
                .unwrap_or_else(|| format!("import:{case}"))
        })?;
        println!(
            "{}: {} row(s) of {} case(s) imported",
            path.display(),
            rows.len(),
            cases
        );
    }
    let (runs, results) = store.counts()?;
    println!("{}: {runs} run(s), {results} result row(s)", store.shown);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn points(metric: &str, values: &[f64], hash_from: usize) -> Vec<Point> {
        values
            .iter()
            .enumerate()
            .map(|(i, v)| Point {
                run_id: format!("run{i}"),
                started: i as f64,
                test_name: "case_a".into(),
                variant: String::new(),
                case_hash: if i < hash_from {
                    "old".into()
                } else {
                    "new".into()
                },
                concurrency: 4,
                metric: metric.into(),
                value: *v,
                executor: "local".into(),
                gpu_type: "CPU".into(),
            })
            .collect()
    }

    fn stepped(after: f64) -> Vec<f64> {
        let mut v: Vec<f64> = (0..20)
            .map(|i| if i % 2 == 0 { 101.0 } else { 99.0 })
            .collect();
        v.extend([after + 1.0, after - 1.0, after]);
        v
    }

    #[test]
    fn a_recent_latency_step_is_a_regression_marked_on_the_page_and_an_improvement_is_not() {
        let p = points("median_ttft_ms", &stepped(110.0), 0);
        let all = series(&p, Settings::default());
        assert_eq!(all.len(), 1);
        assert_eq!(all[0].changes.len(), 1, "{:?}", all[0].changes);
        let reg = all[0].regression(Some(3), 0.05).expect("a regression");
        assert_eq!(reg.index, 20);
        assert!(all[0].regression(None, 0.2).is_none(), "below --min-change");
        let page = html(&all, "test.db", None, 0.05).unwrap();
        assert!(
            page.contains(r#"data-runs="23" data-changes="1""#),
            "{page}"
        );
        assert!(page.contains("regression: +10.0 % at run 21"), "{page}");
        assert!(
            table(&all).contains("run 21 (run20): +10.0 %"),
            "{}",
            table(&all)
        );
        // Throughput up by the same step: a change point, not a regression.
        let p = points("output_throughput", &stepped(110.0), 0);
        let all = series(&p, Settings::default());
        assert_eq!(all[0].changes.len(), 1);
        assert!(all[0].regression(None, 0.0).is_none());
    }

    #[test]
    fn a_changed_case_file_starts_a_new_series() {
        let p = points("median_ttft_ms", &stepped(110.0), 20);
        let all = series(&p, Settings::default());
        assert_eq!(all[0].points.len(), 3, "only the newest content's runs");
        assert!(all[0].changes.is_empty());
    }

    #[test]
    fn directions_are_known_or_left_out_of_the_gate() {
        for m in [
            "median_ttft_ms",
            "p99_e2el_ms",
            "failed",
            "infer_failed",
            "duration",
            "prefill_latency_ms",
        ] {
            assert_eq!(direction(m), Some(true), "{m}");
        }
        for m in [
            "output_throughput",
            "max_output_tokens_per_s",
            "completed",
            "tiny_greedy/exact_match/none",
            "prefill_mfu",
        ] {
            assert_eq!(direction(m), Some(false), "{m}");
        }
        for m in ["std_ttft_ms", "total_input_tokens", "seq_len"] {
            assert_eq!(direction(m), None, "{m}");
        }
        assert!(gated_by_default("median_ttft_ms") && !gated_by_default("mean_itl_ms"));
    }

    #[test]
    fn failures_rising_from_zero_and_a_regression_on_a_later_night_are_gated() {
        // 0 failures for 20 runs, then 2 for 3 runs: a rise from zero is a regression.
        let mut v = vec![0.0; 20];
        v.extend([2.0, 2.0, 3.0, 2.0, 2.0, 3.0]);
        let p = points("failed", &v, 0);
        let all = series(&p, Settings::default());
        assert!(
            all[0].regression(None, 0.5).is_some(),
            "{:?}",
            all[0].changes
        );
        // The step of the first test, five nights later: still flagged without --recent, not with
        // --recent 3.
        let mut v = stepped(110.0);
        v.extend([110.0, 109.0, 111.0, 110.0, 110.5]);
        let p = points("median_ttft_ms", &v, 0);
        let all = series(&p, Settings::default());
        assert!(all[0].regression(None, 0.05).is_some());
        assert!(all[0].regression(Some(3), 0.05).is_none());
    }

    #[test]
    fn non_finite_values_are_not_points_of_a_series() {
        let mut v = stepped(100.0);
        v[5] = f64::NAN;
        v[7] = f64::INFINITY;
        let p = points("median_ttft_ms", &v, 0);
        let all = series(&p, Settings::default());
        assert_eq!(all[0].points.len(), v.len() - 2);
        assert!(all[0].changes.is_empty(), "{:?}", all[0].changes);
        assert!(detect(
            &[1.0, f64::NAN, 1.0, 5.0, 5.0, f64::INFINITY, 5.0],
            Settings::default()
        )
        .is_empty());
    }
}
