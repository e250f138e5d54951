//! TensorRT-LLM's `perf_script_test_results.csv`, as its disagg report writer fills it (checked
//! column by column against upstream's `_convert_to_perf_result_format`): one row per metric of a
//! completed perf/stress case, every name column `test_benchmark[NAME]_con:N` with N = concurrency ×
//! gen servers (what upstream's benchmark script prints), metric types `SERVER_MEDIAN_TTFT`,
//! `SERVER_P99_ITL`, …, clocks from upstream's GPU table (GB200 2062/3996 MHz, else 0), an empty
//! `gpu_idx` and thresholds, local timestamps, state `valid`, and upstream's `disagg_benchmark …`
//! command. Written next to servetest's own `servetest_results.csv` during a run, and by
//! `servetest report export-upstream` for older runs.

use std::collections::HashMap;

use super::results::Row;

pub const COLUMNS: &[&str] = &[
    "network_name",
    "network_hash",
    "sm_clk",
    "mem_clk",
    "gpu_idx",
    "perf_case_name",
    "test_name",
    "original_test_name",
    "perf_metric",
    "total_time__sec",
    "start_timestamp",
    "end_timestamp",
    "state",
    "command",
    "threshold",
    "absolute_threshold",
    "metric_type",
];

/// What the upstream row needs from the case beyond a result row.
#[derive(Debug, Clone, Default)]
pub struct CaseMeta {
    pub model_name: String,
    pub precision: Option<String>,
    pub gen_servers: u64,
}

/// `CaseMeta` of every disagg/wideep case among `cases`, by name.
pub fn case_meta<'a>(
    cases: impl IntoIterator<Item = &'a crate::case::Case>,
) -> HashMap<String, CaseMeta> {
    cases
        .into_iter()
        .filter_map(|c| {
            let s = c.disagg()?;
            Some((
                c.name.clone(),
                CaseMeta {
                    model_name: s.metadata.model_name.clone(),
                    precision: s.metadata.precision.clone(),
                    gen_servers: s.hardware.num_gen_servers,
                },
            ))
        })
        .collect()
}

/// Upstream's default metrics per family: disagg reports median TTFT and E2EL, wideep mean,
/// median and P99 of TTFT, TPOT, ITL and E2EL.
fn upstream_default(family: &str, metric: &str) -> bool {
    match family {
        "wideep" => {
            let (stat, rest) = metric.split_once('_').unwrap_or_default();
            matches!(stat, "mean" | "median" | "p99")
                && matches!(rest, "ttft_ms" | "tpot_ms" | "itl_ms" | "e2el_ms")
        }
        _ => matches!(metric, "median_ttft_ms" | "median_e2el_ms"),
    }
}

/// `median_ttft_ms` → `SERVER_MEDIAN_TTFT`, `p99_itl_ms` → `SERVER_P99_ITL`; a case's custom metric
/// names (already upstream's) are kept; `None` for servetest metrics upstream does not report.
pub fn metric_type(family: &str, metric: &str) -> Option<String> {
    let known = crate::check::logparse::DEFAULT_METRICS
        .iter()
        .any(|(n, _)| *n == metric);
    if !known {
        return Some(metric.to_owned());
    }
    if !upstream_default(family, metric) {
        return None;
    }
    let base = metric.strip_suffix("_ms").unwrap_or(metric);
    Some(format!("SERVER_{}", base.to_uppercase()))
}

fn timestamp(unix: Option<f64>) -> String {
    unix.and_then(|t| chrono::DateTime::from_timestamp(t as i64, 0))
        .map(|d| {
            d.with_timezone(&chrono::Local)
                .format("%Y-%m-%d %H:%M:%S")
                .to_string()
        })
        .unwrap_or_default()
}

/// Upstream's locked clocks per GPU type (graphics, memory MHz); 0 where it has none.
fn clocks(gpu_type: &str) -> (u32, u32) {
    // Upstream looks its table up by the raw GPU_TYPE: only `GB200` has locked clocks
    // (`GB200_LYRIS` has none there).
    if gpu_type.eq_ignore_ascii_case("GB200") {
        (2062, 3996)
    } else {
        (0, 0)
    }
}

/// Whether upstream writes rows for this result: completed disagg/wideep perf or stress cases.
pub fn is_upstream_row(r: &Row) -> bool {
    r.state == "COMPLETED"
        && matches!(r.family.as_str(), "disagg" | "wideep")
        && matches!(r.category.as_str(), "perf" | "stress")
}

/// Upstream's CSV lines for `rows` (header first when `header`); `meta` by case name (absent for
/// older runs: the row's model, precision `unknown`, one gen server).
pub fn export_with(rows: &[Row], meta: &HashMap<String, CaseMeta>, header: bool) -> Vec<u8> {
    export_filtered(rows, meta, header, is_upstream_row)
}

fn export_filtered(
    rows: &[Row],
    meta: &HashMap<String, CaseMeta>,
    header: bool,
    keep: fn(&Row) -> bool,
) -> Vec<u8> {
    let mut w = csv::Writer::from_writer(Vec::new());
    if header {
        w.write_record(COLUMNS).expect("write to memory");
    }
    for r in rows.iter().filter(|r| keep(r)) {
        let m = meta.get(&r.test_name).cloned().unwrap_or_else(|| CaseMeta {
            model_name: r.model.clone(),
            precision: None,
            gen_servers: 1,
        });
        let n = r.concurrency.unwrap_or(0) * m.gen_servers.max(1);
        let base = format!("test_benchmark[{}]_con:{n}", r.test_name);
        let network = base.replace('/', "-");
        let total = match (r.start, r.end) {
            (Some(s), Some(e)) => (e - s).to_string(),
            _ => String::new(),
        };
        let command = format!(
            "disagg_benchmark --model={} --{} --concurrency={n}",
            m.model_name,
            m.precision.as_deref().unwrap_or("unknown")
        );
        let (sm, mem) = clocks(&r.gpu_type);
        for (metric, value) in &r.metrics {
            let Some(kind) = metric_type(&r.family, metric) else {
                continue;
            };
            let record = [
                network.clone(),
                base.clone(),
                sm.to_string(),
                mem.to_string(),
                String::new(),
                base.clone(),
                base.clone(),
                base.clone(),
                value.to_string(),
                total.clone(),
                timestamp(r.start),
                timestamp(r.end),
                "valid".to_owned(),
                command.clone(),
                String::new(),
                String::new(),
                kind,
            ];
            w.write_record(&record).expect("write to memory");
        }
    }
    w.into_inner().expect("flush to memory")
}

/// `report export-upstream`: a whole file from an earlier run's rows — every family's completed
/// perf/stress rows (asked for explicitly, unlike the file a run writes, which is upstream's own).
pub fn export(rows: &[Row], cases: &[crate::case::Case]) -> Vec<u8> {
    export_filtered(rows, &case_meta(cases), true, |r| {
        r.state == "COMPLETED" && matches!(r.category.as_str(), "perf" | "stress")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_names_and_shape() {
        assert_eq!(
            metric_type("disagg", "median_ttft_ms").as_deref(),
            Some("SERVER_MEDIAN_TTFT")
        );
        assert_eq!(
            metric_type("disagg", "median_e2el_ms").as_deref(),
            Some("SERVER_MEDIAN_E2EL")
        );
        assert_eq!(
            metric_type("disagg", "p99_itl_ms"),
            None,
            "not a disagg default"
        );
        assert_eq!(
            metric_type("wideep", "p99_itl_ms").as_deref(),
            Some("SERVER_P99_ITL")
        );
        assert_eq!(
            metric_type("wideep", "mean_tpot_ms").as_deref(),
            Some("SERVER_MEAN_TPOT")
        );
        assert_eq!(metric_type("disagg", "output_throughput"), None);
        assert_eq!(
            metric_type("disagg", "CUSTOM_X").as_deref(),
            Some("CUSTOM_X")
        );
        let row = Row {
            test_name: "disagg_perf_x".into(),
            family: "disagg".into(),
            category: "perf".into(),
            model: "m".into(),
            variant: String::new(),
            gpu_type: "GB200".into(),
            executor: "slurm".into(),
            job_id: "7".into(),
            concurrency: Some(16),
            state: "COMPLETED".into(),
            start: Some(1_761_872_033.0),
            end: Some(1_761_872_736.5),
            metrics: [
                ("median_ttft_ms".to_owned(), 144.3),
                ("p99_itl_ms".to_owned(), 9.0),
            ]
            .into(),
        };
        let failed = Row {
            state: "FAILED".into(),
            ..row.clone()
        };
        let accuracy = Row {
            category: "accuracy".into(),
            ..row.clone()
        };
        let meta = HashMap::from([(
            "disagg_perf_x".to_owned(),
            CaseMeta {
                model_name: "deepseek-r1-fp4".into(),
                precision: Some("fp4".into()),
                gen_servers: 4,
            },
        )]);
        let text = String::from_utf8(export_with(&[row, failed, accuracy], &meta, true)).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], COLUMNS.join(","));
        assert_eq!(
            lines.len(),
            2,
            "one default metric of one completed perf row: {text}"
        );
        let fields: Vec<&str> = lines[1].split(',').collect();
        assert_eq!(fields.len(), COLUMNS.len());
        // 16 per gen server × 4 gen servers, as upstream's benchmark script prints it.
        assert_eq!(fields[0], "test_benchmark[disagg_perf_x]_con:64");
        assert_eq!(
            &fields[1..4],
            ["test_benchmark[disagg_perf_x]_con:64", "2062", "3996"]
        );
        assert_eq!(fields[4], "");
        assert_eq!(fields[8], "144.3");
        assert_eq!(fields[9], "703.5");
        assert_eq!(fields[10].len(), "2025-10-31 00:53:53".len());
        assert_eq!(fields[12], "valid");
        assert_eq!(
            fields[13],
            "disagg_benchmark --model=deepseek-r1-fp4 --fp4 --concurrency=64"
        );
        assert_eq!(fields[16], "SERVER_MEDIAN_TTFT");
    }
}
