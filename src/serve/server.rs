//! A started server: spawned in its own process group, healthy within a deadline or failed with the
//! reason and its log tail, stopped as a group.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::ExitStatus;
use std::time::{Duration, Instant};

use crate::exec::process::{log_tail_from, CommandSpec, GroupChild};
use crate::serve::engine::{Engine, ServeSpec};

/// How many log lines an error shows.
pub const TAIL_LINES: usize = 50;

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("failed to start {engine}: {source}")]
    Spawn {
        engine: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{engine} server exited with {status} before becoming healthy; last log lines ({log}):\n{tail}")]
    Exited {
        engine: String,
        status: ExitStatus,
        log: PathBuf,
        tail: String,
    },
    #[error("{engine} server logged a fatal error before becoming healthy ({pattern:?}); last log lines ({log}):\n{tail}")]
    Fatal {
        engine: String,
        pattern: String,
        log: PathBuf,
        tail: String,
    },
    #[error("{engine} server did not answer {url} with 200 within {timeout:?}; last log lines ({log}):\n{tail}")]
    Timeout {
        engine: String,
        url: String,
        timeout: Duration,
        log: PathBuf,
        tail: String,
    },
    #[error("failed to find a free port on {host}: {source}")]
    Port {
        host: String,
        #[source]
        source: std::io::Error,
    },
}

/// A free TCP port on `host` for a server that binds it later, chosen outside the kernel's ephemeral
/// range. The window before the server binds can be long (vllm-router binds only once its workers
/// are healthy, ~40 s here), and meanwhile vLLM's workers take dozens of ephemeral ports: a port the
/// OS handed out (bind to port 0) was taken in CI before the router got to it. A random port below
/// the ephemeral range is only taken by another explicit bind to that same port.
/// `SERVETEST_PORT_RANGE=LO-HI` restricts it to that range (a firewall's open ports, say); with no
/// free port there it is an error rather than a port outside the range.
pub fn free_port(host: &str) -> Result<u16, ServeError> {
    if let Some(text) = std::env::var(crate::env::PORT_RANGE)
        .ok()
        .filter(|t| !t.trim().is_empty())
    {
        let range = parse_port_range(&text).map_err(|reason| ServeError::Port {
            host: host.to_owned(),
            source: std::io::Error::new(std::io::ErrorKind::InvalidInput, reason),
        })?;
        use rand::Rng;
        let mut rng = rand::rng();
        for _ in 0..256 {
            let port = rng.random_range(range.clone());
            if TcpListener::bind((host, port)).is_ok() {
                return Ok(port);
            }
        }
        return Err(ServeError::Port {
            host: host.to_owned(),
            source: std::io::Error::new(
                std::io::ErrorKind::AddrInUse,
                format!("no free port found in {} ({text})", crate::env::PORT_RANGE),
            ),
        });
    }
    let (first_ephemeral, _) = ephemeral_range();
    let below = SERVICE_PORTS_FROM..first_ephemeral;
    if below.len() >= 1000 {
        use rand::Rng;
        let mut rng = rand::rng();
        for _ in 0..64 {
            let port = rng.random_range(below.clone());
            if TcpListener::bind((host, port)).is_ok() {
                return Ok(port);
            }
        }
    }
    // No room below the ephemeral range (or all tries taken): let the OS pick.
    TcpListener::bind((host, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|source| ServeError::Port {
            host: host.to_owned(),
            source,
        })
}

/// `LO-HI` (inclusive), 1024 ≤ LO ≤ HI.
pub fn parse_port_range(text: &str) -> Result<std::ops::RangeInclusive<u16>, String> {
    let bad = || format!("`{text}` is not a port range LO-HI (1024 ≤ LO ≤ HI ≤ 65535)");
    let (lo, hi) = text.trim().split_once('-').ok_or_else(bad)?;
    let (lo, hi): (u16, u16) = (
        lo.trim().parse().map_err(|_| bad())?,
        hi.trim().parse().map_err(|_| bad())?,
    );
    if lo < 1024 || lo > hi {
        return Err(bad());
    }
    Ok(lo..=hi)
}

/// Service ports are picked from here up to the ephemeral range (below: well-known and registered
/// services more often bound).
const SERVICE_PORTS_FROM: u16 = 20000;

/// The kernel's ephemeral port range (`/proc/sys/net/ipv4/ip_local_port_range`), Linux's default
/// when unreadable.
fn ephemeral_range() -> (u16, u16) {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|t| {
            let mut it = t.split_whitespace().map(|n| n.parse::<u16>().ok());
            Some((it.next()??, it.next()??))
        })
        .unwrap_or((32768, 60999))
}

#[derive(Debug)]
pub struct Server {
    pub engine: &'static str,
    pub base_url: String,
    pub command: CommandSpec,
    pub startup: Duration,
    child: GroupChild,
}

/// How long an engine that logged a fatal pattern may go on writing (its traceback) before it is
/// stopped; it is stopped sooner once its log is quiet for half a second.
const FATAL_SETTLE: Duration = Duration::from_secs(5);

impl Server {
    /// Starts `engine` and waits until its health endpoint answers 200, the process dies, a fatal
    /// pattern shows in its log, or `timeout` passes — whichever comes first.
    pub async fn start(
        engine: &dyn Engine,
        spec: &ServeSpec,
        log: PathBuf,
        env: Vec<(String, String)>,
        timeout: Duration,
    ) -> Result<Server, ServeError> {
        let mut command = engine.serve_command(spec);
        command.env.extend(env);
        Server::start_command(engine, command, &spec.host, spec.port, log, timeout).await
    }

    /// As `start`, for a command the engine adapter already built (with its config files written)
    /// that serves on `host:port`.
    pub async fn start_command(
        engine: &dyn Engine,
        command: CommandSpec,
        host: &str,
        port: u16,
        log: PathBuf,
        timeout: Duration,
    ) -> Result<Server, ServeError> {
        let name = engine.name();
        let started = Instant::now();
        let mut child =
            GroupChild::spawn(name, &command, &log).map_err(|source| ServeError::Spawn {
                engine: name.to_owned(),
                source,
            })?;
        let host = if host == "0.0.0.0" { "127.0.0.1" } else { host };
        let base_url = format!("http://{}", crate::serve::engine::host_port(host, port));
        let health = format!("{base_url}{}", engine.health_path());
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .no_proxy()
            .build()
            .expect("http client");
        // Only what this server wrote: an earlier run's lines in the same log (`--log` appends) must
        // not read as this run's fatal error.
        let from = child.log_start();
        let tail = || log_tail_from(&log, from, TAIL_LINES);
        loop {
            if let Ok(Some(status)) = child.try_exited() {
                let _ = child.terminate(Duration::from_secs(1)).await;
                return Err(ServeError::Exited {
                    engine: name.to_owned(),
                    status,
                    log: log.clone(),
                    tail: tail(),
                });
            }
            if let Ok(resp) = client.get(&health).send().await {
                if resp.status().is_success() {
                    return Ok(Server {
                        engine: name,
                        base_url,
                        command,
                        startup: started.elapsed(),
                        child,
                    });
                }
            }
            let recent = tail();
            if let Some(pattern) = engine.fatal_patterns().iter().find(|p| recent.contains(*p)) {
                // A traceback's first line is the pattern; its last line (the exception) is what
                // the user needs: let the engine finish writing it (or exit) before stopping it.
                let mut size = log.metadata().map_or(0, |m| m.len());
                let settle = Instant::now();
                while settle.elapsed() < FATAL_SETTLE {
                    if matches!(child.try_exited(), Ok(Some(_))) {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    let now = log.metadata().map_or(0, |m| m.len());
                    if now == size {
                        break;
                    }
                    size = now;
                }
                let _ = child.terminate(Duration::from_secs(10)).await;
                return Err(ServeError::Fatal {
                    engine: name.to_owned(),
                    pattern: (*pattern).to_owned(),
                    log: log.clone(),
                    tail: tail(),
                });
            }
            if started.elapsed() > timeout {
                let _ = child.terminate(Duration::from_secs(10)).await;
                return Err(ServeError::Timeout {
                    engine: name.to_owned(),
                    url: health,
                    timeout,
                    log: log.clone(),
                    tail: tail(),
                });
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    pub fn pgid(&self) -> i32 {
        self.child.pgid()
    }

    pub fn log_path(&self) -> &std::path::Path {
        self.child.log_path()
    }

    /// Resolves when the server process exits on its own.
    pub async fn exited(&mut self) -> std::io::Result<ExitStatus> {
        self.child.wait().await
    }

    /// Stops the whole process group (SIGTERM, `grace`, SIGKILL).
    pub async fn stop(mut self, grace: Duration) -> std::io::Result<ExitStatus> {
        self.child.terminate(grace).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_ranges_parse_and_bad_ones_are_named() {
        assert_eq!(parse_port_range("30000-30100").unwrap(), 30000..=30100);
        assert_eq!(parse_port_range(" 40000 - 40000 ").unwrap(), 40000..=40000);
        for bad in ["80-90", "3000", "5000-4000", "a-b", "1024-70000"] {
            assert!(parse_port_range(bad).unwrap_err().contains(bad), "{bad}");
        }
    }

    #[test]
    fn free_ports_are_bindable_and_outside_the_ephemeral_range() {
        let (first, last) = ephemeral_range();
        assert!(first <= last);
        for _ in 0..20 {
            let port = free_port("127.0.0.1").unwrap();
            if first.saturating_sub(SERVICE_PORTS_FROM) >= 1000 {
                assert!((SERVICE_PORTS_FROM..first).contains(&port), "{port}");
            }
            TcpListener::bind(("127.0.0.1", port)).unwrap();
        }
    }
}
