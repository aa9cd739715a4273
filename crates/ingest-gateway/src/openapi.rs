//! The OpenAPI 3.1 document served at `GET /openapi.json`, generated from the handlers'
//! annotations and the answer types, plus the response headers (see [`add_headers`]).
//!
//! It describes the public API only: the operations endpoints (`/healthz`, `/readyz`,
//! `/metrics`) are not part of it.

use std::sync::OnceLock;

use serde_json::{json, Value};

use ingest_types::answer::{BatchAnswer, BatchEntity, ItemOutcome, ItemStatus};
use ingest_types::validate::specs::DataType;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::error::Message;
use crate::handlers::erasure::{
    self, ErasureAccepted, ErasureRequestStatus, ErasureState, ErasureStatus,
};
use crate::handlers::{batch, contact_delete, specs, stream};
use crate::views::{
    AttributeScalar, AttributeSpecView, AttributeSpecs, AttributeValue, ContactBatch, ContactItem,
    EventBatch, EventItem, EventParameterSpecs, EventSpecs, EventTypeView, ParameterSpecView,
    StreamInfo, UserId,
};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Ingest API",
        description = "Batched writes of contacts and events with per-item outcomes. \
                       A 202 means every accepted item is durable in the broker.",
    ),
    paths(
        stream::get_stream,
        batch::post_contacts,
        batch::post_events,
        contact_delete::delete_contact,
        specs::get_attribute_specs,
        specs::get_event_specs,
        specs::get_event_parameter_specs,
        erasure::delete_user,
        erasure::get_erasure_status,
    ),
    components(schemas(
        BatchAnswer, BatchEntity, ItemOutcome, ItemStatus, DataType, Message, StreamInfo,
        AttributeSpecs, AttributeSpecView, EventSpecs, EventTypeView, EventParameterSpecs,
        ParameterSpecView, ContactBatch, ContactItem, EventBatch, EventItem, UserId,
        AttributeValue, AttributeScalar, ErasureAccepted, ErasureRequestStatus, ErasureStatus,
        ErasureState,
    )),
    modifiers(&BearerToken),
    security(("bearer" = [])),
)]
struct ApiDoc;

struct BearerToken;

impl Modify for BearerToken {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("A datasource or project token (`ingk_...`), from `ingestctl token create`."))
                    .build(),
            ),
        );
    }
}

/// The document as served, built once.
pub fn document() -> &'static Value {
    static DOC: OnceLock<Value> = OnceLock::new();
    DOC.get_or_init(|| {
        let mut doc = serde_json::to_value(ApiDoc::openapi()).expect("the document serializes");
        add_headers(&mut doc);
        doc
    })
}

/// Which response headers an answer carries, and whether always (`required`) or only in
/// some cases. Added here, in one place, rather than on each response: utoipa's header
/// objects cannot say `required`, and without it a checker does not verify a header is
/// there.
fn headers_of(status: u16) -> Vec<(&'static str, bool, Value)> {
    let seconds = || json!({"type": "integer", "minimum": 0});
    let mut headers = vec![(
        "X-Request-Id",
        true,
        json!({"type": "string", "minLength": 1, "maxLength": 128,
               "description": "The client's own `X-Request-Id` when it sent a sane one \
                               (1–128 visible ASCII characters), else a new UUID"}),
    )];
    // Decided inside the datasource's rate-limited handling: always there. Otherwise
    // only when the request got that far (not on 401 and unknown-datasource 404s, which
    // come before the datasource is known, nor on the answers of the router itself).
    let rate_limited_always = matches!(status, 200 | 202 | 422);
    let rate_limited_sometimes = matches!(status, 400 | 404 | 408 | 413 | 429 | 500 | 503);
    if rate_limited_always || rate_limited_sometimes {
        let note = if rate_limited_always {
            ""
        } else {
            " Present only when the request was authenticated for an existing datasource."
        };
        for (name, what) in [
            (
                "X-RateLimit-Limit",
                "Requests allowed in the current window (per minute).",
            ),
            (
                "X-RateLimit-Remaining",
                "Requests left in the current window.",
            ),
            (
                "X-RateLimit-Reset",
                "Unix time (seconds) when the window resets.",
            ),
        ] {
            let description = format!("{what}{note}");
            headers.push((
                name,
                rate_limited_always,
                json!({"type": "integer", "minimum": 0, "description": description}),
            ));
        }
    }
    match status {
        401 => headers.push((
            "WWW-Authenticate",
            true,
            json!({"type": "string", "const": "Bearer"}),
        )),
        405 => headers.push((
            "Allow",
            true,
            json!({"type": "string", "description": "The methods the path has"}),
        )),
        429 | 503 => {
            let mut schema = seconds();
            schema["description"] = json!("Seconds to wait before retrying");
            headers.push(("Retry-After", true, schema));
        }
        _ => {}
    }
    headers
}

/// Adds [`headers_of`] to every response of every operation.
fn add_headers(doc: &mut Value) {
    let Some(paths) = doc.get_mut("paths").and_then(Value::as_object_mut) else {
        return;
    };
    for operation in paths.values_mut().filter_map(Value::as_object_mut) {
        for operation in operation.values_mut() {
            let Some(responses) = operation
                .get_mut("responses")
                .and_then(Value::as_object_mut)
            else {
                continue;
            };
            for (status, response) in responses.iter_mut() {
                let Ok(status) = status.parse::<u16>() else {
                    continue;
                };
                let headers = response
                    .as_object_mut()
                    .expect("a response object")
                    .entry("headers")
                    .or_insert_with(|| json!({}));
                for (name, required, mut schema) in headers_of(status) {
                    let description = schema.as_object_mut().and_then(|s| s.remove("description"));
                    let mut header = json!({"required": required, "schema": schema});
                    if let Some(description) = description {
                        header["description"] = description;
                    }
                    headers[name] = header;
                }
            }
        }
    }
}
