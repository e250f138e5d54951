//! `servetest serve`: one engine server in the foreground until Ctrl-C/SIGTERM.

use std::path::PathBuf;
use std::time::Duration;

use servetest::env;
use servetest::serve::engine::{by_name, default_python, ServeSpec};
use servetest::serve::server::{free_port, Server};

#[derive(clap::Args, Debug)]
pub struct Options {
    /// Engine adapter (vllm; trtllm and sglang render commands but need GPUs).
    #[arg(long, default_value = "vllm")]
    pub engine: String,
    /// Model directory (e.g. models/tiny from scripts/make-tiny-model).
    #[arg(long)]
    pub model: PathBuf,
    /// Address or host name to bind (loopback or $SERVETEST_CLUSTER_NETWORK unless --allow-remote).
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// 0 picks a free port.
    #[arg(long, default_value_t = 0)]
    pub port: u16,
    /// Engine virtualenv interpreter (default: $SERVETEST_ENGINE_PYTHON, .venv/engine/bin/python).
    #[arg(long)]
    pub python: Option<PathBuf>,
    /// Server log (default: $OUTPUT_PATH/serve/ENGINE.PORT.log).
    #[arg(long)]
    pub log: Option<PathBuf>,
    /// Seconds to wait for the health endpoint.
    #[arg(long = "startup-timeout", default_value_t = 600, value_name = "SECS")]
    pub startup_timeout_s: u64,
    /// Write the base URL here once healthy (for scripts).
    #[arg(long)]
    pub ready_file: Option<PathBuf>,
    /// Allow binding an address outside loopback and the cluster network.
    #[arg(long)]
    pub allow_remote: bool,
    /// Extra environment for the server, NAME=VALUE (repeatable).
    #[arg(long = "env", value_name = "NAME=VALUE")]
    pub server_env: Vec<String>,
    /// Arguments after `--`, passed to the engine verbatim.
    #[arg(last = true)]
    pub engine_args: Vec<String>,
}

pub fn run(opts: Options) -> Result<(), String> {
    let engine = by_name(&opts.engine)
        .ok_or_else(|| format!("unknown engine `{}` (known: vllm)", opts.engine))?;
    servetest::netscope::check(&opts.host, opts.allow_remote, "listen on")?;
    // `[::1]` as in a URL: the engine takes the bare address.
    let opts = Options {
        host: servetest::netscope::unbracket(&opts.host).to_owned(),
        ..opts
    };
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
        let start = Server::start(engine.as_ref(), &spec, log, server_env, Duration::from_secs(opts.startup_timeout_s));
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
