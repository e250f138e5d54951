//! The performance sweep of one model, in the files `vllm bench sweep serve` writes (upstream runs
//! that command): per combination `BENCH--k=v-…/run=N.json` (the bench result with `run_number`
//! and the combination's parameters merged in) and `summary.json` (the list of its runs); per
//! sweep `summary.csv`, one row per run of every combination, with pandas' leading index column.
//! The load comes from `servetest bench` against the model's running server.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::aggregated::case::{BenchPoint, ModelEntry};

/// Metrics kept for the run's rows (means over a combination's runs).
const ROW_METRICS: &[&str] = &[
    "request_throughput",
    "output_throughput",
    "total_token_throughput",
    "mean_ttft_ms",
    "median_ttft_ms",
    "p99_ttft_ms",
    "mean_tpot_ms",
    "median_tpot_ms",
    "p99_tpot_ms",
    "mean_itl_ms",
    "median_itl_ms",
    "p99_itl_ms",
    "mean_e2el_ms",
    "median_e2el_ms",
    "p99_e2el_ms",
    "completed",
    "failed",
];

/// One sweep directory (`performance/<label>/<YYYYmmdd_HHMMSS>/`) and every run recorded in it.
pub struct Sweep {
    pub dir: PathBuf,
    records: Vec<Value>,
}

impl Sweep {
    pub fn new(dir: PathBuf) -> Sweep {
        Sweep {
            dir,
            records: Vec::new(),
        }
    }

    /// Runs one combination `sweep_num_runs` times; returns the means of its runs.
    pub async fn point(
        &mut self,
        m: &ModelEntry,
        model: &Path,
        base: &str,
        client_flags: &[&str],
        p: &BenchPoint,
    ) -> Result<BTreeMap<String, f64>, String> {
        let dir = self.dir.join(p.dir_name());
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        let exe = std::env::current_exe().map_err(|e| e.to_string())?;
        let mut runs: Vec<Value> = Vec::new();
        for n in 0..m.benchmark.sweep_num_runs {
            let result = dir.join(format!("run={n}.json"));
            let out = tokio::process::Command::new(&exe)
                .arg("bench")
                .args(["--base-url", base, "--model"])
                .arg(model)
                .args(["--dataset", "random", "--input-len"])
                .arg(p.random_input_len.to_string())
                .arg("--output-len")
                .arg(p.random_output_len.to_string())
                .arg("--num-prompts")
                .arg(p.num_prompts.to_string())
                .arg("--max-concurrency")
                .arg(p.max_concurrency.to_string())
                .arg("--ignore-eos")
                .arg(m.benchmark.ignore_eos.to_string())
                // What vLLM's sweep adds to every run.
                .args(["--percentile-metrics", "ttft,tpot,itl,e2el"])
                .arg("--save-result")
                .arg(&result)
                .args(client_flags)
                .output()
                .await
                .map_err(|e| format!("failed to start {} bench: {e}", exe.display()))?;
            let mut json: Value = std::fs::read(&result)
                .ok()
                .and_then(|b| serde_json::from_slice(&b).ok())
                .ok_or_else(|| {
                    format!(
                        "run {n} wrote no {}: {}",
                        result.display(),
                        String::from_utf8_lossy(&out.stderr)
                    )
                })?;
            if let Value::Object(o) = &mut json {
                o.insert("run_number".into(), n.into());
                for (k, v) in &p.params {
                    o.insert(
                        k.clone(),
                        v.parse::<u64>().map_or(v.clone().into(), Value::from),
                    );
                }
            }
            crate::fsutil::write_atomic(&result, &serde_json::to_vec_pretty(&json).expect("json"))
                .map_err(|e| e.to_string())?;
            runs.push(json);
        }
        crate::fsutil::write_atomic(
            &dir.join("summary.json"),
            &serde_json::to_vec_pretty(&runs).expect("json"),
        )
        .map_err(|e| e.to_string())?;
        let mean = |key: &str| {
            runs.iter().filter_map(|r| r[key].as_f64()).sum::<f64>() / runs.len().max(1) as f64
        };
        let metrics: BTreeMap<String, f64> = ROW_METRICS
            .iter()
            .map(|k| ((*k).to_owned(), mean(k)))
            .collect();
        self.records.extend(runs);
        self.write_csv()?;
        Ok(metrics)
    }

    /// `summary.csv` as pandas' `DataFrame.from_records(runs).to_csv()`: an unnamed index column,
    /// the union of keys in first-seen order (servetest's run JSON keeps its keys sorted, so the
    /// columns come sorted, where vLLM's follow its result's insertion order), `True`/`False`,
    /// empty for missing values.
    fn write_csv(&self) -> Result<(), String> {
        let mut columns: Vec<String> = Vec::new();
        for r in &self.records {
            if let Value::Object(o) = r {
                for k in o.keys() {
                    if !columns.contains(k) {
                        columns.push(k.clone());
                    }
                }
            }
        }
        let mut w = csv::Writer::from_writer(Vec::new());
        let mut header = vec![String::new()];
        header.extend(columns.iter().cloned());
        w.write_record(&header).map_err(|e| e.to_string())?;
        for (i, r) in self.records.iter().enumerate() {
            let mut row = vec![i.to_string()];
            row.extend(columns.iter().map(|c| cell(&r[c])));
            w.write_record(&row).map_err(|e| e.to_string())?;
        }
        let bytes = w.into_inner().map_err(|e| e.to_string())?;
        crate::fsutil::write_atomic(&self.dir.join("summary.csv"), &bytes)
            .map_err(|e| e.to_string())
    }
}

fn cell(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::Bool(true) => "True".into(),
        Value::Bool(false) => "False".into(),
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        other => other.to_string(),
    }
}

/// (model perf label, combination as `BenchPoint::key`).
pub type Recorded = (String, (u64, u64, u64, u64));

/// Combinations an earlier sweep recorded, per model label (the `<label>` directory above the
/// sweep's `summary.csv`): servetest's own resume for the perf part (upstream resumes none).
pub fn recorded(path: &Path) -> Result<Vec<Recorded>, String> {
    let label = path
        .parent()
        .and_then(Path::parent)
        .and_then(Path::file_name)
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut reader =
        csv::Reader::from_path(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let headers = reader.headers().map_err(|e| e.to_string())?.clone();
    let col = |name: &str| headers.iter().position(|h| h == name);
    let (Some(c), Some(n), Some(i), Some(o)) = (
        col("max_concurrency"),
        col("num_prompts"),
        col("random_input_len"),
        col("random_output_len"),
    ) else {
        return Err(format!(
            "{}: not a sweep summary.csv (no max_concurrency/num_prompts/random_*_len columns)",
            path.display()
        ));
    };
    let mut out = Vec::new();
    for rec in reader.records() {
        let rec = rec.map_err(|e| format!("{}: {e}", path.display()))?;
        let num = |i: usize| rec.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
        out.push((label.clone(), (num(c), num(n), num(i), num(o))));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_csv_is_one_row_per_run_with_an_index_column() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Sweep::new(dir.path().join("tiny_tp1_pp1_dp1/20260101_000000"));
        std::fs::create_dir_all(&s.dir).unwrap();
        s.records = vec![
            serde_json::json!({"completed": 5, "max_concurrency": 1, "num_prompts": 5,
                "random_input_len": 32, "random_output_len": 16, "run_number": 0, "ok": true}),
            serde_json::json!({"completed": 4, "max_concurrency": 4, "num_prompts": 20,
                "random_input_len": 32, "random_output_len": 16, "run_number": 0, "x": 0.5}),
        ];
        s.write_csv().unwrap();
        let text = std::fs::read_to_string(s.dir.join("summary.csv")).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            ",completed,max_concurrency,num_prompts,ok,random_input_len,random_output_len,run_number,x"
        );
        assert_eq!(lines[1], "0,5,1,5,True,32,16,0,");
        assert_eq!(lines[2], "1,4,4,20,,32,16,0,0.5");
        let got = recorded(&s.dir.join("summary.csv")).unwrap();
        assert_eq!(
            got,
            [
                ("tiny_tp1_pp1_dp1".to_owned(), (1, 5, 32, 16)),
                ("tiny_tp1_pp1_dp1".to_owned(), (4, 20, 32, 16))
            ]
        );
    }
}
