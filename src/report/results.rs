//! `$OUTPUT_PATH/perf_script_test_results.csv`: one row per (case, concurrency), columns in a fixed,
//! documented order (README). Rows are appended whole — formatted first, then one `write` on a file
//! opened for appending, under a lock — so a crash never leaves half a row and two trials finishing
//! together never interleave. `results.json` (schema-versioned) is rewritten atomically from the
//! rows of this run.

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::Serialize;

use crate::check::logparse::DEFAULT_METRICS;

pub const CSV_NAME: &str = "perf_script_test_results.csv";
pub const JSON_NAME: &str = "results.json";
pub const SCHEMA_VERSION: u32 = 1;

/// Columns before the default metrics.
pub const LEAD_COLUMNS: &[&str] = &[
    "test_name",
    "family",
    "category",
    "model",
    "gpu_type",
    "executor",
    "job_id",
    "concurrency",
    "state",
    "start",
    "end",
];

#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct Row {
    pub test_name: String,
    pub family: String,
    pub category: String,
    pub model: String,
    pub gpu_type: String,
    pub executor: String,
    pub job_id: String,
    pub concurrency: Option<u64>,
    pub state: String,
    /// Unix seconds.
    pub start: Option<f64>,
    pub end: Option<f64>,
    pub metrics: BTreeMap<String, f64>,
}

/// Every column name, in order: the lead columns, each default metric, then `extra_metrics`
/// (a JSON object of any other metric, e.g. a case's custom ones).
pub fn header() -> Vec<String> {
    LEAD_COLUMNS
        .iter()
        .map(|s| (*s).to_owned())
        .chain(DEFAULT_METRICS.iter().map(|(n, _)| (*n).to_owned()))
        .chain(["extra_metrics".to_owned()])
        .collect()
}

impl Row {
    fn fields(&self) -> Vec<String> {
        let opt = |v: Option<f64>| v.map(|x| format!("{x:.3}")).unwrap_or_default();
        let mut out = vec![
            self.test_name.clone(),
            self.family.clone(),
            self.category.clone(),
            self.model.clone(),
            self.gpu_type.clone(),
            self.executor.clone(),
            self.job_id.clone(),
            self.concurrency.map(|c| c.to_string()).unwrap_or_default(),
            self.state.clone(),
            opt(self.start),
            opt(self.end),
        ];
        for (name, _) in DEFAULT_METRICS {
            out.push(
                self.metrics
                    .get(*name)
                    .map(|v| v.to_string())
                    .unwrap_or_default(),
            );
        }
        let extra: BTreeMap<&String, &f64> = self
            .metrics
            .iter()
            .filter(|(k, _)| !DEFAULT_METRICS.iter().any(|(n, _)| n == k))
            .collect();
        out.push(if extra.is_empty() {
            String::new()
        } else {
            serde_json::to_string(&extra).expect("numbers serialize")
        });
        out
    }
}

fn csv_line(fields: &[String]) -> Vec<u8> {
    let mut w = csv::Writer::from_writer(Vec::new());
    w.write_record(fields).expect("writing to memory");
    w.into_inner().expect("flush to memory")
}

pub struct ResultsWriter {
    dir: PathBuf,
    rows: Mutex<Vec<Row>>,
}

impl ResultsWriter {
    pub fn new(dir: &Path) -> ResultsWriter {
        ResultsWriter {
            dir: dir.to_path_buf(),
            rows: Mutex::new(Vec::new()),
        }
    }

    /// For `--resume`: this run continues the one whose rows are already in the CSV.
    pub fn resume(dir: &Path) -> Result<ResultsWriter, String> {
        let w = ResultsWriter::new(dir);
        if w.csv_path().exists() {
            *w.rows.lock().unwrap_or_else(|p| p.into_inner()) =
                super::baseline::load_rows(&w.csv_path())?;
        }
        Ok(w)
    }

    /// Whether the results already hold a COMPLETED row of `case` from job `job_id`.
    pub fn has_completed(&self, case: &str, job_id: &str) -> bool {
        self.rows
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .any(|r| r.test_name == case && r.job_id == job_id && r.state == "COMPLETED")
    }

    pub fn csv_path(&self) -> PathBuf {
        self.dir.join(CSV_NAME)
    }

    /// Appends rows to the CSV (header first if the file is new) and rewrites results.json.
    pub fn append(&self, rows: &[Row]) -> std::io::Result<()> {
        let mut all = self.rows.lock().unwrap_or_else(|p| p.into_inner());
        let path = self.csv_path();
        let mut file = OpenOptions::new().create(true).append(true).open(&path)?;
        let before = file.metadata()?.len();
        let mut bytes = Vec::new();
        if before == 0 {
            bytes.extend(csv_line(&header()));
        }
        for r in rows {
            bytes.extend(csv_line(&r.fields()));
        }
        // A full disk can stop a write part-way: cut the file back so no half row remains.
        if let Err(e) = file.write_all(&bytes).and_then(|()| file.sync_data()) {
            let _ = file.set_len(before);
            return Err(e);
        }
        all.extend_from_slice(rows);
        let doc = serde_json::json!({"schema_version": SCHEMA_VERSION, "rows": *all});
        crate::fsutil::write_atomic(
            &self.dir.join(JSON_NAME),
            &serde_json::to_vec_pretty(&doc).expect("rows serialize"),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(name: &str, c: u64) -> Row {
        Row {
            test_name: name.into(),
            family: "script".into(),
            category: "perf".into(),
            model: "m, with \"quotes\"".into(),
            gpu_type: "CPU".into(),
            executor: "local".into(),
            job_id: "local-1".into(),
            concurrency: Some(c),
            state: "COMPLETED".into(),
            start: Some(1.0),
            end: Some(2.5),
            metrics: [
                ("median_ttft_ms".to_owned(), 12.5),
                ("MY_METRIC".to_owned(), 3.0),
            ]
            .into(),
        }
    }

    #[test]
    fn concurrent_appends_keep_whole_rows_and_one_header() {
        let dir = tempfile::tempdir().unwrap();
        let w = std::sync::Arc::new(ResultsWriter::new(dir.path()));
        let handles: Vec<_> = (0..8)
            .map(|i| {
                let w = w.clone();
                std::thread::spawn(move || {
                    w.append(&[row(&format!("case{i}"), 1), row(&format!("case{i}"), 8)])
                        .unwrap()
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        let mut reader = csv::Reader::from_path(w.csv_path()).unwrap();
        let headers: Vec<String> = reader
            .headers()
            .unwrap()
            .iter()
            .map(str::to_owned)
            .collect();
        assert_eq!(headers, header());
        let records: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
        assert_eq!(records.len(), 16);
        let col = |name: &str| headers.iter().position(|h| h == name).unwrap();
        for r in &records {
            assert_eq!(r.len(), headers.len());
            assert_eq!(&r[col("model")], "m, with \"quotes\"");
            assert_eq!(&r[col("median_ttft_ms")], "12.5");
            assert_eq!(&r[col("extra_metrics")], "{\"MY_METRIC\":3.0}");
        }
        let json: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.path().join(JSON_NAME)).unwrap()).unwrap();
        assert_eq!(json["schema_version"], 1);
        assert_eq!(json["rows"].as_array().unwrap().len(), 16);
    }
}
