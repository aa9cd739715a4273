//! Receiving a batch body, only once the request is authenticated and within its limits:
//! reserved against the in-flight budget, read within the body timeout, decompressed
//! with a bomb guard, and split into raw items.

use std::io::Read;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{header, HeaderMap};
use flate2::read::MultiGzDecoder;
use serde::de::IgnoredAny;
use serde_json::value::RawValue;

use crate::budget::{BodyBudget, Reservation};
use crate::directory::Authorized;
use crate::error::ApiError;

/// Most items one batch may hold.
pub const MAX_ITEMS: usize = 100;
/// Largest request body, after decompression.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// A received body, decompressed; its bytes stay reserved in the budget until dropped.
pub struct Received {
    pub bytes: Bytes,
    _reservation: Reservation,
}

/// How the body is encoded (`Content-Encoding`).
#[derive(Debug, Clone, Copy, PartialEq)]
enum Encoding {
    Identity,
    Gzip,
}

/// Reads the body of an authorized request: 413 when it is (or declares to be) over
/// [`MAX_BODY_BYTES`], 503 when the budget cannot take it now, 408 when it does not
/// arrive within `timeout`, 400 when its encoding is unsupported or broken.
pub async fn receive(
    budget: &BodyBudget,
    timeout: Duration,
    auth: &Authorized,
    headers: &HeaderMap,
    body: Body,
) -> Result<Received, ApiError> {
    let encoding = encoding(headers)?;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|len| len > MAX_BODY_BYTES) {
        return Err(too_large());
    }
    // A gzip body is decompressed whole: up to the limit again.
    let wanted = declared.unwrap_or(MAX_BODY_BYTES)
        + if encoding == Encoding::Gzip {
            MAX_BODY_BYTES
        } else {
            0
        };
    let reservation = budget
        .try_reserve(&auth.project, &auth.datasource, wanted)
        .ok_or(ApiError::Overloaded)?;
    let raw = match tokio::time::timeout(timeout, axum::body::to_bytes(body, MAX_BODY_BYTES)).await
    {
        Err(_elapsed) => return Err(ApiError::BodyTimeout(timeout)),
        Ok(Err(err)) if is_length_limit(&err) => return Err(too_large()),
        Ok(Err(err)) => {
            return Err(ApiError::BadRequest(format!(
                "Body could not be read: {err}"
            )))
        }
        Ok(Ok(bytes)) => bytes,
    };
    let bytes = match encoding {
        Encoding::Identity => raw,
        Encoding::Gzip => gunzip(&raw)?,
    };
    Ok(Received {
        bytes,
        _reservation: reservation,
    })
}

fn too_large() -> ApiError {
    ApiError::PayloadTooLarge {
        limit: MAX_BODY_BYTES,
    }
}

fn is_length_limit(err: &axum::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(err) = source {
        if err.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        source = err.source();
    }
    false
}

/// `Content-Encoding`: none, `identity`, `gzip` or `x-gzip`; anything else is 400.
fn encoding(headers: &HeaderMap) -> Result<Encoding, ApiError> {
    let encoding = headers
        .get(header::CONTENT_ENCODING)
        .map(|v| v.to_str().unwrap_or("").trim().to_ascii_lowercase());
    match encoding.as_deref() {
        None | Some("") | Some("identity") => Ok(Encoding::Identity),
        Some("gzip") | Some("x-gzip") => Ok(Encoding::Gzip),
        Some(other) => Err(ApiError::BadRequest(format!(
            "Unsupported Content-Encoding {other:?}: send gzip or no encoding"
        ))),
    }
}

/// Decompresses a gzip body. Decompression stops one byte past [`MAX_BODY_BYTES`], so a
/// small bomb costs at most that much memory.
fn gunzip(compressed: &[u8]) -> Result<Bytes, ApiError> {
    let mut decoded = Vec::new();
    MultiGzDecoder::new(compressed)
        .take(MAX_BODY_BYTES as u64 + 1)
        .read_to_end(&mut decoded)
        .map_err(|e| ApiError::BadRequest(format!("Body is not valid gzip: {e}")))?;
    if decoded.len() > MAX_BODY_BYTES {
        return Err(too_large());
    }
    Ok(Bytes::from(decoded))
}

/// The batch's items, borrowed as raw JSON (each is parsed once, when validated, and
/// its size is the size it was sent with).
pub fn parse_batch(body: &[u8]) -> Result<Vec<&RawValue>, ApiError> {
    let text = std::str::from_utf8(body).map_err(|e| {
        ApiError::BadRequest(format!("Body is not valid UTF-8 (JSON text must be): {e}"))
    })?;
    let items: Vec<&RawValue> = serde_json::from_str(text).map_err(|e| {
        if serde_json::from_str::<IgnoredAny>(text).is_ok() {
            ApiError::BadRequest("Body should be an array".into())
        } else {
            ApiError::BadRequest(format!("Body should be a JSON array: {e}"))
        }
    })?;
    if items.is_empty() {
        return Err(ApiError::BadRequest("Body should not be empty".into()));
    }
    if items.len() > MAX_ITEMS {
        return Err(ApiError::BadRequest(format!(
            "Body should have at most {MAX_ITEMS} items, got {}",
            items.len()
        )));
    }
    Ok(items)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(body: &[u8]) -> String {
        match parse_batch(body) {
            Err(ApiError::BadRequest(m)) => m,
            other => panic!("expected 400, got {other:?}"),
        }
    }

    #[test]
    fn batch_shape_errors_say_which() {
        assert!(message(b"{nope").starts_with("Body should be a JSON array"));
        assert_eq!(message(br#"{"a":1}"#), "Body should be an array");
        assert_eq!(message(b"[]"), "Body should not be empty");
        let big = format!("[{}]", vec!["{}"; 101].join(","));
        assert!(message(big.as_bytes()).contains("at most 100"));
        assert_eq!(parse_batch(b"[1, {}]").unwrap().len(), 2);
    }

    #[test]
    fn invalid_utf8_is_named() {
        // An array whose string holds a byte that is not UTF-8.
        let message = message(b"[{\"_user_id\": \"a\xffb\"}]");
        assert!(message.starts_with("Body is not valid UTF-8"), "{message}");
    }
}
