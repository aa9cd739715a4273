//! What became of each item: the [`Outcome`] every enqueued item ends in exactly once,
//! and the [`DeliveryHandle`] that resolves to it. (Reporting it is `pending.rs`.)

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use serde::Serialize;
use serde_json::Value;
use tokio::sync::oneshot;

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
                    // dropped (see `Pending`'s Drop, pending.rs). Kept total rather than panicking.
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
