//! The one guard every datasource endpoint stands behind: authentication, the
//! datasource's rate limit for the endpoint, and the `X-RateLimit-*` headers on the answer.
//!
//! A handler takes a [`Guard`] (an extractor: the decoded path, the head, the client's
//! address) and hands its work to [`Guard::run`], which calls it with the [`Admitted`]
//! request only when the token may act there and the limit allows; a read hands a view
//! of what the guard found to [`Guard::read`] instead. Everything here is decided from the
//! request head: a request answered 401, 404 or 429 never has its body read.

use std::future::Future;
use std::net::IpAddr;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use axum::Json;
use ingest_types::tenancy::Endpoint;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use utoipa::IntoParams;

use crate::directory::Authorized;
use crate::error::ApiError;
use crate::extract::{request_id, ApiPath, ClientAddr};
use crate::metrics::RATE_LIMITED_TOTAL;
use crate::state::AppState;

/// A path under `/v1/project/{project}/datasource/{datasource}`: the ids the guard checks
/// the token against.
pub trait DatasourcePath {
    /// `(project, datasource)`.
    fn ids(&self) -> (&str, &str);
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct StreamPath {
    /// The project's id; an id outside this alphabet is answered like an unknown one (404).
    #[param(pattern = r"^[A-Za-z0-9_-]{1,64}$")]
    project: String,
    /// The datasource's id; an id outside this alphabet is answered like an unknown one (404).
    #[param(pattern = r"^[A-Za-z0-9_-]{1,64}$")]
    datasource: String,
}

impl DatasourcePath for StreamPath {
    fn ids(&self) -> (&str, &str) {
        (&self.project, &self.datasource)
    }
}

/// A request to a datasource endpoint, not yet checked: its path `P` (decoded, else 400),
/// its head and the client's address.
pub struct Guard<P> {
    state: AppState,
    path: P,
    headers: HeaderMap,
    client: Option<IpAddr>,
}

impl<P> FromRequestParts<AppState> for Guard<P>
where
    P: DeserializeOwned + Send,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let ApiPath(path) = ApiPath::<P>::from_request_parts(parts, state).await?;
        let ClientAddr(client) = match ClientAddr::from_request_parts(parts, state).await {
            Ok(client) => client,
            Err(never) => match never {},
        };
        Ok(Self {
            state: state.clone(),
            path,
            headers: parts.headers.clone(),
            client,
        })
    }
}

/// A request the guard let through: the token's authorization for the datasource, and
/// what the handler needs of the request.
pub struct Admitted<P> {
    pub state: AppState,
    pub auth: Authorized,
    pub path: P,
    pub headers: HeaderMap,
}

impl<P> Admitted<P> {
    /// The request id set (or propagated) by the request-id middleware.
    pub fn request_id(&self) -> String {
        request_id(&self.headers)
    }
}

impl<P: DatasourcePath> Guard<P> {
    /// Authenticates, counts the request against the datasource's limit for `endpoint`,
    /// runs `handler` when allowed, and puts the `X-RateLimit-*` headers on the answer.
    pub async fn run<F, Fut>(self, endpoint: Endpoint, handler: F) -> Response
    where
        F: FnOnce(Admitted<P>) -> Fut,
        Fut: Future<Output = Result<Response, ApiError>>,
    {
        let Guard {
            state,
            path,
            headers,
            client,
        } = self;
        let authorization = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        let (project, datasource) = path.ids();
        let auth = match state
            .directory
            .authorize(authorization, project, datasource, client)
            .await
        {
            Ok(auth) => auth,
            Err(err) => return ApiError::from_auth(err, request_id(&headers)).into_response(),
        };
        let decision = state
            .limiter
            .check(
                &auth.project,
                &auth.datasource,
                endpoint,
                auth.limits.get(endpoint),
            )
            .await;
        let mut response = if decision.allowed {
            let admitted = Admitted {
                state,
                auth,
                path,
                headers,
            };
            handler(admitted)
                .await
                .unwrap_or_else(IntoResponse::into_response)
        } else {
            metrics::counter!(RATE_LIMITED_TOTAL, "endpoint" => endpoint.as_str()).increment(1);
            ApiError::RateLimited {
                retry_after: decision.retry_after(),
            }
            .into_response()
        };
        decision.apply_headers(response.headers_mut());
        response
    }

    /// The one shape of every read: guarded like any request, then `view` of the
    /// authorization (and the path), answered as JSON with 200.
    pub async fn read<T, V>(self, endpoint: Endpoint, view: V) -> Response
    where
        T: Serialize,
        V: FnOnce(Authorized, P) -> Result<T, ApiError>,
    {
        self.run(endpoint, |admitted| async move {
            let body = view(admitted.auth, admitted.path)?;
            Ok(Json(body).into_response())
        })
        .await
    }
}
