use std::cell::Cell;
use std::time::{Duration, Instant};

use anyhow::Context;
use ingest_gateway::config::Config;
use ingest_gateway::Application;
use ingest_types::runtime;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// How often each runtime thread gives the memory its allocator holds free back to the
/// operating system, at most.
const GIVE_BACK_EVERY: Duration = Duration::from_secs(10);

thread_local! {
    static LAST_GIVEN_BACK: Cell<Option<Instant>> = const { Cell::new(None) };
}

/// mimalloc keeps the pages freed after a burst (thousands of connections, stalled
/// bodies) in per-thread heaps and its arenas and purges them lazily, so the gateway's
/// RSS stayed near its peak long after the burst (BENCHMARKS.md, "Abuse"). A forced
/// collection on the thread that owns them purges them: each runtime thread collects when
/// it goes idle, at most every [`GIVE_BACK_EVERY`]. (mimalloc's own settings that purge at
/// once, `MIMALLOC_PURGE_DELAY=0 MIMALLOC_ARENA_PURGE_MULT=0`, cost 7–12% of throughput.)
fn give_back_free_memory_when_idle() {
    LAST_GIVEN_BACK.with(|last| {
        if last.get().is_none_or(|at| at.elapsed() >= GIVE_BACK_EVERY) {
            last.set(Some(Instant::now()));
            collect();
        }
    });
}

#[allow(unsafe_code)]
fn collect() {
    // SAFETY: `mi_collect` takes no pointers and may be called from any thread at any
    // time; it only frees what mimalloc itself holds unused.
    unsafe { libmimalloc_sys::mi_collect(true) }
}

fn main() -> anyhow::Result<()> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .on_thread_park(give_back_free_memory_when_idle)
        .build()
        .context("starting the runtime")?
        .block_on(serve())
}

async fn serve() -> anyhow::Result<()> {
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
