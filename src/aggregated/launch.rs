//! `servetest aggregated launch`: seed 000's `launch.py` command line over its own files: the model
//! config (a YAML list of models), the cluster config (a YAML list of SSH nodes), text/image case
//! files and bench-param JSON, unchanged. Paths given on the command line and the paths inside the
//! model config resolve against the working directory, as upstream's; the defaults are the
//! project's `configs/` (upstream's tool directory).

use std::path::{Path, PathBuf};

use super::case::{AggregatedSpec, ModelEntry};
use crate::case::violation::Violation;

/// Upstream's `--gpus` default: models needing other device counts are skipped unless named.
const DEFAULT_GPUS: &[u64] = &[1, 2, 4, 8];

#[derive(clap::Args, Debug)]
#[command(
    about = "Seed 000's batched test (launch.py): inference and performance of every model in a model config"
)]
pub struct LaunchArgs {
    /// Folder for saving test results (a YYYYmmdd_HHMM folder is made under it).
    #[arg(long, value_name = "WORK_DIR", default_value = "/workspace/model_test")]
    pub work_dir: PathBuf,
    /// Model config file path [default: configs/model.yaml].
    #[arg(long, value_name = "CONFIG_YAML_FILE")]
    pub model_config: Option<PathBuf>,
    /// Cluster config file path: SSH nodes, Ray started on as many as a model needs; the first node
    /// must be this machine.
    #[arg(long, value_name = "CONFIG_YAML_FILE")]
    pub cluster_config: Option<PathBuf>,
    /// Run inference tests for all models in --model-config.
    #[arg(long)]
    pub infer: bool,
    /// Cases for text-only inference [default: configs/inference/text_case.yaml].
    #[arg(long, value_name = "LM_CASE_FILE")]
    pub text_case: Option<PathBuf>,
    /// Cases for image inference [default: configs/inference/image_case.yaml].
    #[arg(long, value_name = "IMAGE_CASE_FILE")]
    pub image_case: Option<PathBuf>,
    /// Resume from an inference_results.csv: models whose rows all ended normally are skipped
    /// (a sweep's summary.csv skips its combinations).
    #[arg(long, value_name = "RESUME_CSV")]
    pub resume_csv: Option<PathBuf>,
    /// Run the performance benchmark for all models in --model-config.
    #[arg(long)]
    pub perf: bool,
    /// Keep models needing these device counts (tp·pp·dp), comma-separated [default: 1,2,4,8].
    #[arg(long, value_name = "GPUS")]
    pub gpus: Option<String>,
    /// Keep models with any of these tags, comma-separated (a model without tags is `dense`).
    #[arg(long, value_name = "TAG")]
    pub tag: Option<String>,
    /// Select models only: print the selection and exit.
    #[arg(long)]
    pub dry_run: bool,
    /// Write the selected models to this YAML file (a bare name goes to configs/).
    #[arg(long, value_name = "DUMP_SELECTED")]
    pub dump_selected: Option<PathBuf>,
    /// Devices per cluster node (upstream: 8).
    #[arg(long, default_value_t = 8)]
    pub gpus_per_node: u64,
}

/// Parses `--gpus` as upstream: empty means the default; anything else must be integers.
fn gpu_filter(arg: Option<&str>) -> Result<Vec<u64>, String> {
    match arg.map(str::trim) {
        None | Some("") => Ok(DEFAULT_GPUS.to_vec()),
        Some(list) => list
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| {
                s.parse()
                    .map_err(|_| format!("--gpus: `{s}` is not an integer"))
            })
            .collect(),
    }
}

fn tag_filter(arg: Option<&str>) -> Vec<String> {
    arg.map(|t| {
        t.split(',')
            .map(|s| s.trim().to_lowercase())
            .filter(|s| !s.is_empty())
            .collect()
    })
    .unwrap_or_default()
}

/// Indents `text` under `key:` so a top-level list becomes a section of one case document; lines
/// in the result are one more than in `text`.
fn section(key: &str, text: &str) -> String {
    let mut out = format!("{key}:\n");
    for line in text.lines() {
        out.push_str("  ");
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// Violations of a wrapped file, pointed back at the file's own lines and keys.
fn unwrap_violations(
    mut violations: Vec<Violation>,
    wrapped: &str,
    key: &str,
    file: &Path,
) -> Vec<Violation> {
    let prefix = format!("{key}.");
    violations.retain(|v| v.key == key || v.key.starts_with(&prefix));
    crate::case::locate::fill_lines(&mut violations, wrapped);
    for v in &mut violations {
        v.line = v.line.map(|l| l.saturating_sub(1).max(1));
        v.key = v.key.strip_prefix(&prefix).unwrap_or("").to_owned();
        v.reason = v.reason.replace(&format!(" {prefix}"), " ");
        v.file = file.to_path_buf();
    }
    violations
}

/// Reads the model config (and the cluster config) into one spec; every violation at once.
pub fn load(a: &LaunchArgs, root: &Path) -> Result<(AggregatedSpec, serde_yaml::Value), String> {
    let model_config = a
        .model_config
        .clone()
        .unwrap_or_else(|| root.join("configs/model.yaml"));
    let text = std::fs::read_to_string(&model_config)
        .map_err(|e| format!("--model-config {}: {e}", model_config.display()))?;
    let text = text.strip_prefix('\u{feff}').unwrap_or(&text);
    let raw: serde_yaml::Value =
        serde_yaml::from_str(text).map_err(|e| format!("{}: {e}", model_config.display()))?;
    // `infer` as given, so infer_type is only checked when inference runs.
    let wrapped = format!(
        "{}infer: {}\nperf: true\nslurm: {{job_time: '00:00:00'}}\n",
        section("models", text),
        a.infer
    );
    let (spec, violations) = super::case::load(&wrapped, "perf", "");
    let mut all = unwrap_violations(violations, &wrapped, "models", &model_config);
    let cluster = match &a.cluster_config {
        None => None,
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| format!("--cluster-config {}: {e}", path.display()))?;
            let wrapped = format!(
                "{}models: [{{name: m, model_path: m, infer_type: [text-only]}}]\nslurm: {{job_time: '00:00:00'}}\n",
                section("cluster", &text)
            );
            let (spec, violations) = super::case::load(&wrapped, "perf", "");
            all.extend(unwrap_violations(violations, &wrapped, "cluster", path));
            spec.and_then(|s| s.downcast::<AggregatedSpec>()?.cluster.clone())
        }
    };
    for w in all.iter().filter(|v| !v.is_error()) {
        eprintln!("{w}");
    }
    let errors: Vec<String> = all
        .iter()
        .filter(|v| v.is_error())
        .map(|v| v.to_string())
        .collect();
    if !errors.is_empty() {
        return Err(format!("invalid configuration:\n{}", errors.join("\n")));
    }
    let Some(mut spec) = spec.and_then(|s| s.downcast::<AggregatedSpec>().cloned()) else {
        return Err(format!("{}: not a model list", model_config.display()));
    };
    let default_case = |p: &Option<PathBuf>, name: &str| {
        p.clone()
            .unwrap_or_else(|| root.join("configs/inference").join(name))
            .display()
            .to_string()
    };
    spec.text_case = default_case(&a.text_case, "text_case.yaml");
    spec.image_case = default_case(&a.image_case, "image_case.yaml");
    spec.infer = a.infer;
    spec.perf = a.perf;
    spec.cluster = cluster;
    spec.gpus_per_node = a.gpus_per_node;
    Ok((spec, raw))
}

/// The models `--gpus` and `--tag` keep, with their indices in the model config.
pub fn select<'a>(
    models: &'a [ModelEntry],
    gpus: &[u64],
    tags: &[String],
) -> Vec<(usize, &'a ModelEntry)> {
    models
        .iter()
        .enumerate()
        .filter(|(_, m)| gpus.contains(&m.devices()))
        .filter(|(_, m)| tags.is_empty() || m.tag_set().iter().any(|t| tags.contains(t)))
        .collect()
}

pub fn launch(a: &LaunchArgs) -> Result<(), String> {
    let root = crate::env::project_dir();
    let gpus = gpu_filter(a.gpus.as_deref())?;
    let tags = tag_filter(a.tag.as_deref());
    let (mut spec, raw) = load(a, &root)?;
    let selected = select(&spec.models, &gpus, &tags);
    if a.dry_run || a.dump_selected.is_some() {
        println!("[Scheduler] GPU count filter: {gpus:?}");
        if !tags.is_empty() {
            println!("[Scheduler] Tag filter (OR): {tags:?}");
        }
        let mut shown: Vec<&(usize, &ModelEntry)> = selected.iter().collect();
        shown.sort_by_key(|(_, m)| (m.devices(), m.name.clone()));
        println!("[Scheduler] Selected {} model(s):", shown.len());
        for (_, m) in shown {
            println!(
                "  - {} | gpus={} | tags={}",
                m.name,
                m.devices(),
                m.tag_set().join(",")
            );
        }
    }
    if let Some(path) = &a.dump_selected {
        let path = if path.parent().is_none_or(|p| p.as_os_str().is_empty()) {
            root.join("configs").join(path)
        } else {
            path.clone()
        };
        let items = raw.as_sequence().cloned().unwrap_or_default();
        let mut out = String::new();
        for (i, m) in &selected {
            let item = items
                .get(*i)
                .ok_or_else(|| format!("--dump-selected: model `{}` is not in the file", m.name))?;
            let one = serde_yaml::to_string(&vec![item.clone()]).map_err(|e| e.to_string())?;
            out.push_str(&one);
            out.push('\n');
        }
        std::fs::write(&path, out).map_err(|e| format!("{}: {e}", path.display()))?;
        println!("[Scheduler] Dumped selected models to: {}", path.display());
    }
    if a.dry_run {
        return Ok(());
    }
    let keep: Vec<usize> = selected.iter().map(|(i, _)| *i).collect();
    let mut i = 0;
    spec.models.retain(|_| {
        i += 1;
        keep.contains(&(i - 1))
    });
    let opts = super::RunOptions {
        out: a.work_dir.clone(),
        resume_csvs: a.resume_csv.iter().cloned().collect(),
        base: std::env::current_dir().map_err(|e| e.to_string())?,
        job_rows: false,
    };
    super::run_spec(&spec, &opts)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MODELS: &str = "# upstream's own file shape\n- name: a\n  model_path: /m/a\n  serve_config:\n    tp: 8\n    extra_args:\n      -dcp: 2\n      --enable-auto-tool-choice:\n  infer_type:\n    - text-only\n  tags: [MoE]\n\n- name: b\n  model_path: /m/b\n  serve_config: {tp: 4, pp: 4}\n  infer_type: [single-image]\n  extra_env: [{A: 1}, {B: true}]\n- name: c\n  model_path: /m/c\n  infer_type: [text-only]\n  tag: dense\n";

    fn args(dir: &Path, model_config: &str) -> LaunchArgs {
        let p = dir.join("model.yaml");
        std::fs::write(&p, model_config).unwrap();
        LaunchArgs {
            work_dir: dir.join("work"),
            model_config: Some(p),
            cluster_config: None,
            infer: true,
            text_case: None,
            image_case: None,
            resume_csv: None,
            perf: false,
            gpus: None,
            tag: None,
            dry_run: true,
            dump_selected: None,
            gpus_per_node: 8,
        }
    }

    #[test]
    fn upstream_model_configs_load_and_select_as_upstream() {
        let dir = tempfile::tempdir().unwrap();
        let a = args(dir.path(), MODELS);
        let (spec, _) = load(&a, dir.path()).unwrap();
        let a0 = &spec.models[0];
        assert_eq!(a0.backend(), "ray", "8 devices run on ray upstream");
        assert_eq!(spec.models[2].backend(), "mp");
        assert_eq!(
            a0.serve_config.extra_argv().unwrap(),
            ["-dcp", "2", "--enable-auto-tool-choice"]
        );
        assert_eq!(spec.models[1].extra_env["B"], "True");
        assert_eq!(a0.tag_set(), ["moe"]);
        assert_eq!(spec.models[2].tag_set(), ["dense"]);
        // b needs 16 devices: not in the default filter.
        let names = |sel: Vec<(usize, &ModelEntry)>| -> Vec<String> {
            sel.iter().map(|(_, m)| m.name.clone()).collect()
        };
        assert_eq!(
            names(select(&spec.models, &gpu_filter(None).unwrap(), &[])),
            ["a", "c"]
        );
        assert_eq!(
            names(select(&spec.models, &gpu_filter(Some("16")).unwrap(), &[])),
            ["b"]
        );
        assert_eq!(
            names(select(
                &spec.models,
                &gpu_filter(Some(" ")).unwrap(),
                &tag_filter(Some("MoE"))
            )),
            ["a"]
        );
        assert!(gpu_filter(Some("8,x")).unwrap_err().contains("`x`"));
    }

    #[test]
    fn violations_point_at_the_model_config_lines() {
        let dir = tempfile::tempdir().unwrap();
        let bad = MODELS
            .replace("tp: 8", "tp: 0")
            .replace("  tag: dense", "  colour: red");
        let a = args(dir.path(), &bad);
        let e = load(&a, dir.path()).unwrap_err();
        let model = dir.path().join("model.yaml").display().to_string();
        assert!(
            e.contains(&format!("{model}:5: 0.serve_config.tp: must be at least 1")),
            "{e}"
        );
        assert!(
            e.contains(&format!(
                "{model}:21: 2.colour: unknown key (known in 2: name,"
            )),
            "{e}"
        );
    }

    #[test]
    fn dump_selected_writes_each_selected_entry_as_written() {
        let dir = tempfile::tempdir().unwrap();
        let mut a = args(dir.path(), MODELS);
        let dump = dir.path().join("selected.yaml");
        a.dump_selected = Some(dump.clone());
        launch(&a).unwrap();
        let text = std::fs::read_to_string(&dump).unwrap();
        let blocks: Vec<&str> = text
            .split("\n\n")
            .filter(|b| !b.trim().is_empty())
            .collect();
        assert_eq!(blocks.len(), 2, "{text}");
        let first: serde_yaml::Value = serde_yaml::from_str(blocks[0]).unwrap();
        assert_eq!(first[0]["name"].as_str(), Some("a"));
        // The entry as written: upstream's single-dash flag and `tags` survive.
        assert_eq!(
            first[0]["serve_config"]["extra_args"]["-dcp"].as_u64(),
            Some(2)
        );
        assert!(
            blocks[1].contains("name: c") && !text.contains("name: b"),
            "{text}"
        );
    }
}
