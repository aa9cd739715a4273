//! HTTP handlers. Each one parses the request, delegates validation to `ingest_types`
//! and publishing to [`crate::publish`], and maps failures through [`ApiError`].

use std::future::Future;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, Utc};
use ingest_types::answer::ItemKind;
use ingest_types::tenancy::Endpoint;
use ingest_types::validate::{self, FieldErrors, ValidItem};
use ingest_types::{BatchAnswer, Envelope, ItemOutcome, ENVELOPE_VERSION};
use serde::Deserialize;
use serde_json::Value;

use crate::directory::Authorized;
use crate::error::ApiError;
use crate::metrics::{ITEMS_TOTAL, PUBLISH_DURATION_SECONDS, RATE_LIMITED_TOTAL};
use crate::AppState;

/// Most items one batch may hold.
pub const MAX_ITEMS: usize = 100;
/// Largest request body, after decompression.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;
/// Seconds a client should wait before retrying after a 503.
const RETRY_AFTER: std::time::Duration = std::time::Duration::from_secs(1);

#[derive(Debug, Deserialize)]
pub struct StreamPath {
    project: String,
    datasource: String,
}

pub async fn post_contacts(
    State(state): State<AppState>,
    Path(path): Path<StreamPath>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    guarded(&state, &path, &headers, Endpoint::Contacts, |auth| {
        write_batch(&state, auth, &headers, body, ItemKind::Contact)
    })
    .await
}

pub async fn post_events(
    State(state): State<AppState>,
    Path(path): Path<StreamPath>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    guarded(&state, &path, &headers, Endpoint::Events, |auth| {
        write_batch(&state, auth, &headers, body, ItemKind::Event)
    })
    .await
}

pub async fn healthz() -> impl IntoResponse {
    Json(serde_json::json!({"status": "ok"}))
}

pub async fn readyz(State(state): State<AppState>) -> Response {
    if state.publisher.broker_reachable().await {
        Json(serde_json::json!({"status": "ready"})).into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(serde_json::json!({"status": "unavailable", "message": "kafka is not reachable"})),
        )
            .into_response()
    }
}

pub async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        state.metrics.render(),
    )
}

/// Authenticates, counts the request against the datasource's limit for `endpoint`,
/// runs `handler` when allowed, and puts the `X-RateLimit-*` headers on the answer.
async fn guarded<F, Fut>(
    state: &AppState,
    path: &StreamPath,
    headers: &HeaderMap,
    endpoint: Endpoint,
    handler: F,
) -> Response
where
    F: FnOnce(Authorized) -> Fut,
    Fut: Future<Output = Result<Response, ApiError>>,
{
    let authorization = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let auth = match state
        .directory
        .authorize(authorization, &path.project, &path.datasource)
        .await
    {
        Ok(auth) => auth,
        Err(err) => return ApiError::from_auth(err, request_id(headers)).into_response(),
    };
    let decision = state
        .limiter
        .check(
            &auth.project,
            &auth.datasource,
            endpoint,
            auth.limits.get(endpoint),
        )
        .await;
    let mut response = if decision.allowed {
        handler(auth)
            .await
            .unwrap_or_else(IntoResponse::into_response)
    } else {
        metrics::counter!(RATE_LIMITED_TOTAL, "endpoint" => endpoint.as_str()).increment(1);
        ApiError::RateLimited {
            retry_after: decision.retry_after(),
        }
        .into_response()
    };
    decision.apply_headers(response.headers_mut());
    response
}

async fn write_batch(
    state: &AppState,
    auth: Authorized,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
    kind: ItemKind,
) -> Result<Response, ApiError> {
    let received_at = Utc::now();
    let body = body.map_err(|rejection| match rejection.status() {
        StatusCode::PAYLOAD_TOO_LARGE => ApiError::PayloadTooLarge {
            limit: MAX_BODY_BYTES,
        },
        _ => ApiError::BadRequest(rejection.body_text()),
    })?;
    let items = parse_batch(&body)?;
    let request_id = request_id(headers);

    let mut outcomes = Vec::with_capacity(items.len());
    let mut envelopes = Vec::with_capacity(items.len());
    for item in &items {
        let result = validate_item(kind, item, received_at);
        let errors = match result {
            Ok(ValidItem { user_id, op }) => {
                envelopes.push(Envelope {
                    v: ENVELOPE_VERSION,
                    project: auth.project.clone(),
                    datasource: auth.datasource.clone(),
                    user_id,
                    received_at,
                    request_id: request_id.clone(),
                    op,
                });
                None
            }
            Err(errors) => Some(errors),
        };
        outcomes.push(ItemOutcome::new(kind, validate::echo(item), errors));
    }
    let answer = BatchAnswer::new(outcomes);
    let kind_label = kind_label(kind);
    metrics::counter!(ITEMS_TOTAL, "kind" => kind_label, "outcome" => "invalid")
        .increment(answer.entity.failed as u64);

    if envelopes.is_empty() {
        return Ok((StatusCode::UNPROCESSABLE_ENTITY, Json(answer)).into_response());
    }

    let started = Instant::now();
    let published = state.publisher.publish_all(&envelopes).await;
    metrics::histogram!(PUBLISH_DURATION_SECONDS).record(started.elapsed().as_secs_f64());
    if let Err(source) = published {
        metrics::counter!(ITEMS_TOTAL, "kind" => kind_label, "outcome" => "unavailable")
            .increment(envelopes.len() as u64);
        return Err(ApiError::Unavailable {
            retry_after: RETRY_AFTER,
            source,
        });
    }
    metrics::counter!(ITEMS_TOTAL, "kind" => kind_label, "outcome" => "accepted")
        .increment(envelopes.len() as u64);
    Ok((StatusCode::ACCEPTED, Json(answer)).into_response())
}

fn validate_item(
    kind: ItemKind,
    item: &Value,
    received_at: DateTime<Utc>,
) -> Result<ValidItem, FieldErrors> {
    match kind {
        ItemKind::Contact => validate::contacts::validate(item),
        ItemKind::Event => validate::events::validate(item, received_at),
    }
}

fn kind_label(kind: ItemKind) -> &'static str {
    match kind {
        ItemKind::Contact => "contact",
        ItemKind::Event => "event",
    }
}

fn parse_batch(body: &[u8]) -> Result<Vec<Value>, ApiError> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::BadRequest(format!("Body should be a JSON array: {e}")))?;
    let Value::Array(items) = value else {
        return Err(ApiError::BadRequest("Body should be an array".into()));
    };
    if items.is_empty() {
        return Err(ApiError::BadRequest("Body should not be empty".into()));
    }
    if items.len() > MAX_ITEMS {
        return Err(ApiError::BadRequest(format!(
            "Body should have at most {MAX_ITEMS} items, got {}",
            items.len()
        )));
    }
    Ok(items)
}

/// The request id set (or propagated) by the request-id middleware.
fn request_id(headers: &HeaderMap) -> String {
    headers
        .get(crate::REQUEST_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_shape_errors_say_which() {
        let msg = |body: &str| match parse_batch(body.as_bytes()) {
            Err(ApiError::BadRequest(m)) => m,
            other => panic!("expected 400, got {other:?}"),
        };
        assert!(msg("{nope").starts_with("Body should be a JSON array"));
        assert_eq!(msg(r#"{"a":1}"#), "Body should be an array");
        assert_eq!(msg("[]"), "Body should not be empty");
        let big = format!("[{}]", vec!["{}"; 101].join(","));
        assert!(msg(&big).contains("at most 100"));
        assert_eq!(parse_batch(b"[1, {}]").unwrap().len(), 2);
    }
}
