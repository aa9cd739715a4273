//! The [`Client`]: `build()`, the enqueue calls, `flush()`, `close()` and `stats()`. The
//! state its tasks share is `shared.rs`.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use serde_json::Value;
use tokio::sync::{mpsc, TryAcquireError};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::batch::{Cmd, Dispatcher};
use crate::config::{ClientBuilder, Config, Overflow};
use crate::error::Error;
use crate::outcome::{DeliveryHandle, FieldErrors, Kind, Status};
use crate::pending::{immediate, Pending};
use crate::shared::{lock, Core};
use crate::stats::Stats;
use crate::transport::Transport;

/// A client of one datasource. Cheap to clone (the clones share one queue); made with
/// [`Client::builder`]. Call [`Client::close`] before the program ends, or whatever is
/// still queued is lost with the runtime.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    core: Arc<Core>,
    commands: mpsc::UnboundedSender<Cmd>,
    dispatcher: Mutex<Option<JoinHandle<()>>>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("config", &self.inner.core.config)
            .field("stats", &self.stats())
            .finish()
    }
}

/// What `close()` found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CloseReport {
    /// The timeout passed before every item had an outcome.
    pub timed_out: bool,
    /// Items reported `failed` ("closed before delivery") because of that.
    pub abandoned: u64,
}

impl Client {
    /// A builder with the defaults of docs/clients.md.
    pub fn builder(
        base_url: impl Into<String>,
        project: impl Into<String>,
        datasource: impl Into<String>,
        token: impl Into<String>,
    ) -> ClientBuilder {
        ClientBuilder::new(base_url, project, datasource, token)
    }

    fn start(config: Config, transport: Arc<dyn Transport>) -> Result<Self, Error> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| Error::NoRuntime)?;
        let core = Arc::new(Core::new(config, transport));
        let (commands, receiver) = mpsc::unbounded_channel();
        let dispatcher = runtime.spawn(Dispatcher::new(core.clone(), receiver).run());
        Ok(Self {
            inner: Arc::new(Inner {
                core,
                commands,
                dispatcher: Mutex::new(Some(dispatcher)),
            }),
        })
    }

    /// Enqueues an event: an object with `_user_id`, `_event_type` and optionally
    /// `_event_id`, `_event_date`, `_event_parameters`. A UUID v7 is put in `_event_id`
    /// when it is missing (or `null`), before the item is queued, so retries are
    /// deduplicated by the server.
    ///
    /// Completes once the item is queued (under [`Overflow::Block`] it waits for room);
    /// the returned handle resolves to the item's [`Outcome`](crate::Outcome).
    pub async fn track(&self, event: impl Into<Value>) -> DeliveryHandle {
        let mut event = event.into();
        if let Some(object) = event.as_object_mut() {
            if object.get("_event_id").is_none_or(Value::is_null) {
                object.insert(
                    "_event_id".to_owned(),
                    Value::String(uuid::Uuid::now_v7().to_string()),
                );
            }
        }
        self.enqueue(Kind::Event, event).await
    }

    /// Enqueues a contact write: an object with `_user_id` and attributes (`null`
    /// removes one). Contact writes are sent in the order enqueued, one request at a time.
    pub async fn upsert(&self, contact: impl Into<Value>) -> DeliveryHandle {
        self.enqueue(Kind::Contact, contact.into()).await
    }

    /// Enqueues the deletion of a contact (`DELETE /stream/contacts/{user_id}`), sent
    /// alone once every contact write enqueued before it is answered.
    pub async fn delete(&self, user_id: impl Into<String>) -> DeliveryHandle {
        let mut item = serde_json::Map::new();
        item.insert("_user_id".to_owned(), Value::String(user_id.into()));
        self.enqueue(Kind::Delete, Value::Object(item)).await
    }

    async fn enqueue(&self, kind: Kind, item: Value) -> DeliveryHandle {
        let core = &self.inner.core;
        let encoded = match kind {
            Kind::Delete => Bytes::new(),
            Kind::Event | Kind::Contact => {
                if !item.is_object() {
                    return refuse(core, kind, item, "Must be an object");
                }
                let encoded = serde_json::to_vec(&item).expect("a JSON value always encodes");
                // `[item]`: the smallest body it can be sent in.
                if encoded.len() + 2 > core.config.max_batch_bytes {
                    return refuse(core, kind, item, "Too large");
                }
                Bytes::from(encoded)
            }
        };
        let slot = match core.config.overflow {
            Overflow::Block => core.queue.clone().acquire_owned().await.ok(),
            Overflow::Drop => match core.queue.clone().try_acquire_owned() {
                Ok(slot) => Some(slot),
                Err(TryAcquireError::Closed) => None,
                Err(TryAcquireError::NoPermits) => {
                    return drop_item(core, kind, item, "queue full");
                }
            },
        };
        let Some(slot) = slot else {
            return drop_item(core, kind, item, "client closed");
        };
        let mut tracker = core.tracker();
        let Some(seq) = tracker.register() else {
            drop(tracker);
            return drop_item(core, kind, item, "client closed");
        };
        core.counters.enqueued();
        let (pending, handle) = Pending::new(core.clone(), seq, kind, item, encoded, slot);
        // Sent under the lock: `close()` marks the tracker closed under it too, so every
        // item reaches the dispatcher before its `Close`.
        let sent = self.inner.commands.send(Cmd::Item(pending));
        drop(tracker);
        if let Err(mpsc::error::SendError(Cmd::Item(pending))) = sent {
            pending.finish(Status::Failed {
                message: "the client's background task has stopped".into(),
                http_status: None,
                attempts: 0,
            });
        }
        handle
    }

    /// Sends everything enqueued so far and returns once each of those items has its
    /// final outcome (retries included, up to `retry_deadline`).
    pub async fn flush(&self) {
        let Some((upto, waiter)) = self.inner.core.wait_for_all(false) else {
            return;
        };
        let _ = self.inner.commands.send(Cmd::Flush(upto));
        let _ = waiter.await;
    }

    /// Stops taking items (later calls report `dropped`), flushes, and returns once every
    /// item has an outcome or `timeout` passed; what is still undelivered then is
    /// reported `failed` ("closed before delivery"), in-flight requests abandoned.
    pub async fn close(&self, timeout: Duration) -> CloseReport {
        let core = &self.inner.core;
        let deadline = Instant::now() + timeout;
        let everything = core.wait_for_all(true);
        // Wakes any enqueue call waiting for room: it reports its item dropped.
        core.queue.close();
        let _ = self.inner.commands.send(Cmd::Close);
        let timed_out = match everything {
            Some((_, waiter)) => tokio::time::timeout_at(deadline, waiter).await.is_err(),
            None => false,
        };
        core.cancel.cancel();
        let dispatcher = lock(&self.inner.dispatcher).take();
        if let Some(dispatcher) = dispatcher {
            if let Err(err) = dispatcher.await {
                tracing::error!(error = %err, "the ingest client's dispatcher failed");
            }
        }
        // A concurrent `close()` may own the dispatcher: wait for its reports too.
        if let Some((_, waiter)) = core.wait_for_all(true) {
            let _ = waiter.await;
        }
        CloseReport {
            timed_out,
            abandoned: core.abandoned.load(Ordering::Relaxed),
        }
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> Stats {
        self.inner.core.counters.snapshot()
    }
}

impl ClientBuilder {
    /// Checks the options and starts the client's background task (call it inside a
    /// Tokio runtime).
    pub fn build(self) -> Result<Client, Error> {
        let (config, transport) = self.finish()?;
        Client::start(config, transport)
    }
}

/// An item refused before it is queued (the server would refuse it too): `rejected`.
fn refuse(core: &Core, kind: Kind, item: Value, message: &str) -> DeliveryHandle {
    core.counters.enqueued();
    let errors: FieldErrors = [("_item".to_owned(), vec![message.to_owned()])].into();
    tracing::warn!(?kind, message, "item rejected before sending");
    immediate(
        core,
        kind,
        item,
        Status::Rejected {
            errors,
            http_status: None,
            attempts: 0,
        },
    )
}

fn drop_item(core: &Core, kind: Kind, item: Value, message: &str) -> DeliveryHandle {
    tracing::warn!(?kind, message, "item dropped");
    immediate(
        core,
        kind,
        item,
        Status::Dropped {
            message: message.to_owned(),
        },
    )
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime, UNIX_EPOCH};

    use serde_json::json;
    use tokio::time::Instant;

    use super::*;
    use crate::outcome::Outcome;
    use crate::testing::{accepting, client, client_with_log, contact, event, ids};
    use crate::transport::fake::{self, Fake};
    use crate::transport::Request;

    fn never_answers() -> Arc<Fake> {
        Fake::new(|_: &Request, _| fake::never())
    }

    fn slow(delay: Duration) -> Arc<Fake> {
        Fake::new(move |request: &Request, _| fake::after(delay, fake::all_accepted(request, 202)))
    }

    #[test]
    fn building_outside_a_runtime_is_an_error() {
        let builder = Client::builder("http://127.0.0.1:1/", "p", "web", "ingk_x");
        assert!(matches!(builder.build(), Err(Error::NoRuntime)));
    }

    #[tokio::test(start_paused = true)]
    async fn track_puts_a_uuid_v7_in_a_missing_or_null_event_id_and_keeps_the_callers() {
        let fake = accepting();
        let client = client(&fake, |b| b);
        let before = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
        let mut generated = Vec::new();
        for n in 0..50 {
            let item = if n % 2 == 0 {
                json!({"_user_id": "u", "_event_type": "t"})
            } else {
                json!({"_user_id": "u", "_event_type": "t", "_event_id": null})
            };
            generated.push(client.track(item).await);
        }
        let kept = client.track(event(7)).await;
        client.flush().await;
        let after = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
        let mut ids_seen = Vec::new();
        for handle in generated {
            let outcome = handle.await;
            let id = outcome.item["_event_id"].as_str().unwrap().to_owned();
            let uuid = uuid::Uuid::parse_str(&id).unwrap();
            assert_eq!(uuid.get_version_num(), 7, "{id}");
            assert_eq!(uuid.get_variant(), uuid::Variant::RFC4122);
            let (secs, nanos) = uuid.get_timestamp().unwrap().to_unix();
            let at = Duration::new(secs, nanos);
            // v7 carries milliseconds.
            assert!(
                at + Duration::from_millis(1) >= before && at <= after,
                "{id}"
            );
            ids_seen.push(id);
        }
        // Distinct, and in the order they were made (v7 ids sort by time).
        let mut sorted = ids_seen.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted, ids_seen);
        assert_eq!(kept.await.item["_event_id"], "e7");
        // The generated ids are the ones sent.
        let sent: Vec<String> = fake
            .seen()
            .iter()
            .flat_map(|s| ids(&s.body, "_event_id"))
            .collect();
        assert_eq!(&sent[..50], &ids_seen[..]);
    }

    #[tokio::test(start_paused = true)]
    async fn an_item_that_is_not_an_object_is_rejected_at_once() {
        let fake = accepting();
        let client = client(&fake, |b| b);
        for value in [json!([1, 2]), json!("text"), json!(null)] {
            let outcome = client.upsert(value.clone()).await.await;
            assert_eq!(outcome.item, value);
            assert!(
                matches!(outcome.status, Status::Rejected { ref errors, http_status: None, attempts: 0 }
                if errors["_item"] == ["Must be an object"])
            );
        }
        assert!(fake.seen().is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_queue_drops_new_items_under_overflow_drop() {
        let fake = never_answers();
        let (client, log) =
            client_with_log(&fake, |b| b.max_queue_items(2).overflow(Overflow::Drop));
        let _first = client.track(event(1)).await;
        let _second = client.upsert(contact("a", 1)).await;
        let dropped = client.track(event(3)).await.await;
        assert_eq!(
            dropped.status,
            Status::Dropped {
                message: "queue full".into()
            }
        );
        assert_eq!(dropped.item, event(3));
        let stats = client.stats();
        assert_eq!((stats.enqueued, stats.dropped, stats.queued), (3, 1, 2));
        assert_eq!(log.lock().unwrap().len(), 1, "the callback saw the drop");
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_queue_makes_enqueue_wait_for_room_under_overflow_block() {
        let fake = slow(Duration::from_secs(5));
        let client = client(&fake, |b| b.max_queue_items(2));
        let start = Instant::now();
        let first = client.track(event(1)).await;
        let _second = client.track(event(2)).await;
        // No room for 4 s: the call does not complete (and giving up on it is harmless).
        assert!(
            tokio::time::timeout(Duration::from_secs(4), client.track(event(3)))
                .await
                .is_err()
        );
        let third = client.track(event(3)).await;
        // Room came when the first batch (sent after flush_interval) was answered.
        assert!(first.await.is_accepted());
        assert_eq!(start.elapsed(), Duration::from_secs(6));
        assert!(third.await.is_accepted());
        let stats = client.stats();
        assert_eq!((stats.enqueued, stats.accepted, stats.dropped), (3, 3, 0));
    }

    #[tokio::test(start_paused = true)]
    async fn close_delivers_everything_queued() {
        let fake = slow(Duration::from_millis(50));
        let client = client(&fake, |b| b.flush_interval(Duration::from_secs(30)));
        let mut handles = Vec::new();
        for n in 0..250 {
            handles.push(client.track(event(n)).await);
            if n % 10 == 0 {
                handles.push(client.upsert(contact("a", n)).await);
            }
        }
        let report = client.close(Duration::from_secs(10)).await;
        assert_eq!(
            report,
            CloseReport {
                timed_out: false,
                abandoned: 0
            }
        );
        for handle in handles {
            assert!(handle.await.is_accepted());
        }
        let stats = client.stats();
        assert_eq!((stats.accepted, stats.queued, stats.failed), (275, 0, 0));
        // Closed: later items are dropped.
        let late = client.track(event(999)).await.await;
        assert_eq!(
            late.status,
            Status::Dropped {
                message: "client closed".into()
            }
        );
    }

    #[tokio::test(start_paused = true)]
    async fn close_reports_what_is_undelivered_at_its_timeout_as_failed() {
        let fake = Fake::new(|request: &Request, n| {
            if n == 0 {
                fake::now(fake::status(503, json!({"message": "broker"})))
            } else if request.url.ends_with("/events") {
                fake::never()
            } else {
                fake::now(fake::all_accepted(request, 202))
            }
        });
        let (client, log) = client_with_log(&fake, |b| b.max_batch_items(3));
        let start = Instant::now();
        let mut handles = Vec::new();
        for n in 0..7 {
            handles.push(client.track(event(n)).await);
        }
        handles.push(client.upsert(contact("a", 1)).await);
        let report = client.close(Duration::from_secs(3)).await;
        assert_eq!(start.elapsed(), Duration::from_secs(3));
        assert_eq!(
            report,
            CloseReport {
                timed_out: true,
                abandoned: 7
            }
        );
        let outcomes: Vec<Outcome> = futures_join(handles).await;
        for outcome in &outcomes[..7] {
            let Status::Failed {
                message,
                http_status,
                attempts,
            } = &outcome.status
            else {
                panic!("{outcome:?}");
            };
            assert_eq!(message, "closed before delivery");
            assert!(*attempts >= 1);
            // The batch that met the 503 says so.
            if outcome.item == event(0) {
                assert_eq!(*http_status, Some(503));
            }
        }
        assert!(outcomes[7].is_accepted(), "the upsert was answered");
        assert_eq!(log.lock().unwrap().len(), 8, "one callback per item");
        let stats = client.stats();
        assert_eq!((stats.failed, stats.accepted, stats.queued), (7, 1, 0));
        assert_eq!(
            stats.enqueued,
            stats.accepted + stats.rejected + stats.failed + stats.queued
        );
    }

    #[tokio::test(start_paused = true)]
    async fn close_drops_an_item_waiting_for_room() {
        let fake = never_answers();
        let client = client(&fake, |b| b.max_queue_items(1));
        let first = client.track(event(1)).await;
        let blocked = tokio::spawn({
            let client = client.clone();
            async move { client.track(event(2)).await.await }
        });
        tokio::time::sleep(Duration::from_millis(10)).await;
        let report = client.close(Duration::from_secs(1)).await;
        assert_eq!(report.abandoned, 1);
        assert!(matches!(first.await.status, Status::Failed { .. }));
        assert_eq!(
            blocked.await.unwrap().status,
            Status::Dropped {
                message: "client closed".into()
            }
        );
    }

    #[tokio::test(start_paused = true)]
    async fn dropping_every_client_handle_still_delivers_what_was_queued() {
        let fake = slow(Duration::from_millis(10));
        let client = client(&fake, |b| b);
        let handle = client.track(event(1)).await;
        drop(client);
        assert!(handle.await.is_accepted());
    }

    async fn futures_join(handles: Vec<DeliveryHandle>) -> Vec<Outcome> {
        let mut outcomes = Vec::new();
        for handle in handles {
            outcomes.push(handle.await);
        }
        outcomes
    }
}
