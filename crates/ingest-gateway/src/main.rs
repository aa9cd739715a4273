use anyhow::Context;
use ingest_gateway::config::Config;
use ingest_gateway::Application;
use ingest_types::runtime;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// How often memory the allocator holds free is given back to the operating system.
const GIVE_BACK_EVERY: std::time::Duration = std::time::Duration::from_secs(10);

/// mimalloc keeps the pages freed after a burst (thousands of connections, stalled
/// bodies) in its arenas and purges them lazily, so the gateway's RSS stayed at its peak
/// long after the burst (BENCHMARKS.md, "Abuse"). A forced collection purges them. Its
/// environment settings that purge at once (`MIMALLOC_PURGE_DELAY=0`,
/// `MIMALLOC_ARENA_PURGE_MULT=0`) cost 7–12% of throughput at max; a collection every
/// [`GIVE_BACK_EVERY`] costs nothing measurable on the hot path.
#[allow(unsafe_code)]
fn give_back_free_memory() {
    // SAFETY: `mi_collect` takes no pointers and may be called from any thread at any
    // time; it only frees what mimalloc itself holds unused.
    unsafe { libmimalloc_sys::mi_collect(true) }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::from_env().context("reading configuration")?;
    runtime::init_logging(config.log_format);
    tracing::info!(?config, "starting ingest-gateway");
    tokio::spawn(async {
        let mut every = tokio::time::interval(GIVE_BACK_EVERY);
        loop {
            every.tick().await;
            give_back_free_memory();
        }
    });
    let app = Application::build(config)
        .await
        .context("starting the gateway")?;
    app.run_until_stopped(runtime::shutdown_on_signal())
        .await
        .context("serving")?;
    Ok(())
}
