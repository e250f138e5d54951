-- Why a case failed (the trial's message, secrets masked): the final attempt's reason per run.
CREATE TABLE failures (
    run_id TEXT NOT NULL REFERENCES runs (run_id),
    test_name TEXT NOT NULL,
    reason TEXT NOT NULL,
    recorded DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (run_id, test_name)
);
