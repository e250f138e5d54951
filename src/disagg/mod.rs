//! The disagg and wideep families: upstream TensorRT-LLM's disaggregated-serving cases
//! (`test_configs/{disagg,wideep}/{perf,accuracy,perf-sanity,stress}/*.yaml`). The schema and its
//! rules (`schema`, `validate`, `name`), the job's roles (`role`: CTX/GEN servers, the router, the
//! benchmark client) and the verdict (`results`: benchmark status, client log, accuracy scores).

pub mod name;
mod results;
pub mod role;
pub mod schema;
pub mod validate;

use std::sync::Arc;

use crate::case::common::parse_env_assignments;
use crate::case::load;
use crate::case::Case;
use crate::check::logparse::Block;
use crate::family::{Family, Loaded, Spec};
use crate::plan::render::{JobParts, JobSite, PlannedStep, SlurmFields};
use crate::run::RunContext;
use schema::{BenchmarkMode, DisaggSpec, EngineKind};

/// `perf-sanity` and `stress` exist upstream and run like `perf`; any other directory name is an
/// error (a typo must not silently create a new category).
const CATEGORIES: &[&str] = &["perf", "accuracy", "perf-sanity", "stress"];

pub static DISAGG: Family = Family {
    name: "disagg",
    categories: CATEGORIES,
    load,
    in_process: None,
};

pub static WIDEEP: Family = Family {
    name: "wideep",
    categories: CATEGORIES,
    load,
    in_process: None,
};

fn load(text: &str, category: &str, stem: &str) -> Loaded {
    let (spec, mut violations) =
        load::parse_spec_sections::<DisaggSpec>(text, schema::known_fields, schema::SECTIONS);
    let Some(spec) = spec else {
        return (None, violations);
    };
    violations.extend(validate::validate(&spec, category));
    violations.extend(name::check(stem, &spec, name::strict()));
    (Some(Arc::new(spec)), violations)
}

impl Spec for DisaggSpec {
    fn model(&self) -> Option<&str> {
        Some(&self.metadata.model_name)
    }

    fn supported_gpus(&self) -> Option<&[String]> {
        self.metadata.supported_gpus.as_deref()
    }

    fn total_gpus(&self) -> u64 {
        self.hardware.num_ctx_servers * self.worker_config.ctx.gpus()
            + self.hardware.num_gen_servers * self.worker_config.gen.gpus()
    }

    /// `worker_env_var`, `server_env_var` and `accuracy.env_var`.
    fn environment(&self) -> Vec<(String, String)> {
        let mut out: Vec<(String, String)> = Vec::new();
        for text in [
            &self.environment.worker_env_var,
            &self.environment.server_env_var,
        ]
        .into_iter()
        .flatten()
        {
            out.extend(parse_env_assignments(text).unwrap_or_default());
        }
        out.extend(self.accuracy.env_var.clone());
        out
    }

    /// One step per role (CTX_i, GEN_i, DISAGG_SERVER, BENCHMARK), each `servetest role` with
    /// `DISAGG_SERVING_TYPE`, on the nodes upstream's submit script gives it.
    fn job(&self, site: &JobSite) -> Result<JobParts, (String, String)> {
        let env = match &self.environment.worker_env_var {
            Some(text) => parse_env_assignments(text)
                .map_err(|r| ("environment.worker_env_var".to_owned(), r))?,
            None => Vec::new(),
        };
        let (placed, nodes) = crate::plan::placement::disagg(self);
        let fields = SlurmFields {
            partition: Some(self.slurm.partition.clone()),
            account: Some(self.slurm.account.clone()),
            job_time: self.slurm.job_time.clone(),
            extra_args: self.slurm.extra_args.clone(),
            nodes,
            gpus_per_node: self.hardware.gpus_per_node.max(1),
            container_image: self.environment.container_image.clone(),
            container_mounts: self.environment.container_mount.clone(),
            containers: true,
        };
        let steps = placed
            .into_iter()
            .map(|(role, nodes)| {
                let gpus = match role {
                    role::Role::Ctx(_) => self.worker_config.ctx.gpus(),
                    role::Role::Gen(_) => self.worker_config.gen.gpus(),
                    _ => 0,
                };
                let name = role.to_string();
                let multi_node_engine = self.environment.engine == EngineKind::Trtllm && gpus > 0;
                PlannedStep {
                    ranks: multi_node_engine.then_some(gpus),
                    log: site.dir.join(format!("{}.log", name.to_lowercase())),
                    argv: vec![
                        "env".into(),
                        format!("DISAGG_SERVING_TYPE={name}"),
                        site.servetest.display().to_string(),
                        "role".into(),
                        "--case".into(),
                        site.case_path.display().to_string(),
                        "--out".into(),
                        site.dir.display().to_string(),
                    ],
                    name,
                    ntasks: 1,
                    nodes,
                    gpus,
                }
            })
            .collect();
        Ok(JobParts {
            fields,
            env,
            steps,
            serving_roles: true,
        })
    }

    fn progress(&self, job_dir: &std::path::Path) -> Option<String> {
        results::progress(job_dir)
    }

    fn reported_failure(&self, run: &RunContext, case: &Case, job: &str) -> Option<String> {
        results::reported_failure(run, case, job)
    }

    fn results(&self, run: &RunContext, case: &Case, job: &str) -> Result<Vec<Block>, String> {
        results::collect(run, case, self, job)
    }

    /// Perf-sanity cases keep upstream's pytest id (`PERF_TEST_*`).
    fn report_id(&self, case: &Case) -> Option<(String, String)> {
        (case.category == "perf-sanity").then(|| {
            let stem = case.path.file_stem().unwrap_or_default().to_string_lossy();
            crate::case::testlist::perf_sanity_junit(
                &stem,
                self.benchmark.mode == BenchmarkMode::GenOnly,
            )
        })
    }
}
