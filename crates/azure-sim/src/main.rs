//! The `azure-sim` binary: configuration from flags, then serve until Ctrl-C.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;

// The hot path allocates many small JSON values; mimalloc is much faster at that than glibc.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Local emulator of the Azure OpenAI and Azure AI Search REST APIs.
///
/// Every resource and search service is served under http://LISTEN/r/{name}; the control
/// API (no authentication) is under http://LISTEN/_sim/ (health, resources,
/// search-services, faults, requests, clock, reset).
#[derive(Debug, Parser)]
#[command(name = "azure-sim", version)]
struct Args {
    /// Address to listen on (port 0 picks a free port; see --ready-file).
    #[arg(long, env = "AZURE_SIM_LISTEN", default_value = "127.0.0.1:8090")]
    listen: SocketAddr,

    /// Configuration file (JSON, or TOML if it ends in .toml) defining resources, search
    /// services, rate-limit windows and request-log capacity.
    #[arg(long, env = "AZURE_SIM_CONFIG")]
    config: Option<PathBuf>,

    /// Directory where state persists across restarts (in memory when absent): search
    /// indexes, and resources or services added through the control API (registry.json).
    /// Overrides `data_dir` of the configuration file.
    #[arg(long, env = "AZURE_SIM_DATA_DIR")]
    data_dir: Option<PathBuf>,

    /// Once listening, write the bound address (e.g. 127.0.0.1:43817) to this file, for
    /// harnesses that start the emulator on port 0.
    #[arg(long, env = "AZURE_SIM_READY_FILE")]
    ready_file: Option<PathBuf>,

    /// Capacity of the request log (`GET /_sim/requests`); 0 disables it (benchmarks).
    /// Overrides `request_log_capacity` of the configuration file.
    #[arg(long, env = "AZURE_SIM_REQUEST_LOG")]
    request_log: Option<usize>,

    /// Worker threads of the runtime (default: number of CPUs).
    #[arg(long, env = "AZURE_SIM_WORKERS")]
    workers: Option<usize>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    if let Some(workers) = args.workers {
        runtime.worker_threads(workers.max(1));
    }
    runtime.enable_all().build()?.block_on(run(args))
}

async fn run(args: Args) -> anyhow::Result<()> {
    let mut config = match &args.config {
        Some(path) => azure_sim::SimConfig::from_file(path)?,
        None => azure_sim::SimConfig::default(),
    };
    if args.data_dir.is_some() {
        config.data_dir = args.data_dir.clone();
    }
    if args.request_log.is_some() {
        config.request_log_capacity = args.request_log;
    }
    let sim = azure_sim::Sim::start_on(config, args.listen).await?;
    if let Some(path) = &args.ready_file {
        // Write then rename, so a watcher never reads a half-written address.
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, sim.addr().to_string())
            .with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))?;
    }
    tracing::info!(addr = %sim.addr(), "azure-sim listening");
    shutdown_signal().await?;
    sim.shutdown().await;
    Ok(())
}

/// Ctrl-C, or SIGTERM (what `docker stop` sends).
async fn shutdown_signal() -> anyhow::Result<()> {
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            result = tokio::signal::ctrl_c() => result?,
            _ = term.recv() => {}
        }
        Ok(())
    }
    #[cfg(not(unix))]
    {
        tokio::signal::ctrl_c().await?;
        Ok(())
    }
}
