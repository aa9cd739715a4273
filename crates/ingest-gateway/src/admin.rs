//! The admin listener (`INGEST_ADMIN_ADDR`): `/metrics`, `/healthz` and `/readyz`, apart
//! from the public API so that the API port serves the API alone and these stay off the
//! public network (bind it to loopback or a cluster-internal address).

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};

use crate::metrics::PRODUCER_QUEUE_MESSAGES;
use crate::state::AppState;
use crate::views::Health;

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(state)
}

/// 200 while the process serves.
async fn healthz() -> impl IntoResponse {
    Json(Health {
        status: "ok".into(),
        message: None,
    })
}

/// 200 when the broker is reachable, else 503.
async fn readyz(State(state): State<AppState>) -> Response {
    if state.publisher.broker_reachable().await {
        Json(Health {
            status: "ready".into(),
            message: None,
        })
        .into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(Health {
                status: "unavailable".into(),
                message: Some("kafka is not reachable".into()),
            }),
        )
            .into_response()
    }
}

/// The Prometheus exposition of every metric.
async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    metrics::gauge!(PRODUCER_QUEUE_MESSAGES).set(f64::from(state.publisher.queue_depth()));
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        state.metrics.render(),
    )
}
