//! `$OUTPUT_PATH/servetest_results.csv`: one row per (case, variant, concurrency), columns in a fixed,
//! documented order (README); upstream's `perf_script_test_results.csv` (its own schema, see
//! `upstream.rs`) is appended alongside for disagg/wideep perf and stress rows. Rows are appended whole — formatted first, then one `write` on a file
//! opened for appending, under a lock — so a crash never leaves half a row and two trials finishing
//! together never interleave. The CSV is the durable record (`--resume` reads it back).
//! `results.json` (schema-versioned) is a whole-run view, rewritten atomically from the rows of this
//! run at most every `JSON_EVERY` and at the end of the run (`flush`): rewriting it after every trial
//! made a run quadratic in its rows (109 ms per case at 10,000 cases, against 11 ms at 50).

use std::collections::{BTreeMap, HashSet};
use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::check::logparse::DEFAULT_METRICS;

pub const CSV_NAME: &str = "servetest_results.csv";
/// Upstream's file name, in upstream's schema (dashboards read it).
pub const UPSTREAM_CSV_NAME: &str = "perf_script_test_results.csv";
pub const JSON_NAME: &str = "results.json";
pub const SCHEMA_VERSION: u32 = 1;
/// The least time between two rewrites of results.json during a run.
pub const JSON_EVERY: Duration = Duration::from_secs(2);

/// Columns before the default metrics.
pub const LEAD_COLUMNS: &[&str] = &[
    "test_name",
    "family",
    "category",
    "model",
    "variant",
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
    /// What tells this row from the case's other rows at the same concurrency (a latency grid's
    /// sequence length, an aggregated sweep point, a perf-sanity server-client pair); empty when
    /// the case has one row per concurrency. Part of a row's identity in the baseline gate and the
    /// results history.
    #[serde(default)]
    pub variant: String,
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

/// The header of CSVs written before the `variant` column (read, and rewritten on `--resume`).
pub fn header_before_variant() -> Vec<String> {
    header().into_iter().filter(|h| h != "variant").collect()
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
            self.variant.clone(),
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

/// Each case's final attempt (the rows of the job it ran last) and the rows of earlier attempts
/// (an interrupted run's CANCELLED job that `--resume` ran again): views of a run show the first,
/// and keep the second apart as history, not as failures.
pub fn split_attempts(rows: &[Row]) -> (Vec<&Row>, Vec<&Row>) {
    let mut last_job: std::collections::HashMap<&str, &str> = Default::default();
    for r in rows {
        last_job.insert(&r.test_name, &r.job_id);
    }
    rows.iter()
        .partition(|r| last_job.get(r.test_name.as_str()) == Some(&r.job_id.as_str()))
}

/// Appends `bytes` and syncs; a full disk can stop a write part-way, so the file is cut back to
/// `before` and no half row remains.
fn append_whole(file: &mut std::fs::File, before: u64, bytes: &[u8]) -> std::io::Result<()> {
    if let Err(e) = file.write_all(bytes).and_then(|()| file.sync_data()) {
        let _ = file.set_len(before);
        return Err(e);
    }
    Ok(())
}

fn csv_line(fields: &[String]) -> Vec<u8> {
    let mut w = csv::Writer::from_writer(Vec::new());
    w.write_record(fields).expect("writing to memory");
    w.into_inner().expect("flush to memory")
}

pub struct ResultsWriter {
    dir: PathBuf,
    state: Mutex<State>,
    case_meta: std::collections::HashMap<String, super::upstream::CaseMeta>,
}

#[derive(Default)]
struct State {
    rows: Vec<Row>,
    /// (case, job id) of every COMPLETED row, for `has_completed` without a scan.
    completed: HashSet<(String, String)>,
    /// When results.json was last written; `None`: not yet in this run.
    json_written: Option<Instant>,
    /// Rows were added since results.json was last written.
    json_stale: bool,
}

impl State {
    fn add(&mut self, rows: &[Row]) {
        for r in rows {
            if r.state == "COMPLETED" {
                self.completed
                    .insert((r.test_name.clone(), r.job_id.clone()));
            }
        }
        self.rows.extend_from_slice(rows);
        self.json_stale = true;
    }
}

impl ResultsWriter {
    pub fn new(dir: &Path) -> ResultsWriter {
        ResultsWriter {
            dir: dir.to_path_buf(),
            state: Mutex::new(State::default()),
            case_meta: Default::default(),
        }
    }

    /// What upstream's CSV rows need from each case (model, precision, gen servers).
    pub fn with_case_meta(
        mut self,
        meta: std::collections::HashMap<String, super::upstream::CaseMeta>,
    ) -> ResultsWriter {
        self.case_meta = meta;
        self
    }

    /// For `--resume`: this run continues the one whose rows are already in the CSV.
    pub fn resume(dir: &Path) -> Result<ResultsWriter, String> {
        let w = ResultsWriter::new(dir);
        // Runs before servetest_results.csv kept servetest's rows under upstream's file name: move
        // that file to servetest's name first, so the upstream file starts fresh in its own schema.
        let older = dir.join(UPSTREAM_CSV_NAME);
        if !w.csv_path().exists() && older.exists() {
            let first_line = std::fs::read_to_string(&older)
                .ok()
                .and_then(|t| t.lines().next().map(str::to_owned))
                .unwrap_or_default();
            if first_line == header().join(",") || first_line == header_before_variant().join(",") {
                std::fs::rename(&older, w.csv_path()).map_err(|e| {
                    format!(
                        "failed to move {} to {}: {e}",
                        older.display(),
                        w.csv_path().display()
                    )
                })?;
            }
        }
        if w.csv_path().exists() {
            let rows = super::baseline::load_rows(&w.csv_path())?;
            // A CSV of an earlier layout (before the `variant` column) is rewritten in this one, rows
            // kept, so that this run's appended rows line up with its header.
            let first_line = std::fs::read_to_string(w.csv_path())
                .ok()
                .and_then(|t| t.lines().next().map(str::to_owned))
                .unwrap_or_default();
            if first_line != header().join(",") {
                let mut bytes = csv_line(&header());
                for r in &rows {
                    bytes.extend(csv_line(&r.fields()));
                }
                crate::fsutil::write_atomic(&w.csv_path(), &bytes)
                    .map_err(|e| format!("failed to rewrite {}: {e}", w.csv_path().display()))?;
            }
            w.lock().add(&rows);
        }
        Ok(w)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether the results already hold a COMPLETED row of `case` from job `job_id`.
    pub fn has_completed(&self, case: &str, job_id: &str) -> bool {
        self.lock()
            .completed
            .contains(&(case.to_owned(), job_id.to_owned()))
    }

    pub fn csv_path(&self) -> PathBuf {
        self.dir.join(CSV_NAME)
    }

    pub fn json_path(&self) -> PathBuf {
        self.dir.join(JSON_NAME)
    }

    /// Appends rows to the CSV (header first if the file is new); results.json follows when it was
    /// last written `JSON_EVERY` ago, or is the first write of the run.
    pub fn append(&self, rows: &[Row]) -> std::io::Result<()> {
        let mut state = self.lock();
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
        append_whole(&mut file, before, &bytes)?;
        if rows.iter().any(super::upstream::is_upstream_row) {
            let path = self.dir.join(UPSTREAM_CSV_NAME);
            let mut file = OpenOptions::new().create(true).append(true).open(&path)?;
            let before = file.metadata()?.len();
            let bytes = super::upstream::export_with(rows, &self.case_meta, before == 0);
            append_whole(&mut file, before, &bytes)?;
        }
        state.add(rows);
        if state.json_written.is_none_or(|t| t.elapsed() >= JSON_EVERY) {
            self.write_json(&mut state)?;
        }
        Ok(())
    }

    /// Writes results.json if rows came since its last write (end of run, Ctrl-C).
    pub fn flush(&self) -> std::io::Result<()> {
        let mut state = self.lock();
        if state.json_stale {
            self.write_json(&mut state)?;
        }
        Ok(())
    }

    fn write_json(&self, state: &mut State) -> std::io::Result<()> {
        let (rows, earlier) = split_attempts(&state.rows);
        let doc = serde_json::json!({
            "schema_version": SCHEMA_VERSION,
            "rows": rows,
            "earlier_attempts": earlier,
        });
        crate::fsutil::write_atomic(
            &self.json_path(),
            &serde_json::to_vec_pretty(&doc).expect("rows serialize"),
        )?;
        state.json_written = Some(Instant::now());
        state.json_stale = false;
        Ok(())
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
            variant: String::new(),
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
        w.flush().unwrap();
        let json: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.path().join(JSON_NAME)).unwrap()).unwrap();
        assert_eq!(json["schema_version"], 1);
        assert_eq!(json["rows"].as_array().unwrap().len(), 16);
    }

    fn json_rows(w: &ResultsWriter) -> usize {
        let json: serde_json::Value =
            serde_json::from_slice(&std::fs::read(w.json_path()).unwrap()).unwrap();
        json["rows"].as_array().unwrap().len()
    }

    #[test]
    fn results_json_is_written_first_then_at_most_every_interval_and_at_flush() {
        let dir = tempfile::tempdir().unwrap();
        let w = ResultsWriter::new(dir.path());
        let first = Instant::now();
        w.append(&[row("a", 1)]).unwrap();
        assert_eq!(
            json_rows(&w),
            1,
            "the first rows of a run are visible at once"
        );
        w.append(&[row("b", 1)]).unwrap();
        w.append(&[row("c", 1)]).unwrap();
        // Within JSON_EVERY of the first write: the CSV has all rows, the JSON lags (unless this
        // machine stalled for the whole interval, when a rewrite is allowed).
        let csv_rows = csv::Reader::from_path(w.csv_path())
            .unwrap()
            .records()
            .count();
        assert_eq!(csv_rows, 3);
        if first.elapsed() < JSON_EVERY {
            assert_eq!(json_rows(&w), 1, "rewritten within JSON_EVERY");
        }
        // Once the interval has passed, the next append rewrites it whole.
        std::thread::sleep(JSON_EVERY);
        w.append(&[row("d", 1)]).unwrap();
        assert_eq!(json_rows(&w), 4);
        w.append(&[row("e", 1)]).unwrap();
        w.flush().unwrap();
        assert_eq!(json_rows(&w), 5, "flush writes every row");
        assert!(w.has_completed("b", "local-1"));
        assert!(!w.has_completed("b", "local-2"));
    }

    #[test]
    fn resume_reads_the_csv_back() {
        let dir = tempfile::tempdir().unwrap();
        let w = ResultsWriter::new(dir.path());
        let mut failed = row("f", 1);
        failed.state = "FAILED".into();
        w.append(&[row("a", 1), failed]).unwrap();
        let resumed = ResultsWriter::resume(dir.path()).unwrap();
        assert!(resumed.has_completed("a", "local-1"));
        assert!(!resumed.has_completed("f", "local-1"));
        resumed.append(&[row("g", 1)]).unwrap();
        resumed.flush().unwrap();
        assert_eq!(
            json_rows(&resumed),
            3,
            "results.json holds the resumed rows too"
        );
    }

    #[test]
    fn a_resumed_case_supersedes_its_interrupted_attempt() {
        let mut cancelled = row("case0", 1);
        cancelled.state = "CANCELLED".into();
        cancelled.job_id = "local-1".into();
        let mut redone = row("case0", 1);
        redone.job_id = "local-9".into();
        let other = row("case1", 1);
        let rows = vec![cancelled, other, redone];
        let (last, earlier) = split_attempts(&rows);
        assert_eq!(last.len(), 2);
        assert!(last.iter().all(|r| r.state == "COMPLETED"));
        assert_eq!(earlier.len(), 1);
        assert_eq!(earlier[0].state, "CANCELLED");
        let dir = tempfile::tempdir().unwrap();
        let w = ResultsWriter::new(dir.path());
        w.append(&rows).unwrap();
        w.flush().unwrap();
        let json: serde_json::Value =
            serde_json::from_slice(&std::fs::read(w.json_path()).unwrap()).unwrap();
        assert_eq!(json["rows"].as_array().unwrap().len(), 2);
        assert_eq!(json["earlier_attempts"].as_array().unwrap().len(), 1);
    }

    #[test]
    fn resuming_a_run_of_the_older_layout_moves_its_csv_to_servetest_name() {
        let dir = tempfile::tempdir().unwrap();
        let old = dir.path().join(UPSTREAM_CSV_NAME);
        let mut bytes = csv_line(&header());
        bytes.extend(csv_line(&row("case0", 1).fields()));
        std::fs::write(&old, bytes).unwrap();
        let w = ResultsWriter::resume(dir.path()).unwrap();
        assert!(w.has_completed("case0", "local-1"));
        assert!(w.csv_path().exists() && !old.exists());
    }

    #[test]
    fn resuming_a_csv_written_before_the_variant_column_rewrites_it_in_this_layout() {
        let dir = tempfile::tempdir().unwrap();
        let w = ResultsWriter::new(dir.path());
        let mut bytes = csv_line(&header_before_variant());
        let mut fields = row("case0", 1).fields();
        fields.remove(header().iter().position(|h| h == "variant").unwrap());
        bytes.extend(csv_line(&fields));
        std::fs::write(w.csv_path(), bytes).unwrap();
        let resumed = ResultsWriter::resume(dir.path()).unwrap();
        assert!(resumed.has_completed("case0", "local-1"));
        let mut v = row("case1", 1);
        v.variant = "seq=64".into();
        resumed.append(&[v]).unwrap();
        let text = std::fs::read_to_string(resumed.csv_path()).unwrap();
        assert_eq!(text.lines().next().unwrap(), header().join(","));
        let rows = super::super::baseline::load_rows(&resumed.csv_path()).unwrap();
        assert_eq!(rows.len(), 2);
        // Every metric of the older row survived (metric columns are found by name, not position).
        assert_eq!(rows[0].metrics, row("case0", 1).metrics);
        assert_eq!(rows[1].variant, "seq=64");
    }
}
