//! All persistence SQL. One transaction per batch, set-based statements (`UNNEST` of
//! column arrays), idempotent effects:
//!
//! - contact writes are folded per user in batch order (so several writes for one user
//!   in one batch apply in order), then applied with a few statements for the whole
//!   batch. Each write carries a version, the Kafka offset of its last message (a
//!   user's writes share one partition, so offsets order them as they were accepted):
//!   a row or tombstone with an equal or newer version is never overwritten, so a
//!   redelivered or replayed older write changes nothing;
//! - events are stored once per (project, datasource, `_event_id`) within the retention
//!   period, through the deduplication of [`events`]: a redelivered, replayed or retried
//!   event is a no-op.

use std::collections::HashMap;

use ingest_types::envelope::COMMITTED_CHANNEL;
use ingest_types::{Envelope, Operation};
use serde_json::{Map, Value};
use sqlx::{PgPool, Postgres, Transaction};

/// The migrations under the workspace's `migrations/`, embedded at compile time.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../../migrations");

mod events;
use events::EventColumns;
pub use events::COPY_EVENTS;

/// The net effect of a batch's writes on one contact.
#[derive(Debug, Clone, PartialEq)]
pub enum ContactWrite {
    /// Merge into the stored attributes: keys overwrite, `null` removes.
    Merge(Map<String, Value>),
    /// The contact was deleted earlier in the batch, then written again: replace it.
    Replace(Map<String, Value>),
    Delete,
}

type ContactKey = (String, String, String);

#[derive(Debug, Default)]
pub struct Batch {
    /// Net write and version per (project, datasource, user), in first-seen order.
    contacts: Vec<(ContactKey, ContactWrite, i64)>,
    events: EventColumns,
    /// Items per `sync_id` (requests that asked `?_sync`), announced at commit.
    synced: HashMap<String, u64>,
    /// The events as `COPY` input, built with the batch (off the database's time).
    events_csv: Vec<u8>,
    /// The Kafka partitions (`topic/partition`) the contact writes came from, locked for
    /// the transaction (see [`Batch::locking_partitions`]).
    partition_locks: Vec<String>,
}

impl Batch {
    /// Folds `(version, envelope)` pairs, in the order they were consumed, into the
    /// batch's net effect. The version is the message's Kafka offset.
    pub fn from_envelopes<'a>(envelopes: impl IntoIterator<Item = (i64, &'a Envelope)>) -> Self {
        let mut batch = Batch::default();
        let mut index: HashMap<ContactKey, usize> = HashMap::new();
        for (version, env) in envelopes {
            if let Some(sync_id) = &env.sync_id {
                *batch.synced.entry(sync_id.clone()).or_default() += 1;
            }
            let key = || {
                (
                    env.project.clone(),
                    env.datasource.clone(),
                    env.user_id.clone(),
                )
            };
            let contact = match &env.op {
                Operation::UpsertContact { attributes } => Some(Some(attributes)),
                Operation::DeleteContact | Operation::EraseUser => Some(None),
                Operation::AppendEvent {
                    event_id,
                    event_type,
                    event_date,
                    parameters,
                } => {
                    batch
                        .events
                        .push(env, event_id, event_type, *event_date, parameters);
                    None
                }
            };
            let Some(upsert) = contact else { continue };
            let key = key();
            match index.get(&key) {
                Some(&i) => {
                    let (_, slot, slot_version) = &mut batch.contacts[i];
                    *slot_version = (*slot_version).max(version);
                    *slot = match (std::mem::replace(slot, ContactWrite::Delete), upsert) {
                        (_, None) => ContactWrite::Delete,
                        (ContactWrite::Merge(mut m), Some(a)) => {
                            m.extend(a.clone());
                            ContactWrite::Merge(m)
                        }
                        (ContactWrite::Replace(mut m), Some(a)) => {
                            m.extend(a.clone());
                            ContactWrite::Replace(m)
                        }
                        (ContactWrite::Delete, Some(a)) => ContactWrite::Replace(a.clone()),
                    };
                }
                None => {
                    index.insert(key.clone(), batch.contacts.len());
                    let write = match upsert {
                        Some(a) => ContactWrite::Merge(a.clone()),
                        None => ContactWrite::Delete,
                    };
                    batch.contacts.push((key, write, version));
                }
            }
        }
        batch.events_csv = batch.events.to_csv(None);
        batch
    }

    /// Makes the transaction hold a lock per Kafka partition of the batch's contact
    /// writes. A partition has one owner at a time, except during a rebalance: the old
    /// owner may still be writing a batch it read before its partitions were revoked
    /// while the new owner writes the same messages again. The version guards need each
    /// writer to see the other's committed rows and tombstones (with both transactions
    /// open, a delete can miss an upsert's row and the upsert the delete's tombstone, and
    /// a deleted contact would come back); the lock orders the two transactions. A worker
    /// that owns its partitions never waits for it.
    pub fn locking_partitions<'a>(
        mut self,
        partitions: impl IntoIterator<Item = (&'a str, i32)>,
    ) -> Self {
        if !self.contacts.is_empty() {
            let distinct: std::collections::BTreeSet<_> = partitions.into_iter().collect();
            self.partition_locks = distinct
                .into_iter()
                .map(|(topic, partition)| format!("{topic}/{partition}"))
                .collect();
        }
        self
    }

    /// The batch's events as the CSV input of [`COPY_EVENTS`].
    pub fn events_csv(&self) -> &[u8] {
        &self.events_csv
    }

    pub fn contact_writes(&self) -> impl Iterator<Item = &ContactWrite> {
        self.contacts.iter().map(|(_, w, _)| w)
    }

    /// Applies the batch in one transaction. Returns only after the commit.
    pub async fn persist(&self, pool: &PgPool) -> Result<(), sqlx::Error> {
        let mut tx = pool.begin().await?;
        if !self.partition_locks.is_empty() {
            // In a fixed order, so two writers cannot deadlock on them.
            sqlx::query(
                "SELECT pg_advisory_xact_lock(hashtextextended('ingest-worker:' || k, 0))
                   FROM UNNEST($1::text[]) WITH ORDINALITY AS u(k, i) ORDER BY i",
            )
            .bind(&self.partition_locks)
            .execute(&mut *tx)
            .await?;
        }
        self.write_contacts(&mut tx).await?;
        events::write(&mut tx, &self.events, &self.events_csv).await?;
        self.announce_synced(&mut tx).await?;
        tx.commit().await
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

    async fn write_contacts(&self, tx: &mut Transaction<'_, Postgres>) -> Result<(), sqlx::Error> {
        if self.contacts.is_empty() {
            return Ok(());
        }
        let mut deletes = KeyColumns::default();
        let mut replaces = KeyColumns::default();
        let mut merges = KeyColumns::default();
        for ((project, datasource, user_id), write, version) in &self.contacts {
            let (columns, attributes) = match write {
                ContactWrite::Delete => (&mut deletes, None),
                ContactWrite::Replace(a) => (&mut replaces, Some(a)),
                ContactWrite::Merge(a) => (&mut merges, Some(a)),
            };
            columns.push(project, datasource, user_id, *version, attributes);
        }
        if !deletes.is_empty() {
            // Remove older rows, and remember the delete's version.
            sqlx::query(
                "WITH d AS (SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::bigint[])
                                AS d(project, datasource, user_id, version)),
                      removed AS (
                     DELETE FROM contacts c USING d
                      WHERE c.project = d.project AND c.datasource = d.datasource
                        AND c.user_id = d.user_id AND c.version < d.version)
                 INSERT INTO contact_tombstones (project, datasource, user_id, version)
                 SELECT project, datasource, user_id, version FROM d
                 ON CONFLICT (project, datasource, user_id)
                 DO UPDATE SET version = EXCLUDED.version, deleted_at = now()
                 WHERE contact_tombstones.version < EXCLUDED.version",
            )
            .bind(&deletes.project)
            .bind(&deletes.datasource)
            .bind(&deletes.user_id)
            .bind(&deletes.version)
            .execute(&mut **tx)
            .await?;
        }
        if !replaces.is_empty() {
            // Deleted and written again in this batch: an older row is replaced whole.
            sqlx::query(
                "DELETE FROM contacts c
                 USING UNNEST($1::text[], $2::text[], $3::text[], $4::bigint[])
                       AS r(project, datasource, user_id, version)
                 WHERE c.project = r.project AND c.datasource = r.datasource
                   AND c.user_id = r.user_id AND c.version < r.version",
            )
            .bind(&replaces.project)
            .bind(&replaces.datasource)
            .bind(&replaces.user_id)
            .bind(&replaces.version)
            .execute(&mut **tx)
            .await?;
            merges.extend(replaces);
        }
        if !merges.is_empty() {
            // Create missing rows (not for users deleted by a newer write), then merge
            // into rows older than the write. Two statements because a fresh row must not
            // keep the nulls that, on an existing row, remove attributes; each key occurs
            // once per batch, so the UPDATE touches each row once.
            sqlx::query(
                "INSERT INTO contacts (project, datasource, user_id)
                 SELECT m.project, m.datasource, m.user_id
                   FROM UNNEST($1::text[], $2::text[], $3::text[], $4::bigint[])
                        AS m(project, datasource, user_id, version)
                  WHERE NOT EXISTS (
                        SELECT 1 FROM contact_tombstones t
                         WHERE t.project = m.project AND t.datasource = m.datasource
                           AND t.user_id = m.user_id AND t.version >= m.version)
                 ON CONFLICT (project, datasource, user_id) DO NOTHING",
            )
            .bind(&merges.project)
            .bind(&merges.datasource)
            .bind(&merges.user_id)
            .bind(&merges.version)
            .execute(&mut **tx)
            .await?;
            sqlx::query(
                "UPDATE contacts c
                 SET attributes = jsonb_strip_nulls(c.attributes || m.patch),
                     version = m.version, updated_at = now()
                 FROM UNNEST($1::text[], $2::text[], $3::text[], $4::bigint[], $5::jsonb[])
                      AS m(project, datasource, user_id, version, patch)
                 WHERE c.project = m.project AND c.datasource = m.datasource
                   AND c.user_id = m.user_id AND c.version < m.version",
            )
            .bind(&merges.project)
            .bind(&merges.datasource)
            .bind(&merges.user_id)
            .bind(&merges.version)
            .bind(&merges.attributes)
            .execute(&mut **tx)
            .await?;
        }
        Ok(())
    }
}

/// Column arrays of contact writes, for `UNNEST`.
#[derive(Debug, Default)]
struct KeyColumns<'a> {
    project: Vec<&'a str>,
    datasource: Vec<&'a str>,
    user_id: Vec<&'a str>,
    version: Vec<i64>,
    attributes: Vec<Value>,
}

impl<'a> KeyColumns<'a> {
    fn push(
        &mut self,
        project: &'a str,
        datasource: &'a str,
        user_id: &'a str,
        version: i64,
        attributes: Option<&Map<String, Value>>,
    ) {
        self.project.push(project);
        self.datasource.push(datasource);
        self.user_id.push(user_id);
        self.version.push(version);
        if let Some(a) = attributes {
            self.attributes.push(Value::Object(a.clone()));
        }
    }

    fn extend(&mut self, other: KeyColumns<'a>) {
        self.project.extend(other.project);
        self.datasource.extend(other.datasource);
        self.user_id.extend(other.user_id);
        self.version.extend(other.version);
        self.attributes.extend(other.attributes);
    }

    fn is_empty(&self) -> bool {
        self.project.is_empty()
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
        let writes: Vec<_> = batch.contact_writes().cloned().collect();
        assert_eq!(
            writes,
            vec![
                ContactWrite::Merge(obj(json!({"x": 2, "y": null}))),
                ContactWrite::Delete,
                ContactWrite::Replace(obj(json!({"z": 4, "w": null}))),
            ]
        );
    }
}
