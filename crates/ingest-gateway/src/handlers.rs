//! The public API's HTTP handlers, one module per surface. Every datasource endpoint
//! stands behind the one [`guard`]; each handler parses its request, delegates validation
//! to `ingest_types` and publishing to [`crate::publish`], and maps failures through
//! [`ApiError`](crate::error::ApiError).
//!
//! - [`batch`]: batched writes, `POST .../stream/contacts` and `.../stream/events`.
//! - [`stream`]: the token check, `GET .../stream`.
//! - [`specs`]: what the datasource declares, `GET .../stream/specs/...`.
//! - [`contact_delete`]: `DELETE .../stream/contacts/{user_id}`.
//! - [`erasure`]: erasing a user, and reading the erasure status.
//! - [`openapi`]: `GET /openapi.json` (not guarded).
//!
//! What the surfaces share: [`guard`] (authentication, the rate limit and its
//! `X-RateLimit-*` headers, the one read path) and [`write`] (publishing with its counters,
//! `?_sync`, the one-item answer for a bad user id). This file only assembles the routes.

pub mod batch;
pub mod contact_delete;
pub mod erasure;
pub mod guard;
pub mod openapi;
pub mod specs;
pub mod stream;
pub mod write;

use axum::routing::{delete, get, post};
use axum::Router;

use crate::state::AppState;

/// Every route of the public API and its handler (the layers are added by
/// [`crate::router`]).
pub fn routes() -> Router<AppState> {
    let base = "/v1/project/{project}/datasource/{datasource}";
    Router::new()
        .route(&format!("{base}/stream"), get(stream::get_stream))
        .route(
            &format!("{base}/stream/specs/attributes"),
            get(specs::get_attribute_specs),
        )
        .route(
            &format!("{base}/stream/specs/events"),
            get(specs::get_event_specs),
        )
        .route(
            &format!("{base}/stream/specs/event-parameters/{{event_type}}"),
            get(specs::get_event_parameter_specs),
        )
        .route(
            &format!("{base}/stream/contacts"),
            post(batch::post_contacts),
        )
        .route(
            &format!("{base}/stream/contacts/{{user_id}}"),
            delete(contact_delete::delete_contact),
        )
        .route(&format!("{base}/stream/events"), post(batch::post_events))
        .route(
            &format!("{base}/stream/users/{{user_id}}"),
            delete(erasure::delete_user),
        )
        .route(
            &format!("{base}/stream/users/{{user_id}}/erasure"),
            get(erasure::get_erasure_status),
        )
        .route("/openapi.json", get(openapi::get_openapi))
}
