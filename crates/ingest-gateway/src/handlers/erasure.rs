//! Erasing a user: `DELETE /stream/users/{user_id}` and
//! `GET /stream/users/{user_id}/erasure` (docs/API.md, "Erasing a user").
//!
//! The gateway publishes the erasure ([`Operation::EraseUser`], on the contacts topic with
//! the user's key, so it is ordered with the user's contact writes); workers record it in
//! `user_erasures`, delete what is stored and drop what is still on its way. The status
//! read here is that table's row.

use std::time::Duration;

use axum::extract::RawQuery;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, SecondsFormat, SubsecRound, Utc};
use ingest_types::tenancy::Endpoint;
use ingest_types::{BatchAnswer, Envelope, Operation, ENVELOPE_VERSION};
use serde::{Deserialize, Serialize, Serializer};
use utoipa::{IntoParams, ToSchema};

use super::guard::{Admitted, DatasourcePath, Guard};
use super::write::{invalid_user_id, publish, wants_sync};
use crate::directory::LookupError;
use crate::error::{ApiError, Message};
use crate::state::AppState;
use crate::views::{GuardedErrors, PathErrors};

/// Longest the status read may take (the pool's acquire time-out included); past it, 503.
const STATUS_READ_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct UserPath {
    #[param(pattern = r"^[A-Za-z0-9_-]{1,64}$")]
    project: String,
    #[param(pattern = r"^[A-Za-z0-9_-]{1,64}$")]
    datasource: String,
    /// The user's `_user_id` (percent-encoded): 1–256 characters, no control characters.
    #[param(
        min_length = 1,
        max_length = 256,
        pattern = r"^[^\u0000-\u001f\u007f-\u009f]*$"
    )]
    user_id: String,
}

impl DatasourcePath for UserPath {
    fn ids(&self) -> (&str, &str) {
        (&self.project, &self.datasource)
    }
}

/// The query of `DELETE /stream/users/{user_id}` (for the OpenAPI document; parsed by
/// [`wants_sync`]).
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct ErasureSyncQuery {
    /// Answer only once a worker has carried the erasure out (200, `"status": "completed"`),
    /// or after `INGEST_SYNC_WAIT_MS` (default 10 s) with the usual 202. On for any value
    /// (`?_sync`, `?_sync=true`, `?_sync=1`, ...) except `false` and `0`.
    _sync: Option<String>,
}

/// Where an erasure request stands when the `DELETE` is answered: `accepted` (durable in
/// the broker; a worker will carry it out) or, with `?_sync`, `completed` (a worker has
/// carried it out).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ErasureRequestStatus {
    Accepted,
    Completed,
}

/// The answer to `DELETE /stream/users/{user_id}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErasureAccepted {
    /// The user id, as decoded from the path.
    pub user_id: String,
    /// The erasure's moment: every write of the user the gateway received up to this
    /// instant is erased. RFC 3339 in UTC, to the microsecond. The erasure status
    /// (`GET .../erasure`) shows this same value once a worker has recorded this erasure.
    #[serde(serialize_with = "micros")]
    #[schema(value_type = String, format = DateTime, example = "2026-12-02T15:52:56.123456Z")]
    pub accepted_at: DateTime<Utc>,
    pub status: ErasureRequestStatus,
}

/// What the workers have recorded of the user's erasures: `none` (no erasure recorded:
/// none was requested, it has not reached a worker yet, or its record was purged after
/// the tombstone horizon), `in_progress` (the latest recorded erasure is being carried
/// out) or `completed` (it is done).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ErasureState {
    None,
    InProgress,
    Completed,
}

/// The answer to `GET /stream/users/{user_id}/erasure`.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErasureStatus {
    /// The user id, as decoded from the path.
    pub user_id: String,
    pub status: ErasureState,
    /// The `accepted_at` of the latest recorded erasure (`null` for `none`). Compare it with
    /// the one your `DELETE` was answered: an earlier value means your erasure is not
    /// recorded yet.
    #[serde(serialize_with = "optional_micros")]
    #[schema(value_type = Option<String>, format = DateTime, required = true,
        example = "2026-12-02T15:52:56.123456Z")]
    pub accepted_at: Option<DateTime<Utc>>,
    /// When the latest recorded erasure was finished (`null` unless `completed`).
    #[serde(serialize_with = "optional_micros")]
    #[schema(value_type = Option<String>, format = DateTime, required = true,
        example = "2026-12-02T15:52:57.500000Z")]
    pub completed_at: Option<DateTime<Utc>>,
    /// Rows deleted by the user's recorded erasures so far (0 for `none`).
    #[schema(minimum = 0)]
    pub events_erased: i64,
}

/// RFC 3339 in UTC with microseconds and `Z`: `2026-12-02T15:52:56.123456Z`.
fn micros<S: Serializer>(at: &DateTime<Utc>, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&at.to_rfc3339_opts(SecondsFormat::Micros, true))
}

fn optional_micros<S: Serializer>(
    at: &Option<DateTime<Utc>>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    match at {
        Some(at) => micros(at, serializer),
        None => serializer.serialize_none(),
    }
}

/// `DELETE /stream/users/{user_id}`: erases the user from the datasource — the contact
/// and every write of the user (events included) received up to the answer's
/// `accepted_at`, stored or still on its way. Published on the contacts topic with the
/// same key as the user's contact writes.
#[utoipa::path(delete, path = "/v1/project/{project}/datasource/{datasource}/stream/users/{user_id}", tag = "erasure",
    params(UserPath, ErasureSyncQuery),
    responses(
        (status = 200, description = "With `?_sync`: a worker has carried the erasure out (`\"status\": \"completed\"`); every write of the user received up to `accepted_at` is deleted", body = ErasureAccepted),
        (status = 202, description = "The erasure is durable in the broker (`\"status\": \"accepted\"`): every write of the user received up to `accepted_at` will be erased. With `?_sync`: the worker did not finish within the wait. Erasing a user with nothing stored is not an error", body = ErasureAccepted),
        (status = 422, description = "The user id is invalid (`_user_id: Invalid format`): the one-item batch answer", body = BatchAnswer),
        PathErrors,
        GuardedErrors,
    ))]
pub async fn delete_user(guard: Guard<UserPath>, RawQuery(query): RawQuery) -> Response {
    let sync = wants_sync(query.as_deref());
    guard
        .run(Endpoint::Erasures, |request| erase(request, sync))
        .await
}

async fn erase(request: Admitted<UserPath>, sync: bool) -> Result<Response, ApiError> {
    if let Some(invalid) = invalid_user_id(&request.path.user_id) {
        return Ok(invalid);
    }
    let request_id = request.request_id();
    let Admitted {
        state, auth, path, ..
    } = request;
    let user_id = path.user_id;
    let mut envelope = Envelope {
        v: ENVELOPE_VERSION,
        project: auth.project,
        datasource: auth.datasource,
        user_id: user_id.clone(),
        // To the microsecond, as `timestamptz` stores `erased_through`.
        received_at: Utc::now().trunc_subsecs(6),
        request_id,
        sync_id: None,
        op: Operation::EraseUser,
    };
    // `?_sync`: registered before publishing so the announcement cannot be missed; the
    // worker announces one item for the erasure once it is complete.
    let registration = sync.then(|| state.sync.register(1));
    if let Some(registration) = &registration {
        envelope.sync_id = Some(registration.sync_id.clone());
    }
    publish(&state, std::slice::from_ref(&envelope), "user_erasure").await?;
    let completed = match registration {
        Some(registration) => registration.committed_within(state.config.sync_wait).await,
        None => false,
    };
    let (code, status) = if completed {
        (StatusCode::OK, ErasureRequestStatus::Completed)
    } else {
        (StatusCode::ACCEPTED, ErasureRequestStatus::Accepted)
    };
    let answer = ErasureAccepted {
        user_id,
        accepted_at: envelope.received_at,
        status,
    };
    Ok((code, Json(answer)).into_response())
}

/// `GET /stream/users/{user_id}/erasure`: the user's erasure status, as the workers have
/// recorded it in the database.
///
/// An erasure still in Kafka (accepted, not yet taken by a worker) is not known here: the
/// status then shows the previous recorded erasure, or `none`. So a producer waiting for
/// its erasure compares `accepted_at` with the one its `DELETE` was answered: equal (or
/// later) and `completed` means done.
#[utoipa::path(get, path = "/v1/project/{project}/datasource/{datasource}/stream/users/{user_id}/erasure", tag = "erasure",
    params(UserPath),
    responses(
        (status = 200, description = "The latest erasure of the user that a worker has recorded: `none`, `in_progress` or `completed`. An erasure still in the broker is not recorded yet: compare `accepted_at` with the `DELETE`'s", body = ErasureStatus),
        (status = 422, description = "The user id is invalid (`_user_id: Invalid format`): the one-item batch answer", body = BatchAnswer),
        PathErrors,
        GuardedErrors,
        (status = 503, description = "Retry after `Retry-After` (seconds): the database cannot be read right now (unreachable, or no answer within 2 s); or, as for every endpoint, the tenancy database cannot be reached and this gateway has not seen the token before", body = Message),
    ))]
pub async fn get_erasure_status(guard: Guard<UserPath>) -> Response {
    guard.run(Endpoint::Erasures, read_status).await
}

async fn read_status(request: Admitted<UserPath>) -> Result<Response, ApiError> {
    if let Some(invalid) = invalid_user_id(&request.path.user_id) {
        return Ok(invalid);
    }
    let Admitted {
        state, auth, path, ..
    } = &request;
    let row = read_erasure(state, &auth.project, &auth.datasource, &path.user_id)
        .await
        .map_err(|err| {
            if err.is_unreachable() {
                ApiError::ErasureStatusUnavailable(err)
            } else {
                ApiError::Internal {
                    request_id: request.request_id(),
                    source: err.into(),
                }
            }
        })?;
    let user_id = request.path.user_id;
    let status = match row {
        None => ErasureStatus {
            user_id,
            status: ErasureState::None,
            accepted_at: None,
            completed_at: None,
            events_erased: 0,
        },
        Some((erased_through, completed_at, events_erased)) => ErasureStatus {
            user_id,
            status: if completed_at.is_some() {
                ErasureState::Completed
            } else {
                ErasureState::InProgress
            },
            accepted_at: Some(erased_through),
            completed_at,
            events_erased,
        },
    };
    Ok(Json(status).into_response())
}

type ErasureRow = (DateTime<Utc>, Option<DateTime<Utc>>, i64);

/// The user's `user_erasures` row, read within [`STATUS_READ_TIMEOUT`].
async fn read_erasure(
    state: &AppState,
    project: &str,
    datasource: &str,
    user_id: &str,
) -> Result<Option<ErasureRow>, LookupError> {
    let query = sqlx::query_as::<_, ErasureRow>(
        "SELECT erased_through, completed_at, events_erased FROM user_erasures
         WHERE project = $1 AND datasource = $2 AND user_id = $3",
    )
    .bind(project)
    .bind(datasource)
    .bind(user_id)
    .fetch_optional(&state.db);
    match tokio::time::timeout(STATUS_READ_TIMEOUT, query).await {
        Ok(row) => Ok(row?),
        Err(_) => Err(LookupError::TimedOut(STATUS_READ_TIMEOUT)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn times_are_rfc3339_utc_microseconds() {
        let at = Utc.with_ymd_and_hms(2026, 12, 2, 15, 52, 56).unwrap();
        let status = ErasureStatus {
            user_id: "u".into(),
            status: ErasureState::InProgress,
            accepted_at: Some(at),
            completed_at: None,
            events_erased: 0,
        };
        assert_eq!(
            serde_json::to_value(&status).unwrap(),
            serde_json::json!({"user_id": "u", "status": "in_progress",
                "accepted_at": "2026-12-02T15:52:56.000000Z", "completed_at": null,
                "events_erased": 0})
        );
    }
}
