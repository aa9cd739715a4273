//! The Rust client of the ingest API (docs/clients.md): producers enqueue events and
//! contact writes; the client batches them, retries what is safe to retry, and reports
//! what became of every item.
//!
//! ```no_run
//! # async fn example() -> Result<(), ingest_client::Error> {
//! use serde_json::json;
//! use std::time::Duration;
//!
//! let client = ingest_client::Client::builder("https://ingest.example.com", "shop", "web", "ingk_...")
//!     .build()?;
//! let handle = client.track(json!({"_user_id": "u1", "_event_type": "purchase"})).await;
//! client.upsert(json!({"_user_id": "u1", "_email": "ada@example.com"})).await;
//! let outcome = handle.await; // accepted, rejected (with the server's field errors) or failed
//! assert!(outcome.is_accepted());
//! client.close(Duration::from_secs(10)).await;
//! # Ok(()) }
//! ```
//!
//! Where things are:
//! - `client.rs`: the calls (`build`, `track`, `upsert`, `delete`, `flush`, `close`,
//!   `stats`);
//! - `shared.rs`: the state the client's tasks share (the queue, which items are not
//!   reported yet, each endpoint's pause and in-flight slots);
//! - `batch.rs`: forming requests by count, bytes and interval, and the order of
//!   contact writes;
//! - `deliver.rs`: sending one batch and its retries; `answer.rs`: reading the answer
//!   per item;
//! - `retry.rs`: which answers are retried, the backoff, `Retry-After`/`X-RateLimit-Reset`;
//! - `outcome.rs`: the outcome of an item and the handle that resolves to it;
//!   `pending.rs`: an item held until it is reported, and the reporting;
//! - `stats.rs`, `config.rs`, `transport.rs` (the HTTP attempt, reqwest).
//!
//! Each module uses only modules after it in this order, so they import each other in
//! no loop: `client`, `batch`, `deliver`, `answer`, `pending`, `shared`, `config`,
//! `stats`, `transport`, `retry`, `outcome`, `error`.

mod answer;
mod batch;
mod client;
mod config;
mod deliver;
mod error;
mod outcome;
mod pending;
mod retry;
mod shared;
mod stats;
mod transport;

#[cfg(test)]
mod testing;

pub use client::{Client, CloseReport};
pub use config::{ClientBuilder, DeliveryCallback, Overflow, MAX_BATCH_BYTES, MAX_BATCH_ITEMS};
pub use error::Error;
pub use outcome::{DeliveryHandle, FieldErrors, Kind, Outcome, Status};
pub use stats::Stats;
