//! The maintenance job: data lifecycle work no operator should have to remember. Every
//! worker runs it on a schedule (`INGEST_WORKER_MAINTENANCE_INTERVAL_SECS`), and
//! `ingestctl maintain` runs it on demand; a session advisory lock lets one run at a time
//! (the others skip), and every step is recomputed from the settings, the database and
//! the clock, so a second run right after the first changes nothing.
//!
//! Steps:
//! 1. **Partitions** ([`partitions`]): the days of `events` ahead are created, the
//!    partitions and dedup generations past the retention dropped whole.
//! 2. **Tombstone purge.** A deleted contact leaves a tombstone (`contact_tombstones`) so
//!    that an older upsert delivered again after the delete cannot bring the contact back.
//!    Tombstones older than the horizon (`lifecycle_settings.tombstone_horizon_days`) are
//!    deleted in bounded transactions, after `lifecycle_state.tombstones_purged_before` is
//!    raised to the cut-off: `ingestctl replay` refuses to rewind to before that point
//!    (plus a margin), so no purged tombstone's old upsert can be replayed. Completed
//!    erasure records (`user_erasures`) older than the same cut-off go with them.

pub mod partitions;

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{PgPool, Postgres};
use tokio_util::sync::CancellationToken;

use crate::metrics::{
    ERASURES_PURGED_TOTAL, ERASURE_OLDEST_INCOMPLETE_SECONDS,
    MAINTENANCE_LAST_SUCCESS_TIMESTAMP_SECONDS, MAINTENANCE_RUNS_TOTAL, TOMBSTONES_PURGED_TOTAL,
};

/// The key of the session advisory lock only one maintenance run holds.
const LOCK_KEY: &str = "ingest-worker:maintenance";
/// Tombstones deleted per transaction, so a large purge never holds locks for long.
const PURGE_CHUNK: i64 = 10_000;
/// How much earlier than the purge horizon a replay may not start: covers the clocks of
/// gateways (Kafka timestamps), workers and the database disagreeing.
pub const REPLAY_MARGIN: chrono::TimeDelta = chrono::TimeDelta::hours(1);

/// What one call of [`maintain`] did.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Report {
    /// False when another run held the lock: this one did nothing.
    pub ran: bool,
    pub tombstones_purged: u64,
    /// Tombstones deleted before this time may be gone (unchanged when `ran` is false).
    pub tombstones_purged_before: Option<DateTime<Utc>>,
    pub partitions: partitions::PartitionReport,
}

/// Runs every step once, as of `now` (the clock is a parameter so tests can move it).
pub async fn maintain(pool: &PgPool, now: DateTime<Utc>) -> Result<Report, sqlx::Error> {
    let mut conn = pool.acquire().await?;
    let locked: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock(hashtextextended($1, 0))")
        .bind(LOCK_KEY)
        .fetch_one(&mut *conn)
        .await?;
    if !locked {
        return Ok(Report {
            ran: false,
            tombstones_purged: 0,
            tombstones_purged_before: None,
            partitions: Default::default(),
        });
    }
    let outcome = run_steps(&mut conn, now).await;
    match &outcome {
        Ok(_) => {
            sqlx::query("SELECT pg_advisory_unlock(hashtextextended($1, 0))")
                .bind(LOCK_KEY)
                .execute(&mut *conn)
                .await?;
        }
        // The lock is the session's: closing the connection, rather than handing it back
        // to the pool in an unknown state, releases it.
        Err(_) => drop(conn.detach()),
    }
    outcome
}

async fn run_steps(
    conn: &mut sqlx::pool::PoolConnection<Postgres>,
    now: DateTime<Utc>,
) -> Result<Report, sqlx::Error> {
    sqlx::query("UPDATE lifecycle_state SET last_run_started_at = $1")
        .bind(now)
        .execute(&mut **conn)
        .await?;
    let result = async {
        let partitions = partitions::maintain(conn, now).await?;
        let (purged, before) = purge_tombstones(conn, now).await?;
        // An erasure is recorded and completed around one batch; one still incomplete
        // long after means its worker cannot get on (alert IngestErasureIncomplete).
        let oldest: f64 = sqlx::query_scalar(
            "SELECT coalesce(extract(epoch FROM $1 - min(recorded_at))::float8, 0)
               FROM user_erasures WHERE completed_at IS NULL",
        )
        .bind(now)
        .fetch_one(&mut **conn)
        .await?;
        metrics::gauge!(ERASURE_OLDEST_INCOMPLETE_SECONDS).set(oldest.max(0.0));
        Ok::<_, sqlx::Error>((partitions, purged, before))
    }
    .await;
    let error = result.as_ref().err().map(|e| e.to_string());
    // Best effort: the run's own error is the one to report.
    let _ =
        sqlx::query("UPDATE lifecycle_state SET last_run_finished_at = $1, last_run_error = $2")
            .bind(now)
            .bind(error)
            .execute(&mut **conn)
            .await;
    let (partitions, purged, before) = result?;
    Ok(Report {
        ran: true,
        tombstones_purged: purged,
        tombstones_purged_before: Some(before),
        partitions,
    })
}

async fn purge_tombstones(
    conn: &mut sqlx::pool::PoolConnection<Postgres>,
    now: DateTime<Utc>,
) -> Result<(u64, DateTime<Utc>), sqlx::Error> {
    // The horizon moves first: from here on a replay from before it is refused, while the
    // tombstones it announces may still be deleted.
    let cutoff: DateTime<Utc> = sqlx::query_scalar(
        "UPDATE lifecycle_state
            SET tombstones_purged_before = greatest(
                  tombstones_purged_before,
                  $1 - make_interval(days => (SELECT tombstone_horizon_days FROM lifecycle_settings)))
         RETURNING tombstones_purged_before",
    )
    .bind(now)
    .fetch_one(&mut **conn)
    .await?;
    let mut purged = 0;
    loop {
        let deleted = sqlx::query(
            "DELETE FROM contact_tombstones WHERE ctid = ANY(ARRAY(
                 SELECT ctid FROM contact_tombstones WHERE deleted_at < $1 LIMIT $2))",
        )
        .bind(cutoff)
        .bind(PURGE_CHUNK)
        .execute(&mut **conn)
        .await?
        .rows_affected();
        purged += deleted;
        metrics::counter!(TOMBSTONES_PURGED_TOTAL).increment(deleted);
        if deleted < PURGE_CHUNK as u64 {
            break;
        }
    }
    // Erasure records too: they keep erased writes out as tombstones keep deleted
    // contacts from coming back, and a replay from before the cutoff is refused.
    loop {
        let deleted = sqlx::query(
            "DELETE FROM user_erasures WHERE ctid = ANY(ARRAY(
                 SELECT ctid FROM user_erasures
                  WHERE erased_through < $1 AND completed_at IS NOT NULL LIMIT $2))",
        )
        .bind(cutoff)
        .bind(PURGE_CHUNK)
        .execute(&mut **conn)
        .await?
        .rows_affected();
        metrics::counter!(ERASURES_PURGED_TOTAL).increment(deleted);
        if deleted < PURGE_CHUNK as u64 {
            return Ok((purged, cutoff));
        }
    }
}

/// The worker's schedule: a run at start-up, then one every `interval` until `shutdown`.
/// A failed run is logged and counted, and the next one tries again.
pub async fn run_periodically(pool: PgPool, interval: Duration, shutdown: CancellationToken) {
    loop {
        let outcome = match maintain(&pool, Utc::now()).await {
            Ok(report) if !report.ran => "skipped",
            Ok(report) => {
                tracing::info!(
                    tombstones_purged = report.tombstones_purged,
                    partitions_created = ?report.partitions.created,
                    partitions_dropped = ?report.partitions.dropped,
                    "maintenance run finished"
                );
                metrics::gauge!(MAINTENANCE_LAST_SUCCESS_TIMESTAMP_SECONDS)
                    .set(Utc::now().timestamp() as f64);
                "ok"
            }
            Err(error) => {
                tracing::warn!(%error, "maintenance run failed; it runs again in {interval:?}");
                "error"
            }
        };
        metrics::counter!(MAINTENANCE_RUNS_TOTAL, "outcome" => outcome).increment(1);
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(interval) => {}
        }
    }
}
