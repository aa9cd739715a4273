//! Contact writes: folded per user in the order consumed, filtered by erasures, and
//! applied with a few set-based statements for the whole batch.
//!
//! Each write carries a version, the Kafka offset of its message (a user's writes share
//! one partition, so offsets order them as they were accepted): a row or tombstone with
//! an equal or newer version is never overwritten, so a redelivered or replayed older
//! write changes nothing. An erasure acts on the contact as a delete at its version.

use std::borrow::Cow;
use std::collections::HashMap;

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};
use sqlx::{Postgres, Transaction};

use super::erasure::Erasures;

/// The net effect of a batch's writes on one contact.
#[derive(Debug, Clone, PartialEq)]
pub enum ContactWrite<'a> {
    /// Merge into the stored attributes: keys overwrite, `null` removes.
    Merge(Cow<'a, Map<String, Value>>),
    /// The contact was deleted earlier in the batch, then written again: replace it.
    Replace(Cow<'a, Map<String, Value>>),
    Delete,
}

/// One write as consumed.
#[derive(Debug)]
pub(super) enum ContactOp {
    Upsert(Map<String, Value>),
    Delete,
    /// An erasure: a delete no erasure filters out (it is what erases).
    Erase,
}

/// (project, datasource, user).
pub(super) type ContactKey = (String, String, String);

/// A batch's contact writes per user, in first-seen order; folded when persisted (after
/// the erasures concerning the batch are known).
#[derive(Debug, Default)]
pub(super) struct Contacts {
    users: Vec<(ContactKey, Vec<Write>)>,
    index: HashMap<ContactKey, usize>,
}

#[derive(Debug)]
struct Write {
    version: i64,
    received_at: DateTime<Utc>,
    op: ContactOp,
}

impl Contacts {
    pub(super) fn push(
        &mut self,
        key: ContactKey,
        version: i64,
        received_at: DateTime<Utc>,
        op: ContactOp,
    ) {
        let write = Write {
            version,
            received_at,
            op,
        };
        match self.index.get(&key) {
            Some(&i) => self.users[i].1.push(write),
            None => {
                self.index.insert(key.clone(), self.users.len());
                self.users.push((key, vec![write]));
            }
        }
    }

    /// The oldest receipt among the writes.
    pub(super) fn oldest(&self) -> Option<DateTime<Utc>> {
        self.users
            .iter()
            .flat_map(|(_, writes)| writes.iter().map(|w| w.received_at))
            .min()
    }

    /// The net write and version per user, without the writes `erased` erases (a user
    /// left with none is skipped).
    pub(super) fn fold<'a>(
        &'a self,
        erased: &Erasures,
    ) -> impl Iterator<Item = (&'a ContactKey, ContactWrite<'a>, i64)> + 'a {
        let erased = (!erased.is_empty()).then(|| erased.clone());
        self.users.iter().filter_map(move |(key, writes)| {
            let kept = writes.iter().filter(|w| {
                matches!(w.op, ContactOp::Erase)
                    || !erased
                        .as_ref()
                        .is_some_and(|e| e.erases(&key.0, &key.1, &key.2, w.received_at))
            });
            let mut net: Option<(ContactWrite<'a>, i64)> = None;
            for w in kept {
                let upsert = match &w.op {
                    ContactOp::Upsert(a) => Some(a),
                    ContactOp::Delete | ContactOp::Erase => None,
                };
                let (previous, version) = match net.take() {
                    Some((write, version)) => (Some(write), version.max(w.version)),
                    None => (None, w.version),
                };
                let write = match (previous, upsert) {
                    (_, None) => ContactWrite::Delete,
                    (None, Some(a)) => ContactWrite::Merge(Cow::Borrowed(a)),
                    (Some(ContactWrite::Merge(mut m)), Some(a)) => {
                        m.to_mut().extend(a.clone());
                        ContactWrite::Merge(m)
                    }
                    (Some(ContactWrite::Replace(mut m)), Some(a)) => {
                        m.to_mut().extend(a.clone());
                        ContactWrite::Replace(m)
                    }
                    (Some(ContactWrite::Delete), Some(a)) => {
                        ContactWrite::Replace(Cow::Borrowed(a))
                    }
                };
                net = Some((write, version));
            }
            net.map(|(write, version)| (key, write, version))
        })
    }
}

/// Deletes: `$1..$4` = project, datasource, user_id, version (`text[]`, `bigint[]`).
/// Removes rows older than the delete and leaves (or advances) the user's tombstone.
pub const DELETE_CONTACTS: &str =
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
     WHERE contact_tombstones.version < EXCLUDED.version";

/// Merges: `$1..$6` = project, datasource, user_id, version, patch (JSON text), replace
/// (`text[]` x3, `bigint[]`, `text[]`, `bool[]`), one element per user. Creates missing
/// rows (not for users deleted by a newer write) and merges into rows older than the
/// write: present keys overwrite, `null` removes, absent keys stay; a write that follows
/// a delete of the same batch (`replace`) replaces an older row whole, as a fresh row. A
/// fresh row gets the patch without its nulls.
pub const MERGE_CONTACTS: &str = "MERGE INTO contacts c
     USING (SELECT m.*, t.version AS tombstone
              FROM UNNEST($1::text[], $2::text[], $3::text[], $4::bigint[],
                          $5::text[], $6::bool[])
                   AS m(project, datasource, user_id, version, patch, replace)
              LEFT JOIN contact_tombstones t
                ON t.project = m.project AND t.datasource = m.datasource
               AND t.user_id = m.user_id) m
        ON c.project = m.project AND c.datasource = m.datasource
       AND c.user_id = m.user_id
     WHEN MATCHED AND c.version < m.version THEN UPDATE
          SET attributes = CASE WHEN m.replace THEN jsonb_strip_nulls(m.patch::jsonb)
                                ELSE jsonb_strip_nulls(c.attributes || m.patch::jsonb) END,
              version = m.version, updated_at = now(),
              created_at = CASE WHEN m.replace THEN now() ELSE c.created_at END
     WHEN NOT MATCHED AND (m.tombstone IS NULL OR m.tombstone < m.version) THEN
          INSERT (project, datasource, user_id, attributes, version)
          VALUES (m.project, m.datasource, m.user_id,
                  jsonb_strip_nulls(m.patch::jsonb), m.version)";

/// Applies the folded writes in `tx`.
pub(super) async fn write(
    tx: &mut Transaction<'_, Postgres>,
    writes: Vec<(&ContactKey, ContactWrite<'_>, i64)>,
) -> Result<(), sqlx::Error> {
    if writes.is_empty() {
        return Ok(());
    }
    let mut deletes = KeyColumns::default();
    let mut merges = KeyColumns::default();
    for ((project, datasource, user_id), write, version) in &writes {
        let (columns, attributes) = match write {
            ContactWrite::Delete => (&mut deletes, None),
            ContactWrite::Replace(a) => (&mut merges, Some((&**a, true))),
            ContactWrite::Merge(a) => (&mut merges, Some((&**a, false))),
        };
        columns.push(project, datasource, user_id, *version, attributes);
    }
    if !deletes.is_empty() {
        sqlx::query(DELETE_CONTACTS)
            .bind(&deletes.project)
            .bind(&deletes.datasource)
            .bind(&deletes.user_id)
            .bind(&deletes.version)
            .execute(&mut **tx)
            .await?;
    }
    if !merges.is_empty() {
        // One statement (MERGE_CONTACTS). Each key occurs once per batch, so each row
        // is touched once (MERGE refuses to touch a row twice). Writers of one user are
        // serialized by the partition lock (see `Batch::locking_partitions`), so no
        // other transaction inserts a row this statement finds missing.
        sqlx::query(MERGE_CONTACTS)
            .bind(&merges.project)
            .bind(&merges.datasource)
            .bind(&merges.user_id)
            .bind(&merges.version)
            .bind(&merges.attributes)
            .bind(&merges.replace)
            .execute(&mut **tx)
            .await?;
    }
    Ok(())
}

/// Column arrays of contact writes, for `UNNEST`.
#[derive(Debug, Default)]
struct KeyColumns<'a> {
    project: Vec<&'a str>,
    datasource: Vec<&'a str>,
    user_id: Vec<&'a str>,
    version: Vec<i64>,
    /// The patches as JSON text (cast to `jsonb` by the statement).
    attributes: Vec<String>,
    /// Whether the patch replaces the row (it follows a delete of the same batch).
    replace: Vec<bool>,
}

impl<'a> KeyColumns<'a> {
    fn push(
        &mut self,
        project: &'a str,
        datasource: &'a str,
        user_id: &'a str,
        version: i64,
        attributes: Option<(&Map<String, Value>, bool)>,
    ) {
        self.project.push(project);
        self.datasource.push(datasource);
        self.user_id.push(user_id);
        self.version.push(version);
        if let Some((a, replace)) = attributes {
            // A map of JSON values always serializes.
            self.attributes
                .push(serde_json::to_string(a).unwrap_or_else(|_| "{}".to_owned()));
            self.replace.push(replace);
        }
    }

    fn is_empty(&self) -> bool {
        self.project.is_empty()
    }
}
