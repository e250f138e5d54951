//! `servetest role`: the program every step of a disaggregated job runs (upstream runs pytest here).
//! `DISAGG_SERVING_TYPE` says which role the step plays:
//!
//! - `CTX_i` / `GEN_i`: publish host and port, write the engine config, start the server, report
//!   `ready`, and keep it up until BENCHMARK writes its status file.
//! - `DISAGG_SERVER`: wait until every worker has published, start the router in front of them.
//! - `BENCHMARK`: wait until every server answers its health check (failing early on a dead role or
//!   a fatal log line), run the load for each concurrency, write `done` or `failed: reason`.
//!
//! Every role stops its server's whole process group on every exit path (status file, SIGTERM from
//! scancel or the local executor, its own failure).

mod accuracy;
pub mod benchmark;
pub use accuracy::ACCURACY_FILE;
pub use benchmark::CLIENT_LOG;
pub mod rendezvous;
mod server;

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::case::Case;
use crate::disagg::name::Side;
use crate::disagg::schema::DisaggSpec;
use crate::serve::engine::{self, Engine, Tools};
use rendezvous::Rendezvous;

/// Default seconds servers get to become healthy (upstream waits up to 1 h on big models).
pub const DEFAULT_SERVER_TIMEOUT: u64 = 1800;
/// SIGTERM → SIGKILL grace for a role's server. Shorter than the local executor's grace for the
/// role itself, so the role always outlives its server.
pub const SERVER_GRACE: Duration = Duration::from_secs(4);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    Ctx(u64),
    Gen(u64),
    DisaggServer,
    Benchmark,
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Role::Ctx(i) => write!(f, "CTX_{i}"),
            Role::Gen(i) => write!(f, "GEN_{i}"),
            Role::DisaggServer => f.write_str("DISAGG_SERVER"),
            Role::Benchmark => f.write_str("BENCHMARK"),
        }
    }
}

impl std::str::FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Role, String> {
        let index = |rest: &str| {
            rest.parse::<u64>().map_err(|_| {
                format!("`{s}`: expected CTX_<n>, GEN_<n>, DISAGG_SERVER or BENCHMARK")
            })
        };
        match s {
            "DISAGG_SERVER" => Ok(Role::DisaggServer),
            "BENCHMARK" => Ok(Role::Benchmark),
            _ => match s.split_once('_') {
                Some(("CTX", rest)) => index(rest).map(Role::Ctx),
                Some(("GEN", rest)) => index(rest).map(Role::Gen),
                _ => Err(format!(
                    "`{s}`: expected CTX_<n>, GEN_<n>, DISAGG_SERVER or BENCHMARK"
                )),
            },
        }
    }
}

impl Role {
    /// Every role of a case, in the order the job script starts them.
    pub fn all(spec: &DisaggSpec) -> Vec<Role> {
        let mut roles: Vec<Role> = (0..spec.hardware.num_ctx_servers).map(Role::Ctx).collect();
        roles.extend((0..spec.hardware.num_gen_servers).map(Role::Gen));
        roles.extend([Role::DisaggServer, Role::Benchmark]);
        roles
    }

    pub fn workers(spec: &DisaggSpec) -> Vec<Role> {
        Role::all(spec)
            .into_iter()
            .filter(|r| r.side().is_some())
            .collect()
    }

    pub fn side(self) -> Option<Side> {
        match self {
            Role::Ctx(_) => Some(Side::Ctx),
            Role::Gen(_) => Some(Side::Gen),
            _ => None,
        }
    }
}

/// Everything a role needs, resolved once at start.
pub struct RoleContext {
    pub case: String,
    /// `perf`, `accuracy`, …: accuracy cases run lm-eval instead of the load.
    pub category: String,
    /// Where servetest started (relative paths in the case, lm-eval's local tasks).
    pub root: PathBuf,
    pub spec: DisaggSpec,
    pub role: Role,
    pub rdv: Rendezvous,
    pub engine: Box<dyn Engine>,
    pub tools: Tools,
    /// The address servers bind and advertise.
    pub host: String,
    pub model: PathBuf,
    pub server_timeout: Duration,
}

impl RoleContext {
    pub fn server_log(&self, role: Role) -> PathBuf {
        self.rdv
            .dir()
            .join(format!("{}.0.{role}.log", self.engine.log_name()))
    }

    pub fn health_url(&self, host: &str, port: u16) -> String {
        format!(
            "http://{}{}",
            engine::host_port(host, port),
            self.engine.health_path()
        )
    }
}

/// Loads the case from its path, refusing an invalid one or another family.
fn load_case(path: &Path) -> Result<(String, String, DisaggSpec), String> {
    let case = Case::load_file(path)?;
    // Role records and the benchmark status quote server logs: mask the case's secret values.
    crate::secrets::mask_case(&case);
    crate::secrets::mask_process_environment();
    match case.disagg() {
        Some(spec) => Ok((case.name.clone(), case.category.clone(), spec.clone())),
        None => Err(format!(
            "{}: `servetest role` runs disagg/wideep cases only",
            path.display()
        )),
    }
}

/// Entry point of `servetest role`. `case_out` is the case's output directory; the job's own
/// directory (`job-<id>`) is created under it.
pub fn main(case_path: &Path, case_out: &Path, role: Option<&str>) -> Result<(), String> {
    let role_text = role
        .map(str::to_owned)
        .or_else(crate::env::serving_type)
        .ok_or("no role: set DISAGG_SERVING_TYPE (CTX_<n>, GEN_<n>, DISAGG_SERVER, BENCHMARK) or pass --role")?;
    let role: Role = role_text.parse()?;
    let (case, category, spec) = load_case(case_path)?;
    let known = Role::all(&spec);
    if !known.contains(&role) {
        return Err(format!(
            "{case}: role {role} does not exist in this case (roles: {})",
            known
                .iter()
                .map(Role::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    let rdv = Rendezvous::for_this_job(case_out);
    std::fs::create_dir_all(rdv.dir())
        .map_err(|e| format!("failed to create {}: {e}", rdv.dir().display()))?;
    let root = crate::env::project_dir();
    let model_text = spec
        .environment
        .model_path
        .clone()
        .ok_or_else(|| format!("{case}: environment.model_path is not set"))?;
    let model = {
        let p = PathBuf::from(&model_text);
        if p.is_absolute() {
            p
        } else {
            root.join(p)
        }
    };
    let server_timeout = Duration::from_secs(
        spec.benchmark
            .server_timeout
            .unwrap_or(DEFAULT_SERVER_TIMEOUT),
    );
    let ctx = RoleContext {
        engine: engine::for_kind(spec.environment.engine),
        tools: Tools::resolve(&root),
        host: crate::netscope::serve_host()?,
        case,
        category,
        root,
        spec,
        role,
        rdv,
        model,
        server_timeout,
    };
    eprintln!(
        "servetest role {role}: case {}, engine {}, job dir {}",
        ctx.case,
        ctx.engine.name(),
        ctx.rdv.dir().display()
    );
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let result = runtime.block_on(async {
        match role {
            Role::Ctx(i) | Role::Gen(i) => server::run_worker(&ctx, i).await,
            Role::DisaggServer => server::run_router(&ctx).await,
            Role::Benchmark => benchmark::run(&ctx).await,
        }
    });
    match &result {
        Ok(()) => eprintln!("servetest role {role}: finished"),
        Err(e) => eprintln!("servetest role {role}: FAILED: {e}"),
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn role_names_round_trip_and_bad_ones_are_named() {
        for r in [
            Role::Ctx(0),
            Role::Gen(12),
            Role::DisaggServer,
            Role::Benchmark,
        ] {
            assert_eq!(r.to_string().parse::<Role>(), Ok(r));
        }
        for bad in ["CTX", "GEN_x", "ctx_0", "ROUTER", ""] {
            let e = bad.parse::<Role>().unwrap_err();
            assert!(e.contains(&format!("`{bad}`")), "{e}");
        }
    }
}
