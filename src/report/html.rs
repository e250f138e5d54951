//! `servetest report html RUN_DIR`: one self-contained page (inline CSS and SVG, no scripts, nothing
//! fetched) over a run's `results.json`: per case, throughput against latency (one point per
//! concurrency), TTFT and TPOT against concurrency, the numbers as a table, and — with `--baseline` —
//! the baseline run drawn beside each series. Charts are drawn with plotters' SVG backend.

use std::collections::BTreeMap;

use plotters::prelude::*;

use crate::report::results::Row;

const WIDTH: u32 = 420;
const HEIGHT: u32 = 300;
const NOW: RGBColor = RGBColor(0x1f, 0x6f, 0xb4);
const BASE: RGBColor = RGBColor(0xa0, 0xa0, 0xa0);

/// One series: (x, y, concurrency label).
type Points = Vec<(f64, f64, u64)>;

struct Case<'a> {
    name: &'a str,
    rows: Vec<&'a Row>,
    baseline: Vec<&'a Row>,
}

fn metric(r: &Row, name: &str) -> Option<f64> {
    r.metrics.get(name).copied().filter(|v| v.is_finite())
}

fn series(rows: &[&Row], x: impl Fn(&Row) -> Option<f64>, y: &str) -> Points {
    let mut pts: Points = rows
        .iter()
        .filter_map(|r| Some((x(r)?, metric(r, y)?, r.concurrency?)))
        .collect();
    pts.sort_by_key(|p| p.2);
    pts
}

fn range(values: impl Iterator<Item = f64>) -> std::ops::Range<f64> {
    let (lo, hi) = values.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
        (lo.min(v), hi.max(v))
    });
    if !lo.is_finite() {
        return 0.0..1.0;
    }
    let pad = ((hi - lo) * 0.1).max(hi.abs() * 0.05).max(1e-6);
    (lo - pad).max(0.0)..hi + pad
}

/// One chart as an SVG string: every (label, colour, points) series as a line with marked points.
fn chart(
    title: &str,
    x_label: &str,
    y_label: &str,
    lines: &[(String, RGBColor, Points)],
) -> Result<String, String> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (WIDTH, HEIGHT)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| e.to_string())?;
        let xs = range(lines.iter().flat_map(|l| l.2.iter().map(|p| p.0)));
        let ys = range(lines.iter().flat_map(|l| l.2.iter().map(|p| p.1)));
        let mut c = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 16))
            .margin(8)
            .x_label_area_size(36)
            .y_label_area_size(52)
            .build_cartesian_2d(xs, ys)
            .map_err(|e| e.to_string())?;
        c.configure_mesh()
            .x_desc(x_label)
            .y_desc(y_label)
            .label_style(("sans-serif", 11))
            .draw()
            .map_err(|e| e.to_string())?;
        for (label, colour, pts) in lines {
            let colour = *colour;
            c.draw_series(LineSeries::new(
                pts.iter().map(|p| (p.0, p.1)),
                colour.stroke_width(2),
            ))
            .map_err(|e| e.to_string())?
            .label(label.as_str())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 16, y)], colour.stroke_width(2))
            });
            c.draw_series(
                pts.iter()
                    .map(|p| Circle::new((p.0, p.1), 3, colour.filled())),
            )
            .map_err(|e| e.to_string())?;
            c.draw_series(pts.iter().map(|p| {
                Text::new(
                    format!("c{}", p.2),
                    (p.0, p.1),
                    ("sans-serif", 10).into_font().color(&colour),
                )
            }))
            .map_err(|e| e.to_string())?;
        }
        c.configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK.mix(0.3))
            .label_font(("sans-serif", 11))
            .draw()
            .map_err(|e| e.to_string())?;
        root.present().map_err(|e| e.to_string())?;
    }
    Ok(svg)
}

fn case_charts(case: &Case) -> Result<Vec<String>, String> {
    let with_base = |label: &str, now: Points, base: Points| {
        let mut v = vec![(label.to_owned(), NOW, now)];
        if !base.is_empty() {
            v.push(("baseline".to_owned(), BASE, base));
        }
        v
    };
    let e2el = |r: &Row| metric(r, "median_e2el_ms");
    let conc = |r: &Row| r.concurrency.map(|c| c as f64);
    Ok(vec![
        chart(
            "Throughput vs latency",
            "median E2EL (ms)",
            "output tok/s",
            &with_base(
                "this run",
                series(&case.rows, e2el, "output_throughput"),
                series(&case.baseline, e2el, "output_throughput"),
            ),
        )?,
        chart(
            "TTFT vs concurrency",
            "concurrency",
            "ms",
            &[
                vec![
                    (
                        "median".to_owned(),
                        NOW,
                        series(&case.rows, conc, "median_ttft_ms"),
                    ),
                    (
                        "p99".to_owned(),
                        RGBColor(0xd6, 0x5f, 0x00),
                        series(&case.rows, conc, "p99_ttft_ms"),
                    ),
                ],
                if case.baseline.is_empty() {
                    vec![]
                } else {
                    vec![(
                        "baseline median".to_owned(),
                        BASE,
                        series(&case.baseline, conc, "median_ttft_ms"),
                    )]
                },
            ]
            .concat(),
        )?,
        chart(
            "TPOT vs concurrency",
            "concurrency",
            "ms",
            &with_base(
                "median",
                series(&case.rows, conc, "median_tpot_ms"),
                series(&case.baseline, conc, "median_tpot_ms"),
            ),
        )?,
    ])
}

const PAGE: &str = r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{{ title }}</title>
<style>
body { font-family: sans-serif; margin: 24px; color: #222; }
h1 { font-size: 22px; } h2 { font-size: 17px; margin-top: 32px; border-bottom: 1px solid #ddd; }
.charts { display: flex; flex-wrap: wrap; gap: 12px; }
table { border-collapse: collapse; margin: 8px 0; font-size: 13px; }
td, th { border: 1px solid #ccc; padding: 3px 8px; text-align: right; }
th { background: #f3f3f3; } td.l, th.l { text-align: left; }
.state-COMPLETED { color: #217a21; } .bad { color: #b00020; }
.meta { color: #666; font-size: 13px; }
</style></head><body>
<h1>{{ title }}</h1>
<p class="meta">{{ summary }}{% if baseline %} · baseline: {{ baseline }}{% endif %}</p>
{% for case in cases %}
<h2 id="{{ case.name }}">{{ case.name }}</h2>
<p class="meta">{{ case.family }}/{{ case.category }} · model {{ case.model }} · {{ case.executor }} job {{ case.job }}</p>
{% if case.charts %}<div class="charts">{% for svg in case.charts %}{{ svg|safe }}{% endfor %}</div>{% endif %}
<table><tr>{% for h in case.header %}<th{% if loop.first %} class="l"{% endif %}>{{ h }}</th>{% endfor %}</tr>
{% for row in case.table %}<tr>{% for cell in row %}<td{% if loop.first %} class="l"{% endif %}>{{ cell }}</td>{% endfor %}</tr>
{% endfor %}</table>
{% endfor %}
</body></html>
"#;

const COLUMNS: &[(&str, &str)] = &[
    ("req/s", "request_throughput"),
    ("out tok/s", "output_throughput"),
    ("median TTFT ms", "median_ttft_ms"),
    ("p99 TTFT ms", "p99_ttft_ms"),
    ("median TPOT ms", "median_tpot_ms"),
    ("median E2EL ms", "median_e2el_ms"),
    ("failed", "failed"),
];

/// The page for `rows` (one run), with `baseline` rows drawn beside them when given.
pub fn render(
    title: &str,
    rows: &[Row],
    baseline: Option<(&str, &[Row])>,
) -> Result<String, String> {
    let mut by_case: BTreeMap<&str, Case> = BTreeMap::new();
    for r in rows {
        by_case
            .entry(&r.test_name)
            .or_insert_with(|| Case {
                name: &r.test_name,
                rows: Vec::new(),
                baseline: Vec::new(),
            })
            .rows
            .push(r);
    }
    if let Some((_, base)) = baseline {
        for r in base {
            if let Some(c) = by_case.get_mut(r.test_name.as_str()) {
                c.baseline.push(r);
            }
        }
    }
    let mut cases = Vec::new();
    for case in by_case.values() {
        let first = case.rows[0];
        // Serving-benchmark rows get charts; other rows (accuracy, latency grids) a metric table.
        let perf = case
            .rows
            .iter()
            .any(|r| r.concurrency.is_some() && r.metrics.contains_key("median_ttft_ms"));
        let charts = if perf { case_charts(case)? } else { Vec::new() };
        // Perf rows get the fixed columns; other rows (accuracy) list whatever metrics they carry.
        let (header, table): (Vec<String>, Vec<Vec<String>>) = if perf {
            let mut header = vec!["concurrency".to_owned(), "state".to_owned()];
            header.extend(COLUMNS.iter().map(|c| c.0.to_owned()));
            let mut sorted = case.rows.clone();
            sorted.sort_by_key(|r| r.concurrency);
            let table = sorted
                .iter()
                .map(|r| {
                    let mut row = vec![
                        r.concurrency.map_or("-".into(), |c| c.to_string()),
                        r.state.clone(),
                    ];
                    row.extend(
                        COLUMNS
                            .iter()
                            .map(|c| metric(r, c.1).map_or("-".into(), |v| format!("{v:.2}"))),
                    );
                    row
                })
                .collect();
            (header, table)
        } else {
            let header = vec![
                "metric".to_owned(),
                "concurrency".to_owned(),
                "value".to_owned(),
                "state".to_owned(),
            ];
            let conc = |r: &Row| r.concurrency.map_or("-".to_owned(), |c| c.to_string());
            let table = case
                .rows
                .iter()
                .flat_map(|r| {
                    if r.metrics.is_empty() {
                        vec![vec![
                            "(no metrics)".to_owned(),
                            conc(r),
                            "-".to_owned(),
                            r.state.clone(),
                        ]]
                    } else {
                        r.metrics
                            .iter()
                            .map(|(k, v)| {
                                vec![k.clone(), conc(r), format!("{v:.4}"), r.state.clone()]
                            })
                            .collect()
                    }
                })
                .collect();
            (header, table)
        };
        cases.push(minijinja::context! {
            name => case.name,
            family => first.family,
            category => first.category,
            model => first.model,
            executor => first.executor,
            job => first.job_id,
            charts => charts,
            header => header,
            table => table,
        });
    }
    let summary = format!(
        "{} case(s), {} row(s), {} not COMPLETED",
        by_case.len(),
        rows.len(),
        rows.iter().filter(|r| r.state != "COMPLETED").count()
    );
    let mut env = minijinja::Environment::new();
    env.set_auto_escape_callback(|_| minijinja::AutoEscape::Html);
    env.add_template("page", PAGE).map_err(|e| e.to_string())?;
    env.get_template("page")
        .and_then(|t| {
            t.render(minijinja::context! {
                title => title,
                summary => summary,
                baseline => baseline.map(|b| b.0),
                cases => cases,
            })
        })
        .map_err(|e| e.to_string())
}

/// Renders `<run_dir>/results.json` (with an optional baseline run's results) to `out`
/// (default `<run_dir>/report.html`), atomically. Returns where it went.
pub fn write_for_run(
    run_dir: &std::path::Path,
    baseline: Option<&std::path::Path>,
    out: Option<&std::path::Path>,
) -> Result<std::path::PathBuf, String> {
    let results = run_dir.join(crate::report::results::JSON_NAME);
    let rows = crate::report::baseline::load_rows(&results)?;
    // Rows of attempts a resumed run superseded are history, not failures: counted in the title.
    let earlier = std::fs::read(&results)
        .ok()
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .and_then(|d| d["earlier_attempts"].as_array().map(Vec::len))
        .unwrap_or(0);
    let history = if earlier > 0 {
        format!(" ({earlier} row(s) of earlier attempts superseded by --resume)")
    } else {
        String::new()
    };
    let base_rows = baseline
        .map(crate::report::baseline::load_rows)
        .transpose()?;
    let base_label = baseline.map(|p| p.display().to_string());
    let html = render(
        &format!("servetest run {}{history}", run_dir.display()),
        &rows,
        base_label.as_deref().zip(base_rows.as_deref()),
    )?;
    let out = out.map_or_else(|| run_dir.join("report.html"), std::path::Path::to_path_buf);
    crate::fsutil::write_atomic(&out, html.as_bytes())
        .map_err(|e| format!("failed to write {}: {e}", out.display()))?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(case: &str, con: Option<u64>, metrics: &[(&str, f64)]) -> Row {
        Row {
            test_name: case.into(),
            family: "disagg".into(),
            category: "perf".into(),
            model: "tiny".into(),
            gpu_type: "CPU".into(),
            executor: "local".into(),
            job_id: "1".into(),
            concurrency: con,
            state: "COMPLETED".into(),
            start: None,
            end: None,
            metrics: metrics.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
        }
    }

    fn perf(case: &str, scale: f64) -> Vec<Row> {
        [1, 4, 16]
            .iter()
            .map(|&c| {
                let c_f = c as f64;
                row(
                    case,
                    Some(c),
                    &[
                        ("median_e2el_ms", 100.0 * scale * (1.0 + c_f / 8.0)),
                        ("output_throughput", 50.0 * c_f / scale),
                        ("median_ttft_ms", 10.0 * scale * c_f),
                        ("p99_ttft_ms", 20.0 * scale * c_f),
                        ("median_tpot_ms", 5.0 * scale),
                    ],
                )
            })
            .collect()
    }

    #[test]
    fn a_page_has_three_charts_per_perf_case_a_table_and_escaped_names() {
        let mut rows = perf("disagg_perf_<b>tiny</b>", 1.0);
        rows.push(row(
            "disagg_accuracy_tiny",
            None,
            &[("tiny_greedy/exact_match/none", 1.0)],
        ));
        let base = perf("disagg_perf_<b>tiny</b>", 1.2);
        let html = render("run <x>", &rows, Some(("old/results.json", &base))).unwrap();
        assert_eq!(
            html.matches("<svg").count(),
            3,
            "three charts for the perf case only"
        );
        assert!(
            html.contains("disagg_perf_&lt;b&gt;tiny&lt;&#x2f;b&gt;")
                || html.contains("disagg_perf_&lt;b&gt;tiny&lt;/b&gt;")
        );
        assert!(!html.contains("<b>tiny</b>"), "names are escaped");
        assert!(html.contains("run &lt;x&gt;"));
        assert!(
            html.contains("baseline: old&#x2f;results.json")
                || html.contains("baseline: old/results.json")
        );
        assert!(
            html.contains("tiny_greedy&#x2f;exact_match&#x2f;none")
                || html.contains("tiny_greedy/exact_match/none")
        );
        // The baseline series and the legend are drawn.
        assert!(html.contains("baseline median") && html.contains("this run"));
        assert!(
            !html.contains("<script"),
            "no scripts: nothing can fail in the console"
        );
    }
}
