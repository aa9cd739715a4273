use anyhow::Context;
use ingest_types::runtime;
use ingest_worker::config::Config;
use ingest_worker::Worker;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::from_env().context("reading configuration")?;
    runtime::init_logging(config.log_format);
    tracing::info!(?config, "starting ingest-worker");
    let worker = Worker::build(config).await.context("starting the worker")?;
    worker
        .run(runtime::shutdown_on_signal())
        .await
        .context("running")?;
    Ok(())
}
