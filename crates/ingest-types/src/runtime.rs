//! The start-up the gateway and the worker share: logging, the metrics recorder, binding
//! a listener and the failures of those ([`SetupError`]), and the shutdown signal. Each
//! binary's `build` adds its own clients (Kafka, the database pool) and its own
//! `StartupError` for them, wrapping [`SetupError`].
//!
//! Behind the `runtime` feature because it needs tokio, tracing-subscriber and the
//! Prometheus exporter: whoever uses only the items, validation and envelope (a client, a
//! tool) depends on `ingest-types` without them. It lives here rather than in a crate of
//! its own because it is this small and the two binaries already share this crate; the
//! configuration half ([`crate::env`]) needs no feature.

use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::Duration;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing_subscriber::{fmt, EnvFilter};

use crate::env::LogFormat;

/// What can fail in the shared start-up; each binary's `StartupError` wraps it.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("cannot bind {addr}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot install the metrics recorder")]
    Metrics(#[from] metrics_exporter_prometheus::BuildError),
}

/// Binds a TCP listener on `addr` (port 0 picks a free one).
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, SetupError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| SetupError::Bind { addr, source })
}

/// Installs the global subscriber: JSON lines in production, human-readable in
/// development; `RUST_LOG` filters (default `info`). A second call is a no-op.
pub fn init_logging(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = fmt().with_env_filter(filter);
    let _ = match format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .try_init(),
        LogFormat::Pretty => builder.try_init(),
    };
}

/// A token cancelled on the first SIGTERM or Ctrl-C: the one shutdown signal.
pub fn shutdown_on_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let cancel = token.clone();
    tokio::spawn(async move {
        let ctrl_c = tokio::signal::ctrl_c();
        let term = async {
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(mut s) => {
                    s.recv().await;
                }
                Err(_) => std::future::pending::<()>().await,
            }
        };
        tokio::select! { _ = ctrl_c => {}, _ = term => {} }
        tracing::info!("shutdown signal received");
        cancel.cancel();
    });
    token
}

/// Latency buckets (seconds) for every histogram whose name ends in `_seconds`.
const SECONDS_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];
/// Size buckets for every histogram whose name ends in `_messages` or `_items`.
const COUNT_BUCKETS: &[f64] = &[
    1.0, 5.0, 10.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0,
];

/// Installs the process-wide Prometheus recorder once and returns its handle; later
/// calls (a gateway and a worker in one test process) get the same handle.
pub fn install_metrics_recorder() -> Result<PrometheusHandle, SetupError> {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    static INSTALL: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _guard = INSTALL.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(handle) = HANDLE.get() {
        return Ok(handle.clone());
    }
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), SECONDS_BUCKETS)?
        .set_buckets_for_metric(Matcher::Suffix("_messages".into()), COUNT_BUCKETS)?
        .set_buckets_for_metric(Matcher::Suffix("_items".into()), COUNT_BUCKETS)?
        .install_recorder()?;
    let upkeep = handle.clone();
    std::thread::spawn(move || loop {
        std::thread::sleep(Duration::from_secs(5));
        upkeep.run_upkeep();
    });
    Ok(HANDLE.get_or_init(|| handle).clone())
}
