//! The `berth` command line: parse arguments, load everything, bind, serve.

use anyhow::Context as _;
use berth::app::App;
use berth::manifest::Manifest;
use berth::runtime::{EngineConfig, Runtime};
use berth::server::{self, ServerConfig};
use berth::store::SqliteStore;
use clap::{Parser, Subcommand};
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// Serve microservices as sandboxed WebAssembly components.
#[derive(Parser)]
#[command(name = "berth", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Load the manifest's components and serve them over HTTP.
    Serve(ServeArgs),
}

#[derive(clap::Args)]
struct ServeArgs {
    /// Address to listen on; port 0 picks a free port. Once ready, berth
    /// prints `listening on http://IP:PORT` to stdout.
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Directory for the durable store (created if missing).
    #[arg(long, default_value = "./data")]
    data: PathBuf,
    /// Manifest (TOML) naming the components and their routes. Without it,
    /// berth serves its built-in users and orders services.
    #[arg(long)]
    manifest: Option<PathBuf>,
    /// Most open connections at once.
    #[arg(long, default_value_t = 1024)]
    max_connections: usize,
    /// Most requests handled at once; beyond it requests get 503 with Retry-After.
    #[arg(long, default_value_t = 256)]
    max_in_flight: usize,
    /// Largest request body in bytes; larger requests get 413.
    #[arg(long, default_value_t = 1024 * 1024)]
    max_body_bytes: usize,
    /// Seconds to let in-flight requests finish after SIGTERM or Ctrl-C.
    #[arg(long, default_value_t = 20)]
    drain_timeout_secs: u64,
}

fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(args) => serve(args),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn serve(args: ServeArgs) -> anyhow::Result<()> {
    // Validate everything before binding: a bad manifest or component never
    // opens the port.
    let manifest = match &args.manifest {
        Some(path) => Manifest::from_file(path)?,
        None => Manifest::builtin(),
    };
    let max_memory = manifest
        .components
        .values()
        .map(|c| c.max_memory_bytes)
        .max()
        .unwrap_or(0);
    let engine_config = EngineConfig {
        max_instances: u32::try_from(args.max_in_flight).unwrap_or(u32::MAX).max(1),
        max_memory_bytes: max_memory,
    };
    let runtime = Runtime::new(&engine_config)?;
    let store = Arc::new(SqliteStore::open(&args.data)?);
    let app = Arc::new(App::load(&manifest, &runtime, store.clone())?);
    let config = ServerConfig {
        max_connections: args.max_connections.max(1),
        max_in_flight: args.max_in_flight.max(1),
        max_body_bytes: args.max_body_bytes,
        drain_timeout: Duration::from_secs(args.drain_timeout_secs),
        ..ServerConfig::default()
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    rt.block_on(async {
        let listener = tokio::net::TcpListener::bind(args.listen).await.with_context(|| {
            format!(
                "cannot listen on {}: is another server using it? Pick another address with --listen, or port 0 for any free port",
                args.listen
            )
        })?;
        let addr = listener.local_addr()?;
        println!("listening on http://{addr}");
        std::io::stdout().flush()?;
        server::serve(listener, app, config, shutdown_signal()).await
    })?;
    store.close();
    tracing::info!("stopped");
    Ok(())
}

/// Resolves on SIGTERM or Ctrl-C.
async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(
            tokio::signal::unix::SignalKind::terminate(),
        ) {
            Ok(term) => term,
            Err(e) => {
                tracing::warn!(error = %e, "cannot watch SIGTERM; only Ctrl-C stops the server");
                let _ = ctrl_c.await;
                return;
            }
        };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
