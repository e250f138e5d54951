-- A row's variant joins the key of a result: what tells rows of one case at one concurrency apart
-- (a latency grid's sequence length, an aggregated sweep point or model, a perf-sanity server-client
-- pair). Before it, the second such row of a run was dropped by ON CONFLICT DO NOTHING.
CREATE TABLE results_v3 (
    run_id TEXT NOT NULL REFERENCES runs (run_id),
    test_name TEXT NOT NULL,
    variant TEXT NOT NULL DEFAULT '',
    case_hash TEXT NOT NULL,
    job_id TEXT NOT NULL,
    concurrency BIGINT NOT NULL,
    state TEXT NOT NULL,
    metric TEXT NOT NULL,
    value DOUBLE PRECISION,
    unit TEXT,
    recorded DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (run_id, test_name, variant, job_id, concurrency, metric)
);

INSERT INTO results_v3 (run_id, test_name, variant, case_hash, job_id, concurrency, state, metric,
                        value, unit, recorded)
    SELECT run_id, test_name, '', case_hash, job_id, concurrency, state, metric, value, unit, recorded
    FROM results;

DROP TABLE results;

ALTER TABLE results_v3 RENAME TO results;

CREATE INDEX results_series ON results (test_name, variant, metric, concurrency, case_hash);
