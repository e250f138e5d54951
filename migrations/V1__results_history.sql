-- servetest's results history (src/history). One schema for SQLite and PostgreSQL: only types and
-- statements both accept (TEXT, BIGINT, DOUBLE PRECISION; ON CONFLICT DO NOTHING).
CREATE TABLE runs (
    run_id TEXT PRIMARY KEY,
    started DOUBLE PRECISION NOT NULL,       -- unix seconds
    source TEXT NOT NULL,                    -- harness | bench | import
    servetest_version TEXT NOT NULL,
    project_commit TEXT,
    engine_version TEXT,
    host TEXT NOT NULL,
    gpu_type TEXT,
    executor TEXT,
    cluster_profile TEXT,
    output_path TEXT
);

-- One row per case x concurrency x metric of a run; a state without metrics is metric ''.
CREATE TABLE results (
    run_id TEXT NOT NULL REFERENCES runs (run_id),
    test_name TEXT NOT NULL,
    case_hash TEXT NOT NULL,                 -- SHA-256 of the case file: a changed case is a new series
    job_id TEXT NOT NULL,
    concurrency BIGINT NOT NULL,             -- -1: none
    state TEXT NOT NULL,
    metric TEXT NOT NULL,
    value DOUBLE PRECISION,
    unit TEXT,
    recorded DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (run_id, test_name, job_id, concurrency, metric)
);

CREATE INDEX results_series ON results (test_name, metric, concurrency, case_hash);
