//! `GET /openapi.json`: this API as an OpenAPI 3.1 document (built in [`crate::openapi`]).

use axum::response::IntoResponse;
use axum::Json;

/// `GET /openapi.json`: this API as an OpenAPI 3.1 document.
pub async fn get_openapi() -> impl IntoResponse {
    Json(crate::openapi::document())
}
