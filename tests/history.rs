//! The results history on real databases: an SQLite file and the PostgreSQL server of scripts/pg-up
//! (`eval "$(scripts/pg-up)"` first: the PostgreSQL test fails without SERVETEST_PG_URL, so a CI run
//! cannot skip it). Two executing runs are recorded and shown by `servetest report history`; two runs
//! write at once; a run killed with SIGKILL mid-write leaves a valid database that `--resume`
//! completes without duplicates; a database that cannot be opened stops the run before any job.
//! Run by scripts/test with `--features perf`.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod common;
use common::{harness_command, root, text};

/// A harness run of the two passing metric cases on the local executor, recorded in `db`.
fn recorded_run(db: &str, out: &Path) -> Command {
    let mut cmd = harness_command("local", &root().join("tests/exec_configs/metrics"), out);
    cmd.args(["--filter", "bench-sweep", "--filter", "custom-pattern"])
        .env("SERVETEST_DB", db);
    cmd
}

fn history(db: &str, extra: &[&str]) -> std::process::Output {
    let page = tempfile::NamedTempFile::new().unwrap();
    Command::new(env!("CARGO_BIN_EXE_servetest"))
        .args(["report", "history", "--db", db, "--out"])
        .arg(page.path())
        .args(extra)
        .output()
        .unwrap()
}

fn two_runs_are_recorded_and_shown(db: &str) {
    let mut last_out = tempfile::tempdir().unwrap();
    for _ in 0..2 {
        let out = tempfile::tempdir().unwrap();
        let o = recorded_run(db, out.path()).output().unwrap();
        let t = text(&o);
        assert!(o.status.success(), "{t}");
        assert!(t.contains("Results history: "), "{t}");
        last_out = out;
    }
    // The run's report links the history page written beside it.
    let report = std::fs::read_to_string(last_out.path().join("report.html")).unwrap();
    assert!(
        report.contains(r#"<a href="history.html">"#),
        "no link in report.html"
    );
    let page = std::fs::read_to_string(last_out.path().join("history.html")).unwrap();
    assert!(page.contains(r#"data-runs="2""#), "{page}");
    let o = history(
        db,
        &["script_perf_bench-sweep", "--metric", "median_ttft_ms"],
    );
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    // One line per concurrency of the sweep, each over both runs.
    let lines: Vec<&str> = t
        .lines()
        .filter(|l| l.starts_with("| script_perf_bench-sweep | median_ttft_ms |"))
        .collect();
    assert!(!lines.is_empty(), "{t}");
    for l in &lines {
        let runs: usize = l.split('|').nth(4).unwrap().trim().parse().unwrap();
        assert_eq!(runs, 2, "{l}");
    }
}

#[test]
fn sqlite_two_executing_runs_are_recorded_and_shown() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("history.db");
    two_runs_are_recorded_and_shown(db.to_str().unwrap());
    let conn = rusqlite::Connection::open(&db).unwrap();
    let runs: i64 = conn
        .query_row(
            "SELECT COUNT(*) FROM runs WHERE source = 'harness'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(runs, 2);
    // A failing case's reason is kept with its run.
    let out = tempfile::tempdir().unwrap();
    let o = harness_command(
        "local",
        &root().join("tests/exec_configs/metrics"),
        out.path(),
    )
    .args(["--exact", "script_perf_no-metrics-printed"])
    .env("SERVETEST_DB", &db)
    .output()
    .unwrap();
    assert!(!o.status.success());
    let reason: String = conn
        .query_row(
            "SELECT reason FROM failures WHERE test_name = 'script_perf_no-metrics-printed'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert!(reason.contains("found no metric"), "{reason}");
}

#[test]
fn postgres_two_executing_runs_are_recorded_and_shown() {
    let url = std::env::var("SERVETEST_PG_URL")
        .expect("SERVETEST_PG_URL is not set: run `eval \"$(scripts/pg-up)\"` first");
    // A database of its own, so earlier runs of this test do not count.
    let name = format!("servetest_test_{}", std::process::id());
    let mut admin = postgres::Client::connect(&url, postgres::NoTls).unwrap();
    admin
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .unwrap();
    let (base, _) = url.rsplit_once('/').unwrap();
    let db = format!("{base}/{name}");
    two_runs_are_recorded_and_shown(&db);
    let mut client = postgres::Client::connect(&db, postgres::NoTls).unwrap();
    let runs: i64 = client
        .query_one("SELECT COUNT(*) FROM runs", &[])
        .unwrap()
        .get(0);
    assert_eq!(runs, 2);
}

/// A fresh PostgreSQL database on scripts/pg-up's server, dropped with the guard.
struct PgDb {
    admin_url: String,
    name: String,
    url: String,
}

impl PgDb {
    fn new(tag: &str) -> PgDb {
        let admin_url = std::env::var("SERVETEST_PG_URL")
            .expect("SERVETEST_PG_URL is not set: run `eval \"$(scripts/pg-up)\"` first");
        let name = format!("servetest_{tag}_{}", std::process::id());
        let mut admin = postgres::Client::connect(&admin_url, postgres::NoTls).unwrap();
        admin
            .batch_execute(&format!("DROP DATABASE IF EXISTS {name}"))
            .unwrap();
        admin
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .unwrap();
        let (base, _) = admin_url.rsplit_once('/').unwrap();
        let url = format!("{base}/{name}");
        PgDb {
            admin_url,
            name,
            url,
        }
    }
}

impl Drop for PgDb {
    fn drop(&mut self) {
        if let Ok(mut admin) = postgres::Client::connect(&self.admin_url, postgres::NoTls) {
            let _ = admin.batch_execute(&format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            ));
        }
    }
}

#[test]
fn two_runs_write_one_postgres_database_at_once() {
    let pg = PgDb::new("concurrent");
    concurrent_runs(&pg.url);
    let mut c = postgres::Client::connect(&pg.url, postgres::NoTls).unwrap();
    let row = c
        .query_one(
            "SELECT COUNT(DISTINCT run_id), COUNT(DISTINCT run_id || test_name) FROM results",
            &[],
        )
        .unwrap();
    assert_eq!((row.get::<_, i64>(0), row.get::<_, i64>(1)), (2, 4));
}

#[test]
fn an_unreachable_postgres_stops_the_run_before_any_job() {
    let out = tempfile::tempdir().unwrap();
    // A closed loopback port: the connection is refused at once.
    let o = recorded_run("postgres://servetest:pw@127.0.0.1:9/none", out.path())
        .output()
        .unwrap();
    let t = text(&o);
    assert!(!o.status.success(), "{t}");
    assert!(
        t.contains("results history postgres://servetest:<redacted>@127.0.0.1:9/none: "),
        "{t}"
    );
    assert!(!t.contains("pw@"), "the password is not shown: {t}");
    assert!(
        !out.path().join("script_perf_bench-sweep").exists(),
        "nothing was submitted"
    );
}

/// Two recorded runs started together into `db`.
fn concurrent_runs(db: &str) {
    let outs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let children: Vec<_> = outs
        .iter()
        .map(|o| {
            recorded_run(db, o.path())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for c in children {
        let o = c.wait_with_output().unwrap();
        assert!(o.status.success(), "{}", text(&o));
    }
}

#[test]
fn two_runs_write_one_sqlite_database_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("shared.db");
    let db = db.to_str().unwrap();
    concurrent_runs(db);
    let conn = rusqlite::Connection::open(db).unwrap();
    let (runs, cases): (i64, i64) = conn
        .query_row(
            "SELECT COUNT(DISTINCT run_id), COUNT(DISTINCT run_id || test_name) FROM results",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!((runs, cases), (2, 4), "both runs, both cases each");
}

/// `n` trivial script cases (one `true` step each).
fn many_cases(dir: &Path, n: usize) {
    let tree = dir.join("script/perf");
    std::fs::create_dir_all(&tree).unwrap();
    for i in 0..n {
        std::fs::write(
            tree.join(format!("c{i:04}.yaml")),
            "slurm: {job_time: \"00:05:00\"}\nsteps: [{name: run, argv: [\"true\"]}]\n",
        )
        .unwrap();
    }
}

#[test]
fn a_run_killed_mid_write_leaves_a_valid_database_and_resume_completes_it_once() {
    const N: usize = 300;
    let dir = tempfile::tempdir().unwrap();
    many_cases(&dir.path().join("cases"), N);
    let db = dir.path().join("history.db");
    let out = dir.path().join("out");
    let run = |resume: bool| {
        let mut cmd = harness_command("local", &dir.path().join("cases"), &out);
        cmd.args(["--disagg-batch-size", "0", "--format", "terse"])
            .env("SERVETEST_DB", &db)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if resume {
            cmd.arg("--resume");
        }
        cmd
    };
    let mut child = run(false).spawn().unwrap();
    // Kill it once some results are in the database and before all are.
    let deadline = Instant::now() + Duration::from_secs(120);
    let recorded = || -> i64 {
        rusqlite::Connection::open(&db)
            .and_then(|c| c.query_row("SELECT COUNT(*) FROM results", [], |r| r.get(0)))
            .unwrap_or(0)
    };
    while recorded() < 20 {
        assert!(Instant::now() < deadline, "nothing recorded");
        assert!(
            child.try_wait().unwrap().is_none(),
            "the run ended before it was killed"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let conn = rusqlite::Connection::open(&db).unwrap();
    let check: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(check, "ok");
    let before = recorded();
    assert!(
        before < N as i64,
        "killed too late: {before} of {N} recorded"
    );
    let o = run(true)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    // One run (the resumed run continues the killed one), each case once, COMPLETED.
    let (runs, rows, cases, completed): (i64, i64, i64, i64) = conn
        .query_row(
            "SELECT COUNT(DISTINCT run_id), COUNT(*), COUNT(DISTINCT test_name), \
             SUM(CASE WHEN state = 'COMPLETED' THEN 1 ELSE 0 END) FROM results",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )
        .unwrap();
    assert_eq!(
        (runs, cases, completed),
        (1, N as i64, N as i64),
        "{rows} rows"
    );
    assert_eq!(rows, N as i64, "no case recorded twice");
}

#[test]
fn a_database_that_cannot_be_opened_stops_the_run_before_any_job() {
    let out = tempfile::tempdir().unwrap();
    let o = recorded_run("/nonexistent-dir/history.db", out.path())
        .output()
        .unwrap();
    let t = text(&o);
    assert!(!o.status.success(), "{t}");
    assert!(
        t.contains("results history /nonexistent-dir/history.db: "),
        "the error names the database: {t}"
    );
    assert!(
        !out.path().join("script_perf_bench-sweep").exists(),
        "nothing was submitted"
    );
    // --no-history runs without recording and says so.
    let o = recorded_run("/nonexistent-dir/history.db", out.path())
        .arg("--no-history")
        .output()
        .unwrap();
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    assert!(t.contains("Results history: off"), "{t}");
}
