//! Extractors whose failures answer like every other error (JSON, through [`ApiError`]),
//! and the request id.

use std::convert::Infallible;
use std::net::IpAddr;

use axum::extract::{FromRequestParts, Path};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderName};
use serde::de::DeserializeOwned;

use crate::error::ApiError;

/// Path parameters, like axum's [`Path`], but a path that cannot be decoded (invalid
/// percent-encoded UTF-8, say) is a JSON 400 instead of axum's plain-text one.
pub struct ApiPath<T>(pub T);

impl<S, T> FromRequestParts<S> for ApiPath<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        Path::<T>::from_request_parts(parts, state)
            .await
            .map(|Path(value)| ApiPath(value))
            .map_err(|rejection| ApiError::BadRequest(rejection.body_text()))
    }
}

/// The client's IP address, when the request came through [`crate::server::serve`]
/// (absent when a router is called directly, as unit tests do).
pub struct ClientAddr(pub Option<IpAddr>);

impl<S: Send + Sync> FromRequestParts<S> for ClientAddr {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Infallible> {
        Ok(ClientAddr(
            crate::server::client_addr(&parts.extensions).map(|addr| addr.ip()),
        ))
    }
}

/// The header that carries the request id: the client's own when sane, else a new UUID
/// (set by the router's request-id layers, echoed on every answer).
pub const REQUEST_ID_HEADER: HeaderName = HeaderName::from_static("x-request-id");

/// The request id set (or propagated) by the request-id middleware.
pub fn request_id(headers: &HeaderMap) -> String {
    headers
        .get(REQUEST_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}
