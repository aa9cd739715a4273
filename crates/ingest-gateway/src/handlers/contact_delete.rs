//! Deleting a contact, `DELETE /stream/contacts/{user_id}`: one envelope on the contacts
//! topic, keyed like the user's upserts.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{SubsecRound, Utc};
use ingest_types::answer::ItemKind;
use ingest_types::tenancy::Endpoint;
use ingest_types::validate;
use ingest_types::{BatchAnswer, Envelope, ItemOutcome, Operation, ENVELOPE_VERSION};
use serde::Deserialize;
use utoipa::IntoParams;

use super::guard::{Admitted, DatasourcePath, Guard};
use super::write::{invalid_user_id, publish};
use crate::error::ApiError;
use crate::views::{GuardedErrors, PathErrors};

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

impl DatasourcePath for ContactPath {
    fn ids(&self) -> (&str, &str) {
        (&self.project, &self.datasource)
    }
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
pub async fn delete_contact(guard: Guard<ContactPath>) -> Response {
    guard.run(Endpoint::ContactsDelete, delete).await
}

async fn delete(request: Admitted<ContactPath>) -> Result<Response, ApiError> {
    if let Some(invalid) = invalid_user_id(&request.path.user_id) {
        return Ok(invalid);
    }
    let request_id = request.request_id();
    let Admitted {
        state, auth, path, ..
    } = request;
    let user_id = path.user_id;
    let echo = validate::Echo {
        user_id: Some(user_id.clone()),
        event_id: None,
    };
    let envelope = Envelope {
        v: ENVELOPE_VERSION,
        project: auth.project,
        datasource: auth.datasource,
        user_id,
        received_at: Utc::now().trunc_subsecs(6),
        request_id,
        sync_id: None,
        op: Operation::DeleteContact,
    };
    publish(&state, std::slice::from_ref(&envelope), "contact_delete").await?;
    let answer = BatchAnswer::new(vec![ItemOutcome::new(ItemKind::Contact, echo, None)]);
    Ok((StatusCode::ACCEPTED, Json(answer)).into_response())
}
