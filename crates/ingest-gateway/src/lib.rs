//! The ingest gateway: authenticates and validates batched writes, publishes accepted
//! items to Kafka and answers with per-item outcomes.
//!
//! - [`config`]: environment configuration.
//! - [`server`]: the public listener (connection cap, head timeout); [`admin`]: the admin
//!   listener (metrics, health).
//! - [`handlers`]: the HTTP handlers, one module per API surface, behind one guard;
//!   [`body`]: receiving a batch body (budget, timeout, gzip); [`extract`]: extractors and
//!   the request id; [`error`]: the one place errors become statuses.
//! - [`state`]: what every handler shares.
//! - [`directory`]: tokens and datasources (authentication, scopes, limits), cached.
//! - [`ratelimit`]: requests-per-minute limits shared by every instance.
//! - [`budget`]: request-body bytes in memory at once.
//! - [`publish`]: the Kafka producer and its acknowledgement rules.
//! - [`metrics`]: every exported metric name.

pub mod admin;
pub mod body;
pub mod budget;
pub mod config;
pub mod directory;
pub mod error;
pub mod extract;
pub mod handlers;
pub mod metrics;
pub mod openapi;
pub mod publish;
pub mod ratelimit;
pub mod server;
pub mod state;
pub mod sync;
pub mod views;

pub use crate::extract::REQUEST_ID_HEADER;
pub use crate::state::{AppState, SharedState};

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::Router;
use futures::FutureExt;
use ingest_types::runtime;
use sqlx::postgres::PgPoolOptions;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;

use crate::budget::BodyBudget;
use crate::config::Config;
use crate::directory::{Directory, LookupQuota};
use crate::error::ApiError;
use crate::publish::Publisher;
use crate::ratelimit::RateLimiter;
use crate::sync::SyncWaiters;

#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    /// Binding a listener or installing the metrics recorder (shared with the worker).
    #[error(transparent)]
    Setup(#[from] runtime::SetupError),
    #[error("cannot create the kafka producer")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error("invalid DATABASE_URL")]
    Database(#[from] sqlx::Error),
}

/// A gateway bound to its ports, ready to serve.
pub struct Application {
    listener: TcpListener,
    router: Router,
    limits: server::ConnectionLimits,
    admin_listener: TcpListener,
    admin_router: Router,
    publisher: Publisher,
    /// Stops the background tasks (tenancy listener, rate-limit clean-up).
    background: CancellationToken,
}

impl Application {
    /// Creates the producer, binds the listener (port 0 picks a free one) and builds the router.
    pub async fn build(config: Config) -> Result<Self, StartupError> {
        let metrics = runtime::install_metrics_recorder()?;
        crate::metrics::describe();
        let publisher = Publisher::new(&config)?;
        let listener = runtime::bind(config.listen_addr).await?;
        let admin_listener = runtime::bind(config.admin_addr).await?;
        let limits = server::ConnectionLimits {
            header_timeout: config.header_timeout,
            max_connections: server::connections_that_fit(config.max_connections, 512),
        };
        // Lazy: the gateway starts while PostgreSQL is down and serves known tokens
        // from its cache (see `directory`).
        let pool = PgPoolOptions::new()
            .max_connections(config.db_max_connections)
            .acquire_timeout(Duration::from_secs(2))
            .connect_lazy(&config.database_url)?;
        let directory = Directory::new(
            pool.clone(),
            config.auth_cache_capacity,
            config.unknown_token_cache_capacity,
            config.auth_max_staleness,
            LookupQuota {
                per_second: config.lookups_per_addr_per_sec,
                burst: config.lookups_per_addr_burst,
            },
        );
        let limiter = RateLimiter::new(pool.clone());
        let sync = SyncWaiters::default();
        let background = CancellationToken::new();
        tokio::spawn(directory.clone().listen_for_changes(background.clone()));
        tokio::spawn(directory.clone().ping_listener(background.clone()));
        tokio::spawn(directory.clone().forget_quiet_clients(background.clone()));
        tokio::spawn(limiter.clone().clean_up_periodically(background.clone()));
        tokio::spawn(sync.clone().listen(pool.clone(), background.clone()));
        let state = AppState::new(SharedState {
            budget: BodyBudget::new(
                config.body_budget_bytes,
                config.datasource_body_budget_bytes,
            ),
            config: Arc::new(config),
            publisher: publisher.clone(),
            directory,
            limiter,
            sync,
            metrics,
            counters: crate::metrics::Handles::new(),
            db: pool,
        });
        Ok(Self {
            listener,
            router: router(state.clone()),
            limits,
            admin_listener,
            admin_router: admin::router(state),
            publisher,
            background,
        })
    }

    /// The public API's port.
    pub fn port(&self) -> u16 {
        self.listener.local_addr().map(|a| a.port()).unwrap_or(0)
    }

    /// The admin listener's port (metrics, health).
    pub fn admin_port(&self) -> u16 {
        self.admin_listener
            .local_addr()
            .map(|a| a.port())
            .unwrap_or(0)
    }

    /// Serves until `shutdown` is cancelled, drains in-flight requests, then flushes the producer.
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> std::io::Result<()> {
        tracing::info!(
            port = self.port(),
            admin_port = self.admin_port(),
            max_connections = self.limits.max_connections,
            "gateway listening"
        );
        let admin_shutdown = shutdown.clone();
        let admin = axum::serve(self.admin_listener, self.admin_router)
            .with_graceful_shutdown(async move { admin_shutdown.cancelled().await });
        let api = server::serve(self.listener, self.router, self.limits, shutdown);
        let (admin, ()) = tokio::join!(admin, api);
        admin?;
        self.background.cancel();
        if let Err(err) = self.publisher.flush(Duration::from_secs(10)) {
            tracing::error!(error = %err, "producer flush on shutdown failed");
        }
        tracing::info!("gateway stopped");
        Ok(())
    }
}

pub fn router(state: AppState) -> Router {
    handlers::routes()
        // Router-level answers are JSON like every other (axum keeps the `Allow` header).
        .fallback(|| async { ApiError::NoSuchEndpoint })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .layer(middleware::from_fn(catch_panics))
        .layer(middleware::from_fn_with_state(state.clone(), track_http))
        .layer(PropagateRequestIdLayer::new(REQUEST_ID_HEADER))
        .layer(TraceLayer::new_for_http().make_span_with(request_span))
        .layer(SetRequestIdLayer::new(REQUEST_ID_HEADER, MakeRequestUuid))
        .layer(middleware::from_fn(drop_insane_request_id))
        .with_state(state)
}

/// Keeps the client's `X-Request-Id` only when it is sane (1–128 visible ASCII
/// characters); otherwise a fresh one is made, so ids stay safe to log and echo.
async fn drop_insane_request_id(mut request: Request, next: Next) -> Response {
    let sane = request
        .headers()
        .get(REQUEST_ID_HEADER)
        .map(|v| (1..=128).contains(&v.len()) && v.as_bytes().iter().all(|b| b.is_ascii_graphic()));
    if sane == Some(false) {
        request.headers_mut().remove(REQUEST_ID_HEADER);
    }
    next.run(request).await
}

/// A handler that panicked answers 500 with the request id, like any other failure,
/// instead of dropping the connection.
async fn catch_panics(request: Request, next: Next) -> Response {
    let request_id = request
        .headers()
        .get(REQUEST_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    match AssertUnwindSafe(next.run(request)).catch_unwind().await {
        Ok(response) => response,
        Err(panic) => {
            let message = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".to_owned());
            ApiError::Internal {
                request_id,
                source: format!("handler panicked: {message}").into(),
            }
            .into_response()
        }
    }
}

/// Counts every answer by matched route template (never the raw URI) and status.
async fn track_http(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let route = request.extensions().get::<MatchedPath>().cloned();
    let response = next.run(request).await;
    let route = route.as_ref().map_or("unmatched", MatchedPath::as_str);
    state
        .counters
        .http_request(route, response.status().as_u16())
        .increment(1);
    response
}

/// The span every request's log lines belong to, carrying its id.
fn request_span<B>(request: &axum::http::Request<B>) -> tracing::Span {
    let request_id = request
        .headers()
        .get(REQUEST_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    tracing::info_span!(
        "request",
        method = %request.method(),
        path = %request.uri().path(),
        request_id = %request_id,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::routing::get;
    use tower::ServiceExt;

    #[tokio::test]
    async fn a_panicking_handler_answers_500_with_the_request_id() {
        let app = Router::new()
            .route("/boom", get(|| async { panic!("kaboom") as &'static str }))
            .layer(middleware::from_fn(catch_panics));
        let request = axum::http::Request::get("/boom")
            .header(REQUEST_ID_HEADER, "req-42")
            .body(Body::empty())
            .unwrap();
        let response = app.oneshot(request).await.unwrap();
        assert_eq!(response.status(), 500);
        let body = axum::body::to_bytes(response.into_body(), 1 << 16)
            .await
            .unwrap();
        let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            body,
            serde_json::json!({"message": "internal error", "request_id": "req-42"})
        );
    }
}
