//! A started server: spawned in its own process group, healthy within a deadline or failed with the
//! reason and its log tail, stopped as a group.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::ExitStatus;
use std::time::{Duration, Instant};

use crate::exec::process::{log_tail, CommandSpec, GroupChild};
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

/// A free TCP port on `host` (the OS picks; there is a short window before the server binds it).
pub fn free_port(host: &str) -> Result<u16, ServeError> {
    TcpListener::bind((host, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|source| ServeError::Port {
            host: host.to_owned(),
            source,
        })
}

#[derive(Debug)]
pub struct Server {
    pub engine: &'static str,
    pub base_url: String,
    pub command: CommandSpec,
    pub startup: Duration,
    child: GroupChild,
}

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
        let name = engine.name();
        let started = Instant::now();
        let mut child =
            GroupChild::spawn(name, &command, &log).map_err(|source| ServeError::Spawn {
                engine: name.to_owned(),
                source,
            })?;
        let host = if spec.host == "0.0.0.0" {
            "127.0.0.1"
        } else {
            &spec.host
        };
        let base_url = format!("http://{host}:{}", spec.port);
        let health = format!("{base_url}{}", engine.health_path());
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .no_proxy()
            .build()
            .expect("http client");
        let tail = || log_tail(&log, TAIL_LINES);
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
            let recent = log_tail(&log, TAIL_LINES);
            if let Some(pattern) = engine.fatal_patterns().iter().find(|p| recent.contains(*p)) {
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
