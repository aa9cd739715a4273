//! All persistence SQL. One transaction per batch, set-based statements (`UNNEST` of
//! column arrays, `COPY`), idempotent effects:
//!
//! - contact writes ([`contacts`]) are folded per user in batch order and applied with a
//!   few statements for the whole batch, versioned by Kafka offset: a redelivered or
//!   replayed older write changes nothing;
//! - events are stored once per (project, datasource, `_event_id`) within the
//!   deduplication window, through the deduplication of [`events`]: a redelivered,
//!   replayed or retried event is a no-op;
//! - erasures of users ([`erasure`]) are recorded before the batch that carries them and
//!   completed after it; every batch drops the writes an erasure erases.

use std::collections::HashMap;

use ingest_types::envelope::COMMITTED_CHANNEL;
use ingest_types::{Envelope, Operation};
use serde_json::{Map, Value};
use sqlx::{PgPool, Postgres, Transaction};

/// The migrations under the workspace's `migrations/`, embedded at compile time.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../../migrations");

mod contacts;
pub mod erasure;
mod events;
use contacts::{ContactOp, Contacts};
pub use contacts::{ContactWrite, DELETE_CONTACTS, MERGE_CONTACTS};
use erasure::Erasures;
use events::EventColumns;
pub use events::{event_key, COPY_EVENTS};

#[derive(Debug, Default)]
pub struct Batch {
    contacts: Contacts,
    events: EventColumns,
    /// Items per `sync_id` (requests that asked `?_sync`), announced at commit. An
    /// erasure is announced when it completes ([`erasure::complete`]), not here.
    synced: HashMap<String, u64>,
    /// The events as `COPY` input, built with the batch (off the database's time).
    events_csv: Vec<u8>,
    /// The (project, datasource) pairs written to, sorted: their erasure locks are held
    /// shared by the transaction.
    datasources: Vec<(String, String)>,
    /// The Kafka partitions (`topic/partition`) the batch came from, locked for the
    /// transaction (see [`Batch::locking_partitions`]).
    partition_locks: Vec<String>,
}

impl Batch {
    /// Folds `(version, envelope)` pairs, in the order they were consumed, into the
    /// batch's net effect. The version is the message's Kafka offset.
    pub fn from_envelopes<'a>(envelopes: impl IntoIterator<Item = (i64, &'a Envelope)>) -> Self {
        let mut batch = Batch::default();
        for (version, env) in envelopes {
            if let Some(sync_id) = &env.sync_id {
                if env.op != Operation::EraseUser {
                    *batch.synced.entry(sync_id.clone()).or_default() += 1;
                }
            }
            if batch
                .datasources
                .last()
                .is_none_or(|(p, d)| *p != env.project || *d != env.datasource)
            {
                batch
                    .datasources
                    .push((env.project.clone(), env.datasource.clone()));
            }
            let op = match &env.op {
                Operation::UpsertContact { attributes } => ContactOp::Upsert(attributes.clone()),
                Operation::DeleteContact => ContactOp::Delete,
                Operation::EraseUser => ContactOp::Erase,
                Operation::AppendEvent {
                    event_id,
                    event_type,
                    event_date,
                    parameters,
                } => {
                    batch
                        .events
                        .push(env, event_id, event_type, *event_date, parameters);
                    continue;
                }
            };
            let key = (
                env.project.clone(),
                env.datasource.clone(),
                env.user_id.clone(),
            );
            batch.contacts.push(key, version, env.received_at, op);
        }
        batch.datasources.sort_unstable();
        batch.datasources.dedup();
        batch.events_csv = batch.events.to_csv(None);
        batch
    }

    /// Makes the transaction hold a lock per Kafka partition of the batch. A partition
    /// has one owner at a time, except during a rebalance: the old owner may still be
    /// writing a batch it read before its partitions were revoked while the new owner
    /// writes the same messages again. Each writer must see the other's committed rows:
    /// for contacts, the version guards (with both transactions open, a delete can miss
    /// an upsert's row and the upsert the delete's tombstone, and a deleted contact would
    /// come back); for events, the deduplication (an event and its retry in two
    /// generations have no unique index between them, and both would be stored). The
    /// lock orders the two transactions. A worker that owns its partitions never waits
    /// for it.
    pub fn locking_partitions<'a>(
        mut self,
        partitions: impl IntoIterator<Item = (&'a str, i32)>,
    ) -> Self {
        // Every batch that writes anything takes them (an empty one returns before).
        let distinct: std::collections::BTreeSet<_> = partitions.into_iter().collect();
        self.partition_locks = distinct
            .into_iter()
            .map(|(topic, partition)| format!("{topic}/{partition}"))
            .collect();
        self
    }

    /// The batch's events as the CSV input of [`COPY_EVENTS`].
    pub fn events_csv(&self) -> &[u8] {
        &self.events_csv
    }

    /// The net contact writes (no erasure applied).
    pub fn contact_writes(&self) -> impl Iterator<Item = ContactWrite<'_>> {
        self.contacts
            .fold(&Erasures::default())
            .map(|(_, write, _)| write)
    }

    /// The net contact writes with their (project, datasource, user) and version (no
    /// erasure applied), in first-seen order: what [`DELETE_CONTACTS`] and
    /// [`MERGE_CONTACTS`] are given.
    pub fn contact_rows(
        &self,
    ) -> impl Iterator<Item = ((&str, &str, &str), ContactWrite<'_>, i64)> {
        self.contacts
            .fold(&Erasures::default())
            .map(|((p, d, u), write, version)| {
                ((p.as_str(), d.as_str(), u.as_str()), write, version)
            })
    }

    /// Applies the batch in one transaction. Returns only after the commit.
    pub async fn persist(&self, pool: &PgPool) -> Result<(), sqlx::Error> {
        let oldest = match (self.contacts.oldest(), self.events.oldest()) {
            (Some(a), Some(b)) => a.min(b),
            (Some(t), None) | (None, Some(t)) => t,
            (None, None) => return Ok(()),
        };
        let mut tx = pool.begin().await?;
        if !self.partition_locks.is_empty() {
            // In a fixed order, so two writers cannot deadlock on them (and always before
            // the erasure locks, as every transaction that takes both does).
            sqlx::query(
                "SELECT pg_advisory_xact_lock(hashtextextended('ingest-worker:' || k, 0))
                   FROM UNNEST($1::text[]) WITH ORDINALITY AS u(k, i) ORDER BY i",
            )
            .bind(&self.partition_locks)
            .execute(&mut *tx)
            .await?;
        }
        let erased = Erasures::concerning(&mut tx, &self.datasources, oldest).await?;
        let writes: Vec<_> = self.contacts.fold(&erased).collect();
        contacts::write(&mut tx, writes).await?;
        let mut dropped = 0;
        match self.events.without(&erased) {
            None => events::write(&mut tx, &self.events, &self.events_csv).await?,
            Some(kept) => {
                let csv = kept.to_csv(None);
                events::write(&mut tx, &kept, &csv).await?;
                dropped = self.events.len() - kept.len();
            }
        }
        self.announce_synced(&mut tx).await?;
        tx.commit().await?;
        metrics::counter!(crate::metrics::ERASED_INFLIGHT_EVENTS_TOTAL).increment(dropped as u64);
        Ok(())
    }

    /// `NOTIFY ingest_committed` with `{"<sync_id>": items, ...}`, inside the transaction:
    /// Postgres delivers it exactly when the rows commit (and never if they do not).
    /// Payloads stay under Postgres' 8000-byte limit by splitting.
    async fn announce_synced(&self, tx: &mut Transaction<'_, Postgres>) -> Result<(), sqlx::Error> {
        let mut chunk = Map::new();
        let mut size = 0;
        let mut payloads = Vec::new();
        for (sync_id, items) in &self.synced {
            if size + sync_id.len() + 24 > 7000 && !chunk.is_empty() {
                payloads.push(Value::Object(std::mem::take(&mut chunk)).to_string());
                size = 0;
            }
            size += sync_id.len() + 24;
            chunk.insert(sync_id.clone(), Value::from(*items));
        }
        if !chunk.is_empty() {
            payloads.push(Value::Object(chunk).to_string());
        }
        for payload in payloads {
            sqlx::query("SELECT pg_notify($1, $2)")
                .bind(COMMITTED_CHANNEL)
                .bind(payload)
                .execute(&mut **tx)
                .await?;
        }
        Ok(())
    }
}

/// Whether retrying the same statement can never succeed: data exceptions (class 22)
/// and integrity violations (class 23). Everything else (connection loss, serialization
/// failures, the server shutting down) is treated as transient.
pub fn is_permanent(err: &sqlx::Error) -> bool {
    match err {
        sqlx::Error::Database(db) => db
            .code()
            .is_some_and(|code| code.starts_with("22") || code.starts_with("23")),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;
    use ingest_types::ENVELOPE_VERSION;
    use serde_json::json;
    use std::borrow::Cow;

    fn env(user: &str, op: Operation) -> Envelope {
        Envelope {
            v: ENVELOPE_VERSION,
            project: "p".into(),
            datasource: "d".into(),
            user_id: user.into(),
            received_at: Utc::now(),
            request_id: "r".into(),
            sync_id: None,
            op,
        }
    }

    fn upsert(v: Value) -> Operation {
        Operation::UpsertContact {
            attributes: v.as_object().unwrap().clone(),
        }
    }

    fn obj(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn folds_writes_per_user_in_order() {
        let envs = [
            env("a", upsert(json!({"x": 1, "y": 1}))),
            env("b", upsert(json!({"x": 1}))),
            env("a", upsert(json!({"x": 2, "y": null}))),
            env("b", Operation::DeleteContact),
            env("c", Operation::DeleteContact),
            env("c", upsert(json!({"z": 3}))),
            env("c", upsert(json!({"z": 4, "w": null}))),
        ];
        let batch = Batch::from_envelopes(envs.iter().enumerate().map(|(i, e)| (i as i64, e)));
        let writes: Vec<_> = batch.contact_writes().collect();
        assert_eq!(
            writes,
            vec![
                ContactWrite::Merge(Cow::Owned(obj(json!({"x": 2, "y": null})))),
                ContactWrite::Delete,
                ContactWrite::Replace(Cow::Owned(obj(json!({"z": 4, "w": null})))),
            ]
        );
    }
}
