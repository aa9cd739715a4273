//! The token check, `GET /stream`: what the token may do at this datasource, through the
//! same read path as the specs ([`Guard::read`]).

use axum::response::Response;
use ingest_types::tenancy::Endpoint;

use super::guard::{Guard, StreamPath};
use crate::directory::Authorized;
use crate::views::{GuardedErrors, PathErrors, StreamInfo};

/// `GET /stream`: a cheap token check; says what the token may do here.
#[utoipa::path(get, path = "/v1/project/{project}/datasource/{datasource}/stream", tag = "stream",
    params(StreamPath),
    responses(
        (status = 200, description = "The token may write here", body = StreamInfo),
        PathErrors,
        GuardedErrors,
    ))]
pub async fn get_stream(guard: Guard<StreamPath>) -> Response {
    guard
        .read(Endpoint::Stream, |auth, _| Ok(stream_info(auth)))
        .await
}

fn stream_info(auth: Authorized) -> StreamInfo {
    let rate_limits = Endpoint::ALL
        .iter()
        .map(|e| (e.as_str().to_owned(), auth.limits.get(*e)))
        .collect();
    let token_scope = if auth.project_scope {
        "project"
    } else {
        "datasource"
    };
    StreamInfo {
        project: auth.project,
        datasource: auth.datasource,
        token_scope: token_scope.to_owned(),
        rate_limits,
    }
}
