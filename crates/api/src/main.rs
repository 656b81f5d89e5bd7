use bulkhead_api::{telemetry, Application, Config};
use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::parse();
    telemetry::init(&config.log, config.log_format);
    let app = Application::build(config).await?;
    tracing::info!(address = %app.local_addr()?, "bulkhead is serving");
    app.run_until_stopped().await
}
