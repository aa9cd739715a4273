//! What became of each item: the [`Outcome`] every enqueued item ends in exactly once,
//! the [`DeliveryHandle`] that resolves to it, and the crate's side of reporting it
//! (counters, the `on_delivery` callback, the caller's handle, `flush()`'s bookkeeping).

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use serde::Serialize;
use serde_json::Value;
use tokio::sync::{oneshot, OwnedSemaphorePermit};

use crate::client::Core;

/// Field → messages, as the server's batch answer gives them (`{"_email": ["Invalid
/// format"]}`); for a whole-request refusal `{"_request": [message]}`.
pub type FieldErrors = BTreeMap<String, Vec<String>>;

/// Which call enqueued the item.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// `track()`: `POST /stream/events`.
    Event,
    /// `upsert()`: `POST /stream/contacts`.
    Contact,
    /// `delete()`: `DELETE /stream/contacts/{user_id}`.
    Delete,
}

/// How an item ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Status {
    /// The server answered the item `success` (202, or 200 under `sync`).
    Accepted {
        /// True when answered 200 under `sync`: the item is in the database.
        committed: bool,
        attempts: u32,
    },
    /// The server refused the item: its batch answer marks it `error`, or the whole
    /// request got a status that is not retried (then `errors` is `{"_request": [message]}`).
    /// Also an item refused before sending because its encoding alone is over
    /// `max_batch_bytes` (`{"_item": ["Too large"]}`, no `http_status`, 0 attempts).
    Rejected {
        errors: FieldErrors,
        http_status: Option<u16>,
        attempts: u32,
    },
    /// Given up: retried past `retry_deadline`, or still undelivered when `close()` timed out
    /// (`message` is then "closed before delivery").
    Failed {
        /// The last error.
        message: String,
        http_status: Option<u16>,
        attempts: u32,
    },
    /// Never queued: the queue was full under `Overflow::Drop`, or the client was closed.
    Dropped { message: String },
}

/// The final outcome of one enqueued item.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Outcome {
    pub kind: Kind,
    /// The item as enqueued (for an event, with the `_event_id` the client generated); for
    /// a delete `{"_user_id": ...}`.
    pub item: Value,
    #[serde(flatten)]
    pub status: Status,
}

impl Outcome {
    pub fn is_accepted(&self) -> bool {
        matches!(self.status, Status::Accepted { .. })
    }

    /// Requests made for the item (0 when it was never sent).
    pub fn attempts(&self) -> u32 {
        match self.status {
            Status::Accepted { attempts, .. }
            | Status::Rejected { attempts, .. }
            | Status::Failed { attempts, .. } => attempts,
            Status::Dropped { .. } => 0,
        }
    }

    /// The item's `_event_id` (events) or `_user_id`, when it has one.
    pub fn id(&self) -> Option<&str> {
        let key = match self.kind {
            Kind::Event => "_event_id",
            Kind::Contact | Kind::Delete => "_user_id",
        };
        self.item.get(key).and_then(Value::as_str)
    }
}

/// The future of one item's [`Outcome`], returned by `track()`, `upsert()` and
/// `delete()`. It may be dropped: the outcome still reaches `on_delivery`, the counters
/// and the log.
#[must_use = "a DeliveryHandle does nothing unless awaited (dropping it is fine: the item is still delivered)"]
#[derive(Debug)]
pub struct DeliveryHandle {
    state: HandleState,
}

#[derive(Debug)]
enum HandleState {
    Waiting {
        receiver: oneshot::Receiver<Outcome>,
        kind: Kind,
    },
    Ready(Option<Outcome>),
}

impl DeliveryHandle {
    pub(crate) fn waiting(receiver: oneshot::Receiver<Outcome>, kind: Kind) -> Self {
        Self {
            state: HandleState::Waiting { receiver, kind },
        }
    }

    pub(crate) fn ready(outcome: Outcome) -> Self {
        Self {
            state: HandleState::Ready(Some(outcome)),
        }
    }
}

impl Future for DeliveryHandle {
    type Output = Outcome;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Outcome> {
        match &mut self.get_mut().state {
            HandleState::Ready(outcome) => Poll::Ready(
                outcome
                    .take()
                    .expect("DeliveryHandle polled after completion"),
            ),
            HandleState::Waiting { receiver, kind } => {
                Pin::new(receiver).poll(cx).map(|result| {
                    // Unreachable in practice: a pending item reports itself even when
                    // dropped (see `Pending`'s Drop). Kept total rather than panicking.
                    result.unwrap_or_else(|_| Outcome {
                        kind: *kind,
                        item: Value::Null,
                        status: Status::Failed {
                            message: "the client stopped before reporting this item".into(),
                            http_status: None,
                            attempts: 0,
                        },
                    })
                })
            }
        }
    }
}

/// An item held by the client: queued, in a batch, or being sent. Holds its place in
/// the bounded queue until it is reported; reported exactly once, by [`Pending::finish`]
/// or, should it ever be dropped unreported (a panic, a runtime shutting down), by its
/// `Drop` as `failed`.
pub(crate) struct Pending {
    pub seq: u64,
    pub kind: Kind,
    pub item: Value,
    /// The item's JSON text, as sent (empty for a delete).
    pub encoded: Bytes,
    reply: Option<oneshot::Sender<Outcome>>,
    _slot: Option<OwnedSemaphorePermit>,
    core: Arc<Core>,
}

impl Pending {
    pub(crate) fn new(
        core: Arc<Core>,
        seq: u64,
        kind: Kind,
        item: Value,
        encoded: Bytes,
        slot: OwnedSemaphorePermit,
    ) -> (Self, DeliveryHandle) {
        let (reply, receiver) = oneshot::channel();
        let pending = Self {
            seq,
            kind,
            item,
            encoded,
            reply: Some(reply),
            _slot: Some(slot),
            core,
        };
        (pending, DeliveryHandle::waiting(receiver, kind))
    }

    /// Reports the item's final outcome.
    pub(crate) fn finish(mut self, status: Status) {
        self.report(status);
    }

    fn report(&mut self, status: Status) {
        let Some(reply) = self.reply.take() else {
            return;
        };
        let outcome = Outcome {
            kind: self.kind,
            item: std::mem::take(&mut self.item),
            status,
        };
        self.core.report(&outcome, Some(self.seq));
        let _ = reply.send(outcome);
        // The queue slot is released when `self` is dropped, right after this.
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        if self.reply.is_some() {
            tracing::error!(
                kind = ?self.kind,
                "an item was dropped unreported (the client was stopped abruptly); reported failed"
            );
            self.report(Status::Failed {
                message: "the client stopped before delivering this item".into(),
                http_status: None,
                attempts: 0,
            });
        }
    }
}

/// An outcome decided at enqueue time (dropped, or too large): reported at once.
pub(crate) fn immediate(core: &Core, kind: Kind, item: Value, status: Status) -> DeliveryHandle {
    let outcome = Outcome { kind, item, status };
    core.report(&outcome, None);
    DeliveryHandle::ready(outcome)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn outcomes_serialize_with_a_status_tag() {
        let outcome = Outcome {
            kind: Kind::Event,
            item: json!({"_event_id": "e1"}),
            status: Status::Rejected {
                errors: [("_email".to_owned(), vec!["Invalid format".to_owned()])].into(),
                http_status: Some(202),
                attempts: 1,
            },
        };
        assert_eq!(
            serde_json::to_value(&outcome).unwrap(),
            json!({"kind": "event", "item": {"_event_id": "e1"}, "status": "rejected",
                   "errors": {"_email": ["Invalid format"]}, "http_status": 202, "attempts": 1})
        );
        assert_eq!(outcome.id(), Some("e1"));
        assert_eq!(outcome.attempts(), 1);
        assert!(!outcome.is_accepted());
    }
}
