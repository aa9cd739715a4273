//! HTTP handlers. Each one parses the request, delegates validation to `ingest_types`
//! and publishing to [`crate::publish`], and maps failures through [`ApiError`].
//!
//! [`erasure`]: erasing a user, and reading the erasure status.

pub mod erasure;

use std::future::Future;
use std::net::IpAddr;
use std::time::Instant;

use axum::body::Body;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{SubsecRound, Utc};
use ingest_types::answer::ItemKind;
use ingest_types::tenancy::Endpoint;
use ingest_types::validate::{self, ValidItem};
use ingest_types::{BatchAnswer, Envelope, ItemOutcome, Operation, ENVELOPE_VERSION};
use serde::Deserialize;
use utoipa::IntoParams;

use crate::body;
use crate::directory::Authorized;
use crate::error::ApiError;
use crate::error::Message;
use crate::extract::REQUEST_ID_HEADER;
use crate::extract::{ApiPath, ClientAddr};
use crate::metrics::RATE_LIMITED_TOTAL;
use crate::state::AppState;
use crate::views::{
    AttributeSpecView, AttributeSpecs, BatchAnswers, ContactBatch, EventBatch, EventParameterSpecs,
    EventSpecs, EventTypeView, GuardedErrors, ParameterSpecView, PathErrors, StreamInfo,
};

/// Seconds a client should wait before retrying after a 503.
const RETRY_AFTER: std::time::Duration = std::time::Duration::from_secs(1);

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct StreamPath {
    /// The project's id; an id outside this alphabet is answered like an unknown one (404).
    #[param(pattern = r"^[A-Za-z0-9_-]{1,64}$")]
    project: String,
    /// The datasource's id; an id outside this alphabet is answered like an unknown one (404).
    #[param(pattern = r"^[A-Za-z0-9_-]{1,64}$")]
    datasource: String,
}

#[utoipa::path(post, path = "/v1/project/{project}/datasource/{datasource}/stream/contacts", tag = "stream",
    params(StreamPath, SyncQuery),
    request_body(content = ContactBatch, description = "1–100 contacts. Partial success: each item is validated alone, and a batch with any valid item is answered 202 with the invalid ones marked `\"status\": \"error\"` (422 only when every item fails). `Content-Encoding: gzip` accepted; `Content-Type` is not enforced."),
    responses(
        BatchAnswers,
        GuardedErrors,
    ))]
pub async fn post_contacts(
    State(state): State<AppState>,
    ApiPath(path): ApiPath<StreamPath>,
    ClientAddr(client): ClientAddr,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let sync = wants_sync(query.as_deref());
    guarded(
        &state,
        &path,
        &headers,
        client,
        Endpoint::Contacts,
        |auth| write_batch(&state, auth, &headers, body, ItemKind::Contact, sync),
    )
    .await
}

#[utoipa::path(post, path = "/v1/project/{project}/datasource/{datasource}/stream/events", tag = "stream",
    params(StreamPath, SyncQuery),
    request_body(content = EventBatch, description = "1–100 events. Partial success: each item is validated alone, and a batch with any valid item is answered 202 with the invalid ones marked `\"status\": \"error\"` (422 only when every item fails). `Content-Encoding: gzip` accepted; `Content-Type` is not enforced."),
    responses(
        BatchAnswers,
        GuardedErrors,
    ))]
pub async fn post_events(
    State(state): State<AppState>,
    ApiPath(path): ApiPath<StreamPath>,
    ClientAddr(client): ClientAddr,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let sync = wants_sync(query.as_deref());
    guarded(&state, &path, &headers, client, Endpoint::Events, |auth| {
        write_batch(&state, auth, &headers, body, ItemKind::Event, sync)
    })
    .await
}

/// Authenticates, counts the request against the datasource's limit for `endpoint`,
/// runs `handler` when allowed, and puts the `X-RateLimit-*` headers on the answer.
/// Everything here is decided from the request head: a request answered 401, 404 or 429
/// never has its body read.
async fn guarded<F, Fut>(
    state: &AppState,
    path: &StreamPath,
    headers: &HeaderMap,
    client: Option<IpAddr>,
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
        .authorize(authorization, &path.project, &path.datasource, client)
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
    body: Body,
    kind: ItemKind,
    sync: bool,
) -> Result<Response, ApiError> {
    // To the microsecond: what `timestamptz` stores, so the envelope says what the row will.
    let received_at = Utc::now().trunc_subsecs(6);
    let body = body::receive(
        &state.budget,
        state.config.body_timeout,
        &auth,
        headers,
        body,
    )
    .await?;
    let items = body::parse_batch(&body.bytes)?;
    let request_id = request_id(headers);

    let mut outcomes = Vec::with_capacity(items.len());
    let mut envelopes: Vec<Envelope> = Vec::with_capacity(items.len());
    for raw in &items {
        let (echo, result) = validate::check_raw(kind, raw, received_at, &auth.specs);
        let errors = match result {
            Ok(ValidItem { user_id, op }) => {
                envelopes.push(Envelope {
                    v: ENVELOPE_VERSION,
                    project: auth.project.clone(),
                    datasource: auth.datasource.clone(),
                    user_id,
                    received_at,
                    request_id: request_id.clone(),
                    sync_id: None,
                    op,
                });
                None
            }
            Err(errors) => Some(errors),
        };
        outcomes.push(ItemOutcome::new(kind, echo, errors));
    }
    let answer = BatchAnswer::new(outcomes);
    let kind_label = kind_label(kind);
    state
        .counters
        .items(kind_label, "invalid")
        .increment(answer.entity.failed as u64);

    if envelopes.is_empty() {
        return Ok((StatusCode::UNPROCESSABLE_ENTITY, Json(answer)).into_response());
    }

    // `?_sync`: register before publishing so no commit announcement can be missed.
    let registration = sync.then(|| state.sync.register(envelopes.len() as u64));
    if let Some(registration) = &registration {
        for envelope in &mut envelopes {
            envelope.sync_id = Some(registration.sync_id.clone());
        }
    }
    publish(state, &envelopes, kind_label).await?;
    let committed = match registration {
        Some(registration) => registration.committed_within(state.config.sync_wait).await,
        None => false,
    };
    let status = if committed {
        StatusCode::OK
    } else {
        StatusCode::ACCEPTED
    };
    Ok((status, Json(answer)).into_response())
}

/// The query of the batch endpoints (for the OpenAPI document; parsed by [`wants_sync`]).
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct SyncQuery {
    /// Answer only once the accepted items are committed in the database (200), or
    /// after `INGEST_SYNC_WAIT_MS` (default 10 s) with the usual 202. On for any value
    /// (`?_sync`, `?_sync=true`, `?_sync=1`, ...) except `false` and `0`.
    _sync: Option<String>,
}

/// `?_sync`, `?_sync=true` or `?_sync=1` (not `?_sync=false` or `?_sync=0`).
fn wants_sync(query: Option<&str>) -> bool {
    query.unwrap_or_default().split('&').any(|pair| {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        name == "_sync" && !matches!(value, "false" | "0")
    })
}

/// Publishes and waits for every acknowledgement; counts the items as accepted only then.
async fn publish(
    state: &AppState,
    envelopes: &[Envelope],
    kind_label: &'static str,
) -> Result<(), ApiError> {
    let started = Instant::now();
    let published = state.publisher.publish_all(envelopes).await;
    state
        .counters
        .publish_duration()
        .record(started.elapsed().as_secs_f64());
    let outcome = if published.is_ok() {
        "accepted"
    } else {
        "unavailable"
    };
    state
        .counters
        .items(kind_label, outcome)
        .increment(envelopes.len() as u64);
    published.map_err(|source| ApiError::Unavailable {
        retry_after: RETRY_AFTER,
        source,
    })
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct EventTypePath {
    #[param(pattern = r"^[A-Za-z0-9_-]{1,64}$")]
    project: String,
    #[param(pattern = r"^[A-Za-z0-9_-]{1,64}$")]
    datasource: String,
    /// The event type's name (percent-encoded); 404 unless the datasource declares it.
    #[param(min_length = 1, max_length = 128)]
    event_type: String,
}

/// `GET /stream/specs/attributes`: the reserved attributes, then the datasource's
/// declared custom ones, by name.
#[utoipa::path(get, path = "/v1/project/{project}/datasource/{datasource}/stream/specs/attributes", tag = "specs",
    params(StreamPath),
    responses(
        (status = 200, description = "Reserved and declared custom attributes", body = AttributeSpecs),
        PathErrors,
        GuardedErrors,
    ))]
pub async fn get_attribute_specs(
    State(state): State<AppState>,
    ApiPath(path): ApiPath<StreamPath>,
    ClientAddr(client): ClientAddr,
    headers: HeaderMap,
) -> Response {
    guarded(
        &state,
        &path,
        &headers,
        client,
        Endpoint::Specs,
        |auth| async move {
            let reserved = validate::contacts::RESERVED_ATTRIBUTES.iter().map(
                |(name, data_type, required)| AttributeSpecView {
                    name: (*name).to_owned(),
                    data_type: *data_type,
                    multivalue: false,
                    max_values: None,
                    reserved: true,
                    required: *required,
                },
            );
            let mut custom: Vec<_> = auth.specs.attributes.iter().collect();
            custom.sort_by(|a, b| a.0.cmp(b.0));
            let custom = custom.into_iter().map(|(name, spec)| AttributeSpecView {
                name: name.clone(),
                data_type: spec.data_type,
                multivalue: spec.max_values.is_some(),
                max_values: spec.max_values,
                reserved: false,
                required: false,
            });
            let attributes = reserved.chain(custom).collect();
            Ok(Json(AttributeSpecs { attributes }).into_response())
        },
    )
    .await
}

/// `GET /stream/specs/events`: the declared event types, by name (empty: any type is accepted).
#[utoipa::path(get, path = "/v1/project/{project}/datasource/{datasource}/stream/specs/events", tag = "specs",
    params(StreamPath),
    responses(
        (status = 200, description = "Declared event types", body = EventSpecs),
        PathErrors,
        GuardedErrors,
    ))]
pub async fn get_event_specs(
    State(state): State<AppState>,
    ApiPath(path): ApiPath<StreamPath>,
    ClientAddr(client): ClientAddr,
    headers: HeaderMap,
) -> Response {
    guarded(
        &state,
        &path,
        &headers,
        client,
        Endpoint::Specs,
        |auth| async move {
            let mut event_types: Vec<EventTypeView> = auth
                .specs
                .event_types
                .iter()
                .map(|(name, spec)| EventTypeView {
                    name: name.clone(),
                    parameters: spec.parameters.len(),
                })
                .collect();
            event_types.sort_by(|a, b| a.name.cmp(&b.name));
            Ok(Json(EventSpecs { event_types }).into_response())
        },
    )
    .await
}

/// `GET /stream/specs/event-parameters/{event_type}`: the parameter specs of one declared
/// event type; 404 when the type is not declared.
#[utoipa::path(get, path = "/v1/project/{project}/datasource/{datasource}/stream/specs/event-parameters/{event_type}", tag = "specs",
    params(EventTypePath),
    responses(
        (status = 200, description = "Parameter specs of the event type", body = EventParameterSpecs),
        PathErrors,
        GuardedErrors,
        (status = 404, description = "The event type is not declared for this datasource; or, as for every endpoint, unknown project or datasource, a token that may not read there, or no route for the path", body = Message),
    ))]
pub async fn get_event_parameter_specs(
    State(state): State<AppState>,
    ApiPath(EventTypePath {
        project,
        datasource,
        event_type,
    }): ApiPath<EventTypePath>,
    ClientAddr(client): ClientAddr,
    headers: HeaderMap,
) -> Response {
    let path = StreamPath {
        project,
        datasource,
    };
    guarded(
        &state,
        &path,
        &headers,
        client,
        Endpoint::Specs,
        |auth| async move {
            let spec = auth
                .specs
                .event_types
                .get(&event_type)
                .ok_or(ApiError::EventTypeNotDeclared)?;
            let mut parameters: Vec<ParameterSpecView> = spec
                .parameters
                .iter()
                .map(|(name, p)| ParameterSpecView {
                    name: name.clone(),
                    data_type: p.data_type,
                    multivalue: p.max_values.is_some(),
                    max_values: p.max_values,
                    required: p.required,
                })
                .collect();
            parameters.sort_by(|a, b| a.name.cmp(&b.name));
            Ok(Json(EventParameterSpecs {
                event_type,
                parameters,
            })
            .into_response())
        },
    )
    .await
}

/// `GET /stream`: a cheap token check; says what the token may do here.
#[utoipa::path(get, path = "/v1/project/{project}/datasource/{datasource}/stream", tag = "stream",
    params(StreamPath),
    responses(
        (status = 200, description = "The token may write here", body = StreamInfo),
        PathErrors,
        GuardedErrors,
    ))]
pub async fn get_stream(
    State(state): State<AppState>,
    ApiPath(path): ApiPath<StreamPath>,
    ClientAddr(client): ClientAddr,
    headers: HeaderMap,
) -> Response {
    guarded(
        &state,
        &path,
        &headers,
        client,
        Endpoint::Stream,
        |auth| async move {
            let rate_limits = Endpoint::ALL
                .iter()
                .map(|e| (e.as_str().to_owned(), auth.limits.get(*e)))
                .collect();
            let token_scope = if auth.project_scope {
                "project"
            } else {
                "datasource"
            };
            Ok(Json(StreamInfo {
                project: auth.project,
                datasource: auth.datasource,
                token_scope: token_scope.to_owned(),
                rate_limits,
            })
            .into_response())
        },
    )
    .await
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct ContactPath {
    #[param(pattern = r"^[A-Za-z0-9_-]{1,64}$")]
    project: String,
    #[param(pattern = r"^[A-Za-z0-9_-]{1,64}$")]
    datasource: String,
    /// The contact's `_user_id` (percent-encoded): 1–256 characters, no control characters.
    #[param(
        min_length = 1,
        max_length = 256,
        pattern = r"^[^\u0000-\u001f\u007f-\u009f]*$"
    )]
    user_id: String,
}

/// `DELETE /stream/contacts/{user_id}`: published on the contacts topic with the same key
/// as the user's upserts, so Kafka keeps it in order with them.
#[utoipa::path(delete, path = "/v1/project/{project}/datasource/{datasource}/stream/contacts/{user_id}", tag = "stream",
    params(ContactPath),
    responses(
        (status = 202, description = "The delete is durable in the broker, ordered with the user's upserts", body = BatchAnswer),
        (status = 422, description = "The user id is invalid (`_user_id: Invalid format`)", body = BatchAnswer),
        PathErrors,
        GuardedErrors,
    ))]
pub async fn delete_contact(
    State(state): State<AppState>,
    ApiPath(ContactPath {
        project,
        datasource,
        user_id,
    }): ApiPath<ContactPath>,
    ClientAddr(client): ClientAddr,
    headers: HeaderMap,
) -> Response {
    let path = StreamPath {
        project,
        datasource,
    };
    guarded(
        &state,
        &path,
        &headers,
        client,
        Endpoint::ContactsDelete,
        |auth| async {
            let echo = validate::Echo {
                user_id: Some(user_id.clone()),
                event_id: None,
            };
            if let Err(errors) = validate::check_user_id(&user_id) {
                let answer = BatchAnswer::new(vec![ItemOutcome::new(
                    ItemKind::Contact,
                    echo,
                    Some(errors),
                )]);
                return Ok((StatusCode::UNPROCESSABLE_ENTITY, Json(answer)).into_response());
            }
            let envelope = Envelope {
                v: ENVELOPE_VERSION,
                project: auth.project,
                datasource: auth.datasource,
                user_id,
                received_at: Utc::now().trunc_subsecs(6),
                request_id: request_id(&headers),
                sync_id: None,
                op: Operation::DeleteContact,
            };
            publish(&state, std::slice::from_ref(&envelope), "contact_delete").await?;
            let answer = BatchAnswer::new(vec![ItemOutcome::new(ItemKind::Contact, echo, None)]);
            Ok((StatusCode::ACCEPTED, Json(answer)).into_response())
        },
    )
    .await
}

fn kind_label(kind: ItemKind) -> &'static str {
    match kind {
        ItemKind::Contact => "contact",
        ItemKind::Event => "event",
    }
}

/// The request id set (or propagated) by the request-id middleware.
fn request_id(headers: &HeaderMap) -> String {
    headers
        .get(REQUEST_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

/// `GET /openapi.json`: this API as an OpenAPI 3.1 document.
pub async fn openapi() -> impl IntoResponse {
    Json(crate::openapi::document())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sync_flag_forms() {
        assert!(wants_sync(Some("_sync")));
        assert!(wants_sync(Some("a=1&_sync=true")));
        assert!(wants_sync(Some("_sync=1")));
        assert!(!wants_sync(Some("_sync=false")));
        assert!(!wants_sync(Some("_sync=0")));
        assert!(!wants_sync(Some("sync")));
        assert!(!wants_sync(None));
    }
}
