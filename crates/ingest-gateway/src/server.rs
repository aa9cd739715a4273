//! The public listener's accept loop: HTTP/1.1 connections served by hyper with a cap on
//! open connections and hyper's header-read timeout.
//!
//! `axum::serve` offers neither knob, so the loop is written out here, as axum's own
//! "serve with hyper" example does; everything per connection is hyper's:
//! - **Head timeout** (`INGEST_HEADER_TIMEOUT_MS`): hyper's `header_read_timeout`. Its
//!   timer starts when a connection opens and again when an answer has been sent, and
//!   stops when the next request head is complete: it bounds slow heads (slowloris) and
//!   idle keep-alive connections alike.
//! - **Connection cap** (`INGEST_MAX_CONNECTIONS`): a connection past the cap is closed
//!   as soon as it is accepted, so it costs a moment, never a file descriptor kept
//!   open, and the listener never stops accepting (no `Too many open files`).
//! - **Body timeout and byte budget** are per request, in the handlers (the token is
//!   checked before any body byte is read).
//!
//! HTTP/2 is not served: producers post over HTTP/1.1, and hyper's head timeout does not
//! apply to HTTP/2 connections.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{ConnectInfo, Request};
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

use crate::metrics::{CONNECTIONS_OPEN, CONNECTIONS_REFUSED_TOTAL};

/// How long in-flight requests may take to finish after shutdown begins.
const DRAIN_FOR: Duration = Duration::from_secs(10);
/// Largest request head hyper buffers (431 beyond); the default is about 400 KiB.
const MAX_HEAD_BYTES: usize = 64 * 1024;

/// The per-connection limits of the public listener.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    pub header_timeout: Duration,
    pub max_connections: usize,
}

/// Serves `router` on `listener` until `shutdown`, then lets open requests finish (for at
/// most [`DRAIN_FOR`]). Each request carries the client's address as [`ConnectInfo`].
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ConnectionLimits,
    shutdown: CancellationToken,
) {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let graceful = GracefulShutdown::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .max_buf_size(MAX_HEAD_BYTES);
    loop {
        let (stream, remote) = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    accept_failed(&err).await;
                    continue;
                }
            },
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            metrics::counter!(CONNECTIONS_REFUSED_TOTAL).increment(1);
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let router = router.clone();
        let service = hyper::service::service_fn(move |mut request: Request<Incoming>| {
            request.extensions_mut().insert(ConnectInfo(remote));
            router.clone().oneshot(request)
        });
        let connection = graceful.watch(http.serve_connection(TokioIo::new(stream), service));
        metrics::gauge!(CONNECTIONS_OPEN).increment(1.0);
        tokio::spawn(async move {
            if let Err(err) = connection.await {
                tracing::debug!(error = %err, %remote, "connection ended with an error");
            }
            metrics::gauge!(CONNECTIONS_OPEN).decrement(1.0);
            drop(slot);
        });
    }
    drop(listener);
    if tokio::time::timeout(DRAIN_FOR, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("requests still open {DRAIN_FOR:?} after shutdown began; closing them");
    }
}

/// A failed `accept`: a connection that was reset before it was accepted is nothing; any
/// other error (out of file descriptors, out of memory) is logged and the loop pauses
/// briefly instead of spinning on it.
async fn accept_failed(err: &std::io::Error) {
    use std::io::ErrorKind;
    if matches!(
        err.kind(),
        ErrorKind::ConnectionAborted | ErrorKind::ConnectionReset | ErrorKind::ConnectionRefused
    ) {
        return;
    }
    tracing::error!(error = %err, "accept failed");
    tokio::time::sleep(Duration::from_millis(50)).await;
}

/// Raises this process's soft limit of open files to its hard limit, and returns how
/// many connections fit under it, keeping `reserve` descriptors for everything else
/// (Kafka, PostgreSQL, the admin listener, logs).
pub fn connections_that_fit(wanted: usize, reserve: u64) -> usize {
    let limit = match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => limit,
        Err(err) => {
            tracing::warn!(error = %err, "cannot read or raise the open-files limit");
            return wanted;
        }
    };
    let fit = usize::try_from(limit.saturating_sub(reserve)).unwrap_or(usize::MAX);
    if fit < wanted {
        tracing::warn!(
            wanted,
            fit,
            open_files_limit = limit,
            "INGEST_MAX_CONNECTIONS lowered to what the open-files limit holds"
        );
    }
    wanted.min(fit).max(1)
}

/// The address the request came from, when it came through [`serve`].
pub fn client_addr(extensions: &axum::http::Extensions) -> Option<SocketAddr> {
    extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(addr)| *addr)
}
