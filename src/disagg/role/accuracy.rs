//! The accuracy part of the BENCHMARK role: EleutherAI's lm-eval (the real tool, `local-completions`
//! against the router) once per task of `accuracy.tasks`, every score gathered into `accuracy.json`
//! for the harness to judge against `metadata.accuracy` (`check::accuracy`).

use std::path::Path;

use super::benchmark::{run_client, Signals};
use super::rendezvous::RoleRecord;
use super::RoleContext;
use crate::check::accuracy::{find_results, parse_results};
use crate::disagg::schema::AccuracyTask;
use crate::exec::process::{log_tail, CommandSpec};
use crate::serve::server::TAIL_LINES;

/// Accuracy scores of every lm-eval task, as `check::accuracy::Score`s.
pub const ACCURACY_FILE: &str = "accuracy.json";

pub(super) async fn run(
    ctx: &RoleContext,
    http: &reqwest::Client,
    signals: &mut Signals,
    router: &RoleRecord,
) -> Result<(), String> {
    let tasks = ctx.spec.accuracy.tasks();
    if tasks.is_empty() {
        return Err("accuracy: accuracy.tasks names no task".into());
    }
    let mut scores = Vec::new();
    for (name, task) in &tasks {
        let out = ctx.rdv.dir().join("lm_eval").join(name);
        let command = lm_eval_command(ctx, router, name, task, &out)?;
        eprintln!(
            "BENCHMARK: accuracy task {name}: {}",
            command.display_line()
        );
        let log = ctx.rdv.dir().join(format!("accuracy.{name}.log"));
        run_client(
            ctx,
            http,
            signals,
            &command,
            &log,
            &format!("accuracy task {name}"),
        )
        .await?;
        let path = find_results(&out).ok_or_else(|| {
            format!(
                "accuracy task {name}: lm-eval wrote no results_*.json under {}; last {TAIL_LINES} lines of {}:\n{}",
                out.display(),
                log.display(),
                log_tail(&log, TAIL_LINES)
            )
        })?;
        let json: serde_json::Value = std::fs::read(&path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .ok_or_else(|| format!("accuracy task {name}: cannot parse {}", path.display()))?;
        let found = parse_results(&json);
        for s in &found {
            eprintln!(
                "BENCHMARK: {} {} ({}) = {} over {} samples",
                s.task,
                s.metric,
                s.filter,
                s.value,
                s.samples.map_or("?".into(), |n| n.to_string())
            );
        }
        scores.extend(found);
    }
    let doc = serde_json::json!({ "schema_version": 1, "scores": scores });
    let path = ctx.rdv.dir().join(ACCURACY_FILE);
    crate::fsutil::write_atomic(&path, &serde_json::to_vec_pretty(&doc).expect("serializes"))
        .map_err(|e| format!("failed to write {}: {e}", path.display()))
}

/// `python -m lm_eval run --model local-completions --model_args model=…,base_url=…/v1/completions,…`
/// plus the task's `model_args_extra` (appended: later keys win) and `extra_kwargs` (`--key value`;
/// `true` is a bare flag). Runs in the project root, so local tasks (`tasks/lm_eval`, added as an
/// include path) and their relative data paths resolve.
fn lm_eval_command(
    ctx: &RoleContext,
    router: &RoleRecord,
    name: &str,
    task: &AccuracyTask,
    out: &Path,
) -> Result<CommandSpec, String> {
    let model = ctx.model.display().to_string();
    let base = format!(
        "http://{}/v1/completions",
        crate::serve::engine::host_port(&router.host, router.port)
    );
    let mut model_args =
        format!("model={model},base_url={base},tokenizer={model},tokenized_requests=False");
    if let Some(extra) = task.model_args_extra.as_deref().filter(|e| !e.is_empty()) {
        model_args.push(',');
        model_args.push_str(extra);
    }
    let mut args: Vec<String> = vec![
        "-m".into(),
        "lm_eval".into(),
        "run".into(),
        "--model".into(),
        task.model
            .clone()
            .unwrap_or_else(|| "local-completions".into()),
        "--model_args".into(),
        model_args,
        "--tasks".into(),
        name.to_owned(),
        "--batch_size".into(),
        "1".into(),
        "--output_path".into(),
        out.display().to_string(),
    ];
    let local_tasks = ctx.root.join("tasks/lm_eval");
    if local_tasks.is_dir() && !task.extra_kwargs.contains_key("include_path") {
        args.extend(["--include_path".into(), local_tasks.display().to_string()]);
    }
    args.extend(crate::serve::engine::flags_from_map(
        &task.extra_kwargs,
        crate::serve::engine::FlagNames::AsWritten,
        &format!("accuracy.tasks.{name}.extra_kwargs"),
    )?);
    Ok(CommandSpec {
        program: ctx.tools.eval_python.clone(),
        args,
        env: ctx
            .spec
            .accuracy
            .env_var
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        cwd: Some(ctx.root.clone()),
    })
}
