//! Executing selected cases: one `RunContext` per harness run owns the executor, the lazy batches,
//! the run log and the per-case outputs; each trial calls `run_trial` for its case.

use std::collections::HashMap;
use std::fs::File;
use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;

use crate::case::Case;
use crate::check::logparse::Block;
use crate::exec::job::{JobRecord, JobState};
use crate::exec::process::log_tail;
use crate::exec::Executor;
use crate::plan::batch::{BatchManager, Submitted};
use crate::plan::profile::ClusterProfile;
use crate::plan::render::{self, JobPlan, RenderInput};
use crate::report::baseline::{self, Policy};
use crate::report::results::{ResultsWriter, Row};

/// Log lines shown in a failed trial, per file.
pub const TAIL: usize = 20;

pub struct RunOptions {
    pub batch_size: usize,
    pub profile: Option<ClusterProfile>,
    pub executor: Arc<dyn Executor>,
    pub wait_timeout: Duration,
    pub debug_job: Option<String>,
    pub out_root: PathBuf,
    pub work_dir: Option<PathBuf>,
    /// Interval of heartbeat lines for live jobs (`SERVETEST_HEARTBEAT`); `None`: none.
    pub heartbeat: Option<Duration>,
    /// The servetest binary that role steps call.
    pub servetest: PathBuf,
    /// Rows of an earlier run and the policy to gate this run's metrics against them.
    pub baseline: Option<Baseline>,
    /// Continue the run in `out_root`: cases whose results are complete there are not run again.
    pub resume: bool,
    /// The results history database (`SERVETEST_DB`); `None`: this run is not recorded.
    pub history: Option<String>,
}

/// Where this run is recorded in the results history, and the content hash of each case file.
struct History {
    store: crate::history::Store,
    run_id: String,
    hashes: HashMap<String, String>,
}

/// The history id of the run in an output directory (kept there, so `--resume` continues the same
/// run in the database).
const HISTORY_RUN_ID: &str = "history_run_id";

pub struct Baseline {
    pub path: PathBuf,
    pub rows: Vec<Row>,
    pub policy: Policy,
}

pub struct RunContext {
    opts: RunOptions,
    batches: BatchManager,
    run_id: String,
    progress: Progress,
    plans: Mutex<HashMap<String, JobPlan>>,
    cases: HashMap<String, Arc<Case>>,
    results: ResultsWriter,
    /// `--resume`: cases already complete on disk, with their job id.
    resumed: HashMap<String, String>,
    history: Option<History>,
}

/// Progress lines: to stderr and to `$OUTPUT_PATH/disagg_benchmark_{timestamp}.log`.
pub struct Progress {
    log: Mutex<Option<File>>,
    pub path: PathBuf,
}

impl Progress {
    pub fn line(&self, text: &str) {
        let text = crate::secrets::redact(text);
        eprintln!("{text}");
        if let Some(f) = self.log.lock().unwrap_or_else(|p| p.into_inner()).as_mut() {
            let _ = writeln!(f, "{text}");
        }
    }
}

/// Whether servetest can execute cases of this family yet.
pub fn executable(case: &Case) -> Result<(), String> {
    if case.spec.is_none() {
        return Err(format!("{}: the case did not load", case.name));
    }
    match case.family.in_process {
        Some(_) => Err(format!(
            "{}: {} cases run in the harness (in-process engine), not as jobs",
            case.name, case.family.name
        )),
        None => Ok(()),
    }
}

/// What a user should know about a terminal state beyond its name.
fn state_hint(state: &JobState) -> &'static str {
    match state {
        JobState::NodeFail => {
            "; the node stopped answering the SLURM controller (slurmd down, node crashed or \
             rebooted; `sinfo -R` says why). Jobs are submitted with --no-requeue, so SLURM does not \
             rerun it behind this run; `--resume` runs the unfinished cases again"
        }
        JobState::Preempted => "; a higher-priority job preempted it",
        JobState::OutOfMemory => "; a step exceeded its memory limit",
        _ => "",
    }
}

/// How a job ended, for a failed trial's message: state, nodes (and which failed), exit code, and
/// what the state means.
fn ending(record: &JobRecord) -> String {
    let on = record
        .nodes
        .as_deref()
        .map(|n| format!(" on {n}"))
        .unwrap_or_default();
    let failed = record
        .failed_nodes
        .as_deref()
        .map(|n| format!(" (failed node: {n})"))
        .unwrap_or_default();
    format!(
        "{}{on}{failed} (exit code {}){}",
        record.state,
        record.exit_code.as_deref().unwrap_or("unknown"),
        state_hint(&record.state)
    )
}

fn unix(t: Option<SystemTime>) -> Option<f64> {
    t.and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map(|d| d.as_secs_f64())
}

#[derive(Serialize)]
struct Tracker<'a> {
    schema_version: u32,
    case: &'a str,
    executor: &'a str,
    job_id: &'a str,
    state: String,
    exit_code: Option<&'a str>,
    submitted: Option<f64>,
    started: Option<f64>,
    finished: Option<f64>,
    queue_s: Option<f64>,
    run_s: Option<f64>,
}

impl RunContext {
    /// `order`: the selected cases in trial order (only executable ones are batched).
    pub fn new(order: &[Arc<Case>], opts: RunOptions) -> Result<RunContext, String> {
        std::fs::create_dir_all(&opts.out_root)
            .map_err(|e| format!("failed to create {}: {e}", opts.out_root.display()))?;
        let secs = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let run_id = format!("{secs}-{}", std::process::id());
        crate::secrets::mask_process_environment();
        for case in order {
            crate::secrets::mask_case(case);
        }
        let path = opts.out_root.join(format!("disagg_benchmark_{secs}.log"));
        let log = File::options().create(true).append(true).open(&path).ok();
        let progress = Progress {
            log: Mutex::new(log),
            path,
        };
        let results = if opts.resume {
            ResultsWriter::resume(&opts.out_root)?
        } else {
            ResultsWriter::new(&opts.out_root)
        }
        .with_case_meta(crate::report::upstream::case_meta(
            order.iter().map(|c| &**c),
        ));
        // Complete = its tracker says COMPLETED and the results hold a row of that job.
        let resumed: HashMap<String, String> = if opts.resume {
            order
                .iter()
                .filter_map(|c| {
                    let path = opts.out_root.join(&c.name).join("tracker.json");
                    let t: serde_json::Value =
                        serde_json::from_slice(&std::fs::read(path).ok()?).ok()?;
                    let job = t["job_id"].as_str()?.to_owned();
                    (t["state"] == "COMPLETED" && results.has_completed(&c.name, &job))
                        .then(|| (c.name.clone(), job))
                })
                .collect()
        } else {
            HashMap::new()
        };
        let history = match &opts.history {
            Some(location) => Some(Self::open_history(location, order, &opts, &run_id)?),
            None => None,
        };
        let names: Vec<String> = order
            .iter()
            .filter(|c| executable(c).is_ok() && !resumed.contains_key(&c.name))
            .map(|c| c.name.clone())
            .collect();
        let batches = BatchManager::new(names, opts.batch_size);
        let bar = "=".repeat(70);
        progress.line(&format!(
            "{bar}\nBatch Manager Initialized\nBatch size: {}\n{bar}\n\nTotal test configs: {}{}\nTotal batches: {}\nExecutor: {}{}",
            if batches.size() == 0 { "all jobs in one batch".to_owned() } else { format!("{} jobs per batch", batches.size()) },
            batches.case_count(),
            if resumed.is_empty() { String::new() } else { format!(" to run (+{} complete in the earlier run, not run again)", resumed.len()) },
            batches.batch_count(),
            opts.executor.name(),
            opts.debug_job.as_ref().map(|j| format!(" (DEBUG_MODE: evaluating job {j}, submitting nothing)")).unwrap_or_default(),
        ));
        if opts.resume {
            progress.line(&format!(
                "Resuming {}: {} case(s) already complete, {} to run",
                opts.out_root.display(),
                resumed.len(),
                batches.case_count()
            ));
        }
        match &history {
            Some(h) => progress.line(&format!(
                "Results history: {} (run {})",
                h.store.shown, h.run_id
            )),
            None => progress.line("Results history: off (SERVETEST_DB=off or --no-history)"),
        }
        Ok(RunContext {
            history,
            results,
            resumed,
            batches,
            run_id,
            progress,
            plans: Mutex::new(HashMap::new()),
            cases: order.iter().map(|c| (c.name.clone(), c.clone())).collect(),
            opts,
        })
    }

    pub fn executor(&self) -> &Arc<dyn Executor> {
        &self.opts.executor
    }

    pub fn progress(&self) -> &Progress {
        &self.progress
    }

    fn plan_for(&self, case: &Case) -> Result<JobPlan, String> {
        let plan = render::plan(&RenderInput {
            case,
            out_root: &self.opts.out_root,
            work_dir: self.opts.work_dir.as_deref(),
            profile: self.opts.profile.as_ref(),
            run_id: &self.run_id,
            servetest: &self.opts.servetest,
        })
        .map_err(|e| e.to_string())?;
        plan.write().map_err(|e| e.to_string())?;
        for o in &plan.overrides {
            self.progress
                .line(&format!("  {}: override {o}", case.name));
        }
        Ok(plan)
    }

    fn submit_batch(&self, index: usize, names: &[String]) -> Submitted {
        let bar = "=".repeat(70);
        let start = index * self.batches.size().max(1);
        self.progress.line(&format!(
            "\n{bar}\nSubmitting Batch {index}\nRange: [{start}:{}] ({} jobs)\n{bar}\n",
            start + names.len(),
            names.len()
        ));
        let mut out = Submitted::new();
        for (i, name) in names.iter().enumerate() {
            let result = self
                .cases
                .get(name)
                .ok_or_else(|| format!("{name}: unknown case"))
                .and_then(|case| self.plan_for(case))
                .and_then(|plan| {
                    let id = self
                        .opts
                        .executor
                        .submit(&plan)
                        .map_err(|e| e.to_string())?;
                    self.plans.lock().unwrap().insert(name.clone(), plan);
                    Ok(id)
                });
            match &result {
                Ok(id) => self.progress.line(&format!(
                    "  [{:>3}/{}] Job {id} <- {name}",
                    i + 1,
                    names.len()
                )),
                Err(e) => self.progress.line(&format!(
                    "  [{:>3}/{}] FAILED <- {name}: {e}",
                    i + 1,
                    names.len()
                )),
            }
            out.insert(name.clone(), result);
        }
        out
    }

    /// Runs (or, in debug mode, evaluates) one case's job and judges it.
    pub fn run_trial(&self, case: &Case) -> Result<(), String> {
        executable(case)?;
        if let Some(job) = self.resumed.get(&case.name) {
            self.progress.line(&format!(
                "  {}: complete from job {job} (resumed; not run again)",
                case.name
            ));
            return Ok(());
        }
        let id = match &self.opts.debug_job {
            Some(id) => {
                self.opts
                    .executor
                    .adopt(id, &case.name)
                    .map_err(|e| e.to_string())?;
                id.clone()
            }
            None => self
                .batches
                .job_for(&case.name, |b, names| self.submit_batch(b, names))?,
        };
        // A panicking trial must not leave its job running.
        struct CancelOnUnwind<'a>(&'a dyn Executor, &'a str);
        impl Drop for CancelOnUnwind<'_> {
            fn drop(&mut self) {
                if std::thread::panicking() {
                    self.0.cancel(&[self.1.to_owned()]);
                }
            }
        }
        let _guard = CancelOnUnwind(self.opts.executor.as_ref(), &id);
        let beat = self.opts.heartbeat;
        let (record, finished) = self.opts.executor.table().wait_terminal_beating(
            &id,
            self.opts.wait_timeout,
            beat,
            |r| {
                if !r.state.is_terminal() {
                    self.progress
                        .line(&format!("  {}: job {} {}", case.name, r.id, r.state));
                }
            },
            |r| self.progress.line(&self.heartbeat(case, r)),
        );
        // The job has read its environment file and removed it, or it never started (or was given
        // up on): either way the file has served.
        if let Some(plan) = self.plans.lock().unwrap().get(&case.name) {
            plan.remove_private_env();
        }
        if !finished {
            self.opts.executor.cancel(std::slice::from_ref(&id));
            let record = self.opts.executor.table().get(&id).unwrap_or(record);
            self.track(case, &record);
            let _ = self.record_rows(case, &record, Vec::new());
            return Err(format!(
                "{}: gave up waiting for job {id} after {:?} (state {}); the job was cancelled{}",
                case.name,
                self.opts.wait_timeout,
                record.state,
                self.tails(case, &id)
            ));
        }
        self.track(case, &record);
        self.progress.line(&format!(
            "  {}: job {} {} (exit {})",
            case.name,
            id,
            record.state,
            record.exit_code.as_deref().unwrap_or("?")
        ));
        let spec = case.spec.as_deref().ok_or("the case did not load")?;
        let verdict = match (
            record.state == JobState::Completed,
            spec.reported_failure(self, case, &id),
        ) {
            (true, None) => spec.results(self, case, &id),
            (_, Some(failure)) => Err(format!(
                "{}: job {id} ended {}; {failure}{}",
                case.name,
                ending(&record),
                self.tails(case, &id)
            )),
            (false, None) => Err(format!(
                "{}: job {id} ended {}{}",
                case.name,
                ending(&record),
                self.tails(case, &id)
            )),
        };
        // Every executed trial leaves rows in the results, passed or not.
        let blocks = verdict.clone().unwrap_or_default();
        let rows = self.record_rows(case, &record, blocks)?;
        verdict?;
        self.gate(case, &rows)
    }

    /// The regression gate: this case's metrics against the baseline run's, per concurrency.
    fn gate(&self, case: &Case, rows: &[Row]) -> Result<(), String> {
        let Some(b) = &self.opts.baseline else {
            return Ok(());
        };
        let comparisons = baseline::compare(&b.rows, rows, &b.policy);
        if comparisons.is_empty() {
            // Rows of this case whose variants the baseline lacks (a baseline written before rows
            // had variants, or of another grid) are named, not passed over in silence.
            let unmatched = baseline::variants_without_baseline(&b.rows, rows);
            let why = if unmatched.is_empty() {
                String::new()
            } else {
                format!(
                    " (its rows of this case have other variants than this run's {}: a baseline \
                     from before row variants, or another grid)",
                    unmatched.join(", ")
                )
            };
            self.progress.line(&format!(
                "  {}: no baseline values in {} to compare with{why}",
                case.name,
                b.path.display()
            ));
            return Ok(());
        }
        let table = baseline::table(&comparisons);
        let regressed = comparisons.iter().filter(|c| c.regressed).count();
        if regressed == 0 {
            self.progress
                .line(&format!("  {}: within the baseline\n{table}", case.name));
            Ok(())
        } else {
            Err(format!(
                "{}: {regressed} metric(s) regressed beyond tolerance against {}:\n{table}",
                case.name,
                b.path.display()
            ))
        }
    }

    /// Progress lines for the metric blocks a job produced.
    pub fn note_blocks(&self, case: &Case, blocks: &[Block]) {
        for b in blocks {
            self.progress.line(&format!(
                "  {}: concurrency {}: {} metric(s)",
                case.name,
                b.concurrency.map_or("-".to_owned(), |c| c.to_string()),
                b.metrics.len()
            ));
        }
    }

    /// A step's log: where the case's plan put it, else `<case dir>/<step>.log`.
    pub fn step_log(&self, case: &Case, step: &str) -> PathBuf {
        self.plans
            .lock()
            .unwrap()
            .get(&case.name)
            .and_then(|p| {
                p.steps
                    .iter()
                    .find(|s| s.name == step)
                    .map(|s| s.log.clone())
            })
            .unwrap_or_else(|| self.case_dir(case).join(format!("{step}.log")))
    }

    /// Records a failed trial's reason in the results history (the store masks it).
    pub fn record_failure(&self, case: &Case, reason: &str) {
        if let Some(h) = &self.history {
            if let Err(e) = h.store.record_failure(&h.run_id, &case.name, reason) {
                self.progress.line(&format!("  {}: {e}", case.name));
            }
        }
    }

    /// The history page of this run's cases, written next to its report (`history.html`), which
    /// links to it. Nothing when the history is off or holds no completed value of these cases yet.
    pub fn write_history_page(&self) -> Option<PathBuf> {
        let h = self.history.as_ref()?;
        let names: Vec<String> = self.cases.keys().cloned().collect();
        let points = h.store.series(&names, None, 40).ok()?;
        if points.is_empty() {
            return None;
        }
        let settings = crate::history::changepoint::Settings::default();
        let all = crate::history::report::series(&points, settings);
        let page = crate::history::report::html(&all, &h.store.shown, None, 0.0).ok()?;
        let path = self.opts.out_root.join(crate::history::report::PAGE_NAME);
        crate::fsutil::write_atomic(&path, page.as_bytes()).ok()?;
        Some(path)
    }

    /// Opens the history before anything is submitted (an unopenable database fails the run here),
    /// records this run, and on `--resume` records the earlier attempt's rows again (a run killed
    /// between its CSV append and its database write left them out; keyed rows are never doubled).
    fn open_history(
        location: &str,
        order: &[Arc<Case>],
        opts: &RunOptions,
        fresh_id: &str,
    ) -> Result<History, String> {
        let store = crate::history::Store::open(location)?;
        let id_path = opts.out_root.join(HISTORY_RUN_ID);
        let earlier = opts
            .resume
            .then(|| std::fs::read_to_string(&id_path).ok())
            .flatten()
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty());
        let run_id = earlier.unwrap_or_else(|| fresh_id.to_owned());
        crate::fsutil::write_atomic(&id_path, run_id.as_bytes())
            .map_err(|e| format!("failed to write {}: {e}", id_path.display()))?;
        let mut meta = crate::history::RunMeta::here(&run_id, "harness");
        meta.executor = Some(opts.executor.name().to_owned());
        meta.cluster_profile = opts.profile.as_ref().map(|p| p.name.clone());
        meta.output_path = Some(opts.out_root.display().to_string());
        store.begin_run(&meta)?;
        let hashes: HashMap<String, String> = order
            .iter()
            .map(|c| (c.name.clone(), crate::history::store::case_hash(&c.path)))
            .collect();
        if opts.resume {
            let csv = opts.out_root.join(crate::report::results::CSV_NAME);
            if csv.exists() {
                let rows = crate::report::baseline::load_rows(&csv)?;
                store.record_by_case(&run_id, &rows, |case| {
                    hashes
                        .get(case)
                        .cloned()
                        .unwrap_or_else(|| "unknown".into())
                })?;
            }
        }
        Ok(History {
            store,
            run_id,
            hashes,
        })
    }

    fn record_rows(
        &self,
        case: &Case,
        r: &JobRecord,
        blocks: Vec<Block>,
    ) -> Result<Vec<Row>, String> {
        let blocks = if blocks.is_empty() {
            vec![Block::default()]
        } else {
            blocks
        };
        let rows: Vec<Row> = blocks
            .into_iter()
            .map(|b| Row {
                test_name: case.name.clone(),
                family: case.family.name.to_owned(),
                category: case.category.clone(),
                model: b
                    .model
                    .unwrap_or_else(|| case.model().unwrap_or_default().to_owned()),
                gpu_type: crate::env::gpu_type(),
                executor: self.opts.executor.name().to_owned(),
                job_id: r.id.clone(),
                concurrency: b.concurrency,
                variant: b.variant,
                state: r.state.to_string(),
                start: unix(r.started),
                end: unix(r.finished),
                metrics: b.metrics,
            })
            .collect();
        self.results.append(&rows).map_err(|e| {
            format!(
                "{}: failed to write {}: {e}",
                case.name,
                self.results.csv_path().display()
            )
        })?;
        // The CSV is the durable record; a database that fails mid-run is reported, not fatal.
        if let Some(h) = &self.history {
            let hash = h.hashes.get(&case.name).map_or("unknown", String::as_str);
            if let Err(e) = h.store.record(&h.run_id, &rows, hash) {
                self.progress.line(&format!("  {}: {e}", case.name));
            }
        }
        Ok(rows)
    }

    /// One line about a live job: state, time in it, and for disagg jobs each role's state from its
    /// rendezvous record and the concurrency levels the benchmark has finished.
    fn heartbeat(&self, case: &Case, r: &JobRecord) -> String {
        let since = r.started.or(Some(r.submitted));
        let elapsed = since
            .and_then(|t| t.elapsed().ok())
            .map(|d| format!(" for {}s", d.as_secs()))
            .unwrap_or_default();
        let job = self.case_dir(case).join(format!("job-{}", r.id));
        let mut line = format!(
            "  heartbeat: {}: job {} {}{elapsed}",
            case.name, r.id, r.state
        );
        if let Some(note) = case.spec.as_deref().and_then(|s| s.progress(&job)) {
            line.push_str(&format!("; {note}"));
        }
        line
    }

    pub fn case_dir(&self, case: &Case) -> PathBuf {
        self.opts.out_root.join(&case.name)
    }

    /// Tracker file: per-case timing and final state, written atomically.
    fn track(&self, case: &Case, r: &JobRecord) {
        let secs = |a: Option<SystemTime>, b: Option<SystemTime>| {
            Some(b?.duration_since(a?).ok()?.as_secs_f64())
        };
        let t = Tracker {
            schema_version: 1,
            case: &case.name,
            executor: self.opts.executor.name(),
            job_id: &r.id,
            state: r.state.to_string(),
            exit_code: r.exit_code.as_deref(),
            submitted: unix(Some(r.submitted)),
            started: unix(r.started),
            finished: unix(r.finished),
            queue_s: secs(Some(r.submitted), r.started),
            run_s: secs(r.started, r.finished),
        };
        let path = self.case_dir(case).join("tracker.json");
        let json = serde_json::to_vec_pretty(&t).expect("tracker serializes");
        if let Err(e) = crate::fsutil::write_atomic(&path, &json) {
            self.progress.line(&format!(
                "  {}: failed to write {}: {e}",
                case.name,
                path.display()
            ));
        }
    }

    /// The last lines of the job's SLURM output and of every step log, for failure messages.
    pub fn tails(&self, case: &Case, id: &str) -> String {
        let mut files: Vec<PathBuf> = Vec::new();
        if let Some(plan) = self.plans.lock().unwrap().get(&case.name) {
            files.push(PathBuf::from(
                plan.slurm_out.display().to_string().replace("%j", id),
            ));
            files.extend(plan.steps.iter().map(|s| s.log.clone()));
        } else if let Ok(entries) = std::fs::read_dir(self.case_dir(case)) {
            // Debug mode: whatever logs the job left.
            let mut found: Vec<PathBuf> = entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "log" || x == "out"))
                .collect();
            found.sort();
            files.extend(found);
        }
        let mut out = String::new();
        for f in files
            .iter()
            .filter(|f| f.metadata().is_ok_and(|m| m.len() > 0))
        {
            out.push_str(&format!(
                "\n--- last {TAIL} lines of {} ---\n{}",
                f.display(),
                log_tail(f, TAIL)
            ));
        }
        out
    }

    /// Cancels whatever this run submitted that is still live (end of run, signals).
    pub fn cancel_all(&self) -> usize {
        let live = self.opts.executor.table().live_ids();
        if !live.is_empty() {
            self.opts.executor.cancel(&live);
        }
        live.len()
    }

    /// `report.html` over this run's results (and the baseline run, when gating against one).
    /// Brings results.json up to date with every row written so far (end of run, Ctrl-C).
    pub fn flush_results(&self) {
        if let Err(e) = self.results.flush() {
            self.progress.line(&format!(
                "servetest: failed to write {}: {e} (the CSV {} holds every row)",
                self.results.json_path().display(),
                self.results.csv_path().display()
            ));
        }
    }

    pub fn write_html(&self) -> Result<PathBuf, String> {
        crate::report::html::write_for_run(
            &self.opts.out_root,
            self.opts.baseline.as_ref().map(|b| b.path.as_path()),
            None,
        )
    }

    pub fn summary(&self) -> String {
        let (queries, job_polls) = self.opts.executor.queries();
        format!(
            "servetest: {queries} scheduler queries covering {job_polls} job-polls ({}); run log {}",
            self.opts.executor.name(),
            self.progress.path.display()
        )
    }
}
