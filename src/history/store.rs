//! The database behind the results history: an embedded SQLite file (WAL, busy timeout, so two runs
//! can write at once) or PostgreSQL. Both get the same versioned migrations (`migrations/`, embedded
//! and applied by refinery) and the same SQL. Each case's result is written in one transaction, and
//! rows are keyed (run, case, job, concurrency, metric), so writing a row twice — a resumed run
//! re-recording what a killed one had written — changes nothing.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use crate::report::results::Row;

mod embedded {
    refinery::embed_migrations!("migrations");
}

/// What is known about the run that produced the rows.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RunMeta {
    pub run_id: String,
    pub started: f64,
    pub source: String,
    pub servetest_version: String,
    pub project_commit: Option<String>,
    pub engine_version: Option<String>,
    pub host: String,
    pub gpu_type: Option<String>,
    pub executor: Option<String>,
    pub cluster_profile: Option<String>,
    pub output_path: Option<String>,
}

impl RunMeta {
    /// This machine and project now: version, git commit of the working directory's repository (if
    /// any), the engine version servetest recorded (`engine-versions.txt`), host.
    pub fn here(run_id: &str, source: &str) -> RunMeta {
        let started = unix_now();
        let commit = std::process::Command::new("git")
            .args(["rev-parse", "HEAD"])
            .stderr(std::process::Stdio::null())
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned());
        let engine = std::fs::read_to_string(crate::env::output_path().join("engine-versions.txt"))
            .ok()
            .map(|t| t.split_whitespace().collect::<Vec<_>>().join(" "))
            .filter(|t| !t.is_empty());
        RunMeta {
            run_id: run_id.to_owned(),
            started,
            source: source.to_owned(),
            servetest_version: env!("CARGO_PKG_VERSION").to_owned(),
            project_commit: commit,
            engine_version: engine,
            host: nix::unistd::gethostname()
                .map(|h| h.to_string_lossy().into_owned())
                .unwrap_or_default(),
            gpu_type: Some(crate::env::gpu_type()),
            executor: None,
            cluster_profile: None,
            output_path: Some(crate::env::output_path().display().to_string()),
        }
    }
}

/// Seconds since the Unix epoch, now.
fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// One value of a series: a metric of a case at a concurrency in one run.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Point {
    pub run_id: String,
    pub started: f64,
    pub test_name: String,
    /// The row's variant (`Row::variant`): one case at one concurrency may have several series.
    pub variant: String,
    pub case_hash: String,
    pub concurrency: i64,
    pub metric: String,
    pub value: f64,
    /// The run's executor and GPU type: a series never mixes machines or executors.
    pub executor: String,
    pub gpu_type: String,
}

enum Backend {
    Sqlite(rusqlite::Connection),
    Postgres(Box<postgres::Client>),
}

pub struct Store {
    backend: Mutex<Backend>,
    /// Where it is, for messages (passwords redacted).
    pub shown: String,
}

/// The unit of a metric, from its name.
pub fn unit_of(metric: &str) -> Option<&'static str> {
    if metric.ends_with("_ms") {
        Some("ms")
    } else if metric == "request_throughput" {
        Some("req/s")
    } else if metric.ends_with("_throughput") {
        Some("tok/s")
    } else if metric.ends_with("_mfu") {
        Some("fraction")
    } else if metric.ends_with("_tflops") {
        Some("TFLOP/s")
    } else {
        None
    }
}

const INSERT_RUN: &str =
    "INSERT INTO runs (run_id, started, source, servetest_version, project_commit, \
    engine_version, host, gpu_type, executor, cluster_profile, output_path) \
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) ON CONFLICT DO NOTHING";
const INSERT_RESULT: &str =
    "INSERT INTO results (run_id, test_name, case_hash, job_id, concurrency, \
    state, metric, value, unit, recorded, variant) \
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) ON CONFLICT DO NOTHING";

/// A row's values as the results table holds them: (metric, value) pairs, or one ('', NULL) for a
/// state without metrics.
fn metric_values(r: &Row) -> Vec<(String, Option<f64>)> {
    if r.metrics.is_empty() {
        vec![(String::new(), None)]
    } else {
        // NaN and infinities (a log that printed them) are kept as missing values, never as numbers
        // a series could be judged by.
        r.metrics
            .iter()
            .map(|(k, v)| (k.clone(), Some(*v).filter(|v| v.is_finite())))
            .collect()
    }
}

impl Store {
    /// Opens (creating if needed) the database at `location` and brings its schema up to date. A
    /// database that cannot be opened is an error naming it — before a run submits anything.
    pub fn open(location: &str) -> Result<Store, String> {
        let shown = super::shown(location);
        let fail = |e: &dyn std::fmt::Display| format!("results history {shown}: {e}");
        let backend =
            if location.starts_with("postgres://") || location.starts_with("postgresql://") {
                let mut config: postgres::Config = location.parse().map_err(|e| fail(&e))?;
                config.connect_timeout(Duration::from_secs(10));
                let mut client = config.connect(postgres::NoTls).map_err(|e| fail(&e))?;
                migrate(|| embedded::migrations::runner().run(&mut client).map(|_| ()))
                    .map_err(|e| fail(&e))?;
                Backend::Postgres(Box::new(client))
            } else {
                let path = location.strip_prefix("sqlite:").unwrap_or(location);
                // Not created here: a missing directory is a wrong setting, not something to make.
                let mut conn = rusqlite::Connection::open_with_flags(
                    path,
                    rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE
                        | rusqlite::OpenFlags::SQLITE_OPEN_CREATE
                        | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
                )
                .map_err(|e| fail(&e))?;
                conn.busy_timeout(Duration::from_secs(30))
                    .map_err(|e| fail(&e))?;
                // WAL: readers never block the writer and two runs can append at once; NORMAL sync is
                // durable across a killed process (not across a power cut, like the CSV's fsync is).
                conn.pragma_update(None, "journal_mode", "WAL")
                    .map_err(|e| fail(&e))?;
                conn.pragma_update(None, "synchronous", "NORMAL")
                    .map_err(|e| fail(&e))?;
                conn.pragma_update(None, "foreign_keys", "ON")
                    .map_err(|e| fail(&e))?;
                migrate(|| embedded::migrations::runner().run(&mut conn).map(|_| ()))
                    .map_err(|e| fail(&e))?;
                Backend::Sqlite(conn)
            };
        Ok(Store {
            backend: Mutex::new(backend),
            shown,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Backend> {
        self.backend.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records the run (once; a resumed run keeps its first record).
    pub fn begin_run(&self, m: &RunMeta) -> Result<(), String> {
        let err = |e: &dyn std::fmt::Display| format!("results history {}: {e}", self.shown);
        match &mut *self.lock() {
            Backend::Sqlite(c) => c
                .execute(
                    INSERT_RUN,
                    rusqlite::params![
                        m.run_id,
                        m.started,
                        m.source,
                        m.servetest_version,
                        m.project_commit,
                        m.engine_version,
                        m.host,
                        m.gpu_type,
                        m.executor,
                        m.cluster_profile,
                        m.output_path
                    ],
                )
                .map(|_| ())
                .map_err(|e| err(&e)),
            Backend::Postgres(c) => c
                .execute(
                    INSERT_RUN,
                    &[
                        &m.run_id,
                        &m.started,
                        &m.source,
                        &m.servetest_version,
                        &m.project_commit,
                        &m.engine_version,
                        &m.host,
                        &m.gpu_type,
                        &m.executor,
                        &m.cluster_profile,
                        &m.output_path,
                    ],
                )
                .map(|_| ())
                .map_err(|e| err(&e)),
        }
    }

    /// Records one case's rows in one transaction; `case_hash` names the case file's content.
    pub fn record(&self, run_id: &str, rows: &[Row], case_hash: &str) -> Result<(), String> {
        let err = |e: &dyn std::fmt::Display| format!("results history {}: {e}", self.shown);
        let now = unix_now();
        match &mut *self.lock() {
            Backend::Sqlite(c) => {
                let tx = c
                    .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
                    .map_err(|e| err(&e))?;
                {
                    let mut stmt = tx.prepare_cached(INSERT_RESULT).map_err(|e| err(&e))?;
                    for r in rows {
                        let conc = r.concurrency.map_or(-1, |c| c as i64);
                        for (metric, value) in metric_values(r) {
                            stmt.execute(rusqlite::params![
                                run_id,
                                r.test_name,
                                case_hash,
                                r.job_id,
                                conc,
                                r.state,
                                metric,
                                value,
                                unit_of(&metric),
                                now,
                                r.variant
                            ])
                            .map_err(|e| err(&e))?;
                        }
                    }
                }
                tx.commit().map_err(|e| err(&e))
            }
            Backend::Postgres(c) => {
                let mut tx = c.transaction().map_err(|e| err(&e))?;
                let stmt = tx.prepare(INSERT_RESULT).map_err(|e| err(&e))?;
                for r in rows {
                    let conc = r.concurrency.map_or(-1, |c| c as i64);
                    for (metric, value) in metric_values(r) {
                        let unit = unit_of(&metric);
                        tx.execute(
                            &stmt,
                            &[
                                &run_id,
                                &r.test_name,
                                &case_hash,
                                &r.job_id,
                                &conc,
                                &r.state,
                                &metric,
                                &value,
                                &unit,
                                &now,
                                &r.variant,
                            ],
                        )
                        .map_err(|e| err(&e))?;
                    }
                }
                tx.commit().map_err(|e| err(&e))
            }
        }
    }

    /// Records `rows` of several cases, one transaction per case; `hash_of` names each case's file
    /// content.
    pub fn record_by_case(
        &self,
        run_id: &str,
        rows: &[Row],
        hash_of: impl Fn(&str) -> String,
    ) -> Result<usize, String> {
        let mut by: std::collections::BTreeMap<&str, Vec<Row>> = Default::default();
        for r in rows {
            by.entry(&r.test_name).or_default().push(r.clone());
        }
        for (case, rows) in &by {
            self.record(run_id, rows, &hash_of(case))?;
        }
        Ok(by.len())
    }

    /// Records why a case failed in this run (the newest reason wins: a resumed run's final attempt).
    pub fn record_failure(
        &self,
        run_id: &str,
        test_name: &str,
        reason: &str,
    ) -> Result<(), String> {
        let err = |e: &dyn std::fmt::Display| format!("results history {}: {e}", self.shown);
        let now = unix_now();
        // The trial's message quotes logs: masked like every trial error, whoever records it.
        let reason = crate::secrets::redact(reason);
        let sql = "INSERT INTO failures (run_id, test_name, reason, recorded) VALUES ($1, $2, $3, $4) \
            ON CONFLICT (run_id, test_name) DO UPDATE SET reason = excluded.reason, recorded = excluded.recorded";
        match &mut *self.lock() {
            Backend::Sqlite(c) => c
                .execute(sql, rusqlite::params![run_id, test_name, reason, now])
                .map(|_| ())
                .map_err(|e| err(&e)),
            Backend::Postgres(c) => c
                .execute(sql, &[&run_id, &test_name, &reason, &now])
                .map(|_| ())
                .map_err(|e| err(&e)),
        }
    }

    /// The COMPLETED values of `metric` (every metric when `None`) of `cases` (every case when
    /// empty), oldest run first, at most the `last` runs of each series.
    pub fn series(
        &self,
        cases: &[String],
        metric: Option<&str>,
        last: usize,
    ) -> Result<Vec<Point>, String> {
        let err = |e: &dyn std::fmt::Display| format!("results history {}: {e}", self.shown);
        let sql = "SELECT r.run_id, runs.started, r.test_name, r.case_hash, r.concurrency, r.metric, r.value, \
            COALESCE(runs.executor, ''), COALESCE(runs.gpu_type, ''), r.variant \
            FROM results r JOIN runs ON runs.run_id = r.run_id \
            WHERE r.state = 'COMPLETED' AND r.value IS NOT NULL AND r.metric <> '' \
            ORDER BY r.test_name, r.variant, r.metric, r.concurrency, runs.started, r.recorded";
        let mut points: Vec<Point> = match &mut *self.lock() {
            Backend::Sqlite(c) => {
                let mut stmt = c.prepare(sql).map_err(|e| err(&e))?;
                let rows = stmt
                    .query_map([], |row| {
                        Ok(Point {
                            run_id: row.get(0)?,
                            started: row.get(1)?,
                            test_name: row.get(2)?,
                            case_hash: row.get(3)?,
                            concurrency: row.get(4)?,
                            metric: row.get(5)?,
                            value: row.get(6)?,
                            executor: row.get(7)?,
                            gpu_type: row.get(8)?,
                            variant: row.get(9)?,
                        })
                    })
                    .map_err(|e| err(&e))?;
                rows.collect::<Result<_, _>>().map_err(|e| err(&e))?
            }
            Backend::Postgres(c) => c
                .query(sql, &[])
                .map_err(|e| err(&e))?
                .into_iter()
                .map(|row| Point {
                    run_id: row.get(0),
                    started: row.get(1),
                    test_name: row.get(2),
                    case_hash: row.get(3),
                    concurrency: row.get(4),
                    metric: row.get(5),
                    value: row.get(6),
                    executor: row.get(7),
                    gpu_type: row.get(8),
                    variant: row.get(9),
                })
                .collect(),
        };
        points.retain(|p| {
            p.value.is_finite()
                && (cases.is_empty() || cases.iter().any(|c| c == &p.test_name))
                && metric.is_none_or(|m| m == p.metric)
        });
        // At most `last` runs per series (case, variant, metric, concurrency, executor, GPU), newest
        // kept.
        type Key = (String, String, String, i64, String, String);
        let mut by: HashMap<Key, Vec<Point>> = HashMap::new();
        for p in points {
            by.entry((
                p.test_name.clone(),
                p.variant.clone(),
                p.metric.clone(),
                p.concurrency,
                p.executor.clone(),
                p.gpu_type.clone(),
            ))
            .or_default()
            .push(p);
        }
        let mut out: Vec<Point> = by
            .into_values()
            .flat_map(|mut v| {
                let skip = v.len().saturating_sub(last);
                v.drain(..skip);
                v
            })
            .collect();
        out.sort_by(|a, b| {
            (&a.test_name, &a.variant, &a.metric, a.concurrency)
                .cmp(&(&b.test_name, &b.variant, &b.metric, b.concurrency))
                .then(a.started.total_cmp(&b.started))
        });
        Ok(out)
    }

    /// How many runs and result rows the database holds.
    pub fn counts(&self) -> Result<(i64, i64), String> {
        let err = |e: &dyn std::fmt::Display| format!("results history {}: {e}", self.shown);
        let sql = "SELECT (SELECT COUNT(*) FROM runs), (SELECT COUNT(*) FROM results)";
        match &mut *self.lock() {
            Backend::Sqlite(c) => c
                .query_row(sql, [], |r| Ok((r.get(0)?, r.get(1)?)))
                .map_err(|e| err(&e)),
            Backend::Postgres(c) => c
                .query_one(sql, &[])
                .map(|r| (r.get(0), r.get(1)))
                .map_err(|e| err(&e)),
        }
    }
}

/// Runs the migrations, once more if the first try lost a race with another process creating the
/// same fresh database (the second try finds them applied).
fn migrate<E: std::fmt::Display>(mut run: impl FnMut() -> Result<(), E>) -> Result<(), E> {
    match run() {
        Ok(()) => Ok(()),
        Err(_) => {
            std::thread::sleep(Duration::from_millis(200));
            run()
        }
    }
}

/// SHA-256 of a case file's bytes (hex): a series restarts when its case changes.
pub fn case_hash(path: &std::path::Path) -> String {
    use sha2::Digest;
    match std::fs::read(path) {
        Ok(bytes) => format!("{:x}", sha2::Sha256::digest(&bytes)),
        Err(_) => "unknown".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::results::Row;

    fn run(id: &str) -> RunMeta {
        RunMeta {
            run_id: id.into(),
            started: 1.0,
            source: "test".into(),
            servetest_version: "0".into(),
            project_commit: None,
            engine_version: None,
            host: "h".into(),
            gpu_type: Some("CPU".into()),
            executor: Some("local".into()),
            cluster_profile: None,
            output_path: None,
        }
    }

    fn row(variant: &str, ttft: f64) -> Row {
        Row {
            test_name: "latency_perf_grid".into(),
            family: "latency".into(),
            category: "perf".into(),
            model: "tiny".into(),
            variant: variant.into(),
            gpu_type: "CPU".into(),
            executor: "local".into(),
            job_id: "1".into(),
            concurrency: Some(4),
            state: "COMPLETED".into(),
            start: None,
            end: None,
            metrics: [("mean_ttft_ms".to_owned(), ttft)].into(),
        }
    }

    #[test]
    fn rows_of_one_case_and_concurrency_are_kept_apart_by_their_variant() {
        // A latency grid has several sequence lengths per batch size: before the variant joined
        // the key, the second row of a run was dropped.
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("h.db").display().to_string()).unwrap();
        store.begin_run(&run("r1")).unwrap();
        store
            .record("r1", &[row("seq=32", 1.5), row("seq=64", 2.5)], "hash")
            .unwrap();
        let points = store.series(&[], Some("mean_ttft_ms"), 10).unwrap();
        let got: Vec<(&str, f64)> = points
            .iter()
            .map(|p| (p.variant.as_str(), p.value))
            .collect();
        assert_eq!(got, [("seq=32", 1.5), ("seq=64", 2.5)]);
    }

    #[test]
    fn a_database_of_the_previous_version_keeps_its_results_when_migrated() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("old.db");
        {
            let mut conn = rusqlite::Connection::open(&path).unwrap();
            embedded::migrations::runner()
                .set_target(refinery::Target::Version(2))
                .run(&mut conn)
                .unwrap();
            conn.execute(
                INSERT_RUN,
                rusqlite::params![
                    "r0",
                    1.0,
                    "test",
                    "0",
                    None::<String>,
                    None::<String>,
                    "h",
                    "CPU",
                    "local",
                    None::<String>,
                    None::<String>
                ],
            )
            .unwrap();
            conn.execute(
                "INSERT INTO results (run_id, test_name, case_hash, job_id, concurrency, state, \
                 metric, value, unit, recorded) VALUES ('r0', 'c', 'hash', '1', 4, 'COMPLETED', \
                 'mean_ttft_ms', 3.0, 'ms', 1.0)",
                [],
            )
            .unwrap();
        }
        let store = Store::open(&path.display().to_string()).unwrap();
        let points = store.series(&[], None, 10).unwrap();
        assert_eq!(points.len(), 1);
        assert_eq!((points[0].variant.as_str(), points[0].value), ("", 3.0));
        // And the migrated table takes variants.
        store.begin_run(&run("r1")).unwrap();
        store
            .record("r1", &[row("a", 1.0), row("b", 2.0)], "hash")
            .unwrap();
        assert_eq!(store.series(&[], None, 10).unwrap().len(), 3);
    }
}
