//! The BENCHMARK role: waits for every server, drives the load for each concurrency, and ends the job
//! by writing the status file. It watches the other roles the whole time, so a dead or hung server
//! fails the trial within seconds, naming the role, instead of at the SLURM time limit.

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use tokio::signal::unix::{signal, SignalKind};

use super::rendezvous::{RoleRecord, RoleState, Status};
use super::{Role, RoleContext, SERVER_GRACE};
use crate::disagg::schema::{BenchmarkClient, BenchmarkMode};
use crate::exec::process::{log_tail, CommandSpec, GroupChild};
use crate::serve::engine::ClientLaunch;
use crate::serve::server::TAIL_LINES;

const TICK: Duration = Duration::from_secs(1);
/// A running server that misses this many health checks in a row is taken as hung.
const HEALTH_MISSES: u32 = 3;
/// Health checks of running servers, while the load runs (a loaded CPU answers slowly).
const HEALTH_EVERY: Duration = Duration::from_secs(5);
const HEALTH_TIMEOUT: Duration = Duration::from_secs(10);
/// A loaded server still accepts connections at once (only its answer is slow): a server that
/// accepts none within this is unreachable (a dead node, a network partition).
const HEALTH_CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// The log the clients write to; the harness reads the metrics from it.
pub const CLIENT_LOG: &str = "benchmark.client.log";

/// How often BENCHMARK refreshes its record: the servers' proof that it is alive.
pub const HEARTBEAT_EVERY: Duration = Duration::from_secs(5);

pub async fn run(ctx: &RoleContext) -> Result<(), String> {
    // A heartbeat in BENCHMARK.json: if this process dies without writing the status (SIGKILL, OOM),
    // the servers notice the silence and stop, so the job ends instead of idling to its time limit.
    let mut record = RoleRecord {
        role: Role::Benchmark.to_string(),
        host: ctx.host.clone(),
        port: 0,
        bootstrap_port: None,
        log: ctx.rdv.dir().join(CLIENT_LOG),
        state: RoleState::Ready,
        reason: None,
        pid: Some(std::process::id()),
        updated: 0.0,
    };
    ctx.rdv.publish(&mut record)?;
    let rdv = ctx.rdv.clone();
    let beat = tokio::spawn(async move {
        loop {
            tokio::time::sleep(HEARTBEAT_EVERY).await;
            let _ = rdv.publish(&mut record);
        }
    });
    let result = drive(ctx).await;
    beat.abort();
    let status = match &result {
        Ok(()) => Status::Done,
        Err(reason) => Status::Failed(reason.clone()),
    };
    // Written first, on every path: it is what stops the other roles.
    ctx.rdv.set_status(&status)?;
    if let Some(mut rec) = ctx.rdv.read(&Role::Benchmark.to_string()) {
        rec.state = if result.is_ok() {
            RoleState::Stopped
        } else {
            RoleState::Failed
        };
        rec.reason = result.as_ref().err().cloned();
        let _ = ctx.rdv.publish(&mut rec);
    }
    result
}

fn serving_roles(ctx: &RoleContext) -> Vec<Role> {
    let mut roles = Role::workers(&ctx.spec);
    roles.push(Role::DisaggServer);
    roles
}

fn failure(role: &RoleRecord, what: &str) -> String {
    format!(
        "{} {what}: {}; last {TAIL_LINES} lines of {}:\n{}",
        role.role,
        role.reason.as_deref().unwrap_or("no reason given"),
        role.log.display(),
        log_tail(&role.log, TAIL_LINES)
    )
}

pub(super) struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl Signals {
    fn new() -> Result<Signals, String> {
        Ok(Signals {
            term: signal(SignalKind::terminate()).map_err(|e| e.to_string())?,
            int: signal(SignalKind::interrupt()).map_err(|e| e.to_string())?,
        })
    }

    /// Sleeps one tick; `Err` when a signal came instead.
    async fn tick(&mut self) -> Result<(), String> {
        tokio::select! {
            _ = tokio::time::sleep(TICK) => Ok(()),
            _ = self.term.recv() => Err("cancelled (SIGTERM)".into()),
            _ = self.int.recv() => Err("interrupted (SIGINT)".into()),
        }
    }
}

async fn drive(ctx: &RoleContext) -> Result<(), String> {
    let mut signals = Signals::new()?;
    let http = reqwest::Client::builder()
        .timeout(HEALTH_TIMEOUT)
        .connect_timeout(HEALTH_CONNECT_TIMEOUT)
        .no_proxy()
        .build()
        .map_err(|e| e.to_string())?;
    let records = wait_until_healthy(ctx, &http, &mut signals).await?;
    let router = records
        .get(&Role::DisaggServer)
        .expect("the router is a serving role")
        .clone();
    // Accuracy cases measure accuracy only; perf cases may add it with enable_accuracy_test.
    let accuracy = ctx.category == "accuracy" || ctx.spec.accuracy.enable_accuracy_test;
    // Upstream's accuracy files set `enable_benchmark: false`; one that sets it true gets the load
    // phase too, as upstream's job would run it.
    let levels = if ctx.category == "accuracy" && ctx.spec.benchmark.enable_benchmark != Some(true)
    {
        Vec::new()
    } else {
        ctx.spec.benchmark.concurrency_list.levels()
    };
    let client_log = ctx.rdv.dir().join(CLIENT_LOG);
    for level in levels {
        let command = client_command(ctx, &router, level)?;
        eprintln!("BENCHMARK: concurrency {level}: {}", command.display_line());
        let what = format!("concurrency {level}");
        run_client(ctx, &http, &mut signals, &command, &client_log, &what).await?;
        if ctx.spec.benchmark.client == BenchmarkClient::Engine {
            // The engine scripts do not print the marker the log parser splits blocks on.
            append(
                &client_log,
                &format!("Benchmark with concurrency {level} done\n"),
            )?;
        }
    }
    if accuracy {
        super::accuracy::run(ctx, &http, &mut signals, &router).await?;
    }
    Ok(())
}

fn append(path: &Path, text: &str) -> Result<(), String> {
    use std::io::Write;
    std::fs::File::options()
        .create(true)
        .append(true)
        .open(path)
        .and_then(|mut f| f.write_all(text.as_bytes()))
        .map_err(|e| format!("failed to write {}: {e}", path.display()))
}

/// Waits until every worker and the router answer their health check. Fails early when a role
/// reports failure or a server log shows a fatal line; at the deadline, names who is not healthy.
async fn wait_until_healthy(
    ctx: &RoleContext,
    http: &reqwest::Client,
    signals: &mut Signals,
) -> Result<HashMap<Role, RoleRecord>, String> {
    let roles = serving_roles(ctx);
    let started = Instant::now();
    let mut healthy: HashMap<Role, RoleRecord> = HashMap::new();
    loop {
        for &role in &roles {
            if healthy.contains_key(&role) {
                continue;
            }
            let Some(rec) = ctx.rdv.read(&role.to_string()) else {
                continue;
            };
            if matches!(rec.state, RoleState::Failed | RoleState::Stopped) {
                return Err(failure(&rec, "failed before becoming healthy"));
            }
            let recent = log_tail(&rec.log, TAIL_LINES);
            if let Some(p) = ctx
                .engine
                .fatal_patterns()
                .iter()
                .find(|p| recent.contains(**p))
            {
                return Err(format!(
                    "{role} logged a fatal error ({p:?}) before becoming healthy; last {TAIL_LINES} lines of {}:\n{recent}",
                    rec.log.display()
                ));
            }
            let url = ctx.health_url(&rec.host, rec.port);
            if http
                .get(&url)
                .send()
                .await
                .is_ok_and(|r| r.status().is_success())
            {
                eprintln!(
                    "BENCHMARK: {role} healthy at {url} ({:.1} s)",
                    started.elapsed().as_secs_f64()
                );
                healthy.insert(role, rec);
            }
        }
        if healthy.len() == roles.len() {
            return Ok(healthy);
        }
        if started.elapsed() > ctx.server_timeout {
            let mut out = format!(
                "servers not healthy within {} s (benchmark.server_timeout):",
                ctx.server_timeout.as_secs()
            );
            for role in roles.iter().filter(|r| !healthy.contains_key(r)) {
                match ctx.rdv.read(&role.to_string()) {
                    None => out.push_str(&format!("\n{role}: never published its address")),
                    Some(rec) => out.push_str(&format!(
                        "\n{role}: {} at {}; last {TAIL_LINES} lines of {}:\n{}",
                        serde_json::to_value(rec.state)
                            .ok()
                            .and_then(|v| v.as_str().map(str::to_owned))
                            .unwrap_or_default(),
                        ctx.health_url(&rec.host, rec.port),
                        rec.log.display(),
                        log_tail(&rec.log, TAIL_LINES)
                    )),
                }
            }
            return Err(out);
        }
        signals.tick().await?;
    }
}

fn num_prompts(ctx: &RoleContext, level: u64) -> u64 {
    ctx.spec
        .benchmark
        .num_prompts
        .unwrap_or_else(|| level * ctx.spec.benchmark.multi_round.unwrap_or(10))
        .max(1)
}

/// Lengths from `benchmark` (or the older top-level `sequence`); ctx_only sends one output token.
fn lengths(ctx: &RoleContext) -> Result<(u64, u64), String> {
    let b = &ctx.spec.benchmark;
    let seq = ctx.spec.sequence.as_ref();
    let input = b
        .input_length
        .or(seq.map(|s| s.input_length))
        .ok_or("benchmark.input_length is not set")?;
    let output = b
        .output_length
        .or(seq.map(|s| s.output_length))
        .ok_or("benchmark.output_length is not set")?;
    Ok(match b.mode {
        BenchmarkMode::CtxOnly => (input, 1),
        _ => (input, output),
    })
}

fn client_command(
    ctx: &RoleContext,
    router: &RoleRecord,
    level: u64,
) -> Result<CommandSpec, String> {
    let (input, output) = lengths(ctx)?;
    let prompts = num_prompts(ctx, level);
    let result = ctx.rdv.dir().join(format!("bench.con{level}.json"));
    let b = &ctx.spec.benchmark;
    let spread = LengthSpread::of(
        b.benchmark_ratio.unwrap_or(0.0),
        b.use_nv_sa_benchmark.unwrap_or(false),
        &ctx.category,
    );
    Ok(match ctx.spec.benchmark.client {
        BenchmarkClient::Native => {
            let base = format!(
                "http://{}",
                crate::serve::engine::host_port(&router.host, router.port)
            );
            let mut args: Vec<String> = [
                "bench",
                "--base-url",
                &base,
                "--model",
                &ctx.model.display().to_string(),
                "--dataset",
                "random",
                "--input-len",
                &spread.length(input).to_string(),
                "--output-len",
                &spread.length(output).to_string(),
                "--range-ratio",
                &spread.ratio.to_string(),
                "--num-prompts",
                &prompts.to_string(),
                "--concurrency-list",
                &level.to_string(),
                "--percentiles",
                "50,90,99",
                "--save-result",
                &ctx.rdv.dir().join("bench.json").display().to_string(),
                "--label",
                &ctx.case,
            ]
            .map(str::to_owned)
            .to_vec();
            if !ctx.spec.benchmark.streaming {
                args.push("--no-stream".into());
            }
            if crate::netscope::client_needs_allow_remote(&router.host)? {
                // The router runs on a cluster node the case's own job allocated. With a cluster
                // network in the profile, the client itself checks the router is inside it.
                args.push("--allow-remote".into());
            }
            CommandSpec {
                program: ctx.tools.servetest.clone(),
                args,
                env: Vec::new(),
                cwd: Some(ctx.rdv.dir().to_path_buf()),
            }
        }
        BenchmarkClient::Engine => ctx.engine.engine_client(&ClientLaunch {
            model: &ctx.model,
            host: &router.host,
            port: router.port,
            input_len: input,
            output_len: output,
            num_prompts: prompts,
            concurrency: level,
            streaming: ctx.spec.benchmark.streaming,
            result: &result,
            tools: &ctx.tools,
        }),
    })
}

/// `benchmark.benchmark_ratio` as the native client's length spread, as upstream uses it: with
/// `use_nv_sa_benchmark` its SA client draws lengths from [r·L, L] (the same interval as midpoint
/// L(1+r)/2 with ratio (1−r)/(1+r)); in perf-sanity TensorRT-LLM's client draws from
/// [L(1−r), L(1+r)] (as `servetest bench --range-ratio`; 0 = fixed); upstream's other jobs never pass
/// it to their client, so lengths stay fixed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct LengthSpread {
    /// Factor applied to the case's lengths (the interval's midpoint).
    midpoint: f64,
    pub ratio: f64,
}

impl LengthSpread {
    pub fn of(benchmark_ratio: f64, sa_client: bool, category: &str) -> LengthSpread {
        if sa_client {
            LengthSpread {
                midpoint: (1.0 + benchmark_ratio) / 2.0,
                ratio: (1.0 - benchmark_ratio) / (1.0 + benchmark_ratio),
            }
        } else {
            LengthSpread {
                midpoint: 1.0,
                ratio: if category == "perf-sanity" {
                    benchmark_ratio
                } else {
                    0.0
                },
            }
        }
    }

    pub fn length(&self, len: u64) -> u64 {
        ((len as f64 * self.midpoint).round() as u64).max(1)
    }
}

/// Runs one client to completion while watching every serving role.
pub(super) async fn run_client(
    ctx: &RoleContext,
    http: &reqwest::Client,
    signals: &mut Signals,
    command: &CommandSpec,
    log: &Path,
    what: &str,
) -> Result<(), String> {
    let mut child =
        GroupChild::spawn("benchmark-client", command, log).map_err(|e| e.to_string())?;
    let roles = serving_roles(ctx);
    let mut misses: HashMap<Role, u32> = HashMap::new();
    let mut last_health = Instant::now();
    let outcome = loop {
        tokio::select! {
            status = child.wait() => {
                let status = status.map_err(|e| e.to_string())?;
                break if status.success() {
                    Ok(())
                } else {
                    Err(format!(
                        "the benchmark client exited with {status} ({what}); last {TAIL_LINES} lines of {}:\n{}",
                        log.display(),
                        log_tail(log, TAIL_LINES)
                    ))
                };
            }
            tick = signals.tick() => {
                if let Err(e) = tick {
                    break Err(e);
                }
                // A role that died publishes `failed` within half a second.
                if let Some(rec) = roles
                    .iter()
                    .filter_map(|r| ctx.rdv.read(&r.to_string()))
                    .find(|r| matches!(r.state, RoleState::Failed | RoleState::Stopped))
                {
                    break Err(failure(&rec, &format!("failed during the benchmark ({what})")));
                }
                if last_health.elapsed() >= HEALTH_EVERY {
                    last_health = Instant::now();
                    if let Some(e) = check_health(ctx, http, &roles, &mut misses).await {
                        break Err(format!("{e} ({what})"));
                    }
                }
            }
        }
    };
    let _ = child.terminate(SERVER_GRACE).await;
    outcome
}

/// One health check of every serving role; `Some(reason)` once a role missed `HEALTH_MISSES` in a row.
async fn check_health(
    ctx: &RoleContext,
    http: &reqwest::Client,
    roles: &[Role],
    misses: &mut HashMap<Role, u32>,
) -> Option<String> {
    // All roles at once: a partitioned node's roles each take the connect timeout, and checking
    // them in turn would delay the verdict by that much per role.
    let mut checks = Vec::new();
    for &role in roles {
        let rec = ctx.rdv.read(&role.to_string())?;
        checks.push(async move {
            let url = ctx.health_url(&rec.host, rec.port);
            let failure = match http.get(&url).send().await {
                Ok(r) if r.status().is_success() => None,
                Ok(r) => Some(format!("HTTP {}", r.status())),
                // Unreachable (no connection at all) reads differently from slow or broken answers.
                Err(e) if e.is_connect() && e.is_timeout() => Some(format!(
                    "unreachable: no connection to {} within {} s",
                    crate::serve::engine::host_port(&rec.host, rec.port),
                    HEALTH_CONNECT_TIMEOUT.as_secs()
                )),
                Err(e) if e.is_connect() => Some(format!(
                    "unreachable: connecting to {} failed: {}",
                    crate::serve::engine::host_port(&rec.host, rec.port),
                    std::error::Error::source(&e).map_or_else(|| e.to_string(), |s| s.to_string())
                )),
                Err(e) if e.is_timeout() => {
                    Some(format!("no answer within {} s", HEALTH_TIMEOUT.as_secs()))
                }
                Err(e) => Some(e.to_string()),
            };
            (role, rec, url, failure)
        });
    }
    for (role, rec, url, failure) in futures_util::future::join_all(checks).await {
        let n = misses.entry(role).or_default();
        *n = if failure.is_none() { 0 } else { *n + 1 };
        if *n >= HEALTH_MISSES {
            return Some(format!(
                "{role} stopped answering {url} ({HEALTH_MISSES} health checks in a row failed; last: {}); last {TAIL_LINES} lines of {}:\n{}",
                failure.unwrap_or_default(),
                rec.log.display(),
                log_tail(&rec.log, TAIL_LINES)
            ));
        }
    }
    None
}

#[cfg(test)]
mod spread_tests {
    use super::LengthSpread;

    #[test]
    fn benchmark_ratio_spreads_lengths_as_each_upstream_client_does() {
        // TensorRT-LLM's client: [L(1−r), L(1+r)], 0 = fixed.
        let trt = LengthSpread::of(0.0, false, "perf-sanity");
        assert_eq!((trt.length(1024), trt.ratio), (1024, 0.0));
        let trt = LengthSpread::of(0.5, false, "perf-sanity");
        assert_eq!((trt.length(1000), trt.ratio), (1000, 0.5));
        // Upstream's perf/accuracy jobs pass the ratio only to the SA client.
        let plain = LengthSpread::of(0.8, false, "perf");
        assert_eq!((plain.length(1000), plain.ratio), (1000, 0.0));
        // SA client: [r·L, L]. r = 0.8, L = 1000 → [800, 1000] = 900 ± 1/9.
        let sa = LengthSpread::of(0.8, true, "perf");
        let mid = sa.length(1000) as f64;
        assert_eq!(mid, 900.0);
        assert!((mid * (1.0 - sa.ratio) - 800.0).abs() < 1e-9);
        assert!((mid * (1.0 + sa.ratio) - 1000.0).abs() < 1e-9);
        // SA with r = 1: fixed lengths.
        let fixed = LengthSpread::of(1.0, true, "perf");
        assert_eq!((fixed.length(1024), fixed.ratio), (1024, 0.0));
    }
}
