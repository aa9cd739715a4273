//! The counters behind `Client::stats()`.

use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;

use crate::outcome::Status;

/// Counts since the client was made (docs/clients.md, "Counters and logs").
///
/// Every call to `track`/`upsert`/`delete` counts once in `enqueued`, and once, at the
/// end, in `accepted`, `rejected`, `failed` or `dropped`; until then it is in `queued`:
/// `enqueued == accepted + rejected + failed + dropped + queued` (as in every client).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Stats {
    /// Calls to `track`/`upsert`/`delete` (dropped and too-large items included).
    pub enqueued: u64,
    /// Items sent, once per attempt.
    pub sent: u64,
    pub accepted: u64,
    pub rejected: u64,
    pub failed: u64,
    pub dropped: u64,
    /// Requests after a batch's first attempt.
    pub retries: u64,
    /// HTTP requests made (attempts, retries included).
    pub requests: u64,
    /// Items held now: enqueued and not yet reported.
    pub queued: u64,
}

#[derive(Debug, Default)]
pub(crate) struct Counters {
    enqueued: AtomicU64,
    sent: AtomicU64,
    accepted: AtomicU64,
    rejected: AtomicU64,
    failed: AtomicU64,
    dropped: AtomicU64,
    retries: AtomicU64,
    requests: AtomicU64,
    queued: AtomicU64,
}

impl Counters {
    pub fn enqueued(&self) {
        self.enqueued.fetch_add(1, Ordering::Relaxed);
        self.queued.fetch_add(1, Ordering::Relaxed);
    }

    /// One attempt of a request carrying `items` items.
    pub fn attempt(&self, items: usize, retry: bool) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.sent.fetch_add(items as u64, Ordering::Relaxed);
        if retry {
            self.retries.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// One final outcome; `queued` says whether the item had been queued (a dropped one
    /// never was: its call counts in `enqueued` here).
    pub fn outcome(&self, status: &Status, queued: bool) {
        let counter = match status {
            Status::Accepted { .. } => &self.accepted,
            Status::Rejected { .. } => &self.rejected,
            Status::Failed { .. } => &self.failed,
            Status::Dropped { .. } => &self.dropped,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        if queued {
            self.queued.fetch_sub(1, Ordering::Relaxed);
        } else {
            self.enqueued.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn snapshot(&self) -> Stats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        Stats {
            enqueued: get(&self.enqueued),
            sent: get(&self.sent),
            accepted: get(&self.accepted),
            rejected: get(&self.rejected),
            failed: get(&self.failed),
            dropped: get(&self.dropped),
            retries: get(&self.retries),
            requests: get(&self.requests),
            queued: get(&self.queued),
        }
    }
}
