//! Case → `JobPlan`: SLURM options, environment and one step per role/command, rendered into an
//! sbatch script from `scripts/templates/job.sbatch.j2` and kept in the case's output directory.
//!
//! Quoting is done here, not in the template: the template only ever sees strings that are already
//! shell-quoted (`shell_words::quote`), and values that go into `#SBATCH` lines (parsed by sbatch, where
//! a newline would end the comment and start a shell line) are rejected if they hold control characters.

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::case::common::parse_slurm_time;
use crate::case::Case;
use crate::plan::placement::Nodes;
use crate::plan::profile::ClusterProfile;

const TEMPLATE: &str = include_str!("../../scripts/templates/job.sbatch.j2");

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedStep {
    pub name: String,
    pub argv: Vec<String>,
    pub ntasks: u64,
    /// The step's share of the allocation: which nodes, and GPUs (0 = none requested).
    pub nodes: Nodes,
    pub gpus: u64,
    pub log: PathBuf,
    /// A worker whose engine launches across nodes (TensorRT-LLM: MPI ranks under
    /// `trtllm-llmapi-launch`): its world size. On more than one node the step runs that many
    /// tasks (`--ntasks-per-node`, `--mpi=pmix`); on one node, one task as any other.
    pub ranks: Option<u64>,
}

/// The case's environment as `export NAME=value` lines, and the private file they go to (0600, in
/// the run's runtime directory, never OUTPUT_PATH); SLURM jobs source it (`write_private_env`).
#[derive(Clone)]
pub struct PrivateEnv {
    pub path: PathBuf,
    pub text: String,
}

#[derive(Clone)]
pub struct JobPlan {
    /// The case's environment values, for executors whose jobs read them from a file.
    pub private_env: Option<PrivateEnv>,
    pub case: String,
    /// The case's output directory (script, logs, tracker).
    pub dir: PathBuf,
    pub work_dir: PathBuf,
    /// Seconds the job may run (after the cluster profile's cap); `None` = unlimited.
    pub time_limit: Option<u64>,
    pub env: Vec<(String, String)>,
    pub steps: Vec<PlannedStep>,
    /// What the cluster profile rewrote, one line each.
    pub overrides: Vec<String>,
    /// The rendered sbatch script and where it is written.
    pub script: String,
    pub script_path: PathBuf,
    /// sbatch's own stdout/stderr (`%j` = job id).
    pub slurm_out: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    #[error("{case}: {key}: {reason}")]
    Value {
        case: String,
        key: String,
        reason: String,
    },
    #[error("{case}: the case did not load, so it cannot be rendered")]
    NoSpec { case: String },
    #[error("failed to render the job template: {0}")]
    Template(#[from] minijinja::Error),
    #[error("failed to write {path}: {source}")]
    Write {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

pub struct RenderInput<'a> {
    pub case: &'a Case,
    /// `$OUTPUT_PATH`: the case directory is `{out_root}/{case name}`.
    pub out_root: &'a Path,
    /// `$WORK_DIR`, where steps run; default: the case directory.
    pub work_dir: Option<&'a Path>,
    pub profile: Option<&'a ClusterProfile>,
    /// Distinguishes this run's SLURM output files (job ids restart when SLURM state is wiped).
    pub run_id: &'a str,
    /// The servetest binary role steps call.
    pub servetest: &'a Path,
}

/// The environment variables upstream's config loader applies to every case that servetest honours
/// too, with their values (unset or empty ones are skipped).
fn upstream_env_overrides() -> Vec<(&'static str, String)> {
    ["SLURM_PARTITION", "SLURM_ACCOUNT", "CONTAINER_IMAGE"]
        .into_iter()
        .filter_map(|var| {
            std::env::var(var)
                .ok()
                .filter(|v| !v.trim().is_empty())
                .map(|v| (var, v))
        })
        .collect()
}

/// The SLURM-facing fields every family provides.
pub struct SlurmFields {
    pub partition: Option<String>,
    pub account: Option<String>,
    pub job_time: String,
    pub extra_args: Option<String>,
    pub nodes: u64,
    pub gpus_per_node: u64,
    pub container_image: Option<String>,
    pub container_mounts: Option<String>,
    /// The family's steps run in containers: upstream's `CONTAINER_IMAGE` applies.
    pub containers: bool,
}

/// Where a job is rendered: what a family's steps need to name.
pub struct JobSite<'a> {
    /// The servetest binary steps call.
    pub servetest: &'a Path,
    /// The case's output directory (absolute).
    pub dir: &'a Path,
    /// The case file (absolute), for steps that load it.
    pub case_path: &'a Path,
}

/// A family's job before the cluster profile and the template: SLURM fields, the case's private
/// environment, its steps.
pub struct JobParts {
    pub fields: SlurmFields,
    pub env: Vec<(String, String)>,
    pub steps: Vec<PlannedStep>,
    /// The steps are serving roles: one process each unless the engine runs ranks
    /// (`PlannedStep::ranks`), so a step placed on several nodes says it runs on its first.
    pub serving_roles: bool,
}

impl SlurmFields {
    /// The `slurm` section the script, latency and aggregated families share; no containers.
    pub fn from_script(
        s: &crate::case::common::ScriptSlurm,
        nodes: u64,
        gpus_per_node: u64,
    ) -> Self {
        SlurmFields {
            partition: s.partition.clone(),
            account: s.account.clone(),
            job_time: s.job_time.clone(),
            extra_args: s.extra_args.clone(),
            nodes,
            gpus_per_node,
            container_image: None,
            container_mounts: None,
            containers: false,
        }
    }
}

pub fn plan(input: &RenderInput) -> Result<JobPlan, RenderError> {
    let case = input.case;
    let spec = case.spec.as_ref().ok_or_else(|| RenderError::NoSpec {
        case: case.name.clone(),
    })?;
    // Jobs run elsewhere (sbatch's working directory, other nodes): every path is absolute.
    let abs = |p: &Path| std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
    let dir = abs(input.out_root).join(&case.name);
    let work_dir = input.work_dir.map_or_else(|| dir.clone(), abs);
    let case_path = abs(&case.path);
    let value_err = |key: &str, reason: String| RenderError::Value {
        case: case.name.clone(),
        key: key.to_owned(),
        reason,
    };
    let site = JobSite {
        servetest: input.servetest,
        dir: &dir,
        case_path: &case_path,
    };
    let JobParts {
        fields,
        env,
        steps,
        serving_roles,
    } = spec
        .job(&site)
        .map_err(|(key, reason)| value_err(&key, reason))?;

    let mut overrides = Vec::new();
    let profile = input.profile;
    let mut fields = fields;
    // Upstream's loader sets these from the environment for every case; a migrating team's
    // SLURM_PARTITION / SLURM_ACCOUNT / CONTAINER_IMAGE keep working (a cluster profile still wins).
    for (var, value) in upstream_env_overrides() {
        if var == "CONTAINER_IMAGE" && !fields.containers {
            continue;
        }
        let (key, slot) = match var {
            "SLURM_PARTITION" => ("slurm.partition", &mut fields.partition),
            "SLURM_ACCOUNT" => ("slurm.account", &mut fields.account),
            _ => ("environment.container_image", &mut fields.container_image),
        };
        if slot.as_deref() != Some(value.as_str()) {
            overrides.push(format!("{key}: {} -> {value} (${var})", show(slot)));
            *slot = Some(value);
        }
    }
    let mut partition = fields.partition;
    let mut account = fields.account;
    let mut job_time = fields.job_time;
    let mut nodes = fields.nodes;
    let mut extra: Vec<String> = match &fields.extra_args {
        Some(text) => shell_words::split(text)
            .map_err(|e| value_err("slurm.extra_args", format!("cannot split: {e}")))?,
        None => Vec::new(),
    };
    let mut gpus = true;
    let mut containers = true;
    if let Some(p) = profile {
        let tag = format!("(cluster profile {})", p.name);
        if let Some(part) = &p.partition {
            if partition.as_deref() != Some(part) {
                overrides.push(format!(
                    "slurm.partition: {} -> {part} {tag}",
                    show(&partition)
                ));
                partition = Some(part.clone());
            }
        }
        if let Some(acct) = &p.account {
            let had = account.as_deref().filter(|a| !a.is_empty());
            if had != Some(acct.as_str()) && !(had.is_none() && acct.is_empty()) {
                let now = if acct.is_empty() {
                    "(dropped)".to_owned()
                } else {
                    acct.clone()
                };
                overrides.push(format!("slurm.account: {} -> {now} {tag}", show(&account)));
                account = Some(acct.clone());
            }
        }
        if let Some(limit) = &p.time_limit {
            let cap = parse_slurm_time(limit).ok().flatten();
            let want = parse_slurm_time(&job_time).ok().flatten();
            if let (Some(cap), want) = (cap, want) {
                if want.is_none_or(|w| w > cap) {
                    overrides.push(format!("slurm.job_time: {job_time} -> {limit} {tag}"));
                    job_time = limit.clone();
                }
            }
        }
        if let Some(max) = p.max_nodes {
            if nodes > max {
                overrides.push(format!("nodes: {nodes} -> {max} {tag}"));
                nodes = max;
            }
        }
        if !p.gpus {
            gpus = false;
            let dropped: Vec<String> = extra
                .iter()
                .filter(|a| ClusterProfile::is_gpu_request(a))
                .cloned()
                .collect();
            if !dropped.is_empty() {
                overrides.push(format!(
                    "slurm.extra_args: dropped {} {tag}",
                    dropped.join(" ")
                ));
                extra.retain(|a| !ClusterProfile::is_gpu_request(a));
            }
        }
        if !p.containers
            && fields
                .container_image
                .as_deref()
                .is_some_and(|i| !i.is_empty())
        {
            containers = false;
            overrides.push(format!(
                "environment.container_image: {} -> (none) {tag}",
                show(&fields.container_image)
            ));
        }
    }

    let mut sbatch = Vec::new();
    let mut opt = |key: &str, flag: &str, value: &str| -> Result<(), RenderError> {
        if value.chars().any(char::is_control) {
            return Err(value_err(
                key,
                format!(
                    "{value:?} holds a control character; refusing to put it in an #SBATCH line"
                ),
            ));
        }
        sbatch.push(format!("{flag}={}", shell_words::quote(value)));
        Ok(())
    };
    opt("name", "--job-name", &case.name)?;
    if let Some(p) = partition.as_deref().filter(|p| !p.is_empty()) {
        opt("slurm.partition", "--partition", p)?;
    }
    if let Some(a) = account.as_deref().filter(|a| !a.is_empty()) {
        opt("slurm.account", "--account", a)?;
    }
    parse_slurm_time(&job_time).map_err(|r| value_err("slurm.job_time", r))?;
    opt("slurm.job_time", "--time", &job_time)?;
    opt("nodes", "--nodes", &nodes.to_string())?;
    let ntasks: u64 = steps.iter().map(|s| s.ntasks).sum();
    opt("ntasks", "--ntasks", &ntasks.to_string())?;
    let slurm_out = dir.join(format!("slurm-{}-%j.out", input.run_id));
    opt("output", "--output", &slurm_out.display().to_string())?;
    if gpus && fields.gpus_per_node > 0 && !extra.iter().any(|a| ClusterProfile::is_gpu_request(a))
    {
        opt(
            "hardware.gpus_per_node",
            "--gpus-per-node",
            &fields.gpus_per_node.to_string(),
        )?;
    }
    // A requeued job reruns under the same id, into the same job directory as the failed attempt;
    // failing it and letting `--resume` run the case again keeps attempts apart.
    sbatch.push("--no-requeue".to_owned());
    for arg in &extra {
        if arg.chars().any(char::is_control) {
            return Err(value_err(
                "slurm.extra_args",
                format!("{arg:?} holds a control character"),
            ));
        }
        sbatch.push(shell_words::quote(arg).into_owned());
    }

    let container = match (&fields.container_image, containers) {
        (Some(image), true) if !image.is_empty() => {
            let mut c = format!(" --container-image={}", shell_words::quote(image));
            if let Some(m) = fields.container_mounts.as_deref().filter(|m| !m.is_empty()) {
                c.push_str(&format!(" --container-mounts={}", shell_words::quote(m)));
            }
            c
        }
        _ => String::new(),
    };

    // A job of several nodes pins each step to its nodes (`servetest_nodelist FIRST COUNT` in the
    // script maps indices to host names) and lets steps share a node's CPUs, as upstream's steps do
    // (--overlap).
    let multinode = nodes > 1;
    let shares: Vec<crate::plan::placement::Share> = steps
        .iter()
        .map(|s| crate::plan::placement::Share {
            name: &s.name,
            nodes: s.nodes,
            one_process: serving_roles && s.ranks.is_none(),
        })
        .collect();
    let (fitted, notes) = crate::plan::placement::fit(&shares, nodes);
    overrides.extend(notes);
    let steps: Vec<PlannedStep> = steps
        .into_iter()
        .zip(fitted)
        .map(|(s, nodes)| {
            // Ranks only across nodes: on one node the engine starts its own workers.
            let ntasks = match s.ranks {
                Some(world) if nodes.count > 1 => world,
                _ => s.ntasks,
            };
            PlannedStep { nodes, ntasks, ..s }
        })
        .collect();
    #[derive(Serialize)]
    struct StepView {
        ntasks: u64,
        /// ` --nodes=N`, on a multi-node job its node list and ` --overlap`, on GPU clusters
        /// ` --gpus=G`.
        share: String,
        /// ` --ntasks-per-node=N --mpi=pmix` for a worker's MPI ranks.
        mpi: String,
        name_q: String,
        log_q: String,
        container: String,
        argv: String,
    }
    let step_views: Vec<StepView> = steps
        .iter()
        .map(|s| StepView {
            ntasks: s.ntasks,
            share: format!(
                " --nodes={}{}{}",
                s.nodes.count,
                if multinode {
                    format!(
                        " --nodelist=\"$(servetest_nodelist {} {})\" --overlap",
                        s.nodes.first, s.nodes.count
                    )
                } else {
                    String::new()
                },
                if gpus && s.gpus > 0 {
                    format!(" --gpus={}", s.gpus)
                } else {
                    String::new()
                }
            ),
            mpi: match s.ranks {
                Some(world) if s.nodes.count > 1 => format!(
                    " --ntasks-per-node={} --mpi=pmix",
                    world.div_ceil(s.nodes.count)
                ),
                _ => String::new(),
            },
            name_q: shell_words::quote(&s.name).into_owned(),
            log_q: shell_words::quote(&s.log.display().to_string()).into_owned(),
            container: container.clone(),
            argv: shell_words::join(&s.argv),
        })
        .collect();
    // servetest's own variables (paths it chose) are written into the script; every value the case
    // supplies travels in a private file outside OUTPUT_PATH that the script sources and removes
    // (src/secrets.rs), so no case value lands in job.sbatch, `servetest render` or SLURM's spool.
    let case_env = env;
    let mut own = vec![(
        "SERVETEST".to_owned(),
        abs(input.servetest).display().to_string(),
    )];
    let case_dir = case_path
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default();
    own.push((
        "SERVETEST_CASE_DIR".to_owned(),
        case_dir.display().to_string(),
    ));
    // Relative paths in a case (environment.model_path) resolve against where servetest started.
    if let Ok(cwd) = std::env::current_dir() {
        own.push((
            crate::env::PROJECT_ROOT.to_owned(),
            cwd.display().to_string(),
        ));
    }
    if let Some(host) = profile.and_then(|p| p.serve_host.as_ref()) {
        own.push((crate::env::SERVE_HOST.to_owned(), host.clone()));
    }
    if let Some(net) = profile.and_then(|p| p.network.as_ref()) {
        own.push((crate::netscope::CLUSTER_NETWORK.to_owned(), net.clone()));
    }
    // The harness records the case's results; a `servetest bench` inside the job is part of them,
    // not a run of its own in the results history.
    own.push(("SERVETEST_DB".to_owned(), "off".to_owned()));
    let exports: Vec<String> = own
        .iter()
        .map(|(k, v)| format!("{k}={}", shell_words::quote(v)))
        .collect();
    let runtime = crate::secrets::runtime_root(profile.and_then(|p| p.runtime_dir.as_deref()));
    if !case_env.is_empty() {
        crate::secrets::check_outside(&runtime, input.out_root)
            .map_err(|r| value_err("environment", r))?;
    }
    let private_env = (!case_env.is_empty()).then(|| PrivateEnv {
        path: runtime
            .join(crate::secrets::run_dir_name(input.run_id))
            .join(format!("{}.env", case.name)),
        text: case_env
            .iter()
            .map(|(k, v)| format!("export {k}={}\n", shell_words::quote(v)))
            .collect(),
    });
    let env: Vec<(String, String)> = own.into_iter().chain(case_env).collect();
    let template = match crate::env::template_dir() {
        Some(d) => std::fs::read_to_string(d.join("job.sbatch.j2")).map_err(|source| {
            RenderError::Write {
                path: d.join("job.sbatch.j2").display().to_string(),
                source,
            }
        })?,
        None => TEMPLATE.to_owned(),
    };
    let mut jinja = minijinja::Environment::new();
    jinja.set_keep_trailing_newline(true);
    jinja.add_template_owned("job", template)?;
    let script = jinja.get_template("job")?.render(minijinja::context! {
        case_q => shell_words::quote(&case.name),
        sbatch => sbatch,
        work_dir_q => shell_words::quote(&work_dir.display().to_string()),
        exports => exports,
        env_file_q => private_env
            .as_ref()
            .map(|p| shell_words::quote(&p.path.display().to_string()).into_owned()),
        multinode => multinode,
        steps => step_views,
    })?;

    Ok(JobPlan {
        private_env,
        case: case.name.clone(),
        script_path: dir.join("job.sbatch"),
        time_limit: parse_slurm_time(&job_time).ok().flatten(),
        dir,
        work_dir,
        env,
        steps,
        overrides,
        script,
        slurm_out,
    })
}

fn show(v: &Option<String>) -> String {
    v.clone().unwrap_or_else(|| "(unset)".to_owned())
}

/// Environment values may be secrets: only names are shown.
impl std::fmt::Debug for JobPlan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let env: Vec<String> = self
            .env
            .iter()
            .map(|(k, _)| format!("{k}=<redacted>"))
            .collect();
        f.debug_struct("JobPlan")
            .field("case", &self.case)
            .field("dir", &self.dir)
            .field("work_dir", &self.work_dir)
            .field("time_limit", &self.time_limit)
            .field("env", &env)
            .field("steps", &self.steps)
            .field("overrides", &self.overrides)
            .field("script_path", &self.script_path)
            .finish()
    }
}

impl JobPlan {
    /// Writes the private environment file the script sources (SLURM; the local executor passes the
    /// values to its processes directly). Removed by the job itself once read, by the harness when
    /// the job ends, and at the end of the run.
    pub fn write_private_env(&self) -> Result<(), String> {
        match &self.private_env {
            Some(p) => crate::secrets::write_private_file(&p.path, &p.text),
            None => Ok(()),
        }
    }

    /// Removes the private environment file (the job ended, or was never submitted).
    pub fn remove_private_env(&self) {
        if let Some(p) = &self.private_env {
            crate::secrets::remove_private_file(&p.path);
        }
    }

    /// Writes the script (and the override log) into the case directory.
    pub fn write(&self) -> Result<(), RenderError> {
        let err = |path: &Path| {
            let path = path.display().to_string();
            move |source| RenderError::Write { path, source }
        };
        std::fs::create_dir_all(&self.dir).map_err(err(&self.dir))?;
        std::fs::create_dir_all(&self.work_dir).map_err(err(&self.work_dir))?;
        crate::fsutil::write_atomic(&self.script_path, self.script.as_bytes())
            .map_err(err(&self.script_path))?;
        if !self.overrides.is_empty() {
            let path = self.dir.join("overrides.txt");
            let text = self.overrides.join("\n") + "\n";
            crate::fsutil::write_atomic(&path, text.as_bytes()).map_err(err(&path))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::case::family;

    const NASTY: &str = "'; rm -rf x; ' $(touch PWNED) `touch PWNED2` \"q\" \\ *";

    fn load(dir: &Path, family_name: &str, stem: &str, yaml: &str) -> Case {
        let path = dir.join(format!("{family_name}/perf/{stem}.yaml"));
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, yaml).unwrap();
        let case = Case::load(&path, family(family_name).unwrap(), "perf");
        assert!(case.is_valid(), "{:?}", case.violations);
        case
    }

    fn yaml_quote(s: &str) -> String {
        serde_json::to_string(s).unwrap() // JSON strings are valid YAML double-quoted scalars
    }

    #[test]
    fn hostile_values_stay_inert_in_the_rendered_script() {
        let tmp = tempfile::tempdir().unwrap();
        let q = yaml_quote(NASTY);
        let yaml = format!(
            "slurm: {{partition: {q}, account: {q}, job_time: '1', extra_args: {ea}}}\n\
             environment: {{EVIL: {qn}}}\n\
             steps:\n  - name: s1\n    argv: [printf, '%s', {q}]\n  - name: s2\n    run: {q}\n",
            ea = yaml_quote(&format!("--comment={}", NASTY.replace('\n', " "))),
            qn = yaml_quote(&format!("{NASTY}\nline2")),
        );
        let stem = "evil'; touch PWNED3; '$(touch PWNED4)`x`";
        let case = load(tmp.path(), "script", stem, &yaml);
        let out = tmp.path().join("out");
        let plan = plan(&RenderInput {
            case: &case,
            out_root: &out,
            work_dir: None,
            profile: None,
            run_id: "r1",
            servetest: Path::new("/bin/servetest"),
        })
        .unwrap();
        plan.write().unwrap();
        plan.write_private_env().unwrap();
        let env_file = plan.private_env.as_ref().unwrap().path.clone();
        assert!(!env_file.starts_with(&out), "{}", env_file.display());
        assert!(!plan.script.contains("line2"), "a case value in the script");
        // Run the script with a stub `srun` that records each step's argv, one word per line.
        let stub = tmp.path().join("bin");
        std::fs::create_dir_all(&stub).unwrap();
        let record = tmp.path().join("argv.txt");
        std::fs::write(
            stub.join("srun"),
            format!(
                "#!/bin/bash\nout={}.$$\nfor a in \"$@\"; do printf '%s\\n---\\n' \"$a\" >> $out; done\nprintf 'EVIL=%s\\n===\\n' \"$EVIL\" >> $out\n",
                record.display(),
            ),
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(stub.join("srun"), std::fs::Permissions::from_mode(0o755))
            .unwrap();
        let status = std::process::Command::new("bash")
            .arg(&plan.script_path)
            .current_dir(tmp.path())
            .env("PATH", format!("{}:/usr/bin:/bin", stub.display()))
            .status()
            .unwrap();
        assert!(status.success());
        assert!(
            !env_file.exists(),
            "the job removes its environment file once read"
        );
        plan.remove_private_env();
        let _ = std::fs::remove_dir(env_file.parent().unwrap());
        for marker in ["PWNED", "PWNED2", "PWNED3", "PWNED4", "x"] {
            assert!(
                !tmp.path().join(marker).exists(),
                "{marker} was created: injection"
            );
            assert!(
                !plan.work_dir.join(marker).exists(),
                "{marker} was created: injection"
            );
        }
        let mut recorded = String::new();
        for entry in std::fs::read_dir(tmp.path()).unwrap() {
            let p = entry.unwrap().path();
            if p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("argv.txt.")
            {
                recorded.push_str(&std::fs::read_to_string(p).unwrap());
            }
        }
        let words: Vec<&str> = recorded.split("\n---\n").collect();
        assert!(
            words.contains(&NASTY),
            "argv word arrives intact: {recorded}"
        );
        assert!(
            recorded.contains(&format!("EVIL={NASTY}\nline2\n===")),
            "{recorded}"
        );
        // #SBATCH lines are single lines with quoted values.
        for line in plan.script.lines().filter(|l| l.starts_with("#SBATCH")) {
            assert!(!line.contains('\n'));
        }
        assert!(
            plan.script
                .contains("#SBATCH --partition=''\\''; rm -rf x;"),
            "{}",
            plan.script
        );
    }

    #[test]
    fn control_characters_in_sbatch_values_are_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let yaml = "slurm: {partition: \"a\\nrm -rf /\", job_time: '1'}\nsteps: [{name: s, run: 'true'}]\n";
        let case = load(tmp.path(), "script", "ctl", yaml);
        let err = plan(&RenderInput {
            case: &case,
            out_root: tmp.path(),
            work_dir: None,
            profile: None,
            run_id: "r",
            servetest: Path::new("servetest"),
        })
        .unwrap_err();
        assert!(err.to_string().contains("slurm.partition"), "{err}");
        assert!(err.to_string().contains("control character"), "{err}");
    }

    #[test]
    fn disagg_case_renders_roles_nodes_and_profile_overrides() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let path = root.join(
            "test_configs/disagg/perf/deepseek-r1-fp4_1k1k_ctx1_gen4_tep8_bs32_eplb0_mtp0_ccb-NIXL.yaml",
        );
        let case = Case::load(&path, family("disagg").unwrap(), "perf");
        let tmp = tempfile::tempdir().unwrap();
        let input = |profile| RenderInput {
            case: &case,
            out_root: tmp.path(),
            work_dir: None,
            profile,
            run_id: "r",
            servetest: Path::new("/usr/bin/servetest"),
        };
        let p = plan(&input(None)).unwrap();
        // ctx: 1 × TP4, gen: 4 × TP8 → 36 GPUs on 4-GPU nodes → 9 nodes; 5 servers + router + bench.
        assert!(p.script.contains("#SBATCH --nodes=9"), "{}", p.script);
        assert!(p.script.contains("#SBATCH --ntasks=7"));
        assert!(
            p.script.contains("#SBATCH --gres=gpu:4")
                || p.script.contains("#SBATCH '--gres=gpu:4'"),
            "{}",
            p.script
        );
        assert!(p.script.contains("--container-image='<container_image>'"));
        // worker_env_var travels in the private file, never in the script.
        assert!(!p.script.contains("TLLM_LOG_LEVEL"), "{}", p.script);
        let private = p.private_env.as_ref().expect("a private environment");
        assert!(private.text.contains("export TLLM_LOG_LEVEL=INFO"));
        assert!(p.script.contains(&format!(". {}", private.path.display())));
        let roles: Vec<&str> = p.steps.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(
            roles,
            [
                "CTX_0",
                "GEN_0",
                "GEN_1",
                "GEN_2",
                "GEN_3",
                "DISAGG_SERVER",
                "BENCHMARK"
            ]
        );
        // Each TP8 GEN worker owns 2 of the 9 nodes and runs there as 8 MPI ranks, 4 per node
        // (TensorRT-LLM's trtllm-llmapi-launch, as upstream's start_worker.sh under srun).
        assert!(p.overrides.is_empty(), "{:?}", p.overrides);
        assert!(p
            .script
            .contains("srun --nodes=2 --nodelist=\"$(servetest_nodelist 3 2)\" --overlap --gpus=8 --ntasks=8 --ntasks-per-node=4 --mpi=pmix --exact --job-name=GEN_1 "),
            "{}", p.script);
        // CTX_0 (TP4) fits one node: one task, trtllm-serve starts its own workers.
        assert!(
            p.script
                .contains("--gpus=4 --ntasks=1 --exact --job-name=CTX_0 "),
            "{}",
            p.script
        );
        assert!(
            p.script.contains("--job-name=DISAGG_SERVER ")
                && p.script.contains("servetest_nodelist 1 1")
        );

        let profile = ClusterProfile::load(&root.join("clusters/local.yaml")).unwrap();
        let p = plan(&input(Some(&profile))).unwrap();
        assert!(p.script.contains("#SBATCH --partition=local"));
        assert!(!p.script.contains("--account"));
        assert!(!p.script.contains("gres") && !p.script.contains("--gpus"));
        assert!(!p.script.contains("container-image"));
        assert!(p.script.contains("#SBATCH --nodes=1"));
        assert!(p.script.contains("#SBATCH --time=00:10:00"));
        assert!(
            p.script.contains("#SBATCH --no-requeue"),
            "a requeued job would rerun into its failed attempt's job directory"
        );
        let joined = p.overrides.join("\n");
        for needle in [
            "slurm.partition: <partition> -> local",
            "slurm.account: <account> -> (dropped)",
            "slurm.job_time: 02:00:00 -> 00:10:00",
            "nodes: 9 -> 1",
            "dropped --gres=gpu:4",
            "environment.container_image",
            "placement: GEN_0, GEN_1, GEN_2, GEN_3, DISAGG_SERVER share nodes on the 1-node allocation",
        ] {
            assert!(joined.contains(needle), "missing {needle}: {joined}");
        }
        // One node: no node lists in the script.
        assert!(!p.script.contains("servetest_nodelist"), "{}", p.script);
    }

    #[test]
    fn multinode_profile_places_ctx_and_gen_on_their_own_nodes() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let path = root.join(
            "test_configs/disagg/perf/multinode-tiny-llama_ctx1_tp1_bs8_gen1_tp1_bs8_ccb-STORAGE.yaml",
        );
        let case = Case::load(&path, family("disagg").unwrap(), "perf");
        let tmp = tempfile::tempdir().unwrap();
        let profile = ClusterProfile::load(&root.join("clusters/multinode.yaml")).unwrap();
        let p = plan(&RenderInput {
            case: &case,
            out_root: tmp.path(),
            work_dir: None,
            profile: Some(&profile),
            run_id: "r",
            servetest: Path::new("/usr/bin/servetest"),
        })
        .unwrap();
        assert!(p.script.contains("#SBATCH --nodes=2"), "{}", p.script);
        assert!(p.script.contains(
            "mapfile -t servetest_nodes < <(scontrol show hostnames \"$SLURM_JOB_NODELIST\")"
        ));
        for (role, first) in [
            ("CTX_0", 0),
            ("GEN_0", 1),
            ("DISAGG_SERVER", 1),
            ("BENCHMARK", 0),
        ] {
            let want = format!(
                "srun --nodes=1 --nodelist=\"$(servetest_nodelist {first} 1)\" --overlap --ntasks=1 --exact --job-name={role} "
            );
            assert!(p.script.contains(&want), "{role}: {}", p.script);
        }
        assert!(p.script.contains("export SERVETEST_SERVE_HOST=hostname"));
        assert!(p
            .script
            .contains("export SERVETEST_CLUSTER_NETWORK=10.231.0.0/24"));
        assert!(
            !p.overrides.iter().any(|o| o.starts_with("placement")),
            "{:?}",
            p.overrides
        );
    }
}
