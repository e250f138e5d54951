//! Export in the shape of TensorRT-LLM's `perf_script_test_results.csv`, for dashboards that read it:
//! one row per metric, the case named `test_benchmark[NAME]_con:N` in every name column, metric
//! names as upstream spells them (`DISAGG_SERVER_TTFT` is the median TTFT, `WIDEEP_SERVER_P99_ITL`…).
//! GPU clocks and index are left empty (servetest does not read them); only completed rows export.

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

/// `median_ttft_ms` → `DISAGG_SERVER_TTFT`, `p99_itl_ms` → `DISAGG_SERVER_P99_ITL`,
/// `output_throughput` → `DISAGG_SERVER_OUTPUT_THROUGHPUT`; other names (a case's custom metrics,
/// already in upstream's spelling) are kept.
pub fn metric_type(family: &str, metric: &str) -> String {
    let prefix = format!("{}_SERVER_", family.to_uppercase());
    let known = crate::check::logparse::DEFAULT_METRICS
        .iter()
        .any(|(n, _)| *n == metric);
    if !known {
        return metric.to_owned();
    }
    let base = metric.strip_suffix("_ms").unwrap_or(metric);
    let name = match base.split_once('_') {
        Some(("median", m)) => m.to_uppercase(),
        Some(("mean", m)) => format!("MEAN_{}", m.to_uppercase()),
        Some((p, m)) if p.starts_with('p') && p[1..].parse::<u32>().is_ok() => {
            format!("{}_{}", p.to_uppercase(), m.to_uppercase())
        }
        _ => base.to_uppercase(),
    };
    format!("{prefix}{name}")
}

fn timestamp(unix: Option<f64>) -> String {
    unix.and_then(|t| chrono::DateTime::from_timestamp(t as i64, 0))
        .map(|d| d.format("%Y-%m-%d %H:%M:%S").to_string())
        .unwrap_or_default()
}

pub fn export(rows: &[Row]) -> Vec<u8> {
    let mut w = csv::Writer::from_writer(Vec::new());
    w.write_record(COLUMNS).expect("write to memory");
    for r in rows.iter().filter(|r| r.state == "COMPLETED") {
        let con = r
            .concurrency
            .map(|c| format!("_con:{c}"))
            .unwrap_or_default();
        let name = format!("test_benchmark[{}]{con}", r.test_name);
        let total = match (r.start, r.end) {
            (Some(s), Some(e)) => format!("{:.6}", e - s),
            _ => String::new(),
        };
        let command = format!(
            "servetest test --exact {}{}",
            r.test_name,
            r.concurrency
                .map(|c| format!(" --concurrency={c}"))
                .unwrap_or_default()
        );
        for (metric, value) in &r.metrics {
            let value = value.to_string();
            let record = [
                name.as_str(),
                name.as_str(),
                "",
                "",
                "",
                name.as_str(),
                name.as_str(),
                name.as_str(),
                value.as_str(),
                total.as_str(),
                &timestamp(r.start),
                &timestamp(r.end),
                "valid",
                command.as_str(),
                "",
                "",
                &metric_type(&r.family, metric),
            ];
            w.write_record(record).expect("write to memory");
        }
    }
    w.into_inner().expect("flush to memory")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_names_and_shape() {
        assert_eq!(
            metric_type("disagg", "median_ttft_ms"),
            "DISAGG_SERVER_TTFT"
        );
        assert_eq!(
            metric_type("disagg", "median_e2el_ms"),
            "DISAGG_SERVER_E2EL"
        );
        assert_eq!(metric_type("wideep", "p99_itl_ms"), "WIDEEP_SERVER_P99_ITL");
        assert_eq!(
            metric_type("wideep", "mean_tpot_ms"),
            "WIDEEP_SERVER_MEAN_TPOT"
        );
        assert_eq!(
            metric_type("disagg", "output_throughput"),
            "DISAGG_SERVER_OUTPUT_THROUGHPUT"
        );
        assert_eq!(metric_type("disagg", "CUSTOM_X"), "CUSTOM_X");
        let row = Row {
            test_name: "disagg_perf_x".into(),
            family: "disagg".into(),
            category: "perf".into(),
            model: "m".into(),
            gpu_type: "GB200".into(),
            executor: "slurm".into(),
            job_id: "7".into(),
            concurrency: Some(16),
            state: "COMPLETED".into(),
            start: Some(1_761_872_033.0),
            end: Some(1_761_872_736.5),
            metrics: [("median_ttft_ms".to_owned(), 144.3)].into(),
        };
        let failed = Row {
            state: "FAILED".into(),
            ..row.clone()
        };
        let text = String::from_utf8(export(&[row, failed])).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], COLUMNS.join(","));
        assert_eq!(lines.len(), 2, "one metric of one completed row: {text}");
        let fields: Vec<&str> = lines[1].split(',').collect();
        assert_eq!(fields.len(), COLUMNS.len());
        assert_eq!(fields[0], "test_benchmark[disagg_perf_x]_con:16");
        assert_eq!(fields[8], "144.3");
        assert_eq!(fields[9], "703.500000");
        assert_eq!(fields[10], "2025-10-31 00:53:53");
        assert_eq!(fields[12], "valid");
        assert_eq!(fields[16], "DISAGG_SERVER_TTFT");
    }
}
