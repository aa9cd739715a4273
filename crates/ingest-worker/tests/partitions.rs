//! The partitioned `events` table and its deduplication, on the real PostgreSQL, each test
//! in a database of its own: rows land in the partition of their receipt day, and an event
//! is stored once per (project, datasource, `_event_id`) whatever day, partition or
//! generation its retry lands in, and in whichever order the two are written.

use chrono::{DateTime, NaiveDate, TimeDelta, Utc};
use ingest_testkit::PrivateDatabase;
use ingest_types::{Envelope, Operation, ENVELOPE_VERSION};
use ingest_worker::persist::Batch;
use serde_json::json;
use sqlx::PgPool;

fn event(id: &str, n: i64, received_at: DateTime<Utc>) -> Envelope {
    Envelope {
        v: ENVELOPE_VERSION,
        project: "p".into(),
        datasource: "web".into(),
        user_id: "U".into(),
        received_at,
        request_id: "r".into(),
        sync_id: None,
        op: Operation::AppendEvent {
            event_id: id.into(),
            event_type: "t".into(),
            // An omitted `_event_date` defaults to the receipt time.
            event_date: received_at,
            parameters: json!({"n": n}).as_object().unwrap().clone(),
        },
    }
}

async fn persist(pool: &PgPool, envelopes: &[Envelope]) {
    Batch::from_envelopes(envelopes.iter().enumerate().map(|(i, e)| (i as i64, e)))
        .persist(pool)
        .await
        .unwrap();
}

/// (partition, parameter n) of every stored copy of event `id`.
async fn stored(pool: &PgPool, id: &str) -> Vec<(String, i64)> {
    sqlx::query_as(
        "SELECT tableoid::regclass::text, (parameters->>'n')::bigint FROM events
          WHERE project = 'p' AND datasource = 'web' AND event_id = $1",
    )
    .bind(id)
    .fetch_all(pool)
    .await
    .unwrap()
}

fn partition(t: DateTime<Utc>) -> String {
    format!("events_p{}", t.format("%Y%m%d"))
}

/// The first day after the first generation (where the second one starts).
async fn first_generation_end(pool: &PgPool) -> NaiveDate {
    sqlx::query_scalar("SELECT min(ends) FROM event_id_generations")
        .fetch_one(pool)
        .await
        .unwrap()
}

fn at_noon(day: NaiveDate) -> DateTime<Utc> {
    day.and_hms_opt(12, 0, 0).unwrap().and_utc()
}

#[tokio::test]
async fn rows_land_in_the_partition_of_their_receipt_day() {
    let db = PrivateDatabase::create().await;
    let tomorrow = Utc::now() + TimeDelta::days(1);
    let in_three_days = Utc::now() + TimeDelta::days(3);
    persist(
        &db.pool,
        &[event("a", 1, tomorrow), event("b", 2, in_three_days)],
    )
    .await;
    assert_eq!(stored(&db.pool, "a").await, vec![(partition(tomorrow), 1)]);
    assert_eq!(
        stored(&db.pool, "b").await,
        vec![(partition(in_three_days), 2)]
    );

    // A day with no partition yet (beyond the ones made ahead): the default partition
    // takes it, and creating the day's partition moves it there.
    let far = Utc::now() + TimeDelta::days(20);
    persist(&db.pool, &[event("far", 3, far)]).await;
    assert_eq!(
        stored(&db.pool, "far").await,
        vec![("events_default".into(), 3)]
    );
    sqlx::query("SELECT ingest_ensure_events_partition($1)")
        .bind(far.date_naive())
        .execute(&db.pool)
        .await
        .unwrap();
    assert_eq!(stored(&db.pool, "far").await, vec![(partition(far), 3)]);
}

#[tokio::test]
async fn a_retry_on_another_day_is_stored_once_and_the_first_copy_kept() {
    let db = PrivateDatabase::create().await;
    let first = Utc::now() + TimeDelta::days(1);
    persist(&db.pool, &[event("e", 1, first)]).await;
    // The client retries the next day, with the date omitted again: another partition.
    persist(&db.pool, &[event("e", 2, first + TimeDelta::days(1))]).await;
    // And the worker is handed the first one again (a redelivery).
    persist(&db.pool, &[event("e", 1, first)]).await;
    assert_eq!(stored(&db.pool, "e").await, vec![(partition(first), 1)]);
}

#[tokio::test]
async fn a_retry_in_the_next_generation_is_stored_once_in_either_order() {
    let db = PrivateDatabase::create().await;
    let boundary = first_generation_end(&db.pool).await;
    let before = at_noon(boundary - TimeDelta::days(1));
    let after = at_noon(boundary + TimeDelta::days(1));
    for day in [before, after] {
        sqlx::query("SELECT ingest_ensure_events_partition($1)")
            .bind(day.date_naive())
            .execute(&db.pool)
            .await
            .unwrap();
    }

    // Original, then retry a generation later (the worker creates that generation).
    persist(&db.pool, &[event("forward", 1, before)]).await;
    persist(&db.pool, &[event("forward", 2, after)]).await;
    assert_eq!(
        stored(&db.pool, "forward").await,
        vec![(partition(before), 1)]
    );

    // The retry first, then the original (a dead letter redriven late).
    persist(&db.pool, &[event("backward", 2, after)]).await;
    persist(&db.pool, &[event("backward", 1, before)]).await;
    assert_eq!(
        stored(&db.pool, "backward").await,
        vec![(partition(after), 2)]
    );

    let generations: i64 = sqlx::query_scalar(
        "SELECT count(DISTINCT bucket) FROM event_ids
          WHERE event_id IN ('forward', 'backward')
            AND bucket IN (SELECT bucket FROM event_id_generations)",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(generations, 2, "the two copies' ids sit in two generations");
}

#[tokio::test]
async fn duplicates_inside_one_batch_keep_the_first() {
    let db = PrivateDatabase::create().await;
    let now = Utc::now();
    persist(
        &db.pool,
        &[event("d", 1, now), event("x", 7, now), event("d", 2, now)],
    )
    .await;
    assert_eq!(stored(&db.pool, "d").await.len(), 1);
    assert_eq!(stored(&db.pool, "d").await[0].1, 1);
    assert_eq!(stored(&db.pool, "x").await.len(), 1);
}
