//! Erasure of a user (`DELETE /stream/users/{user_id}`, table `user_erasures`).
//!
//! An erasure erases every write of the user the gateway received at or before the
//! erasure's own `received_at` (its `accepted_at`), wherever that write is: stored,
//! still in Kafka (on either topic), replayed, or redriven from the dead-letter topic.
//! Writes received later stand. It runs in two steps around the batch that carries it:
//!
//! 1. [`record`]: in its own transaction, under the datasource's erasure lock taken
//!    *exclusively*, the erasure is recorded (`erased_through`). Every batch holds the
//!    same lock *shared* from its start to its commit and, once it holds it, reads the
//!    erasures that concern it ([`Erasures::concerning`]) and drops the writes they erase.
//!    So when the record commits, every batch that could not see it has committed, and
//!    every later batch sees it.
//! 2. The batch itself applies the erasure to the contact like a delete (ordered with the
//!    user's contact writes by its offset; the tombstone keeps older writes out).
//! 3. [`complete`]: the user's stored events received up to `erased_through` are deleted
//!    with their deduplication ids (so a retry accepted after the erasure is stored
//!    again), the erasure is marked complete, and a `?_sync` request is told. An event
//!    whose retry was received after the erasure and deduplicated against it before the
//!    erasure ran (`event_ids.last_received_at`) is not deleted: that retry was accepted
//!    after the erasure, and stands.
//!
//! Every step is idempotent: a redelivered erasure changes nothing more.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use ingest_types::envelope::COMMITTED_CHANNEL;
use ingest_types::Envelope;
use sqlx::{PgPool, Postgres, Transaction};

/// The advisory-lock key of a datasource's erasures.
const LOCK_KEY: &str = "hashtextextended('ingest-erasure:' || p || '/' || d, 0)";

/// The erasures a batch must respect: (project, datasource, user) → `erased_through`.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Erasures(HashMap<(String, String, String), DateTime<Utc>>);

impl Erasures {
    /// Takes the erasure locks of `datasources` (project, datasource) in shared mode for
    /// the rest of `tx`, then reads every erasure recorded at or after `oldest` (the
    /// receipt of the batch's oldest write): no other can erase any of its writes.
    pub(super) async fn concerning(
        tx: &mut Transaction<'_, Postgres>,
        datasources: &[(String, String)],
        oldest: DateTime<Utc>,
    ) -> Result<Self, sqlx::Error> {
        let (projects, names): (Vec<&str>, Vec<&str>) = datasources
            .iter()
            .map(|(p, d)| (p.as_str(), d.as_str()))
            .unzip();
        sqlx::query(&format!(
            "SELECT pg_advisory_xact_lock_shared({LOCK_KEY})
               FROM UNNEST($1::text[], $2::text[]) AS u(p, d)"
        ))
        .bind(&projects)
        .bind(&names)
        .execute(&mut **tx)
        .await?;
        // A statement of its own: its snapshot is taken after the locks are held.
        let rows: Vec<(String, String, String, DateTime<Utc>)> = sqlx::query_as(
            "SELECT project, datasource, user_id, erased_through
               FROM user_erasures WHERE erased_through >= $1",
        )
        .bind(oldest)
        .fetch_all(&mut **tx)
        .await?;
        Ok(Self(
            rows.into_iter()
                .map(|(p, d, u, through)| ((p, d, u), through))
                .collect(),
        ))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether a write of `user` received at `received_at` is erased.
    pub fn erases(
        &self,
        project: &str,
        datasource: &str,
        user_id: &str,
        received_at: DateTime<Utc>,
    ) -> bool {
        !self.0.is_empty()
            && self
                .0
                .get(&(
                    project.to_owned(),
                    datasource.to_owned(),
                    user_id.to_owned(),
                ))
                .is_some_and(|through| received_at <= *through)
    }
}

/// Step 1: records the erasure carried by `erasure` (an `EraseUser` envelope). Waits for
/// the batches writing to its datasource to commit, and holds new ones back until it
/// commits (a few milliseconds).
pub async fn record(pool: &PgPool, erasure: &Envelope) -> Result<(), sqlx::Error> {
    let mut tx = pool.begin().await?;
    sqlx::query(&format!(
        "SELECT pg_advisory_xact_lock({LOCK_KEY}) FROM (SELECT $1::text, $2::text) AS u(p, d)"
    ))
    .bind(&erasure.project)
    .bind(&erasure.datasource)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "INSERT INTO user_erasures (project, datasource, user_id, erased_through)
         VALUES ($1, $2, $3, $4)
         ON CONFLICT (project, datasource, user_id) DO UPDATE
            SET erased_through = EXCLUDED.erased_through, recorded_at = now(),
                completed_at = NULL
          WHERE user_erasures.erased_through < EXCLUDED.erased_through",
    )
    .bind(&erasure.project)
    .bind(&erasure.datasource)
    .bind(&erasure.user_id)
    .bind(erasure.received_at)
    .execute(&mut *tx)
    .await?;
    tx.commit().await
}

/// Step 3: deletes the user's stored events received up to the erasure and their
/// deduplication ids, marks the erasure complete (unless a later one of the same user
/// was recorded meanwhile: that one completes it) and announces a `?_sync` request.
/// Returns how many events it deleted.
pub async fn complete(pool: &PgPool, erasure: &Envelope) -> Result<u64, sqlx::Error> {
    let mut tx = pool.begin().await?;
    // An event retried after the erasure (a copy received later was deduplicated against
    // this one, which its id row remembers) was accepted after it: it stays.
    let deleted: Vec<String> = sqlx::query_scalar(
        "DELETE FROM events e
          WHERE project = $1 AND datasource = $2 AND user_id = $3 AND received_at <= $4
            AND NOT EXISTS (
                SELECT 1 FROM event_ids i
                 WHERE i.project = e.project AND i.datasource = e.datasource
                   AND i.event_key = ingest_event_key(e.event_id) AND i.last_received_at > $4)
         RETURNING event_id",
    )
    .bind(&erasure.project)
    .bind(&erasure.datasource)
    .bind(&erasure.user_id)
    .bind(erasure.received_at)
    .fetch_all(&mut *tx)
    .await?;
    if !deleted.is_empty() {
        sqlx::query(
            "DELETE FROM event_ids
              WHERE project = $1 AND datasource = $2 AND event_key = ANY($3)",
        )
        .bind(&erasure.project)
        .bind(&erasure.datasource)
        .bind(
            deleted
                .iter()
                .map(|id| super::events::event_key(id))
                .collect::<Vec<_>>(),
        )
        .execute(&mut *tx)
        .await?;
    }
    sqlx::query(
        "UPDATE user_erasures
            SET completed_at = coalesce(completed_at, now()),
                events_erased = events_erased + $5
          WHERE project = $1 AND datasource = $2 AND user_id = $3 AND erased_through = $4",
    )
    .bind(&erasure.project)
    .bind(&erasure.datasource)
    .bind(&erasure.user_id)
    .bind(erasure.received_at)
    .bind(deleted.len() as i64)
    .execute(&mut *tx)
    .await?;
    if let Some(sync_id) = &erasure.sync_id {
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(COMMITTED_CHANNEL)
            .bind(serde_json::json!({ sync_id: 1 }).to_string())
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok(deleted.len() as u64)
}
