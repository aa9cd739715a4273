//! Batched writes: `POST /stream/contacts` and `POST /stream/events`. The body is read
//! only once the request is admitted ([`crate::body`]), every item is validated alone
//! (`ingest_types::validate`), and the valid ones are published together; the answer
//! gives each item's outcome in request order.

use axum::body::Body;
use axum::extract::RawQuery;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{SubsecRound, Utc};
use ingest_types::answer::ItemKind;
use ingest_types::tenancy::Endpoint;
use ingest_types::validate::{self, ValidItem};
use ingest_types::{BatchAnswer, Envelope, ItemOutcome, ENVELOPE_VERSION};
use serde::Deserialize;
use utoipa::IntoParams;

use super::guard::{Admitted, Guard, StreamPath};
use super::write::{publish, wants_sync};
use crate::body;
use crate::error::ApiError;
use crate::views::{BatchAnswers, ContactBatch, EventBatch, GuardedErrors};

#[utoipa::path(post, path = "/v1/project/{project}/datasource/{datasource}/stream/contacts", tag = "stream",
    params(StreamPath, SyncQuery),
    request_body(content = ContactBatch, description = "1–100 contacts. Partial success: each item is validated alone, and a batch with any valid item is answered 202 with the invalid ones marked `\"status\": \"error\"` (422 only when every item fails). `Content-Encoding: gzip` accepted; `Content-Type` is not enforced."),
    responses(
        BatchAnswers,
        GuardedErrors,
    ))]
pub async fn post_contacts(
    guard: Guard<StreamPath>,
    RawQuery(query): RawQuery,
    body: Body,
) -> Response {
    let sync = wants_sync(query.as_deref());
    guard
        .run(Endpoint::Contacts, |request| {
            write_batch(request, body, ItemKind::Contact, sync)
        })
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
    guard: Guard<StreamPath>,
    RawQuery(query): RawQuery,
    body: Body,
) -> Response {
    let sync = wants_sync(query.as_deref());
    guard
        .run(Endpoint::Events, |request| {
            write_batch(request, body, ItemKind::Event, sync)
        })
        .await
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

async fn write_batch(
    request: Admitted<StreamPath>,
    body: Body,
    kind: ItemKind,
    sync: bool,
) -> Result<Response, ApiError> {
    // To the microsecond: what `timestamptz` stores, so the envelope says what the row will.
    let received_at = Utc::now().trunc_subsecs(6);
    let Admitted {
        state,
        auth,
        headers,
        ..
    } = &request;
    let body = body::receive(
        &state.budget,
        state.config.body_timeout,
        auth,
        headers,
        body,
    )
    .await?;
    let items = body::parse_batch(&body.bytes)?;
    let request_id = request.request_id();

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

fn kind_label(kind: ItemKind) -> &'static str {
    match kind {
        ItemKind::Contact => "contact",
        ItemKind::Event => "event",
    }
}
