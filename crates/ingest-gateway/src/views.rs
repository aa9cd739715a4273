//! JSON bodies the gateway answers with, besides the batch answer (which lives in
//! `ingest_types::answer`) and the error body ([`Message`], in `error`). Typed, so the
//! OpenAPI document describes what is sent.

use std::collections::BTreeMap;

use ingest_types::validate::specs::DataType;
use serde::Serialize;
use utoipa::openapi::schema::{
    AdditionalProperties, AnyOfBuilder, ArrayBuilder, KnownFormat, ObjectBuilder, Ref,
    SchemaFormat, SchemaType, Type,
};
use utoipa::openapi::{RefOr, Schema};
use utoipa::{IntoResponses, PartialSchema, ToSchema};

use crate::error::Message;

/// `GET /stream`: what the token may do here.
#[derive(Debug, Serialize, ToSchema)]
pub struct StreamInfo {
    pub project: String,
    pub datasource: String,
    /// `datasource` (this datasource only) or `project` (every datasource of the project).
    pub token_scope: String,
    /// Requests per minute for each endpoint of this datasource.
    pub rate_limits: BTreeMap<String, u32>,
}

/// One attribute in `GET /stream/specs/attributes`.
#[derive(Debug, Serialize, ToSchema)]
pub struct AttributeSpecView {
    pub name: String,
    pub data_type: DataType,
    pub multivalue: bool,
    /// Most values of a multivalue attribute; `null` for single-valued ones.
    pub max_values: Option<u32>,
    /// One of the reserved attributes (`_user_id`, `_email`, ...).
    pub reserved: bool,
    pub required: bool,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AttributeSpecs {
    /// The reserved attributes, then the declared custom ones by name.
    pub attributes: Vec<AttributeSpecView>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct EventTypeView {
    pub name: String,
    /// How many parameter specs the type declares.
    pub parameters: usize,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct EventSpecs {
    /// Declared event types by name; empty means any event type is accepted.
    pub event_types: Vec<EventTypeView>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ParameterSpecView {
    pub name: String,
    pub data_type: DataType,
    pub multivalue: bool,
    pub max_values: Option<u32>,
    pub required: bool,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct EventParameterSpecs {
    pub event_type: String,
    pub parameters: Vec<ParameterSpecView>,
}

/// `GET /healthz` and `GET /readyz`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    /// `ok`, `ready` or `unavailable`.
    pub status: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

// ---------------------------------------------------------------------------------------
// Request bodies. Only for the OpenAPI document: the handlers read raw JSON and validate
// it item by item (`ingest_types::validate`), so these schemas are written by hand, as
// precisely as JSON Schema can state those rules; what it cannot state is in their
// descriptions (and in docs/API.md, "The OpenAPI document and the fuzzer").
// ---------------------------------------------------------------------------------------

/// No U+0000 anywhere in the string (refused as `Invalid format`).
const NO_NUL: &str = r"^[^\u0000]*$";
/// No control characters (Unicode category Cc: U+0000–U+001F, U+007F–U+009F).
const NO_CONTROL: &str = r"^[^\u0000-\u001f\u007f-\u009f]*$";
/// A custom attribute or event parameter name.
const NAME: &str = r"^[a-z][a-z0-9_]{0,63}$";
/// The keys a contact may have: the reserved attributes and custom attribute names.
const CONTACT_KEY: &str =
    r"^(_user_id|_email|_phone_mobile|_first_name|_last_name|[a-z][a-z0-9_]{0,63})$";
/// E.164, ASCII digits.
const E164: &str = r"^\+[1-9][0-9]{1,14}$";

const PARTIAL_SUCCESS: &str = "Items are validated one by one and one bad item never blocks \
    the others: a batch with at least one valid item is answered 202 (partial success), \
    with every item's outcome in request order (`\"status\": \"error\"` and its `errors` for \
    the items that failed); only a batch whose items all fail is answered 422. Each item \
    must also be at most 32 KiB of JSON as sent, and must not repeat a key; an item that \
    breaks either rule (or is not an object) fails alone, under `_item`.";

fn string(min: Option<usize>, max: Option<usize>, pattern: &str) -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .min_length(min)
        .max_length(max)
        .pattern(Some(pattern))
}

/// `builder` with several types (e.g. `["string", "null"]`).
fn with_types(builder: ObjectBuilder, types: &[Type]) -> ObjectBuilder {
    builder.schema_type(SchemaType::Array(types.to_vec()))
}

fn reference(name: &str) -> Ref {
    Ref::from_schema_name(name)
}

/// A contact's or event's `_user_id`.
pub struct UserId;

impl PartialSchema for UserId {
    fn schema() -> RefOr<Schema> {
        string(
            Some(1),
            Some(ingest_types::validate::MAX_USER_ID_CHARS),
            NO_CONTROL,
        )
        .description(Some(
            "1–256 characters (Unicode scalar values), no control characters. \
                 Errors: `Required`, `Must be a string`, `Invalid format`.",
        ))
        .into()
    }
}

impl ToSchema for UserId {}

/// A single value of a custom attribute or event parameter.
pub struct AttributeScalar;

impl PartialSchema for AttributeScalar {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(SchemaType::Array(vec![
                Type::Null,
                Type::Boolean,
                Type::Number,
                Type::String,
            ]))
            .max_length(Some(ingest_types::validate::MAX_STRING_VALUE_CHARS))
            .pattern(Some(NO_NUL))
            .description(Some(
                "A string (at most 1024 characters, no U+0000), a number (kept exactly as \
                 sent), a boolean or `null`.",
            ))
            .into()
    }
}

impl ToSchema for AttributeScalar {}

/// The value of a custom attribute or event parameter.
pub struct AttributeValue;

impl PartialSchema for AttributeValue {
    fn schema() -> RefOr<Schema> {
        AnyOfBuilder::new()
            .item(reference("AttributeScalar"))
            .item(
                ArrayBuilder::new()
                    .items(reference("AttributeScalar"))
                    .max_items(Some(ingest_types::validate::MAX_VALUES)),
            )
            .description(Some(
                "A scalar, or a multivalue: an array of at most 100 scalars. `null` removes \
                 a contact's attribute. When the datasource declares a spec for the name \
                 (`GET /stream/specs/attributes`, `.../event-parameters/{event_type}`), the \
                 value must also have the declared type and at most the declared number of \
                 values. Errors: `Invalid name`, `Invalid type`, `Too long`, `Too many values`.",
            ))
            .into()
    }
}

impl ToSchema for AttributeValue {
    fn schemas(schemas: &mut Vec<(String, RefOr<Schema>)>) {
        schemas.push(("AttributeScalar".into(), AttributeScalar::schema()));
    }
}

/// A contact item of `POST /stream/contacts`.
pub struct ContactItem;

impl PartialSchema for ContactItem {
    fn schema() -> RefOr<Schema> {
        use ingest_types::validate::{MAX_EMAIL_CHARS, MAX_NAME_CHARS};
        let name = |which: &str| {
            with_types(
                string(None, Some(MAX_NAME_CHARS), NO_NUL),
                &[Type::String, Type::Null],
            )
            .description(Some(format!(
                "The contact's {which} name: at most 256 characters, no U+0000; `null` \
                 removes it. Errors: `Must be a string`, `Too long`, `Invalid format`."
            )))
        };
        ObjectBuilder::new()
            .schema_type(Type::Object)
            .description(Some(
                "A contact, keyed by `_user_id`: keys present overwrite, `null` removes an \
                 attribute, absent keys are left as they were. Any other key starting with \
                 `_` is refused (`Unknown reserved attribute`); any other key is a custom \
                 attribute.",
            ))
            .required("_user_id")
            .property("_user_id", reference("UserId"))
            .property(
                "_email",
                with_types(
                    ObjectBuilder::new()
                        .format(Some(SchemaFormat::KnownFormat(KnownFormat::IdnEmail)))
                        .max_length(Some(MAX_EMAIL_CHARS)),
                    &[Type::String, Type::Null],
                )
                .description(Some(
                    "An address (RFC 5321/5322, UTF-8 allowed as in RFC 6531) of at most 254 \
                     characters; `null` removes it. Stricter than `format: idn-email` alone: \
                     the domain must have a dot (`a@localhost` is refused), and domain \
                     literals (`a@[127.0.0.1]`) and display names (`Ann <a@b.co>`) are \
                     refused. Error: `Invalid format` (also for a non-string).",
                )),
            )
            .property(
                "_phone_mobile",
                with_types(
                    ObjectBuilder::new().pattern(Some(E164)),
                    &[Type::String, Type::Null],
                )
                .description(Some(
                    "E.164, e.g. `+34600000000`; `null` removes it. Error: `Invalid format` \
                     (also for a non-string).",
                )),
            )
            .property("_first_name", name("first"))
            .property("_last_name", name("last"))
            .property_names(Some(string(None, None, CONTACT_KEY)))
            .additional_properties(Some(reference("AttributeValue")))
            .into()
    }
}

impl ToSchema for ContactItem {
    fn schemas(schemas: &mut Vec<(String, RefOr<Schema>)>) {
        schemas.push(("UserId".into(), UserId::schema()));
        schemas.push(("AttributeValue".into(), AttributeValue::schema()));
        AttributeValue::schemas(schemas);
    }
}

/// An event item of `POST /stream/events`.
pub struct EventItem;

impl PartialSchema for EventItem {
    fn schema() -> RefOr<Schema> {
        use ingest_types::validate::{MAX_EVENT_ID_CHARS, MAX_EVENT_TYPE_CHARS};
        ObjectBuilder::new()
            .schema_type(Type::Object)
            .description(Some(
                "An event. Events are immutable: an `_event_id` already accepted for the \
                 datasource is acknowledged again as a success and stored once. Any other \
                 key is refused (`Unknown field`).",
            ))
            .required("_user_id")
            .required("_event_id")
            .required("_event_type")
            .property("_user_id", reference("UserId"))
            .property(
                "_event_id",
                string(Some(1), Some(MAX_EVENT_ID_CHARS), NO_CONTROL).description(Some(
                    "1–128 characters, no control characters. Errors: `Required`, \
                     `Must be a string`, `Invalid format`.",
                )),
            )
            .property(
                "_event_type",
                string(Some(1), Some(MAX_EVENT_TYPE_CHARS), NO_NUL).description(Some(
                    "1–128 characters, no U+0000. When the datasource declares event types \
                     (`GET /stream/specs/events`), one of them. Errors: `Required`, \
                     `Must be a string`, `Invalid format`, `Unknown event type`.",
                )),
            )
            .property(
                "_event_date",
                with_types(
                    ObjectBuilder::new()
                        .format(Some(SchemaFormat::KnownFormat(KnownFormat::DateTime))),
                    &[Type::String, Type::Null],
                )
                .description(Some(
                    "RFC 3339 with an offset; absent or `null`: the time the gateway received \
                     it. Beyond `format: date-time`: the instant must fall within the years \
                     0001–9999 in UTC (else `Invalid format`) and be at most 24 hours after \
                     the gateway received it (else `Too far in the future`); the past is not \
                     bounded. Stored in UTC.",
                )),
            )
            .property(
                "_event_parameters",
                with_types(
                    ObjectBuilder::new()
                        .property_names(Some(string(None, None, NAME)))
                        .additional_properties(Some(reference("AttributeValue"))),
                    &[Type::Object, Type::Null],
                )
                .description(Some(
                    "Parameters by name (`^[a-z][a-z0-9_]{0,63}$`), values as for custom \
                     attributes; absent or `null`: none. When the event type declares \
                     parameter specs, the required ones must be present and the types must \
                     match. Errors: `Must be an object`; per parameter under \
                     `_event_parameters.<name>` (`Required` for a missing required one).",
                )),
            )
            .additional_properties(Some(AdditionalProperties::FreeForm(false)))
            .into()
    }
}

impl ToSchema for EventItem {
    fn schemas(schemas: &mut Vec<(String, RefOr<Schema>)>) {
        schemas.push(("UserId".into(), UserId::schema()));
        schemas.push(("AttributeValue".into(), AttributeValue::schema()));
        AttributeValue::schemas(schemas);
    }
}

fn batch(item: &str, what: &str, example: serde_json::Value) -> RefOr<Schema> {
    ArrayBuilder::new()
        .items(reference(item))
        .min_items(Some(1))
        .max_items(Some(crate::body::MAX_ITEMS))
        .description(Some(format!(
            "1–100 {what}: a JSON array, at most 1 MiB (after decompression with \
             `Content-Encoding: gzip`). {PARTIAL_SUCCESS}"
        )))
        .examples([example])
        .into()
}

/// The body of `POST /stream/contacts`.
pub struct ContactBatch;

impl PartialSchema for ContactBatch {
    fn schema() -> RefOr<Schema> {
        batch(
            "ContactItem",
            "contacts",
            serde_json::json!([
                {"_user_id": "USER-1", "_email": "ann@example.com", "plan": "pro"},
                {"_user_id": "USER-2", "_phone_mobile": "+34600000000", "tags": ["a", "b"]},
            ]),
        )
    }
}

impl ToSchema for ContactBatch {
    fn schemas(schemas: &mut Vec<(String, RefOr<Schema>)>) {
        schemas.push(("ContactItem".into(), ContactItem::schema()));
        ContactItem::schemas(schemas);
    }
}

/// The body of `POST /stream/events`.
pub struct EventBatch;

impl PartialSchema for EventBatch {
    fn schema() -> RefOr<Schema> {
        batch(
            "EventItem",
            "events",
            serde_json::json!([
                {"_user_id": "USER-1", "_event_id": "EV-1", "_event_type": "purchase",
                 "_event_date": "2025-01-01T12:00:00Z", "_event_parameters": {"amount": 9.5}},
            ]),
        )
    }
}

impl ToSchema for EventBatch {
    fn schemas(schemas: &mut Vec<(String, RefOr<Schema>)>) {
        schemas.push(("EventItem".into(), EventItem::schema()));
        EventItem::schemas(schemas);
    }
}

/// The failures every endpoint under the base path can answer with (for the OpenAPI
/// document). The headers of every answer are added in [`crate::openapi`].
#[derive(IntoResponses)]
#[allow(dead_code)] // Only named by OpenAPI annotations; `ApiError` builds the real answers.
pub enum GuardedErrors {
    #[response(
        status = 401,
        description = "Missing, non-Bearer, malformed, unknown or revoked token \
                       (`WWW-Authenticate: Bearer`). Checked before the body is read."
    )]
    Unauthorized(Message),
    #[response(
        status = 404,
        description = "Unknown project or datasource, or the token may not write there (one \
                       answer for both, so ids do not leak; checked before the body is read); \
                       or no route matches the path at all (e.g. an empty id segment)"
    )]
    NotFound(Message),
    #[response(
        status = 405,
        description = "The path exists but not with this method; `Allow` lists the methods it has"
    )]
    MethodNotAllowed(Message),
    #[response(
        status = 429,
        description = "Empty body, `Retry-After` (seconds). Either the datasource's \
                       requests-per-minute limit for this endpoint is exceeded (with the \
                       `X-RateLimit-*` headers; checked before the body is read), or the \
                       client's address made too many token lookups (unknown tokens) lately"
    )]
    RateLimited,
    #[response(status = 500, description = "Something broke; quote `request_id`")]
    Internal(Message),
    #[response(
        status = 503,
        description = "Retry after `Retry-After` (seconds): the tenancy database cannot be \
                       reached and this gateway has not seen the token before; for writes, \
                       also: the broker could not take the batch in time (nothing of it counts \
                       as accepted), or the gateway's budget for request bodies in flight is \
                       used up"
    )]
    Unavailable(Message),
}

/// The 400 of the endpoints without a body (for the OpenAPI document).
#[derive(IntoResponses)]
#[allow(dead_code)]
pub enum PathErrors {
    #[response(
        status = 400,
        description = "A path id is not valid percent-encoded UTF-8"
    )]
    BadPath(Message),
}

/// The answers specific to the batch endpoints (for the OpenAPI document).
#[derive(IntoResponses)]
#[allow(dead_code)]
pub enum BatchAnswers {
    #[response(
        status = 200,
        description = "With `?_sync`: every accepted item is committed in the database. As \
                       for 202, items that failed validation are listed with their errors"
    )]
    Committed(ingest_types::BatchAnswer),
    #[response(
        status = 202,
        description = "At least one item accepted and durable in the broker. Partial \
                       success: items that failed validation are listed in request order \
                       with `\"status\": \"error\"` and their `errors`; the others were accepted"
    )]
    Accepted(ingest_types::BatchAnswer),
    #[response(
        status = 400,
        description = "Body not JSON, not an array, empty, over 100 items, not valid gzip, \
                       or an unsupported `Content-Encoding`; or a path id that is not valid \
                       percent-encoded UTF-8. `message` says which"
    )]
    BadRequest(Message),
    #[response(
        status = 408,
        description = "The body did not arrive within the gateway's body timeout"
    )]
    Timeout(Message),
    #[response(
        status = 413,
        description = "Body over 1 MiB (as sent, or after decompression)"
    )]
    TooLarge(Message),
    #[response(
        status = 422,
        description = "Every item failed validation: the batch answer, each item with its errors"
    )]
    AllInvalid(ingest_types::BatchAnswer),
}
