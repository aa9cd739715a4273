//! The state the client's tasks share ([`Core`]): the configuration, the transport, the
//! counters, the bounded queue, which items are not reported yet (for `flush()` and
//! `close()`), and each endpoint's pause and in-flight slots.

use std::collections::BTreeSet;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, MutexGuard};

use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use tokio::sync::{oneshot, Semaphore, SemaphorePermit};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::outcome::{Outcome, Status};
use crate::stats::Counters;
use crate::transport::Transport;

/// The three endpoints the client writes to; each has its own rate limit on the server,
/// so a 429 pauses only its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Endpoint {
    Events = 0,
    Contacts = 1,
    ContactsDelete = 2,
}

/// The state the client's tasks share.
pub(crate) struct Core {
    pub config: Config,
    pub transport: Arc<dyn Transport>,
    pub counters: Counters,
    /// Cancelled by `close()` once its timeout passed (or everything was reported):
    /// whatever is still undelivered is then reported `failed`.
    pub cancel: CancellationToken,
    /// Items reported "closed before delivery".
    pub abandoned: AtomicU64,
    pub events_url: String,
    pub contacts_url: String,
    /// Room in the queue: one permit per item held.
    pub queue: Arc<Semaphore>,
    /// `DELETE` URLs: this plus the percent-encoded user id.
    delete_prefix: String,
    /// Event requests in flight.
    in_flight: Semaphore,
    tracker: Mutex<Tracker>,
    /// Per endpoint: no request starts before this (a 429 pauses the whole endpoint).
    pauses: Mutex<[Option<Instant>; 3]>,
}

/// Which items are not reported yet, for `flush()` and `close()`.
#[derive(Default)]
pub(crate) struct Tracker {
    closed: bool,
    next_seq: u64,
    outstanding: BTreeSet<u64>,
    /// `flush()` calls waiting until every item up to a sequence number is reported.
    waiters: Vec<(u64, oneshot::Sender<()>)>,
}

impl Tracker {
    /// The sequence number of a new item, outstanding from now on; `None` once `close()`
    /// began.
    pub fn register(&mut self) -> Option<u64> {
        if self.closed {
            return None;
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        self.outstanding.insert(seq);
        Some(seq)
    }
}

/// Everything but `A-Z a-z 0-9 - . _ ~` (RFC 3986's unreserved characters).
const PATH_SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

fn segment(text: &str) -> String {
    utf8_percent_encode(text, PATH_SEGMENT).to_string()
}

/// Locks `mutex`, also after a panic elsewhere (the state it guards stays consistent).
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Core {
    pub fn new(config: Config, transport: Arc<dyn Transport>) -> Self {
        let stream = format!(
            "{}/v1/project/{}/datasource/{}/stream",
            config.base_url,
            segment(&config.project),
            segment(&config.datasource)
        );
        let sync = if config.sync { "?_sync" } else { "" };
        Self {
            events_url: format!("{stream}/events{sync}"),
            contacts_url: format!("{stream}/contacts{sync}"),
            delete_prefix: format!("{stream}/contacts/"),
            in_flight: Semaphore::new(config.max_in_flight),
            queue: Arc::new(Semaphore::new(config.max_queue_items)),
            transport,
            counters: Counters::default(),
            cancel: CancellationToken::new(),
            abandoned: AtomicU64::new(0),
            tracker: Mutex::default(),
            pauses: Mutex::default(),
            config,
        }
    }

    /// `DELETE /stream/contacts/{user_id}` (percent-encoded). The delete endpoint has no
    /// `?_sync`.
    pub fn delete_url(&self, user_id: &str) -> String {
        format!("{}{}", self.delete_prefix, segment(user_id))
    }

    /// The tracker, locked. An enqueue call registers its item and hands it to the
    /// dispatcher under this lock: `close()` marks the tracker closed under it too, so
    /// every registered item reaches the dispatcher before its `Close`.
    pub fn tracker(&self) -> MutexGuard<'_, Tracker> {
        lock(&self.tracker)
    }

    /// Reports one outcome: counters, the callback, `flush()`'s bookkeeping. `seq` is the
    /// item's sequence number when it was queued.
    pub fn report(&self, outcome: &Outcome, seq: Option<u64>) {
        let queued = !matches!(outcome.status, Status::Dropped { .. });
        self.counters.outcome(&outcome.status, queued);
        if let Some(callback) = &self.config.on_delivery {
            let call = std::panic::AssertUnwindSafe(|| callback(outcome));
            if std::panic::catch_unwind(call).is_err() {
                tracing::error!("the on_delivery callback panicked");
            }
        }
        if let Some(seq) = seq {
            let mut tracker = lock(&self.tracker);
            tracker.outstanding.remove(&seq);
            let lowest = tracker.outstanding.first().copied().unwrap_or(u64::MAX);
            let mut i = 0;
            while i < tracker.waiters.len() {
                if tracker.waiters[i].0 < lowest {
                    let (_, waiter) = tracker.waiters.swap_remove(i);
                    let _ = waiter.send(());
                } else {
                    i += 1;
                }
            }
        }
    }

    /// A waiter resolved once every item enqueued so far is reported, and the highest
    /// sequence number it covers; `None` when nothing is outstanding. `close` marks the
    /// tracker closed: later items are dropped.
    pub fn wait_for_all(&self, close: bool) -> Option<(u64, oneshot::Receiver<()>)> {
        let mut tracker = lock(&self.tracker);
        tracker.closed |= close;
        let upto = tracker.next_seq.checked_sub(1)?;
        if tracker
            .outstanding
            .first()
            .is_none_or(|&lowest| lowest > upto)
        {
            return None;
        }
        let (sender, receiver) = oneshot::channel();
        tracker.waiters.push((upto, sender));
        Some((upto, receiver))
    }

    pub fn paused_until(&self, endpoint: Endpoint) -> Option<Instant> {
        lock(&self.pauses)[endpoint as usize]
    }

    /// No request to `endpoint` starts before `until` (extends, never shortens, a pause).
    pub fn pause(&self, endpoint: Endpoint, until: Instant) {
        let mut pauses = lock(&self.pauses);
        let slot = &mut pauses[endpoint as usize];
        *slot = Some(slot.map_or(until, |current| current.max(until)));
    }

    /// Waits until a request to `endpoint` may start: its pause is over and, for events,
    /// one of the `max_in_flight` slots is free (held by the returned permit).
    pub async fn admit(&self, endpoint: Endpoint) -> Option<SemaphorePermit<'_>> {
        loop {
            if let Some(until) = self.paused_until(endpoint) {
                if until > Instant::now() {
                    tokio::time::sleep_until(until).await;
                    continue;
                }
            }
            let permit = match endpoint {
                Endpoint::Events => Some(
                    self.in_flight
                        .acquire()
                        .await
                        .expect("the in-flight semaphore is never closed"),
                ),
                Endpoint::Contacts | Endpoint::ContactsDelete => None,
            };
            // A 429 met by another request while this one waited for its slot.
            match self.paused_until(endpoint) {
                Some(until) if until > Instant::now() => drop(permit),
                _ => return permit,
            }
        }
    }
}
