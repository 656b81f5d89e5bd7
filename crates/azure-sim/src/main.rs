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
/// search-services, faults, requests, clock, reset, entra). With --tls-listen the same API
/// is also served over https, and the Entra ID identity endpoints (token, discovery, IMDS,
/// App Service identity) are served on both listeners.
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

    /// Also serve the same API over HTTPS on this address (port 0 picks a free port; see
    /// --tls-ready-file). Entra clients need it: MSAL refuses a non-https authority and
    /// azure-core refuses to send bearer tokens over http.
    #[arg(long, env = "AZURE_SIM_TLS_LISTEN")]
    tls_listen: Option<SocketAddr>,

    /// Write the PEM of the CA certificate to trust for the TLS listener here (it is made
    /// at every start; its server certificate names localhost, 127.0.0.1 and ::1).
    #[arg(long, env = "AZURE_SIM_TLS_CERT_FILE", requires = "tls_listen")]
    tls_cert_file: Option<PathBuf>,

    /// Once listening, write the TLS listener's bound address to this file.
    #[arg(long, env = "AZURE_SIM_TLS_READY_FILE", requires = "tls_listen")]
    tls_ready_file: Option<PathBuf>,

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
    // The signing key is made once per process; make it now rather than on the first token
    // request.
    let started = std::time::Instant::now();
    if let Err(error) = azure_sim::entra::keys::SigningKey::shared() {
        anyhow::bail!("cannot make the token signing key: {error}");
    }
    tracing::info!(
        elapsed_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        "token signing key ready"
    );
    let sim = match args.tls_listen {
        Some(tls) => azure_sim::Sim::start_on_with_tls(config, args.listen, tls).await?,
        None => azure_sim::Sim::start_on(config, args.listen).await?,
    };
    // The certificate first: a harness waiting for the ready files may read it at once.
    if let (Some(path), Some(pem)) = (&args.tls_cert_file, sim.tls_ca_pem()) {
        write_atomically(path, pem)?;
    }
    if let (Some(path), Some(addr)) = (&args.tls_ready_file, sim.tls_addr()) {
        write_atomically(path, &addr.to_string())?;
    }
    if let Some(path) = &args.ready_file {
        write_atomically(path, &sim.addr().to_string())?;
    }
    tracing::info!(addr = %sim.addr(), tls_addr = ?sim.tls_addr(), "azure-sim listening");
    shutdown_signal().await?;
    sim.shutdown().await;
    Ok(())
}

/// Writes then renames, so a watcher never reads a half-written file.
fn write_atomically(path: &std::path::Path, contents: &str) -> anyhow::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, contents).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))?;
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
