//! Types shared by the gateway and the worker.
//!
//! - [`envelope`]: the versioned message that travels through Kafka, and its key.
//! - [`topics`]: topic names, derived from one configurable prefix.
//! - [`validate`]: pure functions from a JSON item to a typed operation or per-field errors.
//! - [`answer`]: the per-item batch answer the gateway sends back.
//! - [`tenancy`]: ids, the API token format and hashing, rate-limited endpoints.
//! - [`env`]: reading configuration from environment variables; `runtime` (feature
//!   `runtime`): the start-up the binaries share (logging, metrics, listeners, shutdown).

pub mod answer;
pub mod env;
pub mod envelope;
#[cfg(feature = "runtime")]
pub mod runtime;
pub mod tenancy;
pub mod topics;
pub mod validate;

pub use answer::{BatchAnswer, ItemKind, ItemOutcome};
pub use envelope::{Envelope, EnvelopeError, Operation, ENVELOPE_VERSION};
pub use topics::Topics;
