//! The OpenAPI 3.1 document served at `GET /openapi.json`, generated from the handlers'
//! annotations and the answer types.

use std::sync::OnceLock;

use ingest_types::answer::{BatchAnswer, BatchEntity, ItemOutcome, ItemStatus};
use ingest_types::validate::specs::DataType;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::handlers;
use crate::views::{
    AttributeSpecView, AttributeSpecs, ContactItem, EventItem, EventParameterSpecs, EventSpecs,
    EventTypeView, Health, Message, ParameterSpecView, StreamInfo,
};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Ingest API",
        description = "Batched writes of contacts and events with per-item outcomes. \
                       A 202 means every accepted item is durable in the broker.",
    ),
    paths(
        handlers::get_stream,
        handlers::post_contacts,
        handlers::post_events,
        handlers::delete_contact,
        handlers::get_attribute_specs,
        handlers::get_event_specs,
        handlers::get_event_parameter_specs,
    ),
    components(schemas(
        BatchAnswer, BatchEntity, ItemOutcome, ItemStatus, DataType, Message, StreamInfo,
        AttributeSpecs, AttributeSpecView, EventSpecs, EventTypeView, EventParameterSpecs,
        ParameterSpecView, Health, ContactItem, EventItem,
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

/// The document, built once.
pub fn document() -> &'static utoipa::openapi::OpenApi {
    static DOC: OnceLock<utoipa::openapi::OpenApi> = OnceLock::new();
    DOC.get_or_init(ApiDoc::openapi)
}
