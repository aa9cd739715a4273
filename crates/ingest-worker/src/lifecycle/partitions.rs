//! The partitions of `events` and `event_ids` (see `crate::persist` and the migrations
//! `20261202000002_partitioned_events.sql`, `20261206000001_dedup_window.sql`): created
//! ahead, dropped whole, never row by row: a day of `events` when it is past the retention
//! (`lifecycle_settings.events_retention_days`), a generation of `event_ids` an hour
//! after the deduplication window (`dedup_window_hours`) has passed its end.
//!
//! Each step is its own short transaction with a `lock_timeout`: dropping a partition
//! takes an exclusive lock on its parent for a moment, waiting for the batch being
//! written; if that takes longer, the step gives up and the next run does it.

use chrono::{DateTime, NaiveDate, TimeDelta, Utc};
use serde::Serialize;
use sqlx::{PgConnection, Postgres, Transaction};

use crate::metrics::{
    DEFAULT_PARTITION_ROWS, EVENTS_PARTITIONS_AHEAD_SECONDS, PARTITIONS_CREATED_TOTAL,
    PARTITIONS_DROPPED_TOTAL,
};

/// Days of `events` partitions kept ready after today.
pub const PREMAKE_DAYS: i64 = 7;

/// How far ahead `event_ids` generations are made: a day, or one generation when the
/// window is longer (a short window would otherwise mean many empty partitions).
pub const GENERATIONS_AHEAD: TimeDelta = TimeDelta::days(1);

/// How long after the window has passed a generation's end it is dropped: a retry
/// received just inside the window and still on its way to the database (in Kafka, in a
/// batch) finds its original's id.
pub const DEDUP_GRACE: TimeDelta = TimeDelta::hours(1);

/// What the partition steps did.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct PartitionReport {
    /// Partitions of `events` (`events_pYYYYMMDD`) and generations of `event_ids` created.
    pub created: Vec<String>,
    /// Partitions and generations dropped past the retention.
    pub dropped: Vec<String>,
    /// Rows past the retention deleted from the default partitions (events received on a
    /// day whose partition was already dropped: a replay or a late dead letter).
    pub default_rows_deleted: u64,
}

async fn begin(conn: &mut PgConnection) -> Result<Transaction<'_, Postgres>, sqlx::Error> {
    use sqlx::Connection;
    let mut tx = conn.begin().await?;
    sqlx::query("SET LOCAL lock_timeout = '2s'")
        .execute(&mut *tx)
        .await?;
    Ok(tx)
}

/// Creates what is missing ahead, drops what is past the retention, as of `now`.
pub async fn maintain(
    conn: &mut PgConnection,
    now: DateTime<Utc>,
) -> Result<PartitionReport, sqlx::Error> {
    let mut report = PartitionReport::default();
    let today = now.date_naive();
    let (retention_days, window_hours): (i32, i32) =
        sqlx::query_as("SELECT events_retention_days, dedup_window_hours FROM lifecycle_settings")
            .fetch_one(&mut *conn)
            .await?;
    let retention = TimeDelta::days(retention_days.into());
    let window = TimeDelta::hours(window_hours.into());

    for ahead in 0..=PREMAKE_DAYS {
        let day = today + TimeDelta::days(ahead);
        let mut tx = begin(conn).await?;
        let created: bool = sqlx::query_scalar("SELECT ingest_ensure_events_partition($1)")
            .bind(day)
            .fetch_one(&mut *tx)
            .await?;
        tx.commit().await?;
        if created {
            report
                .created
                .push(format!("events_p{}", day.format("%Y%m%d")));
            metrics::counter!(PARTITIONS_CREATED_TOTAL, "table" => "events").increment(1);
        }
    }
    let mut tx = begin(conn).await?;
    let generations: i32 = sqlx::query_scalar("SELECT ingest_ensure_event_id_generations($1)")
        .bind(now + GENERATIONS_AHEAD.max(window))
        .fetch_one(&mut *tx)
        .await?;
    tx.commit().await?;
    if generations > 0 {
        report
            .created
            .push(format!("{generations} event_ids generation(s)"));
        metrics::counter!(PARTITIONS_CREATED_TOTAL, "table" => "event_ids")
            .increment(generations as u64);
    }

    // Events: a partition goes once its last instant is past the retention.
    let horizon = now - retention;
    for (name, until) in events_partitions(conn).await? {
        if until > horizon {
            continue;
        }
        let mut tx = begin(conn).await?;
        sqlx::query(&format!("DROP TABLE \"{name}\""))
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "UPDATE lifecycle_state
                SET events_dropped_before = greatest(events_dropped_before, $1),
                    legacy_until = CASE WHEN $2 = 'events_legacy' THEN NULL ELSE legacy_until END",
        )
        .bind(until)
        .bind(&name)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        metrics::counter!(PARTITIONS_DROPPED_TOTAL, "table" => "events").increment(1);
        report.dropped.push(name);
    }

    // Generations: once the window (and the grace) has passed their end, so an id is
    // remembered at least the window after its event was received.
    let expired: Vec<(DateTime<Utc>, DateTime<Utc>, String)> = sqlx::query_as(
        "SELECT bucket, ends, part FROM event_id_generations WHERE ends <= $1 ORDER BY bucket",
    )
    .bind(now - window - DEDUP_GRACE)
    .fetch_all(&mut *conn)
    .await?;
    for (bucket, ends, name) in expired {
        let mut tx = begin(conn).await?;
        sqlx::query(&format!("DROP TABLE IF EXISTS \"{name}\""))
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM event_id_generations WHERE bucket = $1")
            .bind(bucket)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "UPDATE lifecycle_state
                SET event_ids_dropped_before = greatest(event_ids_dropped_before, $1)",
        )
        .bind(ends)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        metrics::counter!(PARTITIONS_DROPPED_TOTAL, "table" => "event_ids").increment(1);
        report.dropped.push(name);
    }

    let mut tx = begin(conn).await?;
    let events_deleted = sqlx::query(
        "DELETE FROM events_default
          WHERE received_at < (SELECT events_dropped_before FROM lifecycle_state)",
    )
    .execute(&mut *tx)
    .await?
    .rows_affected();
    let ids_deleted = sqlx::query(
        "DELETE FROM event_ids_default
          WHERE bucket < coalesce((SELECT min(bucket) FROM event_id_generations), 'infinity')",
    )
    .execute(&mut *tx)
    .await?
    .rows_affected();
    tx.commit().await?;
    report.default_rows_deleted = events_deleted + ids_deleted;

    record_gauges(conn, now).await?;
    Ok(report)
}

/// The partitions of `events` that retention drops, with the end of what each holds:
/// the daily ones (`events_pYYYYMMDD`) and the table the migration found
/// (`events_legacy`, until `lifecycle_state.legacy_until`), oldest first.
pub async fn events_partitions(
    conn: &mut PgConnection,
) -> Result<Vec<(String, DateTime<Utc>)>, sqlx::Error> {
    let names: Vec<String> = sqlx::query_scalar(
        "SELECT c.relname::text FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
          WHERE i.inhparent = 'events'::regclass",
    )
    .fetch_all(&mut *conn)
    .await?;
    let legacy_until: Option<DateTime<Utc>> =
        sqlx::query_scalar("SELECT legacy_until FROM lifecycle_state")
            .fetch_one(&mut *conn)
            .await?;
    let mut partitions: Vec<(String, DateTime<Utc>)> = names
        .into_iter()
        .filter_map(|name| {
            let until = if name == "events_legacy" {
                legacy_until?
            } else {
                let day =
                    NaiveDate::parse_from_str(name.strip_prefix("events_p")?, "%Y%m%d").ok()?;
                (day + TimeDelta::days(1)).and_hms_opt(0, 0, 0)?.and_utc()
            };
            Some((name, until))
        })
        .collect();
    partitions.sort_by_key(|(_, until)| *until);
    Ok(partitions)
}

async fn record_gauges(conn: &mut PgConnection, now: DateTime<Utc>) -> Result<(), sqlx::Error> {
    let newest = events_partitions(conn)
        .await?
        .last()
        .map(|(_, until)| *until);
    let ahead = newest.map_or(0.0, |until| (until - now).num_seconds().max(0) as f64);
    metrics::gauge!(EVENTS_PARTITIONS_AHEAD_SECONDS).set(ahead);
    // Bounded counts: only "none", "some" and "many" matter to an operator.
    let (events, ids): (i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM (SELECT 1 FROM events_default LIMIT 100001) e),
                (SELECT count(*) FROM (SELECT 1 FROM event_ids_default LIMIT 100001) i)",
    )
    .fetch_one(&mut *conn)
    .await?;
    metrics::gauge!(DEFAULT_PARTITION_ROWS, "table" => "events").set(events as f64);
    metrics::gauge!(DEFAULT_PARTITION_ROWS, "table" => "event_ids").set(ids as f64);
    Ok(())
}
