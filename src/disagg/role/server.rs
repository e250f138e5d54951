//! The serving roles: CTX/GEN workers and the DISAGG_SERVER router. Each publishes where it serves,
//! starts its server in its own process group, and supervises it until BENCHMARK's status file says
//! the job is over — or the server dies (published as `failed` with the exit status), or the step is
//! signalled. The server's group is stopped on every path.

use std::time::{Duration, Instant};

use tokio::signal::unix::{signal, SignalKind};

use super::rendezvous::{RoleRecord, RoleState};
use super::{Role, RoleContext, SERVER_GRACE};
use crate::case::common::parse_env_assignments;
use crate::exec::process::{CommandSpec, GroupChild};
use crate::serve::engine::{Launch, RouterLaunch, WorkerAddr, WorkerLaunch};
use crate::serve::server::free_port;

const TICK: Duration = Duration::from_millis(500);

fn env_pairs(text: Option<&str>, key: &str) -> Result<Vec<(String, String)>, String> {
    match text {
        Some(t) => parse_env_assignments(t).map_err(|r| format!("environment.{key}: {r}")),
        None => Ok(Vec::new()),
    }
}

fn write_files(launch: &Launch) -> Result<(), String> {
    for (path, text) in &launch.files {
        crate::fsutil::write_atomic(path, text.as_bytes())
            .map_err(|e| format!("failed to write {}: {e}", path.display()))?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}

/// Where this process sits in its SLURM step: the step's node count and this task's rank (1 and 0
/// outside SLURM, or for a one-task step).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StepRank {
    pub nodes: u64,
    pub rank: u64,
}

impl StepRank {
    pub fn from_env(get: impl Fn(&str) -> Option<String>) -> StepRank {
        let num = |name: &str, default: u64| {
            get(name)
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(default)
        };
        StepRank {
            nodes: num("SLURM_STEP_NUM_NODES", 1).max(1),
            rank: num("SLURM_PROCID", 0),
        }
    }

    /// A rank of a multi-node worker other than the first: it joins rank 0's MPI world and does
    /// none of the role's bookkeeping (publishing, health, the benchmark's end).
    pub fn follower(&self) -> bool {
        self.nodes > 1 && self.rank > 0
    }
}

/// A follower rank: the same command as rank 0 (trtllm-llmapi-launch makes it an MPI worker), its
/// own log beside rank 0's, stopped with the step; its exit status is the step's to see.
async fn follow(ctx: &RoleContext, command: &CommandSpec, rank: u64) -> Result<(), String> {
    let log = ctx
        .server_log(ctx.role)
        .with_extension(format!("rank{rank}.log"));
    let mut sigterm = signal(SignalKind::terminate()).map_err(|e| e.to_string())?;
    let mut child = GroupChild::spawn(&ctx.role.to_string(), command, &log)
        .map_err(|e| format!("{} rank {rank}: failed to start: {e}", ctx.role))?;
    let status = tokio::select! {
        status = child.wait() => status.map_err(|e| e.to_string())?,
        _ = sigterm.recv() => child.terminate(SERVER_GRACE).await.map_err(|e| e.to_string())?,
    };
    if status.success() {
        Ok(())
    } else {
        Err(format!(
            "{} rank {rank} exited with {status} (log {})",
            ctx.role,
            log.display()
        ))
    }
}

pub async fn run_worker(ctx: &RoleContext, index: u64) -> Result<(), String> {
    let side = ctx.role.side().expect("a worker role");
    let step = StepRank::from_env(|k| std::env::var(k).ok());
    let config = match side {
        crate::disagg::name::Side::Ctx => &ctx.spec.worker_config.ctx,
        crate::disagg::name::Side::Gen => &ctx.spec.worker_config.gen,
    };
    let port = free_port(&ctx.host).map_err(|e| e.to_string())?;
    let bootstrap_port = if ctx.engine.needs_bootstrap_port(side) {
        Some(free_port(&ctx.host).map_err(|e| e.to_string())?)
    } else {
        None
    };
    let mut launch = ctx.engine.worker(&WorkerLaunch {
        case: &ctx.case,
        side,
        index,
        model: &ctx.model,
        host: &ctx.host,
        port,
        bootstrap_port,
        config,
        dir: ctx.rdv.dir(),
        tools: &ctx.tools,
        nodes: step.nodes,
    })?;
    launch.command.env.extend(env_pairs(
        ctx.spec.environment.worker_env_var.as_deref(),
        "worker_env_var",
    )?);
    if ctx.spec.benchmark.mode == crate::disagg::schema::BenchmarkMode::GenOnly {
        if ctx.engine.name() != "trtllm" {
            return Err(format!(
                "benchmark.mode gen_only needs TensorRT-LLM's generation-only benchmark mode; \
                 engine {} has none (use e2e or ctx_only)",
                ctx.engine.name()
            ));
        }
        launch
            .command
            .env
            .push(("TRTLLM_DISAGG_BENCHMARK_GEN_ONLY".into(), "1".into()));
    }
    write_files(&launch)?;
    let mut numa = ctx.spec.slurm.numa_bind == Some(true);
    if numa && crate::fsutil::which("numactl").is_none() {
        eprintln!("slurm.numa_bind: numactl is not installed here; starting without NUMA binding");
        numa = false;
    }
    if numa {
        // Upstream binds memory to NUMA nodes 0 and 1.
        let mut args = vec!["-m".to_owned(), "0,1".to_owned()];
        args.push(launch.command.program.display().to_string());
        args.append(&mut launch.command.args);
        launch.command.program = "numactl".into();
        launch.command.args = args;
    }
    if ctx.spec.profiling.nsys_on {
        nsys_wrap(ctx, side, &mut launch.command)?;
    }
    if step.follower() {
        return follow(ctx, &launch.command, step.rank).await;
    }
    let record = RoleRecord {
        role: ctx.role.to_string(),
        host: ctx.host.clone(),
        port,
        bootstrap_port,
        log: ctx.server_log(ctx.role),
        state: RoleState::Starting,
        reason: None,
        pid: None,
        updated: 0.0,
    };
    supervise(ctx, launch.command, record).await
}

/// `profiling.nsys_on`: the worker runs under Nsight Systems as upstream's start_worker.sh runs it:
/// capture gated by the CUDA profiler API, which the engine opens and closes at the side's
/// iteration range (`TLLM_PROFILE_START_STOP`); the report goes to the job directory. Without
/// `nsys` on this node the role fails rather than run unprofiled.
fn nsys_wrap(
    ctx: &RoleContext,
    side: crate::disagg::name::Side,
    command: &mut CommandSpec,
) -> Result<(), String> {
    let Some(nsys) = crate::fsutil::which("nsys") else {
        return Err(format!(
            "profiling.nsys_on is true but `nsys` (Nsight Systems) is not installed on {}; \
             install it or set nsys_on: false",
            ctx.host
        ));
    };
    let range = crate::disagg::schema::profile_range(&ctx.spec.profiling, side);
    command.env.extend(
        [
            ("TLLM_PROFILE_START_STOP", range.as_str()),
            ("TLLM_PROFILE_RECORD_GC", "1"),
            ("TLLM_NVTX_DEBUG", "1"),
            ("NSYS_MPI_STORE_TEAMS_PER_RANK", "1"),
        ]
        .map(|(k, v)| (k.to_owned(), v.to_owned())),
    );
    let output = ctx.rdv.dir().join(format!("nsys_worker_{}", ctx.role));
    let mut args: Vec<String> = [
        "profile",
        "-o",
        &output.display().to_string(),
        "-f",
        "true",
        "-t",
        "cuda,nvtx,python-gil",
        "-c",
        "cudaProfilerApi",
        "--capture-range-end=stop",
    ]
    .map(str::to_owned)
    .to_vec();
    args.push(command.program.display().to_string());
    args.append(&mut command.args);
    command.program = nsys;
    command.args = args;
    Ok(())
}

pub async fn run_router(ctx: &RoleContext) -> Result<(), String> {
    let workers = Role::workers(&ctx.spec);
    let mut sigterm = signal(SignalKind::terminate()).map_err(|e| e.to_string())?;
    let deadline = Instant::now() + ctx.server_timeout;
    // Workers publish their address before their servers are up; the router waits for servers itself.
    let records = loop {
        if ctx.rdv.status().is_some() {
            return Err("the benchmark ended before every worker had published".into());
        }
        let found: Vec<Option<RoleRecord>> = workers
            .iter()
            .map(|r| ctx.rdv.read(&r.to_string()))
            .collect();
        if let Some(failed) = found
            .iter()
            .flatten()
            .find(|r| r.state == RoleState::Failed)
        {
            return Err(format!(
                "not starting the router: {} failed: {}",
                failed.role,
                failed.reason.as_deref().unwrap_or("no reason given")
            ));
        }
        if found.iter().all(Option::is_some) {
            break found.into_iter().flatten().collect::<Vec<_>>();
        }
        if Instant::now() > deadline {
            let missing: Vec<String> = workers
                .iter()
                .zip(&found)
                .filter(|(_, f)| f.is_none())
                .map(|(r, _)| r.to_string())
                .collect();
            return Err(format!(
                "workers {} did not publish their address within {:?}",
                missing.join(", "),
                ctx.server_timeout
            ));
        }
        tokio::select! {
            _ = tokio::time::sleep(TICK) => {}
            _ = sigterm.recv() => return Err("terminated before the router started".into()),
        }
    };
    let addr = |r: &RoleRecord| WorkerAddr {
        host: r.host.clone(),
        port: r.port,
        bootstrap_port: r.bootstrap_port,
    };
    let (ctx_addrs, gen_addrs): (Vec<_>, Vec<_>) = records.iter().partition(|r| {
        r.role
            .parse::<Role>()
            .is_ok_and(|role| matches!(role, Role::Ctx(_)))
    });
    let ctx_addrs: Vec<WorkerAddr> = ctx_addrs.into_iter().map(addr).collect();
    let gen_addrs: Vec<WorkerAddr> = gen_addrs.into_iter().map(addr).collect();
    let port = free_port(&ctx.host).map_err(|e| e.to_string())?;
    let metrics_port = free_port(&ctx.host).map_err(|e| e.to_string())?;
    let mut launch = ctx.engine.router(&RouterLaunch {
        case: &ctx.case,
        host: &ctx.host,
        port,
        metrics_port,
        ctx: &ctx_addrs,
        gen: &gen_addrs,
        // Longer than BENCHMARK's wait, so that a timeout is reported by the role that knows why.
        worker_timeout: ctx.server_timeout.as_secs() + 60,
        dir: ctx.rdv.dir(),
        tools: &ctx.tools,
    })?;
    launch.command.env.extend(env_pairs(
        ctx.spec.environment.server_env_var.as_deref(),
        "server_env_var",
    )?);
    write_files(&launch)?;
    let record = RoleRecord {
        role: ctx.role.to_string(),
        host: ctx.host.clone(),
        port,
        bootstrap_port: None,
        log: ctx.server_log(ctx.role),
        state: RoleState::Starting,
        reason: None,
        pid: None,
        updated: 0.0,
    };
    supervise(ctx, launch.command, record).await
}

/// Starts `command`, publishes `ready` once its health check answers, and keeps it running until
/// the status file appears (clean stop), the server exits (published as failed) or a signal comes.
async fn supervise(
    ctx: &RoleContext,
    command: CommandSpec,
    mut record: RoleRecord,
) -> Result<(), String> {
    let mut sigterm = signal(SignalKind::terminate()).map_err(|e| e.to_string())?;
    let mut sigint = signal(SignalKind::interrupt()).map_err(|e| e.to_string())?;
    // Published before the start: a BENCHMARK that sees nothing yet keeps waiting.
    ctx.rdv.publish(&mut record)?;
    eprintln!("{}: starting {}", record.role, command.display_line());
    let mut child = match GroupChild::spawn(&record.role, &command, &record.log) {
        Ok(c) => c,
        Err(e) => {
            record.state = RoleState::Failed;
            record.reason = Some(e.to_string());
            ctx.rdv.publish(&mut record)?;
            return Err(e.to_string());
        }
    };
    record.pid = Some(child.pgid() as u32);
    ctx.rdv.publish(&mut record)?;
    let health = ctx.health_url(&record.host, record.port);
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .no_proxy()
        .build()
        .map_err(|e| e.to_string())?;
    let started = Instant::now();
    let outcome: Result<(), String> = loop {
        tokio::select! {
            status = child.wait() => {
                let status = status.map_err(|e| e.to_string())?;
                let reason = format!("server exited with {status} (log {})", record.log.display());
                record.state = RoleState::Failed;
                record.reason = Some(reason.clone());
                ctx.rdv.publish(&mut record)?;
                break Err(reason);
            }
            _ = sigterm.recv() => break Err("terminated by SIGTERM".into()),
            _ = sigint.recv() => break Err("interrupted by SIGINT".into()),
            _ = tokio::time::sleep(TICK) => {
                if ctx.rdv.status().is_some() {
                    break Ok(());
                }
                if let Some(silence) = benchmark_silence(ctx) {
                    break Err(format!(
                        "BENCHMARK went silent ({} s without a heartbeat and no status): stopping",
                        silence.as_secs()
                    ));
                }
                if record.state == RoleState::Starting
                    && http.get(&health).send().await.is_ok_and(|r| r.status().is_success())
                {
                    record.state = RoleState::Ready;
                    ctx.rdv.publish(&mut record)?;
                    eprintln!("{}: ready at {} after {:.1} s", record.role, health, started.elapsed().as_secs_f64());
                }
            }
        }
    };
    let _ = child.terminate(SERVER_GRACE).await;
    if record.state != RoleState::Failed {
        record.state = RoleState::Stopped;
        record.reason = outcome.as_ref().err().cloned();
        ctx.rdv.publish(&mut record)?;
    }
    eprintln!("{}: server stopped", record.role);
    outcome
}

/// BENCHMARK refreshes its record every few seconds; this long without it means it died.
const BENCHMARK_SILENCE: Duration = Duration::from_secs(30);

/// `Some(how long)` when BENCHMARK published once and has been silent longer than allowed.
fn benchmark_silence(ctx: &RoleContext) -> Option<Duration> {
    let rec = ctx.rdv.read(&Role::Benchmark.to_string())?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .ok()?
        .as_secs_f64();
    let silence = Duration::from_secs_f64((now - rec.updated).max(0.0));
    (silence > BENCHMARK_SILENCE).then_some(silence)
}

#[cfg(test)]
mod tests {
    use super::StepRank;

    #[test]
    fn only_later_ranks_of_a_multi_node_step_follow() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            StepRank::from_env(move |k| {
                pairs
                    .iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| (*v).to_owned())
            })
        };
        let outside = env(&[]);
        assert_eq!(outside, StepRank { nodes: 1, rank: 0 });
        assert!(!outside.follower());
        assert!(!env(&[("SLURM_STEP_NUM_NODES", "2"), ("SLURM_PROCID", "0")]).follower());
        assert!(env(&[("SLURM_STEP_NUM_NODES", "2"), ("SLURM_PROCID", "5")]).follower());
        // One node: trtllm-serve starts its own workers; no rank is a follower.
        assert!(!env(&[("SLURM_STEP_NUM_NODES", "1"), ("SLURM_PROCID", "3")]).follower());
    }
}
