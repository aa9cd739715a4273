//! All persistence SQL. One transaction per batch, set-based statements (`UNNEST` of
//! column arrays), idempotent effects:
//!
//! - contact writes are folded per user in batch order (so several writes for one user
//!   in one batch apply in order), then applied with one DELETE, one INSERT and one
//!   UPDATE for the whole batch;
//! - events are inserted with `ON CONFLICT DO NOTHING`: a redelivered event is a no-op.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use ingest_types::{Envelope, Operation};
use serde_json::{Map, Value};
use sqlx::{PgPool, Postgres, Transaction};

/// The migrations under the workspace's `migrations/`, embedded at compile time.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../../migrations");

/// The net effect of a batch's writes on one contact.
#[derive(Debug, Clone, PartialEq)]
pub enum ContactWrite {
    /// Merge into the stored attributes: keys overwrite, `null` removes.
    Merge(Map<String, Value>),
    /// The contact was deleted earlier in the batch, then written again: replace it.
    Replace(Map<String, Value>),
    Delete,
}

#[derive(Debug, Default)]
pub struct Batch {
    /// Net write per (project, datasource, user), in first-seen order.
    contacts: Vec<((String, String, String), ContactWrite)>,
    events: EventColumns,
}

#[derive(Debug, Default)]
struct EventColumns {
    project: Vec<String>,
    datasource: Vec<String>,
    event_id: Vec<String>,
    user_id: Vec<String>,
    event_type: Vec<String>,
    event_date: Vec<DateTime<Utc>>,
    parameters: Vec<Value>,
    received_at: Vec<DateTime<Utc>>,
}

impl Batch {
    /// Folds envelopes, in the order they were consumed, into the batch's net effect.
    pub fn from_envelopes<'a>(envelopes: impl IntoIterator<Item = &'a Envelope>) -> Self {
        let mut batch = Batch::default();
        let mut index: HashMap<(String, String, String), usize> = HashMap::new();
        for env in envelopes {
            match &env.op {
                Operation::UpsertContact { attributes } => {
                    let key = (
                        env.project.clone(),
                        env.datasource.clone(),
                        env.user_id.clone(),
                    );
                    match index.get(&key) {
                        Some(&i) => {
                            let slot = &mut batch.contacts[i].1;
                            *slot = match std::mem::replace(slot, ContactWrite::Delete) {
                                ContactWrite::Merge(mut m) => {
                                    m.extend(attributes.clone());
                                    ContactWrite::Merge(m)
                                }
                                ContactWrite::Replace(mut m) => {
                                    m.extend(attributes.clone());
                                    ContactWrite::Replace(m)
                                }
                                ContactWrite::Delete => ContactWrite::Replace(attributes.clone()),
                            };
                        }
                        None => {
                            index.insert(key.clone(), batch.contacts.len());
                            batch
                                .contacts
                                .push((key, ContactWrite::Merge(attributes.clone())));
                        }
                    }
                }
                Operation::DeleteContact => {
                    let key = (
                        env.project.clone(),
                        env.datasource.clone(),
                        env.user_id.clone(),
                    );
                    match index.get(&key) {
                        Some(&i) => batch.contacts[i].1 = ContactWrite::Delete,
                        None => {
                            index.insert(key.clone(), batch.contacts.len());
                            batch.contacts.push((key, ContactWrite::Delete));
                        }
                    }
                }
                Operation::AppendEvent {
                    event_id,
                    event_type,
                    event_date,
                    parameters,
                } => {
                    let e = &mut batch.events;
                    e.project.push(env.project.clone());
                    e.datasource.push(env.datasource.clone());
                    e.event_id.push(event_id.clone());
                    e.user_id.push(env.user_id.clone());
                    e.event_type.push(event_type.clone());
                    e.event_date.push(*event_date);
                    e.parameters.push(Value::Object(parameters.clone()));
                    e.received_at.push(env.received_at);
                }
            }
        }
        batch
    }

    pub fn contact_writes(&self) -> impl Iterator<Item = &ContactWrite> {
        self.contacts.iter().map(|(_, w)| w)
    }

    /// Applies the batch in one transaction. Returns only after the commit.
    pub async fn persist(&self, pool: &PgPool) -> Result<(), sqlx::Error> {
        let mut tx = pool.begin().await?;
        self.write_contacts(&mut tx).await?;
        self.write_events(&mut tx).await?;
        tx.commit().await
    }

    async fn write_contacts(&self, tx: &mut Transaction<'_, Postgres>) -> Result<(), sqlx::Error> {
        if self.contacts.is_empty() {
            return Ok(());
        }
        // Rows to remove first: deletes, and deletes followed by new writes (replace).
        let (mut dp, mut dd, mut du) = (Vec::new(), Vec::new(), Vec::new());
        // Rows to merge into (after being created when missing).
        let (mut mp, mut md, mut mu, mut ma) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for ((project, datasource, user_id), write) in &self.contacts {
            let attributes = match write {
                ContactWrite::Merge(a) => Some(a),
                ContactWrite::Replace(a) => {
                    dp.push(project.as_str());
                    dd.push(datasource.as_str());
                    du.push(user_id.as_str());
                    Some(a)
                }
                ContactWrite::Delete => {
                    dp.push(project.as_str());
                    dd.push(datasource.as_str());
                    du.push(user_id.as_str());
                    None
                }
            };
            if let Some(a) = attributes {
                mp.push(project.as_str());
                md.push(datasource.as_str());
                mu.push(user_id.as_str());
                ma.push(Value::Object(a.clone()));
            }
        }
        if !dp.is_empty() {
            sqlx::query(
                "DELETE FROM contacts c
                 USING UNNEST($1::text[], $2::text[], $3::text[]) AS d(project, datasource, user_id)
                 WHERE c.project = d.project AND c.datasource = d.datasource AND c.user_id = d.user_id",
            )
            .bind(&dp)
            .bind(&dd)
            .bind(&du)
            .execute(&mut **tx)
            .await?;
        }
        if !mp.is_empty() {
            // Create missing rows, then merge. Two statements because a fresh row must not
            // keep the nulls that, on an existing row, remove attributes; each key occurs
            // once per batch, so the UPDATE touches each row once.
            sqlx::query(
                "INSERT INTO contacts (project, datasource, user_id)
                 SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[])
                 ON CONFLICT (project, datasource, user_id) DO NOTHING",
            )
            .bind(&mp)
            .bind(&md)
            .bind(&mu)
            .execute(&mut **tx)
            .await?;
            sqlx::query(
                "UPDATE contacts c
                 SET attributes = jsonb_strip_nulls(c.attributes || m.patch), updated_at = now()
                 FROM UNNEST($1::text[], $2::text[], $3::text[], $4::jsonb[])
                      AS m(project, datasource, user_id, patch)
                 WHERE c.project = m.project AND c.datasource = m.datasource AND c.user_id = m.user_id",
            )
            .bind(&mp)
            .bind(&md)
            .bind(&mu)
            .bind(&ma)
            .execute(&mut **tx)
            .await?;
        }
        Ok(())
    }

    async fn write_events(&self, tx: &mut Transaction<'_, Postgres>) -> Result<(), sqlx::Error> {
        let e = &self.events;
        if e.event_id.is_empty() {
            return Ok(());
        }
        sqlx::query(
            "INSERT INTO events
                 (project, datasource, event_id, user_id, event_type, event_date, parameters, received_at)
             SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[],
                                  $6::timestamptz[], $7::jsonb[], $8::timestamptz[])
             ON CONFLICT (project, datasource, event_id) DO NOTHING",
        )
        .bind(&e.project)
        .bind(&e.datasource)
        .bind(&e.event_id)
        .bind(&e.user_id)
        .bind(&e.event_type)
        .bind(&e.event_date)
        .bind(&e.parameters)
        .bind(&e.received_at)
        .execute(&mut **tx)
        .await?;
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
        let batch = Batch::from_envelopes(&envs);
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
