//! Requests-per-minute limits per (datasource, endpoint), in fixed one-minute windows,
//! shared by every gateway instance through PostgreSQL.
//!
//! Each instance leases quota in chunks from the window's row in `rate_limit_windows`
//! (one atomic upsert per chunk) and admits requests locally while its lease lasts.
//! What an instance is granted is `min(chunk, limit - requested_before)`, so the quota
//! granted to all instances together never exceeds the limit: **no overshoot**, on one
//! instance or many. The price is a small undershoot across instances: quota leased by
//! one instance and not used by the end of the window is lost, at most
//! `(instances - 1) × (chunk - 1)` requests per window, where `chunk` is
//! `clamp(limit / 50, 1, 100)` (12 for the default 600/min). One instance is exact.
//!
//! Once the window's quota is all leased, an instance refuses locally (no database
//! write per refused request) until the window or the limit changes.
//!
//! If PostgreSQL cannot be reached (or does not answer within 500 ms), the instance
//! counts locally against the whole limit and asks the database again after 2 s
//! (fail open per instance: up to `instances × limit` in such a window).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::http::{HeaderMap, HeaderValue};
use chrono::DateTime;
use ingest_types::tenancy::Endpoint;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::metrics::RATE_LIMIT_DB_ERRORS_TOTAL;

const WINDOW_SECS: u64 = 60;
/// Longest a quota reservation may take before the instance counts locally.
const RESERVE_TIMEOUT: Duration = Duration::from_millis(500);
/// How long the instance counts locally after a failed reservation.
const LOCAL_ONLY_FOR: Duration = Duration::from_secs(2);

/// The outcome for one request, with what the `X-RateLimit-*` headers report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    pub limit: u32,
    /// Requests left in the window (across instances, as last known).
    pub remaining: u64,
    /// Unix time (seconds) when the window resets.
    pub reset: u64,
}

impl Decision {
    pub fn apply_headers(&self, headers: &mut HeaderMap) {
        headers.insert("x-ratelimit-limit", HeaderValue::from(self.limit));
        headers.insert("x-ratelimit-remaining", HeaderValue::from(self.remaining));
        headers.insert("x-ratelimit-reset", HeaderValue::from(self.reset));
    }

    /// Seconds until the window resets (at least 1).
    pub fn retry_after(&self) -> u64 {
        self.reset.saturating_sub(unix_now()).max(1)
    }
}

type Key = (String, String, Endpoint);

#[derive(Debug, Default)]
struct Lease {
    window: u64,
    /// Quota leased to this instance and not used yet.
    unused: u64,
    /// The window's total requested quota (all instances) as of our last lease.
    requested_total: u64,
    /// Requests this instance admitted in the window (used when the database is down).
    admitted: u64,
    /// The database could not be reached: count locally until then.
    local_only_until: Option<Instant>,
    /// Every request of the window at this limit has been leased: refuse locally.
    exhausted_at_limit: Option<u32>,
}

#[derive(Clone)]
pub struct RateLimiter {
    pool: PgPool,
    leases: Arc<Mutex<HashMap<Key, Arc<tokio::sync::Mutex<Lease>>>>>,
}

impl RateLimiter {
    pub fn new(pool: PgPool) -> Self {
        Self {
            pool,
            leases: Arc::default(),
        }
    }

    /// Counts one request to `endpoint` of `project/datasource` against `limit`.
    pub async fn check(
        &self,
        project: &str,
        datasource: &str,
        endpoint: Endpoint,
        limit: u32,
    ) -> Decision {
        let lease = {
            let mut leases = self.leases.lock().unwrap_or_else(|e| e.into_inner());
            leases
                .entry((project.to_owned(), datasource.to_owned(), endpoint))
                .or_default()
                .clone()
        };
        // One lease per key: concurrent requests for the same key wait for one reservation.
        let mut lease = lease.lock().await;
        // The clock is read under the lock, and windows only move forward.
        let now = unix_now();
        let window = (now - now % WINDOW_SECS).max(lease.window);
        if lease.window != window {
            *lease = Lease {
                window,
                ..Lease::default()
            };
        }
        let reset = window + WINDOW_SECS;
        let limit64 = u64::from(limit);
        let local_only = lease
            .local_only_until
            .is_some_and(|until| Instant::now() < until);
        let exhausted = lease.exhausted_at_limit == Some(limit);
        if lease.unused == 0 && !local_only && !exhausted {
            let chunk = chunk_for(limit);
            let reserved = tokio::time::timeout(
                RESERVE_TIMEOUT,
                self.reserve(project, datasource, endpoint, window, chunk),
            )
            .await;
            match reserved {
                Ok(Ok(total)) => {
                    let before = total.saturating_sub(chunk);
                    lease.unused += chunk.min(limit64.saturating_sub(before));
                    lease.requested_total = total;
                    lease.local_only_until = None;
                    lease.exhausted_at_limit = (total >= limit64).then_some(limit);
                }
                Ok(Err(err)) => self.count_locally(&mut lease, &err.to_string()),
                Err(_) => self.count_locally(&mut lease, "timed out"),
            }
        }
        let local_only = lease
            .local_only_until
            .is_some_and(|until| Instant::now() < until);
        let allowed = lease.unused > 0 || (local_only && lease.admitted < limit64);
        if allowed {
            lease.admitted += 1;
            lease.unused = lease.unused.saturating_sub(1);
        }
        let remaining = if local_only {
            limit64.saturating_sub(lease.admitted)
        } else {
            limit64.saturating_sub(lease.requested_total) + lease.unused
        };
        Decision {
            allowed,
            limit,
            remaining,
            reset,
        }
    }

    fn count_locally(&self, lease: &mut Lease, reason: &str) {
        metrics::counter!(RATE_LIMIT_DB_ERRORS_TOTAL).increment(1);
        tracing::warn!(
            reason,
            "rate-limit quota reservation failed; counting locally for a moment"
        );
        lease.local_only_until = Some(Instant::now() + LOCAL_ONLY_FOR);
    }

    /// Adds `chunk` to the window's requested total and returns the new total.
    async fn reserve(
        &self,
        project: &str,
        datasource: &str,
        endpoint: Endpoint,
        window: u64,
        chunk: u64,
    ) -> Result<u64, sqlx::Error> {
        let window_start = DateTime::from_timestamp(window as i64, 0).unwrap_or_default();
        let total: i64 = sqlx::query_scalar(
            "INSERT INTO rate_limit_windows (project, datasource, endpoint, window_start, requested)
             VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (project, datasource, endpoint, window_start)
             DO UPDATE SET requested = rate_limit_windows.requested + EXCLUDED.requested
             RETURNING requested",
        )
        .bind(project)
        .bind(datasource)
        .bind(endpoint.as_str())
        .bind(window_start)
        .bind(chunk as i64)
        .fetch_one(&self.pool)
        .await?;
        Ok(total.max(0) as u64)
    }

    /// Every minute until `shutdown`: forget past windows, here and in the database.
    pub async fn clean_up_periodically(self, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval(Duration::from_secs(WINDOW_SECS));
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            let now = unix_now();
            let current = now - now % WINDOW_SECS;
            self.leases
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                // Only leases nobody holds or waits for: a request that cloned a lease
                // must not end up with one the map no longer knows.
                .retain(|_, lease| {
                    Arc::strong_count(lease) > 1
                        || lease.try_lock().map_or(true, |l| l.window >= current)
                });
            if let Err(err) = sqlx::query(
                "DELETE FROM rate_limit_windows WHERE window_start < now() - interval '10 minutes'",
            )
            .execute(&self.pool)
            .await
            {
                tracing::debug!(error = %err, "could not delete old rate-limit windows");
            }
        }
    }
}

/// How much quota one lease takes: small enough that unused leases waste little,
/// large enough that busy datasources rarely touch the database.
fn chunk_for(limit: u32) -> u64 {
    u64::from(limit / 50).clamp(1, 100)
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_scale_with_the_limit() {
        assert_eq!(chunk_for(1), 1);
        assert_eq!(chunk_for(600), 12);
        assert_eq!(chunk_for(1_000_000), 100);
    }

    #[test]
    fn headers_and_retry_after() {
        let decision = Decision {
            allowed: false,
            limit: 600,
            remaining: 0,
            reset: unix_now() + 30,
        };
        let mut headers = HeaderMap::new();
        decision.apply_headers(&mut headers);
        assert_eq!(headers["x-ratelimit-limit"], "600");
        assert_eq!(headers["x-ratelimit-remaining"], "0");
        assert!((29..=30).contains(&decision.retry_after()));
    }
}
