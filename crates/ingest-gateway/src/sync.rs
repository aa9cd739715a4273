//! `?_sync`: waiting until the worker has committed a request's accepted items.
//!
//! Before publishing, the handler registers a waiter for the request's items under a
//! fresh `sync_id`, which every envelope of the request carries. The worker announces
//! persisted items per `sync_id` on `ingest_committed` inside its transaction, so the
//! announcement arrives exactly when the rows are committed. When the count is reached
//! the handler answers 200; after `INGEST_SYNC_WAIT_MS` it answers 202 as usual.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ingest_types::envelope::COMMITTED_CHANNEL;
use sqlx::postgres::PgListener;
use sqlx::PgPool;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

struct Waiter {
    remaining: u64,
    done: oneshot::Sender<()>,
}

#[derive(Clone, Default)]
pub struct SyncWaiters {
    waiters: Arc<Mutex<HashMap<String, Waiter>>>,
}

/// A registered wait; dropping it forgets the waiter.
pub struct Registration {
    pub sync_id: String,
    done: oneshot::Receiver<()>,
    waiters: SyncWaiters,
}

impl Registration {
    /// Whether all items were committed within `wait`.
    pub async fn committed_within(mut self, wait: Duration) -> bool {
        matches!(tokio::time::timeout(wait, &mut self.done).await, Ok(Ok(())))
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.waiters.lock().remove(&self.sync_id);
    }
}

impl SyncWaiters {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Waiter>> {
        self.waiters.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers a wait for `items` committed items under a new `sync_id`.
    pub fn register(&self, items: u64) -> Registration {
        let sync_id = uuid::Uuid::new_v4().simple().to_string();
        let (done, rx) = oneshot::channel();
        self.lock().insert(
            sync_id.clone(),
            Waiter {
                remaining: items,
                done,
            },
        );
        Registration {
            sync_id,
            done: rx,
            waiters: self.clone(),
        }
    }

    /// Counts committed items from one announcement (`{"<sync_id>": items, ...}`).
    fn committed(&self, payload: &str) {
        let Ok(counts) = serde_json::from_str::<HashMap<String, u64>>(payload) else {
            tracing::warn!(payload, "unreadable commit announcement");
            return;
        };
        let mut waiters = self.lock();
        for (sync_id, items) in counts {
            let finished = match waiters.get_mut(&sync_id) {
                Some(waiter) => {
                    waiter.remaining = waiter.remaining.saturating_sub(items);
                    waiter.remaining == 0
                }
                None => false,
            };
            if finished {
                if let Some(waiter) = waiters.remove(&sync_id) {
                    let _ = waiter.done.send(());
                }
            }
        }
    }

    /// Listens for announcements until `shutdown`, reconnecting when the connection is lost.
    pub async fn listen(self, pool: PgPool, shutdown: CancellationToken) {
        while !shutdown.is_cancelled() {
            let connected = async {
                let mut listener = PgListener::connect_with(&pool).await?;
                listener.listen(COMMITTED_CHANNEL).await?;
                Ok::<_, sqlx::Error>(listener)
            };
            let mut listener = match connected.await {
                Ok(listener) => listener,
                Err(err) => {
                    tracing::warn!(error = %err, "cannot LISTEN for commit announcements; ?_sync answers 202");
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                    }
                }
            };
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    received = listener.try_recv() => match received {
                        Ok(Some(notification)) => self.committed(notification.payload()),
                        Ok(None) | Err(_) => break,
                    },
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_wait_ends_when_every_item_was_announced() {
        let waiters = SyncWaiters::default();
        let registration = waiters.register(3);
        let id = registration.sync_id.clone();
        waiters.committed(&format!(r#"{{"{id}": 2, "other": 5}}"#));
        waiters.committed(&format!(r#"{{"{id}": 1}}"#));
        assert!(
            registration
                .committed_within(Duration::from_millis(100))
                .await
        );
        assert!(waiters.lock().is_empty());
    }

    #[tokio::test]
    async fn a_wait_times_out_and_is_forgotten() {
        let waiters = SyncWaiters::default();
        let registration = waiters.register(2);
        waiters.committed(&format!(r#"{{"{}": 1}}"#, registration.sync_id));
        assert!(
            !registration
                .committed_within(Duration::from_millis(50))
                .await
        );
        assert!(waiters.lock().is_empty());
    }
}
