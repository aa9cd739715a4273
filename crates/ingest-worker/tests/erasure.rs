//! Erasure of a user (`ingest_worker::persist::erasure`) against the real PostgreSQL,
//! step by step as the consume loop runs it (record, the batch, complete), each test in
//! a database of its own: stored data is deleted, writes received up to the erasure are
//! dropped whenever and however they arrive, later ones stand, and every step is
//! idempotent. The race through Kafka is in `erasure_race.rs`.

use chrono::{DateTime, SubsecRound, TimeDelta, Utc};
use ingest_testkit::PrivateDatabase;
use ingest_types::{Envelope, Operation, ENVELOPE_VERSION};
use ingest_worker::lifecycle::maintain;
use ingest_worker::persist::{erasure, Batch};
use serde_json::{json, Value};
use sqlx::PgPool;

fn envelope(user: &str, received_at: DateTime<Utc>, op: Operation) -> Envelope {
    Envelope {
        v: ENVELOPE_VERSION,
        project: "p".into(),
        datasource: "web".into(),
        user_id: user.into(),
        received_at,
        request_id: "r".into(),
        sync_id: None,
        op,
    }
}

/// Every event id the tests made: `event_ids` holds their 16-byte keys, which
/// [`dedup_ids`] maps back through this list.
static MADE_IDS: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());

fn event(user: &str, id: &str, received_at: DateTime<Utc>) -> Envelope {
    MADE_IDS.lock().unwrap().push(id.to_owned());
    envelope(
        user,
        received_at,
        Operation::AppendEvent {
            event_id: id.into(),
            event_type: "view".into(),
            event_date: received_at,
            parameters: json!({"id": id}).as_object().unwrap().clone(),
        },
    )
}

fn upsert(user: &str, received_at: DateTime<Utc>, attributes: Value) -> Envelope {
    envelope(
        user,
        received_at,
        Operation::UpsertContact {
            attributes: attributes.as_object().unwrap().clone(),
        },
    )
}

/// Persists `(version, envelope)` pairs as one batch.
async fn persist(pool: &PgPool, envelopes: &[(i64, &Envelope)]) {
    Batch::from_envelopes(envelopes.iter().copied())
        .persist(pool)
        .await
        .unwrap();
}

/// The consume loop's three steps for a batch carrying `erase` at `version`.
async fn erase(pool: &PgPool, erase: &Envelope, version: i64) -> u64 {
    erasure::record(pool, erase).await.unwrap();
    persist(pool, &[(version, erase)]).await;
    erasure::complete(pool, erase).await.unwrap()
}

async fn event_ids(pool: &PgPool, user: &str) -> Vec<String> {
    sqlx::query_scalar("SELECT event_id FROM events WHERE user_id = $1 ORDER BY event_id")
        .bind(user)
        .fetch_all(pool)
        .await
        .unwrap()
}

/// The event ids whose keys are in `event_ids`.
async fn dedup_ids(pool: &PgPool) -> Vec<String> {
    let made = MADE_IDS.lock().unwrap().clone();
    sqlx::query_scalar(
        "SELECT DISTINCT id FROM UNNEST($1::text[]) id
          WHERE EXISTS (SELECT 1 FROM event_ids WHERE event_key = ingest_event_key(id))
          ORDER BY id",
    )
    .bind(made)
    .fetch_all(pool)
    .await
    .unwrap()
}

async fn contact(pool: &PgPool, user: &str) -> Option<Value> {
    sqlx::query_scalar("SELECT attributes FROM contacts WHERE user_id = $1")
        .bind(user)
        .fetch_optional(pool)
        .await
        .unwrap()
}

/// (completed, events_erased) of the user's erasure record.
async fn status(pool: &PgPool, user: &str) -> Option<(bool, i64)> {
    sqlx::query_as(
        "SELECT completed_at IS NOT NULL, events_erased FROM user_erasures WHERE user_id = $1",
    )
    .bind(user)
    .fetch_optional(pool)
    .await
    .unwrap()
}

fn now() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(6)
}

fn secs(n: i64) -> TimeDelta {
    TimeDelta::seconds(n)
}

#[tokio::test]
async fn an_erasure_deletes_the_users_contact_and_stored_events_and_nobody_elses() {
    let db = PrivateDatabase::create().await;
    let t = now();
    let (e1, e2, other) = (
        event("U", "e1", t - secs(60)),
        event("U", "e2", t - secs(1)),
        event("V", "v1", t - secs(60)),
    );
    let (u, v) = (
        upsert("U", t - secs(60), json!({"plan": "pro"})),
        upsert("V", t - secs(60), json!({"plan": "free"})),
    );
    persist(
        &db.pool,
        &[(1, &u), (2, &v), (1, &e1), (2, &e2), (3, &other)],
    )
    .await;

    let erase_u = envelope("U", t, Operation::EraseUser);
    assert_eq!(erase(&db.pool, &erase_u, 10).await, 2);
    assert_eq!(contact(&db.pool, "U").await, None);
    assert_eq!(event_ids(&db.pool, "U").await, Vec::<String>::new());
    assert_eq!(dedup_ids(&db.pool).await, vec!["v1"], "their ids go too");
    assert_eq!(contact(&db.pool, "V").await, Some(json!({"plan": "free"})));
    assert_eq!(event_ids(&db.pool, "V").await, vec!["v1"]);
    assert_eq!(status(&db.pool, "U").await, Some((true, 2)));

    // Redelivered: nothing more happens, the record stays complete.
    assert_eq!(erase(&db.pool, &erase_u, 10).await, 0);
    assert_eq!(status(&db.pool, "U").await, Some((true, 2)));

    // A client's retry of an erased event, accepted after the erasure, is stored again
    // (its id was forgotten with it): accepted means stored.
    let retry = event("U", "e1", t + secs(1));
    persist(&db.pool, &[(20, &retry)]).await;
    assert_eq!(event_ids(&db.pool, "U").await, vec!["e1"]);
}

#[tokio::test]
async fn writes_received_up_to_the_erasure_are_dropped_whenever_they_arrive() {
    let db = PrivateDatabase::create().await;
    let t = now();
    let erase_u = envelope("U", t, Operation::EraseUser);
    erase(&db.pool, &erase_u, 10).await;

    // In flight when it ran (or replayed, or redriven from the dead-letter topic with a
    // new, higher offset): received before the erasure, so erased, in any batch.
    let before = event("U", "before", t - secs(5));
    let at = event("U", "at", t);
    let after = event("U", "after", t + TimeDelta::microseconds(1));
    let stale_upsert = upsert("U", t - secs(5), json!({"plan": "pro"}));
    let other = event("V", "v-before", t - secs(5));
    persist(
        &db.pool,
        &[
            (1, &before),
            (2, &at),
            (3, &after),
            (11, &stale_upsert),
            (4, &other),
        ],
    )
    .await;
    assert_eq!(event_ids(&db.pool, "U").await, vec!["after"]);
    assert_eq!(event_ids(&db.pool, "V").await, vec!["v-before"]);
    assert_eq!(contact(&db.pool, "U").await, None, "a redriven old upsert");
    assert_eq!(
        dedup_ids(&db.pool).await,
        vec!["after", "v-before"],
        "an erased event leaves no id behind"
    );

    // Received after it: stands.
    let fresh = upsert("U", t + secs(1), json!({"plan": "new"}));
    persist(&db.pool, &[(12, &fresh)]).await;
    assert_eq!(contact(&db.pool, "U").await, Some(json!({"plan": "new"})));
}

#[tokio::test]
async fn a_batch_carrying_the_erasure_keeps_only_what_came_after_it() {
    let db = PrivateDatabase::create().await;
    let t = now();
    let old = upsert("U", t - secs(2), json!({"plan": "pro", "city": "Oslo"}));
    persist(&db.pool, &[(1, &old)]).await;

    // One batch: an upsert, the erasure, then a new upsert (contacts topic, in offset
    // order); events on either side of it, and the same event id sent before (erased)
    // and again after (a retry accepted after the erasure: it must be stored).
    let before = upsert("U", t - secs(1), json!({"age": 40}));
    let erase_u = envelope("U", t, Operation::EraseUser);
    let after = upsert("U", t + secs(1), json!({"plan": "free"}));
    let e_before = event("U", "dup", t - secs(1));
    let e_retry = event("U", "dup", t + secs(1));
    let e_other = event("U", "late", t + secs(2));
    erasure::record(&db.pool, &erase_u).await.unwrap();
    persist(
        &db.pool,
        &[
            (2, &before),
            (3, &erase_u),
            (4, &after),
            (100, &e_before),
            (101, &e_retry),
            (102, &e_other),
        ],
    )
    .await;
    erasure::complete(&db.pool, &erase_u).await.unwrap();

    assert_eq!(
        contact(&db.pool, "U").await,
        Some(json!({"plan": "free"})),
        "nothing of the contact before the erasure survives"
    );
    assert_eq!(event_ids(&db.pool, "U").await, vec!["dup", "late"]);
    let received: DateTime<Utc> =
        sqlx::query_scalar("SELECT received_at FROM events WHERE event_id = 'dup'")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(
        received,
        t + secs(1),
        "the retry's copy, not the erased one"
    );
}

#[tokio::test]
async fn an_event_retried_after_the_erasure_and_stored_before_it_ran_stays() {
    let db = PrivateDatabase::create().await;
    let t = now();
    // Stored before the erasure; a client's retry of it, accepted after the erasure, is
    // deduplicated against it before the worker gets to the erasure (another topic).
    let original = event("U", "e1", t - secs(1));
    let retry = event("U", "e1", t + secs(1));
    let gone = event("U", "e2", t - secs(1));
    persist(&db.pool, &[(1, &original), (2, &gone)]).await;
    persist(&db.pool, &[(3, &retry)]).await;
    // The same within one batch, and across dedup generations, lead to the same place.
    let erase_u = envelope("U", t, Operation::EraseUser);
    assert_eq!(erase(&db.pool, &erase_u, 10).await, 1);
    assert_eq!(
        event_ids(&db.pool, "U").await,
        vec!["e1"],
        "the retry was answered success after the erasure: it stands"
    );
    assert_eq!(dedup_ids(&db.pool).await, vec!["e1"]);

    // In one batch: the original and the retry together, then the erasure.
    let (a, a_retry) = (event("W", "w1", t - secs(1)), event("W", "w1", t + secs(1)));
    persist(&db.pool, &[(4, &a), (5, &a_retry)]).await;
    let erase_w = envelope("W", t, Operation::EraseUser);
    assert_eq!(erase(&db.pool, &erase_w, 11).await, 0);
    assert_eq!(event_ids(&db.pool, "W").await, vec!["w1"]);
}

#[tokio::test]
async fn a_later_erasure_supersedes_and_an_older_one_redelivered_changes_nothing() {
    let db = PrivateDatabase::create().await;
    let t = now();
    let first = envelope("U", t, Operation::EraseUser);
    let second = envelope("U", t + secs(10), Operation::EraseUser);
    erase(&db.pool, &first, 10).await;
    let between = event("U", "between", t + secs(5));
    persist(&db.pool, &[(1, &between)]).await;
    assert_eq!(event_ids(&db.pool, "U").await, vec!["between"]);

    // The second is recorded; until it completes, the user's status is "in progress".
    erasure::record(&db.pool, &second).await.unwrap();
    assert_eq!(status(&db.pool, "U").await, Some((false, 0)));
    // The first, redelivered now: it neither completes the second nor rolls it back.
    erase(&db.pool, &first, 10).await;
    assert_eq!(status(&db.pool, "U").await, Some((false, 0)));
    let through: DateTime<Utc> = sqlx::query_scalar("SELECT erased_through FROM user_erasures")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(through, t + secs(10));

    persist(&db.pool, &[(11, &second)]).await;
    assert_eq!(erasure::complete(&db.pool, &second).await.unwrap(), 1);
    assert_eq!(status(&db.pool, "U").await, Some((true, 1)));
    assert_eq!(event_ids(&db.pool, "U").await, Vec::<String>::new());
}

#[tokio::test]
async fn completed_erasure_records_go_with_the_tombstones_past_the_horizon() {
    let db = PrivateDatabase::create().await;
    let t = now();
    let old = envelope("OLD", t - TimeDelta::days(31), Operation::EraseUser);
    let young = envelope("YOUNG", t - TimeDelta::days(29), Operation::EraseUser);
    erase(&db.pool, &old, 1).await;
    erase(&db.pool, &young, 2).await;
    // Recorded but never completed (a worker died in between): kept, it still has work.
    let stuck = envelope("STUCK", t - TimeDelta::days(40), Operation::EraseUser);
    erasure::record(&db.pool, &stuck).await.unwrap();

    maintain(&db.pool, t).await.unwrap();
    let left: Vec<String> =
        sqlx::query_scalar("SELECT user_id FROM user_erasures ORDER BY user_id")
            .fetch_all(&db.pool)
            .await
            .unwrap();
    assert_eq!(left, vec!["STUCK", "YOUNG"]);
}

#[tokio::test]
async fn recording_an_erasure_waits_for_the_batches_writing_to_its_datasource() {
    let db = PrivateDatabase::create().await;
    // A batch in flight on datasource p/web holds its erasure lock shared until it commits
    // (taken here by hand, as `Batch::persist` takes it, to hold the batch open).
    let mut in_flight = db.pool.begin().await.unwrap();
    sqlx::query("SELECT pg_advisory_xact_lock_shared(hashtextextended('ingest-erasure:p/web', 0))")
        .execute(&mut *in_flight)
        .await
        .unwrap();
    let erase_u = envelope("U", now(), Operation::EraseUser);
    let recording = tokio::spawn({
        let pool = db.pool.clone();
        let erase_u = erase_u.clone();
        async move { erasure::record(&pool, &erase_u).await.unwrap() }
    });
    // Another datasource is not held up.
    let elsewhere = Envelope {
        datasource: "app".into(),
        ..envelope("U", now(), Operation::EraseUser)
    };
    erasure::record(&db.pool, &elsewhere).await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(
        !recording.is_finished(),
        "recorded while a batch could still write"
    );
    in_flight.commit().await.unwrap();
    tokio::time::timeout(std::time::Duration::from_secs(5), recording)
        .await
        .expect("recorded once the batch committed")
        .unwrap();
}
