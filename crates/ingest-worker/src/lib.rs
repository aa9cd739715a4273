//! The ingest worker: consumes the contacts and events topics in a consumer group and
//! persists them to PostgreSQL.
//!
//! - [`config`]: environment configuration.
//! - [`consume`]: the batch loop and its offset-commit rule.
//! - [`persist`]: every SQL statement, and the embedded migrations.
//! - [`dead_letter`]: the dead-letter topic.
//! - [`lag`]: consumer lag per partition.
//! - [`lifecycle`]: the maintenance job (tombstone purge), on a schedule.
//! - [`metrics`]: every exported metric name.

pub mod config;
pub mod consume;
pub mod dead_letter;
pub mod lag;
pub mod lifecycle;
pub mod metrics;
pub mod persist;

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use ingest_types::runtime;
use metrics_exporter_prometheus::PrometheusHandle;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::util::Timeout;
use sqlx::postgres::PgPoolOptions;
use sqlx::PgPool;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::consume::ConsumeLoop;
use crate::dead_letter::DeadLetters;

#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    /// Binding the listener or installing the metrics recorder (shared with the gateway).
    #[error(transparent)]
    Setup(#[from] runtime::SetupError),
    #[error("cannot set up the kafka client")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error("cannot create the database pool")]
    Database(#[from] sqlx::Error),
}

/// A worker with its clients created and its operations port bound.
pub struct Worker {
    consume: ConsumeLoop,
    /// `None`: the schedule is off (`INGEST_WORKER_MAINTENANCE_INTERVAL_SECS=0`).
    maintenance_interval: Option<Duration>,
    listener: TcpListener,
    health: HealthState,
}

#[derive(Clone)]
struct HealthState {
    consumer: Arc<StreamConsumer>,
    pool: PgPool,
    metrics: PrometheusHandle,
    shutdown: CancellationToken,
}

impl Worker {
    pub async fn build(config: Config) -> Result<Self, StartupError> {
        let metrics = runtime::install_metrics_recorder()?;
        crate::metrics::describe();
        // The pool connects lazily, so a worker starts (and reports not-ready) while
        // the database is down, and the consume loop's retries cover the outage.
        let pool = PgPoolOptions::new()
            .max_connections(config.db_max_connections)
            .acquire_timeout(Duration::from_secs(5))
            .connect_lazy(&config.database_url)?;
        let consumer: StreamConsumer = ClientConfig::new()
            .set("bootstrap.servers", &config.kafka_brokers)
            .set("group.id", &config.group_id)
            // Offsets are committed by hand, only after the database commit.
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set(
                "session.timeout.ms",
                config.session_timeout.as_millis().to_string(),
            )
            .set(
                "heartbeat.interval.ms",
                (config.session_timeout.as_millis() / 3).to_string(),
            )
            .create()?;
        consumer.subscribe(&config.topics.consumed())?;
        let consumer = Arc::new(consumer);
        let dead_letters = DeadLetters::new(&config.kafka_brokers, &config.topics.dead_letter)?;
        let listener = runtime::bind(config.listen_addr).await?;
        Ok(Self {
            consume: ConsumeLoop {
                consumer: consumer.clone(),
                pool: pool.clone(),
                dead_letters,
                batch_max_messages: config.batch_max_messages,
                batch_max_wait: config.batch_max_wait,
                writers: config.writers,
            },
            listener,
            maintenance_interval: config.maintenance_interval,
            health: HealthState {
                consumer,
                pool,
                metrics,
                shutdown: CancellationToken::new(),
            },
        })
    }

    /// The operations port (`/healthz`, `/readyz`, `/metrics`).
    pub fn port(&self) -> u16 {
        self.listener.local_addr().map(|a| a.port()).unwrap_or(0)
    }

    /// Consumes until `shutdown` is cancelled: readiness turns false at once, the
    /// in-flight batch finishes (or is abandoned uncommitted), then the process may exit.
    pub async fn run(self, shutdown: CancellationToken) -> std::io::Result<()> {
        tracing::info!(port = self.port(), "worker started");
        let health = self.health.clone();
        let ready_off = health.shutdown.clone();
        let server_stop = CancellationToken::new();
        let server = {
            let stop = server_stop.clone();
            let app = Router::new()
                .route("/healthz", get(healthz))
                .route("/readyz", get(readyz))
                .route("/metrics", get(metrics_text))
                .with_state(health);
            tokio::spawn(async move {
                axum::serve(self.listener, app)
                    .with_graceful_shutdown(async move { stop.cancelled().await })
                    .await
            })
        };
        tokio::spawn(lag::report_periodically(
            self.health.consumer.clone(),
            shutdown.clone(),
        ));
        if let Some(interval) = self.maintenance_interval {
            tokio::spawn(lifecycle::run_periodically(
                self.health.pool.clone(),
                interval,
                shutdown.clone(),
            ));
        }
        let consume_stop = shutdown.clone();
        tokio::spawn(async move {
            consume_stop.cancelled().await;
            ready_off.cancel();
        });
        self.consume.run(shutdown).await;
        server_stop.cancel();
        server
            .await
            .unwrap_or_else(|e| Err(std::io::Error::other(e)))?;
        tracing::info!("worker stopped");
        Ok(())
    }
}

async fn healthz() -> impl IntoResponse {
    Json(serde_json::json!({"status": "ok"}))
}

async fn readyz(State(state): State<HealthState>) -> Response {
    if state.shutdown.is_cancelled() {
        return not_ready("shutting down");
    }
    let database = sqlx::query("SELECT 1").execute(&state.pool).await.is_ok();
    let consumer = state.consumer.clone();
    let broker = tokio::task::spawn_blocking(move || {
        consumer
            .client()
            .fetch_metadata(None, Timeout::After(Duration::from_secs(2)))
            .is_ok()
    })
    .await
    .unwrap_or(false);
    match (broker, database) {
        (true, true) => Json(serde_json::json!({"status": "ready"})).into_response(),
        (false, _) => not_ready("kafka is not reachable"),
        (_, false) => not_ready("the database is not reachable"),
    }
}

fn not_ready(message: &str) -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        Json(serde_json::json!({"status": "unavailable", "message": message})),
    )
        .into_response()
}

async fn metrics_text(State(state): State<HealthState>) -> impl IntoResponse {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        state.metrics.render(),
    )
}
