//! The crate's side of an item's outcome: the [`Pending`] item the client holds until
//! it is reported, and the reporting itself (counters, the `on_delivery` callback, the
//! caller's handle, `flush()`'s bookkeeping).

use std::sync::Arc;

use bytes::Bytes;
use serde_json::Value;
use tokio::sync::{oneshot, OwnedSemaphorePermit};

use crate::outcome::{DeliveryHandle, Kind, Outcome, Status};
use crate::shared::Core;

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
