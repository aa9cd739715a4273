//! What the write surfaces share (batch writes, contact delete, erasure): publishing with
//! its counters and its 503, the `?_sync` flag, and the one-item answer for a bad user id.

use std::time::{Duration, Instant};

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use ingest_types::answer::ItemKind;
use ingest_types::validate;
use ingest_types::{BatchAnswer, Envelope, ItemOutcome};

use crate::error::ApiError;
use crate::state::AppState;

/// Seconds a client should wait before retrying after a 503.
const RETRY_AFTER: Duration = Duration::from_secs(1);

/// Publishes and waits for every acknowledgement; counts the items as accepted only then.
pub async fn publish(
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

/// `?_sync`, `?_sync=true` or `?_sync=1` (not `?_sync=false` or `?_sync=0`).
pub fn wants_sync(query: Option<&str>) -> bool {
    query.unwrap_or_default().split('&').any(|pair| {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        name == "_sync" && !matches!(value, "false" | "0")
    })
}

/// The 422 for an invalid user id in a path: the one-item batch answer.
pub fn invalid_user_id(user_id: &str) -> Option<Response> {
    let errors = validate::check_user_id(user_id).err()?;
    let echo = validate::Echo {
        user_id: Some(user_id.to_owned()),
        event_id: None,
    };
    let answer = BatchAnswer::new(vec![ItemOutcome::new(
        ItemKind::Contact,
        echo,
        Some(errors),
    )]);
    Some((StatusCode::UNPROCESSABLE_ENTITY, Json(answer)).into_response())
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

    #[test]
    fn an_invalid_user_id_is_the_one_item_batch_answer() {
        assert!(invalid_user_id("USER/9").is_none());
        let response = invalid_user_id("a\u{1}b").unwrap();
        assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
    }
}
