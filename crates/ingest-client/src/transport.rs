//! One HTTP attempt, behind a small trait so that the batching and retry logic can be
//! tested with a fake transport and a paused clock. The real one is reqwest.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use bytes::Bytes;
use reqwest::header::{HeaderMap, HeaderValue, AUTHORIZATION, CONTENT_ENCODING, CONTENT_TYPE};

use crate::error::Error;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Method {
    Post,
    Delete,
}

/// One request as the client means it (the token is the transport's business).
#[derive(Debug, Clone)]
pub(crate) struct Request {
    pub method: Method,
    pub url: String,
    /// The JSON body (`None` for a delete); gzip-compressed already when `gzip` is set.
    pub body: Option<Bytes>,
    pub gzip: bool,
}

/// The parts of an answer the client reads.
#[derive(Debug, Clone, Default)]
pub(crate) struct Response {
    pub status: u16,
    pub retry_after: Option<String>,
    pub ratelimit_reset: Option<String>,
    pub body: Bytes,
}

/// No answer: connect, reset, timeout of the attempt, unreadable body.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub(crate) struct TransportError(pub String);

pub(crate) type Answer = Pin<Box<dyn Future<Output = Result<Response, TransportError>> + Send>>;

pub(crate) trait Transport: Send + Sync + 'static {
    fn send(&self, request: Request) -> Answer;
}

/// The real transport: one reqwest client (a connection pool) for the client's life.
pub(crate) struct Http {
    client: reqwest::Client,
}

impl Http {
    pub fn new(token: &str, request_timeout: Duration, pool: usize) -> Result<Self, Error> {
        let mut headers = HeaderMap::new();
        let mut authorization = HeaderValue::from_str(&format!("Bearer {token}"))
            .map_err(|_| Error::Config("the token is not a valid header value".into()))?;
        authorization.set_sensitive(true);
        headers.insert(AUTHORIZATION, authorization);
        let client = reqwest::Client::builder()
            .default_headers(headers)
            .user_agent(concat!("ingest-client-rs/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(request_timeout)
            .pool_max_idle_per_host(pool)
            .tcp_nodelay(true)
            .build()?;
        Ok(Self { client })
    }
}

impl Transport for Http {
    fn send(&self, request: Request) -> Answer {
        let mut builder = match request.method {
            Method::Post => self.client.post(&request.url),
            Method::Delete => self.client.delete(&request.url),
        };
        if let Some(body) = request.body {
            builder = builder.header(CONTENT_TYPE, "application/json").body(body);
            if request.gzip {
                builder = builder.header(CONTENT_ENCODING, "gzip");
            }
        }
        Box::pin(async move {
            let answer = builder.send().await.map_err(network_error)?;
            let header = |name: &str| {
                answer
                    .headers()
                    .get(name)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned)
            };
            let status = answer.status().as_u16();
            let retry_after = header("retry-after");
            let ratelimit_reset = header("x-ratelimit-reset");
            let body = answer.bytes().await.map_err(network_error)?;
            Ok(Response {
                status,
                retry_after,
                ratelimit_reset,
                body,
            })
        })
    }
}

/// The error with its causes (reqwest's own message alone says little:
/// "error sending request for url (...)").
fn network_error(error: reqwest::Error) -> TransportError {
    let mut message = error.to_string();
    let mut source = std::error::Error::source(&error);
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    TransportError(message)
}

/// A scripted transport for the unit tests: every request is recorded, and a handler
/// chosen by the test answers it (possibly after a delay on the paused clock).
#[cfg(test)]
pub(crate) mod fake {
    use std::sync::{Arc, Mutex};

    use super::*;

    pub type Handler = dyn Fn(&Request, usize) -> Answer + Send + Sync;

    /// A request as the fake saw it.
    #[derive(Debug, Clone)]
    pub struct Seen {
        pub method: Method,
        pub url: String,
        /// The JSON body, decompressed if it was gzip.
        pub body: Option<serde_json::Value>,
        pub raw_len: usize,
        pub gzip: bool,
        pub at: tokio::time::Instant,
    }

    pub struct Fake {
        handler: Box<Handler>,
        pub seen: Mutex<Vec<Seen>>,
    }

    impl Fake {
        /// `handler(request, n)` answers the n-th request (0-based).
        pub fn new(
            handler: impl Fn(&Request, usize) -> Answer + Send + Sync + 'static,
        ) -> Arc<Self> {
            Arc::new(Self {
                handler: Box::new(handler),
                seen: Mutex::new(Vec::new()),
            })
        }

        pub fn seen(&self) -> Vec<Seen> {
            self.seen.lock().unwrap().clone()
        }
    }

    impl Transport for Arc<Fake> {
        fn send(&self, request: Request) -> Answer {
            let body = request.body.as_ref().map(|raw| {
                let text = if request.gzip {
                    use std::io::Read;
                    let mut out = Vec::new();
                    flate2::read::GzDecoder::new(&raw[..])
                        .read_to_end(&mut out)
                        .expect("valid gzip");
                    out
                } else {
                    raw.to_vec()
                };
                serde_json::from_slice(&text).expect("the body is JSON")
            });
            let n = {
                let mut seen = self.seen.lock().unwrap();
                seen.push(Seen {
                    method: request.method,
                    url: request.url.clone(),
                    body,
                    raw_len: request.body.as_ref().map_or(0, |b| b.len()),
                    gzip: request.gzip,
                    at: tokio::time::Instant::now(),
                });
                seen.len() - 1
            };
            (self.handler)(&request, n)
        }
    }

    /// An answer at once.
    pub fn now(response: Result<Response, TransportError>) -> Answer {
        Box::pin(async move { response })
    }

    /// An answer after `delay` (on the tokio clock).
    pub fn after(delay: Duration, response: Result<Response, TransportError>) -> Answer {
        Box::pin(async move {
            tokio::time::sleep(delay).await;
            response
        })
    }

    /// An answer that never comes.
    pub fn never() -> Answer {
        Box::pin(std::future::pending())
    }

    /// `status` with `body`.
    pub fn status(status: u16, body: serde_json::Value) -> Result<Response, TransportError> {
        Ok(Response {
            status,
            body: if body.is_null() {
                Bytes::new()
            } else {
                Bytes::from(body.to_string())
            },
            ..Response::default()
        })
    }

    /// The batch answer a gateway would give when every item of `request` is accepted.
    pub fn all_accepted(request: &Request, status: u16) -> Result<Response, TransportError> {
        let items = match &request.body {
            None => 1,
            Some(body) => {
                let body: serde_json::Value = if request.gzip {
                    use std::io::Read;
                    let mut out = Vec::new();
                    flate2::read::GzDecoder::new(&body[..])
                        .read_to_end(&mut out)
                        .unwrap();
                    serde_json::from_slice(&out).unwrap()
                } else {
                    serde_json::from_slice(body).unwrap()
                };
                body.as_array().unwrap().len()
            }
        };
        let items: Vec<_> = (0..items)
            .map(|_| serde_json::json!({"status": "success", "_user_id": "u"}))
            .collect();
        self::status(
            status,
            serde_json::json!({"entity": {"successful": items.len(), "failed": 0, "items": items}}),
        )
    }
}
