//! The gateway's HTTP errors. `IntoResponse` below is the only place that chooses a
//! status code for a failure, logs it at the right level and counts it.

use std::time::Duration;

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;

use crate::directory::AuthError;
use crate::publish::PublishError;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    Unauthorized(&'static str),
    /// Unknown project or datasource, or a token not authorized for it: one answer
    /// for both, so ids do not leak.
    #[error("project or datasource not found")]
    NotFound,
    #[error("{0}")]
    BadRequest(String),
    /// No route has this path (router level).
    #[error("no such endpoint")]
    NoSuchEndpoint,
    /// The path exists, not with this method (router level).
    #[error("method not allowed")]
    MethodNotAllowed,
    /// The body did not arrive within `INGEST_BODY_TIMEOUT_MS`.
    #[error("the request body did not arrive within {0:?}")]
    BodyTimeout(Duration),
    #[error("event type not declared for this datasource")]
    EventTypeNotDeclared,
    #[error("body is larger than {limit} bytes")]
    PayloadTooLarge { limit: usize },
    /// Past the datasource's requests-per-minute limit: 429, empty body.
    #[error("rate limit exceeded")]
    RateLimited { retry_after: u64 },
    #[error("cannot check the token right now; retry shortly")]
    AuthUnavailable(#[source] crate::directory::LookupError),
    /// The erasure status cannot be read: the database is unreachable or too slow.
    #[error("cannot read the erasure status right now; retry shortly")]
    ErasureStatusUnavailable(#[source] crate::directory::LookupError),
    /// The in-flight body budget cannot take this body now (see `budget`).
    #[error("the gateway is receiving too much data right now; retry shortly")]
    Overloaded,
    #[error("the message broker could not take the batch in time")]
    Unavailable {
        retry_after: Duration,
        #[source]
        source: PublishError,
    },
    #[error("internal error")]
    Internal {
        request_id: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// `{"message": "..."}`: every error answer with a body (500s add `request_id`).
#[derive(Debug, Serialize, ToSchema)]
pub struct Message {
    pub message: String,
    /// Only on 500: quote it to support.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = match &self {
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::NotFound | ApiError::EventTypeNotDeclared | ApiError::NoSuchEndpoint => {
                StatusCode::NOT_FOUND
            }
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::BodyTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            ApiError::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::AuthUnavailable(_)
            | ApiError::ErasureStatusUnavailable(_)
            | ApiError::Unavailable { .. }
            | ApiError::Overloaded => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal { .. } => StatusCode::INTERNAL_SERVER_ERROR,
        };
        if status.is_server_error() {
            tracing::error!(error = %ErrorChain(&self), status = status.as_u16(), "request failed");
        } else {
            tracing::debug!(error = %self, status = status.as_u16(), "request rejected");
        }
        let retry_after = match &self {
            ApiError::Unavailable { retry_after, .. } => Some(retry_after.as_secs().max(1)),
            ApiError::AuthUnavailable(_)
            | ApiError::ErasureStatusUnavailable(_)
            | ApiError::Overloaded => Some(1),
            ApiError::RateLimited { retry_after } => Some(*retry_after),
            _ => None,
        };
        let mut response = match &self {
            // The contract: 429 has an empty body.
            ApiError::RateLimited { .. } => status.into_response(),
            _ => (status, Json(self.body())).into_response(),
        };
        if let ApiError::Unauthorized(_) = &self {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if let Some(seconds) = retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        if let ApiError::BodyTimeout(_) = &self {
            // The rest of the body may still be on its way: the connection cannot be reused.
            response
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        response
    }
}

impl ApiError {
    fn body(&self) -> Message {
        Message {
            message: self.to_string(),
            request_id: match self {
                ApiError::Internal { request_id, .. } => Some(request_id.clone()),
                _ => None,
            },
        }
    }
}

impl ApiError {
    /// The answer for a failed authorization; `request_id` goes into a 500's body.
    pub fn from_auth(err: AuthError, request_id: String) -> Self {
        match err {
            AuthError::Unauthenticated(message) => ApiError::Unauthorized(message),
            AuthError::NotFound => ApiError::NotFound,
            AuthError::Unavailable(source) => ApiError::AuthUnavailable(source),
            AuthError::Lookup(source) => ApiError::Internal {
                request_id,
                source: source.into(),
            },
            AuthError::TooManyLookups { retry_after } => ApiError::RateLimited {
                retry_after: retry_after.as_secs_f64().ceil().max(1.0) as u64,
            },
        }
    }
}

/// Displays an error with its whole `source()` chain.
pub struct ErrorChain<'a>(pub &'a (dyn std::error::Error + 'static));

impl std::fmt::Display for ErrorChain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(err) = source {
            write!(f, ": {err}")?;
            source = err.source();
        }
        Ok(())
    }
}
