//! Accepted means stored, unchanged: a differential property test from the gateway's
//! validation to the worker's SQL, on the real PostgreSQL.
//!
//! Each case is one item's JSON *text*, not a `serde_json::Value`, so that it can hold
//! what a `Value` cannot: numbers beyond `f64`, duplicate keys, `\u0000`, surrogate-pair
//! escapes. The gateway's own validation (`check_raw`) decides; a rejected item is only
//! counted. An accepted one is wrapped in the envelope the gateway publishes, encoded and
//! decoded as it crosses Kafka, and persisted with the worker's own SQL. Then:
//!
//! - the item has no duplicate key at any depth: the stored row cannot show one (jsonb
//!   keeps the last occurrence too), so the text is checked;
//! - the persist succeeds: a failure is an item answered `success` that the worker would
//!   dead-letter;
//! - the row equals what was *sent*, is stored once, and a redelivery changes nothing.
//!
//! The expectation is computed inside PostgreSQL from the sent text (`$3::jsonb`) and
//! the sent date's components, never from the validator's parsed value: that would hide
//! whatever the parse itself changes (a number rounded to `f64`, a duplicate key dropped).
//! jsonb equality compares numbers as exact decimals: `1e2` equals `100`, `1e-400` is not
//! `0`. Dates, as decided: `timestamptz` holds microseconds, so further digits are
//! truncated; a leap second `:60` is the next minute's `:00`, as PostgreSQL reads it; a
//! stored date lies in `0001-01-01T00:00:00Z ..= 9999-12-31T23:59:59.999999Z`. The
//! expected instant is calendar arithmetic in SQL (date + time - offset) rather than a
//! cast of the text, which PostgreSQL refuses for valid RFC 3339 (offsets beyond ±15:59).
//!
//! Generators favour valid items and add awkward values at a steady rate; at least 40%
//! of the cases must be accepted (no vacuous pass) and, from 200 cases on, every awkward
//! category must have been generated. `STORABLE_ONLY=nul,numbers,years,leap,dup` limits
//! the awkward categories, to isolate one bug class. `PROPTEST_CASES` (256 per kind) and
//! `PROPTEST_RNG_SEED` (fixed by default) apply as usual.
//!
//! Needs the dev stack: `cargo test -p ingest-worker --test storable -- --nocapture`.

#[path = "storable/generate.rs"]
mod generate;

use std::cell::RefCell;
use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::time::Instant;

use chrono::{SubsecRound, Utc};
use generate::{contact, enabled, event, Date, Json, DUP, LEAP, NUL, NUMBERS, YEARS};
use ingest_testkit::{migrated_pool, unique};
use ingest_types::validate::{check_raw, Specs};
use ingest_types::{Envelope, ItemKind, ENVELOPE_VERSION};
use ingest_worker::persist::Batch;
use proptest::strategy::BoxedStrategy;
use proptest::test_runner::{Config, RngSeed, TestCaseError, TestError, TestRunner};
use serde::de::{Deserialize, Deserializer, Error as _, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;
use sqlx::PgPool;

/// The seed when `PROPTEST_RNG_SEED` is unset: the same cases on every run.
const SEED: u64 = 11;
/// At least this share of the cases must be accepted.
const MIN_ACCEPTED: f64 = 0.4;

/// Any JSON value; deserializing it fails on an object that repeats a key, at any depth.
struct NoDuplicateKeys;

impl<'de> Deserialize<'de> for NoDuplicateKeys {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(NoDuplicateKeys)
    }
}

/// Visitor methods that accept a scalar as it is.
macro_rules! accept {
    ($($visit:ident($($ty:ty)?)),*) => {$(
        fn $visit<E>(self $(, _: $ty)?) -> Result<Self, E> { Ok(self) }
    )*};
}

impl<'de> Visitor<'de> for NoDuplicateKeys {
    type Value = Self;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }
    accept! {
        visit_bool(bool), visit_i64(i64), visit_u64(u64), visit_f64(f64), visit_str(&str), visit_unit()
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self, A::Error> {
        while seq.next_element::<Self>()?.is_some() {}
        Ok(self)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self, A::Error> {
        let mut keys = HashSet::new();
        while let Some(key) = map.next_key::<String>()? {
            map.next_value::<Self>()?;
            if !keys.insert(key.clone()) {
                return Err(A::Error::custom(format_args!("duplicate key {key:?}")));
            }
        }
        Ok(self)
    }
}

/// The stored contact next to the sent one, both as jsonb: rows, stored, sent, equal,
/// date in range.
const CONTACT_AS_SENT: &str = "
    WITH want AS (SELECT jsonb_build_object('user_id', j ->> '_user_id',
                                            'attributes', jsonb_strip_nulls(j - '_user_id')) AS v
                    FROM (SELECT $3::jsonb AS j) sent),
         got AS (SELECT jsonb_build_object('user_id', user_id, 'attributes', attributes) AS v
                   FROM contacts WHERE project = $1 AND datasource = $2)
    SELECT (SELECT count(*) FROM got), (SELECT v::text FROM got LIMIT 1), want.v::text,
           coalesce((SELECT v FROM got LIMIT 1) = want.v, false), true
      FROM want";

/// The same for an event. `$4` holds [`Date::sql_parts`], or `NULL` when no date was
/// sent: the date is then `$5`, the receipt time truncated to microseconds.
const EVENT_AS_SENT: &str = "
    WITH sent AS (SELECT $3::jsonb AS j,
                         coalesce((make_date(d[1]::int, d[2]::int, d[3]::int)
                                   + make_interval(hours => d[4]::int, mins => d[5]::int - d[6]::int)
                                   + d[7] * interval '1 microsecond') AT TIME ZONE 'UTC', $5) AS date
                    FROM (SELECT $4::bigint[] AS d) parts),
         want AS (SELECT jsonb_build_object('user_id', j ->> '_user_id', 'event_id', j ->> '_event_id',
                             'event_type', j ->> '_event_type', 'event_date', date, 'received_at', $5,
                             'parameters', coalesce(nullif(j -> '_event_parameters', 'null'), '{}')) AS v,
                         date BETWEEN '0001-01-01T00:00:00Z' AND '9999-12-31T23:59:59.999999Z' AS in_range
                    FROM sent),
         got AS (SELECT jsonb_build_object('user_id', user_id, 'event_id', event_id,
                             'event_type', event_type, 'event_date', event_date,
                             'received_at', received_at, 'parameters', parameters) AS v
                   FROM events WHERE project = $1 AND datasource = $2)
    SELECT (SELECT count(*) FROM got), (SELECT v::text FROM got LIMIT 1), want.v::text,
           coalesce((SELECT v FROM got LIMIT 1) = want.v, false), in_range
      FROM want";

/// The envelope of an accepted item (as the gateway's `write_batch` builds it) must be
/// stored as `text` was sent, once, and a redelivery must change nothing.
async fn stored_as_sent(
    pool: &PgPool,
    kind: ItemKind,
    envelope: &Envelope,
    text: &str,
    date: Option<Vec<i64>>,
) -> Result<(), String> {
    let because = |what: &'static str| move |e: sqlx::Error| format!("{what}: {e}");
    serde_json::from_str::<NoDuplicateKeys>(text)
        .map_err(|e| format!("accepted with a {e}: only the last occurrence is stored"))?;
    let envelope = Envelope::decode(&envelope.encode())
        .map_err(|e| format!("the worker cannot decode it: {e}"))?;
    let batch = Batch::from_envelopes([(1, &envelope)]);
    batch
        .persist(pool)
        .await
        .map_err(because("accepted, but the worker cannot store it"))?;

    let (table, sql) = match kind {
        ItemKind::Contact => ("contacts", CONTACT_AS_SENT),
        ItemKind::Event => ("events", EVENT_AS_SENT),
    };
    let mut query = sqlx::query_as::<_, (i64, Option<String>, String, bool, bool)>(sql)
        .bind(&envelope.project)
        .bind(&envelope.datasource)
        .bind(text);
    if kind == ItemKind::Event {
        query = query.bind(date).bind(envelope.received_at.trunc_subsecs(6));
    }
    let (rows, stored, sent, equal, in_range) = query.fetch_one(pool).await.map_err(because(
        "accepted, but PostgreSQL cannot read what was sent",
    ))?;
    let stored = stored.unwrap_or_default();
    if rows != 1 {
        return Err(format!("stored {rows} times"));
    }
    if !equal {
        return Err(format!("stored {stored}\n  but sent {sent}"));
    }
    if !in_range {
        return Err(format!("stored a date outside years 1..=9999: {stored}"));
    }

    let row =
        format!("SELECT to_jsonb(t)::text FROM {table} t WHERE project = $1 AND datasource = $2");
    let snapshot = || {
        sqlx::query_scalar::<_, String>(&row)
            .bind(&envelope.project)
            .bind(&envelope.datasource)
            .fetch_all(pool)
    };
    let before = snapshot().await.map_err(because("reading the row"))?;
    batch
        .persist(pool)
        .await
        .map_err(because("a redelivery fails"))?;
    let after = snapshot().await.map_err(because("reading the row"))?;
    if before != after {
        return Err(format!("a redelivery changed {before:?}\n  into {after:?}"));
    }
    Ok(())
}

/// Cases, accepted ones, and per trait the items that had it (generated, accepted).
#[derive(Default)]
struct Tally {
    cases: u32,
    accepted: u32,
    traits: BTreeMap<&'static str, (u32, u32)>,
}

fn check_storable(kind: ItemKind, items: BoxedStrategy<Json>) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let pool = runtime.block_on(migrated_pool());
    let project = unique("storable");
    let tally = RefCell::new(Tally::default());
    let mut config = Config {
        failure_persistence: None,
        ..Config::default()
    };
    if config.rng_seed == RngSeed::Random {
        config.rng_seed = RngSeed::Fixed(SEED);
    }
    let started = Instant::now();
    let result = TestRunner::new(config).run(&items, |item| {
        let text = item.to_string();
        let raw = RawValue::from_string(text.clone()).expect("generated text is JSON");
        let received_at = Utc::now();
        let outcome = check_raw(kind, &raw, received_at, &Specs::default()).1;
        let case = {
            let mut tally = tally.borrow_mut();
            tally.cases += 1;
            tally.accepted += u32::from(outcome.is_ok());
            for name in item.traits() {
                let (generated, accepted) = tally.traits.entry(name).or_default();
                *generated += 1;
                *accepted += u32::from(outcome.is_ok());
            }
            tally.cases
        };
        let Ok(valid) = outcome else { return Ok(()) };
        let envelope = Envelope {
            v: ENVELOPE_VERSION,
            project: project.clone(),
            datasource: format!("case-{case}"),
            user_id: valid.user_id,
            received_at,
            request_id: "storable".into(),
            sync_id: None,
            op: valid.op,
        };
        let date = item.event_date().map(Date::sql_parts);
        runtime
            .block_on(stored_as_sent(&pool, kind, &envelope, &text, date))
            .map_err(|why| TestCaseError::fail(format!("{why}\n  item: {text}")))
    });
    match result {
        Err(TestError::Fail(why, item)) => {
            panic!("an accepted {kind:?} is not stored as sent\n  minimal item: {item}\n{why}")
        }
        Err(TestError::Abort(why)) => panic!("aborted: {why}"),
        Ok(()) => {}
    }

    let Tally {
        cases,
        accepted,
        traits,
    } = tally.into_inner();
    let share = f64::from(accepted) / f64::from(cases);
    let counts: Vec<_> = traits
        .iter()
        .map(|(name, (n, ok))| format!("{name} {n} ({ok})"))
        .collect();
    println!(
        "{kind:?}: {cases} cases, {accepted} accepted ({:.0}%) in {:.1?}; items with (accepted): {}",
        share * 100.0,
        started.elapsed(),
        counts.join(", ")
    );
    assert!(
        share >= MIN_ACCEPTED,
        "too few items accepted for the test to mean anything"
    );
    let awkward: &[&str] = match kind {
        ItemKind::Contact => &[NUL, NUMBERS, DUP],
        ItemKind::Event => &[NUL, NUMBERS, YEARS, LEAP, DUP],
    };
    for &category in awkward.iter().filter(|&&c| enabled(c) && cases >= 200) {
        assert!(
            traits.contains_key(category),
            "no item with {category} was generated"
        );
    }
}

#[test]
fn accepted_contacts_are_stored_as_sent() {
    check_storable(ItemKind::Contact, contact());
}

#[test]
fn accepted_events_are_stored_as_sent() {
    check_storable(ItemKind::Event, event());
}
