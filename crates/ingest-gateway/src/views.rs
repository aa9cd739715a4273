//! JSON bodies the gateway answers with, besides the batch answer (which lives in
//! `ingest_types::answer`). Typed, so the OpenAPI document describes what is sent.

use std::collections::BTreeMap;

use ingest_types::validate::specs::DataType;
use serde::Serialize;
use utoipa::{IntoResponses, ToSchema};

/// `{"message": "..."}`: every error answer with a body (500s add `request_id`).
#[derive(Debug, Serialize, ToSchema)]
pub struct Message {
    pub message: String,
    /// Only on 500: quote it to support.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
}

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

/// A contact item of `POST /stream/contacts` (the full rules are in the API docs).
#[derive(Debug, Serialize, ToSchema)]
pub struct ContactItem {
    /// Required; 1–256 characters, no control characters.
    pub _user_id: String,
    /// A valid address, at most 254 characters; `null` removes it.
    pub _email: Option<String>,
    /// E.164, e.g. `+34600000000`; `null` removes it.
    pub _phone_mobile: Option<String>,
    /// At most 256 characters; `null` removes it.
    pub _first_name: Option<String>,
    /// At most 256 characters; `null` removes it.
    pub _last_name: Option<String>,
    /// Custom attributes: names `^[a-z][a-z0-9_]{0,63}$`; values strings (≤ 1024
    /// characters), numbers, booleans, `null` (removes), or arrays of up to 100 of those.
    #[serde(flatten)]
    pub custom: BTreeMap<String, serde_json::Value>,
}

/// An event item of `POST /stream/events`.
#[derive(Debug, Serialize, ToSchema)]
pub struct EventItem {
    /// Required; 1–256 characters, no control characters.
    pub _user_id: String,
    /// Required; 1–128 characters. An id already accepted is acknowledged again and stored once.
    pub _event_id: String,
    /// Required; 1–128 characters; one of the declared event types, if any are declared.
    pub _event_type: String,
    /// RFC 3339 with offset, at most 24 h in the future; defaults to the time of receipt.
    pub _event_date: Option<String>,
    /// Values as for custom attributes; declared parameter specs are enforced.
    pub _event_parameters: Option<BTreeMap<String, serde_json::Value>>,
}

/// The failures every authenticated endpoint can answer with (for the OpenAPI document).
#[derive(IntoResponses)]
#[allow(dead_code)] // Only named by OpenAPI annotations; `ApiError` builds the real answers.
pub enum GuardedErrors {
    #[response(
        status = 401,
        description = "Missing, non-Bearer, malformed, unknown or revoked token"
    )]
    Unauthorized(Message),
    #[response(
        status = 404,
        description = "Unknown project or datasource, or the token may not write there"
    )]
    NotFound(Message),
    #[response(
        status = 429,
        description = "Rate limit exceeded (empty body; `Retry-After` and `X-RateLimit-*` headers)"
    )]
    RateLimited,
    #[response(status = 500, description = "Something broke; quote `request_id`")]
    Internal(Message),
    #[response(
        status = 503,
        description = "The tenancy database or the broker cannot be reached; retry after `Retry-After`"
    )]
    Unavailable(Message),
}

/// The answers specific to the batch endpoints (for the OpenAPI document).
#[derive(IntoResponses)]
#[allow(dead_code)]
pub enum BatchAnswers {
    #[response(
        status = 200,
        description = "With `?_sync`: every accepted item is committed in the database"
    )]
    Committed(ingest_types::BatchAnswer),
    #[response(
        status = 202,
        description = "At least one item accepted and durable in the broker; see each item's outcome"
    )]
    Accepted(ingest_types::BatchAnswer),
    #[response(
        status = 400,
        description = "Body not JSON, not an array, empty, over 100 items, bad gzip"
    )]
    BadRequest(Message),
    #[response(status = 413, description = "Body over 1 MiB after decompression")]
    TooLarge(Message),
    #[response(status = 422, description = "Every item failed validation")]
    AllInvalid(ingest_types::BatchAnswer),
}
