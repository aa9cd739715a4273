//! Events: the partitioned `events` table and its deduplication (migration
//! `20261202000002_partitioned_events.sql`).
//!
//! `events` is partitioned by the day the gateway received an event, so no unique index
//! on it can catch a client's retry (received later, maybe another day). An event is
//! stored once per (project, datasource, `_event_id`) within the deduplication window
//! (`lifecycle_settings.dedup_window_hours`) through `event_ids`: the three ids, the
//! event id as its 16-byte [`event_key`], in *generations* (consecutive ranges of receipt
//! times, each as wide as the window was when it was created; migration
//! `20261206000001_dedup_window.sql`). In one transaction with the rows:
//!
//! 1. the batch's events are folded by id (the first stays) when the batch is built;
//! 2. their keys go into the generation of their receipt, by `COPY`, or when one is
//!    already there `ON CONFLICT DO NOTHING` (`RETURNING` tells which are new): a
//!    redelivery, a replay or a retry within the same generation is caught by the
//!    primary key;
//! 3. the new keys are looked up in every other generation that overlaps the window
//!    either side of the receipt (the one before, and the one after once it has begun): a
//!    retry a generation later (or an original that comes back after its retry, from a
//!    dead letter) is caught there;
//! 4. the rest is copied into `events` with `COPY`.
//!
//! So the work per event is one insert into the current generation and one lookup in the
//! previous one, and what is remembered is bounded by the window, not by what is stored:
//! a generation is dropped an hour after the window has passed its end
//! (crate::lifecycle::partitions). An id is remembered at least the window after it was
//! received; `ingestctl replay` refuses to reach back past what was forgotten.

use std::collections::{BTreeMap, HashMap, HashSet};

use chrono::{DateTime, DurationRound, TimeDelta, Utc};
use ingest_types::Envelope;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use sqlx::{Postgres, Transaction};
use uuid::Uuid;

use super::erasure::Erasures;

/// The statement events are written with; its input is [`super::Batch::events_csv`].
pub const COPY_EVENTS: &str = "COPY events (project, datasource, event_id, user_id, event_type, \
     event_date, parameters, received_at) FROM STDIN (FORMAT csv)";

/// (project, datasource, event id): what an event is deduplicated by.
type EventKey = (String, String, String);

/// The 16 bytes an event id is deduplicated by in `event_ids` (migration
/// `20261206000001_dedup_window.sql`, whose `ingest_event_key` computes the same in
/// SQL): a UUID in canonical form whose version digit is not 8 is itself; any other id is
/// the first 16 bytes of the SHA-256 of `ingest:event-id:` and the id, with the version
/// (8) and variant bits of a UUIDv8. The two never meet: a UUID kept as itself never has
/// version 8.
pub fn event_key(event_id: &str) -> Uuid {
    if is_canonical_uuid(event_id) {
        if let Ok(uuid) = Uuid::parse_str(event_id) {
            return uuid;
        }
    }
    let digest = Sha256::new()
        .chain_update(b"ingest:event-id:")
        .chain_update(event_id.as_bytes())
        .finalize();
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    bytes[6] = (bytes[6] & 0x0f) | 0x80;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    Uuid::from_bytes(bytes)
}

/// Lowercase hyphenated 8-4-4-4-12 hex, version digit not 8.
fn is_canonical_uuid(id: &str) -> bool {
    let b = id.as_bytes();
    b.len() == 36
        && b.iter().enumerate().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => *c == b'-',
            _ => c.is_ascii_digit() || (b'a'..=b'f').contains(c),
        })
        && b[14] != b'8'
}

/// A batch's events as column arrays, one per distinct key, in first-seen order.
#[derive(Debug, Default)]
pub(super) struct EventColumns {
    /// Each key's index in the columns.
    seen: HashMap<EventKey, usize>,
    /// Later copies of a key already held (rare: a retry in the same batch), kept in case
    /// an erasure removes the first copy but not a later one.
    later_copies: Vec<OwnedEvent>,
    project: Vec<String>,
    datasource: Vec<String>,
    event_id: Vec<String>,
    /// Each event id's [`event_key`].
    event_key: Vec<Uuid>,
    user_id: Vec<String>,
    event_type: Vec<String>,
    event_date: Vec<DateTime<Utc>>,
    parameters: Vec<Value>,
    received_at: Vec<DateTime<Utc>>,
    /// The latest receipt of a later copy in the batch, when later than the kept one's.
    latest: Vec<Option<DateTime<Utc>>>,
}

impl EventColumns {
    /// Adds an event unless the batch already holds one with its key.
    pub(super) fn push(
        &mut self,
        env: &Envelope,
        event_id: &str,
        event_type: &str,
        event_date: DateTime<Utc>,
        parameters: &Map<String, Value>,
    ) {
        let key = (
            env.project.clone(),
            env.datasource.clone(),
            event_id.to_owned(),
        );
        let event = OwnedEvent {
            project: env.project.clone(),
            datasource: env.datasource.clone(),
            event_id: event_id.to_owned(),
            user_id: env.user_id.clone(),
            event_type: event_type.to_owned(),
            event_date,
            parameters: Value::Object(parameters.clone()),
            received_at: env.received_at,
        };
        match self.seen.get(&key) {
            Some(&i) => {
                if event.received_at > self.last_received(i) {
                    self.latest[i] = Some(event.received_at);
                }
                self.later_copies.push(event);
            }
            None => {
                self.seen.insert(key, self.len());
                self.push_columns(event);
            }
        }
    }

    fn push_columns(&mut self, event: OwnedEvent) {
        self.project.push(event.project);
        self.datasource.push(event.datasource);
        self.event_key.push(event_key(&event.event_id));
        self.event_id.push(event.event_id);
        self.user_id.push(event.user_id);
        self.event_type.push(event.event_type);
        self.event_date.push(event.event_date);
        self.parameters.push(event.parameters);
        self.received_at.push(event.received_at);
        self.latest.push(None);
    }

    /// The latest receipt of any copy of event `i` in the batch.
    fn last_received(&self, i: usize) -> DateTime<Utc> {
        self.latest[i].unwrap_or(self.received_at[i])
    }

    fn copy(&self, i: usize) -> OwnedEvent {
        OwnedEvent {
            project: self.project[i].clone(),
            datasource: self.datasource[i].clone(),
            event_id: self.event_id[i].clone(),
            user_id: self.user_id[i].clone(),
            event_type: self.event_type[i].clone(),
            event_date: self.event_date[i],
            parameters: self.parameters[i].clone(),
            received_at: self.received_at[i],
        }
    }

    /// The oldest receipt among the events.
    pub(super) fn oldest(&self) -> Option<DateTime<Utc>> {
        self.received_at.iter().min().copied()
    }

    /// The events without those `erased` erases, or `None` when it erases none. The
    /// first copy of each key that is not erased stays.
    pub(super) fn without(&self, erased: &Erasures) -> Option<EventColumns> {
        if erased.is_empty() {
            return None;
        }
        let is_erased = |p: &str, d: &str, u: &str, at: DateTime<Utc>| erased.erases(p, d, u, at);
        let hit = (0..self.len()).any(|i| {
            is_erased(
                &self.project[i],
                &self.datasource[i],
                &self.user_id[i],
                self.received_at[i],
            )
        });
        if !hit {
            return None;
        }
        let mut kept = EventColumns::default();
        let copies = (0..self.len())
            .map(|i| self.copy(i))
            .chain(self.later_copies.iter().cloned());
        for event in copies {
            if is_erased(
                &event.project,
                &event.datasource,
                &event.user_id,
                event.received_at,
            ) {
                continue;
            }
            let key = (
                event.project.clone(),
                event.datasource.clone(),
                event.event_id.clone(),
            );
            match kept.seen.get(&key) {
                Some(&i) => {
                    if event.received_at > kept.last_received(i) {
                        kept.latest[i] = Some(event.received_at);
                    }
                }
                None => {
                    kept.seen.insert(key, kept.len());
                    kept.push_columns(event);
                }
            }
        }
        Some(kept)
    }

    pub(super) fn len(&self) -> usize {
        self.event_id.len()
    }

    fn key(&self, i: usize) -> (&str, &str, Uuid) {
        (&self.project[i], &self.datasource[i], self.event_key[i])
    }

    /// The `COPY` input of the events `keep` selects (all when `None`).
    pub(super) fn to_csv(&self, keep: Option<&[bool]>) -> Vec<u8> {
        let mut csv = Vec::with_capacity(self.len() * 400);
        for i in 0..self.len() {
            if keep.is_some_and(|k| !k[i]) {
                continue;
            }
            let fields: [&dyn std::fmt::Display; 8] = [
                &self.project[i],
                &self.datasource[i],
                &self.event_id[i],
                &self.user_id[i],
                &self.event_type[i],
                &Rfc3339(self.event_date[i]),
                &self.parameters[i],
                &Rfc3339(self.received_at[i]),
            ];
            csv_record(&mut csv, &fields);
        }
        csv
    }
}

/// One event, owned.
#[derive(Debug, Clone)]
struct OwnedEvent {
    project: String,
    datasource: String,
    event_id: String,
    user_id: String,
    event_type: String,
    event_date: DateTime<Utc>,
    parameters: Value,
    received_at: DateTime<Utc>,
}

/// The generations of `event_ids` and the deduplication window, read in the batch's
/// transaction.
struct Generations {
    /// (first instant, instant after the last), ascending.
    ranges: Vec<(DateTime<Utc>, DateTime<Utc>)>,
    window: TimeDelta,
}

/// How far ahead of the worker's clock a gateway's may run: generations that start later
/// than this after the latest receipt seen are not probed (they are made ahead, empty).
const CLOCK_MARGIN: TimeDelta = TimeDelta::hours(1);

impl Generations {
    async fn read(tx: &mut Transaction<'_, Postgres>) -> Result<Self, sqlx::Error> {
        type Row = (i32, Vec<DateTime<Utc>>, Vec<DateTime<Utc>>);
        let (hours, buckets, ends): Row = sqlx::query_as(
            "SELECT (SELECT dedup_window_hours FROM lifecycle_settings),
                    coalesce(array_agg(bucket ORDER BY bucket), '{}'),
                    coalesce(array_agg(ends ORDER BY bucket), '{}')
               FROM event_id_generations",
        )
        .fetch_one(&mut **tx)
        .await?;
        Ok(Self {
            ranges: buckets.into_iter().zip(ends).collect(),
            window: TimeDelta::hours(hours.into()),
        })
    }

    /// The generation a receipt belongs to; before the first one (an event older than
    /// anything remembered, from a replay), its hour, which only the default partition
    /// takes and the maintenance job empties.
    fn bucket(&self, at: DateTime<Utc>) -> DateTime<Utc> {
        self.ranges
            .iter()
            .find(|(from, to)| *from <= at && at < *to)
            .map_or_else(
                || {
                    at.duration_trunc(TimeDelta::hours(1))
                        .expect("an hour divides any instant")
                },
                |(from, _)| *from,
            )
    }

    /// The other generations a copy of an event received at `at` could be in: those within
    /// the window either side, except one that starts after `latest` (no event received
    /// so far can be in it; the generation made ahead is not probed in vain).
    fn neighbours(
        &self,
        at: DateTime<Utc>,
        own: DateTime<Utc>,
        latest: DateTime<Utc>,
    ) -> impl Iterator<Item = DateTime<Utc>> + '_ {
        let (lo, hi) = (at - self.window, (at + self.window).min(latest));
        self.ranges
            .iter()
            .filter(move |(from, to)| *from != own && *from <= hi && lo < *to)
            .map(|(from, _)| *from)
    }

    fn covers(&self, at: DateTime<Utc>) -> bool {
        self.ranges.last().is_some_and(|(_, to)| at < *to)
    }
}

/// Writes the batch's events (see the module's documentation), in `tx`.
pub(super) async fn write(
    tx: &mut Transaction<'_, Postgres>,
    events: &EventColumns,
    csv: &[u8],
) -> Result<(), sqlx::Error> {
    if events.len() == 0 {
        return Ok(());
    }
    let times = &events.received_at;
    let mut generations = Generations::read(tx).await?;
    let latest = *times.iter().max().expect("not empty");
    if !generations.covers(latest) {
        // The maintenance job creates them ahead; this is the fallback when it has not.
        sqlx::query("SELECT ingest_ensure_event_id_generations($1)")
            .bind(latest)
            .execute(&mut **tx)
            .await?;
        generations = Generations::read(tx).await?;
    }
    let buckets: Vec<DateTime<Utc>> = times.iter().map(|t| generations.bucket(*t)).collect();
    let new = insert_ids(tx, events, &buckets).await?;

    // New in their own generation: are they in another one?
    let mut probes: BTreeMap<DateTime<Utc>, Vec<usize>> = BTreeMap::new();
    // Receipt times come from the gateways' clocks: a margin for theirs running ahead.
    let latest = Utc::now().max(latest) + CLOCK_MARGIN;
    for (i, is_new) in new.iter().enumerate() {
        if *is_new {
            for other in generations.neighbours(times[i], buckets[i], latest) {
                probes.entry(other).or_default().push(i);
            }
        }
    }
    let mut elsewhere: HashSet<(String, String, Uuid)> = HashSet::new();
    for (bucket, indices) in probes {
        let column = |f: fn(&EventColumns, usize) -> &str| -> Vec<&str> {
            indices.iter().map(|i| f(events, *i)).collect()
        };
        // Found there: a retry. The row learns its receipt, as in `insert_ids`.
        let found: Vec<(String, String, Uuid)> = sqlx::query_as(
            "UPDATE event_ids i
                SET last_received_at = greatest(i.last_received_at, u.received_at)
               FROM UNNEST($2::text[], $3::text[], $4::uuid[], $5::timestamptz[])
                    AS u(project, datasource, event_key, received_at)
              WHERE i.bucket = $1 AND i.project = u.project
                AND i.datasource = u.datasource AND i.event_key = u.event_key
             RETURNING i.project, i.datasource, i.event_key",
        )
        .bind(bucket)
        .bind(column(|e, i| e.key(i).0))
        .bind(column(|e, i| e.key(i).1))
        .bind(indices.iter().map(|i| events.key(*i).2).collect::<Vec<_>>())
        .bind(
            indices
                .iter()
                .map(|i| events.last_received(*i))
                .collect::<Vec<_>>(),
        )
        .fetch_all(&mut **tx)
        .await?;
        elsewhere.extend(found);
    }

    let keep: Vec<bool> = (0..events.len())
        .map(|i| {
            let (p, d, e) = events.key(i);
            // Found elsewhere is rare: no key is built for the usual empty set.
            new[i]
                && (elsewhere.is_empty() || !elsewhere.contains(&(p.to_owned(), d.to_owned(), e)))
        })
        .collect();
    let kept = keep.iter().filter(|k| **k).count();
    if kept == 0 {
        return Ok(());
    }
    let subset;
    let csv = if kept == events.len() {
        csv
    } else {
        subset = events.to_csv(Some(&keep));
        &subset
    };
    copy(tx, csv).await
}

/// Inserts the events' ids into their generations; tells, per event, whether its id was
/// not there yet. Usually none is: then one `COPY` (in a savepoint) does it. An id already
/// there (a redelivery, a replay, a retry) makes it fail with a unique violation, and an
/// `INSERT ... ON CONFLICT DO NOTHING RETURNING` tells which are new instead.
async fn insert_ids(
    tx: &mut Transaction<'_, Postgres>,
    events: &EventColumns,
    buckets: &[DateTime<Utc>],
) -> Result<Vec<bool>, sqlx::Error> {
    use sqlx::Acquire;
    let mut csv = Vec::with_capacity(events.len() * 64);
    for (i, bucket) in buckets.iter().enumerate() {
        let (p, d, e) = events.key(i);
        csv_record(&mut csv, &[&p, &d, &e.hyphenated(), &Rfc3339(*bucket)]);
        // `last_received_at`: NULL (an unquoted empty field) unless a later copy was in
        // the batch; NULL stands for the stored copy's own receipt.
        csv.pop();
        match events.latest[i] {
            None => csv.extend_from_slice(b",\n"),
            Some(at) => {
                csv.push(b',');
                csv_record(&mut csv, &[&Rfc3339(at)]);
            }
        }
    }
    {
        let mut savepoint = tx.begin().await?;
        match copy_raw(&mut savepoint, COPY_EVENT_IDS, &csv).await {
            Ok(()) => {
                savepoint.commit().await?;
                return Ok(vec![true; events.len()]);
            }
            Err(err)
                if err
                    .as_database_error()
                    .is_some_and(|db| db.is_unique_violation()) =>
            {
                savepoint.rollback().await?
            }
            Err(err) => return Err(err),
        }
    }
    let last_received: Vec<DateTime<Utc>> =
        (0..events.len()).map(|i| events.last_received(i)).collect();
    let inserted: HashSet<(String, String, Uuid)> = sqlx::query_as(
        "INSERT INTO event_ids (project, datasource, event_key, bucket, last_received_at)
         SELECT * FROM UNNEST($1::text[], $2::text[], $3::uuid[], $4::timestamptz[], $5::timestamptz[])
         ON CONFLICT DO NOTHING RETURNING project, datasource, event_key",
    )
    .bind(&events.project)
    .bind(&events.datasource)
    .bind(&events.event_key)
    .bind(buckets)
    .bind(&last_received)
    .fetch_all(&mut **tx)
    .await?
    .into_iter()
    .collect();
    // An id already there keeps its row; it only learns the latest receipt of a copy
    // (an erasure spares an event retried after it: crate::persist::erasure).
    let known: Vec<usize> = (0..events.len())
        .filter(|&i| {
            let (p, d, e) = events.key(i);
            !inserted.contains(&(p.to_owned(), d.to_owned(), e))
        })
        .collect();
    let column = |f: fn(&EventColumns, usize) -> &str| -> Vec<&str> {
        known.iter().map(|i| f(events, *i)).collect()
    };
    sqlx::query(
        "UPDATE event_ids i
            SET last_received_at = u.received_at
           FROM UNNEST($1::text[], $2::text[], $3::uuid[], $4::timestamptz[], $5::timestamptz[])
                AS u(project, datasource, event_key, bucket, received_at)
          WHERE i.bucket = u.bucket AND i.project = u.project
            AND i.datasource = u.datasource AND i.event_key = u.event_key
            AND i.last_received_at IS DISTINCT FROM greatest(i.last_received_at, u.received_at)",
    )
    .bind(column(|e, i| e.key(i).0))
    .bind(column(|e, i| e.key(i).1))
    .bind(known.iter().map(|i| events.key(*i).2).collect::<Vec<_>>())
    .bind(known.iter().map(|i| buckets[*i]).collect::<Vec<_>>())
    .bind(known.iter().map(|i| last_received[*i]).collect::<Vec<_>>())
    .execute(&mut **tx)
    .await?;
    Ok((0..events.len())
        .map(|i| {
            let (p, d, e) = events.key(i);
            inserted.contains(&(p.to_owned(), d.to_owned(), e))
        })
        .collect())
}

const COPY_EVENT_IDS: &str = "COPY event_ids (project, datasource, event_key, bucket, \
     last_received_at) FROM STDIN (FORMAT csv)";

/// `COPY` (about twice as fast as an `INSERT` per row here, see BENCHMARKS.md).
async fn copy(tx: &mut Transaction<'_, Postgres>, csv: &[u8]) -> Result<(), sqlx::Error> {
    copy_raw(tx, COPY_EVENTS, csv).await
}

async fn copy_raw(
    tx: &mut Transaction<'_, Postgres>,
    statement: &str,
    csv: &[u8],
) -> Result<(), sqlx::Error> {
    let mut copy = tx.copy_in_raw(statement).await?;
    if let Err(err) = copy.send(csv).await {
        let _ = copy.abort("send failed").await;
        return Err(err);
    }
    copy.finish().await.map(|_rows| ())
}

/// A timestamp as PostgreSQL reads it back exactly (microseconds, UTC).
struct Rfc3339(DateTime<Utc>);

impl std::fmt::Display for Rfc3339 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0.format("%Y-%m-%dT%H:%M:%S%.6fZ"))
    }
}

/// One CSV record, every field quoted (`"` doubled), so any text round-trips: an empty
/// string stays an empty string (unquoted empty would be NULL) and commas, quotes and
/// newlines inside values are data.
fn csv_record(out: &mut Vec<u8>, fields: &[&dyn std::fmt::Display]) {
    use std::fmt::Write;
    for (i, field) in fields.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.push(b'"');
        let _ = write!(QuoteDoubling(out), "{field}");
        out.push(b'"');
    }
    out.push(b'\n');
}

/// Writes text into a CSV field as it is formatted, doubling every `"`.
struct QuoteDoubling<'a>(&'a mut Vec<u8>);

impl std::fmt::Write for QuoteDoubling<'_> {
    fn write_str(&mut self, text: &str) -> std::fmt::Result {
        let mut rest = text;
        while let Some(at) = rest.find('"') {
            self.0.extend_from_slice(&rest.as_bytes()[..=at]);
            self.0.push(b'"');
            rest = &rest[at + 1..];
        }
        self.0.extend_from_slice(rest.as_bytes());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn csv_records_quote_every_field() {
        let mut out = Vec::new();
        let json = json!({"q": "say \"hi\", then\nleave"});
        let fields: [&dyn std::fmt::Display; 3] = [&"a,b", &"", &json];
        csv_record(&mut out, &fields);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "\"a,b\",\"\",\"{\"\"q\"\":\"\"say \\\"\"hi\\\"\", then\\nleave\"\"}\"\n"
        );
        let ts: DateTime<Utc> = "2026-11-24T10:00:00.123456789Z".parse().unwrap();
        assert_eq!(Rfc3339(ts).to_string(), "2026-11-24T10:00:00.123456Z");
    }

    #[test]
    fn uuids_are_their_own_keys_and_other_ids_a_marked_hash() {
        for id in [
            "0f8fad5b-d9cb-469f-a165-70867728950e",
            "01932c07-209c-7f6b-8a4e-1c2d3e4f5a6b",
        ] {
            assert_eq!(event_key(id).to_string(), id);
        }
        for id in [
            "0F8FAD5B-D9CB-469F-A165-70867728950E", // the same bytes, another id
            "0f8fad5b-d9cb-869f-a165-70867728950e", // version 8: hashed, never raw
            "order-42",
        ] {
            let key = event_key(id);
            assert_ne!(key.to_string(), id.to_lowercase());
            assert_eq!(key.get_version_num(), 8, "{id}");
            assert_eq!(key.get_variant(), uuid::Variant::RFC4122, "{id}");
            assert_eq!(key, event_key(id), "stable");
        }
        assert_ne!(event_key("a"), event_key("b"));
    }

    fn at(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    #[test]
    fn generations_give_each_receipt_its_bucket_and_the_neighbours_within_the_window() {
        // The first generation (from the migration) is wide; later ones a window wide.
        let g = Generations {
            ranges: vec![
                (at("0001-01-01T00:00:00Z"), at("2026-12-31T00:00:00Z")),
                (at("2026-12-31T00:00:00Z"), at("2027-01-01T00:00:00Z")),
                (at("2027-01-01T00:00:00Z"), at("2027-01-02T00:00:00Z")),
            ],
            window: TimeDelta::hours(24),
        };
        let first = at("0001-01-01T00:00:00Z");
        assert_eq!(g.bucket(at("2026-12-30T23:59:59Z")), first);
        assert_eq!(
            g.bucket(at("2026-12-31T00:00:00Z")),
            at("2026-12-31T00:00:00Z")
        );
        assert_eq!(g.bucket(at("1999-01-01T12:00:00Z")), first);
        // Past the last generation: its hour (the default partition).
        assert_eq!(
            g.bucket(at("2027-01-02T05:30:00Z")),
            at("2027-01-02T05:00:00Z")
        );
        assert!(g.covers(at("2027-01-01T23:59:59Z")) && !g.covers(at("2027-01-02T00:00:00Z")));
        let n = |s: &str| -> Vec<DateTime<Utc>> {
            let t = at(s);
            g.neighbours(t, g.bucket(t), at("2100-01-01T00:00:00Z"))
                .collect()
        };
        // A window either side: the generation before and the one after.
        assert_eq!(
            n("2026-12-31T12:00:00Z"),
            vec![first, at("2027-01-01T00:00:00Z")]
        );
        // A generation is never its own neighbour, and one a window away is not probed.
        assert_eq!(n("2026-11-01T00:00:00Z"), Vec::<DateTime<Utc>>::new());
        assert_eq!(n("2027-01-01T23:00:00Z"), vec![at("2026-12-31T00:00:00Z")]);
        // The first generation ended exactly a window before: it is not probed.
        assert_eq!(n("2027-01-01T00:00:00Z"), vec![at("2026-12-31T00:00:00Z")]);
        assert_eq!(
            n("2026-12-31T23:59:59Z"),
            vec![first, at("2027-01-01T00:00:00Z")]
        );
        // A generation starting after the latest receipt so far is not probed.
        let t = at("2026-12-31T12:00:00Z");
        let until_now: Vec<DateTime<Utc>> =
            g.neighbours(t, g.bucket(t), t + CLOCK_MARGIN).collect();
        assert_eq!(until_now, vec![first]);
    }
}
