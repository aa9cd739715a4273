use anyhow::Context;
use ingest_gateway::config::Config;
use ingest_gateway::Application;
use ingest_types::runtime;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::from_env().context("reading configuration")?;
    runtime::init_logging(config.log_format);
    tracing::info!(?config, "starting ingest-gateway");
    let app = Application::build(config)
        .await
        .context("starting the gateway")?;
    app.run_until_stopped(runtime::shutdown_on_signal())
        .await
        .context("serving")?;
    Ok(())
}
