//! The errors of making a client. (What happens to items is never an error: every item
//! ends in an [`Outcome`](crate::Outcome).)

/// Why `ClientBuilder::build` failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An option out of its range, or an unusable base URL.
    #[error("invalid ingest client configuration: {0}")]
    Config(String),
    /// `build()` was called outside a Tokio runtime (the client runs a background task).
    #[error("the ingest client must be built inside a Tokio runtime")]
    NoRuntime,
    /// The HTTP client could not be made (e.g. no TLS backend for an `https` URL).
    #[error("could not build the HTTP client")]
    Http(#[from] reqwest::Error),
}
