//! Batching (docs/clients.md, "Batching" and "Order"): the dispatcher task takes every
//! enqueued item in order and forms the requests.
//!
//! - Events and contact upserts fill one open batch each. A batch is sent when it holds
//!   `max_batch_items`, when the next item would take its body over `max_batch_bytes`
//!   (measured on the JSON as it will be sent), `flush_interval` after its first item, or
//!   on `flush()`/`close()`.
//! - Event batches are delivered by tasks of their own, at most `max_in_flight` requests
//!   at a time. Contact batches and deletes go, in the order enqueued, to the one contact
//!   lane, which delivers one request at a time (a delete closes the open upsert batch
//!   first and is sent alone).

use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;

use crate::deliver::{contact_lane, deliver, Batch};
use crate::outcome::Kind;
use crate::pending::Pending;
use crate::shared::{Core, Endpoint};

/// What the enqueue calls and `flush()`/`close()` tell the dispatcher.
pub(crate) enum Cmd {
    Item(Pending),
    /// Send every open batch now, and any later-arriving item of a sequence number up
    /// to this one at once.
    Flush(u64),
    /// Stop: send what is open and finish the deliveries.
    Close,
}

/// A batch being filled.
#[derive(Default)]
struct Open {
    items: Vec<Pending>,
    /// Size of the body `[a,b,...]` of the items so far.
    bytes: usize,
    /// When it must be sent: `flush_interval` after its first item.
    due: Option<Instant>,
}

impl Open {
    /// The body's size with one more item of `len` bytes.
    fn size_with(&self, len: usize) -> usize {
        if self.items.is_empty() {
            len + 2
        } else {
            self.bytes + 1 + len
        }
    }

    fn push(&mut self, item: Pending, due: Instant) {
        self.bytes = self.size_with(item.encoded.len());
        self.due.get_or_insert(due);
        self.items.push(item);
    }

    /// The items and their body, leaving the batch empty.
    fn take(&mut self) -> (Vec<Pending>, Bytes) {
        let items = std::mem::take(&mut self.items);
        let mut body = Vec::with_capacity(self.bytes);
        body.push(b'[');
        for (i, item) in items.iter().enumerate() {
            if i > 0 {
                body.push(b',');
            }
            body.extend_from_slice(&item.encoded);
        }
        body.push(b']');
        debug_assert_eq!(body.len(), self.bytes);
        self.bytes = 0;
        self.due = None;
        (items, Bytes::from(body))
    }
}

pub(crate) struct Dispatcher {
    core: Arc<Core>,
    commands: mpsc::UnboundedReceiver<Cmd>,
    events: Open,
    contacts: Open,
    lane: Option<mpsc::UnboundedSender<Batch>>,
    lane_task: JoinHandle<()>,
    deliveries: JoinSet<()>,
    /// Items up to this sequence number are sent as soon as they arrive (`flush()`).
    flush_upto: Option<u64>,
}

impl Dispatcher {
    pub fn new(core: Arc<Core>, commands: mpsc::UnboundedReceiver<Cmd>) -> Self {
        let (lane, lane_queue) = mpsc::unbounded_channel();
        let lane_task = tokio::spawn(contact_lane(core.clone(), lane_queue));
        Self {
            core,
            commands,
            events: Open::default(),
            contacts: Open::default(),
            lane: Some(lane),
            lane_task,
            deliveries: JoinSet::new(),
            flush_upto: None,
        }
    }

    pub async fn run(mut self) {
        let cancel = self.core.cancel.clone();
        loop {
            let due = [self.events.due, self.contacts.due]
                .into_iter()
                .flatten()
                .min();
            // Far enough to never fire: only an open batch sets a real deadline.
            let wake =
                due.unwrap_or_else(|| Instant::now() + std::time::Duration::from_secs(86_400));
            tokio::select! {
                biased;
                _ = cancel.cancelled() => break,
                command = self.commands.recv() => match command {
                    Some(Cmd::Item(item)) => self.add(item),
                    Some(Cmd::Flush(upto)) => {
                        self.flush_upto = self.flush_upto.max(Some(upto));
                        self.send_events();
                        self.send_contacts();
                    }
                    Some(Cmd::Close) | None => break,
                },
                _ = tokio::time::sleep_until(wake) => {
                    let now = Instant::now();
                    if self.events.due.is_some_and(|due| due <= now) {
                        self.send_events();
                    }
                    if self.contacts.due.is_some_and(|due| due <= now) {
                        self.send_contacts();
                    }
                }
                Some(done) = self.deliveries.join_next(), if !self.deliveries.is_empty() => {
                    if let Err(err) = done {
                        tracing::error!(error = %err, "an ingest client delivery task failed");
                    }
                }
            }
        }
        // Closing: whatever arrived is sent now; the deliveries end on their own, or
        // promptly once `close()` cancels them.
        self.commands.close();
        while let Ok(command) = self.commands.try_recv() {
            if let Cmd::Item(item) = command {
                self.add(item);
            }
        }
        self.send_events();
        self.send_contacts();
        drop(self.lane.take());
        while let Some(done) = self.deliveries.join_next().await {
            if let Err(err) = done {
                tracing::error!(error = %err, "an ingest client delivery task failed");
            }
        }
        if let Err(err) = (&mut self.lane_task).await {
            tracing::error!(error = %err, "the ingest client's contact lane failed");
        }
    }

    fn add(&mut self, item: Pending) {
        let seq = item.seq;
        let config = &self.core.config;
        let (max_items, max_bytes) = (config.max_batch_items, config.max_batch_bytes);
        let due = Instant::now() + config.flush_interval;
        let flushing = self.flush_upto.is_some_and(|upto| seq <= upto);
        match item.kind {
            Kind::Event | Kind::Contact => {
                let kind = item.kind;
                let open = self.open(kind);
                let fits = open.items.is_empty() || open.size_with(item.encoded.len()) <= max_bytes;
                if !fits {
                    self.send(kind);
                }
                let open = self.open(kind);
                open.push(item, due);
                if open.items.len() >= max_items || flushing {
                    self.send(kind);
                }
            }
            Kind::Delete => {
                // The upserts before it go first, then the delete alone.
                self.send_contacts();
                let user_id = item.item["_user_id"].as_str().unwrap_or_default();
                let batch = Batch {
                    endpoint: Endpoint::ContactsDelete,
                    url: self.core.delete_url(user_id),
                    body: None,
                    items: vec![item],
                };
                self.queue_on_lane(batch);
            }
        }
    }

    fn open(&mut self, kind: Kind) -> &mut Open {
        match kind {
            Kind::Event => &mut self.events,
            Kind::Contact | Kind::Delete => &mut self.contacts,
        }
    }

    fn send(&mut self, kind: Kind) {
        match kind {
            Kind::Event => self.send_events(),
            Kind::Contact | Kind::Delete => self.send_contacts(),
        }
    }

    fn send_events(&mut self) {
        if self.events.items.is_empty() {
            return;
        }
        let (items, body) = self.events.take();
        let batch = Batch {
            endpoint: Endpoint::Events,
            url: self.core.events_url.clone(),
            body: Some(body),
            items,
        };
        self.deliveries.spawn(deliver(self.core.clone(), batch));
    }

    fn send_contacts(&mut self) {
        if self.contacts.items.is_empty() {
            return;
        }
        let (items, body) = self.contacts.take();
        let batch = Batch {
            endpoint: Endpoint::Contacts,
            url: self.core.contacts_url.clone(),
            body: Some(body),
            items,
        };
        self.queue_on_lane(batch);
    }

    fn queue_on_lane(&mut self, batch: Batch) {
        // The lane ends only when this sender is dropped (or it panicked: then the
        // batch's items report themselves failed as they are dropped here).
        if let Some(lane) = &self.lane {
            let _ = lane.send(batch);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::time::Duration;

    use serde_json::json;
    use tokio::time::Instant;

    use crate::outcome::Status;
    use crate::testing::{accepting, client, contact, event, ids, items};
    use crate::transport::fake::{self, Fake};
    use crate::transport::{Method, Request};

    #[tokio::test(start_paused = true)]
    async fn a_batch_is_sent_when_it_holds_max_batch_items() {
        let fake = accepting();
        let client = client(&fake, |b| b.max_batch_items(10));
        let start = Instant::now();
        let mut handles = Vec::new();
        for n in 0..25 {
            handles.push(client.track(event(n)).await);
        }
        for handle in handles {
            assert!(handle.await.is_accepted());
        }
        let seen = fake.seen();
        let sizes: Vec<usize> = seen.iter().map(|s| items(&s.body).len()).collect();
        assert_eq!(sizes, [10, 10, 5]);
        // The full ones at once; the partial one after flush_interval.
        assert_eq!(seen[0].at, start);
        assert_eq!(seen[1].at, start);
        assert_eq!(seen[2].at - start, Duration::from_secs(1));
        let all: Vec<String> = seen
            .iter()
            .flat_map(|s| ids(&s.body, "_event_id"))
            .collect();
        let expected: Vec<String> = (0..25).map(|n| format!("e{n}")).collect();
        assert_eq!(all, expected, "every item once, in order");
    }

    #[tokio::test(start_paused = true)]
    async fn a_batch_is_sent_before_the_next_item_would_take_it_over_max_batch_bytes() {
        let fake = accepting();
        let max = 1000;
        let client = client(&fake, |b| b.max_batch_bytes(max));
        // Items of varied sizes, 60 to 400 bytes of JSON.
        let items_sent: Vec<_> = (0..40)
            .map(|n| {
                let mut item = event(n);
                item["_event_parameters"] = json!({"pad": "x".repeat(20 + (n * 37) % 320)});
                item
            })
            .collect();
        for item in &items_sent {
            drop(client.track(item.clone()).await);
        }
        client.flush().await;
        let seen = fake.seen();
        assert!(seen.len() > 5, "{} requests", seen.len());
        let len = |item: &serde_json::Value| serde_json::to_vec(item).unwrap().len();
        for (i, request) in seen.iter().enumerate() {
            let sent = items(&request.body);
            // The size is that of the JSON as sent: `[` items joined by `,` `]`.
            let expected = 2 + sent.iter().map(len).sum::<usize>() + sent.len() - 1;
            assert_eq!(request.raw_len, expected, "request {i}");
            assert!(
                request.raw_len <= max,
                "request {i}: {} bytes",
                request.raw_len
            );
            if let Some(next) = seen.get(i + 1) {
                let first_of_next = &items(&next.body)[0];
                assert!(
                    request.raw_len + 1 + len(first_of_next) > max,
                    "request {i} was sent with room for the next item"
                );
            }
        }
        let all: Vec<String> = seen
            .iter()
            .flat_map(|s| ids(&s.body, "_event_id"))
            .collect();
        assert_eq!(all.len(), 40);
    }

    #[tokio::test(start_paused = true)]
    async fn a_partial_batch_is_sent_flush_interval_after_its_first_item() {
        let fake = accepting();
        let client = client(&fake, |b| b.flush_interval(Duration::from_secs(5)));
        let start = Instant::now();
        let first = client.track(event(1)).await;
        tokio::time::sleep(Duration::from_secs(2)).await;
        drop(client.track(event(2)).await);
        tokio::time::sleep(Duration::from_millis(2900)).await;
        assert!(fake.seen().is_empty(), "sent before flush_interval");
        assert!(first.await.is_accepted());
        let seen = fake.seen();
        assert_eq!(seen.len(), 1);
        assert_eq!(seen[0].at - start, Duration::from_secs(5));
        assert_eq!(ids(&seen[0].body, "_event_id"), ["e1", "e2"]);
    }

    #[tokio::test(start_paused = true)]
    async fn an_item_too_large_alone_is_rejected_without_being_sent() {
        let fake = accepting();
        let client = client(&fake, |b| b.max_batch_bytes(100));
        let item = |pad: usize| json!({"_user_id": "u", "_event_id": "e", "p": "x".repeat(pad)});
        let fits = item(100 - 2 - serde_json::to_vec(&item(0)).unwrap().len());
        assert_eq!(serde_json::to_vec(&fits).unwrap().len(), 98);
        let too_large = item(61);
        let rejected = client.track(too_large.clone()).await.await;
        assert_eq!(
            rejected.status,
            Status::Rejected {
                errors: [("_item".to_owned(), vec!["Too large".to_owned()])].into(),
                http_status: None,
                attempts: 0,
            }
        );
        assert_eq!(rejected.item, too_large);
        assert!(fake.seen().is_empty());
        // Exactly max_batch_bytes as a one-item body: sent.
        assert!(client.track(fits).await.await.is_accepted());
        assert_eq!(fake.seen()[0].raw_len, 100);
        let stats = client.stats();
        assert_eq!((stats.enqueued, stats.rejected, stats.accepted), (2, 1, 1));
    }

    #[tokio::test(start_paused = true)]
    async fn flush_sends_open_batches_at_once_and_returns_when_they_are_reported() {
        let fake = Fake::new(|request: &Request, _| {
            fake::after(Duration::from_millis(300), fake::all_accepted(request, 202))
        });
        let client = client(&fake, |b| b.flush_interval(Duration::from_secs(60)));
        let start = Instant::now();
        for n in 0..3 {
            drop(client.track(event(n)).await);
        }
        drop(client.upsert(contact("a", 1)).await);
        client.flush().await;
        assert_eq!(start.elapsed(), Duration::from_millis(300));
        let stats = client.stats();
        assert_eq!((stats.accepted, stats.queued), (4, 0));
        // Nothing left: returns at once.
        client.flush().await;
        assert_eq!(start.elapsed(), Duration::from_millis(300));
    }

    #[tokio::test(start_paused = true)]
    async fn contact_writes_go_one_request_at_a_time_in_order_and_deletes_alone() {
        let in_flight = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        let (now, peak) = (in_flight.clone(), most.clone());
        let fake = Fake::new(move |request: &Request, n| {
            let (now, peak) = (now.clone(), peak.clone());
            peak.fetch_max(now.fetch_add(1, Ordering::SeqCst) + 1, Ordering::SeqCst);
            // The first contact batch meets a 503 and is retried.
            let answer = if n == 0 {
                fake::status(503, json!({"message": "broker"}))
            } else {
                fake::all_accepted(request, 202)
            };
            Box::pin(async move {
                tokio::time::sleep(Duration::from_millis(100)).await;
                now.fetch_sub(1, Ordering::SeqCst);
                answer
            })
        });
        let client = client(&fake, |b| b);
        let mut handles = Vec::new();
        handles.push(client.upsert(contact("a", 1)).await);
        handles.push(client.upsert(contact("a", 2)).await);
        handles.push(client.delete("a").await);
        handles.push(client.upsert(contact("a", 3)).await);
        handles.push(client.upsert(contact("b", 1)).await);
        handles.push(client.delete("b").await);
        client.flush().await;
        for handle in handles {
            assert!(handle.await.is_accepted());
        }
        let seen = fake.seen();
        let shape: Vec<String> = seen
            .iter()
            .map(|s| match s.method {
                Method::Delete => format!("DELETE {}", s.url.rsplit('/').next().unwrap()),
                Method::Post => format!(
                    "POST {}",
                    items(&s.body)
                        .iter()
                        .map(|i| format!("{}{}", i["_user_id"].as_str().unwrap(), i["n"]))
                        .collect::<Vec<_>>()
                        .join(",")
                ),
            })
            .collect();
        assert_eq!(
            shape,
            [
                "POST a1,a2",
                "POST a1,a2",
                "DELETE a",
                "POST a3,b1",
                "DELETE b"
            ]
        );
        assert_eq!(
            most.load(Ordering::SeqCst),
            1,
            "two contact requests at once"
        );
        for pair in seen.windows(2) {
            assert!(pair[1].at >= pair[0].at + Duration::from_millis(100));
        }
        assert_eq!(client.stats().retries, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn event_requests_go_up_to_max_in_flight_at_once() {
        let in_flight = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        let (now, peak) = (in_flight.clone(), most.clone());
        let fake = Fake::new(move |request: &Request, _| {
            let (now, peak) = (now.clone(), peak.clone());
            peak.fetch_max(now.fetch_add(1, Ordering::SeqCst) + 1, Ordering::SeqCst);
            let answer = fake::all_accepted(request, 202);
            Box::pin(async move {
                tokio::time::sleep(Duration::from_secs(1)).await;
                now.fetch_sub(1, Ordering::SeqCst);
                answer
            })
        });
        let client = client(&fake, |b| b.max_batch_items(1).max_in_flight(3));
        let start = Instant::now();
        for n in 0..10 {
            drop(client.track(event(n)).await);
        }
        // A contact write is not held back by busy event slots.
        let upsert = client.upsert(contact("a", 1)).await;
        client.flush().await;
        assert!(upsert.await.is_accepted());
        assert_eq!(
            most.load(Ordering::SeqCst),
            4,
            "3 event requests and 1 contact request"
        );
        let contact_sent = fake
            .seen()
            .iter()
            .find(|s| s.url.ends_with("/contacts"))
            .unwrap()
            .at;
        assert_eq!(contact_sent - start, Duration::ZERO);
        // 10 one-item requests, 3 at a time, 1 s each.
        assert_eq!(start.elapsed(), Duration::from_secs(4));
    }

    #[tokio::test(start_paused = true)]
    async fn a_delete_goes_to_its_percent_encoded_path_without_a_body() {
        let fake = accepting();
        let client = client(&fake, |b| b.sync(true));
        let outcome = client.delete("a b/ü?%").await.await;
        assert!(outcome.is_accepted());
        assert_eq!(outcome.item, json!({"_user_id": "a b/ü?%"}));
        let seen = fake.seen();
        assert_eq!(seen[0].method, Method::Delete);
        assert_eq!(
            seen[0].url,
            "http://gateway.test/v1/project/p1/datasource/web/stream/contacts/a%20b%2F%C3%BC%3F%25"
        );
        assert!(seen[0].body.is_none());
    }
}
