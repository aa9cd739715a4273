//! The in-flight body budget: how many request-body bytes the gateway holds in memory at
//! once, across all requests (`INGEST_BODY_BUDGET_MBYTES`) and per datasource
//! (`INGEST_DATASOURCE_BODY_BUDGET_MBYTES`, so one tenant cannot take it all).
//!
//! A request reserves its body's size before a byte of it is read (its `Content-Length`,
//! or the 1 MiB limit when it has none; plus 1 MiB more for a gzip body, which is
//! decompressed whole) and holds the reservation until it is answered. When either budget
//! cannot take it, the request is answered 503 with `Retry-After` at once: shedding
//! instead of buffering. The reservation is counted in KiB, the unit of the semaphores.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::metrics::BODY_BUDGET_REFUSED_TOTAL;

/// A per-datasource semaphore unused this long is forgotten (no request holds a
/// reservation that long: head, body and publish timeouts bound a request to seconds).
const FORGET_IDLE_DATASOURCE: Duration = Duration::from_secs(600);

#[derive(Clone)]
pub struct BodyBudget {
    global: Arc<Semaphore>,
    datasource_kib: u32,
    per_datasource: moka::sync::Cache<(String, String), Arc<Semaphore>>,
}

/// A reservation, released when dropped.
#[derive(Debug)]
pub struct Reservation {
    _global: OwnedSemaphorePermit,
    _datasource: OwnedSemaphorePermit,
}

impl BodyBudget {
    pub fn new(global_bytes: usize, datasource_bytes: usize) -> Self {
        Self {
            global: Arc::new(Semaphore::new(kib(global_bytes) as usize)),
            datasource_kib: kib(datasource_bytes),
            per_datasource: moka::sync::Cache::builder()
                .time_to_idle(FORGET_IDLE_DATASOURCE)
                .build(),
        }
    }

    /// Reserves `bytes` for a request to `project`/`datasource`, or `None` (and a count in
    /// the metrics) when either budget cannot take them now.
    pub fn try_reserve(
        &self,
        project: &str,
        datasource: &str,
        bytes: usize,
    ) -> Option<Reservation> {
        let wanted = kib(bytes).max(1);
        let datasource_budget = self
            .per_datasource
            .get_with((project.to_owned(), datasource.to_owned()), || {
                Arc::new(Semaphore::new(self.datasource_kib as usize))
            });
        let reservation = datasource_budget
            .try_acquire_many_owned(wanted)
            .ok()
            .and_then(|datasource| {
                let global = self.global.clone().try_acquire_many_owned(wanted).ok()?;
                Some(Reservation {
                    _global: global,
                    _datasource: datasource,
                })
            });
        if reservation.is_none() {
            metrics::counter!(BODY_BUDGET_REFUSED_TOTAL).increment(1);
        }
        reservation
    }
}

/// Bytes in KiB, rounded up, saturating at `u32::MAX` (a semaphore takes at most that).
fn kib(bytes: usize) -> u32 {
    u32::try_from(bytes.div_ceil(1024)).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reservations_are_bounded_globally_and_per_datasource() {
        let budget = BodyBudget::new(4 << 20, 2 << 20);
        let a1 = budget
            .try_reserve("p", "a", 1 << 20)
            .expect("first MiB of a");
        let _a2 = budget
            .try_reserve("p", "a", 1 << 20)
            .expect("second MiB of a");
        // `a` has used its share; `b` has its own.
        assert!(budget.try_reserve("p", "a", 1).is_none());
        let _b1 = budget.try_reserve("p", "b", 2 << 20).expect("b's share");
        // The global budget is spent now, whatever the datasource.
        assert!(budget.try_reserve("p", "c", 1).is_none());
        drop(a1);
        assert!(budget.try_reserve("p", "c", 1 << 20).is_some());
        // More than a datasource may ever hold is never granted.
        assert!(budget.try_reserve("p", "d", 3 << 20).is_none());
    }

    #[test]
    fn sizes_round_up_to_whole_kib() {
        assert_eq!(kib(0), 0);
        assert_eq!(kib(1), 1);
        assert_eq!(kib(1024), 1);
        assert_eq!(kib(1025), 2);
        assert_eq!(kib(usize::MAX), u32::MAX);
    }
}
