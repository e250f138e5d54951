//! `servetest report html RUN_DIR`: one self-contained page (inline CSS and SVG, no scripts, nothing
//! fetched) over a run's `results.json`: per case, throughput against latency (one point per
//! concurrency), TTFT and TPOT against concurrency, the numbers as a table, and — with `--baseline` —
//! the baseline run drawn beside each series. Charts are drawn with plotters' SVG backend.

use std::collections::BTreeMap;

use plotters::prelude::*;

use crate::report::results::Row;

const WIDTH: u32 = 420;
const HEIGHT: u32 = 300;
/// Colours of this run's series, in order; the baseline is drawn grey.
const PALETTE: [RGBColor; 6] = [
    RGBColor(0x1f, 0x6f, 0xb4),
    RGBColor(0xd6, 0x5f, 0x00),
    RGBColor(0x2c, 0xa0, 0x2c),
    RGBColor(0x94, 0x67, 0xbd),
    RGBColor(0x8c, 0x56, 0x4b),
    RGBColor(0xe3, 0x77, 0xc2),
];
const BASE: RGBColor = RGBColor(0xa0, 0xa0, 0xa0);

/// One series: (x, y, concurrency label).
type Points = Vec<(f64, f64, u64)>;

/// One line of a chart; its legend entry is drawn in HTML under the chart.
struct Line {
    label: String,
    colour: RGBColor,
    points: Points,
}

struct Case<'a> {
    name: &'a str,
    rows: Vec<&'a Row>,
    baseline: Vec<&'a Row>,
}

fn metric(r: &Row, name: &str) -> Option<f64> {
    r.metrics.get(name).copied().filter(|v| v.is_finite())
}

/// Which line a row belongs on: its model and, for sweeps over request shapes (aggregated cases),
/// the input/output lengths, else the row's variant (a latency grid's `seq=N`, a perf-sanity
/// `SERVER-CLIENT`). Points of different lines are never joined.
fn series_key(r: &Row) -> String {
    match (
        metric(r, "random_input_len"),
        metric(r, "random_output_len"),
    ) {
        (Some(i), Some(o)) => format!("{} in {i}/out {o}", r.model),
        _ if !r.variant.is_empty() => format!("{} {}", r.model, r.variant),
        _ => r.model.clone(),
    }
}

/// Rows grouped by `series_key`, each group sorted by concurrency.
/// Rows that still share a key and a concurrency (a script step that benchmarks two request shapes
/// it does not name) go to separate lines, `key (2)`, … in the order they were written, so no line
/// ever jumps vertically at one concurrency.
fn group<'a>(rows: &[&'a Row]) -> Vec<(String, Vec<&'a Row>)> {
    let mut by: BTreeMap<String, Vec<Vec<&'a Row>>> = BTreeMap::new();
    for r in rows {
        let lines = by.entry(series_key(r)).or_default();
        match lines
            .iter_mut()
            .find(|l| l.iter().all(|o| o.concurrency != r.concurrency))
        {
            Some(line) => line.push(r),
            None => lines.push(vec![r]),
        }
    }
    by.into_iter()
        .flat_map(|(k, lines)| {
            lines.into_iter().enumerate().map(move |(i, mut v)| {
                v.sort_by_key(|r| r.concurrency);
                let key = if i == 0 {
                    k.clone()
                } else {
                    format!("{k} ({})", i + 1)
                };
                (key, v)
            })
        })
        .collect()
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

/// One chart as an SVG string: every line with its points marked and labelled `c<concurrency>`.
fn chart(title: &str, x_label: &str, y_label: &str, lines: &[Line]) -> Result<String, String> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (WIDTH, HEIGHT)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| e.to_string())?;
        let xs = range(lines.iter().flat_map(|l| l.points.iter().map(|p| p.0)));
        let ys = range(lines.iter().flat_map(|l| l.points.iter().map(|p| p.1)));
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
        for line in lines {
            let colour = line.colour;
            c.draw_series(LineSeries::new(
                line.points.iter().map(|p| (p.0, p.1)),
                colour.stroke_width(2),
            ))
            .map_err(|e| e.to_string())?;
            c.draw_series(
                line.points
                    .iter()
                    .map(|p| Circle::new((p.0, p.1), 3, colour.filled())),
            )
            .map_err(|e| e.to_string())?;
            c.draw_series(line.points.iter().map(|p| {
                Text::new(
                    format!("c{}", p.2),
                    (p.0, p.1),
                    ("sans-serif", 10).into_font().color(&colour),
                )
            }))
            .map_err(|e| e.to_string())?;
        }
        root.present().map_err(|e| e.to_string())?;
    }
    Ok(svg)
}

fn hex(c: RGBColor) -> String {
    format!("#{:02x}{:02x}{:02x}", c.0, c.1, c.2)
}

/// A chart with its HTML legend; `x` names the x axis's quantity (`concurrency` charts must draw
/// every line left to right, which tests/browser/check-report.mjs checks).
fn figure(
    title: &str,
    x: &str,
    x_label: &str,
    y_label: &str,
    lines: Vec<Line>,
) -> Result<minijinja::Value, String> {
    let lines: Vec<Line> = lines.into_iter().filter(|l| !l.points.is_empty()).collect();
    let svg = chart(title, x_label, y_label, &lines)?;
    let legend: Vec<minijinja::Value> = lines
        .iter()
        .map(|l| minijinja::context! { label => l.label, colour => hex(l.colour) })
        .collect();
    Ok(minijinja::context! { svg => svg, x => x, legend => legend })
}

fn case_charts(case: &Case) -> Result<Vec<minijinja::Value>, String> {
    let now = group(&case.rows);
    let base = group(&case.baseline);
    let single = now.len() == 1;
    let e2el = |r: &Row| metric(r, "median_e2el_ms");
    let conc = |r: &Row| r.concurrency.map(|c| c as f64);
    // One line per series of this run, then the baseline's series in grey.
    let lines = |x: &dyn Fn(&Row) -> Option<f64>, y: &str, what: &str| -> Vec<Line> {
        let mut v: Vec<Line> = now
            .iter()
            .enumerate()
            .map(|(i, (key, rows))| Line {
                label: if single {
                    what.to_owned()
                } else {
                    format!("{key} {what}")
                },
                colour: PALETTE[i % PALETTE.len()],
                points: series(rows, x, y),
            })
            .collect();
        v.extend(base.iter().map(|(key, rows)| Line {
            label: if single {
                format!("baseline {what}")
            } else {
                format!("baseline {key} {what}")
            },
            colour: BASE,
            points: series(rows, x, y),
        }));
        v
    };
    // Medians only: every chart has one line per series (p99 is in the table).
    let ttft = lines(&conc, "median_ttft_ms", "median");
    Ok(vec![
        figure(
            "Throughput vs latency",
            "median_e2el_ms",
            "median E2EL (ms)",
            "output tok/s",
            lines(&e2el, "output_throughput", "this run"),
        )?,
        figure(
            "TTFT vs concurrency",
            "concurrency",
            "concurrency",
            "ms",
            ttft,
        )?,
        figure(
            "TPOT vs concurrency",
            "concurrency",
            "concurrency",
            "ms",
            lines(&conc, "median_tpot_ms", "median"),
        )?,
    ])
}

/// One table of a case: a caption, a header and rows of cells; `grid` tables are bsz × seq.
fn table(title: &str, grid: bool, header: Vec<String>, rows: Vec<Vec<String>>) -> minijinja::Value {
    minijinja::context! { title => title, grid => grid, header => header, rows => rows }
}

/// A number with about three significant digits.
fn num(v: f64) -> String {
    let a = v.abs();
    if a >= 100.0 || a == 0.0 {
        format!("{v:.0}")
    } else if a >= 10.0 {
        format!("{v:.1}")
    } else if a >= 1.0 {
        format!("{v:.2}")
    } else if a >= 0.001 {
        format!("{v:.3}")
    } else {
        format!("{v:.2e}")
    }
}

/// The latency grid (seed 003) as bsz × seq tables: prefill and decode latency, throughput, FLOP/s
/// in a unit that fits the numbers, and MFU where a peak is known.
fn latency_tables(rows: &[&Row]) -> Vec<minijinja::Value> {
    let seq = |r: &Row| metric(r, "seq_len").map(|s| s as u64);
    let mut bszs: Vec<u64> = rows.iter().filter_map(|r| r.concurrency).collect();
    let mut seqs: Vec<u64> = rows.iter().filter_map(|r| seq(r)).collect();
    bszs.sort_unstable();
    bszs.dedup();
    seqs.sort_unstable();
    seqs.dedup();
    let cell = |bsz: u64, s: u64| {
        rows.iter()
            .find(|r| r.concurrency == Some(bsz) && seq(r) == Some(s))
    };
    type Derive = Box<dyn Fn(&Row, f64, f64) -> Option<f64>>;
    let flops = |name: &'static str| -> Derive {
        Box::new(move |r, _, _| metric(r, name).map(|t| t * 1e12))
    };
    let quantities: Vec<(&str, Derive)> = vec![
        (
            "prefill latency (ms)",
            Box::new(|r, _, _| metric(r, "prefill_latency_ms")),
        ),
        (
            "decode latency (ms per step)",
            Box::new(|r, _, _| metric(r, "decode_latency_ms")),
        ),
        (
            "prefill throughput (tokens/s)",
            Box::new(|r, b, s| metric(r, "prefill_latency_ms").map(|ms| b * s / (ms / 1e3))),
        ),
        (
            "decode throughput (tokens/s)",
            Box::new(|r, b, _| metric(r, "decode_latency_ms").map(|ms| b / (ms / 1e3))),
        ),
        ("prefill compute FLOP/s", flops("prefill_tflops")),
        ("decode compute FLOP/s", flops("decode_tflops")),
        (
            "prefill MFU (%)",
            Box::new(|r, _, _| metric(r, "prefill_mfu").map(|m| m * 100.0)),
        ),
        (
            "decode MFU (%)",
            Box::new(|r, _, _| metric(r, "decode_mfu").map(|m| m * 100.0)),
        ),
    ];
    let mut out = Vec::new();
    for (title, f) in quantities {
        let values: Vec<Vec<Option<f64>>> = bszs
            .iter()
            .map(|&b| {
                seqs.iter()
                    .map(|&s| cell(b, s).and_then(|r| f(r, b as f64, s as f64)))
                    .collect()
            })
            .collect();
        let max = values
            .iter()
            .flatten()
            .flatten()
            .fold(0.0_f64, |m, v| m.max(v.abs()));
        if max == 0.0 && !values.iter().flatten().any(Option::is_some) {
            continue; // e.g. MFU without a known peak
        }
        let (title, scale) = if title.ends_with("FLOP/s") {
            let (unit, scale) = [("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3)]
                .into_iter()
                .find(|(_, s)| max >= *s)
                .unwrap_or(("", 1.0));
            (title.replace("FLOP/s", &format!("({unit}FLOP/s)")), scale)
        } else {
            (title.to_owned(), 1.0)
        };
        let mut header = vec!["bsz \\ seq".to_owned()];
        header.extend(seqs.iter().map(u64::to_string));
        let body = bszs
            .iter()
            .zip(&values)
            .map(|(b, row)| {
                let mut cells = vec![b.to_string()];
                cells.extend(row.iter().map(|v| v.map_or("-".into(), |v| num(v / scale))));
                cells
            })
            .collect();
        out.push(table(&title, true, header, body));
    }
    out
}

const PAGE: &str = r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{{ title }}</title>
<style>
body { font-family: sans-serif; margin: 24px; color: #222; }
h1 { font-size: 22px; } h2 { font-size: 17px; margin-top: 32px; border-bottom: 1px solid #ddd; }
.charts { display: flex; flex-wrap: wrap; gap: 12px; }
figure { margin: 0; } ul.legend { list-style: none; padding: 0; margin: 2px 0 0 52px; font-size: 12px; }
ul.legend li { display: inline-block; margin-right: 12px; }
ul.legend span { display: inline-block; width: 16px; height: 3px; vertical-align: middle; margin-right: 4px; }
.tables { display: flex; flex-wrap: wrap; gap: 16px; align-items: flex-start; }
table { border-collapse: collapse; margin: 8px 0; font-size: 13px; }
caption { text-align: left; font-size: 13px; font-weight: bold; padding: 2px 0; }
td, th { border: 1px solid #ccc; padding: 3px 8px; text-align: right; }
th { background: #f3f3f3; } td.l, th.l { text-align: left; }
.meta { color: #666; font-size: 13px; }
</style></head><body>
<h1>{{ title }}</h1>
<p class="meta">{{ summary }}{% if baseline %} · baseline: {{ baseline }}{% endif %}{% if history %} · <a href="{{ history }}">results history of these cases</a>{% endif %}</p>
{% for case in cases %}
<section class="case" id="{{ case.name }}">
<h2>{{ case.name }}</h2>
<p class="meta">{{ case.family }}/{{ case.category }} · model {{ case.model }} · {{ case.executor }} job {{ case.job }}</p>
{% if case.charts %}<div class="charts">{% for fig in case.charts %}<figure class="chart" data-x="{{ fig.x }}">{{ fig.svg|safe }}
<ul class="legend">{% for l in fig.legend %}<li><span style="background: {{ l.colour }}"></span>{{ l.label }}</li>{% endfor %}</ul></figure>{% endfor %}</div>{% endif %}
<div class="tables">{% for t in case.tables %}<table{% if t.grid %} class="grid"{% endif %}><caption>{{ t.title }}</caption>
<tr>{% for h in t.header %}<th{% if loop.first %} class="l"{% endif %}>{{ h }}</th>{% endfor %}</tr>
{% for row in t.rows %}<tr>{% for cell in row %}<td{% if loop.first %} class="l"{% endif %}>{{ cell }}</td>{% endfor %}</tr>
{% endfor %}</table>{% endfor %}</div>
</section>
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

fn is_perf(r: &Row) -> bool {
    r.concurrency.is_some() && r.metrics.contains_key("median_ttft_ms")
}

fn is_latency(r: &Row) -> bool {
    r.metrics.contains_key("prefill_latency_ms") && r.metrics.contains_key("seq_len")
}

/// The serving benchmark's rows, one per series and concurrency.
fn perf_table(rows: &[&Row]) -> minijinja::Value {
    let groups = group(rows);
    let several = groups.len() > 1;
    let mut header = Vec::new();
    if several {
        header.push("series".to_owned());
    }
    header.extend(["concurrency".to_owned(), "state".to_owned()]);
    header.extend(COLUMNS.iter().map(|c| c.0.to_owned()));
    let body = groups
        .iter()
        .flat_map(|(key, rows)| {
            rows.iter().map(move |r| {
                let mut row = Vec::new();
                if several {
                    row.push(key.clone());
                }
                row.extend([
                    r.concurrency.map_or("-".into(), |c| c.to_string()),
                    r.state.clone(),
                ]);
                row.extend(
                    COLUMNS
                        .iter()
                        .map(|c| metric(r, c.1).map_or("-".into(), |v| format!("{v:.2}"))),
                );
                row
            })
        })
        .collect();
    table("serving benchmark", false, header, body)
}

/// Any other rows (accuracy, inference checks, states without metrics): metric, value.
fn metrics_table(rows: &[&Row]) -> minijinja::Value {
    let header = ["metric", "concurrency", "value", "state"]
        .map(str::to_owned)
        .to_vec();
    let conc = |r: &Row| r.concurrency.map_or("-".to_owned(), |c| c.to_string());
    let body = rows
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
                    .map(|(k, v)| vec![k.clone(), conc(r), format!("{v:.4}"), r.state.clone()])
                    .collect()
            }
        })
        .collect();
    table("metrics", false, header, body)
}

/// Renders a page template with HTML auto-escaping (every value from results or case names is
/// escaped; only pre-rendered SVG is marked safe in the templates).
pub fn page(template: &str, ctx: minijinja::Value) -> Result<String, String> {
    let mut env = minijinja::Environment::new();
    env.set_auto_escape_callback(|_| minijinja::AutoEscape::Html);
    env.add_template("page", template)
        .map_err(|e| e.to_string())?;
    env.get_template("page")
        .and_then(|t| t.render(ctx))
        .map_err(|e| e.to_string())
}

/// The page for `rows` (one run), with `baseline` rows drawn beside them when given.
pub fn render(
    title: &str,
    rows: &[Row],
    baseline: Option<(&str, &[Row])>,
) -> Result<String, String> {
    render_linked(title, rows, baseline, None)
}

/// `render`, linking to the history page `history` (a relative URL) when given.
pub fn render_linked(
    title: &str,
    rows: &[Row],
    baseline: Option<(&str, &[Row])>,
    history: Option<&str>,
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
        let (perf, rest): (Vec<&Row>, Vec<&Row>) = case.rows.iter().partition(|r| is_perf(r));
        let (latency, rest): (Vec<&Row>, Vec<&Row>) = rest.into_iter().partition(|r| is_latency(r));
        let mut charts = Vec::new();
        let mut tables = Vec::new();
        if !perf.is_empty() {
            let shown = Case {
                name: case.name,
                rows: perf.clone(),
                baseline: case
                    .baseline
                    .iter()
                    .copied()
                    .filter(|r| is_perf(r))
                    .collect(),
            };
            charts = case_charts(&shown)?;
            tables.push(perf_table(&perf));
        }
        if !latency.is_empty() {
            tables.extend(latency_tables(&latency));
        }
        if !rest.is_empty() {
            tables.push(metrics_table(&rest));
        }
        cases.push(minijinja::context! {
            name => case.name,
            family => first.family,
            category => first.category,
            model => first.model,
            executor => first.executor,
            job => first.job_id,
            charts => charts,
            tables => tables,
        });
    }
    let summary = format!(
        "{} case(s), {} row(s), {} not COMPLETED",
        by_case.len(),
        rows.len(),
        rows.iter().filter(|r| r.state != "COMPLETED").count()
    );
    page(
        PAGE,
        minijinja::context! {
            title => title,
            summary => summary,
            baseline => baseline.map(|b| b.0),
            history => history,
            cases => cases,
        },
    )
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
    let linked = run_dir
        .join(crate::history::report::PAGE_NAME)
        .exists()
        .then_some(crate::history::report::PAGE_NAME);
    let html = render_linked(
        &format!("servetest run {}{history}", run_dir.display()),
        &rows,
        base_label.as_deref().zip(base_rows.as_deref()),
        linked,
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
            variant: String::new(),
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
        assert_eq!(html.matches("<figure class=\"chart\"").count(), 3);
        assert!(
            !html.contains("<script"),
            "no scripts: nothing can fail in the console"
        );
    }

    /// Series x-coordinates of every coloured line (stroke-width 2) in one SVG chart.
    fn lines_of(svg: &str) -> Vec<Vec<f64>> {
        svg.split("<polyline")
            .skip(1)
            .filter(|p| p.contains("stroke-width=\"2\""))
            .map(|p| {
                let pts = p
                    .split("points=\"")
                    .nth(1)
                    .unwrap()
                    .split('"')
                    .next()
                    .unwrap();
                pts.split_whitespace()
                    .map(|xy| xy.split(',').next().unwrap().parse().unwrap())
                    .collect()
            })
            .collect()
    }

    #[test]
    fn sweep_points_of_different_shapes_are_separate_lines_drawn_left_to_right() {
        // An aggregated sweep: 2 shapes × concurrency {1, 4}, rows in the order the sweep wrote them.
        let mut rows = Vec::new();
        for (i, o) in [(32.0, 16.0), (64.0, 16.0)] {
            for c in [4, 1] {
                let cf = c as f64;
                rows.push(row(
                    "aggregated_perf_tiny",
                    Some(c),
                    &[
                        ("random_input_len", i),
                        ("random_output_len", o),
                        ("median_e2el_ms", 50.0 * cf + i),
                        ("output_throughput", 100.0 * cf - i),
                        ("median_ttft_ms", 5.0 * cf + i / 10.0),
                        ("p99_ttft_ms", 9.0 * cf),
                        ("median_tpot_ms", 2.0 + i / 100.0),
                    ],
                ));
            }
        }
        rows.push(row("aggregated_perf_tiny", None, &[("infer_passed", 1.0)]));
        let html = render("run", &rows, None).unwrap();
        let figures: Vec<&str> = html.split("<figure class=\"chart\"").skip(1).collect();
        assert_eq!(figures.len(), 3);
        for fig in &figures {
            let lines = lines_of(fig);
            assert_eq!(lines.len(), 2, "one line per shape: {fig}");
            assert_eq!(fig.matches("<li>").count(), 2, "one legend entry per line");
            let shown = fig.replace("&#x2f;", "/");
            assert!(shown.contains("tiny in 32/out 16") && shown.contains("tiny in 64/out 16"));
            if fig.starts_with(" data-x=\"concurrency\"") {
                for xs in lines {
                    assert!(xs.windows(2).all(|w| w[0] < w[1]), "left to right: {xs:?}");
                }
            }
        }
        assert_eq!(
            html.matches("<circle").count(),
            3 * 4,
            "every point drawn once per chart"
        );
        // The inference row is listed apart, not drawn.
        assert!(html.contains("<caption>metrics</caption>") && html.contains("infer_passed"));
    }

    #[test]
    fn a_latency_grid_is_a_bsz_by_seq_table_per_quantity_with_fitting_units() {
        let mut rows = Vec::new();
        for bsz in [1u64, 4] {
            for seq in [32.0, 64.0] {
                let b = bsz as f64;
                rows.push(row(
                    "latency_perf_tiny",
                    Some(bsz),
                    &[
                        ("seq_len", seq),
                        ("prefill_latency_ms", 2.0 * b * seq / 32.0),
                        ("decode_latency_ms", 1.5),
                        ("prefill_tflops", 3e-4 * b),
                        ("decode_tflops", 2e-6 * b),
                    ],
                ));
            }
        }
        let html = render("run", &rows, None).unwrap();
        assert_eq!(html.matches("<svg").count(), 0, "no serving charts");
        let grids: Vec<&str> = html.split("<table class=\"grid\">").skip(1).collect();
        // latency ×2, throughput ×2, FLOP/s ×2; no MFU without a peak.
        assert_eq!(grids.len(), 6, "{html}");
        assert!(!html.contains("MFU"));
        let prefill = grids[0];
        assert!(prefill.contains("<caption>prefill latency (ms)</caption>"));
        assert!(prefill.contains("<th>32</th><th>64</th>"), "{prefill}");
        assert_eq!(prefill.matches("<tr>").count(), 3, "header + bsz 1 and 4");
        // bsz 4, seq 64: 16 ms; 4 × 64 tokens in 16 ms = 16,000 tokens/s.
        assert!(
            prefill.contains("<td class=\"l\">4</td><td>8.00</td><td>16.0</td>"),
            "{prefill}"
        );
        assert!(grids[2].contains("16000"), "{}", grids[2]);
        // 0.0003 TFLOP/s is shown as 0.300 GFLOP/s, not 0.0000 TFLOP/s.
        let html = html.replace("&#x2f;", "/");
        assert!(
            html.contains("prefill compute (GFLOP/s)") && grids[4].contains(">0.300<"),
            "{}",
            grids[4]
        );
        assert!(html.contains("decode compute (MFLOP/s)"));
    }

    #[test]
    fn unnamed_shapes_at_one_concurrency_become_separate_lines() {
        // A script case that benchmarks two shapes at concurrency 1 and 4 without naming them.
        let rows: Vec<Row> = [(1, 10.0), (4, 20.0), (1, 30.0), (4, 40.0)]
            .iter()
            .map(|&(c, v)| {
                row(
                    "script_perf_two",
                    Some(c),
                    &[
                        ("median_ttft_ms", v),
                        ("median_e2el_ms", v),
                        ("output_throughput", v),
                        ("median_tpot_ms", v),
                    ],
                )
            })
            .collect();
        let html = render("run", &rows, None).unwrap();
        for fig in html.split("<figure class=\"chart\"").skip(1) {
            let lines = lines_of(fig);
            assert_eq!(lines.len(), 2, "{fig}");
            if fig.starts_with(" data-x=\"concurrency\"") {
                for xs in lines {
                    assert!(xs.windows(2).all(|w| w[0] < w[1]), "{xs:?}");
                }
            }
        }
        assert!(html.contains("tiny (2)"));
    }
}
