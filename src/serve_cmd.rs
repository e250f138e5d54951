//! `servetest serve`: one engine server in the foreground until Ctrl-C/SIGTERM.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use servetest::env;
use servetest::serve::engine::{by_name, default_python, ServeSpec};
use servetest::serve::server::{free_port, Server};

pub struct Options {
    pub engine: String,
    pub model: PathBuf,
    pub host: String,
    pub port: u16,
    pub python: Option<PathBuf>,
    pub log: Option<PathBuf>,
    pub startup_timeout: Duration,
    pub ready_file: Option<PathBuf>,
    pub allow_remote: bool,
    pub server_env: Vec<String>,
    pub engine_args: Vec<String>,
}

pub fn run(opts: Options) -> Result<(), String> {
    let engine = by_name(&opts.engine)
        .ok_or_else(|| format!("unknown engine `{}` (known: vllm)", opts.engine))?;
    let loopback = opts
        .host
        .parse::<IpAddr>()
        .map(|ip| ip.is_loopback())
        .unwrap_or(opts.host == "localhost");
    if !loopback && !opts.allow_remote {
        return Err(format!(
            "refusing to listen on non-loopback address {} without --allow-remote",
            opts.host
        ));
    }
    if !opts.model.join("config.json").exists() {
        return Err(format!(
            "{} has no config.json; build the tiny model with scripts/make-tiny-model --out {}",
            opts.model.display(),
            opts.model.display()
        ));
    }
    let server_env = opts
        .server_env
        .iter()
        .map(|kv| match kv.split_once('=') {
            Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
            _ => Err(format!("--env expects NAME=VALUE, got `{kv}`")),
        })
        .collect::<Result<Vec<_>, _>>()?;
    let port = if opts.port == 0 {
        free_port(&opts.host).map_err(|e| e.to_string())?
    } else {
        opts.port
    };
    let spec = ServeSpec {
        model: opts.model,
        host: opts.host,
        port,
        python: opts
            .python
            .unwrap_or_else(|| default_python(&std::env::current_dir().unwrap_or_default())),
        extra_args: opts.engine_args,
    };
    let log = opts.log.unwrap_or_else(|| {
        env::output_path()
            .join("serve")
            .join(format!("{}.{port}.log", engine.name()))
    });
    let runtime =
        tokio::runtime::Runtime::new().map_err(|e| format!("failed to start runtime: {e}"))?;
    runtime.block_on(async move {
        eprintln!("servetest: starting {} (log: {})", spec.model.display(), log.display());
        let start = Server::start(engine.as_ref(), &spec, log, server_env, opts.startup_timeout);
        let mut server = tokio::select! {
            r = start => r.map_err(|e| e.to_string())?,
            _ = shutdown_signal() => return Err("interrupted before the server became healthy; stopped it".into()),
        };
        eprintln!(
            "servetest: {} ready at {} in {:.1} s (pgid {}; Ctrl-C stops it)",
            server.engine,
            server.base_url,
            server.startup.as_secs_f64(),
            server.pgid()
        );
        println!("{}", server.base_url);
        if let Some(path) = &opts.ready_file {
            std::fs::write(path, format!("{}\n", server.base_url))
                .map_err(|e| format!("failed to write {}: {e}", path.display()))?;
        }
        tokio::select! {
            status = server.exited() => {
                let status = status.map_err(|e| e.to_string())?;
                Err(format!("server exited on its own with {status}; log: {}", server.log_path().display()))
            }
            _ = shutdown_signal() => {
                eprintln!("servetest: stopping");
                server.stop(Duration::from_secs(15)).await.map_err(|e| e.to_string())?;
                Ok(())
            }
        }
    })
}

/// Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
